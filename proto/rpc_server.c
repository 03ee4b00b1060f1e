/* The server half of the gRPC runtime.
 *
 * DESIGN
 * One completion queue and one thread per server. For every method in the
 * table a "slot" keeps one grpc_server_request_registered_call() outstanding
 * (payload read with the call); one more slot keeps a generic
 * grpc_server_request_call() outstanding so that unknown methods are answered
 * UNIMPLEMENTED at once instead of hanging. When a slot fires, it is re-armed
 * first, then the call is decoded and handed to the method's handler.
 *
 * A call is answered with one batch (initial metadata, message, status,
 * receive close) from any thread; its completion frees the call. The number
 * of live calls (plus client calls started on this queue) is counted so that
 * shutdown can wait until every call is released before destroying the queue.
 *
 * Handlers run under the gate mutex; rpc_server_destroy() takes it to close
 * the gate, so once it returns from that no handler is running or will run.
 *
 * With a TLS config the port requires and verifies a client certificate, so
 * a call that reaches a handler always has a verified peer;
 * rpc_call_peer_names() reads its names from the call's auth context.
 */
#include <assert.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <grpc/grpc_security.h>
#include <grpc/support/alloc.h>
#include <grpc/support/time.h>

#include "clog.h"
#include "rpc_internal.h"
#include "deadline_ts.h"

struct rpc_slot {
    struct rpc_tag tag;
    struct rpc_server *srv;
    const struct rpc_method *method; /* NULL: the generic slot */
    void *handle;                    /* from grpc_server_register_method */
    grpc_call *call;
    gpr_timespec deadline;
    grpc_metadata_array md;
    grpc_byte_buffer *payload;
    grpc_call_details details; /* generic slot only */
};

struct rpc_call {
    struct rpc_tag tag; /* completion of the answering batch */
    struct rpc_server *srv;
    const struct rpc_method *method;
    grpc_call *call;
    gpr_timespec deadline;
    grpc_metadata_array md;
    uint8_t *req_buf;
    size_t req_len;
    ProtobufCMessage *req;
    int forwarded;
    grpc_byte_buffer *resp;
    grpc_slice status_details;
    int cancelled;
};

struct rpc_shutdown_tag {
    struct rpc_tag tag;
    int done;
};

struct rpc_server {
    grpc_server *server;
    grpc_completion_queue *cq;
    pthread_t thread;
    struct rpc_slot *slots;
    size_t n_slots;
    pthread_mutex_t gate; /* held while a handler runs; guards closing */
    pthread_mutex_t lock; /* guards live and the shutdown flag */
    pthread_cond_t cond;
    int closing;
    int live;
    struct rpc_shutdown_tag shutdown;
    int queue_done;
};

static void slot_arm(struct rpc_slot *slot);

void rpc_server_hold(struct rpc_server *srv)
{
    pthread_mutex_lock(&srv->lock);
    srv->live++;
    pthread_mutex_unlock(&srv->lock);
}

void rpc_server_release(struct rpc_server *srv)
{
    pthread_mutex_lock(&srv->lock);
    srv->live--;
    pthread_cond_broadcast(&srv->cond);
    pthread_mutex_unlock(&srv->lock);
}

grpc_completion_queue *rpc_server_cq(struct rpc_server *srv)
{
    return srv->cq;
}

static void call_free(struct rpc_call *c)
{
    struct rpc_server *srv = c->srv;

    if (c->req != NULL) {
        protobuf_c_message_free_unpacked(c->req, NULL);
    }
    free(c->req_buf);
    grpc_metadata_array_destroy(&c->md);
    if (c->resp != NULL) {
        grpc_byte_buffer_destroy(c->resp);
    }
    grpc_slice_unref(c->status_details);
    grpc_call_unref(c->call);
    free(c);
    rpc_server_release(srv);
}

static void call_answered(struct rpc_tag *tag, int ok)
{
    struct rpc_call *c = (struct rpc_call *)tag;

    (void)ok;
    call_free(c);
}

/* Send @resp (may be NULL) and @status in one batch; frees the call when
 * the batch completes. */
static void call_answer(struct rpc_call *c,
                        grpc_byte_buffer *resp,
                        grpc_status_code status,
                        const char *message)
{
    grpc_op ops[4];
    grpc_op *op = ops;
    grpc_call_error err;

    memset(ops, 0, sizeof ops);
    c->resp = resp;
    c->status_details = grpc_slice_from_copied_string(message ? message : "");
    op->op = GRPC_OP_SEND_INITIAL_METADATA;
    op++;
    if (resp != NULL) {
        op->op = GRPC_OP_SEND_MESSAGE;
        op->data.send_message.send_message = resp;
        op++;
    }
    op->op = GRPC_OP_SEND_STATUS_FROM_SERVER;
    op->data.send_status_from_server.status = status;
    op->data.send_status_from_server.status_details = &c->status_details;
    op++;
    op->op = GRPC_OP_RECV_CLOSE_ON_SERVER;
    op->data.recv_close_on_server.cancelled = &c->cancelled;
    op++;
    c->tag.fn = call_answered;
    err = grpc_call_start_batch(c->call, ops, (size_t)(op - ops), &c->tag,
                                NULL);
    if (err != GRPC_CALL_OK) {
        clog(CLOG_ERROR, "rpc", "answer %s: start_batch error %d",
             c->method ? c->method->path : "?", (int)err);
        call_free(c);
    }
}

void rpc_call_reply(struct rpc_call *c, const ProtobufCMessage *response)
{
    grpc_byte_buffer *bb = rpc_bb_pack(response);

    if (bb == NULL) {
        call_answer(c, NULL, GRPC_STATUS_RESOURCE_EXHAUSTED,
                    "out of memory packing the response");
        return;
    }
    call_answer(c, bb, GRPC_STATUS_OK, NULL);
}

void rpc_call_reply_raw(struct rpc_call *c, const uint8_t *buf, size_t len)
{
    call_answer(c, rpc_bb_from(buf, len), GRPC_STATUS_OK, NULL);
}

void rpc_call_fail(struct rpc_call *c,
                   grpc_status_code status,
                   const char *message)
{
    assert(status != GRPC_STATUS_OK);
    call_answer(c, NULL, status, message);
}

void rpc_call_request_bytes(const struct rpc_call *c,
                            const uint8_t **buf,
                            size_t *len)
{
    *buf = c->req_buf;
    *len = c->req_len;
}

const ProtobufCMessage *rpc_call_request(const struct rpc_call *c)
{
    return c->req;
}

const struct rpc_method *rpc_call_method(const struct rpc_call *c)
{
    return c->method;
}

int rpc_call_forwarded(const struct rpc_call *c)
{
    return c->forwarded;
}

gpr_timespec rpc_call_deadline(const struct rpc_call *c)
{
    return c->deadline;
}

struct rpc_server *rpc_call_server(const struct rpc_call *c)
{
    return c->srv;
}

/* Append every value of property @name to @names, skipping values that do
 * not fit or hold a NUL. */
static void peer_names_add(const grpc_auth_context *ctx,
                           const char *name,
                           char names[][128],
                           size_t max,
                           size_t *n)
{
    grpc_auth_property_iterator it;
    const grpc_auth_property *p;

    it = grpc_auth_context_find_properties_by_name(ctx, name);
    while ((p = grpc_auth_property_iterator_next(&it)) != NULL) {
        if (*n >= max) {
            return;
        }
        if (p->value == NULL || p->value_length >= 128 ||
            strlen(p->value) != p->value_length) {
            continue;
        }
        memcpy(names[*n], p->value, p->value_length + 1);
        (*n)++;
    }
}

/* 1 if the context is from a TLS handshake in which the peer presented a
 * certificate. */
static int peer_has_certificate(const grpc_auth_context *ctx)
{
    grpc_auth_property_iterator it;
    const grpc_auth_property *p;

    it = grpc_auth_context_find_properties_by_name(
        ctx, GRPC_TRANSPORT_SECURITY_TYPE_PROPERTY_NAME);
    p = grpc_auth_property_iterator_next(&it);
    if (p == NULL || p->value == NULL ||
        strcmp(p->value, GRPC_SSL_TRANSPORT_SECURITY_TYPE) != 0) {
        return 0;
    }
    it = grpc_auth_context_find_properties_by_name(
        ctx, GRPC_X509_PEM_CERT_PROPERTY_NAME);
    return grpc_auth_property_iterator_next(&it) != NULL;
}

int rpc_call_peer_names(const struct rpc_call *c,
                        char names[][128],
                        size_t max,
                        size_t *n)
{
    grpc_auth_context *ctx = grpc_call_auth_context(c->call);
    int rv = 0;

    *n = 0;
    if (ctx == NULL) {
        return RPC_INVALID;
    }
    if (!peer_has_certificate(ctx)) {
        rv = RPC_INVALID;
        goto out_release;
    }
    peer_names_add(ctx, GRPC_X509_CN_PROPERTY_NAME, names, max, n);
    peer_names_add(ctx, GRPC_X509_SAN_PROPERTY_NAME, names, max, n);

out_release:
    grpc_auth_context_release(ctx);
    return rv;
}

static int md_has_key(const grpc_metadata_array *md, const char *key)
{
    for (size_t i = 0; i < md->count; i++) {
        if (grpc_slice_str_cmp(md->metadata[i].key, key) == 0) {
            return 1;
        }
    }
    return 0;
}

/* Turn a fired registered slot into a call and run its handler. */
static void slot_dispatch(struct rpc_slot *slot)
{
    struct rpc_server *srv = slot->srv;
    struct rpc_call *c = calloc(1, sizeof *c);
    const struct rpc_method *m = slot->method;
    grpc_byte_buffer *payload = slot->payload;
    char msg[160];
    int rv;

    if (c == NULL) {
        /* Cannot even answer: cancel the call, drop it, keep serving. */
        grpc_call_cancel_with_status(slot->call, GRPC_STATUS_RESOURCE_EXHAUSTED,
                                     "out of memory", NULL);
        grpc_call_unref(slot->call);
        grpc_metadata_array_destroy(&slot->md);
        grpc_metadata_array_init(&slot->md);
        if (payload != NULL) {
            grpc_byte_buffer_destroy(payload);
        }
        slot->call = NULL;
        slot->payload = NULL;
        slot_arm(slot);
        return;
    }
    rpc_server_hold(srv);
    c->srv = srv;
    c->method = m;
    c->call = slot->call;
    c->deadline = slot->deadline;
    c->md = slot->md;
    c->status_details = grpc_empty_slice();
    c->forwarded = md_has_key(&c->md, RPC_FORWARDED_KEY);
    slot->call = NULL;
    slot->payload = NULL;
    grpc_metadata_array_init(&slot->md);
    slot_arm(slot);

    if (payload == NULL) {
        rpc_call_fail(c, GRPC_STATUS_INVALID_ARGUMENT,
                      "no request message was sent");
        return;
    }
    rv = rpc_bb_read(payload, &c->req_buf, &c->req_len);
    grpc_byte_buffer_destroy(payload);
    if (rv != 0) {
        rpc_call_fail(c, GRPC_STATUS_RESOURCE_EXHAUSTED,
                      "cannot read the request");
        return;
    }
    c->req = protobuf_c_message_unpack(m->request, NULL, c->req_len,
                                       c->req_buf);
    if (c->req == NULL) {
        snprintf(msg, sizeof msg, "request does not decode as %s",
                 m->request->name);
        rpc_call_fail(c, GRPC_STATUS_INVALID_ARGUMENT, msg);
        return;
    }
    pthread_mutex_lock(&srv->gate);
    if (srv->closing) {
        pthread_mutex_unlock(&srv->gate);
        rpc_call_fail(c, GRPC_STATUS_UNAVAILABLE, "server shutting down");
        return;
    }
    m->handler(c, c->req, m->data);
    pthread_mutex_unlock(&srv->gate);
}

/* An unknown method: answer UNIMPLEMENTED without reading the message. */
static void slot_unimplemented(struct rpc_slot *slot)
{
    struct rpc_server *srv = slot->srv;
    struct rpc_call *c = calloc(1, sizeof *c);
    char msg[300];
    char *method = grpc_slice_to_c_string(slot->details.method);

    snprintf(msg, sizeof msg, "unknown method %s", method);
    gpr_free(method);
    grpc_call_details_destroy(&slot->details);
    grpc_call_details_init(&slot->details);
    if (c == NULL) {
        grpc_call_cancel_with_status(slot->call, GRPC_STATUS_UNIMPLEMENTED,
                                     "unknown method", NULL);
        grpc_call_unref(slot->call);
        grpc_metadata_array_destroy(&slot->md);
        grpc_metadata_array_init(&slot->md);
        slot->call = NULL;
        slot_arm(slot);
        return;
    }
    rpc_server_hold(srv);
    c->srv = srv;
    c->call = slot->call;
    c->md = slot->md;
    c->status_details = grpc_empty_slice();
    slot->call = NULL;
    grpc_metadata_array_init(&slot->md);
    slot_arm(slot);
    call_answer(c, NULL, GRPC_STATUS_UNIMPLEMENTED, msg);
}

static void slot_fired(struct rpc_tag *tag, int ok)
{
    struct rpc_slot *slot = (struct rpc_slot *)tag;

    if (!ok) {
        /* The server is shutting down: requested calls fail; don't re-arm. */
        return;
    }
    if (slot->method == NULL) {
        slot_unimplemented(slot);
    } else {
        slot_dispatch(slot);
    }
}

static void slot_arm(struct rpc_slot *slot)
{
    struct rpc_server *srv = slot->srv;
    grpc_call_error err;

    slot->tag.fn = slot_fired;
    if (slot->method != NULL) {
        err = grpc_server_request_registered_call(
            srv->server, slot->handle, &slot->call, &slot->deadline, &slot->md,
            &slot->payload, srv->cq, srv->cq, &slot->tag);
    } else {
        err = grpc_server_request_call(srv->server, &slot->call,
                                       &slot->details, &slot->md, srv->cq,
                                       srv->cq, &slot->tag);
    }
    if (err != GRPC_CALL_OK) {
        clog(CLOG_ERROR, "rpc", "request call for %s: error %d",
             slot->method ? slot->method->path : "(generic)", (int)err);
    }
}

static void *server_thread(void *arg)
{
    struct rpc_server *srv = arg;

    for (;;) {
        grpc_event ev = grpc_completion_queue_next(
            srv->cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
        if (ev.type == GRPC_QUEUE_SHUTDOWN) {
            break;
        }
        if (ev.type == GRPC_OP_COMPLETE) {
            struct rpc_tag *tag = ev.tag;
            if (tag == &srv->shutdown.tag) {
                pthread_mutex_lock(&srv->lock);
                srv->shutdown.done = 1;
                pthread_cond_broadcast(&srv->cond);
                pthread_mutex_unlock(&srv->lock);
            } else {
                tag->fn(tag, ev.success);
            }
        }
    }
    return NULL;
}

/* The port's credentials: insecure, or mutual TLS from @pem (copied). */
static grpc_server_credentials *
server_creds(const struct rpc_server_config *cfg, const struct rpc_pem *pem)
{
    grpc_ssl_pem_key_cert_pair pair;

    if (cfg->tls == NULL) {
        return grpc_insecure_server_credentials_create();
    }
    pair.private_key = pem->key;
    pair.cert_chain = pem->cert;
    return grpc_ssl_server_credentials_create_ex(
        pem->ca, &pair, 1,
        GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY, NULL);
}

int rpc_server_start(const struct rpc_server_config *cfg,
                     struct rpc_server **out,
                     int *port)
{
    struct rpc_server *srv;
    grpc_channel_args args;
    grpc_arg slots[RPC_N_CHANNEL_ARGS];
    grpc_server_credentials *creds;
    struct rpc_pem pem = {0};
    char who[300];
    int max_msg = cfg->max_message > 0 ? cfg->max_message : RPC_MAX_MESSAGE;
    int bound;
    int rv = RPC_NOMEM;

    if (cfg->tls != NULL) {
        snprintf(who, sizeof who, "server %s", cfg->address);
        rv = rpc_pem_load(cfg->tls, who, &pem);
        if (rv != 0) {
            return rv;
        }
        rv = RPC_NOMEM;
    }
    srv = calloc(1, sizeof *srv);
    if (srv == NULL) {
        goto err_free_pem;
    }
    srv->n_slots = cfg->n_methods + 1;
    srv->slots = calloc(srv->n_slots, sizeof *srv->slots);
    if (srv->slots == NULL) {
        goto err_free_srv;
    }
    pthread_mutex_init(&srv->gate, NULL);
    pthread_mutex_init(&srv->lock, NULL);
    pthread_cond_init(&srv->cond, NULL);
    rpc_grpc_init();
    rpc_channel_args(&args, slots, max_msg);
    srv->server = grpc_server_create(&args, NULL);
    srv->cq = grpc_completion_queue_create_for_next(NULL);
    grpc_server_register_completion_queue(srv->server, srv->cq, NULL);
    for (size_t i = 0; i < cfg->n_methods; i++) {
        struct rpc_slot *slot = &srv->slots[i];
        slot->srv = srv;
        slot->method = &cfg->methods[i];
        slot->handle = grpc_server_register_method(
            srv->server, cfg->methods[i].path, NULL,
            GRPC_SRM_PAYLOAD_READ_INITIAL_BYTE_BUFFER, 0);
        grpc_metadata_array_init(&slot->md);
    }
    srv->slots[cfg->n_methods].srv = srv;
    grpc_metadata_array_init(&srv->slots[cfg->n_methods].md);
    grpc_call_details_init(&srv->slots[cfg->n_methods].details);

    creds = server_creds(cfg, &pem);
    rpc_pem_free(&pem);
    bound = grpc_server_add_http2_port(srv->server, cfg->address, creds);
    grpc_server_credentials_release(creds);
    if (bound == 0) {
        clog(CLOG_ERROR, "rpc",
             "cannot listen on %s: address in use or invalid%s; pick another "
             "grpc address in the node's config",
             cfg->address,
             cfg->tls != NULL ? ", or the TLS certificate and key do not load"
                              : "");
        rv = RPC_BIND;
        goto err_destroy_server;
    }
    grpc_server_start(srv->server);
    for (size_t i = 0; i < srv->n_slots; i++) {
        slot_arm(&srv->slots[i]);
    }
    if (pthread_create(&srv->thread, NULL, server_thread, srv) != 0) {
        clog(CLOG_ERROR, "rpc", "cannot start the completion queue thread");
        /* No queue thread: shut down and drain here, then tear down. */
        grpc_server_shutdown_and_notify(srv->server, srv->cq,
                                        &srv->shutdown.tag);
        grpc_server_cancel_all_calls(srv->server);
        for (;;) {
            grpc_event ev = grpc_completion_queue_next(
                srv->cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
            if (ev.type != GRPC_OP_COMPLETE || ev.tag == &srv->shutdown.tag) {
                break;
            }
        }
        goto err_destroy_server;
    }
    srv->queue_done = 0;
    *port = bound;
    *out = srv;
    return 0;

err_destroy_server:
    grpc_server_destroy(srv->server);
    grpc_completion_queue_shutdown(srv->cq);
    while (grpc_completion_queue_next(srv->cq,
                                      gpr_inf_future(GPR_CLOCK_REALTIME), NULL)
               .type != GRPC_QUEUE_SHUTDOWN) {
    }
    grpc_completion_queue_destroy(srv->cq);
    for (size_t i = 0; i < srv->n_slots; i++) {
        grpc_metadata_array_destroy(&srv->slots[i].md);
    }
    grpc_call_details_destroy(&srv->slots[cfg->n_methods].details);
    grpc_shutdown();
    free(srv->slots);
err_free_srv:
    free(srv);
err_free_pem:
    rpc_pem_free(&pem);
    return rv;
}

static int wait_until(struct rpc_server *srv,
                      int (*cond)(struct rpc_server *),
                      int timeout_ms)
{
    struct timespec ts;
    int rv = 0;

    deadline_ts(CLOCK_REALTIME, timeout_ms, &ts);
    pthread_mutex_lock(&srv->lock);
    while (!cond(srv) && rv == 0) {
        rv = pthread_cond_timedwait(&srv->cond, &srv->lock, &ts);
    }
    rv = cond(srv);
    pthread_mutex_unlock(&srv->lock);
    return rv;
}

static int is_shut_down(struct rpc_server *srv)
{
    return srv->shutdown.done;
}

static int is_idle(struct rpc_server *srv)
{
    return srv->live == 0;
}

void rpc_server_shutdown(struct rpc_server *srv)
{
    int was_closing;

    pthread_mutex_lock(&srv->gate);
    was_closing = srv->closing;
    srv->closing = 1;
    pthread_mutex_unlock(&srv->gate);
    if (!was_closing) {
        grpc_server_shutdown_and_notify(srv->server, srv->cq,
                                        &srv->shutdown.tag);
    }
}

int rpc_server_destroy(struct rpc_server *srv, int grace_ms)
{
    rpc_server_shutdown(srv);
    if (!wait_until(srv, is_shut_down, grace_ms > 0 ? grace_ms : 1)) {
        grpc_server_cancel_all_calls(srv->server);
    }
    if (!wait_until(srv, is_shut_down, 10000)) {
        clog(CLOG_WARN, "rpc", "server shutdown still pending after 10 s");
    }
    if (!wait_until(srv, is_idle, 10000)) {
        clog(CLOG_WARN, "rpc",
             "%d calls still unanswered at shutdown; leaking them", srv->live);
        return -1;
    }
    grpc_server_destroy(srv->server);
    grpc_completion_queue_shutdown(srv->cq);
    pthread_join(srv->thread, NULL);
    grpc_completion_queue_destroy(srv->cq);
    for (size_t i = 0; i < srv->n_slots; i++) {
        struct rpc_slot *slot = &srv->slots[i];
        grpc_metadata_array_destroy(&slot->md);
        if (slot->method == NULL) {
            grpc_call_details_destroy(&slot->details);
        }
        if (slot->payload != NULL) {
            grpc_byte_buffer_destroy(slot->payload);
        }
    }
    pthread_mutex_destroy(&srv->gate);
    pthread_mutex_destroy(&srv->lock);
    pthread_cond_destroy(&srv->cond);
    free(srv->slots);
    free(srv);
    grpc_shutdown();
    return 0;
}
