/* test_scheduler.c: the run queue and dependency parking of
 * queue/scheduler.c — priority then FIFO, the max_running cap, stale
 * entries (returned as they are: dropping them is the executor's job),
 * kicks, stop, dependency checks (PARKED, NOT_FOUND, FINAL, RECHECK) and
 * re-pushing waiters when their dependency finishes. No sleeps: a
 * deadline already past means "don't wait", INT64_MAX is used only when
 * an event is already queued. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "opdef.h"
#include "scheduler.h"

#define NOW 1000000LL  /* any monotonic "now" */
#define PAST 0LL       /* a deadline not after NOW: return at once */
#define T0 1700000000000000LL

static jq_sched_event_t wait_ev(jq_sched_t *s, unsigned ex, int64_t deadline,
                                jq_runnable_t *run, uint64_t *kicked, size_t maxkick,
                                size_t *nkicked)
{
    jq_runnable_t r = {0};
    uint64_t k[64];
    size_t nk = 0;
    jq_sched_event_t ev = jq_sched_wait(s, ex, NOW, deadline, run ? run : &r,
                                        kicked ? kicked : k, kicked ? maxkick : 64,
                                        nkicked ? nkicked : &nk);
    return ev;
}

/* The next run entry; one must be available. */
static jq_runnable_t next_run(jq_sched_t *s)
{
    jq_runnable_t r;
    assert_int_equal(wait_ev(s, 0, INT64_MAX, &r, NULL, 0, NULL), JQ_EV_RUN);
    return r;
}

static void assert_idle(jq_sched_t *s, unsigned ex)
{
    assert_int_equal(wait_ev(s, ex, PAST, NULL, NULL, 0, NULL), JQ_EV_TIMEOUT);
}

static jq_sched_stats_t stats(jq_sched_t *s)
{
    jq_sched_stats_t st;
    jq_sched_get_stats(s, &st);
    return st;
}

static void test_new(void **state)
{
    (void)state;
    assert_null(jq_sched_new(0, 1));
    assert_null(jq_sched_new(1, 0));
    jq_sched_t *s = jq_sched_new(3, 2);
    assert_non_null(s);
    jq_sched_stats_t st = stats(s);
    assert_int_equal(st.max_running, 3);
    assert_int_equal(st.running, 0);
    assert_int_equal(st.runnable, 0);
    assert_int_equal(st.dep_waiting, 0);
    assert_idle(s, 0);
    assert_idle(s, 1);
    jq_sched_destroy(&s);
    assert_null(s);
    jq_sched_destroy(&s);
}

static void test_priority_fifo(void **state)
{
    (void)state;
    jq_sched_t *s = jq_sched_new(100, 1);
    const struct { uint64_t id; int prio; } in[] = {
        {1, 0}, {2, 0}, {3, 10}, {4, -10}, {5, 0}, {6, -10}, {7, 10}, {8, -20}, {9, 19},
    };
    for (size_t i = 0; i < sizeof in / sizeof in[0]; i++)
        assert_int_equal(jq_sched_push(s, in[i].id, in[i].prio, (uint32_t)i), 0);
    assert_int_equal(stats(s).runnable, 9);
    const uint64_t order[] = {8, 4, 6, 1, 2, 5, 3, 7, 9};
    for (size_t i = 0; i < 9; i++) {
        jq_runnable_t r = next_run(s);
        assert_int_equal(r.job_id, order[i]);
        /* The gen pushed with it comes back. */
        for (size_t k = 0; k < 9; k++)
            if (in[k].id == r.job_id)
                assert_int_equal(r.gen, k);
    }
    assert_int_equal(stats(s).running, 9);
    assert_int_equal(stats(s).runnable, 0);
    assert_idle(s, 0);
    jq_sched_destroy(&s);
}

/* FIFO holds over many entries and heap reshuffles. */
static void test_fifo_many(void **state)
{
    (void)state;
    jq_sched_t *s = jq_sched_new(100000, 1);
    const int prios[] = {10, 0, -10};
    for (uint64_t id = 1; id <= 3000; id++)
        assert_int_equal(jq_sched_push(s, id, prios[id % 3], 0), 0);
    uint64_t last[3] = {0, 0, 0};
    int last_prio = -100;
    for (int i = 0; i < 3000; i++) {
        jq_runnable_t r = next_run(s);
        int p = prios[r.job_id % 3];
        assert_true(p >= last_prio);
        last_prio = p;
        int slot = (int)(r.job_id % 3);
        assert_true(r.job_id > last[slot]);
        last[slot] = r.job_id;
    }
    jq_sched_destroy(&s);
}

static void test_max_running(void **state)
{
    (void)state;
    jq_sched_t *s = jq_sched_new(2, 1);
    for (uint64_t id = 1; id <= 4; id++)
        jq_sched_push(s, id, 0, 0);
    assert_int_equal(next_run(s).job_id, 1);
    assert_int_equal(next_run(s).job_id, 2);
    /* Both slots taken: nothing runs, the rest waits in the queue. */
    assert_idle(s, 0);
    jq_sched_stats_t st = stats(s);
    assert_int_equal(st.running, 2);
    assert_int_equal(st.runnable, 2);
    jq_sched_release(s);
    assert_int_equal(stats(s).running, 1);
    assert_int_equal(next_run(s).job_id, 3);
    assert_int_equal(stats(s).running, 2);
    jq_sched_release(s);
    jq_sched_release(s);
    jq_sched_release(s); /* an extra release does not underflow */
    assert_int_equal(stats(s).running, 0);
    assert_int_equal(next_run(s).job_id, 4);
    assert_int_equal(stats(s).running, 1);
    jq_sched_destroy(&s);
}

/* A job re-filed at a new priority: both entries come back, each with its
 * gen; telling the stale one apart is the executor's business. */
static void test_stale_entries(void **state)
{
    (void)state;
    jq_sched_t *s = jq_sched_new(10, 1);
    jq_sched_push(s, 1, 0, 0);
    jq_sched_push(s, 2, 0, 0);
    jq_sched_push(s, 1, -10, 1); /* priority change: gen 1 */
    assert_int_equal(stats(s).runnable, 3);
    jq_runnable_t r = next_run(s);
    assert_int_equal(r.job_id, 1);
    assert_int_equal(r.gen, 1);
    r = next_run(s);
    assert_int_equal(r.job_id, 1);
    assert_int_equal(r.gen, 0); /* stale */
    jq_sched_release(s);        /* what the executor does with it */
    r = next_run(s);
    assert_int_equal(r.job_id, 2);
    assert_int_equal(r.gen, 0);
    assert_int_equal(stats(s).running, 2);
    jq_sched_destroy(&s);
}

static void test_kicks(void **state)
{
    (void)state;
    jq_sched_t *s = jq_sched_new(10, 2);
    jq_sched_push(s, 9, 0, 0);
    jq_sched_kick(s, 0, 42);
    jq_sched_kick(s, 0, 43);
    jq_sched_kick(s, 0, 44);
    jq_sched_kick(s, 1, 45);
    jq_sched_kick(s, 2, 46); /* no executor 2: ignored */
    uint64_t k[8];
    size_t nk = 99;
    /* Kicks come before runs, even with a deadline in the past. */
    assert_int_equal(wait_ev(s, 0, PAST, NULL, k, 2, &nk), JQ_EV_KICK);
    assert_int_equal(nk, 2);
    assert_int_equal(k[0], 42);
    assert_int_equal(k[1], 43);
    assert_int_equal(wait_ev(s, 0, INT64_MAX, NULL, k, 8, &nk), JQ_EV_KICK);
    assert_int_equal(nk, 1);
    assert_int_equal(k[0], 44);
    /* Executor 1 has its own inbox. */
    assert_int_equal(wait_ev(s, 1, INT64_MAX, NULL, k, 8, &nk), JQ_EV_KICK);
    assert_int_equal(nk, 1);
    assert_int_equal(k[0], 45);
    /* Inboxes empty: the run entry, then nothing. */
    assert_int_equal(next_run(s).job_id, 9);
    assert_idle(s, 0);
    assert_idle(s, 1);
    /* Many kicks: the inbox grows and keeps order. */
    for (uint64_t id = 1; id <= 100; id++)
        jq_sched_kick(s, 1, id);
    uint64_t expect = 1;
    while (expect <= 100) {
        assert_int_equal(wait_ev(s, 1, PAST, NULL, k, 8, &nk), JQ_EV_KICK);
        for (size_t i = 0; i < nk; i++)
            assert_int_equal(k[i], expect++);
    }
    assert_idle(s, 1);
    jq_sched_destroy(&s);
}

static void test_stop(void **state)
{
    (void)state;
    jq_sched_t *s = jq_sched_new(10, 2);
    jq_sched_push(s, 1, 0, 0);
    jq_sched_kick(s, 0, 1);
    jq_sched_stop(s);
    /* Stop wins over everything, for every executor, every time. */
    for (int i = 0; i < 3; i++) {
        assert_int_equal(wait_ev(s, 0, INT64_MAX, NULL, NULL, 0, NULL), JQ_EV_STOP);
        assert_int_equal(wait_ev(s, 1, PAST, NULL, NULL, 0, NULL), JQ_EV_STOP);
    }
    assert_int_equal(stats(s).runnable, 1);
    jq_sched_destroy(&s);
}

/* ---- dependencies ---- */

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

static void add_job(jq_table_t *t, uint64_t id, int prio)
{
    jq_job_t *job = jq_job_new(id, 1, T0);
    assert_non_null(job);
    job->ops[0].def = &def;
    job->ops[0].priority = job->ops[0].input_priority = (int8_t)prio;
    assert_true(jq_table_reserve(t, UINT64_MAX));
    jq_shard_t *sh = jq_table_shard_for(t, id);
    jq_shard_wrlock(sh);
    assert_int_equal(jq_shard_insert(sh, job, T0), 0);
    jq_shard_wrunlock(sh);
}

typedef enum { PICKUP, FINISH_OK, FAIL, CANCEL } step_t;

/* What the executor and the handlers do to a job, under its shard lock. */
static void step(jq_table_t *t, uint64_t id, step_t what)
{
    jq_shard_t *sh = jq_table_shard_for(t, id);
    jq_shard_wrlock(sh);
    jq_job_t *job = jq_shard_find(sh, id);
    assert_non_null(job);
    jq_delta_t d;
    jq_delta_init(&d, job);
    switch (what) {
    case PICKUP:
        job->sched_state = JQ_SCHED_ACTIVE;
        assert_int_equal(jq_job_pickup(job, T0 + 1, &d), 0);
        break;
    case FINISH_OK:
        assert_int_equal(jq_job_pickup(job, T0 + 1, &d), 0);
        assert_int_equal(jq_job_op_running(job, T0 + 2, &d), 0);
        assert_int_equal(jq_job_op_finish(job, T0 + 3, true, NULL, &d), 0);
        break;
    case FAIL:
        assert_int_equal(jq_job_fail(job, T0 + 3, "boom", &d), 0);
        break;
    case CANCEL:
        assert_true(jq_job_cancel(job, T0 + 3, &d) != JQ_CANCEL_TOO_LATE);
        break;
    }
    jq_shard_emit(sh, job, &d, JQ_CHANGE_UPDATE, T0 + 3);
    jq_shard_wrunlock(sh);
}

static uint8_t sched_state(jq_table_t *t, uint64_t id)
{
    jq_shard_t *sh = jq_table_shard_for(t, id);
    jq_shard_rdlock(sh);
    uint8_t st = jq_shard_find_any(sh, id)->sched_state;
    jq_shard_rdunlock(sh);
    return st;
}

/* Take the waiter as an executor would: from the run queue, then picked up. */
static void take(jq_sched_t *s, jq_table_t *t, uint64_t id, uint32_t gen)
{
    jq_runnable_t r = next_run(s);
    assert_int_equal(r.job_id, id);
    assert_int_equal(r.gen, gen);
    step(t, id, PICKUP);
}

static void test_dep_park_and_wake(void **state)
{
    (void)state;
    jq_table_t *t = jq_table_new(4, NULL, NULL);
    jq_sched_t *s = jq_sched_new(10, 1);
    add_job(t, 1, 0);   /* the dependency */
    add_job(t, 2, -10); /* waiters */
    add_job(t, 3, 0);
    add_job(t, 4, 0);   /* waits on 5 instead */
    add_job(t, 5, 0);
    add_job(t, 6, 0);   /* unrelated, queued meanwhile */
    for (uint64_t id = 2; id <= 4; id++)
        jq_sched_push(s, id, id == 2 ? -10 : 0, 0);
    take(s, t, 2, 0);
    take(s, t, 3, 0);
    take(s, t, 4, 0);
    assert_int_equal(stats(s).running, 3);
    jq_status_t st = JQ_STATUS__COUNT;
    assert_int_equal(jq_sched_check_dep(s, t, 1, 3, 0, &st), JQ_DEP_PARKED);
    assert_int_equal(jq_sched_check_dep(s, t, 1, 2, 0, &st), JQ_DEP_PARKED);
    assert_int_equal(jq_sched_check_dep(s, t, 5, 4, 0, &st), JQ_DEP_PARKED);
    assert_int_equal(st, JQ_STATUS__COUNT); /* untouched */
    assert_int_equal(sched_state(t, 2), JQ_SCHED_DEPWAIT);
    assert_int_equal(sched_state(t, 3), JQ_SCHED_DEPWAIT);
    jq_sched_stats_t ss = stats(s);
    assert_int_equal(ss.dep_waiting, 3);
    assert_int_equal(ss.running, 0); /* parking gives the slot back */
    assert_int_equal(ss.runnable, 0);
    assert_idle(s, 0);

    /* A job finishing that nobody waits on changes nothing. */
    jq_sched_push(s, 6, 0, 0);
    jq_sched_job_finished(s, 6);
    assert_int_equal(stats(s).dep_waiting, 3);
    assert_int_equal(next_run(s).job_id, 6);

    /* Job 1 finishes: its two waiters come back, by priority (2 first),
     * with the gen they parked with; the one on job 5 stays. */
    step(t, 1, FINISH_OK);
    jq_sched_job_finished(s, 1);
    ss = stats(s);
    assert_int_equal(ss.dep_waiting, 1);
    assert_int_equal(ss.runnable, 2);
    jq_runnable_t r = next_run(s);
    assert_int_equal(r.job_id, 2);
    assert_int_equal(r.gen, 0);
    r = next_run(s);
    assert_int_equal(r.job_id, 3);
    assert_idle(s, 0);
    /* Finishing twice pushes nothing more. */
    jq_sched_job_finished(s, 1);
    assert_int_equal(stats(s).runnable, 0);
    /* Now the dependency is final: FINAL with its status. */
    assert_int_equal(jq_sched_check_dep(s, t, 1, 2, 0, &st), JQ_DEP_FINAL);
    assert_int_equal(st, JQ_SUCCESS);
    step(t, 5, FAIL);
    jq_sched_job_finished(s, 5);
    assert_int_equal(next_run(s).job_id, 4);
    assert_int_equal(stats(s).dep_waiting, 0);
    jq_sched_destroy(&s);
    jq_table_destroy(&t);
}

static void test_dep_not_found_and_final(void **state)
{
    (void)state;
    jq_table_t *t = jq_table_new(4, NULL, NULL);
    jq_sched_t *s = jq_sched_new(10, 1);
    add_job(t, 1, 0);
    add_job(t, 2, 0);
    add_job(t, 3, 0);
    add_job(t, 4, 0);
    jq_sched_push(s, 1, 0, 0);
    take(s, t, 1, 0);
    jq_status_t st = JQ_STATUS__COUNT;
    assert_int_equal(jq_sched_check_dep(s, t, 99, 1, 0, &st), JQ_DEP_NOT_FOUND);
    assert_int_equal(jq_sched_check_dep(s, t, 0, 1, 0, &st), JQ_DEP_NOT_FOUND);
    assert_int_equal(st, JQ_STATUS__COUNT);
    step(t, 2, FAIL);
    assert_int_equal(jq_sched_check_dep(s, t, 2, 1, 0, &st), JQ_DEP_FINAL);
    assert_int_equal(st, JQ_ERROR);
    step(t, 3, CANCEL); /* queued: canceled at once */
    assert_int_equal(jq_sched_check_dep(s, t, 3, 1, 0, &st), JQ_DEP_FINAL);
    assert_int_equal(st, JQ_CANCELED);
    /* An archived dependency is still found. */
    jq_shard_t *sh = jq_table_shard_for(t, 2);
    jq_shard_wrlock(sh);
    assert_int_equal(jq_shard_archive(sh, jq_shard_find(sh, 2), T0 + 9), 0);
    jq_shard_wrunlock(sh);
    st = JQ_STATUS__COUNT;
    assert_int_equal(jq_sched_check_dep(s, t, 2, 1, 0, &st), JQ_DEP_FINAL);
    assert_int_equal(st, JQ_ERROR);
    /* None of that parked anything or freed the slot. */
    assert_int_equal(stats(s).dep_waiting, 0);
    assert_int_equal(stats(s).running, 1);
    assert_int_equal(sched_state(t, 1), JQ_SCHED_ACTIVE);
    jq_sched_destroy(&s);
    jq_table_destroy(&t);
}

static void test_dep_recheck(void **state)
{
    (void)state;
    jq_table_t *t = jq_table_new(4, NULL, NULL);
    jq_sched_t *s = jq_sched_new(10, 1);
    add_job(t, 1, 0); /* dependency, stays queued */
    add_job(t, 2, 0);
    add_job(t, 3, 0);
    add_job(t, 4, 0);
    jq_sched_push(s, 2, 0, 0);
    jq_sched_push(s, 3, 0, 0);
    take(s, t, 2, 0);
    take(s, t, 3, 0);
    jq_status_t st;
    /* The waiter was canceled while it checked: look again, don't park. */
    step(t, 2, CANCEL);
    assert_int_equal(jq_sched_check_dep(s, t, 1, 2, 0, &st), JQ_DEP_RECHECK);
    assert_int_equal(sched_state(t, 2), JQ_SCHED_ACTIVE);
    /* A gen that is not the job's: not ours any more. */
    assert_int_equal(jq_sched_check_dep(s, t, 1, 3, 7, &st), JQ_DEP_RECHECK);
    /* A waiter not held by an executor. */
    assert_int_equal(jq_sched_check_dep(s, t, 1, 4, 0, &st), JQ_DEP_RECHECK);
    /* A waiter that does not exist. */
    assert_int_equal(jq_sched_check_dep(s, t, 1, 77, 0, &st), JQ_DEP_RECHECK);
    jq_sched_stats_t ss = stats(s);
    assert_int_equal(ss.dep_waiting, 0);
    assert_int_equal(ss.running, 2); /* slots still held */
    /* The right gen parks. */
    assert_int_equal(jq_sched_check_dep(s, t, 1, 3, 0, &st), JQ_DEP_PARKED);
    assert_int_equal(stats(s).running, 1);
    jq_sched_destroy(&s); /* frees the parked node */
    jq_table_destroy(&t);
}

/* Many waiters on many dependencies: the parking table grows and every
 * waiter comes back exactly once. */
static void test_dep_many(void **state)
{
    (void)state;
    enum { N = 3000 };
    jq_table_t *t = jq_table_new(16, NULL, NULL);
    jq_sched_t *s = jq_sched_new(N, 1);
    for (uint64_t id = 1; id <= 2 * N; id++)
        add_job(t, id, 0);
    /* Waiter N+k waits on job k. */
    for (uint64_t k = 1; k <= N; k++)
        jq_sched_push(s, N + k, 0, 0);
    for (uint64_t k = 1; k <= N; k++) {
        take(s, t, N + k, 0);
        jq_status_t st;
        assert_int_equal(jq_sched_check_dep(s, t, k, N + k, 0, &st), JQ_DEP_PARKED);
    }
    assert_int_equal(stats(s).dep_waiting, N);
    assert_int_equal(stats(s).running, 0);
    for (uint64_t k = N; k >= 1; k--)
        jq_sched_job_finished(s, k);
    assert_int_equal(stats(s).dep_waiting, 0);
    assert_int_equal(stats(s).runnable, N);
    /* FIFO in the order the dependencies finished. */
    for (uint64_t k = N; k >= 1; k--)
        assert_int_equal(next_run(s).job_id, N + k);
    jq_sched_destroy(&s);
    jq_table_destroy(&t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_new),
        cmocka_unit_test(test_priority_fifo),
        cmocka_unit_test(test_fifo_many),
        cmocka_unit_test(test_max_running),
        cmocka_unit_test(test_stale_entries),
        cmocka_unit_test(test_kicks),
        cmocka_unit_test(test_stop),
        cmocka_unit_test(test_dep_park_and_wake),
        cmocka_unit_test(test_dep_not_found_and_final),
        cmocka_unit_test(test_dep_recheck),
        cmocka_unit_test(test_dep_many),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
