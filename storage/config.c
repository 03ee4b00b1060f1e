/* The city's rules: versioned configuration (admin.proto) applied from
 * `config` commands, and the lookups apply makes in it.
 *
 * A ConfigBatch is one new version, all or nothing: every change is
 * checked alone (fields, sizes, codes), then the whole configuration after
 * the batch is checked (office hours and calendar build a deadline rule
 * set; each kind of evaluation weights sums to 1; staff and categories name
 * departments that exist), and only then is the version bumped and a
 * ConfigVersionInfo stored. A refused batch changes nothing (apply.c runs
 * it in a nested transaction that is dropped).
 *
 * Keys of the config database: a kind byte, then the item's id:
 *   org_unit id, department id, staff id, category "<type>-<major>-<minor>",
 *   grid code, office_hours weekday ("1".."7"), calendar date, eval_weights
 *   object kind, public_settings "".
 *
 * Deadline rules are built from the stored office hours and calendar and
 * kept on the handle for the version they were built at (the apply thread
 * alone uses them).
 */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "deadline.h"
#include "store_internal.h"

#define CFG_MAX_NAME 200
#define CFG_MAX_CHANGES 4096

enum cfg_kind {
    CFG_ORG_UNIT = 1,
    CFG_DEPARTMENT = 2,
    CFG_STAFF = 3,
    CFG_CATEGORY = 4,
    CFG_GRID = 5,
    CFG_OFFICE_HOURS = 6,
    CFG_CALENDAR_DAY = 7,
    CFG_EVAL_WEIGHTS = 8,
    CFG_PUBLIC = 9,
};

static const ProtobufCMessageDescriptor *const cfg_desc[] = {
    [CFG_ORG_UNIT] = &cityops__v1__org_unit__descriptor,
    [CFG_DEPARTMENT] = &cityops__v1__department__descriptor,
    [CFG_STAFF] = &cityops__v1__staff__descriptor,
    [CFG_CATEGORY] = &cityops__v1__category__descriptor,
    [CFG_GRID] = &cityops__v1__grid__descriptor,
    [CFG_OFFICE_HOURS] = &cityops__v1__weekday_hours__descriptor,
    [CFG_CALENDAR_DAY] = &cityops__v1__calendar_day__descriptor,
    [CFG_EVAL_WEIGHTS] = &cityops__v1__eval_weights__descriptor,
    [CFG_PUBLIC] = &cityops__v1__public_settings__descriptor,
};

/* Lookups apply makes for every command (public settings, a category, a
 * staff member) keep what they unpacked, with the stored bytes it came
 * from, in a slot chosen by the key. A lookup that reads the same bytes
 * under the same key reuses it: being checked against the transaction's
 * own bytes, a slot filled in a transaction that was then aborted is never
 * wrong, only stale, and then replaced. */
#define CFG_SLOTS 64

struct cfg_slot {
    uint8_t key[1 + STORE_MAX_ID + 16];
    size_t klen;
    uint8_t *bytes;
    size_t len;
    ProtobufCMessage *msg; /* NULL: empty */
};

struct cfg_rules_cache {
    uint64_t version;
    int valid;
    struct deadline_rules rules;
    struct cfg_slot slots[CFG_SLOTS];
};

static struct cfg_rules_cache *cache_of(struct store *s)
{
    if (s->config_cache == NULL) {
        s->config_cache = calloc(1, sizeof(struct cfg_rules_cache));
    }
    return s->config_cache;
}

static void slot_clear(struct cfg_slot *sl)
{
    if (sl->msg != NULL) {
        protobuf_c_message_free_unpacked(sl->msg, NULL);
    }
    free(sl->bytes);
    memset(sl, 0, sizeof(*sl));
}

void config_cache_free(struct store *s)
{
    struct cfg_rules_cache *c = s->config_cache;

    if (c != NULL) {
        for (size_t i = 0; i < CFG_SLOTS; i++) {
            slot_clear(&c->slots[i]);
        }
    }
    free(s->config_cache);
    s->config_cache = NULL;
}

int config_op(const Cityops__V1__Command *cmd)
{
    return cmd->op_case == CITYOPS__V1__COMMAND__OP_CONFIG;
}

void config_category_id(char buf[16],
                        Cityops__V1__CategoryType type,
                        const char *major,
                        const char *minor)
{
    snprintf(buf, 16, "%d-%.2s-%.2s", (int)type, major != NULL ? major : "",
             minor != NULL ? minor : "");
}

/* The item of a change, its kind and its id. */
static const ProtobufCMessage *change_item(const Cityops__V1__ConfigChange *ch,
                                           enum cfg_kind *kind,
                                           char *id,
                                           size_t idlen)
{
    switch (ch->item_case) {
    case CITYOPS__V1__CONFIG_CHANGE__ITEM_ORG_UNIT:
        *kind = CFG_ORG_UNIT;
        snprintf(id, idlen, "%s", ch->org_unit->id);
        return &ch->org_unit->base;
    case CITYOPS__V1__CONFIG_CHANGE__ITEM_DEPARTMENT:
        *kind = CFG_DEPARTMENT;
        snprintf(id, idlen, "%s", ch->department->id);
        return &ch->department->base;
    case CITYOPS__V1__CONFIG_CHANGE__ITEM_STAFF:
        *kind = CFG_STAFF;
        snprintf(id, idlen, "%s", ch->staff->id);
        return &ch->staff->base;
    case CITYOPS__V1__CONFIG_CHANGE__ITEM_CATEGORY:
        *kind = CFG_CATEGORY;
        config_category_id(id, ch->category->type, ch->category->major_code,
                           ch->category->minor_code);
        return &ch->category->base;
    case CITYOPS__V1__CONFIG_CHANGE__ITEM_GRID:
        *kind = CFG_GRID;
        snprintf(id, idlen, "%s", ch->grid->code);
        return &ch->grid->base;
    case CITYOPS__V1__CONFIG_CHANGE__ITEM_OFFICE_HOURS:
        *kind = CFG_OFFICE_HOURS;
        snprintf(id, idlen, "%u", ch->office_hours->weekday);
        return &ch->office_hours->base;
    case CITYOPS__V1__CONFIG_CHANGE__ITEM_CALENDAR_DAY:
        *kind = CFG_CALENDAR_DAY;
        snprintf(id, idlen, "%s", ch->calendar_day->date);
        return &ch->calendar_day->base;
    case CITYOPS__V1__CONFIG_CHANGE__ITEM_EVAL_WEIGHTS:
        *kind = CFG_EVAL_WEIGHTS;
        snprintf(id, idlen, "%s", ch->eval_weights->object_kind);
        return &ch->eval_weights->base;
    case CITYOPS__V1__CONFIG_CHANGE__ITEM_PUBLIC_SETTINGS:
        *kind = CFG_PUBLIC;
        id[0] = '\0';
        return &ch->public_settings->base;
    default:
        return NULL;
    }
}

static size_t cfg_key(uint8_t *key, enum cfg_kind kind, const char *id)
{
    size_t n = strlen(id);

    key[0] = (uint8_t)kind;
    memcpy(key + 1, id, n);
    return n + 1;
}

/* The stored bytes of an item, under the key built in @k: *val is
 * borrowed from @txn. STORE_NOTFOUND (no message) if there is none. */
static int cfg_raw(struct store *s,
                   MDB_txn *txn,
                   enum cfg_kind kind,
                   const char *id,
                   uint8_t k[1 + STORE_MAX_ID + 16],
                   MDB_val *key,
                   MDB_val *val)
{
    int rc;

    if (strlen(id) > STORE_MAX_ID) {
        return STORE_NOTFOUND;
    }
    key->mv_size = cfg_key(k, kind, id);
    key->mv_data = k;
    rc = mdb_get(txn, s->dbi[STORE_DB_CONFIG], key, val);
    if (rc == MDB_NOTFOUND) {
        return STORE_NOTFOUND;
    }
    if (rc != 0) {
        return store_mdb_err(s, rc, "get config/%d/%s", (int)kind, id);
    }
    return 0;
}

static int cfg_get(struct store *s,
                   MDB_txn *txn,
                   enum cfg_kind kind,
                   const char *id,
                   ProtobufCMessage **out)
{
    uint8_t k[1 + STORE_MAX_ID + 16];
    MDB_val key;
    MDB_val val;
    int rv;

    *out = NULL;
    rv = cfg_raw(s, txn, kind, id, k, &key, &val);
    if (rv != 0) {
        return rv;
    }
    *out = protobuf_c_message_unpack(cfg_desc[kind], NULL, val.mv_size,
                                     val.mv_data);
    if (*out == NULL) {
        return store_errf(s, STORE_CORRUPT, "decode config/%d/%s", (int)kind,
                          id);
    }
    return 0;
}

static size_t slot_of(const uint8_t *key, size_t len)
{
    uint32_t h = 2166136261u; /* FNV-1a */

    for (size_t i = 0; i < len; i++) {
        h = (h ^ key[i]) * 16777619u;
    }
    return h % CFG_SLOTS;
}

/* cfg_get() through the slots: *out is borrowed from the cache. */
static int cfg_peek(struct store *s,
                    MDB_txn *txn,
                    enum cfg_kind kind,
                    const char *id,
                    const ProtobufCMessage **out)
{
    struct cfg_rules_cache *c = cache_of(s);
    struct cfg_slot *sl;
    ProtobufCMessage *msg;
    uint8_t k[1 + STORE_MAX_ID + 16];
    MDB_val key;
    MDB_val val;
    uint8_t *bytes;
    int rv;

    *out = NULL;
    if (c == NULL) {
        return STORE_NOMEM;
    }
    rv = cfg_raw(s, txn, kind, id, k, &key, &val);
    if (rv != 0) {
        return rv;
    }
    sl = &c->slots[slot_of(k, key.mv_size)];
    if (sl->msg != NULL && sl->klen == key.mv_size &&
        memcmp(sl->key, k, key.mv_size) == 0 && sl->len == val.mv_size &&
        memcmp(sl->bytes, val.mv_data, val.mv_size) == 0) {
        *out = sl->msg;
        return 0;
    }
    msg = protobuf_c_message_unpack(cfg_desc[kind], NULL, val.mv_size,
                                    val.mv_data);
    if (msg == NULL) {
        return store_errf(s, STORE_CORRUPT, "decode config/%d/%s", (int)kind,
                          id);
    }
    bytes = malloc(val.mv_size > 0 ? val.mv_size : 1);
    if (bytes == NULL) {
        protobuf_c_message_free_unpacked(msg, NULL);
        return STORE_NOMEM;
    }
    memcpy(bytes, val.mv_data, val.mv_size);
    slot_clear(sl);
    memcpy(sl->key, k, key.mv_size);
    sl->klen = key.mv_size;
    sl->bytes = bytes;
    sl->len = val.mv_size;
    sl->msg = msg;
    *out = msg;
    return 0;
}

/* Every stored item of @kind, unpacked, in key order. */
static int cfg_list(struct store *s,
                    MDB_txn *txn,
                    enum cfg_kind kind,
                    ProtobufCMessage ***out,
                    size_t *n)
{
    MDB_cursor *cur;
    MDB_val key;
    MDB_val val;
    uint8_t k = (uint8_t)kind;
    ProtobufCMessage **items = NULL;
    size_t got = 0;
    size_t cap = 0;
    int rv = 0;
    int rc;

    *out = NULL;
    *n = 0;
    rc = mdb_cursor_open(txn, s->dbi[STORE_DB_CONFIG], &cur);
    if (rc != 0) {
        return store_mdb_err(s, rc, "cursor config");
    }
    key.mv_size = 1;
    key.mv_data = &k;
    rc = mdb_cursor_get(cur, &key, &val, MDB_SET_RANGE);
    while (rc == 0 && ((uint8_t *)key.mv_data)[0] == k) {
        if (got == cap) {
            ProtobufCMessage **more;
            cap = cap == 0 ? 16 : 2 * cap;
            more = realloc(items, cap * sizeof(*items));
            if (more == NULL) {
                rv = STORE_NOMEM;
                break;
            }
            items = more;
        }
        items[got] = protobuf_c_message_unpack(cfg_desc[kind], NULL,
                                               val.mv_size, val.mv_data);
        if (items[got] == NULL) {
            rv = store_errf(s, STORE_CORRUPT, "decode config kind %d",
                            (int)kind);
            break;
        }
        got++;
        rc = mdb_cursor_get(cur, &key, &val, MDB_NEXT);
    }
    mdb_cursor_close(cur);
    if (rv == 0 && rc != 0 && rc != MDB_NOTFOUND) {
        rv = store_mdb_err(s, rc, "list config");
    }
    if (rv != 0) {
        store_msgs_free(items, got);
        return rv;
    }
    *out = items;
    *n = got;
    return 0;
}

/* --- checks --- */

static int fail(Cityops__V1__CommandResult *res, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static int fail(Cityops__V1__CommandResult *res, const char *fmt, ...)
{
    char msg[400];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return store_result_fail(
        res, CITYOPS__V1__RESULT_CODE__RESULT_INVALID_ARGUMENT, msg);
}

static int refused(const Cityops__V1__CommandResult *res)
{
    return res->code != CITYOPS__V1__RESULT_CODE__RESULT_OK;
}

static int str_ok(const char *v, size_t max, int required)
{
    size_t n = v != NULL ? strlen(v) : 0;

    return n <= max && (!required || n > 0);
}

static int code2_ok(const char *v)
{
    return v != NULL && strlen(v) == 2 && v[0] >= '0' && v[0] <= '9' &&
           v[1] >= '0' && v[1] <= '9';
}

static int role_ok(Cityops__V1__Role r)
{
    return r > CITYOPS__V1__ROLE__ROLE_UNSPECIFIED &&
           r <= CITYOPS__V1__ROLE__ROLE_SYSTEM;
}

static int limits_check(const Cityops__V1__Condition *c,
                        size_t i,
                        const char *cat,
                        Cityops__V1__CommandResult *res)
{
    if (!str_ok(c->code, STORE_MAX_ID, 1) ||
        !str_ok(c->name, CFG_MAX_NAME, 0)) {
        return fail(res, "change %zu: category %s: condition code required "
                         "(at most %d bytes)",
                    i, cat, STORE_MAX_ID);
    }
    for (size_t j = 0; j < c->n_limits; j++) {
        const Cityops__V1__TimeLimit *l = c->limits[j];
        if (l->stage <= CITYOPS__V1__STAGE__STAGE_UNSPECIFIED ||
            l->stage > CITYOPS__V1__STAGE__STAGE_CHECK ||
            l->unit <= CITYOPS__V1__TIME_UNIT__TIME_UNIT_UNSPECIFIED ||
            l->unit > CITYOPS__V1__TIME_UNIT__TIME_UNIT_CALENDAR_DAYS ||
            l->amount == 0 || l->amount > 10000) {
            return fail(res,
                        "change %zu: category %s condition %s: limit %zu "
                        "needs a stage, a unit and an amount 1..10000",
                        i, cat, c->code, j);
        }
        for (size_t k = 0; k < j; k++) {
            if (c->limits[k]->stage == l->stage) {
                return fail(res,
                            "change %zu: category %s condition %s: two "
                            "limits for one stage",
                            i, cat, c->code);
            }
        }
    }
    return 0;
}

/* One change alone. */
static int change_check(const Cityops__V1__ConfigChange *ch,
                        size_t i,
                        const ProtobufCMessage *item,
                        enum cfg_kind kind,
                        const char *id,
                        Cityops__V1__CommandResult *res)
{
    if (item == NULL) {
        return fail(res, "change %zu: no item", i);
    }
    if (kind != CFG_PUBLIC && !str_ok(id, STORE_MAX_ID, 1)) {
        return fail(res, "change %zu: id required (at most %d bytes)", i,
                    STORE_MAX_ID);
    }
    if (ch->delete_) {
        return 0;
    }
    switch (kind) {
    case CFG_ORG_UNIT: {
        const Cityops__V1__OrgUnit *o = ch->org_unit;
        if (!str_ok(o->name, CFG_MAX_NAME, 1) ||
            !str_ok(o->parent_id, STORE_MAX_ID, 0) ||
            !str_ok(o->admin_code, 12, 0) ||
            o->level > CITYOPS__V1__ORG_LEVEL__ORG_LEVEL_COMMUNITY) {
            return fail(res, "change %zu: org unit %s: name required, "
                             "valid level and codes",
                        i, id);
        }
        return 0;
    }
    case CFG_DEPARTMENT:
        if (!str_ok(ch->department->name, CFG_MAX_NAME, 1) ||
            !str_ok(ch->department->org_unit_id, STORE_MAX_ID, 0)) {
            return fail(res, "change %zu: department %s: name required", i,
                        id);
        }
        return 0;
    case CFG_STAFF: {
        const Cityops__V1__Staff *st = ch->staff;
        if (!str_ok(st->name, CFG_MAX_NAME, 0) || st->n_roles == 0 ||
            st->n_roles > 9 || !str_ok(st->department_id, STORE_MAX_ID, 0)) {
            return fail(res, "change %zu: staff %s: at least one role", i,
                        id);
        }
        for (size_t r = 0; r < st->n_roles; r++) {
            if (!role_ok(st->roles[r])) {
                return fail(res, "change %zu: staff %s: unknown role %d", i,
                            id, (int)st->roles[r]);
            }
        }
        return 0;
    }
    case CFG_CATEGORY: {
        const Cityops__V1__Category *c = ch->category;
        if ((c->type != CITYOPS__V1__CATEGORY_TYPE__CATEGORY_TYPE_COMPONENT &&
             c->type != CITYOPS__V1__CATEGORY_TYPE__CATEGORY_TYPE_EVENT) ||
            !code2_ok(c->major_code) || !code2_ok(c->minor_code) ||
            !str_ok(c->name, CFG_MAX_NAME, 1) ||
            !str_ok(c->major_name, CFG_MAX_NAME, 0) ||
            c->n_conditions > 32 || c->n_department_ids > 16) {
            return fail(res,
                        "change %zu: category %s: type, 2-digit major and "
                        "minor codes and a name required",
                        i, id);
        }
        for (size_t j = 0; j < c->n_conditions; j++) {
            if (limits_check(c->conditions[j], i, id, res) != 0 ||
                refused(res)) {
                return 0;
            }
        }
        return 0;
    }
    case CFG_GRID:
        if (!str_ok(ch->grid->org_unit_id, STORE_MAX_ID, 0) ||
            !str_ok(ch->grid->name, CFG_MAX_NAME, 0)) {
            return fail(res, "change %zu: grid %s: bad field", i, id);
        }
        return 0;
    case CFG_OFFICE_HOURS:
        if (ch->office_hours->weekday < 1 || ch->office_hours->weekday > 7) {
            return fail(res, "change %zu: office hours: weekday 1..7", i);
        }
        return 0;
    case CFG_CALENDAR_DAY:
        if (!str_ok(ch->calendar_day->note, CFG_MAX_NAME, 0)) {
            return fail(res, "change %zu: calendar %s: note too long", i, id);
        }
        return 0;
    case CFG_EVAL_WEIGHTS:
        if (strcmp(id, "department") != 0 && strcmp(id, "district") != 0 &&
            strcmp(id, "grid") != 0) {
            return fail(res, "change %zu: eval weights: object kind "
                             "department, district or grid",
                        i);
        }
        return 0;
    case CFG_PUBLIC: {
        const Cityops__V1__PublicSettings *p = ch->public_settings;
        if (!str_ok(p->county_code, 12, 0) ||
            !str_ok(p->jurisdiction_id, STORE_MAX_ID, 0) ||
            p->reopen_window_days > 365 || p->duplicate_radius_m > 10000 ||
            p->duplicate_window_hours > 24 * 365) {
            return fail(res, "change %zu: public settings out of range", i);
        }
        for (const char *q = p->county_code; *q != '\0'; q++) {
            if (*q < '0' || *q > '9') {
                return fail(res, "change %zu: county_code: digits only", i);
            }
        }
        return 0;
    }
    }
    return fail(res, "change %zu: unknown item", i);
}

static int weights_check(struct store *s,
                         MDB_txn *txn,
                         Cityops__V1__CommandResult *res)
{
    ProtobufCMessage **items;
    size_t n;
    int rv;

    rv = cfg_list(s, txn, CFG_EVAL_WEIGHTS, &items, &n);
    if (rv != 0) {
        return rv;
    }
    for (size_t i = 0; i < n && !refused(res); i++) {
        const Cityops__V1__EvalWeights *w =
            (const Cityops__V1__EvalWeights *)items[i];
        double sum = 0;
        for (size_t j = 0; j < w->n_weights; j++) {
            if (!(w->weights[j]->weight >= 0) ||
                !str_ok(w->weights[j]->indicator, STORE_MAX_ID, 1)) {
                fail(res, "eval weights %s: weights must be >= 0 with an "
                          "indicator",
                     w->object_kind);
            }
            sum += w->weights[j]->weight;
        }
        if (!refused(res) && fabs(sum - 1.0) > 1e-6) {
            fail(res, "eval weights %s sum to %.6f, not 1", w->object_kind,
                 sum);
        }
    }
    store_msgs_free(items, n);
    return 0;
}

static int exists(struct store *s,
                  MDB_txn *txn,
                  enum cfg_kind kind,
                  const char *id)
{
    ProtobufCMessage *m = NULL;
    int rv = cfg_get(s, txn, kind, id, &m);

    if (m != NULL) {
        protobuf_c_message_free_unpacked(m, NULL);
    }
    return rv == 0;
}

/* References from the changed items (staff and categories name
 * departments; grids and departments name org units). */
static int refs_check(struct store *s,
                      MDB_txn *txn,
                      const Cityops__V1__ConfigBatch *b,
                      Cityops__V1__CommandResult *res)
{
    for (size_t i = 0; i < b->n_changes && !refused(res); i++) {
        const Cityops__V1__ConfigChange *ch = b->changes[i];
        if (ch->delete_) {
            continue;
        }
        if (ch->item_case == CITYOPS__V1__CONFIG_CHANGE__ITEM_STAFF &&
            ch->staff->department_id[0] != '\0' &&
            !exists(s, txn, CFG_DEPARTMENT, ch->staff->department_id)) {
            fail(res, "change %zu: staff %s: no department %s", i,
                 ch->staff->id, ch->staff->department_id);
        }
        if (ch->item_case == CITYOPS__V1__CONFIG_CHANGE__ITEM_CATEGORY) {
            for (size_t j = 0; j < ch->category->n_department_ids; j++) {
                if (!exists(s, txn, CFG_DEPARTMENT,
                            ch->category->department_ids[j])) {
                    fail(res, "change %zu: category %s-%s: no department %s",
                         i, ch->category->major_code,
                         ch->category->minor_code,
                         ch->category->department_ids[j]);
                    break;
                }
            }
        }
        if (ch->item_case == CITYOPS__V1__CONFIG_CHANGE__ITEM_GRID &&
            ch->grid->org_unit_id[0] != '\0' &&
            !exists(s, txn, CFG_ORG_UNIT, ch->grid->org_unit_id)) {
            fail(res, "change %zu: grid %s: no org unit %s", i,
                 ch->grid->code, ch->grid->org_unit_id);
        }
    }
    return 0;
}

/* Build deadline rules from what is stored now. */
static int rules_build(struct store *s,
                       MDB_txn *txn,
                       struct deadline_rules *r,
                       char *err,
                       size_t errlen)
{
    ProtobufCMessage **hours = NULL;
    ProtobufCMessage **days = NULL;
    size_t nh = 0;
    size_t nd = 0;
    int rv;

    rv = cfg_list(s, txn, CFG_OFFICE_HOURS, &hours, &nh);
    if (rv == 0) {
        rv = cfg_list(s, txn, CFG_CALENDAR_DAY, &days, &nd);
    }
    if (rv == 0 &&
        deadline_rules_build(r,
                             (const Cityops__V1__WeekdayHours *const *)hours,
                             nh, (const Cityops__V1__CalendarDay *const *)days,
                             nd, err, errlen) != 0) {
        rv = STORE_INVALID;
    }
    store_msgs_free(hours, nh);
    store_msgs_free(days, nd);
    return rv;
}

static int history_put(struct store *s,
                       MDB_txn *txn,
                       uint64_t version,
                       const Cityops__V1__Command *cmd)
{
    Cityops__V1__ConfigVersionInfo info = CITYOPS__V1__CONFIG_VERSION_INFO__INIT;
    uint8_t k[8];
    MDB_val key = {sizeof k, k};
    MDB_val val;
    uint8_t *buf;
    int rc;

    info.version = version;
    info.at = cmd->time;
    info.actor_id = cmd->actor_id;
    info.note = cmd->config->note;
    info.changes = (uint32_t)cmd->config->n_changes;
    val.mv_size = cityops__v1__config_version_info__get_packed_size(&info);
    buf = malloc(val.mv_size + 1);
    if (buf == NULL) {
        return STORE_NOMEM;
    }
    cityops__v1__config_version_info__pack(&info, buf);
    val.mv_data = buf;
    store_be64_put(k, version);
    rc = mdb_put(txn, s->dbi[STORE_DB_CONFIG_HISTORY], &key, &val, 0);
    free(buf);
    return rc != 0 ? store_mdb_err(s, rc, "put config_history") : 0;
}

static int change_store(struct store *s,
                        MDB_txn *txn,
                        const Cityops__V1__ConfigChange *ch,
                        const ProtobufCMessage *item,
                        enum cfg_kind kind,
                        const char *id)
{
    uint8_t k[1 + STORE_MAX_ID + 16];
    MDB_val key;
    MDB_val val;
    uint8_t *buf;
    int rc;

    key.mv_size = cfg_key(k, kind, id);
    key.mv_data = k;
    if (ch->delete_) {
        rc = mdb_del(txn, s->dbi[STORE_DB_CONFIG], &key, NULL);
        return rc != 0 && rc != MDB_NOTFOUND
                   ? store_mdb_err(s, rc, "del config/%d/%s", (int)kind, id)
                   : 0;
    }
    val.mv_size = protobuf_c_message_get_packed_size(item);
    buf = malloc(val.mv_size + 1);
    if (buf == NULL) {
        return STORE_NOMEM;
    }
    protobuf_c_message_pack(item, buf);
    val.mv_data = buf;
    rc = mdb_put(txn, s->dbi[STORE_DB_CONFIG], &key, &val, 0);
    free(buf);
    return rc != 0 ? store_mdb_err(s, rc, "put config/%d/%s", (int)kind, id)
                   : 0;
}

int config_apply(struct store *s,
                 MDB_txn *txn,
                 uint64_t index,
                 const Cityops__V1__Command *cmd,
                 Cityops__V1__CommandResult *res)
{
    const Cityops__V1__ConfigBatch *b = cmd->config;
    struct deadline_rules *rules;
    char err[300];
    uint64_t version = 0;
    int rv;

    (void)index;
    res->code = CITYOPS__V1__RESULT_CODE__RESULT_OK;
    if (cmd->role != CITYOPS__V1__ROLE__ROLE_ADMIN) {
        return store_result_fail(
            res, CITYOPS__V1__RESULT_CODE__RESULT_PERMISSION_DENIED,
            "configuration changes need role ADMIN");
    }
    if (b->n_changes == 0 || b->n_changes > CFG_MAX_CHANGES ||
        !str_ok(b->note, STORE_MAX_TEXT, 0)) {
        return fail(res, "a config batch holds 1..%d changes", CFG_MAX_CHANGES);
    }
    for (size_t i = 0; i < b->n_changes; i++) {
        char id[STORE_MAX_ID + 32];
        enum cfg_kind kind = CFG_ORG_UNIT;
        const ProtobufCMessage *item =
            change_item(b->changes[i], &kind, id, sizeof id);

        rv = change_check(b->changes[i], i, item, kind, id, res);
        if (rv != 0 || refused(res)) {
            return rv;
        }
        rv = change_store(s, txn, b->changes[i], item, kind, id);
        if (rv != 0) {
            return rv;
        }
    }
    rv = refs_check(s, txn, b, res);
    if (rv == 0 && !refused(res)) {
        rv = weights_check(s, txn, res);
    }
    if (rv != 0 || refused(res)) {
        return rv;
    }
    rules = malloc(sizeof *rules);
    if (rules == NULL) {
        return STORE_NOMEM;
    }
    rv = rules_build(s, txn, rules, err, sizeof err);
    free(rules);
    if (rv == STORE_INVALID) {
        return fail(res, "office hours / calendar: %s", err);
    }
    if (rv != 0) {
        return rv;
    }
    rv = store_meta_get(s, txn, STORE_META_CONFIG_VERSION, &version);
    if (rv == 0) {
        version++;
        rv = store_meta_put(s, txn, STORE_META_CONFIG_VERSION, version);
    }
    if (rv == 0) {
        rv = history_put(s, txn, version, cmd);
    }
    if (rv == 0) {
        res->version = version;
    }
    return rv;
}

/* --- lookups for apply --- */

uint64_t config_version(struct store *s, MDB_txn *txn)
{
    uint64_t v = 0;

    store_meta_get(s, txn, STORE_META_CONFIG_VERSION, &v);
    return v;
}

int config_rules(struct store *s,
                 MDB_txn *txn,
                 const struct deadline_rules **out)
{
    struct cfg_rules_cache *c = cache_of(s);
    uint64_t v = config_version(s, txn);
    char err[300];
    int rv;

    if (c == NULL) {
        return STORE_NOMEM;
    }
    if (!c->valid || c->version != v) {
        c->valid = 0;
        rv = rules_build(s, txn, &c->rules, err, sizeof err);
        if (rv != 0) {
            return rv == STORE_INVALID
                       ? store_errf(s, STORE_CORRUPT, "stored rules: %s", err)
                       : rv;
        }
        c->version = v;
        c->valid = 1;
    }
    *out = &c->rules;
    return 0;
}

int config_category(struct store *s,
                    MDB_txn *txn,
                    Cityops__V1__CategoryType type,
                    const char *major,
                    const char *minor,
                    Cityops__V1__Category **out)
{
    char id[16];

    config_category_id(id, type, major, minor);
    return cfg_get(s, txn, CFG_CATEGORY, id, (ProtobufCMessage **)out);
}

int config_category_peek(struct store *s,
                         MDB_txn *txn,
                         Cityops__V1__CategoryType type,
                         const char *major,
                         const char *minor,
                         const Cityops__V1__Category **out)
{
    char id[16];

    config_category_id(id, type, major, minor);
    return cfg_peek(s, txn, CFG_CATEGORY, id, (const ProtobufCMessage **)out);
}

int config_staff_peek(struct store *s,
                      MDB_txn *txn,
                      const char *id,
                      const Cityops__V1__Staff **out)
{
    return cfg_peek(s, txn, CFG_STAFF, id, (const ProtobufCMessage **)out);
}

int config_public_peek(struct store *s,
                       MDB_txn *txn,
                       const Cityops__V1__PublicSettings **out)
{
    return cfg_peek(s, txn, CFG_PUBLIC, "", (const ProtobufCMessage **)out);
}

int config_staff(struct store *s,
                 MDB_txn *txn,
                 const char *id,
                 Cityops__V1__Staff **out)
{
    return cfg_get(s, txn, CFG_STAFF, id, (ProtobufCMessage **)out);
}

int config_staff_any(struct store *s, MDB_txn *txn)
{
    MDB_cursor *cur;
    MDB_val key;
    MDB_val val;
    uint8_t k = CFG_STAFF;
    int found = 0;

    if (mdb_cursor_open(txn, s->dbi[STORE_DB_CONFIG], &cur) != 0) {
        return 0;
    }
    key.mv_size = 1;
    key.mv_data = &k;
    if (mdb_cursor_get(cur, &key, &val, MDB_SET_RANGE) == 0) {
        found = ((uint8_t *)key.mv_data)[0] == CFG_STAFF;
    }
    mdb_cursor_close(cur);
    return found;
}

int config_department(struct store *s,
                      MDB_txn *txn,
                      const char *id,
                      Cityops__V1__Department **out)
{
    return cfg_get(s, txn, CFG_DEPARTMENT, id, (ProtobufCMessage **)out);
}

int config_grid(struct store *s,
                MDB_txn *txn,
                const char *code,
                Cityops__V1__Grid **out)
{
    return cfg_get(s, txn, CFG_GRID, code, (ProtobufCMessage **)out);
}

int config_org_unit(struct store *s,
                    MDB_txn *txn,
                    const char *id,
                    Cityops__V1__OrgUnit **out)
{
    return cfg_get(s, txn, CFG_ORG_UNIT, id, (ProtobufCMessage **)out);
}

int config_public(struct store *s,
                  MDB_txn *txn,
                  Cityops__V1__PublicSettings **out)
{
    return cfg_get(s, txn, CFG_PUBLIC, "", (ProtobufCMessage **)out);
}

int config_eval_weights(struct store *s,
                        MDB_txn *txn,
                        const char *object_kind,
                        Cityops__V1__EvalWeights **out)
{
    return cfg_get(s, txn, CFG_EVAL_WEIGHTS, object_kind,
                   (ProtobufCMessage **)out);
}

int config_list(struct store *s,
                MDB_txn *txn,
                int kind,
                ProtobufCMessage ***out,
                size_t *n)
{
    return cfg_list(s, txn, (enum cfg_kind)kind, out, n);
}

/* --- reads --- */

int store_config_get(struct store *s, Cityops__V1__ConfigSnapshot **out)
{
    Cityops__V1__ConfigSnapshot snap = CITYOPS__V1__CONFIG_SNAPSHOT__INIT;
    ProtobufCMessage **lists[CFG_PUBLIC + 1] = {0};
    size_t counts[CFG_PUBLIC + 1] = {0};
    MDB_txn *txn;
    uint8_t *buf = NULL;
    size_t len;
    int rv;

    *out = NULL;
    rv = store_read_begin(s, &txn);
    if (rv != 0) {
        return rv;
    }
    for (int k = CFG_ORG_UNIT; rv == 0 && k <= CFG_PUBLIC; k++) {
        rv = cfg_list(s, txn, (enum cfg_kind)k, &lists[k], &counts[k]);
    }
    if (rv == 0) {
        snap.version = config_version(s, txn);
        store_meta_get(s, txn, STORE_META_APPLIED, &snap.applied_index);
    }
    store_read_end(s, txn);
    if (rv == 0) {
#define SET(field, kind, type)                                                 \
    snap.n_##field = counts[kind];                                             \
    snap.field = (type **)lists[kind]
        SET(org_units, CFG_ORG_UNIT, Cityops__V1__OrgUnit);
        SET(departments, CFG_DEPARTMENT, Cityops__V1__Department);
        SET(staff, CFG_STAFF, Cityops__V1__Staff);
        SET(categories, CFG_CATEGORY, Cityops__V1__Category);
        SET(grids, CFG_GRID, Cityops__V1__Grid);
        SET(office_hours, CFG_OFFICE_HOURS, Cityops__V1__WeekdayHours);
        SET(calendar, CFG_CALENDAR_DAY, Cityops__V1__CalendarDay);
        SET(eval_weights, CFG_EVAL_WEIGHTS, Cityops__V1__EvalWeights);
#undef SET
        if (counts[CFG_PUBLIC] > 0) {
            snap.public_settings =
                (Cityops__V1__PublicSettings *)lists[CFG_PUBLIC][0];
        }
        /* One allocation the caller frees with the message's free. */
        len = cityops__v1__config_snapshot__get_packed_size(&snap);
        buf = malloc(len + 1);
        if (buf == NULL) {
            rv = STORE_NOMEM;
        } else {
            cityops__v1__config_snapshot__pack(&snap, buf);
            *out = cityops__v1__config_snapshot__unpack(NULL, len, buf);
            rv = *out == NULL ? STORE_NOMEM : 0;
        }
        free(buf);
    }
    for (int k = CFG_ORG_UNIT; k <= CFG_PUBLIC; k++) {
        store_msgs_free(lists[k], counts[k]);
    }
    return rv;
}

int store_config_history(struct store *s,
                         size_t max,
                         Cityops__V1__ConfigHistoryResponse **out)
{
    Cityops__V1__ConfigHistoryResponse r =
        CITYOPS__V1__CONFIG_HISTORY_RESPONSE__INIT;
    Cityops__V1__ConfigVersionInfo **v;
    MDB_cursor *cur;
    MDB_val key;
    MDB_val val;
    MDB_txn *txn;
    size_t n = 0;
    int rv;
    int rc;

    *out = NULL;
    if (max == 0 || max > 1000) {
        max = max == 0 ? 50 : 1000;
    }
    v = calloc(max, sizeof(*v));
    if (v == NULL) {
        return STORE_NOMEM;
    }
    rv = store_read_begin(s, &txn);
    if (rv != 0) {
        free(v);
        return rv;
    }
    rc = mdb_cursor_open(txn, s->dbi[STORE_DB_CONFIG_HISTORY], &cur);
    if (rc == 0) {
        /* newest first, then reversed */
        rc = mdb_cursor_get(cur, &key, &val, MDB_LAST);
        while (rc == 0 && n < max) {
            v[n] = cityops__v1__config_version_info__unpack(NULL, val.mv_size,
                                                            val.mv_data);
            if (v[n] == NULL) {
                rv = store_errf(s, STORE_CORRUPT, "decode config_history");
                break;
            }
            n++;
            rc = mdb_cursor_get(cur, &key, &val, MDB_PREV);
        }
        mdb_cursor_close(cur);
    }
    if (rv == 0 && rc != 0 && rc != MDB_NOTFOUND) {
        rv = store_mdb_err(s, rc, "list config_history");
    }
    store_read_end(s, txn);
    if (rv == 0) {
        for (size_t i = 0; i < n / 2; i++) {
            Cityops__V1__ConfigVersionInfo *t = v[i];
            v[i] = v[n - 1 - i];
            v[n - 1 - i] = t;
        }
        r.versions = v;
        r.n_versions = n;
        *out = malloc(sizeof(**out));
        if (*out == NULL) {
            rv = STORE_NOMEM;
        } else {
            **out = r;
            return 0;
        }
    }
    store_msgs_free((ProtobufCMessage **)v, n);
    return rv;
}
