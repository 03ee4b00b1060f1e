/* Public reports (DOMAIN.md 8): the public_report, reopen and redact
 * commands, the indexes that serve the public and the reads over them.
 *
 * Databases (keys big-endian, see store_internal.h):
 *   contacts      the reporter's Contact per case. Personal information:
 *                 no read function returns it; redact deletes it.
 *   idx_tracking  tracking number -> case id, for every case.
 *   public_feed   one PublicUpdate per public event (state changes and
 *                 events marked public), keyed by (leader time, Raft
 *                 index, case id, event seq): the key is a function of the
 *                 event alone, so rows rebuilt by the schema upgrade equal
 *                 the ones apply writes, and a row committed later never
 *                 sorts before one a reader has already seen.
 *   idx_geo       (category, 0.01 degree cell of the CGCS2000 position,
 *                 reported time, case id) -> lat, lon; plus 0xff + case id
 *                 -> the case's current key, so that a change of category
 *                 or state moves the entry. Merged, voided, rejected and
 *                 transferred cases leave it. Duplicate hints look at the
 *                 cells around a point from a time on, never at all cases.
 *
 * Invariants: public_on_event() runs in case_commit() for every case
 * change, so the tracking index, the feed and the spatial index always
 * follow the cases in the same transaction.
 *
 * The reporter token is SHA-256 over a fixed label, the case id and the
 * first normalised identifier given (phone digits, else the lower-cased
 * email, else the device id). A reopen proves the reporter by any one
 * identifier: it gives the token, or it equals the same identifier of the
 * stored contact. Salting with the case id keeps tokens of one person
 * unlinkable across reports; a phone number is still guessable from its
 * token, which is why redact clears the token with the contact.
 *
 * Coordinates sent as GCJ-02 are converted to WGS-84 (taken as CGCS2000,
 * a metre apart at most) on apply; the original values stay in the case.
 */
#include <ctype.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cityops/v1/public.pb-c.h"
#include "store_internal.h"

#define PUB_REFUSED 1

#define RC_OK CITYOPS__V1__RESULT_CODE__RESULT_OK
#define RC_INVALID CITYOPS__V1__RESULT_CODE__RESULT_INVALID_ARGUMENT
#define RC_NOT_FOUND CITYOPS__V1__RESULT_CODE__RESULT_NOT_FOUND
#define RC_DENIED CITYOPS__V1__RESULT_CODE__RESULT_PERMISSION_DENIED
#define RC_PRECONDITION CITYOPS__V1__RESULT_CODE__RESULT_FAILED_PRECONDITION

#define STATE(x) CITYOPS__V1__CASE_STATE__CASE_STATE_##x
#define ROLE(x) CITYOPS__V1__ROLE__ROLE_##x

#define CELL_DEG 0.01
#define GEO_KEY_SIZE 29
#define GEO_REVERSE 0xff
#define FEED_KEY_SIZE 28
#define EARTH_RADIUS_M 6371008.8
#define MAX_CANDIDATES 256
#define MAX_CELLS_PER_AXIS 64
#define TRACKING_MAX 64
#define US_PER_DAY (86400LL * 1000000LL)

static const char *str0(const char *s)
{
    return s != NULL ? s : "";
}

static int
fail(Cityops__V1__CommandResult *res, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int
fail(Cityops__V1__CommandResult *res, int code, const char *fmt, ...)
{
    char msg[STORE_ERRMSG_SIZE];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (store_result_fail(res, (Cityops__V1__ResultCode)code, msg) != 0) {
        return STORE_NOMEM;
    }
    return PUB_REFUSED;
}

/* --- the built-in catalogue ---
 *
 * The 大类 table of DOMAIN.md 2 and a few common 小类 per class, served
 * and checked until the city's configured catalogue is in place. A public
 * report must name a known 大类; any 2-digit 小类 of it is accepted. */
struct builtin_service {
    char type; /* 'C' component, 'E' event */
    const char *major;
    const char *minor;
    const char *group;
    const char *name;
};

static const struct builtin_service builtin_services[] = {
    {'C', "01", "01", "公用设施 public utilities", "井盖 manhole cover"},
    {'C', "01", "02", "公用设施 public utilities", "电线杆 utility pole"},
    {'C', "01", "03", "公用设施 public utilities", "设施箱 utility box"},
    {'C', "02", "01", "道路交通 roads and traffic facilities",
     "交通标志 traffic sign"},
    {'C', "02", "02", "道路交通 roads and traffic facilities",
     "护栏 guard rail"},
    {'C', "03", "01", "市容环境 appearance and sanitation facilities",
     "垃圾箱 litter bin"},
    {'C', "03", "02", "市容环境 appearance and sanitation facilities",
     "公厕 public toilet"},
    {'C', "04", "01", "园林绿化 parks and greening", "行道树 street tree"},
    {'C', "04", "02", "园林绿化 parks and greening", "绿地 green space"},
    {'C', "05", "01", "房屋土地 buildings and land",
     "危房 dangerous building"},
    {'C', "06", "01", "其他设施 other facilities", "其他设施 other facility"},
    {'E', "01", "01", "市容环境 city appearance and environment",
     "暴露垃圾 exposed rubbish"},
    {'E', "01", "02", "市容环境 city appearance and environment",
     "道路不洁 dirty road"},
    {'E', "02", "01", "宣传广告 publicity and advertising",
     "非法小广告 illegal flyers"},
    {'E', "03", "01", "施工管理 construction management",
     "施工扰民 construction nuisance"},
    {'E', "04", "01", "突发事件 emergencies", "路面塌陷 road collapse"},
    {'E', "05", "01", "街面秩序 street order",
     "占道经营 street vending on the road"},
    {'E', "05", "02", "街面秩序 street order",
     "乱停放 illegal parking"},
    {'E', "06", "01", "其他 other", "其他事件 other event"},
};

#define N_BUILTIN (sizeof(builtin_services) / sizeof(builtin_services[0]))

static int builtin_major_known(char type, const char *major)
{
    for (size_t i = 0; i < N_BUILTIN; i++) {
        if (builtin_services[i].type == type &&
            strcmp(builtin_services[i].major, major) == 0) {
            return 1;
        }
    }
    return 0;
}

static const struct builtin_service *
builtin_find(char type, const char *major, const char *minor)
{
    for (size_t i = 0; i < N_BUILTIN; i++) {
        if (builtin_services[i].type == type &&
            strcmp(builtin_services[i].major, major) == 0 &&
            strcmp(builtin_services[i].minor, minor) == 0) {
            return &builtin_services[i];
        }
    }
    return NULL;
}

/* "E-0501" -> type 'E', major "05", minor "01". */
static int service_code_parse(const char *code,
                              char *type,
                              char major[3],
                              char minor[3])
{
    if (code == NULL || strlen(code) != 6 ||
        (code[0] != 'C' && code[0] != 'E') || code[1] != '-') {
        return -1;
    }
    for (int i = 2; i < 6; i++) {
        if (!isdigit((unsigned char)code[i])) {
            return -1;
        }
    }
    *type = code[0];
    memcpy(major, code + 2, 2);
    major[2] = '\0';
    memcpy(minor, code + 4, 2);
    minor[2] = '\0';
    return 0;
}

static char type_letter(Cityops__V1__CategoryType t)
{
    return t == CITYOPS__V1__CATEGORY_TYPE__CATEGORY_TYPE_COMPONENT ? 'C'
                                                                     : 'E';
}

/* --- field checks --- */

static int utf8_valid(const char *s)
{
    const unsigned char *p = (const unsigned char *)s;

    while (*p != '\0') {
        int n;

        if (*p < 0x80) {
            p++;
            continue;
        }
        if ((*p & 0xe0) == 0xc0 && *p >= 0xc2) {
            n = 1;
        } else if ((*p & 0xf0) == 0xe0) {
            n = 2;
        } else if ((*p & 0xf8) == 0xf0 && *p <= 0xf4) {
            n = 3;
        } else {
            return 0;
        }
        p++;
        for (int i = 0; i < n; i++, p++) {
            if ((*p & 0xc0) != 0x80) {
                return 0;
            }
        }
    }
    return 1;
}

/* Printable text: valid UTF-8 without control characters but tab and
 * newline (@multiline). */
static int text_ok(const char *s, int multiline)
{
    for (const unsigned char *p = (const unsigned char *)s; *p != '\0'; p++) {
        if (*p < 0x20 && !(multiline && (*p == '\n' || *p == '\t' ||
                                         *p == '\r'))) {
            return 0;
        }
        if (*p == 0x7f) {
            return 0;
        }
    }
    return utf8_valid(s);
}

static int check_text(Cityops__V1__CommandResult *res,
                      const char *field,
                      const char *v,
                      size_t max,
                      int multiline)
{
    if (strlen(str0(v)) > max) {
        return fail(res, RC_INVALID, "%s longer than %zu bytes", field, max);
    }
    if (!text_ok(str0(v), multiline)) {
        return fail(res, RC_INVALID,
                    "%s must be UTF-8 text without control characters",
                    field);
    }
    return 0;
}

static int is_hex64(const char *v)
{
    size_t n = strlen(str0(v));

    if (n != 64) {
        return 0;
    }
    for (size_t i = 0; i < n; i++) {
        if (!isxdigit((unsigned char)v[i])) {
            return 0;
        }
    }
    return 1;
}

static int url_ok(const char *u)
{
    if (strncmp(u, "https://", 8) != 0 && strncmp(u, "http://", 7) != 0) {
        return 0;
    }
    for (const unsigned char *p = (const unsigned char *)u; *p != '\0'; p++) {
        if (*p <= 0x20 || *p >= 0x7f || *p == '"' || *p == '<' ||
            *p == '>' || *p == '\\') {
            return 0;
        }
    }
    return strlen(u) > 8;
}

/* "type/subtype" of token characters. */
static int media_type_ok(const char *t)
{
    const char *slash = strchr(t, '/');

    if (slash == NULL || slash == t || slash[1] == '\0' ||
        strchr(slash + 1, '/') != NULL) {
        return 0;
    }
    for (const char *p = t; *p != '\0'; p++) {
        if (!isalnum((unsigned char)*p) && strchr("/!#$&^_.+-", *p) == NULL) {
            return 0;
        }
    }
    return 1;
}

static int check_media(Cityops__V1__CommandResult *res,
                       size_t n,
                       Cityops__V1__Media *const *m)
{
    if (n > STORE_MAX_ATTACHMENTS) {
        return fail(res, RC_INVALID, "%zu media, at most %d", n,
                    STORE_MAX_ATTACHMENTS);
    }
    for (size_t i = 0; i < n; i++) {
        const char *url = str0(m[i]->url);
        const char *type = str0(m[i]->media_type);

        if (strlen(url) > STORE_MAX_TEXT || !url_ok(url)) {
            return fail(res, RC_INVALID,
                        "media %zu: url must be an http(s) URL of at most %d "
                        "bytes",
                        i, STORE_MAX_TEXT);
        }
        if (!is_hex64(m[i]->sha256)) {
            return fail(res, RC_INVALID,
                        "media %zu: sha256 must be 64 hex digits", i);
        }
        if (type[0] != '\0' &&
            (strlen(type) > STORE_MAX_ID || !media_type_ok(type))) {
            return fail(res, RC_INVALID,
                        "media %zu: media_type must be type/subtype", i);
        }
    }
    return 0;
}

#define CONTACT_MAX_PHONE 32
#define CONTACT_MAX_EMAIL 254

static int phone_ok(const char *p)
{
    int digits = 0;

    for (; *p != '\0'; p++) {
        if (isdigit((unsigned char)*p)) {
            digits++;
        } else if (strchr("+-() ", *p) == NULL) {
            return 0;
        }
    }
    return digits >= 5;
}

static int email_ok(const char *e)
{
    const char *at = strchr(e, '@');

    if (at == NULL || at == e || at[1] == '\0' || strchr(at + 1, '@')) {
        return 0;
    }
    for (const unsigned char *p = (const unsigned char *)e; *p != '\0'; p++) {
        if (*p <= 0x20 || *p >= 0x7f) {
            return 0;
        }
    }
    return 1;
}

static int check_contact(Cityops__V1__CommandResult *res,
                         const Cityops__V1__Contact *c)
{
    const char *phone;
    const char *email;
    int rv;

    if (c == NULL) {
        return 0;
    }
    phone = str0(c->phone);
    email = str0(c->email);
    rv = check_text(res, "contact.name", c->name, STORE_MAX_ID, 0);
    if (rv == 0) {
        rv = check_text(res, "contact.device_id", c->device_id, STORE_MAX_ID,
                        0);
    }
    if (rv != 0) {
        return rv;
    }
    if (phone[0] != '\0' &&
        (strlen(phone) > CONTACT_MAX_PHONE || !phone_ok(phone))) {
        return fail(res, RC_INVALID,
                    "contact.phone must be at most %d characters of digits, "
                    "+, -, ( ) and spaces, with at least 5 digits",
                    CONTACT_MAX_PHONE);
    }
    if (email[0] != '\0' &&
        (strlen(email) > CONTACT_MAX_EMAIL || !email_ok(email))) {
        return fail(res, RC_INVALID, "contact.email is not an email address");
    }
    return 0;
}

static int contact_empty(const Cityops__V1__Contact *c)
{
    return c == NULL ||
           (str0(c->name)[0] == '\0' && str0(c->phone)[0] == '\0' &&
            str0(c->email)[0] == '\0' && str0(c->device_id)[0] == '\0');
}

static int check_actor(const Cityops__V1__Command *cmd,
                       Cityops__V1__CommandResult *res)
{
    const char *actor = str0(cmd->actor_id);

    if (actor[0] == '\0') {
        return fail(res, RC_INVALID, "actor_id required");
    }
    if (strlen(actor) > STORE_MAX_ID) {
        return fail(res, RC_INVALID, "actor_id longer than %d bytes",
                    STORE_MAX_ID);
    }
    return 0;
}

/* --- GCJ-02 to WGS-84 ---
 *
 * GCJ-02 is WGS-84 plus a published obfuscation offset inside China; its
 * inverse is found by fixed-point iteration on the forward formula (a few
 * steps reach centimetres). Outside China the two are equal. */
static int out_of_china(double lat, double lon)
{
    return lon < 72.004 || lon > 137.8347 || lat < 0.8293 || lat > 55.8271;
}

static double gcj_dlat(double x, double y)
{
    double r = -100.0 + 2.0 * x + 3.0 * y + 0.2 * y * y + 0.1 * x * y +
               0.2 * sqrt(fabs(x));

    r += (20.0 * sin(6.0 * x * M_PI) + 20.0 * sin(2.0 * x * M_PI)) * 2.0 / 3.0;
    r += (20.0 * sin(y * M_PI) + 40.0 * sin(y / 3.0 * M_PI)) * 2.0 / 3.0;
    r += (160.0 * sin(y / 12.0 * M_PI) + 320 * sin(y * M_PI / 30.0)) * 2.0 /
         3.0;
    return r;
}

static double gcj_dlon(double x, double y)
{
    double r = 300.0 + x + 2.0 * y + 0.1 * x * x + 0.1 * x * y +
               0.1 * sqrt(fabs(x));

    r += (20.0 * sin(6.0 * x * M_PI) + 20.0 * sin(2.0 * x * M_PI)) * 2.0 / 3.0;
    r += (20.0 * sin(x * M_PI) + 40.0 * sin(x / 3.0 * M_PI)) * 2.0 / 3.0;
    r += (150.0 * sin(x / 12.0 * M_PI) + 300.0 * sin(x / 30.0 * M_PI)) *
         2.0 / 3.0;
    return r;
}

static void wgs_to_gcj(double lat, double lon, double *glat, double *glon)
{
    const double a = 6378245.0;
    const double ee = 0.00669342162296594323;
    double dlat;
    double dlon;
    double rad;
    double magic;
    double sq;

    if (out_of_china(lat, lon)) {
        *glat = lat;
        *glon = lon;
        return;
    }
    dlat = gcj_dlat(lon - 105.0, lat - 35.0);
    dlon = gcj_dlon(lon - 105.0, lat - 35.0);
    rad = lat / 180.0 * M_PI;
    magic = sin(rad);
    magic = 1 - ee * magic * magic;
    sq = sqrt(magic);
    dlat = (dlat * 180.0) / ((a * (1 - ee)) / (magic * sq) * M_PI);
    dlon = (dlon * 180.0) / (a / sq * cos(rad) * M_PI);
    *glat = lat + dlat;
    *glon = lon + dlon;
}

static void gcj_to_wgs(double glat, double glon, double *lat, double *lon)
{
    double wlat = glat;
    double wlon = glon;

    for (int i = 0; i < 8; i++) {
        double tlat;
        double tlon;

        wgs_to_gcj(wlat, wlon, &tlat, &tlon);
        wlat -= tlat - glat;
        wlon -= tlon - glon;
    }
    *lat = wlat;
    *lon = wlon;
}

/* --- settings and the configured catalogue --- */

struct pub_settings {
    uint32_t reopen_window_days;
    uint32_t duplicate_radius_m;
    uint32_t duplicate_window_hours;
    char jurisdiction_id[STORE_MAX_ID + 1];
};

/* The configured PublicSettings over the defaults (a zero keeps the
 * default, but for the reopen window). */
static int settings_get(struct store *s, MDB_txn *txn, struct pub_settings *st)
{
    Cityops__V1__PublicSettings *ps = NULL;
    int rv;

    memset(st, 0, sizeof(*st));
    st->reopen_window_days = STORE_PUBLIC_REOPEN_DAYS;
    st->duplicate_radius_m = STORE_PUBLIC_DUP_RADIUS_M;
    st->duplicate_window_hours = STORE_PUBLIC_DUP_WINDOW_HOURS;
    rv = config_public(s, txn, &ps);
    if (rv == STORE_NOTFOUND) {
        return 0;
    }
    if (rv != 0) {
        return rv;
    }
    /* as the state machine's reopen reads it: configured means in force */
    st->reopen_window_days = ps->reopen_window_days;
    if (ps->duplicate_radius_m > 0) {
        st->duplicate_radius_m = ps->duplicate_radius_m;
    }
    if (ps->duplicate_window_hours > 0) {
        st->duplicate_window_hours = ps->duplicate_window_hours;
    }
    snprintf(st->jurisdiction_id, sizeof(st->jurisdiction_id), "%s",
             str0(ps->jurisdiction_id));
    cityops__v1__public_settings__free_unpacked(ps, NULL);
    return 0;
}

int store_public_settings(struct store *s,
                          uint32_t *reopen_window_days,
                          uint32_t *duplicate_radius_m,
                          uint32_t *duplicate_window_hours)
{
    struct pub_settings st;
    MDB_txn *txn;
    int rv;

    rv = store_read_begin(s, &txn);
    if (rv != 0) {
        return rv;
    }
    rv = settings_get(s, txn, &st);
    store_read_end(s, txn);
    if (rv != 0) {
        return rv;
    }
    if (reopen_window_days != NULL) {
        *reopen_window_days = st.reopen_window_days;
    }
    if (duplicate_radius_m != NULL) {
        *duplicate_radius_m = st.duplicate_radius_m;
    }
    if (duplicate_window_hours != NULL) {
        *duplicate_window_hours = st.duplicate_window_hours;
    }
    return 0;
}

/* 1 if the configuration holds any category (config_list() kind 4): then
 * it is the catalogue, else the built-in one is. */
static int catalogue_configured(struct store *s, MDB_txn *txn)
{
    MDB_cursor *cur;
    MDB_val key;
    MDB_val val;
    uint8_t k = 4;
    int found = 0;

    if (mdb_cursor_open(txn, s->dbi[STORE_DB_CONFIG], &cur) != 0) {
        return 0;
    }
    key.mv_size = 1;
    key.mv_data = &k;
    if (mdb_cursor_get(cur, &key, &val, MDB_SET_RANGE) == 0) {
        found = ((uint8_t *)key.mv_data)[0] == k;
    }
    mdb_cursor_close(cur);
    return found;
}

static Cityops__V1__CategoryType type_of_letter(char type)
{
    return type == 'C' ? CITYOPS__V1__CATEGORY_TYPE__CATEGORY_TYPE_COMPONENT
                       : CITYOPS__V1__CATEGORY_TYPE__CATEGORY_TYPE_EVENT;
}

/* 1 if the service may be reported: a configured, unretired category, or
 * (no catalogue configured) a built-in 大类. */
static int service_known(struct store *s,
                         MDB_txn *txn,
                         char type,
                         const char *major,
                         const char *minor,
                         int *known)
{
    Cityops__V1__Category *cat = NULL;
    int rv;

    *known = 0;
    if (!catalogue_configured(s, txn)) {
        *known = builtin_major_known(type, major);
        return 0;
    }
    rv = config_category(s, txn, type_of_letter(type), major, minor, &cat);
    if (rv == STORE_NOTFOUND) {
        return 0;
    }
    if (rv != 0) {
        return rv;
    }
    *known = !cat->retired;
    cityops__v1__category__free_unpacked(cat, NULL);
    return 0;
}

/* --- reporter token --- */

static int sha256_hex(struct store *s,
                      const void *a,
                      size_t alen,
                      const void *b,
                      size_t blen,
                      char out[65])
{
    static const char hex[] = "0123456789abcdef";
    unsigned char md[32];
    unsigned int mdlen = 0;
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    int ok;

    if (ctx == NULL) {
        return store_errf(s, STORE_NOMEM, "sha256: out of memory");
    }
    ok = EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) == 1 &&
         EVP_DigestUpdate(ctx, a, alen) == 1 &&
         EVP_DigestUpdate(ctx, b, blen) == 1 &&
         EVP_DigestFinal_ex(ctx, md, &mdlen) == 1;
    EVP_MD_CTX_free(ctx);
    if (!ok || mdlen != 32) {
        return store_errf(s, STORE_IOERR, "sha256 failed");
    }
    for (int i = 0; i < 32; i++) {
        out[2 * i] = hex[md[i] >> 4];
        out[2 * i + 1] = hex[md[i] & 15];
    }
    out[64] = '\0';
    return 0;
}

enum { ID_PHONE, ID_EMAIL, ID_DEVICE, ID_N };

/* The normalised identifier @which of @c ("" if not given). */
static void contact_id(const Cityops__V1__Contact *c,
                       int which,
                       char *buf,
                       size_t size)
{
    const char *v;
    size_t n = 0;
    const char *digits;

    buf[0] = '\0';
    if (c == NULL) {
        return;
    }
    switch (which) {
    case ID_PHONE:
        v = str0(c->phone);
        for (; *v != '\0' && n + 3 < size; v++) {
            if (isdigit((unsigned char)*v)) {
                buf[n++] = *v;
            }
        }
        buf[n] = '\0';
        /* "+86 138..." and "138..." are the same mainland number */
        digits = buf;
        if (n == 13 && strncmp(buf, "86", 2) == 0) {
            digits = buf + 2;
        }
        if (n > 0) {
            char tmp[64];

            snprintf(tmp, sizeof(tmp), "p:%s", digits);
            snprintf(buf, size, "%s", tmp);
        }
        return;
    case ID_EMAIL:
        v = str0(c->email);
        while (isspace((unsigned char)*v)) {
            v++;
        }
        if (*v == '\0') {
            return;
        }
        n = (size_t)snprintf(buf, size, "e:%s", v);
        for (size_t i = 2; i < n && i < size; i++) {
            buf[i] = (char)tolower((unsigned char)buf[i]);
        }
        while (n > 2 && n < size && isspace((unsigned char)buf[n - 1])) {
            buf[--n] = '\0';
        }
        return;
    default:
        v = str0(c->device_id);
        if (*v != '\0') {
            snprintf(buf, size, "d:%s", v);
        }
        return;
    }
}

static int token_of(struct store *s,
                    uint64_t case_id,
                    const char *id,
                    char out[65])
{
    uint8_t salt[24] = "cityops-reporter-1";

    store_be64_put(salt + 16, case_id);
    return sha256_hex(s, salt, sizeof(salt), id, strlen(id), out);
}

/* The token stored at report time: of the first identifier given. */
static int token_primary(struct store *s,
                         uint64_t case_id,
                         const Cityops__V1__Contact *c,
                         char out[65])
{
    char id[CONTACT_MAX_EMAIL + 8];

    out[0] = '\0';
    for (int i = 0; i < ID_N; i++) {
        contact_id(c, i, id, sizeof(id));
        if (id[0] != '\0') {
            return token_of(s, case_id, id, out);
        }
    }
    return 0;
}

/* *match = 1 if any identifier of @c gives @token, or equals the same
 * identifier of the stored contact @kept (may be NULL). */
static int token_match(struct store *s,
                       uint64_t case_id,
                       const Cityops__V1__Contact *c,
                       const Cityops__V1__Contact *kept,
                       const char *token,
                       int *match)
{
    char id[CONTACT_MAX_EMAIL + 8];
    char id2[CONTACT_MAX_EMAIL + 8];
    char t[65];
    int rv;

    *match = 0;
    for (int i = 0; i < ID_N && !*match; i++) {
        contact_id(c, i, id, sizeof(id));
        if (id[0] == '\0') {
            continue;
        }
        rv = token_of(s, case_id, id, t);
        if (rv != 0) {
            return rv;
        }
        *match = strcmp(t, token) == 0;
        if (!*match && kept != NULL) {
            contact_id(kept, i, id2, sizeof(id2));
            *match = strcmp(id, id2) == 0;
        }
    }
    return 0;
}

/* --- small db helpers --- */

static int put_raw(struct store *s,
                   MDB_txn *txn,
                   enum store_db db,
                   const void *k,
                   size_t klen,
                   const void *v,
                   size_t vlen)
{
    MDB_val key = {klen, (void *)k};
    MDB_val val = {vlen, (void *)v};
    int rc = mdb_put(txn, s->dbi[db], &key, &val, 0);

    if (rc != 0) {
        return store_mdb_err(s, rc, "put %s", store_db_names[db]);
    }
    return 0;
}

static int del_raw(struct store *s,
                   MDB_txn *txn,
                   enum store_db db,
                   const void *k,
                   size_t klen)
{
    MDB_val key = {klen, (void *)k};
    int rc = mdb_del(txn, s->dbi[db], &key, NULL);

    if (rc != 0 && rc != MDB_NOTFOUND) {
        return store_mdb_err(s, rc, "del %s", store_db_names[db]);
    }
    return 0;
}

static int put_msg(struct store *s,
                   MDB_txn *txn,
                   enum store_db db,
                   const void *k,
                   size_t klen,
                   const ProtobufCMessage *msg)
{
    MDB_val key = {klen, (void *)k};
    int rc = store_msg_put(txn, s->dbi[db], &key, msg, 0);

    if (rc != 0) {
        return store_mdb_err(s, rc, "put %s", store_db_names[db]);
    }
    return 0;
}

/* The case id of @tracking_no; STORE_NOTFOUND without a message. */
static int tracking_lookup(struct store *s,
                           MDB_txn *txn,
                           const char *tracking_no,
                           uint64_t *case_id)
{
    MDB_val key = {strlen(tracking_no), (void *)tracking_no};
    MDB_val val;
    int rc;

    if (key.mv_size == 0 || key.mv_size > TRACKING_MAX) {
        return STORE_NOTFOUND;
    }
    rc = mdb_get(txn, s->dbi[STORE_DB_IDX_TRACKING], &key, &val);
    if (rc == MDB_NOTFOUND) {
        return STORE_NOTFOUND;
    }
    if (rc != 0) {
        return store_mdb_err(s, rc, "get idx_tracking/%s", tracking_no);
    }
    if (val.mv_size != 8) {
        return store_errf(s, STORE_CORRUPT, "idx_tracking/%s: %zu bytes",
                          tracking_no, val.mv_size);
    }
    *case_id = store_be64_get(val.mv_data);
    return 0;
}

/* --- status mapping (DOMAIN.md 8) --- */

static int state_closed(Cityops__V1__CaseState st)
{
    return st == STATE(CLOSED) || st == STATE(REJECTED) ||
           st == STATE(VOIDED) || st == STATE(MERGED) ||
           st == STATE(TRANSFERRED_OUT);
}

static int fixed_and_checked(Cityops__V1__CaseState st, int check_passed)
{
    return st == STATE(CLOSED) && check_passed;
}

static const char *detailed_status(Cityops__V1__CaseState st,
                                   int check_passed)
{
    switch (st) {
    case STATE(REPORTED):
        return "received";
    case STATE(VERIFYING):
        return "verifying";
    case STATE(ACCEPTED):
        return "accepted";
    case STATE(REGISTERED):
        return "registered";
    case STATE(DISPATCHED):
        return "dispatched";
    case STATE(IN_DISPOSAL):
    case STATE(RETURNED):
        return "in_progress";
    case STATE(DISPOSED):
        return "awaiting_check";
    case STATE(CHECKING):
        return "checking";
    case STATE(CHECKED):
        return check_passed ? "checked_fixed" : "check_failed";
    case STATE(SHELVED):
        return "deferred";
    case STATE(CLOSED):
        return check_passed ? "fixed_checked" : "closed_not_fixed";
    case STATE(REJECTED):
        return "rejected";
    case STATE(VOIDED):
        return "withdrawn";
    case STATE(MERGED):
        return "duplicate";
    case STATE(TRANSFERRED_OUT):
        return "transferred";
    default:
        return "unknown";
    }
}

static const char *status_note(Cityops__V1__CaseState st, int check_passed)
{
    switch (st) {
    case STATE(REPORTED):
    case STATE(VERIFYING):
        return "Received, awaiting review.";
    case STATE(ACCEPTED):
        return "Accepted, awaiting registration.";
    case STATE(REGISTERED):
        return "Registered, awaiting dispatch.";
    case STATE(DISPATCHED):
        return "Sent to the responsible department.";
    case STATE(IN_DISPOSAL):
    case STATE(RETURNED):
        return "The department is working on it.";
    case STATE(DISPOSED):
    case STATE(CHECKING):
        return "Reported done; an inspector will check the result.";
    case STATE(CHECKED):
        return check_passed ? "Checked on site: fixed."
                            : "Checked on site: not fixed yet.";
    case STATE(SHELVED):
        return "Deferred: cannot be fixed for now.";
    case STATE(CLOSED):
        return check_passed ? "Closed: fixed and checked on site."
                            : "Closed without a passed check.";
    case STATE(REJECTED):
        return "Not accepted as a city-management case.";
    case STATE(VOIDED):
        return "Withdrawn as an erroneous record.";
    case STATE(MERGED):
        return "Duplicate of another report.";
    case STATE(TRANSFERRED_OUT):
        return "Handed over to another authority.";
    default:
        return "";
    }
}

/* --- apply side: indexes and feed --- */

static int tracking_put(struct store *s,
                        MDB_txn *txn,
                        const Cityops__V1__Case *c)
{
    const char *tn = str0(c->tracking_no);
    uint8_t id[8];

    if (tn[0] == '\0' || strlen(tn) > TRACKING_MAX) {
        return 0;
    }
    store_be64_put(id, c->case_id);
    return put_raw(s, txn, STORE_DB_IDX_TRACKING, tn, strlen(tn), id, 8);
}

static uint32_t cell_of(double deg)
{
    return (uint32_t)((int64_t)floor(deg / CELL_DEG) + 0x80000000LL);
}

static void time_key(uint8_t *p, int64_t t)
{
    store_be64_put(p, (uint64_t)t ^ ((uint64_t)1 << 63));
}

static int64_t time_from_key(const uint8_t *p)
{
    return (int64_t)(store_be64_get(p) ^ ((uint64_t)1 << 63));
}

static void geo_prefix(uint8_t *k,
                       int type,
                       const char *major,
                       const char *minor,
                       uint32_t cell_lat,
                       uint32_t cell_lon)
{
    k[0] = (uint8_t)type;
    k[1] = (uint8_t)(major != NULL && major[0] ? major[0] : '0');
    k[2] = (uint8_t)(major != NULL && major[0] && major[1] ? major[1] : '0');
    k[3] = (uint8_t)(minor != NULL && minor[0] ? minor[0] : '0');
    k[4] = (uint8_t)(minor != NULL && minor[0] && minor[1] ? minor[1] : '0');
    store_be32_put(k + 5, cell_lat);
    store_be32_put(k + 9, cell_lon);
}

static void double_put(uint8_t *p, double v)
{
    uint64_t bits;

    memcpy(&bits, &v, sizeof(bits));
    store_be64_put(p, bits);
}

static double double_get(const uint8_t *p)
{
    uint64_t bits = store_be64_get(p);
    double v;

    memcpy(&v, &bits, sizeof(v));
    return v;
}

static int geo_indexed(const Cityops__V1__Case *c)
{
    const Cityops__V1__Location *l = c->location;

    if (l == NULL || (l->lat == 0.0 && l->lon == 0.0)) {
        return 0;
    }
    switch (c->state) {
    case STATE(MERGED):
    case STATE(VOIDED):
    case STATE(REJECTED):
    case STATE(TRANSFERRED_OUT):
        return 0;
    default:
        return 1;
    }
}

/* Move the case's idx_geo entry to its current category and position.
 * @fresh: the case was made in this command, so it has no entry yet. */
static int geo_update(struct store *s,
                      MDB_txn *txn,
                      const Cityops__V1__Case *c,
                      int fresh)
{
    uint8_t rkey[9];
    uint8_t key[GEO_KEY_SIZE];
    uint8_t pos[16];
    size_t klen = 0;
    MDB_val rk = {sizeof(rkey), rkey};
    MDB_val old;
    int rc;
    int rv;

    rkey[0] = GEO_REVERSE;
    store_be64_put(rkey + 1, c->case_id);
    if (geo_indexed(c)) {
        geo_prefix(key, (int)c->category_type, c->major_code, c->minor_code,
                   cell_of(c->location->lat), cell_of(c->location->lon));
        time_key(key + 13, c->times != NULL ? c->times->reported : 0);
        store_be64_put(key + 21, c->case_id);
        klen = sizeof(key);
    }
    rc = fresh ? MDB_NOTFOUND
               : mdb_get(txn, s->dbi[STORE_DB_IDX_GEO], &rk, &old);
    if (rc != 0 && rc != MDB_NOTFOUND) {
        return store_mdb_err(s, rc, "get idx_geo reverse");
    }
    if (rc == 0) {
        if (old.mv_size == klen && memcmp(old.mv_data, key, klen) == 0) {
            return 0;
        }
        uint8_t oldkey[GEO_KEY_SIZE];
        size_t oldlen = old.mv_size < sizeof(oldkey) ? old.mv_size
                                                       : sizeof(oldkey);

        memcpy(oldkey, old.mv_data, oldlen);
        rv = del_raw(s, txn, STORE_DB_IDX_GEO, oldkey, oldlen);
        if (rv != 0) {
            return rv;
        }
    }
    if (klen == 0) {
        return rc == 0 ? del_raw(s, txn, STORE_DB_IDX_GEO, rkey, sizeof(rkey))
                       : 0;
    }
    double_put(pos, c->location->lat);
    double_put(pos + 8, c->location->lon);
    rv = put_raw(s, txn, STORE_DB_IDX_GEO, key, klen, pos, sizeof(pos));
    if (rv == 0) {
        rv = put_raw(s, txn, STORE_DB_IDX_GEO, rkey, sizeof(rkey), key, klen);
    }
    return rv;
}

static void feed_key(uint8_t k[FEED_KEY_SIZE],
                     int64_t at,
                     uint64_t raft_index,
                     uint64_t case_id,
                     uint32_t seq)
{
    time_key(k, at);
    store_be64_put(k + 8, raft_index);
    store_be64_put(k + 16, case_id);
    store_be32_put(k + 24, seq);
}

static int feed_event(const Cityops__V1__CaseEvent *ev)
{
    return ev->from_state != ev->to_state || ev->public_;
}

/* Whether the check had passed as of @ev, from the event alone: a
 * CHECK_RESULT says so, and CLOSE needs a passed check unless it is
 * SPECIAL. */
static int event_passed(const Cityops__V1__CaseEvent *ev)
{
    if (ev->to_state == STATE(CHECKED)) {
        return ev->passed;
    }
    if (ev->to_state == STATE(CLOSED)) {
        return ev->closure_type !=
               CITYOPS__V1__CLOSURE_TYPE__CLOSURE_TYPE_SPECIAL;
    }
    return 0;
}

/* The note of a feed row: merges name the surviving report; events marked
 * public carry their reason; reopens say so. */
static int feed_note(struct store *s,
                     MDB_txn *txn,
                     const Cityops__V1__CaseEvent *ev,
                     char *buf,
                     size_t size)
{
    Cityops__V1__Case *t = NULL;
    int rv;

    if (ev->type == CITYOPS__V1__CASE_EVENT_TYPE__CASE_EVENT_REOPEN) {
        snprintf(buf, size, "Reopened by the reporter: not fixed. %s",
                 status_note(ev->to_state, 0));
        return 0;
    }
    if (ev->public_ && ev->from_state == ev->to_state) {
        snprintf(buf, size, "%s", str0(ev->reason));
        return 0;
    }
    if (ev->to_state == STATE(MERGED) && ev->related_case_id != 0) {
        rv = store_case_load(s, txn, ev->related_case_id, &t);
        if (rv != 0 && rv != STORE_NOTFOUND) {
            return rv;
        }
        snprintf(buf, size, "Duplicate of report %s.",
                 t != NULL ? str0(t->tracking_no) : "");
        if (t != NULL) {
            cityops__v1__case__free_unpacked(t, NULL);
        }
        return 0;
    }
    snprintf(buf, size, "%s", status_note(ev->to_state, event_passed(ev)));
    return 0;
}

/* A feed row is a function of the event and the (immutable) tracking
 * numbers, so the upgrade rebuilds exactly what apply wrote. */
static int feed_put(struct store *s,
                    MDB_txn *txn,
                    const char *tracking_no,
                    const Cityops__V1__CaseEvent *ev)
{
    Cityops__V1__PublicUpdate u = CITYOPS__V1__PUBLIC_UPDATE__INIT;
    uint8_t k[FEED_KEY_SIZE];
    char note[STORE_MAX_TEXT + 80];
    int rv;

    rv = feed_note(s, txn, ev, note, sizeof(note));
    if (rv != 0) {
        return rv;
    }
    u.service_request_id = (char *)str0(tracking_no);
    u.at = ev->at;
    u.status = state_closed(ev->to_state) ? "closed" : "open";
    u.detailed_status =
        (char *)detailed_status(ev->to_state, event_passed(ev));
    u.note = note;
    feed_key(k, ev->at, ev->raft_index, ev->case_id, ev->seq);
    return put_msg(s, txn, STORE_DB_PUBLIC_FEED, k, sizeof(k), &u.base);
}

int public_on_event(struct store *s,
                    MDB_txn *txn,
                    const Cityops__V1__Case *c,
                    const Cityops__V1__CaseEvent *ev)
{
    int rv = 0;

    if (ev->seq == 1) {
        rv = tracking_put(s, txn, c);
    }
    if (rv == 0) {
        rv = geo_update(s, txn, c, ev->seq == 1);
    }
    if (rv == 0 && feed_event(ev)) {
        rv = feed_put(s, txn, c->tracking_no, ev);
    }
    return rv;
}

/* --- schema upgrade --- */

/* The indexes and feed rows of one stored case, from its events. */
static int upgrade_case(struct store *s,
                        MDB_txn *txn,
                        MDB_cursor *ev_cur,
                        const Cityops__V1__Case *c)
{
    uint8_t k[8];
    MDB_val key = {sizeof(k), k};
    MDB_val val;
    int rc;
    int rv = tracking_put(s, txn, c);

    if (rv == 0) {
        rv = geo_update(s, txn, c, 0);
    }
    store_be64_put(k, c->case_id);
    rc = mdb_cursor_get(ev_cur, &key, &val, MDB_SET_RANGE);
    while (rv == 0 && rc == 0 && key.mv_size == 12 &&
           store_be64_get(key.mv_data) == c->case_id) {
        Cityops__V1__CaseEvent *ev =
            cityops__v1__case_event__unpack(NULL, val.mv_size, val.mv_data);

        if (ev == NULL) {
            return store_errf(s, STORE_CORRUPT, "decode case_event/%llu",
                              (unsigned long long)c->case_id);
        }
        if (feed_event(ev)) {
            rv = feed_put(s, txn, c->tracking_no, ev);
        }
        cityops__v1__case_event__free_unpacked(ev, NULL);
        rc = mdb_cursor_get(ev_cur, &key, &val, MDB_NEXT);
    }
    if (rv == 0 && rc != 0 && rc != MDB_NOTFOUND) {
        rv = store_mdb_err(s, rc, "upgrade: walk case_events");
    }
    return rv;
}

int public_schema_upgrade(struct store *s, MDB_txn *txn)
{
    MDB_cursor *cur;
    MDB_cursor *ev_cur;
    MDB_val key;
    MDB_val val;
    int rv = 0;
    int rc;

    rc = mdb_cursor_open(txn, s->dbi[STORE_DB_CASES], &cur);
    if (rc != 0) {
        return store_mdb_err(s, rc, "upgrade: cursor cases");
    }
    rc = mdb_cursor_open(txn, s->dbi[STORE_DB_CASE_EVENTS], &ev_cur);
    if (rc != 0) {
        mdb_cursor_close(cur);
        return store_mdb_err(s, rc, "upgrade: cursor case_events");
    }
    rc = mdb_cursor_get(cur, &key, &val, MDB_FIRST);
    while (rv == 0 && rc == 0) {
        Cityops__V1__Case *c =
            cityops__v1__case__unpack(NULL, val.mv_size, val.mv_data);

        if (c == NULL) {
            rv = store_errf(s, STORE_CORRUPT, "upgrade: decode a case");
            break;
        }
        rv = upgrade_case(s, txn, ev_cur, c);
        cityops__v1__case__free_unpacked(c, NULL);
        rc = mdb_cursor_get(cur, &key, &val, MDB_NEXT);
    }
    if (rv == 0 && rc != 0 && rc != MDB_NOTFOUND) {
        rv = store_mdb_err(s, rc, "upgrade: walk cases");
    }
    mdb_cursor_close(ev_cur);
    mdb_cursor_close(cur);
    return rv;
}

/* --- commands --- */

int public_op(const Cityops__V1__Command *cmd)
{
    switch (cmd->op_case) {
    case CITYOPS__V1__COMMAND__OP_PUBLIC_REPORT:
    case CITYOPS__V1__COMMAND__OP_REOPEN:
    case CITYOPS__V1__COMMAND__OP_REDACT:
        return 1;
    default:
        return 0;
    }
}

static int report_check(struct store *s,
                        MDB_txn *txn,
                        const Cityops__V1__PublicReportRequest *r,
                        Cityops__V1__CommandResult *res,
                        char *type,
                        char major[3],
                        char minor[3])
{
    int have_pos = !(r->lat == 0.0 && r->long_ == 0.0);
    int known = 0;
    int rv;

    if (service_code_parse(r->service_code, type, major, minor) != 0) {
        return fail(res, RC_INVALID,
                    "service_code must look like E-0501 (C or E, 大类, 小类)");
    }
    rv = service_known(s, txn, *type, major, minor, &known);
    if (rv != 0) {
        return rv;
    }
    if (!known) {
        return fail(res, RC_INVALID, "unknown service_code %s",
                    r->service_code);
    }
    if (!isfinite(r->lat) || !isfinite(r->long_) || r->lat < -90.0 ||
        r->lat > 90.0 || r->long_ < -180.0 || r->long_ > 180.0) {
        return fail(res, RC_INVALID,
                    "lat must be in [-90, 90] and long in [-180, 180]");
    }
    if ((int)r->datum < 0 || r->datum > CITYOPS__V1__DATUM__DATUM_GCJ02) {
        return fail(res, RC_INVALID, "unknown datum %d", (int)r->datum);
    }
    rv = check_text(res, "address_string", r->address_string, STORE_MAX_TEXT,
                    0);
    if (rv == 0) {
        rv = check_text(res, "description", r->description,
                        STORE_MAX_DESCRIPTION, 1);
    }
    if (rv == 0) {
        rv = check_text(res, "grid_code", r->grid_code, STORE_MAX_ID, 0);
    }
    if (rv != 0) {
        return rv;
    }
    for (const char *p = str0(r->grid_code); *p != '\0'; p++) {
        if (!isdigit((unsigned char)*p)) {
            return fail(res, RC_INVALID, "grid_code must be digits");
        }
    }
    if (!have_pos && str0(r->address_string)[0] == '\0') {
        return fail(res, RC_INVALID,
                    "a location is required: lat and long, or "
                    "address_string");
    }
    rv = check_media(res, r->n_media, r->media);
    if (rv == 0) {
        rv = check_contact(res, r->contact);
    }
    return rv;
}

/* Store the contact privately and the token on the case. */
static int contact_keep(struct store *s,
                        MDB_txn *txn,
                        const Cityops__V1__Contact *contact,
                        Cityops__V1__CommandResult *res)
{
    Cityops__V1__Case *c = res->case_;
    struct store_case_ix ix;
    uint8_t k[8];
    char token[65];
    int rv;

    if (contact_empty(contact)) {
        return 0;
    }
    store_be64_put(k, c->case_id);
    rv = put_msg(s, txn, STORE_DB_CONTACTS, k, sizeof(k), &contact->base);
    if (rv != 0) {
        return rv;
    }
    rv = token_primary(s, c->case_id, contact, token);
    if (rv != 0 || token[0] == '\0') {
        return rv;
    }
    store_case_ix_capture(c, &ix);
    rv = store_str_set(&c->reporter_token, token);
    if (rv != 0) {
        return store_errf(s, rv, "public report: out of memory");
    }
    return store_case_save(s, txn, &ix, c);
}

static int apply_public_report(struct store *s,
                               MDB_txn *txn,
                               uint64_t index,
                               const Cityops__V1__Command *cmd,
                               Cityops__V1__CommandResult *res)
{
    const Cityops__V1__PublicReportRequest *r = cmd->public_report;
    Cityops__V1__ReportRequest rr = CITYOPS__V1__REPORT_REQUEST__INIT;
    Cityops__V1__Location loc = CITYOPS__V1__LOCATION__INIT;
    Cityops__V1__Attachment *atts = NULL;
    Cityops__V1__Attachment **attp = NULL;
    char type = 0;
    char major[3];
    char minor[3];
    int rv;

    rv = check_actor(cmd, res);
    if (rv == 0) {
        rv = report_check(s, txn, r, res, &type, major, minor);
    }
    if (rv != 0) {
        return rv;
    }
    if (cmd->role != ROLE(PUBLIC)) {
        return fail(res, RC_DENIED, "public reports come with role PUBLIC");
    }
    rr.source = CITYOPS__V1__CASE_SOURCE__CASE_SOURCE_PUBLIC;
    rr.category_type = type_of_letter(type);
    rr.major_code = major;
    rr.minor_code = minor;
    rr.description = (char *)str0(r->description);
    loc.datum = r->datum;
    loc.orig_lat = r->lat;
    loc.orig_lon = r->long_;
    loc.lat = r->lat;
    loc.lon = r->long_;
    if (r->datum == CITYOPS__V1__DATUM__DATUM_GCJ02 &&
        !(r->lat == 0.0 && r->long_ == 0.0)) {
        gcj_to_wgs(r->lat, r->long_, &loc.lat, &loc.lon);
    }
    loc.address = (char *)str0(r->address_string);
    loc.grid_code = (char *)str0(r->grid_code);
    rr.location = &loc;
    if (r->n_media > 0) {
        atts = calloc(r->n_media, sizeof(*atts));
        attp = calloc(r->n_media, sizeof(*attp));
        if (atts == NULL || attp == NULL) {
            rv = store_errf(s, STORE_NOMEM, "public report: out of memory");
            goto out_free;
        }
    }
    for (size_t i = 0; i < r->n_media; i++) {
        cityops__v1__attachment__init(&atts[i]);
        atts[i].sha256 = r->media[i]->sha256;
        atts[i].uri = r->media[i]->url;
        atts[i].media_type = (char *)str0(r->media[i]->media_type);
        atts[i].stage = CITYOPS__V1__ATTACHMENT_STAGE__ATTACHMENT_STAGE_REPORT;
        attp[i] = &atts[i];
    }
    rr.n_attachments = r->n_media;
    rr.attachments = attp;
    rv = case_fsm_report(s, txn, index, cmd, &rr, res);
    if (rv == 0 && res->code == RC_OK && res->case_ != NULL) {
        rv = contact_keep(s, txn, r->contact, res);
    }
out_free:
    free(attp);
    free(atts);
    return rv;
}

/* The stored contact of @case_id, or *out NULL if none. */
static int contact_load(struct store *s,
                        MDB_txn *txn,
                        uint64_t case_id,
                        Cityops__V1__Contact **out)
{
    uint8_t k[8];
    MDB_val key = {sizeof(k), k};
    MDB_val val;
    int rc;

    *out = NULL;
    store_be64_put(k, case_id);
    rc = mdb_get(txn, s->dbi[STORE_DB_CONTACTS], &key, &val);
    if (rc == MDB_NOTFOUND) {
        return 0;
    }
    if (rc != 0) {
        return store_mdb_err(s, rc, "get contacts/%llu",
                             (unsigned long long)case_id);
    }
    *out = cityops__v1__contact__unpack(NULL, val.mv_size, val.mv_data);
    if (*out == NULL) {
        return store_errf(s, STORE_CORRUPT, "decode contacts/%llu",
                          (unsigned long long)case_id);
    }
    return 0;
}

/* Fields, then the report exists, then the case by tracking number. */
static int case_by_tracking(struct store *s,
                            MDB_txn *txn,
                            const char *tracking_no,
                            Cityops__V1__CommandResult *res,
                            Cityops__V1__Case **out)
{
    uint64_t id = 0;
    int rv;

    *out = NULL;
    rv = tracking_lookup(s, txn, tracking_no, &id);
    if (rv == STORE_NOTFOUND) {
        return fail(res, RC_NOT_FOUND, "report %.64s not found", tracking_no);
    }
    if (rv == 0) {
        rv = store_case_load(s, txn, id, out);
        if (rv == STORE_NOTFOUND) {
            rv = store_errf(s, STORE_CORRUPT,
                            "idx_tracking/%s names missing case %llu",
                            tracking_no, (unsigned long long)id);
        }
    }
    return rv;
}

static int check_tracking_no(Cityops__V1__CommandResult *res, const char *v)
{
    if (str0(v)[0] == '\0') {
        return fail(res, RC_INVALID, "service_request_id required");
    }
    return check_text(res, "service_request_id", v, TRACKING_MAX, 0);
}

/* What reopen and redact both carry: an actor, the report's tracking
 * number and a reason. */
static int check_report_action(const Cityops__V1__Command *cmd,
                               Cityops__V1__CommandResult *res,
                               const char *tracking_no,
                               const char *reason)
{
    int rv = check_actor(cmd, res);

    if (rv == 0) {
        rv = check_tracking_no(res, tracking_no);
    }
    if (rv == 0) {
        rv = check_text(res, "reason", reason, STORE_MAX_TEXT, 1);
    }
    return rv;
}

static int apply_reopen(struct store *s,
                        MDB_txn *txn,
                        uint64_t index,
                        const Cityops__V1__Command *cmd,
                        Cityops__V1__CommandResult *res)
{
    const Cityops__V1__ReopenRequest *r = cmd->reopen;
    Cityops__V1__Contact *kept = NULL;
    Cityops__V1__Case *c = NULL;
    int match = 0;
    int rv;

    rv = check_report_action(cmd, res, r->service_request_id, r->reason);
    if (rv == 0) {
        rv = check_contact(res, r->contact);
    }
    if (rv == 0 && contact_empty(r->contact)) {
        rv = fail(res, RC_INVALID,
                  "contact required: the phone, email or device id the "
                  "report was made with");
    }
    if (rv == 0) {
        rv = case_by_tracking(s, txn, r->service_request_id, res, &c);
    }
    if (rv != 0) {
        return rv;
    }
    if (cmd->role != ROLE(PUBLIC)) {
        rv = fail(res, RC_DENIED, "reopen comes with role PUBLIC");
        goto out_free_case;
    }
    if (str0(c->reporter_token)[0] != '\0') {
        rv = contact_load(s, txn, c->case_id, &kept);
        if (rv == 0) {
            rv = token_match(s, c->case_id, r->contact, kept,
                             c->reporter_token, &match);
        }
        if (kept != NULL) {
            cityops__v1__contact__free_unpacked(kept, NULL);
        }
        if (rv != 0) {
            goto out_free_case;
        }
    }
    if (!match) {
        rv = fail(res, RC_DENIED,
                  "the contact does not match the one report %s was made "
                  "with",
                  c->tracking_no);
        goto out_free_case;
    }
    rv = case_fsm_reopen(s, txn, index, cmd, c->case_id, str0(r->reason),
                         res);
out_free_case:
    cityops__v1__case__free_unpacked(c, NULL);
    return rv;
}

static int apply_redact(struct store *s,
                        MDB_txn *txn,
                        const Cityops__V1__Command *cmd,
                        Cityops__V1__CommandResult *res)
{
    const Cityops__V1__RedactRequest *r = cmd->redact;
    Cityops__V1__Case *c = NULL;
    struct store_case_ix ix;
    uint8_t k[8];
    int rv;

    rv = check_report_action(cmd, res, r->service_request_id, r->reason);
    if (rv == 0 && str0(r->reason)[0] == '\0') {
        rv = fail(res, RC_INVALID, "redact: reason required");
    }
    if (rv == 0) {
        rv = case_by_tracking(s, txn, r->service_request_id, res, &c);
    }
    if (rv != 0) {
        return rv;
    }
    if (cmd->role != ROLE(ADMIN) && cmd->role != ROLE(SHIFT_LEADER)) {
        rv = fail(res, RC_DENIED, "redact needs role ADMIN or SHIFT_LEADER");
        goto out_free_case;
    }
    store_be64_put(k, c->case_id);
    rv = del_raw(s, txn, STORE_DB_CONTACTS, k, sizeof(k));
    if (rv == 0 && str0(c->reporter_token)[0] != '\0') {
        store_case_ix_capture(c, &ix);
        rv = store_str_set(&c->reporter_token, "");
        if (rv == 0) {
            rv = store_case_save(s, txn, &ix, c);
        }
    }
    if (rv != 0) {
        goto out_free_case;
    }
    res->case_ = c;
    return 0;

out_free_case:
    cityops__v1__case__free_unpacked(c, NULL);
    return rv;
}

int public_apply(struct store *s,
                 MDB_txn *txn,
                 uint64_t index,
                 const Cityops__V1__Command *cmd,
                 Cityops__V1__CommandResult *res)
{
    int rv;

    res->code = RC_OK;
    switch (cmd->op_case) {
    case CITYOPS__V1__COMMAND__OP_PUBLIC_REPORT:
        rv = cmd->public_report != NULL
                 ? apply_public_report(s, txn, index, cmd, res)
                 : fail(res, RC_INVALID, "empty public_report");
        break;
    case CITYOPS__V1__COMMAND__OP_REOPEN:
        rv = cmd->reopen != NULL ? apply_reopen(s, txn, index, cmd, res)
                                 : fail(res, RC_INVALID, "empty reopen");
        break;
    case CITYOPS__V1__COMMAND__OP_REDACT:
        rv = cmd->redact != NULL ? apply_redact(s, txn, cmd, res)
                                 : fail(res, RC_INVALID, "empty redact");
        break;
    default:
        rv = fail(res, RC_INVALID, "not a public command");
        break;
    }
    return rv == PUB_REFUSED ? 0 : rv;
}

/* --- reads --- */

static const Cityops__V1__StageClock *
clock_of(const Cityops__V1__Case *c, Cityops__V1__Stage stage)
{
    const Cityops__V1__StageClock *found = NULL;

    for (size_t i = 0; i < c->n_clocks; i++) {
        if (c->clocks[i]->stage == stage) {
            found = c->clocks[i];
        }
    }
    return found;
}

/* Hand the caller an owned copy of @msg (built from borrowed fields). */
static int msg_dup(struct store *s,
                   const ProtobufCMessage *msg,
                   ProtobufCMessage **out)
{
    size_t len = protobuf_c_message_get_packed_size(msg);
    uint8_t *buf = malloc(len > 0 ? len : 1);

    if (buf == NULL) {
        return store_errf(s, STORE_NOMEM, "public: out of memory");
    }
    protobuf_c_message_pack(msg, buf);
    *out = protobuf_c_message_unpack(msg->descriptor, NULL, len, buf);
    free(buf);
    if (*out == NULL) {
        return store_errf(s, STORE_NOMEM, "public: out of memory");
    }
    return 0;
}

/* Names for the public: the configured category and department, else
 * the built-in catalogue and the department id. */
struct status_names {
    Cityops__V1__Category *cat;
    Cityops__V1__Department *dept;
    Cityops__V1__Case *into;
};

static void names_free(struct status_names *nm)
{
    if (nm->cat != NULL) {
        cityops__v1__category__free_unpacked(nm->cat, NULL);
    }
    if (nm->dept != NULL) {
        cityops__v1__department__free_unpacked(nm->dept, NULL);
    }
    if (nm->into != NULL) {
        cityops__v1__case__free_unpacked(nm->into, NULL);
    }
}

static int names_load(struct store *s,
                      MDB_txn *txn,
                      const Cityops__V1__Case *c,
                      struct status_names *nm)
{
    int rv;

    memset(nm, 0, sizeof(*nm));
    rv = config_category(s, txn, c->category_type, str0(c->major_code),
                         str0(c->minor_code), &nm->cat);
    if (rv == 0 || rv == STORE_NOTFOUND) {
        rv = str0(c->department_id)[0] != '\0'
                 ? config_department(s, txn, c->department_id, &nm->dept)
                 : 0;
    }
    if (rv == 0 || rv == STORE_NOTFOUND) {
        rv = c->merged_into != 0
                 ? store_case_load(s, txn, c->merged_into, &nm->into)
                 : 0;
    }
    return rv == STORE_NOTFOUND ? 0 : rv;
}

static void status_times(const Cityops__V1__Case *c,
                         const struct pub_settings *set,
                         int64_t now_us,
                         Cityops__V1__PublicStatus *st)
{
    const Cityops__V1__StageClock *dispose =
        clock_of(c, CITYOPS__V1__STAGE__STAGE_DISPOSE);

    if (c->times != NULL) {
        st->requested_datetime = c->times->reported;
        st->updated_datetime = c->times->updated;
    }
    st->expected_datetime = dispose != NULL && dispose->deadline != 0
                                ? dispose->deadline
                                : c->disposal_deadline;
    st->overdue = c->overdue || (dispose != NULL && dispose->overdue);
    st->fixed_and_checked = fixed_and_checked(c->state, c->check_passed);
    st->reopenable =
        c->state == STATE(CLOSED) && str0(c->reporter_token)[0] != '\0' &&
        (c->closure_type == CITYOPS__V1__CLOSURE_TYPE__CLOSURE_TYPE_NORMAL ||
         c->closure_type == CITYOPS__V1__CLOSURE_TYPE__CLOSURE_TYPE_OVERDUE) &&
        c->times != NULL &&
        now_us - c->times->closed <=
            (int64_t)set->reopen_window_days * US_PER_DAY;
    st->reopen_count = c->reopen_count;
}

static int status_build(struct store *s,
                        MDB_txn *txn,
                        const Cityops__V1__Case *c,
                        int64_t now_us,
                        Cityops__V1__PublicStatus **out)
{
    Cityops__V1__PublicStatus st = CITYOPS__V1__PUBLIC_STATUS__INIT;
    const struct builtin_service *svc;
    struct status_names nm;
    struct pub_settings set;
    char code[8];
    char type = type_letter(c->category_type);
    char **urls = NULL;
    size_t n_urls = 0;
    int rv;

    rv = settings_get(s, txn, &set);
    if (rv == 0) {
        rv = names_load(s, txn, c, &nm);
    }
    if (rv != 0) {
        return rv;
    }
    snprintf(code, sizeof(code), "%c-%.2s%.2s", type, str0(c->major_code),
             str0(c->minor_code));
    svc = builtin_find(type, str0(c->major_code), str0(c->minor_code));
    st.service_request_id = (char *)str0(c->tracking_no);
    st.status = state_closed(c->state) ? "closed" : "open";
    st.detailed_status = (char *)detailed_status(c->state, c->check_passed);
    st.status_notes = (char *)status_note(c->state, c->check_passed);
    st.service_code = code;
    st.service_name = nm.cat != NULL   ? nm.cat->name
                      : svc != NULL ? (char *)svc->name
                                    : "";
    st.description = (char *)str0(c->description);
    st.agency_responsible = nm.dept != NULL && str0(nm.dept->name)[0] != '\0'
                                ? nm.dept->name
                                : (char *)str0(c->department_id);
    st.jurisdiction_id = set.jurisdiction_id;
    status_times(c, &set, now_us, &st);
    if (c->location != NULL) {
        st.lat = c->location->lat;
        st.long_ = c->location->lon;
        st.address = (char *)str0(c->location->address);
    }
    if (c->n_attachments > 0) {
        urls = calloc(c->n_attachments, sizeof(*urls));
        if (urls == NULL) {
            names_free(&nm);
            return store_errf(s, STORE_NOMEM, "public: out of memory");
        }
    }
    for (size_t i = 0; i < c->n_attachments; i++) {
        if (c->attachments[i]->stage ==
            CITYOPS__V1__ATTACHMENT_STAGE__ATTACHMENT_STAGE_REPORT) {
            urls[n_urls++] = (char *)str0(c->attachments[i]->uri);
        }
    }
    st.n_media_url = n_urls;
    st.media_url = urls;
    if (nm.into != NULL) {
        st.merged_into = nm.into->tracking_no;
        st.status_notes = "Duplicate of another report: follow that one.";
    }
    rv = msg_dup(s, &st.base, (ProtobufCMessage **)out);
    names_free(&nm);
    free(urls);
    return rv;
}

static int applied_get(struct store *s, MDB_txn *txn, uint64_t *applied)
{
    uint64_t idx = 0;
    int rv = store_meta_get(s, txn, STORE_META_APPLIED, &idx);

    if (rv == 0 && applied != NULL) {
        *applied = idx;
    }
    return rv;
}

/* The public status of the case of @tracking_no, or if NULL of @case_id. */
static int public_get(struct store *s,
                      const char *tracking_no,
                      uint64_t case_id,
                      int64_t now_us,
                      Cityops__V1__PublicStatus **out,
                      uint64_t *applied)
{
    Cityops__V1__Case *c = NULL;
    MDB_txn *txn;
    int rv;

    rv = store_read_begin(s, &txn);
    if (rv != 0) {
        return rv;
    }
    rv = applied_get(s, txn, applied);
    if (rv == 0 && tracking_no != NULL) {
        rv = tracking_lookup(s, txn, tracking_no, &case_id);
    }
    if (rv == 0) {
        rv = store_case_load(s, txn, case_id, &c);
    }
    if (rv == 0) {
        rv = status_build(s, txn, c, now_us, out);
        cityops__v1__case__free_unpacked(c, NULL);
    }
    store_read_end(s, txn);
    return rv;
}

int store_public_get(struct store *s,
                     const char *tracking_no,
                     int64_t now_us,
                     Cityops__V1__PublicStatus **out,
                     uint64_t *applied)
{
    return public_get(s, str0(tracking_no), 0, now_us, out, applied);
}

int store_public_get_case(struct store *s,
                          uint64_t case_id,
                          int64_t now_us,
                          Cityops__V1__PublicStatus **out,
                          uint64_t *applied)
{
    return public_get(s, NULL, case_id, now_us, out, applied);
}

/* Cursors are the hex of the last feed key returned. */
static int cursor_parse(const char *cur, uint8_t k[FEED_KEY_SIZE], int *set)
{
    size_t n = strlen(str0(cur));

    *set = 0;
    if (n == 0) {
        return 0;
    }
    if (n != 2 * FEED_KEY_SIZE) {
        return STORE_INVALID;
    }
    for (size_t i = 0; i < FEED_KEY_SIZE; i++) {
        unsigned v = 0;

        for (int j = 0; j < 2; j++) {
            char ch = cur[2 * i + j];

            v <<= 4;
            if (ch >= '0' && ch <= '9') {
                v |= (unsigned)(ch - '0');
            } else if (ch >= 'a' && ch <= 'f') {
                v |= (unsigned)(ch - 'a' + 10);
            } else {
                return STORE_INVALID;
            }
        }
        k[i] = (uint8_t)v;
    }
    *set = 1;
    return 0;
}

static void cursor_format(const uint8_t *k, char out[2 * FEED_KEY_SIZE + 1])
{
    static const char hex[] = "0123456789abcdef";

    for (size_t i = 0; i < FEED_KEY_SIZE; i++) {
        out[2 * i] = hex[k[i] >> 4];
        out[2 * i + 1] = hex[k[i] & 15];
    }
    out[2 * FEED_KEY_SIZE] = '\0';
}

struct feed_out {
    Cityops__V1__PublicUpdate **rows;
    size_t n;
    size_t max;
    uint8_t last[FEED_KEY_SIZE];
};

static int feed_push(struct store *s,
                     struct feed_out *o,
                     const MDB_val *k,
                     const MDB_val *v)
{
    Cityops__V1__PublicUpdate *u =
        cityops__v1__public_update__unpack(NULL, v->mv_size, v->mv_data);

    if (u == NULL) {
        return store_errf(s, STORE_CORRUPT, "decode public_feed row");
    }
    o->rows[o->n++] = u;
    memcpy(o->last, k->mv_data, FEED_KEY_SIZE);
    return 0;
}

static int feed_walk_all(struct store *s,
                         MDB_txn *txn,
                         const uint8_t *after,
                         int after_set,
                         struct feed_out *o)
{
    MDB_cursor *cur;
    MDB_val k;
    MDB_val v;
    uint8_t start[FEED_KEY_SIZE];
    int rv = 0;
    int rc;

    rc = mdb_cursor_open(txn, s->dbi[STORE_DB_PUBLIC_FEED], &cur);
    if (rc != 0) {
        return store_mdb_err(s, rc, "cursor public_feed");
    }
    if (after_set) {
        memcpy(start, after, FEED_KEY_SIZE);
        k.mv_size = FEED_KEY_SIZE;
        k.mv_data = start;
        rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
        if (rc == 0 && k.mv_size == FEED_KEY_SIZE &&
            memcmp(k.mv_data, after, FEED_KEY_SIZE) == 0) {
            rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT);
        }
    } else {
        rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST);
    }
    while (rv == 0 && rc == 0 && o->n < o->max) {
        if (k.mv_size == FEED_KEY_SIZE) {
            rv = feed_push(s, o, &k, &v);
        }
        rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT);
    }
    if (rv == 0 && rc != 0 && rc != MDB_NOTFOUND) {
        rv = store_mdb_err(s, rc, "walk public_feed");
    }
    mdb_cursor_close(cur);
    return rv;
}

/* One report's rows: its events name their feed keys. */
static int feed_walk_case(struct store *s,
                          MDB_txn *txn,
                          uint64_t case_id,
                          const uint8_t *after,
                          int after_set,
                          struct feed_out *o)
{
    MDB_cursor *cur;
    uint8_t ek[8];
    MDB_val k = {sizeof(ek), ek};
    MDB_val v;
    int rv = 0;
    int rc;

    rc = mdb_cursor_open(txn, s->dbi[STORE_DB_CASE_EVENTS], &cur);
    if (rc != 0) {
        return store_mdb_err(s, rc, "cursor case_events");
    }
    store_be64_put(ek, case_id);
    rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
    while (rv == 0 && rc == 0 && o->n < o->max && k.mv_size == 12 &&
           store_be64_get(k.mv_data) == case_id) {
        Cityops__V1__CaseEvent *ev =
            cityops__v1__case_event__unpack(NULL, v.mv_size, v.mv_data);
        uint8_t fk[FEED_KEY_SIZE];
        MDB_val key = {sizeof(fk), fk};
        MDB_val row;

        if (ev == NULL) {
            rv = store_errf(s, STORE_CORRUPT, "decode case_event/%llu",
                            (unsigned long long)case_id);
            break;
        }
        feed_key(fk, ev->at, ev->raft_index, ev->case_id, ev->seq);
        cityops__v1__case_event__free_unpacked(ev, NULL);
        if (!after_set || memcmp(fk, after, FEED_KEY_SIZE) > 0) {
            rc = mdb_get(txn, s->dbi[STORE_DB_PUBLIC_FEED], &key, &row);
            if (rc == 0) {
                rv = feed_push(s, o, &key, &row);
            } else if (rc != MDB_NOTFOUND) {
                rv = store_mdb_err(s, rc, "get public_feed");
                break;
            }
        }
        rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT);
    }
    if (rv == 0 && rc != 0 && rc != MDB_NOTFOUND) {
        rv = store_mdb_err(s, rc, "walk case_events");
    }
    mdb_cursor_close(cur);
    return rv;
}

int store_public_updates(struct store *s,
                         const char *cursor,
                         size_t max,
                         const char *tracking_no,
                         Cityops__V1__UpdatesResponse **out)
{
    Cityops__V1__UpdatesResponse *resp;
    struct feed_out o;
    uint8_t after[FEED_KEY_SIZE];
    char next[2 * FEED_KEY_SIZE + 1];
    int after_set;
    uint64_t id = 0;
    MDB_txn *txn;
    int rv;

    if (cursor_parse(cursor, after, &after_set) != 0) {
        return store_errf(s, STORE_INVALID, "bad cursor");
    }
    memset(&o, 0, sizeof(o));
    o.max = max == 0 ? STORE_PUBLIC_UPDATES_DEFAULT : max;
    if (o.max > STORE_PUBLIC_UPDATES_MAX) {
        o.max = STORE_PUBLIC_UPDATES_MAX;
    }
    o.rows = calloc(o.max, sizeof(*o.rows));
    resp = malloc(sizeof(*resp));
    if (o.rows == NULL || resp == NULL) {
        free(o.rows);
        free(resp);
        return store_errf(s, STORE_NOMEM, "updates: out of memory");
    }
    cityops__v1__updates_response__init(resp);
    rv = store_read_begin(s, &txn);
    if (rv != 0) {
        goto err_free;
    }
    if (str0(tracking_no)[0] != '\0') {
        rv = tracking_lookup(s, txn, tracking_no, &id);
        if (rv == 0) {
            rv = feed_walk_case(s, txn, id, after, after_set, &o);
        }
    } else {
        rv = feed_walk_all(s, txn, after, after_set, &o);
    }
    store_read_end(s, txn);
    if (rv != 0) {
        goto err_free;
    }
    if (o.n > 0) {
        cursor_format(o.last, next);
    } else if (after_set) {
        cursor_format(after, next);
    } else {
        next[0] = '\0';
    }
    resp->next_cursor = strdup(next);
    if (resp->next_cursor == NULL) {
        rv = store_errf(s, STORE_NOMEM, "updates: out of memory");
        goto err_free;
    }
    resp->updates = o.rows;
    resp->n_updates = o.n;
    if (o.n == 0) {
        free(o.rows);
        resp->updates = NULL;
    }
    *out = resp;
    return 0;

err_free:
    store_msgs_free((ProtobufCMessage **)o.rows, o.n);
    resp->next_cursor = NULL;
    free(resp);
    return rv;
}

static double haversine_m(double lat1, double lon1, double lat2, double lon2)
{
    double p1 = lat1 * M_PI / 180.0;
    double p2 = lat2 * M_PI / 180.0;
    double dp = p2 - p1;
    double dl = (lon2 - lon1) * M_PI / 180.0;
    double a = sin(dp / 2) * sin(dp / 2) +
               cos(p1) * cos(p2) * sin(dl / 2) * sin(dl / 2);

    if (a > 1.0) {
        a = 1.0;
    }
    return 2.0 * EARTH_RADIUS_M * asin(sqrt(a));
}

struct near_hit {
    uint64_t case_id;
    double distance_m;
};

static int hit_cmp(const void *a, const void *b)
{
    const struct near_hit *x = a;
    const struct near_hit *y = b;

    if (x->distance_m != y->distance_m) {
        return x->distance_m < y->distance_m ? -1 : 1;
    }
    return x->case_id < y->case_id ? -1 : x->case_id > y->case_id;
}

/* Candidates in one cell reported at or after q->since. */
static int near_cell(struct store *s,
                     MDB_cursor *cur,
                     const struct store_public_near *q,
                     const uint8_t prefix[13],
                     struct near_hit *hits,
                     size_t *n)
{
    uint8_t start[21];
    MDB_val k = {sizeof(start), start};
    MDB_val v;
    int rc;

    memcpy(start, prefix, 13);
    time_key(start + 13, q->since);
    rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
    while (rc == 0 && *n < MAX_CANDIDATES) {
        const uint8_t *kp = k.mv_data;
        uint64_t id;
        double d;

        if (k.mv_size != GEO_KEY_SIZE || memcmp(kp, prefix, 13) != 0) {
            break;
        }
        id = store_be64_get(kp + 21);
        if (v.mv_size == 16 && id != q->exclude_case_id &&
            time_from_key(kp + 13) >= q->since) {
            d = haversine_m(q->lat, q->lon, double_get(v.mv_data),
                            double_get((const uint8_t *)v.mv_data + 8));
            if (d <= q->radius_m) {
                hits[*n].case_id = id;
                hits[*n].distance_m = d;
                (*n)++;
            }
        }
        rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT);
    }
    if (rc != 0 && rc != MDB_NOTFOUND) {
        return store_mdb_err(s, rc, "walk idx_geo");
    }
    return 0;
}

static int near_scan(struct store *s,
                     MDB_txn *txn,
                     const struct store_public_near *q,
                     struct near_hit *hits,
                     size_t *n)
{
    double dlat = q->radius_m / 111320.0;
    double c = cos(q->lat * M_PI / 180.0);
    double dlon;
    int64_t la0, la1, lo0, lo1;
    MDB_cursor *cur;
    uint8_t prefix[13];
    int rv = 0;
    int rc;

    if (c < 0.01) {
        c = 0.01;
    }
    dlon = q->radius_m / (111320.0 * c);
    la0 = (int64_t)floor((q->lat - dlat) / CELL_DEG);
    la1 = (int64_t)floor((q->lat + dlat) / CELL_DEG);
    lo0 = (int64_t)floor((q->lon - dlon) / CELL_DEG);
    lo1 = (int64_t)floor((q->lon + dlon) / CELL_DEG);
    if (la1 - la0 >= MAX_CELLS_PER_AXIS) {
        la1 = la0 + MAX_CELLS_PER_AXIS - 1;
    }
    if (lo1 - lo0 >= MAX_CELLS_PER_AXIS) {
        lo1 = lo0 + MAX_CELLS_PER_AXIS - 1;
    }
    rc = mdb_cursor_open(txn, s->dbi[STORE_DB_IDX_GEO], &cur);
    if (rc != 0) {
        return store_mdb_err(s, rc, "cursor idx_geo");
    }
    for (int64_t la = la0; rv == 0 && la <= la1; la++) {
        for (int64_t lo = lo0; rv == 0 && lo <= lo1; lo++) {
            geo_prefix(prefix, (int)q->category_type, q->major_code,
                       q->minor_code, (uint32_t)(la + 0x80000000LL),
                       (uint32_t)(lo + 0x80000000LL));
            rv = near_cell(s, cur, q, prefix, hits, n);
        }
    }
    mdb_cursor_close(cur);
    return rv;
}

static int hints_build(struct store *s,
                       MDB_txn *txn,
                       const struct near_hit *hits,
                       size_t n_hits,
                       size_t max,
                       Cityops__V1__DuplicateHint ***out,
                       size_t *n)
{
    Cityops__V1__DuplicateHint **v;
    int rv = 0;

    v = calloc(max > 0 ? max : 1, sizeof(*v));
    if (v == NULL) {
        return store_errf(s, STORE_NOMEM, "duplicates: out of memory");
    }
    for (size_t i = 0; i < n_hits && *n < max && rv == 0; i++) {
        Cityops__V1__DuplicateHint h = CITYOPS__V1__DUPLICATE_HINT__INIT;
        Cityops__V1__Case *c = NULL;

        rv = store_case_load(s, txn, hits[i].case_id, &c);
        if (rv == STORE_NOTFOUND) {
            rv = 0;
            continue;
        }
        if (rv != 0) {
            break;
        }
        h.service_request_id = (char *)str0(c->tracking_no);
        h.distance_m = hits[i].distance_m;
        h.status = state_closed(c->state) ? "closed" : "open";
        rv = msg_dup(s, &h.base, (ProtobufCMessage **)&v[*n]);
        if (rv == 0) {
            (*n)++;
        }
        cityops__v1__case__free_unpacked(c, NULL);
    }
    if (rv != 0) {
        store_msgs_free((ProtobufCMessage **)v, *n);
        *n = 0;
        return rv;
    }
    *out = v;
    return 0;
}

int store_public_duplicates(struct store *s,
                            const struct store_public_near *q,
                            Cityops__V1__DuplicateHint ***out,
                            size_t *n)
{
    struct store_public_near qq = *q;
    struct near_hit *hits;
    size_t n_hits = 0;
    size_t max = q->max == 0 ? 10 : q->max;
    MDB_txn *txn;
    int rv;

    *out = NULL;
    *n = 0;
    if (!isfinite(qq.lat) || !isfinite(qq.lon) || qq.lat < -90.0 ||
        qq.lat > 90.0 || qq.lon < -180.0 || qq.lon > 180.0 ||
        !(qq.radius_m >= 0.0)) {
        return store_errf(s, STORE_INVALID, "duplicates: bad position");
    }
    if (qq.radius_m > STORE_PUBLIC_DUP_MAX_RADIUS_M) {
        qq.radius_m = STORE_PUBLIC_DUP_MAX_RADIUS_M;
    }
    if (max > 50) {
        max = 50;
    }
    hits = calloc(MAX_CANDIDATES, sizeof(*hits));
    if (hits == NULL) {
        return store_errf(s, STORE_NOMEM, "duplicates: out of memory");
    }
    rv = store_read_begin(s, &txn);
    if (rv == 0) {
        rv = near_scan(s, txn, &qq, hits, &n_hits);
        if (rv == 0) {
            qsort(hits, n_hits, sizeof(*hits), hit_cmp);
            rv = hints_build(s, txn, hits, n_hits, max, out, n);
        }
        store_read_end(s, txn);
    }
    free(hits);
    return rv;
}

static int services_builtin(struct store *s,
                            Cityops__V1__ServicesResponse **out)
{
    Cityops__V1__ServicesResponse resp = CITYOPS__V1__SERVICES_RESPONSE__INIT;
    Cityops__V1__Service svc[N_BUILTIN];
    Cityops__V1__Service *p[N_BUILTIN];
    char codes[N_BUILTIN][8];

    for (size_t i = 0; i < N_BUILTIN; i++) {
        const struct builtin_service *b = &builtin_services[i];

        cityops__v1__service__init(&svc[i]);
        snprintf(codes[i], sizeof(codes[i]), "%c-%s%s", b->type, b->major,
                 b->minor);
        svc[i].service_code = codes[i];
        svc[i].service_name = (char *)b->name;
        svc[i].group = (char *)b->group;
        svc[i].description = b->type == 'C' ? "部件 component" : "事件 event";
        svc[i].type = "realtime";
        p[i] = &svc[i];
    }
    resp.services = p;
    resp.n_services = N_BUILTIN;
    return msg_dup(s, &resp.base, (ProtobufCMessage **)out);
}

static int services_configured(struct store *s,
                               Cityops__V1__Category **cats,
                               size_t n_cats,
                               Cityops__V1__ServicesResponse **out)
{
    Cityops__V1__ServicesResponse resp = CITYOPS__V1__SERVICES_RESPONSE__INIT;
    Cityops__V1__Service *svc = calloc(n_cats + 1, sizeof(*svc));
    Cityops__V1__Service **p = calloc(n_cats + 1, sizeof(*p));
    char (*codes)[8] = calloc(n_cats + 1, sizeof(*codes));
    int rv;

    if (svc == NULL || p == NULL || codes == NULL) {
        rv = store_errf(s, STORE_NOMEM, "services: out of memory");
        goto out_free;
    }
    for (size_t i = 0; i < n_cats; i++) {
        const Cityops__V1__Category *c = cats[i];
        char type = type_letter(c->type);
        Cityops__V1__Service *v = &svc[resp.n_services];

        if (c->retired) {
            continue;
        }
        cityops__v1__service__init(v);
        snprintf(codes[resp.n_services], sizeof(codes[0]), "%c-%.2s%.2s",
                 type, str0(c->major_code), str0(c->minor_code));
        v->service_code = codes[resp.n_services];
        v->service_name = (char *)str0(c->name);
        v->group = (char *)str0(c->major_name);
        v->description = type == 'C' ? "部件 component" : "事件 event";
        v->type = "realtime";
        v->metadata = c->n_conditions > 1;
        p[resp.n_services++] = v;
    }
    resp.services = p;
    rv = msg_dup(s, &resp.base, (ProtobufCMessage **)out);
out_free:
    free(codes);
    free(p);
    free(svc);
    return rv;
}

int store_public_services(struct store *s, Cityops__V1__ServicesResponse **out)
{
    ProtobufCMessage **cats = NULL;
    size_t n = 0;
    MDB_txn *txn;
    int rv;

    rv = store_read_begin(s, &txn);
    if (rv != 0) {
        return rv;
    }
    rv = config_list(s, txn, 4, &cats, &n);
    store_read_end(s, txn);
    if (rv != 0 && rv != STORE_NOTFOUND) {
        return rv;
    }
    if (n == 0) {
        rv = services_builtin(s, out);
    } else {
        rv = services_configured(s, (Cityops__V1__Category **)cats, n, out);
    }
    store_msgs_free(cats, n);
    return rv;
}
