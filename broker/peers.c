/* peers.c: per-connection records (a chained hash by routing id) and the
 * replies waiting for slow readers (a FIFO per peer, and a list of peers
 * with a FIFO). See peers.h. */
#include "peers.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

typedef struct waiting {
    struct waiting *next;
    bool delimiter;
    bool reply;          /* JQ_SEND_REPLY: in flight until it leaves */
    zmq_msg_t body;
} waiting_t;

struct jq_peer {
    struct jq_peers *set;         /* the set (and socket) it belongs to */
    struct jq_peer *hnext;
    struct jq_peer *blocked_next; /* in the list of peers with replies waiting */
    waiting_t *head, *tail;
    uint32_t nwaiting;
    uint64_t waiting_bytes;
    uint32_t inflight;            /* requests read whose reply has not left */
    uint32_t waiters;             /* parked waits */
    bool blocked;
    uint8_t rid_len;
    unsigned char rid[];
};

struct jq_peers {
    void *router;
    jq_peer_t **buckets;
    size_t nbuckets, count;
    jq_peer_t *blocked;
    jq_peers_stats_t stats;
};

jq_peers_t *jq_peers_new(void *router)
{
    jq_peers_t *ps = calloc(1, sizeof *ps);
    if (!ps)
        return NULL;
    ps->nbuckets = 1024;
    ps->buckets = calloc(ps->nbuckets, sizeof *ps->buckets);
    if (!ps->buckets) {
        free(ps);
        return NULL;
    }
    ps->router = router;
    return ps;
}

/* What one waiting reply costs: its body and the bookkeeping around it
 * (this entry, libzmq's message header), so that the per-peer byte bounds
 * hold for a flood of tiny Busy answers too. */
static uint64_t waiting_cost(const waiting_t *w)
{
    return zmq_msg_size((zmq_msg_t *)&w->body) + sizeof *w + 64;
}

/* The head of the peer's queue is done with (sent, or its peer gone). */
static void pop_waiting(jq_peers_t *ps, jq_peer_t *p)
{
    waiting_t *w = p->head;
    p->head = w->next;
    if (!p->head)
        p->tail = NULL;
    if (w->reply)
        jq_peer_add_inflight(p, -1);
    p->waiting_bytes -= waiting_cost(w);
    zmq_msg_close(&w->body);
    free(w);
    p->nwaiting--;
    ps->stats.backlog--;
}

static void drop_waiting(jq_peers_t *ps, jq_peer_t *p)
{
    while (p->head)
        pop_waiting(ps, p);
}

void jq_peers_destroy(jq_peers_t **psp)
{
    if (!psp || !*psp)
        return;
    jq_peers_t *ps = *psp;
    for (size_t b = 0; b < ps->nbuckets; b++)
        for (jq_peer_t *p = ps->buckets[b], *next; p; p = next) {
            next = p->hnext;
            drop_waiting(ps, p);
            free(p);
        }
    free(ps->buckets);
    free(ps);
    *psp = NULL;
}

static size_t bucket_of(const jq_peers_t *ps, const unsigned char *rid, size_t len)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (size_t i = 0; i < len; i++)
        h = (h ^ rid[i]) * 1099511628211ull;
    return (size_t)h & (ps->nbuckets - 1);
}

static void grow(jq_peers_t *ps)
{
    size_t nb = ps->nbuckets * 2;
    jq_peer_t **grown = calloc(nb, sizeof *grown);
    if (!grown)
        return;
    size_t old = ps->nbuckets;
    jq_peer_t **buckets = ps->buckets;
    ps->buckets = grown;
    ps->nbuckets = nb;
    for (size_t b = 0; b < old; b++)
        for (jq_peer_t *p = buckets[b], *next; p; p = next) {
            next = p->hnext;
            size_t nbk = bucket_of(ps, p->rid, p->rid_len);
            p->hnext = grown[nbk];
            grown[nbk] = p;
        }
    free(buckets);
}

jq_peer_t *jq_peers_get(jq_peers_t *ps, const void *rid, size_t len)
{
    if (len == 0 || len > 255)
        return NULL;
    size_t b = bucket_of(ps, rid, len);
    for (jq_peer_t *p = ps->buckets[b]; p; p = p->hnext)
        if (p->rid_len == len && memcmp(p->rid, rid, len) == 0)
            return p;
    jq_peer_t *p = calloc(1, sizeof *p + len);
    if (!p)
        return NULL;
    p->rid_len = (uint8_t)len;
    p->set = ps;
    memcpy(p->rid, rid, len);
    p->hnext = ps->buckets[b];
    ps->buckets[b] = p;
    if (++ps->count > 2 * ps->nbuckets)
        grow(ps);
    return p;
}

void jq_peers_release(jq_peers_t *ps, jq_peer_t *p)
{
    if (!p || p->inflight || p->waiters || p->nwaiting || p->blocked)
        return;
    jq_peer_t **pp = &ps->buckets[bucket_of(ps, p->rid, p->rid_len)];
    while (*pp != p)
        pp = &(*pp)->hnext;
    *pp = p->hnext;
    ps->count--;
    free(p);
}

uint32_t jq_peer_inflight(const jq_peer_t *p) { return p->inflight; }
uint32_t jq_peer_waiters(const jq_peer_t *p) { return p->waiters; }
uint32_t jq_peer_backlog(const jq_peer_t *p) { return p->nwaiting; }
uint64_t jq_peer_waiting_bytes(const jq_peer_t *p) { return p->waiting_bytes; }

void jq_peer_add_inflight(jq_peer_t *p, int delta)
{
    p->inflight = delta < 0 && p->inflight < (uint32_t)-delta ? 0 : p->inflight + (uint32_t)delta;
}

void jq_peer_add_waiters(jq_peer_t *p, int delta)
{
    p->waiters = delta < 0 && p->waiters < (uint32_t)-delta ? 0 : p->waiters + (uint32_t)delta;
}

/* 0 sent, EAGAIN its pipe is full, EHOSTUNREACH it is gone. */
static int try_send(jq_peers_t *ps, jq_peer_t *p, bool delimiter, zmq_msg_t *body)
{
    if (zmq_send(ps->router, p->rid, p->rid_len, ZMQ_SNDMORE | ZMQ_DONTWAIT) < 0)
        return errno == EHOSTUNREACH ? EHOSTUNREACH : EAGAIN;
    /* Once the routing frame is accepted the rest goes too. */
    if (delimiter)
        zmq_send(ps->router, "", 0, ZMQ_SNDMORE);
    zmq_msg_send(body, ps->router, 0);
    return 0;
}

static void queue_reply(jq_peers_t *ps, jq_peer_t *p, bool delimiter, zmq_msg_t *body,
                        bool reply)
{
    waiting_t *w = malloc(sizeof *w);
    if (!w) { /* out of memory: the one case an answer is lost */
        if (reply)
            jq_peer_add_inflight(p, -1);
        return;
    }
    w->next = NULL;
    w->delimiter = delimiter;
    w->reply = reply;
    zmq_msg_init(&w->body);
    zmq_msg_move(&w->body, body);
    if (p->tail)
        p->tail->next = w;
    else
        p->head = w;
    p->tail = w;
    p->nwaiting++;
    p->waiting_bytes += waiting_cost(w);
    ps->stats.backlog++;
    if (!p->blocked) {
        p->blocked = true;
        p->blocked_next = ps->blocked;
        ps->blocked = p;
    }
}

void jq_peers_send(jq_peers_t *ps, jq_peer_t *p, bool delimiter, zmq_msg_t *body,
                   jq_send_kind_t kind)
{
    bool reply = kind == JQ_SEND_REPLY;
    if (!p->nwaiting) {
        int rc = try_send(ps, p, delimiter, body);
        if (rc == 0 || rc == EHOSTUNREACH) {
            if (rc && (kind == JQ_SEND_REPLY || kind == JQ_SEND_ANSWER))
                ps->stats.dropped_gone++;
            if (reply)
                jq_peer_add_inflight(p, -1);
            jq_peers_release(ps, p);
            return;
        }
    }
    /* A keepalive behind replies says nothing they do not. */
    if (kind == JQ_SEND_EXTRA)
        return;
    if (kind == JQ_SEND_BUSY && p->waiting_bytes >= JQ_PEER_MAX_BUSY_BYTES) {
        ps->stats.dropped_busy++;
        return;
    }
    queue_reply(ps, p, delimiter, body, reply);
}

bool jq_peers_flush(jq_peers_t *ps)
{
    jq_peer_t **pp = &ps->blocked;
    while (*pp) {
        jq_peer_t *p = *pp;
        int rc = 0;
        while (p->head && (rc = try_send(ps, p, p->head->delimiter, &p->head->body)) == 0) {
            pop_waiting(ps, p);
            ps->stats.sent_late++;
        }
        if (rc == EHOSTUNREACH) {
            ps->stats.dropped_gone += p->nwaiting;
            drop_waiting(ps, p);
        }
        if (!p->head) {
            p->blocked = false;
            *pp = p->blocked_next;
            jq_peers_release(ps, p);
        } else {
            pp = &p->blocked_next;
        }
    }
    return ps->blocked != NULL;
}

bool jq_peers_waiting(const jq_peers_t *ps)
{
    return ps->blocked != NULL;
}

void jq_peers_get_stats(jq_peers_t *ps, jq_peers_stats_t *out)
{
    *out = ps->stats;
}

jq_peers_t *jq_peer_set(const jq_peer_t *p)
{
    return p->set;
}
