/* config.c: option parsing and --help for jobqd. */
#include "config.h"
#include "executor.h"
#include "ring.h"
#include "store.h"
#include "table.h"
#include "tokens.h"
#include "wire.h"

#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char usage[] =
    "Usage: jobqd [OPTIONS]\n"
    "The jobq broker: takes jobs from clients over ZeroMQ and runs them.\n"
    "\n"
    "  -d, --data-dir DIR        data directory; clients are served on\n"
    "                            ipc://DIR/jobq.sock (mode 0660)\n"
    "                            [default: " JOBQ_DEFAULT_DATA_DIR "]\n"
    "  -l, --listen ENDPOINT     also serve on ENDPOINT, e.g. tcp://127.0.0.1:5555\n"
    "                            (repeatable, up to 16)\n"
    "  -p, --publish ENDPOINT    also publish events on ENDPOINT, e.g.\n"
    "                            tcp://127.0.0.1:5556 (repeatable, up to 16);\n"
    "                            always on ipc://DIR/events.sock (mode 0660)\n"
    "      --shards N            job table shards, 1..4096 [64]\n"
    "      --handlers N          request handler threads, 1..64 [2]\n"
    "      --executors N         executor threads, 1..64 [2]\n"
    "      --max-running N       jobs running at once [1000]\n"
    "      --max-jobs N          live (unarchived) jobs before QueueFull [1000000]\n"
    "      --max-waiters N       wait_for_job_change requests parked at once\n"
    "                            [100000]\n"
    "      --ring-events N       events kept for events_since [65536]\n"
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
    "                            [derived from the descriptor limit]\n"
    "      --max-client-requests N  unanswered requests one connection may have;\n"
    "                            more are answered Busy [1024]\n"
    "      --max-client-waiters N   wait_for_job_change requests one connection\n"
    "                            may have parked [10000]\n"
    "      --token-window SEC    how long a submission's client token makes a\n"
    "                            retry return its ids; 0: off [600]\n"
    "      --shutdown-grace SEC  on SIGTERM or shutdown, how long running opcodes\n"
    "                            may finish before they are interrupted [30]\n"
    "      --salvage             start even when store records are damaged: move\n"
    "                            them aside (into the store's `damaged` table)\n"
    "                            and say which\n"
    "  -c, --config FILE         read options from FILE first: one long option\n"
    "                            per line, \"name value\", '#' starts a comment\n"
    "  -v, --verbose             log each connection-level problem to stderr\n"
    "  -h, --help                show this help and exit\n"
    "  -V, --version             show the version and exit\n"
    "\n"
    "The daemon stops cleanly on SIGTERM, SIGINT or the `shutdown` request:\n"
    "it takes no new jobs, lets running opcodes finish (--shutdown-grace), then\n"
    "stops; a second signal, or `shutdown --now`, interrupts them at once.\n"
    "Thread count is fixed at start: the loop, the handlers, the executors, the\n"
    "store thread and ZeroMQ's two; it never grows with clients, requests,\n"
    "waiters or jobs. See docs/operations.md for the store and --sync.\n";

enum { OPT_SHARDS = 256, OPT_HANDLERS, OPT_EXECUTORS, OPT_MAX_RUNNING, OPT_MAX_JOBS,
       OPT_MAX_REQUEST, OPT_MAX_WAITERS, OPT_RING_EVENTS, OPT_KEEPALIVE, OPT_SYNC,
       OPT_SYNC_INTERVAL, OPT_MAP_SIZE, OPT_MAX_LOG, OPT_MAX_CONN, OPT_MAX_CLIENT_REQ,
       OPT_MAX_CLIENT_WAIT, OPT_GRACE, OPT_SALVAGE, OPT_TOKEN_WINDOW };

static const struct option long_opts[] = {
    {"data-dir", required_argument, NULL, 'd'},
    {"listen", required_argument, NULL, 'l'},
    {"publish", required_argument, NULL, 'p'},
    {"shards", required_argument, NULL, OPT_SHARDS},
    {"handlers", required_argument, NULL, OPT_HANDLERS},
    {"executors", required_argument, NULL, OPT_EXECUTORS},
    {"max-running", required_argument, NULL, OPT_MAX_RUNNING},
    {"max-jobs", required_argument, NULL, OPT_MAX_JOBS},
    {"max-request-bytes", required_argument, NULL, OPT_MAX_REQUEST},
    {"max-waiters", required_argument, NULL, OPT_MAX_WAITERS},
    {"ring-events", required_argument, NULL, OPT_RING_EVENTS},
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
        return 0;
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
    case 'v':
        cfg->verbose = true;
        return 0;
    case OPT_SALVAGE:
        cfg->salvage = true;
        return 0;
    case OPT_GRACE:
        return parse_seconds(name, val, 0, 86400, &cfg->shutdown_grace, err, errlen);
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
    case OPT_KEEPALIVE:
        return parse_seconds(name, val, 0.01, 3600, &cfg->keepalive, err, errlen);
    }
    static const struct {
        int opt;
        uint64_t lo, hi;
    } ranges[] = {
        {OPT_SHARDS, 1, JQ_MAX_SHARDS},   {OPT_HANDLERS, 1, 64},
        {OPT_EXECUTORS, 1, JQ_MAX_EXECUTORS}, {OPT_MAX_RUNNING, 1, 10000000},
        {OPT_MAX_JOBS, 1, 1000000000ull}, {OPT_MAX_REQUEST, 1024, 1u << 30},
        {OPT_MAX_WAITERS, 1, 100000000ull}, {OPT_RING_EVENTS, 16, 100000000ull},
        {OPT_MAX_LOG, 1, 1000000000ull}, {OPT_MAX_CONN, 1, 100000000ull},
        {OPT_MAX_CLIENT_REQ, 1, 100000000ull}, {OPT_MAX_CLIENT_WAIT, 1, 100000000ull},
        {OPT_TOKEN_WINDOW, 0, 86400},
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
        case OPT_MAX_LOG: cfg->max_log_entries = v; break;
        case OPT_MAX_CONN: cfg->max_connections = v; break;
        case OPT_MAX_CLIENT_REQ: cfg->max_client_requests = v; break;
        case OPT_MAX_CLIENT_WAIT: cfg->max_client_waiters = v; break;
        case OPT_TOKEN_WINDOW: cfg->token_window = v; break;
        }
        return 0;
    }
    snprintf(err, errlen, "unknown option '%s'", name);
    return -1;
}

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
        char *hash = strchr(line, '#');
        if (hash)
            *hash = '\0';
        char name[64], val[4096];
        int n = sscanf(line, " %63s %4095s", name, val);
        if (n <= 0)
            continue;
        const struct option *o = long_opts;
        while (o->name && strcmp(o->name, name) != 0)
            o++;
        if (!o->name || o->val == 'c' || o->val == 'h' || o->val == 'V' ||
            (o->has_arg == required_argument && n < 2)) {
            snprintf(err, errlen, "%s:%d: unknown option or missing value '%s'", path,
                     lineno, name);
            rc = -1;
            break;
        }
        char why[256];
        if (apply(cfg, o->val, name, n == 2 ? val : "", why, sizeof why) < 0) {
            snprintf(err, errlen, "%s:%d: %s", path, lineno, why);
            rc = -1;
        }
    }
    fclose(f);
    return rc;
}

int jq_config_load(jq_config_t *cfg, int argc, char **argv, char *err, size_t errlen)
{
    memset(cfg, 0, sizeof *cfg);
    snprintf(cfg->data_dir, sizeof cfg->data_dir, "%s", JOBQ_DEFAULT_DATA_DIR);
    cfg->shards = JQ_DEFAULT_SHARDS;
    cfg->handlers = 2;
    cfg->executors = 2;
    cfg->max_running = 1000;
    cfg->max_jobs = 1000000;
    cfg->max_request_bytes = JOBQ_MAX_REQUEST_BYTES;
    cfg->max_waiters = 100000;
    cfg->ring_events = JQ_RING_DEFAULT_EVENTS;
    cfg->token_window = JQ_TOKEN_DEFAULT_WINDOW;
    cfg->keepalive = JOBQ_KEEPALIVE_SECONDS;
    cfg->sync = JQ_SYNC_ALWAYS;
    cfg->sync_interval = 0.1;
    cfg->store_map_size = 64ull << 30;
    cfg->max_log_entries = JOBQ_DEFAULT_MAX_LOG_ENTRIES;
    cfg->shutdown_grace = 30;
    cfg->max_client_requests = 1024;
    cfg->max_client_waiters = 10000;

    /* The config file comes first so the command line overrides it. */
    for (int i = 1; i < argc - 1; i++)
        if (!strcmp(argv[i], "-c") || !strcmp(argv[i], "--config"))
            if (load_file(cfg, argv[i + 1], err, errlen) < 0)
                return -1;
    optind = 1;
    opterr = 0;
    int opt, idx;
    while ((opt = getopt_long(argc, argv, ":d:l:p:c:vhV", long_opts, &idx)) != -1) {
        switch (opt) {
        case 'h':
            fputs(usage, stdout);
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
    return 0;
}
