/* scheduler.c: per-job scheduling records, the run heap and the commit
 * gate (both indexed heaps), dependency parking and executor wake-ups.
 *
 * A priority travels with the job change serial it was read at: a handler
 * changing it and an executor requeueing the job read it under the shard
 * lock at different moments and tell the scheduler afterwards, in either
 * order; the one made at the higher serial wins, so a late caller never
 * puts back a stale priority. */
#include "scheduler.h"
#include "heap.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef enum {
    S_NEW,     /* id handed out, not yet in the table */
    S_PENDING, /* in the commit gate until the store is durable up to ticket */
    S_QUEUED,  /* in the run heap */
    S_ACTIVE,  /* an executor holds it */
    S_REMOTE,  /* the worker hub holds it (a worker opcode): no slot */
    S_PARKED,  /* waiting for park_on to be final */
    S_FINAL
} sstate_t;

typedef struct sjob {
    uint64_t id;
    uint64_t prio_serial;       /* change serial the priority was read at */
    struct sjob *hnext;         /* hash chain */
    struct sjob *parked;        /* jobs parked on this one */
    /* One record per live job, so it is kept within 56 bytes (a 64-byte
     * malloc chunk): fields that belong to states a record cannot be in
     * at once share their place. */
    union {
        uint64_t ticket;        /* S_PENDING: store position of its submit */
        struct {                /* S_PARKED: in park_on's list */
            struct sjob *park_next, **park_pprev;
        };
    };
    union {
        uint32_t heap_index;    /* S_QUEUED, S_PENDING: in the run heap or
                                   the commit gate; HEAP_NONE elsewhere */
        int32_t runner;         /* S_ACTIVE: the executor; -1 elsewhere */
    };
    int8_t prio;
    uint8_t state : 4;          /* sstate_t */
    uint8_t final_status : 4;   /* jq_status_t, when final */
    bool final : 1;             /* final in the table (may still be held) */
    bool cancel : 1;            /* a cancel came while an executor held it */
    bool forget : 1;            /* archived while held: free on release */
} sjob_t;
_Static_assert(sizeof(sjob_t) <= 56, "a scheduling record outgrew its malloc chunk");

/* heap_index when a record is in no heap (the heap says JQ_HEAP_NONE). */
#define HEAP_NONE UINT32_MAX

typedef struct {
    uint64_t *ids;
    size_t count, cap;
    uint64_t want_durable; /* 0: not waiting for the store */
} inbox_t;

struct jq_sched {
    pthread_mutex_t mu;
    pthread_cond_t cond;
    sjob_t **buckets;           /* chained hash by id */
    size_t nbuckets, count;
    jq_heap_t run;              /* S_QUEUED, by (priority, id) */
    jq_heap_t gate;             /* S_PENDING, by ticket */
    uint64_t last_id;
    uint64_t durable;
    unsigned running, max_running, parked;
    inbox_t *inboxes;           /* one per executor */
    unsigned nexecutors;
    unsigned remote;            /* S_REMOTE records */
    jq_sched_remote_hooks_t hooks;
    bool paused, stopping;
};

static bool run_before(const void *a, const void *b)
{
    const sjob_t *x = a, *y = b;
    return x->prio < y->prio || (x->prio == y->prio && x->id < y->id);
}

static bool gate_before(const void *a, const void *b)
{
    const sjob_t *x = a, *y = b;
    return x->ticket < y->ticket || (x->ticket == y->ticket && x->id < y->id);
}

static void moved(void *e, size_t index)
{
    ((sjob_t *)e)->heap_index = index == JQ_HEAP_NONE ? HEAP_NONE : (uint32_t)index;
}

jq_sched_t *jq_sched_new(unsigned max_running, unsigned nexecutors)
{
    if (max_running == 0 || nexecutors == 0)
        return NULL;
    jq_sched_t *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    s->nbuckets = 1024;
    s->buckets = calloc(s->nbuckets, sizeof *s->buckets);
    s->inboxes = calloc(nexecutors, sizeof *s->inboxes);
    if (!s->buckets || !s->inboxes) {
        free(s->buckets);
        free(s->inboxes);
        free(s);
        return NULL;
    }
    jq_heap_init(&s->run, run_before, moved);
    jq_heap_init(&s->gate, gate_before, moved);
    s->max_running = max_running;
    s->nexecutors = nexecutors;
    pthread_mutex_init(&s->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&s->cond, &ca);
    pthread_condattr_destroy(&ca);
    return s;
}

void jq_sched_destroy(jq_sched_t **sp)
{
    if (!sp || !*sp)
        return;
    jq_sched_t *s = *sp;
    for (size_t b = 0; b < s->nbuckets; b++)
        for (sjob_t *r = s->buckets[b], *next; r; r = next) {
            next = r->hnext;
            free(r);
        }
    for (unsigned i = 0; i < s->nexecutors; i++)
        free(s->inboxes[i].ids);
    free(s->inboxes);
    free(s->buckets);
    jq_heap_free(&s->run);
    jq_heap_free(&s->gate);
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->cond);
    free(s);
    *sp = NULL;
}

/* ---- the hash of records (under mu) ---- */

static size_t bucket_of(size_t nbuckets, uint64_t id)
{
    return (size_t)((id * 0x9E3779B97F4A7C15ull) >> 32) & (nbuckets - 1);
}

static sjob_t *find(jq_sched_t *s, uint64_t id)
{
    for (sjob_t *r = s->buckets[bucket_of(s->nbuckets, id)]; r; r = r->hnext)
        if (r->id == id)
            return r;
    return NULL;
}

static void grow(jq_sched_t *s)
{
    size_t nb = s->nbuckets * 2;
    sjob_t **grown = calloc(nb, sizeof *grown);
    if (!grown)
        return; /* longer chains; still correct */
    for (size_t b = 0; b < s->nbuckets; b++)
        for (sjob_t *r = s->buckets[b], *next; r; r = next) {
            next = r->hnext;
            size_t nbk = bucket_of(nb, r->id);
            r->hnext = grown[nbk];
            grown[nbk] = r;
        }
    free(s->buckets);
    s->buckets = grown;
    s->nbuckets = nb;
}

static void insert(jq_sched_t *s, sjob_t *r)
{
    size_t b = bucket_of(s->nbuckets, r->id);
    r->hnext = s->buckets[b];
    s->buckets[b] = r;
    if (++s->count > 2 * s->nbuckets)
        grow(s);
}

static void unlink_record(jq_sched_t *s, sjob_t *r)
{
    sjob_t **pp = &s->buckets[bucket_of(s->nbuckets, r->id)];
    while (*pp != r)
        pp = &(*pp)->hnext;
    *pp = r->hnext;
    s->count--;
}

/* ---- moving records between places (under mu) ---- */

static void leave_heaps(jq_sched_t *s, sjob_t *r)
{
    if (r->state == S_QUEUED)
        jq_heap_remove(&s->run, r->heap_index);
    else if (r->state == S_PENDING)
        jq_heap_remove(&s->gate, r->heap_index);
}

static void unpark(jq_sched_t *s, sjob_t *r)
{
    if (r->state != S_PARKED)
        return;
    *r->park_pprev = r->park_next;
    if (r->park_next)
        r->park_next->park_pprev = r->park_pprev;
    r->park_next = NULL;
    r->park_pprev = NULL;
    s->parked--;
}

/* Into the run heap. Both heaps have room for every record (reserve), so
 * this cannot fail. */
static void enqueue(jq_sched_t *s, sjob_t *r)
{
    r->state = S_QUEUED;
    jq_heap_push(&s->run, r);
    if (s->running < s->max_running && !s->paused)
        pthread_cond_signal(&s->cond);
}

/* Room in both heaps for n more records (under mu). */
static int reserve(jq_sched_t *s, size_t n)
{
    if (s->count + n >= HEAP_NONE) /* heap positions are 32-bit */
        return -1;
    return jq_heap_reserve(&s->run, s->count + n) < 0 ||
                   jq_heap_reserve(&s->gate, s->count + n) < 0
               ? -1
               : 0;
}

/* Everything parked on r looks again: back to the run queue. */
static void wake_parked(jq_sched_t *s, sjob_t *r)
{
    while (r->parked) {
        sjob_t *w = r->parked;
        unpark(s, w);
        enqueue(s, w);
    }
}

static bool held(const sjob_t *r)
{
    return r->state == S_ACTIVE || r->state == S_REMOTE;
}

static void make_final(jq_sched_t *s, sjob_t *r, jq_status_t status)
{
    r->final = true;
    r->final_status = (uint8_t)status;
    if (!held(r)) {
        leave_heaps(s, r);
        unpark(s, r);
        r->state = S_FINAL;
    }
    wake_parked(s, r);
}

/* ---- ids and submission ---- */

void jq_sched_set_last_id(jq_sched_t *s, uint64_t last)
{
    pthread_mutex_lock(&s->mu);
    s->last_id = last;
    pthread_mutex_unlock(&s->mu);
}

uint64_t jq_sched_last_id(jq_sched_t *s)
{
    pthread_mutex_lock(&s->mu);
    uint64_t v = s->last_id;
    pthread_mutex_unlock(&s->mu);
    return v;
}

uint64_t jq_sched_new_jobs(jq_sched_t *s, uint32_t n)
{
    if (n == 0)
        return 0;
    /* Allocated before the mutex is taken: executors never wait for a
     * batch's mallocs. */
    sjob_t **recs = malloc(n * sizeof *recs);
    uint32_t made = 0;
    while (recs && made < n && (recs[made] = calloc(1, sizeof **recs)))
        made++;
    if (made < n) {
        while (recs && made)
            free(recs[--made]);
        free(recs);
        return 0;
    }
    pthread_mutex_lock(&s->mu);
    if (reserve(s, n) < 0) {
        pthread_mutex_unlock(&s->mu);
        while (made)
            free(recs[--made]);
        free(recs);
        return 0;
    }
    uint64_t first = s->last_id + 1;
    for (uint32_t k = 0; k < n; k++) {
        recs[k]->id = first + k;
        recs[k]->state = S_NEW;
        recs[k]->heap_index = HEAP_NONE;
        recs[k]->runner = -1;
        insert(s, recs[k]);
    }
    s->last_id += n;
    pthread_mutex_unlock(&s->mu);
    free(recs);
    return first;
}

static void set_prio(sjob_t *r, int prio, uint64_t serial)
{
    if (serial >= r->prio_serial) {
        r->prio = (int8_t)prio;
        r->prio_serial = serial;
    }
}

void jq_sched_submitted(jq_sched_t *s, uint64_t id, int prio, uint64_t ticket)
{
    pthread_mutex_lock(&s->mu);
    sjob_t *r = find(s, id);
    if (r && r->state == S_NEW) { /* not canceled meanwhile */
        set_prio(r, prio, 1); /* the submit record is serial 1 */
        r->ticket = ticket;
        if (ticket <= s->durable) {
            enqueue(s, r);
        } else {
            r->state = S_PENDING;
            jq_heap_push(&s->gate, r);
        }
    }
    pthread_mutex_unlock(&s->mu);
}

static void free_record(jq_sched_t *s, sjob_t *r)
{
    leave_heaps(s, r);
    unpark(s, r);
    wake_parked(s, r);
    unlink_record(s, r);
    free(r);
}

void jq_sched_withdraw(jq_sched_t *s, uint64_t id)
{
    pthread_mutex_lock(&s->mu);
    sjob_t *r = find(s, id);
    if (r && r->state != S_ACTIVE)
        free_record(s, r);
    pthread_mutex_unlock(&s->mu);
}

/* A job recovery brings back; under the mutex on success. */
static sjob_t *load_locked(jq_sched_t *s, uint64_t id, int prio)
{
    sjob_t *r = calloc(1, sizeof *r);
    if (!r)
        return NULL;
    r->id = id;
    r->heap_index = HEAP_NONE;
    r->runner = -1;
    r->prio = (int8_t)prio;
    pthread_mutex_lock(&s->mu);
    if (reserve(s, 1) < 0) {
        pthread_mutex_unlock(&s->mu);
        free(r);
        return NULL;
    }
    insert(s, r);
    if (id > s->last_id)
        s->last_id = id;
    return r;
}

int jq_sched_load(jq_sched_t *s, uint64_t id, int prio, jq_status_t status)
{
    sjob_t *r = load_locked(s, id, prio);
    if (!r)
        return -1;
    if (jq_status_final(status)) {
        r->state = S_FINAL;
        r->final = true;
        r->final_status = (uint8_t)status;
    } else {
        enqueue(s, r);
    }
    pthread_mutex_unlock(&s->mu);
    return 0;
}

int jq_sched_load_remote(jq_sched_t *s, uint64_t id, int prio)
{
    sjob_t *r = load_locked(s, id, prio);
    if (!r)
        return -1;
    r->state = S_REMOTE; /* the caller gives it to the hub itself */
    s->remote++;
    pthread_mutex_unlock(&s->mu);
    return 0;
}

void jq_sched_durable(jq_sched_t *s, uint64_t durable)
{
    pthread_mutex_lock(&s->mu);
    if (durable > s->durable)
        s->durable = durable;
    sjob_t *r;
    while ((r = jq_heap_top(&s->gate)) && r->ticket <= s->durable) {
        jq_heap_pop(&s->gate);
        enqueue(s, r);
    }
    for (unsigned i = 0; i < s->nexecutors; i++)
        if (s->inboxes[i].want_durable && s->inboxes[i].want_durable <= s->durable) {
            pthread_cond_broadcast(&s->cond);
            break;
        }
    pthread_mutex_unlock(&s->mu);
}

/* ---- handlers ---- */

void jq_sched_set_priority(jq_sched_t *s, uint64_t id, int prio, uint64_t serial)
{
    pthread_mutex_lock(&s->mu);
    sjob_t *r = find(s, id);
    if (r) {
        set_prio(r, prio, serial);
        if (r->state == S_QUEUED)
            jq_heap_fix(&s->run, r->heap_index);
        else if (r->state == S_REMOTE && s->hooks.reprio)
            s->hooks.reprio(s->hooks.ctx, id, r->prio);
    }
    pthread_mutex_unlock(&s->mu);
}

void jq_sched_cancel(jq_sched_t *s, uint64_t id)
{
    pthread_mutex_lock(&s->mu);
    sjob_t *r = find(s, id);
    if (r && r->state == S_PARKED) {
        unpark(s, r);
        enqueue(s, r);
    } else if (r && r->state == S_REMOTE) {
        if (s->hooks.kick)
            s->hooks.kick(s->hooks.ctx, id);
    } else if (r && r->state == S_ACTIVE) {
        r->cancel = true;
        inbox_t *in = &s->inboxes[r->runner];
        if (in->count == in->cap) {
            size_t cap = in->cap ? in->cap * 2 : 16;
            uint64_t *grown = realloc(in->ids, cap * sizeof *grown);
            if (grown) {
                in->ids = grown;
                in->cap = cap;
            }
        }
        if (in->count < in->cap)
            in->ids[in->count++] = id;
        pthread_cond_broadcast(&s->cond);
    }
    pthread_mutex_unlock(&s->mu);
}

void jq_sched_final(jq_sched_t *s, uint64_t id, jq_status_t status)
{
    pthread_mutex_lock(&s->mu);
    sjob_t *r = find(s, id);
    if (r)
        make_final(s, r, status);
    /* A queued worker opcode the hub holds was canceled: the hub lets go. */
    if (r && r->state == S_REMOTE && s->hooks.kick)
        s->hooks.kick(s->hooks.ctx, id);
    pthread_mutex_unlock(&s->mu);
}

void jq_sched_forget(jq_sched_t *s, uint64_t id)
{
    pthread_mutex_lock(&s->mu);
    sjob_t *r = find(s, id);
    if (r && held(r))
        r->forget = true;
    else if (r)
        free_record(s, r);
    pthread_mutex_unlock(&s->mu);
}

/* ---- executors ---- */

jq_sched_event_t jq_sched_wait(jq_sched_t *s, unsigned executor, int64_t now,
                               int64_t deadline, uint64_t want_durable, uint64_t *run_id,
                               uint64_t *kicked, size_t maxkick, size_t *nkicked,
                               uint64_t *durable)
{
    jq_sched_event_t ev;
    bool timed_out = deadline <= now;
    pthread_mutex_lock(&s->mu);
    inbox_t *in = &s->inboxes[executor];
    in->want_durable = want_durable;
    for (;;) {
        if (s->stopping) {
            ev = JQ_EV_STOP;
            break;
        }
        if (in->count) {
            size_t n = in->count < maxkick ? in->count : maxkick;
            memcpy(kicked, in->ids, n * sizeof *kicked);
            memmove(in->ids, in->ids + n, (in->count - n) * sizeof *in->ids);
            in->count -= n;
            *nkicked = n;
            ev = JQ_EV_KICK;
            break;
        }
        if (want_durable && s->durable >= want_durable) {
            ev = JQ_EV_DURABLE;
            break;
        }
        /* New work before due steps: starting a job is quick and bounded
         * by the running cap, while an opcode that never waits (a zero
         * delay) is always due and would otherwise keep jobs from starting. */
        if (jq_heap_size(&s->run) && s->running < s->max_running && !s->paused) {
            sjob_t *r = jq_heap_pop(&s->run);
            r->state = S_ACTIVE;
            r->runner = (int32_t)executor;
            r->cancel = false;
            s->running++;
            *run_id = r->id;
            ev = JQ_EV_RUN;
            break;
        }
        if (timed_out) {
            ev = JQ_EV_TIMEOUT;
            break;
        }
        if (deadline == INT64_MAX) {
            pthread_cond_wait(&s->cond, &s->mu);
        } else {
            struct timespec ts = {.tv_sec = deadline / 1000000,
                                  .tv_nsec = (deadline % 1000000) * 1000};
            if (pthread_cond_timedwait(&s->cond, &s->mu, &ts) == ETIMEDOUT)
                timed_out = true;
        }
    }
    in->want_durable = 0;
    *durable = s->durable;
    pthread_mutex_unlock(&s->mu);
    return ev;
}

/* An executor or the hub lets go of r (under mu). */
static void release(jq_sched_t *s, sjob_t *r)
{
    if (r->state == S_REMOTE) {
        s->remote--;
    } else if (s->running) {
        s->running--;
    }
    r->runner = -1;
    if (jq_heap_size(&s->run) && !s->paused)
        pthread_cond_signal(&s->cond);
}

void jq_sched_requeue(jq_sched_t *s, uint64_t id, int prio, uint64_t serial)
{
    pthread_mutex_lock(&s->mu);
    sjob_t *r = find(s, id);
    if (r && held(r)) {
        release(s, r);
        set_prio(r, prio, serial);
        if (r->forget) {
            free_record(s, r);
        } else if (r->final) {
            r->state = S_FINAL;
        } else {
            enqueue(s, r);
        }
    }
    pthread_mutex_unlock(&s->mu);
}

void jq_sched_done(jq_sched_t *s, uint64_t id, jq_status_t status)
{
    pthread_mutex_lock(&s->mu);
    sjob_t *r = find(s, id);
    if (r && held(r)) {
        release(s, r);
        r->state = S_FINAL;
        if (r->forget)
            free_record(s, r);
        else
            make_final(s, r, r->final ? (jq_status_t)r->final_status : status);
    }
    pthread_mutex_unlock(&s->mu);
}

jq_dep_check_t jq_sched_check_dep(jq_sched_t *s, uint64_t waiter_id, uint64_t dep_id,
                                  jq_status_t *status)
{
    jq_dep_check_t rc;
    pthread_mutex_lock(&s->mu);
    sjob_t *w = find(s, waiter_id), *d = find(s, dep_id);
    if (!w || w->state != S_ACTIVE || w->cancel || w->final) {
        rc = JQ_DEP_CANCELED;
    } else if (!d) {
        rc = JQ_DEP_NOT_FOUND;
    } else if (d->final) {
        *status = (jq_status_t)d->final_status;
        rc = JQ_DEP_FINAL;
    } else {
        /* Parked under the same mutex the finisher takes to wake its
         * dependants: either it is final already, or it will find us. */
        release(s, w);
        w->state = S_PARKED;
        w->park_next = d->parked;
        if (d->parked)
            d->parked->park_pprev = &w->park_next;
        w->park_pprev = &d->parked;
        d->parked = w;
        s->parked++;
        rc = JQ_DEP_PARKED;
    }
    pthread_mutex_unlock(&s->mu);
    return rc;
}

void jq_sched_set_remote_hooks(jq_sched_t *s, const jq_sched_remote_hooks_t *hooks)
{
    pthread_mutex_lock(&s->mu);
    s->hooks = *hooks;
    pthread_mutex_unlock(&s->mu);
}

void jq_sched_to_remote(jq_sched_t *s, uint64_t id)
{
    pthread_mutex_lock(&s->mu);
    sjob_t *r = find(s, id);
    if (r && r->state == S_ACTIVE) {
        release(s, r);
        r->state = S_REMOTE;
        s->remote++;
        /* Under the mutex, so the hub sees the offer before any kick; a
         * cancel (or a cancel that finished it, `final`) that came while
         * the executor held it is passed on. */
        if (s->hooks.offer)
            s->hooks.offer(s->hooks.ctx, id);
        if ((r->cancel || r->final) && s->hooks.kick)
            s->hooks.kick(s->hooks.ctx, id);
    }
    pthread_mutex_unlock(&s->mu);
}

void jq_sched_pause(jq_sched_t *s)
{
    pthread_mutex_lock(&s->mu);
    s->paused = true;
    pthread_mutex_unlock(&s->mu);
}

void jq_sched_set_max_running(jq_sched_t *s, unsigned max)
{
    pthread_mutex_lock(&s->mu);
    s->max_running = max ? max : 1;
    pthread_cond_broadcast(&s->cond); /* idle executors look again */
    pthread_mutex_unlock(&s->mu);
}

void jq_sched_stop(jq_sched_t *s)
{
    pthread_mutex_lock(&s->mu);
    s->stopping = true;
    pthread_cond_broadcast(&s->cond);
    pthread_mutex_unlock(&s->mu);
}

void jq_sched_get_stats(jq_sched_t *s, jq_sched_stats_t *out)
{
    pthread_mutex_lock(&s->mu);
    out->runnable = jq_heap_size(&s->run);
    out->pending = jq_heap_size(&s->gate);
    out->running = s->running;
    out->remote = s->remote;
    out->dep_waiting = s->parked;
    out->known = s->count;
    out->max_running = s->max_running;
    out->paused = s->paused;
    pthread_mutex_unlock(&s->mu);
}
