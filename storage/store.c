/* The storage handle: opening and closing the LMDB environment of one node,
 * error reporting and the meta database.
 *
 * Durability: the environment is opened with MDB_NOMETASYNC, so a crash may
 * undo the last committed transaction (the data pages are synced, the meta
 * page that points at them may not be). That is safe only because Raft keeps
 * the log durable and every apply transaction records the index it applied:
 * after a restart the lost entries are applied again from the log.
 *
 * With store_options.nosync the environment also takes MDB_NOSYNC and the
 * owner calls store_sync() every few milliseconds (the node: every
 * [storage] sync_interval_ms): the same argument covers the commits since the
 * last sync; store.h states the trade-off in full.
 *
 * MDB_NOTLS: read transactions are not tied to a thread, so gRPC threads
 * may read while the loop thread writes; every reader uses its own short
 * transaction. One process owns a data directory: a flock() on a lock file
 * beside the data refuses a second opener with STORE_BUSY.
 */
#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <unistd.h>

#include "store_internal.h"

#define STORE_DEFAULT_MAP_SIZE ((size_t)1 << 30)
#define STORE_MAX_DBS 48
#define STORE_LOCK_FILE "cityops.lock"

const char *const store_db_names[STORE_DB_N] = {
    [STORE_DB_META] = "meta",
    [STORE_DB_CASES] = "cases",
    [STORE_DB_CASE_EVENTS] = "case_events",
    [STORE_DB_IDX_STATE] = "idx_state",
    [STORE_DB_IDX_DEPT] = "idx_dept",
    [STORE_DB_IDX_GRID] = "idx_grid",
    [STORE_DB_IDX_CATEGORY] = "idx_category",
    [STORE_DB_IDX_REPORTED] = "idx_reported",
    [STORE_DB_SESSIONS] = "sessions",
    [STORE_DB_MEMBERS] = "members",
    [STORE_DB_OUTBOX] = "outbox",
    [STORE_DB_CLUSTER_EVENTS] = "cluster_events",
    [STORE_DB_AUDIT] = "audit",
    [STORE_DB_CHECKPOINTS] = "checkpoints",
    [STORE_DB_AUDIT_TREE] = "audit_tree",
    [STORE_DB_DRILLS] = "drills",
    [STORE_DB_CONFIG] = "config",
    [STORE_DB_CONFIG_HISTORY] = "config_history",
    [STORE_DB_IDX_DEADLINE] = "idx_deadline",
    [STORE_DB_EVAL] = "eval",
    [STORE_DB_CONTACTS] = "contacts",
    [STORE_DB_IDX_TRACKING] = "idx_tracking",
    [STORE_DB_PUBLIC_FEED] = "public_feed",
    [STORE_DB_IDX_GEO] = "idx_geo",
    [STORE_DB_FED_LINKS] = "fed_links",
    [STORE_DB_FED_TASKS] = "fed_tasks",
    [STORE_DB_FED_INBOX] = "fed_inbox",
    [STORE_DB_FED_WITNESS] = "fed_witness",
    [STORE_DB_FED_ACKED] = "fed_acked",
    [STORE_DB_FED_SUBS] = "fed_subs",
    [STORE_DB_FED_RECEIVED] = "fed_received",
    [STORE_DB_FED_HANDOVERS] = "fed_handovers",
};

static void errmsg_vset(struct store *s, const char *fmt, va_list ap)
{
    pthread_mutex_lock(&s->errmsg_lock);
    vsnprintf(s->errmsg, sizeof(s->errmsg), fmt, ap);
    pthread_mutex_unlock(&s->errmsg_lock);
}

int store_errf(struct store *s, int code, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    errmsg_vset(s, fmt, ap);
    va_end(ap);
    return code;
}

static int code_from_mdb(int rc)
{
    switch (rc) {
    case MDB_MAP_FULL:
    case ENOSPC:
    case EDQUOT:
        return STORE_FULL;
    case MDB_CORRUPTED:
    case MDB_PAGE_NOTFOUND:
    case MDB_INVALID:
    case MDB_VERSION_MISMATCH:
        return STORE_CORRUPT;
    case ENOMEM:
        return STORE_NOMEM;
    default:
        return STORE_IOERR;
    }
}

int store_mdb_err(struct store *s, int rc, const char *fmt, ...)
{
    char op[STORE_ERRMSG_SIZE];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(op, sizeof(op), fmt, ap);
    va_end(ap);
    store_errf(s, 0, "%s: %s", op, mdb_strerror(rc));
    return code_from_mdb(rc);
}

const char *store_errmsg(const struct store *s)
{
    return s->errmsg;
}

const char *store_strerror(int rv)
{
    switch (rv) {
    case 0:
        return "ok";
    case STORE_NOMEM:
        return "out of memory";
    case STORE_IOERR:
        return "storage I/O error";
    case STORE_FULL:
        return "storage full";
    case STORE_CORRUPT:
        return "stored data is corrupt";
    case STORE_NOTFOUND:
        return "not found";
    case STORE_INVALID:
        return "invalid argument";
    case STORE_BUSY:
        return "data directory busy";
    default:
        return "unknown storage error";
    }
}

int store_result_fail(Cityops__V1__CommandResult *res,
                      Cityops__V1__ResultCode code,
                      const char *msg)
{
    res->code = code;
    return store_str_set(&res->message, msg);
}

void store_msgs_free(ProtobufCMessage **msgs, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        protobuf_c_message_free_unpacked(msgs[i], NULL);
    }
    free(msgs);
}

int store_str_set(char **field, const char *v)
{
    char *copy = (char *)protobuf_c_empty_string;

    if (v != NULL && v[0] != '\0') {
        copy = strdup(v);
        if (copy == NULL) {
            return STORE_NOMEM;
        }
    }
    if (*field != NULL && *field != protobuf_c_empty_string) {
        free(*field);
    }
    *field = copy;
    return 0;
}

int store_meta_get(struct store *s,
                   MDB_txn *txn,
                   const char *name,
                   uint64_t *value)
{
    MDB_val key = {strlen(name), (void *)name};
    MDB_val val;
    int rc;

    rc = mdb_get(txn, s->dbi[STORE_DB_META], &key, &val);
    if (rc == MDB_NOTFOUND) {
        *value = 0;
        return 0;
    }
    if (rc != 0) {
        return store_mdb_err(s, rc, "get meta/%s", name);
    }
    if (val.mv_size != 8) {
        return store_errf(s, STORE_CORRUPT, "meta/%s: %zu bytes, want 8", name,
                          val.mv_size);
    }
    *value = store_be64_get(val.mv_data);
    return 0;
}

int store_meta_put(struct store *s,
                   MDB_txn *txn,
                   const char *name,
                   uint64_t value)
{
    uint8_t buf[8];
    MDB_val key = {strlen(name), (void *)name};
    MDB_val val = {sizeof(buf), buf};
    int rc;

    store_be64_put(buf, value);
    rc = mdb_put(txn, s->dbi[STORE_DB_META], &key, &val, 0);
    if (rc != 0) {
        return store_mdb_err(s, rc, "put meta/%s", name);
    }
    return 0;
}

int store_meta_str_get(struct store *s,
                       MDB_txn *txn,
                       const char *name,
                       char *buf,
                       size_t size)
{
    MDB_val key = {strlen(name), (void *)name};
    MDB_val val;
    int rc;

    buf[0] = '\0';
    rc = mdb_get(txn, s->dbi[STORE_DB_META], &key, &val);
    if (rc == MDB_NOTFOUND) {
        return 0;
    }
    if (rc != 0) {
        return store_mdb_err(s, rc, "get meta/%s", name);
    }
    if (val.mv_size >= size) {
        return store_errf(s, STORE_CORRUPT, "meta/%s: %zu bytes, at most %zu",
                          name, val.mv_size, size - 1);
    }
    memcpy(buf, val.mv_data, val.mv_size);
    buf[val.mv_size] = '\0';
    return 0;
}

int store_meta_str_put(struct store *s,
                       MDB_txn *txn,
                       const char *name,
                       const char *value)
{
    MDB_val key = {strlen(name), (void *)name};
    MDB_val val = {strlen(value), (void *)value};
    int rc;

    if (value[0] == '\0') {
        rc = mdb_del(txn, s->dbi[STORE_DB_META], &key, NULL);
        rc = rc == MDB_NOTFOUND ? 0 : rc;
    } else {
        rc = mdb_put(txn, s->dbi[STORE_DB_META], &key, &val, 0);
    }
    if (rc != 0) {
        return store_mdb_err(s, rc, "put meta/%s", name);
    }
    return 0;
}

int store_index_key(struct store *s,
                    MDB_txn *txn,
                    uint64_t index,
                    uint64_t *key)
{
    uint64_t base;
    int rv;

    rv = store_meta_get(s, txn, STORE_META_KEY_BASE, &base);
    if (rv == 0) {
        *key = base + index;
    }
    return rv;
}

/* Open every named database. A store creates missing ones, stamps the
 * schema version of a fresh environment and upgrades a version 1 one; a
 * view (read-only) leaves a missing database unusable. */
static int env_open_dbs(struct store *s)
{
    unsigned int flags = s->view ? 0 : MDB_CREATE;
    MDB_txn *txn;
    uint64_t schema;
    int rv;
    int rc;

    rc = mdb_txn_begin(s->env, NULL, s->view ? MDB_RDONLY : 0, &txn);
    if (rc != 0) {
        return store_mdb_err(s, rc, "begin txn to open databases");
    }
    for (int i = 0; i < STORE_DB_N; i++) {
        rc = mdb_dbi_open(txn, store_db_names[i], flags, &s->dbi[i]);
        if (rc == MDB_NOTFOUND && s->view) {
            s->dbi[i] = (MDB_dbi)-1;
            continue;
        }
        if (rc != 0) {
            rv = store_mdb_err(s, rc, "open database %s", store_db_names[i]);
            goto err_abort_txn;
        }
    }
    if (s->dbi[STORE_DB_META] == (MDB_dbi)-1) {
        rv = store_errf(s, STORE_CORRUPT,
                        "%s has no meta database: not a cityops store",
                        s->dir);
        goto err_abort_txn;
    }
    rv = store_meta_get(s, txn, STORE_META_SCHEMA, &schema);
    if (rv != 0) {
        goto err_abort_txn;
    }
    if (!s->view && schema > 0 && schema < 4) {
        rv = public_schema_upgrade(s, txn);
        if (rv != 0) {
            goto err_abort_txn;
        }
    }
    if (!s->view && schema < STORE_SCHEMA_VERSION) {
        rv = store_meta_put(s, txn, STORE_META_SCHEMA, STORE_SCHEMA_VERSION);
        if (rv != 0) {
            goto err_abort_txn;
        }
    } else if (schema == 0 || schema > STORE_SCHEMA_VERSION) {
        rv = store_errf(s, STORE_CORRUPT, "schema version %llu, want %d",
                        (unsigned long long)schema, STORE_SCHEMA_VERSION);
        goto err_abort_txn;
    }
    rc = mdb_txn_commit(txn);
    if (rc != 0) {
        return store_mdb_err(s, rc, "commit database creation");
    }
    return 0;

err_abort_txn:
    mdb_txn_abort(txn);
    return rv;
}

/* Where LMDB mapped the data file (it reports the address only for
 * MDB_FIXEDMAP): the mapping in /proc/self/maps of the environment's map
 * size that holds a value read in a read-only transaction (values of such
 * a transaction point into the map). NULL if none is found. */
static void *map_locate(struct store *s)
{
    MDB_envinfo info;
    MDB_txn *txn = NULL;
    MDB_cursor *cur = NULL;
    MDB_dbi main_dbi;
    MDB_val key, val;
    uintptr_t inside = 0;
    char line[512];
    void *found = NULL;
    FILE *f;

    if (mdb_env_info(s->env, &info) != 0 ||
        mdb_txn_begin(s->env, NULL, MDB_RDONLY, &txn) != 0) {
        return NULL;
    }
    /* The main database lists the named ones: never empty here. */
    if (mdb_dbi_open(txn, NULL, 0, &main_dbi) == 0 &&
        mdb_cursor_open(txn, main_dbi, &cur) == 0 &&
        mdb_cursor_get(cur, &key, &val, MDB_FIRST) == 0) {
        inside = (uintptr_t)val.mv_data;
    }
    if (cur != NULL) {
        mdb_cursor_close(cur);
    }
    mdb_txn_abort(txn);
    s->map_len = info.me_mapsize;
    if (inside == 0) {
        return NULL;
    }
    f = fopen("/proc/self/maps", "re");
    if (f == NULL) {
        return NULL;
    }
    while (found == NULL && fgets(line, sizeof line, f) != NULL) {
        unsigned long long lo, hi;

        if (sscanf(line, "%llx-%llx", &lo, &hi) == 2 && lo <= inside &&
            inside < hi && hi - lo == s->map_len) {
            found = (void *)(uintptr_t)lo;
        }
    }
    fclose(f);
    return found;
}

int store_env_open(struct store *s)
{
    int rv;
    int rc;

    rc = mdb_env_create(&s->env);
    if (rc != 0) {
        s->env = NULL;
        return store_mdb_err(s, rc, "create environment");
    }
    rc = mdb_env_set_maxdbs(s->env, STORE_MAX_DBS);
    if (rc != 0) {
        rv = store_mdb_err(s, rc, "set maxdbs");
        goto err_close_env;
    }
    rc = mdb_env_set_mapsize(s->env, s->map_size);
    if (rc != 0) {
        rv = store_mdb_err(s, rc, "set map size %zu", s->map_size);
        goto err_close_env;
    }
    rc = mdb_env_open(s->env, s->dir,
                      s->view ? MDB_NOSUBDIR | MDB_RDONLY | MDB_NOLOCK |
                                    MDB_NOTLS
                              : MDB_NOTLS | MDB_NOMETASYNC |
                                    (s->nosync ? MDB_NOSYNC : 0),
                      0644);
    if (rc == EAGAIN || rc == EBUSY) {
        rv = store_errf(s, STORE_BUSY, "open environment %s: %s", s->dir,
                        mdb_strerror(rc));
        goto err_close_env;
    }
    if (rc != 0) {
        rv = store_mdb_err(s, rc, "open environment %s", s->dir);
        goto err_close_env;
    }
    rv = env_open_dbs(s);
    if (rv != 0) {
        goto err_close_env;
    }
    s->map_addr = map_locate(s);
    return 0;

err_close_env:
    mdb_env_close(s->env);
    s->env = NULL;
    return rv;
}

void store_env_close(struct store *s)
{
    if (s->env != NULL) {
        if (!s->view) {
            mdb_env_sync(s->env, 1);
        }
        mdb_env_close(s->env);
        s->env = NULL;
        s->map_addr = NULL;
    }
}

/* Refuse a second opener of the directory, in this or another process. */
int store_dir_lock(struct store *s)
{
    char path[PATH_MAX];

    snprintf(path, sizeof(path), "%s/%s", s->dir, STORE_LOCK_FILE);
    s->lock_fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (s->lock_fd < 0) {
        return store_errf(s, STORE_IOERR, "open %s: %s", path, strerror(errno));
    }
    if (flock(s->lock_fd, LOCK_EX | LOCK_NB) != 0) {
        int err = errno;

        close(s->lock_fd);
        s->lock_fd = -1;
        if (err == EWOULDBLOCK) {
            return store_errf(s, STORE_BUSY,
                              "data directory %s is locked by another user",
                              s->dir);
        }
        return store_errf(s, STORE_IOERR, "flock %s: %s", path, strerror(err));
    }
    return 0;
}

int store_handle_new(const char *dir,
                     const struct store_options *opts,
                     struct store **out)
{
    pthread_rwlockattr_t attr;
    struct store *s;

    s = calloc(1, sizeof(*s));
    if (s == NULL) {
        return STORE_NOMEM;
    }
    s->dir = strdup(dir);
    if (s->dir == NULL) {
        free(s);
        return STORE_NOMEM;
    }
    s->lock_fd = -1;
    s->map_size = STORE_DEFAULT_MAP_SIZE;
    s->nosync = opts != NULL && opts->nosync;
    if (opts != NULL && opts->map_size != 0) {
        s->map_size = opts->map_size;
    }
    pthread_mutex_init(&s->errmsg_lock, NULL);
    pthread_rwlockattr_init(&attr);
    pthread_rwlockattr_setkind_np(&attr,
                                  PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
    pthread_rwlock_init(&s->env_lock, &attr);
    pthread_rwlockattr_destroy(&attr);
    atomic_init(&s->fault, 0);
    *out = s;
    return 0;
}

void store_handle_free(struct store *s)
{
    pthread_rwlock_destroy(&s->env_lock);
    pthread_mutex_destroy(&s->errmsg_lock);
    free(s->dir);
    free(s);
}

int store_open(const char *dir,
               const struct store_options *opts,
               struct store **out)
{
    struct store *s;
    int rv;

    rv = store_handle_new(dir, opts, &s);
    if (rv != 0) {
        return rv;
    }
    rv = store_dir_lock(s);
    if (rv != 0) {
        goto err_free_store;
    }
    rv = store_env_open(s);
    if (rv != 0) {
        goto err_unlock_dir;
    }
    if (opts != NULL && opts->archive_dir != NULL) {
        rv = archive_open(s, opts->archive_dir);
        if (rv != 0) {
            goto err_close_env;
        }
    }
    *out = s;
    return 0;

err_close_env:
    store_env_close(s);
err_unlock_dir:
    close(s->lock_fd);
err_free_store:
    store_handle_free(s);
    return rv;
}

int store_view_open(const char *file,
                    struct store **out,
                    char *errmsg,
                    size_t errlen)
{
    struct store *s;
    int rv;

    *out = NULL;
    rv = store_handle_new(file, NULL, &s);
    if (rv != 0) {
        snprintf(errmsg, errlen, "open %s: out of memory", file);
        return rv;
    }
    s->view = 1;
    rv = store_env_open(s);
    if (rv != 0) {
        snprintf(errmsg, errlen, "%s", s->errmsg);
        store_handle_free(s);
        return rv;
    }
    *out = s;
    return 0;
}

void store_close(struct store *s)
{
    if (s == NULL) {
        return;
    }
    archive_close(s);
    config_cache_free(s);
    store_env_close(s);
    if (s->lock_fd >= 0) {
        close(s->lock_fd);
    }
    store_handle_free(s);
}

int store_sync(struct store *s)
{
    int rv = 0;
    int rc;

    pthread_rwlock_rdlock(&s->env_lock);
    if (s->env != NULL) {
        rc = mdb_env_sync(s->env, 1);
        if (rc != 0) {
            rv = store_mdb_err(s, rc, "sync");
        }
    }
    pthread_rwlock_unlock(&s->env_lock);
    if (rv == 0) {
        rv = archive_sync(s);
    }
    return rv;
}

int store_unmap(struct store *s)
{
    int rv = 0;

    /* No store_errf(): this runs beside the loop thread, whose errors the
     * message buffer holds. */
    pthread_rwlock_rdlock(&s->env_lock);
    if (s->env == NULL || s->map_addr == NULL ||
        madvise(s->map_addr, s->map_len, MADV_DONTNEED) != 0) {
        rv = STORE_IOERR;
    }
    pthread_rwlock_unlock(&s->env_lock);
    return rv;
}

void store_fault_set(struct store *s, int rv)
{
    assert(rv == 0 || rv == STORE_FULL || rv == STORE_IOERR);
    atomic_store(&s->fault, rv);
}

int store_cluster_id(struct store *s,
                     char id[STORE_CLUSTER_ID_SIZE],
                     char restored_from[STORE_RESTORED_FROM_SIZE])
{
    char scratch[STORE_RESTORED_FROM_SIZE];
    MDB_txn *txn;
    int rv;

    rv = store_read_begin(s, &txn);
    if (rv != 0) {
        return rv;
    }
    rv = store_meta_str_get(s, txn, STORE_META_CLUSTER_ID,
                            id != NULL ? id : scratch, STORE_CLUSTER_ID_SIZE);
    if (rv == 0) {
        rv = store_meta_str_get(
            s, txn, STORE_META_RESTORED_FROM,
            restored_from != NULL ? restored_from : scratch,
            STORE_RESTORED_FROM_SIZE);
    }
    store_read_end(s, txn);
    return rv;
}

int store_read_begin(struct store *s, MDB_txn **txn)
{
    int rc;

    pthread_rwlock_rdlock(&s->env_lock);
    if (s->env == NULL) {
        pthread_rwlock_unlock(&s->env_lock);
        return store_errf(s, STORE_IOERR,
                          "environment closed after a "
                          "failed restore");
    }
    rc = mdb_txn_begin(s->env, NULL, MDB_RDONLY, txn);
    if (rc != 0) {
        pthread_rwlock_unlock(&s->env_lock);
        return store_mdb_err(s, rc, "begin read txn");
    }
    return 0;
}

void store_read_end(struct store *s, MDB_txn *txn)
{
    mdb_txn_abort(txn);
    pthread_rwlock_unlock(&s->env_lock);
}

static uint64_t meta_read(struct store *s, const char *name)
{
    MDB_txn *txn;
    uint64_t v = 0;

    if (store_read_begin(s, &txn) != 0) {
        return 0;
    }
    if (store_meta_get(s, txn, name, &v) != 0) {
        v = 0;
    }
    store_read_end(s, txn);
    return v;
}

uint64_t store_applied_index(struct store *s)
{
    return meta_read(s, STORE_META_APPLIED);
}

int64_t store_last_time(struct store *s)
{
    return (int64_t)meta_read(s, STORE_META_LAST_TIME);
}
