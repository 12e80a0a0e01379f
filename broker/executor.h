/* executor.h: the built-in executor threads and the task API opcodes use.
 *
 * A fixed number of executor threads run every job the scheduler lets run.
 * An opcode never holds a thread while it waits: it is a task with a
 * deadline in its executor's timer heap, stepped when the deadline comes,
 * so one thread carries hundreds of running jobs and a cancel reaches a
 * running opcode at once (the canceler kicks the task's executor).
 *
 * An opcode starts only once the record saying it runs is committed: a
 * crash can then never undo the start of work that already happened (the
 * job comes back `error`, "interrupted", instead of silently running
 * again).
 */
#ifndef JOBQ_EXECUTOR_H
#define JOBQ_EXECUTOR_H

#include "heap.h"
#include "opdef.h"
#include "scheduler.h"
#include "store.h"
#include "table.h"

#include <stdbool.h>

#define JQ_MAX_EXECUTORS 64
#define JQ_TASK_ERROR_MAX 256

typedef struct jq_executor jq_executor_t;

struct jq_task {
    uint64_t job_id;
    const jq_opdef_t *def;
    int64_t now;         /* CLOCK_MONOTONIC µs when the step was called */
    int64_t deadline;    /* next step, CLOCK_MONOTONIC µs; set by start/step */
    void *state;         /* the opcode's own state */
    jq_blob_t result;    /* msgpack result, set by a step returning success */
    char error[JQ_TASK_ERROR_MAX]; /* set by a step returning failure */
    bool canceled;       /* set when a log found the opcode canceling */
    bool started;        /* start ran (so cleanup runs) */
    uint64_t ticket;     /* not started before the store is durable up to it */
    jq_blob_t args;      /* until start: the opcode's arguments */
    jq_executor_t *ex;
    size_t heap_index;
};

/* Executor thread (inside step): add a log entry to the task's job. False
 * when the opcode is being canceled: the step should just return, the
 * executor ends it as canceled. (While the store is far behind, the
 * executor puts steps off: a busy log slows itself, not everybody's
 * commits.) */
bool jq_task_log(jq_task_t *task, const char *message);

typedef struct jq_executors jq_executors_t;

typedef struct {
    jq_table_t *table;
    jq_sched_t *sched;
    jq_store_t *store;          /* the commit gate, archived dependencies */
    const jq_opset_t *ops;
    uint32_t max_log_entries;   /* per job (0: no limit) */
    unsigned n;
} jq_executors_opts_t;

/* Start n executor threads. NULL on failure (nothing left running). */
jq_executors_t *jq_executors_new(const jq_executors_opts_t *opts);
/* A new per-job log limit (a reload; 0: no limit). Any thread. */
void jq_executors_set_max_log_entries(jq_executors_t *pool, uint32_t max);
/* Stop: running opcodes end `error` "Interrupted by broker shutdown";
 * joins the threads and frees. */
void jq_executors_destroy(jq_executors_t **pool);

/* Ending a held job's current opcode, for executors and the worker hub.
 * The caller holds the job's shard write lock (sh) and holds the job with
 * the scheduler. The opcode ends canceled when cancel is asked or a cancel
 * is pending, else success with result (moved) or error with the message
 * (later opcodes: "Preceding opcode failed"); then jq_job_release. */
void jq_job_end_op(jq_sched_t *sched, jq_shard_t *sh, jq_job_t *job, bool cancel,
                   bool success, jq_blob_t *result, const char *error);
/* The held job's opcode ended or went back (job locked, sh): it is final
 * (jq_sched_done) or its next opcode goes back to the run queue
 * (jq_sched_requeue), as Ganeti defers jobs between opcodes. Unlocks. */
void jq_job_release(jq_sched_t *sched, jq_shard_t *sh, jq_job_t *job);

/* Microsecond clocks used by the broker. */
int64_t jq_now_wall(void);
int64_t jq_now_mono(void);

#endif
