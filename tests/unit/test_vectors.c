/* test_vectors.c: the golden protocol vectors of tests/vectors/ (see its
 * README.md) against the C code.
 *
 * - Decoding: every request vector goes through the daemon's
 *   wire_request_parse, every reply vector through wire_reply_parse, the
 *   event bodies and worker messages unpack to maps with the keys and
 *   value types docs/protocol.md gives them.
 * - Encoding: libjobq's client sends exactly the bytes of ping_request
 *   and submit_job_request (to a fake daemon: a ROUTER in a thread, which
 *   answers with the reply vectors, so libjobq reads them too), and
 *   libjobq's worker API sends exactly worker_hello, worker_feedback,
 *   worker_done_ok, worker_done_error, worker_heartbeat and
 *   worker_disconnect, while it reads the daemon's vectors (welcome,
 *   assign, cancel, revoke, error, disconnect) into the right events.
 *
 * The readable form (NAME.json) of a vector gives the values the C side
 * builds its messages from, so the key order there is the one compared. */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#include <cmocka.h>

#include "jobq.h"
#include "wire.h"

#ifndef JOBQ_VECTORS_DIR
#error "JOBQ_VECTORS_DIR must name tests/vectors"
#endif

typedef struct {
    char *data;
    size_t size;
} blob_t;

static blob_t load(const char *name, const char *ext)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s.%s", JOBQ_VECTORS_DIR, name, ext);
    FILE *f = fopen(path, "rb");
    if (!f)
        fail_msg("cannot open %s", path);
    blob_t b = {NULL, 0};
    size_t cap = 0;
    for (;;) {
        if (b.size == cap) {
            cap = cap ? cap * 2 : 4096;
            b.data = realloc(b.data, cap + 1);
            assert_non_null(b.data);
        }
        size_t n = fread(b.data + b.size, 1, cap - b.size, f);
        if (n == 0)
            break;
        b.size += n;
    }
    b.data[b.size] = '\0';
    fclose(f);
    return b;
}

static json_t *load_json(const char *name)
{
    blob_t b = load(name, "json");
    json_error_t err;
    json_t *j = json_loadb(b.data, b.size, 0, &err);
    if (!j)
        fail_msg("%s.json: %s", name, err.text);
    free(b.data);
    return j;
}

/* The vector NAME.msgpack unpacked into upk (one whole object). */
static blob_t unpack_vector(const char *name, msgpack_unpacked *upk)
{
    blob_t b = load(name, "msgpack");
    size_t off = 0;
    msgpack_unpacked_init(upk);
    assert_int_equal(msgpack_unpack_next(upk, b.data, b.size, &off), MSGPACK_UNPACK_SUCCESS);
    assert_int_equal(off, b.size);
    return b;
}

static void assert_same_bytes(const char *name, const void *data, size_t size)
{
    blob_t want = load(name, "msgpack");
    if (size != want.size || memcmp(data, want.data, size) != 0) {
        fprintf(stderr, "%s: got %zu bytes:", name, size);
        for (size_t i = 0; i < size; i++)
            fprintf(stderr, " %02x", ((const unsigned char *)data)[i]);
        fprintf(stderr, "\nwant %zu bytes:", want.size);
        for (size_t i = 0; i < want.size; i++)
            fprintf(stderr, " %02x", (unsigned char)want.data[i]);
        fprintf(stderr, "\n");
        fail_msg("%s: the C encoder's bytes differ from the vector", name);
    }
    free(want.data);
}

/* ------------------------------------------------------------------ */
/* Shapes: a map's key has a value of one of the msgpack types given. */

enum { T_UINT = 1, T_NINT = 2, T_FLOAT = 4, T_STR = 8, T_BOOL = 16, T_NIL = 32, T_ARRAY = 64,
       T_MAP = 128, T_ANY = 255 };

static int type_bit(const msgpack_object *o)
{
    switch (o->type) {
    case MSGPACK_OBJECT_POSITIVE_INTEGER: return T_UINT;
    case MSGPACK_OBJECT_NEGATIVE_INTEGER: return T_NINT;
    case MSGPACK_OBJECT_FLOAT32:
    case MSGPACK_OBJECT_FLOAT64: return T_FLOAT;
    case MSGPACK_OBJECT_STR: return T_STR;
    case MSGPACK_OBJECT_BOOLEAN: return T_BOOL;
    case MSGPACK_OBJECT_NIL: return T_NIL;
    case MSGPACK_OBJECT_ARRAY: return T_ARRAY;
    case MSGPACK_OBJECT_MAP: return T_MAP;
    default: return 0;
    }
}

typedef struct {
    const char *key;
    int types;
} shape_t;

/* Every key of shape is in map with an allowed type, and map has no other
 * key. */
static void check_shape(const char *what, const msgpack_object *map, const shape_t *shape)
{
    assert_int_equal(map->type, MSGPACK_OBJECT_MAP);
    size_t n = 0;
    for (const shape_t *s = shape; s->key; s++, n++) {
        const msgpack_object *v = wire_map_get(map, s->key);
        if (!v)
            fail_msg("%s: no key \"%s\"", what, s->key);
        if (!(type_bit(v) & s->types))
            fail_msg("%s: \"%s\" has the wrong type", what, s->key);
    }
    if (map->via.map.size != n)
        fail_msg("%s: %u keys, %zu expected", what, map->via.map.size, n);
}

static bool is_ts(const msgpack_object *o)
{
    return o->type == MSGPACK_OBJECT_NIL ||
           (o->type == MSGPACK_OBJECT_ARRAY && o->via.array.size == 2 &&
            o->via.array.ptr[0].type == MSGPACK_OBJECT_POSITIVE_INTEGER &&
            o->via.array.ptr[1].type == MSGPACK_OBJECT_POSITIVE_INTEGER);
}

/* ------------------------------------------------------------------ */
/* Decoding */

static void test_requests_parse(void **state)
{
    (void)state;
    static const struct {
        const char *name, *method;
        uint64_t id;
        const char *arg; /* an argument the request has, or NULL */
    } reqs[] = {{"ping_request", "ping", 1, NULL},
                {"submit_job_request", "submit_job", 2, "ops"}};
    for (size_t i = 0; i < sizeof reqs / sizeof reqs[0]; i++) {
        msgpack_unpacked upk;
        blob_t b = unpack_vector(reqs[i].name, &upk);
        wire_request_t req;
        char err[128] = "";
        assert_int_equal(wire_request_parse(&upk.data, &req, err, sizeof err), JOBQ_ERR_NONE);
        assert_true(req.has_id);
        assert_int_equal(req.id, reqs[i].id);
        assert_int_equal(req.method_len, strlen(reqs[i].method));
        assert_memory_equal(req.method, reqs[i].method, req.method_len);
        assert_non_null(req.args);
        if (reqs[i].arg)
            assert_non_null(wire_map_get(req.args, reqs[i].arg));
        msgpack_unpacked_destroy(&upk);
        free(b.data);
    }
    /* submit_job's arguments as documented. */
    msgpack_unpacked upk;
    blob_t b = unpack_vector("submit_job_request", &upk);
    const msgpack_object *args = wire_map_get(&upk.data, "args");
    check_shape("submit_job args", args,
                (shape_t[]){{"ops", T_ARRAY}, {"ignore_drain", T_BOOL}, {"token", T_STR}, {0}});
    const msgpack_object *op = &wire_map_get(args, "ops")->via.array.ptr[0];
    check_shape("submit_job opcode", op, (shape_t[]){{"op", T_STR}, {"args", T_MAP}, {0}});
    msgpack_unpacked_destroy(&upk);
    free(b.data);
}

static void test_replies_parse(void **state)
{
    (void)state;
    msgpack_unpacked upk;
    wire_reply_t rep;

    blob_t b = unpack_vector("ping_reply", &upk);
    assert_int_equal(wire_reply_parse(&upk.data, &rep), 0);
    assert_true(rep.has_id && rep.ok && !rep.keepalive);
    assert_int_equal(rep.id, 1);
    check_shape("ping result", rep.result,
                (shape_t[]){{"protocols", T_ARRAY}, {"token_window", T_UINT},
                            {"epoch", T_UINT}, {"publish", T_ARRAY}, {"workers", T_ARRAY},
                            {"version", T_STR}, {"protocol", T_UINT}, {"time", T_ARRAY}, {0}});
    assert_true(is_ts(wire_map_get(rep.result, "time")));
    msgpack_unpacked_destroy(&upk);
    free(b.data);

    b = unpack_vector("submit_job_reply", &upk);
    assert_int_equal(wire_reply_parse(&upk.data, &rep), 0);
    assert_true(rep.has_id && rep.ok);
    assert_int_equal(rep.id, 2);
    assert_int_equal(rep.result->type, MSGPACK_OBJECT_POSITIVE_INTEGER);
    assert_int_equal(rep.result->via.u64, 1);
    msgpack_unpacked_destroy(&upk);
    free(b.data);

    b = unpack_vector("error_reply", &upk);
    assert_int_equal(wire_reply_parse(&upk.data, &rep), 0);
    assert_true(rep.has_id && !rep.ok);
    assert_int_equal(rep.id, 3);
    assert_int_equal(rep.code, JOBQ_ERR_BAD_ARGUMENT);
    assert_int_equal(rep.message_len, strlen("A job needs at least one opcode"));
    assert_memory_equal(rep.message, "A job needs at least one opcode", rep.message_len);
    msgpack_unpacked_destroy(&upk);
    free(b.data);
}

/* The daemon's error reply encoder makes the error_reply vector. */
static void test_error_reply_encoder(void **state)
{
    (void)state;
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    wire_reply_error(&pk, 3, true, JOBQ_ERR_BAD_ARGUMENT, "A job needs at least one opcode");
    assert_same_bytes("error_reply", sb.data, sb.size);
    msgpack_sbuffer_destroy(&sb);
}

static void test_event_bodies(void **state)
{
    (void)state;
    msgpack_unpacked upk;
    blob_t b = unpack_vector("event_change", &upk);
    check_shape("event", &upk.data,
                (shape_t[]){{"seq", T_UINT}, {"epoch", T_UINT}, {"change", T_MAP}, {0}});
    const msgpack_object *ch = wire_map_get(&upk.data, "change");
    check_shape("change", ch,
                (shape_t[]){{"job", T_UINT}, {"serial", T_UINT}, {"kind", T_STR},
                            {"time", T_ARRAY}, {"status", T_STR}, {"priority", T_UINT | T_NINT},
                            {"received_ts", T_ARRAY | T_NIL}, {"start_ts", T_ARRAY | T_NIL},
                            {"end_ts", T_ARRAY | T_NIL}, {"ops", T_ARRAY}, {"log", T_ARRAY},
                            {"log_op", T_UINT | T_NIL}, {0}});
    assert_true(is_ts(wire_map_get(ch, "start_ts")) && is_ts(wire_map_get(ch, "end_ts")));
    const msgpack_object *ops = wire_map_get(ch, "ops");
    assert_int_equal(ops->via.array.size, 1);
    check_shape("change op", &ops->via.array.ptr[0],
                (shape_t[]){{"index", T_UINT}, {"status", T_STR}, {"priority", T_UINT | T_NINT},
                            {"start_ts", T_ARRAY | T_NIL}, {"exec_ts", T_ARRAY | T_NIL},
                            {"end_ts", T_ARRAY | T_NIL}, {"result", T_ANY}, {"attempt", T_UINT},
                            {"retries", T_UINT}, {"worker", T_STR | T_NIL}, {0}});
    msgpack_unpacked_destroy(&upk);
    free(b.data);

    b = unpack_vector("event_heartbeat", &upk);
    check_shape("heartbeat", &upk.data,
                (shape_t[]){{"seq", T_UINT}, {"epoch", T_UINT}, {"heartbeat", T_BOOL},
                            {"time", T_ARRAY}, {0}});
    msgpack_unpacked_destroy(&upk);
    free(b.data);
}

#define LEASE {"job", T_UINT}, {"op", T_UINT}, {"attempt", T_UINT}
#define HEAD {"v", T_UINT}, {"type", T_STR}

static void test_worker_message_shapes(void **state)
{
    (void)state;
    static const struct {
        const char *name, *type;
        shape_t shape[12];
    } msgs[] = {
        {"worker_hello", "hello", {HEAD, {"name", T_STR}, {"capacity", T_UINT}, {"opcodes", T_ARRAY}, {0}}},
        {"worker_welcome", "welcome", {HEAD, {"worker", T_UINT}, {"heartbeat", T_FLOAT}, {"lease", T_FLOAT}, {0}}},
        {"worker_assign", "assign", {HEAD, LEASE, {"opcode", T_STR}, {"args", T_MAP}, {"priority", T_UINT | T_NINT}, {"timeout", T_FLOAT | T_NIL}, {0}}},
        {"worker_feedback", "feedback", {HEAD, LEASE, {"entries", T_ARRAY}, {0}}},
        {"worker_done_ok", "done", {HEAD, LEASE, {"ok", T_BOOL}, {"result", T_ANY}, {0}}},
        {"worker_done_error", "done", {HEAD, LEASE, {"ok", T_BOOL}, {"error", T_STR}, {0}}},
        {"worker_cancel", "cancel", {HEAD, LEASE, {"reason", T_STR}, {0}}},
        {"worker_revoke", "revoke", {HEAD, LEASE, {"reason", T_STR}, {0}}},
        {"worker_heartbeat", "heartbeat", {HEAD, {0}}},
        {"worker_error", "error", {HEAD, LEASE, {"code", T_STR}, {"message", T_STR}, {0}}},
        {"worker_disconnect", "disconnect", {HEAD, {0}}},
        {"worker_disconnect_daemon", "disconnect", {HEAD, {"reason", T_STR}, {0}}},
    };
    for (size_t i = 0; i < sizeof msgs / sizeof msgs[0]; i++) {
        msgpack_unpacked upk;
        blob_t b = unpack_vector(msgs[i].name, &upk);
        check_shape(msgs[i].name, &upk.data, msgs[i].shape);
        int64_t v;
        assert_true(wire_get_int(wire_map_get(&upk.data, "v"), &v) && v == JOBQ_PROTOCOL_VERSION);
        assert_true(wire_str_eq(wire_map_get(&upk.data, "type"), msgs[i].type));
        msgpack_unpacked_destroy(&upk);
        free(b.data);
    }
    /* A feedback entry is [type, message], both str; an opcode
     * declaration is a map with a str name. */
    msgpack_unpacked upk;
    blob_t b = unpack_vector("worker_feedback", &upk);
    const msgpack_object *e = wire_map_get(&upk.data, "entries");
    for (uint32_t i = 0; i < e->via.array.size; i++) {
        const msgpack_object *x = &e->via.array.ptr[i];
        assert_true(x->type == MSGPACK_OBJECT_ARRAY && x->via.array.size == 2 &&
                    x->via.array.ptr[0].type == MSGPACK_OBJECT_STR &&
                    x->via.array.ptr[1].type == MSGPACK_OBJECT_STR);
    }
    msgpack_unpacked_destroy(&upk);
    free(b.data);
    b = unpack_vector("worker_hello", &upk);
    const msgpack_object *ops = wire_map_get(&upk.data, "opcodes");
    for (uint32_t i = 0; i < ops->via.array.size; i++)
        assert_true(wire_map_get(&ops->via.array.ptr[i], "name")->type == MSGPACK_OBJECT_STR);
    msgpack_unpacked_destroy(&upk);
    free(b.data);
}

/* ------------------------------------------------------------------ */
/* libjobq's client encoder, against a fake daemon thread */

typedef struct {
    char dir[64];
    char endpoint[128];
    void *ctx;
    int failures; /* requests that were not the vector's bytes */
    _Atomic int client_done; /* the client read its last reply: the socket may go
                                (closed with linger 0, it would drop a reply in flight) */
    char what[256];
} fake_daemon_t;

static void *fake_daemon(void *arg)
{
    fake_daemon_t *f = arg;
    void *router = zmq_socket(f->ctx, ZMQ_ROUTER);
    int linger = 0, rcvtimeo = 10000;
    zmq_setsockopt(router, ZMQ_LINGER, &linger, sizeof linger);
    zmq_setsockopt(router, ZMQ_RCVTIMEO, &rcvtimeo, sizeof rcvtimeo);
    zmq_bind(router, f->endpoint);
    /* Each request and the reply it gets. */
    static const char *const exchange[][2] = {{"ping_request", "ping_reply"},
                                              {"submit_job_request", "submit_job_reply"},
                                              {NULL, "error_reply"}};
    for (size_t i = 0; i < 3; i++) {
        zmq_msg_t rid, body;
        zmq_msg_init(&rid);
        zmq_msg_init(&body);
        if (zmq_msg_recv(&rid, router, 0) < 0 || zmq_msg_recv(&body, router, 0) < 0) {
            f->failures++;
            snprintf(f->what, sizeof f->what, "no request %zu", i + 1);
            zmq_msg_close(&rid);
            zmq_msg_close(&body);
            break;
        }
        if (exchange[i][0]) {
            blob_t want = load(exchange[i][0], "msgpack");
            if (want.size != zmq_msg_size(&body) ||
                memcmp(want.data, zmq_msg_data(&body), want.size) != 0) {
                f->failures++;
                snprintf(f->what, sizeof f->what, "%s: libjobq sent other bytes",
                         exchange[i][0]);
            }
            free(want.data);
        }
        blob_t reply = load(exchange[i][1], "msgpack");
        zmq_send(router, zmq_msg_data(&rid), zmq_msg_size(&rid), ZMQ_SNDMORE);
        zmq_send(router, reply.data, reply.size, 0);
        free(reply.data);
        zmq_msg_close(&rid);
        zmq_msg_close(&body);
    }
    for (int i = 0; i < 1000 && !atomic_load(&f->client_done); i++)
        usleep(10000);
    zmq_close(router);
    return NULL;
}

static void test_client_encoder(void **state)
{
    (void)state;
    fake_daemon_t f = {0};
    snprintf(f.dir, sizeof f.dir, "/tmp/jobq-vtest-XXXXXX");
    assert_non_null(mkdtemp(f.dir));
    snprintf(f.endpoint, sizeof f.endpoint, "ipc://%s/jobq.sock", f.dir);
    f.ctx = zmq_ctx_new();
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, fake_daemon, &f), 0);
    char path[128];
    snprintf(path, sizeof path, "%s/jobq.sock", f.dir);
    for (int i = 0; i < 500 && access(path, F_OK) != 0; i++)
        usleep(10000);

    jobq_client_t *c = jobq_client_new(f.endpoint);
    assert_non_null(c);
    json_t *ping = jobq_ping(c, 10000);
    assert_non_null(ping);
    assert_int_equal(json_integer_value(json_object_get(ping, "epoch")), 1795949438142817LL);
    json_decref(ping);

    json_t *req = load_json("submit_job_request");
    json_t *args = json_object_get(req, "args");
    uint64_t id = 0;
    assert_int_equal(jobq_submit_job_ex(c, json_object_get(args, "ops"), false,
                                        json_string_value(json_object_get(args, "token")), 0,
                                        &id, 10000),
                     0);
    assert_int_equal(id, 1);
    /* The third answer is the error vector: libjobq reads its code and
     * message. */
    int rc = jobq_submit_job(c, json_object_get(args, "ops"), false, &id, 10000);
    jobq_code_t status = jobq_client_status(c);
    bool reason_ok = strstr(jobq_client_reason(c), "A job needs at least one opcode") != NULL;
    atomic_store(&f.client_done, 1);
    json_decref(req);
    jobq_client_destroy(&c);
    pthread_join(th, NULL);
    zmq_ctx_term(f.ctx);
    unlink(path);
    rmdir(f.dir); /* before any assertion below can leave it behind */
    assert_int_equal(rc, -1);
    assert_int_equal(status, JOBQ_ERR_BAD_ARGUMENT);
    assert_true(reason_ok);
    if (f.failures)
        fail_msg("%s", f.what);
}

/* ------------------------------------------------------------------ */
/* libjobq's worker API, against a fake daemon driven from this thread */

typedef struct {
    char dir[64];
    char endpoint[128];
    void *ctx, *router;
    zmq_msg_t rid;
    bool have_rid;
} wfake_t;

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* The next message the worker sends that is not a heartbeat (unless
 * want_heartbeat), driving the worker meanwhile; compared with vector
 * name byte for byte. Events the worker delivers meanwhile go to *ev
 * (the last one) and *nev. */
static void wexpect(wfake_t *f, jobq_worker_t *w, const char *name, bool want_heartbeat,
                    jobq_worker_event_t *ev, int *nev)
{
    int64_t deadline = now_ms() + 10000;
    while (now_ms() < deadline) {
        zmq_pollitem_t item = {.socket = f->router, .events = ZMQ_POLLIN};
        if (zmq_poll(&item, 1, 0) == 1) {
            if (f->have_rid)
                zmq_msg_close(&f->rid);
            zmq_msg_init(&f->rid);
            f->have_rid = true;
            assert_true(zmq_msg_recv(&f->rid, f->router, 0) >= 0);
            zmq_msg_t body;
            zmq_msg_init(&body);
            assert_true(zmq_msg_recv(&body, f->router, 0) >= 0);
            blob_t hb = load("worker_heartbeat", "msgpack");
            bool is_hb = zmq_msg_size(&body) == hb.size &&
                         memcmp(zmq_msg_data(&body), hb.data, hb.size) == 0;
            free(hb.data);
            if (is_hb && !want_heartbeat) {
                zmq_msg_close(&body);
                continue;
            }
            assert_same_bytes(name, zmq_msg_data(&body), zmq_msg_size(&body));
            zmq_msg_close(&body);
            return;
        }
        jobq_worker_event_t e;
        int rc = w ? jobq_worker_poll(w, 5, &e) : (zmq_poll(&item, 1, 5), 0);
        assert_true(rc >= 0);
        if (rc == 1 && ev) {
            *ev = e;
            (*nev)++;
        }
    }
    fail_msg("no %s from the worker within 10 s", name);
}

static void wsend(wfake_t *f, const char *name)
{
    blob_t b = load(name, "msgpack");
    zmq_msg_t rid;
    zmq_msg_init(&rid);
    zmq_msg_copy(&rid, &f->rid);
    assert_true(zmq_msg_send(&rid, f->router, ZMQ_SNDMORE) >= 0);
    assert_int_equal(zmq_send(f->router, b.data, b.size, 0), (int)b.size);
    free(b.data);
}

/* Polls the worker until it delivers an event of type want (within 10 s). */
static jobq_worker_event_t wevent(jobq_worker_t *w, jobq_worker_event_type_t want)
{
    int64_t deadline = now_ms() + 10000;
    while (now_ms() < deadline) {
        jobq_worker_event_t e;
        int rc = jobq_worker_poll(w, 10, &e);
        assert_true(rc >= 0);
        if (rc == 1 && e.type == want)
            return e;
    }
    fail_msg("no worker event %d within 10 s", (int)want);
    return (jobq_worker_event_t){0};
}

static void test_worker_encoder(void **state)
{
    (void)state;
    wfake_t f = {0};
    snprintf(f.dir, sizeof f.dir, "/tmp/jobq-vtest-XXXXXX");
    assert_non_null(mkdtemp(f.dir));
    snprintf(f.endpoint, sizeof f.endpoint, "ipc://%s/workers.sock", f.dir);
    f.ctx = zmq_ctx_new();
    f.router = zmq_socket(f.ctx, ZMQ_ROUTER);
    int linger = 0;
    zmq_setsockopt(f.router, ZMQ_LINGER, &linger, sizeof linger);
    assert_int_equal(zmq_bind(f.router, f.endpoint), 0);

    /* The hello: name, capacity and the declarations of the vector. */
    json_t *hello = load_json("worker_hello");
    jobq_worker_t *w = jobq_worker_new(f.endpoint, json_string_value(json_object_get(hello, "name")),
                                       (int)json_integer_value(json_object_get(hello, "capacity")));
    assert_non_null(w);
    json_t *decl;
    size_t i;
    json_array_foreach(json_object_get(hello, "opcodes"), i, decl) {
        json_t *rest = json_deep_copy(decl);
        json_object_del(rest, "name");
        assert_int_equal(jobq_worker_add_opcode(w, json_string_value(json_object_get(decl, "name")),
                                                rest),
                         0);
        json_decref(rest);
    }
    json_decref(hello);
    assert_int_equal(jobq_worker_connect(w), 0);
    wexpect(&f, w, "worker_hello", false, NULL, NULL);

    /* welcome and assign are read into events. */
    wsend(&f, "worker_welcome");
    jobq_worker_event_t ev = wevent(w, JOBQ_WORKER_EV_WELCOME);
    assert_int_equal(ev.worker_id, 1);
    assert_true(ev.heartbeat == 1.0 && ev.lease_time == 5.0);
    wsend(&f, "worker_assign");
    ev = wevent(w, JOBQ_WORKER_EV_ASSIGN);
    jobq_lease_t lease = ev.lease;
    assert_true(lease.job == 1 && lease.op == 0 && lease.attempt == 1);
    assert_string_equal(ev.opcode, "vec.echo");
    assert_string_equal(ev.args_json, "{\"text\":\"hi\",\"count\":2}");
    assert_int_equal(json_integer_value(json_object_get(ev.args, "count")), 2);
    assert_true(ev.timeout == 60.0 && ev.priority == 0);

    /* feedback and done as the vectors. */
    json_t *fb = load_json("worker_feedback");
    json_t *entries = json_object_get(fb, "entries");
    jobq_feedback_entry_t fe[2];
    assert_int_equal(json_array_size(entries), 2);
    for (i = 0; i < 2; i++) {
        json_t *e = json_array_get(entries, i);
        fe[i].type = json_string_value(json_array_get(e, 0));
        fe[i].message = json_string_value(json_array_get(e, 1));
        fe[i].len = strlen(fe[i].message);
    }
    assert_int_equal(jobq_worker_feedback_entries(w, &lease, fe, 2, 1000), 0);
    json_decref(fb);
    wexpect(&f, w, "worker_feedback", false, NULL, NULL);

    json_t *ok = load_json("worker_done_ok");
    assert_int_equal(jobq_worker_done(w, &lease, json_object_get(ok, "result"), 1000), 0);
    json_decref(ok);
    wexpect(&f, w, "worker_done_ok", false, NULL, NULL);

    /* The same lease again (a new assignment of it), failed this time. */
    wsend(&f, "worker_assign");
    ev = wevent(w, JOBQ_WORKER_EV_ASSIGN);
    json_t *bad = load_json("worker_done_error");
    assert_int_equal(jobq_worker_fail(w, &lease, json_string_value(json_object_get(bad, "error")),
                                      1000),
                     0);
    json_decref(bad);
    wexpect(&f, w, "worker_done_error", false, NULL, NULL);

    /* A heartbeat is the vector's bytes (one comes within the interval). */
    wexpect(&f, w, "worker_heartbeat", true, NULL, NULL);

    /* cancel, then revoke, of a held lease; an error naming it. */
    wsend(&f, "worker_assign");
    ev = wevent(w, JOBQ_WORKER_EV_ASSIGN);
    wsend(&f, "worker_cancel");
    ev = wevent(w, JOBQ_WORKER_EV_CANCEL);
    assert_string_equal(ev.reason, "canceled");
    assert_int_equal(jobq_worker_lease_state(w, &lease), JOBQ_LEASE_CANCELED);
    wsend(&f, "worker_revoke");
    ev = wevent(w, JOBQ_WORKER_EV_REVOKE);
    assert_non_null(strstr(ev.reason, "does not hold that lease"));
    assert_int_equal(jobq_worker_lease_state(w, &lease), JOBQ_LEASE_NONE);
    wsend(&f, "worker_error");
    ev = wevent(w, JOBQ_WORKER_EV_ERROR);
    assert_int_equal(ev.code, JOBQ_ERR_TOO_LARGE);
    assert_true(ev.has_lease && ev.lease.job == 1 && ev.lease.attempt == 1);
    assert_string_equal(ev.reason, "the worker's answer was too large");

    /* The daemon's disconnect: the worker gives the connection up and
     * says the same hello again on a new one. */
    wsend(&f, "worker_disconnect_daemon");
    ev = wevent(w, JOBQ_WORKER_EV_DISCONNECTED);
    assert_non_null(strstr(ev.reason, "does not know this worker"));
    wexpect(&f, w, "worker_hello", false, NULL, NULL);

    /* destroy says disconnect (a bare one). */
    wsend(&f, "worker_welcome");
    wevent(w, JOBQ_WORKER_EV_WELCOME);
    jobq_worker_destroy(&w);
    wexpect(&f, NULL, "worker_disconnect", false, NULL, NULL);

    if (f.have_rid)
        zmq_msg_close(&f.rid);
    zmq_close(f.router);
    zmq_ctx_term(f.ctx);
    char path[128];
    snprintf(path, sizeof path, "%s/workers.sock", f.dir);
    unlink(path);
    rmdir(f.dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_requests_parse),
        cmocka_unit_test(test_replies_parse),
        cmocka_unit_test(test_error_reply_encoder),
        cmocka_unit_test(test_event_bodies),
        cmocka_unit_test(test_worker_message_shapes),
        cmocka_unit_test(test_client_encoder),
        cmocka_unit_test(test_worker_encoder),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
