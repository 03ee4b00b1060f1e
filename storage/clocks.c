/* Stage clocks (DOMAIN.md 4): which event opens and closes which stage,
 * the deadline of an opened stage from the configuration in force, and the
 * deadline index the tick and the command centre's queries read.
 *
 * A case holds one StageClock per stage it has entered (the latest one).
 * Opening: REPORT -> accept, REQUEST_VERIFY -> verify, ACCEPT -> register,
 * REGISTER and RETURN and UNSHELVE -> dispatch, DISPATCH, REDISPATCH and
 * REWORK -> dispose (for the new department), REQUEST_CHECK -> check.
 * Closing: the event that ends the stage (ACCEPT, VERIFY_RESULT, REGISTER,
 * DISPATCH/REDISPATCH, REPORT_DISPOSAL or RETURN, CHECK_RESULT), and any
 * terminal state closes every open clock. A closed clock is overdue when it
 * closed after its deadline; an open one when a tick passed its deadline.
 * SHELVE pauses the open clocks; UNSHELVE (back to REGISTERED) closes them
 * and opens the dispatch clock afresh. An approved extension moves the
 * disposal deadline.
 *
 * Limits come from the case's category and condition (the first condition
 * before registration fixes one); none configured means no deadline (0).
 * DISPATCH with an explicit disposal_deadline uses it. Every computation
 * reads only the command's time and the stored configuration.
 */
#include <stdlib.h>
#include <string.h>

#include "deadline.h"
#include "store_internal.h"

#define STAGE(x) CITYOPS__V1__STAGE__STAGE_##x
#define EVT(x) CITYOPS__V1__CASE_EVENT_TYPE__CASE_EVENT_##x

static Cityops__V1__StageClock *clock_find(Cityops__V1__Case *c,
                                           Cityops__V1__Stage st)
{
    for (size_t i = 0; i < c->n_clocks; i++) {
        if (c->clocks[i]->stage == st) {
            return c->clocks[i];
        }
    }
    return NULL;
}

static int clock_open_p(const Cityops__V1__StageClock *k)
{
    return k->started != 0 && k->done == 0;
}

/* The clock of @st, reset (a new one if the case has none). */
static Cityops__V1__StageClock *clock_reset(Cityops__V1__Case *c,
                                            Cityops__V1__Stage st)
{
    Cityops__V1__StageClock *k = clock_find(c, st);
    Cityops__V1__StageClock **more;

    if (k == NULL) {
        k = malloc(sizeof(*k));
        more = realloc(c->clocks, (c->n_clocks + 1) * sizeof(*more));
        if (k == NULL || more == NULL) {
            free(k);
            if (more != NULL) {
                c->clocks = more;
            }
            return NULL;
        }
        c->clocks = more;
        c->clocks[c->n_clocks++] = k;
    }
    cityops__v1__stage_clock__init(k);
    k->stage = st;
    return k;
}

/* The limit of @st for @c: unit and amount, or none (amount 0). */
static int limit_of(struct store *s,
                    MDB_txn *txn,
                    const Cityops__V1__Case *c,
                    Cityops__V1__Stage st,
                    Cityops__V1__TimeUnit *unit,
                    uint32_t *amount)
{
    const Cityops__V1__Category *cat = NULL;
    const Cityops__V1__Condition *cond = NULL;
    int rv;

    *unit = CITYOPS__V1__TIME_UNIT__TIME_UNIT_UNSPECIFIED;
    *amount = 0;
    rv = config_category_peek(s, txn, c->category_type, c->major_code,
                              c->minor_code, &cat);
    if (rv == STORE_NOTFOUND) {
        return 0;
    }
    if (rv != 0) {
        return rv;
    }
    for (size_t i = 0; i < cat->n_conditions; i++) {
        if (c->condition != NULL && c->condition[0] != '\0'
                ? strcmp(cat->conditions[i]->code, c->condition) == 0
                : i == 0) {
            cond = cat->conditions[i];
            break;
        }
    }
    for (size_t i = 0; cond != NULL && i < cond->n_limits; i++) {
        if (cond->limits[i]->stage == st) {
            *unit = cond->limits[i]->unit;
            *amount = cond->limits[i]->amount;
        }
    }
    return 0;
}

static int clock_open(struct store *s,
                      MDB_txn *txn,
                      int64_t now,
                      Cityops__V1__Case *c,
                      Cityops__V1__Stage st,
                      int64_t fixed_deadline)
{
    const struct deadline_rules *rules;
    Cityops__V1__StageClock *k;
    Cityops__V1__TimeUnit unit;
    uint32_t amount;
    int64_t deadline = 0;
    int rv;

    rv = limit_of(s, txn, c, st, &unit, &amount);
    if (rv != 0) {
        return rv;
    }
    if (fixed_deadline > 0) {
        deadline = fixed_deadline;
    } else if (amount > 0) {
        rv = config_rules(s, txn, &rules);
        if (rv != 0) {
            return rv;
        }
        if (deadline_compute(rules, now, unit, amount, &deadline) != 0) {
            deadline = 0; /* beyond the supported range: no deadline */
        }
    }
    k = clock_reset(c, st);
    if (k == NULL) {
        return STORE_NOMEM;
    }
    k->started = now;
    k->deadline = deadline;
    k->unit = unit;
    k->amount = amount;
    /* Ticks only look past the last tick: a deadline not in the future is
     * late from the start. */
    if (deadline > 0 && deadline <= now) {
        k->overdue = 1;
        c->overdue = 1;
    }
    c->config_version = config_version(s, txn);
    return 0;
}

static void clock_close(Cityops__V1__Case *c,
                        Cityops__V1__Stage st,
                        int64_t now)
{
    Cityops__V1__StageClock *k = clock_find(c, st);

    if (k == NULL || !clock_open_p(k)) {
        return;
    }
    k->done = now;
    if (k->deadline > 0 && now > k->deadline && k->paused_at == 0) {
        k->overdue = 1;
    }
    if (k->overdue) {
        c->overdue = 1;
    }
}

static void close_all(Cityops__V1__Case *c, int64_t now)
{
    for (size_t i = 0; i < c->n_clocks; i++) {
        clock_close(c, c->clocks[i]->stage, now);
    }
}

static int terminal(Cityops__V1__CaseState st)
{
    return st == CITYOPS__V1__CASE_STATE__CASE_STATE_CLOSED ||
           st == CITYOPS__V1__CASE_STATE__CASE_STATE_REJECTED ||
           st == CITYOPS__V1__CASE_STATE__CASE_STATE_VOIDED ||
           st == CITYOPS__V1__CASE_STATE__CASE_STATE_MERGED ||
           st == CITYOPS__V1__CASE_STATE__CASE_STATE_TRANSFERRED_OUT;
}

static int shelve(Cityops__V1__Case *c, int64_t now)
{
    for (size_t i = 0; i < c->n_clocks; i++) {
        Cityops__V1__StageClock *k = c->clocks[i];
        if (clock_open_p(k) && k->paused_at == 0) {
            k->paused_at = now;
        }
    }
    return 0;
}

int clocks_event(struct store *s,
                 MDB_txn *txn,
                 const Cityops__V1__Command *cmd,
                 Cityops__V1__Case *c,
                 Cityops__V1__CaseEvent *ev)
{
    int64_t now = cmd->time;

    switch (ev->type) {
    case EVT(REPORT):
        return clock_open(s, txn, now, c, STAGE(ACCEPT), 0);
    case EVT(REQUEST_VERIFY):
        return clock_open(s, txn, now, c, STAGE(VERIFY), 0);
    case EVT(VERIFY_RESULT):
        clock_close(c, STAGE(VERIFY), now);
        return 0;
    case EVT(ACCEPT):
        clock_close(c, STAGE(ACCEPT), now);
        return clock_open(s, txn, now, c, STAGE(REGISTER), 0);
    case EVT(REGISTER):
        clock_close(c, STAGE(REGISTER), now);
        return clock_open(s, txn, now, c, STAGE(DISPATCH), 0);
    case EVT(DISPATCH):
    case EVT(REDISPATCH): {
        const Cityops__V1__DispatchRequest *r =
            ev->type == EVT(DISPATCH) ? cmd->dispatch : cmd->redispatch;
        Cityops__V1__StageClock *k;
        int rv;
        clock_close(c, STAGE(DISPATCH), now);
        clock_close(c, STAGE(DISPOSE), now);
        rv = clock_open(s, txn, now, c, STAGE(DISPOSE),
                        r != NULL ? r->disposal_deadline : 0);
        k = clock_find(c, STAGE(DISPOSE));
        if (rv == 0 && k != NULL) {
            c->disposal_deadline = k->deadline;
        }
        return rv;
    }
    case EVT(RETURN):
        clock_close(c, STAGE(DISPOSE), now);
        return clock_open(s, txn, now, c, STAGE(DISPATCH), 0);
    case EVT(REPORT_DISPOSAL):
        clock_close(c, STAGE(DISPOSE), now);
        return 0;
    case EVT(REWORK): {
        Cityops__V1__StageClock *k;
        int rv = clock_open(s, txn, now, c, STAGE(DISPOSE), 0);
        k = clock_find(c, STAGE(DISPOSE));
        if (rv == 0 && k != NULL) {
            c->disposal_deadline = k->deadline;
        }
        return rv;
    }
    case EVT(EXTENSION_APPROVE): {
        Cityops__V1__StageClock *k = clock_find(c, STAGE(DISPOSE));
        if (k != NULL && clock_open_p(k) && ev->until > 0) {
            k->deadline = ev->until;
            if (k->deadline <= now) {
                k->overdue = 1;
                c->overdue = 1;
            }
        }
        return 0;
    }
    case EVT(REQUEST_CHECK):
        return clock_open(s, txn, now, c, STAGE(CHECK), 0);
    case EVT(CHECK_RESULT):
        clock_close(c, STAGE(CHECK), now);
        return 0;
    case EVT(SHELVE):
        return shelve(c, now);
    case EVT(UNSHELVE):
        for (size_t i = 0; i < c->n_clocks; i++) {
            Cityops__V1__StageClock *k = c->clocks[i];
            if (clock_open_p(k)) {
                k->done = now; /* paused: not late for the pause */
            }
        }
        return clock_open(s, txn, now, c, STAGE(DISPATCH), 0);
    default:
        if (terminal(c->state)) {
            close_all(c, now);
        }
        return 0;
    }
}

/* --- the deadline index: one key per open, unpaused clock with a deadline:
 * deadline (sign flipped) u64, case id u64, stage u8 --- */

static void ix_key(uint8_t k[17], int64_t deadline, uint64_t id, uint8_t st)
{
    store_be64_put(k, (uint64_t)deadline ^ ((uint64_t)1 << 63));
    store_be64_put(k + 8, id);
    k[16] = st;
}

static int indexed(const Cityops__V1__StageClock *k)
{
    return clock_open_p(k) && k->paused_at == 0 && k->deadline > 0;
}

int clocks_ix_update(struct store *s,
                     MDB_txn *txn,
                     const Cityops__V1__Case *old,
                     const Cityops__V1__Case *c)
{
    uint8_t k[17];
    MDB_val key = {sizeof k, k};
    MDB_val empty = {0, NULL};
    int rc;

    for (size_t i = 0; old != NULL && i < old->n_clocks; i++) {
        if (indexed(old->clocks[i])) {
            ix_key(k, old->clocks[i]->deadline, old->case_id,
                   (uint8_t)old->clocks[i]->stage);
            rc = mdb_del(txn, s->dbi[STORE_DB_IDX_DEADLINE], &key, NULL);
            if (rc != 0 && rc != MDB_NOTFOUND) {
                return store_mdb_err(s, rc, "del idx_deadline");
            }
        }
    }
    for (size_t i = 0; c != NULL && i < c->n_clocks; i++) {
        if (indexed(c->clocks[i])) {
            ix_key(k, c->clocks[i]->deadline, c->case_id,
                   (uint8_t)c->clocks[i]->stage);
            rc = mdb_put(txn, s->dbi[STORE_DB_IDX_DEADLINE], &key, &empty, 0);
            if (rc != 0) {
                return store_mdb_err(s, rc, "put idx_deadline");
            }
        }
    }
    return 0;
}

int clocks_ix_next(struct store *s,
                   MDB_txn *txn,
                   int64_t after,
                   uint64_t after_case,
                   int64_t until,
                   int64_t *deadline,
                   uint64_t *case_id,
                   Cityops__V1__Stage *stage)
{
    uint8_t k[17];
    MDB_val key = {sizeof k, k};
    MDB_val val;
    MDB_cursor *cur;
    int rc;

    ix_key(k, after, after_case, 0xff);
    rc = mdb_cursor_open(txn, s->dbi[STORE_DB_IDX_DEADLINE], &cur);
    if (rc != 0) {
        return store_mdb_err(s, rc, "cursor idx_deadline");
    }
    rc = mdb_cursor_get(cur, &key, &val, MDB_SET_RANGE);
    if (rc == 0 && key.mv_size == 17 &&
        memcmp(key.mv_data, k, sizeof k) == 0) {
        rc = mdb_cursor_get(cur, &key, &val, MDB_NEXT);
    }
    if (rc == 0 && key.mv_size == 17) {
        const uint8_t *p = key.mv_data;
        *deadline = (int64_t)(store_be64_get(p) ^ ((uint64_t)1 << 63));
        *case_id = store_be64_get(p + 8);
        *stage = (Cityops__V1__Stage)p[16];
    }
    mdb_cursor_close(cur);
    if (rc == MDB_NOTFOUND || (rc == 0 && *deadline > until)) {
        return STORE_NOTFOUND;
    }
    return rc != 0 ? store_mdb_err(s, rc, "next idx_deadline") : 0;
}

int clocks_mark_overdue(Cityops__V1__Case *c, Cityops__V1__Stage st, int64_t now)
{
    Cityops__V1__StageClock *k = clock_find(c, st);

    if (k == NULL || !indexed(k) || k->overdue || k->deadline >= now) {
        return 0;
    }
    k->overdue = 1;
    c->overdue = 1;
    return 1;
}
