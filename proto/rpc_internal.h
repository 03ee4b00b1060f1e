/* Shared inside proto/'s gRPC runtime: completion-queue tags, byte buffer
 * helpers, channel arguments and TLS file loading. Not for use outside
 * proto/. */
#ifndef CITYOPS_RPC_INTERNAL_H
#define CITYOPS_RPC_INTERNAL_H

#include <stdint.h>

#include <grpc/grpc.h>

#include "rpc.h"

/* Every event on a server's completion queue carries one of these as its tag;
 * the queue thread calls fn. */
struct rpc_tag {
    void (*fn)(struct rpc_tag *tag, int ok);
};

/* Copy a received byte buffer into one malloc'd block (caller frees).
 * Returns 0, or RPC_NOMEM. An empty buffer gives *buf == NULL, *len == 0. */
int rpc_bb_read(grpc_byte_buffer *bb, uint8_t **buf, size_t *len);

/* Make a byte buffer from bytes (copied). */
grpc_byte_buffer *rpc_bb_from(const uint8_t *buf, size_t len);

/* Pack a message into a byte buffer; NULL on allocation failure. */
grpc_byte_buffer *rpc_bb_pack(const ProtobufCMessage *msg);

/* Channel arguments shared by servers and clients: message size limits and
 * keepalive settings that do not trip the peer's too_many_pings guard. */
void rpc_channel_args(grpc_channel_args *args, grpc_arg *slots, int max_msg);
#define RPC_N_CHANNEL_ARGS 9

/* The contents of an rpc_tls's three files, NUL-terminated. */
struct rpc_pem {
    char *ca;
    char *cert;
    char *key;
};

/* Read @tls's files into @pem (malloc'd; release with rpc_pem_free()).
 * Returns 0; RPC_INVALID if a file is missing, unreadable or empty, and
 * RPC_NOMEM on allocation failure, after logging which file for @who
 * ("server 0.0.0.0:7000", "channel to 10.0.0.2:7000"). On failure @pem
 * holds nothing. */
int rpc_pem_load(const struct rpc_tls *tls,
                 const char *who,
                 struct rpc_pem *pem);

/* Wipe the private key and free everything; @pem may be all NULL. */
void rpc_pem_free(struct rpc_pem *pem);

/* Register a call started on a server's queue by the client side, so that
 * shutdown waits for its completion. */
void rpc_server_hold(struct rpc_server *srv);
void rpc_server_release(struct rpc_server *srv);
grpc_completion_queue *rpc_server_cq(struct rpc_server *srv);
grpc_channel *rpc_channel_grpc(struct rpc_channel *ch);

#endif /* CITYOPS_RPC_INTERNAL_H */
