/* storage: the LMDB environment of one node and the deterministic state
 * machine that applies replicated commands to it.
 *
 * Contract:
 * - One environment per node, in one directory. Named databases (keys are
 *   big-endian so that cursors iterate in order): meta, cases, case_events,
 *   idx_state, idx_dept, idx_grid, idx_category, idx_reported, sessions,
 *   members, cluster_events, audit, checkpoints, audit_tree, drills.
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

#include "cityops/v1/admin.pb-c.h"
#include "cityops/v1/audit.pb-c.h"
#include "cityops/v1/case.pb-c.h"
#include "cityops/v1/cases.pb-c.h"
#include "cityops/v1/cluster.pb-c.h"
#include "cityops/v1/command.pb-c.h"
#include "cityops/v1/dr.pb-c.h"
#include "cityops/v1/eval.pb-c.h"
#include "cityops/v1/fed.pb-c.h"
#include "cityops/v1/public.pb-c.h"

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
    /* NULL: off. Every applied entry (index, packed batch) is appended,
     * after its transaction commits, to segment files under
     * archive_dir/<cluster id>/ (see "command archive" below), for
     * point-in-time restore. Entries applied before the cluster id is known
     * are not archived. store_sync() also syncs the archive; without nosync
     * every append is synced. */
    const char *archive_dir;
};

/* Open (creating if needed) the environment in directory @dir, which must
 * exist. On success *out is owned by the caller: release with store_close(). */
int store_open(const char *dir,
               const struct store_options *opts,
               struct store **out);
void store_close(struct store *s);

/* Flush committed transactions, and the command archive, to disk
 * (fdatasync). Any thread. Needed only with nosync; a no-op cost otherwise. */
int store_sync(struct store *s);

/* Drop this process's page-table entries for the data file's map
 * (madvise MADV_DONTNEED on the shared, read-only mapping). The pages stay
 * in the page cache and the next read maps them again, so nothing is read
 * from disk and concurrent readers see the same bytes. What it changes:
 * pages the process has not read since no longer count in its RSS, and the
 * kernel can reclaim them without unmapping them first. Any thread; 0, or
 * STORE_IOERR if the map was not found or madvise failed (no message is
 * set: the caller says what it was doing). */
int store_unmap(struct store *s);

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

/* SHA-256 over every replicated key and value: equal digests mean equal
 * state. Meta keys that say where a state sits rather than what it is (the
 * applied index, the cluster id, restored_from, the restore record and the
 * key base of a restored store) are left out, so that a store restored from
 * a backup has the digest of its source at the same state. Compare applied
 * indexes beside digests where position matters (replica convergence). */
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
 * "member/<id>", "cluster/event", "audit/checkpoint" or a federation target
 * (see "federation" below).
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

/* The same snapshot in three parts whose concatenation is store_snapshot()'s
 * bytes: header, payload and trailer. The payload is the copy's temp file
 * mapped read-only rather than read into the heap, so a snapshot of a large
 * store costs no anonymous memory and no extra copy; its pages are file
 * pages the kernel can drop. Free with store_snapshot_parts_free(). */
struct store_snapshot_parts {
    uint8_t header[24];
    uint8_t trailer[32];
    const void *payload;
    size_t payload_len;
};
int store_snapshot_parts(struct store *s, struct store_snapshot_parts *out);
void store_snapshot_parts_free(struct store_snapshot_parts *p);

/* A thin snapshot: 16 bytes, "COTHIN01" and an applied index, standing for
 * the store itself. It is made after the store has been flushed to disk
 * (store_sync()), so the store durably holds at least that index and the
 * Raft log before it may be trimmed. A node whose store is behind a thin
 * snapshot has lost data and cannot use it (see consensus/fsm.c). On
 * success *buf is malloc'd. */
#define STORE_THIN_SNAPSHOT_SIZE 16
int store_snapshot_thin(struct store *s, void **buf, size_t *len);
/* 1 and *index when buf is a thin snapshot, else 0. */
int store_snapshot_is_thin(const void *buf, size_t len, uint64_t *index);

/* Applied index recorded in a snapshot's header, or STORE_CORRUPT. */
int store_snapshot_index(const void *buf, size_t len, uint64_t *index);

/* Replace the environment with the snapshot's content, atomically (a new
 * file is written beside the old one and renamed over it). If the local
 * applied index is already >= the snapshot's and above 0, the local state
 * is kept and *replaced is 0 (at 0 a store may be empty or restored from a
 * backup: the snapshot is taken). Loop thread only; readers on other threads wait on the
 * store's lock while the environment is swapped. */
int store_restore(struct store *s,
                  const void *buf,
                  size_t len,
                  int *replaced);

/* --- configuration (config.c) ---
 *
 * The city's rules (admin.proto), changed only by `config` commands (role
 * ADMIN): each ConfigBatch is checked whole and becomes one new version. */

/* The whole configuration from one read transaction. Caller frees *out with
 * cityops__v1__config_snapshot__free_unpacked. */
int store_config_get(struct store *s, Cityops__V1__ConfigSnapshot **out);
/* The last @max versions (0 = 50), oldest first. Caller frees *out with
 * cityops__v1__config_history_response__free_unpacked. */
int store_config_history(struct store *s,
                         size_t max,
                         Cityops__V1__ConfigHistoryResponse **out);

/* --- cluster identity ---
 *
 * A ClusterInit command (role SYSTEM, else PERMISSION_DENIED) sets the
 * cluster id once: the first applied one stores it, later ones return OK
 * and change nothing. The id names the archive directory, so it must be 1
 * to STORE_CLUSTER_ID_SIZE - 1 bytes of [A-Za-z0-9._-], not starting with a
 * dot (else INVALID_ARGUMENT). */
#define STORE_CLUSTER_ID_SIZE 64
#define STORE_RESTORED_FROM_SIZE 96
/* The cluster id set by the first applied ClusterInit ("" before it) and,
 * after a restore, "<old cluster id>@<index>" ("" otherwise). Either out
 * may be NULL. Any thread. */
int store_cluster_id(struct store *s,
                     char id[STORE_CLUSTER_ID_SIZE],
                     char restored_from[STORE_RESTORED_FROM_SIZE]);

/* --- drills ---
 *
 * A DrillRecord command (role ADMIN or SYSTEM, else PERMISSION_DENIED;
 * strings over STORE_MAX_ID (ids, scenario) or STORE_MAX_TEXT (summary,
 * history check, target) are INVALID_ARGUMENT) stores the record in the
 * drills database keyed by its Raft index; the newest
 * STORE_DRILLS_KEEP are kept. */
#define STORE_DRILLS_KEEP 1000
/* The last @max drill records (0 = 50), oldest first: *out is a malloc'd
 * array of *n unpacked records (free each with
 * cityops__v1__drill_record__free_unpacked, then the array). Any thread. */
int store_drill_list(struct store *s,
                     size_t max,
                     Cityops__V1__DrillRecord ***out,
                     size_t *n);

/* --- injected faults (drills) --- */
/* While @rv is STORE_FULL or STORE_IOERR, store_apply_batch() refuses every
 * entry with that code and the message "injected by a drill"; 0 clears.
 * Any thread (an atomic). */
void store_fault_set(struct store *s, int rv);

/* --- backups (backup.c) ---
 *
 * A backup file (all integers big-endian):
 *   "COBACK01"           magic and format version, 8 bytes
 *   header length        u32
 *   header               packed BackupInfo
 *   payload              payload_bytes (from the header) of LMDB data file:
 *                        a compact copy of the environment
 *   SHA-256              32 bytes over every byte before it
 * The header is read from the copy itself, so its applied index, audit
 * size, audit head and case count are exactly those of the copied state. */
typedef void (*store_progress_cb)(void *arg, uint64_t done, uint64_t total);

/* Write an online, consistent backup of @s to @fd (a regular file opened
 * for writing, at offset 0): an LMDB compact copy taken in one read txn
 * (writers go on) into an unlinked temp file in the data directory, then
 * the header, the payload streamed from that file and the trailer. @node_id
 * and @now_us go into the header. @cb (optional) gets bytes written out of
 * the file's size. On success *info (optional; the caller frees it with
 * cityops__v1__backup_info__free_unpacked) and @sha256 (optional, 32 bytes:
 * the trailer) are filled; on failure the content of @fd is undefined.
 * Any thread; it only takes read txns, so it never stalls the Raft loop. */
int store_backup_write(struct store *s,
                       int fd,
                       uint64_t node_id,
                       int64_t now_us,
                       store_progress_cb cb,
                       void *arg,
                       Cityops__V1__BackupInfo **info,
                       uint8_t sha256[32]);

/* Check backup file @path: magic, header, the trailer hash over the whole
 * file, that the payload opens as an LMDB environment whose applied index,
 * audit size, audit head and case count equal the header's, and that its
 * audit chain verifies record by record (prev hash linkage and each
 * record's hash). The payload is copied to an unlinked temp file beside
 * @path to be opened. On failure returns STORE_CORRUPT (a damaged or
 * foreign file), STORE_IOERR, STORE_FULL or STORE_NOMEM with a sentence in
 * @errmsg. *info (optional; caller frees) gets the header. @cb (optional)
 * gets bytes read out of the file's size. Needs no open store; any thread. */
int store_backup_verify(const char *path,
                        store_progress_cb cb,
                        void *arg,
                        Cityops__V1__BackupInfo **info,
                        char *errmsg,
                        size_t errlen);

struct store_restore_opts {
    uint64_t to_index;       /* 0: no index limit */
    int64_t to_time;         /* UTC us; 0: no limit. Commands whose leader
                              * time is later are not applied */
    const char *archive_dir; /* NULL: the backup alone. Else replay archived
                              * entries after the backup's index (of the
                              * backup's cluster id) up to the target */
};
struct store_restore_result {
    uint64_t backup_index;      /* applied index in the backup */
    uint64_t reached_index;     /* last original index applied */
    int64_t reached_time;       /* leader time of the last applied command */
    uint64_t replayed_entries;
    uint64_t replayed_commands;
    uint64_t audit_size;
    char cluster_id[STORE_CLUSTER_ID_SIZE]; /* the backup's */
};

/* Build a store in directory @dir (created if missing) from backup @path,
 * verified first as store_backup_verify() does. Refuses with STORE_BUSY if
 * @dir already holds an LMDB environment (data.mdb) or is locked by a
 * store. With o->archive_dir, replays the archived entries of the backup's
 * cluster after its index, up to the target, with store_apply_batch():
 * STORE_NOTFOUND if the archive has a gap before the target or does not
 * reach o->to_index; a to_time past the archive's end replays everything;
 * STORE_INVALID if the backup is already past the target. With to_time the
 * entry that crosses it is cut after its last command at or before it.
 *
 * The result is the state of a NEW cluster: applied index 0 (the restored
 * node bootstraps a fresh Raft log whose indexes start at 1), cluster id
 * cleared, restored_from "<cluster id>@<reached index>"; the audit chain
 * goes on unbroken; keys taken from Raft indexes (drills, cluster events)
 * continue above the old ones. The restore is recorded in meta, not as a
 * command. The store is built in a temp directory inside @dir and its
 * data.mdb renamed into @dir at the end, so a failed restore leaves no
 * data.mdb behind. @cb (optional) gets bytes of the backup checked, then
 * bytes of archive read (a second count from 0). *res (optional) is filled
 * on success. @o may be NULL (the backup alone). Any thread; needs no open
 * store. */
int store_backup_restore(const char *path,
                         const char *dir,
                         const struct store_restore_opts *o,
                         store_progress_cb cb,
                         void *arg,
                         struct store_restore_result *res,
                         char *errmsg,
                         size_t errlen);

/* --- command archive (archive.c) ---
 *
 * Under archive_dir/<cluster id>/, segment files named by the index of
 * their first entry ("%020llu.coarch"), each: "COARCH01", the cluster id
 * (64 bytes, NUL padded), the applied index before its first entry (u64),
 * then records [u32 payload length][u32 CRC-32 of index and payload]
 * [u64 index][payload]. A segment grows to 64 MiB. Within a segment every
 * record follows the one before it with nothing applied in between; Raft
 * entries that never reach apply (configuration changes, barriers) leave
 * holes in the index sequence that are not gaps. A new segment also
 * starts when that chain breaks (a snapshot was installed, an append
 * failed), which is how a restore tells a gap. An append failure never
 * fails apply: it is kept in the status and the error message. Opening
 * the store truncates a torn tail of the last segment. */
struct store_archive_status {
    char dir[512];          /* "" when archiving is off */
    uint64_t first_index, last_index, segments, bytes;
    char error[256];        /* last append failure, "" if none */
};
/* Any thread. */
void store_archive_status(struct store *s, struct store_archive_status *out);

/* --- evaluation (eval.c) ---
 *
 * Comprehensive evaluation (DOMAIN.md 5) and the command centre's workload,
 * from counters that apply keeps per (month in UTC+8, object) in the same
 * transaction as each CaseEvent: a report reads its months' counter rows,
 * never the cases. Counts start with the first event applied by a store
 * that has the eval database (schema 3); attribution and counting rules are
 * in eval.c.
 *
 * Indicators, in this order (STORE_EVAL_INDICATORS codes):
 *   disposal_rate        disposed / should_dispose
 *   ontime_disposal_rate disposed_on_time / should_dispose
 *   closure_rate         closed / should_close
 *   ontime_closure_rate  closed_on_time / should_close
 *   rework_rate          reworks / disposed
 *   extension_rate       extensions_approved / dispatched
 *   ontime_register_rate registered_on_time / registered
 *   dispatch_accuracy    1 - redispatched_away / dispatched
 *   valid_report_rate    valid_reports / reported
 *   overdue_backlog      overdue_undisposed (a count, never scored)
 * with should_dispose = should_close = disposed + overdue_undisposed, the
 * latter a gauge taken at the end of the period (now, for the current one).
 * A zero denominator gives defined = false and value 1. Counts of one
 * period may finish work of an earlier one, so a ratio above 1 is shown as
 * 1 (and dispatch_accuracy below 0 as 0); the counts are in the row.
 *
 * Rows by department list the departments with the indicators DOMAIN.md
 * charges to departments, plus the row "centre" with those charged to the
 * command centre (on-time registration, dispatch accuracy, valid reports);
 * rows by district or grid carry every indicator.
 *
 * Score = 100 x sum(w_i x s_i) / sum(w_i) over the defined, weighted
 * indicators of the row, s_i being the value, or 1 - value for the two
 * rates where less is better (rework_rate, extension_rate): an undefined
 * indicator is left out and the other weights renormalised. Weights are the
 * configured EvalWeights of the object kind, else equal weights over the
 * nine rates. Grades: A >= 90, B >= 75, C >= 60, D >= 40, else E; "-" when
 * no weighted indicator is defined (score 0). */
#define STORE_EVAL_INDICATORS 10
extern const char *const store_eval_indicators[STORE_EVAL_INDICATORS];

/* A period: months first_month..last_month (yyyymm) and its bounds [start,
 * end) in UTC us (UTC+8 month boundaries). */
struct store_eval_period {
    uint32_t first_month;
    uint32_t last_month;
    int64_t start;
    int64_t end;
};
/* "2026-10" (a month), "2026-Q4" (a quarter) or "2026" (a year), years
 * 1970..9998; STORE_INVALID otherwise. Any thread. */
int store_eval_period_parse(const char *period, struct store_eval_period *out);
/* "" or "department" -> 1, "district" -> 2, "grid" -> 3; else
 * STORE_INVALID. */
int store_eval_kind_parse(const char *group_by);
/* The composite score of indicator values @value (the report order above)
 * with weights @weight; *scored = 0 when nothing weighted is defined. */
double store_eval_score(const double value[STORE_EVAL_INDICATORS],
                        const int defined[STORE_EVAL_INDICATORS],
                        const double weight[STORE_EVAL_INDICATORS],
                        int *scored);
/* "A".."E" for @score (lower bounds inclusive). */
const char *store_eval_grade(double score);

/* The report of req->period grouped by req->group_by, rows in object id
 * order, everything (rows, applied_index, audit_size, config_version) from
 * one read transaction. STORE_INVALID (message in store_errmsg) for a bad
 * period or group_by. On success *out is malloc'd; the caller frees it with
 * cityops__v1__eval_report__free_unpacked. Any thread. */
int store_eval_report(struct store *s,
                      const Cityops__V1__EvalRequest *req,
                      Cityops__V1__EvalReport **out);

/* Open cases per holding department ("centre" for those with the command
 * centre): columns dispatched, in_disposal, returned (by the department
 * that returned it), and the open cases with an overdue stage or under
 * supervision, in department id order, from one read transaction of the
 * workload rows apply keeps. Caller frees *out with
 * cityops__v1__workload_response__free_unpacked. Any thread. */
int store_workload(struct store *s, Cityops__V1__WorkloadResponse **out);

/* --- public reports (public.c) ---
 *
 * Commands (DOMAIN.md 8; checks in this order: fields INVALID_ARGUMENT, the
 * report exists NOT_FOUND, role PERMISSION_DENIED, then the case):
 * - public_report (role PUBLIC): service_code "E-0501" / "C-0101" (type,
 *   大类, 小类) of the configured catalogue (or, with none configured, a
 *   大类 of DOMAIN.md 2), lat/long in range (0, 0: not given; then
 *   address_string is required), datum, address_string, description,
 *   grid_code (digits), at most STORE_MAX_ATTACHMENTS media (http(s) URL,
 *   64 hex digit sha256, type/subtype), contact (phone, email, name,
 *   device id). Creates the case as a `report` would (source PUBLIC, media
 *   as REPORT attachments, GCJ-02 converted to CGCS2000); the contact goes
 *   to a private database no read returns, and the case keeps a reporter
 *   token derived from it.
 * - reopen (role PUBLIC): the report by tracking number, proved by any one
 *   identifier (phone, email, device id) of the contact it was made with
 *   (else PERMISSION_DENIED); then the case state machine's reopen.
 * - redact (role ADMIN or SHIFT_LEADER, reason required): erase the
 *   contact and the reporter token (the report can no longer be reopened).
 *
 * Every case has a tracking number in the tracking index; every change of
 * a case's state (and every event marked public) appends a PublicUpdate to
 * the feed. Reads below: any thread, one read transaction each; returned
 * messages are malloc'd, the caller frees them with their __free_unpacked. */
#define STORE_PUBLIC_REOPEN_DAYS 7       /* defaults of PublicSettings */
#define STORE_PUBLIC_DUP_RADIUS_M 100
#define STORE_PUBLIC_DUP_WINDOW_HOURS 720
#define STORE_PUBLIC_DUP_MAX_RADIUS_M 5000
#define STORE_PUBLIC_UPDATES_DEFAULT 100
#define STORE_PUBLIC_UPDATES_MAX 1000

/* The public status of report @tracking_no (or of case @case_id), as of
 * @now_us (reopenable); STORE_NOTFOUND without a message if unknown. */
int store_public_get(struct store *s,
                     const char *tracking_no,
                     int64_t now_us,
                     Cityops__V1__PublicStatus **out,
                     uint64_t *applied);
int store_public_get_case(struct store *s,
                          uint64_t case_id,
                          int64_t now_us,
                          Cityops__V1__PublicStatus **out,
                          uint64_t *applied);

/* Feed rows after @cursor ("" = from the start; else a next_cursor this
 * returned, STORE_INVALID otherwise), oldest first, at most @max (0 =
 * STORE_PUBLIC_UPDATES_DEFAULT, capped at STORE_PUBLIC_UPDATES_MAX); with
 * @tracking_no (may be NULL or "") that report's rows only (STORE_NOTFOUND
 * if unknown). next_cursor resumes after the last row (the given cursor
 * when there is none). */
int store_public_updates(struct store *s,
                         const char *cursor,
                         size_t max,
                         const char *tracking_no,
                         Cityops__V1__UpdatesResponse **out);

/* Possible duplicates: cases of the same category whose position is within
 * @radius_m (capped at STORE_PUBLIC_DUP_MAX_RADIUS_M) of (lat, lon),
 * reported at or after @since, nearest first, at most @max (0 = 10, at most
 * 50), @exclude_case_id left out. Merged, voided, rejected and transferred
 * cases are not candidates. From the spatial index (the cells around the
 * point), never a scan of all cases. *out is a malloc'd array of *n
 * unpacked hints: free each with cityops__v1__duplicate_hint__free_unpacked,
 * then the array. */
struct store_public_near {
    Cityops__V1__CategoryType category_type;
    const char *major_code;
    const char *minor_code;
    double lat; /* CGCS2000 degrees */
    double lon;
    double radius_m;
    int64_t since; /* UTC us */
    uint64_t exclude_case_id;
    size_t max;
};
int store_public_duplicates(struct store *s,
                            const struct store_public_near *q,
                            Cityops__V1__DuplicateHint ***out,
                            size_t *n);

/* The services (GET services): the configured catalogue (retired
 * categories left out) or, with none configured, the built-in one. */
int store_public_services(struct store *s,
                          Cityops__V1__ServicesResponse **out);

/* The public settings in force: the configured ones over the defaults
 * above. Any of the outs may be NULL. */
int store_public_settings(struct store *s,
                          uint32_t *reopen_window_days,
                          uint32_t *duplicate_radius_m,
                          uint32_t *duplicate_window_hours);

/* --- federation (fed.c) ---
 *
 * Tiers exchange messages through the transactional outbox (ARCHITECTURE.md
 * "Federation"): a change that sends something writes an outbox row (link,
 * seq from 1 without gaps, kind, packed payload) in its own apply
 * transaction; the receiver applies a run of rows with a fed_inbound
 * command and keeps per origin the highest seq applied, so a redelivery
 * changes nothing. The local tier id is not stored: the node knows it from
 * its configuration and puts it into the commands that need it, so apply
 * stays a function of the log.
 *
 * Commands (refused ones change nothing):
 * - fed_link_set (role ADMIN): add or replace a link (tier id 1..64 bytes
 *   of [A-Za-z0-9._-], not "parent"; kind PARENT, CHILD or PEER; 1..8
 *   endpoints "host:port"; 0..16 allowed message kinds, 1..32 printable
 *   bytes without spaces, none = every kind), or with remove drop it
 *   (NOT_FOUND if absent). Apply cannot see the node's configuration file: the node merges these
 *   links with its configured ones.
 * - fed_assign_task (role SHIFT_LEADER or ADMIN): title 1..200 characters,
 *   detail at most 4000, deadline after the command's time, 1..32 distinct
 *   child tier ids, origin_tier set by the node to the local tier (else
 *   INVALID_ARGUMENT). The task gets id "<origin_tier>/<n>" (n from 1), is
 *   stored, and one "key_task" row per child goes to the outbox link named
 *   by the child's tier id. res->ref is the task id.
 * - fed_feedback (role SHIFT_LEADER or ADMIN): tier_id set by the node to
 *   the local tier, status one of accepted, forwarded, in_progress, done,
 *   rejected, note at most STORE_MAX_TEXT. The task must have been received
 *   here (NOT_FOUND otherwise; FAILED_PRECONDITION for a task assigned here
 *   or one whose child tiers do not name tier_id). The feedback (at = the
 *   command's time) is kept with the task and a "task_feedback" row goes to
 *   the link "parent", the one upward stream (audit checkpoints go there
 *   too), so the parent sees one gapless seq from this tier. res->ref is
 *   the task id.
 * - fed_inbound (role SYSTEM): 1..STORE_FED_INBOUND_MAX envelopes of one
 *   origin, each with a message of seq >= 1. In order, an envelope at or
 *   below the origin's inbox seq is a duplicate (skipped), the next seq is
 *   applied and advances the inbox, a later one is a gap: the rest is left
 *   for the sender to resend. Effects by kind: "key_task" stores the task
 *   as received (its id must start with "<origin>/"); "task_feedback" sets
 *   the origin's latest feedback on a task assigned here that names it as
 *   a child; "audit_checkpoint" stores the origin's signed tree head if its
 *   signature verifies and its tree size is larger than the last one
 *   witnessed. A message whose effect is refused (or of an unknown kind)
 *   still advances the inbox, with a note, so a link never wedges.
 *   res->message: "applied N, duplicates M[, stopped at gap S][; notes]";
 *   res->version: the origin's inbox seq after the command (the node's
 *   DeliverReply.applied_through).
 * - fed_outbox_ack (role SYSTEM): link has applied every row through
 *   `through`. The acked seq never moves backwards (a lower ack is OK and
 *   changes nothing); an ack past the link's last row is
 *   FAILED_PRECONDITION. Acked rows older than the newest
 *   STORE_FED_OUTBOX_KEEP of the link are deleted in the same transaction.
 * - fed_forward_task (role SHIFT_LEADER or ADMIN; 按责转办): a task received
 *   here (NOT_FOUND if none, FAILED_PRECONDITION if assigned here) goes
 *   further down under the same id, as a "key_task" row to each of 1..32
 *   distinct child tiers (not origin_tier, set by the node to the local
 *   tier; FAILED_PRECONDITION for the tier the task came from or one it was
 *   forwarded to already). The forwarded copy names origin_tier as its
 *   origin and the new children as its child tiers; the view here records
 *   forwarded_to, and those tiers' feedback is kept with it. A key_task
 *   whose id is not the origin's is accepted only from the parent (the
 *   inbound's reply_stream is "parent"). res->ref is the task id.
 * - fed_task_to_case (role SHIFT_LEADER or ADMIN): a task received here
 *   becomes a case (source UPPER_TIER, category from the command, grid code
 *   if given, description = title, a line break and the detail, cut to
 *   STORE_MAX_DESCRIPTION bytes, remote_ref the task id, which is
 *   "<origin tier>/<n>");
 *   the view records case_id; a second time is FAILED_PRECONDITION.
 *   res->message is "case <id>", res->case_ the case.
 * - fed_handover (role SHIFT_LEADER; 跨界移交): the open case (a terminal
 *   one is FAILED_PRECONDITION, as is one with a hand-over or escalation
 *   pending) gets a COMMENT event and a pending row, and a "case_handover"
 *   row (HandoverMessage) goes to link <peer>. The peer's inbound keeps it
 *   pending (store_fed_handovers()) under "<origin>/<origin case id>".
 * - fed_escalate (role SHIFT_LEADER; 下级上报): the same towards "parent",
 *   kind "case_escalation".
 * - fed_handover_answer (role SHIFT_LEADER): a pending incoming one
 *   (NOT_FOUND if none) is accepted: a case opens here (source
 *   PEER_TRANSFER, or LOWER_TIER for an escalation; remote_ref
 *   "<origin>/<origin case id>"; res->message "case <id>") and a
 *   "handover_ack" / "escalation_ack" row (peer_case_id) goes back on the
 *   stored reply_stream; or declined (reason required): the ack says
 *   declined, with the reason. The sender's inbound of an accepting ack
 *   moves its case to TRANSFERRED_OUT (TRANSFER_OUT event, remote_ref
 *   "<origin>/<its case id>"); of a declining one adds a COMMENT event with
 *   the reason and leaves the case open; either clears the pending row.
 * - fed_subscribe (role ADMIN): a "subscribe" row (FedSubscribe) to
 *   `stream`, set by the node to "parent" or the publisher's tier id. The
 *   publisher's inbound keeps (topic, origin) -> reply_stream, or drops it
 *   with unsubscribe.
 * - fed_publish (role ADMIN or SYSTEM): topic and key 1..64 printable
 *   bytes without spaces, payload at most 256 KiB, payload_type at most
 *   128: one "publication" row (Publication, at = the command's time) per
 *   subscriber of the topic on its stored link, and for topic "stats" one
 *   to "parent" as well (once). res->message: "sent to N links".
 *   Received publications are kept latest per (origin, topic, key).
 * - fed_task_close (role SHIFT_LEADER or ADMIN; 结案): a task assigned
 *   here (NOT_FOUND if none, FAILED_PRECONDITION if received here, already
 *   closed, or for reopen not closed) is marked closed (reopen: open again)
 *   and a "task_close" / "task_reopen" row (TaskFeedback, status "close" /
 *   "reopen") goes to each child. The child's inbound marks its received
 *   copy the same and sends the row on to the tiers it forwarded it to.
 *   Feedback on a closed received task is FAILED_PRECONDITION; a closed
 *   task is not overdue and not supervised. res->ref is the task id.
 * - inbound "task_supervise" marks a task received from that origin
 *   supervised. On every TICK, tasks assigned or forwarded here whose
 *   deadline passed while some child has no "done" or "rejected" feedback
 *   are marked supervised once, and each such child gets a
 *   "task_supervise" row (TaskFeedback, status "supervise").
 *
 * Audit targets: "fed/link/<tier>", "fed/task/<task id>" (a refused
 * assignment: "fed/task/new"; also forward and to-case),
 * "fed/inbox/<origin>", "fed/outbox/<link>", "case/<id>" (handover),
 * "fed/subscribe/<publisher>", "fed/publish/<topic>".
 *
 * Reads: any thread, one read transaction each. */
#define STORE_FED_TIER_MAX 64
#define STORE_FED_TASK_ID_MAX (STORE_FED_TIER_MAX + 21)
#define STORE_FED_INBOUND_MAX 1000
#define STORE_FED_OUTBOX_KEEP 10000

/* The links added at run time, in tier id order: *out is a malloc'd array
 * of *n unpacked links (free each with cityops__v1__fed_link__free_unpacked,
 * then the array). */
int store_fed_links(struct store *s, Cityops__V1__FedLink ***out, size_t *n);

/* Pending hand-overs and escalations: received here (incoming, with id and
 * reply_stream) and sent from here (outgoing, with target). Free *out with
 * cityops__v1__fed_incoming_response__free_unpacked. */
int store_fed_handovers(struct store *s,
                        Cityops__V1__FedIncomingResponse **out);

/* The highest seq from @origin applied here (0: none). */
int store_fed_inbox_through(struct store *s, const char *origin, uint64_t *seq);

/* The outbox of @link: *acked the seq acknowledged through, *last_seq the
 * highest seq written, *oldest_unacked_time the created_at of row acked + 1
 * (0 if there is none). Any out may be NULL. */
int store_fed_outbox_state(struct store *s,
                           const char *link,
                           uint64_t *acked,
                           uint64_t *last_seq,
                           int64_t *oldest_unacked_time);

/* Every task assigned or received here, in task id order, with the latest
 * feedback per child tier. overdue: the deadline is before @now_us and a
 * child tier has no "done" or "rejected" feedback (for a received task:
 * this tier's own feedback, the only one it sees). Caller frees *out with
 * cityops__v1__fed_tasks_response__free_unpacked. */
int store_fed_tasks(struct store *s,
                    int64_t now_us,
                    Cityops__V1__FedTasksResponse **out);

/* The signed tree heads witnessed for @origin ("" or NULL: every origin,
 * by origin), by tree size. Caller frees *out with
 * cityops__v1__checkpoint_list__free_unpacked. */
int store_fed_witness_list(struct store *s,
                           const char *origin,
                           Cityops__V1__CheckpointList **out);

/* The publications received here, latest per (origin, topic, key), of
 * @topic and from @origin ("" or NULL: any), and the subscriptions to this
 * tier's topics ("<tier> <topic>", of @topic if given). STORE_INVALID for
 * a malformed filter. Caller frees *out with
 * cityops__v1__fed_received_response__free_unpacked. */
int store_fed_received(struct store *s,
                       const char *topic,
                       const char *origin,
                       Cityops__V1__FedReceivedResponse **out);

#endif /* CITYOPS_STORE_H */
