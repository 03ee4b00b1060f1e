/* The phases of a drill: set up (a local cluster, or the configured one),
 * warm up under load, inject the fault at T0, observe, recover, wait for
 * health, settle, then check and judge.
 *
 * T0 is taken just before the fault is injected. RTO write is measured
 * from the load's own acknowledgements afterwards (drill_rto_write); RTO
 * health is the first time, after the recovery actions, that every member
 * is healthy (drill_healthy). The load keeps running through all of it and
 * stops only after the settle phase, so the checks see every write that
 * was acknowledged.
 *
 * The backup, restore and quorum-loss recovery steps call the operator's
 * own functions (ops_backup_fetch, ops_backup_restore, ops_recover): a
 * drill runs the runbook, it does not reimplement it. They are referenced
 * weakly so that a cityctl built without them still runs the other drills
 * and says which ones it cannot.
 */
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "drill.h"

#pragma weak ops_backup_fetch
#pragma weak ops_backup_restore
#pragma weak ops_recover

#define LEADER_WAIT_S 30
#define HEALTH_WAIT_MIN_S 60
#define SETTLE_S 1.0
#define PROGRESS_EVERY_US 2000000

static volatile sig_atomic_t interrupted;

static void on_signal(int sig)
{
    (void)sig;
    interrupted = 1;
}

struct run {
    struct ops_ctl *ctl;
    const struct drill_scenario *sc;
    const struct drill_opts *o;
    struct drill_result *r;
    struct drill_local local;
    int is_local;
    struct drill_env env;
    struct drill_load *ld;
    double warmup_s;
    double observe_s;
    int64_t t0;
    int64_t restart_t[DRILL_MAX_NODES];
};

static void set_error(struct run *run, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void set_error(struct run *run, const char *fmt, ...)
{
    va_list ap;

    if (run->r->error[0] != '\0') {
        return;
    }
    va_start(ap, fmt);
    vsnprintf(run->r->error, sizeof(run->r->error), fmt, ap);
    va_end(ap);
    drill_say("error: %s", run->r->error);
}

/* Sleep until @deadline (monotonic us) with progress lines; 0, or -1 if
 * interrupted. */
static int wait_until(struct run *run, int64_t deadline, const char *phase)
{
    int64_t next = drill_now_us() + PROGRESS_EVERY_US;

    while (drill_now_us() < deadline) {
        if (interrupted) {
            set_error(run, "interrupted");
            return -1;
        }
        if (drill_now_us() >= next) {
            drill_load_progress(run->ld, phase);
            next += PROGRESS_EVERY_US;
        }
        drill_sleep_us(50000);
    }
    return 0;
}

static int wait_for(struct run *run, double seconds, const char *phase)
{
    return wait_until(run, drill_now_us() + (int64_t)(seconds * 1e6), phase);
}

static int64_t health_deadline(const struct run *run, int64_t from)
{
    double s = run->sc->targets.rto_health_max_s * 2;

    if (s < HEALTH_WAIT_MIN_S) {
        s = HEALTH_WAIT_MIN_S;
    }
    return from + (int64_t)(s * 1e6);
}

/* Wait for health after the recovery actions; RTO health from T0. */
static void measure_health(struct run *run)
{
    char why[256];
    int64_t t;

    int64_t deadline = health_deadline(run, run->t0);
    int64_t next = drill_now_us() + PROGRESS_EVERY_US;

    drill_say("waiting for every member to be healthy");
    while ((t = drill_wait_healthy(&run->env, drill_now_us(), why,
                                   sizeof(why))) < 0 &&
           drill_now_us() < deadline && !interrupted) {
        if (drill_now_us() >= next) {
            drill_load_progress(run->ld, "recover");
            drill_say("not healthy yet: %s", why);
            next += PROGRESS_EVERY_US;
        }
        drill_sleep_us(100000);
    }
    if (t < 0) {
        run->r->rto_health_s = -1;
        drill_say("never healthy: %s", why);
        return;
    }
    run->r->rto_health_s = (double)(t - run->t0) / 1e6;
    drill_say("healthy %.3f s after the fault (%s)", run->r->rto_health_s,
              why);
}

static int local_index_of_leader(struct run *run)
{
    char addr[64];
    uint64_t id = drill_wait_leader(&run->env, LEADER_WAIT_S);

    (void)addr;
    return id != 0 ? drill_local_index(&run->local, id) : -1;
}

static const char *leader_addr(struct run *run, char *buf, size_t len)
{
    if (drill_leader(&run->env, buf, len) == 0) {
        return NULL;
    }
    return buf;
}

static int restart_node(struct run *run, int i)
{
    char err[512];

    if (drill_local_start(&run->local, i, err, sizeof(err)) != 0) {
        set_error(run, "restart of node %llu: %s",
                  (unsigned long long)run->local.nodes[i].id, err);
        return -1;
    }
    drill_say("node %llu restarted (pid %d)",
              (unsigned long long)run->local.nodes[i].id,
              (int)run->local.nodes[i].pid);
    return 0;
}

static int start_load(struct run *run)
{
    if (drill_load_start(run->ld, run->sc->writers, run->sc->readers) != 0) {
        set_error(run, "could not start the load threads");
        return -1;
    }
    return 0;
}

static int warm_up(struct run *run)
{
    drill_say("warm-up: %d writers, %d readers for %.1f s", run->sc->writers,
              run->sc->readers, run->warmup_s);
    if (start_load(run) != 0 || wait_for(run, run->warmup_s, "warm-up")) {
        return -1;
    }
    if (drill_load_acked(run->ld) == 0) {
        set_error(run, "no write acknowledged during the warm-up");
        return -1;
    }
    return 0;
}

/* The victims of a process fault, as local node indexes. */
static int pick_victims(struct run *run, int *victims)
{
    int leader = local_index_of_leader(run);
    int n = 0;
    int i;

    if (leader < 0) {
        set_error(run, "no leader before the fault");
        return -1;
    }
    switch (run->sc->fault) {
    case DRILL_FAULT_FOLLOWER_KILL:
        victims[n++] = (leader + 1) % run->local.n;
        break;
    case DRILL_FAULT_SITE_LOSS:
        for (i = 0; i < run->local.n; i++) {
            if (strcmp(run->local.nodes[i].zone,
                       run->local.nodes[leader].zone) == 0) {
                victims[n++] = i;
            }
        }
        break;
    case DRILL_FAULT_QUORUM_LOSS:
        victims[n++] = leader;
        victims[n++] = (leader + 1) % run->local.n;
        break;
    default:
        victims[n++] = leader;
        break;
    }
    return n;
}

/* site-loss: the leader must sit in a site with more than one voter, or
 * losing "its site" would be a leader kill. */
static int leader_into_big_site(struct run *run)
{
    int leader = local_index_of_leader(run);
    int i;
    int same = 0;

    if (leader < 0) {
        return -1;
    }
    for (i = 0; i < run->local.n; i++) {
        same += strcmp(run->local.nodes[i].zone,
                       run->local.nodes[leader].zone) == 0;
    }
    if (same > 1) {
        return 0;
    }
    drill_say("leader %llu is alone in site %s: moving leadership to node 1",
              (unsigned long long)run->local.nodes[leader].id,
              run->local.nodes[leader].zone);
    if (drill_transfer(&run->env, run->local.nodes[0].id) != 0) {
        set_error(run, "could not move leadership into a two-voter site");
        return -1;
    }
    drill_sleep_us(500000);
    return 0;
}

/* The end every scenario shares: time the recovery to full health, let
 * the load run to the end of the observe window, then settle. */
static int observe_and_settle(struct run *run)
{
    measure_health(run);
    if (wait_until(run, run->t0 + (int64_t)(run->observe_s * 1e6),
                   "observe")) {
        return -1;
    }
    return wait_for(run, SETTLE_S, "settle");
}

/* leader-kill, follower-kill, leader-pause, site-loss (local). */
static int run_process_fault(struct run *run)
{
    const struct drill_scenario *sc = run->sc;
    int victims[DRILL_MAX_NODES];
    int n;
    int i;
    int pause = sc->fault == DRILL_FAULT_LEADER_PAUSE;
    double hold = pause ? (sc->fault_s > 0 ? sc->fault_s : 2.0)
                        : sc->restart_after_s;
    char *p = run->r->fault_detail;
    size_t len = sizeof(run->r->fault_detail);

    if (sc->fault == DRILL_FAULT_SITE_LOSS && leader_into_big_site(run) != 0) {
        return -1;
    }
    if (warm_up(run) != 0 || (n = pick_victims(run, victims)) < 0) {
        return -1;
    }
    snprintf(p, len, "%s node", pause ? "SIGSTOP" : "SIGKILL");
    run->t0 = drill_now_us();
    for (i = 0; i < n; i++) {
        drill_local_signal(&run->local, victims[i], pause ? SIGSTOP : SIGKILL);
        snprintf(p + strlen(p), len - strlen(p), " %llu%s",
                 (unsigned long long)run->local.nodes[victims[i]].id,
                 *run->local.nodes[victims[i]].zone != '\0' ? "@" : "");
        snprintf(p + strlen(p), len - strlen(p), "%s",
                 run->local.nodes[victims[i]].zone);
    }
    snprintf(p + strlen(p), len - strlen(p), "; %s after %.1f s",
             pause ? "SIGCONT" : "restarted", hold);
    drill_say("T0: %s", p);
    if (wait_until(run, run->t0 + (int64_t)(hold * 1e6), "fault")) {
        return -1;
    }
    for (i = 0; i < n; i++) {
        if (pause) {
            drill_local_signal(&run->local, victims[i], SIGCONT);
        } else if (restart_node(run, victims[i]) != 0) {
            return -1;
        }
    }
    return observe_and_settle(run);
}

/* After a disk-full fault ended at @end: if the node's store is still
 * failing 10 s later, take the runbook's last step and restart it (it
 * replays its log). */
static int disk_full_recover(struct run *run, const char *victim, int64_t end)
{
    char why[256];
    int i;

    if (drill_wait_healthy(&run->env, end + 10000000, why, sizeof(why)) >= 0) {
        return 0;
    }
    for (i = 0; i < run->local.n; i++) {
        if (strcmp(run->local.nodes[i].grpc, victim) == 0) {
            drill_say("still unhealthy (%s): restarting node %llu", why,
                      (unsigned long long)run->local.nodes[i].id);
            drill_local_stop(&run->local, i, 15);
            return restart_node(run, i);
        }
    }
    return 0;
}

/* Faults through Drill/Fault: any cluster, local or not. */
static int run_rpc_fault(struct run *run)
{
    const struct drill_scenario *sc = run->sc;
    const char *fault = "crash";
    uint32_t ms = 0;
    char addr[64];
    char victim[64];
    char err[200];
    int64_t end;

    if (run->is_local && run->local.no_dr_keys) {
        set_error(run, "%s needs a cityopsd with [drill] allow_faults",
                  drill_fault_name(sc->fault));
        return -1;
    }
    if (warm_up(run) != 0) {
        return -1;
    }
    if (leader_addr(run, addr, sizeof(addr)) == NULL) {
        set_error(run, "no leader before the fault");
        return -1;
    }
    snprintf(victim, sizeof(victim), "%s", addr);
    if (sc->fault == DRILL_FAULT_FOLLOWER_KILL) {
        uint64_t ids[DRILL_MAX_NODES];
        char addrs[DRILL_MAX_NODES][64];
        int n = drill_members(&run->env, ids, addrs, NULL, DRILL_MAX_NODES);
        int i;

        for (i = 0; i < n; i++) {
            if (strcmp(addrs[i], addr) != 0) {
                snprintf(victim, sizeof(victim), "%.63s", addrs[i]);
                break;
            }
        }
    } else if (sc->fault == DRILL_FAULT_LEADER_PAUSE) {
        fault = "pause";
        ms = (uint32_t)((sc->fault_s > 0 ? sc->fault_s : 2.0) * 1000);
    } else if (sc->fault == DRILL_FAULT_DISK_FULL) {
        fault = "disk-full";
        ms = (uint32_t)((sc->fault_s > 0 ? sc->fault_s : 3.0) * 1000);
    }
    snprintf(run->r->fault_detail, sizeof(run->r->fault_detail),
             "Drill/Fault %s on %s%s", fault, victim,
             strcmp(victim, addr) == 0 ? " (the leader)" : "");
    if (ms > 0) {
        size_t l = strlen(run->r->fault_detail);

        snprintf(run->r->fault_detail + l, sizeof(run->r->fault_detail) - l,
                 " for %u ms", ms);
    }
    run->t0 = drill_now_us();
    drill_say("T0: %s", run->r->fault_detail);
    if (drill_fault_rpc(&run->env, victim, fault, ms, run->r->drill_id, err,
                        sizeof(err)) != 0) {
        set_error(run, "%s", err);
        return -1;
    }
    end = run->t0 + (int64_t)((double)ms * 1000);
    if (strcmp(fault, "crash") == 0 && run->is_local) {
        int i;

        end = run->t0 + (int64_t)(sc->restart_after_s * 1e6);
        if (wait_until(run, end, "fault")) {
            return -1;
        }
        for (i = 0; i < run->local.n; i++) {
            struct drill_node *d = &run->local.nodes[i];

            if (strcmp(d->grpc, victim) == 0) {
                /* Reap the crashed process, then start it again. */
                drill_local_stop(&run->local, i, 5);
                if (restart_node(run, i) != 0) {
                    return -1;
                }
            }
        }
    } else if (wait_until(run, end, "fault")) {
        return -1;
    }
    if (run->is_local && sc->fault == DRILL_FAULT_DISK_FULL &&
        disk_full_recover(run, victim, end) != 0) {
        return -1;
    }
    return observe_and_settle(run);
}

static void record_restart(struct run *run, int i, int64_t t_i, int64_t ok)
{
    struct drill_restart *rs = &run->r->restarts[run->r->n_restarts];

    rs->node_id = run->local.nodes[i].id;
    rs->rto_health_s = ok < 0 ? -1 : (double)(ok - t_i) / 1e6;
    rs->rto_write_s = -1;
    run->restart_t[run->r->n_restarts] = t_i;
    run->r->n_restarts++;
}

static int run_rolling_restart(struct run *run)
{
    int order[DRILL_MAX_NODES];
    int leader;
    int n = 0;
    int i;

    if (warm_up(run) != 0 || (leader = local_index_of_leader(run)) < 0) {
        return -1;
    }
    /* Followers first, the leader last: one election in all. */
    for (i = 0; i < run->local.n; i++) {
        if (i != leader) {
            order[n++] = i;
        }
    }
    order[n++] = leader;
    snprintf(run->r->fault_detail, sizeof(run->r->fault_detail),
             "SIGTERM + restart of each node in turn, leader (%llu) last",
             (unsigned long long)run->local.nodes[leader].id);
    run->t0 = drill_now_us();
    drill_say("T0: %s", run->r->fault_detail);
    for (i = 0; i < n; i++) {
        char why[256];
        int64_t t_i = drill_now_us();
        int64_t ok;

        drill_say("restart %d/%d: node %llu", i + 1, n,
                  (unsigned long long)run->local.nodes[order[i]].id);
        if (drill_local_stop(&run->local, order[i], 15) != 0) {
            drill_say("node %llu did not exit cleanly on SIGTERM",
                      (unsigned long long)run->local.nodes[order[i]].id);
        }
        if (restart_node(run, order[i]) != 0) {
            return -1;
        }
        ok = drill_wait_healthy(&run->env, health_deadline(run, t_i), why,
                                sizeof(why));
        record_restart(run, order[i], t_i, ok);
        if (ok < 0) {
            set_error(run, "not healthy after restarting node %llu: %s",
                      (unsigned long long)run->local.nodes[order[i]].id,
                      why);
            return -1;
        }
        drill_say("healthy again after %.3f s",
                  run->r->restarts[run->r->n_restarts - 1].rto_health_s);
        drill_load_progress(run->ld, "rolling");
    }
    run->r->rto_health_s = 0;
    for (i = 0; i < run->r->n_restarts; i++) {
        if (run->r->restarts[i].rto_health_s > run->r->rto_health_s) {
            run->r->rto_health_s = run->r->restarts[i].rto_health_s;
        }
    }
    return wait_for(run, SETTLE_S, "settle");
}

static void ctl_init(struct ops_ctl *c, struct run *run, char **addrs, int n)
{
    int i;

    memset(c, 0, sizeof(*c));
    c->timeout_ms = run->o->timeout_ms;
    c->consistency = -1;
    c->actor = "cityctl-drill";
    for (i = 0; i < n && i < OPS_MAX_ENDPOINTS; i++) {
        c->endpoints[c->n_endpoints] = strdup(addrs[i]);
        if (c->endpoints[c->n_endpoints] != NULL) {
            c->n_endpoints++;
        }
    }
}

/* A survivor remembers the dead leader until its election timeout runs
 * out, and recovery is refused while a leader is known: wait, as the
 * runbook says, until no survivor knows a leader. */
static int survivor_leaderless(struct run *run, const int *victims)
{
    int64_t deadline = drill_now_us() + 20000000;
    int i;

    for (i = 0; i < run->local.n; i++) {
        if (i == victims[0] || i == victims[1]) {
            continue;
        }
        while (drill_now_us() < deadline) {
            struct drill_chan *ch =
                drill_env_chan(&run->env, run->local.nodes[i].grpc);
            Cityops__V1__StatusRequest req = CITYOPS__V1__STATUS_REQUEST__INIT;
            ProtobufCMessage *resp = NULL;
            uint64_t leader = 1;

            req.local_only = 1;
            if (ch != NULL &&
                drill_call(ch, "Cluster/Status", &req.base,
                           &cityops__v1__status_response__descriptor, 1000,
                           &resp, NULL, 0) == GRPC_STATUS_OK) {
                leader = ((Cityops__V1__StatusResponse *)resp)->leader_id;
                protobuf_c_message_free_unpacked(resp, NULL);
            }
            if (leader == 0) {
                break;
            }
            drill_sleep_us(200000);
        }
    }
    if (drill_now_us() >= deadline) {
        set_error(run, "the survivors still see a leader 20 s after the "
                       "fault");
        return -1;
    }
    return 0;
}

static int run_quorum_loss(struct run *run)
{
    char *addrs[DRILL_MAX_NODES];
    int victims[DRILL_MAX_NODES];
    struct ops_ctl c;
    int rv;
    int i;

    if (ops_recover == NULL) {
        set_error(run, "quorum-loss needs ops_recover(), which this cityctl "
                       "was built without");
        return -1;
    }
    if (warm_up(run) != 0 || pick_victims(run, victims) != 2) {
        return -1;
    }
    run->t0 = drill_now_us();
    drill_local_signal(&run->local, victims[0], SIGKILL);
    drill_local_signal(&run->local, victims[1], SIGKILL);
    snprintf(run->r->fault_detail, sizeof(run->r->fault_detail),
             "SIGKILL leader %llu and node %llu; recover from the survivor "
             "after %.1f s, the others stay down",
             (unsigned long long)run->local.nodes[victims[0]].id,
             (unsigned long long)run->local.nodes[victims[1]].id,
             run->sc->restart_after_s);
    drill_say("T0: %s", run->r->fault_detail);
    if (wait_for(run, run->sc->restart_after_s, "fault") ||
        survivor_leaderless(run, victims) != 0) {
        return -1;
    }
    for (i = 0; i < run->local.n; i++) {
        addrs[i] = run->local.nodes[i].grpc;
    }
    ctl_init(&c, run, addrs, run->local.n);
    drill_say("recovering: ops_recover over all %d members", run->local.n);
    rv = ops_recover(&c, 1, 0, 1);
    ops_ctl_close(&c);
    if (rv != OPS_EXIT_OK) {
        set_error(run, "ops_recover failed (exit %d)", rv);
        return -1;
    }
    return observe_and_settle(run);
}

static int take_backup(struct run *run, const char *path)
{
    char *addrs[DRILL_MAX_NODES];
    Cityops__V1__BackupInfo *info = NULL;
    struct ops_ctl c;
    int rv;
    int i;

    for (i = 0; i < run->local.n; i++) {
        addrs[i] = run->local.nodes[i].grpc;
    }
    ctl_init(&c, run, addrs, run->local.n);
    drill_say("backup under load into %s", path);
    rv = ops_backup_fetch(&c, path, 1, &info);
    ops_ctl_close(&c);
    if (rv != OPS_EXIT_OK) {
        set_error(run, "ops_backup_fetch failed (exit %d)", rv);
        return -1;
    }
    if (info != NULL) {
        drill_say("backup at index %llu, %llu cases",
                  (unsigned long long)info->applied_index,
                  (unsigned long long)info->case_count);
        cityops__v1__backup_info__free_unpacked(info, NULL);
    }
    return 0;
}

/* Kill every node, restore node 1 from @backup (+ the archive of node
 * @archive_from, up to @to_time) into a fresh data dir, and start it as a
 * cluster of one. */
static int kill_all_and_restore(struct run *run,
                                const char *backup,
                                int archive_from,
                                int64_t to_time)
{
    struct drill_node *d = &run->local.nodes[0];
    const char *archive = NULL;
    char err[512];
    int i;

    /* Every node dead and reaped before T0: no write sent after T0 can be
     * acknowledged by the old cluster. */
    for (i = 0; i < run->local.n; i++) {
        if (run->local.nodes[i].pid > 0) {
            kill(run->local.nodes[i].pid, SIGKILL);
        }
    }
    for (i = 0; i < run->local.n; i++) {
        drill_local_signal(&run->local, i, SIGKILL);
    }
    run->t0 = drill_now_us();
    drill_say("T0: %s", run->r->fault_detail);
    if (run->sc->use_archive && archive_from >= 0) {
        archive = run->local.nodes[archive_from].archive;
    }
    snprintf(d->dir, sizeof(d->dir), "%s/restored", run->local.run_dir);
    if (mkdir(d->dir, 0700) != 0) {
        set_error(run, "mkdir %s: %s", d->dir, strerror(errno));
        return -1;
    }
    drill_say("restoring into %s%s%s", d->dir, archive ? " with archive " : "",
              archive ? archive : " (no archive)");
    if (ops_backup_restore(backup, d->dir, archive, 0, to_time, 1, err,
                           sizeof(err)) != OPS_EXIT_OK) {
        set_error(run, "ops_backup_restore: %s", err);
        return -1;
    }
    if (drill_local_write_config(&run->local, 0, 1) != 0) {
        set_error(run, "cannot write %s", d->config);
        return -1;
    }
    if (restart_node(run, 0) != 0) {
        return -1;
    }
    drill_say("restored node started");
    return 0;
}

static int restore_ready(struct run *run)
{
    if (ops_backup_fetch == NULL || ops_backup_restore == NULL) {
        set_error(run, "%s needs ops_backup_fetch() and ops_backup_restore(), "
                       "which this cityctl was built without",
                  drill_fault_name(run->sc->fault));
        return -1;
    }
    if (run->local.no_dr_keys && run->sc->use_archive) {
        set_error(run, "%s needs a cityopsd with [backup] archive_dir",
                  drill_fault_name(run->sc->fault));
        return -1;
    }
    return 0;
}

static int run_restore(struct run *run)
{
    char backup[PATH_MAX + 16];
    int leader;

    if (restore_ready(run) != 0) {
        return -1;
    }
    snprintf(backup, sizeof(backup), "%s/backup.cob", run->local.run_dir);
    drill_say("warm-up: %d writers, %d readers for %.1f s, backup half way",
              run->sc->writers, run->sc->readers, run->warmup_s);
    if (start_load(run) != 0 || wait_for(run, run->warmup_s / 2, "warm-up") ||
        take_backup(run, backup) != 0 ||
        wait_for(run, run->warmup_s / 2, "warm-up")) {
        return -1;
    }
    leader = local_index_of_leader(run);
    snprintf(run->r->fault_detail, sizeof(run->r->fault_detail),
             "SIGKILL every node; restore the mid-load backup%s into a new "
             "single-node cluster",
             run->sc->use_archive ? " + the leader's archive"
                                  : " WITHOUT the archive");
    if (kill_all_and_restore(run, backup, leader, 0) != 0) {
        return -1;
    }
    return observe_and_settle(run);
}

/* Phase B: the mistake, voiding acknowledged phase-A cases. */
static int void_cases(struct run *run, int *voided)
{
    Cityops__V1__CaseActionRequest req = CITYOPS__V1__CASE_ACTION_REQUEST__INIT;
    Cityops__V1__RequestContext ctx = CITYOPS__V1__REQUEST_CONTEXT__INIT;
    struct drill_ack *acks;
    size_t n;
    size_t i;
    int rot = 0;

    acks = drill_load_acks(run->ld, &n);
    if (acks == NULL) {
        return -1;
    }
    *voided = 0;
    ctx.actor_id = "cityctl-drill";
    ctx.role = CITYOPS__V1__ROLE__ROLE_SHIFT_LEADER;
    req.ctx = &ctx;
    req.reason = "drill: a mistaken bulk change";
    for (i = 0; i < n && *voided < run->sc->void_count; i++) {
        int tries;

        req.case_id = acks[i].case_id;
        for (tries = 0; tries < 20; tries++) {
            ProtobufCMessage *resp = NULL;
            int status = drill_call(run->env.chan[rot % run->env.n_load],
                                    "Cases/Void", &req.base,
                                    &cityops__v1__case_reply__descriptor,
                                    3000, &resp, NULL, 0);

            if (resp != NULL) {
                protobuf_c_message_free_unpacked(resp, NULL);
            }
            if (status == GRPC_STATUS_OK) {
                (*voided)++;
                break;
            }
            if (status == GRPC_STATUS_FAILED_PRECONDITION) {
                break; /* voided by an earlier try whose answer was lost */
            }
            rot++;
            drill_sleep_us(100000);
        }
    }
    free(acks);
    return 0;
}

static int run_pitr(struct run *run)
{
    char backup[PATH_MAX + 16];
    int64_t to_time;
    int leader;
    int voided = 0;

    if (restore_ready(run) != 0) {
        return -1;
    }
    snprintf(backup, sizeof(backup), "%s/backup.cob", run->local.run_dir);
    drill_say("phase A: %d writers for %.1f s, backup half way",
              run->sc->writers, run->warmup_s);
    if (start_load(run) != 0 || wait_for(run, run->warmup_s / 2, "phase A") ||
        take_backup(run, backup) != 0 ||
        wait_for(run, run->warmup_s / 2, "phase A")) {
        return -1;
    }
    drill_load_stop(run->ld);
    drill_sleep_us(300000);
    to_time = drill_wall_us();
    drill_sleep_us(300000);
    drill_load_set_phase(run->ld, 1);
    if (void_cases(run, &voided) != 0) {
        set_error(run, "out of memory");
        return -1;
    }
    drill_say("phase B: voided %d acknowledged phase-A cases", voided);
    if (voided == 0) {
        set_error(run, "phase B voided nothing");
        return -1;
    }
    leader = local_index_of_leader(run);
    snprintf(run->r->fault_detail, sizeof(run->r->fault_detail),
             "%d cases voided by mistake; SIGKILL every node; restore "
             "backup%s to the time before the mistake",
             voided, run->sc->use_archive ? " + archive" : " (no archive)");
    if (kill_all_and_restore(run, backup, leader, to_time) != 0) {
        return -1;
    }
    if (start_load(run) != 0) {
        return -1;
    }
    return observe_and_settle(run);
}

static int run_fault(struct run *run)
{
    switch (run->sc->fault) {
    case DRILL_FAULT_QUORUM_LOSS:
        return run_quorum_loss(run);
    case DRILL_FAULT_RESTORE:
        return run_restore(run);
    case DRILL_FAULT_PITR:
        return run_pitr(run);
    case DRILL_FAULT_ROLLING_RESTART:
        return run_rolling_restart(run);
    case DRILL_FAULT_DISK_FULL:
        return run_rpc_fault(run);
    default:
        return run->is_local ? run_process_fault(run) : run_rpc_fault(run);
    }
}

static void drill_id_make(char *buf, size_t len, int64_t wall)
{
    time_t t = (time_t)(wall / 1000000);
    struct tm tm;
    char stamp[32];

    gmtime_r(&t, &tm);
    strftime(stamp, sizeof(stamp), "%Y%m%dT%H%M%SZ", &tm);
    snprintf(buf, len, "drill-%s-%04x", stamp,
             (unsigned)((wall ^ (int64_t)getpid() * 2654435761LL) & 0xffff));
}

/* After the load stopped: RTO write, convergence, verification. */
static void check(struct run *run)
{
    struct drill_result *r = run->r;
    struct drill_ack *acks;
    size_t n;
    int i;

    drill_load_totals(run->ld, r);
    acks = drill_load_acks(run->ld, &n);
    if (acks == NULL) {
        set_error(run, "out of memory");
        return;
    }
    if (run->t0 != 0) {
        r->rto_write_s = drill_rto_write(acks, n, run->t0);
    }
    for (i = 0; i < r->n_restarts; i++) {
        r->restarts[i].rto_write_s =
            drill_rto_write(acks, n, run->restart_t[i]);
        if (r->restarts[i].rto_write_s > r->rto_write_s) {
            r->rto_write_s = r->restarts[i].rto_write_s;
        }
    }
    drill_say("checking convergence");
    drill_converge(&run->env, 15, r);
    drill_say("reading back %zu acknowledged writes", n);
    drill_verify(&run->env, r->drill_id, acks, n,
                 run->sc->fault == DRILL_FAULT_PITR, r);
    free(acks);
}

static int setup_local(struct run *run)
{
    char err[512];
    int n = run->o->local_n > 0 ? run->o->local_n : run->sc->nodes;
    int i;

    if (run->sc->n_zones > 0 && n != run->sc->n_zones) {
        set_error(run, "%s has zones for %d nodes, not %d", run->sc->name,
                  run->sc->n_zones, n);
        return -1;
    }
    if (drill_local_create(&run->local, run->o->cityopsd, run->sc, n, err,
                           sizeof(err)) != 0) {
        set_error(run, "%s", err);
        return -1;
    }
    run->is_local = 1;
    drill_say("local cluster of %d in %s", n, run->local.run_dir);
    for (i = 0; i < n; i++) {
        if (drill_local_start(&run->local, i, err, sizeof(err)) != 0) {
            set_error(run, "%s", err);
            return -1;
        }
    }
    snprintf(run->r->target, sizeof(run->r->target), "local %d nodes", n);
    return 0;
}

static int setup_env(struct run *run)
{
    char *addrs[OPS_MAX_ENDPOINTS];
    int n = 0;
    int i;

    if (run->is_local) {
        for (i = 0; i < run->local.n; i++) {
            addrs[n++] = run->local.nodes[i].grpc;
        }
    } else {
        size_t len = 0;

        for (i = 0; i < run->ctl->n_endpoints; i++) {
            addrs[n++] = run->ctl->endpoints[i];
            len += (size_t)snprintf(run->r->target + len,
                                    len < sizeof(run->r->target)
                                        ? sizeof(run->r->target) - len
                                        : 0,
                                    "%s%s", i ? "," : "", addrs[i]);
            if (len >= sizeof(run->r->target)) {
                len = sizeof(run->r->target) - 1;
            }
        }
    }
    if (drill_env_init(&run->env, addrs, n) != 0) {
        set_error(run, "out of memory");
        return -1;
    }
    if (drill_wait_leader(&run->env, LEADER_WAIT_S) == 0) {
        set_error(run, "no leader within %d s", LEADER_WAIT_S);
        return -1;
    }
    return 0;
}

int drill_run(struct ops_ctl *ctl,
              const struct drill_scenario *sc,
              const struct drill_opts *o,
              struct drill_result *r)
{
    struct sigaction sa;
    struct sigaction old_int;
    struct sigaction old_term;
    struct run run;
    int64_t start = drill_now_us();
    double total = sc->warmup_s + sc->observe_s;
    int env_ok = 0;

    memset(&run, 0, sizeof(run));
    memset(r, 0, sizeof(*r));
    run.ctl = ctl;
    run.sc = sc;
    run.o = o;
    run.r = r;
    run.warmup_s = sc->warmup_s;
    run.observe_s = sc->observe_s;
    if (o->duration_s > 0 && total > 0) {
        run.warmup_s = sc->warmup_s * o->duration_s / total;
        run.observe_s = sc->observe_s * o->duration_s / total;
    }
    r->started_at = drill_wall_us();
    drill_id_make(r->drill_id, sizeof(r->drill_id), r->started_at);
    snprintf(r->scenario, sizeof(r->scenario), "%s", sc->name);
    snprintf(r->fault, sizeof(r->fault), "%s", drill_fault_name(sc->fault));
    r->rto_write_s = -1;
    r->rto_health_s = -1;
    r->rpo_lost = -1;
    r->doubled = -1;
    r->leaked = -1;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, &old_int);
    sigaction(SIGTERM, &sa, &old_term);
    drill_say("%s: %s (%s)", r->drill_id, sc->name, sc->description);
    if (!o->local_n && !drill_fault_remote(sc->fault)) {
        set_error(&run, "%s needs --local: it stops and restarts processes",
                  sc->name);
        goto out;
    }
    if (o->local_n && setup_local(&run) != 0) {
        goto out_local;
    }
    if (setup_env(&run) != 0) {
        goto out_env;
    }
    env_ok = 1;
    r->nodes = run.is_local ? run.local.n : ctl->n_endpoints;
    run.ld = drill_load_new(&run.env, r->drill_id, sc->write_interval_ms);
    if (run.ld == NULL) {
        set_error(&run, "out of memory");
        goto out_env;
    }
    run_fault(&run);
    drill_load_stop(run.ld);
    drill_load_progress(run.ld, "stopped");
    check(&run);
    r->nodes = run.is_local ? run.local.n : ctl->n_endpoints;
    r->elapsed_s = (double)(drill_now_us() - start) / 1e6;
    drill_evaluate(&sc->targets, r);
    if (drill_report_record(&run.env, r) != 0) {
        drill_say("warning: not recorded in the cluster: %s",
                  r->record_error);
    }
    drill_load_free(run.ld);
out_env:
    if (env_ok || run.env.n > 0) {
        drill_env_close(&run.env);
    }
out_local:
    if (run.is_local) {
        if (o->keep) {
            drill_say("--keep: nodes left running in %s", run.local.run_dir);
        } else {
            drill_say("stopping the local cluster");
            drill_local_destroy(&run.local, 0);
        }
    }
out:
    if (r->n_failures == 0 && !r->passed) {
        drill_evaluate(&sc->targets, r);
    }
    r->elapsed_s = (double)(drill_now_us() - start) / 1e6;
    sigaction(SIGINT, &old_int, NULL);
    sigaction(SIGTERM, &old_term, NULL);
    return OPS_EXIT_OK;
}
