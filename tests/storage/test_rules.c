/* The city's rules in apply: configuration versions, stage deadlines from
 * the configuration in force, overdue marking by the leader's tick,
 * supervision, and authorization by staff records. Every command goes
 * through store_apply_batch() as a replicated entry would.
 *
 * Times are written as local time (UTC+8) and converted by local_us(); the
 * expected deadlines were worked out by hand next to each assertion with
 * the default office hours (08:30-12:00, 14:00-17:30, Monday-Friday). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "storage/store.h"

#define R(x) CITYOPS__V1__ROLE__ROLE_##x
#define RC(x) CITYOPS__V1__RESULT_CODE__RESULT_##x
#define ST(x) CITYOPS__V1__CASE_STATE__CASE_STATE_##x
#define STAGE(x) CITYOPS__V1__STAGE__STAGE_##x
#define UNIT(x) CITYOPS__V1__TIME_UNIT__TIME_UNIT_##x

struct fx {
    char dir[64];
    struct store *s;
    uint64_t index;
};

/* Days from 1970-01-01 of a civil date (proleptic Gregorian). */
static int64_t days_from_civil(int y, int m, int d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

/* Local time UTC+8 -> UTC microseconds. */
static int64_t local_us(int y, int mo, int d, int h, int mi)
{
    int64_t secs = days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 -
                   8 * 3600;
    return secs * 1000000;
}

static int setup(void **state)
{
    struct fx *f = calloc(1, sizeof(*f));

    assert_non_null(f);
    strcpy(f->dir, "/tmp/cityops-rules-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    assert_int_equal(store_open(f->dir, NULL, &f->s), 0);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fx *f = *state;
    char path[128];

    store_close(f->s);
    snprintf(path, sizeof path, "%s/data.mdb", f->dir);
    unlink(path);
    snprintf(path, sizeof path, "%s/lock.mdb", f->dir);
    unlink(path);
    snprintf(path, sizeof path, "%s/LOCK", f->dir);
    unlink(path);
    rmdir(f->dir);
    free(f);
    return 0;
}

/* Apply one command alone in an entry; returns its result code and, if
 * @out, the result (caller frees). */
static int apply(struct fx *f,
                 Cityops__V1__Command *cmd,
                 Cityops__V1__CommandResult **out)
{
    Cityops__V1__CommandBatch b = CITYOPS__V1__COMMAND_BATCH__INIT;
    struct store_results res;
    uint8_t *buf;
    size_t len;
    int code;

    b.n_commands = 1;
    b.commands = &cmd;
    len = cityops__v1__command_batch__get_packed_size(&b);
    buf = malloc(len + 1);
    assert_non_null(buf);
    cityops__v1__command_batch__pack(&b, buf);
    assert_int_equal(store_apply_batch(f->s, ++f->index, buf, len, &res), 0);
    free(buf);
    assert_int_equal(res.skipped, 0);
    if (res.n != 1) {
        fail_msg("entry %llu gave %zu results: %s",
                 (unsigned long long)f->index, res.n, store_errmsg(f->s));
    }
    code = res.results[0]->code;
    if (out != NULL) {
        *out = res.results[0];
        res.results[0] = NULL;
        res.n = 0;
    }
    store_results_free(&res);
    return code;
}

static Cityops__V1__Command base(int64_t time, const char *actor, int role)
{
    Cityops__V1__Command c = CITYOPS__V1__COMMAND__INIT;

    c.time = time;
    c.actor_id = (char *)actor;
    c.role = role;
    return c;
}

/* --- configuration --- */

/* Category E-05-01 with condition "c1": accept 2 WORK_HOURS, dispatch 4
 * EMERGENCY_HOURS, dispose @dispose_days WORK_DAYS; department "roads". */
static int config_default(struct fx *f, int64_t time, uint32_t dispose_days)
{
    Cityops__V1__Command c = base(time, "admin", R(ADMIN));
    Cityops__V1__ConfigBatch b = CITYOPS__V1__CONFIG_BATCH__INIT;
    Cityops__V1__ConfigChange ch[2];
    Cityops__V1__ConfigChange *chp[2] = {&ch[0], &ch[1]};
    Cityops__V1__Department dept = CITYOPS__V1__DEPARTMENT__INIT;
    Cityops__V1__Category cat = CITYOPS__V1__CATEGORY__INIT;
    Cityops__V1__Condition cond = CITYOPS__V1__CONDITION__INIT;
    Cityops__V1__Condition *condp = &cond;
    Cityops__V1__TimeLimit l[3];
    Cityops__V1__TimeLimit *lp[3] = {&l[0], &l[1], &l[2]};
    char *depts[1] = {"roads"};

    for (int i = 0; i < 3; i++) {
        cityops__v1__time_limit__init(&l[i]);
    }
    l[0].stage = STAGE(ACCEPT);
    l[0].unit = UNIT(WORK_HOURS);
    l[0].amount = 2;
    l[1].stage = STAGE(DISPATCH);
    l[1].unit = UNIT(EMERGENCY_HOURS);
    l[1].amount = 4;
    l[2].stage = STAGE(DISPOSE);
    l[2].unit = UNIT(WORK_DAYS);
    l[2].amount = dispose_days;
    cond.code = "c1";
    cond.name = "pothole";
    cond.n_limits = 3;
    cond.limits = lp;
    dept.id = "roads";
    dept.name = "Roads";
    cat.type = CITYOPS__V1__CATEGORY_TYPE__CATEGORY_TYPE_EVENT;
    cat.major_code = "05";
    cat.minor_code = "01";
    cat.name = "road damage";
    cat.n_conditions = 1;
    cat.conditions = &condp;
    cat.n_department_ids = 1;
    cat.department_ids = depts;
    for (int i = 0; i < 2; i++) {
        cityops__v1__config_change__init(&ch[i]);
    }
    ch[0].item_case = CITYOPS__V1__CONFIG_CHANGE__ITEM_DEPARTMENT;
    ch[0].department = &dept;
    ch[1].item_case = CITYOPS__V1__CONFIG_CHANGE__ITEM_CATEGORY;
    ch[1].category = &cat;
    b.n_changes = 2;
    b.changes = chp;
    c.op_case = CITYOPS__V1__COMMAND__OP_CONFIG;
    c.config = &b;
    return apply(f, &c, NULL);
}

static uint64_t version_of(struct fx *f)
{
    Cityops__V1__ConfigSnapshot *snap = NULL;
    uint64_t v;

    assert_int_equal(store_config_get(f->s, &snap), 0);
    v = snap->version;
    cityops__v1__config_snapshot__free_unpacked(snap, NULL);
    return v;
}

static void test_config_versions_and_refusals(void **state)
{
    struct fx *f = *state;
    Cityops__V1__Command c = base(local_us(2026, 10, 9, 9, 0), "admin",
                                  R(ADMIN));
    Cityops__V1__ConfigBatch b = CITYOPS__V1__CONFIG_BATCH__INIT;
    Cityops__V1__ConfigChange ch = CITYOPS__V1__CONFIG_CHANGE__INIT;
    Cityops__V1__ConfigChange *chp = &ch;
    Cityops__V1__WeekdayHours wh = CITYOPS__V1__WEEKDAY_HOURS__INIT;
    Cityops__V1__OfficePeriod p[2];
    Cityops__V1__OfficePeriod *pp[2] = {&p[0], &p[1]};
    Cityops__V1__Staff st = CITYOPS__V1__STAFF__INIT;
    Cityops__V1__Role roles[1] = {R(DEPARTMENT)};
    Cityops__V1__CommandResult *res = NULL;

    assert_int_equal(config_default(f, local_us(2026, 10, 9, 8, 0), 1),
                     RC(OK));
    assert_int_equal(version_of(f), 1);

    /* overlapping office periods on Monday: refused whole */
    cityops__v1__office_period__init(&p[0]);
    cityops__v1__office_period__init(&p[1]);
    p[0].start_minute = 8 * 60;
    p[0].end_minute = 12 * 60;
    p[1].start_minute = 11 * 60;
    p[1].end_minute = 17 * 60;
    wh.weekday = 1;
    wh.n_periods = 2;
    wh.periods = pp;
    ch.item_case = CITYOPS__V1__CONFIG_CHANGE__ITEM_OFFICE_HOURS;
    ch.office_hours = &wh;
    b.n_changes = 1;
    b.changes = &chp;
    c.op_case = CITYOPS__V1__COMMAND__OP_CONFIG;
    c.config = &b;
    assert_int_equal(apply(f, &c, &res), RC(INVALID_ARGUMENT));
    assert_non_null(strstr(res->message, "office hours"));
    cityops__v1__command_result__free_unpacked(res, NULL);
    assert_int_equal(version_of(f), 1);

    /* not an admin */
    c.role = R(SHIFT_LEADER);
    p[1].start_minute = 14 * 60;
    assert_int_equal(apply(f, &c, NULL), RC(PERMISSION_DENIED));
    assert_int_equal(version_of(f), 1);

    /* staff of a department that does not exist */
    c.role = R(ADMIN);
    st.id = "h1";
    st.n_roles = 1;
    st.roles = roles;
    st.department_id = "water";
    ch.item_case = CITYOPS__V1__CONFIG_CHANGE__ITEM_STAFF;
    ch.staff = &st;
    assert_int_equal(apply(f, &c, &res), RC(INVALID_ARGUMENT));
    assert_non_null(strstr(res->message, "no department water"));
    cityops__v1__command_result__free_unpacked(res, NULL);
    assert_int_equal(version_of(f), 1);

    /* a valid week: version 2 */
    ch.item_case = CITYOPS__V1__CONFIG_CHANGE__ITEM_OFFICE_HOURS;
    ch.office_hours = &wh;
    assert_int_equal(apply(f, &c, &res), RC(OK));
    assert_int_equal(res->version, 2);
    cityops__v1__command_result__free_unpacked(res, NULL);
    assert_int_equal(version_of(f), 2);
}

/* --- cases --- */

static uint64_t report(struct fx *f, int64_t time, Cityops__V1__Case **out)
{
    Cityops__V1__Command c = base(time, "insp1", R(INSPECTOR));
    Cityops__V1__ReportRequest r = CITYOPS__V1__REPORT_REQUEST__INIT;
    Cityops__V1__CommandResult *res = NULL;
    uint64_t id;

    r.category_type = CITYOPS__V1__CATEGORY_TYPE__CATEGORY_TYPE_EVENT;
    r.major_code = "05";
    r.minor_code = "01";
    r.description = "pothole";
    c.op_case = CITYOPS__V1__COMMAND__OP_REPORT;
    c.report = &r;
    assert_int_equal(apply(f, &c, &res), RC(OK));
    id = res->case_->case_id;
    if (out != NULL) {
        *out = res->case_;
        res->case_ = NULL;
    }
    cityops__v1__command_result__free_unpacked(res, NULL);
    return id;
}

static int action(struct fx *f,
                  int64_t time,
                  const char *actor,
                  int role,
                  int op,
                  uint64_t id,
                  Cityops__V1__Case **out)
{
    Cityops__V1__Command c = base(time, actor, role);
    Cityops__V1__CaseActionRequest a = CITYOPS__V1__CASE_ACTION_REQUEST__INIT;
    Cityops__V1__RegisterRequest reg = CITYOPS__V1__REGISTER_REQUEST__INIT;
    Cityops__V1__DispatchRequest d = CITYOPS__V1__DISPATCH_REQUEST__INIT;
    Cityops__V1__CommandResult *res = NULL;
    int code;

    c.op_case = (Cityops__V1__Command__OpCase)op;
    a.case_id = id;
    a.reason = "r";
    if (op == CITYOPS__V1__COMMAND__OP_REGISTER) {
        reg.case_id = id;
        reg.condition = "c1";
        c.register_ = &reg;
    } else if (op == CITYOPS__V1__COMMAND__OP_DISPATCH) {
        d.case_id = id;
        d.department_id = "roads";
        c.dispatch = &d;
    } else {
        c.accept = &a; /* every CaseActionRequest op shares the slot */
    }
    code = apply(f, &c, &res);
    if (out != NULL) {
        *out = res->case_;
        res->case_ = NULL;
    }
    cityops__v1__command_result__free_unpacked(res, NULL);
    return code;
}

static const Cityops__V1__StageClock *clock_of(const Cityops__V1__Case *c,
                                               Cityops__V1__Stage st)
{
    for (size_t i = 0; i < c->n_clocks; i++) {
        if (c->clocks[i]->stage == st) {
            return c->clocks[i];
        }
    }
    return NULL;
}

#define OP(x) CITYOPS__V1__COMMAND__OP_##x

static void test_deadlines_follow_the_stages(void **state)
{
    struct fx *f = *state;
    Cityops__V1__Case *c = NULL;
    const Cityops__V1__StageClock *k;
    uint64_t id;

    assert_int_equal(config_default(f, local_us(2026, 10, 9, 8, 0), 1),
                     RC(OK));
    /* Friday 2026-10-09 11:30: accept 2 work hours -> 12:00 then 14:00 +
     * 1.5 h -> 15:30 */
    id = report(f, local_us(2026, 10, 9, 11, 30), &c);
    k = clock_of(c, STAGE(ACCEPT));
    assert_non_null(k);
    assert_int_equal(k->deadline, local_us(2026, 10, 9, 15, 30));
    assert_int_equal(c->config_version, 1);
    cityops__v1__case__free_unpacked(c, NULL);

    /* accepted at 15:00: on time; register clock has no limit */
    assert_int_equal(action(f, local_us(2026, 10, 9, 15, 0), "clerk",
                            R(INTAKE_CLERK), OP(ACCEPT), id, &c),
                     RC(OK));
    k = clock_of(c, STAGE(ACCEPT));
    assert_int_equal(k->done, local_us(2026, 10, 9, 15, 0));
    assert_false(k->overdue);
    assert_int_equal(clock_of(c, STAGE(REGISTER))->deadline, 0);
    cityops__v1__case__free_unpacked(c, NULL);

    /* registered 16:00: dispatch within 4 elapsed hours -> 20:00 */
    assert_int_equal(action(f, local_us(2026, 10, 9, 16, 0), "lead",
                            R(SHIFT_LEADER), OP(REGISTER), id, &c),
                     RC(OK));
    assert_int_equal(clock_of(c, STAGE(DISPATCH))->deadline,
                     local_us(2026, 10, 9, 20, 0));
    cityops__v1__case__free_unpacked(c, NULL);

    /* dispatched 17:00 Friday: 1 work day -> Monday 2026-10-12, same
     * office position (17:00) */
    assert_int_equal(action(f, local_us(2026, 10, 9, 17, 0), "disp",
                            R(DISPATCHER), OP(DISPATCH), id, &c),
                     RC(OK));
    k = clock_of(c, STAGE(DISPOSE));
    assert_int_equal(k->deadline, local_us(2026, 10, 12, 17, 0));
    assert_int_equal(c->disposal_deadline, k->deadline);
    assert_false(clock_of(c, STAGE(DISPATCH))->overdue);
    cityops__v1__case__free_unpacked(c, NULL);

    /* a config change does not move the deadlines of this case: a new
     * case gets 3 work days */
    assert_int_equal(config_default(f, local_us(2026, 10, 9, 17, 10), 3),
                     RC(OK));
    assert_int_equal(action(f, local_us(2026, 10, 9, 17, 20), "disp",
                            R(DISPATCHER), OP(SUPERVISE), id, &c),
                     RC(PERMISSION_DENIED));
    assert_int_equal(store_case_get(f->s, id, &c, NULL), 0);
    assert_int_equal(clock_of(c, STAGE(DISPOSE))->deadline,
                     local_us(2026, 10, 12, 17, 0));
    cityops__v1__case__free_unpacked(c, NULL);
}

static int tick(struct fx *f, int64_t time)
{
    Cityops__V1__Command c = base(time, "cityopsd", R(SYSTEM));
    Cityops__V1__Tick t = CITYOPS__V1__TICK__INIT;

    c.op_case = OP(TICK);
    c.tick = &t;
    return apply(f, &c, NULL);
}

static size_t events_of(struct fx *f, uint64_t id, int type)
{
    Cityops__V1__HistoryResponse *h = NULL;
    size_t n = 0;

    assert_int_equal(store_case_history(f->s, id, &h), 0);
    for (size_t i = 0; i < h->n_events; i++) {
        n += (int)h->events[i]->type == type;
    }
    cityops__v1__history_response__free_unpacked(h, NULL);
    return n;
}

static void test_tick_marks_overdue_once_and_supervises(void **state)
{
    struct fx *f = *state;
    Cityops__V1__Case *c = NULL;
    uint64_t a;
    uint64_t b;

    assert_int_equal(config_default(f, local_us(2026, 10, 9, 8, 0), 1),
                     RC(OK));
    a = report(f, local_us(2026, 10, 9, 9, 0), NULL);  /* accept by 11:00 */
    b = report(f, local_us(2026, 10, 9, 11, 0), NULL); /* 1 h + 1 h: 15:00 */
    /* 11:00 exactly: not late yet */
    assert_int_equal(tick(f, local_us(2026, 10, 9, 10, 59)), RC(OK));
    assert_int_equal(events_of(f, a, 26), 0);
    /* 12:00: a is late, b is not */
    assert_int_equal(tick(f, local_us(2026, 10, 9, 12, 0)), RC(OK));
    assert_int_equal(events_of(f, a, 26), 1); /* OVERDUE */
    assert_int_equal(events_of(f, a, 27), 1); /* SUPERVISE */
    assert_int_equal(events_of(f, b, 26), 0);
    assert_int_equal(store_case_get(f->s, a, &c, NULL), 0);
    assert_true(c->overdue);
    assert_int_equal(c->supervision_level, 1);
    assert_true(clock_of(c, STAGE(ACCEPT))->overdue);
    cityops__v1__case__free_unpacked(c, NULL);
    /* a second tick marks nothing twice; at 15:00 b is due, not late */
    assert_int_equal(tick(f, local_us(2026, 10, 9, 15, 0)), RC(OK));
    assert_int_equal(events_of(f, a, 26), 1);
    assert_int_equal(events_of(f, b, 26), 0);
    assert_int_equal(tick(f, local_us(2026, 10, 9, 15, 1)), RC(OK));
    assert_int_equal(events_of(f, b, 26), 1);
    /* the command centre's lists, from the deadline index */
    {
        Cityops__V1__ListRequest q = CITYOPS__V1__LIST_REQUEST__INIT;
        Cityops__V1__ListResponse *r = NULL;
        uint64_t c3 = report(f, local_us(2026, 10, 9, 15, 2), NULL);

        q.overdue_only = 1;
        assert_int_equal(store_case_list(f->s, &q, &r), 0);
        assert_int_equal(r->n_cases, 2); /* a and b; c3 is not late */
        assert_int_equal(r->cases[0]->case_id, a);
        assert_int_equal(r->cases[1]->case_id, b);
        cityops__v1__list_response__free_unpacked(r, NULL);
        q.overdue_only = 0;
        q.deadline_from = local_us(2026, 10, 9, 14, 0);
        q.deadline_to = local_us(2026, 10, 12, 0, 0);
        assert_int_equal(store_case_list(f->s, &q, &r), 0);
        assert_int_equal(r->n_cases, 2); /* b (15:00) and c3 (17:02) */
        assert_int_equal(r->cases[0]->case_id, b);
        assert_int_equal(r->cases[1]->case_id, c3);
        cityops__v1__list_response__free_unpacked(r, NULL);
    }
    /* accepting a late stage keeps it overdue; the tick is SYSTEM only */
    assert_int_equal(action(f, local_us(2026, 10, 9, 15, 5), "clerk",
                            R(INTAKE_CLERK), OP(ACCEPT), a, &c),
                     RC(OK));
    assert_true(clock_of(c, STAGE(ACCEPT))->overdue);
    cityops__v1__case__free_unpacked(c, NULL);
    {
        Cityops__V1__Command t = base(local_us(2026, 10, 9, 16, 0), "x",
                                      R(SHIFT_LEADER));
        Cityops__V1__Tick tk = CITYOPS__V1__TICK__INIT;
        t.op_case = OP(TICK);
        t.tick = &tk;
        assert_int_equal(apply(f, &t, NULL), RC(PERMISSION_DENIED));
    }
    /* a shift leader supervises again */
    assert_int_equal(action(f, local_us(2026, 10, 9, 16, 0), "lead",
                            R(SHIFT_LEADER), OP(SUPERVISE), b, &c),
                     RC(OK));
    assert_int_equal(c->supervision_level, 2);
    cityops__v1__case__free_unpacked(c, NULL);
}

static int staff_add(struct fx *f,
                     const char *id,
                     int role,
                     const char *dept,
                     int disabled)
{
    Cityops__V1__Command c = base(local_us(2026, 10, 9, 8, 5), "admin",
                                  R(ADMIN));
    Cityops__V1__ConfigBatch b = CITYOPS__V1__CONFIG_BATCH__INIT;
    Cityops__V1__ConfigChange ch = CITYOPS__V1__CONFIG_CHANGE__INIT;
    Cityops__V1__ConfigChange *chp = &ch;
    Cityops__V1__Staff st = CITYOPS__V1__STAFF__INIT;
    Cityops__V1__Role roles[1];

    roles[0] = role;
    st.id = (char *)id;
    st.n_roles = 1;
    st.roles = roles;
    st.department_id = (char *)dept;
    st.disabled = disabled;
    ch.item_case = CITYOPS__V1__CONFIG_CHANGE__ITEM_STAFF;
    ch.staff = &st;
    b.n_changes = 1;
    b.changes = &chp;
    c.op_case = OP(CONFIG);
    c.config = &b;
    return apply(f, &c, NULL);
}

static void test_authorization_by_staff(void **state)
{
    struct fx *f = *state;
    Cityops__V1__Command dep = CITYOPS__V1__COMMAND__INIT;
    Cityops__V1__Department water = CITYOPS__V1__DEPARTMENT__INIT;
    Cityops__V1__ConfigBatch b = CITYOPS__V1__CONFIG_BATCH__INIT;
    Cityops__V1__ConfigChange ch = CITYOPS__V1__CONFIG_CHANGE__INIT;
    Cityops__V1__ConfigChange *chp = &ch;
    int64_t t = local_us(2026, 10, 9, 9, 0);
    uint64_t id;

    assert_int_equal(config_default(f, local_us(2026, 10, 9, 8, 0), 1),
                     RC(OK));
    /* no staff yet: the role table alone */
    id = report(f, t, NULL);
    water.id = "water";
    water.name = "Water";
    ch.item_case = CITYOPS__V1__CONFIG_CHANGE__ITEM_DEPARTMENT;
    ch.department = &water;
    b.n_changes = 1;
    b.changes = &chp;
    dep = base(t, "admin", R(ADMIN));
    dep.op_case = OP(CONFIG);
    dep.config = &b;
    assert_int_equal(apply(f, &dep, NULL), RC(OK));
    assert_int_equal(staff_add(f, "clerk", R(INTAKE_CLERK), "", 0), RC(OK));
    assert_int_equal(staff_add(f, "lead", R(SHIFT_LEADER), "", 0), RC(OK));
    assert_int_equal(staff_add(f, "disp", R(DISPATCHER), "", 0), RC(OK));
    assert_int_equal(staff_add(f, "h-roads", R(DEPARTMENT), "roads", 0),
                     RC(OK));
    assert_int_equal(staff_add(f, "h-water", R(DEPARTMENT), "water", 0),
                     RC(OK));
    assert_int_equal(staff_add(f, "gone", R(INTAKE_CLERK), "", 1), RC(OK));
    /* not staff / disabled / claims a role it lacks */
    assert_int_equal(action(f, t + 1, "nobody", R(INTAKE_CLERK), OP(ACCEPT),
                            id, NULL),
                     RC(PERMISSION_DENIED));
    assert_int_equal(action(f, t + 2, "gone", R(INTAKE_CLERK), OP(ACCEPT), id,
                            NULL),
                     RC(PERMISSION_DENIED));
    assert_int_equal(action(f, t + 3, "disp", R(INTAKE_CLERK), OP(ACCEPT), id,
                            NULL),
                     RC(PERMISSION_DENIED));
    /* the same report: an unknown inspector may not report either */
    {
        Cityops__V1__Command c = base(t + 4, "insp1", R(INSPECTOR));
        Cityops__V1__ReportRequest r = CITYOPS__V1__REPORT_REQUEST__INIT;
        r.category_type = CITYOPS__V1__CATEGORY_TYPE__CATEGORY_TYPE_EVENT;
        r.major_code = "05";
        r.minor_code = "01";
        r.description = "x";
        c.op_case = OP(REPORT);
        c.report = &r;
        assert_int_equal(apply(f, &c, NULL), RC(PERMISSION_DENIED));
    }
    assert_int_equal(action(f, t + 5, "clerk", R(INTAKE_CLERK), OP(ACCEPT),
                            id, NULL),
                     RC(OK));
    assert_int_equal(action(f, t + 6, "lead", R(SHIFT_LEADER), OP(REGISTER),
                            id, NULL),
                     RC(OK));
    assert_int_equal(action(f, t + 7, "disp", R(DISPATCHER), OP(DISPATCH), id,
                            NULL),
                     RC(OK));
    /* dispatched to roads: the water handler may not take it */
    assert_int_equal(action(f, t + 8, "h-water", R(DEPARTMENT),
                            OP(START_DISPOSAL), id, NULL),
                     RC(PERMISSION_DENIED));
    assert_int_equal(action(f, t + 9, "h-roads", R(DEPARTMENT),
                            OP(START_DISPOSAL), id, NULL),
                     RC(OK));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_config_versions_and_refusals,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_deadlines_follow_the_stages,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_tick_marks_overdue_once_and_supervises, setup, teardown),
        cmocka_unit_test_setup_teardown(test_authorization_by_staff, setup,
                                        teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
