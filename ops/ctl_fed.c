/* cityctl fed ...: federation between tiers.
 *
 *   fed links                      each link: connected, last success,
 *                                  backlog, lag, last error
 *   fed tasks                      key tasks sent or received, with feedback
 *   fed assign --title T --deadline T --child TIER [--child ...]
 *              [--detail D]        a key task down to child tiers
 *   fed feedback TASK --status S [--note N]
 *                                  feedback on a received task, up
 *   fed link add TIER --kind parent|child|peer --endpoint H:P [...]
 *                [--kind-allow KIND ...]
 *   fed link remove TIER           linked platforms at run time (admin);
 *                                  without --kind-allow every message kind
 *                                  is accepted from it
 *   fed forward TASK --child TIER [--child ...]
 *                                  a received task further down
 *   fed to-case TASK --type component|event --major NN --minor NN
 *              [--grid G]          a received task becomes a local case
 *   fed handover CASE --peer TIER [--reason R]
 *                                  a case over to a peer tier, pending
 *                                  until it accepts or declines
 *   fed close-task TASK | fed reopen-task TASK
 *                                  a task assigned here; its children hear
 *                                  of it and refuse feedback while closed
 *   fed escalate CASE [--reason R] a case up to the parent, the same way
 *   fed incoming                   hand-overs and escalations pending:
 *                                  received here, and sent from here
 *   fed accept ID                  open the case here and answer
 *   fed decline ID --reason R      answer no: the case stays at the sender
 *   fed subscribe --publisher TIER --topic T [--unsubscribe]
 *   fed publish --topic T --key K (--file F.json | --stats PERIOD)
 *   fed received [--topic T] [--origin TIER]
 *                                  publications received, subscribers
 *   fed witness [--origin TIER]    a child's signed heads kept here
 *   fed witness verify --origin TIER --child-endpoints H:P[,...]
 *                                  signatures, and RFC 6962 consistency
 *                                  between consecutive heads (the child
 *                                  proves them)
 */
#include <stdlib.h>
#include <string.h>

#include "cityops/v1/eval.pb-c.h"
#include "cityops/v1/fed.pb-c.h"
#include "ops.h"

static const char *kind_name(int k)
{
    return k == 1 ? "parent" : k == 2 ? "child" : k == 3 ? "peer" : "?";
}

static int write_call(struct ops_ctl *ctl,
                      const char *method,
                      const ProtobufCMessage *req)
{
    Cityops__V1__FedReply *r = NULL;
    int rv;

    rv = ops_call(ctl, method, req, &cityops__v1__fed_reply__descriptor,
                  (ProtobufCMessage **)&r);
    if (rv != OPS_EXIT_OK) {
        return rv;
    }
    if (ctl->json) {
        rv = ops_json_print(ops_pb_to_json(&r->base));
    } else {
        if (*r->task_id != '\0') {
            printf("task %s\n", r->task_id);
        }
        printf("%s (applied at index %llu)\n",
               *r->message != '\0' ? r->message : "ok",
               (unsigned long long)r->applied_index);
    }
    cityops__v1__fed_reply__free_unpacked(r, NULL);
    return rv;
}

static int run_links(struct ops_ctl *ctl)
{
    Cityops__V1__FedLinksRequest req = CITYOPS__V1__FED_LINKS_REQUEST__INIT;
    Cityops__V1__FedLinksResponse *r = NULL;
    static const char *const headers[] = {
        "TIER", "KIND", "CONNECTED", "LAST SUCCESS", "BACKLOG",
        "LAG", "SENT/ACKED", "RECEIVED", "LAST ERROR"};
    struct ops_table *t;
    int rv;

    rv = ops_call(ctl, "Federation/Links", &req.base,
                  &cityops__v1__fed_links_response__descriptor,
                  (ProtobufCMessage **)&r);
    if (rv != OPS_EXIT_OK) {
        return rv;
    }
    if (ctl->json) {
        rv = ops_json_print(ops_pb_to_json(&r->base));
        cityops__v1__fed_links_response__free_unpacked(r, NULL);
        return rv;
    }
    printf("tier %s (asked %s; the leader sends, so ask it)\n",
           *r->tier_id ? r->tier_id : "-",
           ctl->endpoints[ctl->last_endpoint]);
    t = ops_table_new(9, headers);
    for (size_t i = 0; t != NULL && i < r->n_links; i++) {
        const Cityops__V1__FedLinkStatus *s = r->links[i];
        char last[40];
        char backlog[24];
        char lag[24];
        char sent[48];
        char recv[24];
        const char *cells[9];

        ops_time_format(s->last_success, last, sizeof last);
        snprintf(backlog, sizeof backlog, "%llu",
                 (unsigned long long)s->backlog);
        snprintf(lag, sizeof lag, "%.1f s", (double)s->lag_ms / 1000.0);
        snprintf(sent, sizeof sent, "%llu/%llu",
                 (unsigned long long)s->last_seq,
                 (unsigned long long)s->acked_through);
        snprintf(recv, sizeof recv, "%llu",
                 (unsigned long long)s->inbox_through);
        cells[0] = s->link != NULL ? s->link->tier_id : "?";
        cells[1] = kind_name(s->link != NULL ? s->link->kind : 0);
        cells[2] = s->connected ? "yes" : "no";
        cells[3] = last;
        cells[4] = backlog;
        cells[5] = lag;
        cells[6] = sent;
        cells[7] = recv;
        cells[8] = *s->last_error != '\0' ? s->last_error : "-";
        ops_table_add(t, cells);
    }
    if (t != NULL) {
        ops_table_print(t, stdout);
        ops_table_free(t);
    }
    cityops__v1__fed_links_response__free_unpacked(r, NULL);
    return OPS_EXIT_OK;
}

static int run_tasks(struct ops_ctl *ctl)
{
    Cityops__V1__FedTasksRequest req = CITYOPS__V1__FED_TASKS_REQUEST__INIT;
    Cityops__V1__ReadOptions read = CITYOPS__V1__READ_OPTIONS__INIT;
    Cityops__V1__FedTasksResponse *r = NULL;
    static const char *const headers[] = {"TASK", "ORIGIN", "TITLE",
                                          "DEADLINE", "FEEDBACK", "STATE"};
    struct ops_table *t;
    int rv;

    ops_read_fill(ctl, &read, CITYOPS__V1__CONSISTENCY__CONSISTENCY_STALE);
    req.read = &read;
    rv = ops_call(ctl, "Federation/Tasks", &req.base,
                  &cityops__v1__fed_tasks_response__descriptor,
                  (ProtobufCMessage **)&r);
    if (rv != OPS_EXIT_OK) {
        return rv;
    }
    if (ctl->json) {
        rv = ops_json_print(ops_pb_to_json(&r->base));
        cityops__v1__fed_tasks_response__free_unpacked(r, NULL);
        return rv;
    }
    t = ops_table_new(6, headers);
    for (size_t i = 0; t != NULL && i < r->n_tasks; i++) {
        const Cityops__V1__FedTaskView *v = r->tasks[i];
        char due[40];
        char fb[512] = "";
        size_t used = 0;
        const char *cells[6];

        ops_time_format(v->task != NULL ? v->task->deadline : 0, due,
                        sizeof due);
        for (size_t k = 0; k < v->n_feedback && used < sizeof fb; k++) {
            used += (size_t)snprintf(fb + used, sizeof fb - used, "%s%s:%s",
                                     k > 0 ? " " : "",
                                     v->feedback[k]->tier_id,
                                     v->feedback[k]->status);
        }
        cells[0] = v->task != NULL ? v->task->task_id : "?";
        cells[1] = v->task != NULL ? v->task->origin_tier : "?";
        cells[2] = v->task != NULL ? v->task->title : "?";
        cells[3] = due;
        cells[4] = fb[0] != '\0' ? fb : "-";
        cells[5] = v->closed ? "CLOSED" : v->overdue ? "OVERDUE" : "";
        ops_table_add(t, cells);
    }
    if (t != NULL) {
        ops_table_print(t, stdout);
        ops_table_free(t);
    }
    cityops__v1__fed_tasks_response__free_unpacked(r, NULL);
    return OPS_EXIT_OK;
}

static int run_assign(struct ops_ctl *ctl, const struct ops_args *a)
{
    Cityops__V1__FedAssignTask req = CITYOPS__V1__FED_ASSIGN_TASK__INIT;
    Cityops__V1__KeyTask task = CITYOPS__V1__KEY_TASK__INIT;
    Cityops__V1__RequestContext ctx = CITYOPS__V1__REQUEST_CONTEXT__INIT;
    char *children[OPS_MAX_OPTS];
    const char *deadline = ops_arg(a, "deadline");
    int n;

    task.title = ops_arg(a, "title");
    task.detail = ops_arg(a, "detail") != NULL ? ops_arg(a, "detail") : "";
    n = ops_arg_all(a, "child", children, OPS_MAX_OPTS);
    if (task.title == NULL || deadline == NULL || n == 0) {
        return ops_usage_error(ctl, "fed assign: --title, --deadline and at "
                                    "least one --child are required");
    }
    if (ops_time_parse(deadline, &task.deadline) != 0) {
        return ops_usage_error(ctl, "fed assign: bad --deadline '%s'",
                               deadline);
    }
    task.n_child_tiers = (size_t)(n < OPS_MAX_OPTS ? n : OPS_MAX_OPTS);
    task.child_tiers = children;
    ops_ctx_fill(ctl, &ctx, CITYOPS__V1__ROLE__ROLE_SHIFT_LEADER);
    req.ctx = &ctx;
    req.task = &task;
    return write_call(ctl, "Federation/AssignTask", &req.base);
}

static int run_feedback(struct ops_ctl *ctl, const struct ops_args *a)
{
    Cityops__V1__FedFeedback req = CITYOPS__V1__FED_FEEDBACK__INIT;
    Cityops__V1__TaskFeedback fb = CITYOPS__V1__TASK_FEEDBACK__INIT;
    Cityops__V1__RequestContext ctx = CITYOPS__V1__REQUEST_CONTEXT__INIT;

    fb.task_id = a->n_pos > 2 ? a->pos[2] : NULL;
    fb.status = ops_arg(a, "status");
    fb.note = ops_arg(a, "note") != NULL ? ops_arg(a, "note") : "";
    if (fb.task_id == NULL || fb.status == NULL) {
        return ops_usage_error(ctl, "fed feedback TASK --status S is "
                                    "required");
    }
    ops_ctx_fill(ctl, &ctx, CITYOPS__V1__ROLE__ROLE_SHIFT_LEADER);
    req.ctx = &ctx;
    req.feedback = &fb;
    return write_call(ctl, "Federation/Feedback", &req.base);
}

static int run_link(struct ops_ctl *ctl, const struct ops_args *a)
{
    Cityops__V1__FedLinkSet req = CITYOPS__V1__FED_LINK_SET__INIT;
    Cityops__V1__FedLink link = CITYOPS__V1__FED_LINK__INIT;
    Cityops__V1__RequestContext ctx = CITYOPS__V1__REQUEST_CONTEXT__INIT;
    const char *what = a->n_pos > 2 ? a->pos[2] : "";
    const char *kind = ops_arg(a, "kind");
    char *eps[OPS_MAX_OPTS];
    char *kinds[OPS_MAX_OPTS];
    int n;

    link.tier_id = a->n_pos > 3 ? a->pos[3] : NULL;
    if (link.tier_id == NULL ||
        (strcmp(what, "add") != 0 && strcmp(what, "remove") != 0)) {
        return ops_usage_error(ctl, "fed link add|remove TIER");
    }
    if (strcmp(what, "add") == 0) {
        n = ops_arg_all(a, "endpoint", eps, OPS_MAX_OPTS);
        if (kind == NULL || n == 0) {
            return ops_usage_error(ctl, "fed link add: --kind and at least "
                                        "one --endpoint");
        }
        link.kind = strcmp(kind, "parent") == 0  ? 1
                    : strcmp(kind, "child") == 0 ? 2
                    : strcmp(kind, "peer") == 0  ? 3
                                                 : 0;
        if (link.kind == 0) {
            return ops_usage_error(ctl, "--kind parent, child or peer");
        }
        link.n_endpoints = (size_t)(n < OPS_MAX_OPTS ? n : OPS_MAX_OPTS);
        link.endpoints = eps;
        n = ops_arg_all(a, "kind-allow", kinds, OPS_MAX_OPTS);
        link.n_allowed_kinds = (size_t)(n < OPS_MAX_OPTS ? n : OPS_MAX_OPTS);
        link.allowed_kinds = kinds;
    } else {
        req.remove = 1;
    }
    ops_ctx_fill(ctl, &ctx, CITYOPS__V1__ROLE__ROLE_ADMIN);
    req.ctx = &ctx;
    req.link = &link;
    return write_call(ctl, "Federation/SetLink", &req.base);
}

static int run_forward(struct ops_ctl *ctl, const struct ops_args *a)
{
    Cityops__V1__FedForwardTask req = CITYOPS__V1__FED_FORWARD_TASK__INIT;
    Cityops__V1__RequestContext ctx = CITYOPS__V1__REQUEST_CONTEXT__INIT;
    char *children[OPS_MAX_OPTS];
    int n = ops_arg_all(a, "child", children, OPS_MAX_OPTS);

    req.task_id = a->n_pos > 2 ? a->pos[2] : NULL;
    if (req.task_id == NULL || n == 0) {
        return ops_usage_error(ctl, "fed forward TASK --child TIER "
                                    "[--child ...]");
    }
    req.n_child_tiers = (size_t)(n < OPS_MAX_OPTS ? n : OPS_MAX_OPTS);
    req.child_tiers = children;
    ops_ctx_fill(ctl, &ctx, CITYOPS__V1__ROLE__ROLE_SHIFT_LEADER);
    req.ctx = &ctx;
    return write_call(ctl, "Federation/ForwardTask", &req.base);
}

static int run_to_case(struct ops_ctl *ctl, const struct ops_args *a)
{
    Cityops__V1__FedTaskToCase req = CITYOPS__V1__FED_TASK_TO_CASE__INIT;
    Cityops__V1__RequestContext ctx = CITYOPS__V1__REQUEST_CONTEXT__INIT;
    const char *type = ops_arg(a, "type");

    req.task_id = a->n_pos > 2 ? a->pos[2] : NULL;
    req.major_code = ops_arg(a, "major");
    req.minor_code = ops_arg(a, "minor");
    if (req.task_id == NULL || type == NULL || req.major_code == NULL ||
        req.minor_code == NULL) {
        return ops_usage_error(ctl, "fed to-case TASK --type component|event "
                                    "--major NN --minor NN [--grid G]");
    }
    req.category_type =
        strcmp(type, "component") == 0
            ? CITYOPS__V1__CATEGORY_TYPE__CATEGORY_TYPE_COMPONENT
        : strcmp(type, "event") == 0
            ? CITYOPS__V1__CATEGORY_TYPE__CATEGORY_TYPE_EVENT
            : CITYOPS__V1__CATEGORY_TYPE__CATEGORY_TYPE_UNSPECIFIED;
    if (req.category_type ==
        CITYOPS__V1__CATEGORY_TYPE__CATEGORY_TYPE_UNSPECIFIED) {
        return ops_usage_error(ctl, "--type component or event");
    }
    if (ops_arg(a, "grid") != NULL) {
        req.grid_code = ops_arg(a, "grid");
    }
    ops_ctx_fill(ctl, &ctx, CITYOPS__V1__ROLE__ROLE_SHIFT_LEADER);
    req.ctx = &ctx;
    return write_call(ctl, "Federation/TaskToCase", &req.base);
}

static int run_handover(struct ops_ctl *ctl, const struct ops_args *a)
{
    Cityops__V1__FedHandover req = CITYOPS__V1__FED_HANDOVER__INIT;
    Cityops__V1__RequestContext ctx = CITYOPS__V1__REQUEST_CONTEXT__INIT;

    req.peer_tier = ops_arg(a, "peer");
    if (a->n_pos < 3 || ops_parse_u64(a->pos[2], &req.case_id) != 0 ||
        req.peer_tier == NULL) {
        return ops_usage_error(ctl, "fed handover CASE --peer TIER "
                                    "[--reason R]");
    }
    if (ops_arg(a, "reason") != NULL) {
        req.reason = ops_arg(a, "reason");
    }
    ops_ctx_fill(ctl, &ctx, CITYOPS__V1__ROLE__ROLE_SHIFT_LEADER);
    req.ctx = &ctx;
    return write_call(ctl, "Federation/Handover", &req.base);
}

static int run_close_task(struct ops_ctl *ctl, const struct ops_args *a)
{
    Cityops__V1__FedTaskClose req = CITYOPS__V1__FED_TASK_CLOSE__INIT;
    Cityops__V1__RequestContext ctx = CITYOPS__V1__REQUEST_CONTEXT__INIT;

    req.reopen = strcmp(a->pos[1], "reopen-task") == 0;
    req.task_id = a->n_pos > 2 ? a->pos[2] : NULL;
    if (req.task_id == NULL) {
        return ops_usage_error(ctl, "fed close-task TASK | fed reopen-task "
                                    "TASK");
    }
    ops_ctx_fill(ctl, &ctx, CITYOPS__V1__ROLE__ROLE_SHIFT_LEADER);
    req.ctx = &ctx;
    return write_call(ctl, "Federation/CloseTask", &req.base);
}

static int run_escalate(struct ops_ctl *ctl, const struct ops_args *a)
{
    Cityops__V1__FedEscalate req = CITYOPS__V1__FED_ESCALATE__INIT;
    Cityops__V1__RequestContext ctx = CITYOPS__V1__REQUEST_CONTEXT__INIT;

    if (a->n_pos < 3 || ops_parse_u64(a->pos[2], &req.case_id) != 0) {
        return ops_usage_error(ctl, "fed escalate CASE [--reason R]");
    }
    if (ops_arg(a, "reason") != NULL) {
        req.reason = ops_arg(a, "reason");
    }
    ops_ctx_fill(ctl, &ctx, CITYOPS__V1__ROLE__ROLE_SHIFT_LEADER);
    req.ctx = &ctx;
    return write_call(ctl, "Federation/Escalate", &req.base);
}

static int run_answer(struct ops_ctl *ctl, const struct ops_args *a)
{
    Cityops__V1__FedHandoverAnswer req = CITYOPS__V1__FED_HANDOVER_ANSWER__INIT;
    Cityops__V1__RequestContext ctx = CITYOPS__V1__REQUEST_CONTEXT__INIT;

    req.decline = strcmp(a->pos[1], "decline") == 0;
    req.id = a->n_pos > 2 ? a->pos[2] : NULL;
    if (ops_arg(a, "reason") != NULL) {
        req.reason = ops_arg(a, "reason");
    }
    if (req.id == NULL || (req.decline && ops_arg(a, "reason") == NULL)) {
        return ops_usage_error(ctl, "fed accept ID | fed decline ID "
                                    "--reason R");
    }
    ops_ctx_fill(ctl, &ctx, CITYOPS__V1__ROLE__ROLE_SHIFT_LEADER);
    req.ctx = &ctx;
    return write_call(ctl, "Federation/AnswerHandover", &req.base);
}

static void pending_add(struct ops_table *t,
                        const char *dir,
                        const Cityops__V1__HandoverMessage *h)
{
    char at[40];
    const char *cells[6];

    ops_time_format(h->at, at, sizeof at);
    cells[0] = dir;
    cells[1] = *h->id != '\0' ? h->id : "-";
    cells[2] = h->escalation ? "escalation" : "hand-over";
    cells[3] = *h->target != '\0' ? h->target : h->origin_tier;
    cells[4] = at;
    cells[5] = *h->reason != '\0' ? h->reason : "-";
    ops_table_add(t, cells);
}

static int run_incoming(struct ops_ctl *ctl)
{
    Cityops__V1__FedIncomingRequest req = CITYOPS__V1__FED_INCOMING_REQUEST__INIT;
    Cityops__V1__ReadOptions read = CITYOPS__V1__READ_OPTIONS__INIT;
    Cityops__V1__FedIncomingResponse *r = NULL;
    static const char *const headers[] = {"DIR", "ID", "KIND", "TIER",
                                          "AT", "REASON"};
    struct ops_table *t;
    int rv;

    ops_read_fill(ctl, &read, CITYOPS__V1__CONSISTENCY__CONSISTENCY_STALE);
    req.read = &read;
    rv = ops_call(ctl, "Federation/Incoming", &req.base,
                  &cityops__v1__fed_incoming_response__descriptor,
                  (ProtobufCMessage **)&r);
    if (rv != OPS_EXIT_OK) {
        return rv;
    }
    if (ctl->json) {
        rv = ops_json_print(ops_pb_to_json(&r->base));
        cityops__v1__fed_incoming_response__free_unpacked(r, NULL);
        return rv;
    }
    t = ops_table_new(6, headers);
    for (size_t i = 0; t != NULL && i < r->n_incoming; i++) {
        pending_add(t, "in", r->incoming[i]);
    }
    for (size_t i = 0; t != NULL && i < r->n_outgoing; i++) {
        pending_add(t, "out", r->outgoing[i]);
    }
    if (t != NULL) {
        ops_table_print(t, stdout);
        ops_table_free(t);
    }
    cityops__v1__fed_incoming_response__free_unpacked(r, NULL);
    return OPS_EXIT_OK;
}

static int run_subscribe(struct ops_ctl *ctl, const struct ops_args *a)
{
    Cityops__V1__FedSubscribe req = CITYOPS__V1__FED_SUBSCRIBE__INIT;
    Cityops__V1__RequestContext ctx = CITYOPS__V1__REQUEST_CONTEXT__INIT;

    req.publisher_tier = ops_arg(a, "publisher");
    req.topic = ops_arg(a, "topic");
    if (req.publisher_tier == NULL || req.topic == NULL) {
        return ops_usage_error(ctl, "fed subscribe --publisher TIER --topic T "
                                    "[--unsubscribe]");
    }
    req.unsubscribe = ops_flag(a, "unsubscribe");
    ops_ctx_fill(ctl, &ctx, CITYOPS__V1__ROLE__ROLE_ADMIN);
    req.ctx = &ctx;
    return write_call(ctl, "Federation/Subscribe", &req.base);
}

/* The whole of file @path, malloc'd, into @out. */
static int file_read(const char *path, ProtobufCBinaryData *out)
{
    FILE *f = fopen(path, "rb");
    long size;

    if (f == NULL || fseek(f, 0, SEEK_END) != 0 || (size = ftell(f)) < 0 ||
        fseek(f, 0, SEEK_SET) != 0) {
        if (f != NULL) {
            fclose(f);
        }
        return -1;
    }
    out->len = (size_t)size;
    out->data = malloc(out->len + 1);
    if (out->data == NULL || fread(out->data, 1, out->len, f) != out->len) {
        free(out->data);
        out->data = NULL;
        fclose(f);
        return -1;
    }
    fclose(f);
    return 0;
}

/* This tier's evaluation of @period by department, packed into @out. */
static int stats_fetch(struct ops_ctl *ctl,
                       char *period,
                       ProtobufCBinaryData *out)
{
    Cityops__V1__EvalRequest req = CITYOPS__V1__EVAL_REQUEST__INIT;
    Cityops__V1__ReadOptions read = CITYOPS__V1__READ_OPTIONS__INIT;
    ProtobufCMessage *rep = NULL;
    int rv;

    ops_read_fill(ctl, &read, CITYOPS__V1__CONSISTENCY__CONSISTENCY_STALE);
    req.read = &read;
    req.period = period;
    req.group_by = "department";
    rv = ops_call(ctl, "Eval/Report", &req.base,
                  &cityops__v1__eval_report__descriptor, &rep);
    if (rv != OPS_EXIT_OK) {
        return rv;
    }
    out->len = protobuf_c_message_get_packed_size(rep);
    out->data = malloc(out->len + 1);
    if (out->data != NULL) {
        protobuf_c_message_pack(rep, out->data);
    }
    protobuf_c_message_free_unpacked(rep, NULL);
    return out->data != NULL ? OPS_EXIT_OK : OPS_EXIT_FAIL;
}

static int run_publish(struct ops_ctl *ctl, const struct ops_args *a)
{
    Cityops__V1__FedPublish req = CITYOPS__V1__FED_PUBLISH__INIT;
    Cityops__V1__RequestContext ctx = CITYOPS__V1__REQUEST_CONTEXT__INIT;
    char *file = ops_arg(a, "file");
    char *stats = ops_arg(a, "stats");
    int rv;

    req.topic = ops_arg(a, "topic");
    req.key = ops_arg(a, "key");
    if (req.topic == NULL || req.key == NULL ||
        (file == NULL) == (stats == NULL)) {
        return ops_usage_error(ctl, "fed publish --topic T --key K "
                                    "(--file F.json | --stats PERIOD)");
    }
    if (file != NULL) {
        if (file_read(file, &req.payload) != 0) {
            return ops_usage_error(ctl, "fed publish: cannot read '%s'",
                                   file);
        }
        req.payload_type = "application/json";
    } else {
        rv = stats_fetch(ctl, stats, &req.payload);
        if (rv != OPS_EXIT_OK) {
            return rv;
        }
        req.payload_type = "cityops.v1.EvalReport";
    }
    ops_ctx_fill(ctl, &ctx, CITYOPS__V1__ROLE__ROLE_ADMIN);
    req.ctx = &ctx;
    rv = write_call(ctl, "Federation/Publish", &req.base);
    free(req.payload.data);
    return rv;
}

/* The rows of a received EvalReport, indented under its publication. */
static void stats_print(const Cityops__V1__Publication *p)
{
    static const char *const headers[] = {"  OBJECT", "NAME", "REPORTED",
                                          "CLOSED", "SCORE", "GRADE"};
    Cityops__V1__EvalReport *rep;
    struct ops_table *t;

    rep = cityops__v1__eval_report__unpack(NULL, p->payload.len,
                                           p->payload.data);
    if (rep == NULL) {
        printf("  (the EvalReport does not decode)\n");
        return;
    }
    t = ops_table_new(6, headers);
    for (size_t i = 0; t != NULL && i < rep->n_rows; i++) {
        const Cityops__V1__EvalRow *r = rep->rows[i];
        char obj[160];
        char reported[24] = "0";
        char closed[24] = "0";
        char score[24];
        const char *cells[6];

        snprintf(obj, sizeof obj, "  %s", r->object_id);
        if (r->counts != NULL) {
            snprintf(reported, sizeof reported, "%llu",
                     (unsigned long long)r->counts->reported);
            snprintf(closed, sizeof closed, "%llu",
                     (unsigned long long)r->counts->closed);
        }
        snprintf(score, sizeof score, "%.1f", r->score);
        cells[0] = obj;
        cells[1] = r->object_name;
        cells[2] = reported;
        cells[3] = closed;
        cells[4] = score;
        cells[5] = r->grade;
        ops_table_add(t, cells);
    }
    if (t != NULL) {
        ops_table_print(t, stdout);
        ops_table_free(t);
    }
    cityops__v1__eval_report__free_unpacked(rep, NULL);
}

static int run_received(struct ops_ctl *ctl, const struct ops_args *a)
{
    Cityops__V1__FedReceivedRequest req =
        CITYOPS__V1__FED_RECEIVED_REQUEST__INIT;
    Cityops__V1__ReadOptions read = CITYOPS__V1__READ_OPTIONS__INIT;
    Cityops__V1__FedReceivedResponse *r = NULL;
    int rv;

    ops_read_fill(ctl, &read, CITYOPS__V1__CONSISTENCY__CONSISTENCY_STALE);
    req.read = &read;
    if (ops_arg(a, "topic") != NULL) {
        req.topic = ops_arg(a, "topic");
    }
    if (ops_arg(a, "origin") != NULL) {
        req.origin = ops_arg(a, "origin");
    }
    rv = ops_call(ctl, "Federation/Received", &req.base,
                  &cityops__v1__fed_received_response__descriptor,
                  (ProtobufCMessage **)&r);
    if (rv != OPS_EXIT_OK) {
        return rv;
    }
    if (ctl->json) {
        rv = ops_json_print(ops_pb_to_json(&r->base));
        cityops__v1__fed_received_response__free_unpacked(r, NULL);
        return rv;
    }
    for (size_t i = 0; i < r->n_publications; i++) {
        const Cityops__V1__Publication *p = r->publications[i];
        char at[40];

        ops_time_format(p->at, at, sizeof at);
        printf("%s %s %s  %s  %s, %zu bytes\n", p->origin_tier, p->topic,
               p->key, at, *p->payload_type ? p->payload_type : "-",
               p->payload.len);
        if (strcmp(p->payload_type, "cityops.v1.EvalReport") == 0) {
            stats_print(p);
        }
    }
    if (r->n_publications == 0) {
        printf("no publications received\n");
    }
    for (size_t i = 0; i < r->n_subscriptions; i++) {
        printf("subscriber %s\n", r->subscriptions[i]);
    }
    cityops__v1__fed_received_response__free_unpacked(r, NULL);
    return OPS_EXIT_OK;
}

static int witness_fetch(struct ops_ctl *ctl,
                         const char *origin,
                         Cityops__V1__CheckpointList **out)
{
    Cityops__V1__FedWitnessRequest req = CITYOPS__V1__FED_WITNESS_REQUEST__INIT;
    Cityops__V1__ReadOptions read = CITYOPS__V1__READ_OPTIONS__INIT;

    ops_read_fill(ctl, &read, CITYOPS__V1__CONSISTENCY__CONSISTENCY_STALE);
    req.read = &read;
    req.origin = (char *)(origin != NULL ? origin : "");
    return ops_call(ctl, "Federation/Witness", &req.base,
                    &cityops__v1__checkpoint_list__descriptor,
                    (ProtobufCMessage **)out);
}

static void root_hex(const Cityops__V1__Checkpoint *cp, char out[65])
{
    out[0] = '\0';
    for (size_t i = 0; i < cp->root_hash.len && i < 32; i++) {
        snprintf(out + 2 * i, 3, "%02x", cp->root_hash.data[i]);
    }
}

static int run_witness_list(struct ops_ctl *ctl, const struct ops_args *a)
{
    static const char *const headers[] = {"TREE SIZE", "TIME", "ROOT",
                                          "SIGNED"};
    Cityops__V1__CheckpointList *l = NULL;
    struct ops_table *t;
    int rv;

    rv = witness_fetch(ctl, ops_arg(a, "origin"), &l);
    if (rv != OPS_EXIT_OK) {
        return rv;
    }
    if (ctl->json) {
        rv = ops_json_print(ops_pb_to_json(&l->base));
        cityops__v1__checkpoint_list__free_unpacked(l, NULL);
        return rv;
    }
    t = ops_table_new(4, headers);
    for (size_t i = 0; t != NULL && i < l->n_checkpoints; i++) {
        const Cityops__V1__Checkpoint *cp = l->checkpoints[i];
        char size[24];
        char at[40];
        char root[65];
        const char *cells[4];

        snprintf(size, sizeof size, "%llu", (unsigned long long)cp->tree_size);
        ops_time_format(cp->time, at, sizeof at);
        root_hex(cp, root);
        cells[0] = size;
        cells[1] = at;
        cells[2] = root;
        cells[3] = cp->signature.len > 0 ? "yes" : "no";
        ops_table_add(t, cells);
    }
    if (t != NULL) {
        ops_table_print(t, stdout);
        ops_table_free(t);
    }
    cityops__v1__checkpoint_list__free_unpacked(l, NULL);
    return OPS_EXIT_OK;
}

/* Ask the child (endpoints @eps[0..n)) for the proof between @a and @b
 * and check it. 0 if it holds, else a message in @why. */
static int heads_consistent(struct ops_ctl *ctl,
                            const int *eps,
                            int n,
                            const Cityops__V1__Checkpoint *a,
                            const Cityops__V1__Checkpoint *b,
                            char *why,
                            size_t len)
{
    Cityops__V1__ConsistencyProofRequest req =
        CITYOPS__V1__CONSISTENCY_PROOF_REQUEST__INIT;
    Cityops__V1__ReadOptions read = CITYOPS__V1__READ_OPTIONS__INIT;
    ProtobufCMessage *resp = NULL;
    grpc_status_code st = GRPC_STATUS_UNKNOWN;
    char details[256] = "";
    int ok;

    ops_read_fill(ctl, &read, CITYOPS__V1__CONSISTENCY__CONSISTENCY_STALE);
    req.read = &read;
    req.first = a->tree_size;
    req.second = b->tree_size;
    for (int i = 0; i < n && resp == NULL; i++) {
        ops_call_one(ctl, eps[i], "Audit/ConsistencyProof", &req.base,
                     &cityops__v1__consistency_proof_response__descriptor,
                     ctl->timeout_ms, &resp, &st, details, sizeof details);
    }
    if (resp == NULL) {
        snprintf(why, len, "the child did not prove %llu -> %llu: %s",
                 (unsigned long long)a->tree_size,
                 (unsigned long long)b->tree_size, details);
        return -1;
    }
    {
        const Cityops__V1__ConsistencyProofResponse *p =
            (const Cityops__V1__ConsistencyProofResponse *)resp;
        ok = a->root_hash.len == 32 && b->root_hash.len == 32 &&
             ops_audit_consistency_ok(a->tree_size, a->root_hash.data,
                                      b->tree_size, b->root_hash.data,
                                      p->path, p->n_path);
    }
    protobuf_c_message_free_unpacked(resp, NULL);
    if (!ok) {
        snprintf(why, len,
                 "heads %llu and %llu are not consistent: the child's "
                 "trail was rewritten",
                 (unsigned long long)a->tree_size,
                 (unsigned long long)b->tree_size);
        return -1;
    }
    return 0;
}

static int run_witness_verify(struct ops_ctl *ctl, const struct ops_args *a)
{
    const char *origin = ops_arg(a, "origin");
    char *list = ops_arg(a, "child-endpoints");
    Cityops__V1__CheckpointList *l = NULL;
    int eps[OPS_MAX_ENDPOINTS];
    char why[400] = "";
    int n = 0;
    int rv;

    if (origin == NULL || list == NULL) {
        return ops_usage_error(ctl, "fed witness verify --origin TIER "
                                    "--child-endpoints H:P[,...]");
    }
    for (char *save = NULL, *ep = strtok_r(list, ",", &save);
         ep != NULL && n < OPS_MAX_ENDPOINTS; ep = strtok_r(NULL, ",", &save)) {
        eps[n] = ops_endpoint_index(ctl, ep);
        if (eps[n] < 0) {
            return ops_usage_error(ctl, "too many endpoints");
        }
        n++;
    }
    rv = witness_fetch(ctl, origin, &l);
    if (rv != OPS_EXIT_OK) {
        return rv;
    }
    for (size_t i = 0; why[0] == '\0' && i < l->n_checkpoints; i++) {
        const Cityops__V1__Checkpoint *cp = l->checkpoints[i];

        if (!ops_audit_signature_ok(cp)) {
            snprintf(why, sizeof why, "head %llu: the signature does not "
                                      "verify",
                     (unsigned long long)cp->tree_size);
        } else if (i > 0) {
            heads_consistent(ctl, eps, n, l->checkpoints[i - 1], cp, why,
                             sizeof why);
        }
    }
    if (why[0] != '\0') {
        printf("fed witness verify %s: FAILED: %s\n", origin, why);
    } else {
        printf("fed witness verify %s: OK (%zu heads)\n", origin,
               l->n_checkpoints);
    }
    cityops__v1__checkpoint_list__free_unpacked(l, NULL);
    return why[0] != '\0' ? OPS_EXIT_FAIL : OPS_EXIT_OK;
}

const char *ctl_fed_options(const char *sub)
{
    if (strcmp(sub, "links") == 0 || strcmp(sub, "tasks") == 0 ||
        strcmp(sub, "incoming") == 0 || strcmp(sub, "accept") == 0 ||
        strcmp(sub, "close-task") == 0 || strcmp(sub, "reopen-task") == 0) {
        return "";
    }
    if (strcmp(sub, "escalate") == 0 || strcmp(sub, "decline") == 0) {
        return "reason";
    }
    if (strcmp(sub, "assign") == 0) {
        return "title detail deadline child";
    }
    if (strcmp(sub, "feedback") == 0) {
        return "status note";
    }
    if (strcmp(sub, "link") == 0) {
        return "kind endpoint kind-allow";
    }
    if (strcmp(sub, "forward") == 0) {
        return "child";
    }
    if (strcmp(sub, "to-case") == 0) {
        return "type major minor grid";
    }
    if (strcmp(sub, "handover") == 0) {
        return "peer reason";
    }
    if (strcmp(sub, "subscribe") == 0) {
        return "publisher topic unsubscribe";
    }
    if (strcmp(sub, "publish") == 0) {
        return "topic key file stats";
    }
    if (strcmp(sub, "received") == 0) {
        return "topic origin";
    }
    if (strcmp(sub, "witness") == 0) {
        return "origin child-endpoints";
    }
    return NULL;
}

int ctl_fed_run(struct ops_ctl *ctl, const struct ops_args *a)
{
    const char *sub = a->pos[1];

    if (strcmp(sub, "links") == 0) {
        return run_links(ctl);
    }
    if (strcmp(sub, "tasks") == 0) {
        return run_tasks(ctl);
    }
    if (strcmp(sub, "assign") == 0) {
        return run_assign(ctl, a);
    }
    if (strcmp(sub, "feedback") == 0) {
        return run_feedback(ctl, a);
    }
    if (strcmp(sub, "forward") == 0) {
        return run_forward(ctl, a);
    }
    if (strcmp(sub, "to-case") == 0) {
        return run_to_case(ctl, a);
    }
    if (strcmp(sub, "handover") == 0) {
        return run_handover(ctl, a);
    }
    if (strcmp(sub, "escalate") == 0) {
        return run_escalate(ctl, a);
    }
    if (strcmp(sub, "close-task") == 0 || strcmp(sub, "reopen-task") == 0) {
        return run_close_task(ctl, a);
    }
    if (strcmp(sub, "incoming") == 0) {
        return run_incoming(ctl);
    }
    if (strcmp(sub, "accept") == 0 || strcmp(sub, "decline") == 0) {
        return run_answer(ctl, a);
    }
    if (strcmp(sub, "subscribe") == 0) {
        return run_subscribe(ctl, a);
    }
    if (strcmp(sub, "publish") == 0) {
        return run_publish(ctl, a);
    }
    if (strcmp(sub, "received") == 0) {
        return run_received(ctl, a);
    }
    if (strcmp(sub, "witness") == 0) {
        return a->n_pos > 2 && strcmp(a->pos[2], "verify") == 0
                   ? run_witness_verify(ctl, a)
                   : run_witness_list(ctl, a);
    }
    return run_link(ctl, a);
}
