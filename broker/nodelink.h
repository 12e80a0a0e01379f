/* nodelink.h: the node-to-node transport of a jobqd cluster (docs/security.md
 * "Node traffic"): a libraft `struct raft_uv_transport` whose connections are
 * mutually authenticated with the nodes' Curve25519 keypairs (the daemon's
 * CURVE keys) and encrypted, so Raft traffic never crosses the network in
 * clear and only the holder of an authorized key can be a peer.
 *
 * libraft reads and writes plaintext on an AF_UNIX socketpair end handed to it
 * as a uv_pipe_t; this module relays the other end to and from the TCP
 * connection in the same uv loop, encrypting and decrypting. The design and
 * the wire format are described at the top of nodelink.c.
 *
 * Thread contract: everything runs on the thread of the uv loop given in the
 * options (libraft's loop), authorize included; only jq_nodelink_stats may be
 * called from another thread (until jq_nodelink_close). The process must block or
 * ignore SIGPIPE (jobqd blocks it), as with libraft's own TCP transport: a
 * write to a connection whose peer went away would otherwise kill it. */
#ifndef JOBQ_NODELINK_H
#define JOBQ_NODELINK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct raft_uv_transport;
struct uv_loop_s;

#define JQ_NODELINK_KEY_BYTES 32
/* Milliseconds a connection has, from its TCP accept (or the start of its
 * connect) to the end of its handshake, when the options give 0. */
#define JQ_NODELINK_HANDSHAKE_MS 5000
/* Addresses are "host:port" (an IPv4 dotted quad, "[v6]:port", or a name:
 * listen binds every address of the name, resolved at once; connect
 * resolves it without blocking the loop and tries its addresses in turn). */

/* Bytes a link queues for writing on one side before it stops reading the
 * other (libraft's stream, or the peer): the relay's memory per link is
 * about this much per direction, plus one frame. */
#define JQ_NODELINK_QUEUE_HIGH (1024 * 1024)

typedef struct {
    struct uv_loop_s *loop;    /* libraft's loop: every callback runs on it */
    const uint8_t *public_key; /* this node's static keypair, 32 bytes each */
    const uint8_t *secret_key; /* (copied: the caller may wipe its copy) */
    /* Plain TCP, no handshake crypto: the raft id/address preamble still
     * travels, nothing is authenticated. The caller allows it only on a
     * loopback node address. Both ends must agree (a mismatch is refused).
     * The keys and authorize may be NULL then. */
    bool insecure;
    /* Whether a peer's static public key is a node of ours: asked on both
     * sides (the accepting side of the connecting peer's key, the
     * connecting side of the listener's), on the loop thread, once per
     * connection (for the daemon: jq_auth_is_node_key). Required unless
     * insecure. */
    bool (*authorize)(void *ctx, const uint8_t peer_public[JQ_NODELINK_KEY_BYTES]);
    void *ctx;                 /* given to authorize */
    const char *bind_address;  /* "host:port" to listen on; NULL: the address
                                  libraft gives the transport's init (copied) */
    unsigned handshake_ms;     /* 0: JQ_NODELINK_HANDSHAKE_MS */
} jq_nodelink_opts_t;

/* What the transport counted since init (for the daemon's metrics). */
typedef struct {
    uint64_t accepted;        /* incoming connections handed to libraft */
    uint64_t refused;         /* incoming connections dropped before that:
                                 unknown key, bad or slow handshake, too many */
    uint64_t connected;       /* outgoing connections handed to libraft */
    uint64_t connect_failed;  /* outgoing attempts that failed (refused,
                                 unreachable, handshake failed or timed out) */
    uint64_t bytes_in;        /* bytes read from node TCP connections */
    uint64_t bytes_out;       /* bytes written to them */
    uint64_t links;           /* connections open now (any state) */
    uint64_t queued;          /* bytes queued for writing now, all links and
                                 both directions (bounded by back-pressure) */
} jq_nodelink_stats_t;

/* Fill t's function pointers and its impl for libraft (t->data is left to
 * libraft, which sets it in raft_uv_init). The keys are copied. 0, or -1
 * (bad options or out of memory) with t->errmsg set. */
int jq_nodelink_init(struct raft_uv_transport *t, const jq_nodelink_opts_t *o);
/* Free the implementation once the transport is closed: after raft_close's
 * callback (libraft closes its transport), or after t->close's callback
 * when used without libraft, or at once when listen and connect were never
 * called. Called with connections or listeners still open it logs an error
 * and leaks the implementation rather than free memory the loop still
 * uses. NULL-safe; t->impl is NULL afterwards. */
void jq_nodelink_close(struct raft_uv_transport *t);
/* The counters (zeros when t was not initialized by jq_nodelink_init). Any
 * thread, from jq_nodelink_init until jq_nodelink_close. */
void jq_nodelink_stats(const struct raft_uv_transport *t, jq_nodelink_stats_t *out);

#endif
