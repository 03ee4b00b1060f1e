/* Shared inside node/: the node handle and the helpers its RPC handlers use.
 * Not for use outside node/. */
#ifndef CITYOPS_NODE_INTERNAL_H
#define CITYOPS_NODE_INTERNAL_H

#include <grpc/grpc.h>

#include "cityops/v1/cluster.pb-c.h"
#include "cityops/v1/command.pb-c.h"
#include "consensus/cons.h"
#include "node.h"
#include "proto/rpc.h"
#include "storage/store.h"

#define NODE_MAX_METHODS 64

/* What a method table entry's data points at. */
struct node_handler {
    struct node *n;
    int op; /* write: the Command oneof case; read: which read */
};

struct node {
    struct node_config cfg;
    struct store *store;
    struct cons *cons;
    struct rpc_server *rpc;
    /* One channel per member (NULL for this node), by index in cfg.members. */
    struct rpc_channel *peers[CONS_MAX_MEMBERS];
    struct rpc_method methods[NODE_MAX_METHODS];
    struct node_handler handlers[NODE_MAX_METHODS];
    size_t n_methods;
};

/* gRPC status for a module error code / a command result code. The only
 * places where grpc_status_code values are made from cityops errors. */
grpc_status_code node_status_from_err(int rv);
grpc_status_code node_status_from_result(Cityops__V1__ResultCode code);

/* Channel to member @id, or NULL if unknown or this node. */
struct rpc_channel *node_peer_channel(struct node *n, uint64_t id);
const struct node_member *node_member_find(struct node *n, uint64_t id);

/* Milliseconds left until the call's deadline, clamped to [1, cap]. */
unsigned node_call_wait_ms(struct rpc_call *call, unsigned cap);

/* Answer @call for a consensus outcome that is not a result: CONS_NOTLEADER
 * forwards the call to @leader_id (unless it was forwarded already), the
 * rest fail with a status that says what to do. */
void node_answer_not_applied(struct node *n,
                             struct rpc_call *call,
                             int rv,
                             uint64_t leader_id);

/* Reads: the request's ReadOptions (field "read"), or NULL; and whether it
 * asks for a barrier first (LINEARIZABLE, or a min_index not applied yet). */
const Cityops__V1__ReadOptions *node_read_options(const ProtobufCMessage *req);
int node_read_needs_barrier(struct node *n, const ProtobufCMessage *req);

/* Append a method to n->methods with its handler data. */
void node_method_add(struct node *n,
                     const char *path,
                     const ProtobufCMessageDescriptor *request,
                     const ProtobufCMessageDescriptor *response,
                     rpc_handler_fn handler,
                     int op);

/* Register the methods of each file: rpc_write.c, rpc_read.c, rpc_status.c */
void node_write_methods_add(struct node *n);
void node_read_methods_add(struct node *n);
void node_status_methods_add(struct node *n);

#endif /* CITYOPS_NODE_INTERNAL_H */
