/* consensus internals shared by cons.c, fsm.c, queue.c and the unit tests.
 * Never included from outside consensus/ and tests/consensus/. */
#ifndef CITYOPS_CONS_INTERNAL_H
#define CITYOPS_CONS_INTERNAL_H

#include <pthread.h>
#include <raft.h>
#include <raft/uv.h>

#include "consensus/cons.h"

/* Largest packed Command accepted by cons_submit() (the gRPC message limit
 * less room for the batch framing), and the largest CommandBatch we put in
 * one entry. */
#define CONS_MAX_COMMAND ((size_t)4 * 1024 * 1024 - 1024)
#define CONS_MAX_ENTRY ((size_t)4 * 1024 * 1024)

/* fsm.c: the entry format. libraft 0.15's uv log requires every entry's
 * length to be a multiple of 8 (uv_segment.c only asserts it, so a release
 * build writes a segment it cannot load again). A command entry is therefore
 *
 *     u64 little-endian payload length | packed CommandBatch | zeros to 8
 *
 * cons_entry_encode() fills @out with a raft_malloc'd buffer (ownership to the
 * caller, usually handed to raft_apply()); returns 0 or CONS_NOMEM.
 * cons_entry_decode() finds the payload inside @buf (borrowed); returns 0 or
 * CONS_INVALID if the framing is wrong. */
int cons_entry_encode(const Cityops__V1__CommandBatch *batch,
                      struct raft_buffer *out);
int cons_entry_decode(const struct raft_buffer *buf,
                      const void **payload,
                      size_t *len);

/* fsm.c: the raft_fsm callbacks over a store.
 *
 * apply() computes the entry index as raft_last_applied(r) + 1 (libraft 0.15
 * advances last_applied only after apply returns) and hands the batch to
 * store_apply_batch(). Its results live in the fsm (freed at the next apply
 * and at close), so followers, where nobody reads them, leak nothing; on the
 * leader libraft runs the raft_apply callback right after apply returns, and
 * the callback borrows them. */
/* An entry a follower applies after answering (cons_fsm_set_deferred). */
struct cons_deferred {
    struct cons_deferred *next;
    uint64_t index;
    size_t len;
    unsigned char entry[]; /* a copy of libraft's buffer */
};

/* The Raft log bounded in bytes (logbudget.c). */
#define CONS_LOGBUDGET_RING 65536 /* entry sizes kept, by index */
#define CONS_LOGBUDGET_HOLD_MS 60000 /* entry counts only, after a copy */
struct cons_logbudget {
    uint64_t half;         /* bytes: half the budget; 0 = no budget */
    unsigned max_trailing; /* entries: the configured snapshot_trailing */
    int hold;              /* entry counts only: a member catches up */
    uint32_t *len;         /* ring: bytes of the entry at index i % cap */
    size_t cap;
    uint64_t lo, hi;       /* the ring holds the sizes of [lo, hi] */
    uint64_t base;         /* index of the last snapshot taken */
    uint64_t since;        /* bytes of the entries applied after base */
    uint64_t kept;         /* bytes of the trailing entries kept at base */
    uint64_t kept_before;  /* kept at the snapshot before (if base fails) */
    int lowered;           /* the threshold was lowered for a snapshot */
    unsigned lowered_to;   /* to this */
    unsigned saved_threshold;
    uint64_t snapshots;    /* snapshots taken because the half was full */
};
int cons_logbudget_init(struct cons_logbudget *b,
                        uint64_t bytes,
                        unsigned max_trailing);
void cons_logbudget_close(struct cons_logbudget *b);
void cons_logbudget_note(struct cons_logbudget *b, uint64_t index, size_t len);
int cons_logbudget_due(const struct cons_logbudget *b);
unsigned cons_logbudget_trailing(const struct cons_logbudget *b,
                                 uint64_t index);
void cons_logbudget_taken(struct cons_logbudget *b, uint64_t index);
uint64_t cons_logbudget_bytes(const struct cons_logbudget *b);
void cons_logbudget_reset(struct cons_logbudget *b, uint64_t index);
void cons_logbudget_apply(struct cons_logbudget *b,
                          struct raft *r,
                          uint64_t index,
                          size_t len);
void cons_logbudget_snapshot(struct cons_logbudget *b,
                             struct raft *r,
                             uint64_t index);
void cons_logbudget_seed(struct cons_logbudget *b, const struct raft *r);
void cons_logbudget_hold(struct cons_logbudget *b, struct raft *r);
void cons_logbudget_restored(struct cons_logbudget *b,
                             struct raft *r,
                             uint64_t index);

struct cons_fsm {
    struct raft *raft;         /* borrowed: the instance driving this fsm */
    struct store *store;       /* borrowed */
    struct store_results last; /* results of the latest apply */
    int have_last;
    /* Store failure episode: set by a failed store_apply_batch(), cleared by
     * the next successful one. */
    int store_failed;
    uint64_t failed_index;
    char store_error[256];
    int async; /* version 3: the copy is made on the libuv threadpool */
    int defer; /* followers apply after answering (cons_fsm_set_deferred) */
    struct cons_deferred *deferred_head;
    struct cons_deferred *deferred_tail;
    uint64_t deferred; /* entries ever deferred */
    int thin;  /* snapshots are thin: see cons_fsm_set_thin() */
    /* Thin snapshots: the io's own snapshot_get, and the loop whose
     * threadpool makes the full copies. */
    int (*io_snapshot_get)(struct raft_io *io,
                           struct raft_io_snapshot_get *req,
                           raft_io_snapshot_get_cb cb);
    struct uv_loop_s *loop;
    struct cons_logbudget budget; /* off until cons_fsm_set_log_budget() */
    uint64_t budget_hold_until;   /* uv_now(): a member catches up */
};

/* Fill @fsm (version 2) for @raft over @store. @raft may not be initialised
 * yet: only its address is kept. Returns 0 or CONS_NOMEM. */
int cons_fsm_init(struct raft_fsm *fsm, struct raft *raft, struct store *store);
/* Followers apply after answering. libraft 0.15 applies newly committed
 * entries on a follower before it sends the AppendEntries result
 * (replication.c appendFollowerCb), so every reply waited for the store
 * work of the entries before it. With this set, apply() on a follower only
 * copies the entry into a queue and returns; the owner calls
 * cons_fsm_drain() once per loop turn (after the I/O callbacks, so after
 * the reply went out). Everything that must see the whole applied state
 * drains first: apply() off the follower path, snapshot(), restore(). A
 * failed entry stays first in line and turns deferral off until it applies,
 * so a failing store behaves as before (the next apply() fails too); libraft
 * will not hand that entry over again, so the owner retries the drain
 * itself (cons.c: once a second, and before a new leader declares itself
 * ready). */
void cons_fsm_set_deferred(struct raft_fsm *fsm);
/* Bound the log by @bytes as well as by entries (logbudget.c). Thin
 * snapshots only. 0 or CONS_NOMEM. */
int cons_fsm_set_log_budget(struct raft_fsm *fsm,
                            uint64_t bytes,
                            unsigned max_trailing);
/* Apply the queued entries in order; 0, or the failure of the first that
 * the store refused (it stays queued). */
int cons_fsm_drain(struct raft_fsm *fsm);
/* libraft's TCP transport with TCP_NODELAY on every connection
 * (transport.c). t must stay the first member. */
struct cons_transport {
    struct raft_uv_transport t;
    int (*tcp_listen)(struct raft_uv_transport *t, raft_uv_accept_cb cb);
    int (*tcp_connect)(struct raft_uv_transport *t,
                       struct raft_uv_connect *req,
                       raft_id id,
                       const char *address,
                       raft_uv_connect_cb cb);
    raft_uv_accept_cb user_accept;
};
int cons_transport_init(struct cons_transport *ct, struct uv_loop_s *loop);
void cons_transport_close(struct cons_transport *ct);
/* 1 if @r's own server is a voter in its current configuration. */
int cons_is_voter(const struct raft *r);
/* A voter that is a follower or candidate sends every other voter of @r's
 * configuration a keepalive over @io (see transport.c); a leader, a standby
 * or a spare sends nothing. */
void cons_transport_keepalive(struct raft *r, struct raft_io *io);
/* 1 if @m is such a keepalive: drop it before libraft sees it. */
int cons_transport_is_keepalive(const struct raft_message *m);

/* aio.c: io_destroy(2) of libraft's segment writers runs on a reaper thread
 * instead of the loop. How many were handed over, and how many are done. */
void cons_aio_counts(uint64_t *deferred, uint64_t *reaped);
/* 1 if this build defers io_destroy (built against libraft 0.15.x). */
int cons_aio_enabled(void);

/* segfill.c: posix_fallocate() also writes zeros over the new part of the
 * file, so that libraft's appends overwrite written blocks. How many files
 * and bytes were filled. */
void cons_segfill_counts(uint64_t *files, uint64_t *bytes);

/* lease.c: the leader lease that guards votes (loop thread). */
struct cons_lease {
    unsigned election_ms; /* the minimum election timeout */
    raft_time last_leader; /* io time a leader last reached this node */
    int heard;             /* last_leader is set */
    int gone;              /* the leader's host refused a connection (probe.c)
                            * and no leader reached this node since */
    uint64_t widened;      /* vote requests passed on as lease expired */
};
void cons_lease_init(struct cons_lease *l, unsigned election_ms);
/* See @m (about to be handed to libraft, which is in @state at io time
 * @now): remember leader contact; a RequestVote that a follower gets a full
 * election timeout after its leader last reached it is marked
 * disrupt_leader, so that libraft weighs it instead of refusing it for
 * having a leader. Returns 1 if @m was changed. */
int cons_lease_recv(struct cons_lease *l,
                    int state,
                    raft_time now,
                    struct raft_message *m);
/* 1 if a leader reached this node once but not in the last election
 * timeout: the leader libraft may still name is presumed gone. */
int cons_lease_expired(const struct cons_lease *l, raft_time now);
/* The leader is known to be gone (its host refused a connection to its Raft
 * port): the lease counts as expired until a leader reaches this node. */
void cons_lease_gone(struct cons_lease *l);

/* probe.c: one TCP connection attempt to the leader's Raft address (loop
 * thread); a refused one is reported to @refused. */
struct cons_probe {
    struct uv_loop_s *loop;
    uv_tcp_t tcp;
    uv_connect_t req;
    int busy;       /* tcp is open (an attempt or its close in progress) */
    int closed;     /* cons_probe_close() was called */
    raft_id target; /* the member probed */
    uint64_t started_ms;
    uint64_t probes;
    uint64_t refused;
    void (*refused_cb)(void *arg, raft_id id);
    void *arg;
};
void cons_probe_init(struct cons_probe *p,
                     struct uv_loop_s *loop,
                     void (*refused)(void *arg, raft_id id),
                     void *arg);
/* Try to connect to @address (numeric only) for member @id. 0 if started;
 * -1 if busy, closed, not numeric or not startable. */
int cons_probe_start(struct cons_probe *p, raft_id id, const char *address);
/* Give up the attempt in progress, if any (it reports nothing). */
void cons_probe_cancel(struct cons_probe *p);
/* At stop: cancel; no attempt starts afterwards. */
void cons_probe_close(struct cons_probe *p);

/* Switch @fsm to version 3: snapshots are copied on the libuv threadpool
 * (io->async_work; the uv io must be version 2). Not for the fixture, which
 * has no async work. */
void cons_fsm_set_async(struct raft_fsm *fsm);
/* Thin snapshots (after raft_init(), before raft_start()): a snapshot is
 * the 16-byte marker of store_snapshot_thin(), written after the store is
 * flushed, instead of a copy of the store; the io's snapshot_get is wrapped
 * so that a snapshot sent to a member that is behind the log carries a full
 * copy made then, on @loop's threadpool. */
void cons_fsm_set_thin(struct raft_fsm *fsm,
                       struct raft_io *io,
                       struct uv_loop_s *loop);
/* Release what cons_fsm_init() allocated and the last results. */
void cons_fsm_close(struct raft_fsm *fsm);

/* queue.c: the proposal queue, the one mutex between caller threads and the
 * loop thread. */
enum cons_work_kind {
    CONS_WORK_SUBMIT,
    CONS_WORK_BARRIER,
    CONS_WORK_ADD,
    CONS_WORK_ASSIGN,
    CONS_WORK_REMOVE,
    CONS_WORK_TRANSFER,
};

struct cons_work {
    enum cons_work_kind kind;
    Cityops__V1__Command *cmd; /* SUBMIT: borrowed until the callback ran */
    uint64_t deadline_ms;      /* uv_hrtime() in ms after which: NOLEADER */
    cons_submit_cb submit_cb;
    cons_barrier_cb barrier_cb;
    cons_change_cb change_cb;
    struct cons_member member; /* ADD: the member; others: id and role */
    void *arg;
    struct cons_work *next;
};

struct cons_queue {
    pthread_mutex_t mutex;
    struct cons_work *head;
    struct cons_work *tail;
    int closed;
};

int cons_queue_init(struct cons_queue *q);
/* Frees nothing the queue holds: drain it first. */
void cons_queue_close(struct cons_queue *q);
/* Append @w and, under the same lock, call @notify(@notify_arg) (so the
 * notified handle cannot be closed in between). Returns CONS_SHUTDOWN once
 * the queue is closed (then @w is not queued and the caller keeps it). */
int cons_queue_push(struct cons_queue *q,
                    struct cons_work *w,
                    int (*notify)(void *),
                    void *notify_arg);
/* Detach and return the whole list (oldest first), or NULL. */
struct cons_work *cons_queue_take(struct cons_queue *q);
/* Refuse further pushes; then @notify(@notify_arg) under the lock. */
void cons_queue_shut(struct cons_queue *q,
                     int (*notify)(void *),
                     void *notify_arg);
int cons_queue_is_shut(struct cons_queue *q);

/* Map a libraft code to a consensus code. */
int cons_from_raft(int rv);

/* The periodic store sync thread (syncer.c): with the store opened nosync,
 * store_sync() every interval_ms beside the libuv loop, and once more at
 * stop; and at most once a second, after a sync, store_unmap(). interval_ms
 * 0: no thread (the store syncs on every commit). */
struct cons_syncer {
    struct store *store;
    unsigned interval_ms;
    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int stop;
    int running;
    uint64_t syncs;
    int64_t slow_logged_ms;
    int64_t unmapped_ms; /* when store_unmap() last ran */
    int unmap_failed;    /* logged once; not tried again */
};

int cons_syncer_start(struct cons_syncer *sy,
                      struct store *store,
                      unsigned interval_ms);
void cons_syncer_stop(struct cons_syncer *sy);

/* change.c: one membership change (or leadership transfer) at a time on one
 * struct raft. Loop thread. See change.c for the libraft rules it relies on.
 * cons_change_start() returns 0 (then @done runs exactly once, from
 * cons_change_tick() or cons_change_abort()) or an error (it won't):
 * CONS_CANTCHANGE, CONS_NOTLEADER, CONS_NOTFOUND, CONS_EXISTS, CONS_INVALID.
 * @done gets 0 or CONS_LEADERSHIPLOST, CONS_TIMEOUT, CONS_SHUTDOWN, ...
 * and the member id (for a transfer with id 0: the one raft picked). */
enum cons_change_kind {
    CONS_CHANGE_ADD,
    CONS_CHANGE_ASSIGN,
    CONS_CHANGE_REMOVE,
    CONS_CHANGE_TRANSFER,
};

struct cons_change_args {
    enum cons_change_kind kind;
    uint64_t id;
    const char *address;        /* ADD */
    enum cons_member_role role; /* ADD (target role), ASSIGN */
};

typedef void (*cons_change_done_cb)(void *data, int rv, uint64_t id);

struct cons_change {
    struct raft *raft;
    enum cons_change_kind kind;
    uint64_t id;
    char address[CONS_ADDRESS_SIZE];
    int role; /* RAFT_VOTER... target */
    int step; /* ADD: 0 = raft_add, 1 = raft_assign */
    int busy;
    int fired;  /* the raft callback of the current step ran */
    int status; /* its status */
    struct raft_change req;
    struct raft_transfer transfer;
    cons_change_done_cb done;
    void *data;
};

void cons_change_init(struct cons_change *ch, struct raft *r);
int cons_change_start(struct cons_change *ch,
                      const struct cons_change_args *args,
                      cons_change_done_cb done,
                      void *data);
/* Take the next step or deliver the completion. Call after libraft ran
 * (never from inside a libraft callback). @stopping: raft is closing. */
void cons_change_tick(struct cons_change *ch, int stopping);
/* After raft_close(): complete a change still pending with CONS_SHUTDOWN. */
void cons_change_abort(struct cons_change *ch);
int cons_change_busy(const struct cons_change *ch);
int cons_role_to_raft(enum cons_member_role role);

/* promote.c: the auto-promotion decision, a pure function of what the
 * leader sees. */
struct cons_promote_member {
    uint64_t id;
    enum cons_member_role role;
    char zone[CONS_ZONE_SIZE];
    int reachable;
    int64_t unreachable_ms;
    uint64_t match_index;
};

struct cons_promote_settings {
    unsigned auto_promote_ms;
    int one_voter_per_zone;
    uint64_t slack; /* a standby within this many entries is caught up */
};

enum cons_promote_kind {
    CONS_PROMOTE_NONE = 0,   /* every voter reachable (or not for long) */
    CONS_PROMOTE_SWAP,       /* promote promote_id, then demote demote_id */
    CONS_PROMOTE_NOCANDIDATE /* a voter is lost but no standby fits */
};

struct cons_promote_decision {
    enum cons_promote_kind kind;
    uint64_t promote_id;
    uint64_t demote_id;
    char detail[256];
};

void cons_promote_decide(const struct cons_promote_member *members,
                         size_t n,
                         uint64_t commit_index,
                         const struct cons_promote_settings *settings,
                         struct cons_promote_decision *out);

#endif /* CITYOPS_CONS_INTERNAL_H */
