/* cityops.v1.Cluster/Status. The node asked reports its own Raft and store
 * view and, unless local_only, asks every other member for theirs (a short
 * deadline each, in parallel) so that one call shows the whole cluster:
 * roles, leader, term, commit/applied/last index per node, reachability,
 * and state digests on request.
 *
 * Fan-out completions run on the completion-queue thread; the handler runs
 * there too, or on the reader thread after a barrier (LINEARIZABLE), so the
 * count of answers still due is atomic and whoever brings it to zero
 * answers the call (acq_rel: the slots written before are visible). */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <grpc/support/time.h>

#include "cityops/v1/cluster.pb-c.h"
#include "proto/clog.h"
#include "node_internal.h"

#define STATUS_FANOUT_MS 1000
#define STATUS_EVENTS 10

struct status_slot {
    Cityops__V1__NodeStatus ns;
    char grpc[NODE_ADDRESS_SIZE];
    char zone[CONS_ZONE_SIZE];
    char store_error[256];
    Cityops__V1__StatusResponse *remote; /* unpacked answer, owns strings */
    char error[160];
    char digest[2 * STORE_DIGEST_SIZE + 1];
    char cluster_id[STORE_CLUSTER_ID_SIZE];
    char restored_from[STORE_RESTORED_FROM_SIZE];
};

struct status_agg {
    struct node *n;
    struct rpc_call *call;
    _Atomic int pending; /* the handler's own share + one per member asked */
    size_t n_nodes;
    struct status_slot slots[CONS_MAX_MEMBERS];
    Cityops__V1__NodeStatus *ptrs[CONS_MAX_MEMBERS];
    struct cons_status cs;
    int with_digest;
    Cityops__V1__ClusterEvent **events;
    size_t n_events;
};

static Cityops__V1__RaftState raft_state(enum cons_state s)
{
    switch (s) {
    case CONS_STATE_FOLLOWER:
        return CITYOPS__V1__RAFT_STATE__RAFT_STATE_FOLLOWER;
    case CONS_STATE_CANDIDATE:
        return CITYOPS__V1__RAFT_STATE__RAFT_STATE_CANDIDATE;
    case CONS_STATE_LEADER:
        return CITYOPS__V1__RAFT_STATE__RAFT_STATE_LEADER;
    default:
        return CITYOPS__V1__RAFT_STATE__RAFT_STATE_UNAVAILABLE;
    }
}

static Cityops__V1__MemberRole member_role(enum cons_member_role r)
{
    switch (r) {
    case CONS_STANDBY:
        return CITYOPS__V1__MEMBER_ROLE__MEMBER_ROLE_STANDBY;
    case CONS_SPARE:
        return CITYOPS__V1__MEMBER_ROLE__MEMBER_ROLE_SPARE;
    default:
        return CITYOPS__V1__MEMBER_ROLE__MEMBER_ROLE_VOTER;
    }
}

/* Fill @slot with this node's own view. */
static void fill_local(struct node *n,
                       const struct cons_status *cs,
                       struct status_slot *slot,
                       int with_digest)
{
    Cityops__V1__NodeStatus *ns = &slot->ns;
    uint8_t digest[STORE_DIGEST_SIZE];
    uint64_t applied;

    ns->id = n->cfg.id;
    ns->grpc_address = n->cfg.grpc_address;
    ns->raft_address = n->cfg.raft_address;
    ns->reachable = 1;
    node_member_zone(n, n->cfg.id, slot->zone, sizeof slot->zone);
    ns->zone = slot->zone;
    ns->state = raft_state(cs->state);
    ns->term = cs->term;
    ns->commit_index = cs->commit_index;
    ns->applied_index = store_applied_index(n->store);
    ns->last_log_index = cs->last_log_index;
    ns->leader_id = cs->leader_id;
    ns->case_count = store_case_count(n->store);
    ns->snapshot_index = cs->snapshot_index;
    ns->last_log_term = cs->last_log_term;
    ns->log_bytes = cs->log_bytes;
    ns->log_budget_bytes = cs->log_budget;
    if (store_cluster_id(n->store, slot->cluster_id, slot->restored_from) ==
        0) {
        ns->cluster_id = slot->cluster_id;
        ns->restored_from = slot->restored_from;
    }
    if (cs->store_failed) {
        snprintf(slot->store_error, sizeof slot->store_error, "%s",
                 cs->store_error);
        ns->store_error = slot->store_error;
    }
    for (size_t i = 0; i < cs->n_members; i++) {
        if (cs->members[i].id == n->cfg.id) {
            ns->member_role = member_role(cs->members[i].role);
        }
    }
    if (with_digest && store_digest(n->store, digest, &applied) == 0) {
        for (int i = 0; i < STORE_DIGEST_SIZE; i++) {
            sprintf(slot->digest + 2 * i, "%02x", digest[i]);
        }
        ns->state_digest = slot->digest;
        ns->applied_index = applied;
    }
}

static void agg_finish(struct status_agg *a)
{
    Cityops__V1__StatusResponse resp = CITYOPS__V1__STATUS_RESPONSE__INIT;
    char leader[NODE_ADDRESS_SIZE];

    node_member_grpc(a->n, a->cs.leader_id, leader, sizeof leader);
    resp.leader_id = a->cs.leader_id;
    resp.leader_address = leader;
    resp.events = a->events;
    resp.n_events = a->n_events;
    resp.term = a->cs.term;
    resp.answered_by = a->n->cfg.id;
    for (size_t i = 0; i < a->n_nodes; i++) {
        a->ptrs[i] = &a->slots[i].ns;
    }
    resp.n_nodes = a->n_nodes;
    resp.nodes = a->ptrs;
    rpc_call_reply(a->call, &resp.base);
    for (size_t i = 0; i < a->n_nodes; i++) {
        if (a->slots[i].remote != NULL) {
            cityops__v1__status_response__free_unpacked(a->slots[i].remote,
                                                        NULL);
        }
    }
    for (size_t i = 0; i < a->n_events; i++) {
        cityops__v1__cluster_event__free_unpacked(a->events[i], NULL);
    }
    free(a->events);
    free(a);
}

struct status_ask {
    struct status_agg *agg;
    struct status_slot *slot;
};

static void remote_done(void *arg,
                        grpc_status_code status,
                        const char *details,
                        const uint8_t *resp,
                        size_t len)
{
    struct status_ask *ask = arg;
    struct status_slot *slot = ask->slot;
    struct status_agg *a = ask->agg;
    Cityops__V1__StatusResponse *r = NULL;

    if (status == GRPC_STATUS_OK) {
        r = cityops__v1__status_response__unpack(NULL, len, resp);
    }
    if (r != NULL && r->n_nodes == 1) {
        Cityops__V1__NodeStatus keep = slot->ns;
        slot->remote = r;
        slot->ns = *r->nodes[0];
        slot->ns.grpc_address = keep.grpc_address;
        slot->ns.raft_address = keep.raft_address;
        slot->ns.member_role = keep.member_role;
        slot->ns.zone = keep.zone;
        slot->ns.match_index = keep.match_index;
        slot->ns.unreachable_ms = keep.unreachable_ms;
        slot->ns.reachable = 1;
    } else {
        if (r != NULL) {
            cityops__v1__status_response__free_unpacked(r, NULL);
        }
        snprintf(slot->error, sizeof slot->error, "%s: %s",
                 rpc_status_name(status), details ? details : "");
        slot->ns.error = slot->error;
        slot->ns.reachable = 0;
    }
    free(ask);
    if (atomic_fetch_sub(&a->pending, 1) == 1) {
        agg_finish(a);
    }
}

static void ask_member(struct status_agg *a,
                       struct status_slot *slot,
                       const struct cons_member *m)
{
    struct node *n = a->n;
    struct rpc_channel *ch = node_peer_channel(n, m->id);
    Cityops__V1__StatusRequest req = CITYOPS__V1__STATUS_REQUEST__INIT;
    uint8_t buf[64];
    size_t len;
    struct status_ask *ask;
    gpr_timespec deadline;

    if (ch == NULL) {
        snprintf(slot->error, sizeof slot->error,
                 "node %llu is not in this node's [cluster] config",
                 (unsigned long long)m->id);
        slot->ns.error = slot->error;
        return;
    }
    ask = malloc(sizeof *ask);
    if (ask == NULL) {
        snprintf(slot->error, sizeof slot->error, "out of memory");
        slot->ns.error = slot->error;
        return;
    }
    ask->agg = a;
    ask->slot = slot;
    req.local_only = 1;
    req.with_digest = a->with_digest;
    len = cityops__v1__status_request__pack(&req, buf);
    deadline = gpr_time_add(gpr_now(GPR_CLOCK_REALTIME),
                            gpr_time_from_millis(STATUS_FANOUT_MS,
                                                 GPR_TIMESPAN));
    atomic_fetch_add(&a->pending, 1);
    if (rpc_call_raw_async(n->rpc, ch, "/cityops.v1.Cluster/Status", buf, len,
                           deadline, remote_done, ask) != 0) {
        atomic_fetch_sub(&a->pending, 1);
        free(ask);
        snprintf(slot->error, sizeof slot->error, "cannot start a call");
        slot->ns.error = slot->error;
    }
}

static void status_run(struct node *n, struct rpc_call *call)
{
    const Cityops__V1__StatusRequest *req =
        (const Cityops__V1__StatusRequest *)rpc_call_request(call);
    struct status_agg *a = calloc(1, sizeof *a);

    if (a == NULL) {
        rpc_call_fail(call, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
        return;
    }
    a->n = n;
    a->call = call;
    a->with_digest = req->with_digest;
    atomic_init(&a->pending, 1);
    cons_status_get(n->cons, &a->cs);
    if (req->local_only || a->cs.n_members == 0) {
        cityops__v1__node_status__init(&a->slots[0].ns);
        fill_local(n, &a->cs, &a->slots[0], req->with_digest);
        a->n_nodes = 1;
    } else {
        if (store_cluster_events(n->store, STATUS_EVENTS, &a->events,
                                 &a->n_events) != 0) {
            a->n_events = 0;
        }
        for (size_t i = 0; i < a->cs.n_members; i++) {
            const struct cons_member *m = &a->cs.members[i];
            struct status_slot *slot = &a->slots[i];
            cityops__v1__node_status__init(&slot->ns);
            node_member_grpc(n, m->id, slot->grpc, sizeof slot->grpc);
            snprintf(slot->zone, sizeof slot->zone, "%s", m->zone);
            slot->ns.id = m->id;
            slot->ns.raft_address = (char *)m->raft_address;
            slot->ns.grpc_address = slot->grpc;
            slot->ns.zone = slot->zone;
            slot->ns.member_role = member_role(m->role);
            if (a->cs.state == CONS_STATE_LEADER) {
                slot->ns.match_index = a->cs.progress[i].match_index;
                slot->ns.unreachable_ms = a->cs.progress[i].unreachable_ms;
            }
            if (m->id == n->cfg.id) {
                fill_local(n, &a->cs, slot, req->with_digest);
                slot->ns.member_role = member_role(m->role);
                slot->ns.grpc_address = slot->grpc;
            } else {
                ask_member(a, slot, m);
            }
        }
        a->n_nodes = a->cs.n_members;
    }
    if (atomic_fetch_sub(&a->pending, 1) == 1) {
        agg_finish(a);
    }
}

struct status_wait {
    struct node *n;
    struct rpc_call *call;
};

/* Reader thread. */
static void status_job(void *arg)
{
    struct status_wait *w = arg;

    status_run(w->n, w->call);
    free(w);
}

/* Loop thread: the status (a digest reads the whole store) runs elsewhere. */
static void status_after_barrier(void *arg, int rv, uint64_t leader_id)
{
    struct status_wait *w = arg;

    if (rv != 0) {
        node_answer_not_applied(w->n, w->call, rv, leader_id);
        free(w);
        return;
    }
    node_reader_post(w->n, status_job, w);
}

/* STALE (the default): this node's view at once. LINEARIZABLE or a
 * min_index not applied here yet: the leader's view after a barrier (a
 * follower forwards the call). */
static void status_handle(struct rpc_call *call,
                          const ProtobufCMessage *msg,
                          void *data)
{
    const struct node_handler *h = data;
    struct status_wait *w;
    int rv;

    if (!node_read_needs_barrier(h->n, msg)) {
        status_run(h->n, call);
        return;
    }
    w = malloc(sizeof *w);
    if (w == NULL) {
        rpc_call_fail(call, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
        return;
    }
    w->n = h->n;
    w->call = call;
    rv = cons_barrier(h->n->cons,
                      node_call_wait_ms(call, h->n->cfg.write_wait_ms),
                      status_after_barrier, w);
    if (rv != 0) {
        free(w);
        node_answer_not_applied(h->n, call, rv, 0);
    }
}

void node_status_methods_add(struct node *n)
{
    node_method_add(n, "/cityops.v1.Cluster/Status",
                    &cityops__v1__status_request__descriptor,
                    &cityops__v1__status_response__descriptor, status_handle,
                    0);
}
