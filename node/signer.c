/* The audit checkpointer: signs Merkle tree heads with the cluster's Ed25519
 * key and asks for new heads every `checkpoint_every` records.
 *
 * It runs on its own thread and acts only while this node leads. Each round
 * (once a second): if the trail has grown by checkpoint_every records since
 * the latest head, propose a `checkpoint` command (apply computes the head);
 * then sign every head that has no signature yet and propose the signature
 * (apply verifies it). A node without a key file never signs; heads it
 * proposes stay unsigned until a leader with the key signs them.
 *
 * The key file must be a PEM Ed25519 private key readable by its owner only
 * (0600): the node refuses to start otherwise. Every node that may lead
 * should hold the same key. */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include <openssl/evp.h>
#include <openssl/pem.h>

#include "proto/clog.h"
#include "node_internal.h"
#include "proto/deadline_ts.h"

#define SIGNER_PERIOD_MS 1000

struct node_signer {
    struct node *n;
    EVP_PKEY *key; /* NULL: no key configured */
    uint8_t public_key[32];
    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int stop;
    int running;
    int rotation_recorded;
};

int node_signer_load_key(const char *path, EVP_PKEY **out, char *err,
                         size_t err_size)
{
    struct stat st;
    EVP_PKEY *key;
    FILE *f;

    if (stat(path, &st) != 0) {
        snprintf(err, err_size, "audit key %s: %s", path, strerror(errno));
        return NODE_CONFIG;
    }
    if ((st.st_mode & 077) != 0) {
        snprintf(err, err_size,
                 "audit key %s is readable by group or others (mode %03o): "
                 "chmod 600 it",
                 path, (unsigned)(st.st_mode & 0777));
        return NODE_CONFIG;
    }
    f = fopen(path, "r");
    if (f == NULL) {
        snprintf(err, err_size, "audit key %s: %s", path, strerror(errno));
        return NODE_CONFIG;
    }
    key = PEM_read_PrivateKey(f, NULL, NULL, NULL);
    fclose(f);
    if (key == NULL || EVP_PKEY_id(key) != EVP_PKEY_ED25519) {
        EVP_PKEY_free(key);
        snprintf(err, err_size,
                 "audit key %s is not a PEM Ed25519 private key (make one "
                 "with: openssl genpkey -algorithm ed25519 -out FILE)",
                 path);
        return NODE_CONFIG;
    }
    *out = key;
    return 0;
}

/* Propose @cmd and wait for its result code (-1 if not applied). The wait
 * ends early when the signer is told to stop: a proposal whose entry the
 * store cannot apply stays pending until Raft stops, and Raft stops after
 * the signer. The wait state is shared with the callback and freed by
 * whichever of the two lets go last. */
struct sync_wait {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int done;
    int code;
    int refs;
    /* The proposed command lives here: cons borrows it until the callback,
     * which may come after the signer gave up waiting. */
    Cityops__V1__Command cmd;
    Cityops__V1__CheckpointRequest checkpoint;
    Cityops__V1__CheckpointSignature sig;
    uint8_t signature[64];
    uint8_t public_key[32];
    char actor[32];
};

static void sync_unref(struct sync_wait *w)
{
    int last;

    pthread_mutex_lock(&w->lock);
    last = --w->refs == 0;
    pthread_mutex_unlock(&w->lock);
    if (last) {
        pthread_mutex_destroy(&w->lock);
        pthread_cond_destroy(&w->cond);
        free(w);
    }
}

static void sync_done(void *arg,
                      int rv,
                      const Cityops__V1__CommandResult *result,
                      uint64_t leader_id)
{
    struct sync_wait *w = arg;

    (void)leader_id;
    pthread_mutex_lock(&w->lock);
    w->code = rv == 0 ? (int)result->code : -1;
    w->done = 1;
    pthread_cond_signal(&w->cond);
    pthread_mutex_unlock(&w->lock);
    sync_unref(w);
}

static int signer_stopping(struct node_signer *sg)
{
    int stop;

    pthread_mutex_lock(&sg->lock);
    stop = sg->stop;
    pthread_mutex_unlock(&sg->lock);
    return stop;
}

/* A wait with its command initialised: actor leader-N, role SYSTEM. */
static struct sync_wait *sync_new(struct node_signer *sg)
{
    struct sync_wait *w = calloc(1, sizeof *w);

    if (w == NULL) {
        return NULL;
    }
    pthread_mutex_init(&w->lock, NULL);
    pthread_cond_init(&w->cond, NULL);
    snprintf(w->actor, sizeof w->actor, "leader-%llu",
             (unsigned long long)sg->n->cfg.id);
    cityops__v1__command__init(&w->cmd);
    w->cmd.actor_id = w->actor;
    w->cmd.role = CITYOPS__V1__ROLE__ROLE_SYSTEM;
    return w;
}

static int propose_sync(struct node_signer *sg, struct sync_wait *w)
{
    struct node *n = sg->n;
    struct timespec ts;
    int code = -1;

    w->refs = 2;
    if (cons_submit(n->cons, &w->cmd, n->cfg.write_wait_ms, sync_done, w) !=
        0) {
        w->refs = 1; /* the callback will not run */
        sync_unref(w);
        return -1;
    }
    pthread_mutex_lock(&w->lock);
    while (!w->done) {
        deadline_ts(CLOCK_REALTIME, 200, &ts);
        pthread_cond_timedwait(&w->cond, &w->lock, &ts);
        if (!w->done) {
            pthread_mutex_unlock(&w->lock);
            if (signer_stopping(sg)) {
                sync_unref(w); /* the callback frees it when it comes */
                return -1;
            }
            pthread_mutex_lock(&w->lock);
        }
    }
    code = w->code;
    pthread_mutex_unlock(&w->lock);
    sync_unref(w);
    return code;
}

static int checkpoint_propose(struct node_signer *sg)
{
    struct sync_wait *w = sync_new(sg);

    if (w == NULL) {
        return -1;
    }
    cityops__v1__checkpoint_request__init(&w->checkpoint);
    w->cmd.op_case = CITYOPS__V1__COMMAND__OP_CHECKPOINT;
    w->cmd.checkpoint = &w->checkpoint;
    return propose_sync(sg, w);
}

/* Sign the checkpoint @cp and propose the signature. */
static void sign_one(struct node_signer *sg, const Cityops__V1__Checkpoint *cp)
{
    struct sync_wait *w = sync_new(sg);
    uint8_t msg[STORE_CHECKPOINT_MSG_SIZE];
    size_t sig_len = sizeof w->signature;
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    int code;

    store_checkpoint_message(cp, msg);
    if (w == NULL || ctx == NULL ||
        EVP_DigestSignInit(ctx, NULL, NULL, NULL, sg->key) != 1 ||
        EVP_DigestSign(ctx, w->signature, &sig_len, msg, sizeof msg) != 1) {
        clog(CLOG_ERROR, "audit", "cannot sign checkpoint %llu",
             (unsigned long long)cp->tree_size);
        EVP_MD_CTX_free(ctx);
        if (w != NULL) {
            w->refs = 1;
            sync_unref(w);
        }
        return;
    }
    EVP_MD_CTX_free(ctx);
    memcpy(w->public_key, sg->public_key, sizeof w->public_key);
    cityops__v1__checkpoint_signature__init(&w->sig);
    w->sig.tree_size = cp->tree_size;
    w->sig.signature.data = w->signature;
    w->sig.signature.len = sig_len;
    w->sig.public_key.data = w->public_key;
    w->sig.public_key.len = sizeof w->public_key;
    w->cmd.op_case = CITYOPS__V1__COMMAND__OP_CHECKPOINT_SIGNATURE;
    w->cmd.checkpoint_signature = &w->sig;
    code = propose_sync(sg, w);
    if (code == 0) {
        clog(CLOG_INFO, "audit", "checkpoint %llu signed",
             (unsigned long long)cp->tree_size);
    } else {
        clog(CLOG_WARN, "audit", "checkpoint %llu: signature not applied (%d)",
             (unsigned long long)cp->tree_size, code);
    }
}

static void fingerprint(const uint8_t *key, size_t len, char *out)
{
    uint8_t h[32];

    EVP_Digest(key, len, h, NULL, EVP_sha256(), NULL);
    for (int i = 0; i < 8; i++) {
        sprintf(out + 2 * i, "%02x", h[i]);
    }
}

/* A head signed by another key than ours: the key was rotated. Record it
 * once (through the log, so it is audited like any change) before this
 * node's first signature with the new key. */
static void key_rotation_check(struct node_signer *sg,
                               const Cityops__V1__CheckpointList *list)
{
    const Cityops__V1__Checkpoint *last = NULL;
    char old_fp[17];
    char new_fp[17];
    char detail[160];

    for (size_t i = 0; i < list->n_checkpoints; i++) {
        if (list->checkpoints[i]->public_key.len == sizeof sg->public_key) {
            last = list->checkpoints[i];
        }
    }
    if (sg->rotation_recorded || last == NULL ||
        memcmp(last->public_key.data, sg->public_key,
               sizeof sg->public_key) == 0) {
        return;
    }
    fingerprint(last->public_key.data, last->public_key.len, old_fp);
    fingerprint(sg->public_key, sizeof sg->public_key, new_fp);
    snprintf(detail, sizeof detail,
             "audit signing key rotated: %s -> %s (SHA-256 prefixes of the "
             "public keys); heads from %llu on are signed with the new key",
             old_fp, new_fp, (unsigned long long)last->tree_size + 1);
    clog(CLOG_WARN, "audit", "%s", detail);
    node_cluster_event(sg->n, "signer", CITYOPS__V1__ROLE__ROLE_SYSTEM,
                       "key-rotation", detail);
    sg->rotation_recorded = 1;
}

static void round_run(struct node_signer *sg)
{
    struct node *n = sg->n;
    Cityops__V1__CheckpointList *list = NULL;
    Cityops__V1__Checkpoint *last;
    struct cons_status st;
    uint8_t head[STORE_HASH_SIZE];
    uint64_t size = 0;
    uint64_t covered = 0;

    cons_status_get(n->cons, &st);
    if (st.state != CONS_STATE_LEADER) {
        return;
    }
    if (store_checkpoint_list(n->store, &list) != 0) {
        return;
    }
    last = list->n_checkpoints > 0 ? list->checkpoints[list->n_checkpoints - 1]
                                   : NULL;
    covered = last != NULL ? last->tree_size : 0;
    if (n->cfg.checkpoint_every > 0 &&
        store_audit_head(n->store, &size, head) == 0 &&
        size >= covered + n->cfg.checkpoint_every) {
        checkpoint_propose(sg);
        cityops__v1__checkpoint_list__free_unpacked(list, NULL);
        if (store_checkpoint_list(n->store, &list) != 0) {
            return;
        }
    }
    if (sg->key != NULL) {
        key_rotation_check(sg, list);
        for (size_t i = 0; i < list->n_checkpoints; i++) {
            if (list->checkpoints[i]->signature.len == 0) {
                sign_one(sg, list->checkpoints[i]);
            }
        }
    }
    cityops__v1__checkpoint_list__free_unpacked(list, NULL);
}

static void *signer_thread(void *arg)
{
    struct node_signer *sg = arg;
    struct timespec ts;

    pthread_mutex_lock(&sg->lock);
    while (!sg->stop) {
        pthread_mutex_unlock(&sg->lock);
        round_run(sg);
        pthread_mutex_lock(&sg->lock);
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_sec += SIGNER_PERIOD_MS / 1000;
        while (!sg->stop &&
               pthread_cond_timedwait(&sg->cond, &sg->lock, &ts) == 0) {
        }
    }
    pthread_mutex_unlock(&sg->lock);
    return NULL;
}

int node_signer_start(struct node *n, struct node_signer **out)
{
    struct node_signer *sg = calloc(1, sizeof *sg);
    char err[300];
    size_t len = sizeof sg->public_key;

    if (sg == NULL) {
        return NODE_NOMEM;
    }
    sg->n = n;
    if (n->cfg.audit_key_file[0] != '\0') {
        if (node_signer_load_key(n->cfg.audit_key_file, &sg->key, err,
                                 sizeof err) != 0) {
            clog(CLOG_ERROR, "audit", "%s", err);
            free(sg);
            return NODE_CONFIG;
        }
        EVP_PKEY_get_raw_public_key(sg->key, sg->public_key, &len);
        clog(CLOG_INFO, "audit", "signing checkpoints with %s",
             n->cfg.audit_key_file);
    } else {
        clog(CLOG_WARN, "audit",
             "no [audit] key_file: this node will not sign checkpoints");
    }
    pthread_mutex_init(&sg->lock, NULL);
    pthread_cond_init(&sg->cond, NULL);
    if (pthread_create(&sg->thread, NULL, signer_thread, sg) != 0) {
        EVP_PKEY_free(sg->key);
        free(sg);
        return NODE_START;
    }
    sg->running = 1;
    *out = sg;
    return 0;
}

void node_signer_stop(struct node_signer *sg)
{
    if (sg == NULL) {
        return;
    }
    pthread_mutex_lock(&sg->lock);
    sg->stop = 1;
    pthread_cond_signal(&sg->cond);
    pthread_mutex_unlock(&sg->lock);
    if (sg->running) {
        pthread_join(sg->thread, NULL);
    }
    EVP_PKEY_free(sg->key);
    pthread_mutex_destroy(&sg->lock);
    pthread_cond_destroy(&sg->cond);
    free(sg);
}
