/* jobcodec.c: the store's job encoding (format in jobcodec.h). */
#include "jobcodec.h"
#include "scan.h"
#include "wire.h"

#include <msgpack/unpack_define.h>

#include <stdbool.h>
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
    msgpack_pack_map(&pk, 7 + (job->client.data ? 1 : 0) + (job->owner ? 1 : 0));
    wire_pack_cstr(&pk, "id");
    msgpack_pack_uint64(&pk, job->id);
    kv_i64(&pk, "received_ts", job->received_ts);
    kv_i64(&pk, "start_ts", job->start_ts);
    kv_i64(&pk, "end_ts", job->end_ts);
    wire_pack_cstr(&pk, "change_serial");
    msgpack_pack_uint64(&pk, job->change_serial);
    wire_pack_cstr(&pk, "log_serial");
    msgpack_pack_uint32(&pk, job->log_serial);
    if (job->client.data) {
        wire_pack_cstr(&pk, "client");
        msgpack_sbuffer_write(sb, job->client.data, job->client.len);
    }
    if (job->owner) {
        wire_pack_cstr(&pk, "owner");
        wire_pack_cstr(&pk, job->owner);
    }
    wire_pack_cstr(&pk, "ops");
    msgpack_pack_array(&pk, job->nops);
    for (uint32_t i = 0; i < job->nops; i++) {
        const jq_op_t *op = &job->ops[i];
        msgpack_pack_map(&pk, 17);
        kv_i64(&pk, "attempt", op->attempt);
        kv_i64(&pk, "retries", op->retries);
        kv_i64(&pk, "retry", op->retry);
        kv_i64(&pk, "backoff_us", op->backoff_us);
        kv_i64(&pk, "timeout_us", op->timeout_us);
        wire_pack_cstr(&pk, "worker");
        if (op->worker)
            wire_pack_cstr(&pk, op->worker);
        else
            msgpack_pack_nil(&pk);
        wire_pack_cstr(&pk, "op");
        wire_pack_cstr(&pk, jq_op_name(op));
        wire_pack_cstr(&pk, "args");
        if (op->args.data)
            msgpack_sbuffer_write(sb, op->args.data, op->args.len);
        else
            msgpack_pack_map(&pk, 0);
        wire_pack_cstr(&pk, "summary");
        wire_pack_cstr(&pk, op->summary ? op->summary : jq_op_name(op));
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

static int set_summary(jq_op_t *op, const msgpack_object *summary)
{
    if (!summary || summary->type != MSGPACK_OBJECT_STR)
        return 0; /* format 1, or none given: the name stands for it */
    op->summary = strndup(summary->via.str.ptr, summary->via.str.size);
    return op->summary ? 0 : -1;
}

/* The optional client token map; anything else is ignored (a store without
 * it, or a value this daemon cannot use, costs only the retry guarantee). */
/* The optional owner (a store from before owners has none: NULL). */
static int set_owner(jq_job_t *job, const msgpack_object *owner)
{
    if (!owner || owner->type != MSGPACK_OBJECT_STR || owner->via.str.size == 0 ||
        owner->via.str.size > 255)
        return 0;
    job->owner = strndup(owner->via.str.ptr, owner->via.str.size);
    return job->owner ? 0 : -1;
}

static int set_client(jq_job_t *job, const msgpack_object *client)
{
    if (!client || client->type != MSGPACK_OBJECT_MAP)
        return 0;
    return jq_blob_pack_object(&job->client, client);
}

static int decode_deps(jq_op_t *op, const msgpack_object *deps, bool masks, char *err,
                       size_t errlen)
{
    if (!deps || deps->type == MSGPACK_OBJECT_NIL || deps->via.array.size == 0)
        return 0;
    if (deps->type != MSGPACK_OBJECT_ARRAY || deps->via.array.size > JOBQ_MAX_DEPENDS) {
        snprintf(err, errlen, "malformed dependencies");
        return -1;
    }
    if (!(op->deps = calloc(deps->via.array.size, sizeof *op->deps))) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    for (uint32_t k = 0; k < deps->via.array.size; k++) {
        const msgpack_object *p = &deps->via.array.ptr[k];
        int64_t id, mask = 0;
        if (p->type != MSGPACK_OBJECT_ARRAY || p->via.array.size != 2 ||
            !wire_get_int(&p->via.array.ptr[0], &id) || id <= 0) {
            snprintf(err, errlen, "malformed dependency");
            return -1;
        }
        const msgpack_object *m = &p->via.array.ptr[1];
        if (masks) { /* stored form: a bit mask */
            if (!wire_get_int(m, &mask) || mask < 0 || mask > 0xff) {
                snprintf(err, errlen, "malformed dependency");
                return -1;
            }
        } else { /* record form: a list of status names */
            if (m->type != MSGPACK_OBJECT_ARRAY) {
                snprintf(err, errlen, "malformed dependency");
                return -1;
            }
            for (uint32_t i = 0; i < m->via.array.size; i++) {
                jq_status_t st;
                const msgpack_object *n = &m->via.array.ptr[i];
                if (n->type != MSGPACK_OBJECT_STR ||
                    jq_status_parse(n->via.str.ptr, n->via.str.size, &st) < 0) {
                    snprintf(err, errlen, "malformed dependency status");
                    return -1;
                }
                mask |= 1 << st;
            }
        }
        op->deps[k].job_id = id;
        op->deps[k].status_mask = (uint8_t)mask;
        op->ndeps = (uint8_t)(k + 1);
    }
    return 0;
}

/* An opcode's name as stored: names are kept as C strings, so one with a
 * NUL would be cut there and stored again as another (or an empty) name,
 * which this decoder then refuses (found by tests/fuzz/fuzz_job.c). */
static bool name_ok(const msgpack_object *name)
{
    return name && name->type == MSGPACK_OBJECT_STR && name->via.str.size > 0 &&
           name->via.str.size <= JOBQ_MAX_OP_NAME &&
           !memchr(name->via.str.ptr, '\0', name->via.str.size);
}

static bool get_prio(const msgpack_object *map, const char *key, int64_t *out)
{
    return get_i64(map, key, out) && *out >= JQ_PRIO_HIGHEST && *out <= JQ_PRIO_LOWEST;
}

static int decode_op(const msgpack_object *o, jq_op_t *op, char *err, size_t errlen)
{
    const msgpack_object *name = wire_map_get(o, "op");
    const msgpack_object *args = wire_map_get(o, "args");
    const msgpack_object *status = wire_map_get(o, "status");
    int64_t iprio, prio;
    jq_status_t st;
    if (!name_ok(name) || !args || args->type != MSGPACK_OBJECT_MAP || !status ||
        status->type != MSGPACK_OBJECT_STR ||
        jq_status_parse(status->via.str.ptr, status->via.str.size, &st) < 0 ||
        !get_prio(o, "input_priority", &iprio) || !get_prio(o, "priority", &prio) ||
        !get_i64(o, "start_ts", &op->start_ts) || !get_i64(o, "exec_ts", &op->exec_ts) ||
        !get_i64(o, "end_ts", &op->end_ts)) {
        snprintf(err, errlen, "malformed opcode");
        return -1;
    }
    op->status = (uint8_t)st;
    op->input_priority = (int8_t)iprio;
    op->priority = (int8_t)prio;
    /* Worker run options (absent in stores written before them: zero). */
    int64_t v;
    if (get_i64(o, "attempt", &v) && v >= 0 && v <= UINT16_MAX)
        op->attempt = (uint16_t)v;
    if (get_i64(o, "retries", &v) && v >= 0 && v <= UINT16_MAX)
        op->retries = (uint16_t)v;
    if (get_i64(o, "retry", &v) && v >= 0 && v <= UINT8_MAX)
        op->retry = (uint8_t)v;
    if (get_i64(o, "backoff_us", &v) && v >= 0) /* a valid one is at most 3.6e9 */
        op->backoff_us = v <= UINT32_MAX ? (uint32_t)v : UINT32_MAX;
    if (get_i64(o, "timeout_us", &v) && v >= 0)
        op->timeout_us = v;
    const msgpack_object *worker = wire_map_get(o, "worker");
    if (worker && worker->type == MSGPACK_OBJECT_STR &&
        !(op->worker = strndup(worker->via.str.ptr, worker->via.str.size))) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    if (jq_op_set_name(op, NULL, name->via.str.ptr, name->via.str.size) < 0 ||
        set_summary(op, wire_map_get(o, "summary")) < 0 ||
        jq_blob_pack_object(&op->args, args) < 0 ||
        jq_blob_pack_object(&op->result, wire_map_get(o, "result")) < 0) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    return decode_deps(op, wire_map_get(o, "depends"), true, err, errlen);
}

jq_job_t *jq_job_decode(const void *data, size_t len, char *err, size_t errlen)
{
    msgpack_unpacked up;
    msgpack_unpacked_init(&up);
    jq_job_t *job = NULL;
    size_t off = 0;
    /* The pre-scan first, as for a request: msgpack-c reserves whatever a
     * header declares, and a damaged record may declare 2^32 elements
     * (found by tests/fuzz/fuzz_job.c). */
    jq_scan_limits_t limits = {.max_depth = MSGPACK_EMBED_STACK_SIZE};
    jq_scan_result_t sr;
    if (!jq_scan(data, len, &limits, &sr) ||
        msgpack_unpack_next(&up, data, len, &off) != MSGPACK_UNPACK_SUCCESS || off != len) {
        snprintf(err, errlen, "not a msgpack value");
        goto out;
    }
    const msgpack_object *root = &up.data, *ops = wire_map_get(root, "ops");
    int64_t id, received, start, end, cserial, lserial;
    if (wire_str_eq(wire_map_get(root, "kind"), "submit")) {
        /* A job stored as its submit record (the store writes a job that
         * nothing changed in its batch as the bytes it was given). */
        if (!get_i64(root, "job", &id) || id <= 0)
            snprintf(err, errlen, "not a stored job");
        else
            job = jq_job_from_submit_record(root, (uint64_t)id, err, errlen);
        goto out;
    }
    if (!get_i64(root, "id", &id) || id <= 0 || !get_i64(root, "received_ts", &received) ||
        !get_i64(root, "start_ts", &start) || !get_i64(root, "end_ts", &end) ||
        !get_i64(root, "change_serial", &cserial) || cserial < 1 ||
        !get_i64(root, "log_serial", &lserial) || lserial < 0 || lserial > UINT32_MAX ||
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
    job->log_recorded = job->log_serial;
    if (set_client(job, wire_map_get(root, "client")) < 0 ||
        set_owner(job, wire_map_get(root, "owner")) < 0) {
        snprintf(err, errlen, "out of memory");
        jq_job_destroy(&job);
        goto out;
    }
    for (uint32_t i = 0; i < job->nops; i++) {
        char why[128];
        if (decode_op(&ops->via.array.ptr[i], &job->ops[i], why, sizeof why) < 0) {
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

static int64_t ts_of(const msgpack_object *o)
{
    int64_t usec;
    return wire_get_ts(o, &usec) ? usec : 0; /* malformed or out of range: unset */
}

void jq_op_read_run_options(jq_op_t *op, const msgpack_object *input)
{
    int64_t retry;
    double secs;
    if (wire_get_int(wire_map_get(input, "retry"), &retry) && retry > 0 && retry <= UINT8_MAX)
        op->retry = (uint8_t)retry;
    /* Validated submissions ask for at most JQ_MAX_BACKOFF_S (3.6e9 µs). */
    if (wire_get_number(wire_map_get(input, "retry_backoff"), &secs) && secs > 0 && secs < 1e9)
        op->backoff_us = secs * 1e6 < (double)UINT32_MAX ? (uint32_t)(secs * 1e6) : UINT32_MAX;
    if (wire_get_number(wire_map_get(input, "timeout"), &secs) && secs > 0 && secs < 1e9)
        op->timeout_us = (int64_t)(secs * 1e6);
}

jq_job_t *jq_job_from_submit_record(const msgpack_object *rec, uint64_t id, char *err,
                                    size_t errlen)
{
    const msgpack_object *input = wire_map_get(rec, "input");
    const msgpack_object *summary = wire_map_get(rec, "summary");
    if (!input || input->type != MSGPACK_OBJECT_ARRAY || input->via.array.size == 0 ||
        input->via.array.size > JOBQ_MAX_OPS_PER_JOB ||
        (summary && (summary->type != MSGPACK_OBJECT_ARRAY ||
                     summary->via.array.size != input->via.array.size))) {
        snprintf(err, errlen, "not a submit record");
        return NULL;
    }
    jq_job_t *job = jq_job_new(id, input->via.array.size, ts_of(wire_map_get(rec, "received_ts")));
    if (!job) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    job->change_serial = 1;
    if (set_client(job, wire_map_get(rec, "client")) < 0 ||
        set_owner(job, wire_map_get(rec, "owner")) < 0) {
        snprintf(err, errlen, "out of memory");
        jq_job_destroy(&job);
        return NULL;
    }
    for (uint32_t i = 0; i < job->nops; i++) {
        const msgpack_object *o = &input->via.array.ptr[i];
        const msgpack_object *name = wire_map_get(o, "op");
        const msgpack_object *args = wire_map_get(o, "args");
        jq_op_t *op = &job->ops[i];
        int64_t prio;
        char why[128] = "malformed opcode";
        if (!name_ok(name) || !args || args->type != MSGPACK_OBJECT_MAP ||
            !get_prio(o, "priority", &prio) ||
            jq_op_set_name(op, NULL, name->via.str.ptr, name->via.str.size) < 0 ||
            (summary && set_summary(op, &summary->via.array.ptr[i]) < 0) ||
            jq_blob_pack_object(&op->args, args) < 0 ||
            decode_deps(op, wire_map_get(o, "depends"), false, why, sizeof why) < 0) {
            snprintf(err, errlen, "opcode %u: %s", i, why);
            jq_job_destroy(&job);
            return NULL;
        }
        op->priority = op->input_priority = (int8_t)prio;
        op->status = JQ_QUEUED;
        jq_op_read_run_options(op, o);
    }
    job->status = (uint8_t)jq_job_derive_status(job);
    return job;
}
