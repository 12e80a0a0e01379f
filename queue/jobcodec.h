/* jobcodec.h: a job's stored form — everything but its log entries, which
 * the store keeps under their own keys — as one msgpack map.
 *
 * Store format version 1 (bump JQ_STORE_FORMAT in store.h when this
 * changes):
 *   {"id": u64, "received_ts": i64 µs, "start_ts": i64, "end_ts": i64,
 *    "change_serial": u64, "log_serial": u32,
 *    "ops": [{"op": str, "args": map, "input_priority": int, "priority": int,
 *             "status": str, "start_ts": i64, "exec_ts": i64, "end_ts": i64,
 *             "result": any, "depends": [[job_id, status_mask], ...]}, ...]}
 * Timestamps are microseconds since the epoch, 0 for unset. */
#ifndef JOBQ_JOBCODEC_H
#define JOBQ_JOBCODEC_H

#include "job.h"
#include "opdef.h"

#include <msgpack.h>

/* Encode job (without log entries) into sb (appended). */
void jq_job_encode(msgpack_sbuffer *sb, const jq_job_t *job);
/* Decode a stored job. NULL with a message when the bytes are not a job of
 * this format or name an opcode set does not know. Derived fields (status,
 * summaries) are recomputed; log entries are added by the caller. */
jq_job_t *jq_job_decode(const jq_opset_t *set, const void *data, size_t len, char *err,
                        size_t errlen);

#endif
