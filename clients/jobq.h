/* jobq.h: libjobq, the C client library of the jobq job-queue daemon.
 *
 * Modelled on malamute's mlm_client: one opaque client object per
 * connection, every call that waits takes an explicit timeout, and the
 * detail of the last failure is kept in the object (jobq_client_status()
 * for the code, jobq_client_reason() for a human sentence).
 *
 * Each client owns one ZeroMQ DEALER socket (and its own ZeroMQ context)
 * connected to the daemon's endpoint. Every call sends one request with a
 * fresh request id and waits for the reply carrying that id; replies with
 * other ids (answers to earlier calls that timed out) are discarded, and
 * keepalive replies are skipped: they extend nothing, the timeout is the
 * caller's, except in jobq_wait_for_job_change without a timeout of its
 * own, whose daemon-side wait is the point of the call (see there). The
 * wire protocol is docs/protocol.md; the envelope codec is proto/wire.h.
 *
 * Failing fast: the client watches its connection (a ZeroMQ socket
 * monitor). A call made while nothing listens at the endpoint fails at
 * once (within one reconnect interval, 100-200 ms, at most) with
 * JOBQ_ERR_NOT_RUNNING instead of waiting out its timeout; so does a call
 * whose connection is lost while it waits for its reply, unless it can
 * safely be sent again (read-only methods: ping, query_jobs, stats,
 * events_since, wait_for_job_change; submissions with a client token),
 * in which case it is sent once more when the daemon is back.
 *
 * Values cross the API as jansson values (json_t). Arguments are borrowed:
 * the library never steals a reference. Returned json_t values are new
 * references owned by the caller (json_decref them).
 *
 * Timeouts are in milliseconds; a negative timeout waits forever.
 *
 * Return scheme: int functions return 0 on success and -1 on failure;
 * pointer functions return NULL on failure. On failure the status is one of
 * - a daemon error code (the daemon's error reply; the reason is its message),
 * - JOBQ_ERR_NOT_RUNNING: nothing listens at the endpoint: for ipc:// no
 *   socket file, or a file nobody listens on (left by a crash); for tcp://
 *   a refused connection. Also when the daemon went away while the call
 *   waited for its reply (the reason then says so, and whether the
 *   request may have been carried out). The reason starts "jobqd is not
 *   running at ENDPOINT".
 * - JOBQ_ERR_TIMEOUT: no reply within the timeout (daemon hung, or slower
 *   than the timeout),
 * - JOBQ_ERR_TRANSPORT: the request could not be sent, a TCP connect got
 *   no answer within JOBQ_CONNECT_TIMEOUT_MS, or the connection was lost
 *   while a request that cannot be repeated waited for its reply and the
 *   daemon is back (it may or may not have been carried out),
 * - JOBQ_ERR_MALFORMED: the daemon's reply could not be understood,
 * - JOBQ_ERR_BAD_ARGUMENT: the caller's arguments were rejected before
 *   sending (wrong JSON type, nesting too deep).
 *
 * Thread contract: a client object must be used by one thread at a time
 * (a ZeroMQ socket belongs to one thread); distinct objects are
 * independent.
 */
#ifndef JOBQ_H
#define JOBQ_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "wire.h"

typedef struct _jobq_client_t jobq_client_t;

/* How long a TCP connect nobody answers (no refusal either: host down,
 * packets dropped) is waited for before the attempt fails. */
#define JOBQ_CONNECT_TIMEOUT_MS 3000

/* Creates a client connected (asynchronously, as ZeroMQ does) to endpoint,
 * e.g. "ipc:///var/lib/jobq/jobq.sock" or "tcp://127.0.0.1:5555". Returns
 * NULL when the endpoint is invalid or ZeroMQ cannot create the socket.
 *
 * endpoint may also be a comma-separated list ("tcp://h1:5555,tcp://h2:5555":
 * the client endpoints of a cluster's nodes). The client talks to one at a
 * time, the first to begin with. A NotLeader answer (the request did
 * nothing) sends the request on to the leader it names (one of its
 * endpoints that is in the list, else its first of the same scheme), or,
 * while no leader is known, to the listed endpoints in turn about 200 ms
 * later; at most 10 hops per call (then JOBQ_ERR_NOT_LEADER). A call that
 * cannot reach its endpoint (NOT_RUNNING, TIMEOUT, TRANSPORT) goes on to
 * the next listed endpoint only when sending it again is safe: nothing
 * was sent, or the request is read-only or a submission with a token
 * (a timed-out one that is safe starts at the next endpoint on its next
 * call). All within the call's timeout. A single endpoint never moves. */
jobq_client_t *jobq_client_new(const char *endpoint);

/* Destroys the client (pending requests are dropped: linger is 0) and sets
 * *self_p to NULL. NULL-safe and idempotent. */
void jobq_client_destroy(jobq_client_t **self_p);

/* CURVE for a tcp:// endpoint (docs/security.md): key_file is the
 * client's czmq certificate (NAME.key finds its NAME.key_secret beside
 * it), server_key the daemon's public key, as a Z85 string or its
 * certificate file (DATA_DIR/server.key). The connection is made again
 * with them; requests then go out under the key's role. Both NULL: no
 * keys. On an ipc:// endpoint the keys are kept but never used. 0, or -1
 * with the reason in jobq_client_status/reason (JOBQ_ERR_BAD_ARGUMENT).
 * A subscriber made from the client uses its keys too. */
int jobq_client_set_keys(jobq_client_t *self, const char *key_file, const char *server_key);

/* The endpoint the client is connected to now: the one given to
 * jobq_client_new, or for a list the one in use (a leader's, perhaps not
 * in the list). */
const char *jobq_client_endpoint(jobq_client_t *self);

/* Code of the last call's failure, JOBQ_ERR_NONE after a success. */
jobq_code_t jobq_client_status(jobq_client_t *self);

/* Human sentence for the last failure ("" after a success). Valid until the
 * next call on this client. */
const char *jobq_client_reason(jobq_client_t *self);

/* The generic call every method below goes through: sends method with args
 * (a JSON object, or NULL for no arguments) and waits up to timeout_ms for
 * the reply. On success stores the decoded result in *result (a new
 * reference) when result is not NULL, and returns 0. */
int jobq_call(jobq_client_t *self, const char *method, const json_t *args,
              json_t **result, int timeout_ms);

/* ping: returns {"version", "protocol", "protocols", "time", "epoch",
 * "publish", "token_window"} or NULL. */
json_t *jobq_ping(jobq_client_t *self, int timeout_ms);

/* submit_job: ops is a JSON array of opcode objects
 * ({"op", "args", "priority", "depends"}). Stores the new job id in
 * *id_out (when not NULL). */
int jobq_submit_job(jobq_client_t *self, const json_t *ops, bool ignore_drain,
                    uint64_t *id_out, int timeout_ms);

/* submit_many_jobs: jobs is a JSON array of opcode arrays. Returns the
 * per-job result list ([true, id] or [false, message] each) or NULL. */
json_t *jobq_submit_many_jobs(jobq_client_t *self, const json_t *jobs,
                              bool ignore_drain, int timeout_ms);

/* Retry-safe submissions (docs/protocol.md "Client tokens"): token (1 to
 * JOBQ_TOKEN_MAX bytes of UTF-8 text, unique per submission, e.g. from
 * jobq_new_token; NULL sends none) lets the daemon answer a repeated call
 * with the first call's ids instead of creating the jobs again. When a
 * call with a token times out (JOBQ_ERR_TIMEOUT) it is sent again, with
 * the same token, up to `retries` more times (each with timeout_ms).
 * A batch with a token holds at most JOBQ_MAX_JOBS_PER_TOKEN jobs (wire.h).
 * Otherwise as jobq_submit_job / jobq_submit_many_jobs. */
#define JOBQ_TOKEN_MAX 64
int jobq_submit_job_ex(jobq_client_t *self, const json_t *ops, bool ignore_drain,
                       const char *token, int retries, uint64_t *id_out, int timeout_ms);
json_t *jobq_submit_many_jobs_ex(jobq_client_t *self, const json_t *jobs, bool ignore_drain,
                                 const char *token, int retries, int timeout_ms);
/* A fresh random token (32 hex digits and a NUL) in buf of len >= 33.
 * 0, or -1 when len is too small. */
int jobq_new_token(char *buf, size_t len);

/* query_jobs: ids (array of ints) or NULL for a listing; fields (array of
 * names) or NULL for the daemon's default; status (array of status names)
 * or NULL for no filter; after_id 0 to start at the beginning; limit 0 for
 * the daemon's default; archived to include archived jobs in a listing.
 * Returns the result object {"fields", "rows", "more"} or NULL. */
json_t *jobq_query_jobs(jobq_client_t *self, const json_t *ids, const json_t *fields,
                        const json_t *status, uint64_t after_id, uint64_t limit,
                        bool archived, int timeout_ms);

/* cancel_job: returns the daemon's [bool, message] or NULL. */
json_t *jobq_cancel_job(jobq_client_t *self, uint64_t id, int timeout_ms);

/* change_job_priority: returns the daemon's [bool, message] or NULL. */
json_t *jobq_change_job_priority(jobq_client_t *self, uint64_t id, int priority,
                                 int timeout_ms);

/* archive_job: stores in *archived_out whether the job was archived. */
int jobq_archive_job(jobq_client_t *self, uint64_t id, bool *archived_out, int timeout_ms);

/* auto_archive_jobs: age in seconds (-1: every finished job), budget_s the
 * daemon's work budget in whole seconds (jobqd takes an integer). Stores
 * the counts when the pointers are not NULL. */
int jobq_auto_archive_jobs(jobq_client_t *self, int64_t age, int64_t budget_s,
                           uint64_t *archived_out, uint64_t *remaining_out,
                           int timeout_ms);

/* set_drain_flag: sets or clears the drain flag. */
int jobq_set_drain_flag(jobq_client_t *self, bool flag, int timeout_ms);

/* stats: returns the daemon's counters map or NULL. */
json_t *jobq_stats(jobq_client_t *self, int timeout_ms);

/* shutdown: asks the daemon to stop; returns once it has acknowledged. It
 * takes no new jobs and lets running opcodes finish (--shutdown-grace),
 * or with `now` interrupts them at once. */
int jobq_shutdown(jobq_client_t *self, bool now, int timeout_ms);

/* Margin added to the daemon-side wait of wait_for_job_change to get the
 * call's timeout, and the wait granted again by each keepalive (the daemon
 * sends one every 5 s while the request is parked). */
#define JOBQ_WFJC_MARGIN_MS 10000
#define JOBQ_WFJC_KEEPALIVE_GRACE_MS 12000

/* wait_for_job_change (Ganeti's WaitForJobChange): fields (array of field
 * names, required), prev_job_info (array, or NULL for nil), prev_log_serial
 * (-1 for nil), wait_s the daemon's wait in seconds (0 < wait_s <= 600).
 * timeout_ms > 0: the call takes at most that long, keepalives or not
 * (make it longer than wait_s, or an unchanged job times the call out).
 * timeout_ms <= 0: the call waits wait_s + JOBQ_WFJC_MARGIN_MS, and each
 * keepalive from the daemon proves it alive and extends the wait to at
 * least JOBQ_WFJC_KEEPALIVE_GRACE_MS from then. On success stores in *result
 * (new reference) [job_info, log_entries], the string "nochange" (nothing
 * changed within wait_s) or null (no such job), and returns 0. */
int jobq_wait_for_job_change(jobq_client_t *self, uint64_t id, const json_t *fields,
                             const json_t *prev_job_info, int64_t prev_log_serial,
                             double wait_s, int timeout_ms, json_t **result);

/* events_since: the published events after after_seq (epoch 0: do not
 * check the epoch; limit 0: the daemon's default). Returns the result map
 * {"epoch", "first_seq", "last_seq", "too_old", "events", "more"} or NULL. */
json_t *jobq_events_since(jobq_client_t *self, uint64_t after_seq, uint64_t epoch,
                          uint64_t limit, int timeout_ms);

/* ------------------------------------------------------------------ */
/* Event subscriber: the algorithm of docs/protocol.md, "Subscribing
 * without a race, and catching up", implemented once for every C tool.
 *
 * A subscriber owns a SUB socket (in a ZeroMQ context of its own, like
 * the client) connected to the daemon's event stream, and uses the client
 * for the snapshot (query_jobs with "snapshot": true) and for
 * events_since. The client must not be used by
 * another thread meanwhile; it may be used between calls.
 *
 * jobq_sub_next delivers, in order and exactly once per change record,
 * JSON objects of two types:
 *
 *   {"type": "change", "seq": S, "epoch": E, "change": record,
 *    "job": id, "serial": n, "kind": "submit"|"update"|"archive",
 *    "recovered": bool}
 *       one event: the decoded PUB body plus convenience copies of the
 *       record's job, serial and kind; "recovered" is true when it came
 *       from events_since rather than from the stream.
 *
 *   {"type": "resync", "reason": "start"|"epoch"|"too_old"|"gap",
 *    "seq": S, "epoch": E, "fields": [name...], "rows": [[value...]...]}
 *       a snapshot: the caller must rebuild its view from the rows (one
 *       per watched job, or one per live job in all-jobs mode, in the
 *       order of fields; "id" and "change_serial" are always among them);
 *       the change events that follow apply on top of it. The first event
 *       is always a resync with reason "start".
 *
 * Gap detection: in all-jobs mode by seq (each event must be the last
 * seq + 1; a heartbeat above the last seq means the last events were
 * missed); in job mode by the jobs' change serials (an event must be
 * serial + 1), plus a cheap check of the jobs' change_serial once per
 * heartbeat that catches a lost *last* event. Gaps are filled with
 * events_since (paged); when the daemon no longer holds the events
 * (too_old), or its epoch changed (restart), the subscriber takes a new
 * snapshot and delivers a resync.
 */
typedef struct _jobq_sub_t jobq_sub_t;

/* Counters of a subscriber, for tests and diagnostics. */
typedef struct {
    uint64_t delivered;   /* change events delivered */
    uint64_t skipped;     /* events dropped as already reflected or seen */
    uint64_t gaps;        /* gaps detected (seq, serial or heartbeat) */
    uint64_t recovered;   /* change events delivered from events_since */
    uint64_t resyncs;     /* snapshots taken after the first (too_old, epoch) */
    uint64_t heartbeats;  /* heartbeats received */
    uint64_t checks;      /* job-mode change_serial checks made */
} jobq_sub_counters_t;

/* Creates a subscriber. events_endpoint: the PUB endpoint, or NULL to ask
 * the daemon (ping's "publish" list: for an ipc:// client endpoint the
 * first ipc:// entry, for tcp:// the first tcp:// entry, else the first).
 * job_ids/njobs: the jobs to follow (at most JOBQ_SUB_MAX_JOBS); njobs 0
 * follows every job. timeout_ms: the timeout of that ping and the initial
 * per-call timeout (jobq_sub_set_call_timeout). Subscribes at once (step 1
 * of the algorithm); the snapshot is taken by the first jobq_sub_next.
 * Returns NULL on failure,
 * with the reason in the client (jobq_client_status/reason): the daemon
 * did not answer ping, published no usable endpoint, or an ipc endpoint's
 * socket file does not exist. */
#define JOBQ_SUB_MAX_JOBS 1000
jobq_sub_t *jobq_sub_new(jobq_client_t *client, const char *events_endpoint,
                         const uint64_t *job_ids, size_t njobs, int timeout_ms);

/* Destroys the subscriber and nulls *self_p; NULL-safe, idempotent. */
void jobq_sub_destroy(jobq_sub_t **self_p);

/* Fields the snapshot asks for, before the first jobq_sub_next: a JSON
 * array of query field names ("id" and "change_serial" are added when
 * missing). Default: id, change_serial, status. Returns 0 or -1. */
int jobq_sub_set_fields(jobq_sub_t *self, const json_t *fields);

/* Per-call timeout of the subscriber's requests (initially jobq_sub_new's). */
void jobq_sub_set_call_timeout(jobq_sub_t *self, int timeout_ms);

/* Reads the batched stream (topic "batch/", many events per message,
 * docs/protocol.md) instead of one message per event: the same events,
 * delivered one at a time under the same rules. All-jobs mode only, before
 * the first jobq_sub_next (it subscribes again). Returns 0, or -1 (job
 * mode, too late, or the socket could not be made: the client's reason). */
int jobq_sub_set_batched(jobq_sub_t *self, bool batched);

/* The next event. Returns 1 with *ev_out set (a new reference), 0 when
 * timeout_ms passed without one, -1 on failure (a request failed, or the
 * client's connection shows the daemon gone: JOBQ_ERR_NOT_RUNNING; the
 * reason is the client's; calling again retries). */
int jobq_sub_next(jobq_sub_t *self, json_t **ev_out, int timeout_ms);

/* The endpoint the SUB socket is connected to. */
const char *jobq_sub_endpoint(jobq_sub_t *self);

/* True once anything (an event or a heartbeat) arrived on the stream: the
 * PUB endpoint is reachable and the subscription is active. */
bool jobq_sub_live(jobq_sub_t *self);

/* Copies the counters into *out. */
void jobq_sub_counters(jobq_sub_t *self, jobq_sub_counters_t *out);

/* ------------------------------------------------------------------ */
/* What the daemon offers (the requests list_fields and list_opcodes). */

/* list_fields: the query fields, [{"name", "description"}...] in the
 * daemon's order, or NULL. */
json_t *jobq_list_fields(jobq_client_t *self, int timeout_ms);

/* list_opcodes: the opcodes the daemon runs, [{"name", "description",
 * "source", "args": [{"name", "type", "required", "default",
 * "description"}...]}...], or NULL. */
json_t *jobq_list_opcodes(jobq_client_t *self, int timeout_ms);

/* Cluster nodes (jobqd --cluster; docs/protocol.md). query_nodes: the
 * nodes as the answering node sees them, a JSON array sorted by id (read
 * role; any node answers). add_node: adds node id at address (HOST:PORT of
 * its node-to-node traffic) as a voter or a standby, with a name (NULL:
 * none) and its client endpoints (a JSON array, NULL: none); returns the
 * result {"id"} once committed. remove_node: 0 once committed.
 * transfer_leader: moves the leadership to node id (0: the daemon picks
 * the most up-to-date voter), the new leader's id in *leader_out. The
 * three changes need the admin role and go to the leader. */
json_t *jobq_query_nodes(jobq_client_t *self, int timeout_ms);
json_t *jobq_add_node(jobq_client_t *self, uint64_t id, const char *address, bool standby,
                      const char *name, const json_t *endpoints, int timeout_ms);
int jobq_remove_node(jobq_client_t *self, uint64_t id, int timeout_ms);
int jobq_transfer_leader(jobq_client_t *self, uint64_t id, uint64_t *leader_out,
                         int timeout_ms);

/* http_token: a token for the daemon's HTTP endpoint naming this client's
 * key (or, over ipc, its uid and role), valid ttl_s seconds (60 to
 * 31622400; 0 for the daemon's default of 30 days). Returns {"token",
 * "role", "owner", "expires": [s, us]} or NULL (docs/security.md "HTTP
 * tokens"). */
json_t *jobq_http_token(jobq_client_t *self, int64_t ttl_s, int timeout_ms);

/* ------------------------------------------------------------------ */
/* Workers: the worker side of docs/protocol.md, "Workers".
 *
 * A worker object owns one DEALER socket (in a ZeroMQ context of its own,
 * like the client) connected to the daemon's worker endpoint. It says
 * hello with the opcodes declared by jobq_worker_add_opcode and its
 * capacity, delivers what the daemon sends as events (assign, cancel,
 * revoke...) and sends feedback and done for the leases it holds.
 *
 * The library handles liveness itself: it sends a heartbeat whenever it
 * has sent nothing else for the interval the daemon's welcome gives, and
 * when the daemon says nothing for its lease time, or says `disconnect`,
 * it closes the socket and says hello again on a new one (to the daemon a
 * new worker). Whatever the old connection held is gone then: each lease
 * is delivered as a revoke event. A worker never gives up on its daemon:
 * while nothing answers it says hello again every lease time (5 s before
 * a welcome told otherwise). The one failure that stops it is a hello the
 * daemon refuses as wrong (BadArgument, Malformed, VersionMismatch: a bad
 * declaration, a built-in opcode's name): every later jobq_worker_poll
 * returns -1 with the daemon's code and message. A hello refused for
 * another reason (Internal) is said again after a pause.
 *
 * Two ways to drive it, on one thread (the owner of the socket):
 * - blocking: jobq_worker_run(w, callback, arg) calls the callback for
 *   each event. A callback that works on an assignment for longer than
 *   the heartbeat interval calls jobq_worker_tick (or sends feedback) now
 *   and then, so the daemon keeps hearing from it, and asks
 *   jobq_worker_lease_state whether the work was canceled meanwhile.
 * - polled beside the caller's own sockets: put jobq_worker_socket(w)
 *   (ZMQ_POLLIN) in the caller's zmq_poll with a timeout of at most
 *   jobq_worker_timeout_ms(w), then call jobq_worker_poll(w, 0, &ev)
 *   until it returns 0. The socket is replaced on every reconnect: ask
 *   for it before each zmq_poll (it is NULL while a reconnect waits).
 *
 * A lease is (job, op, attempt). The library keeps the leases it holds
 * (from assign to done/fail or revoke) and refuses to send anything for
 * another (JOBQ_ERR_BAD_ARGUMENT), so nothing is ever sent for a lease
 * after its revoke. Cancel and revoke of leases it does not hold are
 * dropped.
 *
 * Statuses and reasons as for the client: jobq_worker_status and
 * jobq_worker_reason describe the last failure. Sends take a timeout:
 * 0 never waits (JOBQ_ERR_BUSY when ZeroMQ's send queue is full: the
 * daemon is slower than the worker; poll the socket for ZMQ_POLLOUT and
 * try again), > 0 waits at most that long (JOBQ_ERR_TIMEOUT), < 0 waits
 * for room as long as it takes.
 *
 * Thread contract: one thread at a time per worker object.
 */
typedef struct _jobq_worker_t jobq_worker_t;

/* Limits of the worker protocol (docs/protocol.md). */
#define JOBQ_WORKER_MAX_CAPACITY 1024
#define JOBQ_WORKER_MAX_OPCODES 256
#define JOBQ_WORKER_MAX_NAME 64         /* a worker's name, in bytes */
#define JOBQ_WORKER_MAX_ENTRIES 1000    /* feedback entries per message */
#define JOBQ_WORKER_MAX_ENTRY_TYPE 32   /* a feedback entry's type, in bytes */
/* A feedback message or a failure message is cut (at a character) to
 * JOBQ_MAX_LOG_MESSAGE bytes (wire.h). */

/* One try of one opcode: what assign hands out and every later message
 * names. */
typedef struct {
    uint64_t job;     /* job id */
    uint64_t op;      /* opcode index in the job */
    uint64_t attempt; /* 1, 2...: which try */
} jobq_lease_t;

typedef enum {
    JOBQ_WORKER_EV_WELCOME = 1, /* registered: worker_id, heartbeat, lease_time */
    JOBQ_WORKER_EV_ASSIGN,      /* run this: lease, opcode, args, priority, timeout */
    JOBQ_WORKER_EV_CANCEL,      /* stop the lease's work, then send done or fail:
                                   reason "canceled" or "timeout" */
    JOBQ_WORKER_EV_REVOKE,      /* the lease is gone: stop the work and send nothing
                                   more for it; reason says why */
    JOBQ_WORKER_EV_ERROR,       /* the daemon refused a message: code and reason,
                                   lease when has_lease */
    JOBQ_WORKER_EV_DISCONNECTED /* the connection was given up (reason); a new one
                                   says hello. Revokes of its leases follow */
} jobq_worker_event_type_t;

/* An event. The pointers are the worker's, valid until the next
 * jobq_worker_poll or jobq_worker_run, or jobq_worker_destroy. */
typedef struct {
    jobq_worker_event_type_t type;
    jobq_lease_t lease;        /* ASSIGN, CANCEL, REVOKE; ERROR when has_lease */
    bool has_lease;            /* ERROR: the refused message named lease */
    const char *opcode;        /* ASSIGN: the opcode's name */
    const json_t *args;        /* ASSIGN: the arguments (an object), or NULL when
                                  JSON cannot carry them (a bin value): args_error */
    const char *args_json;     /* ASSIGN: args as compact JSON text, or NULL likewise */
    const char *args_error;    /* ASSIGN: why args is NULL; NULL otherwise */
    const void *args_msgpack;  /* ASSIGN: args as the daemon sent them: one msgpack map */
    size_t args_msgpack_size;
    int priority;              /* ASSIGN */
    double timeout;            /* ASSIGN: the attempt's time limit in seconds; 0: none
                                  (the daemon enforces it: a cancel "timeout" comes) */
    const char *reason;        /* CANCEL, REVOKE, DISCONNECTED: why; ERROR: the
                                  daemon's message; "" otherwise */
    jobq_code_t code;          /* ERROR: the daemon's code */
    uint64_t worker_id;        /* WELCOME: this connection's id at the daemon */
    double heartbeat;          /* WELCOME: heartbeat interval, seconds */
    double lease_time;         /* WELCOME: silence after which either side gives up */
} jobq_worker_event_t;

/* What the worker knows of a lease. */
typedef enum {
    JOBQ_LEASE_NONE = 0, /* not held: never assigned, finished, or revoked */
    JOBQ_LEASE_RUNNING,  /* assigned, not finished */
    JOBQ_LEASE_CANCELED  /* assigned, and the daemon asked to stop it */
} jobq_lease_state_t;

/* A feedback entry: a log entry of the lease's opcode. message need not
 * be NUL-terminated: len bytes are sent (bytes that are not UTF-8 become
 * '?'; past JOBQ_MAX_LOG_MESSAGE the message is cut). */
typedef struct {
    const char *type;    /* "message", "stderr", "progress"...: 1 to 32 bytes */
    const char *message;
    size_t len;
} jobq_feedback_entry_t;

/* The endpoint a worker uses when given none: $JOBQ_WORKER_ENDPOINT when
 * set and not empty, else ipc://RUN_DIR/workers.sock with the installed
 * daemon's run directory (/run/jobq unless the build said otherwise; the
 * library does not know build trees: jobq-worker does). Written into buf
 * (truncated to len). */
void jobq_worker_default_endpoint(char *buf, size_t len);

/* Creates a worker for endpoint (NULL: jobq_worker_default_endpoint),
 * named name (NULL: none; at most JOBQ_WORKER_MAX_NAME bytes, for people)
 * running up to capacity (1 to JOBQ_WORKER_MAX_CAPACITY) opcodes at once.
 * It connects on jobq_worker_connect or the first poll, once its opcodes
 * are declared. NULL on bad arguments (an endpoint ZeroMQ cannot connect
 * to included) or when ZeroMQ fails.
 *
 * endpoint may list a cluster's worker endpoints, comma-separated. A hello
 * answered NotLeader goes to the leader's worker endpoint; a connection
 * given up (the daemon silent for the lease time, or disconnect) goes to
 * the next listed endpoint, and the leases still held are not revoked then
 * but named in the next hello: those the welcome does not list in
 * `resumed` are revoked when it comes (all of them without `resumed`).
 * jobq_worker_endpoint is the endpoint in use. */
jobq_worker_t *jobq_worker_new(const char *endpoint, const char *name, int capacity);

/* CURVE keys for a tcp:// worker endpoint, as jobq_client_set_keys (the
 * key's role must be worker); before the worker connects. 0, or -1 with
 * the reason in jobq_worker_status/reason. */
int jobq_worker_set_keys(jobq_worker_t *self, const char *key_file, const char *server_key);

/* Sends disconnect when connected (the daemon takes back every lease the
 * worker still holds: each goes back to the queue as its next attempt),
 * waits up to 1 s for it to leave, destroys the worker and sets *self_p to
 * NULL. NULL-safe and idempotent. */
void jobq_worker_destroy(jobq_worker_t **self_p);

/* Declares an opcode the worker serves, before it connects. name: 1 to
 * JOBQ_MAX_OP_NAME bytes of letters, digits and "._-". decl: NULL, or a
 * JSON object with any of "description" (string), "args" (array of
 * {"name": string, "type": string, "required": bool, "description":
 * string}, "name" required: the opcode's complete argument list) and
 * "timeout" (number of seconds > 0: the default time limit); other keys
 * are refused. At most JOBQ_WORKER_MAX_OPCODES. 0, or -1 with
 * JOBQ_ERR_BAD_ARGUMENT and a reason naming what is wrong. */
int jobq_worker_add_opcode(jobq_worker_t *self, const char *name, const json_t *decl);

/* Connects and says hello (once; later calls do nothing). Needs at least
 * one opcode. Does not wait for the welcome (an event). 0 or -1. */
int jobq_worker_connect(jobq_worker_t *self);

/* The endpoint the worker connects to (now: for a list, the one in use). */
const char *jobq_worker_endpoint(jobq_worker_t *self);

/* Code and sentence of the last failure (JOBQ_ERR_NONE and "" after a
 * success). The reason is valid until the next call on this worker. */
jobq_code_t jobq_worker_status(jobq_worker_t *self);
const char *jobq_worker_reason(jobq_worker_t *self);

/* True between a welcome and the end of that connection. */
bool jobq_worker_ready(jobq_worker_t *self);

/* The DEALER socket now in use, for the caller's zmq_poll (ZMQ_POLLIN; and
 * ZMQ_POLLOUT to wait for room after JOBQ_ERR_BUSY), or NULL while no
 * connection is open. Only poll it: reading it is the library's job. */
void *jobq_worker_socket(jobq_worker_t *self);

/* Milliseconds until the library must run again (a heartbeat is due, the
 * daemon's silence reaches the lease time, a reconnect is due): the
 * longest timeout for the caller's zmq_poll. 0 when an event is waiting
 * to be delivered; -1 after a fatal failure (nothing more will happen). */
int jobq_worker_timeout_ms(jobq_worker_t *self);

/* The next event, waiting up to timeout_ms (0: do not wait; < 0: as long
 * as it takes) while heartbeats and reconnects go on. Returns 1 with
 * *event filled, 0 when the timeout passed or a signal interrupted the
 * wait, -1 after a fatal failure (the hello was refused). */
int jobq_worker_poll(jobq_worker_t *self, int timeout_ms, jobq_worker_event_t *event);

/* Callback of jobq_worker_run: return 0 to go on, any other value to make
 * jobq_worker_run return it. */
typedef int jobq_worker_fn(jobq_worker_t *worker, const jobq_worker_event_t *event,
                           void *arg);

/* The blocking loop: connects, then calls fn for every event until fn
 * returns non-zero (returns that value). Returns 0 when a signal
 * interrupted the wait (check your flags and call again), -1 after a
 * fatal failure. */
int jobq_worker_run(jobq_worker_t *self, jobq_worker_fn *fn, void *arg);

/* Housekeeping without waiting, for work done inside a callback: reads
 * what the daemon sent (cancel and revoke update jobq_worker_lease_state
 * at once; the events wait for the next poll), sends a heartbeat when one
 * is due, reconnects when the daemon was silent too long. Returns 0, or
 * -1 after a fatal failure. */
int jobq_worker_tick(jobq_worker_t *self);

/* What the worker knows of lease now. */
jobq_lease_state_t jobq_worker_lease_state(jobq_worker_t *self, const jobq_lease_t *lease);

/* Number of leases held (assigned, not finished or revoked). */
size_t jobq_worker_leases(jobq_worker_t *self);

/* feedback: log entries for a held lease, in order (1 to
 * JOBQ_WORKER_MAX_ENTRIES per call; each becomes one log entry of the
 * opcode). jobq_worker_feedback sends one entry of a NUL-terminated
 * message. 0 or -1 (JOBQ_ERR_BAD_ARGUMENT: lease not held, bad entry;
 * JOBQ_ERR_BUSY, JOBQ_ERR_TIMEOUT: see the timeouts above). */
int jobq_worker_feedback(jobq_worker_t *self, const jobq_lease_t *lease, const char *type,
                         const char *message, int timeout_ms);
int jobq_worker_feedback_entries(jobq_worker_t *self, const jobq_lease_t *lease,
                                 const jobq_feedback_entry_t *entries, size_t n,
                                 int timeout_ms);

/* done: the lease's opcode succeeded with result (any JSON value; NULL
 * for nil). jobq_worker_fail: it failed with message (cut to
 * JOBQ_MAX_LOG_MESSAGE bytes). Once sent, the lease is no longer held;
 * when the send fails it still is (try again). 0 or -1 as feedback. */
int jobq_worker_done(jobq_worker_t *self, const jobq_lease_t *lease, const json_t *result,
                     int timeout_ms);
int jobq_worker_fail(jobq_worker_t *self, const jobq_lease_t *lease, const char *message,
                     int timeout_ms);

#endif
