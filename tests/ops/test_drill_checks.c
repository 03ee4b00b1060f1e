/* Unit tests of the drill's accounting and judgement (ops/drill_checks.c)
 * and of scenario files (ops/drill_scenario.c): every rule that decides
 * whether a drill passes. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "drill.h"

static struct drill_result passing(void)
{
    struct drill_result r;

    memset(&r, 0, sizeof(r));
    r.acked = 100;
    r.rto_write_s = 1.5;
    r.rto_health_s = 3;
    r.rpo_lost = 0;
    r.doubled = 0;
    r.leaked = -1;
    r.converged = 1;
    return r;
}

static const struct drill_targets targets = {10, 30, 0, 1, 1};

static void test_rto_write_counts_only_writes_sent_after_the_fault(void **s)
{
    struct drill_ack acks[3] = {
        {.sent_us = 900, .acked_us = 1100},  /* sent before: ignored */
        {.sent_us = 1200, .acked_us = 4000},
        {.sent_us = 1500, .acked_us = 3000}, /* first acknowledged */
    };

    (void)s;
    assert_true(drill_rto_write(acks, 3, 1000) == (3000 - 1000) / 1e6);
    assert_true(drill_rto_write(acks, 1, 1000) < 0);
}

static void test_rpo_counts_missing_and_mismatched_writes(void **s)
{
    uint8_t found[6] = {DRILL_FOUND_OK,       DRILL_FOUND_MISSING,
                        DRILL_FOUND_MISMATCH, DRILL_FOUND_VOIDED,
                        DRILL_FOUND_UNCHECKED, DRILL_FOUND_OK};
    int64_t unchecked;

    (void)s;
    assert_int_equal(drill_rpo_count(found, 6, 0, &unchecked), 2);
    assert_int_equal(unchecked, 1);
    /* After a point-in-time restore a voided case is a lost one. */
    assert_int_equal(drill_rpo_count(found, 6, 1, &unchecked), 3);
}

static void test_doubled_counts_extra_cases_per_token(void **s)
{
    char *tokens[5] = {"d/w1/2", "d/w1/1", "d/w1/2", "d/w2/1", "d/w1/2"};

    (void)s;
    assert_int_equal(drill_doubled_count(tokens, 5), 2);
    assert_int_equal(drill_doubled_count(tokens, 0), 0);
}

static void test_token_is_found_only_in_load_descriptions(void **s)
{
    char buf[64];

    (void)s;
    drill_token_make(buf, sizeof(buf), "drill-x", 3, 42);
    assert_string_equal(buf, "drill-x/w3/42");
    assert_string_equal(drill_token_of(DRILL_TOKEN_PREFIX "drill-x/w3/42"),
                        "drill-x/w3/42");
    assert_null(drill_token_of("manhole cover missing"));
    assert_null(drill_token_of(DRILL_TOKEN_PREFIX));
}

static void test_a_drill_within_its_targets_passes(void **s)
{
    struct drill_result r = passing();

    (void)s;
    drill_evaluate(&targets, &r);
    assert_true(r.passed);
    assert_int_equal(r.n_failures, 0);
}

static void test_each_missed_target_fails_the_drill(void **s)
{
    struct drill_result r;

    (void)s;
    r = passing();
    r.rto_write_s = 10.5;
    drill_evaluate(&targets, &r);
    assert_false(r.passed);
    assert_non_null(strstr(r.failures[0], "RTO write"));

    r = passing();
    r.rto_health_s = -1; /* never healthy */
    drill_evaluate(&targets, &r);
    assert_false(r.passed);

    r = passing();
    r.rpo_lost = 1;
    drill_evaluate(&targets, &r);
    assert_false(r.passed);
    assert_non_null(strstr(r.failures[0], "RPO"));

    r = passing();
    r.doubled = 1;
    drill_evaluate(&targets, &r);
    assert_false(r.passed);

    r = passing();
    r.converged = 0;
    drill_evaluate(&targets, &r);
    assert_false(r.passed);

    r = passing();
    r.violations = 2;
    drill_evaluate(&targets, &r);
    assert_false(r.passed);

    r = passing();
    r.acked = 0;
    drill_evaluate(&targets, &r);
    assert_false(r.passed);

    r = passing();
    r.leaked = 3;
    drill_evaluate(&targets, &r);
    assert_false(r.passed);
}

static void test_measured_only_targets_do_not_judge(void **s)
{
    struct drill_targets t = {-1, -1, -1, 1, 0};
    struct drill_result r = passing();

    (void)s;
    r.rto_write_s = 99;
    r.rpo_lost = 12;
    r.violations = 5;
    drill_evaluate(&t, &r);
    assert_true(r.passed);
}

static char *write_tmp(const char *text)
{
    static char path[64];
    FILE *f;
    int fd;

    snprintf(path, sizeof(path), "/tmp/drill-test-XXXXXX");
    fd = mkstemp(path);
    assert_true(fd >= 0);
    f = fdopen(fd, "w");
    fputs(text, f);
    fclose(f);
    return path;
}

static void test_scenario_file_sets_fault_zones_and_targets(void **s)
{
    struct drill_scenario sc;
    char err[256];
    char *path = write_tmp("[drill]\nfault = site-loss\nnodes = 5\n"
                           "zones = a a b b c\nwriters = 2\n"
                           "[targets]\nrto_write_max_s = 0.0001\n"
                           "rpo_max = -1\nhistory = false\n");

    (void)s;
    assert_int_equal(drill_scenario_load(path, "x", &sc, err, sizeof(err)),
                     0);
    unlink(path);
    assert_int_equal(sc.fault, DRILL_FAULT_SITE_LOSS);
    assert_int_equal(sc.n_zones, 5);
    assert_string_equal(sc.zones[4], "c");
    assert_int_equal(sc.writers, 2);
    assert_true(sc.targets.rto_write_max_s == 0.0001);
    assert_int_equal(sc.targets.rpo_max, -1);
    assert_false(sc.targets.history);
    assert_true(sc.targets.converge); /* default */
}

static void test_scenario_file_refuses_typos_and_bad_topologies(void **s)
{
    struct drill_scenario sc;
    char err[256];
    char *path;

    (void)s;
    path = write_tmp("[drill]\nfault = leader-kill\n[targets]\nrpo_mx = 0\n");
    assert_int_equal(drill_scenario_load(path, "x", &sc, err, sizeof(err)),
                     OPS_INVALID);
    unlink(path);
    assert_non_null(strstr(err, "unknown key [targets] rpo_mx"));
    path = write_tmp("[drill]\nfault = site-loss\nnodes = 3\n"
                     "zones = a b\n");
    assert_int_equal(drill_scenario_load(path, "x", &sc, err, sizeof(err)),
                     OPS_INVALID);
    unlink(path);
    path = write_tmp("[drill]\nfault = meteor\n");
    assert_int_equal(drill_scenario_load(path, "x", &sc, err, sizeof(err)),
                     OPS_INVALID);
    unlink(path);
}

static void test_every_shipped_scenario_loads(void **s)
{
    static const char *const names[] = {
        "leader-kill",         "follower-kill",         "leader-pause",
        "site-loss",           "quorum-loss",           "restore-from-backup",
        "point-in-time-restore", "disk-full",           "rolling-restart",
    };
    size_t i;

    (void)s;
    for (i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        struct drill_scenario sc;
        char path[512];
        char err[512];

        snprintf(path, sizeof(path), "%s/%s.ini", drill_scenario_dir(NULL),
                 names[i]);
        assert_int_equal(
            drill_scenario_load(path, names[i], &sc, err, sizeof(err)), 0);
        assert_string_equal(drill_fault_name(sc.fault), names[i]);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(
            test_rto_write_counts_only_writes_sent_after_the_fault),
        cmocka_unit_test(test_rpo_counts_missing_and_mismatched_writes),
        cmocka_unit_test(test_doubled_counts_extra_cases_per_token),
        cmocka_unit_test(test_token_is_found_only_in_load_descriptions),
        cmocka_unit_test(test_a_drill_within_its_targets_passes),
        cmocka_unit_test(test_each_missed_target_fails_the_drill),
        cmocka_unit_test(test_measured_only_targets_do_not_judge),
        cmocka_unit_test(test_scenario_file_sets_fault_zones_and_targets),
        cmocka_unit_test(test_scenario_file_refuses_typos_and_bad_topologies),
        cmocka_unit_test(test_every_shipped_scenario_loads),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
