/* storage: the LMDB environment of one node and the deterministic state
 * machine that applies replicated commands to it.
 *
 * Contract:
 * - One environment per node, in one directory. Named databases (keys are
 *   big-endian so that cursors iterate in order): meta, cases, case_events,
 *   idx_state, idx_dept, idx_grid, idx_category, idx_reported, sessions,
 *   members, cluster_events, audit, checkpoints, audit_tree.
 * - store_apply_batch() applies one Raft entry (a packed CommandBatch) in one
 *   write transaction that also records the entry's index. It reads only the
 *   batch and the database: no clock, no randomness. Business errors (illegal
 *   transition, wrong role, unknown case) become CommandResults; only an
 *   environment failure (disk full, corrupt file) makes it return non-zero, and
 *   then nothing of the batch is stored.
 * - Entries whose index is <= the stored applied index are skipped, so a
 *   restart that replays the Raft log applies nothing twice.
 *
 * Threads: one thread (the Raft loop) calls the write functions
 * (store_apply_batch, store_restore). Read functions may be called from any
 * thread at any time; each uses its own short read transaction (MDB_NOTLS).
 */
#ifndef CITYOPS_STORE_H
#define CITYOPS_STORE_H

#include <stddef.h>
#include <stdint.h>

#include "cityops/v1/audit.pb-c.h"
#include "cityops/v1/case.pb-c.h"
#include "cityops/v1/cases.pb-c.h"
#include "cityops/v1/cluster.pb-c.h"
#include "cityops/v1/command.pb-c.h"

/* Error codes: storage owns -1000..-1999. */
enum {
    STORE_NOMEM = -1001,    /* allocation failed */
    STORE_IOERR = -1002,    /* LMDB or file system error */
    STORE_FULL = -1003,     /* LMDB map or disk full */
    STORE_CORRUPT = -1004,  /* stored bytes do not decode */
    STORE_NOTFOUND = -1005, /* no such record */
    STORE_INVALID = -1006,  /* bad argument (batch that does not decode...) */
    STORE_BUSY = -1007,     /* data directory locked by another process */
};

#define STORE_ERRMSG_SIZE 256
#define STORE_DIGEST_SIZE 32

/* Limits enforced on every command (apply refuses larger fields). */
#define STORE_MAX_DESCRIPTION 4000
#define STORE_MAX_TEXT 1000 /* reasons, notes, addresses */
#define STORE_MAX_ID 128    /* actor, department, client ids */
#define STORE_MAX_ATTACHMENTS 32

struct store;

struct store_options {
    size_t map_size; /* LMDB map size in bytes; 0 = 1 GiB */
    /* 1: commits do not fsync (MDB_NOSYNC); the owner calls store_sync()
     * periodically. An OS crash or power loss may then undo the commits
     * since the last sync, which is safe only because Raft keeps the log
     * durable and each apply transaction records the index it applied: the
     * lost entries are applied again on restart (or a snapshot replaces the
     * state). A process crash loses nothing (the page cache survives it).
     * If the file system does not keep write order, a power loss can tear
     * the environment: such a node is rebuilt from a peer (restore). */
    int nosync;
};

/* Open (creating if needed) the environment in directory @dir, which must
 * exist. On success *out is owned by the caller: release with store_close(). */
int store_open(const char *dir,
               const struct store_options *opts,
               struct store **out);
void store_close(struct store *s);

/* Flush committed transactions to disk (fdatasync). Any thread. Needed only
 * with nosync; a no-op cost otherwise. */
int store_sync(struct store *s);

/* Detail of the last error on this handle (loop thread) or a static string. */
const char *store_errmsg(const struct store *s);
const char *store_strerror(int rv);

/* Highest Raft index whose effects are stored. */
uint64_t store_applied_index(struct store *s);
/* Leader time of the last applied command (UTC us): the floor for the next. */
int64_t store_last_time(struct store *s);

/* Results of one store_apply_batch() call. results[i] is the result of the
 * batch's i-th command; each is owned by this struct. */
struct store_results {
    size_t n;
    Cityops__V1__CommandResult **results;
    int skipped; /* 1 if the entry was at or below the applied index */
};
void store_results_free(struct store_results *r);

/* Apply the packed CommandBatch @buf at Raft index @index. On success fills
 * *out (caller frees with store_results_free). A batch that does not decode
 * is still recorded as applied (every node sees the same bytes) and yields
 * STORE_INVALID-free empty results with skipped = 0. Returns STORE_FULL or
 * STORE_IOERR if the transaction could not commit: nothing was stored. */
int store_apply_batch(struct store *s,
                      uint64_t index,
                      const void *buf,
                      size_t len,
                      struct store_results *out);

/* Reads. Returned messages are malloc'd by protobuf-c: the caller frees them
 * with the matching __free_unpacked(msg, NULL). *applied (if not NULL) gets
 * the applied index seen by the read transaction. */
int store_case_get(struct store *s,
                   uint64_t case_id,
                   Cityops__V1__Case **out,
                   uint64_t *applied);

/* List cases matching @req's filters, in case id order, starting after the
 * page token. Fills *out (caller frees with
 * cityops__v1__list_response__free_unpacked). */
int store_case_list(struct store *s,
                    const Cityops__V1__ListRequest *req,
                    Cityops__V1__ListResponse **out);

int store_case_history(struct store *s,
                       uint64_t case_id,
                       Cityops__V1__HistoryResponse **out);

uint64_t store_case_count(struct store *s);

/* The replicated address book of members added at run time. *out is
 * malloc'd by protobuf-c (cityops__v1__member__free_unpacked). */
int store_member_get(struct store *s,
                     uint64_t id,
                     Cityops__V1__Member **out);

/* The last @max cluster events, oldest first. On success *out is a malloc'd
 * array of *n unpacked events: free each with
 * cityops__v1__cluster_event__free_unpacked, then the array with free(). */
int store_cluster_events(struct store *s,
                         size_t max,
                         Cityops__V1__ClusterEvent ***out,
                         size_t *n);

/* SHA-256 over every replicated key and value (excluding nothing that apply
 * writes): equal digests mean equal state. */
int store_digest(struct store *s,
                 uint8_t out[STORE_DIGEST_SIZE],
                 uint64_t *applied);

/* --- audit trail (audit.c) ---
 *
 * store_apply_batch() appends one AuditRecord per command it applies, in the
 * same transaction, refused commands and replayed retries included, with the
 * SHA-256 of the target's stored value before and after. The trail is never
 * rewritten. A `checkpoint` command stores an unsigned tree head at the
 * current size; a `checkpoint_signature` command attaches a signature that
 * apply verifies (Ed25519 over the canonical message in audit.proto) and
 * refuses if it does not match the stored head.
 *
 * Record fields: operation is the Command oneof's proto field name
 * ("report", "return", "member_set", "checkpoint", ...; "none" without one),
 * suffixed " (retry)" when the result came from the retry-key cache; target
 * is "case/<id>" (a refused report: "case/new"; a merge: the merged case),
 * "member/<id>", "cluster/event" or "audit/checkpoint".
 *
 * Checkpoint commands need role SYSTEM, ADMIN or AUDITOR (else
 * PERMISSION_DENIED) and return OK with no case:
 * - checkpoint: the head over records [0, n), n = the trail size before the
 *   command's own record, which follows it and hashes the stored head as
 *   its after_sha256. FAILED_PRECONDITION on an empty trail.
 * - checkpoint_signature: NOT_FOUND without a head of that tree_size;
 *   INVALID_ARGUMENT unless the signature is 64 bytes, the key 32 and the
 *   signature verifies; a head is signed once: the same signature again is
 *   OK and changes nothing, another is FAILED_PRECONDITION. */

#define STORE_HASH_SIZE 32

/* Records in the trail and the chain head (hash of the last record; zeros
 * when empty). */
int store_audit_head(struct store *s,
                     uint64_t *size,
                     uint8_t head[STORE_HASH_SIZE]);

/* Records matching @req in seq order (see AuditListRequest). *out is
 * malloc'd by protobuf-c (cityops__v1__audit_list_response__free_unpacked). */
int store_audit_list(struct store *s,
                     const Cityops__V1__AuditListRequest *req,
                     Cityops__V1__AuditListResponse **out);

/* The checkpoint of @tree_size (0: the latest, signed or not);
 * STORE_NOTFOUND if there is none. */
int store_checkpoint_get(struct store *s,
                         uint64_t tree_size,
                         Cityops__V1__Checkpoint **out);
/* Every checkpoint, oldest first; caller frees with
 * cityops__v1__checkpoint_list__free_unpacked. */
int store_checkpoint_list(struct store *s, Cityops__V1__CheckpointList **out);

/* RFC 6962 Merkle tree head over records [0, tree_size), computed from the
 * stored records (O(n)); STORE_INVALID if tree_size exceeds the trail. */
int store_audit_root(struct store *s,
                     uint64_t tree_size,
                     uint8_t root[STORE_HASH_SIZE]);
/* RFC 6962 audit path of record @seq in the tree of @tree_size, and the
 * record itself, plus the checkpoint of @tree_size if one is stored. Caller
 * frees *out. STORE_INVALID if seq >= tree_size or tree_size exceeds the
 * trail: sizes are explicit here (0 is invalid); the RPC's "0: the latest
 * checkpoint" is resolved by the caller with store_checkpoint_get(s, 0). */
int store_audit_inclusion(struct store *s,
                          uint64_t seq,
                          uint64_t tree_size,
                          Cityops__V1__InclusionProofResponse **out);
/* RFC 6962 consistency proof between tree sizes @first <= @second: empty
 * when first is 0 or equals second. STORE_INVALID if first > second or
 * second exceeds the trail. Caller frees *out. */
int store_audit_consistency(struct store *s,
                            uint64_t first,
                            uint64_t second,
                            Cityops__V1__ConsistencyProofResponse **out);

/* The outbox rows of @link with seq > @after, in order (at most @max). *out
 * is a malloc'd array of *n unpacked rows: free each with
 * cityops__v1__outbox_message__free_unpacked, then the array. */
int store_outbox_list(struct store *s,
                      const char *link,
                      uint64_t after,
                      size_t max,
                      Cityops__V1__OutboxMessage ***out,
                      size_t *n);

/* The message a checkpoint signature covers (see audit.proto); @out must
 * hold STORE_CHECKPOINT_MSG_SIZE bytes. */
#define STORE_CHECKPOINT_MSG_SIZE (21 + 8 + STORE_HASH_SIZE + 8)
void store_checkpoint_message(const Cityops__V1__Checkpoint *cp,
                              uint8_t out[STORE_CHECKPOINT_MSG_SIZE]);

/* Snapshot: a consistent compact copy of the environment, prefixed by a
 * header (magic, version, applied index). On success *buf is malloc'd and the
 * caller frees it. */
int store_snapshot(struct store *s, void **buf, size_t *len);

/* Applied index recorded in a snapshot's header, or STORE_CORRUPT. */
int store_snapshot_index(const void *buf, size_t len, uint64_t *index);

/* Replace the environment with the snapshot's content, atomically (a new
 * file is written beside the old one and renamed over it). If the local
 * applied index is already >= the snapshot's, the local state is kept and
 * *replaced is 0. Loop thread only; readers on other threads wait on the
 * store's lock while the environment is swapped. */
int store_restore(struct store *s,
                  const void *buf,
                  size_t len,
                  int *replaced);

#endif /* CITYOPS_STORE_H */
