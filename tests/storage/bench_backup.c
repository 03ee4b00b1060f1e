/* Backup cost at scale: fills a store with N cases of a ~512-byte
 * description (apply batches of 256 Report commands, nosync), then times
 * store_backup_write(), store_backup_verify() and store_backup_restore()
 * and prints sizes and seconds. Not a ctest: run by hand.
 *
 * Usage: bench_backup [cases ...] [-d dir]   (default 100000, /tmp)
 */
#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "storage/store.h"

#define BATCH 256
#define DESC_LEN 512

static double now_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

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

static void die(const char *what, const char *msg)
{
    fprintf(stderr, "%s: %s\n", what, msg);
    exit(1);
}

/* One packed batch of @n reports starting at time @t. */
static uint8_t *batch_pack(size_t n, int64_t t, const char *desc, size_t *len)
{
    Cityops__V1__CommandBatch batch = CITYOPS__V1__COMMAND_BATCH__INIT;
    Cityops__V1__Command cmds[BATCH];
    Cityops__V1__Command *cp[BATCH];
    Cityops__V1__ReportRequest r = CITYOPS__V1__REPORT_REQUEST__INIT;
    Cityops__V1__Location loc = CITYOPS__V1__LOCATION__INIT;
    uint8_t *buf;

    loc.lon = 116.4;
    loc.lat = 39.9;
    loc.grid_code = "11010100100101";
    r.category_type = CITYOPS__V1__CATEGORY_TYPE__CATEGORY_TYPE_EVENT;
    r.major_code = "01";
    r.minor_code = "02";
    r.description = (char *)desc;
    r.location = &loc;
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
        die("batch", "out of memory");
    }
    cityops__v1__command_batch__pack(&batch, buf);
    return buf;
}

static double fill(struct store *s, long n)
{
    struct store_results res;
    char desc[DESC_LEN + 1];
    uint64_t index = 0;
    double t0 = now_s();

    for (int i = 0; i < DESC_LEN; i++) {
        desc[i] = (char)('a' + (i * 7) % 26);
    }
    desc[DESC_LEN] = '\0';
    for (long done = 0; done < n; done += BATCH) {
        size_t k = n - done < BATCH ? (size_t)(n - done) : BATCH;
        size_t len;
        uint8_t *buf;

        buf = batch_pack(k, 1700000000000000LL + done, desc, &len);
        if (store_apply_batch(s, ++index, buf, len, &res) != 0) {
            die("apply", store_errmsg(s));
        }
        store_results_free(&res);
        free(buf);
    }
    if (store_sync(s) != 0) {
        die("sync", store_errmsg(s));
    }
    return now_s() - t0;
}

static long long file_size(const char *path)
{
    struct stat st;

    return stat(path, &st) == 0 ? (long long)st.st_size : -1;
}

static void run(const char *parent, long n)
{
    struct store_options opts = {.nosync = 1, .map_size = (size_t)16 << 30};
    struct store_restore_result res;
    Cityops__V1__BackupInfo *info = NULL;
    char root[512];
    char dir[600];
    char file[600];
    char target[600];
    char err[256];
    struct store *s;
    double t_fill;
    double t0;
    double t_write;
    double t_verify;
    double t_restore;
    int fd;

    snprintf(root, sizeof(root), "%s/cityops-bench-backup-XXXXXX", parent);
    if (mkdtemp(root) == NULL) {
        die("mkdtemp", root);
    }
    snprintf(dir, sizeof(dir), "%s/node", root);
    snprintf(file, sizeof(file), "%s/backup.coback", root);
    snprintf(target, sizeof(target), "%s/restored", root);
    mkdir(dir, 0755);
    if (store_open(dir, &opts, &s) != 0) {
        die("open", dir);
    }
    t_fill = fill(s, n);

    fd = open(file, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    t0 = now_s();
    if (fd < 0 || store_backup_write(s, fd, 1, 0, NULL, NULL, &info, NULL) !=
                      0) {
        die("backup", store_errmsg(s));
    }
    if (fsync(fd) != 0 || close(fd) != 0) {
        die("backup", "fsync");
    }
    t_write = now_s() - t0;
    store_close(s);

    t0 = now_s();
    if (store_backup_verify(file, NULL, NULL, NULL, err, sizeof(err)) != 0) {
        die("verify", err);
    }
    t_verify = now_s() - t0;
    t0 = now_s();
    if (store_backup_restore(file, target, NULL, NULL, NULL, &res, err,
                             sizeof(err)) != 0) {
        die("restore", err);
    }
    t_restore = now_s() - t0;

    snprintf(dir + strlen(dir), sizeof(dir) - strlen(dir), "/data.mdb");
    printf("%ld cases (%d-byte descriptions): fill %.1f s; data.mdb %.1f "
           "MiB\n",
           n, DESC_LEN, t_fill, (double)file_size(dir) / 1048576.0);
    snprintf(target + strlen(target), sizeof(target) - strlen(target),
             "/data.mdb");
    printf("  backup file %.1f MiB (payload %.1f MiB, %llu audit records)\n",
           (double)file_size(file) / 1048576.0,
           (double)info->payload_bytes / 1048576.0,
           (unsigned long long)info->audit_size);
    printf("  write   %7.2f s  %7.1f MiB/s\n", t_write,
           (double)file_size(file) / 1048576.0 / t_write);
    printf("  verify  %7.2f s  %7.1f MiB/s\n", t_verify,
           (double)file_size(file) / 1048576.0 / t_verify);
    printf("  restore %7.2f s  %7.1f MiB/s (restored data.mdb %.1f MiB)\n",
           t_restore, (double)file_size(file) / 1048576.0 / t_restore,
           (double)file_size(target) / 1048576.0);
    fflush(stdout);
    cityops__v1__backup_info__free_unpacked(info, NULL);
    nftw(root, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

int main(int argc, char **argv)
{
    const char *parent = "/tmp";
    int ran = 0;

    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "-d") == 0 && i + 1 < argc) {
            parent = argv[++i];
        }
    }
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "-d") == 0) {
            i++;
            continue;
        }
        run(parent, atol(argv[i]));
        ran = 1;
    }
    if (!ran) {
        run(parent, 100000);
    }
    return 0;
}
