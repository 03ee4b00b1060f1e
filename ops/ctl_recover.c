/* cityctl recover: rebuild a cluster that lost its quorum from the most
 * advanced survivor.
 *
 * 1. Gather: Cluster/Status (local, stale) from every endpoint given (give
 *    every member's gRPC address). A node that refuses the connection is
 *    lost; one that does not answer in time may be alive (paused, cut off)
 *    and hold a longer log: then we cannot tell, and refuse unless --force.
 * 2. Refuse if any survivor knows a leader (the cluster has a quorum: use
 *    cluster remove/add), if survivors disagree on the cluster id, or if a
 *    survivor's store is failing; unless --force.
 * 3. Choose the survivor with the highest (last log term, last log index):
 *    its log holds every entry committed on any survivor (Raft's log
 *    matching and leader completeness), so no acknowledged write that
 *    reached a survivor is lost.
 * 4. With --yes: Recovery/Recover on it (it checks its log still ends where
 *    we saw it, rewrites its configuration to itself alone with
 *    raft_recover and restarts in place, then leads); Recovery/Reset on the
 *    other survivors (their data is moved aside, they restart empty); then
 *    Cluster/AddMember for each of them, which catches them up.
 */
#include <string.h>
#include <time.h>

#include "ops.h"

#define GATHER_TIMEOUT_MS 2000
#define WAIT_LEADER_S 60
#define ADD_TIMEOUT_MS (10 * 60 * 1000)

enum verdict { V_LOST, V_UNKNOWN, V_SURVIVOR };

struct survivor {
    int ep;
    enum verdict v;
    char error[256];
    Cityops__V1__StatusResponse *st; /* local status: nodes[0] is the node */
};

static const Cityops__V1__NodeStatus *self_of(const struct survivor *s)
{
    return s->st != NULL && s->st->n_nodes > 0 ? s->st->nodes[0] : NULL;
}

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static int status_local(struct ops_ctl *ctl,
                        int ep,
                        Cityops__V1__StatusResponse **out,
                        grpc_status_code *st,
                        char *err,
                        size_t len)
{
    Cityops__V1__StatusRequest req = CITYOPS__V1__STATUS_REQUEST__INIT;
    Cityops__V1__ReadOptions read = CITYOPS__V1__READ_OPTIONS__INIT;

    read.consistency = CITYOPS__V1__CONSISTENCY__CONSISTENCY_STALE;
    req.read = &read;
    req.local_only = 1;
    return ops_call_one(ctl, ep, "Cluster/Status", &req.base,
                        &cityops__v1__status_response__descriptor,
                        GATHER_TIMEOUT_MS, (ProtobufCMessage **)out, st, err,
                        len);
}

static void gather(struct ops_ctl *ctl, struct survivor *s, int n)
{
    for (int i = 0; i < n; i++) {
        grpc_status_code st;

        s[i].ep = i;
        s[i].st = NULL;
        if (status_local(ctl, i, &s[i].st, &st, s[i].error,
                         sizeof s[i].error) == OPS_EXIT_OK &&
            self_of(&s[i]) != NULL) {
            s[i].v = V_SURVIVOR;
        } else if (st == GRPC_STATUS_DEADLINE_EXCEEDED) {
            s[i].v = V_UNKNOWN;
            snprintf(s[i].error, sizeof s[i].error,
                     "no answer in %d ms: alive but stuck? its log may be "
                     "longer",
                     GATHER_TIMEOUT_MS);
        } else {
            s[i].v = V_LOST;
        }
    }
}

static int more_advanced(const Cityops__V1__NodeStatus *a,
                         const Cityops__V1__NodeStatus *b)
{
    if (a->last_log_term != b->last_log_term) {
        return a->last_log_term > b->last_log_term;
    }
    if (a->last_log_index != b->last_log_index) {
        return a->last_log_index > b->last_log_index;
    }
    return a->id < b->id;
}

/* Choose; fills @why with the reason to refuse (empty if none). */
static int choose(const struct survivor *s, int n, char *why, size_t len)
{
    int best = -1;
    const char *cid = NULL;

    why[0] = '\0';
    for (int i = 0; i < n; i++) {
        const Cityops__V1__NodeStatus *ns = self_of(&s[i]);

        if (s[i].v == V_UNKNOWN && why[0] == '\0') {
            snprintf(why, len, "%s did not answer in time: cannot tell "
                               "whether its log is longer",
                     s[i].error[0] ? "a node" : "a node");
        }
        if (s[i].v != V_SURVIVOR) {
            continue;
        }
        if ((ns->state == CITYOPS__V1__RAFT_STATE__RAFT_STATE_LEADER ||
             ns->leader_id != 0) &&
            why[0] == '\0') {
            snprintf(why, len,
                     "node %llu sees a leader (node %llu): the cluster has a "
                     "quorum; replace lost members with cluster remove/add",
                     (unsigned long long)ns->id,
                     (unsigned long long)(ns->leader_id ? ns->leader_id
                                                        : ns->id));
        }
        if (*ns->store_error != '\0' && why[0] == '\0') {
            snprintf(why, len, "node %llu's store is failing: %s",
                     (unsigned long long)ns->id, ns->store_error);
        }
        if (*ns->cluster_id != '\0') {
            if (cid != NULL && strcmp(cid, ns->cluster_id) != 0 &&
                why[0] == '\0') {
                snprintf(why, len,
                         "the survivors belong to different clusters (%s, "
                         "%s): give the endpoints of one cluster",
                         cid, ns->cluster_id);
            }
            cid = ns->cluster_id;
        }
        if (best < 0 || more_advanced(ns, self_of(&s[best]))) {
            best = i;
        }
    }
    if (best < 0 && why[0] == '\0') {
        snprintf(why, len, "no node answered: nothing to recover from");
    }
    return best;
}

static void plan_print(struct ops_ctl *ctl,
                       const struct survivor *s,
                       int n,
                       int best)
{
    static const char *const headers[] = {"ENDPOINT", "ID",     "STATE",
                                          "LAST TERM", "LAST INDEX",
                                          "APPLIED", "PLAN"};
    struct ops_table *t = ops_table_new(7, headers);

    for (int i = 0; t != NULL && i < n; i++) {
        const Cityops__V1__NodeStatus *ns = self_of(&s[i]);
        char id[24] = "-", term[24] = "-", last[24] = "-", applied[24] = "-";
        char plan[320];
        const char *cells[7];

        if (ns != NULL) {
            snprintf(id, sizeof id, "%llu", (unsigned long long)ns->id);
            snprintf(term, sizeof term, "%llu",
                     (unsigned long long)ns->last_log_term);
            snprintf(last, sizeof last, "%llu",
                     (unsigned long long)ns->last_log_index);
            snprintf(applied, sizeof applied, "%llu",
                     (unsigned long long)ns->applied_index);
        }
        if (i == best) {
            snprintf(plan, sizeof plan, "RECOVER FROM: leads alone, keeps "
                                        "its log");
        } else if (s[i].v == V_SURVIVOR) {
            snprintf(plan, sizeof plan, "reset (data moved aside), add back");
        } else if (s[i].v == V_UNKNOWN) {
            snprintf(plan, sizeof plan, "UNKNOWN: %s", s[i].error);
        } else {
            snprintf(plan, sizeof plan, "lost: %s; reset it before it runs "
                                        "again, then cluster add",
                     s[i].error[0] ? s[i].error : "unreachable");
        }
        cells[0] = ctl->endpoints[i];
        cells[1] = id;
        cells[2] = ns != NULL
                       ? ops_enum_short(&cityops__v1__raft_state__descriptor,
                                        ns->state)
                       : "-";
        cells[3] = term;
        cells[4] = last;
        cells[5] = applied;
        cells[6] = plan;
        ops_table_add(t, cells);
    }
    if (t != NULL) {
        ops_table_print(t, stdout);
        ops_table_free(t);
    }
}

static void ctx_admin(struct ops_ctl *ctl, Cityops__V1__RequestContext *ctx)
{
    ops_ctx_fill(ctl, ctx, CITYOPS__V1__ROLE__ROLE_ADMIN);
    ctx->client_id = "";
    ctx->seq = 0;
}

static int call_fail(struct ops_ctl *ctl,
                     const char *method,
                     int ep,
                     grpc_status_code st,
                     const char *details)
{
    ops_print_error(ctl, method, rpc_status_name(st), details,
                    ctl->endpoints[ep]);
    return OPS_EXIT_FAIL;
}

/* Poll @ep until @pred holds for its local status, or @secs pass. */
static int wait_status(struct ops_ctl *ctl,
                       int ep,
                       int secs,
                       int (*pred)(const Cityops__V1__NodeStatus *ns))
{
    for (int i = 0; i < secs * 5; i++) {
        Cityops__V1__StatusResponse *r = NULL;
        grpc_status_code st;
        int ok = 0;

        if (status_local(ctl, ep, &r, &st, NULL, 0) == OPS_EXIT_OK) {
            ok = r->n_nodes > 0 && pred(r->nodes[0]);
            cityops__v1__status_response__free_unpacked(r, NULL);
        }
        if (ok) {
            return 1;
        }
        sleep_ms(200);
    }
    return 0;
}

static int is_leader(const Cityops__V1__NodeStatus *ns)
{
    return ns->state == CITYOPS__V1__RAFT_STATE__RAFT_STATE_LEADER;
}

static int is_empty_joiner(const Cityops__V1__NodeStatus *ns)
{
    return ns->last_log_index == 0 && ns->leader_id == 0;
}

static int execute(struct ops_ctl *ctl,
                   struct survivor *s,
                   int n,
                   int best,
                   int force,
                   int quiet)
{
    const Cityops__V1__NodeStatus *b = self_of(&s[best]);
    Cityops__V1__RequestContext ctx = CITYOPS__V1__REQUEST_CONTEXT__INIT;
    Cityops__V1__RecoverRequest rr = CITYOPS__V1__RECOVER_REQUEST__INIT;
    Cityops__V1__RecoverReply *rep = NULL;
    grpc_status_code st;
    char details[512];

    ctx_admin(ctl, &ctx);
    rr.ctx = &ctx;
    rr.expect_last_index = b->last_log_index;
    rr.expect_last_term = b->last_log_term;
    rr.force = force;
    if (ops_call_one(ctl, s[best].ep, "Recovery/Recover", &rr.base,
                     &cityops__v1__recover_reply__descriptor, ctl->timeout_ms,
                     (ProtobufCMessage **)&rep, &st, details,
                     sizeof details) != OPS_EXIT_OK) {
        return call_fail(ctl, "Recovery/Recover", s[best].ep, st, details);
    }
    if (!quiet) {
        fprintf(stderr, "node %llu: %s\n", (unsigned long long)b->id,
                rep->message);
    }
    cityops__v1__recover_reply__free_unpacked(rep, NULL);
    if (!wait_status(ctl, s[best].ep, WAIT_LEADER_S, is_leader)) {
        ops_print_error(ctl, "recover", "TIMEOUT",
                        "the recovered node did not become leader: see its "
                        "log",
                        ctl->endpoints[s[best].ep]);
        return OPS_EXIT_FAIL;
    }
    if (!quiet) {
        fprintf(stderr, "node %llu leads the recovered cluster\n",
                (unsigned long long)b->id);
    }
    for (int i = 0; i < n; i++) {
        const Cityops__V1__NodeStatus *ns = self_of(&s[i]);
        Cityops__V1__ResetRequest rs = CITYOPS__V1__RESET_REQUEST__INIT;
        Cityops__V1__AddMemberRequest add =
            CITYOPS__V1__ADD_MEMBER_REQUEST__INIT;
        Cityops__V1__MembershipReply *mr = NULL;
        int saved = ctl->timeout_ms;
        int rv;

        if (i == best || s[i].v != V_SURVIVOR) {
            continue;
        }
        rs.ctx = &ctx;
        rs.force = 1; /* it may already follow the recovered leader */
        if (ops_call_one(ctl, s[i].ep, "Recovery/Reset", &rs.base,
                         &cityops__v1__recover_reply__descriptor,
                         ctl->timeout_ms, (ProtobufCMessage **)&rep, &st,
                         details, sizeof details) != OPS_EXIT_OK) {
            return call_fail(ctl, "Recovery/Reset", s[i].ep, st, details);
        }
        if (!quiet) {
            fprintf(stderr, "node %llu: %s (%s)\n",
                    (unsigned long long)ns->id, rep->message, rep->moved_to);
        }
        cityops__v1__recover_reply__free_unpacked(rep, NULL);
        sleep_ms(300); /* let it stop before polling it */
        if (!wait_status(ctl, s[i].ep, WAIT_LEADER_S, is_empty_joiner)) {
            ops_print_error(ctl, "recover", "TIMEOUT",
                            "the reset node did not come back empty: see its "
                            "log",
                            ctl->endpoints[s[i].ep]);
            return OPS_EXIT_FAIL;
        }
        add.ctx = &ctx;
        add.id = ns->id;
        add.raft_address = ns->raft_address;
        add.grpc_address = ns->grpc_address;
        add.role = ns->member_role ==
                           CITYOPS__V1__MEMBER_ROLE__MEMBER_ROLE_UNSPECIFIED
                       ? CITYOPS__V1__MEMBER_ROLE__MEMBER_ROLE_VOTER
                       : ns->member_role;
        add.zone = ns->zone;
        ctl->timeout_ms = ADD_TIMEOUT_MS;
        rv = ops_call_one(ctl, s[best].ep, "Cluster/AddMember", &add.base,
                          &cityops__v1__membership_reply__descriptor,
                          ctl->timeout_ms, (ProtobufCMessage **)&mr, &st,
                          details, sizeof details);
        ctl->timeout_ms = saved;
        if (rv != OPS_EXIT_OK) {
            return call_fail(ctl, "Cluster/AddMember", s[best].ep, st,
                             details);
        }
        if (!quiet) {
            fprintf(stderr, "node %llu added back: %s\n",
                    (unsigned long long)ns->id, mr->message);
        }
        cityops__v1__membership_reply__free_unpacked(mr, NULL);
    }
    return OPS_EXIT_OK;
}

int ops_recover(struct ops_ctl *ctl, int yes, int force, int quiet)
{
    struct survivor s[OPS_MAX_ENDPOINTS];
    int n = ctl->n_endpoints;
    char why[512];
    int best;
    int rv = OPS_EXIT_OK;

    memset(s, 0, sizeof s);
    gather(ctl, s, n);
    best = choose(s, n, why, sizeof why);
    if (!quiet && !ctl->json) {
        plan_print(ctl, s, n, best);
    }
    if (best < 0 || (why[0] != '\0' && !force)) {
        if (!ctl->json) {
            ops_print_error(ctl, "recover", "REFUSED",
                            why[0] ? why : "no survivor", NULL);
        }
        rv = OPS_EXIT_FAIL;
    } else if (!yes) {
        if (!quiet && !ctl->json) {
            printf("dry run: nothing changed. Run again with --yes to "
                   "recover from node %llu%s.\n",
                   (unsigned long long)self_of(&s[best])->id,
                   why[0] ? " (forced past: see above)" : "");
        }
    } else {
        rv = execute(ctl, s, n, best, force, quiet);
    }
    if (ctl->json && (rv == OPS_EXIT_OK || why[0] != '\0' || best < 0)) {
        json_t *j = json_object();
        json_t *nodes = json_array();
        for (int i = 0; i < n; i++) {
            json_t *o = json_object();
            json_object_set_new(o, "endpoint",
                                json_string(ctl->endpoints[i]));
            json_object_set_new(o, "verdict",
                                json_string(i == best ? "recover-from"
                                            : s[i].v == V_SURVIVOR
                                                ? "reset"
                                            : s[i].v == V_UNKNOWN ? "unknown"
                                                                  : "lost"));
            if (self_of(&s[i]) != NULL) {
                json_object_set_new(o, "status",
                                    ops_pb_to_json(&self_of(&s[i])->base));
            }
            json_array_append_new(nodes, o);
        }
        json_object_set_new(j, "nodes", nodes);
        json_object_set_new(j, "refused", json_string(why));
        json_object_set_new(j, "executed", json_boolean(yes && rv == 0));
        json_object_set_new(j, "ok", json_boolean(rv == 0));
        ops_json_print(j);
    }
    for (int i = 0; i < n; i++) {
        if (s[i].st != NULL) {
            cityops__v1__status_response__free_unpacked(s[i].st, NULL);
        }
    }
    return rv;
}

const char *ctl_recover_options(const char *sub)
{
    (void)sub;
    return "yes force";
}

int ctl_recover_run(struct ops_ctl *ctl, const struct ops_args *a)
{
    return ops_recover(ctl, ops_flag(a, "yes"), ops_flag(a, "force"), 0);
}
