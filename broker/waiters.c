/* waiters.c: parked wait_for_job_change requests — a chained hash by job
 * id, and a heap ordered by the next time each needs the loop (keepalive
 * or deadline). Everything but jq_waiter_new/evaluate/collect runs on the
 * loop thread. */
#include "waiters.h"
#include "heap.h"
#include "mirror.h"
#include "wire.h"

#include <stdlib.h>
#include <string.h>

struct jq_waiters {
    jq_ring_t *ring;
    jq_waiters_hooks_t hooks;
    _Atomic uint64_t *count;  /* parked + in flight, shared with handlers */
    int64_t keepalive_us;
    jq_waiter_t **buckets;
    size_t nbuckets, n;
    jq_heap_t heap;           /* by next wake */
};

jq_waiter_t *jq_waiter_new(void)
{
    jq_waiter_t *w = calloc(1, sizeof *w);
    if (!w)
        return NULL;
    msgpack_sbuffer_init(&w->new_logs);
    zmq_msg_init(&w->rid);
    return w;
}

void jq_waiter_destroy(jq_waiter_t **wp)
{
    if (!wp || !*wp)
        return;
    jq_waiter_t *w = *wp;
    free(w->prev_info);
    free(w->request);
    jq_job_destroy(&w->mirror);
    msgpack_sbuffer_destroy(&w->new_logs);
    zmq_msg_close(&w->rid);
    free(w);
    *wp = NULL;
}

void jq_waiter_collect_logs(jq_waiter_t *w, const jq_job_t *job)
{
    /* Found without walking the entries the client has seen already. */
    uint32_t first_op, first;
    jq_job_log_find(job, w->prev_log_serial, &first_op, &first);
    for (uint32_t i = first_op; i < job->nops; i++)
        for (uint32_t k = i == first_op ? first : 0; k < job->ops[i].nlog; k++) {
            msgpack_sbuffer_write(&w->new_logs, job->ops[i].log[k].data, job->ops[i].log[k].len);
            w->nnew_logs++;
        }
}

static bool info_equal(const char *a, size_t alen, const char *b, size_t blen)
{
    msgpack_unpacked ua, ub;
    msgpack_unpacked_init(&ua);
    msgpack_unpacked_init(&ub);
    bool eq = msgpack_unpack_next(&ua, a, alen, NULL) == MSGPACK_UNPACK_SUCCESS &&
              msgpack_unpack_next(&ub, b, blen, NULL) == MSGPACK_UNPACK_SUCCESS &&
              msgpack_object_equal(ua.data, ub.data);
    msgpack_unpacked_destroy(&ua);
    msgpack_unpacked_destroy(&ub);
    return eq;
}

bool jq_waiter_evaluate(jq_waiter_t *w, const jq_job_t *job, msgpack_packer *pk)
{
    msgpack_sbuffer info;
    msgpack_sbuffer_init(&info);
    msgpack_packer ipk;
    msgpack_packer_init(&ipk, &info, msgpack_sbuffer_write);
    msgpack_pack_array(&ipk, w->nfields);
    for (unsigned f = 0; f < w->nfields; f++)
        jq_field_pack(&ipk, job, w->fields[f]);
    jq_status_t st = (jq_status_t)job->status;
    /* Canceling or final: "there will be no more changes" (Ganeti). */
    bool answer = w->nnew_logs > 0 ||
                  (st != JQ_QUEUED && st != JQ_WAITING && st != JQ_RUNNING) ||
                  !info_equal(info.data, info.size, w->prev_info, w->prev_info_len);
    if (answer) {
        msgpack_pack_array(pk, 2);
        pk->callback(pk->data, info.data, info.size);
        msgpack_pack_array(pk, w->nnew_logs);
        if (w->new_logs.size)
            pk->callback(pk->data, w->new_logs.data, w->new_logs.size);
    }
    msgpack_sbuffer_destroy(&info);
    return answer;
}

/* ---- heap by next wake ---- */

static int64_t wake_of(const jq_waiter_t *w)
{
    return w->next_keepalive < w->deadline ? w->next_keepalive : w->deadline;
}

static bool wakes_before(const void *a, const void *b)
{
    return wake_of(a) < wake_of(b);
}

static void waiter_moved(void *w, size_t index)
{
    ((jq_waiter_t *)w)->heap_index = index;
}

void jq_waiters_set_keepalive(jq_waiters_t *ws, int64_t keepalive_us)
{
    ws->keepalive_us = keepalive_us;
}

jq_waiters_t *jq_waiters_new(jq_ring_t *ring, const jq_waiters_hooks_t *hooks,
                             _Atomic uint64_t *count, int64_t keepalive_us)
{
    jq_waiters_t *ws = calloc(1, sizeof *ws);
    if (!ws)
        return NULL;
    ws->nbuckets = 4096;
    ws->buckets = calloc(ws->nbuckets, sizeof *ws->buckets);
    if (!ws->buckets) {
        free(ws);
        return NULL;
    }
    jq_heap_init(&ws->heap, wakes_before, waiter_moved);
    ws->ring = ring;
    ws->hooks = *hooks;
    ws->count = count;
    ws->keepalive_us = keepalive_us;
    return ws;
}

static void release(jq_waiters_t *ws, jq_waiter_t **w)
{
    if (ws->hooks.done)
        ws->hooks.done(ws->hooks.ctx, *w);
    atomic_fetch_sub(ws->count, 1);
    jq_waiter_destroy(w);
}

void jq_waiters_destroy(jq_waiters_t **wsp)
{
    if (!wsp || !*wsp)
        return;
    jq_waiters_t *ws = *wsp;
    jq_waiter_t *w;
    while ((w = jq_heap_pop(&ws->heap)))
        release(ws, &w);
    jq_heap_free(&ws->heap);
    free(ws->buckets);
    free(ws);
    *wsp = NULL;
}

static size_t bucket_of(const jq_waiters_t *ws, uint64_t job_id)
{
    return (size_t)((job_id * 0x9E3779B97F4A7C15ull) >> 32) & (ws->nbuckets - 1);
}

static int add(jq_waiters_t *ws, jq_waiter_t *w)
{
    if (jq_heap_push(&ws->heap, w) < 0)
        return -1;
    size_t b = bucket_of(ws, w->job_id);
    w->next_same_job = ws->buckets[b];
    ws->buckets[b] = w;
    return 0;
}

static void remove_waiter(jq_waiters_t *ws, jq_waiter_t *w)
{
    jq_waiter_t **pp = &ws->buckets[bucket_of(ws, w->job_id)];
    while (*pp != w)
        pp = &(*pp)->next_same_job;
    *pp = w->next_same_job;
    jq_heap_remove(&ws->heap, w->heap_index);
}

/* ---- answering ---- */

static void answer_with(jq_waiters_t *ws, jq_waiter_t *w, const char *what)
{
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    if (what) {
        wire_reply_keepalive(&pk, w->request_id);
    } else {
        wire_reply_ok_begin(&pk, w->request_id, true);
        wire_pack_cstr(&pk, "nochange");
    }
    ws->hooks.send(ws->hooks.ctx, w, sb.data, sb.size, !what);
    msgpack_sbuffer_destroy(&sb);
}

/* Evaluate and, when the rule says so, answer. True when answered. */
static bool try_answer(jq_waiters_t *ws, jq_waiter_t *w)
{
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    wire_reply_ok_begin(&pk, w->request_id, true);
    bool answered = jq_waiter_evaluate(w, w->mirror, &pk);
    if (answered)
        ws->hooks.send(ws->hooks.ctx, w, sb.data, sb.size, true);
    msgpack_sbuffer_destroy(&sb);
    return answered;
}

static int on_log(void *ctx, uint32_t op_index, const msgpack_object *entry)
{
    (void)op_index;
    jq_waiter_t *w = ctx;
    int64_t serial;
    if (!wire_get_int(&entry->via.array.ptr[0], &serial) || serial <= w->prev_log_serial)
        return 0;
    msgpack_packer pk;
    msgpack_packer_init(&pk, &w->new_logs, msgpack_sbuffer_write);
    msgpack_pack_object(&pk, *entry);
    w->nnew_logs++;
    return 0;
}

/* Apply one record (msgpack bytes) to the waiter's mirror. */
static int apply(jq_waiter_t *w, const char *record, size_t len)
{
    msgpack_unpacked up;
    msgpack_unpacked_init(&up);
    int rc = -1;
    if (msgpack_unpack_next(&up, record, len, NULL) == MSGPACK_UNPACK_SUCCESS)
        rc = jq_mirror_apply(w->mirror, &up.data, w->keep, on_log, w);
    msgpack_unpacked_destroy(&up);
    return rc;
}

/* The ring holds event bodies {seq, epoch, change}: apply the change. */
static void replay_event(void *ctx, const char *body, size_t len)
{
    jq_waiter_t *w = ctx;
    msgpack_unpacked up;
    msgpack_unpacked_init(&up);
    if (msgpack_unpack_next(&up, body, len, NULL) == MSGPACK_UNPACK_SUCCESS) {
        const msgpack_object *change = wire_map_get(&up.data, "change");
        if (change)
            jq_mirror_apply(w->mirror, change, w->keep, on_log, w);
    }
    msgpack_unpacked_destroy(&up);
}

jq_park_t jq_waiters_park(jq_waiters_t *ws, jq_waiter_t *w, int64_t now)
{
    if (!jq_ring_job_since(ws->ring, w->job_id, w->mirror->change_serial, replay_event, w))
        return JQ_PARK_RECHECK;
    if (try_answer(ws, w)) {
        release(ws, &w);
        return JQ_PARK_ANSWERED;
    }
    w->next_keepalive = now + ws->keepalive_us;
    if (add(ws, w) < 0) {
        answer_with(ws, w, NULL); /* out of memory: let the client ask again */
        release(ws, &w);
        return JQ_PARK_ANSWERED;
    }
    return JQ_PARK_PARKED;
}

void jq_waiters_on_change(jq_waiters_t *ws, uint64_t job_id, const char *record, size_t len)
{
    jq_waiter_t *w = ws->buckets[bucket_of(ws, job_id)];
    while (w) {
        jq_waiter_t *next = w->next_same_job;
        if (w->job_id == job_id && apply(w, record, len) > 0 && try_answer(ws, w)) {
            remove_waiter(ws, w);
            release(ws, &w);
        }
        w = next;
    }
}

int64_t jq_waiters_next_wake(jq_waiters_t *ws)
{
    jq_waiter_t *w = jq_heap_top(&ws->heap);
    return w ? wake_of(w) : INT64_MAX;
}

void jq_waiters_tick(jq_waiters_t *ws, int64_t now)
{
    jq_waiter_t *w;
    while ((w = jq_heap_top(&ws->heap)) && wake_of(w) <= now) {
        if (w->deadline <= now) {
            answer_with(ws, w, NULL);
            remove_waiter(ws, w);
            release(ws, &w);
            continue;
        }
        answer_with(ws, w, "keepalive");
        w->next_keepalive = now + ws->keepalive_us;
        jq_heap_fix(&ws->heap, w->heap_index);
    }
}

void jq_waiters_fail_all(jq_waiters_t *ws, jobq_code_t code, const char *message)
{
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    jq_waiter_t *w;
    while ((w = jq_heap_top(&ws->heap))) {
        msgpack_sbuffer_clear(&sb);
        msgpack_packer pk;
        msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
        wire_reply_error(&pk, w->request_id, true, code, message);
        ws->hooks.send(ws->hooks.ctx, w, sb.data, sb.size, true);
        remove_waiter(ws, w);
        release(ws, &w);
    }
    msgpack_sbuffer_destroy(&sb);
}
