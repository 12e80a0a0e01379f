/* peers.h: what the loop knows of each client connection with work under
 * way — requests in flight, parked waits, and replies that could not
 * leave yet — so that one client cannot use up what others need and no
 * answer is ever dropped because a client reads slowly.
 *
 * A ROUTER socket reads every peer fair-queued; it cannot stop reading
 * one. So a peer over its limit gets `Busy` for new requests instead of a
 * handler's time, and replies its connection cannot take right now
 * (ZMQ_ROUTER_MANDATORY says EAGAIN) wait here, in order, and are sent as
 * soon as it reads again. A peer with nothing under way has no record: an
 * idle client costs nothing here. Loop thread only.
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
    uint64_t dropped_busy;  /* Busy answers not queued: peer far behind */
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

uint32_t jq_peer_inflight(const jq_peer_t *p);
uint32_t jq_peer_waiters(const jq_peer_t *p);
void jq_peer_add_inflight(jq_peer_t *p, int delta);
void jq_peer_add_waiters(jq_peer_t *p, int delta);
/* Replies waiting for this peer to read. */
uint32_t jq_peer_backlog(const jq_peer_t *p);

/* Send [rid, (""), body] to the peer, or queue it behind what waits (the
 * message is taken over: body is emptied). `answer` false marks a reply
 * that may be dropped rather than queued (a keepalive, a Busy to a peer
 * far behind). */
void jq_peers_send(jq_peers_t *ps, jq_peer_t *p, bool delimiter, zmq_msg_t *body, bool answer);
/* Try again to send what waits; true while something still does. */
bool jq_peers_flush(jq_peers_t *ps);

void jq_peers_get_stats(jq_peers_t *ps, jq_peers_stats_t *out);

#endif
