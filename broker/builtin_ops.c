/* builtin_ops.c: test.delay and test.log (docs/protocol.md, "Built-in
 * opcodes"). Each is a small state machine stepped by an executor; a delay
 * is a deadline, never a sleeping thread, so a cancel ends it at once. */
#include "builtin_ops.h"
#include "executor.h"
#include "wire.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Reads an optional bool; -1 when present and not a bool. */
static int get_bool(const msgpack_object *args, const char *key, bool *out)
{
    const msgpack_object *o = wire_map_get(args, key);
    *out = false;
    if (!o || o->type == MSGPACK_OBJECT_NIL)
        return 0;
    if (o->type != MSGPACK_OBJECT_BOOLEAN)
        return -1;
    *out = o->via.boolean;
    return 0;
}

/* ---- test.delay ---- */

/* Whole seconds apart, so the check below is an integer constant
 * expression (clang refuses floating ones in _Static_assert). */
#define DELAY_MAX_WHOLE_SECONDS (7 * 24 * 3600)
#define DELAY_MAX_SECONDS ((double)DELAY_MAX_WHOLE_SECONDS)
/* Each iteration logs one entry: no more than a job's log may hold by
 * default (--max-log-entries). */
#define DELAY_MAX_REPEAT JOBQ_DEFAULT_MAX_LOG_ENTRIES

typedef struct {
    int64_t duration_us;
    int64_t repeat, iterations, done;
    bool fail, in_delay;
} delay_state_t;

static int delay_parse(const msgpack_object *args, delay_state_t *st, char *err, size_t len)
{
    double duration;
    const msgpack_object *d = wire_map_get(args, "duration");
    if (!d || d->type == MSGPACK_OBJECT_NIL) {
        snprintf(err, len, "'duration' (seconds) is required");
        return -1;
    }
    if (!wire_get_number(d, &duration) || duration < 0 || duration > DELAY_MAX_SECONDS) {
        snprintf(err, len, "'duration' must be a number of seconds from 0 to %.0f",
                 DELAY_MAX_SECONDS);
        return -1;
    }
    int64_t repeat = 0;
    const msgpack_object *r = wire_map_get(args, "repeat");
    if (r && r->type != MSGPACK_OBJECT_NIL &&
        (!wire_get_int(r, &repeat) || repeat < 0 || repeat > DELAY_MAX_REPEAT)) {
        snprintf(err, len, "'repeat' must be an integer from 0 to %d", DELAY_MAX_REPEAT);
        return -1;
    }
    bool fail;
    if (get_bool(args, "fail", &fail) < 0) {
        snprintf(err, len, "'fail' must be a boolean");
        return -1;
    }
    *st = (delay_state_t){.duration_us = (int64_t)llround(duration * 1e6),
                          .repeat = repeat,
                          .iterations = repeat > 0 ? repeat : 1,
                          .fail = fail};
    return 0;
}

static int delay_validate(const msgpack_object *args, char *err, size_t len)
{
    delay_state_t st;
    return delay_parse(args, &st, err, len);
}

static void delay_summarize(const msgpack_object *args, char *buf, size_t len)
{
    double duration = 0;
    wire_get_number(wire_map_get(args, "duration"), &duration);
    snprintf(buf, len, "test.delay(%g)", duration);
}

static int delay_start(jq_task_t *t, const msgpack_object *args, char *err, size_t len)
{
    delay_state_t *st = malloc(sizeof *st);
    if (!st || delay_parse(args, st, err, len) < 0) {
        free(st);
        return -1;
    }
    t->state = st;
    return 0;
}

static jq_step_t delay_step(jq_task_t *t)
{
    delay_state_t *st = t->state;
    if (st->in_delay) {
        st->in_delay = false;
        st->done++;
    }
    if (st->done >= st->iterations) {
        if (!st->fail)
            return JQ_STEP_SUCCESS;
        snprintf(t->error, sizeof t->error, "test.delay failed as requested");
        return JQ_STEP_FAIL;
    }
    if (st->repeat > 0) {
        char msg[64];
        snprintf(msg, sizeof msg, "Test delay iteration %lld/%lld", (long long)st->done,
                 (long long)(st->repeat - 1));
        if (!jq_task_log(t, msg))
            return JQ_STEP_FAIL;
    }
    st->in_delay = true;
    t->deadline = t->now + st->duration_us;
    return JQ_STEP_CONTINUE;
}

static void free_state(jq_task_t *t)
{
    free(t->state);
    t->state = NULL;
}

/* Kept beside delay_parse: what it reads, list_opcodes reports. The
 * limits are written out in the descriptions; these catch a change. */
_Static_assert(DELAY_MAX_WHOLE_SECONDS == 604800, "update delay_args' description");
_Static_assert(DELAY_MAX_REPEAT == 100000, "update delay_args' description");
static const jq_argdef_t delay_args[] = {
    {.name = "duration", .type = "number", .required = true,
     .description = "seconds each iteration waits, from 0 to 604800 (7 days)"},
    {.name = "repeat", .type = "integer", .def = JQ_ARGDEF_INT, .defval.i = 0,
     .description = "iterations, each logging one line first, from 0 to 100000; 0: one "
                    "iteration, no log"},
    {.name = "fail", .type = "boolean", .def = JQ_ARGDEF_BOOL, .defval.b = false,
     .description = "end the opcode with an error after the delay"},
    {0},
};

static const jq_opdef_t test_delay = {
    .name = "test.delay",
    .description = "wait for a while, optionally logging each iteration, then succeed or fail",
    .args = delay_args,
    .validate = delay_validate,
    .summarize = delay_summarize,
    .start = delay_start,
    .step = delay_step,
    .cleanup = free_state,
};

/* ---- test.log ---- */

typedef struct {
    uint32_t count, next;
    bool fail;
    char *messages[]; /* each NUL-terminated */
} log_state_t;

static int log_validate(const msgpack_object *args, char *err, size_t len)
{
    const msgpack_object *m = wire_map_get(args, "messages");
    if (m && m->type != MSGPACK_OBJECT_NIL) {
        if (m->type != MSGPACK_OBJECT_ARRAY || m->via.array.size > 100000) {
            snprintf(err, len, "'messages' must be a list of at most 100000 strings");
            return -1;
        }
        for (uint32_t i = 0; i < m->via.array.size; i++) {
            const msgpack_object *s = &m->via.array.ptr[i];
            if (s->type != MSGPACK_OBJECT_STR || s->via.str.size > JOBQ_MAX_LOG_MESSAGE ||
                memchr(s->via.str.ptr, '\0', s->via.str.size)) {
                snprintf(err, len, "'messages' item %u must be a string of at most %d bytes",
                         i, JOBQ_MAX_LOG_MESSAGE);
                return -1;
            }
        }
    }
    bool fail;
    if (get_bool(args, "fail", &fail) < 0) {
        snprintf(err, len, "'fail' must be a boolean");
        return -1;
    }
    return 0;
}

static void log_summarize(const msgpack_object *args, char *buf, size_t len)
{
    const msgpack_object *m = wire_map_get(args, "messages");
    snprintf(buf, len, "test.log(%u)",
             m && m->type == MSGPACK_OBJECT_ARRAY ? m->via.array.size : 0);
}

static int log_start(jq_task_t *t, const msgpack_object *args, char *err, size_t len)
{
    if (log_validate(args, err, len) < 0)
        return -1;
    const msgpack_object *m = wire_map_get(args, "messages");
    uint32_t n = m && m->type == MSGPACK_OBJECT_ARRAY ? m->via.array.size : 0;
    log_state_t *st = calloc(1, sizeof *st + n * sizeof(char *));
    if (!st)
        return -1;
    t->state = st;
    get_bool(args, "fail", &st->fail);
    for (uint32_t i = 0; i < n; i++) {
        const msgpack_object *s = &m->via.array.ptr[i];
        if (!(st->messages[i] = strndup(s->via.str.ptr, s->via.str.size))) {
            snprintf(err, len, "out of memory");
            return -1;
        }
        st->count = i + 1;
    }
    return 0;
}

static jq_step_t log_step(jq_task_t *t)
{
    log_state_t *st = t->state;
    while (st->next < st->count)
        if (!jq_task_log(t, st->messages[st->next++]))
            return JQ_STEP_FAIL;
    if (st->fail) {
        snprintf(t->error, sizeof t->error, "test.log failed as requested");
        return JQ_STEP_FAIL;
    }
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_uint32(&pk, st->count);
    jq_blob_take(&t->result, &sb);
    return JQ_STEP_SUCCESS;
}

static void log_cleanup(jq_task_t *t)
{
    log_state_t *st = t->state;
    if (st)
        for (uint32_t i = 0; i < st->count; i++)
            free(st->messages[i]);
    free_state(t);
}

/* Kept beside log_validate: what it reads, list_opcodes reports. */
_Static_assert(JOBQ_MAX_LOG_MESSAGE == 4096, "update log_args' description");
static const jq_argdef_t log_args[] = {
    {.name = "messages", .type = "list of strings", .def = JQ_ARGDEF_EMPTY_LIST,
     .description = "log entries to write, in order (each at most 4096 bytes)"},
    {.name = "fail", .type = "boolean", .def = JQ_ARGDEF_BOOL, .defval.b = false,
     .description = "end the opcode with an error after logging"},
    {0},
};

static const jq_opdef_t test_log = {
    .name = "test.log",
    .description = "write the given log entries, then succeed (result: their number) or fail",
    .args = log_args,
    .validate = log_validate,
    .summarize = log_summarize,
    .start = log_start,
    .step = log_step,
    .cleanup = log_cleanup,
};

static const jq_opdef_t *const builtin_defs[] = {&test_delay, &test_log};
static const jq_opset_t builtin_set = {builtin_defs, 2, NULL};

const jq_opset_t *jq_builtin_ops(void)
{
    return &builtin_set;
}
