/* executor.h: the built-in executor threads and the task API opcodes use.
 *
 * A fixed number of executor threads run every job the scheduler lets run.
 * An opcode never holds a thread while it waits: it is a task with a
 * deadline in its executor's timer heap, stepped when the deadline comes,
 * so one thread carries hundreds of running jobs and a cancel reaches a
 * running opcode at once (the canceler kicks the task's executor).
 */
#ifndef JOBQ_EXECUTOR_H
#define JOBQ_EXECUTOR_H

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
    uint32_t gen;
    const jq_opdef_t *def;
    int64_t now;         /* CLOCK_MONOTONIC µs when the step was called */
    int64_t deadline;    /* next step, CLOCK_MONOTONIC µs; set by start/step */
    void *state;         /* the opcode's own state */
    jq_blob_t result;    /* msgpack result, set by a step returning success */
    char error[JQ_TASK_ERROR_MAX]; /* set by a step returning failure */
    bool canceled;       /* set when a log found the opcode canceling */
    jq_executor_t *ex;
    size_t heap_index;
};

/* Executor thread (inside step): add a log entry to the task's job. False
 * when the opcode is being canceled: the step should just return, the
 * executor ends it as canceled. */
bool jq_task_log(jq_task_t *task, const char *message);

typedef struct jq_executors jq_executors_t;

/* Start n executor threads. NULL on failure (nothing left running). */
/* store (may be NULL) answers for dependencies on archived jobs, which the
 * table no longer holds. */
jq_executors_t *jq_executors_new(jq_table_t *table, jq_sched_t *sched,
                                 const jq_opset_t *ops, jq_store_t *store, unsigned n);
/* Stop: running opcodes end `error` "Interrupted by broker shutdown";
 * joins the threads and frees. */
void jq_executors_destroy(jq_executors_t **pool);

/* Microsecond clocks used by the broker. */
int64_t jq_now_wall(void);
int64_t jq_now_mono(void);

#endif
