/* Snapshots: a consistent, compact copy of the environment for Raft
 * snapshots and backups, and restoring one in place of the local state.
 *
 * Format (all integers big-endian):
 *   "COSNAP01"           magic and format version, 8 bytes
 *   applied index        u64: the index the copied state has applied
 *   payload length       u64
 *   payload              an LMDB data file (mdb_env_copyfd2, compacted)
 *   SHA-256(payload)     32 bytes, so a damaged copy is refused before it
 *                        replaces anything
 *
 * Restore writes the payload beside the live file, checks that it opens as
 * an LMDB environment holding the announced index, then, holding the
 * environment lock exclusively (readers wait), closes the environment,
 * renames the new file over data.mdb, syncs the directory and reopens. A
 * crash before the rename leaves the old state; after it, the new one.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "store_internal.h"

#define SNAP_MAGIC "COSNAP01"
#define SNAP_MAGIC_LEN 8
#define SNAP_HEADER_LEN (SNAP_MAGIC_LEN + 8 + 8)
#define SNAP_TRAILER_LEN 32
#define SNAP_RESTORE_FILE "data.mdb.restore"

static int sha256(const void *buf, size_t len, uint8_t out[32])
{
    unsigned int n = 0;

    return EVP_Digest(buf, len, out, &n, EVP_sha256(), NULL) == 1 ? 0
                                                                  : STORE_NOMEM;
}

int store_tmpfile(struct store *s, const char *dir, int *fd)
{
    char path[PATH_MAX];

    if (dir == NULL || dir[0] == '\0') {
        dir = ".";
    }
    *fd = open(dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
    if (*fd >= 0) {
        return 0;
    }
    snprintf(path, sizeof(path), "%s/cityops-tmp.XXXXXX", dir);
    *fd = mkostemp(path, O_CLOEXEC);
    if (*fd < 0) {
        return store_errf(s, errno == ENOSPC ? STORE_FULL : STORE_IOERR,
                          "temp file in %s: %s", dir, strerror(errno));
    }
    unlink(path);
    return 0;
}

void store_fd_path(int fd, char *buf, size_t size)
{
    snprintf(buf, size, "/proc/self/fd/%d", fd);
}

/* Copy the environment into @fd. mdb_env_copyfd2 copies one read
 * transaction's view, so the copy is consistent however many applies
 * commit meanwhile; the index it holds is read from the copy itself. */
static int env_copy(struct store *s, int fd, uint64_t *index)
{
    struct store *view = NULL;
    char path[64];
    char err[STORE_ERRMSG_SIZE];
    int rc;

    if (ftruncate(fd, 0) != 0 || lseek(fd, 0, SEEK_SET) != 0) {
        return store_errf(s, STORE_IOERR, "snapshot: truncate: %s",
                          strerror(errno));
    }
    rc = mdb_env_copyfd2(s->env, fd, MDB_CP_COMPACT);
    if (rc != 0) {
        return store_mdb_err(s, rc, "snapshot: copy environment");
    }
    store_fd_path(fd, path, sizeof(path));
    if (store_view_open(path, &view, err, sizeof(err)) != 0) {
        return store_errf(s, STORE_CORRUPT, "snapshot: the copy: %s", err);
    }
    *index = store_applied_index(view);
    store_close(view);
    return 0;
}

int store_pread_all(struct store *s,
                    int fd,
                    void *buf,
                    size_t len,
                    uint64_t off,
                    const char *what)
{
    uint8_t *dst = buf;
    size_t done = 0;

    while (done < len) {
        ssize_t n = pread(fd, dst + done, len - done, (off_t)(off + done));

        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            return store_errf(s, STORE_IOERR, "read %s: %s", what,
                              n < 0 ? strerror(errno) : "short file");
        }
        done += (size_t)n;
    }
    return 0;
}

int store_write_all(struct store *s,
                    int fd,
                    const void *buf,
                    size_t len,
                    const char *what)
{
    const uint8_t *src = buf;
    size_t done = 0;

    while (done < len) {
        ssize_t n = write(fd, src + done, len - done);

        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n < 0) {
            return store_errf(s, errno == ENOSPC ? STORE_FULL : STORE_IOERR,
                              "write %s: %s", what, strerror(errno));
        }
        done += (size_t)n;
    }
    return 0;
}

int store_copy_tmp(struct store *s, int *fd, uint64_t *index)
{
    int rv;

    rv = store_tmpfile(s, s->dir, fd);
    if (rv != 0) {
        return rv;
    }
    pthread_rwlock_rdlock(&s->env_lock);
    rv = s->env != NULL ? env_copy(s, *fd, index) : STORE_IOERR;
    pthread_rwlock_unlock(&s->env_lock);
    if (rv == STORE_IOERR && s->env == NULL) {
        store_errf(s, rv, "copy: environment closed");
    }
    if (rv != 0) {
        close(*fd);
        *fd = -1;
    }
    return rv;
}

int store_snapshot(struct store *s, void **buf, size_t *len)
{
    struct store_snapshot_parts p;
    uint8_t *out;
    size_t n;
    int rv;

    rv = store_snapshot_parts(s, &p);
    if (rv != 0) {
        return rv;
    }
    n = sizeof(p.header) + p.payload_len + sizeof(p.trailer);
    out = malloc(n);
    if (out == NULL) {
        store_snapshot_parts_free(&p);
        return store_errf(s, STORE_NOMEM, "snapshot: %zu bytes", n);
    }
    memcpy(out, p.header, sizeof(p.header));
    memcpy(out + sizeof(p.header), p.payload, p.payload_len);
    memcpy(out + sizeof(p.header) + p.payload_len, p.trailer,
           sizeof(p.trailer));
    store_snapshot_parts_free(&p);
    *buf = out;
    *len = n;
    return 0;
}

int store_snapshot_parts(struct store *s, struct store_snapshot_parts *out)
{
    struct stat st;
    uint64_t index = 0;
    void *map;
    int fd;
    int rv;

    _Static_assert(sizeof(out->header) == SNAP_HEADER_LEN, "header size");
    _Static_assert(sizeof(out->trailer) == SNAP_TRAILER_LEN, "trailer size");
    memset(out, 0, sizeof(*out));
    rv = store_copy_tmp(s, &fd, &index);
    if (rv != 0) {
        return rv;
    }
    if (fstat(fd, &st) != 0 || st.st_size <= 0) {
        rv = store_errf(s, STORE_IOERR, "snapshot: fstat: %s",
                        strerror(errno));
        close(fd);
        return rv;
    }
    map = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd); /* the mapping keeps the unlinked copy alive */
    if (map == MAP_FAILED) {
        return store_errf(s, STORE_NOMEM, "snapshot: map %lld bytes: %s",
                          (long long)st.st_size, strerror(errno));
    }
    (void)madvise(map, (size_t)st.st_size, MADV_SEQUENTIAL);
    memcpy(out->header, SNAP_MAGIC, SNAP_MAGIC_LEN);
    store_be64_put(out->header + SNAP_MAGIC_LEN, index);
    store_be64_put(out->header + SNAP_MAGIC_LEN + 8, (uint64_t)st.st_size);
    rv = sha256(map, (size_t)st.st_size, out->trailer);
    if (rv != 0) {
        munmap(map, (size_t)st.st_size);
        return store_errf(s, rv, "snapshot: checksum");
    }
    out->payload = map;
    out->payload_len = (size_t)st.st_size;
    return 0;
}

void store_snapshot_parts_free(struct store_snapshot_parts *p)
{
    if (p->payload != NULL) {
        munmap((void *)p->payload, p->payload_len);
    }
    memset(p, 0, sizeof(*p));
}

#define THIN_MAGIC "COTHIN01"

int store_snapshot_thin(struct store *s, void **buf, size_t *len)
{
    uint64_t index = store_applied_index(s); /* read before the flush */
    uint8_t *out;
    int rv;

    rv = store_sync(s);
    if (rv != 0) {
        return rv;
    }
    out = malloc(STORE_THIN_SNAPSHOT_SIZE);
    if (out == NULL) {
        return store_errf(s, STORE_NOMEM, "thin snapshot");
    }
    memcpy(out, THIN_MAGIC, SNAP_MAGIC_LEN);
    store_be64_put(out + SNAP_MAGIC_LEN, index);
    *buf = out;
    *len = STORE_THIN_SNAPSHOT_SIZE;
    return 0;
}

int store_snapshot_is_thin(const void *buf, size_t len, uint64_t *index)
{
    if (buf == NULL || len != STORE_THIN_SNAPSHOT_SIZE ||
        memcmp(buf, THIN_MAGIC, SNAP_MAGIC_LEN) != 0) {
        return 0;
    }
    *index = store_be64_get((const uint8_t *)buf + SNAP_MAGIC_LEN);
    return 1;
}

int store_snapshot_index(const void *buf, size_t len, uint64_t *index)
{
    const uint8_t *p = buf;
    uint64_t plen;

    if (buf == NULL || len < SNAP_HEADER_LEN + SNAP_TRAILER_LEN ||
        memcmp(p, SNAP_MAGIC, SNAP_MAGIC_LEN) != 0) {
        return STORE_CORRUPT;
    }
    plen = store_be64_get(p + SNAP_MAGIC_LEN + 8);
    if (plen != len - SNAP_HEADER_LEN - SNAP_TRAILER_LEN) {
        return STORE_CORRUPT;
    }
    *index = store_be64_get(p + SNAP_MAGIC_LEN);
    return 0;
}

static int
snapshot_check(struct store *s, const void *buf, size_t len, uint64_t *index)
{
    const uint8_t *p = buf;
    uint8_t sum[32];
    size_t plen;

    if (store_snapshot_index(buf, len, index) != 0) {
        return store_errf(s, STORE_CORRUPT,
                          "restore: bad snapshot header "
                          "or length (%zu bytes)",
                          len);
    }
    plen = len - SNAP_HEADER_LEN - SNAP_TRAILER_LEN;
    if (sha256(p + SNAP_HEADER_LEN, plen, sum) != 0) {
        return store_errf(s, STORE_NOMEM, "restore: SHA-256 failed");
    }
    if (memcmp(sum, p + SNAP_HEADER_LEN + plen, sizeof(sum)) != 0) {
        return store_errf(s, STORE_CORRUPT,
                          "restore: snapshot checksum "
                          "mismatch");
    }
    return 0;
}

static int
file_write(struct store *s, const char *path, const uint8_t *data, size_t len)
{
    int fd;
    int rv;

    fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        return store_errf(s, STORE_IOERR, "restore: open %s: %s", path,
                          strerror(errno));
    }
    rv = store_write_all(s, fd, data, len, path);
    if (rv == 0 && fsync(fd) != 0) {
        rv = store_errf(s, errno == ENOSPC ? STORE_FULL : STORE_IOERR,
                        "restore: fsync %s: %s", path, strerror(errno));
    }
    if (close(fd) != 0 && rv == 0) {
        rv = store_errf(s, errno == ENOSPC ? STORE_FULL : STORE_IOERR,
                        "restore: close %s: %s", path, strerror(errno));
    }
    return rv;
}

/* Open the written file as a view and check it holds @index. */
static int restore_verify(struct store *s, const char *path, uint64_t index)
{
    char msg[STORE_ERRMSG_SIZE];
    struct store *v;
    MDB_txn *txn;
    uint64_t got = 0;
    int rv;

    rv = store_view_open(path, &v, msg, sizeof(msg));
    if (rv != 0) {
        return store_errf(s, STORE_CORRUPT,
                          "restore: snapshot does not open: %s", msg);
    }
    rv = store_read_begin(v, &txn);
    if (rv == 0) {
        rv = store_meta_get(v, txn, STORE_META_APPLIED, &got);
        store_read_end(v, txn);
    }
    store_close(v);
    if (rv != 0 || got != index) {
        return store_errf(s, STORE_CORRUPT,
                          "restore: snapshot content does not hold index "
                          "%llu",
                          (unsigned long long)index);
    }
    return 0;
}

static int dir_sync(struct store *s)
{
    int fd = open(s->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    int rv = 0;

    if (fd < 0 || fsync(fd) != 0) {
        rv = store_errf(s, STORE_IOERR, "restore: fsync %s: %s", s->dir,
                        strerror(errno));
    }
    if (fd >= 0) {
        close(fd);
    }
    return rv;
}

/* Swap the data file under the exclusive lock. */
static int restore_swap(struct store *s, const char *tmp)
{
    char path[PATH_MAX];
    int rv = 0;

    snprintf(path, sizeof(path), "%s/data.mdb", s->dir);
    pthread_rwlock_wrlock(&s->env_lock);
    store_env_close(s);
    if (rename(tmp, path) != 0) {
        rv = store_errf(s, STORE_IOERR, "restore: rename %s: %s", tmp,
                        strerror(errno));
    }
    if (rv == 0) {
        rv = dir_sync(s);
    }
    /* Reopen whatever data.mdb now is: the new state, or the old one if the
     * rename failed. */
    if (store_env_open(s) != 0 && rv == 0) {
        rv = STORE_IOERR;
    }
    pthread_rwlock_unlock(&s->env_lock);
    return rv;
}

int store_restore(struct store *s, const void *buf, size_t len, int *replaced)
{
    const uint8_t *p = buf;
    char tmp[PATH_MAX];
    uint64_t index;
    uint64_t local;
    int rv;

    *replaced = 0;
    rv = snapshot_check(s, buf, len, &index);
    if (rv != 0) {
        return rv;
    }
    local = store_applied_index(s);
    /* Applied index 0 carries no proof of content: a restored store holds
     * its state at index 0 (its log did not build it), a new member holds
     * nothing at 0. Only a store that applied entries keeps itself. */
    if (local >= index && local > 0) {
        return 0;
    }
    snprintf(tmp, sizeof(tmp), "%s/%s", s->dir, SNAP_RESTORE_FILE);
    rv = file_write(s, tmp, p + SNAP_HEADER_LEN,
                    len - SNAP_HEADER_LEN - SNAP_TRAILER_LEN);
    if (rv == 0) {
        rv = restore_verify(s, tmp, index);
    }
    if (rv == 0) {
        rv = restore_swap(s, tmp);
    }
    if (rv != 0) {
        unlink(tmp);
        return rv;
    }
    *replaced = 1;
    return 0;
}
