/* cityctl cluster ...: what an operator needs to see of the Raft cluster,
 * and the membership changes (add, remove, promote, demote,
 * transfer-leader), which the nodes accept from role ADMIN only.
 *
 * "cluster status" asks one node (the first endpoint that answers), which
 * fans out to the members unless --local is given, and prints one row per
 * member with the leader marked '*'. Status reads default to stale: during
 * an election, when there is no leader to confirm a linearizable read, the
 * operator needs this command the most.
 */
#include <string.h>

#include "ops.h"

#define DIGEST_PREFIX 16

/* With --digest, DIGEST comes before REACHABLE; without, REACHABLE takes
 * its place as the last column. */
static const char *const status_headers[] = {
    "ID",      "GRPC",     "RAFT",    "MEMBER", "STATE",  "TERM",     "COMMIT",
    "APPLIED", "LAST LOG", "LOG (MB)", "CASES", "DIGEST", "REACHABLE",
};

static int status_row(struct ops_table *t,
                      const Cityops__V1__StatusResponse *s,
                      const Cityops__V1__NodeStatus *n,
                      int with_digest)
{
    char id[24];
    char term[24];
    char commit[24];
    char applied[24];
    char last[24];
    char cases[24];
    char logsize[48];
    char reach[320];
    char digest[DIGEST_PREFIX + 1];
    char member[64];
    const char *cells[13];
    int leader = n->id != 0 && n->id == s->leader_id;

    snprintf(id, sizeof(id), "%llu%s", (unsigned long long)n->id,
             leader ? "*" : "");
    snprintf(term, sizeof(term), "%llu", (unsigned long long)n->term);
    snprintf(commit, sizeof(commit), "%llu",
             (unsigned long long)n->commit_index);
    snprintf(applied, sizeof(applied), "%llu",
             (unsigned long long)n->applied_index);
    snprintf(last, sizeof(last), "%llu", (unsigned long long)n->last_log_index);
    snprintf(cases, sizeof(cases), "%llu", (unsigned long long)n->case_count);
    /* The log's bytes against its budget: "12.5/64". */
    if (n->log_budget_bytes > 0) {
        snprintf(logsize, sizeof(logsize), "%.1f/%llu",
                 (double)n->log_bytes / (1 << 20),
                 (unsigned long long)(n->log_budget_bytes >> 20));
    } else {
        snprintf(logsize, sizeof(logsize), "-");
    }
    if (n->reachable && *n->store_error != '\0') {
        snprintf(reach, sizeof(reach), "yes, STORE FAILING: %s",
                 n->store_error);
    } else if (n->reachable && n->unreachable_ms > 0) {
        snprintf(reach, sizeof(reach), "yes (leader lost it %.1f s ago)",
                 (double)n->unreachable_ms / 1000.0);
    } else if (n->reachable) {
        snprintf(reach, sizeof(reach), "yes");
    } else {
        snprintf(reach, sizeof(reach), "no: %s",
                 *n->error != '\0' ? n->error : "(no error given)");
    }
    snprintf(digest, sizeof(digest), "%s",
             *n->state_digest != '\0' ? n->state_digest : "-");
    cells[0] = id;
    cells[1] = n->grpc_address;
    cells[2] = n->raft_address;
    snprintf(member, sizeof(member), "%s%s%s",
             ops_enum_short(&cityops__v1__member_role__descriptor,
                            n->member_role),
             *n->zone != '\0' ? "@" : "", n->zone);
    cells[3] = member;
    cells[4] = ops_enum_short(&cityops__v1__raft_state__descriptor, n->state);
    cells[5] = term;
    cells[6] = commit;
    cells[7] = applied;
    cells[8] = last;
    cells[9] = logsize;
    cells[10] = cases;
    /* REACHABLE goes last without --digest: the error text is the long one. */
    cells[11] = with_digest ? digest : reach;
    cells[12] = reach;
    return ops_table_add(t, cells);
}

/* With --digest: say whether the reachable members' states agree. Members
 * at different applied indexes differ for that reason alone. */
static void digest_summary(const Cityops__V1__StatusResponse *s)
{
    const char *first = NULL;
    uint64_t applied = 0;
    int same_index = 1;
    int agree = 1;
    int n = 0;
    size_t i;

    for (i = 0; i < s->n_nodes; i++) {
        const Cityops__V1__NodeStatus *node = s->nodes[i];

        if (!node->reachable || *node->state_digest == '\0') {
            continue;
        }
        if (first == NULL) {
            first = node->state_digest;
            applied = node->applied_index;
        } else {
            agree &= strcmp(first, node->state_digest) == 0;
            same_index &= node->applied_index == applied;
        }
        n++;
    }
    if (n == 0) {
        printf("state digests: none reported\n");
    } else if (agree) {
        printf("state digests: %d of %zu members agree\n", n, s->n_nodes);
    } else if (same_index) {
        printf("state digests: DIFFER at the same applied index %llu\n",
               (unsigned long long)applied);
    } else {
        printf("state digests: differ (members are at different applied "
               "indexes; run again when idle)\n");
    }
}

static int status_print(const Cityops__V1__StatusResponse *s, int with_digest)
{
    struct ops_table *t;
    int n_cols = with_digest ? 13 : 12;
    size_t i;

    if (s->leader_id != 0) {
        printf("leader %llu at %s, term %llu (answered by %llu)\n",
               (unsigned long long)s->leader_id, s->leader_address,
               (unsigned long long)s->term, (unsigned long long)s->answered_by);
    } else {
        printf("no leader known, term %llu (answered by %llu)\n",
               (unsigned long long)s->term, (unsigned long long)s->answered_by);
    }
    {
        const char *headers[13];

        memcpy(headers, status_headers, sizeof(headers));
        if (!with_digest) {
            headers[11] = "REACHABLE";
        }
        t = ops_table_new(n_cols, headers);
    }
    if (t == NULL) {
        return OPS_NOMEM;
    }
    for (i = 0; i < s->n_nodes; i++) {
        if (status_row(t, s, s->nodes[i], with_digest) != 0) {
            ops_table_free(t);
            return OPS_NOMEM;
        }
    }
    ops_table_print(t, stdout);
    ops_table_free(t);
    if (with_digest) {
        digest_summary(s);
    }
    if (s->n_events > 0) {
        printf("recent membership changes:\n");
    }
    for (i = 0; i < s->n_events; i++) {
        char when[40];
        ops_time_format(s->events[i]->at, when, sizeof(when));
        printf("  %s  %-8s %s (by %s, index %llu)\n", when, s->events[i]->kind,
               s->events[i]->detail, s->events[i]->actor_id,
               (unsigned long long)s->events[i]->index);
    }
    return 0;
}

static int run_status(struct ops_ctl *ctl, const struct ops_args *a)
{
    Cityops__V1__StatusRequest req = CITYOPS__V1__STATUS_REQUEST__INIT;
    Cityops__V1__ReadOptions read = CITYOPS__V1__READ_OPTIONS__INIT;
    ProtobufCMessage *resp = NULL;
    int rv;

    if (a->n_pos > 2) {
        return ops_usage_error(ctl, "cluster status: unexpected argument '%s'",
                               a->pos[2]);
    }
    ops_read_fill(ctl, &read, CITYOPS__V1__CONSISTENCY__CONSISTENCY_STALE);
    req.read = &read;
    req.with_digest = ops_flag(a, "digest");
    req.local_only = ops_flag(a, "local");
    rv = ops_call(ctl, "Cluster/Status", &req.base,
                  &cityops__v1__status_response__descriptor, &resp);
    if (rv != OPS_EXIT_OK) {
        return rv;
    }
    if (ctl->json) {
        json_t *j = ops_pb_to_json(resp);

        rv = j != NULL ? ops_json_print(j) : OPS_EXIT_FAIL;
    } else if (status_print((Cityops__V1__StatusResponse *)resp,
                            req.with_digest) != 0) {
        fprintf(stderr, "cityctl: out of memory\n");
        rv = OPS_EXIT_FAIL;
    }
    protobuf_c_message_free_unpacked(resp, NULL);
    return rv;
}

/* Print a membership reply, or the JSON of it. */
static int change_print(struct ops_ctl *ctl, ProtobufCMessage *resp)
{
    const Cityops__V1__MembershipReply *r =
        (const Cityops__V1__MembershipReply *)resp;
    int rv = OPS_EXIT_OK;

    if (ctl->json) {
        json_t *j = ops_pb_to_json(resp);
        rv = j != NULL ? ops_json_print(j) : OPS_EXIT_FAIL;
    } else {
        printf("%s (leader: %llu)\n", r->message,
               (unsigned long long)r->leader_id);
    }
    protobuf_c_message_free_unpacked(resp, NULL);
    return rv;
}

static int member_role_parse(const char *s, Cityops__V1__MemberRole *out)
{
    if (strcmp(s, "voter") == 0) {
        *out = CITYOPS__V1__MEMBER_ROLE__MEMBER_ROLE_VOTER;
    } else if (strcmp(s, "standby") == 0) {
        *out = CITYOPS__V1__MEMBER_ROLE__MEMBER_ROLE_STANDBY;
    } else if (strcmp(s, "spare") == 0) {
        *out = CITYOPS__V1__MEMBER_ROLE__MEMBER_ROLE_SPARE;
    } else {
        return -1;
    }
    return 0;
}

/* The member id: positional argument 3 ("cluster add ID"). */
static int member_id(struct ops_ctl *ctl,
                     const struct ops_args *a,
                     int required,
                     uint64_t *id)
{
    *id = 0;
    if (a->n_pos < 3) {
        return required ? ops_usage_error(ctl, "cluster %s: which member id?",
                                          a->pos[1])
                        : OPS_EXIT_OK;
    }
    if (a->n_pos > 3) {
        return ops_usage_error(ctl, "cluster %s: unexpected argument '%s'",
                               a->pos[1], a->pos[3]);
    }
    if (ops_parse_u64(a->pos[2], id) != 0 || *id == 0) {
        return ops_usage_error(ctl, "cluster %s: bad member id '%s'",
                               a->pos[1], a->pos[2]);
    }
    return OPS_EXIT_OK;
}

static int run_add(struct ops_ctl *ctl, const struct ops_args *a)
{
    Cityops__V1__AddMemberRequest req = CITYOPS__V1__ADD_MEMBER_REQUEST__INIT;
    Cityops__V1__RequestContext ctx = CITYOPS__V1__REQUEST_CONTEXT__INIT;
    ProtobufCMessage *resp = NULL;
    int rv = member_id(ctl, a, 1, &req.id);

    if (rv != OPS_EXIT_OK) {
        return rv;
    }
    req.raft_address = ops_arg(a, "raft");
    req.grpc_address = ops_arg(a, "grpc");
    if (req.raft_address == NULL || req.grpc_address == NULL) {
        return ops_usage_error(ctl, "cluster add: --raft and --grpc are "
                                    "required");
    }
    if (ops_arg(a, "as") != NULL &&
        member_role_parse(ops_arg(a, "as"), &req.role) != 0) {
        return ops_usage_error(ctl, "cluster add: --as voter, standby or "
                                    "spare");
    }
    if (ops_arg(a, "zone") != NULL) {
        req.zone = ops_arg(a, "zone");
    }
    ops_ctx_fill(ctl, &ctx, CITYOPS__V1__ROLE__ROLE_ADMIN);
    req.ctx = &ctx;
    if (!ctl->json) {
        fprintf(stderr, "adding member %llu; a voter or standby is caught "
                        "up first, which can take a while...\n",
                (unsigned long long)req.id);
    }
    rv = ops_call(ctl, "Cluster/AddMember", &req.base,
                  &cityops__v1__membership_reply__descriptor, &resp);
    return rv == OPS_EXIT_OK ? change_print(ctl, resp) : rv;
}

/* promote, demote, remove */
static int run_member(struct ops_ctl *ctl, const struct ops_args *a)
{
    Cityops__V1__MemberRequest req = CITYOPS__V1__MEMBER_REQUEST__INIT;
    Cityops__V1__RequestContext ctx = CITYOPS__V1__REQUEST_CONTEXT__INIT;
    ProtobufCMessage *resp = NULL;
    const char *sub = a->pos[1];
    const char *method = "Cluster/AssignRole";
    const char *to = ops_arg(a, "to");
    int rv = member_id(ctl, a, 1, &req.id);

    if (rv != OPS_EXIT_OK) {
        return rv;
    }
    if (strcmp(sub, "remove") == 0) {
        method = "Cluster/RemoveMember";
    } else {
        if (to == NULL) {
            to = strcmp(sub, "promote") == 0 ? "voter" : "standby";
        }
        if (member_role_parse(to, &req.role) != 0 ||
            (strcmp(sub, "promote") == 0 && strcmp(to, "spare") == 0) ||
            (strcmp(sub, "demote") == 0 && strcmp(to, "voter") == 0)) {
            return ops_usage_error(ctl, "cluster %s: bad --to '%s'", sub, to);
        }
    }
    ops_ctx_fill(ctl, &ctx, CITYOPS__V1__ROLE__ROLE_ADMIN);
    req.ctx = &ctx;
    rv = ops_call(ctl, method, &req.base,
                  &cityops__v1__membership_reply__descriptor, &resp);
    return rv == OPS_EXIT_OK ? change_print(ctl, resp) : rv;
}

static int run_transfer(struct ops_ctl *ctl, const struct ops_args *a)
{
    Cityops__V1__TransferLeaderRequest req =
        CITYOPS__V1__TRANSFER_LEADER_REQUEST__INIT;
    Cityops__V1__RequestContext ctx = CITYOPS__V1__REQUEST_CONTEXT__INIT;
    ProtobufCMessage *resp = NULL;
    int rv = member_id(ctl, a, 0, &req.id);

    if (rv != OPS_EXIT_OK) {
        return rv;
    }
    ops_ctx_fill(ctl, &ctx, CITYOPS__V1__ROLE__ROLE_ADMIN);
    req.ctx = &ctx;
    rv = ops_call(ctl, "Cluster/TransferLeader", &req.base,
                  &cityops__v1__membership_reply__descriptor, &resp);
    return rv == OPS_EXIT_OK ? change_print(ctl, resp) : rv;
}

const char *ctl_cluster_options(const char *sub)
{
    if (strcmp(sub, "status") == 0) {
        return "digest local";
    }
    if (strcmp(sub, "add") == 0) {
        return "raft grpc as zone";
    }
    if (strcmp(sub, "promote") == 0 || strcmp(sub, "demote") == 0) {
        return "to";
    }
    if (strcmp(sub, "remove") == 0 || strcmp(sub, "transfer-leader") == 0) {
        return "";
    }
    return NULL;
}

int ctl_cluster_run(struct ops_ctl *ctl, const struct ops_args *a)
{
    const char *sub = a->pos[1];

    if (strcmp(sub, "add") == 0) {
        return run_add(ctl, a);
    }
    if (strcmp(sub, "transfer-leader") == 0) {
        return run_transfer(ctl, a);
    }
    if (strcmp(sub, "status") == 0) {
        return run_status(ctl, a);
    }
    return run_member(ctl, a);
}
