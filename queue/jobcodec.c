/* jobcodec.c: the store's job encoding (format in jobcodec.h). */
#include "jobcodec.h"
#include "wire.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void kv_i64(msgpack_packer *pk, const char *k, int64_t v)
{
    wire_pack_cstr(pk, k);
    msgpack_pack_int64(pk, v);
}

void jq_job_encode(msgpack_sbuffer *sb, const jq_job_t *job)
{
    msgpack_packer pk;
    msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 7);
    wire_pack_cstr(&pk, "id");
    msgpack_pack_uint64(&pk, job->id);
    kv_i64(&pk, "received_ts", job->received_ts);
    kv_i64(&pk, "start_ts", job->start_ts);
    kv_i64(&pk, "end_ts", job->end_ts);
    wire_pack_cstr(&pk, "change_serial");
    msgpack_pack_uint64(&pk, job->change_serial);
    wire_pack_cstr(&pk, "log_serial");
    msgpack_pack_uint32(&pk, job->log_serial);
    wire_pack_cstr(&pk, "ops");
    msgpack_pack_array(&pk, job->nops);
    for (uint32_t i = 0; i < job->nops; i++) {
        const jq_op_t *op = &job->ops[i];
        msgpack_pack_map(&pk, 10);
        wire_pack_cstr(&pk, "op");
        wire_pack_cstr(&pk, op->def->name);
        wire_pack_cstr(&pk, "args");
        if (op->args.data)
            msgpack_sbuffer_write(sb, op->args.data, op->args.len);
        else
            msgpack_pack_map(&pk, 0);
        kv_i64(&pk, "input_priority", op->input_priority);
        kv_i64(&pk, "priority", op->priority);
        wire_pack_cstr(&pk, "status");
        wire_pack_cstr(&pk, jq_status_name((jq_status_t)op->status));
        kv_i64(&pk, "start_ts", op->start_ts);
        kv_i64(&pk, "exec_ts", op->exec_ts);
        kv_i64(&pk, "end_ts", op->end_ts);
        wire_pack_cstr(&pk, "result");
        if (op->result.data)
            msgpack_sbuffer_write(sb, op->result.data, op->result.len);
        else
            msgpack_pack_nil(&pk);
        wire_pack_cstr(&pk, "depends");
        msgpack_pack_array(&pk, op->ndeps);
        for (uint8_t k = 0; k < op->ndeps; k++) {
            msgpack_pack_array(&pk, 2);
            msgpack_pack_int64(&pk, op->deps[k].job_id);
            msgpack_pack_uint8(&pk, op->deps[k].status_mask);
        }
    }
}

static bool get_i64(const msgpack_object *map, const char *key, int64_t *out)
{
    return wire_get_int(wire_map_get(map, key), out);
}

static int decode_op(const jq_opset_t *set, const msgpack_object *o, jq_op_t *op,
                     char *err, size_t errlen)
{
    const msgpack_object *name = wire_map_get(o, "op");
    const msgpack_object *args = wire_map_get(o, "args");
    const msgpack_object *status = wire_map_get(o, "status");
    const msgpack_object *deps = wire_map_get(o, "depends");
    int64_t iprio, prio;
    jq_status_t st;
    if (!name || name->type != MSGPACK_OBJECT_STR || !args || args->type != MSGPACK_OBJECT_MAP ||
        !status || status->type != MSGPACK_OBJECT_STR ||
        jq_status_parse(status->via.str.ptr, status->via.str.size, &st) < 0 ||
        !get_i64(o, "input_priority", &iprio) || !get_i64(o, "priority", &prio) ||
        !get_i64(o, "start_ts", &op->start_ts) || !get_i64(o, "exec_ts", &op->exec_ts) ||
        !get_i64(o, "end_ts", &op->end_ts) || !deps || deps->type != MSGPACK_OBJECT_ARRAY ||
        deps->via.array.size > JOBQ_MAX_DEPENDS) {
        snprintf(err, errlen, "malformed opcode");
        return -1;
    }
    op->def = jq_opset_find(set, name->via.str.ptr, name->via.str.size);
    if (!op->def) {
        snprintf(err, errlen, "unknown opcode '%.*s'", (int)(name->via.str.size > 64 ? 64 : name->via.str.size),
                 name->via.str.ptr);
        return -1;
    }
    op->status = (uint8_t)st;
    op->input_priority = (int8_t)iprio;
    op->priority = (int8_t)prio;
    char summary[128];
    op->def->summarize(args, summary, sizeof summary);
    if (jq_blob_pack_object(&op->args, args) < 0 ||
        jq_blob_pack_object(&op->result, wire_map_get(o, "result")) < 0 ||
        !(op->summary = strdup(summary))) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    if (deps->via.array.size) {
        op->deps = calloc(deps->via.array.size, sizeof *op->deps);
        if (!op->deps) {
            snprintf(err, errlen, "out of memory");
            return -1;
        }
        for (uint32_t k = 0; k < deps->via.array.size; k++) {
            const msgpack_object *p = &deps->via.array.ptr[k];
            int64_t id, mask;
            if (p->type != MSGPACK_OBJECT_ARRAY || p->via.array.size != 2 ||
                !wire_get_int(&p->via.array.ptr[0], &id) ||
                !wire_get_int(&p->via.array.ptr[1], &mask)) {
                snprintf(err, errlen, "malformed dependency");
                return -1;
            }
            op->deps[k].job_id = id;
            op->deps[k].status_mask = (uint8_t)mask;
            op->ndeps = (uint8_t)(k + 1);
        }
    }
    return 0;
}

jq_job_t *jq_job_decode(const jq_opset_t *set, const void *data, size_t len, char *err,
                        size_t errlen)
{
    msgpack_unpacked up;
    msgpack_unpacked_init(&up);
    jq_job_t *job = NULL;
    size_t off = 0;
    if (msgpack_unpack_next(&up, data, len, &off) != MSGPACK_UNPACK_SUCCESS || off != len) {
        snprintf(err, errlen, "not a msgpack value");
        goto out;
    }
    const msgpack_object *root = &up.data, *ops = wire_map_get(root, "ops");
    int64_t id, received, start, end, cserial, lserial;
    if (!get_i64(root, "id", &id) || id <= 0 || !get_i64(root, "received_ts", &received) ||
        !get_i64(root, "start_ts", &start) || !get_i64(root, "end_ts", &end) ||
        !get_i64(root, "change_serial", &cserial) || !get_i64(root, "log_serial", &lserial) ||
        !ops || ops->type != MSGPACK_OBJECT_ARRAY || ops->via.array.size == 0 ||
        ops->via.array.size > JOBQ_MAX_OPS_PER_JOB) {
        snprintf(err, errlen, "not a stored job");
        goto out;
    }
    job = jq_job_new((uint64_t)id, ops->via.array.size, received);
    if (!job) {
        snprintf(err, errlen, "out of memory");
        goto out;
    }
    job->start_ts = start;
    job->end_ts = end;
    job->change_serial = (uint64_t)cserial;
    job->log_serial = (uint32_t)lserial;
    for (uint32_t i = 0; i < job->nops; i++) {
        char why[128];
        if (decode_op(set, &ops->via.array.ptr[i], &job->ops[i], why, sizeof why) < 0) {
            snprintf(err, errlen, "job %lld, opcode %u: %s", (long long)id, i, why);
            jq_job_destroy(&job);
            goto out;
        }
    }
    job->status = (uint8_t)jq_job_derive_status(job);
out:
    msgpack_unpacked_destroy(&up);
    return job;
}
