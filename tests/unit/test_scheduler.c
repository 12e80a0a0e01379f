/* test_scheduler.c: queue/scheduler.c — ids handed out in order and known
 * at once, the commit gate (nothing runs before its submit record is
 * durable), the run heap (priority, then id: a priority change keeps the
 * job's place among its new peers and nothing stale is left behind), the
 * running cap, kicks, pause and stop, dependency parking with the final
 * statuses the scheduler keeps itself (no table, no shard lock), cancels
 * of parked jobs, and priority changes reaching parked and pending jobs.
 * No sleeps: a deadline already past means "don't wait". */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "scheduler.h"

#define NOW 1000000LL  /* any monotonic "now" */
#define PAST 0LL       /* a deadline not after NOW: return at once */

static jq_sched_event_t wait_ev(jq_sched_t *s, unsigned ex, int64_t deadline, uint64_t want,
                                uint64_t *run, uint64_t *kicked, size_t maxkick, size_t *nkicked)
{
    uint64_t r = 0, k[64], durable;
    size_t nk = 0;
    return jq_sched_wait(s, ex, NOW, deadline, want, run ? run : &r, kicked ? kicked : k,
                         kicked ? maxkick : 64, nkicked ? nkicked : &nk, &durable);
}

/* The next job to run; one must be there. */
static uint64_t next_run(jq_sched_t *s)
{
    uint64_t id = 0;
    assert_int_equal(wait_ev(s, 0, PAST, 0, &id, NULL, 0, NULL), JQ_EV_RUN);
    return id;
}

static void assert_idle(jq_sched_t *s, unsigned ex)
{
    assert_int_equal(wait_ev(s, ex, PAST, 0, NULL, NULL, 0, NULL), JQ_EV_TIMEOUT);
}

static jq_sched_stats_t stats(jq_sched_t *s)
{
    jq_sched_stats_t st;
    jq_sched_get_stats(s, &st);
    return st;
}

/* n new jobs at prio, submitted with ticket 0 (runnable at once). */
static uint64_t submit(jq_sched_t *s, uint32_t n, int prio)
{
    uint64_t first = jq_sched_new_jobs(s, n);
    assert_true(first > 0);
    for (uint32_t k = 0; k < n; k++)
        jq_sched_submitted(s, first + k, prio, 0);
    return first;
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
    assert_int_equal(st.known, 0);
    assert_idle(s, 0);
    assert_idle(s, 1);
    jq_sched_destroy(&s);
    assert_null(s);
    jq_sched_destroy(&s);
}

static void test_ids(void **state)
{
    (void)state;
    jq_sched_t *s = jq_sched_new(3, 1);
    assert_int_equal(jq_sched_last_id(s), 0);
    assert_int_equal(jq_sched_new_jobs(s, 1), 1);
    assert_int_equal(jq_sched_new_jobs(s, 5), 2);
    assert_int_equal(jq_sched_last_id(s), 6);
    assert_int_equal(jq_sched_new_jobs(s, 0), 0);
    assert_int_equal(stats(s).known, 6);
    /* Known before they run: a job may park on one at once. */
    jq_sched_withdraw(s, 3);
    assert_int_equal(stats(s).known, 5);
    /* Ids continue after a restart's last id. */
    jq_sched_set_last_id(s, 100);
    assert_int_equal(jq_sched_new_jobs(s, 1), 101);
    /* Nothing submitted yet: nothing runs. */
    assert_idle(s, 0);
    jq_sched_destroy(&s);
}

static void test_priority_then_id(void **state)
{
    (void)state;
    jq_sched_t *s = jq_sched_new(100, 1);
    const int prios[] = {0, 0, 10, -10, 0, -10, 10, -20, 19};
    uint64_t first = jq_sched_new_jobs(s, 9);
    /* Submitted in a shuffled order: the id decides, not the arrival. */
    const int arrival[] = {8, 3, 0, 6, 1, 5, 4, 2, 7};
    for (int i = 0; i < 9; i++)
        jq_sched_submitted(s, first + arrival[i], prios[arrival[i]], 0);
    assert_int_equal(stats(s).runnable, 9);
    const uint64_t order[] = {8, 4, 6, 1, 2, 5, 3, 7, 9};
    for (size_t i = 0; i < 9; i++)
        assert_int_equal(next_run(s), order[i]);
    assert_int_equal(stats(s).running, 9);
    assert_int_equal(stats(s).runnable, 0);
    assert_idle(s, 0);
    jq_sched_destroy(&s);
}

/* Order holds over many jobs and heap reshuffles. */
static void test_order_many(void **state)
{
    (void)state;
    jq_sched_t *s = jq_sched_new(100000, 1);
    const int prios[] = {10, 0, -10};
    uint64_t first = jq_sched_new_jobs(s, 3000);
    for (uint64_t k = 0; k < 3000; k++)
        jq_sched_submitted(s, first + k, prios[(first + k) % 3], 0);
    uint64_t last[3] = {0, 0, 0};
    int last_prio = -100;
    for (int i = 0; i < 3000; i++) {
        uint64_t id = next_run(s);
        int p = prios[id % 3];
        assert_true(p >= last_prio);
        last_prio = p;
        assert_true(id > last[id % 3]);
        last[id % 3] = id;
    }
    jq_sched_destroy(&s);
}

/* Nothing runs before its submit record is durable. */
static void test_commit_gate(void **state)
{
    (void)state;
    jq_sched_t *s = jq_sched_new(10, 1);
    uint64_t a = jq_sched_new_jobs(s, 3);
    jq_sched_submitted(s, a, 0, 5);
    jq_sched_submitted(s, a + 1, 0, 7);
    jq_sched_submitted(s, a + 2, -10, 6);
    assert_int_equal(stats(s).pending, 3);
    assert_idle(s, 0);
    jq_sched_durable(s, 4);
    assert_idle(s, 0);
    jq_sched_durable(s, 6); /* a and a+2 */
    assert_int_equal(stats(s).pending, 1);
    assert_int_equal(next_run(s), a + 2);
    assert_int_equal(next_run(s), a);
    assert_idle(s, 0);
    jq_sched_durable(s, 5); /* going back changes nothing */
    jq_sched_durable(s, 100);
    assert_int_equal(next_run(s), a + 1);
    /* Submitted when already durable: runnable at once. */
    uint64_t b = jq_sched_new_jobs(s, 1);
    jq_sched_submitted(s, b, 0, 50);
    assert_int_equal(next_run(s), b);
    /* A cancel before the commit: it never runs. */
    uint64_t c = jq_sched_new_jobs(s, 1);
    jq_sched_submitted(s, c, 0, 200);
    jq_sched_final(s, c, JQ_CANCELED);
    jq_sched_durable(s, 300);
    assert_idle(s, 0);
    assert_int_equal(stats(s).pending, 0);
    jq_sched_destroy(&s);
}

/* Batches through the commit gate while more and more records sit in the
 * run heap: ids withdrawn or made final before their submit never enter
 * it, the rest wait for their ticket and then run in (priority, id) order. */
static void test_commit_gate_many(void **state)
{
    (void)state;
    jq_sched_t *s = jq_sched_new(1000000, 1);
    uint64_t ticket = 0, durable = 0, queued = 0, pending = 0;
    for (int round = 0; round < 6; round++) {
        uint64_t first = jq_sched_new_jobs(s, 2000);
        assert_true(first > 0);
        for (uint64_t id = first; id < first + 2000; id++) {
            if (id % 7 == 0) {
                jq_sched_withdraw(s, id);
            } else if (id % 11 == 0) {
                jq_sched_final(s, id, JQ_CANCELED);
            } else {
                jq_sched_submitted(s, id, 0, ++ticket);
                pending++;
            }
        }
        assert_int_equal(stats(s).pending, pending);
        /* Half of what waits becomes durable: into the run heap. */
        uint64_t to = durable + (ticket - durable) / 2;
        jq_sched_durable(s, to);
        queued += to - durable;
        pending -= to - durable;
        durable = to;
        assert_int_equal(stats(s).pending, pending);
        assert_int_equal(stats(s).runnable, queued);
    }
    jq_sched_durable(s, ticket);
    queued += pending;
    assert_int_equal(stats(s).pending, 0);
    assert_int_equal(stats(s).runnable, queued);
    uint64_t last = 0;
    for (uint64_t k = 0; k < queued; k++) {
        uint64_t id = next_run(s);
        assert_true(id > last && id % 7 != 0 && id % 11 != 0);
        last = id;
        jq_sched_done(s, id, JQ_SUCCESS);
    }
    assert_idle(s, 0);
    jq_sched_destroy(&s);
}

/* An executor waiting for its running record's commit is woken by it. */
static void test_wait_for_durable(void **state)
{
    (void)state;
    jq_sched_t *s = jq_sched_new(10, 1);
    assert_int_equal(wait_ev(s, 0, PAST, 3, NULL, NULL, 0, NULL), JQ_EV_TIMEOUT);
    jq_sched_durable(s, 3);
    assert_int_equal(wait_ev(s, 0, INT64_MAX, 3, NULL, NULL, 0, NULL), JQ_EV_DURABLE);
    assert_int_equal(wait_ev(s, 0, PAST, 4, NULL, NULL, 0, NULL), JQ_EV_TIMEOUT);
    jq_sched_destroy(&s);
}

static void test_max_running(void **state)
{
    (void)state;
    jq_sched_t *s = jq_sched_new(2, 1);
    uint64_t first = submit(s, 4, 0);
    assert_int_equal(next_run(s), first);
    assert_int_equal(next_run(s), first + 1);
    /* Both slots taken: nothing runs, the rest waits. */
    assert_idle(s, 0);
    assert_int_equal(stats(s).running, 2);
    assert_int_equal(stats(s).runnable, 2);
    jq_sched_done(s, first, JQ_SUCCESS);
    assert_int_equal(stats(s).running, 1);
    assert_int_equal(next_run(s), first + 2);
    /* Requeued between opcodes: its place by id comes before first + 3. */
    jq_sched_requeue(s, first + 1, 0, 5);
    jq_sched_done(s, first + 2, JQ_SUCCESS);
    assert_int_equal(next_run(s), first + 1);
    assert_int_equal(next_run(s), first + 3);
    jq_sched_done(s, 999, JQ_SUCCESS); /* not held: nothing happens */
    assert_int_equal(stats(s).running, 2);
    jq_sched_destroy(&s);
}

/* A priority change moves the job in place; nothing stale remains. */
static void test_priority_change(void **state)
{
    (void)state;
    jq_sched_t *s = jq_sched_new(10, 1);
    uint64_t f = submit(s, 4, 0);
    jq_sched_set_priority(s, f + 3, -10, 2);
    assert_int_equal(stats(s).runnable, 4); /* no second entry */
    /* A stale priority (older serial) never wins over a newer one. */
    jq_sched_set_priority(s, f + 3, 10, 1);
    jq_sched_set_priority(s, f + 2, -10, 2);
    assert_int_equal(next_run(s), f + 2); /* -10 peers: by id */
    assert_int_equal(next_run(s), f + 3);
    /* Flipping back and forth many times costs nothing. */
    for (uint64_t serial = 3; serial < 1000; serial++)
        jq_sched_set_priority(s, f + 1, serial % 2 ? 10 : -10, serial);
    assert_int_equal(stats(s).runnable, 2);
    assert_int_equal(next_run(s), f);     /* f + 1 ended at 10 */
    assert_int_equal(next_run(s), f + 1);
    assert_idle(s, 0);
    jq_sched_destroy(&s);
}

static void test_kicks_and_cancel(void **state)
{
    (void)state;
    jq_sched_t *s = jq_sched_new(10, 2);
    uint64_t a = submit(s, 2, 0);
    assert_int_equal(next_run(s), a); /* executor 0 holds a */
    uint64_t b = a + 1;
    uint64_t id;
    assert_int_equal(wait_ev(s, 1, PAST, 0, &id, NULL, 0, NULL), JQ_EV_RUN);
    assert_int_equal(id, b);          /* executor 1 holds b */
    jq_sched_cancel(s, a);
    jq_sched_cancel(s, b);
    jq_sched_cancel(s, 999);          /* unknown: ignored */
    uint64_t k[8];
    size_t nk = 0;
    assert_int_equal(wait_ev(s, 0, PAST, 0, NULL, k, 8, &nk), JQ_EV_KICK);
    assert_int_equal(nk, 1);
    assert_int_equal(k[0], a);
    assert_int_equal(wait_ev(s, 1, PAST, 0, NULL, k, 8, &nk), JQ_EV_KICK);
    assert_int_equal(k[0], b);
    /* A job being canceled is not parked on a dependency. */
    uint64_t dep = jq_sched_new_jobs(s, 1);
    jq_status_t st;
    assert_int_equal(jq_sched_check_dep(s, a, dep, &st), JQ_DEP_CANCELED);
    assert_idle(s, 0);
    assert_idle(s, 1);
    jq_sched_destroy(&s);
}

static void test_pause_and_stop(void **state)
{
    (void)state;
    jq_sched_t *s = jq_sched_new(10, 2);
    submit(s, 2, 0);
    jq_sched_pause(s);
    assert_true(stats(s).paused);
    assert_idle(s, 0); /* paused: nothing starts */
    jq_sched_stop(s);
    /* Stop wins over everything, for every executor, every time. */
    for (int i = 0; i < 3; i++) {
        assert_int_equal(wait_ev(s, 0, INT64_MAX, 0, NULL, NULL, 0, NULL), JQ_EV_STOP);
        assert_int_equal(wait_ev(s, 1, PAST, 0, NULL, NULL, 0, NULL), JQ_EV_STOP);
    }
    assert_int_equal(stats(s).runnable, 2);
    jq_sched_destroy(&s);
}

/* ---- dependencies ---- */

static void test_dep_park_and_wake(void **state)
{
    (void)state;
    jq_sched_t *s = jq_sched_new(10, 1);
    uint64_t f = jq_sched_new_jobs(s, 6);
    uint64_t dep = f, w2 = f + 1, w3 = f + 2, w4 = f + 3, dep5 = f + 4, other = f + 5;
    jq_sched_submitted(s, w2, -10, 0);
    jq_sched_submitted(s, w3, 0, 0);
    jq_sched_submitted(s, w4, 0, 0);
    assert_int_equal(next_run(s), w2);
    assert_int_equal(next_run(s), w3);
    assert_int_equal(next_run(s), w4);
    assert_int_equal(stats(s).running, 3);
    jq_status_t st = JQ_STATUS__COUNT;
    /* The dependency is known (new, not final) though it never ran. */
    assert_int_equal(jq_sched_check_dep(s, w3, dep, &st), JQ_DEP_PARKED);
    assert_int_equal(jq_sched_check_dep(s, w2, dep, &st), JQ_DEP_PARKED);
    assert_int_equal(jq_sched_check_dep(s, w4, dep5, &st), JQ_DEP_PARKED);
    assert_int_equal(st, JQ_STATUS__COUNT); /* untouched */
    jq_sched_stats_t ss = stats(s);
    assert_int_equal(ss.dep_waiting, 3);
    assert_int_equal(ss.running, 0); /* parking gives the slot back */
    assert_idle(s, 0);
    /* A parked job's priority change takes effect when it wakes. */
    jq_sched_set_priority(s, w3, -10, 9);

    /* A job finishing that nobody waits on changes nothing. */
    jq_sched_submitted(s, other, 0, 0);
    assert_int_equal(next_run(s), other);
    jq_sched_done(s, other, JQ_SUCCESS);
    assert_int_equal(stats(s).dep_waiting, 3);

    /* The dependency runs and finishes: its waiters come back, w2 and w3
     * both at -10 now, by id; the one on dep5 stays. */
    jq_sched_submitted(s, dep, 10, 0);
    assert_int_equal(next_run(s), dep);
    jq_sched_done(s, dep, JQ_SUCCESS);
    ss = stats(s);
    assert_int_equal(ss.dep_waiting, 1);
    assert_int_equal(ss.runnable, 2);
    assert_int_equal(next_run(s), w2);
    assert_int_equal(next_run(s), w3);
    assert_idle(s, 0);
    /* Now the dependency is final: FINAL with its status. */
    assert_int_equal(jq_sched_check_dep(s, w2, dep, &st), JQ_DEP_FINAL);
    assert_int_equal(st, JQ_SUCCESS);
    /* dep5 canceled while queued (by a handler): w4 wakes. */
    jq_sched_submitted(s, dep5, 0, 0);
    jq_sched_final(s, dep5, JQ_CANCELED);
    assert_int_equal(next_run(s), w4);
    assert_int_equal(jq_sched_check_dep(s, w4, dep5, &st), JQ_DEP_FINAL);
    assert_int_equal(st, JQ_CANCELED);
    assert_int_equal(stats(s).dep_waiting, 0);
    jq_sched_destroy(&s);
}

static void test_dep_not_found_forget_withdraw(void **state)
{
    (void)state;
    jq_sched_t *s = jq_sched_new(10, 1);
    uint64_t w = submit(s, 1, 0), d = submit(s, 1, 0), gone = jq_sched_new_jobs(s, 1);
    assert_int_equal(next_run(s), w);
    jq_status_t st = JQ_STATUS__COUNT;
    assert_int_equal(jq_sched_check_dep(s, w, 999, &st), JQ_DEP_NOT_FOUND);
    assert_int_equal(jq_sched_check_dep(s, w, 0, &st), JQ_DEP_NOT_FOUND);
    /* Parked on a job whose submission is withdrawn: it looks again and
     * finds it missing. */
    assert_int_equal(jq_sched_check_dep(s, w, gone, &st), JQ_DEP_PARKED);
    jq_sched_withdraw(s, gone);
    assert_int_equal(next_run(s), w);
    assert_int_equal(jq_sched_check_dep(s, w, gone, &st), JQ_DEP_NOT_FOUND);
    /* A final job archived (forgotten): not found here, the store has it. */
    assert_int_equal(next_run(s), d);
    jq_sched_done(s, d, JQ_ERROR);
    assert_int_equal(jq_sched_check_dep(s, w, d, &st), JQ_DEP_FINAL);
    assert_int_equal(st, JQ_ERROR);
    jq_sched_forget(s, d);
    assert_int_equal(jq_sched_check_dep(s, w, d, &st), JQ_DEP_NOT_FOUND);
    assert_int_equal(stats(s).running, 1);
    jq_sched_destroy(&s);
}

/* A cancel of a parked job runs it now (its executor ends it). */
static void test_cancel_parked(void **state)
{
    (void)state;
    jq_sched_t *s = jq_sched_new(10, 1);
    uint64_t w = submit(s, 1, 0), d = jq_sched_new_jobs(s, 1);
    assert_int_equal(next_run(s), w);
    jq_status_t st;
    assert_int_equal(jq_sched_check_dep(s, w, d, &st), JQ_DEP_PARKED);
    jq_sched_cancel(s, w);
    assert_int_equal(stats(s).dep_waiting, 0);
    assert_int_equal(next_run(s), w);
    jq_sched_done(s, w, JQ_CANCELED);
    jq_sched_destroy(&s);
}

/* Loaded at start: final ones answer dependency checks, others run. */
static void test_load(void **state)
{
    (void)state;
    jq_sched_t *s = jq_sched_new(10, 1);
    assert_int_equal(jq_sched_load(s, 7, 0, JQ_SUCCESS), 0);
    assert_int_equal(jq_sched_load(s, 9, 0, JQ_QUEUED), 0);
    assert_int_equal(jq_sched_load(s, 8, -10, JQ_QUEUED), 0);
    assert_int_equal(jq_sched_last_id(s), 9);
    assert_int_equal(next_run(s), 8);
    jq_status_t st;
    assert_int_equal(jq_sched_check_dep(s, 8, 7, &st), JQ_DEP_FINAL);
    assert_int_equal(st, JQ_SUCCESS);
    assert_int_equal(next_run(s), 9);
    jq_sched_destroy(&s);
}

/* Many waiters on many dependencies: the hash grows and every waiter
 * comes back exactly once. */
static void test_dep_many(void **state)
{
    (void)state;
    enum { N = 3000 };
    jq_sched_t *s = jq_sched_new(N, 1);
    uint64_t deps = jq_sched_new_jobs(s, N), waiters = submit(s, N, 0);
    for (uint64_t k = 0; k < N; k++) {
        assert_int_equal(next_run(s), waiters + k);
        jq_status_t st;
        assert_int_equal(jq_sched_check_dep(s, waiters + k, deps + k, &st), JQ_DEP_PARKED);
    }
    assert_int_equal(stats(s).dep_waiting, N);
    assert_int_equal(stats(s).running, 0);
    for (uint64_t k = N; k-- > 0;)
        jq_sched_final(s, deps + k, JQ_SUCCESS);
    assert_int_equal(stats(s).dep_waiting, 0);
    assert_int_equal(stats(s).runnable, N);
    for (uint64_t k = 0; k < N; k++) /* by id, whatever order they woke in */
        assert_int_equal(next_run(s), waiters + k);
    jq_sched_destroy(&s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_new),
        cmocka_unit_test(test_ids),
        cmocka_unit_test(test_priority_then_id),
        cmocka_unit_test(test_order_many),
        cmocka_unit_test(test_commit_gate),
        cmocka_unit_test(test_commit_gate_many),
        cmocka_unit_test(test_wait_for_durable),
        cmocka_unit_test(test_max_running),
        cmocka_unit_test(test_priority_change),
        cmocka_unit_test(test_kicks_and_cancel),
        cmocka_unit_test(test_pause_and_stop),
        cmocka_unit_test(test_dep_park_and_wake),
        cmocka_unit_test(test_dep_not_found_forget_withdraw),
        cmocka_unit_test(test_cancel_parked),
        cmocka_unit_test(test_load),
        cmocka_unit_test(test_dep_many),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
