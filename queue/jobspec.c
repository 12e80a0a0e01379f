/* jobspec.c: validation of submitted opcodes (JOBMODEL §2.1, §1.7). */
#include "jobspec.h"
#include "jobcodec.h"
#include "opreg.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const jq_opdef_t *jq_opset_find(const jq_opset_t *set, const char *name, size_t len)
{
    for (size_t i = 0; i < set->count; i++)
        if (strlen(set->defs[i]->name) == len && memcmp(set->defs[i]->name, name, len) == 0)
            return set->defs[i];
    return set->reg ? jq_opreg_find(set->reg, name, len) : NULL;
}

static jobq_code_t parse_depends(const msgpack_object *o, bool allow_relative, uint64_t last_id,
                                 jq_op_t *op, char *err, size_t errlen, unsigned idx)
{
    if (o->type == MSGPACK_OBJECT_NIL)
        return JOBQ_ERR_NONE;
    /* A value of the wrong type is BadArgument, as for any argument; a
     * well-formed dependency that cannot be right is InvalidDependency. */
    if (o->type != MSGPACK_OBJECT_ARRAY || o->via.array.size > JOBQ_MAX_DEPENDS) {
        snprintf(err, errlen, "opcode %u: 'depends' must be a list of at most %d [job_id, [status...]] pairs",
                 idx, JOBQ_MAX_DEPENDS);
        return o->type != MSGPACK_OBJECT_ARRAY ? JOBQ_ERR_BAD_ARGUMENT : JOBQ_ERR_INVALID_DEPENDS;
    }
    uint32_t n = o->via.array.size;
    if (n == 0)
        return JOBQ_ERR_NONE;
    op->deps = calloc(n, sizeof *op->deps);
    if (!op->deps) {
        snprintf(err, errlen, "out of memory");
        return JOBQ_ERR_INTERNAL;
    }
    for (uint32_t k = 0; k < n; k++) {
        const msgpack_object *pair = &o->via.array.ptr[k];
        int64_t id;
        if (pair->type != MSGPACK_OBJECT_ARRAY || pair->via.array.size != 2 ||
            !wire_get_int(&pair->via.array.ptr[0], &id) ||
            pair->via.array.ptr[1].type != MSGPACK_OBJECT_ARRAY) {
            snprintf(err, errlen, "opcode %u: dependency %u must be [job_id, [status...]]", idx, k);
            /* An integer too large for a job id is a value, not a type. */
            bool huge = pair->type == MSGPACK_OBJECT_ARRAY && pair->via.array.size == 2 &&
                        pair->via.array.ptr[0].type == MSGPACK_OBJECT_POSITIVE_INTEGER &&
                        pair->via.array.ptr[1].type == MSGPACK_OBJECT_ARRAY;
            return huge ? JOBQ_ERR_INVALID_DEPENDS : JOBQ_ERR_BAD_ARGUMENT;
        }
        if (id == 0 || (id < 0 && !allow_relative)) {
            snprintf(err, errlen, "opcode %u has invalid dependencies: job id %lld%s", idx,
                     (long long)id, id < 0 ? " is relative, allowed only in submit_many_jobs" : "");
            return JOBQ_ERR_INVALID_DEPENDS;
        }
        /* A job that does not exist yet could come to depend on this one:
         * two jobs waiting for each other forever. */
        if (id > 0 && (uint64_t)id > last_id) {
            snprintf(err, errlen, "opcode %u has invalid dependencies: job %lld does not exist "
                                  "(the last job id is %llu)",
                     idx, (long long)id, (unsigned long long)last_id);
            return JOBQ_ERR_INVALID_DEPENDS;
        }
        const msgpack_object *sts = &pair->via.array.ptr[1];
        uint8_t mask = 0;
        for (uint32_t s = 0; s < sts->via.array.size; s++) {
            const msgpack_object *so = &sts->via.array.ptr[s];
            jq_status_t st;
            if (so->type != MSGPACK_OBJECT_STR) {
                snprintf(err, errlen, "opcode %u: dependency %u must be [job_id, [status...]]",
                         idx, k);
                return JOBQ_ERR_BAD_ARGUMENT;
            }
            if (jq_status_parse(so->via.str.ptr, so->via.str.size, &st) < 0 ||
                !jq_status_final(st)) {
                snprintf(err, errlen, "opcode %u: dependency on job %lld may only name final statuses (canceled, success, error)",
                         idx, (long long)id);
                return JOBQ_ERR_INVALID_DEPENDS;
            }
            mask |= (uint8_t)(1u << st);
        }
        op->deps[k].job_id = id;
        op->deps[k].status_mask = mask;
    }
    op->ndeps = (uint8_t)n;
    return JOBQ_ERR_NONE;
}

/* Every key of args must be one the opcode declares, and every argument
 * it declares required must be there: the declarations list_opcodes shows
 * are the rules submit applies. */
static jobq_code_t check_arg_names(const jq_opdef_t *def, const msgpack_object *args,
                                   unsigned idx, char *err, size_t errlen)
{
    if (!def->args)
        return JOBQ_ERR_NONE;
    for (uint32_t i = 0; i < args->via.map.size; i++) {
        const msgpack_object *k = &args->via.map.ptr[i].key;
        bool known = false;
        for (const jq_argdef_t *a = def->args; a->name && !known; a++)
            known = wire_str_eq(k, a->name);
        if (known)
            continue;
        char takes[256] = "";
        size_t off = 0;
        for (const jq_argdef_t *a = def->args; a->name && off < sizeof takes; a++)
            off += (size_t)snprintf(takes + off, sizeof takes - off, "%s%s", off ? ", " : "",
                                    a->name);
        if (k->type == MSGPACK_OBJECT_STR)
            snprintf(err, errlen, "opcode %u (%s): unknown argument '%.*s' (%s takes %s)", idx,
                     def->name, wire_utf8_quote_len(k->via.str.ptr, k->via.str.size, 64),
                     k->via.str.ptr, def->name, off ? takes : "no arguments");
        else
            snprintf(err, errlen, "opcode %u (%s): argument names must be strings", idx, def->name);
        return JOBQ_ERR_BAD_ARGUMENT;
    }
    for (const jq_argdef_t *a = def->args; a->name; a++) {
        const msgpack_object *v = a->required ? wire_map_get(args, a->name) : NULL;
        if (a->required && (!v || v->type == MSGPACK_OBJECT_NIL)) {
            snprintf(err, errlen, "opcode %u (%s): missing argument '%s' (required)", idx,
                     def->name, a->name);
            return JOBQ_ERR_BAD_ARGUMENT;
        }
    }
    return JOBQ_ERR_NONE;
}

/* retry, retry_backoff, timeout (docs/protocol.md, "Retry and timeout"):
 * worker opcodes only. */
static jobq_code_t parse_run_options(const msgpack_object *o, unsigned idx, jq_op_t *op,
                                     char *err, size_t errlen)
{
    static const char *const keys[] = {"retry", "retry_backoff", "timeout"};
    bool any = false;
    for (size_t k = 0; k < 3; k++) {
        const msgpack_object *v = wire_map_get(o, keys[k]);
        if (v && v->type != MSGPACK_OBJECT_NIL)
            any = true;
    }
    if (!any)
        return JOBQ_ERR_NONE;
    if (!op->def->remote) {
        snprintf(err, errlen, "opcode %u (%s): retry, retry_backoff and timeout apply to "
                              "worker opcodes only", idx, op->def->name);
        return JOBQ_ERR_BAD_ARGUMENT;
    }
    const msgpack_object *v = wire_map_get(o, "retry");
    int64_t retry = 0;
    double secs = 0;
    if (v && v->type != MSGPACK_OBJECT_NIL &&
        (!wire_get_int(v, &retry) || retry < 0 || retry > JQ_MAX_RETRY)) {
        snprintf(err, errlen, "opcode %u (%s): 'retry' must be an integer from 0 to %d", idx,
                 op->def->name, JQ_MAX_RETRY);
        return JOBQ_ERR_BAD_ARGUMENT;
    }
    v = wire_map_get(o, "retry_backoff");
    if (v && v->type != MSGPACK_OBJECT_NIL &&
        (!wire_get_number(v, &secs) || !(secs >= 0 && secs <= JQ_MAX_BACKOFF_S))) {
        snprintf(err, errlen, "opcode %u (%s): 'retry_backoff' must be a number of seconds "
                              "from 0 to %d", idx, op->def->name, JQ_MAX_BACKOFF_S);
        return JOBQ_ERR_BAD_ARGUMENT;
    }
    v = wire_map_get(o, "timeout");
    if (v && v->type != MSGPACK_OBJECT_NIL &&
        (!wire_get_number(v, &secs) || !(secs > 0 && secs <= JQ_MAX_TIMEOUT_S))) {
        snprintf(err, errlen, "opcode %u (%s): 'timeout' must be a number of seconds above 0 "
                              "and at most %d", idx, op->def->name, JQ_MAX_TIMEOUT_S);
        return JOBQ_ERR_BAD_ARGUMENT;
    }
    jq_op_read_run_options(op, o);
    return JOBQ_ERR_NONE;
}

static jobq_code_t parse_op(const jq_opset_t *set, const msgpack_object *o, unsigned idx,
                            bool allow_relative, uint64_t last_id, jq_op_t *op, char *err,
                            size_t errlen)
{
    if (o->type != MSGPACK_OBJECT_MAP) {
        snprintf(err, errlen, "opcode %u is not a map {op, args, priority, depends}", idx);
        return JOBQ_ERR_BAD_ARGUMENT;
    }
    const msgpack_object *name = wire_map_get(o, "op");
    if (!name || name->type != MSGPACK_OBJECT_STR || name->via.str.size == 0 ||
        name->via.str.size > JOBQ_MAX_OP_NAME) {
        snprintf(err, errlen, "opcode %u has no 'op' name", idx);
        return JOBQ_ERR_BAD_ARGUMENT;
    }
    const jq_opdef_t *def = jq_opset_find(set, name->via.str.ptr, name->via.str.size);
    if (!def) {
        snprintf(err, errlen, "opcode %u: unknown opcode '%.*s'", idx,
                 (int)name->via.str.size, name->via.str.ptr);
        return JOBQ_ERR_UNKNOWN_OPCODE;
    }
    jq_op_set_name(op, def, NULL, 0);
    const msgpack_object *args = wire_map_get(o, "args");
    msgpack_object empty = {.type = MSGPACK_OBJECT_MAP};
    if (!args || args->type == MSGPACK_OBJECT_NIL)
        args = &empty;
    if (args->type != MSGPACK_OBJECT_MAP) {
        snprintf(err, errlen, "opcode %u (%s): 'args' must be a map", idx, op->def->name);
        return JOBQ_ERR_BAD_ARGUMENT;
    }
    jobq_code_t rc = check_arg_names(op->def, args, idx, err, errlen);
    if (rc != JOBQ_ERR_NONE)
        return rc;
    char why[256];
    if (op->def->validate && op->def->validate(args, why, sizeof why) < 0) {
        snprintf(err, errlen, "opcode %u (%s): %s", idx, op->def->name, why);
        return JOBQ_ERR_BAD_ARGUMENT;
    }
    int64_t prio = JQ_PRIO_DEFAULT;
    const msgpack_object *po = wire_map_get(o, "priority");
    if (po && po->type != MSGPACK_OBJECT_NIL) {
        int rc = jq_priority_parse(po, &prio);
        if (rc == -1) {
            snprintf(err, errlen, "opcode %u: priority must be an integer (-10, 0 or 10)", idx);
            return JOBQ_ERR_BAD_ARGUMENT;
        }
        if (rc < 0) {
            snprintf(err, errlen, "opcode %u has invalid priority, allowed are -10, 0, 10", idx);
            return JOBQ_ERR_INVALID_PRIORITY;
        }
    }
    op->priority = op->input_priority = (int8_t)prio;
    rc = parse_run_options(o, idx, op, err, errlen);
    if (rc != JOBQ_ERR_NONE)
        return rc;
    const msgpack_object *deps = wire_map_get(o, "depends");
    if (deps) {
        rc = parse_depends(deps, allow_relative, last_id, op, err, errlen, idx);
        if (rc != JOBQ_ERR_NONE)
            return rc;
    }
    char summary[128];
    if (op->def->summarize)
        op->def->summarize(args, summary, sizeof summary);
    else
        snprintf(summary, sizeof summary, "%s", op->def->name);
    if (jq_blob_pack_object(&op->args, args) < 0 || !(op->summary = strdup(summary))) {
        snprintf(err, errlen, "out of memory");
        return JOBQ_ERR_INTERNAL;
    }
    op->status = JQ_QUEUED;
    return JOBQ_ERR_NONE;
}

jobq_code_t jq_jobspec_parse(const jq_opset_t *set, const msgpack_object *ops,
                             bool allow_relative, uint64_t last_id, int64_t now,
                             jq_job_t **out, char *err, size_t errlen)
{
    *out = NULL;
    if (!ops || ops->type != MSGPACK_OBJECT_ARRAY) {
        snprintf(err, errlen, "'ops' must be a list of opcodes");
        return JOBQ_ERR_BAD_ARGUMENT;
    }
    if (ops->via.array.size == 0) {
        snprintf(err, errlen, "A job needs at least one opcode");
        return JOBQ_ERR_BAD_ARGUMENT;
    }
    if (ops->via.array.size > JOBQ_MAX_OPS_PER_JOB) {
        snprintf(err, errlen, "a job may have at most %d opcodes", JOBQ_MAX_OPS_PER_JOB);
        return JOBQ_ERR_BAD_ARGUMENT;
    }
    jq_job_t *job = jq_job_new(0, ops->via.array.size, now);
    if (!job) {
        snprintf(err, errlen, "out of memory");
        return JOBQ_ERR_INTERNAL;
    }
    for (uint32_t i = 0; i < job->nops; i++) {
        jobq_code_t rc = parse_op(set, &ops->via.array.ptr[i], i, allow_relative, last_id,
                                  &job->ops[i], err, errlen);
        if (rc != JOBQ_ERR_NONE) {
            jq_job_destroy(&job);
            return rc;
        }
    }
    *out = job;
    return JOBQ_ERR_NONE;
}

int jq_jobspec_resolve(jq_job_t *job, uint64_t id, const uint64_t *prev_ids,
                       size_t nprev, char *err, size_t errlen)
{
    for (uint32_t i = 0; i < job->nops; i++)
        for (uint8_t k = 0; k < job->ops[i].ndeps; k++) {
            jq_dep_t *dep = &job->ops[i].deps[k];
            if (dep->job_id > 0)
                continue;
            uint64_t back = 0 - (uint64_t)dep->job_id; /* no signed overflow at INT64_MIN */
            if (back > nprev || prev_ids[back - 1] == 0) {
                snprintf(err, errlen, "Unable to resolve relative job ID %lld",
                         (long long)dep->job_id);
                return -1;
            }
            dep->job_id = (int64_t)prev_ids[back - 1];
        }
    job->id = id;
    return 0;
}
