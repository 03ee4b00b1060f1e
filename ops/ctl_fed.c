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
 *   fed link remove TIER           linked platforms at run time (admin)
 */
#include <string.h>

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
                                          "DEADLINE", "FEEDBACK", "OVERDUE"};
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
        cells[5] = v->overdue ? "OVERDUE" : "";
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
    } else {
        req.remove = 1;
    }
    ops_ctx_fill(ctl, &ctx, CITYOPS__V1__ROLE__ROLE_ADMIN);
    req.ctx = &ctx;
    req.link = &link;
    return write_call(ctl, "Federation/SetLink", &req.base);
}

const char *ctl_fed_options(const char *sub)
{
    if (strcmp(sub, "links") == 0 || strcmp(sub, "tasks") == 0) {
        return "";
    }
    if (strcmp(sub, "assign") == 0) {
        return "title detail deadline child";
    }
    if (strcmp(sub, "feedback") == 0) {
        return "status note";
    }
    if (strcmp(sub, "link") == 0) {
        return "kind endpoint";
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
    return run_link(ctl, a);
}
