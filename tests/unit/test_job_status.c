/* test_job_status.c: the job model of queue/job.c against JOBMODEL §1.4–1.8
 * and §2.5–2.6: status derivation (the whole table, plus a randomized
 * cross-check against an independent re-implementation), priorities,
 * change-priority outcomes, cancel in every status, error propagation,
 * log serials and the delta each transition records. No clock, no sleeps:
 * every transition gets its `now` from the test. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <msgpack.h>

#include "job.h"

enum { Q = JQ_QUEUED, W = JQ_WAITING, CI = JQ_CANCELING, R = JQ_RUNNING,
       CA = JQ_CANCELED, S = JQ_SUCCESS, E = JQ_ERROR };

#define T0 1700000000000000LL /* a wall-clock time in microseconds */

static jq_job_t *job_with(const int *st, uint32_t n)
{
    jq_job_t *job = jq_job_new(1, n, T0);
    assert_non_null(job);
    for (uint32_t i = 0; i < n; i++)
        job->ops[i].status = (uint8_t)st[i];
    return job;
}

static jq_status_t derive(const int *st, uint32_t n)
{
    jq_job_t *job = job_with(st, n);
    jq_status_t r = jq_job_derive_status(job);
    jq_job_destroy(&job);
    assert_null(job);
    return r;
}

#define DERIVE(expect, ...)                                                          \
    do {                                                                             \
        const int v_[] = {__VA_ARGS__};                                              \
        jq_status_t got_ = derive(v_, sizeof v_ / sizeof v_[0]);                     \
        if (got_ != (jq_status_t)(expect))                                           \
            fail_msg("[%s] derived %s, expected %s", #__VA_ARGS__,                   \
                     jq_status_name(got_), jq_status_name((jq_status_t)(expect)));   \
    } while (0)

/* ---- §1.4 the derivation table ---- */

static void test_derive_single(void **state)
{
    (void)state;
    for (int s = 0; s < JQ_STATUS__COUNT; s++)
        DERIVE(s, s);
}

static void test_derive_multi(void **state)
{
    (void)state;
    /* The consequences JOBMODEL §1.4 pins down. */
    DERIVE(W, S, S, W, Q);
    DERIVE(R, S, R, Q);
    DERIVE(Q, S, Q);            /* between opcodes: queued, not running */
    DERIVE(Q, S, S, Q, Q);
    DERIVE(CI, S, S, CI, CI);
    DERIVE(S, S, S, S, S);
    DERIVE(S, S);
    /* Error or canceled anywhere: processing stops there. */
    DERIVE(E, S, E, E);
    DERIVE(E, E, E, E);
    DERIVE(E, S, S, E);
    DERIVE(E, Q, E);
    DERIVE(E, W, E);
    DERIVE(E, R, E, Q);
    DERIVE(CA, S, CA, CA);
    DERIVE(CA, CA, CA);
    DERIVE(CA, Q, CA);
    DERIVE(CA, R, CA);
    /* The first stopping status wins. */
    DERIVE(CI, CI, E);
    DERIVE(E, E, CA);
    DERIVE(CA, CA, E);
    DERIVE(CI, R, CI);
    /* waiting/running keep going: a later one overrides. */
    DERIVE(R, W, R);
    DERIVE(W, R, W);
    DERIVE(W, Q, W);
    DERIVE(R, Q, R, Q);
    /* Hs computes an empty job as success (Py refuses it at submit). */
    const int none[1] = {0};
    assert_int_equal(derive(none, 0), JQ_SUCCESS);
}

/* An independent, deliberately literal reading of §1.4. */
static jq_status_t reference_status(const int *st, uint32_t n)
{
    bool all_success = true;
    jq_status_t result = JQ_QUEUED;
    for (uint32_t i = 0; i < n; i++) {
        switch (st[i]) {
        case S:
            break;
        case Q:
            all_success = false;
            break;
        case W:
            all_success = false;
            result = JQ_WAITING;
            break;
        case R:
            all_success = false;
            result = JQ_RUNNING;
            break;
        default: /* canceling, error, canceled: stop */
            return (jq_status_t)st[i];
        }
    }
    return all_success ? JQ_SUCCESS : result;
}

static void test_derive_random(void **state)
{
    (void)state;
    uint64_t x = 0x9E3779B97F4A7C15ull; /* xorshift, fixed seed: reproducible */
    int st[12];
    unsigned per_status[JQ_STATUS__COUNT] = {0};
    for (int iter = 0; iter < 20000; iter++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        uint32_t n = 1 + (uint32_t)(x % 12);
        for (uint32_t i = 0; i < n; i++) {
            x ^= x << 13, x ^= x >> 7, x ^= x << 17;
            /* Bias towards success so long all-success prefixes occur. */
            unsigned r = (unsigned)(x % 14);
            st[i] = r >= JQ_STATUS__COUNT ? S : (int)r;
        }
        jq_status_t want = reference_status(st, n), got = derive(st, n);
        per_status[want]++;
        if (want != got)
            fail_msg("iteration %d: derived %s, reference %s", iter, jq_status_name(got),
                     jq_status_name(want));
    }
    /* Every outcome was exercised. */
    for (int s = 0; s < JQ_STATUS__COUNT; s++)
        assert_true(per_status[s] > 50);
}

/* ---- names ---- */

static void test_status_names(void **state)
{
    (void)state;
    static const char *names[] = {"queued", "waiting", "canceling", "running",
                                  "canceled", "success", "error"};
    for (int s = 0; s < JQ_STATUS__COUNT; s++) {
        assert_string_equal(jq_status_name((jq_status_t)s), names[s]);
        jq_status_t out = JQ_STATUS__COUNT;
        assert_int_equal(jq_status_parse(names[s], strlen(names[s]), &out), 0);
        assert_int_equal(out, s);
        assert_int_equal(jq_status_final((jq_status_t)s), s == CA || s == S || s == E);
    }
    jq_status_t out;
    assert_int_equal(jq_status_parse("succes", 6, &out), -1);
    assert_int_equal(jq_status_parse("successes", 9, &out), -1);
    assert_int_equal(jq_status_parse("", 0, &out), -1);
    assert_int_equal(jq_status_parse("success", 6, &out), -1); /* prefix only */
    assert_string_equal(jq_status_name(JQ_STATUS__COUNT), "unknown");
}

/* ---- §1.6 priorities ---- */

static void test_priority(void **state)
{
    (void)state;
    const int st[] = {Q, Q, Q};
    jq_job_t *job = job_with(st, 3);
    assert_int_equal(jq_job_priority(job), 0); /* default */
    job->ops[0].priority = 10;
    job->ops[1].priority = -10;
    job->ops[2].priority = 0;
    assert_int_equal(jq_job_priority(job), -10);
    /* Only unfinished opcodes count. */
    job->ops[1].status = S;
    assert_int_equal(jq_job_priority(job), 0);
    job->ops[2].status = S;
    assert_int_equal(jq_job_priority(job), 10);
    job->ops[0].status = W;
    job->ops[0].priority = JQ_PRIO_HIGHEST; /* escalated */
    assert_int_equal(jq_job_priority(job), -20);
    job->ops[0].status = R;
    job->ops[0].priority = JQ_PRIO_LOWEST;
    assert_int_equal(jq_job_priority(job), 19);
    job->ops[0].status = CI;
    assert_int_equal(jq_job_priority(job), 19);
    /* All final: the default, whatever their priorities. */
    job->ops[0].status = E;
    job->ops[1].priority = 10;
    job->ops[2].priority = 10;
    assert_int_equal(jq_job_priority(job), JQ_PRIO_DEFAULT);
    jq_job_destroy(&job);

    assert_true(jq_priority_submittable(-10));
    assert_true(jq_priority_submittable(0));
    assert_true(jq_priority_submittable(10));
    const int64_t bad[] = {-20, -11, -9, -1, 1, 5, 9, 11, 19, 20, INT64_MIN, INT64_MAX};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        assert_false(jq_priority_submittable(bad[i]));
}

/* ---- helpers for transitions ---- */

static jq_job_t *fresh(uint32_t n)
{
    jq_job_t *job = jq_job_new(7, n, T0);
    assert_non_null(job);
    assert_int_equal(job->id, 7);
    assert_int_equal(job->nops, n);
    assert_int_equal(job->received_ts, T0);
    for (uint32_t i = 0; i < n; i++)
        assert_int_equal(job->ops[i].status, Q);
    return job;
}

static void assert_delta(const jq_delta_t *d, int lo, int hi, bool job_changed)
{
    if (lo > hi)
        assert_true(d->op_lo > d->op_hi);
    else {
        assert_int_equal(d->op_lo, lo);
        assert_int_equal(d->op_hi, hi);
    }
    assert_int_equal(d->job_changed, job_changed);
}

/* Walk the current opcode through waiting → running → success at t. */
static void run_op_ok(jq_job_t *job, int64_t t)
{
    jq_delta_t d;
    jq_delta_init(&d, job);
    assert_int_equal(jq_job_pickup(job, t, &d), 0);
    assert_int_equal(jq_job_op_running(job, t + 1, &d), 0);
    jq_blob_t res = {0};
    assert_int_equal(jq_blob_set(&res, "\xc0", 1), 0);
    assert_int_equal(jq_job_op_finish(job, t + 2, true, &res, &d), 0);
    assert_null(res.data); /* moved */
}

/* The blob holds the msgpack string s. */
static void assert_blob_str(const jq_blob_t *b, const char *s)
{
    assert_non_null(b->data);
    msgpack_unpacked up;
    msgpack_unpacked_init(&up);
    assert_int_equal(msgpack_unpack_next(&up, b->data, b->len, NULL), MSGPACK_UNPACK_SUCCESS);
    assert_int_equal(up.data.type, MSGPACK_OBJECT_STR);
    assert_int_equal(up.data.via.str.size, strlen(s));
    assert_memory_equal(up.data.via.str.ptr, s, strlen(s));
    msgpack_unpacked_destroy(&up);
}

/* The blob holds ["OpExecError", [msg]]. */
static void assert_blob_exec_error(const jq_blob_t *b, const char *msg)
{
    assert_non_null(b->data);
    msgpack_unpacked up;
    msgpack_unpacked_init(&up);
    assert_int_equal(msgpack_unpack_next(&up, b->data, b->len, NULL), MSGPACK_UNPACK_SUCCESS);
    msgpack_object *o = &up.data;
    assert_int_equal(o->type, MSGPACK_OBJECT_ARRAY);
    assert_int_equal(o->via.array.size, 2);
    msgpack_object *cls = &o->via.array.ptr[0], *args = &o->via.array.ptr[1];
    assert_int_equal(cls->type, MSGPACK_OBJECT_STR);
    assert_memory_equal(cls->via.str.ptr, "OpExecError", 11);
    assert_int_equal(args->type, MSGPACK_OBJECT_ARRAY);
    assert_int_equal(args->via.array.size, 1);
    assert_int_equal(args->via.array.ptr[0].type, MSGPACK_OBJECT_STR);
    assert_int_equal(args->via.array.ptr[0].via.str.size, strlen(msg));
    assert_memory_equal(args->via.array.ptr[0].via.str.ptr, msg, strlen(msg));
    msgpack_unpacked_destroy(&up);
}

/* ---- §1.5 transitions and their deltas ---- */

static void test_delta_init(void **state)
{
    (void)state;
    jq_job_t *job = fresh(2);
    jq_delta_t d;
    jq_delta_init(&d, job);
    assert_true(jq_delta_empty(&d, job));
    assert_delta(&d, 1, 0, false);
    assert_int_equal(d.log_from, 0);
    jq_delta_mark(&d, 1);
    assert_false(jq_delta_empty(&d, job));
    jq_delta_mark(&d, 0);
    jq_delta_mark(&d, 1);
    assert_delta(&d, 0, 1, false);
    jq_delta_init(&d, job);
    d.job_changed = true;
    assert_false(jq_delta_empty(&d, job));
    jq_delta_init(&d, job);
    job->log_serial = 3; /* a log entry appended after init */
    assert_false(jq_delta_empty(&d, job));
    jq_delta_init(&d, job);
    assert_int_equal(d.log_from, 3);
    assert_true(jq_delta_empty(&d, job));
    jq_job_destroy(&job);
}

static void test_pickup_running_finish(void **state)
{
    (void)state;
    jq_job_t *job = fresh(3);
    jq_delta_t d;

    /* Cannot run or finish before pick-up. */
    jq_delta_init(&d, job);
    assert_int_equal(jq_job_op_running(job, T0 + 5, &d), -1);
    assert_true(jq_delta_empty(&d, job));

    jq_delta_init(&d, job);
    assert_int_equal(jq_job_pickup(job, T0 + 10, &d), 0);
    assert_delta(&d, 0, 0, true); /* job start_ts set */
    assert_int_equal(job->ops[0].status, W);
    assert_int_equal(job->ops[0].start_ts, T0 + 10);
    assert_int_equal(job->start_ts, T0 + 10);
    assert_int_equal(jq_job_derive_status(job), JQ_WAITING);

    /* Picked up again while waiting (after a dependency wait): nothing
     * changes, no timestamps move. */
    jq_delta_init(&d, job);
    assert_int_equal(jq_job_pickup(job, T0 + 20, &d), 0);
    assert_true(jq_delta_empty(&d, job));
    assert_int_equal(job->ops[0].start_ts, T0 + 10);

    jq_delta_init(&d, job);
    assert_int_equal(jq_job_op_running(job, T0 + 30, &d), 0);
    assert_delta(&d, 0, 0, false);
    assert_int_equal(job->ops[0].exec_ts, T0 + 30);
    assert_int_equal(jq_job_derive_status(job), JQ_RUNNING);

    /* A running opcode cannot be picked up or set running again. */
    jq_delta_init(&d, job);
    assert_int_equal(jq_job_pickup(job, T0 + 31, &d), -1);
    assert_int_equal(jq_job_op_running(job, T0 + 31, &d), -1);
    assert_true(jq_delta_empty(&d, job));

    jq_blob_t res = {0};
    assert_int_equal(jq_blob_set(&res, "\x2a", 1), 0); /* 42 */
    jq_delta_init(&d, job);
    assert_int_equal(jq_job_op_finish(job, T0 + 40, true, &res, &d), 0);
    assert_null(res.data);
    assert_delta(&d, 0, 0, false); /* not the last opcode: job not final */
    assert_int_equal(job->ops[0].status, S);
    assert_int_equal(job->ops[0].end_ts, T0 + 40);
    assert_int_equal(job->ops[0].result.len, 1);
    assert_int_equal(job->end_ts, 0);
    assert_int_equal(jq_job_current_op(job), 1);
    assert_int_equal(jq_job_derive_status(job), JQ_QUEUED); /* between opcodes */

    /* Second opcode: the job's start_ts stays the first opcode's. */
    jq_delta_init(&d, job);
    assert_int_equal(jq_job_pickup(job, T0 + 50, &d), 0);
    assert_delta(&d, 1, 1, false);
    assert_int_equal(job->start_ts, T0 + 10);
    assert_int_equal(job->ops[1].start_ts, T0 + 50);
    run_op_ok(job, T0 + 60); /* pickup of a waiting op is a no-op */
    assert_int_equal(job->ops[1].start_ts, T0 + 50);
    assert_int_equal(job->ops[1].exec_ts, T0 + 61);

    /* Last opcode: the job is final with end_ts. */
    jq_delta_init(&d, job);
    assert_int_equal(jq_job_pickup(job, T0 + 70, &d), 0);
    assert_int_equal(jq_job_op_running(job, T0 + 71, &d), 0);
    assert_int_equal(jq_job_op_finish(job, T0 + 72, true, NULL, &d), 0);
    assert_delta(&d, 2, 2, true);
    assert_null(job->ops[2].result.data); /* no result: nil */
    assert_int_equal(job->end_ts, T0 + 72);
    assert_int_equal(jq_job_current_op(job), 3);
    assert_int_equal(jq_job_derive_status(job), JQ_SUCCESS);
    assert_int_equal(jq_job_age_ref(job), T0 + 72);

    /* Nothing applies to a final job. */
    jq_delta_init(&d, job);
    assert_int_equal(jq_job_pickup(job, T0 + 80, &d), -1);
    assert_int_equal(jq_job_op_running(job, T0 + 80, &d), -1);
    assert_int_equal(jq_job_op_finish(job, T0 + 80, true, NULL, &d), -1);
    assert_int_equal(jq_job_fail(job, T0 + 80, "x", &d), -1);
    assert_int_equal(jq_job_mark_canceled(job, T0 + 80, &d), -1);
    assert_int_equal(jq_job_log(job, T0 + 80, "message", "x", 1, 0, &d), -1);
    assert_true(jq_delta_empty(&d, job));
    assert_int_equal(job->end_ts, T0 + 72);
    jq_job_destroy(&job);
}

static void test_age_ref(void **state)
{
    (void)state;
    jq_job_t *job = fresh(1);
    assert_int_equal(jq_job_age_ref(job), T0);
    jq_delta_t d;
    jq_delta_init(&d, job);
    jq_job_pickup(job, T0 + 5, &d);
    assert_int_equal(jq_job_age_ref(job), T0 + 5);
    jq_job_fail(job, T0 + 9, "boom", &d);
    assert_int_equal(jq_job_age_ref(job), T0 + 9);
    jq_job_destroy(&job);
}

/* op_finish with error: later opcodes error "Preceding opcode failed". */
static void test_error_propagation(void **state)
{
    (void)state;
    jq_job_t *job = fresh(4);
    run_op_ok(job, T0 + 10);
    jq_delta_t d;
    jq_delta_init(&d, job);
    assert_int_equal(jq_job_pickup(job, T0 + 20, &d), 0);
    assert_int_equal(jq_job_op_running(job, T0 + 21, &d), 0);
    jq_blob_t err = {0};
    assert_int_equal(jq_blob_exec_error(&err, "boom"), 0);
    jq_delta_init(&d, job);
    assert_int_equal(jq_job_op_finish(job, T0 + 22, false, &err, &d), 0);
    assert_null(err.data);
    assert_delta(&d, 1, 3, true);
    assert_int_equal(job->ops[0].status, S);
    assert_int_equal(job->ops[1].status, E);
    assert_blob_exec_error(&job->ops[1].result, "boom");
    for (int k = 2; k < 4; k++) {
        assert_int_equal(job->ops[k].status, E);
        assert_blob_exec_error(&job->ops[k].result, "Preceding opcode failed");
        assert_int_equal(job->ops[k].end_ts, T0 + 22);
        assert_int_equal(job->ops[k].start_ts, 0);
    }
    assert_int_equal(job->end_ts, T0 + 22);
    assert_int_equal(jq_job_derive_status(job), JQ_ERROR);
    assert_int_equal(jq_job_priority(job), 0);
    jq_job_destroy(&job);
}

/* jq_job_fail (shutdown, dependency errors): every unfinished opcode gets
 * the message. */
static void test_fail(void **state)
{
    (void)state;
    jq_job_t *job = fresh(3);
    run_op_ok(job, T0 + 10);
    jq_delta_t d;
    jq_delta_init(&d, job);
    assert_int_equal(jq_job_pickup(job, T0 + 20, &d), 0);
    jq_delta_init(&d, job);
    assert_int_equal(jq_job_fail(job, T0 + 30, "Job can't depend on itself", &d), 0);
    assert_delta(&d, 1, 2, true);
    assert_int_equal(job->ops[0].status, S);
    for (int k = 1; k < 3; k++) {
        assert_int_equal(job->ops[k].status, E);
        assert_blob_exec_error(&job->ops[k].result, "Job can't depend on itself");
        assert_int_equal(job->ops[k].end_ts, T0 + 30);
    }
    assert_int_equal(job->end_ts, T0 + 30);
    assert_int_equal(jq_job_derive_status(job), JQ_ERROR);
    jq_job_destroy(&job);
}

/* ---- §2.5 cancel in every status ---- */

static void test_cancel_queued(void **state)
{
    (void)state;
    jq_job_t *job = fresh(3);
    jq_delta_t d;
    jq_delta_init(&d, job);
    assert_int_equal(jq_job_cancel(job, T0 + 100, &d), JQ_CANCEL_DONE);
    assert_delta(&d, 0, 2, true);
    for (int k = 0; k < 3; k++) {
        assert_int_equal(job->ops[k].status, CA);
        assert_blob_str(&job->ops[k].result, "Job canceled by request");
        /* Ganeti: opcode timestamps untouched. */
        assert_int_equal(job->ops[k].start_ts, 0);
        assert_int_equal(job->ops[k].end_ts, 0);
    }
    assert_int_equal(job->end_ts, T0 + 100);
    assert_int_equal(job->start_ts, 0); /* stays unset */
    assert_int_equal(jq_job_derive_status(job), JQ_CANCELED);
    jq_delta_init(&d, job);
    assert_int_equal(jq_job_cancel(job, T0 + 200, &d), JQ_CANCEL_TOO_LATE);
    assert_true(jq_delta_empty(&d, job));
    assert_int_equal(job->end_ts, T0 + 100);
    jq_job_destroy(&job);
}

static void test_cancel_between_opcodes(void **state)
{
    (void)state;
    jq_job_t *job = fresh(3);
    run_op_ok(job, T0 + 10);
    assert_int_equal(jq_job_derive_status(job), JQ_QUEUED);
    jq_delta_t d;
    jq_delta_init(&d, job);
    assert_int_equal(jq_job_cancel(job, T0 + 100, &d), JQ_CANCEL_DONE);
    assert_delta(&d, 1, 2, true);
    assert_int_equal(job->ops[0].status, S); /* finished ones keep success */
    assert_int_equal(job->ops[0].result.len, 1);
    assert_int_equal(job->ops[1].status, CA);
    assert_int_equal(job->ops[2].status, CA);
    assert_blob_str(&job->ops[2].result, "Job canceled by request");
    assert_int_equal(job->start_ts, T0 + 10); /* unchanged */
    assert_int_equal(job->end_ts, T0 + 100);
    assert_int_equal(jq_job_derive_status(job), JQ_CANCELED);
    jq_job_destroy(&job);
}

static void test_cancel_waiting(void **state)
{
    (void)state;
    jq_job_t *job = fresh(3);
    run_op_ok(job, T0 + 10);
    jq_delta_t d;
    jq_delta_init(&d, job);
    assert_int_equal(jq_job_pickup(job, T0 + 20, &d), 0);
    jq_delta_init(&d, job);
    assert_int_equal(jq_job_cancel(job, T0 + 100, &d), JQ_CANCEL_PENDING);
    assert_delta(&d, 1, 2, false);
    assert_int_equal(job->ops[0].status, S);
    assert_int_equal(job->ops[1].status, CI);
    assert_int_equal(job->ops[2].status, CI);
    assert_null(job->ops[1].result.data);
    assert_int_equal(job->end_ts, 0); /* not final yet */
    assert_int_equal(jq_job_derive_status(job), JQ_CANCELING);

    /* A second cancel, a priority change, a pick-up: all too late. */
    jq_delta_init(&d, job);
    assert_int_equal(jq_job_cancel(job, T0 + 110, &d), JQ_CANCEL_TOO_LATE);
    assert_int_equal(jq_job_change_priority(job, -10, &d), JQ_PRIO_CANCELING);
    assert_int_equal(jq_job_pickup(job, T0 + 110, &d), -1);
    assert_true(jq_delta_empty(&d, job));

    /* The executor finishes it off: canceled, with end_ts on the opcode
     * that had started. */
    jq_delta_init(&d, job);
    assert_int_equal(jq_job_mark_canceled(job, T0 + 120, &d), 0);
    assert_delta(&d, 1, 2, true);
    assert_int_equal(job->ops[1].status, CA);
    assert_int_equal(job->ops[1].end_ts, T0 + 120);
    assert_int_equal(job->ops[2].end_ts, 0); /* never started */
    assert_blob_str(&job->ops[1].result, "Job canceled by request");
    assert_int_equal(job->start_ts, T0 + 10);
    assert_int_equal(job->end_ts, T0 + 120);
    assert_int_equal(jq_job_derive_status(job), JQ_CANCELED);
    jq_job_destroy(&job);
}

/* jobq's extension: a running opcode can be canceled too. */
static void test_cancel_running(void **state)
{
    (void)state;
    jq_job_t *job = fresh(2);
    jq_delta_t d;
    jq_delta_init(&d, job);
    assert_int_equal(jq_job_pickup(job, T0 + 10, &d), 0);
    assert_int_equal(jq_job_op_running(job, T0 + 11, &d), 0);
    jq_delta_init(&d, job);
    assert_int_equal(jq_job_cancel(job, T0 + 100, &d), JQ_CANCEL_PENDING);
    assert_delta(&d, 0, 1, false);
    assert_int_equal(job->ops[0].status, CI);
    assert_int_equal(job->ops[1].status, CI);
    assert_int_equal(jq_job_derive_status(job), JQ_CANCELING);
    /* A log from the opcode is still allowed (the executor notices the
     * cancel itself). */
    jq_delta_init(&d, job);
    assert_int_equal(jq_job_cancel(job, T0 + 101, &d), JQ_CANCEL_TOO_LATE);
    assert_int_equal(jq_job_mark_canceled(job, T0 + 102, &d), 0);
    assert_int_equal(jq_job_derive_status(job), JQ_CANCELED);
    assert_int_equal(job->ops[0].end_ts, T0 + 102);
    assert_int_equal(jq_job_cancel(job, T0 + 103, &d), JQ_CANCEL_TOO_LATE);
    jq_job_destroy(&job);
}

static void test_cancel_final(void **state)
{
    (void)state;
    for (int how = 0; how < 3; how++) {
        jq_job_t *job = fresh(2);
        jq_delta_t d;
        jq_delta_init(&d, job);
        if (how == 0) {
            run_op_ok(job, T0 + 10);
            run_op_ok(job, T0 + 20);
        } else if (how == 1) {
            jq_job_pickup(job, T0 + 10, &d);
            jq_job_fail(job, T0 + 20, "boom", &d);
        } else {
            jq_job_cancel(job, T0 + 20, &d);
        }
        assert_true(jq_status_final(jq_job_derive_status(job)));
        int64_t end = job->end_ts;
        assert_true(end != 0);
        jq_delta_init(&d, job);
        assert_int_equal(jq_job_cancel(job, T0 + 500, &d), JQ_CANCEL_TOO_LATE);
        assert_int_equal(jq_job_change_priority(job, 10, &d), JQ_PRIO_FINISHED);
        assert_true(jq_delta_empty(&d, job));
        assert_int_equal(job->end_ts, end);
        jq_job_destroy(&job);
    }
}

/* ---- §2.6 change priority ---- */

static void test_change_priority(void **state)
{
    (void)state;
    jq_job_t *job = fresh(3);
    job->ops[0].priority = job->ops[0].input_priority = 10;
    jq_delta_t d;
    jq_delta_init(&d, job);
    assert_int_equal(jq_job_change_priority(job, -10, &d), JQ_PRIO_CHANGED);
    assert_delta(&d, 0, 2, true);
    for (int k = 0; k < 3; k++)
        assert_int_equal(job->ops[k].priority, -10);
    assert_int_equal(job->ops[0].input_priority, 10); /* never changes */
    assert_int_equal(jq_job_priority(job), -10);

    /* Waiting opcodes change too; running and finished ones keep theirs. */
    run_op_ok(job, T0 + 10);
    jq_delta_init(&d, job);
    assert_int_equal(jq_job_pickup(job, T0 + 20, &d), 0);
    jq_delta_init(&d, job);
    assert_int_equal(jq_job_change_priority(job, 10, &d), JQ_PRIO_CHANGED);
    assert_delta(&d, 1, 2, true);
    assert_int_equal(job->ops[0].priority, -10);
    assert_int_equal(job->ops[1].priority, 10);
    assert_int_equal(job->ops[2].priority, 10);
    assert_int_equal(jq_job_priority(job), 10);

    assert_int_equal(jq_job_op_running(job, T0 + 30, &d), 0);
    jq_delta_init(&d, job);
    assert_int_equal(jq_job_change_priority(job, 0, &d), JQ_PRIO_CHANGED);
    assert_delta(&d, 2, 2, true);
    assert_int_equal(job->ops[1].priority, 10); /* running: kept */
    assert_int_equal(job->ops[2].priority, 0);
    assert_int_equal(jq_job_priority(job), 0);
    jq_job_destroy(&job);

    /* Only a running last opcode left: no pending opcodes. */
    job = fresh(2);
    run_op_ok(job, T0 + 10);
    jq_delta_init(&d, job);
    assert_int_equal(jq_job_pickup(job, T0 + 20, &d), 0);
    assert_int_equal(jq_job_op_running(job, T0 + 21, &d), 0);
    jq_delta_init(&d, job);
    assert_int_equal(jq_job_change_priority(job, -10, &d), JQ_PRIO_NO_PENDING);
    assert_true(jq_delta_empty(&d, job));
    assert_int_equal(job->ops[1].priority, 0);

    /* Canceling. */
    jq_job_cancel(job, T0 + 30, &d);
    jq_delta_init(&d, job);
    assert_int_equal(jq_job_change_priority(job, -10, &d), JQ_PRIO_CANCELING);
    assert_true(jq_delta_empty(&d, job));
    jq_job_destroy(&job);
}

/* ---- §1.8 the job log ---- */

static void check_log_entry(const jq_blob_t *b, uint32_t serial, int64_t ts, const char *msg)
{
    msgpack_unpacked up;
    msgpack_unpacked_init(&up);
    assert_int_equal(msgpack_unpack_next(&up, b->data, b->len, NULL), MSGPACK_UNPACK_SUCCESS);
    msgpack_object *o = &up.data;
    assert_int_equal(o->type, MSGPACK_OBJECT_ARRAY);
    assert_int_equal(o->via.array.size, 4);
    msgpack_object *e = o->via.array.ptr;
    assert_int_equal(e[0].type, MSGPACK_OBJECT_POSITIVE_INTEGER);
    assert_int_equal(e[0].via.u64, serial);
    assert_int_equal(e[1].type, MSGPACK_OBJECT_ARRAY);
    assert_int_equal(e[1].via.array.size, 2);
    assert_int_equal(e[1].via.array.ptr[0].via.u64, ts / 1000000);
    assert_int_equal(e[1].via.array.ptr[1].via.u64, ts % 1000000);
    assert_int_equal(e[2].type, MSGPACK_OBJECT_STR);
    assert_memory_equal(e[2].via.str.ptr, "message", 7);
    assert_int_equal(e[3].type, MSGPACK_OBJECT_STR);
    assert_int_equal(e[3].via.str.size, strlen(msg));
    assert_memory_equal(e[3].via.str.ptr, msg, strlen(msg));
    msgpack_unpacked_destroy(&up);
}

static void test_log_serials(void **state)
{
    (void)state;
    jq_job_t *job = fresh(3);
    jq_delta_t d;
    assert_int_equal(job->log_serial, 0);
    jq_delta_init(&d, job);
    assert_int_equal(jq_job_pickup(job, T0 + 1, &d), 0);
    assert_int_equal(jq_job_op_running(job, T0 + 2, &d), 0);
    jq_delta_init(&d, job);
    assert_int_equal(jq_job_log(job, T0 + 3, "message", "a", 1, 0, &d), 0);
    assert_int_equal(jq_job_log(job, T0 + 1000004, "message", "bb", 2, 0, &d), 0);
    /* The delta carries the new entries: serial > log_from. */
    assert_int_equal(d.log_from, 0);
    assert_int_equal(job->log_serial, 2);
    assert_false(jq_delta_empty(&d, job));
    assert_true(d.op_lo > d.op_hi);
    assert_int_equal(jq_job_op_finish(job, T0 + 5, true, NULL, &d), 0);
    jq_delta_init(&d, job);
    assert_int_equal(d.log_from, 2);
    assert_int_equal(jq_job_pickup(job, T0 + 6, &d), 0);
    assert_int_equal(jq_job_op_running(job, T0 + 7, &d), 0);
    assert_int_equal(jq_job_log(job, T0 + 8, "message", "ccc", 3, 0, &d), 0);
    assert_int_equal(jq_job_op_finish(job, T0 + 9, true, NULL, &d), 0);
    /* Many entries on the third opcode: the log array grows. */
    char msg[16];
    for (int i = 0; i < 40; i++) {
        snprintf(msg, sizeof msg, "m%d", i);
        assert_int_equal(jq_job_log(job, T0 + 10 + i, "message", msg, strlen(msg), 0, &d), 0);
    }
    assert_int_equal(job->log_serial, 43);
    assert_int_equal(job->ops[0].nlog, 2);
    assert_int_equal(job->ops[1].nlog, 1);
    assert_int_equal(job->ops[2].nlog, 40);
    check_log_entry(&job->ops[0].log[0], 1, T0 + 3, "a");
    check_log_entry(&job->ops[0].log[1], 2, T0 + 1000004, "bb");
    check_log_entry(&job->ops[1].log[0], 3, T0 + 8, "ccc");
    for (int i = 0; i < 40; i++) {
        snprintf(msg, sizeof msg, "m%d", i);
        check_log_entry(&job->ops[2].log[i], (uint32_t)(4 + i), T0 + 10 + i, msg);
    }
    /* The message length is what counts, not a terminator. */
    assert_int_equal(jq_job_log(job, T0 + 60, "message", "xyz", 2, 0, &d), 0);
    check_log_entry(&job->ops[2].log[40], 44, T0 + 60, "xy");
    /* Ending the job ends the log. */
    jq_job_fail(job, T0 + 70, "stop", &d);
    assert_int_equal(jq_job_log(job, T0 + 71, "message", "late", 4, 0, &d), -1);
    assert_int_equal(job->log_serial, 44);
    jq_job_destroy(&job);
}

/* ---- blobs ---- */

static void test_blobs(void **state)
{
    (void)state;
    jq_blob_t b = {0};
    assert_int_equal(jq_blob_set(&b, "\x01\x02", 2), 0);
    assert_int_equal(b.len, 2);
    assert_int_equal(jq_blob_set(&b, NULL, 0), 0);
    assert_null(b.data);
    assert_int_equal(b.len, 0);
    assert_int_equal(jq_blob_exec_error(&b, "x"), 0);
    assert_blob_exec_error(&b, "x");
    jq_blob_free(&b);
    assert_null(b.data);
    jq_blob_free(&b); /* idempotent */
    jq_job_t *job = NULL;
    jq_job_destroy(&job); /* NULL-safe */
    jq_job_destroy(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_derive_single),
        cmocka_unit_test(test_derive_multi),
        cmocka_unit_test(test_derive_random),
        cmocka_unit_test(test_status_names),
        cmocka_unit_test(test_priority),
        cmocka_unit_test(test_delta_init),
        cmocka_unit_test(test_pickup_running_finish),
        cmocka_unit_test(test_age_ref),
        cmocka_unit_test(test_error_propagation),
        cmocka_unit_test(test_fail),
        cmocka_unit_test(test_cancel_queued),
        cmocka_unit_test(test_cancel_between_opcodes),
        cmocka_unit_test(test_cancel_waiting),
        cmocka_unit_test(test_cancel_running),
        cmocka_unit_test(test_cancel_final),
        cmocka_unit_test(test_change_priority),
        cmocka_unit_test(test_log_serials),
        cmocka_unit_test(test_blobs),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
