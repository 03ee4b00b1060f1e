/* Unit tests of public reports in storage/ (public.c) through store.h: the
 * public_report, reopen and redact commands, the private contact, the
 * tracking index, the public feed and its cursor, duplicate hints from the
 * spatial index, refusals that change nothing, and the schema 4 upgrade
 * that rebuilds the indexes and the feed.
 *
 * Every test opens LMDB in a fresh mkdtemp() directory. The contacts
 * database is checked with raw LMDB on the closed environment, since no
 * store read returns a contact.
 */
#include <dirent.h>
#include <math.h>
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

#include "storage/store.h"

#define T0 1767225600000000LL /* 2026-01-01 00:00 UTC */
#define SEC 1000000LL
#define K(x) CITYOPS__V1__COMMAND__OP_##x
#define R(x) CITYOPS__V1__ROLE__ROLE_##x
#define RC(x) CITYOPS__V1__RESULT_CODE__RESULT_##x
#define ST(x) CITYOPS__V1__CASE_STATE__CASE_STATE_##x

#define PHONE "+86 138-0013-8000"
#define EMAIL "Citizen.One@example.org"
#define SHA "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
#define LAT 22.8170
#define LON 108.3665

struct fx {
    char dir[64];
    struct store *s;
    uint64_t index;
    int64_t time;
    struct store_results last;
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

static int setup(void **state)
{
    struct fx *f = calloc(1, sizeof(*f));

    assert_non_null(f);
    strcpy(f->dir, "/tmp/cityops-public-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    assert_int_equal(store_open(f->dir, NULL, &f->s), 0);
    f->time = T0;
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fx *f = *state;

    store_results_free(&f->last);
    if (f->s != NULL) {
        store_close(f->s);
    }
    dir_remove(f->dir);
    free(f);
    return 0;
}

/* Apply one command in its own entry; returns its result (owned by f). */
static Cityops__V1__CommandResult *apply(struct fx *f,
                                         Cityops__V1__Command *cmd)
{
    Cityops__V1__CommandBatch b = CITYOPS__V1__COMMAND_BATCH__INIT;
    Cityops__V1__Command *cp = cmd;
    uint8_t *buf;
    size_t len;

    f->time += SEC;
    cmd->time = f->time;
    b.n_commands = 1;
    b.commands = &cp;
    len = cityops__v1__command_batch__get_packed_size(&b);
    buf = malloc(len + 1);
    assert_non_null(buf);
    cityops__v1__command_batch__pack(&b, buf);
    store_results_free(&f->last);
    f->index++;
    assert_int_equal(store_apply_batch(f->s, f->index, buf, len, &f->last),
                     0);
    free(buf);
    assert_int_equal(f->last.n, 1);
    return f->last.results[0];
}

/* A public report and the messages it points at. */
struct report {
    Cityops__V1__Command c;
    Cityops__V1__PublicReportRequest r;
    Cityops__V1__Contact contact;
    Cityops__V1__Media media[40];
    Cityops__V1__Media *mp[40];
};

static void report_init(struct report *m, double lat, double lon)
{
    memset(m, 0, sizeof(*m));
    cityops__v1__command__init(&m->c);
    cityops__v1__public_report_request__init(&m->r);
    cityops__v1__contact__init(&m->contact);
    m->c.role = R(PUBLIC);
    m->c.actor_id = "open311";
    m->c.op_case = K(PUBLIC_REPORT);
    m->c.public_report = &m->r;
    m->r.service_code = "E-0501";
    m->r.lat = lat;
    m->r.long_ = lon;
    m->r.address_string = "民族大道 100号";
    m->r.description = "stalls block the pavement";
    m->contact.name = "Citizen One";
    m->contact.phone = PHONE;
    m->contact.email = EMAIL;
    m->r.contact = &m->contact;
    for (int i = 0; i < 40; i++) {
        cityops__v1__media__init(&m->media[i]);
        m->media[i].url = "https://photos.example.org/p.jpg";
        m->media[i].sha256 = SHA;
        m->media[i].media_type = "image/jpeg";
        m->mp[i] = &m->media[i];
    }
    m->r.n_media = 3;
    m->r.media = m->mp;
}

static Cityops__V1__Case *report_ok(struct fx *f, struct report *m)
{
    Cityops__V1__CommandResult *res = apply(f, &m->c);

    assert_int_equal(res->code, RC(OK));
    assert_non_null(res->case_);
    return res->case_;
}

static uint64_t report_at(struct fx *f, double lat, double lon)
{
    struct report m;

    report_init(&m, lat, lon);
    return report_ok(f, &m)->case_id;
}

static char *tracking_of(struct fx *f, uint64_t id)
{
    Cityops__V1__Case *c = NULL;
    char *tn;

    assert_int_equal(store_case_get(f->s, id, &c, NULL), 0);
    tn = strdup(c->tracking_no);
    cityops__v1__case__free_unpacked(c, NULL);
    return tn;
}

static Cityops__V1__Case *case_get(struct fx *f, uint64_t id)
{
    Cityops__V1__Case *c = NULL;

    assert_int_equal(store_case_get(f->s, id, &c, NULL), 0);
    return c;
}

/* Case commands of the lifecycle. */
static int act(struct fx *f,
               Cityops__V1__Command__OpCase op,
               uint64_t id,
               Cityops__V1__Role role,
               const char *actor)
{
    Cityops__V1__Command c = CITYOPS__V1__COMMAND__INIT;
    Cityops__V1__CaseActionRequest a = CITYOPS__V1__CASE_ACTION_REQUEST__INIT;
    Cityops__V1__RegisterRequest reg = CITYOPS__V1__REGISTER_REQUEST__INIT;
    Cityops__V1__DispatchRequest d = CITYOPS__V1__DISPATCH_REQUEST__INIT;
    Cityops__V1__ReportDisposalRequest rd =
        CITYOPS__V1__REPORT_DISPOSAL_REQUEST__INIT;
    Cityops__V1__RequestCheckRequest rc =
        CITYOPS__V1__REQUEST_CHECK_REQUEST__INIT;
    Cityops__V1__CheckRequest ck = CITYOPS__V1__CHECK_REQUEST__INIT;
    Cityops__V1__CloseRequest cl = CITYOPS__V1__CLOSE_REQUEST__INIT;
    Cityops__V1__Attachment att = CITYOPS__V1__ATTACHMENT__INIT;
    Cityops__V1__Attachment *attp = &att;

    att.sha256 = SHA;
    att.uri = "https://evidence.example.org/e.jpg";
    c.role = role;
    c.actor_id = (char *)actor;
    c.op_case = op;
    a.case_id = id;
    c.accept = &a;
    switch (op) {
    case K(REGISTER):
        reg.case_id = id;
        reg.condition = "blocked";
        c.register_ = &reg;
        break;
    case K(DISPATCH):
        d.case_id = id;
        d.department_id = "street-order";
        d.disposal_deadline = T0 + 3 * 86400 * SEC;
        c.dispatch = &d;
        break;
    case K(REPORT_DISPOSAL):
        rd.case_id = id;
        rd.n_attachments = 1;
        rd.attachments = &attp;
        c.report_disposal = &rd;
        break;
    case K(REQUEST_CHECK):
        rc.case_id = id;
        rc.inspector_id = "insp-2";
        c.request_check = &rc;
        break;
    case K(CHECK):
        ck.case_id = id;
        ck.passed = 1;
        ck.n_attachments = 1;
        ck.attachments = &attp;
        c.check = &ck;
        break;
    case K(CLOSE):
        cl.case_id = id;
        c.close = &cl;
        break;
    default:
        break;
    }
    return apply(f, &c)->code;
}

static void close_fixed(struct fx *f, uint64_t id)
{
    assert_int_equal(act(f, K(ACCEPT), id, R(INTAKE_CLERK), "clerk"), RC(OK));
    assert_int_equal(act(f, K(REGISTER), id, R(SHIFT_LEADER), "lead"), RC(OK));
    assert_int_equal(act(f, K(DISPATCH), id, R(DISPATCHER), "disp"), RC(OK));
    assert_int_equal(act(f, K(START_DISPOSAL), id, R(DEPARTMENT), "so-1"),
                     RC(OK));
    assert_int_equal(act(f, K(REPORT_DISPOSAL), id, R(DEPARTMENT), "so-1"),
                     RC(OK));
    assert_int_equal(act(f, K(REQUEST_CHECK), id, R(DISPATCHER), "disp"),
                     RC(OK));
    assert_int_equal(act(f, K(CHECK), id, R(INSPECTOR), "insp-2"), RC(OK));
    assert_int_equal(act(f, K(CLOSE), id, R(SHIFT_LEADER), "lead"), RC(OK));
}

static Cityops__V1__CommandResult *reopen(struct fx *f,
                                          const char *tn,
                                          Cityops__V1__Role role,
                                          const char *phone,
                                          const char *email)
{
    Cityops__V1__Command c = CITYOPS__V1__COMMAND__INIT;
    Cityops__V1__ReopenRequest r = CITYOPS__V1__REOPEN_REQUEST__INIT;
    Cityops__V1__Contact ct = CITYOPS__V1__CONTACT__INIT;

    ct.phone = (char *)phone;
    ct.email = (char *)email;
    r.service_request_id = (char *)tn;
    r.contact = &ct;
    r.reason = "the stalls are back";
    c.role = role;
    c.actor_id = "open311";
    c.op_case = K(REOPEN);
    c.reopen = &r;
    return apply(f, &c);
}

static int redact(struct fx *f,
                  const char *tn,
                  Cityops__V1__Role role,
                  const char *reason)
{
    Cityops__V1__Command c = CITYOPS__V1__COMMAND__INIT;
    Cityops__V1__RedactRequest r = CITYOPS__V1__REDACT_REQUEST__INIT;

    r.service_request_id = (char *)tn;
    r.reason = (char *)reason;
    c.role = role;
    c.actor_id = "admin-1";
    c.op_case = K(REDACT);
    c.redact = &r;
    return apply(f, &c)->code;
}

static int contains(const void *buf, size_t len, const char *needle)
{
    return memmem(buf, len, needle, strlen(needle)) != NULL;
}

static int msg_contains(const ProtobufCMessage *m, const char *needle)
{
    size_t len = protobuf_c_message_get_packed_size(m);
    uint8_t *buf = malloc(len + 1);
    int found;

    assert_non_null(buf);
    protobuf_c_message_pack(m, buf);
    found = contains(buf, len, needle);
    free(buf);
    return found;
}

/* Raw LMDB on the closed environment: in which databases does @needle
 * appear (keys or values)? Writes their names, comma separated. */
static void raw_find(struct fx *f, const char *needle, char *out, size_t size)
{
    MDB_env *env;
    MDB_txn *txn;
    MDB_dbi main_db;
    MDB_cursor *cur;
    MDB_val k, v;

    out[0] = '\0';
    store_close(f->s);
    f->s = NULL;
    assert_int_equal(mdb_env_create(&env), 0);
    assert_int_equal(mdb_env_set_maxdbs(env, 64), 0);
    assert_int_equal(mdb_env_open(env, f->dir, MDB_RDONLY, 0600), 0);
    assert_int_equal(mdb_txn_begin(env, NULL, MDB_RDONLY, &txn), 0);
    assert_int_equal(mdb_dbi_open(txn, NULL, 0, &main_db), 0);
    assert_int_equal(mdb_cursor_open(txn, main_db, &cur), 0);
    while (mdb_cursor_get(cur, &k, &v, MDB_NEXT) == 0) {
        char name[64];
        MDB_dbi db;
        MDB_cursor *c2;
        MDB_val k2, v2;

        snprintf(name, sizeof(name), "%.*s", (int)k.mv_size,
                 (char *)k.mv_data);
        if (mdb_dbi_open(txn, name, 0, &db) != 0) {
            continue;
        }
        assert_int_equal(mdb_cursor_open(txn, db, &c2), 0);
        while (mdb_cursor_get(c2, &k2, &v2, MDB_NEXT) == 0) {
            if (contains(k2.mv_data, k2.mv_size, needle) ||
                contains(v2.mv_data, v2.mv_size, needle)) {
                snprintf(out + strlen(out), size - strlen(out), "%s,", name);
                break;
            }
        }
        mdb_cursor_close(c2);
    }
    mdb_cursor_close(cur);
    mdb_txn_abort(txn);
    mdb_env_close(env);
    assert_int_equal(store_open(f->dir, NULL, &f->s), 0);
}

/* --- tests --- */

static void test_public_report_creates_a_public_case_with_its_media(
    void **state)
{
    struct fx *f = *state;
    struct report m;
    Cityops__V1__Case *c;

    report_init(&m, LAT, LON);
    c = report_ok(f, &m);
    assert_int_equal(c->source, CITYOPS__V1__CASE_SOURCE__CASE_SOURCE_PUBLIC);
    assert_int_equal(c->category_type,
                     CITYOPS__V1__CATEGORY_TYPE__CATEGORY_TYPE_EVENT);
    assert_string_equal(c->major_code, "05");
    assert_string_equal(c->minor_code, "01");
    assert_int_equal(c->state, ST(REPORTED));
    assert_int_equal(c->n_attachments, 3);
    assert_string_equal(c->attachments[2]->sha256, SHA);
    assert_int_equal(c->attachments[0]->stage,
                     CITYOPS__V1__ATTACHMENT_STAGE__ATTACHMENT_STAGE_REPORT);
    assert_int_equal(strlen(c->reporter_token), 64);
    assert_true(fabs(c->location->lat - LAT) < 1e-9);
}

static void test_contact_is_stored_only_in_the_private_database(void **state)
{
    struct fx *f = *state;
    Cityops__V1__PublicStatus *st = NULL;
    Cityops__V1__UpdatesResponse *u = NULL;
    Cityops__V1__CommandResult *res;
    struct report m;
    char where[512];
    char *tn;

    report_init(&m, LAT, LON);
    res = apply(f, &m.c);
    assert_int_equal(res->code, RC(OK));
    assert_false(msg_contains(&res->base, "138"));
    assert_false(msg_contains(&res->base, "Citizen.One"));
    tn = tracking_of(f, res->case_->case_id);
    assert_int_equal(store_public_get(f->s, tn, f->time, &st, NULL), 0);
    assert_false(msg_contains(&st->base, "0013"));
    assert_false(msg_contains(&st->base, "Citizen"));
    assert_int_equal(store_public_updates(f->s, "", 0, NULL, &u), 0);
    assert_false(msg_contains(&u->base, "0013"));
    cityops__v1__public_status__free_unpacked(st, NULL);
    cityops__v1__updates_response__free_unpacked(u, NULL);

    raw_find(f, "138-0013-8000", where, sizeof(where));
    assert_string_equal(where, "contacts,");
    raw_find(f, EMAIL, where, sizeof(where));
    assert_string_equal(where, "contacts,");
    free(tn);
}

static void test_tracking_index_serves_every_case_public_or_not(void **state)
{
    struct fx *f = *state;
    Cityops__V1__Command c = CITYOPS__V1__COMMAND__INIT;
    Cityops__V1__ReportRequest r = CITYOPS__V1__REPORT_REQUEST__INIT;
    Cityops__V1__PublicStatus *st = NULL;
    Cityops__V1__CommandResult *res;
    char *tn;

    r.category_type = CITYOPS__V1__CATEGORY_TYPE__CATEGORY_TYPE_COMPONENT;
    r.major_code = "01";
    r.minor_code = "01";
    r.description = "cover missing";
    c.role = R(INSPECTOR);
    c.actor_id = "insp-1";
    c.op_case = K(REPORT);
    c.report = &r;
    res = apply(f, &c);
    assert_int_equal(res->code, RC(OK));
    tn = strdup(res->case_->tracking_no);
    assert_int_equal(store_public_get(f->s, tn, f->time, &st, NULL), 0);
    assert_string_equal(st->service_request_id, tn);
    assert_string_equal(st->service_code, "C-0101");
    assert_string_equal(st->status, "open");
    assert_string_equal(st->detailed_status, "received");
    cityops__v1__public_status__free_unpacked(st, NULL);
    assert_int_equal(store_public_get(f->s, "CO-20260101-999999", f->time,
                                      &st, NULL),
                     STORE_NOTFOUND);
    free(tn);
}

static void test_closed_after_a_passed_check_is_fixed_and_reopenable(
    void **state)
{
    struct fx *f = *state;
    Cityops__V1__PublicStatus *st = NULL;
    uint64_t id = report_at(f, LAT, LON);
    char *tn = tracking_of(f, id);

    assert_int_equal(act(f, K(ACCEPT), id, R(INTAKE_CLERK), "clerk"), RC(OK));
    assert_int_equal(act(f, K(REGISTER), id, R(SHIFT_LEADER), "lead"), RC(OK));
    assert_int_equal(act(f, K(DISPATCH), id, R(DISPATCHER), "disp"), RC(OK));
    assert_int_equal(store_public_get(f->s, tn, f->time, &st, NULL), 0);
    assert_int_equal(st->expected_datetime, T0 + 3 * 86400 * SEC);
    assert_string_equal(st->agency_responsible, "street-order");
    assert_false(st->fixed_and_checked);
    cityops__v1__public_status__free_unpacked(st, NULL);
    assert_int_equal(act(f, K(START_DISPOSAL), id, R(DEPARTMENT), "so-1"),
                     RC(OK));
    assert_int_equal(act(f, K(REPORT_DISPOSAL), id, R(DEPARTMENT), "so-1"),
                     RC(OK));
    assert_int_equal(act(f, K(REQUEST_CHECK), id, R(DISPATCHER), "disp"),
                     RC(OK));
    assert_int_equal(act(f, K(CHECK), id, R(INSPECTOR), "insp-2"), RC(OK));
    assert_int_equal(act(f, K(CLOSE), id, R(SHIFT_LEADER), "lead"), RC(OK));
    assert_int_equal(store_public_get(f->s, tn, f->time, &st, NULL), 0);
    assert_string_equal(st->status, "closed");
    assert_string_equal(st->detailed_status, "fixed_checked");
    assert_true(st->fixed_and_checked);
    assert_true(st->reopenable);
    cityops__v1__public_status__free_unpacked(st, NULL);
    /* past the window (7 days by default) it is no longer reopenable */
    assert_int_equal(
        store_public_get(f->s, tn, f->time + 8 * 86400 * SEC, &st, NULL), 0);
    assert_false(st->reopenable);
    cityops__v1__public_status__free_unpacked(st, NULL);
    free(tn);
}

static void test_reopen_needs_the_reporters_contact(void **state)
{
    struct fx *f = *state;
    Cityops__V1__CommandResult *res;
    Cityops__V1__Case *c;
    Cityops__V1__PublicStatus *st = NULL;
    uint64_t id = report_at(f, LAT, LON);
    char *tn = tracking_of(f, id);

    close_fixed(f, id);
    res = reopen(f, tn, R(PUBLIC), "13900000000", NULL);
    assert_int_equal(res->code, RC(PERMISSION_DENIED));
    res = reopen(f, tn, R(PUBLIC), NULL, "someone@example.org");
    assert_int_equal(res->code, RC(PERMISSION_DENIED));
    res = reopen(f, tn, R(SHIFT_LEADER), "13800138000", NULL);
    assert_int_equal(res->code, RC(PERMISSION_DENIED));
    res = reopen(f, "CO-20990101-000001", R(PUBLIC), "13800138000", NULL);
    assert_int_equal(res->code, RC(NOT_FOUND));
    res = reopen(f, tn, R(PUBLIC), NULL, NULL);
    assert_int_equal(res->code, RC(INVALID_ARGUMENT));
    c = case_get(f, id);
    assert_int_equal(c->state, ST(CLOSED));
    assert_int_equal(c->reopen_count, 0);
    cityops__v1__case__free_unpacked(c, NULL);

    /* the same number written differently proves the reporter */
    res = reopen(f, tn, R(PUBLIC), "13800138000", NULL);
    assert_int_equal(res->code, RC(OK));
    c = case_get(f, id);
    assert_int_equal(c->state, ST(DISPOSED));
    assert_int_equal(c->reopen_count, 1);
    cityops__v1__case__free_unpacked(c, NULL);
    assert_int_equal(store_public_get(f->s, tn, f->time, &st, NULL), 0);
    assert_string_equal(st->detailed_status, "awaiting_check");
    assert_int_equal(st->reopen_count, 1);
    assert_false(st->fixed_and_checked);
    cityops__v1__public_status__free_unpacked(st, NULL);
    free(tn);
}

static void test_email_alone_proves_the_reporter_case_insensitively(
    void **state)
{
    struct fx *f = *state;
    uint64_t id = report_at(f, LAT, LON);
    char *tn = tracking_of(f, id);

    close_fixed(f, id);
    assert_int_equal(
        reopen(f, tn, R(PUBLIC), NULL, "CITIZEN.one@example.ORG")->code,
        RC(OK));
    free(tn);
}

static void test_redact_erases_the_contact_and_needs_a_role_and_reason(
    void **state)
{
    struct fx *f = *state;
    uint64_t id = report_at(f, LAT, LON);
    char *tn = tracking_of(f, id);
    Cityops__V1__Case *c;
    char where[512];

    assert_int_equal(redact(f, tn, R(PUBLIC), "asked by the citizen"),
                     RC(PERMISSION_DENIED));
    assert_int_equal(redact(f, tn, R(ADMIN), ""), RC(INVALID_ARGUMENT));
    assert_int_equal(redact(f, "nope", R(ADMIN), "x"), RC(NOT_FOUND));
    raw_find(f, "138-0013-8000", where, sizeof(where));
    assert_string_equal(where, "contacts,");

    assert_int_equal(redact(f, tn, R(SHIFT_LEADER), "asked by the citizen"),
                     RC(OK));
    raw_find(f, "138-0013-8000", where, sizeof(where));
    assert_string_equal(where, "");
    c = case_get(f, id);
    assert_string_equal(c->reporter_token, "");
    cityops__v1__case__free_unpacked(c, NULL);
    close_fixed(f, id);
    assert_int_equal(reopen(f, tn, R(PUBLIC), PHONE, NULL)->code,
                     RC(PERMISSION_DENIED));
    free(tn);
}

/* All rows from @cursor on, @page at a time. */
static size_t feed_all(struct fx *f,
                       size_t page,
                       const char *tn,
                       Cityops__V1__PublicUpdate **out,
                       size_t max)
{
    char cursor[128] = "";
    size_t n = 0;

    for (;;) {
        Cityops__V1__UpdatesResponse *u = NULL;

        assert_int_equal(store_public_updates(f->s, cursor, page, tn, &u), 0);
        if (u->n_updates == 0) {
            assert_string_equal(u->next_cursor, cursor);
            cityops__v1__updates_response__free_unpacked(u, NULL);
            return n;
        }
        assert_true(u->n_updates <= page);
        for (size_t i = 0; i < u->n_updates && n < max; i++) {
            size_t len = cityops__v1__public_update__get_packed_size(
                u->updates[i]);
            uint8_t *buf = malloc(len + 1);

            cityops__v1__public_update__pack(u->updates[i], buf);
            out[n++] = cityops__v1__public_update__unpack(NULL, len, buf);
            free(buf);
        }
        snprintf(cursor, sizeof(cursor), "%s", u->next_cursor);
        cityops__v1__updates_response__free_unpacked(u, NULL);
    }
}

static void test_feed_is_ordered_and_resumes_at_the_cursor(void **state)
{
    struct fx *f = *state;
    Cityops__V1__PublicUpdate *all[64];
    Cityops__V1__PublicUpdate *paged[64];
    Cityops__V1__PublicUpdate *one[64];
    Cityops__V1__UpdatesResponse *u = NULL;
    uint64_t a = report_at(f, LAT, LON);
    uint64_t b = report_at(f, LAT + 0.1, LON);
    char *ta = tracking_of(f, a);
    size_t n_all;
    size_t n_paged;
    size_t n_one;

    assert_int_equal(act(f, K(ACCEPT), a, R(INTAKE_CLERK), "clerk"), RC(OK));
    assert_int_equal(act(f, K(ACCEPT), b, R(INTAKE_CLERK), "clerk"), RC(OK));
    assert_int_equal(act(f, K(REGISTER), a, R(SHIFT_LEADER), "lead"), RC(OK));
    /* a refused command adds no row */
    assert_int_equal(act(f, K(CLOSE), b, R(SHIFT_LEADER), "lead"),
                     RC(FAILED_PRECONDITION));
    n_all = feed_all(f, 1000, NULL, all, 64);
    assert_int_equal(n_all, 5);
    for (size_t i = 1; i < n_all; i++) {
        assert_true(all[i - 1]->at <= all[i]->at);
    }
    assert_string_equal(all[0]->detailed_status, "received");
    assert_string_equal(all[4]->service_request_id, ta);
    assert_string_equal(all[4]->detailed_status, "registered");
    n_paged = feed_all(f, 2, NULL, paged, 64);
    assert_int_equal(n_paged, n_all);
    for (size_t i = 0; i < n_all; i++) {
        assert_int_equal(paged[i]->at, all[i]->at);
        assert_string_equal(paged[i]->service_request_id,
                            all[i]->service_request_id);
    }
    n_one = feed_all(f, 1, ta, one, 64);
    assert_int_equal(n_one, 3);
    for (size_t i = 0; i < n_one; i++) {
        assert_string_equal(one[i]->service_request_id, ta);
    }
    assert_int_equal(store_public_updates(f->s, "zz", 0, NULL, &u),
                     STORE_INVALID);
    assert_int_equal(store_public_updates(f->s, "", 0, "CO-x", &u),
                     STORE_NOTFOUND);
    for (size_t i = 0; i < n_all; i++) {
        cityops__v1__public_update__free_unpacked(all[i], NULL);
        cityops__v1__public_update__free_unpacked(paged[i], NULL);
    }
    for (size_t i = 0; i < n_one; i++) {
        cityops__v1__public_update__free_unpacked(one[i], NULL);
    }
    free(ta);
}

/* Degrees of latitude for @m metres north. */
static double north(double m)
{
    return m / 111195.0;
}

static size_t dups(struct fx *f,
                   const char *code_major,
                   double lat,
                   double lon,
                   double radius,
                   int64_t since,
                   uint64_t exclude,
                   Cityops__V1__DuplicateHint ***out)
{
    struct store_public_near q;
    size_t n = 0;

    memset(&q, 0, sizeof(q));
    q.category_type = CITYOPS__V1__CATEGORY_TYPE__CATEGORY_TYPE_EVENT;
    q.major_code = code_major;
    q.minor_code = "01";
    q.lat = lat;
    q.lon = lon;
    q.radius_m = radius;
    q.since = since;
    q.exclude_case_id = exclude;
    assert_int_equal(store_public_duplicates(f->s, &q, out, &n), 0);
    return n;
}

static void hints_free(Cityops__V1__DuplicateHint **h, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        cityops__v1__duplicate_hint__free_unpacked(h[i], NULL);
    }
    free(h);
}

static void test_duplicates_are_near_same_category_and_recent(void **state)
{
    struct fx *f = *state;
    Cityops__V1__DuplicateHint **h = NULL;
    uint64_t a = report_at(f, LAT, LON);
    uint64_t near = report_at(f, LAT + north(20), LON);
    uint64_t far = report_at(f, LAT + north(2000), LON);
    char *ta = tracking_of(f, a);
    struct report other;
    size_t n;

    (void)far;
    report_init(&other, LAT, LON + 0.00001);
    other.r.service_code = "E-0502";
    report_ok(f, &other);
    /* from the second report's point: the first, 20 m away */
    n = dups(f, "05", LAT + north(20), LON, 100, T0, near, &h);
    assert_int_equal(n, 1);
    assert_string_equal(h[0]->service_request_id, ta);
    assert_true(fabs(h[0]->distance_m - 20.0) < 0.5);
    assert_string_equal(h[0]->status, "open");
    hints_free(h, n);
    /* a report 2 km away is not suggested; nearest comes first */
    n = dups(f, "05", LAT, LON, 150, T0, 0, &h);
    assert_int_equal(n, 2);
    assert_true(h[0]->distance_m <= h[1]->distance_m);
    hints_free(h, n);
    /* a wider radius finds the far one, across cells */
    n = dups(f, "05", LAT, LON, 2500, T0, 0, &h);
    assert_int_equal(n, 3);
    hints_free(h, n);
    /* older than since: none */
    n = dups(f, "05", LAT, LON, 150, f->time + SEC, 0, &h);
    assert_int_equal(n, 0);
    hints_free(h, n);
    /* another category at the same point: none */
    n = dups(f, "04", LAT, LON, 150, T0, 0, &h);
    assert_int_equal(n, 0);
    hints_free(h, n);
    free(ta);
}

/* Each bad command: the code, no case, no feed row, no contact. */
static void refused(struct fx *f, struct report *m, int code)
{
    Cityops__V1__UpdatesResponse *u = NULL;
    uint64_t before = store_case_count(f->s);
    Cityops__V1__CommandResult *res = apply(f, &m->c);

    assert_int_equal(res->code, code);
    assert_true(res->message != NULL && res->message[0] != '\0');
    assert_null(res->case_);
    assert_int_equal(store_case_count(f->s), before);
    assert_int_equal(store_public_updates(f->s, "", 0, NULL, &u), 0);
    assert_int_equal(u->n_updates, before);
    cityops__v1__updates_response__free_unpacked(u, NULL);
}

static void test_every_bad_field_is_refused_and_changes_nothing(void **state)
{
    struct fx *f = *state;
    struct report m;
    char *big = malloc(STORE_MAX_DESCRIPTION + 2);
    char where[512];

    memset(big, 'x', STORE_MAX_DESCRIPTION + 1);
    big[STORE_MAX_DESCRIPTION + 1] = '\0';
#define BAD(code, stmt)                                                        \
    do {                                                                       \
        report_init(&m, LAT, LON);                                             \
        stmt;                                                                  \
        refused(f, &m, RC(code));                                              \
    } while (0)
    BAD(INVALID_ARGUMENT, m.r.service_code = "X-0501");
    BAD(INVALID_ARGUMENT, m.r.service_code = "E-051");
    BAD(INVALID_ARGUMENT, m.r.service_code = "E-9901");
    BAD(INVALID_ARGUMENT, m.r.service_code = NULL);
    BAD(INVALID_ARGUMENT, m.r.lat = 91.0);
    BAD(INVALID_ARGUMENT, m.r.long_ = -180.5);
    BAD(INVALID_ARGUMENT, m.r.lat = NAN);
    BAD(INVALID_ARGUMENT, m.r.long_ = INFINITY);
    BAD(INVALID_ARGUMENT, m.r.datum = (Cityops__V1__Datum)9);
    BAD(INVALID_ARGUMENT, m.r.description = big);
    BAD(INVALID_ARGUMENT, m.r.description = "bad \xff utf-8");
    BAD(INVALID_ARGUMENT, big[STORE_MAX_TEXT + 1] = '\0';
        m.r.address_string = big);
    BAD(INVALID_ARGUMENT, m.r.grid_code = "4501ab");
    BAD(INVALID_ARGUMENT, m.r.lat = 0.0; m.r.long_ = 0.0;
        m.r.address_string = "");
    BAD(INVALID_ARGUMENT, m.r.n_media = 33);
    BAD(INVALID_ARGUMENT, m.media[1].sha256 = SHA "0");
    BAD(INVALID_ARGUMENT, m.media[1].sha256 =
                              "g123456789abcdef0123456789abcdef"
                              "0123456789abcdef0123456789abcdef");
    BAD(INVALID_ARGUMENT, m.media[0].url = "ftp://x.example/p.jpg");
    BAD(INVALID_ARGUMENT, m.media[0].url = "https://x.example/a b.jpg");
    BAD(INVALID_ARGUMENT, m.media[0].url = "");
    BAD(INVALID_ARGUMENT, m.media[2].media_type = "jpeg");
    BAD(INVALID_ARGUMENT, m.contact.phone = "call me");
    BAD(INVALID_ARGUMENT, m.contact.email = "not-an-address");
    BAD(INVALID_ARGUMENT, m.c.actor_id = "");
    BAD(PERMISSION_DENIED, m.c.role = R(INSPECTOR));
#undef BAD
    assert_int_equal(store_case_count(f->s), 0);
    raw_find(f, "138-0013-8000", where, sizeof(where));
    assert_string_equal(where, "");
    /* an address alone is a location; 32 media are allowed */
    report_init(&m, 0.0, 0.0);
    m.r.n_media = 32;
    report_ok(f, &m);
    free(big);
}

static void test_gcj02_positions_are_stored_as_cgcs2000(void **state)
{
    struct fx *f = *state;
    struct report m;
    Cityops__V1__Case *c;
    double dlat;
    double dlon;

    report_init(&m, LAT, LON);
    m.r.datum = CITYOPS__V1__DATUM__DATUM_GCJ02;
    c = report_ok(f, &m);
    assert_int_equal(c->location->datum, CITYOPS__V1__DATUM__DATUM_GCJ02);
    assert_true(c->location->orig_lat == LAT && c->location->orig_lon == LON);
    /* the GCJ-02 offset is a few hundred metres in Nanning */
    dlat = (c->location->lat - LAT) * 111195.0;
    dlon = (c->location->lon - LON) * 111195.0 * cos(LAT * M_PI / 180.0);
    assert_true(sqrt(dlat * dlat + dlon * dlon) > 100.0);
    assert_true(sqrt(dlat * dlat + dlon * dlon) < 1000.0);
}

/* Drop the public databases' rows and mark the store schema 3. */
static void make_schema_3(struct fx *f)
{
    static const char *const dbs[] = {"idx_tracking", "public_feed",
                                      "idx_geo"};
    MDB_env *env;
    MDB_txn *txn;
    MDB_dbi db;
    uint64_t v = 3;
    uint8_t be[8];
    MDB_val k = {14, "schema_version"};
    MDB_val val = {8, be};

    store_close(f->s);
    f->s = NULL;
    for (int i = 0; i < 8; i++) {
        be[i] = (uint8_t)(v >> (56 - 8 * i));
    }
    assert_int_equal(mdb_env_create(&env), 0);
    assert_int_equal(mdb_env_set_maxdbs(env, 64), 0);
    assert_int_equal(mdb_env_open(env, f->dir, 0, 0600), 0);
    assert_int_equal(mdb_txn_begin(env, NULL, 0, &txn), 0);
    for (size_t i = 0; i < sizeof(dbs) / sizeof(dbs[0]); i++) {
        assert_int_equal(mdb_dbi_open(txn, dbs[i], 0, &db), 0);
        assert_int_equal(mdb_drop(txn, db, 0), 0);
    }
    assert_int_equal(mdb_dbi_open(txn, "meta", 0, &db), 0);
    assert_int_equal(mdb_put(txn, db, &k, &val, 0), 0);
    assert_int_equal(mdb_txn_commit(txn), 0);
    mdb_env_close(env);
}

static void test_schema_3_store_gets_the_same_indexes_and_feed(void **state)
{
    struct fx *f = *state;
    uint8_t before[STORE_DIGEST_SIZE];
    uint8_t after[STORE_DIGEST_SIZE];
    Cityops__V1__PublicStatus *st = NULL;
    uint64_t a = report_at(f, LAT, LON);
    char *ta = tracking_of(f, a);

    report_at(f, LAT + north(30), LON);
    close_fixed(f, a);
    assert_int_equal(reopen(f, ta, R(PUBLIC), PHONE, NULL)->code, RC(OK));
    assert_int_equal(store_digest(f->s, before, NULL), 0);
    make_schema_3(f);
    assert_int_equal(store_open(f->dir, NULL, &f->s), 0);
    assert_int_equal(store_digest(f->s, after, NULL), 0);
    assert_memory_equal(before, after, STORE_DIGEST_SIZE);
    assert_int_equal(store_public_get(f->s, ta, f->time, &st, NULL), 0);
    assert_int_equal(st->reopen_count, 1);
    cityops__v1__public_status__free_unpacked(st, NULL);
    free(ta);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)
        T(test_public_report_creates_a_public_case_with_its_media),
        T(test_contact_is_stored_only_in_the_private_database),
        T(test_tracking_index_serves_every_case_public_or_not),
        T(test_closed_after_a_passed_check_is_fixed_and_reopenable),
        T(test_reopen_needs_the_reporters_contact),
        T(test_email_alone_proves_the_reporter_case_insensitively),
        T(test_redact_erases_the_contact_and_needs_a_role_and_reason),
        T(test_feed_is_ordered_and_resumes_at_the_cursor),
        T(test_duplicates_are_near_same_category_and_recent),
        T(test_every_bad_field_is_refused_and_changes_nothing),
        T(test_gcj02_positions_are_stored_as_cgcs2000),
        T(test_schema_3_store_gets_the_same_indexes_and_feed),
#undef T
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
