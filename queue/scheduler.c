/* scheduler.c: run-queue heap, dependency parking and executor wake-ups. */
#include "scheduler.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct {
    int prio;
    uint64_t seq; /* FIFO within a priority */
    uint64_t job_id;
    uint32_t gen;
} entry_t;

typedef struct dep_node {
    struct dep_node *next;
    uint64_t dep_id;
    uint64_t waiter_id;
    uint32_t gen;
    int prio;
} dep_node_t;

typedef struct {
    uint64_t *ids;
    size_t count, cap;
} inbox_t;

struct jq_sched {
    pthread_mutex_t mu;
    pthread_cond_t cond;
    entry_t *heap;
    size_t nheap, capheap;
    uint64_t seq;
    unsigned running, max_running;
    dep_node_t **deps; /* chained hash by dep_id */
    size_t ndep_buckets, ndeps;
    inbox_t *inboxes;  /* one per executor */
    unsigned nexecutors;
    bool stopping;
};

jq_sched_t *jq_sched_new(unsigned max_running, unsigned nexecutors)
{
    if (max_running == 0 || nexecutors == 0)
        return NULL;
    jq_sched_t *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    s->ndep_buckets = 1024;
    s->deps = calloc(s->ndep_buckets, sizeof *s->deps);
    s->inboxes = calloc(nexecutors, sizeof *s->inboxes);
    if (!s->deps || !s->inboxes) {
        free(s->deps);
        free(s->inboxes);
        free(s);
        return NULL;
    }
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
    for (size_t b = 0; b < s->ndep_buckets; b++)
        for (dep_node_t *n = s->deps[b], *next; n; n = next) {
            next = n->next;
            free(n);
        }
    for (unsigned i = 0; i < s->nexecutors; i++)
        free(s->inboxes[i].ids);
    free(s->inboxes);
    free(s->deps);
    free(s->heap);
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->cond);
    free(s);
    *sp = NULL;
}

static bool before(const entry_t *a, const entry_t *b)
{
    return a->prio < b->prio || (a->prio == b->prio && a->seq < b->seq);
}

static int heap_push(jq_sched_t *s, uint64_t id, int prio, uint32_t gen)
{
    if (s->nheap == s->capheap) {
        size_t cap = s->capheap ? s->capheap * 2 : 256;
        entry_t *grown = realloc(s->heap, cap * sizeof *grown);
        if (!grown)
            return -1;
        s->heap = grown;
        s->capheap = cap;
    }
    entry_t e = {.prio = prio, .seq = s->seq++, .job_id = id, .gen = gen};
    size_t i = s->nheap++;
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (!before(&e, &s->heap[parent]))
            break;
        s->heap[i] = s->heap[parent];
        i = parent;
    }
    s->heap[i] = e;
    return 0;
}

static entry_t heap_pop(jq_sched_t *s)
{
    entry_t top = s->heap[0];
    entry_t last = s->heap[--s->nheap];
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= s->nheap)
            break;
        if (c + 1 < s->nheap && before(&s->heap[c + 1], &s->heap[c]))
            c++;
        if (!before(&s->heap[c], &last))
            break;
        s->heap[i] = s->heap[c];
        i = c;
    }
    if (s->nheap)
        s->heap[i] = last;
    return top;
}

int jq_sched_push(jq_sched_t *s, uint64_t job_id, int prio, uint32_t gen)
{
    pthread_mutex_lock(&s->mu);
    int rc = heap_push(s, job_id, prio, gen);
    if (rc == 0 && s->running < s->max_running)
        pthread_cond_signal(&s->cond);
    pthread_mutex_unlock(&s->mu);
    return rc;
}

void jq_sched_kick(jq_sched_t *s, unsigned executor, uint64_t job_id)
{
    if (executor >= s->nexecutors)
        return;
    pthread_mutex_lock(&s->mu);
    inbox_t *in = &s->inboxes[executor];
    if (in->count == in->cap) {
        size_t cap = in->cap ? in->cap * 2 : 16;
        uint64_t *grown = realloc(in->ids, cap * sizeof *grown);
        if (grown) {
            in->ids = grown;
            in->cap = cap;
        }
    }
    if (in->count < in->cap)
        in->ids[in->count++] = job_id;
    pthread_cond_broadcast(&s->cond);
    pthread_mutex_unlock(&s->mu);
}

void jq_sched_release(jq_sched_t *s)
{
    pthread_mutex_lock(&s->mu);
    if (s->running)
        s->running--;
    if (s->nheap)
        pthread_cond_signal(&s->cond);
    pthread_mutex_unlock(&s->mu);
}

void jq_sched_stop(jq_sched_t *s)
{
    pthread_mutex_lock(&s->mu);
    s->stopping = true;
    pthread_cond_broadcast(&s->cond);
    pthread_mutex_unlock(&s->mu);
}

static size_t bucket_of(const jq_sched_t *s, uint64_t id)
{
    return (size_t)((id * 0x9E3779B97F4A7C15ull) >> 40) & (s->ndep_buckets - 1);
}

static void deps_grow(jq_sched_t *s)
{
    size_t nb = s->ndep_buckets * 2;
    dep_node_t **grown = calloc(nb, sizeof *grown);
    if (!grown)
        return; /* keep the longer chains; still correct */
    size_t old_nb = s->ndep_buckets;
    dep_node_t **old = s->deps;
    s->deps = grown;
    s->ndep_buckets = nb;
    for (size_t b = 0; b < old_nb; b++)
        for (dep_node_t *n = old[b], *next; n; n = next) {
            next = n->next;
            size_t nbk = bucket_of(s, n->dep_id);
            n->next = s->deps[nbk];
            s->deps[nbk] = n;
        }
    free(old);
}

jq_dep_check_t jq_sched_check_dep(jq_sched_t *s, jq_table_t *t, uint64_t dep_id,
                                  uint64_t waiter_id, uint32_t gen,
                                  jq_status_t *status)
{
    dep_node_t *node = malloc(sizeof *node);
    pthread_mutex_lock(&s->mu);
    /* The dependency's status is read under the scheduler mutex, and its
     * finisher takes the mutex after making it final: either we see it
     * final, or our parking happens before the finisher looks. */
    jq_shard_t *dsh = jq_table_shard_for(t, dep_id);
    jq_shard_rdlock(dsh);
    jq_job_t *dep = jq_shard_find_any(dsh, dep_id);
    jq_status_t st = dep ? (jq_status_t)dep->status : JQ_QUEUED;
    jq_shard_rdunlock(dsh);
    jq_dep_check_t rc;
    if (!dep) {
        rc = JQ_DEP_NOT_FOUND;
    } else if (jq_status_final(st)) {
        *status = st;
        rc = JQ_DEP_FINAL;
    } else {
        jq_shard_t *wsh = jq_table_shard_for(t, waiter_id);
        jq_shard_wrlock(wsh);
        jq_job_t *w = jq_shard_find(wsh, waiter_id);
        rc = JQ_DEP_RECHECK;
        if (node && w && w->sched_gen == gen && w->sched_state == JQ_SCHED_ACTIVE &&
            w->status == JQ_WAITING) {
            w->sched_state = JQ_SCHED_DEPWAIT;
            *node = (dep_node_t){.dep_id = dep_id, .waiter_id = waiter_id, .gen = gen,
                                 .prio = jq_job_priority(w)};
            size_t b = bucket_of(s, dep_id);
            node->next = s->deps[b];
            s->deps[b] = node;
            node = NULL;
            if (++s->ndeps > 2 * s->ndep_buckets)
                deps_grow(s);
            if (s->running)
                s->running--;
            if (s->nheap)
                pthread_cond_signal(&s->cond);
            rc = JQ_DEP_PARKED;
        }
        /* No record made: unlock without flushing under our mutex. */
        jq_shard_wrunlock_quiet(wsh);
    }
    pthread_mutex_unlock(&s->mu);
    free(node);
    return rc;
}

void jq_sched_job_finished(jq_sched_t *s, uint64_t job_id)
{
    pthread_mutex_lock(&s->mu);
    dep_node_t **pp = &s->deps[bucket_of(s, job_id)];
    bool pushed = false;
    while (*pp) {
        dep_node_t *n = *pp;
        if (n->dep_id != job_id) {
            pp = &n->next;
            continue;
        }
        *pp = n->next;
        s->ndeps--;
        /* A waiter canceled meanwhile got a new gen; its entry is dropped
         * by the executor as stale, so pushing it is harmless. */
        if (heap_push(s, n->waiter_id, n->prio, n->gen) == 0)
            pushed = true;
        free(n);
    }
    if (pushed)
        pthread_cond_broadcast(&s->cond);
    pthread_mutex_unlock(&s->mu);
}

jq_sched_event_t jq_sched_wait(jq_sched_t *s, unsigned executor, int64_t now,
                               int64_t deadline, jq_runnable_t *run,
                               uint64_t *kicked, size_t maxkick, size_t *nkicked)
{
    jq_sched_event_t ev;
    bool timed_out = deadline <= now;
    pthread_mutex_lock(&s->mu);
    inbox_t *in = &s->inboxes[executor];
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
        /* New work before due steps: starting a job is quick and bounded
         * by the running cap, while an opcode that never waits (a zero
         * delay) is always due and would otherwise keep jobs from starting. */
        if (s->nheap && s->running < s->max_running) {
            entry_t e = heap_pop(s);
            s->running++;
            run->job_id = e.job_id;
            run->gen = e.gen;
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
    pthread_mutex_unlock(&s->mu);
    return ev;
}

void jq_sched_get_stats(jq_sched_t *s, jq_sched_stats_t *out)
{
    pthread_mutex_lock(&s->mu);
    out->runnable = s->nheap;
    out->running = s->running;
    out->dep_waiting = s->ndeps;
    out->max_running = s->max_running;
    pthread_mutex_unlock(&s->mu);
}
