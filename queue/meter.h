/* meter.h: the table's per-opcode counters for the metrics endpoint —
 * opcodes by status, opcodes finished, queue wait and run time
 * histograms, by opcode name — jobs finished by final status and job log
 * entries appended.
 *
 * The table calls in here under a shard's write lock, at the two places
 * where jobs change: a job coming in (submitted or loaded at start) and
 * jq_shard_emit. What it does there is leaf work like the outbox's: a few
 * relaxed atomics per opcode whose status changed, no I/O, no other lock
 * (except the registry's small mutex the first time an opcode name is
 * seen, at most JQ_METER_MAX_OPCODES times in a run). Each opcode
 * remembers the status last counted (jq_op_t.metered), so a transition
 * moves one unit from the old status to the new one, whichever function
 * changed it. Readers (the metrics renderer, any thread) load the
 * counters without a lock.
 *
 * Gauges (queued, waiting, canceling, running) count opcodes of live jobs
 * now, including those loaded at start; final statuses count opcodes that
 * reached them in this run. A queue wait is observed when an opcode first
 * starts running in this run (its exec time minus the previous opcode's
 * end, or the job's receipt for the first), a run time when an opcode that
 * started in this run ends (end minus its last attempt's exec time). */
#ifndef JOBQ_METER_H
#define JOBQ_METER_H

#include "histo.h"
#include "job.h"
#include "wire.h"

#include <stdbool.h>

/* Opcode names with a slot of their own; later names share the last slot. */
#define JQ_METER_MAX_OPCODES 256
/* Not a valid opcode name ([A-Za-z0-9._-]), so no opcode's series can be it. */
#define JQ_METER_OTHER_NAME "(other)"

typedef struct jq_meter jq_meter_t;

/* The histograms' shape (µs, exposed in seconds). */
extern const jq_histo_spec_t jq_meter_seconds_spec;

jq_meter_t *jq_meter_new(void);
void jq_meter_destroy(jq_meter_t **m);

/* Under the job's shard write lock: a job enters the table; its opcodes'
 * current statuses are counted (gauges only: it finished nothing here). */
void jq_meter_job_in(jq_meter_t *m, jq_job_t *job);
/* Under the job's shard write lock: opcodes in d's range may have changed;
 * the job's status was old and is new now. */
void jq_meter_job_changed(jq_meter_t *m, jq_job_t *job, const jq_delta_t *d,
                          jq_status_t old_status, jq_status_t new_status);

/* Readers, any thread. */
typedef struct {
    char name[JOBQ_MAX_OP_NAME + 1];
    /* queued..running: opcodes now (never negative); canceled, success,
     * error: opcodes that ended so, in this run. */
    uint64_t status[JQ_STATUS__COUNT];
    jq_histo_snap_t wait, run;
} jq_meter_op_snap_t;

/* Opcode slots in use (named ones first, then JQ_METER_OTHER_NAME when it was used). */
unsigned jq_meter_count(jq_meter_t *m);
/* Slot i's figures; false when i is not in use. */
bool jq_meter_read(jq_meter_t *m, unsigned i, jq_meter_op_snap_t *out);
/* Jobs that reached each final status in this run (others are 0). */
void jq_meter_jobs_finished(jq_meter_t *m, uint64_t out[JQ_STATUS__COUNT]);
/* Entries appended to job logs in this run (those a log limit discarded
 * not included). */
uint64_t jq_meter_log_entries(jq_meter_t *m);

#endif
