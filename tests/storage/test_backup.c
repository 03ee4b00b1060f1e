/* Unit tests of disaster recovery in storage/: the cluster id and drill
 * records, injected faults, backup files (write, verify, restore), the
 * command archive and point-in-time restore through it.
 *
 * Every test works in a fresh mkdtemp() directory, removed afterwards. A
 * point-in-time restore is checked against a reference store that applied
 * only the same prefix of the log: equal digests mean equal state.
 */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>
#include <lmdb.h>

#include "storage/store.h"

#define T0 1700000000000000LL
#define SEC 1000000LL
#define R(x) CITYOPS__V1__ROLE__ROLE_##x
#define RC(x) CITYOPS__V1__RESULT_CODE__RESULT_##x

/* One packed entry of the log a test builds. */
struct entry {
    uint64_t index;
    uint8_t *buf;
    size_t len;
    int64_t first_time; /* of its first command */
    size_t n;           /* commands */
};

struct fx {
    char root[64]; /* everything of the test lives under it */
    char dir[128]; /* the store */
    char archive[128];
    struct store *s;
    uint64_t index;
    int64_t time;
    struct entry *log; /* every applied entry, grown as needed */
    size_t n_log;
    size_t cap_log;
};

static int rm_one(const char *path,
                  const struct stat *sb,
                  int flag,
                  struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static void store_at(struct fx *f, const char *archive)
{
    struct store_options o = {.archive_dir = archive};

    assert_int_equal(store_open(f->dir, &o, &f->s), 0);
}

static int setup(void **state)
{
    struct fx *f = calloc(1, sizeof(*f));

    assert_non_null(f);
    strcpy(f->root, "/tmp/cityops-backup-XXXXXX");
    assert_non_null(mkdtemp(f->root));
    snprintf(f->dir, sizeof(f->dir), "%s/node", f->root);
    snprintf(f->archive, sizeof(f->archive), "%s/archive", f->root);
    assert_int_equal(mkdir(f->dir, 0755), 0);
    f->time = T0;
    store_at(f, f->archive);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fx *f = *state;

    store_close(f->s);
    for (size_t i = 0; i < f->n_log; i++) {
        free(f->log[i].buf);
    }
    free(f->log);
    nftw(f->root, rm_one, 16, FTW_DEPTH | FTW_PHYS);
    free(f);
    return 0;
}

static void path_of(struct fx *f, char *buf, size_t size, const char *name)
{
    snprintf(buf, size, "%s/%s", f->root, name);
}

/* --- building commands --- */

static Cityops__V1__Command *report_cmd(int64_t time, const char *desc)
{
    Cityops__V1__Command *c = calloc(1, sizeof(*c));
    Cityops__V1__ReportRequest *r = calloc(1, sizeof(*r));
    Cityops__V1__Location *loc = calloc(1, sizeof(*loc));

    assert_true(c != NULL && r != NULL && loc != NULL);
    cityops__v1__command__init(c);
    cityops__v1__report_request__init(r);
    cityops__v1__location__init(loc);
    loc->lon = 116.4;
    loc->lat = 39.9;
    loc->grid_code = "11010100100101";
    r->category_type = CITYOPS__V1__CATEGORY_TYPE__CATEGORY_TYPE_EVENT;
    r->major_code = "01";
    r->minor_code = "02";
    r->description = (char *)desc;
    r->location = loc;
    c->time = time;
    c->actor_id = "insp-1";
    c->role = R(INSPECTOR);
    c->op_case = CITYOPS__V1__COMMAND__OP_REPORT;
    c->report = r;
    return c;
}

static void cmd_free(Cityops__V1__Command *c)
{
    if (c->op_case == CITYOPS__V1__COMMAND__OP_REPORT) {
        free(c->report->location);
        free(c->report);
    }
    free(c);
}

/* Pack @n commands, apply them at @index and keep the entry in the log.
 * Returns store_apply_batch()'s code; *codes (optional) the results'. */
static int apply_at(struct fx *f,
                    uint64_t index,
                    Cityops__V1__Command **cmds,
                    size_t n,
                    int *codes)
{
    Cityops__V1__CommandBatch b = CITYOPS__V1__COMMAND_BATCH__INIT;
    struct store_results res;
    struct entry *e;
    int rv;

    if (f->n_log == f->cap_log) {
        f->cap_log = f->cap_log * 2 + 64;
        f->log = realloc(f->log, f->cap_log * sizeof(*f->log));
        assert_non_null(f->log);
    }
    e = &f->log[f->n_log];
    b.n_commands = n;
    b.commands = cmds;
    e->len = cityops__v1__command_batch__get_packed_size(&b);
    e->buf = malloc(e->len + 1);
    assert_non_null(e->buf);
    cityops__v1__command_batch__pack(&b, e->buf);
    e->index = index;
    e->first_time = n > 0 ? cmds[0]->time : 0;
    e->n = n;
    rv = store_apply_batch(f->s, index, e->buf, e->len, &res);
    if (rv != 0) {
        free(e->buf);
        return rv;
    }
    f->n_log++;
    f->index = index;
    assert_int_equal(res.n, n);
    for (size_t i = 0; codes != NULL && i < n; i++) {
        codes[i] = res.results[i]->code;
    }
    store_results_free(&res);
    return 0;
}

static int apply1(struct fx *f, Cityops__V1__Command *c)
{
    int code = -1;

    assert_int_equal(apply_at(f, f->index + 1, &c, 1, &code), 0);
    return code;
}

/* @n reports one second apart at index @index. */
static void reports_at(struct fx *f, uint64_t index, size_t n)
{
    Cityops__V1__Command *cmds[16];
    int codes[16];

    assert_true(n <= 16);
    for (size_t i = 0; i < n; i++) {
        f->time += SEC;
        cmds[i] = report_cmd(f->time, "overflowing bin by the school gate");
    }
    assert_int_equal(apply_at(f, index, cmds, n, codes), 0);
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(codes[i], RC(OK));
        cmd_free(cmds[i]);
    }
}

static int cluster_init(struct fx *f, Cityops__V1__Role role, const char *id)
{
    Cityops__V1__Command c = CITYOPS__V1__COMMAND__INIT;
    Cityops__V1__ClusterInit ci = CITYOPS__V1__CLUSTER_INIT__INIT;

    ci.cluster_id = (char *)id;
    c.time = f->time;
    c.actor_id = "node-1";
    c.role = role;
    c.op_case = CITYOPS__V1__COMMAND__OP_CLUSTER_INIT;
    c.cluster_init = &ci;
    return apply1(f, &c);
}

static int drill(struct fx *f,
                 Cityops__V1__Role role,
                 const char *id,
                 const char *summary)
{
    Cityops__V1__Command c = CITYOPS__V1__COMMAND__INIT;
    Cityops__V1__DrillRecord d = CITYOPS__V1__DRILL_RECORD__INIT;

    d.drill_id = (char *)id;
    d.scenario = "kill-leader";
    d.passed = 1;
    d.rto_write_s = 1.5;
    d.summary = (char *)summary;
    c.time = f->time;
    c.actor_id = "ops";
    c.role = role;
    c.op_case = CITYOPS__V1__COMMAND__OP_DRILL_RECORD;
    c.drill_record = &d;
    return apply1(f, &c);
}

static void digest(struct store *s, uint8_t out[STORE_DIGEST_SIZE])
{
    assert_int_equal(store_digest(s, out, NULL), 0);
}

static void write_backup(struct fx *f,
                         const char *name,
                         Cityops__V1__BackupInfo **info)
{
    char path[256];
    uint8_t sum[32];
    int fd;

    path_of(f, path, sizeof(path), name);
    fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    assert_true(fd >= 0);
    assert_int_equal(
        store_backup_write(f->s, fd, 7, T0 + 99, NULL, NULL, info, sum), 0);
    assert_int_equal(close(fd), 0);
}

static int file_exists(const char *path)
{
    return access(path, F_OK) == 0;
}

/* --- cluster id, drills, faults --- */

static void test_cluster_init_needs_system_and_sets_the_id_once(void **state)
{
    struct fx *f = *state;
    char id[STORE_CLUSTER_ID_SIZE];
    char from[STORE_RESTORED_FROM_SIZE];
    char big[STORE_CLUSTER_ID_SIZE + 1];

    memset(big, 'a', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    assert_int_equal(cluster_init(f, R(ADMIN), "c1"), RC(PERMISSION_DENIED));
    assert_int_equal(cluster_init(f, R(SYSTEM), ""), RC(INVALID_ARGUMENT));
    assert_int_equal(cluster_init(f, R(SYSTEM), big), RC(INVALID_ARGUMENT));
    assert_int_equal(cluster_init(f, R(SYSTEM), "../x"), RC(INVALID_ARGUMENT));
    assert_int_equal(store_cluster_id(f->s, id, from), 0);
    assert_string_equal(id, "");
    assert_string_equal(from, "");

    assert_int_equal(cluster_init(f, R(SYSTEM), "city-45.a"), RC(OK));
    assert_int_equal(cluster_init(f, R(SYSTEM), "other"), RC(OK));
    assert_int_equal(store_cluster_id(f->s, id, NULL), 0);
    assert_string_equal(id, "city-45.a");
}

static void test_cluster_init_and_drills_are_audited(void **state)
{
    struct fx *f = *state;
    Cityops__V1__AuditListRequest req = CITYOPS__V1__AUDIT_LIST_REQUEST__INIT;
    Cityops__V1__AuditListResponse *out = NULL;

    cluster_init(f, R(SYSTEM), "c1");
    drill(f, R(ADMIN), "d1", "ok");
    assert_int_equal(store_audit_list(f->s, &req, &out), 0);
    assert_int_equal(out->n_records, 2);
    assert_string_equal(out->records[0]->operation, "cluster_init");
    assert_string_equal(out->records[0]->target, "cluster/id");
    assert_string_equal(out->records[1]->operation, "drill_record");
    assert_string_equal(out->records[1]->target, "drill/2");
    assert_int_equal(out->records[1]->after_sha256.len, 32);
    cityops__v1__audit_list_response__free_unpacked(out, NULL);
}

static void test_drill_records_need_admin_and_keep_the_newest(void **state)
{
    struct fx *f = *state;
    Cityops__V1__DrillRecord **d = NULL;
    char big[STORE_MAX_TEXT + 2];
    char id[32];
    size_t n = 0;

    memset(big, 'x', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    assert_int_equal(drill(f, R(DISPATCHER), "d0", "x"),
                     RC(PERMISSION_DENIED));
    assert_int_equal(drill(f, R(ADMIN), "d0", big), RC(INVALID_ARGUMENT));
    assert_int_equal(store_drill_list(f->s, 0, &d, &n), 0);
    assert_int_equal(n, 0);
    free(d);

    for (int i = 0; i < STORE_DRILLS_KEEP + 3; i++) {
        snprintf(id, sizeof(id), "d%d", i);
        assert_int_equal(drill(f, i % 2 ? R(SYSTEM) : R(ADMIN), id, "passed"),
                         RC(OK));
    }
    assert_int_equal(store_drill_list(f->s, 0, &d, &n), 0);
    assert_int_equal(n, 50);
    assert_string_equal(d[0]->drill_id, "d953");
    assert_string_equal(d[49]->drill_id, "d1002");
    assert_true(d[49]->passed);
    for (size_t i = 0; i < n; i++) {
        cityops__v1__drill_record__free_unpacked(d[i], NULL);
    }
    free(d);
    assert_int_equal(store_drill_list(f->s, 5000, &d, &n), 0);
    assert_int_equal(n, STORE_DRILLS_KEEP);
    assert_string_equal(d[0]->drill_id, "d3");
    for (size_t i = 0; i < n; i++) {
        cityops__v1__drill_record__free_unpacked(d[i], NULL);
    }
    free(d);
}

static void test_injected_fault_refuses_entries_until_cleared(void **state)
{
    struct fx *f = *state;
    Cityops__V1__Command *c = report_cmd(T0, "pothole");
    uint8_t before[STORE_DIGEST_SIZE];
    uint8_t after[STORE_DIGEST_SIZE];

    reports_at(f, 1, 1);
    digest(f->s, before);
    store_fault_set(f->s, STORE_FULL);
    assert_int_equal(apply_at(f, 2, &c, 1, NULL), STORE_FULL);
    assert_non_null(strstr(store_errmsg(f->s), "injected by a drill"));
    store_fault_set(f->s, STORE_IOERR);
    assert_int_equal(apply_at(f, 2, &c, 1, NULL), STORE_IOERR);
    digest(f->s, after);
    assert_memory_equal(before, after, STORE_DIGEST_SIZE);
    assert_int_equal(store_applied_index(f->s), 1);

    store_fault_set(f->s, 0);
    assert_int_equal(apply_at(f, 2, &c, 1, NULL), 0);
    assert_int_equal(store_applied_index(f->s), 2);
    assert_int_equal(store_case_count(f->s), 2);
    cmd_free(c);
}

/* Rewrite f's closed environment as schema 1 had it: no drills database,
 * schema_version 1. Returns the schema version found first. */
static uint64_t schema_set_v1(struct fx *f)
{
    MDB_env *env;
    MDB_txn *txn;
    MDB_dbi meta;
    MDB_dbi drills;
    MDB_val k = {14, "schema_version"};
    MDB_val v;
    uint8_t one[8] = {0, 0, 0, 0, 0, 0, 0, 1};
    uint64_t was = 0;

    assert_int_equal(mdb_env_create(&env), 0);
    assert_int_equal(mdb_env_set_maxdbs(env, 32), 0);
    assert_int_equal(mdb_env_open(env, f->dir, 0, 0644), 0);
    assert_int_equal(mdb_txn_begin(env, NULL, 0, &txn), 0);
    assert_int_equal(mdb_dbi_open(txn, "meta", 0, &meta), 0);
    assert_int_equal(mdb_get(txn, meta, &k, &v), 0);
    for (size_t i = 0; i < v.mv_size; i++) {
        was = was << 8 | ((uint8_t *)v.mv_data)[i];
    }
    v.mv_size = sizeof(one);
    v.mv_data = one;
    assert_int_equal(mdb_put(txn, meta, &k, &v, 0), 0);
    assert_int_equal(mdb_dbi_open(txn, "drills", 0, &drills), 0);
    assert_int_equal(mdb_drop(txn, drills, 1), 0);
    assert_int_equal(mdb_txn_commit(txn), 0);
    mdb_env_close(env);
    return was;
}

static void test_schema_1_store_is_upgraded_when_opened(void **state)
{
    struct fx *f = *state;
    Cityops__V1__DrillRecord **d = NULL;
    size_t n = 0;

    reports_at(f, 1, 2);
    store_close(f->s);
    f->s = NULL;
    assert_true(schema_set_v1(f) >= 2); /* the current version */
    store_at(f, NULL);
    assert_int_equal(store_case_count(f->s), 2);
    assert_int_equal(drill(f, R(ADMIN), "d1", "ok"), RC(OK));
    assert_int_equal(store_drill_list(f->s, 0, &d, &n), 0);
    assert_int_equal(n, 1);
    cityops__v1__drill_record__free_unpacked(d[0], NULL);
    free(d);
    store_close(f->s);
    f->s = NULL;
    assert_true(schema_set_v1(f) >= 2); /* the current version */ /* it was stamped 2 again */
    store_at(f, NULL);
}

/* --- backups --- */

static void
test_backup_restores_into_a_new_cluster_with_an_equal_digest(void **state)
{
    struct fx *f = *state;
    struct store_restore_result res;
    Cityops__V1__BackupInfo *info = NULL;
    Cityops__V1__BackupInfo *checked = NULL;
    Cityops__V1__DrillRecord **d = NULL;
    Cityops__V1__Case *c = NULL;
    uint8_t a[STORE_DIGEST_SIZE];
    uint8_t b[STORE_DIGEST_SIZE];
    uint8_t head_a[STORE_HASH_SIZE];
    uint8_t head_b[STORE_HASH_SIZE];
    char id[STORE_CLUSTER_ID_SIZE];
    char from[STORE_RESTORED_FROM_SIZE];
    char path[256];
    char dir[256];
    char err[256];
    uint64_t size_a;
    uint64_t size_b;
    struct store *r;
    size_t n;

    cluster_init(f, R(SYSTEM), "c1");
    for (int i = 0; i < 5; i++) {
        reports_at(f, f->index + 2, 3); /* holes: non-command entries */
    }
    drill(f, R(ADMIN), "old", "first");
    write_backup(f, "b1", &info);
    assert_string_equal(info->cluster_id, "c1");
    assert_int_equal(info->applied_index, f->index);
    assert_int_equal(info->case_count, 15);
    assert_int_equal(info->audit_size, 17);
    assert_int_equal(info->node_id, 7);
    assert_int_equal(info->created_at, T0 + 99);
    assert_int_equal(info->last_time, f->time);
    assert_true(info->payload_bytes > 0);

    path_of(f, path, sizeof(path), "b1");
    assert_int_equal(store_backup_verify(path, NULL, NULL, &checked, err,
                                         sizeof(err)),
                     0);
    assert_int_equal(checked->applied_index, info->applied_index);
    assert_memory_equal(checked->audit_head.data, info->audit_head.data, 32);

    path_of(f, dir, sizeof(dir), "restored");
    assert_int_equal(store_backup_restore(path, dir, NULL, NULL, NULL, &res,
                                          err, sizeof(err)),
                     0);
    assert_int_equal(res.backup_index, f->index);
    assert_int_equal(res.reached_index, f->index);
    assert_int_equal(res.reached_time, f->time);
    assert_int_equal(res.audit_size, 17);
    assert_string_equal(res.cluster_id, "c1");

    assert_int_equal(store_open(dir, NULL, &r), 0);
    digest(f->s, a);
    digest(r, b);
    assert_memory_equal(a, b, STORE_DIGEST_SIZE);
    assert_int_equal(store_applied_index(r), 0);
    assert_int_equal(store_cluster_id(r, id, from), 0);
    assert_string_equal(id, "");
    snprintf(path, sizeof(path), "c1@%llu", (unsigned long long)f->index);
    assert_string_equal(from, path);
    assert_int_equal(store_case_get(r, 15, &c, NULL), 0);
    assert_string_equal(c->description, "overflowing bin by the school gate");
    cityops__v1__case__free_unpacked(c, NULL);
    assert_int_equal(store_audit_head(f->s, &size_a, head_a), 0);
    assert_int_equal(store_audit_head(r, &size_b, head_b), 0);
    assert_int_equal(size_a, size_b);
    assert_memory_equal(head_a, head_b, STORE_HASH_SIZE);

    /* The new cluster's log starts at 1; its drills sort after the old. */
    store_close(f->s);
    f->s = r;
    f->index = 0;
    assert_int_equal(drill(f, R(ADMIN), "new", "second"), RC(OK));
    assert_int_equal(store_drill_list(f->s, 0, &d, &n), 0);
    assert_int_equal(n, 2);
    assert_string_equal(d[0]->drill_id, "old");
    assert_string_equal(d[1]->drill_id, "new");
    for (size_t i = 0; i < n; i++) {
        cityops__v1__drill_record__free_unpacked(d[i], NULL);
    }
    free(d);
    assert_int_equal(store_audit_head(f->s, &size_b, head_b), 0);
    assert_int_equal(size_b, size_a + 1);
    cityops__v1__backup_info__free_unpacked(info, NULL);
    cityops__v1__backup_info__free_unpacked(checked, NULL);
}

static void test_restore_refuses_a_dir_that_holds_a_store(void **state)
{
    struct fx *f = *state;
    uint8_t before[STORE_DIGEST_SIZE];
    uint8_t after[STORE_DIGEST_SIZE];
    char path[256];
    char err[256];

    reports_at(f, 1, 2);
    write_backup(f, "b1", NULL);
    path_of(f, path, sizeof(path), "b1");
    reports_at(f, 2, 1);
    digest(f->s, before);

    /* Open: locked. */
    assert_int_equal(store_backup_restore(path, f->dir, NULL, NULL, NULL,
                                          NULL, err, sizeof(err)),
                     STORE_BUSY);
    assert_non_null(strstr(err, "locked"));
    /* Closed: it holds data.mdb. */
    store_close(f->s);
    f->s = NULL;
    assert_int_equal(store_backup_restore(path, f->dir, NULL, NULL, NULL,
                                          NULL, err, sizeof(err)),
                     STORE_BUSY);
    assert_non_null(strstr(err, "data.mdb"));
    store_at(f, NULL);
    digest(f->s, after);
    assert_memory_equal(before, after, STORE_DIGEST_SIZE);
    assert_int_equal(store_case_count(f->s), 3);
}

/* Copy backup @src to @dst with @len bytes, flipping byte @flip (or -1). */
static void damaged_copy(const char *src,
                         const char *dst,
                         size_t len,
                         long flip)
{
    FILE *in = fopen(src, "rb");
    FILE *out = fopen(dst, "wb");
    int ch;

    assert_true(in != NULL && out != NULL);
    for (long i = 0; (size_t)i < len && (ch = fgetc(in)) != EOF; i++) {
        fputc(i == flip ? ch ^ 0x10 : ch, out);
    }
    fclose(in);
    fclose(out);
}

static void assert_refused(struct fx *f, const char *bad, const char *what)
{
    char dir[256];
    char err[256];
    char mdb[300];
    int rv;

    rv = store_backup_verify(bad, NULL, NULL, NULL, err, sizeof(err));
    assert_int_equal(rv, STORE_CORRUPT);
    assert_non_null(strstr(err, what));
    path_of(f, dir, sizeof(dir), "target");
    rv = store_backup_restore(bad, dir, NULL, NULL, NULL, NULL, err,
                              sizeof(err));
    assert_int_equal(rv, STORE_CORRUPT);
    snprintf(mdb, sizeof(mdb), "%s/data.mdb", dir);
    assert_false(file_exists(mdb));
}

static void test_verify_refuses_damaged_backups(void **state)
{
    struct fx *f = *state;
    char good[256];
    char bad[256];
    char err[256];
    struct stat st;
    FILE *g;

    cluster_init(f, R(SYSTEM), "c1");
    reports_at(f, 2, 8);
    write_backup(f, "good", NULL);
    path_of(f, good, sizeof(good), "good");
    path_of(f, bad, sizeof(bad), "bad");
    assert_int_equal(stat(good, &st), 0);
    assert_int_equal(
        store_backup_verify(good, NULL, NULL, NULL, err, sizeof(err)), 0);

    damaged_copy(good, bad, (size_t)st.st_size - 1000, -1);
    assert_refused(f, bad, "truncated");
    damaged_copy(good, bad, (size_t)st.st_size, st.st_size / 2);
    assert_refused(f, bad, "checksum");
    damaged_copy(good, bad, (size_t)st.st_size, 20); /* in the header */
    assert_refused(f, bad, "");
    damaged_copy(good, bad, (size_t)st.st_size, st.st_size - 5); /* trailer */
    assert_refused(f, bad, "checksum");
    g = fopen(bad, "wb");
    assert_non_null(g);
    for (int i = 0; i < 5000; i++) {
        fputc((i * 7919) & 0xff, g);
    }
    fclose(g);
    assert_refused(f, bad, "magic");
}

/* --- the command archive --- */

/* A log under archiving: init at 1 (first call), then @n entries of 3
 * reports, with a hole (a non-command index) before every third. */
static void archived_log(struct fx *f, size_t n)
{
    if (f->index == 0) {
        assert_int_equal(cluster_init(f, R(SYSTEM), "c1"), RC(OK));
    }
    for (size_t i = 0; i < n; i++) {
        reports_at(f, f->index + (i % 3 == 2 ? 2 : 1), 3);
    }
}

/* A fresh store that applies f's log up to index @to_index and time
 * @to_time (0: no limit), cutting the entry that crosses the time. */
static struct store *reference(struct fx *f, uint64_t to_index, int64_t to_time)
{
    char dir[256];
    struct store *r;

    snprintf(dir, sizeof(dir), "%s/ref-XXXXXX", f->root);
    assert_non_null(mkdtemp(dir));
    assert_int_equal(store_open(dir, NULL, &r), 0);
    for (size_t i = 0; i < f->n_log; i++) {
        struct entry *e = &f->log[i];
        Cityops__V1__CommandBatch *b;
        struct store_results res;
        size_t m = 0;
        size_t n;
        uint8_t *buf;
        size_t len;

        if (to_index != 0 && e->index > to_index) {
            break;
        }
        b = cityops__v1__command_batch__unpack(NULL, e->len, e->buf);
        assert_non_null(b);
        while (m < b->n_commands &&
               (to_time == 0 || b->commands[m]->time <= to_time)) {
            m++;
        }
        if (m == 0 && b->n_commands > 0) {
            cityops__v1__command_batch__free_unpacked(b, NULL);
            break;
        }
        n = b->n_commands;
        b->n_commands = m;
        len = cityops__v1__command_batch__get_packed_size(b);
        buf = malloc(len + 1);
        cityops__v1__command_batch__pack(b, buf);
        b->n_commands = n;
        cityops__v1__command_batch__free_unpacked(b, NULL);
        assert_int_equal(store_apply_batch(r, e->index, buf, len, &res), 0);
        store_results_free(&res);
        free(buf);
        if (m < n) {
            break;
        }
    }
    return r;
}

static void restore_to(struct fx *f,
                       const char *backup,
                       const char *name,
                       uint64_t to_index,
                       int64_t to_time,
                       struct store_restore_result *res,
                       struct store **out)
{
    struct store_restore_opts o = {.to_index = to_index,
                                   .to_time = to_time,
                                   .archive_dir = f->archive};
    char path[256];
    char dir[256];
    char err[256];
    int rv;

    path_of(f, path, sizeof(path), backup);
    path_of(f, dir, sizeof(dir), name);
    rv = store_backup_restore(path, dir, &o, NULL, NULL, res, err,
                              sizeof(err));
    if (rv != 0) {
        fail_msg("restore: %s", err);
    }
    assert_int_equal(store_open(dir, NULL, out), 0);
}

static void assert_same_state(struct store *a, struct store *b)
{
    uint8_t da[STORE_DIGEST_SIZE];
    uint8_t db[STORE_DIGEST_SIZE];

    digest(a, da);
    digest(b, db);
    assert_memory_equal(da, db, STORE_DIGEST_SIZE);
}

static void test_restore_to_an_index_matches_a_store_stopped_there(void **state)
{
    struct fx *f = *state;
    struct store_restore_result res;
    struct store_archive_status st;
    struct store *restored;
    struct store *ref;
    struct store *full;
    uint64_t backup_at;
    uint64_t k;

    archived_log(f, 6);
    backup_at = f->index;
    write_backup(f, "b1", NULL);
    archived_log(f, 12);
    k = f->log[f->n_log - 5].index;

    store_archive_status(f->s, &st);
    assert_string_equal(st.dir, f->archive);
    assert_int_equal(st.first_index, 1);
    assert_int_equal(st.last_index, f->index);
    assert_int_equal(st.segments, 1);
    assert_string_equal(st.error, "");

    restore_to(f, "b1", "r1", k, 0, &res, &restored);
    assert_int_equal(res.backup_index, backup_at);
    assert_int_equal(res.reached_index, k);
    ref = reference(f, k, 0);
    assert_same_state(restored, ref);
    assert_int_equal(store_case_count(restored), store_case_count(ref));
    assert_true(res.replayed_entries > 0);
    assert_int_equal(res.replayed_commands + 18, store_case_count(ref));

    /* No target: everything archived. */
    restore_to(f, "b1", "r2", 0, 0, &res, &full);
    assert_int_equal(res.reached_index, f->index);
    assert_same_state(full, f->s);
    store_close(restored);
    store_close(ref);
    store_close(full);
}

static void test_restore_to_a_time_cuts_inside_an_entry(void **state)
{
    struct fx *f = *state;
    struct store_restore_result res;
    struct store *restored;
    struct store *ref;
    struct entry *cut;
    int64_t t;

    archived_log(f, 4);
    write_backup(f, "b1", NULL);
    archived_log(f, 8);
    cut = &f->log[f->n_log - 4];
    t = cut->first_time + SEC; /* two of its three reports */

    restore_to(f, "b1", "r1", 0, t, &res, &restored);
    assert_int_equal(res.reached_index, cut->index);
    assert_int_equal(res.reached_time, t);
    ref = reference(f, 0, t);
    assert_same_state(restored, ref);
    assert_int_equal(store_case_count(restored), store_case_count(ref));
    assert_int_equal(store_case_count(restored) % 3, 2);
    store_close(restored);
    store_close(ref);

    /* A time past the archive's end replays everything. */
    restore_to(f, "b1", "r2", 0, f->time + 1000 * SEC, &res, &restored);
    assert_int_equal(res.reached_index, f->index);
    assert_same_state(restored, f->s);
    store_close(restored);
}

static void test_archive_gap_stops_a_restore_beyond_it(void **state)
{
    struct fx *f = *state;
    struct store_restore_opts o = {.archive_dir = f->archive};
    struct store_restore_result res;
    struct store_archive_status st;
    struct store *restored;
    struct store *ref;
    uint64_t before_gap;
    char path[256];
    char dir[256];
    char mdb[300];
    char err[256];

    archived_log(f, 3);
    write_backup(f, "b1", NULL);
    reports_at(f, f->index + 1, 3);
    before_gap = f->index;
    /* One entry applied with archiving off: a gap. */
    store_close(f->s);
    store_at(f, NULL);
    reports_at(f, f->index + 1, 3);
    store_close(f->s);
    store_at(f, f->archive);
    reports_at(f, f->index + 1, 3);
    store_archive_status(f->s, &st);
    assert_int_equal(st.segments, 2);
    assert_int_equal(st.last_index, f->index);

    restore_to(f, "b1", "r1", before_gap, 0, &res, &restored);
    ref = reference(f, before_gap, 0);
    assert_same_state(restored, ref);
    store_close(restored);
    store_close(ref);

    path_of(f, path, sizeof(path), "b1");
    path_of(f, dir, sizeof(dir), "r2");
    o.to_index = f->index;
    assert_int_equal(store_backup_restore(path, dir, &o, NULL, NULL, &res,
                                          err, sizeof(err)),
                     STORE_NOTFOUND);
    assert_non_null(strstr(err, "gap after index"));
    snprintf(mdb, sizeof(mdb), "%s/data.mdb", dir);
    assert_false(file_exists(mdb));

    /* An index past the archive's end is refused the same way. */
    o.to_index = f->index + 10;
    path_of(f, dir, sizeof(dir), "r3");
    assert_int_equal(store_backup_restore(path, dir, &o, NULL, NULL, &res,
                                          err, sizeof(err)),
                     STORE_NOTFOUND);
}

/* The one segment of the archive of cluster c1. */
static void segment_path(struct fx *f, char *buf, size_t size)
{
    snprintf(buf, size, "%s/c1/%020d.coarch", f->archive, 1);
}

static void test_torn_archive_tail_is_cut_on_reopen(void **state)
{
    struct fx *f = *state;
    struct store_archive_status st;
    char seg[256];
    struct stat sb;
    off_t good;
    FILE *g;

    archived_log(f, 3);
    segment_path(f, seg, sizeof(seg));
    assert_int_equal(stat(seg, &sb), 0);
    good = sb.st_size;
    store_close(f->s);

    /* Half a record header at the end: cut, nothing lost. */
    g = fopen(seg, "ab");
    assert_non_null(g);
    fwrite("\0\0\0\x20\xde\xad", 1, 6, g);
    fclose(g);
    store_at(f, f->archive);
    assert_int_equal(stat(seg, &sb), 0);
    assert_int_equal(sb.st_size, good);
    store_archive_status(f->s, &st);
    assert_int_equal(st.last_index, f->index);
    assert_int_equal(st.bytes, (uint64_t)good);
    reports_at(f, f->index + 1, 1);
    store_archive_status(f->s, &st);
    assert_int_equal(st.segments, 1); /* the same segment goes on */
    assert_int_equal(st.last_index, f->index);
    assert_int_equal(stat(seg, &sb), 0);
    good = sb.st_size;
    store_close(f->s);

    /* A last record with a damaged byte: dropped. */
    assert_int_equal(truncate(seg, good - 3), 0);
    store_at(f, f->archive);
    store_archive_status(f->s, &st);
    assert_int_equal(st.last_index, f->log[f->n_log - 2].index);
    assert_int_equal(stat(seg, &sb), 0);
    assert_true(sb.st_size < good - 3);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(
            test_cluster_init_needs_system_and_sets_the_id_once, setup,
            teardown),
        cmocka_unit_test_setup_teardown(
            test_cluster_init_and_drills_are_audited, setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_drill_records_need_admin_and_keep_the_newest, setup,
            teardown),
        cmocka_unit_test_setup_teardown(
            test_injected_fault_refuses_entries_until_cleared, setup,
            teardown),
        cmocka_unit_test_setup_teardown(
            test_schema_1_store_is_upgraded_when_opened, setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_backup_restores_into_a_new_cluster_with_an_equal_digest,
            setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_restore_refuses_a_dir_that_holds_a_store, setup, teardown),
        cmocka_unit_test_setup_teardown(test_verify_refuses_damaged_backups,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_restore_to_an_index_matches_a_store_stopped_there, setup,
            teardown),
        cmocka_unit_test_setup_teardown(
            test_restore_to_a_time_cuts_inside_an_entry, setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_archive_gap_stops_a_restore_beyond_it, setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_torn_archive_tail_is_cut_on_reopen, setup, teardown),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
