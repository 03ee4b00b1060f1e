/* The Raft log, bounded in bytes.
 *
 * libraft bounds its log by entries: a snapshot once snapshot_threshold
 * entries have been applied since the last one, and snapshot_trailing
 * entries kept behind it for members that fall a little behind. Both the
 * in-memory log and the segments on disk hold every entry in that window,
 * and an entry is a batch of up to max_batch commands: with the defaults
 * (8192 + 8192 entries, 256 commands of up to 4000-byte descriptions) the
 * window could grow to gigabytes of memory per node under a burst. Under the
 * benchmark's load (batches of ~20 Reports) it held ~190 MB.
 *
 * With a budget of B bytes each half is bounded by bytes as well: a
 * snapshot is taken once the entries applied since the last one hold B/2
 * bytes, and a snapshot keeps only as many trailing entries as fit in B/2
 * (at least one: libraft gives trailing 0 a meaning of its own). The entry
 * counts still apply; when entries are small (one command each, the usual
 * case for a city) they decide, as before.
 *
 * A member that is sent a copy of the store (it was behind the log) needs
 * the log from the copy's index on once it has installed it; were the log
 * trimmed past that meanwhile, it would be sent another copy, and under a
 * steady load that could go on for ever. So from the moment a member is
 * sent a copy until CONS_LOGBUDGET_HOLD_MS after the copy was made, the
 * budget is held (fsm.c): only the entry counts apply. (libraft 0.15 sends
 * a snapshot only to a member it heard from within the election timeout.)
 *
 * The sizes come from apply() (fsm.c), which sees every command entry, in
 * index order, with its length; barrier and configuration entries never reach
 * it and are counted as empty. They are kept in a ring of the latest
 * CONS_LOGBUDGET_RING indexes. The apply path only records a size and adds
 * it up; the walk over the trailing window runs once per snapshot. */
#include <limits.h>
#include <stdlib.h>

#include "consensus/cons_internal.h"

int cons_logbudget_init(struct cons_logbudget *b,
                        uint64_t bytes,
                        unsigned max_trailing)
{
    *b = (struct cons_logbudget){0};
    b->half = bytes / 2;
    b->max_trailing = max_trailing;
    if (bytes == 0) {
        return 0;
    }
    b->len = calloc(CONS_LOGBUDGET_RING, sizeof *b->len);
    if (b->len == NULL) {
        return -1;
    }
    b->cap = CONS_LOGBUDGET_RING;
    return 0;
}

void cons_logbudget_close(struct cons_logbudget *b)
{
    free(b->len);
    b->len = NULL;
    b->cap = 0;
    b->half = 0;
}

void cons_logbudget_note(struct cons_logbudget *b, uint64_t index, size_t len)
{
    uint32_t l = len > UINT32_MAX ? UINT32_MAX : (uint32_t)len;
    uint32_t *slot;

    if (b->cap == 0 || index == 0) {
        return;
    }
    if (b->hi != 0 && index >= b->lo && index <= b->hi) {
        /* Applied again (a retry after the store refused it). */
        slot = &b->len[index % b->cap];
        if (index > b->base) {
            b->since -= *slot;
            b->since += l;
        }
        *slot = l;
        return;
    }
    if (b->hi == 0 || index < b->lo || index - b->hi >= b->cap) {
        b->lo = index; /* the first entry, or one out of the window */
    } else {
        uint64_t i;

        for (i = b->hi + 1; i < index; i++) {
            b->len[i % b->cap] = 0; /* barrier or configuration entries */
        }
        if (index - b->lo >= b->cap) {
            b->lo = index - b->cap + 1;
        }
    }
    b->hi = index;
    b->len[index % b->cap] = l;
    if (index > b->base) {
        b->since += l;
    }
}

int cons_logbudget_due(const struct cons_logbudget *b)
{
    return b->half > 0 && b->since >= b->half;
}

/* Walk back from @index over at most @n entries, those after the last
 * recorded size counting as empty, while their bytes stay within @limit.
 * Returns the entries walked and their bytes in *@sum; *@cut is set when the
 * next entry would pass @limit (otherwise the walk ended at @n entries or at
 * the oldest size recorded). */
static unsigned walk_back(const struct cons_logbudget *b,
                          uint64_t index,
                          unsigned n,
                          uint64_t limit,
                          uint64_t *sum,
                          int *cut)
{
    unsigned k = 0;
    uint64_t i;

    *sum = 0;
    *cut = 0;
    if (b->cap == 0 || b->hi == 0) {
        return 0;
    }
    if (index > b->hi) {
        /* Entries after the last command are barriers or configuration
         * entries: kept, counted as empty. */
        uint64_t empty = index - b->hi;

        if (empty >= n) {
            return n;
        }
        k = (unsigned)empty;
        index = b->hi;
    }
    for (i = index; i >= b->lo && i > 0 && k < n; i--) {
        uint32_t l = b->len[i % b->cap];

        if (*sum + l > limit) {
            *cut = 1;
            break;
        }
        *sum += l;
        k++;
    }
    return k;
}

unsigned cons_logbudget_trailing(const struct cons_logbudget *b,
                                 uint64_t index)
{
    uint64_t sum;
    unsigned n;
    int cut;

    if (b->half == 0 || b->max_trailing == 0 || b->hi == 0) {
        return b->max_trailing; /* no budget, or nothing to bound by */
    }
    n = walk_back(b, index, b->max_trailing, b->half, &sum, &cut);
    /* Not cut: within the budget down to the oldest size recorded (or the
     * configured count reached), so the entry count decides. */
    return !cut ? b->max_trailing : n > 0 ? n : 1;
}

/* Bytes of the @n entries up to @index that the ring knows. */
static uint64_t window_bytes(const struct cons_logbudget *b,
                             uint64_t index,
                             unsigned n)
{
    uint64_t sum;
    int cut;

    (void)walk_back(b, index, n, UINT64_MAX, &sum, &cut);
    return sum;
}

uint64_t cons_logbudget_bytes(const struct cons_logbudget *b)
{
    return b->kept + b->since;
}

void cons_logbudget_taken(struct cons_logbudget *b, uint64_t index)
{
    uint64_t after = b->hi > index ? b->hi - index : 0;

    b->base = index;
    b->since = window_bytes(b, b->hi,
                            after < b->cap ? (unsigned)after
                                           : (unsigned)b->cap);
}

void cons_logbudget_reset(struct cons_logbudget *b, uint64_t index)
{
    b->lo = b->hi = 0;
    b->base = index;
    b->since = 0;
    b->kept = 0;
}

/* Put back the threshold cons_logbudget_apply() lowered, unless cons.c
 * has set one of its own since (snapshot_phase()). */
static void threshold_restore(struct cons_logbudget *b, struct raft *r)
{
    if (!b->lowered) {
        return;
    }
    if (r->snapshot.threshold == b->lowered_to) {
        raft_set_snapshot_threshold(r, b->saved_threshold);
    }
    b->lowered = 0;
}

/* From apply(), before libraft counts @index applied: once the half is
 * full, lower the threshold so that libraft's check at the end of this
 * apply pass takes a snapshot (last_applied - snapshot index >= threshold).
 * The threshold it had is put back when the snapshot is taken. */
void cons_logbudget_apply(struct cons_logbudget *b,
                          struct raft *r,
                          uint64_t index,
                          size_t len)
{
    uint64_t last = r->log.snapshot.last_index;
    uint64_t want;

    cons_logbudget_note(b, index, len);
    if (b->half == 0) {
        return;
    }
    if (b->base > last && r->snapshot.pending.term == 0) {
        /* The snapshot begun at base failed after snapshot() (its copy or
         * its write): count from the last one libraft holds. */
        b->kept = b->kept_before;
        cons_logbudget_taken(b, last);
    }
    if (b->hold || !cons_logbudget_due(b) || index <= last) {
        return;
    }
    want = index - last;
    if (want > UINT_MAX || r->snapshot.threshold <= want) {
        return; /* due by the entry count as well, or lowered already */
    }
    if (!b->lowered || r->snapshot.threshold != b->lowered_to) {
        /* Not lowered yet, or cons.c set a threshold of its own since (a
         * snapshot in progress delays ours): that is the one to put back. */
        b->saved_threshold = r->snapshot.threshold;
    }
    b->lowered = 1;
    b->lowered_to = (unsigned)want;
    raft_set_snapshot_threshold(r, (unsigned)want);
}

/* From snapshot(), once it goes ahead at @index: put the threshold back,
 * and keep behind the snapshot only the trailing entries that fit in the
 * budget (all the configured ones while held). A trailing count of 0 is the
 * caller's (keep no log: cons.c's restored state) and stays. */
void cons_logbudget_snapshot(struct cons_logbudget *b,
                             struct raft *r,
                             uint64_t index)
{
    uint64_t held;

    if (b->half == 0) {
        return;
    }
    if (b->lowered) {
        b->snapshots++;
    }
    threshold_restore(b, r);
    if (r->snapshot.trailing != 0 && b->max_trailing != 0) {
        raft_set_snapshot_trailing(r, b->hold ? b->max_trailing
                                              : cons_logbudget_trailing(b,
                                                                        index));
    }
    /* libraft drops nothing it dropped before: at most the entries its log
     * still holds up to @index stay. */
    held = index > r->log.offset ? index - r->log.offset : 0;
    b->kept_before = b->kept;
    b->kept = window_bytes(b, index,
                           held < r->snapshot.trailing
                               ? (unsigned)held
                               : r->snapshot.trailing);
    cons_logbudget_taken(b, index);
}

/* After raft_start(): the sizes of the entries libraft loaded from disk, so
 * that the first snapshot after a restart bounds its trailing entries by
 * bytes too. Into the ring only while nothing was applied yet (a single
 * voter applies inside raft_start(), and each size is counted once); the
 * bytes kept behind the restored snapshot either way. */
void cons_logbudget_seed(struct cons_logbudget *b, const struct raft *r)
{
    const struct raft_log *l = &r->log;
    int note = b->hi == 0;
    uint64_t kept = 0;
    size_t n;
    size_t k;

    if (b->cap == 0 || l->size == 0) {
        return;
    }
    n = l->back >= l->front ? l->back - l->front : l->size - l->front + l->back;
    for (k = 0; k < n; k++) {
        const struct raft_entry *e = &l->entries[(l->front + k) % l->size];
        uint64_t index = l->offset + 1 + k;
        size_t len = e->type == RAFT_COMMAND ? e->buf.len : 0;

        if (note) {
            cons_logbudget_note(b, index, len);
        }
        if (index <= b->base) {
            kept += len; /* kept behind the snapshot restored */
        }
    }
    b->kept = kept;
}

/* A member is being sent a copy: hold from now on. A snapshot already under
 * way was given a trailing count by bytes in snapshot(), and libraft reads
 * the count again when it trims its in-memory log at the end (takeSnapshotCb;
 * the leader sends entries from there): put the configured one back now. */
void cons_logbudget_hold(struct cons_logbudget *b, struct raft *r)
{
    if (b->half == 0) {
        return;
    }
    b->hold = 1;
    if (r->snapshot.trailing != 0 && b->max_trailing != 0) {
        raft_set_snapshot_trailing(r, b->max_trailing);
    }
}

/* From restore(): the state now comes from a snapshot at @index. */
void cons_logbudget_restored(struct cons_logbudget *b,
                             struct raft *r,
                             uint64_t index)
{
    threshold_restore(b, r);
    cons_logbudget_reset(b, index);
}
