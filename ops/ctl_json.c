/* A generic protobuf-c message to JSON converter for cityctl --json.
 *
 * Walks ProtobufCMessageDescriptor, so new fields in the .proto files show up
 * without touching this file. The mapping is close to proto3's JSON form but
 * keeps proto field names and prints every field, defaults included, so that
 * scripts can rely on a key being there: enums are their value names,
 * 64-bit integers are numbers (strings above INT64_MAX, which jansson can't
 * hold), bytes are base64, absent sub-messages are null, and oneof members
 * or proto3 optionals that are not set are left out.
 */
#include <inttypes.h>
#include <math.h>
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
