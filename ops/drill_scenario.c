/* Drill scenario files: INI (libinih), one per scenario in ops/drills/.
 *
 *   [drill]    description, fault, nodes, zones ("a a b b c"), writers,
 *              readers, warmup_s, observe_s, restart_after_s, fault_s,
 *              use_archive, void_count, write_interval_ms
 *   [targets]  rto_write_max_s, rto_health_max_s (negative: measured
 *              only), rpo_max (-1: measured only), converge, history
 *
 * An unknown key is an error, as in node configs: a typo in a target must
 * not turn a check off silently.
 */
#include <errno.h>
#include <ini.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "drill.h"

#ifndef CITYOPS_DRILL_DIR
#define CITYOPS_DRILL_DIR "ops/drills"
#endif

static const char *const fault_names[DRILL_N_FAULTS] = {
    [DRILL_FAULT_LEADER_KILL] = "leader-kill",
    [DRILL_FAULT_FOLLOWER_KILL] = "follower-kill",
    [DRILL_FAULT_LEADER_PAUSE] = "leader-pause",
    [DRILL_FAULT_SITE_LOSS] = "site-loss",
    [DRILL_FAULT_QUORUM_LOSS] = "quorum-loss",
    [DRILL_FAULT_RESTORE] = "restore-from-backup",
    [DRILL_FAULT_PITR] = "point-in-time-restore",
    [DRILL_FAULT_DISK_FULL] = "disk-full",
    [DRILL_FAULT_ROLLING_RESTART] = "rolling-restart",
};

const char *drill_fault_name(int fault)
{
    if (fault < 0 || fault >= DRILL_N_FAULTS) {
        return "?";
    }
    return fault_names[fault];
}

int drill_fault_remote(int fault)
{
    return fault == DRILL_FAULT_LEADER_KILL ||
           fault == DRILL_FAULT_FOLLOWER_KILL ||
           fault == DRILL_FAULT_LEADER_PAUSE || fault == DRILL_FAULT_DISK_FULL;
}

const char *drill_scenario_dir(const char *override)
{
    if (override != NULL && *override != '\0') {
        return override;
    }
    return CITYOPS_DRILL_DIR;
}

struct parse {
    struct drill_scenario *sc;
    char *err;
    size_t errlen;
    int failed;
};

static int parse_double(const char *v, double *out)
{
    char *end;

    errno = 0;
    *out = strtod(v, &end);
    return errno != 0 || end == v || *end != '\0' || !isfinite(*out) ? -1 : 0;
}

static int parse_int(const char *v, long min, long max, int *out)
{
    char *end;
    long n;

    errno = 0;
    n = strtol(v, &end, 10);
    if (errno != 0 || end == v || *end != '\0' || n < min || n > max) {
        return -1;
    }
    *out = (int)n;
    return 0;
}

static int parse_bool(const char *v, int *out)
{
    if (strcmp(v, "true") == 0 || strcmp(v, "yes") == 0 ||
        strcmp(v, "1") == 0) {
        *out = 1;
    } else if (strcmp(v, "false") == 0 || strcmp(v, "no") == 0 ||
               strcmp(v, "0") == 0) {
        *out = 0;
    } else {
        return -1;
    }
    return 0;
}

static int parse_zones(struct drill_scenario *sc, const char *v)
{
    char buf[256];
    char *save = NULL;
    char *tok;

    if (strlen(v) >= sizeof(buf)) {
        return -1;
    }
    strcpy(buf, v);
    sc->n_zones = 0;
    for (tok = strtok_r(buf, " \t,", &save); tok != NULL;
         tok = strtok_r(NULL, " \t,", &save)) {
        if (sc->n_zones == DRILL_MAX_NODES ||
            strlen(tok) >= sizeof(sc->zones[0])) {
            return -1;
        }
        strcpy(sc->zones[sc->n_zones++], tok);
    }
    return 0;
}

static int parse_fault(const char *v, int *out)
{
    int i;

    for (i = 0; i < DRILL_N_FAULTS; i++) {
        if (strcmp(v, fault_names[i]) == 0) {
            *out = i;
            return 0;
        }
    }
    return -1;
}

static int handle_drill(struct drill_scenario *sc, const char *key,
                        const char *v, int *known)
{
    *known = 1;
    if (strcmp(key, "description") == 0) {
        if (strlen(v) >= sizeof(sc->description)) {
            return -1;
        }
        strcpy(sc->description, v);
        return 0;
    }
    if (strcmp(key, "fault") == 0) {
        return parse_fault(v, &sc->fault);
    }
    if (strcmp(key, "nodes") == 0) {
        return parse_int(v, 1, DRILL_MAX_NODES, &sc->nodes);
    }
    if (strcmp(key, "zones") == 0) {
        return parse_zones(sc, v);
    }
    if (strcmp(key, "writers") == 0) {
        return parse_int(v, 1, DRILL_MAX_THREADS, &sc->writers);
    }
    if (strcmp(key, "readers") == 0) {
        return parse_int(v, 0, DRILL_MAX_THREADS, &sc->readers);
    }
    if (strcmp(key, "warmup_s") == 0) {
        return parse_double(v, &sc->warmup_s) || sc->warmup_s < 0;
    }
    if (strcmp(key, "observe_s") == 0) {
        return parse_double(v, &sc->observe_s) || sc->observe_s < 0;
    }
    if (strcmp(key, "restart_after_s") == 0) {
        return parse_double(v, &sc->restart_after_s) ||
               sc->restart_after_s < 0;
    }
    if (strcmp(key, "fault_s") == 0) {
        return parse_double(v, &sc->fault_s) || sc->fault_s < 0;
    }
    if (strcmp(key, "use_archive") == 0) {
        return parse_bool(v, &sc->use_archive);
    }
    if (strcmp(key, "void_count") == 0) {
        return parse_int(v, 1, 100000, &sc->void_count);
    }
    if (strcmp(key, "write_interval_ms") == 0) {
        return parse_int(v, 0, 10000, &sc->write_interval_ms);
    }
    *known = 0;
    return 0;
}

static int handle_targets(struct drill_targets *t, const char *key,
                          const char *v, int *known)
{
    double d;

    *known = 1;
    if (strcmp(key, "rto_write_max_s") == 0) {
        return parse_double(v, &t->rto_write_max_s);
    }
    if (strcmp(key, "rto_health_max_s") == 0) {
        return parse_double(v, &t->rto_health_max_s);
    }
    if (strcmp(key, "rpo_max") == 0) {
        if (parse_double(v, &d) != 0 || d != floor(d) || d < -1) {
            return -1;
        }
        t->rpo_max = (int64_t)d;
        return 0;
    }
    if (strcmp(key, "converge") == 0) {
        return parse_bool(v, &t->converge);
    }
    if (strcmp(key, "history") == 0) {
        return parse_bool(v, &t->history);
    }
    *known = 0;
    return 0;
}

static int handle(void *user, const char *section, const char *key,
                  const char *value)
{
    struct parse *p = user;
    int known = 0;
    int bad = 0;

    if (strcmp(section, "drill") == 0) {
        bad = handle_drill(p->sc, key, value, &known);
    } else if (strcmp(section, "targets") == 0) {
        bad = handle_targets(&p->sc->targets, key, value, &known);
    }
    if (!known) {
        snprintf(p->err, p->errlen, "unknown key [%s] %s", section, key);
        p->failed = 1;
        return 0;
    }
    if (bad) {
        snprintf(p->err, p->errlen, "bad value for [%s] %s: \"%s\"", section,
                 key, value);
        p->failed = 1;
        return 0;
    }
    return 1;
}

static void defaults(struct drill_scenario *sc, const char *name)
{
    memset(sc, 0, sizeof(*sc));
    snprintf(sc->name, sizeof(sc->name), "%s", name);
    sc->fault = -1;
    sc->nodes = 3;
    sc->writers = 4;
    sc->readers = 2;
    sc->warmup_s = 3;
    sc->observe_s = 5;
    sc->restart_after_s = 2;
    sc->use_archive = 1;
    sc->void_count = 200;
    sc->write_interval_ms = 5;
    sc->targets.rto_write_max_s = 15;
    sc->targets.rto_health_max_s = 30;
    sc->targets.rpo_max = 0;
    sc->targets.converge = 1;
    sc->targets.history = 1;
}

/* What a fault needs of the topology. */
static int check(const struct drill_scenario *sc, char *err, size_t errlen)
{
    if (sc->fault < 0) {
        snprintf(err, errlen, "[drill] fault is missing");
        return OPS_INVALID;
    }
    if (sc->n_zones != 0 && sc->n_zones != sc->nodes) {
        snprintf(err, errlen, "[drill] zones lists %d zones for %d nodes",
                 sc->n_zones, sc->nodes);
        return OPS_INVALID;
    }
    if (sc->fault == DRILL_FAULT_SITE_LOSS && sc->n_zones == 0) {
        snprintf(err, errlen, "site-loss needs [drill] zones");
        return OPS_INVALID;
    }
    if ((sc->fault == DRILL_FAULT_FOLLOWER_KILL ||
         sc->fault == DRILL_FAULT_LEADER_KILL ||
         sc->fault == DRILL_FAULT_LEADER_PAUSE ||
         sc->fault == DRILL_FAULT_QUORUM_LOSS ||
         sc->fault == DRILL_FAULT_DISK_FULL) &&
        sc->nodes < 3) {
        snprintf(err, errlen, "%s needs at least 3 nodes",
                 drill_fault_name(sc->fault));
        return OPS_INVALID;
    }
    return 0;
}

int drill_scenario_load(const char *path,
                        const char *name,
                        struct drill_scenario *sc,
                        char *err,
                        size_t errlen)
{
    struct parse p = {sc, err, errlen, 0};
    char detail[200];
    int rv;

    defaults(sc, name);
    rv = ini_parse(path, handle, &p);
    if (rv == -1) {
        snprintf(err, errlen, "%s: cannot open: %s", path, strerror(errno));
        return OPS_INVALID;
    }
    if (p.failed || rv != 0) {
        snprintf(detail, sizeof(detail), "%s",
                 p.failed ? err : "syntax error");
        snprintf(err, errlen, "%s:%d: %s", path, rv, detail);
        return OPS_INVALID;
    }
    if (check(sc, detail, sizeof(detail)) != 0) {
        snprintf(err, errlen, "%s: %s", path, detail);
        return OPS_INVALID;
    }
    return 0;
}
