/* Unit tests of the cluster records in the store: the member address book
 * and the bounded membership event log. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "storage/store.h"

struct fx {
    char dir[64];
    struct store *store;
    uint64_t index;
};

static int setup(void **state)
{
    struct fx *f = calloc(1, sizeof *f);

    strcpy(f->dir, "/tmp/cityops-cluster-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    assert_int_equal(store_open(f->dir, NULL, &f->store), 0);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fx *f = *state;
    char path[128];

    store_close(f->store);
    snprintf(path, sizeof path, "%s/data.mdb", f->dir);
    unlink(path);
    snprintf(path, sizeof path, "%s/lock.mdb", f->dir);
    unlink(path);
    snprintf(path, sizeof path, "%s/cityops.lock", f->dir);
    unlink(path);
    rmdir(f->dir);
    free(f);
    return 0;
}

/* Apply one command; return its result code. */
static int apply(struct fx *f, Cityops__V1__Command *cmd)
{
    Cityops__V1__CommandBatch batch = CITYOPS__V1__COMMAND_BATCH__INIT;
    struct store_results res;
    uint8_t buf[4096];
    size_t len;
    int code;

    batch.n_commands = 1;
    batch.commands = &cmd;
    len = cityops__v1__command_batch__pack(&batch, buf);
    assert_int_equal(store_apply_batch(f->store, ++f->index, buf, len, &res),
                     0);
    assert_int_equal(res.n, 1);
    code = res.results[0]->code;
    store_results_free(&res);
    return code;
}

static int member_set(struct fx *f,
                      Cityops__V1__Role role,
                      uint64_t id,
                      const char *grpc)
{
    Cityops__V1__Command cmd = CITYOPS__V1__COMMAND__INIT;
    Cityops__V1__Member m = CITYOPS__V1__MEMBER__INIT;

    m.id = id;
    m.raft_address = "127.0.0.1:9004";
    m.grpc_address = (char *)grpc;
    m.zone = "site-c";
    cmd.time = 1000;
    cmd.actor_id = "ops";
    cmd.role = role;
    cmd.op_case = CITYOPS__V1__COMMAND__OP_MEMBER_SET;
    cmd.member_set = &m;
    return apply(f, &cmd);
}

static void test_admin_adds_a_member_every_node_can_look_up(void **state)
{
    struct fx *f = *state;
    Cityops__V1__Member *m = NULL;

    assert_int_equal(member_set(f, CITYOPS__V1__ROLE__ROLE_ADMIN, 4,
                                "127.0.0.1:7004"),
                     CITYOPS__V1__RESULT_CODE__RESULT_OK);
    assert_int_equal(store_member_get(f->store, 4, &m), 0);
    assert_string_equal(m->grpc_address, "127.0.0.1:7004");
    assert_string_equal(m->zone, "site-c");
    cityops__v1__member__free_unpacked(m, NULL);
    assert_int_equal(store_member_get(f->store, 5, &m), STORE_NOTFOUND);
}

static void test_member_records_need_admin_or_system(void **state)
{
    struct fx *f = *state;
    Cityops__V1__Member *m = NULL;

    assert_int_equal(member_set(f, CITYOPS__V1__ROLE__ROLE_DISPATCHER, 4,
                                "127.0.0.1:7004"),
                     CITYOPS__V1__RESULT_CODE__RESULT_PERMISSION_DENIED);
    assert_int_equal(store_member_get(f->store, 4, &m), STORE_NOTFOUND);
    assert_int_equal(member_set(f, CITYOPS__V1__ROLE__ROLE_ADMIN, 0, "x:1"),
                     CITYOPS__V1__RESULT_CODE__RESULT_INVALID_ARGUMENT);
    assert_int_equal(store_member_get(f->store, 0, &m), STORE_NOTFOUND);
}

static void test_forget_drops_a_member(void **state)
{
    struct fx *f = *state;
    Cityops__V1__Command cmd = CITYOPS__V1__COMMAND__INIT;
    Cityops__V1__Member gone = CITYOPS__V1__MEMBER__INIT;
    Cityops__V1__Member *m = NULL;

    member_set(f, CITYOPS__V1__ROLE__ROLE_SYSTEM, 7, "127.0.0.1:7007");
    gone.id = 7;
    cmd.actor_id = "ops";
    cmd.role = CITYOPS__V1__ROLE__ROLE_ADMIN;
    cmd.op_case = CITYOPS__V1__COMMAND__OP_MEMBER_FORGET;
    cmd.member_forget = &gone;
    assert_int_equal(apply(f, &cmd), CITYOPS__V1__RESULT_CODE__RESULT_OK);
    assert_int_equal(store_member_get(f->store, 7, &m), STORE_NOTFOUND);
}

static void test_event_log_keeps_the_newest_hundred_in_order(void **state)
{
    struct fx *f = *state;
    Cityops__V1__ClusterEvent **evs = NULL;
    size_t n = 0;
    char detail[32];

    for (int i = 0; i < 130; i++) {
        Cityops__V1__Command cmd = CITYOPS__V1__COMMAND__INIT;
        Cityops__V1__ClusterEvent ev = CITYOPS__V1__CLUSTER_EVENT__INIT;
        snprintf(detail, sizeof detail, "event %d", i);
        ev.kind = "promote";
        ev.detail = detail;
        cmd.time = 5000 + i;
        cmd.actor_id = "leader";
        cmd.role = CITYOPS__V1__ROLE__ROLE_SYSTEM;
        cmd.op_case = CITYOPS__V1__COMMAND__OP_CLUSTER_EVENT;
        cmd.cluster_event = &ev;
        assert_int_equal(apply(f, &cmd), CITYOPS__V1__RESULT_CODE__RESULT_OK);
    }
    assert_int_equal(store_cluster_events(f->store, 500, &evs, &n), 0);
    assert_int_equal(n, 100);
    assert_string_equal(evs[0]->detail, "event 30");
    assert_string_equal(evs[99]->detail, "event 129");
    assert_int_equal(evs[99]->at, 5129); /* the command's time, not a clock */
    assert_string_equal(evs[99]->actor_id, "leader");
    for (size_t i = 0; i < n; i++) {
        cityops__v1__cluster_event__free_unpacked(evs[i], NULL);
    }
    free(evs);
    assert_int_equal(store_cluster_events(f->store, 3, &evs, &n), 0);
    assert_int_equal(n, 3);
    assert_string_equal(evs[2]->detail, "event 129");
    for (size_t i = 0; i < n; i++) {
        cityops__v1__cluster_event__free_unpacked(evs[i], NULL);
    }
    free(evs);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(
            test_admin_adds_a_member_every_node_can_look_up, setup, teardown),
        cmocka_unit_test_setup_teardown(test_member_records_need_admin_or_system,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_forget_drops_a_member, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(
            test_event_log_keeps_the_newest_hundred_in_order, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
