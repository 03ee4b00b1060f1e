/* rpc: a small gRPC runtime over grpc core and protobuf-c.
 *
 * Server: a method table (path, request/response descriptors, handler). Every
 * method is registered with grpc_server_register_method() and a generic
 * request is kept outstanding as well, so that a call to an unknown method is
 * answered UNIMPLEMENTED at once. Requests that do not decode get
 * INVALID_ARGUMENT before any handler runs. One completion-queue thread per
 * server runs handlers and client completions.
 *
 * A handler receives a call it owns until it answers it, exactly once, with
 * rpc_call_reply(), rpc_call_reply_raw() or rpc_call_fail(), from any thread.
 * Handlers must not block: hand long work to another thread and answer later.
 *
 * Client: blocking unary calls (cityctl, tests, tools) and asynchronous raw
 * calls that complete on a server's completion-queue thread (forwarding a
 * request to the leader).
 */
#ifndef CITYOPS_RPC_H
#define CITYOPS_RPC_H

#include <stddef.h>
#include <stdint.h>

#include <grpc/grpc.h>
#include <protobuf-c/protobuf-c.h>

/* Error codes: -5000s are ops; rpc shares the proto layer's -6000s. */
enum {
    RPC_NOMEM = -6001,
    RPC_BIND = -6002,    /* could not listen on the address */
    RPC_INVALID = -6003, /* bad argument */
};

#define RPC_MAX_MESSAGE (4 * 1024 * 1024)
/* Metadata key set on a call a node forwards to its leader. */
#define RPC_FORWARDED_KEY "cityops-forwarded"

struct rpc_call;
struct rpc_server;

typedef void (*rpc_handler_fn)(struct rpc_call *call,
                               const ProtobufCMessage *request,
                               void *data);

struct rpc_method {
    const char *path; /* "/cityops.v1.Cases/Report" */
    const ProtobufCMessageDescriptor *request;
    const ProtobufCMessageDescriptor *response;
    rpc_handler_fn handler;
    void *data;
};

struct rpc_server_config {
    const char *address; /* "127.0.0.1:7000"; port 0 picks a free port */
    const struct rpc_method *methods;
    size_t n_methods;
    int max_message; /* bytes; 0 = RPC_MAX_MESSAGE */
};

/* Create and start a server. On success *out is owned by the caller and the
 * bound port is in *port. Release with rpc_server_destroy(). */
int rpc_server_start(const struct rpc_server_config *cfg,
                     struct rpc_server **out,
                     int *port);

/* Begin shutdown: stop accepting calls; once this returns no handler is
 * running or will run. Calls already handed to handlers can still be
 * answered. Idempotent. */
void rpc_server_shutdown(struct rpc_server *srv);

/* Graceful shutdown: rpc_server_shutdown() if not done yet, wait up to
 * @grace_ms for calls in flight, cancel the rest, wait until every call is
 * released, free. Returns 0, or -1 if calls were still unanswered 10 s after
 * that: then the server and its queue thread are left running (leaked), and
 * whatever those calls' handlers use must stay alive too. */
int rpc_server_destroy(struct rpc_server *srv, int grace_ms);

/* The request's raw bytes (borrowed until the call is answered). */
void rpc_call_request_bytes(const struct rpc_call *call,
                            const uint8_t **buf,
                            size_t *len);
/* The unpacked request (borrowed until the call is answered). */
const ProtobufCMessage *rpc_call_request(const struct rpc_call *call);
const struct rpc_method *rpc_call_method(const struct rpc_call *call);
/* 1 if the caller set RPC_FORWARDED_KEY metadata. */
int rpc_call_forwarded(const struct rpc_call *call);
/* The call's deadline (gpr realtime clock); infinite if the client set none. */
gpr_timespec rpc_call_deadline(const struct rpc_call *call);
struct rpc_server *rpc_call_server(const struct rpc_call *call);

/* Answer the call; each frees the call. Any thread, once per call. */
void rpc_call_reply(struct rpc_call *call, const ProtobufCMessage *response);
void rpc_call_reply_raw(struct rpc_call *call, const uint8_t *buf, size_t len);
void rpc_call_fail(struct rpc_call *call,
                   grpc_status_code status,
                   const char *message);

/* --- client side --- */

struct rpc_channel;

/* Open a channel to @target ("host:port"). Returns NULL on allocation
 * failure; connection errors show up on calls. */
struct rpc_channel *rpc_channel_open(const char *target);
void rpc_channel_close(struct rpc_channel *ch);
const char *rpc_channel_target(const struct rpc_channel *ch);

/* Blocking unary call. On return *status is the gRPC status; on OK *response
 * is unpacked with @response_desc and the caller frees it with
 * protobuf_c_message_free_unpacked(); otherwise *details (if not NULL) is a
 * malloc'd message the caller frees. Returns 0, or RPC_NOMEM/RPC_INVALID if
 * the call could not be made at all. */
int rpc_call_unary(struct rpc_channel *ch,
                   const char *path,
                   const ProtobufCMessage *request,
                   const ProtobufCMessageDescriptor *response_desc,
                   int timeout_ms,
                   ProtobufCMessage **response,
                   grpc_status_code *status,
                   char **details);

/* Completion of an asynchronous raw call. @resp/@details are borrowed for
 * the duration of the callback. Runs on the server's completion-queue
 * thread. */
typedef void (*rpc_raw_cb)(void *arg,
                           grpc_status_code status,
                           const char *details,
                           const uint8_t *resp,
                           size_t len);

/* Start an asynchronous unary call with raw request bytes, marked as
 * forwarded, completing on @srv's completion-queue thread. Any thread.
 * Returns 0 (the callback will run exactly once) or an error (it won't). */
int rpc_call_raw_async(struct rpc_server *srv,
                       struct rpc_channel *ch,
                       const char *path,
                       const uint8_t *req,
                       size_t len,
                       gpr_timespec deadline,
                       rpc_raw_cb cb,
                       void *arg);

/* Human name of a status code ("UNAVAILABLE"). */
const char *rpc_status_name(grpc_status_code status);

#endif /* CITYOPS_RPC_H */
