/* node: cityopsd, one member of a cluster. It loads its INI config, opens the
 * store, starts the Raft loop and serves cityops.v1.Cases and
 * cityops.v1.Cluster over gRPC. Any node accepts any call: followers forward
 * writes (and linearizable reads) to the leader.
 */
#ifndef CITYOPS_NODE_H
#define CITYOPS_NODE_H

#include <stddef.h>
#include <stdint.h>

#include "consensus/cons.h"

/* Error codes: node owns -3000..-3999. */
enum {
    NODE_NOMEM = -3001,
    NODE_CONFIG = -3002, /* missing, unreadable or invalid config */
    NODE_START = -3003,  /* a component failed to start (see the log) */
};

#define NODE_PATH_SIZE 512
#define NODE_ADDRESS_SIZE 64

struct node_member {
    uint64_t id;
    char raft_address[NODE_ADDRESS_SIZE];
    char grpc_address[NODE_ADDRESS_SIZE];
    enum cons_member_role role;
    char zone[CONS_ZONE_SIZE];
};

#define NODE_MAX_LINKS 16
#define NODE_TIER_SIZE 65

/* A federation link from the config file ([federation] link = ...). */
#define NODE_MAX_KINDS 16
#define NODE_KIND_SIZE 33

struct node_link {
    char tier_id[NODE_TIER_SIZE];
    int kind; /* Cityops__V1__LinkKind */
    char endpoints[4][NODE_ADDRESS_SIZE];
    size_t n_endpoints;
    /* the message kinds accepted from it; none listed = every kind */
    char allowed_kinds[NODE_MAX_KINDS][NODE_KIND_SIZE];
    size_t n_allowed_kinds;
};

struct node_config {
    uint64_t id;
    char name[64];
    char data_dir[NODE_PATH_SIZE];
    char grpc_address[NODE_ADDRESS_SIZE];
    char raft_address[NODE_ADDRESS_SIZE];
    char log_level[16];
    unsigned heartbeat_ms;
    unsigned election_ms;
    unsigned snapshot_threshold;
    unsigned snapshot_trailing;
    unsigned log_budget_mb; /* [raft] log_budget_mb; 0 = entries only */
    int snapshot_stagger; /* voters snapshot at different indexes */
    int snapshot_full;    /* [raft] snapshot_mode = full */
    unsigned max_batch;
    unsigned write_wait_ms; /* bounded wait for a leader on writes */
    size_t map_size;        /* LMDB map size, bytes */
    unsigned sync_interval_ms; /* 0: fsync the store on every commit */
    unsigned auto_promote_ms; /* standby auto-promotion; 0 = off */
    char audit_key_file[NODE_PATH_SIZE]; /* Ed25519 PEM; "" = no signing */
    unsigned checkpoint_every;            /* records; 0 = on demand only */
    int one_voter_per_zone;
    char backup_dir[NODE_PATH_SIZE];  /* scheduled backups */
    unsigned backup_interval_s;       /* 0 = no scheduled backups */
    unsigned backup_keep;             /* scheduled backups kept */
    char archive_dir[NODE_PATH_SIZE]; /* command archive; "" = off */
    int drill_allow_faults;
    char public_http_address[NODE_ADDRESS_SIZE]; /* Open311; "" = off */
    unsigned tick_ms; /* [cases] tick_ms: overdue detection period */
    /* [federation]: off unless tier_id and listen are set */
    char tier_id[NODE_TIER_SIZE];
    char fed_listen[NODE_ADDRESS_SIZE];
    char fed_ca[NODE_PATH_SIZE];
    char fed_cert[NODE_PATH_SIZE];
    char fed_key[NODE_PATH_SIZE];
    unsigned fed_retry_ms; /* delivery retry / poll period */
    unsigned fed_stats_s;  /* leader publishes "stats" this often; 0 = off */
    struct node_link links[NODE_MAX_LINKS];
    size_t n_links;
    size_t n_members;
    struct node_member members[CONS_MAX_MEMBERS];
};

/* Parse @path into *cfg. On failure returns NODE_CONFIG and writes a
 * message naming the file, line and key into @err. */
int node_config_load(const char *path,
                     struct node_config *cfg,
                     char *err,
                     size_t err_size);

struct node;

/* Open the store, start Raft and the gRPC server. On success *out is owned
 * by the caller (release with node_stop()) and *grpc_port is the port the
 * gRPC server bound. */
int node_start(const struct node_config *cfg, struct node **out, int *grpc_port);

/* Stop serving, stop Raft, close the store. Returns 1 if the node asked to
 * be started again in place (quorum-loss recovery, reset), else 0. */
int node_stop(struct node *n);

const char *node_strerror(int rv);

#endif /* CITYOPS_NODE_H */
