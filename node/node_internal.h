/* Shared inside node/: the node handle and the helpers its RPC handlers use.
 * Not for use outside node/. */
#ifndef CITYOPS_NODE_INTERNAL_H
#define CITYOPS_NODE_INTERNAL_H

#include <pthread.h>

#include <grpc/grpc.h>

#include "cityops/v1/cluster.pb-c.h"
#include "cityops/v1/command.pb-c.h"
#include "consensus/cons.h"
#include "node.h"
#include "proto/rpc.h"
#include "storage/store.h"

#define NODE_MAX_METHODS 96

/* What a method table entry's data points at. */
struct node_handler {
    struct node *n;
    int op; /* write: the Command oneof case; read: which read */
};

/* A member learned from the replicated address book (added at run time). */
struct node_book_entry {
    uint64_t id;
    char grpc_address[NODE_ADDRESS_SIZE];
    char zone[CONS_ZONE_SIZE];
    struct rpc_channel *ch;
};

struct node_signer;
struct node_reader;
struct node_backups;

struct node {
    struct node_config cfg;
    struct node_signer *signer;
    struct node_reader *reader;
    struct node_backups *backups;
    struct node_ticker *ticker;
    struct node_fed *fed;
    /* Drill fault threads (dr.c): counted so that node_stop() waits for
     * them; faults_stop ends a disk-full fault early. */
    pthread_mutex_t fault_lock;
    pthread_cond_t fault_cond;
    int faults_active;
    int faults_stop;
    struct node_http311 *http311; /* NULL: [public] http_address off */
    int dr_recovered;         /* started with recover: record it as leader */
    int dr_init_inflight;     /* a ClusterInit is being proposed */
    volatile int restart;     /* node_restart_request() was called */
    struct store *store;
    struct cons *cons;
    struct rpc_server *rpc;
    /* One channel per member (NULL for this node), by index in cfg.members. */
    struct rpc_channel *peers[CONS_MAX_MEMBERS];
    /* Members not in cfg.members, filled lazily from the store. */
    pthread_mutex_t book_lock;
    struct node_book_entry book[CONS_MAX_MEMBERS];
    size_t n_book;
    struct rpc_method methods[NODE_MAX_METHODS];
    struct node_handler handlers[NODE_MAX_METHODS];
    size_t n_methods;
};

/* gRPC status for a module error code / a command result code. The only
 * places where grpc_status_code values are made from cityops errors. */
grpc_status_code node_status_from_err(int rv);
grpc_status_code node_status_from_result(Cityops__V1__ResultCode code);

/* Channel to member @id, or NULL if unknown or this node. Members not in
 * the config are looked up in the replicated address book. Any thread. */
struct rpc_channel *node_peer_channel(struct node *n, uint64_t id);
/* The config's entry for member @id, or NULL. */
const struct node_member *node_member_find(struct node *n, uint64_t id);
/* gRPC address / zone of member @id from the config or the address book;
 * "" if unknown. Any thread. */
void node_member_grpc(struct node *n, uint64_t id, char *buf, size_t size);
void node_member_zone(struct node *n, uint64_t id, char *buf, size_t size);
void node_peers_close(struct node *n);

/* The reader thread (reader.c): reads that follow a barrier run there, off
 * the Raft loop and the completion-queue thread. post() from any thread. */
int node_reader_start(struct node *n);
void node_reader_stop(struct node *n);
void node_reader_post(struct node *n, void (*fn)(void *arg), void *arg);

/* Audit checkpointer (signer.c): a thread that, on the leader, asks for a
 * tree head every cfg.checkpoint_every records and signs unsigned heads. */
int node_signer_start(struct node *n, struct node_signer **out);
void node_signer_stop(struct node_signer *sg);

/* Propose a membership event record (fire and forget). Any thread. */
void node_cluster_event(struct node *n,
                        const char *actor,
                        Cityops__V1__Role role,
                        const char *kind,
                        const char *detail);

/* Milliseconds left until the call's deadline, clamped to [1, cap]. */
unsigned node_call_wait_ms(struct rpc_call *call, unsigned cap);

/* Answer @call for a consensus outcome that is not a result: CONS_NOTLEADER
 * forwards the call to @leader_id (unless it was forwarded already), the
 * rest fail with a status that says what to do. */
void node_answer_not_applied(struct node *n,
                             struct rpc_call *call,
                             int rv,
                             uint64_t leader_id);

/* A write in flight (rpc_write.c): the Command submitted for @call. A method
 * that keeps more state for its reply puts this struct first in its own and
 * gives node_write_submit() that struct's size. */
struct node_write;

/* Loop thread: answer w->call for the applied @result (code OK; borrowed
 * for the call only). Return 0 when done with @w, which is then freed, or
 * NODE_WRITE_KEPT after taking @w over: the reply fn (or what it hands @w to)
 * then answers the call and free()s @w. */
#define NODE_WRITE_KEPT 1
typedef int (*node_write_reply_fn)(struct node_write *w,
                                   const Cityops__V1__CommandResult *result);

struct node_write {
    struct node *n;
    struct rpc_call *call;
    Cityops__V1__Command cmd;
    node_write_reply_fn reply;
};

/* Submit a write for @call: a Command of oneof case @op over @req, with the
 * actor, role and retry key (client_id, seq) of @ctx, waiting until the
 * call's deadline (at most cfg.write_wait_ms). Any thread.
 *
 * A missing @ctx or ctx.actor_id fails the call with INVALID_ARGUMENT and
 * the message @required. The Command borrows @req and the strings of @ctx:
 * they must live as long as the call, as its request does. A @size-byte
 * struct node_write (zeroed past the header) is allocated here and freed
 * after the call is answered. A consensus error is answered with
 * node_answer_not_applied(), a refused result with its status; an applied
 * one goes to @reply. */
void node_write_submit(struct node *n,
                       struct rpc_call *call,
                       const Cityops__V1__RequestContext *ctx,
                       const char *required,
                       int op,
                       ProtobufCMessage *req,
                       size_t size,
                       node_write_reply_fn reply);

/* Reads: the request's ReadOptions (field "read"), or NULL; and whether it
 * asks for a barrier first (LINEARIZABLE, or a min_index not applied yet). */
const Cityops__V1__ReadOptions *node_read_options(const ProtobufCMessage *req);
int node_read_needs_barrier(struct node *n, const ProtobufCMessage *req);

/* The read handler (rpc_read.c): STALE at once, else after a barrier on the
 * leader; method data op = the read kind. Kinds from NODE_READ_AUDIT on are
 * answered by node_audit_read() (rpc_audit.c). */
#define NODE_READ_AUDIT 100
void node_read_handle(struct rpc_call *call,
                      const ProtobufCMessage *req,
                      void *data);
void node_audit_read(struct node *n, struct rpc_call *call, int kind);
/* Federation (fed.c): the mutual-TLS Deliver server and the leader's
 * sender. stop() before cons_stop() (the sender proposes), free() after. */
struct node_fed;
int node_fed_start(struct node *n, struct node_fed **out);
void node_fed_stop(struct node_fed *f);
void node_fed_free(struct node_fed *f);
void node_fed_methods_add(struct node *n);
/* Kinds from NODE_READ_FED on: node_fed_read() (fed.c). */
#define NODE_READ_FED 600
void node_fed_read(struct node *n, struct rpc_call *call, int kind);
/* Kinds from NODE_READ_ADMIN on: node_admin_read() (rpc_admin.c). */
#define NODE_READ_ADMIN 300
void node_admin_read(struct node *n, struct rpc_call *call, int kind);
void node_admin_methods_add(struct node *n);
/* Kinds from NODE_READ_EVAL on: node_eval_read() (rpc_eval.c). */
#define NODE_READ_EVAL 500
void node_eval_read(struct node *n, struct rpc_call *call, int kind);
void node_eval_methods_add(struct node *n);
/* Kinds from NODE_READ_PUBLIC on: node_public_read() (rpc_public.c). */
#define NODE_READ_PUBLIC 400
void node_public_read(struct node *n, struct rpc_call *call, int kind);
void node_public_methods_add(struct node *n);
/* Open311 HTTP/JSON (http311.c): calls this node's gRPC port @grpc_port.
 * *out stays NULL when [public] http_address is empty. stop() before the
 * gRPC server shuts down (its handlers call it); NULL is a no-op. */
struct node_http311;
int node_http311_start(struct node *n,
                       int grpc_port,
                       struct node_http311 **out);
void node_http311_stop(struct node_http311 *h);
/* Kinds from NODE_READ_DR on: node_dr_read() (dr.c). */
#define NODE_READ_DR 200
void node_dr_read(struct node *n, struct rpc_call *call, int kind);

/* mkdir -p @dir (mode 0750): 0 or NODE_START (logged). */
int node_make_dirs(const char *dir);

/* Append a method to n->methods with its handler data. */
void node_method_add(struct node *n,
                     const char *path,
                     const ProtobufCMessageDescriptor *request,
                     const ProtobufCMessageDescriptor *response,
                     rpc_handler_fn handler,
                     int op);

/* Register the methods of each file: rpc_write.c, rpc_read.c, rpc_status.c,
 * rpc_membership.c. */
void node_write_methods_add(struct node *n);
void node_read_methods_add(struct node *n);
void node_status_methods_add(struct node *n);
void node_membership_methods_add(struct node *n);
void node_audit_methods_add(struct node *n);
void node_dr_methods_add(struct node *n);
void node_backup_methods_add(struct node *n);

/* Disaster recovery on the node (dr.c).
 *
 * Files in the data directory that steer the next start:
 *   recover.plan  written by Recovery/Recover: start with cons recover (the
 *                 configuration becomes this node alone), then renamed to
 *                 recover.done;
 *   reset.plan    written by Recovery/Reset: move store/ and raft/ aside to
 *                 pre-recover-<UTC time>/, then start empty as a joiner;
 *   join.marker   never bootstrap a new cluster from the config's member
 *                 list: wait to be added;
 *   restore.marker written by cityctl backup restore: bootstrap a cluster of
 *                 this node alone and snapshot at once (the log did not
 *                 build the state); renamed to restore.done at the first
 *                 start that finds the snapshot.
 * Both RPCs then restart the process in place (node_restart_request()). */
struct node_dr_start {
    int recover; /* run cons recover */
    int join;    /* do not bootstrap */
    int alone;   /* restore.marker (cityctl backup restore): bootstrap a
                  * cluster of this node alone */
};
/* Before the store opens: act on the files above. NODE_START on failure. */
int node_dr_prepare(const struct node_config *cfg, struct node_dr_start *out);
/* After Raft started with recover: retire recover.plan. */
void node_dr_started(struct node *n, const struct node_dr_start *st);
/* cons hook: the leader is ready (sets the cluster id, records a recovery). */
void node_dr_leader_ready(void *data);
/* Stop injecting drill faults and wait for the fault threads (they use
 * the store and consensus). Before cons_stop(). */
void node_faults_quiesce(struct node *n);
/* Ask main() to stop the node and execute itself again (same PID). */
void node_restart_request(struct node *n);

/* Backups (backup.c): transfers for Backup/Create+Read and the scheduled
 * backup thread. */
struct node_backups;
/* The clock tick (ticker.c): stop() before cons_stop() (it proposes),
 * free() after it (a tick in flight still holds its command). */
struct node_ticker;
int node_ticker_start(struct node *n, struct node_ticker **out);
void node_ticker_stop(struct node_ticker *t);
void node_ticker_free(struct node_ticker *t);
int node_backups_start(struct node *n, struct node_backups **out);
void node_backups_stop(struct node_backups *b);

#endif /* CITYOPS_NODE_INTERNAL_H */
