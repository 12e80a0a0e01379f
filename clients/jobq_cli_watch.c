/* jobq_cli_watch.c: the "watch" command of jobq.
 *
 * Follows one job until it reaches a final status, printing every log
 * entry once ("TIMESTAMP message") and every status change
 * ("status: running"): a change to a status that is not final before the
 * entries of the same poll, the final status after them. It polls query_jobs: a cheap query for status and
 * log_serial every 50 ms during the first second and every 100 ms after
 * that, and the full oplog only when log_serial moved past the last entry
 * printed. (The daemon's event stream will replace the polling.)
 *
 * Exit codes: 0 the job ended success, 1 it ended error or canceled, 2 any
 * other failure (job not found, daemon unreachable, usage).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "jobq_cli.h"

#define WATCH_FAST_POLL_MS 50
#define WATCH_SLOW_POLL_MS 100
#define WATCH_FAST_POLLS 20
#define WATCH_EXIT_OTHER 2

static void sleep_ms(long ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0)
        ;
}

static bool is_final(const char *s)
{
    return strcmp(s, "success") == 0 || strcmp(s, "error") == 0 || strcmp(s, "canceled") == 0;
}

/* Prints the entries of oplog (per-opcode lists) whose serial is above
 * *last, and raises *last. */
static void print_new_entries(cli_t *cli, const json_t *oplog, long long *last)
{
    long long seen = *last;
    size_t i, j;
    json_t *log, *entry;
    json_array_foreach(oplog, i, log) {
        json_array_foreach(log, j, entry) {
            long long serial = (long long)json_integer_value(json_array_get(entry, 0));
            if (serial <= seen)
                continue;
            if (cli->json) {
                json_t *o = json_pack("{s:O}", "log", entry);
                cli_print_json(o);
                json_decref(o);
            } else {
                char *s = cli_fmt_log_entry(entry);
                printf("%s\n", s ? s : "?");
                free(s);
            }
            if (serial > *last)
                *last = serial;
        }
    }
    fflush(stdout);
}

/* One query for job id; returns its row (fields as asked) or NULL with
 * *rc set. The row is owned by *res. */
static json_t *query_row(cli_t *cli, const json_t *ids, const char *f1, const char *f2,
                         const char *f3, json_t **res, int *rc)
{
    json_t *fields = f3 ? json_pack("[s,s,s]", f1, f2, f3) : json_pack("[s,s]", f1, f2);
    json_decref(*res);
    *res = jobq_query_jobs(cli->client, ids, fields, NULL, 0, 0, false, cli->timeout_ms);
    json_decref(fields);
    if (!*res) {
        cli_call_failed(cli);
        *rc = WATCH_EXIT_OTHER;
        return NULL;
    }
    json_t *row = json_array_get(json_object_get(*res, "rows"), 0);
    if (json_array_size(row) != (f3 ? 3u : 2u)) {
        cli_error(cli, "unexpected reply from the daemon");
        *rc = WATCH_EXIT_OTHER;
        return NULL;
    }
    if (!json_is_string(json_array_get(row, 0))) {
        cli_error(cli, "job %lld not found", (long long)json_integer_value(json_array_get(ids, 0)));
        *rc = WATCH_EXIT_OTHER;
        return NULL;
    }
    return row;
}

int cmd_watch(cli_t *cli, int argc, char **argv)
{
    char **pos;
    int npos, rc;
    bool done;
    uint64_t id;
    json_t *ids = NULL, *res = NULL;
    char *last_status = NULL;
    rc = cli_parse(cli, argc, argv, NULL, &pos, &npos, &done);
    if (done)
        goto out;
    if (npos != 1) {
        rc = cli_usage(cli, npos ? "watch takes one job ID" : "missing job ID");
        goto out;
    }
    if (cli_parse_job_id(pos[0], &id) < 0) {
        rc = cli_usage(cli, "invalid job ID '%s'", pos[0]);
        goto out;
    }
    if (!cli_client(cli)) {
        rc = WATCH_EXIT_OTHER;
        goto out;
    }
    ids = json_pack("[I]", (json_int_t)id);
    long long last_serial = 0;
    for (int polls = 0;; polls++) {
        json_t *row = query_row(cli, ids, "status", "log_serial", NULL, &res, &rc);
        if (!row)
            goto out;
        const json_t *oplog = NULL;
        if (json_integer_value(json_array_get(row, 1)) > last_serial) {
            row = query_row(cli, ids, "status", "log_serial", "oplog", &res, &rc);
            if (!row)
                goto out;
            oplog = json_array_get(row, 2);
        }
        const char *status = json_string_value(json_array_get(row, 0));
        bool final = is_final(status);
        /* New entries of a job still going were logged after its status
         * changed; those of a finished job before it ended. */
        if (oplog && final)
            print_new_entries(cli, oplog, &last_serial);
        if (!last_status || strcmp(last_status, status) != 0) {
            if (cli->json) {
                json_t *o = json_pack("{s:s}", "status", status);
                cli_print_json(o);
                json_decref(o);
            } else {
                printf("status: %s\n", status);
            }
            fflush(stdout);
            free(last_status);
            last_status = strdup(status);
            if (!last_status) {
                rc = WATCH_EXIT_OTHER;
                goto out;
            }
        }
        if (oplog && !final)
            print_new_entries(cli, oplog, &last_serial);
        if (final) {
            rc = strcmp(status, "success") == 0 ? CLI_EXIT_OK : CLI_EXIT_FAIL;
            goto out;
        }
        sleep_ms(polls < WATCH_FAST_POLLS ? WATCH_FAST_POLL_MS : WATCH_SLOW_POLL_MS);
    }
out:
    free(last_status);
    json_decref(ids);
    json_decref(res);
    free(pos);
    return rc;
}
