/* The client half of the gRPC runtime: channels (insecure, or mutual TLS for
 * federation links), blocking unary calls (one pluck queue per call) and
 * asynchronous raw calls that complete on a server's queue thread (used to
 * forward a request to the leader). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <grpc/grpc_security.h>
#include <grpc/support/alloc.h>
#include <grpc/support/time.h>

#include "clog.h"
#include "rpc_internal.h"

struct rpc_channel {
    grpc_channel *channel;
    char *target;
};

/* Allocate a channel to @target over @creds (borrowed); @extra (may be NULL)
 * is appended to the shared channel arguments. */
static struct rpc_channel *channel_create(const char *target,
                                          grpc_channel_credentials *creds,
                                          const grpc_arg *extra)
{
    struct rpc_channel *ch = calloc(1, sizeof *ch);
    grpc_channel_args args;
    grpc_arg slots[RPC_N_CHANNEL_ARGS + 1];

    if (ch == NULL) {
        return NULL;
    }
    ch->target = strdup(target);
    if (ch->target == NULL) {
        free(ch);
        return NULL;
    }
    rpc_channel_args(&args, slots, RPC_MAX_MESSAGE);
    if (extra != NULL) {
        slots[args.num_args++] = *extra;
    }
    ch->channel = grpc_channel_create(target, creds, &args);
    return ch;
}

struct rpc_channel *rpc_channel_open(const char *target)
{
    struct rpc_channel *ch;
    grpc_channel_credentials *creds;

    rpc_grpc_init();
    creds = grpc_insecure_credentials_create();
    ch = channel_create(target, creds, NULL);
    grpc_channel_credentials_release(creds);
    if (ch == NULL) {
        grpc_shutdown();
    }
    return ch;
}

struct rpc_channel *rpc_channel_open_tls(const char *target,
                                         const struct rpc_tls *tls,
                                         const char *expected_name)
{
    struct rpc_channel *ch = NULL;
    grpc_channel_credentials *creds;
    grpc_ssl_pem_key_cert_pair pair;
    struct rpc_pem pem;
    grpc_arg name_arg;
    char who[300];

    snprintf(who, sizeof who, "channel to %s", target);
    if (rpc_pem_load(tls, who, &pem) != 0) {
        return NULL;
    }
    rpc_grpc_init();
    pair.private_key = pem.key;
    pair.cert_chain = pem.cert;
    /* The credentials copy the PEM strings. */
    creds = grpc_ssl_credentials_create_ex(pem.ca, &pair, NULL, NULL);
    rpc_pem_free(&pem);
    if (creds == NULL) {
        clog(CLOG_ERROR, "rpc", "%s: cannot create TLS credentials", who);
        goto err_shutdown;
    }
    name_arg.type = GRPC_ARG_STRING;
    name_arg.key = GRPC_SSL_TARGET_NAME_OVERRIDE_ARG;
    name_arg.value.string = (char *)expected_name;
    ch = channel_create(target, creds,
                        expected_name != NULL ? &name_arg : NULL);
    grpc_channel_credentials_release(creds);
    if (ch == NULL) {
        clog(CLOG_ERROR, "rpc", "%s: out of memory", who);
        goto err_shutdown;
    }
    return ch;

err_shutdown:
    grpc_shutdown();
    return NULL;
}

void rpc_channel_close(struct rpc_channel *ch)
{
    if (ch == NULL) {
        return;
    }
    grpc_channel_destroy(ch->channel);
    free(ch->target);
    free(ch);
    grpc_shutdown();
}

const char *rpc_channel_target(const struct rpc_channel *ch)
{
    return ch->target;
}

grpc_channel *rpc_channel_grpc(struct rpc_channel *ch)
{
    return ch->channel;
}

/* State of one client call, blocking or not. */
struct client_call {
    struct rpc_tag tag;
    grpc_call *call;
    grpc_metadata md_forwarded;
    grpc_metadata_array initial_md;
    grpc_metadata_array trailing_md;
    grpc_byte_buffer *request;
    grpc_byte_buffer *response;
    grpc_status_code status;
    grpc_slice details;
    /* async only */
    struct rpc_server *srv;
    rpc_raw_cb cb;
    void *arg;
};

static int client_call_start(struct client_call *cc,
                             grpc_channel *channel,
                             grpc_completion_queue *cq,
                             const char *path,
                             gpr_timespec deadline,
                             int forwarded)
{
    grpc_slice method = grpc_slice_from_copied_string(path);
    grpc_op ops[6];
    grpc_call_error err;

    cc->call = grpc_channel_create_call(channel, NULL, GRPC_PROPAGATE_DEFAULTS,
                                        cq, method, NULL, deadline, NULL);
    grpc_slice_unref(method);
    if (cc->call == NULL) {
        return RPC_INVALID;
    }
    grpc_metadata_array_init(&cc->initial_md);
    grpc_metadata_array_init(&cc->trailing_md);
    cc->details = grpc_empty_slice();
    memset(ops, 0, sizeof ops);
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    if (forwarded) {
        cc->md_forwarded.key = grpc_slice_from_static_string(RPC_FORWARDED_KEY);
        cc->md_forwarded.value = grpc_slice_from_static_string("1");
        ops[0].data.send_initial_metadata.count = 1;
        ops[0].data.send_initial_metadata.metadata = &cc->md_forwarded;
    }
    ops[1].op = GRPC_OP_SEND_MESSAGE;
    ops[1].data.send_message.send_message = cc->request;
    ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
    ops[3].op = GRPC_OP_RECV_INITIAL_METADATA;
    ops[3].data.recv_initial_metadata.recv_initial_metadata = &cc->initial_md;
    ops[4].op = GRPC_OP_RECV_MESSAGE;
    ops[4].data.recv_message.recv_message = &cc->response;
    ops[5].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    ops[5].data.recv_status_on_client.trailing_metadata = &cc->trailing_md;
    ops[5].data.recv_status_on_client.status = &cc->status;
    ops[5].data.recv_status_on_client.status_details = &cc->details;
    err = grpc_call_start_batch(cc->call, ops, 6, &cc->tag, NULL);
    if (err != GRPC_CALL_OK) {
        grpc_metadata_array_destroy(&cc->initial_md);
        grpc_metadata_array_destroy(&cc->trailing_md);
        grpc_call_unref(cc->call);
        return RPC_INVALID;
    }
    return 0;
}

static void client_call_cleanup(struct client_call *cc)
{
    grpc_metadata_array_destroy(&cc->initial_md);
    grpc_metadata_array_destroy(&cc->trailing_md);
    if (cc->request != NULL) {
        grpc_byte_buffer_destroy(cc->request);
    }
    if (cc->response != NULL) {
        grpc_byte_buffer_destroy(cc->response);
    }
    grpc_slice_unref(cc->details);
    grpc_call_unref(cc->call);
}

static gpr_timespec deadline_after_ms(int timeout_ms)
{
    return gpr_time_add(gpr_now(GPR_CLOCK_REALTIME),
                        gpr_time_from_millis(timeout_ms, GPR_TIMESPAN));
}

int rpc_call_unary(struct rpc_channel *ch,
                   const char *path,
                   const ProtobufCMessage *request,
                   const ProtobufCMessageDescriptor *response_desc,
                   int timeout_ms,
                   ProtobufCMessage **response,
                   grpc_status_code *status,
                   char **details)
{
    struct client_call cc;
    grpc_completion_queue *cq;
    grpc_event ev;
    uint8_t *buf = NULL;
    size_t len = 0;
    int rv;

    memset(&cc, 0, sizeof cc);
    *response = NULL;
    if (details != NULL) {
        *details = NULL;
    }
    cc.request = rpc_bb_pack(request);
    if (cc.request == NULL) {
        return RPC_NOMEM;
    }
    cq = grpc_completion_queue_create_for_pluck(NULL);
    rv = client_call_start(&cc, ch->channel, cq, path,
                           deadline_after_ms(timeout_ms), 0);
    if (rv != 0) {
        grpc_byte_buffer_destroy(cc.request);
        goto out_destroy_cq;
    }
    ev = grpc_completion_queue_pluck(cq, &cc.tag,
                                     gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
    (void)ev;
    *status = cc.status;
    if (cc.status == GRPC_STATUS_OK) {
        rv = rpc_bb_read(cc.response, &buf, &len);
        if (rv == 0) {
            *response = protobuf_c_message_unpack(response_desc, NULL, len,
                                                  buf);
            if (*response == NULL) {
                *status = GRPC_STATUS_INTERNAL;
                if (details != NULL) {
                    *details = strdup("response does not decode");
                }
            }
        } else {
            *status = GRPC_STATUS_RESOURCE_EXHAUSTED;
            if (details != NULL) {
                *details = strdup("out of memory reading the response");
            }
            rv = 0;
        }
        free(buf);
    } else if (details != NULL) {
        *details = grpc_slice_to_c_string(cc.details);
        if (*details != NULL) {
            /* grpc_slice_to_c_string uses gpr_malloc: hand out a plain
             * malloc'd copy so callers free() it. */
            char *copy = strdup(*details);
            gpr_free(*details);
            *details = copy;
        }
    }
    client_call_cleanup(&cc);
out_destroy_cq:
    grpc_completion_queue_shutdown(cq);
    while (grpc_completion_queue_pluck(cq, NULL,
                                       gpr_inf_future(GPR_CLOCK_REALTIME),
                                       NULL)
               .type != GRPC_QUEUE_SHUTDOWN) {
    }
    grpc_completion_queue_destroy(cq);
    return rv;
}

static void raw_done(struct rpc_tag *tag, int ok)
{
    struct client_call *cc = (struct client_call *)tag;
    struct rpc_server *srv = cc->srv;
    uint8_t *buf = NULL;
    size_t len = 0;
    char *details;

    (void)ok;
    details = grpc_slice_to_c_string(cc->details);
    if (cc->status == GRPC_STATUS_OK &&
        rpc_bb_read(cc->response, &buf, &len) != 0) {
        cc->cb(cc->arg, GRPC_STATUS_RESOURCE_EXHAUSTED,
               "out of memory reading the response", NULL, 0);
    } else {
        cc->cb(cc->arg, cc->status, details, buf, len);
    }
    free(buf);
    gpr_free(details);
    client_call_cleanup(cc);
    free(cc);
    rpc_server_release(srv);
}

int rpc_call_raw_async(struct rpc_server *srv,
                       struct rpc_channel *ch,
                       const char *path,
                       const uint8_t *req,
                       size_t len,
                       gpr_timespec deadline,
                       rpc_raw_cb cb,
                       void *arg)
{
    struct client_call *cc = calloc(1, sizeof *cc);
    int rv;

    if (cc == NULL) {
        return RPC_NOMEM;
    }
    cc->tag.fn = raw_done;
    cc->srv = srv;
    cc->cb = cb;
    cc->arg = arg;
    cc->request = rpc_bb_from(req, len);
    rpc_server_hold(srv);
    rv = client_call_start(cc, ch->channel, rpc_server_cq(srv), path,
                           deadline, 1);
    if (rv != 0) {
        grpc_byte_buffer_destroy(cc->request);
        free(cc);
        rpc_server_release(srv);
        return rv;
    }
    return 0;
}
