/* Node configuration: one INI file per node (libinih).
 *
 *   [node]     id, name, data_dir, grpc_address, raft_address, log_level
 *   [raft]     profile (lan | multi-dc), heartbeat_ms, election_ms,
 *              snapshot_threshold, snapshot_trailing, snapshot_stagger,
 *              snapshot_mode (thin | full), log_budget_mb (default 64;
 *              at least 2; 0 = bounded by entries only), max_batch
 *   [storage]  map_size_mb, sync (commit | periodic), sync_interval_ms
 *   [server]   write_wait_ms
 *   [audit]    key_file (Ed25519 PEM, mode 0600), checkpoint_every
 *   [cluster]  member = ID RAFT_ADDRESS GRPC_ADDRESS [voter|standby|spare]
 *                       [ZONE]
 *              (one line per member of the initial cluster; a node that is
 *              not listed starts empty and joins when it is added),
 *              auto_promote_ms, one_voter_per_zone
 *   [backup]   dir (default <data_dir>/backups), interval_s (scheduled
 *              backups; 0 = off), keep (how many to keep, default 7),
 *              archive_dir (continuous command archive for point-in-time
 *              restore; "" = off)
 *   [drill]    allow_faults (true | false: Drill/Fault may inject faults)
 *   [public]   http_address (Open311 HTTP/JSON, IPv4 host:port; "" = off)
 *   [federation] tier_id, listen (mutual-TLS port), ca, cert, key (PEM
 *              files), retry_ms, link = TIER parent|child|peer
 *              HOST:PORT[,HOST:PORT...] [kinds=KIND[,KIND...]] (the
 *              remote cluster's federation addresses and the message
 *              kinds accepted from it, all if not given; one line per
 *              linked platform), stats_s (how
 *              often the leader publishes topic "stats"; default 0 = off)
 *   [cases]    tick_ms (how often the leader proposes a clock tick that
 *              marks overdue stages; default 60000)
 */
#include <errno.h>
#include <ini.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "node.h"

struct parse {
    struct node_config *cfg;
    char *err;
    size_t err_size;
    int failed;
};

static int parse_uint(const char *value, unsigned long long max,
                      unsigned long long *out)
{
    char *end;
    unsigned long long v;

    errno = 0;
    if (value[0] == '\0' || value[0] == '-') {
        return -1;
    }
    v = strtoull(value, &end, 10);
    if (errno != 0 || *end != '\0' || v > max) {
        return -1;
    }
    *out = v;
    return 0;
}

static int copy_str(char *dst, size_t size, const char *value)
{
    if (strlen(value) >= size) {
        return -1;
    }
    strcpy(dst, value);
    return 0;
}

static int parse_member(struct node_config *cfg, const char *value)
{
    struct node_member *m;
    char role[16] = "voter";
    unsigned long long id;
    char id_s[24];
    char extra[8] = "";
    int n;

    if (cfg->n_members >= CONS_MAX_MEMBERS) {
        return -1;
    }
    m = &cfg->members[cfg->n_members];
    n = sscanf(value, "%23s %63s %63s %15s %31s %7s", id_s, m->raft_address,
               m->grpc_address, role, m->zone, extra);
    if (n < 3 || n > 5 || parse_uint(id_s, UINT64_MAX, &id) != 0 ||
        id == 0) {
        return -1;
    }
    m->id = id;
    if (strcmp(role, "voter") == 0) {
        m->role = CONS_VOTER;
    } else if (strcmp(role, "standby") == 0) {
        m->role = CONS_STANDBY;
    } else if (strcmp(role, "spare") == 0) {
        m->role = CONS_SPARE;
    } else {
        return -1;
    }
    cfg->n_members++;
    return 0;
}

static int tier_ok(const char *t)
{
    size_t n = strlen(t);

    if (n == 0 || n >= NODE_TIER_SIZE) {
        return 0;
    }
    for (; *t != '\0'; t++) {
        if (!((*t >= 'a' && *t <= 'z') || (*t >= 'A' && *t <= 'Z') ||
              (*t >= '0' && *t <= '9') || *t == '.' || *t == '_' ||
              *t == '-')) {
            return 0;
        }
    }
    return 1;
}

/* kinds=KIND[,KIND...] into @l */
static int parse_kinds(struct node_link *l, char *value)
{
    char *save = NULL;
    char *tok;

    if (strncmp(value, "kinds=", 6) != 0) {
        return -1;
    }
    for (tok = strtok_r(value + 6, ",", &save); tok != NULL;
         tok = strtok_r(NULL, ",", &save)) {
        if (l->n_allowed_kinds == NODE_MAX_KINDS ||
            strlen(tok) >= NODE_KIND_SIZE) {
            return -1;
        }
        strcpy(l->allowed_kinds[l->n_allowed_kinds++], tok);
    }
    return l->n_allowed_kinds > 0 ? 0 : -1;
}

/* link = TIER KIND HOST:PORT[,HOST:PORT...] [kinds=KIND[,KIND...]] */
static int parse_link(struct node_config *cfg, const char *value)
{
    struct node_link *l;
    char kind[16];
    char eps[4 * NODE_ADDRESS_SIZE];
    char kinds[NODE_MAX_KINDS * NODE_KIND_SIZE + 8] = "";
    char extra[8] = "";
    char *save = NULL;
    char *tok;
    int n;

    if (cfg->n_links >= NODE_MAX_LINKS) {
        return -1;
    }
    l = &cfg->links[cfg->n_links];
    memset(l, 0, sizeof *l);
    n = sscanf(value, "%64s %15s %255s %535s %7s", l->tier_id, kind, eps,
               kinds, extra);
    if (n < 3 || n > 4 || !tier_ok(l->tier_id)) {
        return -1;
    }
    if (n == 4 && parse_kinds(l, kinds) != 0) {
        return -1;
    }
    if (strcmp(kind, "parent") == 0) {
        l->kind = 1;
    } else if (strcmp(kind, "child") == 0) {
        l->kind = 2;
    } else if (strcmp(kind, "peer") == 0) {
        l->kind = 3;
    } else {
        return -1;
    }
    for (tok = strtok_r(eps, ",", &save); tok != NULL;
         tok = strtok_r(NULL, ",", &save)) {
        if (l->n_endpoints == 4 || strlen(tok) >= NODE_ADDRESS_SIZE ||
            strchr(tok, ':') == NULL) {
            return -1;
        }
        strcpy(l->endpoints[l->n_endpoints++], tok);
    }
    if (l->n_endpoints == 0) {
        return -1;
    }
    for (size_t i = 0; i < cfg->n_links; i++) {
        if (strcmp(cfg->links[i].tier_id, l->tier_id) == 0) {
            return -1;
        }
    }
    cfg->n_links++;
    return 0;
}

static int set_profile(struct node_config *cfg, const char *value)
{
    if (strcmp(value, "lan") == 0) {
        cfg->heartbeat_ms = 100;
        cfg->election_ms = 1000;
    } else if (strcmp(value, "multi-dc") == 0) {
        cfg->heartbeat_ms = 400;
        cfg->election_ms = 4000;
    } else {
        return -1;
    }
    return 0;
}

static int handle(void *user, const char *section, const char *key,
                  const char *value)
{
    struct parse *p = user;
    struct node_config *cfg = p->cfg;
    unsigned long long v = 0;
    int bad = 0;

#define IS(s, k) (strcmp(section, s) == 0 && strcmp(key, k) == 0)
    if (IS("node", "id")) {
        bad = parse_uint(value, UINT64_MAX, &v) != 0 || v == 0;
        cfg->id = v;
    } else if (IS("node", "name")) {
        bad = copy_str(cfg->name, sizeof cfg->name, value);
    } else if (IS("node", "data_dir")) {
        bad = copy_str(cfg->data_dir, sizeof cfg->data_dir, value);
    } else if (IS("node", "grpc_address")) {
        bad = copy_str(cfg->grpc_address, sizeof cfg->grpc_address, value);
    } else if (IS("node", "raft_address")) {
        bad = copy_str(cfg->raft_address, sizeof cfg->raft_address, value);
    } else if (IS("node", "log_level")) {
        bad = copy_str(cfg->log_level, sizeof cfg->log_level, value);
    } else if (IS("raft", "profile")) {
        bad = set_profile(cfg, value);
    } else if (IS("raft", "heartbeat_ms")) {
        bad = parse_uint(value, 60000, &v) != 0 || v == 0;
        cfg->heartbeat_ms = (unsigned)v;
    } else if (IS("raft", "election_ms")) {
        bad = parse_uint(value, 600000, &v) != 0 || v == 0;
        cfg->election_ms = (unsigned)v;
    } else if (IS("raft", "snapshot_threshold")) {
        bad = parse_uint(value, 1u << 30, &v) != 0 || v == 0;
        cfg->snapshot_threshold = (unsigned)v;
    } else if (IS("raft", "snapshot_trailing")) {
        bad = parse_uint(value, 1u << 30, &v) != 0;
        cfg->snapshot_trailing = (unsigned)v;
    } else if (IS("raft", "log_budget_mb")) {
        bad = parse_uint(value, 1u << 20, &v) != 0 || v == 1;
        cfg->log_budget_mb = (unsigned)v;
    } else if (IS("raft", "snapshot_mode")) {
        bad = strcmp(value, "thin") != 0 && strcmp(value, "full") != 0;
        cfg->snapshot_full = strcmp(value, "full") == 0;
    } else if (IS("raft", "snapshot_stagger")) {
        bad = strcmp(value, "true") != 0 && strcmp(value, "false") != 0;
        cfg->snapshot_stagger = strcmp(value, "true") == 0;
    } else if (IS("raft", "max_batch")) {
        bad = parse_uint(value, 65536, &v) != 0 || v == 0;
        cfg->max_batch = (unsigned)v;
    } else if (IS("storage", "map_size_mb")) {
        bad = parse_uint(value, 1u << 24, &v) != 0 || v < 1;
        cfg->map_size = (size_t)v << 20;
    } else if (IS("storage", "sync")) {
        bad = strcmp(value, "commit") != 0 && strcmp(value, "periodic") != 0;
        if (strcmp(value, "commit") == 0) {
            cfg->sync_interval_ms = 0;
        } else if (cfg->sync_interval_ms == 0) {
            cfg->sync_interval_ms = 100;
        }
    } else if (IS("storage", "sync_interval_ms")) {
        bad = parse_uint(value, 60000, &v) != 0 || v == 0;
        cfg->sync_interval_ms = (unsigned)v;
    } else if (IS("server", "write_wait_ms")) {
        bad = parse_uint(value, 600000, &v) != 0;
        cfg->write_wait_ms = (unsigned)v;
    } else if (IS("audit", "key_file")) {
        bad = copy_str(cfg->audit_key_file, sizeof cfg->audit_key_file, value);
    } else if (IS("audit", "checkpoint_every")) {
        bad = parse_uint(value, 1u << 30, &v) != 0;
        cfg->checkpoint_every = (unsigned)v;
    } else if (IS("cluster", "member")) {
        bad = parse_member(cfg, value);
    } else if (IS("cluster", "auto_promote_ms")) {
        bad = parse_uint(value, 3600000, &v) != 0;
        cfg->auto_promote_ms = (unsigned)v;
    } else if (IS("cluster", "one_voter_per_zone")) {
        bad = strcmp(value, "true") != 0 && strcmp(value, "false") != 0;
        cfg->one_voter_per_zone = strcmp(value, "true") == 0;
    } else if (IS("backup", "dir")) {
        bad = copy_str(cfg->backup_dir, sizeof cfg->backup_dir, value) ||
              value[0] == '\0';
    } else if (IS("backup", "interval_s")) {
        bad = parse_uint(value, 30 * 86400, &v) != 0 || (v > 0 && v < 10);
        cfg->backup_interval_s = (unsigned)v;
    } else if (IS("backup", "keep")) {
        bad = parse_uint(value, 1000, &v) != 0 || v == 0;
        cfg->backup_keep = (unsigned)v;
    } else if (IS("backup", "archive_dir")) {
        bad = copy_str(cfg->archive_dir, sizeof cfg->archive_dir, value);
    } else if (IS("federation", "tier_id")) {
        bad = !tier_ok(value) ||
              copy_str(cfg->tier_id, sizeof cfg->tier_id, value);
    } else if (IS("federation", "listen")) {
        bad = copy_str(cfg->fed_listen, sizeof cfg->fed_listen, value);
    } else if (IS("federation", "ca")) {
        bad = copy_str(cfg->fed_ca, sizeof cfg->fed_ca, value);
    } else if (IS("federation", "cert")) {
        bad = copy_str(cfg->fed_cert, sizeof cfg->fed_cert, value);
    } else if (IS("federation", "key")) {
        bad = copy_str(cfg->fed_key, sizeof cfg->fed_key, value);
    } else if (IS("federation", "retry_ms")) {
        bad = parse_uint(value, 600000, &v) != 0 || v < 50;
        cfg->fed_retry_ms = (unsigned)v;
    } else if (IS("federation", "link")) {
        bad = parse_link(cfg, value);
    } else if (IS("federation", "stats_s")) {
        bad = parse_uint(value, 86400 * 31, &v) != 0;
        cfg->fed_stats_s = (unsigned)v;
    } else if (IS("cases", "tick_ms")) {
        bad = parse_uint(value, 3600000, &v) != 0 || v < 100;
        cfg->tick_ms = (unsigned)v;
    } else if (IS("drill", "allow_faults")) {
        bad = strcmp(value, "true") != 0 && strcmp(value, "false") != 0;
        cfg->drill_allow_faults = strcmp(value, "true") == 0;
    } else if (IS("public", "http_address")) {
        bad = copy_str(cfg->public_http_address,
                       sizeof cfg->public_http_address, value);
    } else {
        snprintf(p->err, p->err_size, "unknown key [%s] %s", section, key);
        p->failed = 1;
        return 0;
    }
#undef IS
    if (bad) {
        snprintf(p->err, p->err_size, "bad value for [%s] %s: \"%s\"",
                 section, key, value);
        p->failed = 1;
        return 0;
    }
    return 1;
}

static int check(struct node_config *cfg, char *err, size_t err_size)
{
    const char *missing = NULL;

    if (cfg->id == 0) {
        missing = "[node] id";
    } else if (cfg->data_dir[0] == '\0') {
        missing = "[node] data_dir";
    } else if (cfg->grpc_address[0] == '\0') {
        missing = "[node] grpc_address";
    } else if (cfg->raft_address[0] == '\0') {
        missing = "[node] raft_address";
    } else if (cfg->n_members == 0) {
        missing = "[cluster] member (the initial members, or the members of "
                  "the cluster this node joins)";
    }
    if (missing != NULL) {
        snprintf(err, err_size, "missing %s", missing);
        return NODE_CONFIG;
    }
    for (size_t i = 0; i < cfg->n_members; i++) {
        for (size_t j = 0; j < i; j++) {
            if (cfg->members[i].id == cfg->members[j].id) {
                snprintf(err, err_size, "member id %llu listed twice",
                         (unsigned long long)cfg->members[i].id);
                return NODE_CONFIG;
            }
        }
    }
    if (cfg->election_ms <= cfg->heartbeat_ms) {
        snprintf(err, err_size,
                 "election_ms (%u) must be larger than heartbeat_ms (%u)",
                 cfg->election_ms, cfg->heartbeat_ms);
        return NODE_CONFIG;
    }
    if (cfg->fed_listen[0] != '\0' &&
        (cfg->tier_id[0] == '\0' || cfg->fed_ca[0] == '\0' ||
         cfg->fed_cert[0] == '\0' || cfg->fed_key[0] == '\0')) {
        snprintf(err, err_size, "[federation] listen needs tier_id, ca, "
                                "cert and key (mutual TLS only)");
        return NODE_CONFIG;
    }
    if (cfg->backup_dir[0] == '\0' &&
        snprintf(cfg->backup_dir, sizeof cfg->backup_dir, "%s/backups",
                 cfg->data_dir) >= (int)sizeof cfg->backup_dir) {
        snprintf(err, err_size, "[node] data_dir is too long");
        return NODE_CONFIG;
    }
    if (cfg->name[0] == '\0') {
        snprintf(cfg->name, sizeof cfg->name, "n%llu",
                 (unsigned long long)cfg->id);
    }
    return 0;
}

int node_config_load(const char *path,
                     struct node_config *cfg,
                     char *err,
                     size_t err_size)
{
    struct parse p = {cfg, err, err_size, 0};
    char detail[200];
    int rv;

    memset(cfg, 0, sizeof *cfg);
    strcpy(cfg->log_level, "info");
    cfg->heartbeat_ms = 100;
    cfg->election_ms = 1000;
    cfg->write_wait_ms = 5000;
    cfg->checkpoint_every = 1000;
    cfg->backup_keep = 7;
    cfg->tick_ms = 60000;
    cfg->fed_retry_ms = 500;
    cfg->sync_interval_ms = 100;
    cfg->snapshot_stagger = 1;
    cfg->log_budget_mb = 64;
    cfg->map_size = (size_t)1 << 30;
    rv = ini_parse(path, handle, &p);
    if (rv == -1) {
        snprintf(err, err_size, "%s: cannot open: %s", path, strerror(errno));
        return NODE_CONFIG;
    }
    if (p.failed || rv != 0) {
        if (!p.failed) {
            snprintf(detail, sizeof detail, "syntax error");
        } else {
            snprintf(detail, sizeof detail, "%s", err);
        }
        snprintf(err, err_size, "%s:%d: %s", path, rv, detail);
        return NODE_CONFIG;
    }
    rv = check(cfg, detail, sizeof detail);
    if (rv != 0) {
        snprintf(err, err_size, "%s: %s", path, detail);
    }
    return rv;
}
