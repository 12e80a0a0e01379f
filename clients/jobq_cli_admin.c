/* jobq_cli_admin.c: the single-call commands of jobq: cancel, priority,
 * archive, autoarchive, drain, stats, shutdown, ping, version and
 * http-token.
 *
 * Each parses its arguments, makes one library call (cancel, priority and
 * archive: one per job id) and prints the answer: a sentence for people,
 * or with --json the decoded result. Answers of the form [false, message]
 * (cancel, priority) are failures: the message goes to stderr and the exit
 * code is 1.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "jobq_cli.h"

/* Parses nmin to nmax (-1: any number) positional words with no command options; returns
 * 0 or an exit code with *done set. */
static int parse_simple(cli_t *cli, int argc, char **argv, int nmin, int nmax, char ***pos,
                        int *npos, bool *done)
{
    int rc = cli_parse(cli, argc, argv, NULL, pos, npos, done);
    if (*done)
        return rc;
    if (*npos < nmin || (nmax >= 0 && *npos > nmax)) {
        *done = true;
        if (*npos < nmin)
            return cli_usage(cli, "missing argument (usage: jobq %s %s)", cli->cmd->name,
                             cli->cmd->synopsis);
        return cli_usage(cli, "unexpected argument '%s'", (*pos)[nmax]);
    }
    return 0;
}

/* Prints a [bool, message] answer: with --json the answer on a line of
 * its own, else the message on stdout, or on stderr when it is a failure.
 * Returns the exit code. */
static int report_pair(cli_t *cli, json_t *r)
{
    json_t *ok = json_array_get(r, 0);
    const char *msg = json_string_value(json_array_get(r, 1));
    if (cli->json)
        cli_print_json(r);
    else if (json_is_true(ok))
        printf("%s\n", msg ? msg : "done");
    if (!json_is_true(ok)) {
        if (!cli->json)
            cli_error(cli, "%s", msg ? msg : "failed");
        return CLI_EXIT_FAIL;
    }
    return CLI_EXIT_OK;
}

/* Parses every word of pos as a job id into a malloc'ed array; NULL with
 * *rc set (usage error printed) when one is not. */
static uint64_t *parse_ids(cli_t *cli, char **pos, int npos, int *rc)
{
    uint64_t *ids = calloc((size_t)npos + 1, sizeof *ids);
    if (!ids) {
        cli_error(cli, "out of memory");
        *rc = CLI_EXIT_FAIL;
        return NULL;
    }
    for (int i = 0; i < npos; i++)
        if (cli_parse_job_id(pos[i], &ids[i]) < 0) {
            free(ids);
            *rc = cli_usage(cli, "invalid job ID '%s'", pos[i]);
            return NULL;
        }
    return ids;
}

/* Makes a [bool, message] call (cancel or change priority) for each job
 * in turn, one line of result per job. A failed call (the daemon refused
 * the request, or did not answer) stops there: the jobs after it would
 * fail the same way. Returns 1 if any job failed. */
static int each_job(cli_t *cli, const uint64_t *ids, int n, bool set_prio, int prio)
{
    int rc = CLI_EXIT_OK;
    for (int i = 0; i < n; i++) {
        json_t *r = set_prio ? jobq_change_job_priority(cli->client, ids[i], prio, cli->timeout_ms)
                             : jobq_cancel_job(cli->client, ids[i], cli->timeout_ms);
        if (!r)
            return cli_call_failed(cli);
        if (report_pair(cli, r) != CLI_EXIT_OK)
            rc = CLI_EXIT_FAIL;
        json_decref(r);
    }
    return rc;
}

int cmd_cancel(cli_t *cli, int argc, char **argv)
{
    char **pos;
    int npos;
    bool done;
    uint64_t *ids = NULL;
    int rc = parse_simple(cli, argc, argv, 1, -1, &pos, &npos, &done);
    if (done || !(ids = parse_ids(cli, pos, npos, &rc)))
        goto out;
    if (!cli_client(cli)) {
        rc = CLI_EXIT_FAIL;
        goto out;
    }
    rc = each_job(cli, ids, npos, false, 0);
out:
    free(ids);
    free(pos);
    return rc;
}

/* Two forms: "priority ID P" (one job, kept for compatibility) and, as
 * gnt-job change-priority, "priority --priority P ID..." (every word an
 * id). A P among the words with --priority is an invalid id, so the two
 * cannot be confused. */
int cmd_priority(cli_t *cli, int argc, char **argv)
{
    cli_opt_t opts[] = {
        {.name = "priority", .short_name = 'p', .has_arg = true},
        {0},
    };
    char **pos;
    int npos;
    bool done;
    uint64_t *ids = NULL;
    long long prio;
    int rc = cli_parse(cli, argc, argv, opts, &pos, &npos, &done);
    if (done)
        goto out;
    const char *pword = opts[0].value;
    if (!pword) {
        if (npos != 2) {
            rc = npos > 2 ? cli_usage(cli, "unexpected argument '%s' (several jobs: jobq "
                                           "priority --priority P ID...)", pos[2])
                          : cli_usage(cli, "missing argument (usage: jobq priority ID P, or "
                                           "jobq priority --priority P ID...)");
            goto out;
        }
        pword = pos[1];
        npos = 1;
    } else if (npos == 0) {
        rc = cli_usage(cli, "missing job ID");
        goto out;
    }
    if (!(ids = parse_ids(cli, pos, npos, &rc)))
        goto out;
    if (cli_parse_priority(pword, &prio) < 0) {
        rc = cli_usage(cli, "invalid priority '%s' (" CLI_PRIORITY_HELP ")", pword);
        goto out;
    }
    if (!cli_client(cli)) {
        rc = CLI_EXIT_FAIL;
        goto out;
    }
    rc = each_job(cli, ids, npos, true, (int)prio);
out:
    free(ids);
    cli_opts_free(opts);
    free(pos);
    return rc;
}

int cmd_archive(cli_t *cli, int argc, char **argv)
{
    char **pos;
    int npos;
    bool done;
    json_t *out_list = json_array();
    int rc = parse_simple(cli, argc, argv, 1, -1, &pos, &npos, &done);
    if (done)
        goto out;
    uint64_t *ids = calloc((size_t)npos, sizeof *ids);
    for (int i = 0; ids && i < npos; i++)
        if (cli_parse_job_id(pos[i], &ids[i]) < 0) {
            free(ids);
            rc = cli_usage(cli, "invalid job ID '%s'", pos[i]);
            goto out;
        }
    if (!ids || !cli_client(cli)) {
        free(ids);
        rc = CLI_EXIT_FAIL;
        goto out;
    }
    rc = CLI_EXIT_OK;
    for (int i = 0; i < npos; i++) {
        bool archived;
        if (jobq_archive_job(cli->client, ids[i], &archived, cli->timeout_ms) < 0) {
            rc = cli_call_failed(cli);
            break;
        }
        json_array_append_new(out_list, json_pack("{s:I, s:b}", "id", (json_int_t)ids[i],
                                                  "archived", archived));
        if (!archived) {
            cli_error(cli, "job %llu was not archived (not found, already archived or "
                      "not finished)", (unsigned long long)ids[i]);
            rc = CLI_EXIT_FAIL;
        } else if (!cli->json) {
            printf("Job %llu archived\n", (unsigned long long)ids[i]);
        }
    }
    free(ids);
    if (cli->json)
        cli_print_json(out_list);
out:
    json_decref(out_list);
    free(pos);
    return rc;
}

int cmd_autoarchive(cli_t *cli, int argc, char **argv)
{
    cli_opt_t opts[] = {
        {.name = "timeout", .has_arg = true},
        {0},
    };
    char **pos;
    int npos;
    bool done;
    int rc = cli_parse(cli, argc, argv, opts, &pos, &npos, &done);
    if (done)
        goto out;
    if (npos != 1) {
        rc = npos ? cli_usage(cli, "unexpected argument '%s'", pos[1])
                  : cli_usage(cli, "missing AGE");
        goto out;
    }
    int64_t age;
    double secs, budget;
    if (strcmp(pos[0], "all") == 0 || strcmp(pos[0], "-1") == 0) {
        age = -1;
    } else if (cli_parse_seconds(pos[0], &secs) == 0 && secs < 9e15) {
        age = (int64_t)floor(secs);
    } else {
        rc = cli_usage(cli, "invalid AGE '%s' (seconds, optionally with s/m/h/d, or 'all')",
                       pos[0]);
        goto out;
    }
    if (opts[0].count) {
        if (cli_parse_seconds(opts[0].value, &budget) < 0 || budget > 1e6) {
            rc = cli_usage(cli, "invalid --timeout '%s' (seconds of work)", opts[0].value);
            goto out;
        }
        budget = ceil(budget); /* the daemon takes whole seconds */
    } else {
        /* As Ganeti: half of what the call may take, less a second. */
        budget = floor((cli->timeout_ms / 1000.0 - 1) / 2);
        if (budget < 1)
            budget = 1;
    }
    /* The call must outlive the daemon's budget. */
    int wait_ms = cli->timeout_ms;
    if (budget * 1000 + 5000 > wait_ms)
        wait_ms = (int)(budget * 1000) + 5000;
    if (!cli_client(cli)) {
        rc = CLI_EXIT_FAIL;
        goto out;
    }
    uint64_t archived, remaining;
    if (jobq_auto_archive_jobs(cli->client, age, (int64_t)budget, &archived, &remaining, wait_ms) < 0) {
        rc = cli_call_failed(cli);
        goto out;
    }
    if (cli->json) {
        json_t *r = json_pack("[I, I]", (json_int_t)archived, (json_int_t)remaining);
        cli_print_json(r);
        json_decref(r);
    } else {
        printf("Archived %llu jobs, %llu left unexamined\n", (unsigned long long)archived,
               (unsigned long long)remaining);
    }
    rc = CLI_EXIT_OK;
out:
    cli_opts_free(opts);
    free(pos);
    return rc;
}

/* Without an argument shows the flag, read from stats' "drained". */
static int show_drain(cli_t *cli)
{
    if (!cli_client(cli))
        return CLI_EXIT_FAIL;
    json_t *r = jobq_stats(cli->client, cli->timeout_ms);
    if (!r)
        return cli_call_failed(cli);
    json_t *flag = json_object_get(r, "drained");
    int rc = CLI_EXIT_OK;
    if (!json_is_boolean(flag)) {
        cli_error(cli, "the daemon's stats have no \"drained\" flag");
        rc = CLI_EXIT_FAIL;
    } else if (cli->json) {
        cli_print_json(flag);
    } else {
        printf(json_is_true(flag) ? "Drain flag: on (submissions are refused)\n"
                                  : "Drain flag: off (submissions are accepted)\n");
    }
    json_decref(r);
    return rc;
}

int cmd_drain(cli_t *cli, int argc, char **argv)
{
    char **pos;
    int npos;
    bool done, flag;
    int rc = parse_simple(cli, argc, argv, 0, 1, &pos, &npos, &done);
    if (done)
        goto out;
    if (npos == 0) {
        rc = show_drain(cli);
        goto out;
    }
    if (strcmp(pos[0], "on") == 0) {
        flag = true;
    } else if (strcmp(pos[0], "off") == 0) {
        flag = false;
    } else {
        rc = cli_usage(cli, "expected 'on' or 'off', not '%s'", pos[0]);
        goto out;
    }
    if (!cli_client(cli)) {
        rc = CLI_EXIT_FAIL;
        goto out;
    }
    if (jobq_set_drain_flag(cli->client, flag, cli->timeout_ms) < 0) {
        rc = cli_call_failed(cli);
        goto out;
    }
    if (cli->json)
        cli_print_json(json_true());
    else
        printf(flag ? "Drain flag set: submissions are refused\n"
                    : "Drain flag cleared: submissions are accepted\n");
    rc = CLI_EXIT_OK;
out:
    free(pos);
    return rc;
}

/* Prints a stats map as "key: value" lines, nested maps as dotted keys. */
static void print_stats(const char *prefix, const json_t *obj)
{
    const char *key;
    json_t *val;
    json_object_foreach((json_t *)obj, key, val) {
        char name[256];
        snprintf(name, sizeof name, "%s%s%s", prefix, *prefix ? "." : "", key);
        if (json_is_object(val) && json_object_size(val)) {
            print_stats(name, val);
        } else {
            char *s = cli_fmt_value(val);
            printf("%s: %s\n", name, s ? s : "?");
            free(s);
        }
    }
}

int cmd_stats(cli_t *cli, int argc, char **argv)
{
    char **pos;
    int npos;
    bool done;
    int rc = parse_simple(cli, argc, argv, 0, 0, &pos, &npos, &done);
    if (done)
        goto out;
    if (!cli_client(cli)) {
        rc = CLI_EXIT_FAIL;
        goto out;
    }
    json_t *r = jobq_stats(cli->client, cli->timeout_ms);
    if (!r) {
        rc = cli_call_failed(cli);
        goto out;
    }
    if (cli->json)
        cli_print_json(r);
    else
        print_stats("", r);
    json_decref(r);
    rc = CLI_EXIT_OK;
out:
    free(pos);
    return rc;
}

int cmd_shutdown(cli_t *cli, int argc, char **argv)
{
    cli_opt_t opts[] = {
        {.name = "now"},
        {0},
    };
    char **pos;
    int npos;
    bool done;
    int rc = cli_parse(cli, argc, argv, opts, &pos, &npos, &done);
    if (done)
        goto out;
    if (npos) {
        rc = cli_usage(cli, "unexpected argument '%s'", pos[0]);
        goto out;
    }
    bool now = opts[0].count > 0;
    if (!cli_client(cli)) {
        rc = CLI_EXIT_FAIL;
        goto out;
    }
    if (jobq_shutdown(cli->client, now, cli->timeout_ms) < 0) {
        rc = cli_call_failed(cli);
        goto out;
    }
    if (cli->json)
        cli_print_json(json_true());
    else if (now)
        printf("Daemon is shutting down now: running jobs are interrupted\n");
    else
        printf("Daemon is shutting down: running opcodes may finish first\n");
    rc = CLI_EXIT_OK;
out:
    cli_opts_free(opts);
    free(pos);
    return rc;
}

int cmd_http_token(cli_t *cli, int argc, char **argv)
{
    cli_opt_t opts[] = {
        {.name = "ttl", .has_arg = true},
        {0},
    };
    char **pos;
    int npos;
    bool done;
    int rc = cli_parse(cli, argc, argv, opts, &pos, &npos, &done);
    if (done)
        goto out;
    if (npos) {
        rc = cli_usage(cli, "unexpected argument '%s'", pos[0]);
        goto out;
    }
    /* Whole seconds; the daemon checks the range (BadArgument). */
    int64_t ttl = 0;
    double secs;
    if (opts[0].count) {
        if (cli_parse_seconds(opts[0].value, &secs) < 0 || secs < 1 || secs > 1e12) {
            rc = cli_usage(cli, "invalid --ttl '%s' (seconds, optionally with s/m/h/d)",
                           opts[0].value);
            goto out;
        }
        ttl = (int64_t)floor(secs);
    }
    if (!cli_client(cli)) {
        rc = CLI_EXIT_FAIL;
        goto out;
    }
    json_t *r = jobq_http_token(cli->client, ttl, cli->timeout_ms);
    if (!r) {
        rc = cli_call_failed(cli);
        goto out;
    }
    if (cli->json)
        cli_print_json(r);
    else
        printf("%s\n", json_string_value(json_object_get(r, "token")));
    json_decref(r);
    rc = CLI_EXIT_OK;
out:
    cli_opts_free(opts);
    free(pos);
    return rc;
}

int cmd_ping(cli_t *cli, int argc, char **argv)
{
    char **pos;
    int npos;
    bool done;
    int rc = parse_simple(cli, argc, argv, 0, 0, &pos, &npos, &done);
    if (done)
        goto out;
    if (!cli_client(cli)) {
        rc = CLI_EXIT_FAIL;
        goto out;
    }
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    json_t *r = jobq_ping(cli->client, cli->timeout_ms);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    if (!r) {
        rc = cli_call_failed(cli);
        goto out;
    }
    if (cli->json) {
        cli_print_json(r);
    } else {
        char buf[64];
        double ms = (double)(t1.tv_sec - t0.tv_sec) * 1e3 + (double)(t1.tv_nsec - t0.tv_nsec) / 1e6;
        const char *version = json_string_value(json_object_get(r, "version"));
        printf("jobqd %s (protocol %lld) at %s: time %s, round trip %.3f ms\n",
               version ? version : "?",
               (long long)json_integer_value(json_object_get(r, "protocol")),
               jobq_client_endpoint(cli->client), cli_fmt_ts(json_object_get(r, "time"), buf, sizeof buf), ms);
    }
    json_decref(r);
    rc = CLI_EXIT_OK;
out:
    free(pos);
    return rc;
}

/* jobq --version and jobq version: the CLI's own version always; the
 * daemon's when it answers within a short time (a version query must not
 * hang on a stopped daemon). */
int cmd_version(cli_t *cli, int argc, char **argv)
{
    char **pos;
    int npos;
    bool done;
    int rc = parse_simple(cli, argc, argv, 0, 0, &pos, &npos, &done);
    if (done)
        goto out;
    int wait_ms = cli->timeout_ms < CLI_HELP_DAEMON_TIMEOUT_MS ? cli->timeout_ms
                                                               : CLI_HELP_DAEMON_TIMEOUT_MS;
    json_t *r = cli_client(cli) ? jobq_ping(cli->client, wait_ms) : NULL;
    if (cli->json) {
        json_t *out = json_pack("{s:s, s:i, s:O?}", "version", JOBQ_VERSION, "protocol",
                                JOBQ_PROTOCOL_VERSION, "daemon", r);
        cli_print_json(out);
        json_decref(out);
    } else {
        printf("jobq %s (protocol %d)\n", JOBQ_VERSION, JOBQ_PROTOCOL_VERSION);
        const char *version = json_string_value(json_object_get(r, "version"));
        if (r)
            printf("jobqd %s (protocol %lld) at %s\n", version ? version : "?",
                   (long long)json_integer_value(json_object_get(r, "protocol")),
                   jobq_client_endpoint(cli->client));
    }
    json_decref(r);
    rc = CLI_EXIT_OK;
out:
    free(pos);
    return rc;
}
