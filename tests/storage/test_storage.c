/* Unit tests of storage/ through store.h: the case state machine, apply
 * (de-duplication, skipping, undecodable batches), reads, digests,
 * snapshots and environment failures.
 *
 * Every test opens LMDB in a fresh mkdtemp() directory and removes it
 * afterwards. Commands are built from `struct op` (a legal default per
 * operation, then tweaked), packed into CommandBatches and applied at
 * increasing Raft indexes; the fixture keeps the applied log so that a twin
 * environment can replay it and compare digests.
 */
#include <dirent.h>
#include <math.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <lmdb.h>
#include <openssl/evp.h>

#include "storage/store.h"

#define T0 1700000000000000LL /* 2023-11-14T22:13:20Z */
#define SEC 1000000LL
#define MAX_ATT 40

typedef Cityops__V1__Command__OpCase op_kind;

#define K(x) CITYOPS__V1__COMMAND__OP_##x
#define R(x) CITYOPS__V1__ROLE__ROLE_##x
#define S(x) CITYOPS__V1__CASE_STATE__CASE_STATE_##x
#define RC(x) CITYOPS__V1__RESULT_CODE__RESULT_##x
#define EV(x) CITYOPS__V1__CASE_EVENT_TYPE__CASE_EVENT_##x

static const char SHA[] =
    "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

/* One command, described by the fields tests care about. */
struct op {
    op_kind kind;
    Cityops__V1__Role role;
    const char *actor;
    uint64_t case_id;
    const char *reason;
    const char *who; /* department_id (dispatch) or inspector_id */
    int flag;        /* found / passed / approve */
    int64_t until;   /* extension until; dispatch deadline */
    uint64_t into;
    Cityops__V1__ClosureType closure;
    int n_att;
    const char *sha;
    Cityops__V1__CaseSource source;
    Cityops__V1__CategoryType category;
    const char *major;
    const char *minor;
    const char *grid;
    const char *description;
    double lon;
    double lat;
    const char *client_id;
    uint64_t seq;
    int64_t time; /* 0: the fixture's next time */
};

struct logged {
    uint64_t index;
    void *buf;
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

/* Fixture. */

static void dir_remove(const char *dir)
{
    char path[512];
    struct dirent *de;
    DIR *d = opendir(dir);

    if (d != NULL) {
        while ((de = readdir(d)) != NULL) {
            if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0) {
                continue;
            }
            snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
            unlink(path);
        }
        closedir(d);
    }
    rmdir(dir);
}

static struct fx *fx_new(size_t map_size)
{
    struct store_options opts = {.map_size = map_size};
    struct fx *f = calloc(1, sizeof(*f));

    assert_non_null(f);
    strcpy(f->dir, "/tmp/cityops-storage-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    assert_int_equal(store_open(f->dir, &opts, &f->s), 0);
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
    *state = fx_new(0);
    return 0;
}

static int teardown(void **state)
{
    fx_free(*state);
    return 0;
}

/* Apply raw bytes at @index; results land in f->last, the batch in the log. */
static int
fx_apply_raw(struct fx *f, uint64_t index, const void *buf, size_t len)
{
    struct logged *l;
    int rv;

    store_results_free(&f->last);
    rv = store_apply_batch(f->s, index, buf, len, &f->last);
    if (rv == 0 && !f->last.skipped) {
        l = realloc(f->log, (f->n_log + 1) * sizeof(*l));
        assert_non_null(l);
        f->log = l;
        l[f->n_log].index = index;
        l[f->n_log].buf = malloc(len > 0 ? len : 1);
        assert_non_null(l[f->n_log].buf);
        memcpy(l[f->n_log].buf, buf, len);
        l[f->n_log].len = len;
        f->n_log++;
    }
    return rv;
}

/* Replay f's log into g. */
static void fx_replay(struct fx *f, struct fx *g)
{
    for (size_t i = 0; i < f->n_log; i++) {
        assert_int_equal(
            fx_apply_raw(g, f->log[i].index, f->log[i].buf, f->log[i].len), 0);
        g->index = f->log[i].index;
    }
    g->time = f->time;
}

/* Commands. */

static struct op op_of(op_kind kind, uint64_t case_id)
{
    struct op o = {0};

    o.kind = kind;
    o.case_id = case_id;
    o.n_att = 0;
    switch (kind) {
    case K(REPORT):
        o.role = R(INSPECTOR);
        o.actor = "insp-1";
        o.category = CITYOPS__V1__CATEGORY_TYPE__CATEGORY_TYPE_EVENT;
        o.major = "01";
        o.minor = "02";
        o.grid = "11010100100101";
        o.description = "overflowing bin";
        o.lon = 116.4;
        o.lat = 39.9;
        o.n_att = 1;
        break;
    case K(REQUEST_VERIFY):
        o.role = R(INTAKE_CLERK);
        o.actor = "clerk-1";
        o.who = "insp-1";
        break;
    case K(VERIFY_RESULT):
        o.role = R(INSPECTOR);
        o.actor = "insp-1";
        o.flag = 1;
        o.n_att = 1;
        break;
    case K(ACCEPT):
        o.role = R(INTAKE_CLERK);
        o.actor = "clerk-1";
        break;
    case K(REGISTER):
        o.role = R(SHIFT_LEADER);
        o.actor = "leader-1";
        break;
    case K(REJECT):
        o.role = R(INTAKE_CLERK);
        o.actor = "clerk-1";
        o.reason = "outside scope";
        break;
    case K(MERGE):
        o.role = R(SHIFT_LEADER);
        o.actor = "leader-1";
        break;
    case K(VOID):
        o.role = R(SHIFT_LEADER);
        o.actor = "leader-1";
        o.reason = "test record";
        break;
    case K(DISPATCH):
        o.role = R(DISPATCHER);
        o.actor = "disp-1";
        o.who = "dept-water";
        break;
    case K(START_DISPOSAL):
        o.role = R(DEPARTMENT);
        o.actor = "dept-actor";
        break;
    case K(RETURN):
        o.role = R(DEPARTMENT);
        o.actor = "dept-actor";
        o.reason = "not ours";
        break;
    case K(REDISPATCH):
        o.role = R(DISPATCHER);
        o.actor = "disp-1";
        o.who = "dept-roads";
        break;
    case K(REPORT_DISPOSAL):
        o.role = R(DEPARTMENT);
        o.actor = "dept-actor";
        o.n_att = 1;
        break;
    case K(REQUEST_EXTENSION):
        o.role = R(DEPARTMENT);
        o.actor = "dept-actor";
        o.reason = "parts on order";
        o.until = T0 + 1000000 * SEC;
        break;
    case K(DECIDE_EXTENSION):
        o.role = R(SHIFT_LEADER);
        o.actor = "leader-1";
        o.flag = 1;
        break;
    case K(REQUEST_CHECK):
        o.role = R(DISPATCHER);
        o.actor = "disp-1";
        o.who = "insp-2";
        break;
    case K(CHECK):
        o.role = R(INSPECTOR);
        o.actor = "insp-2";
        o.flag = 1;
        o.n_att = 1;
        break;
    case K(REWORK):
        o.role = R(SHIFT_LEADER);
        o.actor = "leader-1";
        break;
    case K(CLOSE):
        o.role = R(SHIFT_LEADER);
        o.actor = "leader-1";
        break;
    case K(SHELVE):
        o.role = R(SHIFT_LEADER);
        o.actor = "leader-1";
        o.reason = "no funds";
        break;
    case K(UNSHELVE):
        o.role = R(SHIFT_LEADER);
        o.actor = "leader-1";
        break;
    default:
        break;
    }
    return o;
}

/* Storage for one command's protobuf-c messages (they borrow from op). */
struct cmd_buf {
    Cityops__V1__Command cmd;
    Cityops__V1__ReportRequest report;
    Cityops__V1__Location loc;
    Cityops__V1__CaseActionRequest action;
    Cityops__V1__RequestVerifyRequest rverify;
    Cityops__V1__VerifyResultRequest verify;
    Cityops__V1__RegisterRequest reg;
    Cityops__V1__MergeRequest merge;
    Cityops__V1__DispatchRequest dispatch;
    Cityops__V1__ReportDisposalRequest disposal;
    Cityops__V1__RequestExtensionRequest rext;
    Cityops__V1__DecideExtensionRequest dext;
    Cityops__V1__RequestCheckRequest rcheck;
    Cityops__V1__CheckRequest check;
    Cityops__V1__CloseRequest close;
    Cityops__V1__Attachment att[MAX_ATT];
    Cityops__V1__Attachment *attp[MAX_ATT];
};

#define STR(x) ((char *)((x) != NULL ? (x) : ""))

static void action_build(struct cmd_buf *b, const struct op *o)
{
    cityops__v1__case_action_request__init(&b->action);
    b->action.case_id = o->case_id;
    b->action.reason = STR(o->reason);
}

static void cmd_build(struct fx *f, const struct op *o, struct cmd_buf *b)
{
    Cityops__V1__Command *c = &b->cmd;
    size_t n_att = o->n_att > 0 ? (size_t)o->n_att : 0;

    assert_true(n_att <= MAX_ATT);
    cityops__v1__command__init(c);
    c->time = o->time != 0 ? o->time : (f->time += SEC);
    c->actor_id = STR(o->actor);
    c->role = o->role;
    c->client_id = STR(o->client_id);
    c->seq = o->seq;
    c->op_case = o->kind;
    for (size_t i = 0; i < n_att; i++) {
        cityops__v1__attachment__init(&b->att[i]);
        b->att[i].sha256 = STR(o->sha != NULL ? o->sha : SHA);
        b->att[i].uri = "s3://evidence/photo.jpg";
        b->att[i].media_type = "image/jpeg";
        b->attp[i] = &b->att[i];
    }
    switch (o->kind) {
    case K(REPORT):
        cityops__v1__report_request__init(&b->report);
        cityops__v1__location__init(&b->loc);
        b->loc.lon = o->lon;
        b->loc.lat = o->lat;
        b->loc.grid_code = STR(o->grid);
        b->report.source = o->source;
        b->report.category_type = o->category;
        b->report.major_code = STR(o->major);
        b->report.minor_code = STR(o->minor);
        b->report.description = STR(o->description);
        b->report.location = &b->loc;
        b->report.n_attachments = n_att;
        b->report.attachments = b->attp;
        c->report = &b->report;
        break;
    case K(REQUEST_VERIFY):
        cityops__v1__request_verify_request__init(&b->rverify);
        b->rverify.case_id = o->case_id;
        b->rverify.inspector_id = STR(o->who);
        c->request_verify = &b->rverify;
        break;
    case K(VERIFY_RESULT):
        cityops__v1__verify_result_request__init(&b->verify);
        b->verify.case_id = o->case_id;
        b->verify.found = o->flag;
        b->verify.reason = STR(o->reason);
        b->verify.n_attachments = n_att;
        b->verify.attachments = b->attp;
        c->verify_result = &b->verify;
        break;
    case K(REGISTER):
        cityops__v1__register_request__init(&b->reg);
        b->reg.case_id = o->case_id;
        b->reg.category_type = o->category;
        b->reg.major_code = STR(o->major);
        b->reg.minor_code = STR(o->minor);
        b->reg.condition = "cover missing";
        c->register_ = &b->reg;
        break;
    case K(MERGE):
        cityops__v1__merge_request__init(&b->merge);
        b->merge.case_id = o->case_id;
        b->merge.into_case_id = o->into;
        b->merge.reason = STR(o->reason);
        c->merge = &b->merge;
        break;
    case K(DISPATCH):
    case K(REDISPATCH):
        cityops__v1__dispatch_request__init(&b->dispatch);
        b->dispatch.case_id = o->case_id;
        b->dispatch.department_id = STR(o->who);
        b->dispatch.level = CITYOPS__V1__DISPATCH_LEVEL__DISPATCH_LEVEL_CITY;
        b->dispatch.disposal_deadline = o->until;
        b->dispatch.reason = STR(o->reason);
        c->dispatch = &b->dispatch; /* same union slot as redispatch */
        break;
    case K(REPORT_DISPOSAL):
        cityops__v1__report_disposal_request__init(&b->disposal);
        b->disposal.case_id = o->case_id;
        b->disposal.n_attachments = n_att;
        b->disposal.attachments = b->attp;
        b->disposal.note = STR(o->reason);
        c->report_disposal = &b->disposal;
        break;
    case K(REQUEST_EXTENSION):
        cityops__v1__request_extension_request__init(&b->rext);
        b->rext.case_id = o->case_id;
        b->rext.until = o->until;
        b->rext.reason = STR(o->reason);
        c->request_extension = &b->rext;
        break;
    case K(DECIDE_EXTENSION):
        cityops__v1__decide_extension_request__init(&b->dext);
        b->dext.case_id = o->case_id;
        b->dext.approve = o->flag;
        b->dext.until = o->until;
        b->dext.reason = STR(o->reason);
        c->decide_extension = &b->dext;
        break;
    case K(REQUEST_CHECK):
        cityops__v1__request_check_request__init(&b->rcheck);
        b->rcheck.case_id = o->case_id;
        b->rcheck.inspector_id = STR(o->who);
        c->request_check = &b->rcheck;
        break;
    case K(CHECK):
        cityops__v1__check_request__init(&b->check);
        b->check.case_id = o->case_id;
        b->check.passed = o->flag;
        b->check.n_attachments = n_att;
        b->check.attachments = b->attp;
        b->check.note = STR(o->reason);
        c->check = &b->check;
        break;
    case K(CLOSE):
        cityops__v1__close_request__init(&b->close);
        b->close.case_id = o->case_id;
        b->close.closure_type = o->closure;
        b->close.reason = STR(o->reason);
        c->close = &b->close;
        break;
    default: /* every CaseActionRequest op */
        action_build(b, o);
        c->accept = &b->action; /* same union slot for all of them */
        break;
    }
}

static void *
batch_pack(struct fx *f, const struct op *ops, size_t n, size_t *len)
{
    Cityops__V1__CommandBatch batch = CITYOPS__V1__COMMAND_BATCH__INIT;
    struct cmd_buf *bufs = calloc(n, sizeof(*bufs));
    Cityops__V1__Command **cmds = calloc(n, sizeof(*cmds));
    void *out;

    assert_non_null(bufs);
    assert_non_null(cmds);
    for (size_t i = 0; i < n; i++) {
        cmd_build(f, &ops[i], &bufs[i]);
        cmds[i] = &bufs[i].cmd;
    }
    batch.n_commands = n;
    batch.commands = cmds;
    *len = cityops__v1__command_batch__get_packed_size(&batch);
    out = malloc(*len > 0 ? *len : 1);
    assert_non_null(out);
    cityops__v1__command_batch__pack(&batch, out);
    free(cmds);
    free(bufs);
    return out;
}

/* Apply @ops as one batch at the next index; returns store_apply_batch's
 * code. Results stay in f->last until the next apply. */
static int fx_try(struct fx *f, const struct op *ops, size_t n)
{
    size_t len;
    void *buf = batch_pack(f, ops, n, &len);
    int rv = fx_apply_raw(f, f->index + 1, buf, len);

    if (rv == 0) {
        f->index++;
    }
    free(buf);
    return rv;
}

static void fx_batch(struct fx *f, const struct op *ops, size_t n)
{
    assert_int_equal(fx_try(f, ops, n), 0);
    assert_int_equal(f->last.n, n);
}

static Cityops__V1__CommandResult *run(struct fx *f, struct op o)
{
    fx_batch(f, &o, 1);
    return f->last.results[0];
}

static const char *code_name(int code)
{
    const ProtobufCEnumValue *v = protobuf_c_enum_descriptor_get_value(
        &cityops__v1__result_code__descriptor, code);

    return v != NULL ? v->name : "?";
}

#define assert_code(res, want)                                                 \
    do {                                                                       \
        const Cityops__V1__CommandResult *res_ = (res);                        \
        if ((int)res_->code != (int)(want)) {                                  \
            fail_msg("result %s (%s), want %s", code_name(res_->code),         \
                     res_->message, code_name(want));                          \
        }                                                                      \
    } while (0)

static Cityops__V1__CommandResult *run_ok(struct fx *f, struct op o)
{
    Cityops__V1__CommandResult *res = run(f, o);

    assert_code(res, RC(OK));
    assert_non_null(res->case_);
    return res;
}

static uint64_t report(struct fx *f)
{
    return run_ok(f, op_of(K(REPORT), 0))->case_->case_id;
}

static Cityops__V1__Case *get(struct fx *f, uint64_t id)
{
    Cityops__V1__Case *c = NULL;

    assert_int_equal(store_case_get(f->s, id, &c, NULL), 0);
    return c;
}

static Cityops__V1__CaseState state_of(struct fx *f, uint64_t id)
{
    Cityops__V1__Case *c = get(f, id);
    Cityops__V1__CaseState st = c->state;

    cityops__v1__case__free_unpacked(c, NULL);
    return st;
}

static void digest(struct fx *f, uint8_t out[STORE_DIGEST_SIZE])
{
    assert_int_equal(store_digest(f->s, out, NULL), 0);
}

/* Drive a new case into @st with one batch; returns its id. */
static uint64_t make_case_in(struct fx *f, Cityops__V1__CaseState st)
{
    uint64_t id = store_case_count(f->s) + 1;
    struct op ops[16];
    size_t n = 0;
    struct op o;

    if (st == S(MERGED)) {
        ops[n++] = op_of(K(REPORT), 0); /* the survivor: id */
        id++;
    }
    ops[n++] = op_of(K(REPORT), 0);
    switch (st) {
    case S(VERIFYING):
        ops[n++] = op_of(K(REQUEST_VERIFY), id);
        break;
    case S(REJECTED):
        ops[n++] = op_of(K(REJECT), id);
        break;
    case S(VOIDED):
        ops[n++] = op_of(K(VOID), id);
        break;
    case S(MERGED):
        o = op_of(K(MERGE), id);
        o.into = id - 1;
        ops[n++] = o;
        break;
    case S(REPORTED):
        break;
    default:
        ops[n++] = op_of(K(ACCEPT), id);
        break;
    }
    if (st == S(REGISTERED) || st == S(DISPATCHED) || st == S(IN_DISPOSAL) ||
        st == S(RETURNED) || st == S(DISPOSED) || st == S(CHECKING) ||
        st == S(CHECKED) || st == S(SHELVED) || st == S(CLOSED)) {
        ops[n++] = op_of(K(REGISTER), id);
    }
    if (st == S(SHELVED)) {
        ops[n++] = op_of(K(SHELVE), id);
    }
    if (st == S(DISPATCHED) || st == S(IN_DISPOSAL) || st == S(RETURNED) ||
        st == S(DISPOSED) || st == S(CHECKING) || st == S(CHECKED) ||
        st == S(CLOSED)) {
        ops[n++] = op_of(K(DISPATCH), id);
    }
    if (st == S(RETURNED)) {
        ops[n++] = op_of(K(RETURN), id);
    }
    if (st == S(IN_DISPOSAL) || st == S(DISPOSED) || st == S(CHECKING) ||
        st == S(CHECKED) || st == S(CLOSED)) {
        ops[n++] = op_of(K(START_DISPOSAL), id);
    }
    if (st == S(DISPOSED) || st == S(CHECKING) || st == S(CHECKED) ||
        st == S(CLOSED)) {
        ops[n++] = op_of(K(REPORT_DISPOSAL), id);
    }
    if (st == S(CHECKING) || st == S(CHECKED) || st == S(CLOSED)) {
        ops[n++] = op_of(K(REQUEST_CHECK), id);
    }
    if (st == S(CHECKED) || st == S(CLOSED)) {
        o = op_of(K(CHECK), id);
        o.flag = 0; /* failed: REWORK is legal, CLOSE needs SPECIAL */
        ops[n++] = o;
    }
    if (st == S(CLOSED)) {
        o = op_of(K(CLOSE), id);
        o.closure = CITYOPS__V1__CLOSURE_TYPE__CLOSURE_TYPE_SPECIAL;
        o.reason = "solved by project";
        ops[n++] = o;
    }
    fx_batch(f, ops, n);
    for (size_t i = 0; i < n; i++) {
        assert_code(f->last.results[i], RC(OK));
    }
    assert_int_equal(state_of(f, id), st);
    return id;
}

/* SHA-256 over every named database except the audit trail's (audit,
 * checkpoints, audit_tree), read with LMDB directly while f's store is
 * closed. The trail records refusals too, so this is the state a refused
 * command must leave as it was. */
static void state_digest(struct fx *f, uint8_t out[STORE_DIGEST_SIZE])
{
    static const char *const skip[] = {"audit", "checkpoints", "audit_tree"};
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    MDB_env *env;
    MDB_txn *txn;
    MDB_cursor *names;
    MDB_cursor *cur;
    MDB_dbi main_dbi;
    MDB_dbi dbi;
    MDB_val k, v, dk, dv;
    char name[64];
    int skipped;
    int rc;

    store_close(f->s);
    f->s = NULL;
    assert_non_null(md);
    assert_int_equal(EVP_DigestInit_ex(md, EVP_sha256(), NULL), 1);
    assert_int_equal(mdb_env_create(&env), 0);
    assert_int_equal(mdb_env_set_maxdbs(env, 32), 0);
    assert_int_equal(mdb_env_open(env, f->dir, MDB_RDONLY, 0644), 0);
    assert_int_equal(mdb_txn_begin(env, NULL, MDB_RDONLY, &txn), 0);
    assert_int_equal(mdb_dbi_open(txn, NULL, 0, &main_dbi), 0);
    assert_int_equal(mdb_cursor_open(txn, main_dbi, &names), 0);
    for (rc = mdb_cursor_get(names, &k, &v, MDB_FIRST); rc == 0;
         rc = mdb_cursor_get(names, &k, &v, MDB_NEXT)) {
        assert_true(k.mv_size < sizeof(name));
        memcpy(name, k.mv_data, k.mv_size);
        name[k.mv_size] = '\0';
        skipped = 0;
        for (size_t i = 0; i < sizeof(skip) / sizeof(skip[0]); i++) {
            skipped |= strcmp(name, skip[i]) == 0;
        }
        if (skipped) {
            continue;
        }
        assert_int_equal(mdb_dbi_open(txn, name, 0, &dbi), 0);
        EVP_DigestUpdate(md, name, k.mv_size + 1);
        assert_int_equal(mdb_cursor_open(txn, dbi, &cur), 0);
        while (mdb_cursor_get(cur, &dk, &dv, MDB_NEXT) == 0) {
            uint64_t lens[2] = {dk.mv_size, dv.mv_size};
            EVP_DigestUpdate(md, lens, sizeof(lens));
            EVP_DigestUpdate(md, dk.mv_data, dk.mv_size);
            EVP_DigestUpdate(md, dv.mv_data, dv.mv_size);
        }
        mdb_cursor_close(cur);
    }
    assert_int_equal(rc, MDB_NOTFOUND);
    mdb_cursor_close(names);
    mdb_txn_abort(txn);
    mdb_env_close(env);
    assert_int_equal(EVP_DigestFinal_ex(md, out, NULL), 1);
    EVP_MD_CTX_free(md);
    assert_int_equal(store_open(f->dir, NULL, &f->s), 0);
}

static uint64_t audit_size(struct fx *f)
{
    uint8_t head[STORE_HASH_SIZE];
    uint64_t size = 0;

    assert_int_equal(store_audit_head(f->s, &size, head), 0);
    return size;
}

/* A twin environment that replays f's log, then records index f->index + 1
 * with an undecodable batch; f applies @o there with f's last time (so
 * last_time does not move). Equal digests of everything but the audit trail
 * prove @o stored nothing; the trail gained exactly @o's record. */
static void assert_refused_changes_nothing(struct fx *f,
                                           struct op o,
                                           Cityops__V1__ResultCode code)
{
    struct fx *g = fx_new(0);
    uint8_t a[STORE_DIGEST_SIZE];
    uint8_t b[STORE_DIGEST_SIZE];
    static const uint8_t junk[] = {0xff, 0xff, 0xff};

    fx_replay(f, g);
    o.time = f->time;
    assert_code(run(f, o), code);
    assert_int_equal(fx_apply_raw(g, f->index, junk, sizeof(junk)), 0);
    assert_int_equal(audit_size(f), audit_size(g) + 1);
    state_digest(f, a);
    state_digest(g, b);
    assert_memory_equal(a, b, STORE_DIGEST_SIZE);
    fx_free(g);
}

/* REPORT. */

static void test_report_numbers_cases_and_stamps_the_command_time(void **state)
{
    struct fx *f = *state;
    struct op o = op_of(K(REPORT), 0);
    Cityops__V1__CommandResult *res;
    Cityops__V1__Case *c;

    /* 2024-03-01T17:30:00Z is already 2024-03-02 in UTC+8. */
    o.time = 1709314200LL * SEC;
    res = run_ok(f, o);
    c = res->case_;
    assert_int_equal(c->case_id, 1);
    assert_string_equal(c->tracking_no, "CO-20240302-000001");
    assert_int_equal(c->state, S(REPORTED));
    assert_int_equal(c->times->reported, o.time);
    assert_int_equal(c->times->updated, o.time);
    assert_int_equal(c->source,
                     CITYOPS__V1__CASE_SOURCE__CASE_SOURCE_INSPECTOR);
    assert_string_equal(c->reporter_id, "insp-1");
    assert_string_equal(c->location->grid_code, "11010100100101");
    assert_int_equal(c->n_attachments, 1);
    assert_int_equal(c->event_count, 1);
    assert_int_equal(c->last_index, 1);
    assert_int_equal(res->index, 1);
    assert_int_equal(store_last_time(f->s), o.time);
    assert_int_equal(store_applied_index(f->s), 1);

    c = get(f, 1);
    assert_int_equal(c->times->reported, o.time);
    cityops__v1__case__free_unpacked(c, NULL);
    assert_int_equal(report(f), 2);
    assert_int_equal(store_case_count(f->s), 2);
}

static void test_report_source_follows_role_unless_given(void **state)
{
    struct fx *f = *state;
    static const struct {
        Cityops__V1__Role role;
        Cityops__V1__CaseSource given;
        Cityops__V1__CaseSource want;
    } cases[] = {
        {R(INSPECTOR), 0, CITYOPS__V1__CASE_SOURCE__CASE_SOURCE_INSPECTOR},
        {R(PUBLIC), 0, CITYOPS__V1__CASE_SOURCE__CASE_SOURCE_PUBLIC},
        {R(INTAKE_CLERK), 0, CITYOPS__V1__CASE_SOURCE__CASE_SOURCE_HOTLINE},
        {R(SYSTEM), 0, CITYOPS__V1__CASE_SOURCE__CASE_SOURCE_IOT_ALARM},
        {R(SYSTEM), CITYOPS__V1__CASE_SOURCE__CASE_SOURCE_UPPER_TIER,
         CITYOPS__V1__CASE_SOURCE__CASE_SOURCE_UPPER_TIER},
    };

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct op o = op_of(K(REPORT), 0);

        o.role = cases[i].role;
        o.source = cases[i].given;
        assert_int_equal(run_ok(f, o)->case_->source, cases[i].want);
    }
}

static void test_report_by_dispatcher_is_permission_denied(void **state)
{
    struct fx *f = *state;
    struct op o = op_of(K(REPORT), 0);
    Cityops__V1__CommandResult *res;

    report(f);
    o.role = R(DISPATCHER);
    assert_refused_changes_nothing(f, o, RC(PERMISSION_DENIED));
    o.role = R(AUDITOR);
    res = run(f, o);
    assert_code(res, RC(PERMISSION_DENIED));
    assert_non_null(strstr(res->message, "ROLE_AUDITOR"));
    assert_int_equal(store_case_count(f->s), 1);
}

/* The DOMAIN table. */

static const Cityops__V1__CaseState all_states[] = {
    S(REPORTED),    S(VERIFYING), S(ACCEPTED), S(REGISTERED), S(DISPATCHED),
    S(IN_DISPOSAL), S(RETURNED),  S(DISPOSED), S(CHECKING),   S(CHECKED),
    S(SHELVED),     S(CLOSED),    S(REJECTED), S(VOIDED),     S(MERGED),
};

#define B(x) (1u << S(x))

/* Where each event is legal (with the role op_of gives, adjusted below),
 * and the state it leads to (0: unchanged, an overlay). */
static const struct {
    op_kind kind;
    const char *name;
    uint32_t legal;
    Cityops__V1__CaseState to;
} table[] = {
    {K(REQUEST_VERIFY), "REQUEST_VERIFY", B(REPORTED), S(VERIFYING)},
    {K(VERIFY_RESULT), "VERIFY_RESULT", B(VERIFYING), S(REPORTED)},
    {K(ACCEPT), "ACCEPT", B(REPORTED), S(ACCEPTED)},
    {K(REGISTER), "REGISTER", B(ACCEPTED), S(REGISTERED)},
    {K(REJECT), "REJECT", B(REPORTED) | B(ACCEPTED), S(REJECTED)},
    {K(MERGE), "MERGE", B(REPORTED) | B(ACCEPTED) | B(REGISTERED), S(MERGED)},
    {K(VOID), "VOID", B(REPORTED) | B(ACCEPTED) | B(REGISTERED), S(VOIDED)},
    {K(DISPATCH), "DISPATCH", B(REGISTERED), S(DISPATCHED)},
    {K(START_DISPOSAL), "ACKNOWLEDGE", B(DISPATCHED), S(IN_DISPOSAL)},
    {K(RETURN), "RETURN", B(DISPATCHED) | B(IN_DISPOSAL), S(RETURNED)},
    {K(REDISPATCH), "REDISPATCH", B(RETURNED) | B(DISPATCHED) | B(IN_DISPOSAL),
     S(DISPATCHED)},
    {K(REPORT_DISPOSAL), "REPORT_DISPOSAL", B(IN_DISPOSAL), S(DISPOSED)},
    {K(REQUEST_EXTENSION), "EXTENSION_REQUEST", B(DISPATCHED) | B(IN_DISPOSAL),
     0},
    {K(DECIDE_EXTENSION), "EXTENSION_DECIDE (none pending)", 0, 0},
    {K(REQUEST_CHECK), "REQUEST_CHECK", B(DISPOSED), S(CHECKING)},
    {K(CHECK), "CHECK_RESULT", B(CHECKING), S(CHECKED)},
    {K(REWORK), "REWORK (check failed)", B(CHECKED), S(IN_DISPOSAL)},
    {K(CLOSE), "CLOSE SPECIAL", B(CHECKED) | B(SHELVED), S(CLOSED)},
    {K(SHELVE), "SHELVE", B(REGISTERED) | B(DISPATCHED) | B(IN_DISPOSAL),
     S(SHELVED)},
    {K(UNSHELVE), "UNSHELVE", B(SHELVED), S(REGISTERED)},
};

static const char *state_name(Cityops__V1__CaseState st)
{
    return protobuf_c_enum_descriptor_get_value(
               &cityops__v1__case_state__descriptor, st)
        ->name;
}

static size_t packed_case(struct fx *f, uint64_t id, uint8_t *buf, size_t n)
{
    Cityops__V1__Case *c = get(f, id);
    size_t len = cityops__v1__case__get_packed_size(c);

    assert_true(len <= n);
    cityops__v1__case__pack(c, buf);
    cityops__v1__case__free_unpacked(c, NULL);
    return len;
}

static void
test_every_event_in_every_state_is_allowed_only_by_the_table(void **state)
{
    struct fx *f = *state;
    uint8_t before[8192];
    uint8_t after[8192];

    for (size_t si = 0; si < sizeof(all_states) / sizeof(all_states[0]); si++) {
        Cityops__V1__CaseState st = all_states[si];

        for (size_t ei = 0; ei < sizeof(table) / sizeof(table[0]); ei++) {
            uint64_t target = make_case_in(f, S(REPORTED));
            uint64_t id = make_case_in(f, st);
            int legal = (table[ei].legal & (1u << st)) != 0;
            struct op o = op_of(table[ei].kind, id);
            Cityops__V1__CommandResult *res;
            size_t len_before = packed_case(f, id, before, sizeof(before));
            size_t len_after;

            o.into = target;
            if (o.kind == K(REJECT) && st == S(ACCEPTED)) {
                o.role = R(SHIFT_LEADER);
            }
            if (o.kind == K(CLOSE)) {
                o.closure = CITYOPS__V1__CLOSURE_TYPE__CLOSURE_TYPE_SPECIAL;
                o.reason = "solved by project";
            }
            res = run(f, o);
            if (legal) {
                Cityops__V1__CaseState to =
                    table[ei].to != 0 ? table[ei].to : st;
                if (res->code != RC(OK)) {
                    fail_msg("%s in %s: %s (%s), want OK", table[ei].name,
                             state_name(st), code_name(res->code),
                             res->message);
                }
                assert_int_equal(res->case_->state, to);
                assert_int_equal(state_of(f, id), to);
                continue;
            }
            if (res->code != RC(FAILED_PRECONDITION)) {
                fail_msg("%s in %s: %s (%s), want FAILED_PRECONDITION",
                         table[ei].name, state_name(st), code_name(res->code),
                         res->message);
            }
            assert_null(res->case_);
            len_after = packed_case(f, id, after, sizeof(after));
            assert_int_equal(len_before, len_after);
            assert_memory_equal(before, after, len_before);
            assert_int_equal(state_of(f, target), S(REPORTED));
        }
    }
}

static void test_illegal_event_message_names_state_and_event(void **state)
{
    struct fx *f = *state;
    uint64_t id = report(f);
    Cityops__V1__CommandResult *res;
    struct op o = op_of(K(CLOSE), id);

    o.closure = CITYOPS__V1__CLOSURE_TYPE__CLOSURE_TYPE_SPECIAL;
    o.reason = "x";
    res = run(f, o);
    assert_code(res, RC(FAILED_PRECONDITION));
    assert_non_null(strstr(res->message, "CLOSE"));
    assert_non_null(strstr(res->message, "CASE_STATE_REPORTED"));
}

static void test_close_on_reported_case_fails_precondition(void **state)
{
    struct fx *f = *state;
    uint64_t id = report(f);

    assert_refused_changes_nothing(f, op_of(K(CLOSE), id),
                                   RC(FAILED_PRECONDITION));
    assert_int_equal(state_of(f, id), S(REPORTED));
}

/* Roles. */

static void
test_wrong_role_is_permission_denied_and_changes_nothing(void **state)
{
    struct fx *f = *state;
    static const struct {
        Cityops__V1__CaseState st;
        op_kind kind;
        Cityops__V1__Role role;
    } cases[] = {
        {S(REPORTED), K(ACCEPT), R(DISPATCHER)},
        {S(REPORTED), K(REQUEST_VERIFY), R(INSPECTOR)},
        {S(VERIFYING), K(VERIFY_RESULT), R(INTAKE_CLERK)},
        {S(ACCEPTED), K(REGISTER), R(INTAKE_CLERK)},
        {S(REPORTED), K(REJECT), R(SHIFT_LEADER)}, /* 不予受理: clerk */
        {S(ACCEPTED), K(REJECT), R(INTAKE_CLERK)}, /* 不予立案: leader */
        {S(ACCEPTED), K(MERGE), R(INTAKE_CLERK)},  /* clerk: REPORTED */
        {S(REGISTERED), K(VOID), R(DISPATCHER)},
        {S(REGISTERED), K(DISPATCH), R(SHIFT_LEADER)},
        {S(DISPATCHED), K(START_DISPOSAL), R(DISPATCHER)},
        {S(DISPATCHED), K(RETURN), R(DISPATCHER)},
        {S(RETURNED), K(REDISPATCH), R(DEPARTMENT)},
        {S(IN_DISPOSAL), K(REPORT_DISPOSAL), R(INSPECTOR)},
        {S(IN_DISPOSAL), K(REQUEST_EXTENSION), R(DISPATCHER)},
        {S(DISPOSED), K(REQUEST_CHECK), R(INSPECTOR)},
        {S(CHECKING), K(CHECK), R(SHIFT_LEADER)},
        {S(CHECKED), K(REWORK), R(DISPATCHER)},
        {S(CHECKED), K(CLOSE), R(ADMIN)},
        {S(REGISTERED), K(SHELVE), R(AUDITOR)},
        {S(SHELVED), K(UNSHELVE), R(PUBLIC)},
        {S(SHELVED), K(CLOSE), R(SYSTEM)}, /* SYSTEM auto-closes passes only */
    };

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        uint64_t target = make_case_in(f, S(REPORTED));
        uint64_t id = make_case_in(f, cases[i].st);
        struct op o = op_of(cases[i].kind, id);

        o.role = cases[i].role;
        o.into = target;
        o.closure = CITYOPS__V1__CLOSURE_TYPE__CLOSURE_TYPE_SPECIAL;
        o.reason = "because";
        assert_refused_changes_nothing(f, o, RC(PERMISSION_DENIED));
        assert_int_equal(state_of(f, id), cases[i].st);
    }
}

static void test_permission_message_names_role_and_event(void **state)
{
    struct fx *f = *state;
    uint64_t id = make_case_in(f, S(REGISTERED));
    struct op o = op_of(K(DISPATCH), id);
    Cityops__V1__CommandResult *res;

    o.role = R(INSPECTOR);
    res = run(f, o);
    assert_code(res, RC(PERMISSION_DENIED));
    assert_non_null(strstr(res->message, "ROLE_INSPECTOR"));
    assert_non_null(strstr(res->message, "DISPATCH"));
}

static void test_checks_run_fields_then_case_then_role_then_state(void **state)
{
    struct fx *f = *state;
    uint64_t id = report(f);
    struct op o;

    /* Missing reason on an unknown case: the field wins. */
    o = op_of(K(REJECT), 999);
    o.reason = NULL;
    assert_code(run(f, o), RC(INVALID_ARGUMENT));
    /* Unknown case with the wrong role: NOT_FOUND wins. */
    o = op_of(K(ACCEPT), 999);
    o.role = R(DISPATCHER);
    assert_code(run(f, o), RC(NOT_FOUND));
    /* Wrong role in the wrong state: PERMISSION_DENIED wins. */
    o = op_of(K(DISPATCH), id);
    o.role = R(INSPECTOR);
    assert_code(run(f, o), RC(PERMISSION_DENIED));
}

static void test_unknown_case_is_not_found(void **state)
{
    struct fx *f = *state;
    Cityops__V1__Case *c = NULL;
    Cityops__V1__HistoryResponse *h = NULL;
    Cityops__V1__CommandResult *res;

    report(f);
    assert_refused_changes_nothing(f, op_of(K(ACCEPT), 42), RC(NOT_FOUND));
    res = run(f, op_of(K(ACCEPT), 42));
    assert_non_null(strstr(res->message, "42"));
    assert_int_equal(store_case_get(f->s, 42, &c, NULL), STORE_NOTFOUND);
    assert_int_equal(store_case_history(f->s, 42, &h), STORE_NOTFOUND);
}

/* Fields. */

static void test_invalid_fields_are_invalid_argument(void **state)
{
    struct fx *f = *state;
    uint64_t reported = report(f);
    uint64_t in_disposal = make_case_in(f, S(IN_DISPOSAL));
    uint64_t disposed = make_case_in(f, S(DISPOSED));
    uint64_t checked = make_case_in(f, S(CHECKED));
    char long_desc[STORE_MAX_DESCRIPTION + 2];
    char long_id[STORE_MAX_ID + 2];
    struct op bad[40];
    size_t n = 0;
    struct op o;

    memset(long_desc, 'x', sizeof(long_desc) - 1);
    long_desc[sizeof(long_desc) - 1] = '\0';
    memset(long_id, 'd', sizeof(long_id) - 1);
    long_id[sizeof(long_id) - 1] = '\0';

#define BAD(base, field, value)                                                \
    do {                                                                       \
        o = (base);                                                            \
        o.field = value;                                                       \
        bad[n++] = o;                                                          \
    } while (0)
    BAD(op_of(K(ACCEPT), reported), case_id, 0);
    BAD(op_of(K(ACCEPT), reported), actor, NULL);
    BAD(op_of(K(ACCEPT), reported), actor, long_id);
    BAD(op_of(K(REPORT), 0), category, 0);
    BAD(op_of(K(REPORT), 0), major, "1");
    BAD(op_of(K(REPORT), 0), major, "1a");
    BAD(op_of(K(REPORT), 0), minor, "123");
    BAD(op_of(K(REPORT), 0), minor, NULL);
    BAD(op_of(K(REPORT), 0), sha, "xyz");
    BAD(op_of(K(REPORT), 0), sha, SHA + 1);
    BAD(op_of(K(REPORT), 0), lon, 180.5);
    BAD(op_of(K(REPORT), 0), lon, NAN);
    BAD(op_of(K(REPORT), 0), lat, -90.5);
    BAD(op_of(K(REPORT), 0), n_att, STORE_MAX_ATTACHMENTS + 1);
    BAD(op_of(K(REPORT), 0), description, long_desc);
    BAD(op_of(K(REPORT), 0), grid, long_id);
    BAD(op_of(K(REJECT), reported), reason, NULL);
    BAD(op_of(K(VOID), reported), reason, NULL);
    BAD(op_of(K(RETURN), in_disposal), reason, NULL);
    BAD(op_of(K(SHELVE), in_disposal), reason, NULL);
    BAD(op_of(K(REQUEST_EXTENSION), in_disposal), reason, NULL);
    BAD(op_of(K(REQUEST_EXTENSION), in_disposal), until, T0);
    BAD(op_of(K(REPORT_DISPOSAL), in_disposal), n_att, 0);
    BAD(op_of(K(REPORT_DISPOSAL), in_disposal), sha, "not-hex");
    BAD(op_of(K(REQUEST_CHECK), disposed), who, NULL);
    BAD(op_of(K(REDISPATCH), in_disposal), who, NULL);
    BAD(op_of(K(REDISPATCH), in_disposal), who, long_id);
    BAD(op_of(K(MERGE), reported), into, reported);
    BAD(op_of(K(MERGE), reported), into, 0);
    o = op_of(K(CLOSE), checked);
    o.closure = CITYOPS__V1__CLOSURE_TYPE__CLOSURE_TYPE_SPECIAL;
    bad[n++] = o; /* SPECIAL without a reason */
#undef BAD

    for (size_t i = 0; i < n; i++) {
        Cityops__V1__CommandResult *res = run(f, bad[i]);

        if (res->code != RC(INVALID_ARGUMENT)) {
            fail_msg("bad command %zu (op %d): %s (%s), want "
                     "INVALID_ARGUMENT",
                     i, bad[i].kind, code_name(res->code), res->message);
        }
    }
    assert_int_equal(store_case_count(f->s), 4);
    assert_int_equal(state_of(f, reported), S(REPORTED));
    assert_int_equal(state_of(f, in_disposal), S(IN_DISPOSAL));
    assert_int_equal(state_of(f, disposed), S(DISPOSED));
    assert_int_equal(state_of(f, checked), S(CHECKED));
    o = op_of(K(REPORT), 0);
    o.lon = NAN;
    assert_refused_changes_nothing(f, o, RC(INVALID_ARGUMENT));
}

/* Lifecycle details. */

static void
test_lifecycle_stamps_command_times_and_history_in_order(void **state)
{
    struct fx *f = *state;
    static const op_kind path[] = {
        K(ACCEPT),          K(REGISTER),      K(DISPATCH), K(START_DISPOSAL),
        K(REPORT_DISPOSAL), K(REQUEST_CHECK), K(CHECK),    K(CLOSE),
    };
    static const Cityops__V1__CaseEventType types[] = {
        EV(REPORT),        EV(ACCEPT),       EV(REGISTER),
        EV(DISPATCH),      EV(ACKNOWLEDGE),  EV(REPORT_DISPOSAL),
        EV(REQUEST_CHECK), EV(CHECK_RESULT), EV(CLOSE),
    };
    int64_t at[9];
    uint64_t id = report(f);
    Cityops__V1__HistoryResponse *h;
    Cityops__V1__Case *c;

    at[0] = f->time;
    for (size_t i = 0; i < sizeof(path) / sizeof(path[0]); i++) {
        run_ok(f, op_of(path[i], id));
        at[i + 1] = f->time;
    }
    c = get(f, id);
    assert_int_equal(c->state, S(CLOSED));
    assert_int_equal(c->closure_type,
                     CITYOPS__V1__CLOSURE_TYPE__CLOSURE_TYPE_NORMAL);
    assert_int_equal(c->times->reported, at[0]);
    assert_int_equal(c->times->accepted, at[1]);
    assert_int_equal(c->times->registered, at[2]);
    assert_int_equal(c->times->dispatched, at[3]);
    assert_int_equal(c->times->acknowledged, at[4]);
    assert_int_equal(c->times->disposed, at[5]);
    assert_int_equal(c->times->checked, at[7]);
    assert_int_equal(c->times->closed, at[8]);
    assert_int_equal(c->times->updated, at[8]);
    assert_string_equal(c->department_id, "dept-water");
    assert_string_equal(c->disposer_id, "dept-actor");
    assert_string_equal(c->checker_id, "insp-2");
    assert_true(c->check_passed);
    assert_int_equal(c->event_count, 9);
    assert_int_equal(c->last_index, f->index);
    cityops__v1__case__free_unpacked(c, NULL);

    assert_int_equal(store_case_history(f->s, id, &h), 0);
    assert_int_equal(h->n_events, 9);
    assert_int_equal(h->applied_index, f->index);
    for (size_t i = 0; i < 9; i++) {
        Cityops__V1__CaseEvent *ev = h->events[i];

        assert_int_equal(ev->seq, i + 1);
        assert_int_equal(ev->case_id, id);
        assert_int_equal(ev->type, types[i]);
        assert_int_equal(ev->at, at[i]);
        assert_int_equal(ev->raft_index, i + 1);
    }
    assert_int_equal(h->events[0]->from_state, S(UNSPECIFIED));
    assert_int_equal(h->events[0]->to_state, S(REPORTED));
    assert_int_equal(h->events[3]->from_state, S(REGISTERED));
    assert_int_equal(h->events[3]->to_state, S(DISPATCHED));
    assert_string_equal(h->events[3]->department_id, "dept-water");
    assert_string_equal(h->events[3]->actor_id, "disp-1");
    assert_int_equal(h->events[3]->role, R(DISPATCHER));
    assert_int_equal(h->events[5]->n_attachments, 1);
    assert_true(h->events[7]->passed);
    assert_int_equal(h->events[8]->closure_type,
                     CITYOPS__V1__CLOSURE_TYPE__CLOSURE_TYPE_NORMAL);
    cityops__v1__history_response__free_unpacked(h, NULL);
}

static void
test_return_remembers_department_and_redispatch_counts_moves(void **state)
{
    struct fx *f = *state;
    uint64_t id = make_case_in(f, S(RETURNED));
    Cityops__V1__Case *c = get(f, id);
    struct op o;

    assert_int_equal(c->counters->returns, 1);
    assert_string_equal(c->previous_department_id, "dept-water");
    assert_string_equal(c->department_id, "");
    cityops__v1__case__free_unpacked(c, NULL);

    /* Back to the department that returned it: the return is refused. */
    o = op_of(K(REDISPATCH), id);
    o.who = "dept-water";
    c = run_ok(f, o)->case_;
    assert_int_equal(c->counters->redispatch, 0);
    assert_string_equal(c->department_id, "dept-water");

    run_ok(f, op_of(K(RETURN), id));
    c = run_ok(f, op_of(K(REDISPATCH), id))->case_; /* dept-roads */
    assert_int_equal(c->counters->redispatch, 1);
    assert_int_equal(c->counters->returns, 2);
    assert_string_equal(c->department_id, "dept-roads");
    assert_int_equal(c->state, S(DISPATCHED));
}

static void test_request_check_by_the_disposer_is_denied(void **state)
{
    struct fx *f = *state;
    uint64_t id = make_case_in(f, S(DISPOSED));
    struct op o = op_of(K(REQUEST_CHECK), id);

    o.who = "dept-actor"; /* reported the disposal */
    assert_refused_changes_nothing(f, o, RC(PERMISSION_DENIED));
    assert_int_equal(state_of(f, id), S(DISPOSED));
}

static void test_check_result_by_another_inspector_is_denied(void **state)
{
    struct fx *f = *state;
    uint64_t id = make_case_in(f, S(CHECKING));
    struct op o = op_of(K(CHECK), id);

    o.actor = "insp-1"; /* the checker is insp-2 */
    assert_refused_changes_nothing(f, o, RC(PERMISSION_DENIED));
    assert_int_equal(state_of(f, id), S(CHECKING));
}

static void test_close_after_failed_check_needs_special(void **state)
{
    struct fx *f = *state;
    uint64_t id = make_case_in(f, S(CHECKED)); /* check failed */
    struct op o = op_of(K(CLOSE), id);

    assert_refused_changes_nothing(f, o, RC(FAILED_PRECONDITION));
    o.role = R(SYSTEM);
    assert_code(run(f, o), RC(FAILED_PRECONDITION));
    o.role = R(SHIFT_LEADER);
    o.closure = CITYOPS__V1__CLOSURE_TYPE__CLOSURE_TYPE_SPECIAL;
    o.reason = "solved by project";
    assert_int_equal(run_ok(f, o)->case_->closure_type,
                     CITYOPS__V1__CLOSURE_TYPE__CLOSURE_TYPE_SPECIAL);
}

static void test_system_may_close_a_passed_check(void **state)
{
    struct fx *f = *state;
    uint64_t id = make_case_in(f, S(CHECKING));
    struct op o = op_of(K(CLOSE), id);

    run_ok(f, op_of(K(CHECK), id)); /* passed */
    o.role = R(SYSTEM);
    assert_int_equal(run_ok(f, o)->case_->state, S(CLOSED));
}

static void test_rework_returns_failed_check_to_same_department(void **state)
{
    struct fx *f = *state;
    uint64_t id = make_case_in(f, S(CHECKED)); /* failed */
    Cityops__V1__Case *c = run_ok(f, op_of(K(REWORK), id))->case_;
    struct op o;

    assert_int_equal(c->state, S(IN_DISPOSAL));
    assert_int_equal(c->counters->rework, 1);
    assert_string_equal(c->department_id, "dept-water");

    run_ok(f, op_of(K(REPORT_DISPOSAL), id));
    run_ok(f, op_of(K(REQUEST_CHECK), id));
    o = op_of(K(CHECK), id);
    run_ok(f, o); /* passed */
    assert_refused_changes_nothing(f, op_of(K(REWORK), id),
                                   RC(FAILED_PRECONDITION));
}

static void test_shelve_remembers_origin_and_unshelve_registers(void **state)
{
    struct fx *f = *state;
    uint64_t id = make_case_in(f, S(IN_DISPOSAL));
    Cityops__V1__Case *c = run_ok(f, op_of(K(SHELVE), id))->case_;
    struct op o;

    assert_int_equal(c->state, S(SHELVED));
    assert_int_equal(c->shelved_from, S(IN_DISPOSAL));
    o = op_of(K(CLOSE), id);
    o.reason = "done";
    assert_refused_changes_nothing(f, o, RC(FAILED_PRECONDITION));
    assert_int_equal(run_ok(f, op_of(K(UNSHELVE), id))->case_->state,
                     S(REGISTERED));
}

static void test_merge_links_both_cases_and_needs_an_open_target(void **state)
{
    struct fx *f = *state;
    uint64_t target = report(f);
    uint64_t dup = report(f);
    uint64_t closed = make_case_in(f, S(CLOSED));
    Cityops__V1__HistoryResponse *h;
    Cityops__V1__Case *c;
    struct op o = op_of(K(MERGE), dup);

    o.into = closed;
    assert_refused_changes_nothing(f, o, RC(FAILED_PRECONDITION));
    o.into = 777;
    assert_refused_changes_nothing(f, o, RC(NOT_FOUND));
    o.into = target;
    o.role = R(INTAKE_CLERK); /* allowed while REPORTED */
    o.reason = "same pothole";
    c = run_ok(f, o)->case_;
    assert_int_equal(c->state, S(MERGED));
    assert_int_equal(c->merged_into, target);

    c = get(f, target);
    assert_int_equal(c->state, S(REPORTED));
    assert_int_equal(c->n_merged_from, 1);
    assert_int_equal(c->merged_from[0], dup);
    assert_int_equal(c->event_count, 2);
    cityops__v1__case__free_unpacked(c, NULL);
    assert_int_equal(store_case_history(f->s, target, &h), 0);
    assert_int_equal(h->n_events, 2);
    assert_int_equal(h->events[1]->type, EV(MERGED_FROM));
    assert_int_equal(h->events[1]->related_case_id, dup);
    cityops__v1__history_response__free_unpacked(h, NULL);

    /* A merged case is terminal: nothing merges into it. */
    o = op_of(K(MERGE), report(f));
    o.into = dup;
    assert_code(run(f, o), RC(FAILED_PRECONDITION));
}

static void test_extension_one_pending_and_approval_moves_deadline(void **state)
{
    struct fx *f = *state;
    uint64_t id = make_case_in(f, S(IN_DISPOSAL));
    struct op req = op_of(K(REQUEST_EXTENSION), id);
    struct op dec = op_of(K(DECIDE_EXTENSION), id);
    Cityops__V1__Case *c;

    assert_refused_changes_nothing(f, dec, RC(FAILED_PRECONDITION));
    c = run_ok(f, req)->case_;
    assert_true(c->extension_pending);
    assert_int_equal(c->extension_requested_until, req.until);
    assert_int_equal(c->state, S(IN_DISPOSAL));
    assert_refused_changes_nothing(f, req, RC(FAILED_PRECONDITION));

    dec.role = R(DEPARTMENT);
    assert_code(run(f, dec), RC(PERMISSION_DENIED));
    dec.role = R(SHIFT_LEADER);
    c = run_ok(f, dec)->case_;
    assert_false(c->extension_pending);
    assert_int_equal(c->disposal_deadline, req.until);
    assert_int_equal(c->counters->extensions, 1);

    /* A denied request leaves the deadline and the count. */
    req.until += 100 * SEC;
    run_ok(f, req);
    dec.flag = 0;
    c = run_ok(f, dec)->case_;
    assert_false(c->extension_pending);
    assert_int_equal(c->disposal_deadline, req.until - 100 * SEC);
    assert_int_equal(c->counters->extensions, 1);

    /* Approving with an explicit date uses it. */
    req.until += 100 * SEC;
    run_ok(f, req);
    dec.flag = 1;
    dec.until = req.until + 5 * SEC;
    c = run_ok(f, dec)->case_;
    assert_int_equal(c->disposal_deadline, dec.until);
    assert_int_equal(c->counters->extensions, 2);
}

static void test_verify_result_returns_case_to_reported(void **state)
{
    struct fx *f = *state;
    uint64_t id = make_case_in(f, S(VERIFYING));
    Cityops__V1__HistoryResponse *h;

    assert_int_equal(run_ok(f, op_of(K(VERIFY_RESULT), id))->case_->state,
                     S(REPORTED));
    assert_int_equal(store_case_history(f->s, id, &h), 0);
    assert_int_equal(h->n_events, 3);
    assert_int_equal(h->events[2]->type, EV(VERIFY_RESULT));
    assert_true(h->events[2]->passed);
    cityops__v1__history_response__free_unpacked(h, NULL);
}

/* Apply. */

static void test_apply_is_independent_of_the_clock(void **state)
{
    struct fx *f = *state;
    struct op o = op_of(K(REPORT), 0);
    Cityops__V1__Case *c;

    o.time = 86400LL * SEC; /* 1970-01-02, long before now */
    c = run_ok(f, o)->case_;
    assert_int_equal(c->times->reported, o.time);
    assert_string_equal(c->tracking_no, "CO-19700102-000001");
    assert_int_equal(store_last_time(f->s), o.time);
}

static void test_batch_gives_one_result_per_command_and_max_time(void **state)
{
    struct fx *f = *state;
    struct op ops[3] = {op_of(K(REPORT), 0), op_of(K(ACCEPT), 1),
                        op_of(K(ACCEPT), 99)};

    ops[0].time = T0 + 5 * SEC;
    ops[1].time = T0 + 9 * SEC;
    ops[2].time = T0 + 7 * SEC;
    fx_batch(f, ops, 3);
    assert_int_equal(f->last.skipped, 0);
    assert_code(f->last.results[0], RC(OK));
    assert_code(f->last.results[1], RC(OK));
    assert_code(f->last.results[2], RC(NOT_FOUND));
    for (size_t i = 0; i < 3; i++) {
        assert_int_equal(f->last.results[i]->index, 1);
    }
    assert_int_equal(store_last_time(f->s), T0 + 9 * SEC);
    assert_int_equal(store_applied_index(f->s), 1);
}

static void
test_two_environments_applying_the_same_log_have_equal_digests(void **state)
{
    struct fx *f = *state;
    struct fx *g = fx_new(0);
    struct fx *h = fx_new(0);
    uint8_t a[STORE_DIGEST_SIZE];
    uint8_t b[STORE_DIGEST_SIZE];
    uint8_t c[STORE_DIGEST_SIZE];
    struct op o;

    make_case_in(f, S(CLOSED));
    make_case_in(f, S(MERGED));
    make_case_in(f, S(RETURNED));
    o = op_of(K(ACCEPT), 1);
    o.client_id = "cli";
    o.seq = 3;
    run(f, o); /* refused, but its retry key is stored */
    fx_replay(f, g);
    digest(f, a);
    digest(g, b);
    assert_memory_equal(a, b, STORE_DIGEST_SIZE);
    assert_int_equal(store_applied_index(g->s), store_applied_index(f->s));

    /* The digest sees a one-second difference in one command. */
    for (size_t i = 0; i + 1 < f->n_log; i++) {
        assert_int_equal(
            fx_apply_raw(h, f->log[i].index, f->log[i].buf, f->log[i].len), 0);
    }
    h->index = f->log[f->n_log - 2].index;
    o.time = f->time + SEC;
    fx_batch(h, &o, 1);
    digest(h, c);
    assert_memory_not_equal(a, c, STORE_DIGEST_SIZE);
    fx_free(g);
    fx_free(h);
}

static void test_reapplying_an_applied_index_is_skipped(void **state)
{
    struct fx *f = *state;
    uint8_t before[STORE_DIGEST_SIZE];
    uint8_t after[STORE_DIGEST_SIZE];
    struct op o = op_of(K(REPORT), 0);
    size_t len;
    void *buf;

    report(f);
    report(f);
    digest(f, before);
    buf = batch_pack(f, &o, 1, &len);
    for (uint64_t index = 1; index <= 2; index++) {
        assert_int_equal(fx_apply_raw(f, index, buf, len), 0);
        assert_int_equal(f->last.skipped, 1);
        assert_int_equal(f->last.n, 0);
    }
    free(buf);
    digest(f, after);
    assert_memory_equal(before, after, STORE_DIGEST_SIZE);
    assert_int_equal(store_case_count(f->s), 2);
    assert_int_equal(store_applied_index(f->s), 2);
}

static void
test_replayed_retry_key_returns_first_result_and_applies_once(void **state)
{
    struct fx *f = *state;
    struct op o = op_of(K(REPORT), 0);
    uint8_t *first;
    size_t first_len;
    Cityops__V1__CommandResult *res;

    o.client_id = "tablet-7";
    o.seq = 1;
    res = run_ok(f, o);
    first_len = cityops__v1__command_result__get_packed_size(res);
    first = malloc(first_len);
    assert_non_null(first);
    cityops__v1__command_result__pack(res, first);

    res = run(f, o); /* the same retry key at index 2 */
    assert_code(res, RC(OK));
    assert_int_equal(res->index, 1);
    assert_int_equal(res->case_->case_id, 1);
    assert_int_equal(cityops__v1__command_result__get_packed_size(res),
                     first_len);
    {
        uint8_t again[4096];

        assert_true(first_len <= sizeof(again));
        cityops__v1__command_result__pack(res, again);
        assert_memory_equal(first, again, first_len);
    }
    free(first);
    assert_int_equal(store_case_count(f->s), 1);
    assert_int_equal(store_applied_index(f->s), 2);

    o.seq = 2;
    assert_int_equal(run_ok(f, o)->case_->case_id, 2);
    o.client_id = "other-client";
    o.seq = 1;
    assert_int_equal(run_ok(f, o)->case_->case_id, 3);
}

static void test_replayed_refusal_is_returned_again(void **state)
{
    struct fx *f = *state;
    struct op o = op_of(K(ACCEPT), 1);

    o.client_id = "c";
    o.seq = 1;
    assert_code(run(f, o), RC(NOT_FOUND)); /* case 1 does not exist yet */
    report(f);
    assert_code(run(f, o), RC(NOT_FOUND)); /* the first answer, kept */
    assert_int_equal(state_of(f, 1), S(REPORTED));
}

static void test_stale_retry_key_is_refused(void **state)
{
    struct fx *f = *state;
    struct op o = op_of(K(REPORT), 0);
    Cityops__V1__CommandResult *res;

    o.client_id = "tablet-7";
    o.seq = 5;
    run_ok(f, o);
    o.seq = 4;
    res = run(f, o);
    assert_code(res, RC(ALREADY_EXISTS));
    assert_string_equal(res->message, "stale retry key: seq 4 < last 5");
    assert_int_equal(store_case_count(f->s), 1);
    assert_refused_changes_nothing(f, o, RC(ALREADY_EXISTS));
}

static void test_batch_that_does_not_decode_is_recorded_as_applied(void **state)
{
    struct fx *f = *state;
    static const uint8_t junk[] = {0x0a, 0xff, 0xff, 0xff, 0x01};

    report(f);
    assert_int_equal(fx_apply_raw(f, 7, junk, sizeof(junk)), 0);
    assert_int_equal(f->last.skipped, 0);
    assert_int_equal(f->last.n, 0);
    assert_int_equal(store_applied_index(f->s), 7);
    assert_int_equal(store_case_count(f->s), 1);
    f->index = 7;
    assert_int_equal(report(f), 2);
}

/* Reads. */

static void list_ids(struct fx *f,
                     const Cityops__V1__ListRequest *req,
                     uint64_t *ids,
                     size_t *n,
                     char *next,
                     size_t next_size)
{
    Cityops__V1__ListResponse *resp;

    assert_int_equal(store_case_list(f->s, req, &resp), 0);
    assert_int_equal(resp->applied_index, f->index);
    for (size_t i = 0; i < resp->n_cases; i++) {
        ids[i] = resp->cases[i]->case_id;
    }
    *n = resp->n_cases;
    snprintf(next, next_size, "%s", resp->next_page_token);
    cityops__v1__list_response__free_unpacked(resp, NULL);
}

/* Every page of size @page, concatenated. */
static size_t list_all(struct fx *f,
                       Cityops__V1__ListRequest req,
                       uint32_t page,
                       uint64_t *ids)
{
    char token[32] = "";
    size_t total = 0;
    size_t n;

    req.page_size = page;
    do {
        req.page_token = token;
        list_ids(f, &req, ids + total, &n, token, sizeof(token));
        assert_true(n <= page);
        total += n;
        if (token[0] != '\0') {
            assert_int_equal(n, page);
        }
    } while (token[0] != '\0');
    return total;
}

static void
assert_ids(const uint64_t *got, size_t n, const uint64_t *want, size_t n_want)
{
    assert_int_equal(n, n_want);
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(got[i], want[i]);
    }
}

static void test_list_filters_and_pages_in_case_id_order(void **state)
{
    struct fx *f = *state;
    Cityops__V1__ListRequest req = CITYOPS__V1__LIST_REQUEST__INIT;
    uint64_t ids[64];
    char token[32];
    size_t n;

    /* Cases 1..12: grid A for odd ids, B for even; category COMPONENT 03/04
     * for ids divisible by 3; reported at T0 + (13 - id) hours, so that
     * time order is the reverse of id order. */
    for (uint64_t id = 1; id <= 12; id++) {
        struct op o = op_of(K(REPORT), 0);

        o.grid = id % 2 ? "grid-A" : "grid-B";
        if (id % 3 == 0) {
            o.category = CITYOPS__V1__CATEGORY_TYPE__CATEGORY_TYPE_COMPONENT;
            o.major = "03";
            o.minor = "04";
        }
        o.time = T0 + (int64_t)(13 - id) * 3600 * SEC;
        assert_int_equal(run_ok(f, o)->case_->case_id, id);
    }
    /* 2, 5, 8 dispatched to dept-water; 11 returned by it; 12 registered
     * and re-classified from COMPONENT 03/04 to 03/01 (its category index
     * entry moves, and now sorts before 3, 6, 9). */
    for (uint64_t id = 2; id <= 11; id += 3) {
        run_ok(f, op_of(K(ACCEPT), id));
        run_ok(f, op_of(K(REGISTER), id));
        run_ok(f, op_of(K(DISPATCH), id));
    }
    run_ok(f, op_of(K(RETURN), 11));
    {
        struct op o = op_of(K(REGISTER), 12);

        run_ok(f, op_of(K(ACCEPT), 12));
        o.category = CITYOPS__V1__CATEGORY_TYPE__CATEGORY_TYPE_COMPONENT;
        o.major = "03";
        o.minor = "01";
        run_ok(f, o);
    }

    n = list_all(f, req, 5, ids);
    assert_ids(ids, n, (uint64_t[]){1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}, 12);

    req.state = S(DISPATCHED);
    n = list_all(f, req, 2, ids);
    assert_ids(ids, n, (uint64_t[]){2, 5, 8}, 3);
    req.page_size = 3; /* an exactly full last page has no next token */
    list_ids(f, &req, ids, &n, token, sizeof(token));
    assert_ids(ids, n, (uint64_t[]){2, 5, 8}, 3);
    assert_string_equal(token, "");
    req.page_size = 2;
    list_ids(f, &req, ids, &n, token, sizeof(token));
    assert_string_equal(token, "5");
    req.page_size = 0;
    req.state = S(REPORTED);
    n = list_all(f, req, 4, ids);
    assert_ids(ids, n, (uint64_t[]){1, 3, 4, 6, 7, 9, 10}, 7);
    req.state = 0;

    req.department_id = "dept-water";
    n = list_all(f, req, 50, ids);
    assert_ids(ids, n, (uint64_t[]){2, 5, 8}, 3); /* 11 was returned */
    req.department_id = "";

    req.grid_code = "grid-A";
    n = list_all(f, req, 3, ids);
    assert_ids(ids, n, (uint64_t[]){1, 3, 5, 7, 9, 11}, 6);
    req.state = S(DISPATCHED); /* combined with the grid */
    n = list_all(f, req, 3, ids);
    assert_ids(ids, n, (uint64_t[]){5}, 1);
    req.state = 0;
    req.grid_code = "";

    req.category_type = CITYOPS__V1__CATEGORY_TYPE__CATEGORY_TYPE_COMPONENT;
    n = list_all(f, req, 2, ids);
    assert_ids(ids, n, (uint64_t[]){3, 6, 9, 12}, 4);
    req.major_code = "03";
    n = list_all(f, req, 3, ids);
    assert_ids(ids, n, (uint64_t[]){3, 6, 9, 12}, 4);
    req.minor_code = "04";
    n = list_all(f, req, 3, ids);
    assert_ids(ids, n, (uint64_t[]){3, 6, 9}, 3);
    req.minor_code = "01";
    n = list_all(f, req, 3, ids);
    assert_ids(ids, n, (uint64_t[]){12}, 1);
    req.category_type = CITYOPS__V1__CATEGORY_TYPE__CATEGORY_TYPE_EVENT;
    req.major_code = "01";
    req.minor_code = "02";
    n = list_all(f, req, 3, ids);
    assert_ids(ids, n, (uint64_t[]){1, 2, 4, 5, 7, 8, 10, 11}, 8);
    req.category_type = 0;
    req.major_code = "";
    req.minor_code = "";

    req.reported_from = T0 + 4 * 3600 * SEC; /* inclusive: id 9 */
    req.reported_to = T0 + 8 * 3600 * SEC;   /* exclusive: id 5 */
    n = list_all(f, req, 3, ids);
    assert_ids(ids, n, (uint64_t[]){6, 7, 8, 9}, 4);
    req.reported_to = 0;
    n = list_all(f, req, 4, ids);
    assert_ids(ids, n, (uint64_t[]){1, 2, 3, 4, 5, 6, 7, 8, 9}, 9);
    req.reported_from = 0;
    req.reported_to = T0 + 4 * 3600 * SEC;
    req.state = S(REPORTED);
    n = list_all(f, req, 1, ids);
    assert_ids(ids, n, (uint64_t[]){10}, 1);
    req.state = 0;
    req.reported_to = 0;

    /* Default page size, explicit token, bad token. */
    req.page_size = 0;
    req.page_token = "10";
    list_ids(f, &req, ids, &n, token, sizeof(token));
    assert_ids(ids, n, (uint64_t[]){11, 12}, 2);
    assert_string_equal(token, "");
    req.page_token = "abc";
    {
        Cityops__V1__ListResponse *resp = NULL;

        assert_int_equal(store_case_list(f->s, &req, &resp), STORE_INVALID);
        req.page_token = "-1";
        assert_int_equal(store_case_list(f->s, &req, &resp), STORE_INVALID);
        req.page_token = "99999999999999999999999";
        assert_int_equal(store_case_list(f->s, &req, &resp), STORE_INVALID);
    }
}

static void test_list_page_size_is_capped(void **state)
{
    struct fx *f = *state;
    Cityops__V1__ListRequest req = CITYOPS__V1__LIST_REQUEST__INIT;
    struct op ops[120];
    uint64_t ids[600];
    char token[32];
    size_t n;

    for (int b = 0; b < 5; b++) {
        for (int i = 0; i < 120; i++) {
            ops[i] = op_of(K(REPORT), 0);
        }
        fx_batch(f, ops, 120);
    }
    req.page_size = 0;
    list_ids(f, &req, ids, &n, token, sizeof(token));
    assert_int_equal(n, 50);
    assert_string_equal(token, "50");
    req.page_size = 10000;
    list_ids(f, &req, ids, &n, token, sizeof(token));
    assert_int_equal(n, 500);
    assert_string_equal(token, "500");
}

/* Snapshots. */

static void
test_snapshot_restored_into_another_env_gives_equal_digest(void **state)
{
    struct fx *f = *state;
    struct fx *g = fx_new(0);
    uint8_t a[STORE_DIGEST_SIZE];
    uint8_t b[STORE_DIGEST_SIZE];
    uint64_t index;
    int replaced = -1;
    size_t len;
    void *snap;

    make_case_in(f, S(CLOSED));
    make_case_in(f, S(MERGED));
    assert_int_equal(store_snapshot(f->s, &snap, &len), 0);
    assert_int_equal(store_snapshot_index(snap, len, &index), 0);
    assert_int_equal(index, f->index);
    assert_int_equal(memcmp(snap, "COSNAP01", 8), 0);

    assert_int_equal(store_restore(g->s, snap, len, &replaced), 0);
    assert_int_equal(replaced, 1);
    free(snap);
    digest(f, a);
    digest(g, b);
    assert_memory_equal(a, b, STORE_DIGEST_SIZE);
    assert_int_equal(store_applied_index(g->s), f->index);

    /* Both go on applying the same entries to the same state. */
    g->index = f->index;
    g->time = f->time;
    run_ok(f, op_of(K(ACCEPT), report(f)));
    fx_apply_raw(g, f->log[f->n_log - 2].index, f->log[f->n_log - 2].buf,
                 f->log[f->n_log - 2].len);
    fx_apply_raw(g, f->log[f->n_log - 1].index, f->log[f->n_log - 1].buf,
                 f->log[f->n_log - 1].len);
    digest(f, a);
    digest(g, b);
    assert_memory_equal(a, b, STORE_DIGEST_SIZE);
    fx_free(g);
}

/* The mapped parts concatenate to the same bytes as store_snapshot() and
 * restore the same state; a damaged payload byte is refused. */
static void test_snapshot_parts_are_the_snapshot_bytes(void **state)
{
    struct fx *f = *state;
    struct fx *g = fx_new(0);
    struct store_snapshot_parts p;
    uint8_t a[STORE_DIGEST_SIZE];
    uint8_t b[STORE_DIGEST_SIZE];
    uint8_t *cat;
    size_t len;
    size_t clen;
    void *snap;
    int replaced = -1;

    make_case_in(f, S(CLOSED));
    report(f);
    assert_int_equal(store_snapshot(f->s, &snap, &len), 0);
    assert_int_equal(store_snapshot_parts(f->s, &p), 0);
    clen = sizeof(p.header) + p.payload_len + sizeof(p.trailer);
    assert_int_equal(clen, len);
    cat = malloc(clen);
    assert_non_null(cat);
    memcpy(cat, p.header, sizeof(p.header));
    memcpy(cat + sizeof(p.header), p.payload, p.payload_len);
    memcpy(cat + sizeof(p.header) + p.payload_len, p.trailer,
           sizeof(p.trailer));
    assert_memory_equal(cat, snap, len);
    store_snapshot_parts_free(&p);
    assert_null(p.payload);
    free(snap);

    cat[sizeof(p.header) + 100] ^= 0x40;
    assert_int_equal(store_restore(g->s, cat, clen, &replaced), STORE_CORRUPT);
    assert_int_equal(store_applied_index(g->s), 0);
    cat[sizeof(p.header) + 100] ^= 0x40;
    assert_int_equal(store_restore(g->s, cat, clen, &replaced), 0);
    assert_int_equal(replaced, 1);
    free(cat);
    digest(f, a);
    digest(g, b);
    assert_memory_equal(a, b, STORE_DIGEST_SIZE);
    fx_free(g);
}

static void test_restore_of_an_older_snapshot_keeps_local_state(void **state)
{
    struct fx *f = *state;
    uint8_t before[STORE_DIGEST_SIZE];
    uint8_t after[STORE_DIGEST_SIZE];
    int replaced = -1;
    size_t len;
    void *snap;

    report(f);
    assert_int_equal(store_snapshot(f->s, &snap, &len), 0);
    report(f);
    digest(f, before);
    assert_int_equal(store_restore(f->s, snap, len, &replaced), 0);
    assert_int_equal(replaced, 0);
    free(snap);
    digest(f, after);
    assert_memory_equal(before, after, STORE_DIGEST_SIZE);
    assert_int_equal(store_case_count(f->s), 2);
}

static void test_corrupt_snapshot_is_refused_and_state_untouched(void **state)
{
    struct fx *f = *state;
    struct fx *g = fx_new(0);
    uint8_t before[STORE_DIGEST_SIZE];
    uint8_t after[STORE_DIGEST_SIZE];
    uint8_t *bad;
    uint64_t index;
    int replaced = -1;
    size_t len;
    void *snap;

    make_case_in(f, S(DISPATCHED));
    assert_int_equal(store_snapshot(f->s, &snap, &len), 0);
    report(g);
    digest(g, before);
    bad = malloc(len);
    assert_non_null(bad);

    memcpy(bad, snap, len); /* a flipped payload byte */
    bad[len / 2] ^= 0x40;
    assert_int_equal(store_restore(g->s, bad, len, &replaced), STORE_CORRUPT);
    assert_int_equal(replaced, 0);
    memcpy(bad, snap, len); /* bad magic */
    bad[0] = 'X';
    assert_int_equal(store_restore(g->s, bad, len, &replaced), STORE_CORRUPT);
    assert_int_equal(store_snapshot_index(bad, len, &index), STORE_CORRUPT);
    memcpy(bad, snap, len); /* truncated */
    assert_int_equal(store_restore(g->s, bad, len - 100, &replaced),
                     STORE_CORRUPT);
    assert_int_equal(store_snapshot_index(bad, len - 1, &index), STORE_CORRUPT);
    assert_int_equal(store_restore(g->s, bad, 10, &replaced), STORE_CORRUPT);

    digest(g, after);
    assert_memory_equal(before, after, STORE_DIGEST_SIZE);
    assert_int_equal(store_case_count(g->s), 1);
    assert_int_equal(report(g), 2); /* still writable */
    free(bad);
    free(snap);
    fx_free(g);
}

static void test_snapshot_whose_content_lacks_its_index_is_corrupt(void **state)
{
    struct fx *f = *state;
    struct fx *g = fx_new(0);
    uint8_t before[STORE_DIGEST_SIZE];
    uint8_t after[STORE_DIGEST_SIZE];
    unsigned int n;
    int replaced = -1;
    uint8_t *snap;
    size_t len;

    report(f);
    assert_int_equal(store_snapshot(f->s, (void **)&snap, &len), 0);
    /* Claim a higher index than the copy holds, with a valid checksum:
     * the content check must catch it. */
    snap[8 + 7] += 5;
    digest(g, before);
    assert_int_equal(store_restore(g->s, snap, len, &replaced), STORE_CORRUPT);
    assert_int_equal(replaced, 0);
    /* Garbage payload with a matching checksum does not open as LMDB. */
    memset(snap + 24, 0x5a, len - 24 - 32);
    EVP_Digest(snap + 24, len - 24 - 32, snap + len - 32, &n, EVP_sha256(),
               NULL);
    assert_int_equal(store_restore(g->s, snap, len, &replaced), STORE_CORRUPT);
    digest(g, after);
    assert_memory_equal(before, after, STORE_DIGEST_SIZE);
    free(snap);
    fx_free(g);
}

struct reader {
    struct store *s;
    volatile int stop;
    int errors;
    int reads;
};

static void *reader_main(void *arg)
{
    struct reader *r = arg;

    while (!r->stop) {
        Cityops__V1__Case *c = NULL;

        if (store_case_get(r->s, 1, &c, NULL) != 0) {
            r->errors++;
        } else {
            cityops__v1__case__free_unpacked(c, NULL);
        }
        r->reads++;
    }
    return NULL;
}

static void test_readers_wait_while_restore_swaps_the_environment(void **state)
{
    struct fx *f = *state;
    struct fx *g = fx_new(0);
    struct reader r = {g->s, 0, 0, 0};
    pthread_t t;
    void *snaps[10];
    size_t lens[10];

    for (int i = 0; i < 10; i++) {
        report(f);
        assert_int_equal(store_snapshot(f->s, &snaps[i], &lens[i]), 0);
    }
    report(g);
    assert_int_equal(pthread_create(&t, NULL, reader_main, &r), 0);
    for (int i = 1; i < 10; i++) {
        int replaced = 0;

        assert_int_equal(store_restore(g->s, snaps[i], lens[i], &replaced), 0);
        assert_int_equal(replaced, 1);
    }
    r.stop = 1;
    pthread_join(t, NULL);
    assert_int_equal(r.errors, 0);
    assert_true(r.reads > 0);
    assert_int_equal(store_case_count(g->s), 10);
    for (int i = 0; i < 10; i++) {
        free(snaps[i]);
    }
    fx_free(g);
}

/* Environment failures. */

static void test_full_map_returns_full_and_keeps_earlier_data(void **state)
{
    struct fx *f = fx_new(256 * 1024);
    char desc[STORE_MAX_DESCRIPTION + 1];
    uint64_t applied = 0;
    uint64_t count = 0;
    struct op o = op_of(K(REPORT), 0);
    Cityops__V1__Case *c = NULL;
    int rv = 0;

    (void)state;
    memset(desc, 'd', sizeof(desc) - 1);
    desc[sizeof(desc) - 1] = '\0';
    o.description = desc;
    for (int i = 0; rv == 0 && i < 10000; i++) {
        applied = store_applied_index(f->s);
        count = store_case_count(f->s);
        rv = fx_try(f, &o, 1);
    }
    assert_int_equal(rv, STORE_FULL);
    assert_non_null(strstr(store_errmsg(f->s), "MDB_MAP_FULL"));
    assert_true(count > 1);
    assert_int_equal(f->last.n, 0);
    assert_null(f->last.results);
    /* Nothing of the failed entry is stored; earlier data is readable. */
    assert_int_equal(store_applied_index(f->s), applied);
    assert_int_equal(store_case_count(f->s), count);
    assert_int_equal(store_case_get(f->s, 1, &c, NULL), 0);
    assert_string_equal(c->description, desc);
    cityops__v1__case__free_unpacked(c, NULL);
    fx_free(f);
}

static void test_second_open_of_a_data_directory_is_busy(void **state)
{
    struct fx *f = *state;
    struct store *s2 = NULL;

    assert_int_equal(store_open(f->dir, NULL, &s2), STORE_BUSY);
    assert_null(s2);
    assert_string_equal(store_strerror(STORE_BUSY), "data directory busy");
}

static void test_state_survives_close_and_reopen(void **state)
{
    struct fx *f = *state;
    uint8_t before[STORE_DIGEST_SIZE];
    uint8_t after[STORE_DIGEST_SIZE];

    make_case_in(f, S(CHECKED));
    digest(f, before);
    store_close(f->s);
    assert_int_equal(store_open(f->dir, NULL, &f->s), 0);
    digest(f, after);
    assert_memory_equal(before, after, STORE_DIGEST_SIZE);
    assert_int_equal(store_applied_index(f->s), f->index);
    assert_int_equal(report(f), 2);
}

/* Resident kB of this process's mappings of the data file in @dir. */
static long mapped_kb(const char *dir)
{
    char want[PATH_MAX], line[PATH_MAX + 128];
    unsigned long lo, hi;
    int in_map = 0;
    long kb = 0, v;
    FILE *m = fopen("/proc/self/smaps", "r");

    assert_non_null(m);
    snprintf(want, sizeof want, "%s/data.mdb\n", dir);
    while (fgets(line, sizeof line, m) != NULL) {
        size_t n = strlen(line), w = strlen(want);

        if (sscanf(line, "%lx-%lx ", &lo, &hi) == 2) {
            in_map = n >= w && strcmp(line + n - w, want) == 0;
        } else if (in_map && sscanf(line, "Rss: %ld kB", &v) == 1) {
            kb += v;
        }
    }
    fclose(m);
    return kb;
}

/* store_unmap() leaves nothing of the data file mapped and changes nothing
 * a reader or a writer sees. */
static void test_unmap_drops_the_mapped_pages_only(void **state)
{
    struct fx *f = *state;
    uint8_t before[STORE_DIGEST_SIZE], after[STORE_DIGEST_SIZE];

    for (int i = 0; i < 300; i++) {
        report(f);
    }
    digest(f, before); /* reads every page */
    assert_true(mapped_kb(f->dir) > 0);
    assert_int_equal(store_unmap(f->s), 0);
    assert_int_equal(mapped_kb(f->dir), 0);
    digest(f, after);
    assert_memory_equal(before, after, STORE_DIGEST_SIZE);
    assert_true(mapped_kb(f->dir) > 0);
    assert_int_equal(state_of(f, 300), S(REPORTED));
    assert_int_equal(report(f), 301);
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_report_numbers_cases_and_stamps_the_command_time),
        T(test_unmap_drops_the_mapped_pages_only),
        T(test_report_source_follows_role_unless_given),
        T(test_report_by_dispatcher_is_permission_denied),
        T(test_every_event_in_every_state_is_allowed_only_by_the_table),
        T(test_illegal_event_message_names_state_and_event),
        T(test_close_on_reported_case_fails_precondition),
        T(test_wrong_role_is_permission_denied_and_changes_nothing),
        T(test_permission_message_names_role_and_event),
        T(test_checks_run_fields_then_case_then_role_then_state),
        T(test_unknown_case_is_not_found),
        T(test_invalid_fields_are_invalid_argument),
        T(test_lifecycle_stamps_command_times_and_history_in_order),
        T(test_return_remembers_department_and_redispatch_counts_moves),
        T(test_request_check_by_the_disposer_is_denied),
        T(test_check_result_by_another_inspector_is_denied),
        T(test_close_after_failed_check_needs_special),
        T(test_system_may_close_a_passed_check),
        T(test_rework_returns_failed_check_to_same_department),
        T(test_shelve_remembers_origin_and_unshelve_registers),
        T(test_merge_links_both_cases_and_needs_an_open_target),
        T(test_extension_one_pending_and_approval_moves_deadline),
        T(test_verify_result_returns_case_to_reported),
        T(test_apply_is_independent_of_the_clock),
        T(test_batch_gives_one_result_per_command_and_max_time),
        T(test_two_environments_applying_the_same_log_have_equal_digests),
        T(test_reapplying_an_applied_index_is_skipped),
        T(test_replayed_retry_key_returns_first_result_and_applies_once),
        T(test_replayed_refusal_is_returned_again),
        T(test_stale_retry_key_is_refused),
        T(test_batch_that_does_not_decode_is_recorded_as_applied),
        T(test_list_filters_and_pages_in_case_id_order),
        T(test_list_page_size_is_capped),
        T(test_snapshot_restored_into_another_env_gives_equal_digest),
        T(test_snapshot_parts_are_the_snapshot_bytes),
        T(test_restore_of_an_older_snapshot_keeps_local_state),
        T(test_corrupt_snapshot_is_refused_and_state_untouched),
        T(test_snapshot_whose_content_lacks_its_index_is_corrupt),
        T(test_readers_wait_while_restore_swaps_the_environment),
        T(test_full_map_returns_full_and_keeps_earlier_data),
        T(test_second_open_of_a_data_directory_is_busy),
        T(test_state_survives_close_and_reopen),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
