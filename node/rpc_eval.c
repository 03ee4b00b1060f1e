/* cityops.v1.Eval: the evaluation report and the command centre's workload,
 * each from one consistent read of the store (STALE at once, LINEARIZABLE
 * or a min_index after a barrier, as every read; rpc_read.c routes the
 * kinds from NODE_READ_EVAL here). The request is checked before any
 * barrier, so a bad period costs the leader nothing. */
#include <stdio.h>

#include "cityops/v1/eval.pb-c.h"
#include "node_internal.h"
#include "proto/clog.h"

enum eval_kind {
    EVAL_REPORT = NODE_READ_EVAL,
    EVAL_WORKLOAD,
};

static void
fail(struct node *n, struct rpc_call *call, int rv, const char *what)
{
    char msg[STORE_ERRMSG_SIZE + 64];

    snprintf(msg, sizeof msg, "%s: %s", what, store_strerror(rv));
    clog(CLOG_WARN, "eval", "%s failed: %s", what, store_errmsg(n->store));
    rpc_call_fail(call, node_status_from_err(rv), msg);
}

/* 0 if @req names a period and a grouping that exist, else the call is
 * failed with INVALID_ARGUMENT. */
static int report_check(struct rpc_call *call,
                        const Cityops__V1__EvalRequest *req)
{
    struct store_eval_period p;
    char msg[200];

    if (store_eval_period_parse(req->period, &p) != 0) {
        snprintf(msg, sizeof msg,
                 "period '%.64s': want YYYY-MM (2026-10), YYYY-Qn (2026-Q4) "
                 "or YYYY (2026), UTC+8",
                 req->period != NULL ? req->period : "");
        rpc_call_fail(call, GRPC_STATUS_INVALID_ARGUMENT, msg);
        return -1;
    }
    if (store_eval_kind_parse(req->group_by) < 0) {
        snprintf(msg, sizeof msg,
                 "group_by '%.64s': want department, district or grid",
                 req->group_by);
        rpc_call_fail(call, GRPC_STATUS_INVALID_ARGUMENT, msg);
        return -1;
    }
    return 0;
}

void node_eval_read(struct node *n, struct rpc_call *call, int kind)
{
    const ProtobufCMessage *req = rpc_call_request(call);
    int rv;

    if (kind == EVAL_REPORT) {
        Cityops__V1__EvalReport *rep = NULL;

        rv = store_eval_report(n->store, (const Cityops__V1__EvalRequest *)req,
                               &rep);
        if (rv != 0) {
            fail(n, call, rv, "eval report");
            return;
        }
        rpc_call_reply(call, &rep->base);
        cityops__v1__eval_report__free_unpacked(rep, NULL);
        return;
    }
    {
        Cityops__V1__WorkloadResponse *w = NULL;

        rv = store_workload(n->store, &w);
        if (rv != 0) {
            fail(n, call, rv, "workload");
            return;
        }
        rpc_call_reply(call, &w->base);
        cityops__v1__workload_response__free_unpacked(w, NULL);
    }
}

static void
report_handle(struct rpc_call *call, const ProtobufCMessage *req, void *data)
{
    if (report_check(call, (const Cityops__V1__EvalRequest *)req) != 0) {
        return;
    }
    node_read_handle(call, req, data);
}

void node_eval_methods_add(struct node *n)
{
    node_method_add(
        n, "/cityops.v1.Eval/Report", &cityops__v1__eval_request__descriptor,
        &cityops__v1__eval_report__descriptor, report_handle, EVAL_REPORT);
    node_method_add(n, "/cityops.v1.Eval/Workload",
                    &cityops__v1__workload_request__descriptor,
                    &cityops__v1__workload_response__descriptor,
                    node_read_handle, EVAL_WORKLOAD);
}
