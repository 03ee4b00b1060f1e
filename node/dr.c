/* Disaster recovery on the node: the cluster id, quorum-loss recovery and
 * reset (Recovery service), and drills (Drill service: records, history,
 * fault injection).
 *
 * Recover and Reset change what the next start does (files in the data
 * directory, see node_internal.h) and then restart the process in place:
 * raft_recover must run between raft_init and raft_start, and a reset must
 * move the store and the log while nothing has them open. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cityops/v1/dr.pb-c.h"
#include "proto/clog.h"
#include "node_internal.h"
#include "proto/deadline_ts.h"

#define DR_RECOVER_PLAN "recover.plan"
#define DR_RECOVER_DONE "recover.done"
#define DR_RESET_PLAN "reset.plan"
#define DR_JOIN_MARK "join.marker"
#define DR_RESTORE_MARK "restore.marker"
#define DR_RESTORE_DONE "restore.done"
#define DR_MAX_FAULT_MS 600000

enum { DR_READ_HISTORY = NODE_READ_DR };

static int path_join(char *buf, size_t size, const char *dir, const char *f)
{
    return snprintf(buf, size, "%s/%s", dir, f) < (int)size ? 0 : -1;
}

static int file_exists(const char *dir, const char *f)
{
    char path[NODE_PATH_SIZE + 32];
    struct stat st;

    return path_join(path, sizeof path, dir, f) == 0 && stat(path, &st) == 0;
}

static int dir_sync(const char *dir)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    int rv;

    if (fd < 0) {
        return -1;
    }
    rv = fsync(fd);
    close(fd);
    return rv;
}

/* Write @text to <dir>/<name> durably (temp file, fsync, rename). */
static int plan_write(const char *dir, const char *name, const char *text)
{
    char tmp[NODE_PATH_SIZE + 32];
    char path[NODE_PATH_SIZE + 32];
    size_t len = strlen(text);
    int fd;

    if (path_join(tmp, sizeof tmp, dir, "plan.tmp") != 0 ||
        path_join(path, sizeof path, dir, name) != 0) {
        return -1;
    }
    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
    if (fd < 0) {
        return -1;
    }
    if (write(fd, text, len) != (ssize_t)len || fsync(fd) != 0) {
        close(fd);
        unlink(tmp);
        return -1;
    }
    close(fd);
    if (rename(tmp, path) != 0) {
        unlink(tmp);
        return -1;
    }
    return dir_sync(dir);
}

static void utc_stamp(char *buf, size_t size)
{
    time_t now = time(NULL);
    struct tm tm;

    gmtime_r(&now, &tm);
    strftime(buf, size, "%Y%m%dT%H%M%SZ", &tm);
}

/* reset.plan: move store/ and raft/ into pre-recover-<time>/, then mark the
 * node as a joiner. */
static int reset_carry_out(const struct node_config *cfg)
{
    char aside[NODE_PATH_SIZE + 64];
    char from[NODE_PATH_SIZE + 32];
    char to[NODE_PATH_SIZE + 96];
    char plan[NODE_PATH_SIZE + 32];
    char stamp[32];
    static const char *const parts[] = {"store", "raft"};

    utc_stamp(stamp, sizeof stamp);
    snprintf(aside, sizeof aside, "%s/pre-recover-%s", cfg->data_dir, stamp);
    if (mkdir(aside, 0750) != 0 && errno != EEXIST) {
        clog(CLOG_ERROR, "dr", "reset: mkdir %s: %s", aside, strerror(errno));
        return NODE_START;
    }
    for (size_t i = 0; i < sizeof parts / sizeof parts[0]; i++) {
        snprintf(from, sizeof from, "%s/%s", cfg->data_dir, parts[i]);
        snprintf(to, sizeof to, "%s/%s", aside, parts[i]);
        if (rename(from, to) != 0 && errno != ENOENT) {
            clog(CLOG_ERROR, "dr", "reset: move %s to %s: %s", from, to,
                 strerror(errno));
            return NODE_START;
        }
    }
    if (plan_write(cfg->data_dir, DR_JOIN_MARK,
                   "reset: wait to be added to the recovered cluster\n") !=
        0) {
        clog(CLOG_ERROR, "dr", "reset: cannot write %s/%s: %s", cfg->data_dir,
             DR_JOIN_MARK, strerror(errno));
        return NODE_START;
    }
    path_join(plan, sizeof plan, cfg->data_dir, DR_RESET_PLAN);
    unlink(plan);
    dir_sync(cfg->data_dir);
    clog(CLOG_WARN, "dr",
         "reset: the old store and Raft log are kept in %s; this node starts "
         "empty and waits to be added (cityctl cluster add)",
         aside);
    return 0;
}

/* A snapshot in <data_dir>/raft (libraft's uv files "snapshot-*"). */
static int raft_has_snapshot(const char *data_dir)
{
    char path[NODE_PATH_SIZE + 16];
    struct dirent *e;
    DIR *d;
    int found = 0;

    snprintf(path, sizeof path, "%s/raft", data_dir);
    d = opendir(path);
    if (d == NULL) {
        return 0;
    }
    while (!found && (e = readdir(d)) != NULL) {
        found = strncmp(e->d_name, "snapshot-", 9) == 0;
    }
    closedir(d);
    return found;
}

int node_dr_prepare(const struct node_config *cfg, struct node_dr_start *out)
{
    memset(out, 0, sizeof *out);
    if (mkdir(cfg->data_dir, 0750) != 0 && errno != EEXIST) {
        clog(CLOG_ERROR, "node", "mkdir %s: %s", cfg->data_dir,
             strerror(errno));
        return NODE_START;
    }
    if (file_exists(cfg->data_dir, DR_RESET_PLAN) &&
        reset_carry_out(cfg) != 0) {
        return NODE_START;
    }
    out->join = file_exists(cfg->data_dir, DR_JOIN_MARK);
    out->recover = file_exists(cfg->data_dir, DR_RECOVER_PLAN);
    out->alone = file_exists(cfg->data_dir, DR_RESTORE_MARK);
    if (out->alone && raft_has_snapshot(cfg->data_dir)) {
        char from[NODE_PATH_SIZE + 32];
        char to[NODE_PATH_SIZE + 32];

        /* the restored state is in a snapshot now: an ordinary node */
        path_join(from, sizeof from, cfg->data_dir, DR_RESTORE_MARK);
        path_join(to, sizeof to, cfg->data_dir, DR_RESTORE_DONE);
        if (rename(from, to) == 0) {
            dir_sync(cfg->data_dir);
            out->alone = 0;
        }
    }
    if (out->alone) {
        clog(CLOG_WARN, "dr", "%s/%s: restored from a backup; bootstrapping "
                              "a new cluster of this node alone",
             cfg->data_dir, DR_RESTORE_MARK);
    }
    if (out->join) {
        clog(CLOG_INFO, "dr", "%s/%s: this node does not bootstrap; it "
                              "waits to be added",
             cfg->data_dir, DR_JOIN_MARK);
    }
    if (out->recover) {
        clog(CLOG_WARN, "dr", "%s/%s: quorum-loss recovery at this start",
             cfg->data_dir, DR_RECOVER_PLAN);
    }
    return 0;
}

void node_dr_started(struct node *n, const struct node_dr_start *st)
{
    char from[NODE_PATH_SIZE + 32];
    char to[NODE_PATH_SIZE + 32];

    if (!st->recover) {
        return;
    }
    path_join(from, sizeof from, n->cfg.data_dir, DR_RECOVER_PLAN);
    path_join(to, sizeof to, n->cfg.data_dir, DR_RECOVER_DONE);
    if (rename(from, to) != 0) {
        clog(CLOG_WARN, "dr", "rename %s: %s (the next start would recover "
                              "again: remove it)",
             from, strerror(errno));
    }
    dir_sync(n->cfg.data_dir);
    n->dr_recovered = 1;
}

void node_restart_request(struct node *n)
{
    n->restart = 1;
    kill(getpid(), SIGTERM);
}

/* --- the cluster id and the recovery record, proposed by a new leader --- */

struct dr_init {
    struct node *n;
    Cityops__V1__Command cmd;
    Cityops__V1__ClusterInit init;
    char id[40];
};

static void init_done(void *arg,
                      int rv,
                      const Cityops__V1__CommandResult *result,
                      uint64_t leader_id)
{
    struct dr_init *d = arg;

    (void)leader_id;
    if (rv == 0 && result->code == CITYOPS__V1__RESULT_CODE__RESULT_OK) {
        clog(CLOG_INFO, "dr", "cluster id %s", d->id);
    } else if (rv != 0) {
        clog(CLOG_WARN, "dr", "setting the cluster id: %s (the next leader "
                              "retries)",
             cons_strerror(rv));
    }
    d->n->dr_init_inflight = 0;
    free(d);
}

static void cluster_id_propose(struct node *n)
{
    uint8_t r[16];
    struct dr_init *d;

    if (n->dr_init_inflight || getrandom(r, sizeof r, 0) != sizeof r) {
        return;
    }
    d = calloc(1, sizeof *d);
    if (d == NULL) {
        return;
    }
    r[6] = (uint8_t)((r[6] & 0x0f) | 0x40); /* a version 4 UUID */
    r[8] = (uint8_t)((r[8] & 0x3f) | 0x80);
    snprintf(d->id, sizeof d->id,
             "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-"
             "%02x%02x%02x%02x%02x%02x",
             r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8], r[9],
             r[10], r[11], r[12], r[13], r[14], r[15]);
    d->n = n;
    cityops__v1__cluster_init__init(&d->init);
    d->init.cluster_id = d->id;
    cityops__v1__command__init(&d->cmd);
    d->cmd.actor_id = "cityopsd";
    d->cmd.role = CITYOPS__V1__ROLE__ROLE_SYSTEM;
    d->cmd.op_case = CITYOPS__V1__COMMAND__OP_CLUSTER_INIT;
    d->cmd.cluster_init = &d->init;
    n->dr_init_inflight = 1;
    if (cons_submit(n->cons, &d->cmd, n->cfg.write_wait_ms, init_done, d) !=
        0) {
        n->dr_init_inflight = 0;
        free(d);
    }
}

void node_dr_leader_ready(void *data)
{
    struct node *n = data;
    char id[STORE_CLUSTER_ID_SIZE] = "";
    char actor[32];
    char detail[160];

    if (store_cluster_id(n->store, id, NULL) == 0 && id[0] == '\0') {
        cluster_id_propose(n);
    }
    if (n->dr_recovered) {
        n->dr_recovered = 0;
        snprintf(actor, sizeof actor, "node-%llu",
                 (unsigned long long)n->cfg.id);
        snprintf(detail, sizeof detail,
                 "quorum-loss recovery: the configuration was rewritten to "
                 "node %llu alone; the other survivors are added back",
                 (unsigned long long)n->cfg.id);
        node_cluster_event(n, actor, CITYOPS__V1__ROLE__ROLE_SYSTEM,
                           "recover", detail);
    }
}

/* --- Recovery service --- */

static int require_admin(struct rpc_call *call,
                         const Cityops__V1__RequestContext *ctx)
{
    if (ctx == NULL || ctx->actor_id == NULL || ctx->actor_id[0] == '\0') {
        rpc_call_fail(call, GRPC_STATUS_INVALID_ARGUMENT,
                      "ctx.actor_id is required");
        return -1;
    }
    if (ctx->role != CITYOPS__V1__ROLE__ROLE_ADMIN) {
        rpc_call_fail(call, GRPC_STATUS_PERMISSION_DENIED,
                      "this operation needs role ADMIN");
        return -1;
    }
    return 0;
}

/* Refuse to tear a working cluster apart: a node that knows a leader (or
 * is one) is in a cluster with a quorum. */
static int require_no_leader(struct node *n, struct rpc_call *call, int force)
{
    struct cons_status cs;
    char msg[200];

    cons_status_get(n->cons, &cs);
    if (force || (cs.state != CONS_STATE_LEADER && cs.leader_id == 0)) {
        return 0;
    }
    snprintf(msg, sizeof msg,
             "node %llu sees leader %llu (term %llu): the cluster has a "
             "quorum; replace lost members with cluster remove/add instead "
             "(or force)",
             (unsigned long long)n->cfg.id,
             (unsigned long long)(cs.state == CONS_STATE_LEADER
                                      ? n->cfg.id
                                      : cs.leader_id),
             (unsigned long long)cs.term);
    rpc_call_fail(call, GRPC_STATUS_FAILED_PRECONDITION, msg);
    return -1;
}

static void recovery_reply(struct rpc_call *call,
                           const char *message,
                           const char *moved_to)
{
    Cityops__V1__RecoverReply reply = CITYOPS__V1__RECOVER_REPLY__INIT;

    reply.message = (char *)message;
    reply.moved_to = (char *)moved_to;
    rpc_call_reply(call, &reply.base);
}

static void recover_handle(struct rpc_call *call,
                           const ProtobufCMessage *msg,
                           void *data)
{
    const struct node_handler *h = data;
    struct node *n = h->n;
    const Cityops__V1__RecoverRequest *req =
        (const Cityops__V1__RecoverRequest *)msg;
    struct cons_status cs;
    char text[NODE_PATH_SIZE + 512];
    char stamp[32];

    if (require_admin(call, req->ctx) != 0 ||
        require_no_leader(n, call, req->force) != 0) {
        return;
    }
    cons_status_get(n->cons, &cs);
    if ((req->expect_last_index != 0 &&
         req->expect_last_index != cs.last_log_index) ||
        (req->expect_last_term != 0 &&
         req->expect_last_term != cs.last_log_term)) {
        snprintf(text, sizeof text,
                 "the log of node %llu ends at term %llu index %llu, not at "
                 "term %llu index %llu as planned: gather again "
                 "(cityctl recover)",
                 (unsigned long long)n->cfg.id,
                 (unsigned long long)cs.last_log_term,
                 (unsigned long long)cs.last_log_index,
                 (unsigned long long)req->expect_last_term,
                 (unsigned long long)req->expect_last_index);
        rpc_call_fail(call, GRPC_STATUS_FAILED_PRECONDITION, text);
        return;
    }
    utc_stamp(stamp, sizeof stamp);
    snprintf(text, sizeof text,
             "quorum-loss recovery asked by %s at %s\n"
             "log: term %llu index %llu, applied %llu\n"
             "new configuration: node %llu alone (%s)\n",
             req->ctx->actor_id, stamp, (unsigned long long)cs.last_log_term,
             (unsigned long long)cs.last_log_index,
             (unsigned long long)cs.applied_index,
             (unsigned long long)n->cfg.id, n->cfg.raft_address);
    if (plan_write(n->cfg.data_dir, DR_RECOVER_PLAN, text) != 0) {
        snprintf(text, sizeof text, "cannot write %s/%s: %s",
                 n->cfg.data_dir, DR_RECOVER_PLAN, strerror(errno));
        rpc_call_fail(call, GRPC_STATUS_INTERNAL, text);
        return;
    }
    clog(CLOG_WARN, "dr",
         "quorum-loss recovery asked by %s: restarting in place as the only "
         "voter (log term %llu index %llu)",
         req->ctx->actor_id, (unsigned long long)cs.last_log_term,
         (unsigned long long)cs.last_log_index);
    snprintf(text, sizeof text,
             "node %llu restarts in place and leads alone from term %llu "
             "index %llu; add the other members back",
             (unsigned long long)n->cfg.id,
             (unsigned long long)cs.last_log_term,
             (unsigned long long)cs.last_log_index);
    recovery_reply(call, text, "");
    node_restart_request(n);
}

static void reset_handle(struct rpc_call *call,
                         const ProtobufCMessage *msg,
                         void *data)
{
    const struct node_handler *h = data;
    struct node *n = h->n;
    const Cityops__V1__ResetRequest *req =
        (const Cityops__V1__ResetRequest *)msg;
    char text[NODE_PATH_SIZE + 200];
    char stamp[32];

    if (require_admin(call, req->ctx) != 0 ||
        require_no_leader(n, call, req->force) != 0) {
        return;
    }
    utc_stamp(stamp, sizeof stamp);
    snprintf(text, sizeof text, "reset asked by %s at %s\n",
             req->ctx->actor_id, stamp);
    if (plan_write(n->cfg.data_dir, DR_RESET_PLAN, text) != 0) {
        snprintf(text, sizeof text, "cannot write %s/%s: %s",
                 n->cfg.data_dir, DR_RESET_PLAN, strerror(errno));
        rpc_call_fail(call, GRPC_STATUS_INTERNAL, text);
        return;
    }
    clog(CLOG_WARN, "dr", "reset asked by %s: restarting in place empty",
         req->ctx->actor_id);
    snprintf(text, sizeof text, "%s/pre-recover-<UTC time>", n->cfg.data_dir);
    recovery_reply(call,
                   "the node moves its data aside and restarts empty; add it "
                   "back with cluster add",
                   text);
    node_restart_request(n);
}

/* --- Drill service --- */

static int record_reply(struct node_write *w,
                        const Cityops__V1__CommandResult *result)
{
    Cityops__V1__DrillRecordReply reply = CITYOPS__V1__DRILL_RECORD_REPLY__INIT;

    reply.index = result->index;
    rpc_call_reply(w->call, &reply.base);
    return 0;
}

static void record_handle(struct rpc_call *call,
                          const ProtobufCMessage *msg,
                          void *data)
{
    const struct node_handler *h = data;
    const Cityops__V1__DrillRecordRequest *req =
        (const Cityops__V1__DrillRecordRequest *)msg;
    const char *required = "ctx.actor_id and record are required";

    if (req->record == NULL) {
        rpc_call_fail(call, GRPC_STATUS_INVALID_ARGUMENT, required);
        return;
    }
    /* the role goes with the command: apply checks it */
    node_write_submit(h->n, call, req->ctx, required,
                      CITYOPS__V1__COMMAND__OP_DRILL_RECORD, &req->record->base,
                      sizeof(struct node_write), record_reply);
}

void node_dr_read(struct node *n, struct rpc_call *call, int kind)
{
    const Cityops__V1__DrillHistoryRequest *req =
        (const Cityops__V1__DrillHistoryRequest *)rpc_call_request(call);
    Cityops__V1__DrillHistoryResponse resp =
        CITYOPS__V1__DRILL_HISTORY_RESPONSE__INIT;
    Cityops__V1__DrillRecord **recs = NULL;
    size_t n_recs = 0;
    char msg[300];
    int rv;

    (void)kind;
    rv = store_drill_list(n->store, req->max, &recs, &n_recs);
    if (rv != 0) {
        snprintf(msg, sizeof msg, "drill history: %s",
                 store_errmsg(n->store));
        rpc_call_fail(call, node_status_from_err(rv), msg);
        return;
    }
    resp.drills = recs;
    resp.n_drills = n_recs;
    rpc_call_reply(call, &resp.base);
    for (size_t i = 0; i < n_recs; i++) {
        cityops__v1__drill_record__free_unpacked(recs[i], NULL);
    }
    free(recs);
}

/* A fault: recorded through the log first (by the leader: a follower asks
 * it with record_only), then injected here. Runs on its own thread because
 * recording may wait on the leader and disk-full lasts a while. */
struct fault {
    struct node *n;
    struct rpc_call *call;
    Cityops__V1__DrillFaultRequest *req; /* a copy: the call may be gone */
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int done;
    int rv;
    char error[256];
    Cityops__V1__Command cmd;
    Cityops__V1__ClusterEvent ev;
    char detail[300];
};

static void fault_recorded(void *arg,
                           int rv,
                           const Cityops__V1__CommandResult *result,
                           uint64_t leader_id)
{
    struct fault *f = arg;

    (void)leader_id;
    pthread_mutex_lock(&f->lock);
    f->rv = rv;
    if (rv != 0) {
        snprintf(f->error, sizeof f->error, "recording the fault: %s",
                 cons_strerror(rv));
    } else if (result->code != CITYOPS__V1__RESULT_CODE__RESULT_OK) {
        f->rv = -1;
        snprintf(f->error, sizeof f->error, "recording the fault: %s",
                 result->message);
    }
    f->done = 1;
    pthread_cond_signal(&f->cond);
    pthread_mutex_unlock(&f->lock);
}

/* Propose the "drill-fault" event here (this node leads) and wait. */
static int fault_record_local(struct fault *f)
{
    int rv;

    cityops__v1__cluster_event__init(&f->ev);
    f->ev.kind = "drill-fault";
    f->ev.detail = f->detail;
    cityops__v1__command__init(&f->cmd);
    f->cmd.actor_id = f->req->ctx->actor_id;
    f->cmd.role = CITYOPS__V1__ROLE__ROLE_ADMIN;
    f->cmd.op_case = CITYOPS__V1__COMMAND__OP_CLUSTER_EVENT;
    f->cmd.cluster_event = &f->ev;
    rv = cons_submit(f->n->cons, &f->cmd, f->n->cfg.write_wait_ms,
                     fault_recorded, f);
    if (rv != 0) {
        snprintf(f->error, sizeof f->error, "recording the fault: %s",
                 cons_strerror(rv));
        return rv;
    }
    pthread_mutex_lock(&f->lock);
    while (!f->done) {
        pthread_cond_wait(&f->cond, &f->lock);
    }
    pthread_mutex_unlock(&f->lock);
    return f->rv;
}

/* Ask the leader to record it (record_only). */
static int fault_record_remote(struct fault *f, uint64_t leader_id)
{
    struct rpc_channel *ch = node_peer_channel(f->n, leader_id);
    Cityops__V1__DrillFaultRequest req = *f->req;
    ProtobufCMessage *resp = NULL;
    grpc_status_code status = GRPC_STATUS_UNKNOWN;
    char *details = NULL;
    int rv;

    if (ch == NULL) {
        snprintf(f->error, sizeof f->error,
                 "recording the fault: no channel to leader %llu",
                 (unsigned long long)leader_id);
        return -1;
    }
    req.record_only = 1;
    req.node_id = f->n->cfg.id;
    rv = rpc_call_unary(ch, "/cityops.v1.Drill/Fault", &req.base,
                        &cityops__v1__drill_fault_reply__descriptor,
                        (int)f->n->cfg.write_wait_ms, &resp, &status,
                        &details);
    if (rv == 0 && status == GRPC_STATUS_OK) {
        protobuf_c_message_free_unpacked(resp, NULL);
        return 0;
    }
    snprintf(f->error, sizeof f->error,
             "recording the fault on leader %llu: %s: %s",
             (unsigned long long)leader_id, rpc_status_name(status),
             details != NULL ? details : "call failed");
    free(details);
    return -1;
}

static void fault_inject(struct fault *f)
{
    struct node *n = f->n;
    const char *fault = f->req->fault;
    unsigned ms = f->req->duration_ms;

    clog(CLOG_WARN, "dr", "drill %s: injecting %s (%u ms)",
         f->req->drill_id, fault, ms);
    if (strcmp(fault, "crash") == 0) {
        usleep(100 * 1000); /* let the reply leave */
        raise(SIGKILL);
    } else if (strcmp(fault, "pause") == 0) {
        cons_stall(n->cons, ms);
    } else {
        struct timespec until;

        deadline_ts(CLOCK_REALTIME, ms, &until);
        store_fault_set(n->store, STORE_FULL);
        /* over at its time, or at once when the node stops */
        pthread_mutex_lock(&n->fault_lock);
        while (!n->faults_stop &&
               pthread_cond_timedwait(&n->fault_cond, &n->fault_lock,
                                      &until) == 0) {
        }
        pthread_mutex_unlock(&n->fault_lock);
        store_fault_set(n->store, 0);
        clog(CLOG_WARN, "dr", "drill %s: disk-full over", f->req->drill_id);
    }
}

void node_faults_quiesce(struct node *n)
{
    pthread_mutex_lock(&n->fault_lock);
    n->faults_stop = 1;
    pthread_cond_broadcast(&n->fault_cond);
    while (n->faults_active > 0) {
        pthread_cond_wait(&n->fault_cond, &n->fault_lock);
    }
    pthread_mutex_unlock(&n->fault_lock);
}

static void *fault_main(void *arg)
{
    struct fault *f = arg;
    Cityops__V1__DrillFaultReply reply = CITYOPS__V1__DRILL_FAULT_REPLY__INIT;
    struct cons_status cs;
    char msg[300];
    int rv;

    cons_status_get(f->n->cons, &cs);
    if (cs.state == CONS_STATE_LEADER) {
        rv = fault_record_local(f);
    } else if (cs.leader_id != 0 && !f->req->record_only) {
        rv = fault_record_remote(f, cs.leader_id);
    } else {
        rv = -1;
        snprintf(f->error, sizeof f->error,
                 "recording the fault: no leader to record it; a fault is "
                 "injected only once it is in the audit trail");
    }
    if (rv != 0) {
        rpc_call_fail(f->call, GRPC_STATUS_UNAVAILABLE, f->error);
    } else {
        snprintf(msg, sizeof msg, "%s %s on node %llu",
                 f->req->record_only ? "recorded" : "injecting",
                 f->req->fault,
                 (unsigned long long)(f->req->record_only ? f->req->node_id
                                                          : f->n->cfg.id));
        reply.message = msg;
        rpc_call_reply(f->call, &reply.base);
        if (!f->req->record_only) {
            fault_inject(f);
        }
    }
    cityops__v1__drill_fault_request__free_unpacked(f->req, NULL);
    pthread_cond_destroy(&f->cond);
    pthread_mutex_destroy(&f->lock);
    pthread_mutex_lock(&f->n->fault_lock);
    f->n->faults_active--;
    pthread_cond_broadcast(&f->n->fault_cond);
    pthread_mutex_unlock(&f->n->fault_lock);
    free(f);
    return NULL;
}

static int fault_valid(struct rpc_call *call,
                       const Cityops__V1__DrillFaultRequest *req)
{
    const char *fault = req->fault;

    if (strcmp(fault, "crash") != 0 && strcmp(fault, "pause") != 0 &&
        strcmp(fault, "disk-full") != 0) {
        rpc_call_fail(call, GRPC_STATUS_INVALID_ARGUMENT,
                      "fault must be crash, pause or disk-full");
        return -1;
    }
    if (strcmp(fault, "crash") != 0 &&
        (req->duration_ms == 0 || req->duration_ms > DR_MAX_FAULT_MS)) {
        rpc_call_fail(call, GRPC_STATUS_INVALID_ARGUMENT,
                      "duration_ms must be 1..600000");
        return -1;
    }
    if (strlen(req->drill_id) > STORE_MAX_ID) {
        rpc_call_fail(call, GRPC_STATUS_INVALID_ARGUMENT,
                      "drill_id is too long");
        return -1;
    }
    return 0;
}

static void fault_handle(struct rpc_call *call,
                         const ProtobufCMessage *msg,
                         void *data)
{
    const struct node_handler *h = data;
    struct node *n = h->n;
    const Cityops__V1__DrillFaultRequest *req =
        (const Cityops__V1__DrillFaultRequest *)msg;
    uint8_t *buf = NULL;
    size_t len;
    struct fault *f;
    pthread_t t;

    if (require_admin(call, req->ctx) != 0 || fault_valid(call, req) != 0) {
        return;
    }
    if (!n->cfg.drill_allow_faults && !req->record_only) {
        rpc_call_fail(call, GRPC_STATUS_PERMISSION_DENIED,
                      "fault injection is off on this node: set [drill] "
                      "allow_faults = true in its config to drill it");
        return;
    }
    f = calloc(1, sizeof *f);
    len = protobuf_c_message_get_packed_size(msg);
    buf = malloc(len + 1);
    if (f == NULL || buf == NULL) {
        goto err_nomem;
    }
    protobuf_c_message_pack(msg, buf);
    f->req = cityops__v1__drill_fault_request__unpack(NULL, len, buf);
    free(buf);
    buf = NULL;
    if (f->req == NULL) {
        goto err_nomem;
    }
    f->n = n;
    f->call = call;
    pthread_mutex_init(&f->lock, NULL);
    pthread_cond_init(&f->cond, NULL);
    snprintf(f->detail, sizeof f->detail, "drill %s: %s on node %llu for %u ms",
             req->drill_id, req->fault,
             (unsigned long long)(req->record_only ? req->node_id : n->cfg.id),
             req->duration_ms);
    pthread_mutex_lock(&n->fault_lock);
    if (n->faults_stop || pthread_create(&t, NULL, fault_main, f) != 0) {
        int stopping = n->faults_stop;

        pthread_mutex_unlock(&n->fault_lock);
        pthread_cond_destroy(&f->cond);
        pthread_mutex_destroy(&f->lock);
        cityops__v1__drill_fault_request__free_unpacked(f->req, NULL);
        if (stopping) {
            free(f);
            rpc_call_fail(call, GRPC_STATUS_UNAVAILABLE, "node is stopping");
            return;
        }
        goto err_nomem;
    }
    n->faults_active++;
    pthread_mutex_unlock(&n->fault_lock);
    pthread_detach(t);
    return;

err_nomem:
    free(buf);
    free(f);
    rpc_call_fail(call, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
}

void node_dr_methods_add(struct node *n)
{
    node_method_add(n, "/cityops.v1.Recovery/Recover",
                    &cityops__v1__recover_request__descriptor,
                    &cityops__v1__recover_reply__descriptor, recover_handle,
                    0);
    node_method_add(n, "/cityops.v1.Recovery/Reset",
                    &cityops__v1__reset_request__descriptor,
                    &cityops__v1__recover_reply__descriptor, reset_handle, 0);
    node_method_add(n, "/cityops.v1.Drill/Record",
                    &cityops__v1__drill_record_request__descriptor,
                    &cityops__v1__drill_record_reply__descriptor,
                    record_handle, 0);
    node_method_add(n, "/cityops.v1.Drill/History",
                    &cityops__v1__drill_history_request__descriptor,
                    &cityops__v1__drill_history_response__descriptor,
                    node_read_handle, DR_READ_HISTORY);
    node_method_add(n, "/cityops.v1.Drill/Fault",
                    &cityops__v1__drill_fault_request__descriptor,
                    &cityops__v1__drill_fault_reply__descriptor, fault_handle,
                    0);
}
