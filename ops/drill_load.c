/* The drill's client load: writer and reader threads.
 *
 * A writer reports cases with its own retry key (client id
 * "<drill id>-w<n>", seq 1, 2, ...) and a unique token in the description.
 * It sends one write at a time and moves to the next seq only once the
 * current one is acknowledged: after UNAVAILABLE, DEADLINE_EXCEEDED or any
 * other unknown outcome it sends the SAME seq again, on the next endpoint,
 * so the cluster applies it at most once whichever node got it first. A
 * definite refusal (INVALID_ARGUMENT, PERMISSION_DENIED, ALREADY_EXISTS,
 * FAILED_PRECONDITION) is final; a key still pending when the load stops
 * is counted unknown.
 *
 * A reader picks a case whose write was acknowledged before the read
 * began and reads it LINEARIZABLE: NOT_FOUND, or a case holding another
 * write's token, is a history violation (an acknowledged write went
 * missing, or was never there for a linearizable reader). Other failures
 * (no leader, timeouts) are only counted.
 */
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "drill.h"

#define WRITE_TIMEOUT_MS 3000
#define READ_TIMEOUT_MS 3000
#define RETRY_PAUSE_US 50000

struct worker {
    struct drill_load *ld;
    pthread_t thread;
    uint32_t id;
    int reader;
};

struct drill_load {
    struct drill_env *env;
    char drill_id[DRILL_NAME_MAX];
    int write_interval_ms;
    pthread_mutex_t mu;
    struct drill_ack *acks;
    size_t n_acks;
    size_t cap_acks;
    uint64_t unknown;
    uint64_t attempts;
    uint64_t errors;
    uint64_t refused;
    uint64_t by_status[17]; /* write errors by gRPC status */
    char last_error[160];
    uint64_t reads;
    uint64_t read_errors;
    uint64_t violations;
    char violation_example[200];
    uint32_t phase;
    uint32_t next_id;
    volatile int stop;
    struct worker workers[2 * DRILL_MAX_THREADS];
    int n_workers;
    /* progress */
    uint64_t last_acked;
    int64_t last_progress_us;
};

struct drill_load *drill_load_new(struct drill_env *env,
                                  const char *drill_id,
                                  int write_interval_ms)
{
    struct drill_load *ld = calloc(1, sizeof(*ld));

    if (ld == NULL) {
        return NULL;
    }
    ld->env = env;
    snprintf(ld->drill_id, sizeof(ld->drill_id), "%s", drill_id);
    ld->write_interval_ms = write_interval_ms;
    ld->next_id = 1;
    pthread_mutex_init(&ld->mu, NULL);
    return ld;
}

void drill_load_free(struct drill_load *ld)
{
    if (ld == NULL) {
        return;
    }
    drill_load_stop(ld);
    pthread_mutex_destroy(&ld->mu);
    free(ld->acks);
    free(ld);
}

static void count(struct drill_load *ld, uint64_t *field)
{
    pthread_mutex_lock(&ld->mu);
    (*field)++;
    pthread_mutex_unlock(&ld->mu);
}

static int ack_add(struct drill_load *ld, const struct drill_ack *a)
{
    int rv = 0;

    pthread_mutex_lock(&ld->mu);
    if (ld->n_acks == ld->cap_acks) {
        size_t cap = ld->cap_acks == 0 ? 4096 : 2 * ld->cap_acks;
        struct drill_ack *grown = realloc(ld->acks, cap * sizeof(*grown));

        if (grown == NULL) {
            rv = OPS_NOMEM;
            goto out;
        }
        ld->acks = grown;
        ld->cap_acks = cap;
    }
    ld->acks[ld->n_acks] = *a;
    ld->acks[ld->n_acks].phase = ld->phase;
    ld->n_acks++;
out:
    pthread_mutex_unlock(&ld->mu);
    return rv;
}

static int refused(int status)
{
    return status == GRPC_STATUS_INVALID_ARGUMENT ||
           status == GRPC_STATUS_PERMISSION_DENIED ||
           status == GRPC_STATUS_ALREADY_EXISTS ||
           status == GRPC_STATUS_FAILED_PRECONDITION;
}

/* Send one key until it is acknowledged, refused or the load stops. */
static void write_one(struct worker *w, uint64_t seq, int *rot)
{
    struct drill_load *ld = w->ld;
    Cityops__V1__ReportRequest req = CITYOPS__V1__REPORT_REQUEST__INIT;
    Cityops__V1__RequestContext ctx = CITYOPS__V1__REQUEST_CONTEXT__INIT;
    char client_id[DRILL_NAME_MAX + 16];
    char desc[160];
    char details[160];
    int n = ld->env->n_load;

    snprintf(client_id, sizeof(client_id), "%s-w%u", ld->drill_id, w->id);
    snprintf(desc, sizeof(desc), DRILL_TOKEN_PREFIX);
    drill_token_make(desc + strlen(desc), sizeof(desc) - strlen(desc),
                     ld->drill_id, w->id, seq);
    ctx.actor_id = "cityctl-drill";
    ctx.role = CITYOPS__V1__ROLE__ROLE_INSPECTOR;
    ctx.client_id = client_id;
    ctx.seq = seq;
    req.ctx = &ctx;
    req.category_type = CITYOPS__V1__CATEGORY_TYPE__CATEGORY_TYPE_EVENT;
    req.major_code = "05";
    req.minor_code = "01";
    req.description = desc;
    for (;;) {
        struct drill_chan *ch = ld->env->chan[(w->id + *rot) % n];
        ProtobufCMessage *resp = NULL;
        struct drill_ack a;
        int status;

        if (ld->stop) {
            count(ld, &ld->unknown);
            return;
        }
        memset(&a, 0, sizeof(a));
        a.sent_us = drill_now_us();
        count(ld, &ld->attempts);
        status = drill_call(ch, "Cases/Report", &req.base,
                            &cityops__v1__case_reply__descriptor,
                            WRITE_TIMEOUT_MS, &resp, details, sizeof(details));
        if (status == GRPC_STATUS_OK) {
            Cityops__V1__CaseReply *r = (Cityops__V1__CaseReply *)resp;

            a.acked_us = drill_now_us();
            a.case_id = r->case_ != NULL ? r->case_->case_id : 0;
            a.writer = w->id;
            a.seq = seq;
            protobuf_c_message_free_unpacked(resp, NULL);
            ack_add(ld, &a);
            return;
        }
        pthread_mutex_lock(&ld->mu);
        ld->errors++;
        ld->by_status[status >= 0 && status < 17 ? status : 2]++;
        snprintf(ld->last_error, sizeof(ld->last_error), "%s: %.120s",
                 rpc_status_name((grpc_status_code)status), details);
        pthread_mutex_unlock(&ld->mu);
        if (refused(status)) {
            count(ld, &ld->refused);
            return;
        }
        (*rot)++;
        drill_sleep_us(RETRY_PAUSE_US);
    }
}

static void *writer_main(void *arg)
{
    struct worker *w = arg;
    struct drill_load *ld = w->ld;
    uint64_t seq = 0;
    int rot = 0;

    while (!ld->stop) {
        write_one(w, ++seq, &rot);
        drill_sleep_us((int64_t)ld->write_interval_ms * 1000);
    }
    return NULL;
}

static void violation(struct drill_load *ld, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void violation(struct drill_load *ld, const char *fmt, ...)
{
    va_list ap;

    pthread_mutex_lock(&ld->mu);
    if (ld->violations++ == 0) {
        va_start(ap, fmt);
        vsnprintf(ld->violation_example, sizeof(ld->violation_example), fmt,
                  ap);
        va_end(ap);
    }
    pthread_mutex_unlock(&ld->mu);
}

static void read_one(struct worker *w, unsigned *rnd, int *rot)
{
    struct drill_load *ld = w->ld;
    Cityops__V1__GetRequest req = CITYOPS__V1__GET_REQUEST__INIT;
    Cityops__V1__ReadOptions read = CITYOPS__V1__READ_OPTIONS__INIT;
    ProtobufCMessage *resp = NULL;
    struct drill_ack a;
    char token[128];
    const char *got;
    int status;
    size_t n;

    pthread_mutex_lock(&ld->mu);
    n = ld->n_acks;
    if (n > 0) {
        a = ld->acks[rand_r(rnd) % n];
    }
    pthread_mutex_unlock(&ld->mu);
    if (n == 0) {
        drill_sleep_us(20000);
        return;
    }
    read.consistency = CITYOPS__V1__CONSISTENCY__CONSISTENCY_LINEARIZABLE;
    req.read = &read;
    req.case_id = a.case_id;
    status = drill_call(ld->env->chan[(w->id + *rot) % ld->env->n_load],
                        "Cases/Get", &req.base,
                        &cityops__v1__case_reply__descriptor, READ_TIMEOUT_MS,
                        &resp, NULL, 0);
    count(ld, &ld->reads);
    drill_token_make(token, sizeof(token), ld->drill_id, a.writer, a.seq);
    if (status == GRPC_STATUS_NOT_FOUND) {
        violation(ld, "case %llu (token %s) acknowledged, then NOT_FOUND",
                  (unsigned long long)a.case_id, token);
    } else if (status != GRPC_STATUS_OK) {
        count(ld, &ld->read_errors);
        (*rot)++;
        drill_sleep_us(RETRY_PAUSE_US);
    } else {
        Cityops__V1__CaseReply *r = (Cityops__V1__CaseReply *)resp;

        got = r->case_ != NULL ? drill_token_of(r->case_->description) : NULL;
        if (got == NULL || strcmp(got, token) != 0) {
            violation(ld, "case %llu holds '%s', not token %s",
                      (unsigned long long)a.case_id,
                      r->case_ != NULL ? r->case_->description : "", token);
        }
    }
    if (resp != NULL) {
        protobuf_c_message_free_unpacked(resp, NULL);
    }
}

static void *reader_main(void *arg)
{
    struct worker *w = arg;
    unsigned rnd = w->id * 2654435761u;
    int rot = 0;

    while (!w->ld->stop) {
        read_one(w, &rnd, &rot);
        drill_sleep_us(5000);
    }
    return NULL;
}

int drill_load_start(struct drill_load *ld, int writers, int readers)
{
    int i;

    ld->stop = 0;
    for (i = 0; i < writers + readers; i++) {
        struct worker *w;

        if (ld->n_workers == 2 * DRILL_MAX_THREADS) {
            return OPS_NOMEM;
        }
        w = &ld->workers[ld->n_workers];
        w->ld = ld;
        w->id = ld->next_id++;
        w->reader = i >= writers;
        if (pthread_create(&w->thread, NULL,
                           w->reader ? reader_main : writer_main, w) != 0) {
            return OPS_NOMEM;
        }
        ld->n_workers++;
    }
    return 0;
}

void drill_load_stop(struct drill_load *ld)
{
    int i;

    ld->stop = 1;
    for (i = 0; i < ld->n_workers; i++) {
        pthread_join(ld->workers[i].thread, NULL);
    }
    ld->n_workers = 0;
}

void drill_load_set_phase(struct drill_load *ld, uint32_t phase)
{
    pthread_mutex_lock(&ld->mu);
    ld->phase = phase;
    pthread_mutex_unlock(&ld->mu);
}

struct drill_ack *drill_load_acks(struct drill_load *ld, size_t *n)
{
    struct drill_ack *copy;

    pthread_mutex_lock(&ld->mu);
    *n = ld->n_acks;
    copy = malloc((ld->n_acks + 1) * sizeof(*copy));
    if (copy != NULL) {
        memcpy(copy, ld->acks, ld->n_acks * sizeof(*copy));
    } else {
        *n = 0;
    }
    pthread_mutex_unlock(&ld->mu);
    return copy;
}

uint64_t drill_load_acked(struct drill_load *ld)
{
    uint64_t n;

    pthread_mutex_lock(&ld->mu);
    n = ld->n_acks;
    pthread_mutex_unlock(&ld->mu);
    return n;
}

uint64_t drill_load_acked_after(struct drill_load *ld, int64_t t)
{
    uint64_t n = 0;
    size_t i;

    pthread_mutex_lock(&ld->mu);
    for (i = ld->n_acks; i > 0; i--) {
        if (ld->acks[i - 1].sent_us > t) {
            n++;
        }
    }
    pthread_mutex_unlock(&ld->mu);
    return n;
}

void drill_load_totals(struct drill_load *ld, struct drill_result *r)
{
    pthread_mutex_lock(&ld->mu);
    r->acked = ld->n_acks;
    r->unknown = ld->unknown;
    r->write_attempts = ld->attempts;
    r->write_errors = ld->errors;
    r->reads = ld->reads;
    r->read_errors = ld->read_errors;
    r->violations = ld->violations;
    snprintf(r->violation_example, sizeof(r->violation_example), "%s",
             ld->violation_example);
    pthread_mutex_unlock(&ld->mu);
}

void drill_load_progress(struct drill_load *ld, const char *phase)
{
    int64_t now = drill_now_us();
    uint64_t acked;
    uint64_t errors;
    uint64_t reads;
    uint64_t violations;
    double rate = 0;

    pthread_mutex_lock(&ld->mu);
    acked = ld->n_acks;
    errors = ld->errors;
    reads = ld->reads;
    violations = ld->violations;
    pthread_mutex_unlock(&ld->mu);
    if (ld->last_progress_us != 0 && now > ld->last_progress_us) {
        rate = (double)(acked - ld->last_acked) * 1e6 /
               (double)(now - ld->last_progress_us);
    }
    ld->last_acked = acked;
    ld->last_progress_us = now;
    drill_say("%-9s acked %llu (%.0f/s), write errors %llu, reads %llu, "
              "violations %llu%s%s",
              phase, (unsigned long long)acked, rate,
              (unsigned long long)errors, (unsigned long long)reads,
              (unsigned long long)violations,
              errors > 0 ? "; last error " : "",
              errors > 0 ? ld->last_error : "");
}
