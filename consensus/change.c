/* Membership changes and leadership transfer on one struct raft, one at a
 * time, and the auto-promotion decision.
 *
 * DESIGN
 * A struct cons_change drives at most one change. Every raft_* call happens
 * in cons_change_start() or cons_change_tick(), never inside a libraft
 * callback: the callbacks only record what happened, and the tick (the cons
 * loop's check handle, or a fixture test after each step) takes the next step
 * and delivers the completion. So the add of a voter, which is two changes
 * (raft_add as spare, then raft_assign), never re-enters libraft from its
 * apply loop.
 *
 * libraft 0.15 behaviour this relies on (src/client.c, membership.c, tick.c):
 * - raft_add() always adds a RAFT_SPARE; spares get no entries (triggerAll
 *   skips them) unless they are being promoted.
 * - raft_assign(id, RAFT_VOTER) on a member whose match index is behind
 *   starts catch-up rounds (promotee_id) and appends the configuration only
 *   once it caught up; an unresponsive promotee aborts the change with
 *   RAFT_NOCONNECTION (max_catch_up_round_duration). raft_assign to
 *   RAFT_STANDBY or RAFT_SPARE appends at once (no catch-up): a standby then
 *   catches up as a replica.
 * - One change at a time: RAFT_CANTCHANGE while a configuration entry is
 *   uncommitted or a promotee is catching up.
 * - Removing the leader itself: the change callback runs with 0 when the new
 *   configuration commits, right after the leader steps down
 *   (replication.c applyChange).
 * - A change pending when leadership is lost (or raft closes) gets
 *   RAFT_LEADERSHIPLOST (convert.c convertClearLeader).
 * - raft_transfer()'s callback runs when the old leader learns the target
 *   leads (recv.c), on timeout after an election timeout (tick.c), or on
 *   close; it carries no status, so success is "the target now leads".
 */
#include <assert.h>
#include <stdio.h>
#include <string.h>

#include "consensus/cons_internal.h"
#include "proto/clog.h"

static const char *role_name(int raft_role)
{
    switch (raft_role) {
    case RAFT_VOTER:
        return "voter";
    case RAFT_STANDBY:
        return "standby";
    default:
        return "spare";
    }
}

int cons_role_to_raft(enum cons_member_role role)
{
    switch (role) {
    case CONS_STANDBY:
        return RAFT_STANDBY;
    case CONS_SPARE:
        return RAFT_SPARE;
    default:
        return RAFT_VOTER;
    }
}

void cons_change_init(struct cons_change *ch, struct raft *r)
{
    memset(ch, 0, sizeof *ch);
    ch->raft = r;
}

static void change_cb(struct raft_change *req, int status)
{
    struct cons_change *ch = req->data;

    ch->status = status;
    ch->fired = 1;
}

static void transfer_cb(struct raft_transfer *req)
{
    struct cons_change *ch = req->data;

    ch->status = 0;
    ch->fired = 1;
}

/* Check @kind's arguments against the current configuration. */
static int change_check(struct cons_change *ch)
{
    const struct raft_configuration *conf = &ch->raft->configuration;
    const struct raft_server *s = NULL;
    unsigned i;

    for (i = 0; i < conf->n; i++) {
        if (conf->servers[i].id == ch->id) {
            s = &conf->servers[i];
        }
    }
    switch (ch->kind) {
    case CONS_CHANGE_ADD:
        if (s != NULL) {
            return CONS_EXISTS;
        }
        for (i = 0; i < conf->n; i++) {
            if (strcmp(conf->servers[i].address, ch->address) == 0) {
                return CONS_EXISTS;
            }
        }
        return 0;
    case CONS_CHANGE_TRANSFER:
        if (ch->id == 0) {
            return 0;
        }
        if (s == NULL) {
            return CONS_NOTFOUND;
        }
        return s->role == RAFT_VOTER && s->id != ch->raft->id ? 0
                                                               : CONS_INVALID;
    case CONS_CHANGE_ASSIGN:
        if (s == NULL) {
            return CONS_NOTFOUND;
        }
        return s->role == ch->role ? CONS_EXISTS : 0;
    default:
        return s == NULL ? CONS_NOTFOUND : 0;
    }
}

static int change_raft_error(struct cons_change *ch, const char *op, int rv)
{
    clog(CLOG_WARN, "cons", "%s member %llu: %s: %s", op,
         (unsigned long long)ch->id, raft_strerror(rv),
         raft_errmsg(ch->raft));
    switch (rv) {
    case RAFT_CANTCHANGE:
        return CONS_CANTCHANGE;
    case RAFT_NOTFOUND:
    case RAFT_BADID:
        return CONS_NOTFOUND;
    case RAFT_DUPLICATEID:
    case RAFT_DUPLICATEADDRESS:
        return CONS_EXISTS;
    case RAFT_NOCONNECTION:
        return CONS_TIMEOUT;
    default:
        return cons_from_raft(rv);
    }
}

/* Issue the raft call for the current step. */
static int change_issue(struct cons_change *ch)
{
    struct raft *r = ch->raft;
    int rv;

    ch->fired = 0;
    ch->req.data = ch;
    switch (ch->kind) {
    case CONS_CHANGE_ADD:
        if (ch->step == 0) {
            rv = raft_add(r, &ch->req, ch->id, ch->address, change_cb);
        } else {
            rv = raft_assign(r, &ch->req, ch->id, ch->role, change_cb);
        }
        return rv == 0 ? 0 : change_raft_error(ch, "add", rv);
    case CONS_CHANGE_ASSIGN:
        rv = raft_assign(r, &ch->req, ch->id, ch->role, change_cb);
        return rv == 0 ? 0 : change_raft_error(ch, "assign", rv);
    case CONS_CHANGE_REMOVE:
        rv = raft_remove(r, &ch->req, ch->id, change_cb);
        return rv == 0 ? 0 : change_raft_error(ch, "remove", rv);
    case CONS_CHANGE_TRANSFER:
        ch->transfer.data = ch;
        rv = raft_transfer(r, &ch->transfer, ch->id, transfer_cb);
        if (rv == 0) {
            ch->id = ch->transfer.id; /* raft picked one for id 0 */
        }
        return rv == 0 ? 0 : change_raft_error(ch, "transfer to", rv);
    }
    return CONS_INVALID;
}

int cons_change_start(struct cons_change *ch,
                      const struct cons_change_args *args,
                      cons_change_done_cb done,
                      void *data)
{
    struct raft *r = ch->raft;
    int rv;

    if (ch->busy) {
        return CONS_CANTCHANGE;
    }
    if (raft_state(r) != RAFT_LEADER) {
        return CONS_NOTLEADER;
    }
    if (args->kind == CONS_CHANGE_ADD &&
        (args->id == 0 || args->address[0] == '\0')) {
        return CONS_INVALID;
    }
    ch->kind = args->kind;
    ch->id = args->id;
    snprintf(ch->address, sizeof ch->address, "%s", args->address);
    ch->role = cons_role_to_raft(args->role);
    ch->step = 0;
    rv = change_check(ch);
    if (rv != 0) {
        return rv;
    }
    /* libraft's own rule, checked first so no half-done state is left. */
    if (r->configuration_uncommitted_index != 0 ||
        r->leader_state.promotee_id != 0 || r->transfer != NULL) {
        return CONS_CANTCHANGE;
    }
    rv = change_issue(ch);
    if (rv != 0) {
        return rv;
    }
    ch->busy = 1;
    ch->done = done;
    ch->data = data;
    return 0;
}

/* The step that just fired succeeded: log it; 1 if another step follows. */
static int change_step_done(struct cons_change *ch)
{
    struct raft *r = ch->raft;
    raft_id leader = 0;
    const char *address = NULL;

    switch (ch->kind) {
    case CONS_CHANGE_ADD:
        if (ch->step == 0) {
            clog(CLOG_INFO, "cons", "member %llu added as spare (%s)",
                 (unsigned long long)ch->id, ch->address);
            return ch->role != RAFT_SPARE;
        }
        clog(CLOG_INFO, "cons", "member %llu is now %s",
             (unsigned long long)ch->id, role_name(ch->role));
        return 0;
    case CONS_CHANGE_ASSIGN:
        clog(CLOG_INFO, "cons", "member %llu is now %s",
             (unsigned long long)ch->id, role_name(ch->role));
        return 0;
    case CONS_CHANGE_REMOVE:
        clog(CLOG_INFO, "cons", "member %llu removed",
             (unsigned long long)ch->id);
        return 0;
    case CONS_CHANGE_TRANSFER:
        raft_leader(r, &leader, &address);
        if (raft_state(r) == RAFT_LEADER || leader != ch->id) {
            clog(CLOG_WARN, "cons",
                 "leadership transfer to %llu did not complete",
                 (unsigned long long)ch->id);
            ch->status = RAFT_NOCONNECTION;
            return 0;
        }
        clog(CLOG_INFO, "cons", "leadership transferred to %llu",
             (unsigned long long)ch->id);
        return 0;
    }
    return 0;
}

static void change_finish(struct cons_change *ch, int rv)
{
    cons_change_done_cb done = ch->done;
    void *data = ch->data;

    ch->busy = 0;
    ch->done = NULL;
    ch->data = NULL;
    if (done != NULL) {
        done(data, rv, ch->id);
    }
}

void cons_change_tick(struct cons_change *ch, int stopping)
{
    int rv;

    if (!ch->busy || !ch->fired) {
        return;
    }
    ch->fired = 0;
    if (stopping) {
        change_finish(ch, CONS_SHUTDOWN);
        return;
    }
    if (ch->status != 0) {
        change_finish(ch, change_raft_error(ch, "change of", ch->status));
        return;
    }
    if (!change_step_done(ch)) {
        rv = ch->status == 0 ? 0 : CONS_TIMEOUT;
        change_finish(ch, rv);
        return;
    }
    ch->step++;
    rv = change_issue(ch);
    if (rv == CONS_NOTLEADER) {
        rv = CONS_LEADERSHIPLOST; /* added as spare, role not given */
    }
    if (rv != 0) {
        change_finish(ch, rv);
    }
}

void cons_change_abort(struct cons_change *ch)
{
    if (ch->busy) {
        change_finish(ch, CONS_SHUTDOWN);
    }
}

int cons_change_busy(const struct cons_change *ch)
{
    return ch->busy;
}
