/* Unit tests of consensus/: the fsm over real LMDB stores in a deterministic
 * raft fixture cluster (no real time, no network), and the real loop
 * (cons_start on 127.0.0.1) for start, submit, stop and restart. */
#include <arpa/inet.h>
#include <ftw.h>
#include <netinet/in.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <raft.h>
#include <raft/fixture.h>

#include "consensus/cons.h"
#include "consensus/cons_internal.h"
#include "proto/clog.h"
#include "storage/store.h"

#define MAX_SERVERS 3
#define STEP_MS 10000

/* Helpers: temporary directories and commands. */

static char *tmpdir_make(const char *tag)
{
    const char *base = getenv("TMPDIR");
    char *path;

    if (base == NULL) {
        base = "/tmp";
    }
    path = malloc(4096);
    assert_non_null(path);
    snprintf(path, 4096, "%s/cityops-cons-%s-XXXXXX", base, tag);
    assert_non_null(mkdtemp(path));
    return path;
}

static int
rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static void tmpdir_remove(char *path)
{
    nftw(path, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    free(path);
}

/* A Report command by an inspector. The strings are static or owned by the
 * caller's buffer; nothing is heap-allocated. */
struct report {
    Cityops__V1__Command cmd;
    Cityops__V1__ReportRequest req;
    Cityops__V1__Location loc;
    char description[64];
};

static unsigned report_serial; /* increasing times across proposals */

static void report_init(struct report *r, const char *description)
{
    Cityops__V1__Command cmd = CITYOPS__V1__COMMAND__INIT;
    Cityops__V1__ReportRequest req = CITYOPS__V1__REPORT_REQUEST__INIT;
    Cityops__V1__Location loc = CITYOPS__V1__LOCATION__INIT;

    r->cmd = cmd;
    r->req = req;
    r->loc = loc;
    snprintf(r->description, sizeof r->description, "%s", description);
    r->loc.lon = 116.397;
    r->loc.lat = 39.909;
    r->loc.grid_code = "11010100100101";
    r->loc.address = "Dongcheng, Beijing";
    r->req.source = CITYOPS__V1__CASE_SOURCE__CASE_SOURCE_INSPECTOR;
    r->req.category_type = CITYOPS__V1__CATEGORY_TYPE__CATEGORY_TYPE_EVENT;
    r->req.major_code = "01";
    r->req.minor_code = "02";
    r->req.description = r->description;
    r->req.location = &r->loc;
    r->cmd.time = 1700000000000000 + (int64_t)++report_serial * 1000;
    r->cmd.actor_id = "inspector-7";
    r->cmd.role = CITYOPS__V1__ROLE__ROLE_INSPECTOR;
    r->cmd.op_case = CITYOPS__V1__COMMAND__OP_REPORT;
    r->cmd.report = &r->req;
}

/* Pack @n reports into one entry (cons_entry_encode framing). */
static struct raft_buffer batch_pack(struct report *reports, size_t n)
{
    Cityops__V1__CommandBatch batch = CITYOPS__V1__COMMAND_BATCH__INIT;
    Cityops__V1__Command *cmds[16];
    struct raft_buffer buf;
    size_t i;

    assert_true(n <= 16);
    for (i = 0; i < n; i++) {
        cmds[i] = &reports[i].cmd;
    }
    batch.n_commands = n;
    batch.commands = cmds;
    assert_int_equal(cons_entry_encode(&batch, &buf), 0);
    assert_int_equal(buf.len % 8, 0); /* libraft's uv log needs this */
    return buf;
}

/* A raft fixture cluster of our fsm over one LMDB store per server. */
struct cluster {
    struct raft_fixture f;
    unsigned n;
    char *dirs[MAX_SERVERS];
    struct store *stores[MAX_SERVERS];
    struct raft_fsm fsms[MAX_SERVERS];
};

/* What a raft_apply callback saw, copied out while it was valid. */
struct applied {
    struct raft_apply req;
    struct cluster *cl;
    unsigned server; /* the leader that proposed it */
    int fired;
    int status;
    size_t n;
    int codes[16];
    uint64_t case_ids[16];
    uint64_t result_index;
    uint64_t store_index; /* store_applied_index() inside the callback */
};

static void applied_cb(struct raft_apply *req, int status, void *result)
{
    struct applied *a = req->data;
    const struct store_results *res = result;
    size_t i;

    a->fired = 1;
    a->status = status;
    if (status != 0) {
        return;
    }
    assert_non_null(res);
    a->n = res->n;
    for (i = 0; i < res->n && i < 16; i++) {
        a->codes[i] = res->results[i]->code;
        a->case_ids[i] = res->results[i]->case_ != NULL
                             ? res->results[i]->case_->case_id
                             : 0;
    }
    if (res->n > 0) {
        a->result_index = res->results[0]->index;
    }
    a->store_index = store_applied_index(a->cl->stores[a->server]);
}

static struct cluster *
cluster_new(unsigned n, unsigned threshold, unsigned trailing)
{
    struct cluster *cl = calloc(1, sizeof *cl);
    struct raft_configuration conf;
    unsigned i;

    assert_non_null(cl);
    cl->n = n;
    assert_int_equal(raft_fixture_initialize(&cl->f), 0);
    for (i = 0; i < n; i++) {
        cl->dirs[i] = tmpdir_make("fixture");
        assert_int_equal(store_open(cl->dirs[i], NULL, &cl->stores[i]), 0);
        assert_int_equal(
            cons_fsm_init(&cl->fsms[i], &cl->f.servers[i].raft, cl->stores[i]),
            0);
        assert_int_equal(raft_fixture_grow(&cl->f, &cl->fsms[i]), 0);
    }
    assert_int_equal(raft_fixture_configuration(&cl->f, n, &conf), 0);
    assert_int_equal(raft_fixture_bootstrap(&cl->f, &conf), 0);
    raft_configuration_close(&conf);
    for (i = 0; i < n; i++) {
        struct raft *r = raft_fixture_get(&cl->f, i);
        if (threshold > 0) {
            raft_set_snapshot_threshold(r, threshold);
            raft_set_snapshot_trailing(r, trailing);
        }
    }
    assert_int_equal(raft_fixture_start(&cl->f), 0);
    return cl;
}

static void cluster_free(struct cluster *cl)
{
    unsigned i;

    raft_fixture_close(&cl->f);
    for (i = 0; i < cl->n; i++) {
        cons_fsm_close(&cl->fsms[i]);
        store_close(cl->stores[i]);
        tmpdir_remove(cl->dirs[i]);
    }
    free(cl);
}

static unsigned cluster_leader(struct cluster *cl)
{
    unsigned i;

    assert_true(raft_fixture_step_until_has_leader(&cl->f, STEP_MS));
    i = raft_fixture_leader_index(&cl->f);
    assert_true(i < cl->n);
    return i;
}

/* Propose @n reports on server @i; returns the entry index. */
static raft_index cluster_propose(struct cluster *cl,
                                  unsigned i,
                                  struct applied *a,
                                  size_t n,
                                  const char *tag)
{
    struct report reports[16];
    struct raft_buffer buf;
    size_t k;

    for (k = 0; k < n; k++) {
        char desc[64];
        snprintf(desc, sizeof desc, "%s #%zu", tag, k);
        report_init(&reports[k], desc);
    }
    buf = batch_pack(reports, n);
    memset(a, 0, sizeof *a);
    a->cl = cl;
    a->server = i;
    a->req.data = a;
    assert_int_equal(
        raft_apply(raft_fixture_get(&cl->f, i), &a->req, &buf, 1, applied_cb),
        0);
    return a->req.index;
}

static void digest_of(struct store *s, uint8_t out[STORE_DIGEST_SIZE])
{
    uint64_t applied = 0;

    assert_int_equal(store_digest(s, out, &applied), 0);
}

static void assert_same_digest(struct store *a, struct store *b)
{
    uint8_t da[STORE_DIGEST_SIZE];
    uint8_t db[STORE_DIGEST_SIZE];

    digest_of(a, da);
    digest_of(b, db);
    assert_memory_equal(da, db, STORE_DIGEST_SIZE);
}

/* Fixture tests. */

static struct raft_barrier barrier_req;
static int barrier_fired;

static void barrier_done(struct raft_barrier *req, int status)
{
    (void)req;
    assert_int_equal(status, 0);
    barrier_fired = 1;
}

/* libraft 0.15 does not hand apply() the entry index; the fsm uses
 * raft_last_applied() + 1. If that ever drifts (barrier or configuration
 * entries counted differently), the store would record the wrong index. */
static void test_apply_sees_the_entry_index_even_after_a_barrier(void **state)
{
    struct cluster *cl = cluster_new(1, 0, 0);
    struct applied a;
    raft_index index;
    unsigned leader;
    int round;

    (void)state;
    leader = cluster_leader(cl);
    for (round = 0; round < 3; round++) {
        index = cluster_propose(cl, leader, &a, 1, "pin");
        assert_true(index > 1);
        assert_true(
            raft_fixture_step_until_applied(&cl->f, leader, index, STEP_MS));
        assert_true(a.fired);
        assert_int_equal(a.status, 0);
        /* The callback ran right after apply: the store already had it. */
        assert_int_equal(a.store_index, index);
        assert_int_equal(a.result_index, index);
        assert_int_equal(store_applied_index(cl->stores[leader]), index);

        barrier_fired = 0;
        assert_int_equal(raft_barrier(raft_fixture_get(&cl->f, leader),
                                      &barrier_req, barrier_done),
                         0);
        assert_true(raft_fixture_step_until_applied(
            &cl->f, leader, barrier_req.index, STEP_MS));
        assert_true(barrier_fired);
        /* The barrier is not a command: the store is still at index. */
        assert_int_equal(store_applied_index(cl->stores[leader]), index);
    }
    assert_int_equal(store_case_count(cl->stores[leader]), 3);
    cluster_free(cl);
}

static void test_three_servers_apply_a_batch_to_identical_stores(void **state)
{
    struct cluster *cl = cluster_new(3, 0, 0);
    struct applied a;
    raft_index index;
    unsigned leader;
    unsigned i;

    (void)state;
    leader = cluster_leader(cl);
    index = cluster_propose(cl, leader, &a, 2, "batch");
    assert_true(raft_fixture_step_until_applied(&cl->f, cl->n, index, STEP_MS));
    assert_int_equal(a.status, 0);
    assert_int_equal(a.n, 2);
    assert_int_equal(a.codes[0], CITYOPS__V1__RESULT_CODE__RESULT_OK);
    assert_int_equal(a.codes[1], CITYOPS__V1__RESULT_CODE__RESULT_OK);
    assert_int_equal(a.case_ids[0], 1);
    assert_int_equal(a.case_ids[1], 2);
    for (i = 0; i < cl->n; i++) {
        assert_int_equal(store_case_count(cl->stores[i]), 2);
        assert_int_equal(store_applied_index(cl->stores[i]), index);
        assert_same_digest(cl->stores[leader], cl->stores[i]);
    }
    cluster_free(cl);
}

static void test_lagging_follower_catches_up_through_a_snapshot(void **state)
{
    struct cluster *cl = cluster_new(3, 4, 2);
    struct applied a;
    raft_index index = 0;
    unsigned leader;
    unsigned lag;
    unsigned other;
    int k;

    (void)state;
    leader = cluster_leader(cl);
    lag = (leader + 1) % cl->n;
    other = (leader + 2) % cl->n;
    raft_fixture_disconnect(&cl->f, leader, lag);
    raft_fixture_disconnect(&cl->f, lag, leader);
    raft_fixture_disconnect(&cl->f, other, lag);
    raft_fixture_disconnect(&cl->f, lag, other);
    for (k = 0; k < 12; k++) {
        char tag[16];
        snprintf(tag, sizeof tag, "lag%d", k);
        index = cluster_propose(cl, leader, &a, 1, tag);
        assert_true(
            raft_fixture_step_until_applied(&cl->f, leader, index, STEP_MS));
        assert_true(
            raft_fixture_step_until_applied(&cl->f, other, index, STEP_MS));
        assert_int_equal(a.status, 0);
    }
    assert_int_equal(store_case_count(cl->stores[lag]), 0);
    /* The leader's log no longer holds the lagging follower's next entry. */
    assert_true(cl->f.servers[leader].raft.log.offset > 1);

    raft_fixture_reconnect(&cl->f, leader, lag);
    raft_fixture_reconnect(&cl->f, lag, leader);
    raft_fixture_reconnect(&cl->f, other, lag);
    raft_fixture_reconnect(&cl->f, lag, other);
    assert_true(raft_fixture_step_until_applied(&cl->f, lag, index, STEP_MS));
    assert_true(raft_fixture_n_recv(&cl->f, lag, RAFT_IO_INSTALL_SNAPSHOT) >=
                1);
    assert_int_equal(store_case_count(cl->stores[lag]), 12);
    assert_int_equal(store_applied_index(cl->stores[lag]), index);
    assert_same_digest(cl->stores[leader], cl->stores[lag]);
    assert_same_digest(cl->stores[other], cl->stores[lag]);
    cluster_free(cl);
}

static void test_new_leader_after_a_kill_keeps_applied_entries(void **state)
{
    struct cluster *cl = cluster_new(3, 0, 0);
    struct applied a;
    raft_index index;
    unsigned leader;
    unsigned next;
    unsigned a1;
    unsigned a2;

    (void)state;
    leader = cluster_leader(cl);
    index = cluster_propose(cl, leader, &a, 2, "before");
    assert_true(raft_fixture_step_until_applied(&cl->f, cl->n, index, STEP_MS));

    raft_fixture_kill(&cl->f, leader);
    assert_true(raft_fixture_step_until_has_no_leader(&cl->f, STEP_MS));
    next = cluster_leader(cl);
    assert_int_not_equal(next, leader);
    a1 = (leader + 1) % cl->n;
    a2 = (leader + 2) % cl->n;

    index = cluster_propose(cl, next, &a, 1, "after");
    assert_true(raft_fixture_step_until_applied(&cl->f, a1, index, STEP_MS));
    assert_true(raft_fixture_step_until_applied(&cl->f, a2, index, STEP_MS));
    assert_int_equal(a.status, 0);
    assert_int_equal(a.case_ids[0], 3);
    assert_int_equal(store_case_count(cl->stores[a1]), 3);
    assert_int_equal(store_case_count(cl->stores[a2]), 3);
    assert_same_digest(cl->stores[a1], cl->stores[a2]);
    assert_int_equal(store_case_count(cl->stores[leader]), 2);
    cluster_free(cl);
}

/* The real loop on 127.0.0.1. */

static uint16_t free_port(void)
{
    struct sockaddr_in addr;
    socklen_t len = sizeof addr;
    int fd = socket(AF_INET, SOCK_STREAM, 0);

    assert_true(fd >= 0);
    memset(&addr, 0, sizeof addr);
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(fd, (struct sockaddr *)&addr, sizeof addr), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&addr, &len), 0);
    close(fd);
    return ntohs(addr.sin_port);
}

struct waiter {
    pthread_mutex_t mutex;
    pthread_cond_t cond;
    int done;
    int rv;
    int code;
    uint64_t case_id;
    uint64_t leader_id;
    char description[64];
};

static void waiter_init(struct waiter *w)
{
    memset(w, 0, sizeof *w);
    pthread_mutex_init(&w->mutex, NULL);
    pthread_cond_init(&w->cond, NULL);
}

static void waiter_close(struct waiter *w)
{
    pthread_cond_destroy(&w->cond);
    pthread_mutex_destroy(&w->mutex);
}

static void waiter_submit_cb(void *arg,
                             int rv,
                             const Cityops__V1__CommandResult *result,
                             uint64_t leader_id)
{
    struct waiter *w = arg;

    pthread_mutex_lock(&w->mutex);
    w->rv = rv;
    w->leader_id = leader_id;
    if (rv == 0 && result != NULL) {
        w->code = result->code;
        if (result->case_ != NULL) {
            w->case_id = result->case_->case_id;
            snprintf(w->description, sizeof w->description, "%s",
                     result->case_->description);
        }
    }
    w->done++;
    pthread_cond_signal(&w->cond);
    pthread_mutex_unlock(&w->mutex);
}

static void waiter_barrier_cb(void *arg, int rv, uint64_t leader_id)
{
    waiter_submit_cb(arg, rv, NULL, leader_id);
}

/* Wait up to 10 s for the callback; returns how many times it ran. */
static int waiter_wait(struct waiter *w)
{
    struct timespec deadline;
    int done;

    clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_sec += 10;
    pthread_mutex_lock(&w->mutex);
    while (w->done == 0) {
        if (pthread_cond_timedwait(&w->cond, &w->mutex, &deadline) != 0) {
            break;
        }
    }
    done = w->done;
    pthread_mutex_unlock(&w->mutex);
    return done;
}

struct node {
    char *raft_dir;
    char *store_dir;
    char address[CONS_ADDRESS_SIZE];
    struct cons_member members[2];
    struct cons_config cfg;
    struct store *store;
};

static void node_init(struct node *n, size_t n_members)
{
    memset(n, 0, sizeof *n);
    n->raft_dir = tmpdir_make("raft");
    n->store_dir = tmpdir_make("store");
    assert_int_equal(store_open(n->store_dir, NULL, &n->store), 0);
    snprintf(n->address, sizeof n->address, "127.0.0.1:%u", free_port());
    n->members[0].id = 1;
    snprintf(n->members[0].raft_address, CONS_ADDRESS_SIZE, "%s", n->address);
    n->members[0].role = CONS_VOTER;
    /* A second voter that never starts: no quorum, no leader. */
    n->members[1].id = 2;
    snprintf(n->members[1].raft_address, CONS_ADDRESS_SIZE, "127.0.0.1:%u",
             free_port());
    n->members[1].role = CONS_VOTER;
    n->cfg.id = 1;
    n->cfg.raft_address = n->address;
    n->cfg.dir = n->raft_dir;
    n->cfg.members = n->members;
    n->cfg.n_members = n_members;
    n->cfg.heartbeat_ms = 50;
    n->cfg.election_ms = 200;
    n->cfg.max_batch = 2;
    n->cfg.store = n->store;
}

static void node_close(struct node *n)
{
    store_close(n->store);
    tmpdir_remove(n->raft_dir);
    tmpdir_remove(n->store_dir);
}

static void test_submit_on_a_single_node_then_restart_applies_once(void **state)
{
    struct node n;
    struct cons *c = NULL;
    struct report r;
    struct waiter w;
    struct cons_status st;
    uint64_t applied;

    (void)state;
    node_init(&n, 1);
    assert_int_equal(cons_start(&n.cfg, &c), 0);
    report_init(&r, "pothole on Jianguo Road");
    r.cmd.time = 0;
    waiter_init(&w);
    assert_int_equal(cons_submit(c, &r.cmd, 5000, waiter_submit_cb, &w), 0);
    assert_int_equal(waiter_wait(&w), 1);
    assert_int_equal(w.rv, 0);
    assert_int_equal(w.code, CITYOPS__V1__RESULT_CODE__RESULT_OK);
    assert_int_equal(w.case_id, 1);
    assert_true(r.cmd.time > 1700000000000000 + 1000000000);
    assert_true(r.cmd.time >= store_last_time(n.store)); /* leader's stamp */
    waiter_close(&w);
    cons_status_get(c, &st);
    assert_int_equal(st.state, CONS_STATE_LEADER);
    assert_int_equal(st.leader_id, 1);
    assert_int_equal(st.n_members, 1);
    assert_int_equal(st.members[0].id, 1);
    cons_stop(c);
    applied = store_applied_index(n.store);
    assert_true(applied >= 3); /* configuration, leader barrier, batch */
    assert_int_equal(store_case_count(n.store), 1);

    /* Restart on the same directories: the log replays, the store skips. */
    assert_int_equal(cons_start(&n.cfg, &c), 0);
    waiter_init(&w);
    assert_int_equal(cons_barrier(c, 5000, waiter_barrier_cb, &w), 0);
    assert_int_equal(waiter_wait(&w), 1);
    assert_int_equal(w.rv, 0);
    waiter_close(&w);
    cons_status_get(c, &st);
    assert_true(st.applied_index > applied); /* only barrier entries added */
    assert_int_equal(store_case_count(n.store), 1);
    assert_int_equal(store_applied_index(n.store), applied);

    report_init(&r, "second report after restart");
    waiter_init(&w);
    assert_int_equal(cons_submit(c, &r.cmd, 5000, waiter_submit_cb, &w), 0);
    assert_int_equal(waiter_wait(&w), 1);
    assert_int_equal(w.rv, 0);
    assert_int_equal(w.case_id, 2);
    waiter_close(&w);
    cons_stop(c);
    node_close(&n);
}

static void
submit_and_wait(struct cons *c, const char *description, uint64_t want_case_id)
{
    struct report r;
    struct waiter w;

    report_init(&r, description);
    waiter_init(&w);
    assert_int_equal(cons_submit(c, &r.cmd, 5000, waiter_submit_cb, &w), 0);
    assert_int_equal(waiter_wait(&w), 1);
    assert_int_equal(w.rv, 0);
    assert_int_equal(w.code, CITYOPS__V1__RESULT_CODE__RESULT_OK);
    assert_int_equal(w.case_id, want_case_id);
    waiter_close(&w);
}

/* With a tiny snapshot threshold the uv log takes snapshots through our
 * fsm and, at the next start, hands the newest one to restore(), which must
 * keep the (newer) local state and free the buffer. */
static void test_restart_after_snapshots_keeps_local_state(void **state)
{
    struct node n;
    struct cons *c = NULL;
    struct waiter w;
    uint64_t applied;
    uint64_t k;

    (void)state;
    node_init(&n, 1);
    n.cfg.snapshot_threshold = 2;
    n.cfg.snapshot_trailing = 1;
    assert_int_equal(cons_start(&n.cfg, &c), 0);
    for (k = 1; k <= 6; k++) {
        submit_and_wait(c, "snapshot me", k);
    }
    cons_stop(c);
    applied = store_applied_index(n.store);

    assert_int_equal(cons_start(&n.cfg, &c), 0);
    waiter_init(&w);
    assert_int_equal(cons_barrier(c, 5000, waiter_barrier_cb, &w), 0);
    assert_int_equal(waiter_wait(&w), 1);
    assert_int_equal(w.rv, 0);
    waiter_close(&w);
    assert_int_equal(store_case_count(n.store), 6);
    assert_int_equal(store_applied_index(n.store), applied);
    submit_and_wait(c, "after the snapshot", 7);
    cons_stop(c);
    node_close(&n);
}

static void test_concurrent_submits_get_their_own_results(void **state)
{
    struct node n;
    struct cons *c = NULL;
    struct report r[5];
    struct waiter w[5];
    int64_t last_time = 0;
    int i;

    (void)state;
    node_init(&n, 1);
    assert_int_equal(cons_start(&n.cfg, &c), 0);
    for (i = 0; i < 5; i++) {
        char desc[32];
        snprintf(desc, sizeof desc, "report %d", i);
        report_init(&r[i], desc);
        waiter_init(&w[i]);
        assert_int_equal(
            cons_submit(c, &r[i].cmd, 5000, waiter_submit_cb, &w[i]), 0);
    }
    for (i = 0; i < 5; i++) {
        char desc[32];
        snprintf(desc, sizeof desc, "report %d", i);
        assert_int_equal(waiter_wait(&w[i]), 1);
        assert_int_equal(w[i].rv, 0);
        assert_int_equal(w[i].code, CITYOPS__V1__RESULT_CODE__RESULT_OK);
        assert_string_equal(w[i].description, desc);
        assert_true(r[i].cmd.time > last_time);
        last_time = r[i].cmd.time;
        waiter_close(&w[i]);
    }
    assert_int_equal(store_case_count(n.store), 5);
    cons_stop(c);
    node_close(&n);
}

static void test_submit_without_quorum_gets_noleader_then_shutdown(void **state)
{
    struct node n;
    struct cons *c = NULL;
    struct report r;
    struct waiter w;
    struct waiter parked;

    (void)state;
    node_init(&n, 2);
    assert_int_equal(cons_start(&n.cfg, &c), 0);
    report_init(&r, "nobody leads");
    waiter_init(&w);
    assert_int_equal(cons_submit(c, &r.cmd, 300, waiter_submit_cb, &w), 0);
    assert_int_equal(waiter_wait(&w), 1);
    assert_int_equal(w.rv, CONS_NOLEADER);
    waiter_close(&w);

    waiter_init(&parked);
    assert_int_equal(cons_submit(c, &r.cmd, 60000, waiter_submit_cb, &parked),
                     0);
    cons_stop(c);
    assert_int_equal(parked.done, 1);
    assert_int_equal(parked.rv, CONS_SHUTDOWN);
    waiter_close(&parked);
    assert_int_equal(store_case_count(n.store), 0);
    node_close(&n);
}

static void test_start_fails_with_ioerr_when_the_address_is_taken(void **state)
{
    struct node n;
    struct cons *c = NULL;
    struct cons *c2 = NULL;
    struct node n2;

    (void)state;
    node_init(&n, 1);
    assert_int_equal(cons_start(&n.cfg, &c), 0);
    node_init(&n2, 1);
    n2.cfg.raft_address = n.address; /* same port, other log directory */
    assert_int_equal(cons_start(&n2.cfg, &c2), CONS_IOERR);
    cons_stop(c);
    node_close(&n2);
    node_close(&n);
}

static void test_submit_refuses_a_command_larger_than_an_entry(void **state)
{
    struct node n;
    struct cons *c = NULL;
    struct report r;
    struct waiter w;
    size_t size = (size_t)5 * 1024 * 1024;
    char *big = malloc(size);

    (void)state;
    assert_non_null(big);
    memset(big, 'x', size - 1);
    big[size - 1] = '\0';
    node_init(&n, 1);
    assert_int_equal(cons_start(&n.cfg, &c), 0);
    report_init(&r, "big");
    r.req.description = big;
    waiter_init(&w);
    assert_int_equal(cons_submit(c, &r.cmd, 5000, waiter_submit_cb, &w),
                     CONS_TOOBIG);
    assert_int_equal(w.done, 0);
    waiter_close(&w);
    assert_string_equal(cons_strerror(CONS_TOOBIG), "command too large");
    cons_stop(c);
    node_close(&n);
    free(big);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_apply_sees_the_entry_index_even_after_a_barrier),
        cmocka_unit_test(test_three_servers_apply_a_batch_to_identical_stores),
        cmocka_unit_test(test_lagging_follower_catches_up_through_a_snapshot),
        cmocka_unit_test(test_new_leader_after_a_kill_keeps_applied_entries),
        cmocka_unit_test(
            test_submit_on_a_single_node_then_restart_applies_once),
        cmocka_unit_test(test_restart_after_snapshots_keeps_local_state),
        cmocka_unit_test(test_concurrent_submits_get_their_own_results),
        cmocka_unit_test(
            test_submit_without_quorum_gets_noleader_then_shutdown),
        cmocka_unit_test(test_start_fails_with_ioerr_when_the_address_is_taken),
        cmocka_unit_test(test_submit_refuses_a_command_larger_than_an_entry),
    };

    clog_set_level(CLOG_WARN);
    if (getenv("CONS_TEST_FILTER") != NULL) {
        cmocka_set_test_filter(getenv("CONS_TEST_FILTER"));
    }
    if (getenv("CONS_TEST_VERBOSE") != NULL) {
        clog_set_level(CLOG_DEBUG);
    }
    return cmocka_run_group_tests(tests, NULL, NULL);
}
