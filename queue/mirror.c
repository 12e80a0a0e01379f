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

jq_job_t *jq_mirror_new(const jq_job_t *job, bool with_logs)
{
    jq_job_t *m = jq_job_new(job->id, job->nops, job->received_ts);
    if (!m)
        return NULL;
    jq_op_t *ops = m->ops;
    memcpy(m, job, sizeof *m);
    int rc = 0;
    for (uint32_t i = 0; i < job->nops; i++) {
        const jq_op_t *src = &job->ops[i];
        jq_op_t *dst = &ops[i];
        *dst = *src;
        dst->summary = NULL;
        dst->deps = NULL;
        dst->log = NULL;
        dst->nlog = dst->caplog = 0;
        dst->ndeps = 0;
        rc |= blob_copy(&dst->args, &src->args) | blob_copy(&dst->result, &src->result);
        if (src->summary && !(dst->summary = strdup(src->summary)))
            rc = -1;
        if (src->ndeps && (dst->deps = malloc(src->ndeps * sizeof *dst->deps))) {
            memcpy(dst->deps, src->deps, src->ndeps * sizeof *dst->deps);
            dst->ndeps = src->ndeps;
        }
        if (with_logs && src->nlog) {
            dst->log = calloc(src->nlog, sizeof *dst->log);
            if (!dst->log) {
                rc = -1;
                continue;
            }
            dst->caplog = src->nlog;
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
    int64_t s, us;
    if (!o || o->type != MSGPACK_OBJECT_ARRAY || o->via.array.size != 2 ||
        !wire_get_int(&o->via.array.ptr[0], &s) || !wire_get_int(&o->via.array.ptr[1], &us))
        return 0;
    return s * 1000000 + us;
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

int jq_mirror_apply(jq_job_t *m, const msgpack_object *change, bool keep_logs,
                    jq_mirror_log_fn on_log, void *ctx)
{
    int64_t id, serial;
    if (!wire_get_int(wire_map_get(change, "job"), &id) || (uint64_t)id != m->id ||
        !wire_get_int(wire_map_get(change, "serial"), &serial))
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
            if (wire_get_int(wire_map_get(o, "priority"), &prio))
                op->priority = (int8_t)prio;
            op->start_ts = ts_of(wire_map_get(o, "start_ts"));
            op->exec_ts = ts_of(wire_map_get(o, "exec_ts"));
            op->end_ts = ts_of(wire_map_get(o, "end_ts"));
            if (jq_blob_pack_object(&op->result, wire_map_get(o, "result")) < 0)
                return -1;
        }
    }
    const msgpack_object *log = wire_map_get(change, "log");
    if (log && log->type == MSGPACK_OBJECT_ARRAY && log->via.array.size) {
        int64_t op_index = -1;
        if (!wire_get_int(wire_map_get(change, "log_op"), &op_index) || op_index < 0 ||
            (uint64_t)op_index >= m->nops)
            return -1;
        for (uint32_t k = 0; k < log->via.array.size; k++) {
            const msgpack_object *e = &log->via.array.ptr[k];
            int64_t ls;
            if (e->type != MSGPACK_OBJECT_ARRAY || e->via.array.size != 4 ||
                !wire_get_int(&e->via.array.ptr[0], &ls))
                return -1;
            if ((uint64_t)ls > m->log_serial)
                m->log_serial = (uint32_t)ls;
            if (keep_logs) {
                jq_blob_t b = {0};
                int rc = jq_blob_pack_object(&b, e);
                rc = rc < 0 ? rc : jq_job_append_log(m, (uint32_t)op_index, b.data, b.len);
                jq_blob_free(&b);
                if (rc < 0)
                    return -1;
            }
            if (on_log)
                on_log(ctx, (uint32_t)op_index, e);
        }
    }
    m->change_serial = (uint64_t)serial;
    return 1;
}
