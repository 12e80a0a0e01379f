/* handle_events.c: the methods of the event stream — wait_for_job_change
 * (first check here, then parked in the loop: waiters.h) and events_since
 * (served from the replay ring). */
#include "daemon.h"
#include "mirror.h"
#include "waiters.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static bool reserve_waiter(jq_daemon_t *d)
{
    uint64_t cur = atomic_load(&d->waiters);
    do {
        if (cur >= d->cfg.max_waiters)
            return false;
    } while (!atomic_compare_exchange_weak(&d->waiters, &cur, cur + 1));
    return true;
}

static jobq_code_t parse_wait(jq_call_t *c, jq_waiter_t *w, double *timeout)
{
    const msgpack_object *fo = wire_map_get(c->args, "fields");
    if (!fo || fo->type == MSGPACK_OBJECT_NIL) {
        w->fields[0] = JQ_F_STATUS;
        w->nfields = 1;
    } else if (fo->type != MSGPACK_OBJECT_ARRAY || fo->via.array.size > JQ_WAIT_MAX_FIELDS) {
        snprintf(c->err, c->errlen, "argument 'fields' must be a list of at most %d field names",
                 JQ_WAIT_MAX_FIELDS);
        return JOBQ_ERR_BAD_ARGUMENT;
    } else {
        for (uint32_t i = 0; i < fo->via.array.size; i++) {
            const msgpack_object *n = &fo->via.array.ptr[i];
            if (n->type != MSGPACK_OBJECT_STR) { /* a type error, not a name */
                snprintf(c->err, c->errlen, "argument 'fields' must be a list of field names");
                return JOBQ_ERR_BAD_ARGUMENT;
            }
            if (jq_field_parse(n->via.str.ptr, n->via.str.size, &w->fields[i]) < 0) {
                snprintf(c->err, c->errlen, "Unknown output fields selected: %.*s",
                         n->type == MSGPACK_OBJECT_STR ? wire_utf8_quote_len(n->via.str.ptr, n->via.str.size, 64) : 1,
                         n->type == MSGPACK_OBJECT_STR ? n->via.str.ptr : "?");
                return JOBQ_ERR_UNKNOWN_FIELD;
            }
            /* The waiter's copy keeps only what the watched fields show. */
            if (w->fields[i] == JQ_F_OPLOG)
                w->keep |= JQ_MIRROR_LOGS;
            else if (w->fields[i] == JQ_F_OPRESULT)
                w->keep |= JQ_MIRROR_RESULTS;
            else if (w->fields[i] == JQ_F_OPS)
                w->keep |= JQ_MIRROR_INPUT;
            else if (w->fields[i] == JQ_F_SUMMARY)
                w->keep |= JQ_MIRROR_SUMMARY;
        }
        w->nfields = fo->via.array.size;
    }
    int64_t serial = 0;
    if (jq_arg_int(c, "prev_log_serial", false, 0, UINT32_MAX, &serial) < 0)
        return JOBQ_ERR_BAD_ARGUMENT;
    w->prev_log_serial = (uint32_t)serial;
    *timeout = 60;
    const msgpack_object *to = wire_map_get(c->args, "timeout");
    if (to && to->type != MSGPACK_OBJECT_NIL &&
        (!wire_get_number(to, timeout) || *timeout < 0 || *timeout > JOBQ_MAX_WAIT_SECONDS)) {
        snprintf(c->err, c->errlen, "argument 'timeout' must be a number of seconds from 0 to %d",
                 JOBQ_MAX_WAIT_SECONDS);
        return JOBQ_ERR_BAD_ARGUMENT;
    }
    /* The client's previous info, normalised through msgpack: compared as
     * values, not bytes, so int widths and the like do not matter. */
    const msgpack_object *prev = wire_map_get(c->args, "prev_job_info");
    if (prev && prev->type != MSGPACK_OBJECT_NIL && prev->type != MSGPACK_OBJECT_ARRAY) {
        snprintf(c->err, c->errlen, "argument 'prev_job_info' must be a list of values or nil");
        return JOBQ_ERR_BAD_ARGUMENT;
    }
    msgpack_object nil = {.type = MSGPACK_OBJECT_NIL};
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_object(&pk, prev ? *prev : nil);
    jq_blob_t info = {0};
    if (sb.data)
        jq_blob_take(&info, &sb);
    w->prev_info = info.data;
    w->prev_info_len = info.len;
    if (!w->prev_info) {
        snprintf(c->err, c->errlen, "out of memory");
        return JOBQ_ERR_INTERNAL;
    }
    return JOBQ_ERR_NONE;
}

jobq_code_t jq_handle_wait_for_job_change(jq_call_t *c)
{
    jq_daemon_t *d = c->d;
    uint64_t id;
    if (jq_arg_job_id(c, "id", &id) < 0)
        return JOBQ_ERR_BAD_ARGUMENT;
    if (!reserve_waiter(d)) {
        snprintf(c->err, c->errlen, "%llu requests are already waiting (--max-waiters)",
                 (unsigned long long)d->cfg.max_waiters);
        return JOBQ_ERR_TOO_MANY_WAITERS;
    }
    jq_waiter_t *w = jq_waiter_new();
    double timeout = 0;
    jobq_code_t rc = w ? parse_wait(c, w, &timeout) : JOBQ_ERR_INTERNAL;
    if (rc == JOBQ_ERR_INTERNAL && !w)
        snprintf(c->err, c->errlen, "out of memory");
    if (rc != JOBQ_ERR_NONE) {
        jq_waiter_destroy(&w);
        atomic_fetch_sub(&d->waiters, 1);
        return rc;
    }
    w->job_id = id;
    w->request_id = c->request_id;

    /* The first check: the only time this request reads the table. */
    jq_shard_t *sh = jq_table_shard_for(d->table, id);
    jq_shard_rdlock(sh);
    const jq_job_t *job = jq_shard_find_any(sh, id);
    if (!job) {
        jq_shard_rdunlock(sh);
        /* Archived and out of memory, or unknown (Ganeti: None). Archived
         * jobs are final, so the rule answers at once. */
        char err[256] = "";
        jq_job_t *stored = jq_store_load_archived(d->store, id, err, sizeof err);
        if (!stored && err[0]) {
            jq_waiter_destroy(&w);
            atomic_fetch_sub(&d->waiters, 1);
            snprintf(c->err, c->errlen, "%s", err);
            return JOBQ_ERR_INTERNAL;
        }
        if (stored) {
            jq_waiter_collect_logs(w, stored);
            jq_waiter_evaluate(w, stored, c->pk);
            jq_job_destroy(&stored);
        } else {
            msgpack_pack_nil(c->pk);
        }
        jq_waiter_destroy(&w);
        atomic_fetch_sub(&d->waiters, 1);
        return JOBQ_ERR_NONE;
    }
    jq_waiter_collect_logs(w, job);
    bool answered = jq_waiter_evaluate(w, job, c->pk);
    bool shown = answered && jq_job_uncommitted(job);
    if (!answered)
        w->mirror = jq_mirror_new(job, w->keep);
    jq_shard_rdunlock(sh);
    if (shown) /* the answer waits for the commit of what it shows */
        jq_call_hold(c, sh);

    if (answered || !w->mirror || !(w->request = malloc(c->body_len))) {
        bool oom = !answered;
        jq_waiter_destroy(&w);
        atomic_fetch_sub(&d->waiters, 1);
        if (oom) {
            snprintf(c->err, c->errlen, "out of memory");
            return JOBQ_ERR_INTERNAL;
        }
        return JOBQ_ERR_NONE;
    }
    memcpy(w->request, c->body, c->body_len);
    w->request_len = c->body_len;
    w->deadline = jq_now_mono() + (int64_t)(timeout * 1e6);
    c->park = w; /* the loop answers it */
    return JOBQ_ERR_NONE;
}

jobq_code_t jq_handle_events_since(jq_call_t *c)
{
    jq_daemon_t *d = c->d;
    int64_t after, epoch = -1, limit = JOBQ_MAX_EVENTS_PER_REPLY;
    if (jq_arg_int(c, "after_seq", true, 0, INT64_MAX, &after) < 0 ||
        jq_arg_int(c, "epoch", false, 0, INT64_MAX, &epoch) < 0 ||
        jq_arg_int(c, "limit", false, 1, JOBQ_MAX_EVENTS_PER_REPLY, &limit) < 0)
        return JOBQ_ERR_BAD_ARGUMENT;
    msgpack_sbuffer events;
    msgpack_sbuffer_init(&events);
    msgpack_packer epk;
    msgpack_packer_init(&epk, &events, msgpack_sbuffer_write);
    size_t count = 0;
    bool more = false, too_old = epoch >= 0 && (uint64_t)epoch != d->epoch;
    uint64_t first = 0, last = 0;
    if (!too_old)
        too_old = jq_ring_since(d->ring, (uint64_t)after, (size_t)limit, JOBQ_MAX_REPLY_BYTES,
                                &epk, &count, &more, &first, &last) == JQ_RING_TOO_OLD;
    else
        jq_ring_since(d->ring, UINT64_MAX - 1, 0, 0, &epk, &count, &more, &first, &last);
    msgpack_pack_map(c->pk, 6);
    wire_pack_cstr(c->pk, "epoch");
    msgpack_pack_uint64(c->pk, d->epoch);
    wire_pack_cstr(c->pk, "first_seq");
    msgpack_pack_uint64(c->pk, first);
    wire_pack_cstr(c->pk, "last_seq");
    msgpack_pack_uint64(c->pk, last);
    wire_pack_cstr(c->pk, "too_old");
    if (too_old)
        msgpack_pack_true(c->pk);
    else
        msgpack_pack_false(c->pk);
    wire_pack_cstr(c->pk, "more");
    if (more)
        msgpack_pack_true(c->pk);
    else
        msgpack_pack_false(c->pk);
    wire_pack_cstr(c->pk, "events");
    if (too_old)
        msgpack_pack_array(c->pk, 0);
    else
        c->pk->callback(c->pk->data, events.data, events.size);
    msgpack_sbuffer_destroy(&events);
    return JOBQ_ERR_NONE;
}
