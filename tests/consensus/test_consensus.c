/* Unit tests of consensus/: the fsm over real LMDB stores in a deterministic
 * raft fixture cluster (no real time, no network), and the real loop
 * (cons_start on 127.0.0.1) for start, submit, stop and restart. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/aio_abi.h>
#include <linux/fiemap.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <dirent.h>
#include <ftw.h>
#include <netinet/in.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>
#include <raft.h>
#include <raft/fixture.h>

#include "consensus/cons.h"
#include "consensus/cons_internal.h"
#include "proto/clog.h"
#include "proto/netport.h"
#include "storage/store.h"

#define MAX_SERVERS 4
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

/* @n servers, the first @n_voters bootstrapped as voters; the others start
 * with an empty log (they join). */
static struct cluster *cluster_new_ext(unsigned n,
                                       unsigned n_voters,
                                       unsigned threshold,
                                       unsigned trailing,
                                       size_t map_size)
{
    struct cluster *cl = calloc(1, sizeof *cl);
    struct store_options opts = {.map_size = map_size};
    struct raft_configuration conf;
    unsigned i;

    assert_non_null(cl);
    cl->n = n;
    assert_int_equal(raft_fixture_initialize(&cl->f), 0);
    for (i = 0; i < n; i++) {
        cl->dirs[i] = tmpdir_make("fixture");
        assert_int_equal(store_open(cl->dirs[i], map_size > 0 ? &opts : NULL,
                                    &cl->stores[i]),
                         0);
        assert_int_equal(
            cons_fsm_init(&cl->fsms[i], &cl->f.servers[i].raft, cl->stores[i]),
            0);
        assert_int_equal(raft_fixture_grow(&cl->f, &cl->fsms[i]), 0);
    }
    /* raft_fixture_configuration() would list every server (the extra ones
     * as standbys): the joiners must not be in it. */
    raft_configuration_init(&conf);
    for (i = 0; i < n_voters; i++) {
        assert_int_equal(raft_configuration_add(&conf, cl->f.servers[i].id,
                                                cl->f.servers[i].address,
                                                RAFT_VOTER),
                         0);
    }
    for (i = 0; i < n_voters; i++) {
        assert_int_equal(
            raft_bootstrap(raft_fixture_get(&cl->f, i), &conf), 0);
    }
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

static struct cluster *
cluster_new(unsigned n, unsigned threshold, unsigned trailing)
{
    return cluster_new_ext(n, n, threshold, trailing, 0);
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

/* With deferral (cons_fsm_set_deferred) a follower's apply() only queues
 * the entry: libraft counts it applied, the store has it after
 * cons_fsm_drain(), and a snapshot drains first so that it never stands
 * for entries the store lacks. The leader applies at once (its callbacks
 * need the results). The fixture has no loop turn, so the test drains. */
static void test_followers_apply_after_answering(void **state)
{
    struct cluster *cl = cluster_new(3, 4, 2);
    struct applied a;
    raft_index index;
    unsigned leader;
    unsigned i;
    int k;

    (void)state;
    for (i = 0; i < cl->n; i++) {
        cons_fsm_set_deferred(&cl->fsms[i]);
    }
    leader = cluster_leader(cl);
    index = cluster_propose(cl, leader, &a, 2, "deferred");
    assert_true(raft_fixture_step_until_applied(&cl->f, cl->n, index, STEP_MS));
    assert_int_equal(a.status, 0);
    assert_int_equal(a.n, 2);
    assert_int_equal(a.store_index, index); /* the leader applied in place */
    for (i = 0; i < cl->n; i++) {
        struct cons_fsm *f = cl->fsms[i].data;

        if (i == leader) {
            assert_int_equal(f->deferred, 0);
            continue;
        }
        assert_true(f->deferred >= 1);
        assert_int_equal(store_case_count(cl->stores[i]), 0);
        assert_int_equal(cons_fsm_drain(&cl->fsms[i]), 0);
        assert_int_equal(store_case_count(cl->stores[i]), 2);
        assert_int_equal(store_applied_index(cl->stores[i]), index);
        assert_same_digest(cl->stores[leader], cl->stores[i]);
    }

    /* Past the snapshot threshold, without draining: every snapshot a
     * follower takes finds the store at its index. */
    for (k = 0; k < 9; k++) {
        char tag[16];

        snprintf(tag, sizeof tag, "snap%d", k);
        index = cluster_propose(cl, leader, &a, 1, tag);
        assert_true(
            raft_fixture_step_until_applied(&cl->f, cl->n, index, STEP_MS));
        for (i = 0; i < cl->n; i++) {
            struct raft *r = raft_fixture_get(&cl->f, i);

            assert_true(store_applied_index(cl->stores[i]) >=
                        r->log.snapshot.last_index);
        }
    }
    for (i = 0; i < cl->n; i++) {
        struct raft *r = raft_fixture_get(&cl->f, i);

        if (i != leader) {
            assert_true(r->log.snapshot.last_index > 0);
        }
        assert_int_equal(cons_fsm_drain(&cl->fsms[i]), 0);
        assert_int_equal(store_case_count(cl->stores[i]), 11);
        assert_same_digest(cl->stores[leader], cl->stores[i]);
    }
    cluster_free(cl);
}

/* A store with the content of @tiny and room to grow (in a new temporary
 * directory, returned in *dir). */
static struct store *store_with_room(struct store *tiny, char **dir)
{
    struct store *roomy;
    void *snap;
    size_t len;
    int replaced = 0;

    *dir = tmpdir_make("roomy");
    assert_int_equal(store_open(*dir, NULL, &roomy), 0);
    assert_int_equal(store_snapshot(tiny, &snap, &len), 0);
    assert_int_equal(store_restore(roomy, snap, len, &replaced), 0);
    free(snap);
    return roomy;
}

/* A kept entry the store refuses stays first in line: libraft has counted
 * it applied and will not hand it over again, so a later drain applies it,
 * in order, once the store has room. */
static void test_a_refused_kept_entry_applies_once_there_is_room(void **state)
{
    struct cluster *cl = cluster_new_ext(3, 3, 0, 0, 0);
    struct store_options small = {.map_size = 256 * 1024};
    struct store *tiny, *roomy;
    char *tiny_dir, *roomy_dir;
    struct cons_fsm *f;
    struct applied a;
    raft_index index = 0;
    unsigned leader, follower;
    int k;

    (void)state;
    leader = cluster_leader(cl);
    follower = (leader + 1) % 3;
    cons_fsm_set_deferred(&cl->fsms[follower]);
    f = cl->fsms[follower].data;
    tiny_dir = tmpdir_make("tiny");
    assert_int_equal(store_open(tiny_dir, &small, &tiny), 0);
    f->store = tiny;
    for (k = 0; k < 2000 && !f->store_failed; k++) {
        index = cluster_propose(cl, leader, &a, 16, "fill the map");
        assert_true(
            raft_fixture_step_until_applied(&cl->f, follower, index, STEP_MS));
        (void)cons_fsm_drain(&cl->fsms[follower]);
    }
    assert_true(f->store_failed);
    assert_non_null(f->deferred_head);
    assert_true(raft_last_applied(raft_fixture_get(&cl->f, follower)) >=
                f->deferred_head->index);
    assert_int_not_equal(cons_fsm_drain(&cl->fsms[follower]), 0);
    assert_true(f->store_failed);

    /* Room again: same content, bigger map; the drain catches up. */
    roomy = store_with_room(tiny, &roomy_dir);
    f->store = roomy;
    assert_int_equal(cons_fsm_drain(&cl->fsms[follower]), 0);
    assert_false(f->store_failed);
    assert_null(f->deferred_head);
    assert_int_equal(store_applied_index(roomy), index);
    assert_same_digest(cl->stores[leader], roomy);

    f->store = cl->stores[follower];
    store_close(tiny);
    store_close(roomy);
    tmpdir_remove(tiny_dir);
    tmpdir_remove(roomy_dir);
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

/* The log budget's bookkeeping: sizes by index, barrier entries (never
 * seen by apply) as empty, a retried entry counted once, the trailing
 * window cut where its bytes pass half the budget and never below one. */
static void test_log_budget_counts_bytes_by_index(void **state)
{
    struct cons_logbudget b;
    uint64_t i;

    (void)state;
    assert_int_equal(cons_logbudget_init(&b, 1000, 100), 0);
    for (i = 1; i <= 10; i++) {
        cons_logbudget_note(&b, i, 100);
        assert_int_equal(cons_logbudget_due(&b), i >= 5);
    }
    assert_int_equal(b.since, 1000);
    assert_int_equal(cons_logbudget_trailing(&b, 10), 5);

    cons_logbudget_note(&b, 13, 100); /* 11 and 12: barriers */
    assert_int_equal(cons_logbudget_trailing(&b, 13), 7);
    cons_logbudget_note(&b, 13, 300); /* applied again after a failure */
    assert_int_equal(b.since, 1300);
    assert_int_equal(cons_logbudget_trailing(&b, 13), 5);

    cons_logbudget_taken(&b, 13);
    assert_int_equal(b.since, 0);
    assert_false(cons_logbudget_due(&b));
    cons_logbudget_note(&b, 14, 600);
    assert_true(cons_logbudget_due(&b));
    assert_int_equal(cons_logbudget_trailing(&b, 15), 1); /* 15: a barrier */
    assert_int_equal(cons_logbudget_trailing(&b, 14), 1); /* one too big */

    /* After an installed snapshot the sizes start again; below the budget
     * down to the oldest one known, the entry count decides. */
    cons_logbudget_reset(&b, 20);
    cons_logbudget_note(&b, 21, 50);
    assert_int_equal(b.since, 50);
    assert_int_equal(cons_logbudget_trailing(&b, 21), 100);
    /* More entries than the ring holds: only the newest are known. */
    for (i = 22; i < 22 + CONS_LOGBUDGET_RING + 10; i++) {
        cons_logbudget_note(&b, i, 0);
    }
    assert_int_equal(b.hi - b.lo + 1, CONS_LOGBUDGET_RING);
    assert_int_equal(cons_logbudget_trailing(&b, b.hi), 100);
    cons_logbudget_close(&b);

    /* At a start, the entries libraft loaded: behind the restored snapshot
     * (index 3) they are kept bytes, after it applied-since bytes; barrier
     * and configuration entries count as empty. */
    {
        static struct raft r;
        struct raft_entry entries[8];
        unsigned k;

        /* libraft's ring: slots 3..7 then 0 hold indexes 2..7. */
        static const size_t slot_len[8] = {600, 0, 0, 100, 200, 300, 400, 500};

        memset(entries, 0, sizeof entries);
        for (k = 0; k < 8; k++) {
            entries[k].type = k == 4 ? RAFT_BARRIER : RAFT_COMMAND;
            entries[k].buf.len = slot_len[k];
        }
        r.log.entries = entries;
        r.log.size = 8;
        r.log.front = 3;
        r.log.back = 1;
        r.log.offset = 1; /* the first entry is index 2 */
        assert_int_equal(cons_logbudget_init(&b, 1000, 100), 0);
        cons_logbudget_reset(&b, 3);
        cons_logbudget_seed(&b, &r);
        /* index 2: 100, 3: barrier, 4: 300, 5: 400, 6: 500, 7: 600 */
        assert_int_equal(b.lo, 2);
        assert_int_equal(b.hi, 7);
        assert_int_equal(b.kept, 100);
        assert_int_equal(b.since, 1800);
        assert_int_equal(cons_logbudget_bytes(&b), 1900);
        assert_int_equal(cons_logbudget_trailing(&b, 7), 1); /* 600 > 500 */
        /* Within the budget down to the first entry: the count decides. */
        assert_int_equal(cons_logbudget_trailing(&b, 3), 100);
        /* Seeding again (or after applies) changes nothing. */
        cons_logbudget_seed(&b, &r);
        assert_int_equal(b.since, 1800);
        assert_int_equal(b.kept, 100);
        assert_int_equal(b.hi, 7);
        cons_logbudget_close(&b);
    }

    assert_int_equal(cons_logbudget_init(&b, 0, 100), 0); /* no budget */
    cons_logbudget_note(&b, 1, 1u << 30);
    assert_false(cons_logbudget_due(&b));
    assert_int_equal(cons_logbudget_trailing(&b, 1), 100);
    cons_logbudget_close(&b);
}

/* Bytes of the entries in @r's in-memory log. */
static size_t log_bytes(const struct raft *r)
{
    const struct raft_log *l = &r->log;
    size_t n = l->back >= l->front ? l->back - l->front
                                   : l->size - l->front + l->back;
    size_t bytes = 0;
    size_t k;

    for (k = 0; k < n; k++) {
        bytes += l->entries[(l->front + k) % l->size].buf.len;
    }
    return bytes;
}

/* 100 entries of 16 Reports each (about 1.7 KB) under entry limits that
 * never bind: with a 24 KB budget every node snapshots by bytes and keeps at
 * most the budget in memory; without one nothing is trimmed. Then 40
 * entries of one Report (about 5 KB in all): with the threshold put back
 * after each budget snapshot they take at most one more. The stores agree
 * either way. */
static void log_budget_run(uint64_t budget,
                           uint64_t *snapshot_index,
                           size_t *largest_log,
                           unsigned *small_snapshots)
{
    struct cluster *cl = cluster_new(3, 100000, 100000);
    struct applied a;
    raft_index index = 0;
    unsigned leader;
    unsigned i;
    int k;

    for (i = 0; i < cl->n; i++) {
        assert_int_equal(
            cons_fsm_set_log_budget(&cl->fsms[i], budget, 100000), 0);
    }
    leader = cluster_leader(cl);
    *largest_log = 0;
    for (k = 0; k < 100; k++) {
        char tag[16];

        snprintf(tag, sizeof tag, "budget%d", k);
        index = cluster_propose(cl, leader, &a, 16, tag);
        for (i = 0; i < cl->n; i++) {
            size_t bytes;

            assert_true(
                raft_fixture_step_until_applied(&cl->f, i, index, STEP_MS));
            bytes = log_bytes(raft_fixture_get(&cl->f, i));
            if (bytes > *largest_log) {
                *largest_log = bytes;
            }
        }
        assert_int_equal(a.status, 0);
    }
    *snapshot_index = cl->f.servers[leader].raft.log.snapshot.last_index;
    if (budget > 0) {
        /* What cityctl cluster status shows: the command entries' bytes. */
        const struct cons_fsm *f = cl->fsms[leader].data;
        uint64_t shown = cons_logbudget_bytes(&f->budget);
        size_t held = log_bytes(raft_fixture_get(&cl->f, leader));

        assert_true(shown > 0 && shown <= held && held - shown <= 1024);
    }
    *small_snapshots = 0;
    for (k = 0; k < 40; k++) {
        raft_index before = cl->f.servers[leader].raft.log.snapshot.last_index;

        index = cluster_propose(cl, leader, &a, 1, "small");
        assert_true(
            raft_fixture_step_until_applied(&cl->f, cl->n, index, STEP_MS));
        *small_snapshots +=
            cl->f.servers[leader].raft.log.snapshot.last_index != before;
    }
    for (i = 0; i < cl->n; i++) {
        assert_int_equal(store_case_count(cl->stores[i]), 100 * 16 + 40);
        assert_same_digest(cl->stores[leader], cl->stores[i]);
    }
    cluster_free(cl);
}

static void test_log_budget_bounds_the_log_in_bytes(void **state)
{
    uint64_t snapshot_index;
    size_t largest;
    unsigned small;

    (void)state;
    log_budget_run(0, &snapshot_index, &largest, &small);
    assert_int_equal(snapshot_index, 0);
    assert_true(largest > 6 * 24 * 1024);
    assert_int_equal(small, 0);

    log_budget_run(24 * 1024, &snapshot_index, &largest, &small);
    assert_true(snapshot_index > 80);
    assert_true(small <= 1);
    /* Half since the last snapshot, half behind it, and the entry that
     * crossed the line. */
    assert_true(largest <= 24 * 1024 + 4096);
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

/* Membership changes through change.c on the fixture. */

struct change_wait {
    struct cons_change *ch;
    int done;
    int rv;
    uint64_t id;
};

static void change_wait_cb(void *data, int rv, uint64_t id)
{
    struct change_wait *w = data;

    w->done++;
    w->rv = rv;
    w->id = id;
}

static bool change_stop(struct raft_fixture *f, void *arg)
{
    struct change_wait *w = arg;

    (void)f;
    cons_change_tick(w->ch, 0);
    return w->done > 0;
}

/* Start a change on the leader's engine and step until it completes;
 * returns its rv (the callback must have run exactly once). */
static int change_run(struct cluster *cl,
                      struct cons_change *ch,
                      enum cons_change_kind kind,
                      uint64_t id,
                      enum cons_member_role role,
                      struct change_wait *w)
{
    struct cons_change_args args;
    char address[16];
    int rv;

    snprintf(address, sizeof address, "%llu", (unsigned long long)id);
    memset(&args, 0, sizeof args);
    args.kind = kind;
    args.id = id;
    args.address = address;
    args.role = role;
    memset(w, 0, sizeof *w);
    w->ch = ch;
    rv = cons_change_start(ch, &args, change_wait_cb, w);
    if (rv != 0) {
        assert_int_equal(w->done, 0);
        return rv;
    }
    assert_true(raft_fixture_step_until(&cl->f, change_stop, w, STEP_MS));
    raft_fixture_step_n(&cl->f, 10);
    cons_change_tick(ch, 0);
    assert_int_equal(w->done, 1);
    return w->rv;
}

static int role_of(struct raft *r, raft_id id)
{
    unsigned i;

    for (i = 0; i < r->configuration.n; i++) {
        if (r->configuration.servers[i].id == id) {
            return r->configuration.servers[i].role;
        }
    }
    return -1;
}

/* Propose @n entries and wait until servers 0..@upto-1 applied them. */
static void
propose_n(struct cluster *cl, unsigned leader, int n, unsigned upto)
{
    struct applied a;
    raft_index index = 0;
    unsigned i;
    int k;

    for (k = 0; k < n; k++) {
        index = cluster_propose(cl, leader, &a, 1, "member");
        for (i = 0; i < upto; i++) {
            assert_true(
                raft_fixture_step_until_applied(&cl->f, i, index, STEP_MS));
        }
        assert_int_equal(a.status, 0);
    }
}

static void test_added_voter_catches_up_through_a_snapshot(void **state)
{
    struct cluster *cl = cluster_new_ext(4, 3, 4, 2, 0);
    struct cons_change ch;
    struct change_wait w;
    struct raft *r;
    struct applied a;
    raft_index index;
    unsigned leader;

    (void)state;
    leader = cluster_leader(cl);
    propose_n(cl, leader, 12, 3); /* 3: every bootstrapped server */
    r = raft_fixture_get(&cl->f, leader);
    assert_true(r->log.offset > 1); /* the new member needs a snapshot */
    assert_int_equal(store_case_count(cl->stores[3]), 0);

    cons_change_init(&ch, r);
    assert_int_equal(change_run(cl, &ch, CONS_CHANGE_ADD, 4, CONS_VOTER, &w),
                     0);
    assert_int_equal(role_of(r, 4), RAFT_VOTER);
    assert_true(raft_fixture_n_recv(&cl->f, 3, RAFT_IO_INSTALL_SNAPSHOT) >= 1);

    index = cluster_propose(cl, leader, &a, 1, "after add");
    assert_true(raft_fixture_step_until_applied(&cl->f, 3, index, STEP_MS));
    assert_int_equal(store_case_count(cl->stores[3]), 13);
    assert_same_digest(cl->stores[leader], cl->stores[3]);
    assert_false(cons_change_busy(&ch));
    cluster_free(cl);
}

static void test_added_standby_replicates_and_never_votes(void **state)
{
    struct cluster *cl = cluster_new_ext(4, 3, 0, 0, 0);
    struct cons_change ch;
    struct change_wait w;
    struct raft *r;
    struct applied a;
    raft_index index;
    unsigned leader;

    (void)state;
    leader = cluster_leader(cl);
    propose_n(cl, leader, 2, 3);
    r = raft_fixture_get(&cl->f, leader);
    cons_change_init(&ch, r);
    assert_int_equal(
        change_run(cl, &ch, CONS_CHANGE_ADD, 4, CONS_STANDBY, &w), 0);
    assert_int_equal(role_of(r, 4), RAFT_STANDBY);
    index = cluster_propose(cl, leader, &a, 1, "to the standby");
    assert_true(raft_fixture_step_until_applied(&cl->f, 3, index, STEP_MS));
    assert_same_digest(cl->stores[leader], cl->stores[3]);
    cluster_free(cl);
}

static void test_second_change_gets_cantchange_while_one_is_in_flight(
    void **state)
{
    struct cluster *cl = cluster_new_ext(4, 3, 0, 0, 0);
    struct cons_change ch;
    struct cons_change other;
    struct cons_change_args args;
    struct change_wait w;
    struct change_wait w2;
    struct raft *r;
    unsigned leader;

    (void)state;
    leader = cluster_leader(cl);
    r = raft_fixture_get(&cl->f, leader);
    cons_change_init(&ch, r);
    cons_change_init(&other, r);
    memset(&w, 0, sizeof w);
    memset(&w2, 0, sizeof w2);
    w.ch = &ch;
    memset(&args, 0, sizeof args);
    args.kind = CONS_CHANGE_ADD;
    args.id = 4;
    args.address = "4";
    args.role = CONS_VOTER;
    assert_int_equal(cons_change_start(&ch, &args, change_wait_cb, &w), 0);
    /* Same engine: busy. */
    args.kind = CONS_CHANGE_REMOVE;
    args.id = (leader + 1) % 3 + 1;
    assert_int_equal(cons_change_start(&ch, &args, change_wait_cb, &w2),
                     CONS_CANTCHANGE);
    /* Another engine on the same raft: libraft's own rule. */
    assert_int_equal(cons_change_start(&other, &args, change_wait_cb, &w2),
                     CONS_CANTCHANGE);
    assert_true(raft_fixture_step_until(&cl->f, change_stop, &w, STEP_MS));
    assert_int_equal(w.rv, 0);
    assert_int_equal(w2.done, 0);
    cluster_free(cl);
}

static void test_change_checks_ids_and_addresses_first(void **state)
{
    struct cluster *cl = cluster_new_ext(3, 3, 0, 0, 0);
    struct cons_change ch;
    struct cons_change_args args;
    struct change_wait w;
    struct raft *r;
    unsigned leader;
    unsigned follower;

    (void)state;
    leader = cluster_leader(cl);
    follower = (leader + 1) % 3;
    r = raft_fixture_get(&cl->f, leader);
    cons_change_init(&ch, r);
    memset(&w, 0, sizeof w);
    memset(&args, 0, sizeof args);
    args.kind = CONS_CHANGE_ADD;
    args.id = 2; /* taken */
    args.address = "9";
    args.role = CONS_VOTER;
    assert_int_equal(cons_change_start(&ch, &args, change_wait_cb, &w),
                     CONS_EXISTS);
    args.id = 9;
    args.address = "2"; /* server 2's address */
    assert_int_equal(cons_change_start(&ch, &args, change_wait_cb, &w),
                     CONS_EXISTS);
    args.kind = CONS_CHANGE_ASSIGN;
    args.id = 9;
    assert_int_equal(cons_change_start(&ch, &args, change_wait_cb, &w),
                     CONS_NOTFOUND);
    args.kind = CONS_CHANGE_REMOVE;
    assert_int_equal(cons_change_start(&ch, &args, change_wait_cb, &w),
                     CONS_NOTFOUND);
    args.kind = CONS_CHANGE_TRANSFER;
    assert_int_equal(cons_change_start(&ch, &args, change_wait_cb, &w),
                     CONS_NOTFOUND);
    /* On a follower: not leader. */
    cons_change_init(&ch, raft_fixture_get(&cl->f, follower));
    args.kind = CONS_CHANGE_REMOVE;
    args.id = 1;
    assert_int_equal(cons_change_start(&ch, &args, change_wait_cb, &w),
                     CONS_NOTLEADER);
    assert_int_equal(w.done, 0);
    cluster_free(cl);
}

static void test_removed_member_leaves_the_configuration(void **state)
{
    struct cluster *cl = cluster_new_ext(3, 3, 0, 0, 0);
    struct cons_change ch;
    struct change_wait w;
    struct raft *r;
    unsigned leader;
    raft_id gone;

    (void)state;
    leader = cluster_leader(cl);
    r = raft_fixture_get(&cl->f, leader);
    gone = (leader + 1) % 3 + 1;
    cons_change_init(&ch, r);
    assert_int_equal(
        change_run(cl, &ch, CONS_CHANGE_REMOVE, gone, CONS_VOTER, &w), 0);
    assert_int_equal(r->configuration.n, 2);
    assert_int_equal(role_of(r, gone), -1);
    assert_int_equal(raft_state(r), RAFT_LEADER);
    cluster_free(cl);
}

static void test_removing_the_leader_completes_once_and_it_steps_down(
    void **state)
{
    struct cluster *cl = cluster_new_ext(3, 3, 0, 0, 0);
    struct cons_change ch;
    struct change_wait w;
    struct raft *r;
    unsigned leader;

    (void)state;
    leader = cluster_leader(cl);
    r = raft_fixture_get(&cl->f, leader);
    cons_change_init(&ch, r);
    assert_int_equal(change_run(cl, &ch, CONS_CHANGE_REMOVE, r->id,
                                CONS_VOTER, &w),
                     0);
    assert_int_not_equal(raft_state(r), RAFT_LEADER);
    assert_int_equal(r->configuration.n, 2);
    raft_fixture_step_n(&cl->f, 100);
    cons_change_tick(&ch, 0);
    assert_int_equal(w.done, 1);
    assert_true(raft_fixture_step_until_has_leader(&cl->f, STEP_MS));
    assert_int_not_equal(raft_fixture_leader_index(&cl->f), leader);
    cluster_free(cl);
}

static void test_leadership_moves_to_the_chosen_voter(void **state)
{
    struct cluster *cl = cluster_new_ext(3, 3, 0, 0, 0);
    struct cons_change ch;
    struct change_wait w;
    unsigned leader;
    unsigned target;

    (void)state;
    leader = cluster_leader(cl);
    target = (leader + 2) % 3;
    cons_change_init(&ch, raft_fixture_get(&cl->f, leader));
    assert_int_equal(change_run(cl, &ch, CONS_CHANGE_TRANSFER, target + 1,
                                CONS_VOTER, &w),
                     0);
    assert_int_equal(w.id, target + 1);
    assert_true(raft_fixture_step_until_has_leader(&cl->f, STEP_MS));
    assert_int_equal(raft_fixture_leader_index(&cl->f), target);

    /* id 0: raft picks a voter. */
    leader = target;
    cons_change_init(&ch, raft_fixture_get(&cl->f, leader));
    assert_int_equal(
        change_run(cl, &ch, CONS_CHANGE_TRANSFER, 0, CONS_VOTER, &w), 0);
    assert_int_not_equal(w.id, 0);
    assert_int_not_equal(w.id, leader + 1);
    assert_true(raft_fixture_step_until_has_leader(&cl->f, STEP_MS));
    assert_int_equal(raft_fixture_leader_index(&cl->f) + 1, w.id);
    cluster_free(cl);
}

/* The leader's store fills (tiny map): its apply fails, followers go on.
 * When the store accepts entries again (here: a copy with room, as after
 * freeing disk space) heartbeats alone do not make libraft 0.15 apply again
 * (replicationUpdate returns before replicationApply unless a match index
 * advances): the barrier cons.c runs every second while failed does, and
 * store_failed clears. */
static void test_leader_resumes_applying_when_its_store_has_room_again(
    void **state)
{
    struct cluster *cl = cluster_new_ext(3, 3, 0, 0, 0);
    struct raft_fsm *fsm;
    struct cons_fsm *f;
    struct store *roomy;
    char *roomy_dir;
    struct store_options small = {.map_size = 256 * 1024};
    struct store *tiny;
    char *tiny_dir;
    struct applied a;
    raft_index index = 0;
    unsigned leader;
    unsigned other;
    int k;

    (void)state;
    leader = cluster_leader(cl);
    other = (leader + 1) % 3;
    fsm = &cl->fsms[leader];
    f = fsm->data;
    /* Swap in a tiny store for the leader. */
    tiny_dir = tmpdir_make("tiny");
    assert_int_equal(store_open(tiny_dir, &small, &tiny), 0);
    f->store = tiny;
    for (k = 0; k < 2000 && !f->store_failed; k++) {
        struct report reports[16];
        struct raft_buffer buf;
        size_t i;
        for (i = 0; i < 16; i++) {
            report_init(&reports[i], "fill the map with reports");
        }
        buf = batch_pack(reports, 16);
        memset(&a, 0, sizeof a);
        a.cl = cl;
        a.server = leader;
        a.req.data = &a;
        assert_int_equal(raft_apply(raft_fixture_get(&cl->f, leader), &a.req,
                                    &buf, 1, applied_cb),
                         0);
        index = a.req.index;
        raft_fixture_step_until_applied(&cl->f, other, index, STEP_MS);
    }
    assert_true(f->store_failed);
    assert_non_null(strstr(f->store_error, "apply"));
    assert_false(a.fired); /* the failed entry's request waits */
    assert_true(raft_last_applied(raft_fixture_get(&cl->f, leader)) < index);
    raft_fixture_step_n(&cl->f, 50); /* retries fail: still failed */
    assert_true(f->store_failed);

    /* Room again: same content, bigger map. */
    roomy = store_with_room(tiny, &roomy_dir);
    f->store = roomy;
    raft_fixture_step_n(&cl->f, 200);
    assert_true(f->store_failed); /* heartbeats did not retry */
    barrier_fired = 0;
    assert_int_equal(raft_barrier(raft_fixture_get(&cl->f, leader),
                                  &barrier_req, barrier_done),
                     0);
    assert_true(raft_fixture_step_until_applied(&cl->f, leader,
                                                barrier_req.index, STEP_MS));
    assert_true(barrier_fired);
    assert_false(f->store_failed);
    assert_int_equal(f->store_error[0], '\0');
    assert_true(a.fired);
    assert_int_equal(a.status, 0);
    assert_same_digest(roomy, cl->stores[other]);
    f->store = cl->stores[leader];
    cluster_free(cl);
    store_close(tiny);
    store_close(roomy);
    tmpdir_remove(tiny_dir);
    tmpdir_remove(roomy_dir);
}

/* The auto-promotion decision. */

static struct cons_promote_member pm(uint64_t id,
                                     enum cons_member_role role,
                                     const char *zone,
                                     int64_t unreachable_ms,
                                     uint64_t match)
{
    struct cons_promote_member m;

    memset(&m, 0, sizeof m);
    m.id = id;
    m.role = role;
    snprintf(m.zone, sizeof m.zone, "%s", zone);
    m.reachable = unreachable_ms == 0;
    m.unreachable_ms = unreachable_ms;
    m.match_index = match;
    return m;
}

static struct cons_promote_settings settings_of(unsigned ms, int one)
{
    struct cons_promote_settings s = {ms, one, 10};
    return s;
}

static void test_promotion_needs_a_voter_lost_long_enough(void **state)
{
    struct cons_promote_member m[4];
    struct cons_promote_settings s = settings_of(1500, 0);
    struct cons_promote_decision d;

    (void)state;
    m[0] = pm(1, CONS_VOTER, "a", 0, 100);
    m[1] = pm(2, CONS_VOTER, "b", 0, 100);
    m[2] = pm(3, CONS_VOTER, "c", 1499, 90);
    m[3] = pm(4, CONS_STANDBY, "c", 0, 100);
    cons_promote_decide(m, 4, 100, &s, &d);
    assert_int_equal(d.kind, CONS_PROMOTE_NONE);
    m[2].unreachable_ms = 1500;
    cons_promote_decide(m, 4, 100, &s, &d);
    assert_int_equal(d.kind, CONS_PROMOTE_SWAP);
    assert_int_equal(d.promote_id, 4);
    assert_int_equal(d.demote_id, 3);
    assert_non_null(strstr(d.detail, "standby 4"));
    /* Off: nothing, even with a lost voter. */
    s.auto_promote_ms = 0;
    cons_promote_decide(m, 4, 100, &s, &d);
    assert_int_equal(d.kind, CONS_PROMOTE_NONE);
    /* An unreachable standby is no reason to act. */
    s = settings_of(1500, 0);
    m[2] = pm(3, CONS_VOTER, "c", 0, 100);
    m[3] = pm(4, CONS_STANDBY, "c", 60000, 100);
    cons_promote_decide(m, 4, 100, &s, &d);
    assert_int_equal(d.kind, CONS_PROMOTE_NONE);
}

static void test_promotion_prefers_the_lost_voters_zone(void **state)
{
    struct cons_promote_member m[5];
    struct cons_promote_settings s = settings_of(1000, 0);
    struct cons_promote_decision d;

    (void)state;
    m[0] = pm(1, CONS_VOTER, "a", 0, 100);
    m[1] = pm(2, CONS_VOTER, "b", 5000, 50);
    m[2] = pm(3, CONS_STANDBY, "a", 0, 100); /* more caught up, other zone */
    m[3] = pm(4, CONS_STANDBY, "b", 0, 95);
    m[4] = pm(5, CONS_VOTER, "c", 0, 100);
    cons_promote_decide(m, 5, 100, &s, &d);
    assert_int_equal(d.kind, CONS_PROMOTE_SWAP);
    assert_int_equal(d.promote_id, 4);
    assert_int_equal(d.demote_id, 2);
    /* No standby in that zone: the most caught-up other one. */
    snprintf(m[3].zone, sizeof m[3].zone, "d");
    cons_promote_decide(m, 5, 100, &s, &d);
    assert_int_equal(d.promote_id, 3);
}

static void test_one_voter_per_zone_skips_a_zone_that_has_one(void **state)
{
    struct cons_promote_member m[5];
    struct cons_promote_settings s = settings_of(1000, 1);
    struct cons_promote_decision d;

    (void)state;
    m[0] = pm(1, CONS_VOTER, "a", 0, 100);
    m[1] = pm(2, CONS_VOTER, "b", 5000, 50);
    m[2] = pm(3, CONS_STANDBY, "a", 0, 100); /* zone a has voter 1 */
    m[3] = pm(4, CONS_STANDBY, "d", 0, 95);
    m[4] = pm(5, CONS_VOTER, "c", 0, 100);
    cons_promote_decide(m, 5, 100, &s, &d);
    assert_int_equal(d.kind, CONS_PROMOTE_SWAP);
    assert_int_equal(d.promote_id, 4);
    /* Without the rule, 3 (better match) would win. */
    s.one_voter_per_zone = 0;
    cons_promote_decide(m, 5, 100, &s, &d);
    assert_int_equal(d.promote_id, 3);
    /* With the rule but no free-zone candidate: take the one there is. */
    s.one_voter_per_zone = 1;
    m[3].reachable = 0;
    m[3].unreachable_ms = 9000;
    cons_promote_decide(m, 5, 100, &s, &d);
    assert_int_equal(d.kind, CONS_PROMOTE_SWAP);
    assert_int_equal(d.promote_id, 3);
}

static void test_no_caught_up_standby_means_no_candidate(void **state)
{
    struct cons_promote_member m[4];
    struct cons_promote_settings s = settings_of(1000, 0);
    struct cons_promote_decision d;

    (void)state;
    m[0] = pm(1, CONS_VOTER, "a", 0, 1000);
    m[1] = pm(2, CONS_VOTER, "b", 0, 1000);
    m[2] = pm(3, CONS_VOTER, "c", 2000, 900);
    m[3] = pm(4, CONS_STANDBY, "c", 0, 989); /* 11 behind, slack 10 */
    cons_promote_decide(m, 4, 1000, &s, &d);
    assert_int_equal(d.kind, CONS_PROMOTE_NOCANDIDATE);
    assert_int_equal(d.demote_id, 3);
    assert_non_null(strstr(d.detail, "no reachable caught-up standby"));
    m[3].match_index = 990;
    cons_promote_decide(m, 4, 1000, &s, &d);
    assert_int_equal(d.kind, CONS_PROMOTE_SWAP);
    /* A spare is never a candidate. */
    m[3].role = CONS_SPARE;
    cons_promote_decide(m, 4, 1000, &s, &d);
    assert_int_equal(d.kind, CONS_PROMOTE_NOCANDIDATE);
}

/* The real loop on 127.0.0.1. */

static uint16_t free_port(void)
{
    int port;

    assert_int_equal(netport_free(&port, 1), 0);
    return (uint16_t)port;
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

/* Four real loops: three voters bootstrapped, a fourth that joins. */

struct decisions {
    pthread_mutex_t mutex;
    int promote;
    int demote;
};

static void decision_hook(void *data, const char *kind, const char *detail)
{
    struct decisions *d = data;

    (void)detail;
    pthread_mutex_lock(&d->mutex);
    if (strcmp(kind, "promote") == 0) {
        d->promote++;
    } else if (strcmp(kind, "demote") == 0) {
        d->demote++;
    }
    pthread_mutex_unlock(&d->mutex);
}

static void zone_hook(void *data, uint64_t id, char *zone, size_t size)
{
    (void)data;
    snprintf(zone, size, "%s", id == 4 ? "zone-c" : "");
}

struct quad {
    char *raft_dirs[4];
    char *store_dirs[4];
    struct store *stores[4];
    struct cons_member members[4];
    struct cons_config cfgs[4];
    struct cons *cons[4];
    struct decisions decisions;
};

static void quad_start(struct quad *q, unsigned i)
{
    assert_int_equal(cons_start(&q->cfgs[i], &q->cons[i]), 0);
}

static void quad_init(struct quad *q)
{
    const char *zones[4] = {"zone-a", "zone-b", "zone-c", "zone-c"};
    unsigned i;

    memset(q, 0, sizeof *q);
    pthread_mutex_init(&q->decisions.mutex, NULL);
    for (i = 0; i < 4; i++) {
        q->raft_dirs[i] = tmpdir_make("raft");
        q->store_dirs[i] = tmpdir_make("store");
        assert_int_equal(store_open(q->store_dirs[i], NULL, &q->stores[i]),
                         0);
        q->members[i].id = i + 1;
        snprintf(q->members[i].raft_address, CONS_ADDRESS_SIZE,
                 "127.0.0.1:%u", free_port());
        q->members[i].role = CONS_VOTER;
        snprintf(q->members[i].zone, CONS_ZONE_SIZE, "%s", zones[i]);
    }
    for (i = 0; i < 4; i++) {
        struct cons_config *cfg = &q->cfgs[i];
        cfg->id = i + 1;
        cfg->raft_address = q->members[i].raft_address;
        cfg->dir = q->raft_dirs[i];
        cfg->members = q->members;
        cfg->n_members = 3; /* node 4 is not listed: it joins */
        cfg->heartbeat_ms = 50;
        cfg->election_ms = 300;
        cfg->store = q->stores[i];
        cfg->auto_promote_ms = 1500;
        cfg->hooks.data = &q->decisions;
        cfg->hooks.decision = decision_hook;
        cfg->hooks.zone_of = zone_hook;
    }
}

static void quad_close(struct quad *q)
{
    unsigned i;

    for (i = 0; i < 4; i++) {
        cons_stop(q->cons[i]);
        store_close(q->stores[i]);
        tmpdir_remove(q->raft_dirs[i]);
        tmpdir_remove(q->store_dirs[i]);
    }
    pthread_mutex_destroy(&q->decisions.mutex);
}

/* Poll (10 s) until some running node leads; returns its index. */
static unsigned quad_leader(struct quad *q)
{
    struct cons_status st;
    int k;
    unsigned i;

    for (k = 0; k < 1000; k++) {
        for (i = 0; i < 4; i++) {
            if (q->cons[i] == NULL) {
                continue;
            }
            cons_status_get(q->cons[i], &st);
            if (st.state == CONS_STATE_LEADER) {
                return i;
            }
        }
        usleep(10000);
    }
    fail_msg("no leader within 10 s");
    return 0;
}

static enum cons_member_role
role_in(const struct cons_status *st, uint64_t id, int *found)
{
    size_t i;

    *found = 0;
    for (i = 0; i < st->n_members; i++) {
        if (st->members[i].id == id) {
            *found = 1;
            return st->members[i].role;
        }
    }
    return CONS_SPARE;
}

/* snapshot_stagger: the voter of rank r of 3 snapshots at k*T + r*T/3, so
 * no two voters copy their store at the same index; without it all three
 * snapshot at the same index. One command per entry and one at a time, so
 * each apply pass applies one entry and a snapshot lands on its point (a
 * leader barrier may share a pass: one entry of slack). */
static void snapshots_of_three(int stagger, uint64_t out[3])
{
    struct quad q;
    struct cons_status st;
    unsigned i;
    uint64_t k;
    int tries;

    quad_init(&q);
    for (i = 0; i < 3; i++) {
        q.cfgs[i].snapshot_threshold = 30;
        q.cfgs[i].snapshot_trailing = 5;
        q.cfgs[i].snapshot_stagger = stagger;
        q.cfgs[i].max_batch = 1;
        q.cfgs[i].auto_promote_ms = 0;
        quad_start(&q, i);
    }
    i = quad_leader(&q);
    for (k = 1; k <= 40; k++) {
        submit_and_wait(q.cons[i], "snapshot phase", k);
    }
    for (i = 0; i < 3; i++) {
        for (tries = 0; tries < 500; tries++) {
            cons_status_get(q.cons[i], &st);
            if (st.applied_index >= 40) {
                break;
            }
            usleep(10000);
        }
        out[i] = st.snapshot_index;
    }
    for (i = 0; i < 3; i++) {
        cons_stop(q.cons[i]);
        q.cons[i] = NULL;
    }
    quad_close(&q);
}

static void test_voters_take_snapshots_at_staggered_indexes(void **state)
{
    uint64_t idx[3];
    unsigned i;

    (void)state;
    snapshots_of_three(1, idx);
    for (i = 0; i < 3; i++) {
        uint64_t phase = (idx[i] + 30 - 10 * i) % 30; /* rank = id - 1 */

        assert_true(idx[i] > 0);
        assert_true(phase <= 1);
    }
    assert_true(idx[0] != idx[1] && idx[1] != idx[2] && idx[0] != idx[2]);

    snapshots_of_three(0, idx);
    assert_true(idx[0] > 0);
    assert_true(idx[0] == idx[1] && idx[1] == idx[2]);
}

/* Bytes of the largest libraft snapshot file ("snapshot-*", not ".meta")
 * in @dir, or 0 if none. */
static long largest_snapshot_file(const char *dir)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    long largest = 0;

    assert_non_null(d);
    while ((e = readdir(d)) != NULL) {
        char path[512];
        struct stat st;
        size_t n = strlen(e->d_name);

        if (strncmp(e->d_name, "snapshot-", 9) != 0 ||
            (n > 5 && strcmp(e->d_name + n - 5, ".meta") == 0)) {
            continue;
        }
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        if (stat(path, &st) == 0 && st.st_size > largest) {
            largest = (long)st.st_size;
        }
    }
    closedir(d);
    return largest;
}

/* Thin snapshots (the default): the snapshot files hold a marker, not the
 * store, yet a voter that was down while the log moved past its entries is
 * sent a full copy of the leader's store and ends with the same state. A
 * node whose store lost what its thin snapshot stands for refuses to start
 * instead of running on an empty store. */
static void test_thin_snapshots_and_a_voter_behind_the_log(void **state)
{
    struct quad q;
    struct cons_status st;
    unsigned i;
    unsigned leader;
    uint64_t k;
    int tries;

    (void)state;
    quad_init(&q);
    for (i = 0; i < 3; i++) {
        q.cfgs[i].snapshot_threshold = 8;
        q.cfgs[i].snapshot_trailing = 2;
        q.cfgs[i].max_batch = 1;
        q.cfgs[i].auto_promote_ms = 0;
    }
    quad_start(&q, 0);
    quad_start(&q, 1);
    leader = quad_leader(&q);
    for (k = 1; k <= 40; k++) {
        submit_and_wait(q.cons[leader], "while node 3 is down", k);
    }
    cons_status_get(q.cons[leader], &st);
    assert_true(st.snapshot_index > 20);
    assert_true(largest_snapshot_file(q.raft_dirs[leader]) > 0);
    assert_true(largest_snapshot_file(q.raft_dirs[leader]) < 4096);

    /* Node 3 may first get AppendEntries queued while it was down; were it
     * to take its own snapshot of those, libraft would refuse the install
     * meanwhile and the leader retry only after its 30 s timeout. */
    q.cfgs[2].snapshot_threshold = 1000;
    quad_start(&q, 2);
    for (tries = 0; tries < 1000; tries++) {
        if (store_case_count(q.stores[2]) == 40) {
            break;
        }
        usleep(10000);
    }
    assert_int_equal(store_case_count(q.stores[2]), 40);
    submit_and_wait(q.cons[leader], "after the catch-up", 41);
    for (tries = 0; tries < 500; tries++) {
        uint64_t a = store_applied_index(q.stores[leader]);

        if (store_applied_index(q.stores[2]) == a &&
            store_applied_index(q.stores[1 - leader]) == a) {
            break;
        }
        usleep(10000);
    }
    assert_int_equal(store_case_count(q.stores[2]), 41);
    for (i = 0; i < 3; i++) {
        cons_stop(q.cons[i]);
        q.cons[i] = NULL;
    }
    assert_same_digest(q.stores[0], q.stores[2]);
    assert_same_digest(q.stores[1], q.stores[2]);

    /* Node 1's store is replaced by an empty one; its raft dir keeps the
     * thin snapshots: it must not start. */
    store_close(q.stores[0]);
    tmpdir_remove(q.store_dirs[0]);
    q.store_dirs[0] = tmpdir_make("store");
    assert_int_equal(store_open(q.store_dirs[0], NULL, &q.stores[0]), 0);
    q.cfgs[0].store = q.stores[0];
    assert_int_not_equal(cons_start(&q.cfgs[0], &q.cons[0]), 0);
    q.cons[0] = NULL;
    quad_close(&q);
}

static void test_joined_standby_is_promoted_when_a_voter_stops(void **state)
{
    struct quad q;
    struct cons_status st;
    struct cons_member m;
    struct waiter w;
    unsigned leader;
    unsigned lost;
    int found = 0;
    int k;

    (void)state;
    quad_init(&q);
    for (k = 0; k < 4; k++) {
        quad_start(&q, k);
    }
    cons_status_get(q.cons[3], &st);
    assert_int_equal(st.n_members, 0); /* joined nobody yet */
    leader = quad_leader(&q);
    submit_and_wait(q.cons[leader], "before the join", 1);

    /* A follower refuses changes, naming the leader. */
    m = q.members[3];
    m.role = CONS_STANDBY;
    waiter_init(&w);
    assert_int_equal(cons_member_add(q.cons[(leader + 1) % 3], &m, 5000,
                                     waiter_barrier_cb, &w),
                     0);
    assert_int_equal(waiter_wait(&w), 1);
    assert_int_equal(w.rv, CONS_NOTLEADER);
    assert_int_equal(w.leader_id, leader + 1);
    waiter_close(&w);

    waiter_init(&w);
    assert_int_equal(
        cons_member_add(q.cons[leader], &m, 5000, waiter_barrier_cb, &w), 0);
    assert_int_equal(waiter_wait(&w), 1);
    assert_int_equal(w.rv, 0);
    waiter_close(&w);
    /* Same id again: exists. */
    waiter_init(&w);
    assert_int_equal(
        cons_member_add(q.cons[leader], &m, 5000, waiter_barrier_cb, &w), 0);
    assert_int_equal(waiter_wait(&w), 1);
    assert_int_equal(w.rv, CONS_EXISTS);
    waiter_close(&w);
    cons_status_get(q.cons[leader], &st);
    assert_int_equal(role_in(&st, 4, &found), CONS_STANDBY);
    assert_true(found);
    assert_string_equal(st.members[3].zone, "zone-c");
    assert_string_equal(st.members[0].zone, "zone-a");

    /* Stop a voter that does not lead. */
    lost = (leader + 1) % 3;
    cons_stop(q.cons[lost]);
    q.cons[lost] = NULL;
    for (k = 0; k < 1000; k++) { /* 10 s */
        leader = quad_leader(&q);
        cons_status_get(q.cons[leader], &st);
        if (role_in(&st, 4, &found) == CONS_VOTER &&
            role_in(&st, lost + 1, &found) == CONS_STANDBY) {
            break;
        }
        usleep(10000);
    }
    assert_int_equal(role_in(&st, 4, &found), CONS_VOTER);
    assert_int_equal(role_in(&st, lost + 1, &found), CONS_STANDBY);
    assert_int_equal(st.progress[lost].reachable, 0);
    assert_true(st.progress[lost].unreachable_ms >= 1500);
    assert_true(st.progress[3].reachable);
    pthread_mutex_lock(&q.decisions.mutex);
    assert_int_equal(q.decisions.promote, 1);
    assert_int_equal(q.decisions.demote, 1);
    pthread_mutex_unlock(&q.decisions.mutex);
    /* Voters are now the leader, the other survivor and node 4. */
    submit_and_wait(q.cons[leader], "after the promotion", 2);
    quad_close(&q);
}

/* A store with a tiny map fills: the entry stays unapplied, status says
 * why, and new proposals are refused with CONS_STOREFAIL. */
static void test_full_store_refuses_writes_with_storefail(void **state)
{
    struct node n;
    struct cons *c = NULL;
    struct store_options small = {.map_size = 256 * 1024};
    struct report *r = calloc(1000, sizeof *r);
    struct waiter *w = calloc(1000, sizeof *w);
    struct waiter refused;
    struct cons_status st;
    int k;
    int stuck = -1;

    (void)state;
    node_init(&n, 1);
    store_close(n.store);
    assert_int_equal(store_open(n.store_dir, &small, &n.store), 0);
    n.cfg.store = n.store;
    assert_int_equal(cons_start(&n.cfg, &c), 0);
    assert_non_null(r);
    assert_non_null(w);
    for (k = 0; k < 999 && stuck < 0; k++) {
        report_init(&r[k], "fill the small map with another report");
        waiter_init(&w[k]);
        assert_int_equal(
            cons_submit(c, &r[k].cmd, 5000, waiter_submit_cb, &w[k]), 0);
        if (waiter_wait(&w[k]) == 0) {
            stuck = k;
        } else {
            assert_int_equal(w[k].rv, 0);
        }
    }
    assert_true(stuck > 0);
    cons_status_get(c, &st);
    assert_true(st.store_failed);
    assert_non_null(strstr(st.store_error, "MDB_MAP_FULL"));
    report_init(&r[stuck + 1], "refused");
    waiter_init(&refused);
    assert_int_equal(cons_submit(c, &r[stuck + 1].cmd, 5000,
                                 waiter_submit_cb, &refused),
                     0);
    assert_int_equal(waiter_wait(&refused), 1);
    assert_int_equal(refused.rv, CONS_STOREFAIL);
    waiter_close(&refused);
    cons_stop(c);
    assert_int_equal(w[stuck].done, 1); /* answered at stop */
    assert_int_equal(w[stuck].rv, CONS_SHUTDOWN);
    for (k = 0; k <= stuck; k++) {
        waiter_close(&w[k]);
    }
    free(r);
    free(w);
    node_close(&n);
}

/* Not a test: CONS_BENCH=1 times store_snapshot() over 100k cases (the
 * synchronous part of a raft snapshot on the loop thread) and prints it. */
static void bench_snapshot_of_100k_cases(void)
{
    struct store *s;
    struct store_results res;
    struct report reports[16];
    struct raft_buffer buf;
    struct timespec t0;
    struct timespec t1;
    char *dir = tmpdir_make("bench");
    struct store_options opts = {.map_size = (size_t)4 << 30};
    void *snap;
    size_t len;
    uint64_t index = 1;
    int k;
    size_t i;

    assert_int_equal(store_open(dir, &opts, &s), 0);
    for (k = 0; k < 100000 / 16; k++) {
        const void *payload;
        size_t plen;
        for (i = 0; i < 16; i++) {
            report_init(&reports[i], "pothole near the school gate, deep");
        }
        buf = batch_pack(reports, 16);
        assert_int_equal(cons_entry_decode(&buf, &payload, &plen), 0);
        assert_int_equal(store_apply_batch(s, index++, payload, plen, &res), 0);
        store_results_free(&res);
        raft_free(buf.base);
    }
    clock_gettime(CLOCK_MONOTONIC, &t0);
    assert_int_equal(store_snapshot(s, &snap, &len), 0);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    printf("snapshot of %llu cases: %zu bytes in %.1f ms\n",
           (unsigned long long)store_case_count(s), len,
           (t1.tv_sec - t0.tv_sec) * 1e3 + (t1.tv_nsec - t0.tv_nsec) / 1e6);
    free(snap);
    store_close(s);
    tmpdir_remove(dir);
}

/* The vote lease: within an election timeout of hearing from a leader a
 * follower's vote requests go to libraft as they came (refused for having a
 * leader); after it they carry disrupt_leader, so the first survivor to time
 * out can win. Candidates and leaders are left to libraft. */
static void test_vote_lease_lets_a_vote_through_once_the_leader_is_silent(
    void **state)
{
    struct cons_lease l;
    struct raft_message ae = {.type = RAFT_IO_APPEND_ENTRIES};
    struct raft_message vote = {.type = RAFT_IO_REQUEST_VOTE};
    struct raft_message pre = {.type = RAFT_IO_REQUEST_VOTE};

    (void)state;
    pre.request_vote.pre_vote = true;
    cons_lease_init(&l, 1000);
    assert_int_equal(cons_lease_recv(&l, RAFT_FOLLOWER, 5000, &ae), 0);
    /* Heard 999 ms ago: the lease holds, the request is untouched. */
    assert_int_equal(cons_lease_recv(&l, RAFT_FOLLOWER, 5999, &pre), 0);
    assert_false(pre.request_vote.disrupt_leader);
    assert_int_equal(cons_lease_recv(&l, RAFT_FOLLOWER, 5999, &vote), 0);
    assert_false(vote.request_vote.disrupt_leader);
    /* A full election timeout of silence: both kinds are weighed. */
    assert_int_equal(cons_lease_recv(&l, RAFT_FOLLOWER, 6000, &pre), 1);
    assert_true(pre.request_vote.disrupt_leader);
    assert_int_equal(cons_lease_recv(&l, RAFT_FOLLOWER, 6100, &vote), 1);
    assert_true(vote.request_vote.disrupt_leader);
    assert_int_equal(l.widened, 2);
    /* Only a follower's view of its leader is overridden. */
    vote.request_vote.disrupt_leader = false;
    assert_int_equal(cons_lease_recv(&l, RAFT_CANDIDATE, 9000, &vote), 0);
    assert_int_equal(cons_lease_recv(&l, RAFT_LEADER, 9000, &vote), 0);
    assert_false(vote.request_vote.disrupt_leader);
    /* Any leader message renews the lease. */
    struct raft_message snap = {.type = RAFT_IO_INSTALL_SNAPSHOT};
    assert_int_equal(cons_lease_recv(&l, RAFT_FOLLOWER, 9000, &snap), 0);
    assert_int_equal(cons_lease_recv(&l, RAFT_FOLLOWER, 9500, &vote), 0);
    assert_false(vote.request_vote.disrupt_leader);
    /* Other messages do not. */
    struct raft_message res = {.type = RAFT_IO_APPEND_ENTRIES_RESULT};
    assert_int_equal(cons_lease_recv(&l, RAFT_FOLLOWER, 9900, &res), 0);
    assert_int_equal(cons_lease_recv(&l, RAFT_FOLLOWER, 10000, &vote), 1);
    assert_int_equal(l.widened, 3);
}

/* A leader found gone (probe.c) expires the lease at once, until a leader
 * reaches the node again. */
static void test_vote_lease_expires_when_the_leader_is_gone(void **state)
{
    struct cons_lease l;
    struct raft_message ae = {.type = RAFT_IO_APPEND_ENTRIES};
    struct raft_message vote = {.type = RAFT_IO_REQUEST_VOTE};

    (void)state;
    cons_lease_init(&l, 1000);
    assert_int_equal(cons_lease_recv(&l, RAFT_FOLLOWER, 5000, &ae), 0);
    assert_false(cons_lease_expired(&l, 5300));
    cons_lease_gone(&l);
    assert_true(cons_lease_expired(&l, 5300));
    assert_int_equal(cons_lease_recv(&l, RAFT_FOLLOWER, 5300, &vote), 1);
    assert_true(vote.request_vote.disrupt_leader);
    /* A leader's message: the lease holds again. */
    vote.request_vote.disrupt_leader = false;
    assert_int_equal(cons_lease_recv(&l, RAFT_FOLLOWER, 5400, &ae), 0);
    assert_false(cons_lease_expired(&l, 5500));
    assert_int_equal(cons_lease_recv(&l, RAFT_FOLLOWER, 5500, &vote), 0);
    assert_false(vote.request_vote.disrupt_leader);
}

static raft_id probe_refused_id;
static int probe_refused_n;

static void probe_refused(void *arg, raft_id id)
{
    (void)arg;
    probe_refused_id = id;
    probe_refused_n++;
}

/* A listener that never accepts: the connection is made, nothing read. */
static void probe_listener_cb(uv_stream_t *server, int status)
{
    (void)server;
    (void)status;
}

/* Run @loop until @p's attempt is over (bounded). */
static void probe_wait(uv_loop_t *loop, struct cons_probe *p)
{
    for (int i = 0; i < 1000 && p->busy; i++) {
        uv_run(loop, UV_RUN_ONCE);
    }
    assert_false(p->busy);
}

/* The probe reports a port nothing listens on, and only that: a listening
 * port (even one that never answers the handshake) or a host name reports
 * nothing. */
static void test_probe_reports_only_a_refused_connection(void **state)
{
    uv_loop_t loop;
    uv_tcp_t server;
    struct sockaddr_in sa;
    struct cons_probe p;
    char address[64];
    int port;

    (void)state;
    assert_int_equal(uv_loop_init(&loop), 0);
    assert_int_equal(netport_free(&port, 1), 0);
    snprintf(address, sizeof address, "127.0.0.1:%d", port);
    probe_refused_n = 0;
    cons_probe_init(&p, &loop, probe_refused, NULL);

    /* Something listens: no report. */
    assert_int_equal(uv_tcp_init(&loop, &server), 0);
    assert_int_equal(uv_ip4_addr("127.0.0.1", port, &sa), 0);
    assert_int_equal(uv_tcp_bind(&server, (const struct sockaddr *)&sa, 0), 0);
    assert_int_equal(
        uv_listen((uv_stream_t *)&server, 4, probe_listener_cb), 0);
    assert_int_equal(cons_probe_start(&p, 7, address), 0);
    assert_int_equal(cons_probe_start(&p, 7, address), -1); /* busy */
    probe_wait(&loop, &p);
    assert_int_equal(probe_refused_n, 0);

    /* Nothing listens any more: reported once, with the member's id. */
    uv_close((uv_handle_t *)&server, NULL);
    uv_run(&loop, UV_RUN_NOWAIT);
    assert_int_equal(cons_probe_start(&p, 7, address), 0);
    probe_wait(&loop, &p);
    assert_int_equal(probe_refused_n, 1);
    assert_int_equal(probe_refused_id, 7);
    assert_int_equal(p.refused, 1);

    /* Not numeric, or closed: no attempt. */
    assert_int_equal(cons_probe_start(&p, 7, "leader.example:9000"), -1);
    assert_int_equal(cons_probe_start(&p, 7, "127.0.0.1"), -1);
    cons_probe_close(&p);
    assert_int_equal(cons_probe_start(&p, 7, address), -1);
    assert_int_equal(p.probes, 2);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&loop), 0);
}

/* io_destroy(2) through syscall() (libraft's path) returns at once and the
 * context is destroyed by the reaper shortly after; other calls pass through
 * with their result and errno. */
static void test_aio_context_is_destroyed_off_the_calling_thread(void **state)
{
    aio_context_t ctx = 0;
    struct io_event ev;
    struct timespec zero = {0, 0};
    uint64_t deferred0, reaped0, deferred, reaped;
    int i;

    (void)state;
    if (!cons_aio_enabled()) {
        skip(); /* not built against libraft 0.15.x */
    }
    assert_int_equal(syscall(SYS_io_setup, 1, &ctx), 0);
    assert_int_equal(syscall(SYS_io_getevents, ctx, 0, 1, &ev, &zero), 0);
    cons_aio_counts(&deferred0, &reaped0);
    errno = EOPNOTSUPP;
    assert_int_equal(syscall(SYS_io_destroy, ctx), 0);
    assert_int_equal(errno, EOPNOTSUPP); /* the caller's errno is kept */
    cons_aio_counts(&deferred, &reaped);
    assert_int_equal(deferred, deferred0 + 1);
    for (i = 0; i < 1000 && reaped < deferred; i++) {
        usleep(10 * 1000);
        cons_aio_counts(&deferred, &reaped);
    }
    assert_true(reaped >= deferred0 + 1);
    errno = 0;
    assert_int_equal(syscall(SYS_io_getevents, ctx, 0, 1, &ev, &zero), -1);
    assert_int_equal(errno, EINVAL);
}

/* posix_fallocate() (libraft's segment preparation) keeps its contract and
 * leaves no unwritten extent behind: the bytes that were in the file stay,
 * the new ones read as zero and are written blocks. */
static void test_fallocate_writes_the_new_part_of_the_file(void **state)
{
    char *dir = tmpdir_make("segfill");
    char path[512];
    char head[100], buf[4096];
    uint64_t files0, bytes0, files, bytes;
    const off_t size = 3 * 1024 * 1024 + 512;
    struct stat st;
    int pipefd[2];
    off_t off;
    int fd;

    (void)state;
    snprintf(path, sizeof path, "%s/open-1", dir);
    fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_DSYNC, 0600);
    assert_true(fd >= 0);
    memset(head, 'h', sizeof head);
    assert_int_equal(write(fd, head, sizeof head), (ssize_t)sizeof head);
    cons_segfill_counts(&files0, &bytes0);
    errno = EAGAIN;
    assert_int_equal(posix_fallocate(fd, 0, size), 0);
    assert_int_equal(errno, EAGAIN);
    cons_segfill_counts(&files, &bytes);
    assert_int_equal(files, files0 + 1);
    assert_int_equal(bytes, bytes0 + (uint64_t)size - sizeof head);
    assert_int_equal(fstat(fd, &st), 0);
    assert_int_equal(st.st_size, size);
    close(fd);

    fd = open(path, O_RDONLY);
    assert_true(fd >= 0);
    assert_int_equal(pread(fd, buf, sizeof head, 0), (ssize_t)sizeof head);
    assert_memory_equal(buf, head, sizeof head);
    for (off = sizeof head; off < size; off += (off_t)sizeof buf) {
        ssize_t n = pread(fd, buf, sizeof buf, off);
        assert_true(n > 0);
        for (ssize_t i = 0; i < n; i++) {
            assert_int_equal(buf[i], 0);
        }
    }
    {
        union {
            struct fiemap fm;
            char space[sizeof(struct fiemap) +
                       64 * sizeof(struct fiemap_extent)];
        } u;

        memset(&u, 0, sizeof u);
        u.fm.fm_length = (uint64_t)size;
        u.fm.fm_flags = FIEMAP_FLAG_SYNC;
        u.fm.fm_extent_count = 64;
        /* File systems without FIEMAP (tmpfs) cannot show extents. */
        if (ioctl(fd, FS_IOC_FIEMAP, &u.fm) == 0) {
            assert_true(u.fm.fm_mapped_extents > 0);
            for (unsigned i = 0; i < u.fm.fm_mapped_extents; i++) {
                assert_false(u.fm.fm_extents[i].fe_flags &
                             FIEMAP_EXTENT_UNWRITTEN);
            }
        }
    }
    close(fd);

    /* Not a regular file: libc's answer, nothing filled. */
    assert_int_equal(pipe(pipefd), 0);
    assert_int_equal(posix_fallocate(pipefd[1], 0, 4096), ESPIPE);
    cons_segfill_counts(&files0, &bytes0);
    assert_int_equal(files0, files);
    close(pipefd[0]);
    close(pipefd[1]);
    tmpdir_remove(dir);
}

static unsigned keepalive_n;
static raft_id keepalive_to[8];

static int keepalive_send(struct raft_io *io,
                          struct raft_io_send *req,
                          const struct raft_message *m,
                          raft_io_send_cb cb)
{
    (void)io;
    assert_true(cons_transport_is_keepalive(m));
    keepalive_to[keepalive_n++] = m->server_id;
    cb(req, 0);
    return 0;
}

/* A voter that is a follower or candidate sends each other voter one
 * keepalive (a message the receiving side recognises and drops); a leader,
 * a standby and a removed node send none. */
static void test_voters_send_keepalives_to_the_other_voters(void **state)
{
    struct raft r;
    struct raft_io io;
    struct raft_message vote = {.type = RAFT_IO_REQUEST_VOTE};
    struct raft_message res = {.type = RAFT_IO_APPEND_ENTRIES_RESULT};

    (void)state;
    memset(&r, 0, sizeof r);
    memset(&io, 0, sizeof io);
    io.send = keepalive_send;
    r.id = 2;
    raft_configuration_init(&r.configuration);
    assert_int_equal(raft_configuration_add(&r.configuration, 1, "a:1",
                                            RAFT_VOTER), 0);
    assert_int_equal(raft_configuration_add(&r.configuration, 2, "a:2",
                                            RAFT_VOTER), 0);
    assert_int_equal(raft_configuration_add(&r.configuration, 3, "a:3",
                                            RAFT_STANDBY), 0);
    assert_int_equal(raft_configuration_add(&r.configuration, 4, "a:4",
                                            RAFT_VOTER), 0);
    r.state = RAFT_FOLLOWER;
    keepalive_n = 0;
    cons_transport_keepalive(&r, &io);
    assert_int_equal(keepalive_n, 2); /* voters 1 and 4, not standby 3 */
    assert_int_equal(keepalive_to[0], 1);
    assert_int_equal(keepalive_to[1], 4);
    r.state = RAFT_CANDIDATE;
    cons_transport_keepalive(&r, &io);
    assert_int_equal(keepalive_n, 4);
    r.state = RAFT_LEADER;
    cons_transport_keepalive(&r, &io);
    assert_int_equal(keepalive_n, 4);
    /* A standby, or a node no longer in the configuration, sends none. */
    r.state = RAFT_FOLLOWER;
    r.id = 3;
    cons_transport_keepalive(&r, &io);
    r.id = 9;
    cons_transport_keepalive(&r, &io);
    assert_int_equal(keepalive_n, 4);
    /* Real results and other messages are not mistaken for one. */
    res.append_entries_result.term = 7;
    assert_false(cons_transport_is_keepalive(&res));
    assert_false(cons_transport_is_keepalive(&vote));
    raft_configuration_close(&r.configuration);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_apply_sees_the_entry_index_even_after_a_barrier),
        cmocka_unit_test(test_three_servers_apply_a_batch_to_identical_stores),
        cmocka_unit_test(test_followers_apply_after_answering),
        cmocka_unit_test(test_a_refused_kept_entry_applies_once_there_is_room),
        cmocka_unit_test(test_lagging_follower_catches_up_through_a_snapshot),
        cmocka_unit_test(test_log_budget_counts_bytes_by_index),
        cmocka_unit_test(test_log_budget_bounds_the_log_in_bytes),
        cmocka_unit_test(test_new_leader_after_a_kill_keeps_applied_entries),
        cmocka_unit_test(test_added_voter_catches_up_through_a_snapshot),
        cmocka_unit_test(test_added_standby_replicates_and_never_votes),
        cmocka_unit_test(
            test_second_change_gets_cantchange_while_one_is_in_flight),
        cmocka_unit_test(test_change_checks_ids_and_addresses_first),
        cmocka_unit_test(test_removed_member_leaves_the_configuration),
        cmocka_unit_test(
            test_removing_the_leader_completes_once_and_it_steps_down),
        cmocka_unit_test(test_leadership_moves_to_the_chosen_voter),
        cmocka_unit_test(
            test_leader_resumes_applying_when_its_store_has_room_again),
        cmocka_unit_test(test_promotion_needs_a_voter_lost_long_enough),
        cmocka_unit_test(test_promotion_prefers_the_lost_voters_zone),
        cmocka_unit_test(test_one_voter_per_zone_skips_a_zone_that_has_one),
        cmocka_unit_test(test_no_caught_up_standby_means_no_candidate),
        cmocka_unit_test(
            test_submit_on_a_single_node_then_restart_applies_once),
        cmocka_unit_test(test_restart_after_snapshots_keeps_local_state),
        cmocka_unit_test(test_concurrent_submits_get_their_own_results),
        cmocka_unit_test(
            test_submit_without_quorum_gets_noleader_then_shutdown),
        cmocka_unit_test(test_start_fails_with_ioerr_when_the_address_is_taken),
        cmocka_unit_test(test_submit_refuses_a_command_larger_than_an_entry),
        cmocka_unit_test(test_voters_take_snapshots_at_staggered_indexes),
        cmocka_unit_test(test_thin_snapshots_and_a_voter_behind_the_log),
        cmocka_unit_test(test_joined_standby_is_promoted_when_a_voter_stops),
        cmocka_unit_test(test_full_store_refuses_writes_with_storefail),
        cmocka_unit_test(
            test_vote_lease_lets_a_vote_through_once_the_leader_is_silent),
        cmocka_unit_test(test_vote_lease_expires_when_the_leader_is_gone),
        cmocka_unit_test(test_probe_reports_only_a_refused_connection),
        cmocka_unit_test(test_aio_context_is_destroyed_off_the_calling_thread),
        cmocka_unit_test(test_fallocate_writes_the_new_part_of_the_file),
        cmocka_unit_test(test_voters_send_keepalives_to_the_other_voters),
    };

    /* libraft's TCP transport writes to peers that may have gone: a write
     * to a closed socket must fail with EPIPE, not kill the process. */
    signal(SIGPIPE, SIG_IGN);
    if (getenv("CONS_BENCH") != NULL) {
        bench_snapshot_of_100k_cases();
        return 0;
    }
    clog_set_level(CLOG_WARN);
    if (getenv("CONS_TEST_FILTER") != NULL) {
        cmocka_set_test_filter(getenv("CONS_TEST_FILTER"));
    }
    if (getenv("CONS_TEST_VERBOSE") != NULL) {
        clog_set_level(CLOG_DEBUG);
    }
    return cmocka_run_group_tests(tests, NULL, NULL);
}
