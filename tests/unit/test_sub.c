/* test_sub.c: libjobq's event subscriber (jobq_sub_*) against a fake
 * daemon: a ROUTER (ping, query_jobs snapshots, events_since from a fake
 * replay ring) and an XPUB in one thread. XPUB rather than PUB so the fake
 * can wait until the subscriptions arrived before it publishes: no timing
 * luck involved.
 *
 * The fake publishes a script of events in which some are missing (they
 * are only in its ring), so the subscriber has to detect each gap and
 * fill it; some missing events are not in the ring either (too_old), which
 * forces a resync; a new epoch forces another. The test checks the exact
 * order of what is delivered, that nothing is delivered twice, and the
 * counters. The all-jobs script runs twice: one message per event, and on
 * the batched stream (jobq_sub_set_batched), where the fake sends each run
 * of consecutive events of one epoch as one "batch/" array, so the same
 * gaps fall inside and between batches.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>
#include <stdatomic.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#include <cmocka.h>

#include "jobq.h"
#include "jobq_json.h"

#define PAGE 3 /* events_since page size: forces paging */

typedef struct {
    char dir[64], rep_ep[128], pub_ep[128];
    void *ctx, *router, *xpub;
    json_t *ring;          /* every body the fake "published", any epoch */
    uint64_t lost_lo;      /* seqs lost_lo..lost_hi are not in the ring */
    uint64_t lost_hi;
    json_t *bounds;        /* ascending seqs: events_since answers up to the
                              first bound above after_seq (what the daemon had
                              published by then) */
    uint64_t epoch;        /* the fake daemon's epoch for events_since */
    json_t *snapshots;     /* query_jobs answers (full snapshots), in turn */
    size_t nsnap;
    json_t *check_reply;   /* answer to a job-mode change_serial check */
    json_t *script;        /* [topic, body] pairs published after the 1st snapshot */
    int subs_expected;     /* subscriptions to wait for */
    int subs;
    bool batched;          /* publish the script's events as batches; count
                              only "sys/" after "batch/" as a subscription */
    bool saw_batch;        /* "batch/" was subscribed */
    uint64_t hb_seq;       /* heartbeat every 100 ms after the script, when > 0 */
    atomic_int stop;
    int since_calls;       /* events_since requests served */
    int checks;            /* change_serial checks served */
} fake_t;

static json_t *ev(uint64_t seq, uint64_t epoch, uint64_t job, uint64_t serial, const char *st)
{
    return json_pack("{s:I, s:I, s:{s:I, s:I, s:s, s:s, s:[], s:[[I, [i,i], s, s]]}}", "seq",
                     (json_int_t)seq, "epoch", (json_int_t)epoch, "change", "job",
                     (json_int_t)job, "serial", (json_int_t)serial, "kind", "update", "status",
                     st, "ops", "log", (json_int_t)serial, 0, 0, "message", "entry");
}

static void send_json(void *sock, zmq_msg_t *rid, const char *topic, json_t *v)
{
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    assert_int_equal(jobq_json_to_msgpack(&pk, v, 32, NULL, 0), 0);
    if (rid) {
        zmq_msg_t copy;
        zmq_msg_init(&copy);
        zmq_msg_copy(&copy, rid);
        zmq_msg_send(&copy, sock, ZMQ_SNDMORE);
    } else {
        zmq_send(sock, topic, strlen(topic), ZMQ_SNDMORE);
    }
    zmq_send(sock, sb.data, sb.size, 0);
    msgpack_sbuffer_destroy(&sb);
}

static json_t *events_since(fake_t *f, const json_t *args)
{
    uint64_t after = (uint64_t)json_integer_value(json_object_get(args, "after_seq"));
    uint64_t epoch = (uint64_t)json_integer_value(json_object_get(args, "epoch"));
    f->since_calls++;
    bool too_old = epoch != f->epoch || (after + 1 >= f->lost_lo && after + 1 <= f->lost_hi);
    uint64_t bound = UINT64_MAX;
    size_t i;
    json_t *b;
    json_array_foreach(f->bounds, i, b)
        if ((uint64_t)json_integer_value(b) > after) {
            bound = (uint64_t)json_integer_value(b);
            break;
        }
    json_t *events = json_array();
    bool more = false;
    json_array_foreach(f->ring, i, b) {
        uint64_t seq = (uint64_t)json_integer_value(json_object_get(b, "seq"));
        if (too_old)
            break;
        if ((uint64_t)json_integer_value(json_object_get(b, "epoch")) != f->epoch ||
            seq <= after || seq > bound)
            continue;
        if (json_array_size(events) == PAGE) {
            more = true;
            break;
        }
        json_array_append(events, b);
    }
    return json_pack("{s:I, s:i, s:i, s:b, s:o, s:b}", "epoch", (json_int_t)f->epoch,
                     "first_seq", 1, "last_seq", 99, "too_old", too_old, "events", events,
                     "more", more);
}

static void serve_request(fake_t *f)
{
    zmq_msg_t rid, body;
    zmq_msg_init(&rid);
    zmq_msg_init(&body);
    zmq_msg_recv(&rid, f->router, 0);
    zmq_msg_recv(&body, f->router, 0);
    msgpack_unpacked upk;
    msgpack_unpacked_init(&upk);
    size_t off = 0;
    assert_int_equal(msgpack_unpack_next(&upk, zmq_msg_data(&body), zmq_msg_size(&body), &off),
                     MSGPACK_UNPACK_SUCCESS);
    json_t *req = jobq_json_from_msgpack(&upk.data, 32, NULL, 0);
    msgpack_unpacked_destroy(&upk);
    const char *method = json_string_value(json_object_get(req, "method"));
    json_t *args = json_object_get(req, "args"), *result = NULL;
    if (strcmp(method, "ping") == 0) {
        result = json_pack("{s:s, s:i, s:[i,i], s:I, s:[s]}", "version", "fake", "protocol", 1,
                           "time", 0, 0, "epoch", (json_int_t)f->epoch, "publish", f->pub_ep);
    } else if (strcmp(method, "query_jobs") == 0) {
        assert_true(json_is_true(json_object_get(args, "snapshot")));
        if (json_array_size(json_object_get(args, "fields")) == 2) {
            f->checks++;
            result = json_deep_copy(f->check_reply);
        } else {
            result = json_deep_copy(json_array_get(f->snapshots, f->nsnap));
            assert_non_null(result);
            f->epoch = (uint64_t)json_integer_value(json_object_get(result, "epoch"));
            f->nsnap++;
        }
    } else if (strcmp(method, "events_since") == 0) {
        result = events_since(f, args);
    } else {
        fail_msg("unexpected method %s", method);
    }
    json_t *rep = json_pack("{s:i, s:O, s:b, s:o}", "v", 1, "id", json_object_get(req, "id"),
                            "ok", 1, "result", result);
    send_json(f->router, &rid, NULL, rep);
    json_decref(rep);
    json_decref(req);
    zmq_msg_close(&rid);
    zmq_msg_close(&body);
}

static void *serve(void *arg)
{
    fake_t *f = arg;
    bool published = false;
    struct timespec last_hb = {0};
    while (!atomic_load(&f->stop)) {
        zmq_pollitem_t items[] = {{.socket = f->router, .events = ZMQ_POLLIN},
                                  {.socket = f->xpub, .events = ZMQ_POLLIN}};
        zmq_poll(items, 2, 20);
        if (items[0].revents & ZMQ_POLLIN)
            serve_request(f);
        if (items[1].revents & ZMQ_POLLIN) {
            char buf[64];
            int n = zmq_recv(f->xpub, buf, sizeof buf, 0);
            /* Batched: the subscriber's first socket (job/, sys/) is
             * replaced; its new one subscribes batch/, then sys/. */
            if (n == 7 && !memcmp(buf, "\1batch/", 7))
                f->saw_batch = true;
            if (n > 0 && buf[0] == 1 &&
                (!f->batched || (f->saw_batch && n == 5 && !memcmp(buf, "\1sys/", 5))))
                f->subs++;
        }
        if (!published && f->nsnap > 0 && f->subs >= f->subs_expected) {
            size_t i;
            json_t *pair, *batch = NULL;
            json_array_foreach(f->script, i, pair) {
                const char *topic = json_string_value(json_array_get(pair, 0));
                json_t *body = json_array_get(pair, 1);
                if (!f->batched || strncmp(topic, "job/", 4) != 0) {
                    if (batch)
                        send_json(f->xpub, NULL, "batch/", batch);
                    json_decref(batch);
                    batch = NULL;
                    send_json(f->xpub, NULL, topic, body);
                    continue;
                }
                /* A batch holds consecutive seqs of one epoch. */
                json_t *prev = batch ? json_array_get(batch, json_array_size(batch) - 1) : NULL;
                if (prev && (json_integer_value(json_object_get(prev, "seq")) + 1 !=
                                 json_integer_value(json_object_get(body, "seq")) ||
                             !json_equal(json_object_get(prev, "epoch"),
                                         json_object_get(body, "epoch")))) {
                    send_json(f->xpub, NULL, "batch/", batch);
                    json_decref(batch);
                    batch = NULL;
                }
                if (!batch)
                    batch = json_array();
                json_array_append(batch, body);
            }
            if (batch)
                send_json(f->xpub, NULL, "batch/", batch);
            json_decref(batch);
            published = true;
        }
        struct timespec now;
        clock_gettime(CLOCK_MONOTONIC, &now);
        long ms = (now.tv_sec - last_hb.tv_sec) * 1000 + (now.tv_nsec - last_hb.tv_nsec) / 1000000;
        if (published && f->hb_seq && ms >= 100) {
            json_t *hb = json_pack("{s:I, s:I, s:b, s:[i,i]}", "seq", (json_int_t)f->hb_seq,
                                   "epoch", (json_int_t)f->epoch, "heartbeat", 1, "time", 0, 0);
            send_json(f->xpub, NULL, "sys/heartbeat", hb);
            json_decref(hb);
            last_hb = now;
        }
    }
    return NULL;
}

static void fake_start(fake_t *f, pthread_t *th)
{
    snprintf(f->dir, sizeof f->dir, "/tmp/jobq-sub-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    snprintf(f->rep_ep, sizeof f->rep_ep, "ipc://%s/jobq.sock", f->dir);
    snprintf(f->pub_ep, sizeof f->pub_ep, "ipc://%s/events.sock", f->dir);
    f->ctx = zmq_ctx_new();
    f->router = zmq_socket(f->ctx, ZMQ_ROUTER);
    f->xpub = zmq_socket(f->ctx, ZMQ_XPUB);
    int linger = 0, verbose = 1;
    zmq_setsockopt(f->router, ZMQ_LINGER, &linger, sizeof linger);
    zmq_setsockopt(f->xpub, ZMQ_LINGER, &linger, sizeof linger);
    zmq_setsockopt(f->xpub, ZMQ_XPUB_VERBOSE, &verbose, sizeof verbose);
    assert_int_equal(zmq_bind(f->router, f->rep_ep), 0);
    assert_int_equal(zmq_bind(f->xpub, f->pub_ep), 0);
    atomic_init(&f->stop, 0);
    assert_int_equal(pthread_create(th, NULL, serve, f), 0);
}

static void fake_stop(fake_t *f, pthread_t th)
{
    atomic_store(&f->stop, 1);
    pthread_join(th, NULL);
    zmq_close(f->router);
    zmq_close(f->xpub);
    zmq_ctx_term(f->ctx);
    char path[200];
    snprintf(path, sizeof path, "%s/jobq.sock", f->dir);
    unlink(path);
    snprintf(path, sizeof path, "%s/events.sock", f->dir);
    unlink(path);
    rmdir(f->dir);
    json_decref(f->ring);
    json_decref(f->snapshots);
    json_decref(f->check_reply);
    json_decref(f->script);
    json_decref(f->bounds);
}

/* Adds an event to the ring and, when published, to the script. */
static void add(fake_t *f, json_t *body, bool published)
{
    json_array_append(f->ring, body);
    if (published) {
        char topic[40];
        snprintf(topic, sizeof topic, "job/%lld/",
                 (long long)json_integer_value(
                     json_object_get(json_object_get(body, "change"), "job")));
        json_array_append_new(f->script, json_pack("[s,O]", topic, body));
    }
    json_decref(body);
}

static json_t *next_event(jobq_sub_t *s)
{
    json_t *e = NULL;
    assert_int_equal(jobq_sub_next(s, &e, 10000), 1);
    return e;
}

static void expect_change(jobq_sub_t *s, uint64_t seq, uint64_t epoch, uint64_t job,
                          uint64_t serial, bool recovered)
{
    json_t *e = next_event(s);
    assert_string_equal(json_string_value(json_object_get(e, "type")), "change");
    assert_int_equal(json_integer_value(json_object_get(e, "seq")), seq);
    assert_int_equal(json_integer_value(json_object_get(e, "epoch")), epoch);
    assert_int_equal(json_integer_value(json_object_get(e, "job")), job);
    assert_int_equal(json_integer_value(json_object_get(e, "serial")), serial);
    assert_string_equal(json_string_value(json_object_get(e, "kind")), "update");
    assert_int_equal(json_is_true(json_object_get(e, "recovered")), recovered);
    json_decref(e);
}

static void expect_resync(jobq_sub_t *s, const char *reason, uint64_t seq, size_t nrows)
{
    json_t *e = next_event(s);
    assert_string_equal(json_string_value(json_object_get(e, "type")), "resync");
    assert_string_equal(json_string_value(json_object_get(e, "reason")), reason);
    assert_int_equal(json_integer_value(json_object_get(e, "seq")), seq);
    assert_int_equal(json_array_size(json_object_get(e, "rows")), nrows);
    json_t *fields = json_object_get(e, "fields");
    assert_string_equal(json_string_value(json_array_get(fields, 0)), "id");
    assert_string_equal(json_string_value(json_array_get(fields, 1)), "change_serial");
    json_decref(e);
}

static json_t *snap(uint64_t seq, uint64_t epoch, json_t *rows)
{
    return json_pack("{s:[s,s,s], s:o, s:b, s:I, s:I}", "fields", "id", "change_serial",
                     "status", "rows", rows, "more", 0, "seq", (json_int_t)seq, "epoch",
                     (json_int_t)epoch);
}

/* All-jobs mode: seq gaps, a heartbeat gap, too_old, a new epoch, a stale
 * event of the old epoch; per event, or on the batched stream. */
static void all_jobs(bool batched)
{
    fake_t f = {.ring = json_array(), .script = json_array(), .snapshots = json_array(),
                .epoch = 1, .subs_expected = batched ? 1 : 2, .lost_lo = 15, .lost_hi = 19,
                .bounds = json_pack("[i,i]", 8, 14), .batched = batched};
    /* Job 1: serial = seq up to 14. Published: 2 (before the snapshot
     * point), 3, 4, 7..12; 5, 6 dropped (gap found by seq 7), 13, 14
     * dropped (gap found by the heartbeat of seq 14). */
    for (uint64_t seq = 1; seq <= 14; seq++)
        add(&f, ev(seq, 1, 1, seq, "running"),
            seq >= 2 && seq != 5 && seq != 6 && seq != 13 && seq != 14);
    json_array_append_new(f.script, json_pack("[s,{s:i,s:i,s:b,s:[i,i]}]", "sys/heartbeat", "seq",
                                              14, "epoch", 1, "heartbeat", 1, "time", 0, 0));
    /* 15..19 lost for good: 20 shows the gap, events_since says too_old. */
    add(&f, ev(20, 1, 2, 5, "running"), true);
    add(&f, ev(21, 1, 2, 6, "success"), true);
    /* The daemon restarts: epoch 2; then a stale epoch-1 event. */
    add(&f, ev(1, 2, 1, 1, "queued"), true);
    add(&f, ev(2, 2, 1, 2, "running"), true);
    add(&f, ev(22, 1, 2, 7, "success"), true);
    add(&f, ev(3, 2, 1, 3, "success"), true);
    json_array_append_new(f.snapshots, snap(2, 1, json_pack("[[i,i,s]]", 1, 2, "running")));
    json_array_append_new(f.snapshots, snap(20, 1, json_pack("[[i,i,s],[i,i,s]]", 1, 14,
                                                             "success", 2, 5, "running")));
    json_array_append_new(f.snapshots, snap(1, 2, json_pack("[[i,i,s]]", 1, 1, "queued")));
    pthread_t th;
    fake_start(&f, &th);

    jobq_client_t *c = jobq_client_new(f.rep_ep);
    jobq_sub_t *s = jobq_sub_new(c, NULL, NULL, 0, 30000);
    assert_non_null(s);
    assert_string_equal(jobq_sub_endpoint(s), f.pub_ep);
    assert_int_equal(jobq_sub_set_batched(s, batched), 0);

    expect_resync(s, "start", 2, 1);
    expect_change(s, 3, 1, 1, 3, false);
    expect_change(s, 4, 1, 1, 4, false);
    for (uint64_t seq = 5; seq <= 8; seq++) /* 7 and 8 came back with 5 and 6 */
        expect_change(s, seq, 1, 1, seq, true);
    for (uint64_t seq = 9; seq <= 12; seq++)
        expect_change(s, seq, 1, 1, seq, false);
    expect_change(s, 13, 1, 1, 13, true);
    expect_change(s, 14, 1, 1, 14, true);
    expect_resync(s, "too_old", 20, 2);
    expect_change(s, 21, 1, 2, 6, false);
    expect_resync(s, "epoch", 1, 1);
    expect_change(s, 2, 2, 1, 2, false);
    expect_change(s, 3, 2, 1, 3, false);
    assert_true(jobq_sub_live(s));

    jobq_sub_counters_t n;
    jobq_sub_counters(s, &n);
    assert_int_equal(n.delivered, 15);
    assert_int_equal(n.recovered, 6);
    assert_int_equal(n.gaps, 3);    /* seq 7, heartbeat 14, seq 20 */
    assert_int_equal(n.resyncs, 2); /* too_old, epoch; not the start */
    assert_int_equal(n.heartbeats, 1);
    /* Skipped: stream 2 (<= seq0), 8 (recovered already), 20 after the
     * resync is not seen again; epoch 2's seq 1 (<= seq0). */
    assert_true(n.skipped >= 3);
    /* Nothing else: the stale epoch-1 event caused no resync. */
    json_t *e = NULL;
    assert_int_equal(jobq_sub_next(s, &e, 300), 0);
    assert_null(e);
    assert_int_equal(f.since_calls, 4); /* after 4 (two pages), after 12, after 14 */

    assert_int_equal(jobq_sub_set_batched(s, !batched), -1); /* too late now */

    jobq_sub_destroy(&s);
    assert_null(s);
    jobq_sub_destroy(&s);
    jobq_client_destroy(&c);
    fake_stop(&f, th);
}

static void test_all_jobs(void **state)
{
    (void)state;
    all_jobs(false);
}

static void test_all_jobs_batched(void **state)
{
    (void)state;
    all_jobs(true);
}

/* Job mode: a serial gap filled by events_since (filtered), and a lost
 * last event found by the change_serial check on heartbeats. */
static void test_one_job(void **state)
{
    (void)state;
    fake_t f = {.ring = json_array(), .script = json_array(), .snapshots = json_array(),
                .epoch = 1, .subs_expected = 2, .hb_seq = 11,
                .bounds = json_pack("[i,i]", 9, 11)};
    /* Job 2 has serials 1 (seq 3), 2 (5), 3 (7, dropped), 4 (9), 5 (11,
     * dropped: its last); other jobs' events in between. */
    add(&f, ev(1, 1, 1, 1, "queued"), false);
    add(&f, ev(2, 1, 1, 2, "running"), false);
    add(&f, ev(3, 1, 2, 1, "queued"), false);
    for (uint64_t seq = 4; seq <= 11; seq++) {
        if (seq % 2)
            add(&f, ev(seq, 1, 2, (seq - 1) / 2, seq == 11 ? "success" : "running"),
                seq != 7 && seq != 11);
        else
            add(&f, ev(seq, 1, 1, seq - 1, "running"), false);
    }
    json_array_append_new(f.snapshots, snap(3, 1, json_pack("[[i,i,s]]", 2, 1, "queued")));
    f.check_reply = json_pack("{s:[s,s], s:[[i,i]], s:b, s:i, s:i}", "fields", "id",
                              "change_serial", "rows", 2, 5, "more", 0, "seq", 11, "epoch", 1);
    pthread_t th;
    fake_start(&f, &th);
    jobq_client_t *c = jobq_client_new(f.rep_ep);
    uint64_t job = 2;
    jobq_sub_t *s = jobq_sub_new(c, f.pub_ep, &job, 1, 30000);
    assert_int_equal(jobq_sub_set_batched(s, true), -1); /* every job's stream only */
    assert_int_equal(jobq_client_status(c), JOBQ_ERR_BAD_ARGUMENT);
    assert_non_null(s);
    json_t *fields = json_pack("[s]", "status");
    assert_int_equal(jobq_sub_set_fields(s, fields), 0);
    json_decref(fields);

    expect_resync(s, "start", 3, 1);
    expect_change(s, 5, 1, 2, 2, false);
    expect_change(s, 7, 1, 2, 3, true);
    expect_change(s, 9, 1, 2, 4, true); /* came with 7; the stream's copy is skipped */
    expect_change(s, 11, 1, 2, 5, true); /* found by the check, within ~2 s */

    jobq_sub_counters_t n;
    jobq_sub_counters(s, &n);
    assert_int_equal(n.delivered, 4);
    assert_int_equal(n.recovered, 3);
    assert_int_equal(n.gaps, 2);
    assert_int_equal(n.resyncs, 0);
    assert_true(n.checks >= 1);
    assert_true(n.heartbeats >= 1);
    jobq_sub_destroy(&s);
    jobq_client_destroy(&c);
    fake_stop(&f, th);
}

/* No publish entry, or no socket file: jobq_sub_new fails with a reason. */
static void test_no_endpoint(void **state)
{
    (void)state;
    jobq_client_t *c = jobq_client_new("ipc:///nonexistent-dir/jobq.sock");
    uint64_t job = 1;
    assert_null(jobq_sub_new(c, "ipc:///nonexistent-dir/events.sock", &job, 1, 30000));
    assert_int_equal(jobq_client_status(c), JOBQ_ERR_TRANSPORT);
    assert_non_null(strstr(jobq_client_reason(c), "/nonexistent-dir/events.sock"));
    assert_null(jobq_sub_new(c, NULL, NULL, 0, 30000)); /* ping fails: no daemon */
    assert_int_equal(jobq_client_status(c), JOBQ_ERR_NOT_RUNNING);
    jobq_client_destroy(&c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_all_jobs),
        cmocka_unit_test(test_all_jobs_batched),
        cmocka_unit_test(test_one_job),
        cmocka_unit_test(test_no_endpoint),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
