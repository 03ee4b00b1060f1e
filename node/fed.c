/* Federation on the node: the mutual-TLS Deliver endpoint, the leader's
 * sender, and the Federation service on the ordinary port.
 *
 * Receiving: Federation/Deliver is served only on [federation] listen, a
 * TLS port that requires a client certificate from the federation CA. The
 * envelopes' origin must be a linked tier named by the peer's certificate
 * (CN or DNS SAN), and every message kind in them one that link allows
 * (kinds= on its config line, FedLink.allowed_kinds; none = all), else the
 * whole delivery is PERMISSION_DENIED; the leader proposes them as one
 * FedInbound command, whose apply skips what the origin's inbox already
 * holds, so a redelivery is acknowledged and not applied twice. A
 * follower answers UNAVAILABLE: the sender tries the remote cluster's next
 * endpoint.
 *
 * Sending: while this node leads, a thread walks every link (config file
 * and replicated ones): a child's stream is the outbox rows of link <tier>,
 * the parent's the rows of link "parent"; rows after the acknowledged seq
 * go out in order, 128 at a time, to the link's endpoints until one
 * applies them; the answer's applied_through is recorded through the log
 * (FedOutboxAck). A leader change or a crash between delivery and the ack
 * only causes a redelivery, which the receiver ignores.
 *
 * Apply cannot read this node's configuration, so the node writes into
 * commands what depends on it: the local tier id (origin_tier), the link
 * that leads to a publisher (FedSubscribe.stream) and the one that leads
 * back to a delivery's origin (FedInbound.reply_stream): "parent" for this
 * tier's parent link, else the tier id.
 *
 * Statistics: with [federation] stats_s > 0 the leader publishes, that
 * often, this month's (UTC+8) evaluation by department as topic "stats"
 * (key "YYYY-MM", a packed EvalReport). */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cityops/v1/eval.pb-c.h"
#include "cityops/v1/fed.pb-c.h"
#include "proto/clog.h"
#include "node_internal.h"
#include "proto/deadline_ts.h"

#define FED_BATCH 128
#define FED_CALL_MS 5000

struct fed_link_state {
    char tier_id[NODE_TIER_SIZE];
    int kind;
    char endpoints[4][NODE_ADDRESS_SIZE];
    size_t n_endpoints;
    struct rpc_channel *ch[4];
    size_t next_ep; /* the endpoint that answered last */
    int connected;
    int64_t last_success;
    char last_error[256];
    int used; /* seen in the last walk */
};

struct node_fed {
    struct node *n;
    struct rpc_server *tls_server;
    struct rpc_method tls_methods[1];
    struct node_handler tls_handler;
    struct rpc_tls tls;
    pthread_t thread;
    int running;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int stopping;
    /* links[]: written by the sender thread under status_lock (entries
     * are only added), read by Links under it */
    pthread_mutex_t status_lock;
    struct fed_link_state links[NODE_MAX_LINKS * 2];
    size_t n_links;
};

static int64_t wall_us(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* --- proposing from a thread and waiting for the outcome --- */

struct fed_wait {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int done;
    int rv;
    Cityops__V1__ResultCode code;
    uint64_t version;
    char message[256];
};

static void wait_done(void *arg,
                      int rv,
                      const Cityops__V1__CommandResult *result,
                      uint64_t leader_id)
{
    struct fed_wait *w = arg;

    (void)leader_id;
    pthread_mutex_lock(&w->lock);
    w->rv = rv;
    if (rv == 0) {
        w->code = result->code;
        w->version = result->version;
        snprintf(w->message, sizeof w->message, "%s", result->message);
    }
    w->done = 1;
    pthread_cond_signal(&w->cond);
    pthread_mutex_unlock(&w->lock);
}

/* Submit @cmd and wait for its result. 0 or a consensus error. */
static int submit_wait(struct node *n, Cityops__V1__Command *cmd,
                       struct fed_wait *w)
{
    int rv;

    memset(w, 0, sizeof *w);
    pthread_mutex_init(&w->lock, NULL);
    pthread_cond_init(&w->cond, NULL);
    rv = cons_submit(n->cons, cmd, n->cfg.write_wait_ms, wait_done, w);
    if (rv == 0) {
        pthread_mutex_lock(&w->lock);
        while (!w->done) {
            pthread_cond_wait(&w->cond, &w->lock);
        }
        pthread_mutex_unlock(&w->lock);
        rv = w->rv;
    }
    pthread_cond_destroy(&w->cond);
    pthread_mutex_destroy(&w->lock);
    return rv;
}

/* --- receiving: Federation/Deliver on the TLS port --- */

static int kind_in(char *const *kinds, size_t n, const char *kind)
{
    for (size_t i = 0; i < n; i++) {
        if (strcmp(kinds[i], kind) == 0) {
            return 1;
        }
    }
    return n == 0;
}

/* The first message kind of @req that @kinds (n of them; none = every
 * kind) does not allow, or NULL. */
static const char *kind_refused(char *const *kinds,
                                size_t n,
                                const Cityops__V1__DeliverRequest *req)
{
    for (size_t i = 0; req != NULL && i < req->n_envelopes; i++) {
        const char *k = req->envelopes[i]->message->kind;

        if (!kind_in(kinds, n, k != NULL ? k : "")) {
            return k != NULL ? k : "";
        }
    }
    return NULL;
}

/* The kind of this tier's link to @tier (config file first, then the
 * replicated links), or 0 if there is none; with @req, *refused is the
 * first of its message kinds that link does not allow (NULL: none). */
static int link_lookup(struct node *n,
                       const char *tier,
                       const Cityops__V1__DeliverRequest *req,
                       char *refused,
                       size_t refused_size)
{
    Cityops__V1__FedLink **links = NULL;
    size_t nl = 0;
    int kind = 0;
    const char *no = NULL;

    for (size_t i = 0; i < n->cfg.n_links && kind == 0; i++) {
        const struct node_link *l = &n->cfg.links[i];
        char *kinds[NODE_MAX_KINDS];

        if (strcmp(l->tier_id, tier) == 0) {
            kind = l->kind;
            for (size_t k = 0; k < l->n_allowed_kinds; k++) {
                kinds[k] = (char *)l->allowed_kinds[k];
            }
            no = kind_refused(kinds, l->n_allowed_kinds, req);
            if (no != NULL) {
                snprintf(refused, refused_size, "%s", no);
            }
        }
    }
    if (kind == 0 && store_fed_links(n->store, &links, &nl) == 0) {
        for (size_t i = 0; i < nl; i++) {
            if (kind == 0 && strcmp(links[i]->tier_id, tier) == 0) {
                kind = links[i]->kind;
                no = kind_refused(links[i]->allowed_kinds,
                                  links[i]->n_allowed_kinds, req);
                if (no != NULL) {
                    snprintf(refused, refused_size, "%s", no);
                }
            }
            cityops__v1__fed_link__free_unpacked(links[i], NULL);
        }
        free(links);
    }
    return kind;
}

static int link_kind(struct node *n, const char *tier)
{
    return link_lookup(n, tier, NULL, NULL, 0);
}

/* The outbox link that leads to @tier: "parent" for this tier's parent,
 * else the tier id itself. */
static const char *stream_to(struct node *n, const char *tier)
{
    return link_kind(n, tier) == CITYOPS__V1__LINK_KIND__LINK_KIND_PARENT
               ? "parent"
               : tier;
}

static int peer_is(const struct rpc_call *call, const char *tier)
{
    char names[8][128];
    size_t n = 0;

    if (rpc_call_peer_names(call, names, 8, &n) != 0) {
        return 0;
    }
    for (size_t i = 0; i < n; i++) {
        if (strcmp(names[i], tier) == 0) {
            return 1;
        }
    }
    return 0;
}

struct deliver {
    struct node *n;
    struct rpc_call *call;
    Cityops__V1__Command cmd;
    Cityops__V1__FedInbound in;
    char actor[NODE_TIER_SIZE + 8];
};

static void deliver_done(void *arg,
                         int rv,
                         const Cityops__V1__CommandResult *result,
                         uint64_t leader_id)
{
    struct deliver *d = arg;
    Cityops__V1__DeliverReply reply = CITYOPS__V1__DELIVER_REPLY__INIT;
    char msg[160];

    if (rv == CONS_NOTLEADER) {
        snprintf(msg, sizeof msg, "not the leader (node %llu leads): try "
                                  "another endpoint",
                 (unsigned long long)leader_id);
        rpc_call_fail(d->call, GRPC_STATUS_UNAVAILABLE, msg);
    } else if (rv != 0) {
        snprintf(msg, sizeof msg, "not applied: %s", cons_strerror(rv));
        rpc_call_fail(d->call, GRPC_STATUS_UNAVAILABLE, msg);
    } else if (result->code != CITYOPS__V1__RESULT_CODE__RESULT_OK) {
        rpc_call_fail(d->call, node_status_from_result(result->code),
                      result->message);
    } else {
        reply.applied_through = result->version;
        rpc_call_reply(d->call, &reply.base);
    }
    free(d);
}

static void deliver_handle(struct rpc_call *call,
                           const ProtobufCMessage *msg,
                           void *data)
{
    const struct node_handler *h = data;
    struct node *n = h->n;
    const Cityops__V1__DeliverRequest *req =
        (const Cityops__V1__DeliverRequest *)msg;
    const char *origin;
    struct deliver *d;
    char text[200];
    char refused[64] = "";
    int rv;

    if (req->n_envelopes == 0 || req->envelopes[0]->origin == NULL ||
        req->envelopes[0]->origin[0] == '\0') {
        rpc_call_fail(call, GRPC_STATUS_INVALID_ARGUMENT,
                      "no envelopes, or no origin");
        return;
    }
    origin = req->envelopes[0]->origin;
    for (size_t i = 0; i < req->n_envelopes; i++) {
        if (req->envelopes[i]->message == NULL ||
            strcmp(req->envelopes[i]->origin, origin) != 0) {
            rpc_call_fail(call, GRPC_STATUS_INVALID_ARGUMENT,
                          "one origin per delivery, every envelope with a "
                          "message");
            return;
        }
    }
    if (!peer_is(call, origin)) {
        snprintf(text, sizeof text,
                 "the peer's certificate does not name tier %.64s", origin);
        clog(CLOG_WARN, "fed", "refused a delivery: %s", text);
        rpc_call_fail(call, GRPC_STATUS_PERMISSION_DENIED, text);
        return;
    }
    if (link_lookup(n, origin, req, refused, sizeof refused) == 0) {
        snprintf(text, sizeof text, "tier %.64s is not linked to %s", origin,
                 n->cfg.tier_id);
        clog(CLOG_WARN, "fed", "refused a delivery: %s", text);
        rpc_call_fail(call, GRPC_STATUS_PERMISSION_DENIED, text);
        return;
    }
    if (refused[0] != '\0') {
        snprintf(text, sizeof text,
                 "kind \"%.40s\" is not allowed from tier %.64s", refused,
                 origin);
        clog(CLOG_WARN, "fed", "refused a delivery: %s", text);
        rpc_call_fail(call, GRPC_STATUS_PERMISSION_DENIED, text);
        return;
    }
    d = calloc(1, sizeof *d);
    if (d == NULL) {
        rpc_call_fail(call, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
        return;
    }
    d->n = n;
    d->call = call;
    snprintf(d->actor, sizeof d->actor, "fed:%s", origin);
    cityops__v1__fed_inbound__init(&d->in);
    d->in.n_envelopes = req->n_envelopes;
    d->in.envelopes = req->envelopes; /* borrowed from the call */
    d->in.reply_stream = (char *)stream_to(n, origin);
    cityops__v1__command__init(&d->cmd);
    d->cmd.actor_id = d->actor;
    d->cmd.role = CITYOPS__V1__ROLE__ROLE_SYSTEM;
    d->cmd.op_case = CITYOPS__V1__COMMAND__OP_FED_INBOUND;
    d->cmd.fed_inbound = &d->in;
    rv = cons_submit(n->cons, &d->cmd,
                     node_call_wait_ms(call, n->cfg.write_wait_ms),
                     deliver_done, d);
    if (rv != 0) {
        free(d);
        rpc_call_fail(call, GRPC_STATUS_UNAVAILABLE, cons_strerror(rv));
    }
}

/* --- sending --- */

static struct fed_link_state *state_for(struct node_fed *f,
                                        const char *tier,
                                        int kind,
                                        char eps[][NODE_ADDRESS_SIZE],
                                        size_t n_eps)
{
    struct fed_link_state *l = NULL;

    for (size_t i = 0; i < f->n_links; i++) {
        if (strcmp(f->links[i].tier_id, tier) == 0) {
            l = &f->links[i];
        }
    }
    if (l == NULL) {
        if (f->n_links == sizeof f->links / sizeof f->links[0]) {
            return NULL;
        }
        l = &f->links[f->n_links++];
        memset(l, 0, sizeof *l);
        snprintf(l->tier_id, sizeof l->tier_id, "%s", tier);
    }
    /* endpoints changed: reopen channels */
    if (l->n_endpoints != n_eps ||
        memcmp(l->endpoints, eps, n_eps * NODE_ADDRESS_SIZE) != 0) {
        for (size_t i = 0; i < 4; i++) {
            if (l->ch[i] != NULL) {
                rpc_channel_close(l->ch[i]);
                l->ch[i] = NULL;
            }
        }
        memset(l->endpoints, 0, sizeof l->endpoints);
        memcpy(l->endpoints, eps, n_eps * NODE_ADDRESS_SIZE);
        l->n_endpoints = n_eps;
        l->next_ep = 0;
    }
    l->kind = kind;
    l->used = 1;
    return l;
}

/* Deliver @rows to @l; *through = the receiver's applied_through. */
static int deliver_to(struct node_fed *f,
                      struct fed_link_state *l,
                      Cityops__V1__OutboxMessage **rows,
                      size_t n,
                      uint64_t *through,
                      char *err,
                      size_t errlen)
{
    Cityops__V1__DeliverRequest req = CITYOPS__V1__DELIVER_REQUEST__INIT;
    Cityops__V1__FedEnvelope *env = calloc(n, sizeof *env);
    Cityops__V1__FedEnvelope **ptrs = calloc(n, sizeof *ptrs);
    int rv = -1;

    if (env == NULL || ptrs == NULL) {
        free(env);
        free(ptrs);
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        cityops__v1__fed_envelope__init(&env[i]);
        env[i].origin = f->n->cfg.tier_id;
        env[i].message = rows[i];
        ptrs[i] = &env[i];
    }
    req.n_envelopes = n;
    req.envelopes = ptrs;
    for (size_t t = 0; t < l->n_endpoints && rv != 0; t++) {
        size_t e = (l->next_ep + t) % l->n_endpoints;
        ProtobufCMessage *resp = NULL;
        grpc_status_code st = GRPC_STATUS_UNKNOWN;
        char *details = NULL;

        if (l->ch[e] == NULL) {
            l->ch[e] =
                rpc_channel_open_tls(l->endpoints[e], &f->tls, l->tier_id);
        }
        if (l->ch[e] == NULL) {
            snprintf(err, errlen,
                     "%s: cannot open a TLS channel (check [federation] "
                     "ca/cert/key)",
                     l->endpoints[e]);
            continue;
        }
        if (rpc_call_unary(l->ch[e], "/cityops.v1.Federation/Deliver",
                           &req.base, &cityops__v1__deliver_reply__descriptor,
                           FED_CALL_MS, &resp, &st, &details) == 0 &&
            st == GRPC_STATUS_OK && resp != NULL) {
            *through =
                ((Cityops__V1__DeliverReply *)resp)->applied_through;
            protobuf_c_message_free_unpacked(resp, NULL);
            l->next_ep = e;
            rv = 0;
        } else {
            snprintf(err, errlen, "%s: %s: %s", l->endpoints[e],
                     rpc_status_name(st),
                     details != NULL ? details : "no answer");
        }
        free(details);
    }
    free(env);
    free(ptrs);
    return rv;
}

static int ack(struct node_fed *f, const char *stream, uint64_t through)
{
    Cityops__V1__Command cmd = CITYOPS__V1__COMMAND__INIT;
    Cityops__V1__FedOutboxAck a = CITYOPS__V1__FED_OUTBOX_ACK__INIT;
    struct fed_wait w;
    int rv;

    a.link = (char *)stream;
    a.through = through;
    cmd.actor_id = "cityopsd";
    cmd.role = CITYOPS__V1__ROLE__ROLE_SYSTEM;
    cmd.op_case = CITYOPS__V1__COMMAND__OP_FED_OUTBOX_ACK;
    cmd.fed_outbox_ack = &a;
    rv = submit_wait(f->n, &cmd, &w);
    return rv == 0 && w.code == CITYOPS__V1__RESULT_CODE__RESULT_OK ? 0 : -1;
}

/* Send what @stream of @l holds beyond its acknowledged seq. */
static void pump(struct node_fed *f,
                 struct fed_link_state *l,
                 const char *stream)
{
    for (int round = 0; round < 8; round++) {
        Cityops__V1__OutboxMessage **rows = NULL;
        uint64_t acked = 0;
        uint64_t last = 0;
        int64_t oldest = 0;
        uint64_t through = 0;
        char err[256] = "";
        size_t n = 0;
        int rv;

        if (store_fed_outbox_state(f->n->store, stream, &acked, &last,
                                   &oldest) != 0 ||
            last <= acked) {
            return;
        }
        if (store_outbox_list(f->n->store, stream, acked, FED_BATCH, &rows,
                              &n) != 0 ||
            n == 0) {
            return;
        }
        rv = deliver_to(f, l, rows, n, &through, err, sizeof err);
        pthread_mutex_lock(&f->status_lock);
        if (rv != 0) {
            l->connected = 0;
            snprintf(l->last_error, sizeof l->last_error, "%s", err);
        } else {
            l->connected = 1;
            l->last_success = wall_us();
            l->last_error[0] = '\0';
        }
        pthread_mutex_unlock(&f->status_lock);
        if (rv != 0) {
            clog(CLOG_DEBUG, "fed", "link %s: %s", l->tier_id, err);
        }
        for (size_t i = 0; i < n; i++) {
            cityops__v1__outbox_message__free_unpacked(rows[i], NULL);
        }
        free(rows);
        if (!l->connected || through <= acked ||
            ack(f, stream, through) != 0) {
            return;
        }
    }
}

static void walk(struct node_fed *f)
{
    Cityops__V1__FedLink **links = NULL;
    size_t nl = 0;

    for (size_t i = 0; i < f->n_links; i++) {
        f->links[i].used = 0;
    }
    for (size_t i = 0; i < f->n->cfg.n_links; i++) {
        struct node_link *c = &f->n->cfg.links[i];
        struct fed_link_state *l;

        pthread_mutex_lock(&f->status_lock);
        l = state_for(f, c->tier_id, c->kind, c->endpoints, c->n_endpoints);
        pthread_mutex_unlock(&f->status_lock);
        if (l != NULL) {
            pump(f, l, c->kind == CITYOPS__V1__LINK_KIND__LINK_KIND_PARENT
                           ? "parent"
                           : c->tier_id);
        }
    }
    if (store_fed_links(f->n->store, &links, &nl) != 0) {
        return;
    }
    for (size_t i = 0; i < nl; i++) {
        char eps[4][NODE_ADDRESS_SIZE];
        size_t ne = 0;
        struct fed_link_state *l;

        memset(eps, 0, sizeof eps);
        for (size_t e = 0; e < links[i]->n_endpoints && ne < 4; e++) {
            snprintf(eps[ne++], NODE_ADDRESS_SIZE, "%s",
                     links[i]->endpoints[e]);
        }
        pthread_mutex_lock(&f->status_lock);
        l = state_for(f, links[i]->tier_id, links[i]->kind, eps, ne);
        pthread_mutex_unlock(&f->status_lock);
        if (l != NULL) {
            pump(f, l,
                 links[i]->kind == CITYOPS__V1__LINK_KIND__LINK_KIND_PARENT
                     ? "parent"
                     : links[i]->tier_id);
        }
        cityops__v1__fed_link__free_unpacked(links[i], NULL);
    }
    free(links);
}

/* The current month in UTC+8, "YYYY-MM". */
static void month_now(char out[32])
{
    time_t t = (time_t)(wall_us() / 1000000) + 8 * 3600;
    struct tm tm;

    gmtime_r(&t, &tm);
    snprintf(out, 32, "%04d-%02d", tm.tm_year + 1900, tm.tm_mon + 1);
}

/* Publish this month's evaluation by department as topic "stats": it
 * goes to the parent and to every subscriber of the topic. */
static void stats_publish(struct node_fed *f)
{
    Cityops__V1__EvalRequest req = CITYOPS__V1__EVAL_REQUEST__INIT;
    Cityops__V1__Command cmd = CITYOPS__V1__COMMAND__INIT;
    Cityops__V1__FedPublish p = CITYOPS__V1__FED_PUBLISH__INIT;
    Cityops__V1__EvalReport *rep = NULL;
    struct fed_wait w;
    char period[32];
    int rv;

    month_now(period);
    req.period = period;
    req.group_by = "department";
    if (store_eval_report(f->n->store, &req, &rep) != 0) {
        clog(CLOG_WARN, "fed", "stats %s: %s", period,
             store_errmsg(f->n->store));
        return;
    }
    p.payload.len = cityops__v1__eval_report__get_packed_size(rep);
    p.payload.data = malloc(p.payload.len + 1);
    if (p.payload.data == NULL) {
        cityops__v1__eval_report__free_unpacked(rep, NULL);
        return;
    }
    cityops__v1__eval_report__pack(rep, p.payload.data);
    cityops__v1__eval_report__free_unpacked(rep, NULL);
    p.topic = "stats";
    p.key = period;
    p.payload_type = "cityops.v1.EvalReport";
    p.origin_tier = f->n->cfg.tier_id;
    cmd.actor_id = "cityopsd";
    cmd.role = CITYOPS__V1__ROLE__ROLE_SYSTEM;
    cmd.op_case = CITYOPS__V1__COMMAND__OP_FED_PUBLISH;
    cmd.fed_publish = &p;
    rv = submit_wait(f->n, &cmd, &w);
    if (rv != 0 || w.code != CITYOPS__V1__RESULT_CODE__RESULT_OK) {
        clog(CLOG_WARN, "fed", "stats %s not published: %s", period,
             rv != 0 ? cons_strerror(rv) : w.message);
    }
    free(p.payload.data);
}

static void *sender_main(void *arg)
{
    struct node_fed *f = arg;
    int64_t stats_at = 0;

    pthread_mutex_lock(&f->lock);
    while (!f->stopping) {
        struct cons_status st;
        struct timespec ts;
        unsigned ms = f->n->cfg.fed_retry_ms;

        pthread_mutex_unlock(&f->lock);
        cons_status_get(f->n->cons, &st);
        if (st.state == CONS_STATE_LEADER && f->n->cfg.fed_stats_s > 0 &&
            wall_us() - stats_at >=
                (int64_t)f->n->cfg.fed_stats_s * 1000000) {
            stats_at = wall_us();
            stats_publish(f);
        }
        if (st.state == CONS_STATE_LEADER) {
            walk(f);
        }
        pthread_mutex_lock(&f->lock);
        deadline_ts(CLOCK_REALTIME, ms, &ts);
        if (!f->stopping) {
            pthread_cond_timedwait(&f->cond, &f->lock, &ts);
        }
    }
    pthread_mutex_unlock(&f->lock);
    return NULL;
}

/* --- the Federation service on the ordinary port --- */

static int fed_reply(struct node_write *w,
                     const Cityops__V1__CommandResult *result)
{
    Cityops__V1__FedReply reply = CITYOPS__V1__FED_REPLY__INIT;

    reply.message = result->message;
    reply.applied_index = result->index;
    reply.task_id = result->ref;
    rpc_call_reply(w->call, &reply.base);
    return 0;
}

/* Put this tier's id into a string field of the call's request (which
 * protobuf-c allocated and frees with the call). */
static int set_tier(char **field, const char *tier)
{
    char *copy = strdup(tier);

    if (copy == NULL) {
        return -1;
    }
    if (*field != NULL && (*field)[0] != '\0') {
        free(*field); /* "" is protobuf-c's static empty string */
    }
    *field = copy;
    return 0;
}

static void fed_write_handle(struct rpc_call *call,
                             const ProtobufCMessage *msg,
                             void *data)
{
    const struct node_handler *h = data;
    struct node *n = h->n;
    ProtobufCMessage *req = (ProtobufCMessage *)msg;
    const Cityops__V1__RequestContext *ctx;
    int rv = 0;

    if (n->cfg.tier_id[0] == '\0') {
        rpc_call_fail(call, GRPC_STATUS_FAILED_PRECONDITION,
                      "this cluster has no [federation] tier_id");
        return;
    }
    switch (h->op) {
    case CITYOPS__V1__COMMAND__OP_FED_ASSIGN_TASK: {
        Cityops__V1__FedAssignTask *r = (Cityops__V1__FedAssignTask *)req;
        ctx = r->ctx;
        if (r->task != NULL) {
            rv = set_tier(&r->task->origin_tier, n->cfg.tier_id);
        }
        break;
    }
    case CITYOPS__V1__COMMAND__OP_FED_FEEDBACK: {
        Cityops__V1__FedFeedback *r = (Cityops__V1__FedFeedback *)req;
        ctx = r->ctx;
        if (r->feedback != NULL) {
            rv = set_tier(&r->feedback->tier_id, n->cfg.tier_id);
        }
        break;
    }
    case CITYOPS__V1__COMMAND__OP_FED_FORWARD_TASK: {
        Cityops__V1__FedForwardTask *r = (Cityops__V1__FedForwardTask *)req;
        ctx = r->ctx;
        rv = set_tier(&r->origin_tier, n->cfg.tier_id);
        break;
    }
    case CITYOPS__V1__COMMAND__OP_FED_TASK_TO_CASE:
        ctx = ((Cityops__V1__FedTaskToCase *)req)->ctx;
        break;
    case CITYOPS__V1__COMMAND__OP_FED_HANDOVER: {
        Cityops__V1__FedHandover *r = (Cityops__V1__FedHandover *)req;
        ctx = r->ctx;
        rv = set_tier(&r->origin_tier, n->cfg.tier_id);
        break;
    }
    case CITYOPS__V1__COMMAND__OP_FED_ESCALATE: {
        Cityops__V1__FedEscalate *r = (Cityops__V1__FedEscalate *)req;
        ctx = r->ctx;
        rv = set_tier(&r->origin_tier, n->cfg.tier_id);
        break;
    }
    case CITYOPS__V1__COMMAND__OP_FED_HANDOVER_ANSWER:
        ctx = ((Cityops__V1__FedHandoverAnswer *)req)->ctx;
        break;
    case CITYOPS__V1__COMMAND__OP_FED_TASK_CLOSE:
        ctx = ((Cityops__V1__FedTaskClose *)req)->ctx;
        break;
    case CITYOPS__V1__COMMAND__OP_FED_SUBSCRIBE: {
        Cityops__V1__FedSubscribe *r = (Cityops__V1__FedSubscribe *)req;
        ctx = r->ctx;
        rv = set_tier(&r->origin_tier, n->cfg.tier_id);
        if (rv == 0 && r->publisher_tier[0] != '\0') {
            rv = set_tier(&r->stream, stream_to(n, r->publisher_tier));
        }
        break;
    }
    case CITYOPS__V1__COMMAND__OP_FED_PUBLISH: {
        Cityops__V1__FedPublish *r = (Cityops__V1__FedPublish *)req;
        ctx = r->ctx;
        rv = set_tier(&r->origin_tier, n->cfg.tier_id);
        break;
    }
    default:
        ctx = ((Cityops__V1__FedLinkSet *)req)->ctx;
        break;
    }
    if (rv != 0) {
        rpc_call_fail(call, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
        return;
    }
    node_write_submit(n, call, ctx, "ctx.actor_id is required", h->op, req,
                      sizeof(struct node_write), fed_reply);
}

enum {
    FED_LINKS = NODE_READ_FED,
    FED_TASKS,
    FED_RECEIVED,
    FED_WITNESS,
    FED_INCOMING
};

static void links_reply(struct node *n, struct rpc_call *call)
{
    struct node_fed *f = n->fed;
    Cityops__V1__FedLinksResponse resp = CITYOPS__V1__FED_LINKS_RESPONSE__INIT;
    Cityops__V1__FedLinkStatus st[NODE_MAX_LINKS * 2];
    Cityops__V1__FedLinkStatus *ptrs[NODE_MAX_LINKS * 2];
    Cityops__V1__FedLink lk[NODE_MAX_LINKS * 2];
    char *eps[NODE_MAX_LINKS * 2][4];
    char errs[NODE_MAX_LINKS * 2][256];
    size_t k = 0;

    resp.tier_id = n->cfg.tier_id;
    pthread_mutex_lock(&f->status_lock);
    for (size_t i = 0; i < f->n_links && k < NODE_MAX_LINKS * 2; i++, k++) {
        struct fed_link_state *l = &f->links[i];
        const char *stream =
            l->kind == CITYOPS__V1__LINK_KIND__LINK_KIND_PARENT ? "parent"
                                                                : l->tier_id;
        int64_t oldest = 0;

        cityops__v1__fed_link_status__init(&st[k]);
        cityops__v1__fed_link__init(&lk[k]);
        lk[k].tier_id = l->tier_id;
        lk[k].kind = l->kind;
        for (size_t e = 0; e < l->n_endpoints; e++) {
            eps[k][e] = l->endpoints[e];
        }
        lk[k].n_endpoints = l->n_endpoints;
        lk[k].endpoints = eps[k];
        st[k].link = &lk[k];
        st[k].connected = l->connected;
        st[k].last_success = l->last_success;
        snprintf(errs[k], sizeof errs[k], "%s", l->last_error);
        st[k].last_error = errs[k];
        store_fed_outbox_state(n->store, stream, &st[k].acked_through,
                               &st[k].last_seq, &oldest);
        st[k].backlog = st[k].last_seq - st[k].acked_through;
        st[k].lag_ms = oldest > 0 ? (wall_us() - oldest) / 1000 : 0;
        store_fed_inbox_through(n->store, l->tier_id, &st[k].inbox_through);
        ptrs[k] = &st[k];
    }
    pthread_mutex_unlock(&f->status_lock);
    resp.links = ptrs;
    resp.n_links = k;
    rpc_call_reply(call, &resp.base);
}

void node_fed_read(struct node *n, struct rpc_call *call, int kind)
{
    char msg[300];
    int rv;

    if (kind == FED_LINKS && n->fed != NULL) {
        links_reply(n, call);
        return;
    }
    if (kind == FED_LINKS) {
        rpc_call_fail(call, GRPC_STATUS_UNAVAILABLE, "node is starting");
        return;
    }
    if (kind == FED_RECEIVED) {
        const Cityops__V1__FedReceivedRequest *req =
            (const Cityops__V1__FedReceivedRequest *)rpc_call_request(call);
        Cityops__V1__FedReceivedResponse *r = NULL;

        rv = store_fed_received(n->store, req->topic, req->origin, &r);
        if (rv == 0) {
            rpc_call_reply(call, &r->base);
            cityops__v1__fed_received_response__free_unpacked(r, NULL);
            return;
        }
    } else if (kind == FED_INCOMING) {
        Cityops__V1__FedIncomingResponse *r = NULL;

        rv = store_fed_handovers(n->store, &r);
        if (rv == 0) {
            rpc_call_reply(call, &r->base);
            cityops__v1__fed_incoming_response__free_unpacked(r, NULL);
            return;
        }
    } else if (kind == FED_WITNESS) {
        const Cityops__V1__FedWitnessRequest *req =
            (const Cityops__V1__FedWitnessRequest *)rpc_call_request(call);
        Cityops__V1__CheckpointList *r = NULL;

        rv = store_fed_witness_list(n->store, req->origin, &r);
        if (rv == 0) {
            rpc_call_reply(call, &r->base);
            cityops__v1__checkpoint_list__free_unpacked(r, NULL);
            return;
        }
    } else {
        Cityops__V1__FedTasksResponse *r = NULL;

        rv = store_fed_tasks(n->store, wall_us(), &r);
        if (rv == 0) {
            rpc_call_reply(call, &r->base);
            cityops__v1__fed_tasks_response__free_unpacked(r, NULL);
            return;
        }
    }
    if (rv == STORE_INVALID) {
        rpc_call_fail(call, GRPC_STATUS_INVALID_ARGUMENT,
                      "topic or origin is not a valid name");
        return;
    }
    snprintf(msg, sizeof msg, "federation: %s", store_errmsg(n->store));
    rpc_call_fail(call, node_status_from_err(rv), msg);
}

void node_fed_methods_add(struct node *n)
{
    node_method_add(n, "/cityops.v1.Federation/AssignTask",
                    &cityops__v1__fed_assign_task__descriptor,
                    &cityops__v1__fed_reply__descriptor, fed_write_handle,
                    CITYOPS__V1__COMMAND__OP_FED_ASSIGN_TASK);
    node_method_add(n, "/cityops.v1.Federation/Feedback",
                    &cityops__v1__fed_feedback__descriptor,
                    &cityops__v1__fed_reply__descriptor, fed_write_handle,
                    CITYOPS__V1__COMMAND__OP_FED_FEEDBACK);
    node_method_add(n, "/cityops.v1.Federation/SetLink",
                    &cityops__v1__fed_link_set__descriptor,
                    &cityops__v1__fed_reply__descriptor, fed_write_handle,
                    CITYOPS__V1__COMMAND__OP_FED_LINK_SET);
    node_method_add(n, "/cityops.v1.Federation/ForwardTask",
                    &cityops__v1__fed_forward_task__descriptor,
                    &cityops__v1__fed_reply__descriptor, fed_write_handle,
                    CITYOPS__V1__COMMAND__OP_FED_FORWARD_TASK);
    node_method_add(n, "/cityops.v1.Federation/TaskToCase",
                    &cityops__v1__fed_task_to_case__descriptor,
                    &cityops__v1__fed_reply__descriptor, fed_write_handle,
                    CITYOPS__V1__COMMAND__OP_FED_TASK_TO_CASE);
    node_method_add(n, "/cityops.v1.Federation/Handover",
                    &cityops__v1__fed_handover__descriptor,
                    &cityops__v1__fed_reply__descriptor, fed_write_handle,
                    CITYOPS__V1__COMMAND__OP_FED_HANDOVER);
    node_method_add(n, "/cityops.v1.Federation/Subscribe",
                    &cityops__v1__fed_subscribe__descriptor,
                    &cityops__v1__fed_reply__descriptor, fed_write_handle,
                    CITYOPS__V1__COMMAND__OP_FED_SUBSCRIBE);
    node_method_add(n, "/cityops.v1.Federation/Publish",
                    &cityops__v1__fed_publish__descriptor,
                    &cityops__v1__fed_reply__descriptor, fed_write_handle,
                    CITYOPS__V1__COMMAND__OP_FED_PUBLISH);
    node_method_add(n, "/cityops.v1.Federation/Escalate",
                    &cityops__v1__fed_escalate__descriptor,
                    &cityops__v1__fed_reply__descriptor, fed_write_handle,
                    CITYOPS__V1__COMMAND__OP_FED_ESCALATE);
    node_method_add(n, "/cityops.v1.Federation/AnswerHandover",
                    &cityops__v1__fed_handover_answer__descriptor,
                    &cityops__v1__fed_reply__descriptor, fed_write_handle,
                    CITYOPS__V1__COMMAND__OP_FED_HANDOVER_ANSWER);
    node_method_add(n, "/cityops.v1.Federation/CloseTask",
                    &cityops__v1__fed_task_close__descriptor,
                    &cityops__v1__fed_reply__descriptor, fed_write_handle,
                    CITYOPS__V1__COMMAND__OP_FED_TASK_CLOSE);
    node_method_add(n, "/cityops.v1.Federation/Incoming",
                    &cityops__v1__fed_incoming_request__descriptor,
                    &cityops__v1__fed_incoming_response__descriptor,
                    node_read_handle, FED_INCOMING);
    node_method_add(n, "/cityops.v1.Federation/Received",
                    &cityops__v1__fed_received_request__descriptor,
                    &cityops__v1__fed_received_response__descriptor,
                    node_read_handle, FED_RECEIVED);
    node_method_add(n, "/cityops.v1.Federation/Witness",
                    &cityops__v1__fed_witness_request__descriptor,
                    &cityops__v1__checkpoint_list__descriptor,
                    node_read_handle, FED_WITNESS);
    node_method_add(n, "/cityops.v1.Federation/Links",
                    &cityops__v1__fed_links_request__descriptor,
                    &cityops__v1__fed_links_response__descriptor,
                    node_read_handle, FED_LINKS);
    node_method_add(n, "/cityops.v1.Federation/Tasks",
                    &cityops__v1__fed_tasks_request__descriptor,
                    &cityops__v1__fed_tasks_response__descriptor,
                    node_read_handle, FED_TASKS);
}

/* --- lifetime --- */

int node_fed_start(struct node *n, struct node_fed **out)
{
    struct node_fed *f = calloc(1, sizeof *f);
    struct rpc_server_config sc;
    int port = 0;

    if (f == NULL) {
        return NODE_NOMEM;
    }
    f->n = n;
    pthread_mutex_init(&f->lock, NULL);
    pthread_mutex_init(&f->status_lock, NULL);
    pthread_cond_init(&f->cond, NULL);
    f->tls.ca_file = n->cfg.fed_ca;
    f->tls.cert_file = n->cfg.fed_cert;
    f->tls.key_file = n->cfg.fed_key;
    *out = f;
    if (n->cfg.fed_listen[0] == '\0') {
        return 0; /* not federated: the service answers, nothing is sent */
    }
    f->tls_handler.n = n;
    f->tls_methods[0].path = "/cityops.v1.Federation/Deliver";
    f->tls_methods[0].request = &cityops__v1__deliver_request__descriptor;
    f->tls_methods[0].response = &cityops__v1__deliver_reply__descriptor;
    f->tls_methods[0].handler = deliver_handle;
    f->tls_methods[0].data = &f->tls_handler;
    memset(&sc, 0, sizeof sc);
    sc.address = n->cfg.fed_listen;
    sc.methods = f->tls_methods;
    sc.n_methods = 1;
    sc.tls = &f->tls;
    if (rpc_server_start(&sc, &f->tls_server, &port) != 0) {
        clog(CLOG_ERROR, "fed",
             "cannot serve federation on %s with the certificates of "
             "[federation]: see above",
             n->cfg.fed_listen);
        return NODE_START;
    }
    if (pthread_create(&f->thread, NULL, sender_main, f) != 0) {
        return NODE_START;
    }
    f->running = 1;
    clog(CLOG_INFO, "fed", "tier %s: federation on %s (mutual TLS), %zu "
                           "links in the config",
         n->cfg.tier_id, n->cfg.fed_listen, n->cfg.n_links);
    return 0;
}

/* Before Raft stops (the sender proposes acks). */
void node_fed_stop(struct node_fed *f)
{
    if (f == NULL) {
        return;
    }
    pthread_mutex_lock(&f->lock);
    f->stopping = 1;
    pthread_cond_signal(&f->cond);
    pthread_mutex_unlock(&f->lock);
    if (f->running) {
        pthread_join(f->thread, NULL);
        f->running = 0;
    }
    if (f->tls_server != NULL) {
        rpc_server_shutdown(f->tls_server);
    }
}

/* After Raft stopped: no Deliver can be waiting on it any more. */
void node_fed_free(struct node_fed *f)
{
    if (f == NULL) {
        return;
    }
    if (f->tls_server != NULL) {
        rpc_server_destroy(f->tls_server, 1000);
    }
    for (size_t i = 0; i < f->n_links; i++) {
        for (size_t e = 0; e < 4; e++) {
            if (f->links[i].ch[e] != NULL) {
                rpc_channel_close(f->links[i].ch[e]);
            }
        }
    }
    pthread_cond_destroy(&f->cond);
    pthread_mutex_destroy(&f->status_lock);
    pthread_mutex_destroy(&f->lock);
    free(f);
}
