/* Reads: one case, filtered lists of cases, a case's history, counts and the
 * state digest. Each call runs in its own short read transaction, holding
 * the environment lock shared (see store_internal.h), and may run on any
 * thread.
 *
 * Lists walk one secondary index (the most selective filter given, by a
 * fixed preference) and check every filter on the decoded case, so an index
 * only narrows the walk and never decides a match. Indexes whose keys under
 * the chosen prefix are ordered by case id are paged by seeking past the
 * page token; the others (reported time, partial category) collect the
 * matching ids and sort them.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "store_internal.h"

#define LIST_PAGE_DEFAULT 50
#define LIST_PAGE_MAX 500

int store_case_get(struct store *s,
                   uint64_t case_id,
                   Cityops__V1__Case **out,
                   uint64_t *applied)
{
    MDB_txn *txn;
    uint64_t idx = 0;
    int rv;

    rv = store_read_begin(s, &txn);
    if (rv != 0) {
        return rv;
    }
    rv = store_meta_get(s, txn, STORE_META_APPLIED, &idx);
    if (rv == 0) {
        rv = store_case_load(s, txn, case_id, out);
    }
    store_read_end(s, txn);
    if (rv == 0 && applied != NULL) {
        *applied = idx;
    }
    return rv;
}

uint64_t store_case_count(struct store *s)
{
    MDB_txn *txn;
    MDB_stat st;
    uint64_t n = 0;

    if (store_read_begin(s, &txn) != 0) {
        return 0;
    }
    if (mdb_stat(txn, s->dbi[STORE_DB_CASES], &st) == 0) {
        n = st.ms_entries;
    }
    store_read_end(s, txn);
    return n;
}

/* Lists. */

enum list_walk {
    LIST_WALK_ORDERED,  /* keys under the prefix sorted by case id */
    LIST_WALK_REPORTED, /* idx_reported between the time bounds */
    LIST_WALK_PREFIX,   /* keys under the prefix, any order */
    LIST_WALK_DEADLINE, /* idx_deadline between the deadline bounds */
};

struct list_plan {
    enum store_db db;
    enum list_walk walk;
    uint8_t prefix[STORE_MAX_ID + 1];
    size_t prefix_len;
};

struct list_ids {
    uint64_t *ids;
    size_t n;
    size_t cap;
};

struct list_ctx {
    struct store *s;
    MDB_txn *txn;
    const Cityops__V1__ListRequest *req;
    int64_t deadline_from; /* LIST_WALK_DEADLINE bounds, [from, to) */
    int64_t deadline_to;
    uint64_t after; /* page token: only ids above it */
    size_t want;    /* page size + 1: one more tells there is a next page */
    struct list_ids found;
};

static int is_code2(const char *v)
{
    return v != NULL && v[0] >= '0' && v[0] <= '9' && v[1] >= '0' &&
           v[1] <= '9' && v[2] == '\0';
}

static int nonempty(const char *v)
{
    return v != NULL && v[0] != '\0';
}

static void
plan_prefix_str(struct list_plan *p, enum store_db db, const char *v)
{
    size_t n = strlen(v);

    p->db = db;
    p->walk = LIST_WALK_ORDERED;
    memcpy(p->prefix, v, n);
    p->prefix[n] = '\0';
    p->prefix_len = n + 1;
}

static void list_plan(const Cityops__V1__ListRequest *req, struct list_plan *p)
{
    memset(p, 0, sizeof(*p));
    if (req->deadline_from != 0 || req->deadline_to != 0 ||
        req->overdue_only) {
        p->db = STORE_DB_IDX_DEADLINE;
        p->walk = LIST_WALK_DEADLINE;
    } else if (nonempty(req->grid_code) && strlen(req->grid_code) <= STORE_MAX_ID) {
        plan_prefix_str(p, STORE_DB_IDX_GRID, req->grid_code);
    } else if (nonempty(req->department_id) &&
               strlen(req->department_id) <= STORE_MAX_ID) {
        plan_prefix_str(p, STORE_DB_IDX_DEPT, req->department_id);
    } else if (req->category_type != 0 && is_code2(req->major_code) &&
               is_code2(req->minor_code)) {
        p->db = STORE_DB_IDX_CATEGORY;
        p->walk = LIST_WALK_ORDERED;
        p->prefix[0] = (uint8_t)req->category_type;
        memcpy(p->prefix + 1, req->major_code, 2);
        memcpy(p->prefix + 3, req->minor_code, 2);
        p->prefix_len = 5;
    } else if (req->state != 0) {
        p->db = STORE_DB_IDX_STATE;
        p->walk = LIST_WALK_ORDERED;
        p->prefix[0] = (uint8_t)req->state;
        p->prefix_len = 1;
    } else if (req->reported_from != 0 || req->reported_to != 0) {
        p->db = STORE_DB_IDX_REPORTED;
        p->walk = LIST_WALK_REPORTED;
    } else if (req->category_type != 0) {
        p->db = STORE_DB_IDX_CATEGORY;
        p->walk = LIST_WALK_PREFIX;
        p->prefix[0] = (uint8_t)req->category_type;
        p->prefix_len = 1;
        if (is_code2(req->major_code)) {
            memcpy(p->prefix + 1, req->major_code, 2);
            p->prefix_len = 3;
        }
    } else {
        p->db = STORE_DB_CASES;
        p->walk = LIST_WALK_ORDERED;
        p->prefix_len = 0;
    }
}

static int str_filter(const char *want, const char *have)
{
    return !nonempty(want) || strcmp(want, have != NULL ? have : "") == 0;
}

static int case_matches(const Cityops__V1__ListRequest *req,
                        const Cityops__V1__Case *c)
{
    int64_t reported = c->times != NULL ? c->times->reported : 0;
    const char *grid = c->location != NULL ? c->location->grid_code : "";

    if (req->state != 0 && c->state != req->state) {
        return 0;
    }
    if (req->category_type != 0 && c->category_type != req->category_type) {
        return 0;
    }
    if (!str_filter(req->department_id, c->department_id) ||
        !str_filter(req->major_code, c->major_code) ||
        !str_filter(req->minor_code, c->minor_code) ||
        !str_filter(req->grid_code, grid)) {
        return 0;
    }
    if (req->reported_from != 0 && reported < req->reported_from) {
        return 0;
    }
    if (req->reported_to != 0 && reported >= req->reported_to) {
        return 0;
    }
    return 1;
}

static int ids_push(struct list_ids *l, uint64_t id)
{
    if (l->n == l->cap) {
        size_t cap = l->cap != 0 ? l->cap * 2 : 64;
        uint64_t *ids = realloc(l->ids, cap * sizeof(*ids));

        if (ids == NULL) {
            return STORE_NOMEM;
        }
        l->ids = ids;
        l->cap = cap;
    }
    l->ids[l->n++] = id;
    return 0;
}

/* Decode case @id and keep its id if it passes every filter. */
static int list_consider(struct list_ctx *x, uint64_t id)
{
    Cityops__V1__Case *c;
    int rv;

    if (id <= x->after) {
        return 0;
    }
    rv = store_case_load(x->s, x->txn, id, &c);
    if (rv == STORE_NOTFOUND) {
        return store_errf(x->s, STORE_CORRUPT,
                          "index entry for missing "
                          "case/%llu",
                          (unsigned long long)id);
    }
    if (rv != 0) {
        return rv;
    }
    if (case_matches(x->req, c)) {
        rv = ids_push(&x->found, id);
    }
    cityops__v1__case__free_unpacked(c, NULL);
    return rv;
}

static int key_has_prefix(const MDB_val *k, const struct list_plan *p)
{
    return k->mv_size == p->prefix_len + 8 &&
           memcmp(k->mv_data, p->prefix, p->prefix_len) == 0;
}

/* Walk the index in id order from the page token; stop at a full page. */
static int list_walk_ordered(struct list_ctx *x,
                             MDB_cursor *cur,
                             const struct list_plan *p)
{
    uint8_t seek[sizeof(p->prefix) + 8];
    MDB_val key = {p->prefix_len + 8, seek};
    MDB_val val;
    int rv = 0;
    int rc;

    if (x->after == UINT64_MAX) {
        return 0;
    }
    memcpy(seek, p->prefix, p->prefix_len);
    store_be64_put(seek + p->prefix_len, x->after + 1);
    rc = mdb_cursor_get(cur, &key, &val, MDB_SET_RANGE);
    while (rc == 0 && rv == 0 && x->found.n < x->want) {
        if (!key_has_prefix(&key, p)) {
            break;
        }
        rv = list_consider(
            x, store_be64_get((uint8_t *)key.mv_data + p->prefix_len));
        rc = mdb_cursor_get(cur, &key, &val, MDB_NEXT);
    }
    if (rv == 0 && rc != 0 && rc != MDB_NOTFOUND) {
        rv = store_mdb_err(x->s, rc, "list %s", store_db_names[p->db]);
    }
    return rv;
}

/* Walk every matching entry (not in id order): collect, then sort. */
static int
list_walk_all(struct list_ctx *x, MDB_cursor *cur, const struct list_plan *p)
{
    const Cityops__V1__ListRequest *req = x->req;
    const uint64_t flip = (uint64_t)1 << 63;
    uint8_t seek[sizeof(p->prefix) + 8];
    MDB_val key = {p->prefix_len, seek};
    MDB_val val;
    int rv = 0;
    int rc;

    memcpy(seek, p->prefix, p->prefix_len);
    if (p->walk == LIST_WALK_DEADLINE) {
        store_be64_put(seek, (uint64_t)x->deadline_from ^ flip);
        key.mv_size = 8;
    } else if (p->walk == LIST_WALK_REPORTED) {
        store_be64_put(seek, (uint64_t)req->reported_from ^ flip);
        key.mv_size = 8;
        if (req->reported_from == 0) {
            memset(seek, 0, 8);
        }
    }
    rc = mdb_cursor_get(cur, &key, &val,
                        key.mv_size > 0 ? MDB_SET_RANGE : MDB_FIRST);
    while (rc == 0 && rv == 0) {
        const uint8_t *k = key.mv_data;

        if (p->walk == LIST_WALK_DEADLINE) {
            int64_t t = (int64_t)(store_be64_get(k) ^ flip);

            if (key.mv_size != 17 || t >= x->deadline_to) {
                break;
            }
            rv = list_consider(x, store_be64_get(k + 8));
            rc = mdb_cursor_get(cur, &key, &val, MDB_NEXT);
            continue;
        }
        if (p->walk == LIST_WALK_REPORTED) {
            int64_t t = (int64_t)(store_be64_get(k) ^ flip);

            if (key.mv_size != 16 ||
                (req->reported_to != 0 && t >= req->reported_to)) {
                break;
            }
        } else if (key.mv_size < p->prefix_len + 8 ||
                   memcmp(k, p->prefix, p->prefix_len) != 0) {
            break;
        }
        rv = list_consider(x, store_be64_get(k + key.mv_size - 8));
        rc = mdb_cursor_get(cur, &key, &val, MDB_NEXT);
    }
    if (rv == 0 && rc != 0 && rc != MDB_NOTFOUND) {
        rv = store_mdb_err(x->s, rc, "list %s", store_db_names[p->db]);
    }
    return rv;
}

static int id_cmp(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a;
    uint64_t y = *(const uint64_t *)b;

    return x < y ? -1 : x > y;
}

int store_token_parse(const char *tok, uint64_t *after)
{
    char *end;

    *after = 0;
    if (tok == NULL || tok[0] == '\0') {
        return 0;
    }
    for (const char *p = tok; *p != '\0'; p++) {
        if (*p < '0' || *p > '9') {
            return STORE_INVALID;
        }
    }
    errno = 0;
    *after = strtoull(tok, &end, 10);
    if (errno != 0 || *end != '\0') {
        return STORE_INVALID;
    }
    return 0;
}

/* Build the response from the first @n collected ids. */
static int list_fill(struct list_ctx *x,
                     size_t n,
                     int more,
                     Cityops__V1__ListResponse *resp)
{
    char tok[24];
    int rv;

    if (n > 0) {
        resp->cases = calloc(n, sizeof(*resp->cases));
        if (resp->cases == NULL) {
            return STORE_NOMEM;
        }
    }
    for (size_t i = 0; i < n; i++) {
        rv = store_case_load(x->s, x->txn, x->found.ids[i], &resp->cases[i]);
        if (rv != 0) {
            return rv;
        }
        resp->n_cases = i + 1;
    }
    if (more) {
        snprintf(tok, sizeof(tok), "%llu",
                 (unsigned long long)x->found.ids[n - 1]);
        return store_str_set(&resp->next_page_token, tok);
    }
    return 0;
}

static int list_run(struct list_ctx *x, Cityops__V1__ListResponse *resp)
{
    struct list_plan p;
    MDB_cursor *cur;
    size_t page = x->want - 1;
    size_t n;
    int rv;
    int rc;

    list_plan(x->req, &p);
    rc = mdb_cursor_open(x->txn, x->s->dbi[p.db], &cur);
    if (rc != 0) {
        return store_mdb_err(x->s, rc, "open cursor on %s",
                             store_db_names[p.db]);
    }
    if (p.walk == LIST_WALK_ORDERED) {
        rv = list_walk_ordered(x, cur, &p);
    } else {
        rv = list_walk_all(x, cur, &p);
    }
    mdb_cursor_close(cur);
    if (rv != 0) {
        return rv;
    }
    if (p.walk != LIST_WALK_ORDERED) {
        size_t u = 0;

        qsort(x->found.ids, x->found.n, sizeof(uint64_t), id_cmp);
        /* a case with two open clocks is in idx_deadline twice */
        for (size_t i = 0; i < x->found.n; i++) {
            if (u == 0 || x->found.ids[u - 1] != x->found.ids[i]) {
                x->found.ids[u++] = x->found.ids[i];
            }
        }
        x->found.n = u;
    }
    n = x->found.n < page ? x->found.n : page;
    return list_fill(x, n, x->found.n > page, resp);
}

int store_case_list(struct store *s,
                    const Cityops__V1__ListRequest *req,
                    Cityops__V1__ListResponse **out)
{
    Cityops__V1__ListResponse *resp;
    struct list_ctx x = {s, NULL, req, 0, 0, 0, 0, {NULL, 0, 0}};
    size_t page = req->page_size;
    int rv;

    if (store_token_parse(req->page_token, &x.after) != 0) {
        return store_errf(s, STORE_INVALID, "list: bad page token");
    }
    if (page == 0) {
        page = LIST_PAGE_DEFAULT;
    }
    if (page > LIST_PAGE_MAX) {
        page = LIST_PAGE_MAX;
    }
    x.want = page + 1;
    resp = malloc(sizeof(*resp));
    if (resp == NULL) {
        return STORE_NOMEM;
    }
    cityops__v1__list_response__init(resp);
    rv = store_read_begin(s, &x.txn);
    if (rv != 0) {
        goto err_free_resp;
    }
    rv = store_meta_get(s, x.txn, STORE_META_APPLIED, &resp->applied_index);
    if (rv == 0) {
        uint64_t tick = 0;

        /* overdue = an open clock whose deadline the last tick passed */
        rv = store_meta_get(s, x.txn, STORE_META_TICK, &tick);
        x.deadline_from = req->deadline_from != 0 ? req->deadline_from : 1;
        x.deadline_to = req->deadline_to != 0 ? req->deadline_to : INT64_MAX;
        if (req->overdue_only && (int64_t)tick + 1 < x.deadline_to) {
            x.deadline_to = (int64_t)tick + 1;
        }
    }
    if (rv == 0) {
        rv = list_run(&x, resp);
    }
    store_read_end(s, x.txn);
    free(x.found.ids);
    if (rv != 0) {
        goto err_free_resp;
    }
    *out = resp;
    return 0;

err_free_resp:
    cityops__v1__list_response__free_unpacked(resp, NULL);
    return rv;
}

/* History. */

static int events_push(Cityops__V1__HistoryResponse *h,
                       Cityops__V1__CaseEvent *ev)
{
    size_t n = h->n_events + 1;
    Cityops__V1__CaseEvent **evs = realloc(h->events, n * sizeof(*evs));

    if (evs == NULL) {
        return STORE_NOMEM;
    }
    h->events = evs;
    h->events[h->n_events++] = ev;
    return 0;
}

static int history_walk(struct store *s,
                        MDB_txn *txn,
                        uint64_t case_id,
                        Cityops__V1__HistoryResponse *h)
{
    Cityops__V1__CaseEvent *ev;
    uint8_t seek[12] = {0};
    MDB_val key = {sizeof(seek), seek};
    MDB_val val;
    MDB_cursor *cur;
    int rv = 0;
    int rc;

    rc = mdb_cursor_open(txn, s->dbi[STORE_DB_CASE_EVENTS], &cur);
    if (rc != 0) {
        return store_mdb_err(s, rc, "open cursor on case_events");
    }
    store_be64_put(seek, case_id);
    rc = mdb_cursor_get(cur, &key, &val, MDB_SET_RANGE);
    while (rc == 0 && rv == 0) {
        if (key.mv_size != 12 || memcmp(key.mv_data, seek, 8) != 0) {
            break;
        }
        ev = cityops__v1__case_event__unpack(NULL, val.mv_size, val.mv_data);
        if (ev == NULL) {
            rv = store_errf(s, STORE_CORRUPT, "decode case_event/%llu",
                            (unsigned long long)case_id);
            break;
        }
        rv = events_push(h, ev);
        if (rv != 0) {
            cityops__v1__case_event__free_unpacked(ev, NULL);
            break;
        }
        rc = mdb_cursor_get(cur, &key, &val, MDB_NEXT);
    }
    mdb_cursor_close(cur);
    if (rv == 0 && rc != 0 && rc != MDB_NOTFOUND) {
        rv = store_mdb_err(s, rc, "history case/%llu",
                           (unsigned long long)case_id);
    }
    return rv;
}

int store_case_history(struct store *s,
                       uint64_t case_id,
                       Cityops__V1__HistoryResponse **out)
{
    Cityops__V1__HistoryResponse *h;
    Cityops__V1__Case *c;
    MDB_txn *txn;
    int rv;

    h = malloc(sizeof(*h));
    if (h == NULL) {
        return STORE_NOMEM;
    }
    cityops__v1__history_response__init(h);
    rv = store_read_begin(s, &txn);
    if (rv != 0) {
        goto err_free_history;
    }
    rv = store_case_load(s, txn, case_id, &c);
    if (rv == 0) {
        cityops__v1__case__free_unpacked(c, NULL);
        rv = store_meta_get(s, txn, STORE_META_APPLIED, &h->applied_index);
    }
    if (rv == 0) {
        rv = history_walk(s, txn, case_id, h);
    }
    store_read_end(s, txn);
    if (rv != 0) {
        goto err_free_history;
    }
    *out = h;
    return 0;

err_free_history:
    cityops__v1__history_response__free_unpacked(h, NULL);
    return rv;
}

/* Digest: SHA-256 over every database, in store_db_names order: the name
 * with its NUL, then each entry as key length (u64 BE), key, value length
 * (u64 BE), value. The meta keys below place a state (in a log, a cluster,
 * a restore) rather than make it up, and are left out: a restored store
 * then digests like its source at the same state. */

static const char *const digest_skip[] = {
    STORE_META_APPLIED,       STORE_META_CLUSTER_ID, STORE_META_RESTORED_FROM,
    STORE_META_RESTORE,       STORE_META_KEY_BASE,
};

static int digest_skipped(enum store_db db, const MDB_val *key)
{
    if (db != STORE_DB_META) {
        return 0;
    }
    for (size_t i = 0; i < sizeof(digest_skip) / sizeof(digest_skip[0]); i++) {
        if (key->mv_size == strlen(digest_skip[i]) &&
            memcmp(key->mv_data, digest_skip[i], key->mv_size) == 0) {
            return 1;
        }
    }
    return 0;
}

static int
digest_db(struct store *s, MDB_txn *txn, enum store_db db, EVP_MD_CTX *md)
{
    const char *name = store_db_names[db];
    MDB_cursor *cur;
    MDB_val key;
    MDB_val val;
    uint8_t len[8];
    int ok;
    int rc;

    ok = EVP_DigestUpdate(md, name, strlen(name) + 1);
    rc = mdb_cursor_open(txn, s->dbi[db], &cur);
    if (rc != 0) {
        return store_mdb_err(s, rc, "open cursor on %s", name);
    }
    rc = mdb_cursor_get(cur, &key, &val, MDB_FIRST);
    while (rc == 0 && ok) {
        if (digest_skipped(db, &key)) {
            rc = mdb_cursor_get(cur, &key, &val, MDB_NEXT);
            continue;
        }
        store_be64_put(len, key.mv_size);
        ok = EVP_DigestUpdate(md, len, sizeof(len)) &&
             EVP_DigestUpdate(md, key.mv_data, key.mv_size);
        store_be64_put(len, val.mv_size);
        ok = ok && EVP_DigestUpdate(md, len, sizeof(len)) &&
             EVP_DigestUpdate(md, val.mv_data, val.mv_size);
        rc = mdb_cursor_get(cur, &key, &val, MDB_NEXT);
    }
    mdb_cursor_close(cur);
    if (!ok) {
        return store_errf(s, STORE_NOMEM, "digest %s: SHA-256 failed", name);
    }
    if (rc != MDB_NOTFOUND) {
        return store_mdb_err(s, rc, "digest %s", name);
    }
    return 0;
}

int store_digest(struct store *s,
                 uint8_t out[STORE_DIGEST_SIZE],
                 uint64_t *applied)
{
    EVP_MD_CTX *md;
    MDB_txn *txn;
    uint64_t idx = 0;
    unsigned int n = 0;
    int rv;

    md = EVP_MD_CTX_new();
    if (md == NULL || EVP_DigestInit_ex(md, EVP_sha256(), NULL) != 1) {
        EVP_MD_CTX_free(md);
        return STORE_NOMEM;
    }
    rv = store_read_begin(s, &txn);
    if (rv != 0) {
        goto out_free_md;
    }
    rv = store_meta_get(s, txn, STORE_META_APPLIED, &idx);
    for (int db = 0; rv == 0 && db < STORE_DB_N; db++) {
        rv = digest_db(s, txn, db, md);
    }
    store_read_end(s, txn);
    if (rv == 0 && EVP_DigestFinal_ex(md, out, &n) != 1) {
        rv = STORE_NOMEM;
    }
    if (rv == 0 && applied != NULL) {
        *applied = idx;
    }
out_free_md:
    EVP_MD_CTX_free(md);
    return rv;
}
