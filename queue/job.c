/* job.c: job and opcode state transitions, Ganeti's rules (JOBMODEL §1).
 * The invariant every transition keeps (§1.5): opcodes before the current
 * one are success, at most the current one is waiting/running/canceling,
 * and the job is final exactly when end_ts is set. */
#include "job.h"
#include "opdef.h"
#include "wire.h"

#include <msgpack.h>
#include <stdlib.h>
#include <string.h>

static const char *const status_names[JQ_STATUS__COUNT] = {
    "queued", "waiting", "canceling", "running", "canceled", "success", "error",
};

const char *jq_status_name(jq_status_t s)
{
    return (unsigned)s < JQ_STATUS__COUNT ? status_names[s] : "unknown";
}

int jq_status_parse(const char *name, size_t len, jq_status_t *out)
{
    for (int i = 0; i < JQ_STATUS__COUNT; i++)
        if (strlen(status_names[i]) == len && memcmp(status_names[i], name, len) == 0) {
            *out = (jq_status_t)i;
            return 0;
        }
    return -1;
}

bool jq_priority_submittable(int64_t prio)
{
    return prio == -10 || prio == 0 || prio == 10;
}

int jq_priority_parse(const msgpack_object *o, int64_t *out)
{
    if (o && o->type == MSGPACK_OBJECT_POSITIVE_INTEGER && o->via.u64 > INT64_MAX)
        return -2;
    int64_t v;
    if (!wire_get_int(o, &v))
        return -1;
    if (!jq_priority_submittable(v))
        return -2;
    *out = v;
    return 0;
}

void jq_delta_init(jq_delta_t *d, const jq_job_t *job)
{
    d->op_lo = INT32_MAX;
    d->op_hi = -1;
    d->log_from = job->log_serial;
    d->job_changed = false;
}

void jq_delta_mark(jq_delta_t *d, int i)
{
    if (i < d->op_lo)
        d->op_lo = i;
    if (i > d->op_hi)
        d->op_hi = i;
}

bool jq_delta_empty(const jq_delta_t *d, const jq_job_t *job)
{
    return d->op_lo > d->op_hi && d->log_from == job->log_serial && !d->job_changed;
}

jq_job_t *jq_job_new(uint64_t id, uint32_t nops, int64_t now)
{
    jq_job_t *job = calloc(1, sizeof *job + (size_t)nops * sizeof(jq_op_t));
    if (!job)
        return NULL;
    job->id = id;
    job->nops = nops;
    job->received_ts = now;
    job->status = JQ_QUEUED;
    return job;
}

int jq_blob_set(jq_blob_t *b, const void *data, size_t len)
{
    char *copy = NULL;
    if (len) {
        if (len > UINT32_MAX || !(copy = malloc(len)))
            return -1;
        memcpy(copy, data, len);
    }
    free(b->data);
    b->data = copy;
    b->len = (uint32_t)len;
    return 0;
}

void jq_blob_free(jq_blob_t *b)
{
    free(b->data);
    b->data = NULL;
    b->len = 0;
}

int jq_blob_take(jq_blob_t *b, msgpack_sbuffer *sb)
{
    if (sb->size > UINT32_MAX) {
        msgpack_sbuffer_destroy(sb);
        msgpack_sbuffer_init(sb);
        return -1;
    }
    char *exact = sb->size ? realloc(sb->data, sb->size) : NULL;
    if (sb->size && !exact)
        exact = sb->data; /* could not shrink: keep it as it is */
    else if (!sb->size)
        free(sb->data);
    jq_blob_free(b);
    b->data = exact;
    b->len = (uint32_t)sb->size;
    sb->data = NULL;
    sb->size = sb->alloc = 0;
    return 0;
}

int jq_blob_pack_object(jq_blob_t *b, const msgpack_object *o)
{
    if (!o || o->type == MSGPACK_OBJECT_NIL) {
        jq_blob_free(b);
        return 0;
    }
    wire_buf_t wb; /* small: a job's args are mostly a few dozen bytes */
    if (wire_buf_init(&wb, 0, 64) < 0)
        return -1;
    msgpack_packer pk;
    msgpack_packer_init(&pk, &wb, wire_buf_write);
    msgpack_pack_object(&pk, *o);
    if (wb.failed || wb.len > UINT32_MAX || !wb.len) {
        free(wb.mem);
        return -1;
    }
    char *exact = realloc(wb.mem, wb.len);
    jq_blob_free(b);
    b->data = exact ? exact : wb.mem;
    b->len = (uint32_t)wb.len;
    return 0;
}

int jq_blob_exec_error(jq_blob_t *b, const char *message)
{
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_array(&pk, 2);
    msgpack_pack_str_with_body(&pk, "OpExecError", 11);
    msgpack_pack_array(&pk, 1);
    msgpack_pack_str_with_body(&pk, message, strlen(message));
    return sb.data ? jq_blob_take(b, &sb) : -1;
}

static int blob_str(jq_blob_t *b, const char *s)
{
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_str_with_body(&pk, s, strlen(s));
    return sb.data ? jq_blob_take(b, &sb) : -1;
}

int jq_job_pack(jq_job_t **jobp)
{
    jq_job_t *job = *jobp;
    if (job->packed)
        return 0;
    size_t head = sizeof *job + (size_t)job->nops * sizeof(jq_op_t);
    /* Dependencies first, where their alignment holds; then bytes. */
    size_t tail = 0;
    for (uint32_t i = 0; i < job->nops; i++)
        tail += (size_t)job->ops[i].ndeps * sizeof(jq_dep_t);
    for (uint32_t i = 0; i < job->nops; i++) {
        tail += job->ops[i].args.len;
        if (job->ops[i].summary)
            tail += strlen(job->ops[i].summary) + 1;
    }
    if (job->owner)
        tail += strlen(job->owner) + 1;
    jq_job_t *p = malloc(head + tail);
    if (!p)
        return -1;
    memcpy(p, job, head);
    char *at = (char *)p + head;
    for (uint32_t i = 0; i < p->nops; i++) {
        jq_op_t *op = &p->ops[i];
        if (op->ndeps) {
            memcpy(at, op->deps, op->ndeps * sizeof(jq_dep_t));
            op->deps = (jq_dep_t *)(void *)at;
            at += op->ndeps * sizeof(jq_dep_t);
        } else {
            op->deps = NULL;
        }
    }
    for (uint32_t i = 0; i < p->nops; i++) {
        jq_op_t *op = &p->ops[i];
        if (op->args.len) {
            memcpy(at, op->args.data, op->args.len);
            op->args.data = at;
            at += op->args.len;
        } else {
            op->args.data = NULL;
        }
        if (op->summary) {
            size_t n = strlen(op->summary) + 1;
            memcpy(at, op->summary, n);
            op->summary = at;
            at += n;
        }
    }
    if (p->owner) {
        size_t n = strlen(p->owner) + 1;
        memcpy(at, p->owner, n);
        p->owner = at;
    }
    p->packed = true;
    /* The old pieces go; everything else the job owns moved with it. */
    for (uint32_t i = 0; i < job->nops; i++) {
        jq_op_t *op = &job->ops[i];
        jq_blob_free(&op->args);
        free(op->summary);
        free(op->deps);
    }
    free(job->owner);
    free(job);
    *jobp = p;
    return 0;
}

void jq_job_destroy(jq_job_t **jobp)
{
    if (!jobp || !*jobp)
        return;
    jq_job_t *job = *jobp;
    for (uint32_t i = 0; i < job->nops; i++) {
        jq_op_t *op = &job->ops[i];
        if (!job->packed) {
            jq_blob_free(&op->args);
            free(op->summary);
            free(op->deps);
        }
        jq_blob_free(&op->result);
        free(op->worker);
        if (!op->def)
            free((char *)op->name);
        for (uint32_t k = 0; k < op->nlog; k++)
            jq_blob_free(&op->log[k]);
        free(op->log);
    }
    jq_blob_free(&job->client);
    if (!job->packed)
        free(job->owner);
    free(job);
    *jobp = NULL;
}

jq_status_t jq_job_derive_status(const jq_job_t *job)
{
    jq_status_t result = JQ_QUEUED;
    bool all_success = true;
    for (uint32_t i = 0; i < job->nops; i++) {
        jq_status_t s = job->ops[i].status;
        if (s == JQ_SUCCESS)
            continue;
        all_success = false;
        if (s == JQ_WAITING || s == JQ_RUNNING)
            result = s;
        else if (s == JQ_CANCELING || s == JQ_ERROR || s == JQ_CANCELED)
            return s;
    }
    return all_success ? JQ_SUCCESS : result;
}

int jq_job_priority(const jq_job_t *job)
{
    int prio = JQ_PRIO_LOWEST + 1;
    for (uint32_t i = 0; i < job->nops; i++)
        if (!jq_status_final(job->ops[i].status) && job->ops[i].priority < prio)
            prio = job->ops[i].priority;
    return prio > JQ_PRIO_LOWEST ? JQ_PRIO_DEFAULT : prio;
}

uint32_t jq_job_current_op(const jq_job_t *job)
{
    uint32_t i = 0;
    while (i < job->nops && job->ops[i].status == JQ_SUCCESS)
        i++;
    return i;
}

int64_t jq_job_age_ref(const jq_job_t *job)
{
    if (job->end_ts)
        return job->end_ts;
    return job->start_ts ? job->start_ts : job->received_ts;
}

static bool job_final(const jq_job_t *job)
{
    return job->end_ts != 0;
}

int jq_job_pickup(jq_job_t *job, int64_t now, jq_delta_t *d)
{
    uint32_t i = jq_job_current_op(job);
    if (job_final(job) || i == job->nops)
        return -1;
    jq_op_t *op = &job->ops[i];
    if (op->status != JQ_QUEUED && op->status != JQ_WAITING)
        return -1;
    if (op->status == JQ_QUEUED) {
        jq_blob_free(&op->result);
        op->status = JQ_WAITING;
        if (!op->start_ts)
            op->start_ts = now;
        jq_delta_mark(d, (int)i);
    }
    if (!job->start_ts) {
        job->start_ts = op->start_ts;
        d->job_changed = true;
    }
    return 0;
}

int jq_job_op_running(jq_job_t *job, int64_t now, jq_delta_t *d)
{
    uint32_t i = jq_job_current_op(job);
    if (i == job->nops || job->ops[i].status != JQ_WAITING)
        return -1;
    job->ops[i].status = JQ_RUNNING;
    job->ops[i].exec_ts = now;
    jq_delta_mark(d, (int)i);
    return 0;
}

int jq_job_op_assign(jq_job_t *job, int64_t now, const char *worker, jq_delta_t *d)
{
    uint32_t i = jq_job_current_op(job);
    if (i == job->nops || job->ops[i].status != JQ_WAITING)
        return -1;
    char *name = strdup(worker ? worker : "");
    if (!name)
        return -1;
    jq_op_t *op = &job->ops[i];
    free(op->worker);
    op->worker = name;
    op->attempt++;
    op->status = JQ_RUNNING;
    op->exec_ts = now;
    jq_delta_mark(d, (int)i);
    return 0;
}

int jq_job_op_unassign(jq_job_t *job, bool retried, jq_delta_t *d)
{
    uint32_t i = jq_job_current_op(job);
    if (i == job->nops || job->ops[i].status != JQ_RUNNING)
        return -1;
    jq_op_t *op = &job->ops[i];
    op->status = JQ_WAITING;
    op->exec_ts = 0;
    if (retried)
        op->retries++;
    jq_delta_mark(d, (int)i);
    return 0;
}

static int grow_log(jq_op_t *op)
{
    if (op->nlog >= UINT32_C(1) << 31) /* the capacity could not double */
        return -1;
    uint32_t have = jq_op_log_cap(op->nlog);
    if (op->nlog < have)
        return 0;
    uint32_t cap = have ? have * 2 : 4;
    jq_blob_t *grown = realloc(op->log, cap * sizeof *grown);
    if (!grown)
        return -1;
    op->log = grown;
    return 0;
}

int jq_op_set_name(jq_op_t *op, const struct jq_opdef *def, const char *name, size_t len)
{
    if (!op->def)
        free((char *)op->name);
    op->def = def;
    op->name = def ? def->name : strndup(name, len);
    return op->name ? 0 : -1;
}

int jq_job_append_log(jq_job_t *job, uint32_t op_index, uint32_t serial, const void *entry,
                      size_t len)
{
    if (op_index >= job->nops || serial == 0)
        return -1;
    jq_op_t *op = &job->ops[op_index];
    if (grow_log(op) < 0)
        return -1;
    op->log[op->nlog] = (jq_blob_t){0};
    if (jq_blob_set(&op->log[op->nlog], entry, len) < 0)
        return -1;
    if (op->nlog == 0)
        op->log_base = serial - 1;
    op->nlog++;
    return 0;
}

void jq_job_log_find(const jq_job_t *job, uint32_t after, uint32_t *opp, uint32_t *indexp)
{
    /* Serials grow across opcodes in order, so the opcodes holding entries
     * newer than `after` are a suffix: walk back until one holds none. */
    uint32_t found = job->nops;
    for (uint32_t i = job->nops; i-- > 0;) {
        const jq_op_t *op = &job->ops[i];
        if (!op->nlog)
            continue;
        if (op->log_base + op->nlog <= after)
            break;
        found = i;
    }
    *opp = found;
    *indexp = 0;
    if (found < job->nops && after > job->ops[found].log_base)
        *indexp = after - job->ops[found].log_base;
}

int jq_job_log(jq_job_t *job, int64_t now, const char *type, const char *msg,
               size_t msglen, uint32_t max_entries, jq_delta_t *d)
{
    uint32_t i = jq_job_current_op(job);
    if (i == job->nops || jq_status_final(job->ops[i].status))
        return -1;
    if (max_entries && job->log_serial >= max_entries)
        return 1;
    char limit_msg[160];
    if (max_entries && job->log_serial + 1 == max_entries) {
        type = "message";
        msglen = (size_t)snprintf(limit_msg, sizeof limit_msg, JQ_LOG_LIMIT_MESSAGE, max_entries);
        msg = limit_msg;
    }
    jq_op_t *op = &job->ops[i];
    if (grow_log(op) < 0)
        return -1;
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_array(&pk, 4);
    msgpack_pack_uint32(&pk, job->log_serial + 1);
    msgpack_pack_array(&pk, 2);
    msgpack_pack_int64(&pk, now / 1000000);
    msgpack_pack_int64(&pk, now % 1000000);
    msgpack_pack_str_with_body(&pk, type, strlen(type));
    msgpack_pack_str_with_body(&pk, msg, msglen);
    op->log[op->nlog] = (jq_blob_t){0};
    if (!sb.data || jq_blob_take(&op->log[op->nlog], &sb) < 0)
        return -1;
    if (op->nlog == 0)
        op->log_base = job->log_serial;
    op->nlog++;
    job->log_serial++;
    (void)d; /* the new serial is the delta */
    return 0;
}

static void finalize(jq_job_t *job, int64_t now, jq_delta_t *d)
{
    job->end_ts = now;
    d->job_changed = true;
}

int jq_job_op_finish(jq_job_t *job, int64_t now, bool success, jq_blob_t *result,
                     jq_delta_t *d)
{
    uint32_t i = jq_job_current_op(job);
    if (i == job->nops || jq_status_final(job->ops[i].status))
        return -1;
    jq_op_t *op = &job->ops[i];
    jq_blob_free(&op->result);
    if (result) {
        op->result = *result;
        result->data = NULL;
        result->len = 0;
    }
    op->status = success ? JQ_SUCCESS : JQ_ERROR;
    op->end_ts = now;
    jq_delta_mark(d, (int)i);
    if (!success) {
        for (uint32_t k = i + 1; k < job->nops; k++) {
            job->ops[k].status = JQ_ERROR;
            jq_blob_exec_error(&job->ops[k].result, "Preceding opcode failed");
            job->ops[k].end_ts = now;
            jq_delta_mark(d, (int)k);
        }
        finalize(job, now, d);
    } else if (i + 1 == job->nops) {
        finalize(job, now, d);
    }
    return 0;
}

int jq_job_fail(jq_job_t *job, int64_t now, const char *message, jq_delta_t *d)
{
    uint32_t i = jq_job_current_op(job);
    if (job_final(job) || i == job->nops)
        return -1;
    jq_op_t *op = &job->ops[i];
    op->status = JQ_ERROR;
    op->end_ts = now;
    jq_blob_exec_error(&op->result, message);
    jq_delta_mark(d, (int)i);
    for (uint32_t k = i + 1; k < job->nops; k++) {
        job->ops[k].status = JQ_ERROR;
        jq_blob_exec_error(&job->ops[k].result, message);
        job->ops[k].end_ts = now;
        jq_delta_mark(d, (int)k);
    }
    finalize(job, now, d);
    return 0;
}

int jq_job_mark_canceled(jq_job_t *job, int64_t now, jq_delta_t *d)
{
    if (job_final(job))
        return -1;
    for (uint32_t k = jq_job_current_op(job); k < job->nops; k++) {
        jq_op_t *op = &job->ops[k];
        op->status = JQ_CANCELED;
        blob_str(&op->result, "Job canceled by request");
        if (op->start_ts && !op->end_ts)
            op->end_ts = now;
        jq_delta_mark(d, (int)k);
    }
    finalize(job, now, d);
    return 0;
}

jq_cancel_t jq_job_cancel(jq_job_t *job, int64_t now, jq_delta_t *d)
{
    jq_status_t st = jq_job_derive_status(job);
    if (st == JQ_QUEUED) {
        /* Ganeti: the ops keep their timestamps, the job ends now. */
        for (uint32_t k = jq_job_current_op(job); k < job->nops; k++) {
            job->ops[k].status = JQ_CANCELED;
            blob_str(&job->ops[k].result, "Job canceled by request");
            jq_delta_mark(d, (int)k);
        }
        finalize(job, now, d);
        return JQ_CANCEL_DONE;
    }
    if (st == JQ_WAITING || st == JQ_RUNNING) {
        for (uint32_t k = jq_job_current_op(job); k < job->nops; k++) {
            job->ops[k].status = JQ_CANCELING;
            jq_delta_mark(d, (int)k);
        }
        return JQ_CANCEL_PENDING;
    }
    return JQ_CANCEL_TOO_LATE;
}

jq_prio_change_t jq_job_change_priority(jq_job_t *job, int prio, jq_delta_t *d)
{
    jq_status_t st = jq_job_derive_status(job);
    if (jq_status_final(st))
        return JQ_PRIO_FINISHED;
    if (st == JQ_CANCELING)
        return JQ_PRIO_CANCELING;
    bool pending = false, changed = false;
    for (uint32_t k = 0; k < job->nops; k++) {
        jq_op_t *op = &job->ops[k];
        if (op->status != JQ_QUEUED && op->status != JQ_WAITING)
            continue;
        pending = true;
        if (op->priority != prio) { /* the same value changes nothing */
            op->priority = (int8_t)prio;
            jq_delta_mark(d, (int)k);
            changed = true;
        }
    }
    if (changed)
        d->job_changed = true;
    return pending ? JQ_PRIO_CHANGED : JQ_PRIO_NO_PENDING;
}
