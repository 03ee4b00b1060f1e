/* The periodic store sync, on its own thread.
 *
 * With the store opened nosync (MDB_NOSYNC), LMDB commits reach the page
 * cache only and the Raft log is the durable copy; the store is flushed
 * every interval so that a restart replays little. That flush is an
 * fdatasync of whatever the last interval dirtied: 3-5 ms at a few
 * thousand writes a second on this class of disk, and 100+ ms when the
 * disk is busy. Run on the libuv loop it stopped Raft for that long every
 * interval (appends, replies, heartbeats): the write tail latency. Here it
 * runs beside the loop. mdb_env_sync() without MDB_WRITEMAP is one
 * fdatasync on the data file and may run during a write transaction; the
 * command archive's sync is taken outside its append lock (archive.c).
 *
 * A flush slower than CONS_SYNC_SLOW_MS is logged (at most every 10 s) with
 * what to look at: it is the first sign of the slow-disk runbook.
 *
 * Once a second, after a flush, the thread also drops the process's
 * page-table entries for the store's map (store_unmap()). LMDB reads each
 * page it copies on write through its read-only map, and the kernel maps
 * the 15 cached neighbours of every faulting page with it, so under writes
 * the whole data file ended up mapped: RSS grew with the store (430 MB per
 * node after the benchmark matrix), although the process holds none of it
 * beyond the page cache. Dropped, only what was read in the last second is
 * mapped; the page cache, and so the I/O, is the same.
 */
#include <errno.h>
#include <string.h>
#include <time.h>

#include "consensus/cons_internal.h"
#include "proto/clog.h"
#include "proto/deadline_ts.h"

#define CONS_SYNC_SLOW_MS 500
#define CONS_SYNC_SLOW_LOG_MS 10000
#define CONS_UNMAP_MS 1000

static void sync_once(struct cons_syncer *sy)
{
    int64_t t0 = mono_ms();
    int64_t took;
    int rv;

    rv = store_sync(sy->store);
    took = mono_ms() - t0;
    if (rv != 0) {
        clog(CLOG_ERROR, "cons",
             "store sync: %s: %s; the Raft log still holds every committed "
             "entry, but check the disk (dmesg, df) before it fills",
             store_strerror(rv), store_errmsg(sy->store));
    }
    if (took >= CONS_SYNC_SLOW_MS &&
        t0 >= sy->slow_logged_ms + CONS_SYNC_SLOW_LOG_MS) {
        sy->slow_logged_ms = t0;
        clog(CLOG_WARN, "cons",
             "store sync took %lld ms (interval %u ms): the disk is slow or "
             "saturated; see ops/runbooks/slow-disk.md",
             (long long)took, sy->interval_ms);
    }
    sy->syncs++;
    if (!sy->unmap_failed && t0 - sy->unmapped_ms >= CONS_UNMAP_MS) {
        sy->unmapped_ms = t0;
        if (store_unmap(sy->store) != 0) {
            sy->unmap_failed = 1;
            clog(CLOG_WARN, "cons",
                 "store map release failed (map not found in "
                 "/proc/self/maps, or madvise refused): the store's pages "
                 "stay mapped and count in this process's RSS; nothing "
                 "else changes");
        }
    }
}

static void *syncer_main(void *arg)
{
    struct cons_syncer *sy = arg;

    pthread_mutex_lock(&sy->lock);
    while (!sy->stop) {
        struct timespec until;

        deadline_ts(CLOCK_MONOTONIC, sy->interval_ms, &until);
        while (!sy->stop &&
               pthread_cond_timedwait(&sy->cond, &sy->lock, &until) !=
                   ETIMEDOUT) {
        }
        if (sy->stop) {
            break;
        }
        pthread_mutex_unlock(&sy->lock);
        sync_once(sy);
        pthread_mutex_lock(&sy->lock);
    }
    pthread_mutex_unlock(&sy->lock);
    return NULL;
}

int cons_syncer_start(struct cons_syncer *sy,
                      struct store *store,
                      unsigned interval_ms)
{
    pthread_condattr_t attr;
    int rv;

    memset(sy, 0, sizeof(*sy));
    if (interval_ms == 0) {
        return 0;
    }
    sy->store = store;
    sy->interval_ms = interval_ms;
    pthread_mutex_init(&sy->lock, NULL);
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&sy->cond, &attr);
    pthread_condattr_destroy(&attr);
    rv = pthread_create(&sy->thread, NULL, syncer_main, sy);
    if (rv != 0) {
        clog(CLOG_ERROR, "cons", "store sync thread: %s", strerror(rv));
        pthread_cond_destroy(&sy->cond);
        pthread_mutex_destroy(&sy->lock);
        return CONS_NOMEM;
    }
    sy->running = 1;
    return 0;
}

void cons_syncer_stop(struct cons_syncer *sy)
{
    if (!sy->running) {
        return;
    }
    pthread_mutex_lock(&sy->lock);
    sy->stop = 1;
    pthread_cond_signal(&sy->cond);
    pthread_mutex_unlock(&sy->lock);
    pthread_join(sy->thread, NULL);
    sync_once(sy); /* a clean stop leaves nothing to replay */
    pthread_cond_destroy(&sy->cond);
    pthread_mutex_destroy(&sy->lock);
    sy->running = 0;
}
