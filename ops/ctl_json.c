/* A generic protobuf-c message to JSON converter for cityctl --json.
 *
 * Walks ProtobufCMessageDescriptor, so new fields in the .proto files show up
 * without touching this file. The mapping is close to proto3's JSON form but
 * keeps proto field names and prints every field, defaults included, so that
 * scripts can rely on a key being there: enums are their value names,
 * 64-bit integers are numbers (strings above INT64_MAX, which jansson can't
 * hold), bytes are base64, absent sub-messages are null, and oneof members
 * or proto3 optionals that are not set are left out.
 *
 * ops_json_to_pb() goes the other way, for files operators write: the same
 * conventions, read leniently where proto3's JSON form is (enums by full or
 * short name or number, integers as numbers or strings), and strictly
 * everywhere else (unknown fields and wrong types are refused, naming the
 * JSON path).
 */
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "ops.h"

static json_t *base64_json(const ProtobufCBinaryData *bin)
{
    static const char tab[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t out_len = 4 * ((bin->len + 2) / 3);
    char *out = malloc(out_len + 1);
    size_t i;
    size_t o = 0;
    json_t *j;

    if (out == NULL) {
        return NULL;
    }
    for (i = 0; i < bin->len; i += 3) {
        uint32_t v = (uint32_t)bin->data[i] << 16;
        size_t left = bin->len - i;

        if (left > 1) {
            v |= (uint32_t)bin->data[i + 1] << 8;
        }
        if (left > 2) {
            v |= bin->data[i + 2];
        }
        out[o++] = tab[(v >> 18) & 63];
        out[o++] = tab[(v >> 12) & 63];
        out[o++] = left > 1 ? tab[(v >> 6) & 63] : '=';
        out[o++] = left > 2 ? tab[v & 63] : '=';
    }
    out[o] = '\0';
    j = json_string(out);
    free(out);
    return j;
}

/* jansson refuses invalid UTF-8; a node should never send it, but if one
 * does we print it with the bad bytes as '?' rather than fail. */
static json_t *string_json(const char *s)
{
    json_t *j;
    char *copy;
    size_t i;

    if (s == NULL) {
        s = "";
    }
    j = json_string(s);
    if (j != NULL) {
        return j;
    }
    copy = strdup(s);
    if (copy == NULL) {
        return NULL;
    }
    for (i = 0; copy[i] != '\0'; i++) {
        if ((unsigned char)copy[i] >= 0x80) {
            copy[i] = '?';
        }
    }
    j = json_string(copy);
    free(copy);
    return j;
}

static json_t *real_json(double v)
{
    if (isnan(v) || isinf(v)) {
        return json_null();
    }
    return json_real(v);
}

static json_t *u64_json(uint64_t v)
{
    char buf[24];

    if (v <= (uint64_t)INT64_MAX) {
        return json_integer((json_int_t)v);
    }
    snprintf(buf, sizeof(buf), "%" PRIu64, v);
    return json_string(buf);
}

/* One value of field @f stored at @p. */
static json_t *value_json(const ProtobufCFieldDescriptor *f, const void *p)
{
    const ProtobufCEnumValue *ev;
    const ProtobufCMessage *sub;

    switch (f->type) {
    case PROTOBUF_C_TYPE_INT32:
    case PROTOBUF_C_TYPE_SINT32:
    case PROTOBUF_C_TYPE_SFIXED32:
        return json_integer(*(const int32_t *)p);
    case PROTOBUF_C_TYPE_UINT32:
    case PROTOBUF_C_TYPE_FIXED32:
        return json_integer(*(const uint32_t *)p);
    case PROTOBUF_C_TYPE_INT64:
    case PROTOBUF_C_TYPE_SINT64:
    case PROTOBUF_C_TYPE_SFIXED64:
        return json_integer(*(const int64_t *)p);
    case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_FIXED64:
        return u64_json(*(const uint64_t *)p);
    case PROTOBUF_C_TYPE_FLOAT:
        return real_json(*(const float *)p);
    case PROTOBUF_C_TYPE_DOUBLE:
        return real_json(*(const double *)p);
    case PROTOBUF_C_TYPE_BOOL:
        return json_boolean(*(const protobuf_c_boolean *)p);
    case PROTOBUF_C_TYPE_ENUM:
        ev = protobuf_c_enum_descriptor_get_value(f->descriptor,
                                                  *(const int *)p);
        if (ev == NULL) {
            return json_integer(*(const int *)p);
        }
        return json_string(ev->name);
    case PROTOBUF_C_TYPE_STRING:
        return string_json(*(char *const *)p);
    case PROTOBUF_C_TYPE_BYTES:
        return base64_json((const ProtobufCBinaryData *)p);
    case PROTOBUF_C_TYPE_MESSAGE:
        sub = *(ProtobufCMessage *const *)p;
        if (sub == NULL) {
            return json_null();
        }
        return ops_pb_to_json(sub);
    }
    return json_null();
}

static size_t value_size(ProtobufCType type)
{
    switch (type) {
    case PROTOBUF_C_TYPE_INT32:
    case PROTOBUF_C_TYPE_SINT32:
    case PROTOBUF_C_TYPE_SFIXED32:
    case PROTOBUF_C_TYPE_UINT32:
    case PROTOBUF_C_TYPE_FIXED32:
        return 4;
    case PROTOBUF_C_TYPE_INT64:
    case PROTOBUF_C_TYPE_SINT64:
    case PROTOBUF_C_TYPE_SFIXED64:
    case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_FIXED64:
        return 8;
    case PROTOBUF_C_TYPE_FLOAT:
        return sizeof(float);
    case PROTOBUF_C_TYPE_DOUBLE:
        return sizeof(double);
    case PROTOBUF_C_TYPE_BOOL:
        return sizeof(protobuf_c_boolean);
    case PROTOBUF_C_TYPE_ENUM:
        return sizeof(int);
    case PROTOBUF_C_TYPE_STRING:
        return sizeof(char *);
    case PROTOBUF_C_TYPE_BYTES:
        return sizeof(ProtobufCBinaryData);
    case PROTOBUF_C_TYPE_MESSAGE:
        return sizeof(ProtobufCMessage *);
    }
    return 0;
}

static json_t *repeated_json(const ProtobufCFieldDescriptor *f,
                             const char *base)
{
    size_t n = *(const size_t *)(base + f->quantifier_offset);
    const char *arr = *(char *const *)(base + f->offset);
    size_t size = value_size(f->type);
    json_t *list = json_array();
    size_t i;

    if (list == NULL) {
        return NULL;
    }
    for (i = 0; i < n; i++) {
        json_t *v = value_json(f, arr + i * size);

        if (v == NULL || json_array_append_new(list, v) != 0) {
            json_decref(list);
            return NULL;
        }
    }
    return list;
}

/* 0 if field @f is not set and must be left out. */
static int field_present(const ProtobufCFieldDescriptor *f, const char *base)
{
    if (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) {
        return *(const uint32_t *)(base + f->quantifier_offset) == f->id;
    }
    if (f->label != PROTOBUF_C_LABEL_OPTIONAL) {
        return 1;
    }
    switch (f->type) {
    case PROTOBUF_C_TYPE_STRING:
    case PROTOBUF_C_TYPE_MESSAGE:
        return *(void *const *)(base + f->offset) != NULL;
    default:
        return *(const protobuf_c_boolean *)(base + f->quantifier_offset);
    }
}

json_t *ops_pb_to_json(const ProtobufCMessage *msg)
{
    const ProtobufCMessageDescriptor *d = msg->descriptor;
    const char *base = (const char *)msg;
    json_t *obj = json_object();
    unsigned i;

    if (obj == NULL) {
        return NULL;
    }
    for (i = 0; i < d->n_fields; i++) {
        const ProtobufCFieldDescriptor *f = &d->fields[i];
        json_t *v;

        if (!field_present(f, base)) {
            continue;
        }
        if (f->label == PROTOBUF_C_LABEL_REPEATED) {
            v = repeated_json(f, base);
        } else {
            v = value_json(f, base + f->offset);
        }
        if (v == NULL || json_object_set_new(obj, f->name, v) != 0) {
            json_decref(obj);
            return NULL;
        }
    }
    return obj;
}

int ops_json_print(json_t *j)
{
    int rv = json_dumpf(j, stdout,
                        JSON_INDENT(2) | JSON_PRESERVE_ORDER |
                            JSON_REAL_PRECISION(15));

    json_decref(j);
    if (rv != 0) {
        return OPS_EXIT_FAIL;
    }
    fputc('\n', stdout);
    return OPS_EXIT_OK;
}

/* --- JSON -> protobuf-c ---
 *
 * The reverse of ops_pb_to_json(), for files an operator writes (cityctl
 * admin apply). The message is first built in an arena of our own, then
 * packed and unpacked with its descriptor, so that what the caller gets is
 * exactly what protobuf-c's own unpack would give (and frees): no question
 * of which pointers are defaults and which are malloc'd. Config files are
 * small; the extra copy costs nothing that matters. */

struct j2p {
    char *err;
    size_t errlen;
    char path[512];
    void **allocs;
    size_t n_allocs;
    size_t cap_allocs;
    int nomem;
};

static void *j2p_alloc(struct j2p *st, size_t size)
{
    void *p;

    if (st->n_allocs == st->cap_allocs) {
        size_t cap = st->cap_allocs != 0 ? 2 * st->cap_allocs : 64;
        void **grown = realloc(st->allocs, cap * sizeof(*grown));

        if (grown == NULL) {
            st->nomem = 1;
            return NULL;
        }
        st->allocs = grown;
        st->cap_allocs = cap;
    }
    p = calloc(1, size != 0 ? size : 1);
    if (p == NULL) {
        st->nomem = 1;
        return NULL;
    }
    st->allocs[st->n_allocs++] = p;
    return p;
}

static void j2p_free(struct j2p *st)
{
    size_t i;

    for (i = 0; i < st->n_allocs; i++) {
        free(st->allocs[i]);
    }
    free(st->allocs);
    st->allocs = NULL;
    st->n_allocs = 0;
}

static int j2p_fail(struct j2p *st, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static int j2p_fail(struct j2p *st, const char *fmt, ...)
{
    char what[256];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(what, sizeof(what), fmt, ap);
    va_end(ap);
    if (st->err != NULL && st->errlen > 0) {
        snprintf(st->err, st->errlen, "%s: %s", st->path, what);
    }
    return OPS_INVALID;
}

static int j2p_nomem(struct j2p *st)
{
    st->nomem = 1;
    if (st->err != NULL && st->errlen > 0) {
        snprintf(st->err, st->errlen, "%s: out of memory", st->path);
    }
    return OPS_NOMEM;
}

/* Append ".name" or "[i]" to the path; returns the length to restore. */
static size_t path_push_name(struct j2p *st, const char *name)
{
    size_t len = strlen(st->path);

    snprintf(st->path + len, sizeof(st->path) - len, ".%s", name);
    return len;
}

static size_t path_push_index(struct j2p *st, size_t i)
{
    size_t len = strlen(st->path);

    snprintf(st->path + len, sizeof(st->path) - len, "[%zu]", i);
    return len;
}

static void path_pop(struct j2p *st, size_t len)
{
    st->path[len] = '\0';
}

static const char *json_kind(const json_t *j)
{
    switch (json_typeof(j)) {
    case JSON_OBJECT:
        return "an object";
    case JSON_ARRAY:
        return "an array";
    case JSON_STRING:
        return "a string";
    case JSON_INTEGER:
    case JSON_REAL:
        return "a number";
    case JSON_TRUE:
    case JSON_FALSE:
        return "a boolean";
    case JSON_NULL:
        return "null";
    }
    return "?";
}

/* An integer as a JSON number (integral) or a decimal string. Signed values
 * land in *sv, unsigned ones in *uv. */
static int json_int_get(
    struct j2p *st, const json_t *j, int is_signed, int64_t *sv, uint64_t *uv)
{
    if (json_is_integer(j)) {
        json_int_t v = json_integer_value(j);

        if (!is_signed && v < 0) {
            return j2p_fail(st, "expected an unsigned integer, got %lld",
                            (long long)v);
        }
        *sv = (int64_t)v;
        *uv = (uint64_t)v;
        return 0;
    }
    if (json_is_real(j)) {
        double v = json_real_value(j);

        if (v != floor(v) || v < -9.2e18 || v > 1.8e19 ||
            (!is_signed && v < 0)) {
            return j2p_fail(st, "expected an integer, got %g", v);
        }
        if (is_signed && v >= 9.2e18) {
            return j2p_fail(st, "integer %g out of range", v);
        }
        if (is_signed) {
            *sv = (int64_t)v;
            *uv = (uint64_t)*sv;
        } else {
            *uv = (uint64_t)v;
            *sv = 0;
        }
        return 0;
    }
    if (json_is_string(j)) {
        const char *s = json_string_value(j);
        char *end = NULL;

        errno = 0;
        if (is_signed) {
            *sv = strtoll(s, &end, 10);
            *uv = (uint64_t)*sv;
        } else {
            *uv = strtoull(s, &end, 10);
            *sv = (int64_t)*uv;
        }
        if (*s == '\0' || *end != '\0' || errno != 0 ||
            (!is_signed && (*s == '-' || *s == '+' || *s == ' '))) {
            return j2p_fail(st, "expected an integer, got \"%s\"", s);
        }
        return 0;
    }
    return j2p_fail(st, "expected an integer, got %s", json_kind(j));
}

static int json_double_get(struct j2p *st, const json_t *j, double *out)
{
    if (json_is_number(j)) {
        *out = json_number_value(j);
        return 0;
    }
    if (json_is_string(j)) {
        const char *s = json_string_value(j);
        char *end = NULL;

        if (strcmp(s, "NaN") == 0) {
            *out = NAN;
            return 0;
        }
        if (strcmp(s, "Infinity") == 0 || strcmp(s, "-Infinity") == 0) {
            *out = s[0] == '-' ? -INFINITY : INFINITY;
            return 0;
        }
        errno = 0;
        *out = strtod(s, &end);
        if (*s != '\0' && *end == '\0' && errno == 0) {
            return 0;
        }
        return j2p_fail(st, "expected a number, got \"%s\"", s);
    }
    return j2p_fail(st, "expected a number, got %s", json_kind(j));
}

/* 1 if @s names enum value @name: the full name or the part after the
 * prefix all values share (@cut characters), any case, '-' for '_'. */
static int enum_name_matches(const char *name, size_t cut, const char *s)
{
    const char *n = name;
    size_t i;

    if (strlen(s) != strlen(name)) {
        n = name + cut;
        if (strlen(s) != strlen(n)) {
            return 0;
        }
    }
    for (i = 0; n[i] != '\0'; i++) {
        char c = s[i] == '-' ? '_' : s[i];

        if (toupper((unsigned char)c) != toupper((unsigned char)n[i])) {
            return 0;
        }
    }
    return 1;
}

static int json_enum_get(struct j2p *st,
                         const ProtobufCEnumDescriptor *ed,
                         const json_t *j,
                         int *out)
{
    const char *first;
    const char *s;
    size_t prefix;
    size_t cut = 0;
    size_t i;
    unsigned k;

    if (json_is_integer(j) || json_is_real(j)) {
        int64_t sv = 0;
        uint64_t uv = 0;
        int rv = json_int_get(st, j, 1, &sv, &uv);

        if (rv != 0) {
            return rv;
        }
        if (sv < INT32_MIN || sv > INT32_MAX) {
            return j2p_fail(st, "enum value %lld out of range", (long long)sv);
        }
        *out = (int)sv;
        return 0;
    }
    if (!json_is_string(j)) {
        return j2p_fail(st, "expected a %s name, got %s", ed->name,
                        json_kind(j));
    }
    s = json_string_value(j);
    first = ed->n_values > 0 ? ed->values[0].name : "";
    prefix = strlen(first);
    for (k = 1; k < ed->n_values; k++) {
        const char *name = ed->values[k].name;

        for (i = 0; i < prefix && name[i] == first[i]; i++) {
        }
        prefix = i;
    }
    for (i = 0; i < prefix; i++) {
        if (first[i] == '_') {
            cut = i + 1;
        }
    }
    for (k = 0; k < ed->n_values; k++) {
        if (enum_name_matches(ed->values[k].name, cut, s)) {
            *out = ed->values[k].value;
            return 0;
        }
    }
    return j2p_fail(st, "\"%s\" is not a value of %s", s, ed->name);
}

static int b64_value(int c)
{
    if (c >= 'A' && c <= 'Z') {
        return c - 'A';
    }
    if (c >= 'a' && c <= 'z') {
        return c - 'a' + 26;
    }
    if (c >= '0' && c <= '9') {
        return c - '0' + 52;
    }
    if (c == '+' || c == '-') {
        return 62;
    }
    if (c == '/' || c == '_') {
        return 63;
    }
    return -1;
}

/* Standard or URL-safe base64, padding optional. */
static int
json_bytes_get(struct j2p *st, const json_t *j, ProtobufCBinaryData *out)
{
    const char *s;
    size_t len;
    uint32_t acc = 0;
    int bits = 0;
    size_t i;

    if (!json_is_string(j)) {
        return j2p_fail(st, "expected a base64 string, got %s", json_kind(j));
    }
    s = json_string_value(j);
    len = strlen(s);
    while (len > 0 && s[len - 1] == '=') {
        len--;
    }
    out->len = 0;
    out->data = j2p_alloc(st, len * 3 / 4 + 1);
    if (out->data == NULL) {
        return j2p_nomem(st);
    }
    for (i = 0; i < len; i++) {
        int v = b64_value((unsigned char)s[i]);

        if (v < 0) {
            return j2p_fail(st, "not base64: bad character at offset %zu", i);
        }
        acc = (acc << 6) | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out->data[out->len++] = (uint8_t)(acc >> bits);
        }
    }
    if (len % 4 == 1) {
        return j2p_fail(st, "not base64: bad length");
    }
    return 0;
}

static int message_from_json(struct j2p *st,
                             const ProtobufCMessageDescriptor *d,
                             const json_t *j,
                             ProtobufCMessage *msg);

static int int_store(struct j2p *st,
                     const ProtobufCFieldDescriptor *f,
                     const json_t *j,
                     void *p)
{
    int is_signed =
        f->type == PROTOBUF_C_TYPE_INT32 || f->type == PROTOBUF_C_TYPE_SINT32 ||
        f->type == PROTOBUF_C_TYPE_SFIXED32 ||
        f->type == PROTOBUF_C_TYPE_INT64 || f->type == PROTOBUF_C_TYPE_SINT64 ||
        f->type == PROTOBUF_C_TYPE_SFIXED64;
    int64_t sv = 0;
    uint64_t uv = 0;
    int rv = json_int_get(st, j, is_signed, &sv, &uv);

    if (rv != 0) {
        return rv;
    }
    switch (f->type) {
    case PROTOBUF_C_TYPE_INT32:
    case PROTOBUF_C_TYPE_SINT32:
    case PROTOBUF_C_TYPE_SFIXED32:
        if (sv < INT32_MIN || sv > INT32_MAX) {
            return j2p_fail(st, "%lld does not fit in 32 bits", (long long)sv);
        }
        *(int32_t *)p = (int32_t)sv;
        return 0;
    case PROTOBUF_C_TYPE_UINT32:
    case PROTOBUF_C_TYPE_FIXED32:
        if (uv > UINT32_MAX) {
            return j2p_fail(st, "%llu does not fit in 32 bits",
                            (unsigned long long)uv);
        }
        *(uint32_t *)p = (uint32_t)uv;
        return 0;
    case PROTOBUF_C_TYPE_INT64:
    case PROTOBUF_C_TYPE_SINT64:
    case PROTOBUF_C_TYPE_SFIXED64:
        *(int64_t *)p = sv;
        return 0;
    default:
        *(uint64_t *)p = uv;
        return 0;
    }
}

/* One value of field @f from @j into @p. */
static int value_from_json(struct j2p *st,
                           const ProtobufCFieldDescriptor *f,
                           const json_t *j,
                           void *p)
{
    const ProtobufCMessageDescriptor *md;
    ProtobufCMessage *sub;
    double dv = 0;
    char *s;
    int rv;

    switch (f->type) {
    case PROTOBUF_C_TYPE_INT32:
    case PROTOBUF_C_TYPE_SINT32:
    case PROTOBUF_C_TYPE_SFIXED32:
    case PROTOBUF_C_TYPE_UINT32:
    case PROTOBUF_C_TYPE_FIXED32:
    case PROTOBUF_C_TYPE_INT64:
    case PROTOBUF_C_TYPE_SINT64:
    case PROTOBUF_C_TYPE_SFIXED64:
    case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_FIXED64:
        return int_store(st, f, j, p);
    case PROTOBUF_C_TYPE_FLOAT:
    case PROTOBUF_C_TYPE_DOUBLE:
        rv = json_double_get(st, j, &dv);
        if (rv == 0 && f->type == PROTOBUF_C_TYPE_FLOAT) {
            *(float *)p = (float)dv;
        } else if (rv == 0) {
            *(double *)p = dv;
        }
        return rv;
    case PROTOBUF_C_TYPE_BOOL:
        if (!json_is_boolean(j)) {
            return j2p_fail(st, "expected true or false, got %s", json_kind(j));
        }
        *(protobuf_c_boolean *)p = json_is_true(j);
        return 0;
    case PROTOBUF_C_TYPE_ENUM:
        return json_enum_get(st, f->descriptor, j, (int *)p);
    case PROTOBUF_C_TYPE_STRING:
        if (!json_is_string(j)) {
            return j2p_fail(st, "expected a string, got %s", json_kind(j));
        }
        s = j2p_alloc(st, json_string_length(j) + 1);
        if (s == NULL) {
            return j2p_nomem(st);
        }
        memcpy(s, json_string_value(j), json_string_length(j));
        if (strlen(s) != json_string_length(j)) {
            return j2p_fail(st, "a string with a NUL character");
        }
        *(char **)p = s;
        return 0;
    case PROTOBUF_C_TYPE_BYTES:
        return json_bytes_get(st, j, (ProtobufCBinaryData *)p);
    case PROTOBUF_C_TYPE_MESSAGE:
        md = f->descriptor;
        sub = j2p_alloc(st, md->sizeof_message);
        if (sub == NULL) {
            return j2p_nomem(st);
        }
        rv = message_from_json(st, md, j, sub);
        if (rv == 0) {
            *(ProtobufCMessage **)p = sub;
        }
        return rv;
    }
    return j2p_fail(st, "field type %d not supported", (int)f->type);
}

static int repeated_from_json(struct j2p *st,
                              const ProtobufCFieldDescriptor *f,
                              const json_t *j,
                              char *base)
{
    size_t size = value_size(f->type);
    size_t n;
    size_t i;
    char *arr;

    if (!json_is_array(j)) {
        return j2p_fail(st, "expected an array, got %s", json_kind(j));
    }
    n = json_array_size(j);
    if (n == 0) {
        return 0;
    }
    arr = j2p_alloc(st, n * size);
    if (arr == NULL) {
        return j2p_nomem(st);
    }
    for (i = 0; i < n; i++) {
        const json_t *v = json_array_get(j, i);
        size_t len = path_push_index(st, i);
        int rv;

        if (json_is_null(v)) {
            rv = j2p_fail(st, "null in an array");
        } else {
            rv = value_from_json(st, f, v, arr + i * size);
        }
        if (rv != 0) {
            return rv;
        }
        path_pop(st, len);
    }
    *(size_t *)(base + f->quantifier_offset) = n;
    *(void **)(base + f->offset) = arr;
    return 0;
}

/* The member of @f's oneof already set in @base, or NULL. */
static const ProtobufCFieldDescriptor *
oneof_set(const ProtobufCMessageDescriptor *d,
          const ProtobufCFieldDescriptor *f,
          const char *base)
{
    uint32_t id = *(const uint32_t *)(base + f->quantifier_offset);

    if (id == 0) {
        return NULL;
    }
    return protobuf_c_message_descriptor_get_field(d, id);
}

static int field_from_json(struct j2p *st,
                           const ProtobufCMessageDescriptor *d,
                           const ProtobufCFieldDescriptor *f,
                           const json_t *v,
                           char *base)
{
    int rv;

    if (json_is_null(v)) {
        return 0; /* the default */
    }
    if (f->label == PROTOBUF_C_LABEL_REPEATED) {
        return repeated_from_json(st, f, v, base);
    }
    if (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) {
        const ProtobufCFieldDescriptor *other = oneof_set(d, f, base);

        if (other != NULL) {
            return j2p_fail(st, "only one of \"%s\" and \"%s\" may be set",
                            other->name, f->name);
        }
    }
    rv = value_from_json(st, f, v, base + f->offset);
    if (rv != 0) {
        return rv;
    }
    if (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) {
        *(uint32_t *)(base + f->quantifier_offset) = f->id;
    } else if (f->label == PROTOBUF_C_LABEL_OPTIONAL &&
               f->type != PROTOBUF_C_TYPE_STRING &&
               f->type != PROTOBUF_C_TYPE_MESSAGE) {
        *(protobuf_c_boolean *)(base + f->quantifier_offset) = 1;
    }
    return 0;
}

static int message_from_json(struct j2p *st,
                             const ProtobufCMessageDescriptor *d,
                             const json_t *j,
                             ProtobufCMessage *msg)
{
    const char *key;
    json_t *v;

    protobuf_c_message_init(d, msg);
    if (!json_is_object(j)) {
        return j2p_fail(st, "expected an object (%s), got %s", d->name,
                        json_kind(j));
    }
    json_object_foreach((json_t *)j, key, v)
    {
        const ProtobufCFieldDescriptor *f =
            protobuf_c_message_descriptor_get_field_by_name(d, key);
        size_t len = path_push_name(st, key);
        int rv;

        if (f == NULL) {
            return j2p_fail(st, "unknown field of %s", d->name);
        }
        rv = field_from_json(st, d, f, v, (char *)msg);
        if (rv != 0) {
            return rv;
        }
        path_pop(st, len);
    }
    return 0;
}

int ops_json_to_pb(const json_t *j,
                   const ProtobufCMessageDescriptor *desc,
                   ProtobufCMessage **out,
                   char *err,
                   size_t errlen)
{
    struct j2p st;
    ProtobufCMessage *msg;
    uint8_t *buf;
    size_t len;
    int rv;

    memset(&st, 0, sizeof(st));
    st.err = err;
    st.errlen = errlen;
    snprintf(st.path, sizeof(st.path), "$");
    *out = NULL;
    msg = j2p_alloc(&st, desc->sizeof_message);
    if (msg == NULL) {
        rv = j2p_nomem(&st);
        goto err_free_arena;
    }
    rv = message_from_json(&st, desc, j, msg);
    if (rv != 0) {
        rv = st.nomem ? OPS_NOMEM : rv;
        goto err_free_arena;
    }
    len = protobuf_c_message_get_packed_size(msg);
    buf = malloc(len != 0 ? len : 1);
    if (buf == NULL) {
        rv = j2p_nomem(&st);
        goto err_free_arena;
    }
    protobuf_c_message_pack(msg, buf);
    *out = protobuf_c_message_unpack(desc, NULL, len, buf);
    free(buf);
    if (*out == NULL) {
        rv = j2p_nomem(&st);
        goto err_free_arena;
    }
    j2p_free(&st);
    return 0;

err_free_arena:
    j2p_free(&st);
    return rv;
}
