/* Open311 GeoReport v2 over HTTP/JSON ([public] http_address), with
 * libmicrohttpd:
 *
 *   GET  /open311/v2/services.json
 *   GET  /open311/v2/services/{code}.json
 *   POST /open311/v2/requests.json     (form-urlencoded or JSON)
 *   GET  /open311/v2/requests.json?service_request_id=ID[,ID...]
 *   GET  /open311/v2/requests/{id}.json
 *   POST /open311/v2/requests/{id}/reopen.json
 *   GET  /open311/v2/updates.json?cursor=&max=&service_request_id=
 *
 * Each request becomes a call of this node's own cityops.v1.Public service
 * over loopback gRPC (rpc_call_unary), so that validation, forwarding to the
 * leader and the retry key are exactly those of a gRPC client; the HTTP side
 * only maps fields and status codes. Reads of reports and of the feed are
 * linearizable (a report is readable at once after its creation, through
 * any node); the catalogue is read locally.
 * Writes are retried on UNAVAILABLE only when the client sent an
 * Idempotency-Key (it becomes the retry key: client_id "http-<SHA-256 of
 * the key>", seq 1), so that no report is made twice.
 *
 * Bounds: bodies over 64 KiB get 413 (read and dropped up to 8 MiB, so that
 * a client still sending gets the answer; at once beyond that),
 * at most 64 connections (8 per address), 15 s idle timeout, one thread
 * per connection (a call blocks it for at most its deadline). Errors are
 * Open311's [{"code": HTTP status, "description": "..."}]. The reporter's
 * contact goes into the Create and Reopen calls and never comes back: no
 * reply this file writes has a field for it.
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <microhttpd.h>
#include <openssl/evp.h>

#include "cityops/v1/public.pb-c.h"
#include "proto/clog.h"
#include "node_internal.h"

#define H_BODY_MAX (64 * 1024)
#define H_DISCARD_MAX (8 * 1024 * 1024) /* read and dropped before a 413 */
#define H_CONN_MAX 64
#define H_CONN_PER_IP 8
#define H_TIMEOUT_S 15
#define H_WRITE_MS 10000
#define H_READ_MS 5000
#define H_TRIES 4
#define H_PREFIX "/open311/v2/"
#define H_ID_MAX 64
#define H_MEDIA_MAX 32

struct node_http311 {
    struct MHD_Daemon *d;
    struct rpc_channel *ch;
    int port;
};

/* One HTTP request: its body as it arrives. */
struct h_req {
    char *body;
    size_t len;
    int too_big;
    int answered;
};

/* What a handler produces: a status and a JSON body. */
struct h_out {
    unsigned status;
    json_t *body;
    const char *allow; /* 405: the Allow header */
};

/* --- JSON helpers --- */

static json_t *jstr(const char *s)
{
    json_t *j = json_string(s != NULL ? s : "");

    return j != NULL ? j : json_string("");
}

static void h_error(struct h_out *o, unsigned status, const char *desc)
{
    json_t *e = json_object();

    json_object_set_new(e, "code", json_integer(status));
    json_object_set_new(e, "description", jstr(desc));
    o->status = status;
    o->body = json_array();
    json_array_append_new(o->body, e);
}

static unsigned http_status(grpc_status_code st)
{
    switch (st) {
    case GRPC_STATUS_OK:
        return 200;
    case GRPC_STATUS_INVALID_ARGUMENT:
    case GRPC_STATUS_OUT_OF_RANGE:
        return 400;
    case GRPC_STATUS_NOT_FOUND:
        return 404;
    case GRPC_STATUS_PERMISSION_DENIED:
    case GRPC_STATUS_UNAUTHENTICATED:
        return 403;
    case GRPC_STATUS_ALREADY_EXISTS:
    case GRPC_STATUS_FAILED_PRECONDITION:
    case GRPC_STATUS_ABORTED:
        return 409;
    case GRPC_STATUS_UNAVAILABLE:
    case GRPC_STATUS_DEADLINE_EXCEEDED:
    case GRPC_STATUS_RESOURCE_EXHAUSTED:
        return 503;
    default:
        return 500;
    }
}

/* ISO 8601 in China Standard Time: "2026-01-01T08:00:00+08:00". */
static json_t *jtime(int64_t us)
{
    char buf[40];
    time_t t;
    struct tm tm;

    if (us == 0) {
        return json_null();
    }
    t = (time_t)(us / 1000000 - (us % 1000000 < 0 ? 1 : 0)) + 8 * 3600;
    if (gmtime_r(&t, &tm) == NULL) {
        return json_null();
    }
    strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S+08:00", &tm);
    return json_string(buf);
}

static json_t *status_json(const Cityops__V1__PublicStatus *st)
{
    json_t *o = json_object();
    json_t *urls = json_array();
    int has_pos = !(st->lat == 0.0 && st->long_ == 0.0);

    json_object_set_new(o, "service_request_id", jstr(st->service_request_id));
    json_object_set_new(o, "status", jstr(st->status));
    json_object_set_new(o, "status_notes", jstr(st->status_notes));
    json_object_set_new(o, "service_name", jstr(st->service_name));
    json_object_set_new(o, "service_code", jstr(st->service_code));
    json_object_set_new(o, "description", jstr(st->description));
    json_object_set_new(o, "agency_responsible", jstr(st->agency_responsible));
    json_object_set_new(o, "service_notice", jstr(""));
    json_object_set_new(o, "requested_datetime", jtime(st->requested_datetime));
    json_object_set_new(o, "updated_datetime", jtime(st->updated_datetime));
    json_object_set_new(o, "expected_datetime", jtime(st->expected_datetime));
    json_object_set_new(o, "address", jstr(st->address));
    json_object_set_new(o, "lat", has_pos ? json_real(st->lat) : json_null());
    json_object_set_new(o, "long",
                        has_pos ? json_real(st->long_) : json_null());
    json_object_set_new(o, "media_url", st->n_media_url > 0
                                            ? jstr(st->media_url[0])
                                            : json_null());
    for (size_t i = 0; i < st->n_media_url; i++) {
        json_array_append_new(urls, jstr(st->media_url[i]));
    }
    json_object_set_new(o, "media_urls", urls);
    json_object_set_new(o, "detailed_status", jstr(st->detailed_status));
    json_object_set_new(o, "overdue", json_boolean(st->overdue));
    json_object_set_new(o, "fixed_and_checked",
                        json_boolean(st->fixed_and_checked));
    json_object_set_new(o, "reopenable", json_boolean(st->reopenable));
    json_object_set_new(o, "reopen_count", json_integer(st->reopen_count));
    json_object_set_new(o, "merged_into", jstr(st->merged_into));
    json_object_set_new(o, "jurisdiction_id", jstr(st->jurisdiction_id));
    return o;
}

/* --- the loopback call --- */

static void ctx_retry_key(Cityops__V1__RequestContext *ctx,
                          const char *key,
                          char *client,
                          size_t size)
{
    static const char hex[] = "0123456789abcdef";
    unsigned char md[32];
    unsigned int n = 0;

    if (key == NULL || key[0] == '\0' ||
        EVP_Digest(key, strlen(key), md, &n, EVP_sha256(), NULL) != 1) {
        return;
    }
    snprintf(client, size, "http-");
    for (unsigned i = 0; i < 20 && 5 + 2 * i + 2 < size; i++) {
        client[5 + 2 * i] = hex[md[i] >> 4];
        client[5 + 2 * i + 1] = hex[md[i] & 15];
        client[5 + 2 * i + 2] = '\0';
    }
    ctx->client_id = client;
    ctx->seq = 1;
}

/* Call @path; retry UNAVAILABLE if @retry. On a failure fills @o. */
static int h_call(struct node_http311 *h,
                  const char *path,
                  const ProtobufCMessage *req,
                  const ProtobufCMessageDescriptor *resp_desc,
                  int timeout_ms,
                  int retry,
                  ProtobufCMessage **resp,
                  struct h_out *o)
{
    grpc_status_code st = GRPC_STATUS_UNKNOWN;
    char *details = NULL;
    char msg[512];

    for (int i = 0; i < (retry ? H_TRIES : 1); i++) {
        free(details);
        details = NULL;
        if (i > 0) {
            usleep(250000u * (unsigned)i);
        }
        if (rpc_call_unary(h->ch, path, req, resp_desc, timeout_ms, resp, &st,
                           &details) != 0) {
            h_error(o, 500, "out of memory");
            return -1;
        }
        if (st != GRPC_STATUS_UNAVAILABLE) {
            break;
        }
    }
    if (st == GRPC_STATUS_OK) {
        free(details);
        return 0;
    }
    if (st == GRPC_STATUS_UNAVAILABLE) {
        snprintf(msg, sizeof msg, "service unavailable (no leader?): %s",
                 details != NULL ? details : "");
    } else {
        snprintf(msg, sizeof msg, "%s", details != NULL ? details : "");
    }
    free(details);
    h_error(o, http_status(st), msg);
    return -1;
}

/* Write @req at @path as the public: actor "open311", role PUBLIC, and the
 * retry key of the Idempotency-Key header, if any. @ctx is @req's ctx field:
 * it points at this function's context during the call only. */
static int h_write(struct node_http311 *h,
                   struct MHD_Connection *conn,
                   const char *path,
                   ProtobufCMessage *req,
                   Cityops__V1__RequestContext **ctx,
                   const ProtobufCMessageDescriptor *resp_desc,
                   ProtobufCMessage **resp,
                   struct h_out *o)
{
    Cityops__V1__RequestContext c = CITYOPS__V1__REQUEST_CONTEXT__INIT;
    char client[64];
    int rv;

    c.actor_id = "open311";
    c.role = CITYOPS__V1__ROLE__ROLE_PUBLIC;
    ctx_retry_key(
        &c,
        MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Idempotency-Key"),
        client, sizeof client);
    *ctx = &c;
    rv = h_call(h, path, req, resp_desc, H_WRITE_MS, c.client_id != NULL, resp,
                o);
    *ctx = NULL;
    return rv;
}

/* --- request parsing --- */

/* One field of a POST body, form or JSON, after decoding: strings, and for
 * JSON numbers also their value. */
struct h_field {
    char *key;
    char *val; /* NULL: not a string (JSON number, etc.) */
    int is_num;
    double num;
};

struct h_form {
    struct h_field *f;
    size_t n;
};

static void form_free(struct h_form *fm)
{
    for (size_t i = 0; i < fm->n; i++) {
        free(fm->f[i].key);
        free(fm->f[i].val);
    }
    free(fm->f);
    fm->f = NULL;
    fm->n = 0;
}

static int form_add(struct h_form *fm, const char *key, const char *val,
                    int is_num, double num)
{
    struct h_field *f = realloc(fm->f, (fm->n + 1) * sizeof(*f));

    if (f == NULL) {
        return -1;
    }
    fm->f = f;
    f = &fm->f[fm->n];
    f->key = strdup(key);
    f->val = val != NULL ? strdup(val) : NULL;
    f->is_num = is_num;
    f->num = num;
    if (f->key == NULL || (val != NULL && f->val == NULL)) {
        free(f->key);
        free(f->val);
        return -1;
    }
    fm->n++;
    return 0;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9') {
        return c - '0';
    }
    c = (char)tolower((unsigned char)c);
    return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* Percent-decode [p, p+n) into a new string; NULL on a bad escape or NUL. */
static char *url_decode(const char *p, size_t n)
{
    char *out = malloc(n + 1);
    size_t j = 0;

    if (out == NULL) {
        return NULL;
    }
    for (size_t i = 0; i < n; i++) {
        char c = p[i];

        if (c == '+') {
            c = ' ';
        } else if (c == '%') {
            int hi = i + 2 < n ? hexval(p[i + 1]) : -1;
            int lo = i + 2 < n ? hexval(p[i + 2]) : -1;

            if (hi < 0 || lo < 0) {
                free(out);
                return NULL;
            }
            c = (char)(hi * 16 + lo);
            i += 2;
        }
        if (c == '\0') {
            free(out);
            return NULL;
        }
        out[j++] = c;
    }
    out[j] = '\0';
    return out;
}

static int form_parse(const char *body, size_t len, struct h_form *fm)
{
    size_t i = 0;

    while (i < len) {
        size_t end = i;
        size_t eq;
        char *k;
        char *v;
        int rv;

        while (end < len && body[end] != '&') {
            end++;
        }
        eq = i;
        while (eq < end && body[eq] != '=') {
            eq++;
        }
        if (end > i) {
            k = url_decode(body + i, eq - i);
            v = eq < end ? url_decode(body + eq + 1, end - eq - 1)
                         : strdup("");
            rv = k == NULL || v == NULL ? -1 : form_add(fm, k, v, 0, 0);
            free(k);
            free(v);
            if (rv != 0) {
                return -1;
            }
        }
        i = end + 1;
    }
    return 0;
}

/* JSON object -> fields; arrays of strings repeat their key; arrays of
 * objects under "media" become media_url/media_sha256/media_type. */
static int json_field(struct h_form *fm, const char *key, json_t *v,
                      const char **why)
{
    if (json_is_string(v)) {
        if (memchr(json_string_value(v), '\0', json_string_length(v))) {
            *why = "strings may not hold NUL characters";
            return -1;
        }
        return form_add(fm, key, json_string_value(v), 0, 0);
    }
    if (json_is_number(v)) {
        return form_add(fm, key, NULL, 1, json_number_value(v));
    }
    if (json_is_null(v)) {
        return 0;
    }
    *why = "a field has the wrong type";
    return form_add(fm, key, NULL, 0, 0);
}

static int json_parse(const char *body,
                      size_t len,
                      struct h_form *fm,
                      const char **why)
{
    json_error_t err;
    json_t *root = json_loadb(body, len, JSON_REJECT_DUPLICATES, &err);
    const char *key;
    json_t *v;
    int rv = 0;

    *why = NULL;
    if (root == NULL) {
        *why = "the body is not valid JSON";
        return -1;
    }
    if (!json_is_object(root)) {
        json_decref(root);
        *why = "the body must be a JSON object";
        return -1;
    }
    json_object_foreach(root, key, v)
    {
        if (rv != 0) {
            break;
        }
        if (json_is_array(v)) {
            size_t i;
            json_t *e;

            if (json_array_size(v) > H_MEDIA_MAX + 1) {
                *why = "too many items in an array";
                rv = -1;
                break;
            }
            json_array_foreach(v, i, e)
            {
                if (strcmp(key, "media") == 0 && json_is_object(e)) {
                    json_t *u = json_object_get(e, "url");
                    json_t *h = json_object_get(e, "sha256");
                    json_t *t = json_object_get(e, "media_type");

                    rv = json_field(fm, "media_url", u != NULL ? u : json_null(), why);
                    if (rv == 0) {
                        rv = json_field(fm, "media_sha256",
                                        h != NULL ? h : json_null(), why);
                    }
                    if (rv == 0 && t != NULL) {
                        rv = json_field(fm, "media_type", t, why);
                    }
                } else {
                    rv = json_field(fm, key, e, why);
                }
                if (rv != 0 || *why != NULL) {
                    break;
                }
            }
        } else {
            rv = json_field(fm, key, v, why);
        }
        if (*why != NULL) {
            rv = -1;
        }
    }
    json_decref(root);
    return rv;
}

static const struct h_field *field(const struct h_form *fm, const char *key)
{
    for (size_t i = 0; i < fm->n; i++) {
        if (strcmp(fm->f[i].key, key) == 0) {
            return &fm->f[i];
        }
    }
    return NULL;
}

/* A string field; a JSON number where a string is expected is refused. */
static int field_str(const struct h_form *fm,
                     const char *key,
                     const char **out,
                     struct h_out *o)
{
    const struct h_field *f = field(fm, key);
    char msg[96];

    *out = NULL;
    if (f == NULL) {
        return 0;
    }
    if (f->val == NULL) {
        snprintf(msg, sizeof msg, "%s must be a string", key);
        h_error(o, 400, msg);
        return -1;
    }
    *out = f->val;
    return 0;
}

/* A number field: a JSON number, or in a form the decimal text. */
static int field_num(const struct h_form *fm,
                     const char *key,
                     int form,
                     double *out,
                     int *present,
                     struct h_out *o)
{
    const struct h_field *f = field(fm, key);
    char msg[96];
    char *end;

    *present = 0;
    if (f == NULL || (f->val != NULL && f->val[0] == '\0' && form)) {
        return 0;
    }
    if (f->is_num) {
        *out = f->num;
    } else if (form && f->val != NULL) {
        errno = 0;
        *out = strtod(f->val, &end);
        if (errno != 0 || end == f->val || *end != '\0') {
            snprintf(msg, sizeof msg, "%s must be a number", key);
            h_error(o, 400, msg);
            return -1;
        }
    } else {
        snprintf(msg, sizeof msg, "%s must be a number", key);
        h_error(o, 400, msg);
        return -1;
    }
    if (!isfinite(*out)) {
        snprintf(msg, sizeof msg, "%s must be a finite number", key);
        h_error(o, 400, msg);
        return -1;
    }
    *present = 1;
    return 0;
}

/* The body of a POST as fields: form-urlencoded or JSON, else 415. */
static int body_fields(struct MHD_Connection *conn,
                       const struct h_req *r,
                       struct h_form *fm,
                       int *form,
                       struct h_out *o)
{
    const char *ct = MHD_lookup_connection_value(conn, MHD_HEADER_KIND,
                                                 MHD_HTTP_HEADER_CONTENT_TYPE);
    const char *why = NULL;

    if (ct != NULL &&
        strncasecmp(ct, "application/x-www-form-urlencoded", 33) == 0) {
        *form = 1;
        if (form_parse(r->body != NULL ? r->body : "", r->len, fm) != 0) {
            h_error(o, 400, "the form body does not decode");
            return -1;
        }
        return 0;
    }
    if (ct != NULL && strncasecmp(ct, "application/json", 16) == 0) {
        *form = 0;
        if (json_parse(r->body != NULL ? r->body : "", r->len, fm, &why) !=
            0) {
            h_error(o, 400, why != NULL ? why : "the body does not decode");
            return -1;
        }
        return 0;
    }
    h_error(o, 415,
            "Content-Type must be application/x-www-form-urlencoded or "
            "application/json");
    return -1;
}

static int contact_fill(const struct h_form *fm,
                        Cityops__V1__Contact *c,
                        char *name,
                        size_t size,
                        struct h_out *o)
{
    const char *first = NULL;
    const char *last = NULL;

    if (field_str(fm, "email", (const char **)&c->email, o) != 0 ||
        field_str(fm, "phone", (const char **)&c->phone, o) != 0 ||
        field_str(fm, "device_id", (const char **)&c->device_id, o) != 0 ||
        field_str(fm, "first_name", &first, o) != 0 ||
        field_str(fm, "last_name", &last, o) != 0) {
        return -1;
    }
    snprintf(name, size, "%s%s%s", first != NULL ? first : "",
             first != NULL && last != NULL ? " " : "",
             last != NULL ? last : "");
    c->name = name;
    return 0;
}

static int datum_parse(const char *v, Cityops__V1__Datum *out)
{
    if (v == NULL || v[0] == '\0' || strcasecmp(v, "cgcs2000") == 0) {
        *out = CITYOPS__V1__DATUM__DATUM_CGCS2000;
    } else if (strcasecmp(v, "wgs84") == 0) {
        *out = CITYOPS__V1__DATUM__DATUM_WGS84;
    } else if (strcasecmp(v, "gcj02") == 0) {
        *out = CITYOPS__V1__DATUM__DATUM_GCJ02;
    } else {
        return -1;
    }
    return 0;
}

/* media_url, media_sha256 and media_type repeat in order. */
static int media_fill(const struct h_form *fm,
                      Cityops__V1__Media *media,
                      Cityops__V1__Media **mp,
                      size_t *n,
                      struct h_out *o)
{
    size_t n_url = 0;
    size_t n_sha = 0;
    size_t n_type = 0;

    for (size_t i = 0; i < fm->n; i++) {
        const struct h_field *f = &fm->f[i];
        size_t *k = strcmp(f->key, "media_url") == 0      ? &n_url
                    : strcmp(f->key, "media_sha256") == 0 ? &n_sha
                    : strcmp(f->key, "media_type") == 0   ? &n_type
                                                          : NULL;

        if (k == NULL || (f->val != NULL && f->val[0] == '\0')) {
            continue;
        }
        if (f->val == NULL) {
            h_error(o, 400, "media fields must be strings");
            return -1;
        }
        if (*k >= H_MEDIA_MAX) {
            h_error(o, 400, "at most 32 media per report");
            return -1;
        }
        if (k == &n_url) {
            cityops__v1__media__init(&media[n_url]);
            mp[n_url] = &media[n_url];
            media[n_url].url = f->val;
        } else if (k == &n_sha && n_sha < n_url) {
            media[n_sha].sha256 = f->val;
        } else if (k == &n_type && n_type < n_url) {
            media[n_type].media_type = f->val;
        } else {
            h_error(o, 400, "media_sha256 and media_type follow their "
                            "media_url");
            return -1;
        }
        (*k)++;
    }
    if (n_sha != n_url) {
        h_error(o, 400,
                "each media_url needs its media_sha256 (64 hex digits): "
                "evidence is kept by content hash");
        return -1;
    }
    *n = n_url;
    return 0;
}

static void create_reply(const Cityops__V1__PublicReportReply *rep,
                         struct h_out *o)
{
    json_t *item = status_json(rep->request);
    json_t *dups = json_array();

    for (size_t i = 0; i < rep->n_possible_duplicates; i++) {
        const Cityops__V1__DuplicateHint *d = rep->possible_duplicates[i];
        json_t *j = json_object();

        json_object_set_new(j, "service_request_id",
                            jstr(d->service_request_id));
        json_object_set_new(j, "distance_m", json_real(d->distance_m));
        json_object_set_new(j, "status", jstr(d->status));
        json_array_append_new(dups, j);
    }
    json_object_set_new(item, "possible_duplicates", dups);
    json_object_set_new(item, "token", json_null());
    json_object_set_new(item, "account_id", json_null());
    o->status = 200;
    o->body = json_array();
    json_array_append_new(o->body, item);
}

static void do_create(struct node_http311 *h,
                      struct MHD_Connection *conn,
                      const struct h_req *r,
                      struct h_out *o)
{
    Cityops__V1__PublicReportRequest req =
        CITYOPS__V1__PUBLIC_REPORT_REQUEST__INIT;
    Cityops__V1__Contact contact = CITYOPS__V1__CONTACT__INIT;
    Cityops__V1__Media media[H_MEDIA_MAX];
    Cityops__V1__Media *mp[H_MEDIA_MAX];
    ProtobufCMessage *resp = NULL;
    struct h_form fm = {NULL, 0};
    const char *datum = NULL;
    char name[512];
    int form = 0;
    int has_lat = 0;
    int has_long = 0;

    if (body_fields(conn, r, &fm, &form, o) != 0) {
        goto out;
    }
    if (field_str(&fm, "service_code", (const char **)&req.service_code, o) !=
            0 ||
        field_str(&fm, "address_string", (const char **)&req.address_string,
                  o) != 0 ||
        field_str(&fm, "description", (const char **)&req.description, o) !=
            0 ||
        field_str(&fm, "grid_code", (const char **)&req.grid_code, o) != 0 ||
        field_str(&fm, "datum", &datum, o) != 0 ||
        field_num(&fm, "lat", form, &req.lat, &has_lat, o) != 0 ||
        field_num(&fm, "long", form, &req.long_, &has_long, o) != 0 ||
        contact_fill(&fm, &contact, name, sizeof name, o) != 0 ||
        media_fill(&fm, media, mp, &req.n_media, o) != 0) {
        goto out;
    }
    if (req.service_code == NULL || req.service_code[0] == '\0') {
        h_error(o, 400, "service_code is required");
        goto out;
    }
    if (has_lat != has_long) {
        h_error(o, 400, "lat and long come together");
        goto out;
    }
    if (datum_parse(datum, &req.datum) != 0) {
        h_error(o, 400, "datum must be cgcs2000, wgs84 or gcj02");
        goto out;
    }
    req.media = mp;
    req.contact = &contact;
    if (h_write(h, conn, "/cityops.v1.Public/Create", &req.base, &req.ctx,
                &cityops__v1__public_report_reply__descriptor, &resp, o) != 0) {
        goto out;
    }
    create_reply((const Cityops__V1__PublicReportReply *)resp, o);
    protobuf_c_message_free_unpacked(resp, NULL);
out:
    form_free(&fm);
}

static int id_ok(const char *id, size_t len)
{
    if (len == 0 || len > H_ID_MAX) {
        return 0;
    }
    for (size_t i = 0; i < len; i++) {
        if (!isalnum((unsigned char)id[i]) && id[i] != '-' && id[i] != '_' &&
            id[i] != '.') {
            return 0;
        }
    }
    return 1;
}

static void do_reopen(struct node_http311 *h,
                      struct MHD_Connection *conn,
                      const struct h_req *r,
                      const char *id,
                      struct h_out *o)
{
    Cityops__V1__ReopenRequest req = CITYOPS__V1__REOPEN_REQUEST__INIT;
    Cityops__V1__Contact contact = CITYOPS__V1__CONTACT__INIT;
    ProtobufCMessage *resp = NULL;
    struct h_form fm = {NULL, 0};
    char name[512];
    int form = 0;

    if (body_fields(conn, r, &fm, &form, o) != 0 ||
        field_str(&fm, "reason", (const char **)&req.reason, o) != 0 ||
        contact_fill(&fm, &contact, name, sizeof name, o) != 0) {
        goto out;
    }
    req.service_request_id = (char *)id;
    req.contact = &contact;
    if (h_write(h, conn, "/cityops.v1.Public/Reopen", &req.base, &req.ctx,
                &cityops__v1__public_reply__descriptor, &resp, o) != 0) {
        goto out;
    }
    o->status = 200;
    o->body = json_array();
    json_array_append_new(
        o->body,
        status_json(((const Cityops__V1__PublicReply *)resp)->request));
    protobuf_c_message_free_unpacked(resp, NULL);
out:
    form_free(&fm);
}

/* The status of one report, or NULL with @o filled. */
static json_t *get_one(struct node_http311 *h, const char *id, struct h_out *o)
{
    Cityops__V1__PublicGetRequest req = CITYOPS__V1__PUBLIC_GET_REQUEST__INIT;
    Cityops__V1__ReadOptions ro = CITYOPS__V1__READ_OPTIONS__INIT;
    ProtobufCMessage *resp = NULL;
    json_t *j;

    ro.consistency = CITYOPS__V1__CONSISTENCY__CONSISTENCY_LINEARIZABLE;
    req.read = &ro;
    req.service_request_id = (char *)id;
    if (h_call(h, "/cityops.v1.Public/Get", &req.base,
               &cityops__v1__public_reply__descriptor, H_READ_MS, 1, &resp,
               o) != 0) {
        return NULL;
    }
    j = status_json(((const Cityops__V1__PublicReply *)resp)->request);
    protobuf_c_message_free_unpacked(resp, NULL);
    return j;
}

static void do_get(struct node_http311 *h, const char *id, struct h_out *o)
{
    json_t *j = get_one(h, id, o);

    if (j != NULL) {
        o->status = 200;
        o->body = json_array();
        json_array_append_new(o->body, j);
    }
}

/* GET requests.json?service_request_id=A,B: the ones that exist. */
static void do_get_many(struct node_http311 *h,
                        struct MHD_Connection *conn,
                        struct h_out *o)
{
    const char *ids = MHD_lookup_connection_value(conn, MHD_GET_ARGUMENT_KIND,
                                                  "service_request_id");
    json_t *arr;
    const char *p;
    int n = 0;

    if (ids == NULL || ids[0] == '\0') {
        h_error(o, 400,
                "service_request_id is required (a comma-separated list)");
        return;
    }
    arr = json_array();
    for (p = ids; *p != '\0' && n < 50; n++) {
        size_t len = strcspn(p, ",");
        char id[H_ID_MAX + 1];
        struct h_out one = {0, NULL, NULL};
        json_t *j;

        if (!id_ok(p, len)) {
            json_decref(arr);
            h_error(o, 400, "bad service_request_id");
            return;
        }
        memcpy(id, p, len);
        id[len] = '\0';
        j = get_one(h, id, &one);
        if (j != NULL) {
            json_array_append_new(arr, j);
        } else if (one.status != 404) {
            json_decref(arr);
            *o = one;
            return;
        }
        json_decref(one.body);
        p += len;
        if (*p == ',') {
            p++;
        }
    }
    o->status = 200;
    o->body = arr;
}

static void do_updates(struct node_http311 *h,
                       struct MHD_Connection *conn,
                       struct h_out *o)
{
    Cityops__V1__UpdatesRequest req = CITYOPS__V1__UPDATES_REQUEST__INIT;
    Cityops__V1__ReadOptions ro = CITYOPS__V1__READ_OPTIONS__INIT;
    const char *cursor = MHD_lookup_connection_value(
        conn, MHD_GET_ARGUMENT_KIND, "cursor");
    const char *max = MHD_lookup_connection_value(conn, MHD_GET_ARGUMENT_KIND,
                                                  "max");
    const char *id = MHD_lookup_connection_value(conn, MHD_GET_ARGUMENT_KIND,
                                                 "service_request_id");
    const Cityops__V1__UpdatesResponse *u;
    ProtobufCMessage *resp = NULL;
    json_t *arr;
    char *end;
    unsigned long v = 0;

    if (max != NULL && max[0] != '\0') {
        errno = 0;
        v = strtoul(max, &end, 10);
        if (errno != 0 || *end != '\0' || max[0] == '-' || v > 1000) {
            h_error(o, 400, "max must be a number from 0 to 1000");
            return;
        }
    }
    if (id != NULL && id[0] != '\0' && !id_ok(id, strlen(id))) {
        h_error(o, 400, "bad service_request_id");
        return;
    }
    ro.consistency = CITYOPS__V1__CONSISTENCY__CONSISTENCY_LINEARIZABLE;
    req.read = &ro;
    req.cursor = (char *)(cursor != NULL ? cursor : "");
    req.max = (uint32_t)v;
    req.service_request_id = (char *)(id != NULL ? id : "");
    if (h_call(h, "/cityops.v1.Public/Updates", &req.base,
               &cityops__v1__updates_response__descriptor, H_READ_MS, 1,
               &resp, o) != 0) {
        return;
    }
    u = (const Cityops__V1__UpdatesResponse *)resp;
    arr = json_array();
    for (size_t i = 0; i < u->n_updates; i++) {
        const Cityops__V1__PublicUpdate *p = u->updates[i];
        json_t *j = json_object();

        json_object_set_new(j, "service_request_id",
                            jstr(p->service_request_id));
        json_object_set_new(j, "updated_datetime", jtime(p->at));
        json_object_set_new(j, "status", jstr(p->status));
        json_object_set_new(j, "detailed_status", jstr(p->detailed_status));
        json_object_set_new(j, "status_notes", jstr(p->note));
        json_array_append_new(arr, j);
    }
    o->status = 200;
    o->body = json_object();
    json_object_set_new(o->body, "updates", arr);
    json_object_set_new(o->body, "next_cursor", jstr(u->next_cursor));
    protobuf_c_message_free_unpacked(resp, NULL);
}

/* Services; @code: one service's definition (404 if unknown). */
static void do_services(struct node_http311 *h,
                        const char *code,
                        struct h_out *o)
{
    Cityops__V1__ServicesRequest req = CITYOPS__V1__SERVICES_REQUEST__INIT;
    const Cityops__V1__ServicesResponse *sr;
    ProtobufCMessage *resp = NULL;
    json_t *arr;

    if (h_call(h, "/cityops.v1.Public/Services", &req.base,
               &cityops__v1__services_response__descriptor, H_READ_MS, 1,
               &resp, o) != 0) {
        return;
    }
    sr = (const Cityops__V1__ServicesResponse *)resp;
    arr = json_array();
    for (size_t i = 0; i < sr->n_services; i++) {
        const Cityops__V1__Service *s = sr->services[i];
        json_t *j;

        if (code != NULL && strcmp(code, s->service_code) != 0) {
            continue;
        }
        j = json_object();
        json_object_set_new(j, "service_code", jstr(s->service_code));
        if (code != NULL) {
            json_object_set_new(j, "attributes", json_array());
        } else {
            json_object_set_new(j, "service_name", jstr(s->service_name));
            json_object_set_new(j, "description", jstr(s->description));
            json_object_set_new(j, "metadata", json_boolean(s->metadata));
            json_object_set_new(j, "type", jstr(s->type));
            json_object_set_new(j, "keywords", jstr(""));
            json_object_set_new(j, "group", jstr(s->group));
        }
        json_array_append_new(arr, j);
    }
    protobuf_c_message_free_unpacked(resp, NULL);
    if (code != NULL && json_array_size(arr) == 0) {
        json_decref(arr);
        h_error(o, 404, "unknown service_code");
        return;
    }
    o->status = 200;
    o->body = code != NULL ? json_incref(json_array_get(arr, 0)) : arr;
    if (code != NULL) {
        json_decref(arr);
    }
}

/* --- routing --- */

/* "a/b/c.json" split at '/': up to 4 segments, ".json" cut off the last. */
struct h_path {
    char seg[4][H_ID_MAX + 8];
    int n;
};

static int path_split(const char *url, struct h_path *p)
{
    const char *s = url + strlen(H_PREFIX);
    size_t len;
    char *dot;

    memset(p, 0, sizeof(*p));
    while (*s != '\0') {
        len = strcspn(s, "/");
        if (p->n == 4 || len == 0 || len >= sizeof(p->seg[0])) {
            return -1;
        }
        memcpy(p->seg[p->n], s, len);
        p->n++;
        s += len;
        if (*s == '/') {
            s++;
            if (*s == '\0') {
                return -1;
            }
        }
    }
    if (p->n == 0) {
        return -1;
    }
    dot = strrchr(p->seg[p->n - 1], '.');
    if (dot == NULL || strcmp(dot, ".json") != 0) {
        return -1;
    }
    *dot = '\0';
    return 0;
}

static int method_is(const char *m, const char *want)
{
    return strcmp(m, want) == 0;
}

static void route(struct node_http311 *h,
                  struct MHD_Connection *conn,
                  const char *url,
                  const char *method,
                  const struct h_req *r,
                  struct h_out *o)
{
    struct h_path p;
    int get = method_is(method, "GET");
    int post = method_is(method, "POST");

    if (strncmp(url, H_PREFIX, strlen(H_PREFIX)) != 0 ||
        path_split(url, &p) != 0) {
        h_error(o, 404, "no such resource; see /open311/v2/services.json");
        return;
    }
#define WRONG_METHOD(allowed)                                                  \
    do {                                                                       \
        o->allow = allowed;                                                    \
        h_error(o, 405, "method not allowed; use " allowed);                   \
        return;                                                                \
    } while (0)
    if (p.n == 1 && strcmp(p.seg[0], "services") == 0) {
        if (!get) {
            WRONG_METHOD("GET");
        }
        do_services(h, NULL, o);
    } else if (p.n == 2 && strcmp(p.seg[0], "services") == 0) {
        if (!get) {
            WRONG_METHOD("GET");
        }
        do_services(h, p.seg[1], o);
    } else if (p.n == 1 && strcmp(p.seg[0], "requests") == 0) {
        if (post) {
            do_create(h, conn, r, o);
        } else if (get) {
            do_get_many(h, conn, o);
        } else {
            WRONG_METHOD("GET, POST");
        }
    } else if (p.n == 2 && strcmp(p.seg[0], "requests") == 0) {
        if (!get) {
            WRONG_METHOD("GET");
        }
        if (!id_ok(p.seg[1], strlen(p.seg[1]))) {
            h_error(o, 404, "no such request");
            return;
        }
        do_get(h, p.seg[1], o);
    } else if (p.n == 3 && strcmp(p.seg[0], "requests") == 0 &&
               strcmp(p.seg[2], "reopen") == 0) {
        if (!post) {
            WRONG_METHOD("POST");
        }
        if (!id_ok(p.seg[1], strlen(p.seg[1]))) {
            h_error(o, 404, "no such request");
            return;
        }
        do_reopen(h, conn, r, p.seg[1], o);
    } else if (p.n == 1 && strcmp(p.seg[0], "updates") == 0) {
        if (!get) {
            WRONG_METHOD("GET");
        }
        do_updates(h, conn, o);
    } else {
        h_error(o, 404, "no such resource; see /open311/v2/services.json");
    }
#undef WRONG_METHOD
}

static enum MHD_Result send_out(struct MHD_Connection *conn, struct h_out *o)
{
    char *text = json_dumps(o->body, JSON_COMPACT);
    struct MHD_Response *resp;
    enum MHD_Result ret;

    json_decref(o->body);
    o->body = NULL;
    if (text == NULL) {
        text = strdup("[{\"code\":500,\"description\":\"out of memory\"}]");
        o->status = 500;
        if (text == NULL) {
            return MHD_NO;
        }
    }
    resp = MHD_create_response_from_buffer(strlen(text), text,
                                           MHD_RESPMEM_MUST_FREE);
    if (resp == NULL) {
        free(text);
        return MHD_NO;
    }
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE,
                            "application/json; charset=utf-8");
    MHD_add_response_header(resp, "Cache-Control", "no-store");
    if (o->allow != NULL) {
        MHD_add_response_header(resp, MHD_HTTP_HEADER_ALLOW, o->allow);
    }
    ret = MHD_queue_response(conn, o->status, resp);
    MHD_destroy_response(resp);
    return ret;
}

static enum MHD_Result on_request(void *cls,
                                  struct MHD_Connection *conn,
                                  const char *url,
                                  const char *method,
                                  const char *version,
                                  const char *upload_data,
                                  size_t *upload_data_size,
                                  void **con_cls)
{
    struct node_http311 *h = cls;
    struct h_req *r = *con_cls;
    struct h_out o = {0, NULL, NULL};
    const char *cl;

    (void)version;
    if (r == NULL) {
        r = calloc(1, sizeof(*r));
        if (r == NULL) {
            return MHD_NO;
        }
        *con_cls = r;
        cl = MHD_lookup_connection_value(conn, MHD_HEADER_KIND,
                                         MHD_HTTP_HEADER_CONTENT_LENGTH);
        if (cl != NULL && strtoull(cl, NULL, 10) > H_DISCARD_MAX) {
            r->answered = 1;
            h_error(&o, 413, "the body is larger than 64 KiB");
            return send_out(conn, &o);
        }
        return MHD_YES;
    }
    if (*upload_data_size > 0) {
        if (!r->answered && !r->too_big) {
            if (r->len + *upload_data_size > H_BODY_MAX) {
                r->too_big = 1;
                free(r->body);
                r->body = NULL;
                r->len = 0;
            } else {
                char *b = realloc(r->body, r->len + *upload_data_size + 1);

                if (b == NULL) {
                    return MHD_NO;
                }
                memcpy(b + r->len, upload_data, *upload_data_size);
                r->body = b;
                r->len += *upload_data_size;
                r->body[r->len] = '\0';
            }
        }
        *upload_data_size = 0;
        return MHD_YES;
    }
    if (r->answered) {
        return MHD_YES;
    }
    r->answered = 1;
    if (r->too_big) {
        h_error(&o, 413, "the body is larger than 64 KiB");
    } else {
        route(h, conn, url, method, r, &o);
    }
    return send_out(conn, &o);
}

static void on_completed(void *cls,
                         struct MHD_Connection *conn,
                         void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    struct h_req *r = *con_cls;

    (void)cls;
    (void)conn;
    (void)toe;
    if (r != NULL) {
        free(r->body);
        free(r);
        *con_cls = NULL;
    }
}

/* "host:port" (IPv4) into @sa. */
static int addr_parse(const char *addr, struct sockaddr_in *sa)
{
    char host[64];
    const char *colon = strrchr(addr, ':');
    char *end;
    unsigned long port;

    if (colon == NULL || (size_t)(colon - addr) >= sizeof host) {
        return -1;
    }
    memcpy(host, addr, (size_t)(colon - addr));
    host[colon - addr] = '\0';
    errno = 0;
    port = strtoul(colon + 1, &end, 10);
    if (errno != 0 || *end != '\0' || colon[1] == '\0' || port > 65535) {
        return -1;
    }
    memset(sa, 0, sizeof(*sa));
    sa->sin_family = AF_INET;
    sa->sin_port = htons((uint16_t)port);
    if (host[0] == '\0') {
        sa->sin_addr.s_addr = htonl(INADDR_ANY);
        return 0;
    }
    return inet_pton(AF_INET, host, &sa->sin_addr) == 1 ? 0 : -1;
}

/* The gRPC address to reach this node from itself. */
static void loopback_target(const char *grpc_address,
                            int grpc_port,
                            char *buf,
                            size_t size)
{
    struct sockaddr_in sa;

    if (addr_parse(grpc_address, &sa) == 0 &&
        sa.sin_addr.s_addr != htonl(INADDR_ANY)) {
        char host[INET_ADDRSTRLEN];

        inet_ntop(AF_INET, &sa.sin_addr, host, sizeof host);
        snprintf(buf, size, "%s:%d", host, grpc_port);
        return;
    }
    snprintf(buf, size, "127.0.0.1:%d", grpc_port);
}

int node_http311_start(struct node *n,
                       int grpc_port,
                       struct node_http311 **out)
{
    struct node_http311 *h;
    struct sockaddr_in sa;
    const union MHD_DaemonInfo *info;
    char target[NODE_ADDRESS_SIZE + 16];

    *out = NULL;
    if (n->cfg.public_http_address[0] == '\0') {
        return 0;
    }
    if (addr_parse(n->cfg.public_http_address, &sa) != 0) {
        clog(CLOG_ERROR, "http311",
             "[public] http_address \"%s\" is not an IPv4 host:port",
             n->cfg.public_http_address);
        return NODE_START;
    }
    h = calloc(1, sizeof *h);
    if (h == NULL) {
        return NODE_NOMEM;
    }
    loopback_target(n->cfg.grpc_address, grpc_port, target, sizeof target);
    h->ch = rpc_channel_open(target);
    if (h->ch == NULL) {
        free(h);
        return NODE_NOMEM;
    }
    h->d = MHD_start_daemon(
        MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD |
            MHD_USE_POLL,
        0, NULL, NULL, on_request, h, MHD_OPTION_SOCK_ADDR,
        (struct sockaddr *)&sa, MHD_OPTION_CONNECTION_LIMIT,
        (unsigned)H_CONN_MAX, MHD_OPTION_PER_IP_CONNECTION_LIMIT,
        (unsigned)H_CONN_PER_IP, MHD_OPTION_CONNECTION_TIMEOUT,
        (unsigned)H_TIMEOUT_S, MHD_OPTION_NOTIFY_COMPLETED, on_completed,
        NULL, MHD_OPTION_END);
    if (h->d == NULL) {
        clog(CLOG_ERROR, "http311", "cannot listen on %s: %s",
             n->cfg.public_http_address, strerror(errno));
        rpc_channel_close(h->ch);
        free(h);
        return NODE_START;
    }
    info = MHD_get_daemon_info(h->d, MHD_DAEMON_INFO_BIND_PORT);
    h->port = info != NULL ? info->port : ntohs(sa.sin_port);
    clog(CLOG_INFO, "http311", "Open311 on %s (port %d), calls %s",
         n->cfg.public_http_address, h->port, target);
    *out = h;
    return 0;
}

void node_http311_stop(struct node_http311 *h)
{
    if (h == NULL) {
        return;
    }
    MHD_stop_daemon(h->d);
    rpc_channel_close(h->ch);
    free(h);
}
