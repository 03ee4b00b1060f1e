/* cityopsd: run one cityops node until SIGINT or SIGTERM.
 *
 *   cityopsd --config node.ini [--log-level debug|info|warn|error]
 *
 * Signals are blocked in every thread before anything starts (grpc and raft
 * threads inherit the mask) and taken synchronously with sigwait(). When the
 * node is ready it prints one line on stdout:
 *   cityopsd: node 1 ready grpc=127.0.0.1:7001 port=7001 raft=127.0.0.1:9001
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "proto/clog.h"
#include "node.h"

static void usage(FILE *f)
{
    fprintf(f, "usage: cityopsd --config FILE [--log-level "
               "debug|info|warn|error]\n");
}

int main(int argc, char **argv)
{
    struct node_config cfg;
    struct node *n;
    const char *config = NULL;
    const char *level = NULL;
    char err[600];
    sigset_t set;
    int port = 0;
    int sig = 0;
    int lv;

    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--config") == 0 && i + 1 < argc) {
            config = argv[++i];
        } else if (strcmp(argv[i], "--log-level") == 0 && i + 1 < argc) {
            level = argv[++i];
        } else if (strcmp(argv[i], "--help") == 0) {
            usage(stdout);
            return 0;
        } else {
            fprintf(stderr, "cityopsd: unknown argument \"%s\"\n", argv[i]);
            usage(stderr);
            return 2;
        }
    }
    if (config == NULL) {
        usage(stderr);
        return 2;
    }
    if (node_config_load(config, &cfg, err, sizeof err) != 0) {
        fprintf(stderr, "cityopsd: config: %s\n", err);
        return 1;
    }
    lv = clog_level_parse(level != NULL ? level : cfg.log_level);
    if (lv < 0) {
        fprintf(stderr, "cityopsd: unknown log level \"%s\"\n",
                level != NULL ? level : cfg.log_level);
        return 2;
    }
    clog_set_level((enum clog_level)lv);
    clog_set_name(cfg.name);

    /* A peer that goes away mid-write must not kill the node. */
    signal(SIGPIPE, SIG_IGN);
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &set, NULL);

    if (node_start(&cfg, &n, &port) != 0) {
        clog(CLOG_ERROR, "node", "node %llu failed to start; see above",
             (unsigned long long)cfg.id);
        return 1;
    }
    printf("cityopsd: node %llu ready grpc=%s port=%d raft=%s\n",
           (unsigned long long)cfg.id, cfg.grpc_address, port,
           cfg.raft_address);
    fflush(stdout);
    clog(CLOG_INFO, "node", "serving gRPC on %s, raft on %s",
         cfg.grpc_address, cfg.raft_address);

    while (sig != SIGINT && sig != SIGTERM) {
        if (sigwait(&set, &sig) != 0) {
            break;
        }
    }
    clog(CLOG_INFO, "node", "signal %d: shutting down", sig);
    if (node_stop(n)) {
        /* Quorum-loss recovery or reset: the plan is on disk; start again
         * as the same process so that whoever supervises it keeps its PID. */
        clog(CLOG_WARN, "node", "restarting in place to carry out the plan "
                                "in %s", cfg.data_dir);
        fflush(NULL);
        execv("/proc/self/exe", argv);
        clog(CLOG_ERROR, "node", "restart in place failed: %s; start "
                                 "cityopsd again by hand",
             strerror(errno));
        return 1;
    }
    return 0;
}
