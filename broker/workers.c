/* workers.c: the worker hub (workers.h; protocol in docs/protocol.md,
 * "Workers"). Everything here but the inbox runs on the loop thread. */
#include "workers.h"
#include "cluster.h"
#include "auth.h"
#include "hubsnap.h"
#include "log.h"
#include "opreg.h"
#include "scan.h"
#include <msgpack/unpack_define.h>

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>
#include <zmq.h>

#define MAX_RID 257 /* the socket's index, then libzmq's id (at most 255) */
#define LABEL_MAX 96

/* A timer in the hub's heap: the first member of what it times. */
typedef enum { T_SESSION, T_ENTRY } tkind_t;
typedef struct {
    int64_t at;       /* CLOCK_MONOTONIC µs; INT64_MAX: not in the heap */
    size_t index;
    uint8_t kind;
} htimer_t;

struct opq;
struct session;

typedef enum {
    E_WAITING,  /* in its opcode's queue (or the heap, backing off) */
    E_SENDING,  /* assigned; its running record is not committed yet */
    E_RUNNING,  /* the worker has it */
    E_STOPPING  /* the worker was told to stop (cancel, timeout) */
} estate_t;

/* One job the hub holds: its current opcode waits or runs on a worker. */
typedef struct entry {
    htimer_t t;
    uint64_t job;
    uint32_t op;
    uint16_t attempt;
    int8_t prio;
    uint8_t state;               /* estate_t */
    bool backing_off;            /* E_WAITING in the timer heap, not the queue */
    bool timed_out;
    bool orphan;                 /* E_RUNNING on a worker of the previous
                                    leader's, waiting for it (jq_hub_adopt) */
    int64_t timeout_us;          /* one attempt's limit; 0 none */
    struct opq *q;
    struct session *w;           /* a lease's worker */
    struct entry *hnext;         /* by job id */
    struct entry *wnext, **wpprev; /* the worker's leases */
    struct entry *snext;         /* the sending queue */
    bool queued;                 /* in the sending queue: an assignment (E_SENDING)
                                    or a cancel (E_STOPPING) waits for a commit */
    size_t qindex;               /* in q->waiting */
    uint64_t ticket;             /* while queued: store position of the change it shows */
    char *msg;                   /* E_SENDING: the assignment */
    size_t msglen;
} entry_t;

typedef struct session {
    htimer_t t;
    uint64_t id;
    char name[JOBQ_MAX_OP_NAME + 1];
    char label[LABEL_MAX];       /* "name#id": the job's worker field */
    unsigned capacity, busy;
    unsigned char rid[MAX_RID];
    size_t ridlen;
    int64_t heard, sent;         /* last message from / to it */
    int64_t since;               /* wall-clock µs of its hello */
    uint64_t last_assign;        /* assignment counter value: lower waited longer */
    struct opq **ops;
    unsigned nops, next_op;      /* next_op: where the round robin resumes */
    entry_t *leases;
    struct session *hnext;       /* by routing id */
} session_t;

/* The waiting opcodes of one name and the workers serving it. */
typedef struct opq {
    char name[JOBQ_MAX_OP_NAME + 1];
    jq_heap_t waiting;           /* entry_t, by (priority, job id) */
    session_t **servers;
    size_t nservers, capservers;
    size_t snap_index;           /* while a snapshot is made */
    struct opq *next;
} opq_t;

typedef enum { IN_OFFER, IN_KICK, IN_REPRIO } inkind_t;

typedef struct {
    uint64_t id;
    uint8_t kind;                /* inkind_t */
    int8_t prio;                 /* IN_REPRIO */
} inmsg_t;

struct jq_hub {
    jq_daemon_t *d;
    /* The worker ROUTERs: the ipc one and one per TCP endpoint (CURVE is
     * set per socket). A session's routing id starts with its socket's
     * index, so replies leave where the worker is. */
    void *routers[JQ_HUB_MAX_SOCKETS];
    bool curve[JQ_HUB_MAX_SOCKETS]; /* only worker keys may speak there */
    unsigned nrouters;
    int64_t denied_logged;          /* when a refused key was last logged */
    /* The inbox (any thread). */
    pthread_mutex_t in_mu;
    inmsg_t *in, *in_spare;
    size_t nin, capin, capspare;
    int efd;
    /* Loop thread only. */
    jq_heap_t timers;
    entry_t **jobs;              /* hash by job id */
    size_t njobbuckets, njobs;
    session_t **sessions;        /* hash by routing id */
    size_t nsessbuckets;
    opq_t *queues;
    entry_t *sending, **sending_tail;
    uint64_t next_id, assign_counter;
    bool paused;
    _Atomic uint64_t running;
    msgpack_sbuffer sb;
    /* The copy other threads read (hubsnap.h): made again after a change,
     * at most every JQ_HUBSNAP_INTERVAL_US. */
    jq_hubsnap_t *snap;
    bool snap_dirty;
    int64_t snap_next;           /* CLOCK_MONOTONIC µs: not before then */
};

/* ---- small helpers ---- */

static bool timer_before(const void *a, const void *b)
{
    return ((const htimer_t *)a)->at < ((const htimer_t *)b)->at;
}

static void timer_moved(void *e, size_t index)
{
    ((htimer_t *)e)->index = index;
}

static bool entry_before(const void *a, const void *b)
{
    const entry_t *x = a, *y = b;
    return x->prio < y->prio || (x->prio == y->prio && x->job < y->job);
}

static void entry_moved(void *e, size_t index)
{
    ((entry_t *)e)->qindex = index;
}

static void timer_set(jq_hub_t *h, htimer_t *t, int64_t at)
{
    if (t->at != INT64_MAX) {
        if (at == INT64_MAX) {
            jq_heap_remove(&h->timers, t->index);
            t->at = INT64_MAX;
            return;
        }
        t->at = at;
        jq_heap_fix(&h->timers, t->index);
        return;
    }
    if (at == INT64_MAX)
        return;
    t->at = at;
    if (jq_heap_push(&h->timers, t) < 0)
        t->at = INT64_MAX; /* out of memory: the next event sets it again */
}

static int64_t heartbeat_us(const jq_hub_t *h)
{
    return (int64_t)(h->d->cfg.worker_heartbeat * 1e6);
}

static int64_t lease_us(const jq_hub_t *h)
{
    return (int64_t)(h->d->cfg.worker_lease * 1e6);
}

#define STAT_ADD(h, f, n) atomic_fetch_add_explicit(&(h)->d->worker_stats.f, (n), memory_order_relaxed)
#define STAT_SUB(h, f, n) atomic_fetch_sub_explicit(&(h)->d->worker_stats.f, (n), memory_order_relaxed)

/* ---- sending ---- */

static void pack_head(msgpack_packer *pk, size_t nkeys, const char *type)
{
    msgpack_pack_map(pk, nkeys + 2);
    wire_pack_cstr(pk, "v");
    msgpack_pack_int(pk, JOBQ_PROTOCOL_VERSION);
    wire_pack_cstr(pk, "type");
    wire_pack_cstr(pk, type);
}

static void pack_lease(msgpack_packer *pk, uint64_t job, uint32_t op, uint16_t attempt)
{
    wire_pack_cstr(pk, "job");
    msgpack_pack_uint64(pk, job);
    wire_pack_cstr(pk, "op");
    msgpack_pack_uint32(pk, op);
    wire_pack_cstr(pk, "attempt");
    msgpack_pack_uint16(pk, attempt);
}

/* Send what h->sb holds to the peer rid. Workers get few messages (bounded
 * by their capacity and the heartbeat), so the high-water mark is not
 * reached by a live worker; a frame that cannot go is dropped, and the
 * lease rules (heartbeats, stop grace) settle what it concerned. */
static void send_raw(jq_hub_t *h, const unsigned char *rid, size_t ridlen)
{
    if (ridlen < 2 || rid[0] >= h->nrouters || !h->routers[rid[0]])
        return;
    void *router = h->routers[rid[0]];
    if (zmq_send(router, rid + 1, ridlen - 1, ZMQ_SNDMORE | ZMQ_DONTWAIT) < 0)
        return;
    zmq_send(router, h->sb.data, h->sb.size, ZMQ_DONTWAIT);
}

static void send_to(jq_hub_t *h, session_t *w)
{
    send_raw(h, w->rid, w->ridlen);
    w->sent = jq_now_mono();
}

static msgpack_packer *start(jq_hub_t *h, msgpack_packer *pk)
{
    msgpack_sbuffer_clear(&h->sb);
    msgpack_packer_init(pk, &h->sb, msgpack_sbuffer_write);
    return pk;
}

/* The lease a refused message named, when it named one: the error says
 * which (docs/protocol.md). */
typedef struct {
    uint64_t job;
    uint32_t op;
    uint16_t attempt;
    bool set;
} lease_ref_t;

static void send_error_about(jq_hub_t *h, const unsigned char *rid, size_t ridlen,
                             const lease_ref_t *lease, jobq_code_t code, const char *message)
{
    msgpack_packer pk;
    start(h, &pk);
    bool named = lease && lease->set;
    pack_head(&pk, named ? 5 : 2, "error");
    if (named)
        pack_lease(&pk, lease->job, lease->op, lease->attempt);
    wire_pack_cstr(&pk, "code");
    wire_pack_cstr(&pk, jobq_code_name(code));
    wire_pack_cstr(&pk, "message");
    wire_pack_cstr(&pk, message);
    send_raw(h, rid, ridlen);
    STAT_ADD(h, refused, 1);
}

static void send_error(jq_hub_t *h, const unsigned char *rid, size_t ridlen, jobq_code_t code,
                       const char *message)
{
    send_error_about(h, rid, ridlen, NULL, code, message);
}

static void send_lease_msg(jq_hub_t *h, session_t *w, const char *type, uint64_t job,
                           uint32_t op, uint16_t attempt, const char *reason)
{
    msgpack_packer pk;
    start(h, &pk);
    pack_head(&pk, 4, type);
    pack_lease(&pk, job, op, attempt);
    wire_pack_cstr(&pk, "reason");
    wire_pack_cstr(&pk, reason);
    send_to(h, w);
}

static void send_disconnect(jq_hub_t *h, const unsigned char *rid, size_t ridlen,
                            const char *reason)
{
    msgpack_packer pk;
    start(h, &pk);
    pack_head(&pk, 1, "disconnect");
    wire_pack_cstr(&pk, "reason");
    wire_pack_cstr(&pk, reason);
    send_raw(h, rid, ridlen);
}

/* ---- the job index ---- */

static size_t job_bucket(const jq_hub_t *h, uint64_t id)
{
    return (size_t)((id * 0x9E3779B97F4A7C15ull) >> 32) & (h->njobbuckets - 1);
}

static entry_t *find_entry(jq_hub_t *h, uint64_t id)
{
    for (entry_t *e = h->jobs[job_bucket(h, id)]; e; e = e->hnext)
        if (e->job == id)
            return e;
    return NULL;
}

static void grow_jobs(jq_hub_t *h)
{
    size_t n = h->njobbuckets * 2;
    entry_t **b = calloc(n, sizeof *b);
    if (!b)
        return; /* longer chains, still correct */
    size_t old = h->njobbuckets;
    entry_t **ob = h->jobs;
    h->jobs = b;
    h->njobbuckets = n;
    for (size_t i = 0; i < old; i++)
        for (entry_t *e = ob[i], *next; e; e = next) {
            next = e->hnext;
            size_t k = job_bucket(h, e->job);
            e->hnext = b[k];
            b[k] = e;
        }
    free(ob);
}

static void index_entry(jq_hub_t *h, entry_t *e)
{
    if (h->njobs >= h->njobbuckets)
        grow_jobs(h);
    size_t k = job_bucket(h, e->job);
    e->hnext = h->jobs[k];
    h->jobs[k] = e;
    h->njobs++;
}

static void unindex_entry(jq_hub_t *h, entry_t *e)
{
    for (entry_t **pp = &h->jobs[job_bucket(h, e->job)]; *pp; pp = &(*pp)->hnext)
        if (*pp == e) {
            *pp = e->hnext;
            h->njobs--;
            return;
        }
}

/* ---- sessions ---- */

static size_t rid_bucket(const jq_hub_t *h, const unsigned char *rid, size_t len)
{
    uint64_t x = 1469598103934665603ull;
    for (size_t i = 0; i < len; i++)
        x = (x ^ rid[i]) * 1099511628211ull;
    return (size_t)x & (h->nsessbuckets - 1);
}

static session_t *find_session(jq_hub_t *h, const unsigned char *rid, size_t len)
{
    for (session_t *w = h->sessions[rid_bucket(h, rid, len)]; w; w = w->hnext)
        if (w->ridlen == len && memcmp(w->rid, rid, len) == 0)
            return w;
    return NULL;
}

static opq_t *find_queue(jq_hub_t *h, const char *name)
{
    for (opq_t *q = h->queues; q; q = q->next)
        if (strcmp(q->name, name) == 0)
            return q;
    return NULL;
}

static opq_t *get_queue(jq_hub_t *h, const char *name)
{
    opq_t *q = find_queue(h, name);
    if (q)
        return q;
    if (!(q = calloc(1, sizeof *q)))
        return NULL;
    snprintf(q->name, sizeof q->name, "%s", name);
    jq_heap_init(&q->waiting, entry_before, entry_moved);
    q->next = h->queues;
    h->queues = q;
    return q;
}

/* ---- table changes ---- */

/* Lock job id when its current opcode is still e's; NULL (nothing locked)
 * otherwise. */
static jq_job_t *lock_current(jq_hub_t *h, const entry_t *e, jq_shard_t **shp)
{
    jq_shard_t *sh = jq_table_shard_for(h->d->table, e->job);
    jq_shard_wrlock(sh);
    jq_job_t *job = jq_shard_find(sh, e->job);
    if (!job || jq_job_current_op(job) != e->op) {
        jq_shard_wrunlock(sh);
        return NULL;
    }
    *shp = sh;
    return job;
}

static void unlink_sending(jq_hub_t *h, entry_t *e)
{
    if (!e->queued)
        return;
    e->queued = false;
    for (entry_t **pp = &h->sending; *pp; pp = &(*pp)->snext)
        if (*pp == e) {
            *pp = e->snext;
            if (!*pp)
                h->sending_tail = pp;
            break;
        }
    free(e->msg);
    e->msg = NULL;
}

/* e becomes one of w's leases (unlink_worker undoes it). */
static void link_lease(jq_hub_t *h, entry_t *e, session_t *w)
{
    e->w = w;
    e->wnext = w->leases;
    if (w->leases)
        w->leases->wpprev = &e->wnext;
    e->wpprev = &w->leases;
    w->leases = e;
    w->busy++;
    STAT_ADD(h, leases, 1);
    atomic_fetch_add(&h->running, 1);
}

/* e leaves its worker (the lease is over). */
static void unlink_worker(jq_hub_t *h, entry_t *e)
{
    if (!e->w)
        return;
    unlink_sending(h, e);
    *e->wpprev = e->wnext;
    if (e->wnext)
        e->wnext->wpprev = e->wpprev;
    e->w->busy--;
    e->w = NULL;
    STAT_SUB(h, leases, 1);
    atomic_fetch_sub(&h->running, 1);
}

static void free_entry(jq_hub_t *h, entry_t **ep)
{
    entry_t *e = *ep;
    timer_set(h, &e->t, INT64_MAX);
    if (e->state == E_WAITING) {
        if (!e->backing_off)
            jq_heap_remove(&e->q->waiting, e->qindex);
        STAT_SUB(h, waiting, 1);
    }
    unlink_worker(h, e);
    unindex_entry(h, e);
    free(e->msg);
    free(e);
    *ep = NULL;
}

/* End e's opcode (the job leaves the hub) and forget e. */
static void end_entry(jq_hub_t *h, entry_t *e, bool cancel, bool success, jq_blob_t *result,
                      const char *error)
{
    jq_shard_t *sh;
    jq_job_t *job = lock_current(h, e, &sh);
    if (job) {
        jq_job_end_op(h->d->sched, sh, job, cancel, success, result, error);
    } else {
        /* Gone from the table or moved on: nothing of ours to end. */
        jq_sched_done(h->d->sched, e->job, JQ_ERROR);
    }
    free_entry(h, &e);
}

static void dispatch_queue(jq_hub_t *h, opq_t *q);

/* e waits (again) for a worker: in its queue, or backing off until at. */
static void wait_again(jq_hub_t *h, entry_t *e, int64_t not_before)
{
    e->state = E_WAITING;
    e->timed_out = false;
    STAT_ADD(h, waiting, 1);
    if (not_before > jq_now_mono()) {
        e->backing_off = true;
        timer_set(h, &e->t, not_before);
        return;
    }
    e->backing_off = false;
    timer_set(h, &e->t, INT64_MAX);
    if (jq_heap_push(&e->q->waiting, e) < 0) { /* out of memory: try again in a second */
        e->backing_off = true;
        timer_set(h, &e->t, jq_now_mono() + 1000000);
    }
}

/* Take a lease from its worker: the opcode goes back to the queue as its
 * next attempt (`retried`: a lost worker's, counted against `retry`) with
 * a log entry saying why, or, when it has no retry left (or is being
 * canceled), ends: error with `why`, or canceled. */
static void take_back(jq_hub_t *h, entry_t *e, bool retried, const char *why)
{
    if (e->state == E_SENDING)
        retried = false; /* the worker never saw it: no retry is spent */
    jq_shard_t *sh;
    jq_job_t *job = lock_current(h, e, &sh);
    if (!job) {
        jq_sched_done(h->d->sched, e->job, JQ_ERROR);
        free_entry(h, &e);
        return;
    }
    jq_op_t *op = &job->ops[e->op];
    bool canceling = op->status == JQ_CANCELING;
    char last[160];
    const char *end_why = why;
    if (e->timed_out) { /* its time was up: that is how it ends */
        snprintf(last, sizeof last, "timed out after %.3g s (then: %s)",
                 (double)e->timeout_us / 1e6, why);
        end_why = last;
    } else if (op->attempt >= JQ_WORKER_MAX_ATTEMPTS) {
        snprintf(last, sizeof last, "%s, after %u attempts: no more", why, op->attempt);
        end_why = last;
    }
    if (canceling || end_why != why || op->status != JQ_RUNNING || op->attempt != e->attempt ||
        (retried && op->retries >= op->retry)) {
        jq_job_end_op(h->d->sched, sh, job, canceling, false, NULL, end_why);
        free_entry(h, &e);
        return;
    }
    int64_t now = jq_now_wall();
    jq_delta_t d;
    jq_delta_init(&d, job);
    jq_job_op_unassign(job, retried, &d);
    char msg[512];
    if (retried)
        snprintf(msg, sizeof msg, "%s; retry %u of %u", why, op->retries, op->retry);
    else
        snprintf(msg, sizeof msg, "%s; the opcode goes back to the queue", why);
    uint32_t max_log = (uint32_t)atomic_load(&h->d->cfg.max_log_entries);
    jq_job_log(job, now, "retry", msg, strlen(msg), max_log, &d);
    int64_t backoff = retried ? op->backoff_us : 0;
    jq_shard_emit(sh, job, &d, JQ_CHANGE_UPDATE, now);
    jq_shard_wrunlock(sh);
    if (retried)
        STAT_ADD(h, retries, 1);
    unlink_worker(h, e);
    timer_set(h, &e->t, INT64_MAX);
    wait_again(h, e, jq_now_mono() + backoff);
}

typedef enum { A_SENT, A_GONE, A_LATER } assign_t;

/* Hand e to worker w: its opcode goes running (attempt + 1) and the
 * assignment goes out once that is committed. A_GONE: the job is no
 * longer there to run (ended here, e freed); A_LATER: it could not be
 * recorded (out of memory), e is not queued anywhere. */
static assign_t assign(jq_hub_t *h, entry_t *e, session_t *w)
{
    jq_shard_t *sh;
    jq_job_t *job = lock_current(h, e, &sh);
    if (!job) {
        jq_sched_done(h->d->sched, e->job, JQ_ERROR);
        free_entry(h, &e);
        return A_GONE;
    }
    jq_op_t *op = &job->ops[e->op];
    if (op->status != JQ_QUEUED && op->status != JQ_WAITING) { /* canceling: end it now */
        jq_job_end_op(h->d->sched, sh, job, op->status == JQ_CANCELING, false, NULL,
                      "the opcode was not waiting for a worker");
        free_entry(h, &e);
        return A_GONE;
    }
    int64_t now = jq_now_wall();
    jq_delta_t d;
    jq_delta_init(&d, job);
    if (jq_job_pickup(job, now, &d) < 0 || jq_job_op_assign(job, now, w->label, &d) < 0 ||
        jq_shard_emit(sh, job, &d, JQ_CHANGE_UPDATE, now) < 0) {
        jq_shard_wrunlock(sh);
        return A_LATER;
    }
    e->attempt = op->attempt;
    e->prio = op->priority;
    e->timeout_us = op->timeout_us ? op->timeout_us : op->def ? op->def->timeout_us : 0;
    /* The message is built under the lock from the job's own bytes (the
     * arguments are copied, never re-encoded); it goes out later. */
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    pack_head(&pk, 7, "assign");
    pack_lease(&pk, e->job, e->op, e->attempt);
    wire_pack_cstr(&pk, "opcode");
    wire_pack_cstr(&pk, jq_op_name(op));
    wire_pack_cstr(&pk, "args");
    if (op->args.data)
        msgpack_sbuffer_write(&sb, op->args.data, op->args.len);
    else
        msgpack_pack_map(&pk, 0);
    wire_pack_cstr(&pk, "priority");
    msgpack_pack_int(&pk, op->priority);
    wire_pack_cstr(&pk, "timeout");
    if (e->timeout_us)
        msgpack_pack_double(&pk, (double)e->timeout_us / 1e6);
    else
        msgpack_pack_nil(&pk);
    jq_shard_wrunlock(sh); /* hands the record to the store: the ticket covers it */
    e->ticket = jq_store_ticket(h->d->store);
    e->msg = sb.data;
    e->msglen = sb.size;
    e->state = E_SENDING;
    link_lease(h, e, w);
    w->last_assign = ++h->assign_counter;
    e->snext = NULL;
    e->queued = true;
    *h->sending_tail = e;
    h->sending_tail = &e->snext;
    STAT_ADD(h, assigned, 1);
    return A_SENT;
}

/* The server of q with room that waited longest since its last
 * assignment; NULL when none has room. */
static session_t *pick_server(opq_t *q)
{
    session_t *best = NULL;
    for (size_t i = 0; i < q->nservers; i++) {
        session_t *w = q->servers[i];
        if (w->busy < w->capacity && (!best || w->last_assign < best->last_assign))
            best = w;
    }
    return best;
}

static void dispatch_queue(jq_hub_t *h, opq_t *q)
{
    while (!h->paused && jq_heap_size(&q->waiting)) {
        session_t *w = pick_server(q);
        if (!w)
            return;
        entry_t *e = jq_heap_pop(&q->waiting);
        STAT_SUB(h, waiting, 1);
        e->state = E_SENDING; /* not waiting: assign sets the rest */
        if (assign(h, e, w) == A_LATER) {
            /* Could not be recorded: back in line a little later. */
            wait_again(h, e, jq_now_mono() + 100000);
            return;
        }
    }
}

/* A worker has room again: its opcodes' queues, taking turns so that one
 * busy opcode does not keep the worker from the others. */
static void dispatch_worker(jq_hub_t *h, session_t *w)
{
    for (unsigned k = 0; k < w->nops && w->busy < w->capacity; k++) {
        opq_t *q = w->ops[(w->next_op + k) % w->nops];
        dispatch_queue(h, q);
    }
    if (w->nops)
        w->next_op = (w->next_op + 1) % w->nops;
}

/* ---- sessions come and go ---- */

static void session_timer(jq_hub_t *h, session_t *w)
{
    int64_t a = w->heard + lease_us(h), b = w->sent + heartbeat_us(h);
    timer_set(h, &w->t, a < b ? a : b);
}

/* Forget w: every lease is taken back (retried when `lost` and allowed,
 * else ended with why), then w leaves its queues. */
static void drop_session(jq_hub_t *h, session_t *w, bool lost, const char *why)
{
    while (w->leases)
        take_back(h, w->leases, lost, why);
    for (unsigned i = 0; i < w->nops; i++) {
        opq_t *q = w->ops[i];
        for (size_t k = 0; k < q->nservers; k++)
            if (q->servers[k] == w) {
                q->servers[k] = q->servers[--q->nservers];
                break;
            }
    }
    for (session_t **pp = &h->sessions[rid_bucket(h, w->rid, w->ridlen)]; *pp;
         pp = &(*pp)->hnext)
        if (*pp == w) {
            *pp = w->hnext;
            break;
        }
    timer_set(h, &w->t, INT64_MAX);
    STAT_SUB(h, connected, 1);
    STAT_SUB(h, capacity, w->capacity);
    free(w->ops);
    free(w);
}

static void redispatch_all(jq_hub_t *h)
{
    for (opq_t *q = h->queues; q; q = q->next)
        dispatch_queue(h, q);
}

/* ---- inbox (any thread) ---- */

static void inbox_push(jq_hub_t *h, uint64_t id, inkind_t kind, int prio)
{
    pthread_mutex_lock(&h->in_mu);
    if (h->nin == h->capin) {
        size_t cap = h->capin ? h->capin * 2 : 64;
        inmsg_t *grown = realloc(h->in, cap * sizeof *grown);
        if (!grown) {
            /* Out of memory: the job stays with the hub's scheduler record
             * and is found again at the next restart. */
            pthread_mutex_unlock(&h->in_mu);
            jq_log(JQ_LOG_ERROR, "out of memory: job %llu could not reach the worker hub",
                   (unsigned long long)id);
            return;
        }
        h->in = grown;
        h->capin = cap;
    }
    bool was_empty = h->nin == 0;
    h->in[h->nin++] = (inmsg_t){.id = id, .kind = (uint8_t)kind, .prio = (int8_t)prio};
    pthread_mutex_unlock(&h->in_mu);
    if (was_empty) {
        uint64_t one = 1;
        ssize_t n = write(h->efd, &one, sizeof one);
        (void)n; /* the counter cannot overflow in practice; a failed
                    write leaves it readable anyway */
    }
}

static void hook_offer(void *ctx, uint64_t id) { inbox_push(ctx, id, IN_OFFER, 0); }
static void hook_kick(void *ctx, uint64_t id) { inbox_push(ctx, id, IN_KICK, 0); }
static void hook_reprio(void *ctx, uint64_t id, int prio) { inbox_push(ctx, id, IN_REPRIO, prio); }

int jq_hub_inbox_fd(jq_hub_t *h) { return h->efd; }

/* A job's current opcode waits for a worker: read what the queue needs. */
static void on_offer(jq_hub_t *h, uint64_t id)
{
    if (find_entry(h, id))
        return; /* already here (cannot happen: one offer per hand-over) */
    char name[JOBQ_MAX_OP_NAME + 1] = "";
    int prio = 0;
    uint32_t opi = 0;
    bool ok = false;
    jq_shard_t *sh = jq_table_shard_for(h->d->table, id);
    jq_shard_rdlock(sh);
    jq_job_t *job = jq_shard_find(sh, id);
    bool final = job && jq_status_final((jq_status_t)job->status);
    jq_status_t final_status = job ? (jq_status_t)job->status : JQ_ERROR;
    if (job && !final && (opi = jq_job_current_op(job)) < job->nops &&
        (job->ops[opi].status == JQ_QUEUED || job->ops[opi].status == JQ_WAITING)) {
        snprintf(name, sizeof name, "%s", jq_op_name(&job->ops[opi]));
        prio = job->ops[opi].priority;
        ok = true;
    }
    jq_shard_rdunlock(sh);
    if (final) { /* canceled between its executor's check and the hand-over */
        jq_sched_done(h->d->sched, id, final_status);
        return;
    }
    opq_t *q = ok ? get_queue(h, name) : NULL;
    entry_t *e = q ? calloc(1, sizeof *e) : NULL;
    if (!e) {
        jq_log(JQ_LOG_ERROR, "job %llu: %s", (unsigned long long)id,
               ok ? "out of memory in the worker hub" : "gone before a worker was found");
        jq_sched_done(h->d->sched, id, JQ_ERROR);
        return;
    }
    e->t = (htimer_t){.at = INT64_MAX, .kind = T_ENTRY};
    e->job = id;
    e->op = opi;
    e->prio = (int8_t)prio;
    e->q = q;
    index_entry(h, e);
    wait_again(h, e, 0);
    dispatch_queue(h, q);
}

int jq_hub_adopt(jq_hub_t *h, uint64_t job, uint32_t op, uint16_t attempt, const char *opcode,
                 int prio, int64_t timeout_us)
{
    opq_t *q = get_queue(h, opcode);
    entry_t *e = q ? calloc(1, sizeof *e) : NULL;
    if (!e)
        return -1;
    e->t = (htimer_t){.at = INT64_MAX, .kind = T_ENTRY};
    e->job = job;
    e->op = op;
    e->attempt = attempt;
    e->prio = (int8_t)prio;
    e->q = q;
    e->state = E_RUNNING;
    e->orphan = true;
    e->timeout_us = timeout_us;
    index_entry(h, e);
    /* Its worker notices the old leader is gone after a lease time of
     * silence and says hello here with it (docs/protocol.md, "Failover");
     * the old leader may have died before this one was elected, so the
     * wait is twice that. */
    timer_set(h, &e->t, jq_now_mono() + 2 * lease_us(h));
    return 0;
}

/* hello's `leases`: attempts this worker still runs that the hub holds as
 * orphans become its leases again. Packs the adopted ones (an array). */
static void adopt_leases(jq_hub_t *h, session_t *w, const msgpack_object *leases,
                         msgpack_packer *pk)
{
    entry_t *found[JQ_WORKER_MAX_CAPACITY];
    uint32_t n = 0;
    for (uint32_t i = 0; leases && leases->type == MSGPACK_OBJECT_ARRAY &&
                         i < leases->via.array.size && n < JQ_WORKER_MAX_CAPACITY; i++) {
        const msgpack_object *l = &leases->via.array.ptr[i];
        int64_t job, op, attempt;
        if (l->type != MSGPACK_OBJECT_ARRAY || l->via.array.size != 3 ||
            !wire_get_int(&l->via.array.ptr[0], &job) || !wire_get_int(&l->via.array.ptr[1], &op) ||
            !wire_get_int(&l->via.array.ptr[2], &attempt) || job <= 0)
            continue;
        entry_t *e = find_entry(h, (uint64_t)job);
        bool serves = false;
        for (unsigned k = 0; e && k < w->nops; k++)
            serves |= w->ops[k] == e->q;
        if (!e || !e->orphan || !serves || e->op != (uint64_t)op || e->attempt != attempt)
            continue;
        e->orphan = false;
        link_lease(h, e, w);
        timer_set(h, &e->t, e->timeout_us ? jq_now_mono() + e->timeout_us : INT64_MAX);
        found[n++] = e;
    }
    msgpack_pack_array(pk, n);
    for (uint32_t i = 0; i < n; i++) {
        msgpack_pack_array(pk, 3);
        msgpack_pack_uint64(pk, found[i]->job);
        msgpack_pack_uint32(pk, found[i]->op);
        msgpack_pack_uint16(pk, found[i]->attempt);
    }
}

/* A cancel of a job the hub holds. */
static void on_kick(jq_hub_t *h, uint64_t id)
{
    entry_t *e = find_entry(h, id);
    if (!e)
        return;
    switch ((estate_t)e->state) {
    case E_WAITING:
        end_entry(h, e, true, false, NULL, NULL);
        break;
    case E_SENDING: { /* never sent: the worker never hears of it */
        session_t *w = e->w;
        end_entry(h, e, true, false, NULL, NULL);
        dispatch_worker(h, w);
        break;
    }
    case E_RUNNING:
        if (e->orphan) { /* nobody to tell: a worker bringing it back is told to stop */
            end_entry(h, e, true, false, NULL, NULL);
            break;
        }
        /* The worker is told once the `canceling` change is committed (it
         * is with the store now: the ticket covers it), like any state a
         * peer is shown. */
        e->state = E_STOPPING;
        e->ticket = jq_store_ticket(h->d->store);
        e->snext = NULL;
        e->queued = true;
        *h->sending_tail = e;
        h->sending_tail = &e->snext;
        timer_set(h, &e->t, jq_now_mono() + JQ_WORKER_STOP_GRACE_US);
        STAT_ADD(h, cancels, 1);
        break;
    case E_STOPPING:
        break; /* already told to stop; ends canceled (the op is canceling) */
    }
}

/* A waiting opcode's priority changed: its place in the queue follows
 * (Ganeti's order: it keeps its place by id among its new peers). */
static void on_reprio(jq_hub_t *h, uint64_t id, int prio)
{
    entry_t *e = find_entry(h, id);
    if (!e || e->prio == prio)
        return;
    e->prio = (int8_t)prio;
    if (e->state == E_WAITING && !e->backing_off)
        jq_heap_fix(&e->q->waiting, e->qindex);
}

void jq_hub_on_inbox(jq_hub_t *h)
{
    uint64_t v;
    ssize_t n = read(h->efd, &v, sizeof v);
    (void)n;
    h->snap_dirty = true;
    pthread_mutex_lock(&h->in_mu);
    /* Swap the buffers: producers never wait for the work below. */
    inmsg_t *batch = h->in;
    size_t count = h->nin, cap = h->capin;
    h->in = h->in_spare;
    h->capin = h->capspare;
    h->nin = 0;
    pthread_mutex_unlock(&h->in_mu);
    for (size_t i = 0; i < count; i++) {
        if (batch[i].kind == IN_KICK)
            on_kick(h, batch[i].id);
        else if (batch[i].kind == IN_REPRIO)
            on_reprio(h, batch[i].id, batch[i].prio);
        else
            on_offer(h, batch[i].id);
    }
    /* A kick's change may be committed (and its notice read) already: what
     * it queued goes out now rather than at the next commit. */
    jq_hub_on_durable(h, jq_store_durable(h->d->store));
    pthread_mutex_lock(&h->in_mu);
    h->in_spare = batch; /* the buffer it came in serves the next swap */
    h->capspare = cap;
    pthread_mutex_unlock(&h->in_mu);
}

/* ---- worker messages ---- */

/* The lease a message names; ->set false when it names none. */
static lease_ref_t lease_of(const msgpack_object *m)
{
    lease_ref_t l = {0};
    int64_t j, o, a;
    if (!wire_get_int(wire_map_get(m, "job"), &j) || j <= 0 ||
        !wire_get_int(wire_map_get(m, "op"), &o) || o < 0 || o >= JOBQ_MAX_OPS_PER_JOB ||
        !wire_get_int(wire_map_get(m, "attempt"), &a) || a <= 0 || a > UINT16_MAX)
        return l;
    return (lease_ref_t){.job = (uint64_t)j, .op = (uint32_t)o, .attempt = (uint16_t)a,
                         .set = true};
}

/* The lease the message names when w holds it and the worker knows of it;
 * otherwise w is told it is gone (revoke) and NULL. */
static entry_t *held_lease(jq_hub_t *h, session_t *w, const msgpack_object *m)
{
    lease_ref_t l = lease_of(m);
    if (!l.set) {
        send_error(h, w->rid, w->ridlen, JOBQ_ERR_BAD_ARGUMENT,
                   "'job', 'op' and 'attempt' must name a lease (positive integers)");
        return NULL;
    }
    entry_t *e = find_entry(h, l.job);
    if (e && e->w == w && e->op == l.op && e->attempt == l.attempt &&
        (e->state == E_RUNNING || e->state == E_STOPPING))
        return e;
    send_lease_msg(h, w, "revoke", l.job, l.op, l.attempt,
                   "this worker does not hold that lease (ended, handed to another worker, "
                   "or never assigned)");
    STAT_ADD(h, refused, 1);
    return NULL;
}

static void on_feedback(jq_hub_t *h, session_t *w, const msgpack_object *m)
{
    lease_ref_t l = lease_of(m);
    const msgpack_object *entries = wire_map_get(m, "entries");
    if (!entries || entries->type != MSGPACK_OBJECT_ARRAY || entries->via.array.size == 0 ||
        entries->via.array.size > JQ_WORKER_MAX_ENTRIES) {
        send_error_about(h, w->rid, w->ridlen, &l, JOBQ_ERR_BAD_ARGUMENT,
                         "feedback: 'entries' must be a list of 1 to 1000 [type, message] pairs");
        return;
    }
    for (uint32_t i = 0; i < entries->via.array.size; i++) {
        const msgpack_object *p = &entries->via.array.ptr[i];
        if (p->type != MSGPACK_OBJECT_ARRAY || p->via.array.size != 2 ||
            p->via.array.ptr[0].type != MSGPACK_OBJECT_STR ||
            p->via.array.ptr[0].via.str.size == 0 ||
            p->via.array.ptr[0].via.str.size > JQ_WORKER_MAX_TYPE ||
            p->via.array.ptr[1].type != MSGPACK_OBJECT_STR ||
            p->via.array.ptr[1].via.str.size > JOBQ_MAX_LOG_MESSAGE) {
            char err[160];
            snprintf(err, sizeof err, "feedback: entry %u is not [type, message] (strings of "
                                      "1 to %d and at most %d bytes)", i, JQ_WORKER_MAX_TYPE,
                     JOBQ_MAX_LOG_MESSAGE);
            send_error_about(h, w->rid, w->ridlen, &l, JOBQ_ERR_BAD_ARGUMENT, err);
            return;
        }
    }
    entry_t *e = held_lease(h, w, m);
    if (!e)
        return;
    jq_shard_t *sh;
    jq_job_t *job = lock_current(h, e, &sh);
    if (!job)
        return;
    jq_op_t *op = &job->ops[e->op];
    /* Kept while canceling too: what a handler says as it stops is part
     * of its story. */
    if ((op->status != JQ_RUNNING && op->status != JQ_CANCELING) || op->attempt != e->attempt) {
        jq_shard_wrunlock(sh);
        return;
    }
    int64_t now = jq_now_wall();
    jq_delta_t d;
    jq_delta_init(&d, job);
    uint32_t max_log = (uint32_t)atomic_load(&h->d->cfg.max_log_entries);
    bool added = false;
    for (uint32_t i = 0; i < entries->via.array.size; i++) {
        const msgpack_object *p = entries->via.array.ptr[i].via.array.ptr;
        char type[JQ_WORKER_MAX_TYPE + 1];
        snprintf(type, sizeof type, "%.*s", (int)p[0].via.str.size, p[0].via.str.ptr);
        if (jq_job_log(job, now, type, p[1].via.str.ptr, p[1].via.str.size, max_log, &d) == 0)
            added = true;
    }
    if (added)
        jq_shard_emit(sh, job, &d, JQ_CHANGE_UPDATE, now);
    jq_shard_wrunlock(sh);
}

/* A done: the opcode ends. too_large (bytes, or 0) says the message was
 * over the request limit: the opcode fails, saying so. */
static void on_done(jq_hub_t *h, session_t *w, const msgpack_object *m, size_t too_large)
{
    lease_ref_t l = lease_of(m);
    const msgpack_object *ok = wire_map_get(m, "ok");
    if (!too_large && (!ok || ok->type != MSGPACK_OBJECT_BOOLEAN)) {
        send_error_about(h, w->rid, w->ridlen, &l, JOBQ_ERR_BAD_ARGUMENT,
                         "done: 'ok' must be a bool");
        return;
    }
    const msgpack_object *error = wire_map_get(m, "error");
    if (!too_large && !ok->via.boolean && error && error->type != MSGPACK_OBJECT_STR &&
        error->type != MSGPACK_OBJECT_NIL) {
        send_error_about(h, w->rid, w->ridlen, &l, JOBQ_ERR_BAD_ARGUMENT,
                         "done: 'error' must be a string");
        return;
    }
    entry_t *e = held_lease(h, w, m);
    if (!e)
        return;
    char msg[JOBQ_MAX_LOG_MESSAGE + 64];
    jq_blob_t result = {0};
    bool success = !too_large && ok->via.boolean && !e->timed_out;
    if (too_large) {
        snprintf(msg, sizeof msg, "the worker's answer was too large: %zu bytes, above "
                                  "--max-request-bytes (%zu)", too_large,
                 (size_t)atomic_load(&h->d->cfg.max_request_bytes));
        send_error_about(h, w->rid, w->ridlen, &l, JOBQ_ERR_TOO_LARGE, msg);
    } else if (e->timed_out) {
        snprintf(msg, sizeof msg, "timed out after %.3g s", (double)e->timeout_us / 1e6);
        STAT_ADD(h, timeouts, 1);
    } else if (!ok->via.boolean) {
        if (error && error->type == MSGPACK_OBJECT_STR)
            snprintf(msg, sizeof msg, "%.*s",
                     wire_utf8_quote_len(error->via.str.ptr, error->via.str.size,
                                         JOBQ_MAX_LOG_MESSAGE),
                     error->via.str.ptr);
        else
            snprintf(msg, sizeof msg, "the worker reported a failure without a message");
    } else if (jq_blob_pack_object(&result, wire_map_get(m, "result")) < 0) {
        success = false;
        snprintf(msg, sizeof msg, "out of memory: the result could not be kept");
    }
    STAT_ADD(h, completed, 1);
    if (!success)
        STAT_ADD(h, failed, 1);
    end_entry(h, e, false, success, &result, msg);
    jq_blob_free(&result);
    dispatch_worker(h, w);
}

/* A hello: register (or re-register) the sender as a worker. */
static void on_hello(jq_hub_t *h, const unsigned char *rid, size_t ridlen,
                     const msgpack_object *m, int64_t now)
{
    char err[512];
    const msgpack_object *name = wire_map_get(m, "name");
    const msgpack_object *ops = wire_map_get(m, "opcodes");
    const msgpack_object *cap = wire_map_get(m, "capacity");
    int64_t capacity = 1;
    if (name && name->type != MSGPACK_OBJECT_NIL &&
        (name->type != MSGPACK_OBJECT_STR || name->via.str.size > JOBQ_MAX_OP_NAME)) {
        send_error(h, rid, ridlen, JOBQ_ERR_BAD_ARGUMENT,
                   "hello: 'name' must be a string of at most 64 bytes");
        return;
    }
    if (cap && cap->type != MSGPACK_OBJECT_NIL &&
        (!wire_get_int(cap, &capacity) || capacity < 1 || capacity > JQ_WORKER_MAX_CAPACITY)) {
        send_error(h, rid, ridlen, JOBQ_ERR_BAD_ARGUMENT,
                   "hello: 'capacity' must be an integer from 1 to 1024");
        return;
    }
    if (!ops || ops->type != MSGPACK_OBJECT_ARRAY || ops->via.array.size == 0 ||
        ops->via.array.size > JQ_WORKER_MAX_OPCODES) {
        send_error(h, rid, ridlen, JOBQ_ERR_BAD_ARGUMENT,
                   "hello: 'opcodes' must be a list of 1 to 256 opcode declarations");
        return;
    }
    /* Every declaration first: a bad one refuses the hello and declares
     * nothing more (those before it stay declared: they were valid). */
    jq_opreg_t *reg = h->d->opset.reg;
    const jq_opset_t builtins = {h->d->opset.defs, h->d->opset.count, NULL};
    bool changed = false;
    opq_t **queues = calloc(ops->via.array.size, sizeof *queues);
    if (!queues) {
        send_error(h, rid, ridlen, JOBQ_ERR_INTERNAL, "out of memory");
        return;
    }
    unsigned nq = 0;
    for (uint32_t i = 0; i < ops->via.array.size; i++) {
        const jq_opdef_t *def;
        bool ch;
        if (jq_opreg_declare(reg, &builtins, &ops->via.array.ptr[i], &def, &ch, err,
                             sizeof err) < 0) {
            char msg[600];
            snprintf(msg, sizeof msg, "hello: opcode %u: %s", i, err);
            send_error(h, rid, ridlen, JOBQ_ERR_BAD_ARGUMENT, msg);
            free(queues);
            goto persist;
        }
        changed |= ch;
        opq_t *q = get_queue(h, def->name);
        bool dup = false;
        for (unsigned k = 0; k < nq; k++)
            dup |= queues[k] == q;
        if (!q) {
            send_error(h, rid, ridlen, JOBQ_ERR_INTERNAL, "out of memory");
            free(queues);
            goto persist;
        }
        if (!dup)
            queues[nq++] = q;
    }
    /* A connection that says hello again is a new worker. */
    session_t *old = find_session(h, rid, ridlen);
    bool dropped = old != NULL;
    if (old)
        drop_session(h, old, false, "the worker said hello again");
    session_t *w = calloc(1, sizeof *w);
    for (unsigned k = 0; w && k < nq; k++) {
        opq_t *q = queues[k];
        if (q->nservers == q->capservers) {
            size_t c = q->capservers ? q->capservers * 2 : 4;
            session_t **g = realloc(q->servers, c * sizeof *g);
            if (!g) {
                for (unsigned j = 0; j < k; j++) /* undo */
                    queues[j]->nservers--;
                free(w);
                w = NULL;
                break;
            }
            q->servers = g;
            q->capservers = c;
        }
        q->servers[q->nservers++] = w;
    }
    if (!w) {
        send_error(h, rid, ridlen, JOBQ_ERR_INTERNAL, "out of memory");
        free(queues);
        goto persist;
    }
    w->t = (htimer_t){.at = INT64_MAX, .kind = T_SESSION};
    w->id = ++h->next_id;
    if (name && name->type == MSGPACK_OBJECT_STR && name->via.str.size)
        snprintf(w->name, sizeof w->name, "%.*s", (int)name->via.str.size, name->via.str.ptr);
    else
        snprintf(w->name, sizeof w->name, "worker");
    snprintf(w->label, sizeof w->label, "%s#%llu", w->name, (unsigned long long)w->id);
    w->capacity = (unsigned)capacity;
    memcpy(w->rid, rid, ridlen);
    w->ridlen = ridlen;
    w->heard = now;
    w->since = jq_now_wall();
    w->ops = queues;
    w->nops = nq;
    size_t b = rid_bucket(h, rid, ridlen);
    w->hnext = h->sessions[b];
    h->sessions[b] = w;
    STAT_ADD(h, connected, 1);
    STAT_ADD(h, capacity, w->capacity);
    STAT_ADD(h, hellos, 1);
    const msgpack_object *leases = wire_map_get(m, "leases");
    bool resume = leases && leases->type != MSGPACK_OBJECT_NIL;
    msgpack_packer pk;
    start(h, &pk);
    pack_head(&pk, resume ? 4 : 3, "welcome");
    wire_pack_cstr(&pk, "worker");
    msgpack_pack_uint64(&pk, w->id);
    wire_pack_cstr(&pk, "heartbeat");
    msgpack_pack_double(&pk, h->d->cfg.worker_heartbeat);
    wire_pack_cstr(&pk, "lease");
    msgpack_pack_double(&pk, h->d->cfg.worker_lease);
    if (resume) { /* what it still runs that this daemon waited for */
        wire_pack_cstr(&pk, "resumed");
        adopt_leases(h, w, leases, &pk);
    }
    send_to(h, w);
    session_timer(h, w);
    jq_log(JQ_LOG_DEBUG, "worker %s connected: %u opcodes, capacity %u", w->label, nq,
           w->capacity);
    if (dropped)
        redispatch_all(h); /* what the old session held may go anywhere */
    else
        dispatch_worker(h, w);
persist:
    if (changed) { /* remembered across restarts (docs/protocol.md) */
        msgpack_sbuffer sb;
        msgpack_sbuffer_init(&sb);
        if (jq_opreg_encode(reg, &sb) < 0 || jq_store_set_opcodes(h->d->store, sb.data, sb.size) < 0)
            jq_log(JQ_LOG_ERROR, "out of memory: the worker opcodes could not be stored");
        msgpack_sbuffer_destroy(&sb);
    }
}

void jq_hub_on_message(jq_hub_t *h, const unsigned char *rid, size_t ridlen, const char *body,
                       size_t len)
{
    int64_t now = jq_now_mono();
    h->snap_dirty = true;
    jq_scan_limits_t limits = {.max_depth = MSGPACK_EMBED_STACK_SIZE, .check_utf8 = true};
    jq_scan_result_t sr;
    if (!jq_scan(body, len, &limits, &sr)) {
        send_error(h, rid, ridlen, JOBQ_ERR_MALFORMED, "a worker message is one msgpack map");
        return;
    }
    /* Over the limit (but under the socket's, 4 times it, and scanned): it
     * is read only to learn which lease it was about, and refused. */
    size_t too_large = len > atomic_load(&h->d->cfg.max_request_bytes) ? len : 0;
    msgpack_unpacked up;
    msgpack_unpacked_init(&up);
    if (msgpack_unpack_next(&up, body, len, NULL) != MSGPACK_UNPACK_SUCCESS ||
        up.data.type != MSGPACK_OBJECT_MAP) {
        send_error(h, rid, ridlen, JOBQ_ERR_MALFORMED, "a worker message is a msgpack map");
        goto out;
    }
    const msgpack_object *m = &up.data, *type = wire_map_get(m, "type");
    int64_t v;
    if (!wire_get_int(wire_map_get(m, "v"), &v) || v != JOBQ_PROTOCOL_VERSION) {
        send_error(h, rid, ridlen, JOBQ_ERR_VERSION, "this jobqd speaks worker protocol 1 ('v': 1)");
        goto out;
    }
    if (!type || type->type != MSGPACK_OBJECT_STR) {
        send_error(h, rid, ridlen, JOBQ_ERR_MALFORMED, "a worker message needs a 'type'");
        goto out;
    }
    if (too_large && !wire_str_eq(type, "done")) {
        /* Refused, and nothing of it is done: it still says the worker
         * is alive. */
        lease_ref_t l = lease_of(m);
        send_error_about(h, rid, ridlen, &l, JOBQ_ERR_TOO_LARGE,
                         "a worker message above --max-request-bytes is refused");
        session_t *known = find_session(h, rid, ridlen);
        if (known) {
            known->heard = now;
            session_timer(h, known);
        }
        goto out;
    } else if (wire_str_eq(type, "hello") && h->d->cluster &&
               !jq_cluster_leading(h->d->cluster)) {
        /* Only the leader hands out work: the error says where it is. */
        msgpack_packer pk;
        start(h, &pk);
        pack_head(&pk, 3, "error");
        wire_pack_cstr(&pk, "code");
        wire_pack_cstr(&pk, jobq_code_name(JOBQ_ERR_NOT_LEADER));
        wire_pack_cstr(&pk, "message");
        wire_pack_cstr(&pk, "this node does not lead the cluster: say hello to the leader");
        wire_pack_cstr(&pk, "leader");
        jq_cluster_pack_leader(h->d->cluster, &pk);
        send_raw(h, rid, ridlen);
        STAT_ADD(h, refused, 1);
        goto out;
    } else if (wire_str_eq(type, "hello")) {
        on_hello(h, rid, ridlen, m, now);
        goto out;
    }
    session_t *w = find_session(h, rid, ridlen);
    if (!w) {
        if (!wire_str_eq(type, "disconnect"))
            send_disconnect(h, rid, ridlen, "this jobqd does not know this worker: say hello");
        goto out;
    }
    w->heard = now;
    if (wire_str_eq(type, "heartbeat")) {
        /* heard: nothing more */
    } else if (wire_str_eq(type, "feedback")) {
        on_feedback(h, w, m);
    } else if (wire_str_eq(type, "done")) {
        on_done(h, w, m, too_large);
    } else if (wire_str_eq(type, "disconnect")) {
        char why[160];
        snprintf(why, sizeof why, "worker %s disconnected", w->label);
        jq_log(JQ_LOG_DEBUG, "%s", why);
        drop_session(h, w, false, why);
        redispatch_all(h);
        goto out;
    } else {
        send_error(h, rid, ridlen, JOBQ_ERR_UNKNOWN_METHOD,
                   "unknown worker message type (hello, heartbeat, feedback, done, disconnect)");
    }
    session_timer(h, w);
out:
    msgpack_unpacked_destroy(&up);
}

/* A CURVE worker endpoint takes worker keys only: a client key (which
 * zauth let in, as every authorized key) is refused, once per message,
 * and nothing it says is done. */
static bool worker_key(jq_hub_t *h, unsigned idx, zmq_msg_t *body, const unsigned char *rid,
                       size_t ridlen)
{
    if (!h->curve[idx])
        return true;
    /* The role from the daemon's copy of the key (auth.h), never from the
     * message's properties, which the peer may fill in. */
    const char *key = zmq_msg_gets(body, "User-Id");
    int role = -1;
    char name[65] = "";
    if (jq_auth_identity(h->d->auth, key, &role, name, sizeof name) == 0 &&
        role == JQ_ROLE_WORKER)
        return true;
    STAT_ADD(h, refused, 1);
    atomic_fetch_add(&h->d->errors[JOBQ_ERR_PERMISSION_DENIED], 1);
    int64_t now = jq_now_mono();
    if (now - h->denied_logged >= 60 * 1000000ll || !h->denied_logged) { /* once a minute */
        h->denied_logged = now;
        jq_log(JQ_LOG_WARNING, "refused a worker message from key '%s' (role %s): the worker "
                               "endpoint takes keys of role worker only",
               *name ? name : key ? key : "?",
               role < 0 ? "none: not authorized any more" : jq_role_name((jq_role_t)role));
    }
    send_error(h, rid, ridlen, JOBQ_ERR_PERMISSION_DENIED,
               "this key's role is not worker: the worker endpoint takes worker keys only");
    return false;
}

void jq_hub_on_readable(jq_hub_t *h)
{
    zmq_msg_t rid, body;
    zmq_msg_init(&rid);
    zmq_msg_init(&body);
    unsigned char full[MAX_RID];
    for (unsigned idx = 0; idx < h->nrouters; idx++) {
        void *router = h->routers[idx];
        for (int k = 0; router && k < 256; k++) {
            if (zmq_msg_recv(&rid, router, ZMQ_DONTWAIT) < 0)
                break;
            bool ok = zmq_msg_more(&rid) && zmq_msg_recv(&body, router, 0) >= 0 &&
                      !zmq_msg_more(&body) && zmq_msg_size(&rid) < MAX_RID;
            if (!ok) {
                while (zmq_msg_more(&body) && zmq_msg_recv(&body, router, 0) >= 0)
                    ;
                STAT_ADD(h, refused, 1);
                continue;
            }
            full[0] = (unsigned char)idx;
            memcpy(full + 1, zmq_msg_data(&rid), zmq_msg_size(&rid));
            size_t len = zmq_msg_size(&rid) + 1;
            if (worker_key(h, idx, &body, full, len))
                jq_hub_on_message(h, full, len, zmq_msg_data(&body), zmq_msg_size(&body));
        }
    }
    zmq_msg_close(&rid);
    zmq_msg_close(&body);
}

void jq_hub_on_durable(jq_hub_t *h, uint64_t durable)
{
    int64_t now = jq_now_mono();
    if (h->sending && h->sending->ticket <= durable)
        h->snap_dirty = true;
    while (h->sending && h->sending->ticket <= durable) {
        entry_t *e = h->sending;
        h->sending = e->snext;
        if (!h->sending)
            h->sending_tail = &h->sending;
        e->queued = false;
        if (e->state == E_STOPPING) { /* a cancel whose change is committed */
            send_lease_msg(h, e->w, "cancel", e->job, e->op, e->attempt, "canceled");
            continue;
        }
        msgpack_sbuffer_clear(&h->sb);
        msgpack_sbuffer_write(&h->sb, e->msg, e->msglen);
        free(e->msg);
        e->msg = NULL;
        e->state = E_RUNNING;
        send_to(h, e->w);
        session_timer(h, e->w);
        if (e->timeout_us)
            timer_set(h, &e->t, now + e->timeout_us);
    }
}

/* ---- timers ---- */

static void on_session_timer(jq_hub_t *h, session_t *w, int64_t now)
{
    if (now >= w->heard + lease_us(h)) {
        char why[200];
        snprintf(why, sizeof why, "worker lost: %s silent for %.1f s", w->label,
                 (double)(now - w->heard) / 1e6);
        jq_log(JQ_LOG_WARNING, "%s", why);
        STAT_ADD(h, lost, 1);
        drop_session(h, w, true, why);
        redispatch_all(h);
        return;
    }
    if (now >= w->sent + heartbeat_us(h)) {
        msgpack_packer pk;
        start(h, &pk);
        pack_head(&pk, 0, "heartbeat");
        send_to(h, w);
    }
    session_timer(h, w);
}

static void on_entry_timer(jq_hub_t *h, entry_t *e, int64_t now)
{
    e->t.at = INT64_MAX; /* popped */
    if (e->orphan) { /* no worker came back with it: as a lost worker's */
        opq_t *q = e->q;
        e->orphan = false;
        STAT_ADD(h, lost, 1);
        take_back(h, e, true, "worker lost: no worker brought this attempt back to the new "
                              "leader within twice the lease time");
        dispatch_queue(h, q);
    } else if (e->state == E_WAITING) { /* a back-off is over */
        STAT_SUB(h, waiting, 1);
        wait_again(h, e, 0);
        dispatch_queue(h, e->q);
    } else if (e->state == E_RUNNING) { /* its time is up */
        e->timed_out = true;
        e->state = E_STOPPING;
        send_lease_msg(h, e->w, "cancel", e->job, e->op, e->attempt, "timeout");
        timer_set(h, &e->t, now + JQ_WORKER_STOP_GRACE_US);
    } else if (e->state == E_STOPPING) { /* the worker did not answer: end it */
        session_t *w = e->w;
        send_lease_msg(h, w, "revoke", e->job, e->op, e->attempt,
                       "the worker did not stop within the stop grace");
        char msg[128];
        if (e->timed_out) {
            snprintf(msg, sizeof msg, "timed out after %.3g s (the worker did not stop)",
                     (double)e->timeout_us / 1e6);
            STAT_ADD(h, timeouts, 1);
        } else {
            snprintf(msg, sizeof msg, "canceled (the worker did not confirm)");
        }
        end_entry(h, e, false, false, NULL, msg);
        dispatch_worker(h, w);
    }
}

/* ---- the copy for other threads ---- */

static int by_worker_id(const void *a, const void *b)
{
    uint64_t x = (*(session_t *const *)a)->id, y = (*(session_t *const *)b)->id;
    return x < y ? -1 : x > y;
}

static int by_op_name(const void *a, const void *b)
{
    return strcmp(((const jq_hubsnap_op_t *)a)->name, ((const jq_hubsnap_op_t *)b)->name);
}

/* Loop thread: the state as GET /api/workers shows it, swapped in. -1
 * out of memory (tried again at the next tick). */
static int refresh_snapshot(jq_hub_t *h)
{
    size_t nq = 0, nw = 0;
    for (opq_t *q = h->queues; q; q = q->next)
        q->snap_index = nq++;
    for (size_t b = 0; b < h->nsessbuckets; b++)
        for (session_t *w = h->sessions[b]; w; w = w->hnext)
            nw++;
    jq_hubsnap_op_t *ops = calloc(nq ? nq : 1, sizeof *ops);
    session_t **ws = malloc((nw ? nw : 1) * sizeof *ws);
    char *json = NULL;
    size_t len = 0;
    FILE *f = ops && ws ? open_memstream(&json, &len) : NULL;
    if (!f) {
        free(ops);
        free(ws);
        return -1;
    }
    for (opq_t *q = h->queues; q; q = q->next) {
        jq_hubsnap_op_t *o = &ops[q->snap_index];
        snprintf(o->name, sizeof o->name, "%s", q->name);
        o->workers = (unsigned)q->nservers;
        for (size_t i = 0; i < q->nservers; i++)
            o->capacity += q->servers[i]->capacity;
        o->waiting = jq_heap_size(&q->waiting);
    }
    /* Backing off between attempts: waiting too, though in the timers. */
    for (size_t i = 0; i < jq_heap_size(&h->timers); i++) {
        htimer_t *t = jq_heap_at(&h->timers, i);
        if (t->kind == T_ENTRY && ((entry_t *)t)->backing_off && ((entry_t *)t)->q)
            ops[((entry_t *)t)->q->snap_index].waiting++;
    }
    nw = 0;
    for (size_t b = 0; b < h->nsessbuckets; b++)
        for (session_t *w = h->sessions[b]; w; w = w->hnext) {
            ws[nw++] = w;
            for (entry_t *e = w->leases; e; e = e->wnext)
                if (e->q)
                    ops[e->q->snap_index].busy++;
        }
    qsort(ws, nw, sizeof *ws, by_worker_id);
    qsort(ops, nq, sizeof *ops, by_op_name);
    fputs("{\"workers\":[", f);
    for (size_t i = 0; i < nw; i++) {
        session_t *w = ws[i];
        fprintf(f, "%s{\"name\":", i ? "," : "");
        jq_hubsnap_string(f, w->name);
        fprintf(f, ",\"id\":%llu,\"opcodes\":[", (unsigned long long)w->id);
        for (unsigned k = 0; k < w->nops; k++) {
            if (k)
                fputc(',', f);
            jq_hubsnap_string(f, w->ops[k]->name);
        }
        fprintf(f, "],\"capacity\":%u,\"running\":%u,\"since\":[%lld,%lld]}", w->capacity,
                w->busy, (long long)(w->since / 1000000), (long long)(w->since % 1000000));
    }
    fputs("],\"opcodes\":[", f);
    for (size_t i = 0; i < nq; i++) {
        fprintf(f, "%s{\"name\":", i ? "," : "");
        jq_hubsnap_string(f, ops[i].name);
        fprintf(f, ",\"workers\":%u,\"capacity\":%llu,\"busy\":%llu,\"waiting\":%llu}",
                ops[i].workers, (unsigned long long)ops[i].capacity,
                (unsigned long long)ops[i].busy, (unsigned long long)ops[i].waiting);
    }
    fputs("]}", f);
    free(ws);
    if (fclose(f) != 0) {
        free(json);
        free(ops);
        return -1;
    }
    jq_hubsnap_publish(h->snap, json, len, ops, nq);
    return 0;
}

int jq_hub_snapshot_json(jq_hub_t *h, FILE *out)
{
    if (!h) /* no hub (yet): nobody connected */
        return fputs("{\"workers\":[],\"opcodes\":[]}", out) < 0 ? -1 : 0;
    return jq_hubsnap_write_json(h->snap, out);
}

size_t jq_hub_snapshot_opcodes(jq_hub_t *h, jq_hubsnap_op_t **out)
{
    if (!h) {
        *out = NULL;
        return 0;
    }
    return jq_hubsnap_opcodes(h->snap, out);
}

int64_t jq_hub_tick(jq_hub_t *h, int64_t now)
{
    for (int k = 0; k < 1024; k++) {
        htimer_t *t = jq_heap_top(&h->timers);
        if (!t || t->at > now)
            break;
        h->snap_dirty = true;
        if (t->kind == T_SESSION) {
            on_session_timer(h, (session_t *)t, now);
        } else {
            jq_heap_pop(&h->timers);
            on_entry_timer(h, (entry_t *)t, now);
        }
    }
    if (h->snap_dirty && now >= h->snap_next) {
        if (refresh_snapshot(h) == 0)
            h->snap_dirty = false;
        h->snap_next = now + JQ_HUBSNAP_INTERVAL_US; /* out of memory: not at once */
    }
    htimer_t *t = jq_heap_top(&h->timers);
    int64_t wake = t ? t->at : INT64_MAX;
    return h->snap_dirty && h->snap_next < wake ? h->snap_next : wake;
}

void jq_hub_pause(jq_hub_t *h) { h->paused = true; }

void jq_hub_attach(jq_hub_t *h, void *router)
{
    if (!router) {
        h->nrouters = 0;
        return;
    }
    jq_hub_attach_more(h, router, false);
}

int jq_hub_attach_more(jq_hub_t *h, void *router, bool curve)
{
    if (h->nrouters == JQ_HUB_MAX_SOCKETS)
        return -1;
    h->curve[h->nrouters] = curve;
    h->routers[h->nrouters++] = router;
    return 0;
}

uint64_t jq_hub_running(jq_hub_t *h) { return atomic_load(&h->running); }

void jq_hub_stop(jq_hub_t *h)
{
    h->paused = true;
    /* Attempts no worker brought back: interrupted like the others. */
    for (size_t b = 0; b < h->njobbuckets; b++)
        for (entry_t *e = h->jobs[b], *next; e; e = next) {
            next = e->hnext;
            if (e->orphan) {
                e->orphan = false;
                take_back(h, e, true, "Interrupted by broker shutdown");
            }
        }
    for (size_t b = 0; b < h->nsessbuckets; b++)
        while (h->sessions[b]) {
            session_t *w = h->sessions[b];
            for (entry_t *e = w->leases; e; e = e->wnext)
                if (e->state != E_SENDING) /* never sent: nothing to revoke */
                    send_lease_msg(h, w, "revoke", e->job, e->op, e->attempt,
                                   "the daemon is shutting down");
            send_disconnect(h, w->rid, w->ridlen, "the daemon is shutting down");
            drop_session(h, w, true, "Interrupted by broker shutdown");
        }
}

/* ---- life ---- */

jq_hub_t *jq_hub_new(jq_daemon_t *d, void *router)
{
    jq_hub_t *h = calloc(1, sizeof *h);
    if (!h)
        return NULL;
    h->d = d;
    if (router)
        jq_hub_attach_more(h, router, false);
    h->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    h->njobbuckets = 1024;
    h->nsessbuckets = 1024;
    h->jobs = calloc(h->njobbuckets, sizeof *h->jobs);
    h->sessions = calloc(h->nsessbuckets, sizeof *h->sessions);
    h->sending_tail = &h->sending;
    pthread_mutex_init(&h->in_mu, NULL);
    jq_heap_init(&h->timers, timer_before, timer_moved);
    msgpack_sbuffer_init(&h->sb);
    h->snap = jq_hubsnap_new();
    h->snap_dirty = true;
    if (h->efd < 0 || !h->jobs || !h->sessions || !h->snap) {
        jq_hub_destroy(&h);
        return NULL;
    }
    jq_sched_remote_hooks_t hooks = {.offer = hook_offer, .kick = hook_kick,
                                     .reprio = hook_reprio, .ctx = h};
    jq_sched_set_remote_hooks(d->sched, &hooks);
    return h;
}

void jq_hub_destroy(jq_hub_t **hp)
{
    if (!hp || !*hp)
        return;
    jq_hub_t *h = *hp;
    jq_sched_remote_hooks_t none = {0};
    if (h->d && h->d->sched)
        jq_sched_set_remote_hooks(h->d->sched, &none);
    for (size_t b = 0; h->sessions && b < h->nsessbuckets; b++)
        for (session_t *w = h->sessions[b], *next; w; w = next) {
            next = w->hnext;
            free(w->ops);
            free(w);
        }
    for (size_t b = 0; h->jobs && b < h->njobbuckets; b++)
        for (entry_t *e = h->jobs[b], *next; e; e = next) {
            next = e->hnext;
            free(e->msg);
            free(e);
        }
    for (opq_t *q = h->queues, *next; q; q = next) {
        next = q->next;
        jq_heap_free(&q->waiting);
        free(q->servers);
        free(q);
    }
    jq_heap_free(&h->timers);
    free(h->jobs);
    free(h->sessions);
    free(h->in);
    free(h->in_spare);
    msgpack_sbuffer_destroy(&h->sb);
    if (h->efd >= 0)
        close(h->efd);
    pthread_mutex_destroy(&h->in_mu);
    jq_hubsnap_destroy(&h->snap);
    free(h);
    *hp = NULL;
}
