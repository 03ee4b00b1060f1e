/* Helpers shared by the files of storage/: the handle, the schema (database
 * list, key layouts) and error reporting. Never included from outside
 * storage/.
 *
 * Key layouts (all integers big-endian so that cursors iterate in order):
 *   meta          name (ASCII)                       -> u64 BE
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
 */
#ifndef CITYOPS_STORE_INTERNAL_H
#define CITYOPS_STORE_INTERNAL_H

#include <pthread.h>
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
    STORE_DB_N,
};

/* Database names, in the order store_digest() hashes them. */
extern const char *const store_db_names[STORE_DB_N];

#define STORE_META_APPLIED "applied_index"
#define STORE_META_LAST_TIME "last_time"
#define STORE_META_NEXT_CASE_ID "next_case_id"
#define STORE_META_SCHEMA "schema_version"
#define STORE_SCHEMA_VERSION 1

struct store {
    /* Guards env and dbi: readers hold it shared for the whole life of
     * their transaction, store_restore() holds it exclusive while it swaps
     * the data file. Writer-preferring, so a restore is not starved. */
    pthread_rwlock_t env_lock;
    MDB_env *env; /* NULL if a restore failed to reopen the environment */
    MDB_dbi dbi[STORE_DB_N];
    char *dir;
    size_t map_size;
    int nosync;  /* MDB_NOSYNC: the owner calls store_sync() */
    int lock_fd; /* flock()ed: one process per data directory */
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

/* Apply a cluster command (member_set, member_forget, cluster_event) inside
 * @txn; same contract as case_fsm_apply() (cluster.c). */
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
    char name[48];
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
