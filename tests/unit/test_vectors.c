/* test_vectors.c: the golden protocol vectors of tests/vectors/ (see its
 * README.md) against the C code.
 *
 * - Decoding: every request vector goes through the daemon's
 *   wire_request_parse (its arguments have the documented keys and
 *   types), every reply vector through wire_reply_parse (its result as
 *   docs/protocol.md describes it), the event bodies (and the events of
 *   events_since) have exactly the documented keys of their kind, the
 *   worker messages the keys and types of their type.
 * - Encoding: libjobq's client sends exactly the bytes of every request
 *   vector, one call per method (the snapshot through jobq_sub), to a fake
 *   daemon (a ROUTER in a thread) that answers with the reply vectors, and
 *   decodes each into the vector's result; wire_reply_error and
 *   wire_reply_keepalive make error_reply and wait_for_job_change_keepalive;
 *   libjobq's worker API sends exactly worker_hello, worker_feedback,
 *   worker_done_ok, worker_done_error, worker_heartbeat and
 *   worker_disconnect, while it reads the daemon's vectors (welcome,
 *   assign, cancel, revoke, error, disconnect) into the right events.
 *
 * The readable form (NAME.json) of a vector gives the values the C side
 * builds its messages from, so the key order there is the one compared. */
#include <dirent.h>
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
       T_MAP = 128, T_ANY = 255, T_OPT = 256 /* the key may be absent */ };

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

/* Every key of shape is in map (unless T_OPT) with an allowed type, and
 * map has no other key. */
static void check_shape(const char *what, const msgpack_object *map, const shape_t *shape)
{
    if (map->type != MSGPACK_OBJECT_MAP)
        fail_msg("%s: not a map", what);
    size_t n = 0;
    for (const shape_t *s = shape; s->key; s++, n++) {
        const msgpack_object *v = wire_map_get(map, s->key);
        if (!v && (s->types & T_OPT)) {
            n--;
            continue;
        }
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

#define WFJC_ARGS                                                                              \
    {"id", T_UINT}, {"fields", T_ARRAY}, {"prev_job_info", T_ARRAY | T_NIL},                   \
        {"prev_log_serial", T_UINT | T_NIL}, {"timeout", T_FLOAT | T_UINT}

/* Every request vector: its method, id, and its arguments with the types
 * docs/protocol.md gives them (exactly these keys). The ids are one
 * client's counter: a client under test sends them in this order (id 3
 * is the request error_reply answers). */
static const struct {
    const char *name, *method;
    uint64_t id;
    shape_t args[8];
} req_vecs[] = {
    {"ping_request", "ping", 1, {{0}}},
    {"submit_job_request", "submit_job", 2,
     {{"ops", T_ARRAY}, {"ignore_drain", T_BOOL}, {"token", T_STR}, {0}}},
    {"submit_many_jobs_request", "submit_many_jobs", 4,
     {{"jobs", T_ARRAY}, {"ignore_drain", T_BOOL}, {"token", T_STR}, {0}}},
    {"query_jobs_request", "query_jobs", 5,
     {{"fields", T_ARRAY}, {"status", T_ARRAY}, {"after_id", T_UINT}, {"limit", T_UINT},
      {"archived", T_BOOL}, {0}}},
    {"query_jobs_ids_request", "query_jobs", 6, {{"ids", T_ARRAY}, {"fields", T_ARRAY}, {0}}},
    {"query_jobs_snapshot_request", "query_jobs", 7,
     {{"ids", T_ARRAY}, {"fields", T_ARRAY}, {"snapshot", T_BOOL}, {0}}},
    {"wait_for_job_change_request", "wait_for_job_change", 8, {WFJC_ARGS, {0}}},
    {"wait_for_job_change_nochange_request", "wait_for_job_change", 9, {WFJC_ARGS, {0}}},
    {"wait_for_job_change_unknown_request", "wait_for_job_change", 10, {WFJC_ARGS, {0}}},
    {"change_job_priority_request", "change_job_priority", 11,
     {{"id", T_UINT}, {"priority", T_UINT | T_NINT}, {0}}},
    {"cancel_job_request", "cancel_job", 12, {{"id", T_UINT}, {0}}},
    {"archive_job_request", "archive_job", 13, {{"id", T_UINT}, {0}}},
    {"auto_archive_jobs_request", "auto_archive_jobs", 14,
     {{"age", T_UINT | T_NINT}, {"timeout", T_UINT | T_FLOAT}, {0}}},
    {"set_drain_flag_request", "set_drain_flag", 15, {{"flag", T_BOOL}, {0}}},
    {"stats_request", "stats", 16, {{0}}},
    {"events_since_request", "events_since", 17,
     {{"after_seq", T_UINT}, {"epoch", T_UINT}, {"limit", T_UINT}, {0}}},
    {"events_since_too_old_request", "events_since", 18,
     {{"after_seq", T_UINT}, {"epoch", T_UINT}, {0}}},
    {"list_fields_request", "list_fields", 19, {{0}}},
    {"list_opcodes_request", "list_opcodes", 20, {{0}}},
    {"http_token_request", "http_token", 21, {{"ttl", T_UINT}, {0}}},
    {"shutdown_request", "shutdown", 22, {{"now", T_BOOL}, {0}}},
    /* A cluster's (hand-kept: RAFT_SPEC's shapes). */
    {"query_nodes_request", "query_nodes", 23, {{0}}},
    {"add_node_request", "add_node", 24,
     {{"id", T_UINT}, {"address", T_STR}, {"role", T_STR}, {"name", T_STR | T_OPT},
      {"endpoints", T_ARRAY}, {0}}},
    {"remove_node_request", "remove_node", 25, {{"id", T_UINT}, {0}}},
    {"transfer_leader_request", "transfer_leader", 26, {{"id", T_UINT | T_NIL}, {0}}},
};
#define N_REQ_VECS (sizeof req_vecs / sizeof req_vecs[0])

static void check_opcode(const char *what, const msgpack_object *op)
{
    check_shape(what, op,
                (shape_t[]){{"op", T_STR}, {"args", T_MAP | T_OPT},
                            {"priority", T_UINT | T_NINT | T_OPT}, {"depends", T_ARRAY | T_OPT},
                            {0}});
}

static void test_requests_parse(void **state)
{
    (void)state;
    for (size_t i = 0; i < N_REQ_VECS; i++) {
        msgpack_unpacked upk;
        blob_t b = unpack_vector(req_vecs[i].name, &upk);
        wire_request_t req;
        char err[128] = "";
        if (wire_request_parse(&upk.data, &req, err, sizeof err) != JOBQ_ERR_NONE)
            fail_msg("%s: %s", req_vecs[i].name, err);
        assert_true(req.has_id);
        assert_int_equal(req.id, req_vecs[i].id);
        assert_int_equal(req.method_len, strlen(req_vecs[i].method));
        assert_memory_equal(req.method, req_vecs[i].method, req.method_len);
        assert_non_null(req.args);
        /* The envelope as documented, keys in libjobq's order. */
        const msgpack_object_kv *kv = upk.data.via.map.ptr;
        assert_int_equal(upk.data.via.map.size, 4);
        static const char *const env[] = {"v", "id", "method", "args"};
        for (int k = 0; k < 4; k++)
            assert_true(wire_str_eq(&kv[k].key, env[k]));
        check_shape(req_vecs[i].name, req.args, req_vecs[i].args);
        msgpack_unpacked_destroy(&upk);
        free(b.data);
    }
    /* The opcodes of the submissions as documented. */
    msgpack_unpacked upk;
    blob_t b = unpack_vector("submit_job_request", &upk);
    const msgpack_object *ops = wire_map_get(wire_map_get(&upk.data, "args"), "ops");
    check_opcode("submit_job opcode", &ops->via.array.ptr[0]);
    msgpack_unpacked_destroy(&upk);
    free(b.data);
    b = unpack_vector("submit_many_jobs_request", &upk);
    const msgpack_object *jobs = wire_map_get(wire_map_get(&upk.data, "args"), "jobs");
    for (uint32_t j = 0; j < jobs->via.array.size; j++) {
        assert_int_equal(jobs->via.array.ptr[j].type, MSGPACK_OBJECT_ARRAY);
        for (uint32_t k = 0; k < jobs->via.array.ptr[j].via.array.size; k++)
            check_opcode("submit_many_jobs opcode", &jobs->via.array.ptr[j].via.array.ptr[k]);
    }
    msgpack_unpacked_destroy(&upk);
    free(b.data);
}

/* An array of n items (any n when n < 0), each of one of the types. */
static void check_array(const char *what, const msgpack_object *o, int n, int types)
{
    if (o->type != MSGPACK_OBJECT_ARRAY || (n >= 0 && o->via.array.size != (uint32_t)n))
        fail_msg("%s: not an array of %d", what, n);
    for (uint32_t i = 0; i < o->via.array.size; i++)
        if (!(type_bit(&o->via.array.ptr[i]) & types))
            fail_msg("%s: item %u has the wrong type", what, i);
}

/* A log entry: [serial, timestamp, type, message]. */
static void check_log_entry(const char *what, const msgpack_object *e)
{
    check_array(what, e, 4, T_ANY);
    assert_int_equal(e->via.array.ptr[0].type, MSGPACK_OBJECT_POSITIVE_INTEGER);
    assert_true(is_ts(&e->via.array.ptr[1]));
    assert_int_equal(e->via.array.ptr[2].type, MSGPACK_OBJECT_STR);
}

/* A change record of docs/protocol.md ("Events"): exactly the documented
 * keys for its kind, with their types. */
static void check_change(const char *what, const msgpack_object *ch, const char *kind)
{
    assert_true(wire_str_eq(wire_map_get(ch, "kind"), kind));
    bool submit = strcmp(kind, "submit") == 0;
    check_shape(what, ch,
                (shape_t[]){{"job", T_UINT}, {"serial", T_UINT}, {"kind", T_STR},
                            {"time", T_ARRAY}, {"status", T_STR}, {"priority", T_UINT | T_NINT},
                            {"received_ts", T_ARRAY | T_NIL}, {"start_ts", T_ARRAY | T_NIL},
                            {"end_ts", T_ARRAY | T_NIL},
                            /* T_OPT alone: absent (no type matches) */
                            {"input", submit ? T_ARRAY : T_OPT},
                            {"summary", submit ? T_ARRAY : T_OPT},
                            {"client", submit ? T_MAP | T_OPT : T_OPT},
                            {"owner", submit ? T_STR | T_OPT : T_OPT},
                            {"ops", T_ARRAY}, {"log", T_ARRAY},
                            {"log_op", T_UINT | T_NIL}, {"log_ops", T_ARRAY | T_OPT}, {0}});
    assert_true(is_ts(wire_map_get(ch, "time")) && wire_map_get(ch, "time")->type != MSGPACK_OBJECT_NIL);
    assert_true(is_ts(wire_map_get(ch, "received_ts")) && is_ts(wire_map_get(ch, "start_ts")) &&
                is_ts(wire_map_get(ch, "end_ts")));
    const msgpack_object *ops = wire_map_get(ch, "ops");
    for (uint32_t i = 0; i < ops->via.array.size; i++) {
        const msgpack_object *op = &ops->via.array.ptr[i];
        check_shape("change op", op,
                    (shape_t[]){{"index", T_UINT}, {"status", T_STR},
                                {"priority", T_UINT | T_NINT}, {"start_ts", T_ARRAY | T_NIL},
                                {"exec_ts", T_ARRAY | T_NIL}, {"end_ts", T_ARRAY | T_NIL},
                                {"result", T_ANY}, {"attempt", T_UINT}, {"retries", T_UINT},
                                {"worker", T_STR | T_NIL}, {0}});
        assert_true(is_ts(wire_map_get(op, "start_ts")) && is_ts(wire_map_get(op, "exec_ts")) &&
                    is_ts(wire_map_get(op, "end_ts")));
    }
    if (submit) {
        const msgpack_object *input = wire_map_get(ch, "input");
        for (uint32_t i = 0; i < input->via.array.size; i++)
            check_opcode("change input", &input->via.array.ptr[i]);
        check_array("change summary", wire_map_get(ch, "summary"), (int)input->via.array.size,
                    T_STR);
        assert_int_equal(ops->via.array.size, input->via.array.size);
        const msgpack_object *client = wire_map_get(ch, "client");
        if (client)
            check_shape("change client", client,
                        (shape_t[]){{"token", T_STR}, {"hash", T_UINT},
                                    {"reply", T_ANY | T_OPT}, {0}});
    }
    const msgpack_object *log = wire_map_get(ch, "log");
    for (uint32_t i = 0; i < log->via.array.size; i++)
        check_log_entry("change log entry", &log->via.array.ptr[i]);
    /* log_op names the entries' opcode when there are entries. */
    assert_int_equal(wire_map_get(ch, "log_op")->type == MSGPACK_OBJECT_NIL,
                     log->via.array.size == 0);
    if (strcmp(kind, "archive") == 0)
        assert_true(ops->via.array.size == 0 && log->via.array.size == 0);
}

/* An event body: {seq, epoch, change}. */
static void check_event(const char *what, const msgpack_object *ev, const char *kind)
{
    check_shape(what, ev, (shape_t[]){{"seq", T_UINT}, {"epoch", T_UINT}, {"change", T_MAP}, {0}});
    const msgpack_object *ch = wire_map_get(ev, "change");
    if (!kind) {
        const msgpack_object *k = wire_map_get(ch, "kind");
        kind = wire_str_eq(k, "submit") ? "submit" : wire_str_eq(k, "update") ? "update" : "archive";
    }
    check_change(what, ch, kind);
}

static void check_rows(const msgpack_object *res)
{
    uint32_t nfields = wire_map_get(res, "fields")->via.array.size;
    check_array("fields", wire_map_get(res, "fields"), -1, T_STR);
    const msgpack_object *rows = wire_map_get(res, "rows");
    check_array("rows", rows, -1, T_ARRAY);
    for (uint32_t i = 0; i < rows->via.array.size; i++)
        assert_int_equal(rows->via.array.ptr[i].via.array.size, nfields);
}

/* The result of each reply vector, as docs/protocol.md describes it. */
static void check_result(const char *name, const msgpack_object *r)
{
    if (!strcmp(name, "ping_reply")) {
        check_shape("ping result", r,
                    (shape_t[]){{"protocols", T_ARRAY}, {"token_window", T_UINT},
                                {"epoch", T_UINT}, {"publish", T_ARRAY}, {"workers", T_ARRAY},
                                {"version", T_STR}, {"protocol", T_UINT}, {"time", T_ARRAY},
                                {0}});
        assert_true(is_ts(wire_map_get(r, "time")));
    } else if (!strcmp(name, "submit_job_reply")) {
        assert_int_equal(r->type, MSGPACK_OBJECT_POSITIVE_INTEGER);
    } else if (!strcmp(name, "submit_many_jobs_reply")) {
        check_array(name, r, -1, T_ARRAY);
        for (uint32_t i = 0; i < r->via.array.size; i++) {
            const msgpack_object *e = &r->via.array.ptr[i];
            check_array(name, e, 2, T_ANY);
            assert_int_equal(e->via.array.ptr[0].type, MSGPACK_OBJECT_BOOLEAN);
            assert_int_equal(e->via.array.ptr[1].type,
                             e->via.array.ptr[0].via.boolean ? MSGPACK_OBJECT_POSITIVE_INTEGER
                                                             : MSGPACK_OBJECT_STR);
        }
    } else if (!strcmp(name, "query_jobs_reply") || !strcmp(name, "query_jobs_ids_reply")) {
        check_shape(name, r,
                    (shape_t[]){{"fields", T_ARRAY}, {"rows", T_ARRAY}, {"more", T_BOOL}, {0}});
        check_rows(r);
    } else if (!strcmp(name, "query_jobs_snapshot_reply")) {
        check_shape(name, r,
                    (shape_t[]){{"seq", T_UINT}, {"epoch", T_UINT}, {"fields", T_ARRAY},
                                {"rows", T_ARRAY}, {"more", T_BOOL}, {0}});
        check_rows(r);
    } else if (!strcmp(name, "wait_for_job_change_reply")) {
        check_array(name, r, 2, T_ARRAY);
        const msgpack_object *log = &r->via.array.ptr[1];
        for (uint32_t i = 0; i < log->via.array.size; i++)
            check_log_entry(name, &log->via.array.ptr[i]);
    } else if (!strcmp(name, "wait_for_job_change_nochange_reply")) {
        assert_true(wire_str_eq(r, "nochange"));
    } else if (!strcmp(name, "wait_for_job_change_unknown_reply")) {
        assert_int_equal(r->type, MSGPACK_OBJECT_NIL);
    } else if (!strcmp(name, "change_job_priority_reply") || !strcmp(name, "cancel_job_reply")) {
        check_array(name, r, 2, T_ANY);
        assert_int_equal(r->via.array.ptr[0].type, MSGPACK_OBJECT_BOOLEAN);
        assert_int_equal(r->via.array.ptr[1].type, MSGPACK_OBJECT_STR);
    } else if (!strcmp(name, "archive_job_reply") || !strcmp(name, "set_drain_flag_reply") ||
               !strcmp(name, "shutdown_reply")) {
        assert_int_equal(r->type, MSGPACK_OBJECT_BOOLEAN);
    } else if (!strcmp(name, "http_token_reply")) {
        check_shape(name, r,
                    (shape_t[]){{"token", T_STR}, {"role", T_STR}, {"owner", T_STR},
                                {"expires", T_ARRAY}, {0}});
        check_array("http_token expires", wire_map_get(r, "expires"), 2, T_UINT);
    } else if (!strcmp(name, "auto_archive_jobs_reply")) {
        check_array(name, r, 2, T_UINT);
    } else if (!strcmp(name, "stats_reply")) {
        /* The documented counters (the daemon adds more). */
        static const shape_t doc[] = {
            {"version", T_STR}, {"uptime", T_FLOAT | T_UINT}, {"threads", T_UINT | T_NIL},
            {"shards", T_UINT}, {"jobs", T_MAP}, {"live_jobs", T_UINT},
            {"archived_jobs", T_UINT}, {"max_jobs", T_UINT}, {"running", T_UINT},
            {"max_running", T_UINT}, {"runnable", T_UINT}, {"dep_waiting", T_UINT},
            {"drained", T_BOOL}, {"requests", T_MAP}, {"errors", T_MAP}, {"dropped", T_UINT},
            {"changes", T_UINT}, {"changes_consumed", T_UINT}, {"submitted", T_UINT},
            {"last_job_id", T_UINT}, {"events_published", T_UINT}, {"epoch", T_UINT},
            {"waiters", T_UINT}, {"limits", T_MAP}, {"store", T_MAP}, {0}};
        assert_int_equal(r->type, MSGPACK_OBJECT_MAP);
        for (const shape_t *s = doc; s->key; s++) {
            const msgpack_object *v = wire_map_get(r, s->key);
            if (!v || !(type_bit(v) & s->types))
                fail_msg("stats: \"%s\" missing or of the wrong type", s->key);
        }
        const msgpack_object *jobs = wire_map_get(r, "jobs");
        assert_int_equal(jobs->via.map.size, 7);
        const msgpack_object *req = wire_map_get(r, "requests");
        for (size_t i = 0; i < N_REQ_VECS; i++)
            assert_non_null(wire_map_get(req, req_vecs[i].method));
        const msgpack_object *lim = wire_map_get(r, "limits");
        static const char *const ints[] = {"max_running", "max_jobs", "max_waiters",
                                           "max_client_requests", "max_client_waiters",
                                           "max_log_entries", "max_request_bytes"};
        for (size_t i = 0; i < sizeof ints / sizeof ints[0]; i++)
            assert_int_equal(wire_map_get(lim, ints[i])->type, MSGPACK_OBJECT_POSITIVE_INTEGER);
        assert_int_equal(wire_map_get(lim, "keepalive")->type, MSGPACK_OBJECT_FLOAT64);
        assert_int_equal(wire_map_get(lim, "shutdown_grace")->type, MSGPACK_OBJECT_FLOAT64);
        assert_int_equal(wire_map_get(lim, "log_level")->type, MSGPACK_OBJECT_STR);
        const msgpack_object *st = wire_map_get(r, "store");
        assert_true(wire_map_get(st, "sync")->type == MSGPACK_OBJECT_STR);
        static const char *const counters[] = {"commits", "fsyncs", "records", "failures",
                                               "bytes", "queued", "durable"};
        for (size_t i = 0; i < sizeof counters / sizeof counters[0]; i++)
            assert_int_equal(wire_map_get(st, counters[i])->type,
                             MSGPACK_OBJECT_POSITIVE_INTEGER);
    } else if (!strcmp(name, "events_since_reply") || !strcmp(name, "events_since_too_old_reply")) {
        check_shape(name, r,
                    (shape_t[]){{"epoch", T_UINT}, {"first_seq", T_UINT}, {"last_seq", T_UINT},
                                {"too_old", T_BOOL}, {"events", T_ARRAY}, {"more", T_BOOL},
                                {0}});
        const msgpack_object *evs = wire_map_get(r, "events");
        bool too_old = wire_map_get(r, "too_old")->via.boolean;
        assert_int_equal(too_old, strstr(name, "too_old") != NULL);
        if (too_old)
            assert_int_equal(evs->via.array.size, 0);
        else
            assert_true(evs->via.array.size > 0);
        for (uint32_t i = 0; i < evs->via.array.size; i++)
            check_event(name, &evs->via.array.ptr[i], NULL);
    } else if (!strcmp(name, "list_fields_reply")) {
        check_array(name, r, -1, T_MAP);
        for (uint32_t i = 0; i < r->via.array.size; i++)
            check_shape(name, &r->via.array.ptr[i],
                        (shape_t[]){{"name", T_STR}, {"description", T_STR}, {0}});
    } else if (!strcmp(name, "list_opcodes_reply")) {
        check_array(name, r, -1, T_MAP);
        for (uint32_t i = 0; i < r->via.array.size; i++) {
            const msgpack_object *op = &r->via.array.ptr[i];
            check_shape(name, op,
                        (shape_t[]){{"name", T_STR}, {"description", T_STR}, {"source", T_STR},
                                    {"args", T_ARRAY}, {0}});
            const msgpack_object *args = wire_map_get(op, "args");
            for (uint32_t k = 0; k < args->via.array.size; k++)
                check_shape("list_opcodes arg", &args->via.array.ptr[k],
                            (shape_t[]){{"name", T_STR}, {"type", T_STR}, {"required", T_BOOL},
                                        {"default", T_ANY}, {"description", T_STR}, {0}});
        }
    } else if (!strcmp(name, "query_nodes_reply")) {
        check_array(name, r, -1, T_MAP);
        for (uint32_t i = 0; i < r->via.array.size; i++)
            check_shape(name, &r->via.array.ptr[i],
                        (shape_t[]){{"id", T_UINT}, {"name", T_STR}, {"address", T_STR},
                                    {"role", T_STR}, {"state", T_STR}, {"endpoints", T_ARRAY},
                                    {"applied", T_UINT}, {"lag_entries", T_UINT | T_NIL},
                                    {"lag_seconds", T_FLOAT | T_NIL},
                                    {"last_contact", T_ARRAY | T_NIL}, {"self", T_BOOL}, {0}});
    } else if (!strcmp(name, "add_node_reply")) {
        check_shape(name, r, (shape_t[]){{"id", T_UINT}, {0}});
    } else if (!strcmp(name, "remove_node_reply")) {
        assert_int_equal(r->type, MSGPACK_OBJECT_NIL);
    } else if (!strcmp(name, "transfer_leader_reply")) {
        check_shape(name, r, (shape_t[]){{"leader", T_UINT}, {0}});
    } else {
        fail_msg("%s: no check for this reply", name);
    }
}

/* Every reply vector, with the id of the request it answers. */
static const struct {
    const char *name;
    uint64_t id;
} rep_vecs[] = {
    {"ping_reply", 1}, {"submit_job_reply", 2}, {"submit_many_jobs_reply", 4},
    {"query_jobs_reply", 5}, {"query_jobs_ids_reply", 6}, {"query_jobs_snapshot_reply", 7},
    {"wait_for_job_change_reply", 8}, {"wait_for_job_change_nochange_reply", 9},
    {"wait_for_job_change_unknown_reply", 10}, {"change_job_priority_reply", 11},
    {"cancel_job_reply", 12}, {"archive_job_reply", 13}, {"auto_archive_jobs_reply", 14},
    {"set_drain_flag_reply", 15}, {"stats_reply", 16}, {"events_since_reply", 17},
    {"events_since_too_old_reply", 18}, {"list_fields_reply", 19},
    {"list_opcodes_reply", 20}, {"http_token_reply", 21}, {"shutdown_reply", 22},
    {"query_nodes_reply", 23}, {"add_node_reply", 24}, {"remove_node_reply", 25},
    {"transfer_leader_reply", 26},
};

/* Every event vector but the heartbeat, with its change kind. */
static const struct {
    const char *name, *kind;
} evs[] = {{"event_change", "update"},       {"event_submit", "submit"},
           {"event_submit_token", "submit"}, {"event_update_log", "update"},
           {"event_archive", "archive"}};

/* Every vector of the directory is in the tables above (a new one cannot
 * go unchecked here). */
static void test_tables_cover_the_vectors(void **state)
{
    (void)state;
    DIR *dir = opendir(JOBQ_VECTORS_DIR);
    assert_non_null(dir);
    struct dirent *e;
    size_t nreq = 0, nrep = 0, nev = 0;
    while ((e = readdir(dir))) {
        char name[256];
        size_t len = strlen(e->d_name);
        if (len < 6 || len >= sizeof name || strcmp(e->d_name + len - 5, ".json") != 0)
            continue;
        memcpy(name, e->d_name, len - 5);
        name[len - 5] = '\0';
        bool found = false;
        if (strstr(name, "_request")) {
            nreq++;
            for (size_t i = 0; i < N_REQ_VECS; i++)
                found |= strcmp(name, req_vecs[i].name) == 0;
        } else if (strstr(name, "_reply") && strcmp(name, "error_reply") != 0) {
            nrep++;
            for (size_t i = 0; i < sizeof rep_vecs / sizeof rep_vecs[0]; i++)
                found |= strcmp(name, rep_vecs[i].name) == 0;
        } else if (!strncmp(name, "event_", 6) && strcmp(name, "event_heartbeat") != 0) {
            nev++;
            for (size_t i = 0; i < sizeof evs / sizeof evs[0]; i++)
                found |= strcmp(name, evs[i].name) == 0;
        } else {
            found = true; /* checked by name elsewhere */
        }
        if (!found) {
            closedir(dir);
            fail_msg("vector %s is not in test_vectors.c's tables", name);
        }
    }
    closedir(dir);
    assert_int_equal(nreq, N_REQ_VECS);
    assert_int_equal(nrep, sizeof rep_vecs / sizeof rep_vecs[0]);
    assert_int_equal(nev, sizeof evs / sizeof evs[0]);
}

static void test_replies_parse(void **state)
{
    (void)state;
    msgpack_unpacked upk;
    wire_reply_t rep;
    blob_t b;

    for (size_t i = 0; i < sizeof rep_vecs / sizeof rep_vecs[0]; i++) {
        b = unpack_vector(rep_vecs[i].name, &upk);
        if (wire_reply_parse(&upk.data, &rep) != 0)
            fail_msg("%s: wire_reply_parse refused it", rep_vecs[i].name);
        assert_true(rep.has_id && rep.ok && !rep.keepalive);
        assert_int_equal(rep.id, rep_vecs[i].id);
        check_shape(rep_vecs[i].name, &upk.data,
                    (shape_t[]){{"v", T_UINT}, {"id", T_UINT}, {"ok", T_BOOL},
                                {"result", T_ANY}, {0}});
        check_result(rep_vecs[i].name, rep.result);
        msgpack_unpacked_destroy(&upk);
        free(b.data);
    }

    b = unpack_vector("wait_for_job_change_keepalive", &upk);
    assert_int_equal(wire_reply_parse(&upk.data, &rep), 0);
    assert_true(rep.has_id && rep.keepalive);
    assert_int_equal(rep.id, 9);
    check_shape("keepalive", &upk.data,
                (shape_t[]){{"v", T_UINT}, {"id", T_UINT}, {"keepalive", T_BOOL}, {0}});
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

    /* NotLeader: the error map carries the leader. */
    b = unpack_vector("error_not_leader", &upk);
    assert_int_equal(wire_reply_parse(&upk.data, &rep), 0);
    assert_true(rep.has_id && !rep.ok);
    assert_int_equal(rep.id, 24);
    assert_int_equal(rep.code, JOBQ_ERR_NOT_LEADER);
    check_shape("error_not_leader", wire_map_get(&upk.data, "error"),
                (shape_t[]){{"code", T_STR}, {"message", T_STR}, {"leader", T_MAP | T_NIL},
                            {0}});
    check_shape("NotLeader's leader", wire_map_get(wire_map_get(&upk.data, "error"), "leader"),
                (shape_t[]){{"id", T_UINT}, {"name", T_STR}, {"address", T_STR},
                            {"endpoints", T_ARRAY}, {"workers", T_ARRAY}, {"publish", T_ARRAY},
                            {0}});
    msgpack_unpacked_destroy(&upk);
    free(b.data);
}

/* The daemon's error reply and keepalive encoders make the vectors. */
static void test_error_reply_encoder(void **state)
{
    (void)state;
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    wire_reply_error(&pk, 3, true, JOBQ_ERR_BAD_ARGUMENT, "A job needs at least one opcode");
    assert_same_bytes("error_reply", sb.data, sb.size);
    msgpack_sbuffer_clear(&sb);
    wire_reply_keepalive(&pk, 9);
    assert_same_bytes("wait_for_job_change_keepalive", sb.data, sb.size);
    msgpack_sbuffer_destroy(&sb);
}

static void test_event_bodies(void **state)
{
    (void)state;
    msgpack_unpacked upk;
    blob_t b;
    for (size_t i = 0; i < sizeof evs / sizeof evs[0]; i++) {
        b = unpack_vector(evs[i].name, &upk);
        check_event(evs[i].name, &upk.data, evs[i].kind);
        msgpack_unpacked_destroy(&upk);
        free(b.data);
    }
    /* The variants the vectors stand for are there. */
    b = unpack_vector("event_submit_token", &upk);
    const msgpack_object *client = wire_map_get(wire_map_get(&upk.data, "change"), "client");
    assert_non_null(client);
    assert_non_null(wire_map_get(client, "reply"));
    msgpack_unpacked_destroy(&upk);
    free(b.data);
    b = unpack_vector("event_submit", &upk);
    assert_null(wire_map_get(wire_map_get(&upk.data, "change"), "client"));
    msgpack_unpacked_destroy(&upk);
    free(b.data);
    b = unpack_vector("event_update_log", &upk);
    assert_true(wire_map_get(wire_map_get(&upk.data, "change"), "log")->via.array.size > 0);
    msgpack_unpacked_destroy(&upk);
    free(b.data);

    b = unpack_vector("event_heartbeat", &upk);
    check_shape("heartbeat", &upk.data,
                (shape_t[]){{"seq", T_UINT}, {"epoch", T_UINT}, {"heartbeat", T_BOOL},
                            {"time", T_ARRAY}, {0}});
    assert_true(is_ts(wire_map_get(&upk.data, "time")));
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
        {"worker_hello_leases", "hello", {HEAD, {"name", T_STR}, {"capacity", T_UINT}, {"opcodes", T_ARRAY}, {"leases", T_ARRAY}, {0}}},
        {"worker_welcome_resumed", "welcome", {HEAD, {"worker", T_UINT}, {"heartbeat", T_FLOAT}, {"lease", T_FLOAT}, {"resumed", T_ARRAY}, {0}}},
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

/* Each request the client sends, in order, and the replies it gets: the
 * request vector it must be (NULL: any request), then the reply vectors.
 * A keepalive goes before the answer of the parked wait. */
static const struct {
    const char *request;
    const char *replies[2];
} exchange[] = {
    {"ping_request", {"ping_reply"}},
    {"submit_job_request", {"submit_job_reply"}},
    {NULL, {"error_reply"}},
    {"submit_many_jobs_request", {"submit_many_jobs_reply"}},
    {"query_jobs_request", {"query_jobs_reply"}},
    {"query_jobs_ids_request", {"query_jobs_ids_reply"}},
    {"query_jobs_snapshot_request", {"query_jobs_snapshot_reply"}},
    {"wait_for_job_change_request", {"wait_for_job_change_reply"}},
    {"wait_for_job_change_nochange_request",
     {"wait_for_job_change_keepalive", "wait_for_job_change_nochange_reply"}},
    {"wait_for_job_change_unknown_request", {"wait_for_job_change_unknown_reply"}},
    {"change_job_priority_request", {"change_job_priority_reply"}},
    {"cancel_job_request", {"cancel_job_reply"}},
    {"archive_job_request", {"archive_job_reply"}},
    {"auto_archive_jobs_request", {"auto_archive_jobs_reply"}},
    {"set_drain_flag_request", {"set_drain_flag_reply"}},
    {"stats_request", {"stats_reply"}},
    {"events_since_request", {"events_since_reply"}},
    {"events_since_too_old_request", {"events_since_too_old_reply"}},
    {"list_fields_request", {"list_fields_reply"}},
    {"list_opcodes_request", {"list_opcodes_reply"}},
    {"http_token_request", {"http_token_reply"}},
    {"shutdown_request", {"shutdown_reply"}},
    {"query_nodes_request", {"query_nodes_reply"}},
    {"add_node_request", {"add_node_reply"}},
    {"remove_node_request", {"remove_node_reply"}},
    {"transfer_leader_request", {"transfer_leader_reply"}},
};
#define N_EXCHANGE (sizeof exchange / sizeof exchange[0])

typedef struct {
    char dir[64];
    char endpoint[128];
    void *ctx;
    int failures; /* requests that were not the vector's bytes */
    _Atomic int client_done; /* the client read its last reply: the socket may go
                                (closed with linger 0, it would drop a reply in flight) */
    char what[2048];
} fake_daemon_t;

/* Appends a line to a report of failures. */
static void note(char *buf, size_t size, const char *fmt, ...)
{
    size_t len = strlen(buf);
    if (len + 1 >= size)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf + len, size - len, fmt, ap);
    va_end(ap);
    len = strlen(buf);
    if (len + 1 < size)
        strcat(buf, "\n");
}

static void *fake_daemon(void *arg)
{
    fake_daemon_t *f = arg;
    void *router = zmq_socket(f->ctx, ZMQ_ROUTER);
    int linger = 0, rcvtimeo = 10000;
    zmq_setsockopt(router, ZMQ_LINGER, &linger, sizeof linger);
    zmq_setsockopt(router, ZMQ_RCVTIMEO, &rcvtimeo, sizeof rcvtimeo);
    zmq_bind(router, f->endpoint);
    for (size_t i = 0; i < N_EXCHANGE; i++) {
        zmq_msg_t rid, body;
        zmq_msg_init(&rid);
        zmq_msg_init(&body);
        if (zmq_msg_recv(&rid, router, 0) < 0 || zmq_msg_recv(&body, router, 0) < 0) {
            f->failures++;
            note(f->what, sizeof f->what, "no request %zu (%s)", i + 1,
                 exchange[i].request ? exchange[i].request : "any");
            zmq_msg_close(&rid);
            zmq_msg_close(&body);
            break;
        }
        if (exchange[i].request) {
            blob_t want = load(exchange[i].request, "msgpack");
            if (want.size != zmq_msg_size(&body) ||
                memcmp(want.data, zmq_msg_data(&body), want.size) != 0) {
                f->failures++;
                note(f->what, sizeof f->what, "%s: libjobq sent other bytes",
                     exchange[i].request);
            }
            free(want.data);
        }
        for (int k = 0; k < 2 && exchange[i].replies[k]; k++) {
            blob_t reply = load(exchange[i].replies[k], "msgpack");
            zmq_send(router, zmq_msg_data(&rid), zmq_msg_size(&rid), ZMQ_SNDMORE);
            zmq_send(router, reply.data, reply.size, 0);
            free(reply.data);
        }
        zmq_msg_close(&rid);
        zmq_msg_close(&body);
    }
    for (int i = 0; i < 1000 && !atomic_load(&f->client_done); i++)
        usleep(10000);
    zmq_close(router);
    return NULL;
}

/* The result of reply vector name, as JSON. */
static json_t *result_of(const char *name)
{
    json_t *rep = load_json(name);
    json_t *r = json_incref(json_object_get(rep, "result"));
    json_decref(rep);
    return r;
}

/* An argument of request vector name, as JSON (a new reference). */
static json_t *arg_of(const char *name, const char *key)
{
    json_t *req = load_json(name);
    json_t *a = json_incref(json_object_get(json_object_get(req, "args"), key));
    json_decref(req);
    return a;
}

static int64_t int_arg(const char *name, const char *key)
{
    json_t *a = arg_of(name, key);
    int64_t v = (int64_t)json_integer_value(a);
    json_decref(a);
    return v;
}

/* Checks whose failure must not leave the fake daemon behind: recorded,
 * reported once everything is torn down. */
#define CHECK(cond) \
    do { \
        if (!(cond)) \
            note(bad, sizeof bad, "%s:%d: %s (%s)", __FILE__, __LINE__, #cond, \
                 jobq_client_reason(c)); \
    } while (0)

/* The client's decoded value is the reply vector's result. */
#define CHECK_RESULT(value, name) \
    do { \
        json_t *want_ = result_of(name); \
        CHECK((value) && json_equal((value), want_)); \
        json_decref(want_); \
    } while (0)

static void test_client_encoder(void **state)
{
    (void)state;
    char bad[4096] = "";
    fake_daemon_t f = {0};
    snprintf(f.dir, sizeof f.dir, "/tmp/jobq-vtest-XXXXXX");
    assert_non_null(mkdtemp(f.dir));
    snprintf(f.endpoint, sizeof f.endpoint, "ipc://%s/jobq.sock", f.dir);
    f.ctx = zmq_ctx_new();
    /* The event socket a subscriber connects to (nothing is published). */
    char events[128], path[128], events_path[128];
    snprintf(events, sizeof events, "ipc://%s/events.sock", f.dir);
    snprintf(events_path, sizeof events_path, "%s/events.sock", f.dir);
    void *pub = zmq_socket(f.ctx, ZMQ_PUB);
    int linger = 0;
    zmq_setsockopt(pub, ZMQ_LINGER, &linger, sizeof linger);
    assert_int_equal(zmq_bind(pub, events), 0);
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, fake_daemon, &f), 0);
    snprintf(path, sizeof path, "%s/jobq.sock", f.dir);
    for (int i = 0; i < 500 && access(path, F_OK) != 0; i++)
        usleep(10000);

    jobq_client_t *c = jobq_client_new(f.endpoint);
    assert_non_null(c);
    const int T = 10000;
    json_t *r = jobq_ping(c, T);
    CHECK_RESULT(r, "ping_reply");
    json_decref(r);

    json_t *ops = arg_of("submit_job_request", "ops");
    json_t *token = arg_of("submit_job_request", "token");
    uint64_t id = 0;
    CHECK(jobq_submit_job_ex(c, ops, false, json_string_value(token), 0, &id, T) == 0);
    CHECK(id == 1);
    json_decref(token);
    /* The third answer is the error vector: libjobq reads its code and
     * message. */
    CHECK(jobq_submit_job(c, ops, false, &id, T) == -1);
    CHECK(jobq_client_status(c) == JOBQ_ERR_BAD_ARGUMENT);
    CHECK(strstr(jobq_client_reason(c), "A job needs at least one opcode") != NULL);
    json_decref(ops);

    const char *n = "submit_many_jobs_request";
    json_t *jobs = arg_of(n, "jobs");
    token = arg_of(n, "token");
    r = jobq_submit_many_jobs_ex(c, jobs, false, json_string_value(token), 0, T);
    CHECK_RESULT(r, "submit_many_jobs_reply");
    json_decref(r);
    json_decref(jobs);
    json_decref(token);

    n = "query_jobs_request";
    json_t *fields = arg_of(n, "fields"), *status = arg_of(n, "status");
    json_t *archived = arg_of(n, "archived");
    r = jobq_query_jobs(c, NULL, fields, status, (uint64_t)int_arg(n, "after_id"),
                        (uint64_t)int_arg(n, "limit"), json_is_true(archived), T);
    CHECK_RESULT(r, "query_jobs_reply");
    json_decref(r);
    json_decref(fields);
    json_decref(status);
    json_decref(archived);

    n = "query_jobs_ids_request";
    json_t *ids = arg_of(n, "ids");
    fields = arg_of(n, "fields");
    r = jobq_query_jobs(c, ids, fields, NULL, 0, 0, false, T);
    CHECK_RESULT(r, "query_jobs_ids_reply");
    json_decref(r);
    json_decref(ids);
    json_decref(fields);

    /* The snapshot a subscriber of one job takes (its default fields). */
    n = "query_jobs_snapshot_request";
    ids = arg_of(n, "ids");
    uint64_t one = (uint64_t)json_integer_value(json_array_get(ids, 0));
    CHECK(json_array_size(ids) == 1);
    json_decref(ids);
    jobq_sub_t *sub = jobq_sub_new(c, events, &one, 1, T);
    CHECK(sub != NULL);
    json_t *ev = NULL;
    CHECK(sub && jobq_sub_next(sub, &ev, T) == 1);
    json_t *snap = result_of("query_jobs_snapshot_reply");
    CHECK(ev && json_equal(json_object_get(ev, "rows"), json_object_get(snap, "rows")) &&
          json_equal(json_object_get(ev, "fields"), json_object_get(snap, "fields")) &&
          json_equal(json_object_get(ev, "seq"), json_object_get(snap, "seq")) &&
          json_equal(json_object_get(ev, "epoch"), json_object_get(snap, "epoch")));
    json_decref(snap);
    json_decref(ev);
    jobq_sub_destroy(&sub);

    /* wait_for_job_change: an answer, a nochange after a keepalive, nil. */
    n = "wait_for_job_change_request";
    fields = arg_of(n, "fields");
    json_t *wait_s = arg_of(n, "timeout");
    CHECK(jobq_wait_for_job_change(c, (uint64_t)int_arg(n, "id"), fields, NULL,
                                   int_arg(n, "prev_log_serial"), json_real_value(wait_s), T,
                                   &r) == 0);
    CHECK_RESULT(r, "wait_for_job_change_reply");
    json_decref(r);
    json_decref(fields);
    json_decref(wait_s);
    n = "wait_for_job_change_nochange_request";
    fields = arg_of(n, "fields");
    json_t *prev = arg_of(n, "prev_job_info");
    wait_s = arg_of(n, "timeout");
    CHECK(jobq_wait_for_job_change(c, (uint64_t)int_arg(n, "id"), fields, prev, -1,
                                   json_real_value(wait_s), T, &r) == 0);
    CHECK(json_is_string(r) && strcmp(json_string_value(r), "nochange") == 0);
    json_decref(r);
    json_decref(fields);
    json_decref(prev);
    json_decref(wait_s);
    n = "wait_for_job_change_unknown_request";
    fields = arg_of(n, "fields");
    wait_s = arg_of(n, "timeout");
    CHECK(jobq_wait_for_job_change(c, (uint64_t)int_arg(n, "id"), fields, NULL, -1,
                                   json_real_value(wait_s), T, &r) == 0);
    CHECK(json_is_null(r));
    json_decref(r);
    json_decref(fields);
    json_decref(wait_s);

    n = "change_job_priority_request";
    r = jobq_change_job_priority(c, (uint64_t)int_arg(n, "id"), (int)int_arg(n, "priority"), T);
    CHECK_RESULT(r, "change_job_priority_reply");
    json_decref(r);
    r = jobq_cancel_job(c, (uint64_t)int_arg("cancel_job_request", "id"), T);
    CHECK_RESULT(r, "cancel_job_reply");
    json_decref(r);
    bool was_archived = false;
    CHECK(jobq_archive_job(c, (uint64_t)int_arg("archive_job_request", "id"), &was_archived,
                           T) == 0);
    CHECK(was_archived);
    n = "auto_archive_jobs_request";
    uint64_t narchived = 0, remaining = 99;
    CHECK(jobq_auto_archive_jobs(c, int_arg(n, "age"), int_arg(n, "timeout"), &narchived,
                                 &remaining, T) == 0);
    r = result_of("auto_archive_jobs_reply");
    CHECK(narchived == (uint64_t)json_integer_value(json_array_get(r, 0)) &&
          remaining == (uint64_t)json_integer_value(json_array_get(r, 1)));
    json_decref(r);
    json_t *flag = arg_of("set_drain_flag_request", "flag");
    CHECK(jobq_set_drain_flag(c, json_is_true(flag), T) == 0);
    json_decref(flag);
    r = jobq_stats(c, T);
    CHECK_RESULT(r, "stats_reply");
    json_decref(r);
    n = "events_since_request";
    r = jobq_events_since(c, (uint64_t)int_arg(n, "after_seq"), (uint64_t)int_arg(n, "epoch"),
                          (uint64_t)int_arg(n, "limit"), T);
    CHECK_RESULT(r, "events_since_reply");
    json_decref(r);
    n = "events_since_too_old_request";
    r = jobq_events_since(c, (uint64_t)int_arg(n, "after_seq"), (uint64_t)int_arg(n, "epoch"),
                          0, T);
    CHECK_RESULT(r, "events_since_too_old_reply");
    CHECK(r && json_is_true(json_object_get(r, "too_old")));
    json_decref(r);
    r = jobq_list_fields(c, T);
    CHECK_RESULT(r, "list_fields_reply");
    json_decref(r);
    r = jobq_list_opcodes(c, T);
    CHECK_RESULT(r, "list_opcodes_reply");
    json_decref(r);
    r = jobq_http_token(c, int_arg("http_token_request", "ttl"), T);
    CHECK_RESULT(r, "http_token_reply");
    json_decref(r);
    json_t *now = arg_of("shutdown_request", "now");
    CHECK(jobq_shutdown(c, json_is_true(now), T) == 0);
    json_decref(now);

    r = jobq_query_nodes(c, T);
    CHECK_RESULT(r, "query_nodes_reply");
    json_decref(r);
    n = "add_node_request";
    json_t *addr = arg_of(n, "address"), *role = arg_of(n, "role"), *name = arg_of(n, "name");
    json_t *eps = arg_of(n, "endpoints");
    r = jobq_add_node(c, (uint64_t)int_arg(n, "id"), json_string_value(addr),
                      strcmp(json_string_value(role), "standby") == 0, json_string_value(name),
                      eps, T);
    CHECK_RESULT(r, "add_node_reply");
    json_decref(r);
    json_decref(addr);
    json_decref(role);
    json_decref(name);
    json_decref(eps);
    CHECK(jobq_remove_node(c, (uint64_t)int_arg("remove_node_request", "id"), T) == 0);
    uint64_t leader = 0;
    CHECK(jobq_transfer_leader(c, (uint64_t)int_arg("transfer_leader_request", "id"), &leader,
                               T) == 0);
    r = result_of("transfer_leader_reply");
    CHECK(leader == (uint64_t)json_integer_value(json_object_get(r, "leader")));
    json_decref(r);

    atomic_store(&f.client_done, 1);
    jobq_client_destroy(&c);
    pthread_join(th, NULL);
    zmq_close(pub);
    zmq_ctx_term(f.ctx);
    unlink(path);
    unlink(events_path);
    rmdir(f.dir); /* before any assertion below can leave it behind */
    if (f.failures || bad[0])
        fail_msg("%s%s", f.what, bad);
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
        cmocka_unit_test(test_tables_cover_the_vectors),
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
