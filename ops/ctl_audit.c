/* cityctl audit ...: read and verify the tamper-evident audit trail.
 *
 *   audit list [--target T] [--actor A] [--from T] [--to T] [--all]
 *   audit checkpoint                ask the leader for a signed tree head now
 *   audit heads                     the tree heads held, oldest first
 *   audit verify [--public-key PEM] recompute the whole chain, every tree
 *                                   head and signature, and the current value
 *                                   of every case against the trail
 *   audit verify --archive FILE     the same, offline, for an archive file
 *   audit archive --out FILE [--to-seq N]
 *                                   copy records [0, N) and their heads to
 *                                   a file that verifies on its own
 *   audit proof SEQ [--tree-size N] check one record's inclusion proof
 *   audit consistency M N           RFC 6962 consistency proof M -> N
 *
 * Verification happens here, on the operator's machine, from what the node
 * serves: nothing is taken on trust from the node but the bytes. Reads
 * default to STALE, so `--endpoints` picks the replica that is checked. */
#include <string.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/sha.h>

#include "cityops/v1/audit.pb-c.h"
#include "ops.h"

#define HASH 32

struct trail {
    Cityops__V1__AuditRecord **recs;
    size_t n;
    ProtobufCMessage **pages;
    size_t n_pages;
};

static void trail_free(struct trail *t)
{
    for (size_t i = 0; i < t->n_pages; i++) {
        protobuf_c_message_free_unpacked(t->pages[i], NULL);
    }
    free(t->pages);
    free(t->recs);
}

static int read_fill(struct ops_ctl *ctl, Cityops__V1__ReadOptions *read)
{
    ops_read_fill(ctl, read, CITYOPS__V1__CONSISTENCY__CONSISTENCY_STALE);
    return 0;
}

/* Every record, following page tokens. */
static int trail_fetch(struct ops_ctl *ctl,
                       const Cityops__V1__AuditListRequest *filter,
                       struct trail *t)
{
    Cityops__V1__AuditListRequest req = *filter;
    Cityops__V1__ReadOptions read = CITYOPS__V1__READ_OPTIONS__INIT;
    char token[32] = "";
    int rv;

    memset(t, 0, sizeof *t);
    read_fill(ctl, &read);
    req.read = &read;
    req.page_size = 1000;
    for (;;) {
        ProtobufCMessage *resp = NULL;
        Cityops__V1__AuditListResponse *r;
        void *grown;

        req.page_token = token;
        rv = ops_call(ctl, "Audit/List", &req.base,
                      &cityops__v1__audit_list_response__descriptor, &resp);
        if (rv != OPS_EXIT_OK) {
            trail_free(t);
            return rv;
        }
        r = (Cityops__V1__AuditListResponse *)resp;
        grown = realloc(t->pages, (t->n_pages + 1) * sizeof *t->pages);
        if (grown == NULL) {
            protobuf_c_message_free_unpacked(resp, NULL);
            trail_free(t);
            return OPS_EXIT_FAIL;
        }
        t->pages = grown;
        t->pages[t->n_pages++] = resp;
        grown = realloc(t->recs, (t->n + r->n_records + 1) * sizeof *t->recs);
        if (grown == NULL) {
            trail_free(t);
            return OPS_EXIT_FAIL;
        }
        t->recs = grown;
        for (size_t i = 0; i < r->n_records; i++) {
            t->recs[t->n++] = r->records[i];
        }
        if (r->next_page_token == NULL || r->next_page_token[0] == '\0') {
            return OPS_EXIT_OK;
        }
        snprintf(token, sizeof token, "%s", r->next_page_token);
    }
}

static void hex(const uint8_t *b, size_t n, char *out)
{
    for (size_t i = 0; i < n; i++) {
        sprintf(out + 2 * i, "%02x", b[i]);
    }
    out[2 * n] = '\0';
}

/* hash = SHA-256(prev_hash || record packed with `hash` empty) */
static void record_hash(const Cityops__V1__AuditRecord *rec, uint8_t out[HASH])
{
    Cityops__V1__AuditRecord copy = *rec;
    size_t len;
    uint8_t *buf;
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    unsigned int olen = HASH;

    copy.hash.data = NULL;
    copy.hash.len = 0;
    len = cityops__v1__audit_record__get_packed_size(&copy);
    buf = malloc(len > 0 ? len : 1);
    cityops__v1__audit_record__pack(&copy, buf);
    EVP_DigestInit_ex(ctx, EVP_sha256(), NULL);
    EVP_DigestUpdate(ctx, rec->prev_hash.data, rec->prev_hash.len);
    EVP_DigestUpdate(ctx, buf, len);
    EVP_DigestFinal_ex(ctx, out, &olen);
    EVP_MD_CTX_free(ctx);
    free(buf);
}

static void sha256_prefixed(uint8_t prefix,
                            const uint8_t *a,
                            const uint8_t *b,
                            uint8_t out[HASH])
{
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    unsigned int olen = HASH;

    EVP_DigestInit_ex(ctx, EVP_sha256(), NULL);
    EVP_DigestUpdate(ctx, &prefix, 1);
    EVP_DigestUpdate(ctx, a, HASH);
    if (b != NULL) {
        EVP_DigestUpdate(ctx, b, HASH);
    }
    EVP_DigestFinal_ex(ctx, out, &olen);
    EVP_MD_CTX_free(ctx);
}

/* RFC 6962 MTH over leaf hashes [lo, hi). */
static void mth(const uint8_t (*leaves)[HASH], size_t lo, size_t hi,
                uint8_t out[HASH])
{
    uint8_t l[HASH];
    uint8_t r[HASH];
    size_t n = hi - lo;
    size_t k = 1;

    if (n == 0) {
        EVP_Digest("", 0, out, NULL, EVP_sha256(), NULL);
        return;
    }
    if (n == 1) {
        memcpy(out, leaves[lo], HASH);
        return;
    }
    while (k * 2 < n) {
        k *= 2;
    }
    mth(leaves, lo, lo + k, l);
    mth(leaves, lo + k, hi, r);
    sha256_prefixed(1, l, r, out);
}

static int signature_ok(const Cityops__V1__Checkpoint *cp,
                        const uint8_t *want_key)
{
    uint8_t msg[21 + 8 + HASH + 8];
    EVP_PKEY *pk;
    EVP_MD_CTX *ctx;
    int ok;

    if (cp->signature.len == 0 || cp->public_key.len != 32 ||
        cp->root_hash.len != HASH) {
        return 0;
    }
    if (want_key != NULL && memcmp(want_key, cp->public_key.data, 32) != 0) {
        return 0;
    }
    memcpy(msg, "cityops-checkpoint-v1", 21);
    for (int i = 0; i < 8; i++) {
        msg[21 + i] = (uint8_t)(cp->tree_size >> (56 - 8 * i));
        msg[21 + 8 + HASH + i] = (uint8_t)((uint64_t)cp->time >> (56 - 8 * i));
    }
    memcpy(msg + 29, cp->root_hash.data, HASH);
    pk = EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, NULL,
                                     cp->public_key.data, 32);
    ctx = EVP_MD_CTX_new();
    ok = pk != NULL && ctx != NULL &&
         EVP_DigestVerifyInit(ctx, NULL, NULL, NULL, pk) == 1 &&
         EVP_DigestVerify(ctx, cp->signature.data, cp->signature.len, msg,
                          sizeof msg) == 1;
    EVP_MD_CTX_free(ctx);
    EVP_PKEY_free(pk);
    return ok;
}

static int load_public_key(struct ops_ctl *ctl, const char *path,
                           uint8_t out[32])
{
    FILE *f = fopen(path, "r");
    EVP_PKEY *pk = NULL;
    size_t len = 32;

    if (f != NULL) {
        pk = PEM_read_PUBKEY(f, NULL, NULL, NULL);
        if (pk == NULL) {
            rewind(f);
            pk = PEM_read_PrivateKey(f, NULL, NULL, NULL);
        }
        fclose(f);
    }
    if (pk == NULL || EVP_PKEY_id(pk) != EVP_PKEY_ED25519 ||
        EVP_PKEY_get_raw_public_key(pk, out, &len) != 1) {
        EVP_PKEY_free(pk);
        return ops_usage_error(ctl, "--public-key %s: not an Ed25519 PEM key",
                               path);
    }
    EVP_PKEY_free(pk);
    return OPS_EXIT_OK;
}

/* Walk the chain; returns the first bad seq, or n if all good. */
static size_t chain_check(const struct trail *t, const char **why)
{
    uint8_t prev[HASH] = {0};
    uint8_t h[HASH];

    for (size_t i = 0; i < t->n; i++) {
        const Cityops__V1__AuditRecord *r = t->recs[i];
        if (r->seq != i) {
            *why = "records missing or out of order";
            return i;
        }
        if (r->prev_hash.len != HASH || memcmp(r->prev_hash.data, prev, HASH)) {
            *why = "prev_hash does not link to the record before";
            return i;
        }
        record_hash(r, h);
        if (r->hash.len != HASH || memcmp(r->hash.data, h, HASH) != 0) {
            *why = "content does not match its hash (record altered)";
            return i;
        }
        memcpy(prev, h, HASH);
    }
    return t->n;
}

/* Compare every case's current value with the trail's last after-digest. */
static int cases_check(struct ops_ctl *ctl, const struct trail *t,
                       size_t *n_cases, size_t *n_bad)
{
    Cityops__V1__ListRequest req = CITYOPS__V1__LIST_REQUEST__INIT;
    Cityops__V1__ReadOptions read = CITYOPS__V1__READ_OPTIONS__INIT;
    char token[32] = "";
    int rv;

    *n_cases = 0;
    *n_bad = 0;
    read_fill(ctl, &read);
    req.read = &read;
    req.page_size = 500;
    for (;;) {
        ProtobufCMessage *resp = NULL;
        Cityops__V1__ListResponse *r;

        req.page_token = token;
        rv = ops_call(ctl, "Cases/List", &req.base,
                      &cityops__v1__list_response__descriptor, &resp);
        if (rv != OPS_EXIT_OK) {
            return rv;
        }
        r = (Cityops__V1__ListResponse *)resp;
        for (size_t i = 0; i < r->n_cases; i++) {
            char target[40];
            uint8_t h[HASH];
            size_t len = cityops__v1__case__get_packed_size(r->cases[i]);
            uint8_t *buf = malloc(len > 0 ? len : 1);
            const Cityops__V1__AuditRecord *last = NULL;

            cityops__v1__case__pack(r->cases[i], buf);
            EVP_Digest(buf, len, h, NULL, EVP_sha256(), NULL);
            free(buf);
            snprintf(target, sizeof target, "case/%llu",
                     (unsigned long long)r->cases[i]->case_id);
            for (size_t k = t->n; k-- > 0;) {
                if (strcmp(t->recs[k]->target, target) == 0 &&
                    t->recs[k]->after_sha256.len == HASH) {
                    last = t->recs[k];
                    break;
                }
            }
            (*n_cases)++;
            if (last == NULL) {
                printf("MISMATCH %s: no record of it in the trail\n", target);
                (*n_bad)++;
            } else if (memcmp(last->after_sha256.data, h, HASH) != 0) {
                printf("MISMATCH %s: stored value differs from the trail's "
                       "last change (seq %llu, %s by %s)\n",
                       target, (unsigned long long)last->seq,
                       last->operation, last->actor_id);
                (*n_bad)++;
            }
        }
        snprintf(token, sizeof token, "%s", r->next_page_token);
        protobuf_c_message_free_unpacked(resp, NULL);
        if (token[0] == '\0') {
            return OPS_EXIT_OK;
        }
    }
}

/* The chain, then every tree head and its signature. Returns 1 if anything
 * is wrong (each finding printed). */
static int verify_trail(const struct trail *t,
                        const Cityops__V1__CheckpointList *cps,
                        const uint8_t *key)
{
    uint8_t (*leaves)[HASH] = calloc(t->n + 1, sizeof *leaves);
    const char *why = "";
    size_t bad_at = chain_check(t, &why);
    int bad = 0;

    if (bad_at < t->n) {
        printf("CHAIN BROKEN at record %zu: %s\n", bad_at, why);
        printf("  record %zu: %s %s by %s (raft index %llu)\n", bad_at,
               t->recs[bad_at]->operation, t->recs[bad_at]->target,
               t->recs[bad_at]->actor_id,
               (unsigned long long)t->recs[bad_at]->raft_index);
        bad = 1;
    } else {
        printf("chain: %zu records, every hash recomputed and linked\n", t->n);
    }
    for (size_t i = 0; leaves != NULL && i < t->n; i++) {
        if (t->recs[i]->hash.len == HASH) {
            sha256_prefixed(0, t->recs[i]->hash.data, NULL, leaves[i]);
        }
    }
    for (size_t i = 0; leaves != NULL && i < cps->n_checkpoints; i++) {
        const Cityops__V1__Checkpoint *cp = cps->checkpoints[i];
        uint8_t root[HASH];
        char rh[2 * HASH + 1] = "";
        const char *sig;

        if (cp->tree_size > t->n) {
            printf("CHECKPOINT %llu: covers more records than the trail "
                   "holds (%zu): records were removed\n",
                   (unsigned long long)cp->tree_size, t->n);
            bad = 1;
            continue;
        }
        mth((const uint8_t (*)[HASH])leaves, 0, cp->tree_size, root);
        if (cp->root_hash.len == HASH) {
            hex(cp->root_hash.data, 8, rh);
        }
        if (cp->root_hash.len != HASH ||
            memcmp(root, cp->root_hash.data, HASH) != 0) {
            printf("CHECKPOINT %llu: Merkle root does not match the records "
                   "(a record below %llu was changed)\n",
                   (unsigned long long)cp->tree_size,
                   (unsigned long long)cp->tree_size);
            bad = 1;
            continue;
        }
        if (cp->signature.len == 0) {
            sig = "unsigned";
        } else if (signature_ok(cp, key)) {
            sig = "signature ok";
        } else {
            sig = "SIGNATURE INVALID";
            bad = 1;
        }
        printf("checkpoint %llu: root %s... matches, %s\n",
               (unsigned long long)cp->tree_size, rh, sig);
    }
    free(leaves);
    return bad;
}

/* The whole trail and the tree heads the node holds. On success the
 * caller frees *heads (protobuf_c_message_free_unpacked) and the trail. */
static int trail_and_heads_fetch(struct ops_ctl *ctl,
                                 struct trail *t,
                                 ProtobufCMessage **heads)
{
    Cityops__V1__AuditListRequest filter = CITYOPS__V1__AUDIT_LIST_REQUEST__INIT;
    Cityops__V1__ListCheckpointsRequest creq =
        CITYOPS__V1__LIST_CHECKPOINTS_REQUEST__INIT;
    Cityops__V1__ReadOptions read = CITYOPS__V1__READ_OPTIONS__INIT;
    int rv = trail_fetch(ctl, &filter, t);

    if (rv != OPS_EXIT_OK) {
        return rv;
    }
    read_fill(ctl, &read);
    creq.read = &read;
    rv = ops_call(ctl, "Audit/ListCheckpoints", &creq.base,
                  &cityops__v1__checkpoint_list__descriptor, heads);
    if (rv != OPS_EXIT_OK) {
        trail_free(t);
    }
    return rv;
}

/* Archive file: "COAUDIT1\n", then each record ('R') and finally the
 * checkpoint list ('C'), each as a kind byte, a u32 big-endian length and
 * the packed message. An archive
 * holds records [0, n): the whole history up to a point, so that it verifies
 * on its own and the live chain continues from its last hash. */
#define ARCHIVE_MAGIC "COAUDIT1\n"

static int put_msg(FILE *f, char kind, const ProtobufCMessage *m)
{
    size_t len = protobuf_c_message_get_packed_size(m);
    uint8_t hdr[5] = {(uint8_t)kind, (uint8_t)(len >> 24),
                      (uint8_t)(len >> 16), (uint8_t)(len >> 8), (uint8_t)len};
    uint8_t *buf = malloc(len > 0 ? len : 1);
    int ok;

    if (buf == NULL) {
        return -1;
    }
    protobuf_c_message_pack(m, buf);
    ok = fwrite(hdr, 1, 5, f) == 5 && fwrite(buf, 1, len, f) == len;
    free(buf);
    return ok ? 0 : -1;
}

static uint8_t *get_msg(FILE *f, char *kind, size_t *len)
{
    uint8_t hdr[5];
    uint8_t *buf;

    if (fread(hdr, 1, 5, f) != 5) {
        return NULL;
    }
    *kind = (char)hdr[0];
    *len = (size_t)hdr[1] << 24 | (size_t)hdr[2] << 16 | (size_t)hdr[3] << 8 |
           hdr[4];
    if (*len > 64u << 20) {
        return NULL;
    }
    buf = malloc(*len > 0 ? *len : 1);
    if (buf != NULL && fread(buf, 1, *len, f) != *len) {
        free(buf);
        return NULL;
    }
    return buf;
}

/* Read an archive into @t and *cps. Records and the list are unpacked; the
 * trail owns them through its pages. */
static int archive_read(struct ops_ctl *ctl, const char *path, struct trail *t,
                        Cityops__V1__CheckpointList **cps)
{
    FILE *f = fopen(path, "rb");
    char magic[sizeof ARCHIVE_MAGIC - 1];
    uint8_t *buf;
    size_t len;
    char kind;

    memset(t, 0, sizeof *t);
    *cps = NULL;
    if (f == NULL || fread(magic, 1, sizeof magic, f) != sizeof magic ||
        memcmp(magic, ARCHIVE_MAGIC, sizeof magic) != 0) {
        if (f != NULL) {
            fclose(f);
        }
        return ops_usage_error(ctl, "%s: not a cityops audit archive", path);
    }
    while (*cps == NULL && (buf = get_msg(f, &kind, &len)) != NULL) {
        ProtobufCMessage *m = NULL;
        void *grown;

        if (kind == 'C') {
            *cps = cityops__v1__checkpoint_list__unpack(NULL, len, buf);
        } else if (kind == 'R') {
            m = protobuf_c_message_unpack(
                &cityops__v1__audit_record__descriptor, NULL, len, buf);
        }
        free(buf);
        if (m == NULL) {
            break;
        }
        grown = realloc(t->pages, (t->n_pages + 1) * sizeof *t->pages);
        if (grown != NULL) {
            t->pages = grown;
            t->pages[t->n_pages++] = m;
            grown = realloc(t->recs, (t->n + 1) * sizeof *t->recs);
        }
        if (grown == NULL) {
            protobuf_c_message_free_unpacked(m, NULL);
            break;
        }
        t->recs = grown;
        t->recs[t->n++] = (Cityops__V1__AuditRecord *)m;
    }
    fclose(f);
    if (*cps == NULL) {
        trail_free(t);
        printf("archive %s is truncated or damaged\n", path);
        return OPS_EXIT_FAIL;
    }
    return OPS_EXIT_OK;
}

static int run_archive(struct ops_ctl *ctl, const struct ops_args *a)
{
    Cityops__V1__CheckpointList *cps;
    Cityops__V1__CheckpointList keep = CITYOPS__V1__CHECKPOINT_LIST__INIT;
    ProtobufCMessage *resp = NULL;
    const char *out = ops_arg(a, "out");
    uint64_t to = UINT64_MAX;
    char head[2 * HASH + 1] = "";
    struct trail t;
    FILE *f;
    int rv;

    if (out == NULL) {
        return ops_usage_error(ctl, "audit archive: --out FILE is required");
    }
    if (ops_arg(a, "to-seq") != NULL &&
        ops_parse_u64(ops_arg(a, "to-seq"), &to) != 0) {
        return ops_usage_error(ctl, "audit archive: bad --to-seq");
    }
    rv = trail_and_heads_fetch(ctl, &t, &resp);
    if (rv != OPS_EXIT_OK) {
        return rv;
    }
    cps = (Cityops__V1__CheckpointList *)resp;
    if (to > t.n) {
        to = t.n;
    }
    keep.checkpoints = cps->checkpoints;
    while (keep.n_checkpoints < cps->n_checkpoints &&
           cps->checkpoints[keep.n_checkpoints]->tree_size <= to) {
        keep.n_checkpoints++;
    }
    f = fopen(out, "wbx");
    if (f == NULL) {
        fprintf(stderr, "cityctl: audit archive: cannot create %s (it must "
                        "not exist yet)\n", out);
        rv = OPS_EXIT_FAIL;
        goto out_free;
    }
    rv = fputs(ARCHIVE_MAGIC, f) >= 0 ? 0 : -1;
    for (uint64_t i = 0; rv == 0 && i < to; i++) {
        rv = put_msg(f, 'R', &t.recs[i]->base);
    }
    if (rv == 0) {
        rv = put_msg(f, 'C', &keep.base);
    }
    if (fflush(f) != 0 || fsync(fileno(f)) != 0) {
        rv = -1;
    }
    fclose(f);
    if (rv != 0) {
        fprintf(stderr, "cityctl: audit archive: writing %s failed\n", out);
        rv = OPS_EXIT_FAIL;
        goto out_free;
    }
    if (to > 0 && t.recs[to - 1]->hash.len == HASH) {
        hex(t.recs[to - 1]->hash.data, HASH, head);
    }
    if (ctl->json) {
        json_t *j = json_pack("{s:I,s:I,s:s,s:s}", "records", (json_int_t)to,
                              "checkpoints", (json_int_t)keep.n_checkpoints,
                              "out", out, "last_hash", head);
        rv = j != NULL ? ops_json_print(j) : OPS_EXIT_FAIL;
    } else {
        printf("archived records 0..%llu and %zu tree heads to %s; last hash "
               "%s\n",
               (unsigned long long)(to > 0 ? to - 1 : 0), keep.n_checkpoints,
               out, head);
        rv = OPS_EXIT_OK;
    }
out_free:
    protobuf_c_message_free_unpacked(resp, NULL);
    trail_free(&t);
    return rv;
}

static int run_verify(struct ops_ctl *ctl, const struct ops_args *a)
{
    Cityops__V1__CheckpointList *cps = NULL;
    ProtobufCMessage *resp = NULL;
    const char *archive = ops_arg(a, "archive");
    uint8_t key[32];
    struct trail t;
    size_t n_cases = 0;
    size_t n_bad_cases = 0;
    int bad;
    int rv;

    if (ops_arg(a, "public-key") != NULL &&
        (rv = load_public_key(ctl, ops_arg(a, "public-key"), key)) != 0) {
        return rv;
    }
    if (archive != NULL) {
        rv = archive_read(ctl, archive, &t, &cps);
        if (rv != OPS_EXIT_OK) {
            return rv;
        }
        resp = &cps->base;
    } else {
        rv = trail_and_heads_fetch(ctl, &t, &resp);
        if (rv != OPS_EXIT_OK) {
            return rv;
        }
        cps = (Cityops__V1__CheckpointList *)resp;
    }
    bad = verify_trail(&t, cps, ops_arg(a, "public-key") ? key : NULL);
    if (archive == NULL) {
        rv = cases_check(ctl, &t, &n_cases, &n_bad_cases);
        if (rv == OPS_EXIT_OK && n_bad_cases == 0) {
            printf("cases: %zu current values match the trail\n", n_cases);
        } else if (rv == OPS_EXIT_OK) {
            printf("cases: %zu of %zu differ from the trail\n", n_bad_cases,
                   n_cases);
            bad = 1;
        }
    }
    protobuf_c_message_free_unpacked(resp, NULL);
    trail_free(&t);
    if (rv != OPS_EXIT_OK) {
        return rv;
    }
    printf("%s\n", bad ? "audit verify: FAILED" : "audit verify: OK");
    return bad ? OPS_EXIT_FAIL : OPS_EXIT_OK;
}

/* RFC 9162 2.1.3.2: verify an inclusion proof. */
static int inclusion_ok(uint64_t index, uint64_t size, const uint8_t *leaf,
                        ProtobufCBinaryData *path, size_t n_path,
                        const uint8_t *root)
{
    uint64_t fn = index;
    uint64_t sn = size - 1;
    uint8_t r[HASH];

    if (index >= size) {
        return 0;
    }
    memcpy(r, leaf, HASH);
    for (size_t i = 0; i < n_path; i++) {
        if (sn == 0 || path[i].len != HASH) {
            return 0;
        }
        if ((fn & 1) || fn == sn) {
            sha256_prefixed(1, path[i].data, r, r);
            if (!(fn & 1)) {
                while (fn != 0 && !(fn & 1)) {
                    fn >>= 1;
                    sn >>= 1;
                }
            }
        } else {
            sha256_prefixed(1, r, path[i].data, r);
        }
        fn >>= 1;
        sn >>= 1;
    }
    return sn == 0 && memcmp(r, root, HASH) == 0;
}

/* RFC 9162 2.1.4.2: verify a consistency proof between two tree heads. */
int ops_audit_consistency_ok(uint64_t first,
                             const uint8_t *first_root,
                             uint64_t second,
                             const uint8_t *second_root,
                             const ProtobufCBinaryData *path,
                             size_t n_path)
{
    uint64_t fn = first - 1;
    uint64_t sn = second - 1;
    uint8_t fr[HASH];
    uint8_t sr[HASH];
    size_t i = 0;

    if (first == 0 || first > second) {
        return first == 0 && n_path == 0;
    }
    if (first == second) {
        return n_path == 0 && memcmp(first_root, second_root, HASH) == 0;
    }
    while (fn & 1) {
        fn >>= 1;
        sn >>= 1;
    }
    if ((first & (first - 1)) == 0) {
        memcpy(fr, first_root, HASH); /* a power of two: the path omits it */
    } else if (n_path > 0 && path[0].len == HASH) {
        memcpy(fr, path[i++].data, HASH);
    } else {
        return 0;
    }
    memcpy(sr, fr, HASH);
    for (; i < n_path; i++) {
        if (sn == 0 || path[i].len != HASH) {
            return 0;
        }
        if ((fn & 1) || fn == sn) {
            sha256_prefixed(1, path[i].data, fr, fr);
            sha256_prefixed(1, path[i].data, sr, sr);
            while (!(fn & 1) && fn != 0) {
                fn >>= 1;
                sn >>= 1;
            }
        } else {
            sha256_prefixed(1, sr, path[i].data, sr);
        }
        fn >>= 1;
        sn >>= 1;
    }
    return sn == 0 && memcmp(fr, first_root, HASH) == 0 &&
           memcmp(sr, second_root, HASH) == 0;
}

int ops_audit_signature_ok(const Cityops__V1__Checkpoint *cp)
{
    return signature_ok(cp, NULL);
}

static int run_proof(struct ops_ctl *ctl, const struct ops_args *a)
{
    Cityops__V1__InclusionProofRequest req =
        CITYOPS__V1__INCLUSION_PROOF_REQUEST__INIT;
    Cityops__V1__ReadOptions read = CITYOPS__V1__READ_OPTIONS__INIT;
    Cityops__V1__InclusionProofResponse *p;
    ProtobufCMessage *resp = NULL;
    uint8_t h[HASH];
    uint8_t leaf[HASH];
    int rv;

    if (a->n_pos != 3 || ops_parse_u64(a->pos[2], &req.seq) != 0) {
        return ops_usage_error(ctl, "audit proof: which record (seq)?");
    }
    if (ops_arg(a, "tree-size") != NULL &&
        ops_parse_u64(ops_arg(a, "tree-size"), &req.tree_size) != 0) {
        return ops_usage_error(ctl, "audit proof: bad --tree-size");
    }
    read_fill(ctl, &read);
    req.read = &read;
    rv = ops_call(ctl, "Audit/InclusionProof", &req.base,
                  &cityops__v1__inclusion_proof_response__descriptor, &resp);
    if (rv != OPS_EXIT_OK) {
        return rv;
    }
    p = (Cityops__V1__InclusionProofResponse *)resp;
    if (ctl->json) {
        /* Scripts check the proof themselves. */
        rv = ops_json_print(ops_pb_to_json(resp));
        protobuf_c_message_free_unpacked(resp, NULL);
        return rv;
    }
    record_hash(p->record, h);
    sha256_prefixed(0, h, NULL, leaf);
    rv = OPS_EXIT_FAIL;
    if (p->record->hash.len != HASH || memcmp(h, p->record->hash.data, HASH)) {
        printf("record %llu: content does not match its hash\n",
               (unsigned long long)req.seq);
    } else if (p->checkpoint == NULL || p->checkpoint->root_hash.len != HASH) {
        printf("record %llu: no tree head of size %llu to check against\n",
               (unsigned long long)req.seq, (unsigned long long)p->tree_size);
    } else if (!inclusion_ok(req.seq, p->tree_size, leaf, p->path, p->n_path,
                             p->checkpoint->root_hash.data)) {
        printf("record %llu: inclusion proof does NOT verify against the "
               "tree head of size %llu\n",
               (unsigned long long)req.seq, (unsigned long long)p->tree_size);
    } else {
        printf("record %llu (%s %s by %s) is in the tree of size %llu "
               "(%zu hashes), head %s\n",
               (unsigned long long)req.seq, p->record->operation,
               p->record->target, p->record->actor_id,
               (unsigned long long)p->tree_size, p->n_path,
               signature_ok(p->checkpoint, NULL) ? "signature ok"
                                                 : "UNSIGNED OR BAD SIGNATURE");
        rv = signature_ok(p->checkpoint, NULL) ? OPS_EXIT_OK : OPS_EXIT_FAIL;
    }
    protobuf_c_message_free_unpacked(resp, NULL);
    return rv;
}

/* The tree heads (checkpoints) the node holds, oldest first. */
static int run_heads(struct ops_ctl *ctl)
{
    Cityops__V1__ListCheckpointsRequest req =
        CITYOPS__V1__LIST_CHECKPOINTS_REQUEST__INIT;
    Cityops__V1__ReadOptions read = CITYOPS__V1__READ_OPTIONS__INIT;
    const Cityops__V1__CheckpointList *l;
    ProtobufCMessage *resp = NULL;
    int rv;

    read_fill(ctl, &read);
    req.read = &read;
    rv = ops_call(ctl, "Audit/ListCheckpoints", &req.base,
                  &cityops__v1__checkpoint_list__descriptor, &resp);
    if (rv != OPS_EXIT_OK) {
        return rv;
    }
    if (ctl->json) {
        rv = ops_json_print(ops_pb_to_json(resp));
        protobuf_c_message_free_unpacked(resp, NULL);
        return rv;
    }
    l = (const Cityops__V1__CheckpointList *)resp;
    for (size_t i = 0; i < l->n_checkpoints; i++) {
        const Cityops__V1__Checkpoint *cp = l->checkpoints[i];
        char when[40];
        char rh[2 * HASH + 1] = "";
        if (cp->root_hash.len == HASH) {
            hex(cp->root_hash.data, HASH, rh);
        }
        ops_time_format(cp->time, when, sizeof when);
        printf("%8llu  %s  %s  %s\n", (unsigned long long)cp->tree_size, when,
               rh, cp->signature.len ? "signed" : "unsigned");
    }
    protobuf_c_message_free_unpacked(resp, NULL);
    return OPS_EXIT_OK;
}

/* Print a consistency proof between two tree sizes (checked by scripts and
 * by witnesses that hold both heads). */
static int run_consistency(struct ops_ctl *ctl, const struct ops_args *a)
{
    Cityops__V1__ConsistencyProofRequest req =
        CITYOPS__V1__CONSISTENCY_PROOF_REQUEST__INIT;
    Cityops__V1__ReadOptions read = CITYOPS__V1__READ_OPTIONS__INIT;
    ProtobufCMessage *resp = NULL;
    int rv;

    if (a->n_pos != 4 || ops_parse_u64(a->pos[2], &req.first) != 0 ||
        ops_parse_u64(a->pos[3], &req.second) != 0) {
        return ops_usage_error(ctl, "audit consistency: FIRST SECOND sizes");
    }
    read_fill(ctl, &read);
    req.read = &read;
    rv = ops_call(ctl, "Audit/ConsistencyProof", &req.base,
                  &cityops__v1__consistency_proof_response__descriptor, &resp);
    if (rv != OPS_EXIT_OK) {
        return rv;
    }
    if (ctl->json) {
        rv = ops_json_print(ops_pb_to_json(resp));
    } else {
        const Cityops__V1__ConsistencyProofResponse *p =
            (const Cityops__V1__ConsistencyProofResponse *)resp;
        printf("consistency proof %llu -> %llu: %zu hashes\n",
               (unsigned long long)p->first, (unsigned long long)p->second,
               p->n_path);
        for (size_t i = 0; i < p->n_path; i++) {
            char h[2 * HASH + 1] = "";
            if (p->path[i].len == HASH) {
                hex(p->path[i].data, HASH, h);
            }
            printf("  %s\n", h);
        }
    }
    protobuf_c_message_free_unpacked(resp, NULL);
    return rv;
}

static int run_list(struct ops_ctl *ctl, const struct ops_args *a)
{
    Cityops__V1__AuditListRequest filter = CITYOPS__V1__AUDIT_LIST_REQUEST__INIT;
    struct ops_table *tab;
    static const char *const headers[] = {"SEQ", "TIME", "OPERATION",
                                          "TARGET", "ACTOR(ROLE)", "RESULT",
                                          "HASH"};
    struct trail t;
    int rv;

    filter.target = ops_arg(a, "target") ? ops_arg(a, "target") : "";
    filter.actor_id = ops_arg(a, "actor-id") ? ops_arg(a, "actor-id") : "";
    if (ops_arg(a, "from") &&
        ops_time_parse(ops_arg(a, "from"), &filter.from_time) != 0) {
        return ops_usage_error(ctl, "audit list: bad --from");
    }
    if (ops_arg(a, "to") &&
        ops_time_parse(ops_arg(a, "to"), &filter.to_time) != 0) {
        return ops_usage_error(ctl, "audit list: bad --to");
    }
    rv = trail_fetch(ctl, &filter, &t);
    if (rv != OPS_EXIT_OK) {
        return rv;
    }
    if (ctl->json) {
        json_t *arr = json_array();
        for (size_t i = 0; i < t.n; i++) {
            json_array_append_new(arr, ops_pb_to_json(&t.recs[i]->base));
        }
        json_t *o = json_object();
        json_object_set_new(o, "records", arr);
        rv = ops_json_print(o);
        trail_free(&t);
        return rv;
    }
    tab = ops_table_new(7, headers);
    for (size_t i = 0; tab != NULL && i < t.n; i++) {
        const Cityops__V1__AuditRecord *r = t.recs[i];
        char seq[24], when[40], who[200], res[16], h[17] = "";
        const char *cells[7];
        snprintf(seq, sizeof seq, "%llu", (unsigned long long)r->seq);
        ops_time_format(r->time, when, sizeof when);
        snprintf(who, sizeof who, "%s(%s)", r->actor_id,
                 ops_enum_short(&cityops__v1__role__descriptor, r->role));
        snprintf(res, sizeof res, "%d", r->result);
        if (r->hash.len == HASH) {
            hex(r->hash.data, 8, h);
        }
        cells[0] = seq;
        cells[1] = when;
        cells[2] = r->operation;
        cells[3] = r->target;
        cells[4] = who;
        cells[5] = r->result == 0 ? "ok" : res;
        cells[6] = h;
        ops_table_add(tab, cells);
    }
    if (tab != NULL) {
        ops_table_print(tab, stdout);
        ops_table_free(tab);
    }
    trail_free(&t);
    return OPS_EXIT_OK;
}

static int run_checkpoint(struct ops_ctl *ctl)
{
    Cityops__V1__CheckpointRequestCall req =
        CITYOPS__V1__CHECKPOINT_REQUEST_CALL__INIT;
    Cityops__V1__RequestContext ctx = CITYOPS__V1__REQUEST_CONTEXT__INIT;
    ProtobufCMessage *resp = NULL;
    const Cityops__V1__Checkpoint *cp;
    char rh[2 * HASH + 1] = "";
    int rv;

    ops_ctx_fill(ctl, &ctx, CITYOPS__V1__ROLE__ROLE_AUDITOR);
    req.ctx = &ctx;
    rv = ops_call(ctl, "Audit/Checkpoint", &req.base,
                  &cityops__v1__checkpoint_reply__descriptor, &resp);
    if (rv != OPS_EXIT_OK) {
        return rv;
    }
    if (ctl->json) {
        rv = ops_json_print(ops_pb_to_json(resp));
    } else {
        cp = ((Cityops__V1__CheckpointReply *)resp)->checkpoint;
        if (cp != NULL && cp->root_hash.len == HASH) {
            hex(cp->root_hash.data, HASH, rh);
        }
        printf("checkpoint at tree size %llu, root %s (%s)\n",
               cp ? (unsigned long long)cp->tree_size : 0ULL, rh,
               cp && cp->signature.len ? "signed"
                                       : "the leader signs it shortly");
    }
    protobuf_c_message_free_unpacked(resp, NULL);
    return rv;
}

const char *ctl_audit_options(const char *sub)
{
    if (strcmp(sub, "list") == 0) {
        return "target actor-id from to all";
    }
    if (strcmp(sub, "verify") == 0) {
        return "public-key archive";
    }
    if (strcmp(sub, "archive") == 0) {
        return "out to-seq";
    }
    if (strcmp(sub, "proof") == 0) {
        return "tree-size";
    }
    if (strcmp(sub, "checkpoint") == 0 || strcmp(sub, "consistency") == 0 ||
        strcmp(sub, "heads") == 0) {
        return "";
    }
    return NULL;
}

int ctl_audit_run(struct ops_ctl *ctl, const struct ops_args *a)
{
    const char *sub = a->pos[1];

    if (strcmp(sub, "verify") == 0) {
        return run_verify(ctl, a);
    }
    if (strcmp(sub, "archive") == 0) {
        return run_archive(ctl, a);
    }
    if (strcmp(sub, "proof") == 0) {
        return run_proof(ctl, a);
    }
    if (strcmp(sub, "checkpoint") == 0) {
        return run_checkpoint(ctl);
    }
    if (strcmp(sub, "consistency") == 0) {
        return run_consistency(ctl, a);
    }
    if (strcmp(sub, "heads") == 0) {
        return run_heads(ctl);
    }
    return run_list(ctl, a);
}
