/* mirror.h: a copy of a job kept up to date from its change records alone
 * — what a waiter holds so it never looks at the table again after its
 * first check, and the proof that records carry the whole delta.
 * Owner thread only; no locks. */
#ifndef JOBQ_MIRROR_H
#define JOBQ_MIRROR_H

#include "job.h"

#include <msgpack.h>

/* A deep copy of job (caller holds its shard lock); log entries are copied
 * only with with_logs. NULL when out of memory. Free with jq_job_destroy. */
jq_job_t *jq_mirror_new(const jq_job_t *job, bool with_logs);

/* Apply one change record (the "change" map of an event) to the mirror.
 * Records at or below the mirror's change serial are ignored. Log entries
 * the record adds are passed to on_log (may be NULL) as msgpack objects.
 * Returns 1 applied, 0 ignored, -1 malformed or another job's record. */
typedef void (*jq_mirror_log_fn)(void *ctx, uint32_t op_index, const msgpack_object *entry);
int jq_mirror_apply(jq_job_t *m, const msgpack_object *change, bool keep_logs,
                    jq_mirror_log_fn on_log, void *ctx);

#endif
