/* config.c: option parsing and --help for jobqd. */
#include "config.h"
#include "auth.h"
#include "cluster.h"
#include "executor.h"
#include "http.h"
#include "log.h"
#include "paths.h"
#include "ring.h"
#include "store.h"
#include "table.h"
#include "tokens.h"
#include "wire.h"

#include <errno.h>
#include <getopt.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The help text, around the defaults actually in effect (build tree or
 * installed: see paths.h). */
static const char usage_head[] =
    "Usage: jobqd [OPTIONS]\n"
    "The jobq broker: takes jobs from clients over ZeroMQ and runs them.\n"
    "\n"
    "  -d, --data-dir DIR        data directory: the store and its lock\n";
/* then "[default: ...]" */
static const char usage_run_dir[] =
    "      --run-dir DIR         directory of the sockets: clients are served on\n"
    "                            ipc://DIR/jobq.sock, events published on\n"
    "                            ipc://DIR/events.sock, workers taken on\n"
    "                            ipc://DIR/workers.sock (all mode 0660)\n";
/* then "[default: ...]" */
static const char usage_rest[] =
    "  -l, --listen ENDPOINT     also serve on ENDPOINT, e.g. tcp://127.0.0.1:5555\n"
    "                            (repeatable, up to 16)\n"
    "  -p, --publish ENDPOINT    also publish events on ENDPOINT, e.g.\n"
    "                            tcp://127.0.0.1:5556 (repeatable, up to 16);\n"
    "                            always on ipc://RUN_DIR/events.sock\n"
    "      --workers ENDPOINT    also take workers on ENDPOINT, e.g.\n"
    "                            tcp://127.0.0.1:5557 (repeatable, up to 16);\n"
    "                            always on ipc://RUN_DIR/workers.sock\n"
    "      --worker-heartbeat SEC  heartbeat interval to and from workers [1]\n"
    "      --worker-lease SEC    a worker silent this long is lost; its opcodes\n"
    "                            fail or are retried [5]\n"
    "      --worker-opcode NAME  a worker opcode known before any worker declares\n"
    "                            it (repeatable; workers' declarations are also\n"
    "                            remembered in the store)\n"
    "      --shards N            job table shards, 1..4096 [64]\n"
    "      --handlers N          request handler threads, 1..64 [2]\n"
    "      --executors N         executor threads, 1..64 [2]\n"
    "      --max-running N       jobs running at once [1000]\n"
    "      --max-jobs N          live (unarchived) jobs before QueueFull [1000000]\n"
    "      --max-waiters N       wait_for_job_change requests parked at once\n"
    "                            [100000]\n"
    "      --ring-events N       events kept for events_since [65536]\n"
    "      --publish-hwm N       messages queued for one event subscriber before\n"
    "                            it loses events (and catches up with\n"
    "                            events_since), 16..10000000 [20000]\n"
    "      --keepalive SECONDS   keepalive interval to parked waiters [5]\n"
    "      --sync MODE           when a submit is acknowledged: always (after\n"
    "                            fsync), batch (after commit; fsync every\n"
    "                            --sync-interval), none (no fsync) [always]\n"
    "      --sync-interval SEC   fsync interval for --sync batch [0.1]\n"
    "      --store-map-size N    bytes the store may grow to, with suffix K,M,G\n"
    "                            or T [64G]\n"
    "      --max-request-bytes N largest request answered; 4x that closes the\n"
    "                            connection [16777216]\n"
    "      --max-log-entries N   log entries one job keeps; the entry that reaches\n"
    "                            the limit says so, later ones are dropped [100000]\n"
    "      --max-connections N   client, subscriber and worker connections at\n"
    "                            once; above it new ones wait until some close\n"
    "                            [0: derived from the descriptor limit]\n"
    "      --max-client-requests N  unanswered requests one connection may have;\n"
    "                            more are answered Busy [1024]\n"
    "      --max-client-waiters N   wait_for_job_change requests one connection\n"
    "                            may have parked [10000]\n"
    "      --token-window SEC    how long a submission's client token makes a\n"
    "                            retry return its ids; 0: off [600]\n"
    "      --shutdown-grace SEC  on SIGTERM or shutdown, how long running opcodes\n"
    "                            may finish before they are interrupted [30]\n"
    "      --authorized-keys DIR  the public keys (czmq certificates) that may\n"
    "                            connect over TCP with CURVE; a file added or\n"
    "                            removed counts at the next connection\n"
    "                            [DATA_DIR/authorized_keys]\n"
    "      --insecure            serve TCP endpoints without CURVE (no keys,\n"
    "                            every peer admin); only on loopback addresses;\n"
    "                            --http off loopback then takes requests\n"
    "                            without a token too (role --http-role)\n"
    "      --group GROUP         members of GROUP may use the ipc sockets: the\n"
    "                            data and run directories are made 0750 and\n"
    "                            they and the sockets (0660) belong to GROUP\n"
    "                            [none: directories made 0700, jobqd's user only]\n"
    "      --ipc-role ROLE       what local clients on the ipc socket may do:\n"
    "                            read, submit or admin [admin]\n"
    "      --http ADDRESS:PORT   serve /metrics (Prometheus) and the dashboard\n"
    "                            over HTTP there, e.g. 127.0.0.1:8080 (port 0:\n"
    "                            any; the port is written to RUN_DIR/http.port);\n"
    "                            off a loopback address every request needs a\n"
    "                            token (jobq http-token) unless --insecure\n"
    "                            [off]\n"
    "      --http-role ROLE      what an HTTP request without a token may do:\n"
    "                            read, submit or admin; none: nothing but load\n"
    "                            the page and log in (for a proxy in front) [read]\n"
    "      --cluster             run as a node of a Raft cluster: a change is\n"
    "                            committed when a quorum of nodes has it; only\n"
    "                            the leader serves changes (docs/cluster.md);\n"
    "                            the first node starts a cluster of one\n"
    "      --node-address HOST:PORT  this node's address for node traffic\n"
    "                            (Raft; CURVE with the daemon's key unless\n"
    "                            --insecure on loopback); needed by --cluster\n"
    "      --join ENDPOINT       on the first start, ask the cluster at ENDPOINT\n"
    "                            (a member's client endpoint; repeatable) to\n"
    "                            add this node; `wait`: start empty and wait\n"
    "                            for `jobq nodes add` on the leader\n"
    "      --standby             join as a standby: a copy that does not vote\n"
    "      --snapshot-entries N  Raft log entries between two snapshots of the\n"
    "                            store; a quarter of them stay in the log [4096]\n"
    "      --salvage             start even when store records are damaged: move\n"
    "                            them aside (into the store's `damaged` table)\n"
    "                            and say which\n"
    "      --log-level LEVEL     log lines of LEVEL and above to stderr: error,\n"
    "                            warning, notice, info or debug [info]\n"
    "  -v, --verbose             same as --log-level debug (also logs each\n"
    "                            connection-level problem)\n"
    "  -c, --config FILE         read options from FILE first: one long option\n"
    "                            per line, \"name = value\" (or \"name value\"),\n"
    "                            '#' starts a comment; the command line wins\n"
    "  -h, --help                show this help and exit\n"
    "  -V, --version             show the version and exit\n"
    "\n"
    "The daemon stops cleanly on SIGTERM, SIGINT or the `shutdown` request:\n"
    "it takes no new jobs, lets running opcodes finish (--shutdown-grace), then\n"
    "stops and removes its socket files; a second signal, or `shutdown --now`,\n"
    "interrupts them at once. SIGHUP reloads the config file: --max-running,\n"
    "--max-jobs, --max-waiters, --max-client-requests, --max-client-waiters,\n"
    "--max-log-entries, --max-request-bytes, --keepalive, --shutdown-grace and\n"
    "--log-level take effect; a change to any other option is logged and waits\n"
    "for a restart. Under systemd (Type=notify) it reports readiness.\n"
    "Thread count is fixed at start: the loop, the handlers, the executors, the\n"
    "store thread, ZeroMQ's two and, with --http, the HTTP thread; it never\n"
    "grows with clients, browsers, requests, waiters or jobs. See docs/operations.md for the store, --sync, logging\n"
    "and reloading.\n";

static void print_usage(void)
{
    jq_default_dirs_t dd = jq_default_dirs();
    fputs(usage_head, stdout);
    printf("                            [default: %s]\n", dd.data_dir);
    fputs(usage_run_dir, stdout);
    if (!strcmp(dd.data_dir, dd.run_dir))
        printf("                            [default: the data directory]\n");
    else
        printf("                            [default: the data directory when --data-dir\n"
               "                            is given, else %s]\n", dd.run_dir);
    fputs(usage_rest, stdout);
}

enum { OPT_SHARDS = 256, OPT_HANDLERS, OPT_EXECUTORS, OPT_MAX_RUNNING, OPT_MAX_JOBS,
       OPT_MAX_REQUEST, OPT_MAX_WAITERS, OPT_RING_EVENTS, OPT_KEEPALIVE, OPT_SYNC,
       OPT_SYNC_INTERVAL, OPT_MAP_SIZE, OPT_MAX_LOG, OPT_MAX_CONN, OPT_MAX_CLIENT_REQ,
       OPT_MAX_CLIENT_WAIT, OPT_GRACE, OPT_SALVAGE, OPT_RUN_DIR, OPT_LOG_LEVEL,
       OPT_TOKEN_WINDOW, OPT_WORKERS, OPT_WORKER_HB, OPT_WORKER_LEASE, OPT_WORKER_OPCODE,
       OPT_IPC_ROLE, OPT_INSECURE, OPT_AUTH_KEYS, OPT_GROUP, OPT_HTTP, OPT_HTTP_ROLE,
       OPT_CLUSTER, OPT_NODE_ADDRESS, OPT_JOIN, OPT_STANDBY, OPT_SNAPSHOT_ENTRIES,
       OPT_PUBLISH_HWM };

static const struct option long_opts[] = {
    {"data-dir", required_argument, NULL, 'd'},
    {"run-dir", required_argument, NULL, OPT_RUN_DIR},
    {"listen", required_argument, NULL, 'l'},
    {"publish", required_argument, NULL, 'p'},
    {"workers", required_argument, NULL, OPT_WORKERS},
    {"worker-heartbeat", required_argument, NULL, OPT_WORKER_HB},
    {"worker-lease", required_argument, NULL, OPT_WORKER_LEASE},
    {"worker-opcode", required_argument, NULL, OPT_WORKER_OPCODE},
    {"shards", required_argument, NULL, OPT_SHARDS},
    {"handlers", required_argument, NULL, OPT_HANDLERS},
    {"executors", required_argument, NULL, OPT_EXECUTORS},
    {"max-running", required_argument, NULL, OPT_MAX_RUNNING},
    {"max-jobs", required_argument, NULL, OPT_MAX_JOBS},
    {"max-request-bytes", required_argument, NULL, OPT_MAX_REQUEST},
    {"max-waiters", required_argument, NULL, OPT_MAX_WAITERS},
    {"ring-events", required_argument, NULL, OPT_RING_EVENTS},
    {"publish-hwm", required_argument, NULL, OPT_PUBLISH_HWM},
    {"keepalive", required_argument, NULL, OPT_KEEPALIVE},
    {"sync", required_argument, NULL, OPT_SYNC},
    {"sync-interval", required_argument, NULL, OPT_SYNC_INTERVAL},
    {"store-map-size", required_argument, NULL, OPT_MAP_SIZE},
    {"max-log-entries", required_argument, NULL, OPT_MAX_LOG},
    {"max-connections", required_argument, NULL, OPT_MAX_CONN},
    {"max-client-requests", required_argument, NULL, OPT_MAX_CLIENT_REQ},
    {"max-client-waiters", required_argument, NULL, OPT_MAX_CLIENT_WAIT},
    {"shutdown-grace", required_argument, NULL, OPT_GRACE},
    {"token-window", required_argument, NULL, OPT_TOKEN_WINDOW},
    {"salvage", no_argument, NULL, OPT_SALVAGE},
    {"ipc-role", required_argument, NULL, OPT_IPC_ROLE},
    {"insecure", no_argument, NULL, OPT_INSECURE},
    {"authorized-keys", required_argument, NULL, OPT_AUTH_KEYS},
    {"group", required_argument, NULL, OPT_GROUP},
    {"http", required_argument, NULL, OPT_HTTP},
    {"http-role", required_argument, NULL, OPT_HTTP_ROLE},
    {"cluster", no_argument, NULL, OPT_CLUSTER},
    {"node-address", required_argument, NULL, OPT_NODE_ADDRESS},
    {"join", required_argument, NULL, OPT_JOIN},
    {"standby", no_argument, NULL, OPT_STANDBY},
    {"snapshot-entries", required_argument, NULL, OPT_SNAPSHOT_ENTRIES},
    {"log-level", required_argument, NULL, OPT_LOG_LEVEL},
    {"config", required_argument, NULL, 'c'},
    {"verbose", no_argument, NULL, 'v'},
    {"help", no_argument, NULL, 'h'},
    {"version", no_argument, NULL, 'V'},
    {NULL, 0, NULL, 0},
};

static int parse_uint(const char *s, uint64_t lo, uint64_t hi, uint64_t *out)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || end == s || *end || s[0] == '-' || v < lo || v > hi)
        return -1;
    *out = v;
    return 0;
}

/* A number of seconds from lo to hi into *out; -1 with a message naming
 * the option. */
static int parse_seconds(const char *name, const char *val, double lo, double hi, double *out,
                         char *err, size_t errlen)
{
    char *end;
    double v = strtod(val, &end);
    if (end == val || *end || !(v >= lo && v <= hi)) {
        snprintf(err, errlen, "--%s: expected seconds from %g to %g, got '%s'", name, lo, hi, val);
        return -1;
    }
    *out = v;
    return 0;
}

static int apply(jq_config_t *cfg, int opt, const char *name, const char *val,
                 char *err, size_t errlen)
{
    uint64_t v;
    switch (opt) {
    case 'd':
        if (strlen(val) + 16 >= sizeof cfg->data_dir) {
            snprintf(err, errlen, "--data-dir: path too long");
            return -1;
        }
        snprintf(cfg->data_dir, sizeof cfg->data_dir, "%s", val);
        if (!cfg->run_dir_given) /* the sockets stay beside the data */
            snprintf(cfg->run_dir, sizeof cfg->run_dir, "%s", val);
        return 0;
    case OPT_RUN_DIR:
        if (strlen(val) + 16 >= sizeof cfg->run_dir) {
            snprintf(err, errlen, "--run-dir: path too long");
            return -1;
        }
        snprintf(cfg->run_dir, sizeof cfg->run_dir, "%s", val);
        cfg->run_dir_given = true;
        return 0;
    case OPT_LOG_LEVEL: {
        jq_log_level_t level;
        if (jq_log_level_parse(val, &level) < 0) {
            snprintf(err, errlen,
                     "--log-level: expected error, warning, notice, info or debug, got '%s'",
                     val);
            return -1;
        }
        cfg->log_level = (int)level;
        return 0;
    }
    case 'l':
        if (cfg->nlisten == JQ_MAX_LISTEN || strlen(val) >= sizeof cfg->listen[0]) {
            snprintf(err, errlen, "--listen: at most %d endpoints of under 512 bytes",
                     JQ_MAX_LISTEN);
            return -1;
        }
        snprintf(cfg->listen[cfg->nlisten++], sizeof cfg->listen[0], "%s", val);
        return 0;
    case 'p':
        if (cfg->npublish == JQ_MAX_LISTEN || strlen(val) >= sizeof cfg->publish[0]) {
            snprintf(err, errlen, "--publish: at most %d endpoints of under 512 bytes",
                     JQ_MAX_LISTEN);
            return -1;
        }
        snprintf(cfg->publish[cfg->npublish++], sizeof cfg->publish[0], "%s", val);
        return 0;
    case OPT_WORKERS:
        if (cfg->nworkers == JQ_MAX_LISTEN || strlen(val) >= sizeof cfg->workers[0]) {
            snprintf(err, errlen, "--workers: at most %d endpoints of under 512 bytes",
                     JQ_MAX_LISTEN);
            return -1;
        }
        snprintf(cfg->workers[cfg->nworkers++], sizeof cfg->workers[0], "%s", val);
        return 0;
    case OPT_JOIN:
        if (cfg->njoin == JQ_MAX_LISTEN || strlen(val) >= sizeof cfg->join[0]) {
            snprintf(err, errlen, "--join: at most %d endpoints of under 512 bytes",
                     JQ_MAX_LISTEN);
            return -1;
        }
        snprintf(cfg->join[cfg->njoin++], sizeof cfg->join[0], "%s", val);
        return 0;
    case OPT_NODE_ADDRESS:
        if (jq_node_address_parse(val, NULL, 0, NULL) < 0) {
            snprintf(err, errlen, "--node-address: expected HOST:PORT (a port from 1 to "
                                  "65535; an IPv6 host in brackets), got '%s'", val);
            return -1;
        }
        snprintf(cfg->node_address, sizeof cfg->node_address, "%s", val);
        return 0;
    case OPT_WORKER_OPCODE:
        if (cfg->nworker_opcodes == JQ_MAX_WORKER_OPCODES || !*val ||
            strlen(val) >= sizeof cfg->worker_opcodes[0]) {
            snprintf(err, errlen, "--worker-opcode: at most %d names of 1 to 64 bytes",
                     JQ_MAX_WORKER_OPCODES);
            return -1;
        }
        snprintf(cfg->worker_opcodes[cfg->nworker_opcodes++], sizeof cfg->worker_opcodes[0],
                 "%s", val);
        return 0;
    case OPT_WORKER_HB:
        return parse_seconds(name, val, 0.01, 3600, &cfg->worker_heartbeat, err, errlen);
    case OPT_WORKER_LEASE:
        return parse_seconds(name, val, 0.05, 86400, &cfg->worker_lease, err, errlen);
    case OPT_IPC_ROLE:
    case OPT_HTTP_ROLE: {
        jq_role_t r;
        if (opt == OPT_HTTP_ROLE && !strcmp(val, "none")) {
            cfg->http_role = -1; /* a token for everything, loopback too */
            return 0;
        }
        if (jq_role_parse(val, &r) < 0 || r == JQ_ROLE_WORKER) {
            snprintf(err, errlen, "--%s: expected %sread, submit or admin, got '%s'", name,
                     opt == OPT_HTTP_ROLE ? "none, " : "", val);
            return -1;
        }
        *(opt == OPT_IPC_ROLE ? &cfg->ipc_role : &cfg->http_role) = (int)r;
        return 0;
    }
    case OPT_HTTP: {
        jq_http_addr_t a;
        if (jq_http_addr_parse(val, &a, err, errlen) < 0)
            return -1;
        snprintf(cfg->http, sizeof cfg->http, "%s", val);
        return 0;
    }
    case OPT_GROUP:
        if (!*val || strlen(val) >= sizeof cfg->group) {
            snprintf(err, errlen, "--group: expected a group name");
            return -1;
        }
        snprintf(cfg->group, sizeof cfg->group, "%s", val);
        return 0;
    case OPT_AUTH_KEYS:
        if (!*val || strlen(val) + 16 >= sizeof cfg->authorized_keys) {
            snprintf(err, errlen, "--authorized-keys: expected a directory (path too long?)");
            return -1;
        }
        snprintf(cfg->authorized_keys, sizeof cfg->authorized_keys, "%s", val);
        return 0;
    case 'v':
    case OPT_INSECURE:
    case OPT_CLUSTER:
    case OPT_STANDBY:
    case OPT_SALVAGE: {
        /* A flag: on the command line (val NULL) it is set; in the config
         * file it may say yes or no. */
        bool on;
        if (!val || !*val || !strcmp(val, "yes") || !strcmp(val, "true") || !strcmp(val, "on") ||
            !strcmp(val, "1"))
            on = true;
        else if (!strcmp(val, "no") || !strcmp(val, "false") || !strcmp(val, "off") ||
                 !strcmp(val, "0"))
            on = false;
        else {
            snprintf(err, errlen, "--%s: expected yes or no, got '%s'", name, val);
            return -1;
        }
        if (opt == OPT_SALVAGE) {
            cfg->salvage = on;
        } else if (opt == OPT_CLUSTER) {
            cfg->cluster = on;
        } else if (opt == OPT_STANDBY) {
            cfg->standby = on;
        } else if (opt == OPT_INSECURE) {
            cfg->insecure = on;
        } else {
            cfg->verbose = on;
            if (on)
                cfg->log_level = JQ_LOG_DEBUG;
        }
        return 0;
    }
    case OPT_GRACE: {
        double sec;
        if (parse_seconds(name, val, 0, 86400, &sec, err, errlen) < 0)
            return -1;
        cfg->shutdown_grace = sec;
        return 0;
    }
    case OPT_SYNC:
        if (!strcmp(val, "always"))
            cfg->sync = JQ_SYNC_ALWAYS;
        else if (!strcmp(val, "batch"))
            cfg->sync = JQ_SYNC_BATCH;
        else if (!strcmp(val, "none"))
            cfg->sync = JQ_SYNC_NONE;
        else {
            snprintf(err, errlen, "--sync: expected always, batch or none, got '%s'", val);
            return -1;
        }
        return 0;
    case OPT_SYNC_INTERVAL:
        return parse_seconds(name, val, 0.001, 60, &cfg->sync_interval, err, errlen);
    case OPT_MAP_SIZE: {
        char *end;
        errno = 0;
        unsigned long long v = strtoull(val, &end, 10);
        int shift = 0;
        if (*end == 'K' || *end == 'k')
            shift = 10;
        else if (*end == 'M' || *end == 'm')
            shift = 20;
        else if (*end == 'G' || *end == 'g')
            shift = 30;
        else if (*end == 'T' || *end == 't')
            shift = 40;
        if (shift)
            end++;
        if (errno || end == val || *end || val[0] == '-' || v == 0 || v > (1ull << (63 - shift)) ||
            (v << shift) < (1u << 20)) {
            snprintf(err, errlen, "--store-map-size: expected a size of at least 1M, like 64G, got '%s'", val);
            return -1;
        }
        cfg->store_map_size = v << shift;
        return 0;
    }
    case OPT_KEEPALIVE: {
        double sec;
        if (parse_seconds(name, val, 0.01, 3600, &sec, err, errlen) < 0)
            return -1;
        cfg->keepalive = sec;
        return 0;
    }
    }
    static const struct {
        int opt;
        uint64_t lo, hi;
    } ranges[] = {
        {OPT_SHARDS, 1, JQ_MAX_SHARDS},   {OPT_HANDLERS, 1, 64},
        {OPT_EXECUTORS, 1, JQ_MAX_EXECUTORS}, {OPT_MAX_RUNNING, 1, 10000000},
        {OPT_MAX_JOBS, 1, 1000000000ull}, {OPT_MAX_REQUEST, 1024, 1u << 30},
        {OPT_MAX_WAITERS, 1, 100000000ull}, {OPT_RING_EVENTS, 16, 100000000ull},
        {OPT_MAX_LOG, 1, 1000000000ull}, {OPT_MAX_CONN, 0, 100000000ull},
        {OPT_MAX_CLIENT_REQ, 1, 100000000ull}, {OPT_MAX_CLIENT_WAIT, 1, 100000000ull},
        {OPT_TOKEN_WINDOW, 0, 86400}, {OPT_SNAPSHOT_ENTRIES, 64, 100000000ull},
        {OPT_PUBLISH_HWM, 16, 10000000},
    };
    for (size_t i = 0; i < sizeof ranges / sizeof ranges[0]; i++) {
        if (ranges[i].opt != opt)
            continue;
        if (parse_uint(val, ranges[i].lo, ranges[i].hi, &v) < 0) {
            snprintf(err, errlen, "--%s: expected an integer from %llu to %llu, got '%s'",
                     name, (unsigned long long)ranges[i].lo,
                     (unsigned long long)ranges[i].hi, val);
            return -1;
        }
        switch (opt) {
        case OPT_SHARDS: cfg->shards = (unsigned)v; break;
        case OPT_HANDLERS: cfg->handlers = (unsigned)v; break;
        case OPT_EXECUTORS: cfg->executors = (unsigned)v; break;
        case OPT_MAX_RUNNING: cfg->max_running = (unsigned)v; break;
        case OPT_MAX_JOBS: cfg->max_jobs = v; break;
        case OPT_MAX_REQUEST: cfg->max_request_bytes = (size_t)v; break;
        case OPT_MAX_WAITERS: cfg->max_waiters = v; break;
        case OPT_RING_EVENTS: cfg->ring_events = v; break;
        case OPT_PUBLISH_HWM: cfg->publish_hwm = v; break;
        case OPT_MAX_LOG: cfg->max_log_entries = v; break;
        case OPT_MAX_CONN: cfg->max_connections = v; break;
        case OPT_MAX_CLIENT_REQ: cfg->max_client_requests = v; break;
        case OPT_MAX_CLIENT_WAIT: cfg->max_client_waiters = v; break;
        case OPT_TOKEN_WINDOW: cfg->token_window = v; break;
        case OPT_SNAPSHOT_ENTRIES: cfg->snapshot_entries = (unsigned)v; break;
        }
        return 0;
    }
    snprintf(err, errlen, "unknown option '%s'", name);
    return -1;
}

static char *skip_space(char *p)
{
    while (*p == ' ' || *p == '\t')
        p++;
    return p;
}

/* One option per line: "name = value", "name=value" or "name value";
 * '#' starts a comment; a flag may stand alone or say yes/no. */
static int load_file(jq_config_t *cfg, const char *path, char *err, size_t errlen)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        snprintf(err, errlen, "cannot read config file %s: %s", path, strerror(errno));
        return -1;
    }
    char line[4096];
    int lineno = 0, rc = 0;
    while (rc == 0 && fgets(line, sizeof line, f)) {
        lineno++;
        if (!strchr(line, '\n') && !feof(f)) {
            snprintf(err, errlen, "%s:%d: line too long", path, lineno);
            rc = -1;
            break;
        }
        char *hash = strchr(line, '#');
        if (hash)
            *hash = '\0';
        char *name = skip_space(line);
        size_t n = strcspn(name, " \t=\r\n");
        if (n == 0 && (*name == '\0' || *name == '\r' || *name == '\n'))
            continue; /* blank */
        char *val = name + n;
        bool eq = false;
        val = skip_space(val);
        if (*val == '=') {
            eq = true;
            val = skip_space(val + 1);
        }
        name[n] = '\0';
        size_t vlen = strlen(val);
        while (vlen && strchr(" \t\r\n", val[vlen - 1]))
            val[--vlen] = '\0';
        const struct option *o = long_opts;
        while (o->name && strcmp(o->name, name) != 0)
            o++;
        if (!n || !o->name || o->val == 'c' || o->val == 'h' || o->val == 'V') {
            snprintf(err, errlen, "%s:%d: unknown option '%s'", path, lineno, n ? name : "=");
            rc = -1;
            break;
        }
        if (o->has_arg == required_argument && !*val) {
            snprintf(err, errlen, "%s:%d: option '%s' needs a value%s", path, lineno, name,
                     eq ? "" : " (name = value)");
            rc = -1;
            break;
        }
        char why[256];
        if (apply(cfg, o->val, name, val, why, sizeof why) < 0) {
            snprintf(err, errlen, "%s:%d: %s", path, lineno, why);
            rc = -1;
        }
    }
    fclose(f);
    return rc;
}

/* The value of -c/--config at argv[i] (NULL if it is not one); *skip is
 * set when the value is the next argument. */
static const char *config_arg(int argc, char **argv, int i, bool *skip)
{
    const char *a = argv[i];
    *skip = false;
    if (!strcmp(a, "-c") || !strcmp(a, "--config")) {
        *skip = true;
        return i + 1 < argc ? argv[i + 1] : NULL;
    }
    if (!strncmp(a, "--config=", 9))
        return a + 9;
    if (!strncmp(a, "-c", 2) && a[2])
        return a + 2;
    return NULL;
}

static void set_defaults(jq_config_t *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    jq_default_dirs_t dd = jq_default_dirs();
    snprintf(cfg->data_dir, sizeof cfg->data_dir, "%s", dd.data_dir);
    snprintf(cfg->run_dir, sizeof cfg->run_dir, "%s", dd.run_dir);
    cfg->shards = JQ_DEFAULT_SHARDS;
    cfg->handlers = 2;
    cfg->executors = 2;
    cfg->max_running = 1000;
    cfg->max_jobs = 1000000;
    cfg->max_request_bytes = JOBQ_MAX_REQUEST_BYTES;
    cfg->max_waiters = 100000;
    cfg->ring_events = JQ_RING_DEFAULT_EVENTS;
    cfg->publish_hwm = JQ_PUBLISH_HWM_DEFAULT;
    cfg->token_window = JQ_TOKEN_DEFAULT_WINDOW;
    cfg->snapshot_entries = 4096;
    cfg->keepalive = JOBQ_KEEPALIVE_SECONDS;
    cfg->sync = JQ_SYNC_ALWAYS;
    cfg->sync_interval = 0.1;
    cfg->store_map_size = 64ull << 30;
    cfg->max_log_entries = JOBQ_DEFAULT_MAX_LOG_ENTRIES;
    cfg->shutdown_grace = 30;
    cfg->worker_heartbeat = 1;
    cfg->worker_lease = 5;
    cfg->max_client_requests = 1024;
    cfg->max_client_waiters = 10000;
    cfg->log_level = JQ_LOG_DEFAULT;
    cfg->ipc_role = JQ_ROLE_ADMIN;
    cfg->http_role = JQ_ROLE_READ;
}

static const char *const role_names[JQ_ROLE__COUNT] = {
    [JQ_ROLE_WORKER] = "worker", [JQ_ROLE_READ] = "read", [JQ_ROLE_SUBMIT] = "submit",
    [JQ_ROLE_ADMIN] = "admin"};

const char *jq_role_name(jq_role_t r)
{
    return (unsigned)r < JQ_ROLE__COUNT ? role_names[r] : "?";
}

int jq_role_parse(const char *name, jq_role_t *out)
{
    for (int r = 0; r < JQ_ROLE__COUNT; r++)
        if (name && !strcmp(name, role_names[r])) {
            *out = (jq_role_t)r;
            return 0;
        }
    return -1;
}

int jq_config_load(jq_config_t *cfg, int argc, char **argv, char *err, size_t errlen)
{
    set_defaults(cfg);
    /* The config file comes first so the command line overrides it. */
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--"))
            break;
        bool skip;
        const char *path = config_arg(argc, argv, i, &skip);
        if (!path)
            continue;
        if (strlen(path) >= sizeof cfg->config_path) {
            snprintf(err, errlen, "--config: path too long");
            return -1;
        }
        snprintf(cfg->config_path, sizeof cfg->config_path, "%s", path);
        if (load_file(cfg, path, err, errlen) < 0)
            return -1;
        i += skip;
    }
    optind = 0; /* glibc: start afresh (a reload parses argv again) */
    opterr = 0;
    int opt, idx;
    while ((opt = getopt_long(argc, argv, ":d:l:p:c:vhV", long_opts, &idx)) != -1) {
        switch (opt) {
        case 'h':
            print_usage();
            return 1;
        case 'V':
            printf("jobqd %s (protocol %d)\n", JOBQ_VERSION, JOBQ_PROTOCOL_VERSION);
            return 1;
        case 'c':
            break;
        case '?':
            snprintf(err, errlen, "unknown option '%s' (see --help)", argv[optind - 1]);
            return -1;
        case ':':
            snprintf(err, errlen, "option '%s' needs a value", argv[optind - 1]);
            return -1;
        default: {
            const char *name = "?";
            for (const struct option *o = long_opts; o->name; o++)
                if (o->val == opt)
                    name = o->name;
            if (apply(cfg, opt, name, optarg, err, errlen) < 0)
                return -1;
        }
        }
    }
    if (optind < argc) {
        snprintf(err, errlen, "unexpected argument '%s' (see --help)", argv[optind]);
        return -1;
    }
    /* Only transports something guards: tcp:// (CURVE, or loopback with
     * --insecure) and ipc:// files (their permissions). */
    for (unsigned k = 0; k < 3; k++) {
        char (*eps)[512] = k == 0 ? cfg->listen : k == 1 ? cfg->workers : cfg->publish;
        unsigned n = k == 0 ? cfg->nlisten : k == 1 ? cfg->nworkers : cfg->npublish;
        for (unsigned i = 0; i < n; i++)
            if (!jq_endpoint_bindable(eps[i])) {
                snprintf(err, errlen,
                         "--%s %s: only tcp:// and ipc:// endpoints naming a file are "
                         "served (an abstract ipc://@ socket has no permissions to guard it, "
                         "and other transports have neither CURVE nor permissions)",
                         k == 0 ? "listen" : k == 1 ? "workers" : "publish", eps[i]);
                return -1;
            }
    }
    /* Without CURVE anyone who reaches a TCP endpoint may do anything: only
     * a loopback address keeps that on this host. */
    for (unsigned k = 0; cfg->insecure && k < 3; k++) {
        char (*eps)[512] = k == 0 ? cfg->listen : k == 1 ? cfg->workers : cfg->publish;
        unsigned n = k == 0 ? cfg->nlisten : k == 1 ? cfg->nworkers : cfg->npublish;
        for (unsigned i = 0; i < n; i++)
            if (!jq_endpoint_is_loopback(eps[i])) {
                snprintf(err, errlen,
                         "--insecure is accepted only on loopback addresses (127.0.0.0/8, "
                         "::1), and %s is not one: give the endpoint CURVE keys "
                         "instead (docs/security.md)", eps[i]);
                return -1;
            }
    }
    if (cfg->cluster && !cfg->node_address[0]) {
        snprintf(err, errlen, "--cluster needs --node-address HOST:PORT (where the other "
                              "nodes reach this one)");
        return -1;
    }
    if (!cfg->cluster && (cfg->node_address[0] || cfg->njoin || cfg->standby)) {
        snprintf(err, errlen, "--node-address, --join and --standby need --cluster");
        return -1;
    }
    for (unsigned i = 0; i < cfg->njoin; i++)
        if (!strcmp(cfg->join[i], "wait") ? cfg->njoin > 1
                                          : !jq_endpoint_bindable(cfg->join[i])) {
            snprintf(err, errlen, "--join %s: expected a member's tcp:// or ipc:// endpoint, "
                                  "or `wait` alone", cfg->join[i]);
            return -1;
        }
    if (cfg->cluster && cfg->insecure && !jq_node_address_loopback(cfg->node_address)) {
        snprintf(err, errlen, "--insecure is accepted only on loopback addresses, and the "
                              "--node-address %s is not one: node traffic needs the "
                              "daemons' keys instead (docs/cluster.md)", cfg->node_address);
        return -1;
    }
    if (cfg->worker_lease <= cfg->worker_heartbeat) {
        snprintf(err, errlen, "--worker-lease (%g s) must be longer than --worker-heartbeat "
                              "(%g s): a worker would be lost between two heartbeats",
                 cfg->worker_lease, cfg->worker_heartbeat);
        return -1;
    }
    return 0;
}

/* Appends ", name=value" to a list of what a reload changed. */
static void note(char *buf, size_t len, const char *name, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void note(char *buf, size_t len, const char *name, const char *fmt, ...)
{
    size_t used = strlen(buf);
    if (used + 1 >= len)
        return;
    snprintf(buf + used, len - used, "%s%s=", used ? ", " : "", name);
    used = strlen(buf);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf + used, len - used, fmt, ap);
    va_end(ap);
}

static bool endpoints_differ(char (*a)[512], unsigned na, char (*b)[512], unsigned nb)
{
    if (na != nb)
        return true;
    for (unsigned i = 0; i < na; i++)
        if (strcmp(a[i], b[i]))
            return true;
    return false;
}

int jq_config_reload(jq_config_t *cur, int argc, char **argv, char *err, size_t errlen)
{
    jq_config_t *next = malloc(sizeof *next);
    if (!next) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    int rc = jq_config_load(next, argc, argv, err, errlen);
    if (rc != 0) {
        if (rc > 0)
            snprintf(err, errlen, "unexpected --help or --version");
        free(next);
        return -1;
    }
    const char *file = cur->config_path;
    /* What cannot change while the daemon runs: said, and left alone. */
    struct {
        const char *name;
        bool differs;
    } fixed[] = {
        {"data-dir", strcmp(cur->data_dir, next->data_dir) != 0},
        {"run-dir", strcmp(cur->run_dir, next->run_dir) != 0},
        {"listen", endpoints_differ(cur->listen, cur->nlisten, next->listen, next->nlisten)},
        {"publish", endpoints_differ(cur->publish, cur->npublish, next->publish, next->npublish)},
        {"workers", endpoints_differ(cur->workers, cur->nworkers, next->workers, next->nworkers)},
        {"worker-heartbeat", cur->worker_heartbeat != next->worker_heartbeat},
        {"worker-lease", cur->worker_lease != next->worker_lease},
        {"worker-opcode", cur->nworker_opcodes != next->nworker_opcodes ||
                              memcmp(cur->worker_opcodes, next->worker_opcodes,
                                     cur->nworker_opcodes * sizeof cur->worker_opcodes[0])},
        {"shards", cur->shards != next->shards},
        {"handlers", cur->handlers != next->handlers},
        {"executors", cur->executors != next->executors},
        {"ring-events", cur->ring_events != next->ring_events},
        {"publish-hwm", cur->publish_hwm != next->publish_hwm},
        {"sync", cur->sync != next->sync},
        {"sync-interval", cur->sync_interval != next->sync_interval},
        {"store-map-size", cur->store_map_size != next->store_map_size},
        {"max-connections", cur->max_connections != next->max_connections},
        {"salvage", cur->salvage != next->salvage},
        {"token-window", cur->token_window != next->token_window},
        {"ipc-role", cur->ipc_role != next->ipc_role},
        {"insecure", cur->insecure != next->insecure},
        {"authorized-keys", strcmp(cur->authorized_keys, next->authorized_keys) != 0},
        {"group", strcmp(cur->group, next->group) != 0},
        {"http", strcmp(cur->http, next->http) != 0},
        {"http-role", cur->http_role != next->http_role},
        {"cluster", cur->cluster != next->cluster},
        {"node-address", strcmp(cur->node_address, next->node_address) != 0},
        {"snapshot-entries", cur->snapshot_entries != next->snapshot_entries},
    };
    for (size_t i = 0; i < sizeof fixed / sizeof *fixed; i++)
        if (fixed[i].differs)
            jq_log(JQ_LOG_WARNING, "%s changed in %s: needs a restart (keeping the running value)",
                   fixed[i].name, file);

    char changed[512] = "";
#define TAKE(field, name, fmt, cast)                                                           \
    if (cur->field != next->field) {                                                           \
        cur->field = next->field;                                                              \
        note(changed, sizeof changed, name, fmt, (cast)cur->field);                            \
    }
    TAKE(max_running, "max-running", "%u", unsigned)
    TAKE(max_jobs, "max-jobs", "%llu", unsigned long long)
    TAKE(max_waiters, "max-waiters", "%llu", unsigned long long)
    TAKE(max_client_requests, "max-client-requests", "%llu", unsigned long long)
    TAKE(max_client_waiters, "max-client-waiters", "%llu", unsigned long long)
    TAKE(max_log_entries, "max-log-entries", "%llu", unsigned long long)
    TAKE(max_request_bytes, "max-request-bytes", "%llu", unsigned long long)
    TAKE(keepalive, "keepalive", "%g", double)
    TAKE(shutdown_grace, "shutdown-grace", "%g", double)
#undef TAKE
    if (cur->log_level != next->log_level) {
        cur->log_level = next->log_level;
        note(changed, sizeof changed, "log-level", "%s",
             jq_log_level_name((jq_log_level_t)cur->log_level));
    }
    cur->verbose = next->verbose;
    jq_log(JQ_LOG_NOTICE, "reloaded %s: %s%s", file, changed[0] ? "now " : "nothing changed",
           changed);
    free(next);
    return 0;
}
