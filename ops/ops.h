/* ops: the internal contract of the operator tools (cityctl, cityops-bench).
 *
 * ops/ talks to nodes over gRPC: it includes proto/rpc.h and the generated
 * protobuf-c headers, never consensus/ or node/; only ctl_backup.c uses
 * storage/, for the offline backup verify and restore of local files.
 *
 * cityctl's flow: cityctl.c parses argv into a struct ops_args and a
 * struct ops_ctl (global options), ctl_case.c / ctl_cluster.c build a request
 * and call ops_call(), which walks the endpoints (ctl_call.c), and
 * ctl_output.c / ctl_json.c print the answer as text or as JSON.
 *
 * Exit codes: 0 success, 1 the call failed (a gRPC status or a local error),
 * 2 usage error. Functions named *_run and ops_call return one of these.
 */
#ifndef CITYOPS_OPS_H
#define CITYOPS_OPS_H

#include <stdint.h>
#include <stdio.h>

#include <jansson.h>
#include <protobuf-c/protobuf-c.h>

#include "cityops/v1/audit.pb-c.h"
#include "cityops/v1/cases.pb-c.h"
#include "cityops/v1/cluster.pb-c.h"
#include "cityops/v1/dr.pb-c.h"
#include "proto/rpc.h"

/* Error codes of the ops module (-5000s). */
enum {
    OPS_NOMEM = -5001,
    OPS_INVALID = -5002, /* a value that does not parse */
};

enum {
    OPS_EXIT_OK = 0,
    OPS_EXIT_FAIL = 1,
    OPS_EXIT_USAGE = 2,
};

#define OPS_DEFAULT_ENDPOINT "127.0.0.1:7001"
#define OPS_DEFAULT_TIMEOUT_MS 5000
#define OPS_MAX_POS 8
#define OPS_MAX_OPTS 64
#define OPS_MAX_ATTACH 32
#define OPS_MAX_ENDPOINTS 32

/* Parsed command line: positionals and "--name value" / "--flag" pairs, in
 * order. Values point into argv (borrowed for the life of the process). */
struct ops_args {
    char *pos[OPS_MAX_POS];
    int n_pos;
    struct {
        const char *name; /* without the leading "--" */
        char *value;      /* NULL for a flag */
    } opts[OPS_MAX_OPTS];
    int n_opts;
};

/* Global options and the per-invocation client state. */
struct ops_ctl {
    char *endpoints[OPS_MAX_ENDPOINTS];              /* malloc'd copies */
    struct rpc_channel *channels[OPS_MAX_ENDPOINTS]; /* opened lazily */
    int n_endpoints;
    int json;
    int timeout_ms;
    const char *actor;     /* NULL: $USER or "cityctl" */
    int role;              /* Cityops__V1__Role; 0 = the command's default */
    const char *client_id; /* retry key; generated when not given */
    uint64_t seq;
    char client_id_buf[40];
    int consistency; /* Cityops__V1__Consistency; -1 = the command's default */
    uint64_t min_index;
    int last_endpoint; /* index of the endpoint that answered ops_call() */
};

/* --- cityctl.c: argument access --- */

/* The last value given for --@name, or NULL. */
char *ops_arg(const struct ops_args *a, const char *name);
/* 1 if --@name was given (flag or valued option). */
int ops_flag(const struct ops_args *a, const char *name);
/* Every value given for --@name, in order, into @out (at most @max).
 * Returns how many there were (may exceed @max). */
int ops_arg_all(const struct ops_args *a,
                const char *name,
                char **out,
                int max);

/* Print "cityctl: <message>" and a hint on stderr (and a JSON error with
 * --json); returns OPS_EXIT_USAGE. */
int ops_usage_error(const struct ops_ctl *ctl, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Parse helpers; each returns 0 or OPS_INVALID. */
int ops_parse_u64(const char *s, uint64_t *out);
int ops_parse_double(const char *s, double *out);
/* "inspector", "intake-clerk", ... -> Cityops__V1__Role. */
int ops_parse_role(const char *s, int *role);

/* --- ctl_call.c --- */

void ops_ctl_close(struct ops_ctl *ctl);

/* Fill @ctx for a write: actor from --actor / $USER, @default_role unless
 * --role was given, and the retry key. Strings are borrowed from @ctl. */
void ops_ctx_fill(struct ops_ctl *ctl,
                  Cityops__V1__RequestContext *ctx,
                  int default_role);

/* Fill @read from --consistency / --min-index, @default_consistency when
 * --consistency was not given. */
void ops_read_fill(const struct ops_ctl *ctl,
                   Cityops__V1__ReadOptions *read,
                   int default_consistency);

/* Call @method ("Cases/Get": the path without "/cityops.v1.") on the
 * endpoints in order, moving on after UNAVAILABLE or DEADLINE_EXCEEDED. On
 * success *resp is the unpacked reply, freed by the caller with
 * protobuf_c_message_free_unpacked(). On failure the error is printed and
 * *resp is NULL. Returns OPS_EXIT_OK or OPS_EXIT_FAIL. */
int ops_call(struct ops_ctl *ctl,
             const char *method,
             const ProtobufCMessage *req,
             const ProtobufCMessageDescriptor *resp_desc,
             ProtobufCMessage **resp);

/* One call to endpoint @i only: no failover, nothing printed. *status gets
 * the gRPC status (GRPC_STATUS_INTERNAL if the reply did not decode) and
 * @details (if not NULL) the message. Returns OPS_EXIT_OK when the status
 * is OK and *resp is set, else OPS_EXIT_FAIL. */
int ops_call_one(struct ops_ctl *ctl,
                 int i,
                 const char *method,
                 const ProtobufCMessage *req,
                 const ProtobufCMessageDescriptor *resp_desc,
                 int timeout_ms,
                 ProtobufCMessage **resp,
                 grpc_status_code *status,
                 char *details,
                 size_t details_len);

/* Index of endpoint @ep in @ctl, appended if it is not there yet; -1 if the
 * list is full or memory runs out. */
int ops_endpoint_index(struct ops_ctl *ctl, const char *ep);

/* Report a failed call: "cityctl: <method>: <code>: <message>" on stderr,
 * plus {"error":{"code","message","method","endpoint"}} on stdout with
 * --json. @endpoint may be NULL. */
void ops_print_error(const struct ops_ctl *ctl,
                     const char *method,
                     const char *code,
                     const char *message,
                     const char *endpoint);

/* --- ctl_json.c --- */

/* A generic protobuf-c message -> JSON object converter: proto field names,
 * enums as value names, 64-bit integers as numbers (as strings above
 * INT64_MAX), bytes as base64, absent sub-messages as null. Returns a new
 * reference, or NULL on allocation failure. */
json_t *ops_pb_to_json(const ProtobufCMessage *msg);

/* The reverse of ops_pb_to_json(): build a message of type @desc from the
 * JSON object @j. Proto field names; enums by value name, full
 * ("TIME_UNIT_WORK_HOURS") or short ("work_hours"), any case, '-' for '_',
 * or by number; integers as numbers or decimal strings; bytes as base64;
 * repeated fields as arrays; oneof members by name (at most one); null
 * leaves a field at its default. Unknown fields and wrong types are
 * refused. On success returns 0 and *out is the message, which the caller
 * frees with protobuf_c_message_free_unpacked(*out, NULL). Otherwise *out
 * is NULL and the return is OPS_INVALID or OPS_NOMEM, with "<JSON path>:
 * <what is wrong>" in @err ("$.changes[2].category.urgent: expected true
 * or false, got a string"). */
int ops_json_to_pb(const json_t *j,
                   const ProtobufCMessageDescriptor *desc,
                   ProtobufCMessage **out,
                   char *err,
                   size_t errlen);

/* Print @j (stolen) to stdout, indented. Returns OPS_EXIT_OK or
 * OPS_EXIT_FAIL. */
int ops_json_print(json_t *j);

/* --- ctl_output.c --- */

/* UTC microseconds -> "2026-11-25T17:18:07+08:00" (UTC+8), "-" for 0. */
void ops_time_format(int64_t us, char *buf, size_t len);
/* RFC3339 ("2026-11-25T17:18:07Z", "...+08:00", "2026-11-25T17:18:07",
 * "2026-11-25"; no offset means UTC+8) -> UTC microseconds. */
int ops_time_parse(const char *s, int64_t *us);

/* The value's name without the prefix its enum shares ("REPORTED" for
 * CASE_STATE_REPORTED); "?<n>" for an unknown value (in a static buffer). */
const char *ops_enum_short(const ProtobufCEnumDescriptor *desc, int value);

/* An aligned text table; cells are copied. */
struct ops_table;
struct ops_table *ops_table_new(int n_cols, const char *const *headers);
int ops_table_add(struct ops_table *t, const char *const *cells);
void ops_table_print(const struct ops_table *t, FILE *out);
void ops_table_free(struct ops_table *t);

void ops_print_case(const Cityops__V1__Case *c, uint64_t applied_index);
/* Add the list columns for @c to @t (made by ops_case_table_new()). */
struct ops_table *ops_case_table_new(void);
int ops_case_table_add(struct ops_table *t, const Cityops__V1__Case *c);
int ops_print_history(const Cityops__V1__HistoryResponse *h);

/* --- ctl_case.c, ctl_cluster.c: subcommands --- */

int ctl_case_run(struct ops_ctl *ctl, const struct ops_args *a);
int ctl_cluster_run(struct ops_ctl *ctl, const struct ops_args *a);
int ctl_audit_run(struct ops_ctl *ctl, const struct ops_args *a);

/* Options each subcommand accepts beyond the global ones (space separated),
 * or NULL if there is no such subcommand. Used by cityctl.c to refuse
 * unknown options before any call is made. */
const char *ctl_case_options(const char *sub);
const char *ctl_cluster_options(const char *sub);
const char *ctl_audit_options(const char *sub);
/* RFC 6962/9162 checks shared with other commands (fed witness verify).
 * 1 if @path proves the tree of @second leaves (root @second_root, 32
 * bytes) extends the one of @first (@first_root), else 0. */
int ops_audit_consistency_ok(uint64_t first,
                             const uint8_t *first_root,
                             uint64_t second,
                             const uint8_t *second_root,
                             const ProtobufCBinaryData *path,
                             size_t n_path);
/* 1 if @cp carries a valid Ed25519 signature by its own public key. */
int ops_audit_signature_ok(const Cityops__V1__Checkpoint *cp);

/* --- ctl_backup.c, ctl_recover.c: disaster recovery --- *
 * backup verify/restore work on local files with storage/ directly (no node
 * needed); everything else goes over gRPC. */

int ctl_backup_run(struct ops_ctl *ctl, const struct ops_args *a);
int ctl_recover_run(struct ops_ctl *ctl, const struct ops_args *a);
const char *ctl_backup_options(const char *sub);
const char *ctl_recover_options(const char *sub);

/* Download an online backup from the first endpoint of @ctl that answers
 * into @out_path (written as out_path.part, fsynced, renamed). Progress on
 * stderr unless @quiet. *info (optional) gets the header (free with
 * cityops__v1__backup_info__free_unpacked). Returns OPS_EXIT_*. */
int ops_backup_fetch(struct ops_ctl *ctl,
                     const char *out_path,
                     int quiet,
                     Cityops__V1__BackupInfo **info);
/* Offline: build <data_dir>/store from backup @file (+ @archive_dir replay
 * up to @to_index / @to_time (UTC us), 0 = no limit) as the state of a new
 * single-node cluster. Refuses a data dir that holds data. @err gets a
 * sentence on failure. Returns OPS_EXIT_*. */
int ops_backup_restore(const char *file,
                       const char *data_dir,
                       const char *archive_dir,
                       uint64_t to_index,
                       int64_t to_time,
                       int quiet,
                       char *err,
                       size_t errlen);
/* Quorum-loss recovery over the endpoints of @ctl (every member's gRPC
 * address): gather, choose the most advanced survivor, print the plan; with
 * @yes execute it (Recover on the chosen node, which restarts itself in
 * place with the same PID; Reset on the other survivors, same; then add
 * them back) and wait until the cluster has a leader and the re-added
 * members caught up. Returns OPS_EXIT_*. */
int ops_recover(struct ops_ctl *ctl, int yes, int force, int quiet);

/* --- ctl_admin.c: cityctl admin (the city's rules, DOMAIN.md 2-5) --- */

int ctl_admin_run(struct ops_ctl *ctl, const struct ops_args *a);
const char *ctl_admin_options(const char *sub);

/* --- drill.c: cityctl drill (list, run, history); see drill.h --- */

int ctl_drill_run(struct ops_ctl *ctl, const struct ops_args *a);
const char *ctl_drill_options(const char *sub);

/* --- ctl_eval.c: cityctl eval (report, workload) --- */

int ctl_eval_run(struct ops_ctl *ctl, const struct ops_args *a);
/* --- ctl_fed.c: federation links and key tasks --- */
int ctl_fed_run(struct ops_ctl *ctl, const struct ops_args *a);
const char *ctl_fed_options(const char *sub);
const char *ctl_eval_options(const char *sub);

#endif /* CITYOPS_OPS_H */
