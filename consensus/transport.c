/* Raft connections: TCP_NODELAY on each, and followers keep theirs fresh.
 *
 * libraft 0.15's TCP transport leaves Nagle's algorithm on. A leader that
 * writes a small AppendEntries while the previous one is unacknowledged
 * then waits for the follower's delayed ACK (up to 40 ms on Linux): a
 * steady 40 ms tail on commit latency. The transport's listen and connect
 * functions are wrapped so that each new stream gets TCP_NODELAY before
 * libraft sees it; everything else is libraft's own transport. */
#include <stdatomic.h>
#include <stddef.h>
#include <string.h>

#include <uv.h>

#include "consensus/cons_internal.h"
#include "proto/clog.h"

/* libraft passes the same internal connect callback for every request; it is
 * kept here because the wrapped callback only gets the request. */
static _Atomic(raft_uv_connect_cb) user_connect_cb;

static struct cons_transport *outer(struct raft_uv_transport *t)
{
    return (struct cons_transport *)((char *)t -
                                     offsetof(struct cons_transport, t));
}

static void nodelay(struct uv_stream_s *stream)
{
    if (stream != NULL && stream->type == UV_TCP) {
        int rv = uv_tcp_nodelay((uv_tcp_t *)stream, 1);
        if (rv != 0) {
            clog(CLOG_WARN, "cons", "TCP_NODELAY: %s", uv_strerror(rv));
        }
    }
}

static void accept_cb(struct raft_uv_transport *t,
                      raft_id id,
                      const char *address,
                      struct uv_stream_s *stream)
{
    nodelay(stream);
    outer(t)->user_accept(t, id, address, stream);
}

static int listen_wrap(struct raft_uv_transport *t, raft_uv_accept_cb cb)
{
    struct cons_transport *ct = outer(t);

    ct->user_accept = cb;
    return ct->tcp_listen(t, accept_cb);
}

static void connect_cb(struct raft_uv_connect *req,
                       struct uv_stream_s *stream,
                       int status)
{
    if (status == 0) {
        nodelay(stream);
    }
    atomic_load(&user_connect_cb)(req, stream, status);
}

static int connect_wrap(struct raft_uv_transport *t,
                        struct raft_uv_connect *req,
                        raft_id id,
                        const char *address,
                        raft_uv_connect_cb cb)
{
    atomic_store(&user_connect_cb, cb);
    return outer(t)->tcp_connect(t, req, id, address, connect_cb);
}

static void keepalive_sent(struct raft_io_send *req, int status)
{
    (void)status;
    raft_free(req);
}

int cons_is_voter(const struct raft *r)
{
    const struct raft_configuration *conf = &r->configuration;

    for (unsigned i = 0; i < conf->n; i++) {
        if (conf->servers[i].id == r->id) {
            return conf->servers[i].role == RAFT_VOTER;
        }
    }
    return 0;
}

void cons_transport_keepalive(struct raft *r, struct raft_io *io)
{
    const struct raft_configuration *conf = &r->configuration;
    struct raft_message m;

    /* Votes pass only between voters: a node that is not one (a standby, a
     * spare, or removed but still running) has nothing to keep fresh. */
    if (raft_state(r) == RAFT_LEADER || raft_state(r) == RAFT_UNAVAILABLE ||
        !cons_is_voter(r)) {
        return;
    }
    for (unsigned i = 0; i < conf->n; i++) {
        struct raft_io_send *req;

        if (conf->servers[i].id == r->id ||
            conf->servers[i].role != RAFT_VOTER) {
            continue;
        }
        req = raft_malloc(sizeof *req);
        if (req == NULL) {
            return;
        }
        memset(&m, 0, sizeof m);
        m.type = RAFT_IO_APPEND_ENTRIES_RESULT;
        m.server_id = conf->servers[i].id;
        m.server_address = conf->servers[i].address;
        m.append_entries_result.term = 0;
        if (io->send(io, req, &m, keepalive_sent) != 0) {
            raft_free(req);
        }
    }
}

int cons_transport_is_keepalive(const struct raft_message *m)
{
    return m->type == RAFT_IO_APPEND_ENTRIES_RESULT &&
           m->append_entries_result.term == 0;
}

int cons_transport_init(struct cons_transport *ct, struct uv_loop_s *loop)
{
    int rv = raft_uv_tcp_init(&ct->t, loop);

    if (rv != 0) {
        return rv;
    }
    ct->tcp_listen = ct->t.listen;
    ct->tcp_connect = ct->t.connect;
    ct->t.listen = listen_wrap;
    ct->t.connect = connect_wrap;
    return 0;
}

void cons_transport_close(struct cons_transport *ct)
{
    raft_uv_tcp_close(&ct->t);
}
