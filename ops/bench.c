/* cityops-bench: a bounded load generator for cityops and, for comparison,
 * etcd's v3 KV API, driven by the same client code.
 *
 * DESIGN
 * N slots each keep one call in flight; slot i uses channel i % M, and
 * channel j connects to endpoint j % E. Everything runs on one thread and
 * one completion queue, with the grpc core async API: one batch per call
 * (send metadata, message and close; receive metadata, message and status),
 * so one completion finishes a call and its slot starts the next.
 *
 * TARGETS (--target)
 *   report            /cityops.v1.Cases/Report, a new case per call
 *   get, get-stale    /cityops.v1.Cases/Get, linearizable or stale
 *   etcd-put          /etcdserverpb.KV/Put, a new key per call
 *   etcd-range,       /etcdserverpb.KV/Range of one key, linearizable or
 *   etcd-range-stale  serializable (etcd's name for a local read)
 * The etcd messages are encoded and decoded by hand (pb_* below): only
 * PutRequest{1: key, 2: value} and RangeRequest{1: key, 7: serializable}
 * are sent, and of a RangeResponse only the presence of field 2 (kvs) is
 * read. Field numbers are etcd's api/etcdserverpb/rpc.proto.
 *
 * A read target first writes --keys records with its system's write
 * (Report or Put), untimed, and then reads them round-robin; a Range that
 * finds no key counts as an error, as cityops' NOT_FOUND does.
 *
 * Every Report carries a unique retry key: client_id "bench-<run>-<slot>"
 * with seq counting up per slot. A slot has one call in flight at a time, so
 * each client_id's seqs reach the leader in order, as the de-duplication
 * rule (seq grows per client_id) wants. etcd keys are "bench/<run>/<n>".
 *
 * Any node can be targeted: followers forward writes to the leader, so the
 * latency measured includes the forwarding hop when an endpoint is not the
 * leader. Channels use a local subchannel pool, so M channels to the same
 * endpoint are M TCP connections, not one shared one.
 *
 * Bounded: with --count K exactly K calls are made; with --duration S no
 * call starts after S seconds. Each call has a deadline (--timeout), and
 * calls still in flight a second after the last deadline could have passed
 * are cancelled, so the run always ends. --until-ok instead makes one call
 * at a time, rotating over the endpoints, until one succeeds or --duration
 * passes: the failover probe.
 *
 * Every latency is kept (one double per call) and sorted at the end, so the
 * percentiles are exact nearest-rank values, not histogram buckets.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/slice.h>
#include <grpc/support/alloc.h>

#include "ops.h"

#define BENCH_MAX_SLOTS 4096
#define BENCH_MAX_CHANNELS 1024
#define BENCH_N_STATUS 17 /* grpc status codes 0..16 */
#define BENCH_TICK_MS 100

enum bench_local_error {
    BENCH_ERR_START = 0, /* grpc_call_start_batch refused */
    BENCH_ERR_BATCH,     /* the batch completed with success = 0 */
    BENCH_ERR_NO_REPLY,  /* OK without a message, or one that does not parse */
    BENCH_ERR_NO_KEY,    /* etcd Range OK but no kvs: the key was not found */
    BENCH_N_LOCAL,
};

static const char *const local_error_names[BENCH_N_LOCAL] = {
    "CLIENT_START_FAILED",
    "CLIENT_BATCH_FAILED",
    "CLIENT_NO_REPLY",
    "CLIENT_KEY_NOT_FOUND",
};

enum bench_target {
    TARGET_REPORT = 0,
    TARGET_GET,
    TARGET_GET_STALE,
    TARGET_ETCD_PUT,
    TARGET_ETCD_RANGE,
    TARGET_ETCD_RANGE_STALE,
    BENCH_N_TARGETS,
};

static const struct bench_target_info {
    const char *name;
    const char *method; /* gRPC method path */
    int write;          /* the write of the same system */
    int read;           /* needs records written first */
} targets[BENCH_N_TARGETS] = {
    [TARGET_REPORT] = {"report", "/cityops.v1.Cases/Report", TARGET_REPORT, 0},
    [TARGET_GET] = {"get", "/cityops.v1.Cases/Get", TARGET_REPORT, 1},
    [TARGET_GET_STALE] = {"get-stale", "/cityops.v1.Cases/Get", TARGET_REPORT,
                          1},
    [TARGET_ETCD_PUT] = {"etcd-put", "/etcdserverpb.KV/Put", TARGET_ETCD_PUT,
                         0},
    [TARGET_ETCD_RANGE] = {"etcd-range", "/etcdserverpb.KV/Range",
                           TARGET_ETCD_PUT, 1},
    [TARGET_ETCD_RANGE_STALE] = {"etcd-range-stale", "/etcdserverpb.KV/Range",
                                 TARGET_ETCD_PUT, 1},
};

struct bench_opts {
    char *endpoints[OPS_MAX_ENDPOINTS];
    int n_endpoints;
    int concurrency;
    int channels;
    double duration_s; /* 0 with --count */
    uint64_t count;    /* 0 with --duration */
    size_t payload;
    int timeout_ms;
    int json;
    int target;    /* enum bench_target */
    uint64_t keys; /* read targets: records written before reading */
    int until_ok;  /* stop at the first success */
    const char *trace; /* write every call's completion time and latency */
};

struct bench;

struct bench_slot {
    struct bench *b;
    int index;
    grpc_channel *channel;
    grpc_call *call; /* NULL when idle */
    grpc_byte_buffer *resp;
    grpc_metadata_array initial_md;
    grpc_metadata_array trailing_md;
    grpc_status_code status;
    grpc_slice details;
    const char *error_string;
    char client_id[48];
    uint64_t seq;
    uint64_t key; /* the record this call writes or reads */
    int64_t started_ns;
};

struct bench {
    struct bench_opts o;
    grpc_completion_queue *cq;
    grpc_channel *channels[BENCH_MAX_CHANNELS];
    struct bench_slot *slots;
    char *description; /* the payload */
    char run_id[17];
    uint64_t started;
    uint64_t ok;
    uint64_t status_errors[BENCH_N_STATUS];
    uint64_t local_errors[BENCH_N_LOCAL];
    double *lat_ms; /* every completed call, in completion order */
    double *done_s; /* with --trace: when each of them completed */
    size_t n_lat;
    size_t cap_lat;
    int lat_nomem;
    int64_t t0_ns;
    int64_t stop_ns; /* duration mode: no call starts after this */
    int stopping;
    /* The phase running: the untimed fill of a read target, then the run. */
    int op;              /* enum bench_target */
    int filling;         /* record written keys' case ids */
    uint64_t limit;      /* calls to make in this phase; 0: by time */
    double limit_s;      /* seconds, when limit is 0 */
    uint64_t next_write; /* records written so far: the next key */
    uint64_t next_read;
    uint64_t *case_ids; /* cityops: key -> case id, for the read targets */
};

static const char usage_text[] =
    "usage: cityops-bench [--endpoints H:P,H:P,...] [--concurrency N] "
    "[--channels M]\n"
    "                     [--duration S | --count K] [--payload BYTES]\n"
    "                     [--target T] [--keys K] [--until-ok]\n"
    "                     [--timeout MS] [--json] [--trace FILE]\n"
    "\n"
    "  --endpoints   nodes to load, any of them (followers forward); default\n"
    "                $CITYOPS_ENDPOINTS, else " OPS_DEFAULT_ENDPOINT "\n"
    "  --concurrency calls in flight (default 16)\n"
    "  --channels    gRPC channels (TCP connections), spread over the "
    "endpoints\n"
    "                (default: one per endpoint)\n"
    "  --duration    seconds to keep starting calls (default 10)\n"
    "  --count       make exactly K calls instead\n"
    "  --payload     description bytes per Report, value bytes per etcd "
    "Put\n"
    "                (default 64)\n"
    "  --target      report (default), get, get-stale: cityops.v1.Cases;\n"
    "                etcd-put, etcd-range, etcd-range-stale: etcd's v3 KV\n"
    "  --method      the same as --target (older name)\n"
    "  --keys        read targets: records written (untimed) and then read\n"
    "                round-robin (default 1000)\n"
    "  --until-ok    one call at a time, rotating over the endpoints, until\n"
    "                one succeeds or --duration passes (failover probe)\n"
    "  --timeout     per-call deadline in ms (default 5000)\n"
    "  --json        print the summary as JSON\n"
    "  --trace       write each call as 'completed_s latency_ms' to FILE,\n"
    "                in completion order (periodic stalls show up there)\n"
    "\n"
    "Prints ops/s, errors by status and latency p50/p90/p99/p99.9/max in "
    "ms.\n"
    "Exit status: 0 if any call succeeded, 1 if none did, 2 usage error.\n";

static int64_t now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int usage_error(const char *msg, const char *arg)
{
    fprintf(stderr, "cityops-bench: %s%s%s\n", msg, arg != NULL ? ": " : "",
            arg != NULL ? arg : "");
    fprintf(stderr, "Run 'cityops-bench --help' for usage.\n");
    return OPS_EXIT_USAGE;
}

static int parse_u64(const char *s, uint64_t *out)
{
    char *end = NULL;

    if (s == NULL || *s < '0' || *s > '9') {
        return OPS_INVALID;
    }
    errno = 0;
    *out = strtoull(s, &end, 10);
    if (errno != 0 || *end != '\0') {
        return OPS_INVALID;
    }
    return 0;
}

static int endpoints_parse(struct bench_opts *o, const char *list)
{
    const char *p = list;

    while (*p != '\0') {
        const char *comma = strchr(p, ',');
        size_t len = comma != NULL ? (size_t)(comma - p) : strlen(p);

        if (len > 0) {
            if (o->n_endpoints == OPS_MAX_ENDPOINTS) {
                return usage_error("too many endpoints", NULL);
            }
            o->endpoints[o->n_endpoints] = strndup(p, len);
            if (o->endpoints[o->n_endpoints] == NULL) {
                fprintf(stderr, "cityops-bench: out of memory\n");
                return OPS_EXIT_FAIL;
            }
            o->n_endpoints++;
        }
        if (comma == NULL) {
            break;
        }
        p = comma + 1;
    }
    if (o->n_endpoints == 0) {
        return usage_error("no endpoints", list);
    }
    return OPS_EXIT_OK;
}

/* One numeric option: @value within [@min, @max]. */
static int opt_number(const char *name,
                      const char *value,
                      uint64_t min,
                      uint64_t max,
                      uint64_t *out)
{
    if (value == NULL) {
        return usage_error("option needs a value", name);
    }
    if (parse_u64(value, out) != 0 || *out < min || *out > max) {
        return usage_error("bad value for option", name);
    }
    return OPS_EXIT_OK;
}

static int target_parse(const char *value, int *out)
{
    int t;

    for (t = 0; value != NULL && t < BENCH_N_TARGETS; t++) {
        if (strcmp(value, targets[t].name) == 0) {
            *out = t;
            return OPS_EXIT_OK;
        }
    }
    return usage_error("unknown --target (report, get, get-stale, etcd-put, "
                       "etcd-range, etcd-range-stale)",
                       value);
}

static int opts_parse(int argc, char **argv, struct bench_opts *o)
{
    const char *endpoints = getenv("CITYOPS_ENDPOINTS");
    uint64_t v;
    int rv = OPS_EXIT_OK;
    int i;

    o->concurrency = 16;
    o->payload = 64;
    o->keys = 1000;
    o->timeout_ms = OPS_DEFAULT_TIMEOUT_MS;
    for (i = 1; i < argc && rv == OPS_EXIT_OK; i++) {
        const char *name = argv[i];
        const char *value = i + 1 < argc ? argv[i + 1] : NULL;

        if (strcmp(name, "--help") == 0 || strcmp(name, "-h") == 0) {
            fputs(usage_text, stdout);
            exit(OPS_EXIT_OK);
        } else if (strcmp(name, "--json") == 0) {
            o->json = 1;
            continue;
        } else if (strcmp(name, "--endpoints") == 0) {
            endpoints = value;
        } else if (strcmp(name, "--until-ok") == 0) {
            o->until_ok = 1;
            continue;
        } else if (strcmp(name, "--target") == 0 ||
                   strcmp(name, "--method") == 0) {
            rv = target_parse(value, &o->target);
        } else if (strcmp(name, "--keys") == 0) {
            rv = opt_number(name, value, 1, UINT64_C(1) << 32, &o->keys);
        } else if (strcmp(name, "--concurrency") == 0) {
            rv = opt_number(name, value, 1, BENCH_MAX_SLOTS, &v);
            o->concurrency = (int)v;
        } else if (strcmp(name, "--channels") == 0) {
            rv = opt_number(name, value, 1, BENCH_MAX_CHANNELS, &v);
            o->channels = (int)v;
        } else if (strcmp(name, "--duration") == 0) {
            rv = opt_number(name, value, 1, 24 * 3600, &v);
            o->duration_s = (double)v;
        } else if (strcmp(name, "--count") == 0) {
            rv = opt_number(name, value, 1, UINT64_C(1) << 40, &o->count);
        } else if (strcmp(name, "--payload") == 0) {
            rv = opt_number(name, value, 0, RPC_MAX_MESSAGE / 2, &v);
            o->payload = (size_t)v;
        } else if (strcmp(name, "--trace") == 0) {
            o->trace = value;
        } else if (strcmp(name, "--timeout") == 0) {
            rv = opt_number(name, value, 1, 3600 * 1000, &v);
            o->timeout_ms = (int)v;
        } else {
            return usage_error("unknown argument", name);
        }
        if (value == NULL && rv == OPS_EXIT_OK) {
            return usage_error("option needs a value", name);
        }
        i++; /* the value */
    }
    if (rv != OPS_EXIT_OK) {
        return rv;
    }
    if (o->duration_s > 0 && o->count > 0) {
        return usage_error("--duration and --count exclude each other", NULL);
    }
    if (o->duration_s == 0 && o->count == 0) {
        o->duration_s = 10;
    }
    if (o->until_ok) {
        if (o->count > 0) {
            return usage_error("--until-ok takes --duration, not --count",
                               NULL);
        }
        o->concurrency = 1;
    }
    if (endpoints == NULL || *endpoints == '\0') {
        endpoints = OPS_DEFAULT_ENDPOINT;
    }
    rv = endpoints_parse(o, endpoints);
    if (rv == OPS_EXIT_OK && o->channels == 0) {
        o->channels = o->n_endpoints;
    }
    return rv;
}

/* --- calls --- */

static void run_id_make(char *buf, size_t len)
{
    unsigned char raw[8] = {0};
    int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
    ssize_t got = -1;
    size_t i;

    if (fd >= 0) {
        got = read(fd, raw, sizeof(raw));
        close(fd);
    }
    if (got != (ssize_t)sizeof(raw)) {
        uint64_t v = (uint64_t)now_ns() ^ ((uint64_t)getpid() << 40);

        memcpy(raw, &v, sizeof(raw));
    }
    for (i = 0; i < sizeof(raw) && 2 * i + 2 < len; i++) {
        snprintf(buf + 2 * i, len - 2 * i, "%02x", raw[i]);
    }
}

/* --- hand-encoded etcd messages (proto3 wire format) --- */

#define PB_WIRE_VARINT 0
#define PB_WIRE_I64 1
#define PB_WIRE_LEN 2
#define PB_WIRE_I32 5
#define ETCD_KEY_MAX 64

static size_t pb_put_varint(uint8_t *p, uint64_t v)
{
    size_t n = 0;

    while (v >= 0x80) {
        p[n++] = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    p[n++] = (uint8_t)v;
    return n;
}

static size_t
pb_put_bytes(uint8_t *p, unsigned field, const void *data, size_t len)
{
    size_t n = pb_put_varint(p, (uint64_t)field << 3 | PB_WIRE_LEN);

    n += pb_put_varint(p + n, len);
    memcpy(p + n, data, len);
    return n + len;
}

static int pb_get_varint(const uint8_t *p, size_t len, size_t *i, uint64_t *v)
{
    unsigned shift = 0;

    *v = 0;
    while (*i < len && shift < 64) {
        uint8_t byte = p[(*i)++];

        *v |= (uint64_t)(byte & 0x7f) << shift;
        if ((byte & 0x80) == 0) {
            return 0;
        }
        shift += 7;
    }
    return -1;
}

/* Whether the top-level message @p has @field: 1, 0, or -1 if malformed. */
static int pb_has_field(const uint8_t *p, size_t len, unsigned field)
{
    size_t i = 0;

    while (i < len) {
        uint64_t tag;
        uint64_t v;

        if (pb_get_varint(p, len, &i, &tag) != 0) {
            return -1;
        }
        if (tag >> 3 == field) {
            return 1;
        }
        switch (tag & 7) {
        case PB_WIRE_VARINT:
            if (pb_get_varint(p, len, &i, &v) != 0) {
                return -1;
            }
            break;
        case PB_WIRE_I64:
            i += 8;
            break;
        case PB_WIRE_LEN:
            if (pb_get_varint(p, len, &i, &v) != 0 || v > len - i) {
                return -1;
            }
            i += (size_t)v;
            break;
        case PB_WIRE_I32:
            i += 4;
            break;
        default:
            return -1;
        }
    }
    return i == len ? 0 : -1;
}

static size_t etcd_key(const struct bench *b, uint64_t key, char *buf)
{
    int n = snprintf(buf, ETCD_KEY_MAX, "bench/%s/%" PRIu64, b->run_id, key);

    return n > 0 ? (size_t)n : 0;
}

/* etcdserverpb.PutRequest{1: key, 2: value} */
static grpc_slice etcd_put_pack(const struct bench *b, uint64_t key)
{
    char k[ETCD_KEY_MAX];
    size_t klen = etcd_key(b, key, k);
    grpc_slice slice = grpc_slice_malloc(klen + b->o.payload + 2 * 11);
    uint8_t *p = GRPC_SLICE_START_PTR(slice);
    size_t n = pb_put_bytes(p, 1, k, klen);

    n += pb_put_bytes(p + n, 2, b->description, b->o.payload);
    return grpc_slice_sub_no_ref(slice, 0, n);
}

/* etcdserverpb.RangeRequest{1: key, 7: serializable} */
static grpc_slice
etcd_range_pack(const struct bench *b, uint64_t key, int serializable)
{
    char k[ETCD_KEY_MAX];
    size_t klen = etcd_key(b, key, k);
    grpc_slice slice = grpc_slice_malloc(klen + 2 * 11 + 2);
    uint8_t *p = GRPC_SLICE_START_PTR(slice);
    size_t n = pb_put_bytes(p, 1, k, klen);

    if (serializable) {
        n += pb_put_varint(p + n, 7 << 3 | PB_WIRE_VARINT);
        p[n++] = 1;
    }
    return grpc_slice_sub_no_ref(slice, 0, n);
}

static grpc_slice message_pack(const ProtobufCMessage *msg)
{
    size_t len = protobuf_c_message_get_packed_size(msg);
    grpc_slice slice = grpc_slice_malloc(len);

    protobuf_c_message_pack(msg, GRPC_SLICE_START_PTR(slice));
    return slice;
}

static grpc_slice report_pack(struct bench_slot *s)
{
    Cityops__V1__ReportRequest req = CITYOPS__V1__REPORT_REQUEST__INIT;
    Cityops__V1__RequestContext ctx = CITYOPS__V1__REQUEST_CONTEXT__INIT;

    ctx.actor_id = "cityops-bench";
    ctx.role = CITYOPS__V1__ROLE__ROLE_INSPECTOR;
    ctx.client_id = s->client_id;
    ctx.seq = ++s->seq;
    req.ctx = &ctx;
    req.category_type = CITYOPS__V1__CATEGORY_TYPE__CATEGORY_TYPE_EVENT;
    req.major_code = "01";
    req.minor_code = "01";
    req.description = s->b->description;
    return message_pack(&req.base);
}

static grpc_slice get_pack(const struct bench *b, uint64_t key, int stale)
{
    Cityops__V1__GetRequest req = CITYOPS__V1__GET_REQUEST__INIT;
    Cityops__V1__ReadOptions read = CITYOPS__V1__READ_OPTIONS__INIT;

    read.consistency = stale
                           ? CITYOPS__V1__CONSISTENCY__CONSISTENCY_STALE
                           : CITYOPS__V1__CONSISTENCY__CONSISTENCY_LINEARIZABLE;
    req.read = &read;
    req.case_id = b->case_ids[key];
    return message_pack(&req.base);
}

/* The request of the phase's op; picks the record the call is about. */
static grpc_byte_buffer *request_pack(struct bench_slot *s)
{
    struct bench *b = s->b;
    grpc_byte_buffer *bb;
    grpc_slice slice;

    if (targets[b->op].read) {
        s->key = b->next_read++ % b->o.keys;
    } else {
        s->key = b->next_write++;
    }
    switch (b->op) {
    case TARGET_REPORT:
        slice = report_pack(s);
        break;
    case TARGET_GET:
    case TARGET_GET_STALE:
        slice = get_pack(b, s->key, b->op == TARGET_GET_STALE);
        break;
    case TARGET_ETCD_PUT:
        slice = etcd_put_pack(b, s->key);
        break;
    default:
        slice = etcd_range_pack(b, s->key, b->op == TARGET_ETCD_RANGE_STALE);
        break;
    }
    bb = grpc_raw_byte_buffer_create(&slice, 1);
    grpc_slice_unref(slice);
    return bb;
}

/* Start the slot's next call. Returns 0, or -1 if it could not start. */
static int slot_start(struct bench_slot *s)
{
    struct bench *b = s->b;
    grpc_slice method = grpc_slice_from_static_string(targets[b->op].method);
    gpr_timespec deadline =
        gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC),
                     gpr_time_from_millis(b->o.timeout_ms, GPR_TIMESPAN));
    grpc_byte_buffer *req;
    grpc_op ops[6];
    grpc_call_error err;

    if (b->o.until_ok) {
        /* The probe rotates over the endpoints (one channel each). */
        s->channel = b->channels[b->started % (uint64_t)b->o.channels];
    }
    s->call =
        grpc_channel_create_call(s->channel, NULL, GRPC_PROPAGATE_DEFAULTS,
                                 b->cq, method, NULL, deadline, NULL);
    if (s->call == NULL) {
        goto err_count;
    }
    req = request_pack(s);
    grpc_metadata_array_init(&s->initial_md);
    grpc_metadata_array_init(&s->trailing_md);
    s->resp = NULL;
    s->details = grpc_empty_slice();
    s->error_string = NULL;
    s->status = GRPC_STATUS_UNKNOWN;
    memset(ops, 0, sizeof(ops));
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[1].op = GRPC_OP_SEND_MESSAGE;
    ops[1].data.send_message.send_message = req;
    ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
    ops[3].op = GRPC_OP_RECV_INITIAL_METADATA;
    ops[3].data.recv_initial_metadata.recv_initial_metadata = &s->initial_md;
    ops[4].op = GRPC_OP_RECV_MESSAGE;
    ops[4].data.recv_message.recv_message = &s->resp;
    ops[5].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    ops[5].data.recv_status_on_client.trailing_metadata = &s->trailing_md;
    ops[5].data.recv_status_on_client.status = &s->status;
    ops[5].data.recv_status_on_client.status_details = &s->details;
    ops[5].data.recv_status_on_client.error_string = &s->error_string;
    s->started_ns = now_ns();
    err = grpc_call_start_batch(s->call, ops, 6, s, NULL);
    /* The call holds its own reference to what it sends. */
    grpc_byte_buffer_destroy(req);
    if (err != GRPC_CALL_OK) {
        goto err_unref_call;
    }
    b->started++;
    return 0;

err_unref_call:
    grpc_metadata_array_destroy(&s->initial_md);
    grpc_metadata_array_destroy(&s->trailing_md);
    grpc_call_unref(s->call);
    s->call = NULL;
err_count:
    b->local_errors[BENCH_ERR_START]++;
    return -1;
}

static void latency_add(struct bench *b, double ms)
{
    if (b->n_lat == b->cap_lat) {
        size_t cap = b->cap_lat == 0 ? 65536 : b->cap_lat * 2;
        double *grown = realloc(b->lat_ms, cap * sizeof(*grown));
        double *done = NULL;

        if (grown != NULL) {
            b->lat_ms = grown;
        }
        if (grown != NULL && b->o.trace != NULL) {
            done = realloc(b->done_s, cap * sizeof(*done));
            if (done != NULL) {
                b->done_s = done;
            }
        }
        if (grown == NULL || (b->o.trace != NULL && done == NULL)) {
            /* Stop the run rather than report a biased sample. */
            b->lat_nomem = 1;
            b->stopping = 1;
            return;
        }
        b->cap_lat = cap;
    }
    if (b->done_s != NULL) {
        b->done_s[b->n_lat] = (double)(now_ns() - b->t0_ns) / 1e9;
    }
    b->lat_ms[b->n_lat++] = ms;
}

/* --trace: the calls in completion order, before they are sorted. */
static int write_trace(const struct bench *b)
{
    FILE *f = fopen(b->o.trace, "w");

    if (f == NULL) {
        fprintf(stderr, "cityops-bench: --trace %s: %s\n", b->o.trace,
                strerror(errno));
        return -1;
    }
    for (size_t i = 0; i < b->n_lat && b->done_s != NULL; i++) {
        fprintf(f, "%.6f %.3f\n", b->done_s[i], b->lat_ms[i]);
    }
    if (fclose(f) != 0) {
        fprintf(stderr, "cityops-bench: --trace %s: %s\n", b->o.trace,
                strerror(errno));
        return -1;
    }
    return 0;
}

/* Copy of the reply's bytes (malloc'd, *len may be 0), or NULL on failure. */
static uint8_t *reply_bytes(grpc_byte_buffer *bb, size_t *len)
{
    grpc_byte_buffer_reader reader;
    grpc_slice all;
    uint8_t *buf;

    if (!grpc_byte_buffer_reader_init(&reader, bb)) {
        return NULL;
    }
    all = grpc_byte_buffer_reader_readall(&reader);
    grpc_byte_buffer_reader_destroy(&reader);
    *len = GRPC_SLICE_LENGTH(all);
    buf = malloc(*len + 1);
    if (buf != NULL) {
        memcpy(buf, GRPC_SLICE_START_PTR(all), *len);
    }
    grpc_slice_unref(all);
    return buf;
}

/* An OK reply: check what the op needs from it. Returns 0 or a local
 * error. A Report during the fill records the new case's id. */
static int reply_check(struct bench_slot *s)
{
    struct bench *b = s->b;
    Cityops__V1__CaseReply *reply;
    uint8_t *buf;
    size_t len = 0;
    int rv = 0;
    int has;

    if (s->resp == NULL) {
        return BENCH_ERR_NO_REPLY;
    }
    if (!(b->filling && b->op == TARGET_REPORT) && b->op != TARGET_ETCD_RANGE &&
        b->op != TARGET_ETCD_RANGE_STALE) {
        return 0;
    }
    buf = reply_bytes(s->resp, &len);
    if (buf == NULL) {
        return BENCH_ERR_NO_REPLY;
    }
    if (b->op == TARGET_REPORT) {
        reply = cityops__v1__case_reply__unpack(NULL, len, buf);
        if (reply == NULL || reply->case_ == NULL) {
            rv = BENCH_ERR_NO_REPLY;
        } else {
            b->case_ids[s->key] = reply->case_->case_id;
        }
        if (reply != NULL) {
            cityops__v1__case_reply__free_unpacked(reply, NULL);
        }
    } else {
        has = pb_has_field(buf, len, 2); /* RangeResponse.kvs */
        rv = has == 1 ? 0 : has == 0 ? BENCH_ERR_NO_KEY : BENCH_ERR_NO_REPLY;
    }
    free(buf);
    return rv;
}

/* The slot's call completed: account for it and release it. */
static void slot_finish(struct bench_slot *s, int success)
{
    struct bench *b = s->b;
    int local;

    latency_add(b, (double)(now_ns() - s->started_ns) / 1e6);
    if (!success) {
        b->local_errors[BENCH_ERR_BATCH]++;
    } else if (s->status == GRPC_STATUS_OK) {
        local = reply_check(s);
        if (local != 0) {
            b->local_errors[local]++;
        } else {
            b->ok++;
        }
    } else if ((unsigned)s->status < BENCH_N_STATUS) {
        b->status_errors[s->status]++;
    } else {
        b->status_errors[GRPC_STATUS_UNKNOWN]++;
    }
    if (s->resp != NULL) {
        grpc_byte_buffer_destroy(s->resp);
        s->resp = NULL;
    }
    grpc_slice_unref(s->details);
    gpr_free((void *)s->error_string);
    s->error_string = NULL;
    grpc_metadata_array_destroy(&s->initial_md);
    grpc_metadata_array_destroy(&s->trailing_md);
    grpc_call_unref(s->call);
    s->call = NULL;
}

static int may_start(struct bench *b)
{
    if (b->stopping) {
        return 0;
    }
    if (b->o.until_ok && b->ok > 0) {
        return 0;
    }
    if (b->limit > 0) {
        return b->started < b->limit;
    }
    return now_ns() < b->stop_ns;
}

static void cancel_all(struct bench *b)
{
    int i;

    for (i = 0; i < b->o.concurrency; i++) {
        if (b->slots[i].call != NULL) {
            grpc_call_cancel(b->slots[i].call, NULL);
        }
    }
}

/* Run until every call has finished. Returns the elapsed seconds. */
static double bench_loop(struct bench *b)
{
    int64_t hard_stop = 0;
    int cancelled = 0;
    int in_flight = 0;
    int i;

    b->t0_ns = now_ns();
    b->stop_ns = b->t0_ns + (int64_t)(b->limit_s * 1e9);
    for (i = 0; i < b->o.concurrency && may_start(b); i++) {
        if (slot_start(&b->slots[i]) == 0) {
            in_flight++;
        }
    }
    while (in_flight > 0) {
        gpr_timespec tick =
            gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC),
                         gpr_time_from_millis(BENCH_TICK_MS, GPR_TIMESPAN));
        grpc_event ev = grpc_completion_queue_next(b->cq, tick, NULL);

        if (ev.type == GRPC_OP_COMPLETE) {
            struct bench_slot *s = ev.tag;

            slot_finish(s, ev.success);
            in_flight--;
            if (b->o.until_ok && b->ok == 0 && may_start(b)) {
                usleep(10 * 1000); /* do not spin on a fast failure */
            }
            if (may_start(b) && slot_start(s) == 0) {
                in_flight++;
            }
            continue;
        }
        if (ev.type != GRPC_QUEUE_TIMEOUT) {
            break; /* shutdown: cannot happen before we ask for it */
        }
        if (!may_start(b) && hard_stop == 0) {
            /* Nothing more starts; give the calls in flight their deadline
             * plus a second, then cancel them. */
            hard_stop = now_ns() + (int64_t)(b->o.timeout_ms + 1000) * 1000000;
        }
        if (hard_stop != 0 && !cancelled && now_ns() > hard_stop) {
            cancel_all(b);
            cancelled = 1;
        }
    }
    return (double)(now_ns() - b->t0_ns) / 1e9;
}

/* --- setup --- */

static grpc_channel *channel_create(const char *target)
{
    grpc_channel_credentials *creds = grpc_insecure_credentials_create();
    grpc_arg arg_slots[2];
    grpc_channel_args args;
    grpc_channel *ch;

    arg_slots[0].type = GRPC_ARG_INTEGER;
    arg_slots[0].key = GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL;
    arg_slots[0].value.integer = 1;
    arg_slots[1].type = GRPC_ARG_INTEGER;
    arg_slots[1].key = GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH;
    arg_slots[1].value.integer = RPC_MAX_MESSAGE;
    args.num_args = 2;
    args.args = arg_slots;
    ch = grpc_channel_create(target, creds, &args);
    grpc_channel_credentials_release(creds);
    return ch;
}

static int bench_init(struct bench *b)
{
    int i;

    b->cq = grpc_completion_queue_create_for_next(NULL);
    b->slots = calloc((size_t)b->o.concurrency, sizeof(*b->slots));
    b->description = malloc(b->o.payload + 1);
    if (b->cq == NULL || b->slots == NULL || b->description == NULL) {
        return OPS_NOMEM;
    }
    if (targets[b->o.target].read) {
        b->case_ids = calloc((size_t)b->o.keys, sizeof(*b->case_ids));
        if (b->case_ids == NULL) {
            return OPS_NOMEM;
        }
    }
    for (i = 0; (size_t)i < b->o.payload; i++) {
        b->description[i] = (char)('a' + i % 26);
    }
    b->description[b->o.payload] = '\0';
    run_id_make(b->run_id, sizeof(b->run_id));
    for (i = 0; i < b->o.channels; i++) {
        b->channels[i] = channel_create(b->o.endpoints[i % b->o.n_endpoints]);
        if (b->channels[i] == NULL) {
            return OPS_NOMEM;
        }
    }
    for (i = 0; i < b->o.concurrency; i++) {
        struct bench_slot *s = &b->slots[i];

        s->b = b;
        s->index = i;
        s->channel = b->channels[i % b->o.channels];
        snprintf(s->client_id, sizeof(s->client_id), "bench-%s-%d", b->run_id,
                 i);
    }
    return 0;
}

/* Release what bench_init() made; safe on a partial init. */
static void bench_close(struct bench *b)
{
    int i;

    for (i = 0; i < b->o.channels; i++) {
        if (b->channels[i] != NULL) {
            grpc_channel_destroy(b->channels[i]);
        }
    }
    if (b->cq != NULL) {
        grpc_completion_queue_shutdown(b->cq);
        while (grpc_completion_queue_next(
                   b->cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL)
                   .type != GRPC_QUEUE_SHUTDOWN) {
        }
        grpc_completion_queue_destroy(b->cq);
    }
    free(b->slots);
    free(b->description);
    free(b->lat_ms);
    free(b->done_s);
    free(b->case_ids);
    for (i = 0; i < b->o.n_endpoints; i++) {
        free(b->o.endpoints[i]);
    }
}

/* Forget the counts of a finished phase. */
static void stats_reset(struct bench *b)
{
    b->started = 0;
    b->ok = 0;
    memset(b->status_errors, 0, sizeof(b->status_errors));
    memset(b->local_errors, 0, sizeof(b->local_errors));
    b->n_lat = 0;
}

/* A read target's untimed first phase: write the --keys records it reads,
 * with its system's write. Returns 0, or -1 if any write failed. */
static int bench_fill(struct bench *b)
{
    b->op = targets[b->o.target].write;
    b->filling = 1;
    b->limit = b->o.keys;
    b->limit_s = 0;
    bench_loop(b);
    b->filling = 0;
    if (b->ok != b->o.keys) {
        fprintf(stderr,
                "cityops-bench: fill: %" PRIu64 " of %" PRIu64
                " writes succeeded (%" PRIu64 " failed); not reading\n",
                b->ok, b->o.keys, b->n_lat - b->ok);
        return -1;
    }
    stats_reset(b);
    return 0;
}

/* --- results --- */

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a;
    double y = *(const double *)b;

    return (x > y) - (x < y);
}

/* Nearest-rank percentile of the sorted latencies. */
static double percentile(const struct bench *b, double p)
{
    size_t rank;

    if (b->n_lat == 0) {
        return 0;
    }
    rank = (size_t)ceil(p * (double)b->n_lat);
    if (rank < 1) {
        rank = 1;
    }
    return b->lat_ms[rank - 1];
}

static uint64_t errors_total(const struct bench *b)
{
    uint64_t n = 0;
    int i;

    for (i = 0; i < BENCH_N_STATUS; i++) {
        n += b->status_errors[i];
    }
    for (i = 0; i < BENCH_N_LOCAL; i++) {
        n += b->local_errors[i];
    }
    return n;
}

static int report_json(const struct bench *b, double elapsed)
{
    json_t *errors = json_object();
    json_t *j;
    int rv;
    int i;

    if (errors == NULL) {
        return OPS_EXIT_FAIL;
    }
    for (i = 0; i < BENCH_N_STATUS; i++) {
        if (b->status_errors[i] > 0) {
            json_object_set_new(errors, rpc_status_name((grpc_status_code)i),
                                json_integer((json_int_t)b->status_errors[i]));
        }
    }
    for (i = 0; i < BENCH_N_LOCAL; i++) {
        if (b->local_errors[i] > 0) {
            json_object_set_new(errors, local_error_names[i],
                                json_integer((json_int_t)b->local_errors[i]));
        }
    }
    j = json_pack("{s:s,s:s,s:i,s:i,s:i,s:I,s:I,s:I,s:I,s:o,s:f,s:f,"
                  "s:{s:f,s:f,s:f,s:f,s:f}}",
                  "target", targets[b->o.target].name, "method",
                  targets[b->o.target].method, "concurrency", b->o.concurrency,
                  "channels", b->o.channels, "endpoints", b->o.n_endpoints,
                  "payload", (json_int_t)b->o.payload, "requests",
                  (json_int_t)b->n_lat, "ok", (json_int_t)b->ok, "failed",
                  (json_int_t)errors_total(b), "errors", errors, "duration_s",
                  elapsed, "ops_per_s",
                  elapsed > 0 ? (double)b->ok / elapsed : 0.0, "latency_ms",
                  "p50", percentile(b, 0.50), "p90", percentile(b, 0.90), "p99",
                  percentile(b, 0.99), "p99.9", percentile(b, 0.999), "max",
                  b->n_lat > 0 ? b->lat_ms[b->n_lat - 1] : 0.0);
    if (j == NULL) {
        return OPS_EXIT_FAIL;
    }
    rv = json_dumpf(j, stdout,
                    JSON_INDENT(2) | JSON_PRESERVE_ORDER |
                        JSON_REAL_PRECISION(6));
    json_decref(j);
    if (rv != 0) {
        return OPS_EXIT_FAIL;
    }
    fputc('\n', stdout);
    return OPS_EXIT_OK;
}

static void report_text(const struct bench *b, double elapsed)
{
    int i;

    printf("cityops-bench: %s x %zu, concurrency %d, %d channel%s to %d "
           "endpoint%s, payload %zu B\n",
           targets[b->o.target].name, b->n_lat, b->o.concurrency, b->o.channels,
           b->o.channels == 1 ? "" : "s", b->o.n_endpoints,
           b->o.n_endpoints == 1 ? "" : "s", b->o.payload);
    printf("  duration    %.3f s\n", elapsed);
    printf("  ok          %" PRIu64 "\n", b->ok);
    printf("  failed      %" PRIu64 "\n", errors_total(b));
    printf("  throughput  %.1f ops/s\n",
           elapsed > 0 ? (double)b->ok / elapsed : 0.0);
    printf("  latency ms  p50 %.3f  p90 %.3f  p99 %.3f  p99.9 %.3f  max %.3f\n",
           percentile(b, 0.50), percentile(b, 0.90), percentile(b, 0.99),
           percentile(b, 0.999), b->n_lat > 0 ? b->lat_ms[b->n_lat - 1] : 0.0);
    for (i = 0; i < BENCH_N_STATUS; i++) {
        if (b->status_errors[i] > 0) {
            printf("  error       %-20s %" PRIu64 "\n",
                   rpc_status_name((grpc_status_code)i), b->status_errors[i]);
        }
    }
    for (i = 0; i < BENCH_N_LOCAL; i++) {
        if (b->local_errors[i] > 0) {
            printf("  error       %-20s %" PRIu64 "\n", local_error_names[i],
                   b->local_errors[i]);
        }
    }
}

int main(int argc, char **argv)
{
    struct bench b;
    double elapsed;
    int traced;
    int rv;

    memset(&b, 0, sizeof(b));
    rv = opts_parse(argc, argv, &b.o);
    if (rv != OPS_EXIT_OK) {
        goto out_free_opts;
    }
    rpc_grpc_init();
    if (bench_init(&b) != 0) {
        fprintf(stderr, "cityops-bench: out of memory\n");
        rv = OPS_EXIT_FAIL;
        goto out_close;
    }
    if (targets[b.o.target].read && bench_fill(&b) != 0) {
        rv = OPS_EXIT_FAIL;
        goto out_close;
    }
    b.op = b.o.target;
    b.limit = b.o.count;
    b.limit_s = b.o.duration_s;
    elapsed = bench_loop(&b);
    if (b.lat_nomem) {
        fprintf(stderr, "cityops-bench: out of memory for latencies; "
                        "stopped early\n");
    }
    traced = b.o.trace == NULL || write_trace(&b) == 0;
    if (b.n_lat > 0) {
        qsort(b.lat_ms, b.n_lat, sizeof(*b.lat_ms), cmp_double);
    }
    if (b.o.json) {
        rv = report_json(&b, elapsed);
    } else {
        report_text(&b, elapsed);
    }
    if (rv == OPS_EXIT_OK && (b.ok == 0 || !traced)) {
        rv = OPS_EXIT_FAIL;
    }
out_close:
    bench_close(&b);
    grpc_shutdown();
    return rv;
out_free_opts:
    for (int i = 0; i < b.o.n_endpoints; i++) {
        free(b.o.endpoints[i]);
    }
    return rv;
}
