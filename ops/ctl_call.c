/* cityctl's calls: request contexts, endpoint failover, error reports.
 *
 * Endpoints are tried in the order given. UNAVAILABLE (node down, no leader,
 * shutting down) and DEADLINE_EXCEEDED move on to the next endpoint after a
 * short back-off; every other status is the cluster's answer and is final.
 *
 * A write retried on another endpoint after DEADLINE_EXCEEDED may already
 * have been applied by the first. That is safe only because every write of
 * one invocation carries the same retry key (client_id, seq): the cluster
 * applies it once and answers the retry with the first result. So when the
 * operator gives no --client-id we make one up, once per invocation.
 */
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "ops.h"

#define BACKOFF_MS 100
#define BACKOFF_MAX_MS 1000

void ops_ctl_close(struct ops_ctl *ctl)
{
    int i;

    for (i = 0; i < ctl->n_endpoints; i++) {
        if (ctl->channels[i] != NULL) {
            rpc_channel_close(ctl->channels[i]);
            ctl->channels[i] = NULL;
        }
        free(ctl->endpoints[i]);
        ctl->endpoints[i] = NULL;
    }
    ctl->n_endpoints = 0;
}

/* 16 random hex digits from /dev/urandom; time and pid if it can't be read
 * (uniqueness is all we need, not secrecy). */
static void client_id_generate(char *buf, size_t len)
{
    unsigned char raw[8];
    int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
    ssize_t got = -1;
    size_t i;
    int n;

    if (fd >= 0) {
        got = read(fd, raw, sizeof(raw));
        close(fd);
    }
    if (got != (ssize_t)sizeof(raw)) {
        struct timespec ts;
        uint64_t v;

        clock_gettime(CLOCK_REALTIME, &ts);
        v = (uint64_t)ts.tv_sec * 1000000007u ^ (uint64_t)ts.tv_nsec ^
            ((uint64_t)getpid() << 40);
        for (i = 0; i < sizeof(raw); i++) {
            raw[i] = (unsigned char)(v >> (8 * i));
        }
    }
    n = snprintf(buf, len, "ctl-");
    for (i = 0; i < sizeof(raw) && n > 0 && (size_t)n + 2 < len; i++) {
        n += snprintf(buf + n, len - (size_t)n, "%02x", raw[i]);
    }
}

void ops_ctx_fill(struct ops_ctl *ctl,
                  Cityops__V1__RequestContext *ctx,
                  int default_role)
{
    const char *actor = ctl->actor;

    if (actor == NULL || *actor == '\0') {
        actor = getenv("USER");
    }
    if (actor == NULL || *actor == '\0') {
        actor = "cityctl";
    }
    if (ctl->client_id == NULL) {
        client_id_generate(ctl->client_id_buf, sizeof(ctl->client_id_buf));
        ctl->client_id = ctl->client_id_buf;
        ctl->seq = 1;
    }
    ctx->actor_id = (char *)actor;
    ctx->role = (Cityops__V1__Role)(ctl->role != 0 ? ctl->role : default_role);
    ctx->client_id = (char *)ctl->client_id;
    ctx->seq = ctl->seq;
}

void ops_read_fill(const struct ops_ctl *ctl,
                   Cityops__V1__ReadOptions *read,
                   int default_consistency)
{
    int c = ctl->consistency >= 0 ? ctl->consistency : default_consistency;

    read->consistency = (Cityops__V1__Consistency)c;
    read->min_index = ctl->min_index;
}

void ops_print_error(const struct ops_ctl *ctl,
                     const char *method,
                     const char *code,
                     const char *message,
                     const char *endpoint)
{
    fprintf(stderr, "cityctl: %s: %s: %s\n", method, code, message);
    if (ctl->json) {
        json_t *j = json_pack("{s:{s:s,s:s,s:s,s:s?}}", "error", "code", code,
                              "message", message, "method", method, "endpoint",
                              endpoint);
        if (j != NULL) {
            ops_json_print(j);
        }
    }
}

static void sleep_ms(int ms)
{
    struct timespec ts;

    ts.tv_sec = ms / 1000;
    ts.tv_nsec = (long)(ms % 1000) * 1000000L;
    while (nanosleep(&ts, &ts) != 0) {
    }
}

static int retryable(grpc_status_code status)
{
    return status == GRPC_STATUS_UNAVAILABLE ||
           status == GRPC_STATUS_DEADLINE_EXCEEDED;
}

int ops_call(struct ops_ctl *ctl,
             const char *method,
             const ProtobufCMessage *req,
             const ProtobufCMessageDescriptor *resp_desc,
             ProtobufCMessage **resp)
{
    char path[128];
    char message[1024];
    grpc_status_code status = GRPC_STATUS_UNKNOWN;
    const char *endpoint = NULL;
    int i;

    *resp = NULL;
    snprintf(path, sizeof(path), "/cityops.v1.%s", method);
    message[0] = '\0';
    for (i = 0; i < ctl->n_endpoints; i++) {
        char *details = NULL;
        int rv;

        if (i > 0) {
            int ms = BACKOFF_MS * i;

            sleep_ms(ms < BACKOFF_MAX_MS ? ms : BACKOFF_MAX_MS);
        }
        endpoint = ctl->endpoints[i];
        if (ctl->channels[i] == NULL) {
            ctl->channels[i] = rpc_channel_open(endpoint);
            if (ctl->channels[i] == NULL) {
                ops_print_error(ctl, method, "CLIENT", "out of memory",
                                endpoint);
                return OPS_EXIT_FAIL;
            }
        }
        rv = rpc_call_unary(ctl->channels[i], path, req, resp_desc,
                            ctl->timeout_ms, resp, &status, &details);
        if (rv != 0) {
            ops_print_error(ctl, method, "CLIENT",
                            rv == RPC_NOMEM ? "out of memory"
                                            : "the call could not be made",
                            endpoint);
            return OPS_EXIT_FAIL;
        }
        if (status == GRPC_STATUS_OK && *resp != NULL) {
            ctl->last_endpoint = i;
            return OPS_EXIT_OK;
        }
        if (status == GRPC_STATUS_OK) {
            /* OK without a message: the runtime could not decode it. */
            status = GRPC_STATUS_INTERNAL;
            snprintf(message, sizeof(message), "the reply did not decode");
        } else {
            snprintf(message, sizeof(message), "%s",
                     details != NULL && *details != '\0' ? details
                                                         : "(no details)");
        }
        free(details);
        if (!retryable(status)) {
            break;
        }
    }
    /* A transport failure says where; an answer from the cluster does not
     * depend on which node gave it. */
    if (retryable(status)) {
        size_t len = strlen(message);

        if (ctl->n_endpoints > 1) {
            snprintf(message + len, sizeof(message) - len,
                     " (%s; all %d endpoints tried)", endpoint,
                     ctl->n_endpoints);
        } else {
            snprintf(message + len, sizeof(message) - len, " (%s)", endpoint);
        }
    }
    ops_print_error(ctl, method, rpc_status_name(status), message, endpoint);
    return OPS_EXIT_FAIL;
}

int ops_endpoint_index(struct ops_ctl *ctl, const char *ep)
{
    int i;

    for (i = 0; i < ctl->n_endpoints; i++) {
        if (strcmp(ctl->endpoints[i], ep) == 0) {
            return i;
        }
    }
    if (ctl->n_endpoints >= OPS_MAX_ENDPOINTS) {
        return -1;
    }
    ctl->endpoints[i] = strdup(ep);
    if (ctl->endpoints[i] == NULL) {
        return -1;
    }
    ctl->channels[i] = NULL;
    ctl->n_endpoints++;
    return i;
}

int ops_call_one(struct ops_ctl *ctl,
                 int i,
                 const char *method,
                 const ProtobufCMessage *req,
                 const ProtobufCMessageDescriptor *resp_desc,
                 int timeout_ms,
                 ProtobufCMessage **resp,
                 grpc_status_code *status,
                 char *details,
                 size_t details_len)
{
    char path[128];
    char *msg = NULL;

    *resp = NULL;
    *status = GRPC_STATUS_UNKNOWN;
    if (details != NULL && details_len > 0) {
        details[0] = '\0';
    }
    if (i < 0 || i >= ctl->n_endpoints) {
        return OPS_EXIT_FAIL;
    }
    snprintf(path, sizeof(path), "/cityops.v1.%s", method);
    if (ctl->channels[i] == NULL) {
        ctl->channels[i] = rpc_channel_open(ctl->endpoints[i]);
    }
    if (ctl->channels[i] == NULL ||
        rpc_call_unary(ctl->channels[i], path, req, resp_desc, timeout_ms,
                       resp, status, &msg) != 0) {
        *status = GRPC_STATUS_RESOURCE_EXHAUSTED;
        if (details != NULL) {
            snprintf(details, details_len, "the call could not be made");
        }
        return OPS_EXIT_FAIL;
    }
    if (*status == GRPC_STATUS_OK && *resp == NULL) {
        *status = GRPC_STATUS_INTERNAL;
        if (details != NULL) {
            snprintf(details, details_len, "the reply did not decode");
        }
    } else if (details != NULL && msg != NULL) {
        snprintf(details, details_len, "%s", msg);
    }
    free(msg);
    return *status == GRPC_STATUS_OK ? OPS_EXIT_OK : OPS_EXIT_FAIL;
}
