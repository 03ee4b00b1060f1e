/* Evaluation at scale: fills a fresh store with N cases through
 * store_apply_batch() (nosync, batches of 256 commands) spread over the 12
 * months of 2026 and 50 departments, then times store_eval_report() for
 * one month and for the year (each grouping, median of 5) and
 * store_workload() (median of 5), then the command centre's list queries
 * (state, department, grid, overdue, deadline window, reported window;
 * page of 50, median of 5) after a tick. Also prints the fill rate, which
 * includes the evaluation counters apply keeps.
 *
 * The mix per case (by case number): every case is reported; 1 in 10 is
 * rejected; the rest are accepted, registered and dispatched; 1 in 20 is
 * returned and redispatched to another department; 1 in 50 stays open in
 * disposal; the others are disposed (1 in 4 after its deadline), 1 in 20
 * reworked after a failed check, 1 in 30 gets an extension, and closed.
 *
 * Usage: bench_eval [cases] [dir]   (default 1000000 /tmp)
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "storage/store.h"

#define BATCH 256
#define DEPTS 50
#define GRIDS 400
#define RUNS 5
#define S 1000000LL
#define T2026 1767196800000000LL /* 2026-01-01T00:00:00+08:00 */
#define YEAR_US (365LL * 86400 * S)

static const char SHA[] =
    "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

static double now_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* A pending batch of commands; every string lives in the arena below. */
struct batch {
    Cityops__V1__Command cmd[BATCH];
    Cityops__V1__Command *ptr[BATCH];
    union {
        Cityops__V1__ReportRequest report;
        Cityops__V1__CaseActionRequest action;
        Cityops__V1__RegisterRequest reg;
        Cityops__V1__DispatchRequest dispatch;
        Cityops__V1__ReportDisposalRequest disposal;
        Cityops__V1__RequestCheckRequest rcheck;
        Cityops__V1__CheckRequest check;
        Cityops__V1__CloseRequest close;
        Cityops__V1__RequestExtensionRequest rext;
        Cityops__V1__DecideExtensionRequest dext;
    } req[BATCH];
    char dept[BATCH][16];
    char grid[BATCH][20];
    size_t n;
};

struct bench {
    struct store *s;
    struct batch b;
    uint64_t index;
    uint64_t commands;
    uint64_t next_case;
    Cityops__V1__Location loc[BATCH];
    Cityops__V1__Attachment att;
    Cityops__V1__Attachment *attp;
};

static void flush(struct bench *x)
{
    Cityops__V1__CommandBatch cb = CITYOPS__V1__COMMAND_BATCH__INIT;
    struct store_results res;
    size_t len;
    uint8_t *buf;

    if (x->b.n == 0) {
        return;
    }
    cb.n_commands = x->b.n;
    cb.commands = x->b.ptr;
    len = cityops__v1__command_batch__get_packed_size(&cb);
    buf = malloc(len);
    if (buf == NULL) {
        exit(1);
    }
    cityops__v1__command_batch__pack(&cb, buf);
    if (store_apply_batch(x->s, ++x->index, buf, len, &res) != 0) {
        fprintf(stderr, "apply: %s\n", store_errmsg(x->s));
        exit(1);
    }
    for (size_t i = 0; i < res.n; i++) {
        if (res.results[i]->code != 0) {
            fprintf(stderr, "command %zu refused: %s\n", i,
                    res.results[i]->message);
            exit(1);
        }
    }
    store_results_free(&res);
    free(buf);
    x->commands += x->b.n;
    x->b.n = 0;
}

static Cityops__V1__Command *
next(struct bench *x, int64_t at, Cityops__V1__Role role, const char *actor)
{
    Cityops__V1__Command *c;

    if (x->b.n == BATCH) {
        flush(x);
    }
    c = &x->b.cmd[x->b.n];
    cityops__v1__command__init(c);
    x->b.ptr[x->b.n] = c;
    c->time = at;
    c->role = role;
    c->actor_id = (char *)actor;
    x->b.n++;
    return c;
}

#define REQ(x) (&(x)->b.req[(x)->b.n - 1])
#define R(r) CITYOPS__V1__ROLE__ROLE_##r
#define OP(o) CITYOPS__V1__COMMAND__OP_##o

static void action(struct bench *x,
                   int64_t at,
                   int op,
                   uint64_t id,
                   Cityops__V1__Role role,
                   const char *actor)
{
    Cityops__V1__Command *c = next(x, at, role, actor);
    Cityops__V1__CaseActionRequest *a = &REQ(x)->action;

    cityops__v1__case_action_request__init(a);
    a->case_id = id;
    a->reason = "reason";
    c->op_case = op;
    switch (op) {
    case OP(ACCEPT):
        c->accept = a;
        break;
    case OP(REJECT):
        c->reject = a;
        break;
    case OP(START_DISPOSAL):
        c->start_disposal = a;
        break;
    case OP(RETURN):
        c->return_ = a;
        break;
    default:
        c->rework = a;
        break;
    }
}

static void dispatch(struct bench *x,
                     int64_t at,
                     uint64_t id,
                     int dept,
                     int64_t deadline,
                     int re)
{
    Cityops__V1__Command *c = next(x, at, R(DISPATCHER), "disp");
    Cityops__V1__DispatchRequest *d = &REQ(x)->dispatch;

    cityops__v1__dispatch_request__init(d);
    snprintf(x->b.dept[x->b.n - 1], 16, "dept-%02d", dept);
    d->case_id = id;
    d->department_id = x->b.dept[x->b.n - 1];
    d->disposal_deadline = deadline;
    c->op_case = re ? OP(REDISPATCH) : OP(DISPATCH);
    if (re) {
        c->redispatch = d;
    } else {
        c->dispatch = d;
    }
}

static void one_case(struct bench *x, uint64_t i, int64_t t)
{
    uint64_t id = x->next_case++;
    int dept = (int)((i * 7 + i / 50) % DEPTS);
    Cityops__V1__Command *c;
    int64_t step = 0;
    int checks = i % 20 == 3 ? 2 : 1;

#define AT (t + (step++) * S)
    c = next(x, AT, R(INSPECTOR), "insp");
    cityops__v1__report_request__init(&REQ(x)->report);
    snprintf(x->b.grid[x->b.n - 1], 20, "110101%03d%03d01",
             (int)(i % GRIDS / 20), (int)(i % GRIDS));
    x->loc[x->b.n - 1].grid_code = x->b.grid[x->b.n - 1];
    REQ(x)->report.location = &x->loc[x->b.n - 1];
    REQ(x)->report.category_type =
        CITYOPS__V1__CATEGORY_TYPE__CATEGORY_TYPE_EVENT;
    REQ(x)->report.major_code = "01";
    REQ(x)->report.minor_code = "02";
    REQ(x)->report.description = "bench";
    REQ(x)->report.n_attachments = 1;
    REQ(x)->report.attachments = &x->attp;
    c->op_case = OP(REPORT);
    c->report = &REQ(x)->report;
    if (i % 10 == 1) {
        action(x, AT, OP(REJECT), id, R(INTAKE_CLERK), "clerk");
        return;
    }
    action(x, AT, OP(ACCEPT), id, R(INTAKE_CLERK), "clerk");
    c = next(x, AT, R(SHIFT_LEADER), "leader");
    cityops__v1__register_request__init(&REQ(x)->reg);
    REQ(x)->reg.case_id = id;
    c->op_case = OP(REGISTER);
    c->register_ = &REQ(x)->reg;
    dispatch(x, AT, id, dept, t + (i % 4 == 0 ? 6 : 100) * S, 0);
    if (i % 20 == 7) {
        action(x, AT, OP(RETURN), id, R(DEPARTMENT), "dept");
        dept = (dept + 1) % DEPTS;
        dispatch(x, AT, id, dept, 0, 1);
    }
    action(x, AT, OP(START_DISPOSAL), id, R(DEPARTMENT), "dept");
    if (i % 50 == 9) {
        return; /* stays in disposal */
    }
    if (i % 30 == 11) {
        c = next(x, AT, R(DEPARTMENT), "dept");
        cityops__v1__request_extension_request__init(&REQ(x)->rext);
        REQ(x)->rext.case_id = id;
        REQ(x)->rext.until = t + 200 * S;
        REQ(x)->rext.reason = "parts";
        c->op_case = OP(REQUEST_EXTENSION);
        c->request_extension = &REQ(x)->rext;
        c = next(x, AT, R(SHIFT_LEADER), "leader");
        cityops__v1__decide_extension_request__init(&REQ(x)->dext);
        REQ(x)->dext.case_id = id;
        REQ(x)->dext.approve = 1;
        c->op_case = OP(DECIDE_EXTENSION);
        c->decide_extension = &REQ(x)->dext;
    }
    for (int k = 0; k < checks; k++) {
        c = next(x, AT, R(DEPARTMENT), "dept");
        cityops__v1__report_disposal_request__init(&REQ(x)->disposal);
        REQ(x)->disposal.case_id = id;
        REQ(x)->disposal.n_attachments = 1;
        REQ(x)->disposal.attachments = &x->attp;
        c->op_case = OP(REPORT_DISPOSAL);
        c->report_disposal = &REQ(x)->disposal;
        c = next(x, AT, R(DISPATCHER), "disp");
        cityops__v1__request_check_request__init(&REQ(x)->rcheck);
        REQ(x)->rcheck.case_id = id;
        REQ(x)->rcheck.inspector_id = "insp";
        c->op_case = OP(REQUEST_CHECK);
        c->request_check = &REQ(x)->rcheck;
        c = next(x, AT, R(INSPECTOR), "insp");
        cityops__v1__check_request__init(&REQ(x)->check);
        REQ(x)->check.case_id = id;
        REQ(x)->check.passed = k == checks - 1;
        c->op_case = OP(CHECK);
        c->check = &REQ(x)->check;
        if (k < checks - 1) {
            action(x, AT, OP(REWORK), id, R(SHIFT_LEADER), "leader");
        }
    }
    c = next(x, AT, R(SHIFT_LEADER), "leader");
    cityops__v1__close_request__init(&REQ(x)->close);
    REQ(x)->close.case_id = id;
    c->op_case = OP(CLOSE);
    c->close = &REQ(x)->close;
#undef AT
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a;
    double y = *(const double *)b;

    return x < y ? -1 : x > y;
}

static double
time_report(struct store *s, const char *period, const char *by, size_t *rows)
{
    Cityops__V1__EvalRequest req = CITYOPS__V1__EVAL_REQUEST__INIT;
    double t[RUNS];

    req.period = (char *)period;
    req.group_by = (char *)by;
    for (int r = 0; r < RUNS; r++) {
        Cityops__V1__EvalReport *rep = NULL;
        double t0 = now_s();

        if (store_eval_report(s, &req, &rep) != 0) {
            fprintf(stderr, "report: %s\n", store_errmsg(s));
            exit(1);
        }
        t[r] = now_s() - t0;
        *rows = rep->n_rows;
        cityops__v1__eval_report__free_unpacked(rep, NULL);
    }
    qsort(t, RUNS, sizeof(t[0]), cmp_double);
    return t[RUNS / 2];
}

/* The command centre's list queries (page of 50), median of RUNS. */
static double time_list(struct store *s,
                        const Cityops__V1__ListRequest *q,
                        size_t *n)
{
    double t[RUNS];

    for (int r = 0; r < RUNS; r++) {
        Cityops__V1__ListResponse *resp = NULL;
        double t0 = now_s();

        if (store_case_list(s, q, &resp) != 0) {
            fprintf(stderr, "list: %s\n", store_errmsg(s));
            exit(1);
        }
        t[r] = now_s() - t0;
        *n = resp->n_cases;
        cityops__v1__list_response__free_unpacked(resp, NULL);
    }
    qsort(t, RUNS, sizeof(t[0]), cmp_double);
    return t[RUNS / 2];
}

static void time_queries(struct bench *x)
{
    struct {
        const char *name;
        Cityops__V1__ListRequest q;
    } qs[7];
    Cityops__V1__Command *c;
    Cityops__V1__Tick tick = CITYOPS__V1__TICK__INIT;
    double t0;

    /* the leader's tick at the end of the year marks what is late (at
     * most 1000 stages per tick) */
    c = next(x, T2026 + YEAR_US, R(SYSTEM), "cityopsd");
    c->op_case = OP(TICK);
    c->tick = &tick;
    t0 = now_s();
    flush(x);
    printf("tick (up to 1000 overdue stages): %.1f ms\n",
           (now_s() - t0) * 1e3);
    for (int i = 0; i < 7; i++) {
        cityops__v1__list_request__init(&qs[i].q);
        qs[i].q.page_size = 50;
    }
    qs[0].name = "state IN_DISPOSAL";
    qs[0].q.state = CITYOPS__V1__CASE_STATE__CASE_STATE_IN_DISPOSAL;
    qs[1].name = "department dept-07";
    qs[1].q.department_id = "dept-07";
    qs[2].name = "grid 11010100000501";
    qs[2].q.grid_code = "11010100000501";
    qs[3].name = "overdue";
    qs[3].q.overdue_only = 1;
    qs[4].name = "deadline in one day";
    qs[4].q.deadline_from = T2026 + YEAR_US / 2;
    qs[4].q.deadline_to = T2026 + YEAR_US / 2 + 86400LL * 1000000;
    qs[5].name = "reported in one day";
    qs[5].q.reported_from = T2026 + YEAR_US / 2;
    qs[5].q.reported_to = T2026 + YEAR_US / 2 + 86400LL * 1000000;
    qs[6].name = "dept-07 + IN_DISPOSAL";
    qs[6].q.department_id = "dept-07";
    qs[6].q.state = CITYOPS__V1__CASE_STATE__CASE_STATE_IN_DISPOSAL;
    for (int i = 0; i < 7; i++) {
        size_t n = 0;
        double m = time_list(x->s, &qs[i].q, &n);
        printf("list %-24s median %8.3f ms (%zu cases)\n", qs[i].name,
               m * 1e3, n);
    }
}

int main(int argc, char **argv)
{
    uint64_t n = argc > 1 ? strtoull(argv[1], NULL, 10) : 1000000;
    const char *base = argc > 2 ? argv[2] : "/tmp";
    struct store_options opts = {.map_size = (size_t)64 << 30, .nosync = 1};
    static const char *const kinds[] = {"department", "district", "grid"};
    static struct bench x;
    char dir[512];
    double t0;
    double fill;
    double tw[RUNS];

    snprintf(dir, sizeof(dir), "%s/cityops-bench-eval-XXXXXX", base);
    if (mkdtemp(dir) == NULL || store_open(dir, &opts, &x.s) != 0) {
        perror("store");
        return 1;
    }
    cityops__v1__attachment__init(&x.att);
    x.att.sha256 = (char *)SHA;
    x.att.uri = "s3://e/1.jpg";
    x.attp = &x.att;
    for (int i = 0; i < BATCH; i++) {
        cityops__v1__location__init(&x.loc[i]);
        x.loc[i].lon = 116.4;
        x.loc[i].lat = 39.9;
    }
    x.next_case = 1;
    t0 = now_s();
    for (uint64_t i = 0; i < n; i++) {
        one_case(&x, i, T2026 + (int64_t)(i * (YEAR_US / (int64_t)n)));
        if ((i + 1) % 100000 == 0) {
            fprintf(stderr, "%llu cases, %.0f s\n", (unsigned long long)i + 1,
                    now_s() - t0);
        }
    }
    flush(&x);
    store_sync(x.s);
    fill = now_s() - t0;
    printf("fill: %llu cases, %llu commands in %.1f s (%.0f commands/s)\n",
           (unsigned long long)n, (unsigned long long)x.commands, fill,
           (double)x.commands / fill);
    for (int k = 0; k < 3; k++) {
        size_t rows;
        double m = time_report(x.s, "2026-06", kinds[k], &rows);
        double y;
        size_t yrows;

        y = time_report(x.s, "2026", kinds[k], &yrows);
        printf("report by %-10s month %8.3f ms (%zu rows)  year %8.3f ms "
               "(%zu rows)\n",
               kinds[k], m * 1e3, rows, y * 1e3, yrows);
    }
    for (int r = 0; r < RUNS; r++) {
        Cityops__V1__WorkloadResponse *w = NULL;
        double t1 = now_s();

        if (store_workload(x.s, &w) != 0) {
            return 1;
        }
        tw[r] = now_s() - t1;
        if (r == 0) {
            printf("workload: %zu departments\n", w->n_departments);
        }
        cityops__v1__workload_response__free_unpacked(w, NULL);
    }
    qsort(tw, RUNS, sizeof(tw[0]), cmp_double);
    printf("workload median %.3f ms\n", tw[RUNS / 2] * 1e3);
    time_queries(&x);
    store_close(x.s);
    {
        char cmd[600];

        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
        if (system(cmd) != 0) {
            fprintf(stderr, "could not remove %s\n", dir);
        }
    }
    return 0;
}
