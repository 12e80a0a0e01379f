/* test_table.c: the sharded job table (queue/table.c): insert, find,
 * archive, the id-ordered listing helpers, auto-archive (age cutoff and
 * the max_examine budget with its last_id/done contract), status counters,
 * the live-job reservation, and the change records the write protocol
 * hands to the sink — decoded and checked field by field. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <msgpack.h>

#include "mirror.h"
#include "opdef.h"
#include "table.h"
#include "waiters.h"

#include <sys/mman.h>

#define T0 1700000000000000LL

/* ---- an opcode definition for jobs built by hand ---- */

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

static jq_job_t *make_job(uint64_t id, uint32_t nops, int64_t now)
{
    jq_job_t *job = jq_job_new(id, nops, now);
    assert_non_null(job);
    for (uint32_t i = 0; i < nops; i++) {
        jq_op_set_name(&job->ops[i], &def, NULL, 0);
        job->ops[i].priority = job->ops[i].input_priority = (int8_t)(i == 1 ? -10 : 0);
    }
    return job;
}

/* ---- the sink: keeps every record ---- */

typedef struct {
    jq_change_t **recs;
    size_t n, cap;
    unsigned calls;
} sink_t;

static void sink(void *ctx, jq_change_t *head)
{
    sink_t *s = ctx;
    s->calls++;
    while (head) {
        jq_change_t *next = head->next;
        head->next = NULL;
        if (s->n == s->cap) {
            s->cap = s->cap ? 2 * s->cap : 64;
            s->recs = realloc(s->recs, s->cap * sizeof *s->recs);
            assert_non_null(s->recs);
        }
        s->recs[s->n++] = head;
        head = next;
    }
}

static void sink_clear(sink_t *s)
{
    for (size_t i = 0; i < s->n; i++)
        free(s->recs[i]);
    free(s->recs);
    memset(s, 0, sizeof *s);
}

/* A decoded record. */
typedef struct {
    msgpack_unpacked up;
    const msgpack_object *root;
} rec_t;

static void rec_open(rec_t *r, const jq_change_t *c)
{
    msgpack_unpacked_init(&r->up);
    size_t off = 0;
    assert_int_equal(msgpack_unpack_next(&r->up, c->data, c->len, &off), MSGPACK_UNPACK_SUCCESS);
    assert_int_equal(off, c->len);
    r->root = &r->up.data;
    assert_int_equal(r->root->type, MSGPACK_OBJECT_MAP);
}

static void rec_close(rec_t *r) { msgpack_unpacked_destroy(&r->up); }

static const msgpack_object *get(const msgpack_object *map, const char *key)
{
    for (uint32_t i = 0; i < map->via.map.size; i++) {
        const msgpack_object *k = &map->via.map.ptr[i].key;
        if (k->type == MSGPACK_OBJECT_STR && k->via.str.size == strlen(key) &&
            memcmp(k->via.str.ptr, key, k->via.str.size) == 0)
            return &map->via.map.ptr[i].val;
    }
    fail_msg("record has no key '%s'", key);
    return NULL;
}

static void assert_str(const msgpack_object *o, const char *s)
{
    assert_int_equal(o->type, MSGPACK_OBJECT_STR);
    if (o->via.str.size != strlen(s) || memcmp(o->via.str.ptr, s, o->via.str.size) != 0)
        fail_msg("got '%.*s', expected '%s'", (int)o->via.str.size, o->via.str.ptr, s);
}

static void assert_ts(const msgpack_object *o, int64_t usec)
{
    if (!usec) {
        assert_int_equal(o->type, MSGPACK_OBJECT_NIL);
        return;
    }
    assert_int_equal(o->type, MSGPACK_OBJECT_ARRAY);
    assert_int_equal(o->via.array.ptr[0].via.u64, usec / 1000000);
    assert_int_equal(o->via.array.ptr[1].via.u64, usec % 1000000);
}

/* Check a record's header; returns the number of changed ops. */
static void check_rec(const jq_change_t *c, uint64_t job, uint64_t serial, const char *kind,
                      const char *status, uint32_t nops_changed, const uint32_t *log_serials,
                      uint32_t nlog)
{
    assert_int_equal(c->job_id, job);
    assert_int_equal(c->serial, serial);
    rec_t r;
    rec_open(&r, c);
    assert_int_equal(get(r.root, "job")->via.u64, job);
    assert_int_equal(get(r.root, "serial")->via.u64, serial);
    assert_str(get(r.root, "kind"), kind);
    assert_str(get(r.root, "status"), status);
    const msgpack_object *ops = get(r.root, "ops");
    assert_int_equal(ops->type, MSGPACK_OBJECT_ARRAY);
    assert_int_equal(ops->via.array.size, nops_changed);
    const msgpack_object *log = get(r.root, "log");
    assert_int_equal(log->type, MSGPACK_OBJECT_ARRAY);
    assert_int_equal(log->via.array.size, nlog);
    for (uint32_t i = 0; i < nlog; i++) {
        const msgpack_object *e = &log->via.array.ptr[i];
        assert_int_equal(e->type, MSGPACK_OBJECT_ARRAY);
        assert_int_equal(e->via.array.size, 4);
        assert_int_equal(e->via.array.ptr[0].via.u64, log_serials[i]);
    }
    rec_close(&r);
}

/* The status and index of changed op k in a record. */
static void check_rec_op(const jq_change_t *c, uint32_t k, uint32_t index, const char *status)
{
    rec_t r;
    rec_open(&r, c);
    const msgpack_object *op = &get(r.root, "ops")->via.array.ptr[k];
    assert_int_equal(get(op, "index")->via.u64, index);
    assert_str(get(op, "status"), status);
    rec_close(&r);
}

/* The write protocol, for one transition. */
typedef int (*transition_fn)(jq_job_t *job, int64_t now, jq_delta_t *d);

static int apply(jq_table_t *t, uint64_t id, transition_fn fn, int64_t now)
{
    jq_shard_t *sh = jq_table_shard_for(t, id);
    jq_shard_wrlock(sh);
    jq_job_t *job = jq_shard_find(sh, id);
    int rc = -1;
    if (job) {
        jq_delta_t d;
        jq_delta_init(&d, job);
        rc = fn(job, now, &d);
        if (rc == 0)
            assert_int_equal(jq_shard_emit(sh, job, &d, JQ_CHANGE_UPDATE, now), 0);
    }
    jq_shard_wrunlock(sh);
    return rc;
}

static int t_running(jq_job_t *j, int64_t now, jq_delta_t *d) { return jq_job_op_running(j, now, d); }
static int t_ok(jq_job_t *j, int64_t now, jq_delta_t *d) { return jq_job_op_finish(j, now, true, NULL, d); }
static int t_fail(jq_job_t *j, int64_t now, jq_delta_t *d) { return jq_job_fail(j, now, "boom", d); }
static int t_cancel(jq_job_t *j, int64_t now, jq_delta_t *d)
{
    return jq_job_cancel(j, now, d) == JQ_CANCEL_TOO_LATE ? -1 : 0;
}
static int t_log2(jq_job_t *j, int64_t now, jq_delta_t *d)
{
    if (jq_job_log(j, now, "message", "one", 3, 0, d) < 0)
        return -1;
    return jq_job_log(j, now + 1, "message", "two", 3, 0, d);
}

/* Under the write lock: jq_shard_insert with the submit record made
 * first, as the daemon does; the record is freed when the insert fails. */
static int insert_locked(jq_shard_t *sh, jq_job_t *job, int64_t now)
{
    jq_change_t *rec = jq_shard_submit_record(job, now);
    assert_non_null(rec);
    int rc = jq_shard_insert(sh, job, rec);
    if (rc < 0)
        free(rec);
    return rc;
}

static void insert(jq_table_t *t, jq_job_t *job, int64_t now)
{
    assert_true(jq_table_reserve(t, UINT64_MAX));
    jq_shard_t *sh = jq_table_shard_for(t, job->id);
    jq_shard_wrlock(sh);
    assert_int_equal(insert_locked(sh, job, now), 0);
    jq_shard_wrunlock(sh);
}

/* ---- tests ---- */

static void test_new_destroy(void **state)
{
    (void)state;
    assert_null(jq_table_new(0, NULL, NULL));
    assert_null(jq_table_new(JQ_MAX_SHARDS + 1, NULL, NULL));
    jq_table_t *t = jq_table_new(JQ_MAX_SHARDS, NULL, NULL);
    assert_non_null(t);
    assert_int_equal(jq_table_shard_count(t), JQ_MAX_SHARDS);
    jq_table_destroy(&t);
    assert_null(t);
    jq_table_destroy(&t);
    t = jq_table_new(4, NULL, NULL);
    assert_ptr_equal(jq_table_shard_for(t, 5), jq_table_shard_at(t, 1));
    assert_ptr_equal(jq_table_shard_for(t, 8), jq_table_shard_at(t, 0));
    assert_null(jq_table_shard_at(t, 4));
    /* No sink: records are freed; jobs left in the table are freed too. */
    insert(t, make_job(1, 1, T0), T0);
    assert_int_equal(apply(t, 1, t_cancel, T0 + 1), 0);
    assert_int_equal(jq_table_changes(t), 2);
    jq_table_destroy(&t);
}

static void test_insert_find_archive(void **state)
{
    (void)state;
    sink_t s = {0};
    jq_table_t *t = jq_table_new(4, sink, &s);
    for (uint64_t id = 1; id <= 10; id++)
        insert(t, make_job(id, 2, T0 + (int64_t)id), T0);
    assert_int_equal(jq_table_live_count(t), 10);
    assert_int_equal(jq_table_archived_count(t), 0);
    for (uint64_t id = 1; id <= 10; id++) {
        jq_shard_t *sh = jq_table_shard_for(t, id);
        jq_shard_rdlock(sh);
        jq_job_t *job = jq_shard_find(sh, id);
        assert_non_null(job);
        assert_int_equal(job->id, id);
        assert_ptr_equal(jq_shard_find_any(sh, id), job);
        assert_null(jq_shard_find(sh, id + 4 * 100)); /* same shard, absent */
        jq_shard_rdunlock(sh);
    }
    jq_shard_t *sh0 = jq_table_shard_at(t, 0);
    jq_shard_rdlock(sh0);
    assert_null(jq_shard_find(sh0, 0)); /* id 0 is never a job */
    assert_null(jq_shard_find_any(sh0, 0));
    jq_shard_rdunlock(sh0);

    /* The same id twice: refused, job untouched (caller frees). */
    jq_job_t *dup = make_job(3, 1, T0);
    jq_shard_t *sh = jq_table_shard_for(t, 3);
    jq_shard_wrlock(sh);
    assert_int_equal(insert_locked(sh, dup, T0), -1);
    jq_shard_wrunlock(sh);
    jq_job_destroy(&dup);

    /* Archive: only final live jobs. */
    sh = jq_table_shard_for(t, 6);
    jq_shard_wrlock(sh);
    jq_job_t *job = jq_shard_find(sh, 6);
    assert_int_equal(jq_shard_archive(sh, job, T0), -1); /* queued */
    jq_shard_wrunlock(sh);
    assert_int_equal(apply(t, 6, t_cancel, T0 + 100), 0);
    size_t before = s.n;
    jq_shard_wrlock(sh);
    job = jq_shard_find(sh, 6);
    assert_int_equal(jq_shard_archive(sh, job, T0 + 200), 0);
    assert_true(job->archived);
    assert_null(jq_shard_find(sh, 6));
    assert_ptr_equal(jq_shard_find_any(sh, 6), job);
    assert_int_equal(jq_shard_archive(sh, job, T0 + 300), -1); /* already */
    assert_int_equal(s.n, before); /* records wait for the unlock */
    jq_shard_wrunlock(sh);
    assert_int_equal(s.n, before + 1);
    check_rec(s.recs[s.n - 1], 6, 3, "archive", "canceled", 0, NULL, 0);
    assert_int_equal(jq_table_live_count(t), 9);
    assert_int_equal(jq_table_archived_count(t), 1);
    jq_shard_rdlock(sh);
    assert_int_equal(jq_shard_live_size(sh), 2);   /* 2, 10 */
    assert_int_equal(jq_shard_archived_size(sh), 1);
    jq_shard_rdunlock(sh);
    /* A transition on an archived job is not possible through find. */
    assert_int_equal(apply(t, 6, t_running, T0), -1);
    jq_table_destroy(&t);
    sink_clear(&s);
}

static void test_reserve(void **state)
{
    (void)state;
    jq_table_t *t = jq_table_new(2, NULL, NULL);
    assert_true(jq_table_reserve(t, 2));
    assert_true(jq_table_reserve(t, 2));
    assert_false(jq_table_reserve(t, 2));
    assert_int_equal(jq_table_live_count(t), 2);
    jq_table_unreserve(t);
    assert_true(jq_table_reserve(t, 2));
    assert_false(jq_table_reserve(t, 0));
    jq_table_unreserve(t);
    jq_table_unreserve(t);
    assert_int_equal(jq_table_live_count(t), 0);
    jq_table_destroy(&t);
}

/* Ids arrive out of order; listings come out in id order. */
static void test_listing_order(void **state)
{
    (void)state;
    jq_table_t *t = jq_table_new(1, NULL, NULL);
    const uint64_t ids[] = {50, 30, 90, 10, 70, 20, 80, 40, 60, 100, 5};
    for (size_t i = 0; i < sizeof ids / sizeof ids[0]; i++)
        insert(t, make_job(ids[i], 1, T0), T0);
    jq_shard_t *sh = jq_table_shard_at(t, 0);
    for (uint64_t id = 30; id <= 70; id += 20) { /* archive 30, 50, 70 */
        assert_int_equal(apply(t, id, t_cancel, T0 + 1), 0);
        jq_shard_wrlock(sh);
        assert_int_equal(jq_shard_archive(sh, jq_shard_find(sh, id), T0 + 2), 0);
        jq_shard_wrunlock(sh);
    }
    jq_shard_rdlock(sh);
    const uint64_t live[] = {5, 10, 20, 40, 60, 80, 90, 100};
    assert_int_equal(jq_shard_live_size(sh), 8);
    for (size_t i = 0; i < 8; i++)
        assert_int_equal(jq_shard_live_at(sh, i)->id, live[i]);
    assert_null(jq_shard_live_at(sh, 8));
    assert_int_equal(jq_shard_archived_size(sh), 3);
    assert_int_equal(jq_shard_archived_at(sh, 0)->id, 30);
    assert_int_equal(jq_shard_archived_at(sh, 1)->id, 50);
    assert_int_equal(jq_shard_archived_at(sh, 2)->id, 70);
    assert_null(jq_shard_archived_at(sh, 3));
    /* _after: first index with id > after. */
    assert_int_equal(jq_shard_live_after(sh, 0), 0);
    assert_int_equal(jq_shard_live_after(sh, 5), 1);
    assert_int_equal(jq_shard_live_after(sh, 6), 1);
    assert_int_equal(jq_shard_live_after(sh, 60), 5);
    assert_int_equal(jq_shard_live_after(sh, 100), 8);
    assert_int_equal(jq_shard_live_after(sh, UINT64_MAX), 8);
    assert_int_equal(jq_shard_archived_after(sh, 0), 0);
    assert_int_equal(jq_shard_archived_after(sh, 30), 1);
    assert_int_equal(jq_shard_archived_after(sh, 69), 2);
    assert_int_equal(jq_shard_archived_after(sh, 70), 3);
    jq_shard_rdunlock(sh);
    jq_table_destroy(&t);
}

/* Status counters follow every emit, insert and archive. */
static void count(jq_table_t *t, uint64_t out[JQ_STATUS__COUNT])
{
    memset(out, 0, JQ_STATUS__COUNT * sizeof *out);
    for (unsigned i = 0; i < jq_table_shard_count(t); i++) {
        jq_shard_t *sh = jq_table_shard_at(t, i);
        jq_shard_rdlock(sh);
        jq_shard_count_status(sh, out);
        jq_shard_rdunlock(sh);
    }
}

static int t_pickup(jq_job_t *j, int64_t now, jq_delta_t *d) { return jq_job_pickup(j, now, d); }

static void test_status_counters(void **state)
{
    (void)state;
    jq_table_t *t = jq_table_new(3, NULL, NULL);
    uint64_t c[JQ_STATUS__COUNT];
    for (uint64_t id = 1; id <= 6; id++)
        insert(t, make_job(id, 2, T0), T0);
    count(t, c);
    assert_int_equal(c[JQ_QUEUED], 6);
    assert_int_equal(apply(t, 1, t_pickup, T0), 0);
    assert_int_equal(apply(t, 2, t_pickup, T0), 0);
    assert_int_equal(apply(t, 2, t_running, T0), 0);
    assert_int_equal(apply(t, 3, t_cancel, T0), 0);
    assert_int_equal(apply(t, 4, t_pickup, T0), 0);
    assert_int_equal(apply(t, 4, t_cancel, T0), 0); /* canceling */
    assert_int_equal(apply(t, 5, t_pickup, T0), 0);
    assert_int_equal(apply(t, 5, t_fail, T0), 0);
    count(t, c);
    assert_int_equal(c[JQ_QUEUED], 1);
    assert_int_equal(c[JQ_WAITING], 1);
    assert_int_equal(c[JQ_RUNNING], 1);
    assert_int_equal(c[JQ_CANCELED], 1);
    assert_int_equal(c[JQ_CANCELING], 1);
    assert_int_equal(c[JQ_ERROR], 1);
    /* Cached status equals the derived one. */
    for (uint64_t id = 1; id <= 6; id++) {
        jq_shard_t *sh = jq_table_shard_for(t, id);
        jq_shard_rdlock(sh);
        jq_job_t *job = jq_shard_find(sh, id);
        assert_int_equal(job->status, jq_job_derive_status(job));
        jq_shard_rdunlock(sh);
    }
    /* Running to success on op 0: back to queued. */
    assert_int_equal(apply(t, 2, t_ok, T0), 0);
    count(t, c);
    assert_int_equal(c[JQ_QUEUED], 2);
    assert_int_equal(c[JQ_RUNNING], 0);
    /* Archived jobs leave the counters. */
    jq_shard_t *sh = jq_table_shard_for(t, 5);
    jq_shard_wrlock(sh);
    assert_int_equal(jq_shard_archive(sh, jq_shard_find(sh, 5), T0), 0);
    jq_shard_wrunlock(sh);
    count(t, c);
    assert_int_equal(c[JQ_ERROR], 0);
    uint64_t total = 0;
    for (int k = 0; k < JQ_STATUS__COUNT; k++)
        total += c[k];
    assert_int_equal(total, 5);
    assert_int_equal(jq_table_live_count(t), 5);
    jq_table_destroy(&t);
}

/* Finish job id at end time `end`. */
static void finish_at(jq_table_t *t, uint64_t id, int64_t end)
{
    assert_int_equal(apply(t, id, t_fail, end), 0);
}

static void test_auto_archive(void **state)
{
    (void)state;
    sink_t s = {0};
    jq_table_t *t = jq_table_new(1, sink, &s);
    jq_shard_t *sh = jq_table_shard_at(t, 0);
    /* Jobs 1..10; odd ones final, ended at T0 + id seconds; even ones
     * stay queued (received at T0). */
    for (uint64_t id = 1; id <= 10; id++) {
        insert(t, make_job(id, 1, T0), T0);
        if (id % 2)
            finish_at(t, id, T0 + (int64_t)id * 1000000);
    }
    uint64_t last;
    bool done;
    /* Cutoff: age reference strictly older than T0 + 5 s → 1 and 3. */
    jq_shard_wrlock(sh);
    size_t n = jq_shard_auto_archive(sh, T0 + 100, T0 + 5000000, 0, SIZE_MAX, NULL, NULL, &last, &done);
    jq_shard_wrunlock(sh);
    assert_int_equal(n, 2);
    assert_int_equal(last, 10);
    assert_true(done);
    assert_int_equal(jq_table_archived_count(t), 2);
    assert_int_equal(jq_table_live_count(t), 8);
    jq_shard_rdlock(sh);
    assert_null(jq_shard_find(sh, 1));
    assert_null(jq_shard_find(sh, 3));
    assert_true(jq_shard_find_any(sh, 3)->archived);
    assert_non_null(jq_shard_find(sh, 5));
    assert_int_equal(jq_shard_live_size(sh), 8);
    /* The live array stays in order after compaction. */
    for (size_t i = 1; i < jq_shard_live_size(sh); i++)
        assert_true(jq_shard_live_at(sh, i - 1)->id < jq_shard_live_at(sh, i)->id);
    jq_shard_rdunlock(sh);
    /* Archive records were emitted for exactly those two. */
    unsigned archives = 0;
    for (size_t i = 0; i < s.n; i++) {
        rec_t r;
        rec_open(&r, s.recs[i]);
        const msgpack_object *k = get(r.root, "kind");
        if (k->via.str.size == 7 && !memcmp(k->via.str.ptr, "archive", 7)) {
            archives++;
            assert_true(s.recs[i]->job_id == 1 || s.recs[i]->job_id == 3);
        }
        rec_close(&r);
    }
    assert_int_equal(archives, 2);

    /* The budget: examine at most 3 live jobs per call, resume after
     * last_id. Live now: 2 4 5 6 7 8 9 10 (5, 7, 9 final). */
    jq_shard_wrlock(sh);
    n = jq_shard_auto_archive(sh, T0, INT64_MAX, 0, 3, NULL, NULL, &last, &done);
    jq_shard_wrunlock(sh);
    assert_int_equal(n, 1); /* 2, 4, 5 examined: 5 archived */
    assert_int_equal(last, 5);
    assert_false(done);
    jq_shard_wrlock(sh);
    n = jq_shard_auto_archive(sh, T0, INT64_MAX, last, 3, NULL, NULL, &last, &done);
    jq_shard_wrunlock(sh);
    assert_int_equal(n, 1); /* 6, 7, 8: 7 */
    assert_int_equal(last, 8);
    assert_false(done);
    jq_shard_wrlock(sh);
    n = jq_shard_auto_archive(sh, T0, INT64_MAX, last, 3, NULL, NULL, &last, &done);
    jq_shard_wrunlock(sh);
    assert_int_equal(n, 1); /* 9, 10: 9, and the end */
    assert_int_equal(last, 10);
    assert_true(done);
    /* Exactly at the budget with nothing behind: done. */
    jq_shard_wrlock(sh);
    n = jq_shard_auto_archive(sh, T0, INT64_MAX, 8, 1, NULL, NULL, &last, &done);
    jq_shard_wrunlock(sh);
    assert_int_equal(n, 0);
    assert_int_equal(last, 10);
    assert_true(done);
    /* Past the end: nothing examined, last_id = after_id, done. */
    jq_shard_wrlock(sh);
    n = jq_shard_auto_archive(sh, T0, INT64_MAX, 10, 5, NULL, NULL, &last, &done);
    jq_shard_wrunlock(sh);
    assert_int_equal(n, 0);
    assert_int_equal(last, 10);
    assert_true(done);
    /* A zero budget examines nothing and is not done while jobs remain. */
    jq_shard_wrlock(sh);
    n = jq_shard_auto_archive(sh, T0, INT64_MAX, 0, 0, NULL, NULL, &last, &done);
    jq_shard_wrunlock(sh);
    assert_int_equal(n, 0);
    assert_int_equal(last, 0);
    assert_false(done);
    jq_shard_rdlock(sh);
    assert_int_equal(jq_shard_live_size(sh), 5); /* the queued evens */
    for (size_t i = 0; i < 5; i++)
        assert_int_equal(jq_shard_live_at(sh, i)->id, 2 * (i + 1));
    assert_int_equal(jq_shard_archived_size(sh), 5);
    jq_shard_rdunlock(sh);
    assert_int_equal(jq_table_archived_count(t), 5);
    assert_int_equal(jq_table_live_count(t), 5);

    /* Age reference: start_ts when not ended; received_ts otherwise. A
     * non-final job is never archived whatever its age. */
    jq_shard_wrlock(sh);
    n = jq_shard_auto_archive(sh, T0, T0 + 1, 0, SIZE_MAX, NULL, NULL, &last, &done);
    jq_shard_wrunlock(sh);
    assert_int_equal(n, 0);
    assert_true(done);
    jq_table_destroy(&t);
    sink_clear(&s);
}

/* The whole life of a job as change records. */
static void test_change_records(void **state)
{
    (void)state;
    sink_t s = {0};
    jq_table_t *t = jq_table_new(2, sink, &s);
    jq_job_t *job = make_job(5, 2, T0);
    insert(t, job, T0 + 1);
    assert_int_equal(s.n, 1);
    assert_int_equal(s.calls, 1);
    check_rec(s.recs[0], 5, 1, "submit", "queued", 2, NULL, 0);
    {
        rec_t r;
        rec_open(&r, s.recs[0]);
        assert_int_equal(get(r.root, "priority")->via.i64, -10);
        assert_ts(get(r.root, "received_ts"), T0);
        assert_ts(get(r.root, "start_ts"), 0);
        assert_ts(get(r.root, "end_ts"), 0);
        assert_ts(get(r.root, "time"), T0 + 1);
        const msgpack_object *in = get(r.root, "input");
        assert_int_equal(in->type, MSGPACK_OBJECT_ARRAY);
        assert_int_equal(in->via.array.size, 2);
        assert_str(get(&in->via.array.ptr[0], "op"), "t.op");
        assert_int_equal(get(&in->via.array.ptr[1], "priority")->via.i64, -10);
        rec_close(&r);
    }
    check_rec_op(s.recs[0], 0, 0, "queued");
    check_rec_op(s.recs[0], 1, 1, "queued");

    assert_int_equal(apply(t, 5, t_pickup, T0 + 10), 0);
    assert_int_equal(apply(t, 5, t_running, T0 + 11), 0);
    assert_int_equal(apply(t, 5, t_log2, T0 + 12), 0);
    assert_int_equal(apply(t, 5, t_ok, T0 + 14), 0);
    assert_int_equal(apply(t, 5, t_pickup, T0 + 20), 0);
    assert_int_equal(apply(t, 5, t_running, T0 + 21), 0);
    assert_int_equal(apply(t, 5, t_log2, T0 + 22), 0);
    assert_int_equal(apply(t, 5, t_cancel, T0 + 24), 0);
    assert_int_equal(apply(t, 5, t_cancel, T0 + 25), -1); /* too late: no record */
    assert_int_equal(s.n, 9);
    check_rec(s.recs[1], 5, 2, "update", "waiting", 1, NULL, 0);
    check_rec_op(s.recs[1], 0, 0, "waiting");
    check_rec(s.recs[2], 5, 3, "update", "running", 1, NULL, 0);
    check_rec_op(s.recs[2], 0, 0, "running");
    const uint32_t l12[] = {1, 2}, l34[] = {3, 4};
    check_rec(s.recs[3], 5, 4, "update", "running", 0, l12, 2);
    check_rec(s.recs[4], 5, 5, "update", "queued", 1, NULL, 0);
    check_rec_op(s.recs[4], 0, 0, "success");
    check_rec(s.recs[5], 5, 6, "update", "waiting", 1, NULL, 0);
    check_rec_op(s.recs[5], 0, 1, "waiting");
    check_rec(s.recs[6], 5, 7, "update", "running", 1, NULL, 0);
    check_rec(s.recs[7], 5, 8, "update", "running", 0, l34, 2); /* only the new ones */
    check_rec(s.recs[8], 5, 9, "update", "canceling", 1, NULL, 0);
    check_rec_op(s.recs[8], 0, 1, "canceling");
    {
        rec_t r;
        rec_open(&r, s.recs[5]);
        assert_ts(get(r.root, "start_ts"), T0 + 10); /* the job's, from op 0 */
        rec_close(&r);
    }
    jq_shard_t *sh = jq_table_shard_for(t, 5);
    jq_shard_wrlock(sh);
    job = jq_shard_find(sh, 5);
    jq_delta_t d;
    jq_delta_init(&d, job);
    assert_int_equal(jq_job_mark_canceled(job, T0 + 30, &d), 0);
    assert_int_equal(jq_shard_emit(sh, job, &d, JQ_CHANGE_UPDATE, T0 + 30), 0);
    assert_int_equal(jq_shard_archive(sh, job, T0 + 40), 0);
    assert_int_equal(s.n, 9); /* nothing before the unlock */
    jq_shard_wrunlock(sh);
    assert_int_equal(s.n, 11);
    check_rec(s.recs[9], 5, 10, "update", "canceled", 1, NULL, 0);
    {
        rec_t r;
        rec_open(&r, s.recs[9]);
        assert_ts(get(r.root, "end_ts"), T0 + 30);
        const msgpack_object *op = &get(r.root, "ops")->via.array.ptr[0];
        assert_ts(get(op, "end_ts"), T0 + 30);
        assert_str(get(op, "result"), "Job canceled by request");
        rec_close(&r);
    }
    check_rec(s.recs[10], 5, 11, "archive", "canceled", 0, NULL, 0);
    assert_int_equal(job->change_serial, 11);
    assert_int_equal(jq_table_changes(t), 11);
    /* An empty write section hands nothing on. */
    unsigned calls = s.calls;
    jq_shard_wrlock(sh);
    jq_shard_wrunlock(sh);
    assert_int_equal(s.calls, calls);
    jq_table_destroy(&t);
    sink_clear(&s);
}

/* Records of several jobs and several emits under one lock keep their
 * order in one sink call. */
static void test_records_batch_order(void **state)
{
    (void)state;
    sink_t s = {0};
    jq_table_t *t = jq_table_new(1, sink, &s);
    jq_shard_t *sh = jq_table_shard_at(t, 0);
    assert_true(jq_table_reserve(t, 10));
    assert_true(jq_table_reserve(t, 10));
    jq_shard_wrlock(sh);
    assert_int_equal(insert_locked(sh, make_job(1, 1, T0), T0), 0);
    assert_int_equal(insert_locked(sh, make_job(2, 1, T0), T0), 0);
    for (uint64_t id = 1; id <= 2; id++) {
        jq_job_t *job = jq_shard_find(sh, id);
        jq_delta_t d;
        jq_delta_init(&d, job);
        assert_int_equal(jq_job_pickup(job, T0, &d), 0);
        assert_int_equal(jq_shard_emit(sh, job, &d, JQ_CHANGE_UPDATE, T0), 0);
    }
    jq_shard_wrunlock(sh);
    assert_int_equal(s.calls, 1);
    assert_int_equal(s.n, 4);
    check_rec(s.recs[0], 1, 1, "submit", "queued", 1, NULL, 0);
    check_rec(s.recs[1], 2, 1, "submit", "queued", 1, NULL, 0);
    check_rec(s.recs[2], 1, 2, "update", "waiting", 1, NULL, 0);
    check_rec(s.recs[3], 2, 2, "update", "waiting", 1, NULL, 0);
    jq_table_destroy(&t);
    sink_clear(&s);
}

/* ---- work that must not grow with a job's log ---- */

/* Every log entry of the job but the newest `keep` is made unreadable: a
 * guard page stands in for its bytes, so any code that touches an old
 * entry crashes the test. Returns the saved pointers to put back. */
static char **poison_old_entries(jq_job_t *job, uint32_t keep, void *guard)
{
    uint32_t total = job->log_serial, left = total - keep;
    char **saved = calloc(total, sizeof *saved);
    assert_non_null(saved);
    uint32_t n = 0;
    for (uint32_t i = 0; i < job->nops && left; i++)
        for (uint32_t k = 0; k < job->ops[i].nlog && left; k++, left--) {
            saved[n++] = job->ops[i].log[k].data;
            job->ops[i].log[k].data = guard;
        }
    return saved;
}

static void unpoison(jq_job_t *job, char **saved, uint32_t count)
{
    uint32_t n = 0;
    for (uint32_t i = 0; i < job->nops; i++)
        for (uint32_t k = 0; k < job->ops[i].nlog && n < count; k++)
            job->ops[i].log[k].data = saved[n++];
    free(saved);
}

/* A new log record, a waiter's collection of new entries and the search
 * for where they start never look at the entries before them: the work
 * per record is the same with 100,000 entries as with none (a record used
 * to walk them all, under the shard write lock). */
static void test_log_work_does_not_grow_with_the_log(void **state)
{
    (void)state;
    enum { N = 100000 };
    jq_job_t *job = make_job(9, 3, T0);
    jq_delta_t d;
    jq_delta_init(&d, job);
    assert_int_equal(jq_job_pickup(job, T0, &d), 0);
    assert_int_equal(jq_job_op_running(job, T0, &d), 0);
    for (int i = 0; i < 10; i++) /* a few in opcode 0, the rest in opcode 1 */
        assert_int_equal(jq_job_log(job, T0, "message", "early", 5, 0, &d), 0);
    assert_int_equal(jq_job_op_finish(job, T0, true, NULL, &d), 0);
    assert_int_equal(jq_job_pickup(job, T0, &d), 0);
    assert_int_equal(jq_job_op_running(job, T0, &d), 0);
    for (int i = 10; i < N; i++)
        assert_int_equal(jq_job_log(job, T0, "message", "step", 4, 0, &d), 0);
    job->log_recorded = job->log_serial; /* every entry so far was in a record */
    void *guard = mmap(NULL, 4096, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    assert_true(guard != MAP_FAILED);
    uint32_t poisoned = job->log_serial;
    char **saved = poison_old_entries(job, 0, guard);

    jq_delta_init(&d, job);
    assert_int_equal(jq_job_log(job, T0 + 1, "message", "new", 3, 0, &d), 0);
    job->change_serial++;
    job->status = (uint8_t)jq_job_derive_status(job); /* what emit caches */
    jq_change_t *c = jq_change_encode(job, JQ_CHANGE_UPDATE, &d, T0 + 1);
    assert_non_null(c);
    const uint32_t one[] = {N + 1};
    check_rec(c, 9, c->serial, "update", "running", 0, one, 1);
    free(c);
    uint32_t op, index;
    jq_job_log_find(job, N, &op, &index);
    assert_int_equal(op, 1);
    assert_int_equal(index, N - 10);
    jq_job_log_find(job, 3, &op, &index); /* an early one: found by arithmetic */
    assert_int_equal(op, 0);
    assert_int_equal(index, 3);
    jq_waiter_t *w = jq_waiter_new();
    w->prev_log_serial = N;
    jq_waiter_collect_logs(w, job);
    assert_int_equal(w->nnew_logs, 1);
    jq_waiter_destroy(&w);

    unpoison(job, saved, poisoned);
    munmap(guard, 4096);
    jq_job_destroy(&job);
}

/* The job's log stops at the limit: the entry that reaches it says so,
 * later ones are dropped (and make no record). */
static void test_log_limit(void **state)
{
    (void)state;
    jq_job_t *job = make_job(3, 1, T0);
    jq_delta_t d;
    jq_delta_init(&d, job);
    jq_job_pickup(job, T0, &d);
    jq_job_op_running(job, T0, &d);
    for (int i = 0; i < 4; i++)
        assert_int_equal(jq_job_log(job, T0, "message", "m", 1, 5, &d), 0);
    assert_int_equal(jq_job_log(job, T0, "message", "m", 1, 5, &d), 0); /* the 5th */
    assert_int_equal(jq_job_log(job, T0, "message", "m", 1, 5, &d), 1); /* dropped */
    assert_int_equal(job->log_serial, 5);
    assert_int_equal(job->ops[0].nlog, 5);
    msgpack_unpacked up;
    msgpack_unpacked_init(&up);
    assert_int_equal(msgpack_unpack_next(&up, job->ops[0].log[4].data, job->ops[0].log[4].len, NULL),
                     MSGPACK_UNPACK_SUCCESS);
    const msgpack_object *msg = &up.data.via.array.ptr[3];
    assert_non_null(memmem(msg->via.str.ptr, msg->via.str.size, "log limit of 5 entries", 22));
    msgpack_unpacked_destroy(&up);
    jq_job_destroy(&job);
}

/* A record that could not be made: the next one carries every opcode and
 * every log entry since the last record, even across opcodes, so whoever
 * applies records (the store, a waiter's copy) catches up unaware. */
static void test_catch_up_after_a_lost_record(void **state)
{
    (void)state;
    sink_t s = {0};
    jq_table_t *t = jq_table_new(1, sink, &s);
    jq_job_t *job = make_job(4, 3, T0);
    insert(t, job, T0);
    jq_job_t *mirror = NULL;
    jq_shard_t *sh = jq_table_shard_at(t, 0);
    jq_shard_rdlock(sh);
    mirror = jq_mirror_new(jq_shard_find(sh, 4), JQ_MIRROR_ALL);
    jq_shard_rdunlock(sh);
    assert_non_null(mirror);
    /* Changes made as if their records had failed: serials stay put,
     * record_lost is set (what queue_record does when encoding fails). */
    jq_shard_wrlock(sh);
    jq_delta_t d;
    jq_delta_init(&d, job);
    jq_job_pickup(job, T0, &d);
    jq_job_op_running(job, T0, &d);
    jq_job_log(job, T0, "message", "in op 0", 7, 0, &d);
    jq_job_op_finish(job, T0, true, NULL, &d);
    jq_job_pickup(job, T0, &d);
    jq_job_op_running(job, T0, &d);
    jq_job_log(job, T0, "message", "in op 1", 7, 0, &d);
    job->record_lost = true;
    /* The next change is recorded: it carries everything. */
    jq_delta_init(&d, job);
    jq_job_log(job, T0 + 1, "message", "also op 1", 9, 0, &d);
    assert_int_equal(jq_shard_emit(sh, job, &d, JQ_CHANGE_UPDATE, T0 + 1), 0);
    assert_false(job->record_lost);
    jq_shard_wrunlock(sh);
    assert_int_equal(s.n, 2);
    const uint32_t serials[] = {1, 2, 3};
    check_rec(s.recs[1], 4, 2, "update", "running", 3, serials, 3);
    rec_t r;
    rec_open(&r, s.recs[1]);
    assert_int_equal(jq_mirror_apply(mirror, r.root, JQ_MIRROR_ALL, NULL, NULL), 1);
    const msgpack_object *spans = get(r.root, "log_ops");
    assert_int_equal(spans->via.array.size, 2);
    rec_close(&r);
    /* The copy rebuilt from records alone equals the job. */
    assert_int_equal(mirror->ops[0].status, JQ_SUCCESS);
    assert_int_equal(mirror->ops[1].status, JQ_RUNNING);
    assert_int_equal(mirror->ops[0].nlog, 1);
    assert_int_equal(mirror->ops[1].nlog, 2);
    assert_int_equal(mirror->log_serial, 3);
    jq_job_destroy(&mirror);
    sink_clear(&s);
    jq_table_destroy(&t);
}

/* A reply that shows nothing of the log is held only by the job's last
 * change of something else: log entries since that commit do not count
 * (a listing of statuses stays fast while jobs log), anything else does. */
static void test_log_entries_do_not_hold_state_replies(void **state)
{
    (void)state;
    sink_t s = {0};
    jq_table_t *t = jq_table_new(1, sink, &s);
    jq_job_t *job = make_job(5, 2, T0);
    insert(t, job, T0);
    jq_shard_t *sh = jq_table_shard_at(t, 0);
    jq_shard_wrlock(sh);
    jq_delta_t d;
    jq_delta_init(&d, job);
    jq_job_pickup(job, T0, &d);
    jq_job_op_running(job, T0, &d);
    assert_int_equal(jq_shard_emit(sh, job, &d, JQ_CHANGE_UPDATE, T0), 0);
    jq_shard_wrunlock(sh);
    jq_table_mark_committed(t, s.recs[s.n - 1]); /* running: committed */
    jq_shard_wrlock(sh);
    assert_false(jq_job_uncommitted(job));
    for (int i = 0; i < 3; i++) {
        jq_delta_init(&d, job);
        jq_job_log(job, T0 + 1, "message", "step", 4, 0, &d);
        assert_int_equal(jq_shard_emit(sh, job, &d, JQ_CHANGE_UPDATE, T0 + 1), 0);
    }
    assert_true(jq_job_uncommitted(job));
    assert_false(jq_job_state_uncommitted(job));
    jq_delta_init(&d, job);
    assert_int_equal(jq_job_op_finish(job, T0 + 2, true, NULL, &d), 0);
    assert_int_equal(jq_shard_emit(sh, job, &d, JQ_CHANGE_UPDATE, T0 + 2), 0);
    assert_true(jq_job_state_uncommitted(job));
    jq_shard_wrunlock(sh);
    jq_table_mark_committed(t, s.recs[s.n - 1]);
    jq_shard_rdlock(sh);
    assert_false(jq_job_uncommitted(job));
    assert_false(jq_job_state_uncommitted(job));
    jq_shard_rdunlock(sh);
    sink_clear(&s);
    jq_table_destroy(&t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_log_work_does_not_grow_with_the_log),
        cmocka_unit_test(test_log_limit),
        cmocka_unit_test(test_catch_up_after_a_lost_record),
        cmocka_unit_test(test_log_entries_do_not_hold_state_replies),
        cmocka_unit_test(test_new_destroy),
        cmocka_unit_test(test_insert_find_archive),
        cmocka_unit_test(test_reserve),
        cmocka_unit_test(test_listing_order),
        cmocka_unit_test(test_status_counters),
        cmocka_unit_test(test_auto_archive),
        cmocka_unit_test(test_change_records),
        cmocka_unit_test(test_records_batch_order),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
