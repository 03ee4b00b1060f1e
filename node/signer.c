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

/* Propose @cmd and wait for its result code (or -1 if not applied). */
struct sync_wait {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int done;
    int code;
};

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
}

static int propose_sync(struct node *n, Cityops__V1__Command *cmd)
{
    struct sync_wait w;

    memset(&w, 0, sizeof w);
    pthread_mutex_init(&w.lock, NULL);
    pthread_cond_init(&w.cond, NULL);
    if (cons_submit(n->cons, cmd, n->cfg.write_wait_ms, sync_done, &w) != 0) {
        w.code = -1;
        w.done = 1;
    }
    pthread_mutex_lock(&w.lock);
    while (!w.done) {
        pthread_cond_wait(&w.cond, &w.lock);
    }
    pthread_mutex_unlock(&w.lock);
    pthread_mutex_destroy(&w.lock);
    pthread_cond_destroy(&w.cond);
    return w.code;
}

static void command_init(struct node *n, Cityops__V1__Command *cmd,
                         char *actor, size_t size)
{
    snprintf(actor, size, "leader-%llu", (unsigned long long)n->cfg.id);
    cityops__v1__command__init(cmd);
    cmd->actor_id = actor;
    cmd->role = CITYOPS__V1__ROLE__ROLE_SYSTEM;
}

int node_checkpoint_propose(struct node *n)
{
    Cityops__V1__Command cmd;
    Cityops__V1__CheckpointRequest req = CITYOPS__V1__CHECKPOINT_REQUEST__INIT;
    char actor[32];

    command_init(n, &cmd, actor, sizeof actor);
    cmd.op_case = CITYOPS__V1__COMMAND__OP_CHECKPOINT;
    cmd.checkpoint = &req;
    return propose_sync(n, &cmd);
}

/* Sign the checkpoint @cp and propose the signature. */
static void sign_one(struct node_signer *sg, const Cityops__V1__Checkpoint *cp)
{
    Cityops__V1__Command cmd;
    Cityops__V1__CheckpointSignature sig =
        CITYOPS__V1__CHECKPOINT_SIGNATURE__INIT;
    uint8_t msg[STORE_CHECKPOINT_MSG_SIZE];
    uint8_t signature[64];
    size_t sig_len = sizeof signature;
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    char actor[32];
    int code;

    store_checkpoint_message(cp, msg);
    if (ctx == NULL ||
        EVP_DigestSignInit(ctx, NULL, NULL, NULL, sg->key) != 1 ||
        EVP_DigestSign(ctx, signature, &sig_len, msg, sizeof msg) != 1) {
        clog(CLOG_ERROR, "audit", "cannot sign checkpoint %llu",
             (unsigned long long)cp->tree_size);
        EVP_MD_CTX_free(ctx);
        return;
    }
    EVP_MD_CTX_free(ctx);
    command_init(sg->n, &cmd, actor, sizeof actor);
    sig.tree_size = cp->tree_size;
    sig.signature.data = signature;
    sig.signature.len = sig_len;
    sig.public_key.data = sg->public_key;
    sig.public_key.len = sizeof sg->public_key;
    cmd.op_case = CITYOPS__V1__COMMAND__OP_CHECKPOINT_SIGNATURE;
    cmd.checkpoint_signature = &sig;
    code = propose_sync(sg->n, &cmd);
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
        node_checkpoint_propose(n);
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
