/* publisher.c: one PUB socket on every event endpoint, the sequence
 * numbers, heartbeats and the replay ring.
 *
 * Each event goes out twice from the same encoded bytes: alone on its
 * job's topic, and appended to the batch of the "batch/" topic, which
 * leaves at the end of the loop's publishing turn (jq_publisher_flush) or
 * when it reaches its bounds. PUB filters by topic on the daemon's side,
 * so a stream nobody subscribed to costs the copy into the batch only.
 * A batch always goes out before anything sent after it (a heartbeat, a
 * rebase), so each subscriber still sees seq in order.
 *
 * The sockets stay PUB: a subscriber of "" gets the batches too (which
 * docs/protocol.md says). An XPUB in manual mode could have applied ""
 * as "job/" and "sys/", but libzmq 4.3.4 (Debian's) can then subscribe a
 * pipe that has just been closed, which later sends touch after it is
 * freed (fixed upstream after 4.3.4, libzmq pull request 4137). */
#include "publisher.h"
#include "http.h"
#include "auth.h"
#include "listeners.h"
#include "log.h"
#include "event.h"
#include "wire.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <zmq.h>

#define MAX_PUBS (1 + JQ_MAX_LISTEN)

struct jq_publisher {
    /* The ipc PUB and one per TCP endpoint (CURVE is set per socket): each
     * event, encoded once, goes out on each. */
    void *pubs[MAX_PUBS];
    unsigned npubs;
    jq_ring_t *ring;
    uint64_t epoch;
    uint64_t seq;
    _Atomic uint64_t *last_seq;
    int64_t next_heartbeat;
    bool quiet; /* no heartbeats (jq_publisher_quiet) */
    msgpack_sbuffer body;
    jq_event_batch_t batch; /* "batch/": events published since the last flush */
};

static void *pub_socket(void *zctx, uint64_t hwm)
{
    void *pub = zmq_socket(zctx, ZMQ_PUB);
    if (!pub)
        return NULL;
    int linger = 0, sndhwm = (int)hwm;
    zmq_setsockopt(pub, ZMQ_LINGER, &linger, sizeof linger);
    zmq_setsockopt(pub, ZMQ_SNDHWM, &sndhwm, sizeof sndhwm);
    /* What a subscriber sends is a subscription: a topic of a few bytes.
     * Anything larger closes its connection before it costs memory. */
    int64_t maxmsg = JQ_SUBSCRIPTION_MAX_BYTES;
    zmq_setsockopt(pub, ZMQ_MAXMSGSIZE, &maxmsg, sizeof maxmsg);
    int ivl = JQ_HANDSHAKE_SECONDS * 1000;
    zmq_setsockopt(pub, ZMQ_HANDSHAKE_IVL, &ivl, sizeof ivl);
    return pub;
}

static int bind_one(jq_publisher_t *p, void *zctx, const jq_config_t *cfg, jq_auth_t *auth,
                    jq_listeners_t *l, const char *ep, char (*eps)[512], unsigned max,
                    unsigned *neps)
{
    char resolved[512];
    void *pub = p->npubs < MAX_PUBS ? pub_socket(zctx, cfg->publish_hwm) : NULL;
    if (!pub) {
        jq_log(JQ_LOG_ERROR, "cannot publish on %s: no socket", ep);
        return -1;
    }
    p->pubs[p->npubs++] = pub;
    if (jq_endpoint_is_tcp(ep) && !cfg->insecure) {
        /* The limit holds for the handshake's commands too, and CURVE's
         * INITIATE (vouch and metadata) is larger than a subscription. */
        int64_t maxmsg = JQ_CURVE_SUBSCRIPTION_MAX_BYTES;
        zmq_setsockopt(pub, ZMQ_MAXMSGSIZE, &maxmsg, sizeof maxmsg);
        if (jq_auth_apply(auth, pub) < 0)
            return -1;
    }
    if (jq_listeners_bind(l, pub, ep, resolved, sizeof resolved) < 0) {
        jq_log(JQ_LOG_ERROR, "cannot publish on %s: %s", ep, zmq_strerror(errno));
        return -1;
    }
    if (*neps < max)
        snprintf(eps[(*neps)++], 512, "%s", resolved);
    return jq_listeners_watch(l, pub, JQ_CONN_EVENTS);
}

static void send_frames(jq_publisher_t *p, const char *topic, size_t tlen, const void *data,
                        size_t len)
{
    for (unsigned i = 0; i < p->npubs; i++) {
        zmq_send(p->pubs[i], topic, tlen, ZMQ_SNDMORE | ZMQ_DONTWAIT);
        zmq_send(p->pubs[i], data, len, ZMQ_DONTWAIT);
    }
}

static void send_all(jq_publisher_t *p, const char *topic, size_t tlen)
{
    send_frames(p, topic, tlen, p->body.data, p->body.size);
}

void jq_publisher_flush(jq_publisher_t *p)
{
    size_t len;
    const char *data = jq_event_batch_close(&p->batch, &len);
    if (data)
        send_frames(p, JQ_TOPIC_BATCH, sizeof JQ_TOPIC_BATCH - 1, data, len);
    jq_event_batch_clear(&p->batch);
}

jq_publisher_t *jq_publisher_new(void *zctx, const jq_config_t *cfg, jq_auth_t *auth,
                                 jq_ring_t *ring,
                                 jq_listeners_t *listeners, uint64_t epoch,
                                 _Atomic uint64_t *last_seq, char (*eps)[512], unsigned max,
                                 unsigned *neps)
{
    jq_publisher_t *p = calloc(1, sizeof *p);
    if (!p)
        return NULL;
    p->ring = ring;
    p->epoch = epoch;
    p->last_seq = last_seq;
    msgpack_sbuffer_init(&p->body);
    jq_event_batch_init(&p->batch);
    char ep[4200];
    snprintf(ep, sizeof ep, "ipc://%s/events.sock", cfg->run_dir);
    *neps = 0;
    int rc = bind_one(p, zctx, cfg, auth, listeners, ep, eps, max, neps);
    for (unsigned i = 0; rc == 0 && i < cfg->npublish; i++)
        rc = bind_one(p, zctx, cfg, auth, listeners, cfg->publish[i], eps, max, neps);
    /* The HTTP thread's view of the stream: on the ipc socket, which has
     * no CURVE (inproc never leaves the process). */
    if (rc == 0 && cfg->http[0] && zmq_bind(p->pubs[0], JQ_HTTP_EVENTS_EP) < 0) {
        jq_log(JQ_LOG_ERROR, "cannot publish on %s: %s", JQ_HTTP_EVENTS_EP, zmq_strerror(errno));
        rc = -1;
    }
    if (rc < 0)
        jq_publisher_destroy(&p);
    return p;
}

void jq_publisher_destroy(jq_publisher_t **pp)
{
    if (!pp || !*pp)
        return;
    jq_publisher_t *p = *pp;
    for (unsigned i = 0; i < p->npubs; i++)
        zmq_close(p->pubs[i]);
    msgpack_sbuffer_destroy(&p->body);
    jq_event_batch_fini(&p->batch);
    free(p);
    *pp = NULL;
}

void jq_publisher_remember(jq_publisher_t *p, uint64_t epoch, const jq_change_t *c)
{
    p->seq = c->seq;
    jq_event_body(&p->body, epoch, c->seq, c);
    jq_ring_append(p->ring, c->seq, c->job_id, c->serial, p->body.data, p->body.size);
}

uint64_t jq_publisher_send(jq_publisher_t *p, const jq_change_t *c)
{
    /* A cluster's records carry the seq the log gave them. */
    uint64_t seq = c->seq ? c->seq : p->seq + 1;
    p->seq = seq;
    char topic[JQ_TOPIC_MAX];
    size_t tlen = jq_event_topic(topic, c->job_id);
    jq_event_body(&p->body, p->epoch, seq, c);
    /* The ring first: a subscriber that sees seq in the stream and asks
     * events_since(seq - 1) must find it. */
    jq_ring_append(p->ring, seq, c->job_id, c->serial, p->body.data, p->body.size);
    atomic_store(p->last_seq, seq);
    /* PUB never blocks: a subscriber past its high-water mark loses the
     * message and catches up from the ring. */
    send_all(p, topic, tlen);
    if (jq_event_batch_full(&p->batch, p->body.size))
        jq_publisher_flush(p);
    jq_event_batch_add(&p->batch, p->body.data, p->body.size);
    return seq;
}

void jq_publisher_rebase(jq_publisher_t *p, uint64_t epoch, uint64_t seq)
{
    jq_publisher_flush(p); /* a batch holds one epoch's events */
    p->epoch = epoch;
    p->seq = seq;
    p->quiet = false;
    atomic_store(p->last_seq, seq);
}

void jq_publisher_quiet(jq_publisher_t *p) { p->quiet = true; }

int64_t jq_publisher_heartbeat(jq_publisher_t *p, int64_t now_mono, int64_t now_wall)
{
    if (now_mono < p->next_heartbeat)
        return p->next_heartbeat;
    if (p->quiet) { /* a cluster node that does not lead has no stream yet */
        p->next_heartbeat = now_mono + JQ_HEARTBEAT_US;
        return p->next_heartbeat;
    }
    jq_publisher_flush(p); /* the heartbeat's seq was sent before it */
    msgpack_sbuffer_clear(&p->body);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &p->body, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 4);
    wire_pack_cstr(&pk, "seq");
    msgpack_pack_uint64(&pk, p->seq);
    wire_pack_cstr(&pk, "epoch");
    msgpack_pack_uint64(&pk, p->epoch);
    wire_pack_cstr(&pk, "heartbeat");
    msgpack_pack_true(&pk);
    wire_pack_cstr(&pk, "time");
    wire_pack_ts(&pk, now_wall);
    send_all(p, "sys/heartbeat", 13);
    p->next_heartbeat = now_mono + JQ_HEARTBEAT_US;
    return p->next_heartbeat;
}
