/* fields.c: packing job query fields; blobs are copied as bytes. */
#include "fields.h"
#include "opdef.h"
#include "wire.h"

#include <string.h>

/* Name and one-line description of each field, in jq_field_t order; the
 * list_fields request and `jobq list-fields` show these. */
static const struct {
    const char *name;
    const char *description;
} field_defs[JQ_F__COUNT] = {
    [JQ_F_ID] = {"id", "job id"},
    [JQ_F_STATUS] = {"status", "job status, derived from the opcodes' statuses"},
    [JQ_F_PRIORITY] = {"priority", "current job priority: the lowest of its unfinished "
                                   "opcodes' priorities, 0 when all are finished"},
    [JQ_F_ARCHIVED] = {"archived", "whether the job was moved to the archive"},
    [JQ_F_OPS] = {"ops", "the opcodes as submitted: op, args, priority, depends"},
    [JQ_F_OPRESULT] = {"opresult", "per-opcode results"},
    [JQ_F_OPSTATUS] = {"opstatus", "per-opcode statuses"},
    [JQ_F_OPLOG] = {"oplog", "per-opcode log entries [serial, timestamp, type, message]"},
    [JQ_F_OPSTART] = {"opstart", "per-opcode times the opcode was picked up"},
    [JQ_F_OPEXEC] = {"opexec", "per-opcode times the opcode started executing"},
    [JQ_F_OPEND] = {"opend", "per-opcode times the opcode ended"},
    [JQ_F_OPPRIORITY] = {"oppriority", "per-opcode current priorities"},
    [JQ_F_SUMMARY] = {"summary", "per-opcode summaries, e.g. test.delay(0.2)"},
    [JQ_F_RECEIVED_TS] = {"received_ts", "time the job was submitted"},
    [JQ_F_START_TS] = {"start_ts", "time the job's first opcode was picked up"},
    [JQ_F_END_TS] = {"end_ts", "time the job ended"},
    [JQ_F_LOG_SERIAL] = {"log_serial", "highest log entry serial of the job (0 when none)"},
    [JQ_F_CHANGE_SERIAL] = {"change_serial", "serial of the job's last change record"},
    [JQ_F_WORKER] = {"worker", "the worker running the current opcode (name#id), \"waiting for "
                               "a worker\", or nil when it is not a worker opcode"},
    [JQ_F_OPWORKER] = {"opworker", "per-opcode worker of the last attempt (nil: none)"},
    [JQ_F_OPATTEMPT] = {"opattempt", "per-opcode attempt number (0: never handed to a worker)"},
    [JQ_F_OWNER] = {"owner", "who submitted the job: a key's name, uid:N over ipc (nil: "
                             "submitted before owners were recorded)"},
};

const char *jq_field_name(jq_field_t f)
{
    return (unsigned)f < JQ_F__COUNT ? field_defs[f].name : "?";
}

const char *jq_field_description(jq_field_t f)
{
    return (unsigned)f < JQ_F__COUNT ? field_defs[f].description : "?";
}

int jq_field_parse(const char *name, size_t len, jq_field_t *out)
{
    for (int i = 0; i < JQ_F__COUNT; i++)
        if (strlen(field_defs[i].name) == len && memcmp(field_defs[i].name, name, len) == 0) {
            *out = (jq_field_t)i;
            return 0;
        }
    return -1;
}

void jq_blob_pack(msgpack_packer *pk, const jq_blob_t *b)
{
    if (!b->data)
        msgpack_pack_nil(pk);
    else
        pk->callback(pk->data, b->data, b->len); /* already msgpack */
}

void jq_op_pack_input(msgpack_packer *pk, const jq_op_t *op)
{
    /* The run options of worker opcodes only when given: a built-in
     * opcode's input reads as it always did. */
    msgpack_pack_map(pk, 4 + (op->retry ? 1 : 0) + (op->backoff_us ? 1 : 0) +
                             (op->timeout_us ? 1 : 0));
    if (op->retry) {
        wire_pack_cstr(pk, "retry");
        msgpack_pack_uint16(pk, op->retry);
    }
    if (op->backoff_us) {
        wire_pack_cstr(pk, "retry_backoff");
        msgpack_pack_double(pk, (double)op->backoff_us / 1e6);
    }
    if (op->timeout_us) {
        wire_pack_cstr(pk, "timeout");
        msgpack_pack_double(pk, (double)op->timeout_us / 1e6);
    }
    wire_pack_cstr(pk, "op");
    wire_pack_cstr(pk, jq_op_name(op));
    wire_pack_cstr(pk, "args");
    jq_blob_pack(pk, &op->args);
    wire_pack_cstr(pk, "priority");
    msgpack_pack_int(pk, op->input_priority);
    wire_pack_cstr(pk, "depends");
    msgpack_pack_array(pk, op->ndeps);
    for (uint8_t k = 0; k < op->ndeps; k++) {
        msgpack_pack_array(pk, 2);
        msgpack_pack_int64(pk, op->deps[k].job_id);
        int n = 0;
        for (int s = 0; s < JQ_STATUS__COUNT; s++)
            n += (op->deps[k].status_mask >> s) & 1;
        msgpack_pack_array(pk, (size_t)n);
        for (int s = 0; s < JQ_STATUS__COUNT; s++)
            if ((op->deps[k].status_mask >> s) & 1)
                wire_pack_cstr(pk, jq_status_name((jq_status_t)s));
    }
}

static void pack_op_log(msgpack_packer *pk, const jq_op_t *op)
{
    msgpack_pack_array(pk, op->nlog);
    for (uint32_t k = 0; k < op->nlog; k++)
        jq_blob_pack(pk, &op->log[k]);
}

void jq_field_pack(msgpack_packer *pk, const jq_job_t *job, jq_field_t f)
{
    uint32_t n = job->nops;
    switch (f) {
    case JQ_F_ID:
        msgpack_pack_uint64(pk, job->id);
        return;
    case JQ_F_STATUS:
        wire_pack_cstr(pk, jq_status_name((jq_status_t)job->status));
        return;
    case JQ_F_PRIORITY:
        msgpack_pack_int(pk, jq_job_priority(job));
        return;
    case JQ_F_ARCHIVED:
        if (job->archived)
            msgpack_pack_true(pk);
        else
            msgpack_pack_false(pk);
        return;
    case JQ_F_RECEIVED_TS:
        wire_pack_ts(pk, job->received_ts);
        return;
    case JQ_F_START_TS:
        wire_pack_ts(pk, job->start_ts);
        return;
    case JQ_F_END_TS:
        wire_pack_ts(pk, job->end_ts);
        return;
    case JQ_F_LOG_SERIAL:
        msgpack_pack_uint32(pk, job->log_serial);
        return;
    case JQ_F_CHANGE_SERIAL:
        msgpack_pack_uint64(pk, job->change_serial);
        return;
    case JQ_F_OWNER:
        if (job->owner)
            wire_pack_cstr(pk, job->owner);
        else
            msgpack_pack_nil(pk);
        return;
    case JQ_F_WORKER: {
        uint32_t i = jq_job_current_op(job);
        const jq_op_t *op = i < n ? &job->ops[i] : NULL;
        if (!op || !op->def || !op->def->remote)
            msgpack_pack_nil(pk);
        else if (op->status == JQ_QUEUED || op->status == JQ_WAITING)
            wire_pack_cstr(pk, "waiting for a worker");
        else if (op->worker)
            wire_pack_cstr(pk, op->worker);
        else
            msgpack_pack_nil(pk);
        return;
    }
    default:
        break;
    }
    msgpack_pack_array(pk, n);
    for (uint32_t i = 0; i < n; i++) {
        const jq_op_t *op = &job->ops[i];
        switch (f) {
        case JQ_F_OPS: jq_op_pack_input(pk, op); break;
        case JQ_F_OPRESULT: jq_blob_pack(pk, &op->result); break;
        case JQ_F_OPSTATUS: wire_pack_cstr(pk, jq_status_name((jq_status_t)op->status)); break;
        case JQ_F_OPLOG: pack_op_log(pk, op); break;
        case JQ_F_OPSTART: wire_pack_ts(pk, op->start_ts); break;
        case JQ_F_OPEXEC: wire_pack_ts(pk, op->exec_ts); break;
        case JQ_F_OPEND: wire_pack_ts(pk, op->end_ts); break;
        case JQ_F_OPPRIORITY: msgpack_pack_int(pk, op->priority); break;
        case JQ_F_SUMMARY: wire_pack_cstr(pk, op->summary ? op->summary : jq_op_name(op)); break;
        case JQ_F_OPWORKER:
            if (op->worker)
                wire_pack_cstr(pk, op->worker);
            else
                msgpack_pack_nil(pk);
            break;
        case JQ_F_OPATTEMPT: msgpack_pack_uint16(pk, op->attempt); break;
        default: msgpack_pack_nil(pk); break;
        }
    }
}
