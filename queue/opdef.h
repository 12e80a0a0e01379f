/* opdef.h: what the queue needs to know of an opcode — its name, how to
 * validate its arguments at submit and how to summarise it — and the hooks
 * an executor runs it with. Definitions are static and live for the
 * process; the job model points at them instead of copying names. */
#ifndef JOBQ_OPDEF_H
#define JOBQ_OPDEF_H

#include <msgpack.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct jq_task jq_task_t; /* an executor's running opcode */

typedef enum {
    JQ_STEP_CONTINUE, /* call step again at the task's deadline */
    JQ_STEP_SUCCESS,  /* done; the task's result is the opcode result */
    JQ_STEP_FAIL      /* done; the task's error message says why */
} jq_step_t;

/* Kinds of a documented default value (list_opcodes shows them). */
typedef enum {
    JQ_ARGDEF_NONE = 0, /* no default (required, or absent means absent) */
    JQ_ARGDEF_BOOL,
    JQ_ARGDEF_INT,
    JQ_ARGDEF_NUMBER,
    JQ_ARGDEF_STRING,
    JQ_ARGDEF_EMPTY_LIST
} jq_argdef_kind_t;

/* One argument an opcode takes, as list_opcodes reports it. The names
 * also drive the submit-time check, so the documentation cannot list an
 * argument the opcode does not take, nor leave one out. */
typedef struct {
    const char *name;        /* argument key; NULL ends an array of these */
    const char *type;        /* for people: "number", "integer", "boolean"... */
    bool required;           /* refused at submit when missing */
    jq_argdef_kind_t def;    /* kind of the default below */
    union {
        bool b;
        int64_t i;
        double d;
        const char *s;
    } defval;                /* the default, when def is not NONE */
    const char *description; /* one line */
} jq_argdef_t;

typedef struct jq_opdef {
    const char *name;
    /* One line for people (list_opcodes, jobq submit --help). */
    const char *description;
    /* The arguments it takes, ended by an entry with a NULL name; any other
     * argument is refused at submit (a typo is not a job). NULL: not
     * checked (and none listed). */
    const jq_argdef_t *args;
    /* Any thread. 0, or -1 with a message naming the bad argument. */
    int (*validate)(const msgpack_object *args, char *err, size_t errlen);
    /* Any thread. Writes "name(detail)" into buf. */
    void (*summarize)(const msgpack_object *args, char *buf, size_t len);
    /* Executor thread. Prepare the task from validated args; -1 fails the
     * opcode with err. */
    int (*start)(jq_task_t *task, const msgpack_object *args, char *err,
                 size_t errlen);
    /* Executor thread. Do the next piece of work without blocking. */
    jq_step_t (*step)(jq_task_t *task);
    /* Executor thread. Free what start allocated; called exactly once. */
    void (*cleanup)(jq_task_t *task);
    /* A worker opcode (queue/opreg.h): no hooks, the worker hub runs it. */
    bool remote;
    int64_t timeout_us; /* a worker opcode's declared time limit; 0: none */
} jq_opdef_t;

struct jq_opreg;

typedef struct {
    const jq_opdef_t *const *defs; /* the built-in ones */
    size_t count;
    struct jq_opreg *reg;          /* worker opcodes, or NULL */
} jq_opset_t;

/* Definition named name (len bytes), built-in or declared, or NULL. Any
 * thread. */
const jq_opdef_t *jq_opset_find(const jq_opset_t *set, const char *name, size_t len);

#endif
