/* cityctl drill: list the scenarios, run one, show the cluster's drill
 * history. See drill.h for how a drill is put together.
 *
 *   drill list [--scenarios DIR]
 *   drill run SCENARIO [--local [N]] [--cityopsd PATH] [--duration S]
 *             [--out DIR] [--keep] [--scenarios DIR]
 *   drill history
 *
 * "--local N": cityctl's option table has "local" as a flag (cluster
 * status --local), so N is the positional argument after SCENARIO; without
 * it the scenario's node count is used.
 *
 * Exit status of run: 0 the drill passed, 1 it failed or could not run,
 * 2 usage error.
 */
#include <dirent.h>
#include <libgen.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "drill.h"

#define DEFAULT_OUT "run/drills"

static int ends_with(const char *s, const char *suffix)
{
    size_t a = strlen(s);
    size_t b = strlen(suffix);

    return a >= b && strcmp(s + a - b, suffix) == 0;
}

static int ini_filter(const struct dirent *d)
{
    return d->d_name[0] != '.' && ends_with(d->d_name, ".ini");
}

static int run_list(struct ops_ctl *ctl, const struct ops_args *a)
{
    const char *dir = drill_scenario_dir(ops_arg(a, "scenarios"));
    struct dirent **names = NULL;
    json_t *arr = ctl->json ? json_array() : NULL;
    int n = scandir(dir, &names, ini_filter, alphasort);
    int rv = OPS_EXIT_OK;
    int i;

    if (n < 0) {
        fprintf(stderr, "cityctl: drill list: %s: cannot read the scenario "
                        "directory\n", dir);
        json_decref(arr);
        return OPS_EXIT_FAIL;
    }
    for (i = 0; i < n; i++) {
        struct drill_scenario sc;
        char path[PATH_MAX];
        char name[DRILL_NAME_MAX];
        char err[512];

        snprintf(path, sizeof(path), "%s/%s", dir, names[i]->d_name);
        snprintf(name, sizeof(name), "%.*s",
                 (int)(strlen(names[i]->d_name) - 4), names[i]->d_name);
        free(names[i]);
        if (drill_scenario_load(path, name, &sc, err, sizeof(err)) != 0) {
            fprintf(stderr, "cityctl: %s\n", err);
            rv = OPS_EXIT_FAIL;
            continue;
        }
        if (arr != NULL) {
            json_array_append_new(
                arr, json_pack("{s:s,s:s,s:i,s:b,s:s}", "name", sc.name,
                               "fault", drill_fault_name(sc.fault), "nodes",
                               sc.nodes, "remote",
                               drill_fault_remote(sc.fault), "description",
                               sc.description));
        } else {
            printf("%-22s %-22s %d nodes%s  %s\n", sc.name,
                   drill_fault_name(sc.fault), sc.nodes,
                   drill_fault_remote(sc.fault) ? "" : " (--local)",
                   sc.description);
        }
    }
    free(names);
    if (arr != NULL) {
        json_t *j = json_pack("{s:s,s:o}", "dir", dir, "scenarios", arr);

        return j != NULL && ops_json_print(j) == OPS_EXIT_OK ? rv
                                                             : OPS_EXIT_FAIL;
    }
    return rv;
}

/* <dir of /proc/self/exe>/../node/cityopsd */
static void default_cityopsd(char *buf, size_t len)
{
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);

    if (n <= 0) {
        snprintf(buf, len, "cityopsd");
        return;
    }
    exe[n] = '\0';
    snprintf(buf, len, "%s/../node/cityopsd", dirname(exe));
}

static int scenario_find(struct ops_ctl *ctl,
                         const struct ops_args *a,
                         const char *arg,
                         struct drill_scenario *sc)
{
    const char *dir = drill_scenario_dir(ops_arg(a, "scenarios"));
    char path[PATH_MAX];
    char name[DRILL_NAME_MAX];
    char err[512];
    const char *base;

    if (strchr(arg, '/') != NULL || ends_with(arg, ".ini")) {
        snprintf(path, sizeof(path), "%s", arg);
    } else {
        snprintf(path, sizeof(path), "%s/%s.ini", dir, arg);
    }
    base = strrchr(path, '/') != NULL ? strrchr(path, '/') + 1 : path;
    snprintf(name, sizeof(name), "%.*s",
             ends_with(base, ".ini") ? (int)strlen(base) - 4
                                     : (int)strlen(base),
             base);
    if (access(path, R_OK) != 0) {
        return ops_usage_error(ctl, "drill run: no scenario '%s' (%s); see "
                                    "cityctl drill list",
                               arg, path);
    }
    if (drill_scenario_load(path, name, sc, err, sizeof(err)) != 0) {
        fprintf(stderr, "cityctl: %s\n", err);
        return OPS_EXIT_FAIL;
    }
    return OPS_EXIT_OK;
}

static int run_run(struct ops_ctl *ctl, const struct ops_args *a)
{
    static struct drill_scenario sc;
    static struct drill_result r;
    struct drill_opts o;
    char cityopsd[PATH_MAX];
    char paths[PATH_MAX + 64];
    const char *v;
    uint64_t n;
    int rv;

    memset(&o, 0, sizeof(o));
    if (a->n_pos < 3) {
        return ops_usage_error(ctl, "drill run: which scenario?");
    }
    if (a->n_pos > 4 || (a->n_pos == 4 && !ops_flag(a, "local"))) {
        return ops_usage_error(ctl, "drill run: unexpected argument '%s'",
                               a->pos[a->n_pos - 1]);
    }
    rv = scenario_find(ctl, a, a->pos[2], &sc);
    if (rv != OPS_EXIT_OK) {
        return rv;
    }
    if (ops_flag(a, "local")) {
        o.local_n = sc.nodes;
        if (a->n_pos == 4) {
            if (ops_parse_u64(a->pos[3], &n) != 0 || n == 0 ||
                n > DRILL_MAX_NODES) {
                return ops_usage_error(ctl, "drill run: --local N: 1 to %d "
                                            "nodes, not '%s'",
                                       DRILL_MAX_NODES, a->pos[3]);
            }
            o.local_n = (int)n;
        }
    } else if (ops_arg(a, "cityopsd") != NULL || ops_flag(a, "keep")) {
        return ops_usage_error(ctl, "drill run: --cityopsd and --keep go "
                                    "with --local");
    }
    if ((v = ops_arg(a, "duration")) != NULL &&
        (ops_parse_double(v, &o.duration_s) != 0 || o.duration_s <= 0)) {
        return ops_usage_error(ctl, "drill run: --duration: seconds > 0, "
                                    "not '%s'",
                               v);
    }
    if ((v = ops_arg(a, "cityopsd")) != NULL) {
        snprintf(cityopsd, sizeof(cityopsd), "%s", v);
    } else {
        default_cityopsd(cityopsd, sizeof(cityopsd));
    }
    o.cityopsd = cityopsd;
    o.out_dir = ops_arg(a, "out") != NULL ? ops_arg(a, "out") : DEFAULT_OUT;
    o.keep = ops_flag(a, "keep");
    o.json = ctl->json;
    o.timeout_ms = ctl->timeout_ms;
    drill_run(ctl, &sc, &o, &r);
    if (drill_report_save(&r, o.out_dir, paths, sizeof(paths)) == 0) {
        drill_say("reports: %s", paths);
    } else {
        drill_say("warning: reports not saved: %s", paths);
    }
    if (ctl->json) {
        json_t *j = drill_report_json(&r);

        if (j == NULL || ops_json_print(j) != OPS_EXIT_OK) {
            return OPS_EXIT_FAIL;
        }
    } else {
        drill_report_table(&r, stdout);
    }
    return r.passed ? OPS_EXIT_OK : OPS_EXIT_FAIL;
}

const char *ctl_drill_options(const char *sub)
{
    if (strcmp(sub, "list") == 0) {
        return "scenarios";
    }
    if (strcmp(sub, "run") == 0) {
        return "scenarios local cityopsd duration out keep";
    }
    if (strcmp(sub, "history") == 0) {
        return "";
    }
    return NULL;
}

int ctl_drill_run(struct ops_ctl *ctl, const struct ops_args *a)
{
    const char *sub = a->pos[1];

    if (strcmp(sub, "list") == 0) {
        return run_list(ctl, a);
    }
    if (strcmp(sub, "history") == 0) {
        if (a->n_pos > 2) {
            return ops_usage_error(ctl, "drill history: unexpected argument "
                                        "'%s'",
                                   a->pos[2]);
        }
        return drill_history(ctl);
    }
    return run_run(ctl, a);
}
