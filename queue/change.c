/* change.c: encoding of change records (the delta of one transition). */
#include "change.h"
#include "fields.h"
#include "wire.h"

#include <stdlib.h>
#include <string.h>

static const char *const kind_names[] = {"submit", "update", "archive"};

static void pack_op_state(msgpack_packer *pk, const jq_op_t *op, uint32_t index)
{
    msgpack_pack_map(pk, 7);
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
}

jq_change_t *jq_change_encode(const jq_job_t *job, jq_change_kind_t kind,
                              const jq_delta_t *d, int64_t now)
{
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);

    bool submit = kind == JQ_CHANGE_SUBMIT;
    int lo = submit ? 0 : d->op_lo, hi = submit ? (int)job->nops - 1 : d->op_hi;
    uint32_t nchanged = hi >= lo ? (uint32_t)(hi - lo + 1) : 0;
    uint32_t log_from = submit ? 0 : d->log_from;

    msgpack_pack_map(&pk, submit ? 13 : 12);
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
    }
    wire_pack_cstr(&pk, "ops");
    msgpack_pack_array(&pk, nchanged);
    for (int i = lo; i <= hi; i++)
        pack_op_state(&pk, &job->ops[i], (uint32_t)i);
    /* Serials are handed out in order across opcodes, so the entries after
     * log_from are everything past the first log_from entries. They all
     * belong to one opcode (a log goes to the current one, one record per
     * change); log_op names it so a mirror can file them. */
    uint32_t nnew = job->log_serial - log_from, skip = log_from;
    int log_op = -1;
    wire_pack_cstr(&pk, "log");
    msgpack_pack_array(&pk, nnew);
    for (uint32_t i = 0; i < job->nops && nnew; i++) {
        const jq_op_t *op = &job->ops[i];
        for (uint32_t k = 0; k < op->nlog; k++) {
            if (skip) {
                skip--;
                continue;
            }
            if (log_op < 0)
                log_op = (int)i;
            jq_blob_pack(&pk, &op->log[k]);
        }
    }
    wire_pack_cstr(&pk, "log_op");
    if (log_op < 0)
        msgpack_pack_nil(&pk);
    else
        msgpack_pack_int(&pk, log_op);

    jq_change_t *c = sb.data ? malloc(sizeof *c + sb.size) : NULL;
    if (c) {
        c->next = NULL;
        c->job_id = job->id;
        c->serial = job->change_serial;
        c->kind = (uint8_t)kind;
        c->len = (uint32_t)sb.size;
        memcpy(c->data, sb.data, sb.size);
    }
    msgpack_sbuffer_destroy(&sb);
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
