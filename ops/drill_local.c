/* Local drill clusters: N cityopsd processes on loopback, each with its
 * config, data dir, command archive, stdout and log in one run directory.
 *
 * Processes are started with posix_spawn (cityctl has threads and grpc
 * running: no fork) and stopped by the PID we got, never by name. Ports
 * come from netport_free: below the ephemeral range, checked bindable.
 *
 * Local configs use LAN timeouts (heartbeat 100 ms, election 1 s), allow
 * drill faults ([drill] allow_faults) and give each node its own command
 * archive under <run>/archive/n<id>, since every node appends what it
 * applies and two writers must not share one segment file.
 */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <signal.h>
#include <spawn.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "drill.h"
#include "proto/netport.h"

extern char **environ;

int drill_local_create(struct drill_local *l,
                       const char *cityopsd,
                       const struct drill_scenario *sc,
                       int n,
                       char *err,
                       size_t errlen)
{
    int ports[2 * DRILL_MAX_NODES];
    char archive_root[300];
    int i;

    memset(l, 0, sizeof(*l));
    if (access(cityopsd, X_OK) != 0) {
        snprintf(err, errlen, "%s: %s (build it, or give --cityopsd PATH)",
                 cityopsd, strerror(errno));
        return OPS_INVALID;
    }
    snprintf(l->cityopsd, sizeof(l->cityopsd), "%s", cityopsd);
    snprintf(l->run_dir, sizeof(l->run_dir), "%s/cityops-drill-XXXXXX",
             getenv("TMPDIR") != NULL ? getenv("TMPDIR") : "/tmp");
    if (mkdtemp(l->run_dir) == NULL) {
        snprintf(err, errlen, "mkdtemp: %s", strerror(errno));
        return OPS_INVALID;
    }
    snprintf(archive_root, sizeof(archive_root), "%s/archive", l->run_dir);
    if (mkdir(archive_root, 0700) != 0 || netport_free(ports, 2 * n) != 0) {
        snprintf(err, errlen, "run dir or ports: %s", strerror(errno));
        drill_rmtree(l->run_dir);
        return OPS_INVALID;
    }
    l->n = n;
    for (i = 0; i < n; i++) {
        struct drill_node *d = &l->nodes[i];

        d->id = (uint64_t)i + 1;
        d->grpc_port = ports[2 * i];
        d->raft_port = ports[2 * i + 1];
        snprintf(d->grpc, sizeof(d->grpc), "127.0.0.1:%d", d->grpc_port);
        snprintf(d->raft, sizeof(d->raft), "127.0.0.1:%d", d->raft_port);
        snprintf(d->zone, sizeof(d->zone), "%s",
                 i < sc->n_zones ? sc->zones[i] : "");
        snprintf(d->dir, sizeof(d->dir), "%s/n%d", l->run_dir, i + 1);
        snprintf(d->archive, sizeof(d->archive), "%s/n%d", archive_root,
                 i + 1);
        snprintf(d->config, sizeof(d->config), "%s/n%d.ini", l->run_dir,
                 i + 1);
        snprintf(d->out, sizeof(d->out), "%s/n%d.out", l->run_dir, i + 1);
        snprintf(d->log, sizeof(d->log), "%s/n%d.log", l->run_dir, i + 1);
    }
    for (i = 0; i < n; i++) {
        if (drill_local_write_config(l, i, 0) != 0) {
            snprintf(err, errlen, "%s: %s", l->nodes[i].config,
                     strerror(errno));
            drill_rmtree(l->run_dir);
            return OPS_INVALID;
        }
    }
    return 0;
}

int drill_local_write_config(struct drill_local *l, int i, int only_self)
{
    struct drill_node *d = &l->nodes[i];
    FILE *f = fopen(d->config, "w");
    int j;

    if (f == NULL) {
        return -1;
    }
    fprintf(f,
            "[node]\nid = %llu\nname = n%llu\ndata_dir = %s\n"
            "grpc_address = %s\nraft_address = %s\nlog_level = info\n\n"
            "[raft]\nprofile = lan\nheartbeat_ms = 100\nelection_ms = 1000\n\n"
            "[storage]\nmap_size_mb = 256\n\n"
            "[server]\nwrite_wait_ms = 3000\n\n",
            (unsigned long long)d->id, (unsigned long long)d->id, d->dir,
            d->grpc, d->raft);
    if (!l->no_dr_keys) {
        fprintf(f,
                "[drill]\nallow_faults = true\n\n"
                "[backup]\narchive_dir = %s\n\n",
                d->archive);
    }
    fprintf(f, "[cluster]\n");
    for (j = 0; j < l->n; j++) {
        const struct drill_node *m = &l->nodes[j];

        if (only_self && j != i) {
            continue;
        }
        fprintf(f, "member = %llu %s %s voter%s%s\n",
                (unsigned long long)m->id, m->raft, m->grpc,
                *m->zone != '\0' ? " " : "", m->zone);
    }
    return fclose(f) == 0 ? 0 : -1;
}

static int file_has(const char *path, const char *needle)
{
    char buf[4096];
    FILE *f = fopen(path, "r");
    size_t n;

    if (f == NULL) {
        return 0;
    }
    n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    return strstr(buf, needle) != NULL;
}

/* The last line of the node's log, for an error message. */
static void log_tail(const char *path, char *out, size_t len)
{
    char line[512] = "";
    char last[512] = "(empty log)";
    FILE *f = fopen(path, "r");

    if (f != NULL) {
        while (fgets(line, sizeof(line), f) != NULL) {
            if (line[0] != '\n') {
                snprintf(last, sizeof(last), "%s", line);
            }
        }
        fclose(f);
    }
    last[strcspn(last, "\n")] = '\0';
    snprintf(out, len, "%s", last);
}

static int start_once(struct drill_local *l, int i, char *err, size_t errlen);

int drill_local_start(struct drill_local *l, int i, char *err, size_t errlen)
{
    int rv = start_once(l, i, err, errlen);
    int j;

    if (rv == 0 || l->no_dr_keys ||
        (strstr(err, "unknown key [drill]") == NULL &&
         strstr(err, "unknown key [backup]") == NULL)) {
        return rv;
    }
    drill_say("warning: %s does not know [drill]/[backup] yet; running "
              "without fault injection by RPC and without the archive",
              l->cityopsd);
    l->no_dr_keys = 1;
    for (j = 0; j < l->n; j++) {
        drill_local_write_config(l, j, 0);
    }
    return start_once(l, i, err, errlen);
}

static int start_once(struct drill_local *l, int i, char *err, size_t errlen)
{
    struct drill_node *d = &l->nodes[i];
    posix_spawn_file_actions_t fa;
    posix_spawnattr_t attr;
    sigset_t none;
    sigset_t all;
    char *argv[4];
    int64_t deadline;
    int rv;

    argv[0] = l->cityopsd;
    argv[1] = "--config";
    argv[2] = d->config;
    argv[3] = NULL;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_addopen(&fa, 1, d->out,
                                     O_WRONLY | O_CREAT | O_TRUNC, 0600);
    posix_spawn_file_actions_addopen(&fa, 2, d->log,
                                     O_WRONLY | O_CREAT | O_APPEND, 0600);
    posix_spawnattr_init(&attr);
    sigemptyset(&none);
    sigfillset(&all);
    posix_spawnattr_setsigmask(&attr, &none);
    posix_spawnattr_setsigdefault(&attr, &all);
    posix_spawnattr_setflags(&attr,
                             POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
    rv = posix_spawn(&d->pid, l->cityopsd, &fa, &attr, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    posix_spawnattr_destroy(&attr);
    if (rv != 0) {
        d->pid = 0;
        snprintf(err, errlen, "spawn %s: %s", l->cityopsd, strerror(rv));
        return OPS_INVALID;
    }
    d->paused = 0;
    deadline = drill_now_us() + 20 * 1000000;
    while (drill_now_us() < deadline) {
        int status;

        if (file_has(d->out, "ready")) {
            return 0;
        }
        if (waitpid(d->pid, &status, WNOHANG) == d->pid) {
            char tail[400];

            d->pid = 0;
            log_tail(d->log, tail, sizeof(tail));
            snprintf(err, errlen, "node %llu exited at start: %s",
                     (unsigned long long)d->id, tail);
            return OPS_INVALID;
        }
        drill_sleep_us(20000);
    }
    snprintf(err, errlen, "node %llu not ready after 20 s (log: %s)",
             (unsigned long long)d->id, d->log);
    drill_local_signal(l, i, SIGKILL);
    return OPS_INVALID;
}

int drill_local_signal(struct drill_local *l, int i, int sig)
{
    struct drill_node *d = &l->nodes[i];

    if (d->pid <= 0) {
        return -1;
    }
    if (kill(d->pid, sig) != 0) {
        return -1;
    }
    if (sig == SIGSTOP) {
        d->paused = 1;
    } else if (sig == SIGCONT) {
        d->paused = 0;
    } else if (sig == SIGKILL) {
        waitpid(d->pid, NULL, 0);
        d->pid = 0;
        d->paused = 0;
    }
    return 0;
}

int drill_local_stop(struct drill_local *l, int i, double grace_s)
{
    struct drill_node *d = &l->nodes[i];
    int64_t deadline = drill_now_us() + (int64_t)(grace_s * 1e6);
    int status = 0;

    if (d->pid <= 0) {
        return 0;
    }
    kill(d->pid, SIGCONT);
    kill(d->pid, SIGTERM);
    while (drill_now_us() < deadline) {
        pid_t got = waitpid(d->pid, &status, WNOHANG);

        if (got == d->pid || (got < 0 && errno == ECHILD)) {
            d->pid = 0;
            d->paused = 0;
            return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : -1;
        }
        drill_sleep_us(20000);
    }
    drill_local_signal(l, i, SIGKILL);
    return -1;
}

void drill_local_destroy(struct drill_local *l, int keep)
{
    int i;

    for (i = 0; i < l->n; i++) {
        drill_local_stop(l, i, 15);
    }
    if (!keep && l->run_dir[0] != '\0') {
        drill_rmtree(l->run_dir);
    }
}

int drill_local_index(const struct drill_local *l, uint64_t id)
{
    int i;

    for (i = 0; i < l->n; i++) {
        if (l->nodes[i].id == id) {
            return i;
        }
    }
    return -1;
}

static int rm_one(const char *path,
                  const struct stat *st,
                  int flag,
                  struct FTW *ftw)
{
    (void)st;
    (void)ftw;
    return flag == FTW_DP ? rmdir(path) : unlink(path);
}

int drill_rmtree(const char *path)
{
    return nftw(path, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}
