/* cityctl: the operator's command line for a cityops cluster.
 *
 * Parses the command line (global options may come before or after the
 * command), checks every option against what the subcommand accepts, and
 * hands over to ctl_case.c or ctl_cluster.c. Nothing is sent before the whole
 * command line has been accepted, so a typo never reaches a node.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "ops.h"

struct opt_spec {
    const char *name;
    int has_arg;
};

/* Every option any command knows; whether a command accepts it is decided
 * by ctl_*_options(). */
static const struct opt_spec opt_specs[] = {
    /* global */
    {"endpoints", 1},
    {"json", 0},
    {"timeout", 1},
    {"actor", 1},
    {"role", 1},
    {"client-id", 1},
    {"seq", 1},
    {"consistency", 1},
    {"min-index", 1},
    {"help", 0},
    /* case and cluster */
    {"type", 1},
    {"major", 1},
    {"minor", 1},
    {"component-id", 1},
    {"desc", 1},
    {"lon", 1},
    {"lat", 1},
    {"grid", 1},
    {"address", 1},
    {"datum", 1},
    {"attach", 1},
    {"inspector", 1},
    {"found", 0},
    {"not-found", 0},
    {"reason", 1},
    {"condition", 1},
    {"into", 1},
    {"raft", 1},
    {"target", 1},
    {"actor-id", 1},
    {"public-key", 1},
    {"tree-size", 1},
    {"archive", 1},
    {"out", 1},
    {"to-seq", 1},
    {"grpc", 1},
    {"as", 1},
    {"zone", 1},
    {"dept", 1},
    {"level", 1},
    {"deadline", 1},
    {"note", 1},
    {"until", 1},
    {"approve", 0},
    {"deny", 0},
    {"pass", 0},
    {"fail", 0},
    {"state", 1},
    {"from", 1},
    {"to", 1},
    {"page-size", 1},
    {"page-token", 1},
    {"all", 0},
    {"digest", 0},
    {"local", 0},
    {"scenarios", 1},
    {"cityopsd", 1},
    {"duration", 1},
    {"keep", 0},
    {"data-dir", 1},
    {"title", 1},
    {"detail", 1},
    {"child", 1},
    {"status", 1},
    {"endpoint", 1},
    {"kind", 1},
    {"kind-allow", 1},
    {"deadline-from", 1},
    {"deadline-to", 1},
    {"overdue", 0},
    {"to-index", 1},
    {"to-time", 1},
    {"yes", 0},
    {"force", 0},
    {"period", 1},
    {"by", 1},
    {"peer", 1},
    {"publisher", 1},
    {"topic", 1},
    {"unsubscribe", 0},
    {"key", 1},
    {"file", 1},
    {"stats", 1},
    {"origin", 1},
    {"child-endpoints", 1},
    /* admin */
    {"name", 1},
    {"workday", 0},
};

static const char *const global_opts[] = {
    "endpoints", "json", "timeout",     "actor",     "role",
    "client-id", "seq",  "consistency", "min-index", "help",
};

static const char usage_text[] =
    "usage: cityctl [global options] <command> [arguments]\n"
    "\n"
    "Global options (anywhere on the line):\n"
    "  --endpoints H:P,H:P,...  nodes to try in order (default\n"
    "                           $CITYOPS_ENDPOINTS, else " OPS_DEFAULT_ENDPOINT
    ");\n"
    "                           UNAVAILABLE or DEADLINE_EXCEEDED moves on to\n"
    "                           the next one after a short back-off\n"
    "  --json                   print the reply message as JSON\n"
    "  --timeout MS             per-call deadline (default 5000)\n"
    "  --actor ID               acting user (default $USER, else cityctl)\n"
    "  --role ROLE              inspector, intake-clerk, shift-leader, "
    "dispatcher,\n"
    "                           department, public, admin, auditor, system\n"
    "                           (default: the command's usual role)\n"
    "  --client-id ID --seq N   retry key for a write (both or neither; "
    "default:\n"
    "                           a random client id, seq 1, reused on every\n"
    "                           endpoint this invocation tries)\n"
    "  --consistency stale|linearizable\n"
    "                           reads (default: linearizable for case reads,\n"
    "                           stale for cluster status)\n"
    "  --min-index N            reads: wait until the node applied index N\n"
    "\n"
    "Case commands (default role in brackets):\n"
    "  case report --type component|event --major NN --minor NN --desc TEXT\n"
    "              [--component-id X] [--lon X --lat Y] [--grid CODE]\n"
    "              [--address TEXT] [--datum cgcs2000|wgs84|gcj02]\n"
    "              [--attach SHA256:URI ...]                  [inspector]\n"
    "  case request-verify ID --inspector X                   [intake-clerk]\n"
    "  case verify-result ID --found|--not-found [--attach SHA256:URI ...]\n"
    "              [--reason R]                               [inspector]\n"
    "  case accept ID [--reason R]                            [intake-clerk]\n"
    "  case register ID [--condition C] [--type T --major NN --minor NN]\n"
    "                                                         [shift-leader]\n"
    "  case reject ID --reason R                              [intake-clerk]\n"
    "  case merge ID --into ID2 [--reason R]                  [shift-leader]\n"
    "  case void ID --reason R                                [shift-leader]\n"
    "  case dispatch ID --dept D [--level city|district] [--deadline T]\n"
    "                                                         [dispatcher]\n"
    "  case start-disposal ID [--reason R]                    [department]\n"
    "  case return ID --reason R                              [department]\n"
    "  case redispatch ID --dept D --reason R [--level L] [--deadline T]\n"
    "                                                         [dispatcher]\n"
    "  case report-disposal ID --attach SHA256:URI ... [--note N]\n"
    "                                                         [department]\n"
    "  case request-extension ID --until T --reason R         [department]\n"
    "  case decide-extension ID --approve|--deny [--until T] [--reason R]\n"
    "                                                         [shift-leader]\n"
    "  case request-check ID --inspector X                    [dispatcher]\n"
    "  case check ID --pass|--fail [--attach SHA256:URI ...] [--note N]\n"
    "                                                         [inspector]\n"
    "  case rework ID [--reason R]                            [shift-leader]\n"
    "  case close ID [--type normal|overdue|error|special] [--reason R]\n"
    "                                                         [shift-leader]\n"
    "  case shelve ID --reason R                              [shift-leader]\n"
    "  case unshelve ID [--reason R]                          [shift-leader]\n"
    "  case get ID\n"
    "  case supervise ID [--reason R]                         [shift-leader]\n"
    "  case list [--state S] [--dept D] [--type T] [--major NN] [--minor NN]\n"
    "            [--grid G] [--from T] [--to T] [--page-size N]\n"
    "            [--overdue | --deadline-from T --deadline-to T]\n"
    "            [--page-token TOKEN | --all]\n"
    "  case history ID\n"
    "\n"
    "Cluster commands:\n"
    "  cluster add ID --raft H:P --grpc H:P [--as voter|standby|spare]\n"
    "              [--zone Z]                 add a member (it joins empty and\n"
    "                                         catches up)           [admin]\n"
    "  cluster remove ID                      remove a member       [admin]\n"
    "  cluster promote ID [--to voter|standby]                      [admin]\n"
    "  cluster demote ID [--to standby|spare]                       [admin]\n"
    "  cluster transfer-leader [ID]           hand leadership over  [admin]\n"
    "  audit list [--target T] [--actor-id A] [--from T] [--to T]\n"
    "  audit checkpoint                       signed tree head now  [auditor]\n"
    "  audit heads                            tree heads held\n"
    "  audit verify [--public-key PEM]        recompute chain, heads,\n"
    "                                         signatures, case values\n"
    "  audit verify --archive FILE            check an archive offline\n"
    "  audit archive --out FILE [--to-seq N]  records [0,N) + heads to a file\n"
    "  audit proof SEQ [--tree-size N]        check one inclusion proof\n"
    "  audit consistency M N                  consistency proof of two heads\n"
    "  cluster status [--digest] [--local]   members, raft state, indexes; "
    "* = leader\n"
    "\n"
    "Federation between tiers:\n"
    "  fed links                              links: connected, backlog, lag,\n"
    "                                         last error (ask the leader)\n"
    "  fed tasks                              key tasks sent and received\n"
    "  fed assign --title T --deadline T --child TIER [--child ...]\n"
    "             [--detail D]                a key task down   [shift-leader]\n"
    "  fed feedback TASK --status S [--note N]\n"
    "                                         feedback up       [shift-leader]\n"
    "  fed link add TIER --kind parent|child|peer --endpoint H:P [...]\n"
    "               [--kind-allow KIND ...]   only these kinds from it\n"
    "  fed link remove TIER                   linked platforms  [admin]\n"
    "  fed forward TASK --child TIER [--child ...]\n"
    "                                         a received task on down\n"
    "                                                           [shift-leader]\n"
    "  fed to-case TASK --type component|event --major NN --minor NN\n"
    "              [--grid G]                 a received task as a case\n"
    "                                                           [shift-leader]\n"
    "  fed handover CASE --peer TIER [--reason R]\n"
    "                                         a case to a peer  [shift-leader]\n"
    "  fed close-task TASK                    a task assigned here\n"
    "  fed reopen-task TASK                   (and at its children)\n"
    "                                                           [shift-leader]\n"
    "  fed escalate CASE [--reason R]         a case up to the parent\n"
    "                                                           [shift-leader]\n"
    "  fed incoming                           hand-overs and escalations\n"
    "                                         pending, both ways\n"
    "  fed accept ID                          open a received one here\n"
    "  fed decline ID --reason R              refuse it         [shift-leader]\n"
    "  fed subscribe --publisher TIER --topic T [--unsubscribe]   [admin]\n"
    "  fed publish --topic T --key K (--file F.json | --stats PERIOD)\n"
    "                                         to subscribers    [admin]\n"
    "  fed received [--topic T] [--origin TIER]\n"
    "                                         publications received here\n"
    "  fed witness [--origin TIER]            a child's signed heads kept "
    "here\n"
    "  fed witness verify --origin TIER --child-endpoints H:P[,...]\n"
    "                                         signatures and consistency\n"
    "\n"
    "Disaster recovery [admin]:\n"
    "  backup create --out FILE               online consistent backup from "
    "one node\n"
    "  backup verify FILE                     offline: checksum, store, "
    "audit chain\n"
    "  backup list                            a node's scheduled backups and "
    "archive\n"
    "  backup restore FILE --data-dir DIR [--archive DIR]\n"
    "                 [--to-index N | --to-time T]\n"
    "                                         offline: the state of a new "
    "one-node\n"
    "                                         cluster (point in time with "
    "--archive)\n"
    "  recover [--yes] [--force]              quorum loss: gather from every "
    "member\n"
    "                                         (--endpoints), plan, then "
    "execute\n"
    "\n"
    "Drills (issue #7; scenarios in ops/drills or --scenarios DIR):\n"
    "  drill list                             scenarios and what they do\n"
    "  drill run SCENARIO [--local [N]] [--cityopsd PATH] [--duration S]\n"
    "            [--out DIR] [--keep]         fault under load; RTO, RPO,\n"
    "                                         convergence, history; --local\n"
    "                                         starts N cityopsd of its own\n"
    "  drill history                          drills recorded in the "
    "cluster\n"
    "\n"
    "Evaluation (DOMAIN.md 5) and the command centre's view:\n"
    "  eval report --period P [--by department|district|grid]\n"
    "                                         indicators, score and grade per\n"
    "                                         object; P is 2026-10, 2026-Q4 or\n"
    "                                         2026 (UTC+8)\n"
    "  eval workload                          open cases per department:\n"
    "                                         dispatched, in disposal, "
    "returned,\n"
    "                                         overdue, supervised\n"
    "\n"
    "Configuration, the city's rules (writes as admin; one version each):\n"
    "  admin apply FILE.json [--note T]       a batch of changes "
    "({\"changes\":[...]},\n"
    "                                         e.g. ops/config/default.json) "
    "or an\n"
    "                                         export, applied as one version\n"
    "  admin get                              version, counts, departments, "
    "staff,\n"
    "                                         categories with their limits\n"
    "  admin export --out FILE                the whole configuration as "
    "JSON\n"
    "  admin history                          versions: when, who, note\n"
    "  admin staff add ID --name N --role R [--role R2 ...] [--dept D]\n"
    "                                         (--role here: the member's "
    "roles)\n"
    "  admin staff disable|enable ID\n"
    "  admin dept add ID --name N [--level city|district]\n"
    "  admin holiday YYYY-MM-DD [--workday] [--note T]\n"
    "                                         a holiday, or with --workday "
    "a\n"
    "                                         worked weekend day (调休)\n"
    "  admin hours WEEKDAY HH:MM-HH:MM[,HH:MM-HH:MM] | none\n"
    "                                         office hours of mon..sun\n"
    "\n"
    "  help, --help                          this text\n"
    "\n"
    "T is an RFC3339 time (2026-11-25T17:00:00+08:00, ...Z, or 2026-11-25);\n"
    "without an offset it is UTC+8, and times print in UTC+8.\n"
    "S is a state (reported, in-disposal, ...). ID is a case id.\n"
    "An attachment is SHA256:URI, SHA256 being 64 hex digits.\n"
    "Exit status: 0 ok, 1 the call failed (cityctl: <method>: <STATUS>: "
    "<details>),\n"
    "2 usage error.\n";

static const struct opt_spec *opt_spec_find(const char *name, size_t len)
{
    size_t i;

    for (i = 0; i < sizeof(opt_specs) / sizeof(opt_specs[0]); i++) {
        if (strlen(opt_specs[i].name) == len &&
            strncmp(opt_specs[i].name, name, len) == 0) {
            return &opt_specs[i];
        }
    }
    return NULL;
}

char *ops_arg(const struct ops_args *a, const char *name)
{
    int i;

    for (i = a->n_opts - 1; i >= 0; i--) {
        if (strcmp(a->opts[i].name, name) == 0) {
            return a->opts[i].value;
        }
    }
    return NULL;
}

int ops_flag(const struct ops_args *a, const char *name)
{
    int i;

    for (i = 0; i < a->n_opts; i++) {
        if (strcmp(a->opts[i].name, name) == 0) {
            return 1;
        }
    }
    return 0;
}

int ops_arg_all(const struct ops_args *a, const char *name, char **out, int max)
{
    int i;
    int n = 0;

    for (i = 0; i < a->n_opts; i++) {
        if (strcmp(a->opts[i].name, name) != 0) {
            continue;
        }
        if (n < max) {
            out[n] = a->opts[i].value;
        }
        n++;
    }
    return n;
}

int ops_usage_error(const struct ops_ctl *ctl, const char *fmt, ...)
{
    char msg[512];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    fprintf(stderr, "cityctl: %s\n", msg);
    fprintf(stderr, "Run 'cityctl help' for usage.\n");
    if (ctl != NULL && ctl->json) {
        json_t *j = json_pack("{s:{s:s,s:s}}", "error", "code", "USAGE",
                              "message", msg);
        if (j != NULL) {
            ops_json_print(j);
        }
    }
    return OPS_EXIT_USAGE;
}

int ops_parse_u64(const char *s, uint64_t *out)
{
    char *end = NULL;
    unsigned long long v;

    if (s == NULL || *s < '0' || *s > '9') {
        return OPS_INVALID;
    }
    errno = 0;
    v = strtoull(s, &end, 10);
    if (errno != 0 || *end != '\0') {
        return OPS_INVALID;
    }
    *out = (uint64_t)v;
    return 0;
}

int ops_parse_double(const char *s, double *out)
{
    char *end = NULL;
    double v;

    if (s == NULL || *s == '\0') {
        return OPS_INVALID;
    }
    errno = 0;
    v = strtod(s, &end);
    if (errno != 0 || *end != '\0') {
        return OPS_INVALID;
    }
    *out = v;
    return 0;
}

int ops_parse_role(const char *s, int *role)
{
    static const struct {
        const char *name;
        int role;
    } roles[] = {
        {"inspector", CITYOPS__V1__ROLE__ROLE_INSPECTOR},
        {"intake-clerk", CITYOPS__V1__ROLE__ROLE_INTAKE_CLERK},
        {"shift-leader", CITYOPS__V1__ROLE__ROLE_SHIFT_LEADER},
        {"dispatcher", CITYOPS__V1__ROLE__ROLE_DISPATCHER},
        {"department", CITYOPS__V1__ROLE__ROLE_DEPARTMENT},
        {"public", CITYOPS__V1__ROLE__ROLE_PUBLIC},
        {"admin", CITYOPS__V1__ROLE__ROLE_ADMIN},
        {"auditor", CITYOPS__V1__ROLE__ROLE_AUDITOR},
        {"system", CITYOPS__V1__ROLE__ROLE_SYSTEM},
    };
    size_t i;

    for (i = 0; i < sizeof(roles) / sizeof(roles[0]); i++) {
        if (strcmp(s, roles[i].name) == 0) {
            *role = roles[i].role;
            return 0;
        }
    }
    return OPS_INVALID;
}

/* Split argv into positionals and options. "--name=value" and
 * "--name value" both work; "--" ends the options. */
static int
args_parse(struct ops_ctl *ctl, int argc, char **argv, struct ops_args *a)
{
    int only_pos = 0;
    int i;

    memset(a, 0, sizeof(*a));
    for (i = 1; i < argc; i++) {
        char *arg = argv[i];
        const struct opt_spec *spec;
        char *eq;
        size_t len;

        if (only_pos || strncmp(arg, "--", 2) != 0 || arg[2] == '\0') {
            if (!only_pos && strcmp(arg, "--") == 0) {
                only_pos = 1;
                continue;
            }
            if (a->n_pos == OPS_MAX_POS) {
                return ops_usage_error(ctl, "too many arguments");
            }
            a->pos[a->n_pos++] = arg;
            continue;
        }
        arg += 2;
        eq = strchr(arg, '=');
        len = eq != NULL ? (size_t)(eq - arg) : strlen(arg);
        spec = opt_spec_find(arg, len);
        if (spec == NULL) {
            return ops_usage_error(ctl, "unknown option --%.*s", (int)len, arg);
        }
        if (a->n_opts == OPS_MAX_OPTS) {
            return ops_usage_error(ctl, "too many options");
        }
        a->opts[a->n_opts].name = spec->name;
        a->opts[a->n_opts].value = NULL;
        if (spec->has_arg && eq != NULL) {
            a->opts[a->n_opts].value = eq + 1;
        } else if (spec->has_arg) {
            if (i + 1 >= argc) {
                return ops_usage_error(ctl, "--%s needs a value", spec->name);
            }
            a->opts[a->n_opts].value = argv[++i];
        } else if (eq != NULL) {
            return ops_usage_error(ctl, "--%s takes no value", spec->name);
        }
        a->n_opts++;
    }
    return OPS_EXIT_OK;
}

static int endpoints_set(struct ops_ctl *ctl, const char *list)
{
    const char *p = list;

    while (*p != '\0') {
        const char *comma = strchr(p, ',');
        size_t len = comma != NULL ? (size_t)(comma - p) : strlen(p);

        if (len > 0) {
            if (ctl->n_endpoints == OPS_MAX_ENDPOINTS) {
                return ops_usage_error(ctl, "more than %d endpoints",
                                       OPS_MAX_ENDPOINTS);
            }
            ctl->endpoints[ctl->n_endpoints] = strndup(p, len);
            if (ctl->endpoints[ctl->n_endpoints] == NULL) {
                fprintf(stderr, "cityctl: out of memory\n");
                return OPS_EXIT_FAIL;
            }
            ctl->n_endpoints++;
        }
        if (comma == NULL) {
            break;
        }
        p = comma + 1;
    }
    if (ctl->n_endpoints == 0) {
        return ops_usage_error(ctl, "no endpoints in '%s'", list);
    }
    return OPS_EXIT_OK;
}

/* Apply the global options to @ctl. */
static int globals_apply(struct ops_ctl *ctl, const struct ops_args *a)
{
    const char *endpoints = ops_arg(a, "endpoints");
    const char *v;
    uint64_t n;

    if (endpoints == NULL) {
        endpoints = getenv("CITYOPS_ENDPOINTS");
    }
    if (endpoints == NULL || *endpoints == '\0') {
        endpoints = OPS_DEFAULT_ENDPOINT;
    }
    if ((v = ops_arg(a, "timeout")) != NULL) {
        if (ops_parse_u64(v, &n) != 0 || n == 0 || n > 3600 * 1000) {
            return ops_usage_error(ctl, "--timeout: bad milliseconds '%s'", v);
        }
        ctl->timeout_ms = (int)n;
    }
    ctl->actor = ops_arg(a, "actor");
    if ((v = ops_arg(a, "role")) != NULL && ops_parse_role(v, &ctl->role)) {
        return ops_usage_error(ctl, "--role: unknown role '%s'", v);
    }
    ctl->client_id = ops_arg(a, "client-id");
    v = ops_arg(a, "seq");
    if ((ctl->client_id == NULL) != (v == NULL)) {
        return ops_usage_error(ctl, "--client-id and --seq go together");
    }
    if (ctl->client_id != NULL && *ctl->client_id == '\0') {
        return ops_usage_error(ctl, "--client-id: empty");
    }
    if (v != NULL && (ops_parse_u64(v, &ctl->seq) != 0 || ctl->seq == 0)) {
        return ops_usage_error(ctl, "--seq: need a positive integer, not '%s'",
                               v);
    }
    if ((v = ops_arg(a, "consistency")) != NULL) {
        if (strcmp(v, "stale") == 0) {
            ctl->consistency = CITYOPS__V1__CONSISTENCY__CONSISTENCY_STALE;
        } else if (strcmp(v, "linearizable") == 0) {
            ctl->consistency =
                CITYOPS__V1__CONSISTENCY__CONSISTENCY_LINEARIZABLE;
        } else {
            return ops_usage_error(ctl, "--consistency: stale or linearizable");
        }
    }
    if ((v = ops_arg(a, "min-index")) != NULL &&
        ops_parse_u64(v, &ctl->min_index) != 0) {
        return ops_usage_error(ctl, "--min-index: bad index '%s'", v);
    }
    return endpoints_set(ctl, endpoints);
}

static int is_global(const char *name)
{
    size_t i;

    for (i = 0; i < sizeof(global_opts) / sizeof(global_opts[0]); i++) {
        if (strcmp(global_opts[i], name) == 0) {
            return 1;
        }
    }
    return 0;
}

/* 1 if @name is a word of the space separated @list. */
static int in_list(const char *list, const char *name)
{
    size_t len = strlen(name);
    const char *p = list;

    while ((p = strstr(p, name)) != NULL) {
        if ((p == list || p[-1] == ' ') && (p[len] == ' ' || p[len] == '\0')) {
            return 1;
        }
        p += len;
    }
    return 0;
}

/* Refuse options the subcommand does not take. */
static int options_check(const struct ops_ctl *ctl,
                         const struct ops_args *a,
                         const char *cmd,
                         const char *allowed)
{
    int i;

    for (i = 0; i < a->n_opts; i++) {
        const char *name = a->opts[i].name;

        if (!is_global(name) && !in_list(allowed, name)) {
            return ops_usage_error(ctl, "%s: unknown option --%s", cmd, name);
        }
    }
    return OPS_EXIT_OK;
}

/* The command groups: the options each subcommand takes, and its runner. */
struct group {
    const char *name;
    const char *(*options)(const char *sub);
    int (*run)(struct ops_ctl *ctl, const struct ops_args *a);
};

static const struct group groups[] = {
    {"case", ctl_case_options, ctl_case_run},
    {"cluster", ctl_cluster_options, ctl_cluster_run},
    {"audit", ctl_audit_options, ctl_audit_run},
    {"backup", ctl_backup_options, ctl_backup_run},
    {"recover", ctl_recover_options, ctl_recover_run},
    {"drill", ctl_drill_options, ctl_drill_run},
    {"admin", ctl_admin_options, ctl_admin_run},
    {"eval", ctl_eval_options, ctl_eval_run},
    {"fed", ctl_fed_options, ctl_fed_run},
};

static int dispatch(struct ops_ctl *ctl, const struct ops_args *a)
{
    const char *group = a->pos[0];
    const char *sub = a->n_pos > 1 ? a->pos[1] : NULL;
    const char *allowed;
    char cmd[64];
    int rv;

    const struct group *g = NULL;

    for (size_t i = 0; i < sizeof(groups) / sizeof(groups[0]); i++) {
        if (strcmp(groups[i].name, group) == 0) {
            g = &groups[i];
        }
    }
    if (g == NULL) {
        return ops_usage_error(ctl, "unknown command '%s'", group);
    }
    if (strcmp(group, "recover") == 0) {
        rv = options_check(ctl, a, "recover", ctl_recover_options(sub));
        return rv != OPS_EXIT_OK ? rv : ctl_recover_run(ctl, a);
    }
    if (sub == NULL) {
        return ops_usage_error(ctl, "%s: which subcommand?", group);
    }
    allowed = g->options(sub);
    if (allowed == NULL) {
        return ops_usage_error(ctl, "unknown command '%s %s'", group, sub);
    }
    snprintf(cmd, sizeof(cmd), "%s %s", group, sub);
    rv = options_check(ctl, a, cmd, allowed);
    if (rv != OPS_EXIT_OK) {
        return rv;
    }
    return g->run(ctl, a);
}

int main(int argc, char **argv)
{
    struct ops_ctl ctl;
    struct ops_args args;
    int i;
    int rv;

    memset(&ctl, 0, sizeof(ctl));
    ctl.timeout_ms = OPS_DEFAULT_TIMEOUT_MS;
    ctl.consistency = -1;
    /* --json first, so that usage errors come out as JSON too. */
    for (i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--json") == 0) {
            ctl.json = 1;
        }
    }
    rv = args_parse(&ctl, argc, argv, &args);
    if (rv != OPS_EXIT_OK) {
        return rv;
    }
    ctl.json = ops_flag(&args, "json");
    if (ops_flag(&args, "help") ||
        (args.n_pos > 0 && strcmp(args.pos[0], "help") == 0)) {
        fputs(usage_text, stdout);
        return OPS_EXIT_OK;
    }
    if (args.n_pos == 0) {
        fputs(usage_text, stderr);
        return OPS_EXIT_USAGE;
    }
    rv = globals_apply(&ctl, &args);
    if (rv == OPS_EXIT_OK) {
        rv = dispatch(&ctl, &args);
    }
    ops_ctl_close(&ctl);
    return rv;
}
