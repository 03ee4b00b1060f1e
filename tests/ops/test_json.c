/* Unit tests of ops_json_to_pb() (ops/ctl_json.c): round trips through
 * ops_pb_to_json() and back give the same bytes on the wire; every kind of
 * bad input is refused with the JSON path of the culprit; and the shipped
 * configuration ops/config/default.json loads as a ConfigBatch that holds
 * what DOMAIN.md asks of it. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "cityops/v1/admin.pb-c.h"
#include "cityops/v1/audit.pb-c.h"
#include "ops.h"

/* --- helpers --- */

static uint8_t *packed(const ProtobufCMessage *m, size_t *len)
{
    uint8_t *buf;

    *len = protobuf_c_message_get_packed_size(m);
    buf = malloc(*len + 1);
    assert_non_null(buf);
    protobuf_c_message_pack(m, buf);
    return buf;
}

/* pb -> JSON -> text -> JSON -> pb, and the wire bytes must not change. */
static void assert_round_trip(const ProtobufCMessage *m)
{
    json_t *j = ops_pb_to_json(m);
    char *text;
    json_t *back;
    ProtobufCMessage *out = NULL;
    char err[256] = "";
    uint8_t *a;
    uint8_t *b;
    size_t alen;
    size_t blen;

    assert_non_null(j);
    text = json_dumps(j, JSON_COMPACT);
    assert_non_null(text);
    back = json_loads(text, 0, NULL);
    assert_non_null(back);
    assert_int_equal(
        ops_json_to_pb(back, m->descriptor, &out, err, sizeof(err)), 0);
    assert_non_null(out);
    assert_ptr_equal(out->descriptor, m->descriptor);
    a = packed(m, &alen);
    b = packed(out, &blen);
    assert_int_equal(alen, blen);
    assert_memory_equal(a, b, alen);
    free(a);
    free(b);
    free(text);
    json_decref(j);
    json_decref(back);
    protobuf_c_message_free_unpacked(out, NULL);
}

/* Parse @text as a @desc; must fail with OPS_INVALID and an error that
 * starts with @path and contains @what. */
static void assert_refused(const char *text,
                           const ProtobufCMessageDescriptor *desc,
                           const char *path,
                           const char *what)
{
    json_t *j = json_loads(text, 0, NULL);
    ProtobufCMessage *out = (ProtobufCMessage *)1;
    char err[256] = "";
    int rv;

    assert_non_null(j);
    rv = ops_json_to_pb(j, desc, &out, err, sizeof(err));
    json_decref(j);
    if (rv != OPS_INVALID || strncmp(err, path, strlen(path)) != 0 ||
        err[strlen(path)] != ':' || strstr(err, what) == NULL) {
        fail_msg("%s: rv %d, error \"%s\"; wanted \"%s: ...%s...\"", text, rv,
                 err, path, what);
    }
    assert_null(out);
}

static ProtobufCMessage *parse_ok(const char *text,
                                  const ProtobufCMessageDescriptor *desc)
{
    json_t *j = json_loads(text, 0, NULL);
    ProtobufCMessage *out = NULL;
    char err[256] = "";

    assert_non_null(j);
    if (ops_json_to_pb(j, desc, &out, err, sizeof(err)) != 0) {
        fail_msg("%s: %s", text, err);
    }
    json_decref(j);
    return out;
}

/* --- round trips --- */

static void test_config_snapshot_round_trips_with_every_field_type(void **state)
{
    Cityops__V1__OrgUnit ou = CITYOPS__V1__ORG_UNIT__INIT;
    Cityops__V1__Department dept = CITYOPS__V1__DEPARTMENT__INIT;
    Cityops__V1__Staff staff = CITYOPS__V1__STAFF__INIT;
    Cityops__V1__Role roles[] = {CITYOPS__V1__ROLE__ROLE_DISPATCHER,
                                 CITYOPS__V1__ROLE__ROLE_SHIFT_LEADER, 42};
    Cityops__V1__TimeLimit tl[2] = {CITYOPS__V1__TIME_LIMIT__INIT,
                                    CITYOPS__V1__TIME_LIMIT__INIT};
    Cityops__V1__TimeLimit *tlp[] = {&tl[0], &tl[1]};
    Cityops__V1__Condition cond = CITYOPS__V1__CONDITION__INIT;
    Cityops__V1__Condition *condp[] = {&cond};
    Cityops__V1__Category cat = CITYOPS__V1__CATEGORY__INIT;
    char *depts[] = {"water", "roads"};
    Cityops__V1__Grid grid = CITYOPS__V1__GRID__INIT;
    Cityops__V1__OfficePeriod per = CITYOPS__V1__OFFICE_PERIOD__INIT;
    Cityops__V1__OfficePeriod *perp[] = {&per};
    Cityops__V1__WeekdayHours wh = CITYOPS__V1__WEEKDAY_HOURS__INIT;
    Cityops__V1__CalendarDay cal = CITYOPS__V1__CALENDAR_DAY__INIT;
    Cityops__V1__IndicatorWeight iw[2] = {CITYOPS__V1__INDICATOR_WEIGHT__INIT,
                                          CITYOPS__V1__INDICATOR_WEIGHT__INIT};
    Cityops__V1__IndicatorWeight *iwp[] = {&iw[0], &iw[1]};
    Cityops__V1__EvalWeights ew = CITYOPS__V1__EVAL_WEIGHTS__INIT;
    Cityops__V1__PublicSettings ps = CITYOPS__V1__PUBLIC_SETTINGS__INIT;
    Cityops__V1__ConfigSnapshot snap = CITYOPS__V1__CONFIG_SNAPSHOT__INIT;
    Cityops__V1__OrgUnit *oup[] = {&ou};
    Cityops__V1__Department *deptp[] = {&dept};
    Cityops__V1__Staff *staffp[] = {&staff};
    Cityops__V1__Category *catp[] = {&cat};
    Cityops__V1__Grid *gridp[] = {&grid};
    Cityops__V1__WeekdayHours *whp[] = {&wh};
    Cityops__V1__CalendarDay *calp[] = {&cal};
    Cityops__V1__EvalWeights *ewp[] = {&ew};

    (void)state;
    ou.id = "xingning";
    ou.name = "兴宁区";
    ou.level = CITYOPS__V1__ORG_LEVEL__ORG_LEVEL_DISTRICT;
    ou.parent_id = "city";
    ou.admin_code = "450102";
    dept.id = "water";
    dept.name = "市水务局\t\"quoted\"\n";
    dept.org_unit_id = "city";
    dept.level = CITYOPS__V1__DISPATCH_LEVEL__DISPATCH_LEVEL_CITY;
    staff.id = "dispatcher-01";
    staff.name = "梁海波";
    staff.n_roles = 3; /* 42: a value this build does not know */
    staff.roles = roles;
    staff.disabled = 1;
    tl[0].stage = CITYOPS__V1__STAGE__STAGE_DISPOSE;
    tl[0].unit = CITYOPS__V1__TIME_UNIT__TIME_UNIT_EMERGENCY_HOURS;
    tl[0].amount = 2;
    tl[1].stage = CITYOPS__V1__STAGE__STAGE_CHECK;
    tl[1].unit = CITYOPS__V1__TIME_UNIT__TIME_UNIT_WORK_DAYS;
    tl[1].amount = UINT32_MAX;
    cond.code = "01";
    cond.name = "井盖缺失";
    cond.n_limits = 2;
    cond.limits = tlp;
    cat.type = CITYOPS__V1__CATEGORY_TYPE__CATEGORY_TYPE_COMPONENT;
    cat.major_code = "01";
    cat.minor_code = "01";
    cat.major_name = "公用设施";
    cat.name = "上水井盖";
    cat.n_department_ids = 2;
    cat.department_ids = depts;
    cat.n_conditions = 1;
    cat.conditions = condp;
    cat.urgent = 1;
    grid.code = "45010200100101";
    grid.org_unit_id = "xingning";
    per.start_minute = 510;
    per.end_minute = 720;
    wh.weekday = 1;
    wh.n_periods = 1;
    wh.periods = perp;
    cal.date = "2026-02-14";
    cal.workday = 1;
    cal.note = "春节调休上班";
    iw[0].indicator = "disposal_rate";
    iw[0].weight = 0.3;
    iw[1].indicator = "closure_rate";
    iw[1].weight = 0.7000000000000001;
    ew.object_kind = "department";
    ew.n_weights = 2;
    ew.weights = iwp;
    ps.county_code = "450102";
    ps.jurisdiction_id = "450102";
    ps.reopen_window_days = 7;
    ps.duplicate_radius_m = 50;
    ps.duplicate_window_hours = 72;
    snap.version = UINT64_MAX; /* above INT64_MAX: a string in JSON */
    snap.applied_index = 123456789012345ULL;
    snap.n_org_units = 1;
    snap.org_units = oup;
    snap.n_departments = 1;
    snap.departments = deptp;
    snap.n_staff = 1;
    snap.staff = staffp;
    snap.n_categories = 1;
    snap.categories = catp;
    snap.n_grids = 1;
    snap.grids = gridp;
    snap.n_office_hours = 1;
    snap.office_hours = whp;
    snap.n_calendar = 1;
    snap.calendar = calp;
    snap.n_eval_weights = 1;
    snap.eval_weights = ewp;
    snap.public_settings = &ps;
    assert_round_trip(&snap.base);
}

static void test_bytes_and_signed_64_bit_round_trip(void **state)
{
    Cityops__V1__AuditRecord rec = CITYOPS__V1__AUDIT_RECORD__INIT;
    uint8_t hash[32];
    uint8_t odd[5] = {0xff, 0x00, 0xfe, 0x01, 0x80};
    size_t i;

    (void)state;
    for (i = 0; i < sizeof(hash); i++) {
        hash[i] = (uint8_t)(i * 37 + 11);
    }
    rec.seq = 9;
    rec.time = -1700000000000000LL;
    rec.result = -3;
    rec.role = CITYOPS__V1__ROLE__ROLE_ADMIN;
    rec.hash.data = hash;
    rec.hash.len = sizeof(hash);
    rec.prev_hash.data = odd; /* lengths 5, 4, 3: every padding case */
    rec.prev_hash.len = 5;
    rec.before_sha256.data = odd;
    rec.before_sha256.len = 4;
    rec.after_sha256.data = odd;
    rec.after_sha256.len = 3;
    assert_round_trip(&rec.base);
}

static void test_config_batch_oneof_round_trips(void **state)
{
    Cityops__V1__CalendarDay cal = CITYOPS__V1__CALENDAR_DAY__INIT;
    Cityops__V1__PublicSettings ps = CITYOPS__V1__PUBLIC_SETTINGS__INIT;
    Cityops__V1__ConfigChange ch[2] = {CITYOPS__V1__CONFIG_CHANGE__INIT,
                                       CITYOPS__V1__CONFIG_CHANGE__INIT};
    Cityops__V1__ConfigChange *chp[] = {&ch[0], &ch[1]};
    Cityops__V1__RequestContext ctx = CITYOPS__V1__REQUEST_CONTEXT__INIT;
    Cityops__V1__ConfigBatch batch = CITYOPS__V1__CONFIG_BATCH__INIT;

    (void)state;
    cal.date = "2026-10-01";
    ch[0].item_case = CITYOPS__V1__CONFIG_CHANGE__ITEM_CALENDAR_DAY;
    ch[0].calendar_day = &cal;
    ch[0].delete_ = 1;
    ps.county_code = "450102";
    ch[1].item_case = CITYOPS__V1__CONFIG_CHANGE__ITEM_PUBLIC_SETTINGS;
    ch[1].public_settings = &ps;
    ctx.actor_id = "admin-01";
    ctx.role = CITYOPS__V1__ROLE__ROLE_ADMIN;
    ctx.seq = 1;
    batch.ctx = &ctx;
    batch.n_changes = 2;
    batch.changes = chp;
    batch.note = "note";
    assert_round_trip(&batch.base);
}

/* --- lenient where proto3 JSON is --- */

static void test_enums_by_full_or_short_name_any_case_or_number(void **state)
{
    Cityops__V1__TimeLimit *tl;
    const char *forms[] = {
        "{\"unit\":\"TIME_UNIT_WORK_HOURS\"}",
        "{\"unit\":\"WORK_HOURS\"}",
        "{\"unit\":\"work_hours\"}",
        "{\"unit\":\"work-hours\"}",
        "{\"unit\":\"time_unit_Work_Hours\"}",
        "{\"unit\":2}",
        "{\"unit\":2.0}",
    };
    size_t i;

    (void)state;
    for (i = 0; i < sizeof(forms) / sizeof(forms[0]); i++) {
        tl = (Cityops__V1__TimeLimit *)parse_ok(
            forms[i], &cityops__v1__time_limit__descriptor);
        assert_int_equal(tl->unit,
                         CITYOPS__V1__TIME_UNIT__TIME_UNIT_WORK_HOURS);
        protobuf_c_message_free_unpacked(&tl->base, NULL);
    }
}

static void test_integers_as_numbers_or_strings(void **state)
{
    Cityops__V1__ConfigSnapshot *s;
    Cityops__V1__AuditRecord *r;

    (void)state;
    s = (Cityops__V1__ConfigSnapshot *)parse_ok(
        "{\"version\":\"18446744073709551615\",\"applied_index\":42}",
        &cityops__v1__config_snapshot__descriptor);
    assert_true(s->version == UINT64_MAX);
    assert_int_equal(s->applied_index, 42);
    protobuf_c_message_free_unpacked(&s->base, NULL);
    r = (Cityops__V1__AuditRecord *)parse_ok(
        "{\"time\":\"-9223372036854775808\",\"result\":\"-7\",\"seq\":1e3}",
        &cityops__v1__audit_record__descriptor);
    assert_true(r->time == INT64_MIN);
    assert_int_equal(r->result, -7);
    assert_int_equal(r->seq, 1000);
    protobuf_c_message_free_unpacked(&r->base, NULL);
}

static void test_null_leaves_the_default(void **state)
{
    Cityops__V1__ConfigSnapshot *s;

    (void)state;
    s = (Cityops__V1__ConfigSnapshot *)parse_ok(
        "{\"version\":null,\"public_settings\":null,\"staff\":null}",
        &cityops__v1__config_snapshot__descriptor);
    assert_int_equal(s->version, 0);
    assert_null(s->public_settings);
    assert_int_equal(s->n_staff, 0);
    protobuf_c_message_free_unpacked(&s->base, NULL);
}

/* --- strict everywhere else: each error names the JSON path --- */

static void test_unknown_field_is_refused_with_its_path(void **state)
{
    (void)state;
    assert_refused("{\"changes\":[{\"category\":{\"name\":\"x\"}},"
                   "{\"category\":{\"nmae\":\"y\"}}]}",
                   &cityops__v1__config_batch__descriptor,
                   "$.changes[1].category.nmae", "unknown field");
    assert_refused("{\"versoin\":1}", &cityops__v1__config_snapshot__descriptor,
                   "$.versoin", "cityops.v1.ConfigSnapshot");
}

static void test_wrong_types_are_refused_with_their_path(void **state)
{
    const ProtobufCMessageDescriptor *batch =
        &cityops__v1__config_batch__descriptor;
    const ProtobufCMessageDescriptor *snap =
        &cityops__v1__config_snapshot__descriptor;

    (void)state;
    assert_refused("{\"changes\":[{\"category\":{\"urgent\":\"yes\"}}]}", batch,
                   "$.changes[0].category.urgent", "expected true or false");
    assert_refused("{\"changes\":[{\"category\":{\"name\":7}}]}", batch,
                   "$.changes[0].category.name", "expected a string");
    assert_refused("{\"changes\":{\"staff\":{}}}", batch, "$.changes",
                   "expected an array");
    assert_refused("{\"changes\":[\"staff\"]}", batch, "$.changes[0]",
                   "expected an object");
    assert_refused("{\"changes\":[null]}", batch, "$.changes[0]", "null");
    assert_refused("[1]", batch, "$", "expected an object");
    assert_refused("{\"version\":true}", snap, "$.version",
                   "expected an integer");
    assert_refused("{\"version\":-1}", snap, "$.version", "unsigned");
    assert_refused("{\"version\":\"12x\"}", snap, "$.version",
                   "expected an integer");
    assert_refused("{\"version\":1.5}", snap, "$.version",
                   "expected an integer");
    assert_refused("{\"public_settings\":{\"reopen_window_days\":4294967296}}",
                   snap, "$.public_settings.reopen_window_days",
                   "does not fit in 32 bits");
    assert_refused(
        "{\"eval_weights\":[{\"weights\":[{\"weight\":\"heavy\"}]}]}", snap,
        "$.eval_weights[0].weights[0].weight", "expected a number");
    assert_refused("{\"staff\":[{\"roles\":[\"ADMIN\",\"mayor\"]}]}", snap,
                   "$.staff[0].roles[1]", "not a value of cityops.v1.Role");
    assert_refused("{\"categories\":[{\"conditions\":[{\"limits\":"
                   "[{\"unit\":{}}]}]}]}",
                   snap, "$.categories[0].conditions[0].limits[0].unit",
                   "expected a cityops.v1.TimeUnit name");
    assert_refused("{\"hash\":\"not*base64\"}",
                   &cityops__v1__audit_record__descriptor, "$.hash",
                   "not base64");
    assert_refused("{\"hash\":12}", &cityops__v1__audit_record__descriptor,
                   "$.hash", "expected a base64 string");
}

static void test_two_members_of_one_oneof_are_refused(void **state)
{
    (void)state;
    assert_refused("{\"changes\":[{\"staff\":{\"id\":\"a\"},"
                   "\"department\":{\"id\":\"b\"}}]}",
                   &cityops__v1__config_batch__descriptor,
                   "$.changes[0].department", "only one of");
}

/* --- the shipped configuration --- */

static Cityops__V1__ConfigBatch *default_config(void)
{
    json_error_t jerr;
    json_t *j = json_load_file(CITYOPS_DEFAULT_CONFIG, 0, &jerr);
    ProtobufCMessage *out = NULL;
    char err[256] = "";

    if (j == NULL) {
        fail_msg("%s:%d:%d: %s", CITYOPS_DEFAULT_CONFIG, jerr.line, jerr.column,
                 jerr.text);
    }
    if (ops_json_to_pb(j, &cityops__v1__config_batch__descriptor, &out, err,
                       sizeof(err)) != 0) {
        fail_msg("%s: %s", CITYOPS_DEFAULT_CONFIG, err);
    }
    json_decref(j);
    return (Cityops__V1__ConfigBatch *)out;
}

struct counts {
    size_t by_case[16];
    int roles[16];
};

static int has_department(const Cityops__V1__ConfigBatch *b, const char *id)
{
    size_t i;

    for (i = 0; i < b->n_changes; i++) {
        const Cityops__V1__ConfigChange *c = b->changes[i];

        if (c->item_case == CITYOPS__V1__CONFIG_CHANGE__ITEM_DEPARTMENT &&
            strcmp(c->department->id, id) == 0) {
            return 1;
        }
    }
    return 0;
}

static void check_category(const Cityops__V1__ConfigBatch *b,
                           const Cityops__V1__Category *cat)
{
    size_t i;
    size_t k;

    assert_int_equal(strlen(cat->major_code), 2);
    assert_int_equal(strlen(cat->minor_code), 2);
    assert_true(*cat->name != '\0' && *cat->major_name != '\0');
    assert_true(cat->n_department_ids >= 1);
    for (i = 0; i < cat->n_department_ids; i++) {
        if (!has_department(b, cat->department_ids[i])) {
            fail_msg("%s%s %s: no department %s", cat->major_code,
                     cat->minor_code, cat->name, cat->department_ids[i]);
        }
    }
    assert_true(cat->n_conditions >= 1 && cat->n_conditions <= 3);
    for (i = 0; i < cat->n_conditions; i++) {
        const Cityops__V1__Condition *cond = cat->conditions[i];
        unsigned stages = 0;

        assert_true(*cond->code != '\0' && *cond->name != '\0');
        for (k = 0; k < cond->n_limits; k++) {
            const Cityops__V1__TimeLimit *tl = cond->limits[k];

            assert_true(tl->amount > 0);
            assert_true(tl->unit >= 1 && tl->unit <= 4);
            stages |= 1u << tl->stage;
        }
        if (stages != ((1u << CITYOPS__V1__STAGE__STAGE_ACCEPT) |
                       (1u << CITYOPS__V1__STAGE__STAGE_REGISTER) |
                       (1u << CITYOPS__V1__STAGE__STAGE_DISPATCH) |
                       (1u << CITYOPS__V1__STAGE__STAGE_DISPOSE) |
                       (1u << CITYOPS__V1__STAGE__STAGE_CHECK))) {
            fail_msg("%s%s/%s: limits for stages 0x%x", cat->major_code,
                     cat->minor_code, cond->code, stages);
        }
    }
}

static void test_default_config_loads_and_holds_the_catalogue(void **state)
{
    Cityops__V1__ConfigBatch *b = default_config();
    /* [type][major]: how many 小类 */
    int minors[3][7] = {{0}};
    struct counts n;
    size_t i;
    int t;
    int m;

    (void)state;
    memset(&n, 0, sizeof(n));
    for (i = 0; i < b->n_changes; i++) {
        const Cityops__V1__ConfigChange *c = b->changes[i];

        assert_false(c->delete_);
        assert_true(c->item_case < 16);
        n.by_case[c->item_case]++;
        if (c->item_case == CITYOPS__V1__CONFIG_CHANGE__ITEM_CATEGORY) {
            int major = atoi(c->category->major_code);

            assert_true(c->category->type >= 1 && c->category->type <= 2);
            assert_true(major >= 1 && major <= 6);
            minors[c->category->type][major]++;
            check_category(b, c->category);
        }
        if (c->item_case == CITYOPS__V1__CONFIG_CHANGE__ITEM_STAFF) {
            size_t r;

            for (r = 0; r < c->staff->n_roles; r++) {
                n.roles[c->staff->roles[r]]++;
            }
            if (c->staff->n_roles == 1 &&
                c->staff->roles[0] == CITYOPS__V1__ROLE__ROLE_DEPARTMENT) {
                assert_true(has_department(b, c->staff->department_id));
            }
        }
    }
    assert_int_equal(n.by_case[CITYOPS__V1__CONFIG_CHANGE__ITEM_ORG_UNIT], 4);
    assert_int_equal(n.by_case[CITYOPS__V1__CONFIG_CHANGE__ITEM_DEPARTMENT], 6);
    assert_int_equal(n.by_case[CITYOPS__V1__CONFIG_CHANGE__ITEM_OFFICE_HOURS],
                     5);
    assert_int_equal(
        n.by_case[CITYOPS__V1__CONFIG_CHANGE__ITEM_PUBLIC_SETTINGS], 1);
    assert_int_equal(n.by_case[CITYOPS__V1__CONFIG_CHANGE__ITEM_EVAL_WEIGHTS],
                     3);
    for (t = 1; t <= 2; t++) {
        for (m = 1; m <= 6; m++) {
            if (minors[t][m] < 3) {
                fail_msg("type %d major %02d: %d 小类", t, m, minors[t][m]);
            }
        }
    }
    for (t = CITYOPS__V1__ROLE__ROLE_INSPECTOR;
         t <= CITYOPS__V1__ROLE__ROLE_AUDITOR; t++) {
        if (t != CITYOPS__V1__ROLE__ROLE_PUBLIC && n.roles[t] == 0) {
            fail_msg("no staff with role %d", t);
        }
    }
    assert_true(n.roles[CITYOPS__V1__ROLE__ROLE_DEPARTMENT] >= 6);
    protobuf_c_message_free_unpacked(&b->base, NULL);
}

static void test_default_config_hours_calendar_weights_settings(void **state)
{
    Cityops__V1__ConfigBatch *b = default_config();
    int holidays = 0;
    int workdays = 0;
    int kinds = 0;
    size_t i;
    size_t k;

    (void)state;
    for (i = 0; i < b->n_changes; i++) {
        const Cityops__V1__ConfigChange *c = b->changes[i];
        const Cityops__V1__WeekdayHours *wh = c->office_hours;
        const Cityops__V1__CalendarDay *d = c->calendar_day;
        const Cityops__V1__EvalWeights *ew = c->eval_weights;
        const Cityops__V1__PublicSettings *ps = c->public_settings;
        double sum = 0;

        switch (c->item_case) {
        case CITYOPS__V1__CONFIG_CHANGE__ITEM_OFFICE_HOURS:
            assert_true(wh->weekday >= 1 && wh->weekday <= 5);
            assert_int_equal(wh->n_periods, 2);
            assert_int_equal(wh->periods[0]->start_minute, 8 * 60 + 30);
            assert_int_equal(wh->periods[0]->end_minute, 12 * 60);
            assert_int_equal(wh->periods[1]->start_minute, 14 * 60);
            assert_int_equal(wh->periods[1]->end_minute, 17 * 60 + 30);
            break;
        case CITYOPS__V1__CONFIG_CHANGE__ITEM_CALENDAR_DAY:
            assert_int_equal(strlen(d->date), 10);
            assert_memory_equal(d->date, "2026-", 5);
            assert_non_null(strstr(d->note, "2026"));
            if (d->workday) {
                workdays++;
            } else {
                holidays++;
            }
            break;
        case CITYOPS__V1__CONFIG_CHANGE__ITEM_EVAL_WEIGHTS:
            assert_true(strcmp(ew->object_kind, "department") == 0 ||
                        strcmp(ew->object_kind, "district") == 0 ||
                        strcmp(ew->object_kind, "grid") == 0);
            kinds++;
            for (k = 0; k < ew->n_weights; k++) {
                assert_true(ew->weights[k]->weight > 0);
                sum += ew->weights[k]->weight;
            }
            if (fabs(sum - 1.0) > 1e-9) {
                fail_msg("%s weights sum to %.17g", ew->object_kind, sum);
            }
            break;
        case CITYOPS__V1__CONFIG_CHANGE__ITEM_PUBLIC_SETTINGS:
            assert_string_equal(ps->county_code, "450102");
            assert_true(*ps->jurisdiction_id != '\0');
            assert_int_equal(ps->reopen_window_days, 7);
            assert_int_equal(ps->duplicate_radius_m, 50);
            assert_int_equal(ps->duplicate_window_hours, 72);
            break;
        default:
            break;
        }
    }
    /* 2026: 元旦 3, 春节 9, 清明 3, 劳动节 5, 端午 3, 中秋 3, 国庆 7 days
     * off; 6 weekend days worked (调休). */
    assert_int_equal(holidays, 33);
    assert_int_equal(workdays, 6);
    assert_int_equal(kinds, 3);
    protobuf_c_message_free_unpacked(&b->base, NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(
            test_config_snapshot_round_trips_with_every_field_type),
        cmocka_unit_test(test_bytes_and_signed_64_bit_round_trip),
        cmocka_unit_test(test_config_batch_oneof_round_trips),
        cmocka_unit_test(test_enums_by_full_or_short_name_any_case_or_number),
        cmocka_unit_test(test_integers_as_numbers_or_strings),
        cmocka_unit_test(test_null_leaves_the_default),
        cmocka_unit_test(test_unknown_field_is_refused_with_its_path),
        cmocka_unit_test(test_wrong_types_are_refused_with_their_path),
        cmocka_unit_test(test_two_members_of_one_oneof_are_refused),
        cmocka_unit_test(test_default_config_loads_and_holds_the_catalogue),
        cmocka_unit_test(test_default_config_hours_calendar_weights_settings),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
