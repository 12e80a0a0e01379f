/* publisher.h: the PUB socket and the replay ring, owned by the loop.
 *
 * Change records reach the loop through the change queue; for each one the
 * publisher assigns the next sequence number, wraps the record's bytes in
 * the event body (never re-encoding it), sends [topic, body] and keeps the
 * body in the replay ring. The same bytes join the batch of the "batch/"
 * topic, sent by jq_publisher_flush. Once a second it sends a heartbeat
 * with the last sequence number. Loop thread only, but for the atomic
 * last_seq. */
#ifndef JOBQ_PUBLISHER_H
#define JOBQ_PUBLISHER_H

#include "change.h"
#include "config.h"
#include "ring.h"

#include <stdatomic.h>

#define JQ_HEARTBEAT_US 1000000
/* Largest message a subscriber may send (a subscription: one topic). */
#define JQ_SUBSCRIPTION_MAX_BYTES 256
#define JQ_CURVE_SUBSCRIPTION_MAX_BYTES 1024 /* on a CURVE socket */

typedef struct jq_publisher jq_publisher_t;
struct jq_listeners;

/* Binds ipc://DATA_DIR/events.sock and cfg->publish endpoints through
 * listeners (which count their connections). The bound endpoints
 * (wildcards resolved) are written to eps (up to max entries of 512
 * bytes); *neps says how many. NULL with a message on stderr. */
struct jq_auth;
/* auth: the CURVE keys a TCP endpoint is served with (unless --insecure). */
jq_publisher_t *jq_publisher_new(void *zctx, const jq_config_t *cfg, struct jq_auth *auth,
                                 jq_ring_t *ring,
                                 struct jq_listeners *listeners, uint64_t epoch,
                                 _Atomic uint64_t *last_seq, char (*eps)[512], unsigned max,
                                 unsigned *neps);
void jq_publisher_destroy(jq_publisher_t **p);

/* A cluster node that starts leading: the cluster's epoch, and the seq
 * of the last event its log holds (the next event is seq + 1). */
void jq_publisher_rebase(jq_publisher_t *p, uint64_t epoch, uint64_t seq);
/* A cluster follower: keep a record it applied (its seq set) in the
 * replay ring, unpublished, so that once elected it can answer
 * events_since for events the previous leader published. */
void jq_publisher_remember(jq_publisher_t *p, uint64_t epoch, const jq_change_t *c);
/* No heartbeats until rebased (a cluster node that does not lead). */
void jq_publisher_quiet(jq_publisher_t *p);
/* Publish one record; returns its sequence number. */
uint64_t jq_publisher_send(jq_publisher_t *p, const jq_change_t *c);
/* Send the batch of the events published since the last flush (none: no
 * message); at the end of each turn that published. */
void jq_publisher_flush(jq_publisher_t *p);
/* Send a heartbeat if one is due; returns when the next one is due. */
int64_t jq_publisher_heartbeat(jq_publisher_t *p, int64_t now_mono, int64_t now_wall);

#endif
