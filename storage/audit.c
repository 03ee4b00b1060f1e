/* The audit trail: one AuditRecord per command that store_apply_batch()
 * processes, chained by hash, an RFC 6962 Merkle tree over the records and
 * the checkpoints (signed tree heads) taken of it.
 *
 * DESIGN
 *
 * - Chain. Record seq n carries prev_hash = hash of record n-1 (32 zero
 *   bytes for n = 0) and hash = SHA-256(prev_hash || the record packed with
 *   `hash` empty). protobuf-c packs fields in number order and `hash` is
 *   field 14, the last, so the stored bytes are the hashed bytes followed by
 *   the tag 0x72, the length 0x20 and the hash: audit_append() packs once
 *   and appends that tail, and the readers take a leaf from the last 32
 *   bytes of a stored record without unpacking it.
 * - Tree. Leaves are the records' hashes: leaf = SHA-256(0x00 || hash),
 *   node = SHA-256(0x01 || left || right) (RFC 6962 section 2.1). The
 *   audit_tree value keeps the size, the chain head and the frontier (see
 *   struct audit_tree), so apply appends and takes the current root in
 *   O(log n). Historical roots and proofs are computed from the leaves read
 *   back from the audit database: O(n) hashing per call, fine for the
 *   occasional verifier; a cache of perfect-subtree hashes would make them
 *   O(log n) if that ever matters.
 * - Determinism. A record holds only the command, its result and hashes of
 *   stored bytes read in the apply transaction: no clock, no randomness.
 *   Checkpoint signatures are made by the leader outside apply and only
 *   verified here (Ed25519 verification is a pure function).
 * - A checkpoint of tree size n covers records [0, n): the trail as it was
 *   before the `checkpoint` command's own record, which is then appended
 *   with after_sha256 = SHA-256 of the stored Checkpoint, so the next
 *   checkpoint commits to this one. The trail is never rewritten: a
 *   checkpoint is written once, and its signature once.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store_internal.h"

#define AUDIT_TREE_KEY "tree"
#define AUDIT_TREE_FIXED (8 + STORE_HASH_SIZE)
#define AUDIT_LIST_DEFAULT 100
#define AUDIT_LIST_MAX 1000
#define AUDIT_PROOF_MAX 130 /* > 2 * 64: longer than any RFC 6962 proof */
#define ED25519_KEY_SIZE 32
#define ED25519_SIG_SIZE 64

#define RC_OK CITYOPS__V1__RESULT_CODE__RESULT_OK
#define RC_INVALID CITYOPS__V1__RESULT_CODE__RESULT_INVALID_ARGUMENT
#define RC_NOT_FOUND CITYOPS__V1__RESULT_CODE__RESULT_NOT_FOUND
#define RC_DENIED CITYOPS__V1__RESULT_CODE__RESULT_PERMISSION_DENIED
#define RC_PRECONDITION CITYOPS__V1__RESULT_CODE__RESULT_FAILED_PRECONDITION

static const char checkpoint_magic[21] = "cityops-checkpoint-v1";

/* --- hashing --- */

static pthread_once_t sha256_once = PTHREAD_ONCE_INIT;
static EVP_MD *sha256_fetched;

static void sha256_fetch(void)
{
    sha256_fetched = EVP_MD_fetch(NULL, "SHA256", NULL);
}

/* Fetched once: EVP_sha256() would look the implementation up again on
 * every init, a measurable cost at one hash per tree node. */
static const EVP_MD *sha256_md(void)
{
    pthread_once(&sha256_once, sha256_fetch);
    return sha256_fetched != NULL ? sha256_fetched : EVP_sha256();
}

/* SHA-256 over the concatenation of up to three parts (@c may be NULL).
 * @out may alias an input. */
static int hash3(EVP_MD_CTX *md,
                 const void *a,
                 size_t na,
                 const void *b,
                 size_t nb,
                 const void *c,
                 size_t nc,
                 uint8_t out[STORE_HASH_SIZE])
{
    if (EVP_DigestInit_ex2(md, sha256_md(), NULL) != 1 ||
        EVP_DigestUpdate(md, a, na) != 1 || EVP_DigestUpdate(md, b, nb) != 1 ||
        (nc > 0 && EVP_DigestUpdate(md, c, nc) != 1) ||
        EVP_DigestFinal_ex(md, out, NULL) != 1) {
        return STORE_NOMEM;
    }
    return 0;
}

static int hash_leaf(EVP_MD_CTX *md,
                     const uint8_t record_hash[STORE_HASH_SIZE],
                     uint8_t out[STORE_HASH_SIZE])
{
    static const uint8_t prefix = 0x00;

    return hash3(md, &prefix, 1, record_hash, STORE_HASH_SIZE, NULL, 0, out);
}

static int hash_node(EVP_MD_CTX *md,
                     const uint8_t left[STORE_HASH_SIZE],
                     const uint8_t right[STORE_HASH_SIZE],
                     uint8_t out[STORE_HASH_SIZE])
{
    static const uint8_t prefix = 0x01;

    return hash3(md, &prefix, 1, left, STORE_HASH_SIZE, right, STORE_HASH_SIZE,
                 out);
}

/* MTH({}) = SHA-256 of the empty string. */
static int hash_empty(EVP_MD_CTX *md, uint8_t out[STORE_HASH_SIZE])
{
    return hash3(md, "", 0, "", 0, NULL, 0, out);
}

static const char *str0(const char *s)
{
    return s != NULL ? s : "";
}

/* --- the tree state (size, head, frontier) --- */

static unsigned popcount64(uint64_t v)
{
    unsigned n = 0;

    for (; v != 0; v &= v - 1) {
        n++;
    }
    return n;
}

/* Read the audit_tree value into @t (md untouched); missing: empty trail. */
static int tree_get(struct store *s, MDB_txn *txn, struct audit_tree *t)
{
    MDB_val k = {sizeof(AUDIT_TREE_KEY) - 1, (void *)AUDIT_TREE_KEY};
    MDB_val v;
    const uint8_t *p;
    int rc;

    t->size = 0;
    t->n_frontier = 0;
    t->dirty = 0;
    memset(t->head, 0, sizeof(t->head));
    rc = mdb_get(txn, s->dbi[STORE_DB_AUDIT_TREE], &k, &v);
    if (rc == MDB_NOTFOUND) {
        return 0;
    }
    if (rc != 0) {
        return store_mdb_err(s, rc, "get audit_tree");
    }
    p = v.mv_data;
    if (v.mv_size < AUDIT_TREE_FIXED) {
        return store_errf(s, STORE_CORRUPT, "audit_tree: %zu bytes", v.mv_size);
    }
    t->size = store_be64_get(p);
    t->n_frontier = popcount64(t->size);
    if (v.mv_size != AUDIT_TREE_FIXED + t->n_frontier * STORE_HASH_SIZE) {
        return store_errf(s, STORE_CORRUPT,
                          "audit_tree: %zu bytes for size %llu", v.mv_size,
                          (unsigned long long)t->size);
    }
    memcpy(t->head, p + 8, STORE_HASH_SIZE);
    memcpy(t->frontier, p + AUDIT_TREE_FIXED, t->n_frontier * STORE_HASH_SIZE);
    return 0;
}

int audit_tree_load(struct store *s, MDB_txn *txn, struct audit_tree *t)
{
    int rv;

    t->md = EVP_MD_CTX_new();
    if (t->md == NULL) {
        return store_errf(s, STORE_NOMEM, "audit: out of memory");
    }
    rv = tree_get(s, txn, t);
    if (rv != 0) {
        audit_tree_release(t);
    }
    return rv;
}

void audit_tree_release(struct audit_tree *t)
{
    EVP_MD_CTX_free(t->md);
    t->md = NULL;
}

int audit_tree_save(struct store *s, MDB_txn *txn, struct audit_tree *t)
{
    uint8_t buf[AUDIT_TREE_FIXED + AUDIT_FRONTIER_MAX * STORE_HASH_SIZE];
    MDB_val k = {sizeof(AUDIT_TREE_KEY) - 1, (void *)AUDIT_TREE_KEY};
    MDB_val v = {AUDIT_TREE_FIXED + t->n_frontier * STORE_HASH_SIZE, buf};
    int rc;

    if (!t->dirty) {
        return 0;
    }
    store_be64_put(buf, t->size);
    memcpy(buf + 8, t->head, STORE_HASH_SIZE);
    memcpy(buf + AUDIT_TREE_FIXED, t->frontier,
           t->n_frontier * STORE_HASH_SIZE);
    rc = mdb_put(txn, s->dbi[STORE_DB_AUDIT_TREE], &k, &v, 0);
    if (rc != 0) {
        return store_mdb_err(s, rc, "put audit_tree");
    }
    t->dirty = 0;
    return 0;
}

/* Add the leaf of @record_hash: merge the trailing subtrees of equal size,
 * one per trailing 1 bit of the old size. */
static int tree_push(struct audit_tree *t,
                     const uint8_t record_hash[STORE_HASH_SIZE])
{
    uint8_t node[STORE_HASH_SIZE];
    uint64_t k = t->size;
    int rv;

    rv = hash_leaf(t->md, record_hash, node);
    while (rv == 0 && (k & 1) != 0) {
        t->n_frontier--;
        rv = hash_node(t->md, t->frontier[t->n_frontier], node, node);
        k >>= 1;
    }
    if (rv != 0) {
        return rv;
    }
    memcpy(t->frontier[t->n_frontier++], node, STORE_HASH_SIZE);
    t->size++;
    t->dirty = 1;
    return 0;
}

int audit_tree_root(struct audit_tree *t, uint8_t root[STORE_HASH_SIZE])
{
    int rv = 0;

    if (t->n_frontier == 0) {
        return hash_empty(t->md, root);
    }
    memcpy(root, t->frontier[t->n_frontier - 1], STORE_HASH_SIZE);
    for (unsigned i = t->n_frontier - 1; rv == 0 && i-- > 0;) {
        rv = hash_node(t->md, t->frontier[i], root, root);
    }
    return rv;
}

/* --- records --- */

/* SHA-256 of the value stored under @key in @db; *present = 0 if none. */
static int value_hash(struct store *s,
                      MDB_txn *txn,
                      EVP_MD_CTX *md,
                      const struct audit_target *tg,
                      uint8_t out[STORE_HASH_SIZE],
                      int *present)
{
    uint8_t kb[8];
    MDB_val k = {sizeof(kb), kb};
    MDB_val v;
    int rc;

    *present = 0;
    store_be64_put(kb, tg->key);
    if (tg->skey_len > 0) {
        k.mv_size = tg->skey_len;
        k.mv_data = (void *)tg->skey;
    }
    rc = mdb_get(txn, s->dbi[tg->db], &k, &v);
    if (rc == MDB_NOTFOUND) {
        return 0;
    }
    if (rc != 0) {
        return store_mdb_err(s, rc, "audit: get %s", tg->name);
    }
    *present = 1;
    return hash3(md, v.mv_data, v.mv_size, "", 0, NULL, 0, out);
}

/* The case id of a case command, read from its request's `case_id`
 * field, so that every case operation is covered without a list of them. */
static uint64_t case_id_of(const Cityops__V1__Command *cmd)
{
    const ProtobufCFieldDescriptor *fd;
    const ProtobufCMessage *req;

    fd = protobuf_c_message_descriptor_get_field(
        &cityops__v1__command__descriptor, (unsigned)cmd->op_case);
    if (fd == NULL || fd->type != PROTOBUF_C_TYPE_MESSAGE) {
        return 0;
    }
    req = *(const ProtobufCMessage *const *)((const char *)cmd + fd->offset);
    if (req == NULL) {
        return 0;
    }
    fd = protobuf_c_message_descriptor_get_field_by_name(req->descriptor,
                                                         "case_id");
    if (fd == NULL || fd->type != PROTOBUF_C_TYPE_UINT64) {
        return 0;
    }
    return *(const uint64_t *)((const char *)req + fd->offset);
}

/* The proto name of the command's operation ("report", "return", ...). */
static const char *op_name(const Cityops__V1__Command *cmd)
{
    const ProtobufCFieldDescriptor *fd;

    if (cmd->op_case == CITYOPS__V1__COMMAND__OP__NOT_SET) {
        return "none";
    }
    fd = protobuf_c_message_descriptor_get_field(
        &cityops__v1__command__descriptor, (unsigned)cmd->op_case);
    return fd != NULL ? fd->name : "unknown";
}

static void
target_set(struct audit_target *tg, int db, uint64_t key, const char *kind)
{
    tg->db = db;
    tg->key = key;
    snprintf(tg->name, sizeof(tg->name), "%s/%llu", kind,
             (unsigned long long)key);
}

/* A federation target: "fed/<kind>/<id>", the value under key @id of @db
 * (keyed by the id's bytes). An id too long to be a key is named but not
 * hashed: such a command is refused anyway. */
static void fed_target_set(struct audit_target *tg,
                           int db,
                           const char *kind,
                           const char *id)
{
    size_t n = strlen(id);

    snprintf(tg->name, sizeof(tg->name), "fed/%s/%s", kind, id);
    if (n == 0 || n > sizeof(tg->skey)) {
        return;
    }
    tg->db = db;
    memcpy(tg->skey, id, n);
    tg->skey_len = n;
}

/* The target of a federation command (see store.h). */
static void fed_target(const Cityops__V1__Command *cmd,
                       struct audit_target *tg)
{
    const Cityops__V1__FedInbound *in = cmd->fed_inbound;
    const Cityops__V1__FedFeedback *fb = cmd->fed_feedback;
    const Cityops__V1__FedLinkSet *ls = cmd->fed_link_set;

    switch (cmd->op_case) {
    case CITYOPS__V1__COMMAND__OP_FED_ASSIGN_TASK:
        snprintf(tg->name, sizeof(tg->name), "fed/task/new");
        break;
    case CITYOPS__V1__COMMAND__OP_FED_FEEDBACK:
        fed_target_set(tg, STORE_DB_FED_TASKS, "task",
                       fb->feedback != NULL ? str0(fb->feedback->task_id)
                                            : "");
        break;
    case CITYOPS__V1__COMMAND__OP_FED_INBOUND:
        fed_target_set(tg, STORE_DB_FED_INBOX, "inbox",
                       in->n_envelopes > 0 ? str0(in->envelopes[0]->origin)
                                           : "");
        break;
    case CITYOPS__V1__COMMAND__OP_FED_OUTBOX_ACK:
        fed_target_set(tg, STORE_DB_FED_ACKED, "outbox",
                       str0(cmd->fed_outbox_ack->link));
        break;
    case CITYOPS__V1__COMMAND__OP_FED_FORWARD_TASK:
        fed_target_set(tg, STORE_DB_FED_TASKS, "task",
                       str0(cmd->fed_forward_task->task_id));
        break;
    case CITYOPS__V1__COMMAND__OP_FED_TASK_TO_CASE:
        fed_target_set(tg, STORE_DB_FED_TASKS, "task",
                       str0(cmd->fed_task_to_case->task_id));
        break;
    case CITYOPS__V1__COMMAND__OP_FED_TASK_CLOSE:
        fed_target_set(tg, STORE_DB_FED_TASKS, "task",
                       str0(cmd->fed_task_close->task_id));
        break;
    case CITYOPS__V1__COMMAND__OP_FED_HANDOVER:
        target_set(tg, STORE_DB_CASES, cmd->fed_handover->case_id, "case");
        break;
    case CITYOPS__V1__COMMAND__OP_FED_ESCALATE:
        target_set(tg, STORE_DB_CASES, cmd->fed_escalate->case_id, "case");
        break;
    case CITYOPS__V1__COMMAND__OP_FED_HANDOVER_ANSWER:
        snprintf(tg->name, sizeof(tg->name), "fed/handover/%.90s",
                 str0(cmd->fed_handover_answer->id));
        break;
    case CITYOPS__V1__COMMAND__OP_FED_SUBSCRIBE:
        /* only an outbox row is written: named, nothing to hash */
        snprintf(tg->name, sizeof(tg->name), "fed/subscribe/%.64s",
                 str0(cmd->fed_subscribe->publisher_tier));
        break;
    case CITYOPS__V1__COMMAND__OP_FED_PUBLISH:
        snprintf(tg->name, sizeof(tg->name), "fed/publish/%.64s",
                 str0(cmd->fed_publish->topic));
        break;
    default:
        fed_target_set(tg, STORE_DB_FED_LINKS, "link",
                       ls->link != NULL ? str0(ls->link->tier_id) : "");
        break;
    }
}

int audit_target_begin(struct store *s,
                       MDB_txn *txn,
                       uint64_t index,
                       const Cityops__V1__Command *cmd,
                       struct audit_tree *t,
                       struct audit_target *tg)
{
    memset(tg, 0, sizeof(*tg));
    tg->db = -1;
    switch (cmd->op_case) {
    case CITYOPS__V1__COMMAND__OP__NOT_SET:
        return 0;
    case CITYOPS__V1__COMMAND__OP_REPORT:
        /* The id is known from the result; a new case has no before. */
        snprintf(tg->name, sizeof(tg->name), "case/new");
        return 0;
    case CITYOPS__V1__COMMAND__OP_MEMBER_SET:
        target_set(tg, STORE_DB_MEMBERS, cmd->member_set->id, "member");
        break;
    case CITYOPS__V1__COMMAND__OP_MEMBER_FORGET:
        target_set(tg, STORE_DB_MEMBERS, cmd->member_forget->id, "member");
        break;
    case CITYOPS__V1__COMMAND__OP_CLUSTER_EVENT:
        tg->db = STORE_DB_CLUSTER_EVENTS;
        tg->key = index;
        snprintf(tg->name, sizeof(tg->name), "cluster/event");
        break;
    case CITYOPS__V1__COMMAND__OP_CHECKPOINT:
        tg->db = STORE_DB_CHECKPOINTS;
        tg->key = t->size;
        snprintf(tg->name, sizeof(tg->name), "audit/checkpoint");
        break;
    case CITYOPS__V1__COMMAND__OP_CHECKPOINT_SIGNATURE:
        tg->db = STORE_DB_CHECKPOINTS;
        tg->key = cmd->checkpoint_signature->tree_size;
        snprintf(tg->name, sizeof(tg->name), "audit/checkpoint");
        break;
    case CITYOPS__V1__COMMAND__OP_CLUSTER_INIT:
        snprintf(tg->name, sizeof(tg->name), "cluster/id");
        return 0;
    case CITYOPS__V1__COMMAND__OP_DRILL_RECORD: {
        int rv = store_index_key(s, txn, index, &tg->key);

        if (rv != 0) {
            return rv;
        }
        tg->db = STORE_DB_DRILLS;
        snprintf(tg->name, sizeof(tg->name), "drill/%llu",
                 (unsigned long long)index);
        break;
    }
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
    case CITYOPS__V1__COMMAND__OP_FED_ESCALATE:
    case CITYOPS__V1__COMMAND__OP_FED_HANDOVER_ANSWER:
    case CITYOPS__V1__COMMAND__OP_FED_TASK_CLOSE:
        fed_target(cmd, tg);
        if (tg->db < 0) {
            return 0;
        }
        break;
    default:
        target_set(tg, STORE_DB_CASES, case_id_of(cmd), "case");
        break;
    }
    return value_hash(s, txn, t->md, tg, tg->before,
                      &tg->has_before);
}

/* Fill the target of a report from its result, and its "before": absent
 * when the command ran, the current value when it was replayed. */
static int report_target(struct store *s,
                         MDB_txn *txn,
                         struct audit_tree *t,
                         struct audit_target *tg,
                         const Cityops__V1__CommandResult *res,
                         int replayed)
{
    if (res->code != RC_OK || res->case_ == NULL) {
        return 0;
    }
    target_set(tg, STORE_DB_CASES, res->case_->case_id, "case");
    if (!replayed) {
        return 0;
    }
    return value_hash(s, txn, t->md, tg, tg->before,
                      &tg->has_before);
}

static int record_put(struct store *s,
                      MDB_txn *txn,
                      struct audit_tree *t,
                      Cityops__V1__AuditRecord *r,
                      uint8_t hash[STORE_HASH_SIZE])
{
    uint8_t key[8];
    MDB_val k = {sizeof(key), key};
    MDB_val v;
    size_t n;
    uint8_t *buf;
    int rv;
    int rc;

    n = cityops__v1__audit_record__get_packed_size(r);
    store_be64_put(key, t->size);
    v.mv_size = n + 2 + STORE_HASH_SIZE;
    v.mv_data = NULL;
    rc = mdb_put(txn, s->dbi[STORE_DB_AUDIT], &k, &v, MDB_APPEND | MDB_RESERVE);
    if (rc != 0) {
        return store_mdb_err(s, rc, "put audit/%llu",
                             (unsigned long long)t->size);
    }
    buf = v.mv_data;
    cityops__v1__audit_record__pack(r, buf);
    rv = hash3(t->md, t->head, STORE_HASH_SIZE, buf, n, NULL, 0, hash);
    if (rv != 0) {
        return store_errf(s, rv, "audit: out of memory");
    }
    /* Field 14 (hash), wire type 2, length 32: what packing r with the
     * hash set would append. */
    buf[n] = (14 << 3) | 2;
    buf[n + 1] = STORE_HASH_SIZE;
    memcpy(buf + n + 2, hash, STORE_HASH_SIZE);
    return 0;
}

int audit_append(struct store *s,
                 MDB_txn *txn,
                 uint64_t index,
                 const Cityops__V1__Command *cmd,
                 struct audit_tree *t,
                 struct audit_target *tg,
                 const Cityops__V1__CommandResult *res,
                 int replayed)
{
    Cityops__V1__AuditRecord r = CITYOPS__V1__AUDIT_RECORD__INIT;
    uint8_t after[STORE_HASH_SIZE];
    uint8_t hash[STORE_HASH_SIZE];
    char op[64];
    int has_after = 0;
    int rv = 0;

    if (cmd->op_case == CITYOPS__V1__COMMAND__OP_REPORT) {
        rv = report_target(s, txn, t, tg, res, replayed);
    }
    if (cmd->op_case == CITYOPS__V1__COMMAND__OP_FED_ASSIGN_TASK &&
        res->code == RC_OK && res->ref != NULL && res->ref[0] != '\0') {
        /* Like a report: the id comes with the result. */
        fed_target_set(tg, STORE_DB_FED_TASKS, "task", res->ref);
        if (replayed && tg->db >= 0) {
            rv = value_hash(s, txn, t->md, tg, tg->before, &tg->has_before);
        }
    }
    if (rv == 0 && tg->db >= 0) {
        rv = value_hash(s, txn, t->md, tg, after, &has_after);
    }
    if (rv != 0) {
        return rv;
    }
    snprintf(op, sizeof(op), "%s%s", op_name(cmd), replayed ? " (retry)" : "");
    r.seq = t->size;
    r.raft_index = index;
    r.time = cmd->time;
    r.actor_id = (char *)str0(cmd->actor_id);
    r.role = cmd->role;
    r.operation = op;
    r.target = tg->name;
    r.before_sha256.len = tg->has_before ? STORE_HASH_SIZE : 0;
    r.before_sha256.data = tg->before;
    r.after_sha256.len = has_after ? STORE_HASH_SIZE : 0;
    r.after_sha256.data = after;
    r.result = (int32_t)res->code;
    r.client_id = (char *)str0(cmd->client_id);
    r.client_seq = cmd->seq;
    r.prev_hash.len = STORE_HASH_SIZE;
    r.prev_hash.data = t->head;
    rv = record_put(s, txn, t, &r, hash);
    if (rv != 0) {
        return rv;
    }
    rv = tree_push(t, hash);
    if (rv != 0) {
        return store_errf(s, rv, "audit: out of memory");
    }
    memcpy(t->head, hash, STORE_HASH_SIZE);
    return 0;
}

/* --- checkpoint commands --- */

int audit_op(const Cityops__V1__Command *cmd)
{
    return cmd->op_case == CITYOPS__V1__COMMAND__OP_CHECKPOINT ||
           cmd->op_case == CITYOPS__V1__COMMAND__OP_CHECKPOINT_SIGNATURE;
}

/* Unpack checkpoints/@tree_size; STORE_NOTFOUND (no message) if absent. */
static int checkpoint_load(struct store *s,
                           MDB_txn *txn,
                           uint64_t tree_size,
                           Cityops__V1__Checkpoint **out)
{
    uint8_t key[8];
    MDB_val k = {sizeof(key), key};
    MDB_val v;
    int rc;

    store_be64_put(key, tree_size);
    rc = mdb_get(txn, s->dbi[STORE_DB_CHECKPOINTS], &k, &v);
    if (rc == MDB_NOTFOUND) {
        return STORE_NOTFOUND;
    }
    if (rc != 0) {
        return store_mdb_err(s, rc, "get checkpoints/%llu",
                             (unsigned long long)tree_size);
    }
    *out = cityops__v1__checkpoint__unpack(NULL, v.mv_size, v.mv_data);
    if (*out == NULL) {
        return store_errf(s, STORE_CORRUPT, "checkpoints/%llu does not decode",
                          (unsigned long long)tree_size);
    }
    return 0;
}

static int
checkpoint_put(struct store *s, MDB_txn *txn, const Cityops__V1__Checkpoint *cp)
{
    uint8_t key[8];
    MDB_val k = {sizeof(key), key};
    MDB_val v;
    int rc;

    store_be64_put(key, cp->tree_size);
    v.mv_size = cityops__v1__checkpoint__get_packed_size(cp);
    v.mv_data = malloc(v.mv_size);
    if (v.mv_data == NULL) {
        return store_errf(s, STORE_NOMEM, "audit: out of memory");
    }
    cityops__v1__checkpoint__pack(cp, v.mv_data);
    rc = mdb_put(txn, s->dbi[STORE_DB_CHECKPOINTS], &k, &v, 0);
    free(v.mv_data);
    if (rc != 0) {
        return store_mdb_err(s, rc, "put checkpoints/%llu",
                             (unsigned long long)cp->tree_size);
    }
    return 0;
}

/* Take the tree head at the current size, once per size. */
static int checkpoint_take(struct store *s,
                           MDB_txn *txn,
                           uint64_t index,
                           const Cityops__V1__Command *cmd,
                           struct audit_tree *t,
                           Cityops__V1__CommandResult *res)
{
    Cityops__V1__Checkpoint cp = CITYOPS__V1__CHECKPOINT__INIT;
    Cityops__V1__Checkpoint *old = NULL;
    uint8_t root[STORE_HASH_SIZE];
    int rv;

    if (t->size == 0) {
        return store_result_fail(res, RC_PRECONDITION, "the audit trail is empty");
    }
    rv = checkpoint_load(s, txn, t->size, &old);
    if (rv == 0) {
        cityops__v1__checkpoint__free_unpacked(old, NULL);
        return 0; /* already taken at this size: nothing changes */
    }
    if (rv != STORE_NOTFOUND) {
        return rv;
    }
    rv = audit_tree_root(t, root);
    if (rv != 0) {
        return store_errf(s, rv, "audit: out of memory");
    }
    cp.tree_size = t->size;
    cp.root_hash.len = STORE_HASH_SIZE;
    cp.root_hash.data = root;
    cp.time = cmd->time;
    cp.raft_index = index;
    return checkpoint_put(s, txn, &cp);
}

/* 1 if @sig is a valid Ed25519 signature of @cp's message by @key, 0 if
 * not; STORE_NOMEM if OpenSSL could not allocate. */
static int signature_verify(const Cityops__V1__Checkpoint *cp,
                            const ProtobufCBinaryData *sig,
                            const ProtobufCBinaryData *key)
{
    uint8_t msg[STORE_CHECKPOINT_MSG_SIZE];
    EVP_PKEY *pkey;
    EVP_MD_CTX *md;
    int ok;

    store_checkpoint_message(cp, msg);
    pkey = EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, NULL, key->data,
                                       key->len);
    if (pkey == NULL) {
        return 0; /* not a usable key */
    }
    md = EVP_MD_CTX_new();
    if (md == NULL) {
        EVP_PKEY_free(pkey);
        return STORE_NOMEM;
    }
    ok = EVP_DigestVerifyInit(md, NULL, NULL, NULL, pkey) == 1 &&
         EVP_DigestVerify(md, sig->data, sig->len, msg, sizeof(msg)) == 1;
    EVP_MD_CTX_free(md);
    EVP_PKEY_free(pkey);
    return ok;
}

static int bytes_equal(const ProtobufCBinaryData *a,
                       const ProtobufCBinaryData *b)
{
    return a->len == b->len &&
           (a->len == 0 || memcmp(a->data, b->data, a->len) == 0);
}

int audit_checkpoint_verify(const Cityops__V1__Checkpoint *cp)
{
    if (cp->signature.len != ED25519_SIG_SIZE ||
        cp->public_key.len != ED25519_KEY_SIZE) {
        return 0;
    }
    return signature_verify(cp, &cp->signature, &cp->public_key);
}

/* Attach the leader's signature to a stored head, after checking it. */
/* Append a row to @link's outbox with the next seq of that link. */
int outbox_put(struct store *s,
               MDB_txn *txn,
               const char *link,
               const char *kind,
               int64_t time,
               uint64_t index,
               const ProtobufCMessage *payload)
{
    Cityops__V1__OutboxMessage row = CITYOPS__V1__OUTBOX_MESSAGE__INIT;
    size_t llen = strlen(link);
    uint8_t key[STORE_OUTBOX_KEY_MAX];
    uint8_t *buf = NULL;
    MDB_val k = {llen + 1 + 8, key};
    MDB_val v;
    MDB_cursor *cur;
    uint64_t seq = 1;
    int rc;

    if (llen + 1 + 8 > sizeof key) {
        return store_errf(s, STORE_INVALID, "outbox link name too long");
    }
    /* The last row of this link: the one just below (link, '\0', 2^64-1). */
    memcpy(key, link, llen);
    key[llen] = '\0';
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
        seq = store_be64_get((const uint8_t *)k.mv_data + llen + 1) + 1;
    }
    mdb_cursor_close(cur);
    row.link = (char *)link;
    row.seq = seq;
    row.kind = (char *)kind;
    row.created_at = time;
    row.raft_index = index;
    row.payload.len = protobuf_c_message_get_packed_size(payload);
    row.payload.data = malloc(row.payload.len > 0 ? row.payload.len : 1);
    if (row.payload.data == NULL) {
        return store_errf(s, STORE_NOMEM, "outbox: out of memory");
    }
    protobuf_c_message_pack(payload, row.payload.data);
    v.mv_size = cityops__v1__outbox_message__get_packed_size(&row);
    buf = malloc(v.mv_size > 0 ? v.mv_size : 1);
    if (buf == NULL) {
        free(row.payload.data);
        return store_errf(s, STORE_NOMEM, "outbox: out of memory");
    }
    cityops__v1__outbox_message__pack(&row, buf);
    v.mv_data = buf;
    memcpy(key, link, llen);
    key[llen] = '\0';
    store_be64_put(key + llen + 1, seq);
    k.mv_size = llen + 1 + 8;
    k.mv_data = key;
    rc = mdb_put(txn, s->dbi[STORE_DB_OUTBOX], &k, &v, 0);
    free(buf);
    free(row.payload.data);
    if (rc != 0) {
        return store_mdb_err(s, rc, "put outbox/%s/%llu", link,
                             (unsigned long long)seq);
    }
    return 0;
}

int store_outbox_list(struct store *s,
                      const char *link,
                      uint64_t after,
                      size_t max,
                      Cityops__V1__OutboxMessage ***out,
                      size_t *n)
{
    size_t llen = strlen(link);
    uint8_t key[STORE_OUTBOX_KEY_MAX];
    MDB_val k = {llen + 1 + 8, key};
    MDB_val v;
    MDB_cursor *cur;
    MDB_txn *txn;
    Cityops__V1__OutboxMessage **rows;
    size_t got = 0;
    int rv;
    int rc;

    *out = NULL;
    *n = 0;
    if (llen + 1 + 8 > sizeof key) {
        return STORE_INVALID;
    }
    rows = calloc(max > 0 ? max : 1, sizeof *rows);
    if (rows == NULL) {
        return STORE_NOMEM;
    }
    rv = store_read_begin(s, &txn);
    if (rv != 0) {
        free(rows);
        return rv;
    }
    memcpy(key, link, llen);
    key[llen] = '\0';
    store_be64_put(key + llen + 1, after + 1);
    rc = mdb_cursor_open(txn, s->dbi[STORE_DB_OUTBOX], &cur);
    if (rc != 0) {
        rv = store_mdb_err(s, rc, "outbox cursor");
        goto out_end;
    }
    for (rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
         rc == 0 && got < max && k.mv_size == llen + 1 + 8 &&
         memcmp(k.mv_data, link, llen + 1) == 0;
         rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        rows[got] = cityops__v1__outbox_message__unpack(NULL, v.mv_size,
                                                        v.mv_data);
        if (rows[got] == NULL) {
            rv = store_errf(s, STORE_CORRUPT, "outbox row does not decode");
            break;
        }
        got++;
    }
    mdb_cursor_close(cur);
out_end:
    store_read_end(s, txn);
    if (rv != 0) {
        store_msgs_free((ProtobufCMessage **)rows, got);
        return rv;
    }
    *out = rows;
    *n = got;
    return 0;
}

static int checkpoint_sign(struct store *s,
                           MDB_txn *txn,
                           uint64_t index,
                           const Cityops__V1__Command *cmd,
                           Cityops__V1__CommandResult *res)
{
    const Cityops__V1__CheckpointSignature *sig = cmd->checkpoint_signature;
    Cityops__V1__Checkpoint *cp = NULL;
    Cityops__V1__Checkpoint signed_cp;
    char msg[96];
    int rv;

    if (sig->signature.len != ED25519_SIG_SIZE ||
        sig->public_key.len != ED25519_KEY_SIZE) {
        return store_result_fail(res, RC_INVALID,
                      "signature must be 64 bytes and public_key 32 (Ed25519)");
    }
    rv = checkpoint_load(s, txn, sig->tree_size, &cp);
    if (rv == STORE_NOTFOUND) {
        snprintf(msg, sizeof(msg), "no checkpoint of tree size %llu",
                 (unsigned long long)sig->tree_size);
        return store_result_fail(res, RC_NOT_FOUND, msg);
    }
    if (rv != 0) {
        return rv;
    }
    if (cp->signature.len > 0) {
        if (!bytes_equal(&cp->signature, &sig->signature) ||
            !bytes_equal(&cp->public_key, &sig->public_key)) {
            snprintf(msg, sizeof(msg), "checkpoint %llu is already signed",
                     (unsigned long long)sig->tree_size);
            rv = store_result_fail(res, RC_PRECONDITION, msg);
        }
        goto out_free_cp; /* the same signature again: nothing changes */
    }
    rv = signature_verify(cp, &sig->signature, &sig->public_key);
    if (rv < 0) {
        rv = store_errf(s, rv, "audit: verify: out of memory");
        goto out_free_cp;
    }
    if (rv == 0) {
        rv = store_result_fail(res, RC_INVALID, "signature does not verify");
        goto out_free_cp;
    }
    signed_cp = *cp; /* borrows; cp keeps ownership of its own fields */
    signed_cp.signature = sig->signature;
    signed_cp.public_key = sig->public_key;
    rv = checkpoint_put(s, txn, &signed_cp);
    if (rv == 0) {
        /* Queue the signed head for the parent tier to witness, in the same
         * transaction (transactional outbox). */
        rv = outbox_put(s, txn, "parent", "audit_checkpoint", cmd->time,
                        index, &signed_cp.base);
    }
out_free_cp:
    cityops__v1__checkpoint__free_unpacked(cp, NULL);
    return rv;
}

int audit_apply(struct store *s,
                MDB_txn *txn,
                uint64_t index,
                const Cityops__V1__Command *cmd,
                struct audit_tree *t,
                Cityops__V1__CommandResult *res)
{
    res->code = RC_OK;
    if (cmd->role != CITYOPS__V1__ROLE__ROLE_SYSTEM &&
        cmd->role != CITYOPS__V1__ROLE__ROLE_ADMIN &&
        cmd->role != CITYOPS__V1__ROLE__ROLE_AUDITOR) {
        return store_result_fail(res, RC_DENIED,
                      "checkpoints need role SYSTEM, ADMIN or AUDITOR");
    }
    if (cmd->op_case == CITYOPS__V1__COMMAND__OP_CHECKPOINT) {
        return checkpoint_take(s, txn, index, cmd, t, res);
    }
    return checkpoint_sign(s, txn, index, cmd, res);
}

void store_checkpoint_message(const Cityops__V1__Checkpoint *cp,
                              uint8_t out[STORE_CHECKPOINT_MSG_SIZE])
{
    uint8_t *p = out;
    size_t n = cp->root_hash.len < STORE_HASH_SIZE ? cp->root_hash.len
                                                   : STORE_HASH_SIZE;

    memcpy(p, checkpoint_magic, sizeof(checkpoint_magic));
    p += sizeof(checkpoint_magic);
    store_be64_put(p, cp->tree_size);
    p += 8;
    memset(p, 0, STORE_HASH_SIZE);
    if (n > 0) {
        memcpy(p, cp->root_hash.data, n);
    }
    p += STORE_HASH_SIZE;
    store_be64_put(p, (uint64_t)cp->time);
}

/* --- reads --- */

int store_audit_head(struct store *s,
                     uint64_t *size,
                     uint8_t head[STORE_HASH_SIZE])
{
    struct audit_tree t;
    MDB_txn *txn;
    int rv;

    rv = store_read_begin(s, &txn);
    if (rv != 0) {
        return rv;
    }
    rv = tree_get(s, txn, &t);
    store_read_end(s, txn);
    if (rv == 0) {
        *size = t.size;
        memcpy(head, t.head, STORE_HASH_SIZE);
    }
    return rv;
}

static int record_matches(const Cityops__V1__AuditListRequest *req,
                          const Cityops__V1__AuditRecord *r)
{
    const char *target = str0(req->target);
    const char *actor = str0(req->actor_id);

    return (target[0] == '\0' || strcmp(target, str0(r->target)) == 0) &&
           (actor[0] == '\0' || strcmp(actor, str0(r->actor_id)) == 0) &&
           (req->from_time == 0 || r->time >= req->from_time) &&
           (req->to_time == 0 || r->time < req->to_time);
}

/* Collect up to @page matching records from seq @from; *next = the seq of
 * the first match past the page (UINT64_MAX: none). */
static int list_walk(struct store *s,
                     MDB_txn *txn,
                     const Cityops__V1__AuditListRequest *req,
                     uint64_t from,
                     size_t page,
                     Cityops__V1__AuditListResponse *resp,
                     uint64_t *next)
{
    Cityops__V1__AuditRecord *r;
    uint8_t key[8];
    MDB_val k = {sizeof(key), key};
    MDB_val v;
    MDB_cursor *cur;
    int rv = 0;
    int rc;

    *next = UINT64_MAX;
    rc = mdb_cursor_open(txn, s->dbi[STORE_DB_AUDIT], &cur);
    if (rc != 0) {
        return store_mdb_err(s, rc, "open cursor on audit");
    }
    store_be64_put(key, from);
    for (rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE); rc == 0;
         rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        r = cityops__v1__audit_record__unpack(NULL, v.mv_size, v.mv_data);
        if (r == NULL) {
            rv = store_errf(s, STORE_CORRUPT, "audit record does not decode");
            break;
        }
        if (!record_matches(req, r)) {
            cityops__v1__audit_record__free_unpacked(r, NULL);
            continue;
        }
        if (resp->n_records == page) {
            *next = r->seq;
            cityops__v1__audit_record__free_unpacked(r, NULL);
            break;
        }
        resp->records[resp->n_records++] = r;
    }
    mdb_cursor_close(cur);
    if (rv == 0 && rc != 0 && rc != MDB_NOTFOUND) {
        rv = store_mdb_err(s, rc, "list audit");
    }
    return rv;
}

int store_audit_list(struct store *s,
                     const Cityops__V1__AuditListRequest *req,
                     Cityops__V1__AuditListResponse **out)
{
    Cityops__V1__AuditListResponse *resp;
    struct audit_tree t;
    size_t page = req->page_size;
    uint64_t from;
    uint64_t next;
    char tok[24];
    MDB_txn *txn;
    int rv;

    if (store_token_parse(req->page_token, &from) != 0) {
        return store_errf(s, STORE_INVALID, "audit list: bad page token");
    }
    if (from < req->from_seq) {
        from = req->from_seq;
    }
    page = page == 0 ? AUDIT_LIST_DEFAULT : page;
    page = page > AUDIT_LIST_MAX ? AUDIT_LIST_MAX : page;
    resp = malloc(sizeof(*resp));
    if (resp == NULL) {
        return STORE_NOMEM;
    }
    cityops__v1__audit_list_response__init(resp);
    resp->records = calloc(page, sizeof(*resp->records));
    if (resp->records == NULL) {
        rv = STORE_NOMEM;
        goto err_free_resp;
    }
    rv = store_read_begin(s, &txn);
    if (rv != 0) {
        goto err_free_resp;
    }
    rv = tree_get(s, txn, &t);
    if (rv == 0) {
        resp->tree_size = t.size;
        rv = list_walk(s, txn, req, from, page, resp, &next);
    }
    store_read_end(s, txn);
    if (rv == 0 && next != UINT64_MAX) {
        snprintf(tok, sizeof(tok), "%llu", (unsigned long long)next);
        rv = store_str_set(&resp->next_page_token, tok);
    }
    if (rv != 0) {
        goto err_free_resp;
    }
    *out = resp;
    return 0;

err_free_resp:
    cityops__v1__audit_list_response__free_unpacked(resp, NULL);
    return rv;
}

int store_checkpoint_get(struct store *s,
                         uint64_t tree_size,
                         Cityops__V1__Checkpoint **out)
{
    MDB_cursor *cur;
    MDB_val k, v;
    MDB_txn *txn;
    int rv;
    int rc;

    rv = store_read_begin(s, &txn);
    if (rv != 0) {
        return rv;
    }
    if (tree_size != 0) {
        rv = checkpoint_load(s, txn, tree_size, out);
        goto out_end;
    }
    rc = mdb_cursor_open(txn, s->dbi[STORE_DB_CHECKPOINTS], &cur);
    if (rc != 0) {
        rv = store_mdb_err(s, rc, "open cursor on checkpoints");
        goto out_end;
    }
    rc = mdb_cursor_get(cur, &k, &v, MDB_LAST);
    mdb_cursor_close(cur);
    if (rc == MDB_NOTFOUND) {
        rv = STORE_NOTFOUND;
    } else if (rc != 0) {
        rv = store_mdb_err(s, rc, "last checkpoint");
    } else {
        *out = cityops__v1__checkpoint__unpack(NULL, v.mv_size, v.mv_data);
        rv = *out != NULL
                 ? 0
                 : store_errf(s, STORE_CORRUPT, "checkpoint does not decode");
    }
out_end:
    store_read_end(s, txn);
    return rv;
}

static int checkpoints_collect(struct store *s,
                               MDB_txn *txn,
                               Cityops__V1__CheckpointList *list)
{
    MDB_cursor *cur;
    MDB_stat st;
    MDB_val k, v;
    int rv = 0;
    int rc;

    rc = mdb_stat(txn, s->dbi[STORE_DB_CHECKPOINTS], &st);
    if (rc != 0) {
        return store_mdb_err(s, rc, "stat checkpoints");
    }
    if (st.ms_entries == 0) {
        return 0;
    }
    list->checkpoints = calloc(st.ms_entries, sizeof(*list->checkpoints));
    if (list->checkpoints == NULL) {
        return STORE_NOMEM;
    }
    rc = mdb_cursor_open(txn, s->dbi[STORE_DB_CHECKPOINTS], &cur);
    if (rc != 0) {
        return store_mdb_err(s, rc, "open cursor on checkpoints");
    }
    for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST);
         rc == 0 && list->n_checkpoints < st.ms_entries;
         rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        Cityops__V1__Checkpoint *cp =
            cityops__v1__checkpoint__unpack(NULL, v.mv_size, v.mv_data);
        if (cp == NULL) {
            rv = store_errf(s, STORE_CORRUPT, "checkpoint does not decode");
            break;
        }
        list->checkpoints[list->n_checkpoints++] = cp;
    }
    mdb_cursor_close(cur);
    if (rv == 0 && rc != 0 && rc != MDB_NOTFOUND) {
        rv = store_mdb_err(s, rc, "list checkpoints");
    }
    return rv;
}

int store_checkpoint_list(struct store *s, Cityops__V1__CheckpointList **out)
{
    Cityops__V1__CheckpointList *list;
    MDB_txn *txn;
    int rv;

    list = malloc(sizeof(*list));
    if (list == NULL) {
        return STORE_NOMEM;
    }
    cityops__v1__checkpoint_list__init(list);
    rv = store_read_begin(s, &txn);
    if (rv != 0) {
        goto err_free_list;
    }
    rv = checkpoints_collect(s, txn, list);
    store_read_end(s, txn);
    if (rv != 0) {
        goto err_free_list;
    }
    *out = list;
    return 0;

err_free_list:
    cityops__v1__checkpoint_list__free_unpacked(list, NULL);
    return rv;
}

/* --- Merkle tree over the stored leaves (RFC 6962 section 2.1) --- */

/* The leaves of the first @n records, read inside one read transaction. */
struct leaves {
    struct store *s;
    EVP_MD_CTX *md;
    uint8_t (*h)[STORE_HASH_SIZE];
    uint64_t n;
};

/* The record hash of a stored record: its last 32 bytes, behind the tag and
 * length of field 14 (see DESIGN). */
static int record_hash_get(const MDB_val *v, uint8_t out[STORE_HASH_SIZE])
{
    const uint8_t *p = v->mv_data;

    if (v->mv_size < 2 + STORE_HASH_SIZE ||
        p[v->mv_size - 2 - STORE_HASH_SIZE] != ((14 << 3) | 2) ||
        p[v->mv_size - 1 - STORE_HASH_SIZE] != STORE_HASH_SIZE) {
        return STORE_CORRUPT;
    }
    memcpy(out, p + v->mv_size - STORE_HASH_SIZE, STORE_HASH_SIZE);
    return 0;
}

static int leaves_read(MDB_txn *txn, struct leaves *l, uint64_t n)
{
    struct store *s = l->s;
    uint8_t rh[STORE_HASH_SIZE];
    MDB_cursor *cur;
    MDB_val k, v;
    int rv = 0;
    int rc;

    if (n > SIZE_MAX / STORE_HASH_SIZE) {
        return STORE_NOMEM;
    }
    l->h = malloc(n > 0 ? n * STORE_HASH_SIZE : 1);
    if (l->h == NULL) {
        return STORE_NOMEM;
    }
    rc = mdb_cursor_open(txn, s->dbi[STORE_DB_AUDIT], &cur);
    if (rc != 0) {
        return store_mdb_err(s, rc, "open cursor on audit");
    }
    for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0 && l->n < n;
         rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        if (k.mv_size != 8 || store_be64_get(k.mv_data) != l->n ||
            record_hash_get(&v, rh) != 0) {
            rv = store_errf(s, STORE_CORRUPT, "audit/%llu: bad record",
                            (unsigned long long)l->n);
            break;
        }
        rv = hash_leaf(l->md, rh, l->h[l->n]);
        if (rv != 0) {
            break;
        }
        l->n++;
    }
    mdb_cursor_close(cur);
    if (rv == 0 && l->n < n) {
        rv =
            rc != 0 && rc != MDB_NOTFOUND
                ? store_mdb_err(s, rc, "read audit")
                : store_errf(s, STORE_CORRUPT, "audit: %llu records, want %llu",
                             (unsigned long long)l->n, (unsigned long long)n);
    }
    return rv;
}

/* Open a read txn, check @n against the trail size, read the leaves of
 * [0, n). On success the caller releases with leaves_end(). */
static int
leaves_begin(struct store *s, uint64_t n, struct leaves *l, MDB_txn **txn)
{
    struct audit_tree t;
    int rv;

    memset(l, 0, sizeof(*l));
    l->s = s;
    l->md = EVP_MD_CTX_new();
    if (l->md == NULL) {
        return STORE_NOMEM;
    }
    rv = store_read_begin(s, txn);
    if (rv != 0) {
        goto err_free_md;
    }
    rv = tree_get(s, *txn, &t);
    if (rv == 0 && n > t.size) {
        rv = store_errf(s, STORE_INVALID, "tree size %llu > trail size %llu",
                        (unsigned long long)n, (unsigned long long)t.size);
    }
    if (rv == 0) {
        rv = leaves_read(*txn, l, n);
    }
    if (rv != 0) {
        store_read_end(s, *txn);
        goto err_free_md;
    }
    return 0;

err_free_md:
    free(l->h);
    EVP_MD_CTX_free(l->md);
    return rv;
}

static void leaves_end(struct leaves *l, MDB_txn *txn)
{
    store_read_end(l->s, txn);
    free(l->h);
    EVP_MD_CTX_free(l->md);
}

/* The largest power of two smaller than @n (n >= 2). */
static uint64_t split(uint64_t n)
{
    uint64_t k = 1;

    while ((k << 1) < n) {
        k <<= 1;
    }
    return k;
}

/* MTH(D[lo : lo + n]). */
static int
mth(struct leaves *l, uint64_t lo, uint64_t n, uint8_t out[STORE_HASH_SIZE])
{
    uint8_t left[STORE_HASH_SIZE];
    uint8_t right[STORE_HASH_SIZE];
    uint64_t k;
    int rv;

    if (n == 0) {
        return hash_empty(l->md, out);
    }
    if (n == 1) {
        memcpy(out, l->h[lo], STORE_HASH_SIZE);
        return 0;
    }
    k = split(n);
    rv = mth(l, lo, k, left);
    if (rv == 0) {
        rv = mth(l, lo + k, n - k, right);
    }
    return rv != 0 ? rv : hash_node(l->md, left, right, out);
}

struct proof {
    size_t n;
    uint8_t h[AUDIT_PROOF_MAX][STORE_HASH_SIZE];
};

static int
proof_push_mth(struct leaves *l, struct proof *p, uint64_t lo, uint64_t n)
{
    if (p->n == AUDIT_PROOF_MAX) {
        return STORE_CORRUPT; /* cannot happen for n < 2^64 */
    }
    return mth(l, lo, n, p->h[p->n++]);
}

/* PATH(m, D[lo : lo + n]), leaf to root. */
static int audit_path(
    struct leaves *l, uint64_t lo, uint64_t n, uint64_t m, struct proof *p)
{
    uint64_t k;
    int rv;

    if (n <= 1) {
        return 0;
    }
    k = split(n);
    if (m < k) {
        rv = audit_path(l, lo, k, m, p);
        return rv != 0 ? rv : proof_push_mth(l, p, lo + k, n - k);
    }
    rv = audit_path(l, lo + k, n - k, m - k, p);
    return rv != 0 ? rv : proof_push_mth(l, p, lo, k);
}

/* SUBPROOF(m, D[lo : lo + n], b) (RFC 6962 section 2.1.2). */
static int subproof(struct leaves *l,
                    uint64_t lo,
                    uint64_t n,
                    uint64_t m,
                    int b,
                    struct proof *p)
{
    uint64_t k;
    int rv;

    if (m == n) {
        return b ? 0 : proof_push_mth(l, p, lo, n);
    }
    k = split(n);
    if (m <= k) {
        rv = subproof(l, lo, k, m, b, p);
        return rv != 0 ? rv : proof_push_mth(l, p, lo + k, n - k);
    }
    rv = subproof(l, lo + k, n - k, m - k, 0, p);
    return rv != 0 ? rv : proof_push_mth(l, p, lo, k);
}

int store_audit_root(struct store *s,
                     uint64_t tree_size,
                     uint8_t root[STORE_HASH_SIZE])
{
    struct leaves l;
    MDB_txn *txn;
    int rv;

    rv = leaves_begin(s, tree_size, &l, &txn);
    if (rv != 0) {
        return rv;
    }
    rv = mth(&l, 0, tree_size, root);
    leaves_end(&l, txn);
    return rv;
}

/* Copy @p into a malloc'd repeated bytes field. */
static int
path_copy(const struct proof *p, ProtobufCBinaryData **out, size_t *n_out)
{
    ProtobufCBinaryData *path;

    *out = NULL;
    *n_out = 0;
    if (p->n == 0) {
        return 0;
    }
    path = calloc(p->n, sizeof(*path));
    if (path == NULL) {
        return STORE_NOMEM;
    }
    *out = path;
    for (size_t i = 0; i < p->n; i++) {
        path[i].data = malloc(STORE_HASH_SIZE);
        if (path[i].data == NULL) {
            return STORE_NOMEM; /* the caller frees what was copied */
        }
        memcpy(path[i].data, p->h[i], STORE_HASH_SIZE);
        path[i].len = STORE_HASH_SIZE;
        *n_out = i + 1;
    }
    return 0;
}

static int record_load(struct store *s,
                       MDB_txn *txn,
                       uint64_t seq,
                       Cityops__V1__AuditRecord **out)
{
    uint8_t key[8];
    MDB_val k = {sizeof(key), key};
    MDB_val v;
    int rc;

    store_be64_put(key, seq);
    rc = mdb_get(txn, s->dbi[STORE_DB_AUDIT], &k, &v);
    if (rc != 0) {
        return store_mdb_err(s, rc, "get audit/%llu", (unsigned long long)seq);
    }
    *out = cityops__v1__audit_record__unpack(NULL, v.mv_size, v.mv_data);
    if (*out == NULL) {
        return store_errf(s, STORE_CORRUPT, "audit/%llu does not decode",
                          (unsigned long long)seq);
    }
    return 0;
}

static int inclusion_fill(struct leaves *l,
                          MDB_txn *txn,
                          uint64_t seq,
                          uint64_t tree_size,
                          Cityops__V1__InclusionProofResponse *resp)
{
    struct proof *p;
    int rv;

    resp->tree_size = tree_size;
    rv = record_load(l->s, txn, seq, &resp->record);
    if (rv != 0) {
        return rv;
    }
    rv = checkpoint_load(l->s, txn, tree_size, &resp->checkpoint);
    if (rv != 0 && rv != STORE_NOTFOUND) {
        return rv;
    }
    p = malloc(sizeof(*p));
    if (p == NULL) {
        return STORE_NOMEM;
    }
    p->n = 0;
    rv = audit_path(l, 0, tree_size, seq, p);
    if (rv == 0) {
        rv = path_copy(p, &resp->path, &resp->n_path);
    }
    free(p);
    return rv;
}

int store_audit_inclusion(struct store *s,
                          uint64_t seq,
                          uint64_t tree_size,
                          Cityops__V1__InclusionProofResponse **out)
{
    Cityops__V1__InclusionProofResponse *resp;
    struct leaves l;
    MDB_txn *txn;
    int rv;

    if (seq >= tree_size) {
        return store_errf(s, STORE_INVALID, "seq %llu not below tree size %llu",
                          (unsigned long long)seq,
                          (unsigned long long)tree_size);
    }
    resp = malloc(sizeof(*resp));
    if (resp == NULL) {
        return STORE_NOMEM;
    }
    cityops__v1__inclusion_proof_response__init(resp);
    rv = leaves_begin(s, tree_size, &l, &txn);
    if (rv != 0) {
        goto err_free_resp;
    }
    rv = inclusion_fill(&l, txn, seq, tree_size, resp);
    leaves_end(&l, txn);
    if (rv != 0) {
        goto err_free_resp;
    }
    *out = resp;
    return 0;

err_free_resp:
    cityops__v1__inclusion_proof_response__free_unpacked(resp, NULL);
    return rv;
}

int store_audit_consistency(struct store *s,
                            uint64_t first,
                            uint64_t second,
                            Cityops__V1__ConsistencyProofResponse **out)
{
    Cityops__V1__ConsistencyProofResponse *resp;
    struct proof *p;
    struct leaves l;
    MDB_txn *txn;
    int rv;

    if (first > second) {
        return store_errf(s, STORE_INVALID,
                          "consistency: first %llu > second "
                          "%llu",
                          (unsigned long long)first,
                          (unsigned long long)second);
    }
    resp = malloc(sizeof(*resp));
    p = malloc(sizeof(*p));
    if (resp == NULL || p == NULL) {
        free(resp);
        free(p);
        return STORE_NOMEM;
    }
    cityops__v1__consistency_proof_response__init(resp);
    resp->first = first;
    resp->second = second;
    p->n = 0;
    rv = leaves_begin(s, second, &l, &txn);
    if (rv != 0) {
        goto err_free_resp;
    }
    if (first > 0 && first < second) {
        rv = subproof(&l, 0, second, first, 1, p);
    }
    leaves_end(&l, txn);
    if (rv == 0) {
        rv = path_copy(p, &resp->path, &resp->n_path);
    }
    if (rv != 0) {
        goto err_free_resp;
    }
    free(p);
    *out = resp;
    return 0;

err_free_resp:
    free(p);
    cityops__v1__consistency_proof_response__free_unpacked(resp, NULL);
    return rv;
}

/* --- whole-chain check (backups) --- */

/* Check record @seq (@v) against the running head and advance it. */
static int chain_step(struct store *s,
                      EVP_MD_CTX *md,
                      uint64_t seq,
                      const MDB_val *v,
                      uint8_t head[STORE_HASH_SIZE])
{
    Cityops__V1__AuditRecord *r;
    uint8_t want[STORE_HASH_SIZE];
    uint8_t got[STORE_HASH_SIZE];
    int linked;

    if (record_hash_get(v, want) != 0) {
        return store_errf(s, STORE_CORRUPT, "audit/%llu: no hash field",
                          (unsigned long long)seq);
    }
    r = cityops__v1__audit_record__unpack(NULL, v->mv_size, v->mv_data);
    if (r == NULL) {
        return store_errf(s, STORE_CORRUPT, "audit/%llu does not decode",
                          (unsigned long long)seq);
    }
    linked = r->seq == seq && r->prev_hash.len == STORE_HASH_SIZE &&
             memcmp(r->prev_hash.data, head, STORE_HASH_SIZE) == 0;
    cityops__v1__audit_record__free_unpacked(r, NULL);
    if (!linked) {
        return store_errf(s, STORE_CORRUPT,
                          "audit/%llu: seq or prev hash does not follow "
                          "record %lld",
                          (unsigned long long)seq, (long long)seq - 1);
    }
    if (hash3(md, head, STORE_HASH_SIZE, v->mv_data,
              v->mv_size - 2 - STORE_HASH_SIZE, NULL, 0, got) != 0) {
        return store_errf(s, STORE_NOMEM, "audit: SHA-256 failed");
    }
    if (memcmp(got, want, STORE_HASH_SIZE) != 0) {
        return store_errf(s, STORE_CORRUPT,
                          "audit/%llu: hash does not match its content",
                          (unsigned long long)seq);
    }
    memcpy(head, got, STORE_HASH_SIZE);
    return 0;
}

static int chain_walk(struct store *s,
                      MDB_txn *txn,
                      EVP_MD_CTX *md,
                      uint64_t *n,
                      uint8_t head[STORE_HASH_SIZE])
{
    MDB_cursor *cur;
    MDB_val k, v;
    int rv = 0;
    int rc;

    rc = mdb_cursor_open(txn, s->dbi[STORE_DB_AUDIT], &cur);
    if (rc != 0) {
        return store_mdb_err(s, rc, "open cursor on audit");
    }
    for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0 && rv == 0;
         rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        if (k.mv_size != 8 || store_be64_get(k.mv_data) != *n) {
            rv = store_errf(s, STORE_CORRUPT, "audit: record %llu is missing",
                            (unsigned long long)*n);
            break;
        }
        rv = chain_step(s, md, *n, &v, head);
        *n += rv == 0;
    }
    mdb_cursor_close(cur);
    if (rv == 0 && rc != MDB_NOTFOUND) {
        rv = store_mdb_err(s, rc, "read audit");
    }
    return rv;
}

int audit_chain_verify(struct store *s,
                       uint64_t *size,
                       uint8_t head[STORE_HASH_SIZE])
{
    struct audit_tree t;
    EVP_MD_CTX *md;
    MDB_txn *txn;
    uint64_t n = 0;
    int rv;

    memset(head, 0, STORE_HASH_SIZE);
    md = EVP_MD_CTX_new();
    if (md == NULL) {
        return store_errf(s, STORE_NOMEM, "audit: out of memory");
    }
    rv = store_read_begin(s, &txn);
    if (rv != 0) {
        goto out_free_md;
    }
    rv = chain_walk(s, txn, md, &n, head);
    if (rv == 0) {
        rv = tree_get(s, txn, &t);
    }
    if (rv == 0 &&
        (t.size != n || memcmp(t.head, head, STORE_HASH_SIZE) != 0)) {
        rv = store_errf(s, STORE_CORRUPT,
                        "audit: the chain of %llu records does not end at "
                        "the stored head (size %llu)",
                        (unsigned long long)n, (unsigned long long)t.size);
    }
    store_read_end(s, txn);
    if (rv == 0) {
        *size = n;
    }
out_free_md:
    EVP_MD_CTX_free(md);
    return rv;
}
