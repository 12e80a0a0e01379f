/* cheap.c: which requests the loop serves itself instead of handing them
 * to a handler thread (loop.c, serve_here; docs/architecture.md).
 *
 * A request a handler serves crosses threads twice more than one the loop
 * serves (loop → handler → loop), and each crossing is a wake-up that costs
 * far more than a small request's own work. But the loop also moves every
 * other client's frames, the workers' messages and the events: what it
 * runs must be short, bounded and must never wait. A method is cheap here
 * when, read path by path:
 *  - its work is bounded by a small request (JQ_LOOP_MAX_BYTES, checked by
 *    the caller before any decoding) and by the few jobs it names;
 *  - it takes only locks that no holder keeps across a wait or I/O (shard
 *    locks, the scheduler's mutex, the token index's, the worker opcode
 *    registry's, the cluster status mutex) — none is ever held by a thread
 *    waiting for the loop;
 *  - it hands records on through unbounded queues that never block (the
 *    store's intake, the hub's inbox) and refuses instead of waiting when
 *    the store is behind (`Busy` past JQ_STORE_MAX_BACKLOG);
 *  - it reads nothing from the disk (the store) but by a rare race.
 * Methods that park (wait_for_job_change), page through the ring or the
 * table (events_since, listings), loop over many jobs (submit_many_jobs,
 * auto_archive_jobs), wait for the cluster thread (add_node, remove_node,
 * transfer_leader), shift a shard's whole live array (archive_job), or are
 * rare and gain nothing here (http_token) stay with the handlers. */
#include "daemon.h"
#include "fields.h"

/* A query by ids the loop answers: this many ids at most... */
#define LOOP_QUERY_IDS 8
/* ...and at most this many per-opcode values (opcodes × such fields). */
#define LOOP_QUERY_OP_CELLS 2048
/* A submission the loop makes: this many opcodes at most. */
#define LOOP_SUBMIT_OPS 32

static bool false_or_absent(const msgpack_object *args, const char *key)
{
    const msgpack_object *o = wire_map_get(args, key);
    return !o || o->type == MSGPACK_OBJECT_NIL ||
           (o->type == MSGPACK_OBJECT_BOOLEAN && !o->via.boolean);
}

/* Per-opcode fields (their size grows with the opcodes), or -1 for a field
 * whose size has no small bound (the opcodes as submitted and their
 * summaries, results, the log) or a list the handler must judge. */
static int per_op_fields(const msgpack_object *args)
{
    const msgpack_object *fo = wire_map_get(args, "fields");
    if (!fo || fo->type == MSGPACK_OBJECT_NIL)
        return 0; /* id and status */
    if (fo->type != MSGPACK_OBJECT_ARRAY || fo->via.array.size > JQ_F__COUNT)
        return -1;
    int n = 0;
    for (uint32_t i = 0; i < fo->via.array.size; i++) {
        const msgpack_object *o = &fo->via.array.ptr[i];
        jq_field_t f;
        if (o->type != MSGPACK_OBJECT_STR || jq_field_parse(o->via.str.ptr, o->via.str.size, &f))
            return -1;
        switch (f) {
        case JQ_F_OPS:
        case JQ_F_OPRESULT:
        case JQ_F_OPLOG:
        case JQ_F_SUMMARY:
            return -1;
        case JQ_F_OPSTATUS:
        case JQ_F_OPSTART:
        case JQ_F_OPEXEC:
        case JQ_F_OPEND:
        case JQ_F_OPPRIORITY:
        case JQ_F_OPWORKER:
        case JQ_F_OPATTEMPT:
            n++;
            break;
        default:
            break;
        }
    }
    return n;
}

/* query_jobs of a few explicit ids, each a job the table holds now (a job
 * it does not hold is read from the store, a disk read), for fields of
 * bounded size, not archived-only, not a follower's stale read. */
static bool query_cheap(jq_daemon_t *d, const msgpack_object *args)
{
    const msgpack_object *ids = wire_map_get(args, "ids");
    if (!ids || ids->type != MSGPACK_OBJECT_ARRAY || ids->via.array.size == 0 ||
        ids->via.array.size > LOOP_QUERY_IDS || !false_or_absent(args, "archived") ||
        !false_or_absent(args, "stale"))
        return false;
    int op_fields = per_op_fields(args);
    if (op_fields < 0)
        return false;
    uint64_t cells = 0;
    for (uint32_t i = 0; i < ids->via.array.size; i++) {
        int64_t id;
        if (!wire_get_int(&ids->via.array.ptr[i], &id) || id <= 0)
            return false; /* the handler words the refusal */
        jq_shard_t *sh = jq_table_shard_for(d->table, (uint64_t)id);
        jq_shard_rdlock(sh);
        const jq_job_t *job = jq_shard_find_any(sh, (uint64_t)id);
        uint32_t nops = job ? job->nops : 0;
        jq_shard_rdunlock(sh);
        /* Archived jobs leave the table once committed: one that leaves
         * between here and the answer is read from the store after all —
         * rare, and one small read. */
        if (!job)
            return false;
        cells += (uint64_t)nops * (uint64_t)op_fields;
    }
    return cells <= LOOP_QUERY_OP_CELLS;
}

static bool submit_cheap(const msgpack_object *args)
{
    const msgpack_object *ops = wire_map_get(args, "ops");
    return ops && ops->type == MSGPACK_OBJECT_ARRAY && ops->via.array.size <= LOOP_SUBMIT_OPS;
}

bool jq_request_cheap(jq_daemon_t *d, jq_method_t m, const msgpack_object *args)
{
    switch (m) {
    case JQ_M_PING:        /* constants, the cluster's status under its mutex */
    case JQ_M_LIST_FIELDS: /* a static table */
    case JQ_M_LIST_OPCODES: /* built-ins and the worker opcodes (at most a few hundred) */
    case JQ_M_STATS:       /* counters; one read lock per shard, one at a time */
    case JQ_M_QUERY_NODES: /* the cluster's node table under its mutex: no wait */
    case JQ_M_CANCEL_JOB:  /* one job under its shard lock */
    case JQ_M_CHANGE_JOB_PRIORITY:
    /* A flag and a queued record. On the loop for order's sake too: a
     * submission pipelined behind them (served here) must see them. */
    case JQ_M_SET_DRAIN_FLAG:
    case JQ_M_SHUTDOWN:
        return true;
    case JQ_M_SUBMIT_JOB:
        return submit_cheap(args);
    case JQ_M_QUERY_JOBS:
        return query_cheap(d, args);
    default:
        return false;
    }
}
