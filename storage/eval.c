/* Comprehensive evaluation (DOMAIN.md 5) and the command centre's workload
 * view, kept incrementally in the `eval` database by the apply transaction.
 *
 * DESIGN
 *
 * case_commit() calls eval_on_event() once per CaseEvent, in the same
 * (nested) transaction, so the counters commit or vanish with the event.
 * Everything comes from the event, the case after it and this file's own
 * per-case record: no clock, so every replica writes the same bytes.
 *
 * Keys of the eval database (integers big-endian):
 *   'C' month u32 kind u8 object   -> EVAL_NC x u64: event counts of the
 *                                     month (yyyymm, UTC+8) per object
 *   'G' kind u8 object '\0' month  -> i64: the overdue-undisposed gauge of
 *                                     the object after the last change in
 *                                     that month
 *   'K' case id u64                -> the per-case record (what the case
 *                                     contributes to gauges and workload)
 *   'W' department                 -> 5 x u64: workload (dispatched,
 *                                     in_disposal, returned, overdue,
 *                                     supervised); deleted when all zero
 * kind: 1 department, 2 district, 3 grid.
 *
 * A month report reads that month's 'C' rows of one kind (a range scan)
 * and, per object, the last 'G' row at or before the month (a seek): never
 * the cases. A quarter or a year sums its months' counts and takes the
 * gauges at its last month. Since leader times never go back, a gauge
 * changes only in the current month, so the value at the end of a past
 * month is the last one written at or before it, and for the current
 * period it is the value now.
 *
 * Attribution (the object an event is charged to):
 * - department kind: counts that DOMAIN.md 5 charges to the centre
 *   (reports, valid reports, registrations, dispatches and wrong
 *   dispatches) go to the object "centre"; the rest to the case's
 *   department at the event (ev->department_id: for a RETURN the
 *   department that returned it). A dispatch is counted both at the centre
 *   (dispatch accuracy) and at the receiving department (extension rate); a
 *   redispatch to another unit counts as a wrong dispatch at the centre and
 *   at the department it was taken from.
 * - grid kind: the case location's grid code ("none" without one).
 * - district kind: the DISTRICT-level org unit above the grid's org unit
 *   when the configuration maps the grid (Grid.org_unit_id, then the
 *   OrgUnit parents); otherwise the first 9 digits of the grid code:
 *   county (6) and street (3), the street-level unit the grid code itself
 *   names. Attribution is fixed at the event: a later configuration change
 *   does not move past counts.
 * Area kinds get every count of the events in the area.
 *
 * Counting rules:
 * - reported/valid_reports: +1 at REPORT; REJECT and MERGE take the report
 *   back out of valid_reports in the month it was reported, so that the
 *   valid report rate compares a month's reports with themselves.
 * - a stage closing event (ACCEPT, VERIFY_RESULT, REGISTER, DISPATCH,
 *   REPORT_DISPOSAL, CHECK_RESULT) is on time unless the case's StageClock
 *   of that stage is marked overdue or the event is later than its
 *   deadline (0 = no limit); REPORT_DISPOSAL without a DISPOSE clock uses
 *   the case's disposal_deadline. A late stage or an OVERDUE event marks
 *   the case late.
 * - closed/closed_on_time: CLOSE from CHECKED; on time when the case was
 *   never late (no late stage, no OVERDUE event, Case.overdue unset). A
 *   CLOSE of a SHELVED case is not counted: shelved cases stay out of the
 *   disposal and closure denominators.
 * - overdue_undisposed (gauge): cases in DISPATCHED or IN_DISPOSAL whose
 *   disposal stage is overdue (an OVERDUE event of stage DISPOSE since the
 *   stage opened, or its clock marked overdue while open), per department
 *   holding it. Disposal, return, redispatch, rework, shelving or closure
 *   take it out.
 *
 * Indicators and scores: see store.h.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "store_internal.h"

#define EVT(x) CITYOPS__V1__CASE_EVENT_TYPE__CASE_EVENT_##x
#define CST(x) CITYOPS__V1__CASE_STATE__CASE_STATE_##x
#define STG(x) CITYOPS__V1__STAGE__STAGE_##x

#define US_PER_S 1000000LL
#define UTC8 (8 * 3600LL)
#define OBJ_MAX (STORE_MAX_ID + 1)

enum eval_kind { KIND_DEPT = 1, KIND_DISTRICT = 2, KIND_GRID = 3 };

/* Counter slots: the EvalCounts fields in field order (slot 8,
 * overdue_undisposed, is the gauge and stays 0 in 'C' rows). */
enum {
    NC_REPORTED,
    NC_VALID,
    NC_REGISTERED,
    NC_REGISTERED_ON_TIME,
    NC_DISPATCHED,
    NC_REDISPATCHED_AWAY,
    NC_DISPOSED,
    NC_DISPOSED_ON_TIME,
    NC_OVERDUE_UNDISPOSED,
    NC_CLOSED,
    NC_CLOSED_ON_TIME,
    NC_REWORKS,
    NC_EXTENSIONS,
    NC_REOPENED,
    EVAL_NC,
};

/* Slots charged to the centre in the department kind. */
#define CENTRE_SLOTS                                                           \
    ((1u << NC_REPORTED) | (1u << NC_VALID) | (1u << NC_REGISTERED) |          \
     (1u << NC_REGISTERED_ON_TIME) | (1u << NC_DISPATCHED) |                   \
     (1u << NC_REDISPATCHED_AWAY))

#define CENTRE "centre"
#define NONE "none"

struct delta {
    int64_t v[EVAL_NC];
};

/* Per-case record flags. */
#define EC_LATE 0x01            /* some stage was late */
#define EC_DISPOSE_OVERDUE 0x02 /* OVERDUE(DISPOSE) in the open stage */
#define EC_GAUGE 0x04           /* counted in the gauges (g_*) */

/* Workload bits: the state column (0 none) and two flags. */
#define WL_STATE_MASK 0x03
#define WL_DISPATCHED 1
#define WL_IN_DISPOSAL 2
#define WL_RETURNED 3
#define WL_OVERDUE 0x04
#define WL_SUPERVISED 0x08
#define WL_N 5

struct eval_case {
    uint8_t flags;
    uint32_t redispatch_seen;
    char g_dept[OBJ_MAX];
    char g_district[OBJ_MAX];
    char g_grid[OBJ_MAX];
    uint8_t w_bits;
    char w_holder[OBJ_MAX];
};

#define EC_VERSION 1
#define EC_MAX (1 + 1 + 4 + 1 + 4 * (1 + STORE_MAX_ID))

static const char *str0(const char *s)
{
    return s != NULL ? s : "";
}

static uint32_t be32_get(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 |
           p[3];
}

/* --- time --- */

static int64_t floor_div(int64_t a, int64_t b)
{
    int64_t q = a / b;

    return (a % b != 0 && (a < 0) != (b < 0)) ? q - 1 : q;
}

/* yyyymm of @us in UTC+8. */
static uint32_t month_of(int64_t us)
{
    time_t t = (time_t)(floor_div(us, US_PER_S) + UTC8);
    struct tm tm;

    if (gmtime_r(&t, &tm) == NULL) {
        return 0;
    }
    return (uint32_t)((tm.tm_year + 1900) * 100 + tm.tm_mon + 1);
}

/* Days since 1970-01-01 of a civil date (H. Hinnant's algorithm). */
static int64_t days_from_civil(int64_t y, unsigned m, unsigned d)
{
    int64_t era;
    unsigned yoe;
    unsigned doy;
    unsigned doe;

    y -= m <= 2;
    era = floor_div(y, 400);
    yoe = (unsigned)(y - era * 400);
    doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + (int64_t)doe - 719468;
}

/* UTC us of 00:00 UTC+8 on the first day of month @ym. */
static int64_t month_start(uint32_t ym)
{
    int64_t days = days_from_civil(ym / 100, ym % 100, 1);

    return (days * 86400 - UTC8) * US_PER_S;
}

static uint32_t month_next(uint32_t ym)
{
    return ym % 100 == 12 ? (ym / 100 + 1) * 100 + 1 : ym + 1;
}

static int all_digits(const char *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (p[i] < '0' || p[i] > '9') {
            return 0;
        }
    }
    return 1;
}

int store_eval_period_parse(const char *period, struct store_eval_period *out)
{
    const char *p = str0(period);
    size_t n = strlen(p);
    unsigned y;

    if (n < 4 || !all_digits(p, 4)) {
        return STORE_INVALID;
    }
    y = (unsigned)atoi(p);
    if (y < 1970 || y > 9998) {
        return STORE_INVALID;
    }
    if (n == 4) {
        out->first_month = y * 100 + 1;
        out->last_month = y * 100 + 12;
    } else if (n == 7 && p[4] == '-' && p[5] == 'Q' && p[6] >= '1' &&
               p[6] <= '4') {
        out->first_month = y * 100 + (unsigned)(p[6] - '1') * 3 + 1;
        out->last_month = out->first_month + 2;
    } else if (n == 7 && p[4] == '-' && all_digits(p + 5, 2) &&
               atoi(p + 5) >= 1 && atoi(p + 5) <= 12) {
        out->first_month = y * 100 + (unsigned)atoi(p + 5);
        out->last_month = out->first_month;
    } else {
        return STORE_INVALID;
    }
    out->start = month_start(out->first_month);
    out->end = month_start(month_next(out->last_month));
    return 0;
}

int store_eval_kind_parse(const char *group_by)
{
    const char *g = str0(group_by);

    if (g[0] == '\0' || strcmp(g, "department") == 0) {
        return KIND_DEPT;
    }
    if (strcmp(g, "district") == 0) {
        return KIND_DISTRICT;
    }
    if (strcmp(g, "grid") == 0) {
        return KIND_GRID;
    }
    return STORE_INVALID;
}

static const char *kind_name(int kind)
{
    return kind == KIND_DISTRICT ? "district"
           : kind == KIND_GRID   ? "grid"
                                 : "department";
}

/* --- objects --- */

#define ORG_DEPTH_MAX 8

/* The DISTRICT-level unit at or above org unit @id, "" if none. */
static int
org_district(struct store *s, MDB_txn *txn, const char *id, char out[OBJ_MAX])
{
    char cur[OBJ_MAX];
    int rv = 0;

    out[0] = '\0';
    snprintf(cur, sizeof(cur), "%s", id);
    for (int i = 0; i < ORG_DEPTH_MAX && cur[0] != '\0'; i++) {
        Cityops__V1__OrgUnit *u = NULL;

        rv = config_org_unit(s, txn, cur, &u);
        if (rv != 0) {
            break;
        }
        if (u->level == CITYOPS__V1__ORG_LEVEL__ORG_LEVEL_DISTRICT) {
            snprintf(out, OBJ_MAX, "%s", u->id);
        }
        snprintf(cur, sizeof(cur), "%s",
                 out[0] != '\0' ? "" : str0(u->parent_id));
        cityops__v1__org_unit__free_unpacked(u, NULL);
    }
    return rv == STORE_NOTFOUND ? 0 : rv;
}

static int
district_of(struct store *s, MDB_txn *txn, const char *grid, char out[OBJ_MAX])
{
    Cityops__V1__Grid *g = NULL;
    size_t n = strlen(grid);
    int rv;

    out[0] = '\0';
    if (n == 0) {
        snprintf(out, OBJ_MAX, "%s", NONE);
        return 0;
    }
    rv = config_grid(s, txn, grid, &g);
    if (rv == 0) {
        rv = org_district(s, txn, str0(g->org_unit_id), out);
        cityops__v1__grid__free_unpacked(g, NULL);
    }
    if (rv != 0 && rv != STORE_NOTFOUND) {
        return rv;
    }
    if (out[0] == '\0') {
        snprintf(out, OBJ_MAX, "%.*s", (int)(n < 9 ? n : 9), grid);
    }
    return 0;
}

static void grid_of(const Cityops__V1__Case *c, char out[OBJ_MAX])
{
    const char *g = c->location != NULL ? str0(c->location->grid_code) : "";

    snprintf(out, OBJ_MAX, "%s", g[0] != '\0' ? g : NONE);
}

/* --- the per-case record --- */

static size_t put_str(uint8_t *p, const char *s)
{
    size_t n = strlen(s);

    p[0] = (uint8_t)n;
    memcpy(p + 1, s, n);
    return n + 1;
}

static int get_str(const uint8_t **p, const uint8_t *end, char out[OBJ_MAX])
{
    size_t n;

    if (*p >= end) {
        return -1;
    }
    n = **p;
    if (n > STORE_MAX_ID || (size_t)(end - *p) < n + 1) {
        return -1;
    }
    memcpy(out, *p + 1, n);
    out[n] = '\0';
    *p += n + 1;
    return 0;
}

static size_t ec_encode(const struct eval_case *r, uint8_t *buf)
{
    uint8_t *p = buf;

    *p++ = EC_VERSION;
    *p++ = r->flags;
    store_be32_put(p, r->redispatch_seen);
    p += 4;
    *p++ = r->w_bits;
    p += put_str(p, r->g_dept);
    p += put_str(p, r->g_district);
    p += put_str(p, r->g_grid);
    p += put_str(p, r->w_holder);
    return (size_t)(p - buf);
}

static int ec_decode(const uint8_t *buf, size_t len, struct eval_case *r)
{
    const uint8_t *p = buf;
    const uint8_t *end = buf + len;

    memset(r, 0, sizeof(*r));
    if (len < 7 || p[0] != EC_VERSION) {
        return -1;
    }
    r->flags = p[1];
    r->redispatch_seen = be32_get(p + 2);
    r->w_bits = p[6];
    p += 7;
    if (get_str(&p, end, r->g_dept) != 0 ||
        get_str(&p, end, r->g_district) != 0 ||
        get_str(&p, end, r->g_grid) != 0 ||
        get_str(&p, end, r->w_holder) != 0 || p != end) {
        return -1;
    }
    return 0;
}

static void ec_key(uint8_t k[9], uint64_t case_id)
{
    k[0] = 'K';
    store_be64_put(k + 1, case_id);
}

static int
ec_load(struct store *s, MDB_txn *txn, uint64_t case_id, struct eval_case *r)
{
    uint8_t k[9];
    MDB_val key = {sizeof(k), k};
    MDB_val val;
    int rc;

    memset(r, 0, sizeof(*r));
    ec_key(k, case_id);
    rc = mdb_get(txn, s->dbi[STORE_DB_EVAL], &key, &val);
    if (rc == MDB_NOTFOUND) {
        return 0;
    }
    if (rc != 0) {
        return store_mdb_err(s, rc, "get eval case/%llu",
                             (unsigned long long)case_id);
    }
    if (ec_decode(val.mv_data, val.mv_size, r) != 0) {
        return store_errf(s, STORE_CORRUPT, "decode eval case/%llu",
                          (unsigned long long)case_id);
    }
    return 0;
}

static int ec_save(struct store *s,
                   MDB_txn *txn,
                   uint64_t case_id,
                   const struct eval_case *before,
                   const struct eval_case *after)
{
    uint8_t a[EC_MAX];
    uint8_t b[EC_MAX];
    size_t na = ec_encode(after, a);
    size_t nb = ec_encode(before, b);
    uint8_t k[9];
    MDB_val key = {sizeof(k), k};
    MDB_val val = {na, a};
    int rc;

    if (na == nb && memcmp(a, b, na) == 0) {
        return 0;
    }
    ec_key(k, case_id);
    rc = mdb_put(txn, s->dbi[STORE_DB_EVAL], &key, &val, 0);
    if (rc != 0) {
        return store_mdb_err(s, rc, "put eval case/%llu",
                             (unsigned long long)case_id);
    }
    return 0;
}

/* --- counters --- */

static size_t counter_key(uint8_t *k, uint32_t month, int kind, const char *obj)
{
    size_t n = strlen(obj);

    k[0] = 'C';
    store_be32_put(k + 1, month);
    k[5] = (uint8_t)kind;
    memcpy(k + 6, obj, n);
    return 6 + n;
}

static int delta_zero(const struct delta *d)
{
    for (int i = 0; i < EVAL_NC; i++) {
        if (d->v[i] != 0) {
            return 0;
        }
    }
    return 1;
}

static int counter_add(struct store *s,
                       MDB_txn *txn,
                       uint32_t month,
                       int kind,
                       const char *obj,
                       const struct delta *d)
{
    uint8_t k[6 + OBJ_MAX];
    uint8_t v[EVAL_NC * 8];
    MDB_cursor *cur;
    MDB_val key;
    MDB_val val;
    unsigned int flags = 0;
    int rc;

    if (delta_zero(d)) {
        return 0;
    }
    key.mv_data = k;
    key.mv_size = counter_key(k, month, kind, obj);
    memset(v, 0, sizeof(v));
    /* One descent: the put overwrites where the get found the row. */
    rc = mdb_cursor_open(txn, s->dbi[STORE_DB_EVAL], &cur);
    if (rc != 0) {
        return store_mdb_err(s, rc, "get eval counters %u/%s", month, obj);
    }
    rc = mdb_cursor_get(cur, &key, &val, MDB_SET_KEY);
    if (rc == 0 && val.mv_size == sizeof(v)) {
        memcpy(v, val.mv_data, sizeof(v));
        flags = MDB_CURRENT;
    } else if (rc == 0) {
        mdb_cursor_close(cur);
        return store_errf(s, STORE_CORRUPT, "eval counters %u/%s: %zu bytes",
                          month, obj, val.mv_size);
    } else if (rc != MDB_NOTFOUND) {
        mdb_cursor_close(cur);
        return store_mdb_err(s, rc, "get eval counters %u/%s", month, obj);
    }
    for (int i = 0; i < EVAL_NC; i++) {
        store_be64_put(v + 8 * i,
                       store_be64_get(v + 8 * i) + (uint64_t)d->v[i]);
    }
    val.mv_size = sizeof(v);
    val.mv_data = v;
    rc = mdb_cursor_put(cur, &key, &val, flags);
    mdb_cursor_close(cur);
    if (rc != 0) {
        return store_mdb_err(s, rc, "put eval counters %u/%s", month, obj);
    }
    return 0;
}

/* The event's counts to the three kinds: @centre and @dept split the
 * department kind (see CENTRE_SLOTS); the areas get their sum. */
static int counts_write(struct store *s,
                        MDB_txn *txn,
                        uint32_t month,
                        const struct delta *e,
                        const char *dept,
                        const char *district,
                        const char *grid)
{
    struct delta c = {{0}};
    struct delta d = {{0}};
    int rv;

    for (int i = 0; i < EVAL_NC; i++) {
        if (CENTRE_SLOTS & (1u << i)) {
            c.v[i] = e->v[i];
        }
        if (!(CENTRE_SLOTS & (1u << i)) || i == NC_DISPATCHED) {
            d.v[i] = e->v[i];
        }
    }
    if (dept[0] == '\0') {
        dept = CENTRE;
    }
    if (strcmp(dept, CENTRE) == 0) {
        for (int i = 0; i < EVAL_NC; i++) {
            c.v[i] = e->v[i];
        }
        memset(&d, 0, sizeof(d));
    }
    rv = counter_add(s, txn, month, KIND_DEPT, CENTRE, &c);
    if (rv == 0) {
        rv = counter_add(s, txn, month, KIND_DEPT, dept, &d);
    }
    if (rv == 0) {
        rv = counter_add(s, txn, month, KIND_DISTRICT, district, e);
    }
    if (rv == 0) {
        rv = counter_add(s, txn, month, KIND_GRID, grid, e);
    }
    return rv;
}

/* --- gauges --- */

static size_t gauge_key(uint8_t *k, int kind, const char *obj, uint32_t month)
{
    size_t n = strlen(obj);

    k[0] = 'G';
    k[1] = (uint8_t)kind;
    memcpy(k + 2, obj, n);
    k[2 + n] = '\0';
    store_be32_put(k + 3 + n, month);
    return 7 + n;
}

/* The gauge of (@kind, @obj) at the end of @month: the last value written
 * at or before it, 0 if none. */
static int gauge_at(struct store *s,
                    MDB_txn *txn,
                    MDB_cursor *cur,
                    int kind,
                    const char *obj,
                    uint32_t month,
                    int64_t *value)
{
    uint8_t k[7 + OBJ_MAX];
    size_t n = gauge_key(k, kind, obj, 0);
    MDB_val key;
    MDB_val val;
    int rc;

    (void)txn;
    *value = 0;
    store_be32_put(k + n - 4, month == UINT32_MAX ? month : month + 1);
    key.mv_size = n;
    key.mv_data = k;
    rc = mdb_cursor_get(cur, &key, &val, MDB_SET_RANGE);
    if (rc == MDB_NOTFOUND) {
        rc = mdb_cursor_get(cur, &key, &val, MDB_LAST);
    } else if (rc == 0) {
        rc = mdb_cursor_get(cur, &key, &val, MDB_PREV);
    }
    if (rc == MDB_NOTFOUND) {
        return 0;
    }
    if (rc != 0) {
        return store_mdb_err(s, rc, "seek eval gauge %s", obj);
    }
    if (key.mv_size != n || memcmp(key.mv_data, k, n - 4) != 0 ||
        be32_get((const uint8_t *)key.mv_data + n - 4) > month) {
        return 0;
    }
    if (val.mv_size != 8) {
        return store_errf(s, STORE_CORRUPT, "eval gauge %s: %zu bytes", obj,
                          val.mv_size);
    }
    *value = (int64_t)store_be64_get(val.mv_data);
    return 0;
}

static int gauge_add(struct store *s,
                     MDB_txn *txn,
                     int kind,
                     const char *obj,
                     uint32_t month,
                     int64_t d)
{
    uint8_t k[7 + OBJ_MAX];
    uint8_t v[8];
    MDB_cursor *cur;
    MDB_val key;
    MDB_val val;
    int64_t now;
    int rv;
    int rc;

    rc = mdb_cursor_open(txn, s->dbi[STORE_DB_EVAL], &cur);
    if (rc != 0) {
        return store_mdb_err(s, rc, "open eval cursor");
    }
    rv = gauge_at(s, txn, cur, kind, obj, UINT32_MAX - 1, &now);
    mdb_cursor_close(cur);
    if (rv != 0) {
        return rv;
    }
    key.mv_data = k;
    key.mv_size = gauge_key(k, kind, obj, month);
    store_be64_put(v, (uint64_t)(now + d));
    val.mv_size = sizeof(v);
    val.mv_data = v;
    rc = mdb_put(txn, s->dbi[STORE_DB_EVAL], &key, &val, 0);
    if (rc != 0) {
        return store_mdb_err(s, rc, "put eval gauge %s", obj);
    }
    return 0;
}

static int gauges_move(struct store *s,
                       MDB_txn *txn,
                       uint32_t month,
                       const struct eval_case *r,
                       int64_t d)
{
    int rv;

    rv = gauge_add(s, txn, KIND_DEPT, r->g_dept, month, d);
    if (rv == 0) {
        rv = gauge_add(s, txn, KIND_DISTRICT, r->g_district, month, d);
    }
    if (rv == 0) {
        rv = gauge_add(s, txn, KIND_GRID, r->g_grid, month, d);
    }
    return rv;
}

/* --- workload --- */

static int workload_add(
    struct store *s, MDB_txn *txn, const char *holder, uint8_t bits, int64_t d)
{
    uint8_t k[1 + OBJ_MAX];
    uint8_t v[WL_N * 8];
    uint64_t x[WL_N];
    size_t n = strlen(holder);
    MDB_val key = {1 + n, k};
    MDB_val val;
    int zero = 1;
    int rc;

    if (bits == 0) {
        return 0;
    }
    k[0] = 'W';
    memcpy(k + 1, holder, n);
    memset(v, 0, sizeof(v));
    rc = mdb_get(txn, s->dbi[STORE_DB_EVAL], &key, &val);
    if (rc == 0 && val.mv_size == sizeof(v)) {
        memcpy(v, val.mv_data, sizeof(v));
    } else if (rc == 0) {
        return store_errf(s, STORE_CORRUPT, "eval workload %s: %zu bytes",
                          holder, val.mv_size);
    } else if (rc != MDB_NOTFOUND) {
        return store_mdb_err(s, rc, "get eval workload %s", holder);
    }
    for (int i = 0; i < WL_N; i++) {
        x[i] = store_be64_get(v + 8 * i);
    }
    if ((bits & WL_STATE_MASK) != 0) {
        x[(bits & WL_STATE_MASK) - 1] += (uint64_t)d;
    }
    if (bits & WL_OVERDUE) {
        x[3] += (uint64_t)d;
    }
    if (bits & WL_SUPERVISED) {
        x[4] += (uint64_t)d;
    }
    for (int i = 0; i < WL_N; i++) {
        store_be64_put(v + 8 * i, x[i]);
        zero &= x[i] == 0;
    }
    if (zero) {
        rc = mdb_del(txn, s->dbi[STORE_DB_EVAL], &key, NULL);
        rc = rc == MDB_NOTFOUND ? 0 : rc;
    } else {
        val.mv_size = sizeof(v);
        val.mv_data = v;
        rc = mdb_put(txn, s->dbi[STORE_DB_EVAL], &key, &val, 0);
    }
    if (rc != 0) {
        return store_mdb_err(s, rc, "put eval workload %s", holder);
    }
    return 0;
}

/* --- from the case --- */

static const Cityops__V1__StageClock *clock_of(const Cityops__V1__Case *c,
                                               Cityops__V1__Stage stage)
{
    const Cityops__V1__StageClock *found = NULL;

    for (size_t i = 0; i < c->n_clocks; i++) {
        if (c->clocks[i] != NULL && c->clocks[i]->stage == stage) {
            found = c->clocks[i]; /* the latest of the stage */
        }
    }
    return found;
}

static int any_clock_overdue(const Cityops__V1__Case *c)
{
    for (size_t i = 0; i < c->n_clocks; i++) {
        if (c->clocks[i] != NULL && c->clocks[i]->overdue) {
            return 1;
        }
    }
    return 0;
}

static Cityops__V1__Stage stage_closed_by(Cityops__V1__CaseEventType t)
{
    switch (t) {
    case EVT(ACCEPT):
        return STG(ACCEPT);
    case EVT(VERIFY_RESULT):
        return STG(VERIFY);
    case EVT(REGISTER):
        return STG(REGISTER);
    case EVT(DISPATCH):
    case EVT(REDISPATCH):
        return STG(DISPATCH);
    case EVT(REPORT_DISPOSAL):
        return STG(DISPOSE);
    case EVT(CHECK_RESULT):
        return STG(CHECK);
    default:
        return STG(UNSPECIFIED);
    }
}

/* 1 if @ev closes its stage after the deadline. A clock closed earlier
 * (a redispatch long after the first dispatch) is not this event's. */
static int stage_late(const Cityops__V1__Case *c,
                      const Cityops__V1__CaseEvent *ev)
{
    Cityops__V1__Stage stage = stage_closed_by(ev->type);
    const Cityops__V1__StageClock *k;
    int64_t deadline;

    if (stage == STG(UNSPECIFIED)) {
        return 0;
    }
    k = clock_of(c, stage);
    if (k != NULL && k->done != 0 && k->done != ev->at) {
        return 0;
    }
    if (k != NULL && k->overdue) {
        return 1;
    }
    deadline = k != NULL ? k->deadline : 0;
    if (k == NULL && stage == STG(DISPOSE)) {
        deadline = c->disposal_deadline;
    }
    return deadline != 0 && ev->at > deadline;
}

static int case_open(Cityops__V1__CaseState st)
{
    return st >= CST(REPORTED) && st <= CST(SHELVED);
}

/* Who holds the case in the workload view, and in which column. */
static uint8_t
workload_bits(const Cityops__V1__Case *c, uint8_t flags, char holder[OBJ_MAX])
{
    const char *h = CENTRE;
    uint8_t bits = 0;

    holder[0] = '\0';
    if (!case_open(c->state)) {
        return 0;
    }
    switch (c->state) {
    case CST(DISPATCHED):
        bits = WL_DISPATCHED;
        h = str0(c->department_id);
        break;
    case CST(IN_DISPOSAL):
        bits = WL_IN_DISPOSAL;
        h = str0(c->department_id);
        break;
    case CST(RETURNED):
        bits = WL_RETURNED;
        h = str0(c->previous_department_id);
        break;
    case CST(DISPOSED):
    case CST(CHECKING):
    case CST(CHECKED):
        h = str0(c->department_id);
        break;
    default:
        break;
    }
    if ((flags & EC_LATE) || c->overdue || any_clock_overdue(c)) {
        bits |= WL_OVERDUE;
    }
    if (c->supervision_level > 0) {
        bits |= WL_SUPERVISED;
    }
    snprintf(holder, OBJ_MAX, "%s", h[0] != '\0' ? h : CENTRE);
    return bits;
}

static int in_disposal(Cityops__V1__CaseState st)
{
    return st == CST(DISPATCHED) || st == CST(IN_DISPOSAL);
}

/* The event's counts (and the late flags of @r). */
static void event_counts(const Cityops__V1__Case *c,
                         const Cityops__V1__CaseEvent *ev,
                         struct eval_case *r,
                         struct delta *e,
                         int *away)
{
    int late = stage_late(c, ev);
    uint32_t redispatch = c->counters != NULL ? c->counters->redispatch : 0;

    *away = 0;
    if (late) {
        r->flags |= EC_LATE;
    }
    switch (ev->type) {
    case EVT(REPORT):
        e->v[NC_REPORTED] = 1;
        e->v[NC_VALID] = 1;
        break;
    case EVT(REGISTER):
        e->v[NC_REGISTERED] = 1;
        e->v[NC_REGISTERED_ON_TIME] = !late;
        break;
    case EVT(DISPATCH):
        e->v[NC_DISPATCHED] = 1;
        r->flags &= (uint8_t)~EC_DISPOSE_OVERDUE;
        r->redispatch_seen = redispatch;
        break;
    case EVT(REDISPATCH):
        e->v[NC_DISPATCHED] = 1;
        if (redispatch > r->redispatch_seen) {
            e->v[NC_REDISPATCHED_AWAY] = 1;
            *away = 1;
        }
        r->flags &= (uint8_t)~EC_DISPOSE_OVERDUE;
        r->redispatch_seen = redispatch;
        break;
    case EVT(REPORT_DISPOSAL):
        e->v[NC_DISPOSED] = 1;
        e->v[NC_DISPOSED_ON_TIME] = !late;
        r->flags &= (uint8_t)~EC_DISPOSE_OVERDUE;
        break;
    case EVT(REWORK):
        e->v[NC_REWORKS] = 1;
        r->flags &= (uint8_t)~EC_DISPOSE_OVERDUE;
        break;
    case EVT(EXTENSION_APPROVE):
        e->v[NC_EXTENSIONS] = 1;
        break;
    case EVT(CLOSE):
        if (ev->from_state == CST(CHECKED)) {
            e->v[NC_CLOSED] = 1;
            e->v[NC_CLOSED_ON_TIME] =
                !(r->flags & EC_LATE) && !c->overdue && !any_clock_overdue(c);
        }
        break;
    case EVT(REOPEN):
        e->v[NC_REOPENED] = 1;
        break;
    case EVT(OVERDUE):
        r->flags |= EC_LATE;
        if (ev->stage == STG(DISPOSE) ||
            (ev->stage == STG(UNSPECIFIED) && in_disposal(c->state))) {
            r->flags |= EC_DISPOSE_OVERDUE;
        }
        break;
    default:
        break;
    }
}

static int gauge_update(struct store *s,
                        MDB_txn *txn,
                        uint32_t month,
                        const Cityops__V1__Case *c,
                        const char *district,
                        const char *grid,
                        struct eval_case *r)
{
    const Cityops__V1__StageClock *k = clock_of(c, STG(DISPOSE));
    int want = in_disposal(c->state) && str0(c->department_id)[0] != '\0' &&
               ((r->flags & EC_DISPOSE_OVERDUE) ||
                (k != NULL && k->overdue && k->done == 0));
    int same = (r->flags & EC_GAUGE) && want &&
               strcmp(r->g_dept, c->department_id) == 0 &&
               strcmp(r->g_district, district) == 0 &&
               strcmp(r->g_grid, grid) == 0;
    int rv;

    if (same || (!want && !(r->flags & EC_GAUGE))) {
        return 0;
    }
    if (r->flags & EC_GAUGE) {
        rv = gauges_move(s, txn, month, r, -1);
        if (rv != 0) {
            return rv;
        }
        r->flags &= (uint8_t)~EC_GAUGE;
        r->g_dept[0] = r->g_district[0] = r->g_grid[0] = '\0';
    }
    if (!want) {
        return 0;
    }
    snprintf(r->g_dept, OBJ_MAX, "%s", c->department_id);
    snprintf(r->g_district, OBJ_MAX, "%s", district);
    snprintf(r->g_grid, OBJ_MAX, "%s", grid);
    r->flags |= EC_GAUGE;
    return gauges_move(s, txn, month, r, 1);
}

static int workload_update(struct store *s,
                           MDB_txn *txn,
                           const Cityops__V1__Case *c,
                           struct eval_case *r)
{
    char holder[OBJ_MAX];
    uint8_t bits = workload_bits(c, r->flags, holder);
    int rv;

    if (bits == r->w_bits && strcmp(holder, r->w_holder) == 0) {
        return 0;
    }
    rv = workload_add(s, txn, r->w_holder, r->w_bits, -1);
    if (rv == 0) {
        rv = workload_add(s, txn, holder, bits, 1);
    }
    r->w_bits = bits;
    snprintf(r->w_holder, OBJ_MAX, "%s", bits != 0 ? holder : "");
    return rv;
}

int eval_on_event(struct store *s,
                  MDB_txn *txn,
                  const Cityops__V1__Case *c,
                  const Cityops__V1__CaseEvent *ev)
{
    struct eval_case before;
    struct eval_case r;
    struct delta e = {{0}};
    struct delta away = {{0}};
    char district[OBJ_MAX];
    char grid[OBJ_MAX];
    uint32_t month = month_of(ev->at);
    int is_away;
    int rv;

    if (ev->seq == 1) {
        memset(&before, 0, sizeof(before)); /* a new case: no record yet */
    } else {
        rv = ec_load(s, txn, c->case_id, &before);
        if (rv != 0) {
            return rv;
        }
    }
    r = before;
    grid_of(c, grid);
    rv = district_of(s, txn, strcmp(grid, NONE) == 0 ? "" : grid, district);
    if (rv != 0) {
        return rv;
    }
    event_counts(c, ev, &r, &e, &is_away);
    if (is_away) {
        /* The centre and the areas count it with the dispatch; the
         * department it was taken from gets the wrong dispatch. */
        away.v[NC_REDISPATCHED_AWAY] = 1;
        rv = counter_add(s, txn, month, KIND_DEPT,
                         r.w_holder[0] != '\0' ? r.w_holder : CENTRE, &away);
    }
    if (rv == 0) {
        rv = counts_write(s, txn, month, &e, str0(ev->department_id), district,
                          grid);
    }
    if (rv == 0 && (ev->type == EVT(REJECT) || ev->type == EVT(MERGE))) {
        struct delta inv = {{0}};

        inv.v[NC_VALID] = -1;
        rv = counts_write(
            s, txn, month_of(c->times != NULL ? c->times->reported : ev->at),
            &inv, CENTRE, district, grid);
    }
    if (rv == 0) {
        rv = gauge_update(s, txn, month, c, district, grid, &r);
    }
    if (rv == 0) {
        rv = workload_update(s, txn, c, &r);
    }
    if (rv == 0) {
        rv = ec_save(s, txn, c->case_id, &before, &r);
    }
    return rv;
}

/* --- the report --- */

struct row {
    char obj[OBJ_MAX];
    uint64_t n[EVAL_NC];
};

struct rows {
    struct row *v;
    size_t n;
    size_t cap;
};

/* The row of @obj, inserted in order if new; NULL when out of memory. */
static struct row *rows_get(struct rows *rs, const char *obj, size_t len)
{
    size_t lo = 0;
    size_t hi = rs->n;
    char key[OBJ_MAX];

    snprintf(key, sizeof(key), "%.*s", (int)len, obj);
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        int cmp = strcmp(rs->v[mid].obj, key);

        if (cmp == 0) {
            return &rs->v[mid];
        }
        if (cmp < 0) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    if (rs->n == rs->cap) {
        size_t cap = rs->cap != 0 ? rs->cap * 2 : 64;
        struct row *v = realloc(rs->v, cap * sizeof(*v));

        if (v == NULL) {
            return NULL;
        }
        rs->v = v;
        rs->cap = cap;
    }
    memmove(&rs->v[lo + 1], &rs->v[lo], (rs->n - lo) * sizeof(*rs->v));
    memset(&rs->v[lo], 0, sizeof(*rs->v));
    memcpy(rs->v[lo].obj, key, strlen(key) + 1);
    rs->n++;
    return &rs->v[lo];
}

static int month_rows(struct store *s,
                      MDB_txn *txn,
                      MDB_cursor *cur,
                      uint32_t month,
                      int kind,
                      struct rows *rs)
{
    uint8_t k[6];
    MDB_val key = {sizeof(k), k};
    MDB_val val;
    int rc;

    (void)txn;
    k[0] = 'C';
    store_be32_put(k + 1, month);
    k[5] = (uint8_t)kind;
    rc = mdb_cursor_get(cur, &key, &val, MDB_SET_RANGE);
    while (rc == 0 && key.mv_size >= sizeof(k) &&
           memcmp(key.mv_data, k, sizeof(k)) == 0) {
        const uint8_t *p = val.mv_data;
        struct row *r;

        if (val.mv_size != EVAL_NC * 8 ||
            key.mv_size - sizeof(k) > STORE_MAX_ID) {
            return store_errf(s, STORE_CORRUPT,
                              "eval counters of %u: %zu bytes", month,
                              val.mv_size);
        }
        r = rows_get(rs, (const char *)key.mv_data + sizeof(k),
                     key.mv_size - sizeof(k));
        if (r == NULL) {
            return store_errf(s, STORE_NOMEM, "eval report: out of memory");
        }
        for (int i = 0; i < EVAL_NC; i++) {
            r->n[i] += store_be64_get(p + 8 * i);
        }
        rc = mdb_cursor_get(cur, &key, &val, MDB_NEXT);
    }
    if (rc != 0 && rc != MDB_NOTFOUND) {
        return store_mdb_err(s, rc, "scan eval counters of %u", month);
    }
    return 0;
}

/* Add every object's gauge at the end of @month into its row. */
static int gauge_rows(struct store *s,
                      MDB_txn *txn,
                      MDB_cursor *cur,
                      uint32_t month,
                      int kind,
                      struct rows *rs)
{
    uint8_t k[7 + OBJ_MAX];
    MDB_val key;
    MDB_val val;
    int rc;

    k[0] = 'G';
    k[1] = (uint8_t)kind;
    key.mv_size = 2;
    key.mv_data = k;
    rc = mdb_cursor_get(cur, &key, &val, MDB_SET_RANGE);
    while (rc == 0 && key.mv_size >= 7 && memcmp(key.mv_data, k, 2) == 0) {
        char obj[OBJ_MAX];
        size_t n = key.mv_size - 7; /* 'G' kind obj '\0' month */
        int64_t v;
        struct row *r;
        int rv;

        if (n > STORE_MAX_ID) {
            return store_errf(s, STORE_CORRUPT, "eval gauge key of %zu bytes",
                              key.mv_size);
        }
        memcpy(obj, (const char *)key.mv_data + 2, n);
        obj[n] = '\0';
        rv = gauge_at(s, txn, cur, kind, obj, month, &v);
        if (rv != 0) {
            return rv;
        }
        if (v > 0) {
            r = rows_get(rs, obj, n);
            if (r == NULL) {
                return store_errf(s, STORE_NOMEM, "eval report: out of memory");
            }
            r->n[NC_OVERDUE_UNDISPOSED] = (uint64_t)v;
        }
        /* On to the next object: past every month of this one. */
        key.mv_size = gauge_key(k, kind, obj, UINT32_MAX);
        key.mv_data = k;
        rc = mdb_cursor_get(cur, &key, &val, MDB_SET_RANGE);
        if (rc == 0 && key.mv_size == 7 + n &&
            memcmp(key.mv_data, k, 7 + n) == 0) {
            rc = mdb_cursor_get(cur, &key, &val, MDB_NEXT);
        }
    }
    if (rc != 0 && rc != MDB_NOTFOUND) {
        return store_mdb_err(s, rc, "scan eval gauges");
    }
    return 0;
}

/* Indicators, in report order. */
enum {
    IND_DISPOSAL,
    IND_ONTIME_DISPOSAL,
    IND_CLOSURE,
    IND_ONTIME_CLOSURE,
    IND_REWORK,
    IND_EXTENSION,
    IND_ONTIME_REGISTER,
    IND_DISPATCH_ACCURACY,
    IND_VALID_REPORT,
    IND_OVERDUE_BACKLOG,
    IND_N,
};

const char *const store_eval_indicators[STORE_EVAL_INDICATORS] = {
    "disposal_rate",        "ontime_disposal_rate", "closure_rate",
    "ontime_closure_rate",  "rework_rate",          "extension_rate",
    "ontime_register_rate", "dispatch_accuracy",    "valid_report_rate",
    "overdue_backlog",
};

_Static_assert(IND_N == STORE_EVAL_INDICATORS, "indicator table");

#define IND(x) (1u << IND_##x)
#define MASK_DEPT                                                              \
    (IND(DISPOSAL) | IND(ONTIME_DISPOSAL) | IND(CLOSURE) |                     \
     IND(ONTIME_CLOSURE) | IND(REWORK) | IND(EXTENSION) |                      \
     IND(OVERDUE_BACKLOG))
#define MASK_CENTRE                                                            \
    (IND(ONTIME_REGISTER) | IND(DISPATCH_ACCURACY) | IND(VALID_REPORT))
#define MASK_ALL ((1u << IND_N) - 1)
/* Rates where less is better: the score takes 1 - value. */
#define MASK_INVERSE (IND(REWORK) | IND(EXTENSION))

/* The weights of @kind: its configured EvalWeights (codes this file does
 * not know weigh nothing), else every rate the same and the backlog, a
 * count, nothing. */
static int weights_of(struct store *s, MDB_txn *txn, int kind, double w[IND_N])
{
    Cityops__V1__EvalWeights *cw = NULL;
    int rv;

    for (int i = 0; i < IND_N; i++) {
        w[i] = i == IND_OVERDUE_BACKLOG ? 0.0 : 1.0 / (IND_N - 1);
    }
    rv = config_eval_weights(s, txn, kind_name(kind), &cw);
    if (rv == STORE_NOTFOUND) {
        return 0;
    }
    if (rv != 0) {
        return rv;
    }
    for (int i = 0; i < IND_N; i++) {
        w[i] = 0.0;
        for (size_t j = 0; j < cw->n_weights; j++) {
            if (strcmp(str0(cw->weights[j]->indicator),
                       store_eval_indicators[i]) == 0) {
                w[i] = cw->weights[j]->weight;
            }
        }
    }
    cityops__v1__eval_weights__free_unpacked(cw, NULL);
    return 0;
}

static double ratio(uint64_t num, uint64_t den, int *defined)
{
    double v;

    *defined = den != 0;
    if (den == 0) {
        return 1.0;
    }
    v = (double)num / (double)den;
    return v > 1.0 ? 1.0 : v;
}

static void
indicators_of(const struct row *r, double v[IND_N], int defined[IND_N])
{
    const uint64_t *n = r->n;
    uint64_t should = n[NC_DISPOSED] + n[NC_OVERDUE_UNDISPOSED];

    v[IND_DISPOSAL] = ratio(n[NC_DISPOSED], should, &defined[IND_DISPOSAL]);
    v[IND_ONTIME_DISPOSAL] =
        ratio(n[NC_DISPOSED_ON_TIME], should, &defined[IND_ONTIME_DISPOSAL]);
    v[IND_CLOSURE] = ratio(n[NC_CLOSED], should, &defined[IND_CLOSURE]);
    v[IND_ONTIME_CLOSURE] =
        ratio(n[NC_CLOSED_ON_TIME], should, &defined[IND_ONTIME_CLOSURE]);
    v[IND_REWORK] = ratio(n[NC_REWORKS], n[NC_DISPOSED], &defined[IND_REWORK]);
    v[IND_EXTENSION] =
        ratio(n[NC_EXTENSIONS], n[NC_DISPATCHED], &defined[IND_EXTENSION]);
    v[IND_ONTIME_REGISTER] = ratio(n[NC_REGISTERED_ON_TIME], n[NC_REGISTERED],
                                   &defined[IND_ONTIME_REGISTER]);
    v[IND_DISPATCH_ACCURACY] =
        1.0 - ratio(n[NC_REDISPATCHED_AWAY], n[NC_DISPATCHED],
                    &defined[IND_DISPATCH_ACCURACY]);
    if (!defined[IND_DISPATCH_ACCURACY]) {
        v[IND_DISPATCH_ACCURACY] = 1.0;
    }
    v[IND_VALID_REPORT] =
        ratio(n[NC_VALID], n[NC_REPORTED], &defined[IND_VALID_REPORT]);
    v[IND_OVERDUE_BACKLOG] = (double)n[NC_OVERDUE_UNDISPOSED];
    defined[IND_OVERDUE_BACKLOG] = 1;
}

const char *store_eval_grade(double score)
{
    return score >= 90.0   ? "A"
           : score >= 75.0 ? "B"
           : score >= 60.0 ? "C"
           : score >= 40.0 ? "D"
                           : "E";
}

double store_eval_score(const double value[STORE_EVAL_INDICATORS],
                        const int defined[STORE_EVAL_INDICATORS],
                        const double weight[STORE_EVAL_INDICATORS],
                        int *scored)
{
    double sum = 0.0;
    double wsum = 0.0;

    for (int i = 0; i < IND_N; i++) {
        double x = value[i];

        if (!defined[i] || weight[i] <= 0.0 || i == IND_OVERDUE_BACKLOG) {
            continue;
        }
        if (MASK_INVERSE & (1u << i)) {
            x = 1.0 - x;
        }
        sum += weight[i] * x;
        wsum += weight[i];
    }
    *scored = wsum > 0.0;
    /* Rounded to 1e-6 so that a grade bound is not missed by the last bit
     * of a renormalisation (3 x 1/9 over 5 x 1/9 is 60, not 59.99...). */
    return wsum > 0.0 ? round(1e8 * sum / wsum) / 1e6 : 0.0;
}

static char *dup_str(const char *s)
{
    size_t n = strlen(s) + 1;
    char *d = malloc(n);

    if (d != NULL) {
        memcpy(d, s, n);
    }
    return d;
}

/* The display name of an object: the configured department, org unit or
 * grid name, else its id. */
static char *
object_name(struct store *s, MDB_txn *txn, int kind, const char *obj)
{
    ProtobufCMessage *m = NULL;
    const char *name = NULL;
    char *d;

    if (kind == KIND_DEPT && strcmp(obj, CENTRE) == 0) {
        return dup_str("command centre");
    }
    if (kind == KIND_DEPT &&
        config_department(s, txn, obj, (Cityops__V1__Department **)&m) == 0) {
        name = ((Cityops__V1__Department *)m)->name;
    } else if (kind == KIND_DISTRICT &&
               config_org_unit(s, txn, obj, (Cityops__V1__OrgUnit **)&m) == 0) {
        name = ((Cityops__V1__OrgUnit *)m)->name;
    } else if (kind == KIND_GRID &&
               config_grid(s, txn, obj, (Cityops__V1__Grid **)&m) == 0) {
        name = ((Cityops__V1__Grid *)m)->name;
    }
    d = dup_str(name != NULL && name[0] != '\0' ? name : obj);
    if (m != NULL) {
        protobuf_c_message_free_unpacked(m, NULL);
    }
    return d;
}

static int row_fill(struct store *s,
                    MDB_txn *txn,
                    const struct row *r,
                    int kind,
                    const double w[IND_N],
                    Cityops__V1__EvalRow *out)
{
    unsigned mask = kind != KIND_DEPT             ? MASK_ALL
                    : strcmp(r->obj, CENTRE) == 0 ? MASK_CENTRE
                                                  : MASK_DEPT;
    Cityops__V1__EvalCounts *c;
    double v[IND_N];
    int defined[IND_N];
    int scored;
    size_t k = 0;

    cityops__v1__eval_row__init(out);
    out->object_id = dup_str(r->obj);
    out->object_name = object_name(s, txn, kind, r->obj);
    c = malloc(sizeof(*c));
    out->indicators = calloc(IND_N, sizeof(*out->indicators));
    if (out->object_id == NULL || out->object_name == NULL || c == NULL ||
        out->indicators == NULL) {
        free(c);
        return STORE_NOMEM;
    }
    cityops__v1__eval_counts__init(c);
    out->counts = c;
    c->reported = r->n[NC_REPORTED];
    c->valid_reports = r->n[NC_VALID];
    c->registered = r->n[NC_REGISTERED];
    c->registered_on_time = r->n[NC_REGISTERED_ON_TIME];
    c->dispatched = r->n[NC_DISPATCHED];
    c->redispatched_away = r->n[NC_REDISPATCHED_AWAY];
    c->disposed = r->n[NC_DISPOSED];
    c->disposed_on_time = r->n[NC_DISPOSED_ON_TIME];
    c->overdue_undisposed = r->n[NC_OVERDUE_UNDISPOSED];
    c->closed = r->n[NC_CLOSED];
    c->closed_on_time = r->n[NC_CLOSED_ON_TIME];
    c->reworks = r->n[NC_REWORKS];
    c->extensions_approved = r->n[NC_EXTENSIONS];
    c->reopened = r->n[NC_REOPENED];
    indicators_of(r, v, defined);
    for (int i = 0; i < IND_N; i++) {
        Cityops__V1__Indicator *ind;

        if (!(mask & (1u << i))) {
            defined[i] = 0;
            continue;
        }
        ind = malloc(sizeof(*ind));
        if (ind == NULL) {
            return STORE_NOMEM;
        }
        cityops__v1__indicator__init(ind);
        out->indicators[k++] = ind;
        out->n_indicators = k;
        ind->code = dup_str(store_eval_indicators[i]);
        if (ind->code == NULL) {
            return STORE_NOMEM;
        }
        ind->value = v[i];
        ind->defined = defined[i];
    }
    out->score = store_eval_score(v, defined, w, &scored);
    out->grade = dup_str(scored ? store_eval_grade(out->score) : "-");
    return out->grade != NULL ? 0 : STORE_NOMEM;
}

static int report_fill(struct store *s,
                       MDB_txn *txn,
                       const struct store_eval_period *p,
                       int kind,
                       Cityops__V1__EvalReport *rep)
{
    struct rows rs = {NULL, 0, 0};
    MDB_cursor *cur;
    double w[IND_N];
    int rv = 0;
    int rc;

    if (s->dbi[STORE_DB_EVAL] == (MDB_dbi)-1) {
        return 0; /* a view of a store from before evaluation: no counts */
    }
    rc = mdb_cursor_open(txn, s->dbi[STORE_DB_EVAL], &cur);
    if (rc != 0) {
        return store_mdb_err(s, rc, "open eval cursor");
    }
    for (uint32_t m = p->first_month; rv == 0 && m <= p->last_month;
         m = month_next(m)) {
        rv = month_rows(s, txn, cur, m, kind, &rs);
    }
    if (rv == 0) {
        rv = gauge_rows(s, txn, cur, p->last_month, kind, &rs);
    }
    mdb_cursor_close(cur);
    if (rv == 0) {
        rv = weights_of(s, txn, kind, w);
    }
    if (rv == 0 && rs.n > 0) {
        rep->rows = calloc(rs.n, sizeof(*rep->rows));
        rv = rep->rows != NULL ? 0 : STORE_NOMEM;
    }
    for (size_t i = 0; rv == 0 && i < rs.n; i++) {
        Cityops__V1__EvalRow *row = malloc(sizeof(*row));

        if (row == NULL) {
            rv = STORE_NOMEM;
            break;
        }
        rep->rows[i] = row;
        rep->n_rows = i + 1;
        rv = row_fill(s, txn, &rs.v[i], kind, w, row);
    }
    free(rs.v);
    if (rv == STORE_NOMEM) {
        return store_errf(s, rv, "eval report: out of memory");
    }
    return rv;
}

static int audit_size_get(struct store *s, MDB_txn *txn, uint64_t *size)
{
    MDB_val key = {4, (void *)"tree"};
    MDB_val val;
    int rc;

    *size = 0;
    rc = mdb_get(txn, s->dbi[STORE_DB_AUDIT_TREE], &key, &val);
    if (rc == MDB_NOTFOUND) {
        return 0;
    }
    if (rc != 0) {
        return store_mdb_err(s, rc, "get audit_tree");
    }
    if (val.mv_size < 8) {
        return store_errf(s, STORE_CORRUPT, "audit_tree: %zu bytes",
                          val.mv_size);
    }
    *size = store_be64_get(val.mv_data);
    return 0;
}

int store_eval_report(struct store *s,
                      const Cityops__V1__EvalRequest *req,
                      Cityops__V1__EvalReport **out)
{
    struct store_eval_period p;
    Cityops__V1__EvalReport *rep;
    MDB_txn *txn;
    int kind = store_eval_kind_parse(req->group_by);
    int rv;

    *out = NULL;
    if (store_eval_period_parse(req->period, &p) != 0) {
        return store_errf(s, STORE_INVALID,
                          "period '%s': want YYYY-MM, YYYY-Qn or YYYY",
                          str0(req->period));
    }
    if (kind < 0) {
        return store_errf(s, STORE_INVALID,
                          "group_by '%s': want department, district or grid",
                          str0(req->group_by));
    }
    rep = malloc(sizeof(*rep));
    if (rep == NULL) {
        return store_errf(s, STORE_NOMEM, "eval report: out of memory");
    }
    cityops__v1__eval_report__init(rep);
    rep->period = dup_str(req->period);
    rep->group_by = dup_str(kind_name(kind));
    if (rep->period == NULL || rep->group_by == NULL) {
        rv = store_errf(s, STORE_NOMEM, "eval report: out of memory");
        goto err_free_report;
    }
    rep->period_start = p.start;
    rep->period_end = p.end;
    rv = store_read_begin(s, &txn);
    if (rv != 0) {
        goto err_free_report;
    }
    rv = store_meta_get(s, txn, STORE_META_APPLIED, &rep->applied_index);
    if (rv == 0) {
        rep->config_version = config_version(s, txn);
    }
    if (rv == 0) {
        rv = audit_size_get(s, txn, &rep->audit_size);
    }
    if (rv == 0) {
        rv = report_fill(s, txn, &p, kind, rep);
    }
    store_read_end(s, txn);
    if (rv != 0) {
        goto err_free_report;
    }
    *out = rep;
    return 0;

err_free_report:
    cityops__v1__eval_report__free_unpacked(rep, NULL);
    return rv;
}

/* --- workload --- */

int store_workload(struct store *s, Cityops__V1__WorkloadResponse **out)
{
    Cityops__V1__WorkloadResponse *resp;
    MDB_cursor *cur = NULL;
    MDB_txn *txn;
    uint8_t k[1] = {'W'};
    MDB_val key = {1, k};
    MDB_val val;
    size_t cap = 0;
    int rv;
    int rc;

    *out = NULL;
    resp = malloc(sizeof(*resp));
    if (resp == NULL) {
        return store_errf(s, STORE_NOMEM, "workload: out of memory");
    }
    cityops__v1__workload_response__init(resp);
    rv = store_read_begin(s, &txn);
    if (rv != 0) {
        goto err_free_resp;
    }
    rv = store_meta_get(s, txn, STORE_META_APPLIED, &resp->applied_index);
    if (rv != 0 || s->dbi[STORE_DB_EVAL] == (MDB_dbi)-1) {
        goto out_end_read;
    }
    rc = mdb_cursor_open(txn, s->dbi[STORE_DB_EVAL], &cur);
    if (rc != 0) {
        rv = store_mdb_err(s, rc, "open eval cursor");
        goto out_end_read;
    }
    rc = mdb_cursor_get(cur, &key, &val, MDB_SET_RANGE);
    while (rc == 0 && key.mv_size >= 1 && ((uint8_t *)key.mv_data)[0] == 'W') {
        const uint8_t *p = val.mv_data;
        Cityops__V1__DepartmentLoad *d;

        if (val.mv_size != WL_N * 8 || key.mv_size - 1 > STORE_MAX_ID) {
            rv = store_errf(s, STORE_CORRUPT, "eval workload: %zu bytes",
                            val.mv_size);
            break;
        }
        if (resp->n_departments == cap) {
            size_t ncap = cap != 0 ? cap * 2 : 16;
            Cityops__V1__DepartmentLoad **v =
                realloc(resp->departments, ncap * sizeof(*v));

            if (v == NULL) {
                rv = STORE_NOMEM;
                break;
            }
            resp->departments = v;
            cap = ncap;
        }
        d = malloc(sizeof(*d));
        if (d == NULL) {
            rv = STORE_NOMEM;
            break;
        }
        cityops__v1__department_load__init(d);
        resp->departments[resp->n_departments++] = d;
        d->department_id = malloc(key.mv_size);
        if (d->department_id == NULL) {
            rv = STORE_NOMEM;
            break;
        }
        memcpy(d->department_id, (const char *)key.mv_data + 1,
               key.mv_size - 1);
        d->department_id[key.mv_size - 1] = '\0';
        d->dispatched = store_be64_get(p);
        d->in_disposal = store_be64_get(p + 8);
        d->returned = store_be64_get(p + 16);
        d->overdue = store_be64_get(p + 24);
        d->supervised = store_be64_get(p + 32);
        rc = mdb_cursor_get(cur, &key, &val, MDB_NEXT);
    }
    if (rv == 0 && rc != 0 && rc != MDB_NOTFOUND) {
        rv = store_mdb_err(s, rc, "scan eval workload");
    }
    if (rv == STORE_NOMEM) {
        store_errf(s, rv, "workload: out of memory");
    }
    mdb_cursor_close(cur);
out_end_read:
    store_read_end(s, txn);
    if (rv == 0) {
        *out = resp;
        return 0;
    }
err_free_resp:
    cityops__v1__workload_response__free_unpacked(resp, NULL);
    return rv;
}
