/* The command archive: every applied Raft entry, appended in apply order to
 * segment files, so that a backup can be rolled forward to a point in time.
 *
 * DESIGN
 *
 * - Layout (store.h has the byte format). archive_dir/<cluster id>/ holds
 *   segments named by the index of their first record. A restored cluster
 *   gets a new cluster id, so its indexes (from 1 again) never meet the old
 *   ones in one directory.
 * - Continuity. Only command entries reach apply: configuration changes and
 *   barriers take Raft indexes too, so "index = last + 1" cannot tell a
 *   hole from a loss. The applying thread knows the applied index before
 *   each entry, though: a record follows the one before it in its segment
 *   with nothing applied in between, and a segment's header holds the
 *   applied index before its first record. A reader therefore sees a gap
 *   exactly where that chain breaks: a snapshot was installed, an append
 *   failed, the archive was switched on late, or a torn tail was cut.
 * - Durability. Appends happen after the entry's transaction committed, so
 *   the archive never holds an entry the store does not. Without nosync
 *   every append is fdatasync'ed; with nosync store_sync() syncs both. A
 *   crash may leave a torn last record: opening the store cuts it (and
 *   drops a last segment left with no record), and the entries lost that
 *   way show as a gap. A record is written with one writev() and refused on
 *   read unless its CRC-32 matches, so a torn record is never replayed.
 * - Failures never fail apply: they are kept in the status (and errmsg),
 *   and the next entry starts a new segment.
 * - Threads: only the applying thread appends; status and sync may run on
 *   any thread, so the state sits behind a mutex that is held for the
 *   (page cache) write of one record.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include "store_internal.h"

#define ARCH_MAGIC "COARCH01"
#define ARCH_MAGIC_LEN 8
#define ARCH_HEADER_LEN (ARCH_MAGIC_LEN + STORE_CLUSTER_ID_SIZE + 8)
#define ARCH_REC_HEADER 16
#define ARCH_SEGMENT_MAX ((uint64_t)64 << 20)
#define ARCH_RECORD_MAX ((uint64_t)256 << 20)
#define ARCH_SUFFIX ".coarch"
#define ARCH_NAME_DIGITS 20
#define ARCH_ROOT_SIZE sizeof(((struct store_archive_status *)0)->dir)
#define ARCH_DIR_SIZE (ARCH_ROOT_SIZE + 1 + STORE_CLUSTER_ID_SIZE)

struct store_archive {
    pthread_mutex_t lock; /* guards every field below */
    char root[ARCH_ROOT_SIZE];
    char cid[STORE_CLUSTER_ID_SIZE];
    char dir[ARCH_DIR_SIZE]; /* root/cid once the cluster id is known */
    int scanned;        /* dir was scanned (and its tail repaired) */
    int fd;             /* the last segment, open for append; -1: none */
    uint64_t seg_size;  /* valid bytes of that segment */
    uint64_t first_index;
    uint64_t last_index;
    uint64_t segments;
    uint64_t bytes;
    int broken;    /* an append failed: the next one starts a segment */
    int sync_each; /* no nosync: fdatasync every append */
    char error[sizeof(((struct store_archive_status *)0)->error)];
};

/* --- CRC-32 (IEEE 802.3, reflected 0xEDB88320) --- */

static pthread_once_t crc_once = PTHREAD_ONCE_INIT;
static uint32_t crc_table[256];

static void crc_init(void)
{
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;

        for (int k = 0; k < 8; k++) {
            c = (c & 1) != 0 ? 0xEDB88320u ^ (c >> 1) : c >> 1;
        }
        crc_table[i] = c;
    }
}

static uint32_t crc_update(uint32_t crc, const uint8_t *p, size_t n)
{
    crc = ~crc;
    while (n-- > 0) {
        crc = crc_table[(crc ^ *p++) & 0xff] ^ (crc >> 8);
    }
    return ~crc;
}

/* CRC-32 of the index (8 bytes BE) followed by the payload. */
static uint32_t record_crc(const uint8_t index_be[8],
                           const uint8_t *payload,
                           size_t len)
{
    pthread_once(&crc_once, crc_init);
    return crc_update(crc_update(0, index_be, 8), payload, len);
}

static uint32_t be32_get(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 |
           (uint32_t)p[3];
}

/* --- segments on disk --- */

/* The first indexes of the segments in @dir, sorted; *bytes: their total
 * size. A missing directory has none. */
static int seg_list(struct store *s,
                    const char *dir,
                    uint64_t **firsts,
                    size_t *n,
                    uint64_t *bytes)
{
    char path[PATH_MAX];
    struct dirent *e;
    struct stat st;
    uint64_t *v = NULL;
    size_t cap = 0;
    DIR *d;

    *firsts = NULL;
    *n = 0;
    *bytes = 0;
    d = opendir(dir);
    if (d == NULL) {
        return errno == ENOENT ? 0
                               : store_errf(s, STORE_IOERR,
                                            "archive: open %s: %s", dir,
                                            strerror(errno));
    }
    while ((e = readdir(d)) != NULL) {
        if (strlen(e->d_name) != ARCH_NAME_DIGITS + strlen(ARCH_SUFFIX) ||
            strspn(e->d_name, "0123456789") != ARCH_NAME_DIGITS ||
            strcmp(e->d_name + ARCH_NAME_DIGITS, ARCH_SUFFIX) != 0) {
            continue;
        }
        if (*n == cap) {
            uint64_t *nv = realloc(v, (cap = cap * 2 + 16) * sizeof(*v));

            if (nv == NULL) {
                closedir(d);
                free(v);
                return store_errf(s, STORE_NOMEM, "archive: out of memory");
            }
            v = nv;
        }
        v[(*n)++] = strtoull(e->d_name, NULL, 10);
        snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
        if (stat(path, &st) == 0) {
            *bytes += (uint64_t)st.st_size;
        }
    }
    closedir(d);
    for (size_t i = 1; i < *n; i++) { /* few segments: insertion sort */
        uint64_t x = v[i];
        size_t j = i;

        for (; j > 0 && v[j - 1] > x; j--) {
            v[j] = v[j - 1];
        }
        v[j] = x;
    }
    *firsts = v;
    return 0;
}

static void seg_path(char *buf, size_t size, const char *dir, uint64_t first)
{
    snprintf(buf, size, "%s/%0*llu%s", dir, ARCH_NAME_DIGITS,
             (unsigned long long)first, ARCH_SUFFIX);
}

/* Read a segment header; 0 and *prev if it is one. */
static int seg_header(int fd, uint64_t size, uint64_t *prev)
{
    uint8_t h[ARCH_HEADER_LEN];

    if (size < ARCH_HEADER_LEN ||
        pread(fd, h, sizeof(h), 0) != (ssize_t)sizeof(h) ||
        memcmp(h, ARCH_MAGIC, ARCH_MAGIC_LEN) != 0) {
        return -1;
    }
    *prev = store_be64_get(h + ARCH_MAGIC_LEN + STORE_CLUSTER_ID_SIZE);
    return 0;
}

/* The record at *off of a segment of @size bytes, checked (length, CRC,
 * index above @after). Returns 0 and advances *off, 1 if there is no good
 * record there (end, torn or damaged), or a STORE_* code. *payload
 * (optional) is malloc'd. */
static int seg_record(struct store *s,
                      int fd,
                      uint64_t size,
                      uint64_t *off,
                      uint64_t after,
                      uint64_t *index,
                      uint8_t **payload,
                      size_t *len)
{
    uint8_t h[ARCH_REC_HEADER];
    uint8_t *p;
    uint64_t n;

    if (size - *off < ARCH_REC_HEADER ||
        pread(fd, h, sizeof(h), (off_t)*off) != (ssize_t)sizeof(h)) {
        return 1;
    }
    n = be32_get(h);
    if (n > ARCH_RECORD_MAX || size - *off - ARCH_REC_HEADER < n) {
        return 1;
    }
    p = malloc(n > 0 ? n : 1);
    if (p == NULL) {
        return store_errf(s, STORE_NOMEM, "archive: %llu bytes",
                          (unsigned long long)n);
    }
    if (pread(fd, p, n, (off_t)(*off + ARCH_REC_HEADER)) != (ssize_t)n ||
        record_crc(h + 8, p, n) != be32_get(h + 4) ||
        store_be64_get(h + 8) <= after) {
        free(p);
        return 1;
    }
    *index = store_be64_get(h + 8);
    *off += ARCH_REC_HEADER + n;
    if (payload != NULL) {
        *payload = p;
        *len = n;
    } else {
        free(p);
    }
    return 0;
}

/* --- appending --- */

static void arch_fail(struct store *s, const char *fmt, const char *what)
{
    struct store_archive *a = s->archive;

    snprintf(a->error, sizeof(a->error), fmt, what, strerror(errno));
    store_errf(s, STORE_IOERR, "archive: %s", a->error);
    a->broken = 1;
}

static void arch_close_fd(struct store_archive *a)
{
    if (a->fd >= 0) {
        fdatasync(a->fd);
        close(a->fd);
        a->fd = -1;
    }
}

static int dir_fsync(const char *dir)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    int rc;

    if (fd < 0) {
        return -1;
    }
    rc = fsync(fd);
    close(fd);
    return rc;
}

/* Scan the last segment of a->dir: keep its good records, cut a torn tail,
 * drop it if no record is left (then the one before is the last). Leaves
 * it open for append. */
static int arch_repair_tail(struct store *s, uint64_t *firsts, size_t *n)
{
    struct store_archive *a = s->archive;
    char path[PATH_MAX];
    struct stat st;
    uint64_t prev;
    uint64_t off;
    uint64_t index;
    int rv;

    while (*n > 0) {
        seg_path(path, sizeof(path), a->dir, firsts[*n - 1]);
        a->fd = open(path, O_RDWR | O_CLOEXEC);
        if (a->fd < 0 || fstat(a->fd, &st) != 0) {
            arch_fail(s, "open %s: %s", path);
            return STORE_IOERR;
        }
        off = ARCH_HEADER_LEN;
        a->last_index = 0;
        rv = seg_header(a->fd, (uint64_t)st.st_size, &prev) == 0 ? 0 : 1;
        while (rv == 0) {
            rv = seg_record(s, a->fd, (uint64_t)st.st_size, &off,
                            a->last_index, &index, NULL, NULL);
            if (rv == 0) {
                a->last_index = index;
            }
        }
        if (rv < 0) {
            return rv;
        }
        if (a->last_index != 0) {
            if ((uint64_t)st.st_size != off &&
                (ftruncate(a->fd, (off_t)off) != 0 || fsync(a->fd) != 0)) {
                arch_fail(s, "truncate the torn tail of %s: %s", path);
                return STORE_IOERR;
            }
            a->bytes -= (uint64_t)st.st_size - off;
            a->seg_size = off;
            return lseek(a->fd, (off_t)off, SEEK_SET) < 0 ? STORE_IOERR : 0;
        }
        close(a->fd);
        a->fd = -1;
        unlink(path);
        a->bytes -= (uint64_t)st.st_size;
        (*n)--;
    }
    return 0;
}

/* Once the cluster id is known: create the directory, count the segments
 * and repair the tail. */
static int arch_scan(struct store *s)
{
    struct store_archive *a = s->archive;
    uint64_t *firsts;
    size_t n;
    int rv;

    a->scanned = 1;
    snprintf(a->dir, sizeof(a->dir), "%s/%s", a->root, a->cid);
    if ((mkdir(a->root, 0755) != 0 && errno != EEXIST) ||
        (mkdir(a->dir, 0755) != 0 && errno != EEXIST)) {
        arch_fail(s, "create %s: %s", a->dir);
        return STORE_IOERR;
    }
    rv = seg_list(s, a->dir, &firsts, &n, &a->bytes);
    if (rv != 0) {
        snprintf(a->error, sizeof(a->error), "%s", store_errmsg(s));
        a->broken = 1;
        return rv;
    }
    rv = arch_repair_tail(s, firsts, &n);
    a->segments = n;
    a->first_index = n > 0 ? firsts[0] : 0;
    free(firsts);
    if (rv != 0) {
        a->broken = 1;
    }
    return rv;
}

/* Start the segment of @index; @prev: the applied index before it. */
static int seg_start(struct store *s, uint64_t prev, uint64_t index)
{
    struct store_archive *a = s->archive;
    uint8_t h[ARCH_HEADER_LEN];
    char path[PATH_MAX];

    arch_close_fd(a);
    seg_path(path, sizeof(path), a->dir, index);
    memset(h, 0, sizeof(h));
    memcpy(h, ARCH_MAGIC, ARCH_MAGIC_LEN);
    memcpy(h + ARCH_MAGIC_LEN, a->cid, strlen(a->cid));
    store_be64_put(h + ARCH_MAGIC_LEN + STORE_CLUSTER_ID_SIZE, prev);
    a->fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (a->fd < 0) {
        arch_fail(s, "create %s: %s", path);
        return STORE_IOERR;
    }
    if (write(a->fd, h, sizeof(h)) != (ssize_t)sizeof(h) ||
        dir_fsync(a->dir) != 0) {
        arch_fail(s, "write the header of %s: %s", path);
        close(a->fd);
        a->fd = -1;
        unlink(path);
        return STORE_IOERR;
    }
    a->seg_size = ARCH_HEADER_LEN;
    a->segments++;
    a->bytes += ARCH_HEADER_LEN;
    if (a->first_index == 0) {
        a->first_index = index;
    }
    a->broken = 0;
    return 0;
}

/* After a failed append: cut what was written of the record, close the
 * segment, and remove it if the record was to be its first. */
static void seg_abandon(struct store_archive *a, uint64_t index)
{
    char path[PATH_MAX];

    if (ftruncate(a->fd, (off_t)a->seg_size) != 0) {
        a->broken = 1; /* readers stop at the torn record */
    }
    close(a->fd);
    a->fd = -1;
    a->broken = 1;
    if (a->seg_size == ARCH_HEADER_LEN) {
        seg_path(path, sizeof(path), a->dir, index);
        unlink(path);
        a->segments--;
        a->bytes -= ARCH_HEADER_LEN;
        if (a->first_index == index) {
            a->first_index = 0;
        }
    }
}

static void record_write(struct store *s,
                         uint64_t index,
                         const void *buf,
                         size_t len)
{
    struct store_archive *a = s->archive;
    uint8_t h[ARCH_REC_HEADER];
    struct iovec iov[2] = {{h, sizeof(h)}, {(void *)buf, len}};
    ssize_t n;

    store_be32_put(h, (uint32_t)len);
    store_be64_put(h + 8, index);
    store_be32_put(h + 4, record_crc(h + 8, buf, len));
    do {
        n = writev(a->fd, iov, 2);
    } while (n < 0 && errno == EINTR);
    if (n >= 0 && n != (ssize_t)(sizeof(h) + len)) {
        errno = ENOSPC; /* a short write: the file system is full */
    }
    if (n != (ssize_t)(sizeof(h) + len) ||
        (a->sync_each && fdatasync(a->fd) != 0)) {
        arch_fail(s, "append to %s: %s", a->dir);
        seg_abandon(a, index);
        return;
    }
    a->seg_size += sizeof(h) + len;
    a->bytes += sizeof(h) + len;
    a->last_index = index;
}

/* The cluster id from the committed state; "" while there is none. */
static void cid_refresh(struct store *s)
{
    char id[STORE_CLUSTER_ID_SIZE];

    if (store_cluster_id(s, id, NULL) != 0 || id[0] == '\0') {
        return;
    }
    pthread_mutex_lock(&s->archive->lock);
    memcpy(s->archive->cid, id, sizeof(id));
    pthread_mutex_unlock(&s->archive->lock);
}

void archive_append(struct store *s,
                    uint64_t prev,
                    uint64_t index,
                    const void *buf,
                    size_t len)
{
    struct store_archive *a = s->archive;

    if (a->cid[0] == '\0') {
        cid_refresh(s);
        if (a->cid[0] == '\0') {
            return;
        }
    }
    pthread_mutex_lock(&a->lock);
    if (!a->scanned) {
        arch_scan(s);
    }
    if (index <= a->last_index) {
        goto out_unlock;
    }
    if (a->fd < 0 || a->broken || prev != a->last_index ||
        (a->seg_size > ARCH_HEADER_LEN &&
         a->seg_size + ARCH_REC_HEADER + len > ARCH_SEGMENT_MAX)) {
        if (seg_start(s, prev, index) != 0) {
            goto out_unlock;
        }
    }
    record_write(s, index, buf, len);
out_unlock:
    pthread_mutex_unlock(&a->lock);
}

int archive_open(struct store *s, const char *root)
{
    struct store_archive *a;

    if (strlen(root) >= ARCH_ROOT_SIZE) {
        return store_errf(s, STORE_INVALID, "archive dir %s: path too long",
                          root);
    }
    a = calloc(1, sizeof(*a));
    if (a == NULL) {
        return store_errf(s, STORE_NOMEM, "archive: out of memory");
    }
    pthread_mutex_init(&a->lock, NULL);
    snprintf(a->root, sizeof(a->root), "%s", root);
    a->fd = -1;
    a->sync_each = !s->nosync;
    s->archive = a;
    cid_refresh(s);
    if (a->cid[0] != '\0') {
        pthread_mutex_lock(&a->lock);
        arch_scan(s);
        pthread_mutex_unlock(&a->lock);
    }
    return 0;
}

void archive_close(struct store *s)
{
    struct store_archive *a = s->archive;

    if (a == NULL) {
        return;
    }
    arch_close_fd(a);
    pthread_mutex_destroy(&a->lock);
    free(a);
    s->archive = NULL;
}

int archive_sync(struct store *s)
{
    struct store_archive *a = s->archive;
    int rv = 0;
    int fd;

    if (a == NULL) {
        return 0;
    }
    /* The fdatasync runs on a duplicate descriptor outside the lock, so
     * that appends (the apply path) do not wait for the disk. A segment
     * closed meanwhile was synced when it was closed. */
    pthread_mutex_lock(&a->lock);
    fd = a->fd >= 0 ? fcntl(a->fd, F_DUPFD_CLOEXEC, 0) : -1;
    if (a->fd >= 0 && fd < 0) {
        rv = store_errf(s, STORE_IOERR, "archive: sync %s: dup: %s", a->dir,
                        strerror(errno));
    }
    pthread_mutex_unlock(&a->lock);
    if (fd >= 0) {
        if (fdatasync(fd) != 0) {
            rv = store_errf(s, STORE_IOERR, "archive: sync %s: %s", a->dir,
                            strerror(errno));
        }
        close(fd);
    }
    return rv;
}

void store_archive_status(struct store *s, struct store_archive_status *out)
{
    struct store_archive *a = s->archive;

    memset(out, 0, sizeof(*out));
    if (a == NULL) {
        return;
    }
    pthread_mutex_lock(&a->lock);
    memcpy(out->dir, a->root, sizeof(out->dir));
    out->first_index = a->first_index;
    out->last_index = a->last_index;
    out->segments = a->segments;
    out->bytes = a->bytes;
    memcpy(out->error, a->error, sizeof(out->error));
    pthread_mutex_unlock(&a->lock);
}

/* --- reading (restore) --- */

struct archive_reader {
    char dir[ARCH_DIR_SIZE];
    uint64_t *firsts;
    size_t n;
    size_t next_seg; /* index in firsts of the segment to open next */
    int fd;          /* the current segment; -1 */
    uint64_t size;   /* of the current segment */
    uint64_t off;    /* next record in it */
    uint64_t prev;   /* applied index before the next record */
    uint64_t last;   /* index of the last record returned from it */
    uint64_t done;   /* bytes of the segments before the current one */
    uint64_t total;
};

int archive_reader_open(struct store *s,
                        const char *dir,
                        struct archive_reader **out)
{
    struct archive_reader *r;
    int rv;

    if (strlen(dir) >= ARCH_DIR_SIZE) {
        return store_errf(s, STORE_INVALID, "archive %s: path too long", dir);
    }
    r = calloc(1, sizeof(*r));
    if (r == NULL) {
        return store_errf(s, STORE_NOMEM, "archive: out of memory");
    }
    snprintf(r->dir, sizeof(r->dir), "%s", dir);
    r->fd = -1;
    rv = seg_list(s, dir, &r->firsts, &r->n, &r->total);
    if (rv != 0) {
        free(r);
        return rv;
    }
    *out = r;
    return 0;
}

/* Open the next segment with a good header; 1 when there is none. */
static int reader_advance(struct store *s, struct archive_reader *r)
{
    char path[PATH_MAX];
    struct stat st;

    while (r->next_seg < r->n) {
        if (r->fd >= 0) {
            close(r->fd);
            r->done += r->size;
        }
        seg_path(path, sizeof(path), r->dir, r->firsts[r->next_seg++]);
        r->fd = open(path, O_RDONLY | O_CLOEXEC);
        if (r->fd < 0 || fstat(r->fd, &st) != 0) {
            return store_errf(s, STORE_IOERR, "archive: open %s: %s", path,
                              strerror(errno));
        }
        r->size = (uint64_t)st.st_size;
        r->off = ARCH_HEADER_LEN;
        r->last = 0;
        if (seg_header(r->fd, r->size, &r->prev) == 0) {
            return 0;
        }
    }
    return 1;
}

int archive_reader_next(struct store *s,
                        struct archive_reader *r,
                        uint64_t *prev,
                        uint64_t *index,
                        uint8_t **payload,
                        size_t *len,
                        int *eof)
{
    int rv = 1;

    *eof = 0;
    while (rv == 1) {
        if (r->fd >= 0) {
            rv = seg_record(s, r->fd, r->size, &r->off, r->last, index,
                            payload, len);
            if (rv <= 0) {
                break;
            }
        }
        rv = reader_advance(s, r);
        if (rv == 1) {
            *eof = 1;
            return 0;
        }
        rv = rv == 0 ? 1 : rv;
    }
    if (rv != 0) {
        return rv;
    }
    *prev = r->last != 0 ? r->last : r->prev;
    r->last = *index;
    return 0;
}

void archive_reader_progress(const struct archive_reader *r,
                             uint64_t *done,
                             uint64_t *total)
{
    *done = r->done + (r->fd >= 0 ? r->off : 0);
    *total = r->total;
}

void archive_reader_close(struct archive_reader *r)
{
    if (r == NULL) {
        return;
    }
    if (r->fd >= 0) {
        close(r->fd);
    }
    free(r->firsts);
    free(r);
}
