/* meter.c: per-opcode counters kept by the table (see meter.h). */
#include "meter.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

/* The padding the meter's fields took must stay padding: a queued job's
 * memory is a benchmark figure (LP64 sizes). */
#if UINTPTR_MAX == UINT64_MAX
_Static_assert(sizeof(jq_op_t) == 136, "jq_op_t grew");
_Static_assert(sizeof(jq_job_t) == 96, "jq_job_t grew");
#endif

#define STATUS_MASK 0x07  /* jq_op_t.metered: status counted + 1, 0 none */
#define STARTED 0x80      /* ... it started running in this run */
#define NBUCKETS 512      /* name → slot index, open addressing */

/* 1 ms to 1 hour. */
static const uint64_t seconds_le[] = {
    1000, 5000, 10000, 50000, 100000, 500000, 1000000, 5000000,
    10000000, 30000000, 60000000, 300000000, 1800000000, 3600000000,
};
const jq_histo_spec_t jq_meter_seconds_spec = {
    seconds_le, sizeof seconds_le / sizeof seconds_le[0], 1e-6};

typedef struct {
    char name[JOBQ_MAX_OP_NAME + 1];
    _Atomic int64_t status[JQ_STATUS__COUNT];
    jq_histo_t wait, run;
} slot_t;

struct jq_meter {
    slot_t slots[JQ_METER_MAX_OPCODES + 1]; /* the last: JQ_METER_OTHER_NAME */
    _Atomic unsigned nnamed;                /* named slots published */
    _Atomic bool other_used;
    _Atomic uint16_t index[NBUCKETS];       /* slot + 1; 0 empty */
    pthread_mutex_t mu;                     /* claims a slot for a new name */
    _Atomic uint64_t jobs_finished[JQ_STATUS__COUNT];
    _Atomic uint64_t log_entries;           /* appended to job logs */
};

jq_meter_t *jq_meter_new(void)
{
    jq_meter_t *m = calloc(1, sizeof *m);
    if (!m)
        return NULL;
    pthread_mutex_init(&m->mu, NULL);
    strcpy(m->slots[JQ_METER_MAX_OPCODES].name, JQ_METER_OTHER_NAME);
    return m;
}

void jq_meter_destroy(jq_meter_t **mp)
{
    if (!mp || !*mp)
        return;
    pthread_mutex_destroy(&(*mp)->mu);
    free(*mp);
    *mp = NULL;
}

static unsigned hash_name(const char *s)
{
    uint32_t h = 2166136261u;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 16777619u;
    return h % NBUCKETS;
}

/* The slot of name, or -1 (bucket of the first free entry in *free_at). */
static int probe(jq_meter_t *m, const char *name, unsigned *free_at)
{
    for (unsigned b = hash_name(name), n = 0; n < NBUCKETS; n++, b = (b + 1) % NBUCKETS) {
        unsigned v = atomic_load_explicit(&m->index[b], memory_order_acquire);
        if (!v) {
            *free_at = b;
            return -1;
        }
        if (strncmp(m->slots[v - 1].name, name, JOBQ_MAX_OP_NAME) == 0)
            return (int)v - 1;
    }
    *free_at = NBUCKETS;
    return -1;
}

static unsigned lookup(jq_meter_t *m, const char *name)
{
    unsigned free_at;
    int i = probe(m, name, &free_at);
    if (i >= 0)
        return (unsigned)i;
    pthread_mutex_lock(&m->mu);
    i = probe(m, name, &free_at); /* another shard may have claimed it meanwhile */
    unsigned n = atomic_load_explicit(&m->nnamed, memory_order_relaxed);
    if (i < 0 && n < JQ_METER_MAX_OPCODES && free_at < NBUCKETS) {
        strncpy(m->slots[n].name, name, JOBQ_MAX_OP_NAME);
        /* Name first, then the slot: a reader finding either sees it whole. */
        atomic_store_explicit(&m->index[free_at], (uint16_t)(n + 1), memory_order_release);
        atomic_store_explicit(&m->nnamed, n + 1, memory_order_release);
        i = (int)n;
    }
    pthread_mutex_unlock(&m->mu);
    if (i < 0) {
        atomic_store_explicit(&m->other_used, true, memory_order_relaxed);
        i = JQ_METER_MAX_OPCODES;
    }
    return (unsigned)i;
}

static slot_t *slot_of(jq_meter_t *m, jq_op_t *op)
{
    if (!op->meter_slot)
        op->meter_slot = (uint16_t)(lookup(m, jq_op_name(op)) + 1);
    return &m->slots[op->meter_slot - 1];
}

static uint64_t elapsed(int64_t from, int64_t to)
{
    return to > from ? (uint64_t)(to - from) : 0;
}

static void op_changed(jq_meter_t *m, jq_job_t *job, uint32_t i)
{
    jq_op_t *op = &job->ops[i];
    unsigned prev = op->metered & STATUS_MASK, cur = (unsigned)op->status + 1u;
    if (prev == cur || op->status >= JQ_STATUS__COUNT)
        return;
    slot_t *s = slot_of(m, op);
    if (prev && !jq_status_final((jq_status_t)(prev - 1)))
        atomic_fetch_sub_explicit(&s->status[prev - 1], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&s->status[op->status], 1, memory_order_relaxed);
    uint8_t flags = op->metered & STARTED;
    if (op->status == JQ_RUNNING && !flags && op->exec_ts) {
        int64_t since = i ? job->ops[i - 1].end_ts : job->received_ts;
        jq_histo_observe(&s->wait, &jq_meter_seconds_spec, elapsed(since, op->exec_ts));
        flags = STARTED;
    }
    if (jq_status_final((jq_status_t)op->status) && flags && op->exec_ts)
        jq_histo_observe(&s->run, &jq_meter_seconds_spec, elapsed(op->exec_ts, op->end_ts));
    op->metered = (uint8_t)(flags | cur);
}

void jq_meter_job_in(jq_meter_t *m, jq_job_t *job)
{
    for (uint32_t i = 0; i < job->nops; i++) {
        jq_op_t *op = &job->ops[i];
        if (op->status >= JQ_STATUS__COUNT)
            continue;
        if (!jq_status_final((jq_status_t)op->status))
            atomic_fetch_add_explicit(&slot_of(m, op)->status[op->status], 1,
                                      memory_order_relaxed);
        op->metered = (uint8_t)(op->status + 1);
    }
    job->metered = 1;
}

void jq_meter_job_changed(jq_meter_t *m, jq_job_t *job, const jq_delta_t *d,
                          jq_status_t old_status, jq_status_t new_status)
{
    if (!job->metered) {
        jq_meter_job_in(m, job);
        return;
    }
    if (job->log_serial > d->log_from)
        atomic_fetch_add_explicit(&m->log_entries, job->log_serial - d->log_from,
                                  memory_order_relaxed);
    int lo = d->op_lo < 0 ? 0 : d->op_lo;
    for (int i = lo; i <= d->op_hi && (uint32_t)i < job->nops; i++)
        op_changed(m, job, (uint32_t)i);
    if (jq_status_final(new_status) && !jq_status_final(old_status))
        atomic_fetch_add_explicit(&m->jobs_finished[new_status], 1, memory_order_relaxed);
}

unsigned jq_meter_count(jq_meter_t *m)
{
    unsigned n = atomic_load_explicit(&m->nnamed, memory_order_acquire);
    return n + (atomic_load_explicit(&m->other_used, memory_order_relaxed) ? 1 : 0);
}

bool jq_meter_read(jq_meter_t *m, unsigned i, jq_meter_op_snap_t *out)
{
    unsigned n = atomic_load_explicit(&m->nnamed, memory_order_acquire);
    if (i == n && atomic_load_explicit(&m->other_used, memory_order_relaxed))
        i = JQ_METER_MAX_OPCODES;
    else if (i >= n)
        return false;
    slot_t *s = &m->slots[i];
    memcpy(out->name, s->name, sizeof out->name);
    out->name[JOBQ_MAX_OP_NAME] = '\0';
    for (int k = 0; k < JQ_STATUS__COUNT; k++) {
        int64_t v = atomic_load_explicit(&s->status[k], memory_order_relaxed);
        out->status[k] = v > 0 ? (uint64_t)v : 0;
    }
    jq_histo_read(&s->wait, &jq_meter_seconds_spec, &out->wait);
    jq_histo_read(&s->run, &jq_meter_seconds_spec, &out->run);
    return true;
}

void jq_meter_jobs_finished(jq_meter_t *m, uint64_t out[JQ_STATUS__COUNT])
{
    for (int k = 0; k < JQ_STATUS__COUNT; k++)
        out[k] = atomic_load_explicit(&m->jobs_finished[k], memory_order_relaxed);
}

uint64_t jq_meter_log_entries(jq_meter_t *m)
{
    return atomic_load_explicit(&m->log_entries, memory_order_relaxed);
}
