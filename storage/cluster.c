/* Cluster records in the replicated store: the address book of members
 * added at run time (so every node can reach and forward to them), a
 * bounded log of membership events (operator changes and the leader's own
 * auto-promotion decisions), shown by Cluster/Status, the cluster id and
 * the bounded log of drill outcomes.
 *
 * Only ADMIN and SYSTEM may write them (the cluster id: SYSTEM only); like
 * every command, a refused one changes nothing. The event and drill logs
 * keep their newest STORE_CLUSTER_EVENTS_KEEP / STORE_DRILLS_KEEP records:
 * older ones are deleted in the same transaction, deterministically on
 * every replica. Both are keyed by index key (store_internal.h), so their
 * order survives a restore. */
#include <stdlib.h>
#include <string.h>

#include "store_internal.h"

#define STORE_CLUSTER_EVENTS_KEEP 100
#define DRILL_LIST_DEFAULT 50

#define RC_INVALID CITYOPS__V1__RESULT_CODE__RESULT_INVALID_ARGUMENT
#define RC_DENIED CITYOPS__V1__RESULT_CODE__RESULT_PERMISSION_DENIED

int cluster_op(const Cityops__V1__Command *cmd)
{
    switch (cmd->op_case) {
    case CITYOPS__V1__COMMAND__OP_MEMBER_SET:
    case CITYOPS__V1__COMMAND__OP_MEMBER_FORGET:
    case CITYOPS__V1__COMMAND__OP_CLUSTER_EVENT:
    case CITYOPS__V1__COMMAND__OP_CLUSTER_INIT:
    case CITYOPS__V1__COMMAND__OP_DRILL_RECORD:
        return 1;
    default:
        return 0;
    }
}

static int put_packed(struct store *s,
                      MDB_txn *txn,
                      enum store_db db,
                      uint64_t id,
                      const ProtobufCMessage *msg)
{
    uint8_t key[8];
    MDB_val k = {sizeof key, key};
    MDB_val v;
    int rc;

    store_be64_put(key, id);
    v.mv_size = protobuf_c_message_get_packed_size(msg);
    v.mv_data = malloc(v.mv_size > 0 ? v.mv_size : 1);
    if (v.mv_data == NULL) {
        return store_errf(s, STORE_NOMEM, "put %s/%llu: out of memory",
                          store_db_names[db], (unsigned long long)id);
    }
    protobuf_c_message_pack(msg, v.mv_data);
    rc = mdb_put(txn, s->dbi[db], &k, &v, 0);
    free(v.mv_data);
    if (rc != 0) {
        return store_mdb_err(s, rc, "put %s/%llu", store_db_names[db],
                             (unsigned long long)id);
    }
    return 0;
}

static int member_check(const Cityops__V1__Member *m,
                        Cityops__V1__CommandResult *res)
{
    const char *raft = m->raft_address != NULL ? m->raft_address : "";
    const char *grpc = m->grpc_address != NULL ? m->grpc_address : "";
    const char *zone = m->zone != NULL ? m->zone : "";

    if (m->id == 0) {
        return store_result_fail(res, CITYOPS__V1__RESULT_CODE__RESULT_INVALID_ARGUMENT,
                      "member id required");
    }
    if (strlen(raft) > STORE_MAX_ID || strlen(grpc) > STORE_MAX_ID ||
        strlen(zone) > STORE_MAX_ID) {
        return store_result_fail(res, CITYOPS__V1__RESULT_CODE__RESULT_INVALID_ARGUMENT,
                      "member address or zone too long");
    }
    return 0;
}

/* Drop the oldest records of @db beyond the newest @keep. */
static int log_trim(struct store *s, MDB_txn *txn, enum store_db db, size_t keep)
{
    const char *name = store_db_names[db];
    MDB_stat st;
    MDB_cursor *cur;
    MDB_val k, v;
    size_t extra;
    int rc;

    rc = mdb_stat(txn, s->dbi[db], &st);
    if (rc != 0) {
        return store_mdb_err(s, rc, "stat %s", name);
    }
    if (st.ms_entries <= keep) {
        return 0;
    }
    extra = st.ms_entries - keep;
    rc = mdb_cursor_open(txn, s->dbi[db], &cur);
    if (rc != 0) {
        return store_mdb_err(s, rc, "cursor %s", name);
    }
    while (extra-- > 0 &&
           (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST)) == 0) {
        rc = mdb_cursor_del(cur, 0);
        if (rc != 0) {
            break;
        }
    }
    mdb_cursor_close(cur);
    if (rc != 0 && rc != MDB_NOTFOUND) {
        return store_mdb_err(s, rc, "trim %s", name);
    }
    return 0;
}

/* Add @msg to the log @db under the index key of @index, then trim it. */
static int log_append(struct store *s,
                      MDB_txn *txn,
                      enum store_db db,
                      uint64_t index,
                      const ProtobufCMessage *msg,
                      size_t keep)
{
    uint64_t key;
    int rv;

    rv = store_index_key(s, txn, index, &key);
    if (rv == 0) {
        rv = put_packed(s, txn, db, key, msg);
    }
    return rv != 0 ? rv : log_trim(s, txn, db, keep);
}

static int str_over(const char *v, size_t max)
{
    return v != NULL && strlen(v) > max;
}

/* A cluster id names a directory of the archive: [A-Za-z0-9._-], not
 * starting with a dot. */
static int cluster_id_ok(const char *id)
{
    size_t n = id != NULL ? strlen(id) : 0;

    if (n == 0 || n >= STORE_CLUSTER_ID_SIZE || id[0] == '.') {
        return 0;
    }
    return strspn(id, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                      "0123456789._-") == n;
}

static int cluster_init(struct store *s,
                        MDB_txn *txn,
                        const Cityops__V1__Command *cmd,
                        Cityops__V1__CommandResult *res)
{
    char cur[STORE_CLUSTER_ID_SIZE];
    const char *id = cmd->cluster_init->cluster_id;
    int rv;

    if (cmd->role != CITYOPS__V1__ROLE__ROLE_SYSTEM) {
        return store_result_fail(res, RC_DENIED,
                                 "cluster_init needs role SYSTEM");
    }
    if (!cluster_id_ok(id)) {
        return store_result_fail(res, RC_INVALID,
                                 "cluster id must be 1 to 63 characters of "
                                 "[A-Za-z0-9._-], not starting with '.'");
    }
    rv = store_meta_str_get(s, txn, STORE_META_CLUSTER_ID, cur, sizeof(cur));
    if (rv != 0 || cur[0] != '\0') {
        return rv; /* set once: a later init changes nothing */
    }
    return store_meta_str_put(s, txn, STORE_META_CLUSTER_ID, id);
}

static int drill_record(struct store *s,
                        MDB_txn *txn,
                        uint64_t index,
                        const Cityops__V1__Command *cmd,
                        Cityops__V1__CommandResult *res)
{
    const Cityops__V1__DrillRecord *d = cmd->drill_record;

    if (str_over(d->drill_id, STORE_MAX_ID) ||
        str_over(d->scenario, STORE_MAX_ID) ||
        str_over(d->history_check, STORE_MAX_TEXT) ||
        str_over(d->summary, STORE_MAX_TEXT) ||
        str_over(d->target, STORE_MAX_TEXT)) {
        return store_result_fail(res, RC_INVALID,
                                 "drill record field too long");
    }
    return log_append(s, txn, STORE_DB_DRILLS, index, &d->base,
                      STORE_DRILLS_KEEP);
}

int cluster_apply(struct store *s,
                  MDB_txn *txn,
                  uint64_t index,
                  const Cityops__V1__Command *cmd,
                  Cityops__V1__CommandResult *res)
{
    uint8_t key[8];
    MDB_val k = {sizeof key, key};
    int rv;
    int rc;

    res->code = CITYOPS__V1__RESULT_CODE__RESULT_OK;
    if (cmd->op_case == CITYOPS__V1__COMMAND__OP_CLUSTER_INIT) {
        return cluster_init(s, txn, cmd, res);
    }
    if (cmd->role != CITYOPS__V1__ROLE__ROLE_ADMIN &&
        cmd->role != CITYOPS__V1__ROLE__ROLE_SYSTEM) {
        return store_result_fail(res, CITYOPS__V1__RESULT_CODE__RESULT_PERMISSION_DENIED,
                      "cluster records need role ADMIN or SYSTEM");
    }
    switch (cmd->op_case) {
    case CITYOPS__V1__COMMAND__OP_MEMBER_SET:
        rv = member_check(cmd->member_set, res);
        if (rv != 0 || res->code != CITYOPS__V1__RESULT_CODE__RESULT_OK) {
            return rv;
        }
        return put_packed(s, txn, STORE_DB_MEMBERS, cmd->member_set->id,
                          &cmd->member_set->base);
    case CITYOPS__V1__COMMAND__OP_MEMBER_FORGET:
        store_be64_put(key, cmd->member_forget->id);
        rc = mdb_del(txn, s->dbi[STORE_DB_MEMBERS], &k, NULL);
        if (rc != 0 && rc != MDB_NOTFOUND) {
            return store_mdb_err(s, rc, "del members/%llu",
                                 (unsigned long long)cmd->member_forget->id);
        }
        return 0;
    case CITYOPS__V1__COMMAND__OP_DRILL_RECORD:
        return drill_record(s, txn, index, cmd, res);
    default: {
        Cityops__V1__ClusterEvent ev = *cmd->cluster_event;
        if ((ev.kind != NULL && strlen(ev.kind) > STORE_MAX_ID) ||
            (ev.detail != NULL && strlen(ev.detail) > STORE_MAX_TEXT)) {
            return store_result_fail(res,
                          CITYOPS__V1__RESULT_CODE__RESULT_INVALID_ARGUMENT,
                          "cluster event kind or detail too long");
        }
        ev.at = cmd->time;
        ev.index = index;
        ev.actor_id = cmd->actor_id;
        return log_append(s, txn, STORE_DB_CLUSTER_EVENTS, index, &ev.base,
                          STORE_CLUSTER_EVENTS_KEEP);
    }
    }
}

int store_member_get(struct store *s,
                     uint64_t id,
                     Cityops__V1__Member **out)
{
    uint8_t key[8];
    MDB_val k = {sizeof key, key};
    MDB_val v;
    MDB_txn *txn;
    int rv;
    int rc;

    rv = store_read_begin(s, &txn);
    if (rv != 0) {
        return rv;
    }
    store_be64_put(key, id);
    rc = mdb_get(txn, s->dbi[STORE_DB_MEMBERS], &k, &v);
    if (rc == MDB_NOTFOUND) {
        rv = STORE_NOTFOUND;
    } else if (rc != 0) {
        rv = store_mdb_err(s, rc, "get members/%llu", (unsigned long long)id);
    } else {
        *out = cityops__v1__member__unpack(NULL, v.mv_size, v.mv_data);
        rv = *out != NULL ? 0
                          : store_errf(s, STORE_CORRUPT,
                                       "members/%llu does not decode",
                                       (unsigned long long)id);
    }
    store_read_end(s, txn);
    return rv;
}

/* The last @max records of the log @db, oldest first, unpacked with
 * @desc into a malloc'd array. */
static int log_list(struct store *s,
                    enum store_db db,
                    const ProtobufCMessageDescriptor *desc,
                    size_t max,
                    ProtobufCMessage ***out,
                    size_t *n)
{
    ProtobufCMessage **msgs;
    MDB_cursor *cur;
    MDB_val k, v;
    MDB_txn *txn;
    size_t got = 0;
    int rv;
    int rc;

    *out = NULL;
    *n = 0;
    msgs = calloc(max > 0 ? max : 1, sizeof *msgs);
    if (msgs == NULL) {
        return STORE_NOMEM;
    }
    rv = store_read_begin(s, &txn);
    if (rv != 0) {
        free(msgs);
        return rv;
    }
    rc = mdb_cursor_open(txn, s->dbi[db], &cur);
    if (rc != 0) {
        rv = store_mdb_err(s, rc, "cursor %s", store_db_names[db]);
        goto out_end;
    }
    /* Newest first from the end, then reverse into oldest-first order. */
    for (rc = mdb_cursor_get(cur, &k, &v, MDB_LAST); rc == 0 && got < max;
         rc = mdb_cursor_get(cur, &k, &v, MDB_PREV)) {
        msgs[got] = protobuf_c_message_unpack(desc, NULL, v.mv_size,
                                              v.mv_data);
        if (msgs[got] == NULL) {
            rv = store_errf(s, STORE_CORRUPT, "%s record does not decode",
                            store_db_names[db]);
            break;
        }
        got++;
    }
    mdb_cursor_close(cur);
    for (size_t i = 0; i < got / 2; i++) {
        ProtobufCMessage *t = msgs[i];
        msgs[i] = msgs[got - 1 - i];
        msgs[got - 1 - i] = t;
    }
out_end:
    store_read_end(s, txn);
    if (rv != 0) {
        store_msgs_free(msgs, got);
        return rv;
    }
    *out = msgs;
    *n = got;
    return 0;
}

int store_cluster_events(struct store *s,
                         size_t max,
                         Cityops__V1__ClusterEvent ***out,
                         size_t *n)
{
    return log_list(s, STORE_DB_CLUSTER_EVENTS,
                    &cityops__v1__cluster_event__descriptor, max,
                    (ProtobufCMessage ***)out, n);
}

int store_drill_list(struct store *s,
                     size_t max,
                     Cityops__V1__DrillRecord ***out,
                     size_t *n)
{
    return log_list(s, STORE_DB_DRILLS, &cityops__v1__drill_record__descriptor,
                    max > 0 ? max : DRILL_LIST_DEFAULT,
                    (ProtobufCMessage ***)out, n);
}
