/* Cluster records in the replicated store: the address book of members
 * added at run time (so every node can reach and forward to them) and a
 * bounded log of membership events (operator changes and the leader's own
 * auto-promotion decisions), shown by Cluster/Status.
 *
 * Only ADMIN and SYSTEM may write them; like every command, a refused one
 * changes nothing. The event log keeps the newest STORE_CLUSTER_EVENTS_KEEP
 * records: older ones are deleted in the same transaction, deterministically
 * on every replica. */
#include <stdlib.h>
#include <string.h>

#include "store_internal.h"

#define STORE_CLUSTER_EVENTS_KEEP 100

int cluster_op(const Cityops__V1__Command *cmd)
{
    switch (cmd->op_case) {
    case CITYOPS__V1__COMMAND__OP_MEMBER_SET:
    case CITYOPS__V1__COMMAND__OP_MEMBER_FORGET:
    case CITYOPS__V1__COMMAND__OP_CLUSTER_EVENT:
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

/* Drop events beyond the newest STORE_CLUSTER_EVENTS_KEEP. */
static int events_trim(struct store *s, MDB_txn *txn)
{
    MDB_dbi dbi = s->dbi[STORE_DB_CLUSTER_EVENTS];
    MDB_stat st;
    MDB_cursor *cur;
    MDB_val k, v;
    size_t extra;
    int rc;

    rc = mdb_stat(txn, dbi, &st);
    if (rc != 0) {
        return store_mdb_err(s, rc, "stat cluster_events");
    }
    if (st.ms_entries <= STORE_CLUSTER_EVENTS_KEEP) {
        return 0;
    }
    extra = st.ms_entries - STORE_CLUSTER_EVENTS_KEEP;
    rc = mdb_cursor_open(txn, dbi, &cur);
    if (rc != 0) {
        return store_mdb_err(s, rc, "cursor cluster_events");
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
        return store_mdb_err(s, rc, "trim cluster_events");
    }
    return 0;
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
        rv = put_packed(s, txn, STORE_DB_CLUSTER_EVENTS, index, &ev.base);
        return rv != 0 ? rv : events_trim(s, txn);
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

int store_cluster_events(struct store *s,
                         size_t max,
                         Cityops__V1__ClusterEvent ***out,
                         size_t *n)
{
    Cityops__V1__ClusterEvent **evs;
    MDB_cursor *cur;
    MDB_val k, v;
    MDB_txn *txn;
    size_t got = 0;
    int rv;
    int rc;

    *out = NULL;
    *n = 0;
    evs = calloc(max > 0 ? max : 1, sizeof *evs);
    if (evs == NULL) {
        return STORE_NOMEM;
    }
    rv = store_read_begin(s, &txn);
    if (rv != 0) {
        free(evs);
        return rv;
    }
    rc = mdb_cursor_open(txn, s->dbi[STORE_DB_CLUSTER_EVENTS], &cur);
    if (rc != 0) {
        rv = store_mdb_err(s, rc, "cursor cluster_events");
        goto out_end;
    }
    /* Newest first from the end, then reverse into oldest-first order. */
    for (rc = mdb_cursor_get(cur, &k, &v, MDB_LAST); rc == 0 && got < max;
         rc = mdb_cursor_get(cur, &k, &v, MDB_PREV)) {
        evs[got] = cityops__v1__cluster_event__unpack(NULL, v.mv_size,
                                                      v.mv_data);
        if (evs[got] == NULL) {
            rv = store_errf(s, STORE_CORRUPT, "cluster event does not decode");
            break;
        }
        got++;
    }
    mdb_cursor_close(cur);
    for (size_t i = 0; i < got / 2; i++) {
        Cityops__V1__ClusterEvent *t = evs[i];
        evs[i] = evs[got - 1 - i];
        evs[got - 1 - i] = t;
    }
out_end:
    store_read_end(s, txn);
    if (rv != 0) {
        store_msgs_free((ProtobufCMessage **)evs, got);
        return rv;
    }
    *out = evs;
    *n = got;
    return 0;
}
