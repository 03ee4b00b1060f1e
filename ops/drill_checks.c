/* The drill's accounting and judgement, as pure functions over what the
 * load recorded and what verification found: no I/O, no clock, so that
 * tests/ops/test_drill_checks.c can pin every rule.
 *
 * Rules:
 * - RTO write counts from the fault to the first acknowledgement of a write
 *   whose successful attempt was SENT after the fault; a write sent before
 *   and acknowledged after says nothing about recovery.
 * - RPO is the number of acknowledged writes that verification could not
 *   find with their own token: a missing case and a case that holds another
 *   write's token (its id was reused after a lossy restore) are both lost.
 * - A token on two cases is a doubled write: the retry key failed.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "drill.h"

double drill_rto_write(const struct drill_ack *acks, size_t n, int64_t t0)
{
    int64_t first = -1;
    size_t i;

    for (i = 0; i < n; i++) {
        if (acks[i].sent_us > t0 &&
            (first < 0 || acks[i].acked_us < first)) {
            first = acks[i].acked_us;
        }
    }
    return first < 0 ? -1.0 : (double)(first - t0) / 1e6;
}

int64_t drill_rpo_count(const uint8_t *found,
                        size_t n,
                        int voided_lost,
                        int64_t *unchecked)
{
    int64_t lost = 0;
    size_t i;

    *unchecked = 0;
    for (i = 0; i < n; i++) {
        switch (found[i]) {
        case DRILL_FOUND_OK:
            break;
        case DRILL_FOUND_VOIDED:
            lost += voided_lost ? 1 : 0;
            break;
        case DRILL_FOUND_UNCHECKED:
            (*unchecked)++;
            break;
        default:
            lost++;
            break;
        }
    }
    return lost;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

int64_t drill_doubled_count(char **tokens, size_t n)
{
    int64_t extra = 0;
    size_t i;

    if (n == 0) {
        return 0;
    }
    qsort(tokens, n, sizeof(*tokens), cmp_str);
    for (i = 1; i < n; i++) {
        if (strcmp(tokens[i - 1], tokens[i]) == 0) {
            extra++;
        }
    }
    return extra;
}

const char *drill_token_of(const char *description)
{
    size_t len = strlen(DRILL_TOKEN_PREFIX);

    if (description == NULL ||
        strncmp(description, DRILL_TOKEN_PREFIX, len) != 0 ||
        description[len] == '\0') {
        return NULL;
    }
    return description + len;
}

void drill_token_make(char *buf,
                      size_t len,
                      const char *drill_id,
                      uint32_t writer,
                      uint64_t seq)
{
    snprintf(buf, len, "%s/w%u/%llu", drill_id, writer,
             (unsigned long long)seq);
}

static void fail(struct drill_result *r, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void fail(struct drill_result *r, const char *fmt, ...)
{
    va_list ap;

    if (r->n_failures == DRILL_MAX_FAILURES) {
        return;
    }
    va_start(ap, fmt);
    vsnprintf(r->failures[r->n_failures++], sizeof(r->failures[0]), fmt, ap);
    va_end(ap);
}

static void judge_rto(struct drill_result *r,
                      const char *what,
                      double measured,
                      double max)
{
    if (max < 0) {
        return;
    }
    if (measured < 0) {
        fail(r, "%s: never recovered (target %.3f s)", what, max);
    } else if (measured > max) {
        fail(r, "%s %.3f s > target %.3f s", what, measured, max);
    }
}

void drill_evaluate(const struct drill_targets *t, struct drill_result *r)
{
    int i;

    r->n_failures = 0;
    if (r->error[0] != '\0') {
        fail(r, "drill error: %s", r->error);
    }
    if (r->acked == 0) {
        fail(r, "no write was acknowledged: the load never ran");
    }
    judge_rto(r, "RTO write", r->rto_write_s, t->rto_write_max_s);
    judge_rto(r, "RTO health", r->rto_health_s, t->rto_health_max_s);
    for (i = 0; i < r->n_restarts; i++) {
        char what[64];

        snprintf(what, sizeof(what), "restart of node %llu: RTO health",
                 (unsigned long long)r->restarts[i].node_id);
        judge_rto(r, what, r->restarts[i].rto_health_s, t->rto_health_max_s);
    }
    if (r->rpo_lost < 0 && t->rpo_max >= 0) {
        fail(r, "RPO not measured (target %lld)", (long long)t->rpo_max);
    } else if (t->rpo_max >= 0 && r->rpo_lost > t->rpo_max) {
        fail(r, "RPO %lld acknowledged writes lost > target %lld",
             (long long)r->rpo_lost, (long long)t->rpo_max);
    }
    if (t->rpo_max >= 0 && r->unchecked > 0) {
        fail(r, "%lld acknowledged writes could not be read back",
             (long long)r->unchecked);
    }
    if (r->doubled > 0) {
        fail(r, "%lld writes applied twice (same token on two cases)",
             (long long)r->doubled);
    }
    if (r->leaked > 0) {
        fail(r, "%lld changes made after the restore time are present",
             (long long)r->leaked);
    }
    if (t->converge && !r->converged) {
        fail(r, "replicas did not converge (state digests differ)");
    }
    if (t->history && r->violations > 0) {
        fail(r, "%llu read-history violations (%s)",
             (unsigned long long)r->violations, r->violation_example);
    }
    r->passed = r->n_failures == 0;
}
