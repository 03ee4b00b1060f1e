/* Online backups: writing a backup file of a live store, checking one, and
 * building a new store from one (optionally rolled forward through the
 * command archive to a point in time).
 *
 * Format (all integers big-endian):
 *   "COBACK01"           magic and format version, 8 bytes
 *   header length        u32
 *   header               packed BackupInfo
 *   payload              LMDB data file (mdb_env_copyfd2, compacted),
 *                        BackupInfo.payload_bytes long
 *   SHA-256              32 bytes, over every byte before it
 *
 * DESIGN
 *
 * - Consistency. The payload is one compact copy taken in one read txn
 *   (store_copy_tmp(), shared with snapshots), so writers go on. The header
 *   is then read from the copy itself, opened as a read-only view: its
 *   applied index, audit size and head and case count are exactly those of
 *   the copied state, with no race against the applies that committed
 *   meanwhile.
 * - Streaming. The copy goes to an unlinked temp file in the data directory
 *   and is streamed into the backup in 1 MiB chunks while it is hashed:
 *   a backup of any size takes a fixed amount of memory. Checking a backup
 *   streams it the same way into a temp file that LMDB can open.
 * - Restore is not a command: the new store is the state of a new cluster
 *   (applied index 0, no cluster id) with the restore written in meta, the
 *   audit chain untouched and the index key base moved past the old keys.
 *   It is built in a temp directory inside the target and only its
 *   data.mdb is renamed in, so a failed restore leaves no data.mdb behind.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "store_internal.h"

#define BACKUP_MAGIC "COBACK01"
#define BACKUP_MAGIC_LEN 8
#define BACKUP_PREFIX_LEN (BACKUP_MAGIC_LEN + 4)
#define BACKUP_TRAILER_LEN 32
#define BACKUP_HEADER_MAX (64 * 1024)
#define BACKUP_CHUNK (1024 * 1024)
#define RESTORE_TMP_PREFIX ".restore."
#define RESTORE_MAP_MIN ((size_t)1 << 30)

/* --- the header, read from a copy --- */

/* Fill @h (strings and bytes point into @buf fields) from view @v. */
static int info_read(struct store *v,
                     Cityops__V1__BackupInfo *h,
                     char cid[STORE_CLUSTER_ID_SIZE],
                     char from[STORE_RESTORED_FROM_SIZE],
                     uint8_t head[STORE_HASH_SIZE])
{
    uint64_t last_time = 0;
    MDB_txn *txn;
    MDB_stat st;
    int rv;
    int rc;

    rv = store_read_begin(v, &txn);
    if (rv != 0) {
        return rv;
    }
    rv = store_meta_get(v, txn, STORE_META_APPLIED, &h->applied_index);
    if (rv == 0) {
        rv = store_meta_get(v, txn, STORE_META_LAST_TIME, &last_time);
    }
    if (rv == 0) {
        rv = store_meta_str_get(v, txn, STORE_META_CLUSTER_ID, cid,
                                STORE_CLUSTER_ID_SIZE);
    }
    if (rv == 0) {
        rv = store_meta_str_get(v, txn, STORE_META_RESTORED_FROM, from,
                                STORE_RESTORED_FROM_SIZE);
    }
    if (rv == 0) {
        rc = mdb_stat(txn, v->dbi[STORE_DB_CASES], &st);
        rv = rc != 0 ? store_mdb_err(v, rc, "stat cases") : 0;
        h->case_count = rv == 0 ? st.ms_entries : 0;
    }
    store_read_end(v, txn);
    if (rv == 0) {
        rv = store_audit_head(v, &h->audit_size, head);
    }
    h->last_time = (int64_t)last_time;
    h->cluster_id = cid;
    h->restored_from = from;
    h->audit_head.len = STORE_HASH_SIZE;
    h->audit_head.data = head;
    return rv;
}

/* Open @file as a view and read its header fields; errors go to @e. */
static int info_from_file(struct store *e,
                          const char *file,
                          Cityops__V1__BackupInfo *h,
                          char cid[STORE_CLUSTER_ID_SIZE],
                          char from[STORE_RESTORED_FROM_SIZE],
                          uint8_t head[STORE_HASH_SIZE])
{
    char msg[STORE_ERRMSG_SIZE];
    struct store *v;
    int rv;

    rv = store_view_open(file, &v, msg, sizeof(msg));
    if (rv != 0) {
        return store_errf(e, STORE_CORRUPT,
                          "backup: the payload does not open as a store: %s",
                          msg);
    }
    rv = info_read(v, h, cid, from, head);
    if (rv != 0) {
        store_errf(e, rv == STORE_NOMEM ? rv : STORE_CORRUPT,
                   "backup: the payload: %s", store_errmsg(v));
        rv = rv == STORE_NOMEM ? rv : STORE_CORRUPT;
    }
    store_close(v);
    return rv;
}

/* --- writing --- */

struct stream {
    int out;
    EVP_MD_CTX *md;
    uint64_t done;
    uint64_t total;
    store_progress_cb cb;
    void *arg;
};

static int stream_put(struct store *s,
                      struct stream *st,
                      const void *buf,
                      size_t len)
{
    int rv;

    if (EVP_DigestUpdate(st->md, buf, len) != 1) {
        return store_errf(s, STORE_NOMEM, "backup: SHA-256 failed");
    }
    rv = store_write_all(s, st->out, buf, len, "backup");
    if (rv != 0) {
        return rv;
    }
    st->done += len;
    if (st->cb != NULL) {
        st->cb(st->arg, st->done, st->total);
    }
    return 0;
}

/* Stream @len bytes of @in from offset 0 through @st. */
static int stream_copy(struct store *s, struct stream *st, int in, uint64_t len)
{
    uint8_t *buf;
    uint64_t off = 0;
    int rv = 0;

    buf = malloc(BACKUP_CHUNK);
    if (buf == NULL) {
        return store_errf(s, STORE_NOMEM, "backup: out of memory");
    }
    while (rv == 0 && off < len) {
        size_t n = len - off < BACKUP_CHUNK ? (size_t)(len - off)
                                            : BACKUP_CHUNK;

        rv = store_pread_all(s, in, buf, n, off, "the copy");
        if (rv == 0) {
            rv = stream_put(s, st, buf, n);
        }
        off += n;
    }
    free(buf);
    return rv;
}

/* Write the whole file: prefix, header, payload from @copy, trailer. */
static int backup_stream(struct store *s,
                         struct stream *st,
                         const uint8_t *hdr,
                         size_t hlen,
                         int copy,
                         uint64_t plen,
                         uint8_t sum[32])
{
    uint8_t prefix[BACKUP_PREFIX_LEN];
    int rv;

    memcpy(prefix, BACKUP_MAGIC, BACKUP_MAGIC_LEN);
    store_be32_put(prefix + BACKUP_MAGIC_LEN, (uint32_t)hlen);
    rv = stream_put(s, st, prefix, sizeof(prefix));
    if (rv == 0) {
        rv = stream_put(s, st, hdr, hlen);
    }
    if (rv == 0) {
        rv = stream_copy(s, st, copy, plen);
    }
    if (rv != 0) {
        return rv;
    }
    if (EVP_DigestFinal_ex(st->md, sum, NULL) != 1) {
        return store_errf(s, STORE_NOMEM, "backup: SHA-256 failed");
    }
    rv = store_write_all(s, st->out, sum, BACKUP_TRAILER_LEN, "backup");
    if (rv == 0 && st->cb != NULL) {
        st->cb(st->arg, st->total, st->total);
    }
    return rv;
}

/* Pack @h into a malloc'd buffer. */
static int info_pack(struct store *s,
                     const Cityops__V1__BackupInfo *h,
                     uint8_t **buf,
                     size_t *len)
{
    *len = cityops__v1__backup_info__get_packed_size(h);
    *buf = malloc(*len > 0 ? *len : 1);
    if (*buf == NULL) {
        return store_errf(s, STORE_NOMEM, "backup: out of memory");
    }
    cityops__v1__backup_info__pack(h, *buf);
    return 0;
}

int store_backup_write(struct store *s,
                       int fd,
                       uint64_t node_id,
                       int64_t now_us,
                       store_progress_cb cb,
                       void *arg,
                       Cityops__V1__BackupInfo **info,
                       uint8_t sha256[32])
{
    Cityops__V1__BackupInfo h = CITYOPS__V1__BACKUP_INFO__INIT;
    struct stream st = {.out = fd, .cb = cb, .arg = arg};
    char cid[STORE_CLUSTER_ID_SIZE];
    char from[STORE_RESTORED_FROM_SIZE];
    uint8_t head[STORE_HASH_SIZE];
    char path[64];
    uint8_t sum[32];
    struct stat sb;
    uint64_t index;
    uint8_t *hdr;
    size_t hlen;
    int copy;
    int rv;

    rv = store_copy_tmp(s, &copy, &index);
    if (rv != 0) {
        return rv;
    }
    if (fstat(copy, &sb) != 0) {
        rv = store_errf(s, STORE_IOERR, "backup: fstat the copy: %s",
                        strerror(errno));
        goto out_close_copy;
    }
    store_fd_path(copy, path, sizeof(path));
    rv = info_from_file(s, path, &h, cid, from, head);
    if (rv != 0) {
        goto out_close_copy;
    }
    h.node_id = node_id;
    h.created_at = now_us;
    h.payload_bytes = (uint64_t)sb.st_size;
    rv = info_pack(s, &h, &hdr, &hlen);
    if (rv != 0) {
        goto out_close_copy;
    }
    st.md = EVP_MD_CTX_new();
    if (st.md == NULL || EVP_DigestInit_ex(st.md, EVP_sha256(), NULL) != 1) {
        rv = store_errf(s, STORE_NOMEM, "backup: SHA-256 failed");
        goto out_free_md;
    }
    st.total = BACKUP_PREFIX_LEN + hlen + h.payload_bytes + BACKUP_TRAILER_LEN;
    rv = backup_stream(s, &st, hdr, hlen, copy, h.payload_bytes, sum);
    if (rv == 0 && info != NULL) {
        *info = cityops__v1__backup_info__unpack(NULL, hlen, hdr);
        rv = *info != NULL ? 0
                           : store_errf(s, STORE_NOMEM,
                                        "backup: out of memory");
    }
    if (rv == 0 && sha256 != NULL) {
        memcpy(sha256, sum, sizeof(sum));
    }
out_free_md:
    EVP_MD_CTX_free(st.md);
    free(hdr);
out_close_copy:
    close(copy);
    return rv;
}

/* --- checking --- */

/* Read the prefix and header of open backup @fd of @size bytes. On success
 * *h is unpacked (caller frees) and @md has hashed them. */
static int header_read(struct store *e,
                       int fd,
                       uint64_t size,
                       EVP_MD_CTX *md,
                       Cityops__V1__BackupInfo **h,
                       uint64_t *hlen)
{
    uint8_t prefix[BACKUP_PREFIX_LEN];
    uint8_t *buf;
    int rv;

    if (size < BACKUP_PREFIX_LEN + BACKUP_TRAILER_LEN) {
        return store_errf(e, STORE_CORRUPT,
                          "backup: %llu bytes is too short for a backup",
                          (unsigned long long)size);
    }
    rv = store_pread_all(e, fd, prefix, sizeof(prefix), 0, "backup");
    if (rv != 0) {
        return rv;
    }
    if (memcmp(prefix, BACKUP_MAGIC, BACKUP_MAGIC_LEN) != 0) {
        return store_errf(e, STORE_CORRUPT,
                          "backup: not a cityops backup (bad magic)");
    }
    *hlen = ((uint64_t)prefix[8] << 24) | ((uint64_t)prefix[9] << 16) |
            ((uint64_t)prefix[10] << 8) | prefix[11];
    if (*hlen > BACKUP_HEADER_MAX ||
        *hlen > size - BACKUP_PREFIX_LEN - BACKUP_TRAILER_LEN) {
        return store_errf(e, STORE_CORRUPT,
                          "backup: header length %llu does not fit the file",
                          (unsigned long long)*hlen);
    }
    buf = malloc(*hlen > 0 ? *hlen : 1);
    if (buf == NULL) {
        return store_errf(e, STORE_NOMEM, "backup: out of memory");
    }
    rv = store_pread_all(e, fd, buf, *hlen, BACKUP_PREFIX_LEN, "backup");
    if (rv == 0 && (EVP_DigestUpdate(md, prefix, sizeof(prefix)) != 1 ||
                    EVP_DigestUpdate(md, buf, *hlen) != 1)) {
        rv = store_errf(e, STORE_NOMEM, "backup: SHA-256 failed");
    }
    if (rv == 0) {
        *h = cityops__v1__backup_info__unpack(NULL, *hlen, buf);
        rv = *h != NULL ? 0
                        : store_errf(e, STORE_CORRUPT,
                                     "backup: the header does not decode");
    }
    free(buf);
    return rv;
}

/* Hash the payload of @in while copying it to @out, then check the
 * trailer. */
static int payload_copy(struct store *e,
                        int in,
                        uint64_t off,
                        uint64_t len,
                        struct stream *st)
{
    uint8_t want[BACKUP_TRAILER_LEN];
    uint8_t got[BACKUP_TRAILER_LEN];
    uint8_t *buf;
    uint64_t end = off + len;
    int rv = 0;

    buf = malloc(BACKUP_CHUNK);
    if (buf == NULL) {
        return store_errf(e, STORE_NOMEM, "backup: out of memory");
    }
    while (rv == 0 && off < end) {
        size_t n = end - off < BACKUP_CHUNK ? (size_t)(end - off)
                                            : BACKUP_CHUNK;

        rv = store_pread_all(e, in, buf, n, off, "backup");
        if (rv == 0) {
            rv = stream_put(e, st, buf, n);
        }
        off += n;
    }
    free(buf);
    if (rv == 0) {
        rv = store_pread_all(e, in, want, sizeof(want), end, "backup");
    }
    if (rv == 0 && EVP_DigestFinal_ex(st->md, got, NULL) != 1) {
        rv = store_errf(e, STORE_NOMEM, "backup: SHA-256 failed");
    }
    if (rv == 0 && memcmp(got, want, sizeof(got)) != 0) {
        rv = store_errf(e, STORE_CORRUPT,
                        "backup: checksum mismatch: the file is damaged");
    }
    return rv;
}

/* The payload copy @file must hold what header @h says, and its audit
 * chain must verify. */
static int payload_check(struct store *e,
                         const char *file,
                         const Cityops__V1__BackupInfo *h)
{
    Cityops__V1__BackupInfo got = CITYOPS__V1__BACKUP_INFO__INIT;
    char cid[STORE_CLUSTER_ID_SIZE];
    char from[STORE_RESTORED_FROM_SIZE];
    uint8_t head[STORE_HASH_SIZE];
    uint8_t chain[STORE_HASH_SIZE];
    char msg[STORE_ERRMSG_SIZE];
    uint64_t n = 0;
    struct store *v;
    int rv;

    rv = info_from_file(e, file, &got, cid, from, head);
    if (rv != 0) {
        return rv;
    }
    if (got.applied_index != h->applied_index ||
        got.audit_size != h->audit_size || got.case_count != h->case_count ||
        h->audit_head.len != STORE_HASH_SIZE ||
        memcmp(h->audit_head.data, head, STORE_HASH_SIZE) != 0 ||
        strcmp(cid, h->cluster_id) != 0) {
        return store_errf(
            e, STORE_CORRUPT,
            "backup: the payload holds index %llu, %llu audit records, "
            "%llu cases, but the header says %llu, %llu, %llu (or another "
            "audit head or cluster id)",
            (unsigned long long)got.applied_index,
            (unsigned long long)got.audit_size,
            (unsigned long long)got.case_count,
            (unsigned long long)h->applied_index,
            (unsigned long long)h->audit_size,
            (unsigned long long)h->case_count);
    }
    rv = store_view_open(file, &v, msg, sizeof(msg));
    if (rv != 0) {
        return store_errf(e, STORE_CORRUPT, "backup: %s", msg);
    }
    rv = audit_chain_verify(v, &n, chain);
    if (rv != 0) {
        store_errf(e, rv, "backup: %s", store_errmsg(v));
    }
    store_close(v);
    return rv;
}

/* Check backup @path, copying its payload into @out (path @out_path).
 * On success *h (optional) is the header (caller frees). */
static int backup_check(struct store *e,
                        const char *path,
                        int out,
                        const char *out_path,
                        store_progress_cb cb,
                        void *arg,
                        Cityops__V1__BackupInfo **hp)
{
    struct stream st = {.out = out, .cb = cb, .arg = arg};
    Cityops__V1__BackupInfo *h = NULL;
    struct stat sb;
    uint64_t hlen;
    int fd;
    int rv;

    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0 || fstat(fd, &sb) != 0) {
        rv = store_errf(e, STORE_IOERR, "backup: open %s: %s", path,
                        strerror(errno));
        goto out_close_fd;
    }
    st.md = EVP_MD_CTX_new();
    if (st.md == NULL || EVP_DigestInit_ex(st.md, EVP_sha256(), NULL) != 1) {
        rv = store_errf(e, STORE_NOMEM, "backup: SHA-256 failed");
        goto out_free_md;
    }
    rv = header_read(e, fd, (uint64_t)sb.st_size, st.md, &h, &hlen);
    if (rv != 0) {
        goto out_free_md;
    }
    st.total = (uint64_t)sb.st_size;
    st.done = BACKUP_PREFIX_LEN + hlen;
    if (h->payload_bytes !=
        (uint64_t)sb.st_size - BACKUP_PREFIX_LEN - hlen - BACKUP_TRAILER_LEN) {
        rv = store_errf(e, STORE_CORRUPT,
                        "backup: the file is %llu bytes, its header says "
                        "%llu (truncated or extended)",
                        (unsigned long long)sb.st_size,
                        (unsigned long long)(BACKUP_PREFIX_LEN + hlen +
                                             h->payload_bytes +
                                             BACKUP_TRAILER_LEN));
        goto out_free_header;
    }
    rv = payload_copy(e, fd, BACKUP_PREFIX_LEN + hlen, h->payload_bytes, &st);
    if (rv == 0 && fsync(out) != 0) {
        rv = store_errf(e, errno == ENOSPC ? STORE_FULL : STORE_IOERR,
                        "backup: sync the payload copy: %s", strerror(errno));
    }
    if (rv == 0) {
        rv = payload_check(e, out_path, h);
    }
    if (rv == 0 && hp != NULL) {
        *hp = h;
        h = NULL;
    }
out_free_header:
    if (h != NULL) {
        cityops__v1__backup_info__free_unpacked(h, NULL);
    }
out_free_md:
    EVP_MD_CTX_free(st.md);
out_close_fd:
    if (fd >= 0) {
        close(fd);
    }
    return rv;
}

/* The directory part of @path ("." if none). */
static void dir_of(const char *path, char *buf, size_t size)
{
    const char *slash = strrchr(path, '/');

    if (slash == NULL) {
        snprintf(buf, size, ".");
    } else if (slash == path) {
        snprintf(buf, size, "/");
    } else {
        snprintf(buf, size, "%.*s", (int)(slash - path), path);
    }
}

int store_backup_verify(const char *path,
                        store_progress_cb cb,
                        void *arg,
                        Cityops__V1__BackupInfo **info,
                        char *errmsg,
                        size_t errlen)
{
    char dir[PATH_MAX];
    char tmp[64];
    struct store *e;
    int fd;
    int rv;

    if (errlen > 0) {
        errmsg[0] = '\0';
    }
    rv = store_handle_new(path, NULL, &e);
    if (rv != 0) {
        snprintf(errmsg, errlen, "backup: out of memory");
        return rv;
    }
    dir_of(path, dir, sizeof(dir));
    rv = store_tmpfile(e, dir, &fd);
    if (rv == 0) {
        store_fd_path(fd, tmp, sizeof(tmp));
        rv = backup_check(e, path, fd, tmp, cb, arg, info);
        close(fd);
    }
    if (rv != 0) {
        snprintf(errmsg, errlen, "%s", store_errmsg(e));
    }
    store_handle_free(e);
    return rv;
}

/* --- restoring --- */

struct restore {
    struct store *e;   /* the target directory: lock and errors */
    struct store *t;   /* the store being built */
    char tmp[PATH_MAX - 32]; /* its directory, inside the target */
    const struct store_restore_opts *o;
    Cityops__V1__BackupInfo *h;
    store_progress_cb cb;
    void *arg;
    struct store_restore_result res;
};

/* Apply the first @m commands of @batch (all of them if m is n) at
 * @index; the batch is packed again only when cut. */
static int replay_apply(struct restore *r,
                        uint64_t index,
                        const uint8_t *buf,
                        size_t len,
                        Cityops__V1__CommandBatch *batch,
                        size_t m)
{
    struct store_results out;
    uint8_t *cut = NULL;
    size_t n = 0;
    int rv;

    if (batch != NULL && m < batch->n_commands) {
        n = batch->n_commands;
        batch->n_commands = m;
        len = cityops__v1__command_batch__get_packed_size(batch);
        cut = malloc(len > 0 ? len : 1);
        if (cut != NULL) {
            cityops__v1__command_batch__pack(batch, cut);
        }
        batch->n_commands = n;
        if (cut == NULL) {
            return store_errf(r->e, STORE_NOMEM, "restore: out of memory");
        }
        buf = cut;
    }
    rv = store_apply_batch(r->t, index, buf, len, &out);
    free(cut);
    if (rv != 0) {
        return store_errf(r->e, rv, "restore: replay: %s",
                          store_errmsg(r->t));
    }
    r->res.replayed_entries++;
    r->res.replayed_commands += out.n;
    r->res.reached_index = index;
    store_results_free(&out);
    return 0;
}

/* How many leading commands of @batch are at or before the target time. */
static size_t time_prefix(const struct restore *r,
                          const Cityops__V1__CommandBatch *batch)
{
    size_t m = 0;

    if (batch == NULL) {
        return 0;
    }
    if (r->o->to_time == 0) {
        return batch->n_commands;
    }
    while (m < batch->n_commands &&
           batch->commands[m]->time <= r->o->to_time) {
        m++;
    }
    return m;
}

/* Take one archived record: 1 when the target is reached (stop). */
static int replay_one(struct restore *r,
                      uint64_t prev,
                      uint64_t index,
                      const uint8_t *buf,
                      size_t len)
{
    Cityops__V1__CommandBatch *batch;
    uint64_t cur = r->res.reached_index;
    size_t m;
    int rv;

    if (r->o->to_index != 0 && index > r->o->to_index) {
        return 1;
    }
    batch = cityops__v1__command_batch__unpack(NULL, len, buf);
    m = time_prefix(r, batch);
    if (batch != NULL && batch->n_commands > 0 && m == 0) {
        rv = 1; /* its first command is past the target time */
    } else if (prev != cur) {
        rv = store_errf(r->e, STORE_NOTFOUND,
                        "restore: the archive has a gap after index %llu: "
                        "the next archived entry, %llu, follows index %llu "
                        "(entries were not archived)",
                        (unsigned long long)cur, (unsigned long long)index,
                        (unsigned long long)prev);
    } else {
        rv = replay_apply(r, index, buf, len, batch, m);
        if (rv == 0 && batch != NULL && m < batch->n_commands) {
            rv = 1; /* cut at the target time */
        }
    }
    if (batch != NULL) {
        cityops__v1__command_batch__free_unpacked(batch, NULL);
    }
    return rv;
}

static int replay(struct restore *r)
{
    struct archive_reader *ar;
    char dir[PATH_MAX];
    uint64_t prev;
    uint64_t index;
    uint64_t done;
    uint64_t total;
    uint8_t *buf;
    size_t len;
    int eof = 0;
    int rv;

    snprintf(dir, sizeof(dir), "%s/%s", r->o->archive_dir, r->h->cluster_id);
    rv = archive_reader_open(r->e, dir, &ar);
    if (rv != 0) {
        return rv;
    }
    while (rv == 0) {
        rv = archive_reader_next(r->e, ar, &prev, &index, &buf, &len, &eof);
        if (rv != 0 || eof) {
            break;
        }
        if (index > r->res.reached_index) {
            rv = replay_one(r, prev, index, buf, len);
        }
        free(buf);
        archive_reader_progress(ar, &done, &total);
        if (r->cb != NULL) {
            r->cb(r->arg, done, total);
        }
    }
    archive_reader_close(ar);
    if (rv == 0 && r->o->to_index > r->res.reached_index) {
        rv = store_errf(r->e, STORE_NOTFOUND,
                        "restore: the archive in %s ends at index %llu, "
                        "before the requested index %llu",
                        dir, (unsigned long long)r->res.reached_index,
                        (unsigned long long)r->o->to_index);
    }
    return rv == 1 ? 0 : rv;
}

/* The backup must not be past the target, and a target beyond it needs
 * an archive. */
static int target_check(struct restore *r)
{
    const struct store_restore_opts *o = r->o;
    const Cityops__V1__BackupInfo *h = r->h;

    if (o->to_index != 0 && o->to_index < h->applied_index) {
        return store_errf(r->e, STORE_INVALID,
                          "restore: the backup is at index %llu, past the "
                          "requested index %llu",
                          (unsigned long long)h->applied_index,
                          (unsigned long long)o->to_index);
    }
    if (o->to_time != 0 && o->to_time < h->last_time) {
        return store_errf(r->e, STORE_INVALID,
                          "restore: the backup holds commands up to %lld, "
                          "past the requested time %lld",
                          (long long)h->last_time, (long long)o->to_time);
    }
    if (o->archive_dir == NULL && o->to_index > h->applied_index) {
        return store_errf(r->e, STORE_NOTFOUND,
                          "restore: the backup ends at index %llu; reaching "
                          "index %llu needs the archive",
                          (unsigned long long)h->applied_index,
                          (unsigned long long)o->to_index);
    }
    if (o->archive_dir != NULL && h->cluster_id[0] == '\0') {
        return store_errf(r->e, STORE_INVALID,
                          "restore: the backup has no cluster id, so no "
                          "archive belongs to it");
    }
    return 0;
}

/* Make the built store the state of a new cluster. */
static int restore_finish(struct restore *r)
{
    struct store *t = r->t;
    char from[STORE_RESTORED_FROM_SIZE];
    char note[STORE_ERRMSG_SIZE];
    uint64_t base;
    MDB_txn *txn;
    int rv;
    int rc;

    snprintf(from, sizeof(from), "%s@%llu", r->h->cluster_id,
             (unsigned long long)r->res.reached_index);
    snprintf(note, sizeof(note),
             "restored from the backup of %s at index %llu made by node %llu "
             "at %lld; replayed %llu entries (%llu commands) to index %llu",
             r->h->cluster_id, (unsigned long long)r->h->applied_index,
             (unsigned long long)r->h->node_id, (long long)r->h->created_at,
             (unsigned long long)r->res.replayed_entries,
             (unsigned long long)r->res.replayed_commands,
             (unsigned long long)r->res.reached_index);
    rc = mdb_txn_begin(t->env, NULL, 0, &txn);
    if (rc != 0) {
        return store_mdb_err(r->e, rc, "restore: begin txn");
    }
    rv = store_meta_get(t, txn, STORE_META_KEY_BASE, &base);
    if (rv == 0) {
        rv = store_meta_put(t, txn, STORE_META_KEY_BASE,
                            base + r->res.reached_index);
    }
    if (rv == 0) {
        rv = store_meta_put(t, txn, STORE_META_APPLIED, 0);
    }
    if (rv == 0) {
        rv = store_meta_str_put(t, txn, STORE_META_CLUSTER_ID, "");
    }
    if (rv == 0) {
        rv = store_meta_str_put(t, txn, STORE_META_RESTORED_FROM, from);
    }
    if (rv == 0) {
        rv = store_meta_str_put(t, txn, STORE_META_RESTORE, note);
    }
    if (rv != 0) {
        mdb_txn_abort(txn);
        return store_errf(r->e, rv, "restore: %s", store_errmsg(t));
    }
    rc = mdb_txn_commit(txn);
    if (rc != 0) {
        return store_mdb_err(r->e, rc, "restore: commit");
    }
    rv = store_audit_head(t, &r->res.audit_size, (uint8_t[STORE_HASH_SIZE]){0});
    if (rv == 0) {
        rv = store_sync(t);
    }
    return rv != 0 ? store_errf(r->e, rv, "restore: %s", store_errmsg(t)) : 0;
}

/* Lock the target, create it if needed, refuse one that holds a store. */
static int target_open(const char *dir, struct restore *r)
{
    char path[PATH_MAX];
    int rv;

    if (strlen(dir) + 32 >= sizeof(r->tmp)) {
        return store_errf(r->e, STORE_INVALID, "restore: %s: path too long",
                          dir);
    }
    if (mkdir(dir, 0755) != 0 && errno != EEXIST) {
        return store_errf(r->e, STORE_IOERR, "restore: create %s: %s", dir,
                          strerror(errno));
    }
    rv = store_dir_lock(r->e);
    if (rv != 0) {
        return rv;
    }
    snprintf(path, sizeof(path), "%s/data.mdb", dir);
    if (access(path, F_OK) == 0) {
        return store_errf(r->e, STORE_BUSY,
                          "restore: %s already holds a store (data.mdb); "
                          "restore into an empty directory",
                          dir);
    }
    snprintf(r->tmp, sizeof(r->tmp), "%s/" RESTORE_TMP_PREFIX "XXXXXX", dir);
    if (mkdtemp(r->tmp) == NULL) {
        r->tmp[0] = '\0';
        return store_errf(r->e, STORE_IOERR, "restore: temp dir in %s: %s",
                          dir, strerror(errno));
    }
    return 0;
}

static void tmp_remove(struct restore *r)
{
    static const char *const files[] = {"data.mdb", "lock.mdb",
                                        "cityops.lock"};
    char path[PATH_MAX];

    if (r->tmp[0] == '\0') {
        return;
    }
    for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
        snprintf(path, sizeof(path), "%s/%s", r->tmp, files[i]);
        unlink(path);
    }
    rmdir(r->tmp);
}

/* Check the backup into tmp/data.mdb, then open it as a store. */
static int restore_build(struct restore *r, const char *path)
{
    struct store_options opts = {0};
    char file[PATH_MAX];
    int fd;
    int rv;

    snprintf(file, sizeof(file), "%s/data.mdb", r->tmp);
    fd = open(file, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd < 0) {
        return store_errf(r->e, STORE_IOERR, "restore: create %s: %s", file,
                          strerror(errno));
    }
    rv = backup_check(r->e, path, fd, file, r->cb, r->arg, &r->h);
    if (close(fd) != 0 && rv == 0) {
        rv = store_errf(r->e, STORE_IOERR, "restore: close %s: %s", file,
                        strerror(errno));
    }
    if (rv == 0) {
        rv = target_check(r);
    }
    if (rv != 0) {
        return rv;
    }
    opts.nosync = 1;
    opts.map_size = RESTORE_MAP_MIN;
    if (r->h->payload_bytes > RESTORE_MAP_MIN / 4) {
        opts.map_size = (size_t)r->h->payload_bytes * 4;
    }
    rv = store_open(r->tmp, &opts, &r->t);
    if (rv != 0) {
        return store_errf(r->e, rv, "restore: open the store in %s: %s",
                          r->tmp, store_strerror(rv));
    }
    r->res.backup_index = r->h->applied_index;
    r->res.reached_index = r->h->applied_index;
    snprintf(r->res.cluster_id, sizeof(r->res.cluster_id), "%s",
             r->h->cluster_id);
    return 0;
}

/* Move tmp/data.mdb into the target and make it durable. */
static int restore_commit(struct restore *r, const char *dir)
{
    char from[PATH_MAX];
    char to[PATH_MAX];
    int dfd;

    store_close(r->t);
    r->t = NULL;
    snprintf(from, sizeof(from), "%s/data.mdb", r->tmp);
    snprintf(to, sizeof(to), "%s/data.mdb", dir);
    if (rename(from, to) != 0) {
        return store_errf(r->e, STORE_IOERR, "restore: rename %s: %s", from,
                          strerror(errno));
    }
    dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0 || fsync(dfd) != 0) {
        if (dfd >= 0) {
            close(dfd);
        }
        return store_errf(r->e, STORE_IOERR, "restore: fsync %s: %s", dir,
                          strerror(errno));
    }
    close(dfd);
    return 0;
}

int store_backup_restore(const char *path,
                         const char *dir,
                         const struct store_restore_opts *o,
                         store_progress_cb cb,
                         void *arg,
                         struct store_restore_result *res,
                         char *errmsg,
                         size_t errlen)
{
    static const struct store_restore_opts none = {0};
    struct restore r = {.o = o != NULL ? o : &none, .cb = cb, .arg = arg};
    int rv;

    if (errlen > 0) {
        errmsg[0] = '\0';
    }
    rv = store_handle_new(dir, NULL, &r.e);
    if (rv != 0) {
        snprintf(errmsg, errlen, "restore: out of memory");
        return rv;
    }
    rv = target_open(dir, &r);
    if (rv == 0) {
        rv = restore_build(&r, path);
    }
    if (rv == 0 && r.o->archive_dir != NULL) {
        rv = replay(&r);
    }
    if (rv == 0) {
        r.res.reached_time = store_last_time(r.t);
        rv = restore_finish(&r);
    }
    if (rv == 0) {
        rv = restore_commit(&r, dir);
    }
    store_close(r.t);
    tmp_remove(&r);
    if (rv == 0 && res != NULL) {
        *res = r.res;
    }
    if (rv != 0) {
        snprintf(errmsg, errlen, "%s", store_errmsg(r.e));
    }
    if (r.h != NULL) {
        cityops__v1__backup_info__free_unpacked(r.h, NULL);
    }
    if (r.e->lock_fd >= 0) {
        close(r.e->lock_fd);
    }
    store_handle_free(r.e);
    return rv;
}
