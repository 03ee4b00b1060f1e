/* cityctl's human output: times, enum names, aligned tables, case blocks.
 *
 * Times on the wire are UTC microseconds stamped by the leader; operators
 * read them in China Standard Time, so they print as RFC3339 with a fixed
 * +08:00 offset whatever TZ says (the cities have no daylight saving time).
 * Column widths count display cells, with CJK characters two wide, so that
 * tables holding Chinese reasons and addresses stay aligned.
 */
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ops.h"

#define CST_OFFSET_S (8 * 3600)
#define TABLE_MAX_COLS 16

void ops_time_format(int64_t us, char *buf, size_t len)
{
    time_t t;
    struct tm tm;

    if (us == 0) {
        snprintf(buf, len, "-");
        return;
    }
    /* Floor division: times before 1970 are not expected, but stay sane. */
    t = (time_t)(us / 1000000 - (us % 1000000 < 0 ? 1 : 0)) + CST_OFFSET_S;
    if (gmtime_r(&t, &tm) == NULL) {
        snprintf(buf, len, "?%lld", (long long)us);
        return;
    }
    if (strftime(buf, len, "%Y-%m-%dT%H:%M:%S+08:00", &tm) == 0 && len > 0) {
        buf[0] = '\0';
    }
}

static int digits(const char **p, int n, int *out)
{
    int v = 0;
    int i;

    for (i = 0; i < n; i++) {
        if ((*p)[i] < '0' || (*p)[i] > '9') {
            return OPS_INVALID;
        }
        v = v * 10 + ((*p)[i] - '0');
    }
    *p += n;
    *out = v;
    return 0;
}

static int expect(const char **p, char c)
{
    if (**p != c) {
        return OPS_INVALID;
    }
    (*p)++;
    return 0;
}

/* The optional ".ffffff" and offset after the seconds. */
static int time_tail(const char **p, int64_t *frac_us, int *offset_s)
{
    int64_t scale = 100000;
    int oh;
    int om;
    int sign;

    *frac_us = 0;
    if (**p == '.') {
        (*p)++;
        if (**p < '0' || **p > '9') {
            return OPS_INVALID;
        }
        while (**p >= '0' && **p <= '9') {
            *frac_us += (**p - '0') * scale;
            scale /= 10;
            (*p)++;
        }
    }
    *offset_s = CST_OFFSET_S;
    if (**p == 'Z' || **p == 'z') {
        *offset_s = 0;
        (*p)++;
    } else if (**p == '+' || **p == '-') {
        sign = **p == '-' ? -1 : 1;
        (*p)++;
        if (digits(p, 2, &oh) || expect(p, ':') || digits(p, 2, &om) ||
            oh > 23 || om > 59) {
            return OPS_INVALID;
        }
        *offset_s = sign * (oh * 3600 + om * 60);
    }
    return 0;
}

int ops_time_parse(const char *s, int64_t *us)
{
    const char *p = s;
    struct tm tm;
    int64_t frac_us = 0;
    int offset_s = CST_OFFSET_S;
    time_t t;

    memset(&tm, 0, sizeof(tm));
    if (digits(&p, 4, &tm.tm_year) || expect(&p, '-') ||
        digits(&p, 2, &tm.tm_mon) || expect(&p, '-') ||
        digits(&p, 2, &tm.tm_mday)) {
        return OPS_INVALID;
    }
    if (*p == 'T' || *p == 't' || *p == ' ') {
        p++;
        if (digits(&p, 2, &tm.tm_hour) || expect(&p, ':') ||
            digits(&p, 2, &tm.tm_min) || expect(&p, ':') ||
            digits(&p, 2, &tm.tm_sec) || time_tail(&p, &frac_us, &offset_s)) {
            return OPS_INVALID;
        }
    }
    if (*p != '\0' || tm.tm_mon < 1 || tm.tm_mon > 12 || tm.tm_mday < 1 ||
        tm.tm_mday > 31 || tm.tm_hour > 23 || tm.tm_min > 59 ||
        tm.tm_sec > 60) {
        return OPS_INVALID;
    }
    tm.tm_year -= 1900;
    tm.tm_mon -= 1;
    {
        int mday = tm.tm_mday;

        t = timegm(&tm);
        if (tm.tm_mday != mday) { /* 2026-02-30 normalised to March */
            return OPS_INVALID;
        }
    }
    *us = ((int64_t)t - offset_s) * 1000000 + frac_us;
    return 0;
}

const char *ops_enum_short(const ProtobufCEnumDescriptor *desc, int value)
{
    /* A few buffers, so two unknown values can share one printf. */
    static char unknown[4][24];
    static unsigned next;
    const ProtobufCEnumValue *ev;
    const char *first;
    size_t prefix;
    size_t cut = 0;
    size_t i;
    unsigned k;

    ev = protobuf_c_enum_descriptor_get_value(desc, value);
    if (ev == NULL) {
        char *buf = unknown[next++ % 4];

        snprintf(buf, sizeof(unknown[0]), "?%d", value);
        return buf;
    }
    /* The prefix every value shares, up to its last '_'. */
    first = desc->values[0].name;
    prefix = strlen(first);
    for (k = 1; k < desc->n_values; k++) {
        const char *name = desc->values[k].name;

        for (i = 0; i < prefix && name[i] == first[i]; i++) {
        }
        prefix = i;
    }
    for (i = 0; i < prefix; i++) {
        if (first[i] == '_') {
            cut = i + 1;
        }
    }
    if (ev->name[cut] == '\0') {
        return ev->name;
    }
    return ev->name + cut;
}

/* --- tables --- */

struct ops_table {
    int n_cols;
    char **cells; /* n_rows * n_cols; row 0 is the header */
    size_t n_rows;
    size_t cap;
};

/* Display width of UTF-8 @s: CJK and full-width forms take two cells. */
static size_t display_width(const char *s)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t w = 0;

    while (*p != '\0') {
        unsigned cp;
        int n;

        if (*p < 0x80) {
            cp = *p;
            n = 1;
        } else if ((*p & 0xe0) == 0xc0) {
            cp = *p & 0x1f;
            n = 2;
        } else if ((*p & 0xf0) == 0xe0) {
            cp = *p & 0x0f;
            n = 3;
        } else {
            cp = *p & 0x07;
            n = 4;
        }
        p++;
        for (int i = 1; i < n && (*p & 0xc0) == 0x80; i++, p++) {
            cp = (cp << 6) | (*p & 0x3f);
        }
        if ((cp >= 0x1100 && cp <= 0x115f) || (cp >= 0x2e80 && cp <= 0xa4cf) ||
            (cp >= 0xac00 && cp <= 0xd7a3) || (cp >= 0xf900 && cp <= 0xfaff) ||
            (cp >= 0xfe30 && cp <= 0xfe4f) || (cp >= 0xff00 && cp <= 0xff60) ||
            (cp >= 0xffe0 && cp <= 0xffe6) || cp >= 0x20000) {
            w += 2;
        } else {
            w += 1;
        }
    }
    return w;
}

struct ops_table *ops_table_new(int n_cols, const char *const *headers)
{
    struct ops_table *t;

    if (n_cols < 1 || n_cols > TABLE_MAX_COLS) {
        return NULL;
    }
    t = calloc(1, sizeof(*t));
    if (t == NULL) {
        return NULL;
    }
    t->n_cols = n_cols;
    if (ops_table_add(t, headers) != 0) {
        ops_table_free(t);
        return NULL;
    }
    return t;
}

int ops_table_add(struct ops_table *t, const char *const *cells)
{
    size_t base;
    int i;

    if (t->n_rows == t->cap) {
        size_t cap = t->cap == 0 ? 16 : t->cap * 2;
        char **grown =
            realloc(t->cells, cap * (size_t)t->n_cols * sizeof(*grown));

        if (grown == NULL) {
            return OPS_NOMEM;
        }
        t->cells = grown;
        t->cap = cap;
    }
    base = t->n_rows * (size_t)t->n_cols;
    for (i = 0; i < t->n_cols; i++) {
        t->cells[base + (size_t)i] = strdup(cells[i] != NULL ? cells[i] : "");
        if (t->cells[base + (size_t)i] == NULL) {
            goto err_free_row;
        }
    }
    t->n_rows++;
    return 0;

err_free_row:
    while (i-- > 0) {
        free(t->cells[base + (size_t)i]);
    }
    return OPS_NOMEM;
}

void ops_table_print(const struct ops_table *t, FILE *out)
{
    size_t width[TABLE_MAX_COLS] = {0};
    size_t r;
    int c;

    for (r = 0; r < t->n_rows; r++) {
        for (c = 0; c < t->n_cols; c++) {
            size_t w = display_width(t->cells[r * (size_t)t->n_cols + c]);

            if (w > width[c]) {
                width[c] = w;
            }
        }
    }
    for (r = 0; r < t->n_rows; r++) {
        for (c = 0; c < t->n_cols; c++) {
            const char *cell = t->cells[r * (size_t)t->n_cols + c];

            fputs(cell, out);
            if (c + 1 < t->n_cols) {
                size_t pad = width[c] - display_width(cell) + 2;

                fprintf(out, "%*s", (int)pad, "");
            }
        }
        fputc('\n', out);
    }
}

void ops_table_free(struct ops_table *t)
{
    size_t i;

    if (t == NULL) {
        return;
    }
    for (i = 0; i < t->n_rows * (size_t)t->n_cols; i++) {
        free(t->cells[i]);
    }
    free(t->cells);
    free(t);
}

/* --- cases --- */

static void kv(const char *key, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void kv(const char *key, const char *fmt, ...)
{
    va_list ap;

    printf("%-16s", key);
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    putchar('\n');
}

static const char *state_name(int state)
{
    return ops_enum_short(&cityops__v1__case_state__descriptor, state);
}

static void kv_time(const char *key, int64_t us)
{
    char buf[40];

    if (us == 0) {
        return;
    }
    ops_time_format(us, buf, sizeof(buf));
    kv(key, "%s", buf);
}

static void print_case_where(const Cityops__V1__Case *c)
{
    const Cityops__V1__Location *l = c->location;

    if (l == NULL) {
        return;
    }
    if (l->lon != 0 || l->lat != 0) {
        if (l->datum > CITYOPS__V1__DATUM__DATUM_CGCS2000) {
            kv("location", "%.6f, %.6f (CGCS2000; sent %s %.6f, %.6f)", l->lon,
               l->lat,
               ops_enum_short(&cityops__v1__datum__descriptor, l->datum),
               l->orig_lon, l->orig_lat);
        } else {
            kv("location", "%.6f, %.6f (CGCS2000)", l->lon, l->lat);
        }
    }
    if (l->grid_code != NULL && *l->grid_code != '\0') {
        kv("grid", "%s", l->grid_code);
    }
    if (l->address != NULL && *l->address != '\0') {
        kv("address", "%s", l->address);
    }
}

static void print_case_attachments(const Cityops__V1__Case *c)
{
    size_t i;

    for (i = 0; i < c->n_attachments; i++) {
        const Cityops__V1__Attachment *at = c->attachments[i];

        kv(i == 0 ? "attachments" : "", "%-8s %.12s… %s",
           ops_enum_short(&cityops__v1__attachment_stage__descriptor,
                          at->stage),
           at->sha256, at->uri);
    }
}

static void print_case_times(const Cityops__V1__Case *c)
{
    const Cityops__V1__CaseTimes *t = c->times;

    if (t == NULL) {
        return;
    }
    kv_time("reported", t->reported);
    kv_time("accepted", t->accepted);
    kv_time("registered", t->registered);
    kv_time("dispatched", t->dispatched);
    kv_time("acknowledged", t->acknowledged);
    kv_time("disposed", t->disposed);
    kv_time("checked", t->checked);
    kv_time("closed", t->closed);
    kv_time("updated", t->updated);
}

/* One line per stage clock: started -> deadline, done or open, late. */
static void print_case_clocks(const Cityops__V1__Case *c)
{
    for (size_t i = 0; i < c->n_clocks; i++) {
        const Cityops__V1__StageClock *k = c->clocks[i];
        char start[40];
        char due[40];
        char done[40];

        ops_time_format(k->started, start, sizeof(start));
        ops_time_format(k->deadline, due, sizeof(due));
        ops_time_format(k->done, done, sizeof(done));
        kv(i == 0 ? "stage clocks" : "", "%-8s from %s due %s, %s%s%s",
           ops_enum_short(&cityops__v1__stage__descriptor, k->stage), start,
           k->deadline != 0 ? due : "(no limit)",
           k->done != 0 ? "done " : "open",
           k->done != 0 ? done : "",
           k->overdue ? " OVERDUE" : k->paused_at != 0 ? " paused" : "");
    }
    if (c->supervision_level > 0) {
        kv("supervision", "level %u", c->supervision_level);
    }
    if (c->reopen_count > 0) {
        kv("reopened", "%u times", c->reopen_count);
    }
    if (c->config_version > 0) {
        kv("rules", "configuration version %llu",
           (unsigned long long)c->config_version);
    }
}

static void print_case_flow(const Cityops__V1__Case *c)
{
    char buf[40];

    if (*c->department_id != '\0') {
        kv("department", "%s (%s)", c->department_id,
           ops_enum_short(&cityops__v1__dispatch_level__descriptor,
                          c->dispatch_level));
    }
    if (*c->previous_department_id != '\0') {
        kv("previous dept", "%s", c->previous_department_id);
    }
    kv_time("deadline", c->disposal_deadline);
    if (c->extension_pending) {
        ops_time_format(c->extension_requested_until, buf, sizeof(buf));
        kv("extension", "pending, until %s", buf);
    }
    if (*c->disposer_id != '\0') {
        kv("disposer", "%s", c->disposer_id);
    }
    if (*c->checker_id != '\0') {
        kv("check", "%s by %s", c->check_passed ? "passed" : "failed",
           c->checker_id);
    }
    if (c->closure_type !=
        CITYOPS__V1__CLOSURE_TYPE__CLOSURE_TYPE_UNSPECIFIED) {
        kv("closure", "%s",
           ops_enum_short(&cityops__v1__closure_type__descriptor,
                          c->closure_type));
    }
    if (c->shelved_from != CITYOPS__V1__CASE_STATE__CASE_STATE_UNSPECIFIED) {
        kv("shelved from", "%s", state_name(c->shelved_from));
    }
    if (c->merged_into != 0) {
        kv("merged into", "%llu", (unsigned long long)c->merged_into);
    }
    for (size_t i = 0; i < c->n_merged_from; i++) {
        kv(i == 0 ? "merged from" : "", "%llu",
           (unsigned long long)c->merged_from[i]);
    }
    print_case_clocks(c);
}

void ops_print_case(const Cityops__V1__Case *c, uint64_t applied_index)
{
    const Cityops__V1__CaseCounters *n = c->counters;

    kv("case", "%llu", (unsigned long long)c->case_id);
    kv("tracking no", "%s", c->tracking_no);
    kv("state", "%s", state_name(c->state));
    kv("source", "%s",
       ops_enum_short(&cityops__v1__case_source__descriptor, c->source));
    kv("category", "%s %s/%s",
       ops_enum_short(&cityops__v1__category_type__descriptor,
                      c->category_type),
       c->major_code, c->minor_code);
    if (*c->component_id != '\0') {
        kv("component", "%s", c->component_id);
    }
    if (*c->condition != '\0') {
        kv("condition", "%s", c->condition);
    }
    kv("description", "%s", c->description);
    print_case_where(c);
    if (*c->reporter_id != '\0') {
        kv("reporter", "%s", c->reporter_id);
    }
    print_case_flow(c);
    print_case_times(c);
    if (n != NULL) {
        kv("counters", "rework %u, redispatch %u, returns %u, extensions %u",
           n->rework, n->redispatch, n->returns, n->extensions);
    }
    print_case_attachments(c);
    kv("events", "%u", c->event_count);
    kv("last index", "%llu", (unsigned long long)c->last_index);
    if (applied_index != 0) {
        kv("applied index", "%llu", (unsigned long long)applied_index);
    }
}

struct ops_table *ops_case_table_new(void)
{
    static const char *const headers[] = {
        "ID",   "TRACKING NO", "STATE",    "CATEGORY",
        "DEPT", "REPORTED",    "DEADLINE", "DESCRIPTION",
    };

    return ops_table_new(8, headers);
}

/* @s cut to at most @max code points, "…" appended when cut. */
static void utf8_truncate(const char *s, size_t max, char *buf, size_t len)
{
    size_t cps = 0;
    size_t i;

    for (i = 0; s[i] != '\0'; i++) {
        if (((unsigned char)s[i] & 0xc0) != 0x80) {
            if (cps == max) {
                break;
            }
            cps++;
        }
    }
    if (s[i] == '\0') {
        snprintf(buf, len, "%s", s);
    } else {
        snprintf(buf, len, "%.*s…", (int)i, s);
    }
}

int ops_case_table_add(struct ops_table *t, const Cityops__V1__Case *c)
{
    char id[24];
    char category[64];
    char reported[40];
    char deadline[40];
    char desc[160];
    const char *cells[8];

    snprintf(id, sizeof(id), "%llu", (unsigned long long)c->case_id);
    snprintf(category, sizeof(category), "%s %s/%s",
             ops_enum_short(&cityops__v1__category_type__descriptor,
                            c->category_type),
             c->major_code, c->minor_code);
    ops_time_format(c->times != NULL ? c->times->reported : 0, reported,
                    sizeof(reported));
    ops_time_format(c->disposal_deadline, deadline, sizeof(deadline));
    utf8_truncate(c->description, 24, desc, sizeof(desc));
    cells[0] = id;
    cells[1] = c->tracking_no;
    cells[2] = state_name(c->state);
    cells[3] = category;
    cells[4] = *c->department_id != '\0' ? c->department_id : "-";
    cells[5] = reported;
    cells[6] = deadline;
    cells[7] = desc;
    return ops_table_add(t, cells);
}

/* Append "; " and a formatted part to @buf. */
static void detail_add(char *buf, size_t len, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void detail_add(char *buf, size_t len, const char *fmt, ...)
{
    size_t used = strlen(buf);
    va_list ap;

    if (used > 0 && used + 2 < len) {
        memcpy(buf + used, "; ", 3);
        used += 2;
    }
    va_start(ap, fmt);
    vsnprintf(buf + used, len - used, fmt, ap);
    va_end(ap);
}

static void event_detail(const Cityops__V1__CaseEvent *e, char *buf, size_t len)
{
    char when[40];

    buf[0] = '\0';
    switch (e->type) {
    case CITYOPS__V1__CASE_EVENT_TYPE__CASE_EVENT_VERIFY_RESULT:
        detail_add(buf, len, "%s", e->passed ? "found" : "not found");
        break;
    case CITYOPS__V1__CASE_EVENT_TYPE__CASE_EVENT_CHECK_RESULT:
        detail_add(buf, len, "%s", e->passed ? "pass" : "fail");
        break;
    default:
        break;
    }
    if (*e->department_id != '\0') {
        detail_add(buf, len, "dept %s", e->department_id);
    }
    if (e->related_case_id != 0) {
        detail_add(buf, len, "case %llu",
                   (unsigned long long)e->related_case_id);
    }
    if (e->closure_type !=
        CITYOPS__V1__CLOSURE_TYPE__CLOSURE_TYPE_UNSPECIFIED) {
        detail_add(buf, len, "%s",
                   ops_enum_short(&cityops__v1__closure_type__descriptor,
                                  e->closure_type));
    }
    if (e->until != 0) {
        ops_time_format(e->until, when, sizeof(when));
        detail_add(buf, len, "until %s", when);
    }
    if (e->n_attachments > 0) {
        detail_add(buf, len, "%zu attachment%s", e->n_attachments,
                   e->n_attachments == 1 ? "" : "s");
    }
    if (*e->reason != '\0') {
        detail_add(buf, len, "%s", e->reason);
    }
}

int ops_print_history(const Cityops__V1__HistoryResponse *h)
{
    static const char *const headers[] = {
        "SEQ", "TIME", "EVENT", "ACTOR(ROLE)", "FROM→TO", "DETAIL",
    };
    struct ops_table *t = ops_table_new(6, headers);
    size_t i;

    if (t == NULL) {
        return OPS_NOMEM;
    }
    for (i = 0; i < h->n_events; i++) {
        const Cityops__V1__CaseEvent *e = h->events[i];
        char seq[16];
        char when[40];
        char actor[160];
        char move[64];
        char detail[640];
        const char *cells[6];

        snprintf(seq, sizeof(seq), "%u", e->seq);
        ops_time_format(e->at, when, sizeof(when));
        snprintf(actor, sizeof(actor), "%s(%s)", e->actor_id,
                 ops_enum_short(&cityops__v1__role__descriptor, e->role));
        if (e->from_state == CITYOPS__V1__CASE_STATE__CASE_STATE_UNSPECIFIED) {
            snprintf(move, sizeof(move), "→%s", state_name(e->to_state));
        } else if (e->from_state == e->to_state) {
            snprintf(move, sizeof(move), "%s", state_name(e->to_state));
        } else {
            snprintf(move, sizeof(move), "%s→%s", state_name(e->from_state),
                     state_name(e->to_state));
        }
        event_detail(e, detail, sizeof(detail));
        cells[0] = seq;
        cells[1] = when;
        cells[2] =
            ops_enum_short(&cityops__v1__case_event_type__descriptor, e->type);
        cells[3] = actor;
        cells[4] = move;
        cells[5] = detail;
        if (ops_table_add(t, cells) != 0) {
            ops_table_free(t);
            return OPS_NOMEM;
        }
    }
    ops_table_print(t, stdout);
    ops_table_free(t);
    return 0;
}
