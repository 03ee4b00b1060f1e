/* Apply throughput of store_apply_batch(): N Report commands in batches of
 * B, in a fresh environment, best of R runs. Uses only the public
 * store_open/store_apply_batch/store_close calls, so the same source builds
 * against an older storage/ to measure what a change costs (the audit
 * trail: see the numbers in the commit that added it).
 *
 * Usage: bench_apply [commands] [batch] [runs] [dir] [nosync]
 *        (default 20000 64 5 /tmp; nosync: open the store as a node does,
 *        MDB_NOSYNC, so a commit costs its page writes but no fdatasync)
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "storage/store.h"

static double now_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void dir_clean(const char *dir)
{
    static const char *const files[] = {"data.mdb", "lock.mdb", "cityops.lock"};
    char path[600];

    for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
        snprintf(path, sizeof(path), "%s/%s", dir, files[i]);
        unlink(path);
    }
    rmdir(dir);
}

static struct store_options bench_opts;

/* One packed batch of @n reports starting at time @t. */
static uint8_t *batch_pack(size_t n, int64_t t, size_t *len)
{
    Cityops__V1__CommandBatch batch = CITYOPS__V1__COMMAND_BATCH__INIT;
    Cityops__V1__Command *cmds = calloc(n, sizeof(*cmds));
    Cityops__V1__Command **cp = calloc(n, sizeof(*cp));
    Cityops__V1__ReportRequest r = CITYOPS__V1__REPORT_REQUEST__INIT;
    Cityops__V1__Location loc = CITYOPS__V1__LOCATION__INIT;
    Cityops__V1__Attachment att = CITYOPS__V1__ATTACHMENT__INIT;
    Cityops__V1__Attachment *attp = &att;
    uint8_t *buf;

    if (cmds == NULL || cp == NULL) {
        exit(1);
    }
    loc.lon = 116.4;
    loc.lat = 39.9;
    loc.grid_code = "11010100100101";
    att.sha256 =
        "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    att.uri = "s3://evidence/photo.jpg";
    att.media_type = "image/jpeg";
    r.category_type = CITYOPS__V1__CATEGORY_TYPE__CATEGORY_TYPE_EVENT;
    r.major_code = "01";
    r.minor_code = "02";
    r.description = "overflowing bin next to the school gate";
    r.location = &loc;
    r.n_attachments = 1;
    r.attachments = &attp;
    for (size_t i = 0; i < n; i++) {
        cityops__v1__command__init(&cmds[i]);
        cmds[i].time = t + (int64_t)i;
        cmds[i].actor_id = "insp-1";
        cmds[i].role = CITYOPS__V1__ROLE__ROLE_INSPECTOR;
        cmds[i].op_case = CITYOPS__V1__COMMAND__OP_REPORT;
        cmds[i].report = &r;
        cp[i] = &cmds[i];
    }
    batch.n_commands = n;
    batch.commands = cp;
    *len = cityops__v1__command_batch__get_packed_size(&batch);
    buf = malloc(*len);
    if (buf == NULL) {
        exit(1);
    }
    cityops__v1__command_batch__pack(&batch, buf);
    free(cp);
    free(cmds);
    return buf;
}

static double run_once(const char *parent, long n, long b)
{
    struct store_results res;
    struct store *s;
    char dir[512];
    uint64_t index = 0;
    double t0;
    double t;
    size_t len;
    uint8_t **bufs;
    size_t *lens;
    long nb = (n + b - 1) / b;

    snprintf(dir, sizeof(dir), "%s/cityops-bench-XXXXXX", parent);
    if (mkdtemp(dir) == NULL || store_open(dir, &bench_opts, &s) != 0) {
        fprintf(stderr, "cannot open a store in %s\n", parent);
        exit(1);
    }
    bufs = calloc((size_t)nb, sizeof(*bufs));
    lens = calloc((size_t)nb, sizeof(*lens));
    for (long i = 0; i < nb; i++) {
        long k = n - i * b < b ? n - i * b : b;
        bufs[i] = batch_pack((size_t)k, 1700000000000000LL + i * b, &len);
        lens[i] = len;
    }
    t0 = now_s();
    for (long i = 0; i < nb; i++) {
        if (store_apply_batch(s, ++index, bufs[i], lens[i], &res) != 0) {
            fprintf(stderr, "apply: %s\n", store_errmsg(s));
            exit(1);
        }
        store_results_free(&res);
    }
    t = now_s() - t0;
    for (long i = 0; i < nb; i++) {
        free(bufs[i]);
    }
    free(bufs);
    free(lens);
    store_close(s);
    dir_clean(dir);
    return t;
}

int main(int argc, char **argv)
{
    bench_opts.nosync = argc > 5 && strcmp(argv[5], "nosync") == 0;
    long n = argc > 1 ? atol(argv[1]) : 20000;
    long b = argc > 2 ? atol(argv[2]) : 64;
    int runs = argc > 3 ? atoi(argv[3]) : 5;
    const char *parent = argc > 4 ? argv[4] : "/tmp";
    double best = 0;

    for (int r = 0; r < runs; r++) {
        double t = run_once(parent, n, b);
        printf("run %d: %.3f s\n", r, t);
        if (r == 0 || t < best) {
            best = t;
        }
    }
    printf("best: %ld reports in batches of %ld: %.3f s, %.1f us/command, "
           "%.0f commands/s\n",
           n, b, best, best * 1e6 / (double)n, (double)n / best);
    return 0;
}
