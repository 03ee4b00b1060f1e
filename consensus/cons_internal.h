/* consensus internals shared by cons.c, fsm.c, queue.c and the unit tests.
 * Never included from outside consensus/ and tests/consensus/. */
#ifndef CITYOPS_CONS_INTERNAL_H
#define CITYOPS_CONS_INTERNAL_H

#include <pthread.h>
#include <raft.h>

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
struct cons_fsm {
    struct raft *raft;         /* borrowed: the instance driving this fsm */
    struct store *store;       /* borrowed */
    struct store_results last; /* results of the latest apply */
    int have_last;
};

/* Fill @fsm (version 2) for @raft over @store. @raft may not be initialised
 * yet: only its address is kept. Returns 0 or CONS_NOMEM. */
int cons_fsm_init(struct raft_fsm *fsm, struct raft *raft, struct store *store);
/* Release what cons_fsm_init() allocated and the last results. */
void cons_fsm_close(struct raft_fsm *fsm);

/* queue.c: the proposal queue, the one mutex between caller threads and the
 * loop thread. */
enum cons_work_kind { CONS_WORK_SUBMIT, CONS_WORK_BARRIER };

struct cons_work {
    enum cons_work_kind kind;
    Cityops__V1__Command *cmd; /* SUBMIT: borrowed until the callback ran */
    uint64_t deadline_ms;      /* uv_hrtime() in ms after which: NOLEADER */
    cons_submit_cb submit_cb;
    cons_barrier_cb barrier_cb;
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

#endif /* CITYOPS_CONS_INTERNAL_H */
