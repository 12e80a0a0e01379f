/* scheduler.h: the scheduler — job ids, the run queue (priority, then
 * submission order), the commit gate, the cap on jobs running at once, jobs
 * parked on dependencies with the final statuses they wait for, and the
 * wake-ups of the executor threads.
 *
 * The scheduler keeps one small record per live job, under one mutex, and
 * is the only authority on where a job stands with it: new (id handed out,
 * not yet in the table), pending (in the table, waiting for its submit
 * record's commit), queued (in the run heap), active (an executor holds
 * it), parked (on a dependency) or final. A job is in the run heap at most
 * once; a priority change moves it in place. It keeps what dependency
 * checks need (each live job's final status) itself, so it never reads the
 * table: no shard lock is ever taken under its mutex, and its mutex is
 * never taken under a shard lock by code that waits for it long (every
 * call here is short and does no I/O).
 *
 * Every function may be called from any thread unless it says "executor
 * thread".
 */
#ifndef JOBQ_SCHED_H
#define JOBQ_SCHED_H

#include "job.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct jq_sched jq_sched_t;

jq_sched_t *jq_sched_new(unsigned max_running, unsigned nexecutors);
void jq_sched_destroy(jq_sched_t **s);

/* ---- ids and submission ---- */

/* Start-up: ids continue after last. */
void jq_sched_set_last_id(jq_sched_t *s, uint64_t last);
uint64_t jq_sched_last_id(jq_sched_t *s);
/* Hand out n consecutive ids and return the first (0: out of memory,
 * nothing handed out). From now on the jobs exist for dependency checks
 * (not final), but none runs before jq_sched_submitted. */
uint64_t jq_sched_new_jobs(jq_sched_t *s, uint32_t n);
/* Job id is in the table: it may run once the store is durable up to
 * ticket (its submit record is committed). */
void jq_sched_submitted(jq_sched_t *s, uint64_t id, int prio, uint64_t ticket);
/* Job id never made it into the table: forget it (jobs parked on it look
 * again and find it missing). */
void jq_sched_withdraw(jq_sched_t *s, uint64_t id);
/* Start-up: a job loaded from the store; non-final ones are queued. -1 out
 * of memory. */
int jq_sched_load(jq_sched_t *s, uint64_t id, int prio, jq_status_t status);
/* Recovery on a cluster's new leader: a job whose worker opcode runs on a
 * worker of the previous leader's; the hub holds it (jq_hub_adopt). */
int jq_sched_load_remote(jq_sched_t *s, uint64_t id, int prio);

/* The store thread: everything up to `durable` is committed. */
void jq_sched_durable(jq_sched_t *s, uint64_t durable);

/* ---- changes made by request handlers ---- */

/* The job's priority changed (to prio, at change serial `serial`): a
 * queued job moves in the run queue, a parked or pending one runs at the
 * new priority when its time comes. */
void jq_sched_set_priority(jq_sched_t *s, uint64_t id, int prio, uint64_t serial);
/* A cancel made the job canceling: if parked on a dependency it is queued
 * now (its executor ends it), if an executor holds it that executor is
 * kicked and will not park it. */
void jq_sched_cancel(jq_sched_t *s, uint64_t id);
/* The job became final outside an executor (a queued job canceled): it
 * leaves the run queue, dependants look again (and the hub lets go of it,
 * when it held it: a kick). */
void jq_sched_final(jq_sched_t *s, uint64_t id, jq_status_t status);
/* The job's archiving is committed: forget it (dependency checks find it
 * in the store from now on). */
void jq_sched_forget(jq_sched_t *s, uint64_t id);

/* ---- executors ---- */

typedef enum {
    JQ_EV_RUN,      /* *run_id: the executor now holds that job */
    JQ_EV_KICK,     /* kicked ids (a cancel of a job it holds) */
    JQ_EV_DURABLE,  /* the store reached want_durable */
    JQ_EV_TIMEOUT,  /* the deadline passed */
    JQ_EV_STOP
} jq_sched_event_t;

/* Executor thread: wait for something to do, in this order: stop, kicks,
 * durable ≥ want_durable (0: not waiting for the store), a job to run (if
 * under the cap and not paused), then JQ_EV_TIMEOUT when deadline
 * (CLOCK_MONOTONIC µs; INT64_MAX none) is not after now. *durable is what
 * the store has committed. */
jq_sched_event_t jq_sched_wait(jq_sched_t *s, unsigned executor, int64_t now,
                               int64_t deadline, uint64_t want_durable, uint64_t *run_id,
                               uint64_t *kicked, size_t maxkick, size_t *nkicked,
                               uint64_t *durable);

/* Executor thread, holding job id: its opcode ended and it has more to
 * run — back to the run queue at prio, read at change serial `serial`
 * (its place by id is kept). */
void jq_sched_requeue(jq_sched_t *s, uint64_t id, int prio, uint64_t serial);
/* Executor thread, holding job id: it is final (or gone: pass the status
 * it had, JQ_ERROR when unknown); its slot is free, dependants look again. */
void jq_sched_done(jq_sched_t *s, uint64_t id, jq_status_t status);

typedef enum {
    JQ_DEP_PARKED,    /* not final: the waiter is parked, its slot free */
    JQ_DEP_FINAL,     /* *status holds the dependency's final status */
    JQ_DEP_NOT_FOUND, /* not live: archived (ask the store) or never existed */
    JQ_DEP_CANCELED   /* the waiter itself is being canceled: not parked */
} jq_dep_check_t;

/* Executor thread, holding job waiter_id: check dependency dep_id and,
 * when it is not final, park the waiter; it is queued again the moment
 * the dependency is final (or forgotten). */
jq_dep_check_t jq_sched_check_dep(jq_sched_t *s, uint64_t waiter_id, uint64_t dep_id,
                                  jq_status_t *status);

/* ---- worker opcodes ---- */

/* What the scheduler tells the worker hub. Both are called with the
 * scheduler's mutex held: they must only queue the id and wake the hub
 * (a leaf lock at most), never call back in. */
typedef struct {
    void (*offer)(void *ctx, uint64_t id); /* the job's current opcode waits for a worker */
    void (*kick)(void *ctx, uint64_t id);  /* a cancel of a job the hub holds */
    void (*reprio)(void *ctx, uint64_t id, int prio); /* its priority changed */
    void *ctx;
} jq_sched_remote_hooks_t;
void jq_sched_set_remote_hooks(jq_sched_t *s, const jq_sched_remote_hooks_t *hooks);
/* Executor thread, holding job id (picked up, dependencies met): its
 * current opcode is a worker's. The job leaves the executor and its
 * running slot and goes to the hub (offer); from then on the hub ends it
 * with jq_sched_requeue or jq_sched_done, from any thread. */
void jq_sched_to_remote(jq_sched_t *s, uint64_t id);

/* Stop handing out jobs (graceful shutdown); running ones go on. */
void jq_sched_pause(jq_sched_t *s);
/* The running cap changes (a reload): more jobs start at once when it
 * grows; when it shrinks, running jobs go on and no new one starts until
 * fewer than max run. max >= 1. Any thread. */
void jq_sched_set_max_running(jq_sched_t *s, unsigned max);
/* Wake every executor with JQ_EV_STOP from now on. */
void jq_sched_stop(jq_sched_t *s);

typedef struct {
    uint64_t runnable;    /* in the run queue */
    uint64_t pending;     /* waiting for their submit record's commit */
    uint64_t running;     /* held by executors */
    uint64_t remote;      /* held by the worker hub (waiting for or on a worker) */
    uint64_t dep_waiting; /* parked on a dependency */
    uint64_t known;       /* live jobs the scheduler keeps a record of */
    unsigned max_running;
    bool paused;
} jq_sched_stats_t;
void jq_sched_get_stats(jq_sched_t *s, jq_sched_stats_t *out);

#endif
