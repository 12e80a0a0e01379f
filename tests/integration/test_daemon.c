/* test_daemon.c: end-to-end tests of the real jobqd, driven with a raw
 * ZeroMQ DEALER (and once a REQ) socket and msgpack-c — deliberately not
 * libjobq, so the daemon is checked against docs/protocol.md itself.
 *
 * Each test starts its own daemon (--data-dir in a mkdtemp directory,
 * options as the test needs), waits for it by polling `ping` until a
 * bounded deadline, and tears it down in the group teardown, which cmocka
 * runs even when the test failed. Job states are awaited by polling
 * query_jobs until a deadline; nothing sleeps to "give it time".
 *
 * Usage: test_daemon [test_name] — without a name every test runs. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "jobq_json.h"
#include <errno.h>
#include <ftw.h>
#include <jansson.h>
#include <msgpack.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#ifndef JOBQD_PATH
#error "JOBQD_PATH must name the jobqd binary"
#endif

#define START_TIMEOUT_MS 20000 /* sanitizer builds start slowly */
#define REPLY_TIMEOUT_MS 10000
#define STATE_TIMEOUT_MS 10000

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* A short pause between two polls of a condition (never a wait for one). */
static void poll_pause(void) { zmq_poll(NULL, 0, 5); }

/* ---- JSON <-> msgpack ---- */

/* Test inputs are written as JSON text; libjobq's converter packs them. */
static void pack_json(msgpack_packer *pk, const json_t *j)
{
    assert_int_equal(jobq_json_to_msgpack(pk, j, JOBQ_JSON_MAX_DEPTH, NULL, 0), 0);
}

static json_t *to_json(const msgpack_object *o)
{
    switch (o->type) {
    case MSGPACK_OBJECT_NIL: return json_null();
    case MSGPACK_OBJECT_BOOLEAN: return json_boolean(o->via.boolean);
    case MSGPACK_OBJECT_POSITIVE_INTEGER:
        return o->via.u64 > INT64_MAX ? json_real((double)o->via.u64)
                                      : json_integer((json_int_t)o->via.u64);
    case MSGPACK_OBJECT_NEGATIVE_INTEGER: return json_integer(o->via.i64);
    case MSGPACK_OBJECT_FLOAT32:
    case MSGPACK_OBJECT_FLOAT64: return json_real(o->via.f64);
    case MSGPACK_OBJECT_STR: return json_stringn(o->via.str.ptr, o->via.str.size);
    case MSGPACK_OBJECT_BIN: return json_stringn(o->via.bin.ptr, o->via.bin.size);
    case MSGPACK_OBJECT_ARRAY: {
        json_t *a = json_array();
        for (uint32_t i = 0; i < o->via.array.size; i++)
            json_array_append_new(a, to_json(&o->via.array.ptr[i]));
        return a;
    }
    case MSGPACK_OBJECT_MAP: {
        json_t *m = json_object();
        for (uint32_t i = 0; i < o->via.map.size; i++) {
            const msgpack_object *k = &o->via.map.ptr[i].key;
            char key[256];
            if (k->type == MSGPACK_OBJECT_STR)
                snprintf(key, sizeof key, "%.*s", (int)k->via.str.size, k->via.str.ptr);
            else
                snprintf(key, sizeof key, "?");
            json_object_set_new(m, key, to_json(&o->via.map.ptr[i].val));
        }
        return m;
    }
    default: return json_string("<ext>");
    }
}

static json_t *jparse(const char *text)
{
    json_error_t e;
    json_t *j = json_loads(text, JSON_DECODE_ANY, &e);
    if (!j)
        fail_msg("bad JSON in test: %s (%s)", text, e.text);
    return j;
}

/* ---- the daemon ---- */

typedef struct {
    pid_t pid;
    char dir[64];
    char endpoint[128];
    void *zctx;
    void *sock;     /* DEALER */
    uint64_t next_id;
    int exit_status; /* after reap: waitpid status, -1 unknown */
} daemon_t;

static daemon_t D;

static void *dealer(void)
{
    void *s = zmq_socket(D.zctx, ZMQ_DEALER);
    int linger = 0;
    zmq_setsockopt(s, ZMQ_LINGER, &linger, sizeof linger);
    assert_int_equal(zmq_connect(s, D.endpoint), 0);
    return s;
}

static void send_body(void *s, const void *data, size_t len)
{
    assert_true(zmq_send(s, data, len, 0) >= 0);
}

/* Send {v, id, method, args} (args as JSON text, NULL: absent). */
static uint64_t send_req_on(void *s, const char *method, const char *args)
{
    uint64_t id = ++D.next_id;
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, args ? 4 : 3);
    msgpack_pack_str_with_body(&pk, "v", 1);
    msgpack_pack_int(&pk, 1);
    msgpack_pack_str_with_body(&pk, "id", 2);
    msgpack_pack_uint64(&pk, id);
    msgpack_pack_str_with_body(&pk, "method", 6);
    msgpack_pack_str_with_body(&pk, method, strlen(method));
    if (args) {
        msgpack_pack_str_with_body(&pk, "args", 4);
        json_t *j = jparse(args);
        pack_json(&pk, j);
        json_decref(j);
    }
    send_body(s, sb.data, sb.size);
    msgpack_sbuffer_destroy(&sb);
    return id;
}

/* Next reply on s as JSON, or NULL at the timeout. */
static json_t *recv_any(void *s, int timeout_ms)
{
    zmq_pollitem_t it = {.socket = s, .events = ZMQ_POLLIN};
    if (zmq_poll(&it, 1, timeout_ms) <= 0)
        return NULL;
    zmq_msg_t m;
    zmq_msg_init(&m);
    assert_true(zmq_msg_recv(&m, s, 0) >= 0);
    assert_false(zmq_msg_more(&m)); /* one frame per reply */
    msgpack_unpacked up;
    msgpack_unpacked_init(&up);
    size_t off = 0;
    assert_int_equal(msgpack_unpack_next(&up, zmq_msg_data(&m), zmq_msg_size(&m), &off),
                     MSGPACK_UNPACK_SUCCESS);
    assert_int_equal(off, zmq_msg_size(&m));
    json_t *j = to_json(&up.data);
    msgpack_unpacked_destroy(&up);
    zmq_msg_close(&m);
    assert_true(json_is_object(j));
    assert_int_equal(json_integer_value(json_object_get(j, "v")), 1);
    return j;
}

/* The reply to request id (others are dropped: only start-up pings). */
static json_t *recv_reply_on(void *s, uint64_t id)
{
    int64_t deadline = now_ms() + REPLY_TIMEOUT_MS;
    for (;;) {
        int left = (int)(deadline - now_ms());
        json_t *r = left > 0 ? recv_any(s, left) : NULL;
        if (!r)
            fail_msg("no reply to request %llu", (unsigned long long)id);
        json_t *rid = json_object_get(r, "id");
        if (json_is_integer(rid) && (uint64_t)json_integer_value(rid) == id)
            return r;
        json_decref(r);
    }
}

static json_t *call(const char *method, const char *args)
{
    return recv_reply_on(D.sock, send_req_on(D.sock, method, args));
}

/* The result of a successful call (caller decrefs). */
static json_t *ok(const char *method, const char *args)
{
    json_t *r = call(method, args);
    if (!json_is_true(json_object_get(r, "ok"))) {
        char *t = json_dumps(r, JSON_COMPACT);
        fail_msg("%s %s failed: %s", method, args ? args : "", t);
    }
    json_t *res = json_incref(json_object_get(r, "result"));
    assert_non_null(res);
    json_decref(r);
    return res;
}

static char errmsg[2048];

/* A failing call: checks the code, returns the message (static buffer). */
static const char *err(const char *method, const char *args, const char *code)
{
    json_t *r = call(method, args);
    json_t *e = json_object_get(r, "error");
    const char *got = json_string_value(json_object_get(e, "code"));
    if (json_is_true(json_object_get(r, "ok")) || !got || strcmp(got, code) != 0) {
        char *t = json_dumps(r, JSON_COMPACT);
        fail_msg("%s %s: expected %s, got %s", method, args ? args : "", code, t);
    }
    snprintf(errmsg, sizeof errmsg, "%s", json_string_value(json_object_get(e, "message")));
    assert_true(errmsg[0] != '\0');
    json_decref(r);
    return errmsg;
}

static bool reap(int timeout_ms)
{
    if (D.pid <= 0)
        return true; /* reaped already: never waitpid(0) (or kill(0)) */
    int64_t deadline = now_ms() + timeout_ms;
    for (;;) {
        int st;
        pid_t p = waitpid(D.pid, &st, WNOHANG);
        if (p == D.pid) {
            D.exit_status = st;
            D.pid = 0;
            return true;
        }
        if (now_ms() >= deadline)
            return false;
        poll_pause();
    }
}

static int start_daemon(const char *const *extra)
{
    memset(&D, 0, sizeof D);
    D.exit_status = -1;
    snprintf(D.dir, sizeof D.dir, "/tmp/jobq-it-XXXXXX");
    if (!mkdtemp(D.dir))
        return -1;
    snprintf(D.endpoint, sizeof D.endpoint, "ipc://%s/jobq.sock", D.dir);
    const char *argv[32] = {JOBQD_PATH, "--data-dir", D.dir};
    int argc = 3;
    for (int i = 0; extra && extra[i] && argc < 30; i++)
        argv[argc++] = extra[i];
    argv[argc] = NULL;
    D.pid = fork();
    if (D.pid < 0)
        return -1;
    if (D.pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL); /* never outlive the test */
        char log[128];
        snprintf(log, sizeof log, "%s/stderr.log", D.dir);
        if (!freopen(log, "w", stderr))
            _exit(126);
        execv(JOBQD_PATH, (char *const *)argv);
        _exit(127);
    }
    D.zctx = zmq_ctx_new();
    D.sock = dealer();
    /* Ping until it answers: the DEALER reconnects by itself until the
     * socket exists. */
    int64_t deadline = now_ms() + START_TIMEOUT_MS;
    while (now_ms() < deadline) {
        uint64_t id = send_req_on(D.sock, "ping", NULL);
        json_t *r;
        while ((r = recv_any(D.sock, 100))) {
            json_t *rid = json_object_get(r, "id");
            bool match = (uint64_t)json_integer_value(rid) <= id;
            json_decref(r);
            if (match) {
                /* Late answers to earlier pings stay on the old socket. */
                zmq_close(D.sock);
                D.sock = dealer();
                return 0;
            }
        }
        if (reap(0))
            return -1; /* it died */
    }
    return -1;
}

static int remove_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st, (void)flag, (void)ftw;
    return remove(path);
}

static int stop_daemon(void **state)
{
    (void)state;
    if (D.sock)
        zmq_close(D.sock);
    D.sock = NULL;
    if (D.zctx)
        zmq_ctx_term(D.zctx);
    D.zctx = NULL;
    /* The second signal interrupts what still runs. */
    if (D.pid > 0 && kill(D.pid, SIGTERM) == 0 && !reap(200) && kill(D.pid, SIGTERM) == 0 &&
        !reap(10000) && kill(D.pid, SIGKILL) == 0)
        reap(10000);
    /* Whatever a sanitizer build of the daemon reported fails the test. */
    char path[128];
    int rc = 0;
    snprintf(path, sizeof path, "%s/stderr.log", D.dir);
    FILE *f = D.dir[0] ? fopen(path, "r") : NULL;
    if (f) {
        static char log[1 << 16];
        size_t n = fread(log, 1, sizeof log - 1, f);
        log[n] = '\0';
        fclose(f);
        if (strstr(log, "Sanitizer") || strstr(log, "runtime error:")) {
            fprintf(stderr, "jobqd reported:\n%s\n", log);
            rc = -1;
        }
    }
    /* Nothing is left behind: the store, the sockets, the log. */
    if (D.dir[0])
        nftw(D.dir, remove_one, 16, FTW_DEPTH | FTW_PHYS);
    return rc;
}

#define DAEMON_SETUP(name, ...)                                                  \
    static int name(void **state)                                                \
    {                                                                            \
        (void)state;                                                             \
        static const char *const args[] = {__VA_ARGS__, NULL};                   \
        return start_daemon(args);                                               \
    }
DAEMON_SETUP(setup_default, "--handlers", "2")
DAEMON_SETUP(setup_small_requests, "--max-request-bytes", "1024")
DAEMON_SETUP(setup_max_jobs, "--max-jobs", "3")
DAEMON_SETUP(setup_one_handler, "--handlers", "1")
DAEMON_SETUP(setup_one_runner, "--max-running", "1", "--executors", "1")
DAEMON_SETUP(setup_short_grace, "--shutdown-grace", "2")

/* ---- job helpers ---- */

static uint64_t submit(const char *ops)
{
    char args[8192];
    snprintf(args, sizeof args, "{\"ops\":%s}", ops);
    json_t *r = ok("submit_job", args);
    assert_true(json_is_integer(r));
    uint64_t id = (uint64_t)json_integer_value(r);
    json_decref(r);
    return id;
}

/* One field of one job (caller decrefs). */
static json_t *field(uint64_t id, const char *name)
{
    char args[256];
    snprintf(args, sizeof args, "{\"ids\":[%llu],\"fields\":[\"%s\"]}", (unsigned long long)id,
             name);
    json_t *r = ok("query_jobs", args);
    json_t *rows = json_object_get(r, "rows");
    assert_int_equal(json_array_size(rows), 1);
    json_t *v = json_incref(json_array_get(json_array_get(rows, 0), 0));
    json_decref(r);
    return v;
}

static void status_of(uint64_t id, char *out, size_t len)
{
    json_t *s = field(id, "status");
    snprintf(out, len, "%s", json_is_string(s) ? json_string_value(s) : "(missing)");
    json_decref(s);
}

/* Poll until the job's status is `want` (a final status other than want
 * fails at once). */
static void wait_status(uint64_t id, const char *want)
{
    int64_t deadline = now_ms() + STATE_TIMEOUT_MS;
    char st[32];
    for (;;) {
        status_of(id, st, sizeof st);
        if (!strcmp(st, want))
            return;
        bool final = !strcmp(st, "success") || !strcmp(st, "error") || !strcmp(st, "canceled");
        if (final || now_ms() >= deadline)
            fail_msg("job %llu is %s, expected %s", (unsigned long long)id, st, want);
        poll_pause();
    }
}

static json_t *stats(void) { return ok("stats", NULL); }

static int64_t stat_at(json_t *st, const char *group, const char *key)
{
    json_t *g = group ? json_object_get(st, group) : st;
    json_t *v = json_object_get(g, key);
    if (!v)
        fail_msg("stats has no %s.%s", group ? group : "", key);
    return json_is_true(v) ? 1 : json_is_false(v) ? 0 : json_integer_value(v);
}

static void expect_pair(json_t *r, bool b, const char *msg)
{
    assert_true(json_is_array(r));
    assert_int_equal(json_array_size(r), 2);
    assert_int_equal(json_is_true(json_array_get(r, 0)), b);
    const char *got = json_string_value(json_array_get(r, 1));
    if (!got || strcmp(got, msg) != 0)
        fail_msg("message '%s', expected '%s'", got ? got : "(none)", msg);
    json_decref(r);
}

static void expect_json(json_t *got, const char *want_text)
{
    json_t *want = jparse(want_text);
    if (!json_equal(got, want)) {
        char *g = json_dumps(got, JSON_COMPACT | JSON_ENCODE_ANY);
        fail_msg("got %s, expected %s", g, want_text);
    }
    json_decref(want);
    json_decref(got);
}

#define DELAY0 "[{\"op\":\"test.delay\",\"args\":{\"duration\":0}}]"
#define DELAY30 "[{\"op\":\"test.delay\",\"args\":{\"duration\":30}}]"

/* ---- protocol errors ---- */

static void raw_expect(const void *body, size_t len, const char *code, bool has_id, uint64_t id)
{
    send_body(D.sock, body, len);
    json_t *r = recv_any(D.sock, REPLY_TIMEOUT_MS);
    if (!r)
        fail_msg("no reply to a raw request (expected %s)", code);
    assert_true(json_is_false(json_object_get(r, "ok")));
    const char *got = json_string_value(json_object_get(json_object_get(r, "error"), "code"));
    assert_non_null(got);
    assert_string_equal(got, code);
    json_t *rid = json_object_get(r, "id");
    if (has_id)
        assert_int_equal(json_integer_value(rid), id);
    else
        assert_true(json_is_null(rid));
    json_decref(r);
}

static void raw_json_expect(const char *text, const char *code, bool has_id, uint64_t id)
{
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    json_t *j = jparse(text);
    pack_json(&pk, j);
    json_decref(j);
    raw_expect(sb.data, sb.size, code, has_id, id);
    msgpack_sbuffer_destroy(&sb);
}

static void test_protocol_errors(void **state)
{
    (void)state;
    /* Malformed: not msgpack, trailing bytes, empty, not a map, no id,
     * no v, no method, args not a map, id not unsigned, method not str. */
    raw_expect("\xc1", 1, "Malformed", false, 0);
    raw_expect("\x01\x02", 2, "Malformed", false, 0);
    raw_expect("", 0, "Malformed", false, 0);
    raw_expect("\x92\x01\x02", 3, "Malformed", false, 0);
    raw_json_expect("{\"v\":1,\"method\":\"ping\"}", "Malformed", false, 0);
    raw_json_expect("{\"id\":5,\"method\":\"ping\"}", "Malformed", true, 5);
    raw_json_expect("{\"v\":1,\"id\":6}", "Malformed", true, 6);
    raw_json_expect("{\"v\":1,\"id\":7,\"method\":\"ping\",\"args\":[1]}", "Malformed", true, 7);
    raw_json_expect("{\"v\":1,\"id\":-1,\"method\":\"ping\"}", "Malformed", false, 0);
    raw_json_expect("{\"v\":1,\"id\":8,\"method\":5}", "Malformed", true, 8);
    raw_json_expect("{\"v\":\"1\",\"id\":9,\"method\":\"ping\"}", "Malformed", true, 9);
    /* Version and method. */
    raw_json_expect("{\"v\":2,\"id\":10,\"method\":\"ping\"}", "VersionMismatch", true, 10);
    raw_json_expect("{\"v\":0,\"id\":11,\"method\":\"ping\"}", "VersionMismatch", true, 11);
    assert_non_null(strstr(err("frobnicate", NULL, "UnknownMethod"), "frobnicate"));
    err("Ping", "{}", "UnknownMethod");
    /* Unknown keys in the envelope are ignored. */
    raw_json_expect("{\"v\":1,\"id\":12,\"method\":\"nope\",\"extra\":[1,2]}", "UnknownMethod",
                    true, 12);
    json_t *p = ok("ping", "{\"unused\":1}");
    assert_string_equal(json_string_value(json_object_get(p, "version")), "0.1.0");
    assert_int_equal(json_integer_value(json_object_get(p, "protocol")), 1);
    assert_int_equal(json_array_size(json_object_get(p, "time")), 2);
    json_decref(p);

    /* BadArgument: missing arguments, wrong types, out of range. */
    static const char *const bad[][2] = {
        {"submit_job", NULL},
        {"submit_job", "{}"},
        {"submit_job", "{\"ops\":5}"},
        {"submit_job", "{\"ops\":[]}"},
        {"submit_job", "{\"ops\":[5]}"},
        {"submit_job", "{\"ops\":[{\"op\":\"test.delay\",\"args\":{}}]}"},
        {"submit_job", "{\"ops\":[{\"op\":\"test.delay\",\"args\":{\"duration\":-1}}]}"},
        {"submit_job", "{\"ops\":[{\"op\":\"test.log\",\"args\":{\"messages\":[1]}}]}"},
        {"submit_job", "{\"ops\":" DELAY0 ",\"ignore_drain\":\"yes\"}"},
        {"submit_many_jobs", "{}"},
        {"submit_many_jobs", "{\"jobs\":5}"},
        {"query_jobs", "{\"fields\":\"id\"}"},
        {"query_jobs", "{\"fields\":[]}"},
        {"query_jobs", "{\"fields\":[1]}"},
        {"query_jobs", "{\"status\":\"queued\"}"},
        {"query_jobs", "{\"status\":[\"bogus\"]}"},
        {"query_jobs", "{\"limit\":0}"},
        {"query_jobs", "{\"after_id\":-1}"},
        {"query_jobs", "{\"ids\":5}"},
        {"query_jobs", "{\"ids\":[\"x\"]}"},
        {"query_jobs", "{\"archived\":1}"},
        {"cancel_job", "{}"},
        {"cancel_job", "{\"id\":\"1\"}"},
        {"cancel_job", "{\"id\":0}"},
        {"cancel_job", "{\"id\":-3}"},
        {"change_job_priority", "{\"id\":1}"},
        {"change_job_priority", "{\"id\":1,\"priority\":\"high\"}"},
        {"change_job_priority", "{\"priority\":0}"},
        {"archive_job", "{}"},
        {"archive_job", "{\"id\":1.5}"},
        {"auto_archive_jobs", "{\"timeout\":1}"},
        {"auto_archive_jobs", "{\"age\":-2,\"timeout\":1}"},
        {"auto_archive_jobs", "{\"age\":1}"},
        {"auto_archive_jobs", "{\"age\":1,\"timeout\":-1}"},
        {"set_drain_flag", "{}"},
        {"set_drain_flag", "{\"flag\":1}"},
    };
    size_t nbad = sizeof bad / sizeof bad[0];
    for (size_t i = 0; i < nbad; i++)
        err(bad[i][0], bad[i][1], "BadArgument");
    /* The specific codes. */
    assert_non_null(strstr(err("submit_job", "{\"ops\":[{\"op\":\"nope\"}]}", "UnknownOpcode"),
                           "nope"));
    err("submit_job", "{\"ops\":[{\"op\":\"test.log\",\"priority\":5}]}", "InvalidPriority");
    err("submit_job", "{\"ops\":[{\"op\":\"test.log\",\"priority\":-20}]}", "InvalidPriority");
    err("change_job_priority", "{\"id\":1,\"priority\":5}", "InvalidPriority");
    err("submit_job", "{\"ops\":[{\"op\":\"test.log\",\"depends\":[[-1,[]]]}]}",
        "InvalidDependency");
    err("submit_job", "{\"ops\":[{\"op\":\"test.log\",\"depends\":[[1,[\"running\"]]]}]}",
        "InvalidDependency");
    err("submit_job", "{\"ops\":[{\"op\":\"test.log\",\"depends\":\"x\"}]}", "BadArgument");
    assert_non_null(strstr(err("query_jobs", "{\"fields\":[\"id\",\"bogus\"]}", "UnknownField"),
                           "bogus"));

    /* A frame layout that cannot be answered is dropped and counted. */
    zmq_send(D.sock, "a", 1, ZMQ_SNDMORE);
    zmq_send(D.sock, "b", 1, 0);

    /* Stats count every error, and nothing else changed. */
    json_t *st = stats();
    assert_int_equal(stat_at(st, "errors", "Malformed"), 11);
    assert_int_equal(stat_at(st, "errors", "VersionMismatch"), 2);
    assert_int_equal(stat_at(st, "errors", "UnknownMethod"), 3);
    assert_int_equal(stat_at(st, "errors", "BadArgument"), (int64_t)nbad + 1);
    assert_int_equal(stat_at(st, "errors", "UnknownOpcode"), 1);
    assert_int_equal(stat_at(st, "errors", "InvalidPriority"), 3);
    assert_int_equal(stat_at(st, "errors", "InvalidDependency"), 2);
    assert_int_equal(stat_at(st, "errors", "UnknownField"), 1);
    assert_int_equal(stat_at(st, "errors", "TooLarge"), 0);
    assert_int_equal(stat_at(st, "errors", "QueueFull"), 0);
    assert_int_equal(stat_at(st, "errors", "Internal"), 0);
    assert_int_equal(stat_at(st, NULL, "dropped"), 1);
    assert_int_equal(stat_at(st, NULL, "live_jobs"), 0);
    assert_int_equal(stat_at(st, NULL, "archived_jobs"), 0);
    assert_int_equal(stat_at(st, NULL, "submitted"), 0);
    assert_int_equal(stat_at(st, NULL, "changes"), 0);
    assert_int_equal(stat_at(st, NULL, "last_job_id"), 0);
    assert_int_equal(stat_at(st, NULL, "drained"), 0);
    const char *sts[] = {"queued", "waiting", "canceling", "running", "canceled", "success",
                         "error"};
    for (size_t i = 0; i < 7; i++)
        assert_int_equal(stat_at(st, "jobs", sts[i]), 0);
    json_decref(st);
    /* And the first job still gets id 1. */
    assert_int_equal(submit(DELAY0), 1);
}

static void test_too_large(void **state)
{
    (void)state;
    char pad[1600], args[1700];
    memset(pad, 'x', sizeof pad - 1);
    pad[sizeof pad - 1] = '\0';
    snprintf(args, sizeof args, "{\"pad\":\"%s\"}", pad);
    assert_non_null(strstr(err("ping", args, "TooLarge"), "1024"));
    snprintf(args, sizeof args, "{\"pad\":\"%.800s\"}", pad);
    json_decref(ok("ping", args));
    char ops[1800];
    snprintf(ops, sizeof ops,
             "{\"ops\":[{\"op\":\"test.log\",\"args\":{\"messages\":[\"%.1200s\"]}}]}", pad);
    err("submit_job", ops, "TooLarge");
    json_t *st = stats();
    assert_int_equal(stat_at(st, "errors", "TooLarge"), 2);
    assert_int_equal(stat_at(st, NULL, "submitted"), 0);
    assert_int_equal(stat_at(st, NULL, "live_jobs"), 0);
    json_decref(st);
}

static void test_queue_full(void **state)
{
    (void)state;
    uint64_t ids[3];
    for (int i = 0; i < 3; i++)
        ids[i] = submit(DELAY0);
    for (int i = 0; i < 3; i++)
        wait_status(ids[i], "success");
    assert_non_null(strstr(err("submit_job", "{\"ops\":" DELAY0 "}", "QueueFull"), "full"));
    /* In a batch each job fails on its own; the call succeeds. */
    json_t *r = ok("submit_many_jobs", "{\"jobs\":[" DELAY0 "," DELAY0 "]}");
    assert_int_equal(json_array_size(r), 2);
    for (int i = 0; i < 2; i++) {
        json_t *e = json_array_get(r, (size_t)i);
        assert_true(json_is_false(json_array_get(e, 0)));
        assert_non_null(strstr(json_string_value(json_array_get(e, 1)), "full"));
    }
    json_decref(r);
    json_t *st = stats();
    assert_int_equal(stat_at(st, "errors", "QueueFull"), 1);
    assert_int_equal(stat_at(st, NULL, "live_jobs"), 3);
    assert_int_equal(stat_at(st, NULL, "max_jobs"), 3);
    assert_int_equal(stat_at(st, NULL, "submitted"), 3);
    json_decref(st);
    /* Archiving makes room. */
    r = ok("archive_job", "{\"id\":1}");
    assert_true(json_is_true(r));
    json_decref(r);
    uint64_t id = submit(DELAY0);
    assert_int_equal(id, 4); /* no id consumed by the refusals */
    err("submit_job", "{\"ops\":" DELAY0 "}", "QueueFull");
}

static void test_drain_and_shutdown(void **state)
{
    (void)state;
    json_t *r = ok("set_drain_flag", "{\"flag\":true}");
    assert_true(json_is_true(r));
    json_decref(r);
    assert_non_null(strstr(err("submit_job", "{\"ops\":" DELAY0 "}", "Drained"), "drained"));
    err("submit_many_jobs", "{\"jobs\":[" DELAY0 "]}", "Drained");
    err("submit_job", "{\"ops\":" DELAY0 ",\"ignore_drain\":false}", "Drained");
    json_t *st = stats();
    assert_int_equal(stat_at(st, NULL, "drained"), 1);
    assert_int_equal(stat_at(st, "errors", "Drained"), 3);
    assert_int_equal(stat_at(st, NULL, "submitted"), 0);
    json_decref(st);
    r = ok("submit_job", "{\"ops\":" DELAY0 ",\"ignore_drain\":true}");
    assert_int_equal(json_integer_value(r), 1);
    json_decref(r);
    r = ok("submit_many_jobs", "{\"jobs\":[" DELAY0 "],\"ignore_drain\":true}");
    expect_json(r, "[[true,2]]");
    wait_status(1, "success"); /* queued jobs are not affected */
    r = ok("set_drain_flag", "{\"flag\":false}");
    json_decref(r);
    uint64_t running = submit(DELAY30);
    wait_status(running, "running");

    /* shutdown, then a submission and a ping already on their way: the
     * loop serves all three itself, in order. */
    uint64_t a = send_req_on(D.sock, "shutdown", "{\"now\":true}");
    uint64_t b = send_req_on(D.sock, "submit_job", "{\"ops\":" DELAY0 "}");
    uint64_t c = send_req_on(D.sock, "ping", NULL);
    r = recv_reply_on(D.sock, a);
    assert_true(json_is_true(json_object_get(r, "ok")));
    assert_true(json_is_true(json_object_get(r, "result")));
    json_decref(r);
    /* What reached the daemon before it stopped reading is answered; a
     * submission then gets ShuttingDown, never a job. (Whether the bytes
     * arrived in time is up to the transport, so a missing answer is not
     * a failure; a wrong one is.) */
    bool got_b = false;
    while ((r = recv_any(D.sock, 2000))) {
        uint64_t rid = (uint64_t)json_integer_value(json_object_get(r, "id"));
        if (rid == b) {
            got_b = true;
            assert_true(json_is_false(json_object_get(r, "ok")));
            assert_string_equal(
                json_string_value(json_object_get(json_object_get(r, "error"), "code")),
                "ShuttingDown");
        } else {
            assert_int_equal(rid, c);
            assert_true(json_is_true(json_object_get(r, "ok")));
        }
        json_decref(r);
    }
    if (!got_b)
        print_message("submission after shutdown arrived too late to be answered\n");
    /* It exits 0 promptly although a 30 s opcode was running. */
    assert_true(reap(10000));
    assert_true(WIFEXITED(D.exit_status));
    assert_int_equal(WEXITSTATUS(D.exit_status), 0);
}

/* SIGTERM: no new jobs, the running opcodes get --shutdown-grace to end
 * (and the daemon keeps answering meanwhile), then what still runs is
 * interrupted and the daemon exits 0. */
static void test_sigterm(void **state)
{
    (void)state;
    uint64_t quick = submit("[{\"op\":\"test.delay\",\"args\":{\"duration\":0.5}}]");
    uint64_t slow = submit(DELAY30);
    wait_status(quick, "running");
    wait_status(slow, "running");
    int64_t t0 = now_ms();
    assert_int_equal(kill(D.pid, SIGTERM), 0);
    wait_status(quick, "success"); /* it finished within the grace */
    err("submit_job", "{\"ops\":" DELAY0 "}", "ShuttingDown");
    char s[32];
    status_of(slow, s, sizeof s);
    assert_string_equal(s, "running");
    assert_true(reap(10000));
    assert_true(WIFEXITED(D.exit_status));
    assert_int_equal(WEXITSTATUS(D.exit_status), 0);
    int64_t took = now_ms() - t0;
    assert_true(took >= 1500 && took < 10000); /* --shutdown-grace 2 */
}

/* A second SIGTERM ends the grace at once. */
static void test_sigterm_twice(void **state)
{
    (void)state;
    uint64_t slow = submit(DELAY30);
    wait_status(slow, "running");
    int64_t t0 = now_ms();
    assert_int_equal(kill(D.pid, SIGTERM), 0);
    char s[32];
    status_of(slow, s, sizeof s); /* answered: it still serves */
    assert_string_equal(s, "running");
    assert_int_equal(kill(D.pid, SIGTERM), 0);
    assert_true(reap(10000));
    assert_int_equal(WEXITSTATUS(D.exit_status), 0);
    assert_true(now_ms() - t0 < 5000);
}

/* ---- running jobs ---- */

static void test_jobs_run(void **state)
{
    (void)state;
    /* test.log: messages as log entries, result = count. */
    uint64_t id = submit("[{\"op\":\"test.log\",\"args\":{\"messages\":[\"a\",\"b\"]}}]");
    wait_status(id, "success");
    expect_json(field(id, "opresult"), "[2]");
    expect_json(field(id, "log_serial"), "2");
    expect_json(field(id, "summary"), "[\"test.log(2)\"]");
    json_t *log = field(id, "oplog");
    json_t *entries = json_array_get(log, 0);
    assert_int_equal(json_array_size(entries), 2);
    for (size_t i = 0; i < 2; i++) {
        json_t *e = json_array_get(entries, i);
        assert_int_equal(json_integer_value(json_array_get(e, 0)), (json_int_t)(i + 1));
        assert_int_equal(json_array_size(json_array_get(e, 1)), 2);
        assert_string_equal(json_string_value(json_array_get(e, 2)), "message");
        assert_string_equal(json_string_value(json_array_get(e, 3)), i ? "b" : "a");
    }
    json_decref(log);

    /* test.delay with repeat logs each iteration; serials continue across
     * opcodes. */
    id = submit("[{\"op\":\"test.log\",\"args\":{\"messages\":[\"first\"]}},"
                " {\"op\":\"test.delay\",\"args\":{\"duration\":0.001,\"repeat\":3}}]");
    wait_status(id, "success");
    log = field(id, "oplog");
    json_t *second = json_array_get(log, 1);
    assert_int_equal(json_array_size(second), 3);
    for (size_t i = 0; i < 3; i++) {
        json_t *e = json_array_get(second, i);
        char want[64];
        snprintf(want, sizeof want, "Test delay iteration %zu/2", i);
        assert_int_equal(json_integer_value(json_array_get(e, 0)), (json_int_t)(i + 2));
        assert_string_equal(json_string_value(json_array_get(e, 3)), want);
    }
    json_decref(log);
    expect_json(field(id, "opstatus"), "[\"success\",\"success\"]");
    expect_json(field(id, "opresult"), "[1,null]");
    json_t *t = field(id, "start_ts"), *o = field(id, "opstart");
    assert_true(json_equal(t, json_array_get(o, 0))); /* start_ts = opstart[0] */
    json_decref(t);
    json_decref(o);

    /* A failing opcode: later ones "Preceding opcode failed". */
    id = submit("[{\"op\":\"test.log\",\"args\":{\"fail\":true}},"
                " {\"op\":\"test.delay\",\"args\":{\"duration\":0}}]");
    wait_status(id, "error");
    expect_json(field(id, "opresult"),
                "[[\"OpExecError\",[\"test.log failed as requested\"]],"
                " [\"OpExecError\",[\"Preceding opcode failed\"]]]");
    expect_json(field(id, "opstatus"), "[\"error\",\"error\"]");
    json_t *end = field(id, "end_ts");
    assert_int_equal(json_array_size(end), 2);
    json_decref(end);
    id = submit("[{\"op\":\"test.delay\",\"args\":{\"duration\":0,\"fail\":true}}]");
    wait_status(id, "error");
    expect_json(field(id, "opresult"), "[[\"OpExecError\",[\"test.delay failed as requested\"]]]");

    /* ops as stored: defaults filled in. */
    expect_json(field(id, "ops"),
                "[{\"op\":\"test.delay\",\"args\":{\"duration\":0,\"fail\":true},"
                "\"priority\":0,\"depends\":[]}]");
    json_t *st = stats();
    assert_int_equal(stat_at(st, NULL, "submitted"), 4);
    assert_true(stat_at(st, NULL, "changes") > 4 * 3);
    assert_int_equal(stat_at(st, "jobs", "success"), 2);
    assert_int_equal(stat_at(st, "jobs", "error"), 2);
    json_decref(st);
}

static void test_dependencies(void **state)
{
    (void)state;
    char ops[512];
    /* Satisfied, with the dependency still running when submitted. */
    uint64_t a = submit("[{\"op\":\"test.delay\",\"args\":{\"duration\":0.2}}]");
    snprintf(ops, sizeof ops, "[{\"op\":\"test.log\",\"depends\":[[%llu,[\"success\"]]]}]",
             (unsigned long long)a);
    uint64_t b = submit(ops);
    wait_status(b, "success");
    char st[32];
    status_of(a, st, sizeof st);
    assert_string_equal(st, "success");
    json_t *sa = field(a, "end_ts"), *sb = field(b, "opexec");
    /* b ran after a ended. */
    json_t *bx = json_array_get(sb, 0);
    int64_t ae = json_integer_value(json_array_get(sa, 0)) * 1000000 +
                 json_integer_value(json_array_get(sa, 1));
    int64_t bs = json_integer_value(json_array_get(bx, 0)) * 1000000 +
                 json_integer_value(json_array_get(bx, 1));
    assert_true(ae <= bs);
    json_decref(sa);
    json_decref(sb);

    /* Wrong final status: Ganeti's message. */
    uint64_t f = submit("[{\"op\":\"test.log\",\"args\":{\"fail\":true}}]");
    snprintf(ops, sizeof ops,
             "[{\"op\":\"test.log\",\"depends\":[[%llu,[\"success\"]]]},{\"op\":\"test.log\"}]",
             (unsigned long long)f);
    uint64_t c = submit(ops);
    wait_status(c, "error");
    char want[512];
    snprintf(want, sizeof want,
             "[[\"OpExecError\",[\"Dependency job %llu finished with status 'error', not one "
             "of 'success' as required\"]],[\"OpExecError\",[\"Preceding opcode failed\"]]]",
             (unsigned long long)f);
    expect_json(field(c, "opresult"), want);
    /* Any final status (empty list) accepts error. */
    snprintf(ops, sizeof ops, "[{\"op\":\"test.log\",\"depends\":[[%llu,[]]]}]",
             (unsigned long long)f);
    wait_status(submit(ops), "success");

    /* Dependency canceled → this job canceled; unless canceled is accepted. */
    uint64_t slow = submit(DELAY30);
    snprintf(ops, sizeof ops, "[{\"op\":\"test.log\",\"depends\":[[%llu,[]]]}]",
             (unsigned long long)slow);
    uint64_t w1 = submit(ops);
    snprintf(ops, sizeof ops, "[{\"op\":\"test.log\",\"depends\":[[%llu,[\"canceled\"]]]}]",
             (unsigned long long)slow);
    uint64_t w2 = submit(ops);
    wait_status(w1, "waiting");
    wait_status(w2, "waiting");
    json_t *s = stats();
    assert_int_equal(stat_at(s, NULL, "dep_waiting"), 2);
    json_decref(s);
    char args[64];
    snprintf(args, sizeof args, "{\"id\":%llu}", (unsigned long long)slow);
    json_decref(ok("cancel_job", args));
    wait_status(slow, "canceled");
    wait_status(w1, "canceled");
    expect_json(field(w1, "opresult"), "[\"Job canceled by request\"]");
    wait_status(w2, "success");

    /* A dependency on an id not handed out yet, the job's own id among
     * them, is refused at submit: two jobs could wait for each other. */
    s = stats();
    uint64_t self = (uint64_t)stat_at(s, NULL, "last_job_id") + 1;
    json_decref(s);
    snprintf(ops, sizeof ops, "{\"ops\":[{\"op\":\"test.log\",\"depends\":[[%llu,[]]]}]}",
             (unsigned long long)self);
    assert_non_null(strstr(err("submit_job", ops, "InvalidDependency"), "does not exist"));

    /* Relative ids in a batch. */
    json_t *r = ok("submit_many_jobs",
                   "{\"jobs\":[[{\"op\":\"test.log\"}],"
                   "[{\"op\":\"test.log\",\"depends\":[[-1,[\"success\"]]]}],"
                   "[{\"op\":\"test.log\",\"depends\":[[-5,[]]]}],"
                   "[{\"op\":\"nope\"}],"
                   "[{\"op\":\"test.log\",\"depends\":[[-1,[]]]}]]}");
    assert_int_equal(json_array_size(r), 5);
    uint64_t first = (uint64_t)json_integer_value(json_array_get(json_array_get(r, 0), 1));
    uint64_t second = (uint64_t)json_integer_value(json_array_get(json_array_get(r, 1), 1));
    assert_true(json_is_true(json_array_get(json_array_get(r, 1), 0)));
    assert_int_equal(second, first + 1);
    expect_json(json_incref(json_array_get(r, 2)),
                "[false,\"Unable to resolve relative job ID -5\"]");
    assert_true(json_is_false(json_array_get(json_array_get(r, 3), 0)));
    expect_json(json_incref(json_array_get(r, 4)),
                "[false,\"Unable to resolve relative job ID -1\"]");
    json_decref(r);
    snprintf(want, sizeof want,
             "[{\"op\":\"test.log\",\"args\":{},\"priority\":0,\"depends\":[[%llu,[\"success\"]]]}]",
             (unsigned long long)first);
    expect_json(field(second, "ops"), want);
    wait_status(second, "success");

    /* An id handed out to a job that never was (the batch's third job, its
     * dependency unresolved): found missing when the dependant runs. */
    snprintf(ops, sizeof ops, "[{\"op\":\"test.log\",\"depends\":[[%llu,[]]]}]",
             (unsigned long long)(first + 2));
    uint64_t m = submit(ops);
    wait_status(m, "error");
    snprintf(want, sizeof want, "[[\"OpExecError\",[\"Dependency error: job %llu not found\"]]]",
             (unsigned long long)(first + 2));
    expect_json(field(m, "opresult"), want);
}

static void test_cancel_running(void **state)
{
    (void)state;
    uint64_t id = submit(DELAY30);
    wait_status(id, "running");
    char args[64], msg[128];
    snprintf(args, sizeof args, "{\"id\":%llu}", (unsigned long long)id);
    int64_t t0 = now_ms();
    snprintf(msg, sizeof msg, "Job %llu will be canceled", (unsigned long long)id);
    expect_pair(ok("cancel_job", args), true, msg);
    wait_status(id, "canceled");
    assert_true(now_ms() - t0 < 5000); /* not the 30 s of the delay */
    expect_json(field(id, "opresult"), "[\"Job canceled by request\"]");
    json_t *e = field(id, "end_ts");
    assert_int_equal(json_array_size(e), 2);
    json_decref(e);
    snprintf(msg, sizeof msg, "Job %llu is no longer waiting in the queue",
             (unsigned long long)id);
    expect_pair(ok("cancel_job", args), false, msg);
    expect_pair(ok("cancel_job", "{\"id\":424242}"), false, "Job 424242 not found");
    snprintf(args, sizeof args, "{\"id\":%llu,\"priority\":10}", (unsigned long long)id);
    snprintf(msg, sizeof msg, "Job %llu is finished", (unsigned long long)id);
    expect_pair(ok("change_job_priority", args), false, msg);
    json_t *st = stats();
    assert_int_equal(stat_at(st, "jobs", "canceled"), 1);
    assert_int_equal(stat_at(st, NULL, "running"), 0);
    json_decref(st);
}

static int64_t ts_us(json_t *ts)
{
    return json_integer_value(json_array_get(ts, 0)) * 1000000 +
           json_integer_value(json_array_get(ts, 1));
}

static void test_priority_order(void **state)
{
    (void)state;
    uint64_t blocker = submit(DELAY30);
    wait_status(blocker, "running");
    const char *job = "[{\"op\":\"test.delay\",\"args\":{\"duration\":0.02},\"priority\":%d}]";
    char ops[256], args[128], msg[256];
    const int prios[] = {0, 0, 10, -10, 0};
    uint64_t id[5];
    for (int i = 0; i < 5; i++) {
        snprintf(ops, sizeof ops, job, prios[i]);
        id[i] = submit(ops);
    }
    uint64_t A = id[0], B = id[1], C = id[2], Dj = id[3], E = id[4];
    wait_status(A, "queued");
    json_t *st = stats();
    assert_int_equal(stat_at(st, NULL, "running"), 1);
    assert_int_equal(stat_at(st, NULL, "max_running"), 1);
    json_decref(st);
    /* B moves up. */
    snprintf(args, sizeof args, "{\"id\":%llu,\"priority\":-10}", (unsigned long long)B);
    snprintf(msg, sizeof msg, "Priorities of pending opcodes for job %llu have been changed to -10",
             (unsigned long long)B);
    expect_pair(ok("change_job_priority", args), true, msg);
    expect_json(field(B, "priority"), "-10");
    expect_json(field(B, "oppriority"), "[-10]");
    json_t *bops = field(B, "ops");
    expect_json(json_incref(json_object_get(json_array_get(bops, 0), "priority")),
                "0"); /* the input never changes */
    json_decref(bops);
    /* E is canceled while queued: at once. */
    snprintf(args, sizeof args, "{\"id\":%llu}", (unsigned long long)E);
    snprintf(msg, sizeof msg, "Job %llu canceled", (unsigned long long)E);
    expect_pair(ok("cancel_job", args), true, msg);
    char s[32];
    status_of(E, s, sizeof s);
    assert_string_equal(s, "canceled");
    expect_json(field(E, "start_ts"), "null");
    snprintf(args, sizeof args, "{\"id\":%llu,\"priority\":0}", (unsigned long long)E);
    snprintf(msg, sizeof msg, "Job %llu is finished", (unsigned long long)E);
    expect_pair(ok("change_job_priority", args), false, msg);
    /* The running blocker has no pending opcode. */
    snprintf(args, sizeof args, "{\"id\":%llu,\"priority\":-10}", (unsigned long long)blocker);
    snprintf(msg, sizeof msg, "Job %llu had no pending opcodes", (unsigned long long)blocker);
    expect_pair(ok("change_job_priority", args), false, msg);
    expect_pair(ok("change_job_priority", "{\"id\":424242,\"priority\":0}"), false,
                "Job 424242 not found");
    /* Release the blocker: B, D (both -10: B was submitted first, and a
     * priority change keeps a job's place among its peers, as Ganeti
     * orders by job id), A, C. */
    snprintf(args, sizeof args, "{\"id\":%llu}", (unsigned long long)blocker);
    json_decref(ok("cancel_job", args));
    wait_status(blocker, "canceled");
    const uint64_t order[] = {B, Dj, A, C};
    for (int i = 0; i < 4; i++)
        wait_status(order[i], "success");
    for (int i = 1; i < 4; i++) {
        json_t *prev_end = field(order[i - 1], "end_ts"), *next = field(order[i], "start_ts");
        if (ts_us(prev_end) > ts_us(next))
            fail_msg("job %llu started before job %llu ended", (unsigned long long)order[i],
                     (unsigned long long)order[i - 1]);
        json_decref(prev_end);
        json_decref(next);
    }
}

static void test_archive(void **state)
{
    (void)state;
    uint64_t j[3];
    for (int i = 0; i < 3; i++)
        j[i] = submit(DELAY0);
    uint64_t running = submit(DELAY30);
    for (int i = 0; i < 3; i++)
        wait_status(j[i], "success");
    wait_status(running, "running");
    char args[64];
    snprintf(args, sizeof args, "{\"id\":%llu}", (unsigned long long)j[0]);
    expect_json(ok("archive_job", args), "true");
    expect_json(ok("archive_job", args), "false"); /* already */
    snprintf(args, sizeof args, "{\"id\":%llu}", (unsigned long long)running);
    expect_json(ok("archive_job", args), "false"); /* not finished */
    expect_json(ok("archive_job", "{\"id\":999999}"), "false");
    /* Listing leaves archived jobs out unless asked; by id finds them. */
    json_t *r = ok("query_jobs", "{\"fields\":[\"id\"]}");
    char want[256];
    snprintf(want, sizeof want, "[[%llu],[%llu],[%llu]]", (unsigned long long)j[1],
             (unsigned long long)j[2], (unsigned long long)running);
    expect_json(json_incref(json_object_get(r, "rows")), want);
    json_decref(r);
    r = ok("query_jobs", "{\"fields\":[\"id\",\"archived\"],\"archived\":true}");
    snprintf(want, sizeof want, "[[%llu,true],[%llu,false],[%llu,false],[%llu,false]]",
             (unsigned long long)j[0], (unsigned long long)j[1], (unsigned long long)j[2],
             (unsigned long long)running);
    expect_json(json_incref(json_object_get(r, "rows")), want);
    json_decref(r);
    expect_json(field(j[0], "archived"), "true");
    expect_json(field(j[0], "status"), "\"success\"");
    /* Auto-archive: nothing is an hour old; -1 takes every finished job. */
    expect_json(ok("auto_archive_jobs", "{\"age\":3600,\"timeout\":10}"), "[0,0]");
    expect_json(ok("auto_archive_jobs", "{\"age\":-1,\"timeout\":10}"), "[2,0]");
    expect_json(ok("auto_archive_jobs", "{\"age\":-1,\"timeout\":0.5}"), "[0,0]");
    json_t *st = stats();
    assert_int_equal(stat_at(st, NULL, "archived_jobs"), 3);
    assert_int_equal(stat_at(st, NULL, "live_jobs"), 1);
    assert_int_equal(stat_at(st, "jobs", "success"), 0);
    assert_int_equal(stat_at(st, "jobs", "running"), 1);
    json_decref(st);
    snprintf(args, sizeof args, "{\"id\":%llu}", (unsigned long long)running);
    json_decref(ok("cancel_job", args));
    wait_status(running, "canceled");
    expect_json(ok("auto_archive_jobs", "{\"age\":0,\"timeout\":10}"), "[1,0]");
}

static void test_query_paging(void **state)
{
    (void)state;
    char jobs[4096];
    size_t off = (size_t)snprintf(jobs, sizeof jobs, "{\"jobs\":[");
    for (int i = 0; i < 25; i++)
        off += (size_t)snprintf(jobs + off, sizeof jobs - off,
                                "%s[{\"op\":\"test.log\",\"args\":{\"messages\":[\"m%d\"]}}]",
                                i ? "," : "", i);
    snprintf(jobs + off, sizeof jobs - off, "]}");
    json_t *r = ok("submit_many_jobs", jobs);
    assert_int_equal(json_array_size(r), 25);
    for (size_t i = 0; i < 25; i++) {
        assert_true(json_is_true(json_array_get(json_array_get(r, i), 0)));
        assert_int_equal(json_integer_value(json_array_get(json_array_get(r, i), 1)),
                         (json_int_t)(i + 1));
    }
    json_decref(r);
    for (uint64_t id = 1; id <= 25; id++)
        wait_status(id, "success");
    /* Pages of 10: 1-10 more, 11-20 more, 21-25 done. */
    uint64_t after = 0, expect = 1;
    const bool more[] = {true, true, false};
    for (int p = 0; p < 3; p++) {
        char args[128];
        snprintf(args, sizeof args, "{\"limit\":10,\"after_id\":%llu}", (unsigned long long)after);
        r = ok("query_jobs", args);
        expect_json(json_incref(json_object_get(r, "fields")), "[\"id\",\"status\"]");
        json_t *rows = json_object_get(r, "rows");
        assert_int_equal(json_array_size(rows), p < 2 ? 10 : 5);
        for (size_t i = 0; i < json_array_size(rows); i++) {
            json_t *row = json_array_get(rows, i);
            assert_int_equal(json_integer_value(json_array_get(row, 0)), (json_int_t)expect++);
            assert_string_equal(json_string_value(json_array_get(row, 1)), "success");
            after = (uint64_t)json_integer_value(json_array_get(row, 0));
        }
        assert_int_equal(json_is_true(json_object_get(r, "more")), more[p]);
        json_decref(r);
    }
    /* Exactly at the end: no more. */
    r = ok("query_jobs", "{\"limit\":25}");
    assert_int_equal(json_array_size(json_object_get(r, "rows")), 25);
    assert_true(json_is_false(json_object_get(r, "more")));
    json_decref(r);
    r = ok("query_jobs", "{\"limit\":24}");
    assert_true(json_is_true(json_object_get(r, "more")));
    json_decref(r);
    /* Status filter. */
    r = ok("query_jobs", "{\"status\":[\"success\"],\"fields\":[\"id\"]}");
    assert_int_equal(json_array_size(json_object_get(r, "rows")), 25);
    json_decref(r);
    r = ok("query_jobs", "{\"status\":[\"queued\",\"error\"]}");
    assert_int_equal(json_array_size(json_object_get(r, "rows")), 0);
    assert_true(json_is_false(json_object_get(r, "more")));
    json_decref(r);
    /* By ids, in the given order; a missing id gives an id-only row. */
    r = ok("query_jobs", "{\"ids\":[3,999999,1],\"fields\":[\"status\",\"id\",\"log_serial\"]}");
    expect_json(json_incref(json_object_get(r, "rows")),
                "[[\"success\",3,1],[null,999999,null],[\"success\",1,1]]");
    json_decref(r);
    r = ok("query_jobs", "{\"ids\":[3,999999],\"status\":[\"success\"]}");
    expect_json(json_incref(json_object_get(r, "rows")), "[[3,\"success\"]]");
    json_decref(r);
    /* Every field at once. */
    r = ok("query_jobs",
           "{\"ids\":[2],\"fields\":[\"id\",\"status\",\"priority\",\"archived\",\"ops\","
           "\"opresult\",\"opstatus\",\"oplog\",\"opstart\",\"opexec\",\"opend\","
           "\"oppriority\",\"summary\",\"received_ts\",\"start_ts\",\"end_ts\","
           "\"log_serial\"]}");
    json_t *row = json_array_get(json_object_get(r, "rows"), 0);
    assert_int_equal(json_array_size(row), 17);
    assert_int_equal(json_integer_value(json_array_get(row, 0)), 2);
    assert_int_equal(json_integer_value(json_array_get(row, 2)), 0);
    assert_true(json_is_false(json_array_get(row, 3)));
    expect_json(json_incref(json_array_get(row, 5)), "[1]");
    expect_json(json_incref(json_array_get(row, 12)), "[\"test.log(1)\"]");
    for (int k = 8; k <= 10; k++)
        assert_int_equal(json_array_size(json_array_get(json_array_get(row, k), 0)), 2);
    for (int k = 13; k <= 15; k++)
        assert_int_equal(json_array_size(json_array_get(row, k)), 2);
    json_t *entry = json_array_get(json_array_get(json_array_get(row, 7), 0), 0);
    assert_string_equal(json_string_value(json_array_get(entry, 3)), "m1");
    json_decref(r);
}

static void test_pipelining(void **state)
{
    (void)state;
    enum { N = 100 };
    json_t *st0 = stats();
    int64_t pings_before = stat_at(st0, "requests", "ping");
    json_decref(st0);
    uint64_t ids[N];
    const char *method[N];
    for (int i = 0; i < N; i++) {
        switch (i % 3) {
        case 0:
            method[i] = "submit_job";
            ids[i] = send_req_on(D.sock, "submit_job",
                                 "{\"ops\":[{\"op\":\"test.log\",\"args\":{\"messages\":[\"p\"]}}]}");
            break;
        case 1:
            method[i] = "ping";
            ids[i] = send_req_on(D.sock, "ping", NULL);
            break;
        default:
            method[i] = "query_jobs";
            ids[i] = send_req_on(D.sock, "query_jobs", "{\"limit\":5}");
            break;
        }
    }
    bool seen[N] = {false};
    bool job_seen[N + 1] = {false};
    for (int n = 0; n < N; n++) {
        json_t *r = recv_any(D.sock, REPLY_TIMEOUT_MS);
        if (!r)
            fail_msg("only %d of %d pipelined replies", n, N);
        assert_true(json_is_true(json_object_get(r, "ok")));
        uint64_t rid = (uint64_t)json_integer_value(json_object_get(r, "id"));
        int i = -1;
        for (int k = 0; k < N; k++)
            if (ids[k] == rid)
                i = k;
        assert_true(i >= 0);
        assert_false(seen[i]);
        seen[i] = true;
        json_t *res = json_object_get(r, "result");
        if (!strcmp(method[i], "submit_job")) {
            json_int_t job = json_integer_value(res);
            assert_true(job >= 1 && job <= 34);
            assert_false(job_seen[job]);
            job_seen[job] = true;
        } else if (!strcmp(method[i], "ping")) {
            assert_int_equal(json_integer_value(json_object_get(res, "protocol")), 1);
        } else {
            assert_true(json_is_array(json_object_get(res, "rows")));
        }
        json_decref(r);
    }
    json_t *st = stats();
    assert_int_equal(stat_at(st, "requests", "submit_job"), 34);
    assert_int_equal(stat_at(st, "requests", "ping"), pings_before + 33);
    json_decref(st);
}

static void test_req_socket(void **state)
{
    (void)state;
    void *req = zmq_socket(D.zctx, ZMQ_REQ);
    int linger = 0;
    zmq_setsockopt(req, ZMQ_LINGER, &linger, sizeof linger);
    assert_int_equal(zmq_connect(req, D.endpoint), 0);
    for (int i = 0; i < 3; i++) {
        uint64_t id = send_req_on(req, i == 1 ? "submit_job" : "ping",
                                  i == 1 ? "{\"ops\":" DELAY0 "}" : NULL);
        json_t *r = recv_reply_on(req, id);
        assert_true(json_is_true(json_object_get(r, "ok")));
        if (i == 1)
            assert_int_equal(json_integer_value(json_object_get(r, "result")), 1);
        json_decref(r);
    }
    zmq_close(req);
    wait_status(1, "success");
}

int main(int argc, char **argv)
{
    const struct CMUnitTest all[] = {
        cmocka_unit_test_setup_teardown(test_protocol_errors, setup_default, stop_daemon),
        cmocka_unit_test_setup_teardown(test_too_large, setup_small_requests, stop_daemon),
        cmocka_unit_test_setup_teardown(test_queue_full, setup_max_jobs, stop_daemon),
        cmocka_unit_test_setup_teardown(test_drain_and_shutdown, setup_one_handler, stop_daemon),
        cmocka_unit_test_setup_teardown(test_sigterm, setup_short_grace, stop_daemon),
        cmocka_unit_test_setup_teardown(test_sigterm_twice, setup_default, stop_daemon),
        cmocka_unit_test_setup_teardown(test_jobs_run, setup_default, stop_daemon),
        cmocka_unit_test_setup_teardown(test_dependencies, setup_default, stop_daemon),
        cmocka_unit_test_setup_teardown(test_cancel_running, setup_default, stop_daemon),
        cmocka_unit_test_setup_teardown(test_priority_order, setup_one_runner, stop_daemon),
        cmocka_unit_test_setup_teardown(test_archive, setup_default, stop_daemon),
        cmocka_unit_test_setup_teardown(test_query_paging, setup_default, stop_daemon),
        cmocka_unit_test_setup_teardown(test_pipelining, setup_default, stop_daemon),
        cmocka_unit_test_setup_teardown(test_req_socket, setup_default, stop_daemon),
    };
    signal(SIGPIPE, SIG_IGN);
    if (argc > 1) {
        char name[128];
        snprintf(name, sizeof name, "test_%s", argv[1]);
        for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
            if (!strcmp(all[i].name, name))
                return _cmocka_run_group_tests(argv[1], &all[i], 1, NULL, NULL);
        fprintf(stderr, "no test named %s\n", argv[1]);
        return 2;
    }
    return cmocka_run_group_tests(all, NULL, NULL);
}
