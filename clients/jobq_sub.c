/* jobq_sub.c: libjobq's event subscriber (see jobq.h and docs/protocol.md,
 * "Subscribing without a race, and catching up").
 *
 * Design: the subscriber is a small state machine around one SUB socket
 * and a FIFO of events ready for the caller. jobq_sub_next pops the FIFO;
 * when it is empty it takes a snapshot if one is due, else reads one
 * message from the stream and runs it through apply(), which is the only
 * place where the skip rules (seq <= seq0, serial <= known) and the gap
 * rules live. Gaps are filled with events_since, whose events go through
 * the same apply() before anything else is read from the stream, so the
 * FIFO is always in order. ZeroMQ's SUB pipe is the "buffer" of step 1:
 * while the snapshot request is in flight, events wait there (the receive
 * high-water mark is raised so that they are rarely dropped; when they
 * are, that is one more gap).
 *
 * All-jobs mode: last_seq is the seq of the last event applied (seq0 right
 * after a snapshot); an event must be last_seq + 1, a heartbeat must not
 * be above it.
 *
 * Job mode: the watched jobs' events are not consecutive in seq, so gaps
 * are found by change serial. A lost *last* event would show no gap, so at
 * most once a second, on a heartbeat, the subscriber asks for the jobs'
 * change_serial (one small snapshot query, answering seq Q); any job ahead
 * of what was delivered is re-checked when the stream has passed Q (a
 * heartbeat >= Q: PUB sends in order, so every event up to Q has arrived
 * unless it was dropped) and, if still behind, caught up. last_seq here is
 * the base for events_since: every watched event up to it was delivered.
 *
 * Following a cluster's leader: a subscriber that picked its events
 * endpoint itself follows its client. When the client moved to another
 * node (a NotLeader answer, a node that went away), the SUB socket is made
 * again on that node's publish endpoint and events_since continues from
 * last_seq (seq and epoch are the cluster's). A stream silent for
 * SUB_SILENCE_MS is probed with events_since, which moves the client to
 * the leader when the node is no longer it.
 *
 * The batched stream (jobq_sub_set_batched): "batch/" replaces "job/";
 * each message is an array of event bodies, each run through the same
 * steps as an event that came alone, in order. When one of them calls for
 * a snapshot, the rest wait in `pending` and go through after it, as they
 * would have waited in the SUB pipe had they come one by one.
 *
 * Single-threaded: the subscriber and its client belong to one thread.
 */
#include "jobq.h"

#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <zmq.h>

#include "jobq_internal.h"
#include "jobq_json.h"

#define SUB_RCVHWM 200000          /* events buffered while we are busy */
#define SUB_CHECK_INTERVAL_MS 1000 /* job mode: change_serial check period */
#define SUB_SLICE_MS 100           /* how often a wait looks at the client's connection */
#define SUB_OLD_EPOCHS 4           /* epochs left behind, remembered */
#define SUB_SILENCE_MS 3000        /* a cluster's stream this quiet: probe (1 heartbeat/s) */

struct _jobq_sub_t {
    jobq_client_t *client;     /* borrowed: snapshot and events_since */
    void *ctx;                 /* ZeroMQ context owned by the subscriber */
    void *sock;                /* SUB socket */
    char *endpoint;            /* PUB endpoint connected to */
    uint64_t *jobs;            /* watched jobs; NULL with njobs 0: all */
    size_t njobs;
    json_t *fields;            /* snapshot fields (id, change_serial first) */
    int call_ms;               /* timeout of each request */
    bool need_snapshot;        /* take one before reading the stream */
    const char *snap_reason;   /* reason of the resync to deliver */
    bool started;              /* the first snapshot was taken */
    bool live;                 /* something arrived on the stream */
    uint64_t epoch;            /* daemon run of the current snapshot */
    uint64_t old_epochs[SUB_OLD_EPOCHS]; /* runs left: their buffered events are dropped */
    size_t old_next;           /* next slot of old_epochs to overwrite */
    uint64_t trigger_epoch;    /* epoch of the message that asked for a resync */
    uint64_t seq0;             /* seq of the current snapshot */
    uint64_t last_seq;         /* see the file comment */
    json_t *serials;           /* "job id" -> last change serial applied */
    bool check_pending;        /* job mode: a job was ahead at check_seq */
    uint64_t check_seq;        /* snapshot seq of that check */
    json_t *check_serials;     /* "job id" -> change_serial at the check */
    int64_t last_check_ms;     /* when the last check was made */
    json_t **q;                /* FIFO of events for the caller */
    size_t qhead, qlen, qcap;
    jobq_sub_counters_t n;     /* counters */
    bool follow;               /* the endpoint follows the client's moves */
    uint64_t moves;            /* jobq_client_moves when the endpoint was picked */
    int64_t last_heard_ms;     /* when the stream last said something */
    bool batched;              /* "batch/" rather than "job/" (all-jobs mode) */
    json_t *pending;           /* events of a batch not yet applied (array) */
    size_t pending_next;       /* index of the next one */
};

/* What apply() decided about one event. */
typedef enum { APPLY_OK, APPLY_GAP, APPLY_RESYNC } apply_t;

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static uint64_t get_u64(const json_t *o, const char *key)
{
    json_int_t v = json_integer_value(json_object_get(o, key));
    return v > 0 ? (uint64_t)v : 0;
}

static void key_of(char *buf, size_t len, uint64_t id)
{
    snprintf(buf, len, "%" PRIu64, id);
}

static uint64_t known_serial(jobq_sub_t *self, uint64_t job)
{
    char key[24];
    key_of(key, sizeof key, job);
    return get_u64(self->serials, key);
}

static bool watched(jobq_sub_t *self, uint64_t job)
{
    if (!self->njobs)
        return true;
    for (size_t i = 0; i < self->njobs; i++)
        if (self->jobs[i] == job)
            return true;
    return false;
}

static int push(jobq_sub_t *self, json_t *ev)
{
    if (self->qlen == self->qcap) {
        size_t cap = self->qcap ? self->qcap * 2 : 64;
        json_t **q = malloc(cap * sizeof *q);
        if (!q) {
            json_decref(ev);
            return -1;
        }
        for (size_t i = 0; i < self->qlen; i++)
            q[i] = self->q[(self->qhead + i) % self->qcap];
        free(self->q);
        self->q = q;
        self->qcap = cap;
        self->qhead = 0;
    }
    self->q[(self->qhead + self->qlen) % self->qcap] = ev;
    self->qlen++;
    return 0;
}

static json_t *pop(jobq_sub_t *self)
{
    if (!self->qlen)
        return NULL;
    json_t *ev = self->q[self->qhead];
    self->qhead = (self->qhead + 1) % self->qcap;
    self->qlen--;
    return ev;
}

static void remember_old_epoch(jobq_sub_t *self, uint64_t e)
{
    self->old_epochs[self->old_next] = e;
    self->old_next = (self->old_next + 1) % SUB_OLD_EPOCHS;
}

/* A message of another epoch than the snapshot's: false when it is from a
 * run already left behind (a stale message still in the pipe: drop it),
 * true when it asks for a resync (the daemon restarted; set here). */
static bool new_epoch(jobq_sub_t *self, uint64_t e)
{
    for (size_t i = 0; i < SUB_OLD_EPOCHS; i++)
        if (self->old_epochs[i] == e)
            return false;
    self->trigger_epoch = e;
    return true;
}

static void resync(jobq_sub_t *self, const char *reason)
{
    if (!self->need_snapshot) {
        self->need_snapshot = true;
        self->snap_reason = reason;
    }
}

/* Picks the PUB endpoint from ping's "publish" list for the client's
 * endpoint; a wildcard host (0.0.0.0, or the "*" wildcard) is replaced by
 * the client's host. Returns a malloc'ed string or NULL. */
static char *pick_endpoint(jobq_client_t *client, int timeout_ms)
{
    json_t *ping = jobq_ping(client, timeout_ms);
    if (!ping)
        return NULL;
    const char *mine = jobq_client_endpoint(client);
    const char *want = strncmp(mine, "ipc://", 6) == 0   ? "ipc://"
                       : strncmp(mine, "tcp://", 6) == 0 ? "tcp://"
                                                         : "";
    json_t *list = json_object_get(ping, "publish");
    const char *found = NULL;
    size_t i;
    json_t *e;
    json_array_foreach(list, i, e) {
        const char *s = json_string_value(e);
        if (s && strncmp(s, want, strlen(want)) == 0) {
            found = s;
            break;
        }
    }
    char *out = NULL;
    if (!found) {
        char *listed = json_dumps(list, JSON_COMPACT | JSON_ENCODE_ANY);
        jobq_client_fail(client, JOBQ_ERR_TRANSPORT,
                         "jobqd at %s publishes no %s%sevent endpoint (it publishes %s); start "
                         "it with --publish %sHOST:PORT to follow events from here",
                         mine, want, *want ? " " : "", listed ? listed : "?",
                         *want ? want : "tcp://");
        free(listed);
    } else if (strcmp(want, "tcp://") == 0 &&
               (strncmp(found, "tcp://0.0.0.0:", 14) == 0 || strncmp(found, "tcp://*:", 8) == 0)) {
        const char *port = strrchr(found, ':');
        const char *host = mine + 6, *hend = strrchr(host, ':');
        if (hend && asprintf(&out, "tcp://%.*s%s", (int)(hend - host), host, port) < 0)
            out = NULL;
    } else {
        out = strdup(found);
    }
    json_decref(ping);
    return out;
}

/* The SUB socket on self->endpoint, subscribed (step 1) and connected.
 * -1 with the client's status set. */
static int open_sub(jobq_sub_t *self)
{
    jobq_client_t *client = self->client;
    /* As for the client: an ipc socket file that does not exist means
     * nobody publishes there (ZeroMQ would wait silently). */
    struct stat st;
    if (strncmp(self->endpoint, "ipc://", 6) == 0 && self->endpoint[6] != '@' &&
        stat(self->endpoint + 6, &st) != 0) {
        jobq_client_fail(client, JOBQ_ERR_TRANSPORT, "no events socket at %s",
                         self->endpoint + 6);
        return -1;
    }
    self->sock = zmq_socket(self->ctx, ZMQ_SUB);
    if (!self->sock) {
        jobq_client_fail(client, JOBQ_ERR_TRANSPORT, "cannot make a socket: %s",
                         zmq_strerror(errno));
        return -1;
    }
    int linger = 0, hwm = SUB_RCVHWM;
    zmq_setsockopt(self->sock, ZMQ_LINGER, &linger, sizeof linger);
    zmq_setsockopt(self->sock, ZMQ_RCVHWM, &hwm, sizeof hwm);
    /* Step 1: subscribe before the snapshot. Job topics before "sys/":
     * subscriptions travel in order, so once a heartbeat arrives every
     * subscription is active. */
    if (!self->njobs && self->batched) {
        zmq_setsockopt(self->sock, ZMQ_SUBSCRIBE, "batch/", 6);
    } else if (!self->njobs) {
        zmq_setsockopt(self->sock, ZMQ_SUBSCRIBE, "job/", 4);
    } else {
        for (size_t i = 0; i < self->njobs; i++) {
            char topic[40];
            int n = snprintf(topic, sizeof topic, "job/%" PRIu64 "/", self->jobs[i]);
            zmq_setsockopt(self->sock, ZMQ_SUBSCRIBE, topic, (size_t)n);
        }
    }
    zmq_setsockopt(self->sock, ZMQ_SUBSCRIBE, "sys/", 4);
    /* The client's keys serve a TCP events endpoint too. */
    if (jobq_curve_apply(jobq_client_curve(client), self->sock, self->endpoint) < 0 ||
        zmq_connect(self->sock, self->endpoint) != 0) {
        jobq_client_fail(client, JOBQ_ERR_TRANSPORT, "cannot connect to %s: %s",
                         self->endpoint, zmq_strerror(errno));
        zmq_close(self->sock);
        self->sock = NULL;
        return -1;
    }
    self->last_heard_ms = now_ms();
    return 0;
}

jobq_sub_t *jobq_sub_new(jobq_client_t *client, const char *events_endpoint,
                         const uint64_t *job_ids, size_t njobs, int timeout_ms)
{
    assert(client);
    if (njobs > JOBQ_SUB_MAX_JOBS || (njobs && !job_ids)) {
        jobq_client_fail(client, JOBQ_ERR_BAD_ARGUMENT, "at most %d jobs per subscriber",
                         JOBQ_SUB_MAX_JOBS);
        return NULL;
    }
    jobq_sub_t *self = calloc(1, sizeof *self);
    if (!self)
        return NULL;
    self->client = client;
    self->call_ms = timeout_ms;
    self->need_snapshot = true;
    self->snap_reason = "start";
    self->endpoint = events_endpoint ? strdup(events_endpoint) : pick_endpoint(client, timeout_ms);
    self->follow = !events_endpoint;
    self->moves = jobq_client_moves(client);
    self->serials = json_object();
    self->check_serials = json_object();
    self->fields = json_pack("[s,s,s]", "id", "change_serial", "status");
    if (!self->endpoint || !self->serials || !self->check_serials || !self->fields)
        goto fail;
    if (njobs) {
        self->jobs = malloc(njobs * sizeof *self->jobs);
        if (!self->jobs)
            goto fail;
        memcpy(self->jobs, job_ids, njobs * sizeof *job_ids);
        self->njobs = njobs;
    }
    self->ctx = zmq_ctx_new();
    if (!self->ctx || open_sub(self) < 0)
        goto fail;
    return self;
fail:
    if (self->endpoint == NULL && jobq_client_status(client) == JOBQ_ERR_NONE)
        jobq_client_fail(client, JOBQ_ERR_INTERNAL, "out of memory");
    jobq_sub_destroy(&self);
    return NULL;
}

void jobq_sub_destroy(jobq_sub_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    jobq_sub_t *self = *self_p;
    if (self->sock)
        zmq_close(self->sock);
    if (self->ctx)
        zmq_ctx_term(self->ctx);
    json_t *ev;
    while ((ev = pop(self)))
        json_decref(ev);
    free(self->q);
    free(self->jobs);
    free(self->endpoint);
    json_decref(self->fields);
    json_decref(self->serials);
    json_decref(self->check_serials);
    json_decref(self->pending);
    free(self);
    *self_p = NULL;
}

int jobq_sub_set_fields(jobq_sub_t *self, const json_t *fields)
{
    assert(self);
    if (!json_is_array(fields))
        return -1;
    json_t *f = json_pack("[s,s]", "id", "change_serial");
    size_t i;
    json_t *name;
    json_array_foreach(fields, i, name) {
        const char *s = json_string_value(name);
        if (!s) {
            json_decref(f);
            return -1;
        }
        if (strcmp(s, "id") != 0 && strcmp(s, "change_serial") != 0)
            json_array_append(f, name);
    }
    json_decref(self->fields);
    self->fields = f;
    return 0;
}

void jobq_sub_set_call_timeout(jobq_sub_t *self, int timeout_ms)
{
    assert(self);
    self->call_ms = timeout_ms;
}

int jobq_sub_set_batched(jobq_sub_t *self, bool batched)
{
    assert(self);
    if (batched == self->batched)
        return 0;
    if (self->njobs || self->started) {
        jobq_client_fail(self->client, JOBQ_ERR_BAD_ARGUMENT,
                         self->njobs ? "the batched stream carries every job's events: "
                                       "follow every job to use it"
                                     : "the stream is chosen before the first event");
        return -1;
    }
    /* The new socket first: on failure the subscriber keeps the old one
     * and its stream, unchanged. */
    void *old = self->sock;
    self->batched = batched;
    if (open_sub(self) < 0) {
        self->sock = old;
        self->batched = !batched;
        return -1;
    }
    zmq_close(old);
    return 0;
}

const char *jobq_sub_endpoint(jobq_sub_t *self)
{
    assert(self);
    return self->endpoint;
}

bool jobq_sub_live(jobq_sub_t *self)
{
    assert(self);
    return self->live;
}

void jobq_sub_counters(jobq_sub_t *self, jobq_sub_counters_t *out)
{
    assert(self && out);
    *out = self->n;
}

/* One query_jobs snapshot request; returns the result or NULL. */
static json_t *snapshot_call(jobq_sub_t *self, const json_t *ids, json_t *fields,
                             uint64_t after_id)
{
    /* Keys in docs/protocol.md's order (ids, fields, after_id, snapshot),
     * as jobq.Client sends them: the golden vector query_jobs_snapshot. */
    json_t *args = json_object();
    if (!args)
        return NULL;
    int rc = 0;
    if (ids)
        rc |= json_object_set(args, "ids", (json_t *)ids);
    rc |= json_object_set(args, "fields", fields);
    if (after_id)
        rc |= json_object_set_new(args, "after_id", json_integer((json_int_t)after_id));
    rc |= json_object_set_new(args, "snapshot", json_true());
    if (rc != 0) {
        json_decref(args);
        return NULL;
    }
    json_t *r = NULL;
    rc = jobq_call(self->client, "query_jobs", args, &r, self->call_ms);
    json_decref(args);
    if (rc < 0)
        return NULL;
    if (!json_is_object(r) || !json_is_array(json_object_get(r, "rows")) ||
        !json_is_integer(json_object_get(r, "seq")) ||
        !json_is_integer(json_object_get(r, "epoch"))) {
        jobq_client_fail(self->client, JOBQ_ERR_MALFORMED,
                         "query_jobs gave no snapshot (seq, epoch): daemon too old?");
        json_decref(r);
        return NULL;
    }
    return r;
}

/* Steps 2 and 5: takes a snapshot of the watched jobs (every live job,
 * paging, in all-jobs mode), resets the state and queues a resync event.
 * Returns 0 or -1 (the request failed; the snapshot stays due). */
static int take_snapshot(jobq_sub_t *self)
{
    json_t *ids = NULL, *rows = json_array(), *r = NULL;
    uint64_t seq0 = 0, epoch = 0, after = 0;
    if (!rows)
        return -1;
    if (self->njobs) {
        ids = json_array();
        for (size_t i = 0; i < self->njobs; i++)
            json_array_append_new(ids, json_integer((json_int_t)self->jobs[i]));
    }
    bool first = true;
    for (;;) {
        r = snapshot_call(self, ids, self->fields, after);
        if (!r)
            goto fail;
        /* The first page's seq is seq0: later pages reflect more events,
         * which the serial rule then skips. A restart between pages means
         * starting over. */
        if (first) {
            seq0 = get_u64(r, "seq");
            epoch = get_u64(r, "epoch");
            first = false;
        } else if (get_u64(r, "epoch") != epoch) {
            json_decref(r);
            json_array_clear(rows);
            after = 0;
            first = true;
            continue;
        }
        json_t *page = json_object_get(r, "rows");
        json_array_extend(rows, page);
        size_t n = json_array_size(page);
        bool more = json_is_true(json_object_get(r, "more")) && !ids && n;
        if (more)
            after = (uint64_t)json_integer_value(json_array_get(json_array_get(page, n - 1), 0));
        json_decref(r);
        if (!more)
            break;
    }
    json_object_clear(self->serials);
    size_t i;
    json_t *row;
    json_array_foreach(rows, i, row) {
        /* fields[0] is id and fields[1] change_serial (jobq_sub_set_fields) */
        json_t *id = json_array_get(row, 0), *serial = json_array_get(row, 1);
        if (json_is_integer(id) && json_is_integer(serial)) {
            char key[24];
            key_of(key, sizeof key, (uint64_t)json_integer_value(id));
            json_object_set(self->serials, key, serial);
        }
    }
    json_t *ev = json_pack("{s:s, s:s, s:I, s:I, s:O, s:o}", "type", "resync", "reason",
                           self->snap_reason, "seq", (json_int_t)seq0, "epoch",
                           (json_int_t)epoch, "fields", self->fields, "rows", rows);
    rows = NULL;
    if (!ev || push(self, ev) < 0)
        goto fail;
    if (self->started && self->epoch != epoch)
        remember_old_epoch(self, self->epoch);
    if (self->started)
        self->n.resyncs++;
    self->started = true;
    if (self->trigger_epoch && self->trigger_epoch != epoch)
        remember_old_epoch(self, self->trigger_epoch);
    self->trigger_epoch = 0;
    self->seq0 = self->last_seq = seq0;
    self->epoch = epoch;
    self->need_snapshot = false;
    self->check_pending = false;
    self->last_check_ms = now_ms();
    json_decref(ids);
    return 0;
fail:
    json_decref(rows);
    json_decref(ids);
    return -1;
}

/* Step 3 and the gap rules for one event body (decoded); queues it when it
 * is new. recovered: it came from events_since (which has no gaps). */
static apply_t apply(jobq_sub_t *self, json_t *body, bool recovered)
{
    uint64_t seq = get_u64(body, "seq"), epoch = get_u64(body, "epoch");
    json_t *change = json_object_get(body, "change");
    uint64_t job = get_u64(change, "job"), serial = get_u64(change, "serial");
    if (!seq || !job || !serial)
        return APPLY_OK; /* not an event we can place: ignore it */
    if (epoch != self->epoch) {
        if (!new_epoch(self, epoch))
            return APPLY_OK;
        resync(self, "epoch");
        return APPLY_RESYNC;
    }
    if (!self->njobs) {
        if (seq <= self->last_seq) {
            self->n.skipped++;
            return APPLY_OK;
        }
        if (seq != self->last_seq + 1) {
            if (recovered) { /* events_since skipped one: cannot trust it */
                resync(self, "gap");
                return APPLY_RESYNC;
            }
            self->n.gaps++;
            return APPLY_GAP;
        }
        self->last_seq = seq;
    } else if (!watched(self, job)) {
        return APPLY_OK; /* another job's, from events_since */
    } else if (seq <= self->seq0) {
        self->n.skipped++;
        return APPLY_OK;
    }
    uint64_t known = known_serial(self, job);
    if (serial <= known) {
        self->n.skipped++;
        return APPLY_OK;
    }
    /* A job absent from the snapshot starts at serial 1 (its submission
     * comes after seq0) in job mode. In all-jobs mode the seq check above
     * already proved nothing is missing: a job absent from the snapshot may
     * have been listed on no page (archived meanwhile). */
    if (self->njobs && serial != known + 1) {
        if (recovered) {
            resync(self, "gap");
            return APPLY_RESYNC;
        }
        self->n.gaps++;
        return APPLY_GAP;
    }
    char key[24];
    key_of(key, sizeof key, job);
    json_t *kind = json_object_get(change, "kind");
    if (!self->njobs && json_is_string(kind) && strcmp(json_string_value(kind), "archive") == 0)
        json_object_del(self->serials, key); /* no event follows an archive */
    else
        json_object_set_new(self->serials, key, json_integer((json_int_t)serial));
    /* "type" first, for people reading --json lines; the body's values
     * are shared, never modified. */
    json_t *ev = json_pack("{s:s}", "type", "change");
    if (!ev || json_object_update(ev, body) < 0) {
        json_decref(ev);
        return APPLY_RESYNC;
    }
    json_object_set_new(ev, "job", json_integer((json_int_t)job));
    json_object_set_new(ev, "serial", json_integer((json_int_t)serial));
    json_object_set(ev, "kind", kind ? kind : json_null());
    json_object_set_new(ev, "recovered", json_boolean(recovered));
    if (push(self, ev) < 0)
        return APPLY_RESYNC;
    self->n.delivered++;
    if (recovered)
        self->n.recovered++;
    return APPLY_OK;
}

/* Step 4: fetches the events after self->last_seq with events_since
 * (paging) and applies them. Returns 0 (maybe with a snapshot now due) or
 * -1 when a request failed. */
static int catch_up(jobq_sub_t *self)
{
    uint64_t after = self->last_seq;
    for (;;) {
        json_t *r = jobq_events_since(self->client, after, self->epoch, 0, self->call_ms);
        if (!r)
            return -1;
        if (json_is_true(json_object_get(r, "too_old")) || get_u64(r, "epoch") != self->epoch) {
            resync(self, get_u64(r, "epoch") != self->epoch ? "epoch" : "too_old");
            json_decref(r);
            return 0;
        }
        size_t i;
        json_t *body;
        json_array_foreach(json_object_get(r, "events"), i, body) {
            if (apply(self, body, true) != APPLY_OK) {
                json_decref(r);
                resync(self, "gap");
                return 0;
            }
            after = get_u64(body, "seq");
        }
        bool more = json_is_true(json_object_get(r, "more")) &&
                    json_array_size(json_object_get(r, "events"));
        json_decref(r);
        if (!more)
            break;
    }
    /* Job mode: every watched event up to `after` has been seen now. */
    if (self->njobs && after > self->last_seq)
        self->last_seq = after;
    return 0;
}

/* Job mode, on a heartbeat of seq hb: the change_serial check (see the
 * file comment). Returns 0 or -1 when a request failed. */
static int job_check(jobq_sub_t *self, uint64_t hb)
{
    if (self->check_pending) {
        if (hb < self->check_seq)
            return 0; /* the stream has not yet passed the check point */
        self->check_pending = false;
        const char *key;
        json_t *v;
        bool behind = false;
        json_object_foreach(self->check_serials, key, v) {
            if (get_u64(self->serials, key) < (uint64_t)json_integer_value(v))
                behind = true;
        }
        if (!behind) {
            self->last_seq = self->check_seq;
            return 0;
        }
        self->n.gaps++;
        return catch_up(self);
    }
    if (now_ms() - self->last_check_ms < SUB_CHECK_INTERVAL_MS)
        return 0;
    self->last_check_ms = now_ms();
    self->n.checks++;
    json_t *ids = json_array(), *fields = json_pack("[s,s]", "id", "change_serial");
    for (size_t i = 0; i < self->njobs; i++)
        json_array_append_new(ids, json_integer((json_int_t)self->jobs[i]));
    json_t *r = snapshot_call(self, ids, fields, 0);
    json_decref(ids);
    json_decref(fields);
    if (!r)
        return -1;
    if (get_u64(r, "epoch") != self->epoch) {
        resync(self, "epoch");
        json_decref(r);
        return 0;
    }
    json_object_clear(self->check_serials);
    bool ahead = false;
    size_t i;
    json_t *row;
    json_array_foreach(json_object_get(r, "rows"), i, row) {
        uint64_t id = (uint64_t)json_integer_value(json_array_get(row, 0));
        uint64_t cs = (uint64_t)json_integer_value(json_array_get(row, 1));
        char key[24];
        key_of(key, sizeof key, id);
        if (cs > get_u64(self->serials, key)) {
            ahead = true;
            json_object_set_new(self->check_serials, key, json_integer((json_int_t)cs));
        }
    }
    uint64_t q = get_u64(r, "seq");
    json_decref(r);
    if (ahead) {
        self->check_pending = true;
        self->check_seq = q;
    } else if (q > self->last_seq) {
        self->last_seq = q;
    }
    return 0;
}

/* One event of the stream (alone or out of a batch): applied, a gap
 * filled first. 0, or -1 when a request failed. */
static int on_event(jobq_sub_t *self, json_t *body)
{
    if (apply(self, body, false) != APPLY_GAP)
        return 0;
    /* Fill the gap, then apply this event (now in order, or skipped). */
    if (catch_up(self) < 0)
        return -1;
    if (!self->need_snapshot && apply(self, body, false) == APPLY_GAP)
        resync(self, "gap"); /* events_since did not have it either */
    return 0;
}

/* The events of a batch not applied yet, in order, until one calls for a
 * snapshot (the rest then wait for it). 0, or -1 when a request failed. */
static int drain_pending(jobq_sub_t *self)
{
    while (self->pending && self->pending_next < json_array_size(self->pending) &&
           !self->need_snapshot)
        if (on_event(self, json_array_get(self->pending, self->pending_next++)) < 0)
            return -1;
    if (self->pending && self->pending_next >= json_array_size(self->pending)) {
        json_decref(self->pending);
        self->pending = NULL;
    }
    return 0;
}

static bool has_pending(const jobq_sub_t *self)
{
    return self->pending && self->pending_next < json_array_size(self->pending);
}

/* Reads one message from the stream (waiting up to timeout_ms) and
 * processes it. Returns 1 when one was processed, 0 on timeout, -1 when a
 * request failed. */
static int read_stream(jobq_sub_t *self, int timeout_ms)
{
    zmq_pollitem_t item = {.socket = self->sock, .events = ZMQ_POLLIN};
    int rc = zmq_poll(&item, 1, timeout_ms);
    if (rc <= 0)
        return 0; /* timeout or EINTR: the caller's loop decides */
    zmq_msg_t topic, body;
    zmq_msg_init(&topic);
    zmq_msg_init(&body);
    int out = 1;
    if (zmq_msg_recv(&topic, self->sock, ZMQ_DONTWAIT) < 0)
        goto done;
    if (!zmq_msg_more(&topic) || zmq_msg_recv(&body, self->sock, 0) < 0)
        goto done; /* a one-frame message is not ours */
    while (zmq_msg_more(&body)) { /* extra frames: drain, ignore */
        zmq_msg_t extra;
        zmq_msg_init(&extra);
        int r = zmq_msg_recv(&extra, self->sock, 0);
        zmq_msg_close(&extra);
        if (r < 0)
            break;
    }
    self->live = true;
    self->last_heard_ms = now_ms();
    msgpack_unpacked upk;
    msgpack_unpacked_init(&upk);
    size_t off = 0;
    json_t *j = NULL;
    bool unpacked = msgpack_unpack_next(&upk, zmq_msg_data(&body), zmq_msg_size(&body), &off) ==
                    MSGPACK_UNPACK_SUCCESS;
    if (zmq_msg_size(&topic) >= 6 && memcmp(zmq_msg_data(&topic), "batch/", 6) == 0) {
        /* Consecutive events, each as the per-event stream carries it (and
         * converted alone: the array is no level of an event's nesting). */
        if (unpacked && upk.data.type == MSGPACK_OBJECT_ARRAY && !self->need_snapshot) {
            const msgpack_object_array *a = &upk.data.via.array;
            json_t *evs = json_array();
            for (uint32_t i = 0; evs && i < a->size; i++) {
                json_t *ev = jobq_json_from_msgpack(&a->ptr[i], JOBQ_JSON_MAX_DEPTH, NULL, 0);
                if (json_is_object(ev))
                    json_array_append(evs, ev);
                json_decref(ev);
            }
            json_decref(self->pending); /* empty: read_stream runs when it is */
            self->pending = evs;
            self->pending_next = 0;
            if (drain_pending(self) < 0)
                out = -1;
        }
        msgpack_unpacked_destroy(&upk);
        goto done_j;
    }
    if (unpacked)
        j = jobq_json_from_msgpack(&upk.data, JOBQ_JSON_MAX_DEPTH, NULL, 0);
    msgpack_unpacked_destroy(&upk);
    if (self->need_snapshot)
        goto done_j; /* the snapshot about to be taken covers it */
    if (!json_is_object(j))
        goto done_j; /* undecodable: nothing to place it by */
    bool hb = zmq_msg_size(&topic) >= 4 && memcmp(zmq_msg_data(&topic), "sys/", 4) == 0;
    if (hb) {
        self->n.heartbeats++;
        uint64_t seq = get_u64(j, "seq");
        if (get_u64(j, "epoch") != self->epoch) {
            if (new_epoch(self, get_u64(j, "epoch")))
                resync(self, "epoch");
        } else if (!self->njobs) {
            if (seq > self->last_seq) {
                self->n.gaps++;
                if (catch_up(self) < 0)
                    out = -1;
            }
        } else if (job_check(self, seq) < 0) {
            out = -1;
        }
    } else if (on_event(self, j) < 0) {
        out = -1;
    }
done_j:
    json_decref(j);
done:
    zmq_msg_close(&topic);
    zmq_msg_close(&body);
    return out;
}

/* The client moved to another node: subscribe to that node's events and
 * continue from last_seq. 0, or -1 when a request failed. */
static int follow_client(jobq_sub_t *self)
{
    char *ep = pick_endpoint(self->client, self->call_ms);
    if (!ep)
        return -1;
    self->moves = jobq_client_moves(self->client);
    if (strcmp(ep, self->endpoint) != 0) {
        zmq_close(self->sock);
        self->sock = NULL;
        free(self->endpoint);
        self->endpoint = ep;
        if (open_sub(self) < 0)
            return -1;
    } else {
        free(ep);
    }
    self->last_heard_ms = now_ms();
    if (self->started && !self->need_snapshot)
        return catch_up(self);
    return 0;
}

int jobq_sub_next(jobq_sub_t *self, json_t **ev_out, int timeout_ms)
{
    assert(self && ev_out);
    *ev_out = NULL;
    int64_t deadline = timeout_ms < 0 ? -1 : now_ms() + timeout_ms;
    for (;;) {
        json_t *ev = pop(self);
        if (ev) {
            *ev_out = ev;
            return 1;
        }
        if (self->need_snapshot) {
            if (take_snapshot(self) < 0)
                return -1;
            continue;
        }
        if (has_pending(self)) { /* the rest of a batch, after its snapshot */
            if (drain_pending(self) < 0)
                return -1;
            continue;
        }
        int64_t left = deadline < 0 ? -1 : deadline - now_ms();
        if (deadline >= 0 && left < 0)
            left = 0;
        /* The stream says nothing when the daemon goes away: look at the
         * client's connection between slices of the wait. */
        if (left < 0 || left > SUB_SLICE_MS)
            left = SUB_SLICE_MS;
        if (self->follow && self->moves != jobq_client_moves(self->client)) {
            if (follow_client(self) < 0)
                return -1;
            continue;
        }
        if (read_stream(self, (int)left) < 0)
            return -1;
        if (self->follow && !self->qlen && jobq_client_in_cluster(self->client) &&
            now_ms() - self->last_heard_ms > SUB_SILENCE_MS) {
            /* Silent: is the node still the leader? events_since answers,
             * or moves the client to the leader. */
            self->last_heard_ms = now_ms();
            if (catch_up(self) < 0)
                return -1;
        }
        if (jobq_client_check_connection(self->client) < 0) {
            /* A node of several went away: the next request moves the
             * client on (to the leader). */
            if (!self->follow || jobq_client_endpoint_count(self->client) < 2 ||
                !self->started || catch_up(self) < 0)
                return -1;
        }
        /* A busy stream of skipped events must not hold the caller past
         * its deadline. */
        if (deadline >= 0 && now_ms() >= deadline && !self->qlen && !self->need_snapshot)
            return 0;
    }
}
