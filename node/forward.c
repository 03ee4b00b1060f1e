/* Forwarding: a node that is not the leader relays a call to the leader
 * over gRPC, with the same request bytes, and relays the answer back. A
 * forwarded call is marked (RPC_FORWARDED_KEY) and is never forwarded again,
 * so a stale leader hint costs one UNAVAILABLE, not a loop. */
#include <stdio.h>
#include <stdlib.h>

#include <grpc/support/time.h>

#include "proto/clog.h"
#include "node_internal.h"

struct forward {
    struct rpc_call *call;
    uint64_t leader_id;
};

static void forward_done(void *arg,
                         grpc_status_code status,
                         const char *details,
                         const uint8_t *resp,
                         size_t len)
{
    struct forward *f = arg;

    if (status == GRPC_STATUS_OK) {
        rpc_call_reply_raw(f->call, resp, len);
    } else {
        rpc_call_fail(f->call, status, details);
    }
    free(f);
}

unsigned node_call_wait_ms(struct rpc_call *call, unsigned cap)
{
    gpr_timespec deadline = rpc_call_deadline(call);
    gpr_timespec now = gpr_now(deadline.clock_type);
    gpr_timespec left;
    int64_t ms;

    if (gpr_time_cmp(deadline, gpr_inf_future(deadline.clock_type)) == 0) {
        return cap;
    }
    left = gpr_time_sub(deadline, now);
    ms = (int64_t)left.tv_sec * 1000 + left.tv_nsec / 1000000;
    if (ms < 1) {
        return 1;
    }
    return ms > (int64_t)cap ? cap : (unsigned)ms;
}

static void forward(struct node *n, struct rpc_call *call, uint64_t leader_id)
{
    struct rpc_channel *ch = node_peer_channel(n, leader_id);
    struct forward *f;
    const uint8_t *buf;
    size_t len;
    gpr_timespec deadline;
    char msg[160];

    if (ch == NULL) {
        snprintf(msg, sizeof msg,
                 "leader is node %llu, which this node's config does not "
                 "list; ask another node",
                 (unsigned long long)leader_id);
        rpc_call_fail(call, GRPC_STATUS_UNAVAILABLE, msg);
        return;
    }
    f = malloc(sizeof *f);
    if (f == NULL) {
        rpc_call_fail(call, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
        return;
    }
    f->call = call;
    f->leader_id = leader_id;
    rpc_call_request_bytes(call, &buf, &len);
    deadline = rpc_call_deadline(call);
    if (gpr_time_cmp(deadline, gpr_inf_future(deadline.clock_type)) == 0) {
        deadline = gpr_time_add(
            gpr_now(GPR_CLOCK_REALTIME),
            gpr_time_from_millis(n->cfg.write_wait_ms + 5000, GPR_TIMESPAN));
    }
    if (rpc_call_raw_async(n->rpc, ch, rpc_call_method(call)->path, buf, len,
                           deadline, forward_done, f) != 0) {
        free(f);
        rpc_call_fail(call, GRPC_STATUS_UNAVAILABLE,
                      "cannot start a call to the leader");
    }
}

void node_answer_not_applied(struct node *n,
                             struct rpc_call *call,
                             int rv,
                             uint64_t leader_id)
{
    char msg[400];

    switch (rv) {
    case CONS_NOTLEADER:
        if (!rpc_call_forwarded(call) && leader_id != 0 &&
            leader_id != n->cfg.id) {
            forward(n, call, leader_id);
            return;
        }
        snprintf(msg, sizeof msg,
                 "node %llu is not the leader (leader hint: %llu); retry",
                 (unsigned long long)n->cfg.id,
                 (unsigned long long)leader_id);
        break;
    case CONS_NOLEADER:
        snprintf(msg, sizeof msg,
                 "no leader elected within the wait; the cluster may have "
                 "lost its quorum: retry, and check `cityctl cluster status`");
        break;
    case CONS_LEADERSHIPLOST:
        snprintf(msg, sizeof msg,
                 "leadership was lost before the write committed; its outcome "
                 "is unknown: retry with the same client_id and seq");
        break;
    case CONS_SHUTDOWN:
        snprintf(msg, sizeof msg, "node is shutting down; retry on another");
        break;
    case CONS_STOREFAIL: {
        struct cons_status st;
        cons_status_get(n->cons, &st);
        snprintf(msg, sizeof msg,
                 "node %llu cannot store new entries (%s): free disk space or "
                 "raise [storage] map_size_mb; writes resume by themselves",
                 (unsigned long long)n->cfg.id, st.store_error);
        break;
    }
    default:
        snprintf(msg, sizeof msg, "%s", cons_strerror(rv));
        break;
    }
    rpc_call_fail(call, node_status_from_err(rv), msg);
}
