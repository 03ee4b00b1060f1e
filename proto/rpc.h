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
 *
 * TLS: federation links between tiers use mutual TLS. A TLS server requires
 * and verifies a client certificate signed by its CA bundle; a TLS channel
 * presents its own certificate and verifies the server's against the same
 * kind of bundle. Inside a cluster (node to node, cityctl) calls stay
 * insecure: those run on networks the cluster's operators already trust.
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

/* grpc_init() for this process's gRPC runtime: the one way in for servers,
 * channels and tools (pair each with grpc_shutdown() as before). */
void rpc_grpc_init(void);

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

/* PEM files for TLS. */
struct rpc_tls {
    const char *ca_file;   /* CA bundle that signs the peers' certificates */
    const char *cert_file; /* this side's certificate chain */
    const char *key_file;  /* this side's private key */
};

struct rpc_server_config {
    const char *address; /* "127.0.0.1:7000"; port 0 picks a free port */
    const struct rpc_method *methods;
    size_t n_methods;
    int max_message; /* bytes; 0 = RPC_MAX_MESSAGE */
    /* NULL: insecure. Set: mutual TLS; a client must present a certificate
     * signed by @tls->ca_file or its handshake fails. The files are read
     * once, by rpc_server_start(); borrowed for that call only. */
    const struct rpc_tls *tls;
};

/* Create and start a server. On success *out is owned by the caller and the
 * bound port is in *port. Release with rpc_server_destroy(). Returns
 * RPC_INVALID (and logs the file's name) if a TLS file cannot be read,
 * RPC_BIND if the address cannot be listened on or the TLS certificate and
 * key are unusable, RPC_NOMEM otherwise. */
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

/* The names in the verified peer certificate of a call on a TLS server: its
 * x509 common name first, then every subject alternative name, in the order
 * grpc reports them (a name may appear twice, as CN and as DNS SAN). Up to
 * @max names are copied, NUL-terminated, into @names; *n is the number
 * copied. A name of 128 bytes or more, or with an embedded NUL, is skipped
 * rather than truncated, so that it can never compare equal to a shorter
 * one. Returns 0, or RPC_INVALID if the call is not over TLS or its peer
 * presented no certificate (*n is 0 then). Any thread, while the call is
 * owned (before it is answered). */
int rpc_call_peer_names(const struct rpc_call *call,
                        char names[][128],
                        size_t max,
                        size_t *n);

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

/* Open a mutual-TLS channel to @target: present @tls's certificate and key,
 * and accept only a server certificate signed by @tls->ca_file that carries
 * @expected_name (a DNS subject alternative name or, lacking SANs, the
 * common name). @expected_name NULL checks the host part of @target instead,
 * which federation certificates (named after tiers) do not carry. The files
 * are read during this call; @tls and @expected_name are borrowed for it
 * only. Same channel arguments as rpc_channel_open(), and the channel works
 * with rpc_call_unary() and rpc_call_raw_async() alike. Returns NULL (and
 * logs why) on allocation failure or if a file cannot be read; handshake
 * failures show up on calls as UNAVAILABLE. */
struct rpc_channel *rpc_channel_open_tls(const char *target,
                                         const struct rpc_tls *tls,
                                         const char *expected_name);
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
