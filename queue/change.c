/* change.c: encoding of change records (the delta of one transition). */
#include "change.h"
#include "fields.h"
#include "wire.h"

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static const char *const kind_names[] = {"submit", "update", "archive"};

static void pack_op_state(msgpack_packer *pk, const jq_op_t *op, uint32_t index)
{
    msgpack_pack_map(pk, 10);
    wire_pack_cstr(pk, "index");
    msgpack_pack_uint32(pk, index);
    wire_pack_cstr(pk, "status");
    wire_pack_cstr(pk, jq_status_name((jq_status_t)op->status));
    wire_pack_cstr(pk, "priority");
    msgpack_pack_int(pk, op->priority);
    wire_pack_cstr(pk, "start_ts");
    wire_pack_ts(pk, op->start_ts);
    wire_pack_cstr(pk, "exec_ts");
    wire_pack_ts(pk, op->exec_ts);
    wire_pack_cstr(pk, "end_ts");
    wire_pack_ts(pk, op->end_ts);
    wire_pack_cstr(pk, "result");
    jq_blob_pack(pk, &op->result);
    wire_pack_cstr(pk, "attempt");
    msgpack_pack_uint16(pk, op->attempt);
    wire_pack_cstr(pk, "retries");
    msgpack_pack_uint16(pk, op->retries);
    wire_pack_cstr(pk, "worker");
    if (op->worker)
        wire_pack_cstr(pk, op->worker);
    else
        msgpack_pack_nil(pk);
}

jq_change_t *jq_change_encode(const jq_job_t *job, jq_change_kind_t kind,
                              const jq_delta_t *d, int64_t now)
{
    /* Encoded straight into the record's own allocation, grown as needed:
     * an sbuffer copied into it cost a large malloc, a copy and a free
     * per change, most of the allocator's share of a batched submission. */
    wire_buf_t sb;
    if (wire_buf_init(&sb, offsetof(jq_change_t, data), 384) < 0)
        return NULL;
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, wire_buf_write);

    bool submit = kind == JQ_CHANGE_SUBMIT;
    /* After a record that could not be made, this one carries every opcode
     * and every log entry since the last record that was: whoever applies
     * records catches up without knowing one went missing. */
    bool full = submit || job->record_lost;
    int lo = full ? 0 : d->op_lo, hi = full ? (int)job->nops - 1 : d->op_hi;
    uint32_t nchanged = hi >= lo ? (uint32_t)(hi - lo + 1) : 0;
    uint32_t log_from = submit ? 0 : job->log_recorded;

    /* The new entries, found without walking the old ones (a busy job has
     * many): they start at (first_op, first_index) and run to the end. */
    uint32_t first_op, first_index, nnew = 0, nlog_ops = 0;
    jq_job_log_find(job, log_from, &first_op, &first_index);
    for (uint32_t i = first_op; i < job->nops && job->log_serial > log_from; i++) {
        uint32_t from = i == first_op ? first_index : 0;
        if (job->ops[i].nlog > from) {
            nnew += job->ops[i].nlog - from; /* counted: the array says what it holds */
            nlog_ops++;
        }
    }

    bool client = submit && job->client.data;
    bool owner = submit && job->owner;
    msgpack_pack_map(&pk, (submit ? 14 : 12) + (nlog_ops > 1 ? 1 : 0) + (client ? 1 : 0) +
                              (owner ? 1 : 0));
    wire_pack_cstr(&pk, "job");
    msgpack_pack_uint64(&pk, job->id);
    wire_pack_cstr(&pk, "serial");
    msgpack_pack_uint64(&pk, job->change_serial);
    wire_pack_cstr(&pk, "kind");
    wire_pack_cstr(&pk, kind_names[kind]);
    wire_pack_cstr(&pk, "time");
    wire_pack_ts(&pk, now);
    wire_pack_cstr(&pk, "status");
    wire_pack_cstr(&pk, jq_status_name((jq_status_t)job->status));
    wire_pack_cstr(&pk, "priority");
    msgpack_pack_int(&pk, jq_job_priority(job));
    wire_pack_cstr(&pk, "received_ts");
    wire_pack_ts(&pk, job->received_ts);
    wire_pack_cstr(&pk, "start_ts");
    wire_pack_ts(&pk, job->start_ts);
    wire_pack_cstr(&pk, "end_ts");
    wire_pack_ts(&pk, job->end_ts);
    if (submit) {
        wire_pack_cstr(&pk, "input");
        jq_field_pack(&pk, job, JQ_F_OPS);
        wire_pack_cstr(&pk, "summary");
        jq_field_pack(&pk, job, JQ_F_SUMMARY);
        if (client) {
            wire_pack_cstr(&pk, "client");
            jq_blob_pack(&pk, &job->client);
        }
        if (owner) {
            wire_pack_cstr(&pk, "owner");
            wire_pack_cstr(&pk, job->owner);
        }
    }
    wire_pack_cstr(&pk, "ops");
    msgpack_pack_array(&pk, nchanged);
    for (int i = lo; i <= hi; i++)
        pack_op_state(&pk, &job->ops[i], (uint32_t)i);
    wire_pack_cstr(&pk, "log");
    msgpack_pack_array(&pk, nnew);
    for (uint32_t i = first_op; i < job->nops && nnew; i++)
        for (uint32_t k = i == first_op ? first_index : 0; k < job->ops[i].nlog; k++)
            jq_blob_pack(&pk, &job->ops[i].log[k]);
    /* Entries normally belong to one opcode (the current one): log_op
     * names it. Only a catch-up record can span opcodes; log_ops then says
     * how many entries each takes, in order. */
    wire_pack_cstr(&pk, "log_op");
    if (nnew == 0)
        msgpack_pack_nil(&pk);
    else
        msgpack_pack_uint32(&pk, first_op);
    if (nlog_ops > 1) {
        wire_pack_cstr(&pk, "log_ops");
        msgpack_pack_array(&pk, nlog_ops);
        for (uint32_t i = first_op; i < job->nops; i++) {
            uint32_t from = i == first_op ? first_index : 0;
            if (job->ops[i].nlog <= from)
                continue;
            msgpack_pack_array(&pk, 2);
            msgpack_pack_uint32(&pk, i);
            msgpack_pack_uint32(&pk, job->ops[i].nlog - from);
        }
    }

    if (sb.failed || sb.len > UINT32_MAX) {
        free(sb.mem);
        return NULL;
    }
    /* Field by field: a whole-struct store may write trailing padding
     * that the value's first bytes share. */
    jq_change_t *c = (jq_change_t *)(void *)sb.mem;
    c->next = NULL;
    c->job_id = job->id;
    c->serial = job->change_serial;
    c->kind = (uint8_t)kind;
    c->len = (uint32_t)sb.len;
    c->seq = 0; /* a cluster's store sets it when applied */
    return c;
}

void jq_change_list_free(jq_change_t **head)
{
    jq_change_t *c = head ? *head : NULL;
    while (c) {
        jq_change_t *next = c->next;
        free(c);
        c = next;
    }
    if (head)
        *head = NULL;
}
