/* What a drill asks of the cluster besides the load: who leads, whether
 * every member is healthy, whether the replicas converged, and whether
 * every acknowledged write is still there (once).
 *
 * Health is judged from each member's own answer (Cluster/Status
 * local_only), not from one node's fan-out: the leader's commit index C is
 * read first, then every member must answer with the same leader, no store
 * error and applied >= C. Under load the commit index moves on, so
 * comparing with a C read earlier is what "caught up" can mean.
 */
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "drill.h"

#define STATUS_TIMEOUT_MS 1500
#define VERIFY_THREADS 4
#define VERIFY_DEADLINE_S 90
#define LIST_PAGE 500

void drill_say(const char *fmt, ...)
{
    static int64_t start;
    int64_t now = drill_now_us();
    va_list ap;

    if (start == 0) {
        start = now;
    }
    fprintf(stderr, "drill: [%6.1f] ", (double)(now - start) / 1e6);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

static int status_call(struct drill_chan *ch,
                       int local_only,
                       int digest,
                       Cityops__V1__StatusResponse **out)
{
    Cityops__V1__StatusRequest req = CITYOPS__V1__STATUS_REQUEST__INIT;
    Cityops__V1__ReadOptions read = CITYOPS__V1__READ_OPTIONS__INIT;
    ProtobufCMessage *resp = NULL;
    int status;

    req.read = &read;
    req.local_only = local_only;
    req.with_digest = digest;
    status = drill_call(ch, "Cluster/Status", &req.base,
                        &cityops__v1__status_response__descriptor,
                        digest ? 3 * STATUS_TIMEOUT_MS : STATUS_TIMEOUT_MS,
                        &resp, NULL, 0);
    *out = (Cityops__V1__StatusResponse *)resp;
    return status == GRPC_STATUS_OK && resp != NULL ? 0 : -1;
}

uint64_t drill_leader(struct drill_env *env, char *addr, size_t len)
{
    int i;

    for (i = 0; i < env->n_load; i++) {
        Cityops__V1__StatusResponse *s = NULL;
        uint64_t id = 0;

        if (status_call(env->chan[i], 1, 0, &s) != 0) {
            continue;
        }
        if (s->leader_id != 0 && *s->leader_address != '\0') {
            id = s->leader_id;
            snprintf(addr, len, "%s", s->leader_address);
        }
        protobuf_c_message_free_unpacked(&s->base, NULL);
        if (id != 0) {
            return id;
        }
    }
    return 0;
}

uint64_t drill_wait_leader(struct drill_env *env, double timeout_s)
{
    int64_t deadline = drill_now_us() + (int64_t)(timeout_s * 1e6);
    char addr[64];
    uint64_t id;

    while ((id = drill_leader(env, addr, sizeof(addr))) == 0 &&
           drill_now_us() < deadline) {
        drill_sleep_us(100000);
    }
    return id;
}

int drill_members(struct drill_env *env,
                  uint64_t *ids,
                  char (*addrs)[64],
                  char (*zones)[16],
                  int max)
{
    Cityops__V1__StatusResponse *s = NULL;
    struct drill_chan *ch;
    char leader[64];
    int n = 0;
    size_t i;

    if (drill_leader(env, leader, sizeof(leader)) == 0 ||
        (ch = drill_env_chan(env, leader)) == NULL ||
        status_call(ch, 0, 0, &s) != 0) {
        return 0;
    }
    for (i = 0; i < s->n_nodes && n < max; i++) {
        ids[n] = s->nodes[i]->id;
        snprintf(addrs[n], 64, "%s", s->nodes[i]->grpc_address);
        if (zones != NULL) {
            snprintf(zones[n], 16, "%s", s->nodes[i]->zone);
        }
        n++;
    }
    protobuf_c_message_free_unpacked(&s->base, NULL);
    return n;
}

int drill_healthy(struct drill_env *env, char *why, size_t len)
{
    uint64_t ids[DRILL_MAX_NODES];
    char addrs[DRILL_MAX_NODES][64];
    Cityops__V1__StatusResponse *s = NULL;
    uint64_t leader = 0;
    uint64_t commit = 0;
    int leaders = 0;
    int n;
    int i;

    n = drill_members(env, ids, addrs, NULL, DRILL_MAX_NODES);
    if (n == 0) {
        snprintf(why, len, "no leader answers");
        return 0;
    }
    /* The leader first: its commit index is the bar. */
    for (i = 0; i < n && leader == 0; i++) {
        struct drill_chan *ch = drill_env_chan(env, addrs[i]);

        if (ch != NULL && status_call(ch, 1, 0, &s) == 0) {
            if (s->n_nodes > 0 && s->nodes[0]->state ==
                                      CITYOPS__V1__RAFT_STATE__RAFT_STATE_LEADER) {
                leader = s->nodes[0]->id;
                commit = s->nodes[0]->commit_index;
            }
            protobuf_c_message_free_unpacked(&s->base, NULL);
        }
    }
    if (leader == 0) {
        snprintf(why, len, "no member says it leads");
        return 0;
    }
    for (i = 0; i < n; i++) {
        struct drill_chan *ch = drill_env_chan(env, addrs[i]);
        const Cityops__V1__NodeStatus *me;
        int ok;

        if (ch == NULL || status_call(ch, 1, 0, &s) != 0) {
            snprintf(why, len, "node %llu (%s) does not answer",
                     (unsigned long long)ids[i], addrs[i]);
            return 0;
        }
        me = s->n_nodes > 0 ? s->nodes[0] : NULL;
        ok = me != NULL && me->leader_id == leader &&
             me->applied_index >= commit && *me->store_error == '\0';
        if (me != NULL &&
            me->state == CITYOPS__V1__RAFT_STATE__RAFT_STATE_LEADER) {
            leaders++;
        }
        if (!ok) {
            snprintf(why, len,
                     "node %llu: leader %llu (want %llu), applied %llu "
                     "(want >= %llu)%s%s",
                     (unsigned long long)ids[i],
                     me != NULL ? (unsigned long long)me->leader_id : 0ULL,
                     (unsigned long long)leader,
                     me != NULL ? (unsigned long long)me->applied_index : 0ULL,
                     (unsigned long long)commit,
                     me != NULL && *me->store_error != '\0' ? ", store: " : "",
                     me != NULL ? me->store_error : "");
        }
        protobuf_c_message_free_unpacked(&s->base, NULL);
        if (!ok) {
            return 0;
        }
    }
    if (leaders != 1) {
        snprintf(why, len, "%d members say they lead", leaders);
        return 0;
    }
    snprintf(why, len, "%d members, leader %llu, applied >= %llu", n,
             (unsigned long long)leader, (unsigned long long)commit);
    return 1;
}

int64_t drill_wait_healthy(struct drill_env *env,
                           int64_t deadline_us,
                           char *why,
                           size_t len)
{
    int64_t last_say = drill_now_us();

    for (;;) {
        if (drill_healthy(env, why, len)) {
            return drill_now_us();
        }
        if (drill_now_us() >= deadline_us) {
            return -1;
        }
        if (drill_now_us() - last_say > 3000000) {
            drill_say("waiting for health: %s", why);
            last_say = drill_now_us();
        }
        drill_sleep_us(100000);
    }
}

/* One pass: 1 if every member reported the same digest at one index. */
static int converged_once(struct drill_env *env, struct drill_result *r)
{
    uint64_t ids[DRILL_MAX_NODES];
    char addrs[DRILL_MAX_NODES][64];
    char first[80] = "";
    uint64_t index = 0;
    int n = drill_members(env, ids, addrs, NULL, DRILL_MAX_NODES);
    int same = n > 0;
    int i;

    for (i = 0; i < n && same; i++) {
        struct drill_chan *ch = drill_env_chan(env, addrs[i]);
        Cityops__V1__StatusResponse *s = NULL;

        if (ch == NULL || status_call(ch, 1, 1, &s) != 0) {
            same = 0;
            break;
        }
        if (s->n_nodes == 0 || *s->nodes[0]->state_digest == '\0') {
            same = 0;
        } else if (i == 0) {
            snprintf(first, sizeof(first), "%s", s->nodes[0]->state_digest);
            index = s->nodes[0]->applied_index;
        } else {
            same = strcmp(first, s->nodes[0]->state_digest) == 0 &&
                   index == s->nodes[0]->applied_index;
        }
        protobuf_c_message_free_unpacked(&s->base, NULL);
    }
    if (same) {
        snprintf(r->digest, sizeof(r->digest), "%s", first);
        r->digest_index = index;
    }
    return same;
}

int drill_converge(struct drill_env *env,
                   double timeout_s,
                   struct drill_result *r)
{
    int64_t deadline = drill_now_us() + (int64_t)(timeout_s * 1e6);

    r->converged = 0;
    while (!(r->converged = converged_once(env, r)) &&
           drill_now_us() < deadline) {
        drill_sleep_us(300000);
    }
    return r->converged;
}

struct verify_part {
    struct drill_env *env;
    const char *drill_id;
    const struct drill_ack *acks;
    uint8_t *found;
    size_t from;
    size_t to;
    char leader[64];
    int64_t deadline;
    pthread_t thread;
};

static uint8_t verify_one(struct verify_part *p, const struct drill_ack *a)
{
    Cityops__V1__GetRequest req = CITYOPS__V1__GET_REQUEST__INIT;
    Cityops__V1__ReadOptions read = CITYOPS__V1__READ_OPTIONS__INIT;
    char token[128];
    int rot = 0;

    read.consistency = CITYOPS__V1__CONSISTENCY__CONSISTENCY_LINEARIZABLE;
    req.read = &read;
    req.case_id = a->case_id;
    drill_token_make(token, sizeof(token), p->drill_id, a->writer, a->seq);
    while (drill_now_us() < p->deadline) {
        struct drill_chan *ch =
            rot == 0 && *p->leader != '\0'
                ? drill_env_chan(p->env, p->leader)
                : p->env->chan[rot % p->env->n_load];
        ProtobufCMessage *resp = NULL;
        int status;
        uint8_t found;

        if (ch == NULL) {
            ch = p->env->chan[0];
        }
        status = drill_call(ch, "Cases/Get", &req.base,
                            &cityops__v1__case_reply__descriptor, 3000, &resp,
                            NULL, 0);
        if (status == GRPC_STATUS_NOT_FOUND) {
            return DRILL_FOUND_MISSING;
        }
        if (status == GRPC_STATUS_OK) {
            const Cityops__V1__Case *c =
                ((Cityops__V1__CaseReply *)resp)->case_;
            const char *got = c != NULL ? drill_token_of(c->description) : NULL;

            if (got == NULL || strcmp(got, token) != 0) {
                found = DRILL_FOUND_MISMATCH;
            } else if (c->state ==
                       CITYOPS__V1__CASE_STATE__CASE_STATE_VOIDED) {
                found = DRILL_FOUND_VOIDED;
            } else {
                found = DRILL_FOUND_OK;
            }
            protobuf_c_message_free_unpacked(resp, NULL);
            return found;
        }
        rot++;
        drill_sleep_us(100000);
    }
    return DRILL_FOUND_UNCHECKED;
}

static void *verify_main(void *arg)
{
    struct verify_part *p = arg;
    size_t i;

    for (i = p->from; i < p->to; i++) {
        p->found[i] = verify_one(p, &p->acks[i]);
    }
    return NULL;
}

/* Every case, linearizable, page by page: tokens of this drill, and how
 * many cases are voided. */
static int list_all(struct drill_env *env,
                    const char *leader,
                    const char *drill_id,
                    char ***tokens_out,
                    size_t *n_out,
                    int64_t *voided)
{
    Cityops__V1__ListRequest req = CITYOPS__V1__LIST_REQUEST__INIT;
    Cityops__V1__ReadOptions read = CITYOPS__V1__READ_OPTIONS__INIT;
    char page_token[256] = "";
    char **tokens = NULL;
    size_t n = 0;
    size_t cap = 0;
    size_t id_len = strlen(drill_id);
    int failures = 0;
    int rv = -1;

    *voided = 0;
    read.consistency = CITYOPS__V1__CONSISTENCY__CONSISTENCY_LINEARIZABLE;
    req.read = &read;
    req.page_size = LIST_PAGE;
    for (;;) {
        struct drill_chan *ch = failures == 0 ? drill_env_chan(env, leader)
                                              : env->chan[failures % env->n];
        Cityops__V1__ListResponse *lr;
        ProtobufCMessage *resp = NULL;
        size_t i;

        req.page_token = page_token;
        if (ch == NULL ||
            drill_call(ch, "Cases/List", &req.base,
                       &cityops__v1__list_response__descriptor, 10000, &resp,
                       NULL, 0) != GRPC_STATUS_OK) {
            if (++failures > 20) {
                goto out;
            }
            drill_sleep_us(200000);
            continue;
        }
        lr = (Cityops__V1__ListResponse *)resp;
        for (i = 0; i < lr->n_cases; i++) {
            const char *t = drill_token_of(lr->cases[i]->description);

            if (lr->cases[i]->state ==
                CITYOPS__V1__CASE_STATE__CASE_STATE_VOIDED) {
                (*voided)++;
            }
            if (t == NULL || strncmp(t, drill_id, id_len) != 0 ||
                t[id_len] != '/') {
                continue;
            }
            if (n == cap) {
                size_t c2 = cap == 0 ? 1024 : 2 * cap;
                char **grown = realloc(tokens, c2 * sizeof(*grown));

                if (grown == NULL) {
                    protobuf_c_message_free_unpacked(resp, NULL);
                    goto out;
                }
                tokens = grown;
                cap = c2;
            }
            if ((tokens[n] = strdup(t)) == NULL) {
                protobuf_c_message_free_unpacked(resp, NULL);
                goto out;
            }
            n++;
        }
        snprintf(page_token, sizeof(page_token), "%s", lr->next_page_token);
        protobuf_c_message_free_unpacked(resp, NULL);
        if (page_token[0] == '\0') {
            break;
        }
    }
    rv = 0;
out:
    *tokens_out = tokens;
    *n_out = n;
    return rv;
}

int drill_verify(struct drill_env *env,
                 const char *drill_id,
                 const struct drill_ack *acks,
                 size_t n,
                 int pitr,
                 struct drill_result *r)
{
    struct verify_part parts[VERIFY_THREADS];
    uint8_t *found = malloc(n + 1);
    char leader[64] = "";
    char **tokens = NULL;
    size_t n_tokens = 0;
    int64_t voided = 0;
    int started = 0;
    size_t i;
    int k;

    if (found == NULL) {
        return OPS_NOMEM;
    }
    drill_leader(env, leader, sizeof(leader));
    for (k = 0; k < VERIFY_THREADS; k++) {
        struct verify_part *p = &parts[k];

        p->env = env;
        p->drill_id = drill_id;
        p->acks = acks;
        p->found = found;
        p->from = n * (size_t)k / VERIFY_THREADS;
        p->to = n * (size_t)(k + 1) / VERIFY_THREADS;
        snprintf(p->leader, sizeof(p->leader), "%s", leader);
        p->deadline = drill_now_us() + VERIFY_DEADLINE_S * 1000000LL;
        if (pthread_create(&p->thread, NULL, verify_main, p) != 0) {
            verify_main(p);
        } else {
            started |= 1 << k;
        }
    }
    for (k = 0; k < VERIFY_THREADS; k++) {
        if (started & (1 << k)) {
            pthread_join(parts[k].thread, NULL);
        }
    }
    r->rpo_lost = drill_rpo_count(found, n, pitr, &r->unchecked);
    free(found);
    if (list_all(env, leader, drill_id, &tokens, &n_tokens, &voided) == 0) {
        r->doubled = drill_doubled_count(tokens, n_tokens);
        r->leaked = pitr ? voided : -1;
    } else {
        r->doubled = -1;
        r->leaked = pitr ? -1 : r->leaked;
        snprintf(r->error, sizeof(r->error),
                 "could not list the cases to look for doubled writes");
    }
    for (i = 0; i < n_tokens; i++) {
        free(tokens[i]);
    }
    free(tokens);
    return 0;
}

int drill_fault_rpc(struct drill_env *env,
                    const char *addr,
                    const char *fault,
                    uint32_t duration_ms,
                    const char *drill_id,
                    char *err,
                    size_t errlen)
{
    Cityops__V1__DrillFaultRequest req = CITYOPS__V1__DRILL_FAULT_REQUEST__INIT;
    Cityops__V1__RequestContext ctx = CITYOPS__V1__REQUEST_CONTEXT__INIT;
    struct drill_chan *ch = drill_env_chan(env, addr);
    ProtobufCMessage *resp = NULL;
    char details[256];
    int status;

    if (ch == NULL) {
        snprintf(err, errlen, "no channel to %s", addr);
        return -1;
    }
    ctx.actor_id = "cityctl-drill";
    ctx.role = CITYOPS__V1__ROLE__ROLE_ADMIN;
    req.ctx = &ctx;
    req.fault = (char *)fault;
    req.duration_ms = duration_ms;
    req.drill_id = (char *)drill_id;
    status = drill_call(ch, "Drill/Fault", &req.base,
                        &cityops__v1__drill_fault_reply__descriptor, 5000,
                        &resp, details, sizeof(details));
    if (resp != NULL) {
        protobuf_c_message_free_unpacked(resp, NULL);
    }
    /* A crash may take the node down before it answers. */
    if (status == GRPC_STATUS_OK ||
        (strcmp(fault, "crash") == 0 &&
         (status == GRPC_STATUS_UNAVAILABLE ||
          status == GRPC_STATUS_INTERNAL))) {
        return 0;
    }
    snprintf(err, errlen, "Drill/Fault %s on %s: %s: %s", fault, addr,
             rpc_status_name((grpc_status_code)status), details);
    return -1;
}

int drill_transfer(struct drill_env *env, uint64_t id)
{
    Cityops__V1__TransferLeaderRequest req =
        CITYOPS__V1__TRANSFER_LEADER_REQUEST__INIT;
    Cityops__V1__RequestContext ctx = CITYOPS__V1__REQUEST_CONTEXT__INIT;
    ProtobufCMessage *resp = NULL;
    char leader[64];
    struct drill_chan *ch;
    int status;

    if (drill_leader(env, leader, sizeof(leader)) == 0 ||
        (ch = drill_env_chan(env, leader)) == NULL) {
        return -1;
    }
    ctx.actor_id = "cityctl-drill";
    ctx.role = CITYOPS__V1__ROLE__ROLE_ADMIN;
    req.ctx = &ctx;
    req.id = id;
    status = drill_call(ch, "Cluster/TransferLeader", &req.base,
                        &cityops__v1__membership_reply__descriptor, 10000,
                        &resp, NULL, 0);
    if (resp != NULL) {
        protobuf_c_message_free_unpacked(resp, NULL);
    }
    return status == GRPC_STATUS_OK ? 0 : -1;
}
