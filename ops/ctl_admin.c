/* cityctl admin ...: the city's rules (应用维护), DOMAIN.md sections 2-5.
 *
 *   admin apply FILE.json [--note T]   one ConfigBatch from a file: either
 *                                      {"changes": [...]} or an export
 *                                      (ConfigSnapshot), whose every item
 *                                      becomes an upsert
 *   admin get                          version, counts, tables
 *   admin export --out FILE            the ConfigSnapshot as JSON; admin
 *                                      apply takes it back as it is
 *   admin history                      versions, oldest first
 *   admin staff add|disable|enable ..., admin dept add ..., admin holiday
 *   ..., admin hours ...               one-change batches
 *
 * Every Apply is one new configuration version on the cluster, applied
 * whole or refused whole (INVALID_ARGUMENT naming the change). A file is
 * checked here first, field by field, so that a typo is reported with its
 * JSON path and nothing is sent. An upsert replaces the whole item, so
 * staff disable/enable read the member first and send it back changed; a
 * concurrent change of the same member between the two calls is lost.
 */
#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cityops/v1/admin.pb-c.h"
#include "ops.h"

#define ROLE_ADMIN CITYOPS__V1__ROLE__ROLE_ADMIN
#define MAX_STAFF_ROLES 9

/* --- calls --- */

static int config_get(struct ops_ctl *ctl, Cityops__V1__ConfigSnapshot **out)
{
    Cityops__V1__ConfigGetRequest req = CITYOPS__V1__CONFIG_GET_REQUEST__INIT;
    Cityops__V1__ReadOptions read = CITYOPS__V1__READ_OPTIONS__INIT;
    ProtobufCMessage *resp = NULL;
    int rv;

    ops_read_fill(ctl, &read,
                  CITYOPS__V1__CONSISTENCY__CONSISTENCY_LINEARIZABLE);
    req.read = &read;
    rv = ops_call(ctl, "Admin/Get", &req.base,
                  &cityops__v1__config_snapshot__descriptor, &resp);
    *out = (Cityops__V1__ConfigSnapshot *)resp;
    return rv;
}

/* Send @batch (ctx filled here) and print the new version. */
static int batch_apply(struct ops_ctl *ctl, Cityops__V1__ConfigBatch *batch)
{
    Cityops__V1__RequestContext ctx = CITYOPS__V1__REQUEST_CONTEXT__INIT;
    Cityops__V1__ConfigReply *r;
    ProtobufCMessage *resp = NULL;
    int rv;

    ops_ctx_fill(ctl, &ctx, ROLE_ADMIN);
    batch->ctx = &ctx;
    rv = ops_call(ctl, "Admin/Apply", &batch->base,
                  &cityops__v1__config_reply__descriptor, &resp);
    batch->ctx = NULL;
    if (rv != OPS_EXIT_OK) {
        return rv;
    }
    r = (Cityops__V1__ConfigReply *)resp;
    if (ctl->json) {
        json_t *j = ops_pb_to_json(resp);

        rv = j != NULL ? ops_json_print(j) : OPS_EXIT_FAIL;
    } else {
        printf("configuration version %llu (%u change%s, index %llu)\n",
               (unsigned long long)r->version, r->changed,
               r->changed == 1 ? "" : "s",
               (unsigned long long)r->applied_index);
    }
    protobuf_c_message_free_unpacked(resp, NULL);
    return rv;
}

/* A batch of the one change @ch. */
static int change_apply(struct ops_ctl *ctl,
                        Cityops__V1__ConfigChange *ch,
                        const char *note)
{
    Cityops__V1__ConfigBatch batch = CITYOPS__V1__CONFIG_BATCH__INIT;
    Cityops__V1__ConfigChange *changes[1] = {ch};

    batch.n_changes = 1;
    batch.changes = changes;
    if (note != NULL) {
        batch.note = (char *)note;
    }
    return batch_apply(ctl, &batch);
}

/* --- admin apply --- */

/* Every item of @s as an upsert, in reference order (org units before the
 * departments that name them, departments before staff and categories).
 * The changes point into @s; *changes is malloc'd, the caller frees it. */
static int snapshot_changes(const Cityops__V1__ConfigSnapshot *s,
                            Cityops__V1__ConfigChange **changes,
                            size_t *n)
{
    size_t total = s->n_org_units + s->n_departments + s->n_staff +
                   s->n_categories + s->n_grids + s->n_office_hours +
                   s->n_calendar + s->n_eval_weights +
                   (s->public_settings != NULL);
    Cityops__V1__ConfigChange *c = calloc(total + 1, sizeof(*c));
    size_t k = 0;
    size_t i;

    if (c == NULL) {
        return OPS_NOMEM;
    }
    for (i = 0; i < total; i++) {
        cityops__v1__config_change__init(&c[i]);
    }
#define ITEMS(arr, count, member, kase)                                        \
    for (i = 0; i < s->count; i++, k++) {                                      \
        c[k].item_case = CITYOPS__V1__CONFIG_CHANGE__ITEM_##kase;              \
        c[k].member = s->arr[i];                                               \
    }
    ITEMS(org_units, n_org_units, org_unit, ORG_UNIT)
    ITEMS(departments, n_departments, department, DEPARTMENT)
    ITEMS(staff, n_staff, staff, STAFF)
    ITEMS(categories, n_categories, category, CATEGORY)
    ITEMS(grids, n_grids, grid, GRID)
    ITEMS(office_hours, n_office_hours, office_hours, OFFICE_HOURS)
    ITEMS(calendar, n_calendar, calendar_day, CALENDAR_DAY)
    ITEMS(eval_weights, n_eval_weights, eval_weights, EVAL_WEIGHTS)
#undef ITEMS
    if (s->public_settings != NULL) {
        c[k].item_case = CITYOPS__V1__CONFIG_CHANGE__ITEM_PUBLIC_SETTINGS;
        c[k].public_settings = s->public_settings;
        k++;
    }
    *changes = c;
    *n = k;
    return 0;
}

/* Read @path as JSON; a usage error (exit 2) if it is not an object. */
static int file_load(struct ops_ctl *ctl, const char *path, json_t **out)
{
    json_error_t jerr;
    json_t *j = json_load_file(path, JSON_REJECT_DUPLICATES, &jerr);

    *out = NULL;
    if (j == NULL) {
        if (jerr.line <= 0) {
            return ops_usage_error(ctl, "%s: %s", path, jerr.text);
        }
        return ops_usage_error(ctl, "%s:%d:%d: not JSON: %s", path, jerr.line,
                               jerr.column, jerr.text);
    }
    if (!json_is_object(j)) {
        json_decref(j);
        return ops_usage_error(ctl,
                               "%s: $: expected an object with "
                               "\"changes\", or an admin export",
                               path);
    }
    *out = j;
    return OPS_EXIT_OK;
}

static int file_parse(struct ops_ctl *ctl,
                      const char *path,
                      json_t *j,
                      const ProtobufCMessageDescriptor *desc,
                      ProtobufCMessage **out)
{
    char err[300];
    int rv = ops_json_to_pb(j, desc, out, err, sizeof(err));

    if (rv == OPS_NOMEM) {
        fprintf(stderr, "cityctl: out of memory\n");
        return OPS_EXIT_FAIL;
    }
    if (rv != 0) {
        return ops_usage_error(ctl, "%s: %s", path, err);
    }
    return OPS_EXIT_OK;
}

static int run_apply(struct ops_ctl *ctl, const struct ops_args *a)
{
    const char *path = a->n_pos > 2 ? a->pos[2] : NULL;
    const char *note = ops_arg(a, "note");
    Cityops__V1__ConfigBatch *batch = NULL;
    Cityops__V1__ConfigSnapshot *snap = NULL;
    Cityops__V1__ConfigChange *from_snap = NULL;
    Cityops__V1__ConfigChange **ptrs = NULL;
    Cityops__V1__ConfigBatch snap_batch = CITYOPS__V1__CONFIG_BATCH__INIT;
    char default_note[300];
    json_t *j = NULL;
    size_t n = 0;
    size_t i;
    int rv;

    if (path == NULL || a->n_pos > 3) {
        return ops_usage_error(ctl, "admin apply FILE.json [--note TEXT]");
    }
    rv = file_load(ctl, path, &j);
    if (rv != OPS_EXIT_OK) {
        return rv;
    }
    if (json_object_get(j, "ctx") != NULL) {
        json_decref(j);
        return ops_usage_error(ctl,
                               "%s: $.ctx: set by cityctl (--actor, "
                               "--role), not by the file",
                               path);
    }
    if (json_object_get(j, "changes") != NULL) {
        rv = file_parse(ctl, path, j, &cityops__v1__config_batch__descriptor,
                        (ProtobufCMessage **)&batch);
    } else {
        rv = file_parse(ctl, path, j, &cityops__v1__config_snapshot__descriptor,
                        (ProtobufCMessage **)&snap);
    }
    json_decref(j);
    if (rv != OPS_EXIT_OK) {
        return rv;
    }
    if (snap != NULL) {
        if (snapshot_changes(snap, &from_snap, &n) != 0 ||
            (ptrs = calloc(n + 1, sizeof(*ptrs))) == NULL) {
            fprintf(stderr, "cityctl: out of memory\n");
            rv = OPS_EXIT_FAIL;
            goto out_free;
        }
        for (i = 0; i < n; i++) {
            ptrs[i] = &from_snap[i];
        }
        snap_batch.n_changes = n;
        snap_batch.changes = ptrs;
        snprintf(default_note, sizeof(default_note),
                 "import of %s (exported at version %llu)", path,
                 (unsigned long long)snap->version);
        snap_batch.note = default_note;
        batch = &snap_batch;
    }
    if (batch->n_changes == 0) {
        rv = ops_usage_error(ctl, "%s: no changes in the file", path);
        goto out_free;
    }
    if (note != NULL && batch == &snap_batch) {
        batch->note = (char *)note; /* snap_batch is ours, not unpacked */
    } else if (note != NULL) {
        /* the batch was unpacked: its free releases the note */
        char *copy = strdup(note);

        if (copy == NULL) {
            rv = OPS_EXIT_FAIL;
            goto out_free;
        }
        if (batch->note != NULL && batch->note[0] != '\0') {
            free(batch->note);
        }
        batch->note = copy;
    }
    rv = batch_apply(ctl, batch);

out_free:
    free(ptrs);
    free(from_snap);
    if (snap != NULL) {
        protobuf_c_message_free_unpacked(&snap->base, NULL);
    } else if (batch != NULL) {
        protobuf_c_message_free_unpacked(&batch->base, NULL);
    }
    return rv;
}

/* --- admin get --- */

static const char *short_name(const ProtobufCEnumDescriptor *d, int v)
{
    return v == 0 ? "-" : ops_enum_short(d, v);
}

static const char *unit_abbrev(int unit)
{
    switch (unit) {
    case CITYOPS__V1__TIME_UNIT__TIME_UNIT_EMERGENCY_HOURS:
        return "eh";
    case CITYOPS__V1__TIME_UNIT__TIME_UNIT_WORK_HOURS:
        return "wh";
    case CITYOPS__V1__TIME_UNIT__TIME_UNIT_WORK_DAYS:
        return "wd";
    case CITYOPS__V1__TIME_UNIT__TIME_UNIT_CALENDAR_DAYS:
        return "cd";
    }
    return "?";
}

static void table_done(struct ops_table *t, const char *title, int *rv)
{
    if (t == NULL) {
        *rv = OPS_NOMEM;
        return;
    }
    printf("\n%s\n", title);
    ops_table_print(t, stdout);
    ops_table_free(t);
}

static int print_org_units(const Cityops__V1__ConfigSnapshot *s)
{
    static const char *const h[] = {"ID", "NAME", "LEVEL", "PARENT", "CODE"};
    struct ops_table *t = ops_table_new(5, h);
    int rv = 0;
    size_t i;

    for (i = 0; t != NULL && rv == 0 && i < s->n_org_units; i++) {
        const Cityops__V1__OrgUnit *o = s->org_units[i];
        const char *cells[5] = {
            o->id,
            o->name,
            short_name(&cityops__v1__org_level__descriptor, o->level),
            *o->parent_id != '\0' ? o->parent_id : "-",
            *o->admin_code != '\0' ? o->admin_code : "-",
        };

        rv = ops_table_add(t, cells);
    }
    table_done(t, "ORG UNITS", &rv);
    return rv;
}

static int print_departments(const Cityops__V1__ConfigSnapshot *s)
{
    static const char *const h[] = {"ID", "NAME", "LEVEL", "ORG UNIT"};
    struct ops_table *t = ops_table_new(4, h);
    int rv = 0;
    size_t i;

    for (i = 0; t != NULL && rv == 0 && i < s->n_departments; i++) {
        const Cityops__V1__Department *d = s->departments[i];
        const char *cells[4] = {
            d->id,
            d->name,
            short_name(&cityops__v1__dispatch_level__descriptor, d->level),
            *d->org_unit_id != '\0' ? d->org_unit_id : "-",
        };

        rv = ops_table_add(t, cells);
    }
    table_done(t, "DEPARTMENTS", &rv);
    return rv;
}

static int print_staff(const Cityops__V1__ConfigSnapshot *s)
{
    static const char *const h[] = {"ID",         "NAME",     "ROLES",
                                    "DEPARTMENT", "ORG UNIT", "STATE"};
    struct ops_table *t = ops_table_new(6, h);
    int rv = 0;
    size_t i;
    size_t r;

    for (i = 0; t != NULL && rv == 0 && i < s->n_staff; i++) {
        const Cityops__V1__Staff *st = s->staff[i];
        char roles[256] = "";
        size_t len = 0;
        const char *cells[6];

        for (r = 0; r < st->n_roles && len < sizeof(roles); r++) {
            len += (size_t)snprintf(
                roles + len, sizeof(roles) - len, "%s%s", r > 0 ? "," : "",
                ops_enum_short(&cityops__v1__role__descriptor, st->roles[r]));
        }
        cells[0] = st->id;
        cells[1] = st->name;
        cells[2] = roles;
        cells[3] = *st->department_id != '\0' ? st->department_id : "-";
        cells[4] = *st->org_unit_id != '\0' ? st->org_unit_id : "-";
        cells[5] = st->disabled ? "DISABLED" : "active";
        rv = ops_table_add(t, cells);
    }
    table_done(t, "STAFF", &rv);
    return rv;
}

/* One row per 立案条件; the category's own cells on its first row only. */
static int category_rows(struct ops_table *t, const Cityops__V1__Category *c)
{
#define STAGES 7
    char code[16];
    char depts[256] = "";
    char limits[STAGES][24];
    char cond[256];
    const char *cells[13];
    size_t len = 0;
    size_t i;
    size_t k;
    int rv = 0;

    snprintf(code, sizeof(code), "%s-%s", c->major_code, c->minor_code);
    for (i = 0; i < c->n_department_ids && len < sizeof(depts); i++) {
        len += (size_t)snprintf(depts + len, sizeof(depts) - len, "%s%s",
                                i > 0 ? "," : "", c->department_ids[i]);
    }
    for (i = 0; rv == 0 && i < (c->n_conditions > 0 ? c->n_conditions : 1);
         i++) {
        const Cityops__V1__Condition *cd =
            c->n_conditions > 0 ? c->conditions[i] : NULL;
        int first = i == 0;

        for (k = 0; k < STAGES; k++) {
            snprintf(limits[k], sizeof(limits[k]), "-");
        }
        for (k = 0; cd != NULL && k < cd->n_limits; k++) {
            const Cityops__V1__TimeLimit *l = cd->limits[k];

            if ((int)l->stage > 0 && (int)l->stage < STAGES) {
                snprintf(limits[l->stage], sizeof(limits[0]), "%u%s", l->amount,
                         unit_abbrev(l->unit));
            }
        }
        snprintf(cond, sizeof(cond), "%s %s", cd != NULL ? cd->code : "-",
                 cd != NULL ? cd->name : "(no conditions)");
        cells[0] = first ? code : "";
        cells[1] =
            first ? short_name(&cityops__v1__category_type__descriptor, c->type)
                  : "";
        cells[2] = first ? c->major_name : "";
        cells[3] = first ? c->name : "";
        cells[4] = first ? depts : "";
        cells[5] = first ? (c->retired  ? "retired"
                            : c->urgent ? "urgent"
                                        : "")
                         : "";
        cells[6] = cond;
        cells[7] = limits[CITYOPS__V1__STAGE__STAGE_ACCEPT];
        cells[8] = limits[CITYOPS__V1__STAGE__STAGE_VERIFY];
        cells[9] = limits[CITYOPS__V1__STAGE__STAGE_REGISTER];
        cells[10] = limits[CITYOPS__V1__STAGE__STAGE_DISPATCH];
        cells[11] = limits[CITYOPS__V1__STAGE__STAGE_DISPOSE];
        cells[12] = limits[CITYOPS__V1__STAGE__STAGE_CHECK];
        rv = ops_table_add(t, cells);
    }
    return rv;
#undef STAGES
}

static int print_categories(const Cityops__V1__ConfigSnapshot *s)
{
    static const char *const h[] = {
        "CODE",     "TYPE",      "MAJOR",  "NAME",   "DEPARTMENTS",
        "FLAGS",    "CONDITION", "ACCEPT", "VERIFY", "REGISTER",
        "DISPATCH", "DISPOSE",   "CHECK",
    };
    struct ops_table *t = ops_table_new(13, h);
    int rv = 0;
    size_t i;

    for (i = 0; t != NULL && rv == 0 && i < s->n_categories; i++) {
        rv = category_rows(t, s->categories[i]);
    }
    table_done(t,
               "CATEGORIES (limits: eh emergency hours, wh work hours, "
               "wd work days, cd calendar days)",
               &rv);
    return rv;
}

static void print_hours_calendar(const Cityops__V1__ConfigSnapshot *s)
{
    static const char *const days[] = {"?",   "Mon", "Tue", "Wed",
                                       "Thu", "Fri", "Sat", "Sun"};
    size_t i;
    size_t k;

    printf("\nOFFICE HOURS\n");
    for (i = 0; i < s->n_office_hours; i++) {
        const Cityops__V1__WeekdayHours *w = s->office_hours[i];

        printf("  %s ", days[w->weekday <= 7 ? w->weekday : 0]);
        for (k = 0; k < w->n_periods; k++) {
            const Cityops__V1__OfficePeriod *p = w->periods[k];

            printf("%s%02u:%02u-%02u:%02u", k > 0 ? ", " : "",
                   p->start_minute / 60, p->start_minute % 60,
                   p->end_minute / 60, p->end_minute % 60);
        }
        printf("%s\n", w->n_periods == 0 ? " none" : "");
    }
    printf("\nCALENDAR (dates not listed: Mon-Fri work, Sat-Sun rest)\n");
    for (i = 0; i < s->n_calendar; i++) {
        const Cityops__V1__CalendarDay *d = s->calendar[i];

        printf("  %s %-7s %s\n", d->date, d->workday ? "WORKDAY" : "HOLIDAY",
               d->note);
    }
    printf("\nEVALUATION WEIGHTS\n");
    for (i = 0; i < s->n_eval_weights; i++) {
        const Cityops__V1__EvalWeights *e = s->eval_weights[i];

        printf("  %-10s", e->object_kind);
        for (k = 0; k < e->n_weights; k++) {
            printf(" %s %.3g", e->weights[k]->indicator, e->weights[k]->weight);
        }
        printf("\n");
    }
}

static int snapshot_print(const Cityops__V1__ConfigSnapshot *s)
{
    const Cityops__V1__PublicSettings *p = s->public_settings;
    size_t conditions = 0;
    size_t i;
    int rv;

    for (i = 0; i < s->n_categories; i++) {
        conditions += s->categories[i]->n_conditions;
    }
    printf("configuration version %llu (applied index %llu)\n",
           (unsigned long long)s->version,
           (unsigned long long)s->applied_index);
    printf("org units %zu, departments %zu, staff %zu, categories %zu "
           "(conditions %zu), grids %zu,\noffice hours %zu weekdays, "
           "calendar %zu days, eval weights %zu\n",
           s->n_org_units, s->n_departments, s->n_staff, s->n_categories,
           conditions, s->n_grids, s->n_office_hours, s->n_calendar,
           s->n_eval_weights);
    if (p != NULL) {
        printf("public: county %s, jurisdiction %s, reopen within %u days, "
               "duplicates within %u m and %u h\n",
               p->county_code, p->jurisdiction_id, p->reopen_window_days,
               p->duplicate_radius_m, p->duplicate_window_hours);
    } else {
        printf("public: not set\n");
    }
    rv = print_org_units(s);
    if (rv == 0) {
        rv = print_departments(s);
    }
    if (rv == 0) {
        rv = print_staff(s);
    }
    if (rv == 0) {
        rv = print_categories(s);
    }
    if (rv == 0) {
        print_hours_calendar(s);
    }
    return rv;
}

static int run_get(struct ops_ctl *ctl, const struct ops_args *a)
{
    Cityops__V1__ConfigSnapshot *s = NULL;
    int rv;

    if (a->n_pos > 2) {
        return ops_usage_error(ctl, "admin get: unexpected argument '%s'",
                               a->pos[2]);
    }
    rv = config_get(ctl, &s);
    if (rv != OPS_EXIT_OK) {
        return rv;
    }
    if (ctl->json) {
        json_t *j = ops_pb_to_json(&s->base);

        rv = j != NULL ? ops_json_print(j) : OPS_EXIT_FAIL;
    } else if (snapshot_print(s) != 0) {
        fprintf(stderr, "cityctl: out of memory\n");
        rv = OPS_EXIT_FAIL;
    }
    protobuf_c_message_free_unpacked(&s->base, NULL);
    return rv;
}

/* --- admin export --- */

/* Write @j to @path through path.part, fsynced and renamed, so that an
 * interrupted export never leaves half a file under the real name. */
static int
json_write_file(const json_t *j, const char *path, char *err, size_t errlen)
{
    char tmp[4096];
    FILE *f;
    int rv;

    snprintf(tmp, sizeof(tmp), "%s.part", path);
    f = fopen(tmp, "w");
    if (f == NULL) {
        snprintf(err, errlen, "%s: %s", tmp, strerror(errno));
        return -1;
    }
    rv = json_dumpf(j, f, JSON_INDENT(2) | JSON_REAL_PRECISION(17));
    if (rv == 0 && fputc('\n', f) == EOF) {
        rv = -1;
    }
    if (rv == 0 && (fflush(f) != 0 || fsync(fileno(f)) != 0)) {
        rv = -1;
    }
    if (fclose(f) != 0) {
        rv = -1;
    }
    if (rv == 0 && rename(tmp, path) != 0) {
        rv = -1;
    }
    if (rv != 0) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        unlink(tmp);
    }
    return rv;
}

static int run_export(struct ops_ctl *ctl, const struct ops_args *a)
{
    const char *out = ops_arg(a, "out");
    Cityops__V1__ConfigSnapshot *s = NULL;
    char err[4200];
    json_t *j;
    int rv;

    if (out == NULL || *out == '\0' || a->n_pos > 2) {
        return ops_usage_error(ctl, "admin export --out FILE");
    }
    rv = config_get(ctl, &s);
    if (rv != OPS_EXIT_OK) {
        return rv;
    }
    j = ops_pb_to_json(&s->base);
    if (j == NULL) {
        fprintf(stderr, "cityctl: out of memory\n");
        rv = OPS_EXIT_FAIL;
    } else if (json_write_file(j, out, err, sizeof(err)) != 0) {
        ops_print_error(ctl, "admin export", "LOCAL", err, NULL);
        rv = OPS_EXIT_FAIL;
    } else if (ctl->json) {
        rv = ops_json_print(json_pack("{s:I,s:s}", "version",
                                      (json_int_t)s->version, "out", out));
    } else {
        printf("exported configuration version %llu to %s\n",
               (unsigned long long)s->version, out);
    }
    json_decref(j);
    protobuf_c_message_free_unpacked(&s->base, NULL);
    return rv;
}

/* --- admin history --- */

static int history_print(const Cityops__V1__ConfigHistoryResponse *h)
{
    static const char *const hd[] = {"VERSION", "AT", "ACTOR", "CHANGES",
                                     "NOTE"};
    struct ops_table *t = ops_table_new(5, hd);
    int rv = 0;
    size_t i;

    for (i = 0; t != NULL && rv == 0 && i < h->n_versions; i++) {
        const Cityops__V1__ConfigVersionInfo *v = h->versions[i];
        char version[24];
        char at[40];
        char changes[16];
        const char *cells[5] = {version, at, v->actor_id, changes, v->note};

        snprintf(version, sizeof(version), "%llu",
                 (unsigned long long)v->version);
        ops_time_format(v->at, at, sizeof(at));
        snprintf(changes, sizeof(changes), "%u", v->changes);
        rv = ops_table_add(t, cells);
    }
    if (t == NULL) {
        return OPS_NOMEM;
    }
    ops_table_print(t, stdout);
    ops_table_free(t);
    return rv;
}

static int run_history(struct ops_ctl *ctl, const struct ops_args *a)
{
    Cityops__V1__ConfigHistoryRequest req =
        CITYOPS__V1__CONFIG_HISTORY_REQUEST__INIT;
    Cityops__V1__ReadOptions read = CITYOPS__V1__READ_OPTIONS__INIT;
    ProtobufCMessage *resp = NULL;
    int rv;

    if (a->n_pos > 2) {
        return ops_usage_error(ctl, "admin history: unexpected argument '%s'",
                               a->pos[2]);
    }
    ops_read_fill(ctl, &read,
                  CITYOPS__V1__CONSISTENCY__CONSISTENCY_LINEARIZABLE);
    req.read = &read;
    rv = ops_call(ctl, "Admin/History", &req.base,
                  &cityops__v1__config_history_response__descriptor, &resp);
    if (rv != OPS_EXIT_OK) {
        return rv;
    }
    if (ctl->json) {
        json_t *j = ops_pb_to_json(resp);

        rv = j != NULL ? ops_json_print(j) : OPS_EXIT_FAIL;
    } else if (history_print(
                   (const Cityops__V1__ConfigHistoryResponse *)resp) != 0) {
        fprintf(stderr, "cityctl: out of memory\n");
        rv = OPS_EXIT_FAIL;
    }
    protobuf_c_message_free_unpacked(resp, NULL);
    return rv;
}

/* --- one-change commands --- */

/* "admin staff add ID": positional @want (3 or 4 words in all). */
static int
want_pos(struct ops_ctl *ctl, const struct ops_args *a, int want, const char *u)
{
    if (a->n_pos != want) {
        return ops_usage_error(ctl, "usage: cityctl %s", u);
    }
    return OPS_EXIT_OK;
}

static int run_staff_add(struct ops_ctl *ctl, const struct ops_args *a)
{
    static const char u[] =
        "admin staff add ID --name N --role R [--role R2 ...] [--dept D]";
    Cityops__V1__Staff st = CITYOPS__V1__STAFF__INIT;
    Cityops__V1__ConfigChange ch = CITYOPS__V1__CONFIG_CHANGE__INIT;
    Cityops__V1__Role roles[MAX_STAFF_ROLES];
    char *names[MAX_STAFF_ROLES];
    int n;
    int i;
    int rv = want_pos(ctl, a, 4, u);

    if (rv != OPS_EXIT_OK) {
        return rv;
    }
    n = ops_arg_all(a, "role", names, MAX_STAFF_ROLES);
    if (n == 0 || n > MAX_STAFF_ROLES || ops_arg(a, "name") == NULL) {
        return ops_usage_error(ctl, "usage: cityctl %s", u);
    }
    for (i = 0; i < n; i++) {
        int r;

        if (ops_parse_role(names[i], &r) != 0) {
            return ops_usage_error(ctl, "--role: unknown role '%s'", names[i]);
        }
        roles[i] = (Cityops__V1__Role)r;
    }
    /* Here --role names the member's roles; the request itself goes as
     * ADMIN, the only role that may change the configuration. */
    ctl->role = 0;
    st.id = a->pos[3];
    st.name = ops_arg(a, "name");
    st.n_roles = (size_t)n;
    st.roles = roles;
    if (ops_arg(a, "dept") != NULL) {
        st.department_id = ops_arg(a, "dept");
    }
    ch.item_case = CITYOPS__V1__CONFIG_CHANGE__ITEM_STAFF;
    ch.staff = &st;
    return change_apply(ctl, &ch, NULL);
}

static int
run_staff_disable(struct ops_ctl *ctl, const struct ops_args *a, int disable)
{
    Cityops__V1__ConfigSnapshot *s = NULL;
    Cityops__V1__ConfigChange ch = CITYOPS__V1__CONFIG_CHANGE__INIT;
    Cityops__V1__Staff st;
    const char *id;
    size_t i;
    int rv =
        want_pos(ctl, a, 4,
                 disable ? "admin staff disable ID" : "admin staff enable ID");

    if (rv != OPS_EXIT_OK) {
        return rv;
    }
    id = a->pos[3];
    rv = config_get(ctl, &s);
    if (rv != OPS_EXIT_OK) {
        return rv;
    }
    for (i = 0; i < s->n_staff; i++) {
        if (strcmp(s->staff[i]->id, id) == 0) {
            break;
        }
    }
    if (i == s->n_staff) {
        char msg[300];

        snprintf(msg, sizeof(msg), "no staff member '%s'", id);
        ops_print_error(ctl, "admin staff", "NOT_FOUND", msg, NULL);
        rv = OPS_EXIT_FAIL;
    } else if (!s->staff[i]->disabled == !disable) {
        if (ctl->json) {
            rv = ops_json_print(json_pack(
                "{s:I,s:i}", "version", (json_int_t)s->version, "changed", 0));
        } else {
            printf("staff %s already %s (configuration version %llu)\n", id,
                   disable ? "disabled" : "enabled",
                   (unsigned long long)s->version);
        }
    } else {
        st = *s->staff[i];
        st.disabled = disable;
        ch.item_case = CITYOPS__V1__CONFIG_CHANGE__ITEM_STAFF;
        ch.staff = &st;
        rv = change_apply(ctl, &ch, NULL);
    }
    protobuf_c_message_free_unpacked(&s->base, NULL);
    return rv;
}

static int run_staff(struct ops_ctl *ctl, const struct ops_args *a)
{
    const char *verb = a->n_pos > 2 ? a->pos[2] : "";

    if (strcmp(verb, "add") == 0) {
        return run_staff_add(ctl, a);
    }
    if (strcmp(verb, "disable") == 0 || strcmp(verb, "enable") == 0) {
        return run_staff_disable(ctl, a, strcmp(verb, "disable") == 0);
    }
    return ops_usage_error(ctl, "admin staff add|disable|enable ID ...");
}

static int run_dept(struct ops_ctl *ctl, const struct ops_args *a)
{
    static const char u[] =
        "admin dept add ID --name N [--level city|district]";
    Cityops__V1__Department d = CITYOPS__V1__DEPARTMENT__INIT;
    Cityops__V1__ConfigChange ch = CITYOPS__V1__CONFIG_CHANGE__INIT;
    const char *level = ops_arg(a, "level");
    int rv = want_pos(ctl, a, 4, u);

    if (rv != OPS_EXIT_OK) {
        return rv;
    }
    if (strcmp(a->pos[2], "add") != 0 || ops_arg(a, "name") == NULL) {
        return ops_usage_error(ctl, "usage: cityctl %s", u);
    }
    d.id = a->pos[3];
    d.name = ops_arg(a, "name");
    d.level = CITYOPS__V1__DISPATCH_LEVEL__DISPATCH_LEVEL_CITY;
    if (level != NULL && strcmp(level, "district") == 0) {
        d.level = CITYOPS__V1__DISPATCH_LEVEL__DISPATCH_LEVEL_DISTRICT;
    } else if (level != NULL && strcmp(level, "city") != 0) {
        return ops_usage_error(ctl, "--level: city or district");
    }
    ch.item_case = CITYOPS__V1__CONFIG_CHANGE__ITEM_DEPARTMENT;
    ch.department = &d;
    return change_apply(ctl, &ch, NULL);
}

/* YYYY-MM-DD, a real date. */
static int date_ok(const char *s)
{
    static const int mdays[] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    int y;
    int m;
    int d;
    int i;

    if (strlen(s) != 10 || s[4] != '-' || s[7] != '-') {
        return 0;
    }
    for (i = 0; i < 10; i++) {
        if (i != 4 && i != 7 && !isdigit((unsigned char)s[i])) {
            return 0;
        }
    }
    y = atoi(s);
    m = atoi(s + 5);
    d = atoi(s + 8);
    if (m < 1 || m > 12 || d < 1 || d > mdays[m - 1]) {
        return 0;
    }
    return m != 2 || d < 29 || (y % 4 == 0 && (y % 100 != 0 || y % 400 == 0));
}

static int run_holiday(struct ops_ctl *ctl, const struct ops_args *a)
{
    static const char u[] = "admin holiday YYYY-MM-DD [--workday] [--note T]";
    Cityops__V1__CalendarDay day = CITYOPS__V1__CALENDAR_DAY__INIT;
    Cityops__V1__ConfigChange ch = CITYOPS__V1__CONFIG_CHANGE__INIT;
    int rv = want_pos(ctl, a, 3, u);

    if (rv != OPS_EXIT_OK) {
        return rv;
    }
    if (!date_ok(a->pos[2])) {
        return ops_usage_error(ctl,
                               "admin holiday: '%s' is not a date "
                               "(YYYY-MM-DD)",
                               a->pos[2]);
    }
    day.date = a->pos[2];
    day.workday = ops_flag(a, "workday");
    if (ops_arg(a, "note") != NULL) {
        day.note = ops_arg(a, "note");
    }
    ch.item_case = CITYOPS__V1__CONFIG_CHANGE__ITEM_CALENDAR_DAY;
    ch.calendar_day = &day;
    return change_apply(ctl, &ch, NULL);
}

/* "mon".."sun", "monday".., or 1..7 -> 1..7; 0 if none. */
static unsigned weekday_parse(const char *s)
{
    static const char *const names[] = {"monday",   "tuesday", "wednesday",
                                        "thursday", "friday",  "saturday",
                                        "sunday"};
    size_t len = strlen(s);
    unsigned i;

    if (len == 1 && s[0] >= '1' && s[0] <= '7') {
        return (unsigned)(s[0] - '0');
    }
    for (i = 0; i < 7 && len >= 3; i++) {
        if (strncasecmp(names[i], s, len) == 0) {
            return i + 1;
        }
    }
    return 0;
}

/* "HH:MM" -> minutes after midnight (24:00 allowed); -1 if malformed. */
static int hhmm_parse(const char *s, size_t len)
{
    int h;
    int m;

    if (len != 5 || s[2] != ':' || !isdigit((unsigned char)s[0]) ||
        !isdigit((unsigned char)s[1]) || !isdigit((unsigned char)s[3]) ||
        !isdigit((unsigned char)s[4])) {
        return -1;
    }
    h = (s[0] - '0') * 10 + (s[1] - '0');
    m = (s[3] - '0') * 10 + (s[4] - '0');
    if (m > 59 || h > 24 || (h == 24 && m != 0)) {
        return -1;
    }
    return h * 60 + m;
}

#define MAX_PERIODS 8

/* "HH:MM-HH:MM[,HH:MM-HH:MM...]" into @p; returns how many, -1 if bad. */
static int periods_parse(const char *spec, Cityops__V1__OfficePeriod *p)
{
    const char *s = spec;
    int n = 0;

    while (*s != '\0') {
        const char *comma = strchr(s, ',');
        size_t len = comma != NULL ? (size_t)(comma - s) : strlen(s);
        int start;
        int end;

        if (n == MAX_PERIODS || len != 11 || s[5] != '-') {
            return -1;
        }
        start = hhmm_parse(s, 5);
        end = hhmm_parse(s + 6, 5);
        if (start < 0 || end < 0 || start >= end) {
            return -1;
        }
        cityops__v1__office_period__init(&p[n]);
        p[n].start_minute = (uint32_t)start;
        p[n].end_minute = (uint32_t)end;
        n++;
        if (comma == NULL) {
            break;
        }
        s = comma + 1;
    }
    return n > 0 ? n : -1;
}

static int run_hours(struct ops_ctl *ctl, const struct ops_args *a)
{
    static const char u[] =
        "admin hours WEEKDAY HH:MM-HH:MM[,HH:MM-HH:MM] | none";
    Cityops__V1__WeekdayHours wh = CITYOPS__V1__WEEKDAY_HOURS__INIT;
    Cityops__V1__ConfigChange ch = CITYOPS__V1__CONFIG_CHANGE__INIT;
    Cityops__V1__OfficePeriod periods[MAX_PERIODS];
    Cityops__V1__OfficePeriod *ptrs[MAX_PERIODS];
    int n;
    int i;
    int rv = want_pos(ctl, a, 4, u);

    if (rv != OPS_EXIT_OK) {
        return rv;
    }
    wh.weekday = weekday_parse(a->pos[2]);
    if (wh.weekday == 0) {
        return ops_usage_error(ctl,
                               "admin hours: '%s' is not a weekday "
                               "(mon..sun or 1..7)",
                               a->pos[2]);
    }
    if (strcmp(a->pos[3], "none") == 0) {
        ch.delete_ = 1;
    } else {
        n = periods_parse(a->pos[3], periods);
        if (n < 0) {
            return ops_usage_error(ctl,
                                   "admin hours: '%s': want "
                                   "HH:MM-HH:MM[,HH:MM-HH:MM], each "
                                   "start before its end",
                                   a->pos[3]);
        }
        for (i = 0; i < n; i++) {
            ptrs[i] = &periods[i];
        }
        wh.n_periods = (size_t)n;
        wh.periods = ptrs;
    }
    ch.item_case = CITYOPS__V1__CONFIG_CHANGE__ITEM_OFFICE_HOURS;
    ch.office_hours = &wh;
    return change_apply(ctl, &ch, NULL);
}

int ctl_admin_run(struct ops_ctl *ctl, const struct ops_args *a)
{
    const char *sub = a->pos[1];

    if (strcmp(sub, "apply") == 0) {
        return run_apply(ctl, a);
    }
    if (strcmp(sub, "get") == 0) {
        return run_get(ctl, a);
    }
    if (strcmp(sub, "export") == 0) {
        return run_export(ctl, a);
    }
    if (strcmp(sub, "history") == 0) {
        return run_history(ctl, a);
    }
    if (strcmp(sub, "staff") == 0) {
        return run_staff(ctl, a);
    }
    if (strcmp(sub, "dept") == 0) {
        return run_dept(ctl, a);
    }
    if (strcmp(sub, "holiday") == 0) {
        return run_holiday(ctl, a);
    }
    return run_hours(ctl, a);
}

const char *ctl_admin_options(const char *sub)
{
    static const struct {
        const char *sub;
        const char *options;
    } subs[] = {
        {"apply", "note"},           {"get", ""},
        {"export", "out"},           {"history", ""},
        {"staff", "name dept"},      {"dept", "name level"},
        {"holiday", "workday note"}, {"hours", ""},
    };
    size_t i;

    for (i = 0; i < sizeof(subs) / sizeof(subs[0]); i++) {
        if (strcmp(subs[i].sub, sub) == 0) {
            return subs[i].options;
        }
    }
    return NULL;
}
