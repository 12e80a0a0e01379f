/* config.h: jobqd's options, from the command line and an optional config
 * file of the same long options (one "name value" per line). */
#ifndef JOBQ_CONFIG_H
#define JOBQ_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define JQ_MAX_LISTEN 16

typedef struct {
    char data_dir[4096];
    char listen[JQ_MAX_LISTEN][512]; /* extra endpoints */
    unsigned nlisten;
    char publish[JQ_MAX_LISTEN][512]; /* extra event endpoints */
    unsigned npublish;
    uint64_t max_waiters;
    uint64_t ring_events;       /* replay ring size, events */
    double keepalive;           /* seconds between keepalives to waiters */
    int sync;                   /* jq_sync_t */
    double sync_interval;       /* seconds, for --sync batch */
    uint64_t store_map_size;    /* bytes */
    unsigned shards;
    unsigned handlers;
    unsigned executors;
    unsigned max_running;
    uint64_t max_jobs;
    size_t max_request_bytes;
    uint64_t max_log_entries;   /* per job */
    double shutdown_grace;      /* seconds running opcodes get to finish */
    uint64_t max_connections;   /* 0: derived from the descriptor limit */
    uint64_t max_client_requests; /* unanswered requests per connection */
    uint64_t max_client_waiters;  /* parked waits per connection */
    uint64_t token_window;      /* seconds a client token is remembered */
    bool salvage;               /* move damaged store records aside */
    bool verbose;
} jq_config_t;

/* Defaults, then the config file (if --config is given), then the command
 * line. Returns 0, 1 when --help/--version printed and the daemon should
 * exit 0, or -1 with err set. */
int jq_config_load(jq_config_t *cfg, int argc, char **argv, char *err, size_t errlen);

#endif
