/* Membership methods of cityops.v1.Cluster: AddMember, AssignRole,
 * RemoveMember, TransferLeader. Operators (role ADMIN) call them on any
 * node; like writes, they run on the leader (a follower forwards the call).
 *
 * AddMember first records the new member's addresses and zone through the
 * log (so every node, and any later leader, can reach it), then asks Raft to
 * add it: as a spare, caught up, then given its role. Each change that
 * completes is recorded as a cluster event. One change at a time: another
 * one in flight gives FAILED_PRECONDITION. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cityops/v1/cluster.pb-c.h"
#include "proto/clog.h"
#include "node_internal.h"

enum membership_op { OP_ADD = 1, OP_ASSIGN, OP_REMOVE, OP_TRANSFER };

struct change {
    struct node *n;
    struct rpc_call *call;
    int op;
    uint64_t id;
    enum cons_member_role role;
    char actor[STORE_MAX_ID + 1];
    char detail[300];
    /* OP_ADD: the address book record proposed first */
    Cityops__V1__Command cmd;
    Cityops__V1__Member member;
    struct cons_member cm;
};

static const char *role_word(enum cons_member_role r)
{
    switch (r) {
    case CONS_STANDBY:
        return "standby";
    case CONS_SPARE:
        return "spare";
    default:
        return "voter";
    }
}

static int role_from_proto(Cityops__V1__MemberRole r,
                           enum cons_member_role *out)
{
    switch (r) {
    case CITYOPS__V1__MEMBER_ROLE__MEMBER_ROLE_UNSPECIFIED:
    case CITYOPS__V1__MEMBER_ROLE__MEMBER_ROLE_VOTER:
        *out = CONS_VOTER;
        return 0;
    case CITYOPS__V1__MEMBER_ROLE__MEMBER_ROLE_STANDBY:
        *out = CONS_STANDBY;
        return 0;
    case CITYOPS__V1__MEMBER_ROLE__MEMBER_ROLE_SPARE:
        *out = CONS_SPARE;
        return 0;
    default:
        return -1;
    }
}

static void change_reply(struct change *c, const char *message)
{
    Cityops__V1__MembershipReply reply = CITYOPS__V1__MEMBERSHIP_REPLY__INIT;
    struct cons_status st;

    cons_status_get(c->n->cons, &st);
    reply.message = (char *)message;
    reply.leader_id = st.leader_id;
    rpc_call_reply(c->call, &reply.base);
}

static void change_done(void *arg, int rv, uint64_t leader_id)
{
    struct change *c = arg;
    static const char *kinds[] = {"", "add", "assign", "remove", "transfer"};
    char msg[sizeof c->detail + 160];

    switch (rv) {
    case 0:
        clog(CLOG_INFO, "node", "%s (by %s)", c->detail, c->actor);
        node_cluster_event(c->n, c->actor, CITYOPS__V1__ROLE__ROLE_ADMIN,
                           kinds[c->op], c->detail);
        change_reply(c, c->detail);
        break;
    case CONS_CANTCHANGE:
        rpc_call_fail(c->call, GRPC_STATUS_FAILED_PRECONDITION,
                      "another membership change is in flight; retry when "
                      "it has completed (cityctl cluster status)");
        break;
    case CONS_NOTFOUND:
        snprintf(msg, sizeof msg, "node %llu is not a member",
                 (unsigned long long)c->id);
        rpc_call_fail(c->call, GRPC_STATUS_NOT_FOUND, msg);
        break;
    case CONS_EXISTS:
        snprintf(msg, sizeof msg,
                 "node %llu or its raft address is already a member",
                 (unsigned long long)c->id);
        rpc_call_fail(c->call, GRPC_STATUS_ALREADY_EXISTS, msg);
        break;
    case CONS_TIMEOUT:
        snprintf(msg, sizeof msg,
                 "%s: not completed: the member did not catch up or take "
                 "over in time; check that it runs and is reachable",
                 c->detail);
        rpc_call_fail(c->call, GRPC_STATUS_DEADLINE_EXCEEDED, msg);
        break;
    case CONS_INVALID:
        if (c->op == OP_TRANSFER && c->id == c->n->cfg.id) {
            snprintf(msg, sizeof msg, "member %llu already leads",
                     (unsigned long long)c->id);
            change_reply(c, msg);
            break;
        }
        snprintf(msg, sizeof msg, "%s: refused by raft (%s)", c->detail,
                 cons_strerror(rv));
        rpc_call_fail(c->call, GRPC_STATUS_FAILED_PRECONDITION, msg);
        break;
    default:
        node_answer_not_applied(c->n, c->call, rv, leader_id);
        break;
    }
    free(c);
}

static int change_start(struct change *c)
{
    unsigned wait = node_call_wait_ms(c->call, c->n->cfg.write_wait_ms);

    switch (c->op) {
    case OP_ADD:
        return cons_member_add(c->n->cons, &c->cm, wait, change_done, c);
    case OP_ASSIGN:
        return cons_member_assign(c->n->cons, c->id, c->role, wait,
                                  change_done, c);
    case OP_REMOVE:
        return cons_member_remove(c->n->cons, c->id, wait, change_done, c);
    default:
        return cons_transfer(c->n->cons, c->id, wait, change_done, c);
    }
}

/* The address book record of an added member is in: now change Raft. */
static void book_done(void *arg,
                      int rv,
                      const Cityops__V1__CommandResult *result,
                      uint64_t leader_id)
{
    struct change *c = arg;

    if (rv != 0) {
        node_answer_not_applied(c->n, c->call, rv, leader_id);
        free(c);
        return;
    }
    if (result->code != CITYOPS__V1__RESULT_CODE__RESULT_OK) {
        rpc_call_fail(c->call, node_status_from_result(result->code),
                      result->message);
        free(c);
        return;
    }
    rv = change_start(c);
    if (rv != 0) {
        node_answer_not_applied(c->n, c->call, rv, 0);
        free(c);
    }
}

/* Common checks; returns a new change or NULL after failing the call. */
static struct change *change_new(struct node *n,
                                 struct rpc_call *call,
                                 const Cityops__V1__RequestContext *ctx,
                                 int op)
{
    struct change *c;

    if (ctx == NULL || ctx->actor_id == NULL || ctx->actor_id[0] == '\0') {
        rpc_call_fail(call, GRPC_STATUS_INVALID_ARGUMENT,
                      "ctx.actor_id is required");
        return NULL;
    }
    if (ctx->role != CITYOPS__V1__ROLE__ROLE_ADMIN) {
        rpc_call_fail(call, GRPC_STATUS_PERMISSION_DENIED,
                      "membership changes need role ADMIN");
        return NULL;
    }
    if (strlen(ctx->actor_id) > STORE_MAX_ID) {
        rpc_call_fail(call, GRPC_STATUS_INVALID_ARGUMENT,
                      "ctx.actor_id too long");
        return NULL;
    }
    c = calloc(1, sizeof *c);
    if (c == NULL) {
        rpc_call_fail(call, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
        return NULL;
    }
    c->n = n;
    c->call = call;
    c->op = op;
    snprintf(c->actor, sizeof c->actor, "%s", ctx->actor_id);
    return c;
}

static void add_handle(struct rpc_call *call,
                       const ProtobufCMessage *msg,
                       void *data)
{
    const struct node_handler *h = data;
    const Cityops__V1__AddMemberRequest *req =
        (const Cityops__V1__AddMemberRequest *)msg;
    struct change *c;
    const char *zone = req->zone != NULL ? req->zone : "";
    int rv;

    if (req->id == 0 || req->raft_address == NULL ||
        req->raft_address[0] == '\0' || req->grpc_address == NULL ||
        req->grpc_address[0] == '\0') {
        rpc_call_fail(call, GRPC_STATUS_INVALID_ARGUMENT,
                      "id, raft_address and grpc_address are required");
        return;
    }
    if (strlen(req->raft_address) >= CONS_ADDRESS_SIZE ||
        strlen(req->grpc_address) >= NODE_ADDRESS_SIZE ||
        strlen(zone) >= CONS_ZONE_SIZE) {
        rpc_call_fail(call, GRPC_STATUS_INVALID_ARGUMENT,
                      "address or zone too long");
        return;
    }
    c = change_new(h->n, call, req->ctx, OP_ADD);
    if (c == NULL) {
        return;
    }
    if (role_from_proto(req->role, &c->role) != 0) {
        rpc_call_fail(call, GRPC_STATUS_INVALID_ARGUMENT, "unknown role");
        free(c);
        return;
    }
    c->id = req->id;
    c->cm.id = req->id;
    c->cm.role = c->role;
    snprintf(c->cm.raft_address, sizeof c->cm.raft_address, "%s",
             req->raft_address);
    snprintf(c->cm.zone, sizeof c->cm.zone, "%s", zone);
    snprintf(c->detail, sizeof c->detail,
             "member %llu (raft %s, grpc %s%s%s) added as %s",
             (unsigned long long)req->id, req->raft_address,
             req->grpc_address, zone[0] ? ", zone " : "", zone,
             role_word(c->role));
    cityops__v1__member__init(&c->member);
    c->member.id = req->id;
    c->member.raft_address = req->raft_address; /* borrowed from the call */
    c->member.grpc_address = req->grpc_address;
    c->member.zone = (char *)zone;
    cityops__v1__command__init(&c->cmd);
    c->cmd.actor_id = c->actor;
    c->cmd.role = CITYOPS__V1__ROLE__ROLE_ADMIN;
    c->cmd.op_case = CITYOPS__V1__COMMAND__OP_MEMBER_SET;
    c->cmd.member_set = &c->member;
    rv = cons_submit(h->n->cons, &c->cmd,
                     node_call_wait_ms(call, h->n->cfg.write_wait_ms),
                     book_done, c);
    if (rv != 0) {
        node_answer_not_applied(h->n, call, rv, 0);
        free(c);
    }
}

static void member_handle(struct rpc_call *call,
                          const ProtobufCMessage *msg,
                          void *data)
{
    const struct node_handler *h = data;
    const Cityops__V1__MemberRequest *req =
        (const Cityops__V1__MemberRequest *)msg;
    struct change *c;
    int rv;

    if (req->id == 0) {
        rpc_call_fail(call, GRPC_STATUS_INVALID_ARGUMENT, "id is required");
        return;
    }
    c = change_new(h->n, call, req->ctx, h->op);
    if (c == NULL) {
        return;
    }
    c->id = req->id;
    if (h->op == OP_ASSIGN) {
        if (req->role == CITYOPS__V1__MEMBER_ROLE__MEMBER_ROLE_UNSPECIFIED ||
            role_from_proto(req->role, &c->role) != 0) {
            rpc_call_fail(call, GRPC_STATUS_INVALID_ARGUMENT,
                          "role is required (voter, standby or spare)");
            free(c);
            return;
        }
        snprintf(c->detail, sizeof c->detail, "member %llu is now %s",
                 (unsigned long long)req->id, role_word(c->role));
    } else {
        snprintf(c->detail, sizeof c->detail, "member %llu removed",
                 (unsigned long long)req->id);
    }
    rv = change_start(c);
    if (rv != 0) {
        node_answer_not_applied(h->n, call, rv, 0);
        free(c);
    }
}

static void transfer_handle(struct rpc_call *call,
                            const ProtobufCMessage *msg,
                            void *data)
{
    const struct node_handler *h = data;
    const Cityops__V1__TransferLeaderRequest *req =
        (const Cityops__V1__TransferLeaderRequest *)msg;
    struct change *c = change_new(h->n, call, req->ctx, OP_TRANSFER);
    int rv;

    if (c == NULL) {
        return;
    }
    c->id = req->id;
    if (req->id != 0) {
        snprintf(c->detail, sizeof c->detail,
                 "leadership transferred to member %llu",
                 (unsigned long long)req->id);
    } else {
        snprintf(c->detail, sizeof c->detail, "leadership transferred");
    }
    rv = change_start(c);
    if (rv != 0) {
        node_answer_not_applied(h->n, call, rv, 0);
        free(c);
    }
}

void node_membership_methods_add(struct node *n)
{
    const ProtobufCMessageDescriptor *reply =
        &cityops__v1__membership_reply__descriptor;

    node_method_add(n, "/cityops.v1.Cluster/AddMember",
                    &cityops__v1__add_member_request__descriptor, reply,
                    add_handle, OP_ADD);
    node_method_add(n, "/cityops.v1.Cluster/AssignRole",
                    &cityops__v1__member_request__descriptor, reply,
                    member_handle, OP_ASSIGN);
    node_method_add(n, "/cityops.v1.Cluster/RemoveMember",
                    &cityops__v1__member_request__descriptor, reply,
                    member_handle, OP_REMOVE);
    node_method_add(n, "/cityops.v1.Cluster/TransferLeader",
                    &cityops__v1__transfer_leader_request__descriptor, reply,
                    transfer_handle, OP_TRANSFER);
}
