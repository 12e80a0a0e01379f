/* table.c: shards, their id-ordered job arrays and their outboxes. */
#include "table.h"
#include "jobcodec.h"
#include "meter.h"
#include "mirror.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    jq_job_t **jobs; /* ascending id */
    size_t count, cap;
} job_array_t;

struct jq_shard {
    pthread_rwlock_t lock;
    job_array_t live;                   /* under lock */
    job_array_t archived;               /* under lock */
    uint64_t status_counts[JQ_STATUS__COUNT]; /* live jobs, under lock */
    pthread_mutex_t outbox_mu;          /* leaf lock: outbox and its flush */
    jq_change_t *outbox_head, *outbox_tail;
    jq_table_t *table;
} __attribute__((aligned(64)));

struct jq_table {
    jq_shard_t *shards;
    unsigned nshards;
    jq_sink_fn sink;
    void *sink_ctx;
    _Atomic uint64_t live;     /* live jobs, including reservations */
    _Atomic uint64_t archived;
    _Atomic uint64_t changes;
    jq_meter_t *meter;         /* per-opcode counters (meter.h) */
};

jq_table_t *jq_table_new(unsigned nshards, jq_sink_fn sink, void *sink_ctx)
{
    if (nshards == 0 || nshards > JQ_MAX_SHARDS)
        return NULL;
    jq_table_t *t = calloc(1, sizeof *t);
    if (!t)
        return NULL;
    t->shards = aligned_alloc(64, sizeof(jq_shard_t) * nshards);
    if (!t->shards) {
        free(t);
        return NULL;
    }
    memset(t->shards, 0, sizeof(jq_shard_t) * nshards);
    if (!(t->meter = jq_meter_new())) {
        free(t->shards);
        free(t);
        return NULL;
    }
    t->nshards = nshards;
    t->sink = sink;
    t->sink_ctx = sink_ctx;
    /* Writers first: with glibc's default (readers first) a stream of
     * overlapping queries can starve the executors' updates of a shard. */
    pthread_rwlockattr_t attr;
    pthread_rwlockattr_init(&attr);
    pthread_rwlockattr_setkind_np(&attr, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
    for (unsigned i = 0; i < nshards; i++) {
        pthread_rwlock_init(&t->shards[i].lock, &attr);
        pthread_mutex_init(&t->shards[i].outbox_mu, NULL);
        t->shards[i].table = t;
    }
    pthread_rwlockattr_destroy(&attr);
    return t;
}

static void array_free(job_array_t *a)
{
    for (size_t i = 0; i < a->count; i++)
        jq_job_destroy(&a->jobs[i]);
    free(a->jobs);
    memset(a, 0, sizeof *a);
}

void jq_table_destroy(jq_table_t **tp)
{
    if (!tp || !*tp)
        return;
    jq_table_t *t = *tp;
    for (unsigned i = 0; i < t->nshards; i++) {
        jq_shard_t *sh = &t->shards[i];
        array_free(&sh->live);
        array_free(&sh->archived);
        jq_change_list_free(&sh->outbox_head);
        pthread_rwlock_destroy(&sh->lock);
        pthread_mutex_destroy(&sh->outbox_mu);
    }
    free(t->shards);
    jq_meter_destroy(&t->meter);
    free(t);
    *tp = NULL;
}

unsigned jq_table_shard_count(const jq_table_t *t) { return t->nshards; }

jq_shard_t *jq_table_shard_for(jq_table_t *t, uint64_t id)
{
    return &t->shards[id % t->nshards];
}

jq_shard_t *jq_table_shard_at(jq_table_t *t, unsigned index)
{
    return index < t->nshards ? &t->shards[index] : NULL;
}

bool jq_table_reserve(jq_table_t *t, uint64_t max_live)
{
    uint64_t cur = atomic_load(&t->live);
    do {
        if (cur >= max_live)
            return false;
    } while (!atomic_compare_exchange_weak(&t->live, &cur, cur + 1));
    return true;
}

void jq_table_unreserve(jq_table_t *t) { atomic_fetch_sub(&t->live, 1); }
uint64_t jq_table_live_count(jq_table_t *t) { return atomic_load(&t->live); }
uint64_t jq_table_archived_count(jq_table_t *t) { return atomic_load(&t->archived); }
uint64_t jq_table_changes(jq_table_t *t) { return atomic_load(&t->changes); }
jq_meter_t *jq_table_meter(jq_table_t *t) { return t->meter; }

void jq_table_count_status(jq_table_t *t, uint64_t counts[JQ_STATUS__COUNT])
{
    for (unsigned i = 0; i < t->nshards; i++) {
        jq_shard_t *sh = &t->shards[i];
        jq_shard_rdlock(sh);
        jq_shard_count_status(sh, counts);
        jq_shard_rdunlock(sh);
    }
}

void jq_shard_rdlock(jq_shard_t *sh) { pthread_rwlock_rdlock(&sh->lock); }
void jq_shard_rdunlock(jq_shard_t *sh) { pthread_rwlock_unlock(&sh->lock); }
void jq_shard_wrlock(jq_shard_t *sh) { pthread_rwlock_wrlock(&sh->lock); }

void jq_shard_wrunlock(jq_shard_t *sh)
{
    pthread_rwlock_unlock(&sh->lock);
    jq_shard_flush(sh);
}

void jq_shard_flush(jq_shard_t *sh)
{
    /* Records were appended in the order they were made; holding the
     * outbox mutex across the hand-off keeps two flushing threads from
     * reordering them. */
    pthread_mutex_lock(&sh->outbox_mu);
    jq_change_t *head = sh->outbox_head;
    sh->outbox_head = sh->outbox_tail = NULL;
    if (head) {
        if (sh->table->sink)
            sh->table->sink(sh->table->sink_ctx, head);
        else
            jq_change_list_free(&head);
    }
    pthread_mutex_unlock(&sh->outbox_mu);
}

/* First index with jobs[i]->id > id. */
static size_t array_upper(const job_array_t *a, uint64_t id)
{
    size_t lo = 0, hi = a->count;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (a->jobs[mid]->id <= id)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

static jq_job_t *array_find(const job_array_t *a, uint64_t id)
{
    if (id == 0)
        return NULL;
    size_t i = array_upper(a, id - 1);
    return i < a->count && a->jobs[i]->id == id ? a->jobs[i] : NULL;
}

static int array_insert(job_array_t *a, jq_job_t *job)
{
    if (a->count == a->cap) {
        size_t cap = a->cap ? a->cap * 2 : 64;
        jq_job_t **grown = realloc(a->jobs, cap * sizeof *grown);
        if (!grown)
            return -1;
        a->jobs = grown;
        a->cap = cap;
    }
    /* Ids arrive almost in order: the common case is an append. */
    size_t i = a->count;
    if (i && a->jobs[i - 1]->id >= job->id) {
        i = array_upper(a, job->id);
        if (i && a->jobs[i - 1]->id == job->id)
            return -1;
        memmove(&a->jobs[i + 1], &a->jobs[i], (a->count - i) * sizeof *a->jobs);
    }
    a->jobs[i] = job;
    a->count++;
    return 0;
}

jq_job_t *jq_shard_find(jq_shard_t *sh, uint64_t id)
{
    return array_find(&sh->live, id);
}

jq_job_t *jq_shard_find_any(jq_shard_t *sh, uint64_t id)
{
    jq_job_t *job = array_find(&sh->live, id);
    return job ? job : array_find(&sh->archived, id);
}

static void outbox_append(jq_shard_t *sh, jq_change_t *c)
{
    pthread_mutex_lock(&sh->outbox_mu);
    if (sh->outbox_tail)
        sh->outbox_tail->next = c;
    else
        sh->outbox_head = c;
    sh->outbox_tail = c;
    pthread_mutex_unlock(&sh->outbox_mu);
    atomic_fetch_add_explicit(&sh->table->changes, 1, memory_order_relaxed);
}

/* The job's records so far covered everything up to now. */
static void recorded(jq_job_t *job)
{
    job->record_lost = false;
    job->log_recorded = job->log_serial;
}

static int queue_record(jq_shard_t *sh, jq_job_t *job, const jq_delta_t *d,
                        jq_change_kind_t kind, int64_t now)
{
    /* A record that catches up after a lost one may carry anything. */
    bool log_only = d->op_lo > d->op_hi && !d->job_changed && !job->record_lost;
    job->change_serial++;
    jq_change_t *c = jq_change_encode(job, kind, d, now);
    if (!c) {
        /* No gap in serials; the next record catches up (change.c). */
        job->change_serial--;
        job->record_lost = true;
        return -1;
    }
    if (!log_only)
        job->state_serial = job->change_serial;
    recorded(job);
    outbox_append(sh, c);
    return 0;
}

static void array_remove_at(job_array_t *a, size_t i)
{
    memmove(&a->jobs[i], &a->jobs[i + 1], (a->count - i - 1) * sizeof *a->jobs);
    a->count--;
}

jq_change_t *jq_shard_submit_record(jq_job_t *job, int64_t now)
{
    job->status = (uint8_t)jq_job_derive_status(job);
    job->change_serial = job->state_serial = 1;
    jq_delta_t d;
    jq_delta_init(&d, job);
    jq_change_t *c = jq_change_encode(job, JQ_CHANGE_SUBMIT, &d, now);
    if (!c)
        job->change_serial = job->state_serial = 0;
    return c;
}

int jq_shard_insert(jq_shard_t *sh, jq_job_t *job, jq_change_t *record)
{
    if (array_insert(&sh->live, job) < 0)
        return -1;
    sh->status_counts[job->status]++;
    jq_meter_job_in(sh->table->meter, job);
    recorded(job);
    outbox_append(sh, record);
    return 0;
}

int jq_shard_insert_loaded(jq_shard_t *sh, jq_job_t *job)
{
    job->status = (uint8_t)jq_job_derive_status(job);
    if (array_insert(&sh->live, job) < 0)
        return -1;
    sh->status_counts[job->status]++;
    jq_meter_job_in(sh->table->meter, job);
    atomic_store_explicit(&job->committed_serial, job->change_serial, memory_order_relaxed);
    job->state_serial = job->change_serial;
    recorded(job);
    atomic_fetch_add(&sh->table->live, 1);
    return 0;
}

int jq_shard_emit(jq_shard_t *sh, jq_job_t *job, const jq_delta_t *d,
                  jq_change_kind_t kind, int64_t now)
{
    jq_status_t st = jq_job_derive_status(job);
    if (!job->archived && st != job->status) {
        sh->status_counts[job->status]--;
        sh->status_counts[st]++;
    }
    if (!job->archived)
        jq_meter_job_changed(sh->table->meter, job, d, (jq_status_t)job->status, st);
    job->status = (uint8_t)st;
    return queue_record(sh, job, d, kind, now);
}


/* The archive record is made first: a job whose record could not be made
 * stays live, so memory and store never disagree about where it is. */
static int move_to_archive(jq_shard_t *sh, jq_job_t *job, int64_t now)
{
    job->archived = true;
    jq_delta_t d;
    jq_delta_init(&d, job);
    job->change_serial++;
    jq_change_t *c = jq_change_encode(job, JQ_CHANGE_ARCHIVE, &d, now);
    if (!c || array_insert(&sh->archived, job) < 0) {
        free(c);
        job->change_serial--;
        job->archived = false;
        return -1;
    }
    job->state_serial = job->change_serial;
    recorded(job);
    outbox_append(sh, c);
    sh->status_counts[job->status]--;
    atomic_fetch_sub(&sh->table->live, 1);
    atomic_fetch_add(&sh->table->archived, 1);
    return 0;
}

int jq_shard_archive(jq_shard_t *sh, jq_job_t *job, int64_t now)
{
    if (job->archived || !jq_status_final((jq_status_t)job->status))
        return -1;
    size_t i = array_upper(&sh->live, job->id - 1);
    if (i >= sh->live.count || sh->live.jobs[i] != job)
        return -1;
    if (move_to_archive(sh, job, now) < 0)
        return -1;
    array_remove_at(&sh->live, i);
    return 0;
}

size_t jq_shard_auto_archive(jq_shard_t *sh, int64_t now, int64_t cutoff,
                             uint64_t after_id, size_t max_examine,
                             bool (*spent)(void *ctx), void *ctx,
                             uint64_t *last_id, bool *done)
{
    job_array_t *a = &sh->live;
    size_t i = array_upper(a, after_id), keep = i, archived = 0, examined = 0;
    *last_id = after_id;
    /* One compaction pass: kept jobs slide down over archived ones. */
    for (; i < a->count; i++) {
        jq_job_t *job = a->jobs[i];
        if (examined < max_examine && spent && spent(ctx))
            max_examine = examined; /* out of budget: examine no more */
        if (examined < max_examine) {
            examined++;
            *last_id = job->id;
            if (jq_status_final((jq_status_t)job->status) &&
                (cutoff == INT64_MAX || jq_job_age_ref(job) < cutoff) &&
                move_to_archive(sh, job, now) == 0) {
                archived++;
                continue;
            }
        }
        a->jobs[keep++] = job;
    }
    a->count = keep;
    /* Done when nothing live is left past the last id examined. */
    *done = array_upper(a, *last_id) == a->count;
    return archived;
}

size_t jq_shard_live_size(jq_shard_t *sh) { return sh->live.count; }
size_t jq_shard_archived_size(jq_shard_t *sh) { return sh->archived.count; }
size_t jq_shard_live_after(jq_shard_t *sh, uint64_t id) { return array_upper(&sh->live, id); }
size_t jq_shard_archived_after(jq_shard_t *sh, uint64_t id) { return array_upper(&sh->archived, id); }
jq_job_t *jq_shard_live_at(jq_shard_t *sh, size_t i) { return i < sh->live.count ? sh->live.jobs[i] : NULL; }
jq_job_t *jq_shard_archived_at(jq_shard_t *sh, size_t i) { return i < sh->archived.count ? sh->archived.jobs[i] : NULL; }

void jq_shard_count_status(jq_shard_t *sh, uint64_t counts[JQ_STATUS__COUNT])
{
    for (int s = 0; s < JQ_STATUS__COUNT; s++)
        counts[s] += sh->status_counts[s];
}

void jq_table_evict_archived(jq_table_t *t, uint64_t id)
{
    jq_shard_t *sh = jq_table_shard_for(t, id);
    pthread_rwlock_wrlock(&sh->lock);
    job_array_t *a = &sh->archived;
    size_t i = id ? array_upper(a, id - 1) : a->count;
    if (i < a->count && a->jobs[i]->id == id) {
        jq_job_t *job = a->jobs[i];
        array_remove_at(a, i);
        jq_job_destroy(&job);
    }
    pthread_rwlock_unlock(&sh->lock);
}

void jq_table_mark_committed(jq_table_t *t, const jq_change_t *head)
{
    /* A read lock is enough: only this field changes, atomically, and
     * readers of the job may go on meanwhile. Consecutive records of one
     * shard share one lock hold. */
    jq_shard_t *held = NULL;
    for (const jq_change_t *c = head; c; c = c->next) {
        if (c->job_id == 0)
            continue;
        jq_shard_t *sh = jq_table_shard_for(t, c->job_id);
        if (sh != held) {
            if (held)
                pthread_rwlock_unlock(&held->lock);
            pthread_rwlock_rdlock(&sh->lock);
            held = sh;
        }
        jq_job_t *job = jq_shard_find_any(sh, c->job_id);
        if (job && atomic_load_explicit(&job->committed_serial, memory_order_relaxed) < c->serial)
            atomic_store_explicit(&job->committed_serial, c->serial, memory_order_relaxed);
    }
    if (held)
        pthread_rwlock_unlock(&held->lock);
}

void jq_table_add_archived(jq_table_t *t, uint64_t n)
{
    atomic_fetch_add(&t->archived, n);
}

int jq_table_replay(jq_table_t *t, const jq_change_t *c)
{
    if (c->job_id == 0)
        return 0; /* the drain flag, the opcodes: nothing a listing shows */
    msgpack_unpacked up;
    msgpack_unpacked_init(&up);
    if (msgpack_unpack_next(&up, c->data, c->len, NULL) != MSGPACK_UNPACK_SUCCESS) {
        msgpack_unpacked_destroy(&up);
        return -1;
    }
    jq_shard_t *sh = jq_table_shard_for(t, c->job_id);
    int rc = 0;
    pthread_rwlock_wrlock(&sh->lock);
    if (c->kind == JQ_CHANGE_SUBMIT) {
        char err[128];
        jq_job_t *job = jq_job_from_submit_record(&up.data, c->job_id, err, sizeof err);
        if (!job) {
            rc = -1;
        } else if (array_find(&sh->live, c->job_id)) {
            jq_job_destroy(&job); /* the view was loaded after this record was applied */
        } else if ((rc = jq_shard_insert_loaded(sh, job)) < 0) {
            jq_job_destroy(&job);
        }
    } else {
        size_t i = array_upper(&sh->live, c->job_id - 1);
        jq_job_t *job = i < sh->live.count && sh->live.jobs[i]->id == c->job_id
                            ? sh->live.jobs[i] : NULL;
        uint8_t was = job ? job->status : 0;
        if (!job) {
            rc = 1;
        } else if (jq_mirror_apply(job, &up.data, JQ_MIRROR_ALL, NULL, NULL) < 0) {
            rc = -1;
        } else if (job->archived) { /* archived jobs are read from the store */
            sh->status_counts[was]--;
            array_remove_at(&sh->live, i);
            atomic_fetch_sub(&t->live, 1);
            jq_job_destroy(&job);
        } else {
            job->status = (uint8_t)jq_job_derive_status(job);
            sh->status_counts[was]--;
            sh->status_counts[job->status]++;
            atomic_store_explicit(&job->committed_serial, job->change_serial,
                                  memory_order_relaxed);
            job->state_serial = job->change_serial;
        }
    }
    pthread_rwlock_unlock(&sh->lock);
    msgpack_unpacked_destroy(&up);
    return rc;
}

int jq_table_take_live(jq_table_t *t, int (*fn)(void *ctx, jq_job_t *job), void *ctx)
{
    for (unsigned i = 0; i < t->nshards; i++) {
        jq_shard_t *sh = &t->shards[i];
        pthread_rwlock_wrlock(&sh->lock);
        job_array_t taken = sh->live;
        memset(&sh->live, 0, sizeof sh->live);
        memset(sh->status_counts, 0, sizeof sh->status_counts);
        atomic_fetch_sub(&t->live, taken.count);
        pthread_rwlock_unlock(&sh->lock);
        /* Handed on outside the lock: fn may lock another table's shard. */
        int rc = 0;
        for (size_t k = 0; k < taken.count; k++) {
            if (rc == 0)
                rc = fn(ctx, taken.jobs[k]);
            else
                jq_job_destroy(&taken.jobs[k]);
        }
        free(taken.jobs);
        if (rc < 0)
            return -1;
    }
    return 0;
}
