/* jobq_cli_watch.c: the "watch" command of jobq, and cli_follow_job, which
 * "submit --wait" shares.
 *
 * A job is followed over the daemon's event stream through libjobq's
 * subscriber (jobq_sub_*, in job mode): the first event is a snapshot of
 * the job (status and every log entry so far), then one change record per
 * change, in order and exactly once, so nothing is polled. Where the
 * stream cannot be used — the daemon publishes no endpoint, the ipc socket
 * file is missing, or nothing (not even a heartbeat, sent every second)
 * arrived within WATCH_STREAM_GRACE_MS — or with --poll, the job is
 * followed with wait_for_job_change instead (Ganeti's client loop,
 * JOBMODEL §2.4). Both paths print the same lines.
 *
 * Printing rule: a change to a status that is not final is printed before
 * the log entries of the same change (they were logged in that status);
 * the final status after them, as the last line. Every line carries the
 * time elapsed since the watch started, so a person sees how long each
 * step took without reading timestamps.
 *
 * A job that ends error or canceled is explained before its final status,
 * as gnt-job watch does: the first opcode that failed (or was canceled)
 * and its result's message, read with one query_jobs at the end.
 *
 * Timeouts: -t bounds each request; with wait_for_job_change each call's
 * daemon-side wait is half of it (at most WATCH_WFJC_WAIT_S), so a call
 * never outlives -t even when the daemon sends keepalives.
 *
 * Exit codes: 0 the job ended success, 1 it ended error or canceled, 2 any
 * other failure (job not found, daemon unreachable, usage), 3 jobqd is
 * not running.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "jobq_cli.h"

#define WATCH_EXIT_OTHER 2
#define WATCH_STREAM_GRACE_MS 3000 /* heartbeats come every second */
#define WATCH_NEXT_MS 500
#define WATCH_WFJC_WAIT_S 30.0
#define WATCH_CANCELING_PAUSE_MS 50

typedef struct {
    cli_t *cli;
    uint64_t id;
    double t0;          /* monotonic start, seconds */
    char status[16];    /* last status printed, "" before the first */
    long long serial;   /* highest log serial printed */
} watch_t;

static double mono_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

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

/* Seconds since the watch started, in milliseconds' precision. */
static double elapsed(watch_t *w)
{
    return (double)(long long)((mono_s() - w->t0) * 1000) / 1000;
}

/* The message of an opcode's result: an error's messages ([class,
 * [message...]] as the executors encode failures) joined by "; ", a
 * string as is, anything else as JSON. Caller frees. */
static char *result_message(const json_t *res)
{
    json_t *msgs = json_array_get(res, 1);
    if (json_is_array(res) && json_array_size(res) == 2 &&
        json_is_string(json_array_get(res, 0)) && json_is_array(msgs) && json_array_size(msgs)) {
        char *out = NULL;
        size_t i;
        json_t *m;
        json_array_foreach(msgs, i, m) {
            char *one = cli_fmt_value(m), *joined = NULL;
            if (!one || asprintf(&joined, "%s%s%s", out ? out : "", out ? "; " : "", one) < 0)
                joined = NULL;
            free(one);
            free(out);
            out = joined;
            if (!out)
                return NULL;
        }
        return out;
    }
    return cli_fmt_value(res);
}

/* Why the job ended error or canceled: {"opcode", "op", "message"} of
 * its first opcode in that status, or NULL when it cannot be read. */
static json_t *job_failure(watch_t *w, const char *status)
{
    json_t *ids = json_pack("[I]", (json_int_t)w->id);
    json_t *fields = json_pack("[s,s,s]", "ops", "opstatus", "opresult");
    json_t *res = jobq_query_jobs(w->cli->client, ids, fields, NULL, 0, 0, true,
                                  w->cli->timeout_ms);
    json_decref(ids);
    json_decref(fields);
    json_t *row = json_array_get(json_object_get(res, "rows"), 0), *out = NULL;
    json_t *ops = json_array_get(row, 0), *st = json_array_get(row, 1),
           *results = json_array_get(row, 2);
    for (size_t i = 0; i < json_array_size(st); i++) {
        const char *s = json_string_value(json_array_get(st, i));
        if (!s || strcmp(s, status) != 0)
            continue;
        char *msg = result_message(json_array_get(results, i));
        const char *op = json_string_value(json_object_get(json_array_get(ops, i), "op"));
        out = json_pack("{s:I, s:s, s:s}", "opcode", (json_int_t)i, "op", op ? op : "?",
                        "message", msg ? msg : "?");
        free(msg);
        break;
    }
    json_decref(res);
    return out;
}

static void emit_status(watch_t *w, const char *status)
{
    double el = elapsed(w);
    bool failed = strcmp(status, "error") == 0 || strcmp(status, "canceled") == 0;
    json_t *why = failed ? job_failure(w, status) : NULL;
    if (w->cli->json) {
        json_t *o = json_pack("{s:s, s:f}", "status", status, "elapsed", el);
        if (why)
            json_object_set(o, "error", why);
        cli_print_json(o);
        json_decref(o);
    } else {
        if (why)
            printf("[+%.3fs] %s: opcode %lld (%s) %s: %s\n", el, status,
                   (long long)json_integer_value(json_object_get(why, "opcode")),
                   json_string_value(json_object_get(why, "op")),
                   strcmp(status, "error") == 0 ? "failed" : "was canceled",
                   json_string_value(json_object_get(why, "message")));
        printf("[+%.3fs] status: %s\n", el, status);
    }
    json_decref(why);
    snprintf(w->status, sizeof w->status, "%s", status);
}

static void emit_log(watch_t *w, const json_t *entry)
{
    long long serial = (long long)json_integer_value(json_array_get(entry, 0));
    if (serial <= w->serial)
        return;
    w->serial = serial;
    double el = elapsed(w);
    if (w->cli->json) {
        json_t *o = json_pack("{s:O, s:f}", "log", entry, "elapsed", el);
        cli_print_json(o);
        json_decref(o);
    } else {
        char *s = cli_fmt_log_entry(entry);
        printf("[+%.3fs] %s\n", el, s ? s : "?");
        free(s);
    }
}

/* Prints one observation: the job's status and log entries new to us
 * (entries: a flat list of log entries, or NULL). Returns the exit code
 * when the job is final, -1 otherwise. */
static int observe(watch_t *w, const char *status, const json_t *entries)
{
    bool final = is_final(status), changed = strcmp(status, w->status) != 0;
    if (changed && !final)
        emit_status(w, status);
    size_t i;
    json_t *e;
    json_array_foreach(entries, i, e)
        emit_log(w, e);
    if (changed && final)
        emit_status(w, status);
    fflush(stdout);
    if (!final)
        return -1;
    return strcmp(status, "success") == 0 ? CLI_EXIT_OK : CLI_EXIT_FAIL;
}

/* The entries of an oplog (per-opcode lists) as one flat list. */
static json_t *flatten(const json_t *oplog)
{
    json_t *all = json_array();
    size_t i;
    json_t *log;
    json_array_foreach(oplog, i, log)
        json_array_extend(all, (json_t *)log);
    return all;
}

/* One subscriber event. Returns an exit code when done, -1 to go on. */
static int on_event(watch_t *w, const json_t *ev)
{
    const char *type = json_string_value(json_object_get(ev, "type"));
    if (type && strcmp(type, "resync") == 0) {
        /* fields: id, change_serial, status, oplog (jobq_sub_set_fields) */
        json_t *row = json_array_get(json_object_get(ev, "rows"), 0);
        const char *status = json_string_value(json_array_get(row, 2));
        if (!status) {
            cli_error(w->cli, "job %llu not found", (unsigned long long)w->id);
            return WATCH_EXIT_OTHER;
        }
        json_t *entries = flatten(json_array_get(row, 3));
        int rc = observe(w, status, entries);
        json_decref(entries);
        return rc;
    }
    json_t *change = json_object_get(ev, "change");
    const char *status = json_string_value(json_object_get(change, "status"));
    if (!status)
        return -1;
    return observe(w, status, json_object_get(change, "log"));
}

/* Reports the client's failure; returns watch's exit code for it. */
static int failed(watch_t *w)
{
    return cli_call_failed(w->cli) == CLI_EXIT_NOT_RUNNING ? CLI_EXIT_NOT_RUNNING
                                                            : WATCH_EXIT_OTHER;
}

/* Follows over the stream. Returns an exit code, or -1 when the stream is
 * unusable and the caller should fall back to wait_for_job_change. */
static int follow_stream(watch_t *w, jobq_client_t *c)
{
    jobq_sub_t *sub = jobq_sub_new(c, NULL, &w->id, 1, w->cli->timeout_ms);
    if (!sub) {
        jobq_code_t code = jobq_client_status(c);
        if (code == JOBQ_ERR_NOT_RUNNING || code == JOBQ_ERR_TIMEOUT)
            return failed(w); /* wait_for_job_change would not fare better */
        return -1;
    }
    json_t *fields = json_pack("[s,s]", "status", "oplog");
    jobq_sub_set_fields(sub, fields);
    json_decref(fields);
    int rc = -1;
    while (rc < 0) {
        json_t *ev = NULL;
        int n = jobq_sub_next(sub, &ev, WATCH_NEXT_MS);
        if (n < 0) {
            rc = failed(w);
        } else if (n > 0) {
            rc = on_event(w, ev);
            json_decref(ev);
        } else if (!jobq_sub_live(sub) && (mono_s() - w->t0) * 1000 > WATCH_STREAM_GRACE_MS) {
            break; /* nothing on the stream, not even heartbeats */
        }
    }
    jobq_sub_destroy(&sub);
    return rc;
}

/* Follows with wait_for_job_change (Ganeti's loop): watch the status,
 * pass the highest log serial printed so far. */
static int follow_wfjc(watch_t *w, jobq_client_t *c)
{
    json_t *fields = json_pack("[s]", "status"), *prev = NULL;
    double wait_s = w->cli->timeout_ms / 2000.0;
    if (wait_s > WATCH_WFJC_WAIT_S)
        wait_s = WATCH_WFJC_WAIT_S;
    int rc = -1;
    while (rc < 0) {
        json_t *res = NULL;
        if (jobq_wait_for_job_change(c, w->id, fields, prev, w->serial ? w->serial : -1,
                                     wait_s, w->cli->timeout_ms, &res) < 0) {
            rc = failed(w);
            break;
        }
        if (json_is_null(res)) {
            cli_error(w->cli, "job %llu not found", (unsigned long long)w->id);
            rc = WATCH_EXIT_OTHER;
        } else if (json_is_array(res)) {
            json_t *info = json_array_get(res, 0), *log = json_array_get(res, 1);
            const char *status = json_string_value(json_array_get(info, 0));
            bool same = prev && json_equal(prev, info) && json_array_size(log) == 0;
            rc = observe(w, status ? status : "?", log);
            json_decref(prev);
            prev = json_incref(info);
            /* The daemon answers at once while the job is canceling
             * (nothing more to wait for in Ganeti's rule); pace the loop
             * until the executor finishes the cancel. */
            if (rc < 0 && same)
                sleep_ms(WATCH_CANCELING_PAUSE_MS);
        } /* else "nochange": ask again */
        json_decref(res);
    }
    json_decref(prev);
    json_decref(fields);
    return rc;
}

int cli_follow_job(cli_t *cli, uint64_t id, bool poll)
{
    watch_t w = {.cli = cli, .id = id, .t0 = mono_s()};
    jobq_client_t *c = cli_client(cli);
    if (!c)
        return WATCH_EXIT_OTHER;
    int rc = poll ? -1 : follow_stream(&w, c);
    if (rc < 0)
        rc = follow_wfjc(&w, c);
    return rc;
}

int cmd_watch(cli_t *cli, int argc, char **argv)
{
    cli_opt_t opts[] = {
        {.name = "poll", .has_arg = false},
        {0},
    };
    char **pos;
    int npos, rc;
    bool done;
    uint64_t id;
    rc = cli_parse(cli, argc, argv, opts, &pos, &npos, &done);
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
    rc = cli_follow_job(cli, id, opts[0].count > 0);
out:
    cli_opts_free(opts);
    free(pos);
    return rc;
}
