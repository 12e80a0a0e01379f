/* ring.c: slot array indexed by seq % capacity, and a small open-addressing
 * index job id → seq of the job's newest event, each slot linking to the
 * seq of the same job's previous event.
 *
 * Event bodies are reference counted: a reader takes references under the
 * read lock and copies the bytes after releasing it, so a large
 * events_since never holds the lock the loop needs to append. */
#include "ring.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    _Atomic uint32_t refs;
    uint32_t len;
    char data[];
} body_t;

typedef struct {
    uint64_t seq;       /* 0: empty */
    uint64_t job_id;
    uint64_t serial;
    uint64_t prev_seq;  /* the same job's previous event, 0 none */
    body_t *body;
    uint32_t len;
} slot_t;

static void body_unref(body_t *b)
{
    if (b && atomic_fetch_sub_explicit(&b->refs, 1, memory_order_acq_rel) == 1)
        free(b);
}

typedef struct {
    uint64_t job_id;    /* 0: empty */
    uint64_t seq;
} idx_t;

struct jq_ring {
    pthread_rwlock_t lock;
    slot_t *slots;
    size_t cap;              /* slots */
    size_t max_bytes, bytes;
    uint64_t first, last;    /* seqs held: first..last; first > last: none */
    idx_t *idx;
    size_t idx_cap;          /* power of two, >= 2 * cap */
};

jq_ring_t *jq_ring_new(size_t max_events, size_t max_bytes)
{
    if (max_events == 0)
        return NULL;
    jq_ring_t *r = calloc(1, sizeof *r);
    if (!r)
        return NULL;
    r->cap = max_events;
    r->max_bytes = max_bytes;
    r->idx_cap = 16;
    while (r->idx_cap < 2 * max_events)
        r->idx_cap *= 2;
    r->slots = calloc(r->cap, sizeof *r->slots);
    r->idx = calloc(r->idx_cap, sizeof *r->idx);
    if (!r->slots || !r->idx) {
        free(r->slots);
        free(r->idx);
        free(r);
        return NULL;
    }
    r->first = 1;
    r->last = 0;
    pthread_rwlock_init(&r->lock, NULL);
    return r;
}

void jq_ring_destroy(jq_ring_t **rp)
{
    if (!rp || !*rp)
        return;
    jq_ring_t *r = *rp;
    for (size_t i = 0; i < r->cap; i++)
        body_unref(r->slots[i].body);
    free(r->slots);
    free(r->idx);
    pthread_rwlock_destroy(&r->lock);
    free(r);
    *rp = NULL;
}

static size_t idx_home(const jq_ring_t *r, uint64_t job_id)
{
    return (size_t)((job_id * 0x9E3779B97F4A7C15ull) >> 17) & (r->idx_cap - 1);
}

static idx_t *idx_find(jq_ring_t *r, uint64_t job_id)
{
    for (size_t i = idx_home(r, job_id);; i = (i + 1) & (r->idx_cap - 1)) {
        if (r->idx[i].job_id == job_id)
            return &r->idx[i];
        if (r->idx[i].job_id == 0)
            return NULL;
    }
}

static void idx_put(jq_ring_t *r, uint64_t job_id, uint64_t seq)
{
    size_t i = idx_home(r, job_id);
    while (r->idx[i].job_id != 0 && r->idx[i].job_id != job_id)
        i = (i + 1) & (r->idx_cap - 1);
    r->idx[i].job_id = job_id;
    r->idx[i].seq = seq;
}

/* Linear probing deletion with backward shift: no tombstones. */
static void idx_del(jq_ring_t *r, idx_t *e)
{
    size_t mask = r->idx_cap - 1, i = (size_t)(e - r->idx), j = i;
    r->idx[i].job_id = 0;
    for (;;) {
        j = (j + 1) & mask;
        if (r->idx[j].job_id == 0)
            return;
        size_t home = idx_home(r, r->idx[j].job_id);
        /* Move j back to i if i lies cyclically in [home, j). */
        if ((j > i && (home <= i || home > j)) || (j < i && home <= i && home > j)) {
            r->idx[i] = r->idx[j];
            r->idx[j].job_id = 0;
            i = j;
        }
    }
}

static slot_t *slot_of(jq_ring_t *r, uint64_t seq)
{
    return &r->slots[seq % r->cap];
}

static void evict_oldest(jq_ring_t *r)
{
    slot_t *s = slot_of(r, r->first);
    idx_t *e = idx_find(r, s->job_id);
    if (e && e->seq == s->seq)
        idx_del(r, e);
    r->bytes -= s->len;
    body_unref(s->body);
    memset(s, 0, sizeof *s);
    r->first++;
}

int jq_ring_append(jq_ring_t *r, uint64_t seq, uint64_t job_id, uint64_t serial,
                   const void *body, size_t len)
{
    body_t *copy = malloc(sizeof *copy + (len ? len : 1));
    if (!copy || job_id == 0 || len > UINT32_MAX) {
        /* The job's chain would skip this event: cut it, so a later walk
         * reports the events lost instead of complete. */
        pthread_rwlock_wrlock(&r->lock);
        idx_t *e = idx_find(r, job_id);
        if (e)
            idx_del(r, e);
        pthread_rwlock_unlock(&r->lock);
        free(copy);
        return -1;
    }
    atomic_init(&copy->refs, 1);
    copy->len = (uint32_t)len;
    memcpy(copy->data, body, len);
    pthread_rwlock_wrlock(&r->lock);
    if (r->last + 1 != seq) { /* a restart of numbering: start afresh */
        while (r->first <= r->last)
            evict_oldest(r);
        r->first = seq;
        r->last = seq - 1;
    }
    while (r->first <= r->last && (r->last - r->first + 1 >= r->cap ||
                                   (r->max_bytes && r->bytes + len > r->max_bytes)))
        evict_oldest(r);
    idx_t *e = idx_find(r, job_id);
    slot_t *s = slot_of(r, seq);
    *s = (slot_t){.seq = seq, .job_id = job_id, .serial = serial,
                  .prev_seq = e ? e->seq : 0, .body = copy, .len = (uint32_t)len};
    idx_put(r, job_id, seq);
    r->bytes += len;
    r->last = seq;
    pthread_rwlock_unlock(&r->lock);
    return 0;
}

bool jq_ring_job_since(jq_ring_t *r, uint64_t job_id, uint64_t after,
                       jq_ring_visit_fn fn, void *ctx)
{
    idx_t *e = idx_find(r, job_id);
    if (!e)
        return true; /* nothing of this job in the ring */
    /* Walk back to the oldest event newer than `after`, then replay. */
    uint64_t chain[256];
    size_t n = 0;
    uint64_t seq = e->seq;
    bool complete = false;
    while (seq >= r->first && seq <= r->last) {
        slot_t *s = slot_of(r, seq);
        if (s->serial <= after) {
            complete = true;
            break;
        }
        if (s->serial == after + 1)
            complete = true;
        if (n == sizeof chain / sizeof chain[0])
            return false; /* too many to replay: treat as lost */
        chain[n++] = seq;
        if (complete)
            break;
        seq = s->prev_seq;
        if (seq == 0)
            break;
    }
    if (!complete && n > 0)
        return false;
    while (n > 0) {
        slot_t *s = slot_of(r, chain[--n]);
        fn(ctx, s->body->data, s->len);
    }
    return true;
}

jq_ring_since_t jq_ring_since(jq_ring_t *r, uint64_t after, size_t max, size_t max_bytes,
                              msgpack_packer *pk, size_t *count, bool *more,
                              uint64_t *first_seq, uint64_t *last_seq)
{
    body_t **refs = max ? malloc(max * sizeof *refs) : NULL;
    pthread_rwlock_rdlock(&r->lock);
    *first_seq = r->first;
    *last_seq = r->last;
    *count = 0;
    *more = false;
    if (after + 1 < r->first && after < r->last) {
        pthread_rwlock_unlock(&r->lock);
        free(refs);
        return JQ_RING_TOO_OLD;
    }
    uint64_t from = after + 1 < r->first ? r->first : after + 1;
    uint64_t avail = r->last >= from ? r->last - from + 1 : 0;
    size_t n = 0, bytes = 0;
    if (!refs)
        max = 0; /* out of memory: an empty answer with `more` */
    /* Only references under the lock; the copying comes after it. The
     * first event always fits, so a client paging on always progresses. */
    while (n < max && n < avail) {
        slot_t *s = slot_of(r, from + n);
        if (n && bytes + s->len > max_bytes)
            break;
        atomic_fetch_add_explicit(&s->body->refs, 1, memory_order_relaxed);
        refs[n++] = s->body;
        bytes += s->len;
    }
    pthread_rwlock_unlock(&r->lock);
    *more = avail > n;
    msgpack_pack_array(pk, n);
    for (size_t k = 0; k < n; k++) {
        pk->callback(pk->data, refs[k]->data, refs[k]->len);
        body_unref(refs[k]);
    }
    *count = n;
    free(refs);
    return JQ_RING_OK;
}

void jq_ring_get_stats(jq_ring_t *r, jq_ring_stats_t *out)
{
    pthread_rwlock_rdlock(&r->lock);
    out->first_seq = r->first;
    out->last_seq = r->last;
    out->events = r->first <= r->last ? r->last - r->first + 1 : 0;
    out->bytes = r->bytes;
    out->max_events = r->cap;
    out->max_bytes = r->max_bytes;
    pthread_rwlock_unlock(&r->lock);
}
