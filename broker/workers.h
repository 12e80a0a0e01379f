/* workers.h: the worker hub — jobqd's side of the worker protocol
 * (docs/protocol.md, "Workers"). It lives in the loop thread: the loop
 * owns the workers' ROUTER socket and hands the hub what arrives, and the
 * hub's timers (heartbeats, leases, timeouts, retry back-offs) are one
 * indexed heap whose next deadline bounds the loop's poll. A worker costs
 * a small record and no thread.
 *
 * Jobs come from the executors: when a job's current opcode is a worker's,
 * its executor hands it to the scheduler's remote state, which offers it
 * here (an inbox with an eventfd, the only part other threads touch). The
 * hub keeps a queue per opcode name in (priority, job id) order and hands
 * opcodes to workers with room, the longest idle first. Before an
 * assignment goes out its `running` record is committed: a worker never
 * starts what a crash could undo.
 *
 * Table changes (running, log entries, results, retries) follow the
 * table's write protocol, with no other lock held and no I/O under the
 * shard lock: the sends happen after. */
#ifndef JOBQ_WORKERS_H
#define JOBQ_WORKERS_H

#include "daemon.h"
#include "hubsnap.h"

#include <stdbool.h>
#include <stdint.h>

#define JQ_WORKER_MAX_CAPACITY 1024
#define JQ_WORKER_MAX_OPCODES 256    /* declared in one hello */
#define JQ_WORKER_MAX_ENTRIES 1000   /* feedback entries in one message */
#define JQ_WORKER_MAX_TYPE 32        /* bytes of a feedback entry's type */
#define JQ_WORKER_STOP_GRACE_US (10 * 1000000ll) /* cancel/timeout → forced end */
/* Attempts of one opcode (hand-backs included) before it fails: a worker
 * that keeps taking and giving back cannot keep an opcode alive forever. */
#define JQ_WORKER_MAX_ATTEMPTS 1000

typedef struct jq_hub jq_hub_t;

/* The hub of daemon d, answering on router (a ROUTER the loop bound; the
 * hub sends on it from the loop thread; NULL until jq_hub_attach).
 * Registers the scheduler's remote hooks, so it exists before any
 * executor runs. NULL when out of memory. */
jq_hub_t *jq_hub_new(jq_daemon_t *d, void *router);
/* Loop thread: the ROUTER to answer on (NULL: none any more). */
void jq_hub_attach(jq_hub_t *h, void *router);
/* Loop thread: one more worker ROUTER (a TCP endpoint's); curve: it is a
 * CURVE server, where only keys of role worker may speak. -1 when full. */
#define JQ_HUB_MAX_SOCKETS (1 + JQ_MAX_LISTEN)
int jq_hub_attach_more(jq_hub_t *h, void *router, bool curve);
/* Unregisters the hooks and frees (jq_hub_stop first). */
void jq_hub_destroy(jq_hub_t **h);

/* The inbox's eventfd: readable when offers or kicks wait. */
int jq_hub_inbox_fd(jq_hub_t *h);
/* Loop thread. The inbox: offers join their opcode's queue, kicks cancel. */
void jq_hub_on_inbox(jq_hub_t *h);
/* Loop thread. Every message waiting on the ROUTER. */
void jq_hub_on_readable(jq_hub_t *h);
/* Loop thread. One message (body) from the worker whose routing id is rid
 * (at most 256 bytes): what jq_hub_on_readable does with each, callable
 * on its own so the decoder can be fuzzed (tests/fuzz/fuzz_worker.c). */
void jq_hub_on_message(jq_hub_t *h, const unsigned char *rid, size_t ridlen, const char *body,
                       size_t len);
/* Loop thread. The store is durable up to `durable`: send the assignments
 * whose running record it covers. */
void jq_hub_on_durable(jq_hub_t *h, uint64_t durable);
/* Loop thread. Heartbeats, lost workers, timeouts, back-offs due at now
 * (CLOCK_MONOTONIC µs); returns when to call again. */
int64_t jq_hub_tick(jq_hub_t *h, int64_t now);
/* Loop thread. A graceful stop began: nothing new is handed out. */
void jq_hub_pause(jq_hub_t *h);
/* Opcodes held by workers now (assigned, not ended). Any thread. */
uint64_t jq_hub_running(jq_hub_t *h);
/* Any thread: the hub as GET /api/workers shows it ({"workers": [{name,
 * id, opcodes, capacity, running, since: [s, us]}], "opcodes": [{name,
 * workers, capacity, busy, waiting}]}, workers by id, opcodes by name),
 * at most JQ_HUBSNAP_INTERVAL_US older than the last change (h NULL: none
 * yet). 0 or -1. */
int jq_hub_snapshot_json(jq_hub_t *h, FILE *out);
/* Any thread: the per-opcode part of that copy (*out malloc'ed; SIZE_MAX
 * out of memory). */
size_t jq_hub_snapshot_opcodes(jq_hub_t *h, jq_hubsnap_op_t **out);
/* Loop thread, at the stop: every lease ends (a retry when it has one
 * left, else error "Interrupted by broker shutdown"), each worker gets
 * `revoke` for it and `disconnect`. */
void jq_hub_stop(jq_hub_t *h);
/* Loop thread, a cluster's new leader loading the queue: job's opcode op
 * runs (attempt) on a worker of the previous leader's. The hub waits two
 * lease times for a worker to say hello with it (then it is that worker's
 * lease again), else takes it back as a lost worker's. -1 out of memory. */
int jq_hub_adopt(jq_hub_t *h, uint64_t job, uint32_t op, uint16_t attempt, const char *opcode,
                 int prio, int64_t timeout_us);

#endif
