/* jobq_cli_monitor.c: the "monitor" command of jobq — a live view of the
 * whole queue built from the event stream alone.
 *
 * libjobq's subscriber (all-jobs mode) hands us a snapshot ("resync") and
 * then every change record in order, exactly once, so the view is simply
 * rebuilt on each resync and updated per event; no query is polled. Two
 * outputs:
 *   --events (or --json): one line per event — the tool a monitoring
 *     script builds on; --json prints the subscriber's event objects as
 *     they are.
 *   otherwise a table: counts by status, the active jobs (waiting,
 *     running, canceling) with their current opcode and the last log line
 *     seen, and the most recently finished jobs. On a terminal it is
 *     redrawn in place (ANSI clear + home) at most every MON_REDRAW_MS when
 *     something changed, and every second for the elapsed times; when
 *     stdout is not a terminal a plain table is printed every
 *     MON_PLAIN_MS, separated by a blank line.
 * --count N and --duration S stop it (exit 0); so do the daemon's errors
 * (exit 1).
 *
 * The view: a JSON object keyed by job id, each entry
 *   {"status", "ops": [summary...], "op": current index, "log": last line,
 *    "log_serial", "start": ts, "end": ts}
 * jobs leave it when archived. The last log line is the last one seen on
 * the stream (the snapshot does not carry logs: it would be the whole
 * queue's).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "jobq_cli.h"

#define MON_REDRAW_MS 200
#define MON_PLAIN_MS 1000
#define MON_MAX_ACTIVE_ROWS 20
#define MON_DEFAULT_RECENT 10

static const char *const statuses[] = {"queued",   "waiting", "canceling", "running",
                                       "canceled", "success", "error"};
#define NSTATUSES (sizeof statuses / sizeof *statuses)

typedef struct {
    cli_t *cli;
    json_t *view;     /* "id" -> job entry (see the file comment) */
    json_t *recent;   /* ids of finished jobs, most recent last */
    size_t nrecent;   /* how many finished jobs to show */
    uint64_t seq;     /* seq of the last event applied */
    bool dirty;       /* the view changed since the last draw */
} monitor_t;

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static bool is_final(const char *s)
{
    return s && (strcmp(s, "success") == 0 || strcmp(s, "error") == 0 ||
                 strcmp(s, "canceled") == 0);
}

static void add_recent(monitor_t *m, json_int_t id)
{
    json_array_append_new(m->recent, json_integer(id));
    while (json_array_size(m->recent) > m->nrecent)
        json_array_remove(m->recent, 0);
}

/* Index of the first opcode not successful (the current one), or 0. */
static json_int_t current_op(const json_t *opstatus)
{
    size_t i;
    json_t *s;
    json_array_foreach(opstatus, i, s)
        if (!json_is_string(s) || strcmp(json_string_value(s), "success") != 0)
            return (json_int_t)i;
    return 0;
}

/* Orders finished rows by end time for the initial "recent" list. */
static int by_end(const void *a, const void *b)
{
    const json_t *x = *(json_t *const *)a, *y = *(json_t *const *)b;
    double d = cli_ts_diff(json_object_get(x, "end"), json_object_get(y, "end"));
    return d > 0 ? -1 : d < 0 ? 1 : 0; /* ascending end time */
}

/* Rebuilds the view from a resync's rows. Fields (set in cmd_monitor): id,
 * change_serial, status, summary, opstatus, start_ts, end_ts. */
static void on_resync(monitor_t *m, const json_t *ev)
{
    json_object_clear(m->view);
    json_array_clear(m->recent);
    m->seq = (uint64_t)json_integer_value(json_object_get(ev, "seq"));
    json_t *finished = json_array();
    size_t i;
    json_t *row;
    json_array_foreach(json_object_get(ev, "rows"), i, row) {
        json_t *e = json_pack("{s:O, s:O, s:I, s:n, s:i, s:O, s:O}", "status",
                              json_array_get(row, 2), "ops", json_array_get(row, 3), "op",
                              current_op(json_array_get(row, 4)), "log", "log_serial", 0,
                              "start", json_array_get(row, 5), "end", json_array_get(row, 6));
        if (!e)
            continue;
        char key[24];
        snprintf(key, sizeof key, "%lld", (long long)json_integer_value(json_array_get(row, 0)));
        json_object_set_new(m->view, key, e);
        if (is_final(json_string_value(json_object_get(e, "status")))) {
            json_object_set(e, "id", json_array_get(row, 0));
            json_array_append(finished, e);
        }
    }
    /* Most recently ended last; only the last nrecent are kept. */
    size_t n = json_array_size(finished);
    json_t **v = malloc((n ? n : 1) * sizeof *v);
    if (v) {
        for (i = 0; i < n; i++)
            v[i] = json_array_get(finished, i);
        qsort(v, n, sizeof *v, by_end);
        for (i = n > m->nrecent ? n - m->nrecent : 0; i < n; i++)
            add_recent(m, json_integer_value(json_object_get(v[i], "id")));
        free(v);
    }
    json_decref(finished);
    m->dirty = true;
}

/* Applies one change record to the view. */
static void on_change(monitor_t *m, const json_t *ev)
{
    json_t *c = json_object_get(ev, "change");
    json_int_t id = json_integer_value(json_object_get(ev, "job"));
    const char *kind = json_string_value(json_object_get(ev, "kind"));
    m->seq = (uint64_t)json_integer_value(json_object_get(ev, "seq"));
    m->dirty = true;
    char key[24];
    snprintf(key, sizeof key, "%lld", (long long)id);
    if (kind && strcmp(kind, "archive") == 0) {
        json_object_del(m->view, key);
        return;
    }
    json_t *e = json_object_get(m->view, key);
    if (kind && strcmp(kind, "submit") == 0) {
        /* The stream carries opcodes as submitted, not the daemon's
         * summaries: show their names. */
        json_t *names = json_array();
        size_t i;
        json_t *op;
        json_array_foreach(json_object_get(c, "input"), i, op)
            json_array_append(names, json_object_get(op, "op"));
        e = json_pack("{s:o, s:i, s:n, s:i, s:n, s:n}", "ops", names, "op", 0, "log",
                      "log_serial", 0, "start", "end");
        json_object_set_new(m->view, key, e);
    }
    if (!e)
        return; /* a job the snapshot did not list (archived meanwhile) */
    const char *before = json_string_value(json_object_get(e, "status"));
    bool was_final = is_final(before);
    json_object_set(e, "status", json_object_get(c, "status"));
    json_object_set(e, "start", json_object_get(c, "start_ts"));
    json_object_set(e, "end", json_object_get(c, "end_ts"));
    size_t i;
    json_t *op;
    json_array_foreach(json_object_get(c, "ops"), i, op) {
        const char *st = json_string_value(json_object_get(op, "status"));
        if (st && strcmp(st, "success") != 0 && strcmp(st, "queued") != 0)
            json_object_set(e, "op", json_object_get(op, "index"));
    }
    json_t *log = json_object_get(c, "log");
    json_t *last = json_array_get(log, json_array_size(log) - 1);
    if (last) {
        json_object_set(e, "log", json_array_get(last, 3));
        json_object_set(e, "log_serial", json_array_get(last, 0));
        if (json_is_integer(json_object_get(c, "log_op")))
            json_object_set(e, "op", json_object_get(c, "log_op"));
    }
    if (!was_final && is_final(json_string_value(json_object_get(e, "status"))))
        add_recent(m, id);
}

/* Seconds from ts to now (wall clock), or from ts to end when end is set. */
static double elapsed(const json_t *ts, const json_t *end)
{
    if (json_is_array(end))
        return cli_ts_diff(ts, end);
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    json_t *n = json_pack("[I,I]", (json_int_t)now.tv_sec, (json_int_t)(now.tv_nsec / 1000));
    double d = cli_ts_diff(ts, n);
    json_decref(n);
    return d;
}

static void fmt_secs(char *buf, size_t len, double s)
{
    if (s < 0)
        snprintf(buf, len, "-");
    else if (s < 60)
        snprintf(buf, len, "%.1fs", s);
    else
        snprintf(buf, len, "%dm%02ds", (int)(s / 60), (int)s % 60);
}

static const char *op_name(const json_t *e)
{
    json_t *ops = json_object_get(e, "ops");
    const char *s = json_string_value(json_array_get(ops, (size_t)json_integer_value(
                                                              json_object_get(e, "op"))));
    return s ? s : "-";
}

static void draw(monitor_t *m, bool tty)
{
    size_t counts[NSTATUSES] = {0};
    const char *key;
    json_t *e;
    json_t *active = json_array();
    json_object_foreach(m->view, key, e) {
        const char *st = json_string_value(json_object_get(e, "status"));
        for (size_t i = 0; st && i < NSTATUSES; i++)
            if (strcmp(st, statuses[i]) == 0)
                counts[i]++;
        if (st && (strcmp(st, "running") == 0 || strcmp(st, "waiting") == 0 ||
                   strcmp(st, "canceling") == 0))
            json_array_append_new(active, json_string(key));
    }
    if (tty)
        fputs("\033[H\033[2J", stdout);
    char now[64];
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    json_t *tsj = json_pack("[I,I]", (json_int_t)ts.tv_sec, (json_int_t)(ts.tv_nsec / 1000));
    printf("jobq monitor  %s  %s  seq %llu\n", m->cli->endpoint,
           cli_fmt_ts(tsj, now, sizeof now), (unsigned long long)m->seq);
    json_decref(tsj);
    printf("jobs %zu:", json_object_size(m->view));
    for (size_t i = 0; i < NSTATUSES; i++)
        printf("  %s %zu", statuses[i], counts[i]);
    printf("\n\nACTIVE\n%-8s  %-9s  %-8s  %-24s  %s\n", "ID", "STATUS", "ELAPSED", "OPCODE",
           "LAST LOG");
    size_t i;
    json_t *k;
    json_array_foreach(active, i, k) {
        if (i == MON_MAX_ACTIVE_ROWS) {
            printf("... and %zu more\n", json_array_size(active) - i);
            break;
        }
        e = json_object_get(m->view, json_string_value(k));
        char el[32];
        fmt_secs(el, sizeof el, elapsed(json_object_get(e, "start"), NULL));
        char *log = cli_fmt_value(json_object_get(e, "log"));
        for (char *p = log; p && *p; p++) /* one row per job, whatever the message */
            if ((unsigned char)*p < 0x20 || *p == 0x7f)
                *p = ' ';
        printf("%-8s  %-9s  %-8s  %-24s  %s\n", json_string_value(k),
               json_string_value(json_object_get(e, "status")), el, op_name(e),
               log ? log : "-");
        free(log);
    }
    printf("\nRECENT\n%-8s  %-9s  %-8s  %s\n", "ID", "STATUS", "DURATION", "OPCODE");
    for (i = json_array_size(m->recent); i-- > 0;) {
        char key2[24], dur[32];
        snprintf(key2, sizeof key2, "%lld",
                 (long long)json_integer_value(json_array_get(m->recent, i)));
        e = json_object_get(m->view, key2);
        if (!e)
            continue; /* archived since */
        fmt_secs(dur, sizeof dur, elapsed(json_object_get(e, "start"), json_object_get(e, "end")));
        printf("%-8s  %-9s  %-8s  %s\n", key2, json_string_value(json_object_get(e, "status")),
               dur, op_name(e));
    }
    if (!tty)
        putchar('\n');
    fflush(stdout);
    json_decref(active);
    m->dirty = false;
}

/* One line per event for --events (text). */
static void print_event_line(const json_t *ev)
{
    char tsbuf[64];
    const char *type = json_string_value(json_object_get(ev, "type"));
    if (type && strcmp(type, "resync") == 0) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        json_t *t = json_pack("[I,I]", (json_int_t)ts.tv_sec, (json_int_t)(ts.tv_nsec / 1000));
        printf("%s resync %s seq=%lld epoch=%lld jobs=%zu\n", cli_fmt_ts(t, tsbuf, sizeof tsbuf),
               json_string_value(json_object_get(ev, "reason")),
               (long long)json_integer_value(json_object_get(ev, "seq")),
               (long long)json_integer_value(json_object_get(ev, "epoch")),
               json_array_size(json_object_get(ev, "rows")));
        json_decref(t);
        return;
    }
    json_t *c = json_object_get(ev, "change");
    printf("%s seq=%lld job=%lld serial=%lld %s %s",
           cli_fmt_ts(json_object_get(c, "time"), tsbuf, sizeof tsbuf),
           (long long)json_integer_value(json_object_get(ev, "seq")),
           (long long)json_integer_value(json_object_get(ev, "job")),
           (long long)json_integer_value(json_object_get(ev, "serial")),
           json_string_value(json_object_get(ev, "kind")) ?: "?",
           json_string_value(json_object_get(c, "status")) ?: "?");
    size_t i;
    json_t *x;
    json_array_foreach(json_object_get(c, "ops"), i, x)
        printf(" op%lld=%s", (long long)json_integer_value(json_object_get(x, "index")),
               json_string_value(json_object_get(x, "status")) ?: "?");
    json_array_foreach(json_object_get(c, "log"), i, x) {
        /* A message as a JSON string: quotes, backslashes, newlines and
         * control characters escaped, so that an event stays one line. */
        json_t *m = json_array_get(x, 3);
        char *msg = m ? cli_json_text(m, true) : NULL;
        printf(" log%lld=%s", (long long)json_integer_value(json_array_get(x, 0)),
               msg ? msg : "null");
        free(msg);
    }
    if (json_is_true(json_object_get(ev, "recovered")))
        printf(" (recovered)");
    putchar('\n');
}

/* The timeout of the subscriber's next request: -t, cut to what is left
 * of --duration (stop_at, -1 for none) so that a slow or silent daemon
 * cannot hold monitor past it. */
static int call_timeout(const cli_t *cli, int64_t stop_at)
{
    if (stop_at < 0)
        return cli->timeout_ms;
    int64_t left = stop_at - mono_ms();
    if (left < 1)
        left = 1;
    return left < cli->timeout_ms ? (int)left : cli->timeout_ms;
}

int cmd_monitor(cli_t *cli, int argc, char **argv)
{
    cli_opt_t opts[] = {
        {.name = "events", .has_arg = false},
        {.name = "count", .short_name = 'n', .has_arg = true},
        {.name = "duration", .has_arg = true},
        {.name = "recent", .has_arg = true},
        {.name = "batched", .has_arg = false},
        {0},
    };
    enum { O_EVENTS, O_COUNT, O_DURATION, O_RECENT, O_BATCHED };
    char **pos;
    int npos, rc;
    bool done;
    jobq_sub_t *sub = NULL;
    monitor_t m = {.cli = cli, .nrecent = MON_DEFAULT_RECENT};
    rc = cli_parse(cli, argc, argv, opts, &pos, &npos, &done);
    if (done)
        goto out;
    long long count = -1, recent = MON_DEFAULT_RECENT;
    double duration = -1;
    if (npos) {
        rc = cli_usage(cli, "unexpected argument '%s'", pos[0]);
        goto out;
    }
    if (opts[O_COUNT].count && (cli_parse_int(opts[O_COUNT].value, &count) < 0 || count < 1)) {
        rc = cli_usage(cli, "invalid --count '%s' (an integer >= 1)", opts[O_COUNT].value);
        goto out;
    }
    if (opts[O_DURATION].count && cli_parse_seconds(opts[O_DURATION].value, &duration) < 0) {
        rc = cli_usage(cli, "invalid --duration '%s' (seconds)", opts[O_DURATION].value);
        goto out;
    }
    if (opts[O_RECENT].count && (cli_parse_int(opts[O_RECENT].value, &recent) < 0 || recent < 0)) {
        rc = cli_usage(cli, "invalid --recent '%s' (an integer >= 0)", opts[O_RECENT].value);
        goto out;
    }
    m.nrecent = (size_t)recent;
    bool events = opts[O_EVENTS].count > 0 || cli->json;
    bool tty = isatty(STDOUT_FILENO);
    jobq_client_t *c = cli_client(cli);
    if (!c) {
        rc = CLI_EXIT_FAIL;
        goto out;
    }
    int64_t start = mono_ms(), last_draw = 0;
    int64_t stop_at = duration >= 0 ? start + (int64_t)(duration * 1000) : -1;
    sub = jobq_sub_new(c, NULL, NULL, 0, call_timeout(cli, stop_at));
    if (!sub) {
        if (jobq_client_status(c) == JOBQ_ERR_TRANSPORT) {
            /* The daemon answered but offers no stream we can use (no
             * event endpoint of our transport, no events socket file). */
            cli_error(cli, "%s", jobq_client_reason(c));
            rc = CLI_EXIT_FAIL;
        } else {
            rc = cli_call_failed(cli);
        }
        goto out;
    }
    if (opts[O_BATCHED].count && jobq_sub_set_batched(sub, true) < 0) {
        cli_error(cli, "%s", jobq_client_reason(c));
        rc = CLI_EXIT_FAIL;
        goto out;
    }
    json_t *fields = json_pack("[s,s,s,s,s]", "status", "summary", "opstatus", "start_ts",
                               "end_ts");
    jobq_sub_set_fields(sub, fields);
    json_decref(fields);
    m.view = json_object();
    m.recent = json_array();
    long long seen = 0;
    rc = CLI_EXIT_OK;
    while (count < 0 || seen < count) {
        int64_t now = mono_ms();
        if (stop_at >= 0 && now >= stop_at)
            break;
        int wait = events ? 1000 : MON_REDRAW_MS;
        if (stop_at >= 0 && stop_at - now < wait)
            wait = (int)(stop_at - now);
        json_t *ev = NULL;
        jobq_sub_set_call_timeout(sub, call_timeout(cli, stop_at));
        int n = jobq_sub_next(sub, &ev, wait);
        if (n < 0) {
            rc = cli_call_failed(cli);
            break;
        }
        if (n > 0) {
            bool resync = strcmp(json_string_value(json_object_get(ev, "type")) ?: "", "resync") == 0;
            if (events) {
                if (cli->json)
                    cli_print_json(ev);
                else
                    print_event_line(ev);
                fflush(stdout);
            } else if (resync) {
                on_resync(&m, ev);
            } else {
                on_change(&m, ev);
            }
            if (!resync)
                seen++;
            json_decref(ev);
        }
        if (!events) {
            now = mono_ms();
            int64_t period = tty ? (m.dirty ? MON_REDRAW_MS : MON_PLAIN_MS) : MON_PLAIN_MS;
            if (now - last_draw >= period) {
                draw(&m, tty);
                last_draw = now;
            }
        }
    }
    if (!events && rc == CLI_EXIT_OK)
        draw(&m, tty); /* the final state, whatever the period */
out:
    jobq_sub_destroy(&sub);
    json_decref(m.view);
    json_decref(m.recent);
    cli_opts_free(opts);
    free(pos);
    return rc;
}
