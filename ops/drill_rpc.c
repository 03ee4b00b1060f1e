/* Blocking gRPC calls for drills, on grpc core directly.
 *
 * Why not proto/rpc.h's channels: they share grpc's global subchannel pool
 * and its default reconnect back-off (1 s growing to 2 min). A drill kills
 * and restarts nodes on purpose, and a client that waits a minute before
 * dialling a restarted node again would measure its own back-off as the
 * cluster's RTO. Each drill channel has its own subchannel pool and a
 * back-off capped at 500 ms.
 *
 * Even so, a channel that saw its node die can keep failing to connect
 * to the node restarted on the same port for many seconds ("tcp handshaker
 * shutdown"), while a new channel connects at once. So a channel that has
 * answered only UNAVAILABLE for a second is replaced by a fresh one. The
 * old one may still be in use by another thread: it is retired, and
 * destroyed when the drill channel is closed.
 *
 * Calls are thread-safe (grpc channels are); each call plucks its own
 * completion queue.
 */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/slice.h>
#include <grpc/support/time.h>

#include "drill.h"

#define RETIRED_MAX 512
#define RENEW_AFTER_US 1000000

struct drill_chan {
    pthread_mutex_t mu;
    grpc_channel *channel;
    int64_t failing_since; /* 0 while calls succeed */
    grpc_channel *retired[RETIRED_MAX];
    int n_retired;
    char target[64];
    char uri[80];
};

int64_t drill_now_us(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

int64_t drill_wall_us(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

void drill_sleep_us(int64_t us)
{
    struct timespec ts;

    if (us <= 0) {
        return;
    }
    ts.tv_sec = us / 1000000;
    ts.tv_nsec = (long)(us % 1000000) * 1000;
    while (nanosleep(&ts, &ts) != 0) {
    }
}

static const struct {
        const char *key;
        int value;
} chan_ints[6] = {
    {GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1},
    {GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH, RPC_MAX_MESSAGE},
    {GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 100},
    {GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, 1000},
    {GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 500},
    {GRPC_ARG_DNS_MIN_TIME_BETWEEN_RESOLUTIONS_MS, 100},
};

struct drill_chan *drill_chan_open(const char *target)
{
    struct drill_chan *ch = calloc(1, sizeof(*ch));
    grpc_channel_credentials *creds;
    grpc_channel_args args;
    grpc_arg slots[6];
    int i;

    if (ch == NULL) {
        return NULL;
    }
    snprintf(ch->target, sizeof(ch->target), "%s", target);
    for (i = 0; i < 6; i++) {
        slots[i].type = GRPC_ARG_INTEGER;
        slots[i].key = (char *)chan_ints[i].key;
        slots[i].value.integer = chan_ints[i].value;
    }
    args.num_args = 6;
    args.args = slots;
    /* A literal IPv4 address skips the DNS resolver, whose cool-down
     * between re-resolutions would hold a dead address for seconds. */
    if (target[0] >= '0' && target[0] <= '9') {
        snprintf(ch->uri, sizeof(ch->uri), "ipv4:%s", target);
    } else {
        snprintf(ch->uri, sizeof(ch->uri), "%s", target);
    }
    pthread_mutex_init(&ch->mu, NULL);
    rpc_grpc_init();
    creds = grpc_insecure_credentials_create();
    ch->channel = grpc_channel_create(ch->uri, creds, &args);
    grpc_channel_credentials_release(creds);
    if (ch->channel == NULL) {
        grpc_shutdown();
        pthread_mutex_destroy(&ch->mu);
        free(ch);
        return NULL;
    }
    return ch;
}

void drill_chan_close(struct drill_chan *ch)
{
    int i;

    if (ch == NULL) {
        return;
    }
    grpc_channel_destroy(ch->channel);
    for (i = 0; i < ch->n_retired; i++) {
        grpc_channel_destroy(ch->retired[i]);
    }
    pthread_mutex_destroy(&ch->mu);
    free(ch);
    grpc_shutdown();
}

static grpc_channel *chan_current(struct drill_chan *ch)
{
    grpc_channel *c;

    pthread_mutex_lock(&ch->mu);
    c = ch->channel;
    pthread_mutex_unlock(&ch->mu);
    return c;
}

/* Account for a call's outcome; renew the channel after a second of
 * nothing but UNAVAILABLE. */
static void chan_outcome(struct drill_chan *ch, grpc_channel *used, int status)
{
    int64_t now = drill_now_us();

    pthread_mutex_lock(&ch->mu);
    if (used != ch->channel) {
        goto out;
    }
    if (status != GRPC_STATUS_UNAVAILABLE) {
        ch->failing_since = 0;
    } else if (ch->failing_since == 0) {
        ch->failing_since = now;
    } else if (now - ch->failing_since > RENEW_AFTER_US &&
               ch->n_retired < RETIRED_MAX) {
        grpc_channel_credentials *creds = grpc_insecure_credentials_create();
        grpc_channel *fresh;
        grpc_channel_args args;
        grpc_arg slots[6];
        int i;

        for (i = 0; i < 6; i++) {
            slots[i].type = GRPC_ARG_INTEGER;
            slots[i].key = (char *)chan_ints[i].key;
            slots[i].value.integer = chan_ints[i].value;
        }
        args.num_args = 6;
        args.args = slots;
        fresh = grpc_channel_create(ch->uri, creds, &args);
        grpc_channel_credentials_release(creds);
        if (fresh != NULL) {
            ch->retired[ch->n_retired++] = ch->channel;
            ch->channel = fresh;
        }
        ch->failing_since = now;
    }
out:
    pthread_mutex_unlock(&ch->mu);
}

const char *drill_chan_target(const struct drill_chan *ch)
{
    return ch->target;
}

static grpc_byte_buffer *pack(const ProtobufCMessage *msg)
{
    size_t len = protobuf_c_message_get_packed_size(msg);
    grpc_slice slice = grpc_slice_malloc(len);
    grpc_byte_buffer *bb;

    protobuf_c_message_pack(msg, GRPC_SLICE_START_PTR(slice));
    bb = grpc_raw_byte_buffer_create(&slice, 1);
    grpc_slice_unref(slice);
    return bb;
}

static ProtobufCMessage *unpack(grpc_byte_buffer *bb,
                                const ProtobufCMessageDescriptor *desc)
{
    grpc_byte_buffer_reader reader;
    ProtobufCMessage *msg;
    grpc_slice all;

    if (bb == NULL || !grpc_byte_buffer_reader_init(&reader, bb)) {
        return NULL;
    }
    all = grpc_byte_buffer_reader_readall(&reader);
    grpc_byte_buffer_reader_destroy(&reader);
    msg = protobuf_c_message_unpack(desc, NULL, GRPC_SLICE_LENGTH(all),
                                    GRPC_SLICE_START_PTR(all));
    grpc_slice_unref(all);
    return msg;
}

int drill_call(struct drill_chan *ch,
               const char *method,
               const ProtobufCMessage *req,
               const ProtobufCMessageDescriptor *resp_desc,
               int timeout_ms,
               ProtobufCMessage **resp,
               char *details,
               size_t dlen)
{
    char path[128];
    grpc_completion_queue *cq = grpc_completion_queue_create_for_pluck(NULL);
    gpr_timespec deadline =
        gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC),
                     gpr_time_from_millis(timeout_ms, GPR_TIMESPAN));
    grpc_metadata_array initial_md;
    grpc_metadata_array trailing_md;
    grpc_byte_buffer *request = NULL;
    grpc_byte_buffer *response = NULL;
    grpc_status_code status = GRPC_STATUS_UNKNOWN;
    grpc_slice status_details = grpc_empty_slice();
    grpc_slice method_slice;
    grpc_channel *channel = chan_current(ch);
    grpc_call *call;
    grpc_op ops[6];
    grpc_event ev;
    int tag;

    *resp = NULL;
    if (details != NULL && dlen > 0) {
        details[0] = '\0';
    }
    snprintf(path, sizeof(path), "/cityops.v1.%s", method);
    method_slice = grpc_slice_from_copied_string(path);
    call = grpc_channel_create_call(channel, NULL, GRPC_PROPAGATE_DEFAULTS,
                                    cq, method_slice, NULL, deadline, NULL);
    grpc_slice_unref(method_slice);
    if (call == NULL) {
        grpc_completion_queue_destroy(cq);
        snprintf(details, dlen, "could not create the call");
        return GRPC_STATUS_INTERNAL;
    }
    request = pack(req);
    grpc_metadata_array_init(&initial_md);
    grpc_metadata_array_init(&trailing_md);
    memset(ops, 0, sizeof(ops));
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[1].op = GRPC_OP_SEND_MESSAGE;
    ops[1].data.send_message.send_message = request;
    ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
    ops[3].op = GRPC_OP_RECV_INITIAL_METADATA;
    ops[3].data.recv_initial_metadata.recv_initial_metadata = &initial_md;
    ops[4].op = GRPC_OP_RECV_MESSAGE;
    ops[4].data.recv_message.recv_message = &response;
    ops[5].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    ops[5].data.recv_status_on_client.trailing_metadata = &trailing_md;
    ops[5].data.recv_status_on_client.status = &status;
    ops[5].data.recv_status_on_client.status_details = &status_details;
    if (grpc_call_start_batch(call, ops, 6, &tag, NULL) != GRPC_CALL_OK) {
        status = GRPC_STATUS_INTERNAL;
        snprintf(details, dlen, "could not start the call");
    } else {
        ev = grpc_completion_queue_pluck(cq, &tag,
                                         gpr_inf_future(GPR_CLOCK_REALTIME),
                                         NULL);
        if (ev.type != GRPC_OP_COMPLETE || !ev.success) {
            status = GRPC_STATUS_INTERNAL;
            snprintf(details, dlen, "the call's batch failed");
        } else if (status == GRPC_STATUS_OK) {
            *resp = unpack(response, resp_desc);
            if (*resp == NULL) {
                status = GRPC_STATUS_INTERNAL;
                snprintf(details, dlen, "the reply did not decode");
            }
        } else if (details != NULL) {
            snprintf(details, dlen, "%.*s",
                     (int)GRPC_SLICE_LENGTH(status_details),
                     (const char *)GRPC_SLICE_START_PTR(status_details));
        }
    }
    grpc_byte_buffer_destroy(request);
    if (response != NULL) {
        grpc_byte_buffer_destroy(response);
    }
    grpc_slice_unref(status_details);
    grpc_metadata_array_destroy(&initial_md);
    grpc_metadata_array_destroy(&trailing_md);
    grpc_call_unref(call);
    grpc_completion_queue_shutdown(cq);
    while (grpc_completion_queue_pluck(cq, NULL,
                                       gpr_inf_future(GPR_CLOCK_REALTIME),
                                       NULL)
               .type != GRPC_QUEUE_SHUTDOWN) {
    }
    grpc_completion_queue_destroy(cq);
    chan_outcome(ch, channel, (int)status);
    return (int)status;
}

int drill_env_init(struct drill_env *env, char *const *endpoints, int n)
{
    int i;

    memset(env, 0, sizeof(*env));
    pthread_mutex_init(&env->mu, NULL);
    for (i = 0; i < n && i < OPS_MAX_ENDPOINTS; i++) {
        if (drill_env_chan(env, endpoints[i]) == NULL) {
            return OPS_NOMEM;
        }
    }
    env->n_load = env->n;
    return 0;
}

void drill_env_close(struct drill_env *env)
{
    int i;

    for (i = 0; i < env->n; i++) {
        drill_chan_close(env->chan[i]);
        free(env->addr[i]);
    }
    env->n = 0;
    pthread_mutex_destroy(&env->mu);
}

struct drill_chan *drill_env_chan(struct drill_env *env, const char *addr)
{
    struct drill_chan *ch = NULL;
    int i;

    if (addr == NULL || *addr == '\0') {
        return NULL;
    }
    pthread_mutex_lock(&env->mu);
    for (i = 0; i < env->n; i++) {
        if (strcmp(env->addr[i], addr) == 0) {
            ch = env->chan[i];
            goto out;
        }
    }
    if (env->n == OPS_MAX_ENDPOINTS) {
        goto out;
    }
    env->addr[env->n] = strdup(addr);
    ch = env->addr[env->n] != NULL ? drill_chan_open(addr) : NULL;
    if (ch == NULL) {
        free(env->addr[env->n]);
        goto out;
    }
    env->chan[env->n++] = ch;
out:
    pthread_mutex_unlock(&env->mu);
    return ch;
}
