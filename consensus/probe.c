/* Is anything listening where the leader was?
 *
 * A follower learns that its leader is gone only by not hearing from it for
 * a randomized election timeout (1-2 s by default). When the leader's
 * process died but its host is up (a crash, an OOM kill, kill -9, a
 * restart: the common case), the host answers a connection attempt to the
 * leader's Raft port at once with a reset, and that is proof, not a guess.
 * cons.c asks this module to try such a connection once the leader has been
 * silent for a few heartbeats; a refused connection is reported back, and
 * the follower then stops waiting for its timer (cons.c leader_gone()).
 *
 * Nothing else is concluded: a connection that succeeds, times out or fails
 * otherwise (a partition, a slow leader, an unreachable host) reports
 * nothing and the election timeout decides, as before. The probe sends no
 * bytes; the leader's transport sees a connection closed before its
 * handshake and drops it. Addresses must be numeric (IPv4 "a.b.c.d:port" or
 * "[v6]:port"); for a host name no probe is made. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "consensus/cons_internal.h"

void cons_probe_init(struct cons_probe *p,
                     struct uv_loop_s *loop,
                     void (*refused)(void *arg, raft_id id),
                     void *arg)
{
    memset(p, 0, sizeof *p);
    p->loop = loop;
    p->refused_cb = refused;
    p->arg = arg;
}

/* "a.b.c.d:port" or "[v6]:port" into @sa; -1 if not numeric. */
static int parse_address(const char *address, struct sockaddr_storage *sa)
{
    char host[64];
    const char *colon = strrchr(address, ':');
    const char *start = address;
    size_t len;
    char *end;
    long port;

    if (colon == NULL) {
        return -1;
    }
    port = strtol(colon + 1, &end, 10);
    if (*end != '\0' || port <= 0 || port > 65535) {
        return -1;
    }
    len = (size_t)(colon - address);
    if (len >= 2 && address[0] == '[' && address[len - 1] == ']') {
        start = address + 1;
        len -= 2;
    }
    if (len == 0 || len >= sizeof host) {
        return -1;
    }
    memcpy(host, start, len);
    host[len] = '\0';
    if (uv_ip4_addr(host, (int)port, (struct sockaddr_in *)sa) == 0 ||
        uv_ip6_addr(host, (int)port, (struct sockaddr_in6 *)sa) == 0) {
        return 0;
    }
    return -1;
}

static void probe_closed(uv_handle_t *handle)
{
    struct cons_probe *p = handle->data;

    p->busy = 0;
}

static void probe_connected(uv_connect_t *req, int status)
{
    struct cons_probe *p = req->data;

    if (status == UV_ECONNREFUSED) {
        p->refused++;
        if (p->refused_cb != NULL) {
            p->refused_cb(p->arg, p->target);
        }
    }
    if (!uv_is_closing((uv_handle_t *)&p->tcp)) {
        uv_close((uv_handle_t *)&p->tcp, probe_closed);
    }
}

int cons_probe_start(struct cons_probe *p, raft_id id, const char *address)
{
    struct sockaddr_storage sa;
    int rv;

    if (p->busy || p->closed) {
        return -1;
    }
    memset(&sa, 0, sizeof sa);
    if (parse_address(address, &sa) != 0) {
        return -1;
    }
    rv = uv_tcp_init(p->loop, &p->tcp);
    if (rv != 0) {
        return -1;
    }
    p->tcp.data = p;
    p->req.data = p;
    p->busy = 1;
    p->target = id;
    p->probes++;
    rv = uv_tcp_connect(&p->req, &p->tcp, (const struct sockaddr *)&sa,
                        probe_connected);
    if (rv != 0) {
        /* Refused before any packet: a local error, not the leader's. */
        uv_close((uv_handle_t *)&p->tcp, probe_closed);
        return -1;
    }
    return 0;
}

void cons_probe_cancel(struct cons_probe *p)
{
    if (p->busy && !uv_is_closing((uv_handle_t *)&p->tcp)) {
        uv_close((uv_handle_t *)&p->tcp, probe_closed);
    }
}

void cons_probe_close(struct cons_probe *p)
{
    p->closed = 1;
    cons_probe_cancel(p);
}
