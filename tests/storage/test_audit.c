/* Unit tests of the audit trail in storage/ through store.h: one record per
 * command (applied, refused or replayed), the hash chain, the RFC 6962 tree
 * (roots, inclusion and consistency proofs checked by an independent
 * reference implementation and the RFC 9162 verification algorithms written
 * here from the RFC), checkpoints and their Ed25519 signatures.
 *
 * Every test opens LMDB in a fresh mkdtemp() directory. Commands are applied
 * at increasing Raft indexes and kept, so a twin store can replay the log.
 */
#include <dirent.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <lmdb.h>
#include <openssl/evp.h>

#include "storage/store.h"

#define T0 1700000000000000LL
#define SEC 1000000LL
#define H STORE_HASH_SIZE

#define K(x) CITYOPS__V1__COMMAND__OP_##x
#define R(x) CITYOPS__V1__ROLE__ROLE_##x
#define RC(x) CITYOPS__V1__RESULT_CODE__RESULT_##x

/* --- fixture --- */

struct logged {
    uint64_t index;
    uint8_t *buf;
    size_t len;
};

struct fx {
    char dir[64];
    struct store *s;
    uint64_t index;
    int64_t time;
    struct store_results last;
    struct logged *log;
    size_t n_log;
};

static void dir_remove(const char *dir)
{
    char path[512];
    struct dirent *de;
    DIR *d = opendir(dir);

    if (d != NULL) {
        while ((de = readdir(d)) != NULL) {
            if (strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0) {
                snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
                unlink(path);
            }
        }
        closedir(d);
    }
    rmdir(dir);
}

static struct fx *fx_new(void)
{
    struct fx *f = calloc(1, sizeof(*f));

    assert_non_null(f);
    strcpy(f->dir, "/tmp/cityops-audit-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    assert_int_equal(store_open(f->dir, NULL, &f->s), 0);
    f->time = T0;
    return f;
}

static void fx_free(struct fx *f)
{
    store_results_free(&f->last);
    store_close(f->s);
    dir_remove(f->dir);
    for (size_t i = 0; i < f->n_log; i++) {
        free(f->log[i].buf);
    }
    free(f->log);
    free(f);
}

static int setup(void **state)
{
    *state = fx_new();
    return 0;
}

static int teardown(void **state)
{
    fx_free(*state);
    return 0;
}

static void fx_apply_raw(struct fx *f, const uint8_t *buf, size_t len)
{
    struct logged *l;

    store_results_free(&f->last);
    f->index++;
    assert_int_equal(store_apply_batch(f->s, f->index, buf, len, &f->last), 0);
    l = realloc(f->log, (f->n_log + 1) * sizeof(*l));
    assert_non_null(l);
    f->log = l;
    l[f->n_log].index = f->index;
    l[f->n_log].buf = malloc(len > 0 ? len : 1);
    assert_non_null(l[f->n_log].buf);
    memcpy(l[f->n_log].buf, buf, len);
    l[f->n_log].len = len;
    f->n_log++;
}

static void fx_replay(struct fx *f, struct fx *g)
{
    struct store_results res;

    for (size_t i = 0; i < f->n_log; i++) {
        assert_int_equal(store_apply_batch(g->s, f->log[i].index, f->log[i].buf,
                                           f->log[i].len, &res),
                         0);
        store_results_free(&res);
    }
}

/* --- commands --- */

/* One command and the messages it points at. */
struct cmd {
    Cityops__V1__Command c;
    Cityops__V1__ReportRequest report;
    Cityops__V1__Location loc;
    Cityops__V1__Attachment att;
    Cityops__V1__Attachment *attp;
    Cityops__V1__CaseActionRequest action;
    Cityops__V1__RegisterRequest reg;
    Cityops__V1__MergeRequest merge;
    Cityops__V1__Member member;
    Cityops__V1__ClusterEvent event;
    Cityops__V1__CheckpointRequest cp;
    Cityops__V1__CheckpointSignature sig;
};

static void cmd_init(struct cmd *m, Cityops__V1__Role role, const char *actor)
{
    memset(m, 0, sizeof(*m));
    cityops__v1__command__init(&m->c);
    m->c.role = role;
    m->c.actor_id = (char *)actor;
}

static struct cmd cmd_report(Cityops__V1__Role role, const char *actor)
{
    struct cmd m;

    cmd_init(&m, role, actor);
    cityops__v1__report_request__init(&m.report);
    cityops__v1__location__init(&m.loc);
    cityops__v1__attachment__init(&m.att);
    m.loc.lon = 116.4;
    m.loc.lat = 39.9;
    m.loc.grid_code = "11010100100101";
    m.att.sha256 =
        "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    m.att.uri = "s3://evidence/photo.jpg";
    m.att.media_type = "image/jpeg";
    m.report.category_type = CITYOPS__V1__CATEGORY_TYPE__CATEGORY_TYPE_EVENT;
    m.report.major_code = "01";
    m.report.minor_code = "02";
    m.report.description = "overflowing bin";
    m.report.n_attachments = 1;
    m.c.op_case = K(REPORT);
    return m;
}

/* accept (INTAKE_CLERK clerk-1) and other CaseActionRequest ops. */
static struct cmd cmd_action(Cityops__V1__Command__OpCase kind,
                             uint64_t case_id,
                             Cityops__V1__Role role,
                             const char *actor)
{
    struct cmd m;

    cmd_init(&m, role, actor);
    cityops__v1__case_action_request__init(&m.action);
    m.action.case_id = case_id;
    m.action.reason = "";
    m.c.op_case = kind;
    return m;
}

static struct cmd cmd_accept(uint64_t case_id)
{
    return cmd_action(K(ACCEPT), case_id, R(INTAKE_CLERK), "clerk-1");
}

static struct cmd cmd_member(Cityops__V1__Command__OpCase kind,
                             uint64_t id,
                             Cityops__V1__Role role)
{
    struct cmd m;

    cmd_init(&m, role, "admin-1");
    cityops__v1__member__init(&m.member);
    m.member.id = id;
    m.member.raft_address = "127.0.0.1:9004";
    m.member.grpc_address = "127.0.0.1:8004";
    m.c.op_case = kind;
    return m;
}

static struct cmd cmd_event(void)
{
    struct cmd m;

    cmd_init(&m, R(SYSTEM), "leader");
    cityops__v1__cluster_event__init(&m.event);
    m.event.kind = "promote";
    m.event.detail = "node 4 to voter";
    m.c.op_case = K(CLUSTER_EVENT);
    return m;
}

static struct cmd cmd_checkpoint(Cityops__V1__Role role)
{
    struct cmd m;

    cmd_init(&m, role, "auditor-1");
    cityops__v1__checkpoint_request__init(&m.cp);
    m.c.op_case = K(CHECKPOINT);
    return m;
}

static struct cmd cmd_sign(uint64_t tree_size,
                           const uint8_t *sig,
                           size_t sig_len,
                           const uint8_t *key,
                           size_t key_len,
                           Cityops__V1__Role role)
{
    struct cmd m;

    cmd_init(&m, role, "leader");
    cityops__v1__checkpoint_signature__init(&m.sig);
    m.sig.tree_size = tree_size;
    m.sig.signature.data = (uint8_t *)sig;
    m.sig.signature.len = sig_len;
    m.sig.public_key.data = (uint8_t *)key;
    m.sig.public_key.len = key_len;
    m.c.op_case = K(CHECKPOINT_SIGNATURE);
    return m;
}

/* Point the oneof at the message cmd_* filled (after any copy of m). */
static void cmd_fix(struct cmd *m)
{
    switch (m->c.op_case) {
    case K(REPORT):
        m->attp = &m->att;
        m->report.attachments = &m->attp;
        m->report.location = &m->loc;
        m->c.report = &m->report;
        break;
    case K(REGISTER):
        m->c.register_ = &m->reg;
        break;
    case K(MERGE):
        m->c.merge = &m->merge;
        break;
    case K(MEMBER_SET):
    case K(MEMBER_FORGET):
        m->c.member_set = &m->member;
        break;
    case K(CLUSTER_EVENT):
        m->c.cluster_event = &m->event;
        break;
    case K(CHECKPOINT):
        m->c.checkpoint = &m->cp;
        break;
    case K(CHECKPOINT_SIGNATURE):
        m->c.checkpoint_signature = &m->sig;
        break;
    case CITYOPS__V1__COMMAND__OP__NOT_SET:
        break;
    default:
        m->c.accept = &m->action; /* the same union slot for every action */
        break;
    }
}

/* Apply @n commands as one batch at the next index. */
static void apply(struct fx *f, struct cmd *cmds, size_t n)
{
    Cityops__V1__CommandBatch batch = CITYOPS__V1__COMMAND_BATCH__INIT;
    Cityops__V1__Command **cp = calloc(n, sizeof(*cp));
    uint8_t *buf;
    size_t len;

    assert_non_null(cp);
    for (size_t i = 0; i < n; i++) {
        cmd_fix(&cmds[i]);
        cmds[i].c.time = (f->time += SEC);
        cp[i] = &cmds[i].c;
    }
    batch.n_commands = n;
    batch.commands = cp;
    len = cityops__v1__command_batch__get_packed_size(&batch);
    buf = malloc(len > 0 ? len : 1);
    assert_non_null(buf);
    cityops__v1__command_batch__pack(&batch, buf);
    fx_apply_raw(f, buf, len);
    assert_int_equal(f->last.n, n);
    free(buf);
    free(cp);
}

static Cityops__V1__CommandResult *apply1(struct fx *f, struct cmd m)
{
    apply(f, &m, 1);
    return f->last.results[0];
}

static uint64_t report(struct fx *f)
{
    Cityops__V1__CommandResult *res =
        apply1(f, cmd_report(R(INSPECTOR), "insp-1"));

    assert_int_equal(res->code, RC(OK));
    return res->case_->case_id;
}

/* --- reading the trail --- */

static uint64_t trail_size(struct fx *f, uint8_t head[H])
{
    uint8_t h[H];
    uint64_t size = 0;

    assert_int_equal(store_audit_head(f->s, &size, head != NULL ? head : h), 0);
    return size;
}

/* Every record, oldest first, read in pages of @page through the token. */
struct trail {
    size_t n;
    Cityops__V1__AuditRecord **r;
    Cityops__V1__AuditListResponse **pages;
    size_t n_pages;
};

static void trail_read(struct fx *f, uint32_t page, struct trail *t)
{
    Cityops__V1__AuditListRequest req = CITYOPS__V1__AUDIT_LIST_REQUEST__INIT;
    Cityops__V1__AuditListResponse *resp;
    char tok[32] = "";

    memset(t, 0, sizeof(*t));
    req.page_size = page;
    do {
        req.page_token = tok;
        assert_int_equal(store_audit_list(f->s, &req, &resp), 0);
        t->pages = realloc(t->pages, (t->n_pages + 1) * sizeof(*t->pages));
        t->r = realloc(t->r, (t->n + resp->n_records + 1) * sizeof(*t->r));
        assert_non_null(t->pages);
        assert_non_null(t->r);
        t->pages[t->n_pages++] = resp;
        for (size_t i = 0; i < resp->n_records; i++) {
            t->r[t->n++] = resp->records[i];
        }
        assert_true(strlen(resp->next_page_token) < sizeof(tok));
        strcpy(tok, resp->next_page_token);
    } while (tok[0] != '\0');
}

static void trail_free(struct trail *t)
{
    for (size_t i = 0; i < t->n_pages; i++) {
        cityops__v1__audit_list_response__free_unpacked(t->pages[i], NULL);
    }
    free(t->pages);
    free(t->r);
}

static void sha256(const void *a,
                   size_t na,
                   const void *b,
                   size_t nb,
                   const void *c,
                   size_t nc,
                   uint8_t out[H])
{
    EVP_MD_CTX *md = EVP_MD_CTX_new();

    assert_non_null(md);
    assert_int_equal(EVP_DigestInit_ex(md, EVP_sha256(), NULL), 1);
    EVP_DigestUpdate(md, a, na);
    EVP_DigestUpdate(md, b, nb);
    EVP_DigestUpdate(md, c, nc);
    assert_int_equal(EVP_DigestFinal_ex(md, out, NULL), 1);
    EVP_MD_CTX_free(md);
}

/* The seq of the first record whose chain link or hash does not recompute
 * from its content, or UINT64_MAX if the whole trail verifies. */
static uint64_t chain_first_bad(const struct trail *t)
{
    uint8_t prev[H] = {0};
    uint8_t want[H];

    for (size_t i = 0; i < t->n; i++) {
        Cityops__V1__AuditRecord r = *t->r[i];
        size_t len;
        uint8_t *buf;

        r.hash.len = 0;
        r.hash.data = NULL;
        len = cityops__v1__audit_record__get_packed_size(&r);
        buf = malloc(len);
        assert_non_null(buf);
        cityops__v1__audit_record__pack(&r, buf);
        sha256(prev, H, buf, len, "", 0, want);
        free(buf);
        if (r.seq != i || r.prev_hash.len != H ||
            memcmp(r.prev_hash.data, prev, H) != 0 || t->r[i]->hash.len != H ||
            memcmp(t->r[i]->hash.data, want, H) != 0) {
            return i;
        }
        memcpy(prev, t->r[i]->hash.data, H);
    }
    return UINT64_MAX;
}

static void assert_hash_of(const ProtobufCBinaryData *got,
                           const ProtobufCMessage *msg)
{
    size_t len = protobuf_c_message_get_packed_size(msg);
    uint8_t *buf = malloc(len > 0 ? len : 1);
    uint8_t want[H];

    assert_non_null(buf);
    protobuf_c_message_pack(msg, buf);
    sha256(buf, len, "", 0, "", 0, want);
    free(buf);
    assert_int_equal(got->len, H);
    assert_memory_equal(got->data, want, H);
}

/* --- an independent RFC 6962 reference: MTH and the RFC 9162 verifiers --- */

static void ref_leaf(const uint8_t record_hash[H], uint8_t out[H])
{
    sha256("\x00", 1, record_hash, H, "", 0, out);
}

static void ref_node(const uint8_t l[H], const uint8_t r[H], uint8_t out[H])
{
    sha256("\x01", 1, l, H, r, H, out);
}

/* MTH(D[n]) straight from RFC 6962 2.1: k is the largest power of two
 * smaller than n. */
static void ref_mth(uint8_t (*leaves)[H], uint64_t n, uint8_t out[H])
{
    uint8_t a[H];
    uint8_t b[H];
    uint64_t k = 1;

    if (n == 0) {
        sha256("", 0, "", 0, "", 0, out);
        return;
    }
    if (n == 1) {
        memcpy(out, leaves[0], H);
        return;
    }
    while (k * 2 < n) {
        k *= 2;
    }
    ref_mth(leaves, k, a);
    ref_mth(leaves + k, n - k, b);
    ref_node(a, b, out);
}

/* Leaf hashes of the whole trail. */
static uint8_t (*ref_leaves(struct fx *f, uint64_t *n))[H]
{
    struct trail t;
    uint8_t(*l)[H];

    trail_read(f, 1000, &t);
    l = malloc((t.n + 1) * H);
    assert_non_null(l);
    for (size_t i = 0; i < t.n; i++) {
        assert_int_equal(t.r[i]->hash.len, H);
        ref_leaf(t.r[i]->hash.data, l[i]);
    }
    *n = t.n;
    trail_free(&t);
    return l;
}

/* RFC 9162 2.1.3.2: verify an inclusion proof. */
static int ref_verify_inclusion(uint64_t index,
                                uint64_t size,
                                const uint8_t leaf[H],
                                const ProtobufCBinaryData *path,
                                size_t n_path,
                                const uint8_t root[H])
{
    uint64_t fn = index;
    uint64_t sn = size - 1;
    uint8_t r[H];

    if (index >= size) {
        return 0;
    }
    memcpy(r, leaf, H);
    for (size_t i = 0; i < n_path; i++) {
        if (path[i].len != H || sn == 0) {
            return 0;
        }
        if ((fn & 1) != 0 || fn == sn) {
            ref_node(path[i].data, r, r);
            while ((fn & 1) == 0 && fn != 0) {
                fn >>= 1;
                sn >>= 1;
            }
        } else {
            ref_node(r, path[i].data, r);
        }
        fn >>= 1;
        sn >>= 1;
    }
    return sn == 0 && memcmp(r, root, H) == 0;
}

/* RFC 9162 2.1.4.2: verify a consistency proof (first < second). */
static int ref_verify_consistency(uint64_t first,
                                  uint64_t second,
                                  const uint8_t first_root[H],
                                  const uint8_t second_root[H],
                                  const ProtobufCBinaryData *proof,
                                  size_t n_proof)
{
    const uint8_t *c[130];
    size_t n = 0;
    uint64_t fn = first - 1;
    uint64_t sn = second - 1;
    uint8_t fr[H];
    uint8_t sr[H];

    if (first == 0 || first >= second || n_proof > 128) {
        return 0;
    }
    if ((first & (first - 1)) == 0) {
        c[n++] = first_root;
    }
    for (size_t i = 0; i < n_proof; i++) {
        if (proof[i].len != H) {
            return 0;
        }
        c[n++] = proof[i].data;
    }
    if (n == 0) {
        return 0;
    }
    while ((fn & 1) != 0) {
        fn >>= 1;
        sn >>= 1;
    }
    memcpy(fr, c[0], H);
    memcpy(sr, c[0], H);
    for (size_t i = 1; i < n; i++) {
        if (sn == 0) {
            return 0;
        }
        if ((fn & 1) != 0 || fn == sn) {
            ref_node(c[i], fr, fr);
            ref_node(c[i], sr, sr);
            while ((fn & 1) == 0 && fn != 0) {
                fn >>= 1;
                sn >>= 1;
            }
        } else {
            ref_node(sr, c[i], sr);
        }
        fn >>= 1;
        sn >>= 1;
    }
    return sn == 0 && memcmp(fr, first_root, H) == 0 &&
           memcmp(sr, second_root, H) == 0;
}

/* --- Ed25519 (the leader's side, done here by the test) --- */

static EVP_PKEY *ed25519_new(uint8_t pub[32])
{
    EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_id(EVP_PKEY_ED25519, NULL);
    EVP_PKEY *pkey = NULL;
    size_t len = 32;

    assert_non_null(ctx);
    assert_int_equal(EVP_PKEY_keygen_init(ctx), 1);
    assert_int_equal(EVP_PKEY_keygen(ctx, &pkey), 1);
    EVP_PKEY_CTX_free(ctx);
    assert_int_equal(EVP_PKEY_get_raw_public_key(pkey, pub, &len), 1);
    assert_int_equal(len, 32);
    return pkey;
}

static void
ed25519_sign(EVP_PKEY *pkey, const Cityops__V1__Checkpoint *cp, uint8_t sig[64])
{
    uint8_t msg[STORE_CHECKPOINT_MSG_SIZE];
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    size_t len = 64;

    store_checkpoint_message(cp, msg);
    assert_non_null(md);
    assert_int_equal(EVP_DigestSignInit(md, NULL, NULL, NULL, pkey), 1);
    assert_int_equal(EVP_DigestSign(md, sig, &len, msg, sizeof(msg)), 1);
    assert_int_equal(len, 64);
    EVP_MD_CTX_free(md);
}

static int ed25519_verify(const Cityops__V1__Checkpoint *cp)
{
    uint8_t msg[STORE_CHECKPOINT_MSG_SIZE];
    EVP_PKEY *pkey;
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    int ok;

    store_checkpoint_message(cp, msg);
    pkey = EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, NULL,
                                       cp->public_key.data, cp->public_key.len);
    assert_non_null(pkey);
    assert_non_null(md);
    ok = EVP_DigestVerifyInit(md, NULL, NULL, NULL, pkey) == 1 &&
         EVP_DigestVerify(md, cp->signature.data, cp->signature.len, msg,
                          sizeof(msg)) == 1;
    EVP_MD_CTX_free(md);
    EVP_PKEY_free(pkey);
    return ok;
}

static Cityops__V1__Checkpoint *checkpoint(struct fx *f, uint64_t tree_size)
{
    Cityops__V1__Checkpoint *cp = NULL;

    assert_int_equal(store_checkpoint_get(f->s, tree_size, &cp), 0);
    return cp;
}

/* --- tests: one record per command --- */

static void test_every_command_appends_exactly_one_record(void **state)
{
    struct fx *f = *state;
    struct cmd cmds[12];
    int codes[12];
    struct trail t;
    size_t n = 0;
    uint64_t id;
    static const uint8_t junk[] = {0xff, 0xff, 0xff};

    assert_int_equal(trail_size(f, NULL), 0);
    id = report(f); /* seq 0 */
    assert_int_equal(trail_size(f, NULL), 1);

    cmds[n] = cmd_report(R(INSPECTOR), "insp-1");
    cmds[n].c.client_id = "tablet-7";
    cmds[n++].c.seq = 3;                             /* 1: OK */
    cmds[n++] = cmd_report(R(DISPATCHER), "disp-1"); /* 2: refused */
    cmds[n++] = cmd_accept(id);                      /* 3: OK */
    cmds[n++] = cmd_accept(id);                      /* 4: refused */
    cmds[n++] = cmd_accept(42);                      /* 5: not found */
    cmds[n] = cmd_report(R(INSPECTOR), "insp-1");
    cmds[n].c.client_id = "tablet-7";
    cmds[n++].c.seq = 3; /* 6: replayed */
    cmds[n] = cmd_report(R(INSPECTOR), "insp-1");
    cmds[n].c.client_id = "tablet-7";
    cmds[n++].c.seq = 2;                                    /* 7: stale */
    cmds[n++] = cmd_member(K(MEMBER_SET), 4, R(ADMIN));     /* 8 */
    cmds[n++] = cmd_member(K(MEMBER_SET), 5, R(INSPECTOR)); /* 9: denied */
    cmds[n++] = cmd_event();                                /* 10 */
    cmd_init(&cmds[n++], R(SYSTEM), "sys");                 /* 11: no op */
    apply(f, cmds, n);
    assert_int_equal(trail_size(f, NULL), 1 + n);
    for (size_t i = 0; i < n; i++) {
        codes[i] = f->last.results[i]->code;
    }

    /* An undecodable batch has no command and records nothing. */
    fx_apply_raw(f, junk, sizeof(junk));
    assert_int_equal(trail_size(f, NULL), 1 + n);
    apply1(f, cmd_member(K(MEMBER_FORGET), 4, R(ADMIN))); /* 12 */
    apply1(f, cmd_checkpoint(R(AUDITOR)));                /* 13 */
    assert_int_equal(trail_size(f, NULL), 1 + n + 2);

    trail_read(f, 0, &t);
    assert_int_equal(t.n, 14);
    assert_int_equal(t.pages[0]->tree_size, 14);
    {
        static const struct {
            const char *op;
            const char *target;
            int result;
            uint64_t raft_index;
        } want[] = {
            {"report", "case/1", RC(OK), 1},
            {"report", "case/2", RC(OK), 2},
            {"report", "case/new", RC(PERMISSION_DENIED), 2},
            {"accept", "case/1", RC(OK), 2},
            {"accept", "case/1", RC(FAILED_PRECONDITION), 2},
            {"accept", "case/42", RC(NOT_FOUND), 2},
            {"report (retry)", "case/2", RC(OK), 2},
            {"report", "case/new", RC(ALREADY_EXISTS), 2},
            {"member_set", "member/4", RC(OK), 2},
            {"member_set", "member/5", RC(PERMISSION_DENIED), 2},
            {"cluster_event", "cluster/event", RC(OK), 2},
            {"none", "", RC(INVALID_ARGUMENT), 2},
            {"member_forget", "member/4", RC(OK), 4},
            {"checkpoint", "audit/checkpoint", RC(OK), 5},
        };
        for (size_t i = 0; i < t.n; i++) {
            const Cityops__V1__AuditRecord *r = t.r[i];

            assert_int_equal(r->seq, i);
            assert_string_equal(r->operation, want[i].op);
            assert_string_equal(r->target, want[i].target);
            assert_int_equal(r->result, want[i].result);
            assert_int_equal(r->raft_index, want[i].raft_index);
            if (i >= 1 && i <= 11) {
                assert_int_equal(r->result, codes[i - 1]);
                assert_int_equal(r->time, T0 + (int64_t)(1 + i) * SEC);
            }
        }
    }
    /* Who, retry key and role are the command's. */
    assert_string_equal(t.r[1]->actor_id, "insp-1");
    assert_int_equal(t.r[1]->role, R(INSPECTOR));
    assert_string_equal(t.r[1]->client_id, "tablet-7");
    assert_int_equal(t.r[1]->client_seq, 3);
    assert_string_equal(t.r[6]->client_id, "tablet-7");
    assert_string_equal(t.r[3]->actor_id, "clerk-1");
    assert_int_equal(t.r[13]->role, R(AUDITOR));
    trail_free(&t);
}

static void test_records_follow_batch_results_in_order(void **state)
{
    struct fx *f = *state;
    struct cmd cmds[6];
    struct trail t;
    uint64_t id = report(f);

    cmds[0] = cmd_accept(id);
    cmds[1] = cmd_accept(id);
    cmds[2] = cmd_action(K(REJECT), id, R(INTAKE_CLERK), "clerk-1");
    cmds[3] = cmd_report(R(PUBLIC), "citizen");
    cmds[4] = cmd_accept(99);
    cmds[5] = cmd_checkpoint(R(INSPECTOR));
    apply(f, cmds, 6);
    trail_read(f, 3, &t);
    assert_int_equal(t.n, 7);
    for (size_t i = 0; i < 6; i++) {
        assert_int_equal(t.r[1 + i]->result, f->last.results[i]->code);
        assert_int_equal(t.r[1 + i]->raft_index, f->index);
    }
    trail_free(&t);
}

static void test_chain_recomputes_from_the_listed_records(void **state)
{
    struct fx *f = *state;
    uint8_t head[H];
    struct trail t;
    uint64_t id;

    for (int i = 0; i < 20; i++) {
        id = report(f);
        apply1(f, cmd_accept(id));
        apply1(f, cmd_accept(id)); /* refused */
    }
    trail_read(f, 7, &t); /* pages of 7: the token is exercised */
    assert_int_equal(t.n, 60);
    assert_int_equal(t.n_pages, 9);
    assert_int_equal(chain_first_bad(&t), UINT64_MAX);
    assert_int_equal(trail_size(f, head), 60);
    assert_memory_equal(head, t.r[59]->hash.data, H);
    for (size_t i = 0; i < H; i++) {
        assert_int_equal(t.r[0]->prev_hash.data[i], 0);
    }
    trail_free(&t);
}

static void test_two_stores_applying_the_same_log_have_equal_heads(void **state)
{
    struct fx *f = *state;
    struct fx *g = fx_new();
    struct cmd cmds[3];
    uint8_t a[H];
    uint8_t b[H];
    uint8_t da[STORE_DIGEST_SIZE];
    uint8_t db[STORE_DIGEST_SIZE];
    uint64_t id = report(f);

    cmds[0] = cmd_accept(id);
    cmds[1] = cmd_report(R(DISPATCHER), "disp-1");
    cmds[2] = cmd_checkpoint(R(SYSTEM));
    apply(f, cmds, 3);
    apply1(f, cmd_event());
    fx_replay(f, g);
    assert_int_equal(trail_size(f, a), 5);
    assert_int_equal(trail_size(g, b), 5);
    assert_memory_equal(a, b, H);
    assert_int_equal(store_digest(f->s, da, NULL), 0);
    assert_int_equal(store_digest(g->s, db, NULL), 0);
    assert_memory_equal(da, db, STORE_DIGEST_SIZE);
    /* The digest covers the trail: one more record changes it. */
    apply1(f, cmd_accept(77));
    assert_int_equal(store_digest(f->s, da, NULL), 0);
    assert_memory_not_equal(da, db, STORE_DIGEST_SIZE);
    fx_free(g);
}

static void test_before_and_after_are_sha256_of_the_stored_case(void **state)
{
    struct fx *f = *state;
    Cityops__V1__Case *reported = NULL;
    Cityops__V1__Case *accepted = NULL;
    struct trail t;
    uint64_t id = report(f);

    assert_int_equal(store_case_get(f->s, id, &reported, NULL), 0);
    apply1(f, cmd_accept(id));
    assert_int_equal(store_case_get(f->s, id, &accepted, NULL), 0);
    apply1(f, cmd_accept(id)); /* refused: unchanged */
    trail_read(f, 0, &t);
    assert_int_equal(t.n, 3);
    assert_int_equal(t.r[0]->before_sha256.len, 0); /* a new case */
    assert_hash_of(&t.r[0]->after_sha256, &reported->base);
    assert_hash_of(&t.r[1]->before_sha256, &reported->base);
    assert_hash_of(&t.r[1]->after_sha256, &accepted->base);
    assert_hash_of(&t.r[2]->before_sha256, &accepted->base);
    assert_hash_of(&t.r[2]->after_sha256, &accepted->base);
    cityops__v1__case__free_unpacked(reported, NULL);
    cityops__v1__case__free_unpacked(accepted, NULL);
    trail_free(&t);
}

static void test_absent_targets_have_empty_hashes(void **state)
{
    struct fx *f = *state;
    struct trail t;

    apply1(f, cmd_accept(5));                             /* no case 5 */
    apply1(f, cmd_report(R(DISPATCHER), "disp-1"));       /* refused */
    apply1(f, cmd_member(K(MEMBER_SET), 9, R(ADMIN)));    /* new member */
    apply1(f, cmd_member(K(MEMBER_FORGET), 9, R(ADMIN))); /* gone again */
    trail_read(f, 0, &t);
    assert_int_equal(t.n, 4);
    assert_int_equal(t.r[0]->before_sha256.len, 0);
    assert_int_equal(t.r[0]->after_sha256.len, 0);
    assert_int_equal(t.r[1]->before_sha256.len, 0);
    assert_int_equal(t.r[1]->after_sha256.len, 0);
    assert_int_equal(t.r[2]->before_sha256.len, 0);
    assert_int_equal(t.r[2]->after_sha256.len, H);
    assert_memory_equal(t.r[3]->before_sha256.data, t.r[2]->after_sha256.data,
                        H);
    assert_int_equal(t.r[3]->after_sha256.len, 0);
    trail_free(&t);
}

static void
test_replayed_retry_is_recorded_with_the_case_unchanged(void **state)
{
    struct fx *f = *state;
    struct cmd m = cmd_report(R(INSPECTOR), "insp-1");
    struct trail t;

    m.c.client_id = "tablet-1";
    m.c.seq = 1;
    apply1(f, m);
    apply1(f, m);
    assert_int_equal(f->last.results[0]->code, RC(OK));
    assert_int_equal(store_case_count(f->s), 1);
    trail_read(f, 0, &t);
    assert_int_equal(t.n, 2);
    assert_string_equal(t.r[1]->operation, "report (retry)");
    assert_string_equal(t.r[1]->target, "case/1");
    assert_memory_equal(t.r[1]->before_sha256.data, t.r[0]->after_sha256.data,
                        H);
    assert_memory_equal(t.r[1]->after_sha256.data, t.r[0]->after_sha256.data,
                        H);
    trail_free(&t);
}

/* Flip one byte of record @seq's actor_id with LMDB while the store is
 * closed. */
static void tamper(struct fx *f, uint64_t seq)
{
    MDB_env *env;
    MDB_txn *txn;
    MDB_dbi dbi;
    uint8_t key[8];
    MDB_val k = {sizeof(key), key};
    MDB_val v;
    uint8_t *copy;
    uint8_t *p;

    store_close(f->s);
    f->s = NULL;
    for (int i = 7; i >= 0; i--) {
        key[i] = (uint8_t)(seq >> (8 * (7 - i)));
    }
    assert_int_equal(mdb_env_create(&env), 0);
    assert_int_equal(mdb_env_set_maxdbs(env, 32), 0);
    assert_int_equal(mdb_env_open(env, f->dir, 0, 0644), 0);
    assert_int_equal(mdb_txn_begin(env, NULL, 0, &txn), 0);
    assert_int_equal(mdb_dbi_open(txn, "audit", 0, &dbi), 0);
    assert_int_equal(mdb_get(txn, dbi, &k, &v), 0);
    copy = malloc(v.mv_size);
    assert_non_null(copy);
    memcpy(copy, v.mv_data, v.mv_size);
    p = memmem(copy, v.mv_size, "insp-1", 6);
    assert_non_null(p);
    p[5] = '9'; /* "insp-9": still decodes, no longer hashes */
    v.mv_data = copy;
    assert_int_equal(mdb_put(txn, dbi, &k, &v, 0), 0);
    assert_int_equal(mdb_txn_commit(txn), 0);
    mdb_env_close(env);
    free(copy);
    assert_int_equal(store_open(f->dir, NULL, &f->s), 0);
}

static void test_tampered_record_breaks_the_chain_at_its_seq(void **state)
{
    struct fx *f = *state;
    struct trail t;

    for (int i = 0; i < 12; i++) {
        report(f);
    }
    trail_read(f, 0, &t);
    assert_int_equal(chain_first_bad(&t), UINT64_MAX);
    trail_free(&t);

    tamper(f, 5);
    trail_read(f, 0, &t);
    assert_int_equal(t.n, 12);
    assert_string_equal(t.r[5]->actor_id, "insp-9");
    assert_int_equal(chain_first_bad(&t), 5);
    trail_free(&t);
}

/* --- tests: the Merkle tree --- */

/* A trail of @n records: reports and accepts (some refused) in batches of
 * up to five, one command time per record (T0 + (seq + 1) s). */
static void trail_grow(struct fx *f, uint64_t n)
{
    struct cmd cmds[5];
    uint64_t size;
    size_t k;

    while ((size = trail_size(f, NULL)) < n) {
        k = n - size < 5 ? (size_t)(n - size) : 5;
        for (size_t i = 0; i < k; i++) {
            cmds[i] = i % 2 == 0 ? cmd_report(R(INSPECTOR), "insp-1")
                                 : cmd_accept(1 + i);
        }
        apply(f, cmds, k);
    }
    assert_int_equal(trail_size(f, NULL), n);
}

static void test_root_equals_reference_mth_at_every_size(void **state)
{
    struct fx *f = *state;
    uint8_t(*leaves)[H];
    uint8_t root[H];
    uint8_t want[H];
    uint64_t n;

    assert_int_equal(store_audit_root(f->s, 0, root), 0);
    ref_mth(NULL, 0, want);
    assert_memory_equal(root, want, H);
    trail_grow(f, 130);
    leaves = ref_leaves(f, &n);
    assert_int_equal(n, 130);
    for (uint64_t m = 1; m <= n; m++) {
        assert_int_equal(store_audit_root(f->s, m, root), 0);
        ref_mth(leaves, m, want);
        if (memcmp(root, want, H) != 0) {
            fail_msg("root at size %llu differs", (unsigned long long)m);
        }
    }
    assert_int_equal(store_audit_root(f->s, n + 1, root), STORE_INVALID);
    free(leaves);
}

/* The frontier kept by apply gives the same root as the leaves. */
static void test_checkpoint_root_equals_root_from_leaves(void **state)
{
    struct fx *f = *state;
    Cityops__V1__CheckpointList *list;
    uint8_t(*leaves)[H];
    uint8_t want[H];
    uint8_t root[H];
    uint64_t n;

    report(f);
    for (int i = 0; i < 70; i++) {
        /* A checkpoint at every size from 1 to 70: each appends a record. */
        apply1(f, cmd_checkpoint(R(SYSTEM)));
        assert_int_equal(f->last.results[0]->code, RC(OK));
        assert_null(f->last.results[0]->case_);
    }
    leaves = ref_leaves(f, &n);
    assert_int_equal(n, 71);
    assert_int_equal(store_checkpoint_list(f->s, &list), 0);
    assert_int_equal(list->n_checkpoints, 70);
    for (size_t i = 0; i < list->n_checkpoints; i++) {
        const Cityops__V1__Checkpoint *cp = list->checkpoints[i];

        assert_int_equal(cp->tree_size, i + 1); /* oldest first */
        ref_mth(leaves, cp->tree_size, want);
        assert_int_equal(cp->root_hash.len, H);
        assert_memory_equal(cp->root_hash.data, want, H);
        assert_int_equal(store_audit_root(f->s, cp->tree_size, root), 0);
        assert_memory_equal(root, want, H);
        assert_int_equal(cp->raft_index, i + 2);
        assert_int_equal(cp->time, T0 + (int64_t)(i + 2) * SEC);
        assert_int_equal(cp->signature.len, 0);
    }
    cityops__v1__checkpoint_list__free_unpacked(list, NULL);
    free(leaves);
}

static void test_inclusion_proofs_verify_for_every_leaf_and_size(void **state)
{
    struct fx *f = *state;
    Cityops__V1__InclusionProofResponse *p;
    uint8_t(*leaves)[H];
    uint8_t root[H];
    uint8_t leaf[H];
    uint64_t n;

    trail_grow(f, 70);
    apply1(f, cmd_checkpoint(R(ADMIN))); /* a head at 70; trail is now 71 */
    leaves = ref_leaves(f, &n);
    for (uint64_t size = 1; size <= n; size++) {
        ref_mth(leaves, size, root);
        for (uint64_t m = 0; m < size; m++) {
            assert_int_equal(store_audit_inclusion(f->s, m, size, &p), 0);
            assert_int_equal(p->tree_size, size);
            assert_non_null(p->record);
            assert_int_equal(p->record->seq, m);
            ref_leaf(p->record->hash.data, leaf);
            if (!ref_verify_inclusion(m, size, leaf, p->path, p->n_path,
                                      root)) {
                fail_msg("inclusion of %llu in %llu does not verify",
                         (unsigned long long)m, (unsigned long long)size);
            }
            if (size == 70) {
                assert_non_null(p->checkpoint);
                assert_memory_equal(p->checkpoint->root_hash.data, root, H);
            } else {
                assert_null(p->checkpoint);
            }
            /* The verifier can fail: a flipped path byte is caught. */
            if (p->n_path > 0) {
                p->path[p->n_path - 1].data[0] ^= 1;
                assert_false(ref_verify_inclusion(m, size, leaf, p->path,
                                                  p->n_path, root));
            }
            cityops__v1__inclusion_proof_response__free_unpacked(p, NULL);
        }
    }
    assert_int_equal(store_audit_inclusion(f->s, 5, 5, &p), STORE_INVALID);
    assert_int_equal(store_audit_inclusion(f->s, 0, 0, &p), STORE_INVALID);
    assert_int_equal(store_audit_inclusion(f->s, 0, n + 1, &p), STORE_INVALID);
    free(leaves);
}

static void test_consistency_proofs_verify_for_every_pair(void **state)
{
    struct fx *f = *state;
    Cityops__V1__ConsistencyProofResponse *p;
    uint8_t(*leaves)[H];
    uint8_t(*roots)[H];
    uint64_t n;

    trail_grow(f, 70);
    leaves = ref_leaves(f, &n);
    roots = malloc((n + 1) * H);
    assert_non_null(roots);
    for (uint64_t m = 0; m <= n; m++) {
        ref_mth(leaves, m, roots[m]);
    }
    for (uint64_t second = 0; second <= n; second++) {
        for (uint64_t first = 0; first <= second; first++) {
            assert_int_equal(store_audit_consistency(f->s, first, second, &p),
                             0);
            assert_int_equal(p->first, first);
            assert_int_equal(p->second, second);
            if (first == 0 || first == second) {
                assert_int_equal(p->n_path, 0);
            } else if (!ref_verify_consistency(first, second, roots[first],
                                               roots[second], p->path,
                                               p->n_path)) {
                fail_msg("consistency %llu -> %llu does not verify",
                         (unsigned long long)first, (unsigned long long)second);
            } else {
                /* The verifier can fail: a flipped byte is caught. */
                p->path[0].data[H - 1] ^= 0x80;
                assert_false(ref_verify_consistency(first, second, roots[first],
                                                    roots[second], p->path,
                                                    p->n_path));
            }
            cityops__v1__consistency_proof_response__free_unpacked(p, NULL);
        }
    }
    assert_int_equal(store_audit_consistency(f->s, 5, 4, &p), STORE_INVALID);
    assert_int_equal(store_audit_consistency(f->s, 1, n + 1, &p),
                     STORE_INVALID);
    free(roots);
    free(leaves);
}

/* --- tests: checkpoints --- */

static void test_checkpoint_covers_the_records_before_its_own(void **state)
{
    struct fx *f = *state;
    Cityops__V1__Checkpoint *cp;
    struct trail t;

    report(f);
    report(f);
    apply1(f, cmd_checkpoint(R(SYSTEM)));
    assert_int_equal(trail_size(f, NULL), 3);
    cp = checkpoint(f, 0); /* latest */
    assert_int_equal(cp->tree_size, 2);
    assert_int_equal(cp->raft_index, 3);
    trail_read(f, 0, &t);
    assert_string_equal(t.r[2]->target, "audit/checkpoint");
    assert_int_equal(t.r[2]->before_sha256.len, 0);
    assert_hash_of(&t.r[2]->after_sha256, &cp->base);
    trail_free(&t);
    cityops__v1__checkpoint__free_unpacked(cp, NULL);
    assert_int_equal(store_checkpoint_get(f->s, 3, &cp), STORE_NOTFOUND);
}

static void test_checkpoint_of_an_empty_trail_is_refused(void **state)
{
    struct fx *f = *state;
    Cityops__V1__Checkpoint *cp;
    Cityops__V1__CheckpointList *list;

    assert_int_equal(apply1(f, cmd_checkpoint(R(SYSTEM)))->code,
                     RC(FAILED_PRECONDITION));
    assert_int_equal(store_checkpoint_get(f->s, 0, &cp), STORE_NOTFOUND);
    assert_int_equal(store_checkpoint_list(f->s, &list), 0);
    assert_int_equal(list->n_checkpoints, 0);
    cityops__v1__checkpoint_list__free_unpacked(list, NULL);
    assert_int_equal(trail_size(f, NULL), 1); /* the refusal is recorded */
}

static void test_checkpoint_message_layout(void **state)
{
    Cityops__V1__Checkpoint cp = CITYOPS__V1__CHECKPOINT__INIT;
    uint8_t root[H];
    uint8_t msg[STORE_CHECKPOINT_MSG_SIZE];

    (void)state;
    for (int i = 0; i < H; i++) {
        root[i] = (uint8_t)(0xa0 + i);
    }
    cp.tree_size = 0x0102030405060708ULL;
    cp.root_hash.data = root;
    cp.root_hash.len = H;
    cp.time = -2; /* two's complement, big-endian */
    store_checkpoint_message(&cp, msg);
    assert_int_equal(sizeof(msg), 69);
    assert_memory_equal(msg, "cityops-checkpoint-v1", 21);
    assert_memory_equal(msg + 21, "\x01\x02\x03\x04\x05\x06\x07\x08", 8);
    assert_memory_equal(msg + 29, root, H);
    assert_memory_equal(msg + 61, "\xff\xff\xff\xff\xff\xff\xff\xfe", 8);
}

static void test_ed25519_signature_is_verified_and_stored(void **state)
{
    struct fx *f = *state;
    Cityops__V1__Checkpoint *cp;
    uint8_t pub[32];
    uint8_t sig[64];
    EVP_PKEY *key = ed25519_new(pub);
    struct trail t;

    report(f);
    apply1(f, cmd_checkpoint(R(SYSTEM)));
    cp = checkpoint(f, 1);
    ed25519_sign(key, cp, sig);
    cityops__v1__checkpoint__free_unpacked(cp, NULL);

    assert_int_equal(apply1(f, cmd_sign(1, sig, 64, pub, 32, R(SYSTEM)))->code,
                     RC(OK));
    assert_null(f->last.results[0]->case_);
    cp = checkpoint(f, 1);
    assert_int_equal(cp->signature.len, 64);
    assert_memory_equal(cp->signature.data, sig, 64);
    assert_int_equal(cp->public_key.len, 32);
    assert_memory_equal(cp->public_key.data, pub, 32);
    assert_true(ed25519_verify(cp));
    /* The signature's record hashes the head before and after signing. */
    trail_read(f, 0, &t);
    assert_int_equal(t.n, 3);
    assert_string_equal(t.r[2]->operation, "checkpoint_signature");
    assert_memory_equal(t.r[2]->before_sha256.data, t.r[1]->after_sha256.data,
                        H);
    assert_hash_of(&t.r[2]->after_sha256, &cp->base);
    trail_free(&t);
    cityops__v1__checkpoint__free_unpacked(cp, NULL);

    /* The same signature again changes nothing; another one is refused. */
    assert_int_equal(apply1(f, cmd_sign(1, sig, 64, pub, 32, R(SYSTEM)))->code,
                     RC(OK));
    sig[0] ^= 1;
    assert_int_equal(apply1(f, cmd_sign(1, sig, 64, pub, 32, R(SYSTEM)))->code,
                     RC(FAILED_PRECONDITION));
    cp = checkpoint(f, 1);
    assert_true(ed25519_verify(cp));
    cityops__v1__checkpoint__free_unpacked(cp, NULL);
    EVP_PKEY_free(key);
}

static size_t outbox_count(struct fx *f);

static void assert_unsigned(struct fx *f, uint64_t tree_size)
{
    Cityops__V1__Checkpoint *cp = checkpoint(f, tree_size);

    assert_int_equal(cp->signature.len, 0);
    assert_int_equal(cp->public_key.len, 0);
    cityops__v1__checkpoint__free_unpacked(cp, NULL);
}

static void
test_wrong_signature_is_refused_and_head_stays_unsigned(void **state)
{
    struct fx *f = *state;
    Cityops__V1__CommandResult *res;
    Cityops__V1__Checkpoint *cp;
    uint8_t pub[32];
    uint8_t other_pub[32];
    uint8_t sig[64];
    uint8_t other_sig[64];
    EVP_PKEY *key = ed25519_new(pub);
    EVP_PKEY *other = ed25519_new(other_pub);

    report(f);
    report(f);
    apply1(f, cmd_checkpoint(R(SYSTEM)));
    cp = checkpoint(f, 2);
    ed25519_sign(key, cp, sig);
    ed25519_sign(other, cp, other_sig);
    cityops__v1__checkpoint__free_unpacked(cp, NULL);

    sig[10] ^= 0x40; /* a flipped bit */
    res = apply1(f, cmd_sign(2, sig, 64, pub, 32, R(SYSTEM)));
    assert_int_equal(res->code, RC(INVALID_ARGUMENT));
    assert_string_equal(res->message, "signature does not verify");
    sig[10] ^= 0x40;
    /* Signed by another key but claiming ours. */
    res = apply1(f, cmd_sign(2, other_sig, 64, pub, 32, R(SYSTEM)));
    assert_int_equal(res->code, RC(INVALID_ARGUMENT));
    /* A valid signature of another size's head. */
    res = apply1(f, cmd_sign(3, sig, 64, pub, 32, R(SYSTEM)));
    assert_int_equal(res->code, RC(NOT_FOUND));
    res = apply1(f, cmd_sign(2, sig, 63, pub, 32, R(SYSTEM)));
    assert_int_equal(res->code, RC(INVALID_ARGUMENT));
    res = apply1(f, cmd_sign(2, sig, 64, pub, 31, R(SYSTEM)));
    assert_int_equal(res->code, RC(INVALID_ARGUMENT));
    assert_unsigned(f, 2);
    assert_int_equal(trail_size(f, NULL), 8); /* every refusal recorded */
    assert_int_equal(outbox_count(f), 0);     /* nothing queued for them */

    res = apply1(f, cmd_sign(2, sig, 64, pub, 32, R(ADMIN)));
    assert_int_equal(res->code, RC(OK));
    cp = checkpoint(f, 2);
    assert_true(ed25519_verify(cp));
    cityops__v1__checkpoint__free_unpacked(cp, NULL);
    EVP_PKEY_free(key);
    EVP_PKEY_free(other);
}

static size_t outbox_count(struct fx *f)
{
    Cityops__V1__OutboxMessage **rows = NULL;
    size_t n = 0;

    assert_int_equal(store_outbox_list(f->s, "parent", 0, 100, &rows, &n),
                     0);
    for (size_t i = 0; i < n; i++) {
        cityops__v1__outbox_message__free_unpacked(rows[i], NULL);
    }
    free(rows);
    return n;
}

static void test_signed_head_is_queued_for_the_parent_tier(void **state)
{
    struct fx *f = *state;
    Cityops__V1__OutboxMessage **rows = NULL;
    Cityops__V1__Checkpoint *cp;
    Cityops__V1__Checkpoint *queued;
    uint8_t pub[32];
    uint8_t sig[64];
    EVP_PKEY *key = ed25519_new(pub);
    size_t n = 0;

    for (uint64_t size = 1; size <= 4; size += 3) {
        report(f);
        apply1(f, cmd_checkpoint(R(SYSTEM)));
        cp = checkpoint(f, size);
        ed25519_sign(key, cp, sig);
        cityops__v1__checkpoint__free_unpacked(cp, NULL);
        assert_int_equal(
            apply1(f, cmd_sign(size, sig, 64, pub, 32, R(SYSTEM)))->code,
            RC(OK));
    }
    /* The same signature again queues nothing more. */
    assert_int_equal(apply1(f, cmd_sign(4, sig, 64, pub, 32, R(SYSTEM)))->code,
                     RC(OK));
    assert_int_equal(store_outbox_list(f->s, "parent", 0, 100, &rows, &n),
                     0);
    assert_int_equal(n, 2);
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(rows[i]->seq, i + 1);
        assert_string_equal(rows[i]->kind, "audit_checkpoint");
        queued = cityops__v1__checkpoint__unpack(NULL, rows[i]->payload.len,
                                                 rows[i]->payload.data);
        assert_non_null(queued);
        assert_int_equal(queued->tree_size, i == 0 ? 1 : 4);
        assert_true(ed25519_verify(queued));
        cityops__v1__checkpoint__free_unpacked(queued, NULL);
        cityops__v1__outbox_message__free_unpacked(rows[i], NULL);
    }
    free(rows);
    /* Reading after seq 1 gives the second row only. */
    assert_int_equal(store_outbox_list(f->s, "parent", 1, 100, &rows, &n),
                     0);
    assert_int_equal(n, 1);
    assert_int_equal(rows[0]->seq, 2);
    cityops__v1__outbox_message__free_unpacked(rows[0], NULL);
    free(rows);
    EVP_PKEY_free(key);
}

static void test_checkpoint_commands_need_system_admin_or_auditor(void **state)
{
    struct fx *f = *state;
    static const Cityops__V1__Role denied[] = {
        R(UNSPECIFIED), R(INSPECTOR),  R(INTAKE_CLERK), R(SHIFT_LEADER),
        R(DISPATCHER),  R(DEPARTMENT), R(PUBLIC),
    };
    Cityops__V1__Checkpoint *cp;
    uint8_t pub[32];
    uint8_t sig[64];
    EVP_PKEY *key = ed25519_new(pub);
    size_t n = sizeof(denied) / sizeof(denied[0]);

    report(f);
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(apply1(f, cmd_checkpoint(denied[i]))->code,
                         RC(PERMISSION_DENIED));
    }
    assert_int_equal(store_checkpoint_get(f->s, 0, &cp), STORE_NOTFOUND);
    assert_int_equal(apply1(f, cmd_checkpoint(R(AUDITOR)))->code, RC(OK));
    cp = checkpoint(f, 0);
    assert_int_equal(cp->tree_size, 1 + n);
    ed25519_sign(key, cp, sig);
    cityops__v1__checkpoint__free_unpacked(cp, NULL);
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(
            apply1(f, cmd_sign(1 + n, sig, 64, pub, 32, denied[i]))->code,
            RC(PERMISSION_DENIED));
    }
    assert_unsigned(f, 1 + n);
    assert_int_equal(apply1(f, cmd_checkpoint(R(ADMIN)))->code, RC(OK));
    assert_int_equal(apply1(f, cmd_checkpoint(R(SYSTEM)))->code, RC(OK));
    assert_int_equal(
        apply1(f, cmd_sign(1 + n, sig, 64, pub, 32, R(AUDITOR)))->code, RC(OK));
    EVP_PKEY_free(key);
}

/* --- tests: listing --- */

static size_t list_count(struct fx *f,
                         Cityops__V1__AuditListRequest *req,
                         uint64_t *first_seq)
{
    Cityops__V1__AuditListResponse *resp;
    size_t n;

    assert_int_equal(store_audit_list(f->s, req, &resp), 0);
    n = resp->n_records;
    if (first_seq != NULL && n > 0) {
        *first_seq = resp->records[0]->seq;
    }
    cityops__v1__audit_list_response__free_unpacked(resp, NULL);
    return n;
}

static void test_list_filters_pages_and_caps(void **state)
{
    struct fx *f = *state;
    Cityops__V1__AuditListRequest req = CITYOPS__V1__AUDIT_LIST_REQUEST__INIT;
    Cityops__V1__AuditListResponse *resp;
    uint64_t first = 0;

    trail_grow(f, 1100); /* reports by insp-1, accepts by clerk-1 */
    assert_int_equal(list_count(f, &req, NULL), 100); /* default page */
    req.page_size = 5000;
    assert_int_equal(list_count(f, &req, NULL), 1000); /* capped */

    req.page_size = 0;
    req.target = "case/2"; /* reported, then accepted again and again */
    assert_int_equal(store_audit_list(f->s, &req, &resp), 0);
    assert_true(resp->n_records >= 2);
    assert_int_equal(resp->tree_size, 1100);
    for (size_t i = 0; i < resp->n_records; i++) {
        assert_string_equal(resp->records[i]->target, "case/2");
    }
    cityops__v1__audit_list_response__free_unpacked(resp, NULL);

    req.target = "";
    req.actor_id = "clerk-1";
    req.page_size = 1000;
    assert_int_equal(store_audit_list(f->s, &req, &resp), 0);
    for (size_t i = 0; i < resp->n_records; i++) {
        assert_string_equal(resp->records[i]->actor_id, "clerk-1");
        assert_string_equal(resp->records[i]->operation, "accept");
    }
    cityops__v1__audit_list_response__free_unpacked(resp, NULL);

    /* Time: [from, to) in command times T0 + (seq+1) s, one per record. */
    req.actor_id = "";
    req.from_time = T0 + 11 * SEC;
    req.to_time = T0 + 21 * SEC;
    assert_int_equal(list_count(f, &req, &first), 10);
    assert_int_equal(first, 10);

    req.from_time = 0;
    req.to_time = 0;
    req.from_seq = 1095;
    assert_int_equal(list_count(f, &req, &first), 5);
    assert_int_equal(first, 1095);
    req.from_seq = 5000;
    assert_int_equal(list_count(f, &req, NULL), 0);

    req.from_seq = 0;
    req.page_token = "12x";
    assert_int_equal(store_audit_list(f->s, &req, &resp), STORE_INVALID);
    req.page_token = "99999999999999999999999";
    assert_int_equal(store_audit_list(f->s, &req, &resp), STORE_INVALID);
    req.page_token = "1098";
    assert_int_equal(list_count(f, &req, &first), 2);
    assert_int_equal(first, 1098);
}

static void test_page_token_names_the_next_match(void **state)
{
    struct fx *f = *state;
    Cityops__V1__AuditListRequest req = CITYOPS__V1__AUDIT_LIST_REQUEST__INIT;
    Cityops__V1__AuditListResponse *resp;

    for (int i = 0; i < 4; i++) {
        report(f);                   /* seq 0, 2, 4, 6: insp-1 */
        apply1(f, cmd_accept(1000)); /* seq 1, 3, 5, 7: refused */
    }
    req.actor_id = "insp-1";
    req.page_size = 2;
    assert_int_equal(store_audit_list(f->s, &req, &resp), 0);
    assert_int_equal(resp->n_records, 2);
    assert_string_equal(resp->next_page_token, "4");
    cityops__v1__audit_list_response__free_unpacked(resp, NULL);
    req.page_token = "4";
    assert_int_equal(store_audit_list(f->s, &req, &resp), 0);
    assert_int_equal(resp->n_records, 2);
    assert_int_equal(resp->records[1]->seq, 6);
    assert_string_equal(resp->next_page_token, ""); /* no match left */
    cityops__v1__audit_list_response__free_unpacked(resp, NULL);
}

static void test_trail_survives_close_and_reopen(void **state)
{
    struct fx *f = *state;
    uint8_t a[H];
    uint8_t b[H];
    uint8_t root[H];
    uint8_t want[H];
    uint8_t(*leaves)[H];
    uint64_t n;

    trail_grow(f, 11);
    assert_int_equal(trail_size(f, a), 11);
    store_close(f->s);
    assert_int_equal(store_open(f->dir, NULL, &f->s), 0);
    assert_int_equal(trail_size(f, b), 11);
    assert_memory_equal(a, b, H);
    trail_grow(f, 23); /* the frontier reloaded from disk keeps growing */
    apply1(f, cmd_checkpoint(R(SYSTEM)));
    leaves = ref_leaves(f, &n);
    ref_mth(leaves, 23, want);
    {
        Cityops__V1__Checkpoint *cp = checkpoint(f, 23);
        assert_memory_equal(cp->root_hash.data, want, H);
        cityops__v1__checkpoint__free_unpacked(cp, NULL);
    }
    assert_int_equal(store_audit_root(f->s, 23, root), 0);
    assert_memory_equal(root, want, H);
    free(leaves);
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_every_command_appends_exactly_one_record),
        T(test_records_follow_batch_results_in_order),
        T(test_chain_recomputes_from_the_listed_records),
        T(test_two_stores_applying_the_same_log_have_equal_heads),
        T(test_before_and_after_are_sha256_of_the_stored_case),
        T(test_absent_targets_have_empty_hashes),
        T(test_replayed_retry_is_recorded_with_the_case_unchanged),
        T(test_tampered_record_breaks_the_chain_at_its_seq),
        T(test_root_equals_reference_mth_at_every_size),
        T(test_checkpoint_root_equals_root_from_leaves),
        T(test_inclusion_proofs_verify_for_every_leaf_and_size),
        T(test_consistency_proofs_verify_for_every_pair),
        T(test_checkpoint_covers_the_records_before_its_own),
        T(test_checkpoint_of_an_empty_trail_is_refused),
        cmocka_unit_test(test_checkpoint_message_layout),
        T(test_ed25519_signature_is_verified_and_stored),
        T(test_wrong_signature_is_refused_and_head_stays_unsigned),
        T(test_signed_head_is_queued_for_the_parent_tier),
        T(test_checkpoint_commands_need_system_admin_or_auditor),
        T(test_list_filters_pages_and_caps),
        T(test_page_token_names_the_next_match),
        T(test_trail_survives_close_and_reopen),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
