/* jobq_worker.c: libjobq's worker API (see jobq.h, "Workers"), the
 * worker side of docs/protocol.md "Workers".
 *
 * Design: like the client, one DEALER per object in a ZeroMQ context of
 * its own. Unlike the client there is no request/reply matching: the
 * daemon pushes (welcome, assign, cancel, revoke, heartbeat, error,
 * disconnect) and the worker pushes back (hello, heartbeat, feedback,
 * done, disconnect), one msgpack map per frame each way.
 *
 * Everything that must happen on time happens in service(): read what
 * arrived (turning it into queued events), give up a connection the
 * daemon has been silent on for the lease time, send a heartbeat when
 * nothing else went out for the heartbeat interval, open the next
 * connection when a reconnect is due. jobq_worker_poll, _tick and
 * _timeout_ms are thin layers over it, so the blocking loop and a caller
 * that polls the socket itself behave the same.
 *
 * Connection states: OFF (no socket: before connect, or a reconnect
 * waiting out its back-off), HELLO (socket open, hello sent, no welcome
 * yet), READY (welcomed). A reconnect closes the socket at once (linger
 * 0: what was queued for the old connection is worthless, the daemon
 * will treat it as a lost worker) and revokes every lease locally. It is
 * immediate after a connection that was welcomed (the daemon restarted
 * and said disconnect: come back at once), else it backs off from 100 ms
 * to 2 s so that a daemon that keeps refusing is not hammered.
 *
 * The declarations and everything sent for a lease (feedback, done) are
 * in jobq_worker_send.c; jobq_worker_int.h has the object both share.
 *
 * A cluster (several endpoints, or a hello answered NotLeader): a
 * NotLeader answer to the hello moves to the leader's worker endpoint (one
 * that is configured, else its first of the same scheme; at most
 * MAX_HOPS in a row), or, with no leader known, to the next configured
 * endpoint after LEADER_WAIT_MS. A connection given up (the daemon silent
 * for the lease time, or disconnect) moves to the next configured
 * endpoint, and the leases still running outlive it: the next hello
 * names them (`leases`) and the welcome's `resumed` says which the new
 * daemon adopted; the others are revoked then. A welcome without
 * `resumed` (a daemon that does not resume) revokes them all. A single
 * endpoint that never met NotLeader revokes at once, as it always did.
 *
 * Events are decoded when they arrive, not when they are delivered: a
 * cancel read by jobq_worker_tick inside a callback must mark its lease
 * at once. They wait in a FIFO; the one delivered last is kept (its
 * strings are what the caller's event points to) until the next poll.
 */
#include "jobq_worker_int.h"

#include <assert.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <zmq.h>

#include "jobq_json.h"

/* Before a welcome says otherwise: the daemon's defaults. */
#define DEFAULT_HEARTBEAT_MS 1000
#define DEFAULT_LEASE_MS 5000
/* Back-off between connections that were never welcomed. */
#define RECONNECT_MIN_MS 100
#define RECONNECT_MAX_MS 2000
/* How long destroy lets the disconnect message leave. */
#define DISCONNECT_LINGER_MS 1000
/* Largest message accepted from the daemon: an assign carries the
 * opcode's arguments, which a submit may make up to 16 MiB (four times
 * that is what ZeroMQ itself refuses on the daemon's side too). */
#define MAX_MESSAGE_BYTES (64 * 1024 * 1024)
#define MAX_HOPS 10        /* NotLeader answers to hellos followed in a row */
#define LEADER_WAIT_MS 200 /* no leader known: pause before the next endpoint */
#define HELLO_WAIT_MIN_MS 200 /* a cluster: shortest wait for a welcome */

#ifndef JOBQ_INSTALLED_RUN_DIR
#define JOBQ_INSTALLED_RUN_DIR "/run/jobq"
#endif

void jw_set_error(jobq_worker_t *self, jobq_code_t code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    self->status = code;
    vsnprintf(self->reason, sizeof self->reason, fmt, ap);
    va_end(ap);
}

void jw_set_ok(jobq_worker_t *self)
{
    self->status = JOBQ_ERR_NONE;
    self->reason[0] = '\0';
}

int64_t jw_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ------------------------------------------------------------------ */
/* Events */

static void node_free(event_node_t *n)
{
    if (!n)
        return;
    free(n->opcode);
    free(n->reason);
    free(n->args_json);
    free(n->args_error);
    json_decref(n->args);
    free(n->args_msgpack);
    free(n);
}

/* A new queued event of type with reason (copied; NULL for ""), or NULL
 * when out of memory (the event is lost: nothing better to do). */
static event_node_t *push_event(jobq_worker_t *self, jobq_worker_event_type_t type,
                                const char *reason, size_t reason_len)
{
    event_node_t *n = calloc(1, sizeof *n);
    if (!n)
        return NULL;
    n->reason = jobq_utf8_clean(reason ? reason : "", reason ? reason_len : 0, JW_REASON_MAX,
                                NULL);
    if (!n->reason) {
        free(n);
        return NULL;
    }
    n->ev.type = type;
    n->ev.reason = n->reason;
    if (self->tail)
        self->tail->next = n;
    else
        self->head = n;
    self->tail = n;
    return n;
}

/* ------------------------------------------------------------------ */
/* Leases */

held_t *jw_find_held(jobq_worker_t *self, const jobq_lease_t *l)
{
    for (size_t i = 0; i < self->nheld; i++) {
        jobq_lease_t *h = &self->held[i].lease;
        if (h->job == l->job && h->op == l->op && h->attempt == l->attempt)
            return &self->held[i];
    }
    return NULL;
}

static int add_held(jobq_worker_t *self, const jobq_lease_t *l)
{
    if (self->nheld == self->held_cap) {
        size_t cap = self->held_cap ? self->held_cap * 2 : 8;
        held_t *h = realloc(self->held, cap * sizeof *h);
        if (!h)
            return -1;
        self->held = h;
        self->held_cap = cap;
    }
    self->held[self->nheld++] = (held_t){*l, JOBQ_LEASE_RUNNING};
    return 0;
}

void jw_drop_held(jobq_worker_t *self, held_t *h)
{
    *h = self->held[--self->nheld];
}

/* ------------------------------------------------------------------ */
/* Sending */

/* Starts a worker message: a map of n + 2 entries with v and type. */
void jw_begin_message(msgpack_packer *pk, const char *type, size_t n)
{
    msgpack_pack_map(pk, n + 2);
    wire_pack_cstr(pk, "v");
    msgpack_pack_int(pk, JOBQ_PROTOCOL_VERSION);
    wire_pack_cstr(pk, "type");
    wire_pack_cstr(pk, type);
}

void jw_pack_lease(msgpack_packer *pk, const jobq_lease_t *l)
{
    wire_pack_cstr(pk, "job");
    msgpack_pack_uint64(pk, l->job);
    wire_pack_cstr(pk, "op");
    msgpack_pack_uint64(pk, l->op);
    wire_pack_cstr(pk, "attempt");
    msgpack_pack_uint64(pk, l->attempt);
}

/* Sends one frame on the current connection, waiting for room as
 * timeout_ms says (see jobq.h). 0 or -1 with the status set. */
int jw_send_frame(jobq_worker_t *self, const msgpack_sbuffer *sb, int timeout_ms)
{
    if (!self->sock) {
        jw_set_error(self, JOBQ_ERR_TRANSPORT, "not connected to jobqd at %s", self->endpoint);
        return -1;
    }
    int64_t deadline = timeout_ms < 0 ? -1 : jw_now_ms() + timeout_ms;
    for (;;) {
        if (zmq_send(self->sock, sb->data, sb->size, ZMQ_DONTWAIT) >= 0) {
            self->last_sent = jw_now_ms();
            return 0;
        }
        if (errno != EAGAIN && errno != EINTR) {
            jw_set_error(self, JOBQ_ERR_TRANSPORT, "cannot send to jobqd at %s: %s",
                      self->endpoint, zmq_strerror(errno));
            return -1;
        }
        if (timeout_ms == 0) {
            jw_set_error(self, JOBQ_ERR_BUSY,
                      "the send queue to jobqd at %s is full (the daemon is slower than "
                      "this worker, or gone)",
                      self->endpoint);
            return -1;
        }
        long left = -1;
        if (deadline >= 0) {
            left = (long)(deadline - jw_now_ms());
            if (left <= 0) {
                jw_set_error(self, JOBQ_ERR_TIMEOUT, "no room to send to jobqd at %s within %g s",
                          self->endpoint, timeout_ms / 1000.0);
                return -1;
            }
        }
        zmq_pollitem_t item = {.socket = self->sock, .events = ZMQ_POLLOUT};
        if (zmq_poll(&item, 1, left) < 0 && errno != EINTR) {
            jw_set_error(self, JOBQ_ERR_TRANSPORT, "cannot wait to send: %s", zmq_strerror(errno));
            return -1;
        }
    }
}

/* A message with no keys but v and type (heartbeat, disconnect). */
static int send_bare(jobq_worker_t *self, const char *type)
{
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    jw_begin_message(&pk, type, 0);
    int rc = jw_send_frame(self, &sb, 0);
    msgpack_sbuffer_destroy(&sb);
    return rc;
}

static int send_hello(jobq_worker_t *self)
{
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    bool leases = self->resuming && self->nheld;
    jw_begin_message(&pk, "hello", (self->name ? 3 : 2) + (leases ? 1 : 0));
    if (self->name) {
        wire_pack_cstr(&pk, "name");
        wire_pack_cstr(&pk, self->name);
    }
    wire_pack_cstr(&pk, "capacity");
    msgpack_pack_int(&pk, self->capacity);
    wire_pack_cstr(&pk, "opcodes");
    char err[128];
    int rc = jobq_json_to_msgpack(&pk, self->opcodes, JOBQ_JSON_MAX_DEPTH, err, sizeof err);
    if (rc == 0 && leases) {
        wire_pack_cstr(&pk, "leases");
        msgpack_pack_array(&pk, (uint32_t)self->nheld);
        for (size_t i = 0; i < self->nheld; i++) {
            msgpack_pack_array(&pk, 3);
            msgpack_pack_uint64(&pk, self->held[i].lease.job);
            msgpack_pack_uint64(&pk, self->held[i].lease.op);
            msgpack_pack_uint64(&pk, self->held[i].lease.attempt);
        }
    }
    if (rc == 0)
        rc = jw_send_frame(self, &sb, 0);
    else
        jw_set_error(self, JOBQ_ERR_BAD_ARGUMENT, "cannot encode the hello: %s", err);
    msgpack_sbuffer_destroy(&sb);
    return rc;
}

/* ------------------------------------------------------------------ */
/* Connections */

/* Opens a new connection and says hello. On failure (ZeroMQ cannot make
 * a socket) the next try is scheduled. */
static void open_connection(jobq_worker_t *self)
{
    int64_t now = jw_now_ms();
    self->sock = zmq_socket(self->ctx, ZMQ_DEALER);
    if (self->sock) {
        int linger = 0;
        int64_t maxsize = MAX_MESSAGE_BYTES;
        zmq_setsockopt(self->sock, ZMQ_LINGER, &linger, sizeof linger);
        zmq_setsockopt(self->sock, ZMQ_MAXMSGSIZE, &maxsize, sizeof maxsize);
        if (jobq_curve_apply(&self->curve, self->sock, self->endpoint) == 0 &&
            zmq_connect(self->sock, self->endpoint) == 0) {
            self->state = STATE_HELLO;
            self->last_heard = now; /* the welcome has a lease time to come */
            self->heartbeat_ms = DEFAULT_HEARTBEAT_MS;
            self->lease_ms = DEFAULT_LEASE_MS;
            if (self->neps > 1 || self->moved) {
                /* A cluster: a node that is up answers a hello at once; one
                 * that is gone (a dead leader's socket file, its address
                 * named by a node that does not know yet) must not keep the
                 * worker past the new leader's wait for its leases. */
                int64_t hb = self->welcome_hb_ms ? self->welcome_hb_ms : DEFAULT_HEARTBEAT_MS;
                self->lease_ms = 2 * hb < HELLO_WAIT_MIN_MS ? HELLO_WAIT_MIN_MS : 2 * hb;
            }
            if (send_hello(self) == 0)
                return;
        }
        zmq_close(self->sock);
        self->sock = NULL;
    }
    self->state = STATE_OFF;
    self->reconnect_at = now + self->backoff_ms;
}

void jw_keep_done(jobq_worker_t *self, const jobq_lease_t *lease, const msgpack_sbuffer *sb)
{
    if (self->neps < 2 && !self->moved)
        return; /* one daemon: a done it never read is its restart's business */
    int64_t now = jw_now_ms();
    /* Those older than a lease time were read: a daemon silent since would
     * have been given up already. */
    for (sent_done_t **pp = &self->dones; *pp;) {
        sent_done_t *d = *pp;
        if (!d->pending && now - d->at > self->lease_ms) {
            *pp = d->next;
            msgpack_sbuffer_destroy(&d->body);
            free(d);
            continue;
        }
        pp = &d->next;
    }
    sent_done_t *d = calloc(1, sizeof *d);
    if (!d)
        return;
    msgpack_sbuffer_init(&d->body);
    if (msgpack_sbuffer_write(&d->body, sb->data, sb->size) != 0) {
        free(d);
        return;
    }
    d->lease = *lease;
    d->at = now;
    d->next = self->dones;
    self->dones = d;
}

void jw_forget_dones(jobq_worker_t *self)
{
    while (self->dones) {
        sent_done_t *d = self->dones;
        self->dones = d->next;
        msgpack_sbuffer_destroy(&d->body);
        free(d);
    }
}

/* Whether lease is held only for a done to send again (the caller has
 * let it go: no revoke for it). */
static bool recalled(jobq_worker_t *self, const jobq_lease_t *l)
{
    for (sent_done_t *d = self->dones; d; d = d->next)
        if (d->pending && d->lease.job == l->job && d->lease.op == l->op &&
            d->lease.attempt == l->attempt)
            return true;
    return false;
}

/* A connection given up in a cluster: the dones it carried in its last
 * lease time may be lost with it. Their leases are held again (named in
 * the next hello) and the dones sent again once resumed. */
static void recall_dones(jobq_worker_t *self)
{
    for (sent_done_t *d = self->dones; d; d = d->next) {
        if (d->pending || jw_now_ms() - d->at > self->lease_ms || jw_find_held(self, &d->lease))
            continue;
        if (add_held(self, &d->lease) == 0)
            d->pending = true;
    }
}

/* After the welcome: the recalled dones of resumed leases go out again
 * (and their leases are let go); the others are forgotten. */
static void resend_dones(jobq_worker_t *self)
{
    for (sent_done_t *d = self->dones; d; d = d->next) {
        if (!d->pending)
            continue;
        held_t *h = jw_find_held(self, &d->lease);
        if (h) {
            jw_drop_held(self, h);
            jw_send_frame(self, &d->body, 0);
        }
        d->pending = false;
        d->at = jw_now_ms();
    }
}

/* Makes endpoint the one the next connection goes to. */
static void set_endpoint(jobq_worker_t *self, const char *endpoint)
{
    char *ep = strdup(endpoint);
    if (!ep)
        return; /* keep the current one */
    free(self->endpoint);
    self->endpoint = ep;
}

/* Every lease held is revoked locally (the daemon that gave it is gone or
 * did not adopt it). */
static void revoke_all(jobq_worker_t *self, const char *why)
{
    char reason[JW_REASON_MAX];
    snprintf(reason, sizeof reason, "connection to jobqd given up: %s", why);
    for (size_t i = 0; i < self->nheld; i++) {
        if (recalled(self, &self->held[i].lease))
            continue;
        event_node_t *n = push_event(self, JOBQ_WORKER_EV_REVOKE, reason, strlen(reason));
        if (n)
            n->ev.lease = self->held[i].lease;
    }
    self->nheld = 0;
    self->resuming = false;
    for (sent_done_t *d = self->dones; d; d = d->next)
        d->pending = false;
}

/* Gives up the current connection: every lease is revoked locally (the
 * daemon handles the old connection as a lost worker), and the next
 * connection is scheduled. */
static void drop_connection(jobq_worker_t *self, const char *why)
{
    bool welcomed = self->state == STATE_READY;
    if (self->sock) {
        zmq_close(self->sock);
        self->sock = NULL;
    }
    self->state = STATE_OFF;
    push_event(self, JOBQ_WORKER_EV_DISCONNECTED, why, strlen(why));
    if (self->neps > 1 || self->moved) {
        /* A cluster: the leases may go on under the next leader (the
         * next hello names them), and the next node is tried. */
        recall_dones(self);
        self->resuming = self->resuming || self->nheld > 0;
        self->cur = (self->cur + 1) % self->neps;
        set_endpoint(self, self->eps[self->cur]);
    } else {
        revoke_all(self, why);
    }
    if (welcomed) {
        self->backoff_ms = RECONNECT_MIN_MS;
        self->reconnect_at = jw_now_ms();
    } else {
        self->reconnect_at = jw_now_ms() + self->backoff_ms;
        self->backoff_ms = self->backoff_ms * 2 > RECONNECT_MAX_MS ? RECONNECT_MAX_MS
                                                                     : self->backoff_ms * 2;
    }
}

/* ------------------------------------------------------------------ */
/* Receiving */

static bool get_u64(const msgpack_object *map, const char *key, uint64_t *out)
{
    int64_t v;
    if (!wire_get_int(wire_map_get(map, key), &v) || v < 0)
        return false;
    *out = (uint64_t)v;
    return true;
}

static bool get_lease(const msgpack_object *map, jobq_lease_t *l)
{
    return get_u64(map, "job", &l->job) && get_u64(map, "op", &l->op) &&
           get_u64(map, "attempt", &l->attempt);
}

/* A str value's bytes, or NULL (len 0) when o is not a str. */
static const char *get_str(const msgpack_object *o, size_t *len)
{
    if (!o || o->type != MSGPACK_OBJECT_STR) {
        *len = 0;
        return NULL;
    }
    *len = o->via.str.size;
    return o->via.str.ptr;
}

/* After a welcome to a hello that named leases: keep those the daemon
 * adopted (`resumed`), revoke the others (all when it says nothing). */
static void resume_leases(jobq_worker_t *self, const msgpack_object *resumed)
{
    self->resuming = false;
    if (!resumed || resumed->type != MSGPACK_OBJECT_ARRAY) {
        revoke_all(self, "the new connection's daemon did not resume it");
        return;
    }
    const char *why = "not resumed by the new leader";
    for (size_t i = self->nheld; i-- > 0;) {
        bool kept = false;
        for (uint32_t k = 0; k < resumed->via.array.size && !kept; k++) {
            const msgpack_object *r = &resumed->via.array.ptr[k];
            int64_t job, op, attempt;
            kept = r->type == MSGPACK_OBJECT_ARRAY && r->via.array.size == 3 &&
                   wire_get_int(&r->via.array.ptr[0], &job) &&
                   wire_get_int(&r->via.array.ptr[1], &op) &&
                   wire_get_int(&r->via.array.ptr[2], &attempt) &&
                   (uint64_t)job == self->held[i].lease.job &&
                   (uint64_t)op == self->held[i].lease.op &&
                   (uint64_t)attempt == self->held[i].lease.attempt;
        }
        if (kept)
            continue;
        if (!recalled(self, &self->held[i].lease)) {
            event_node_t *n = push_event(self, JOBQ_WORKER_EV_REVOKE, why, strlen(why));
            if (n)
                n->ev.lease = self->held[i].lease;
        }
        jw_drop_held(self, &self->held[i]);
    }
    resend_dones(self);
}

static void on_welcome(jobq_worker_t *self, const msgpack_object *m)
{
    uint64_t id = 0;
    double hb = 0, lease = 0;
    if (self->state != STATE_HELLO || !get_u64(m, "worker", &id) ||
        !wire_get_number(wire_map_get(m, "heartbeat"), &hb) ||
        !wire_get_number(wire_map_get(m, "lease"), &lease) || !(hb > 0) || !(lease > 0)) {
        self->malformed++;
        return;
    }
    self->state = STATE_READY;
    self->backoff_ms = RECONNECT_MIN_MS;
    self->hops = 0;
    if (self->resuming)
        resume_leases(self, wire_map_get(m, "resumed"));
    /* Sane bounds whatever the daemon says: a heartbeat at least every
     * 10 ms, a lease of at least two heartbeats. */
    self->heartbeat_ms = hb * 1000 < 10 ? 10 : hb * 1000 > 3600e3 ? 3600000 : (int64_t)(hb * 1000);
    self->lease_ms = lease * 1000 > 86400e3 ? 86400000 : (int64_t)(lease * 1000);
    self->welcome_hb_ms = self->heartbeat_ms;
    if (self->lease_ms < 2 * self->heartbeat_ms)
        self->lease_ms = 2 * self->heartbeat_ms;
    event_node_t *n = push_event(self, JOBQ_WORKER_EV_WELCOME, NULL, 0);
    if (n) {
        n->ev.worker_id = id;
        n->ev.heartbeat = hb;
        n->ev.lease_time = lease;
    }
}

static void on_assign(jobq_worker_t *self, const msgpack_object *m)
{
    jobq_lease_t l;
    size_t oplen;
    const char *opcode = get_str(wire_map_get(m, "opcode"), &oplen);
    const msgpack_object *args = wire_map_get(m, "args");
    const msgpack_object *timeout = wire_map_get(m, "timeout");
    int64_t prio = 0;
    double tmo = 0;
    if (self->state != STATE_READY || !get_lease(m, &l) || !opcode || oplen == 0 ||
        oplen > JOBQ_MAX_OP_NAME || (args && args->type != MSGPACK_OBJECT_NIL &&
                                     args->type != MSGPACK_OBJECT_MAP) ||
        (wire_map_get(m, "priority") && !wire_get_int(wire_map_get(m, "priority"), &prio)) ||
        (timeout && timeout->type != MSGPACK_OBJECT_NIL &&
         !(wire_get_number(timeout, &tmo) && tmo >= 0)) ||
        jw_find_held(self, &l)) {
        self->malformed++;
        return;
    }
    event_node_t *n = push_event(self, JOBQ_WORKER_EV_ASSIGN, NULL, 0);
    if (!n)
        return;
    n->ev.lease = l;
    n->ev.priority = prio < -1000 ? -1000 : prio > 1000 ? 1000 : (int)prio;
    n->ev.timeout = tmo;
    n->opcode = jobq_utf8_clean(opcode, oplen, JOBQ_MAX_OP_NAME, NULL);
    n->ev.opcode = n->opcode;
    /* The arguments three ways: as sent, as JSON values, as JSON text. */
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    if (args && args->type == MSGPACK_OBJECT_MAP)
        msgpack_pack_object(&pk, *args);
    else
        msgpack_pack_map(&pk, 0);
    n->args_msgpack = sb.data; /* the sbuffer's storage, now the node's */
    n->ev.args_msgpack = sb.data;
    n->ev.args_msgpack_size = sb.size;
    char err[128] = "";
    n->args = args && args->type == MSGPACK_OBJECT_MAP
                  ? jobq_json_from_msgpack(args, JOBQ_JSON_MAX_DEPTH, err, sizeof err)
                  : json_object();
    if (n->args)
        n->args_json = json_dumps(n->args, JSON_COMPACT | JSON_ENCODE_ANY);
    if (!n->args || !n->args_json) {
        json_decref(n->args);
        n->args = NULL;
        char why[200];
        snprintf(why, sizeof why, "the arguments cannot be turned into JSON: %s", err);
        n->args_error = strdup(why);
    }
    n->ev.args = n->args;
    n->ev.args_json = n->args_json;
    n->ev.args_error = n->args_error;
    if (add_held(self, &l) < 0) {
        /* Out of memory: the lease cannot be tracked, so it is not
         * delivered either; the daemon will time it out or lose us. */
        n->ev.type = JOBQ_WORKER_EV_ERROR;
        n->ev.code = JOBQ_ERR_INTERNAL;
    }
}

/* cancel and revoke: both name a lease and give a reason. */
static void on_stop(jobq_worker_t *self, const msgpack_object *m, bool revoke)
{
    jobq_lease_t l;
    size_t rlen;
    const char *reason = get_str(wire_map_get(m, "reason"), &rlen);
    if (!get_lease(m, &l)) {
        self->malformed++;
        return;
    }
    held_t *h = jw_find_held(self, &l);
    if (!h)
        return; /* finished, or never ours: nothing to stop */
    if (revoke)
        jw_drop_held(self, h);
    else
        h->state = JOBQ_LEASE_CANCELED;
    event_node_t *n = push_event(self, revoke ? JOBQ_WORKER_EV_REVOKE : JOBQ_WORKER_EV_CANCEL,
                                 reason, rlen);
    if (n)
        n->ev.lease = l;
}

/* The worker endpoint to go to from a NotLeader's leader map: one of its
 * `workers` that is configured, else its first of the current scheme;
 * NULL when none. malloc'ed. */
static char *leader_workers(jobq_worker_t *self, const msgpack_object *leader)
{
    const msgpack_object *w = wire_map_get(leader, "workers");
    if (!w || w->type != MSGPACK_OBJECT_ARRAY)
        return NULL;
    for (uint32_t i = 0; i < w->via.array.size; i++) {
        const msgpack_object *e = &w->via.array.ptr[i];
        for (size_t k = 0; e->type == MSGPACK_OBJECT_STR && k < self->neps; k++)
            if (strlen(self->eps[k]) == e->via.str.size &&
                memcmp(self->eps[k], e->via.str.ptr, e->via.str.size) == 0)
                return strdup(self->eps[k]);
    }
    const char *sep = strstr(self->endpoint, "://");
    size_t sl = sep ? (size_t)(sep - self->endpoint) + 3 : 0;
    for (uint32_t i = 0; sl && i < w->via.array.size; i++) {
        const msgpack_object *e = &w->via.array.ptr[i];
        if (e->type == MSGPACK_OBJECT_STR && e->via.str.size > sl &&
            memcmp(e->via.str.ptr, self->endpoint, sl) == 0)
            return strndup(e->via.str.ptr, e->via.str.size);
    }
    return NULL;
}

/* The hello was answered NotLeader: to the leader's worker endpoint, or
 * (no leader known) to the next configured one a moment later. */
static void follow_leader(jobq_worker_t *self, const msgpack_object *leader, const char *msg,
                          size_t mlen)
{
    self->moved = true;
    char *to = leader && leader->type == MSGPACK_OBJECT_MAP ? leader_workers(self, leader)
                                                            : NULL;
    if (self->sock) {
        zmq_close(self->sock);
        self->sock = NULL;
    }
    self->state = STATE_OFF;
    if (to && self->hops < MAX_HOPS) {
        self->hops++;
        set_endpoint(self, to);
        free(to);
        self->reconnect_at = jw_now_ms();
        return;
    }
    if (to) {
        /* Nodes naming each other: say so, then start over after the
         * back-off (a cluster settles; a worker does not give up). */
        char why[300];
        snprintf(why, sizeof why, "no leader reached after %d hops: %.*s", MAX_HOPS,
                 msg ? (int)(mlen > 200 ? 200 : mlen) : 9, msg ? msg : "no reason");
        push_event(self, JOBQ_WORKER_EV_DISCONNECTED, why, strlen(why));
        self->hops = 0;
        free(to);
    }
    self->cur = (self->cur + 1) % self->neps;
    set_endpoint(self, self->eps[self->cur]);
    int64_t wait = to ? self->backoff_ms : LEADER_WAIT_MS;
    self->reconnect_at = jw_now_ms() + wait;
}

static void on_error(jobq_worker_t *self, const msgpack_object *m)
{
    size_t clen, mlen;
    const char *code = get_str(wire_map_get(m, "code"), &clen);
    const char *msg = get_str(wire_map_get(m, "message"), &mlen);
    jobq_code_t c = code ? jobq_code_from_name(code, clen) : JOBQ_ERR_INTERNAL;
    if (self->state == STATE_HELLO && c == JOBQ_ERR_NOT_LEADER) {
        follow_leader(self, wire_map_get(m, "leader"), msg, mlen);
        return;
    }
    /* PermissionDenied: the key is not a worker's; another hello with it
     * gets the same answer. */
    if (self->state == STATE_HELLO && c != JOBQ_ERR_BAD_ARGUMENT && c != JOBQ_ERR_MALFORMED &&
        c != JOBQ_ERR_VERSION && c != JOBQ_ERR_PERMISSION_DENIED) {
        /* Refused for now (out of memory...): try again after a pause. */
        char why[300];
        snprintf(why, sizeof why, "jobqd refused the hello for now: %.*s",
                 msg ? (int)(mlen > 200 ? 200 : mlen) : 9, msg ? msg : "no reason");
        drop_connection(self, why);
        return;
    }
    if (self->state == STATE_HELLO) {
        /* The only message of this connection so far is the hello, and
         * what is wrong with it will be wrong with the next one. */
        self->fatal = true;
        jw_set_error(self, c, "jobqd at %s refused the hello: %.*s", self->endpoint,
                  msg ? (int)(mlen > 300 ? 300 : mlen) : 7, msg ? msg : "no reason");
        if (self->sock) {
            zmq_close(self->sock);
            self->sock = NULL;
        }
        self->state = STATE_OFF;
        return;
    }
    event_node_t *n = push_event(self, JOBQ_WORKER_EV_ERROR, msg, mlen);
    if (!n)
        return;
    n->ev.code = c;
    n->ev.has_lease = get_lease(m, &n->ev.lease);
}

static void on_message(jobq_worker_t *self, const char *data, size_t size)
{
    msgpack_unpacked upk;
    msgpack_unpacked_init(&upk);
    size_t off = 0;
    int64_t v = 0;
    if (msgpack_unpack_next(&upk, data, size, &off) != MSGPACK_UNPACK_SUCCESS ||
        off != size || upk.data.type != MSGPACK_OBJECT_MAP ||
        !wire_get_int(wire_map_get(&upk.data, "v"), &v) || v != JOBQ_PROTOCOL_VERSION) {
        self->malformed++;
        msgpack_unpacked_destroy(&upk);
        return;
    }
    const msgpack_object *m = &upk.data, *type = wire_map_get(m, "type");
    if (wire_str_eq(type, "welcome"))
        on_welcome(self, m);
    else if (wire_str_eq(type, "assign"))
        on_assign(self, m);
    else if (wire_str_eq(type, "cancel"))
        on_stop(self, m, false);
    else if (wire_str_eq(type, "revoke"))
        on_stop(self, m, true);
    else if (wire_str_eq(type, "error"))
        on_error(self, m);
    else if (wire_str_eq(type, "disconnect")) {
        size_t rlen;
        const char *r = get_str(wire_map_get(m, "reason"), &rlen);
        char why[300];
        snprintf(why, sizeof why, "jobqd said disconnect: %.*s", r ? (int)(rlen > 200 ? 200 : rlen) : 9,
                 r ? r : "no reason");
        drop_connection(self, why);
    } else if (!wire_str_eq(type, "heartbeat"))
        self->malformed++;
    msgpack_unpacked_destroy(&upk);
}

/* Reads every message waiting on the socket. */
static void read_messages(jobq_worker_t *self)
{
    while (self->sock && !self->fatal) {
        zmq_msg_t msg;
        zmq_msg_init(&msg);
        if (zmq_msg_recv(&msg, self->sock, ZMQ_DONTWAIT) < 0) {
            zmq_msg_close(&msg);
            return;
        }
        self->last_heard = jw_now_ms();
        bool more = zmq_msg_more(&msg);
        if (!more)
            on_message(self, zmq_msg_data(&msg), zmq_msg_size(&msg));
        else
            self->malformed++;
        zmq_msg_close(&msg);
        while (more && self->sock) { /* not ours: one frame per message */
            zmq_msg_init(&msg);
            more = zmq_msg_recv(&msg, self->sock, 0) >= 0 && zmq_msg_more(&msg);
            zmq_msg_close(&msg);
        }
    }
}

/* Everything that is due now (see the file comment). */
static void service(jobq_worker_t *self)
{
    if (!self->started || self->fatal)
        return;
    if (self->state == STATE_OFF && jw_now_ms() >= self->reconnect_at)
        open_connection(self);
    read_messages(self);
    if (self->state == STATE_OFF || self->fatal)
        return;
    int64_t now = jw_now_ms();
    if (now - self->last_heard >= self->lease_ms) {
        char why[120];
        snprintf(why, sizeof why, "%s for %.1f s",
                 self->state == STATE_READY ? "jobqd silent" : "no welcome",
                 (now - self->last_heard) / 1000.0);
        drop_connection(self, why);
        if (jw_now_ms() >= self->reconnect_at)
            open_connection(self);
        return;
    }
    if (self->state == STATE_READY && now - self->last_sent >= self->heartbeat_ms)
        send_bare(self, "heartbeat"); /* a full queue: the daemon hears the rest */
}

/* ------------------------------------------------------------------ */
/* Public API */

void jobq_worker_default_endpoint(char *buf, size_t len)
{
    const char *env = getenv("JOBQ_WORKER_ENDPOINT");
    if (env && *env)
        snprintf(buf, len, "%s", env);
    else
        snprintf(buf, len, "ipc://%s/workers.sock", JOBQ_INSTALLED_RUN_DIR);
}

jobq_worker_t *jobq_worker_new(const char *endpoint, const char *name, int capacity)
{
    if ((endpoint && !*endpoint) || capacity < 1 || capacity > JOBQ_WORKER_MAX_CAPACITY ||
        (name && strlen(name) > JOBQ_WORKER_MAX_NAME))
        return NULL;
    jobq_worker_t *self = calloc(1, sizeof *self);
    if (!self)
        return NULL;
    char def[4200];
    if (!endpoint) {
        jobq_worker_default_endpoint(def, sizeof def);
        endpoint = def;
    }
    for (const char *p = endpoint;; p++) {
        size_t len = strcspn(p, ",");
        char **eps = realloc(self->eps, (self->neps + 1) * sizeof *eps);
        if (!eps) {
            jobq_worker_destroy(&self);
            return NULL;
        }
        self->eps = eps;
        self->eps[self->neps] = len ? strndup(p, len) : NULL;
        if (!self->eps[self->neps]) {
            jobq_worker_destroy(&self);
            return NULL;
        }
        self->neps++;
        p += len;
        if (!*p)
            break;
    }
    self->endpoint = strdup(self->eps[0]);
    self->name = name && *name ? jobq_utf8_clean(name, strlen(name), JOBQ_WORKER_MAX_NAME, NULL)
                               : NULL;
    self->opcodes = json_array();
    self->capacity = capacity;
    self->heartbeat_ms = DEFAULT_HEARTBEAT_MS;
    self->lease_ms = DEFAULT_LEASE_MS;
    self->backoff_ms = RECONNECT_MIN_MS;
    self->ctx = zmq_ctx_new();
    if (!self->endpoint || (name && *name && !self->name) || !self->opcodes || !self->ctx) {
        jobq_worker_destroy(&self);
        return NULL;
    }
    /* An endpoint ZeroMQ cannot connect to would only fail later, again
     * and again: try it now (the connection itself is made later). */
    void *probe = zmq_socket(self->ctx, ZMQ_DEALER);
    int linger = 0;
    if (probe)
        zmq_setsockopt(probe, ZMQ_LINGER, &linger, sizeof linger);
    bool ok = probe != NULL;
    for (size_t i = 0; ok && i < self->neps; i++)
        ok = zmq_connect(probe, self->eps[i]) == 0;
    if (probe)
        zmq_close(probe);
    if (!ok) {
        jobq_worker_destroy(&self);
        return NULL;
    }
    return self;
}

void jobq_worker_destroy(jobq_worker_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    jobq_worker_t *self = *self_p;
    if (self->sock) {
        /* Hand back what we hold; give the message a moment to leave. */
        if (self->state != STATE_OFF && send_bare(self, "disconnect") == 0) {
            int linger = DISCONNECT_LINGER_MS;
            zmq_setsockopt(self->sock, ZMQ_LINGER, &linger, sizeof linger);
        }
        zmq_close(self->sock);
    }
    if (self->ctx)
        zmq_ctx_term(self->ctx);
    node_free(self->current);
    while (self->head) {
        event_node_t *n = self->head;
        self->head = n->next;
        node_free(n);
    }
    json_decref(self->opcodes);
    jw_forget_dones(self);
    free(self->held);
    free(self->name);
    free(self->endpoint);
    for (size_t i = 0; i < self->neps; i++)
        free(self->eps[i]);
    free(self->eps);
    free(self);
    *self_p = NULL;
}

int jobq_worker_connect(jobq_worker_t *self)
{
    assert(self);
    if (self->fatal)
        return -1;
    if (self->started) {
        jw_set_ok(self);
        return 0;
    }
    if (json_array_size(self->opcodes) == 0) {
        jw_set_error(self, JOBQ_ERR_BAD_ARGUMENT, "no opcodes declared");
        return -1;
    }
    self->started = true;
    open_connection(self);
    jw_set_ok(self);
    return 0;
}

const char *jobq_worker_endpoint(jobq_worker_t *self)
{
    assert(self);
    return self->endpoint;
}

jobq_code_t jobq_worker_status(jobq_worker_t *self)
{
    assert(self);
    return self->status;
}

const char *jobq_worker_reason(jobq_worker_t *self)
{
    assert(self);
    return self->reason;
}

bool jobq_worker_ready(jobq_worker_t *self)
{
    assert(self);
    return self->state == STATE_READY;
}

void *jobq_worker_socket(jobq_worker_t *self)
{
    assert(self);
    return self->sock;
}

int jobq_worker_timeout_ms(jobq_worker_t *self)
{
    assert(self);
    if (self->fatal)
        return -1;
    if (self->head || !self->started)
        return self->head ? 0 : -1;
    int64_t now = jw_now_ms(), due;
    if (self->state == STATE_OFF) {
        due = self->reconnect_at;
    } else {
        due = self->last_heard + self->lease_ms;
        if (self->state == STATE_READY && self->last_sent + self->heartbeat_ms < due)
            due = self->last_sent + self->heartbeat_ms;
    }
    int64_t left = due - now;
    return left <= 0 ? 0 : left > 3600000 ? 3600000 : (int)left;
}

int jobq_worker_tick(jobq_worker_t *self)
{
    assert(self);
    service(self);
    return self->fatal ? -1 : 0;
}

int jobq_worker_poll(jobq_worker_t *self, int timeout_ms, jobq_worker_event_t *event)
{
    assert(self && event);
    node_free(self->current);
    self->current = NULL;
    if (!self->started && jobq_worker_connect(self) < 0)
        return -1;
    int64_t deadline = timeout_ms < 0 ? -1 : jw_now_ms() + timeout_ms;
    for (;;) {
        service(self);
        if (self->fatal)
            return -1; /* the status says why (set when it happened) */
        if (self->head) {
            event_node_t *n = self->head;
            self->head = n->next;
            if (!self->head)
                self->tail = NULL;
            n->next = NULL;
            self->current = n;
            *event = n->ev;
            jw_set_ok(self);
            return 1;
        }
        long wait = jobq_worker_timeout_ms(self);
        if (deadline >= 0) {
            long left = (long)(deadline - jw_now_ms());
            if (left <= 0)
                return 0;
            if (wait < 0 || wait > left)
                wait = left;
        }
        zmq_pollitem_t item = {.socket = self->sock, .events = ZMQ_POLLIN};
        if (zmq_poll(&item, self->sock ? 1 : 0, wait) < 0 && errno == EINTR)
            return 0;
    }
}

int jobq_worker_run(jobq_worker_t *self, jobq_worker_fn *fn, void *arg)
{
    assert(self && fn);
    for (;;) {
        jobq_worker_event_t ev;
        int rc = jobq_worker_poll(self, -1, &ev);
        if (rc <= 0)
            return rc;
        rc = fn(self, &ev, arg);
        if (rc != 0)
            return rc;
    }
}

jobq_lease_state_t jobq_worker_lease_state(jobq_worker_t *self, const jobq_lease_t *lease)
{
    assert(self && lease);
    held_t *h = jw_find_held(self, lease);
    return h ? h->state : JOBQ_LEASE_NONE;
}

size_t jobq_worker_leases(jobq_worker_t *self)
{
    assert(self);
    return self->nheld;
}

int jobq_worker_set_keys(jobq_worker_t *self, const char *key_file, const char *server_key)
{
    if (!self)
        return -1;
    char err[512];
    if (self->started) {
        jw_set_error(self, JOBQ_ERR_BAD_ARGUMENT, "keys are set before the worker connects");
        return -1;
    }
    if (jobq_curve_load(&self->curve, key_file, server_key, err, sizeof err) < 0) {
        jw_set_error(self, JOBQ_ERR_BAD_ARGUMENT, "%s", err);
        return -1;
    }
    jw_set_ok(self);
    return 0;
}
