/* jobq_cli_admin.c: the single-call commands of jobq: cancel, priority,
 * archive, autoarchive, drain, stats, shutdown and ping.
 *
 * Each parses its arguments, makes one library call (archive: one per job
 * id) and prints the answer: a sentence for people, or with --json the
 * decoded result. Answers of the form [false, message] (cancel, priority)
 * are failures: the message goes to stderr and the exit code is 1.
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

/* Prints a [bool, message] answer; returns the exit code. */
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

int cmd_cancel(cli_t *cli, int argc, char **argv)
{
    char **pos;
    int npos;
    bool done;
    uint64_t id;
    int rc = parse_simple(cli, argc, argv, 1, 1, &pos, &npos, &done);
    if (done)
        goto out;
    if (cli_parse_job_id(pos[0], &id) < 0) {
        rc = cli_usage(cli, "invalid job ID '%s'", pos[0]);
        goto out;
    }
    if (!cli_client(cli)) {
        rc = CLI_EXIT_FAIL;
        goto out;
    }
    json_t *r = jobq_cancel_job(cli->client, id, cli->timeout_ms);
    rc = r ? report_pair(cli, r) : cli_call_failed(cli);
    json_decref(r);
out:
    free(pos);
    return rc;
}

int cmd_priority(cli_t *cli, int argc, char **argv)
{
    char **pos;
    int npos;
    bool done;
    uint64_t id;
    long long prio;
    int rc = parse_simple(cli, argc, argv, 2, 2, &pos, &npos, &done);
    if (done)
        goto out;
    if (cli_parse_job_id(pos[0], &id) < 0) {
        rc = cli_usage(cli, "invalid job ID '%s'", pos[0]);
        goto out;
    }
    if (cli_parse_int(pos[1], &prio) < 0 || prio < -1000000 || prio > 1000000) {
        rc = cli_usage(cli, "invalid priority '%s' (an integer: -10, 0 or 10)", pos[1]);
        goto out;
    }
    if (!cli_client(cli)) {
        rc = CLI_EXIT_FAIL;
        goto out;
    }
    json_t *r = jobq_change_job_priority(cli->client, id, (int)prio, cli->timeout_ms);
    rc = r ? report_pair(cli, r) : cli_call_failed(cli);
    json_decref(r);
out:
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

int cmd_drain(cli_t *cli, int argc, char **argv)
{
    char **pos;
    int npos;
    bool done, flag;
    int rc = parse_simple(cli, argc, argv, 1, 1, &pos, &npos, &done);
    if (done)
        goto out;
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
               (long long)json_integer_value(json_object_get(r, "protocol")), cli->endpoint,
               cli_fmt_ts(json_object_get(r, "time"), buf, sizeof buf), ms);
    }
    json_decref(r);
    rc = CLI_EXIT_OK;
out:
    free(pos);
    return rc;
}
