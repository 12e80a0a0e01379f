/* jclient.c: a minimal jobq client on a raw DEALER socket (no libjobq). */
#include "bench.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

jc_t *jc_open(void *zctx, const char *endpoint)
{
    return jc_open_ivl(zctx, endpoint, 0);
}

jc_t *jc_open_ivl(void *zctx, const char *endpoint, int reconnect_ivl_ms)
{
    jc_t *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->sock = zmq_socket(zctx, ZMQ_DEALER);
    if (!c->sock) {
        free(c);
        return NULL;
    }
    int linger = 0, hwm = 0;
    zmq_setsockopt(c->sock, ZMQ_LINGER, &linger, sizeof linger);
    zmq_setsockopt(c->sock, ZMQ_SNDHWM, &hwm, sizeof hwm);
    zmq_setsockopt(c->sock, ZMQ_RCVHWM, &hwm, sizeof hwm);
    if (reconnect_ivl_ms > 0)
        zmq_setsockopt(c->sock, ZMQ_RECONNECT_IVL, &reconnect_ivl_ms, sizeof reconnect_ivl_ms);
    if (bench_curve_apply(c->sock, endpoint, false) < 0 || zmq_connect(c->sock, endpoint) < 0) {
        zmq_close(c->sock);
        free(c);
        return NULL;
    }
    c->next_id = 1;
    msgpack_sbuffer_init(&c->req);
    msgpack_packer_init(&c->pk, &c->req, msgpack_sbuffer_write);
    msgpack_unpacked_init(&c->up);
    zmq_msg_init(&c->frame);
    return c;
}

void jc_close(jc_t **cp)
{
    jc_t *c = *cp;
    if (!c)
        return;
    zmq_close(c->sock);
    msgpack_sbuffer_destroy(&c->req);
    msgpack_unpacked_destroy(&c->up);
    zmq_msg_close(&c->frame);
    free(c);
    *cp = NULL;
}

msgpack_packer *jc_begin(jc_t *c, const char *method)
{
    msgpack_sbuffer_clear(&c->req);
    c->last_sent_id = c->next_id++;
    wire_request_begin(&c->pk, c->last_sent_id, method);
    return &c->pk;
}

int jc_send(jc_t *c)
{
    return zmq_send(c->sock, c->req.data, c->req.size, 0) < 0 ? -1 : 0;
}

int jc_recv(jc_t *c, int timeout_ms)
{
    zmq_pollitem_t item = {.socket = c->sock, .events = ZMQ_POLLIN};
    if (zmq_poll(&item, 1, timeout_ms) <= 0) {
        snprintf(c->errbuf, sizeof c->errbuf, "no reply within %d ms", timeout_ms);
        return -1;
    }
    /* The unpacked strings point into the frame: keep it until the next one. */
    zmq_msg_close(&c->frame);
    zmq_msg_init(&c->frame);
    if (zmq_msg_recv(&c->frame, c->sock, 0) < 0) {
        snprintf(c->errbuf, sizeof c->errbuf, "recv: %s", zmq_strerror(errno));
        return -1;
    }
    size_t off = 0, size = zmq_msg_size(&c->frame);
    int rc = msgpack_unpack_next(&c->up, zmq_msg_data(&c->frame), size, &off);
    if (rc != MSGPACK_UNPACK_SUCCESS || wire_reply_parse(&c->up.data, &c->rep) < 0) {
        snprintf(c->errbuf, sizeof c->errbuf, "unreadable reply (%zu bytes, unpack %d)", size,
                 rc);
        return -1;
    }
    return 0;
}

int jc_call(jc_t *c, int timeout_ms)
{
    if (jc_send(c) < 0) {
        snprintf(c->errbuf, sizeof c->errbuf, "send: %s", zmq_strerror(errno));
        return -1;
    }
    for (;;) {
        if (jc_recv(c, timeout_ms) < 0)
            return -1;
        if (c->rep.keepalive || !c->rep.has_id || c->rep.id != c->last_sent_id)
            continue; /* a stale reply to an earlier, timed-out request */
        if (!c->rep.ok) {
            snprintf(c->errbuf, sizeof c->errbuf, "%s: %.*s", jobq_code_name(c->rep.code),
                     (int)c->rep.message_len, c->rep.message ? c->rep.message : "");
            return -1;
        }
        return 0;
    }
}

void pack_delay_job(msgpack_packer *pk, double duration, long repeat)
{
    pack_delay_job_dep(pk, duration, repeat, 0);
}

void pack_delay_job_dep(msgpack_packer *pk, double duration, long repeat, uint64_t dep)
{
    msgpack_pack_array(pk, 1);
    msgpack_pack_map(pk, dep ? 3 : 2);
    wire_pack_cstr(pk, "op");
    wire_pack_cstr(pk, "test.delay");
    wire_pack_cstr(pk, "args");
    msgpack_pack_map(pk, repeat ? 2 : 1);
    wire_pack_cstr(pk, "duration");
    if (duration == (double)(long)duration)
        msgpack_pack_long(pk, (long)duration);
    else
        msgpack_pack_double(pk, duration);
    if (repeat) {
        wire_pack_cstr(pk, "repeat");
        msgpack_pack_long(pk, repeat);
    }
    if (dep) {
        wire_pack_cstr(pk, "depends");
        msgpack_pack_array(pk, 1);
        msgpack_pack_array(pk, 2);
        msgpack_pack_uint64(pk, dep);
        msgpack_pack_array(pk, 1);
        wire_pack_cstr(pk, "success");
    }
}

uint64_t jc_submit_delay(jc_t *c, double duration, long repeat)
{
    msgpack_packer *pk = jc_begin(c, "submit_job");
    msgpack_pack_map(pk, 1);
    wire_pack_cstr(pk, "ops");
    pack_delay_job(pk, duration, repeat);
    int64_t id;
    if (jc_call(c, 10000) < 0 || !wire_get_int(c->rep.result, &id))
        return 0;
    return (uint64_t)id;
}

long jc_submit_many_delay(jc_t *c, uint32_t n, double duration, long repeat)
{
    msgpack_packer *pk = jc_begin(c, "submit_many_jobs");
    msgpack_pack_map(pk, 1);
    wire_pack_cstr(pk, "jobs");
    msgpack_pack_array(pk, n);
    for (uint32_t i = 0; i < n; i++)
        pack_delay_job(pk, duration, repeat);
    if (jc_call(c, 60000) < 0 || c->rep.result->type != MSGPACK_OBJECT_ARRAY)
        return -1;
    long ok = 0;
    const msgpack_object_array *a = &c->rep.result->via.array;
    for (uint32_t i = 0; i < a->size; i++)
        if (a->ptr[i].type == MSGPACK_OBJECT_ARRAY && a->ptr[i].via.array.size == 2 &&
            a->ptr[i].via.array.ptr[0].type == MSGPACK_OBJECT_BOOLEAN &&
            a->ptr[i].via.array.ptr[0].via.boolean)
            ok++;
    return ok;
}

long jc_list(jc_t *c, const char *const *fields, unsigned nfields)
{
    msgpack_packer *pk = jc_begin(c, "query_jobs");
    msgpack_pack_map(pk, 1);
    wire_pack_cstr(pk, "fields");
    msgpack_pack_array(pk, nfields);
    for (unsigned i = 0; i < nfields; i++)
        wire_pack_cstr(pk, fields[i]);
    if (jc_call(c, 30000) < 0)
        return -1;
    const msgpack_object *rows = wire_map_get(c->rep.result, "rows");
    return rows && rows->type == MSGPACK_OBJECT_ARRAY ? (long)rows->via.array.size : -1;
}

long long jc_stat(jc_t *c, const char *key)
{
    msgpack_packer *pk = jc_begin(c, "stats");
    msgpack_pack_map(pk, 0);
    int64_t v;
    if (jc_call(c, 10000) < 0 || !wire_get_int(wire_map_get(c->rep.result, key), &v))
        return -1;
    return v;
}

long long jc_stat2(jc_t *c, const char *key, const char *sub)
{
    msgpack_packer *pk = jc_begin(c, "stats");
    msgpack_pack_map(pk, 0);
    int64_t v;
    if (jc_call(c, 10000) < 0)
        return -1;
    const msgpack_object *m = wire_map_get(c->rep.result, key);
    if (!m || m->type != MSGPACK_OBJECT_MAP)
        return -1;
    const msgpack_object *o = wire_map_get(m, sub);
    if (!o)
        return 0; /* absent from a by-status map: none */
    return wire_get_int(o, &v) ? v : -1;
}

int jc_store_stats(jc_t *c, store_stats_t *s)
{
    msgpack_packer *pk = jc_begin(c, "stats");
    msgpack_pack_map(pk, 0);
    if (jc_call(c, 10000) < 0)
        return -1;
    const msgpack_object *m = wire_map_get(c->rep.result, "store");
    if (!m || m->type != MSGPACK_OBJECT_MAP) {
        snprintf(c->errbuf, sizeof c->errbuf, "stats has no store map (jobqd before the store?)");
        return -1;
    }
    static const char *const keys[7] = {"commits", "fsyncs", "records", "failures",
                                        "bytes",   "queued", "durable"};
    long long *out[7] = {&s->commits, &s->fsyncs, &s->records, &s->failures,
                         &s->bytes,   &s->queued, &s->durable};
    for (int i = 0; i < 7; i++) {
        int64_t v = -1;
        if (!wire_get_int(wire_map_get(m, keys[i]), &v))
            v = -1;
        *out[i] = v;
    }
    const msgpack_object *sy = wire_map_get(m, "sync");
    s->sync[0] = '\0';
    if (sy && sy->type == MSGPACK_OBJECT_STR)
        snprintf(s->sync, sizeof s->sync, "%.*s", (int)sy->via.str.size, sy->via.str.ptr);
    const msgpack_object *lj = wire_map_get(c->rep.result, "live_jobs");
    int64_t v = -1;
    s->live_jobs = lj && wire_get_int(lj, &v) ? v : -1;
    return 0;
}

long long jc_sum_log_serial(jc_t *c)
{
    static const char *const fields[] = {"log_serial"};
    long long sum = 0;
    uint64_t after = 0;
    for (;;) {
        msgpack_packer *pk = jc_begin(c, "query_jobs");
        msgpack_pack_map(pk, 3);
        wire_pack_cstr(pk, "fields");
        msgpack_pack_array(pk, 2);
        wire_pack_cstr(pk, "id");
        wire_pack_cstr(pk, fields[0]);
        wire_pack_cstr(pk, "after_id");
        msgpack_pack_uint64(pk, after);
        wire_pack_cstr(pk, "limit");
        msgpack_pack_uint32(pk, 100000);
        if (jc_call(c, 30000) < 0)
            return -1;
        const msgpack_object *rows = wire_map_get(c->rep.result, "rows");
        const msgpack_object *more = wire_map_get(c->rep.result, "more");
        if (!rows || rows->type != MSGPACK_OBJECT_ARRAY)
            return -1;
        for (uint32_t i = 0; i < rows->via.array.size; i++) {
            const msgpack_object *r = &rows->via.array.ptr[i];
            int64_t id, s;
            if (r->type == MSGPACK_OBJECT_ARRAY && r->via.array.size == 2 &&
                wire_get_int(&r->via.array.ptr[0], &id) && wire_get_int(&r->via.array.ptr[1], &s)) {
                sum += s;
                after = (uint64_t)id;
            }
        }
        if (!more || more->type != MSGPACK_OBJECT_BOOLEAN || !more->via.boolean)
            return sum;
    }
}

int jc_ping(jc_t *c)
{
    msgpack_packer *pk = jc_begin(c, "ping");
    msgpack_pack_map(pk, 0);
    return jc_call(c, 200);
}

bool jc_wait_stat(jc_t *c, const char *key, long long want, double timeout)
{
    double end = bench_now() + timeout;
    for (;;) {
        long long v = jc_stat(c, key);
        if (v >= want)
            return true;
        if (bench_now() > end) {
            fprintf(stderr, "jobq-bench: stats %s stayed at %lld (waited for %lld)\n", key, v,
                    want);
            return false;
        }
        bench_sleep(0.05); /* poll interval */
    }
}
