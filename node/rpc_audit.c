/* cityops.v1.Audit: reads of the audit trail (records, tree heads,
 * inclusion and consistency proofs) with the usual consistency options, and
 * Checkpoint, which asks the leader for a tree head now (role ADMIN or
 * AUDITOR; the leader's checkpointer signs it within a second). */
#include <stdio.h>
#include <stdlib.h>

#include "cityops/v1/audit.pb-c.h"
#include "proto/clog.h"
#include "node_internal.h"

enum audit_kind {
    AUDIT_LIST = NODE_READ_AUDIT,
    AUDIT_CHECKPOINT_GET,
    AUDIT_CHECKPOINT_LIST,
    AUDIT_INCLUSION,
    AUDIT_CONSISTENCY,
};

static void fail(struct node *n, struct rpc_call *call, int rv,
                 const char *what)
{
    char msg[STORE_ERRMSG_SIZE + 64];

    if (rv == STORE_NOTFOUND) {
        snprintf(msg, sizeof msg, "%s: not found", what);
    } else if (rv == STORE_INVALID) {
        snprintf(msg, sizeof msg, "%s: %s", what, store_errmsg(n->store));
    } else {
        snprintf(msg, sizeof msg, "%s: %s", what, store_strerror(rv));
        clog(CLOG_WARN, "audit", "%s failed: %s", what,
             store_errmsg(n->store));
    }
    rpc_call_fail(call, node_status_from_err(rv), msg);
}

/* Tree size 0 in a proof request means: the latest checkpoint's. */
static int latest_size(struct node *n, uint64_t *size)
{
    Cityops__V1__Checkpoint *cp = NULL;
    int rv = store_checkpoint_get(n->store, 0, &cp);

    if (rv != 0) {
        return rv;
    }
    *size = cp->tree_size;
    cityops__v1__checkpoint__free_unpacked(cp, NULL);
    return 0;
}

static void reply_free(struct rpc_call *call, ProtobufCMessage *msg)
{
    rpc_call_reply(call, msg);
    protobuf_c_message_free_unpacked(msg, NULL);
}

void node_audit_read(struct node *n, struct rpc_call *call, int kind)
{
    const ProtobufCMessage *req = rpc_call_request(call);
    ProtobufCMessage *out = NULL;
    int rv;

    switch (kind) {
    case AUDIT_LIST: {
        Cityops__V1__AuditListResponse *r = NULL;
        rv = store_audit_list(n->store,
                              (const Cityops__V1__AuditListRequest *)req, &r);
        if (rv != 0) {
            fail(n, call, rv, "audit list");
            return;
        }
        out = &r->base;
        break;
    }
    case AUDIT_CHECKPOINT_GET: {
        const Cityops__V1__GetCheckpointRequest *g =
            (const Cityops__V1__GetCheckpointRequest *)req;
        Cityops__V1__CheckpointReply reply = CITYOPS__V1__CHECKPOINT_REPLY__INIT;
        Cityops__V1__Checkpoint *cp = NULL;
        rv = store_checkpoint_get(n->store, g->tree_size, &cp);
        if (rv != 0) {
            fail(n, call, rv, "checkpoint");
            return;
        }
        reply.checkpoint = cp;
        rpc_call_reply(call, &reply.base);
        cityops__v1__checkpoint__free_unpacked(cp, NULL);
        return;
    }
    case AUDIT_CHECKPOINT_LIST: {
        Cityops__V1__CheckpointList *l = NULL;
        rv = store_checkpoint_list(n->store, &l);
        if (rv != 0) {
            fail(n, call, rv, "checkpoints");
            return;
        }
        out = &l->base;
        break;
    }
    case AUDIT_INCLUSION: {
        const Cityops__V1__InclusionProofRequest *p =
            (const Cityops__V1__InclusionProofRequest *)req;
        Cityops__V1__InclusionProofResponse *r = NULL;
        Cityops__V1__Checkpoint *cp = NULL;
        uint64_t size = p->tree_size;
        rv = size == 0 ? latest_size(n, &size) : 0;
        if (rv == 0) {
            rv = store_audit_inclusion(n->store, p->seq, size, &r);
        }
        if (rv != 0) {
            fail(n, call, rv, "inclusion proof");
            return;
        }
        /* storage attaches the head of that size when it has one */
        if (r->checkpoint == NULL &&
            store_checkpoint_get(n->store, size, &cp) == 0) {
            r->checkpoint = cp; /* freed with r */
        }
        out = &r->base;
        break;
    }
    default: {
        const Cityops__V1__ConsistencyProofRequest *p =
            (const Cityops__V1__ConsistencyProofRequest *)req;
        Cityops__V1__ConsistencyProofResponse *r = NULL;
        rv = store_audit_consistency(n->store, p->first, p->second, &r);
        if (rv != 0) {
            fail(n, call, rv, "consistency proof");
            return;
        }
        out = &r->base;
        break;
    }
    }
    reply_free(call, out);
}

/* Checkpoint asks for nothing but a tree head at the current size. */
static Cityops__V1__CheckpointRequest checkpoint_now =
    CITYOPS__V1__CHECKPOINT_REQUEST__INIT;

static int checkpoint_reply(struct node_write *w,
                            const Cityops__V1__CommandResult *result)
{
    Cityops__V1__CheckpointReply reply = CITYOPS__V1__CHECKPOINT_REPLY__INIT;
    Cityops__V1__Checkpoint *cp = NULL;
    int rv;

    (void)result;
    rv = store_checkpoint_get(w->n->store, 0, &cp);
    if (rv != 0) {
        fail(w->n, w->call, rv, "checkpoint");
        return 0;
    }
    reply.checkpoint = cp;
    rpc_call_reply(w->call, &reply.base);
    cityops__v1__checkpoint__free_unpacked(cp, NULL);
    return 0;
}

static void checkpoint_handle(struct rpc_call *call,
                              const ProtobufCMessage *msg,
                              void *data)
{
    const struct node_handler *h = data;
    const Cityops__V1__CheckpointRequestCall *req =
        (const Cityops__V1__CheckpointRequestCall *)msg;
    const Cityops__V1__RequestContext *ctx = req->ctx;
    Cityops__V1__RequestContext who = CITYOPS__V1__REQUEST_CONTEXT__INIT;

    /* No retry key: each call takes a tree head of its own, and its audit
     * record names no client. */
    if (ctx != NULL) {
        who.actor_id = ctx->actor_id;
        who.role = ctx->role; /* apply refuses roles but ADMIN/AUDITOR */
        ctx = &who;
    }
    node_write_submit(h->n, call, ctx, "ctx.actor_id is required",
                      CITYOPS__V1__COMMAND__OP_CHECKPOINT, &checkpoint_now.base,
                      sizeof(struct node_write), checkpoint_reply);
}

void node_audit_methods_add(struct node *n)
{
    node_method_add(n, "/cityops.v1.Audit/List",
                    &cityops__v1__audit_list_request__descriptor,
                    &cityops__v1__audit_list_response__descriptor,
                    node_read_handle, AUDIT_LIST);
    node_method_add(n, "/cityops.v1.Audit/GetCheckpoint",
                    &cityops__v1__get_checkpoint_request__descriptor,
                    &cityops__v1__checkpoint_reply__descriptor,
                    node_read_handle, AUDIT_CHECKPOINT_GET);
    node_method_add(n, "/cityops.v1.Audit/ListCheckpoints",
                    &cityops__v1__list_checkpoints_request__descriptor,
                    &cityops__v1__checkpoint_list__descriptor,
                    node_read_handle, AUDIT_CHECKPOINT_LIST);
    node_method_add(n, "/cityops.v1.Audit/InclusionProof",
                    &cityops__v1__inclusion_proof_request__descriptor,
                    &cityops__v1__inclusion_proof_response__descriptor,
                    node_read_handle, AUDIT_INCLUSION);
    node_method_add(n, "/cityops.v1.Audit/ConsistencyProof",
                    &cityops__v1__consistency_proof_request__descriptor,
                    &cityops__v1__consistency_proof_response__descriptor,
                    node_read_handle, AUDIT_CONSISTENCY);
    node_method_add(n, "/cityops.v1.Audit/Checkpoint",
                    &cityops__v1__checkpoint_request_call__descriptor,
                    &cityops__v1__checkpoint_reply__descriptor,
                    checkpoint_handle, 0);
}
