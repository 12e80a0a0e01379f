/* test_table_stress.c: many threads on one table, checking invariants
 * (the "validate" kind of test: fails loudly, measures nothing).
 *
 * 8 writers submit jobs, walk them through every transition, log, cancel,
 * change priorities, archive and auto-archive, always through the write
 * protocol (wrlock, find, transition, emit, wrunlock). 8 readers look jobs
 * up and page through shards under read locks. Checked while running:
 * every change record arrives at the sink with the job's next serial (1,
 * 2, 3... per job, no gap, no reorder), nothing but an archive record
 * follows a final one, a job is never both live and archived, pages are in
 * ascending id order, a shard's status counters equal a recount and a
 * job's cached status equals its derived one. Checked at the end: the same
 * against the final table, plus record and job totals.
 *
 * Iterations per thread: JOBQ_STRESS_ITERS (default 20000, 8000 under TSan). */
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>

#include <cmocka.h>
#include <msgpack.h>

#include "opdef.h"
#include "table.h"

#define NWRITERS 8
#define NREADERS 8
#define NSHARDS 8
#define MAX_JOBS 40000
#define T0 1700000000000000LL

static int accept_all(const msgpack_object *a, char *e, size_t l)
{
    (void)a, (void)e, (void)l;
    return 0;
}
static void summarize(const msgpack_object *a, char *buf, size_t len)
{
    (void)a;
    snprintf(buf, len, "t.op()");
}
static const jq_opdef_t def = {.name = "t.op", .validate = accept_all, .summarize = summarize};

/* ---- shared state ---- */

static jq_table_t *table;
static _Atomic uint64_t next_id;        /* last id handed out */
static _Atomic uint64_t violations;
static _Atomic uint64_t emitted;        /* records the writers produced */
static char first_violation[512];
static pthread_mutex_t violation_mu = PTHREAD_MUTEX_INITIALIZER;
/* ThreadSanitizer runs ~10x slower: fewer iterations keep it near 3 s. */
#if defined(__SANITIZE_THREAD__)
static long iters = 8000;
#else
static long iters = 20000;
#endif

/* Per job, touched only by the sink under the job's shard outbox mutex
 * (a job never changes shard), read after all threads joined. */
typedef struct {
    uint64_t last_serial;
    bool final_seen, archived_seen;
} seen_t;
static seen_t seen[MAX_JOBS + 1];
static _Atomic uint64_t records;

static void violation(const char *fmt, ...)
{
    if (atomic_fetch_add(&violations, 1) == 0) {
        pthread_mutex_lock(&violation_mu);
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(first_violation, sizeof first_violation, fmt, ap);
        va_end(ap);
        pthread_mutex_unlock(&violation_mu);
    }
}

static const msgpack_object *get(const msgpack_object *map, const char *key)
{
    if (map->type != MSGPACK_OBJECT_MAP)
        return NULL;
    for (uint32_t i = 0; i < map->via.map.size; i++) {
        const msgpack_object *k = &map->via.map.ptr[i].key;
        if (k->type == MSGPACK_OBJECT_STR && k->via.str.size == strlen(key) &&
            memcmp(k->via.str.ptr, key, k->via.str.size) == 0)
            return &map->via.map.ptr[i].val;
    }
    return NULL;
}

static bool str_is(const msgpack_object *o, const char *s)
{
    return o && o->type == MSGPACK_OBJECT_STR && o->via.str.size == strlen(s) &&
           memcmp(o->via.str.ptr, s, o->via.str.size) == 0;
}

static void sink(void *ctx, jq_change_t *head)
{
    (void)ctx;
    for (jq_change_t *c = head; c; c = c->next) {
        atomic_fetch_add(&records, 1);
        if (c->job_id == 0 || c->job_id > MAX_JOBS) {
            violation("record for job %llu", (unsigned long long)c->job_id);
            continue;
        }
        seen_t *s = &seen[c->job_id];
        if (c->serial != s->last_serial + 1)
            violation("job %llu: serial %llu after %llu", (unsigned long long)c->job_id,
                      (unsigned long long)c->serial, (unsigned long long)s->last_serial);
        s->last_serial = c->serial;
        msgpack_unpacked up;
        msgpack_unpacked_init(&up);
        if (msgpack_unpack_next(&up, c->data, c->len, NULL) != MSGPACK_UNPACK_SUCCESS) {
            violation("job %llu: undecodable record", (unsigned long long)c->job_id);
            msgpack_unpacked_destroy(&up);
            continue;
        }
        const msgpack_object *job = get(&up.data, "job"), *serial = get(&up.data, "serial"),
                             *kind = get(&up.data, "kind"), *status = get(&up.data, "status");
        if (!job || job->via.u64 != c->job_id || !serial || serial->via.u64 != c->serial)
            violation("job %llu: record body disagrees with header",
                      (unsigned long long)c->job_id);
        bool archive = str_is(kind, "archive"), submit = str_is(kind, "submit");
        if (!archive && !submit && !str_is(kind, "update"))
            violation("job %llu: bad kind", (unsigned long long)c->job_id);
        if (submit != (c->serial == 1))
            violation("job %llu: submit record at serial %llu", (unsigned long long)c->job_id,
                      (unsigned long long)c->serial);
        if (s->archived_seen)
            violation("job %llu: record after archive", (unsigned long long)c->job_id);
        if (s->final_seen && !archive)
            violation("job %llu: update after final", (unsigned long long)c->job_id);
        bool final = str_is(status, "success") || str_is(status, "error") ||
                     str_is(status, "canceled");
        if (archive && !final)
            violation("job %llu: archived while not final", (unsigned long long)c->job_id);
        if (final)
            s->final_seen = true;
        if (archive)
            s->archived_seen = true;
        msgpack_unpacked_destroy(&up);
    }
    jq_change_list_free(&head);
}

static uint64_t rnd(uint64_t *x)
{
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    return *x;
}

/* ---- writers ---- */

static void submit(uint64_t *x)
{
    uint64_t id = atomic_fetch_add(&next_id, 1) + 1;
    if (id > MAX_JOBS) {
        atomic_fetch_sub(&next_id, 1);
        return;
    }
    uint32_t nops = 1 + (uint32_t)(rnd(x) % 3);
    jq_job_t *job = jq_job_new(id, nops, T0);
    for (uint32_t i = 0; i < nops; i++) {
        jq_op_set_name(&job->ops[i], &def, NULL, 0);
        job->ops[i].priority = job->ops[i].input_priority = (int8_t)((int)(rnd(x) % 3) * 10 - 10);
    }
    if (!jq_table_reserve(table, UINT64_MAX))
        violation("reserve failed");
    jq_shard_t *sh = jq_table_shard_for(table, id);
    jq_shard_wrlock(sh);
    if (jq_shard_insert(sh, job, jq_shard_submit_record(job, T0)) != 0)
        violation("insert of %llu failed", (unsigned long long)id);
    else
        atomic_fetch_add(&emitted, 1);
    jq_shard_wrunlock(sh);
}

static void transition(uint64_t *x, int64_t now)
{
    uint64_t last = atomic_load(&next_id);
    if (!last)
        return;
    uint64_t id = 1 + rnd(x) % last;
    jq_shard_t *sh = jq_table_shard_for(table, id);
    jq_shard_wrlock(sh);
    jq_job_t *job = jq_shard_find(sh, id);
    if (job) {
        jq_delta_t d;
        jq_delta_init(&d, job);
        int rc = -1;
        unsigned what = (unsigned)(rnd(x) % 100);
        if (what < 25) {
            rc = jq_job_pickup(job, now, &d);
        } else if (what < 45) {
            rc = jq_job_op_running(job, now, &d);
        } else if (what < 60) {
            char msg[32];
            int n = snprintf(msg, sizeof msg, "log %llu", (unsigned long long)rnd(x));
            rc = jq_job_log(job, now, "message", msg, (size_t)n, 0, &d);
        } else if (what < 80) {
            uint32_t cur = jq_job_current_op(job);
            if (cur < job->nops && job->ops[cur].status == JQ_RUNNING)
                rc = jq_job_op_finish(job, now, rnd(x) % 8 != 0, NULL, &d);
        } else if (what < 87) {
            rc = jq_job_cancel(job, now, &d) == JQ_CANCEL_TOO_LATE ? -1 : 0;
        } else if (what < 92) {
            if (job->status == JQ_CANCELING)
                rc = jq_job_mark_canceled(job, now, &d);
        } else if (what < 97) {
            rc = jq_job_change_priority(job, (int)(rnd(x) % 3) * 10 - 10, &d) ==
                         JQ_PRIO_CHANGED ? 0 : -1;
        } else {
            rc = jq_job_fail(job, now, "stress", &d);
        }
        if (rc == 0) {
            if (jq_shard_emit(sh, job, &d, JQ_CHANGE_UPDATE, now) != 0)
                violation("emit failed");
            else
                atomic_fetch_add(&emitted, 1);
        } else if (!jq_delta_empty(&d, job)) {
            violation("job %llu: a refused transition changed something",
                      (unsigned long long)id);
        }
    }
    jq_shard_wrunlock(sh);
}

static void archive(uint64_t *x, int64_t now)
{
    uint64_t last = atomic_load(&next_id);
    if (!last)
        return;
    uint64_t id = 1 + rnd(x) % last;
    jq_shard_t *sh = jq_table_shard_for(table, id);
    jq_shard_wrlock(sh);
    jq_job_t *job = jq_shard_find(sh, id);
    if (job) {
        bool final = jq_status_final((jq_status_t)job->status);
        int rc = jq_shard_archive(sh, job, now);
        if ((rc == 0) != final)
            violation("job %llu: archive returned %d for status %s", (unsigned long long)id,
                      rc, jq_status_name((jq_status_t)job->status));
        if (rc == 0)
            atomic_fetch_add(&emitted, 1);
    }
    jq_shard_wrunlock(sh);
}

static void auto_archive(uint64_t *x, int64_t now)
{
    jq_shard_t *sh = jq_table_shard_at(table, (unsigned)(rnd(x) % NSHARDS));
    uint64_t last = atomic_load(&next_id), after = last ? rnd(x) % last : 0, last_id;
    bool done;
    jq_shard_wrlock(sh);
    size_t n = jq_shard_auto_archive(sh, now, INT64_MAX, after, 4, NULL, NULL, &last_id, &done);
    jq_shard_wrunlock(sh);
    atomic_fetch_add(&emitted, n);
    if (last_id < after)
        violation("auto-archive went backwards");
}

static void *writer(void *arg)
{
    uint64_t x = 0x9E3779B97F4A7C15ull * ((uintptr_t)arg + 1);
    for (long i = 0; i < iters; i++) {
        int64_t now = T0 + i;
        unsigned what = (unsigned)(rnd(&x) % 100);
        if (what < 15)
            submit(&x);
        else if (what < 90)
            transition(&x, now);
        else if (what < 98)
            archive(&x, now);
        else
            auto_archive(&x, now);
    }
    return NULL;
}

/* ---- readers ---- */

/* Under a lock: is id in the shard's archive? */
static bool in_archive(jq_shard_t *sh, uint64_t id)
{
    jq_job_t *a = jq_shard_archived_at(sh, jq_shard_archived_after(sh, id - 1));
    return a && a->id == id;
}

static void check_job(jq_shard_t *sh, const jq_job_t *job)
{
    if (job->status != jq_job_derive_status(job))
        violation("job %llu: cached status %s, derived %s", (unsigned long long)job->id,
                  jq_status_name((jq_status_t)job->status),
                  jq_status_name(jq_job_derive_status(job)));
    if ((job->end_ts != 0) != jq_status_final((jq_status_t)job->status))
        violation("job %llu: end_ts and finality disagree", (unsigned long long)job->id);
    (void)sh;
}

static void lookup(uint64_t *x)
{
    uint64_t last = atomic_load(&next_id);
    uint64_t id = 1 + rnd(x) % (last + 1);
    jq_shard_t *sh = jq_table_shard_for(table, id);
    jq_shard_rdlock(sh);
    jq_job_t *live = jq_shard_find(sh, id), *any = jq_shard_find_any(sh, id);
    if (live) {
        if (live->archived || any != live || in_archive(sh, id))
            violation("job %llu both live and archived", (unsigned long long)id);
        check_job(sh, live);
    } else if (any) {
        if (!any->archived || !jq_status_final((jq_status_t)any->status))
            violation("job %llu archived but not final", (unsigned long long)id);
        check_job(sh, any);
    }
    jq_shard_rdunlock(sh);
}

static void page(uint64_t *x)
{
    jq_shard_t *sh = jq_table_shard_at(table, (unsigned)(rnd(x) % NSHARDS));
    uint64_t last = atomic_load(&next_id), after = last ? rnd(x) % last : 0;
    jq_shard_rdlock(sh);
    uint64_t prev = after;
    size_t i = jq_shard_live_after(sh, after);
    for (size_t n = 0; n < 32; n++, i++) {
        jq_job_t *job = jq_shard_live_at(sh, i);
        if (!job)
            break;
        if (job->id <= prev)
            violation("live page out of order: %llu after %llu", (unsigned long long)job->id,
                      (unsigned long long)prev);
        if (job->archived || in_archive(sh, job->id))
            violation("job %llu both live and archived", (unsigned long long)job->id);
        prev = job->id;
    }
    prev = after;
    i = jq_shard_archived_after(sh, after);
    for (size_t n = 0; n < 32; n++, i++) {
        jq_job_t *job = jq_shard_archived_at(sh, i);
        if (!job)
            break;
        if (job->id <= prev || !job->archived)
            violation("archived page out of order or unflagged");
        prev = job->id;
    }
    jq_shard_rdunlock(sh);
}

static void recount(jq_shard_t *sh)
{
    uint64_t counted[JQ_STATUS__COUNT] = {0}, kept[JQ_STATUS__COUNT] = {0};
    jq_shard_count_status(sh, kept);
    for (size_t i = 0; i < jq_shard_live_size(sh); i++) {
        jq_job_t *job = jq_shard_live_at(sh, i);
        counted[job->status]++;
        check_job(sh, job);
    }
    for (int s = 0; s < JQ_STATUS__COUNT; s++)
        if (counted[s] != kept[s])
            violation("shard counter %s = %llu, recount %llu", jq_status_name((jq_status_t)s),
                      (unsigned long long)kept[s], (unsigned long long)counted[s]);
}

static void *reader(void *arg)
{
    uint64_t x = 0xD1B54A32D192ED03ull * ((uintptr_t)arg + 1);
    for (long i = 0; i < iters; i++) {
        unsigned what = (unsigned)(rnd(&x) % 100);
        if (what < 60) {
            lookup(&x);
        } else if (what < 95) {
            page(&x);
        } else {
            jq_shard_t *sh = jq_table_shard_at(table, (unsigned)(rnd(&x) % NSHARDS));
            jq_shard_rdlock(sh);
            recount(sh);
            jq_shard_rdunlock(sh);
        }
    }
    return NULL;
}

static void test_stress(void **state)
{
    (void)state;
    const char *env = getenv("JOBQ_STRESS_ITERS");
    if (env && atol(env) > 0)
        iters = atol(env);
    table = jq_table_new(NSHARDS, sink, NULL);
    assert_non_null(table);
    pthread_t w[NWRITERS], r[NREADERS];
    for (uintptr_t i = 0; i < NWRITERS; i++)
        assert_int_equal(pthread_create(&w[i], NULL, writer, (void *)i), 0);
    for (uintptr_t i = 0; i < NREADERS; i++)
        assert_int_equal(pthread_create(&r[i], NULL, reader, (void *)i), 0);
    for (int i = 0; i < NWRITERS; i++)
        pthread_join(w[i], NULL);
    for (int i = 0; i < NREADERS; i++)
        pthread_join(r[i], NULL);
    if (atomic_load(&violations))
        fail_msg("%llu invariant violations; first: %s",
                 (unsigned long long)atomic_load(&violations), first_violation);

    /* The final table. */
    uint64_t jobs = atomic_load(&next_id), live = 0, archived = 0;
    assert_true(jobs > 100);
    uint64_t statuses[JQ_STATUS__COUNT] = {0};
    for (unsigned i = 0; i < NSHARDS; i++) {
        jq_shard_t *sh = jq_table_shard_at(table, i);
        jq_shard_rdlock(sh);
        recount(sh);
        live += jq_shard_live_size(sh);
        archived += jq_shard_archived_size(sh);
        for (size_t k = 0; k < jq_shard_live_size(sh); k++)
            statuses[jq_shard_live_at(sh, k)->status]++;
        jq_shard_rdunlock(sh);
    }
    assert_int_equal(atomic_load(&violations), 0);
    assert_int_equal(live + archived, jobs);
    assert_int_equal(jq_table_live_count(table), live);
    assert_int_equal(jq_table_archived_count(table), archived);
    assert_int_equal(jq_table_changes(table), atomic_load(&emitted));
    assert_int_equal(atomic_load(&records), atomic_load(&emitted));
    for (uint64_t id = 1; id <= jobs; id++) {
        jq_shard_t *sh = jq_table_shard_for(table, id);
        jq_job_t *job = jq_shard_find_any(sh, id);
        assert_non_null(job);
        assert_int_equal(seen[id].last_serial, job->change_serial);
        assert_int_equal(seen[id].archived_seen, job->archived);
        assert_int_equal(seen[id].final_seen, jq_status_final((jq_status_t)job->status));
    }
    /* Every kind of outcome happened. */
    uint64_t final = 0;
    for (int s = 0; s < JQ_STATUS__COUNT; s++)
        final += jq_status_final((jq_status_t)s) ? statuses[s] : 0;
    assert_true(archived > 0);
    print_message("%llu jobs, %llu archived, %llu records\n", (unsigned long long)jobs,
                  (unsigned long long)archived, (unsigned long long)atomic_load(&records));
    (void)final;
    jq_table_destroy(&table);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_stress),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
