/* The write methods of cityops.v1.Cases. Each one wraps its request in a
 * Command (actor, role and retry key from the request's ctx; the oneof case
 * names the operation) and submits it to consensus. The leader applies it and
 * the result becomes the reply; a follower forwards the call to the leader.
 *
 * The request stays owned by the call; the Command borrows it until the
 * consensus callback has run, which is also when the call is answered.
 * node_write_submit() is that path for every write method of the node
 * (Cases here, Audit/Checkpoint, Drill/Record, Admin/Apply and the Public
 * writes); each method adds only its oneof case and its reply. */
#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cityops/v1/cases.pb-c.h"
#include "proto/clog.h"
#include "node_internal.h"

static void write_done(void *arg,
                       int rv,
                       const Cityops__V1__CommandResult *result,
                       uint64_t leader_id)
{
    struct node_write *w = arg;

    if (rv != 0) {
        node_answer_not_applied(w->n, w->call, rv, leader_id);
    } else if (result->code != CITYOPS__V1__RESULT_CODE__RESULT_OK) {
        rpc_call_fail(w->call, node_status_from_result(result->code),
                      result->message);
    } else if (w->reply(w, result) == NODE_WRITE_KEPT) {
        return;
    }
    free(w);
}

static const Cityops__V1__RequestContext *request_ctx(
    const ProtobufCMessage *req)
{
    const ProtobufCFieldDescriptor *fd =
        protobuf_c_message_descriptor_get_field_by_name(req->descriptor,
                                                        "ctx");
    if (fd == NULL) {
        return NULL;
    }
    return *(Cityops__V1__RequestContext *const *)((const char *)req +
                                                   fd->offset);
}

/* Put @req into the Command's oneof. The union members are all message
 * pointers; the case tells the packer which one it is. */
static void set_op(Cityops__V1__Command *cmd, int op, ProtobufCMessage *req)
{
    cmd->op_case = (Cityops__V1__Command__OpCase)op;
    switch (op) {
    case CITYOPS__V1__COMMAND__OP_REPORT:
        cmd->report = (Cityops__V1__ReportRequest *)req;
        break;
    case CITYOPS__V1__COMMAND__OP_REQUEST_VERIFY:
        cmd->request_verify = (Cityops__V1__RequestVerifyRequest *)req;
        break;
    case CITYOPS__V1__COMMAND__OP_VERIFY_RESULT:
        cmd->verify_result = (Cityops__V1__VerifyResultRequest *)req;
        break;
    case CITYOPS__V1__COMMAND__OP_REGISTER:
        cmd->register_ = (Cityops__V1__RegisterRequest *)req;
        break;
    case CITYOPS__V1__COMMAND__OP_MERGE:
        cmd->merge = (Cityops__V1__MergeRequest *)req;
        break;
    case CITYOPS__V1__COMMAND__OP_DISPATCH:
    case CITYOPS__V1__COMMAND__OP_REDISPATCH:
        cmd->dispatch = (Cityops__V1__DispatchRequest *)req;
        break;
    case CITYOPS__V1__COMMAND__OP_REPORT_DISPOSAL:
        cmd->report_disposal = (Cityops__V1__ReportDisposalRequest *)req;
        break;
    case CITYOPS__V1__COMMAND__OP_REQUEST_EXTENSION:
        cmd->request_extension = (Cityops__V1__RequestExtensionRequest *)req;
        break;
    case CITYOPS__V1__COMMAND__OP_DECIDE_EXTENSION:
        cmd->decide_extension = (Cityops__V1__DecideExtensionRequest *)req;
        break;
    case CITYOPS__V1__COMMAND__OP_REQUEST_CHECK:
        cmd->request_check = (Cityops__V1__RequestCheckRequest *)req;
        break;
    case CITYOPS__V1__COMMAND__OP_CHECK:
        cmd->check = (Cityops__V1__CheckRequest *)req;
        break;
    case CITYOPS__V1__COMMAND__OP_CLOSE:
        cmd->close = (Cityops__V1__CloseRequest *)req;
        break;
    case CITYOPS__V1__COMMAND__OP_SUPERVISE:
        cmd->supervise = (Cityops__V1__SuperviseRequest *)req;
        break;
    case CITYOPS__V1__COMMAND__OP_CHECKPOINT:
        cmd->checkpoint = (Cityops__V1__CheckpointRequest *)req;
        break;
    case CITYOPS__V1__COMMAND__OP_DRILL_RECORD:
        cmd->drill_record = (Cityops__V1__DrillRecord *)req;
        break;
    case CITYOPS__V1__COMMAND__OP_CONFIG:
        cmd->config = (Cityops__V1__ConfigBatch *)req;
        break;
    case CITYOPS__V1__COMMAND__OP_PUBLIC_REPORT:
        cmd->public_report = (Cityops__V1__PublicReportRequest *)req;
        break;
    case CITYOPS__V1__COMMAND__OP_REOPEN:
        cmd->reopen = (Cityops__V1__ReopenRequest *)req;
        break;
    case CITYOPS__V1__COMMAND__OP_REDACT:
        cmd->redact = (Cityops__V1__RedactRequest *)req;
        break;
    default: /* every CaseActionRequest op */
        cmd->accept = (Cityops__V1__CaseActionRequest *)req;
        break;
    }
}

static int ctx_has_actor(const Cityops__V1__RequestContext *ctx)
{
    return ctx != NULL && ctx->actor_id != NULL && ctx->actor_id[0] != '\0';
}

void node_write_submit(struct node *n,
                       struct rpc_call *call,
                       const Cityops__V1__RequestContext *ctx,
                       const char *required,
                       int op,
                       ProtobufCMessage *req,
                       size_t size,
                       node_write_reply_fn reply)
{
    struct node_write *w;
    int rv;

    assert(size >= sizeof *w && reply != NULL);
    if (!ctx_has_actor(ctx)) {
        rpc_call_fail(call, GRPC_STATUS_INVALID_ARGUMENT, required);
        return;
    }
    w = calloc(1, size);
    if (w == NULL) {
        rpc_call_fail(call, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
        return;
    }
    w->n = n;
    w->call = call;
    w->reply = reply;
    cityops__v1__command__init(&w->cmd);
    w->cmd.actor_id = ctx->actor_id;
    w->cmd.role = ctx->role;
    w->cmd.client_id = ctx->client_id;
    w->cmd.seq = ctx->seq;
    set_op(&w->cmd, op, req);
    rv = cons_submit(n->cons, &w->cmd,
                     node_call_wait_ms(call, n->cfg.write_wait_ms), write_done,
                     w);
    if (rv != 0) {
        free(w);
        node_answer_not_applied(n, call, rv, 0);
    }
}

static int case_reply(struct node_write *w,
                      const Cityops__V1__CommandResult *result)
{
    Cityops__V1__CaseReply reply = CITYOPS__V1__CASE_REPLY__INIT;

    reply.case_ = result->case_;
    reply.applied_index = result->index;
    rpc_call_reply(w->call, &reply.base);
    return 0;
}

static void
write_handle(struct rpc_call *call, const ProtobufCMessage *req, void *data)
{
    const struct node_handler *h = data;
    const Cityops__V1__RequestContext *ctx = request_ctx(req);

    if (ctx_has_actor(ctx) &&
        ctx->role == CITYOPS__V1__ROLE__ROLE_UNSPECIFIED) {
        rpc_call_fail(call, GRPC_STATUS_INVALID_ARGUMENT,
                      "ctx.role is required on every write");
        return;
    }
    node_write_submit(
        h->n, call, ctx, "ctx.actor_id is required on every write", h->op,
        (ProtobufCMessage *)req, sizeof(struct node_write), case_reply);
}

#define REQ(name) &cityops__v1__##name##__descriptor
#define OP(name) CITYOPS__V1__COMMAND__OP_##name

static const struct {
    const char *path;
    const ProtobufCMessageDescriptor *request;
    int op;
} writes[] = {
    {"/cityops.v1.Cases/Report", REQ(report_request), OP(REPORT)},
    {"/cityops.v1.Cases/RequestVerify", REQ(request_verify_request),
     OP(REQUEST_VERIFY)},
    {"/cityops.v1.Cases/VerifyResult", REQ(verify_result_request),
     OP(VERIFY_RESULT)},
    {"/cityops.v1.Cases/Accept", REQ(case_action_request), OP(ACCEPT)},
    {"/cityops.v1.Cases/Register", REQ(register_request), OP(REGISTER)},
    {"/cityops.v1.Cases/Reject", REQ(case_action_request), OP(REJECT)},
    {"/cityops.v1.Cases/Merge", REQ(merge_request), OP(MERGE)},
    {"/cityops.v1.Cases/Void", REQ(case_action_request), OP(VOID)},
    {"/cityops.v1.Cases/Dispatch", REQ(dispatch_request), OP(DISPATCH)},
    {"/cityops.v1.Cases/StartDisposal", REQ(case_action_request),
     OP(START_DISPOSAL)},
    {"/cityops.v1.Cases/Return", REQ(case_action_request), OP(RETURN)},
    {"/cityops.v1.Cases/Redispatch", REQ(dispatch_request), OP(REDISPATCH)},
    {"/cityops.v1.Cases/ReportDisposal", REQ(report_disposal_request),
     OP(REPORT_DISPOSAL)},
    {"/cityops.v1.Cases/RequestExtension", REQ(request_extension_request),
     OP(REQUEST_EXTENSION)},
    {"/cityops.v1.Cases/DecideExtension", REQ(decide_extension_request),
     OP(DECIDE_EXTENSION)},
    {"/cityops.v1.Cases/RequestCheck", REQ(request_check_request),
     OP(REQUEST_CHECK)},
    {"/cityops.v1.Cases/Check", REQ(check_request), OP(CHECK)},
    {"/cityops.v1.Cases/Rework", REQ(case_action_request), OP(REWORK)},
    {"/cityops.v1.Cases/Close", REQ(close_request), OP(CLOSE)},
    {"/cityops.v1.Cases/Shelve", REQ(case_action_request), OP(SHELVE)},
    {"/cityops.v1.Cases/Unshelve", REQ(case_action_request), OP(UNSHELVE)},
    {"/cityops.v1.Cases/Supervise", REQ(supervise_request), OP(SUPERVISE)},
};

void node_write_methods_add(struct node *n)
{
    for (size_t i = 0; i < sizeof writes / sizeof writes[0]; i++) {
        node_method_add(n, writes[i].path, writes[i].request,
                        &cityops__v1__case_reply__descriptor, write_handle,
                        writes[i].op);
    }
}
