/* scheduler.h: the scheduler — the run queue (priority, then FIFO), the cap on
 * jobs running at once, jobs parked on dependencies, and the wake-ups of
 * the executor threads.
 *
 * Entries carry the job's sched_gen; an entry whose gen no longer matches
 * the job (priority changed, job canceled) is stale and the executor drops
 * it. The scheduler keeps job ids, never job pointers, so it can never
 * touch a job that was archived meanwhile.
 *
 * One mutex guards it all; it may be held while taking a shard lock (to
 * check a dependency), never the other way round. Every function may be
 * called from any thread unless it says "executor thread".
 */
#ifndef JOBQ_SCHED_H
#define JOBQ_SCHED_H

#include "table.h"

#include <stddef.h>
#include <stdint.h>

typedef struct jq_sched jq_sched_t;

typedef struct {
    uint64_t job_id;
    uint32_t gen;
} jq_runnable_t;

jq_sched_t *jq_sched_new(unsigned max_running, unsigned nexecutors);
void jq_sched_destroy(jq_sched_t **s);

/* A job (at generation gen) may run; wakes an executor. -1 out of memory. */
int jq_sched_push(jq_sched_t *s, uint64_t job_id, int prio, uint32_t gen);
/* Ask executor `executor` to look at a job it runs now (a cancel). */
void jq_sched_kick(jq_sched_t *s, unsigned executor, uint64_t job_id);
/* A running slot taken by a JQ_EV_RUN is free again. */
void jq_sched_release(jq_sched_t *s);
/* Wake every executor with JQ_EV_STOP from now on. */
void jq_sched_stop(jq_sched_t *s);

typedef enum {
    JQ_DEP_PARKED,    /* dependency not final: job parked, slot released */
    JQ_DEP_NOT_FOUND, /* no such job, live or archived */
    JQ_DEP_FINAL,     /* *status holds the dependency's final status */
    JQ_DEP_RECHECK    /* the job itself changed (canceled): look again */
} jq_dep_check_t;

/* Executor thread, holding job `waiter_id` (state ACTIVE, generation gen):
 * check dependency dep_id and, when it is not final, park the waiter so it
 * is pushed again the moment the dependency finishes. */
jq_dep_check_t jq_sched_check_dep(jq_sched_t *s, jq_table_t *t, uint64_t dep_id,
                                  uint64_t waiter_id, uint32_t gen,
                                  jq_status_t *status);
/* Job `job_id` is final: push every job parked on it. */
void jq_sched_job_finished(jq_sched_t *s, uint64_t job_id);

typedef enum { JQ_EV_RUN, JQ_EV_KICK, JQ_EV_TIMEOUT, JQ_EV_STOP } jq_sched_event_t;

/* Executor thread: wait for something to do, in this order: stop, kicks,
 * a job to run (if under the cap), then JQ_EV_TIMEOUT at once when deadline
 * (CLOCK_MONOTONIC, microseconds; INT64_MAX for none) is not after now. JQ_EV_RUN takes a running slot and fills *run;
 * JQ_EV_KICK fills kicked (up to maxkick ids, *nkicked). */
jq_sched_event_t jq_sched_wait(jq_sched_t *s, unsigned executor, int64_t now,
                               int64_t deadline, jq_runnable_t *run,
                               uint64_t *kicked, size_t maxkick, size_t *nkicked);

typedef struct {
    uint64_t runnable;   /* entries in the run queue (stale ones included) */
    uint64_t running;
    uint64_t dep_waiting;
    unsigned max_running;
} jq_sched_stats_t;
void jq_sched_get_stats(jq_sched_t *s, jq_sched_stats_t *out);

#endif
