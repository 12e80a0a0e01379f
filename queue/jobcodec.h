/* jobcodec.h: a job's stored form — everything but its log entries, which
 * the store keeps under their own keys — as one msgpack map, and a job
 * built from its submit record.
 *
 * Neither needs to know the opcodes: the store keeps whatever was
 * accepted, names and all, and never judges it again (opcodes may come and
 * go between runs; recovery decides what to do with a job whose opcode is
 * gone). Decoded opcodes have def NULL and own their names; the caller
 * resolves them against an opcode set when it needs to run them.
 *
 * Store format version 2 (bump JQ_STORE_FORMAT in store.h when this
 * changes):
 *   {"id": u64, "received_ts": i64 µs, "start_ts": i64, "end_ts": i64,
 *    "change_serial": u64, "log_serial": u32,
 *    "ops": [{"op": str, "args": map, "summary": str, "input_priority": int,
 *             "priority": int, "status": str, "start_ts": i64,
 *             "exec_ts": i64, "end_ts": i64, "result": any,
 *             "depends": [[job_id, status_mask], ...]}, ...],
 *    "client": map}
 * "client" (optional, added without a format change: older daemons ignore
 * it) is the submitting call's client token, as in the submit record.
 * Timestamps are microseconds since the epoch, 0 for unset. (Format 1 had
 * no "summary"; decoding accepts its absence.) */
#ifndef JOBQ_JOBCODEC_H
#define JOBQ_JOBCODEC_H

#include "job.h"

#include <msgpack.h>

/* Encode job (without log entries) into sb (appended). */
void jq_job_encode(msgpack_sbuffer *sb, const jq_job_t *job);
/* Decode a stored job: what jq_job_encode wrote, or a submit change
 * record as the store keeps a job that no later record of its batch
 * changed (store format 3). NULL with a message when the bytes are
 * neither. The derived status is recomputed; log entries are added by the
 * caller. */
jq_job_t *jq_job_decode(const void *data, size_t len, char *err, size_t errlen);
/* The job a submit change record describes (its "input", "summary" and
 * "received_ts"), at change serial 1. NULL with a message when the record
 * is not one. */
jq_job_t *jq_job_from_submit_record(const msgpack_object *record, uint64_t id, char *err,
                                    size_t errlen);

/* The run options of a worker opcode (retry, retry_backoff, timeout) from
 * its submitted (input) form; absent or out-of-range ones stay zero. */
void jq_op_read_run_options(jq_op_t *op, const msgpack_object *input);

#endif
