/* The raft_fsm callbacks: apply, snapshot and restore over storage, and the
 * entry format (see cons_internal.h: length header, padding to 8 bytes).
 *
 * Invariants (libraft 0.15, checked in tests/consensus):
 * - apply() is not given the entry index. libraft sets last_applied only after
 *   apply() returns, so the index is raft_last_applied(r) + 1; barrier and
 *   configuration entries never reach apply() but still advance last_applied.
 * - On the leader the raft_apply callback runs synchronously right after
 *   apply() returns (replication.c applyCommand), so the results kept in the
 *   fsm are still valid when the callback reads them.
 * - A failed apply() leaves last_applied where it was; libraft retries the
 *   entry at its next apply pass. store_apply_batch() stores nothing when it
 *   fails, so a retry applies the batch exactly once. Until then this node
 *   applies nothing more: a full or broken disk stops it, on purpose. We log
 *   the failure once per episode (same index) and the recovery at INFO;
 *   cons.c refuses new proposals while store_failed is set.
 *   Where the next apply pass comes from (replication.c, 0.15): on a leader,
 *   a local append or an AppendEntries result that advances a match index;
 *   heartbeat replies that advance nothing return before replicationApply()
 *   (replicationUpdate), so an idle leader would never retry: cons.c runs a
 *   barrier every second while failed. On a follower replicationApply() runs only
 *   when the leader's commit index advances, and a failure returned from the
 *   heartbeat path (recv_append_entries, n == 0) makes recvCb() convert the
 *   follower to RAFT_UNAVAILABLE for good: such a follower recovers only
 *   when it is restarted (cons_stop + cons_start; the log replays and the
 *   store skips what it holds). cons.c reports that as state UNAVAILABLE.
 * - Followers apply after answering (cons_fsm_set_deferred(), on in
 *   cityopsd): libraft applies committed entries on a follower before it
 *   sends the AppendEntries result, so apply() there only queues a copy and
 *   cons.c drains the queue after the loop turn's I/O callbacks. libraft's
 *   last_applied may then run a loop turn ahead of the store (longer while
 *   the store refuses a kept entry: cons.c retries it); snapshot() and
 *   restore() drain first, and any apply() that is not deferred drains
 *   before it applies, so the order is the log's and a snapshot never
 *   stands for an entry the store lacks. A queued entry the store refuses
 *   stays first, deferral stops while the store is failed, and the next
 *   apply() returns the failure as it did before.
 * - restore() runs on an InstallSnapshot and at every start that finds a
 *   snapshot. libraft frees the buffer itself when restore() fails, so we free
 *   it only on success.
 * - Snapshots: three buffers, header, storage's copy mapped from its temp
 *   file (no heap copy of the store) and trailer; snapshot_finalize() unmaps
 *   and frees them once libraft has written them out. Under the uv io the
 *   fsm is version 3: snapshot() only marks the point, snapshot_async() makes the
 *   copy on the libuv threadpool while the loop keeps applying, so the copy
 *   may hold state past the snapshot's index. That is safe because the copy
 *   carries its own applied index: a node that installs it skips the entries
 *   it already contains when libraft replays them (store_apply_batch skips
 *   every index <= the stored one). A large store no longer stalls the loop
 *   (and with it heartbeats) while it is copied.
 */
#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <uv.h>

#include "consensus/cons_internal.h"
#include "proto/clog.h"

#define ENTRY_HEADER_SIZE 8

int cons_entry_encode(const Cityops__V1__CommandBatch *batch,
                      struct raft_buffer *out)
{
    size_t len = cityops__v1__command_batch__get_packed_size(batch);
    size_t total = ENTRY_HEADER_SIZE + len;
    uint8_t *base;
    size_t i;

    total = (total + 7) / 8 * 8;
    base = raft_malloc(total);
    if (base == NULL) {
        return CONS_NOMEM;
    }
    for (i = 0; i < ENTRY_HEADER_SIZE; i++) {
        base[i] = (uint8_t)((uint64_t)len >> (8 * i));
    }
    cityops__v1__command_batch__pack(batch, base + ENTRY_HEADER_SIZE);
    memset(base + ENTRY_HEADER_SIZE + len, 0, total - ENTRY_HEADER_SIZE - len);
    out->base = base;
    out->len = total;
    return 0;
}

int cons_entry_decode(const struct raft_buffer *buf,
                      const void **payload,
                      size_t *len)
{
    const uint8_t *base = buf->base;
    uint64_t n = 0;
    size_t i;

    if (buf->len < ENTRY_HEADER_SIZE) {
        return CONS_INVALID;
    }
    for (i = 0; i < ENTRY_HEADER_SIZE; i++) {
        n |= (uint64_t)base[i] << (8 * i);
    }
    if (n > buf->len - ENTRY_HEADER_SIZE) {
        return CONS_INVALID;
    }
    *payload = base + ENTRY_HEADER_SIZE;
    *len = (size_t)n;
    return 0;
}

static void fsm_results_drop(struct cons_fsm *f)
{
    if (f->have_last) {
        store_results_free(&f->last);
        f->have_last = 0;
    }
    memset(&f->last, 0, sizeof f->last);
}

/* Apply the entry at @index into @out (zeroed on failure); the failure
 * episode bookkeeping for both the direct and the deferred path. */
static int fsm_apply_at(struct cons_fsm *f,
                        uint64_t index,
                        const struct raft_buffer *buf,
                        struct store_results *out)
{
    const void *payload = buf->base;
    size_t len = buf->len;
    int rv;

    if (cons_entry_decode(buf, &payload, &len) != 0) {
        /* Every node sees the same bytes: let storage record the entry as
         * an undecodable batch rather than stop the node. */
        clog(CLOG_WARN, "cons", "apply %llu: bad entry framing (%zu bytes)",
             (unsigned long long)index, buf->len);
        payload = buf->base;
        len = buf->len;
    }
    rv = store_apply_batch(f->store, index, payload, len, out);
    if (rv != 0) {
        memset(out, 0, sizeof *out);
        if (!f->store_failed || f->failed_index != index) {
            clog(CLOG_ERROR, "cons",
                 "apply %llu: %s: %s (this node applies nothing more until "
                 "the store accepts the entry; writes are refused)",
                 (unsigned long long)index, store_strerror(rv),
                 store_errmsg(f->store));
        }
        snprintf(f->store_error, sizeof f->store_error,
                 "apply %llu: %s: %s", (unsigned long long)index,
                 store_strerror(rv), store_errmsg(f->store));
        f->store_failed = 1;
        f->failed_index = index;
        return RAFT_IOERR;
    }
    if (f->store_failed) {
        clog(CLOG_INFO, "cons", "store accepts entries again at index %llu",
             (unsigned long long)index);
        f->store_failed = 0;
        f->failed_index = 0;
        f->store_error[0] = '\0';
    }
    return 0;
}

/* Unlink and free the first kept entry. */
static void deferred_pop(struct cons_fsm *f)
{
    struct cons_deferred *d = f->deferred_head;

    f->deferred_head = d->next;
    if (f->deferred_head == NULL) {
        f->deferred_tail = NULL;
    }
    free(d);
}

int cons_fsm_drain(struct raft_fsm *fsm)
{
    struct cons_fsm *f = fsm->data;

    while (f != NULL && f->deferred_head != NULL) {
        struct cons_deferred *d = f->deferred_head;
        struct raft_buffer buf = {.base = d->entry, .len = d->len};
        struct store_results res;
        int rv;

        memset(&res, 0, sizeof res);
        rv = fsm_apply_at(f, d->index, &buf, &res);
        if (rv != 0) {
            return rv; /* stays first in line */
        }
        store_results_free(&res);
        deferred_pop(f);
    }
    return 0;
}

/* After a restore: kept entries the store now holds are dropped, and a
 * failure episode about one of them ends. */
static void fsm_drop_applied(struct cons_fsm *f)
{
    uint64_t applied = store_applied_index(f->store);

    while (f->deferred_head != NULL && f->deferred_head->index <= applied) {
        deferred_pop(f);
    }
    if (f->store_failed && f->failed_index <= applied) {
        f->store_failed = 0;
        f->failed_index = 0;
        f->store_error[0] = '\0';
    }
}

/* A member is being sent a copy of the store: hold the budget
 * (logbudget.c) from now until CONS_LOGBUDGET_HOLD_MS after the copy is
 * made. */
static void budget_hold(struct cons_fsm *f)
{
    if (f->loop != NULL) {
        f->budget_hold_until = uv_now(f->loop) + CONS_LOGBUDGET_HOLD_MS;
        cons_logbudget_hold(&f->budget, f->raft);
    }
}

static void budget_held(struct cons_fsm *f)
{
    f->budget.hold = f->loop != NULL && uv_now(f->loop) < f->budget_hold_until;
}

/* A follower keeps the entry for cons_fsm_drain() and answers at once, so
 * that libraft sends the AppendEntries result before the store work (see
 * cons_fsm_set_deferred()). 0 if kept, -1 to apply it now. */
static int fsm_defer(struct cons_fsm *f,
                     uint64_t index,
                     const struct raft_buffer *buf)
{
    struct cons_deferred *d;

    if (!f->defer || f->store_failed ||
        raft_state(f->raft) != RAFT_FOLLOWER) {
        return -1;
    }
    d = malloc(sizeof *d + buf->len);
    if (d == NULL) {
        return -1;
    }
    d->next = NULL;
    d->index = index;
    d->len = buf->len;
    memcpy(d->entry, buf->base, buf->len);
    if (f->deferred_tail != NULL) {
        f->deferred_tail->next = d;
    } else {
        f->deferred_head = d;
    }
    f->deferred_tail = d;
    f->deferred++;
    return 0;
}

static int
fsm_apply(struct raft_fsm *fsm, const struct raft_buffer *buf, void **result)
{
    struct cons_fsm *f = fsm->data;
    uint64_t index = raft_last_applied(f->raft) + 1;
    int rv;

    fsm_results_drop(f);
    *result = NULL;
    budget_held(f);
    cons_logbudget_apply(&f->budget, f->raft, index, buf->len);
    if (fsm_defer(f, index, buf) == 0) {
        return 0;
    }
    /* Entries kept earlier go first; if one still fails, so does this. */
    rv = cons_fsm_drain(fsm);
    if (rv == 0) {
        rv = fsm_apply_at(f, index, buf, &f->last);
    }
    if (rv != 0) {
        return rv;
    }
    f->have_last = 1;
    *result = &f->last;
    return 0;
}

/* A snapshot handed to libraft: three buffers (header, the mapped copy,
 * trailer) and the parts that own them. libraft passes the same bufs
 * pointer back to finalize, which finds the block from it. */
struct snapshot_block {
    struct raft_buffer bufs[3];
    struct store_snapshot_parts parts;
    void *thin; /* a thin snapshot instead (malloc'd), or NULL */
};

/* Copy the store into raft buffers (any thread). */
static int snapshot_copy(struct cons_fsm *f,
                         struct raft_buffer *bufs[],
                         unsigned *n_bufs)
{
    struct snapshot_block *b;
    int rv;

    b = raft_calloc(1, sizeof *b);
    if (b == NULL) {
        clog(CLOG_ERROR, "cons", "snapshot: out of memory");
        return RAFT_NOMEM;
    }
    if (f->thin) {
        size_t len = 0;

        rv = store_snapshot_thin(f->store, &b->thin, &len);
        if (rv == 0) {
            b->bufs[0].base = b->thin;
            b->bufs[0].len = len;
            *bufs = b->bufs;
            *n_bufs = 1;
            return 0;
        }
    } else {
        rv = store_snapshot_parts(f->store, &b->parts);
    }
    if (rv != 0) {
        clog(CLOG_ERROR, "cons", "snapshot: %s: %s", store_strerror(rv),
             store_errmsg(f->store));
        raft_free(b);
        return rv == STORE_NOMEM ? RAFT_NOMEM : RAFT_IOERR;
    }
    b->bufs[0].base = b->parts.header;
    b->bufs[0].len = sizeof(b->parts.header);
    b->bufs[1].base = (void *)b->parts.payload;
    b->bufs[1].len = b->parts.payload_len;
    b->bufs[2].base = b->parts.trailer;
    b->bufs[2].len = sizeof(b->parts.trailer);
    *bufs = b->bufs;
    *n_bufs = 3;
    return 0;
}

static size_t snapshot_len(const struct raft_buffer *bufs, unsigned n)
{
    size_t len = 0;
    unsigned i;

    for (i = 0; i < n; i++) {
        len += bufs[i].len;
    }
    return len;
}

static int
fsm_snapshot(struct raft_fsm *fsm, struct raft_buffer *bufs[], unsigned *n_bufs)
{
    struct cons_fsm *f = fsm->data;
    int rv;

    /* The snapshot stands for every entry libraft counts as applied. */
    if (cons_fsm_drain(fsm) != 0) {
        return RAFT_BUSY; /* libraft tries again at a later apply */
    }
    budget_held(f);
    cons_logbudget_snapshot(&f->budget, f->raft, raft_last_applied(f->raft));
    if (f->async) {
        /* The copy is made by fsm_snapshot_async() on the threadpool. */
        *bufs = NULL;
        *n_bufs = 0;
        return 0;
    }
    rv = snapshot_copy(f, bufs, n_bufs);
    if (rv == 0) {
        clog(CLOG_INFO, "cons", "snapshot at index %llu (%zu bytes)",
             (unsigned long long)raft_last_applied(f->raft),
             snapshot_len(*bufs, *n_bufs));
    }
    return rv;
}

/* libuv threadpool: no raft calls here, only the store's read-only copy. */
static int fsm_snapshot_async(struct raft_fsm *fsm,
                              struct raft_buffer *bufs[],
                              unsigned *n_bufs)
{
    struct cons_fsm *f = fsm->data;
    int rv = snapshot_copy(f, bufs, n_bufs);

    if (rv == 0) {
        clog(CLOG_INFO, "cons", "snapshot copied (%zu bytes)",
             snapshot_len(*bufs, *n_bufs));
    }
    return rv;
}

static int fsm_snapshot_finalize(struct raft_fsm *fsm,
                                 struct raft_buffer *bufs[],
                                 unsigned *n_bufs)
{
    struct snapshot_block *b;

    (void)fsm;
    if (*bufs == NULL) {
        return 0;
    }
    b = (struct snapshot_block *)(void *)*bufs; /* bufs is its first member */
    free(b->thin);
    store_snapshot_parts_free(&b->parts);
    raft_free(b);
    *bufs = NULL;
    *n_bufs = 0;
    return 0;
}

static int fsm_restore(struct raft_fsm *fsm, struct raft_buffer *buf)
{
    struct cons_fsm *f = fsm->data;
    uint64_t snap_index = 0;
    uint64_t local_index;
    int replaced = 0;
    int rv;

    (void)cons_fsm_drain(fsm); /* a failure stays logged, the store is checked below */
    local_index = store_applied_index(f->store);
    if (store_snapshot_is_thin(buf->base, buf->len, &snap_index)) {
        /* It stands for this store: usable only if the store holds it. */
        if (local_index < snap_index) {
            clog(CLOG_ERROR, "cons",
                 "snapshot at index %llu stands for the local store, but the "
                 "store holds only index %llu: its data was lost or replaced. "
                 "Restore this node from a backup (cityctl backup restore) or "
                 "remove it and add it again so that the leader sends a full "
                 "copy", (unsigned long long)snap_index,
                 (unsigned long long)local_index);
            return RAFT_IOERR; /* libraft frees buf->base */
        }
    } else {
        (void)store_snapshot_index(buf->base, buf->len, &snap_index);
        rv = store_restore(f->store, buf->base, buf->len, &replaced);
        if (rv != 0) {
            /* libraft frees buf->base when restore fails. */
            clog(CLOG_ERROR, "cons", "restore snapshot %llu: %s: %s",
                 (unsigned long long)snap_index, store_strerror(rv),
                 store_errmsg(f->store));
            return rv == STORE_NOMEM ? RAFT_NOMEM : RAFT_IOERR;
        }
    }
    fsm_results_drop(f);
    fsm_drop_applied(f);
    cons_logbudget_restored(&f->budget, f->raft, snap_index);
    if (replaced) {
        clog(CLOG_INFO, "cons",
             "restored snapshot at index %llu: local state (index %llu) "
             "replaced",
             (unsigned long long)snap_index, (unsigned long long)local_index);
    } else {
        clog(CLOG_INFO, "cons",
             "snapshot at index %llu: local state kept (index %llu)",
             (unsigned long long)snap_index, (unsigned long long)local_index);
    }
    raft_free(buf->base);
    buf->base = NULL;
    buf->len = 0;
    return 0;
}

int cons_fsm_init(struct raft_fsm *fsm, struct raft *raft, struct store *store)
{
    struct cons_fsm *f;

    assert(raft != NULL);
    assert(store != NULL);
    f = raft_calloc(1, sizeof *f);
    if (f == NULL) {
        return CONS_NOMEM;
    }
    f->raft = raft;
    f->store = store;
    memset(fsm, 0, sizeof *fsm);
    fsm->version = 2;
    fsm->data = f;
    fsm->apply = fsm_apply;
    fsm->snapshot = fsm_snapshot;
    fsm->restore = fsm_restore;
    fsm->snapshot_finalize = fsm_snapshot_finalize;
    return 0;
}

/* Thin snapshots: sending one. libraft loads the newest snapshot from disk
 * (the marker) and sends it whole; the member that gets it needs the
 * state, so the marker is replaced by a full copy of the store made now,
 * on the threadpool. The copy holds at least the marker's index (the store
 * only moves forward) and the receiver skips the log entries it already
 * holds, as with any copy made while apply goes on. libraft frees the
 * buffer with raft_free() once sent, and handles the callback after it
 * stopped leading or closed (it drops the snapshot). If the copy fails the
 * marker goes as it is: the receiver refuses it and libraft retries. */
struct full_get {
    uv_work_t work;
    struct cons_fsm *f;
    struct raft_io_snapshot_get *req;
    raft_io_snapshot_get_cb cb;
    void *req_data;
    struct raft_snapshot *snapshot;
    void *buf;
    size_t len;
    int rv;
};

static void full_get_work(uv_work_t *work)
{
    struct full_get *g = work->data;

    g->rv = store_snapshot(g->f->store, &g->buf, &g->len);
}

static void full_get_done(uv_work_t *work, int status)
{
    struct full_get *g = work->data;
    struct raft_buffer *b = &g->snapshot->bufs[0];
    raft_io_snapshot_get_cb cb = g->cb;

    if (status == 0 && g->rv == 0) {
        budget_hold(g->f);
        clog(CLOG_INFO, "cons",
             "snapshot %llu for a member behind the log: a full copy of the "
             "store (%zu bytes)%s",
             (unsigned long long)g->snapshot->index, g->len,
             g->f->budget.half > 0 ? "; the log budget waits 60 s so that "
                                     "the member can go on from the log"
                                   : "");
        raft_free(b->base);
        b->base = g->buf;
        b->len = g->len;
    } else {
        clog(CLOG_ERROR, "cons",
             "snapshot %llu for a member behind the log: copy of the store "
             "failed (%s: %s); it gets the marker, refuses it, and is sent "
             "another later",
             (unsigned long long)g->snapshot->index,
             status != 0 ? "canceled" : store_strerror(g->rv),
             status != 0 ? "" : store_errmsg(g->f->store));
        free(g->buf);
    }
    g->req->data = g->req_data;
    cb(g->req, g->snapshot, 0);
    raft_free(g);
}

static void thin_get_cb(struct raft_io_snapshot_get *req,
                        struct raft_snapshot *snapshot,
                        int status)
{
    struct full_get *g = req->data;
    raft_io_snapshot_get_cb cb = g->cb;
    uint64_t index;

    req->data = g->req_data;
    if (status == 0 && snapshot != NULL && snapshot->n_bufs == 1 &&
        store_snapshot_is_thin(snapshot->bufs[0].base, snapshot->bufs[0].len,
                               &index)) {
        g->snapshot = snapshot;
        g->work.data = g;
        req->data = g;
        if (uv_queue_work(g->f->loop, &g->work, full_get_work,
                          full_get_done) == 0) {
            return;
        }
        req->data = g->req_data;
        clog(CLOG_ERROR, "cons", "snapshot %llu: cannot queue the store copy",
             (unsigned long long)index);
    }
    raft_free(g);
    cb(req, snapshot, status);
}

static int thin_snapshot_get(struct raft_io *io,
                             struct raft_io_snapshot_get *req,
                             raft_io_snapshot_get_cb cb)
{
    struct raft *r = io->data;
    struct cons_fsm *f = r->fsm->data;
    struct full_get *g;
    int rv;

    g = raft_calloc(1, sizeof *g);
    if (g == NULL) {
        return RAFT_NOMEM;
    }
    g->f = f;
    g->req = req;
    g->cb = cb;
    g->req_data = req->data;
    req->data = g;
    budget_hold(f);
    rv = f->io_snapshot_get(io, req, thin_get_cb);
    if (rv != 0) {
        req->data = g->req_data;
        raft_free(g);
    }
    return rv;
}

void cons_fsm_set_thin(struct raft_fsm *fsm,
                       struct raft_io *io,
                       struct uv_loop_s *loop)
{
    struct cons_fsm *f = fsm->data;

    f->thin = 1;
    f->loop = loop;
    f->io_snapshot_get = io->snapshot_get;
    io->snapshot_get = thin_snapshot_get;
}

void cons_fsm_set_deferred(struct raft_fsm *fsm)
{
    struct cons_fsm *f = fsm->data;

    f->defer = 1;
}

int cons_fsm_set_log_budget(struct raft_fsm *fsm,
                            uint64_t bytes,
                            unsigned max_trailing)
{
    struct cons_fsm *f = fsm->data;

    cons_logbudget_close(&f->budget);
    if (cons_logbudget_init(&f->budget, bytes, max_trailing) != 0) {
        return CONS_NOMEM;
    }
    return 0;
}

void cons_fsm_set_async(struct raft_fsm *fsm)
{
    struct cons_fsm *f = fsm->data;

    f->async = 1;
    fsm->version = 3;
    fsm->snapshot_async = fsm_snapshot_async;
}

void cons_fsm_close(struct raft_fsm *fsm)
{
    struct cons_fsm *f = fsm->data;

    if (f == NULL) {
        return;
    }
    fsm_results_drop(f);
    while (f->deferred_head != NULL) {
        deferred_pop(f);
    }
    cons_logbudget_close(&f->budget);
    raft_free(f);
    fsm->data = NULL;
}
