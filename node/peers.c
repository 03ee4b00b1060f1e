/* Reaching the other members: a channel per member of the config (opened at
 * start) and, for members added at run time, entries looked up in the
 * replicated address book (storage's members table) and cached here with a
 * lazily opened channel. The cache is guarded by book_lock because the
 * completion-queue thread (forwarding, status fan-out) and the Raft loop
 * thread (forwarding after a proposal) both use it. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proto/clog.h"
#include "node_internal.h"

const struct node_member *node_member_find(struct node *n, uint64_t id)
{
    for (size_t i = 0; i < n->cfg.n_members; i++) {
        if (n->cfg.members[i].id == id) {
            return &n->cfg.members[i];
        }
    }
    return NULL;
}

/* The book entry for @id, checked against the store on every lookup (a
 * member removed and added again may have moved). Caller holds book_lock. */
static struct node_book_entry *book_entry(struct node *n, uint64_t id)
{
    Cityops__V1__Member *m = NULL;
    struct node_book_entry *e;

    if (id == 0 || store_member_get(n->store, id, &m) != 0) {
        return NULL;
    }
    e = NULL;
    for (size_t i = 0; i < n->n_book; i++) {
        if (n->book[i].id == id) {
            e = &n->book[i];
        }
    }
    if (e != NULL) {
        /* Re-added under a new address: drop the old channel. */
        if (m->grpc_address != NULL &&
            strcmp(e->grpc_address, m->grpc_address) != 0) {
            clog(CLOG_INFO, "node", "member %llu moved to gRPC %s",
                 (unsigned long long)id, m->grpc_address);
            rpc_channel_close(e->ch);
            e->ch = NULL;
            snprintf(e->grpc_address, sizeof e->grpc_address, "%s",
                     m->grpc_address);
        }
        cityops__v1__member__free_unpacked(m, NULL);
        return e;
    }
    if (n->n_book >= CONS_MAX_MEMBERS) {
        cityops__v1__member__free_unpacked(m, NULL);
        return NULL;
    }
    e = &n->book[n->n_book];
    memset(e, 0, sizeof *e);
    e->id = id;
    snprintf(e->grpc_address, sizeof e->grpc_address, "%s",
             m->grpc_address != NULL ? m->grpc_address : "");
    snprintf(e->zone, sizeof e->zone, "%s", m->zone != NULL ? m->zone : "");
    cityops__v1__member__free_unpacked(m, NULL);
    n->n_book++;
    return e;
}

struct rpc_channel *node_peer_channel(struct node *n, uint64_t id)
{
    struct node_book_entry *e;
    struct rpc_channel *ch = NULL;

    if (id == n->cfg.id) {
        return NULL;
    }
    for (size_t i = 0; i < n->cfg.n_members; i++) {
        if (n->cfg.members[i].id == id) {
            return n->peers[i];
        }
    }
    pthread_mutex_lock(&n->book_lock);
    e = book_entry(n, id);
    if (e != NULL && e->grpc_address[0] != '\0') {
        if (e->ch == NULL) {
            e->ch = rpc_channel_open(e->grpc_address);
            clog(CLOG_INFO, "node", "member %llu: gRPC %s (address book)",
                 (unsigned long long)id, e->grpc_address);
        }
        ch = e->ch;
    }
    pthread_mutex_unlock(&n->book_lock);
    return ch;
}

void node_member_grpc(struct node *n, uint64_t id, char *buf, size_t size)
{
    const struct node_member *m = node_member_find(n, id);
    struct node_book_entry *e;

    buf[0] = '\0';
    if (m != NULL) {
        snprintf(buf, size, "%s", m->grpc_address);
        return;
    }
    pthread_mutex_lock(&n->book_lock);
    e = book_entry(n, id);
    if (e != NULL) {
        snprintf(buf, size, "%s", e->grpc_address);
    }
    pthread_mutex_unlock(&n->book_lock);
}

void node_member_zone(struct node *n, uint64_t id, char *buf, size_t size)
{
    const struct node_member *m = node_member_find(n, id);
    struct node_book_entry *e;

    buf[0] = '\0';
    if (m != NULL) {
        snprintf(buf, size, "%s", m->zone);
        return;
    }
    pthread_mutex_lock(&n->book_lock);
    e = book_entry(n, id);
    if (e != NULL) {
        snprintf(buf, size, "%s", e->zone);
    }
    pthread_mutex_unlock(&n->book_lock);
}

void node_peers_close(struct node *n)
{
    for (size_t i = 0; i < n->cfg.n_members; i++) {
        rpc_channel_close(n->peers[i]);
        n->peers[i] = NULL;
    }
    pthread_mutex_lock(&n->book_lock);
    for (size_t i = 0; i < n->n_book; i++) {
        rpc_channel_close(n->book[i].ch);
        n->book[i].ch = NULL;
    }
    n->n_book = 0;
    pthread_mutex_unlock(&n->book_lock);
}

/* A fire-and-forget proposal of a ClusterEvent record. */
struct event_write {
    Cityops__V1__Command cmd;
    Cityops__V1__ClusterEvent ev;
    char actor[64];
    char kind[32];
    char detail[512];
};

static void event_done(void *arg,
                       int rv,
                       const Cityops__V1__CommandResult *result,
                       uint64_t leader_id)
{
    struct event_write *w = arg;

    (void)leader_id;
    if (rv != 0 || result->code != CITYOPS__V1__RESULT_CODE__RESULT_OK) {
        clog(CLOG_WARN, "node", "could not record cluster event \"%s: %s\": %s",
             w->kind, w->detail,
             rv != 0 ? cons_strerror(rv) : result->message);
    }
    free(w);
}

void node_cluster_event(struct node *n,
                        const char *actor,
                        Cityops__V1__Role role,
                        const char *kind,
                        const char *detail)
{
    struct event_write *w = calloc(1, sizeof *w);

    if (w == NULL) {
        return;
    }
    snprintf(w->actor, sizeof w->actor, "%s", actor);
    snprintf(w->kind, sizeof w->kind, "%s", kind);
    snprintf(w->detail, sizeof w->detail, "%s", detail);
    cityops__v1__cluster_event__init(&w->ev);
    w->ev.kind = w->kind;
    w->ev.detail = w->detail;
    cityops__v1__command__init(&w->cmd);
    w->cmd.actor_id = w->actor;
    w->cmd.role = role;
    w->cmd.op_case = CITYOPS__V1__COMMAND__OP_CLUSTER_EVENT;
    w->cmd.cluster_event = &w->ev;
    if (cons_submit(n->cons, &w->cmd, n->cfg.write_wait_ms, event_done, w) !=
        0) {
        clog(CLOG_WARN, "node", "could not record cluster event \"%s: %s\"",
             kind, detail);
        free(w);
    }
}
