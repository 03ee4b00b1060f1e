/* drill: cityctl drill, the failover drills of ARCHITECTURE.md "Disaster
 * recovery". Internal to ops/ (cityctl only).
 *
 * DESIGN
 * A drill runs a scenario (an INI file in ops/drills/) against a cluster:
 * either a local one it starts itself (--local: N cityopsd processes it
 * spawns, kills, pauses and restarts by PID) or the configured one, where
 * faults go through the Drill/Fault RPC. While the fault happens a write
 * load (Cases/Report with retry keys) and a read load (linearizable
 * Cases/Get of acknowledged cases) run; afterwards the drill measures RTO,
 * RPO, convergence and the read history, judges them against the
 * scenario's targets, writes reports and records the outcome in the
 * cluster (Drill/Record).
 *
 * Files: drill.c (the command), drill_scenario.c (INI files),
 * drill_checks.c (pure accounting and judging: unit tested),
 * drill_rpc.c (blocking calls on channels that reconnect fast),
 * drill_local.c (local processes), drill_load.c (writers, readers),
 * drill_probe.c (health, convergence, verification), drill_run.c (the
 * phases of each fault), drill_report.c (table, JSON, Markdown, record).
 *
 * Times are int64 microseconds: monotonic (drill_now_us) for durations,
 * realtime (drill_wall_us) for what goes into reports and restore limits.
 */
#ifndef CITYOPS_DRILL_H
#define CITYOPS_DRILL_H

#include <limits.h>
#include <pthread.h>
#include <stdint.h>
#include <sys/types.h>

#include "ops.h"

#define DRILL_MAX_NODES 9
#define DRILL_MAX_THREADS 32
#define DRILL_MAX_FAILURES 12
#define DRILL_NAME_MAX 64
#define DRILL_TOKEN_PREFIX "drill load "

enum drill_fault {
    DRILL_FAULT_LEADER_KILL = 0,
    DRILL_FAULT_FOLLOWER_KILL,
    DRILL_FAULT_LEADER_PAUSE,
    DRILL_FAULT_SITE_LOSS,
    DRILL_FAULT_QUORUM_LOSS,
    DRILL_FAULT_RESTORE,
    DRILL_FAULT_PITR,
    DRILL_FAULT_DISK_FULL,
    DRILL_FAULT_ROLLING_RESTART,
    DRILL_N_FAULTS,
};

/* Pass/fail thresholds. A negative maximum means "measured only". */
struct drill_targets {
    double rto_write_max_s;
    double rto_health_max_s;
    int64_t rpo_max;
    int converge; /* digests must agree */
    int history;  /* zero read-history violations */
};

struct drill_scenario {
    char name[DRILL_NAME_MAX];
    char description[256];
    int nodes;
    char zones[DRILL_MAX_NODES][16];
    int n_zones;
    int fault; /* enum drill_fault */
    int writers;
    int readers;
    double warmup_s;
    double observe_s;
    double restart_after_s;
    double fault_s;        /* pause / disk-full length; 0 = 2 elections */
    int use_archive;       /* restore scenarios: replay the archive */
    int void_count;        /* point-in-time-restore: phase B size */
    int write_interval_ms; /* pause between one writer's writes */
    struct drill_targets targets;
};

/* --- drill_scenario.c --- */

const char *drill_fault_name(int fault);
/* 1 if the fault can be injected through Drill/Fault (no --local). */
int drill_fault_remote(int fault);
/* Parse the scenario file @path; @name is the scenario's name (the file
 * name without ".ini"). Defaults fill what the file leaves out. Returns 0,
 * or OPS_INVALID with a sentence in @err. */
int drill_scenario_load(const char *path,
                        const char *name,
                        struct drill_scenario *sc,
                        char *err,
                        size_t errlen);
/* The scenario directory: @override, else the source tree's ops/drills. */
const char *drill_scenario_dir(const char *override);

/* --- drill_checks.c: pure accounting --- */

/* One acknowledged write. Its token is "<drill id>/w<writer>/<seq>". */
struct drill_ack {
    uint64_t case_id;
    uint32_t writer;
    uint32_t phase; /* 0 before the fault's "mistake", 1 after (PITR) */
    uint64_t seq;
    int64_t sent_us; /* monotonic: start of the attempt that succeeded */
    int64_t acked_us;
};

/* What verification found for one acknowledged write. */
enum drill_found {
    DRILL_FOUND_OK = 0,
    DRILL_FOUND_MISSING,   /* NOT_FOUND */
    DRILL_FOUND_MISMATCH,  /* another write's case at that id */
    DRILL_FOUND_VOIDED,    /* present, but voided (PITR) */
    DRILL_FOUND_UNCHECKED, /* could not be read */
};

/* Seconds from @t0 to the first acknowledgement of a write sent after
 * @t0 (sent_us > t0); -1 if there is none. */
double drill_rto_write(const struct drill_ack *acks, size_t n, int64_t t0);
/* Acknowledged writes that are gone: MISSING, MISMATCH and (with
 * @voided_lost) VOIDED. UNCHECKED ones are counted in *unchecked. */
int64_t drill_rpo_count(const uint8_t *found,
                        size_t n,
                        int voided_lost,
                        int64_t *unchecked);
/* Tokens that appear on more than one case: the number of extra cases.
 * @tokens is sorted in place. */
int64_t drill_doubled_count(char **tokens, size_t n);
/* The token of a load description, or NULL if it is not one. */
const char *drill_token_of(const char *description);
void drill_token_make(char *buf,
                      size_t len,
                      const char *drill_id,
                      uint32_t writer,
                      uint64_t seq);

struct drill_restart {
    uint64_t node_id;
    double rto_write_s;
    double rto_health_s;
};

struct drill_result {
    char drill_id[DRILL_NAME_MAX];
    char scenario[DRILL_NAME_MAX];
    char fault[32];
    char target[160];
    int64_t started_at; /* UTC us */
    double elapsed_s;
    int nodes;
    uint64_t acked;
    uint64_t unknown;
    uint64_t write_attempts;
    uint64_t write_errors;
    uint64_t reads;
    uint64_t read_errors;
    uint64_t violations;
    char violation_example[200];
    double rto_write_s;  /* -1: no write after the fault was acknowledged */
    double rto_health_s; /* -1: never healthy */
    int64_t rpo_lost;    /* -1: not measured */
    int64_t unchecked;
    int64_t doubled; /* -1: not measured */
    int64_t leaked;  /* PITR: phase-B changes present; -1: n/a */
    int converged;
    char digest[80];
    uint64_t digest_index;
    struct drill_restart restarts[DRILL_MAX_NODES];
    int n_restarts;
    char fault_detail[256];
    char error[256]; /* the drill itself could not run as planned */
    int passed;
    char failures[DRILL_MAX_FAILURES][160];
    int n_failures;
    uint64_t record_index;
    char record_error[200];
};

/* Judge @r against @t: fills r->failures and r->passed. Doubled writes,
 * leaked PITR changes and r->error fail any drill. */
void drill_evaluate(const struct drill_targets *t, struct drill_result *r);

/* --- drill_rpc.c --- */

struct drill_chan;

/* A channel with its own subchannel pool and a short reconnect back-off,
 * so that a restarted node is called again within ~0.5 s. NULL on
 * allocation failure. */
struct drill_chan *drill_chan_open(const char *target);
void drill_chan_close(struct drill_chan *ch);
const char *drill_chan_target(const struct drill_chan *ch);
/* Blocking unary call of "/cityops.v1.@method". Returns the gRPC status
 * (or GRPC_STATUS_INTERNAL if the reply did not decode); on OK *resp is
 * the reply (caller frees with protobuf_c_message_free_unpacked), else
 * NULL and @details (if not NULL) holds the message. Thread-safe. */
int drill_call(struct drill_chan *ch,
               const char *method,
               const ProtobufCMessage *req,
               const ProtobufCMessageDescriptor *resp_desc,
               int timeout_ms,
               ProtobufCMessage **resp,
               char *details,
               size_t dlen);

/* The endpoints a drill talks to, with one channel each. Channels for
 * addresses learnt at run time (members in a status reply) are added by
 * drill_env_chan(). */
struct drill_env {
    pthread_mutex_t mu;
    char *addr[OPS_MAX_ENDPOINTS];
    struct drill_chan *chan[OPS_MAX_ENDPOINTS];
    int n;
    int n_load; /* the first n_load are the ones the load uses */
};

int drill_env_init(struct drill_env *env, char *const *endpoints, int n);
void drill_env_close(struct drill_env *env);
/* The channel of @addr, opened if new; NULL if the table is full. */
struct drill_chan *drill_env_chan(struct drill_env *env, const char *addr);

int64_t drill_now_us(void);
int64_t drill_wall_us(void);
void drill_sleep_us(int64_t us);

/* --- drill_local.c --- */

struct drill_node {
    uint64_t id;
    int grpc_port;
    int raft_port;
    char grpc[32];
    char raft[32];
    char zone[16];
    char dir[PATH_MAX];
    char archive[PATH_MAX];
    char config[PATH_MAX];
    char out[PATH_MAX];
    char log[PATH_MAX];
    pid_t pid; /* 0 when not running */
    int paused;
};

struct drill_local {
    char run_dir[256];
    char cityopsd[PATH_MAX];
    int n;
    /* The cityopsd in use refuses the [drill] and [backup] keys (it
     * predates them): configs go without, and faults that need them are
     * refused. */
    int no_dr_keys;
    struct drill_node nodes[DRILL_MAX_NODES];
};

/* Make a run directory and @n node configs on free loopback ports. */
int drill_local_create(struct drill_local *l,
                       const char *cityopsd,
                       const struct drill_scenario *sc,
                       int n,
                       char *err,
                       size_t errlen);
/* (Re)write node @i's config; @only_self lists just itself as member. */
int drill_local_write_config(struct drill_local *l, int i, int only_self);
/* Spawn node @i and wait (up to 20 s) for its "ready" line. */
int drill_local_start(struct drill_local *l, int i, char *err, size_t errlen);
/* Send @sig to node @i; SIGKILL also reaps it. */
int drill_local_signal(struct drill_local *l, int i, int sig);
/* SIGCONT + SIGTERM, wait up to @grace_s, then SIGKILL. Returns 0 if the
 * node exited cleanly on SIGTERM. */
int drill_local_stop(struct drill_local *l, int i, double grace_s);
/* Stop every node; delete the run directory unless @keep. */
void drill_local_destroy(struct drill_local *l, int keep);
int drill_local_index(const struct drill_local *l, uint64_t id);
/* Remove a directory tree (the run dir, data dirs). */
int drill_rmtree(const char *path);

/* --- drill_load.c --- */

struct drill_load;

struct drill_load *drill_load_new(struct drill_env *env,
                                  const char *drill_id,
                                  int write_interval_ms);
/* Acknowledgements from now on carry @phase. */
void drill_load_set_phase(struct drill_load *ld, uint32_t phase);
/* Start @writers writer and @readers reader threads; may be called again
 * after drill_load_stop() (new writer ids, new client ids). */
int drill_load_start(struct drill_load *ld, int writers, int readers);
/* Stop and join every thread (a writer gives up its pending key). */
void drill_load_stop(struct drill_load *ld);
void drill_load_free(struct drill_load *ld);
/* A copy of the acknowledgements so far (malloc'd, caller frees). */
struct drill_ack *drill_load_acks(struct drill_load *ld, size_t *n);
uint64_t drill_load_acked(struct drill_load *ld);
/* Acknowledgements of writes sent after @t (monotonic us). */
uint64_t drill_load_acked_after(struct drill_load *ld, int64_t t);
/* Counters into @r (acked, unknown, attempts, errors, reads, ...). */
void drill_load_totals(struct drill_load *ld, struct drill_result *r);
/* One line of progress on stderr. */
void drill_load_progress(struct drill_load *ld, const char *phase);

/* --- drill_probe.c --- */

/* The leader id known to any load endpoint (0 if none) and its gRPC
 * address into @addr. */
uint64_t drill_leader(struct drill_env *env, char *addr, size_t len);
/* Wait up to @timeout_s for a leader; returns its id or 0. */
uint64_t drill_wait_leader(struct drill_env *env, double timeout_s);
/* 1 if healthy now: one leader every member agrees on, every member
 * answers with no store error and applied >= the leader's commit. Else 0,
 * and @why says what is missing. */
int drill_healthy(struct drill_env *env, char *why, size_t len);
/* Poll drill_healthy() until @deadline_us (monotonic); returns the time
 * it first held, or -1. */
int64_t drill_wait_healthy(struct drill_env *env, int64_t deadline_us,
                           char *why, size_t len);
/* Wait up to @timeout_s for identical digests at one applied index on
 * every member. */
int drill_converge(struct drill_env *env,
                   double timeout_s,
                   struct drill_result *r);
/* Read back every acknowledged write (linearizable Gets on @threads
 * threads) and list every case: fills rpo_lost, unchecked, doubled and,
 * with @pitr, leaked (voided cases). */
int drill_verify(struct drill_env *env,
                 const char *drill_id,
                 const struct drill_ack *acks,
                 size_t n,
                 int pitr,
                 struct drill_result *r);
/* Drill/Fault on the node at @addr. */
int drill_fault_rpc(struct drill_env *env,
                    const char *addr,
                    const char *fault,
                    uint32_t duration_ms,
                    const char *drill_id,
                    char *err,
                    size_t errlen);
/* Cluster/TransferLeader to @id. */
int drill_transfer(struct drill_env *env, uint64_t id);
/* Members (id, grpc address, zone) from a fan-out status. Returns how
 * many, 0 on failure. */
int drill_members(struct drill_env *env,
                  uint64_t *ids,
                  char (*addrs)[64],
                  char (*zones)[16],
                  int max);

/* --- drill_run.c --- */

struct drill_opts {
    int local_n; /* 0: the configured cluster */
    const char *cityopsd;
    double duration_s; /* 0: the scenario's */
    const char *out_dir;
    int keep;
    int json;
    int timeout_ms;
};

/* Run @sc; fills @r. Returns OPS_EXIT_OK if the drill ran (pass or fail
 * is in r->passed), OPS_EXIT_FAIL if it could not. */
int drill_run(struct ops_ctl *ctl,
              const struct drill_scenario *sc,
              const struct drill_opts *o,
              struct drill_result *r);

/* --- drill_report.c --- */

void drill_report_table(const struct drill_result *r, FILE *out);
json_t *drill_report_json(const struct drill_result *r);
int drill_report_save(const struct drill_result *r,
                      const char *dir,
                      char *paths,
                      size_t len);
/* Drill/Record in the cluster of @env. */
int drill_report_record(struct drill_env *env, struct drill_result *r);
/* cityctl drill history. */
int drill_history(struct ops_ctl *ctl);

/* Progress on stderr: "drill: <message>". */
void drill_say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif /* CITYOPS_DRILL_H */
