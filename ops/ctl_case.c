/* cityctl case ...: one subcommand per cityops.v1.Cases method.
 *
 * Each write fills a request on the stack (strings borrowed from argv), adds
 * the request context (actor, the command's default role, the retry key)
 * and prints the CaseReply. The state machine's rules (which role may do
 * what, from which state, which fields are required) belong to the cluster:
 * cityctl only refuses what cannot be sent at all (a missing --dept, a
 * malformed time), so that the rules live in one place.
 */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include "ops.h"

struct case_cmd;

typedef int (*case_run_fn)(struct ops_ctl *ctl,
                           const struct ops_args *a,
                           const struct case_cmd *cmd,
                           uint64_t id);

struct case_cmd {
    const char *name;
    const char *options; /* accepted options, space separated */
    case_run_fn run;
    const char *method; /* "Cases/Accept" */
    int role;           /* default role for writes */
    int needs_id;
    int reason_required; /* run_action, run_dispatch */
};

/* Attachments given with --attach SHA256:URI, on the stack. */
struct attach_set {
    Cityops__V1__Attachment items[OPS_MAX_ATTACH];
    Cityops__V1__Attachment *ptrs[OPS_MAX_ATTACH];
    size_t n;
};

/* --- parsing --- */

/* Match @s against the enum's short value names ("in-disposal",
 * "IN_DISPOSAL"), case-insensitively, '-' for '_'. Value 0 (UNSPECIFIED)
 * never matches. */
static int
enum_parse(const ProtobufCEnumDescriptor *desc, const char *s, int *value)
{
    unsigned k;

    for (k = 0; k < desc->n_values; k++) {
        const char *name;
        size_t i;

        if (desc->values[k].value == 0) {
            continue;
        }
        name = ops_enum_short(desc, desc->values[k].value);
        for (i = 0; name[i] != '\0' && s[i] != '\0'; i++) {
            char c = s[i] == '-' ? '_' : (char)toupper((unsigned char)s[i]);

            if (c != name[i]) {
                break;
            }
        }
        if (name[i] == '\0' && s[i] == '\0') {
            *value = desc->values[k].value;
            return 0;
        }
    }
    return OPS_INVALID;
}

static int is_sha256(const char *s, size_t len)
{
    size_t i;

    if (len != 64) {
        return 0;
    }
    for (i = 0; i < len; i++) {
        if (!isxdigit((unsigned char)s[i])) {
            return 0;
        }
    }
    return 1;
}

/* Parse every --attach into @set. The strings are cut in place in argv:
 * "SHA256:URI" becomes "SHA256\0URI". */
static int attach_parse(const struct ops_ctl *ctl,
                        const struct ops_args *a,
                        Cityops__V1__AttachmentStage stage,
                        struct attach_set *set)
{
    char *vals[OPS_MAX_ATTACH];
    int n = ops_arg_all(a, "attach", vals, OPS_MAX_ATTACH);
    int i;

    set->n = 0;
    if (n > OPS_MAX_ATTACH) {
        return ops_usage_error(ctl, "at most %d --attach", OPS_MAX_ATTACH);
    }
    for (i = 0; i < n; i++) {
        char *colon = strchr(vals[i], ':');
        Cityops__V1__Attachment *at = &set->items[i];

        if (colon == NULL || !is_sha256(vals[i], (size_t)(colon - vals[i])) ||
            colon[1] == '\0') {
            return ops_usage_error(ctl,
                                   "--attach: want SHA256:URI with 64 hex "
                                   "digits, not '%s'",
                                   vals[i]);
        }
        *colon = '\0';
        cityops__v1__attachment__init(at);
        at->sha256 = vals[i];
        at->uri = colon + 1;
        at->stage = stage;
        set->ptrs[i] = at;
        set->n++;
    }
    return OPS_EXIT_OK;
}

static int require(const struct ops_ctl *ctl,
                   const struct ops_args *a,
                   const struct case_cmd *cmd,
                   const char *name,
                   char **out)
{
    *out = ops_arg(a, name);
    if (*out == NULL || **out == '\0') {
        return ops_usage_error(ctl, "case %s: --%s is required", cmd->name,
                               name);
    }
    return OPS_EXIT_OK;
}

/* Exactly one of two flags; *out = 1 for @yes. */
static int either(const struct ops_ctl *ctl,
                  const struct ops_args *a,
                  const struct case_cmd *cmd,
                  const char *yes,
                  const char *no,
                  protobuf_c_boolean *out)
{
    int y = ops_flag(a, yes);
    int n = ops_flag(a, no);

    if (y == n) {
        return ops_usage_error(ctl, "case %s: give one of --%s, --%s",
                               cmd->name, yes, no);
    }
    *out = y;
    return OPS_EXIT_OK;
}

static int time_arg(const struct ops_ctl *ctl,
                    const struct ops_args *a,
                    const char *name,
                    int64_t *us)
{
    const char *v = ops_arg(a, name);

    *us = 0;
    if (v != NULL && ops_time_parse(v, us) != 0) {
        return ops_usage_error(ctl, "--%s: not an RFC3339 time: '%s'", name, v);
    }
    return OPS_EXIT_OK;
}

static int enum_arg(const struct ops_ctl *ctl,
                    const struct ops_args *a,
                    const char *name,
                    const ProtobufCEnumDescriptor *desc,
                    int *value)
{
    const char *v = ops_arg(a, name);

    if (v != NULL && enum_parse(desc, v, value) != 0) {
        return ops_usage_error(ctl, "--%s: unknown value '%s'", name, v);
    }
    return OPS_EXIT_OK;
}

/* --- replies --- */

static int print_reply(const struct ops_ctl *ctl, ProtobufCMessage *msg)
{
    Cityops__V1__CaseReply *r = (Cityops__V1__CaseReply *)msg;
    int rv = OPS_EXIT_OK;

    if (ctl->json) {
        json_t *j = ops_pb_to_json(msg);

        rv = j != NULL ? ops_json_print(j) : OPS_EXIT_FAIL;
    } else if (r->case_ != NULL) {
        ops_print_case(r->case_, r->applied_index);
    } else {
        printf("ok (index %llu)\n", (unsigned long long)r->applied_index);
    }
    protobuf_c_message_free_unpacked(msg, NULL);
    return rv;
}

/* Send a write or a Get and print the CaseReply. */
static int case_call(struct ops_ctl *ctl,
                     const struct case_cmd *cmd,
                     const ProtobufCMessage *req)
{
    ProtobufCMessage *resp = NULL;
    int rv;

    rv = ops_call(ctl, cmd->method, req, &cityops__v1__case_reply__descriptor,
                  &resp);
    if (rv != OPS_EXIT_OK) {
        return rv;
    }
    return print_reply(ctl, resp);
}

/* --- writes --- */

static int report_location(const struct ops_ctl *ctl,
                           const struct ops_args *a,
                           Cityops__V1__Location *loc)
{
    const char *lon = ops_arg(a, "lon");
    const char *lat = ops_arg(a, "lat");
    int datum = 0;
    int rv;

    if ((lon == NULL) != (lat == NULL)) {
        return ops_usage_error(ctl, "case report: --lon and --lat go together");
    }
    if (lon != NULL &&
        (ops_parse_double(lon, &loc->lon) != 0 ||
         ops_parse_double(lat, &loc->lat) != 0 || loc->lon < -180 ||
         loc->lon > 180 || loc->lat < -90 || loc->lat > 90)) {
        return ops_usage_error(ctl, "case report: bad --lon/--lat");
    }
    rv = enum_arg(ctl, a, "datum", &cityops__v1__datum__descriptor, &datum);
    if (rv != OPS_EXIT_OK) {
        return rv;
    }
    /* The node converts to CGCS2000 at the edge; what we send is the
     * original, in the datum we name. */
    loc->datum = (Cityops__V1__Datum)datum;
    loc->orig_lon = loc->lon;
    loc->orig_lat = loc->lat;
    if (ops_arg(a, "grid") != NULL) {
        loc->grid_code = ops_arg(a, "grid");
    }
    if (ops_arg(a, "address") != NULL) {
        loc->address = ops_arg(a, "address");
    }
    return OPS_EXIT_OK;
}

static int run_report(struct ops_ctl *ctl,
                      const struct ops_args *a,
                      const struct case_cmd *cmd,
                      uint64_t id)
{
    Cityops__V1__ReportRequest req = CITYOPS__V1__REPORT_REQUEST__INIT;
    Cityops__V1__RequestContext ctx = CITYOPS__V1__REQUEST_CONTEXT__INIT;
    Cityops__V1__Location loc = CITYOPS__V1__LOCATION__INIT;
    struct attach_set set;
    int type = 0;
    int rv;

    (void)id;
    if ((rv = require(ctl, a, cmd, "type", &(char *){NULL})) ||
        (rv = enum_arg(ctl, a, "type", &cityops__v1__category_type__descriptor,
                       &type)) ||
        (rv = require(ctl, a, cmd, "major", &req.major_code)) ||
        (rv = require(ctl, a, cmd, "minor", &req.minor_code)) ||
        (rv = require(ctl, a, cmd, "desc", &req.description)) ||
        (rv = report_location(ctl, a, &loc)) ||
        (rv = attach_parse(
             ctl, a, CITYOPS__V1__ATTACHMENT_STAGE__ATTACHMENT_STAGE_REPORT,
             &set))) {
        return rv;
    }
    req.category_type = (Cityops__V1__CategoryType)type;
    if (ops_arg(a, "component-id") != NULL) {
        req.component_id = ops_arg(a, "component-id");
    }
    if (ops_flag(a, "lon") || ops_flag(a, "grid") || ops_flag(a, "address") ||
        ops_flag(a, "datum")) {
        req.location = &loc;
    }
    req.n_attachments = set.n;
    req.attachments = set.ptrs;
    ops_ctx_fill(ctl, &ctx, cmd->role);
    req.ctx = &ctx;
    return case_call(ctl, cmd, &req.base);
}

/* Transitions that carry only a reason: accept, reject, void, ... */
static int run_action(struct ops_ctl *ctl,
                      const struct ops_args *a,
                      const struct case_cmd *cmd,
                      uint64_t id)
{
    Cityops__V1__CaseActionRequest req = CITYOPS__V1__CASE_ACTION_REQUEST__INIT;
    Cityops__V1__RequestContext ctx = CITYOPS__V1__REQUEST_CONTEXT__INIT;
    int rv;

    if (cmd->reason_required) {
        rv = require(ctl, a, cmd, "reason", &req.reason);
        if (rv != OPS_EXIT_OK) {
            return rv;
        }
    } else if (ops_arg(a, "reason") != NULL) {
        req.reason = ops_arg(a, "reason");
    }
    req.case_id = id;
    ops_ctx_fill(ctl, &ctx, cmd->role);
    req.ctx = &ctx;
    return case_call(ctl, cmd, &req.base);
}

static int run_request_verify(struct ops_ctl *ctl,
                              const struct ops_args *a,
                              const struct case_cmd *cmd,
                              uint64_t id)
{
    Cityops__V1__RequestVerifyRequest req =
        CITYOPS__V1__REQUEST_VERIFY_REQUEST__INIT;
    Cityops__V1__RequestContext ctx = CITYOPS__V1__REQUEST_CONTEXT__INIT;
    int rv;

    rv = require(ctl, a, cmd, "inspector", &req.inspector_id);
    if (rv != OPS_EXIT_OK) {
        return rv;
    }
    req.case_id = id;
    ops_ctx_fill(ctl, &ctx, cmd->role);
    req.ctx = &ctx;
    return case_call(ctl, cmd, &req.base);
}

static int run_verify_result(struct ops_ctl *ctl,
                             const struct ops_args *a,
                             const struct case_cmd *cmd,
                             uint64_t id)
{
    Cityops__V1__VerifyResultRequest req =
        CITYOPS__V1__VERIFY_RESULT_REQUEST__INIT;
    Cityops__V1__RequestContext ctx = CITYOPS__V1__REQUEST_CONTEXT__INIT;
    struct attach_set set;
    int rv;

    if ((rv = either(ctl, a, cmd, "found", "not-found", &req.found)) ||
        (rv = attach_parse(
             ctl, a, CITYOPS__V1__ATTACHMENT_STAGE__ATTACHMENT_STAGE_VERIFY,
             &set))) {
        return rv;
    }
    if (ops_arg(a, "reason") != NULL) {
        req.reason = ops_arg(a, "reason");
    }
    req.n_attachments = set.n;
    req.attachments = set.ptrs;
    req.case_id = id;
    ops_ctx_fill(ctl, &ctx, cmd->role);
    req.ctx = &ctx;
    return case_call(ctl, cmd, &req.base);
}

static int run_register(struct ops_ctl *ctl,
                        const struct ops_args *a,
                        const struct case_cmd *cmd,
                        uint64_t id)
{
    Cityops__V1__RegisterRequest req = CITYOPS__V1__REGISTER_REQUEST__INIT;
    Cityops__V1__RequestContext ctx = CITYOPS__V1__REQUEST_CONTEXT__INIT;
    int type = 0;
    int rv;

    rv = enum_arg(ctl, a, "type", &cityops__v1__category_type__descriptor,
                  &type);
    if (rv != OPS_EXIT_OK) {
        return rv;
    }
    req.category_type = (Cityops__V1__CategoryType)type;
    if (ops_arg(a, "major") != NULL) {
        req.major_code = ops_arg(a, "major");
    }
    if (ops_arg(a, "minor") != NULL) {
        req.minor_code = ops_arg(a, "minor");
    }
    if (ops_arg(a, "condition") != NULL) {
        req.condition = ops_arg(a, "condition");
    }
    req.case_id = id;
    ops_ctx_fill(ctl, &ctx, cmd->role);
    req.ctx = &ctx;
    return case_call(ctl, cmd, &req.base);
}

static int run_merge(struct ops_ctl *ctl,
                     const struct ops_args *a,
                     const struct case_cmd *cmd,
                     uint64_t id)
{
    Cityops__V1__MergeRequest req = CITYOPS__V1__MERGE_REQUEST__INIT;
    Cityops__V1__RequestContext ctx = CITYOPS__V1__REQUEST_CONTEXT__INIT;
    char *into = NULL;
    int rv;

    rv = require(ctl, a, cmd, "into", &into);
    if (rv != OPS_EXIT_OK) {
        return rv;
    }
    if (ops_parse_u64(into, &req.into_case_id) != 0 || req.into_case_id == 0) {
        return ops_usage_error(ctl, "--into: bad case id '%s'", into);
    }
    if (ops_arg(a, "reason") != NULL) {
        req.reason = ops_arg(a, "reason");
    }
    req.case_id = id;
    ops_ctx_fill(ctl, &ctx, cmd->role);
    req.ctx = &ctx;
    return case_call(ctl, cmd, &req.base);
}

/* dispatch and redispatch (the latter with a required reason). */
static int run_dispatch(struct ops_ctl *ctl,
                        const struct ops_args *a,
                        const struct case_cmd *cmd,
                        uint64_t id)
{
    Cityops__V1__DispatchRequest req = CITYOPS__V1__DISPATCH_REQUEST__INIT;
    Cityops__V1__RequestContext ctx = CITYOPS__V1__REQUEST_CONTEXT__INIT;
    int level = 0;
    int rv;

    if ((rv = require(ctl, a, cmd, "dept", &req.department_id)) ||
        (rv = enum_arg(ctl, a, "level",
                       &cityops__v1__dispatch_level__descriptor, &level)) ||
        (rv = time_arg(ctl, a, "deadline", &req.disposal_deadline))) {
        return rv;
    }
    if (cmd->reason_required) {
        rv = require(ctl, a, cmd, "reason", &req.reason);
        if (rv != OPS_EXIT_OK) {
            return rv;
        }
    }
    req.level = (Cityops__V1__DispatchLevel)level;
    req.case_id = id;
    ops_ctx_fill(ctl, &ctx, cmd->role);
    req.ctx = &ctx;
    return case_call(ctl, cmd, &req.base);
}

static int run_report_disposal(struct ops_ctl *ctl,
                               const struct ops_args *a,
                               const struct case_cmd *cmd,
                               uint64_t id)
{
    Cityops__V1__ReportDisposalRequest req =
        CITYOPS__V1__REPORT_DISPOSAL_REQUEST__INIT;
    Cityops__V1__RequestContext ctx = CITYOPS__V1__REQUEST_CONTEXT__INIT;
    struct attach_set set;
    int rv;

    rv = attach_parse(
        ctl, a, CITYOPS__V1__ATTACHMENT_STAGE__ATTACHMENT_STAGE_DISPOSAL, &set);
    if (rv != OPS_EXIT_OK) {
        return rv;
    }
    if (set.n == 0) {
        return ops_usage_error(ctl, "case report-disposal: --attach is "
                                    "required (evidence)");
    }
    if (ops_arg(a, "note") != NULL) {
        req.note = ops_arg(a, "note");
    }
    req.n_attachments = set.n;
    req.attachments = set.ptrs;
    req.case_id = id;
    ops_ctx_fill(ctl, &ctx, cmd->role);
    req.ctx = &ctx;
    return case_call(ctl, cmd, &req.base);
}

static int run_request_extension(struct ops_ctl *ctl,
                                 const struct ops_args *a,
                                 const struct case_cmd *cmd,
                                 uint64_t id)
{
    Cityops__V1__RequestExtensionRequest req =
        CITYOPS__V1__REQUEST_EXTENSION_REQUEST__INIT;
    Cityops__V1__RequestContext ctx = CITYOPS__V1__REQUEST_CONTEXT__INIT;
    int rv;

    if ((rv = require(ctl, a, cmd, "until", &(char *){NULL})) ||
        (rv = time_arg(ctl, a, "until", &req.until)) ||
        (rv = require(ctl, a, cmd, "reason", &req.reason))) {
        return rv;
    }
    req.case_id = id;
    ops_ctx_fill(ctl, &ctx, cmd->role);
    req.ctx = &ctx;
    return case_call(ctl, cmd, &req.base);
}

static int run_decide_extension(struct ops_ctl *ctl,
                                const struct ops_args *a,
                                const struct case_cmd *cmd,
                                uint64_t id)
{
    Cityops__V1__DecideExtensionRequest req =
        CITYOPS__V1__DECIDE_EXTENSION_REQUEST__INIT;
    Cityops__V1__RequestContext ctx = CITYOPS__V1__REQUEST_CONTEXT__INIT;
    int rv;

    if ((rv = either(ctl, a, cmd, "approve", "deny", &req.approve)) ||
        (rv = time_arg(ctl, a, "until", &req.until))) {
        return rv;
    }
    if (ops_arg(a, "reason") != NULL) {
        req.reason = ops_arg(a, "reason");
    }
    req.case_id = id;
    ops_ctx_fill(ctl, &ctx, cmd->role);
    req.ctx = &ctx;
    return case_call(ctl, cmd, &req.base);
}

static int run_request_check(struct ops_ctl *ctl,
                             const struct ops_args *a,
                             const struct case_cmd *cmd,
                             uint64_t id)
{
    Cityops__V1__RequestCheckRequest req =
        CITYOPS__V1__REQUEST_CHECK_REQUEST__INIT;
    Cityops__V1__RequestContext ctx = CITYOPS__V1__REQUEST_CONTEXT__INIT;
    int rv;

    rv = require(ctl, a, cmd, "inspector", &req.inspector_id);
    if (rv != OPS_EXIT_OK) {
        return rv;
    }
    req.case_id = id;
    ops_ctx_fill(ctl, &ctx, cmd->role);
    req.ctx = &ctx;
    return case_call(ctl, cmd, &req.base);
}

static int run_check(struct ops_ctl *ctl,
                     const struct ops_args *a,
                     const struct case_cmd *cmd,
                     uint64_t id)
{
    Cityops__V1__CheckRequest req = CITYOPS__V1__CHECK_REQUEST__INIT;
    Cityops__V1__RequestContext ctx = CITYOPS__V1__REQUEST_CONTEXT__INIT;
    struct attach_set set;
    int rv;

    if ((rv = either(ctl, a, cmd, "pass", "fail", &req.passed)) ||
        (rv = attach_parse(
             ctl, a, CITYOPS__V1__ATTACHMENT_STAGE__ATTACHMENT_STAGE_CHECK,
             &set))) {
        return rv;
    }
    if (ops_arg(a, "note") != NULL) {
        req.note = ops_arg(a, "note");
    }
    req.n_attachments = set.n;
    req.attachments = set.ptrs;
    req.case_id = id;
    ops_ctx_fill(ctl, &ctx, cmd->role);
    req.ctx = &ctx;
    return case_call(ctl, cmd, &req.base);
}

static int run_close(struct ops_ctl *ctl,
                     const struct ops_args *a,
                     const struct case_cmd *cmd,
                     uint64_t id)
{
    Cityops__V1__CloseRequest req = CITYOPS__V1__CLOSE_REQUEST__INIT;
    Cityops__V1__RequestContext ctx = CITYOPS__V1__REQUEST_CONTEXT__INIT;
    int type = 0;
    int rv;

    rv =
        enum_arg(ctl, a, "type", &cityops__v1__closure_type__descriptor, &type);
    if (rv != OPS_EXIT_OK) {
        return rv;
    }
    req.closure_type = (Cityops__V1__ClosureType)type;
    if (ops_arg(a, "reason") != NULL) {
        req.reason = ops_arg(a, "reason");
    }
    req.case_id = id;
    ops_ctx_fill(ctl, &ctx, cmd->role);
    req.ctx = &ctx;
    return case_call(ctl, cmd, &req.base);
}

/* --- reads --- */

static int run_get(struct ops_ctl *ctl,
                   const struct ops_args *a,
                   const struct case_cmd *cmd,
                   uint64_t id)
{
    Cityops__V1__GetRequest req = CITYOPS__V1__GET_REQUEST__INIT;
    Cityops__V1__ReadOptions read = CITYOPS__V1__READ_OPTIONS__INIT;

    (void)a;
    ops_read_fill(ctl, &read,
                  CITYOPS__V1__CONSISTENCY__CONSISTENCY_LINEARIZABLE);
    req.read = &read;
    req.case_id = id;
    return case_call(ctl, cmd, &req.base);
}

static int run_history(struct ops_ctl *ctl,
                       const struct ops_args *a,
                       const struct case_cmd *cmd,
                       uint64_t id)
{
    Cityops__V1__HistoryRequest req = CITYOPS__V1__HISTORY_REQUEST__INIT;
    Cityops__V1__ReadOptions read = CITYOPS__V1__READ_OPTIONS__INIT;
    ProtobufCMessage *resp = NULL;
    int rv;

    (void)a;
    ops_read_fill(ctl, &read,
                  CITYOPS__V1__CONSISTENCY__CONSISTENCY_LINEARIZABLE);
    req.read = &read;
    req.case_id = id;
    rv = ops_call(ctl, cmd->method, &req.base,
                  &cityops__v1__history_response__descriptor, &resp);
    if (rv != OPS_EXIT_OK) {
        return rv;
    }
    if (ctl->json) {
        json_t *j = ops_pb_to_json(resp);

        rv = j != NULL ? ops_json_print(j) : OPS_EXIT_FAIL;
    } else if (ops_print_history((Cityops__V1__HistoryResponse *)resp) != 0) {
        fprintf(stderr, "cityctl: out of memory\n");
        rv = OPS_EXIT_FAIL;
    }
    protobuf_c_message_free_unpacked(resp, NULL);
    return rv;
}

static int list_filters(const struct ops_ctl *ctl,
                        const struct ops_args *a,
                        Cityops__V1__ListRequest *req)
{
    const char *v;
    int state = 0;
    int type = 0;
    uint64_t size;
    int rv;

    if ((rv = enum_arg(ctl, a, "state", &cityops__v1__case_state__descriptor,
                       &state)) ||
        (rv = enum_arg(ctl, a, "type", &cityops__v1__category_type__descriptor,
                       &type)) ||
        (rv = time_arg(ctl, a, "from", &req->reported_from)) ||
        (rv = time_arg(ctl, a, "to", &req->reported_to))) {
        return rv;
    }
    req->state = (Cityops__V1__CaseState)state;
    req->category_type = (Cityops__V1__CategoryType)type;
    if ((v = ops_arg(a, "page-size")) != NULL) {
        if (ops_parse_u64(v, &size) != 0 || size == 0 || size > 500) {
            return ops_usage_error(ctl, "--page-size: 1 to 500, not '%s'", v);
        }
        req->page_size = (uint32_t)size;
    }
    if (ops_arg(a, "dept") != NULL) {
        req->department_id = ops_arg(a, "dept");
    }
    if (ops_arg(a, "major") != NULL) {
        req->major_code = ops_arg(a, "major");
    }
    if (ops_arg(a, "minor") != NULL) {
        req->minor_code = ops_arg(a, "minor");
    }
    if (ops_arg(a, "grid") != NULL) {
        req->grid_code = ops_arg(a, "grid");
    }
    if (ops_arg(a, "page-token") != NULL) {
        req->page_token = ops_arg(a, "page-token");
    }
    return OPS_EXIT_OK;
}

/* Add one page to the output being built: rows of @t, or cases of @all. */
static int list_collect(const struct ops_ctl *ctl,
                        const Cityops__V1__ListResponse *page,
                        struct ops_table *t,
                        json_t *all)
{
    size_t i;

    for (i = 0; i < page->n_cases; i++) {
        if (ctl->json) {
            json_t *c = ops_pb_to_json(&page->cases[i]->base);

            if (c == NULL || json_array_append_new(all, c) != 0) {
                return OPS_NOMEM;
            }
        } else if (ops_case_table_add(t, page->cases[i]) != 0) {
            return OPS_NOMEM;
        }
    }
    return 0;
}

static int list_print(const struct ops_ctl *ctl,
                      struct ops_table *t,
                      json_t *all,
                      size_t n,
                      uint64_t applied,
                      const char *next_token)
{
    if (ctl->json) {
        json_t *j = json_pack("{s:O,s:s,s:I}", "cases", all, "next_page_token",
                              next_token, "applied_index", (json_int_t)applied);

        return j != NULL ? ops_json_print(j) : OPS_EXIT_FAIL;
    }
    ops_table_print(t, stdout);
    printf("(%zu case%s", n, n == 1 ? "" : "s");
    if (*next_token != '\0') {
        printf("; more with --all or --page-token %s", next_token);
    }
    printf(")\n");
    return OPS_EXIT_OK;
}

static int run_list(struct ops_ctl *ctl,
                    const struct ops_args *a,
                    const struct case_cmd *cmd,
                    uint64_t id)
{
    Cityops__V1__ListRequest req = CITYOPS__V1__LIST_REQUEST__INIT;
    Cityops__V1__ReadOptions read = CITYOPS__V1__READ_OPTIONS__INIT;
    Cityops__V1__ListResponse *page = NULL;
    ProtobufCMessage *msg = NULL;
    struct ops_table *t = NULL;
    json_t *all = NULL;
    char *token = NULL;
    char *next;
    uint64_t applied = 0;
    size_t n = 0;
    int rv;

    (void)id;
    rv = list_filters(ctl, a, &req);
    if (rv != OPS_EXIT_OK) {
        return rv;
    }
    ops_read_fill(ctl, &read,
                  CITYOPS__V1__CONSISTENCY__CONSISTENCY_LINEARIZABLE);
    req.read = &read;
    t = ops_case_table_new();
    all = json_array();
    if (t == NULL || all == NULL) {
        rv = OPS_EXIT_FAIL;
        goto err_nomem;
    }
    for (;;) {
        rv = ops_call(ctl, cmd->method, &req.base,
                      &cityops__v1__list_response__descriptor, &msg);
        if (rv != OPS_EXIT_OK) {
            goto out_free;
        }
        page = (Cityops__V1__ListResponse *)msg;
        n += page->n_cases;
        applied = page->applied_index;
        if (list_collect(ctl, page, t, all) != 0) {
            rv = OPS_EXIT_FAIL;
            goto err_nomem;
        }
        next = strdup(page->next_page_token);
        if (next == NULL) {
            rv = OPS_EXIT_FAIL;
            goto err_nomem;
        }
        /* A node that hands back the token it was given would keep --all
         * going forever. */
        if (*next != '\0' && strcmp(next, req.page_token) == 0) {
            free(next);
            ops_print_error(ctl, cmd->method, "CLIENT",
                            "the same page token came back", NULL);
            rv = OPS_EXIT_FAIL;
            goto out_free;
        }
        free(token);
        token = next;
        req.page_token = token;
        if (!ops_flag(a, "all") || *token == '\0') {
            break;
        }
        protobuf_c_message_free_unpacked(&page->base, NULL);
        page = NULL;
    }
    rv = list_print(ctl, t, all, n, applied, token);
    goto out_free;

err_nomem:
    fprintf(stderr, "cityctl: out of memory\n");
out_free:
    if (page != NULL) {
        protobuf_c_message_free_unpacked(&page->base, NULL);
    }
    free(token);
    json_decref(all);
    ops_table_free(t);
    return rv;
}

/* --- the table --- */

#define ACTION_OPTS "reason"

static const struct case_cmd case_cmds[] = {
    {"report",
     "type major minor component-id desc lon lat grid address datum attach",
     run_report, "Cases/Report", CITYOPS__V1__ROLE__ROLE_INSPECTOR, 0, 0},
    {"request-verify", "inspector", run_request_verify, "Cases/RequestVerify",
     CITYOPS__V1__ROLE__ROLE_INTAKE_CLERK, 1, 0},
    {"verify-result", "found not-found attach reason", run_verify_result,
     "Cases/VerifyResult", CITYOPS__V1__ROLE__ROLE_INSPECTOR, 1, 0},
    {"accept", ACTION_OPTS, run_action, "Cases/Accept",
     CITYOPS__V1__ROLE__ROLE_INTAKE_CLERK, 1, 0},
    {"register", "condition type major minor", run_register, "Cases/Register",
     CITYOPS__V1__ROLE__ROLE_SHIFT_LEADER, 1, 0},
    {"reject", ACTION_OPTS, run_action, "Cases/Reject",
     CITYOPS__V1__ROLE__ROLE_INTAKE_CLERK, 1, 1},
    {"merge", "into reason", run_merge, "Cases/Merge",
     CITYOPS__V1__ROLE__ROLE_SHIFT_LEADER, 1, 0},
    {"void", ACTION_OPTS, run_action, "Cases/Void",
     CITYOPS__V1__ROLE__ROLE_SHIFT_LEADER, 1, 1},
    {"dispatch", "dept level deadline", run_dispatch, "Cases/Dispatch",
     CITYOPS__V1__ROLE__ROLE_DISPATCHER, 1, 0},
    {"start-disposal", ACTION_OPTS, run_action, "Cases/StartDisposal",
     CITYOPS__V1__ROLE__ROLE_DEPARTMENT, 1, 0},
    {"return", ACTION_OPTS, run_action, "Cases/Return",
     CITYOPS__V1__ROLE__ROLE_DEPARTMENT, 1, 1},
    {"redispatch", "dept reason level deadline", run_dispatch,
     "Cases/Redispatch", CITYOPS__V1__ROLE__ROLE_DISPATCHER, 1, 1},
    {"report-disposal", "attach note", run_report_disposal,
     "Cases/ReportDisposal", CITYOPS__V1__ROLE__ROLE_DEPARTMENT, 1, 0},
    {"request-extension", "until reason", run_request_extension,
     "Cases/RequestExtension", CITYOPS__V1__ROLE__ROLE_DEPARTMENT, 1, 0},
    {"decide-extension", "approve deny until reason", run_decide_extension,
     "Cases/DecideExtension", CITYOPS__V1__ROLE__ROLE_SHIFT_LEADER, 1, 0},
    {"request-check", "inspector", run_request_check, "Cases/RequestCheck",
     CITYOPS__V1__ROLE__ROLE_DISPATCHER, 1, 0},
    {"check", "pass fail attach note", run_check, "Cases/Check",
     CITYOPS__V1__ROLE__ROLE_INSPECTOR, 1, 0},
    {"rework", ACTION_OPTS, run_action, "Cases/Rework",
     CITYOPS__V1__ROLE__ROLE_SHIFT_LEADER, 1, 0},
    {"close", "type reason", run_close, "Cases/Close",
     CITYOPS__V1__ROLE__ROLE_SHIFT_LEADER, 1, 0},
    {"shelve", ACTION_OPTS, run_action, "Cases/Shelve",
     CITYOPS__V1__ROLE__ROLE_SHIFT_LEADER, 1, 1},
    {"unshelve", ACTION_OPTS, run_action, "Cases/Unshelve",
     CITYOPS__V1__ROLE__ROLE_SHIFT_LEADER, 1, 0},
    {"get", "", run_get, "Cases/Get", 0, 1, 0},
    {"list",
     "state dept type major minor grid from to page-size page-token all",
     run_list, "Cases/List", 0, 0, 0},
    {"history", "", run_history, "Cases/History", 0, 1, 0},
};

static const struct case_cmd *case_cmd_find(const char *name)
{
    size_t i;

    for (i = 0; i < sizeof(case_cmds) / sizeof(case_cmds[0]); i++) {
        if (strcmp(case_cmds[i].name, name) == 0) {
            return &case_cmds[i];
        }
    }
    return NULL;
}

const char *ctl_case_options(const char *sub)
{
    const struct case_cmd *cmd = case_cmd_find(sub);

    return cmd != NULL ? cmd->options : NULL;
}

int ctl_case_run(struct ops_ctl *ctl, const struct ops_args *a)
{
    const struct case_cmd *cmd = case_cmd_find(a->pos[1]);
    int want = 2 + cmd->needs_id;
    uint64_t id = 0;

    if (a->n_pos < want) {
        return ops_usage_error(ctl, "case %s: which case? (an ID)", cmd->name);
    }
    if (a->n_pos > want) {
        return ops_usage_error(ctl, "case %s: unexpected argument '%s'",
                               cmd->name, a->pos[want]);
    }
    if (cmd->needs_id && (ops_parse_u64(a->pos[2], &id) != 0 || id == 0)) {
        return ops_usage_error(ctl, "case %s: bad case id '%s'", cmd->name,
                               a->pos[2]);
    }
    return cmd->run(ctl, a, cmd, id);
}
