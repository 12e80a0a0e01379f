/* job.h: the job model — jobs, opcodes, statuses, the job log, priorities
 * and dependencies — with Ganeti's semantics (../shared/JOBMODEL.md §1).
 *
 * A job is one allocation: the header and its opcodes, and once packed
 * (jq_job_pack) what never changes after submission — arguments,
 * summaries, dependencies, owner — after them. Opcode arguments, results
 * and log entries are kept as msgpack-encoded blobs, exactly as they
 * travel on the wire, so answering a query or building a change record
 * copies bytes and never re-encodes.
 *
 * Every state transition is a function of (job, now, delta): it changes the
 * job and records in the delta which opcodes and log entries changed, from
 * which the table builds the change record. No function here locks, sleeps
 * or reads the clock; callers hold the job's shard write lock.
 */
#ifndef JOBQ_JOB_H
#define JOBQ_JOB_H

#include <msgpack.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum {
    JQ_QUEUED = 0,
    JQ_WAITING,
    JQ_CANCELING,
    JQ_RUNNING,
    JQ_CANCELED,
    JQ_SUCCESS,
    JQ_ERROR,
    JQ_STATUS__COUNT
} jq_status_t;

#define JQ_PRIO_HIGHEST (-20)
#define JQ_PRIO_LOWEST 19
#define JQ_PRIO_DEFAULT 0

/* Limits of a worker opcode's run options (docs/protocol.md). */
#define JQ_MAX_RETRY 100
#define JQ_MAX_BACKOFF_S 3600
#define JQ_MAX_TIMEOUT_S (7 * 24 * 3600)

const char *jq_status_name(jq_status_t s);
/* 0 and *out on success, -1 for a name that is not a status. */
int jq_status_parse(const char *name, size_t len, jq_status_t *out);
static inline bool jq_status_final(jq_status_t s)
{
    return s == JQ_CANCELED || s == JQ_SUCCESS || s == JQ_ERROR;
}
/* Submittable priorities: -10, 0, 10. */
bool jq_priority_submittable(int64_t prio);
/* A priority as a client sent it: 0 with *out set; -1 not an integer
 * (BadArgument); -2 an integer that is not a submittable priority, however
 * large (InvalidPriority). */
int jq_priority_parse(const msgpack_object *o, int64_t *out);

typedef struct {
    char *data; /* msgpack bytes; NULL means nil */
    uint32_t len;
} jq_blob_t;

/* One dependency: job id and the final statuses accepted (bit per
 * jq_status_t); an empty mask means any final status, except canceled. */
typedef struct {
    int64_t job_id;      /* negative only while a batch resolves it */
    uint8_t status_mask;
} jq_dep_t;

struct jq_opdef;

typedef struct {
    const struct jq_opdef *def; /* the executor's definition, or NULL when
                                   this jobqd does not know the opcode (a
                                   stored job whose opcode went away) */
    const char *name;           /* def->name, or an owned copy when !def */
    jq_blob_t args;             /* msgpack map as submitted */
    jq_blob_t result;           /* msgpack value, nil until the opcode ends */
    char *summary;              /* e.g. "test.delay(0.2)"; NULL: the name */
    jq_dep_t *deps;             /* resolved to absolute ids */
    jq_blob_t *log;             /* each a msgpack [serial, ts, type, msg] */
    int64_t start_ts, exec_ts, end_ts; /* microseconds since epoch, 0 unset */
    /* The log's capacity is not kept: it is jq_op_log_cap(nlog). */
    uint32_t nlog;
    uint32_t log_base;          /* job log serial before this opcode's first
                                   entry: entry k has serial log_base + k + 1 */
    /* Worker opcodes (docs/protocol.md "Workers"): the run options as
     * submitted, the current attempt (0: never handed out) and how many
     * times it went back to the queue after a lost worker. The smaller
     * fields are sized to what a submission may ask (JQ_MAX_BACKOFF_S,
     * JQ_MAX_RETRY) and ordered without padding: a job with one opcode
     * fits a smaller malloc chunk (issue 14). */
    uint32_t backoff_us;        /* wait before a retry (at most 3.6e9 µs) */
    uint16_t retries;           /* retries used */
    uint16_t attempt;
    /* The metrics' view (queue/meter.h): the status last counted (+1; 0
     * none) with a flag for an opcode started in this run, and its
     * opcode's slot (+1; 0 not looked up yet). Written under the shard's
     * write lock. */
    uint16_t meter_slot;
    uint8_t metered;
    uint8_t retry;              /* retries allowed after a lost worker (≤ 100) */
    uint8_t ndeps;
    uint8_t status;             /* jq_status_t */
    int8_t priority;            /* current */
    int8_t input_priority;      /* as submitted, never changes */
    int64_t timeout_us;         /* one attempt's limit; 0: the declared one */
    char *worker;               /* who runs (ran) the current attempt; NULL */
} jq_op_t;

typedef struct jq_job {
    uint64_t id;
    int64_t received_ts, start_ts, end_ts;
    uint64_t change_serial;  /* serial of the last change record */
    /* Serial of the last change record that changed more than the log: a
     * reply showing nothing of the log waits only for that one. */
    uint64_t state_serial;
    /* Serial of the last change the store has committed; written by the
     * store thread under the shard's read lock, so it is atomic. A reply
     * showing the job is held while change_serial is ahead of it. */
    _Atomic uint64_t committed_serial;
    uint32_t log_serial;     /* last log serial handed out */
    uint32_t log_recorded;   /* log serial covered by the last record made */
    uint32_t nops;
    uint8_t status;          /* cached derived status, see jq_job_derive */
    bool archived;
    bool record_lost : 1;    /* a record could not be encoded: the next one
                                carries every opcode and the missed log */
    bool packed : 1;         /* jq_job_pack: args, summaries, dependencies
                                and owner live in this job's allocation */
    uint8_t metered;         /* its opcodes are counted by the table's meter
                                (queue/meter.h); in what was padding */
    /* The submitting call's client token, when it had one (msgpack map,
     * docs/protocol.md "Client tokens"): carried by the submit record and
     * stored with the job so a restart can rebuild the token index. */
    jq_blob_t client;
    /* Who submitted it (docs/security.md): a key's name, or "uid:N" over
     * ipc; NULL for a job stored before owners were recorded. */
    char *owner;
    jq_op_t ops[];
} jq_job_t;

/* What one transition changed: a range of opcodes and the log entries
 * appended, so the change record carries exactly the delta. */
typedef struct {
    int op_lo, op_hi;        /* changed opcodes [lo, hi]; lo > hi: none */
    uint32_t log_from;       /* log entries with serial > log_from are new */
    bool job_changed;        /* job timestamps or priority changed */
} jq_delta_t;

void jq_delta_init(jq_delta_t *d, const jq_job_t *job);
void jq_delta_mark(jq_delta_t *d, int op_index);
bool jq_delta_empty(const jq_delta_t *d, const jq_job_t *job);

/* Allocation. _new returns a job with nops queued opcodes, all fields zero
 * but status; the caller fills opcodes (def, args...). _destroy frees the
 * job and everything it owns, and nulls the pointer. */
jq_job_t *jq_job_new(uint64_t id, uint32_t nops, int64_t now);
void jq_job_destroy(jq_job_t **job);
/* Move what a job keeps for its whole life (every opcode's args, summary
 * and dependencies, and the owner) into the job's own allocation, after
 * its opcodes: one malloc chunk instead of up to four per job (each at
 * least 32 B). Call it once those are set (the owner too), while no other
 * pointer to the job exists: *jobp moves. Afterwards those fields are
 * never replaced or freed on their own (nothing does: they are written
 * while a job is built; relative dependencies are resolved in place).
 * Packing a packed job does nothing. -1 out of memory, the job unchanged
 * and still whole. */
int jq_job_pack(jq_job_t **jobp);

/* Derived status (JOBMODEL §1.4) and priority (§1.6). */
jq_status_t jq_job_derive_status(const jq_job_t *job);
int jq_job_priority(const jq_job_t *job);
/* Index of the first opcode not in success, or nops when all are. */
uint32_t jq_job_current_op(const jq_job_t *job);
/* Age reference for auto-archive: end, else start, else received. */
int64_t jq_job_age_ref(const jq_job_t *job);

/* Transitions. Each returns 0 when it applied, -1 when the job was not in
 * a state that allows it (nothing changed). */

/* Executor picks the job up: the current opcode goes queued → waiting.
 * The opcode's and job's start timestamps are set if unset. */
int jq_job_pickup(jq_job_t *job, int64_t now, jq_delta_t *d);
/* Current opcode waiting → running (exec timestamp). */
int jq_job_op_running(jq_job_t *job, int64_t now, jq_delta_t *d);
/* Worker opcodes. Current opcode waiting → running as attempt+1 on the
 * named worker (copied). -1 when it is not waiting, or out of memory. */
int jq_job_op_assign(jq_job_t *job, int64_t now, const char *worker, jq_delta_t *d);
/* Current opcode running → waiting: its attempt ended without a result and
 * it goes back to the queue (a lost worker: counted in retries when
 * `retried`; a worker that handed it back: not counted). */
int jq_job_op_unassign(jq_job_t *job, bool retried, jq_delta_t *d);
/* Append a log entry to the current opcode. type and msg are strings.
 * max_entries (0: no limit) caps the job's log: the entry that reaches it
 * says so instead of what was asked (JQ_LOG_LIMIT_MESSAGE), later ones are
 * discarded. Returns 0 appended, 1 discarded, -1 not possible (no running
 * opcode, or out of memory). */
#define JQ_LOG_LIMIT_MESSAGE "jobq: this job reached its log limit of %u entries; later entries are discarded"
int jq_job_log(jq_job_t *job, int64_t now, const char *type, const char *msg,
               size_t msglen, uint32_t max_entries, jq_delta_t *d);
/* Current opcode ends. On success result (owned, moved) is stored and the
 * job reads queued again if opcodes remain. On error result is stored and
 * every later opcode becomes error "Preceding opcode failed". */
int jq_job_op_finish(jq_job_t *job, int64_t now, bool success, jq_blob_t *result,
                     jq_delta_t *d);
/* Every unfinished opcode from the current one becomes error with message
 * (used for shutdown and restart recovery, and dependency errors). */
int jq_job_fail(jq_job_t *job, int64_t now, const char *message, jq_delta_t *d);
/* Unfinished opcodes become canceled with "Job canceled by request". */
int jq_job_mark_canceled(jq_job_t *job, int64_t now, jq_delta_t *d);

typedef enum {
    JQ_CANCEL_DONE,        /* was queued: canceled now */
    JQ_CANCEL_PENDING,     /* was waiting or running: canceling */
    JQ_CANCEL_TOO_LATE     /* canceling or final */
} jq_cancel_t;
jq_cancel_t jq_job_cancel(jq_job_t *job, int64_t now, jq_delta_t *d);

/* Every queued or waiting opcode takes prio (JQ_PRIO_CHANGED; the delta is
 * empty when they all had it already: nothing to record). */
typedef enum {
    JQ_PRIO_CHANGED,
    JQ_PRIO_FINISHED,      /* job final */
    JQ_PRIO_CANCELING,     /* job canceling */
    JQ_PRIO_NO_PENDING     /* no queued or waiting opcode */
} jq_prio_change_t;
jq_prio_change_t jq_job_change_priority(jq_job_t *job, int prio, jq_delta_t *d);

/* Append an encoded log entry (copied) with the given serial to opcode
 * op_index, without touching the job's serials: for rebuilding a job from
 * stored or published entries. -1 when op_index is out of range or out of
 * memory. */
int jq_job_append_log(jq_job_t *job, uint32_t op_index, uint32_t serial, const void *entry,
                      size_t len);
/* Where the entries with serial > after start: *op and *index of the first
 * one (op == nops when there is none). O(opcodes), not O(entries). */
void jq_job_log_find(const jq_job_t *job, uint32_t after, uint32_t *op, uint32_t *index);
/* Entries op->log has room for when it holds n (n ≤ 2^31): 0, then 4, 8,
 * 16... */
static inline uint32_t jq_op_log_cap(uint32_t n)
{
    uint32_t cap = n ? 4 : 0;
    while (cap && cap < n)
        cap *= 2;
    return cap;
}
/* The opcode's name (never NULL). */
static inline const char *jq_op_name(const jq_op_t *op) { return op->name ? op->name : "?"; }
/* Name the opcode: def when known, else an owned copy of name. -1 OOM. */
int jq_op_set_name(jq_op_t *op, const struct jq_opdef *def, const char *name, size_t len);

/* Blob helpers. */
int jq_blob_set(jq_blob_t *b, const void *data, size_t len);
void jq_blob_free(jq_blob_t *b);
/* msgpack ["OpExecError", [message]] */
int jq_blob_exec_error(jq_blob_t *b, const char *message);
/* Move what sb holds into b, at its exact size (an sbuffer allocates 8 KB
 * at a time; a stored value must not keep that). sb is left empty. */
int jq_blob_take(jq_blob_t *b, msgpack_sbuffer *sb);
/* b = o encoded; nil when o is NULL or nil. */
int jq_blob_pack_object(jq_blob_t *b, const msgpack_object *o);

#endif
