/* fields.h: the job query fields of JOBMODEL §3 and how each is packed.
 * Callers hold the job's shard lock (read is enough) while packing. */
#ifndef JOBQ_FIELDS_H
#define JOBQ_FIELDS_H

#include "job.h"

#include <msgpack.h>

typedef enum {
    JQ_F_ID = 0,
    JQ_F_STATUS,
    JQ_F_PRIORITY,
    JQ_F_ARCHIVED,
    JQ_F_OPS,
    JQ_F_OPRESULT,
    JQ_F_OPSTATUS,
    JQ_F_OPLOG,
    JQ_F_OPSTART,
    JQ_F_OPEXEC,
    JQ_F_OPEND,
    JQ_F_OPPRIORITY,
    JQ_F_SUMMARY,
    JQ_F_RECEIVED_TS,
    JQ_F_START_TS,
    JQ_F_END_TS,
    JQ_F_LOG_SERIAL,
    JQ_F_CHANGE_SERIAL,
    JQ_F_WORKER,
    JQ_F_OPWORKER,
    JQ_F_OPATTEMPT,
    JQ_F_OWNER,
    JQ_F__COUNT
} jq_field_t;

const char *jq_field_name(jq_field_t f);
/* One line for people (list_fields). */
const char *jq_field_description(jq_field_t f);
/* 0 and *out, or -1 for an unknown name. */
int jq_field_parse(const char *name, size_t len, jq_field_t *out);
void jq_field_pack(msgpack_packer *pk, const jq_job_t *job, jq_field_t f);
/* One opcode as submitted: {op, args, priority, depends}. */
void jq_op_pack_input(msgpack_packer *pk, const jq_op_t *op);
/* Raw msgpack bytes of a blob (nil when empty). */
void jq_blob_pack(msgpack_packer *pk, const jq_blob_t *b);

#endif
