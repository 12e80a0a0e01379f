/* test_client_calls.c: libjobq's request/reply matching against a fake
 * daemon (a ROUTER socket on a private ipc path, served by a thread).
 *
 * Scenario: the first call (ping) gets no answer and times out; the fake
 * answers it only after the second call's request arrived, then sends a
 * keepalive for the second call, a frame that is not msgpack, and finally
 * the second call's answer. The second call must return its own answer.
 * A third call gets an error reply: status and reason must be the
 * daemon's code and message. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#include <cmocka.h>

#include "jobq.h"

typedef struct {
    char endpoint[256];
    void *ctx;
    void *router;
} fake_t;

/* Receives [routing id, body] and returns the request id. */
static uint64_t recv_request(fake_t *f, zmq_msg_t *rid, char *method, size_t mlen)
{
    zmq_msg_t body;
    zmq_msg_init(rid);
    zmq_msg_init(&body);
    assert_true(zmq_msg_recv(rid, f->router, 0) >= 0);
    assert_true(zmq_msg_recv(&body, f->router, 0) >= 0);
    msgpack_unpacked upk;
    msgpack_unpacked_init(&upk);
    size_t off = 0;
    assert_int_equal(msgpack_unpack_next(&upk, zmq_msg_data(&body), zmq_msg_size(&body), &off),
                     MSGPACK_UNPACK_SUCCESS);
    wire_request_t req;
    char err[128];
    assert_int_equal(wire_request_parse(&upk.data, &req, err, sizeof err), JOBQ_ERR_NONE);
    snprintf(method, mlen, "%.*s", (int)req.method_len, req.method);
    msgpack_unpacked_destroy(&upk);
    zmq_msg_close(&body);
    return req.id;
}

static void send_to(fake_t *f, zmq_msg_t *rid, const void *data, size_t size)
{
    zmq_msg_t copy;
    zmq_msg_init(&copy);
    zmq_msg_copy(&copy, rid);
    assert_true(zmq_msg_send(&copy, f->router, ZMQ_SNDMORE) >= 0);
    assert_true(zmq_send(f->router, data, size, 0) >= 0);
}

/* Sends {"v":1,"id":id,"ok":true,"result":method} or an error reply. */
static void send_reply(fake_t *f, zmq_msg_t *rid, uint64_t id, const char *method, bool keepalive,
                       const char *error_code)
{
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    if (keepalive) {
        msgpack_pack_map(&pk, 3);
        wire_pack_cstr(&pk, "v");
        msgpack_pack_int(&pk, 1);
        wire_pack_cstr(&pk, "id");
        msgpack_pack_uint64(&pk, id);
        wire_pack_cstr(&pk, "keepalive");
        msgpack_pack_true(&pk);
    } else if (error_code) {
        wire_reply_error(&pk, id, true, jobq_code_from_name(error_code, strlen(error_code)),
                         "job queue is full (2 live jobs)");
    } else {
        wire_reply_ok_begin(&pk, id, true);
        wire_pack_cstr(&pk, method);
    }
    send_to(f, rid, sb.data, sb.size);
    msgpack_sbuffer_destroy(&sb);
}

static void *serve(void *arg)
{
    fake_t *f = arg;
    char m1[32], m2[32], m3[32];
    zmq_msg_t rid1, rid2, rid3;
    uint64_t id1 = recv_request(f, &rid1, m1, sizeof m1); /* left unanswered: times out */
    uint64_t id2 = recv_request(f, &rid2, m2, sizeof m2);
    assert_string_equal(m1, "ping");
    assert_string_equal(m2, "stats");
    assert_true(id2 != id1);
    send_reply(f, &rid1, id1, m1, false, NULL);           /* stale */
    send_reply(f, &rid2, id2, m2, true, NULL);            /* keepalive */
    send_to(f, &rid2, "\xc1junk", 5);                     /* not msgpack */
    send_reply(f, &rid2, id2, m2, false, NULL);           /* the answer */
    uint64_t id3 = recv_request(f, &rid3, m3, sizeof m3);
    send_reply(f, &rid3, id3, m3, false, "QueueFull");
    zmq_msg_close(&rid1);
    zmq_msg_close(&rid2);
    zmq_msg_close(&rid3);
    return NULL;
}

static void test_matching(void **state)
{
    (void)state;
    fake_t f;
    char dir[] = "/tmp/jobq-test-XXXXXX";
    assert_non_null(mkdtemp(dir));
    snprintf(f.endpoint, sizeof f.endpoint, "ipc://%s/fake.sock", dir);
    f.ctx = zmq_ctx_new();
    f.router = zmq_socket(f.ctx, ZMQ_ROUTER);
    int linger = 0;
    zmq_setsockopt(f.router, ZMQ_LINGER, &linger, sizeof linger);
    assert_int_equal(zmq_bind(f.router, f.endpoint), 0);
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, serve, &f), 0);

    jobq_client_t *c = jobq_client_new(f.endpoint);
    assert_non_null(c);
    assert_string_equal(jobq_client_endpoint(c), f.endpoint);

    json_t *r = jobq_ping(c, 200);
    assert_null(r);
    assert_int_equal(jobq_client_status(c), JOBQ_ERR_TIMEOUT);
    assert_string_equal(jobq_client_reason(c), "no reply within 0.2 s");

    /* stats must get its own answer: the string "stats" from the fake,
     * which call_typed refuses as not a map; use jobq_call to see it. */
    json_t *result = NULL;
    assert_int_equal(jobq_call(c, "stats", NULL, &result, 5000), 0);
    assert_int_equal(jobq_client_status(c), JOBQ_ERR_NONE);
    assert_string_equal(jobq_client_reason(c), "");
    assert_true(json_is_string(result));
    assert_string_equal(json_string_value(result), "stats");
    json_decref(result);

    uint64_t id = 0;
    json_t *ops = json_pack("[{s:s}]", "op", "test.delay");
    assert_int_equal(jobq_submit_job(c, ops, false, &id, 5000), -1);
    assert_int_equal(jobq_client_status(c), JOBQ_ERR_QUEUE_FULL);
    assert_string_equal(jobq_client_reason(c), "job queue is full (2 live jobs)");
    json_decref(ops);

    /* Arguments that are not an object are refused before sending. */
    json_t *arr = json_array();
    assert_int_equal(jobq_call(c, "ping", arr, NULL, 100), -1);
    assert_int_equal(jobq_client_status(c), JOBQ_ERR_BAD_ARGUMENT);
    json_decref(arr);

    pthread_join(th, NULL);
    jobq_client_destroy(&c);
    assert_null(c);
    jobq_client_destroy(&c); /* idempotent */
    zmq_close(f.router);
    zmq_ctx_term(f.ctx);
    char path[300];
    snprintf(path, sizeof path, "%s/fake.sock", dir);
    unlink(path);
    rmdir(dir);
}

static double mono_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* No socket file: NotRunning at once, not after the 10 s timeout. */
static void test_missing_ipc_socket(void **state)
{
    (void)state;
    jobq_client_t *c = jobq_client_new("ipc:///nonexistent-dir/jobq.sock");
    assert_non_null(c);
    double t0 = mono_s();
    assert_null(jobq_stats(c, 10000));
    assert_int_equal(jobq_client_status(c), JOBQ_ERR_NOT_RUNNING);
    assert_non_null(strstr(jobq_client_reason(c), "jobqd is not running at "));
    assert_non_null(strstr(jobq_client_reason(c), "no socket file at /nonexistent-dir/jobq.sock"));
    /* Again on the same client (the connection is known to be down). */
    assert_null(jobq_ping(c, 10000));
    assert_int_equal(jobq_client_status(c), JOBQ_ERR_NOT_RUNNING);
    assert_true(mono_s() - t0 < 2.0);
    jobq_client_destroy(&c);
    assert_null(jobq_client_new("not an endpoint"));
    assert_null(jobq_client_new(NULL));
}

/* A socket file nobody listens on (what a crashed daemon leaves): the
 * connect is refused, and the call says so at once. */
static void test_stale_ipc_socket(void **state)
{
    (void)state;
    char dir[] = "/tmp/jobq-stale-XXXXXX";
    assert_non_null(mkdtemp(dir));
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    snprintf(sa.sun_path, sizeof sa.sun_path, "%s/jobq.sock", dir);
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    close(fd); /* the file stays, nobody listens */
    char ep[200];
    snprintf(ep, sizeof ep, "ipc://%s", sa.sun_path);
    jobq_client_t *c = jobq_client_new(ep);
    double t0 = mono_s();
    assert_null(jobq_ping(c, 10000));
    assert_true(mono_s() - t0 < 2.0);
    assert_int_equal(jobq_client_status(c), JOBQ_ERR_NOT_RUNNING);
    assert_non_null(strstr(jobq_client_reason(c), "nobody listens on"));
    jobq_client_destroy(&c);
    unlink(sa.sun_path);
    rmdir(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_matching),
        cmocka_unit_test(test_missing_ipc_socket),
        cmocka_unit_test(test_stale_ipc_socket),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
