/* Case records, their history and their secondary indexes.
 *
 * Invariant: for every case in `cases` there is exactly one entry in each
 * index whose field is set (state, category and reported time always; the
 * department and grid code when not empty), keyed by its current value.
 * store_case_save() is the only writer of `cases` and keeps it so.
 */
#include <stdlib.h>
#include <string.h>

#include "store_internal.h"

static void case_key(uint8_t key[8], uint64_t case_id)
{
    store_be64_put(key, case_id);
}

int store_case_load(struct store *s,
                    MDB_txn *txn,
                    uint64_t case_id,
                    Cityops__V1__Case **out)
{
    uint8_t k[8];
    MDB_val key = {sizeof(k), k};
    MDB_val val;
    int rc;

    case_key(k, case_id);
    rc = mdb_get(txn, s->dbi[STORE_DB_CASES], &key, &val);
    if (rc == MDB_NOTFOUND) {
        return STORE_NOTFOUND;
    }
    if (rc != 0) {
        return store_mdb_err(s, rc, "get case/%llu",
                             (unsigned long long)case_id);
    }
    *out = cityops__v1__case__unpack(NULL, val.mv_size, val.mv_data);
    if (*out == NULL) {
        return store_errf(s, STORE_CORRUPT, "decode case/%llu",
                          (unsigned long long)case_id);
    }
    return 0;
}

/* string + '\0' + id; len 0 when the string is empty (not indexed). */
static size_t str_id_key(uint8_t *key, const char *str, uint64_t id)
{
    size_t n = str != NULL ? strlen(str) : 0;

    if (n == 0) {
        return 0;
    }
    if (n > STORE_MAX_ID) {
        n = STORE_MAX_ID; /* apply refuses longer ids; never collide */
    }
    memcpy(key, str, n);
    key[n] = '\0';
    store_be64_put(key + n + 1, id);
    return n + 1 + 8;
}

static void code2(uint8_t *dst, const char *code)
{
    dst[0] = '0';
    dst[1] = '0';
    if (code != NULL && code[0] != '\0') {
        dst[0] = (uint8_t)code[0];
        if (code[1] != '\0') {
            dst[1] = (uint8_t)code[1];
        }
    }
}

void store_case_ix_capture(const Cityops__V1__Case *c, struct store_case_ix *ix)
{
    int64_t reported = c->times != NULL ? c->times->reported : 0;

    memset(ix, 0, sizeof(*ix));
    ix->present = 1;
    ix->state[0] = (uint8_t)c->state;
    store_be64_put(ix->state + 1, c->case_id);
    ix->dept_len = str_id_key(ix->dept, c->department_id, c->case_id);
    ix->grid_len = str_id_key(
        ix->grid, c->location != NULL ? c->location->grid_code : NULL,
        c->case_id);
    ix->category[0] = (uint8_t)c->category_type;
    code2(ix->category + 1, c->major_code);
    code2(ix->category + 3, c->minor_code);
    store_be64_put(ix->category + 5, c->case_id);
    /* Flip the sign bit so that negative times sort first. */
    store_be64_put(ix->reported, (uint64_t)reported ^ ((uint64_t)1 << 63));
    store_be64_put(ix->reported + 8, c->case_id);
}

/* Move one index entry from @old_key to @new_key (either may be empty). */
static int ix_move(struct store *s,
                   MDB_txn *txn,
                   enum store_db db,
                   const uint8_t *old_key,
                   size_t old_len,
                   const uint8_t *new_key,
                   size_t new_len)
{
    MDB_val key;
    MDB_val empty = {0, NULL};
    int rc;

    if (old_len == new_len && memcmp(old_key, new_key, new_len) == 0) {
        return 0;
    }
    if (old_len > 0) {
        key.mv_size = old_len;
        key.mv_data = (void *)old_key;
        rc = mdb_del(txn, s->dbi[db], &key, NULL);
        if (rc != 0 && rc != MDB_NOTFOUND) {
            return store_mdb_err(s, rc, "del %s", store_db_names[db]);
        }
    }
    if (new_len > 0) {
        key.mv_size = new_len;
        key.mv_data = (void *)new_key;
        rc = mdb_put(txn, s->dbi[db], &key, &empty, 0);
        if (rc != 0) {
            return store_mdb_err(s, rc, "put %s", store_db_names[db]);
        }
    }
    return 0;
}

static int ix_update(struct store *s,
                     MDB_txn *txn,
                     const struct store_case_ix *o,
                     const struct store_case_ix *n)
{
    int rv;

    rv = ix_move(s, txn, STORE_DB_IDX_STATE, o->state,
                 o->present ? sizeof(o->state) : 0, n->state, sizeof(n->state));
    if (rv != 0) {
        return rv;
    }
    rv = ix_move(s, txn, STORE_DB_IDX_DEPT, o->dept, o->dept_len, n->dept,
                 n->dept_len);
    if (rv != 0) {
        return rv;
    }
    rv = ix_move(s, txn, STORE_DB_IDX_GRID, o->grid, o->grid_len, n->grid,
                 n->grid_len);
    if (rv != 0) {
        return rv;
    }
    rv = ix_move(s, txn, STORE_DB_IDX_CATEGORY, o->category,
                 o->present ? sizeof(o->category) : 0, n->category,
                 sizeof(n->category));
    if (rv != 0) {
        return rv;
    }
    return ix_move(s, txn, STORE_DB_IDX_REPORTED, o->reported,
                   o->present ? sizeof(o->reported) : 0, n->reported,
                   sizeof(n->reported));
}

int store_case_save(struct store *s,
                    MDB_txn *txn,
                    const struct store_case_ix *old,
                    const Cityops__V1__Case *c)
{
    static const struct store_case_ix none;
    struct store_case_ix now;
    uint8_t k[8];
    MDB_val key = {sizeof(k), k};
    int rv;
    int rc;

    store_case_ix_capture(c, &now);
    rv = ix_update(s, txn, old != NULL ? old : &none, &now);
    if (rv != 0) {
        return rv;
    }
    case_key(k, c->case_id);
    rc = store_msg_put(txn, s->dbi[STORE_DB_CASES], &key, &c->base, 0);
    if (rc != 0) {
        return store_mdb_err(s, rc, "put case/%llu",
                             (unsigned long long)c->case_id);
    }
    return 0;
}

int store_event_put(struct store *s,
                    MDB_txn *txn,
                    const Cityops__V1__CaseEvent *ev)
{
    uint8_t k[12];
    MDB_val key = {sizeof(k), k};
    int rc;

    store_be64_put(k, ev->case_id);
    store_be32_put(k + 8, ev->seq);
    rc = store_msg_put(txn, s->dbi[STORE_DB_CASE_EVENTS], &key, &ev->base,
                       MDB_NOOVERWRITE);
    if (rc != 0) {
        return store_mdb_err(s, rc, "put case_event/%llu/%u",
                             (unsigned long long)ev->case_id, ev->seq);
    }
    return 0;
}

int store_msg_put(MDB_txn *txn,
                  MDB_dbi dbi,
                  MDB_val *key,
                  const ProtobufCMessage *msg,
                  unsigned int flags)
{
    MDB_val val;
    int rc;

    val.mv_size = protobuf_c_message_get_packed_size(msg);
    val.mv_data = NULL;
    rc = mdb_put(txn, dbi, key, &val, flags | MDB_RESERVE);
    if (rc == 0) {
        protobuf_c_message_pack(msg, val.mv_data);
    }
    return rc;
}
