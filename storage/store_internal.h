/* Helpers shared by the files of storage/: the handle, the schema (database
 * list, key layouts) and error reporting. Never included from outside
 * storage/.
 *
 * Key layouts (all integers big-endian so that cursors iterate in order):
 *   meta          name (ASCII)                       -> u64 BE; cluster_id,
 *                                                       restored_from and
 *                                                       restore: a string
 *   cases         case id u64                        -> packed Case
 *   case_events   case id u64, seq u32               -> packed CaseEvent
 *   idx_state     state u8, case id u64              -> empty
 *   idx_dept      department, '\0', case id u64      -> empty
 *   idx_grid      grid code, '\0', case id u64       -> empty
 *   idx_category  type u8, major (2), minor (2), id  -> empty
 *   idx_reported  reported time (i64, sign flipped), case id u64 -> empty
 *   sessions      client id (bytes)                  -> seq u64, packed
 *                                                       CommandResult
 *   outbox        link, '\0', seq u64                -> packed OutboxMessage
 *   members       member id u64                      -> packed Member
 *   cluster_events raft index u64                    -> packed ClusterEvent
 *   audit         seq u64                            -> packed AuditRecord
 *   checkpoints   tree size u64                      -> packed Checkpoint
 *   audit_tree    "tree" (ASCII)                     -> size u64, head (32),
 *                                                       frontier (32 each)
 *   drills        index key u64                      -> packed DrillRecord
 *   config        kind u8, item id (ASCII)           -> packed item (admin.proto)
 *   config_history version u64                       -> packed ConfigVersionInfo
 *   idx_deadline  deadline (i64, sign flipped), case id u64, stage u8 -> empty
 *                 (the open stage clocks that have a deadline)
 *   eval          'C'/'G'/'K'/'W' prefixed rows: evaluation counters,
 *                 gauges, per-case records, workload (layout in eval.c)
 *   contacts      case id u64                        -> packed Contact (private)
 *   idx_tracking  tracking number (ASCII)            -> case id u64
 *   public_feed   time (i64, sign flipped), raft index u64, case id u64,
 *                 event seq u32                      -> packed PublicUpdate
 *   idx_geo       type u8, major (2), minor (2), lat cell u32, lon cell u32,
 *                 reported time (i64, sign flipped), case id u64
 *                                                    -> lat, lon (f64 BE);
 *                 0xff, case id u64                  -> that case's key
 *                 (layouts in public.c)
 *   fed_links     tier id (ASCII)                    -> packed FedLink
 *   fed_tasks     task id (ASCII)                    -> 'A' (assigned here)
 *                                                       or 'R' (received),
 *                                                       packed FedTaskView
 *   fed_inbox     origin tier id (ASCII)             -> highest seq u64
 *   fed_witness   origin tier id, '\0', tree size u64
 *                                                    -> packed Checkpoint
 *   fed_acked     outbox link (ASCII)                -> acked seq u64
 *   fed_subs      topic, '\0', subscriber tier id    -> the outbox link
 *                                                       to it (ASCII)
 *   fed_received  origin tier id, '\0', topic, '\0', key
 *                                                    -> packed Publication
 *   fed_handovers 'O', case id u64                   -> packed HandoverMessage
 *                 (a hand-over or escalation sent from here, unanswered);
 *                 'I', "<origin tier>/<origin case id>"
 *                                                    -> packed HandoverMessage
 *                 (one received here, not accepted or declined yet)
 *
 * An "index key" (drills, cluster_events) is meta key_base + the Raft
 * index: key_base is 0 until a restore, which sets it past every key of the
 * old cluster so that the new cluster's indexes (from 1 again) sort after
 * them.
 */
#ifndef CITYOPS_STORE_INTERNAL_H
#define CITYOPS_STORE_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include <lmdb.h>
#include <openssl/evp.h>

#include "store.h"

enum store_db {
    STORE_DB_META,
    STORE_DB_CASES,
    STORE_DB_CASE_EVENTS,
    STORE_DB_IDX_STATE,
    STORE_DB_IDX_DEPT,
    STORE_DB_IDX_GRID,
    STORE_DB_IDX_CATEGORY,
    STORE_DB_IDX_REPORTED,
    STORE_DB_SESSIONS,
    STORE_DB_MEMBERS,
    STORE_DB_OUTBOX,
    STORE_DB_CLUSTER_EVENTS,
    STORE_DB_AUDIT,
    STORE_DB_CHECKPOINTS,
    STORE_DB_AUDIT_TREE,
    STORE_DB_DRILLS,
    STORE_DB_CONFIG,
    STORE_DB_CONFIG_HISTORY,
    STORE_DB_IDX_DEADLINE,
    STORE_DB_EVAL,
    STORE_DB_CONTACTS,
    STORE_DB_IDX_TRACKING,
    STORE_DB_PUBLIC_FEED,
    STORE_DB_IDX_GEO,
    STORE_DB_FED_LINKS,
    STORE_DB_FED_TASKS,
    STORE_DB_FED_INBOX,
    STORE_DB_FED_WITNESS,
    STORE_DB_FED_ACKED,
    STORE_DB_FED_SUBS,
    STORE_DB_FED_RECEIVED,
    STORE_DB_FED_HANDOVERS,
    STORE_DB_N,
};

/* Database names, in the order store_digest() hashes them. */
extern const char *const store_db_names[STORE_DB_N];

#define STORE_META_APPLIED "applied_index"
#define STORE_META_LAST_TIME "last_time"
#define STORE_META_NEXT_CASE_ID "next_case_id"
#define STORE_META_SCHEMA "schema_version"
#define STORE_META_CLUSTER_ID "cluster_id"
#define STORE_META_RESTORED_FROM "restored_from"
#define STORE_META_RESTORE "restore"
#define STORE_META_KEY_BASE "key_base"
#define STORE_META_CONFIG_VERSION "config_version"
#define STORE_META_TICK "tick_time"
#define STORE_META_FED_NEXT_TASK "fed_next_task"
/* 2: the drills database and the cluster identity keys.
 * 3: configuration (config, config_history) and stage deadlines
 *    (idx_deadline).
 * 4: public reports (contacts, idx_tracking, public_feed, idx_geo); the
 *    upgrade builds the indexes and the feed from the stored cases and
 *    events (public_schema_upgrade()).
 * 5: federation (fed_links, fed_tasks, fed_inbox, fed_witness, fed_acked);
 *    they start empty.
 * 6: federation subscriptions and publications (fed_subs, fed_received);
 *    they start empty.
 * 7: pending hand-overs and escalations (fed_handovers); it starts empty.
 * An older environment is upgraded in place when opened for writing (the
 * new databases are created empty). */
#define STORE_SCHEMA_VERSION 7

struct store_archive;

struct store {
    /* Guards env and dbi: readers hold it shared for the whole life of
     * their transaction, store_restore() holds it exclusive while it swaps
     * the data file. Writer-preferring, so a restore is not starved. */
    pthread_rwlock_t env_lock;
    MDB_env *env; /* NULL if a restore failed to reopen the environment */
    MDB_dbi dbi[STORE_DB_N];
    char *dir;
    size_t map_size;
    void *map_addr; /* the data file's map (map_locate), or NULL */
    size_t map_len;
    int nosync;  /* MDB_NOSYNC: the owner calls store_sync() */
    int view;    /* dir is one data file opened read-only, without a lock
                  * (store_view_open) */
    int lock_fd; /* flock()ed: one process per data directory */
    atomic_int fault;              /* store_fault_set() */
    struct store_archive *archive; /* NULL: archiving off */
    void *config_cache;            /* config.c: deadline rules by version */
    pthread_mutex_t errmsg_lock;
    char errmsg[STORE_ERRMSG_SIZE];
};

/* Error reporting. store_errf() formats the message and returns @code.
 * store_mdb_err() appends mdb_strerror(@rc) ("put case/9: MDB_MAP_FULL:
 * ...") and maps @rc (an MDB_* code or an errno) to STORE_FULL, STORE_CORRUPT
 * or STORE_IOERR. */
int store_errf(struct store *s, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
int store_mdb_err(struct store *s, int rc, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Environment lifetime (store.c). store_env_open() opens s->env in s->dir
 * and every named database; store_env_close() closes it. Callers hold
 * env_lock exclusively or own the handle alone. */
int store_env_open(struct store *s);
void store_env_close(struct store *s);

/* Handles without store_open() (store.c). store_handle_new() allocates a
 * handle for @dir with no environment (free with store_handle_free()), so
 * that errors have a message buffer. store_dir_lock() takes the flock of
 * s->dir (STORE_BUSY if another store holds it). store_view_open() opens
 * the single LMDB data file @file read-only and unlocked (MDB_NOSUBDIR |
 * MDB_RDONLY | MDB_NOLOCK) as a store handle for the read functions; a
 * database the file lacks is left unusable (its reads fail), so that an
 * older schema still opens. On failure *out is NULL and @errmsg says why;
 * release with store_close(). */
int store_handle_new(const char *dir,
                     const struct store_options *opts,
                     struct store **out);
void store_handle_free(struct store *s);
int store_dir_lock(struct store *s);
int store_view_open(const char *file,
                    struct store **out,
                    char *errmsg,
                    size_t errlen);

/* Begin a read transaction with env_lock held shared; store_read_end()
 * aborts it and releases the lock. On failure nothing is held. */
int store_read_begin(struct store *s, MDB_txn **txn);
void store_read_end(struct store *s, MDB_txn *txn);

static inline void store_be64_put(uint8_t *p, uint64_t v)
{
    for (int i = 7; i >= 0; i--) {
        p[i] = (uint8_t)(v & 0xff);
        v >>= 8;
    }
}

static inline uint64_t store_be64_get(const uint8_t *p)
{
    uint64_t v = 0;

    for (int i = 0; i < 8; i++) {
        v = (v << 8) | p[i];
    }
    return v;
}

static inline void store_be32_put(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

/* Meta values are u64 BE; a missing key reads as 0. */
int store_meta_get(struct store *s,
                   MDB_txn *txn,
                   const char *name,
                   uint64_t *value);
int store_meta_put(struct store *s,
                   MDB_txn *txn,
                   const char *name,
                   uint64_t value);

/* String meta values (cluster_id, restored_from, restore): a missing key
 * reads as "". store_meta_str_put() with "" deletes the key. */
int store_meta_str_get(struct store *s,
                       MDB_txn *txn,
                       const char *name,
                       char *buf,
                       size_t size);
int store_meta_str_put(struct store *s,
                       MDB_txn *txn,
                       const char *name,
                       const char *value);
/* The key of Raft index @index in an index-keyed database (see above). */
int store_index_key(struct store *s,
                    MDB_txn *txn,
                    uint64_t index,
                    uint64_t *key);

/* Case records (schema.c). store_case_load() returns STORE_NOTFOUND without
 * an error message for an unknown id; on success *out is malloc'd by
 * protobuf-c (free with cityops__v1__case__free_unpacked). */
int store_case_load(struct store *s,
                    MDB_txn *txn,
                    uint64_t case_id,
                    Cityops__V1__Case **out);

/* The indexed fields of a case, captured before a change so that
 * store_case_save() can move its index entries. */
struct store_case_ix {
    int present;
    uint8_t state[9];
    uint8_t dept[STORE_MAX_ID + 1 + 8];
    size_t dept_len; /* 0: not indexed */
    uint8_t grid[STORE_MAX_ID + 1 + 8];
    size_t grid_len; /* 0: not indexed */
    uint8_t category[13];
    uint8_t reported[16];
};
void store_case_ix_capture(const Cityops__V1__Case *c,
                           struct store_case_ix *ix);

/* Write @c and move its index entries from @old (NULL or !present: a new
 * case) to its current fields. */
int store_case_save(struct store *s,
                    MDB_txn *txn,
                    const struct store_case_ix *old,
                    const Cityops__V1__Case *c);

/* Put @msg packed under @key in @dbi, packing it straight into the space
 * mdb_put() reserves (MDB_RESERVE, so not for MDB_DUPSORT databases).
 * @flags are further mdb_put() flags. Returns 0 or the MDB_* code. */
int store_msg_put(MDB_txn *txn,
                  MDB_dbi dbi,
                  MDB_val *key,
                  const ProtobufCMessage *msg,
                  unsigned int flags);

/* Append @ev under (ev->case_id, ev->seq). */
int store_event_put(struct store *s,
                    MDB_txn *txn,
                    const Cityops__V1__CaseEvent *ev);

/* Run one command's business logic inside @txn (a nested transaction the
 * caller discards unless res->code is RESULT_OK). Fills @res: code, message
 * (malloc'd or the empty string) and, on success, the updated case. Returns
 * 0 whenever a result was produced, a STORE_* code on environment failure. */
int case_fsm_apply(struct store *s,
                   MDB_txn *txn,
                   uint64_t index,
                   const Cityops__V1__Command *cmd,
                   Cityops__V1__CommandResult *res);

/* 1 if case_fsm_apply() refuses @cmd only before its first write (a
 * REPORT), so that the caller may run it in its own transaction, without
 * a nested one to discard: a refused REPORT has written nothing. */
int case_fsm_unnested(const Cityops__V1__Command *cmd);

/* A new case from @r on behalf of @cmd (its time, actor, role), as a
 * `report` command would make it: public reports (public.c) come this
 * way. Same contract as case_fsm_apply(); on OK res->case_ holds the case. */
int case_fsm_report(struct store *s,
                    MDB_txn *txn,
                    uint64_t index,
                    const Cityops__V1__Command *cmd,
                    const Cityops__V1__ReportRequest *r,
                    Cityops__V1__CommandResult *res);

/* 跨界移交 (federation): the open case @case_id goes to TRANSFERRED_OUT
 * with a TRANSFER_OUT event (@reason), by role SHIFT_LEADER, through the
 * same path as every case event (indexes, clocks, evaluation, public
 * feed). Same contract as case_fsm_apply(); on OK res->case_ holds the
 * case. */
int case_fsm_transfer_out(struct store *s,
                          MDB_txn *txn,
                          uint64_t index,
                          const Cityops__V1__Command *cmd,
                          uint64_t case_id,
                          const char *reason,
                          Cityops__V1__CommandResult *res);

/* Set the stored case's remote_ref (the other tier's "<tier>/<id>"), with
 * no event: a reference, not a change of the case. STORE_NOTFOUND if there
 * is no such case. */
/* A COMMENT event with @text on the open case @case_id (federation: a
 * hand-over asked for or declined), through the same path as every case
 * event. Same contract as case_fsm_apply(). */
int case_fsm_comment(struct store *s,
                     MDB_txn *txn,
                     uint64_t index,
                     const Cityops__V1__Command *cmd,
                     uint64_t case_id,
                     const char *text,
                     Cityops__V1__CommandResult *res);

int case_remote_ref_set(struct store *s,
                        MDB_txn *txn,
                        uint64_t index,
                        uint64_t case_id,
                        const char *ref);

/* --- configuration (config.c) ---
 * config_apply(): a `config` command (ConfigBatch) as one new version; same
 * contract as case_fsm_apply(); res->version is the new version. The
 * lookups read @txn; *out is unpacked (free with its __free_unpacked) and
 * STORE_NOTFOUND means no such item. config_rules() returns the deadline
 * rules of the version in force (cached on the handle; apply thread only).
 * config_list() kinds: 1 org units, 2 departments, 3 staff, 4 categories,
 * 5 grids, 6 office hours, 7 calendar days, 8 eval weights, 9 public. */
struct deadline_rules;
int config_op(const Cityops__V1__Command *cmd);
int config_apply(struct store *s,
                 MDB_txn *txn,
                 uint64_t index,
                 const Cityops__V1__Command *cmd,
                 Cityops__V1__CommandResult *res);
uint64_t config_version(struct store *s, MDB_txn *txn);
int config_rules(struct store *s,
                 MDB_txn *txn,
                 const struct deadline_rules **out);
void config_category_id(char buf[16],
                        Cityops__V1__CategoryType type,
                        const char *major,
                        const char *minor);
int config_category(struct store *s,
                    MDB_txn *txn,
                    Cityops__V1__CategoryType type,
                    const char *major,
                    const char *minor,
                    Cityops__V1__Category **out);
int config_staff(struct store *s,
                 MDB_txn *txn,
                 const char *id,
                 Cityops__V1__Staff **out);
/* The same lookups for the apply thread alone, through a cache on the
 * handle: *out is borrowed until the next *_peek call, never freed by the
 * caller. Each call still reads @txn (the cache is checked against its
 * bytes), so it sees what config_category() etc. would. */
int config_category_peek(struct store *s,
                         MDB_txn *txn,
                         Cityops__V1__CategoryType type,
                         const char *major,
                         const char *minor,
                         const Cityops__V1__Category **out);
int config_staff_peek(struct store *s,
                      MDB_txn *txn,
                      const char *id,
                      const Cityops__V1__Staff **out);
int config_public_peek(struct store *s,
                       MDB_txn *txn,
                       const Cityops__V1__PublicSettings **out);
/* 1 if any staff record exists: then every human actor must be one. */
int config_staff_any(struct store *s, MDB_txn *txn);
int config_department(struct store *s,
                      MDB_txn *txn,
                      const char *id,
                      Cityops__V1__Department **out);
int config_grid(struct store *s,
                MDB_txn *txn,
                const char *code,
                Cityops__V1__Grid **out);
int config_org_unit(struct store *s,
                    MDB_txn *txn,
                    const char *id,
                    Cityops__V1__OrgUnit **out);
int config_public(struct store *s,
                  MDB_txn *txn,
                  Cityops__V1__PublicSettings **out);
int config_eval_weights(struct store *s,
                        MDB_txn *txn,
                        const char *object_kind,
                        Cityops__V1__EvalWeights **out);
int config_list(struct store *s,
                MDB_txn *txn,
                int kind,
                ProtobufCMessage ***out,
                size_t *n);
void config_cache_free(struct store *s);

/* --- stage clocks (clocks.c) and authorization (authz.c) ---
 * clocks_event(): open/close/pause the stage clocks of @c for @ev (after
 * the state change), computing deadlines from the configuration in force.
 * clocks_ix_update(): remove the deadline index entries of @old's clocks,
 * add those of @c's (either may be NULL). clocks_ix_next(): the first
 * entry after (@after, @after_case) with a deadline <= @until, or
 * STORE_NOTFOUND. clocks_mark_overdue(): mark the open clock of @st overdue
 * if its deadline is before @now; 1 if it was newly marked.
 * case_authorize(): 0 allowed, 1 refused (@why says why), or an error. */
int clocks_event(struct store *s,
                 MDB_txn *txn,
                 const Cityops__V1__Command *cmd,
                 Cityops__V1__Case *c,
                 Cityops__V1__CaseEvent *ev);
int clocks_ix_update(struct store *s,
                     MDB_txn *txn,
                     const Cityops__V1__Case *old,
                     const Cityops__V1__Case *c);
int clocks_ix_next(struct store *s,
                   MDB_txn *txn,
                   int64_t after,
                   uint64_t after_case,
                   int64_t until,
                   int64_t *deadline,
                   uint64_t *case_id,
                   Cityops__V1__Stage *stage);
int clocks_mark_overdue(Cityops__V1__Case *c,
                        Cityops__V1__Stage st,
                        int64_t now);
int case_authorize(struct store *s,
                   MDB_txn *txn,
                   const Cityops__V1__Command *cmd,
                   const Cityops__V1__Case *c,
                   Cityops__V1__CaseEventType type,
                   char *why,
                   size_t len);

/* REOPEN (public.c): a CLOSED case (closed as fixed, within the
 * configured reopen window) goes back to DISPOSED to be checked again;
 * reopen_count + 1, a public REOPEN event. Same contract as
 * case_fsm_apply(). */
int case_fsm_reopen(struct store *s,
                    MDB_txn *txn,
                    uint64_t index,
                    const Cityops__V1__Command *cmd,
                    uint64_t case_id,
                    const char *reason,
                    Cityops__V1__CommandResult *res);

/* --- public reports (public.c) ---
 * public_op()/public_apply(): the public_report, reopen and redact commands;
 * same contract as case_fsm_apply(). public_on_event(): keep the tracking
 * index, the spatial index and the public feed for @ev, just stored with
 * @c (the case after it); called by case_commit() for every CaseEvent.
 * public_schema_upgrade(): build them for the stored cases (schema < 4). */
int public_op(const Cityops__V1__Command *cmd);
int public_apply(struct store *s,
                 MDB_txn *txn,
                 uint64_t index,
                 const Cityops__V1__Command *cmd,
                 Cityops__V1__CommandResult *res);
int public_on_event(struct store *s,
                    MDB_txn *txn,
                    const Cityops__V1__Case *c,
                    const Cityops__V1__CaseEvent *ev);
int public_schema_upgrade(struct store *s, MDB_txn *txn);

/* --- evaluation (eval.c) ---
 * eval_on_event(): update the evaluation counters, gauges and workload rows
 * for @ev, just stored with @c (the case after it), in the same @txn.
 * Called by case_commit() for every CaseEvent. */
int eval_on_event(struct store *s,
                  MDB_txn *txn,
                  const Cityops__V1__Case *c,
                  const Cityops__V1__CaseEvent *ev);

/* Apply a cluster command (member_set, member_forget, cluster_event,
 * cluster_init, drill_record) inside @txn; same contract as
 * case_fsm_apply() (cluster.c). */
int cluster_apply(struct store *s,
                  MDB_txn *txn,
                  uint64_t index,
                  const Cityops__V1__Command *cmd,
                  Cityops__V1__CommandResult *res);
int cluster_op(const Cityops__V1__Command *cmd);

/* The audit trail (audit.c). store_apply_batch() loads the tree state once
 * per batch, and for every command: audit_target_begin() before it runs
 * (names the target, hashes its stored value), audit_append() after it (the
 * record, the chain head, the frontier), then audit_tree_save() before the
 * commit.
 *
 * The frontier holds the roots of the perfect subtrees that make up the
 * RFC 6962 tree of `size` leaves, largest (leftmost) first: one per set bit
 * of size, so at most 64. Appending a leaf merges the trailing equal-sized
 * subtrees (O(log n)); the root folds them right to left (O(log n)). */
#define AUDIT_FRONTIER_MAX 64

struct audit_tree {
    uint64_t size; /* records [0, size) */
    uint8_t head[STORE_HASH_SIZE];
    uint8_t frontier[AUDIT_FRONTIER_MAX][STORE_HASH_SIZE];
    unsigned n_frontier; /* popcount(size) */
    int dirty;           /* changed since audit_tree_load() */
    EVP_MD_CTX *md;      /* SHA-256 context reused by the batch */
};

/* What a command acts on: its name in the record and, when it is a stored
 * value, the database and key whose bytes are hashed before and after. */
struct audit_target {
    int db; /* enum store_db, or -1: nothing stored to hash */
    uint64_t key;
    int has_before;
    uint8_t before[STORE_HASH_SIZE];
    char name[128];
    uint8_t skey[96]; /* skey_len > 0: the key is these bytes, not key */
    size_t skey_len;
};

int audit_tree_load(struct store *s, MDB_txn *txn, struct audit_tree *t);
int audit_tree_save(struct store *s, MDB_txn *txn, struct audit_tree *t);
void audit_tree_release(struct audit_tree *t);
/* Root of the tree at t->size, from the frontier. */
int audit_tree_root(struct audit_tree *t, uint8_t root[STORE_HASH_SIZE]);

int audit_target_begin(struct store *s,
                       MDB_txn *txn,
                       uint64_t index,
                       const Cityops__V1__Command *cmd,
                       struct audit_tree *t,
                       struct audit_target *tg);
/* Append the record of @cmd (result @res; @replayed: answered from the
 * session cache) at seq t->size and advance the head and the frontier. */
int audit_append(struct store *s,
                 MDB_txn *txn,
                 uint64_t index,
                 const Cityops__V1__Command *cmd,
                 struct audit_tree *t,
                 struct audit_target *tg,
                 const Cityops__V1__CommandResult *res,
                 int replayed);

/* The checkpoint commands (checkpoint, checkpoint_signature); same contract
 * as case_fsm_apply(). A checkpoint covers records [0, t->size): the trail
 * before the checkpoint command's own record. */
int audit_op(const Cityops__V1__Command *cmd);
int audit_apply(struct store *s,
                MDB_txn *txn,
                uint64_t index,
                const Cityops__V1__Command *cmd,
                struct audit_tree *t,
                Cityops__V1__CommandResult *res);

/* 1 if @cp carries a 64-byte Ed25519 signature by its own 32-byte key
 * over its checkpoint message, 0 if not, STORE_NOMEM. */
int audit_checkpoint_verify(const Cityops__V1__Checkpoint *cp);

/* The transactional outbox (audit.c): append a row of @kind to @link's
 * outbox with the next seq of that link (from 1, no gaps), created_at
 * @time, raft_index @index and @payload packed. Links are at most
 * STORE_OUTBOX_KEY_MAX - 9 bytes (STORE_INVALID otherwise). */
#define STORE_OUTBOX_KEY_MAX 96
int outbox_put(struct store *s,
               MDB_txn *txn,
               const char *link,
               const char *kind,
               int64_t time,
               uint64_t index,
               const ProtobufCMessage *payload);

/* --- federation (fed.c) ---
 * fed_op()/fed_apply(): fed_assign_task, fed_feedback, fed_inbound,
 * fed_outbox_ack, fed_link_set, fed_forward_task, fed_task_to_case,
 * fed_handover, fed_subscribe and fed_publish; same contract as
 * case_fsm_apply(). fed_on_tick(): from the case clock's TICK (@cmd):
 * key tasks whose deadline passed with a child's final feedback missing
 * are marked supervised, once, and each late child gets a
 * "task_supervise" message. 0 or a STORE_* code. */
int fed_op(const Cityops__V1__Command *cmd);
int fed_on_tick(struct store *s,
                MDB_txn *txn,
                uint64_t index,
                const Cityops__V1__Command *cmd);
int fed_apply(struct store *s,
              MDB_txn *txn,
              uint64_t index,
              const Cityops__V1__Command *cmd,
              Cityops__V1__CommandResult *res);

/* Walk the whole trail of @s (a store or a view) in one read txn: each
 * record's key is its seq, its prev_hash is the hash of the record before
 * it and its hash is SHA-256(prev_hash || its bytes without the hash);
 * then the audit_tree head must equal the last hash. Fills *size and @head
 * on success; STORE_CORRUPT with the first bad record named otherwise. */
int audit_chain_verify(struct store *s,
                       uint64_t *size,
                       uint8_t head[STORE_HASH_SIZE]);

/* Snapshots and backups share the copy (snapshot.c): a compact copy of the
 * environment, taken in one read txn, into an unlinked temp file in the
 * data directory. On success *fd is that file (caller closes) and *index
 * the applied index the copy holds. */
int store_copy_tmp(struct store *s, int *fd, uint64_t *index);
/* An unlinked temp file in directory @dir ("" or NULL: the current one),
 * for reading and writing. */
int store_tmpfile(struct store *s, const char *dir, int *fd);
/* Write all of @buf at the current offset of @fd / read @len bytes at
 * @off; @what names the file in the error message. */
int store_write_all(struct store *s,
                    int fd,
                    const void *buf,
                    size_t len,
                    const char *what);
int store_pread_all(struct store *s,
                    int fd,
                    void *buf,
                    size_t len,
                    uint64_t off,
                    const char *what);
/* "/proc/self/fd/<fd>": the path under which LMDB can open an unlinked
 * file. */
void store_fd_path(int fd, char *buf, size_t size);

/* The command archive (archive.c). archive_open() is called by
 * store_open() and only remembers the root (the cluster's directory is
 * scanned once the cluster id is known); archive_append() runs on the
 * applying thread after an entry's transaction committed, with @prev the
 * applied index before it, and never fails (errors go to the status). */
int archive_open(struct store *s, const char *root);
void archive_close(struct store *s);
void archive_append(struct store *s,
                    uint64_t prev,
                    uint64_t index,
                    const void *buf,
                    size_t len);
int archive_sync(struct store *s);

/* Reading a cluster's archive directory in order (restore). Records come
 * back with @prev: the applied index before them (the segment header's for
 * a segment's first record, else the record before). A record that does
 * not check (torn, bad CRC, out of order) ends its segment. *payload is
 * malloc'd, the caller frees it. *eof = 1 after the last record. */
struct archive_reader;
int archive_reader_open(struct store *s,
                        const char *dir,
                        struct archive_reader **out);
int archive_reader_next(struct store *s,
                        struct archive_reader *r,
                        uint64_t *prev,
                        uint64_t *index,
                        uint8_t **payload,
                        size_t *len,
                        int *eof);
/* Bytes of segments read so far and in all. */
void archive_reader_progress(const struct archive_reader *r,
                             uint64_t *done,
                             uint64_t *total);
void archive_reader_close(struct archive_reader *r);

/* Page tokens are the decimal number to resume after (read.c): "" gives 0,
 * anything but digits STORE_INVALID. */
int store_token_parse(const char *tok, uint64_t *after);

/* Free the first @n unpacked messages of @msgs, then the array (store.c). */
void store_msgs_free(ProtobufCMessage **msgs, size_t n);

/* Mark @res refused with @code and a copy of @msg. Returns 0 or
 * STORE_NOMEM (store.c). */
int store_result_fail(Cityops__V1__CommandResult *res,
                      Cityops__V1__ResultCode code,
                      const char *msg);

/* Set a protobuf-c string field to a malloc'd copy of @v, freeing the old
 * value. Returns 0 or STORE_NOMEM. */
int store_str_set(char **field, const char *v);

#endif /* CITYOPS_STORE_INTERNAL_H */
