/* The Raft loop of one node: thread, start/stop, proposal dispatch, group
 * commit, leadership tracking and status.
 *
 * DESIGN
 * cons_start() spawns a thread running a libuv loop; everything below except
 * cons_submit(), cons_barrier(), cons_status_get() and cons_stop() runs on it.
 * Work arrives through the proposal queue (queue.c) and one uv_async.
 *
 * Each wake drains the queue. An item meets one of four fates:
 * - leader, ready: a SUBMIT joins the batch being built (up to max_batch
 *   commands and CONS_MAX_ENTRY bytes per raft_apply()); a BARRIER joins the
 *   one raft_barrier() started for this wake.
 * - another node leads: callback CONS_NOTLEADER with its id, at once.
 * - no known leader, or we lead but are not ready yet: parked. A 50 ms timer
 *   and every leadership change re-dispatch parked items; an item whose wait
 *   has passed gets CONS_NOLEADER.
 * - stopping: CONS_SHUTDOWN.
 *
 * "Ready" means this node's post-election barrier has been applied in the
 * current term. libraft 0.15 appends no entry on election, so until then
 * entries of the previous leader may be committed but not yet applied here:
 * store_last_time() (the time floor) and any read could be stale.
 *
 * Leadership changes are observed, not notified (0.15 has no state callback):
 * a uv_check handle looks at raft_state()/current_term after every loop
 * iteration, logs changes, starts the leader barrier, and refreshes the
 * status copy that other threads read.
 */
#include <assert.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include <raft.h>
#include <raft/uv.h>
#include <uv.h>

#include "consensus/cons_internal.h"
#include "proto/clog.h"

#define CONS_PARK_CHECK_MS 50
#define CONS_NUDGE_MS 1000      /* barrier period while the store fails */
#define CONS_STEPDOWN_MS 5000   /* retry period of a failing leader's hand-over */
#define CONS_PROMOTE_CHECK_MS 500
#define CONS_PROMOTE_SLACK 64   /* entries a standby may lag and be promoted */
#define CONS_NOCANDIDATE_LOG_MS 30000

/* What the leader knows of one member's reachability, by id (positions in
 * the configuration move when it changes). */
struct cons_seen {
    uint64_t id;
    uint64_t last_ms; /* loop time it was last seen recent_recv */
};

struct cons {
    struct cons_config cfg; /* copied; pointers inside are the caller's */
    atomic_uint stall_ms;   /* cons_stall(): taken by the loop */
    char address[CONS_ADDRESS_SIZE];
    char dir[4096];
    struct cons_member members[CONS_MAX_MEMBERS];

    pthread_t thread;
    uv_loop_t loop;
    uv_async_t async;
    uv_timer_t timer;
    uv_check_t check;
    struct cons_transport transport;
    struct raft_io io;
    struct raft_fsm fsm;
    struct raft raft;

    struct cons_queue queue;
    struct cons_work *parked_head; /* loop thread only */
    struct cons_work *parked_tail;
    int stopping;

    /* Leadership tracking (loop thread). */
    int seen_state;
    uint64_t seen_term;
    uint64_t seen_leader;
    uint64_t barrier_term; /* term of the in-flight leader barrier, or 0 */
    uint64_t ready_term;   /* term whose leader barrier was applied, or 0 */
    int64_t last_stamp;    /* last cmd->time given out */
    int redispatch;        /* re-dispatch parked items at the next check */
    int joining;           /* not in cfg->members: not bootstrapped */

    /* Membership (loop thread). */
    struct cons_change change;
    struct cons_seen seen[CONS_MAX_MEMBERS];
    size_t n_seen;
    char zones[CONS_MAX_MEMBERS][CONS_ZONE_SIZE]; /* by configuration index */
    uint64_t zones_conf_index;
    uint64_t zones_ms;
    /* Auto-promotion: after a promote commits, the voter to demote. */
    uint64_t auto_demote_id;
    uint64_t auto_next_ms;
    uint64_t nocandidate_logged_ms;
    uint64_t nocandidate_id;
    /* Store failure: the nudge barrier in flight, and when the next one. */
    int nudge_inflight;
    uint64_t nudge_next_ms;
    /* Store failure on a leader: hand leadership to a healthy voter. */
    int stepdown_inflight;
    uint64_t stepdown_next_ms;
    struct cons_syncer syncer; /* periodic store_sync(), its own thread */
    /* Votes: the leader lease (lease.c) and the io callbacks it wraps. */
    struct cons_lease lease;
    struct cons_probe probe; /* is the silent leader's process gone? */
    /* A follower's kept entry the store refused (fsm.c): when to retry it,
     * and when a leader that could not apply it may try to become ready. */
    uint64_t drain_retry_ms;
    uint64_t lead_retry_ms;
    int (*io_start)(struct raft_io *io,
                    unsigned msecs,
                    raft_io_tick_cb tick,
                    raft_io_recv_cb recv);
    raft_io_recv_cb raft_recv;
    uint64_t keepalive_ms; /* when the last keepalives were sent */
    /* Snapshot phase (snapshot_stagger): what the threshold was set for. */
    uint64_t phase_snapshot_index;
    uint64_t phase_conf_index;
    int phase_set;

    /* Start handshake. */
    pthread_mutex_t start_mutex;
    pthread_cond_t start_cond;
    int start_done;
    int start_rv;

    pthread_mutex_t status_mutex;
    struct cons_status status;
};

/* One raft_apply(): the batch's waiters, in batch order. */
struct cons_apply_req {
    struct raft_apply req;
    struct cons *c;
    size_t n;
    struct cons_work *items[];
};

/* One raft_barrier() shared by the barrier waiters of one wake. */
struct cons_barrier_req {
    struct raft_barrier req;
    struct cons *c;
    struct cons_work *waiters;
};

/* The post-election barrier. */
struct cons_lead_req {
    struct raft_barrier req;
    struct cons *c;
    uint64_t term;
};

/* A batch being built during one dispatch pass. */
struct cons_batch {
    struct cons_work *items[256];
    size_t n;
    size_t bytes;
};

static void dispatch(struct cons *c,
                     struct cons_work *w,
                     struct cons_batch *b,
                     struct cons_work **barrier_waiters);
static void observe(struct cons *c);

const char *cons_strerror(int rv)
{
    switch (rv) {
    case 0:
        return "success";
    case CONS_NOMEM:
        return "out of memory";
    case CONS_NOTLEADER:
        return "not the leader";
    case CONS_NOLEADER:
        return "no leader";
    case CONS_LEADERSHIPLOST:
        return "leadership lost before commit (outcome unknown)";
    case CONS_SHUTDOWN:
        return "consensus is shutting down";
    case CONS_IOERR:
        return "raft I/O or apply error";
    case CONS_INVALID:
        return "invalid configuration or argument";
    case CONS_TOOBIG:
        return "command too large";
    case CONS_CANTCHANGE:
        return "another membership change is in flight";
    case CONS_NOTFOUND:
        return "no such member";
    case CONS_EXISTS:
        return "member id or address already in use";
    case CONS_STOREFAIL:
        return "the local store cannot apply entries: writes refused";
    case CONS_TIMEOUT:
        return "the change did not complete in time";
    default:
        return "unknown consensus error";
    }
}

int cons_from_raft(int rv)
{
    switch (rv) {
    case 0:
        return 0;
    case RAFT_NOMEM:
        return CONS_NOMEM;
    case RAFT_NOTLEADER:
        return CONS_NOTLEADER;
    case RAFT_LEADERSHIPLOST:
        return CONS_LEADERSHIPLOST;
    case RAFT_SHUTDOWN:
        return CONS_SHUTDOWN;
    case RAFT_TOOBIG:
        return CONS_TOOBIG;
    case RAFT_BADID:
    case RAFT_DUPLICATEID:
    case RAFT_DUPLICATEADDRESS:
    case RAFT_BADROLE:
    case RAFT_NAMETOOLONG:
    case RAFT_INVALID:
        return CONS_INVALID;
    default:
        return CONS_IOERR;
    }
}

static uint64_t now_ms(void)
{
    return uv_hrtime() / 1000000;
}

static int64_t now_realtime_us(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* Complete @w with @rv (never 0 here) and free it. */
static void work_fail(struct cons_work *w, int rv, uint64_t leader_id)
{
    if (w->kind == CONS_WORK_SUBMIT) {
        w->submit_cb(w->arg, rv, NULL, leader_id);
    } else if (w->kind == CONS_WORK_BARRIER) {
        w->barrier_cb(w->arg, rv, leader_id);
    } else {
        w->change_cb(w->arg, rv, leader_id);
    }
    raft_free(w);
}

static void park(struct cons *c, struct cons_work *w)
{
    w->next = NULL;
    if (c->parked_tail == NULL) {
        c->parked_head = w;
    } else {
        c->parked_tail->next = w;
    }
    c->parked_tail = w;
}

static int is_ready_leader(struct cons *c)
{
    return raft_state(&c->raft) == RAFT_LEADER &&
           c->ready_term == c->raft.current_term;
}

/* Status and leadership observation. */

static enum cons_state state_from_raft(int state)
{
    switch (state) {
    case RAFT_FOLLOWER:
        return CONS_STATE_FOLLOWER;
    case RAFT_CANDIDATE:
        return CONS_STATE_CANDIDATE;
    case RAFT_LEADER:
        return CONS_STATE_LEADER;
    default:
        return CONS_STATE_UNAVAILABLE;
    }
}

/* Zone of the member at configuration position @i: the node's hook knows
 * members added at run time; the start configuration knows the others. */
static void zone_lookup(struct cons *c, uint64_t id, char *zone, size_t size)
{
    size_t k;

    zone[0] = '\0';
    if (c->cfg.hooks.zone_of != NULL) {
        c->cfg.hooks.zone_of(c->cfg.hooks.data, id, zone, size);
        zone[size - 1] = '\0';
    }
    for (k = 0; zone[0] == '\0' && k < c->cfg.n_members; k++) {
        if (c->members[k].id == id) {
            snprintf(zone, size, "%s", c->members[k].zone);
        }
    }
}

/* Refresh the zone cache when the configuration changed, else once a second
 * (the hook may read the store). */
static void zones_refresh(struct cons *c)
{
    const struct raft_configuration *conf = &c->raft.configuration;
    uint64_t now = now_ms();
    unsigned i;

    if (c->zones_conf_index == c->raft.configuration_index &&
        now < c->zones_ms + 1000) {
        return;
    }
    c->zones_conf_index = c->raft.configuration_index;
    c->zones_ms = now;
    for (i = 0; i < conf->n && i < CONS_MAX_MEMBERS; i++) {
        zone_lookup(c, conf->servers[i].id, c->zones[i], CONS_ZONE_SIZE);
    }
}

static struct cons_seen *seen_get(struct cons *c, uint64_t id, uint64_t now)
{
    size_t k;

    for (k = 0; k < c->n_seen; k++) {
        if (c->seen[k].id == id) {
            return &c->seen[k];
        }
    }
    if (c->n_seen == CONS_MAX_MEMBERS) {
        return NULL;
    }
    /* A member we never looked at gets the benefit of the doubt. */
    c->seen[c->n_seen].id = id;
    c->seen[c->n_seen].last_ms = now;
    return &c->seen[c->n_seen++];
}

/* Leader: note who answered within the last election timeout. libraft sets
 * progress[i].recent_recv on every AppendEntries result and clears it at
 * each election timeout (progress.c), so "last seen true" is at most one
 * heartbeat old for a reachable member. */
static void seen_update(struct cons *c)
{
    const struct raft_configuration *conf = &c->raft.configuration;
    uint64_t now = now_ms();
    unsigned i;

    if (raft_state(&c->raft) != RAFT_LEADER ||
        c->raft.leader_state.progress == NULL) {
        c->n_seen = 0; /* a new leader starts with a fresh view */
        return;
    }
    for (i = 0; i < conf->n; i++) {
        struct cons_seen *seen = seen_get(c, conf->servers[i].id, now);
        if (seen != NULL && (conf->servers[i].id == c->raft.id ||
                             c->raft.leader_state.progress[i].recent_recv)) {
            seen->last_ms = now;
        }
    }
}

static void progress_of(struct cons *c, unsigned i, struct cons_progress *p)
{
    const struct raft_server *server = &c->raft.configuration.servers[i];
    struct cons_seen *seen;
    uint64_t now = now_ms();

    memset(p, 0, sizeof *p);
    if (raft_state(&c->raft) != RAFT_LEADER ||
        c->raft.leader_state.progress == NULL) {
        return;
    }
    p->match_index = c->raft.leader_state.progress[i].match_index;
    if (server->id == c->raft.id) {
        p->match_index = raft_last_index(&c->raft);
    }
    seen = seen_get(c, server->id, now);
    if (seen == NULL || now - seen->last_ms < c->cfg.election_ms) {
        p->reachable = 1;
        return;
    }
    p->unreachable_ms = (int64_t)(now - seen->last_ms);
}

/* Term of the last entry in the log: the newest cached entry, else the
 * snapshot's (an empty log has term 0). */
static uint64_t last_log_term(const struct raft *r)
{
    const struct raft_log *l = &r->log;

    if (l->back != l->front && l->size > 0) {
        size_t i = (l->back + l->size - 1) % l->size;
        return l->entries[i].term;
    }
    return l->snapshot.last_term;
}

static void status_refresh(struct cons *c, uint64_t leader_id)
{
    struct cons_status s;
    const struct raft_configuration *conf = &c->raft.configuration;
    struct cons_fsm *f = c->fsm.data;
    unsigned i;

    zones_refresh(c);
    memset(&s, 0, sizeof s);
    s.state = state_from_raft(raft_state(&c->raft));
    s.term = c->raft.current_term;
    s.leader_id = leader_id;
    s.commit_index = c->raft.commit_index;
    s.applied_index = raft_last_applied(&c->raft);
    s.last_log_index = raft_last_index(&c->raft);
    s.last_log_term = last_log_term(&c->raft);
    for (i = 0; i < conf->n && s.n_members < CONS_MAX_MEMBERS; i++) {
        struct cons_member *m = &s.members[s.n_members++];
        m->id = conf->servers[i].id;
        snprintf(m->raft_address, sizeof m->raft_address, "%s",
                 conf->servers[i].address);
        snprintf(m->zone, sizeof m->zone, "%s", c->zones[i]);
        progress_of(c, i, &s.progress[i]);
        switch (conf->servers[i].role) {
        case RAFT_STANDBY:
            m->role = CONS_STANDBY;
            break;
        case RAFT_SPARE:
            m->role = CONS_SPARE;
            break;
        default:
            m->role = CONS_VOTER;
            break;
        }
    }
    s.snapshot_index = c->raft.log.snapshot.last_index;
    if (f != NULL && f->budget.half > 0) {
        s.log_bytes = cons_logbudget_bytes(&f->budget);
        s.log_budget = f->budget.half * 2;
    }
    if (f != NULL && f->store_failed) {
        s.store_failed = 1;
        snprintf(s.store_error, sizeof s.store_error, "%s", f->store_error);
    }
    pthread_mutex_lock(&c->status_mutex);
    c->status = s;
    pthread_mutex_unlock(&c->status_mutex);
}

void cons_status_get(struct cons *c, struct cons_status *out)
{
    pthread_mutex_lock(&c->status_mutex);
    *out = c->status;
    pthread_mutex_unlock(&c->status_mutex);
}

/* Re-dispatch every parked item (a leader appeared, we became ready, or the
 * timer fired). */
static void redispatch_parked(struct cons *c);

static void lead_barrier_cb(struct raft_barrier *req, int status)
{
    struct cons_lead_req *lr = req->data;
    struct cons *c = lr->c;
    uint64_t term = lr->term;
    uint64_t index = req->index;

    raft_free(lr);
    if (c->barrier_term == term) {
        c->barrier_term = 0;
    }
    if (status != 0 || c->stopping) {
        return;
    }
    if (raft_state(&c->raft) != RAFT_LEADER || c->raft.current_term != term) {
        return;
    }
    /* Ready means the store holds everything before the barrier, entries it
     * kept as a follower included (fsm.c). */
    if (cons_fsm_drain(&c->fsm) != 0) {
        c->lead_retry_ms = now_ms() + CONS_NUDGE_MS;
        return;
    }
    c->ready_term = term;
    clog(CLOG_INFO, "cons", "leader ready: barrier %llu applied (term %llu)",
         (unsigned long long)index, (unsigned long long)term);
    /* Not from inside libraft's apply loop: the check handle does it. */
    c->redispatch = 1;
    if (c->cfg.hooks.leader_ready != NULL) {
        c->cfg.hooks.leader_ready(c->cfg.hooks.data);
    }
}

static void lead_barrier_start(struct cons *c)
{
    struct cons_lead_req *lr;
    int rv;

    lr = raft_malloc(sizeof *lr);
    if (lr == NULL) {
        clog(CLOG_WARN, "cons", "leader barrier: out of memory (will retry)");
        return;
    }
    lr->c = c;
    lr->term = c->raft.current_term;
    lr->req.data = lr;
    rv = raft_barrier(&c->raft, &lr->req, lead_barrier_cb);
    if (rv != 0) {
        clog(CLOG_WARN, "cons", "leader barrier: %s (will retry)",
             raft_strerror(rv));
        raft_free(lr);
        return;
    }
    c->barrier_term = lr->term;
}

/* Staggered snapshots. A snapshot copies the whole store and writes it
 * out (seconds for a few hundred MB), and every node used to take it at the
 * same applied index, so all of them were busy at once; in a 3-voter
 * cluster the leader then waits on followers that are all copying. Here the
 * voter of rank r (by id, among n voters) takes its snapshots at the
 * indexes k*T + r*T/n (T = snapshot_threshold), so at most one voter is
 * copying at a time and commits go on through the others. libraft takes a
 * snapshot once applied - last snapshot index >= threshold, so the
 * threshold is set to the distance to the next such index after each
 * snapshot and after each configuration change, never below T/(2n) (an
 * installed snapshot may land just before a point). */
static void snapshot_phase(struct cons *c)
{
    const struct raft_configuration *conf = &c->raft.configuration;
    uint64_t t = c->cfg.snapshot_threshold;
    uint64_t last = c->raft.log.snapshot.last_index;
    uint64_t n = 0;
    uint64_t r = 0;
    uint64_t point;
    unsigned i;

    if (c->cfg.snapshot_first || !c->cfg.snapshot_stagger ||
        (c->phase_set && c->phase_snapshot_index == last &&
         c->phase_conf_index == c->raft.configuration_index)) {
        return;
    }
    for (i = 0; i < conf->n; i++) {
        if (conf->servers[i].role != RAFT_VOTER) {
            continue;
        }
        n++;
        r += conf->servers[i].id < c->cfg.id;
    }
    if (n == 0) {
        n = 1;
        r = 0;
    }
    point = last / t * t + r * t / n;
    while (point < last + (t / (2 * n) > 0 ? t / (2 * n) : 1)) {
        point += t;
    }
    raft_set_snapshot_threshold(&c->raft, (unsigned)(point - last));
    clog(CLOG_DEBUG, "cons", "next snapshot at index %llu (voter %llu of %llu)",
         (unsigned long long)point, (unsigned long long)r + 1,
         (unsigned long long)n);
    c->phase_snapshot_index = last;
    c->phase_conf_index = c->raft.configuration_index;
    c->phase_set = 1;
}

static void observe(struct cons *c)
{
    int state = raft_state(&c->raft);
    uint64_t term = c->raft.current_term;
    raft_id leader_id = 0;
    const char *leader_address = NULL;
    int changed = 0;

    raft_leader(&c->raft, &leader_id, &leader_address);
    if (state == RAFT_LEADER &&
        (c->seen_state != RAFT_LEADER || c->seen_term != term)) {
        clog(CLOG_INFO, "cons", "became leader (term %llu)",
             (unsigned long long)term);
        changed = 1;
    } else if (state != RAFT_LEADER && c->seen_state == RAFT_LEADER) {
        clog(CLOG_INFO, "cons", "lost leadership (term %llu)",
             (unsigned long long)term);
        changed = 1;
    }
    if (state != RAFT_LEADER && leader_id != c->seen_leader) {
        if (leader_id != 0) {
            clog(CLOG_INFO, "cons", "leader is now node %llu (term %llu)",
                 (unsigned long long)leader_id, (unsigned long long)term);
        } else {
            clog(CLOG_INFO, "cons", "no known leader (term %llu)",
                 (unsigned long long)term);
        }
        changed = 1;
    }
    if (c->cfg.snapshot_first && c->raft.log.snapshot.last_index > 0) {
        c->cfg.snapshot_first = 0;
        raft_set_snapshot_threshold(&c->raft, c->cfg.snapshot_threshold);
        raft_set_snapshot_trailing(&c->raft, c->cfg.snapshot_trailing);
        clog(CLOG_INFO, "cons", "restored state: snapshot at index %llu "
                                "taken; members may join",
             (unsigned long long)c->raft.log.snapshot.last_index);
    }
    c->seen_state = state;
    c->seen_term = term;
    c->seen_leader = leader_id;
    seen_update(c);
    snapshot_phase(c);
    cons_change_tick(&c->change, c->stopping);

    if (state == RAFT_LEADER && !c->stopping && c->ready_term != term &&
        c->barrier_term != term && now_ms() >= c->lead_retry_ms) {
        lead_barrier_start(c);
    }
    status_refresh(c, leader_id);
    if ((changed || c->redispatch) && c->parked_head != NULL) {
        c->redispatch = 0;
        redispatch_parked(c);
    }
    c->redispatch = 0;
}

/* Proposals. */

static void apply_cb(struct raft_apply *req, int status, void *result)
{
    struct cons_apply_req *ar = req->data;
    struct cons *c = ar->c;
    const struct store_results *res = result;
    size_t i;

    for (i = 0; i < ar->n; i++) {
        struct cons_work *w = ar->items[i];
        if (status != 0) {
            int rv = c->stopping ? CONS_SHUTDOWN : cons_from_raft(status);
            if (rv != CONS_SHUTDOWN) {
                rv = CONS_LEADERSHIPLOST; /* committed or not: unknown */
            }
            w->submit_cb(w->arg, rv, NULL, 0);
        } else if (res == NULL || res->skipped || i >= res->n ||
                   res->results[i] == NULL) {
            w->submit_cb(w->arg, CONS_IOERR, NULL, 0);
        } else {
            w->submit_cb(w->arg, 0, res->results[i], 0);
        }
        raft_free(w);
    }
    raft_free(ar);
}

/* Stamp, pack and propose the batch; on failure complete its waiters. */
static void batch_flush(struct cons *c, struct cons_batch *b)
{
    Cityops__V1__CommandBatch batch = CITYOPS__V1__COMMAND_BATCH__INIT;
    Cityops__V1__Command *cmds[256];
    struct cons_apply_req *ar;
    struct raft_buffer buf;
    int64_t floor;
    size_t i;
    int rv;

    if (b->n == 0) {
        return;
    }
    floor = store_last_time(c->cfg.store);
    if (c->last_stamp > floor) {
        floor = c->last_stamp;
    }
    for (i = 0; i < b->n; i++) {
        int64_t t = now_realtime_us();
        if (t <= floor) {
            t = floor + 1;
        }
        b->items[i]->cmd->time = t;
        floor = t;
        cmds[i] = b->items[i]->cmd;
    }
    c->last_stamp = floor;
    batch.n_commands = b->n;
    batch.commands = cmds;

    ar = raft_malloc(sizeof *ar + b->n * sizeof ar->items[0]);
    if (ar == NULL) {
        rv = CONS_NOMEM;
        goto err_fail_waiters;
    }
    rv = cons_entry_encode(&batch, &buf);
    if (rv != 0) {
        goto err_free_req;
    }
    ar->c = c;
    ar->n = b->n;
    memcpy(ar->items, b->items, b->n * sizeof b->items[0]);
    ar->req.data = ar;
    rv = raft_apply(&c->raft, &ar->req, &buf, 1, apply_cb);
    if (rv != 0) {
        clog(CLOG_WARN, "cons", "propose %zu commands: %s: %s", b->n,
             raft_strerror(rv), raft_errmsg(&c->raft));
        rv = cons_from_raft(rv);
        goto err_free_buf;
    }
    b->n = 0;
    b->bytes = 0;
    return;

err_free_buf:
    raft_free(buf.base);
err_free_req:
    raft_free(ar);
err_fail_waiters:
    for (i = 0; i < b->n; i++) {
        work_fail(b->items[i], rv, 0);
    }
    b->n = 0;
    b->bytes = 0;
}

static void barrier_cb(struct raft_barrier *req, int status)
{
    struct cons_barrier_req *br = req->data;
    struct cons *c = br->c;
    struct cons_work *w = br->waiters;
    int rv = 0;

    if (status != 0) {
        rv = c->stopping ? CONS_SHUTDOWN : CONS_LEADERSHIPLOST;
    }
    while (w != NULL) {
        struct cons_work *next = w->next;
        w->barrier_cb(w->arg, rv, 0);
        raft_free(w);
        w = next;
    }
    raft_free(br);
}

static void barrier_flush(struct cons *c, struct cons_work **waiters)
{
    struct cons_barrier_req *br;
    struct cons_work *w;
    int rv;

    if (*waiters == NULL) {
        return;
    }
    br = raft_malloc(sizeof *br);
    if (br == NULL) {
        rv = CONS_NOMEM;
        goto err_fail_waiters;
    }
    br->c = c;
    br->waiters = *waiters;
    br->req.data = br;
    rv = raft_barrier(&c->raft, &br->req, barrier_cb);
    if (rv != 0) {
        rv = cons_from_raft(rv);
        raft_free(br);
        goto err_fail_waiters;
    }
    *waiters = NULL;
    return;

err_fail_waiters:
    w = *waiters;
    while (w != NULL) {
        struct cons_work *next = w->next;
        work_fail(w, rv, 0);
        w = next;
    }
    *waiters = NULL;
}

/* Membership work. */

static void change_work_done(void *data, int rv, uint64_t id)
{
    struct cons_work *w = data;

    (void)id;
    w->change_cb(w->arg, rv, 0);
    raft_free(w);
}

static void change_work_start(struct cons *c, struct cons_work *w)
{
    struct cons_change_args args;
    int rv;

    memset(&args, 0, sizeof args);
    args.id = w->member.id;
    args.address = w->member.raft_address;
    args.role = w->member.role;
    switch (w->kind) {
    case CONS_WORK_ADD:
        args.kind = CONS_CHANGE_ADD;
        break;
    case CONS_WORK_ASSIGN:
        args.kind = CONS_CHANGE_ASSIGN;
        break;
    case CONS_WORK_REMOVE:
        args.kind = CONS_CHANGE_REMOVE;
        break;
    default:
        args.kind = CONS_CHANGE_TRANSFER;
        break;
    }
    rv = cons_change_start(&c->change, &args, change_work_done, w);
    if (rv != 0) {
        work_fail(w, rv, 0);
    }
}

static int store_failed(struct cons *c)
{
    struct cons_fsm *f = c->fsm.data;

    return f != NULL && f->store_failed;
}

static void dispatch(struct cons *c,
                     struct cons_work *w,
                     struct cons_batch *b,
                     struct cons_work **barrier_waiters)
{
    raft_id leader_id = 0;
    const char *leader_address = NULL;

    w->next = NULL;
    if (c->stopping) {
        work_fail(w, CONS_SHUTDOWN, 0);
        return;
    }
    if ((w->kind == CONS_WORK_SUBMIT || w->kind == CONS_WORK_BARRIER) &&
        store_failed(c)) {
        /* Don't propose what this node could not apply; a barrier would
         * wait, unbounded, until the store recovers. */
        work_fail(w, CONS_STOREFAIL, 0);
        return;
    }
    if (is_ready_leader(c)) {
        if (w->kind != CONS_WORK_SUBMIT && w->kind != CONS_WORK_BARRIER) {
            change_work_start(c, w);
            return;
        }
        if (w->kind == CONS_WORK_BARRIER) {
            w->next = *barrier_waiters;
            *barrier_waiters = w;
            return;
        }
        size_t size = cityops__v1__command__get_packed_size(w->cmd) + 16;
        if (b->n == c->cfg.max_batch || b->n == 256 ||
            (b->n > 0 && b->bytes + size > CONS_MAX_ENTRY)) {
            batch_flush(c, b);
        }
        b->items[b->n++] = w;
        b->bytes += size;
        return;
    }
    raft_leader(&c->raft, &leader_id, &leader_address);
    /* A follower that let a vote through keeps naming the old leader until
     * the election ends; don't send callers to it once it has been silent
     * for an election timeout: wait for the new one instead. */
    if (leader_id != 0 && leader_id != c->raft.id &&
        !cons_lease_expired(&c->lease, c->io.time(&c->io))) {
        work_fail(w, CONS_NOTLEADER, leader_id);
        return;
    }
    if (now_ms() >= w->deadline_ms) {
        work_fail(w, CONS_NOLEADER, 0);
        return;
    }
    park(c, w);
}

/* Dispatch a list of items (oldest first) and flush what they produced. */
static void dispatch_list(struct cons *c, struct cons_work *list)
{
    struct cons_batch b;
    struct cons_work *barrier_waiters = NULL;

    b.n = 0;
    b.bytes = 0;
    while (list != NULL) {
        struct cons_work *next = list->next;
        dispatch(c, list, &b, &barrier_waiters);
        list = next;
    }
    batch_flush(c, &b);
    barrier_flush(c, &barrier_waiters);
}

static void redispatch_parked(struct cons *c)
{
    struct cons_work *list = c->parked_head;

    c->parked_head = NULL;
    c->parked_tail = NULL;
    dispatch_list(c, list);
}

/* Stop. */

static void handle_close_cb(uv_handle_t *handle)
{
    (void)handle;
}

static void loop_raft_close_cb(struct raft *r)
{
    struct cons *c = r->data;

    cons_change_tick(&c->change, 1);
    cons_change_abort(&c->change);
    raft_uv_close(&c->io);
    cons_transport_close(&c->transport);
    cons_fsm_close(&c->fsm);
    uv_close((uv_handle_t *)&c->async, handle_close_cb);
    uv_close((uv_handle_t *)&c->timer, handle_close_cb);
    uv_close((uv_handle_t *)&c->check, handle_close_cb);
}

static void fail_all(struct cons_work *list)
{
    while (list != NULL) {
        struct cons_work *next = list->next;
        work_fail(list, CONS_SHUTDOWN, 0);
        list = next;
    }
}

static void loop_stop(struct cons *c)
{
    const struct cons_fsm *f = c->fsm.data;
    uint64_t deferred, reaped, filled, filled_bytes;

    c->stopping = 1;
    cons_aio_counts(&deferred, &reaped);
    cons_segfill_counts(&filled, &filled_bytes);
    clog(CLOG_INFO, "cons",
         "stopping (applied %llu; log segment AIO contexts released off the "
         "loop: %llu, %llu done; segments written out before use: %llu, "
         "%llu MiB; snapshots taken for the log budget: %llu)",
         (unsigned long long)raft_last_applied(&c->raft),
         (unsigned long long)deferred, (unsigned long long)reaped,
         (unsigned long long)filled,
         (unsigned long long)(filled_bytes >> 20),
         (unsigned long long)f->budget.snapshots);
    fail_all(cons_queue_take(&c->queue));
    fail_all(c->parked_head);
    c->parked_head = NULL;
    c->parked_tail = NULL;
    uv_timer_stop(&c->timer);
    uv_check_stop(&c->check);
    cons_probe_close(&c->probe);
    (void)cons_fsm_drain(&c->fsm); /* what is left replays at the next start */
    /* Pending raft_apply()/raft_barrier() callbacks fire from here. */
    raft_close(&c->raft, loop_raft_close_cb);
}

/* Loop callbacks. */

void cons_stall(struct cons *c, unsigned ms)
{
    atomic_store(&c->stall_ms, ms);
    uv_async_send(&c->async);
}

static void async_cb(uv_async_t *async)
{
    struct cons *c = async->data;
    unsigned stall = atomic_exchange(&c->stall_ms, 0);

    if (c->stopping) {
        return;
    }
    if (stall > 0) {
        struct timespec ts = {stall / 1000, (long)(stall % 1000) * 1000000};
        clog(CLOG_WARN, "cons", "drill: the loop stalls for %u ms", stall);
        while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
        }
        uv_update_time(&c->loop);
    }
    observe(c);
    dispatch_list(c, cons_queue_take(&c->queue));
    if (cons_queue_is_shut(&c->queue)) {
        loop_stop(c);
    }
}

/* Store failure nudge: a single-node leader gets no AppendEntries results,
 * so nothing would run libraft's apply pass again; a barrier does (its
 * local append runs replicationApply). */
static void nudge_cb(struct raft_barrier *req, int status)
{
    struct cons *c = req->data;

    (void)status;
    c->nudge_inflight = 0;
    raft_free(req);
}

static void nudge(struct cons *c)
{
    struct raft_barrier *req;
    uint64_t now = now_ms();

    if (!store_failed(c) || c->nudge_inflight || now < c->nudge_next_ms ||
        raft_state(&c->raft) != RAFT_LEADER) {
        return;
    }
    c->nudge_next_ms = now + CONS_NUDGE_MS;
    req = raft_malloc(sizeof *req);
    if (req == NULL) {
        return;
    }
    req->data = c;
    if (raft_barrier(&c->raft, req, nudge_cb) != 0) {
        raft_free(req);
        return;
    }
    c->nudge_inflight = 1;
}

static void step_down_cb(struct raft_transfer *req)
{
    struct cons *c = req->data;

    c->stepdown_inflight = 0;
    raft_free(req);
}

/* A leader whose store refuses entries cannot commit anything for clients:
 * hand leadership to the most up-to-date voter so that the cluster keeps
 * taking writes while this node waits for space. */
static void step_down(struct cons *c)
{
    struct raft_transfer *req;
    uint64_t now = now_ms();
    unsigned voters = 0;

    if (!store_failed(c) || c->stepdown_inflight ||
        now < c->stepdown_next_ms || raft_state(&c->raft) != RAFT_LEADER ||
        cons_change_busy(&c->change)) {
        return;
    }
    for (unsigned i = 0; i < c->raft.configuration.n; i++) {
        voters += c->raft.configuration.servers[i].role == RAFT_VOTER;
    }
    if (voters < 2) {
        return;
    }
    c->stepdown_next_ms = now + CONS_STEPDOWN_MS;
    req = raft_malloc(sizeof *req);
    if (req == NULL) {
        return;
    }
    req->data = c;
    if (raft_transfer(&c->raft, req, 0, step_down_cb) != 0) {
        raft_free(req);
        return;
    }
    c->stepdown_inflight = 1;
    clog(CLOG_WARN, "cons",
         "store refuses entries: handing leadership to another voter");
}

static void decision(struct cons *c, const char *kind, const char *detail)
{
    clog(CLOG_INFO, "cons", "auto-promotion %s: %s", kind, detail);
    if (c->cfg.hooks.decision != NULL) {
        c->cfg.hooks.decision(c->cfg.hooks.data, kind, detail);
    }
}

static void auto_done(void *data, int rv, uint64_t id)
{
    struct cons *c = data;

    if (rv != 0) {
        clog(CLOG_WARN, "cons", "auto-promotion: change of member %llu: %s",
             (unsigned long long)id, cons_strerror(rv));
        c->auto_demote_id = 0;
    }
}

/* Second half of a swap: demote the lost voter once the promotion is in. */
static void auto_demote(struct cons *c)
{
    struct cons_change_args args;
    char detail[128];
    uint64_t id = c->auto_demote_id;
    int rv;

    memset(&args, 0, sizeof args);
    args.kind = CONS_CHANGE_ASSIGN;
    args.id = id;
    args.address = "";
    args.role = CONS_STANDBY;
    rv = cons_change_start(&c->change, &args, auto_done, c);
    if (rv == CONS_CANTCHANGE) {
        return; /* retried at the next check */
    }
    c->auto_demote_id = 0;
    if (rv != 0) {
        clog(CLOG_WARN, "cons", "auto-promotion: demote %llu: %s",
             (unsigned long long)id, cons_strerror(rv));
        return;
    }
    snprintf(detail, sizeof detail, "demoting lost voter %llu to standby",
             (unsigned long long)id);
    decision(c, "demote", detail);
}

static size_t promote_inputs(struct cons *c, struct cons_promote_member *m)
{
    const struct raft_configuration *conf = &c->raft.configuration;
    struct cons_progress p;
    size_t n = 0;
    unsigned i;

    zones_refresh(c);
    for (i = 0; i < conf->n && n < CONS_MAX_MEMBERS; i++, n++) {
        progress_of(c, i, &p);
        m[n].id = conf->servers[i].id;
        m[n].role = conf->servers[i].role == RAFT_VOTER     ? CONS_VOTER
                    : conf->servers[i].role == RAFT_STANDBY ? CONS_STANDBY
                                                            : CONS_SPARE;
        snprintf(m[n].zone, sizeof m[n].zone, "%s", c->zones[i]);
        m[n].reachable = p.reachable;
        m[n].unreachable_ms = p.unreachable_ms;
        m[n].match_index = p.match_index;
    }
    return n;
}

static void auto_promote(struct cons *c)
{
    struct cons_promote_member m[CONS_MAX_MEMBERS];
    struct cons_promote_settings settings;
    struct cons_promote_decision d;
    struct cons_change_args args;
    uint64_t now = now_ms();
    int rv;

    if (c->cfg.auto_promote_ms == 0 || !is_ready_leader(c) ||
        cons_change_busy(&c->change) || now < c->auto_next_ms) {
        return;
    }
    c->auto_next_ms = now + CONS_PROMOTE_CHECK_MS;
    if (c->auto_demote_id != 0) {
        auto_demote(c);
        return;
    }
    settings.auto_promote_ms = c->cfg.auto_promote_ms;
    settings.one_voter_per_zone = c->cfg.one_voter_per_zone;
    settings.slack = CONS_PROMOTE_SLACK;
    cons_promote_decide(m, promote_inputs(c, m), c->raft.commit_index,
                        &settings, &d);
    if (d.kind == CONS_PROMOTE_NOCANDIDATE) {
        if (d.demote_id != c->nocandidate_id ||
            now >= c->nocandidate_logged_ms + CONS_NOCANDIDATE_LOG_MS) {
            c->nocandidate_id = d.demote_id;
            c->nocandidate_logged_ms = now;
            decision(c, "no-candidate", d.detail);
        }
        return;
    }
    if (d.kind != CONS_PROMOTE_SWAP) {
        c->nocandidate_id = 0;
        return;
    }
    memset(&args, 0, sizeof args);
    args.kind = CONS_CHANGE_ASSIGN;
    args.id = d.promote_id;
    args.address = "";
    args.role = CONS_VOTER;
    rv = cons_change_start(&c->change, &args, auto_done, c);
    if (rv != 0) {
        clog(CLOG_WARN, "cons", "auto-promotion: promote %llu: %s",
             (unsigned long long)d.promote_id, cons_strerror(rv));
        return;
    }
    c->auto_demote_id = d.demote_id;
    decision(c, "promote", d.detail);
}

/* Followers keep their connections to the other members fresh. */
static void keepalive(struct cons *c)
{
    uint64_t now = now_ms();

    if (now - c->keepalive_ms < c->cfg.heartbeat_ms) {
        return;
    }
    c->keepalive_ms = now;
    cons_transport_keepalive(&c->raft, &c->io);
}

/* The leader's host refused a connection to its Raft port: the process is
 * gone (probe.c). Stop waiting for the randomized election timeout: the
 * lease counts as expired, and the election timer is made to expire within
 * a heartbeat (a random part of one, so that two survivors seldom start
 * together). The election itself is libraft's (pre-vote, then vote); the
 * other voters grant it by their own lease, so one node's view never deposes
 * a leader the others still hear. */
static void leader_gone(void *arg, raft_id id)
{
    struct cons *c = arg;
    struct raft *r = &c->raft;
    const char *address = NULL;
    raft_id leader = 0;

    raft_leader(r, &leader, &address);
    if (c->stopping || raft_state(r) != RAFT_FOLLOWER || leader != id) {
        return;
    }
    cons_lease_gone(&c->lease);
#ifdef CONS_LIBRAFT_0_15
    {
        raft_time now = c->io.time(&c->io);
        raft_time elapsed = now - r->election_timer_start;
        unsigned spread = (unsigned)c->io.random(
            &c->io, 0, (int)c->cfg.heartbeat_ms);

        if (r->follower_state.randomized_election_timeout >
            elapsed + spread) {
            r->follower_state.randomized_election_timeout =
                (unsigned)(elapsed + spread);
        }
    }
#endif
    clog(CLOG_INFO, "cons",
         "leader %llu: %s refuses connections, its process is gone; "
         "electing a new leader without waiting out the election timeout",
         (unsigned long long)id, address != NULL ? address : "?");
}

/* A voter follower whose leader has been silent for 2.5 heartbeats asks
 * the leader's host whether the process is still there (probe.c), at most
 * once a heartbeat. */
static void leader_probe(struct cons *c)
{
    raft_time now = c->io.time(&c->io);
    const char *address = NULL;
    raft_id leader = 0;

    /* A SYN to a host that is down waits for the kernel's retries (minutes):
     * give up after an election timeout, so the next leader can be asked. */
    if (c->probe.busy &&
        now_ms() - c->probe.started_ms >= c->cfg.election_ms) {
        cons_probe_cancel(&c->probe);
    }
    if (raft_state(&c->raft) != RAFT_FOLLOWER || c->lease.gone ||
        !c->lease.heard ||
        now - c->lease.last_leader < c->cfg.heartbeat_ms * 5 / 2 ||
        c->probe.busy || now_ms() - c->probe.started_ms < c->cfg.heartbeat_ms) {
        return;
    }
    raft_leader(&c->raft, &leader, &address);
    if (leader == 0 || address == NULL || !cons_is_voter(&c->raft)) {
        return;
    }
    c->probe.started_ms = now_ms();
    (void)cons_probe_start(&c->probe, leader, address);
}

static void timer_cb(uv_timer_t *timer)
{
    struct cons *c = timer->data;

    observe(c);
    if (c->stopping) {
        return;
    }
    keepalive(c);
    leader_probe(c);
    nudge(c);
    step_down(c);
    auto_promote(c);
    if (c->parked_head != NULL) {
        redispatch_parked(c);
    }
}

static void check_cb(uv_check_t *check)
{
    struct cons *c = check->data;

    /* Entries a follower kept while answering the leader (fsm.c). One the
     * store refused is retried once a second (libraft counts it applied and
     * will not hand it over again), and by the next apply. */
    if (!store_failed(c) || now_ms() >= c->drain_retry_ms) {
        if (cons_fsm_drain(&c->fsm) != 0) {
            c->drain_retry_ms = now_ms() + CONS_NUDGE_MS;
        }
    }
    observe(c);
}

/* Start. */

static int notify_async(void *arg)
{
    return uv_async_send(arg);
}

/* Every message passes here before libraft sees it: keepalives stop here,
 * vote requests pass the lease. */
static void lease_recv(struct raft_io *io, struct raft_message *m)
{
    struct raft *r = io->data;
    struct cons *c = r->data;

    if (cons_transport_is_keepalive(m)) {
        return; /* carries nothing; no memory is attached to it */
    }
    if (cons_lease_recv(&c->lease, raft_state(r), io->time(io), m)) {
        clog(CLOG_INFO, "cons",
             "vote request from %llu in term %llu: no leader heard for "
             "%llu ms or more, weighing it",
             (unsigned long long)m->server_id,
             (unsigned long long)m->request_vote.term,
             (unsigned long long)c->lease.election_ms);
    }
    c->raft_recv(io, m);
}

static int lease_start(struct raft_io *io,
                       unsigned msecs,
                       raft_io_tick_cb tick,
                       raft_io_recv_cb recv)
{
    struct cons *c = ((struct raft *)io->data)->data;

    c->raft_recv = recv;
    return c->io_start(io, msecs, tick, lease_recv);
}

static int raft_configure(struct cons *c)
{
    struct raft_configuration conf;
    size_t i;
    int rv;

    for (i = 0; i < c->cfg.n_members; i++) {
        if (c->members[i].id == c->cfg.id) {
            break;
        }
    }
    if (i == c->cfg.n_members) {
        /* Not in the initial configuration: start with whatever the log
         * holds (nothing on a first start) and let the leader add us. */
        c->joining = 1;
        return 0;
    }
    raft_configuration_init(&conf);
    for (i = 0; i < c->cfg.n_members; i++) {
        const struct cons_member *m = &c->members[i];
        int role = RAFT_VOTER;
        if (m->role == CONS_STANDBY) {
            role = RAFT_STANDBY;
        } else if (m->role == CONS_SPARE) {
            role = RAFT_SPARE;
        }
        rv = raft_configuration_add(&conf, m->id, m->raft_address, role);
        if (rv != 0) {
            clog(CLOG_ERROR, "cons", "configuration: member %llu %s: %s",
                 (unsigned long long)m->id, m->raft_address, raft_strerror(rv));
            rv = CONS_INVALID;
            goto out_close_conf;
        }
    }
    rv = raft_bootstrap(&c->raft, &conf);
    if (rv == RAFT_CANTBOOTSTRAP) {
        rv = 0; /* the log has state already */
    } else if (rv != 0) {
        clog(CLOG_ERROR, "cons", "bootstrap %s: %s: %s", c->dir,
             raft_strerror(rv), raft_errmsg(&c->raft));
        rv = cons_from_raft(rv);
    } else {
        clog(CLOG_INFO, "cons", "bootstrapped %s with %zu members", c->dir,
             c->cfg.n_members);
    }
out_close_conf:
    raft_configuration_close(&conf);
    return rv;
}

/* Quorum-loss recovery: a configuration of this node alone, appended to the
 * log before raft_start() loads it. */
static int recover_alone(struct cons *c)
{
    struct raft_configuration conf;
    int rv;

    raft_configuration_init(&conf);
    rv = raft_configuration_add(&conf, c->cfg.id, c->address, RAFT_VOTER);
    if (rv == 0) {
        rv = raft_recover(&c->raft, &conf);
    }
    raft_configuration_close(&conf);
    if (rv != 0) {
        clog(CLOG_ERROR, "cons", "recover %s: %s: %s", c->dir,
             raft_strerror(rv), raft_errmsg(&c->raft));
        return cons_from_raft(rv);
    }
    clog(CLOG_WARN, "cons",
         "recovered %s: the configuration is now node %llu alone (%s); add "
         "the other members back with cityctl cluster add",
         c->dir, (unsigned long long)c->cfg.id, c->address);
    return 0;
}

static void close_cb_after_failed_start(struct raft *r)
{
    struct cons *c = r->data;

    raft_uv_close(&c->io);
    cons_transport_close(&c->transport);
}

/* Everything up to raft_start(). On failure the loop is closed again. */
static int loop_start(struct cons *c)
{
    int rv;

    rv = uv_loop_init(&c->loop);
    if (rv != 0) {
        clog(CLOG_ERROR, "cons", "uv_loop_init: %s", uv_strerror(rv));
        return CONS_IOERR;
    }
    rv = uv_async_init(&c->loop, &c->async, async_cb);
    if (rv != 0) {
        clog(CLOG_ERROR, "cons", "uv_async_init: %s", uv_strerror(rv));
        rv = CONS_IOERR;
        goto err_close_loop;
    }
    c->async.data = c;
    rv = cons_transport_init(&c->transport, &c->loop);
    if (rv != 0) {
        clog(CLOG_ERROR, "cons", "raft transport: %s", raft_strerror(rv));
        rv = cons_from_raft(rv);
        goto err_close_async;
    }
    rv = raft_uv_init(&c->io, &c->loop, c->dir, &c->transport.t);
    if (rv != 0) {
        clog(CLOG_ERROR, "cons", "raft log %s: %s: %s", c->dir,
             raft_strerror(rv), c->io.errmsg);
        rv = CONS_IOERR;
        goto err_close_transport;
    }
    /* A peer that is down is dialled again every heartbeat (libraft's
     * default is every second), so its first messages after a restart are
     * not held back for up to a second. */
    raft_uv_set_connect_retry_delay(&c->io, c->cfg.heartbeat_ms);
    /* io version 2 provides async_work: snapshots copy off the loop. */
    c->io.version = 2;
    rv = cons_fsm_init(&c->fsm, &c->raft, c->cfg.store);
    if (rv != 0) {
        goto err_close_io;
    }
    cons_fsm_set_async(&c->fsm);
    cons_fsm_set_deferred(&c->fsm);
    rv = raft_init(&c->raft, &c->io, &c->fsm, c->cfg.id, c->address);
    if (rv != 0) {
        clog(CLOG_ERROR, "cons", "raft init %s: %s: %s", c->dir,
             raft_strerror(rv), raft_errmsg(&c->raft));
        rv = cons_from_raft(rv);
        goto err_close_fsm;
    }
    if (!c->cfg.snapshot_full) {
        cons_fsm_set_thin(&c->fsm, &c->io, &c->loop);
    }
    rv = cons_fsm_set_log_budget(&c->fsm,
                                 c->cfg.snapshot_full ? 0 : c->cfg.log_budget,
                                 c->cfg.snapshot_trailing);
    if (rv != 0) {
        clog(CLOG_ERROR, "cons", "log budget: out of memory");
        goto err_close_raft;
    }
    c->raft.data = c;
    cons_change_init(&c->change, &c->raft);
    rv = raft_configure(c);
    if (rv != 0) {
        goto err_close_raft;
    }
    if (c->cfg.recover) {
        rv = recover_alone(c);
        if (rv != 0) {
            goto err_close_raft;
        }
    }
    raft_set_heartbeat_timeout(&c->raft, c->cfg.heartbeat_ms);
    raft_set_election_timeout(&c->raft, c->cfg.election_ms);
    raft_set_pre_vote(&c->raft, true);
    cons_lease_init(&c->lease, c->cfg.election_ms);
    cons_probe_init(&c->probe, &c->loop, leader_gone, c);
    c->io_start = c->io.start;
    c->io.start = lease_start;
    if (c->cfg.snapshot_first) {
        /* The state did not come from this log: snapshot at once and keep
         * no entries behind it, so a member that joins is sent the state,
         * not a log that never built it. */
        raft_set_snapshot_threshold(&c->raft, 1);
        raft_set_snapshot_trailing(&c->raft, 0);
        clog(CLOG_INFO, "cons", "restored state: a snapshot comes first");
    } else {
        raft_set_snapshot_threshold(&c->raft, c->cfg.snapshot_threshold);
        raft_set_snapshot_trailing(&c->raft, c->cfg.snapshot_trailing);
    }
    rv = raft_start(&c->raft);
    if (rv != 0) {
        /* A listen failure (address in use, not local) leaves no detail
         * in errmsg: name the address. */
        clog(CLOG_ERROR, "cons", "raft start (listen %s, log %s): %s: %s",
             c->address, c->dir, raft_strerror(rv), raft_errmsg(&c->raft));
        rv = rv == RAFT_NOMEM ? CONS_NOMEM : CONS_IOERR;
        goto err_close_raft;
    }
    if (c->joining && c->raft.configuration.n == 0) {
        clog(CLOG_INFO, "cons", "joining: waiting to be added to the cluster");
    }
    {
        struct cons_fsm *f = c->fsm.data;

        cons_logbudget_seed(&f->budget, &c->raft);
    }
    return 0;

err_close_raft:
    /* raft_close() closes the io; raft_uv_close() frees it afterwards. */
    raft_close(&c->raft, close_cb_after_failed_start);
    uv_close((uv_handle_t *)&c->async, handle_close_cb);
    uv_run(&c->loop, UV_RUN_DEFAULT);
    cons_fsm_close(&c->fsm);
    goto err_close_loop;
err_close_fsm:
    cons_fsm_close(&c->fsm);
err_close_io:
    raft_uv_close(&c->io);
err_close_transport:
    cons_transport_close(&c->transport);
err_close_async:
    uv_close((uv_handle_t *)&c->async, handle_close_cb);
    uv_run(&c->loop, UV_RUN_DEFAULT);
err_close_loop:
    uv_loop_close(&c->loop);
    return rv;
}

static void start_signal(struct cons *c, int rv)
{
    pthread_mutex_lock(&c->start_mutex);
    c->start_done = 1;
    c->start_rv = rv;
    pthread_cond_signal(&c->start_cond);
    pthread_mutex_unlock(&c->start_mutex);
}

static void *loop_main(void *arg)
{
    struct cons *c = arg;
    int rv;

    rv = loop_start(c);
    if (rv != 0) {
        start_signal(c, rv);
        return NULL;
    }
    uv_timer_init(&c->loop, &c->timer);
    c->timer.data = c;
    uv_timer_start(&c->timer, timer_cb, CONS_PARK_CHECK_MS, CONS_PARK_CHECK_MS);
    uv_check_init(&c->loop, &c->check);
    c->check.data = c;
    uv_check_start(&c->check, check_cb);
    observe(c);
    clog(CLOG_INFO, "cons", "node %llu started on %s (log %s, applied %llu)",
         (unsigned long long)c->cfg.id, c->address, c->dir,
         (unsigned long long)raft_last_applied(&c->raft));
    start_signal(c, 0);

    uv_run(&c->loop, UV_RUN_DEFAULT);
    rv = uv_loop_close(&c->loop);
    if (rv != 0) {
        clog(CLOG_WARN, "cons", "uv_loop_close: %s", uv_strerror(rv));
    }
    return NULL;
}

static int config_copy(struct cons *c, const struct cons_config *cfg)
{
    size_t i;

    if (cfg->id == 0 || cfg->raft_address == NULL || cfg->dir == NULL ||
        cfg->store == NULL || cfg->n_members > CONS_MAX_MEMBERS ||
        (cfg->n_members > 0 && cfg->members == NULL)) {
        clog(CLOG_ERROR, "cons", "invalid configuration");
        return CONS_INVALID;
    }
    if (strlen(cfg->raft_address) >= sizeof c->address ||
        strlen(cfg->dir) >= sizeof c->dir) {
        clog(CLOG_ERROR, "cons", "raft address or directory too long");
        return CONS_INVALID;
    }
    c->cfg = *cfg;
    strcpy(c->address, cfg->raft_address);
    strcpy(c->dir, cfg->dir);
    for (i = 0; i < cfg->n_members; i++) {
        c->members[i] = cfg->members[i];
        c->members[i].raft_address[CONS_ADDRESS_SIZE - 1] = '\0';
    }
    c->cfg.raft_address = c->address;
    c->cfg.dir = c->dir;
    c->cfg.members = c->members;
    if (c->cfg.heartbeat_ms == 0) {
        c->cfg.heartbeat_ms = 100;
    }
    if (c->cfg.election_ms == 0) {
        c->cfg.election_ms = 1000;
    }
    if (c->cfg.snapshot_threshold == 0) {
        c->cfg.snapshot_threshold = 8192;
    }
    if (c->cfg.snapshot_trailing == 0) {
        c->cfg.snapshot_trailing = 8192;
    }
    if (c->cfg.max_batch == 0 || c->cfg.max_batch > 256) {
        c->cfg.max_batch = 256;
    }
    return 0;
}

int cons_start(const struct cons_config *cfg, struct cons **out)
{
    struct cons *c;
    int rv;

    c = raft_calloc(1, sizeof *c);
    if (c == NULL) {
        return CONS_NOMEM;
    }
    rv = config_copy(c, cfg);
    if (rv != 0) {
        goto err_free;
    }
    if (mkdir(c->dir, 0700) != 0 && errno != EEXIST) {
        clog(CLOG_ERROR, "cons", "mkdir %s: %s", c->dir, strerror(errno));
        rv = CONS_IOERR;
        goto err_free;
    }
    rv = cons_queue_init(&c->queue);
    if (rv != 0) {
        goto err_free;
    }
    pthread_mutex_init(&c->start_mutex, NULL);
    pthread_cond_init(&c->start_cond, NULL);
    pthread_mutex_init(&c->status_mutex, NULL);
    c->seen_state = RAFT_UNAVAILABLE;
    rv = pthread_create(&c->thread, NULL, loop_main, c);
    if (rv != 0) {
        clog(CLOG_ERROR, "cons", "pthread_create: %s", strerror(rv));
        rv = CONS_NOMEM;
        goto err_destroy_sync;
    }
    pthread_mutex_lock(&c->start_mutex);
    while (!c->start_done) {
        pthread_cond_wait(&c->start_cond, &c->start_mutex);
    }
    rv = c->start_rv;
    pthread_mutex_unlock(&c->start_mutex);
    if (rv != 0) {
        pthread_join(c->thread, NULL);
        goto err_destroy_sync;
    }
    rv = cons_syncer_start(&c->syncer, c->cfg.store, c->cfg.sync_interval_ms);
    if (rv != 0) {
        cons_stop(c);
        return rv;
    }
    *out = c;
    return 0;

err_destroy_sync:
    pthread_mutex_destroy(&c->status_mutex);
    pthread_cond_destroy(&c->start_cond);
    pthread_mutex_destroy(&c->start_mutex);
    cons_queue_close(&c->queue);
err_free:
    raft_free(c);
    return rv;
}

void cons_stop(struct cons *c)
{
    if (c == NULL) {
        return;
    }
    cons_queue_shut(&c->queue, notify_async, &c->async);
    pthread_join(c->thread, NULL);
    cons_syncer_stop(&c->syncer);
    pthread_mutex_destroy(&c->status_mutex);
    pthread_cond_destroy(&c->start_cond);
    pthread_mutex_destroy(&c->start_mutex);
    cons_queue_close(&c->queue);
    clog(CLOG_INFO, "cons", "stopped");
    raft_free(c);
}

/* Callers' side. */

static int work_post(struct cons *c, struct cons_work *w, unsigned wait_ms)
{
    int rv;

    w->deadline_ms = now_ms() + wait_ms;
    rv = cons_queue_push(&c->queue, w, notify_async, &c->async);
    if (rv != 0) {
        raft_free(w);
    }
    return rv;
}

int cons_submit(struct cons *c,
                Cityops__V1__Command *cmd,
                unsigned wait_ms,
                cons_submit_cb cb,
                void *arg)
{
    struct cons_work *w;

    if (c == NULL || cmd == NULL || cb == NULL) {
        return CONS_INVALID;
    }
    if (cityops__v1__command__get_packed_size(cmd) > CONS_MAX_COMMAND) {
        return CONS_TOOBIG;
    }
    w = raft_calloc(1, sizeof *w);
    if (w == NULL) {
        return CONS_NOMEM;
    }
    w->kind = CONS_WORK_SUBMIT;
    w->cmd = cmd;
    w->submit_cb = cb;
    w->arg = arg;
    return work_post(c, w, wait_ms);
}

int cons_barrier(struct cons *c,
                 unsigned wait_ms,
                 cons_barrier_cb cb,
                 void *arg)
{
    struct cons_work *w;

    if (c == NULL || cb == NULL) {
        return CONS_INVALID;
    }
    w = raft_calloc(1, sizeof *w);
    if (w == NULL) {
        return CONS_NOMEM;
    }
    w->kind = CONS_WORK_BARRIER;
    w->barrier_cb = cb;
    w->arg = arg;
    return work_post(c, w, wait_ms);
}

static int change_post(struct cons *c,
                       enum cons_work_kind kind,
                       const struct cons_member *m,
                       unsigned wait_ms,
                       cons_change_cb cb,
                       void *arg)
{
    struct cons_work *w;

    if (c == NULL || cb == NULL) {
        return CONS_INVALID;
    }
    w = raft_calloc(1, sizeof *w);
    if (w == NULL) {
        return CONS_NOMEM;
    }
    w->kind = kind;
    w->member = *m;
    w->member.raft_address[CONS_ADDRESS_SIZE - 1] = '\0';
    w->member.zone[CONS_ZONE_SIZE - 1] = '\0';
    w->change_cb = cb;
    w->arg = arg;
    return work_post(c, w, wait_ms);
}

static int role_valid(enum cons_member_role role)
{
    return role == CONS_VOTER || role == CONS_STANDBY || role == CONS_SPARE;
}

int cons_member_add(struct cons *c,
                    const struct cons_member *m,
                    unsigned wait_ms,
                    cons_change_cb cb,
                    void *arg)
{
    if (m == NULL || m->id == 0 || m->raft_address[0] == '\0' ||
        !role_valid(m->role)) {
        return CONS_INVALID;
    }
    return change_post(c, CONS_WORK_ADD, m, wait_ms, cb, arg);
}

int cons_member_assign(struct cons *c,
                       uint64_t id,
                       enum cons_member_role role,
                       unsigned wait_ms,
                       cons_change_cb cb,
                       void *arg)
{
    struct cons_member m;

    if (id == 0 || !role_valid(role)) {
        return CONS_INVALID;
    }
    memset(&m, 0, sizeof m);
    m.id = id;
    m.role = role;
    return change_post(c, CONS_WORK_ASSIGN, &m, wait_ms, cb, arg);
}

int cons_member_remove(struct cons *c,
                       uint64_t id,
                       unsigned wait_ms,
                       cons_change_cb cb,
                       void *arg)
{
    struct cons_member m;

    if (id == 0) {
        return CONS_INVALID;
    }
    memset(&m, 0, sizeof m);
    m.id = id;
    return change_post(c, CONS_WORK_REMOVE, &m, wait_ms, cb, arg);
}

int cons_transfer(struct cons *c,
                  uint64_t id,
                  unsigned wait_ms,
                  cons_change_cb cb,
                  void *arg)
{
    struct cons_member m;

    memset(&m, 0, sizeof m);
    m.id = id;
    return change_post(c, CONS_WORK_TRANSFER, &m, wait_ms, cb, arg);
}
