/* jobq_cli.h: shared pieces of the jobq command-line tool.
 *
 * The CLI is split by concern: jobq_cli.c (main, global options, command
 * table, help), jobq_cli_opts.c (option parsing, number parsing, error
 * reporting), jobq_cli_fmt.c (timestamps and value formatting),
 * jobq_cli_prio.c (priorities by name),
 * jobq_cli_submit.c, jobq_cli_query.c, jobq_cli_watch.c,
 * jobq_cli_monitor.c and jobq_cli_admin.c (the commands).
 * Every command is a function taking the parsed global state and its own
 * argv (argv[0] is the command name) and returning the process exit code.
 * Single-threaded throughout.
 */
#ifndef JOBQ_CLI_H
#define JOBQ_CLI_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "jobq.h"

/* Exit codes shared by all commands. */
#define CLI_EXIT_OK 0
#define CLI_EXIT_FAIL 1  /* the operation failed (daemon error, no daemon...) */
#define CLI_EXIT_USAGE 2 /* bad command line */
#define CLI_EXIT_NOT_RUNNING 3 /* nothing listens at the endpoint (jobqd stopped) */

#define CLI_DEFAULT_TIMEOUT_MS 30000

typedef struct cli cli_t;
typedef int (*cli_cmd_fn)(cli_t *cli, int argc, char **argv);

/* One subcommand. */
typedef struct {
    const char *name;     /* command word */
    cli_cmd_fn fn;        /* implementation */
    const char *synopsis; /* arguments, for the usage line */
    const char *summary;  /* one line, for the command list */
    const char *help;     /* the rest of the help text (options, details) */
} cli_command_t;

/* State shared by every command. */
struct cli {
    const char *endpoint;         /* -s/--server, $JOBQ_ENDPOINT or the default */
    int timeout_ms;               /* -t/--timeout: per-call timeout */
    bool json;                    /* --json: machine-readable output */
    const cli_command_t *cmd;     /* command being run */
    jobq_client_t *client;        /* connection, created on first use */
    const char *key;              /* --key, $JOBQ_KEY: CURVE key file (tcp://) */
    const char *server_key;       /* --server-key, $JOBQ_SERVER_KEY */
};

/* One command-specific option for cli_parse. */
typedef struct {
    const char *name;    /* long name without "--" */
    char short_name;     /* single letter, 0 for none */
    bool has_arg;        /* takes a value */
    int count;           /* filled: how many times it was given */
    const char *value;   /* filled: the last value */
    const char **values; /* filled: every value (malloc'ed, NULL when none) */
} cli_opt_t;

/* Parses a command's argv (argv[0] is the command), handling the common
 * options (-s, -t, --json, -h) and the command's own opts (an array ending
 * with a zeroed entry; may be NULL). Positional words are stored in the
 * malloc'ed *pos (count in *npos). Returns 0, or an exit code (usage error,
 * or 0 after printing --help) with *done set. */
int cli_parse(cli_t *cli, int argc, char **argv, cli_opt_t *opts, char ***pos, int *npos,
              bool *done);
void cli_opts_free(cli_opt_t *opts);

/* The client, connected on first use; NULL (error printed) if the
 * endpoint is invalid. */
jobq_client_t *cli_client(cli_t *cli);

/* Error reporting: one line on stderr, prefixed with "jobq: CMD: ". */
void cli_error(cli_t *cli, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Usage error: prints the line and a hint; returns CLI_EXIT_USAGE. */
int cli_usage(cli_t *cli, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Reports the client's last failure; returns CLI_EXIT_NOT_RUNNING when
 * the daemon is not running, else CLI_EXIT_FAIL. */
int cli_call_failed(cli_t *cli);
void cli_print_help(const cli_command_t *cmd);
/* Help of the command being run (cli->cmd; NULL: of jobq), with the
 * daemon's opcodes after submit's. */
void cli_help(cli_t *cli);

/* Number parsing; each returns 0 or -1 when the word is not valid. */
int cli_parse_job_id(const char *s, uint64_t *out);    /* integer >= 1 */
int cli_parse_int(const char *s, long long *out);       /* any integer */
int cli_parse_seconds(const char *s, double *out);      /* number >= 0, optional s/m/h/d */
/* Priorities by name (jobq_cli_prio.c): high (-10), normal (0), low (10).
 * cli_parse_priority takes a name (any case) or an integer; 0 or -1. */
int cli_parse_priority(const char *s, long long *out);
#define CLI_PRIORITY_HELP "high, normal or low (or -10, 0, 10)"
/* The name of a priority value, or NULL when it has none. */
const char *cli_priority_name(long long p);
/* A copy of a priority or list of priorities with each named value
 * replaced by its name (other values as they are). New reference. */
json_t *cli_priority_names(const json_t *v);
/* A value from the command line: JSON when it parses as JSON, else a string. */
json_t *cli_parse_value(const char *s);

/* Output helpers (jobq_cli_fmt.c). */
void cli_print_json(const json_t *v); /* compact, one line */
/* JSON text of v, reals in their shortest exact form (0.098, not
 * 0.098000000000000004); compact, or with ", " and ": " separators.
 * Caller frees; NULL when out of memory. */
char *cli_json_text(const json_t *v, bool compact);
/* The shortest "%g" text of d that reads back as d, with ".0" added to a
 * whole number (it stays a real). */
void cli_format_real(double d, char *buf, size_t len);
/* ISO-8601 local time with microseconds for a [sec, usec] timestamp into
 * buf; "-" for null or anything else. Returns buf. */
const char *cli_fmt_ts(const json_t *ts, char *buf, size_t len);
/* Seconds between two timestamps, or a negative value if either is unset. */
double cli_ts_diff(const json_t *from, const json_t *to);
/* Text of a value for tables: strings as is, null as "-", other scalars as
 * JSON, containers as compact JSON. Caller frees. */
char *cli_fmt_value(const json_t *v);
/* Text of a field value in a table, knowing the field's name (timestamps
 * formatted, per-opcode lists joined by ","). Caller frees. */
char *cli_fmt_field(const char *field, const json_t *v);
/* Text of a log entry [serial, ts, type, message] as "TIMESTAMP message"
 * (with " [type]" before the message when the type is not "message").
 * Caller frees. */
char *cli_fmt_log_entry(const json_t *entry);

/* Follows job id until it ends, printing its log entries and status
 * changes (jobq_cli_watch.c): over the event stream, or with
 * wait_for_job_change when poll is set or the stream is unusable. Returns
 * watch's exit code: 0 success, 1 error or canceled, 2 other failure, 3
 * jobqd not running. */
int cli_follow_job(cli_t *cli, uint64_t id, bool poll);

/* Commands. */
int cmd_submit(cli_t *cli, int argc, char **argv);
int cmd_submit_many(cli_t *cli, int argc, char **argv);
int cmd_list(cli_t *cli, int argc, char **argv);
int cmd_info(cli_t *cli, int argc, char **argv);
int cmd_watch(cli_t *cli, int argc, char **argv);
int cmd_monitor(cli_t *cli, int argc, char **argv);
int cmd_cancel(cli_t *cli, int argc, char **argv);
int cmd_priority(cli_t *cli, int argc, char **argv);
int cmd_archive(cli_t *cli, int argc, char **argv);
int cmd_autoarchive(cli_t *cli, int argc, char **argv);
int cmd_drain(cli_t *cli, int argc, char **argv);
int cmd_stats(cli_t *cli, int argc, char **argv);
int cmd_shutdown(cli_t *cli, int argc, char **argv);
int cmd_ping(cli_t *cli, int argc, char **argv);
int cmd_list_fields(cli_t *cli, int argc, char **argv);
int cmd_list_opcodes(cli_t *cli, int argc, char **argv);
int cmd_version(cli_t *cli, int argc, char **argv);
int cmd_keygen(cli_t *cli, int argc, char **argv);
int cmd_http_token(cli_t *cli, int argc, char **argv);
int cmd_nodes(cli_t *cli, int argc, char **argv);

/* Prints the daemon's opcodes for `jobq submit --help` when it answers
 * within CLI_HELP_DAEMON_TIMEOUT_MS; prints nothing otherwise. */
#define CLI_HELP_DAEMON_TIMEOUT_MS 500
void cli_help_opcodes(cli_t *cli);

#endif
