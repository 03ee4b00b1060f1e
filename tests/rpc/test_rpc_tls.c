/* Unit tests of mutual TLS in the gRPC runtime over real loopback
 * connections: a TLS server serves only clients whose certificate its CA
 * signed, a client accepts only a server carrying the expected name, and a
 * handler learns the peer's names from its certificate.
 *
 * Certificates come from ops/fed-certs, run once before any test (and so
 * before grpc_init: grpc must not see a fork) into a mkdtemp() directory:
 * good/ holds a CA with tiers "tier-a" (the client) and "tier-b" (the
 * server); other/ holds an unrelated CA that also issued a "tier-a". */
#include <ftw.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "cityops/v1/admin.pb-c.h"
#include "cityops/v1/cases.pb-c.h"
#include "proto/rpc.h"

#define NAMES_PATH "/cityops.v1.Test/PeerNames"
#define CALL_TIMEOUT_MS 5000

/* Made once for the group. */
struct certs {
    char dir[64];
    char path[8][128];
    struct rpc_tls server;     /* good CA, tier-b */
    struct rpc_tls client;     /* good CA, tier-a */
    struct rpc_tls stranger;   /* trusts the good CA, tier-a from other/ */
    struct rpc_tls unreadable; /* a key file that does not exist */
};

struct fixture {
    struct certs *certs;
    struct rpc_server *tls_srv;
    struct rpc_server *plain_srv;
    struct rpc_server *client_srv; /* hosts raw async completions */
    char tls_target[64];
    char plain_target[64];
    pthread_mutex_t lock;
    size_t max_names; /* the handler asks for up to this many */
    int calls;        /* handler runs */
    int last_rv;      /* what rpc_call_peer_names() returned last */
    char names[8][128];
    size_t n_names;
};

static const char *certs_path(struct certs *c, int i, const char *rel)
{
    snprintf(c->path[i], sizeof c->path[i], "%s/%s", c->dir, rel);
    return c->path[i];
}

static int group_setup(void **state)
{
    struct certs *c = calloc(1, sizeof *c);
    char cmd[512];

    assert_non_null(c);
    snprintf(c->dir, sizeof c->dir, "/tmp/cityops-tls-XXXXXX");
    assert_non_null(mkdtemp(c->dir));
    snprintf(cmd, sizeof cmd,
             "'%s' '%s/good' tier-a tier-b >/dev/null && "
             "'%s' '%s/other' tier-a >/dev/null",
             FED_CERTS, c->dir, FED_CERTS, c->dir);
    assert_int_equal(system(cmd), 0);
    c->server.ca_file = certs_path(c, 0, "good/ca.pem");
    c->server.cert_file = certs_path(c, 1, "good/tier-b.pem");
    c->server.key_file = certs_path(c, 2, "good/tier-b.key");
    c->client.ca_file = c->server.ca_file;
    c->client.cert_file = certs_path(c, 3, "good/tier-a.pem");
    c->client.key_file = certs_path(c, 4, "good/tier-a.key");
    c->stranger.ca_file = c->server.ca_file;
    c->stranger.cert_file = certs_path(c, 5, "other/tier-a.pem");
    c->stranger.key_file = certs_path(c, 6, "other/tier-a.key");
    c->unreadable = c->server;
    c->unreadable.key_file = certs_path(c, 7, "good/no-such-tier.key");
    *state = c;
    return 0;
}

static int
remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static int group_teardown(void **state)
{
    struct certs *c = *state;

    nftw(c->dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
    free(c);
    return 0;
}

/* Answers a Category whose department_ids are the caller's certificate
 * names, or UNAUTHENTICATED if the call has none. */
static void
names_handler(struct rpc_call *call, const ProtobufCMessage *msg, void *data)
{
    struct fixture *f = data;
    Cityops__V1__Category reply = CITYOPS__V1__CATEGORY__INIT;
    char names[8][128];
    char *ptrs[8];
    size_t n = 0;
    int rv;

    (void)msg;
    pthread_mutex_lock(&f->lock);
    rv = rpc_call_peer_names(call, names, f->max_names, &n);
    f->calls++;
    f->last_rv = rv;
    f->n_names = n;
    memcpy(f->names, names, n * sizeof names[0]);
    pthread_mutex_unlock(&f->lock);
    if (rv != 0) {
        rpc_call_fail(call, GRPC_STATUS_UNAUTHENTICATED, "no peer certificate");
        return;
    }
    for (size_t i = 0; i < n; i++) {
        ptrs[i] = names[i];
    }
    reply.n_department_ids = n;
    reply.department_ids = ptrs;
    rpc_call_reply(call, &reply.base);
}

static int setup(void **state)
{
    struct certs *c = *state;
    static struct rpc_method method;
    struct rpc_server_config cfg = {0};
    struct fixture *f = calloc(1, sizeof *f);
    int port = 0;

    assert_non_null(f);
    f->certs = c;
    f->max_names = 8;
    pthread_mutex_init(&f->lock, NULL);
    method = (struct rpc_method){
        NAMES_PATH, &cityops__v1__get_request__descriptor,
        &cityops__v1__category__descriptor, names_handler, f};
    cfg.address = "127.0.0.1:0";
    cfg.methods = &method;
    cfg.n_methods = 1;
    cfg.tls = &c->server;
    assert_int_equal(rpc_server_start(&cfg, &f->tls_srv, &port), 0);
    snprintf(f->tls_target, sizeof f->tls_target, "127.0.0.1:%d", port);
    cfg.tls = NULL;
    assert_int_equal(rpc_server_start(&cfg, &f->plain_srv, &port), 0);
    snprintf(f->plain_target, sizeof f->plain_target, "127.0.0.1:%d", port);
    cfg.n_methods = 0;
    assert_int_equal(rpc_server_start(&cfg, &f->client_srv, &port), 0);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;

    rpc_server_destroy(f->tls_srv, 500);
    rpc_server_destroy(f->plain_srv, 500);
    rpc_server_destroy(f->client_srv, 500);
    pthread_mutex_destroy(&f->lock);
    *state = f->certs;
    free(f);
    return 0;
}

static int handler_calls(struct fixture *f)
{
    int calls;

    pthread_mutex_lock(&f->lock);
    calls = f->calls;
    pthread_mutex_unlock(&f->lock);
    return calls;
}

/* One blocking call of NAMES_PATH; on OK the reply is in *reply (caller
 * frees), else NULL. */
static grpc_status_code call_names(struct rpc_channel *ch,
                                   Cityops__V1__Category **reply)
{
    Cityops__V1__GetRequest req = CITYOPS__V1__GET_REQUEST__INIT;
    ProtobufCMessage *resp = NULL;
    grpc_status_code st;
    char *details = NULL;

    req.case_id = 1;
    assert_non_null(ch);
    assert_int_equal(rpc_call_unary(ch, NAMES_PATH, &req.base,
                                    &cityops__v1__category__descriptor,
                                    CALL_TIMEOUT_MS, &resp, &st, &details),
                     0);
    free(details);
    *reply = (Cityops__V1__Category *)resp;
    return st;
}

/* Status of one call over @ch, which is closed afterwards. */
static grpc_status_code call_once_and_close(struct rpc_channel *ch)
{
    Cityops__V1__Category *reply = NULL;
    grpc_status_code st = call_names(ch, &reply);

    if (reply != NULL) {
        cityops__v1__category__free_unpacked(reply, NULL);
    }
    rpc_channel_close(ch);
    return st;
}

static void
test_client_with_certificate_from_same_ca_is_served_and_named(void **state)
{
    struct fixture *f = *state;
    struct rpc_channel *ch;
    Cityops__V1__Category *reply = NULL;

    ch = rpc_channel_open_tls(f->tls_target, &f->certs->client, "tier-b");
    assert_int_equal(call_names(ch, &reply), GRPC_STATUS_OK);
    assert_non_null(reply);
    /* CN first, then the DNS SAN. */
    assert_int_equal(reply->n_department_ids, 2);
    assert_string_equal(reply->department_ids[0], "tier-a");
    assert_string_equal(reply->department_ids[1], "tier-a");
    cityops__v1__category__free_unpacked(reply, NULL);
    assert_int_equal(f->last_rv, 0);
    rpc_channel_close(ch);
}

static void test_peer_names_copies_at_most_max(void **state)
{
    struct fixture *f = *state;
    struct rpc_channel *ch;
    Cityops__V1__Category *reply = NULL;

    f->max_names = 1;
    ch = rpc_channel_open_tls(f->tls_target, &f->certs->client, "tier-b");
    assert_int_equal(call_names(ch, &reply), GRPC_STATUS_OK);
    assert_int_equal(reply->n_department_ids, 1);
    assert_string_equal(reply->department_ids[0], "tier-a");
    cityops__v1__category__free_unpacked(reply, NULL);
    rpc_channel_close(ch);
}

/* Raw async call support: blocks until the callback has run. */
struct raw_wait {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int done;
    grpc_status_code status;
    uint8_t resp[512];
    size_t len;
};

static void raw_cb(void *arg,
                   grpc_status_code status,
                   const char *details,
                   const uint8_t *resp,
                   size_t len)
{
    struct raw_wait *w = arg;

    (void)details;
    pthread_mutex_lock(&w->lock);
    w->status = status;
    w->len = len < sizeof w->resp ? len : sizeof w->resp;
    if (resp != NULL) {
        memcpy(w->resp, resp, w->len);
    }
    w->done = 1;
    pthread_cond_signal(&w->cond);
    pthread_mutex_unlock(&w->lock);
}

static void test_raw_async_call_works_over_a_tls_channel(void **state)
{
    struct fixture *f = *state;
    Cityops__V1__GetRequest req = CITYOPS__V1__GET_REQUEST__INIT;
    Cityops__V1__Category *reply;
    struct rpc_channel *ch;
    struct raw_wait w;
    uint8_t buf[16];
    size_t len;
    gpr_timespec deadline =
        gpr_time_add(gpr_now(GPR_CLOCK_REALTIME),
                     gpr_time_from_millis(CALL_TIMEOUT_MS, GPR_TIMESPAN));

    req.case_id = 1;
    len = cityops__v1__get_request__pack(&req, buf);
    memset(&w, 0, sizeof w);
    pthread_mutex_init(&w.lock, NULL);
    pthread_cond_init(&w.cond, NULL);
    ch = rpc_channel_open_tls(f->tls_target, &f->certs->client, "tier-b");
    assert_non_null(ch);
    assert_int_equal(rpc_call_raw_async(f->client_srv, ch, NAMES_PATH, buf, len,
                                        deadline, raw_cb, &w),
                     0);
    pthread_mutex_lock(&w.lock);
    while (!w.done) {
        pthread_cond_wait(&w.cond, &w.lock);
    }
    pthread_mutex_unlock(&w.lock);
    assert_int_equal(w.status, GRPC_STATUS_OK);
    reply = cityops__v1__category__unpack(NULL, w.len, w.resp);
    assert_non_null(reply);
    assert_true(reply->n_department_ids >= 1);
    assert_string_equal(reply->department_ids[0], "tier-a");
    cityops__v1__category__free_unpacked(reply, NULL);
    rpc_channel_close(ch);
    pthread_mutex_destroy(&w.lock);
    pthread_cond_destroy(&w.cond);
}

static void test_client_without_certificate_is_refused(void **state)
{
    struct fixture *f = *state;

    assert_int_equal(call_once_and_close(rpc_channel_open(f->tls_target)),
                     GRPC_STATUS_UNAVAILABLE);
    assert_int_equal(handler_calls(f), 0);
}

static void
test_client_with_certificate_from_another_ca_is_refused(void **state)
{
    struct fixture *f = *state;
    struct rpc_channel *ch;

    /* It trusts the server's CA, so only the server's check can stop it. */
    ch = rpc_channel_open_tls(f->tls_target, &f->certs->stranger, "tier-b");
    assert_int_equal(call_once_and_close(ch), GRPC_STATUS_UNAVAILABLE);
    assert_int_equal(handler_calls(f), 0);
}

static void test_client_expecting_another_server_name_is_refused(void **state)
{
    struct fixture *f = *state;
    struct rpc_channel *ch;

    ch = rpc_channel_open_tls(f->tls_target, &f->certs->client, "tier-c");
    assert_int_equal(call_once_and_close(ch), GRPC_STATUS_UNAVAILABLE);
    /* The client's own certificate's name is not the server's either. */
    ch = rpc_channel_open_tls(f->tls_target, &f->certs->client, "tier-a");
    assert_int_equal(call_once_and_close(ch), GRPC_STATUS_UNAVAILABLE);
    /* No expected name: the host, 127.0.0.1, is not in the certificate. */
    ch = rpc_channel_open_tls(f->tls_target, &f->certs->client, NULL);
    assert_int_equal(call_once_and_close(ch), GRPC_STATUS_UNAVAILABLE);
    assert_int_equal(handler_calls(f), 0);
}

static void test_peer_names_on_an_insecure_call_is_invalid(void **state)
{
    struct fixture *f = *state;

    assert_int_equal(call_once_and_close(rpc_channel_open(f->plain_target)),
                     GRPC_STATUS_UNAUTHENTICATED);
    assert_int_equal(handler_calls(f), 1);
    assert_int_equal(f->last_rv, RPC_INVALID);
    assert_int_equal(f->n_names, 0);
}

static void test_tls_server_with_unreadable_file_does_not_start(void **state)
{
    struct fixture *f = *state;
    struct rpc_server_config cfg = {0};
    struct rpc_server *srv = NULL;
    int port = 0;

    cfg.address = "127.0.0.1:0";
    cfg.tls = &f->certs->unreadable;
    assert_int_equal(rpc_server_start(&cfg, &srv, &port), RPC_INVALID);
    assert_null(srv);
}

static void test_tls_channel_with_unreadable_file_is_not_opened(void **state)
{
    struct fixture *f = *state;

    assert_null(
        rpc_channel_open_tls(f->tls_target, &f->certs->unreadable, "tier-b"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(
            test_client_with_certificate_from_same_ca_is_served_and_named,
            setup, teardown),
        cmocka_unit_test_setup_teardown(test_peer_names_copies_at_most_max,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_raw_async_call_works_over_a_tls_channel, setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_client_without_certificate_is_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_client_with_certificate_from_another_ca_is_refused, setup,
            teardown),
        cmocka_unit_test_setup_teardown(
            test_client_expecting_another_server_name_is_refused, setup,
            teardown),
        cmocka_unit_test_setup_teardown(
            test_peer_names_on_an_insecure_call_is_invalid, setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_tls_server_with_unreadable_file_does_not_start, setup,
            teardown),
        cmocka_unit_test_setup_teardown(
            test_tls_channel_with_unreadable_file_is_not_opened, setup,
            teardown),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
