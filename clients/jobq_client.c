/* jobq_client.c: libjobq, the C client of the jobq daemon (see jobq.h).
 *
 * Design: one DEALER socket per client object, in a ZeroMQ context of its
 * own so that objects are fully independent (and destroying one never
 * blocks: linger is 0). All traffic goes through jobq_call(), the only
 * place where requests are encoded, sent, and matched with their replies;
 * the per-method functions below it only build arguments and check the
 * shape of the result.
 *
 * Matching: request ids come from a per-client counter, so an id is never
 * reused on this connection. A call that times out leaves its reply in
 * flight; the next call reads it, sees an id that is not its own and drops
 * it. Keepalive replies ({"keepalive": true}) carry our id but are not the
 * answer: they are skipped and do not extend the caller's deadline, except
 * for wait_for_job_change, where the daemon parks the request on purpose
 * and a keepalive proves it alive (call_impl's keepalive_grace_ms).
 * Frames that are not a single msgpack map with a readable id cannot be
 * matched to anything and are dropped as well.
 *
 * Failing fast: ZeroMQ connects in the background and retries forever, so
 * a call to a stopped daemon would only time out. Each client therefore
 * watches its DEALER with a socket monitor (a PAIR socket in the client's
 * own context) and keeps the connection state it reports: up after
 * CONNECTED, down after DISCONNECTED or a failed connect attempt
 * (CONNECT_RETRIED that does not merely follow a DISCONNECTED: that one
 * only schedules the next attempt). A call starts only on an up
 * connection; when it is down (or not yet known: just created) the call
 * waits for the outcome of the next attempt, which ZeroMQ makes every
 * 100-200 ms (ZMQ_RECONNECT_IVL plus jitter): connected, or refused ->
 * JOBQ_ERR_NOT_RUNNING. For ipc:// a missing socket file and a file
 * nobody listens on (ECONNREFUSED: left behind by a crash) both fail the
 * attempt at once. For tcp:// a refused connect does; a connect nobody
 * answers is given up after JOBQ_CONNECT_TIMEOUT_MS (ZMQ_CONNECT_TIMEOUT).
 * While a call waits for its reply it watches the monitor too: when the
 * connection drops, the request is lost; a call that may safely be
 * repeated (idempotent(): read-only methods, submissions with a client
 * token) is sent once more after the reconnect, any other fails at once,
 * saying that it may or may not have been carried out.
 *
 * Several endpoints (a cluster, docs/cli.md "Several endpoints"): the
 * client is connected to one of them at a time (self->endpoint). A
 * NotLeader answer did nothing, so the request goes to the leader it names
 * (follow_leader), or, while no leader is known, to the configured
 * endpoints in turn after LEADER_WAIT_MS; hops are counted so that nodes
 * naming each other cannot keep a request going round. A failure to reach
 * an endpoint (NotRunning, Timeout, Transport) moves to the next
 * configured one only when sending the request again is safe (nothing was
 * sent, or idempotent()); a single endpoint never moves, so it behaves as
 * it always did.
 */
#include "jobq.h"

#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <time.h>
#include <zmq.h>

#include "jobq_internal.h"
#include "jobq_json.h"

#define REASON_MAX 512
#define MONITOR_ENDPOINT "inproc://jobq-client-monitor" /* per context */
/* Reconnect attempts come every 100-200 ms (ZMQ_RECONNECT_IVL and its
 * jitter): when the monitor says nothing for this long while the
 * connection is down, its events were lost (see ensure_up). */
#define CONN_QUIET_MS 600
#define CONN_REBIND_GRACE_MS 250 /* see ensure_up */
#define MAX_HOPS 10          /* NotLeader answers followed per request */
#define MAX_LEADER_WAITS 50  /* "no leader yet" waits per request (~10 s) */
#define LEADER_WAIT_MS 200   /* pause before asking again during an election */

/* What the monitor last said about the connection. */
typedef enum { CONN_UNKNOWN, CONN_UP, CONN_DOWN } conn_state_t;

struct _jobq_client_t {
    void *ctx;                  /* ZeroMQ context owned by this client */
    void *sock;                 /* DEALER socket connected to endpoint */
    char *endpoint;             /* endpoint connected to now (malloc'ed) */
    char **eps;                 /* the configured endpoints (the list given) */
    size_t neps;
    size_t cur;                 /* eps[cur]: the configured one last used */
    uint64_t moves;             /* times the client changed endpoint */
    bool via_leader;            /* the current endpoint is a NotLeader's leader's */
    bool cluster;               /* a ping answered with "cluster" */
    jobq_curve_t curve;         /* CURVE keys (jobq_client_set_keys) */
    unsigned nsockets;          /* sockets opened: names their monitors */
    int refused;                /* the last handshake failed: 0, or the
                                   ZMQ_EVENT_HANDSHAKE_FAILED_* event */
    char *ipc_path;             /* filesystem path of an ipc:// endpoint, else NULL */
    void *mon;                  /* PAIR socket receiving sock's monitor events */
    conn_state_t conn;          /* connection state (see the file comment) */
    bool after_disconnect;      /* the next CONNECT_RETRIED only schedules a retry */
    uint64_t failed_attempts;   /* connect attempts that failed, ever */
    uint64_t drops;             /* connections lost, ever */
    int64_t attempt_start;      /* when the TCP connect in progress began (ms) */
    bool attempt_timed_out;     /* the last failed attempt ran out of time */
    uint64_t checked_failures;  /* failed_attempts at the last check_connection */
    uint64_t next_id;           /* request id of the next call */
    json_t *leader;             /* `leader` of the last NotLeader answer */
    jobq_code_t status;         /* code of the last failure, NONE after success */
    char reason[REASON_MAX];    /* human text of the last failure */
};

static void set_error(jobq_client_t *self, jobq_code_t code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void set_error(jobq_client_t *self, jobq_code_t code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    self->status = code;
    vsnprintf(self->reason, sizeof self->reason, fmt, ap);
    va_end(ap);
}

void jobq_client_fail(jobq_client_t *self, jobq_code_t code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    self->status = code;
    vsnprintf(self->reason, sizeof self->reason, fmt, ap);
    va_end(ap);
}

static void set_ok(jobq_client_t *self)
{
    self->status = JOBQ_ERR_NONE;
    self->reason[0] = '\0';
}

/* The DEALER and its monitor, connected (with the CURVE keys, if any). */
static int open_socket(jobq_client_t *self)
{
    self->sock = zmq_socket(self->ctx, ZMQ_DEALER);
    if (!self->sock)
        return -1;
    int linger = 0, connect_timeout = JOBQ_CONNECT_TIMEOUT_MS;
    zmq_setsockopt(self->sock, ZMQ_LINGER, &linger, sizeof linger);
    zmq_setsockopt(self->sock, ZMQ_CONNECT_TIMEOUT, &connect_timeout, sizeof connect_timeout);
    /* The monitor before the connect, so that the first attempt is seen. */
    /* A monitor endpoint of its own per socket: set_keys makes another. */
    char mon_ep[64];
    snprintf(mon_ep, sizeof mon_ep, "%s-%u", MONITOR_ENDPOINT, self->nsockets++);
    if (zmq_socket_monitor(self->sock, mon_ep,
                           ZMQ_EVENT_CONNECTED | ZMQ_EVENT_CONNECT_DELAYED |
                               ZMQ_EVENT_CONNECT_RETRIED | ZMQ_EVENT_DISCONNECTED |
                               ZMQ_EVENT_HANDSHAKE_SUCCEEDED |
                               ZMQ_EVENT_HANDSHAKE_FAILED_AUTH |
                               ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL |
                               ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL) != 0)
        return -1;
    self->mon = zmq_socket(self->ctx, ZMQ_PAIR);
    if (!self->mon)
        return -1;
    zmq_setsockopt(self->mon, ZMQ_LINGER, &linger, sizeof linger);
    if (zmq_connect(self->mon, mon_ep) != 0)
        return -1;
    if (jobq_curve_apply(&self->curve, self->sock, self->endpoint) < 0 ||
        zmq_connect(self->sock, self->endpoint) != 0)
        return -1;
    return 0;
}

/* Makes endpoint the current one (self->endpoint, self->ipc_path). */
static int set_endpoint(jobq_client_t *self, const char *endpoint)
{
    char *ep = strdup(endpoint), *path = NULL;
    if (!ep)
        return -1;
    /* An ipc path that does not exist (and is not Linux's abstract
     * namespace, "@name") means no daemon; we check at each call. */
    if (strncmp(endpoint, "ipc://", 6) == 0 && endpoint[6] != '@') {
        path = strdup(endpoint + 6);
        if (!path) {
            free(ep);
            return -1;
        }
    }
    free(self->endpoint);
    free(self->ipc_path);
    self->endpoint = ep;
    self->ipc_path = path;
    return 0;
}

/* Splits "ep1,ep2,..." into self->eps: -1 when an item is empty or is not
 * SCHEME://ADDRESS. */
static int parse_endpoints(jobq_client_t *self, const char *list)
{
    size_t n = 1;
    for (const char *p = list; *p; p++)
        n += *p == ',';
    self->eps = calloc(n, sizeof *self->eps);
    if (!self->eps)
        return -1;
    const char *p = list;
    for (size_t i = 0; i < n; i++) {
        size_t len = strcspn(p, ",");
        if (len == 0 || (n > 1 && !memmem(p, len, "://", 3)))
            return -1;
        self->eps[i] = strndup(p, len);
        if (!self->eps[i])
            return -1;
        self->neps++;
        p += len + (p[len] == ',');
    }
    return 0;
}

jobq_client_t *jobq_client_new(const char *endpoint)
{
    if (!endpoint || !*endpoint)
        return NULL;
    jobq_client_t *self = calloc(1, sizeof *self);
    if (!self)
        return NULL;
    self->next_id = 1;
    if (parse_endpoints(self, endpoint) < 0 || set_endpoint(self, self->eps[0]) < 0)
        goto fail;
    self->ctx = zmq_ctx_new();
    if (!self->ctx)
        goto fail;
    /* The others of a list are connected to later: one ZeroMQ cannot
     * connect to would fail only then, so try them now. */
    for (size_t i = 1; i < self->neps; i++) {
        void *probe = zmq_socket(self->ctx, ZMQ_DEALER);
        int linger = 0;
        if (probe)
            zmq_setsockopt(probe, ZMQ_LINGER, &linger, sizeof linger);
        bool ok = probe && zmq_connect(probe, self->eps[i]) == 0;
        if (probe)
            zmq_close(probe);
        if (!ok)
            goto fail;
    }
    if (open_socket(self) < 0)
        goto fail;
    return self;
fail:
    jobq_client_destroy(&self);
    return NULL;
}

void jobq_client_destroy(jobq_client_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    jobq_client_t *self = *self_p;
    if (self->sock) {
        zmq_socket_monitor(self->sock, NULL, 0);
        zmq_close(self->sock);
    }
    if (self->mon)
        zmq_close(self->mon);
    if (self->ctx)
        zmq_ctx_term(self->ctx);
    free(self->ipc_path);
    free(self->endpoint);
    for (size_t i = 0; i < self->neps; i++)
        free(self->eps[i]);
    free(self->eps);
    json_decref(self->leader);
    free(self);
    *self_p = NULL;
}

const char *jobq_client_endpoint(jobq_client_t *self)
{
    assert(self);
    return self->endpoint;
}

jobq_code_t jobq_client_status(jobq_client_t *self)
{
    assert(self);
    return self->status;
}

const char *jobq_client_reason(jobq_client_t *self)
{
    assert(self);
    return self->reason;
}

/* Monotonic clock in milliseconds. */
static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Milliseconds left before deadline (-1: no deadline), for zmq_poll. */
static long remaining_ms(int64_t deadline)
{
    if (deadline < 0)
        return -1;
    int64_t left = deadline - now_ms();
    return left > 0 ? (long)left : 0;
}

/* Reads every pending monitor event and updates the connection state.
 * Returns the number of events read. */
static int read_monitor(jobq_client_t *self)
{
    for (int n = 0;; n++) {
        zmq_msg_t msg;
        zmq_msg_init(&msg);
        if (zmq_msg_recv(&msg, self->mon, ZMQ_DONTWAIT) < 0) {
            zmq_msg_close(&msg);
            return n;
        }
        uint16_t event = 0;
        if (zmq_msg_size(&msg) >= sizeof event)
            memcpy(&event, zmq_msg_data(&msg), sizeof event);
        bool more = zmq_msg_more(&msg);
        zmq_msg_close(&msg);
        while (more) { /* the second frame: the endpoint */
            zmq_msg_init(&msg);
            int rc = zmq_msg_recv(&msg, self->mon, ZMQ_DONTWAIT);
            more = rc >= 0 && zmq_msg_more(&msg);
            zmq_msg_close(&msg);
        }
        switch (event) {
        case ZMQ_EVENT_CONNECTED:
            self->conn = CONN_UP;
            self->after_disconnect = false;
            self->attempt_start = 0;
            break;
        case ZMQ_EVENT_CONNECT_DELAYED:
            self->attempt_start = now_ms();
            break;
        case ZMQ_EVENT_HANDSHAKE_SUCCEEDED:
            self->refused = 0;
            break;
        case ZMQ_EVENT_HANDSHAKE_FAILED_AUTH:
        case ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL:
        case ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL:
            self->refused = event;
            break;
        case ZMQ_EVENT_DISCONNECTED:
            self->conn = CONN_DOWN;
            self->drops++;
            self->after_disconnect = true;
            break;
        case ZMQ_EVENT_CONNECT_RETRIED:
            if (self->after_disconnect) { /* schedules the first reconnect */
                self->after_disconnect = false;
                break;
            }
            self->conn = CONN_DOWN;
            self->failed_attempts++;
            self->attempt_timed_out = self->attempt_start &&
                                      now_ms() - self->attempt_start >= JOBQ_CONNECT_TIMEOUT_MS - 100;
            self->attempt_start = 0;
            break;
        default:
            break;
        }
    }
}

/* The daemon refused the handshake (docs/security.md): said at once
 * rather than as a timeout. -1 with the status set, else 0. */
static int check_refused(jobq_client_t *self)
{
    if (!self->refused)
        return 0;
    if (self->refused == ZMQ_EVENT_HANDSHAKE_FAILED_AUTH)
        set_error(self, JOBQ_ERR_PERMISSION_DENIED,
                  "jobqd at %s refused this key: it is not (or no longer) in the daemon's "
                  "authorized keys", self->endpoint);
    else if (!self->curve.set)
        set_error(self, JOBQ_ERR_TRANSPORT,
                  "the handshake with jobqd at %s failed: a CURVE endpoint needs a key "
                  "(--key, $JOBQ_KEY) and the daemon's public key (--server-key, "
                  "$JOBQ_SERVER_KEY)", self->endpoint);
    else
        set_error(self, JOBQ_ERR_TRANSPORT,
                  "the handshake with jobqd at %s failed: is the server key the daemon's?",
                  self->endpoint);
    return -1;
}

/* Records why the daemon cannot be reached after a failed connect
 * attempt; `while_` is appended (context of a request in flight). */
static void set_not_running(jobq_client_t *self, const char *while_)
{
    struct stat st;
    if (self->attempt_timed_out && !self->ipc_path) {
        set_error(self, JOBQ_ERR_TRANSPORT,
                  "no answer to the TCP connection within %g s (host down, or packets "
                  "dropped?)%s",
                  JOBQ_CONNECT_TIMEOUT_MS / 1000.0, while_);
    } else if (self->ipc_path && stat(self->ipc_path, &st) != 0 && errno == ENOENT) {
        set_error(self, JOBQ_ERR_NOT_RUNNING, "jobqd is not running at %s (no socket file at %s)%s",
                  self->endpoint, self->ipc_path, while_);
    } else if (self->ipc_path) {
        set_error(self, JOBQ_ERR_NOT_RUNNING,
                  "jobqd is not running at %s (nobody listens on %s: a socket file left by a "
                  "jobqd that did not stop cleanly?)%s",
                  self->endpoint, self->ipc_path, while_);
    } else {
        set_error(self, JOBQ_ERR_NOT_RUNNING, "jobqd is not running at %s (connection refused)%s",
                  self->endpoint, while_);
    }
}

/* Makes sure the connection is up before a request is sent. When it is
 * down or not known yet, waits (up to deadline) for the outcome of the
 * next connect attempt. Returns 0 when up, -1 with the status set (`while_`
 * appended to a not-running reason). */
static int ensure_up(jobq_client_t *self, int64_t deadline, int timeout_ms, const char *while_)
{
    read_monitor(self);
    if (self->conn == CONN_UP)
        return 0;
    struct stat st;
    /* A connection that dropped under a request in flight: a daemon that
     * closes and binds again (a restart by a supervisor, a test's fake)
     * leaves the path without a file for a moment. Look again for that
     * moment before calling it stopped. */
    int64_t grace_until = *while_ ? now_ms() + CONN_REBIND_GRACE_MS : 0;
    if (deadline >= 0 && grace_until > deadline)
        grace_until = deadline;
    while (self->conn == CONN_DOWN && self->ipc_path && stat(self->ipc_path, &st) != 0 &&
           errno == ENOENT) {
        if (now_ms() >= grace_until) {
            set_not_running(self, while_); /* no file: the next attempt fails too */
            return -1;
        }
        usleep(5000);
        read_monitor(self);
    }
    uint64_t failed = self->failed_attempts;
    int64_t quiet_until = now_ms() + CONN_QUIET_MS;
    for (;;) {
        if (check_refused(self) < 0)
            return -1;
        if (self->conn == CONN_UP)
            return 0;
        if (self->failed_attempts > failed) {
            set_not_running(self, while_);
            return -1;
        }
        /* No news for long and no TCP connect in progress: a CONNECTED
         * event may have been dropped (the monitor's queue is bounded and
         * a long outage fills it). Let the request try. */
        if (!self->attempt_start && now_ms() >= quiet_until)
            return 0;
        long left = remaining_ms(deadline);
        if (left == 0) {
            set_error(self, JOBQ_ERR_TIMEOUT, "no connection to jobqd at %s within %g s",
                      self->endpoint, timeout_ms / 1000.0);
            return -1;
        }
        if (!self->attempt_start && (left < 0 || left > quiet_until - now_ms()))
            left = (long)(quiet_until - now_ms());
        zmq_pollitem_t item = {.socket = self->mon, .events = ZMQ_POLLIN};
        if (zmq_poll(&item, 1, left) < 0 && errno != EINTR) {
            set_error(self, JOBQ_ERR_TRANSPORT, "cannot watch the connection: %s",
                      zmq_strerror(errno));
            return -1;
        }
        if (read_monitor(self))
            quiet_until = now_ms() + CONN_QUIET_MS;
    }
}

/* Waits for a reply on the socket or a connection event until deadline;
 * returns 1 when the socket is readable, 2 when the monitor has news (read
 * already), 0 on timeout, -1 on error. */
static int wait_reply(jobq_client_t *self, int64_t deadline)
{
    for (;;) {
        zmq_pollitem_t items[2] = {{.socket = self->sock, .events = ZMQ_POLLIN},
                                   {.socket = self->mon, .events = ZMQ_POLLIN}};
        int rc = zmq_poll(items, 2, remaining_ms(deadline));
        if (rc > 0) {
            if (items[1].revents & ZMQ_POLLIN) {
                read_monitor(self);
                return 2;
            }
            return 1;
        }
        if (rc == 0)
            return remaining_ms(deadline) == 0 ? 0 : 1;
        if (errno != EINTR)
            return -1;
    }
}

/* Waits for the socket to accept a message until deadline; 1 ready, 0
 * timeout, -1 error. */
static int wait_send(jobq_client_t *self, int64_t deadline)
{
    for (;;) {
        zmq_pollitem_t item = {.socket = self->sock, .events = ZMQ_POLLOUT};
        int rc = zmq_poll(&item, 1, remaining_ms(deadline));
        if (rc > 0)
            return 1;
        if (rc == 0)
            return remaining_ms(deadline) == 0 ? 0 : 1;
        if (errno != EINTR)
            return -1;
    }
}

static int send_request(jobq_client_t *self, const char *data, size_t size,
                        int64_t deadline, int timeout_ms)
{
    for (;;) {
        if (zmq_send(self->sock, data, size, ZMQ_DONTWAIT) >= 0)
            return 0;
        if (errno != EAGAIN && errno != EINTR) {
            set_error(self, JOBQ_ERR_TRANSPORT, "cannot send: %s", zmq_strerror(errno));
            return -1;
        }
        int rc = wait_send(self, deadline);
        if (rc == 0) {
            set_error(self, JOBQ_ERR_TIMEOUT, "request not sent within %g s",
                      timeout_ms / 1000.0);
            return -1;
        }
        if (rc < 0) {
            set_error(self, JOBQ_ERR_TRANSPORT, "cannot send: %s", zmq_strerror(errno));
            return -1;
        }
    }
}

/* Handles one received frame. Returns 1 when it was the reply to request
 * id (status and *result set, 0/-1 outcome in *outcome), 2 when it was a
 * keepalive for id, 0 when it was something to skip (stale, unreadable). */
static int handle_frame(jobq_client_t *self, const char *method, uint64_t id,
                        const char *data, size_t size, json_t **result, int *outcome)
{
    msgpack_unpacked upk;
    msgpack_unpacked_init(&upk);
    size_t off = 0;
    int matched = 0;
    if (msgpack_unpack_next(&upk, data, size, &off) != MSGPACK_UNPACK_SUCCESS)
        goto done;  /* not msgpack: cannot tell whose it is */
    wire_reply_t rep;
    int rc = wire_reply_parse(&upk.data, &rep);
    if (!rep.has_id || rep.id != id)
        goto done;  /* stale reply to an earlier call, or unmatchable */
    if (rc == 0 && rep.keepalive) {
        matched = 2;  /* not the answer yet */
        goto done;
    }
    matched = 1;
    *outcome = -1;
    if (rc < 0 || off != size) {
        set_error(self, JOBQ_ERR_MALFORMED, "malformed reply from the daemon to %s", method);
    } else if (!rep.ok) {
        json_decref(self->leader);
        self->leader = NULL;
        if (rep.code == JOBQ_ERR_NOT_LEADER) {
            const msgpack_object *l = wire_map_get(wire_map_get(&upk.data, "error"), "leader");
            if (l && l->type == MSGPACK_OBJECT_MAP)
                self->leader = jobq_json_from_msgpack(l, JOBQ_JSON_MAX_DEPTH, NULL, 0);
        }
        if (rep.message_len)
            set_error(self, rep.code, "%.*s", (int)rep.message_len, rep.message);
        else
            set_error(self, rep.code, "%s", jobq_code_name(rep.code));
    } else {
        char err[128];
        json_t *value = NULL;
        if (result) {
            value = jobq_json_from_msgpack(rep.result, JOBQ_JSON_MAX_DEPTH, err, sizeof err);
            if (!value) {
                set_error(self, JOBQ_ERR_MALFORMED, "reply to %s cannot be decoded: %s",
                          method, err);
                goto done;
            }
            *result = value;
        }
        set_ok(self);
        *outcome = 0;
    }
done:
    msgpack_unpacked_destroy(&upk);
    return matched;
}

/* Whether sending the request again cannot do what sending it once would
 * not: read-only methods, and submissions that carry a client token (the
 * daemon answers a repeat with the first answer). */
static bool read_only(const char *method)
{
    static const char *const names[] = {"ping",   "query_jobs",  "wait_for_job_change",
                                        "events_since", "stats", "list_fields",
                                        "list_opcodes", "http_token", "query_nodes"};
    for (size_t i = 0; i < sizeof names / sizeof *names; i++)
        if (strcmp(method, names[i]) == 0)
            return true;
    return false;
}

/* Whether the request may be sent again after its connection dropped: a
 * read-only one, or a submission carrying a client token (protocol.md),
 * which the daemon answers once whatever the number of copies. */
static bool idempotent(const char *method, const json_t *args)
{
    return read_only(method) ||
           ((strcmp(method, "submit_job") == 0 || strcmp(method, "submit_many_jobs") == 0) &&
            json_object_get(args, "token") != NULL);
}

/* One request's exchange with the current endpoint. *sent: the request
 * left (it may have been carried out unless the answer says otherwise).
 * *deadline and *extended move with keepalives (keepalive_grace_ms). */
static int exchange(jobq_client_t *self, const char *method, bool may_repeat,
                    const msgpack_sbuffer *req, uint64_t id, json_t **result, int64_t start,
                    int64_t *deadline_p, int timeout_ms, int keepalive_grace_ms,
                    bool *extended_p, bool *sent)
{
    const msgpack_sbuffer sbuf = *req;
    int64_t deadline = *deadline_p;
    bool extended = *extended_p;
    int outcome = -1;
    bool resent = false;
    /* What the caller cannot know when the daemon is gone: whether a
     * request that changes something was carried out (a token makes a
     * retry safe, but only a daemon that answers can tell). */
    const char *unknown = read_only(method) ? "" : ", which may or may not have been carried out";
    char while_[160];
    snprintf(while_, sizeof while_, "; it stopped while %s was waiting for its reply%s", method,
             unknown);
    if (ensure_up(self, deadline, timeout_ms, "") < 0)
        goto out;
    *sent = true; /* a send that times out may still leave */
    if (send_request(self, sbuf.data, sbuf.size, deadline, timeout_ms) < 0)
        goto out;
    uint64_t drops = self->drops, failed = self->failed_attempts;

    for (;;) {
        int ready = wait_reply(self, deadline);
        if (ready == 0) {
            /* After keepalives moved the deadline, say how long we waited. */
            set_error(self, JOBQ_ERR_TIMEOUT, "no reply within %g s",
                      extended ? (double)((now_ms() - start) / 100) / 10 : timeout_ms / 1000.0);
            goto out;
        }
        if (ready < 0) {
            set_error(self, JOBQ_ERR_TRANSPORT, "cannot receive: %s", zmq_strerror(errno));
            goto out;
        }
        if (ready == 2) {
            if (check_refused(self) < 0)
                goto out;
            if (self->drops == drops && self->failed_attempts == failed)
                continue;
            /* The connection dropped: the request is lost with it. */
            if (ensure_up(self, deadline, timeout_ms, while_) < 0)
                goto out;
            if (!may_repeat || resent) {
                set_error(self, JOBQ_ERR_TRANSPORT,
                          "the connection to jobqd at %s was lost while %s was waiting for its "
                          "reply (the daemon restarted?)%s",
                          self->endpoint, method,
                          read_only(method) ? "" : "; it may or may not have been carried out");
                goto out;
            }
            /* Same bytes, same id: should both copies be answered, the
             * second is a stale reply to the next call. */
            resent = true;
            if (send_request(self, sbuf.data, sbuf.size, deadline, timeout_ms) < 0)
                goto out;
            drops = self->drops;
            failed = self->failed_attempts;
            continue;
        }
        zmq_msg_t msg;
        zmq_msg_init(&msg);
        if (zmq_msg_recv(&msg, self->sock, ZMQ_DONTWAIT) < 0) {
            zmq_msg_close(&msg);
            if (errno == EAGAIN || errno == EINTR)
                continue;
            set_error(self, JOBQ_ERR_TRANSPORT, "cannot receive: %s", zmq_strerror(errno));
            goto out;
        }
        /* A reply is one frame; a multi-frame message is not ours to read. */
        bool multipart = zmq_msg_more(&msg);
        int matched = 0;
        if (!multipart)
            matched = handle_frame(self, method, id, zmq_msg_data(&msg), zmq_msg_size(&msg),
                                   result, &outcome);
        zmq_msg_close(&msg);
        while (multipart) {
            zmq_msg_init(&msg);
            if (zmq_msg_recv(&msg, self->sock, 0) < 0) {
                zmq_msg_close(&msg);
                break;
            }
            multipart = zmq_msg_more(&msg);
            zmq_msg_close(&msg);
        }
        if (matched == 2) {
            if (keepalive_grace_ms > 0 && deadline >= 0 &&
                deadline < now_ms() + keepalive_grace_ms) {
                deadline = now_ms() + keepalive_grace_ms;
                extended = true;
            }
        } else if (matched) {
            break;
        }
    }
out:
    *deadline_p = deadline;
    *extended_p = extended;
    return outcome;
}

/* The scheme of an endpoint ("tcp://"...), its length. */
static size_t scheme_len(const char *ep)
{
    const char *p = strstr(ep, "://");
    return p ? (size_t)(p - ep) + 3 : 0;
}

/* Which of the leader's client endpoints to go to: one that is also
 * configured, else its first of the current endpoint's scheme. A wildcard
 * host (0.0.0.0 or the star) is the host of the leader's node
 * address. NULL when there is none (or no leader). malloc'ed. */
static char *leader_endpoint(jobq_client_t *self)
{
    json_t *eps = json_object_get(self->leader, "endpoints");
    size_t i;
    json_t *e;
    json_array_foreach(eps, i, e) {
        const char *s = json_string_value(e);
        for (size_t k = 0; s && k < self->neps; k++)
            if (strcmp(s, self->eps[k]) == 0)
                return strdup(s);
    }
    size_t sl = scheme_len(self->endpoint);
    json_array_foreach(eps, i, e) {
        const char *s = json_string_value(e);
        if (!s || !sl || strncmp(s, self->endpoint, sl) != 0)
            continue;
        const char *addr = json_string_value(json_object_get(self->leader, "address"));
        const char *colon = addr ? strrchr(addr, ':') : NULL;
        char *out = NULL;
        if (colon && (strncmp(s, "tcp://0.0.0.0:", 14) == 0 || strncmp(s, "tcp://*:", 8) == 0)) {
            if (asprintf(&out, "tcp://%.*s%s", (int)(colon - addr), addr, strrchr(s, ':')) < 0)
                out = NULL;
            return out;
        }
        return strdup(s);
    }
    return NULL;
}

/* Connects the client to endpoint instead of the current one. */
/* The socket and its monitor go, with what was known of the connection;
 * open_socket makes the next. */
static void drop_socket(jobq_client_t *self)
{
    zmq_socket_monitor(self->sock, NULL, 0);
    zmq_close(self->sock);
    zmq_close(self->mon);
    self->sock = self->mon = NULL;
    self->conn = CONN_UNKNOWN;
    self->refused = 0;
    self->after_disconnect = false;
    self->attempt_start = 0;
}

static int move_to(jobq_client_t *self, const char *endpoint)
{
    if (strcmp(endpoint, self->endpoint) == 0)
        return 0;
    if (set_endpoint(self, endpoint) < 0)
        return -1;
    drop_socket(self);
    self->attempt_timed_out = false;
    self->checked_failures = self->failed_attempts;
    self->moves++;
    return open_socket(self);
}

/* Moves to the configured endpoint after the current one. */
static int next_endpoint(jobq_client_t *self)
{
    self->cur = (self->cur + 1) % self->neps;
    self->via_leader = false;
    if (move_to(self, self->eps[self->cur]) < 0) {
        set_error(self, JOBQ_ERR_TRANSPORT, "cannot connect to %s: %s", self->eps[self->cur],
                  zmq_strerror(errno));
        return -1;
    }
    return 0;
}

/* While no leader is known: a pause, then (rotate) the next configured
 * endpoint. false when the pauses or the time ran out. */
static bool wait_for_leader(jobq_client_t *self, int64_t deadline, int *waits, bool rotate)
{
    long left = remaining_ms(deadline);
    if (++*waits > MAX_LEADER_WAITS || left == 0)
        return false;
    usleep(1000 * (left < 0 || left > LEADER_WAIT_MS ? LEADER_WAIT_MS : left));
    return remaining_ms(deadline) != 0 && (!rotate || next_endpoint(self) == 0);
}

/* After a failed exchange: whether to send the request again, and where
 * (the client is moved there). hops, waits and tried count this
 * request's moves. */
static bool move_on(jobq_client_t *self, bool may_repeat, bool sent, int64_t deadline,
                    int *hops, int *waits, size_t *tried)
{
    if (self->status == JOBQ_ERR_NOT_LEADER) {
        *tried = 0; /* a node answered: the endpoints are not all down */
        char *to = leader_endpoint(self);
        if (to && strcmp(to, self->endpoint) == 0) {
            /* A node naming itself: elected, not serving yet (loading the
             * queue). Ask it again a moment later. */
            free(to);
            return wait_for_leader(self, deadline, waits, false);
        }
        if (to && *hops >= MAX_HOPS) {
            free(to);
            char last[REASON_MAX];
            snprintf(last, sizeof last, "%s", self->reason);
            set_error(self, JOBQ_ERR_NOT_LEADER,
                      "no leader reached after %d hops (the nodes name each other as leader?); "
                      "the last answer, from %s: %s",
                      MAX_HOPS, self->endpoint, last);
            return false;
        }
        if (to) {
            ++*hops;
            int rc = move_to(self, to);
            self->via_leader = true;
            free(to);
            if (rc < 0)
                set_error(self, JOBQ_ERR_TRANSPORT, "cannot connect to the leader: %s",
                          zmq_strerror(errno));
            return rc == 0;
        }
        /* No leader known (an election), or one without a usable endpoint:
         * ask again a moment later, the configured endpoints in turn. */
        return wait_for_leader(self, deadline, waits, true);
    }
    bool unreachable = self->status == JOBQ_ERR_NOT_RUNNING ||
                       self->status == JOBQ_ERR_TIMEOUT || self->status == JOBQ_ERR_TRANSPORT;
    if (unreachable && self->via_leader && (!sent || may_repeat)) {
        /* The leader a node named is gone (the nodes do not know yet):
         * as while no leader is known. That hop led nowhere. */
        --*hops;
        return wait_for_leader(self, deadline, waits, true);
    }
    if (self->neps < 2 || !unreachable || (sent && !may_repeat))
        return false;
    /* The next configured endpoint: for this request while time is left
     * and some were not tried, else for the next call. */
    bool again = !self->refused && ++*tried < self->neps && remaining_ms(deadline) != 0;
    if (!again) {
        char reason[REASON_MAX];
        jobq_code_t code = self->status;
        snprintf(reason, sizeof reason, "%s", self->reason);
        if (next_endpoint(self) == 0)
            set_error(self, code, "%s", reason); /* the failure is this request's */
        return false;
    }
    return next_endpoint(self) == 0;
}

/* The single request path. keepalive_grace_ms > 0: each keepalive for
 * this request moves the deadline to at least that far from now. */
static int call_impl(jobq_client_t *self, const char *method, const json_t *args,
                     json_t **result, int timeout_ms, int keepalive_grace_ms)
{
    assert(self);
    assert(method);
    if (result)
        *result = NULL;
    if (args && !json_is_object(args)) {
        set_error(self, JOBQ_ERR_BAD_ARGUMENT, "%s: arguments must be a JSON object", method);
        return -1;
    }
    int64_t start = now_ms();
    int64_t deadline = timeout_ms < 0 ? -1 : start + timeout_ms;
    bool extended = false;
    uint64_t id = self->next_id++;

    msgpack_sbuffer sbuf;
    msgpack_sbuffer_init(&sbuf);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sbuf, msgpack_sbuffer_write);
    wire_request_begin(&pk, id, method);
    char err[128];
    int rc = 0;
    if (args)
        rc = jobq_json_to_msgpack(&pk, args, JOBQ_JSON_MAX_DEPTH - 1, err, sizeof err);
    else
        rc = msgpack_pack_map(&pk, 0);
    if (rc < 0) {
        set_error(self, JOBQ_ERR_BAD_ARGUMENT, "%s: arguments cannot be encoded: %s",
                  method, err);
        msgpack_sbuffer_destroy(&sbuf);
        return -1;
    }
    bool may_repeat = idempotent(method, args);
    int hops = 0, waits = 0, outcome;
    size_t tried = 0;
    for (;;) {
        bool sent = false;
        outcome = exchange(self, method, may_repeat, &sbuf, id, result, start, &deadline,
                           timeout_ms, keepalive_grace_ms, &extended, &sent);
        if (outcome == 0 ||
            !move_on(self, may_repeat, sent, deadline, &hops, &waits, &tried))
            break;
    }
    msgpack_sbuffer_destroy(&sbuf);
    return outcome;
}

uint64_t jobq_client_moves(jobq_client_t *self)
{
    return self->moves;
}

bool jobq_client_in_cluster(jobq_client_t *self)
{
    return self->neps > 1 || self->moves > 0 || self->cluster;
}

size_t jobq_client_endpoint_count(jobq_client_t *self)
{
    return self->neps;
}

const json_t *jobq_client_leader(jobq_client_t *self)
{
    return self->leader;
}

int jobq_client_check_connection(jobq_client_t *self)
{
    read_monitor(self);
    if (self->conn != CONN_DOWN || self->failed_attempts == self->checked_failures) {
        self->checked_failures = self->failed_attempts;
        return 0;
    }
    set_not_running(self, "");
    return -1;
}

int jobq_call(jobq_client_t *self, const char *method, const json_t *args,
              json_t **result, int timeout_ms)
{
    return call_impl(self, method, args, result, timeout_ms, 0);
}

/* Calls method and checks that the result has the expected JSON type.
 * Takes ownership of args. Returns the result (new reference) or NULL. */
static json_t *call_typed(jobq_client_t *self, const char *method, json_t *args,
                          json_type type, int timeout_ms)
{
    if (!args) {
        set_error(self, JOBQ_ERR_BAD_ARGUMENT, "%s: invalid arguments", method);
        return NULL;
    }
    json_t *result = NULL;
    int rc = jobq_call(self, method, args, &result, timeout_ms);
    json_decref(args);
    if (rc < 0)
        return NULL;
    bool ok = json_typeof(result) == type ||
              (type == JSON_TRUE && json_is_boolean(result));
    if (!ok) {
        set_error(self, JOBQ_ERR_MALFORMED, "unexpected result type in the reply to %s", method);
        json_decref(result);
        return NULL;
    }
    return result;
}

json_t *jobq_ping(jobq_client_t *self, int timeout_ms)
{
    json_t *r = call_typed(self, "ping", json_object(), JSON_OBJECT, timeout_ms);
    if (json_object_get(r, "cluster"))
        self->cluster = true;
    return r;
}

/* A submission's arguments with its token, sent again (same token) after
 * each timeout while retries last. */
static json_t *call_submit(jobq_client_t *self, const char *method, const char *key,
                           const json_t *body, bool ignore_drain, const char *token,
                           int retries, json_type type, int timeout_ms)
{
    if (token && (!*token || strlen(token) > JOBQ_TOKEN_MAX)) {
        set_error(self, JOBQ_ERR_BAD_ARGUMENT, "%s: a token has 1 to %d bytes", method,
                  JOBQ_TOKEN_MAX);
        return NULL;
    }
    for (int attempt = 0;; attempt++) {
        json_t *args = json_pack("{s:O, s:b}", key, (json_t *)body, "ignore_drain", ignore_drain);
        if (args && token && json_object_set_new(args, "token", json_string(token)) < 0) {
            json_decref(args);
            args = NULL;
        }
        json_t *r = call_typed(self, method, args, type, timeout_ms);
        if (r || !token || attempt >= retries || self->status != JOBQ_ERR_TIMEOUT)
            return r;
    }
}

int jobq_new_token(char *buf, size_t len)
{
    if (len < 33)
        return -1;
    unsigned char raw[16];
    FILE *f = fopen("/dev/urandom", "rb");
    size_t got = f ? fread(raw, 1, sizeof raw, f) : 0;
    if (f)
        fclose(f);
    if (got != sizeof raw) { /* no urandom: time and address, unique enough per process */
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        uint64_t a = (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
        uint64_t b = (uint64_t)(uintptr_t)buf ^ ((uint64_t)clock() << 32);
        memcpy(raw, &a, 8);
        memcpy(raw + 8, &b, 8);
    }
    for (size_t i = 0; i < sizeof raw; i++)
        snprintf(buf + 2 * i, 3, "%02x", raw[i]);
    return 0;
}

int jobq_submit_job(jobq_client_t *self, const json_t *ops, bool ignore_drain,
                    uint64_t *id_out, int timeout_ms)
{
    return jobq_submit_job_ex(self, ops, ignore_drain, NULL, 0, id_out, timeout_ms);
}

int jobq_submit_job_ex(jobq_client_t *self, const json_t *ops, bool ignore_drain,
                       const char *token, int retries, uint64_t *id_out, int timeout_ms)
{
    if (!json_is_array(ops)) {
        set_error(self, JOBQ_ERR_BAD_ARGUMENT, "submit_job: ops must be a JSON array");
        return -1;
    }
    json_t *r = call_submit(self, "submit_job", "ops", ops, ignore_drain, token, retries,
                            JSON_INTEGER, timeout_ms);
    if (!r)
        return -1;
    json_int_t id = json_integer_value(r);
    json_decref(r);
    if (id < 0) {
        set_error(self, JOBQ_ERR_MALFORMED, "negative job id in the reply to submit_job");
        return -1;
    }
    if (id_out)
        *id_out = (uint64_t)id;
    return 0;
}

json_t *jobq_submit_many_jobs(jobq_client_t *self, const json_t *jobs, bool ignore_drain,
                              int timeout_ms)
{
    return jobq_submit_many_jobs_ex(self, jobs, ignore_drain, NULL, 0, timeout_ms);
}

json_t *jobq_submit_many_jobs_ex(jobq_client_t *self, const json_t *jobs, bool ignore_drain,
                                 const char *token, int retries, int timeout_ms)
{
    if (!json_is_array(jobs)) {
        set_error(self, JOBQ_ERR_BAD_ARGUMENT, "submit_many_jobs: jobs must be a JSON array");
        return NULL;
    }
    return call_submit(self, "submit_many_jobs", "jobs", jobs, ignore_drain, token, retries,
                       JSON_ARRAY, timeout_ms);
}

json_t *jobq_query_jobs(jobq_client_t *self, const json_t *ids, const json_t *fields,
                        const json_t *status, uint64_t after_id, uint64_t limit,
                        bool archived, int timeout_ms)
{
    json_t *args = json_object();
    if (!args)
        return call_typed(self, "query_jobs", NULL, JSON_OBJECT, timeout_ms);
    int rc = 0;
    if (ids)
        rc |= json_object_set(args, "ids", (json_t *)ids);
    if (fields)
        rc |= json_object_set(args, "fields", (json_t *)fields);
    if (status)
        rc |= json_object_set(args, "status", (json_t *)status);
    if (after_id)
        rc |= json_object_set_new(args, "after_id", json_integer((json_int_t)after_id));
    if (limit)
        rc |= json_object_set_new(args, "limit", json_integer((json_int_t)limit));
    if (archived)
        rc |= json_object_set_new(args, "archived", json_true());
    if (rc != 0) {
        json_decref(args);
        args = NULL;
    }
    return call_typed(self, "query_jobs", args, JSON_OBJECT, timeout_ms);
}

json_t *jobq_cancel_job(jobq_client_t *self, uint64_t id, int timeout_ms)
{
    json_t *args = json_pack("{s:I}", "id", (json_int_t)id);
    return call_typed(self, "cancel_job", args, JSON_ARRAY, timeout_ms);
}

json_t *jobq_change_job_priority(jobq_client_t *self, uint64_t id, int priority,
                                 int timeout_ms)
{
    json_t *args = json_pack("{s:I, s:i}", "id", (json_int_t)id, "priority", priority);
    return call_typed(self, "change_job_priority", args, JSON_ARRAY, timeout_ms);
}

int jobq_archive_job(jobq_client_t *self, uint64_t id, bool *archived_out, int timeout_ms)
{
    json_t *args = json_pack("{s:I}", "id", (json_int_t)id);
    json_t *r = call_typed(self, "archive_job", args, JSON_TRUE, timeout_ms);
    if (!r)
        return -1;
    if (archived_out)
        *archived_out = json_is_true(r);
    json_decref(r);
    return 0;
}

int jobq_auto_archive_jobs(jobq_client_t *self, int64_t age, int64_t budget_s,
                           uint64_t *archived_out, uint64_t *remaining_out, int timeout_ms)
{
    json_t *args = json_pack("{s:I, s:I}", "age", (json_int_t)age, "timeout",
                             (json_int_t)budget_s);
    json_t *r = call_typed(self, "auto_archive_jobs", args, JSON_ARRAY, timeout_ms);
    if (!r)
        return -1;
    json_t *a = json_array_get(r, 0), *rem = json_array_get(r, 1);
    if (json_array_size(r) != 2 || !json_is_integer(a) || !json_is_integer(rem) ||
        json_integer_value(a) < 0 || json_integer_value(rem) < 0) {
        set_error(self, JOBQ_ERR_MALFORMED, "unexpected result in the reply to auto_archive_jobs");
        json_decref(r);
        return -1;
    }
    if (archived_out)
        *archived_out = (uint64_t)json_integer_value(a);
    if (remaining_out)
        *remaining_out = (uint64_t)json_integer_value(rem);
    json_decref(r);
    return 0;
}

int jobq_set_drain_flag(jobq_client_t *self, bool flag, int timeout_ms)
{
    json_t *args = json_pack("{s:b}", "flag", flag);
    json_t *r = call_typed(self, "set_drain_flag", args, JSON_TRUE, timeout_ms);
    if (!r)
        return -1;
    json_decref(r);
    return 0;
}

json_t *jobq_stats(jobq_client_t *self, int timeout_ms)
{
    return call_typed(self, "stats", json_object(), JSON_OBJECT, timeout_ms);
}

int jobq_shutdown(jobq_client_t *self, bool now, int timeout_ms)
{
    json_t *args = json_object();
    if (now)
        json_object_set_new(args, "now", json_true());
    json_t *r = call_typed(self, "shutdown", args, JSON_TRUE, timeout_ms);
    if (!r)
        return -1;
    json_decref(r);
    return 0;
}

int jobq_wait_for_job_change(jobq_client_t *self, uint64_t id, const json_t *fields,
                             const json_t *prev_job_info, int64_t prev_log_serial,
                             double wait_s, int timeout_ms, json_t **result)
{
    assert(result);
    *result = NULL;
    if (!json_is_array(fields) || (prev_job_info && !json_is_array(prev_job_info)) ||
        !(wait_s > 0 && wait_s <= 600)) {
        set_error(self, JOBQ_ERR_BAD_ARGUMENT,
                  "wait_for_job_change: fields and prev_job_info must be arrays, "
                  "the wait 0 < s <= 600");
        return -1;
    }
    json_t *args = json_pack("{s:I, s:O, s:O, s:o, s:f}", "id", (json_int_t)id, "fields",
                             (json_t *)fields, "prev_job_info",
                             prev_job_info ? (json_t *)prev_job_info : json_null(),
                             "prev_log_serial",
                             prev_log_serial < 0 ? json_null()
                                                 : json_integer((json_int_t)prev_log_serial),
                             "timeout", wait_s);
    if (!args) {
        set_error(self, JOBQ_ERR_BAD_ARGUMENT, "wait_for_job_change: invalid arguments");
        return -1;
    }
    /* The caller's timeout is a hard limit; without one, keepalives keep
     * a slow daemon's answer coming. */
    int grace = 0;
    if (timeout_ms <= 0) {
        timeout_ms = (int)(wait_s * 1000) + JOBQ_WFJC_MARGIN_MS;
        grace = JOBQ_WFJC_KEEPALIVE_GRACE_MS;
    }
    int rc = call_impl(self, "wait_for_job_change", args, result, timeout_ms, grace);
    json_decref(args);
    if (rc < 0)
        return -1;
    json_t *r = *result;
    bool ok = json_is_null(r) ||
              (json_is_string(r) && strcmp(json_string_value(r), "nochange") == 0) ||
              (json_is_array(r) && json_array_size(r) == 2 &&
               json_is_array(json_array_get(r, 0)) && json_is_array(json_array_get(r, 1)));
    if (!ok) {
        set_error(self, JOBQ_ERR_MALFORMED, "unexpected result in the reply to wait_for_job_change");
        json_decref(r);
        *result = NULL;
        return -1;
    }
    return 0;
}

json_t *jobq_events_since(jobq_client_t *self, uint64_t after_seq, uint64_t epoch,
                          uint64_t limit, int timeout_ms)
{
    json_t *args = json_pack("{s:I}", "after_seq", (json_int_t)after_seq);
    if (args && epoch)
        json_object_set_new(args, "epoch", json_integer((json_int_t)epoch));
    if (args && limit)
        json_object_set_new(args, "limit", json_integer((json_int_t)limit));
    json_t *r = call_typed(self, "events_since", args, JSON_OBJECT, timeout_ms);
    if (r && (!json_is_boolean(json_object_get(r, "too_old")) ||
              !json_is_array(json_object_get(r, "events")))) {
        set_error(self, JOBQ_ERR_MALFORMED, "unexpected result in the reply to events_since");
        json_decref(r);
        return NULL;
    }
    return r;
}

json_t *jobq_list_fields(jobq_client_t *self, int timeout_ms)
{
    return call_typed(self, "list_fields", json_object(), JSON_ARRAY, timeout_ms);
}

json_t *jobq_list_opcodes(jobq_client_t *self, int timeout_ms)
{
    return call_typed(self, "list_opcodes", json_object(), JSON_ARRAY, timeout_ms);
}

json_t *jobq_http_token(jobq_client_t *self, int64_t ttl_s, int timeout_ms)
{
    json_t *args = json_object();
    if (ttl_s)
        json_object_set_new(args, "ttl", json_integer((json_int_t)ttl_s));
    json_t *r = call_typed(self, "http_token", args, JSON_OBJECT, timeout_ms);
    if (r && (!json_is_string(json_object_get(r, "token")) ||
              !json_is_string(json_object_get(r, "role")) ||
              !json_is_string(json_object_get(r, "owner")) ||
              !json_is_array(json_object_get(r, "expires")))) {
        set_error(self, JOBQ_ERR_MALFORMED, "unexpected result in the reply to http_token");
        json_decref(r);
        return NULL;
    }
    return r;
}

json_t *jobq_query_nodes(jobq_client_t *self, int timeout_ms)
{
    return call_typed(self, "query_nodes", json_object(), JSON_ARRAY, timeout_ms);
}

json_t *jobq_add_node(jobq_client_t *self, uint64_t id, const char *address, bool standby,
                      const char *name, const json_t *endpoints, int timeout_ms)
{
    json_t *args = json_pack("{s:I, s:s, s:s}", "id", (json_int_t)id, "address",
                             address ? address : "", "role", standby ? "standby" : "voter");
    if (args && name && json_object_set_new(args, "name", json_string(name)) < 0) {
        json_decref(args);
        args = NULL;
    }
    if (args && json_object_set_new(args, "endpoints", endpoints ? json_deep_copy(endpoints)
                                                                 : json_array()) < 0) {
        json_decref(args);
        args = NULL;
    }
    return call_typed(self, "add_node", args, JSON_OBJECT, timeout_ms);
}

int jobq_remove_node(jobq_client_t *self, uint64_t id, int timeout_ms)
{
    json_t *r = call_typed(self, "remove_node", json_pack("{s:I}", "id", (json_int_t)id),
                           JSON_NULL, timeout_ms);
    if (!r)
        return -1;
    json_decref(r);
    return 0;
}

int jobq_transfer_leader(jobq_client_t *self, uint64_t id, uint64_t *leader_out,
                         int timeout_ms)
{
    json_t *args = json_pack("{s:o}", "id", id ? json_integer((json_int_t)id) : json_null());
    json_t *r = call_typed(self, "transfer_leader", args, JSON_OBJECT, timeout_ms);
    if (!r)
        return -1;
    json_t *l = json_object_get(r, "leader");
    if (!json_is_integer(l) || json_integer_value(l) < 0) {
        set_error(self, JOBQ_ERR_MALFORMED, "unexpected result in the reply to transfer_leader");
        json_decref(r);
        return -1;
    }
    if (leader_out)
        *leader_out = (uint64_t)json_integer_value(l);
    json_decref(r);
    return 0;
}

int jobq_client_set_keys(jobq_client_t *self, const char *key_file, const char *server_key)
{
    if (!self)
        return -1;
    char err[512];
    jobq_curve_t c;
    if (jobq_curve_load(&c, key_file, server_key, err, sizeof err) < 0) {
        set_error(self, JOBQ_ERR_BAD_ARGUMENT, "%s", err);
        return -1;
    }
    self->curve = c;
    if (!c.set || strncmp(self->endpoint, "tcp://", 6) != 0)
        return 0; /* another endpoint of a list opens its socket with the keys */
    /* A new socket: the keys count from its first connection, and no event
     * of the old one's (a handshake without keys) is read as its own. */
    drop_socket(self);
    if (open_socket(self) < 0) {
        set_error(self, JOBQ_ERR_BAD_ARGUMENT, "cannot use these keys: %s",
                  zmq_strerror(errno));
        return -1;
    }
    return 0;
}

const jobq_curve_t *jobq_client_curve(jobq_client_t *self)
{
    return &self->curve;
}
