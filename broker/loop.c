/* loop.c: the event loop that owns the ROUTER socket.
 *
 * It only moves frames: a request goes to the handlers (inproc PUSH), a
 * reply comes back (inproc PULL) and goes out on the ROUTER. It never
 * decodes a body and never waits on anything but zmq_poll, so an idle or
 * slow client costs the loop nothing. When the handlers fall behind, the
 * loop stops reading the ROUTER (ZeroMQ then queues, then pushes back on
 * the clients) instead of queueing without bound. */
#include "daemon.h"
#include "publisher.h"
#include "waiters.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zmq.h>

#define REQUESTS_EP "inproc://jobq-requests"
#define REPLIES_EP "inproc://jobq-replies"

/* A reply waiting for the store: sent once the store is durable up to
 * its ticket (submits are acknowledged only when committed). */
typedef struct held {
    struct held *next;
    uint64_t ticket;
    bool delimiter;
    zmq_msg_t rid, body;
} held_t;

typedef struct {
    jq_daemon_t *d;
    void *router, *to_handlers, *from_handlers;
    held_t *held;             /* oldest first */
    held_t **held_tail;
    jq_publisher_t *publisher;
    jq_waiters_t *waiters;
    zmq_msg_t rid, body;  /* a request waiting for a handler */
    bool delimiter;
    bool pending;
} loop_t;

static void set_int(void *s, int opt, int v)
{
    zmq_setsockopt(s, opt, &v, sizeof v);
}

/* Read one request off the ROUTER into l->rid/l->body. False when there is
 * none (EAGAIN) or it was malformed (dropped: no reply is possible). */
static bool read_request(loop_t *l, int flags)
{
    if (zmq_msg_recv(&l->rid, l->router, flags) < 0)
        return false;
    bool ok = zmq_msg_more(&l->rid);
    l->delimiter = false;
    if (ok && zmq_msg_recv(&l->body, l->router, 0) >= 0 && zmq_msg_size(&l->body) == 0 &&
        zmq_msg_more(&l->body)) {
        l->delimiter = true; /* a REQ client's empty delimiter */
        ok = zmq_msg_recv(&l->body, l->router, 0) >= 0;
    }
    if (ok && zmq_msg_more(&l->body)) {
        ok = false;
        while (zmq_msg_more(&l->body) && zmq_msg_recv(&l->body, l->router, 0) >= 0)
            ;
    }
    if (!ok) {
        atomic_fetch_add(&l->d->dropped, 1);
        if (l->d->cfg.verbose)
            fprintf(stderr, "jobqd: dropped a request with an unexpected frame layout\n");
    }
    return ok;
}

/* Hand the pending request to a handler; false when they are all busy. */
static bool hand_off(loop_t *l, int flags)
{
    zmq_msg_t flag;
    zmq_msg_init_size(&flag, 1);
    *(char *)zmq_msg_data(&flag) = l->delimiter ? 1 : 0;
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
static void send_to_waiter(void *ctx, jq_waiter_t *w, const char *body, size_t len)
{
    loop_t *l = ctx;
    zmq_msg_t rid;
    zmq_msg_init(&rid);
    zmq_msg_copy(&rid, &w->rid);
    zmq_msg_send(&rid, l->router, ZMQ_SNDMORE | ZMQ_DONTWAIT);
    zmq_msg_close(&rid);
    if (w->delimiter)
        zmq_send(l->router, "", 0, ZMQ_SNDMORE | ZMQ_DONTWAIT);
    zmq_send(l->router, body, len, ZMQ_DONTWAIT);
}

static void reply_error(loop_t *l, jq_waiter_t *w, jobq_code_t code, const char *msg)
{
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    wire_reply_error(&pk, w->request_id, true, code, msg);
    send_to_waiter(l, w, sb.data, sb.size);
    msgpack_sbuffer_destroy(&sb);
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
    if (atomic_load(&l->d->stopping)) {
        reply_error(l, w, JOBQ_ERR_SHUTTING_DOWN, "the daemon is shutting down");
    } else if (jq_waiters_park(l->waiters, w, jq_now_mono()) != JQ_PARK_RECHECK) {
        return; /* parked or answered: the waiters own it */
    } else {
        zmq_msg_t again, flag;
        zmq_msg_init(&again);
        zmq_msg_copy(&again, &w->rid);
        zmq_msg_init_size(&flag, 1);
        *(char *)zmq_msg_data(&flag) = delim ? JQ_FLAG_DELIMITER : JQ_FLAG_PLAIN;
        if (zmq_msg_send(&again, l->to_handlers, ZMQ_SNDMORE | ZMQ_DONTWAIT) >= 0) {
            zmq_msg_send(&flag, l->to_handlers, ZMQ_SNDMORE);
            zmq_send(l->to_handlers, w->request, w->request_len, 0);
        } else {
            zmq_msg_close(&again);
            zmq_msg_close(&flag);
            reply_error(l, w, JOBQ_ERR_INTERNAL, "the daemon is overloaded, ask again");
        }
    }
    atomic_fetch_sub(&l->d->waiters, 1);
    jq_waiter_destroy(&w);
}

static void send_reply(loop_t *l, zmq_msg_t *rid, bool delim, zmq_msg_t *body)
{
    /* A ROUTER drops what it cannot deliver (peer gone, or its queue full):
     * a client that stopped reading cannot stall the loop. */
    zmq_msg_send(rid, l->router, ZMQ_SNDMORE | ZMQ_DONTWAIT);
    if (delim)
        zmq_send(l->router, "", 0, ZMQ_SNDMORE | ZMQ_DONTWAIT);
    zmq_msg_send(body, l->router, ZMQ_DONTWAIT);
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

static void hold(loop_t *l, zmq_msg_t *rid, bool delim, zmq_msg_t *body, uint64_t ticket)
{
    held_t *h = calloc(1, sizeof *h);
    if (!h) { /* cannot wait for the commit: never acknowledge early */
        msgpack_sbuffer sb;
        msgpack_sbuffer_init(&sb);
        msgpack_packer pk;
        msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
        wire_reply_error(&pk, reply_id(body), true, JOBQ_ERR_INTERNAL,
                         "out of memory: the change was made but its commit cannot be awaited");
        zmq_msg_t err;
        zmq_msg_init_size(&err, sb.size);
        memcpy(zmq_msg_data(&err), sb.data, sb.size);
        msgpack_sbuffer_destroy(&sb);
        send_reply(l, rid, delim, &err);
        zmq_msg_close(&err);
        return;
    }
    h->ticket = ticket;
    h->delimiter = delim;
    zmq_msg_init(&h->rid);
    zmq_msg_init(&h->body);
    zmq_msg_move(&h->rid, rid);
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
            char msg[384];
            snprintf(msg, sizeof msg, "the job was accepted but could not be saved: %s; "
                                      "it is kept in memory and saved when the store recovers",
                     why);
            msgpack_sbuffer sb;
            msgpack_sbuffer_init(&sb);
            msgpack_packer pk;
            msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
            wire_reply_error(&pk, reply_id(&h->body), true, JOBQ_ERR_STORE_FAILED, msg);
            zmq_msg_close(&h->body);
            zmq_msg_init_size(&h->body, sb.size);
            memcpy(zmq_msg_data(&h->body), sb.data, sb.size);
            msgpack_sbuffer_destroy(&sb);
            atomic_fetch_add(&l->d->errors[JOBQ_ERR_STORE_FAILED], 1);
        }
        send_reply(l, &h->rid, h->delimiter, &h->body);
        zmq_msg_close(&h->rid);
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
                send_reply(l, &rid, delim, &body);
            else
                hold(l, &rid, delim, &body, ticket);
        } else {
            send_reply(l, &rid, delim, &body);
        }
    }
    zmq_msg_close(&rid);
    zmq_msg_close(&flag);
    zmq_msg_close(&body);
}

/* Publish every change record that arrived, and feed the waiters. */
static void publish_changes(loop_t *l)
{
    jq_change_t *head = jq_changeq_take(l->d->changeq);
    uint64_t n = 0;
    for (jq_change_t *c = head; c; c = c->next, n++) {
        jq_publisher_send(l->publisher, c);
        jq_waiters_on_change(l->waiters, c->job_id, c->data, c->len);
    }
    jq_change_list_free(&head);
    atomic_fetch_add_explicit(&l->d->changes_consumed, n, memory_order_relaxed);
    release_held(l);
}

static int bind_endpoints(loop_t *l)
{
    jq_daemon_t *d = l->d;
    char ep[4200];
    snprintf(ep, sizeof ep, "ipc://%s/jobq.sock", d->cfg.data_dir);
    mode_t old = umask(0117); /* the socket file is born 0660 */
    int rc = zmq_bind(l->router, ep);
    umask(old);
    if (rc < 0) {
        fprintf(stderr, "jobqd: cannot serve on %s: %s\n", ep, zmq_strerror(errno));
        return -1;
    }
    chmod(ep + 6, 0660);
    for (unsigned i = 0; i < d->cfg.nlisten; i++)
        if (zmq_bind(l->router, d->cfg.listen[i]) < 0) {
            fprintf(stderr, "jobqd: cannot serve on %s: %s\n", d->cfg.listen[i],
                    zmq_strerror(errno));
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
    return signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
}

static void stop(loop_t *l, jq_handlers_t **handlers)
{
    jq_daemon_t *d = l->d;
    atomic_store(&d->stopping, true);
    /* Requests already queued at the ROUTER are answered too (submissions
     * with ShuttingDown). */
    if (l->pending)
        hand_off(l, 0);
    while (read_request(l, ZMQ_DONTWAIT))
        hand_off(l, 0);
    jq_executors_destroy(&d->executors);
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
}

int jq_loop_run(jq_daemon_t *d)
{
    loop_t l = {.d = d};
    l.held_tail = &l.held;
    zmq_msg_init(&l.rid);
    zmq_msg_init(&l.body);
    l.router = zmq_socket(d->zctx, ZMQ_ROUTER);
    l.to_handlers = zmq_socket(d->zctx, ZMQ_PUSH);
    l.from_handlers = zmq_socket(d->zctx, ZMQ_PULL);
    int64_t maxmsg = (int64_t)d->cfg.max_request_bytes * 4;
    zmq_setsockopt(l.router, ZMQ_MAXMSGSIZE, &maxmsg, sizeof maxmsg);
    set_int(l.router, ZMQ_BACKLOG, 4096);
    set_int(l.router, ZMQ_LINGER, 2000); /* let the last replies out */
    set_int(l.to_handlers, ZMQ_SNDHWM, 1000);
    set_int(l.to_handlers, ZMQ_LINGER, 0);
    set_int(l.from_handlers, ZMQ_RCVHWM, 0);
    int sigfd = signal_fd();
    jq_handlers_t *handlers = NULL;
    int rc = -1;
    l.waiters = jq_waiters_new(d->ring, send_to_waiter, &l, &d->waiters,
                               (int64_t)(d->cfg.keepalive * 1e6));
    if (sigfd < 0 || !l.waiters || bind_endpoints(&l) < 0 ||
        !(l.publisher = jq_publisher_new(d->zctx, &d->cfg, d->ring, d->epoch, &d->last_seq,
                                         d->publish_eps, JQ_MAX_LISTEN + 1,
                                         &d->npublish_eps)) ||
        zmq_bind(l.to_handlers, REQUESTS_EP) < 0 || zmq_bind(l.from_handlers, REPLIES_EP) < 0 ||
        !(handlers = jq_handlers_new(d, REQUESTS_EP, REPLIES_EP))) {
        if (sigfd < 0 || !l.waiters)
            fprintf(stderr, "jobqd: cannot start: %s\n", strerror(errno));
        goto out;
    }
    fprintf(stderr, "jobqd %s: serving on ipc://%s/jobq.sock%s (%u shards, %u handlers, %u executors)\n",
            JOBQ_VERSION, d->cfg.data_dir, d->cfg.nlisten ? " and --listen endpoints" : "",
            d->cfg.shards, d->cfg.handlers, d->cfg.executors);

    while (!atomic_load(&d->shutdown_requested)) {
        zmq_pollitem_t items[4] = {
            {.socket = l.pending ? l.to_handlers : l.router,
             .events = l.pending ? ZMQ_POLLOUT : ZMQ_POLLIN},
            {.socket = l.from_handlers, .events = ZMQ_POLLIN},
            {.fd = sigfd, .events = ZMQ_POLLIN},
            {.fd = jq_changeq_fd(d->changeq), .events = ZMQ_POLLIN},
        };
        int64_t now = jq_now_mono();
        int64_t wake = jq_publisher_heartbeat(l.publisher, now, jq_now_wall());
        jq_waiters_tick(l.waiters, now);
        int64_t next = jq_waiters_next_wake(l.waiters);
        if (next < wake)
            wake = next;
        long timeout_ms = (long)((wake - now + 999) / 1000);
        if (zmq_poll(items, 4, timeout_ms < 0 ? 0 : timeout_ms) < 0) {
            if (errno == EINTR)
                continue;
            break;
        }
        if (items[2].revents & ZMQ_POLLIN) {
            fprintf(stderr, "jobqd: signal received, shutting down\n");
            break;
        }
        /* Committed changes go out first: they also release held replies.
         * (A waiter parked below catches up from the ring either way.) */
        if (items[3].revents & ZMQ_POLLIN)
            publish_changes(&l);
        /* Replies before new requests: they free handlers for the requests
         * behind. */
        for (int k = 0; k < 256 && (items[1].revents & ZMQ_POLLIN); k++) {
            forward_reply(&l);
            int ev;
            size_t len = sizeof ev;
            zmq_getsockopt(l.from_handlers, ZMQ_EVENTS, &ev, &len);
            if (!(ev & ZMQ_POLLIN))
                break;
        }
        if (items[0].revents) {
            for (int k = 0; k < 256; k++) {
                if (!l.pending && !(l.pending = read_request(&l, ZMQ_DONTWAIT))) {
                    int ev;
                    size_t len = sizeof ev;
                    zmq_getsockopt(l.router, ZMQ_EVENTS, &ev, &len);
                    if (!(ev & ZMQ_POLLIN))
                        break;
                    continue; /* a dropped frame; read on */
                }
                if (!hand_off(&l, ZMQ_DONTWAIT))
                    break;
                l.pending = false;
            }
        }
    }
    stop(&l, &handlers);
    rc = 0;
out:
    jq_handlers_destroy(&handlers);
    while (l.held) { /* the store never made these good */
        held_t *h = l.held;
        l.held = h->next;
        zmq_msg_close(&h->rid);
        zmq_msg_close(&h->body);
        free(h);
    }
    jq_waiters_destroy(&l.waiters);
    jq_publisher_destroy(&l.publisher);
    if (sigfd >= 0)
        close(sigfd);
    zmq_msg_close(&l.rid);
    zmq_msg_close(&l.body);
    zmq_close(l.to_handlers);
    zmq_close(l.from_handlers);
    zmq_close(l.router);
    return rc;
}
