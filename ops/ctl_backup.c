/* cityctl backup ...: online backups and offline restores.
 *
 *   backup create --out FILE   Backup/Create on the first endpoint that
 *                              answers, then Backup/Read in 1 MiB chunks
 *                              from that same node into FILE.part (fsynced,
 *                              checked against the node's SHA-256, renamed)
 *   backup verify FILE         offline: storage checks the file through
 *   backup list                the node's scheduled backups and archive
 *   backup restore FILE --data-dir DIR [--archive DIR]
 *                  [--to-index N | --to-time T]
 *                              offline: build DIR/store as the state of a
 *                              new single-node cluster (restore.marker tells
 *                              cityopsd to bootstrap alone)
 *
 * verify and restore use storage/ on local files: they need no node.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "ops.h"
#include "storage/store.h"

#define CHUNK (1u << 20)
#define CREATE_TIMEOUT_MS (30 * 60 * 1000)
#define RESTORE_MARKER "restore.marker"

static double mono_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

struct progress {
    const char *what;
    int quiet;
    double t0;
    double last;
    int open; /* a progress line without its newline yet */
};

static void progress_end(struct progress *p)
{
    if (p->open) {
        fputc('\n', stderr);
        p->open = 0;
    }
}

static void progress_cb(void *arg, uint64_t done, uint64_t total)
{
    struct progress *p = arg;
    double now = mono_s();

    if (p->quiet || (now - p->last < 0.5 && done < total)) {
        return;
    }
    p->last = now;
    if (total > 0) {
        fprintf(stderr, "\r%s: %llu / %llu MiB (%3.0f%%) %.1f s", p->what,
                (unsigned long long)(done >> 20),
                (unsigned long long)(total >> 20),
                100.0 * (double)done / (double)total, now - p->t0);
    } else {
        fprintf(stderr, "\r%s: %llu MiB %.1f s", p->what,
                (unsigned long long)(done >> 20), now - p->t0);
    }
    p->open = 1;
    if (done >= total) {
        progress_end(p);
    }
}

static void hex(const uint8_t *b, size_t n, char *out)
{
    for (size_t i = 0; i < n; i++) {
        sprintf(out + 2 * i, "%02x", b[i]);
    }
    out[2 * n] = '\0';
}

static int write_all(int fd, const uint8_t *buf, size_t len)
{
    while (len > 0) {
        ssize_t n = write(fd, buf, len);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            return -1;
        }
        buf += n;
        len -= (size_t)n;
    }
    return 0;
}

static void release(struct ops_ctl *ctl, int ep, const char *id)
{
    Cityops__V1__BackupReleaseRequest req =
        CITYOPS__V1__BACKUP_RELEASE_REQUEST__INIT;
    Cityops__V1__RequestContext ctx = CITYOPS__V1__REQUEST_CONTEXT__INIT;
    ProtobufCMessage *resp = NULL;
    grpc_status_code st;

    ops_ctx_fill(ctl, &ctx, CITYOPS__V1__ROLE__ROLE_ADMIN);
    ctx.client_id = "";
    ctx.seq = 0;
    req.ctx = &ctx;
    req.backup_id = (char *)id;
    ops_call_one(ctl, ep, "Backup/Release", &req.base,
                 &cityops__v1__backup_release_reply__descriptor,
                 ctl->timeout_ms, &resp, &st, NULL, 0);
    if (resp != NULL) {
        protobuf_c_message_free_unpacked(resp, NULL);
    }
}

/* Read the backup @id of size @size from endpoint @ep into @fd, hashing all
 * but the 32-byte trailer into @md. */
static int download(struct ops_ctl *ctl,
                    int ep,
                    const char *id,
                    uint64_t size,
                    int fd,
                    EVP_MD_CTX *md,
                    uint8_t trailer[32],
                    struct progress *pg)
{
    Cityops__V1__BackupReadRequest req = CITYOPS__V1__BACKUP_READ_REQUEST__INIT;
    Cityops__V1__RequestContext ctx = CITYOPS__V1__REQUEST_CONTEXT__INIT;
    uint64_t off = 0;
    char details[512];

    ops_ctx_fill(ctl, &ctx, CITYOPS__V1__ROLE__ROLE_ADMIN);
    ctx.client_id = "";
    ctx.seq = 0;
    req.ctx = &ctx;
    req.backup_id = (char *)id;
    req.max_bytes = CHUNK;
    while (off < size) {
        Cityops__V1__BackupReadReply *r = NULL;
        grpc_status_code st;
        size_t len;
        uint64_t body_end = size - 32;

        req.offset = off;
        if (ops_call_one(ctl, ep, "Backup/Read", &req.base,
                         &cityops__v1__backup_read_reply__descriptor,
                         ctl->timeout_ms > 30000 ? ctl->timeout_ms : 30000,
                         (ProtobufCMessage **)&r, &st, details,
                         sizeof details) != OPS_EXIT_OK) {
            ops_print_error(ctl, "Backup/Read", rpc_status_name(st), details,
                            ctl->endpoints[ep]);
            return OPS_EXIT_FAIL;
        }
        len = r->data.len;
        if (len == 0 || off + len > size ||
            write_all(fd, r->data.data, len) != 0) {
            ops_print_error(ctl, "Backup/Read", "CLIENT",
                            len == 0 ? "empty chunk before the end"
                                     : "cannot write the backup file",
                            ctl->endpoints[ep]);
            cityops__v1__backup_read_reply__free_unpacked(r, NULL);
            return OPS_EXIT_FAIL;
        }
        /* hash the body; keep the trailer aside */
        if (off < body_end) {
            size_t body = off + len > body_end ? (size_t)(body_end - off) : len;
            EVP_DigestUpdate(md, r->data.data, body);
        }
        for (size_t i = 0; i < len; i++) {
            if (off + i >= body_end) {
                trailer[off + i - body_end] = r->data.data[i];
            }
        }
        off += len;
        cityops__v1__backup_read_reply__free_unpacked(r, NULL);
        progress_cb(pg, off, size);
    }
    return OPS_EXIT_OK;
}

int ops_backup_fetch(struct ops_ctl *ctl,
                     const char *out_path,
                     int quiet,
                     Cityops__V1__BackupInfo **info)
{
    Cityops__V1__BackupCreateRequest req =
        CITYOPS__V1__BACKUP_CREATE_REQUEST__INIT;
    Cityops__V1__RequestContext ctx = CITYOPS__V1__REQUEST_CONTEXT__INIT;
    Cityops__V1__BackupCreateReply *cr = NULL;
    struct progress pg = {"download", quiet, mono_s(), 0, 0};
    char part[4096];
    uint8_t trailer[32];
    uint8_t digest[32];
    unsigned int dlen = 0;
    EVP_MD_CTX *md = NULL;
    int saved_timeout = ctl->timeout_ms;
    int rv = OPS_EXIT_FAIL;
    int fd = -1;
    int ep;

    if (info != NULL) {
        *info = NULL;
    }
    ops_ctx_fill(ctl, &ctx, CITYOPS__V1__ROLE__ROLE_ADMIN);
    ctx.client_id = "";
    ctx.seq = 0;
    req.ctx = &ctx;
    if (!quiet) {
        fprintf(stderr, "creating a backup on the node...\n");
    }
    if (ctl->timeout_ms < CREATE_TIMEOUT_MS) {
        ctl->timeout_ms = CREATE_TIMEOUT_MS;
    }
    rv = ops_call(ctl, "Backup/Create", &req.base,
                  &cityops__v1__backup_create_reply__descriptor,
                  (ProtobufCMessage **)&cr);
    ctl->timeout_ms = saved_timeout;
    if (rv != OPS_EXIT_OK) {
        return rv;
    }
    rv = OPS_EXIT_FAIL;
    ep = ctl->last_endpoint;
    if (cr->info == NULL || cr->size < 32 || cr->sha256.len != 32) {
        ops_print_error(ctl, "Backup/Create", "CLIENT",
                        "the node's answer lacks the backup's size or hash",
                        ctl->endpoints[ep]);
        goto out;
    }
    if (!quiet) {
        fprintf(stderr,
                "backup %s on %s: %llu bytes at index %llu; downloading\n",
                cr->backup_id, ctl->endpoints[ep],
                (unsigned long long)cr->size,
                (unsigned long long)cr->info->applied_index);
    }
    snprintf(part, sizeof part, "%s.part", out_path);
    fd = open(part, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
    md = EVP_MD_CTX_new();
    if (fd < 0 || md == NULL ||
        EVP_DigestInit_ex(md, EVP_sha256(), NULL) != 1) {
        ops_print_error(ctl, "backup create", "CLIENT",
                        fd < 0 ? strerror(errno) : "out of memory", part);
        goto out_release;
    }
    if (download(ctl, ep, cr->backup_id, cr->size, fd, md, trailer, &pg) !=
        OPS_EXIT_OK) {
        goto out_release;
    }
    EVP_DigestFinal_ex(md, digest, &dlen);
    if (memcmp(digest, trailer, 32) != 0 ||
        memcmp(digest, cr->sha256.data, 32) != 0) {
        ops_print_error(ctl, "backup create", "CLIENT",
                        "the downloaded file does not match its SHA-256: "
                        "not kept; create it again",
                        part);
        goto out_release;
    }
    if (fsync(fd) != 0 || close(fd) != 0) {
        fd = -1;
        ops_print_error(ctl, "backup create", "CLIENT", strerror(errno), part);
        goto out_release;
    }
    fd = -1;
    if (rename(part, out_path) != 0) {
        ops_print_error(ctl, "backup create", "CLIENT", strerror(errno),
                        out_path);
        goto out_release;
    }
    if (info != NULL) {
        *info = cr->info;
        cr->info = NULL;
    }
    rv = OPS_EXIT_OK;

out_release:
    release(ctl, ep, cr->backup_id);
    if (fd >= 0) {
        close(fd);
    }
    if (rv != OPS_EXIT_OK) {
        unlink(part);
    }
    EVP_MD_CTX_free(md);
out:
    cityops__v1__backup_create_reply__free_unpacked(cr, NULL);
    return rv;
}

static void info_print(const char *file, const Cityops__V1__BackupInfo *in)
{
    char created[64];
    char last[64];
    char head[65];

    ops_time_format(in->created_at, created, sizeof created);
    ops_time_format(in->last_time, last, sizeof last);
    hex(in->audit_head.data, in->audit_head.len > 32 ? 32 : in->audit_head.len,
        head);
    printf("file           %s\n", file);
    printf("cluster id     %s\n", *in->cluster_id ? in->cluster_id : "-");
    printf("made by node   %llu at %s\n", (unsigned long long)in->node_id,
           created);
    printf("applied index  %llu (last command %s)\n",
           (unsigned long long)in->applied_index, last);
    printf("cases          %llu\n", (unsigned long long)in->case_count);
    printf("audit          %llu records, head %s\n",
           (unsigned long long)in->audit_size, head);
    printf("store bytes    %llu\n", (unsigned long long)in->payload_bytes);
    if (*in->restored_from != '\0') {
        printf("restored from  %s\n", in->restored_from);
    }
}

static int print_info_json(const Cityops__V1__BackupInfo *in,
                           const char *file,
                           const char *status)
{
    json_t *j = json_object();

    json_object_set_new(j, "file", json_string(file));
    json_object_set_new(j, "status", json_string(status));
    json_object_set_new(j, "info", ops_pb_to_json(&in->base));
    return ops_json_print(j);
}

static int run_create(struct ops_ctl *ctl, const struct ops_args *a)
{
    const char *out = ops_arg(a, "out");
    Cityops__V1__BackupInfo *info = NULL;
    int rv;

    if (out == NULL) {
        return ops_usage_error(ctl, "backup create: --out FILE is required");
    }
    rv = ops_backup_fetch(ctl, out, ctl->json, &info);
    if (rv != OPS_EXIT_OK) {
        return rv;
    }
    if (ctl->json) {
        rv = print_info_json(info, out, "created");
    } else {
        info_print(out, info);
        printf("backup written and checked: %s\n", out);
    }
    cityops__v1__backup_info__free_unpacked(info, NULL);
    return rv;
}

static int run_verify(struct ops_ctl *ctl, const struct ops_args *a)
{
    Cityops__V1__BackupInfo *info = NULL;
    struct progress pg = {"verify", ctl->json, mono_s(), 0, 0};
    char err[512];
    const char *file = a->n_pos > 2 ? a->pos[2] : NULL;
    int rv;

    if (file == NULL) {
        return ops_usage_error(ctl, "backup verify: which FILE?");
    }
    rv = store_backup_verify(file, progress_cb, &pg, &info, err, sizeof err);
    progress_end(&pg);
    if (rv != 0) {
        ops_print_error(ctl, "backup verify", "CORRUPT", err, file);
        if (info != NULL) {
            cityops__v1__backup_info__free_unpacked(info, NULL);
        }
        return OPS_EXIT_FAIL;
    }
    if (ctl->json) {
        rv = print_info_json(info, file, "ok");
    } else {
        info_print(file, info);
        printf("backup OK: checksum, store, applied index and audit chain "
               "verified (%.1f s)\n",
               mono_s() - pg.t0);
        rv = OPS_EXIT_OK;
    }
    cityops__v1__backup_info__free_unpacked(info, NULL);
    return rv;
}

static int marker_write(const char *data_dir,
                        const struct store_restore_result *res)
{
    char path[4096];
    FILE *f;

    snprintf(path, sizeof path, "%s/%s", data_dir, RESTORE_MARKER);
    f = fopen(path, "w");
    if (f == NULL) {
        return -1;
    }
    fprintf(f, "restored from cluster %s at index %llu: bootstrap a new "
               "cluster of this node alone\n",
            res->cluster_id, (unsigned long long)res->reached_index);
    if (fflush(f) != 0 || fsync(fileno(f)) != 0) {
        fclose(f);
        return -1;
    }
    return fclose(f);
}

/* Refuse a data dir that a node has used: a store, a Raft log, a plan. */
static int data_dir_used(const char *data_dir, char *what, size_t len)
{
    static const char *const parts[] = {"store/data.mdb", "raft/metadata1",
                                        "raft/metadata2", RESTORE_MARKER};
    char path[4096];
    struct stat st;

    for (size_t i = 0; i < sizeof parts / sizeof parts[0]; i++) {
        snprintf(path, sizeof path, "%s/%s", data_dir, parts[i]);
        if (stat(path, &st) == 0) {
            snprintf(what, len, "%s exists", path);
            return 1;
        }
    }
    return 0;
}

int ops_backup_restore(const char *file,
                       const char *data_dir,
                       const char *archive_dir,
                       uint64_t to_index,
                       int64_t to_time,
                       int quiet,
                       char *err,
                       size_t errlen)
{
    struct store_restore_opts o = {to_index, to_time, archive_dir};
    struct store_restore_result res;
    struct progress pg = {"restore", quiet, mono_s(), 0, 0};
    char store_dir[4096];
    char what[4200];

    if (data_dir_used(data_dir, what, sizeof what)) {
        snprintf(err, errlen,
                 "refusing to restore into %s: %s; give an empty or new "
                 "data directory",
                 data_dir, what);
        return OPS_EXIT_FAIL;
    }
    if (mkdir(data_dir, 0750) != 0 && errno != EEXIST) {
        snprintf(err, errlen, "mkdir %s: %s", data_dir, strerror(errno));
        return OPS_EXIT_FAIL;
    }
    snprintf(store_dir, sizeof store_dir, "%s/store", data_dir);
    memset(&res, 0, sizeof res);
    if (store_backup_restore(file, store_dir, &o, progress_cb, &pg, &res, err,
                             errlen) != 0) {
        progress_end(&pg);
        return OPS_EXIT_FAIL;
    }
    progress_end(&pg);
    if (marker_write(data_dir, &res) != 0) {
        snprintf(err, errlen, "cannot write %s/%s: %s", data_dir,
                 RESTORE_MARKER, strerror(errno));
        return OPS_EXIT_FAIL;
    }
    if (!quiet) {
        char t[64];
        ops_time_format(res.reached_time, t, sizeof t);
        fprintf(stderr,
                "restored cluster %s: backup index %llu, replayed %llu "
                "entries (%llu commands) up to index %llu (%s); audit %llu "
                "records; %.1f s\n",
                res.cluster_id, (unsigned long long)res.backup_index,
                (unsigned long long)res.replayed_entries,
                (unsigned long long)res.replayed_commands,
                (unsigned long long)res.reached_index, t,
                (unsigned long long)res.audit_size, mono_s() - pg.t0);
    }
    return OPS_EXIT_OK;
}

static int run_restore(struct ops_ctl *ctl, const struct ops_args *a)
{
    const char *file = a->n_pos > 2 ? a->pos[2] : NULL;
    const char *data_dir = ops_arg(a, "data-dir");
    const char *archive = ops_arg(a, "archive");
    const char *to_index_s = ops_arg(a, "to-index");
    const char *to_time_s = ops_arg(a, "to-time");
    uint64_t to_index = 0;
    int64_t to_time = 0;
    char err[1024];

    if (file == NULL || data_dir == NULL) {
        return ops_usage_error(ctl, "backup restore FILE --data-dir DIR is "
                                    "required");
    }
    if (to_index_s != NULL && to_time_s != NULL) {
        return ops_usage_error(ctl, "backup restore: --to-index or "
                                    "--to-time, not both");
    }
    if (to_index_s != NULL &&
        (ops_parse_u64(to_index_s, &to_index) != 0 || to_index == 0)) {
        return ops_usage_error(ctl, "backup restore: bad --to-index");
    }
    if (to_time_s != NULL && ops_time_parse(to_time_s, &to_time) != 0) {
        return ops_usage_error(ctl, "backup restore: bad --to-time");
    }
    if ((to_index != 0 || to_time != 0) && archive == NULL) {
        return ops_usage_error(ctl, "backup restore: --to-index/--to-time "
                                    "need --archive DIR");
    }
    if (ops_backup_restore(file, data_dir, archive, to_index, to_time,
                           ctl->json, err, sizeof err) != OPS_EXIT_OK) {
        ops_print_error(ctl, "backup restore", "FAILED", err, file);
        return OPS_EXIT_FAIL;
    }
    if (ctl->json) {
        json_t *j = json_object();
        json_object_set_new(j, "data_dir", json_string(data_dir));
        json_object_set_new(j, "status", json_string("restored"));
        return ops_json_print(j);
    }
    printf("restored into %s. Next: start cityopsd with [node] data_dir = "
           "%s; it bootstraps a new cluster of itself alone (the member "
           "list is not used for that); then add the other nodes with "
           "cityctl cluster add.\n",
           data_dir, data_dir);
    return OPS_EXIT_OK;
}

static int run_list(struct ops_ctl *ctl)
{
    Cityops__V1__BackupListRequest req = CITYOPS__V1__BACKUP_LIST_REQUEST__INIT;
    Cityops__V1__BackupListResponse *r = NULL;
    static const char *const headers[] = {"NAME", "BYTES", "INDEX", "CASES",
                                          "MADE"};
    struct ops_table *t;
    int rv;

    rv = ops_call(ctl, "Backup/List", &req.base,
                  &cityops__v1__backup_list_response__descriptor,
                  (ProtobufCMessage **)&r);
    if (rv != OPS_EXIT_OK) {
        return rv;
    }
    if (ctl->json) {
        rv = ops_json_print(ops_pb_to_json(&r->base));
        cityops__v1__backup_list_response__free_unpacked(r, NULL);
        return rv;
    }
    printf("backups in %s (on %s):\n", r->dir,
           ctl->endpoints[ctl->last_endpoint]);
    t = ops_table_new(5, headers);
    for (size_t i = 0; t != NULL && i < r->n_backups; i++) {
        const Cityops__V1__BackupFile *f = r->backups[i];
        char bytes[24] = "-";
        char idx[24] = "-";
        char cases[24] = "-";
        char made[64] = "-";
        const char *cells[5];

        snprintf(bytes, sizeof bytes, "%llu", (unsigned long long)f->size);
        if (f->info != NULL) {
            snprintf(idx, sizeof idx, "%llu",
                     (unsigned long long)f->info->applied_index);
            snprintf(cases, sizeof cases, "%llu",
                     (unsigned long long)f->info->case_count);
            ops_time_format(f->info->created_at, made, sizeof made);
        }
        cells[0] = f->name;
        cells[1] = bytes;
        cells[2] = idx;
        cells[3] = cases;
        cells[4] = made;
        ops_table_add(t, cells);
    }
    if (t != NULL) {
        ops_table_print(t, stdout);
        ops_table_free(t);
    }
    if (r->archive == NULL || *r->archive->dir == '\0') {
        printf("command archive: off ([backup] archive_dir)\n");
    } else {
        printf("command archive: %s: indexes %llu..%llu in %llu segments, "
               "%llu bytes%s%s\n",
               r->archive->dir, (unsigned long long)r->archive->first_index,
               (unsigned long long)r->archive->last_index,
               (unsigned long long)r->archive->segments,
               (unsigned long long)r->archive->bytes,
               *r->archive->error ? "; LAST ERROR: " : "", r->archive->error);
    }
    cityops__v1__backup_list_response__free_unpacked(r, NULL);
    return OPS_EXIT_OK;
}

const char *ctl_backup_options(const char *sub)
{
    if (strcmp(sub, "create") == 0) {
        return "out";
    }
    if (strcmp(sub, "restore") == 0) {
        return "data-dir archive to-index to-time";
    }
    if (strcmp(sub, "verify") == 0 || strcmp(sub, "list") == 0) {
        return "";
    }
    return NULL;
}

int ctl_backup_run(struct ops_ctl *ctl, const struct ops_args *a)
{
    const char *sub = a->pos[1];

    if (strcmp(sub, "create") == 0) {
        return run_create(ctl, a);
    }
    if (strcmp(sub, "verify") == 0) {
        return run_verify(ctl, a);
    }
    if (strcmp(sub, "restore") == 0) {
        return run_restore(ctl, a);
    }
    return run_list(ctl);
}
