/* config.h: jobqd's options, from the command line and an optional config
 * file of the same long options (one "name = value" per line), and what a
 * reload (SIGHUP) may change of them. */
#ifndef JOBQ_CONFIG_H
#define JOBQ_CONFIG_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define JQ_MAX_LISTEN 16
#define JQ_PATH_BYTES 4096
#define JQ_MAX_WORKER_OPCODES 256 /* worker-opcode lines */
#define JQ_OPCODE_NAME_BYTES 65
/* Default --publish-hwm: messages queued for one subscriber before the
 * PUB socket drops its events (docs/operations.md, "Event fan-out"). Not
 * reloadable: libzmq 4.3.4 applies a new mark to connected subscribers'
 * queues on one side only, and a lowered one stops them for good. */
#define JQ_PUBLISH_HWM_DEFAULT 20000

/* Fields marked "reloadable" may change on SIGHUP (the loop thread writes
 * them, jq_config_reload): they are atomics, read by any thread. The rest
 * is fixed once the daemon runs. */
typedef struct {
    char data_dir[JQ_PATH_BYTES];
    char run_dir[JQ_PATH_BYTES];      /* jobq.sock and events.sock */
    char config_path[JQ_PATH_BYTES];  /* --config, "" without */
    char listen[JQ_MAX_LISTEN][512];  /* extra endpoints */
    unsigned nlisten;
    char publish[JQ_MAX_LISTEN][512]; /* extra event endpoints */
    unsigned npublish;
    char workers[JQ_MAX_LISTEN][512]; /* extra worker endpoints */
    unsigned nworkers;
    double worker_heartbeat;          /* seconds between heartbeats to workers */
    double worker_lease;              /* seconds of silence before a worker is lost */
    char worker_opcodes[JQ_MAX_WORKER_OPCODES][JQ_OPCODE_NAME_BYTES]; /* declared here */
    unsigned nworker_opcodes;
    _Atomic uint64_t max_waiters;     /* reloadable */
    uint64_t ring_events;             /* replay ring size, events */
    uint64_t publish_hwm;             /* messages queued per subscriber
                                         before PUB drops (fixed: see
                                         JQ_PUBLISH_HWM_DEFAULT) */
    _Atomic double keepalive;         /* reloadable: seconds between keepalives
                                         to waiters (loop thread only) */
    int sync;                         /* jq_sync_t */
    double sync_interval;             /* seconds, for --sync batch */
    uint64_t store_map_size;          /* bytes */
    unsigned shards;
    unsigned handlers;
    unsigned executors;
    _Atomic unsigned max_running;     /* reloadable (the scheduler holds it) */
    _Atomic uint64_t max_jobs;        /* reloadable */
    _Atomic size_t max_request_bytes; /* reloadable */
    _Atomic uint64_t max_log_entries; /* reloadable: per job (the executors hold it) */
    _Atomic double shutdown_grace;    /* reloadable: seconds running opcodes get
                                         to finish (loop thread only) */
    uint64_t max_connections;         /* 0: derived from the descriptor limit */
    _Atomic uint64_t max_client_requests; /* reloadable: unanswered requests per
                                             connection */
    _Atomic uint64_t max_client_waiters;  /* reloadable: parked waits per connection */
    _Atomic int log_level;            /* reloadable: jq_log_level_t */
    uint64_t token_window;            /* seconds a client token is remembered */
    bool salvage;                     /* move damaged store records aside */
    bool verbose;                     /* -v: log level debug */
    bool run_dir_given;               /* else run_dir follows --data-dir */
    int ipc_role;                     /* jq_role_t of ipc clients (--ipc-role) */
    bool insecure;                    /* TCP without CURVE (loopback only) */
    char authorized_keys[JQ_PATH_BYTES]; /* "" : DATA_DIR/authorized_keys */
    char group[64];                   /* --group: who may use the ipc sockets */
    char http[256];                   /* --http ADDRESS:PORT, "" : no HTTP */
    int http_role;                    /* jq_role_t of a loopback HTTP request
                                         without a token (--http-role); -1:
                                         none, a token is always needed */
    bool cluster;                     /* --cluster: a Raft node (cluster.h) */
    char node_address[256];           /* --node-address HOST:PORT (node traffic) */
    char join[JQ_MAX_LISTEN][512];    /* --join: members' client endpoints */
    unsigned njoin;
    bool standby;                     /* --standby: join as a non-voter */
    unsigned snapshot_entries;        /* --snapshot-entries: log entries between
                                         snapshots */
} jq_config_t;

/* What a peer may do (docs/security.md). Ordered: each client role may do
 * what the ones before it may; a worker may use the worker endpoint only. */
typedef enum {
    JQ_ROLE_WORKER = 0,
    JQ_ROLE_READ,
    JQ_ROLE_SUBMIT,
    JQ_ROLE_ADMIN,
    JQ_ROLE__COUNT
} jq_role_t;

const char *jq_role_name(jq_role_t r);
/* 0 and *out for "read", "submit", "admin" or "worker"; -1 otherwise. */
int jq_role_parse(const char *name, jq_role_t *out);

/* Defaults, then the config file (if --config is given), then the command
 * line. Returns 0, 1 when --help/--version printed and the daemon should
 * exit 0, or -1 with err set. */
int jq_config_load(jq_config_t *cfg, int argc, char **argv, char *err, size_t errlen);

/* SIGHUP: read the config file and the command line again (argc/argv as
 * at start: the command line still wins) and take over into cur what may
 * change at run time. A setting that may not and differs is logged as a
 * warning and left as it is. A file that does not parse leaves cur
 * unchanged: -1 with err set. Loop thread. */
int jq_config_reload(jq_config_t *cur, int argc, char **argv, char *err, size_t errlen);

#endif
