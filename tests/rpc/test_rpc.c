/* Unit tests of the gRPC runtime over real loopback connections: method
 * dispatch, unknown methods, undecodable and oversize requests, deadlines,
 * raw asynchronous calls and shutdown with calls in flight. */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "cityops/v1/cases.pb-c.h"
#include "proto/rpc.h"

#define GET_PATH "/cityops.v1.Cases/Get"
#define SLOW_PATH "/cityops.v1.Cases/History"

struct fixture {
    struct rpc_server *srv;
    struct rpc_server *client_srv; /* hosts raw async completions */
    struct rpc_channel *ch;
    char target[64];
    /* the slow method parks its call here */
    pthread_mutex_t lock;
    struct rpc_call *parked;
};

/* Echo: answers a CaseReply whose case id is the request's. */
static void get_handler(struct rpc_call *call,
                        const ProtobufCMessage *msg,
                        void *data)
{
    const Cityops__V1__GetRequest *req = (const Cityops__V1__GetRequest *)msg;
    Cityops__V1__CaseReply reply = CITYOPS__V1__CASE_REPLY__INIT;
    Cityops__V1__Case c = CITYOPS__V1__CASE__INIT;

    (void)data;
    if (req->case_id == 0) {
        rpc_call_fail(call, GRPC_STATUS_INVALID_ARGUMENT, "case_id is 0");
        return;
    }
    c.case_id = req->case_id;
    reply.case_ = &c;
    reply.applied_index = rpc_call_forwarded(call) ? 1 : 0;
    rpc_call_reply(call, &reply.base);
}

/* Never answers by itself: the test answers later from its own thread. */
static void slow_handler(struct rpc_call *call,
                         const ProtobufCMessage *msg,
                         void *data)
{
    struct fixture *f = data;

    (void)msg;
    pthread_mutex_lock(&f->lock);
    f->parked = call;
    pthread_mutex_unlock(&f->lock);
}

static int setup(void **state)
{
    static struct rpc_method methods[2];
    struct rpc_server_config cfg = {0};
    struct fixture *f = calloc(1, sizeof *f);
    int port = 0;

    pthread_mutex_init(&f->lock, NULL);
    methods[0] = (struct rpc_method){GET_PATH,
                                     &cityops__v1__get_request__descriptor,
                                     &cityops__v1__case_reply__descriptor,
                                     get_handler, f};
    methods[1] = (struct rpc_method){SLOW_PATH,
                                     &cityops__v1__history_request__descriptor,
                                     &cityops__v1__history_response__descriptor,
                                     slow_handler, f};
    cfg.address = "127.0.0.1:0";
    cfg.methods = methods;
    cfg.n_methods = 2;
    assert_int_equal(rpc_server_start(&cfg, &f->srv, &port), 0);
    assert_true(port > 0);
    snprintf(f->target, sizeof f->target, "127.0.0.1:%d", port);
    cfg.n_methods = 0;
    assert_int_equal(rpc_server_start(&cfg, &f->client_srv, &port), 0);
    f->ch = rpc_channel_open(f->target);
    assert_non_null(f->ch);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;

    rpc_channel_close(f->ch);
    rpc_server_destroy(f->srv, 500);
    rpc_server_destroy(f->client_srv, 500);
    pthread_mutex_destroy(&f->lock);
    free(f);
    return 0;
}

static grpc_status_code call_get(struct fixture *f,
                                 uint64_t id,
                                 uint64_t *echo,
                                 char **details)
{
    Cityops__V1__GetRequest req = CITYOPS__V1__GET_REQUEST__INIT;
    ProtobufCMessage *resp = NULL;
    grpc_status_code st;

    req.case_id = id;
    assert_int_equal(rpc_call_unary(f->ch, GET_PATH, &req.base,
                                    &cityops__v1__case_reply__descriptor,
                                    5000, &resp, &st, details),
                     0);
    if (st == GRPC_STATUS_OK) {
        *echo = ((Cityops__V1__CaseReply *)resp)->case_->case_id;
        protobuf_c_message_free_unpacked(resp, NULL);
    }
    return st;
}

static void test_registered_method_answers(void **state)
{
    struct fixture *f = *state;
    uint64_t echo = 0;

    assert_int_equal(call_get(f, 42, &echo, NULL), GRPC_STATUS_OK);
    assert_int_equal(echo, 42);
}

static void test_handler_error_reaches_client_with_message(void **state)
{
    struct fixture *f = *state;
    uint64_t echo = 0;
    char *details = NULL;

    assert_int_equal(call_get(f, 0, &echo, &details),
                     GRPC_STATUS_INVALID_ARGUMENT);
    assert_string_equal(details, "case_id is 0");
    free(details);
}

/* Raw async call support: blocks until the callback has run. */
struct raw_wait {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int done;
    grpc_status_code status;
    char details[256];
    uint8_t resp[256];
    size_t len;
};

static void raw_cb(void *arg,
                   grpc_status_code status,
                   const char *details,
                   const uint8_t *resp,
                   size_t len)
{
    struct raw_wait *w = arg;

    pthread_mutex_lock(&w->lock);
    w->status = status;
    snprintf(w->details, sizeof w->details, "%s", details ? details : "");
    w->len = len < sizeof w->resp ? len : sizeof w->resp;
    if (resp != NULL) {
        memcpy(w->resp, resp, w->len);
    }
    w->done = 1;
    pthread_cond_signal(&w->cond);
    pthread_mutex_unlock(&w->lock);
}

static grpc_status_code raw_call(struct fixture *f,
                                 const char *path,
                                 const uint8_t *buf,
                                 size_t len,
                                 int timeout_ms,
                                 struct raw_wait *w)
{
    gpr_timespec deadline = gpr_time_add(
        gpr_now(GPR_CLOCK_REALTIME),
        gpr_time_from_millis(timeout_ms, GPR_TIMESPAN));

    memset(w, 0, sizeof *w);
    pthread_mutex_init(&w->lock, NULL);
    pthread_cond_init(&w->cond, NULL);
    assert_int_equal(rpc_call_raw_async(f->client_srv, f->ch, path, buf, len,
                                        deadline, raw_cb, w),
                     0);
    pthread_mutex_lock(&w->lock);
    while (!w->done) {
        pthread_cond_wait(&w->cond, &w->lock);
    }
    pthread_mutex_unlock(&w->lock);
    return w->status;
}

static void test_unknown_method_is_unimplemented_at_once(void **state)
{
    struct fixture *f = *state;
    struct raw_wait w;
    uint8_t byte = 0;
    struct timespec t0, t1;

    clock_gettime(CLOCK_MONOTONIC, &t0);
    assert_int_equal(raw_call(f, "/cityops.v1.Cases/NoSuchMethod", &byte, 0,
                              10000, &w),
                     GRPC_STATUS_UNIMPLEMENTED);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    assert_non_null(strstr(w.details, "NoSuchMethod"));
    /* Answered, not left to the 10 s deadline. */
    assert_true(t1.tv_sec - t0.tv_sec < 5);
}

static void test_undecodable_request_is_invalid_argument(void **state)
{
    struct fixture *f = *state;
    struct raw_wait w;
    const uint8_t garbage[] = {0xff, 0xff, 0xff, 0xff, 0xff, 0x0f, 0x13};
    uint64_t echo = 0;

    assert_int_equal(raw_call(f, GET_PATH, garbage, sizeof garbage, 5000, &w),
                     GRPC_STATUS_INVALID_ARGUMENT);
    assert_non_null(strstr(w.details, "does not decode"));
    /* The server still serves. */
    assert_int_equal(call_get(f, 7, &echo, NULL), GRPC_STATUS_OK);
}

static void test_raw_call_is_marked_forwarded(void **state)
{
    struct fixture *f = *state;
    Cityops__V1__GetRequest req = CITYOPS__V1__GET_REQUEST__INIT;
    Cityops__V1__CaseReply *reply;
    uint8_t buf[32];
    struct raw_wait w;
    size_t len;

    req.case_id = 9;
    len = cityops__v1__get_request__pack(&req, buf);
    assert_int_equal(raw_call(f, GET_PATH, buf, len, 5000, &w),
                     GRPC_STATUS_OK);
    reply = cityops__v1__case_reply__unpack(NULL, w.len, w.resp);
    assert_non_null(reply);
    assert_int_equal(reply->case_->case_id, 9);
    assert_int_equal(reply->applied_index, 1); /* handler saw the mark */
    cityops__v1__case_reply__free_unpacked(reply, NULL);
}

static void test_oversize_request_is_refused(void **state)
{
    struct fixture *f = *state;
    size_t len = RPC_MAX_MESSAGE + 1024;
    uint8_t *big = calloc(1, len);
    struct raw_wait w;
    uint64_t echo = 0;

    assert_non_null(big);
    assert_int_equal(raw_call(f, GET_PATH, big, len, 10000, &w),
                     GRPC_STATUS_RESOURCE_EXHAUSTED);
    free(big);
    assert_int_equal(call_get(f, 3, &echo, NULL), GRPC_STATUS_OK);
}

static void answer_parked(struct fixture *f)
{
    Cityops__V1__HistoryResponse resp = CITYOPS__V1__HISTORY_RESPONSE__INIT;
    struct rpc_call *call = NULL;

    for (int i = 0; i < 500 && call == NULL; i++) {
        pthread_mutex_lock(&f->lock);
        call = f->parked;
        f->parked = NULL;
        pthread_mutex_unlock(&f->lock);
        if (call == NULL) {
            usleep(10000);
        }
    }
    assert_non_null(call);
    rpc_call_reply(call, &resp.base);
}

static void test_deadline_is_honoured_and_late_answer_is_harmless(void **state)
{
    struct fixture *f = *state;
    Cityops__V1__HistoryRequest req = CITYOPS__V1__HISTORY_REQUEST__INIT;
    ProtobufCMessage *resp = NULL;
    grpc_status_code st;

    assert_int_equal(rpc_call_unary(f->ch, SLOW_PATH, &req.base,
                                    &cityops__v1__history_response__descriptor,
                                    200, &resp, &st, NULL),
                     0);
    assert_int_equal(st, GRPC_STATUS_DEADLINE_EXCEEDED);
    assert_null(resp);
    answer_parked(f); /* after the deadline: must not crash or leak */
}

static void *answer_later(void *arg)
{
    usleep(200000);
    answer_parked(arg);
    return NULL;
}

static void test_shutdown_waits_for_calls_in_flight(void **state)
{
    struct fixture *f = *state;
    Cityops__V1__HistoryRequest req = CITYOPS__V1__HISTORY_REQUEST__INIT;
    uint8_t buf[8];
    size_t len = cityops__v1__history_request__pack(&req, buf);
    struct raw_wait w;
    pthread_t t;

    pthread_create(&t, NULL, answer_later, f);
    assert_int_equal(raw_call(f, SLOW_PATH, buf, len, 5000, &w),
                     GRPC_STATUS_OK);
    pthread_join(t, NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_registered_method_answers, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(
            test_handler_error_reaches_client_with_message, setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_unknown_method_is_unimplemented_at_once, setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_undecodable_request_is_invalid_argument, setup, teardown),
        cmocka_unit_test_setup_teardown(test_raw_call_is_marked_forwarded,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_oversize_request_is_refused,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_deadline_is_honoured_and_late_answer_is_harmless, setup,
            teardown),
        cmocka_unit_test_setup_teardown(test_shutdown_waits_for_calls_in_flight,
                                        setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
