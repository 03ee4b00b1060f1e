/* Unit tests of the evaluation report and the workload view (eval.c)
 * through store.h: a hand-built set of cases applied with real Command
 * batches through store_apply_batch(), every indicator checked against
 * numbers worked out by hand below, the gauge of a past month, the same
 * log replayed into a twin store giving byte-identical reports, and the
 * period, grade and score rules.
 *
 * The scenario (times in UTC+8, 2026). Configuration: category EVENT 01-02
 * with condition c1 (registration within 2 emergency hours of acceptance),
 * departments water and roads, district d1 > street s1 > grid A
 * (11010100100101); grid B (11010100200201) is not configured, so its
 * district is its first 9 digits, 110101002.
 *
 *   case 1 (A) registered on time, water, disposed 10-08 before its
 *              10-10 deadline, checked, closed: all on time
 *   case 2 (A) registered late (3 h), water, disposed 10-12 after its
 *              10-10 deadline, closed: late
 *   case 3 (B) roads, disposed, check failed, rework, disposed again,
 *              closed: two disposals, one rework, on time
 *   case 4 (B) water, returned by water, redispatched to roads (a wrong
 *              dispatch charged to water), extension approved, disposed,
 *              closed on time
 *   case 5 (A) reported, rejected: not a valid report
 *   case 6 (A) water with deadline 10-25; the tick of 10-28 marks its
 *              disposal overdue (and supervises it); disposed 11-03, late
 *   case 7 (B) reported, merged into case 6: not a valid report
 *   case 8 (B) roads, shelved in disposal: out of every denominator
 *   case 9 (A) November: registered on time, dispatched to roads, open
 */
#include <dirent.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "storage/store.h"

#define K(x) CITYOPS__V1__COMMAND__OP_##x
#define R(x) CITYOPS__V1__ROLE__ROLE_##x
#define EPS 1e-6

#define GRID_A "11010100100101"
#define GRID_B "11010100200201"

static const char SHA[] =
    "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

struct fx {
    char dir[64];
    struct store *s;
    uint64_t index;
    int64_t time;
    void **log;
    size_t *log_len;
    size_t n_log;
};

/* UTC us of 2026-@m-@d @h:00 in UTC+8. */
static int64_t T(int m, int d, int h)
{
    struct tm tm = {0};

    tm.tm_year = 2026 - 1900;
    tm.tm_mon = m - 1;
    tm.tm_mday = d;
    tm.tm_hour = h;
    return ((int64_t)timegm(&tm) - 8 * 3600) * 1000000LL;
}

static void dir_remove(const char *dir)
{
    char path[512];
    struct dirent *de;
    DIR *d = opendir(dir);

    if (d != NULL) {
        while ((de = readdir(d)) != NULL) {
            if (de->d_name[0] != '.') {
                snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
                unlink(path);
            }
        }
        closedir(d);
    }
    rmdir(dir);
}

static struct fx *fx_new(void)
{
    struct store_options opts = {0};
    struct fx *f = calloc(1, sizeof(*f));

    assert_non_null(f);
    strcpy(f->dir, "/tmp/cityops-eval-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    assert_int_equal(store_open(f->dir, &opts, &f->s), 0);
    return f;
}

static void fx_free(struct fx *f)
{
    store_close(f->s);
    dir_remove(f->dir);
    for (size_t i = 0; i < f->n_log; i++) {
        free(f->log[i]);
    }
    free(f->log);
    free(f->log_len);
    free(f);
}

/* Apply @cmd alone in a batch at the next index and time @at; the command
 * must succeed. Returns the case id of the result (0 if none). */
static uint64_t fx_run(struct fx *f,
                       Cityops__V1__Command *cmd,
                       int64_t at,
                       Cityops__V1__Role role,
                       const char *actor)
{
    Cityops__V1__CommandBatch b = CITYOPS__V1__COMMAND_BATCH__INIT;
    struct store_results res;
    uint64_t id = 0;
    size_t len;
    uint8_t *buf;

    assert_true(at >= f->time);
    f->time = at;
    cmd->time = at;
    cmd->role = role;
    cmd->actor_id = (char *)actor;
    b.n_commands = 1;
    b.commands = &cmd;
    len = cityops__v1__command_batch__get_packed_size(&b);
    buf = malloc(len);
    assert_non_null(buf);
    cityops__v1__command_batch__pack(&b, buf);
    assert_int_equal(store_apply_batch(f->s, ++f->index, buf, len, &res), 0);
    assert_int_equal(res.n, 1);
    if (res.results[0]->code != CITYOPS__V1__RESULT_CODE__RESULT_OK) {
        fail_msg("command %d at %lld: %s", (int)cmd->op_case, (long long)at,
                 res.results[0]->message);
    }
    if (res.results[0]->case_ != NULL) {
        id = res.results[0]->case_->case_id;
    }
    store_results_free(&res);
    f->log = realloc(f->log, (f->n_log + 1) * sizeof(*f->log));
    f->log_len = realloc(f->log_len, (f->n_log + 1) * sizeof(*f->log_len));
    assert_non_null(f->log);
    assert_non_null(f->log_len);
    f->log[f->n_log] = buf;
    f->log_len[f->n_log] = len;
    f->n_log++;
    return id;
}

static void fx_replay(const struct fx *f, struct fx *g)
{
    struct store_results res;

    for (size_t i = 0; i < f->n_log; i++) {
        assert_int_equal(
            store_apply_batch(g->s, i + 1, f->log[i], f->log_len[i], &res), 0);
        store_results_free(&res);
    }
}

/* --- commands --- */

static uint64_t do_report(struct fx *f, int64_t at, const char *grid)
{
    Cityops__V1__Command c = CITYOPS__V1__COMMAND__INIT;
    Cityops__V1__ReportRequest r = CITYOPS__V1__REPORT_REQUEST__INIT;
    Cityops__V1__Location loc = CITYOPS__V1__LOCATION__INIT;
    Cityops__V1__Attachment att = CITYOPS__V1__ATTACHMENT__INIT;
    Cityops__V1__Attachment *ap = &att;

    loc.lon = 116.4;
    loc.lat = 39.9;
    loc.grid_code = (char *)grid;
    att.sha256 = (char *)SHA;
    att.uri = "s3://evidence/report.jpg";
    r.category_type = CITYOPS__V1__CATEGORY_TYPE__CATEGORY_TYPE_EVENT;
    r.major_code = "01";
    r.minor_code = "02";
    r.description = "overflowing bin";
    r.location = &loc;
    r.n_attachments = 1;
    r.attachments = &ap;
    c.op_case = K(REPORT);
    c.report = &r;
    return fx_run(f, &c, at, R(INSPECTOR), "insp-1");
}

/* The CaseActionRequest commands: accept, reject, start_disposal, return,
 * rework, shelve. */
static void do_action(struct fx *f,
                      int64_t at,
                      Cityops__V1__Command__OpCase op,
                      uint64_t id,
                      Cityops__V1__Role role,
                      const char *actor)
{
    Cityops__V1__Command c = CITYOPS__V1__COMMAND__INIT;
    Cityops__V1__CaseActionRequest a = CITYOPS__V1__CASE_ACTION_REQUEST__INIT;

    a.case_id = id;
    a.reason = "a reason";
    c.op_case = op;
    switch (op) {
    case K(ACCEPT):
        c.accept = &a;
        break;
    case K(REJECT):
        c.reject = &a;
        break;
    case K(START_DISPOSAL):
        c.start_disposal = &a;
        break;
    case K(RETURN):
        c.return_ = &a;
        break;
    case K(REWORK):
        c.rework = &a;
        break;
    default:
        c.shelve = &a;
        break;
    }
    fx_run(f, &c, at, role, actor);
}

static void do_register(struct fx *f, int64_t at, uint64_t id)
{
    Cityops__V1__Command c = CITYOPS__V1__COMMAND__INIT;
    Cityops__V1__RegisterRequest r = CITYOPS__V1__REGISTER_REQUEST__INIT;

    r.case_id = id;
    r.condition = "c1";
    c.op_case = K(REGISTER);
    c.register_ = &r;
    fx_run(f, &c, at, R(SHIFT_LEADER), "leader-1");
}

static void do_dispatch(struct fx *f,
                        int64_t at,
                        uint64_t id,
                        const char *dept,
                        int64_t deadline,
                        int redispatch)
{
    Cityops__V1__Command c = CITYOPS__V1__COMMAND__INIT;
    Cityops__V1__DispatchRequest d = CITYOPS__V1__DISPATCH_REQUEST__INIT;

    d.case_id = id;
    d.department_id = (char *)dept;
    d.level = CITYOPS__V1__DISPATCH_LEVEL__DISPATCH_LEVEL_CITY;
    d.disposal_deadline = deadline;
    d.reason = "wrong unit";
    c.op_case = redispatch ? K(REDISPATCH) : K(DISPATCH);
    if (redispatch) {
        c.redispatch = &d;
    } else {
        c.dispatch = &d;
    }
    fx_run(f, &c, at, R(DISPATCHER), "disp-1");
}

static void do_dispose(struct fx *f, int64_t at, uint64_t id, const char *dept)
{
    Cityops__V1__Command c = CITYOPS__V1__COMMAND__INIT;
    Cityops__V1__ReportDisposalRequest r =
        CITYOPS__V1__REPORT_DISPOSAL_REQUEST__INIT;
    Cityops__V1__Attachment att = CITYOPS__V1__ATTACHMENT__INIT;
    Cityops__V1__Attachment *ap = &att;

    att.sha256 = (char *)SHA;
    att.uri = "s3://evidence/done.jpg";
    r.case_id = id;
    r.n_attachments = 1;
    r.attachments = &ap;
    c.op_case = K(REPORT_DISPOSAL);
    c.report_disposal = &r;
    fx_run(f, &c, at, R(DEPARTMENT), dept);
}

/* REQUEST_CHECK, CHECK_RESULT (@pass) and, if it passed, CLOSE: at @at,
 * one hour apart. */
static void do_check(struct fx *f, int64_t at, uint64_t id, int pass)
{
    Cityops__V1__Command c = CITYOPS__V1__COMMAND__INIT;
    Cityops__V1__RequestCheckRequest rq =
        CITYOPS__V1__REQUEST_CHECK_REQUEST__INIT;
    Cityops__V1__CheckRequest ck = CITYOPS__V1__CHECK_REQUEST__INIT;
    Cityops__V1__CloseRequest cl = CITYOPS__V1__CLOSE_REQUEST__INIT;
    const int64_t h = 3600LL * 1000000;

    rq.case_id = id;
    rq.inspector_id = "insp-2";
    c.op_case = K(REQUEST_CHECK);
    c.request_check = &rq;
    fx_run(f, &c, at, R(DISPATCHER), "disp-1");
    cityops__v1__command__init(&c);
    ck.case_id = id;
    ck.passed = pass;
    c.op_case = K(CHECK);
    c.check = &ck;
    fx_run(f, &c, at + h, R(INSPECTOR), "insp-2");
    if (!pass) {
        return;
    }
    cityops__v1__command__init(&c);
    cl.case_id = id;
    cl.closure_type = CITYOPS__V1__CLOSURE_TYPE__CLOSURE_TYPE_NORMAL;
    c.op_case = K(CLOSE);
    c.close = &cl;
    fx_run(f, &c, at + 2 * h, R(SHIFT_LEADER), "leader-1");
}

static void do_extension(struct fx *f, int64_t at, uint64_t id, int64_t until)
{
    Cityops__V1__Command c = CITYOPS__V1__COMMAND__INIT;
    Cityops__V1__RequestExtensionRequest rq =
        CITYOPS__V1__REQUEST_EXTENSION_REQUEST__INIT;
    Cityops__V1__DecideExtensionRequest dc =
        CITYOPS__V1__DECIDE_EXTENSION_REQUEST__INIT;

    rq.case_id = id;
    rq.until = until;
    rq.reason = "parts on order";
    c.op_case = K(REQUEST_EXTENSION);
    c.request_extension = &rq;
    fx_run(f, &c, at, R(DEPARTMENT), "roads");
    cityops__v1__command__init(&c);
    dc.case_id = id;
    dc.approve = 1;
    c.op_case = K(DECIDE_EXTENSION);
    c.decide_extension = &dc;
    fx_run(f, &c, at + 3600LL * 1000000, R(SHIFT_LEADER), "leader-1");
}

static void do_merge(struct fx *f, int64_t at, uint64_t id, uint64_t into)
{
    Cityops__V1__Command c = CITYOPS__V1__COMMAND__INIT;
    Cityops__V1__MergeRequest m = CITYOPS__V1__MERGE_REQUEST__INIT;

    m.case_id = id;
    m.into_case_id = into;
    c.op_case = K(MERGE);
    c.merge = &m;
    fx_run(f, &c, at, R(INTAKE_CLERK), "clerk-1");
}

static void do_tick(struct fx *f, int64_t at)
{
    Cityops__V1__Command c = CITYOPS__V1__COMMAND__INIT;
    Cityops__V1__Tick t = CITYOPS__V1__TICK__INIT;

    c.op_case = K(TICK);
    c.tick = &t;
    fx_run(f, &c, at, R(SYSTEM), "system");
}

/* The configuration of the scenario, plus @weights (NULL: none). */
static void
do_config(struct fx *f, int64_t at, Cityops__V1__EvalWeights *weights)
{
    Cityops__V1__Command c = CITYOPS__V1__COMMAND__INIT;
    Cityops__V1__ConfigBatch b = CITYOPS__V1__CONFIG_BATCH__INIT;
    Cityops__V1__ConfigChange ch[7];
    Cityops__V1__ConfigChange *chp[7];
    Cityops__V1__OrgUnit d1 = CITYOPS__V1__ORG_UNIT__INIT;
    Cityops__V1__OrgUnit s1 = CITYOPS__V1__ORG_UNIT__INIT;
    Cityops__V1__Department water = CITYOPS__V1__DEPARTMENT__INIT;
    Cityops__V1__Department roads = CITYOPS__V1__DEPARTMENT__INIT;
    Cityops__V1__Grid ga = CITYOPS__V1__GRID__INIT;
    Cityops__V1__Category cat = CITYOPS__V1__CATEGORY__INIT;
    Cityops__V1__Condition cond = CITYOPS__V1__CONDITION__INIT;
    Cityops__V1__Condition *condp = &cond;
    Cityops__V1__TimeLimit lim = CITYOPS__V1__TIME_LIMIT__INIT;
    Cityops__V1__TimeLimit *limp = &lim;
    size_t n = 0;

    for (int i = 0; i < 7; i++) {
        cityops__v1__config_change__init(&ch[i]);
        chp[i] = &ch[i];
    }
    d1.id = "d1";
    d1.name = "East District";
    d1.level = CITYOPS__V1__ORG_LEVEL__ORG_LEVEL_DISTRICT;
    s1.id = "s1";
    s1.name = "First Street";
    s1.level = CITYOPS__V1__ORG_LEVEL__ORG_LEVEL_STREET;
    s1.parent_id = "d1";
    water.id = "water";
    water.name = "Water Works";
    roads.id = "roads";
    roads.name = "Roads Office";
    ga.code = GRID_A;
    ga.org_unit_id = "s1";
    ga.name = "Grid A";
    lim.stage = CITYOPS__V1__STAGE__STAGE_REGISTER;
    lim.unit = CITYOPS__V1__TIME_UNIT__TIME_UNIT_EMERGENCY_HOURS;
    lim.amount = 2;
    cond.code = "c1";
    cond.name = "bin overflowing";
    cond.n_limits = 1;
    cond.limits = &limp;
    cat.type = CITYOPS__V1__CATEGORY_TYPE__CATEGORY_TYPE_EVENT;
    cat.major_code = "01";
    cat.minor_code = "02";
    cat.name = "bins";
    cat.n_conditions = 1;
    cat.conditions = &condp;
    ch[n].item_case = CITYOPS__V1__CONFIG_CHANGE__ITEM_ORG_UNIT;
    ch[n++].org_unit = &d1;
    ch[n].item_case = CITYOPS__V1__CONFIG_CHANGE__ITEM_ORG_UNIT;
    ch[n++].org_unit = &s1;
    ch[n].item_case = CITYOPS__V1__CONFIG_CHANGE__ITEM_DEPARTMENT;
    ch[n++].department = &water;
    ch[n].item_case = CITYOPS__V1__CONFIG_CHANGE__ITEM_DEPARTMENT;
    ch[n++].department = &roads;
    ch[n].item_case = CITYOPS__V1__CONFIG_CHANGE__ITEM_GRID;
    ch[n++].grid = &ga;
    ch[n].item_case = CITYOPS__V1__CONFIG_CHANGE__ITEM_CATEGORY;
    ch[n++].category = &cat;
    if (weights != NULL) {
        n = 0; /* only the weights */
        ch[n].item_case = CITYOPS__V1__CONFIG_CHANGE__ITEM_EVAL_WEIGHTS;
        ch[n++].eval_weights = weights;
    }
    b.n_changes = n;
    b.changes = chp;
    c.op_case = K(CONFIG);
    c.config = &b;
    fx_run(f, &c, at, R(ADMIN), "admin-1");
}

/* --- the scenario --- */

/* REPORT, ACCEPT, REGISTER @reg_after hours after the acceptance. */
static uint64_t
registered(struct fx *f, int m, int d, const char *grid, int reg_after)
{
    uint64_t id = do_report(f, T(m, d, 9), grid);

    do_action(f, T(m, d, 10), K(ACCEPT), id, R(INTAKE_CLERK), "clerk-1");
    do_register(f, T(m, d, 10 + reg_after), id);
    return id;
}

struct ids {
    uint64_t c[10];
};

/* Everything up to and including the tick of 10-28. */
static void scenario_october(struct fx *f, struct ids *x)
{
    do_config(f, T(10, 1, 0), NULL);

    x->c[1] = registered(f, 10, 2, GRID_A, 1);
    do_dispatch(f, T(10, 2, 12), x->c[1], "water", T(10, 10, 0), 0);
    do_action(f, T(10, 3, 9), K(START_DISPOSAL), x->c[1], R(DEPARTMENT),
              "water");
    do_dispose(f, T(10, 8, 9), x->c[1], "water");
    do_check(f, T(10, 8, 10), x->c[1], 1);

    x->c[2] = registered(f, 10, 9, GRID_A, 3); /* 3 h: late */
    do_dispatch(f, T(10, 9, 14), x->c[2], "water", T(10, 10, 0), 0);
    do_action(f, T(10, 9, 15), K(START_DISPOSAL), x->c[2], R(DEPARTMENT),
              "water");
    do_dispose(f, T(10, 12, 9), x->c[2], "water"); /* after 10-10: late */
    do_check(f, T(10, 12, 10), x->c[2], 1);

    x->c[3] = registered(f, 10, 13, GRID_B, 1);
    do_dispatch(f, T(10, 13, 12), x->c[3], "roads", T(10, 20, 0), 0);
    do_action(f, T(10, 13, 13), K(START_DISPOSAL), x->c[3], R(DEPARTMENT),
              "roads");
    do_dispose(f, T(10, 15, 9), x->c[3], "roads");
    do_check(f, T(10, 15, 10), x->c[3], 0);
    do_action(f, T(10, 15, 12), K(REWORK), x->c[3], R(SHIFT_LEADER),
              "leader-1");
    do_dispose(f, T(10, 16, 9), x->c[3], "roads");
    do_check(f, T(10, 16, 10), x->c[3], 1);

    x->c[4] = registered(f, 10, 17, GRID_B, 1);
    do_dispatch(f, T(10, 17, 12), x->c[4], "water", 0, 0);
    do_action(f, T(10, 17, 13), K(RETURN), x->c[4], R(DEPARTMENT), "water");
    do_dispatch(f, T(10, 17, 14), x->c[4], "roads", 0, 1);
    do_action(f, T(10, 17, 15), K(START_DISPOSAL), x->c[4], R(DEPARTMENT),
              "roads");
    do_extension(f, T(10, 17, 16), x->c[4], T(10, 30, 0));
    do_dispose(f, T(10, 18, 9), x->c[4], "roads");
    do_check(f, T(10, 18, 10), x->c[4], 1);

    x->c[5] = do_report(f, T(10, 19, 9), GRID_A);
    do_action(f, T(10, 19, 10), K(REJECT), x->c[5], R(INTAKE_CLERK), "clerk-1");

    x->c[6] = registered(f, 10, 20, GRID_A, 1);
    do_dispatch(f, T(10, 20, 12), x->c[6], "water", T(10, 25, 0), 0);
    do_action(f, T(10, 20, 13), K(START_DISPOSAL), x->c[6], R(DEPARTMENT),
              "water");

    x->c[7] = do_report(f, T(10, 21, 9), GRID_B);
    do_merge(f, T(10, 21, 10), x->c[7], x->c[6]);

    x->c[8] = registered(f, 10, 22, GRID_B, 1);
    do_dispatch(f, T(10, 22, 12), x->c[8], "roads", 0, 0);
    do_action(f, T(10, 22, 13), K(START_DISPOSAL), x->c[8], R(DEPARTMENT),
              "roads");
    do_action(f, T(10, 22, 14), K(SHELVE), x->c[8], R(SHIFT_LEADER),
              "leader-1");

    do_tick(f, T(10, 28, 0));
}

static void scenario_november(struct fx *f, struct ids *x)
{
    do_dispose(f, T(11, 3, 9), x->c[6], "water");
    do_check(f, T(11, 3, 10), x->c[6], 1);

    x->c[9] = registered(f, 11, 5, GRID_A, 1);
    do_dispatch(f, T(11, 5, 12), x->c[9], "roads", 0, 0);
}

/* --- checking a report --- */

static Cityops__V1__EvalReport *
report(struct fx *f, const char *period, const char *by)
{
    Cityops__V1__EvalRequest req = CITYOPS__V1__EVAL_REQUEST__INIT;
    Cityops__V1__EvalReport *rep = NULL;

    req.period = (char *)period;
    req.group_by = (char *)by;
    assert_int_equal(store_eval_report(f->s, &req, &rep), 0);
    assert_non_null(rep);
    return rep;
}

static const Cityops__V1__EvalRow *row_of(const Cityops__V1__EvalReport *r,
                                          const char *obj)
{
    for (size_t i = 0; i < r->n_rows; i++) {
        if (strcmp(r->rows[i]->object_id, obj) == 0) {
            return r->rows[i];
        }
    }
    fail_msg("no row %s in %s by %s", obj, r->period, r->group_by);
    return NULL;
}

/* The value of indicator @code, or NAN when the row does not carry it or
 * it is undefined. */
static double ind(const Cityops__V1__EvalRow *row, const char *code)
{
    for (size_t i = 0; i < row->n_indicators; i++) {
        if (strcmp(row->indicators[i]->code, code) == 0) {
            return row->indicators[i]->defined ? row->indicators[i]->value
                                               : NAN;
        }
    }
    return NAN;
}

#define ASSERT_NEAR(a, b) assert_true(fabs((a) - (b)) < EPS)

/* Counts of a row, in EvalCounts order (overdue_undisposed 9th). */
static void assert_counts(const Cityops__V1__EvalRow *row,
                          const uint64_t want[14])
{
    const Cityops__V1__EvalCounts *c = row->counts;
    uint64_t got[14] = {
        c->reported,
        c->valid_reports,
        c->registered,
        c->registered_on_time,
        c->dispatched,
        c->redispatched_away,
        c->disposed,
        c->disposed_on_time,
        c->overdue_undisposed,
        c->closed,
        c->closed_on_time,
        c->reworks,
        c->extensions_approved,
        c->reopened,
    };

    for (int i = 0; i < 14; i++) {
        if (got[i] != want[i]) {
            fail_msg("%s: count %d is %llu, want %llu", row->object_id, i,
                     (unsigned long long)got[i], (unsigned long long)want[i]);
        }
    }
}

static void check_october_by_department(Cityops__V1__EvalReport *r)
{
    const Cityops__V1__EvalRow *row;

    assert_string_equal(r->group_by, "department");
    assert_int_equal(r->n_rows, 3); /* centre, roads, water */
    assert_int_equal(r->period_start, T(10, 1, 0));
    assert_int_equal(r->period_end, T(11, 1, 0));

    /* centre: 8 reports, 2 not valid (cases 5, 7); 6 registered, case 2
     * late; 7 dispatches (cases 1, 2, 3, 4 twice, 6, 8), one of them
     * wrong (case 4). ontime_register 5/6, dispatch_accuracy 1 - 1/7,
     * valid 6/8; score (5/6 + 6/7 + 3/4) / 3 = 81.349 -> B. */
    row = row_of(r, "centre");
    assert_string_equal(row->object_name, "command centre");
    assert_counts(row,
                  (uint64_t[14]){8, 6, 6, 5, 7, 1, 0, 0, 0, 0, 0, 0, 0, 0});
    assert_int_equal(row->n_indicators, 3);
    ASSERT_NEAR(ind(row, "ontime_register_rate"), 5.0 / 6);
    ASSERT_NEAR(ind(row, "dispatch_accuracy"), 1 - 1.0 / 7);
    ASSERT_NEAR(ind(row, "valid_report_rate"), 0.75);
    assert_true(isnan(ind(row, "disposal_rate")));
    ASSERT_NEAR(row->score, 100 * (5.0 / 6 + 6.0 / 7 + 0.75) / 3);
    assert_string_equal(row->grade, "B");

    /* water: dispatched cases 1, 2, 4, 6 (4); case 4 taken away (1);
     * disposed 1 and 2, only 1 on time; closed 1 and 2, 1 on time; case 6
     * overdue undisposed at the end of October (1). should_dispose 3:
     * disposal 2/3, on time 1/3, closure 2/3, on time 1/3, rework 0/2,
     * extension 0/4; score (2/3 + 1/3 + 2/3 + 1/3 + 1 + 1) / 6 = 66.667 C */
    row = row_of(r, "water");
    assert_string_equal(row->object_name, "Water Works");
    assert_counts(row,
                  (uint64_t[14]){0, 0, 0, 0, 4, 1, 2, 1, 1, 2, 1, 0, 0, 0});
    assert_int_equal(row->n_indicators, 7);
    ASSERT_NEAR(ind(row, "disposal_rate"), 2.0 / 3);
    ASSERT_NEAR(ind(row, "ontime_disposal_rate"), 1.0 / 3);
    ASSERT_NEAR(ind(row, "closure_rate"), 2.0 / 3);
    ASSERT_NEAR(ind(row, "ontime_closure_rate"), 1.0 / 3);
    ASSERT_NEAR(ind(row, "rework_rate"), 0.0);
    ASSERT_NEAR(ind(row, "extension_rate"), 0.0);
    ASSERT_NEAR(ind(row, "overdue_backlog"), 1.0);
    assert_true(isnan(ind(row, "dispatch_accuracy")));
    ASSERT_NEAR(row->score, 100 * 4.0 / 6);
    assert_string_equal(row->grade, "C");

    /* roads: dispatched cases 3, 4, 8 (3); disposed case 3 twice and case
     * 4, all on time (3); closed 3 and 4 on time (2); one rework, one
     * extension; case 8 is shelved, so not overdue. should_dispose 3:
     * disposal 1, on time 1, closure 2/3, on time 2/3, rework 1/3,
     * extension 1/3; score (1 + 1 + 2/3 + 2/3 + 2/3 + 2/3) / 6 = 77.778 B */
    row = row_of(r, "roads");
    assert_counts(row,
                  (uint64_t[14]){0, 0, 0, 0, 3, 0, 3, 3, 0, 2, 2, 1, 1, 0});
    ASSERT_NEAR(ind(row, "disposal_rate"), 1.0);
    ASSERT_NEAR(ind(row, "ontime_disposal_rate"), 1.0);
    ASSERT_NEAR(ind(row, "closure_rate"), 2.0 / 3);
    ASSERT_NEAR(ind(row, "ontime_closure_rate"), 2.0 / 3);
    ASSERT_NEAR(ind(row, "rework_rate"), 1.0 / 3);
    ASSERT_NEAR(ind(row, "extension_rate"), 1.0 / 3);
    ASSERT_NEAR(ind(row, "overdue_backlog"), 0.0);
    ASSERT_NEAR(row->score, 100 * (4 + 2.0 / 3) / 6);
    assert_string_equal(row->grade, "B");
}

/* Areas carry every indicator. Grid A / district d1: cases 1, 2, 5, 6;
 * grid B / district 110101002: cases 3, 4, 7, 8. */
static void
check_october_by_area(Cityops__V1__EvalReport *r, const char *a, const char *b)
{
    const Cityops__V1__EvalRow *row;

    assert_int_equal(r->n_rows, 2);
    /* A: 4 reports, 3 valid; 3 registered (1, 2, 6), 2 on time; 3
     * dispatched; 2 disposed, 1 on time; 2 closed, 1 on time; case 6
     * overdue. Score (2/3 + 1/3 + 2/3 + 1/3 + 1 + 1 + 2/3 + 1 + 3/4) / 9
     * = 71.296 -> C. */
    row = row_of(r, a);
    assert_counts(row,
                  (uint64_t[14]){4, 3, 3, 2, 3, 0, 2, 1, 1, 2, 1, 0, 0, 0});
    assert_int_equal(row->n_indicators, 10);
    ASSERT_NEAR(ind(row, "ontime_register_rate"), 2.0 / 3);
    ASSERT_NEAR(ind(row, "dispatch_accuracy"), 1.0);
    ASSERT_NEAR(ind(row, "valid_report_rate"), 0.75);
    ASSERT_NEAR(ind(row, "disposal_rate"), 2.0 / 3);
    ASSERT_NEAR(ind(row, "ontime_closure_rate"), 1.0 / 3);
    ASSERT_NEAR(ind(row, "overdue_backlog"), 1.0);
    ASSERT_NEAR(row->score, 100 * (6 + 2.0 / 3 - 0.25) / 9);
    assert_string_equal(row->grade, "C");

    /* B: 4 reports, 3 valid; 3 registered (3, 4, 8) on time; 4 dispatched,
     * 1 wrong; 3 disposed on time; 2 closed on time; 1 rework, 1
     * extension. Score (1 + 1 + 2/3 + 2/3 + 2/3 + 3/4 + 1 + 3/4 + 3/4) / 9
     * = 80.556 -> B. */
    row = row_of(r, b);
    assert_counts(row,
                  (uint64_t[14]){4, 3, 3, 3, 4, 1, 3, 3, 0, 2, 2, 1, 1, 0});
    ASSERT_NEAR(ind(row, "extension_rate"), 0.25);
    ASSERT_NEAR(ind(row, "dispatch_accuracy"), 0.75);
    ASSERT_NEAR(ind(row, "rework_rate"), 1.0 / 3);
    ASSERT_NEAR(ind(row, "closure_rate"), 2.0 / 3);
    ASSERT_NEAR(row->score, 100 * 7.25 / 9);
    assert_string_equal(row->grade, "B");
}

static void
check_workload(struct fx *f, size_t n, const char *dept, const uint64_t want[5])
{
    Cityops__V1__WorkloadResponse *w = NULL;

    assert_int_equal(store_workload(f->s, &w), 0);
    assert_int_equal(w->n_departments, n);
    assert_int_equal(w->applied_index, f->index);
    if (n > 0) {
        const Cityops__V1__DepartmentLoad *d = w->departments[0];

        assert_string_equal(d->department_id, dept);
        assert_int_equal(d->dispatched, want[0]);
        assert_int_equal(d->in_disposal, want[1]);
        assert_int_equal(d->returned, want[2]);
        assert_int_equal(d->overdue, want[3]);
        assert_int_equal(d->supervised, want[4]);
    }
    cityops__v1__workload_response__free_unpacked(w, NULL);
}

/* --- tests --- */

static void test_every_indicator_matches_the_hand_computed_values(void **state)
{
    struct fx *f = fx_new();
    struct ids x;
    Cityops__V1__EvalReport *r;
    const Cityops__V1__EvalRow *row;

    (void)state;
    scenario_october(f, &x);
    scenario_november(f, &x);

    r = report(f, "2026-10", "department");
    assert_int_equal(r->applied_index, f->index);
    assert_true(r->audit_size >= f->index); /* one record per command */
    assert_int_equal(r->config_version, 1);
    check_october_by_department(r);
    cityops__v1__eval_report__free_unpacked(r, NULL);

    r = report(f, "2026-10", "district");
    check_october_by_area(r, "d1", "110101002");
    assert_string_equal(row_of(r, "d1")->object_name, "East District");
    cityops__v1__eval_report__free_unpacked(r, NULL);

    r = report(f, "2026-10", "grid");
    check_october_by_area(r, GRID_A, GRID_B);
    assert_string_equal(row_of(r, GRID_A)->object_name, "Grid A");
    cityops__v1__eval_report__free_unpacked(r, NULL);

    /* November: water disposed and closed case 6, both late, and holds no
     * overdue case any more: disposal 1/1, on time 0, closure 1, on time
     * 0, rework 0; no dispatch, so no extension rate. Score (1 + 0 + 1 +
     * 0 + 1) / 5 = 60: C, the lower bound. Centre: case 9 reported,
     * registered on time, dispatched to roads: 100, A. Roads: only the
     * extension rate, 0/1: score 100. */
    r = report(f, "2026-11", "department");
    assert_int_equal(r->n_rows, 3);
    row = row_of(r, "water");
    assert_counts(row,
                  (uint64_t[14]){0, 0, 0, 0, 0, 0, 1, 0, 0, 1, 0, 0, 0, 0});
    ASSERT_NEAR(ind(row, "disposal_rate"), 1.0);
    ASSERT_NEAR(ind(row, "ontime_disposal_rate"), 0.0);
    ASSERT_NEAR(ind(row, "ontime_closure_rate"), 0.0);
    assert_true(isnan(ind(row, "extension_rate")));
    ASSERT_NEAR(row->score, 60.0);
    assert_string_equal(row->grade, "C");
    row = row_of(r, "centre");
    assert_counts(row,
                  (uint64_t[14]){1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0});
    ASSERT_NEAR(row->score, 100.0);
    assert_string_equal(row->grade, "A");
    row = row_of(r, "roads");
    assert_counts(row,
                  (uint64_t[14]){0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0});
    assert_true(isnan(ind(row, "disposal_rate")));
    ASSERT_NEAR(ind(row, "extension_rate"), 0.0);
    ASSERT_NEAR(row->score, 100.0);
    cityops__v1__eval_report__free_unpacked(r, NULL);

    /* The quarter sums October and November, with the gauge at its end:
     * water 3 disposed (1 on time), 3 closed (1 on time), nothing overdue. */
    r = report(f, "2026-Q4", "department");
    assert_int_equal(r->period_start, T(10, 1, 0));
    assert_int_equal(r->period_end, T(1, 1, 0) + 365LL * 86400 * 1000000);
    row = row_of(r, "water");
    assert_counts(row,
                  (uint64_t[14]){0, 0, 0, 0, 4, 1, 3, 1, 0, 3, 1, 0, 0, 0});
    ASSERT_NEAR(ind(row, "disposal_rate"), 1.0);
    ASSERT_NEAR(ind(row, "ontime_disposal_rate"), 1.0 / 3);
    row = row_of(r, "centre");
    assert_counts(row,
                  (uint64_t[14]){9, 7, 7, 6, 8, 1, 0, 0, 0, 0, 0, 0, 0, 0});
    cityops__v1__eval_report__free_unpacked(r, NULL);

    r = report(f, "2026", "department");
    assert_int_equal(row_of(r, "centre")->counts->reported, 9);
    cityops__v1__eval_report__free_unpacked(r, NULL);
    r = report(f, "2026-09", "department");
    assert_int_equal(r->n_rows, 0);
    cityops__v1__eval_report__free_unpacked(r, NULL);
    fx_free(f);
}

static void test_a_past_month_keeps_its_gauge_at_month_end(void **state)
{
    struct fx *f = fx_new();
    struct ids x;
    Cityops__V1__EvalReport *r;

    (void)state;
    scenario_october(f, &x);
    /* Current period: the value now. */
    r = report(f, "2026-10", "department");
    assert_int_equal(row_of(r, "water")->counts->overdue_undisposed, 1);
    cityops__v1__eval_report__free_unpacked(r, NULL);
    /* A later month with no event yet carries the value forward. */
    r = report(f, "2026-12", "grid");
    assert_int_equal(r->n_rows, 1);
    assert_int_equal(row_of(r, GRID_A)->counts->overdue_undisposed, 1);
    ASSERT_NEAR(ind(row_of(r, GRID_A), "disposal_rate"), 0.0);
    cityops__v1__eval_report__free_unpacked(r, NULL);

    scenario_november(f, &x);
    /* October still ends with case 6 overdue; November does not. */
    r = report(f, "2026-10", "department");
    assert_int_equal(row_of(r, "water")->counts->overdue_undisposed, 1);
    cityops__v1__eval_report__free_unpacked(r, NULL);
    r = report(f, "2026-10", "district");
    assert_int_equal(row_of(r, "d1")->counts->overdue_undisposed, 1);
    cityops__v1__eval_report__free_unpacked(r, NULL);
    r = report(f, "2026-11", "department");
    assert_int_equal(row_of(r, "water")->counts->overdue_undisposed, 0);
    cityops__v1__eval_report__free_unpacked(r, NULL);
    fx_free(f);
}

static void test_workload_follows_each_case(void **state)
{
    struct fx *f = fx_new();
    struct ids x;

    (void)state;
    scenario_october(f, &x);
    /* Case 6 in disposal at water, overdue and supervised by the tick;
     * case 8 is shelved: with the centre, in no column. */
    check_workload(f, 1, "water", (uint64_t[5]){0, 1, 0, 1, 1});
    scenario_november(f, &x);
    /* Case 6 closed; case 9 dispatched to roads. */
    check_workload(f, 1, "roads", (uint64_t[5]){1, 0, 0, 0, 0});
    fx_free(f);
}

static void test_workload_counts_a_returned_case_at_the_department(void **s)
{
    struct fx *f = fx_new();
    uint64_t id;

    (void)s;
    do_config(f, T(10, 1, 0), NULL);
    id = registered(f, 10, 2, GRID_B, 1);
    do_dispatch(f, T(10, 2, 12), id, "water", 0, 0);
    check_workload(f, 1, "water", (uint64_t[5]){1, 0, 0, 0, 0});
    do_action(f, T(10, 2, 13), K(RETURN), id, R(DEPARTMENT), "water");
    check_workload(f, 1, "water", (uint64_t[5]){0, 0, 1, 0, 0});
    do_dispatch(f, T(10, 2, 14), id, "roads", 0, 1);
    check_workload(f, 1, "roads", (uint64_t[5]){1, 0, 0, 0, 0});
    fx_free(f);
}

static void test_two_stores_fed_the_same_log_give_identical_bytes(void **s)
{
    static const char *const periods[] = {"2026-10", "2026-11", "2026-Q4",
                                          "2026"};
    static const char *const kinds[] = {"department", "district", "grid"};
    struct fx *f = fx_new();
    struct fx *g = fx_new();
    uint8_t da[STORE_DIGEST_SIZE];
    uint8_t db[STORE_DIGEST_SIZE];
    struct ids x;

    (void)s;
    scenario_october(f, &x);
    scenario_november(f, &x);
    fx_replay(f, g);
    for (size_t i = 0; i < 4; i++) {
        for (size_t j = 0; j < 3; j++) {
            Cityops__V1__EvalReport *a = report(f, periods[i], kinds[j]);
            Cityops__V1__EvalReport *b = report(g, periods[i], kinds[j]);
            size_t la = cityops__v1__eval_report__get_packed_size(a);
            size_t lb = cityops__v1__eval_report__get_packed_size(b);
            uint8_t *pa = malloc(la);
            uint8_t *pb = malloc(lb);

            assert_true(a->n_rows > 0);
            assert_int_equal(la, lb);
            cityops__v1__eval_report__pack(a, pa);
            cityops__v1__eval_report__pack(b, pb);
            assert_memory_equal(pa, pb, la);
            free(pa);
            free(pb);
            cityops__v1__eval_report__free_unpacked(a, NULL);
            cityops__v1__eval_report__free_unpacked(b, NULL);
        }
    }
    assert_int_equal(store_digest(f->s, da, NULL), 0);
    assert_int_equal(store_digest(g->s, db, NULL), 0);
    assert_memory_equal(da, db, sizeof(da));
    fx_free(g);
    fx_free(f);
}

static void test_configured_weights_replace_the_equal_ones(void **state)
{
    struct fx *f = fx_new();
    struct ids x;
    Cityops__V1__EvalWeights w = CITYOPS__V1__EVAL_WEIGHTS__INIT;
    Cityops__V1__IndicatorWeight a = CITYOPS__V1__INDICATOR_WEIGHT__INIT;
    Cityops__V1__IndicatorWeight b = CITYOPS__V1__INDICATOR_WEIGHT__INIT;
    Cityops__V1__IndicatorWeight *wp[2] = {&a, &b};
    Cityops__V1__EvalReport *r;

    (void)state;
    scenario_october(f, &x);
    a.indicator = "disposal_rate";
    a.weight = 0.75;
    b.indicator = "ontime_disposal_rate";
    b.weight = 0.25;
    w.object_kind = "department";
    w.n_weights = 2;
    w.weights = wp;
    do_config(f, T(10, 29, 0), &w);
    /* water: 100 x (0.75 x 2/3 + 0.25 x 1/3) = 58.333 -> D; the centre
     * has neither indicator: no score. */
    r = report(f, "2026-10", "department");
    assert_int_equal(r->config_version, 2);
    ASSERT_NEAR(row_of(r, "water")->score, 100 * (0.5 + 0.25 / 3));
    assert_string_equal(row_of(r, "water")->grade, "D");
    assert_string_equal(row_of(r, "centre")->grade, "-");
    cityops__v1__eval_report__free_unpacked(r, NULL);
    fx_free(f);
}

static void test_bad_periods_and_groupings_are_refused(void **state)
{
    static const char *const bad[] = {
        "",       "2026-13", "2026-00",    "2026-Q5", "2026-Q0", "26-10",
        "2026-1", "2026/10", "2026-10-01", "1969",    "abcd"};
    struct store_eval_period p;
    struct fx *f = fx_new();
    Cityops__V1__EvalRequest req = CITYOPS__V1__EVAL_REQUEST__INIT;
    Cityops__V1__EvalReport *rep = NULL;

    (void)state;
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        if (store_eval_period_parse(bad[i], &p) != STORE_INVALID) {
            fail_msg("period '%s' accepted", bad[i]);
        }
    }
    assert_int_equal(store_eval_period_parse("2026-Q2", &p), 0);
    assert_int_equal(p.first_month, 202604);
    assert_int_equal(p.last_month, 202606);
    assert_int_equal(p.start, T(4, 1, 0));
    assert_int_equal(p.end, T(7, 1, 0));
    assert_int_equal(store_eval_period_parse("2026-12", &p), 0);
    assert_int_equal(p.end - p.start, 31LL * 86400 * 1000000);
    req.period = "2026-13";
    assert_int_equal(store_eval_report(f->s, &req, &rep), STORE_INVALID);
    assert_null(rep);
    assert_non_null(strstr(store_errmsg(f->s), "2026-13"));
    req.period = "2026-10";
    req.group_by = "street";
    assert_int_equal(store_eval_report(f->s, &req, &rep), STORE_INVALID);
    assert_int_equal(store_eval_kind_parse("grid"), 3);
    fx_free(f);
}

static void test_grades_have_inclusive_lower_bounds(void **state)
{
    double v[STORE_EVAL_INDICATORS] = {0};
    int d[STORE_EVAL_INDICATORS] = {0};
    double w[STORE_EVAL_INDICATORS] = {0};
    int scored;

    (void)state;
    assert_string_equal(store_eval_grade(100.0), "A");
    assert_string_equal(store_eval_grade(90.0), "A");
    assert_string_equal(store_eval_grade(89.999), "B");
    assert_string_equal(store_eval_grade(75.0), "B");
    assert_string_equal(store_eval_grade(74.999), "C");
    assert_string_equal(store_eval_grade(60.0), "C");
    assert_string_equal(store_eval_grade(40.0), "D");
    assert_string_equal(store_eval_grade(39.999), "E");
    assert_string_equal(store_eval_grade(0.0), "E");
    /* Undefined indicators drop out; the rest are renormalised; rework
     * (index 4) scores 1 - value. */
    v[0] = 0.5;
    d[0] = 1;
    w[0] = 0.25;
    v[1] = 0.9;
    d[1] = 0;
    w[1] = 0.5;
    v[4] = 0.2;
    d[4] = 1;
    w[4] = 0.25;
    ASSERT_NEAR(store_eval_score(v, d, w, &scored), 100 * (0.5 + 0.8) / 2);
    assert_int_equal(scored, 1);
    d[0] = d[4] = 0;
    ASSERT_NEAR(store_eval_score(v, d, w, &scored), 0.0);
    assert_int_equal(scored, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_indicator_matches_the_hand_computed_values),
        cmocka_unit_test(test_a_past_month_keeps_its_gauge_at_month_end),
        cmocka_unit_test(test_workload_follows_each_case),
        cmocka_unit_test(
            test_workload_counts_a_returned_case_at_the_department),
        cmocka_unit_test(test_two_stores_fed_the_same_log_give_identical_bytes),
        cmocka_unit_test(test_configured_weights_replace_the_equal_ones),
        cmocka_unit_test(test_bad_periods_and_groupings_are_refused),
        cmocka_unit_test(test_grades_have_inclusive_lower_bounds),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
