/* Backups on the node: the Backup service and scheduled backups.
 *
 * Backup/Create makes a consistent copy of the store (storage's
 * store_backup_write: one LMDB read transaction, so writes go on) into
 * <backup dir>/transfer-<id>.cobak on a thread of its own, then answers with
 * the id; Backup/Read serves it in chunks (calls are unary and messages are
 * limited to 4 MiB, so a 1 GB backup is many reads); Release deletes it, and
 * so does ten idle minutes or a restart.
 *
 * With [backup] interval_s the scheduler thread writes
 * <backup dir>/backup-<UTC time>-<index>.cobak (written as .part, fsynced,
 * renamed) and keeps the newest [backup] keep of them. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cityops/v1/dr.pb-c.h"
#include "proto/clog.h"
#include "proto/deadline_ts.h"
#include "node_internal.h"

#define BK_MAX_TRANSFERS 2
#define BK_IDLE_MS (10 * 60 * 1000)
#define BK_CHUNK (1u << 20)
#define BK_CHUNK_MAX (2u << 20)
#define BK_TICK_MS 1000
#define BK_LIST_MAX 256

struct node_backups;

struct transfer {
    struct node_backups *b;
    int used;
    int ready;  /* the file is complete */
    char id[33];
    char path[NODE_PATH_SIZE + 64];
    int fd;
    uint64_t size;
    int64_t last_used_ms;
    pthread_t thread;
    int joinable;
    struct rpc_call *call; /* Create, until answered */
};

struct node_backups {
    struct node *n;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int stopping;
    pthread_t sched;
    int64_t next_backup_ms;
    struct transfer t[BK_MAX_TRANSFERS];
};

static int64_t wall_us(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* Write a backup of the store to @path. @err gets a sentence on failure. */
static int backup_to(struct node *n,
                     const char *path,
                     Cityops__V1__BackupInfo **info,
                     uint8_t sha[32],
                     uint64_t *size,
                     char *err,
                     size_t errlen)
{
    struct stat st;
    int fd;
    int rv;

    fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0640);
    if (fd < 0) {
        snprintf(err, errlen, "cannot create %s: %s", path, strerror(errno));
        return -1;
    }
    rv = store_backup_write(n->store, fd, n->cfg.id, wall_us(), NULL, NULL,
                            info, sha);
    if (rv != 0) {
        snprintf(err, errlen, "backup: %s", store_errmsg(n->store));
    } else if (fsync(fd) != 0 || fstat(fd, &st) != 0) {
        snprintf(err, errlen, "backup: sync %s: %s", path, strerror(errno));
        rv = -1;
    } else {
        *size = (uint64_t)st.st_size;
    }
    close(fd);
    if (rv != 0) {
        unlink(path);
        if (info != NULL && *info != NULL) {
            cityops__v1__backup_info__free_unpacked(*info, NULL);
            *info = NULL;
        }
    }
    return rv;
}

/* --- Backup/Create, Read, Release --- */

static struct transfer *transfer_find(struct node_backups *b, const char *id)
{
    for (int i = 0; i < BK_MAX_TRANSFERS; i++) {
        if (b->t[i].used && strcmp(b->t[i].id, id) == 0) {
            return &b->t[i];
        }
    }
    return NULL;
}

/* Lock held. */
static void transfer_drop(struct transfer *t)
{
    if (t->fd >= 0) {
        close(t->fd);
    }
    unlink(t->path);
    t->used = 0;
    t->ready = 0;
    t->fd = -1;
}

static void *create_main(void *arg)
{
    struct transfer *t = arg;
    struct node_backups *b = t->b;
    Cityops__V1__BackupCreateReply reply = CITYOPS__V1__BACKUP_CREATE_REPLY__INIT;
    Cityops__V1__BackupInfo *info = NULL;
    uint8_t sha[32];
    uint64_t size = 0;
    char err[NODE_PATH_SIZE + 400];
    struct rpc_call *call;
    int fd = -1;
    int rv;

    rv = backup_to(b->n, t->path, &info, sha, &size, err, sizeof err);
    if (rv == 0) {
        fd = open(t->path, O_RDONLY | O_CLOEXEC);
        if (fd < 0) {
            snprintf(err, sizeof err, "reopen %s: %s", t->path,
                     strerror(errno));
            rv = -1;
        }
    }
    pthread_mutex_lock(&b->lock);
    call = t->call;
    t->call = NULL;
    if (rv == 0) {
        t->fd = fd;
        t->size = size;
        t->ready = 1;
        t->last_used_ms = mono_ms();
    } else {
        transfer_drop(t);
    }
    pthread_mutex_unlock(&b->lock);
    if (rv != 0) {
        clog(CLOG_ERROR, "backup", "%s", err);
        rpc_call_fail(call, GRPC_STATUS_INTERNAL, err);
        return NULL;
    }
    clog(CLOG_INFO, "backup",
         "backup %s ready: %llu bytes at index %llu (%s)", t->id,
         (unsigned long long)size, (unsigned long long)info->applied_index,
         t->path);
    reply.backup_id = t->id;
    reply.size = size;
    reply.info = info;
    reply.sha256.data = sha;
    reply.sha256.len = sizeof sha;
    rpc_call_reply(call, &reply.base);
    cityops__v1__backup_info__free_unpacked(info, NULL);
    return NULL;
}

static int require_admin(struct rpc_call *call,
                         const Cityops__V1__RequestContext *ctx)
{
    if (ctx == NULL || ctx->role != CITYOPS__V1__ROLE__ROLE_ADMIN) {
        rpc_call_fail(call, GRPC_STATUS_PERMISSION_DENIED,
                      "backups need role ADMIN");
        return -1;
    }
    return 0;
}

static void create_handle(struct rpc_call *call,
                          const ProtobufCMessage *msg,
                          void *data)
{
    const struct node_handler *h = data;
    struct node_backups *b = h->n->backups;
    const Cityops__V1__BackupCreateRequest *req =
        (const Cityops__V1__BackupCreateRequest *)msg;
    struct transfer *t = NULL;
    uint8_t r[16];
    char err[NODE_PATH_SIZE + 80];
    char path[sizeof t->path];

    if (require_admin(call, req->ctx) != 0) {
        return;
    }
    if (b == NULL) {
        rpc_call_fail(call, GRPC_STATUS_UNAVAILABLE, "node is starting");
        return;
    }
    if (node_make_dirs(h->n->cfg.backup_dir) != 0) {
        snprintf(err, sizeof err, "cannot create the backup directory %s: %s",
                 h->n->cfg.backup_dir, strerror(errno));
        rpc_call_fail(call, GRPC_STATUS_INTERNAL, err);
        return;
    }
    if (getrandom(r, sizeof r, 0) != sizeof r) {
        rpc_call_fail(call, GRPC_STATUS_INTERNAL, "no randomness for an id");
        return;
    }
    pthread_mutex_lock(&b->lock);
    for (int i = 0; i < BK_MAX_TRANSFERS && !b->stopping; i++) {
        if (!b->t[i].used && !b->t[i].joinable) {
            t = &b->t[i];
            break;
        }
    }
    if (t == NULL) {
        pthread_mutex_unlock(&b->lock);
        rpc_call_fail(call, GRPC_STATUS_RESOURCE_EXHAUSTED,
                      "two backups are being made or downloaded already: "
                      "release one (or wait 10 minutes) and retry");
        return;
    }
    memset(t, 0, sizeof *t);
    t->b = b;
    t->used = 1;
    t->fd = -1;
    t->call = call;
    for (int i = 0; i < 16; i++) {
        snprintf(t->id + 2 * i, 3, "%02x", r[i]);
    }
    snprintf(path, sizeof path, "%s/transfer-%s.cobak", h->n->cfg.backup_dir,
             t->id);
    memcpy(t->path, path, sizeof t->path);
    t->last_used_ms = mono_ms();
    if (pthread_create(&t->thread, NULL, create_main, t) != 0) {
        t->used = 0;
        pthread_mutex_unlock(&b->lock);
        rpc_call_fail(call, GRPC_STATUS_RESOURCE_EXHAUSTED,
                      "cannot start a backup thread");
        return;
    }
    t->joinable = 1;
    pthread_mutex_unlock(&b->lock);
    clog(CLOG_INFO, "backup", "backup %s asked by %s", t->id,
         req->ctx->actor_id);
}

static void read_handle(struct rpc_call *call,
                        const ProtobufCMessage *msg,
                        void *data)
{
    const struct node_handler *h = data;
    struct node_backups *b = h->n->backups;
    const Cityops__V1__BackupReadRequest *req =
        (const Cityops__V1__BackupReadRequest *)msg;
    Cityops__V1__BackupReadReply reply = CITYOPS__V1__BACKUP_READ_REPLY__INIT;
    struct transfer *t;
    uint32_t max = req->max_bytes == 0 ? BK_CHUNK : req->max_bytes;
    uint8_t *buf;
    ssize_t got = 0;
    int fd;
    uint64_t size;

    if (require_admin(call, req->ctx) != 0) {
        return;
    }
    if (max > BK_CHUNK_MAX) {
        max = BK_CHUNK_MAX;
    }
    pthread_mutex_lock(&b->lock);
    t = transfer_find(b, req->backup_id);
    if (t == NULL || !t->ready) {
        pthread_mutex_unlock(&b->lock);
        rpc_call_fail(call, GRPC_STATUS_NOT_FOUND,
                      t == NULL ? "no such backup on this node (released, "
                                  "expired after 10 idle minutes, or the "
                                  "node restarted): create it again"
                                : "the backup is not ready yet");
        return;
    }
    t->last_used_ms = mono_ms();
    fd = dup(t->fd);
    size = t->size;
    pthread_mutex_unlock(&b->lock);
    if (req->offset > size) {
        close(fd);
        rpc_call_fail(call, GRPC_STATUS_OUT_OF_RANGE,
                      "offset is past the end of the backup");
        return;
    }
    if (size - req->offset < max) {
        max = (uint32_t)(size - req->offset);
    }
    buf = malloc(max > 0 ? max : 1);
    if (buf == NULL || fd < 0) {
        free(buf);
        if (fd >= 0) {
            close(fd);
        }
        rpc_call_fail(call, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
        return;
    }
    while ((uint32_t)got < max) {
        ssize_t r = pread(fd, buf + got, max - (size_t)got,
                          (off_t)(req->offset + (uint64_t)got));
        if (r < 0 && errno == EINTR) {
            continue;
        }
        if (r <= 0) {
            break;
        }
        got += r;
    }
    close(fd);
    if ((uint32_t)got != max) {
        free(buf);
        rpc_call_fail(call, GRPC_STATUS_INTERNAL, "reading the backup failed");
        return;
    }
    reply.data.data = buf;
    reply.data.len = max;
    reply.eof = req->offset + max >= size;
    rpc_call_reply(call, &reply.base);
    free(buf);
}

static void release_handle(struct rpc_call *call,
                           const ProtobufCMessage *msg,
                           void *data)
{
    const struct node_handler *h = data;
    struct node_backups *b = h->n->backups;
    const Cityops__V1__BackupReleaseRequest *req =
        (const Cityops__V1__BackupReleaseRequest *)msg;
    Cityops__V1__BackupReleaseReply reply =
        CITYOPS__V1__BACKUP_RELEASE_REPLY__INIT;
    struct transfer *t;

    if (require_admin(call, req->ctx) != 0) {
        return;
    }
    pthread_mutex_lock(&b->lock);
    t = transfer_find(b, req->backup_id);
    if (t != NULL && t->ready) {
        transfer_drop(t);
    }
    pthread_mutex_unlock(&b->lock);
    rpc_call_reply(call, &reply.base);
}

/* --- Backup/List --- */

/* The BackupInfo header of a backup file (layout in storage/store.h), or
 * NULL if it does not read as one. */
static Cityops__V1__BackupInfo *header_read(const char *path)
{
    Cityops__V1__BackupInfo *info = NULL;
    uint8_t head[12];
    uint8_t *buf;
    uint32_t len;
    int fd = open(path, O_RDONLY | O_CLOEXEC);

    if (fd < 0) {
        return NULL;
    }
    if (pread(fd, head, sizeof head, 0) != (ssize_t)sizeof head ||
        memcmp(head, "COBACK01", 8) != 0) {
        close(fd);
        return NULL;
    }
    len = (uint32_t)head[8] << 24 | (uint32_t)head[9] << 16 |
          (uint32_t)head[10] << 8 | head[11];
    buf = len <= 65536 ? malloc(len + 1) : NULL;
    if (buf != NULL && pread(fd, buf, len, sizeof head) == (ssize_t)len) {
        info = cityops__v1__backup_info__unpack(NULL, len, buf);
    }
    free(buf);
    close(fd);
    return info;
}

static int cmp_names(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Names of the scheduled backups in @dir, sorted (oldest first). */
static size_t scheduled_names(const char *dir, char **names, size_t max)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    size_t n = 0;

    if (d == NULL) {
        return 0;
    }
    while ((e = readdir(d)) != NULL && n < max) {
        size_t len = strlen(e->d_name);
        if (strncmp(e->d_name, "backup-", 7) == 0 && len > 6 &&
            strcmp(e->d_name + len - 6, ".cobak") == 0) {
            names[n] = strdup(e->d_name);
            if (names[n] != NULL) {
                n++;
            }
        }
    }
    closedir(d);
    qsort(names, n, sizeof *names, cmp_names);
    return n;
}

static void list_handle(struct rpc_call *call,
                        const ProtobufCMessage *msg,
                        void *data)
{
    const struct node_handler *h = data;
    struct node *n = h->n;
    Cityops__V1__BackupListResponse resp =
        CITYOPS__V1__BACKUP_LIST_RESPONSE__INIT;
    Cityops__V1__ArchiveStatus arch = CITYOPS__V1__ARCHIVE_STATUS__INIT;
    struct store_archive_status as;
    char *names[BK_LIST_MAX];
    Cityops__V1__BackupFile files[BK_LIST_MAX];
    Cityops__V1__BackupFile *ptrs[BK_LIST_MAX];
    size_t count;

    (void)msg;
    count = scheduled_names(n->cfg.backup_dir, names, BK_LIST_MAX);
    for (size_t i = 0; i < count; i++) {
        char path[NODE_PATH_SIZE + 300];
        struct stat st;

        cityops__v1__backup_file__init(&files[i]);
        files[i].name = names[i];
        snprintf(path, sizeof path, "%s/%s", n->cfg.backup_dir, names[i]);
        if (stat(path, &st) == 0) {
            files[i].size = (uint64_t)st.st_size;
        }
        files[i].info = header_read(path);
        ptrs[i] = &files[i];
    }
    resp.dir = n->cfg.backup_dir;
    resp.backups = ptrs;
    resp.n_backups = count;
    store_archive_status(n->store, &as);
    arch.dir = as.dir;
    arch.first_index = as.first_index;
    arch.last_index = as.last_index;
    arch.segments = as.segments;
    arch.bytes = as.bytes;
    arch.error = as.error;
    resp.archive = &arch;
    rpc_call_reply(call, &resp.base);
    for (size_t i = 0; i < count; i++) {
        if (files[i].info != NULL) {
            cityops__v1__backup_info__free_unpacked(files[i].info, NULL);
        }
        free(names[i]);
    }
}

/* --- scheduled backups --- */

static void retention(struct node *n)
{
    char *names[BK_LIST_MAX];
    size_t count = scheduled_names(n->cfg.backup_dir, names, BK_LIST_MAX);

    for (size_t i = 0; i < count; i++) {
        if (i + n->cfg.backup_keep < count) {
            char path[NODE_PATH_SIZE + 300];
            snprintf(path, sizeof path, "%s/%s", n->cfg.backup_dir, names[i]);
            if (unlink(path) == 0) {
                clog(CLOG_INFO, "backup", "retention: removed %s", path);
            }
        }
        free(names[i]);
    }
}

static void scheduled_backup(struct node *n)
{
    Cityops__V1__BackupInfo *info = NULL;
    char part[NODE_PATH_SIZE + 96];
    char path[NODE_PATH_SIZE + 96];
    char stamp[32];
    char err[400];
    uint64_t size = 0;
    time_t now = time(NULL);
    struct tm tm;
    int64_t t0 = mono_ms();

    gmtime_r(&now, &tm);
    strftime(stamp, sizeof stamp, "%Y%m%dT%H%M%SZ", &tm);
    if (node_make_dirs(n->cfg.backup_dir) != 0) {
        clog(CLOG_ERROR, "backup",
             "scheduled backup: cannot create %s: %s; fix the directory "
             "([backup] dir)",
             n->cfg.backup_dir, strerror(errno));
        return;
    }
    snprintf(part, sizeof part, "%s/backup-%s.part", n->cfg.backup_dir, stamp);
    unlink(part);
    if (backup_to(n, part, &info, NULL, &size, err, sizeof err) != 0) {
        clog(CLOG_ERROR, "backup", "scheduled backup failed: %s", err);
        return;
    }
    snprintf(path, sizeof path, "%s/backup-%s-%llu.cobak", n->cfg.backup_dir,
             stamp, (unsigned long long)info->applied_index);
    if (rename(part, path) != 0) {
        clog(CLOG_ERROR, "backup", "scheduled backup: rename %s: %s", part,
             strerror(errno));
        unlink(part);
    } else {
        clog(CLOG_INFO, "backup",
             "scheduled backup %s: %llu bytes, index %llu, %lld ms", path,
             (unsigned long long)size,
             (unsigned long long)info->applied_index,
             (long long)(mono_ms() - t0));
        retention(n);
    }
    cityops__v1__backup_info__free_unpacked(info, NULL);
}

static void *sched_main(void *arg)
{
    struct node_backups *b = arg;
    struct node *n = b->n;

    pthread_mutex_lock(&b->lock);
    while (!b->stopping) {
        struct timespec ts;
        int64_t now = mono_ms();
        int due = n->cfg.backup_interval_s > 0 && now >= b->next_backup_ms;

        for (int i = 0; i < BK_MAX_TRANSFERS; i++) {
            struct transfer *t = &b->t[i];
            if (t->used && t->ready &&
                now - t->last_used_ms > BK_IDLE_MS) {
                clog(CLOG_INFO, "backup", "backup %s expired (idle)", t->id);
                transfer_drop(t);
            }
            if (!t->used && t->joinable) {
                pthread_join(t->thread, NULL);
                t->joinable = 0;
            }
        }
        if (due) {
            b->next_backup_ms = now + (int64_t)n->cfg.backup_interval_s * 1000;
            pthread_mutex_unlock(&b->lock);
            scheduled_backup(n);
            pthread_mutex_lock(&b->lock);
            continue;
        }
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_sec += BK_TICK_MS / 1000;
        pthread_cond_timedwait(&b->cond, &b->lock, &ts);
    }
    pthread_mutex_unlock(&b->lock);
    return NULL;
}

/* Transfers left by an earlier run are of no use to anyone. */
static void transfers_sweep(const char *dir)
{
    DIR *d = opendir(dir);
    struct dirent *e;

    if (d == NULL) {
        return;
    }
    while ((e = readdir(d)) != NULL) {
        if (strncmp(e->d_name, "transfer-", 9) == 0 ||
            (strncmp(e->d_name, "backup-", 7) == 0 &&
             strstr(e->d_name, ".part") != NULL)) {
            char path[NODE_PATH_SIZE + 300];
            snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
            unlink(path);
        }
    }
    closedir(d);
}

int node_backups_start(struct node *n, struct node_backups **out)
{
    struct node_backups *b = calloc(1, sizeof *b);

    if (b == NULL) {
        return NODE_NOMEM;
    }
    b->n = n;
    pthread_mutex_init(&b->lock, NULL);
    pthread_cond_init(&b->cond, NULL);
    for (int i = 0; i < BK_MAX_TRANSFERS; i++) {
        b->t[i].fd = -1;
    }
    transfers_sweep(n->cfg.backup_dir);
    b->next_backup_ms = mono_ms() + (int64_t)n->cfg.backup_interval_s * 1000;
    if (pthread_create(&b->sched, NULL, sched_main, b) != 0) {
        pthread_cond_destroy(&b->cond);
        pthread_mutex_destroy(&b->lock);
        free(b);
        return NODE_START;
    }
    if (n->cfg.backup_interval_s > 0) {
        clog(CLOG_INFO, "backup", "scheduled backups every %u s into %s, "
                                  "keeping %u",
             n->cfg.backup_interval_s, n->cfg.backup_dir, n->cfg.backup_keep);
    }
    *out = b;
    return 0;
}

void node_backups_stop(struct node_backups *b)
{
    if (b == NULL) {
        return;
    }
    pthread_mutex_lock(&b->lock);
    b->stopping = 1;
    pthread_cond_signal(&b->cond);
    pthread_mutex_unlock(&b->lock);
    pthread_join(b->sched, NULL);
    for (int i = 0; i < BK_MAX_TRANSFERS; i++) {
        struct transfer *t = &b->t[i];
        if (t->joinable) {
            pthread_join(t->thread, NULL); /* a copy in progress ends */
        }
        if (t->used) {
            transfer_drop(t);
        }
    }
    pthread_cond_destroy(&b->cond);
    pthread_mutex_destroy(&b->lock);
    free(b);
}

void node_backup_methods_add(struct node *n)
{
    node_method_add(n, "/cityops.v1.Backup/Create",
                    &cityops__v1__backup_create_request__descriptor,
                    &cityops__v1__backup_create_reply__descriptor,
                    create_handle, 0);
    node_method_add(n, "/cityops.v1.Backup/Read",
                    &cityops__v1__backup_read_request__descriptor,
                    &cityops__v1__backup_read_reply__descriptor, read_handle,
                    0);
    node_method_add(n, "/cityops.v1.Backup/Release",
                    &cityops__v1__backup_release_request__descriptor,
                    &cityops__v1__backup_release_reply__descriptor,
                    release_handle, 0);
    node_method_add(n, "/cityops.v1.Backup/List",
                    &cityops__v1__backup_list_request__descriptor,
                    &cityops__v1__backup_list_response__descriptor,
                    list_handle, 0);
}
