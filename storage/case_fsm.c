/* The case state machine (DOMAIN.md section 3): one function per command
 * that checks it against the stored case and, when it is allowed, changes
 * the case, appends a CaseEvent and moves the case's index entries.
 *
 * Checks run in a fixed order so that every replica and every retry gives
 * the same answer: fields (INVALID_ARGUMENT), then the case exists
 * (NOT_FOUND), then the role may send this event at all (PERMISSION_DENIED),
 * then the current state allows it (FAILED_PRECONDITION), then the checks
 * that depend on both (role per state, checker identity, merge target...).
 *
 * Everything comes from the command and the database: the time is the
 * leader's (cmd->time), the actor and role are the command's. A refused
 * command may have written nothing yet or something; apply.c runs each
 * command in a nested transaction and discards it unless the result is OK.
 */
#include <assert.h>
#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "store_internal.h"

#define FSM_REFUSED 1 /* a business error was written into the result */

#define ROLE(r) (1u << CITYOPS__V1__ROLE__ROLE_##r)
#define ST(x) (1u << CITYOPS__V1__CASE_STATE__CASE_STATE_##x)
#define ST_TERMINAL                                                            \
    (ST(CLOSED) | ST(REJECTED) | ST(VOIDED) | ST(MERGED) | ST(TRANSFERRED_OUT))
#define ST_OPEN                                                                \
    (ST(REPORTED) | ST(VERIFYING) | ST(ACCEPTED) | ST(REGISTERED) |            \
     ST(DISPATCHED) | ST(IN_DISPOSAL) | ST(RETURNED) | ST(DISPOSED) |          \
     ST(CHECKING) | ST(CHECKED) | ST(SHELVED))

#define RC_INVALID CITYOPS__V1__RESULT_CODE__RESULT_INVALID_ARGUMENT
#define RC_NOT_FOUND CITYOPS__V1__RESULT_CODE__RESULT_NOT_FOUND
#define RC_DENIED CITYOPS__V1__RESULT_CODE__RESULT_PERMISSION_DENIED
#define RC_PRECONDITION CITYOPS__V1__RESULT_CODE__RESULT_FAILED_PRECONDITION

struct fsm {
    struct store *s;
    MDB_txn *txn;
    uint64_t index;
    const Cityops__V1__Command *cmd;
    Cityops__V1__CommandResult *res;
    int written; /* something was put: no refusal may follow (REPORT) */
};

struct fsm_op;

/* Op-specific steps. validate() sees only the command; apply() runs after
 * the generic checks, may still refuse, and changes @c and @ev. */
typedef int (*fsm_validate_fn)(struct fsm *f, const struct fsm_op *op);
typedef int (*fsm_apply_fn)(struct fsm *f,
                            const struct fsm_op *op,
                            Cityops__V1__Case *c,
                            Cityops__V1__CaseEvent *ev);

/* One state-changing event or overlay of the DOMAIN table. */
struct fsm_op {
    Cityops__V1__CaseEventType type;
    const char *name;
    uint32_t roles;            /* roles that may send it in some state */
    uint32_t from;             /* states it is allowed in */
    Cityops__V1__CaseState to; /* UNSPECIFIED: overlay, state unchanged */
    int reason_required;
    fsm_validate_fn validate;
    fsm_apply_fn apply;
};

/* The request fields every case command shares. */
struct fsm_args {
    uint64_t case_id;
    const char *reason;
    size_t n_attachments;
    Cityops__V1__Attachment **attachments;
};

static const char *str0(const char *s)
{
    return s != NULL ? s : "";
}

static uint32_t role_bit(Cityops__V1__Role role)
{
    if ((int)role < 0 || (int)role > 31) {
        return 0;
    }
    return 1u << role;
}

static uint32_t state_bit(Cityops__V1__CaseState state)
{
    if ((int)state < 0 || (int)state > 31) {
        return 0;
    }
    return 1u << state;
}

static const char *enum_name(const ProtobufCEnumDescriptor *desc, int v)
{
    const ProtobufCEnumValue *ev =
        protobuf_c_enum_descriptor_get_value(desc, v);

    return ev != NULL ? ev->name : "UNKNOWN";
}

static const char *role_name(Cityops__V1__Role role)
{
    return enum_name(&cityops__v1__role__descriptor, role);
}

static const char *state_name(Cityops__V1__CaseState state)
{
    return enum_name(&cityops__v1__case_state__descriptor, state);
}

static int
refuse(struct fsm *f, Cityops__V1__ResultCode code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int
refuse(struct fsm *f, Cityops__V1__ResultCode code, const char *fmt, ...)
{
    char msg[STORE_ERRMSG_SIZE];
    va_list ap;

    assert(!f->written);
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    f->res->code = code;
    if (store_str_set(&f->res->message, msg) != 0) {
        return STORE_NOMEM;
    }
    return FSM_REFUSED;
}

/* Field checks. */

static int
check_len(struct fsm *f, const char *field, const char *v, size_t max)
{
    if (strlen(str0(v)) > max) {
        return refuse(f, RC_INVALID, "%s longer than %zu bytes", field, max);
    }
    return 0;
}

static int is_code2(const char *v)
{
    return v != NULL && isdigit((unsigned char)v[0]) &&
           isdigit((unsigned char)v[1]) && v[2] == '\0';
}

static int check_code2(struct fsm *f, const char *field, const char *v)
{
    if (!is_code2(v)) {
        return refuse(f, RC_INVALID, "%s must be 2 digits", field);
    }
    return 0;
}

static int
check_attachments(struct fsm *f, size_t n, Cityops__V1__Attachment *const *a)
{
    if (n > STORE_MAX_ATTACHMENTS) {
        return refuse(f, RC_INVALID, "%zu attachments, at most %d", n,
                      STORE_MAX_ATTACHMENTS);
    }
    for (size_t i = 0; i < n; i++) {
        const char *sha = str0(a[i]->sha256);
        size_t len = strlen(sha);

        for (size_t j = 0; j < len; j++) {
            if (!isxdigit((unsigned char)sha[j])) {
                len = 0;
                break;
            }
        }
        if (len != 64) {
            return refuse(f, RC_INVALID,
                          "attachment %zu: sha256 must be 64 hex digits", i);
        }
        if (strlen(str0(a[i]->uri)) > STORE_MAX_TEXT ||
            strlen(str0(a[i]->media_type)) > STORE_MAX_ID) {
            return refuse(f, RC_INVALID, "attachment %zu: field too long", i);
        }
    }
    return 0;
}

static int check_location(struct fsm *f, const Cityops__V1__Location *loc)
{
    int rv;

    if (loc == NULL) {
        return 0;
    }
    if (!(loc->lon >= -180.0 && loc->lon <= 180.0)) {
        return refuse(f, RC_INVALID, "lon must be in [-180, 180]");
    }
    if (!(loc->lat >= -90.0 && loc->lat <= 90.0)) {
        return refuse(f, RC_INVALID, "lat must be in [-90, 90]");
    }
    if ((int)loc->datum < 0 || loc->datum > CITYOPS__V1__DATUM__DATUM_GCJ02) {
        return refuse(f, RC_INVALID, "unknown datum %d", (int)loc->datum);
    }
    rv = check_len(f, "grid_code", loc->grid_code, STORE_MAX_ID);
    if (rv != 0) {
        return rv;
    }
    return check_len(f, "address", loc->address, STORE_MAX_TEXT);
}

static int check_category_type(struct fsm *f, Cityops__V1__CategoryType t)
{
    if ((int)t < 0 || t > CITYOPS__V1__CATEGORY_TYPE__CATEGORY_TYPE_EVENT) {
        return refuse(f, RC_INVALID, "unknown category_type %d", (int)t);
    }
    return 0;
}

/* Case helpers. */

static int case_prepare(Cityops__V1__Case *c)
{
    if (c->times == NULL) {
        c->times = malloc(sizeof(*c->times));
        if (c->times == NULL) {
            return STORE_NOMEM;
        }
        cityops__v1__case_times__init(c->times);
    }
    if (c->counters == NULL) {
        c->counters = malloc(sizeof(*c->counters));
        if (c->counters == NULL) {
            return STORE_NOMEM;
        }
        cityops__v1__case_counters__init(c->counters);
    }
    return 0;
}

static int case_is_open(const Cityops__V1__Case *c)
{
    return (state_bit(c->state) & ST_OPEN) != 0;
}

static void event_init(struct fsm *f,
                       Cityops__V1__CaseEvent *ev,
                       const Cityops__V1__Case *c,
                       Cityops__V1__CaseEventType type,
                       const struct fsm_args *a)
{
    cityops__v1__case_event__init(ev);
    ev->case_id = c->case_id;
    ev->type = type;
    ev->actor_id = (char *)str0(f->cmd->actor_id);
    ev->role = f->cmd->role;
    ev->at = f->cmd->time;
    ev->from_state = c->state;
    ev->to_state = c->state;
    ev->reason = (char *)str0(a->reason);
    ev->department_id = NULL; /* case_commit: the department after it */
    ev->raft_index = f->index;
    ev->n_attachments = a->n_attachments;
    ev->attachments = a->attachments;
}

/* Stamp the bookkeeping every change shares, then store case and event. */
static int case_commit(struct fsm *f,
                       const struct store_case_ix *old,
                       Cityops__V1__Case *c,
                       Cityops__V1__CaseEvent *ev)
{
    int rv;

    c->event_count++;
    c->times->updated = f->cmd->time;
    c->last_index = f->index;
    ev->seq = c->event_count;
    ev->to_state = c->state;
    if (ev->department_id == NULL) {
        ev->department_id = (char *)str0(c->department_id);
    }
    rv = store_case_save(f->s, f->txn, old, c);
    if (rv != 0) {
        return rv;
    }
    rv = store_event_put(f->s, f->txn, ev);
    if (rv != 0) {
        return rv;
    }
    rv = public_on_event(f->s, f->txn, c, ev);
    if (rv != 0) {
        return rv;
    }
    return eval_on_event(f->s, f->txn, c, ev);
}

/* REPORT: a new case. */

static Cityops__V1__CaseSource source_from_role(Cityops__V1__Role role)
{
    switch (role) {
    case CITYOPS__V1__ROLE__ROLE_INSPECTOR:
        return CITYOPS__V1__CASE_SOURCE__CASE_SOURCE_INSPECTOR;
    case CITYOPS__V1__ROLE__ROLE_PUBLIC:
        return CITYOPS__V1__CASE_SOURCE__CASE_SOURCE_PUBLIC;
    case CITYOPS__V1__ROLE__ROLE_INTAKE_CLERK:
        return CITYOPS__V1__CASE_SOURCE__CASE_SOURCE_HOTLINE;
    default:
        return CITYOPS__V1__CASE_SOURCE__CASE_SOURCE_IOT_ALARM;
    }
}

/* The county code of the configuration's public settings + "-" + the
 * report date in UTC+8 (Beijing time) + "-" + the case id; "CO" stands in
 * for the county code until one is configured. */
static void tracking_no(char *buf,
                        size_t size,
                        const char *county,
                        int64_t time_us,
                        uint64_t id)
{
    int64_t secs = time_us / 1000000;
    time_t t;
    struct tm tm;

    if (time_us % 1000000 < 0) {
        secs--;
    }
    t = (time_t)(secs + 8 * 3600);
    if (gmtime_r(&t, &tm) == NULL) {
        memset(&tm, 0, sizeof(tm));
    }
    snprintf(buf, size, "%s-%04d%02d%02d-%06llu",
             county != NULL && county[0] != '\0' ? county : "CO",
             tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
             (unsigned long long)id);
}

static int report_validate(struct fsm *f, const Cityops__V1__ReportRequest *r)
{
    int rv;

    if ((int)r->source < 0 ||
        r->source > CITYOPS__V1__CASE_SOURCE__CASE_SOURCE_HOTLINE) {
        return refuse(f, RC_INVALID, "unknown source %d", (int)r->source);
    }
    rv = check_category_type(f, r->category_type);
    if (rv != 0) {
        return rv;
    }
    if (r->category_type ==
        CITYOPS__V1__CATEGORY_TYPE__CATEGORY_TYPE_UNSPECIFIED) {
        return refuse(f, RC_INVALID, "category_type required");
    }
    rv = check_code2(f, "major_code", r->major_code);
    if (rv == 0) {
        rv = check_code2(f, "minor_code", r->minor_code);
    }
    if (rv == 0) {
        rv = check_len(f, "component_id", r->component_id, STORE_MAX_ID);
    }
    if (rv == 0) {
        rv = check_len(f, "description", r->description, STORE_MAX_DESCRIPTION);
    }
    if (rv == 0) {
        rv = check_location(f, r->location);
    }
    if (rv == 0) {
        rv = check_attachments(f, r->n_attachments, r->attachments);
    }
    return rv;
}

static int fsm_report(struct fsm *f, const Cityops__V1__ReportRequest *r)
{
    const uint32_t roles =
        ROLE(INSPECTOR) | ROLE(PUBLIC) | ROLE(INTAKE_CLERK) | ROLE(SYSTEM);
    struct fsm_args args = {0, "", r->n_attachments, r->attachments};
    Cityops__V1__Case c = CITYOPS__V1__CASE__INIT;
    Cityops__V1__CaseTimes times = CITYOPS__V1__CASE_TIMES__INIT;
    Cityops__V1__CaseCounters counters = CITYOPS__V1__CASE_COUNTERS__INIT;
    Cityops__V1__CaseEvent ev;
    char tn[64];
    uint64_t id;
    int rv;

    rv = report_validate(f, r);
    if (rv != 0) {
        return rv;
    }
    if ((role_bit(f->cmd->role) & roles) == 0) {
        return refuse(f, RC_DENIED, "role %s may not REPORT",
                      role_name(f->cmd->role));
    }
    {
        char why[300];
        rv = case_authorize(f->s, f->txn, f->cmd, NULL,
                            CITYOPS__V1__CASE_EVENT_TYPE__CASE_EVENT_REPORT,
                            why, sizeof why);
        if (rv == 1) {
            return refuse(f, RC_DENIED, "REPORT: %s", why);
        }
        if (rv != 0) {
            return rv;
        }
    }
    rv = store_meta_get(f->s, f->txn, STORE_META_NEXT_CASE_ID, &id);
    if (rv != 0) {
        return rv;
    }
    if (id == 0) {
        id = 1;
    }
    /* Every refusal is above: case_fsm_unnested() lets apply.c run a
     * REPORT without a nested transaction to drop. */
    f->written = 1;
    rv = store_meta_put(f->s, f->txn, STORE_META_NEXT_CASE_ID, id + 1);
    if (rv != 0) {
        return rv;
    }
    {
        const Cityops__V1__PublicSettings *ps = NULL;
        rv = config_public_peek(f->s, f->txn, &ps);
        if (rv != 0 && rv != STORE_NOTFOUND) {
            return rv;
        }
        tracking_no(tn, sizeof(tn), ps != NULL ? ps->county_code : NULL,
                    f->cmd->time, id);
    }
    c.case_id = id;
    c.tracking_no = tn;
    c.source = r->source != CITYOPS__V1__CASE_SOURCE__CASE_SOURCE_UNSPECIFIED
                   ? r->source
                   : source_from_role(f->cmd->role);
    c.category_type = r->category_type;
    c.major_code = r->major_code;
    c.minor_code = r->minor_code;
    c.component_id = (char *)str0(r->component_id);
    c.description = (char *)str0(r->description);
    c.location = r->location;
    c.n_attachments = r->n_attachments;
    c.attachments = r->attachments;
    c.reporter_id = (char *)str0(f->cmd->actor_id);
    c.state = CITYOPS__V1__CASE_STATE__CASE_STATE_UNSPECIFIED;
    c.times = &times;
    c.counters = &counters;
    times.reported = f->cmd->time;

    event_init(f, &ev, &c, CITYOPS__V1__CASE_EVENT_TYPE__CASE_EVENT_REPORT,
               &args);
    c.state = CITYOPS__V1__CASE_STATE__CASE_STATE_REPORTED;
    rv = clocks_event(f->s, f->txn, f->cmd, &c, &ev);
    if (rv == 0) {
        rv = clocks_ix_update(f->s, f->txn, NULL, &c);
    }
    if (rv == 0) {
        rv = case_commit(f, NULL, &c, &ev);
    }
    if (rv == 0) {
        /* An owned copy of @c (built from borrowed fields): its bytes are
         * the ones just stored. */
        rv = store_case_load(f->s, f->txn, id, &f->res->case_);
    }
    for (size_t i = 0; i < c.n_clocks; i++) {
        free(c.clocks[i]);
    }
    free(c.clocks);
    return rv;
}

/* Op-specific validation and effects. */

static int request_verify_validate(struct fsm *f, const struct fsm_op *op)
{
    (void)op;
    return check_len(f, "inspector_id", f->cmd->request_verify->inspector_id,
                     STORE_MAX_ID);
}

static int verify_result_apply(struct fsm *f,
                               const struct fsm_op *op,
                               Cityops__V1__Case *c,
                               Cityops__V1__CaseEvent *ev)
{
    (void)op;
    (void)c;
    ev->passed = f->cmd->verify_result->found;
    return 0;
}

static int accept_apply(struct fsm *f,
                        const struct fsm_op *op,
                        Cityops__V1__Case *c,
                        Cityops__V1__CaseEvent *ev)
{
    (void)op;
    (void)ev;
    c->times->accepted = f->cmd->time;
    return 0;
}

static int register_validate(struct fsm *f, const struct fsm_op *op)
{
    const Cityops__V1__RegisterRequest *r = f->cmd->register_;
    int rv;

    (void)op;
    rv = check_category_type(f, r->category_type);
    if (rv == 0 && str0(r->major_code)[0] != '\0') {
        rv = check_code2(f, "major_code", r->major_code);
    }
    if (rv == 0 && str0(r->minor_code)[0] != '\0') {
        rv = check_code2(f, "minor_code", r->minor_code);
    }
    if (rv == 0) {
        rv = check_len(f, "condition", r->condition, STORE_MAX_TEXT);
    }
    return rv;
}

static int register_apply(struct fsm *f,
                          const struct fsm_op *op,
                          Cityops__V1__Case *c,
                          Cityops__V1__CaseEvent *ev)
{
    const Cityops__V1__RegisterRequest *r = f->cmd->register_;
    int rv = 0;

    (void)op;
    (void)ev;
    if (r->category_type !=
        CITYOPS__V1__CATEGORY_TYPE__CATEGORY_TYPE_UNSPECIFIED) {
        c->category_type = r->category_type;
    }
    if (str0(r->major_code)[0] != '\0') {
        rv = store_str_set(&c->major_code, r->major_code);
    }
    if (rv == 0 && str0(r->minor_code)[0] != '\0') {
        rv = store_str_set(&c->minor_code, r->minor_code);
    }
    if (rv == 0) {
        rv = store_str_set(&c->condition, r->condition);
    }
    c->times->registered = f->cmd->time;
    return rv;
}

static int reject_apply(struct fsm *f,
                        const struct fsm_op *op,
                        Cityops__V1__Case *c,
                        Cityops__V1__CaseEvent *ev)
{
    Cityops__V1__Role need =
        c->state == CITYOPS__V1__CASE_STATE__CASE_STATE_REPORTED
            ? CITYOPS__V1__ROLE__ROLE_INTAKE_CLERK
            : CITYOPS__V1__ROLE__ROLE_SHIFT_LEADER;

    (void)ev;
    if (f->cmd->role != need) {
        return refuse(f, RC_DENIED, "role %s may not %s in state %s (%s may)",
                      role_name(f->cmd->role), op->name, state_name(c->state),
                      role_name(need));
    }
    return 0;
}

static int merge_validate(struct fsm *f, const struct fsm_op *op)
{
    const Cityops__V1__MergeRequest *r = f->cmd->merge;

    (void)op;
    if (r->into_case_id == 0) {
        return refuse(f, RC_INVALID, "into_case_id required");
    }
    if (r->into_case_id == r->case_id) {
        return refuse(f, RC_INVALID, "cannot merge case %llu into itself",
                      (unsigned long long)r->case_id);
    }
    return 0;
}

/* Record the merge on the surviving case. */
static int
merge_target_update(struct fsm *f, Cityops__V1__Case *t, uint64_t from_id)
{
    struct fsm_args args = {t->case_id, f->cmd->merge->reason, 0, NULL};
    struct store_case_ix old;
    Cityops__V1__CaseEvent ev;
    uint64_t *ids;

    store_case_ix_capture(t, &old);
    ids = realloc(t->merged_from, (t->n_merged_from + 1) * sizeof(*ids));
    if (ids == NULL) {
        return STORE_NOMEM;
    }
    ids[t->n_merged_from++] = from_id;
    t->merged_from = ids;
    event_init(f, &ev, t, CITYOPS__V1__CASE_EVENT_TYPE__CASE_EVENT_MERGED_FROM,
               &args);
    ev.related_case_id = from_id;
    return case_commit(f, &old, t, &ev);
}

static int merge_apply(struct fsm *f,
                       const struct fsm_op *op,
                       Cityops__V1__Case *c,
                       Cityops__V1__CaseEvent *ev)
{
    uint64_t into = f->cmd->merge->into_case_id;
    Cityops__V1__Case *t = NULL;
    int rv;

    if (c->state != CITYOPS__V1__CASE_STATE__CASE_STATE_REPORTED &&
        f->cmd->role != CITYOPS__V1__ROLE__ROLE_SHIFT_LEADER) {
        return refuse(f, RC_DENIED, "role %s may not %s in state %s",
                      role_name(f->cmd->role), op->name, state_name(c->state));
    }
    rv = store_case_load(f->s, f->txn, into, &t);
    if (rv == STORE_NOTFOUND) {
        return refuse(f, RC_NOT_FOUND, "merge target case %llu not found",
                      (unsigned long long)into);
    }
    if (rv != 0) {
        return rv;
    }
    rv = case_prepare(t);
    if (rv != 0) {
        goto out_free_target;
    }
    if (!case_is_open(t)) {
        rv = refuse(f, RC_PRECONDITION, "merge target case %llu is %s",
                    (unsigned long long)into, state_name(t->state));
        goto out_free_target;
    }
    rv = merge_target_update(f, t, c->case_id);
    if (rv != 0) {
        goto out_free_target;
    }
    c->merged_into = into;
    ev->related_case_id = into;
out_free_target:
    cityops__v1__case__free_unpacked(t, NULL);
    return rv;
}

static int dispatch_validate(struct fsm *f, const struct fsm_op *op)
{
    const Cityops__V1__DispatchRequest *r =
        op->type == CITYOPS__V1__CASE_EVENT_TYPE__CASE_EVENT_DISPATCH
            ? f->cmd->dispatch
            : f->cmd->redispatch;
    int rv;

    if (str0(r->department_id)[0] == '\0') {
        return refuse(f, RC_INVALID, "department_id required");
    }
    rv = check_len(f, "department_id", r->department_id, STORE_MAX_ID);
    if (rv != 0) {
        return rv;
    }
    if ((int)r->level < 0 ||
        r->level > CITYOPS__V1__DISPATCH_LEVEL__DISPATCH_LEVEL_DISTRICT) {
        return refuse(f, RC_INVALID, "unknown dispatch level %d",
                      (int)r->level);
    }
    if (r->disposal_deadline < 0) {
        return refuse(f, RC_INVALID, "negative disposal_deadline");
    }
    return 0;
}

static int dispatch_to(struct fsm *f,
                       Cityops__V1__Case *c,
                       const Cityops__V1__DispatchRequest *r)
{
    c->dispatch_level = r->level;
    if (r->disposal_deadline != 0) {
        c->disposal_deadline = r->disposal_deadline;
    }
    c->times->dispatched = f->cmd->time;
    return store_str_set(&c->department_id, r->department_id);
}

static int dispatch_apply(struct fsm *f,
                          const struct fsm_op *op,
                          Cityops__V1__Case *c,
                          Cityops__V1__CaseEvent *ev)
{
    (void)op;
    (void)ev;
    return dispatch_to(f, c, f->cmd->dispatch);
}

/* 改派: to another department counts; back to the department that returned
 * the case means the return is refused, and does not count. */
static int redispatch_apply(struct fsm *f,
                            const struct fsm_op *op,
                            Cityops__V1__Case *c,
                            Cityops__V1__CaseEvent *ev)
{
    const Cityops__V1__DispatchRequest *r = f->cmd->redispatch;
    const char *current =
        c->state == CITYOPS__V1__CASE_STATE__CASE_STATE_RETURNED
            ? str0(c->previous_department_id)
            : str0(c->department_id);

    (void)op;
    (void)ev;
    if (strcmp(current, r->department_id) != 0) {
        c->counters->redispatch++;
    }
    return dispatch_to(f, c, r);
}

static int acknowledge_apply(struct fsm *f,
                             const struct fsm_op *op,
                             Cityops__V1__Case *c,
                             Cityops__V1__CaseEvent *ev)
{
    (void)op;
    (void)ev;
    c->times->acknowledged = f->cmd->time;
    return 0;
}

/* 回退: the case goes back to the dispatcher, which no department holds. */
static int return_apply(struct fsm *f,
                        const struct fsm_op *op,
                        Cityops__V1__Case *c,
                        Cityops__V1__CaseEvent *ev)
{
    int rv;

    (void)f;
    (void)op;
    c->counters->returns++;
    rv = store_str_set(&c->previous_department_id, c->department_id);
    if (rv != 0) {
        return rv;
    }
    rv = store_str_set(&c->department_id, "");
    ev->department_id = c->previous_department_id;
    return rv;
}

static int report_disposal_validate(struct fsm *f, const struct fsm_op *op)
{
    (void)op;
    if (f->cmd->report_disposal->n_attachments == 0) {
        return refuse(f, RC_INVALID,
                      "REPORT_DISPOSAL needs evidence: at "
                      "least one attachment");
    }
    return 0;
}

static int report_disposal_apply(struct fsm *f,
                                 const struct fsm_op *op,
                                 Cityops__V1__Case *c,
                                 Cityops__V1__CaseEvent *ev)
{
    (void)op;
    (void)ev;
    c->times->disposed = f->cmd->time;
    return store_str_set(&c->disposer_id, f->cmd->actor_id);
}

static int request_extension_validate(struct fsm *f, const struct fsm_op *op)
{
    (void)op;
    if (f->cmd->request_extension->until <= f->cmd->time) {
        return refuse(f, RC_INVALID,
                      "extension until must be after the "
                      "request time");
    }
    return 0;
}

static int request_extension_apply(struct fsm *f,
                                   const struct fsm_op *op,
                                   Cityops__V1__Case *c,
                                   Cityops__V1__CaseEvent *ev)
{
    (void)op;
    if (c->extension_pending) {
        return refuse(f, RC_PRECONDITION,
                      "case %llu already has a pending "
                      "extension request",
                      (unsigned long long)c->case_id);
    }
    c->extension_pending = 1;
    c->extension_requested_until = f->cmd->request_extension->until;
    ev->until = c->extension_requested_until;
    return 0;
}

static int decide_extension_validate(struct fsm *f, const struct fsm_op *op)
{
    (void)op;
    if (f->cmd->decide_extension->until < 0) {
        return refuse(f, RC_INVALID, "negative until");
    }
    return 0;
}

static int decide_extension_apply(struct fsm *f,
                                  const struct fsm_op *op,
                                  Cityops__V1__Case *c,
                                  Cityops__V1__CaseEvent *ev)
{
    const Cityops__V1__DecideExtensionRequest *r = f->cmd->decide_extension;

    (void)op;
    if (!c->extension_pending) {
        return refuse(f, RC_PRECONDITION,
                      "case %llu has no pending "
                      "extension request",
                      (unsigned long long)c->case_id);
    }
    c->extension_pending = 0;
    ev->passed = r->approve;
    ev->until = c->extension_requested_until;
    if (r->approve) {
        ev->type = CITYOPS__V1__CASE_EVENT_TYPE__CASE_EVENT_EXTENSION_APPROVE;
        c->disposal_deadline =
            r->until != 0 ? r->until : c->extension_requested_until;
        c->counters->extensions++;
        ev->until = c->disposal_deadline;
    } else {
        ev->type = CITYOPS__V1__CASE_EVENT_TYPE__CASE_EVENT_EXTENSION_DENY;
    }
    return 0;
}

static int request_check_validate(struct fsm *f, const struct fsm_op *op)
{
    const char *insp = str0(f->cmd->request_check->inspector_id);

    (void)op;
    if (insp[0] == '\0') {
        return refuse(f, RC_INVALID, "inspector_id required");
    }
    return check_len(f, "inspector_id", insp, STORE_MAX_ID);
}

static int request_check_apply(struct fsm *f,
                               const struct fsm_op *op,
                               Cityops__V1__Case *c,
                               Cityops__V1__CaseEvent *ev)
{
    const char *insp = f->cmd->request_check->inspector_id;

    (void)op;
    (void)ev;
    if (strcmp(insp, str0(c->disposer_id)) == 0) {
        return refuse(f, RC_DENIED,
                      "inspector %s disposed case %llu and may "
                      "not check it",
                      insp, (unsigned long long)c->case_id);
    }
    c->check_passed = 0;
    return store_str_set(&c->checker_id, insp);
}

static int check_apply(struct fsm *f,
                       const struct fsm_op *op,
                       Cityops__V1__Case *c,
                       Cityops__V1__CaseEvent *ev)
{
    (void)op;
    if (strcmp(str0(f->cmd->actor_id), str0(c->checker_id)) != 0) {
        return refuse(f, RC_DENIED,
                      "actor %s is not the checker (%s) of "
                      "case %llu",
                      str0(f->cmd->actor_id), str0(c->checker_id),
                      (unsigned long long)c->case_id);
    }
    c->check_passed = f->cmd->check->passed;
    c->times->checked = f->cmd->time;
    ev->passed = c->check_passed;
    return 0;
}

static int rework_apply(struct fsm *f,
                        const struct fsm_op *op,
                        Cityops__V1__Case *c,
                        Cityops__V1__CaseEvent *ev)
{
    (void)op;
    (void)ev;
    if (c->check_passed) {
        return refuse(f, RC_PRECONDITION,
                      "REWORK of case %llu: the check "
                      "passed",
                      (unsigned long long)c->case_id);
    }
    c->counters->rework++;
    return 0;
}

static Cityops__V1__ClosureType close_type(const Cityops__V1__Command *cmd)
{
    if (cmd->close->closure_type ==
        CITYOPS__V1__CLOSURE_TYPE__CLOSURE_TYPE_UNSPECIFIED) {
        return CITYOPS__V1__CLOSURE_TYPE__CLOSURE_TYPE_NORMAL;
    }
    return cmd->close->closure_type;
}

static int close_validate(struct fsm *f, const struct fsm_op *op)
{
    Cityops__V1__ClosureType t = f->cmd->close->closure_type;

    (void)op;
    if ((int)t < 0 || t > CITYOPS__V1__CLOSURE_TYPE__CLOSURE_TYPE_SPECIAL) {
        return refuse(f, RC_INVALID, "unknown closure_type %d", (int)t);
    }
    if (t == CITYOPS__V1__CLOSURE_TYPE__CLOSURE_TYPE_SPECIAL &&
        str0(f->cmd->close->reason)[0] == '\0') {
        return refuse(f, RC_INVALID, "CLOSE SPECIAL: reason required");
    }
    return 0;
}

static int close_apply(struct fsm *f,
                       const struct fsm_op *op,
                       Cityops__V1__Case *c,
                       Cityops__V1__CaseEvent *ev)
{
    Cityops__V1__ClosureType t = close_type(f->cmd);
    int special = t == CITYOPS__V1__CLOSURE_TYPE__CLOSURE_TYPE_SPECIAL;

    if (c->state == CITYOPS__V1__CASE_STATE__CASE_STATE_SHELVED) {
        if (f->cmd->role != CITYOPS__V1__ROLE__ROLE_SHIFT_LEADER) {
            return refuse(f, RC_DENIED, "role %s may not %s in state %s",
                          role_name(f->cmd->role), op->name,
                          state_name(c->state));
        }
        if (!special) {
            return refuse(f, RC_PRECONDITION,
                          "CLOSE in state %s needs "
                          "closure type SPECIAL",
                          state_name(c->state));
        }
    } else if (!c->check_passed && !special) {
        return refuse(f, RC_PRECONDITION,
                      "CLOSE of case %llu: the check "
                      "failed (SPECIAL closes anyway)",
                      (unsigned long long)c->case_id);
    }
    c->closure_type = t;
    c->times->closed = f->cmd->time;
    ev->closure_type = t;
    return 0;
}

static int shelve_apply(struct fsm *f,
                        const struct fsm_op *op,
                        Cityops__V1__Case *c,
                        Cityops__V1__CaseEvent *ev)
{
    (void)f;
    (void)op;
    (void)ev;
    c->shelved_from = c->state;
    return 0;
}

static int supervise_apply(struct fsm *f,
                           const struct fsm_op *op,
                           Cityops__V1__Case *c,
                           Cityops__V1__CaseEvent *ev)
{
    (void)f;
    (void)op;
    (void)ev;
    c->supervision_level++;
    return 0;
}

#define REOPEN_WINDOW_DAYS 7 /* until the configuration says otherwise */

/* "Closed is not fixed": the reporter sends it back for a new check. */
static int reopen_apply(struct fsm *f,
                        const struct fsm_op *op,
                        Cityops__V1__Case *c,
                        Cityops__V1__CaseEvent *ev)
{
    Cityops__V1__PublicSettings *ps = NULL;
    int64_t window = REOPEN_WINDOW_DAYS;
    int rv;

    (void)op;
    rv = config_public(f->s, f->txn, &ps);
    if (rv != 0 && rv != STORE_NOTFOUND) {
        return rv;
    }
    if (ps != NULL) {
        window = ps->reopen_window_days;
        cityops__v1__public_settings__free_unpacked(ps, NULL);
    }
    if (c->closure_type != CITYOPS__V1__CLOSURE_TYPE__CLOSURE_TYPE_NORMAL &&
        c->closure_type != CITYOPS__V1__CLOSURE_TYPE__CLOSURE_TYPE_OVERDUE) {
        return refuse(f, RC_PRECONDITION,
                      "REOPEN of case %llu: it was not closed as fixed",
                      (unsigned long long)c->case_id);
    }
    if (f->cmd->time > c->times->closed + window * 86400 * 1000000LL) {
        return refuse(f, RC_PRECONDITION,
                      "REOPEN of case %llu: closed more than %lld days ago",
                      (unsigned long long)c->case_id, (long long)window);
    }
    c->reopen_count++;
    c->check_passed = 0;
    c->closure_type = CITYOPS__V1__CLOSURE_TYPE__CLOSURE_TYPE_UNSPECIFIED;
    c->times->closed = 0;
    ev->public_ = 1;
    return 0;
}

#define EVT(x) CITYOPS__V1__CASE_EVENT_TYPE__CASE_EVENT_##x
#define TO(x) CITYOPS__V1__CASE_STATE__CASE_STATE_##x
#define OVERLAY CITYOPS__V1__CASE_STATE__CASE_STATE_UNSPECIFIED

/* The DOMAIN table. Roles here are the union over states; apply() narrows
 * them where the table gives one role per state. */
static const struct fsm_op op_request_verify = {
    EVT(REQUEST_VERIFY),     "REQUEST_VERIFY",
    ROLE(INTAKE_CLERK),      ST(REPORTED),
    TO(VERIFYING),           0,
    request_verify_validate, NULL};
static const struct fsm_op op_verify_result = {EVT(VERIFY_RESULT),
                                               "VERIFY_RESULT",
                                               ROLE(INSPECTOR),
                                               ST(VERIFYING),
                                               TO(REPORTED),
                                               0,
                                               NULL,
                                               verify_result_apply};
static const struct fsm_op op_accept = {
    EVT(ACCEPT), "ACCEPT", ROLE(INTAKE_CLERK), ST(REPORTED), TO(ACCEPTED),
    0,           NULL,     accept_apply};
static const struct fsm_op op_register = {
    EVT(REGISTER),  "REGISTER", ROLE(SHIFT_LEADER), ST(ACCEPTED),
    TO(REGISTERED), 0,          register_validate,  register_apply};
static const struct fsm_op op_reject = {EVT(REJECT),
                                        "REJECT",
                                        ROLE(INTAKE_CLERK) | ROLE(SHIFT_LEADER),
                                        ST(REPORTED) | ST(ACCEPTED),
                                        TO(REJECTED),
                                        1,
                                        NULL,
                                        reject_apply};
static const struct fsm_op op_merge = {EVT(MERGE),
                                       "MERGE",
                                       ROLE(INTAKE_CLERK) | ROLE(SHIFT_LEADER),
                                       ST(REPORTED) | ST(ACCEPTED) |
                                           ST(REGISTERED),
                                       TO(MERGED),
                                       0,
                                       merge_validate,
                                       merge_apply};
static const struct fsm_op op_void = {EVT(VOID),
                                      "VOID",
                                      ROLE(SHIFT_LEADER),
                                      ST(REPORTED) | ST(ACCEPTED) |
                                          ST(REGISTERED),
                                      TO(VOIDED),
                                      1,
                                      NULL,
                                      NULL};
static const struct fsm_op op_dispatch = {
    EVT(DISPATCH),  "DISPATCH", ROLE(DISPATCHER),  ST(REGISTERED),
    TO(DISPATCHED), 0,          dispatch_validate, dispatch_apply};
static const struct fsm_op op_acknowledge = {EVT(ACKNOWLEDGE),
                                             "ACKNOWLEDGE",
                                             ROLE(DEPARTMENT),
                                             ST(DISPATCHED),
                                             TO(IN_DISPOSAL),
                                             0,
                                             NULL,
                                             acknowledge_apply};
static const struct fsm_op op_return = {EVT(RETURN),
                                        "RETURN",
                                        ROLE(DEPARTMENT),
                                        ST(DISPATCHED) | ST(IN_DISPOSAL),
                                        TO(RETURNED),
                                        1,
                                        NULL,
                                        return_apply};
static const struct fsm_op op_redispatch = {
    EVT(REDISPATCH),   "REDISPATCH",
    ROLE(DISPATCHER),  ST(RETURNED) | ST(DISPATCHED) | ST(IN_DISPOSAL),
    TO(DISPATCHED),    0,
    dispatch_validate, redispatch_apply};
static const struct fsm_op op_report_disposal = {
    EVT(REPORT_DISPOSAL),     "REPORT_DISPOSAL",    ROLE(DEPARTMENT),
    ST(IN_DISPOSAL),          TO(DISPOSED),         0,
    report_disposal_validate, report_disposal_apply};
static const struct fsm_op op_request_extension = {EVT(EXTENSION_REQUEST),
                                                   "EXTENSION_REQUEST",
                                                   ROLE(DEPARTMENT),
                                                   ST(DISPATCHED) |
                                                       ST(IN_DISPOSAL),
                                                   OVERLAY,
                                                   1,
                                                   request_extension_validate,
                                                   request_extension_apply};
static const struct fsm_op op_decide_extension = {EVT(EXTENSION_APPROVE),
                                                  "EXTENSION_DECIDE",
                                                  ROLE(SHIFT_LEADER),
                                                  ST_OPEN,
                                                  OVERLAY,
                                                  0,
                                                  decide_extension_validate,
                                                  decide_extension_apply};
static const struct fsm_op op_request_check = {EVT(REQUEST_CHECK),
                                               "REQUEST_CHECK",
                                               ROLE(DISPATCHER) |
                                                   ROLE(SHIFT_LEADER),
                                               ST(DISPOSED),
                                               TO(CHECKING),
                                               0,
                                               request_check_validate,
                                               request_check_apply};
static const struct fsm_op op_check = {EVT(CHECK_RESULT),
                                       "CHECK_RESULT",
                                       ROLE(INSPECTOR),
                                       ST(CHECKING),
                                       TO(CHECKED),
                                       0,
                                       NULL,
                                       check_apply};
static const struct fsm_op op_rework = {
    EVT(REWORK), "REWORK", ROLE(SHIFT_LEADER), ST(CHECKED), TO(IN_DISPOSAL),
    0,           NULL,     rework_apply};
static const struct fsm_op op_close = {EVT(CLOSE),
                                       "CLOSE",
                                       ROLE(SHIFT_LEADER) | ROLE(SYSTEM),
                                       ST(CHECKED) | ST(SHELVED),
                                       TO(CLOSED),
                                       0,
                                       close_validate,
                                       close_apply};
static const struct fsm_op op_shelve = {EVT(SHELVE),
                                        "SHELVE",
                                        ROLE(SHIFT_LEADER),
                                        ST(REGISTERED) | ST(DISPATCHED) |
                                            ST(IN_DISPOSAL),
                                        TO(SHELVED),
                                        1,
                                        NULL,
                                        shelve_apply};
static const struct fsm_op op_unshelve = {EVT(UNSHELVE),
                                          "UNSHELVE",
                                          ROLE(SHIFT_LEADER),
                                          ST(SHELVED),
                                          TO(REGISTERED),
                                          0,
                                          NULL,
                                          NULL};

static const struct fsm_op op_supervise = {EVT(SUPERVISE),
                                           "SUPERVISE",
                                           ROLE(SHIFT_LEADER) | ROLE(SYSTEM),
                                           ST_OPEN,
                                           OVERLAY,
                                           0,
                                           NULL,
                                           supervise_apply};
static const struct fsm_op op_reopen = {EVT(REOPEN),
                                        "REOPEN",
                                        ROLE(PUBLIC) | ROLE(SHIFT_LEADER),
                                        ST(CLOSED),
                                        TO(DISPOSED),
                                        0,
                                        NULL,
                                        reopen_apply};
/* 跨界移交 / 下级上报: the case leaves for a peer or the parent tier
 * (federation, fed.c); SYSTEM when the other tier's acceptance arrives. */
static const struct fsm_op op_transfer_out = {EVT(TRANSFER_OUT),
                                              "TRANSFER_OUT",
                                              ROLE(SHIFT_LEADER) | ROLE(SYSTEM),
                                              ST_OPEN,
                                              TO(TRANSFERRED_OUT),
                                              0,
                                              NULL,
                                              NULL};

/* A note in the case's history (federation, fed.c). */
static const struct fsm_op op_comment = {EVT(COMMENT),
                                         "COMMENT",
                                         ROLE(SHIFT_LEADER) | ROLE(SYSTEM),
                                         ST_OPEN,
                                         OVERLAY,
                                         1,
                                         NULL,
                                         NULL};

/* Pick the op and its shared fields out of the command's oneof. */
static const struct fsm_op *op_decode(const Cityops__V1__Command *cmd,
                                      struct fsm_args *a)
{
    memset(a, 0, sizeof(*a));
#define ACTION(field, op)                                                      \
    a->case_id = cmd->field->case_id;                                          \
    a->reason = cmd->field->reason;                                            \
    return &op
    switch (cmd->op_case) {
    case CITYOPS__V1__COMMAND__OP_REQUEST_VERIFY:
        a->case_id = cmd->request_verify->case_id;
        return &op_request_verify;
    case CITYOPS__V1__COMMAND__OP_VERIFY_RESULT:
        a->n_attachments = cmd->verify_result->n_attachments;
        a->attachments = cmd->verify_result->attachments;
        ACTION(verify_result, op_verify_result);
    case CITYOPS__V1__COMMAND__OP_ACCEPT:
        ACTION(accept, op_accept);
    case CITYOPS__V1__COMMAND__OP_REGISTER:
        a->case_id = cmd->register_->case_id;
        return &op_register;
    case CITYOPS__V1__COMMAND__OP_REJECT:
        ACTION(reject, op_reject);
    case CITYOPS__V1__COMMAND__OP_MERGE:
        ACTION(merge, op_merge);
    case CITYOPS__V1__COMMAND__OP_VOID:
        ACTION(void_, op_void);
    case CITYOPS__V1__COMMAND__OP_DISPATCH:
        ACTION(dispatch, op_dispatch);
    case CITYOPS__V1__COMMAND__OP_START_DISPOSAL:
        ACTION(start_disposal, op_acknowledge);
    case CITYOPS__V1__COMMAND__OP_RETURN:
        ACTION(return_, op_return);
    case CITYOPS__V1__COMMAND__OP_REDISPATCH:
        ACTION(redispatch, op_redispatch);
    case CITYOPS__V1__COMMAND__OP_REPORT_DISPOSAL:
        a->case_id = cmd->report_disposal->case_id;
        a->reason = cmd->report_disposal->note;
        a->n_attachments = cmd->report_disposal->n_attachments;
        a->attachments = cmd->report_disposal->attachments;
        return &op_report_disposal;
    case CITYOPS__V1__COMMAND__OP_REQUEST_EXTENSION:
        ACTION(request_extension, op_request_extension);
    case CITYOPS__V1__COMMAND__OP_DECIDE_EXTENSION:
        ACTION(decide_extension, op_decide_extension);
    case CITYOPS__V1__COMMAND__OP_REQUEST_CHECK:
        a->case_id = cmd->request_check->case_id;
        return &op_request_check;
    case CITYOPS__V1__COMMAND__OP_CHECK:
        a->case_id = cmd->check->case_id;
        a->reason = cmd->check->note;
        a->n_attachments = cmd->check->n_attachments;
        a->attachments = cmd->check->attachments;
        return &op_check;
    case CITYOPS__V1__COMMAND__OP_REWORK:
        ACTION(rework, op_rework);
    case CITYOPS__V1__COMMAND__OP_CLOSE:
        ACTION(close, op_close);
    case CITYOPS__V1__COMMAND__OP_SHELVE:
        ACTION(shelve, op_shelve);
    case CITYOPS__V1__COMMAND__OP_UNSHELVE:
        ACTION(unshelve, op_unshelve);
    case CITYOPS__V1__COMMAND__OP_SUPERVISE:
        ACTION(supervise, op_supervise);
    default:
        return NULL;
    }
#undef ACTION
}

static int
op_validate(struct fsm *f, const struct fsm_op *op, const struct fsm_args *a)
{
    int rv;

    rv = check_len(f, "reason", a->reason, STORE_MAX_TEXT);
    if (rv == 0) {
        rv = check_attachments(f, a->n_attachments, a->attachments);
    }
    if (rv == 0 && op->validate != NULL) {
        rv = op->validate(f, op);
    }
    if (rv != 0) {
        return rv;
    }
    if (op->reason_required && str0(a->reason)[0] == '\0') {
        return refuse(f, RC_INVALID, "%s: reason required", op->name);
    }
    if (a->case_id == 0) {
        return refuse(f, RC_INVALID, "case_id required");
    }
    return 0;
}

/* The generic path of every command on an existing case. */
static int
fsm_case_event(struct fsm *f, const struct fsm_op *op, const struct fsm_args *a)
{
    Cityops__V1__Case *c = NULL;
    Cityops__V1__CaseEvent ev;
    struct store_case_ix old;
    char why[300];
    int rv;

    rv = op_validate(f, op, a);
    if (rv != 0) {
        return rv;
    }
    rv = store_case_load(f->s, f->txn, a->case_id, &c);
    if (rv == STORE_NOTFOUND) {
        return refuse(f, RC_NOT_FOUND, "case %llu not found",
                      (unsigned long long)a->case_id);
    }
    if (rv != 0) {
        return rv;
    }
    rv = case_prepare(c);
    if (rv != 0) {
        goto out_free_case;
    }
    if ((role_bit(f->cmd->role) & op->roles) == 0) {
        rv = refuse(f, RC_DENIED, "role %s may not %s", role_name(f->cmd->role),
                    op->name);
        goto out_free_case;
    }
    if ((state_bit(c->state) & op->from) == 0) {
        rv = refuse(f, RC_PRECONDITION, "%s not allowed in state %s", op->name,
                    state_name(c->state));
        goto out_free_case;
    }
    rv = case_authorize(f->s, f->txn, f->cmd, c, op->type, why, sizeof why);
    if (rv == 1) {
        rv = refuse(f, RC_DENIED, "%s: %s", op->name, why);
    }
    if (rv != 0) {
        goto out_free_case;
    }
    store_case_ix_capture(c, &old);
    event_init(f, &ev, c, op->type, a);
    if (op->apply != NULL) {
        rv = op->apply(f, op, c, &ev);
        if (rv != 0) {
            goto out_free_case;
        }
    }
    if (op->to != OVERLAY) {
        c->state = op->to;
    }
    /* the deadline index: out with the old clocks, in with the new */
    rv = clocks_ix_update(f->s, f->txn, c, NULL);
    if (rv == 0) {
        rv = clocks_event(f->s, f->txn, f->cmd, c, &ev);
    }
    if (rv == 0) {
        rv = clocks_ix_update(f->s, f->txn, NULL, c);
    }
    if (rv == 0) {
        rv = case_commit(f, &old, c, &ev);
    }
    if (rv != 0) {
        goto out_free_case;
    }
    f->res->case_ = c;
    return 0;

out_free_case:
    cityops__v1__case__free_unpacked(c, NULL);
    return rv;
}

static int cmd_validate(struct fsm *f)
{
    const char *actor = str0(f->cmd->actor_id);

    if (actor[0] == '\0') {
        return refuse(f, RC_INVALID, "actor_id required");
    }
    return check_len(f, "actor_id", actor, STORE_MAX_ID);
}

/* TICK: mark the open stages whose deadline is at or before the leader's
 * time as overdue, each with an OVERDUE event, and supervise the case
 * (level 1) the first time. At most TICK_MAX stages per tick: the rest
 * wait for the next one (the stored tick time stops short of them). */
#define TICK_MAX 1000

static int tick_one(struct fsm *f, uint64_t case_id, Cityops__V1__Stage st)
{
    Cityops__V1__Case *c = NULL;
    Cityops__V1__CaseEvent ev;
    struct store_case_ix old;
    struct fsm_args none = {case_id, "", 0, NULL};
    int rv;

    rv = store_case_load(f->s, f->txn, case_id, &c);
    if (rv != 0) {
        return rv == STORE_NOTFOUND ? 0 : rv;
    }
    rv = case_prepare(c);
    if (rv == 0 && clocks_mark_overdue(c, st, f->cmd->time)) {
        store_case_ix_capture(c, &old);
        event_init(f, &ev, c, EVT(OVERDUE), &none);
        ev.stage = st;
        ev.public_ = 1;
        rv = case_commit(f, &old, c, &ev);
        if (rv == 0 && c->supervision_level == 0) {
            store_case_ix_capture(c, &old);
            c->supervision_level = 1;
            event_init(f, &ev, c, EVT(SUPERVISE), &none);
            ev.stage = st;
            ev.reason = "overdue";
            rv = case_commit(f, &old, c, &ev);
        }
    }
    cityops__v1__case__free_unpacked(c, NULL);
    return rv;
}

static int fsm_tick(struct fsm *f)
{
    uint64_t prev = 0;
    int64_t after;
    uint64_t after_case = UINT64_MAX;
    int64_t deadline = 0;
    uint64_t case_id = 0;
    Cityops__V1__Stage st = CITYOPS__V1__STAGE__STAGE_UNSPECIFIED;
    /* late = deadline before the tick's time */
    int64_t through = f->cmd->time - 1;
    int n = 0;
    int rv;

    if (f->cmd->role != CITYOPS__V1__ROLE__ROLE_SYSTEM) {
        return refuse(f, RC_DENIED, "TICK needs role SYSTEM");
    }
    rv = store_meta_get(f->s, f->txn, STORE_META_TICK, &prev);
    if (rv != 0) {
        return rv;
    }
    after = (int64_t)prev;
    while ((rv = clocks_ix_next(f->s, f->txn, after, after_case, through,
                                &deadline, &case_id, &st)) == 0) {
        if (n == TICK_MAX) {
            through = deadline - 1;
            break;
        }
        rv = tick_one(f, case_id, st);
        if (rv != 0) {
            return rv;
        }
        after = deadline;
        after_case = case_id;
        n++;
    }
    if (rv != 0 && rv != STORE_NOTFOUND) {
        return rv;
    }
    if (through > (int64_t)prev) {
        rv = store_meta_put(f->s, f->txn, STORE_META_TICK, (uint64_t)through);
    } else {
        rv = 0;
    }
    if (rv == 0) {
        rv = fed_on_tick(f->s, f->txn, f->index, f->cmd);
    }
    return rv;
}

/* @op on case @case_id for a command that is not that op's own (public
 * reopen, federation hand-over): the generic path with its checks. */
static int op_run(struct store *s,
                  MDB_txn *txn,
                  uint64_t index,
                  const Cityops__V1__Command *cmd,
                  const struct fsm_op *op,
                  uint64_t case_id,
                  const char *reason,
                  Cityops__V1__CommandResult *res)
{
    struct fsm f = {s, txn, index, cmd, res, 0};
    struct fsm_args a = {case_id, reason, 0, NULL};
    int rv;

    res->code = CITYOPS__V1__RESULT_CODE__RESULT_OK;
    rv = cmd_validate(&f);
    if (rv == 0) {
        rv = fsm_case_event(&f, op, &a);
    }
    return rv == FSM_REFUSED ? 0 : rv;
}

int case_fsm_reopen(struct store *s,
                    MDB_txn *txn,
                    uint64_t index,
                    const Cityops__V1__Command *cmd,
                    uint64_t case_id,
                    const char *reason,
                    Cityops__V1__CommandResult *res)
{
    return op_run(s, txn, index, cmd, &op_reopen, case_id, reason, res);
}

int case_fsm_transfer_out(struct store *s,
                          MDB_txn *txn,
                          uint64_t index,
                          const Cityops__V1__Command *cmd,
                          uint64_t case_id,
                          const char *reason,
                          Cityops__V1__CommandResult *res)
{
    return op_run(s, txn, index, cmd, &op_transfer_out, case_id, reason, res);
}

int case_fsm_comment(struct store *s,
                     MDB_txn *txn,
                     uint64_t index,
                     const Cityops__V1__Command *cmd,
                     uint64_t case_id,
                     const char *text,
                     Cityops__V1__CommandResult *res)
{
    return op_run(s, txn, index, cmd, &op_comment, case_id, text, res);
}

int case_remote_ref_set(struct store *s,
                        MDB_txn *txn,
                        uint64_t index,
                        uint64_t case_id,
                        const char *ref)
{
    Cityops__V1__Case *c = NULL;
    struct store_case_ix old;
    int rv;

    rv = store_case_load(s, txn, case_id, &c);
    if (rv != 0) {
        return rv;
    }
    store_case_ix_capture(c, &old);
    rv = store_str_set(&c->remote_ref, ref);
    if (rv == 0) {
        c->last_index = index;
        rv = store_case_save(s, txn, &old, c);
    }
    cityops__v1__case__free_unpacked(c, NULL);
    return rv;
}

int case_fsm_apply(struct store *s,
                   MDB_txn *txn,
                   uint64_t index,
                   const Cityops__V1__Command *cmd,
                   Cityops__V1__CommandResult *res)
{
    struct fsm f = {s, txn, index, cmd, res, 0};
    const struct fsm_op *op;
    struct fsm_args args;
    int rv;

    res->code = CITYOPS__V1__RESULT_CODE__RESULT_OK;
    rv = cmd_validate(&f);
    if (rv == 0 && cmd->op_case == CITYOPS__V1__COMMAND__OP_REPORT &&
        cmd->report != NULL) {
        rv = fsm_report(&f, cmd->report);
    } else if (rv == 0 && cmd->op_case == CITYOPS__V1__COMMAND__OP_TICK) {
        rv = fsm_tick(&f);
    } else if (rv == 0) {
        /* Every oneof member is a message pointer: NULL means none. */
        op = cmd->report != NULL ? op_decode(cmd, &args) : NULL;
        if (op == NULL) {
            rv = refuse(&f, RC_INVALID, "command has no operation");
        } else {
            rv = fsm_case_event(&f, op, &args);
        }
    }
    return rv == FSM_REFUSED ? 0 : rv;
}

int case_fsm_unnested(const Cityops__V1__Command *cmd)
{
    return cmd->op_case == CITYOPS__V1__COMMAND__OP_REPORT &&
           cmd->report != NULL;
}

int case_fsm_report(struct store *s,
                    MDB_txn *txn,
                    uint64_t index,
                    const Cityops__V1__Command *cmd,
                    const Cityops__V1__ReportRequest *r,
                    Cityops__V1__CommandResult *res)
{
    struct fsm f = {s, txn, index, cmd, res, 0};
    int rv;

    res->code = CITYOPS__V1__RESULT_CODE__RESULT_OK;
    rv = cmd_validate(&f);
    if (rv == 0) {
        rv = fsm_report(&f, r);
    }
    return rv == FSM_REFUSED ? 0 : rv;
}
