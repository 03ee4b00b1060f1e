/* cityctl case ...: one subcommand per cityops.v1.Cases method.
 *
 * Each write fills a request on the stack (strings borrowed from argv), adds
 * the request context (actor, the command's default role, the retry key)
 * and prints the CaseReply. The state machine's rules (which role may do
 * what, from which state, which fields are required) belong to the cluster:
 * cityctl only refuses what cannot be sent at all (a missing --dept, a
 * malformed time), so that the rules live in one place.
 *
 * DESIGN: the writes differ only in which options fill which fields, so one
 * builder (run_write) serves them all. A struct req_shape names the request
 * message and lists its options in the order they are checked, each as a
 * struct fill: the option, how to parse it, and the request field it goes
 * to, found by name in the protobuf-c descriptor. Order matters: the first
 * bad option is the one reported. The builder then sets "case_id" (when the
 * message has one) and "ctx" the same way.
 */
#include <assert.h>
#include <ctype.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "ops.h"

struct case_cmd;

typedef int (*case_run_fn)(struct ops_ctl *ctl,
                           const struct ops_args *a,
                           const struct case_cmd *cmd,
                           uint64_t id);

/* How one option fills one request field. */
enum fill_kind {
    FILL_END,
    FILL_STR,      /* optional string */
    FILL_STR_REQ,  /* required string; with no field, only checked */
    FILL_REASON,   /* FILL_STR_REQ if cmd->reason_required, else FILL_STR */
    FILL_ENUM,     /* a value name of the field's enum */
    FILL_TIME,     /* RFC3339 -> int64 UTC us */
    FILL_EITHER,   /* --opt sets the bool, --other clears it; one is needed */
    FILL_CASE_ID,  /* required, a case id */
    FILL_ATTACH,   /* every --attach, at the shape's stage */
    FILL_EVIDENCE, /* FILL_ATTACH, at least one */
    FILL_LOCATION, /* --lon --lat --datum --grid --address */
};

struct fill {
    enum fill_kind kind;
    const char *opt;   /* without "--" */
    const char *field; /* the request field, by its proto name */
    const char *other; /* FILL_EITHER: the option that means false */
};

/* A request message and how the command line fills it. */
struct req_shape {
    const ProtobufCMessageDescriptor *desc;
    Cityops__V1__AttachmentStage stage; /* of FILL_ATTACH, FILL_EVIDENCE */
    struct fill fills[10];              /* at most 9, then FILL_END (zeroes) */
};

struct case_cmd {
    const char *name;
    const char *options; /* accepted options, space separated */
    case_run_fn run;
    const char *method; /* "Cases/Accept" */
    int role;           /* default role for writes */
    int needs_id;
    int reason_required; /* FILL_REASON */
    const struct req_shape *shape;
};

/* Attachments given with --attach SHA256:URI, on the stack. */
struct attach_set {
    Cityops__V1__Attachment items[OPS_MAX_ATTACH];
    Cityops__V1__Attachment *ptrs[OPS_MAX_ATTACH];
    size_t n;
};

/* Room for any request message of the shapes below. */
union req_buf {
    ProtobufCMessage base;
    max_align_t align;
    unsigned char bytes[256];
};

/* A write request being built, and what its fields point to. */
struct write_req {
    union req_buf req;
    Cityops__V1__RequestContext ctx;
    Cityops__V1__Location loc;
    struct attach_set set;
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

/* --- building requests through their descriptors --- */

/* The field @name of @m, which must exist with @type: a shape naming a
 * field its message lacks is a bug in the tables below. */
static const ProtobufCFieldDescriptor *
field_desc(const ProtobufCMessage *m, const char *name, ProtobufCType type)
{
    const ProtobufCFieldDescriptor *f =
        protobuf_c_message_descriptor_get_field_by_name(m->descriptor, name);

    (void)type; /* with NDEBUG */
    assert(f != NULL && f->type == type);
    return f;
}

/* Where the field @name (of @type) lives inside @m. */
static void *field(ProtobufCMessage *m, const char *name, ProtobufCType type)
{
    return (char *)m + field_desc(m, name, type)->offset;
}

/* FILL_STR, FILL_STR_REQ, FILL_REASON. */
static int fill_str(const struct ops_ctl *ctl,
                    const struct ops_args *a,
                    const struct case_cmd *cmd,
                    ProtobufCMessage *m,
                    const struct fill *f)
{
    char *v = ops_arg(a, f->opt);
    int rv = OPS_EXIT_OK;

    if (f->kind == FILL_STR_REQ ||
        (f->kind == FILL_REASON && cmd->reason_required)) {
        rv = require(ctl, a, cmd, f->opt, &v);
    }
    if (rv == OPS_EXIT_OK && v != NULL && f->field != NULL) {
        *(char **)field(m, f->field, PROTOBUF_C_TYPE_STRING) = v;
    }
    return rv;
}

/* The enum's descriptor comes from the field's. protobuf-c enums are
 * int-sized (PROTOBUF_C__FORCE_ENUM_TO_BE_INT_SIZE). */
static int fill_enum(const struct ops_ctl *ctl,
                     const struct ops_args *a,
                     ProtobufCMessage *m,
                     const struct fill *f)
{
    const ProtobufCFieldDescriptor *fd =
        field_desc(m, f->field, PROTOBUF_C_TYPE_ENUM);
    int value = 0;
    int rv = enum_arg(ctl, a, f->opt, fd->descriptor, &value);

    if (rv == OPS_EXIT_OK) {
        *(int *)((char *)m + fd->offset) = value;
    }
    return rv;
}

static int fill_case_id(const struct ops_ctl *ctl,
                        const struct ops_args *a,
                        const struct case_cmd *cmd,
                        ProtobufCMessage *m,
                        const struct fill *f)
{
    uint64_t *id = field(m, f->field, PROTOBUF_C_TYPE_UINT64);
    char *v = NULL;
    int rv = require(ctl, a, cmd, f->opt, &v);

    if (rv != OPS_EXIT_OK) {
        return rv;
    }
    if (ops_parse_u64(v, id) != 0 || *id == 0) {
        return ops_usage_error(ctl, "--%s: bad case id '%s'", f->opt, v);
    }
    return OPS_EXIT_OK;
}

/* The repeated field points into w->set. */
static int fill_attach(const struct ops_ctl *ctl,
                       const struct ops_args *a,
                       const struct case_cmd *cmd,
                       struct write_req *w,
                       const struct fill *f)
{
    const ProtobufCFieldDescriptor *fd =
        field_desc(&w->req.base, f->field, PROTOBUF_C_TYPE_MESSAGE);
    char *m = (char *)&w->req.base;
    int rv;

    assert(fd->label == PROTOBUF_C_LABEL_REPEATED);
    rv = attach_parse(ctl, a, cmd->shape->stage, &w->set);
    if (rv != OPS_EXIT_OK) {
        return rv;
    }
    if (f->kind == FILL_EVIDENCE && w->set.n == 0) {
        return ops_usage_error(ctl, "case %s: --%s is required (evidence)",
                               cmd->name, f->opt);
    }
    *(size_t *)(m + fd->quantifier_offset) = w->set.n;
    *(Cityops__V1__Attachment ***)(m + fd->offset) = w->set.ptrs;
    return OPS_EXIT_OK;
}

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

/* The location is sent only when one of its options was given. */
static int fill_location(const struct ops_ctl *ctl,
                         const struct ops_args *a,
                         struct write_req *w,
                         const struct fill *f)
{
    int rv;

    cityops__v1__location__init(&w->loc);
    rv = report_location(ctl, a, &w->loc);
    if (rv != OPS_EXIT_OK) {
        return rv;
    }
    if (ops_flag(a, "lon") || ops_flag(a, "grid") || ops_flag(a, "address") ||
        ops_flag(a, "datum")) {
        *(Cityops__V1__Location **)field(&w->req.base, f->field,
                                         PROTOBUF_C_TYPE_MESSAGE) = &w->loc;
    }
    return OPS_EXIT_OK;
}

static int fill_one(const struct ops_ctl *ctl,
                    const struct ops_args *a,
                    const struct case_cmd *cmd,
                    struct write_req *w,
                    const struct fill *f)
{
    ProtobufCMessage *m = &w->req.base;

    switch (f->kind) {
    case FILL_STR:
    case FILL_STR_REQ:
    case FILL_REASON:
        return fill_str(ctl, a, cmd, m, f);
    case FILL_ENUM:
        return fill_enum(ctl, a, m, f);
    case FILL_TIME:
        return time_arg(ctl, a, f->opt,
                        field(m, f->field, PROTOBUF_C_TYPE_INT64));
    case FILL_EITHER:
        return either(ctl, a, cmd, f->opt, f->other,
                      field(m, f->field, PROTOBUF_C_TYPE_BOOL));
    case FILL_CASE_ID:
        return fill_case_id(ctl, a, cmd, m, f);
    case FILL_ATTACH:
    case FILL_EVIDENCE:
        return fill_attach(ctl, a, cmd, w, f);
    case FILL_LOCATION:
        return fill_location(ctl, a, w, f);
    case FILL_END:
        break;
    }
    return OPS_EXIT_OK;
}

/* --- writes --- */

/* Every write: the shape's options in order, then case_id (Report has none)
 * and the request context, filled last so that a usage error uses no retry
 * key. */
static int run_write(struct ops_ctl *ctl,
                     const struct ops_args *a,
                     const struct case_cmd *cmd,
                     uint64_t id)
{
    const ProtobufCMessageDescriptor *desc = cmd->shape->desc;
    ProtobufCMessage *m;
    const struct fill *f;
    struct write_req w;
    int rv;

    assert(desc->sizeof_message <= sizeof(w.req));
    protobuf_c_message_init(desc, &w.req);
    m = &w.req.base;
    for (f = cmd->shape->fills; f->kind != FILL_END; f++) {
        rv = fill_one(ctl, a, cmd, &w, f);
        if (rv != OPS_EXIT_OK) {
            return rv;
        }
    }
    if (protobuf_c_message_descriptor_get_field_by_name(desc, "case_id") !=
        NULL) {
        *(uint64_t *)field(m, "case_id", PROTOBUF_C_TYPE_UINT64) = id;
    }
    cityops__v1__request_context__init(&w.ctx);
    ops_ctx_fill(ctl, &w.ctx, cmd->role);
    *(Cityops__V1__RequestContext **)field(m, "ctx", PROTOBUF_C_TYPE_MESSAGE) =
        &w.ctx;
    return case_call(ctl, cmd, m);
}

/* --- reads --- */

/* Get and History: {read, case_id} in the shape's message, in @buf. */
static ProtobufCMessage *read_build(const struct ops_ctl *ctl,
                                    const struct case_cmd *cmd,
                                    uint64_t id,
                                    union req_buf *buf,
                                    Cityops__V1__ReadOptions *read)
{
    ProtobufCMessage *m = &buf->base;

    assert(cmd->shape->desc->sizeof_message <= sizeof(*buf));
    protobuf_c_message_init(cmd->shape->desc, buf);
    cityops__v1__read_options__init(read);
    ops_read_fill(ctl, read,
                  CITYOPS__V1__CONSISTENCY__CONSISTENCY_LINEARIZABLE);
    *(Cityops__V1__ReadOptions **)field(m, "read", PROTOBUF_C_TYPE_MESSAGE) =
        read;
    *(uint64_t *)field(m, "case_id", PROTOBUF_C_TYPE_UINT64) = id;
    return m;
}

static int run_get(struct ops_ctl *ctl,
                   const struct ops_args *a,
                   const struct case_cmd *cmd,
                   uint64_t id)
{
    Cityops__V1__ReadOptions read;
    union req_buf buf;

    (void)a;
    return case_call(ctl, cmd, read_build(ctl, cmd, id, &buf, &read));
}

static int run_history(struct ops_ctl *ctl,
                       const struct ops_args *a,
                       const struct case_cmd *cmd,
                       uint64_t id)
{
    Cityops__V1__ReadOptions read;
    ProtobufCMessage *resp = NULL;
    union req_buf buf;
    int rv;

    (void)a;
    rv = ops_call(ctl, cmd->method, read_build(ctl, cmd, id, &buf, &read),
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
        (rv = time_arg(ctl, a, "to", &req->reported_to)) ||
        (rv = time_arg(ctl, a, "deadline-from", &req->deadline_from)) ||
        (rv = time_arg(ctl, a, "deadline-to", &req->deadline_to))) {
        return rv;
    }
    req->overdue_only = ops_flag(a, "overdue");
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

#define ROLE(r) CITYOPS__V1__ROLE__ROLE_##r
#define STAGE(s) CITYOPS__V1__ATTACHMENT_STAGE__ATTACHMENT_STAGE_##s

static const struct req_shape shape_report = {
    .desc = &cityops__v1__report_request__descriptor,
    .stage = STAGE(REPORT),
    .fills = {{FILL_STR_REQ, "type", NULL, NULL},
              {FILL_ENUM, "type", "category_type", NULL},
              {FILL_STR_REQ, "major", "major_code", NULL},
              {FILL_STR_REQ, "minor", "minor_code", NULL},
              {FILL_STR_REQ, "desc", "description", NULL},
              {FILL_LOCATION, NULL, "location", NULL},
              {FILL_ATTACH, "attach", "attachments", NULL},
              {FILL_STR, "component-id", "component_id", NULL}},
};

/* Transitions that carry only a reason: accept, reject, void, ... */
static const struct req_shape shape_action = {
    .desc = &cityops__v1__case_action_request__descriptor,
    .fills = {{FILL_REASON, "reason", "reason", NULL}},
};

static const struct req_shape shape_supervise = {
    .desc = &cityops__v1__supervise_request__descriptor,
    .fills = {{FILL_REASON, "reason", "reason", NULL}},
};

static const struct req_shape shape_request_verify = {
    .desc = &cityops__v1__request_verify_request__descriptor,
    .fills = {{FILL_STR_REQ, "inspector", "inspector_id", NULL}},
};

static const struct req_shape shape_verify_result = {
    .desc = &cityops__v1__verify_result_request__descriptor,
    .stage = STAGE(VERIFY),
    .fills = {{FILL_EITHER, "found", "found", "not-found"},
              {FILL_ATTACH, "attach", "attachments", NULL},
              {FILL_STR, "reason", "reason", NULL}},
};

static const struct req_shape shape_register = {
    .desc = &cityops__v1__register_request__descriptor,
    .fills = {{FILL_ENUM, "type", "category_type", NULL},
              {FILL_STR, "major", "major_code", NULL},
              {FILL_STR, "minor", "minor_code", NULL},
              {FILL_STR, "condition", "condition", NULL}},
};

static const struct req_shape shape_merge = {
    .desc = &cityops__v1__merge_request__descriptor,
    .fills = {{FILL_CASE_ID, "into", "into_case_id", NULL},
              {FILL_STR, "reason", "reason", NULL}},
};

/* dispatch and redispatch (the latter with a required reason). */
static const struct req_shape shape_dispatch = {
    .desc = &cityops__v1__dispatch_request__descriptor,
    .fills = {{FILL_STR_REQ, "dept", "department_id", NULL},
              {FILL_ENUM, "level", "level", NULL},
              {FILL_TIME, "deadline", "disposal_deadline", NULL},
              {FILL_REASON, "reason", "reason", NULL}},
};

static const struct req_shape shape_report_disposal = {
    .desc = &cityops__v1__report_disposal_request__descriptor,
    .stage = STAGE(DISPOSAL),
    .fills = {{FILL_EVIDENCE, "attach", "attachments", NULL},
              {FILL_STR, "note", "note", NULL}},
};

static const struct req_shape shape_request_extension = {
    .desc = &cityops__v1__request_extension_request__descriptor,
    .fills = {{FILL_STR_REQ, "until", NULL, NULL},
              {FILL_TIME, "until", "until", NULL},
              {FILL_STR_REQ, "reason", "reason", NULL}},
};

static const struct req_shape shape_decide_extension = {
    .desc = &cityops__v1__decide_extension_request__descriptor,
    .fills = {{FILL_EITHER, "approve", "approve", "deny"},
              {FILL_TIME, "until", "until", NULL},
              {FILL_STR, "reason", "reason", NULL}},
};

static const struct req_shape shape_request_check = {
    .desc = &cityops__v1__request_check_request__descriptor,
    .fills = {{FILL_STR_REQ, "inspector", "inspector_id", NULL}},
};

static const struct req_shape shape_check = {
    .desc = &cityops__v1__check_request__descriptor,
    .stage = STAGE(CHECK),
    .fills = {{FILL_EITHER, "pass", "passed", "fail"},
              {FILL_ATTACH, "attach", "attachments", NULL},
              {FILL_STR, "note", "note", NULL}},
};

static const struct req_shape shape_close = {
    .desc = &cityops__v1__close_request__descriptor,
    .fills = {{FILL_ENUM, "type", "closure_type", NULL},
              {FILL_STR, "reason", "reason", NULL}},
};

static const struct req_shape shape_get = {
    .desc = &cityops__v1__get_request__descriptor,
};

static const struct req_shape shape_history = {
    .desc = &cityops__v1__history_request__descriptor,
};

#define ACTION_OPTS "reason"

static const struct case_cmd case_cmds[] = {
    {"report",
     "type major minor component-id desc lon lat grid address datum attach",
     run_write, "Cases/Report", ROLE(INSPECTOR), 0, 0, &shape_report},
    {"request-verify", "inspector", run_write, "Cases/RequestVerify",
     ROLE(INTAKE_CLERK), 1, 0, &shape_request_verify},
    {"verify-result", "found not-found attach reason", run_write,
     "Cases/VerifyResult", ROLE(INSPECTOR), 1, 0, &shape_verify_result},
    {"accept", ACTION_OPTS, run_write, "Cases/Accept", ROLE(INTAKE_CLERK), 1, 0,
     &shape_action},
    {"register", "condition type major minor", run_write, "Cases/Register",
     ROLE(SHIFT_LEADER), 1, 0, &shape_register},
    {"reject", ACTION_OPTS, run_write, "Cases/Reject", ROLE(INTAKE_CLERK), 1, 1,
     &shape_action},
    {"merge", "into reason", run_write, "Cases/Merge", ROLE(SHIFT_LEADER), 1, 0,
     &shape_merge},
    {"void", ACTION_OPTS, run_write, "Cases/Void", ROLE(SHIFT_LEADER), 1, 1,
     &shape_action},
    {"dispatch", "dept level deadline", run_write, "Cases/Dispatch",
     ROLE(DISPATCHER), 1, 0, &shape_dispatch},
    {"start-disposal", ACTION_OPTS, run_write, "Cases/StartDisposal",
     ROLE(DEPARTMENT), 1, 0, &shape_action},
    {"return", ACTION_OPTS, run_write, "Cases/Return", ROLE(DEPARTMENT), 1, 1,
     &shape_action},
    {"redispatch", "dept reason level deadline", run_write, "Cases/Redispatch",
     ROLE(DISPATCHER), 1, 1, &shape_dispatch},
    {"report-disposal", "attach note", run_write, "Cases/ReportDisposal",
     ROLE(DEPARTMENT), 1, 0, &shape_report_disposal},
    {"request-extension", "until reason", run_write, "Cases/RequestExtension",
     ROLE(DEPARTMENT), 1, 0, &shape_request_extension},
    {"decide-extension", "approve deny until reason", run_write,
     "Cases/DecideExtension", ROLE(SHIFT_LEADER), 1, 0,
     &shape_decide_extension},
    {"request-check", "inspector", run_write, "Cases/RequestCheck",
     ROLE(DISPATCHER), 1, 0, &shape_request_check},
    {"check", "pass fail attach note", run_write, "Cases/Check",
     ROLE(INSPECTOR), 1, 0, &shape_check},
    {"rework", ACTION_OPTS, run_write, "Cases/Rework", ROLE(SHIFT_LEADER), 1, 0,
     &shape_action},
    {"close", "type reason", run_write, "Cases/Close", ROLE(SHIFT_LEADER), 1, 0,
     &shape_close},
    {"shelve", ACTION_OPTS, run_write, "Cases/Shelve", ROLE(SHIFT_LEADER), 1, 1,
     &shape_action},
    {"unshelve", ACTION_OPTS, run_write, "Cases/Unshelve", ROLE(SHIFT_LEADER),
     1, 0, &shape_action},
    {"supervise", ACTION_OPTS, run_write, "Cases/Supervise",
     ROLE(SHIFT_LEADER), 1, 0, &shape_supervise},
    {"get", "", run_get, "Cases/Get", 0, 1, 0, &shape_get},
    {"list",
     "state dept type major minor grid from to page-size page-token all "
     "deadline-from deadline-to overdue",
     run_list, "Cases/List", 0, 0, 0, NULL},
    {"history", "", run_history, "Cases/History", 0, 1, 0, &shape_history},
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
