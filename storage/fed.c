/* Federation between tiers: the links added at run time, key tasks sent
 * down and their feedback sent up, the inbox that makes delivery
 * exactly-once in effect, the acknowledgements of the outbox and the
 * witnessed audit heads of the tiers below (store.h "federation").
 *
 * DESIGN
 *
 * - Outbox. Every message to another tier is an outbox row written by
 *   outbox_put() in the transaction of the command that caused it, so a
 *   change and its messages commit together or not at all. Rows are per
 *   link, seq from 1 without gaps: a child's tier id for what goes down
 *   (key tasks), "parent" for everything that goes up (feedback, and the
 *   audit checkpoints audit.c queues), so that each receiver sees one
 *   gapless sequence per origin.
 * - Inbox. fed_inbox keeps per origin the highest seq applied here. An
 *   inbound run is applied strictly in seq order: at or below it is a
 *   redelivery (skipped), the next one is applied and advances it, a later
 *   one is a gap and ends the run. Inbox and effect are written in the same
 *   transaction, so after any failover a message has been applied exactly
 *   when the inbox says so. A message whose effect is refused (bad payload,
 *   unknown task, an old tree head, a kind this build does not know) still
 *   advances the inbox with a note in the result: one bad message must not
 *   stop a link forever, and the sender cannot repair it by resending.
 * - Tier identity. The local tier id lives in the node's configuration,
 *   not here; commands carry it (KeyTask.origin_tier, TaskFeedback.tier_id)
 *   so that apply reads only the log and the database.
 * - Tasks. fed_tasks holds both the tasks assigned here ('A': their
 *   children's latest feedback) and those received from above ('R': this
 *   tier's own latest feedback), as a FedTaskView behind that one byte.
 * - Acks. fed_acked only moves forward. Rows acked and older than the
 *   newest STORE_FED_OUTBOX_KEEP of their link are deleted with the ack
 *   that passes them, so the outbox stays bounded while the last row (and
 *   so the next seq) is never removed.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store_internal.h"

#define RC_OK CITYOPS__V1__RESULT_CODE__RESULT_OK
#define RC_INVALID CITYOPS__V1__RESULT_CODE__RESULT_INVALID_ARGUMENT
#define RC_NOT_FOUND CITYOPS__V1__RESULT_CODE__RESULT_NOT_FOUND
#define RC_DENIED CITYOPS__V1__RESULT_CODE__RESULT_PERMISSION_DENIED
#define RC_PRECONDITION CITYOPS__V1__RESULT_CODE__RESULT_FAILED_PRECONDITION

#define FED_TITLE_MAX 200
#define FED_DETAIL_MAX STORE_MAX_DESCRIPTION
#define FED_CHILDREN_MAX 32
#define FED_ENDPOINTS_MAX 8
#define FED_HOST_MAX 253
#define FED_NOTES_SIZE 512

#define TASK_ASSIGNED 'A'
#define TASK_RECEIVED 'R'

#define KIND_KEY_TASK "key_task"
#define KIND_FEEDBACK "task_feedback"
#define KIND_CHECKPOINT "audit_checkpoint"
#define KIND_SUPERVISE "task_supervise"
#define KIND_TASK_CLOSE "task_close"
#define KIND_TASK_REOPEN "task_reopen"
#define KIND_HANDOVER "case_handover"
#define KIND_HANDOVER_ACK "handover_ack"
#define KIND_ESCALATION "case_escalation"
#define KIND_ESCALATION_ACK "escalation_ack"
#define KIND_SUBSCRIBE "subscribe"
#define KIND_PUBLICATION "publication"

#define FED_KINDS_MAX 16
#define FED_KIND_MAX 32
#define FED_TOPIC_MAX 64
#define FED_KEY_MAX 64
#define FED_TYPE_MAX 128
#define FED_PAYLOAD_MAX (256 * 1024)
#define FED_TICK_MAX 1000

static const char *const feedback_statuses[] = {
    "accepted", "forwarded", "in_progress", "done", "rejected",
};

static const char *str0(const char *v)
{
    return v != NULL ? v : "";
}

int fed_op(const Cityops__V1__Command *cmd)
{
    switch (cmd->op_case) {
    case CITYOPS__V1__COMMAND__OP_FED_ASSIGN_TASK:
    case CITYOPS__V1__COMMAND__OP_FED_FEEDBACK:
    case CITYOPS__V1__COMMAND__OP_FED_INBOUND:
    case CITYOPS__V1__COMMAND__OP_FED_OUTBOX_ACK:
    case CITYOPS__V1__COMMAND__OP_FED_LINK_SET:
    case CITYOPS__V1__COMMAND__OP_FED_FORWARD_TASK:
    case CITYOPS__V1__COMMAND__OP_FED_TASK_TO_CASE:
    case CITYOPS__V1__COMMAND__OP_FED_HANDOVER:
    case CITYOPS__V1__COMMAND__OP_FED_SUBSCRIBE:
    case CITYOPS__V1__COMMAND__OP_FED_PUBLISH:
    case CITYOPS__V1__COMMAND__OP_FED_HANDOVER_ANSWER:
    case CITYOPS__V1__COMMAND__OP_FED_ESCALATE:
    case CITYOPS__V1__COMMAND__OP_FED_TASK_CLOSE:
        return 1;
    default:
        return 0;
    }
}

/* --- validation --- */

/* A tier id: 1..STORE_FED_TIER_MAX bytes of [A-Za-z0-9._-]. "parent" is
 * the outbox link of the checkpoints, so no tier may be called that. */
static int tier_ok(const char *id)
{
    size_t n = strlen(str0(id));

    if (n == 0 || n > STORE_FED_TIER_MAX || strcmp(id, "parent") == 0) {
        return 0;
    }
    return strspn(id, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                      "0123456789._-") == n;
}

/* An outbox link: a tier id or "parent". */
static int link_ok(const char *link)
{
    return tier_ok(link) || strcmp(str0(link), "parent") == 0;
}

/* Characters (UTF-8 code points) of @v: bytes that do not continue one. */
static size_t utf8_chars(const char *v)
{
    size_t n = 0;

    for (const unsigned char *p = (const unsigned char *)str0(v); *p; p++) {
        n += (*p & 0xc0) != 0x80;
    }
    return n;
}

/* "host:port": a host of 1..253 printable bytes without spaces (an IPv6
 * address in brackets), a decimal port 1..65535. */
static int endpoint_ok(const char *ep)
{
    const char *colon = strrchr(str0(ep), ':');
    size_t host;
    unsigned long port = 0;

    if (colon == NULL) {
        return 0;
    }
    host = (size_t)(colon - ep);
    if (host == 0 || host > FED_HOST_MAX) {
        return 0;
    }
    for (size_t i = 0; i < host; i++) {
        if (ep[i] <= ' ' || ep[i] > '~') {
            return 0;
        }
    }
    if (memchr(ep, ':', host) != NULL &&
        (ep[0] != '[' || ep[host - 1] != ']')) {
        return 0;
    }
    if (colon[1] == '\0' || strlen(colon + 1) > 5 ||
        strspn(colon + 1, "0123456789") != strlen(colon + 1)) {
        return 0;
    }
    port = strtoul(colon + 1, NULL, 10);
    return port >= 1 && port <= 65535;
}

static int status_ok(const char *status)
{
    size_t n = sizeof(feedback_statuses) / sizeof(*feedback_statuses);

    for (size_t i = 0; i < n; i++) {
        if (strcmp(str0(status), feedback_statuses[i]) == 0) {
            return 1;
        }
    }
    return 0;
}

/* A topic or publication key: 1..@max printable ASCII bytes, no space. */
static int name_ok(const char *v, size_t max)
{
    size_t n = strlen(str0(v));

    if (n == 0 || n > max) {
        return 0;
    }
    for (size_t i = 0; i < n; i++) {
        if (v[i] <= ' ' || v[i] > '~') {
            return 0;
        }
    }
    return 1;
}

static int task_id_ok(const char *id)
{
    size_t n = strlen(str0(id));

    return n > 0 && n <= STORE_FED_TASK_ID_MAX;
}

static int list_has(char *const *list, size_t n, const char *v)
{
    for (size_t i = 0; i < n; i++) {
        if (strcmp(str0(list[i]), v) == 0) {
            return 1;
        }
    }
    return 0;
}

/* 1..FED_CHILDREN_MAX distinct tier ids, none of them @self. */
static int children_check(char *const *children,
                          size_t n,
                          const char *self,
                          Cityops__V1__CommandResult *res)
{
    if (n == 0 || n > FED_CHILDREN_MAX) {
        return store_result_fail(res, RC_INVALID,
                                 "a task needs 1 to 32 child tiers");
    }
    for (size_t i = 0; i < n; i++) {
        const char *c = children[i];

        if (!tier_ok(c) || strcmp(c, self) == 0) {
            return store_result_fail(res, RC_INVALID,
                                     "child tiers must be tier ids other "
                                     "than the origin");
        }
        if (list_has(children, i, c)) {
            return store_result_fail(res, RC_INVALID,
                                     "child tiers must be distinct");
        }
    }
    return 0;
}

static int role_in(const Cityops__V1__Command *cmd,
                   Cityops__V1__Role a,
                   Cityops__V1__Role b)
{
    return cmd->role == a || cmd->role == b;
}

/* Key-task commands are a shift leader's or an admin's: 1 (and the
 * refusal in @res, "@what needs role ...") if @cmd is neither's. */
static int not_leader_or_admin(const Cityops__V1__Command *cmd,
                               const char *what,
                               Cityops__V1__CommandResult *res)
{
    char msg[96];

    if (role_in(cmd, CITYOPS__V1__ROLE__ROLE_SHIFT_LEADER,
                CITYOPS__V1__ROLE__ROLE_ADMIN)) {
        return 0;
    }
    snprintf(msg, sizeof(msg), "%s needs role SHIFT_LEADER or ADMIN", what);
    return store_result_fail(res, RC_DENIED, msg) != 0 ? STORE_NOMEM : 1;
}

/* --- rows --- */

static MDB_val str_key(const char *v)
{
    MDB_val k = {strlen(v), (void *)v};

    return k;
}

/* A u64 value under string key @key of @db; a missing row reads as 0. */
static int u64_get(struct store *s,
                   MDB_txn *txn,
                   enum store_db db,
                   const char *key,
                   uint64_t *value)
{
    MDB_val k = str_key(key);
    MDB_val v;
    int rc;

    *value = 0;
    rc = mdb_get(txn, s->dbi[db], &k, &v);
    if (rc == MDB_NOTFOUND) {
        return 0;
    }
    if (rc != 0) {
        return store_mdb_err(s, rc, "get %s/%s", store_db_names[db], key);
    }
    if (v.mv_size != 8) {
        return store_errf(s, STORE_CORRUPT, "%s/%s: %zu bytes",
                          store_db_names[db], key, v.mv_size);
    }
    *value = store_be64_get(v.mv_data);
    return 0;
}

static int u64_put(struct store *s,
                   MDB_txn *txn,
                   enum store_db db,
                   const char *key,
                   uint64_t value)
{
    uint8_t be[8];
    MDB_val k = str_key(key);
    MDB_val v = {sizeof be, be};
    int rc;

    store_be64_put(be, value);
    rc = mdb_put(txn, s->dbi[db], &k, &v, 0);
    if (rc != 0) {
        return store_mdb_err(s, rc, "put %s/%s", store_db_names[db], key);
    }
    return 0;
}

/* Store @msg packed under @k of @db, behind the byte @tag unless it is 0.
 * @flags: mdb_put() flags; with MDB_NOOVERWRITE an existing row is left as
 * it is and 1 returned. */
static int packed_put(struct store *s,
                      MDB_txn *txn,
                      enum store_db db,
                      MDB_val *k,
                      char tag,
                      const ProtobufCMessage *msg,
                      unsigned int flags)
{
    size_t off = tag != 0 ? 1 : 0;
    MDB_val v;
    uint8_t *buf;
    int rc;

    v.mv_size = off + protobuf_c_message_get_packed_size(msg);
    buf = malloc(v.mv_size > 0 ? v.mv_size : 1);
    if (buf == NULL) {
        return store_errf(s, STORE_NOMEM, "put %s: out of memory",
                          store_db_names[db]);
    }
    buf[0] = (uint8_t)tag;
    protobuf_c_message_pack(msg, buf + off);
    v.mv_data = buf;
    rc = mdb_put(txn, s->dbi[db], k, &v, flags);
    free(buf);
    if (rc == MDB_KEYEXIST) {
        return 1;
    }
    if (rc != 0) {
        return store_mdb_err(s, rc, "put %s/%.*s", store_db_names[db],
                             (int)k->mv_size, (const char *)k->mv_data);
    }
    return 0;
}

/* A fed_tasks value decoded: *tag and the view, or NULL if it does not
 * decode (free with cityops__v1__fed_task_view__free_unpacked). */
static Cityops__V1__FedTaskView *view_decode(const MDB_val *v, char *tag)
{
    Cityops__V1__FedTaskView *t = NULL;

    *tag = v->mv_size > 0 ? *(const char *)v->mv_data : 0;
    if (v->mv_size > 0) {
        t = cityops__v1__fed_task_view__unpack(
            NULL, v->mv_size - 1, (const uint8_t *)v->mv_data + 1);
    }
    if (t != NULL && (t->task == NULL ||
                      (*tag != TASK_ASSIGNED && *tag != TASK_RECEIVED))) {
        cityops__v1__fed_task_view__free_unpacked(t, NULL);
        t = NULL;
    }
    return t;
}

/* Called per row by rows_walk(): 0 goes on, 1 stops, else a STORE_* code. */
typedef int (*row_fn)(struct store *s,
                      const MDB_val *k,
                      const MDB_val *v,
                      void *arg);

static int rows_walk(struct store *s,
                     MDB_txn *txn,
                     enum store_db db,
                     row_fn fn,
                     void *arg)
{
    MDB_cursor *cur;
    MDB_val k, v;
    int rv = 0;
    int rc;

    rc = mdb_cursor_open(txn, s->dbi[db], &cur);
    if (rc != 0) {
        return store_mdb_err(s, rc, "%s cursor", store_db_names[db]);
    }
    for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0 && rv == 0;
         rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        rv = fn(s, &k, &v, arg);
    }
    mdb_cursor_close(cur);
    if (rv == 1) {
        return 0;
    }
    if (rv == 0 && rc != 0 && rc != MDB_NOTFOUND) {
        rv = store_mdb_err(s, rc, "read %s", store_db_names[db]);
    }
    return rv;
}

/* A zeroed array of one @size slot per row of @db (and one more), for a
 * walk in the same transaction; NULL if out of memory or on error. */
static void *rows_array(MDB_txn *txn, MDB_dbi dbi, size_t size)
{
    MDB_stat st;

    if (mdb_stat(txn, dbi, &st) != 0) {
        return NULL;
    }
    return calloc(st.ms_entries + 1, size);
}

/* The stored task @id: *tag is TASK_ASSIGNED or TASK_RECEIVED; *out is
 * unpacked (free with cityops__v1__fed_task_view__free_unpacked).
 * STORE_NOTFOUND without a message if there is none. */
static int task_load(struct store *s,
                     MDB_txn *txn,
                     const char *id,
                     char *tag,
                     Cityops__V1__FedTaskView **out)
{
    MDB_val k = str_key(id);
    MDB_val v;
    int rc;

    *out = NULL;
    rc = mdb_get(txn, s->dbi[STORE_DB_FED_TASKS], &k, &v);
    if (rc == MDB_NOTFOUND) {
        return STORE_NOTFOUND;
    }
    if (rc != 0) {
        return store_mdb_err(s, rc, "get fed_tasks/%s", id);
    }
    *out = view_decode(&v, tag);
    if (*out == NULL) {
        return store_errf(s, STORE_CORRUPT, "fed_tasks/%s does not decode",
                          id);
    }
    return 0;
}

/* The task @id received here, for a command on it; on refusal (no such
 * task: NOT_FOUND, one assigned here: FAILED_PRECONDITION @why) the
 * result says so and *v is NULL. */
static int received_load(struct store *s,
                         MDB_txn *txn,
                         const char *id,
                         const char *why,
                         Cityops__V1__FedTaskView **v,
                         Cityops__V1__CommandResult *res)
{
    char tag = 0;
    int rv;

    rv = task_load(s, txn, id, &tag, v);
    if (rv == STORE_NOTFOUND) {
        return store_result_fail(res, RC_NOT_FOUND, "no such task");
    }
    if (rv == 0 && tag != TASK_RECEIVED) {
        cityops__v1__fed_task_view__free_unpacked(*v, NULL);
        *v = NULL;
        return store_result_fail(res, RC_PRECONDITION, why);
    }
    return rv;
}

/* Store @v (a loaded task) with @fb as the latest feedback of
 * fb->tier_id. Borrows everything. */
static int task_save_feedback(struct store *s,
                              MDB_txn *txn,
                              char tag,
                              const Cityops__V1__FedTaskView *v,
                              Cityops__V1__TaskFeedback *fb)
{
    Cityops__V1__FedTaskView nv = *v;
    Cityops__V1__TaskFeedback **list;
    MDB_val k = str_key(v->task->task_id);
    size_t n = 0;
    int replaced = 0;
    int rv;

    list = malloc((v->n_feedback + 1) * sizeof(*list));
    if (list == NULL) {
        return store_errf(s, STORE_NOMEM, "fed: out of memory");
    }
    for (size_t i = 0; i < v->n_feedback; i++) {
        if (strcmp(str0(v->feedback[i]->tier_id), fb->tier_id) == 0) {
            list[n++] = fb;
            replaced = 1;
        } else {
            list[n++] = v->feedback[i];
        }
    }
    if (!replaced) {
        list[n++] = fb;
    }
    nv.n_feedback = n;
    nv.feedback = list;
    nv.overdue = 0;
    rv = packed_put(s, txn, STORE_DB_FED_TASKS, &k, tag, &nv.base, 0);
    free(list);
    return rv;
}

/* The known fields of @t, borrowed, with task id @id. */
static void task_copy(Cityops__V1__KeyTask *dst,
                      const Cityops__V1__KeyTask *t,
                      char *id)
{
    cityops__v1__key_task__init(dst);
    dst->task_id = id;
    dst->title = (char *)str0(t->title);
    dst->detail = (char *)str0(t->detail);
    dst->deadline = t->deadline;
    dst->n_child_tiers = t->n_child_tiers;
    dst->child_tiers = t->child_tiers;
    dst->origin_tier = (char *)str0(t->origin_tier);
}

static int names_tier(const Cityops__V1__KeyTask *t, const char *tier)
{
    return list_has(t->child_tiers, t->n_child_tiers, tier);
}

static int task_save(struct store *s,
                     MDB_txn *txn,
                     char tag,
                     const Cityops__V1__FedTaskView *v)
{
    MDB_val k = str_key(v->task->task_id);

    return packed_put(s, txn, STORE_DB_FED_TASKS, &k, tag, &v->base, 0);
}

/* The tiers that owe feedback on @v: its children when assigned here, the
 * tiers it was forwarded to when received. */
static void task_children(const Cityops__V1__FedTaskView *v,
                          char tag,
                          char ***list,
                          size_t *n)
{
    if (tag == TASK_ASSIGNED) {
        *list = v->task->child_tiers;
        *n = v->task->n_child_tiers;
    } else {
        *list = v->forwarded_to;
        *n = v->n_forwarded_to;
    }
}

/* The highest seq in @link's outbox (0: none). The outbox key is (link,
 * '\0', seq u64 BE): the last row of the link sorts just below (link,
 * '\0', 2^64-1). */
static int outbox_last(struct store *s,
                       MDB_txn *txn,
                       const char *link,
                       uint64_t *seq)
{
    size_t llen = strlen(link);
    uint8_t key[STORE_OUTBOX_KEY_MAX];
    MDB_val k = {llen + 1 + 8, key};
    MDB_val v;
    MDB_cursor *cur;
    int rc;

    *seq = 0;
    if (llen + 1 + 8 > sizeof key) {
        return store_errf(s, STORE_INVALID, "outbox link name too long");
    }
    memcpy(key, link, llen + 1);
    store_be64_put(key + llen + 1, UINT64_MAX);
    rc = mdb_cursor_open(txn, s->dbi[STORE_DB_OUTBOX], &cur);
    if (rc != 0) {
        return store_mdb_err(s, rc, "outbox cursor");
    }
    rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
    rc = rc == 0 ? mdb_cursor_get(cur, &k, &v, MDB_PREV)
                 : mdb_cursor_get(cur, &k, &v, MDB_LAST);
    if (rc == 0 && k.mv_size == llen + 1 + 8 &&
        memcmp(k.mv_data, link, llen + 1) == 0) {
        *seq = store_be64_get((const uint8_t *)k.mv_data + llen + 1);
    }
    mdb_cursor_close(cur);
    if (rc != 0 && rc != MDB_NOTFOUND) {
        return store_mdb_err(s, rc, "outbox/%s: last row", link);
    }
    return 0;
}

/* --- links --- */

static int link_set(struct store *s,
                    MDB_txn *txn,
                    const Cityops__V1__Command *cmd,
                    Cityops__V1__CommandResult *res)
{
    const Cityops__V1__FedLinkSet *ls = cmd->fed_link_set;
    const Cityops__V1__FedLink *l = ls->link;
    Cityops__V1__FedLink clean = CITYOPS__V1__FED_LINK__INIT;
    MDB_val k;
    int rc;

    if (cmd->role != CITYOPS__V1__ROLE__ROLE_ADMIN) {
        return store_result_fail(res, RC_DENIED, "links need role ADMIN");
    }
    if (l == NULL || !tier_ok(l->tier_id)) {
        return store_result_fail(res, RC_INVALID,
                                 "link tier id must be 1 to 64 characters of "
                                 "[A-Za-z0-9._-], not \"parent\"");
    }
    k = str_key(l->tier_id);
    if (ls->remove) {
        rc = mdb_del(txn, s->dbi[STORE_DB_FED_LINKS], &k, NULL);
        if (rc == MDB_NOTFOUND) {
            return store_result_fail(res, RC_NOT_FOUND, "no such link");
        }
        if (rc != 0) {
            return store_mdb_err(s, rc, "del fed_links/%s", l->tier_id);
        }
        return 0;
    }
    if (l->kind != CITYOPS__V1__LINK_KIND__LINK_KIND_PARENT &&
        l->kind != CITYOPS__V1__LINK_KIND__LINK_KIND_CHILD &&
        l->kind != CITYOPS__V1__LINK_KIND__LINK_KIND_PEER) {
        return store_result_fail(res, RC_INVALID,
                                 "link kind must be PARENT, CHILD or PEER");
    }
    if (l->n_endpoints == 0 || l->n_endpoints > FED_ENDPOINTS_MAX) {
        return store_result_fail(res, RC_INVALID,
                                 "a link needs 1 to 8 endpoints");
    }
    for (size_t i = 0; i < l->n_endpoints; i++) {
        if (!endpoint_ok(l->endpoints[i])) {
            return store_result_fail(res, RC_INVALID,
                                     "endpoints must be host:port");
        }
    }
    if (l->n_allowed_kinds > FED_KINDS_MAX) {
        return store_result_fail(res, RC_INVALID,
                                 "a link allows at most 16 kinds");
    }
    for (size_t i = 0; i < l->n_allowed_kinds; i++) {
        if (!name_ok(l->allowed_kinds[i], FED_KIND_MAX)) {
            return store_result_fail(res, RC_INVALID,
                                     "allowed kinds must be 1 to 32 "
                                     "printable characters without spaces");
        }
    }
    clean.tier_id = l->tier_id;
    clean.kind = l->kind;
    clean.n_endpoints = l->n_endpoints;
    clean.endpoints = l->endpoints;
    clean.n_allowed_kinds = l->n_allowed_kinds;
    clean.allowed_kinds = l->allowed_kinds;
    return packed_put(s, txn, STORE_DB_FED_LINKS, &k, 0, &clean.base, 0);
}

/* --- key tasks --- */

static int assign_check(const Cityops__V1__Command *cmd,
                        Cityops__V1__CommandResult *res)
{
    const Cityops__V1__KeyTask *t = cmd->fed_assign_task->task;
    size_t title;

    if (t == NULL || !tier_ok(t->origin_tier)) {
        return store_result_fail(res, RC_INVALID,
                                 "task.origin_tier must be the local tier id");
    }
    title = utf8_chars(t->title);
    if (title == 0 || title > FED_TITLE_MAX) {
        return store_result_fail(res, RC_INVALID,
                                 "title must be 1 to 200 characters");
    }
    if (utf8_chars(t->detail) > FED_DETAIL_MAX) {
        return store_result_fail(res, RC_INVALID,
                                 "detail must be at most 4000 characters");
    }
    if (t->deadline <= cmd->time) {
        return store_result_fail(res, RC_INVALID,
                                 "deadline must be after the command's time");
    }
    return children_check(t->child_tiers, t->n_child_tiers, t->origin_tier,
                          res);
}

static int assign_task(struct store *s,
                       MDB_txn *txn,
                       uint64_t index,
                       const Cityops__V1__Command *cmd,
                       Cityops__V1__CommandResult *res)
{
    const Cityops__V1__KeyTask *t;
    Cityops__V1__FedTaskView view = CITYOPS__V1__FED_TASK_VIEW__INIT;
    Cityops__V1__KeyTask task;
    char id[STORE_FED_TASK_ID_MAX + 1];
    uint64_t n;
    MDB_val k;
    int rv;

    rv = not_leader_or_admin(cmd, "key tasks", res);
    if (rv != 0) {
        return rv == 1 ? 0 : rv;
    }
    rv = assign_check(cmd, res);
    if (rv != 0 || res->code != RC_OK) {
        return rv;
    }
    t = cmd->fed_assign_task->task;
    rv = store_meta_get(s, txn, STORE_META_FED_NEXT_TASK, &n);
    if (rv == 0) {
        rv = store_meta_put(s, txn, STORE_META_FED_NEXT_TASK, n + 1);
    }
    if (rv != 0) {
        return rv;
    }
    snprintf(id, sizeof(id), "%s/%llu", t->origin_tier,
             (unsigned long long)(n + 1));
    task_copy(&task, t, id);
    view.task = &task;
    k = str_key(id);
    rv = packed_put(s, txn, STORE_DB_FED_TASKS, &k, TASK_ASSIGNED,
                    &view.base, MDB_NOOVERWRITE);
    if (rv == 1) {
        return store_result_fail(res, RC_PRECONDITION,
                                 "a task with that id is already stored");
    }
    for (size_t i = 0; rv == 0 && i < t->n_child_tiers; i++) {
        rv = outbox_put(s, txn, t->child_tiers[i], KIND_KEY_TASK, cmd->time,
                        index, &task.base);
    }
    if (rv == 0 && store_str_set(&res->ref, id) != 0) {
        rv = store_errf(s, STORE_NOMEM, "fed: out of memory");
    }
    return rv;
}

static int feedback_check(const Cityops__V1__TaskFeedback *f,
                          Cityops__V1__CommandResult *res)
{
    size_t id;

    if (f == NULL) {
        return store_result_fail(res, RC_INVALID, "feedback required");
    }
    id = strlen(str0(f->task_id));
    if (id == 0 || id > STORE_FED_TASK_ID_MAX) {
        return store_result_fail(res, RC_INVALID, "task id required");
    }
    if (!tier_ok(f->tier_id)) {
        return store_result_fail(res, RC_INVALID,
                                 "feedback.tier_id must be the local tier id");
    }
    if (!status_ok(f->status)) {
        return store_result_fail(res, RC_INVALID,
                                 "status must be accepted, forwarded, "
                                 "in_progress, done or rejected");
    }
    if (strlen(str0(f->note)) > STORE_MAX_TEXT) {
        return store_result_fail(res, RC_INVALID, "note too long");
    }
    return 0;
}

static int feedback_send(struct store *s,
                         MDB_txn *txn,
                         uint64_t index,
                         const Cityops__V1__Command *cmd,
                         Cityops__V1__CommandResult *res)
{
    const Cityops__V1__TaskFeedback *f = cmd->fed_feedback->feedback;
    Cityops__V1__TaskFeedback fb = CITYOPS__V1__TASK_FEEDBACK__INIT;
    Cityops__V1__FedTaskView *v = NULL;
    const char *origin;
    int rv;

    rv = not_leader_or_admin(cmd, "feedback", res);
    if (rv != 0) {
        return rv == 1 ? 0 : rv;
    }
    rv = feedback_check(f, res);
    if (rv != 0 || res->code != RC_OK) {
        return rv;
    }
    rv = received_load(s, txn, f->task_id,
                       "feedback is sent on tasks received here", &v, res);
    if (rv != 0 || res->code != RC_OK) {
        return rv;
    }
    origin = str0(v->task->origin_tier);
    if (!tier_ok(origin)) {
        rv = store_result_fail(res, RC_PRECONDITION,
                               "feedback is sent on tasks received here");
        goto out_free_view;
    }
    if (!names_tier(v->task, f->tier_id)) {
        rv = store_result_fail(res, RC_PRECONDITION,
                               "the task was not assigned to this tier");
        goto out_free_view;
    }
    if (v->closed) {
        rv = store_result_fail(res, RC_PRECONDITION,
                               "the task was closed by the tier that "
                               "assigned it");
        goto out_free_view;
    }
    fb.task_id = f->task_id;
    fb.tier_id = f->tier_id;
    fb.status = f->status;
    fb.note = (char *)str0(f->note);
    fb.at = cmd->time;
    rv = task_save_feedback(s, txn, TASK_RECEIVED, v, &fb);
    if (rv == 0) {
        /* one stream per (origin, destination): the parent's inbox keeps a
         * single seq per child, and checkpoints already go to "parent" */
        rv = outbox_put(s, txn, "parent", KIND_FEEDBACK, cmd->time, index,
                        &fb.base);
    }
    if (rv == 0 && store_str_set(&res->ref, f->task_id) != 0) {
        rv = store_errf(s, STORE_NOMEM, "fed: out of memory");
    }
out_free_view:
    cityops__v1__fed_task_view__free_unpacked(v, NULL);
    return rv;
}

/* --- 按责转办: forwarding a received task further down --- */

static int forward_check(const Cityops__V1__FedForwardTask *fw,
                         Cityops__V1__CommandResult *res)
{
    if (!task_id_ok(fw->task_id)) {
        return store_result_fail(res, RC_INVALID, "task id required");
    }
    if (!tier_ok(fw->origin_tier)) {
        return store_result_fail(res, RC_INVALID,
                                 "origin_tier must be the local tier id");
    }
    return children_check(fw->child_tiers, fw->n_child_tiers,
                          fw->origin_tier, res);
}

/* The forwarded copy goes out under the same task id with this tier as
 * its origin_tier (the receiver's feedback comes back here) and the new
 * children as its child tiers. */
static int forward_send(struct store *s,
                        MDB_txn *txn,
                        uint64_t index,
                        const Cityops__V1__Command *cmd,
                        const Cityops__V1__FedTaskView *v)
{
    const Cityops__V1__FedForwardTask *fw = cmd->fed_forward_task;
    Cityops__V1__KeyTask t;
    int rv = 0;

    task_copy(&t, v->task, v->task->task_id);
    t.n_child_tiers = fw->n_child_tiers;
    t.child_tiers = fw->child_tiers;
    t.origin_tier = fw->origin_tier;
    for (size_t i = 0; rv == 0 && i < fw->n_child_tiers; i++) {
        rv = outbox_put(s, txn, fw->child_tiers[i], KIND_KEY_TASK, cmd->time,
                        index, &t.base);
    }
    return rv;
}

static int forward_task(struct store *s,
                        MDB_txn *txn,
                        uint64_t index,
                        const Cityops__V1__Command *cmd,
                        Cityops__V1__CommandResult *res)
{
    const Cityops__V1__FedForwardTask *fw = cmd->fed_forward_task;
    Cityops__V1__FedTaskView *v = NULL;
    Cityops__V1__FedTaskView nv;
    char **all = NULL;
    int rv;

    rv = not_leader_or_admin(cmd, "forwarding", res);
    if (rv != 0) {
        return rv == 1 ? 0 : rv;
    }
    rv = forward_check(fw, res);
    if (rv != 0 || res->code != RC_OK) {
        return rv;
    }
    rv = received_load(s, txn, fw->task_id,
                       "only a task received here is forwarded", &v, res);
    if (rv != 0 || res->code != RC_OK) {
        return rv;
    }
    if (v->n_forwarded_to + fw->n_child_tiers > FED_CHILDREN_MAX) {
        rv = store_result_fail(res, RC_INVALID,
                               "a task is forwarded to at most 32 tiers");
        goto out_free_view;
    }
    for (size_t i = 0; i < fw->n_child_tiers; i++) {
        const char *c = fw->child_tiers[i];

        if (strcmp(c, str0(v->task->origin_tier)) == 0 ||
            list_has(v->forwarded_to, v->n_forwarded_to, c)) {
            rv = store_result_fail(res, RC_PRECONDITION,
                                   "the task came from that tier or was "
                                   "forwarded to it already");
            goto out_free_view;
        }
    }
    all = malloc((v->n_forwarded_to + fw->n_child_tiers) * sizeof(*all));
    if (all == NULL) {
        rv = store_errf(s, STORE_NOMEM, "fed: out of memory");
        goto out_free_view;
    }
    if (v->n_forwarded_to > 0) {
        memcpy(all, v->forwarded_to, v->n_forwarded_to * sizeof(*all));
    }
    memcpy(all + v->n_forwarded_to, fw->child_tiers,
           fw->n_child_tiers * sizeof(*all));
    nv = *v;
    nv.forwarded_to = all;
    nv.n_forwarded_to = v->n_forwarded_to + fw->n_child_tiers;
    rv = task_save(s, txn, TASK_RECEIVED, &nv);
    if (rv == 0) {
        rv = forward_send(s, txn, index, cmd, v);
    }
    if (rv == 0 && store_str_set(&res->ref, fw->task_id) != 0) {
        rv = store_errf(s, STORE_NOMEM, "fed: out of memory");
    }
    free(all);
out_free_view:
    cityops__v1__fed_task_view__free_unpacked(v, NULL);
    return rv;
}

/* --- a received task becomes a local case --- */

/* Cut @d (@n bytes) to at most @max bytes at a character boundary. */
static void utf8_cut(char *d, size_t n, size_t max)
{
    if (n > max) {
        n = max;
        while (n > 0 && ((unsigned char)d[n] & 0xc0) == 0x80) {
            n--;
        }
        d[n] = '\0';
    }
}

/* @title, a line break, @detail, cut to STORE_MAX_DESCRIPTION bytes at a
 * character boundary. Caller frees. */
static char *task_description(const Cityops__V1__KeyTask *t)
{
    size_t tl = strlen(str0(t->title));
    size_t dl = strlen(str0(t->detail));
    size_t n = tl + (dl > 0 ? 1 + dl : 0);
    char *d = malloc(n + 1);

    if (d == NULL) {
        return NULL;
    }
    snprintf(d, n + 1, "%s%s%s", str0(t->title), dl > 0 ? "\n" : "",
             str0(t->detail));
    utf8_cut(d, n, STORE_MAX_DESCRIPTION);
    return d;
}

/* The case (source UPPER_TIER) made from task view @v: res->case_ holds
 * it on OK, with remote_ref the task id ("<origin tier>/<n>"). */
static int task_case_create(struct store *s,
                            MDB_txn *txn,
                            uint64_t index,
                            const Cityops__V1__Command *cmd,
                            const Cityops__V1__FedTaskView *v,
                            Cityops__V1__CommandResult *res)
{
    const Cityops__V1__FedTaskToCase *tc = cmd->fed_task_to_case;
    Cityops__V1__ReportRequest r = CITYOPS__V1__REPORT_REQUEST__INIT;
    Cityops__V1__Location loc = CITYOPS__V1__LOCATION__INIT;
    Cityops__V1__Command sys = *cmd;
    const char *ref;
    int rv;

    r.source = CITYOPS__V1__CASE_SOURCE__CASE_SOURCE_UPPER_TIER;
    r.category_type = tc->category_type;
    r.major_code = tc->major_code;
    r.minor_code = tc->minor_code;
    r.description = task_description(v->task);
    if (r.description == NULL) {
        return store_errf(s, STORE_NOMEM, "fed: out of memory");
    }
    if (str0(tc->grid_code)[0] != '\0') {
        loc.grid_code = tc->grid_code;
        r.location = &loc;
    }
    /* REPORT is an intake role's event: the tier reports on the task's
     * behalf, the actor stays the one who asked */
    sys.role = CITYOPS__V1__ROLE__ROLE_SYSTEM;
    rv = case_fsm_report(s, txn, index, &sys, &r, res);
    free(r.description);
    if (rv != 0 || res->code != RC_OK) {
        return rv;
    }
    /* the task id is "<origin tier>/<n>" already */
    ref = v->task->task_id;
    rv = case_remote_ref_set(s, txn, index, res->case_->case_id, ref);
    if (rv == 0 && store_str_set(&res->case_->remote_ref, ref) != 0) {
        rv = store_errf(s, STORE_NOMEM, "fed: out of memory");
    }
    return rv;
}

static int task_to_case(struct store *s,
                        MDB_txn *txn,
                        uint64_t index,
                        const Cityops__V1__Command *cmd,
                        Cityops__V1__CommandResult *res)
{
    const Cityops__V1__FedTaskToCase *tc = cmd->fed_task_to_case;
    Cityops__V1__FedTaskView *v = NULL;
    char msg[64];
    int rv;

    rv = not_leader_or_admin(cmd, "a task to case", res);
    if (rv != 0) {
        return rv == 1 ? 0 : rv;
    }
    if (!task_id_ok(tc->task_id)) {
        return store_result_fail(res, RC_INVALID, "task id required");
    }
    if (tc->category_type !=
            CITYOPS__V1__CATEGORY_TYPE__CATEGORY_TYPE_COMPONENT &&
        tc->category_type != CITYOPS__V1__CATEGORY_TYPE__CATEGORY_TYPE_EVENT) {
        return store_result_fail(res, RC_INVALID,
                                 "category_type must be COMPONENT or EVENT");
    }
    rv = received_load(s, txn, tc->task_id,
                       "only a task received here becomes a case", &v, res);
    if (rv != 0 || res->code != RC_OK) {
        return rv;
    }
    if (v->case_id != 0) {
        snprintf(msg, sizeof(msg), "the task is case %llu already",
                 (unsigned long long)v->case_id);
        rv = store_result_fail(res, RC_PRECONDITION, msg);
        goto out_free_view;
    }
    rv = task_case_create(s, txn, index, cmd, v, res);
    if (rv != 0 || res->code != RC_OK) {
        goto out_free_view;
    }
    v->case_id = res->case_->case_id;
    rv = task_save(s, txn, TASK_RECEIVED, v);
    snprintf(msg, sizeof(msg), "case %llu", (unsigned long long)v->case_id);
    if (rv == 0 && (store_str_set(&res->message, msg) != 0 ||
                    store_str_set(&res->ref, tc->task_id) != 0)) {
        rv = store_errf(s, STORE_NOMEM, "fed: out of memory");
    }
out_free_view:
    cityops__v1__fed_task_view__free_unpacked(v, NULL);
    return rv;
}

/* --- publish/subscribe --- */

static int subscribe_check(const Cityops__V1__FedSubscribe *sb,
                           Cityops__V1__CommandResult *res)
{
    if (!tier_ok(sb->origin_tier)) {
        return store_result_fail(res, RC_INVALID,
                                 "origin_tier must be the local tier id");
    }
    if (!tier_ok(sb->publisher_tier) ||
        strcmp(sb->publisher_tier, sb->origin_tier) == 0) {
        return store_result_fail(res, RC_INVALID,
                                 "publisher_tier must be another tier's id");
    }
    if (!name_ok(sb->topic, FED_TOPIC_MAX)) {
        return store_result_fail(res, RC_INVALID,
                                 "topic must be 1 to 64 printable characters "
                                 "without spaces");
    }
    if (strcmp(str0(sb->stream), "parent") != 0 &&
        strcmp(str0(sb->stream), sb->publisher_tier) != 0) {
        return store_result_fail(res, RC_INVALID,
                                 "stream must be \"parent\" or the "
                                 "publisher's tier id");
    }
    return 0;
}

static int subscribe(struct store *s,
                     MDB_txn *txn,
                     uint64_t index,
                     const Cityops__V1__Command *cmd,
                     Cityops__V1__CommandResult *res)
{
    const Cityops__V1__FedSubscribe *sb = cmd->fed_subscribe;
    Cityops__V1__FedSubscribe m = CITYOPS__V1__FED_SUBSCRIBE__INIT;
    int rv;

    if (cmd->role != CITYOPS__V1__ROLE__ROLE_ADMIN) {
        return store_result_fail(res, RC_DENIED,
                                 "subscriptions need role ADMIN");
    }
    rv = subscribe_check(sb, res);
    if (rv != 0 || res->code != RC_OK) {
        return rv;
    }
    m.publisher_tier = sb->publisher_tier;
    m.topic = sb->topic;
    m.unsubscribe = sb->unsubscribe;
    m.origin_tier = sb->origin_tier;
    return outbox_put(s, txn, sb->stream, KIND_SUBSCRIBE, cmd->time, index,
                      &m.base);
}

static int publish_check(const Cityops__V1__FedPublish *p,
                         Cityops__V1__CommandResult *res)
{
    if (!tier_ok(p->origin_tier)) {
        return store_result_fail(res, RC_INVALID,
                                 "origin_tier must be the local tier id");
    }
    if (!name_ok(p->topic, FED_TOPIC_MAX) || !name_ok(p->key, FED_KEY_MAX)) {
        return store_result_fail(res, RC_INVALID,
                                 "topic and key must be 1 to 64 printable "
                                 "characters without spaces");
    }
    if (p->payload.len > FED_PAYLOAD_MAX) {
        return store_result_fail(res, RC_INVALID,
                                 "payload must be at most 256 KiB");
    }
    if (strlen(str0(p->payload_type)) > FED_TYPE_MAX) {
        return store_result_fail(res, RC_INVALID,
                                 "payload_type must be at most 128 bytes");
    }
    return 0;
}

/* The subscription keys of @topic: (topic, '\0', tier). */
static size_t subs_key(uint8_t *key, const char *topic, const char *tier)
{
    size_t tl = strlen(topic);
    size_t n = strlen(tier);

    memcpy(key, topic, tl + 1);
    memcpy(key + tl + 1, tier, n);
    return tl + 1 + n;
}

static int publish(struct store *s,
                   MDB_txn *txn,
                   uint64_t index,
                   const Cityops__V1__Command *cmd,
                   Cityops__V1__CommandResult *res)
{
    const Cityops__V1__FedPublish *p = cmd->fed_publish;
    Cityops__V1__Publication pub = CITYOPS__V1__PUBLICATION__INIT;
    uint8_t key[FED_TOPIC_MAX + 1 + STORE_FED_TIER_MAX];
    char link[STORE_OUTBOX_KEY_MAX];
    char msg[64];
    size_t tl;
    MDB_val k, v;
    MDB_cursor *cur;
    int to_parent = 0;
    int sent = 0;
    int rv = 0;
    int rc;

    if (!role_in(cmd, CITYOPS__V1__ROLE__ROLE_ADMIN,
                 CITYOPS__V1__ROLE__ROLE_SYSTEM)) {
        return store_result_fail(res, RC_DENIED,
                                 "publishing needs role ADMIN or SYSTEM");
    }
    rv = publish_check(p, res);
    if (rv != 0 || res->code != RC_OK) {
        return rv;
    }
    pub.origin_tier = p->origin_tier;
    pub.topic = p->topic;
    pub.key = p->key;
    pub.payload = p->payload;
    pub.payload_type = (char *)str0(p->payload_type);
    pub.at = cmd->time;
    tl = strlen(p->topic);
    k.mv_size = subs_key(key, p->topic, "");
    k.mv_data = key;
    rc = mdb_cursor_open(txn, s->dbi[STORE_DB_FED_SUBS], &cur);
    if (rc != 0) {
        return store_mdb_err(s, rc, "fed_subs cursor");
    }
    for (rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
         rc == 0 && rv == 0 && k.mv_size > tl + 1 &&
         memcmp(k.mv_data, key, tl + 1) == 0;
         rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        if (v.mv_size == 0 || v.mv_size >= sizeof(link)) {
            continue;
        }
        memcpy(link, v.mv_data, v.mv_size);
        link[v.mv_size] = '\0';
        to_parent |= strcmp(link, "parent") == 0;
        rv = outbox_put(s, txn, link, KIND_PUBLICATION, cmd->time, index,
                        &pub.base);
        sent++;
    }
    mdb_cursor_close(cur);
    if (rv == 0 && rc != 0 && rc != MDB_NOTFOUND) {
        rv = store_mdb_err(s, rc, "read fed_subs");
    }
    if (rv == 0 && !to_parent && strcmp(p->topic, "stats") == 0) {
        /* statistics always go up, subscribed or not */
        rv = outbox_put(s, txn, "parent", KIND_PUBLICATION, cmd->time, index,
                        &pub.base);
        sent++;
    }
    snprintf(msg, sizeof(msg), "sent to %d link%s", sent, sent == 1 ? "" : "s");
    if (rv == 0 && store_str_set(&res->message, msg) != 0) {
        rv = store_errf(s, STORE_NOMEM, "fed: out of memory");
    }
    return rv;
}

/* --- inbound --- */

/* Notes on messages whose effect was refused, for the result message. */
struct notes {
    char buf[FED_NOTES_SIZE];
    size_t len;
    int full;
};

static void note_add(struct notes *n, uint64_t seq, const char *what)
{
    char one[160];
    int w;

    if (n->full) {
        return;
    }
    w = snprintf(one, sizeof(one), "; seq %llu: %s", (unsigned long long)seq,
                 what);
    if (w < 0 || n->len + (size_t)w + 6 >= sizeof(n->buf)) {
        memcpy(n->buf + n->len, "; ...", 6);
        n->len += 5;
        n->full = 1;
        return;
    }
    memcpy(n->buf + n->len, one, (size_t)w + 1);
    n->len += (size_t)w;
}

/* @id is "<tier>/<rest>": of @tier, or of any tier when @tier is NULL. */
static int task_id_of(const char *id, const char *tier)
{
    const char *slash = strchr(id, '/');
    char prefix[STORE_FED_TIER_MAX + 1];
    size_t n;

    if (slash == NULL || slash[1] == '\0' ||
        strlen(id) > STORE_FED_TASK_ID_MAX) {
        return 0;
    }
    n = (size_t)(slash - id);
    if (n == 0 || n > STORE_FED_TIER_MAX) {
        return 0;
    }
    memcpy(prefix, id, n);
    prefix[n] = '\0';
    return tier != NULL ? strcmp(prefix, tier) == 0 : tier_ok(prefix);
}

/* "key_task": store the task as received, unless it is not @origin's or
 * is already stored. A task from this tier's parent may carry another
 * tier's id: the parent forwarded it (按责转办), keeping the id. */
static int inbound_task(struct store *s,
                        MDB_txn *txn,
                        const char *origin,
                        int from_parent,
                        const Cityops__V1__OutboxMessage *m,
                        struct notes *notes)
{
    Cityops__V1__FedTaskView view = CITYOPS__V1__FED_TASK_VIEW__INIT;
    Cityops__V1__KeyTask task;
    Cityops__V1__KeyTask *t;
    const char *id;
    MDB_val k;
    int rv = 0;

    t = cityops__v1__key_task__unpack(NULL, m->payload.len, m->payload.data);
    if (t == NULL) {
        note_add(notes, m->seq, "key_task does not decode");
        return 0;
    }
    id = str0(t->task_id);
    if (strcmp(str0(t->origin_tier), origin) != 0 ||
        !task_id_of(id, from_parent ? NULL : origin)) {
        note_add(notes, m->seq, "key_task is not the origin's");
        goto out_free_task;
    }
    task_copy(&task, t, (char *)id);
    view.task = &task;
    k = str_key(id);
    rv = packed_put(s, txn, STORE_DB_FED_TASKS, &k, TASK_RECEIVED,
                    &view.base, MDB_NOOVERWRITE);
    if (rv == 1) {
        note_add(notes, m->seq, "task already stored");
        rv = 0;
    }
out_free_task:
    cityops__v1__key_task__free_unpacked(t, NULL);
    return rv;
}

/* "task_feedback": @origin's latest feedback on a task assigned here, or
 * on a received one this tier forwarded to @origin. */
static int inbound_feedback(struct store *s,
                            MDB_txn *txn,
                            const char *origin,
                            const Cityops__V1__OutboxMessage *m,
                            struct notes *notes)
{
    Cityops__V1__TaskFeedback *f;
    Cityops__V1__FedTaskView *v = NULL;
    const char *id;
    char tag = 0;
    int rv = 0;

    f = cityops__v1__task_feedback__unpack(NULL, m->payload.len,
                                           m->payload.data);
    if (f == NULL) {
        note_add(notes, m->seq, "task_feedback does not decode");
        return 0;
    }
    id = str0(f->task_id);
    if (strcmp(str0(f->tier_id), origin) != 0 || !status_ok(f->status) ||
        strlen(str0(f->note)) > STORE_MAX_TEXT || id[0] == '\0' ||
        strlen(id) > STORE_FED_TASK_ID_MAX) {
        note_add(notes, m->seq, "task_feedback is not valid");
        goto out_free_feedback;
    }
    rv = task_load(s, txn, id, &tag, &v);
    if (rv == STORE_NOTFOUND) {
        note_add(notes, m->seq, "task_feedback on an unknown task");
        rv = 0;
        goto out_free_feedback;
    }
    if (rv != 0) {
        goto out_free_feedback;
    }
    if (tag == TASK_ASSIGNED ? !names_tier(v->task, origin)
                             : !list_has(v->forwarded_to, v->n_forwarded_to,
                                         origin)) {
        note_add(notes, m->seq, "task was not assigned to the origin");
    } else {
        rv = task_save_feedback(s, txn, tag, v, f);
    }
    cityops__v1__fed_task_view__free_unpacked(v, NULL);
out_free_feedback:
    cityops__v1__task_feedback__free_unpacked(f, NULL);
    return rv;
}

/* The witness key (origin, '\0', tree size BE). */
static size_t witness_key(uint8_t key[STORE_FED_TIER_MAX + 9],
                          const char *origin,
                          uint64_t size)
{
    size_t olen = strlen(origin);

    memcpy(key, origin, olen + 1);
    store_be64_put(key + olen + 1, size);
    return olen + 9;
}

/* The largest tree size witnessed for @origin (0: none). */
static int witness_last(struct store *s,
                        MDB_txn *txn,
                        const char *origin,
                        uint64_t *size)
{
    uint8_t key[STORE_FED_TIER_MAX + 9];
    size_t olen = strlen(origin);
    MDB_val k = {witness_key(key, origin, UINT64_MAX), key};
    MDB_val v;
    MDB_cursor *cur;
    int rc;

    *size = 0;
    rc = mdb_cursor_open(txn, s->dbi[STORE_DB_FED_WITNESS], &cur);
    if (rc != 0) {
        return store_mdb_err(s, rc, "fed_witness cursor");
    }
    rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
    if (rc == 0 && k.mv_size == olen + 9 &&
        memcmp(k.mv_data, key, olen + 9) == 0) {
        *size = UINT64_MAX; /* a head of the largest size itself */
    } else {
        rc = rc == 0 ? mdb_cursor_get(cur, &k, &v, MDB_PREV)
                     : mdb_cursor_get(cur, &k, &v, MDB_LAST);
        if (rc == 0 && k.mv_size == olen + 9 &&
            memcmp(k.mv_data, origin, olen + 1) == 0) {
            *size = store_be64_get((const uint8_t *)k.mv_data + olen + 1);
        }
    }
    mdb_cursor_close(cur);
    if (rc != 0 && rc != MDB_NOTFOUND) {
        return store_mdb_err(s, rc, "fed_witness/%s: last head", origin);
    }
    return 0;
}

/* "audit_checkpoint": witness @origin's signed tree head if it verifies
 * and grows the tree. */
static int inbound_checkpoint(struct store *s,
                              MDB_txn *txn,
                              const char *origin,
                              const Cityops__V1__OutboxMessage *m,
                              struct notes *notes)
{
    uint8_t key[STORE_FED_TIER_MAX + 9];
    Cityops__V1__Checkpoint *cp;
    MDB_val k = {0, key};
    MDB_val v;
    uint64_t last;
    int rv;
    int rc;

    cp = cityops__v1__checkpoint__unpack(NULL, m->payload.len,
                                         m->payload.data);
    if (cp == NULL) {
        note_add(notes, m->seq, "audit_checkpoint does not decode");
        return 0;
    }
    rv = audit_checkpoint_verify(cp);
    if (rv < 0) {
        rv = store_errf(s, rv, "fed: verify: out of memory");
        goto out_free_cp;
    }
    if (rv == 0) {
        note_add(notes, m->seq, "checkpoint signature does not verify");
        goto out_free_cp;
    }
    rv = witness_last(s, txn, origin, &last);
    if (rv != 0) {
        goto out_free_cp;
    }
    if (cp->tree_size <= last) {
        char why[96];

        snprintf(why, sizeof(why), "tree size %llu is not above %llu",
                 (unsigned long long)cp->tree_size, (unsigned long long)last);
        note_add(notes, m->seq, why);
        goto out_free_cp;
    }
    k.mv_size = witness_key(key, origin, cp->tree_size);
    v.mv_size = m->payload.len;
    v.mv_data = m->payload.data;
    rc = mdb_put(txn, s->dbi[STORE_DB_FED_WITNESS], &k, &v, 0);
    if (rc != 0) {
        rv = store_mdb_err(s, rc, "put fed_witness/%s/%llu", origin,
                           (unsigned long long)cp->tree_size);
    }
out_free_cp:
    cityops__v1__checkpoint__free_unpacked(cp, NULL);
    return rv;
}

/* What the effects of one inbound run share. */
struct inbound_ctx {
    struct store *s;
    MDB_txn *txn;
    uint64_t index;
    const Cityops__V1__Command *cmd;
    const char *origin;
    const char *reply; /* the outbox link back to origin */
    struct notes *notes;
};

static Cityops__V1__CommandResult *result_new(void)
{
    Cityops__V1__CommandResult *res = malloc(sizeof(*res));

    if (res != NULL) {
        cityops__v1__command_result__init(res);
    }
    return res;
}

/* --- 跨界移交 and 下级上报: hand-over to a peer, escalation to the parent ---
 *
 * The sender keeps the case open with a pending row ('O', case id) and a
 * COMMENT event; the receiver keeps the message as a pending row ('I',
 * "<origin>/<case id>") until a shift leader accepts (a case opens here,
 * source PEER_TRANSFER or LOWER_TIER) or declines it; the answer goes back
 * as an ack, on which the sender's case goes TRANSFERRED_OUT or stays open
 * with the decline noted. */

#define HANDOVER_KEY_MAX (1 + STORE_FED_TASK_ID_MAX)

struct handover_kind {
    const char *kind; /* the message */
    const char *ack;  /* its answer */
    const char *what; /* in case history notes */
    Cityops__V1__CaseSource source;
};

static const struct handover_kind hk_peer = {
    KIND_HANDOVER, KIND_HANDOVER_ACK, "hand-over",
    CITYOPS__V1__CASE_SOURCE__CASE_SOURCE_PEER_TRANSFER};
static const struct handover_kind hk_up = {
    KIND_ESCALATION, KIND_ESCALATION_ACK, "escalation",
    CITYOPS__V1__CASE_SOURCE__CASE_SOURCE_LOWER_TIER};

static const struct handover_kind *hk_of(int escalation)
{
    return escalation ? &hk_up : &hk_peer;
}

/* 'O' + case id, or 'I' + id: the fed_handovers key in @key. */
static MDB_val handover_key(uint8_t key[HANDOVER_KEY_MAX],
                            uint64_t case_id,
                            const char *id)
{
    MDB_val k = {0, key};

    if (id == NULL) {
        key[0] = 'O';
        store_be64_put(key + 1, case_id);
        k.mv_size = 9;
    } else {
        key[0] = 'I';
        memcpy(key + 1, id, strlen(id));
        k.mv_size = 1 + strlen(id);
    }
    return k;
}

/* The pending row under @k, or NULL (STORE_NOTFOUND) if there is none. */
static int handover_load(struct store *s,
                         MDB_txn *txn,
                         MDB_val *k,
                         Cityops__V1__HandoverMessage **out)
{
    MDB_val v;
    int rc;

    *out = NULL;
    rc = mdb_get(txn, s->dbi[STORE_DB_FED_HANDOVERS], k, &v);
    if (rc == MDB_NOTFOUND) {
        return STORE_NOTFOUND;
    }
    if (rc != 0) {
        return store_mdb_err(s, rc, "get fed_handovers");
    }
    *out = cityops__v1__handover_message__unpack(NULL, v.mv_size, v.mv_data);
    if (*out == NULL) {
        return store_errf(s, STORE_CORRUPT, "fed_handovers row does not "
                                            "decode");
    }
    return 0;
}

static int handover_del(struct store *s, MDB_txn *txn, MDB_val *k)
{
    int rc = mdb_del(txn, s->dbi[STORE_DB_FED_HANDOVERS], k, NULL);

    if (rc != 0 && rc != MDB_NOTFOUND) {
        return store_mdb_err(s, rc, "del fed_handovers");
    }
    return 0;
}

/* "<what> <verb> <tier>: <reason>" in @buf (HISTORY_NOTE_SIZE bytes),
 * cut at a character boundary to fit a case event's reason. */
#define HISTORY_NOTE_SIZE (2 * STORE_MAX_TEXT + 128)

static const char *history_note(char buf[HISTORY_NOTE_SIZE],
                                const char *what,
                                const char *verb,
                                const char *tier,
                                const char *reason)
{
    snprintf(buf, HISTORY_NOTE_SIZE, "%s %s %s%s%.*s", what, verb, tier,
             str0(reason)[0] != '\0' ? ": " : "", STORE_MAX_TEXT,
             str0(reason));
    utf8_cut(buf, strlen(buf), STORE_MAX_TEXT);
    return buf;
}

/* Send the open case @case_id to @target (a peer tier, or "parent") as
 * @hk->kind, pending until the answer. */
static int handover_send(struct store *s,
                         MDB_txn *txn,
                         uint64_t index,
                         const Cityops__V1__Command *cmd,
                         const struct handover_kind *hk,
                         uint64_t case_id,
                         const char *origin,
                         const char *target,
                         const char *reason,
                         Cityops__V1__CommandResult *res)
{
    Cityops__V1__HandoverMessage m = CITYOPS__V1__HANDOVER_MESSAGE__INIT;
    Cityops__V1__HandoverMessage *old = NULL;
    uint8_t key[HANDOVER_KEY_MAX];
    MDB_val k = handover_key(key, case_id, NULL);
    char note[HISTORY_NOTE_SIZE];
    char id[STORE_FED_TASK_ID_MAX + 1];
    int rv;

    if (cmd->role != CITYOPS__V1__ROLE__ROLE_SHIFT_LEADER) {
        snprintf(note, sizeof(note), "a%s %s needs role SHIFT_LEADER",
                 hk == &hk_up ? "n" : "", hk->what);
        return store_result_fail(res, RC_DENIED, note);
    }
    if (case_id == 0) {
        return store_result_fail(res, RC_INVALID, "case_id required");
    }
    if (!tier_ok(origin)) {
        return store_result_fail(res, RC_INVALID,
                                 "origin_tier must be the local tier id");
    }
    if (hk == &hk_peer &&
        (!tier_ok(target) || strcmp(target, origin) == 0)) {
        return store_result_fail(res, RC_INVALID,
                                 "peer_tier must be another tier's id");
    }
    if (strlen(str0(reason)) > STORE_MAX_TEXT) {
        return store_result_fail(res, RC_INVALID, "reason too long");
    }
    rv = handover_load(s, txn, &k, &old);
    if (rv == 0) {
        snprintf(note, sizeof(note), "the case has a pending %s to %s",
                 hk_of(old->escalation)->what, str0(old->target));
        cityops__v1__handover_message__free_unpacked(old, NULL);
        return store_result_fail(res, RC_PRECONDITION, note);
    }
    if (rv != STORE_NOTFOUND) {
        return rv;
    }
    rv = case_fsm_comment(s, txn, index, cmd, case_id,
                          history_note(note, hk->what, "asked of", target,
                                       reason),
                          res);
    if (rv != 0 || res->code != RC_OK) {
        return rv;
    }
    snprintf(id, sizeof(id), "%s/%llu", origin, (unsigned long long)case_id);
    m.origin_tier = (char *)origin;
    m.origin_case_id = case_id;
    m.case_ = res->case_;
    m.reason = (char *)str0(reason);
    m.escalation = hk == &hk_up;
    m.at = cmd->time;
    m.id = id;
    rv = outbox_put(s, txn, target, hk->kind, cmd->time, index, &m.base);
    if (rv == 0) {
        m.target = (char *)target;
        rv = packed_put(s, txn, STORE_DB_FED_HANDOVERS, &k, 0, &m.base, 0);
    }
    return rv;
}

static int handover(struct store *s,
                    MDB_txn *txn,
                    uint64_t index,
                    const Cityops__V1__Command *cmd,
                    Cityops__V1__CommandResult *res)
{
    const Cityops__V1__FedHandover *h = cmd->fed_handover;

    return handover_send(s, txn, index, cmd, &hk_peer, h->case_id,
                         str0(h->origin_tier), str0(h->peer_tier), h->reason,
                         res);
}

static int escalate(struct store *s,
                    MDB_txn *txn,
                    uint64_t index,
                    const Cityops__V1__Command *cmd,
                    Cityops__V1__CommandResult *res)
{
    const Cityops__V1__FedEscalate *e = cmd->fed_escalate;

    return handover_send(s, txn, index, cmd, &hk_up, e->case_id,
                         str0(e->origin_tier), "parent", e->reason, res);
}

/* The case made here from pending @h (source PEER_TRANSFER or LOWER_TIER,
 * remote_ref "<origin>/<origin case id>"): res->case_ on OK. */
static int handover_case_create(struct store *s,
                                MDB_txn *txn,
                                uint64_t index,
                                const Cityops__V1__Command *cmd,
                                const Cityops__V1__HandoverMessage *h,
                                Cityops__V1__CommandResult *res)
{
    const Cityops__V1__Case *k = h->case_;
    Cityops__V1__ReportRequest r = CITYOPS__V1__REPORT_REQUEST__INIT;
    Cityops__V1__Command sys = *cmd;
    char ref[STORE_FED_TIER_MAX + 22];
    int rv;

    r.source = hk_of(h->escalation)->source;
    r.category_type = k->category_type;
    r.major_code = k->major_code;
    r.minor_code = k->minor_code;
    r.component_id = k->component_id;
    r.description = k->description;
    r.location = k->location;
    r.n_attachments = k->n_attachments;
    r.attachments = k->attachments;
    /* the tier reports on the other tier's behalf (as for a task's case) */
    sys.role = CITYOPS__V1__ROLE__ROLE_SYSTEM;
    rv = case_fsm_report(s, txn, index, &sys, &r, res);
    if (rv != 0 || res->code != RC_OK) {
        return rv;
    }
    snprintf(ref, sizeof(ref), "%s/%llu", h->origin_tier,
             (unsigned long long)h->origin_case_id);
    rv = case_remote_ref_set(s, txn, index, res->case_->case_id, ref);
    if (rv == 0 && store_str_set(&res->case_->remote_ref, ref) != 0) {
        rv = store_errf(s, STORE_NOMEM, "fed: out of memory");
    }
    return rv;
}

/* Accept (open the case here) or decline a pending incoming hand-over or
 * escalation; either way the answer goes back and the row is gone. */
static int handover_answer(struct store *s,
                           MDB_txn *txn,
                           uint64_t index,
                           const Cityops__V1__Command *cmd,
                           Cityops__V1__CommandResult *res)
{
    const Cityops__V1__FedHandoverAnswer *a = cmd->fed_handover_answer;
    Cityops__V1__HandoverMessage ack = CITYOPS__V1__HANDOVER_MESSAGE__INIT;
    Cityops__V1__HandoverMessage *h = NULL;
    const struct handover_kind *hk;
    uint8_t key[HANDOVER_KEY_MAX];
    MDB_val k;
    char msg[64];
    int rv;

    if (cmd->role != CITYOPS__V1__ROLE__ROLE_SHIFT_LEADER) {
        return store_result_fail(res, RC_DENIED,
                                 "answering a hand-over needs role "
                                 "SHIFT_LEADER");
    }
    if (!task_id_of(str0(a->id), NULL)) {
        return store_result_fail(res, RC_INVALID,
                                 "id must be <origin tier>/<case id>");
    }
    if (a->decline && (str0(a->reason)[0] == '\0' ||
                       strlen(a->reason) > STORE_MAX_TEXT)) {
        return store_result_fail(res, RC_INVALID,
                                 "a decline needs a reason of at most 1000 "
                                 "bytes");
    }
    k = handover_key(key, 0, a->id);
    rv = handover_load(s, txn, &k, &h);
    if (rv == STORE_NOTFOUND) {
        return store_result_fail(res, RC_NOT_FOUND,
                                 "no such pending hand-over");
    }
    if (rv != 0) {
        return rv;
    }
    hk = hk_of(h->escalation);
    ack.origin_tier = h->origin_tier;
    ack.origin_case_id = h->origin_case_id;
    ack.escalation = h->escalation;
    ack.at = cmd->time;
    ack.id = h->id;
    if (a->decline) {
        ack.declined = 1;
        ack.reason = a->reason;
        snprintf(msg, sizeof(msg), "declined");
    } else {
        rv = handover_case_create(s, txn, index, cmd, h, res);
        if (rv != 0 || res->code != RC_OK) {
            goto out_free;
        }
        ack.peer_case_id = res->case_->case_id;
        snprintf(msg, sizeof(msg), "case %llu",
                 (unsigned long long)ack.peer_case_id);
    }
    rv = outbox_put(s, txn, str0(h->reply_stream), hk->ack, cmd->time, index,
                    &ack.base);
    if (rv == 0) {
        rv = handover_del(s, txn, &k);
    }
    if (rv == 0 && (store_str_set(&res->message, msg) != 0 ||
                    store_str_set(&res->ref, a->id) != 0)) {
        rv = store_errf(s, STORE_NOMEM, "fed: out of memory");
    }
out_free:
    cityops__v1__handover_message__free_unpacked(h, NULL);
    return rv;
}

/* "case_handover" / "case_escalation": kept pending until answered here. */
static int inbound_handover(struct inbound_ctx *c,
                            const Cityops__V1__OutboxMessage *m,
                            int escalation)
{
    Cityops__V1__HandoverMessage *h;
    Cityops__V1__HandoverMessage p;
    char id[STORE_FED_TASK_ID_MAX + 1];
    uint8_t key[HANDOVER_KEY_MAX];
    MDB_val k;
    int rv = 0;

    h = cityops__v1__handover_message__unpack(NULL, m->payload.len,
                                              m->payload.data);
    if (h == NULL) {
        note_add(c->notes, m->seq, "hand-over does not decode");
        return 0;
    }
    if (strcmp(str0(h->origin_tier), c->origin) != 0 || h->case_ == NULL ||
        h->origin_case_id == 0) {
        note_add(c->notes, m->seq, "hand-over is not valid");
        goto out_free_msg;
    }
    snprintf(id, sizeof(id), "%s/%llu", c->origin,
             (unsigned long long)h->origin_case_id);
    p = *h;
    p.id = id;
    p.reply_stream = (char *)c->reply;
    p.target = "";
    p.escalation = escalation;
    p.at = c->cmd->time;
    k = handover_key(key, 0, id);
    rv = packed_put(c->s, c->txn, STORE_DB_FED_HANDOVERS, &k, 0, &p.base,
                    MDB_NOOVERWRITE);
    if (rv == 1) {
        note_add(c->notes, m->seq, "that case is pending here already");
        rv = 0;
    }
out_free_msg:
    cityops__v1__handover_message__free_unpacked(h, NULL);
    return rv;
}

/* "handover_ack" / "escalation_ack": the answer on a case sent from here.
 * Accepted: the case goes TRANSFERRED_OUT with remote_ref
 * "<origin>/<its case id>"; declined: it stays open, with a note. */
static int inbound_handover_ack(struct inbound_ctx *c,
                                const Cityops__V1__OutboxMessage *m,
                                int escalation)
{
    const struct handover_kind *hk = hk_of(escalation);
    Cityops__V1__HandoverMessage *h;
    Cityops__V1__HandoverMessage *p = NULL;
    Cityops__V1__CommandResult *res = NULL;
    uint8_t key[HANDOVER_KEY_MAX];
    char note[HISTORY_NOTE_SIZE];
    char ref[STORE_FED_TIER_MAX + 22];
    MDB_val k;
    int rv;

    h = cityops__v1__handover_message__unpack(NULL, m->payload.len,
                                              m->payload.data);
    if (h == NULL) {
        note_add(c->notes, m->seq, "hand-over answer does not decode");
        return 0;
    }
    k = handover_key(key, h->origin_case_id, NULL);
    rv = handover_load(c->s, c->txn, &k, &p);
    if (rv == STORE_NOTFOUND ||
        (rv == 0 && (p->escalation != escalation ||
                     strcmp(str0(p->target),
                            escalation ? "parent" : c->origin) != 0 ||
                     (escalation && strcmp(c->reply, "parent") != 0)))) {
        note_add(c->notes, m->seq,
                 "no hand-over of that case is pending with the origin");
        rv = 0;
        goto out_free;
    }
    if (rv != 0) {
        goto out_free;
    }
    if (!h->declined && h->peer_case_id == 0) {
        note_add(c->notes, m->seq, "hand-over answer is not valid");
        goto out_free;
    }
    res = result_new();
    if (res == NULL) {
        rv = store_errf(c->s, STORE_NOMEM, "fed: out of memory");
        goto out_free;
    }
    rv = handover_del(c->s, c->txn, &k);
    if (rv != 0) {
        goto out_free;
    }
    if (h->declined) {
        rv = case_fsm_comment(c->s, c->txn, c->index, c->cmd,
                              h->origin_case_id,
                              history_note(note, hk->what, "declined by",
                                           c->origin, h->reason),
                              res);
    } else {
        rv = case_fsm_transfer_out(c->s, c->txn, c->index, c->cmd,
                                   h->origin_case_id, p->reason, res);
        if (rv == 0 && res->code == RC_OK) {
            snprintf(ref, sizeof(ref), "%s/%llu", c->origin,
                     (unsigned long long)h->peer_case_id);
            rv = case_remote_ref_set(c->s, c->txn, c->index,
                                     h->origin_case_id, ref);
        }
    }
    if (rv == 0 && res->code != RC_OK) {
        snprintf(note, 160, "hand-over answer on case %llu: %.100s",
                 (unsigned long long)h->origin_case_id, str0(res->message));
        note_add(c->notes, m->seq, note);
    }
out_free:
    if (res != NULL) {
        cityops__v1__command_result__free_unpacked(res, NULL);
    }
    if (p != NULL) {
        cityops__v1__handover_message__free_unpacked(p, NULL);
    }
    cityops__v1__handover_message__free_unpacked(h, NULL);
    return rv;
}

/* "subscribe": the origin (un)subscribes to a topic of ours; the link
 * back to it is kept for the publications. */
static int inbound_subscribe(struct inbound_ctx *c,
                             const Cityops__V1__OutboxMessage *m)
{
    Cityops__V1__FedSubscribe *sb;
    uint8_t key[FED_TOPIC_MAX + 1 + STORE_FED_TIER_MAX];
    MDB_val k = {0, key};
    MDB_val v;
    int rv = 0;
    int rc;

    sb = cityops__v1__fed_subscribe__unpack(NULL, m->payload.len,
                                            m->payload.data);
    if (sb == NULL) {
        note_add(c->notes, m->seq, "subscribe does not decode");
        return 0;
    }
    if (strcmp(str0(sb->origin_tier), c->origin) != 0 ||
        !name_ok(sb->topic, FED_TOPIC_MAX)) {
        note_add(c->notes, m->seq, "subscribe is not valid");
        goto out_free_msg;
    }
    k.mv_size = subs_key(key, sb->topic, c->origin);
    if (sb->unsubscribe) {
        rc = mdb_del(c->txn, c->s->dbi[STORE_DB_FED_SUBS], &k, NULL);
        if (rc == MDB_NOTFOUND) {
            note_add(c->notes, m->seq, "no such subscription");
            rc = 0;
        }
    } else {
        v = str_key(c->reply);
        rc = mdb_put(c->txn, c->s->dbi[STORE_DB_FED_SUBS], &k, &v, 0);
    }
    if (rc != 0) {
        rv = store_mdb_err(c->s, rc, "fed_subs/%s/%s", sb->topic, c->origin);
    }
out_free_msg:
    cityops__v1__fed_subscribe__free_unpacked(sb, NULL);
    return rv;
}

/* The received key (origin, '\0', topic, '\0', key). */
static size_t received_key(uint8_t *key, const Cityops__V1__Publication *p)
{
    size_t o = strlen(p->origin_tier) + 1;
    size_t t = strlen(p->topic) + 1;

    memcpy(key, p->origin_tier, o);
    memcpy(key + o, p->topic, t);
    memcpy(key + o + t, p->key, strlen(p->key));
    return o + t + strlen(p->key);
}

/* "publication": the latest per (origin, topic, key). */
static int inbound_publication(struct inbound_ctx *c,
                               const Cityops__V1__OutboxMessage *m)
{
    uint8_t key[STORE_FED_TIER_MAX + FED_TOPIC_MAX + FED_KEY_MAX + 2];
    Cityops__V1__Publication *p;
    MDB_val k = {0, key};
    MDB_val v = {m->payload.len, m->payload.data};
    int rv = 0;
    int rc;

    p = cityops__v1__publication__unpack(NULL, m->payload.len,
                                         m->payload.data);
    if (p == NULL) {
        note_add(c->notes, m->seq, "publication does not decode");
        return 0;
    }
    if (strcmp(str0(p->origin_tier), c->origin) != 0 ||
        !name_ok(p->topic, FED_TOPIC_MAX) || !name_ok(p->key, FED_KEY_MAX) ||
        p->payload.len > FED_PAYLOAD_MAX ||
        strlen(str0(p->payload_type)) > FED_TYPE_MAX) {
        note_add(c->notes, m->seq, "publication is not valid");
        goto out_free_msg;
    }
    k.mv_size = received_key(key, p);
    rc = mdb_put(c->txn, c->s->dbi[STORE_DB_FED_RECEIVED], &k, &v, 0);
    if (rc != 0) {
        rv = store_mdb_err(c->s, rc, "put fed_received/%s/%s", c->origin,
                           p->topic);
    }
out_free_msg:
    cityops__v1__publication__free_unpacked(p, NULL);
    return rv;
}

/* The task named by a "task_supervise", "task_close" or "task_reopen"
 * message (TaskFeedback, status @status) received from the task's origin:
 * *v on success, else NULL with a note. */
static int task_message_load(struct inbound_ctx *c,
                             const Cityops__V1__OutboxMessage *m,
                             const char *status,
                             Cityops__V1__FedTaskView **v)
{
    Cityops__V1__TaskFeedback *f;
    char why[96];
    char tag = 0;
    int rv = 0;

    *v = NULL;
    f = cityops__v1__task_feedback__unpack(NULL, m->payload.len,
                                           m->payload.data);
    if (f == NULL || strcmp(str0(f->status), status) != 0 ||
        !task_id_ok(f->task_id)) {
        snprintf(why, sizeof(why), "%.40s is not valid", str0(m->kind));
        note_add(c->notes, m->seq, why);
        goto out_free_msg;
    }
    rv = task_load(c->s, c->txn, f->task_id, &tag, v);
    if (rv == STORE_NOTFOUND) {
        snprintf(why, sizeof(why), "%.40s on an unknown task", str0(m->kind));
        note_add(c->notes, m->seq, why);
        rv = 0;
    } else if (rv == 0 &&
               (tag != TASK_RECEIVED ||
                strcmp(str0((*v)->task->origin_tier), c->origin) != 0)) {
        note_add(c->notes, m->seq, "the task did not come from the origin");
        cityops__v1__fed_task_view__free_unpacked(*v, NULL);
        *v = NULL;
    }
out_free_msg:
    if (f != NULL) {
        cityops__v1__task_feedback__free_unpacked(f, NULL);
    }
    return rv;
}

/* "task_supervise" (重点督办): the origin supervises a task it sent here. */
static int inbound_supervise(struct inbound_ctx *c,
                             const Cityops__V1__OutboxMessage *m)
{
    Cityops__V1__FedTaskView *v = NULL;
    int rv;

    rv = task_message_load(c, m, "supervise", &v);
    if (rv == 0 && v != NULL && !v->supervised) {
        v->supervised = 1;
        rv = task_save(c->s, c->txn, TASK_RECEIVED, v);
    }
    if (v != NULL) {
        cityops__v1__fed_task_view__free_unpacked(v, NULL);
    }
    return rv;
}

/* Mark @v closed (or open again) and tell the tiers it was @sent to. */
static int task_close_send(struct store *s,
                           MDB_txn *txn,
                           uint64_t index,
                           int64_t time,
                           char tag,
                           Cityops__V1__FedTaskView *v,
                           int reopen)
{
    Cityops__V1__TaskFeedback fb = CITYOPS__V1__TASK_FEEDBACK__INIT;
    char **children;
    size_t n;
    int rv;

    v->closed = !reopen;
    rv = task_save(s, txn, tag, v);
    task_children(v, tag, &children, &n);
    fb.task_id = v->task->task_id;
    fb.status = reopen ? "reopen" : "close";
    fb.at = time;
    for (size_t i = 0; rv == 0 && i < n; i++) {
        fb.tier_id = children[i];
        rv = outbox_put(s, txn, children[i],
                        reopen ? KIND_TASK_REOPEN : KIND_TASK_CLOSE, time,
                        index, &fb.base);
    }
    return rv;
}

/* "task_close" / "task_reopen": the origin closed or reopened a task it
 * sent here; the tiers it was forwarded to hear of it too. */
static int inbound_task_close(struct inbound_ctx *c,
                              const Cityops__V1__OutboxMessage *m,
                              int reopen)
{
    Cityops__V1__FedTaskView *v = NULL;
    int rv;

    rv = task_message_load(c, m, reopen ? "reopen" : "close", &v);
    if (rv != 0 || v == NULL) {
        return rv;
    }
    if (v->closed == !reopen) {
        note_add(c->notes, m->seq,
                 reopen ? "the task is open" : "the task is closed already");
    } else {
        rv = task_close_send(c->s, c->txn, c->index, c->cmd->time,
                             TASK_RECEIVED, v, reopen);
    }
    cityops__v1__fed_task_view__free_unpacked(v, NULL);
    return rv;
}

static int inbound_effect(struct inbound_ctx *c,
                          const Cityops__V1__OutboxMessage *m)
{
    const char *kind = str0(m->kind);
    char why[96];

    if (strcmp(kind, KIND_KEY_TASK) == 0) {
        return inbound_task(c->s, c->txn, c->origin,
                            strcmp(c->reply, "parent") == 0, m, c->notes);
    }
    if (strcmp(kind, KIND_FEEDBACK) == 0) {
        return inbound_feedback(c->s, c->txn, c->origin, m, c->notes);
    }
    if (strcmp(kind, KIND_CHECKPOINT) == 0) {
        return inbound_checkpoint(c->s, c->txn, c->origin, m, c->notes);
    }
    if (strcmp(kind, KIND_HANDOVER) == 0 ||
        strcmp(kind, KIND_ESCALATION) == 0) {
        return inbound_handover(c, m, strcmp(kind, KIND_ESCALATION) == 0);
    }
    if (strcmp(kind, KIND_HANDOVER_ACK) == 0 ||
        strcmp(kind, KIND_ESCALATION_ACK) == 0) {
        return inbound_handover_ack(c, m,
                                    strcmp(kind, KIND_ESCALATION_ACK) == 0);
    }
    if (strcmp(kind, KIND_SUBSCRIBE) == 0) {
        return inbound_subscribe(c, m);
    }
    if (strcmp(kind, KIND_PUBLICATION) == 0) {
        return inbound_publication(c, m);
    }
    if (strcmp(kind, KIND_SUPERVISE) == 0) {
        return inbound_supervise(c, m);
    }
    if (strcmp(kind, KIND_TASK_CLOSE) == 0 ||
        strcmp(kind, KIND_TASK_REOPEN) == 0) {
        return inbound_task_close(c, m, strcmp(kind, KIND_TASK_REOPEN) == 0);
    }
    snprintf(why, sizeof(why), "unknown kind \"%.40s\"", kind);
    note_add(c->notes, m->seq, why);
    return 0;
}

static int inbound_check(const Cityops__V1__FedInbound *in,
                         Cityops__V1__CommandResult *res)
{
    const char *origin;

    if (in->n_envelopes == 0 || in->n_envelopes > STORE_FED_INBOUND_MAX) {
        return store_result_fail(res, RC_INVALID,
                                 "1 to 1000 envelopes per command");
    }
    origin = in->envelopes[0]->origin;
    if (!tier_ok(origin)) {
        return store_result_fail(res, RC_INVALID,
                                 "envelope origin must be a tier id");
    }
    if (str0(in->reply_stream)[0] != '\0' && !link_ok(in->reply_stream)) {
        return store_result_fail(res, RC_INVALID,
                                 "reply_stream must be a tier id or "
                                 "\"parent\"");
    }
    for (size_t i = 0; i < in->n_envelopes; i++) {
        const Cityops__V1__FedEnvelope *e = in->envelopes[i];

        if (strcmp(str0(e->origin), origin) != 0) {
            return store_result_fail(res, RC_INVALID,
                                     "envelopes must share one origin");
        }
        if (e->message == NULL || e->message->seq == 0) {
            return store_result_fail(res, RC_INVALID,
                                     "every envelope needs a message with "
                                     "seq >= 1");
        }
    }
    return 0;
}

static int inbound(struct store *s,
                   MDB_txn *txn,
                   uint64_t index,
                   const Cityops__V1__Command *cmd,
                   Cityops__V1__CommandResult *res)
{
    const Cityops__V1__FedInbound *in = cmd->fed_inbound;
    const char *origin;
    struct notes notes = {.len = 0};
    struct inbound_ctx c = {s, txn, index, cmd, NULL, NULL, &notes};
    char msg[96 + FED_NOTES_SIZE];
    char gap[48] = "";
    uint64_t through;
    uint64_t applied = 0;
    uint64_t dups = 0;
    int rv;

    if (cmd->role != CITYOPS__V1__ROLE__ROLE_SYSTEM) {
        return store_result_fail(res, RC_DENIED,
                                 "inbound messages need role SYSTEM");
    }
    rv = inbound_check(in, res);
    if (rv != 0 || res->code != RC_OK) {
        return rv;
    }
    origin = in->envelopes[0]->origin;
    c.origin = origin;
    /* without it (an older node), answers go to the origin's own link */
    c.reply = str0(in->reply_stream)[0] != '\0' ? in->reply_stream : origin;
    rv = u64_get(s, txn, STORE_DB_FED_INBOX, origin, &through);
    for (size_t i = 0; rv == 0 && i < in->n_envelopes; i++) {
        const Cityops__V1__OutboxMessage *m = in->envelopes[i]->message;

        if (m->seq <= through) {
            dups++;
            continue;
        }
        if (m->seq > through + 1) {
            snprintf(gap, sizeof(gap), ", stopped at gap %llu",
                     (unsigned long long)m->seq);
            break;
        }
        rv = inbound_effect(&c, m);
        through = m->seq;
        applied++;
    }
    if (rv == 0 && applied > 0) {
        rv = u64_put(s, txn, STORE_DB_FED_INBOX, origin, through);
    }
    if (rv != 0) {
        return rv;
    }
    snprintf(msg, sizeof(msg), "applied %llu, duplicates %llu%s%s",
             (unsigned long long)applied, (unsigned long long)dups, gap,
             notes.buf);
    res->version = through;
    if (store_str_set(&res->message, msg) != 0) {
        return store_errf(s, STORE_NOMEM, "fed: out of memory");
    }
    return 0;
}

/* --- acknowledgements --- */

/* Delete @link's outbox rows with seq <= @upto. */
static int outbox_trim(struct store *s,
                       MDB_txn *txn,
                       const char *link,
                       uint64_t upto)
{
    size_t llen = strlen(link);
    uint8_t key[STORE_OUTBOX_KEY_MAX];
    MDB_val k = {llen + 1 + 8, key};
    MDB_val v;
    MDB_cursor *cur;
    int rc;

    memcpy(key, link, llen + 1);
    store_be64_put(key + llen + 1, 0);
    rc = mdb_cursor_open(txn, s->dbi[STORE_DB_OUTBOX], &cur);
    if (rc != 0) {
        return store_mdb_err(s, rc, "outbox cursor");
    }
    /* The link's first row each time: rows below it are gone. */
    for (;;) {
        k.mv_size = llen + 1 + 8;
        k.mv_data = key;
        rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
        if (rc != 0 || k.mv_size != llen + 1 + 8 ||
            memcmp(k.mv_data, link, llen + 1) != 0 ||
            store_be64_get((const uint8_t *)k.mv_data + llen + 1) > upto) {
            break;
        }
        rc = mdb_cursor_del(cur, 0);
        if (rc != 0) {
            break;
        }
    }
    mdb_cursor_close(cur);
    if (rc != 0 && rc != MDB_NOTFOUND) {
        return store_mdb_err(s, rc, "trim outbox/%s", link);
    }
    return 0;
}

static int outbox_ack(struct store *s,
                      MDB_txn *txn,
                      const Cityops__V1__Command *cmd,
                      Cityops__V1__CommandResult *res)
{
    const Cityops__V1__FedOutboxAck *a = cmd->fed_outbox_ack;
    uint64_t acked;
    uint64_t last;
    int rv;

    if (cmd->role != CITYOPS__V1__ROLE__ROLE_SYSTEM) {
        return store_result_fail(res, RC_DENIED, "acks need role SYSTEM");
    }
    if (!link_ok(a->link)) {
        return store_result_fail(res, RC_INVALID,
                                 "link must be a tier id or \"parent\"");
    }
    rv = u64_get(s, txn, STORE_DB_FED_ACKED, a->link, &acked);
    if (rv == 0) {
        rv = outbox_last(s, txn, a->link, &last);
    }
    if (rv != 0) {
        return rv;
    }
    if (a->through > last) {
        return store_result_fail(res, RC_PRECONDITION,
                                 "ack past the last outbox row of the link");
    }
    res->version = acked;
    if (a->through <= acked) {
        return 0; /* a late or repeated ack: never move backwards */
    }
    res->version = a->through;
    rv = u64_put(s, txn, STORE_DB_FED_ACKED, a->link, a->through);
    if (rv == 0 && last > STORE_FED_OUTBOX_KEEP) {
        uint64_t old = last - STORE_FED_OUTBOX_KEEP;

        rv = outbox_trim(s, txn, a->link, old < a->through ? old : a->through);
    }
    return rv;
}

/* 结案 / 重新打开 at the tier that assigned the task. */
static int task_close(struct store *s,
                      MDB_txn *txn,
                      uint64_t index,
                      const Cityops__V1__Command *cmd,
                      Cityops__V1__CommandResult *res)
{
    const Cityops__V1__FedTaskClose *tc = cmd->fed_task_close;
    Cityops__V1__FedTaskView *v = NULL;
    char tag = 0;
    int rv;

    rv = not_leader_or_admin(cmd, "closing a task", res);
    if (rv != 0) {
        return rv == 1 ? 0 : rv;
    }
    if (!task_id_ok(tc->task_id)) {
        return store_result_fail(res, RC_INVALID, "task id required");
    }
    rv = task_load(s, txn, tc->task_id, &tag, &v);
    if (rv == STORE_NOTFOUND) {
        return store_result_fail(res, RC_NOT_FOUND, "no such task");
    }
    if (rv != 0) {
        return rv;
    }
    if (tag != TASK_ASSIGNED) {
        rv = store_result_fail(res, RC_PRECONDITION,
                               "only the tier that assigned a task closes "
                               "or reopens it");
    } else if (v->closed == !tc->reopen) {
        rv = store_result_fail(res, RC_PRECONDITION,
                               tc->reopen ? "the task is open"
                                          : "the task is closed already");
    } else {
        rv = task_close_send(s, txn, index, cmd->time, tag, v, tc->reopen);
        if (rv == 0 && store_str_set(&res->ref, tc->task_id) != 0) {
            rv = store_errf(s, STORE_NOMEM, "fed: out of memory");
        }
    }
    cityops__v1__fed_task_view__free_unpacked(v, NULL);
    return rv;
}

int fed_apply(struct store *s,
              MDB_txn *txn,
              uint64_t index,
              const Cityops__V1__Command *cmd,
              Cityops__V1__CommandResult *res)
{
    res->code = RC_OK;
    switch (cmd->op_case) {
    case CITYOPS__V1__COMMAND__OP_FED_ASSIGN_TASK:
        return assign_task(s, txn, index, cmd, res);
    case CITYOPS__V1__COMMAND__OP_FED_FEEDBACK:
        return feedback_send(s, txn, index, cmd, res);
    case CITYOPS__V1__COMMAND__OP_FED_INBOUND:
        return inbound(s, txn, index, cmd, res);
    case CITYOPS__V1__COMMAND__OP_FED_OUTBOX_ACK:
        return outbox_ack(s, txn, cmd, res);
    case CITYOPS__V1__COMMAND__OP_FED_FORWARD_TASK:
        return forward_task(s, txn, index, cmd, res);
    case CITYOPS__V1__COMMAND__OP_FED_TASK_TO_CASE:
        return task_to_case(s, txn, index, cmd, res);
    case CITYOPS__V1__COMMAND__OP_FED_HANDOVER:
        return handover(s, txn, index, cmd, res);
    case CITYOPS__V1__COMMAND__OP_FED_SUBSCRIBE:
        return subscribe(s, txn, index, cmd, res);
    case CITYOPS__V1__COMMAND__OP_FED_PUBLISH:
        return publish(s, txn, index, cmd, res);
    case CITYOPS__V1__COMMAND__OP_FED_HANDOVER_ANSWER:
        return handover_answer(s, txn, index, cmd, res);
    case CITYOPS__V1__COMMAND__OP_FED_ESCALATE:
        return escalate(s, txn, index, cmd, res);
    case CITYOPS__V1__COMMAND__OP_FED_TASK_CLOSE:
        return task_close(s, txn, index, cmd, res);
    default:
        return link_set(s, txn, cmd, res);
    }
}

/* --- reads --- */

int store_fed_links(struct store *s, Cityops__V1__FedLink ***out, size_t *n)
{
    Cityops__V1__FedLink **links = NULL;
    MDB_cursor *cur;
    MDB_stat st;
    MDB_val k, v;
    MDB_txn *txn;
    size_t got = 0;
    int rv;
    int rc;

    *out = NULL;
    *n = 0;
    rv = store_read_begin(s, &txn);
    if (rv != 0) {
        return rv;
    }
    rc = mdb_stat(txn, s->dbi[STORE_DB_FED_LINKS], &st);
    if (rc != 0) {
        rv = store_mdb_err(s, rc, "stat fed_links");
        goto out_end;
    }
    links = calloc(st.ms_entries > 0 ? st.ms_entries : 1, sizeof(*links));
    if (links == NULL) {
        rv = STORE_NOMEM;
        goto out_end;
    }
    rc = mdb_cursor_open(txn, s->dbi[STORE_DB_FED_LINKS], &cur);
    if (rc != 0) {
        rv = store_mdb_err(s, rc, "fed_links cursor");
        goto out_end;
    }
    for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST);
         rc == 0 && got < st.ms_entries;
         rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        links[got] = cityops__v1__fed_link__unpack(NULL, v.mv_size, v.mv_data);
        if (links[got] == NULL) {
            rv = store_errf(s, STORE_CORRUPT, "fed_links row does not decode");
            break;
        }
        got++;
    }
    mdb_cursor_close(cur);
out_end:
    store_read_end(s, txn);
    if (rv != 0) {
        if (links != NULL) {
            store_msgs_free((ProtobufCMessage **)links, got);
        }
        return rv;
    }
    *out = links;
    *n = got;
    return 0;
}

int store_fed_inbox_through(struct store *s, const char *origin, uint64_t *seq)
{
    MDB_txn *txn;
    int rv;

    *seq = 0;
    if (!tier_ok(origin)) {
        return STORE_INVALID;
    }
    rv = store_read_begin(s, &txn);
    if (rv != 0) {
        return rv;
    }
    rv = u64_get(s, txn, STORE_DB_FED_INBOX, origin, seq);
    store_read_end(s, txn);
    return rv;
}

/* created_at of @link's outbox row @seq (0 if there is none). */
static int outbox_row_time(struct store *s,
                           MDB_txn *txn,
                           const char *link,
                           uint64_t seq,
                           int64_t *time)
{
    size_t llen = strlen(link);
    uint8_t key[STORE_OUTBOX_KEY_MAX];
    MDB_val k = {llen + 1 + 8, key};
    MDB_val v;
    Cityops__V1__OutboxMessage *row;
    int rc;

    *time = 0;
    memcpy(key, link, llen + 1);
    store_be64_put(key + llen + 1, seq);
    rc = mdb_get(txn, s->dbi[STORE_DB_OUTBOX], &k, &v);
    if (rc == MDB_NOTFOUND) {
        return 0;
    }
    if (rc != 0) {
        return store_mdb_err(s, rc, "get outbox/%s/%llu", link,
                             (unsigned long long)seq);
    }
    row = cityops__v1__outbox_message__unpack(NULL, v.mv_size, v.mv_data);
    if (row == NULL) {
        return store_errf(s, STORE_CORRUPT, "outbox/%s/%llu does not decode",
                          link, (unsigned long long)seq);
    }
    *time = row->created_at;
    cityops__v1__outbox_message__free_unpacked(row, NULL);
    return 0;
}

int store_fed_outbox_state(struct store *s,
                           const char *link,
                           uint64_t *acked,
                           uint64_t *last_seq,
                           int64_t *oldest_unacked_time)
{
    uint64_t a = 0;
    uint64_t last = 0;
    int64_t oldest = 0;
    MDB_txn *txn;
    int rv;

    if (!link_ok(link)) {
        return STORE_INVALID;
    }
    rv = store_read_begin(s, &txn);
    if (rv != 0) {
        return rv;
    }
    rv = u64_get(s, txn, STORE_DB_FED_ACKED, link, &a);
    if (rv == 0) {
        rv = outbox_last(s, txn, link, &last);
    }
    if (rv == 0 && last > a) {
        rv = outbox_row_time(s, txn, link, a + 1, &oldest);
    }
    store_read_end(s, txn);
    if (rv != 0) {
        return rv;
    }
    if (acked != NULL) {
        *acked = a;
    }
    if (last_seq != NULL) {
        *last_seq = last;
    }
    if (oldest_unacked_time != NULL) {
        *oldest_unacked_time = oldest;
    }
    return 0;
}

static int settled(const Cityops__V1__FedTaskView *v, const char *tier)
{
    for (size_t i = 0; i < v->n_feedback; i++) {
        const Cityops__V1__TaskFeedback *f = v->feedback[i];

        if ((tier == NULL || strcmp(str0(f->tier_id), tier) == 0) &&
            (strcmp(str0(f->status), "done") == 0 ||
             strcmp(str0(f->status), "rejected") == 0)) {
            return 1;
        }
    }
    return 0;
}

/* A received task is settled by this tier's own final feedback: the
 * feedback of the tiers it was forwarded to does not count. */
static int settled_here(const Cityops__V1__FedTaskView *v)
{
    for (size_t i = 0; i < v->n_feedback; i++) {
        const Cityops__V1__TaskFeedback *f = v->feedback[i];

        if (!list_has(v->forwarded_to, v->n_forwarded_to, str0(f->tier_id)) &&
            settled(v, str0(f->tier_id))) {
            return 1;
        }
    }
    return 0;
}

static int overdue(const Cityops__V1__FedTaskView *v, char tag, int64_t now)
{
    if (v->closed || v->task->deadline >= now) {
        return 0;
    }
    if (tag == TASK_RECEIVED) {
        return !settled_here(v);
    }
    for (size_t i = 0; i < v->task->n_child_tiers; i++) {
        if (!settled(v, str0(v->task->child_tiers[i]))) {
            return 1;
        }
    }
    return 0;
}

/* --- 重点督办: supervision on the case clock's tick --- */

static int late_child(const Cityops__V1__FedTaskView *v,
                      char tag,
                      int64_t now)
{
    char **children;
    size_t n;

    if (v->supervised || v->closed || v->task->deadline >= now) {
        return 0;
    }
    task_children(v, tag, &children, &n);
    for (size_t i = 0; i < n; i++) {
        if (!settled(v, str0(children[i]))) {
            return 1;
        }
    }
    return 0;
}

/* Mark @id supervised and send "task_supervise" to each late child. */
static int supervise_one(struct store *s,
                         MDB_txn *txn,
                         uint64_t index,
                         const Cityops__V1__Command *cmd,
                         const char *id)
{
    Cityops__V1__TaskFeedback fb = CITYOPS__V1__TASK_FEEDBACK__INIT;
    Cityops__V1__FedTaskView *v = NULL;
    char **children;
    size_t n;
    char tag = 0;
    int rv;

    rv = task_load(s, txn, id, &tag, &v);
    if (rv != 0) {
        return rv;
    }
    v->supervised = 1;
    rv = task_save(s, txn, tag, v);
    task_children(v, tag, &children, &n);
    fb.task_id = v->task->task_id;
    fb.status = "supervise";
    fb.note = "feedback overdue";
    fb.at = cmd->time;
    for (size_t i = 0; rv == 0 && i < n; i++) {
        if (settled(v, str0(children[i]))) {
            continue;
        }
        fb.tier_id = children[i];
        rv = outbox_put(s, txn, children[i], KIND_SUPERVISE, cmd->time, index,
                        &fb.base);
    }
    cityops__v1__fed_task_view__free_unpacked(v, NULL);
    return rv;
}

struct tick_walk {
    int64_t now;
    char **ids; /* FED_TICK_MAX slots */
    size_t n;
};

/* Collect the id of a task to supervise. Tasks are few (one per
 * assignment), so a scan of the whole table per tick costs less than
 * keeping a deadline index. */
static int tick_row(struct store *s,
                    const MDB_val *k,
                    const MDB_val *v,
                    void *arg)
{
    struct tick_walk *w = arg;
    Cityops__V1__FedTaskView *t;
    char tag;
    int late;

    if (w->n == FED_TICK_MAX) {
        return 1; /* the rest wait for the next tick */
    }
    t = view_decode(v, &tag);
    if (t == NULL) {
        return store_errf(s, STORE_CORRUPT, "fed_tasks row does not decode");
    }
    late = late_child(t, tag, w->now);
    cityops__v1__fed_task_view__free_unpacked(t, NULL);
    if (late) {
        w->ids[w->n] = strndup(k->mv_data, k->mv_size);
        if (w->ids[w->n] == NULL) {
            return store_errf(s, STORE_NOMEM, "fed: out of memory");
        }
        w->n++;
    }
    return 0;
}

int fed_on_tick(struct store *s,
                MDB_txn *txn,
                uint64_t index,
                const Cityops__V1__Command *cmd)
{
    struct tick_walk w = {cmd->time, NULL, 0};
    int rv;

    w.ids = calloc(FED_TICK_MAX, sizeof(*w.ids));
    if (w.ids == NULL) {
        return store_errf(s, STORE_NOMEM, "fed: out of memory");
    }
    rv = rows_walk(s, txn, STORE_DB_FED_TASKS, tick_row, &w);
    for (size_t i = 0; rv == 0 && i < w.n; i++) {
        rv = supervise_one(s, txn, index, cmd, w.ids[i]);
    }
    for (size_t i = 0; i < w.n; i++) {
        free(w.ids[i]);
    }
    free(w.ids);
    return rv;
}

struct tasks_walk {
    int64_t now;
    Cityops__V1__FedTasksResponse *r;
};

static int task_row(struct store *s,
                    const MDB_val *k,
                    const MDB_val *v,
                    void *arg)
{
    struct tasks_walk *w = arg;
    Cityops__V1__FedTaskView *t;
    char tag;

    (void)k;
    t = view_decode(v, &tag);
    if (t == NULL) {
        return store_errf(s, STORE_CORRUPT, "fed_tasks row does not decode");
    }
    t->overdue = overdue(t, tag, w->now);
    w->r->tasks[w->r->n_tasks++] = t;
    return 0;
}

/* Fills @msg in @txn for read_msg(). */
typedef int (*fed_fill_fn)(struct store *s,
                           MDB_txn *txn,
                           void *arg,
                           ProtobufCMessage *msg);

/* A reply message of @desc filled by @fill from one read transaction. On
 * 0 *out is the caller's (protobuf_c_message_free_unpacked). */
static int read_msg(struct store *s,
                    const ProtobufCMessageDescriptor *desc,
                    fed_fill_fn fill,
                    void *arg,
                    ProtobufCMessage **out)
{
    ProtobufCMessage *m;
    MDB_txn *txn;
    int rv;

    *out = NULL;
    m = malloc(desc->sizeof_message);
    if (m == NULL) {
        return STORE_NOMEM;
    }
    protobuf_c_message_init(desc, m);
    rv = store_read_begin(s, &txn);
    if (rv != 0) {
        free(m);
        return rv;
    }
    rv = fill(s, txn, arg, m);
    store_read_end(s, txn);
    if (rv != 0) {
        protobuf_c_message_free_unpacked(m, NULL);
        return rv;
    }
    *out = m;
    return 0;
}

/* Fill @r with every stored task, in task id order. */
static int tasks_read(struct store *s,
                      MDB_txn *txn,
                      void *arg,
                      ProtobufCMessage *msg)
{
    Cityops__V1__FedTasksResponse *r = (Cityops__V1__FedTasksResponse *)msg;
    struct tasks_walk w = {*(const int64_t *)arg, r};

    r->tasks = rows_array(txn, s->dbi[STORE_DB_FED_TASKS], sizeof(*r->tasks));
    if (r->tasks == NULL) {
        return STORE_NOMEM;
    }
    return rows_walk(s, txn, STORE_DB_FED_TASKS, task_row, &w);
}

int store_fed_tasks(struct store *s,
                    int64_t now_us,
                    Cityops__V1__FedTasksResponse **out)
{
    return read_msg(s, &cityops__v1__fed_tasks_response__descriptor,
                    tasks_read, &now_us, (ProtobufCMessage **)out);
}

/* Fill @l with @origin's witnessed heads, by tree size. */
static int witness_read(struct store *s,
                        MDB_txn *txn,
                        void *arg,
                        ProtobufCMessage *msg)
{
    const char *origin = arg;
    Cityops__V1__CheckpointList *l = (Cityops__V1__CheckpointList *)msg;
    uint8_t key[STORE_FED_TIER_MAX + 9];
    size_t olen = strlen(origin);
    size_t cap = 0;
    MDB_val k = {witness_key(key, origin, 0), key};
    MDB_val v;
    MDB_cursor *cur;
    int rv = 0;
    int rc;

    rc = mdb_cursor_open(txn, s->dbi[STORE_DB_FED_WITNESS], &cur);
    if (rc != 0) {
        return store_mdb_err(s, rc, "fed_witness cursor");
    }
    for (rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
         rc == 0 && (olen == 0 || (k.mv_size == olen + 9 &&
                                   memcmp(k.mv_data, origin, olen + 1) == 0));
         rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        if (l->n_checkpoints == cap) {
            size_t ncap = cap > 0 ? 2 * cap : 16;
            void *p = realloc(l->checkpoints, ncap * sizeof(*l->checkpoints));

            if (p == NULL) {
                rv = STORE_NOMEM;
                break;
            }
            l->checkpoints = p;
            cap = ncap;
        }
        l->checkpoints[l->n_checkpoints] =
            cityops__v1__checkpoint__unpack(NULL, v.mv_size, v.mv_data);
        if (l->checkpoints[l->n_checkpoints] == NULL) {
            rv = store_errf(s, STORE_CORRUPT,
                            "fed_witness row does not decode");
            break;
        }
        l->n_checkpoints++;
    }
    mdb_cursor_close(cur);
    if (rv == 0 && rc != 0 && rc != MDB_NOTFOUND) {
        rv = store_mdb_err(s, rc, "read fed_witness/%s", origin);
    }
    return rv;
}

int store_fed_witness_list(struct store *s,
                           const char *origin,
                           Cityops__V1__CheckpointList **out)
{
    *out = NULL;
    origin = str0(origin);
    if (origin[0] != '\0' && !tier_ok(origin)) {
        return STORE_INVALID;
    }
    return read_msg(s, &cityops__v1__checkpoint_list__descriptor,
                    witness_read, (void *)origin, (ProtobufCMessage **)out);
}

struct received_walk {
    const char *topic;  /* "" = any */
    const char *origin; /* "" = any */
    Cityops__V1__FedReceivedResponse *r;
};

static int received_row(struct store *s,
                        const MDB_val *k,
                        const MDB_val *v,
                        void *arg)
{
    struct received_walk *w = arg;
    Cityops__V1__Publication *p;

    (void)k;
    p = cityops__v1__publication__unpack(NULL, v->mv_size, v->mv_data);
    if (p == NULL) {
        return store_errf(s, STORE_CORRUPT, "fed_received row does not decode");
    }
    if ((w->topic[0] != '\0' && strcmp(p->topic, w->topic) != 0) ||
        (w->origin[0] != '\0' && strcmp(p->origin_tier, w->origin) != 0)) {
        cityops__v1__publication__free_unpacked(p, NULL);
        return 0;
    }
    w->r->publications[w->r->n_publications++] = p;
    return 0;
}

/* A subscription row (topic, '\0', tier) as "<tier> <topic>". */
static int subs_row(struct store *s,
                    const MDB_val *k,
                    const MDB_val *v,
                    void *arg)
{
    struct received_walk *w = arg;
    const char *t = k->mv_data;
    size_t tl = strnlen(t, k->mv_size);
    char *line;

    (void)v;
    if (tl + 1 >= k->mv_size ||
        (w->topic[0] != '\0' &&
         (strlen(w->topic) != tl || memcmp(t, w->topic, tl) != 0))) {
        return 0;
    }
    line = malloc(k->mv_size + 1);
    if (line == NULL) {
        return store_errf(s, STORE_NOMEM, "fed: out of memory");
    }
    snprintf(line, k->mv_size + 1, "%.*s %.*s", (int)(k->mv_size - tl - 1),
             t + tl + 1, (int)tl, t);
    w->r->subscriptions[w->r->n_subscriptions++] = line;
    return 0;
}

static int received_read(struct store *s,
                         MDB_txn *txn,
                         void *arg,
                         ProtobufCMessage *msg)
{
    struct received_walk *w = arg;
    Cityops__V1__FedReceivedResponse *r =
        (Cityops__V1__FedReceivedResponse *)msg;
    int rv;

    w->r = r;
    r->publications = rows_array(txn, s->dbi[STORE_DB_FED_RECEIVED],
                                 sizeof(*r->publications));
    r->subscriptions = rows_array(txn, s->dbi[STORE_DB_FED_SUBS],
                                  sizeof(*r->subscriptions));
    if (r->publications == NULL || r->subscriptions == NULL) {
        return STORE_NOMEM;
    }
    rv = rows_walk(s, txn, STORE_DB_FED_RECEIVED, received_row, w);
    if (rv == 0) {
        rv = rows_walk(s, txn, STORE_DB_FED_SUBS, subs_row, w);
    }
    return rv;
}

int store_fed_received(struct store *s,
                       const char *topic,
                       const char *origin,
                       Cityops__V1__FedReceivedResponse **out)
{
    struct received_walk w = {str0(topic), str0(origin), NULL};

    *out = NULL;
    topic = w.topic;
    origin = w.origin;
    if ((topic[0] != '\0' && !name_ok(topic, FED_TOPIC_MAX)) ||
        (origin[0] != '\0' && !tier_ok(origin))) {
        return STORE_INVALID;
    }
    return read_msg(s, &cityops__v1__fed_received_response__descriptor,
                    received_read, &w, (ProtobufCMessage **)out);
}

static int handovers_row(struct store *s,
                         const MDB_val *k,
                         const MDB_val *v,
                         void *arg)
{
    Cityops__V1__FedIncomingResponse *r = arg;
    Cityops__V1__HandoverMessage *h;

    h = cityops__v1__handover_message__unpack(NULL, v->mv_size, v->mv_data);
    if (h == NULL) {
        return store_errf(s, STORE_CORRUPT,
                          "fed_handovers row does not decode");
    }
    if (*(const char *)k->mv_data == 'I') {
        r->incoming[r->n_incoming++] = h;
    } else {
        r->outgoing[r->n_outgoing++] = h;
    }
    return 0;
}

static int handovers_read(struct store *s,
                          MDB_txn *txn,
                          void *arg,
                          ProtobufCMessage *msg)
{
    Cityops__V1__FedIncomingResponse *r =
        (Cityops__V1__FedIncomingResponse *)msg;

    (void)arg;
    r->incoming = rows_array(txn, s->dbi[STORE_DB_FED_HANDOVERS],
                             sizeof(*r->incoming));
    r->outgoing = rows_array(txn, s->dbi[STORE_DB_FED_HANDOVERS],
                             sizeof(*r->outgoing));
    if (r->incoming == NULL || r->outgoing == NULL) {
        return STORE_NOMEM;
    }
    return rows_walk(s, txn, STORE_DB_FED_HANDOVERS, handovers_row, r);
}

int store_fed_handovers(struct store *s,
                        Cityops__V1__FedIncomingResponse **out)
{
    return read_msg(s, &cityops__v1__fed_incoming_response__descriptor,
                    handovers_read, NULL, (ProtobufCMessage **)out);
}
