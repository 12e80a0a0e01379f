/* jworker.c: a minimal jobq worker on a raw DEALER socket (see jworker.h).
 * Every message is one msgpack map {v: 1, type: str, ...} in one frame. */
#include "jworker.h"

#include "bench.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

jw_t *jw_open(void *zctx, const char *endpoint)
{
    jw_t *w = calloc(1, sizeof *w);
    if (!w)
        return NULL;
    w->sock = zmq_socket(zctx, ZMQ_DEALER);
    if (!w->sock) {
        free(w);
        return NULL;
    }
    int linger = 0, hwm = 0;
    zmq_setsockopt(w->sock, ZMQ_LINGER, &linger, sizeof linger);
    zmq_setsockopt(w->sock, ZMQ_SNDHWM, &hwm, sizeof hwm);
    zmq_setsockopt(w->sock, ZMQ_RCVHWM, &hwm, sizeof hwm);
    if (bench_curve_apply(w->sock, endpoint, true) < 0 || zmq_connect(w->sock, endpoint) < 0) {
        zmq_close(w->sock);
        free(w);
        return NULL;
    }
    msgpack_sbuffer_init(&w->sb);
    msgpack_packer_init(&w->pk, &w->sb, msgpack_sbuffer_write);
    msgpack_unpacked_init(&w->up);
    zmq_msg_init(&w->frame);
    w->heartbeat = 1.0; /* the protocol's default until welcome says */
    return w;
}

void jw_close(jw_t **wp)
{
    jw_t *w = *wp;
    if (!w)
        return;
    zmq_close(w->sock);
    msgpack_sbuffer_destroy(&w->sb);
    msgpack_unpacked_destroy(&w->up);
    zmq_msg_close(&w->frame);
    free(w);
    *wp = NULL;
}

/* Starts a message of `extra` keys beside v and type. */
static msgpack_packer *begin(jw_t *w, const char *type, uint32_t extra)
{
    msgpack_sbuffer_clear(&w->sb);
    msgpack_pack_map(&w->pk, 2 + extra);
    wire_pack_cstr(&w->pk, "v");
    msgpack_pack_int(&w->pk, 1);
    wire_pack_cstr(&w->pk, "type");
    wire_pack_cstr(&w->pk, type);
    return &w->pk;
}

static int send_msg(jw_t *w)
{
    if (zmq_send(w->sock, w->sb.data, w->sb.size, 0) < 0) {
        snprintf(w->errbuf, sizeof w->errbuf, "send: %s", zmq_strerror(errno));
        return -1;
    }
    w->last_sent = bench_now();
    return 0;
}

int jw_hello(jw_t *w, const char *name, int capacity, const char *const *opcodes, int n)
{
    msgpack_packer *pk = begin(w, "hello", 3);
    wire_pack_cstr(pk, "name");
    wire_pack_cstr(pk, name);
    wire_pack_cstr(pk, "capacity");
    msgpack_pack_int(pk, capacity);
    wire_pack_cstr(pk, "opcodes");
    msgpack_pack_array(pk, (size_t)n);
    for (int i = 0; i < n; i++)
        wire_pack_cstr(pk, opcodes[i]);
    return send_msg(w);
}

int jw_register(jw_t *w, const char *name, int capacity, const char *const *opcodes, int n,
                int timeout_ms)
{
    if (jw_hello(w, name, capacity, opcodes, n) < 0)
        return -1;
    double end = bench_now() + timeout_ms / 1e3;
    for (;;) {
        int left = (int)((end - bench_now()) * 1e3);
        if (left <= 0) {
            snprintf(w->errbuf, sizeof w->errbuf, "no welcome within %d ms", timeout_ms);
            return -1;
        }
        jw_msg_t m;
        int r = jw_recv(w, &m, left);
        if (r < 0)
            return -1;
        if (r == 0)
            continue;
        if (m.type == JW_WELCOME)
            return 0;
        if (m.type == JW_ERROR || m.type == JW_DISCONNECT) {
            const msgpack_object *msg = wire_map_get(&w->up.data, "message");
            if (!msg)
                msg = m.reason;
            snprintf(w->errbuf, sizeof w->errbuf, "hello refused: %.*s",
                     msg && msg->type == MSGPACK_OBJECT_STR ? (int)msg->via.str.size : 0,
                     msg && msg->type == MSGPACK_OBJECT_STR ? msg->via.str.ptr : "");
            return -1;
        }
    }
}

static uint64_t get_u64(const msgpack_object *map, const char *key)
{
    int64_t v;
    return wire_get_int(wire_map_get(map, key), &v) && v > 0 ? (uint64_t)v : 0;
}

int jw_recv(jw_t *w, jw_msg_t *m, int timeout_ms)
{
    if (timeout_ms != 0) {
        zmq_pollitem_t it = {.socket = w->sock, .events = ZMQ_POLLIN};
        if (zmq_poll(&it, 1, timeout_ms) <= 0)
            return 0;
    }
    zmq_msg_close(&w->frame);
    zmq_msg_init(&w->frame);
    if (zmq_msg_recv(&w->frame, w->sock, ZMQ_DONTWAIT) < 0)
        return 0;
    size_t off = 0;
    if (msgpack_unpack_next(&w->up, zmq_msg_data(&w->frame), zmq_msg_size(&w->frame), &off) !=
            MSGPACK_UNPACK_SUCCESS ||
        w->up.data.type != MSGPACK_OBJECT_MAP) {
        snprintf(w->errbuf, sizeof w->errbuf, "unreadable message (%zu bytes)",
                 zmq_msg_size(&w->frame));
        return -1;
    }
    const msgpack_object *root = &w->up.data;
    memset(m, 0, sizeof *m);
    const msgpack_object *t = wire_map_get(root, "type");
    static const struct {
        const char *name;
        jw_type_t type;
    } types[] = {{"welcome", JW_WELCOME}, {"assign", JW_ASSIGN},       {"cancel", JW_CANCEL},
                 {"revoke", JW_REVOKE},   {"heartbeat", JW_HEARTBEAT}, {"error", JW_ERROR},
                 {"disconnect", JW_DISCONNECT}};
    m->type = JW_OTHER;
    for (size_t i = 0; t && i < sizeof types / sizeof *types; i++)
        if (wire_str_eq(t, types[i].name))
            m->type = types[i].type;
    m->job = get_u64(root, "job");
    m->attempt = get_u64(root, "attempt");
    int64_t v;
    m->op = wire_get_int(wire_map_get(root, "op"), &v) && v >= 0 ? (uint32_t)v : 0;
    m->args = wire_map_get(root, "args");
    m->reason = wire_map_get(root, "reason");
    if (m->type == JW_WELCOME) {
        m->worker = wire_get_int(wire_map_get(root, "worker"), &v) ? v : 0;
        double d;
        if (wire_get_number(wire_map_get(root, "heartbeat"), &d) && d > 0)
            w->heartbeat = d;
        m->heartbeat = w->heartbeat;
        m->lease = wire_get_number(wire_map_get(root, "lease"), &d) ? d : 0;
    }
    return 1;
}

int jw_done(jw_t *w, uint64_t job, uint32_t op, uint64_t attempt, const msgpack_object *result)
{
    msgpack_packer *pk = begin(w, "done", 5);
    wire_pack_cstr(pk, "job");
    msgpack_pack_uint64(pk, job);
    wire_pack_cstr(pk, "op");
    msgpack_pack_uint32(pk, op);
    wire_pack_cstr(pk, "attempt");
    msgpack_pack_uint64(pk, attempt);
    wire_pack_cstr(pk, "ok");
    msgpack_pack_true(pk);
    wire_pack_cstr(pk, "result");
    if (result)
        msgpack_pack_object(pk, *result);
    else
        msgpack_pack_nil(pk);
    return send_msg(w);
}

int jw_heartbeat(jw_t *w)
{
    begin(w, "heartbeat", 0);
    return send_msg(w);
}

int jw_keepalive(jw_t *w, double now)
{
    return now - w->last_sent >= w->heartbeat ? jw_heartbeat(w) : 0;
}

int jw_disconnect(jw_t *w)
{
    begin(w, "disconnect", 0);
    return send_msg(w);
}
