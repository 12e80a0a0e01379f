/* mirror.c: cloning a job and replaying change records onto the clone. */
#include "mirror.h"
#include "wire.h"

#include <stdlib.h>
#include <string.h>

static int blob_copy(jq_blob_t *dst, const jq_blob_t *src)
{
    dst->data = NULL;
    dst->len = 0;
    return src->data ? jq_blob_set(dst, src->data, src->len) : 0;
}

jq_job_t *jq_mirror_new(const jq_job_t *job, unsigned keep)
{
    jq_job_t *m = jq_job_new(job->id, job->nops, job->received_ts);
    if (!m)
        return NULL;
    m->start_ts = job->start_ts;
    m->end_ts = job->end_ts;
    m->change_serial = job->change_serial;
    m->log_serial = m->log_recorded = job->log_serial;
    m->status = job->status;
    m->archived = job->archived;
    int rc = job->owner && !(m->owner = strdup(job->owner)) ? -1 : 0;
    for (uint32_t i = 0; i < job->nops && rc == 0; i++) {
        const jq_op_t *src = &job->ops[i];
        jq_op_t *dst = &m->ops[i];
        dst->start_ts = src->start_ts;
        dst->exec_ts = src->exec_ts;
        dst->end_ts = src->end_ts;
        dst->status = src->status;
        dst->priority = src->priority;
        dst->input_priority = src->input_priority;
        dst->log_base = src->log_base;
        dst->attempt = src->attempt;
        dst->retries = src->retries;
        dst->retry = src->retry;
        dst->backoff_us = src->backoff_us;
        dst->timeout_us = src->timeout_us;
        int wrc = src->worker && !(dst->worker = strdup(src->worker)) ? -1 : 0;
        rc = jq_op_set_name(dst, src->def, jq_op_name(src), strlen(jq_op_name(src))) | wrc;
        if (keep & JQ_MIRROR_RESULTS)
            rc |= blob_copy(&dst->result, &src->result);
        if (keep & JQ_MIRROR_SUMMARY && src->summary && !(dst->summary = strdup(src->summary)))
            rc = -1;
        if (keep & JQ_MIRROR_INPUT) {
            rc |= blob_copy(&dst->args, &src->args);
            if (src->ndeps && (dst->deps = malloc(src->ndeps * sizeof *dst->deps))) {
                memcpy(dst->deps, src->deps, src->ndeps * sizeof *dst->deps);
                dst->ndeps = src->ndeps;
            } else if (src->ndeps) {
                rc = -1;
            }
        }
        if (keep & JQ_MIRROR_LOGS && src->nlog) {
            /* Room as jq_op_log_cap says, so appending to the copy grows it right. */
            dst->log = calloc(jq_op_log_cap(src->nlog), sizeof *dst->log);
            if (!dst->log) {
                rc = -1;
                continue;
            }
            for (uint32_t k = 0; k < src->nlog; k++, dst->nlog++)
                rc |= blob_copy(&dst->log[k], &src->log[k]);
        }
    }
    if (rc) {
        jq_job_destroy(&m);
        return NULL;
    }
    return m;
}

static int64_t ts_of(const msgpack_object *o)
{
    int64_t usec;
    return wire_get_ts(o, &usec) ? usec : 0; /* malformed or out of range: unset */
}

static int status_of(const msgpack_object *o, uint8_t *out)
{
    jq_status_t st;
    if (!o || o->type != MSGPACK_OBJECT_STR ||
        jq_status_parse(o->via.str.ptr, o->via.str.size, &st) < 0)
        return -1;
    *out = (uint8_t)st;
    return 0;
}

/* The log entries of a record, with the opcode each belongs to: one
 * opcode (log_op) normally, several (log_ops) in a catch-up record. */
static int apply_log(jq_job_t *m, const msgpack_object *change, unsigned keep,
                     jq_mirror_log_fn on_log, void *ctx)
{
    const msgpack_object *log = wire_map_get(change, "log");
    if (!log || log->type != MSGPACK_OBJECT_ARRAY || log->via.array.size == 0)
        return 0;
    const msgpack_object *spans = wire_map_get(change, "log_ops");
    int64_t op_index = -1, left = log->via.array.size;
    uint32_t span = 0;
    if (spans) {
        if (spans->type != MSGPACK_OBJECT_ARRAY)
            return -1;
        left = 0;
    } else if (!wire_get_int(wire_map_get(change, "log_op"), &op_index)) {
        return -1;
    }
    for (uint32_t k = 0; k < log->via.array.size; k++) {
        if (left == 0) { /* the next span: [opcode index, entries] */
            if (!spans || span == spans->via.array.size)
                return -1;
            const msgpack_object *p = &spans->via.array.ptr[span++];
            if (p->type != MSGPACK_OBJECT_ARRAY || p->via.array.size != 2 ||
                !wire_get_int(&p->via.array.ptr[0], &op_index) ||
                !wire_get_int(&p->via.array.ptr[1], &left) || left <= 0)
                return -1;
        }
        left--;
        if (op_index < 0 || (uint64_t)op_index >= m->nops)
            return -1;
        const msgpack_object *e = &log->via.array.ptr[k];
        int64_t ls;
        if (e->type != MSGPACK_OBJECT_ARRAY || e->via.array.size != 4 ||
            !wire_get_int(&e->via.array.ptr[0], &ls) || ls <= 0 || ls > UINT32_MAX)
            return -1;
        if ((uint64_t)ls > m->log_serial)
            m->log_serial = m->log_recorded = (uint32_t)ls;
        if (keep & JQ_MIRROR_LOGS) {
            jq_blob_t b = {0};
            int rc = jq_blob_pack_object(&b, e);
            rc = rc < 0 ? rc : jq_job_append_log(m, (uint32_t)op_index, (uint32_t)ls, b.data, b.len);
            jq_blob_free(&b);
            if (rc < 0)
                return -1;
        }
        if (on_log && on_log(ctx, (uint32_t)op_index, e) < 0)
            return -1;
    }
    return 0;
}

int jq_mirror_apply(jq_job_t *m, const msgpack_object *change, unsigned keep,
                    jq_mirror_log_fn on_log, void *ctx)
{
    int64_t id, serial;
    if (!wire_get_int(wire_map_get(change, "job"), &id) || (uint64_t)id != m->id ||
        !wire_get_int(wire_map_get(change, "serial"), &serial) || serial < 1)
        return -1;
    if ((uint64_t)serial <= m->change_serial)
        return 0;
    if (wire_str_eq(wire_map_get(change, "kind"), "archive"))
        m->archived = true;
    if (status_of(wire_map_get(change, "status"), &m->status) < 0)
        return -1;
    m->start_ts = ts_of(wire_map_get(change, "start_ts"));
    m->end_ts = ts_of(wire_map_get(change, "end_ts"));
    const msgpack_object *ops = wire_map_get(change, "ops");
    if (ops && ops->type == MSGPACK_OBJECT_ARRAY) {
        for (uint32_t k = 0; k < ops->via.array.size; k++) {
            const msgpack_object *o = &ops->via.array.ptr[k];
            int64_t index, prio;
            if (!wire_get_int(wire_map_get(o, "index"), &index) || index < 0 ||
                (uint64_t)index >= m->nops)
                return -1;
            jq_op_t *op = &m->ops[index];
            if (status_of(wire_map_get(o, "status"), &op->status) < 0)
                return -1;
            if (wire_get_int(wire_map_get(o, "priority"), &prio) && prio >= JQ_PRIO_HIGHEST &&
                prio <= JQ_PRIO_LOWEST)
                op->priority = (int8_t)prio;
            op->start_ts = ts_of(wire_map_get(o, "start_ts"));
            op->exec_ts = ts_of(wire_map_get(o, "exec_ts"));
            op->end_ts = ts_of(wire_map_get(o, "end_ts"));
            int64_t attempt;
            if (wire_get_int(wire_map_get(o, "attempt"), &attempt) && attempt >= 0 &&
                attempt <= UINT16_MAX)
                op->attempt = (uint16_t)attempt;
            if (wire_get_int(wire_map_get(o, "retries"), &attempt) && attempt >= 0 &&
                attempt <= UINT16_MAX)
                op->retries = (uint16_t)attempt;
            const msgpack_object *worker = wire_map_get(o, "worker");
            if (worker && worker->type == MSGPACK_OBJECT_STR) {
                char *w = strndup(worker->via.str.ptr, worker->via.str.size);
                if (!w)
                    return -1;
                free(op->worker);
                op->worker = w;
            }
            if (keep & JQ_MIRROR_RESULTS &&
                jq_blob_pack_object(&op->result, wire_map_get(o, "result")) < 0)
                return -1;
        }
    }
    if (apply_log(m, change, keep, on_log, ctx) < 0)
        return -1;
    m->change_serial = (uint64_t)serial;
    return 1;
}
