/* A node's lifetime: open the store, start Raft, open channels to the other
 * members, serve gRPC; and the reverse on stop.
 *
 * Data directory layout: <data_dir>/store (LMDB environment) and
 * <data_dir>/raft (Raft log, snapshots, metadata). */
#include <errno.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "proto/clog.h"
#include "node_internal.h"

void node_method_add(struct node *n,
                     const char *path,
                     const ProtobufCMessageDescriptor *request,
                     const ProtobufCMessageDescriptor *response,
                     rpc_handler_fn handler,
                     int op)
{
    size_t i = n->n_methods++;

    /* A programmer error: the tables are fixed at build time. */
    if (i >= NODE_MAX_METHODS) {
        clog(CLOG_ERROR, "node", "too many methods (max %d)",
             NODE_MAX_METHODS);
        n->n_methods--;
        return;
    }
    n->handlers[i].n = n;
    n->handlers[i].op = op;
    n->methods[i].path = path;
    n->methods[i].request = request;
    n->methods[i].response = response;
    n->methods[i].handler = handler;
    n->methods[i].data = &n->handlers[i];
}

static int make_dir(const char *path)
{
    if (mkdir(path, 0750) != 0 && errno != EEXIST) {
        clog(CLOG_ERROR, "node", "mkdir %s: %s", path, strerror(errno));
        return NODE_START;
    }
    return 0;
}

int node_make_dirs(const char *dir)
{
    char path[NODE_PATH_SIZE];

    snprintf(path, sizeof path, "%s", dir);
    for (char *p = path + 1; *p != '\0'; p++) {
        if (*p == '/') {
            *p = '\0';
            if (make_dir(path) != 0) {
                return NODE_START;
            }
            *p = '/';
        }
    }
    return make_dir(path);
}

static int open_store(struct node *n)
{
    char path[NODE_PATH_SIZE + 16];
    struct store_options opts = {.map_size = n->cfg.map_size,
                                 .nosync = n->cfg.sync_interval_ms > 0};

    if (n->cfg.archive_dir[0] != '\0') {
        if (node_make_dirs(n->cfg.archive_dir) != 0) {
            return NODE_START;
        }
        opts.archive_dir = n->cfg.archive_dir;
    }
    int rv;

    snprintf(path, sizeof path, "%s/store", n->cfg.data_dir);
    if (make_dir(n->cfg.data_dir) != 0 || make_dir(path) != 0) {
        return NODE_START;
    }
    rv = store_open(path, &opts, &n->store);
    if (rv != 0) {
        clog(CLOG_ERROR, "node",
             "cannot open the store in %s: %s; check the directory, its "
             "permissions and that no other cityopsd uses it",
             path, store_strerror(rv));
        return NODE_START;
    }
    clog(CLOG_INFO, "node", "store %s open, applied index %llu", path,
         (unsigned long long)store_applied_index(n->store));
    return 0;
}

static void hook_zone_of(void *data, uint64_t id, char *zone, size_t size)
{
    node_member_zone(data, id, zone, size);
}

/* The leader changed the membership by itself (auto-promotion): record it. */
static void hook_decision(void *data, const char *kind, const char *detail)
{
    struct node *n = data;
    char actor[32];

    snprintf(actor, sizeof actor, "leader-%llu",
             (unsigned long long)n->cfg.id);
    node_cluster_event(n, actor, CITYOPS__V1__ROLE__ROLE_SYSTEM, kind, detail);
}

static int start_cons(struct node *n, const struct node_dr_start *st)
{
    char path[NODE_PATH_SIZE + 16];
    struct cons_member members[CONS_MAX_MEMBERS];
    struct cons_config cc;
    int rv;

    snprintf(path, sizeof path, "%s/raft", n->cfg.data_dir);
    if (make_dir(path) != 0) {
        return NODE_START;
    }
    memset(members, 0, sizeof members);
    for (size_t i = 0; i < n->cfg.n_members; i++) {
        members[i].id = n->cfg.members[i].id;
        snprintf(members[i].raft_address, sizeof members[i].raft_address,
                 "%s", n->cfg.members[i].raft_address);
        members[i].role = n->cfg.members[i].role;
        snprintf(members[i].zone, sizeof members[i].zone, "%s",
                 n->cfg.members[i].zone);
    }
    memset(&cc, 0, sizeof cc);
    cc.id = n->cfg.id;
    cc.raft_address = n->cfg.raft_address;
    cc.dir = path;
    cc.members = members;
    cc.n_members = st->join ? 0 : n->cfg.n_members;
    if (st->alone) {
        /* restored from a backup: a new cluster of this node alone */
        memset(members, 0, sizeof members);
        members[0].id = n->cfg.id;
        snprintf(members[0].raft_address, sizeof members[0].raft_address,
                 "%s", n->cfg.raft_address);
        members[0].role = CONS_VOTER;
        cc.n_members = 1;
    }
    cc.recover = st->recover;
    /* until its first snapshot, the log of a restored node does not
     * describe its state (restore.marker stays until then) */
    cc.snapshot_first = st->alone;
    cc.heartbeat_ms = n->cfg.heartbeat_ms;
    cc.election_ms = n->cfg.election_ms;
    cc.snapshot_threshold = n->cfg.snapshot_threshold;
    cc.snapshot_trailing = n->cfg.snapshot_trailing;
    cc.log_budget = (uint64_t)n->cfg.log_budget_mb << 20;
    cc.snapshot_stagger = n->cfg.snapshot_stagger;
    cc.snapshot_full = n->cfg.snapshot_full;
    cc.max_batch = n->cfg.max_batch;
    cc.store = n->store;
    cc.auto_promote_ms = n->cfg.auto_promote_ms;
    cc.sync_interval_ms = n->cfg.sync_interval_ms;
    cc.one_voter_per_zone = n->cfg.one_voter_per_zone;
    cc.hooks.data = n;
    cc.hooks.zone_of = hook_zone_of;
    cc.hooks.decision = hook_decision;
    cc.hooks.leader_ready = node_dr_leader_ready;
    rv = cons_start(&cc, &n->cons);
    if (rv != 0) {
        clog(CLOG_ERROR, "node", "cannot start raft on %s: %s",
             n->cfg.raft_address, cons_strerror(rv));
        return NODE_START;
    }
    return 0;
}

static int open_peers(struct node *n)
{
    for (size_t i = 0; i < n->cfg.n_members; i++) {
        if (n->cfg.members[i].id == n->cfg.id) {
            continue;
        }
        n->peers[i] = rpc_channel_open(n->cfg.members[i].grpc_address);
        if (n->peers[i] == NULL) {
            return NODE_NOMEM;
        }
    }
    return 0;
}

int node_start(const struct node_config *cfg, struct node **out, int *grpc_port)
{
    struct rpc_server_config sc;
    struct node_dr_start st;
    struct node *n;
    int rv;

    if (node_dr_prepare(cfg, &st) != 0) {
        return NODE_START;
    }
    n = calloc(1, sizeof *n);
    if (n == NULL) {
        return NODE_NOMEM;
    }
    n->cfg = *cfg;
    pthread_mutex_init(&n->book_lock, NULL);
    pthread_mutex_init(&n->fault_lock, NULL);
    pthread_cond_init(&n->fault_cond, NULL);
    if (node_member_find(n, cfg->id) == NULL) {
        clog(CLOG_INFO, "node",
             "node %llu is not among the [cluster] members: it starts empty "
             "and joins when an operator adds it (cityctl cluster add)",
             (unsigned long long)cfg->id);
    }
    rv = open_store(n);
    if (rv != 0) {
        goto err_free;
    }
    rv = start_cons(n, &st);
    if (rv != 0) {
        goto err_close_store;
    }
    node_dr_started(n, &st);
    rv = open_peers(n);
    if (rv != 0) {
        goto err_close_peers;
    }
    rv = node_reader_start(n);
    if (rv != 0) {
        goto err_close_peers;
    }
    rv = node_backups_start(n, &n->backups);
    if (rv != 0) {
        goto err_stop_reader;
    }
    node_write_methods_add(n);
    node_read_methods_add(n);
    node_status_methods_add(n);
    node_membership_methods_add(n);
    node_audit_methods_add(n);
    node_dr_methods_add(n);
    node_backup_methods_add(n);
    node_eval_methods_add(n);
    node_admin_methods_add(n);
    node_public_methods_add(n);
    node_fed_methods_add(n);
    memset(&sc, 0, sizeof sc);
    sc.address = cfg->grpc_address;
    sc.methods = n->methods;
    sc.n_methods = n->n_methods;
    rv = rpc_server_start(&sc, &n->rpc, grpc_port);
    if (rv != 0) {
        rv = NODE_START;
        goto err_stop_reader;
    }
    rv = node_signer_start(n, &n->signer);
    if (rv != 0) {
        goto err_stop_rpc;
    }
    rv = node_ticker_start(n, &n->ticker);
    if (rv != 0) {
        node_signer_stop(n->signer);
        goto err_stop_rpc;
    }
    rv = node_http311_start(n, *grpc_port, &n->http311);
    if (rv != 0) {
        node_ticker_stop(n->ticker);
        node_signer_stop(n->signer);
        goto err_stop_rpc;
    }
    rv = node_fed_start(n, &n->fed);
    if (rv != 0) {
        node_fed_stop(n->fed);
        node_http311_stop(n->http311);
        node_ticker_stop(n->ticker);
        node_signer_stop(n->signer);
        goto err_stop_rpc;
    }
    *out = n;
    return 0;

err_stop_rpc:
    rpc_server_shutdown(n->rpc);
    cons_stop(n->cons);
    n->cons = NULL;
    node_reader_stop(n);
    rpc_server_destroy(n->rpc, 0);
    node_backups_stop(n->backups);
    node_peers_close(n);
    store_close(n->store);
    pthread_mutex_destroy(&n->book_lock);
    pthread_cond_destroy(&n->fault_cond);
    pthread_mutex_destroy(&n->fault_lock);
    free(n);
    return rv;

err_stop_reader:
    cons_stop(n->cons);
    n->cons = NULL;
    node_reader_stop(n);
    node_backups_stop(n->backups);
    node_peers_close(n);
    store_close(n->store);
    goto err_free;

err_close_peers:
    node_peers_close(n);
    cons_stop(n->cons);
    node_reader_stop(n);
err_close_store:
    store_close(n->store);
err_free:
    pthread_mutex_destroy(&n->book_lock);
    pthread_cond_destroy(&n->fault_cond);
    pthread_mutex_destroy(&n->fault_lock);
    free(n);
    return rv;
}

int node_stop(struct node *n)
{
    int restart = n->restart;

    clog(CLOG_INFO, "node", "stopping");
    /* Close the gate first (no handler runs after this), then stop Raft:
     * pending proposals are answered UNAVAILABLE, so the server's calls all
     * finish within its grace period. */
    node_http311_stop(n->http311); /* it calls gRPC: before the server */
    node_fed_stop(n->fed);         /* it proposes: before Raft */
    node_faults_quiesce(n);        /* drill faults use store and Raft */
    node_signer_stop(n->signer); /* it proposes: stop it before Raft */
    node_ticker_stop(n->ticker);
    rpc_server_shutdown(n->rpc);
    cons_stop(n->cons);
    node_reader_stop(n); /* runs the reads barriers handed over, then ends */
    if (rpc_server_destroy(n->rpc, 2000) != 0) {
        /* Calls still in flight may yet touch the node: leave it be; the
         * process is exiting. */
        clog(CLOG_WARN, "node", "stopped with calls in flight");
        return restart;
    }
    node_backups_stop(n->backups); /* it reads the store: before closing it */
    node_ticker_free(n->ticker);
    node_fed_free(n->fed);
    node_peers_close(n);
    store_close(n->store);
    pthread_mutex_destroy(&n->book_lock);
    pthread_cond_destroy(&n->fault_cond);
    pthread_mutex_destroy(&n->fault_lock);
    free(n);
    return restart;
}
