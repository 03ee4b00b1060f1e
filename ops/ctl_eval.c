/* cityctl eval ...: the comprehensive evaluation report of a period and
 * the command centre's workload view (cityops.v1.Eval). Both are reads:
 * stale by default (any node answers from its own applied state; the reply
 * says at which index), --consistency linearizable for the leader's now.
 *
 * The report prints one row per object: key counts, every indicator the
 * row carries as a percentage ("-" when its denominator is zero or the
 * object is not charged with it), the overdue backlog, score and grade.
 */
#include <math.h>
#include <string.h>

#include "cityops/v1/eval.pb-c.h"
#include "ops.h"

/* Indicator columns, in the order the nodes send them. */
static const char *const ind_codes[] = {
    "disposal_rate",        "ontime_disposal_rate", "closure_rate",
    "ontime_closure_rate",  "rework_rate",          "extension_rate",
    "ontime_register_rate", "dispatch_accuracy",    "valid_report_rate",
};
#define N_IND (sizeof(ind_codes) / sizeof(ind_codes[0]))

/* At most 16 columns (ops_table): the key counts are reported, disposed
 * and closed; --json has them all. */
static const char *const report_headers[] = {
    "OBJECT",   "REPORTED",    "DISPOSED",   "CLOSED",
    "DISPOSAL", "ONTIME-DISP", "CLOSURE",    "ONTIME-CLOSE",
    "REWORK",   "EXTENSION",   "ONTIME-REG", "DISPATCH-ACC",
    "VALID",    "BACKLOG",     "SCORE",      "GRADE",
};
#define N_COLS (sizeof(report_headers) / sizeof(report_headers[0]))

static const Cityops__V1__Indicator *find_ind(const Cityops__V1__EvalRow *r,
                                              const char *code)
{
    for (size_t i = 0; i < r->n_indicators; i++) {
        if (strcmp(r->indicators[i]->code, code) == 0) {
            return r->indicators[i];
        }
    }
    return NULL;
}

static int report_row(struct ops_table *t, const Cityops__V1__EvalRow *r)
{
    static const Cityops__V1__EvalCounts zero = CITYOPS__V1__EVAL_COUNTS__INIT;
    const Cityops__V1__EvalCounts *c = r->counts != NULL ? r->counts : &zero;
    const Cityops__V1__Indicator *backlog = find_ind(r, "overdue_backlog");
    char num[3][24];
    char obj[2 * 130];
    char pct[N_IND][16];
    char blog[24];
    char score[24];
    const char *cells[N_COLS];
    size_t k = 0;

    snprintf(num[0], sizeof(num[0]), "%llu", (unsigned long long)c->reported);
    snprintf(num[1], sizeof(num[1]), "%llu", (unsigned long long)c->disposed);
    snprintf(num[2], sizeof(num[2]), "%llu", (unsigned long long)c->closed);
    if (strcmp(r->object_name, r->object_id) == 0 || r->object_name[0] == 0) {
        snprintf(obj, sizeof(obj), "%s", r->object_id);
    } else {
        snprintf(obj, sizeof(obj), "%s (%s)", r->object_id, r->object_name);
    }
    cells[k++] = obj;
    for (int i = 0; i < 3; i++) {
        cells[k++] = num[i];
    }
    for (size_t i = 0; i < N_IND; i++) {
        const Cityops__V1__Indicator *ind = find_ind(r, ind_codes[i]);

        if (ind != NULL && ind->defined) {
            snprintf(pct[i], sizeof(pct[i]), "%.1f%%", 100.0 * ind->value);
        } else {
            snprintf(pct[i], sizeof(pct[i]), "-");
        }
        cells[k++] = pct[i];
    }
    if (backlog != NULL) {
        snprintf(blog, sizeof(blog), "%.0f", backlog->value);
    } else {
        snprintf(blog, sizeof(blog), "-");
    }
    cells[k++] = blog;
    if (strcmp(r->grade, "-") == 0) {
        snprintf(score, sizeof(score), "-");
    } else {
        snprintf(score, sizeof(score), "%.2f", r->score);
    }
    cells[k++] = score;
    cells[k++] = r->grade;
    return ops_table_add(t, cells);
}

static int report_print(const Cityops__V1__EvalReport *rep)
{
    struct ops_table *t;
    char from[40];
    char to[40];

    ops_time_format(rep->period_start, from, sizeof(from));
    ops_time_format(rep->period_end, to, sizeof(to));
    printf("evaluation %s by %s: [%s, %s), config version %llu, applied "
           "index %llu, audit size %llu\n",
           rep->period, rep->group_by, from, to,
           (unsigned long long)rep->config_version,
           (unsigned long long)rep->applied_index,
           (unsigned long long)rep->audit_size);
    if (rep->n_rows == 0) {
        printf("no events in this period\n");
        return 0;
    }
    t = ops_table_new((int)N_COLS, report_headers);
    if (t == NULL) {
        return OPS_NOMEM;
    }
    for (size_t i = 0; i < rep->n_rows; i++) {
        if (report_row(t, rep->rows[i]) != 0) {
            ops_table_free(t);
            return OPS_NOMEM;
        }
    }
    ops_table_print(t, stdout);
    ops_table_free(t);
    return 0;
}

static const char *const load_headers[] = {
    "DEPARTMENT", "DISPATCHED", "IN-DISPOSAL",
    "RETURNED",   "OVERDUE",    "SUPERVISED",
};

static int workload_print(const Cityops__V1__WorkloadResponse *w)
{
    struct ops_table *t;

    printf("open cases per department at applied index %llu\n",
           (unsigned long long)w->applied_index);
    if (w->n_departments == 0) {
        printf("no open cases with a department\n");
        return 0;
    }
    t = ops_table_new(6, load_headers);
    if (t == NULL) {
        return OPS_NOMEM;
    }
    for (size_t i = 0; i < w->n_departments; i++) {
        const Cityops__V1__DepartmentLoad *d = w->departments[i];
        char v[5][24];
        const char *cells[6];

        snprintf(v[0], sizeof(v[0]), "%llu", (unsigned long long)d->dispatched);
        snprintf(v[1], sizeof(v[1]), "%llu",
                 (unsigned long long)d->in_disposal);
        snprintf(v[2], sizeof(v[2]), "%llu", (unsigned long long)d->returned);
        snprintf(v[3], sizeof(v[3]), "%llu", (unsigned long long)d->overdue);
        snprintf(v[4], sizeof(v[4]), "%llu", (unsigned long long)d->supervised);
        cells[0] = d->department_id;
        for (int j = 0; j < 5; j++) {
            cells[j + 1] = v[j];
        }
        if (ops_table_add(t, cells) != 0) {
            ops_table_free(t);
            return OPS_NOMEM;
        }
    }
    ops_table_print(t, stdout);
    ops_table_free(t);
    return 0;
}

/* Call @method and print the answer with @print, or as JSON. */
static int call_print(struct ops_ctl *ctl,
                      const char *method,
                      const ProtobufCMessage *req,
                      const ProtobufCMessageDescriptor *desc,
                      int (*print)(const ProtobufCMessage *))
{
    ProtobufCMessage *resp = NULL;
    int rv;

    rv = ops_call(ctl, method, req, desc, &resp);
    if (rv != OPS_EXIT_OK) {
        return rv;
    }
    if (ctl->json) {
        json_t *j = ops_pb_to_json(resp);

        rv = j != NULL ? ops_json_print(j) : OPS_EXIT_FAIL;
    } else if (print(resp) != 0) {
        fprintf(stderr, "cityctl: out of memory\n");
        rv = OPS_EXIT_FAIL;
    }
    protobuf_c_message_free_unpacked(resp, NULL);
    return rv;
}

static int print_report(const ProtobufCMessage *m)
{
    return report_print((const Cityops__V1__EvalReport *)m);
}

static int print_workload(const ProtobufCMessage *m)
{
    return workload_print((const Cityops__V1__WorkloadResponse *)m);
}

static int run_report(struct ops_ctl *ctl, const struct ops_args *a)
{
    Cityops__V1__EvalRequest req = CITYOPS__V1__EVAL_REQUEST__INIT;
    Cityops__V1__ReadOptions read = CITYOPS__V1__READ_OPTIONS__INIT;
    char *period = ops_arg(a, "period");
    char *by = ops_arg(a, "by");

    if (a->n_pos > 2) {
        return ops_usage_error(ctl, "eval report: unexpected argument '%s'",
                               a->pos[2]);
    }
    if (period == NULL) {
        return ops_usage_error(ctl, "eval report: --period YYYY-MM, YYYY-Qn "
                                    "or YYYY is required");
    }
    if (by != NULL && strcmp(by, "department") != 0 &&
        strcmp(by, "district") != 0 && strcmp(by, "grid") != 0) {
        return ops_usage_error(ctl,
                               "eval report: --by department, district "
                               "or grid, not '%s'",
                               by);
    }
    ops_read_fill(ctl, &read, CITYOPS__V1__CONSISTENCY__CONSISTENCY_STALE);
    req.read = &read;
    req.period = period;
    req.group_by = by != NULL ? by : "department";
    return call_print(ctl, "Eval/Report", &req.base,
                      &cityops__v1__eval_report__descriptor, print_report);
}

static int run_workload(struct ops_ctl *ctl, const struct ops_args *a)
{
    Cityops__V1__WorkloadRequest req = CITYOPS__V1__WORKLOAD_REQUEST__INIT;
    Cityops__V1__ReadOptions read = CITYOPS__V1__READ_OPTIONS__INIT;

    if (a->n_pos > 2) {
        return ops_usage_error(ctl, "eval workload: unexpected argument '%s'",
                               a->pos[2]);
    }
    ops_read_fill(ctl, &read, CITYOPS__V1__CONSISTENCY__CONSISTENCY_STALE);
    req.read = &read;
    return call_print(ctl, "Eval/Workload", &req.base,
                      &cityops__v1__workload_response__descriptor,
                      print_workload);
}

const char *ctl_eval_options(const char *sub)
{
    if (strcmp(sub, "report") == 0) {
        return "period by";
    }
    if (strcmp(sub, "workload") == 0) {
        return "";
    }
    return NULL;
}

int ctl_eval_run(struct ops_ctl *ctl, const struct ops_args *a)
{
    if (strcmp(a->pos[1], "report") == 0) {
        return run_report(ctl, a);
    }
    return run_workload(ctl, a);
}
