/* The leader lease that guards votes.
 *
 * Raft thesis 4.2.3: a server that heard from a current leader within the
 * minimum election timeout neither grants a vote nor updates its term, so a
 * removed or partitioned server cannot disrupt a healthy leader. libraft 0.15
 * goes further: a follower rejects every RequestVote (and pre-vote) for as
 * long as it still names a leader, and it forgets that leader only when its
 * own randomized timer (election_timeout .. 2 * election_timeout) fires. When
 * a leader dies, the first survivor to time out is therefore refused by the
 * others until the last of them has timed out too: with two survivors the
 * election waits for the later of two random timers instead of the earlier.
 *
 * Here a follower keeps the rule as the thesis states it: the io time at
 * which a leader last reached it (AppendEntries, InstallSnapshot or
 * TimeoutNow) is kept, and a vote request that arrives a full election
 * timeout after that is passed to libraft with disrupt_leader set, the flag
 * libraft already honours for leadership transfer. Within the lease nothing
 * changes. Safety does not depend on this check (terms and log comparison
 * still decide every vote); it only decides how long a dead leader holds up
 * the election.
 *
 * A follower may also learn that the leader is gone for certain: its host
 * refused a connection to the leader's Raft port (probe.c). Then the lease
 * counts as expired at once (cons_lease_gone()) until a leader reaches the
 * node again. That is this node's own evidence; the other voters weigh a
 * vote request by their own lease as always. */
#include "consensus/cons_internal.h"

void cons_lease_init(struct cons_lease *l, unsigned election_ms)
{
    l->election_ms = election_ms;
    l->last_leader = 0;
    l->heard = 0;
    l->gone = 0;
    l->widened = 0;
}

int cons_lease_recv(struct cons_lease *l,
                    int state,
                    raft_time now,
                    struct raft_message *m)
{
    struct raft_request_vote *v;

    switch (m->type) {
        case RAFT_IO_APPEND_ENTRIES:
        case RAFT_IO_INSTALL_SNAPSHOT:
        case RAFT_IO_TIMEOUT_NOW:
            l->last_leader = now;
            l->heard = 1;
            l->gone = 0;
            return 0;
        case RAFT_IO_REQUEST_VOTE:
            break;
        default:
            return 0;
    }
    v = &m->request_vote;
    if (state != RAFT_FOLLOWER || v->disrupt_leader) {
        return 0;
    }
    if (!l->gone && l->heard && now - l->last_leader < l->election_ms) {
        return 0;
    }
    v->disrupt_leader = true;
    l->widened++;
    return 1;
}

int cons_lease_expired(const struct cons_lease *l, raft_time now)
{
    return l->gone || (l->heard && now - l->last_leader >= l->election_ms);
}

void cons_lease_gone(struct cons_lease *l)
{
    l->gone = 1;
}
