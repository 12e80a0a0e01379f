/* test_worker_api.c: libjobq's worker API (clients/jobq_worker.c) against
 * a fake daemon: a ROUTER on a private ipc path, driven from the test's
 * own thread between calls of jobq_worker_poll (so no thread and no
 * sleep: every wait is a bounded poll).
 *
 * Scenario: the hello carries the declarations and the capacity; a
 * welcome with a short heartbeat and lease; an assign is delivered with
 * its arguments as JSON values, JSON text and msgpack; feedback and done
 * go out with the lease; a cancel marks the lease; heartbeats flow while
 * the fake is quiet; a revoke ends a lease and the library refuses to
 * send for it; silence for the lease time makes the worker reconnect with
 * a new hello and revoke what it held; a `disconnect` from the daemon does
 * the same at once; a refused hello is fatal; destroy says disconnect. */
#include <setjmp.h>
#include <stdarg.h>
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

typedef struct {
    char dir[64];
    char endpoint[128];
    void *ctx;
    void *router;
    zmq_msg_t rid;      /* routing id of the last message's sender */
    bool have_rid;
    zmq_msg_t body;     /* the last message: upk's strings point into it */
    msgpack_unpacked upk;
} fake_t;

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void fake_start(fake_t *f)
{
    memset(f, 0, sizeof *f);
    snprintf(f->dir, sizeof f->dir, "/tmp/jobq-wtest-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    snprintf(f->endpoint, sizeof f->endpoint, "ipc://%s/workers.sock", f->dir);
    f->ctx = zmq_ctx_new();
    f->router = zmq_socket(f->ctx, ZMQ_ROUTER);
    int linger = 0;
    zmq_setsockopt(f->router, ZMQ_LINGER, &linger, sizeof linger);
    assert_int_equal(zmq_bind(f->router, f->endpoint), 0);
    msgpack_unpacked_init(&f->upk);
    zmq_msg_init(&f->body);
}

static void fake_stop(fake_t *f)
{
    if (f->have_rid)
        zmq_msg_close(&f->rid);
    msgpack_unpacked_destroy(&f->upk);
    zmq_msg_close(&f->body);
    zmq_close(f->router);
    zmq_ctx_term(f->ctx);
    char sock[128];
    snprintf(sock, sizeof sock, "%s/workers.sock", f->dir);
    unlink(sock);
    rmdir(f->dir);
}

/* Receives the next message from the worker within timeout_ms while
 * driving the worker (its events are collected in evs, up to 16).
 * Returns the message's type ("" on timeout); the map is in f->upk. */
static const char *fake_recv(fake_t *f, jobq_worker_t *w, int timeout_ms,
                             jobq_worker_event_t *evs, int *nevs)
{
    int64_t deadline = now_ms() + timeout_ms;
    while (now_ms() < deadline) {
        zmq_pollitem_t item = {.socket = f->router, .events = ZMQ_POLLIN};
        if (zmq_poll(&item, 1, 0) == 1) {
            if (f->have_rid)
                zmq_msg_close(&f->rid);
            zmq_msg_init(&f->rid);
            f->have_rid = true;
            assert_true(zmq_msg_recv(&f->rid, f->router, 0) >= 0);
            zmq_msg_close(&f->body);
            zmq_msg_init(&f->body);
            assert_true(zmq_msg_recv(&f->body, f->router, 0) >= 0);
            size_t off = 0;
            assert_int_equal(msgpack_unpack_next(&f->upk, zmq_msg_data(&f->body),
                                                 zmq_msg_size(&f->body), &off),
                             MSGPACK_UNPACK_SUCCESS);
            const msgpack_object *t = wire_map_get(&f->upk.data, "type");
            assert_non_null(t);
            static char type[32];
            snprintf(type, sizeof type, "%.*s", (int)t->via.str.size, t->via.str.ptr);
            return type;
        }
        if (!w) {
            zmq_poll(&item, 1, 5);
            continue;
        }
        jobq_worker_event_t ev;
        int rc = jobq_worker_poll(w, 5, &ev);
        assert_true(rc >= 0);
        if (rc == 1 && evs) {
            assert_true(*nevs < 16);
            evs[(*nevs)++] = ev; /* pointers valid until the next poll: copy scalars only */
        }
    }
    return "";
}

/* Receives the next message that is not a heartbeat (which may come
 * any time: the test is slow under valgrind) and checks its type. */
static void fake_expect(fake_t *f, jobq_worker_t *w, int timeout_ms, const char *want)
{
    int64_t deadline = now_ms() + timeout_ms;
    const char *type;
    do
        type = fake_recv(f, w, (int)(deadline - now_ms()), NULL, NULL);
    while (strcmp(type, "heartbeat") == 0 && now_ms() < deadline);
    assert_string_equal(type, want);
}

/* Sends a message (a JSON object written as text, "v" added) to the
 * sender of the last message received. */
static void fake_send(fake_t *f, const char *json)
{
    json_error_t err;
    json_t *m = json_loads(json, 0, &err);
    assert_non_null(m);
    json_object_set_new(m, "v", json_integer(1));
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    /* Pack by hand: the test links only the public library. */
    msgpack_pack_map(&pk, json_object_size(m));
    const char *key;
    json_t *val;
    json_object_foreach(m, key, val) {
        wire_pack_cstr(&pk, key);
        switch (json_typeof(val)) {
        case JSON_INTEGER:
            msgpack_pack_int64(&pk, json_integer_value(val));
            break;
        case JSON_REAL:
            msgpack_pack_double(&pk, json_real_value(val));
            break;
        case JSON_STRING:
            wire_pack_cstr(&pk, json_string_value(val));
            break;
        case JSON_NULL:
            msgpack_pack_nil(&pk);
            break;
        case JSON_OBJECT: { /* args: one level of string and integer values */
            msgpack_pack_map(&pk, json_object_size(val));
            const char *k2;
            json_t *v2;
            json_object_foreach(val, k2, v2) {
                wire_pack_cstr(&pk, k2);
                if (json_is_integer(v2))
                    msgpack_pack_int64(&pk, json_integer_value(v2));
                else
                    wire_pack_cstr(&pk, json_string_value(v2));
            }
            break;
        }
        default:
            fail_msg("fake_send: unsupported value for %s", key);
        }
    }
    zmq_msg_t copy;
    zmq_msg_init(&copy);
    zmq_msg_copy(&copy, &f->rid);
    assert_true(zmq_msg_send(&copy, f->router, ZMQ_SNDMORE) >= 0);
    assert_true(zmq_send(f->router, sb.data, sb.size, 0) >= 0);
    msgpack_sbuffer_destroy(&sb);
    json_decref(m);
}

static int64_t get_int(fake_t *f, const char *key)
{
    int64_t v = -1;
    assert_true(wire_get_int(wire_map_get(&f->upk.data, key), &v));
    return v;
}

/* Polls the worker until an event of type comes (within timeout_ms). */
static void expect_event(jobq_worker_t *w, jobq_worker_event_type_t type, int timeout_ms,
                         jobq_worker_event_t *ev)
{
    int64_t deadline = now_ms() + timeout_ms;
    while (now_ms() < deadline) {
        int rc = jobq_worker_poll(w, 20, ev);
        assert_true(rc >= 0);
        if (rc == 1 && ev->type == type)
            return;
    }
    fail_msg("no event of type %d within %d ms", (int)type, timeout_ms);
}

static jobq_worker_t *new_worker(fake_t *f)
{
    jobq_worker_t *w = jobq_worker_new(f->endpoint, "unit", 2);
    assert_non_null(w);
    json_error_t err;
    json_t *decl = json_loads("{\"description\": \"d\", \"timeout\": 30, \"args\": "
                              "[{\"name\": \"x\", \"type\": \"integer\", \"required\": true}]}",
                              0, &err);
    assert_int_equal(jobq_worker_add_opcode(w, "t.one", decl), 0);
    assert_int_equal(jobq_worker_add_opcode(w, "t.two", NULL), 0);
    json_decref(decl);
    return w;
}

static void test_declarations_are_checked(void **state)
{
    (void)state;
    jobq_worker_t *w = jobq_worker_new("ipc:///nonexistent/x.sock", NULL, 1);
    assert_non_null(w);
    assert_int_equal(jobq_worker_add_opcode(w, "bad name", NULL), -1);
    assert_int_equal(jobq_worker_status(w), JOBQ_ERR_BAD_ARGUMENT);
    json_error_t err;
    json_t *d = json_loads("{\"timout\": 3}", 0, &err);
    assert_int_equal(jobq_worker_add_opcode(w, "a", d), -1);
    assert_non_null(strstr(jobq_worker_reason(w), "timout"));
    json_decref(d);
    d = json_loads("{\"args\": [{\"type\": \"string\"}]}", 0, &err);
    assert_int_equal(jobq_worker_add_opcode(w, "a", d), -1);
    json_decref(d);
    assert_int_equal(jobq_worker_connect(w), -1); /* no opcodes */
    assert_int_equal(jobq_worker_add_opcode(w, "a", NULL), 0);
    assert_int_equal(jobq_worker_add_opcode(w, "a", NULL), -1); /* twice */
    jobq_worker_destroy(&w);
    assert_null(w);
    assert_null(jobq_worker_new("ipc:///x", NULL, 0));
    assert_null(jobq_worker_new("nonsense", NULL, 1));
    assert_null(jobq_worker_new("tcp://no-port", NULL, 1));
    assert_null(jobq_worker_new("ipc:///x", NULL, JOBQ_WORKER_MAX_CAPACITY + 1));
}

static void test_default_endpoint(void **state)
{
    (void)state;
    char buf[256];
    setenv("JOBQ_WORKER_ENDPOINT", "tcp://127.0.0.1:1", 1);
    jobq_worker_default_endpoint(buf, sizeof buf);
    assert_string_equal(buf, "tcp://127.0.0.1:1");
    unsetenv("JOBQ_WORKER_ENDPOINT");
    jobq_worker_default_endpoint(buf, sizeof buf);
    assert_true(strncmp(buf, "ipc://", 6) == 0);
    assert_non_null(strstr(buf, "/workers.sock"));
}

static void test_session(void **state)
{
    (void)state;
    fake_t f;
    fake_start(&f);
    jobq_worker_t *w = new_worker(&f);
    assert_int_equal(jobq_worker_connect(w), 0);

    /* hello */
    fake_expect(&f, w, 5000, "hello");
    assert_int_equal(get_int(&f, "capacity"), 2);
    const msgpack_object *ops = wire_map_get(&f.upk.data, "opcodes");
    assert_non_null(ops);
    assert_int_equal(ops->type, MSGPACK_OBJECT_ARRAY);
    assert_int_equal(ops->via.array.size, 2);
    assert_true(wire_str_eq(wire_map_get(&ops->via.array.ptr[0], "name"), "t.one"));
    assert_non_null(wire_map_get(&ops->via.array.ptr[0], "args"));
    assert_true(wire_str_eq(wire_map_get(&f.upk.data, "name"), "unit"));

    /* welcome: heartbeat 0.1 s, lease 0.6 s */
    fake_send(&f, "{\"type\": \"welcome\", \"worker\": 9, \"heartbeat\": 0.1, \"lease\": 0.6}");
    jobq_worker_event_t ev;
    expect_event(w, JOBQ_WORKER_EV_WELCOME, 2000, &ev);
    assert_int_equal(ev.worker_id, 9);
    assert_true(jobq_worker_ready(w));
    assert_non_null(jobq_worker_socket(w));

    /* assign */
    fake_send(&f, "{\"type\": \"assign\", \"job\": 5, \"op\": 1, \"attempt\": 2, \"opcode\": "
                  "\"t.one\", \"args\": {\"x\": 7, \"s\": \"hi\"}, \"priority\": -10, "
                  "\"timeout\": 30}");
    expect_event(w, JOBQ_WORKER_EV_ASSIGN, 2000, &ev);
    jobq_lease_t l = ev.lease;
    assert_int_equal(l.job, 5);
    assert_int_equal(l.op, 1);
    assert_int_equal(l.attempt, 2);
    assert_string_equal(ev.opcode, "t.one");
    assert_int_equal(ev.priority, -10);
    assert_true(ev.timeout == 30);
    assert_int_equal(json_integer_value(json_object_get(ev.args, "x")), 7);
    assert_string_equal(ev.args_json, "{\"x\":7,\"s\":\"hi\"}");
    assert_null(ev.args_error);
    assert_true(ev.args_msgpack_size > 0);
    assert_int_equal(((const unsigned char *)ev.args_msgpack)[0], 0x82); /* fixmap of 2 */
    assert_int_equal(jobq_worker_lease_state(w, &l), JOBQ_LEASE_RUNNING);
    assert_int_equal(jobq_worker_leases(w), 1);

    /* feedback: bad bytes become '?', long messages are cut */
    char big[5000];
    memset(big, 'a', sizeof big);
    jobq_feedback_entry_t entries[2] = {{"message", "ok\xff", 3}, {"stderr", big, sizeof big}};
    assert_int_equal(jobq_worker_feedback_entries(w, &l, entries, 2, 1000), 0);
    fake_expect(&f, w, 2000, "feedback");
    assert_int_equal(get_int(&f, "job"), 5);
    assert_int_equal(get_int(&f, "attempt"), 2);
    const msgpack_object *es = wire_map_get(&f.upk.data, "entries");
    assert_int_equal(es->via.array.size, 2);
    const msgpack_object *e0 = &es->via.array.ptr[0];
    assert_true(wire_str_eq(&e0->via.array.ptr[0], "message"));
    assert_true(wire_str_eq(&e0->via.array.ptr[1], "ok?"));
    assert_int_equal(es->via.array.ptr[1].via.array.ptr[1].via.str.size, JOBQ_MAX_LOG_MESSAGE);
    assert_int_equal(jobq_worker_feedback_entries(w, &l, entries, 0, 0), -1);

    /* cancel marks the lease; done sends and lets it go */
    fake_send(&f, "{\"type\": \"cancel\", \"job\": 5, \"op\": 1, \"attempt\": 2, \"reason\": "
                  "\"timeout\"}");
    expect_event(w, JOBQ_WORKER_EV_CANCEL, 2000, &ev);
    assert_string_equal(ev.reason, "timeout");
    assert_int_equal(jobq_worker_lease_state(w, &l), JOBQ_LEASE_CANCELED);
    json_t *result = json_pack("{s:i}", "n", 3);
    assert_int_equal(jobq_worker_done(w, &l, result, 1000), 0);
    json_decref(result);
    fake_expect(&f, w, 2000, "done");
    assert_true(wire_map_get(&f.upk.data, "ok")->via.boolean);
    assert_int_equal(jobq_worker_lease_state(w, &l), JOBQ_LEASE_NONE);
    assert_int_equal(jobq_worker_done(w, &l, NULL, 0), -1); /* not held any more */
    assert_int_equal(jobq_worker_status(w), JOBQ_ERR_BAD_ARGUMENT);

    /* heartbeats while nothing else is sent (the fake keeps the lease
     * alive by answering each with one of its own) */
    for (int i = 0; i < 3; i++) {
        assert_string_equal(fake_recv(&f, w, 1000, NULL, NULL), "heartbeat");
        fake_send(&f, "{\"type\": \"heartbeat\"}");
    }

    /* revoke: the lease is gone, nothing may be sent for it */
    fake_send(&f, "{\"type\": \"assign\", \"job\": 6, \"op\": 0, \"attempt\": 1, \"opcode\": "
                  "\"t.two\", \"args\": {}, \"priority\": 0, \"timeout\": null}");
    expect_event(w, JOBQ_WORKER_EV_ASSIGN, 2000, &ev);
    jobq_lease_t l6 = ev.lease;
    assert_true(ev.timeout == 0);
    fake_send(&f, "{\"type\": \"revoke\", \"job\": 6, \"op\": 0, \"attempt\": 1, \"reason\": "
                  "\"worker lost\"}");
    expect_event(w, JOBQ_WORKER_EV_REVOKE, 2000, &ev);
    assert_int_equal(jobq_worker_feedback(w, &l6, "message", "late", 0), -1);
    assert_int_equal(jobq_worker_fail(w, &l6, "late", 0), -1);

    /* silence for the lease time: a new connection says hello again, and
     * the lease the old one held is revoked */
    fake_send(&f, "{\"type\": \"assign\", \"job\": 7, \"op\": 0, \"attempt\": 1, \"opcode\": "
                  "\"t.two\", \"args\": {}, \"priority\": 0, \"timeout\": null}");
    expect_event(w, JOBQ_WORKER_EV_ASSIGN, 2000, &ev);
    jobq_lease_t l7 = ev.lease;
    jobq_worker_event_t evs[16];
    int nevs = 0;
    const char *type;
    int64_t t0 = now_ms();
    while (strcmp(type = fake_recv(&f, w, 3000, evs, &nevs), "heartbeat") == 0)
        ; /* the worker keeps talking; the fake says nothing */
    assert_string_equal(type, "hello");
    assert_true(now_ms() - t0 >= 500);
    bool disconnected = false, revoked = false;
    for (int i = 0; i < nevs; i++) {
        disconnected |= evs[i].type == JOBQ_WORKER_EV_DISCONNECTED;
        revoked |= evs[i].type == JOBQ_WORKER_EV_REVOKE && evs[i].lease.job == 7;
    }
    /* The events may still be queued: collect the rest. */
    while (!(disconnected && revoked)) {
        int rc = jobq_worker_poll(w, 0, &ev);
        assert_int_equal(rc, 1);
        disconnected |= ev.type == JOBQ_WORKER_EV_DISCONNECTED;
        revoked |= ev.type == JOBQ_WORKER_EV_REVOKE && ev.lease.job == 7;
    }
    assert_int_equal(jobq_worker_lease_state(w, &l7), JOBQ_LEASE_NONE);
    assert_false(jobq_worker_ready(w));

    /* the new connection is welcomed; then the daemon says disconnect:
     * hello again at once */
    fake_send(&f, "{\"type\": \"welcome\", \"worker\": 10, \"heartbeat\": 1, \"lease\": 5}");
    expect_event(w, JOBQ_WORKER_EV_WELCOME, 2000, &ev);
    assert_int_equal(ev.worker_id, 10);
    fake_send(&f, "{\"type\": \"disconnect\", \"reason\": \"stopping\"}");
    t0 = now_ms();
    nevs = 0;
    while (strcmp(type = fake_recv(&f, w, 2000, evs, &nevs), "heartbeat") == 0)
        ;
    assert_string_equal(type, "hello");
    assert_true(now_ms() - t0 < 1000);

    /* a refused hello is fatal */
    fake_send(&f, "{\"type\": \"error\", \"code\": \"BadArgument\", \"message\": \"no\"}");
    int64_t deadline = now_ms() + 2000;
    int rc;
    while ((rc = jobq_worker_poll(w, 20, &ev)) >= 0)
        assert_true(now_ms() < deadline);
    assert_int_equal(jobq_worker_status(w), JOBQ_ERR_BAD_ARGUMENT);
    assert_non_null(strstr(jobq_worker_reason(w), "refused the hello: no"));
    assert_int_equal(jobq_worker_timeout_ms(w), -1);
    jobq_worker_destroy(&w);
    fake_stop(&f);
}

static void test_destroy_says_disconnect(void **state)
{
    (void)state;
    fake_t f;
    fake_start(&f);
    jobq_worker_t *w = new_worker(&f);
    fake_expect(&f, w, 5000, "hello");
    fake_send(&f, "{\"type\": \"welcome\", \"worker\": 1, \"heartbeat\": 1, \"lease\": 5}");
    jobq_worker_event_t ev;
    expect_event(w, JOBQ_WORKER_EV_WELCOME, 2000, &ev);
    jobq_worker_destroy(&w);
    fake_expect(&f, NULL, 2000, "disconnect");
    fake_stop(&f);
}

/* The blocking loop: the callback sees the welcome and an assign, does
 * its work (feedback, done) and stops the loop. */
static int on_event(jobq_worker_t *w, const jobq_worker_event_t *ev, void *arg)
{
    int *seen = arg;
    if (ev->type == JOBQ_WORKER_EV_WELCOME) {
        (*seen)++;
        return 0;
    }
    if (ev->type != JOBQ_WORKER_EV_ASSIGN)
        return 0;
    (*seen)++;
    assert_int_equal(jobq_worker_tick(w), 0);
    assert_int_equal(jobq_worker_feedback(w, &ev->lease, "progress", "half", -1), 0);
    assert_int_equal(jobq_worker_fail(w, &ev->lease, "it broke", -1), 0);
    return 42;
}

static void test_run_loop(void **state)
{
    (void)state;
    fake_t f;
    fake_start(&f);
    jobq_worker_t *w = new_worker(&f);
    fake_expect(&f, w, 5000, "hello");
    fake_send(&f, "{\"type\": \"welcome\", \"worker\": 1, \"heartbeat\": 1, \"lease\": 5}");
    fake_send(&f, "{\"type\": \"assign\", \"job\": 1, \"op\": 0, \"attempt\": 1, \"opcode\": "
                  "\"t.two\", \"args\": {}, \"priority\": 0, \"timeout\": null}");
    int seen = 0;
    assert_int_equal(jobq_worker_run(w, on_event, &seen), 42);
    assert_int_equal(seen, 2);
    fake_expect(&f, NULL, 2000, "feedback");
    fake_expect(&f, NULL, 2000, "done");
    assert_false(wire_map_get(&f.upk.data, "ok")->via.boolean);
    assert_true(wire_str_eq(wire_map_get(&f.upk.data, "error"), "it broke"));
    jobq_worker_destroy(&w);
    fake_stop(&f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_declarations_are_checked),
        cmocka_unit_test(test_default_endpoint),
        cmocka_unit_test(test_session),
        cmocka_unit_test(test_destroy_says_disconnect),
        cmocka_unit_test(test_run_loop),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
