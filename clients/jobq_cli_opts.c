/* jobq_cli_opts.c: command-line parsing and error reporting for jobq.
 *
 * A small hand-written option parser rather than getopt_long, for one
 * reason: job priorities and ages are negative numbers ("jobq priority 7
 * -10", "jobq autoarchive -1"), which getopt would take for options. Here a
 * word starting with '-' followed by a digit or '.' is a positional
 * argument, "-" alone is one too (stdin), and "--" ends the options.
 * Options may come before or after positional words; long options take
 * their value as "--name=value" or "--name value", short ones as "-x value"
 * or "-xvalue". A command's own options are looked up before the common
 * ones, which lets "autoarchive --timeout" mean its work budget while -t
 * keeps meaning the call timeout.
 */
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "jobq_cli.h"

enum { COMMON_SERVER, COMMON_TIMEOUT, COMMON_JSON, COMMON_HELP, COMMON_KEY, COMMON_SERVER_KEY,
       COMMON__COUNT };

static const struct {
    const char *name;
    char short_name;
    bool has_arg;
} common_opts[COMMON__COUNT] = {
    [COMMON_SERVER] = {"server", 's', true},
    [COMMON_TIMEOUT] = {"timeout", 't', true},
    [COMMON_JSON] = {"json", 0, false},
    [COMMON_HELP] = {"help", 'h', false},
    [COMMON_KEY] = {"key", 0, true},
    [COMMON_SERVER_KEY] = {"server-key", 0, true},
};

static void verror(cli_t *cli, const char *fmt, va_list ap)
{
    if (cli && cli->cmd)
        fprintf(stderr, "jobq: %s: ", cli->cmd->name);
    else
        fprintf(stderr, "jobq: ");
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
}

void cli_error(cli_t *cli, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    verror(cli, fmt, ap);
    va_end(ap);
}

int cli_usage(cli_t *cli, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (cli && cli->cmd)
        fprintf(stderr, "jobq: %s: %s (see 'jobq %s --help')\n", cli->cmd->name, msg,
                cli->cmd->name);
    else
        fprintf(stderr, "jobq: %s (see 'jobq --help')\n", msg);
    return CLI_EXIT_USAGE;
}

int cli_call_failed(cli_t *cli)
{
    jobq_client_t *c = cli->client;
    jobq_code_t code = c ? jobq_client_status(c) : JOBQ_ERR_TRANSPORT;
    const char *reason = c ? jobq_client_reason(c) : "not connected";
    if (code == JOBQ_ERR_NOT_RUNNING) {
        fprintf(stderr, "jobq: %s\n", reason); /* "jobqd is not running at ..." */
        return CLI_EXIT_NOT_RUNNING;
    }
    if (code == JOBQ_ERR_TIMEOUT || code == JOBQ_ERR_TRANSPORT)
        fprintf(stderr, "jobq: cannot reach the daemon at %s: %s\n",
                c ? jobq_client_endpoint(c) : cli->endpoint, reason);
    else
        cli_error(cli, "%s: %s", jobq_code_name(code), reason);
    return CLI_EXIT_FAIL;
}

jobq_client_t *cli_client(cli_t *cli)
{
    if (!cli->client) {
        cli->client = jobq_client_new(cli->endpoint);
        if (!cli->client) {
            cli_error(cli, "invalid endpoint '%s'", cli->endpoint);
        } else if (jobq_client_set_keys(cli->client, cli->key, cli->server_key) < 0) {
            cli_error(cli, "%s", jobq_client_reason(cli->client));
            jobq_client_destroy(&cli->client);
        }
    }
    return cli->client;
}

static bool looks_like_number(const char *a)
{
    return a[0] == '-' && (isdigit((unsigned char)a[1]) || a[1] == '.');
}

/* Records one occurrence of a command option. */
static int record(cli_opt_t *o, const char *value)
{
    if (value) {
        const char **v = realloc(o->values, (size_t)(o->count + 1) * sizeof *v);
        if (!v)
            return -1;
        o->values = v;
        v[o->count] = value;
        o->value = value;
    }
    o->count++;
    return 0;
}

/* Applies a common option. Returns 0, or an exit code with *done set. */
static int apply_common(cli_t *cli, int which, const char *value, bool *done)
{
    double secs;
    switch (which) {
    case COMMON_SERVER:
        if (!*value) {
            *done = true;
            return cli_usage(cli, "empty endpoint");
        }
        cli->endpoint = value;
        return 0;
    case COMMON_TIMEOUT:
        if (cli_parse_seconds(value, &secs) < 0 || secs <= 0 || secs > 2e6) {
            *done = true;
            return cli_usage(cli, "invalid timeout '%s' (seconds, greater than 0)", value);
        }
        cli->timeout_ms = (int)ceil(secs * 1000);
        return 0;
    case COMMON_JSON:
        cli->json = true;
        return 0;
    case COMMON_KEY:
        cli->key = value;
        return 0;
    case COMMON_SERVER_KEY:
        cli->server_key = value;
        return 0;
    default: /* COMMON_HELP */
        *done = true;
        cli_help(cli);
        return CLI_EXIT_OK;
    }
}

/* An endpoint a daemon can be reached at: ipc://PATH or tcp://HOST:PORT
 * (inproc:// is in-process only, so never jobqd's), or several separated
 * by commas (a cluster's nodes). */
static bool valid_endpoint(const char *e)
{
    const char *comma = strchr(e, ',');
    if (comma) {
        char *first = strndup(e, (size_t)(comma - e));
        bool ok = first && valid_endpoint(first) && valid_endpoint(comma + 1);
        free(first);
        return ok;
    }
    if (strncmp(e, "ipc://", 6) == 0)
        return e[6] != '\0';
    if (strncmp(e, "tcp://", 6) != 0)
        return false;
    const char *host = e + 6, *colon = strrchr(host, ':');
    if (!colon || colon == host || !colon[1])
        return false;
    char *end;
    errno = 0;
    long port = strtol(colon + 1, &end, 10);
    return !errno && !*end && isdigit((unsigned char)colon[1]) && port >= 1 && port <= 65535;
}

/* Once a command's options are parsed the endpoint is final: check it. */
static int check_endpoint(cli_t *cli, bool *done)
{
    if (!cli->cmd || strcmp(cli->cmd->name, "help") == 0 || valid_endpoint(cli->endpoint))
        return 0;
    *done = true;
    const char *env = getenv("JOBQ_ENDPOINT");
    return cli_usage(cli, "invalid endpoint '%s'%s: expected ipc://PATH or tcp://HOST:PORT",
                     cli->endpoint, env && env == cli->endpoint ? " (from $JOBQ_ENDPOINT)" : "");
}

int cli_parse(cli_t *cli, int argc, char **argv, cli_opt_t *opts, char ***pos, int *npos,
              bool *done)
{
    *done = false;
    *npos = 0;
    *pos = calloc((size_t)argc + 1, sizeof **pos);
    if (!*pos) {
        *done = true;
        cli_error(cli, "out of memory");
        return CLI_EXIT_FAIL;
    }
    bool only_pos = false;
    for (int i = 1; i < argc; i++) {
        char *a = argv[i];
        if (only_pos || a[0] != '-' || a[1] == '\0' || looks_like_number(a)) {
            (*pos)[(*npos)++] = a;
            continue;
        }
        if (strcmp(a, "--") == 0) {
            only_pos = true;
            continue;
        }
        const char *name = NULL, *inline_val = NULL;
        size_t name_len = 0;
        char letter = 0;
        if (a[1] == '-') {
            name = a + 2;
            const char *eq = strchr(name, '=');
            name_len = eq ? (size_t)(eq - name) : strlen(name);
            inline_val = eq ? eq + 1 : NULL;
        } else {
            letter = a[1];
            inline_val = a[2] ? a + 2 : NULL;
        }
        /* Find the option: the command's own first, then the common ones. */
        cli_opt_t *own = NULL;
        int common = -1;
        for (cli_opt_t *o = opts; o && o->name; o++)
            if (name ? strlen(o->name) == name_len && strncmp(o->name, name, name_len) == 0
                     : o->short_name == letter) {
                own = o;
                break;
            }
        for (int c = 0; !own && c < COMMON__COUNT; c++)
            if (name ? strlen(common_opts[c].name) == name_len &&
                           strncmp(common_opts[c].name, name, name_len) == 0
                     : common_opts[c].short_name == letter) {
                common = c;
                break;
            }
        if (!own && common < 0) {
            *done = true;
            return cli_usage(cli, "unknown option '%s'", a);
        }
        bool has_arg = own ? own->has_arg : common_opts[common].has_arg;
        const char *value = NULL;
        if (has_arg) {
            if (inline_val)
                value = inline_val;
            else if (i + 1 < argc)
                value = argv[++i];
            else {
                *done = true;
                return cli_usage(cli, "option '%s' needs a value", a);
            }
        } else if (inline_val) {
            *done = true;
            return cli_usage(cli, "option '%s' takes no value", a);
        }
        if (own) {
            if (record(own, value) < 0) {
                *done = true;
                cli_error(cli, "out of memory");
                return CLI_EXIT_FAIL;
            }
        } else {
            int rc = apply_common(cli, common, value, done);
            if (*done)
                return rc;
        }
    }
    return check_endpoint(cli, done);
}

void cli_opts_free(cli_opt_t *opts)
{
    for (cli_opt_t *o = opts; o && o->name; o++) {
        free(o->values);
        o->values = NULL;
    }
}

int cli_parse_int(const char *s, long long *out)
{
    if (!s || !*s || isspace((unsigned char)*s))
        return -1;
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || *end)
        return -1;
    *out = v;
    return 0;
}

int cli_parse_job_id(const char *s, uint64_t *out)
{
    long long v;
    if (cli_parse_int(s, &v) < 0 || v < 1)
        return -1;
    *out = (uint64_t)v;
    return 0;
}

int cli_parse_seconds(const char *s, double *out)
{
    if (!s || !*s || isspace((unsigned char)*s))
        return -1;
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || !isfinite(v) || v < 0)
        return -1;
    double mult = 1;
    if (*end) {
        switch (*end) {
        case 's': mult = 1; break;
        case 'm': mult = 60; break;
        case 'h': mult = 3600; break;
        case 'd': mult = 86400; break;
        default: return -1;
        }
        if (end[1])
            return -1;
    }
    *out = v * mult;
    return 0;
}

json_t *cli_parse_value(const char *s)
{
    json_error_t err;
    json_t *v = json_loads(s, JSON_DECODE_ANY | JSON_REJECT_DUPLICATES, &err);
    return v ? v : json_string(s);
}
