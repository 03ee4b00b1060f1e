/* Applying one Raft entry: a packed CommandBatch, in one write transaction
 * that also records the entry's index and the latest command time.
 *
 * Determinism: apply reads only the batch and the database (no clock, no
 * randomness), so every replica that applies the same log ends with the same
 * bytes. Business errors become CommandResults; each command runs in a
 * nested transaction that is discarded unless it succeeds, so a refused
 * command leaves no trace but its result (and its retry-key record).
 *
 * De-duplication: a command with a client_id and seq > 0 stores (seq,
 * result) under sessions[client_id]. The same seq again returns the stored
 * result and applies nothing; a lower seq is refused as ALREADY_EXISTS.
 *
 * Audit: every command of a decoded batch appends one AuditRecord (audit.c)
 * in the batch's transaction but outside the command's nested one, so
 * refusals and replayed retries are recorded too. An undecodable batch has
 * no command and records nothing.
 *
 * Archive: after the transaction commits, the entry is appended to the
 * command archive (archive.c) if one is configured; that append never fails
 * the entry. A drill may inject a fault (store_fault_set()): every entry is
 * then refused before its transaction begins, as a full disk would.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store_internal.h"

void store_results_free(struct store_results *r)
{
    if (r == NULL) {
        return;
    }
    for (size_t i = 0; i < r->n; i++) {
        if (r->results[i] != NULL) {
            cityops__v1__command_result__free_unpacked(r->results[i], NULL);
        }
    }
    free(r->results);
    r->results = NULL;
    r->n = 0;
}

static Cityops__V1__CommandResult *result_new(void)
{
    Cityops__V1__CommandResult *res = malloc(sizeof(*res));

    if (res != NULL) {
        cityops__v1__command_result__init(res);
    }
    return res;
}

/* Look up the retry key. *seq = 0 when the client is unknown; otherwise
 * *stored is the first result (malloc'd) when seq matches. */
static int session_get(struct store *s,
                       MDB_txn *txn,
                       const char *client_id,
                       uint64_t *seq,
                       MDB_val *stored)
{
    MDB_val key = {strlen(client_id), (void *)client_id};
    MDB_val val;
    int rc;

    *seq = 0;
    rc = mdb_get(txn, s->dbi[STORE_DB_SESSIONS], &key, &val);
    if (rc == MDB_NOTFOUND) {
        return 0;
    }
    if (rc != 0) {
        return store_mdb_err(s, rc, "get session/%s", client_id);
    }
    if (val.mv_size < 8) {
        return store_errf(s, STORE_CORRUPT, "session/%s: %zu bytes", client_id,
                          val.mv_size);
    }
    *seq = store_be64_get(val.mv_data);
    stored->mv_size = val.mv_size - 8;
    stored->mv_data = (uint8_t *)val.mv_data + 8;
    return 0;
}

static int session_put(struct store *s,
                       MDB_txn *txn,
                       const char *client_id,
                       uint64_t seq,
                       const Cityops__V1__CommandResult *res)
{
    MDB_val key = {strlen(client_id), (void *)client_id};
    MDB_val val;
    int rc;

    val.mv_size = 8 + cityops__v1__command_result__get_packed_size(res);
    val.mv_data = malloc(val.mv_size);
    if (val.mv_data == NULL) {
        return store_errf(s, STORE_NOMEM, "put session/%s: out of memory",
                          client_id);
    }
    store_be64_put(val.mv_data, seq);
    cityops__v1__command_result__pack(res, (uint8_t *)val.mv_data + 8);
    rc = mdb_put(txn, s->dbi[STORE_DB_SESSIONS], &key, &val, 0);
    free(val.mv_data);
    if (rc != 0) {
        return store_mdb_err(s, rc, "put session/%s", client_id);
    }
    return 0;
}

/* Run the state machine in a nested transaction, kept only on success.
 * A command that is refused before it writes anything runs in @txn itself:
 * a nested transaction costs more than the REPORT it would wrap (its
 * begin, the copy of every page it touches and the merge into @txn). */
static int command_run(struct store *s,
                       MDB_txn *txn,
                       uint64_t index,
                       const Cityops__V1__Command *cmd,
                       struct audit_tree *tree,
                       Cityops__V1__CommandResult *res)
{
    MDB_txn *child;
    int rv;
    int rc;

    if (case_fsm_unnested(cmd)) {
        return case_fsm_apply(s, txn, index, cmd, res);
    }
    rc = mdb_txn_begin(s->env, txn, 0, &child);
    if (rc != 0) {
        return store_mdb_err(s, rc, "begin nested txn at %llu",
                             (unsigned long long)index);
    }
    if (cluster_op(cmd)) {
        rv = cluster_apply(s, child, index, cmd, res);
    } else if (config_op(cmd)) {
        rv = config_apply(s, child, index, cmd, res);
    } else if (public_op(cmd)) {
        rv = public_apply(s, child, index, cmd, res);
    } else if (audit_op(cmd)) {
        rv = audit_apply(s, child, index, cmd, tree, res);
    } else if (fed_op(cmd)) {
        rv = fed_apply(s, child, index, cmd, res);
    } else {
        rv = case_fsm_apply(s, child, index, cmd, res);
    }
    if (rv != 0 || res->code != CITYOPS__V1__RESULT_CODE__RESULT_OK) {
        mdb_txn_abort(child);
        return rv;
    }
    rc = mdb_txn_commit(child);
    if (rc != 0) {
        return store_mdb_err(s, rc, "commit nested txn at %llu",
                             (unsigned long long)index);
    }
    return 0;
}

/* Apply @cmd; *replayed = 1 if its result came from the session cache. */
static int command_apply(struct store *s,
                         MDB_txn *txn,
                         uint64_t index,
                         const Cityops__V1__Command *cmd,
                         struct audit_tree *tree,
                         Cityops__V1__CommandResult **out,
                         int *replayed)
{
    Cityops__V1__CommandResult *res;
    const char *client = cmd->client_id != NULL ? cmd->client_id : "";
    int keyed = client[0] != '\0' && cmd->seq > 0;
    uint64_t last_seq = 0;
    MDB_val stored;
    char msg[128];
    int rv;

    res = result_new();
    if (res == NULL) {
        return store_errf(s, STORE_NOMEM, "apply %llu: out of memory",
                          (unsigned long long)index);
    }
    res->index = index;
    *replayed = 0;
    if (keyed && strlen(client) > STORE_MAX_ID) {
        rv = store_result_fail(res, CITYOPS__V1__RESULT_CODE__RESULT_INVALID_ARGUMENT,
                         "client_id too long");
        goto done;
    }
    if (keyed) {
        rv = session_get(s, txn, client, &last_seq, &stored);
        if (rv != 0) {
            goto err_free_result;
        }
    }
    if (keyed && last_seq != 0 && cmd->seq == last_seq) {
        cityops__v1__command_result__free_unpacked(res, NULL);
        res = cityops__v1__command_result__unpack(NULL, stored.mv_size,
                                                  stored.mv_data);
        if (res == NULL) {
            return store_errf(s, STORE_CORRUPT, "decode session/%s", client);
        }
        *out = res;
        *replayed = 1;
        return 0;
    }
    if (keyed && cmd->seq < last_seq) {
        snprintf(msg, sizeof(msg), "stale retry key: seq %llu < last %llu",
                 (unsigned long long)cmd->seq, (unsigned long long)last_seq);
        rv = store_result_fail(res, CITYOPS__V1__RESULT_CODE__RESULT_ALREADY_EXISTS,
                         msg);
        goto done;
    }
    rv = command_run(s, txn, index, cmd, tree, res);
    if (rv != 0) {
        goto err_free_result;
    }
    if (keyed) {
        rv = session_put(s, txn, client, cmd->seq, res);
    }
done:
    if (rv != 0) {
        goto err_free_result;
    }
    *out = res;
    return 0;

err_free_result:
    cityops__v1__command_result__free_unpacked(res, NULL);
    if (rv == STORE_NOMEM) {
        store_errf(s, rv, "apply %llu: out of memory",
                   (unsigned long long)index);
    }
    return rv;
}

/* Apply one command and append its audit record. */
static int command_audited(struct store *s,
                           MDB_txn *txn,
                           uint64_t index,
                           const Cityops__V1__Command *cmd,
                           struct audit_tree *tree,
                           Cityops__V1__CommandResult **out)
{
    struct audit_target target;
    int replayed;
    int rv;

    rv = audit_target_begin(s, txn, index, cmd, tree, &target);
    if (rv != 0) {
        return rv;
    }
    rv = command_apply(s, txn, index, cmd, tree, out, &replayed);
    if (rv != 0) {
        return rv;
    }
    /* *out stays in the caller's results, freed with them on failure. */
    return audit_append(s, txn, index, cmd, tree, &target, *out, replayed);
}

static int batch_apply(struct store *s,
                       MDB_txn *txn,
                       uint64_t index,
                       const Cityops__V1__CommandBatch *batch,
                       struct store_results *out)
{
    struct audit_tree tree;
    uint64_t last_time;
    int rv;

    rv = store_meta_get(s, txn, STORE_META_LAST_TIME, &last_time);
    if (rv != 0) {
        return rv;
    }
    if (batch->n_commands > 0) {
        out->results = calloc(batch->n_commands, sizeof(*out->results));
        if (out->results == NULL) {
            return store_errf(s, STORE_NOMEM, "apply %llu: out of memory",
                              (unsigned long long)index);
        }
    }
    rv = audit_tree_load(s, txn, &tree);
    if (rv != 0) {
        return rv;
    }
    for (size_t i = 0; i < batch->n_commands; i++) {
        const Cityops__V1__Command *cmd = batch->commands[i];

        rv = command_audited(s, txn, index, cmd, &tree, &out->results[i]);
        if (out->results[i] != NULL) {
            out->n = i + 1;
        }
        if (rv != 0) {
            goto out_release_tree;
        }
        if (cmd->time > (int64_t)last_time) {
            last_time = (uint64_t)cmd->time;
        }
    }
    rv = audit_tree_save(s, txn, &tree);
    if (rv == 0) {
        rv = store_meta_put(s, txn, STORE_META_LAST_TIME, last_time);
    }
out_release_tree:
    audit_tree_release(&tree);
    return rv;
}

int store_apply_batch(struct store *s,
                      uint64_t index,
                      const void *buf,
                      size_t len,
                      struct store_results *out)
{
    Cityops__V1__CommandBatch *batch;
    uint64_t applied;
    MDB_txn *txn;
    int rv;
    int rc;

    memset(out, 0, sizeof(*out));
    rv = atomic_load(&s->fault);
    if (rv != 0) {
        return store_errf(s, rv, "apply %llu: injected by a drill",
                          (unsigned long long)index);
    }
    if (s->env == NULL) {
        return store_errf(s, STORE_IOERR, "apply %llu: environment closed",
                          (unsigned long long)index);
    }
    rc = mdb_txn_begin(s->env, NULL, 0, &txn);
    if (rc != 0) {
        return store_mdb_err(s, rc, "apply %llu: begin txn",
                             (unsigned long long)index);
    }
    rv = store_meta_get(s, txn, STORE_META_APPLIED, &applied);
    if (rv != 0) {
        goto err_abort_txn;
    }
    if (index <= applied) {
        mdb_txn_abort(txn);
        out->skipped = 1;
        return 0;
    }
    batch = cityops__v1__command_batch__unpack(NULL, len, buf);
    if (batch != NULL) {
        rv = batch_apply(s, txn, index, batch, out);
        cityops__v1__command_batch__free_unpacked(batch, NULL);
        if (rv != 0) {
            goto err_abort_txn_free_results;
        }
    }
    rv = store_meta_put(s, txn, STORE_META_APPLIED, index);
    if (rv != 0) {
        goto err_abort_txn_free_results;
    }
    /* A failed commit frees the txn: skip the abort. */
    rc = mdb_txn_commit(txn);
    if (rc != 0) {
        rv = store_mdb_err(s, rc, "apply %llu: commit",
                           (unsigned long long)index);
        goto err_free_results;
    }
    if (s->archive != NULL) {
        archive_append(s, applied, index, buf, len);
    }
    return 0;

err_abort_txn_free_results:
    mdb_txn_abort(txn);
err_free_results:
    store_results_free(out);
    return rv;

err_abort_txn:
    mdb_txn_abort(txn);
    return rv;
}
