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
 * Events are decoded when they arrive, not when they are delivered: a
 * cancel read by jobq_worker_tick inside a callback must mark its lease
 * at once. They wait in a FIFO; the one delivered last is kept (its
 * strings are what the caller's event points to) until the next poll.
 */
#include "jobq.h"

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

#define REASON_MAX 512
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

#ifndef JOBQ_INSTALLED_RUN_DIR
#define JOBQ_INSTALLED_RUN_DIR "/run/jobq"
#endif

typedef enum { STATE_OFF, STATE_HELLO, STATE_READY } conn_t;

/* A lease held, with what the daemon said of it since. */
typedef struct {
    jobq_lease_t lease;
    jobq_lease_state_t state;
} held_t;

/* A queued event with the storage its pointers point into. */
typedef struct event_node {
    struct event_node *next;
    jobq_worker_event_t ev;
    char *opcode;
    char *reason;
    char *args_json;
    char *args_error;
    json_t *args;
    void *args_msgpack;
} event_node_t;

struct _jobq_worker_t {
    void *ctx;                 /* ZeroMQ context owned by this worker */
    void *sock;                /* DEALER of the current connection, or NULL */
    char *endpoint;            /* where it connects */
    char *name;                /* for people; NULL: none sent */
    int capacity;              /* opcodes run at once */
    json_t *opcodes;           /* declarations for hello: array of str or object */
    bool started;              /* connect was called: keep a connection open */
    bool fatal;                /* the hello was refused: nothing more happens */
    conn_t state;              /* see the file comment */
    int64_t heartbeat_ms;      /* interval: the welcome's, else the default */
    int64_t lease_ms;          /* silence that ends a connection */
    int64_t last_sent;         /* when the last message went out (ms) */
    int64_t last_heard;        /* when the last message came in, or the hello left */
    int64_t reconnect_at;      /* STATE_OFF after start: when to connect again */
    int64_t backoff_ms;        /* the back-off the next failed connection gets */
    held_t *held;              /* leases held */
    size_t nheld, held_cap;
    event_node_t *head, *tail; /* events not delivered yet */
    event_node_t *current;     /* the event delivered last (its storage) */
    uint64_t malformed;        /* messages from the daemon that made no sense */
    jobq_code_t status;        /* code of the last failure */
    char reason[REASON_MAX];   /* its sentence */
};

static void set_error(jobq_worker_t *self, jobq_code_t code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void set_error(jobq_worker_t *self, jobq_code_t code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    self->status = code;
    vsnprintf(self->reason, sizeof self->reason, fmt, ap);
    va_end(ap);
}

static void set_ok(jobq_worker_t *self)
{
    self->status = JOBQ_ERR_NONE;
    self->reason[0] = '\0';
}

static int64_t now_ms(void)
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
    n->reason = jobq_utf8_clean(reason ? reason : "", reason ? reason_len : 0, REASON_MAX,
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

static held_t *find_held(jobq_worker_t *self, const jobq_lease_t *l)
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

static void drop_held(jobq_worker_t *self, held_t *h)
{
    *h = self->held[--self->nheld];
}

/* ------------------------------------------------------------------ */
/* Sending */

/* Starts a worker message: a map of n + 2 entries with v and type. */
static void begin_message(msgpack_packer *pk, const char *type, size_t n)
{
    msgpack_pack_map(pk, n + 2);
    wire_pack_cstr(pk, "v");
    msgpack_pack_int(pk, JOBQ_PROTOCOL_VERSION);
    wire_pack_cstr(pk, "type");
    wire_pack_cstr(pk, type);
}

static void pack_lease(msgpack_packer *pk, const jobq_lease_t *l)
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
static int send_frame(jobq_worker_t *self, const msgpack_sbuffer *sb, int timeout_ms)
{
    if (!self->sock) {
        set_error(self, JOBQ_ERR_TRANSPORT, "not connected to jobqd at %s", self->endpoint);
        return -1;
    }
    int64_t deadline = timeout_ms < 0 ? -1 : now_ms() + timeout_ms;
    for (;;) {
        if (zmq_send(self->sock, sb->data, sb->size, ZMQ_DONTWAIT) >= 0) {
            self->last_sent = now_ms();
            return 0;
        }
        if (errno != EAGAIN && errno != EINTR) {
            set_error(self, JOBQ_ERR_TRANSPORT, "cannot send to jobqd at %s: %s",
                      self->endpoint, zmq_strerror(errno));
            return -1;
        }
        if (timeout_ms == 0) {
            set_error(self, JOBQ_ERR_BUSY,
                      "the send queue to jobqd at %s is full (the daemon is slower than "
                      "this worker, or gone)",
                      self->endpoint);
            return -1;
        }
        long left = -1;
        if (deadline >= 0) {
            left = (long)(deadline - now_ms());
            if (left <= 0) {
                set_error(self, JOBQ_ERR_TIMEOUT, "no room to send to jobqd at %s within %g s",
                          self->endpoint, timeout_ms / 1000.0);
                return -1;
            }
        }
        zmq_pollitem_t item = {.socket = self->sock, .events = ZMQ_POLLOUT};
        if (zmq_poll(&item, 1, left) < 0 && errno != EINTR) {
            set_error(self, JOBQ_ERR_TRANSPORT, "cannot wait to send: %s", zmq_strerror(errno));
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
    begin_message(&pk, type, 0);
    int rc = send_frame(self, &sb, 0);
    msgpack_sbuffer_destroy(&sb);
    return rc;
}

static int send_hello(jobq_worker_t *self)
{
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    begin_message(&pk, "hello", self->name ? 3 : 2);
    if (self->name) {
        wire_pack_cstr(&pk, "name");
        wire_pack_cstr(&pk, self->name);
    }
    wire_pack_cstr(&pk, "capacity");
    msgpack_pack_int(&pk, self->capacity);
    wire_pack_cstr(&pk, "opcodes");
    char err[128];
    int rc = jobq_json_to_msgpack(&pk, self->opcodes, JOBQ_JSON_MAX_DEPTH, err, sizeof err);
    if (rc == 0)
        rc = send_frame(self, &sb, 0);
    else
        set_error(self, JOBQ_ERR_BAD_ARGUMENT, "cannot encode the hello: %s", err);
    msgpack_sbuffer_destroy(&sb);
    return rc;
}

/* ------------------------------------------------------------------ */
/* Connections */

/* Opens a new connection and says hello. On failure (ZeroMQ cannot make
 * a socket) the next try is scheduled. */
static void open_connection(jobq_worker_t *self)
{
    int64_t now = now_ms();
    self->sock = zmq_socket(self->ctx, ZMQ_DEALER);
    if (self->sock) {
        int linger = 0;
        int64_t maxsize = MAX_MESSAGE_BYTES;
        zmq_setsockopt(self->sock, ZMQ_LINGER, &linger, sizeof linger);
        zmq_setsockopt(self->sock, ZMQ_MAXMSGSIZE, &maxsize, sizeof maxsize);
        if (zmq_connect(self->sock, self->endpoint) == 0) {
            self->state = STATE_HELLO;
            self->last_heard = now; /* the welcome has a lease time to come */
            self->heartbeat_ms = DEFAULT_HEARTBEAT_MS;
            self->lease_ms = DEFAULT_LEASE_MS;
            if (send_hello(self) == 0)
                return;
        }
        zmq_close(self->sock);
        self->sock = NULL;
    }
    self->state = STATE_OFF;
    self->reconnect_at = now + self->backoff_ms;
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
    char reason[REASON_MAX];
    snprintf(reason, sizeof reason, "connection to jobqd given up: %s", why);
    for (size_t i = 0; i < self->nheld; i++) {
        event_node_t *n = push_event(self, JOBQ_WORKER_EV_REVOKE, reason, strlen(reason));
        if (n)
            n->ev.lease = self->held[i].lease;
    }
    self->nheld = 0;
    if (welcomed) {
        self->backoff_ms = RECONNECT_MIN_MS;
        self->reconnect_at = now_ms();
    } else {
        self->reconnect_at = now_ms() + self->backoff_ms;
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
    /* Sane bounds whatever the daemon says: a heartbeat at least every
     * 10 ms, a lease of at least two heartbeats. */
    self->heartbeat_ms = hb * 1000 < 10 ? 10 : hb * 1000 > 3600e3 ? 3600000 : (int64_t)(hb * 1000);
    self->lease_ms = lease * 1000 > 86400e3 ? 86400000 : (int64_t)(lease * 1000);
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
        find_held(self, &l)) {
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
    held_t *h = find_held(self, &l);
    if (!h)
        return; /* finished, or never ours: nothing to stop */
    if (revoke)
        drop_held(self, h);
    else
        h->state = JOBQ_LEASE_CANCELED;
    event_node_t *n = push_event(self, revoke ? JOBQ_WORKER_EV_REVOKE : JOBQ_WORKER_EV_CANCEL,
                                 reason, rlen);
    if (n)
        n->ev.lease = l;
}

static void on_error(jobq_worker_t *self, const msgpack_object *m)
{
    size_t clen, mlen;
    const char *code = get_str(wire_map_get(m, "code"), &clen);
    const char *msg = get_str(wire_map_get(m, "message"), &mlen);
    jobq_code_t c = code ? jobq_code_from_name(code, clen) : JOBQ_ERR_INTERNAL;
    if (self->state == STATE_HELLO && c != JOBQ_ERR_BAD_ARGUMENT && c != JOBQ_ERR_MALFORMED &&
        c != JOBQ_ERR_VERSION) {
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
        set_error(self, c, "jobqd at %s refused the hello: %.*s", self->endpoint,
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
        self->last_heard = now_ms();
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
    if (self->state == STATE_OFF && now_ms() >= self->reconnect_at)
        open_connection(self);
    read_messages(self);
    if (self->state == STATE_OFF || self->fatal)
        return;
    int64_t now = now_ms();
    if (now - self->last_heard >= self->lease_ms) {
        char why[120];
        snprintf(why, sizeof why, "%s for %.1f s",
                 self->state == STATE_READY ? "jobqd silent" : "no welcome",
                 (now - self->last_heard) / 1000.0);
        drop_connection(self, why);
        if (now_ms() >= self->reconnect_at)
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
    self->endpoint = strdup(endpoint);
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
    bool ok = probe && zmq_connect(probe, self->endpoint) == 0;
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
    free(self->held);
    free(self->name);
    free(self->endpoint);
    free(self);
    *self_p = NULL;
}

static bool valid_opcode_name(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > JOBQ_MAX_OP_NAME)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-'))
            return false;
    }
    return true;
}

/* Checks one declared argument; returns its copy for the hello, or NULL
 * with the status set. */
static json_t *check_arg(jobq_worker_t *self, const char *op, size_t i, const json_t *a)
{
    if (!json_is_object(a) || !json_is_string(json_object_get(a, "name")) ||
        json_string_length(json_object_get(a, "name")) == 0) {
        set_error(self, JOBQ_ERR_BAD_ARGUMENT,
                  "opcode %s: argument %zu is not an object with a non-empty \"name\"", op, i + 1);
        return NULL;
    }
    const char *key;
    json_t *val;
    json_object_foreach((json_t *)a, key, val) {
        bool ok = strcmp(key, "name") == 0 ||
                  ((strcmp(key, "type") == 0 || strcmp(key, "description") == 0) &&
                   json_is_string(val)) ||
                  (strcmp(key, "required") == 0 && json_is_boolean(val));
        if (!ok) {
            set_error(self, JOBQ_ERR_BAD_ARGUMENT,
                      "opcode %s, argument %s: %s \"%s\" (an argument has \"name\", \"type\", "
                      "\"required\" (a boolean) and \"description\")",
                      op, json_string_value(json_object_get(a, "name")),
                      strcmp(key, "type") == 0 || strcmp(key, "description") == 0 ||
                              strcmp(key, "required") == 0
                          ? "wrong type of"
                          : "unknown key",
                      key);
            return NULL;
        }
    }
    return json_deep_copy(a);
}

int jobq_worker_add_opcode(jobq_worker_t *self, const char *name, const json_t *decl)
{
    assert(self);
    if (!name || !valid_opcode_name(name)) {
        set_error(self, JOBQ_ERR_BAD_ARGUMENT,
                  "opcode name \"%.80s\" is not 1 to %d letters, digits and \"._-\"",
                  name ? name : "", JOBQ_MAX_OP_NAME);
        return -1;
    }
    if (self->started) {
        set_error(self, JOBQ_ERR_BAD_ARGUMENT, "opcode %s: declared after connecting", name);
        return -1;
    }
    size_t n = json_array_size(self->opcodes);
    if (n >= JOBQ_WORKER_MAX_OPCODES) {
        set_error(self, JOBQ_ERR_BAD_ARGUMENT, "opcode %s: more than %d opcodes", name,
                  JOBQ_WORKER_MAX_OPCODES);
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        json_t *d = json_array_get(self->opcodes, i);
        const char *dn = json_is_string(d) ? json_string_value(d)
                                           : json_string_value(json_object_get(d, "name"));
        if (strcmp(dn, name) == 0) {
            set_error(self, JOBQ_ERR_BAD_ARGUMENT, "opcode %s declared twice", name);
            return -1;
        }
    }
    if (decl && !json_is_object(decl)) {
        set_error(self, JOBQ_ERR_BAD_ARGUMENT, "opcode %s: the declaration is not an object",
                  name);
        return -1;
    }
    json_t *out = json_pack("{s:s}", "name", name);
    if (!out) {
        set_error(self, JOBQ_ERR_INTERNAL, "out of memory");
        return -1;
    }
    const char *key;
    json_t *val;
    json_object_foreach((json_t *)decl, key, val) {
        json_t *copy = NULL;
        if (strcmp(key, "description") == 0 && json_is_string(val)) {
            copy = json_copy(val);
        } else if (strcmp(key, "timeout") == 0 && json_is_number(val) &&
                   json_number_value(val) > 0 && isfinite(json_number_value(val))) {
            copy = json_copy(val);
        } else if (strcmp(key, "args") == 0 && json_is_array(val)) {
            copy = json_array();
            for (size_t i = 0; copy && i < json_array_size(val); i++) {
                json_t *a = check_arg(self, name, i, json_array_get(val, i));
                if (!a) {
                    json_decref(copy);
                    json_decref(out);
                    return -1;
                }
                json_array_append_new(copy, a);
            }
        } else {
            bool known = strcmp(key, "description") == 0 || strcmp(key, "timeout") == 0 ||
                         strcmp(key, "args") == 0;
            set_error(self, JOBQ_ERR_BAD_ARGUMENT,
                      known ? "opcode %s: \"%s\" has the wrong type (\"description\": string, "
                              "\"args\": list, \"timeout\": seconds > 0)"
                            : "opcode %s: unknown key \"%s\" (a declaration has "
                              "\"description\", \"args\" and \"timeout\")",
                      name, key);
            json_decref(out);
            return -1;
        }
        if (!copy || json_object_set_new(out, key, copy) < 0) {
            json_decref(out);
            set_error(self, JOBQ_ERR_INTERNAL, "out of memory");
            return -1;
        }
    }
    if (json_array_append_new(self->opcodes, out) < 0) {
        set_error(self, JOBQ_ERR_INTERNAL, "out of memory");
        return -1;
    }
    set_ok(self);
    return 0;
}

int jobq_worker_connect(jobq_worker_t *self)
{
    assert(self);
    if (self->fatal)
        return -1;
    if (self->started) {
        set_ok(self);
        return 0;
    }
    if (json_array_size(self->opcodes) == 0) {
        set_error(self, JOBQ_ERR_BAD_ARGUMENT, "no opcodes declared");
        return -1;
    }
    self->started = true;
    open_connection(self);
    set_ok(self);
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
    int64_t now = now_ms(), due;
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
    int64_t deadline = timeout_ms < 0 ? -1 : now_ms() + timeout_ms;
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
            set_ok(self);
            return 1;
        }
        long wait = jobq_worker_timeout_ms(self);
        if (deadline >= 0) {
            long left = (long)(deadline - now_ms());
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
    held_t *h = find_held(self, lease);
    return h ? h->state : JOBQ_LEASE_NONE;
}

size_t jobq_worker_leases(jobq_worker_t *self)
{
    assert(self);
    return self->nheld;
}

/* The lease must be held on a welcomed connection; -1 with the status set
 * otherwise. */
static held_t *held_or_fail(jobq_worker_t *self, const jobq_lease_t *lease, const char *what)
{
    held_t *h = lease ? find_held(self, lease) : NULL;
    if (!h) {
        set_error(self, JOBQ_ERR_BAD_ARGUMENT,
                  "%s: lease job %llu op %llu attempt %llu is not held (finished, revoked, or "
                  "never assigned)",
                  what, lease ? (unsigned long long)lease->job : 0ULL,
                  lease ? (unsigned long long)lease->op : 0ULL,
                  lease ? (unsigned long long)lease->attempt : 0ULL);
        return NULL;
    }
    return h;
}

int jobq_worker_feedback(jobq_worker_t *self, const jobq_lease_t *lease, const char *type,
                         const char *message, int timeout_ms)
{
    jobq_feedback_entry_t e = {type, message ? message : "", message ? strlen(message) : 0};
    return jobq_worker_feedback_entries(self, lease, &e, 1, timeout_ms);
}

int jobq_worker_feedback_entries(jobq_worker_t *self, const jobq_lease_t *lease,
                                 const jobq_feedback_entry_t *entries, size_t n,
                                 int timeout_ms)
{
    assert(self);
    if (!held_or_fail(self, lease, "feedback"))
        return -1;
    if (n == 0 || n > JOBQ_WORKER_MAX_ENTRIES || !entries) {
        set_error(self, JOBQ_ERR_BAD_ARGUMENT, "feedback: 1 to %d entries, not %zu",
                  JOBQ_WORKER_MAX_ENTRIES, n);
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        const char *t = entries[i].type;
        size_t tl = t ? strlen(t) : 0;
        if (tl == 0 || tl > JOBQ_WORKER_MAX_ENTRY_TYPE) {
            set_error(self, JOBQ_ERR_BAD_ARGUMENT, "feedback: an entry's type has 1 to %d bytes",
                      JOBQ_WORKER_MAX_ENTRY_TYPE);
            return -1;
        }
    }
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    begin_message(&pk, "feedback", 4);
    pack_lease(&pk, lease);
    wire_pack_cstr(&pk, "entries");
    msgpack_pack_array(&pk, n);
    int rc = 0;
    for (size_t i = 0; i < n && rc == 0; i++) {
        size_t tl, ml;
        char *t = jobq_utf8_clean(entries[i].type, strlen(entries[i].type),
                                  JOBQ_WORKER_MAX_ENTRY_TYPE, &tl);
        char *m = jobq_utf8_clean(entries[i].message ? entries[i].message : "",
                                  entries[i].message ? entries[i].len : 0, JOBQ_MAX_LOG_MESSAGE,
                                  &ml);
        if (t && m) {
            msgpack_pack_array(&pk, 2);
            wire_pack_strn(&pk, t, tl);
            wire_pack_strn(&pk, m, ml);
        } else {
            set_error(self, JOBQ_ERR_INTERNAL, "out of memory");
            rc = -1;
        }
        free(t);
        free(m);
    }
    if (rc == 0)
        rc = send_frame(self, &sb, timeout_ms);
    msgpack_sbuffer_destroy(&sb);
    if (rc == 0)
        set_ok(self);
    return rc;
}

/* Sends done for a held lease with the body packed by the caller, and
 * lets the lease go once sent. */
static int send_done(jobq_worker_t *self, const jobq_lease_t *lease, msgpack_sbuffer *sb,
                     int timeout_ms)
{
    int rc = send_frame(self, sb, timeout_ms);
    if (rc == 0) {
        held_t *h = find_held(self, lease);
        if (h)
            drop_held(self, h);
        set_ok(self);
    }
    return rc;
}

int jobq_worker_done(jobq_worker_t *self, const jobq_lease_t *lease, const json_t *result,
                     int timeout_ms)
{
    assert(self);
    if (!held_or_fail(self, lease, "done"))
        return -1;
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    begin_message(&pk, "done", 5);
    pack_lease(&pk, lease);
    wire_pack_cstr(&pk, "ok");
    msgpack_pack_true(&pk);
    wire_pack_cstr(&pk, "result");
    char err[128];
    int rc = 0;
    if (!result)
        msgpack_pack_nil(&pk);
    else if (jobq_json_to_msgpack(&pk, result, JOBQ_JSON_MAX_DEPTH, err, sizeof err) < 0) {
        set_error(self, JOBQ_ERR_BAD_ARGUMENT, "done: the result cannot be sent: %s", err);
        rc = -1;
    }
    if (rc == 0)
        rc = send_done(self, lease, &sb, timeout_ms);
    msgpack_sbuffer_destroy(&sb);
    return rc;
}

int jobq_worker_fail(jobq_worker_t *self, const jobq_lease_t *lease, const char *message,
                     int timeout_ms)
{
    assert(self);
    if (!held_or_fail(self, lease, "fail"))
        return -1;
    size_t ml;
    char *m = jobq_utf8_clean(message ? message : "", message ? strlen(message) : 0,
                              JOBQ_MAX_LOG_MESSAGE, &ml);
    if (!m) {
        set_error(self, JOBQ_ERR_INTERNAL, "out of memory");
        return -1;
    }
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    begin_message(&pk, "done", 5);
    pack_lease(&pk, lease);
    wire_pack_cstr(&pk, "ok");
    msgpack_pack_false(&pk);
    wire_pack_cstr(&pk, "error");
    wire_pack_strn(&pk, m, ml);
    free(m);
    int rc = send_done(self, lease, &sb, timeout_ms);
    msgpack_sbuffer_destroy(&sb);
    return rc;
}
