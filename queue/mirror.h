/* mirror.h: a copy of a job kept up to date from its change records alone
 * — what a waiter holds so it never looks at the table again after its
 * first check, and the proof that records carry the whole delta.
 * Owner thread only; no locks. */
#ifndef JOBQ_MIRROR_H
#define JOBQ_MIRROR_H

#include "job.h"

#include <msgpack.h>

/* What a mirror keeps besides the job's and opcodes' statuses,
 * priorities and timestamps (always kept: they are small). A waiter keeps
 * only what the fields it watches show, so a job with huge arguments costs
 * its waiters nothing unless they watch `ops`. */
enum {
    JQ_MIRROR_LOGS = 1,     /* log entries (`oplog`) */
    JQ_MIRROR_RESULTS = 2,  /* opcode results (`opresult`) */
    JQ_MIRROR_INPUT = 4,    /* arguments and dependencies (`ops`) */
    JQ_MIRROR_SUMMARY = 8,  /* summaries (`summary`) */
    JQ_MIRROR_ALL = 15
};

/* A copy of job (caller holds its shard lock) with what `keep` asks for.
 * NULL when out of memory. Free with jq_job_destroy. */
jq_job_t *jq_mirror_new(const jq_job_t *job, unsigned keep);

/* Apply one change record (the "change" map of an event) to the mirror,
 * keeping what `keep` asks for. Records at or below the mirror's change
 * serial are ignored. Log entries the record adds are passed to on_log
 * (may be NULL) as msgpack objects, with their opcode index. Returns 1
 * applied, 0 ignored, -1 malformed, another job's record, or out of
 * memory (the mirror may then be partly updated: throw it away). */
typedef int (*jq_mirror_log_fn)(void *ctx, uint32_t op_index, const msgpack_object *entry);
int jq_mirror_apply(jq_job_t *m, const msgpack_object *change, unsigned keep,
                    jq_mirror_log_fn on_log, void *ctx);

#endif
