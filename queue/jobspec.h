/* jobspec.h: turning a submitted opcode list (msgpack) into a job.
 * Validation happens here, at submit, so a bad job is an error to its
 * submitter rather than a failed job later. Any thread; no locks. */
#ifndef JOBQ_JOBSPEC_H
#define JOBQ_JOBSPEC_H

#include "job.h"
#include "opdef.h"
#include "wire.h"

/* Parse ops (a msgpack array of opcode maps) into a new job with id 0.
 * Relative (negative) dependencies are kept for jq_jobspec_resolve when
 * allow_relative, rejected otherwise; absolute ones above last_id (the
 * last job id handed out) are refused. Returns JOBQ_ERR_NONE and *out, or
 * an error code and a message naming the opcode index. */
jobq_code_t jq_jobspec_parse(const jq_opset_t *set, const msgpack_object *ops,
                             bool allow_relative, uint64_t last_id, int64_t now,
                             jq_job_t **out, char *err, size_t errlen);

/* Give the job its id and resolve relative dependencies against the ids of
 * the jobs before it in the same batch (prev[k] is the job k+1 places back;
 * 0 where that job failed). -1 with a message when one does not resolve. */
int jq_jobspec_resolve(jq_job_t *job, uint64_t id, const uint64_t *prev_ids,
                       size_t nprev, char *err, size_t errlen);

#endif
