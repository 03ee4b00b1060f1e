/* Drill reports: the human table, JSON, the saved .json/.md pair, the
 * DrillRecord kept in the cluster (Drill/Record), and `drill history`.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "drill.h"

static void fmt_s(char *buf, size_t len, double s)
{
    if (s < 0) {
        snprintf(buf, len, "never");
    } else {
        snprintf(buf, len, "%.3f s", s);
    }
}

static void fmt_i(char *buf, size_t len, int64_t v, const char *none)
{
    if (v < 0) {
        snprintf(buf, len, "%s", none);
    } else {
        snprintf(buf, len, "%lld", (long long)v);
    }
}

static void history_text(const struct drill_result *r, char *buf, size_t len)
{
    if (r->violations == 0) {
        snprintf(buf, len, "ok: %llu linearizable reads, 0 violations",
                 (unsigned long long)r->reads);
    } else {
        snprintf(buf, len, "%llu violations in %llu reads: %s",
                 (unsigned long long)r->violations,
                 (unsigned long long)r->reads, r->violation_example);
    }
}

/* (label, value) rows shared by the table and the Markdown report. */
static int rows(const struct drill_result *r, char (*k)[40], char (*v)[300])
{
    char when[40];
    int n = 0;
    int i;

#define ROW(label, ...)                                                        \
    do {                                                                       \
        snprintf(k[n], 40, "%s", label);                                       \
        snprintf(v[n], 300, __VA_ARGS__);                                      \
        n++;                                                                   \
    } while (0)
    ops_time_format(r->started_at, when, sizeof(when));
    ROW("drill", "%s", r->drill_id);
    ROW("scenario", "%s (%s)", r->scenario, r->fault);
    ROW("target", "%s", r->target);
    ROW("started", "%s", when);
    ROW("fault", "%s", r->fault_detail[0] ? r->fault_detail : "-");
    ROW("result", "%s", r->passed ? "PASS" : "FAIL");
    fmt_s(v[n], 300, r->rto_write_s);
    snprintf(k[n++], 40, "RTO write");
    fmt_s(v[n], 300, r->rto_health_s);
    snprintf(k[n++], 40, "RTO health");
    for (i = 0; i < r->n_restarts; i++) {
        char w[32];
        char h[32];
        char label[40];

        fmt_s(w, sizeof(w), r->restarts[i].rto_write_s);
        fmt_s(h, sizeof(h), r->restarts[i].rto_health_s);
        snprintf(label, sizeof(label), "  restart node %llu",
                 (unsigned long long)r->restarts[i].node_id);
        ROW(label, "RTO write %s, RTO health %s", w, h);
    }
    fmt_i(v[n], 300, r->rpo_lost, "not measured");
    snprintf(k[n++], 40, "RPO (acked writes lost)");
    fmt_i(v[n], 300, r->doubled, "not measured");
    snprintf(k[n++], 40, "doubled writes");
    if (r->leaked >= 0) {
        ROW("changes after restore time", "%lld", (long long)r->leaked);
    }
    ROW("converged", "%s%s%.16s (index %llu)", r->converged ? "yes" : "NO",
        r->converged ? ", digest " : "", r->converged ? r->digest : "",
        (unsigned long long)r->digest_index);
    history_text(r, v[n], 300);
    snprintf(k[n++], 40, "history");
    ROW("writes", "%llu acked, %llu unknown, %llu attempts, %llu errors",
        (unsigned long long)r->acked, (unsigned long long)r->unknown,
        (unsigned long long)r->write_attempts,
        (unsigned long long)r->write_errors);
    ROW("reads", "%llu, %llu errors", (unsigned long long)r->reads,
        (unsigned long long)r->read_errors);
    ROW("elapsed", "%.1f s", r->elapsed_s);
    if (r->record_index != 0) {
        ROW("recorded", "Drill/Record at index %llu",
            (unsigned long long)r->record_index);
    } else if (r->record_error[0] != '\0') {
        ROW("recorded", "no: %s", r->record_error);
    }
    for (i = 0; i < r->n_failures; i++) {
        ROW(i == 0 ? "failures" : "", "%s", r->failures[i]);
    }
#undef ROW
    return n;
}

#define MAX_ROWS (32 + DRILL_MAX_NODES + DRILL_MAX_FAILURES)

void drill_report_table(const struct drill_result *r, FILE *out)
{
    static char k[MAX_ROWS][40];
    static char v[MAX_ROWS][300];
    int n = rows(r, k, v);
    int i;

    for (i = 0; i < n; i++) {
        fprintf(out, "%-26s %s\n", k[i], v[i]);
    }
}

json_t *drill_report_json(const struct drill_result *r)
{
    json_t *j = json_object();
    json_t *restarts = json_array();
    json_t *failures = json_array();
    char history[400];
    int i;

    if (j == NULL || restarts == NULL || failures == NULL) {
        json_decref(j);
        json_decref(restarts);
        json_decref(failures);
        return NULL;
    }
    history_text(r, history, sizeof(history));
    json_object_set_new(j, "drill_id", json_string(r->drill_id));
    json_object_set_new(j, "scenario", json_string(r->scenario));
    json_object_set_new(j, "fault", json_string(r->fault));
    json_object_set_new(j, "fault_detail", json_string(r->fault_detail));
    json_object_set_new(j, "target", json_string(r->target));
    json_object_set_new(j, "started_at", json_integer(r->started_at));
    json_object_set_new(j, "elapsed_s", json_real(r->elapsed_s));
    json_object_set_new(j, "nodes", json_integer(r->nodes));
    json_object_set_new(j, "passed", json_boolean(r->passed));
    json_object_set_new(j, "rto_write_s",
                        r->rto_write_s < 0 ? json_null()
                                           : json_real(r->rto_write_s));
    json_object_set_new(j, "rto_health_s",
                        r->rto_health_s < 0 ? json_null()
                                            : json_real(r->rto_health_s));
    json_object_set_new(j, "rpo_lost",
                        r->rpo_lost < 0 ? json_null()
                                        : json_integer(r->rpo_lost));
    json_object_set_new(j, "unchecked", json_integer(r->unchecked));
    json_object_set_new(j, "doubled",
                        r->doubled < 0 ? json_null()
                                       : json_integer(r->doubled));
    json_object_set_new(j, "leaked",
                        r->leaked < 0 ? json_null() : json_integer(r->leaked));
    json_object_set_new(j, "converged", json_boolean(r->converged));
    json_object_set_new(j, "digest", json_string(r->digest));
    json_object_set_new(j, "digest_index", json_integer((json_int_t)r->digest_index));
    json_object_set_new(j, "history_check", json_string(history));
    json_object_set_new(j, "violations",
                        json_integer((json_int_t)r->violations));
    json_object_set_new(j, "acked", json_integer((json_int_t)r->acked));
    json_object_set_new(j, "unknown", json_integer((json_int_t)r->unknown));
    json_object_set_new(j, "write_attempts",
                        json_integer((json_int_t)r->write_attempts));
    json_object_set_new(j, "write_errors",
                        json_integer((json_int_t)r->write_errors));
    json_object_set_new(j, "reads", json_integer((json_int_t)r->reads));
    json_object_set_new(j, "read_errors",
                        json_integer((json_int_t)r->read_errors));
    for (i = 0; i < r->n_restarts; i++) {
        const struct drill_restart *rs = &r->restarts[i];

        json_array_append_new(
            restarts,
            json_pack("{s:I,s:o,s:o}", "node_id", (json_int_t)rs->node_id,
                      "rto_write_s",
                      rs->rto_write_s < 0 ? json_null()
                                          : json_real(rs->rto_write_s),
                      "rto_health_s",
                      rs->rto_health_s < 0 ? json_null()
                                           : json_real(rs->rto_health_s)));
    }
    json_object_set_new(j, "restarts", restarts);
    for (i = 0; i < r->n_failures; i++) {
        json_array_append_new(failures, json_string(r->failures[i]));
    }
    json_object_set_new(j, "failures", failures);
    json_object_set_new(j, "error", json_string(r->error));
    json_object_set_new(j, "record_index",
                        json_integer((json_int_t)r->record_index));
    json_object_set_new(j, "record_error", json_string(r->record_error));
    return j;
}

static int mkdirs(const char *dir)
{
    char buf[PATH_MAX];
    char *p;

    if (snprintf(buf, sizeof(buf), "%s", dir) >= (int)sizeof(buf)) {
        errno = ENAMETOOLONG;
        return -1;
    }
    for (p = buf + 1; *p != '\0'; p++) {
        if (*p == '/') {
            *p = '\0';
            if (mkdir(buf, 0755) != 0 && errno != EEXIST) {
                return -1;
            }
            *p = '/';
        }
    }
    return mkdir(buf, 0755) != 0 && errno != EEXIST ? -1 : 0;
}

static int save_md(const struct drill_result *r, const char *path)
{
    static char k[MAX_ROWS][40];
    static char v[MAX_ROWS][300];
    FILE *f = fopen(path, "w");
    int n;
    int i;

    if (f == NULL) {
        return -1;
    }
    n = rows(r, k, v);
    fprintf(f, "# Drill %s: %s — %s\n\n", r->drill_id, r->scenario,
            r->passed ? "PASS" : "FAIL");
    fprintf(f, "| | |\n|---|---|\n");
    for (i = 0; i < n; i++) {
        char *c;

        for (c = v[i]; *c != '\0'; c++) {
            if (*c == '|') {
                *c = '/';
            }
        }
        fprintf(f, "| %s | %s |\n", k[i], v[i]);
    }
    fprintf(f, "\nRTO write: fault to the first acknowledged write sent after "
               "it. RTO health: fault to every member answering with one "
               "leader and applied >= the leader's commit. RPO: "
               "acknowledged writes not found with their token at the end.\n");
    return fclose(f);
}

int drill_report_save(const struct drill_result *r,
                      const char *dir,
                      char *paths,
                      size_t len)
{
    char path[PATH_MAX];
    json_t *j;
    int rv;

    if (mkdirs(dir) != 0) {
        snprintf(paths, len, "%s: %s", dir, strerror(errno));
        return -1;
    }
    snprintf(path, sizeof(path), "%s/%s.json", dir, r->drill_id);
    j = drill_report_json(r);
    rv = j != NULL ? json_dump_file(j, path, JSON_INDENT(2)) : -1;
    json_decref(j);
    if (rv != 0) {
        snprintf(paths, len, "%s: cannot write", path);
        return -1;
    }
    snprintf(path, sizeof(path), "%s/%s.md", dir, r->drill_id);
    if (save_md(r, path) != 0) {
        snprintf(paths, len, "%s: %s", path, strerror(errno));
        return -1;
    }
    snprintf(paths, len, "%s/%s.{json,md}", dir, r->drill_id);
    return 0;
}

int drill_report_record(struct drill_env *env, struct drill_result *r)
{
    Cityops__V1__DrillRecordRequest req =
        CITYOPS__V1__DRILL_RECORD_REQUEST__INIT;
    Cityops__V1__RequestContext ctx = CITYOPS__V1__REQUEST_CONTEXT__INIT;
    Cityops__V1__DrillRecord rec = CITYOPS__V1__DRILL_RECORD__INIT;
    ProtobufCMessage *resp = NULL;
    char history[400];
    char summary[600];
    char leader[64];
    struct drill_chan *ch;
    int status = GRPC_STATUS_UNAVAILABLE;
    int tries;
    int i;

    history_text(r, history, sizeof(history));
    snprintf(summary, sizeof(summary), "%s", r->fault_detail);
    for (i = 0; i < r->n_failures; i++) {
        size_t l = strlen(summary);

        snprintf(summary + l, sizeof(summary) - l, "; %s", r->failures[i]);
    }
    rec.drill_id = r->drill_id;
    rec.scenario = r->scenario;
    rec.started_at = r->started_at;
    rec.passed = r->passed;
    rec.rto_write_s = r->rto_write_s;
    rec.rto_health_s = r->rto_health_s;
    rec.rpo_lost = r->rpo_lost;
    rec.converged = r->converged;
    rec.history_check = history;
    rec.summary = summary;
    rec.target = r->target;
    rec.acked = r->acked;
    ctx.actor_id = "cityctl-drill";
    ctx.role = CITYOPS__V1__ROLE__ROLE_ADMIN;
    req.ctx = &ctx;
    req.record = &rec;
    r->record_error[0] = '\0';
    for (tries = 0; tries < 5; tries++) {
        ch = drill_leader(env, leader, sizeof(leader)) != 0
                 ? drill_env_chan(env, leader)
                 : env->chan[tries % env->n];
        if (ch == NULL) {
            ch = env->chan[0];
        }
        status = drill_call(ch, "Drill/Record", &req.base,
                            &cityops__v1__drill_record_reply__descriptor, 5000,
                            &resp, r->record_error, sizeof(r->record_error));
        if (status == GRPC_STATUS_OK) {
            r->record_index = ((Cityops__V1__DrillRecordReply *)resp)->index;
            protobuf_c_message_free_unpacked(resp, NULL);
            return 0;
        }
        if (status != GRPC_STATUS_UNAVAILABLE &&
            status != GRPC_STATUS_DEADLINE_EXCEEDED) {
            break;
        }
        drill_sleep_us(300000);
    }
    {
        char detail[160];

        snprintf(detail, sizeof(detail), "%.150s", r->record_error);
        snprintf(r->record_error, sizeof(r->record_error), "%.30s: %s",
                 rpc_status_name((grpc_status_code)status), detail);
    }
    return -1;
}

static int history_print(const Cityops__V1__DrillHistoryResponse *h)
{
    static const char *const headers[] = {
        "WHEN", "SCENARIO", "RESULT", "RTO WRITE", "RTO HEALTH",
        "RPO",  "CONVERGED", "HISTORY", "TARGET",
    };
    struct ops_table *t = ops_table_new(9, headers);
    size_t i;

    if (t == NULL) {
        return -1;
    }
    for (i = 0; i < h->n_drills; i++) {
        const Cityops__V1__DrillRecord *d = h->drills[i];
        char when[40];
        char w[32];
        char hs[32];
        char rpo[32];
        const char *cells[9];

        ops_time_format(d->started_at, when, sizeof(when));
        fmt_s(w, sizeof(w), d->rto_write_s);
        fmt_s(hs, sizeof(hs), d->rto_health_s);
        fmt_i(rpo, sizeof(rpo), d->rpo_lost, "-");
        cells[0] = when;
        cells[1] = d->scenario;
        cells[2] = d->passed ? "PASS" : "FAIL";
        cells[3] = w;
        cells[4] = hs;
        cells[5] = rpo;
        cells[6] = d->converged ? "yes" : "no";
        cells[7] = d->history_check;
        cells[8] = d->target;
        if (ops_table_add(t, cells) != 0) {
            ops_table_free(t);
            return -1;
        }
    }
    ops_table_print(t, stdout);
    ops_table_free(t);
    if (h->n_drills == 0) {
        printf("no drills recorded\n");
    }
    return 0;
}

int drill_history(struct ops_ctl *ctl)
{
    Cityops__V1__DrillHistoryRequest req =
        CITYOPS__V1__DRILL_HISTORY_REQUEST__INIT;
    Cityops__V1__ReadOptions read = CITYOPS__V1__READ_OPTIONS__INIT;
    ProtobufCMessage *resp = NULL;
    int rv;

    ops_read_fill(ctl, &read, CITYOPS__V1__CONSISTENCY__CONSISTENCY_STALE);
    req.read = &read;
    req.max = 50; /* the proto's default, said out loud */
    rv = ops_call(ctl, "Drill/History", &req.base,
                  &cityops__v1__drill_history_response__descriptor, &resp);
    if (rv != OPS_EXIT_OK) {
        return rv;
    }
    if (ctl->json) {
        json_t *j = ops_pb_to_json(resp);

        rv = j != NULL ? ops_json_print(j) : OPS_EXIT_FAIL;
    } else if (history_print((Cityops__V1__DrillHistoryResponse *)resp) !=
               0) {
        fprintf(stderr, "cityctl: out of memory\n");
        rv = OPS_EXIT_FAIL;
    }
    protobuf_c_message_free_unpacked(resp, NULL);
    return rv;
}
