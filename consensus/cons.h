/* consensus: the Raft loop of one node (libraft 0.15 with its uv io and
 * transport) and the state machine adapter over storage.
 *
 * DESIGN
 * One thread runs a libuv loop that owns the struct raft, every raft_* call
 * and every LMDB write transaction. Other threads talk to it through a
 * proposal queue (a mutex-protected list plus uv_async_send): cons_submit()
 * and cons_barrier() may be called from any thread; their callbacks run on the
 * loop thread.
 *
 * Group commit: each loop iteration drains the queue and, on the leader,
 * packs up to max_batch commands into one CommandBatch = one raft_apply()
 * buffer. Every node applies a batch in one LMDB transaction, so throughput
 * grows with the number of concurrent clients.
 *
 * Time: the leader stamps each command with its wall clock, never below the
 * previous command's time (the floor survives leader changes: it is stored
 * with the state). Apply never reads a clock.
 *
 * Leadership: on becoming leader the loop runs a raft_barrier() before it
 * accepts proposals or barriers for reads (libraft 0.15 appends no no-op entry
 * on election). A proposal whose leader loses leadership before commit is
 * answered CONS_LEADERSHIPLOST: its outcome is unknown and the client retries
 * with the same (client_id, seq).
 */
#ifndef CITYOPS_CONS_H
#define CITYOPS_CONS_H

#include <stddef.h>
#include <stdint.h>

#include "cityops/v1/command.pb-c.h"
#include "storage/store.h"

/* Error codes: consensus owns -2000..-2999. */
enum {
    CONS_NOMEM = -2001,
    CONS_NOTLEADER = -2002,      /* another node leads: see leader_id */
    CONS_NOLEADER = -2003,       /* no leader within the wait */
    CONS_LEADERSHIPLOST = -2004, /* outcome unknown: retry with same seq */
    CONS_SHUTDOWN = -2005,       /* node is stopping */
    CONS_IOERR = -2006,          /* raft I/O or apply failed */
    CONS_INVALID = -2007,        /* bad configuration or argument */
    CONS_TOOBIG = -2008,         /* command larger than an entry may be */
    CONS_CANTCHANGE = -2009,     /* another membership change is in flight */
    CONS_NOTFOUND = -2010,       /* no such member */
    CONS_EXISTS = -2011,         /* member id or address already in use */
    CONS_STOREFAIL = -2012,      /* the local store cannot apply (disk full,
                                  * LMDB error): writes are refused */
    CONS_TIMEOUT = -2013,        /* a change or transfer did not complete:
                                  * the new member did not catch up, or the
                                  * transfer target did not take over */
};

enum cons_member_role { CONS_VOTER = 0, CONS_STANDBY = 1, CONS_SPARE = 2 };

enum cons_state {
    CONS_STATE_UNAVAILABLE = 0,
    CONS_STATE_FOLLOWER,
    CONS_STATE_CANDIDATE,
    CONS_STATE_LEADER,
};

#define CONS_ADDRESS_SIZE 64
#define CONS_MAX_MEMBERS 16

#define CONS_ZONE_SIZE 32

struct cons_member {
    uint64_t id;
    char raft_address[CONS_ADDRESS_SIZE]; /* "127.0.0.1:9001" */
    enum cons_member_role role;
    char zone[CONS_ZONE_SIZE]; /* site / redundancy zone; "" = none */
};

/* Hooks the node gives consensus. Both run on the loop thread. */
struct cons_hooks {
    void *data;
    /* Zone of member @id (members added at run time are known to the node,
     * which keeps them in the replicated store). Writes "" if unknown. */
    void (*zone_of)(void *data, uint64_t id, char *zone, size_t size);
    /* A membership decision the leader took by itself (auto-promotion):
     * @kind is a short word ("promote", "demote"), @detail a sentence.
     * The node records it in the replicated store. */
    void (*decision)(void *data, const char *kind, const char *detail);
    /* This node became leader and its post-election barrier has applied:
     * it may propose (the node sets the cluster id here). May be NULL. */
    void (*leader_ready)(void *data);
};

struct cons_config {
    uint64_t id;
    const char *raft_address; /* this node's raft listen address */
    const char *dir;          /* raft log directory (created if missing) */
    /* Initial configuration, used only to bootstrap an empty log. Every
     * node of a new cluster must be given the same list. */
    const struct cons_member *members;
    size_t n_members;
    unsigned heartbeat_ms;       /* 0 = 100 */
    unsigned election_ms;        /* 0 = 1000 */
    unsigned snapshot_threshold; /* entries; 0 = 8192 */
    unsigned snapshot_trailing;  /* entries; 0 = 8192 */
    /* Bytes: the log since the last snapshot and the entries kept behind
     * it are each bounded by half of this as well (logbudget.c); 0 = by
     * entries only. */
    uint64_t log_budget;
    int snapshot_stagger;        /* voters snapshot at different indexes */
    /* 0 (default): thin snapshots, a marker standing for the flushed store,
     * with a full copy made only for a member behind the log; 1: every
     * snapshot is a full copy of the store. */
    int snapshot_full;
    unsigned max_batch;          /* commands per entry; 0 = 256 */
    struct store *store;         /* borrowed; outlives the cons */
    /* The store was opened nosync: store_sync() it this often (ms), on a
     * thread of its own (syncer.c). 0: the store syncs every commit. */
    unsigned sync_interval_ms;
    /* Standby auto-promotion: when a voter has been unreachable from the
     * leader for this long, promote a caught-up standby (same zone first)
     * and demote the lost voter. 0 = off (the default). */
    unsigned auto_promote_ms;
    /* With auto-promotion: never make a second voter in a zone that already
     * has one, when another zone's standby can take the place. */
    int one_voter_per_zone;
    /* Quorum-loss recovery: before starting, rewrite the Raft configuration
     * to this node alone as a voter (raft_recover appends a configuration
     * entry to the log on disk). The node then leads by itself; the other
     * survivors are added back as new members. Use once, on the most
     * advanced survivor, with every other node stopped or reset. */
    int recover;
    /* The store's state was not built by this log (restored from a
     * backup): take a snapshot as soon as an entry applies and keep no log
     * behind it, so that members added later are sent the state. */
    int snapshot_first;
    struct cons_hooks hooks;
};

struct cons;

/* Start the loop thread: open the raft log in cfg->dir, bootstrap it from
 * cfg->members if it is empty and cfg->id is one of them (a node whose id is
 * not in cfg->members starts empty and waits to be added: it joins), start
 * raft. On success *out is owned by the caller:
 * release with cons_stop(). */
int cons_start(const struct cons_config *cfg, struct cons **out);

/* Stop raft and the loop thread; pending callbacks run with CONS_SHUTDOWN
 * before it returns. Any thread but the loop's (it joins that thread), so
 * never from a consensus callback. */
void cons_stop(struct cons *c);

const char *cons_strerror(int rv);

/* Completion of cons_submit(). Runs on the loop thread. @result is borrowed
 * for the duration of the call and is non-NULL only when rv == 0.
 * @leader_id is the known leader when rv == CONS_NOTLEADER, else 0. */
typedef void (*cons_submit_cb)(void *arg,
                               int rv,
                               const Cityops__V1__CommandResult *result,
                               uint64_t leader_id);

/* Propose @cmd. The loop stamps cmd->time; @cmd is borrowed until the
 * callback has run. If this node is not leader: with a known leader the
 * callback gets CONS_NOTLEADER at once; with none the proposal waits up to
 * @wait_ms for an election, then gets CONS_NOLEADER. Any thread. Returns 0
 * (the callback will run exactly once) or an error (it won't): CONS_TOOBIG
 * if the packed command exceeds 4 MiB - 1 KiB, CONS_SHUTDOWN once
 * cons_stop() has begun, CONS_NOMEM, CONS_INVALID. A leader also waits
 * (parked, bounded by @wait_ms) until its post-election barrier has applied.
 * Callback codes: 0, CONS_NOTLEADER, CONS_NOLEADER, CONS_LEADERSHIPLOST,
 * CONS_SHUTDOWN, CONS_IOERR (entry applied but no result for it), CONS_NOMEM,
 * CONS_STOREFAIL (the local store failed to apply an entry and has not
 * recovered: see cons_status.store_failed). A proposal whose entry is the
 * one the store failed on waits until the store recovers or cons_stop().
 */
int cons_submit(struct cons *c,
                Cityops__V1__Command *cmd,
                unsigned wait_ms,
                cons_submit_cb cb,
                void *arg);

/* Completion of cons_barrier(): rv == 0 means every entry committed before
 * the call is applied locally and this node was leader when it completed. */
typedef void (*cons_barrier_cb)(void *arg, int rv, uint64_t leader_id);

/* Linearizable read support: on the leader, run (or share) a raft barrier
 * started after this call. Not leader: as cons_submit(). Any thread. */
int cons_barrier(struct cons *c,
                 unsigned wait_ms,
                 cons_barrier_cb cb,
                 void *arg);

/* Membership changes. Each runs on the leader only (elsewhere the callback
 * gets CONS_NOTLEADER with the leader's id, as for cons_submit()), after the
 * leader's post-election barrier, and one at a time: a change asked for
 * while another is in flight gets CONS_CANTCHANGE. The callback runs on the
 * loop thread once the new configuration is committed. Any thread. */
typedef void (*cons_change_cb)(void *arg, int rv, uint64_t leader_id);
/* Each returns 0 (the callback will run exactly once) or CONS_INVALID,
 * CONS_NOMEM, CONS_SHUTDOWN (it won't). Callback codes: 0, CONS_NOTLEADER,
 * CONS_NOLEADER, CONS_CANTCHANGE, CONS_NOTFOUND, CONS_EXISTS (add: id or
 * address in use; assign: already has that role), CONS_INVALID (transfer to
 * a non-voter or to itself), CONS_LEADERSHIPLOST, CONS_TIMEOUT,
 * CONS_SHUTDOWN. */

/* Add a member with @role (m->zone is not used: zones come from
 * hooks.zone_of). It is added as a spare first; for a voter libraft then
 * catches it up (snapshot + log) before the configuration names it voter
 * (CONS_TIMEOUT if it does not answer); a standby is named at once and
 * catches up as a replica. */
int cons_member_add(struct cons *c,
                    const struct cons_member *m,
                    unsigned wait_ms,
                    cons_change_cb cb,
                    void *arg);
/* Give member @id a new role (promote/demote). */
int cons_member_assign(struct cons *c,
                       uint64_t id,
                       enum cons_member_role role,
                       unsigned wait_ms,
                       cons_change_cb cb,
                       void *arg);
/* Remove member @id (the leader itself included: it steps down after). */
int cons_member_remove(struct cons *c,
                       uint64_t id,
                       unsigned wait_ms,
                       cons_change_cb cb,
                       void *arg);
/* Transfer leadership to voter @id (0: the most up-to-date voter). The
 * callback runs when the transfer completed or failed. */
int cons_transfer(struct cons *c,
                  uint64_t id,
                  unsigned wait_ms,
                  cons_change_cb cb,
                  void *arg);

/* Per-member view the leader has (zero elsewhere). */
struct cons_progress {
    uint64_t match_index; /* highest index known replicated there */
    int reachable;        /* heard from within the election timeout */
    int64_t unreachable_ms; /* how long it has not been heard from */
};

struct cons_status {
    enum cons_state state;
    uint64_t term;
    uint64_t leader_id;
    uint64_t commit_index;
    uint64_t applied_index;
    uint64_t last_log_index;
    uint64_t last_log_term; /* term of the entry at last_log_index */
    size_t n_members;
    struct cons_member members[CONS_MAX_MEMBERS];
    struct cons_progress progress[CONS_MAX_MEMBERS]; /* leader only */
    int store_failed;  /* the store refused an entry: writes are refused */
    char store_error[256];
    uint64_t snapshot_index; /* index of the last snapshot taken/installed */
    /* Bytes of command entries in the log (those applied since the last
     * snapshot and the trailing ones it kept, as far as recorded) and the
     * budget for them; both 0 without a log budget. */
    uint64_t log_bytes;
    uint64_t log_budget;
};

/* Drills: make the loop thread stall for @ms (no heartbeats, no applies,
 * like a process stopped by SIGSTOP), starting at its next iteration. Any
 * thread. */
void cons_stall(struct cons *c, unsigned ms);

/* A copy of the latest status, refreshed by the loop thread. Any thread. */
void cons_status_get(struct cons *c, struct cons_status *out);

#endif /* CITYOPS_CONS_H */
