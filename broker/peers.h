/* peers.h: what the loop knows of each client connection with work under
 * way — requests in flight, parked waits, and replies that could not
 * leave yet — so that one client cannot use up what others need and no
 * answer is ever dropped because a client reads slowly.
 *
 * A ROUTER socket reads every peer fair-queued; it cannot stop reading
 * one. So a peer over its limit gets `Busy` for new requests instead of a
 * handler's time, and replies its connection cannot take right now
 * (ZMQ_ROUTER_MANDATORY says EAGAIN) wait here, in order, and are sent as
 * soon as it reads again. A reply that waits still counts as in flight, so
 * a client that never reads is held to --max-client-requests replies (and
 * JQ_PEER_MAX_WAITING_BYTES of them). A peer with nothing under way has no
 * record: an idle client costs nothing here. Loop thread only.
 */
#ifndef JOBQ_PEERS_H
#define JOBQ_PEERS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <zmq.h>

typedef struct jq_peer jq_peer_t;
typedef struct jq_peers jq_peers_t;

typedef struct {
    uint64_t sent_late;     /* replies that waited for a slow reader */
    uint64_t dropped_gone;  /* replies to peers that had disconnected */
    uint64_t dropped_busy;  /* Busy answers dropped: JQ_PEER_MAX_BUSY_BYTES wait */
    uint64_t backlog;       /* replies waiting now */
} jq_peers_stats_t;

/* router must have ZMQ_ROUTER_MANDATORY set. */
jq_peers_t *jq_peers_new(void *router);
/* Drops every record and waiting reply. */
void jq_peers_destroy(jq_peers_t **ps);

/* The record for routing id rid (created when absent; NULL out of memory). */
jq_peer_t *jq_peers_get(jq_peers_t *ps, const void *rid, size_t len);
/* Free the record when nothing is under way for it any more. */
void jq_peers_release(jq_peers_t *ps, jq_peer_t *p);

/* The set (one per ROUTER socket) a record belongs to. */
jq_peers_t *jq_peer_set(const jq_peer_t *p);
uint32_t jq_peer_inflight(const jq_peer_t *p);
uint32_t jq_peer_waiters(const jq_peer_t *p);
void jq_peer_add_inflight(jq_peer_t *p, int delta);
void jq_peer_add_waiters(jq_peer_t *p, int delta);
/* Replies waiting for this peer to read. */
uint32_t jq_peer_backlog(const jq_peer_t *p);

/* Bytes of replies waiting for one peer (bodies and their bookkeeping)
 * beyond which its new requests are answered Busy (with
 * --max-client-requests, this bounds what a client that never reads can
 * make the daemon hold). */
#define JQ_PEER_MAX_WAITING_BYTES (64u << 20)

typedef enum {
    JQ_SEND_REPLY,  /* the answer to a request in flight: it stops being in
                       flight when it leaves (or its peer is gone) */
    JQ_SEND_ANSWER, /* an answer to a parked wait: never dropped */
    JQ_SEND_BUSY,   /* a Busy answer: it waits like any answer, up to
                       JQ_PEER_MAX_BUSY_BYTES of waiting replies */
    JQ_SEND_EXTRA   /* a keepalive: dropped rather than queued behind other
                       replies (the replies say the daemon is alive) */
} jq_send_kind_t;

/* Bytes of replies waiting for one peer beyond which even a Busy answer is
 * dropped (counted): the peer sent requests by the million and read none. */
#define JQ_PEER_MAX_BUSY_BYTES (2 * (uint64_t)JQ_PEER_MAX_WAITING_BYTES)

/* Send [rid, (""), body] to the peer, or queue it behind what waits (the
 * message is taken over: body is emptied). */
void jq_peers_send(jq_peers_t *ps, jq_peer_t *p, bool delimiter, zmq_msg_t *body,
                   jq_send_kind_t kind);
/* Bytes of replies waiting for the peer. */
uint64_t jq_peer_waiting_bytes(const jq_peer_t *p);
/* True while replies wait for slow readers. */
bool jq_peers_waiting(const jq_peers_t *ps);
/* Try again to send what waits; true while something still does. */
bool jq_peers_flush(jq_peers_t *ps);

void jq_peers_get_stats(jq_peers_t *ps, jq_peers_stats_t *out);

#endif
