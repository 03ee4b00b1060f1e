/* consensus: the Raft loop of one node (libraft 0.15 with its uv io and
 * transport) and the state machine adapter over storage.
 *
 * DESIGN
 * One thread runs a libuv loop that owns the struct raft, every raft_* call
 * and every LMDB write transaction. Other threads talk to it through a
 * proposal queue (a mutex-protected list plus uv_async_send): cons_submit()
 * and cons_barrier() may be called from any thread; their callbacks run on the
 * loop thread.
 *
 * Group commit: each loop iteration drains the queue and, on the leader,
 * packs up to max_batch commands into one CommandBatch = one raft_apply()
 * buffer. Every node applies a batch in one LMDB transaction, so throughput
 * grows with the number of concurrent clients.
 *
 * Time: the leader stamps each command with its wall clock, never below the
 * previous command's time (the floor survives leader changes: it is stored
 * with the state). Apply never reads a clock.
 *
 * Leadership: on becoming leader the loop runs a raft_barrier() before it
 * accepts proposals or barriers for reads (libraft 0.15 appends no no-op entry
 * on election). A proposal whose leader loses leadership before commit is
 * answered CONS_LEADERSHIPLOST: its outcome is unknown and the client retries
 * with the same (client_id, seq).
 */
#ifndef CITYOPS_CONS_H
#define CITYOPS_CONS_H

#include <stddef.h>
#include <stdint.h>

#include "cityops/v1/command.pb-c.h"
#include "storage/store.h"

/* Error codes: consensus owns -2000..-2999. */
enum {
    CONS_NOMEM = -2001,
    CONS_NOTLEADER = -2002,      /* another node leads: see leader_id */
    CONS_NOLEADER = -2003,       /* no leader within the wait */
    CONS_LEADERSHIPLOST = -2004, /* outcome unknown: retry with same seq */
    CONS_SHUTDOWN = -2005,       /* node is stopping */
    CONS_IOERR = -2006,          /* raft I/O or apply failed */
    CONS_INVALID = -2007,        /* bad configuration or argument */
    CONS_TOOBIG = -2008,         /* command larger than an entry may be */
};

enum cons_member_role { CONS_VOTER = 0, CONS_STANDBY = 1, CONS_SPARE = 2 };

enum cons_state {
    CONS_STATE_UNAVAILABLE = 0,
    CONS_STATE_FOLLOWER,
    CONS_STATE_CANDIDATE,
    CONS_STATE_LEADER,
};

#define CONS_ADDRESS_SIZE 64
#define CONS_MAX_MEMBERS 16

struct cons_member {
    uint64_t id;
    char raft_address[CONS_ADDRESS_SIZE]; /* "127.0.0.1:9001" */
    enum cons_member_role role;
};

struct cons_config {
    uint64_t id;
    const char *raft_address; /* this node's raft listen address */
    const char *dir;          /* raft log directory (created if missing) */
    /* Initial configuration, used only to bootstrap an empty log. Every
     * node of a new cluster must be given the same list. */
    const struct cons_member *members;
    size_t n_members;
    unsigned heartbeat_ms;       /* 0 = 100 */
    unsigned election_ms;        /* 0 = 1000 */
    unsigned snapshot_threshold; /* entries; 0 = 8192 */
    unsigned snapshot_trailing;  /* entries; 0 = 8192 */
    unsigned max_batch;          /* commands per entry; 0 = 256 */
    struct store *store;         /* borrowed; outlives the cons */
};

struct cons;

/* Start the loop thread: open the raft log in cfg->dir, bootstrap it from
 * cfg->members if empty, start raft. On success *out is owned by the caller:
 * release with cons_stop(). */
int cons_start(const struct cons_config *cfg, struct cons **out);

/* Stop raft and the loop thread; pending callbacks run with CONS_SHUTDOWN
 * before it returns. Any thread but the loop's (it joins that thread), so
 * never from a consensus callback. */
void cons_stop(struct cons *c);

const char *cons_strerror(int rv);

/* Completion of cons_submit(). Runs on the loop thread. @result is borrowed
 * for the duration of the call and is non-NULL only when rv == 0.
 * @leader_id is the known leader when rv == CONS_NOTLEADER, else 0. */
typedef void (*cons_submit_cb)(void *arg,
                               int rv,
                               const Cityops__V1__CommandResult *result,
                               uint64_t leader_id);

/* Propose @cmd. The loop stamps cmd->time; @cmd is borrowed until the
 * callback has run. If this node is not leader: with a known leader the
 * callback gets CONS_NOTLEADER at once; with none the proposal waits up to
 * @wait_ms for an election, then gets CONS_NOLEADER. Any thread. Returns 0
 * (the callback will run exactly once) or an error (it won't): CONS_TOOBIG
 * if the packed command exceeds 4 MiB - 1 KiB, CONS_SHUTDOWN once
 * cons_stop() has begun, CONS_NOMEM, CONS_INVALID. A leader also waits
 * (parked, bounded by @wait_ms) until its post-election barrier has applied.
 * Callback codes: 0, CONS_NOTLEADER, CONS_NOLEADER, CONS_LEADERSHIPLOST,
 * CONS_SHUTDOWN, CONS_IOERR (entry applied but no result for it), CONS_NOMEM.
 */
int cons_submit(struct cons *c,
                Cityops__V1__Command *cmd,
                unsigned wait_ms,
                cons_submit_cb cb,
                void *arg);

/* Completion of cons_barrier(): rv == 0 means every entry committed before
 * the call is applied locally and this node was leader when it completed. */
typedef void (*cons_barrier_cb)(void *arg, int rv, uint64_t leader_id);

/* Linearizable read support: on the leader, run (or share) a raft barrier
 * started after this call. Not leader: as cons_submit(). Any thread. */
int cons_barrier(struct cons *c,
                 unsigned wait_ms,
                 cons_barrier_cb cb,
                 void *arg);

struct cons_status {
    enum cons_state state;
    uint64_t term;
    uint64_t leader_id;
    uint64_t commit_index;
    uint64_t applied_index;
    uint64_t last_log_index;
    size_t n_members;
    struct cons_member members[CONS_MAX_MEMBERS];
};

/* A copy of the latest status, refreshed by the loop thread. Any thread. */
void cons_status_get(struct cons *c, struct cons_status *out);

#endif /* CITYOPS_CONS_H */
