/* loop.c: the event loop that owns the ROUTER socket.
 *
 * A cheap request (a small one of a method whose work is short and never
 * waits: cheap.c) is served here, on the loop, with no thread crossing;
 * any other goes to the handlers (inproc PUSH), its reply comes back
 * (inproc PULL) and goes out on the ROUTER. Either reply may be held until
 * the store has committed what it reports. The loop never waits on
 * anything but zmq_poll, so an idle or slow client costs it nothing, and a
 * burst of cheap requests is served only up to a budget per turn (the rest
 * go to the handlers). When the handlers fall behind, the loop stops
 * reading the ROUTER (ZeroMQ then queues, then pushes back on the clients) instead of
 * queueing without bound; a client over its own limit is answered `Busy`
 * (peers.h); a reply a slow client cannot take yet waits, never dropped.
 *
 * Stopping: SIGTERM, SIGINT or `shutdown` first stop intake and let the
 * running opcodes finish, up to --shutdown-grace (Ganeti's queue does
 * the same); a second signal or `shutdown --now` cuts that short. SIGHUP
 * reloads the config file (service.c) between two turns of the loop. */
#include "cluster.h"
#include "daemon.h"
#include "auth.h"
#include "listeners.h"
#include "log.h"
#include "peers.h"
#include "publisher.h"
#include "scan.h"
#include "waiters.h"
#include "workers.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <unistd.h>
#include <zmq.h>

#define REQUESTS_EP "inproc://jobq-requests"
#define REPLIES_EP "inproc://jobq-replies"
/* How often replies waiting for slow readers are tried again. */
#define RETRY_MS 10
/* Cheap requests the loop serves itself in one turn; past that, the
 * turn's other requests go to the handlers, which serve them beside the
 * loop, and the loop gets back to everything else it moves (workers,
 * events, replies). A count, not a clock: each cheap request's work is
 * bounded (cheap.c), so this bounds the turn, and which thread serves a
 * request does not depend on how loaded the machine happens to be. */
#define SERVE_PER_TURN 32

/* A reply waiting for the store: sent once the store is durable up to
 * its ticket (a change, or state it shows, is committed). */
typedef struct held {
    struct held *next;
    uint64_t ticket;
    bool delimiter;
    jq_peer_t *peer;
    zmq_msg_t body;
} held_t;

/* A client socket: the ipc one, and one per --listen endpoint (CURVE is
 * set per socket, so each TCP endpoint has its own). */
typedef enum { CS_IPC, CS_CURVE, CS_INSECURE } cs_kind_t;
#define MAX_CLIENT_SOCKS (1 + JQ_MAX_LISTEN)

typedef struct {
    void *sock;
    jq_peers_t *peers;
    cs_kind_t kind;
} csock_t;

typedef struct {
    jq_daemon_t *d;
    csock_t cs[MAX_CLIENT_SOCKS];
    unsigned ncs;
    unsigned next_cs;         /* read first on the next turn: fair to all */
    jq_identity_t who;        /* the sender of the pending request */
    void *to_handlers, *from_handlers;
    void *workers;            /* the workers' ipc ROUTER (the hub answers on it) */
    void *wsocks[JQ_MAX_LISTEN]; /* one more per TCP worker endpoint */
    unsigned nwsocks;
    held_t *held;             /* oldest first */
    held_t **held_tail;
    jq_publisher_t *publisher;
    jq_waiters_t *waiters;
    jq_listeners_t *listeners;
    zmq_msg_t rid, body;      /* a request waiting for a handler; rid is the
                                 socket's index (a byte), then the routing id */
    bool delimiter;
    bool pending;
    msgpack_sbuffer sb;       /* the replies of requests served here */
    unsigned served;          /* served here this turn */
    bool draining;            /* intake stopped, running opcodes finishing */
    int64_t next_flush;       /* when to try them again */
    int64_t grace_deadline;
} loop_t;

static void set_int(void *s, int opt, int v)
{
    zmq_setsockopt(s, opt, &v, sizeof v);
}

static jq_peer_t *peer_of(loop_t *l, zmq_msg_t *rid)
{
    const unsigned char *r = zmq_msg_data(rid);
    if (zmq_msg_size(rid) < 2 || r[0] >= l->ncs)
        return NULL;
    return jq_peers_get(l->cs[r[0]].peers, r + 1, zmq_msg_size(rid) - 1);
}

/* Who sent msg over client socket cs (docs/security.md). */
static void identify(loop_t *l, const csock_t *cs, zmq_msg_t *msg, jq_identity_t *who)
{
    memset(who, 0, sizeof *who);
    const char *addr = zmq_msg_gets(msg, "Peer-Address");
    switch (cs->kind) {
    case CS_IPC: {
        /* libzmq gives an ipc peer's credentials as "...:uid:gid:pid". */
        const char *f[3] = {NULL, NULL, NULL};
        for (const char *p = addr ? addr : ""; *p; p++)
            if (*p == ':') {
                f[0] = f[1];
                f[1] = f[2];
                f[2] = p + 1;
            }
        who->role = (jq_role_t)l->d->cfg.ipc_role;
        who->via = JQ_VIA_IPC;
        if (f[0])
            snprintf(who->owner, sizeof who->owner, "uid:%.*s", (int)(f[1] - f[0] - 1), f[0]);
        else
            snprintf(who->owner, sizeof who->owner, "ipc");
        break;
    }
    case CS_CURVE: {
        /* zauth gives the client's public key as User-Id; its role and
         * name come from the daemon's own copy of the certificate (auth.h:
         * not from the message's other properties, which the client may
         * fill in). A key removed since it connected may do nothing. */
        const char *key = zmq_msg_gets(msg, "User-Id");
        int role;
        char name[65];
        who->via = JQ_VIA_CURVE;
        if (key && strlen(key) == JQ_KEY_Z85)
            snprintf(who->key, sizeof who->key, "%s", key);
        if (jq_auth_identity(l->d->auth, key, &role, name, sizeof name) < 0) {
            who->role = JQ_ROLE_WORKER; /* no method of a client endpoint */
            snprintf(who->owner, sizeof who->owner, "key:%s", key ? key : "?");
        } else {
            who->role = (jq_role_t)role;
            if (*name)
                snprintf(who->owner, sizeof who->owner, "%s", name);
            else
                snprintf(who->owner, sizeof who->owner, "key:%s", key);
        }
        break;
    }
    case CS_INSECURE:
        who->role = JQ_ROLE_ADMIN;
        who->via = JQ_VIA_INSECURE;
        snprintf(who->owner, sizeof who->owner, "tcp:%s", addr ? addr : "?");
        break;
    }
}

/* A whole error reply as a message. */
static void error_msg(zmq_msg_t *out, uint64_t id, bool has_id, jobq_code_t code,
                      const char *message)
{
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    wire_reply_error(&pk, id, has_id, code, message);
    zmq_msg_init_size(out, sb.size);
    memcpy(zmq_msg_data(out), sb.data, sb.size);
    msgpack_sbuffer_destroy(&sb);
}

/* The records of p's socket. */
static jq_peers_t *peers_of(loop_t *l, jq_peer_t *p)
{
    (void)l;
    return jq_peer_set(p);
}

/* The reply to a request leaves (or waits for its reader): the request is
 * no longer in flight. */
static void reply_to(loop_t *l, jq_peer_t *p, bool delim, zmq_msg_t *body)
{
    if (p)
        jq_peers_send(peers_of(l, p), p, delim, body, JQ_SEND_REPLY);
}

/* Read one request off the ROUTER into l->rid/l->body. False when there is
 * none (EAGAIN) or it was malformed (dropped: no reply is possible). */
static bool read_request(loop_t *l, unsigned ci, int flags)
{
    void *router = l->cs[ci].sock;
    zmq_msg_t raw;
    zmq_msg_init(&raw);
    if (zmq_msg_recv(&raw, router, flags) < 0) {
        zmq_msg_close(&raw);
        return false;
    }
    bool ok = zmq_msg_more(&raw);
    zmq_msg_close(&l->rid);
    zmq_msg_init_size(&l->rid, zmq_msg_size(&raw) + 1);
    *(unsigned char *)zmq_msg_data(&l->rid) = (unsigned char)ci;
    memcpy((char *)zmq_msg_data(&l->rid) + 1, zmq_msg_data(&raw), zmq_msg_size(&raw));
    zmq_msg_close(&raw);
    l->delimiter = false;
    if (ok && zmq_msg_recv(&l->body, router, 0) >= 0 && zmq_msg_size(&l->body) == 0 &&
        zmq_msg_more(&l->body)) {
        l->delimiter = true; /* a REQ client's empty delimiter */
        ok = zmq_msg_recv(&l->body, router, 0) >= 0;
    }
    if (ok && zmq_msg_more(&l->body)) {
        ok = false;
        while (zmq_msg_more(&l->body) && zmq_msg_recv(&l->body, router, 0) >= 0)
            ;
    }
    if (ok)
        identify(l, &l->cs[ci], &l->body, &l->who);
    if (!ok) {
        atomic_fetch_add(&l->d->dropped, 1);
        jq_log(JQ_LOG_DEBUG, "dropped a request with an unexpected frame layout");
        return false;
    }
    /* One client may not take every handler: over its limit it is told to
     * wait for its answers, at no handler's cost. */
    jq_peer_t *p = peer_of(l, &l->rid);
    if (p && jq_peer_inflight(p) < l->d->cfg.max_client_requests &&
        jq_peer_waiting_bytes(p) < JQ_PEER_MAX_WAITING_BYTES) {
        jq_peer_add_inflight(p, 1);
        return true;
    }
    jq_scan_result_t sr;
    size_t len = zmq_msg_size(&l->body); /* the id comes first: a bounded look */
    jq_scan(zmq_msg_data(&l->body), len < 4096 ? len : 4096, NULL, &sr);
    char msg[160];
    snprintf(msg, sizeof msg, "%llu requests of this connection are unanswered "
                              "(--max-client-requests): read the replies, then ask again",
             (unsigned long long)l->d->cfg.max_client_requests);
    zmq_msg_t err;
    error_msg(&err, sr.id, sr.has_id, JOBQ_ERR_BUSY, msg);
    atomic_fetch_add(&l->d->errors[JOBQ_ERR_BUSY], 1);
    if (p)
        jq_peers_send(l->cs[ci].peers, p, l->delimiter, &err, JQ_SEND_BUSY);
    zmq_msg_close(&err);
    return false;
}

/* Hand the pending request to a handler; false when they are all busy. */
static bool hand_off(loop_t *l, int flags)
{
    char f[JQ_IDENTITY_FRAME_MAX];
    size_t flen = jq_identity_frame(&l->who, l->delimiter ? 1 : 0, f, sizeof f);
    zmq_msg_t flag;
    zmq_msg_init_size(&flag, flen);
    memcpy(zmq_msg_data(&flag), f, flen);
    zmq_msg_t rid;
    zmq_msg_init(&rid);
    zmq_msg_copy(&rid, &l->rid);
    if (zmq_msg_send(&rid, l->to_handlers, ZMQ_SNDMORE | flags) < 0) {
        zmq_msg_close(&rid);
        zmq_msg_close(&flag);
        return false;
    }
    /* The rest of a multipart message is then guaranteed to go. */
    zmq_msg_send(&flag, l->to_handlers, ZMQ_SNDMORE);
    zmq_msg_send(&l->body, l->to_handlers, 0);
    zmq_msg_init(&l->body);
    return true;
}

/* Waiters answer through here: keepalives, changes, "nochange". */
static void send_to_waiter(void *ctx, jq_waiter_t *w, const char *body, size_t len,
                           bool answer)
{
    loop_t *l = ctx;
    zmq_msg_t msg;
    zmq_msg_init_size(&msg, len);
    memcpy(zmq_msg_data(&msg), body, len);
    if (w->peer)
        jq_peers_send(peers_of(l, w->peer), w->peer, w->delimiter, &msg,
                      answer ? JQ_SEND_ANSWER : JQ_SEND_EXTRA);
    zmq_msg_close(&msg);
}

/* A waiter is done (answered, expired or failed). */
static void waiter_done(void *ctx, jq_waiter_t *w)
{
    loop_t *l = ctx;
    if (w->peer) {
        jq_peer_add_waiters(w->peer, -1);
        jq_peers_release(peers_of(l, w->peer), w->peer);
        w->peer = NULL;
    }
}

static void reply_error(loop_t *l, jq_waiter_t *w, jobq_code_t code, const char *msg)
{
    zmq_msg_t err;
    error_msg(&err, w->request_id, true, code, msg);
    reply_to(l, w->peer, w->delimiter, &err);
    zmq_msg_close(&err);
    w->peer = NULL;
    atomic_fetch_add(&l->d->errors[code], 1);
}

/* A handler parked a wait_for_job_change: the waiters take it, unless the
 * events it missed on its way here are gone, in which case the request
 * runs again from the start. */
static void park(loop_t *l, zmq_msg_t *rid, bool delim, zmq_msg_t *body)
{
    jq_waiter_t *w;
    if (zmq_msg_size(body) != sizeof w)
        return;
    memcpy(&w, zmq_msg_data(body), sizeof w);
    if (atomic_load_explicit(&w->handed_over, memory_order_acquire) != 1)
        return; /* cannot happen: see waiters.h */
    zmq_msg_move(&w->rid, rid);
    w->delimiter = delim;
    w->peer = peer_of(l, &w->rid);
    if (atomic_load(&l->d->stopping)) {
        reply_error(l, w, JOBQ_ERR_SHUTTING_DOWN, "the daemon is shutting down");
    } else if (w->peer && jq_peer_waiters(w->peer) >= l->d->cfg.max_client_waiters) {
        char msg[160];
        snprintf(msg, sizeof msg, "this connection has %llu requests waiting already "
                                  "(--max-client-waiters)",
                 (unsigned long long)l->d->cfg.max_client_waiters);
        reply_error(l, w, JOBQ_ERR_TOO_MANY_WAITERS, msg);
    } else {
        jq_peer_t *p = w->peer;
        if (p) { /* no longer a request in flight: a parked wait of the peer */
            jq_peer_add_inflight(p, -1);
            jq_peer_add_waiters(p, 1);
        }
        jq_park_t r = jq_waiters_park(l->waiters, w, jq_now_mono());
        if (r != JQ_PARK_RECHECK)
            return; /* parked or answered: the waiters own it (waiter_done) */
        if (p) {
            jq_peer_add_inflight(p, 1);
            jq_peer_add_waiters(p, -1);
        }
        zmq_msg_t again, flag;
        zmq_msg_init(&again);
        zmq_msg_copy(&again, &w->rid);
        zmq_msg_init_size(&flag, 1);
        *(char *)zmq_msg_data(&flag) = delim ? JQ_FLAG_DELIMITER : JQ_FLAG_PLAIN;
        if (zmq_msg_send(&again, l->to_handlers, ZMQ_SNDMORE | ZMQ_DONTWAIT) >= 0) {
            zmq_msg_send(&flag, l->to_handlers, ZMQ_SNDMORE);
            zmq_send(l->to_handlers, w->request, w->request_len, 0);
            w->peer = NULL; /* still in flight */
        } else {
            zmq_msg_close(&again);
            zmq_msg_close(&flag);
            reply_error(l, w, JOBQ_ERR_INTERNAL, "the daemon is overloaded, ask again");
        }
    }
    atomic_fetch_sub(&l->d->waiters, 1);
    jq_waiter_destroy(&w);
}

/* The request id of a reply we hold, to answer with an error instead. */
static uint64_t reply_id(zmq_msg_t *body)
{
    msgpack_unpacked up;
    msgpack_unpacked_init(&up);
    wire_reply_t rep = {0};
    if (msgpack_unpack_next(&up, zmq_msg_data(body), zmq_msg_size(body), NULL) ==
        MSGPACK_UNPACK_SUCCESS)
        wire_reply_parse(&up.data, &rep);
    msgpack_unpacked_destroy(&up);
    return rep.id;
}

static void hold(loop_t *l, jq_peer_t *p, bool delim, zmq_msg_t *body, uint64_t ticket)
{
    held_t *h = calloc(1, sizeof *h);
    if (!h) { /* cannot wait for the commit: never acknowledge early */
        zmq_msg_t err;
        error_msg(&err, reply_id(body), true, JOBQ_ERR_INTERNAL,
                  "out of memory: the change was made but its commit cannot be awaited");
        reply_to(l, p, delim, &err);
        zmq_msg_close(&err);
        return;
    }
    h->ticket = ticket;
    h->delimiter = delim;
    h->peer = p;
    zmq_msg_init(&h->body);
    zmq_msg_move(&h->body, body);
    *l->held_tail = h;
    l->held_tail = &h->next;
}

/* Send the held replies the store has made good (or has failed). */
static void release_held(loop_t *l)
{
    if (!l->held)
        return;
    /* failed first: a ticket in (durable, failed] then really was in a
     * failed batch, not in one committed after the failure was read. */
    char why[256] = "";
    uint64_t failed = jq_store_failed(l->d->store, why, sizeof why);
    uint64_t durable = jq_store_durable(l->d->store);
    for (held_t **pp = &l->held; *pp;) {
        held_t *h = *pp;
        if (h->ticket > durable && h->ticket > failed) {
            pp = &h->next;
            continue;
        }
        if (h->ticket > durable) {
            char msg[512];
            snprintf(msg, sizeof msg,
                     "not saved: %s. What this request changed (or the state its answer "
                     "shows) stays in memory, a submitted job does not start, and all of it "
                     "is saved as soon as the store can; if jobqd stops first it is lost",
                     why);
            zmq_msg_t err;
            error_msg(&err, reply_id(&h->body), true, JOBQ_ERR_STORE_FAILED, msg);
            zmq_msg_close(&h->body);
            zmq_msg_init(&h->body);
            zmq_msg_move(&h->body, &err);
            atomic_fetch_add(&l->d->errors[JOBQ_ERR_STORE_FAILED], 1);
        }
        reply_to(l, h->peer, h->delimiter, &h->body);
        zmq_msg_close(&h->body);
        *pp = h->next;
        free(h);
    }
    l->held_tail = &l->held;
    while (*l->held_tail)
        l->held_tail = &(*l->held_tail)->next;
}

static void forward_reply(loop_t *l)
{
    zmq_msg_t rid, flag, body;
    zmq_msg_init(&rid);
    zmq_msg_init(&flag);
    zmq_msg_init(&body);
    if (zmq_msg_recv(&rid, l->from_handlers, ZMQ_DONTWAIT) >= 0 &&
        zmq_msg_recv(&flag, l->from_handlers, 0) >= 0 &&
        zmq_msg_recv(&body, l->from_handlers, 0) >= 0) {
        const char *f = zmq_msg_data(&flag);
        char flags = zmq_msg_size(&flag) >= 1 ? f[0] : 0;
        bool delim = flags & JQ_FLAG_DELIMITER;
        if (flags & JQ_FLAG_PARK) {
            park(l, &rid, delim, &body);
        } else if ((flags & JQ_FLAG_HOLD) && zmq_msg_size(&flag) == 9) {
            uint64_t ticket;
            memcpy(&ticket, f + 1, sizeof ticket);
            if (ticket <= jq_store_durable(l->d->store))
                reply_to(l, peer_of(l, &rid), delim, &body);
            else
                hold(l, peer_of(l, &rid), delim, &body, ticket);
        } else {
            reply_to(l, peer_of(l, &rid), delim, &body);
        }
    }
    zmq_msg_close(&rid);
    zmq_msg_close(&flag);
    zmq_msg_close(&body);
}

/* A job of the store into a follower's view. */
static int into_view(void *ctx, jq_job_t *job)
{
    jq_shard_t *sh = jq_table_shard_for(ctx, job->id);
    jq_shard_wrlock(sh);
    int rc = jq_shard_insert_loaded(sh, job);
    jq_shard_wrunlock(sh);
    if (rc < 0)
        jq_job_destroy(&job);
    return rc;
}

/* The follower's view goes (stale reads end) — or is loaded again from
 * the store when `reload` (a snapshot replaced the store). */
static void replace_view(loop_t *l, bool reload)
{
    jq_daemon_t *d = l->d;
    jq_table_t *fresh = reload ? jq_table_new(d->cfg.shards, jq_store_sink, NULL) : NULL;
    char err[512] = "";
    uint64_t last_id, narchived;
    bool drained;
    if (fresh && jq_store_load(d->store, into_view, fresh, &last_id, &drained, &narchived, err,
                               sizeof err) < 0) {
        jq_log(JQ_LOG_WARNING, "cluster: the follower's view cannot be loaded: %s", err);
        jq_table_destroy(&fresh);
    }
    pthread_rwlock_wrlock(&d->view_lock);
    jq_table_t *old = d->view;
    d->view = fresh;
    pthread_rwlock_unlock(&d->view_lock);
    jq_table_destroy(&old);
}

/* A follower's view follows what the node applied (stale reads). */
static void follow(loop_t *l)
{
    jq_daemon_t *d = l->d;
    jq_change_t *head = jq_cluster_take_applied(d->cluster);
    for (jq_change_t *c = head; c; c = c->next) {
        if (c->job_id == 0 && c->kind == JQ_VIEW_RELOAD) {
            replace_view(l, true);
            continue;
        }
        if (c->job_id && c->seq) /* events_since on this node once it leads */
            jq_publisher_remember(l->publisher, jq_cluster_epoch(d->cluster), c);
        if (!d->view)
            continue;
        int rc = jq_table_replay(d->view, c);
        jq_status_t st;
        if (rc < 0 || (rc == 1 && !jq_store_archived_status(d->store, c->job_id, &st))) {
            jq_log(JQ_LOG_WARNING, "cluster: the follower's view missed a change of job %llu: "
                                   "stale reads stop until it is loaded again",
                   (unsigned long long)c->job_id);
            replace_view(l, false);
        }
    }
    jq_change_list_free(&head);
}

/* A cluster node that was elected and has applied everything committed
 * before: its view becomes the queue, settled as a restart settles the
 * store's jobs (JOBMODEL §4.4 for what was running); the cluster's event
 * stream continues; then it serves. */
static void lead(loop_t *l)
{
    jq_daemon_t *d = l->d;
    char err[512];
    follow(l); /* everything applied before the election is in the view */
    pthread_rwlock_wrlock(&d->view_lock); /* no stale read uses it from now */
    jq_table_t *view = d->view;
    d->view = NULL;
    pthread_rwlock_unlock(&d->view_lock);
    uint64_t epoch = jq_cluster_epoch(d->cluster);
    d->epoch = epoch;
    jq_publisher_rebase(l->publisher, epoch, jq_store_seq(d->store));
    /* The view, kept warm while following, becomes the queue (a view a
     * replay failure dropped leaves the store to read everything from). */
    if (jq_load_worker_opcodes(d, err, sizeof err) < 0 ||
        jq_recover(d, view, err, sizeof err) < 0) {
        jq_log(JQ_LOG_ERROR, "cluster: cannot load the queue: %s", err);
        exit(1);
    }
    jq_table_destroy(&view);
    jq_cluster_set_leading(d->cluster);
}

/* Publish every change record that arrived, and feed the waiters. */
static void publish_changes(loop_t *l)
{
    if (l->d->cluster && jq_cluster_take_ready(l->d->cluster))
        lead(l);
    jq_change_t *head = jq_changeq_take(l->d->changeq);
    if (l->d->cluster) /* applied by the cluster thread, which takes no table lock */
        head = jq_commit_settle(l->d, head, jq_store_durable(l->d->store));
    uint64_t n = 0;
    for (jq_change_t *c = head; c; c = c->next, n++) {
        jq_publisher_send(l->publisher, c);
        jq_waiters_on_change(l->waiters, c->job_id, c->data, c->len);
    }
    jq_publisher_flush(l->publisher); /* this turn's batch: no wait added */
    jq_change_list_free(&head);
    atomic_fetch_add_explicit(&l->d->changes_consumed, n, memory_order_relaxed);
    release_held(l);
    jq_hub_on_durable(l->d->hub, jq_store_durable(l->d->store));
}

static void *worker_socket(loop_t *l)
{
    void *s = zmq_socket(l->d->zctx, ZMQ_ROUTER);
    if (!s)
        return NULL;
    int64_t maxmsg = (int64_t)l->d->cfg.max_request_bytes * 4;
    zmq_setsockopt(s, ZMQ_MAXMSGSIZE, &maxmsg, sizeof maxmsg);
    set_int(s, ZMQ_LINGER, 2000); /* revokes and disconnects at a stop */
    set_int(s, ZMQ_SNDHWM, 100000);
    set_int(s, ZMQ_HANDSHAKE_IVL, JQ_HANDSHAKE_SECONDS * 1000);
    return s;
}

static void *client_socket(loop_t *l)
{
    void *s = zmq_socket(l->d->zctx, ZMQ_ROUTER);
    if (!s)
        return NULL;
    int64_t maxmsg = (int64_t)l->d->cfg.max_request_bytes * 4;
    zmq_setsockopt(s, ZMQ_MAXMSGSIZE, &maxmsg, sizeof maxmsg);
    set_int(s, ZMQ_LINGER, 2000); /* let the last replies out */
    /* A reply a peer cannot take is reported (EAGAIN), not dropped: it
     * waits in peers.c until the peer reads. */
    set_int(s, ZMQ_ROUTER_MANDATORY, 1);
    /* A peer that never finishes its handshake holds its connection this
     * long at most. */
    set_int(s, ZMQ_HANDSHAKE_IVL, JQ_HANDSHAKE_SECONDS * 1000);
    return s;
}

/* A client ROUTER of its own for endpoint ep: the ipc one plain, a TCP
 * one with CURVE (or, with --insecure, without). */
static int add_client_socket(loop_t *l, const char *ep)
{
    jq_daemon_t *d = l->d;
    csock_t *cs = &l->cs[l->ncs];
    if (l->ncs == MAX_CLIENT_SOCKS || !(cs->sock = client_socket(l))) {
        jq_log(JQ_LOG_ERROR, "cannot serve on %s: %s", ep, strerror(errno ? errno : ENOMEM));
        return -1;
    }
    l->ncs++; /* closed at the end, whatever happens next */
    if (!(cs->peers = jq_peers_new(cs->sock))) {
        jq_log(JQ_LOG_ERROR, "cannot serve on %s: out of memory", ep);
        return -1;
    }
    bool ipc = strncmp(ep, "ipc://", 6) == 0;
    cs->kind = ipc ? CS_IPC : d->auth && !d->cfg.insecure ? CS_CURVE : CS_INSECURE;
    if (cs->kind == CS_CURVE && jq_auth_apply(d->auth, cs->sock) < 0)
        return -1;
    if (jq_listeners_bind(l->listeners, cs->sock, ep, NULL, 0) < 0) {
        jq_log(JQ_LOG_ERROR, "cannot serve on %s: %s", ep, zmq_strerror(errno));
        return -1;
    }
    return jq_listeners_watch(l->listeners, cs->sock, JQ_CONN_CLIENTS);
}

static int bind_endpoints(loop_t *l)
{
    jq_daemon_t *d = l->d;
    char ep[4200];
    snprintf(ep, sizeof ep, "ipc://%s/jobq.sock", d->cfg.run_dir);
    for (unsigned i = 0; i <= d->cfg.nlisten; i++) {
        const char *e = i == 0 ? ep : d->cfg.listen[i - 1];
        if (add_client_socket(l, e) < 0)
            return -1;
    }
    /* Workers have a ROUTER of their own: their messages never queue
     * behind client requests, and a client cannot speak for a worker. */
    char resolved[512];
    snprintf(ep, sizeof ep, "ipc://%s/workers.sock", d->cfg.run_dir);
    for (unsigned i = 0; i <= d->cfg.nworkers; i++) {
        const char *w = i == 0 ? ep : d->cfg.workers[i - 1];
        void *sock = l->workers;
        bool curve = false;
        if (i > 0) { /* a TCP endpoint: a socket of its own, CURVE unless --insecure */
            sock = l->wsocks[l->nwsocks] = worker_socket(l);
            if (!sock)
                return -1;
            l->nwsocks++;
            curve = jq_endpoint_is_tcp(w) && !d->cfg.insecure;
            if ((curve && jq_auth_apply(d->auth, sock) < 0) ||
                jq_hub_attach_more(d->hub, sock, curve) < 0)
                return -1;
        }
        if (jq_listeners_bind(l->listeners, sock, w, resolved, sizeof resolved) < 0) {
            jq_log(JQ_LOG_ERROR, "cannot take workers on %s: %s", w, zmq_strerror(errno));
            return -1;
        }
        if (d->nworker_eps < JQ_MAX_LISTEN + 1)
            snprintf(d->worker_eps[d->nworker_eps++], sizeof d->worker_eps[0], "%s", resolved);
        if (jq_listeners_watch(l->listeners, sock, JQ_CONN_WORKERS) < 0)
            return -1;
    }
    return 0;
}

static int signal_fd(void)
{
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGHUP);
    return signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
}

/* First stop request: no new jobs, no new starts; running opcodes finish
 * within the grace period. */
static void start_draining(loop_t *l)
{
    jq_daemon_t *d = l->d;
    l->draining = true;
    atomic_store(&d->stopping, true);
    jq_service_stopping(d);
    jq_sched_pause(d->sched);
    jq_hub_pause(d->hub);
    l->grace_deadline = jq_now_mono() + (int64_t)(d->cfg.shutdown_grace * 1e6);
    jq_sched_stats_t ss;
    jq_sched_get_stats(d->sched, &ss);
    uint64_t running = ss.running + jq_hub_running(d->hub);
    if (running)
        jq_log(JQ_LOG_NOTICE, "shutting down: %llu running jobs may finish their opcode "
                              "within %.0f s (--shutdown-grace); no new job starts",
               (unsigned long long)running, (double)d->cfg.shutdown_grace);
}

/* Still draining? False once nothing runs or the grace period is over. */
static bool still_draining(loop_t *l, int64_t now)
{
    jq_sched_stats_t ss;
    jq_sched_get_stats(l->d->sched, &ss);
    uint64_t running = ss.running + jq_hub_running(l->d->hub);
    if (!running)
        return false;
    if (now >= l->grace_deadline) {
        jq_log(JQ_LOG_WARNING, "--shutdown-grace is over: interrupting %llu running jobs",
               (unsigned long long)running);
        return false;
    }
    return true;
}

/* Try the waiting replies of every client socket again; true while some
 * still wait. */
static bool flush_all(loop_t *l)
{
    bool waiting = false;
    for (unsigned ci = 0; ci < l->ncs; ci++)
        waiting |= jq_peers_flush(l->cs[ci].peers);
    return waiting;
}

static bool any_waiting(loop_t *l)
{
    for (unsigned ci = 0; ci < l->ncs; ci++)
        if (jq_peers_waiting(l->cs[ci].peers))
            return true;
    return false;
}

static void stop(loop_t *l, jq_handlers_t **handlers)
{
    jq_daemon_t *d = l->d;
    atomic_store(&d->stopping, true);
    jq_service_stopping(d);
    /* Requests already queued at the ROUTER are answered too (submissions
     * with ShuttingDown). */
    if (l->pending)
        hand_off(l, 0);
    for (unsigned ci = 0; ci < l->ncs; ci++)
        for (;;) {
            if (read_request(l, ci, ZMQ_DONTWAIT)) {
                hand_off(l, 0);
                continue;
            }
            int ev;
            size_t len = sizeof ev;
            zmq_getsockopt(l->cs[ci].sock, ZMQ_EVENTS, &ev, &len);
            if (!(ev & ZMQ_POLLIN))
                break;
        }
    jq_executors_destroy(&d->executors);
    jq_hub_stop(d->hub); /* worker opcodes: retried or interrupted, workers told */
    atomic_store(&d->handlers_stop, true);
    zmq_pollitem_t item = {.socket = l->from_handlers, .events = ZMQ_POLLIN};
    for (;;) {
        bool running = jq_handlers_running(*handlers);
        if (zmq_poll(&item, 1, running ? 50 : 0) > 0)
            forward_reply(l);
        else if (!running)
            break;
    }
    jq_handlers_destroy(handlers);
    /* The interrupted jobs' last changes are committed and go out before
     * the socket closes (bounded: a store that cannot write must not keep
     * the daemon from stopping); parked waiters learn that it is going. */
    uint64_t ticket = jq_store_ticket(d->store);
    int64_t deadline = jq_now_mono() + 10 * 1000000ll;
    zmq_pollitem_t ch = {.fd = jq_changeq_fd(d->changeq), .events = ZMQ_POLLIN};
    while (jq_store_durable(d->store) < ticket && jq_now_mono() < deadline &&
           jq_store_failed(d->store, NULL, 0) < ticket)
        if (zmq_poll(&ch, 1, 50) > 0)
            publish_changes(l);
    publish_changes(l);
    release_held(l);
    jq_waiters_fail_all(l->waiters, JOBQ_ERR_SHUTTING_DOWN, "the daemon is shutting down");
    /* The last replies leave before the socket closes (bounded). */
    for (int i = 0; i < 200 && flush_all(l); i++)
        usleep(RETRY_MS * 1000);
}

/* Serve the pending request here when it is cheap (cheap.c) and this
 * turn's budget allows: no handler, no thread crossing. Its reply goes out
 * at once or is held for its commit, as a handler's (forward_reply); either
 * way the request is no longer in flight once the reply leaves. False:
 * still pending, for a handler. */
static bool serve_here(loop_t *l)
{
    if (l->served >= SERVE_PER_TURN)
        return false;
    uint64_t ticket;
    if (!jq_dispatch_cheap(l->d, &l->who, zmq_msg_data(&l->body), zmq_msg_size(&l->body),
                           &l->sb, &ticket))
        return false;
    l->served++;
    atomic_fetch_add_explicit(&l->d->requests_on_loop, 1, memory_order_relaxed);
    zmq_msg_t reply;
    zmq_msg_init_size(&reply, l->sb.size);
    memcpy(zmq_msg_data(&reply), l->sb.data, l->sb.size);
    jq_peer_t *p = peer_of(l, &l->rid);
    if (ticket && ticket > jq_store_durable(l->d->store))
        hold(l, p, l->delimiter, &reply, ticket);
    else
        reply_to(l, p, l->delimiter, &reply);
    zmq_msg_close(&reply);
    zmq_msg_close(&l->body);
    zmq_msg_init(&l->body);
    if (l->sb.alloc > (1u << 20)) { /* don't keep a huge buffer around */
        msgpack_sbuffer_destroy(&l->sb);
        msgpack_sbuffer_init(&l->sb);
    }
    return true;
}

/* Read the client sockets until they are empty or the handlers are full,
 * starting with a different socket each turn; serve the cheap requests
 * here, within the turn's budget. */
static void read_requests(loop_t *l)
{
    l->served = 0;
    if (l->pending) {
        if (!hand_off(l, ZMQ_DONTWAIT))
            return;
        l->pending = false;
    }
    unsigned first = l->next_cs % (l->ncs ? l->ncs : 1);
    l->next_cs = first + 1;
    for (unsigned n = 0; n < l->ncs; n++) {
        unsigned ci = (first + n) % l->ncs;
        for (int k = 0; k < 256; k++) {
            if (!(l->pending = read_request(l, ci, ZMQ_DONTWAIT))) {
                int ev;
                size_t len = sizeof ev;
                zmq_getsockopt(l->cs[ci].sock, ZMQ_EVENTS, &ev, &len);
                if (!(ev & ZMQ_POLLIN))
                    break;
                continue; /* a dropped frame or a Busy answer; read on */
            }
            if (serve_here(l)) {
                l->pending = false;
                continue;
            }
            if (!hand_off(l, ZMQ_DONTWAIT))
                return; /* handlers full: the request stays pending */
            l->pending = false;
        }
    }
}

static void forward_replies(loop_t *l)
{
    /* Replies before new requests: they free handlers for the requests
     * behind. */
    for (int k = 0; k < 256; k++) {
        forward_reply(l);
        int ev;
        size_t len = sizeof ev;
        zmq_getsockopt(l->from_handlers, ZMQ_EVENTS, &ev, &len);
        if (!(ev & ZMQ_POLLIN))
            break;
    }
}

_Static_assert(JQ_CONN__KINDS == sizeof(((jq_loop_stats_t *)0)->by_kind) / sizeof(uint64_t),
               "jq_loop_stats_t.by_kind has one counter per connection kind");

#define FIXED_ITEMS 6
#define MAX_ITEMS (FIXED_ITEMS + MAX_CLIENT_SOCKS + JQ_MAX_LISTEN + JQ_MAX_BOUND)

/* What `stats` shows of the loop's own state, copied where handlers may
 * read it. */
static void publish_stats(loop_t *l)
{
    jq_listeners_stats_t ls;
    jq_peers_stats_t ps;
    jq_listeners_get_stats(l->listeners, &ls);
    memset(&ps, 0, sizeof ps);
    for (unsigned ci = 0; ci < l->ncs; ci++) {
        jq_peers_stats_t one;
        jq_peers_get_stats(l->cs[ci].peers, &one);
        ps.sent_late += one.sent_late;
        ps.dropped_gone += one.dropped_gone;
        ps.dropped_busy += one.dropped_busy;
        ps.backlog += one.backlog;
    }
    jq_loop_stats_t *o = &l->d->loop_stats;
    atomic_store_explicit(&o->connections, ls.connections, memory_order_relaxed);
    atomic_store_explicit(&o->connections_peak, ls.peak, memory_order_relaxed);
    atomic_store_explicit(&o->max_connections, ls.max, memory_order_relaxed);
    atomic_store_explicit(&o->accept_pauses, ls.pauses, memory_order_relaxed);
    atomic_store_explicit(&o->refused_auth, ls.refused_auth, memory_order_relaxed);
    atomic_store_explicit(&o->handshake_failed, ls.handshake_failed, memory_order_relaxed);
    atomic_store_explicit(&o->accepting, !ls.paused, memory_order_relaxed);
    atomic_store_explicit(&o->replies_waiting, ps.backlog, memory_order_relaxed);
    atomic_store_explicit(&o->replies_late, ps.sent_late, memory_order_relaxed);
    atomic_store_explicit(&o->replies_to_gone, ps.dropped_gone, memory_order_relaxed);
    atomic_store_explicit(&o->busy_dropped, ps.dropped_busy, memory_order_relaxed);
    for (int k = 0; k < JQ_CONN__KINDS; k++)
        atomic_store_explicit(&o->by_kind[k], ls.by_kind[k], memory_order_relaxed);
}

/* SIGHUP: the config file again; what the loop itself holds of it
 * follows (the others' part is done in jq_service_reload). */
static void reload(loop_t *l)
{
    jq_daemon_t *d = l->d;
    if (jq_service_reload(d) < 0)
        return;
    jq_waiters_set_keepalive(l->waiters, (int64_t)(d->cfg.keepalive * 1e6));
    /* Connections made from now on get the new hard limit; the soft one
     * (handlers.c) holds for all at once. */
    int64_t maxmsg = (int64_t)d->cfg.max_request_bytes * 4;
    for (unsigned ci = 0; ci < l->ncs; ci++)
        zmq_setsockopt(l->cs[ci].sock, ZMQ_MAXMSGSIZE, &maxmsg, sizeof maxmsg);
}

static void on_signals(loop_t *l, int sigfd)
{
    jq_daemon_t *d = l->d;
    struct signalfd_siginfo si;
    while (read(sigfd, &si, sizeof si) == sizeof si) {
        if (si.ssi_signo == SIGHUP) {
            if (atomic_load(&d->shutdown_requested) == JQ_SHUTDOWN_NONE)
                reload(l);
            continue;
        }
        bool again = atomic_load(&d->shutdown_requested) != JQ_SHUTDOWN_NONE;
        jq_log(JQ_LOG_NOTICE, "%s received, %s", si.ssi_signo == SIGINT ? "SIGINT" : "SIGTERM",
               again ? "interrupting running jobs now" : "shutting down");
        atomic_store(&d->shutdown_requested, again ? JQ_SHUTDOWN_NOW : JQ_SHUTDOWN_GRACEFUL);
    }
}

static void serve(loop_t *l, int sigfd)
{
    jq_daemon_t *d = l->d;
    for (;;) {
        int req = atomic_load(&d->shutdown_requested);
        if (req == JQ_SHUTDOWN_NOW)
            break;
        int64_t now = jq_now_mono();
        if (req == JQ_SHUTDOWN_GRACEFUL && !l->draining)
            start_draining(l);
        if (l->draining && !still_draining(l, now))
            break;
        zmq_pollitem_t items[MAX_ITEMS] = {
            {.socket = l->pending ? l->to_handlers : l->cs[0].sock,
             .events = l->pending ? ZMQ_POLLOUT : ZMQ_POLLIN},
            {.socket = l->from_handlers, .events = ZMQ_POLLIN},
            {.fd = sigfd, .events = ZMQ_POLLIN},
            {.fd = jq_changeq_fd(d->changeq), .events = ZMQ_POLLIN},
            {.socket = l->workers, .events = ZMQ_POLLIN},
            {.fd = jq_hub_inbox_fd(d->hub), .events = ZMQ_POLLIN},
        };
        /* The other client sockets (TCP), while a handler can take more. */
        size_t nitems = FIXED_ITEMS;
        for (unsigned ci = 1; ci < l->ncs && !l->pending; ci++)
            items[nitems++] = (zmq_pollitem_t){.socket = l->cs[ci].sock, .events = ZMQ_POLLIN};
        size_t first_wsock = nitems;
        for (unsigned wi = 0; wi < l->nwsocks; wi++)
            items[nitems++] = (zmq_pollitem_t){.socket = l->wsocks[wi], .events = ZMQ_POLLIN};
        size_t first_monitor = nitems;
        nitems += jq_listeners_pollitems(l->listeners, items + nitems, MAX_ITEMS - nitems - 1);
        size_t view_item = nitems;
        if (d->cluster && !jq_cluster_leading(d->cluster))
            items[nitems++] = (zmq_pollitem_t){.fd = jq_cluster_applied_fd(d->cluster),
                                               .events = ZMQ_POLLIN};
        int64_t wake = jq_publisher_heartbeat(l->publisher, now, jq_now_wall());
        int64_t hub_wake = jq_hub_tick(d->hub, now);
        if (hub_wake < wake)
            wake = hub_wake;
        jq_waiters_tick(l->waiters, now);
        int64_t next = jq_waiters_next_wake(l->waiters);
        if (next < wake)
            wake = next;
        long timeout_ms = (long)((wake - now + 999) / 1000);
        /* Slow readers' replies are tried again every RETRY_MS, not at
         * every turn of the loop. */
        if (now >= l->next_flush) {
            flush_all(l);
            l->next_flush = now + RETRY_MS * 1000;
        }
        if (any_waiting(l) && timeout_ms > RETRY_MS)
            timeout_ms = RETRY_MS;
        if (l->draining && timeout_ms > 50)
            timeout_ms = 50;
        if (zmq_poll(items, (int)nitems, timeout_ms < 0 ? 0 : timeout_ms) < 0) {
            if (errno == EINTR)
                continue;
            break;
        }
        if (items[2].revents & ZMQ_POLLIN) {
            on_signals(l, sigfd);
            continue;
        }
        bool client_input = items[0].revents != 0;
        for (size_t i = FIXED_ITEMS; i < first_wsock; i++)
            client_input |= items[i].revents != 0;
        bool worker_input = items[4].revents & ZMQ_POLLIN;
        for (size_t i = first_wsock; i < first_monitor; i++)
            worker_input |= items[i].revents != 0;
        if (view_item < nitems && (items[view_item].revents & ZMQ_POLLIN))
            follow(l);
        for (size_t i = first_monitor; i < view_item; i++)
            if (items[i].revents & ZMQ_POLLIN) {
                jq_listeners_on_events(l->listeners);
                break;
            }
        /* Committed changes go out first: they also release held replies.
         * (A waiter parked below catches up from the ring either way.) */
        if (items[3].revents & ZMQ_POLLIN)
            publish_changes(l);
        if (items[5].revents & ZMQ_POLLIN)
            jq_hub_on_inbox(d->hub);
        if (worker_input)
            jq_hub_on_readable(d->hub);
        if (items[1].revents & ZMQ_POLLIN)
            forward_replies(l);
        if (client_input) {
            /* stats served in this turn shows the loop as it is now */
            publish_stats(l);
            read_requests(l);
        }
        publish_stats(l);
    }
}

int jq_loop_run(jq_daemon_t *d)
{
    loop_t l = {.d = d};
    l.held_tail = &l.held;
    msgpack_sbuffer_init(&l.sb);
    zmq_msg_init(&l.rid);
    zmq_msg_init(&l.body);
    l.to_handlers = zmq_socket(d->zctx, ZMQ_PUSH);
    l.from_handlers = zmq_socket(d->zctx, ZMQ_PULL);
    l.workers = zmq_socket(d->zctx, ZMQ_ROUTER);
    zmq_setsockopt(l.workers, ZMQ_MAXMSGSIZE, &(int64_t){(int64_t)d->cfg.max_request_bytes * 4},
                   sizeof(int64_t));
    set_int(l.workers, ZMQ_LINGER, 2000); /* revokes and disconnects at a stop */
    set_int(l.workers, ZMQ_SNDHWM, 100000);
    jq_hub_attach(d->hub, l.workers);
    set_int(l.to_handlers, ZMQ_SNDHWM, 1000);
    set_int(l.to_handlers, ZMQ_LINGER, 0);
    set_int(l.from_handlers, ZMQ_RCVHWM, 0);
    int sigfd = signal_fd();
    jq_handlers_t *handlers = NULL;
    int rc = -1;
    jq_waiters_hooks_t wh = {.send = send_to_waiter, .done = waiter_done, .ctx = &l};
    l.waiters = jq_waiters_new(d->ring, &wh, &d->waiters, (int64_t)(d->cfg.keepalive * 1e6));
    l.listeners = jq_listeners_new(d->zctx);
    if (l.listeners)
        jq_listeners_set_group(l.listeners, d->socket_gid);
    if (sigfd < 0 || !l.waiters || !l.listeners || bind_endpoints(&l) < 0 ||
        !(l.publisher = jq_publisher_new(d->zctx, &d->cfg, d->auth, d->ring, l.listeners, d->epoch,
                                         &d->last_seq, d->publish_eps, JQ_MAX_LISTEN + 1,
                                         &d->npublish_eps)) ||
        zmq_bind(l.to_handlers, REQUESTS_EP) < 0 || zmq_bind(l.from_handlers, REPLIES_EP) < 0 ||
        !(handlers = jq_handlers_new(d, REQUESTS_EP, REPLIES_EP))) {
        if (sigfd < 0 || !l.waiters || !l.listeners)
            jq_log(JQ_LOG_ERROR, "cannot start: %s", strerror(errno));
        goto out;
    }
    if (d->cluster)
        jq_publisher_quiet(l.publisher);
    uint64_t maxconn = jq_listeners_set_max(l.listeners, d->cfg.max_connections);
    jq_log(JQ_LOG_INFO, "version %s, serving on ipc://%s/jobq.sock%s (data in %s; %u shards, "
                        "%u handlers, %u executors, up to %llu connections)",
           JOBQ_VERSION, d->cfg.run_dir, d->cfg.nlisten ? " and --listen endpoints" : "",
           d->cfg.data_dir, d->cfg.shards, d->cfg.handlers, d->cfg.executors,
           (unsigned long long)maxconn);
    jq_service_ready(d);
    serve(&l, sigfd);
    stop(&l, &handlers);
    rc = 0;
out:
    jq_handlers_destroy(&handlers);
    while (l.held) { /* the store never made these good */
        held_t *h = l.held;
        l.held = h->next;
        zmq_msg_close(&h->body);
        free(h);
    }
    jq_waiters_destroy(&l.waiters);
    jq_publisher_destroy(&l.publisher);
    for (unsigned ci = 0; ci < l.ncs; ci++)
        jq_peers_destroy(&l.cs[ci].peers);
    jq_listeners_destroy(&l.listeners);
    if (sigfd >= 0)
        close(sigfd);
    zmq_msg_close(&l.rid);
    zmq_msg_close(&l.body);
    msgpack_sbuffer_destroy(&l.sb);
    zmq_close(l.to_handlers);
    zmq_close(l.from_handlers);
    zmq_close(l.workers);
    for (unsigned wi = 0; wi < l.nwsocks; wi++)
        zmq_close(l.wsocks[wi]);
    jq_hub_attach(d->hub, NULL);
    for (unsigned ci = 0; ci < l.ncs; ci++)
        zmq_close(l.cs[ci].sock);
    return rc;
}
