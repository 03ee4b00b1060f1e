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

static int role_in(const Cityops__V1__Command *cmd,
                   Cityops__V1__Role a,
                   Cityops__V1__Role b)
{
    return cmd->role == a || cmd->role == b;
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
    if (v.mv_size > 0) {
        *tag = *(const char *)v.mv_data;
        *out = cityops__v1__fed_task_view__unpack(
            NULL, v.mv_size - 1, (const uint8_t *)v.mv_data + 1);
    }
    if (*out == NULL || (*tag != TASK_ASSIGNED && *tag != TASK_RECEIVED) ||
        (*out)->task == NULL) {
        if (*out != NULL) {
            cityops__v1__fed_task_view__free_unpacked(*out, NULL);
            *out = NULL;
        }
        return store_errf(s, STORE_CORRUPT, "fed_tasks/%s does not decode",
                          id);
    }
    return 0;
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
    for (size_t i = 0; i < t->n_child_tiers; i++) {
        if (strcmp(str0(t->child_tiers[i]), tier) == 0) {
            return 1;
        }
    }
    return 0;
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
    clean.tier_id = l->tier_id;
    clean.kind = l->kind;
    clean.n_endpoints = l->n_endpoints;
    clean.endpoints = l->endpoints;
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
    if (t->n_child_tiers == 0 || t->n_child_tiers > FED_CHILDREN_MAX) {
        return store_result_fail(res, RC_INVALID,
                                 "a task needs 1 to 32 child tiers");
    }
    for (size_t i = 0; i < t->n_child_tiers; i++) {
        const char *c = t->child_tiers[i];

        if (!tier_ok(c) || strcmp(c, t->origin_tier) == 0) {
            return store_result_fail(res, RC_INVALID,
                                     "child tiers must be tier ids other "
                                     "than the origin");
        }
        for (size_t j = 0; j < i; j++) {
            if (strcmp(c, t->child_tiers[j]) == 0) {
                return store_result_fail(res, RC_INVALID,
                                         "child tiers must be distinct");
            }
        }
    }
    return 0;
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

    if (!role_in(cmd, CITYOPS__V1__ROLE__ROLE_SHIFT_LEADER,
                 CITYOPS__V1__ROLE__ROLE_ADMIN)) {
        return store_result_fail(res, RC_DENIED,
                                 "key tasks need role SHIFT_LEADER or ADMIN");
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
    char tag = 0;
    int rv;

    if (!role_in(cmd, CITYOPS__V1__ROLE__ROLE_SHIFT_LEADER,
                 CITYOPS__V1__ROLE__ROLE_ADMIN)) {
        return store_result_fail(res, RC_DENIED,
                                 "feedback needs role SHIFT_LEADER or ADMIN");
    }
    rv = feedback_check(f, res);
    if (rv != 0 || res->code != RC_OK) {
        return rv;
    }
    rv = task_load(s, txn, f->task_id, &tag, &v);
    if (rv == STORE_NOTFOUND) {
        return store_result_fail(res, RC_NOT_FOUND, "no such task");
    }
    if (rv != 0) {
        return rv;
    }
    origin = str0(v->task->origin_tier);
    if (tag != TASK_RECEIVED || !tier_ok(origin)) {
        rv = store_result_fail(res, RC_PRECONDITION,
                               "feedback is sent on tasks received here");
        goto out_free_view;
    }
    if (!names_tier(v->task, f->tier_id)) {
        rv = store_result_fail(res, RC_PRECONDITION,
                               "the task was not assigned to this tier");
        goto out_free_view;
    }
    fb.task_id = f->task_id;
    fb.tier_id = f->tier_id;
    fb.status = f->status;
    fb.note = (char *)str0(f->note);
    fb.at = cmd->time;
    rv = task_save_feedback(s, txn, tag, v, &fb);
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

/* "key_task": store the task as received, unless it is not @origin's or
 * is already stored. */
static int inbound_task(struct store *s,
                        MDB_txn *txn,
                        const char *origin,
                        const Cityops__V1__OutboxMessage *m,
                        struct notes *notes)
{
    Cityops__V1__FedTaskView view = CITYOPS__V1__FED_TASK_VIEW__INIT;
    Cityops__V1__KeyTask task;
    Cityops__V1__KeyTask *t;
    size_t olen = strlen(origin);
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
        strlen(id) > STORE_FED_TASK_ID_MAX || strlen(id) <= olen + 1 ||
        strncmp(id, origin, olen) != 0 || id[olen] != '/') {
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

/* "task_feedback": @origin's latest feedback on a task assigned here. */
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
    if (tag != TASK_ASSIGNED || !names_tier(v->task, origin)) {
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

static int inbound_effect(struct store *s,
                          MDB_txn *txn,
                          const char *origin,
                          const Cityops__V1__OutboxMessage *m,
                          struct notes *notes)
{
    const char *kind = str0(m->kind);
    char why[96];

    if (strcmp(kind, KIND_KEY_TASK) == 0) {
        return inbound_task(s, txn, origin, m, notes);
    }
    if (strcmp(kind, KIND_FEEDBACK) == 0) {
        return inbound_feedback(s, txn, origin, m, notes);
    }
    if (strcmp(kind, KIND_CHECKPOINT) == 0) {
        return inbound_checkpoint(s, txn, origin, m, notes);
    }
    snprintf(why, sizeof(why), "unknown kind \"%.40s\"", kind);
    note_add(notes, m->seq, why);
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
                   const Cityops__V1__Command *cmd,
                   Cityops__V1__CommandResult *res)
{
    const Cityops__V1__FedInbound *in = cmd->fed_inbound;
    const char *origin;
    struct notes notes = {.len = 0};
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
        rv = inbound_effect(s, txn, origin, m, &notes);
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
        return inbound(s, txn, cmd, res);
    case CITYOPS__V1__COMMAND__OP_FED_OUTBOX_ACK:
        return outbox_ack(s, txn, cmd, res);
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

static int overdue(const Cityops__V1__FedTaskView *v, char tag, int64_t now)
{
    if (v->task->deadline >= now) {
        return 0;
    }
    if (tag == TASK_RECEIVED) {
        return !settled(v, NULL);
    }
    for (size_t i = 0; i < v->task->n_child_tiers; i++) {
        if (!settled(v, str0(v->task->child_tiers[i]))) {
            return 1;
        }
    }
    return 0;
}

/* Fill @r with every stored task, in task id order. */
static int tasks_read(struct store *s,
                      MDB_txn *txn,
                      int64_t now_us,
                      Cityops__V1__FedTasksResponse *r)
{
    MDB_cursor *cur;
    MDB_stat st;
    MDB_val k, v;
    int rc;

    rc = mdb_stat(txn, s->dbi[STORE_DB_FED_TASKS], &st);
    if (rc != 0) {
        return store_mdb_err(s, rc, "stat fed_tasks");
    }
    r->tasks = calloc(st.ms_entries > 0 ? st.ms_entries : 1,
                      sizeof(*r->tasks));
    if (r->tasks == NULL) {
        return STORE_NOMEM;
    }
    rc = mdb_cursor_open(txn, s->dbi[STORE_DB_FED_TASKS], &cur);
    if (rc != 0) {
        return store_mdb_err(s, rc, "fed_tasks cursor");
    }
    for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST);
         rc == 0 && r->n_tasks < st.ms_entries;
         rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        Cityops__V1__FedTaskView *t = NULL;
        char tag = v.mv_size > 0 ? *(const char *)v.mv_data : 0;

        if (v.mv_size > 0) {
            t = cityops__v1__fed_task_view__unpack(
                NULL, v.mv_size - 1, (const uint8_t *)v.mv_data + 1);
        }
        if (t == NULL || t->task == NULL) {
            if (t != NULL) {
                cityops__v1__fed_task_view__free_unpacked(t, NULL);
            }
            mdb_cursor_close(cur);
            return store_errf(s, STORE_CORRUPT,
                              "fed_tasks row does not decode");
        }
        t->overdue = overdue(t, tag, now_us);
        r->tasks[r->n_tasks++] = t;
    }
    mdb_cursor_close(cur);
    if (rc != 0 && rc != MDB_NOTFOUND) {
        return store_mdb_err(s, rc, "read fed_tasks");
    }
    return 0;
}

int store_fed_tasks(struct store *s,
                    int64_t now_us,
                    Cityops__V1__FedTasksResponse **out)
{
    Cityops__V1__FedTasksResponse *r;
    MDB_txn *txn;
    int rv;

    *out = NULL;
    r = malloc(sizeof(*r));
    if (r == NULL) {
        return STORE_NOMEM;
    }
    cityops__v1__fed_tasks_response__init(r);
    rv = store_read_begin(s, &txn);
    if (rv != 0) {
        free(r);
        return rv;
    }
    rv = tasks_read(s, txn, now_us, r);
    store_read_end(s, txn);
    if (rv != 0) {
        cityops__v1__fed_tasks_response__free_unpacked(r, NULL);
        return rv;
    }
    *out = r;
    return 0;
}

/* Fill @l with @origin's witnessed heads, by tree size. */
static int witness_read(struct store *s,
                        MDB_txn *txn,
                        const char *origin,
                        Cityops__V1__CheckpointList *l)
{
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
         rc == 0 && k.mv_size == olen + 9 &&
         memcmp(k.mv_data, origin, olen + 1) == 0;
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
    Cityops__V1__CheckpointList *l;
    MDB_txn *txn;
    int rv;

    *out = NULL;
    if (!tier_ok(origin)) {
        return STORE_INVALID;
    }
    l = malloc(sizeof(*l));
    if (l == NULL) {
        return STORE_NOMEM;
    }
    cityops__v1__checkpoint_list__init(l);
    rv = store_read_begin(s, &txn);
    if (rv != 0) {
        free(l);
        return rv;
    }
    rv = witness_read(s, txn, origin, l);
    store_read_end(s, txn);
    if (rv != 0) {
        cityops__v1__checkpoint_list__free_unpacked(l, NULL);
        return rv;
    }
    *out = l;
    return 0;
}
