/* Byte buffers, channel arguments, TLS files and status names shared by the
 * server and client halves of the gRPC runtime. */
#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/slice.h>

#include "clog.h"
#include "rpc_internal.h"

/* A PEM bundle larger than this is not a certificate file: refuse it rather
 * than read /dev/zero or a mistyped path to a disk image into memory. */
#define PEM_MAX (1024 * 1024)

int rpc_bb_read(grpc_byte_buffer *bb, uint8_t **buf, size_t *len)
{
    grpc_byte_buffer_reader reader;
    grpc_slice all;
    size_t n;

    *buf = NULL;
    *len = 0;
    if (bb == NULL) {
        return 0;
    }
    if (!grpc_byte_buffer_reader_init(&reader, bb)) {
        return RPC_INVALID;
    }
    all = grpc_byte_buffer_reader_readall(&reader);
    grpc_byte_buffer_reader_destroy(&reader);
    n = GRPC_SLICE_LENGTH(all);
    if (n > 0) {
        *buf = malloc(n);
        if (*buf == NULL) {
            grpc_slice_unref(all);
            return RPC_NOMEM;
        }
        memcpy(*buf, GRPC_SLICE_START_PTR(all), n);
    }
    *len = n;
    grpc_slice_unref(all);
    return 0;
}

grpc_byte_buffer *rpc_bb_from(const uint8_t *buf, size_t len)
{
    grpc_slice s = grpc_slice_from_copied_buffer((const char *)buf, len);
    grpc_byte_buffer *bb = grpc_raw_byte_buffer_create(&s, 1);

    grpc_slice_unref(s);
    return bb;
}

grpc_byte_buffer *rpc_bb_pack(const ProtobufCMessage *msg)
{
    size_t len = protobuf_c_message_get_packed_size(msg);
    grpc_slice s = grpc_slice_malloc(len);
    grpc_byte_buffer *bb;

    protobuf_c_message_pack(msg, GRPC_SLICE_START_PTR(s));
    bb = grpc_raw_byte_buffer_create(&s, 1);
    grpc_slice_unref(s);
    return bb;
}

void rpc_channel_args(grpc_channel_args *args, grpc_arg *slots, int max_msg)
{
    static char *keys[RPC_N_CHANNEL_ARGS] = {
        GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH,
        GRPC_ARG_MAX_SEND_MESSAGE_LENGTH,
        GRPC_ARG_KEEPALIVE_TIME_MS,
        GRPC_ARG_KEEPALIVE_TIMEOUT_MS,
        GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS,
        GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS,
        /* A peer that comes back (restart, failover, link outage) is
         * reached within a second, not after grpc's default back-off of up
         * to two minutes. */
        GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS,
        GRPC_ARG_MIN_RECONNECT_BACKOFF_MS,
        GRPC_ARG_MAX_RECONNECT_BACKOFF_MS,
    };
    int values[RPC_N_CHANNEL_ARGS] = {
        max_msg, max_msg, 30000, 10000, 10000, 1, 100, 100, 1000,
    };

    for (int i = 0; i < RPC_N_CHANNEL_ARGS; i++) {
        slots[i].type = GRPC_ARG_INTEGER;
        slots[i].key = keys[i];
        slots[i].value.integer = values[i];
    }
    args->num_args = RPC_N_CHANNEL_ARGS;
    args->args = slots;
}

/* Read all of @path into a malloc'd NUL-terminated string. Returns 0,
 * RPC_INVALID (errno-style reason in *why) or RPC_NOMEM. */
static int pem_read(const char *path, char **out, const char **why)
{
    FILE *f;
    char *buf;
    size_t len;

    *out = NULL;
    f = fopen(path, "r");
    if (f == NULL) {
        *why = strerror(errno);
        return RPC_INVALID;
    }
    buf = malloc(PEM_MAX + 1);
    if (buf == NULL) {
        fclose(f);
        *why = "out of memory";
        return RPC_NOMEM;
    }
    len = fread(buf, 1, PEM_MAX + 1, f);
    if (ferror(f)) {
        *why = strerror(errno);
        goto err_free_buf;
    }
    if (len == 0) {
        *why = "file is empty";
        goto err_free_buf;
    }
    if (len > PEM_MAX) {
        *why = "file is larger than 1 MiB";
        goto err_free_buf;
    }
    fclose(f);
    buf[len] = '\0';
    *out = buf; /* not shrunk: realloc could leave key bytes behind */
    return 0;

err_free_buf:
    fclose(f);
    explicit_bzero(buf, len);
    free(buf);
    return RPC_INVALID;
}

int rpc_pem_load(const struct rpc_tls *tls,
                 const char *who,
                 struct rpc_pem *pem)
{
    const char *names[3] = {"ca_file", "cert_file", "key_file"};
    const char *paths[3] = {tls->ca_file, tls->cert_file, tls->key_file};
    char **slots[3] = {&pem->ca, &pem->cert, &pem->key};
    const char *why = NULL;
    int rv = 0;

    memset(pem, 0, sizeof *pem);
    for (int i = 0; i < 3 && rv == 0; i++) {
        if (paths[i] == NULL || paths[i][0] == '\0') {
            clog(CLOG_ERROR, "rpc", "%s: TLS %s is not set", who, names[i]);
            rv = RPC_INVALID;
            break;
        }
        rv = pem_read(paths[i], slots[i], &why);
        if (rv != 0) {
            clog(CLOG_ERROR, "rpc", "%s: cannot read TLS %s %s: %s", who,
                 names[i], paths[i], why);
        }
    }
    if (rv != 0) {
        rpc_pem_free(pem);
    }
    return rv;
}

void rpc_pem_free(struct rpc_pem *pem)
{
    if (pem->key != NULL) {
        explicit_bzero(pem->key, strlen(pem->key));
    }
    free(pem->ca);
    free(pem->cert);
    free(pem->key);
    memset(pem, 0, sizeof *pem);
}

const char *rpc_status_name(grpc_status_code status)
{
    static const char *names[] = {
        "OK",
        "CANCELLED",
        "UNKNOWN",
        "INVALID_ARGUMENT",
        "DEADLINE_EXCEEDED",
        "NOT_FOUND",
        "ALREADY_EXISTS",
        "PERMISSION_DENIED",
        "RESOURCE_EXHAUSTED",
        "FAILED_PRECONDITION",
        "ABORTED",
        "OUT_OF_RANGE",
        "UNIMPLEMENTED",
        "INTERNAL",
        "UNAVAILABLE",
        "DATA_LOSS",
        "UNAUTHENTICATED",
    };
    if ((int)status < 0 || (size_t)status >= sizeof names / sizeof names[0]) {
        return "UNKNOWN";
    }
    return names[status];
}

/* grpc's locks are absl::Mutex. Debian builds absl without NDEBUG, which
 * leaves absl's debug-only deadlock detector on: every lock and unlock
 * updates a global lock-order graph (GraphCycles, under its own spinlock),
 * about a tenth of the gRPC server thread's time under load. The detector
 * only reports lock-order cycles inside grpc; it is switched off once per
 * process through absl's own setting, looked up by name so that an absl
 * built otherwise (where it is already off) needs nothing. */
static void absl_detector_off(void)
{
    static const char *const names[] = {
        "_ZN4absl7debian329SetMutexDeadlockDetectionModeENS0_15OnDeadlockCycleE",
        "_ZN4absl29SetMutexDeadlockDetectionModeENS_15OnDeadlockCycleE",
    };

    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        void (*set)(int) = (void (*)(int))dlsym(RTLD_DEFAULT, names[i]);
        if (set != NULL) {
            set(0); /* absl::OnDeadlockCycle::kIgnore */
            return;
        }
    }
    clog(CLOG_DEBUG, "rpc",
         "absl's SetMutexDeadlockDetectionMode not found: left as built");
}

void rpc_grpc_init(void)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;

    pthread_once(&once, absl_detector_off);
    grpc_init();
}
