/* cityops.v1.Public: public reports shaped like Open311 GeoReport v2
 * (DOMAIN.md 8). Create, Reopen and Redact are writes: the request goes into
 * a Command (public_report, reopen, redact) and through consensus like any
 * case write; a follower forwards the call to the leader. Their replies are
 * built after apply on the node that applied them, on the reader thread
 * (never on the Raft loop): the public status of the report and, for
 * Create, the possible duplicates found in the spatial index. Services,
 * Get and Updates are reads served like Cases/Get (STALE at once,
 * LINEARIZABLE after a barrier on the leader).
 *
 * No reply carries the reporter's contact: PublicStatus has no field for
 * it and the store keeps it where no read reaches. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cityops/v1/public.pb-c.h"
#include "proto/clog.h"
#include "node_internal.h"

enum {
    PUB_READ_SERVICES = NODE_READ_PUBLIC,
    PUB_READ_GET,
    PUB_READ_UPDATES,
};

#define PUB_DUPLICATES_MAX 10

static int64_t now_us(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static void fail_store(struct node *n,
                       struct rpc_call *call,
                       int rv,
                       const char *what)
{
    char msg[STORE_ERRMSG_SIZE + 64];

    if (rv == STORE_NOTFOUND) {
        snprintf(msg, sizeof msg, "%s: no such report", what);
        rpc_call_fail(call, GRPC_STATUS_NOT_FOUND, msg);
        return;
    }
    if (rv == STORE_INVALID) {
        snprintf(msg, sizeof msg, "%s: %s", what, store_errmsg(n->store));
        rpc_call_fail(call, GRPC_STATUS_INVALID_ARGUMENT, msg);
        return;
    }
    snprintf(msg, sizeof msg, "%s: %s", what, store_strerror(rv));
    clog(CLOG_WARN, "public", "%s failed: %s", what, store_errmsg(n->store));
    rpc_call_fail(call, node_status_from_err(rv), msg);
}

/* --- writes --- */

struct pub_write {
    struct node_write w; /* first: node_write_submit() allocates us */
    /* after apply, for the reply */
    uint64_t case_id;
    uint64_t index;
    Cityops__V1__CategoryType type;
    char major[3];
    char minor[3];
    double lat;
    double lon;
    int has_pos;
    int64_t reported;
};

static void duplicates_find(struct pub_write *w,
                            Cityops__V1__DuplicateHint ***out,
                            size_t *n)
{
    struct store_public_near q;
    uint32_t radius = STORE_PUBLIC_DUP_RADIUS_M;
    uint32_t hours = STORE_PUBLIC_DUP_WINDOW_HOURS;

    *out = NULL;
    *n = 0;
    if (!w->has_pos) {
        return;
    }
    if (store_public_settings(w->w.n->store, NULL, &radius, &hours) != 0) {
        clog(CLOG_WARN, "public", "public settings: %s",
             store_errmsg(w->w.n->store));
    }
    memset(&q, 0, sizeof q);
    q.category_type = w->type;
    q.major_code = w->major;
    q.minor_code = w->minor;
    q.lat = w->lat;
    q.lon = w->lon;
    q.radius_m = radius;
    q.since = w->reported - (int64_t)hours * 3600 * 1000000;
    q.exclude_case_id = w->case_id;
    q.max = PUB_DUPLICATES_MAX;
    if (store_public_duplicates(w->w.n->store, &q, out, n) != 0) {
        /* hints are advice: the report itself was made */
        clog(CLOG_WARN, "public", "duplicate hints: %s",
             store_errmsg(w->w.n->store));
        *out = NULL;
        *n = 0;
    }
}

/* Reader thread: the reply of an applied write. */
static void write_reply_job(void *arg)
{
    struct pub_write *w = arg;
    Cityops__V1__PublicStatus *st = NULL;
    Cityops__V1__DuplicateHint **hints = NULL;
    size_t n_hints = 0;
    int rv;

    rv = store_public_get_case(w->w.n->store, w->case_id, now_us(), &st, NULL);
    if (rv != 0) {
        fail_store(w->w.n, w->w.call, rv, "public status");
        free(w);
        return;
    }
    if (w->w.cmd.op_case == CITYOPS__V1__COMMAND__OP_PUBLIC_REPORT) {
        Cityops__V1__PublicReportReply reply =
            CITYOPS__V1__PUBLIC_REPORT_REPLY__INIT;

        duplicates_find(w, &hints, &n_hints);
        reply.request = st;
        reply.possible_duplicates = hints;
        reply.n_possible_duplicates = n_hints;
        reply.applied_index = w->index;
        rpc_call_reply(w->w.call, &reply.base);
        for (size_t i = 0; i < n_hints; i++) {
            cityops__v1__duplicate_hint__free_unpacked(hints[i], NULL);
        }
        free(hints);
    } else {
        Cityops__V1__PublicReply reply = CITYOPS__V1__PUBLIC_REPLY__INIT;

        reply.request = st;
        reply.applied_index = w->index;
        rpc_call_reply(w->w.call, &reply.base);
    }
    cityops__v1__public_status__free_unpacked(st, NULL);
    free(w);
}

/* Loop thread: copy what the reply needs, hand it to the reader thread. */
static int write_reply(struct node_write *nw,
                       const Cityops__V1__CommandResult *result)
{
    struct pub_write *w = (struct pub_write *)nw;
    const Cityops__V1__Case *c = result->case_;

    if (c == NULL) {
        rpc_call_fail(nw->call, GRPC_STATUS_INTERNAL, "applied without a case");
        return 0;
    }
    w->case_id = c->case_id;
    w->index = result->index;
    w->type = c->category_type;
    snprintf(w->major, sizeof w->major, "%s",
             c->major_code != NULL ? c->major_code : "");
    snprintf(w->minor, sizeof w->minor, "%s",
             c->minor_code != NULL ? c->minor_code : "");
    w->has_pos = c->location != NULL &&
                 !(c->location->lat == 0.0 && c->location->lon == 0.0);
    if (w->has_pos) {
        w->lat = c->location->lat;
        w->lon = c->location->lon;
    }
    w->reported = c->times != NULL ? c->times->reported : 0;
    node_reader_post(nw->n, write_reply_job, w);
    return NODE_WRITE_KEPT;
}

static void write_handle(struct rpc_call *call,
                         const ProtobufCMessage *req,
                         void *data)
{
    const struct node_handler *h = data;
    const Cityops__V1__RequestContext *ctx = NULL;
    const char *required =
        "ctx.actor_id and ctx.role are required on every write";

    switch (h->op) {
    case CITYOPS__V1__COMMAND__OP_PUBLIC_REPORT:
        ctx = ((const Cityops__V1__PublicReportRequest *)req)->ctx;
        break;
    case CITYOPS__V1__COMMAND__OP_REOPEN:
        ctx = ((const Cityops__V1__ReopenRequest *)req)->ctx;
        break;
    default:
        ctx = ((const Cityops__V1__RedactRequest *)req)->ctx;
        break;
    }
    if (ctx != NULL && ctx->role == CITYOPS__V1__ROLE__ROLE_UNSPECIFIED) {
        rpc_call_fail(call, GRPC_STATUS_INVALID_ARGUMENT, required);
        return;
    }
    node_write_submit(h->n, call, ctx, required, h->op, (ProtobufCMessage *)req,
                      sizeof(struct pub_write), write_reply);
}

/* --- reads --- */

static void read_services(struct node *n, struct rpc_call *call)
{
    Cityops__V1__ServicesResponse *resp = NULL;
    int rv = store_public_services(n->store, &resp);

    if (rv != 0) {
        fail_store(n, call, rv, "services");
        return;
    }
    rpc_call_reply(call, &resp->base);
    cityops__v1__services_response__free_unpacked(resp, NULL);
}

static void read_get(struct node *n,
                     struct rpc_call *call,
                     const Cityops__V1__PublicGetRequest *req)
{
    Cityops__V1__PublicReply reply = CITYOPS__V1__PUBLIC_REPLY__INIT;
    Cityops__V1__PublicStatus *st = NULL;
    int rv;

    if (req->service_request_id == NULL ||
        req->service_request_id[0] == '\0') {
        rpc_call_fail(call, GRPC_STATUS_INVALID_ARGUMENT,
                      "service_request_id is required");
        return;
    }
    rv = store_public_get(n->store, req->service_request_id, now_us(), &st,
                          &reply.applied_index);
    if (rv != 0) {
        fail_store(n, call, rv, "get report");
        return;
    }
    reply.request = st;
    rpc_call_reply(call, &reply.base);
    cityops__v1__public_status__free_unpacked(st, NULL);
}

static void read_updates(struct node *n,
                         struct rpc_call *call,
                         const Cityops__V1__UpdatesRequest *req)
{
    Cityops__V1__UpdatesResponse *resp = NULL;
    int rv;

    if (req->max > STORE_PUBLIC_UPDATES_MAX) {
        rpc_call_fail(call, GRPC_STATUS_INVALID_ARGUMENT,
                      "max is at most 1000");
        return;
    }
    rv = store_public_updates(n->store, req->cursor, req->max,
                              req->service_request_id, &resp);
    if (rv != 0) {
        fail_store(n, call, rv, "updates");
        return;
    }
    rpc_call_reply(call, &resp->base);
    cityops__v1__updates_response__free_unpacked(resp, NULL);
}

void node_public_read(struct node *n, struct rpc_call *call, int kind)
{
    const ProtobufCMessage *req = rpc_call_request(call);

    switch (kind) {
    case PUB_READ_SERVICES:
        read_services(n, call);
        break;
    case PUB_READ_GET:
        read_get(n, call, (const Cityops__V1__PublicGetRequest *)req);
        break;
    default:
        read_updates(n, call, (const Cityops__V1__UpdatesRequest *)req);
        break;
    }
}

#define REQ(name) &cityops__v1__##name##__descriptor

void node_public_methods_add(struct node *n)
{
    node_method_add(n, "/cityops.v1.Public/Services", REQ(services_request),
                    REQ(services_response), node_read_handle,
                    PUB_READ_SERVICES);
    node_method_add(n, "/cityops.v1.Public/Create",
                    REQ(public_report_request), REQ(public_report_reply),
                    write_handle, CITYOPS__V1__COMMAND__OP_PUBLIC_REPORT);
    node_method_add(n, "/cityops.v1.Public/Get", REQ(public_get_request),
                    REQ(public_reply), node_read_handle, PUB_READ_GET);
    node_method_add(n, "/cityops.v1.Public/Updates", REQ(updates_request),
                    REQ(updates_response), node_read_handle,
                    PUB_READ_UPDATES);
    node_method_add(n, "/cityops.v1.Public/Reopen", REQ(reopen_request),
                    REQ(public_reply), write_handle,
                    CITYOPS__V1__COMMAND__OP_REOPEN);
    node_method_add(n, "/cityops.v1.Public/Redact", REQ(redact_request),
                    REQ(public_reply), write_handle,
                    CITYOPS__V1__COMMAND__OP_REDACT);
}
