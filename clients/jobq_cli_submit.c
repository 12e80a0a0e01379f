/* jobq_cli_submit.c: the "submit" and "submit-many" commands of jobq.
 *
 * submit builds one opcode from the command line: OP, KEY=VALUE arguments
 * (each VALUE read as JSON when it parses as JSON, else taken as a string),
 * --args for a JSON object merged under them, --priority and --depends.
 * submit-many reads a JSON list of jobs from a file or stdin and submits
 * them in one call, so relative dependencies (-1 = previous job) work.
 * submit --wait then follows the job as "watch" does (cli_follow_job). 
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "jobq_cli.h"

/* Parses "ID[:status,status...]" into [ID, [status...]]; NULL if invalid. */
static json_t *parse_depends(const char *spec)
{
    const char *colon = strchr(spec, ':');
    size_t idlen = colon ? (size_t)(colon - spec) : strlen(spec);
    char idbuf[32];
    long long id;
    if (idlen == 0 || idlen >= sizeof idbuf)
        return NULL;
    memcpy(idbuf, spec, idlen);
    idbuf[idlen] = '\0';
    if (cli_parse_int(idbuf, &id) < 0)
        return NULL;
    json_t *statuses = json_array();
    if (colon) {
        char *copy = strdup(colon + 1);
        if (!copy) {
            json_decref(statuses);
            return NULL;
        }
        char *save = NULL;
        for (char *tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save))
            json_array_append_new(statuses, json_string(tok));
        free(copy);
    }
    return json_pack("[I, o]", (json_int_t)id, statuses);
}

/* Builds the args object from --args and KEY=VALUE words; NULL (error
 * printed) on a bad word. */
static json_t *build_args(cli_t *cli, const char *args_json, char **words, int nwords,
                          int *rc)
{
    json_t *args;
    *rc = CLI_EXIT_USAGE;
    if (args_json) {
        json_error_t err;
        args = json_loads(args_json, JSON_REJECT_DUPLICATES, &err);
        if (!json_is_object(args)) {
            json_decref(args);
            cli_usage(cli, "--args must be a JSON object (%s)",
                      args ? "not an object" : err.text);
            return NULL;
        }
    } else {
        args = json_object();
    }
    for (int i = 0; i < nwords; i++) {
        const char *eq = strchr(words[i], '=');
        if (!eq || eq == words[i]) {
            json_decref(args);
            cli_usage(cli, "argument '%s' is not KEY=VALUE", words[i]);
            return NULL;
        }
        json_t *value = cli_parse_value(eq + 1);
        if (!value || json_object_setn_new(args, words[i], (size_t)(eq - words[i]), value) < 0) {
            json_decref(args);
            cli_usage(cli, "argument '%s' is not valid UTF-8", words[i]);
            return NULL;
        }
    }
    *rc = 0;
    return args;
}

int cmd_submit(cli_t *cli, int argc, char **argv)
{
    cli_opt_t opts[] = {
        {.name = "priority", .short_name = 'p', .has_arg = true},
        {.name = "depends", .short_name = 'd', .has_arg = true},
        {.name = "args", .short_name = 'a', .has_arg = true},
        {.name = "ignore-drain", .has_arg = false},
        {.name = "wait", .short_name = 'w', .has_arg = false},
        {.name = "poll", .has_arg = false},
        {0},
    };
    enum { O_PRIO, O_DEPS, O_ARGS, O_IGNORE_DRAIN, O_WAIT, O_POLL };
    char **pos;
    int npos, rc;
    bool done;
    json_t *op = NULL, *ops = NULL;
    rc = cli_parse(cli, argc, argv, opts, &pos, &npos, &done);
    if (done)
        goto out;
    if (npos < 1) {
        rc = cli_usage(cli, "missing OP");
        goto out;
    }
    json_t *args = build_args(cli, opts[O_ARGS].value, pos + 1, npos - 1, &rc);
    if (!args)
        goto out;
    op = json_pack("{s:s, s:o}", "op", pos[0], "args", args);
    if (!op) {
        rc = cli_usage(cli, "OP '%s' is not valid UTF-8", pos[0]);
        goto out;
    }
    if (opts[O_PRIO].count) {
        long long prio;
        if (cli_parse_priority(opts[O_PRIO].value, &prio) < 0) {
            rc = cli_usage(cli, "invalid priority '%s' (" CLI_PRIORITY_HELP ")",
                           opts[O_PRIO].value);
            goto out;
        }
        json_object_set_new(op, "priority", json_integer(prio));
    }
    if (opts[O_DEPS].count) {
        json_t *deps = json_array();
        json_object_set_new(op, "depends", deps);
        for (int i = 0; i < opts[O_DEPS].count; i++) {
            json_t *d = parse_depends(opts[O_DEPS].values[i]);
            if (!d) {
                rc = cli_usage(cli, "invalid dependency '%s' (ID or ID:STATUS,STATUS...)",
                               opts[O_DEPS].values[i]);
                goto out;
            }
            json_array_append_new(deps, d);
        }
    }
    ops = json_pack("[O]", op);
    jobq_client_t *c = cli_client(cli);
    uint64_t id;
    if (!c) {
        rc = CLI_EXIT_FAIL;
        goto out;
    }
    bool wait = opts[O_WAIT].count > 0;
    if (opts[O_POLL].count && !wait) {
        rc = cli_usage(cli, "--poll needs --wait");
        goto out;
    }
    /* A token makes the one retry after a lost reply safe (no second job). */
    char token[33];
    jobq_new_token(token, sizeof token);
    if (jobq_submit_job_ex(c, ops, opts[O_IGNORE_DRAIN].count > 0, token, 1, &id,
                           cli->timeout_ms) < 0) {
        rc = cli_call_failed(cli);
        if (wait && rc == CLI_EXIT_FAIL)
            rc = 2; /* --wait: watch's "other failure" */
        goto out;
    }
    printf("%llu\n", (unsigned long long)id);
    fflush(stdout);
    rc = wait ? cli_follow_job(cli, id, opts[O_POLL].count > 0) : CLI_EXIT_OK;
out:
    json_decref(op);
    json_decref(ops);
    cli_opts_free(opts);
    free(pos);
    return rc;
}

/* Normalises the input of submit-many into a list of opcode lists; NULL
 * (error printed) when a job has neither form. */
static json_t *normalise_jobs(cli_t *cli, json_t *input)
{
    if (!json_is_array(input)) {
        cli_error(cli, "input must be a JSON list of jobs");
        return NULL;
    }
    json_t *jobs = json_array();
    size_t i;
    json_t *job;
    json_array_foreach(input, i, job) {
        json_t *ops = json_is_object(job) ? json_object_get(job, "ops") : job;
        if (!json_is_array(ops)) {
            cli_error(cli, "job %zu: expected a list of opcodes or an object with \"ops\"", i);
            json_decref(jobs);
            return NULL;
        }
        /* Priorities by name become numbers; anything else goes as it is
         * and the daemon judges it. */
        size_t k;
        json_t *op;
        json_array_foreach(ops, k, op) {
            json_t *p = json_object_get(op, "priority");
            long long prio;
            if (json_is_string(p) && cli_parse_priority(json_string_value(p), &prio) == 0)
                json_object_set_new(op, "priority", json_integer(prio));
        }
        json_array_append(jobs, ops);
    }
    return jobs;
}

int cmd_submit_many(cli_t *cli, int argc, char **argv)
{
    cli_opt_t opts[] = {
        {.name = "ignore-drain", .has_arg = false},
        {0},
    };
    char **pos;
    int npos, rc;
    bool done;
    json_t *input = NULL, *jobs = NULL, *result = NULL;
    rc = cli_parse(cli, argc, argv, opts, &pos, &npos, &done);
    if (done)
        goto out;
    if (npos != 1) {
        rc = cli_usage(cli, npos ? "too many arguments" : "missing FILE");
        goto out;
    }
    json_error_t err;
    bool from_stdin = strcmp(pos[0], "-") == 0;
    FILE *f = from_stdin ? stdin : fopen(pos[0], "r");
    if (!f) {
        cli_error(cli, "cannot open %s: %s", pos[0], strerror(errno));
        rc = CLI_EXIT_USAGE;
        goto out;
    }
    input = json_loadf(f, JSON_REJECT_DUPLICATES, &err);
    int read_errno = ferror(f) ? errno : 0;
    if (!from_stdin)
        fclose(f);
    if (!input) {
        const char *name = from_stdin ? "stdin" : pos[0];
        if (read_errno)
            cli_error(cli, "cannot read %s: %s", name, strerror(read_errno));
        else if (err.line > 0)
            cli_error(cli, "%s: line %d, column %d: %s", name, err.line, err.column, err.text);
        else
            cli_error(cli, "%s: %s", name, err.text);
        rc = CLI_EXIT_USAGE;
        goto out;
    }
    jobs = normalise_jobs(cli, input);
    if (!jobs) {
        rc = CLI_EXIT_USAGE;
        goto out;
    }
    jobq_client_t *c = cli_client(cli);
    if (!c) {
        rc = CLI_EXIT_FAIL;
        goto out;
    }
    char token[33];
    jobq_new_token(token, sizeof token);
    /* The daemon keeps a tokened batch's answer: above its cap the batch
     * goes without a token (and so without the retry). */
    bool tokened = json_array_size(jobs) <= JOBQ_MAX_JOBS_PER_TOKEN;
    result = jobq_submit_many_jobs_ex(c, jobs, opts[0].count > 0, tokened ? token : NULL, 1,
                                      cli->timeout_ms);
    if (!result) {
        rc = cli_call_failed(cli);
        goto out;
    }
    rc = CLI_EXIT_OK;
    size_t i;
    json_t *entry;
    json_array_foreach(result, i, entry) {
        json_t *ok = json_array_get(entry, 0), *val = json_array_get(entry, 1);
        if (!json_is_true(ok))
            rc = CLI_EXIT_FAIL;
        if (cli->json)
            continue;
        if (json_is_true(ok) && json_is_integer(val)) {
            printf("%lld\n", (long long)json_integer_value(val));
        } else {
            char *msg = cli_fmt_value(val);
            printf("error: %s\n", msg ? msg : "?");
            free(msg);
        }
    }
    if (cli->json)
        cli_print_json(result);
out:
    json_decref(input);
    json_decref(jobs);
    json_decref(result);
    cli_opts_free(opts);
    free(pos);
    return rc;
}
