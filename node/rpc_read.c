/* The read methods of cityops.v1.Cases: Get, List, History.
 *
 * STALE reads run at once on the completion-queue thread in their own LMDB
 * read transaction, on whichever node was asked; the reply carries that
 * node's applied index. LINEARIZABLE reads, and reads whose min_index this
 * node has not applied yet, first run a Raft barrier on the leader (a
 * follower forwards the call), then read. */
#include <stdio.h>
#include <stdlib.h>

#include "cityops/v1/cases.pb-c.h"
#include "proto/clog.h"
#include "node_internal.h"

enum read_kind { READ_GET = 1, READ_LIST, READ_HISTORY };
/* Kinds >= NODE_READ_AUDIT are served by rpc_audit.c. */

struct read {
    struct node *n;
    struct rpc_call *call;
    int kind;
};

static void fail_store(struct rpc_call *call, struct node *n, int rv,
                       const char *what)
{
    char msg[STORE_ERRMSG_SIZE + 64];

    if (rv == STORE_INVALID) {
        snprintf(msg, sizeof msg, "%s: invalid page token or filter", what);
    } else {
        snprintf(msg, sizeof msg, "%s: %s", what, store_strerror(rv));
        clog(CLOG_WARN, "node", "%s failed: %s", what, store_errmsg(n->store));
    }
    rpc_call_fail(call, node_status_from_err(rv), msg);
}

static void read_get(struct node *n, struct rpc_call *call,
                     const Cityops__V1__GetRequest *req)
{
    Cityops__V1__CaseReply reply = CITYOPS__V1__CASE_REPLY__INIT;
    Cityops__V1__Case *c = NULL;
    char msg[64];
    int rv;

    if (req->case_id == 0) {
        rpc_call_fail(call, GRPC_STATUS_INVALID_ARGUMENT,
                      "case_id is required");
        return;
    }
    rv = store_case_get(n->store, req->case_id, &c, &reply.applied_index);
    if (rv == STORE_NOTFOUND) {
        snprintf(msg, sizeof msg, "case %llu not found",
                 (unsigned long long)req->case_id);
        rpc_call_fail(call, GRPC_STATUS_NOT_FOUND, msg);
        return;
    }
    if (rv != 0) {
        fail_store(call, n, rv, "get case");
        return;
    }
    reply.case_ = c;
    rpc_call_reply(call, &reply.base);
    cityops__v1__case__free_unpacked(c, NULL);
}

static void read_list(struct node *n, struct rpc_call *call,
                      const Cityops__V1__ListRequest *req)
{
    Cityops__V1__ListResponse *resp = NULL;
    int rv = store_case_list(n->store, req, &resp);

    if (rv != 0) {
        fail_store(call, n, rv, "list cases");
        return;
    }
    rpc_call_reply(call, &resp->base);
    cityops__v1__list_response__free_unpacked(resp, NULL);
}

static void read_history(struct node *n, struct rpc_call *call,
                         const Cityops__V1__HistoryRequest *req)
{
    Cityops__V1__HistoryResponse *resp = NULL;
    char msg[64];
    int rv;

    if (req->case_id == 0) {
        rpc_call_fail(call, GRPC_STATUS_INVALID_ARGUMENT,
                      "case_id is required");
        return;
    }
    rv = store_case_history(n->store, req->case_id, &resp);
    if (rv == STORE_NOTFOUND) {
        snprintf(msg, sizeof msg, "case %llu not found",
                 (unsigned long long)req->case_id);
        rpc_call_fail(call, GRPC_STATUS_NOT_FOUND, msg);
        return;
    }
    if (rv != 0) {
        fail_store(call, n, rv, "case history");
        return;
    }
    rpc_call_reply(call, &resp->base);
    cityops__v1__history_response__free_unpacked(resp, NULL);
}

static void read_run(struct node *n, struct rpc_call *call, int kind)
{
    const ProtobufCMessage *req = rpc_call_request(call);

    if (kind >= NODE_READ_EVAL && kind < NODE_READ_EVAL + 100) {
        node_eval_read(n, call, kind);
        return;
    }
    if (kind >= NODE_READ_PUBLIC && kind < NODE_READ_PUBLIC + 100) {
        node_public_read(n, call, kind);
        return;
    }
    if (kind >= NODE_READ_FED && kind < NODE_READ_FED + 100) {
        node_fed_read(n, call, kind);
        return;
    }
    if (kind >= NODE_READ_ADMIN && kind < NODE_READ_ADMIN + 100) {
        node_admin_read(n, call, kind);
        return;
    }
    if (kind >= NODE_READ_DR && kind < NODE_READ_DR + 100) {
        node_dr_read(n, call, kind);
        return;
    }
    if (kind >= NODE_READ_AUDIT) {
        node_audit_read(n, call, kind);
        return;
    }
    switch (kind) {
    case READ_GET:
        read_get(n, call, (const Cityops__V1__GetRequest *)req);
        break;
    case READ_LIST:
        read_list(n, call, (const Cityops__V1__ListRequest *)req);
        break;
    default:
        read_history(n, call, (const Cityops__V1__HistoryRequest *)req);
        break;
    }
}

/* Reader thread. */
static void read_job(void *arg)
{
    struct read *r = arg;
    const Cityops__V1__ReadOptions *o =
        node_read_options(rpc_call_request(r->call));
    char msg[128];

    if (o != NULL && o->min_index > store_applied_index(r->n->store)) {
        snprintf(msg, sizeof msg,
                 "min_index %llu is beyond what the cluster has committed; "
                 "pass the applied_index a write returned",
                 (unsigned long long)o->min_index);
        rpc_call_fail(r->call, GRPC_STATUS_OUT_OF_RANGE, msg);
    } else {
        read_run(r->n, r->call, r->kind);
    }
    free(r);
}

/* Loop thread: never read here (a scan would stall heartbeats). */
static void read_after_barrier(void *arg, int rv, uint64_t leader_id)
{
    struct read *r = arg;

    if (rv != 0) {
        node_answer_not_applied(r->n, r->call, rv, leader_id);
        free(r);
        return;
    }
    node_reader_post(r->n, read_job, r);
}

/* The ReadOptions of a read request (field "read"), or NULL. */
const Cityops__V1__ReadOptions *node_read_options(const ProtobufCMessage *req)
{
    const ProtobufCFieldDescriptor *fd =
        protobuf_c_message_descriptor_get_field_by_name(req->descriptor,
                                                        "read");
    if (fd == NULL) {
        return NULL;
    }
    return *(Cityops__V1__ReadOptions *const *)((const char *)req +
                                                fd->offset);
}

int node_read_needs_barrier(struct node *n, const ProtobufCMessage *req)
{
    const Cityops__V1__ReadOptions *o = node_read_options(req);

    if (o == NULL) {
        return 0;
    }
    return o->consistency ==
               CITYOPS__V1__CONSISTENCY__CONSISTENCY_LINEARIZABLE ||
           (o->min_index > 0 && o->min_index > store_applied_index(n->store));
}

void node_read_handle(struct rpc_call *call,
                      const ProtobufCMessage *req,
                      void *data)
{
    const struct node_handler *h = data;
    struct read *r;
    int rv;

    if (!node_read_needs_barrier(h->n, req)) {
        read_run(h->n, call, h->op);
        return;
    }
    r = malloc(sizeof *r);
    if (r == NULL) {
        rpc_call_fail(call, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
        return;
    }
    r->n = h->n;
    r->call = call;
    r->kind = h->op;
    rv = cons_barrier(h->n->cons, node_call_wait_ms(call, h->n->cfg.write_wait_ms),
                      read_after_barrier, r);
    if (rv != 0) {
        free(r);
        node_answer_not_applied(h->n, call, rv, 0);
    }
}

void node_read_methods_add(struct node *n)
{
    node_method_add(n, "/cityops.v1.Cases/Get",
                    &cityops__v1__get_request__descriptor,
                    &cityops__v1__case_reply__descriptor, node_read_handle,
                    READ_GET);
    node_method_add(n, "/cityops.v1.Cases/List",
                    &cityops__v1__list_request__descriptor,
                    &cityops__v1__list_response__descriptor, node_read_handle,
                    READ_LIST);
    node_method_add(n, "/cityops.v1.Cases/History",
                    &cityops__v1__history_request__descriptor,
                    &cityops__v1__history_response__descriptor, node_read_handle,
                    READ_HISTORY);
}
