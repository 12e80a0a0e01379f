/* daemon.h: jobqd's top-level context — the one piece of mutable state the
 * whole daemon shares — and the request-handling entry points.
 *
 * Threads (fixed at start): the loop (main thread) owns the ROUTER socket
 * and serves cheap requests itself (cheap.c); `handlers` threads decode
 * the other requests and run them against the table;
 * `executors` threads run jobs; ZeroMQ adds its I/O thread. */
#ifndef JOBQ_DAEMON_H
#define JOBQ_DAEMON_H

#include "changeq.h"
#include "config.h"
#include "executor.h"
#include "ring.h"
#include "scheduler.h"
#include "store.h"
#include "table.h"
#include "tokens.h"
#include "wire.h"

#include <pthread.h>
#include <stdatomic.h>

typedef enum {
    JQ_M_PING = 0,
    JQ_M_SUBMIT_JOB,
    JQ_M_SUBMIT_MANY_JOBS,
    JQ_M_QUERY_JOBS,
    JQ_M_CANCEL_JOB,
    JQ_M_CHANGE_JOB_PRIORITY,
    JQ_M_ARCHIVE_JOB,
    JQ_M_AUTO_ARCHIVE_JOBS,
    JQ_M_SET_DRAIN_FLAG,
    JQ_M_STATS,
    JQ_M_SHUTDOWN,
    JQ_M_WAIT_FOR_JOB_CHANGE,
    JQ_M_EVENTS_SINCE,
    JQ_M_LIST_FIELDS,
    JQ_M_LIST_OPCODES,
    JQ_M_HTTP_TOKEN,
    JQ_M_QUERY_NODES,
    JQ_M_ADD_NODE,
    JQ_M_REMOVE_NODE,
    JQ_M_TRANSFER_LEADER,
    JQ_M__COUNT
} jq_method_t;

/* shutdown_requested */
#define JQ_SHUTDOWN_NONE 0
#define JQ_SHUTDOWN_GRACEFUL 1 /* no new jobs; running opcodes may finish */
#define JQ_SHUTDOWN_NOW 2      /* interrupt running opcodes at once */

/* The loop's own counters, copied after each turn for `stats`. */
typedef struct {
    _Atomic uint64_t connections, connections_peak, max_connections, accept_pauses;
    _Atomic uint64_t refused_auth, handshake_failed;
    _Atomic bool accepting;
    _Atomic uint64_t replies_waiting, replies_late, replies_to_gone, busy_dropped;
    /* connections open now: clients, event subscribers, workers
     * (jq_conn_kind_t, listeners.h) */
    _Atomic uint64_t by_kind[3];
} jq_loop_stats_t;

/* The worker hub's counters (workers.c writes, stats reads). */
typedef struct {
    _Atomic uint64_t connected;  /* workers registered now */
    _Atomic uint64_t capacity;   /* their capacity, summed */
    _Atomic uint64_t leases;     /* opcodes assigned to them now */
    _Atomic uint64_t waiting;    /* opcodes waiting for a worker */
    _Atomic uint64_t hellos, assigned, completed, failed;
    _Atomic uint64_t lost;       /* workers lost (silent for the lease time) */
    _Atomic uint64_t retries;    /* attempts that went back to the queue */
    _Atomic uint64_t timeouts, cancels;
    _Atomic uint64_t refused;    /* messages refused (malformed, stale lease...) */
} jq_worker_stats_t;

typedef struct jq_daemon {
    jq_config_t cfg;
    int argc;                       /* the command line, parsed again on reload */
    char **argv;
    void *zctx;
    jq_table_t *table;
    jq_sched_t *sched;
    jq_executors_t *executors;
    const jq_opset_t *ops;          /* &opset */
    jq_opset_t opset;               /* built-in opcodes + the worker opcodes */
    jq_store_t *store;              /* the durable queue (its own thread) */
    jq_changeq_t *changeq;          /* committed change records, for the loop */
    jq_ring_t *ring;                /* replay ring: loop appends, handlers read */
    jq_tokens_t *tokens;            /* client tokens of recent submissions */
    struct jq_hub *hub;             /* the worker hub (workers.h; loop thread) */
    struct jq_auth *auth;           /* CURVE keys and zauth (auth.h); NULL: none */
    _Atomic uint64_t epoch;         /* this run's event epoch (a cluster's:
                                       set when this node starts leading) */
    struct jq_cluster *cluster;     /* --cluster (cluster.h); NULL: one node */
    jq_table_t *view;               /* a cluster follower's view of the queue
                                       (stale reads); NULL once it leads */
    pthread_rwlock_t view_lock;     /* guards `view` itself (not its jobs) */
    _Atomic uint64_t last_seq;      /* last event sequence number published */
    char publish_eps[JQ_MAX_LISTEN + 1][512]; /* bound event endpoints */
    unsigned npublish_eps;
    char worker_eps[JQ_MAX_LISTEN + 1][512]; /* bound worker endpoints */
    unsigned nworker_eps;
    jq_worker_stats_t worker_stats;
    _Atomic uint64_t waiters;       /* wait_for_job_change parked or in flight */
    int socket_gid;                 /* --group's gid, or -1 */
    int lock_fd;                    /* flock'ed DATA_DIR/lock */
    int run_lock_fd;                /* flock'ed RUN_DIR/lock (another run dir) */
    int64_t started_mono;
    pthread_mutex_t drain_mu;       /* orders set_drain_flag's two writes */
    _Atomic bool drained;
    _Atomic bool stopping;          /* refuse submissions */
    bool told_stopping;             /* STOPPING=1 sent (loop thread) */
    _Atomic int shutdown_requested; /* JQ_SHUTDOWN_* */
    jq_loop_stats_t loop_stats;
    _Atomic bool handlers_stop;
    _Atomic uint64_t requests[JQ_M__COUNT];
    _Atomic uint64_t requests_on_loop; /* served by the loop itself (cheap.c) */
    _Atomic uint64_t errors[JOBQ_ERR__COUNT];
    _Atomic uint64_t dropped;
    _Atomic uint64_t dropped_size;  /* requests refused for their size */
    _Atomic uint64_t submitted;
    _Atomic uint64_t changes_consumed;
} jq_daemon_t;

/* Arguments a method handler gets. A handler packs exactly one result
 * value into pk and returns JOBQ_ERR_NONE, or returns an error code with a
 * message in err (whatever it packed is discarded). Any handler thread. */
typedef struct jq_waiter jq_waiter_t;

typedef struct {
    jq_daemon_t *d;
    const msgpack_object *args; /* map or NULL */
    msgpack_packer *pk;
    char *err;
    size_t errlen;
    uint64_t request_id;
    const char *body;           /* the whole request, as received */
    size_t body_len;
    jq_waiter_t *park;          /* set by a handler that parks the request
                                   instead of answering (see waiters.h) */
    uint64_t hold_ticket;       /* set by a handler whose answer may go out
                                   only once the store is durable up to it */
    const struct jq_identity *who; /* the caller */
} jq_call_t;

typedef jobq_code_t (*jq_handler_fn)(jq_call_t *c);

/* How a caller reached the daemon: http_token mints tokens only for
 * callers the daemon itself authenticated (ipc, CURVE), never from a
 * token (a token cannot prolong itself) nor over --insecure TCP. */
typedef enum {
    JQ_VIA_NONE = 0, /* not known (a parked request run again, tests) */
    JQ_VIA_IPC,
    JQ_VIA_CURVE,
    JQ_VIA_INSECURE,
    JQ_VIA_TOKEN,    /* an HTTP token (jq_auth_http_token) */
    JQ_VIA__COUNT
} jq_via_t;

/* Who sent a request, as the loop learned it from its connection: the
 * role (an ipc peer's is --ipc-role; a CURVE peer's is its key's) and the
 * owner its jobs get ("uid:N" over ipc, the key's name over CURVE), and
 * a CURVE peer's public key (Z85; empty otherwise). */
#define JQ_OWNER_MAX 128
#define JQ_KEY_Z85 40
typedef struct jq_identity {
    jq_role_t role;
    char owner[JQ_OWNER_MAX];
    jq_via_t via;
    char key[JQ_KEY_Z85 + 1];
} jq_identity_t;

/* The caller may act on a job of this owner (NULL: a job from before
 * owners were recorded): an admin on any, a submitter on its own. */
bool jq_call_owns(const jq_call_t *c, const char *owner);
/* Answer PermissionDenied for a job the caller does not own: the message
 * in c->err, the refusal logged (rate-limited per peer). */
jobq_code_t jq_call_not_owner(jq_call_t *c, uint64_t id, const char *owner);

/* The reply shows state of a job in shard sh (read under its lock just
 * now) that is not committed yet: hold it until it is. No lock held. */
void jq_call_hold(jq_call_t *c, jq_shard_t *sh);

/* Wire name of a method ("submit_job"...). Any thread. */
const char *jq_method_name(jq_method_t m);
/* The least role that may call a method. */
jq_role_t jq_method_role(jq_method_t m);

jobq_code_t jq_handle_submit_job(jq_call_t *c);
jobq_code_t jq_handle_submit_many_jobs(jq_call_t *c);
jobq_code_t jq_handle_query_jobs(jq_call_t *c);
jobq_code_t jq_handle_cancel_job(jq_call_t *c);
jobq_code_t jq_handle_change_job_priority(jq_call_t *c);
jobq_code_t jq_handle_archive_job(jq_call_t *c);
jobq_code_t jq_handle_auto_archive_jobs(jq_call_t *c);
jobq_code_t jq_handle_admin_ping(jq_call_t *c);
jobq_code_t jq_handle_admin_stats(jq_call_t *c);
jobq_code_t jq_handle_admin_drain(jq_call_t *c);
jobq_code_t jq_handle_admin_shutdown(jq_call_t *c);
jobq_code_t jq_handle_wait_for_job_change(jq_call_t *c);
jobq_code_t jq_handle_events_since(jq_call_t *c);
jobq_code_t jq_handle_list_fields(jq_call_t *c);
jobq_code_t jq_handle_list_opcodes(jq_call_t *c);
jobq_code_t jq_handle_http_token(jq_call_t *c);
jobq_code_t jq_handle_query_nodes(jq_call_t *c);
jobq_code_t jq_handle_add_node(jq_call_t *c);
jobq_code_t jq_handle_remove_node(jq_call_t *c);
jobq_code_t jq_handle_transfer_leader(jq_call_t *c);

/* Argument readers shared by handlers: a required/optional job id or
 * integer. They fill err and return -1 on a bad or missing value. */
int jq_arg_job_id(jq_call_t *c, const char *key, uint64_t *out);
int jq_arg_int(jq_call_t *c, const char *key, bool required, int64_t lo, int64_t hi,
               int64_t *out);
int jq_arg_bool(jq_call_t *c, const char *key, bool *out);

/* Request handler threads (handlers.c). */
typedef struct jq_handlers jq_handlers_t;
jq_handlers_t *jq_handlers_new(jq_daemon_t *d, const char *requests_ep,
                               const char *replies_ep);
/* Waits until every handler thread has drained its queue and exited. */
void jq_handlers_destroy(jq_handlers_t **h);
bool jq_handlers_running(jq_handlers_t *h);

/* The ROUTER loop (loop.c): serves until shutdown; 0 on a clean stop. */
int jq_loop_run(jq_daemon_t *d);

/* Handling one request body, for the handler threads: writes the reply
 * into sb and returns NULL, or returns a waiter to park in the loop (sb is
 * then empty). */
jq_waiter_t *jq_dispatch(jq_daemon_t *d, const jq_identity_t *who, const char *body,
                         size_t len, msgpack_sbuffer *sb, uint64_t *hold_ticket);

/* The loop serves a request itself when its body has at most this many
 * bytes and its method is cheap (cheap.c): a submission of a few opcodes,
 * a query of a few jobs, a cancel, takes a few microseconds; a thread
 * crossing costs more. */
#define JQ_LOOP_MAX_BYTES 4096
/* The same for the loop: true with the reply in sb (and *hold_ticket, as
 * jq_dispatch) when the request was served — or refused (malformed,
 * unknown method, role, not the leader: the same answers as a handler's);
 * false, with nothing done, when a handler must serve it. Never parks. */
bool jq_dispatch_cheap(jq_daemon_t *d, const jq_identity_t *who, const char *body, size_t len,
                       msgpack_sbuffer *sb, uint64_t *hold_ticket);
/* Whether the loop may run method m with these arguments (cheap.c): short,
 * bounded, and nothing on its path waits. */
bool jq_request_cheap(jq_daemon_t *d, jq_method_t m, const msgpack_object *args);

/* The flag frame from the loop to the handlers: the flag byte, then the
 * caller's role (a byte) and owner; when the way it came is known, a NUL,
 * that way (a byte) and its public key (0 or 40 bytes). A frame of the
 * flag alone (a parked request run again) is a `read` caller. */
#define JQ_IDENTITY_FRAME_MAX (2 + JQ_OWNER_MAX + 2 + JQ_KEY_Z85)
size_t jq_identity_frame(const jq_identity_t *who, char flag, char *out, size_t len);
void jq_identity_from_frame(const char *frame, size_t len, jq_identity_t *who);

/* Frame flag values between the loop and the handlers (second frame). */
#define JQ_FLAG_PLAIN 0     /* a DEALER client */
#define JQ_FLAG_DELIMITER 1 /* a REQ client: echo the empty delimiter */
#define JQ_FLAG_PARK 2      /* handler → loop: body is a jq_waiter_t pointer;
                               bit 0 still says whether a delimiter is due */
#define JQ_FLAG_HOLD 4      /* handler → loop: the flag frame carries 8 more
                               bytes, a store ticket; send the reply once
                               the store is durable up to it */

/* Load the store into the table, settle the jobs that were in flight when
 * the daemon last stopped (JOBMODEL §4.4) and queue the rest (recovery.c).
 * Before any thread runs. */
/* view: a cluster follower's view whose jobs become the queue (the store
 * gives only its figures then); NULL: every job from the store. */
int jq_recover(jq_daemon_t *d, jq_table_t *view, char *err, size_t errlen);
/* Committed records (owned): the jobs' committed serials catch up,
 * committed archives leave memory and the scheduler, the scheduler learns
 * `durable`; returns the records to publish (commit.c). Takes shard locks:
 * the store thread, or a cluster's loop. */
jq_change_t *jq_commit_settle(jq_daemon_t *d, jq_change_t *head, uint64_t durable);
/* The worker opcodes known before any worker connects: those the store
 * remembers, then the config file's (recovery.c). -1 with err. */
int jq_load_worker_opcodes(jq_daemon_t *d, char *err, size_t errlen);

/* Living under a service manager (service.c). sd_notify is a no-op
 * without $NOTIFY_SOCKET. Loop thread. */
/* Sockets bound, recovery done, handlers running: READY=1. */
void jq_service_ready(jq_daemon_t *d);
/* A stop begins: STOPPING=1 (once). */
void jq_service_stopping(jq_daemon_t *d);
/* SIGHUP: reload the config file's reloadable settings into d->cfg and
 * hand them to the scheduler, executors and log (the loop applies its own:
 * keepalive, request size). Never fails the daemon: a file that does not
 * parse is logged and the running settings stay. 0 when settings were
 * reloaded. */
int jq_service_reload(jq_daemon_t *d);

/* What the daemon does when the store commits or fails (commit.c): the
 * hooks the store thread calls. */
void jq_daemon_store_hooks(jq_daemon_t *d, jq_store_hooks_t *hooks);

#endif
