/* jobq_cli.c: main() of jobq, the command-line client of the jobq daemon.
 *
 * In the spirit of Ganeti's gnt-job: one subcommand per queue operation,
 * text for people by default and JSON with --json. This file holds the
 * command table with every help text, the global options and the dispatch;
 * the commands live in jobq_cli_submit.c, jobq_cli_query.c,
 * jobq_cli_watch.c and jobq_cli_admin.c. docs/cli.md is the reference and
 * must match what is written here.
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "jobq_cli.h"
#include "paths.h"

/* The endpoint of the daemon this jobq goes with: the build tree's, or an
 * installed jobq's the installed daemon's (paths.h). */
static void default_endpoint(char *buf, size_t len)
{
    snprintf(buf, len, "ipc://%s/jobq.sock", jq_default_dirs().run_dir);
}

static int cmd_help(cli_t *cli, int argc, char **argv);

static const cli_command_t commands[] = {
    {"submit", cmd_submit, "OP [KEY=VALUE...] [OPTIONS]", "submit a job of one opcode",
     "Each VALUE is read as JSON when it is valid JSON (duration=0.2 is a number,\n"
     "fail=true a boolean, name=null null, 'tags=[1,2]' a list) and taken as a\n"
     "string otherwise (name=foo). Prints the new job id alone on stdout.\n"
     "With --wait, then follows the job as 'jobq watch' does and exits with\n"
     "watch's codes (a refused submission is then 2, jobqd not running 3).\n"
     "The opcodes and their arguments: 'jobq list-opcodes' (listed below when\n"
     "the daemon answers).\n"
     "\n"
     "Options:\n"
     "  -a, --args JSON          opcode arguments as a JSON object; KEY=VALUE words\n"
     "                           are merged into it and win over its keys\n"
     "  -p, --priority P         opcode priority: high (-10), normal (0, the\n"
     "                           default) or low (10), by name or number\n"
     "  -d, --depends ID[:S,S]   depend on job ID finishing with one of the statuses\n"
     "                           S (success, error, canceled); without statuses any\n"
     "                           final status will do, except that a canceled\n"
     "                           dependency cancels this job. Repeatable.\n"
     "      --ignore-drain       submit even while the queue is drained\n"
     "  -w, --wait               follow the job until it ends (see watch)\n"
     "      --poll               with --wait: use wait_for_job_change, not the\n"
     "                           event stream\n"},
    {"submit-many", cmd_submit_many, "FILE [OPTIONS]", "submit several jobs in one call",
     "FILE ('-' for stdin) holds a JSON list of jobs. A job is a list of opcodes,\n"
     "or an object {\"ops\": [opcode...]}; an opcode is an object\n"
     "{\"op\": NAME, \"args\": {...}, \"priority\": P, \"depends\": [[ID, [S...]]...]}\n"
     "where only \"op\" is required; P is a number or \"high\", \"normal\", \"low\". A negative dependency ID is relative: -1 is\n"
     "the previous job of the same FILE, -2 the one before it.\n"
     "Prints one line per job: its id, or \"error: MESSAGE\". Exits 1 when any\n"
     "job was refused, 2 when FILE cannot be read (the error names FILE and\n"
     "the system's reason) or is not such a list (line and column).\n"
     "\n"
     "Options:\n"
     "      --ignore-drain       submit even while the queue is drained\n"},
    {"list", cmd_list, "[ID...] [OPTIONS]", "list jobs as a table",
     "Lists every live job in id order (paging through the daemon's answers as\n"
     "needed), one row per job; given IDs, just those jobs, in that order (live\n"
     "or archived; a job that does not exist is reported on stderr and makes\n"
     "the exit code 1). Default columns: id, status, priority, summary.\n"
     "Per-opcode lists are joined by \",\", timestamps are shown as ISO-8601 local\n"
     "time, priorities by name (high, normal, low) when they have one, a missing\n"
     "value as \"-\".\n"
     "\n"
     "Options:\n"
     "  -o, --output FIELDS      comma-separated fields to show; \"+FIELDS\" adds\n"
     "                           them to the default columns. Fields: id, status,\n"
     "                           priority, archived, ops, opresult, opstatus, oplog,\n"
     "                           opstart, opexec, opend, oppriority, summary,\n"
     "                           received_ts, start_ts, end_ts, log_serial,\n"
     "                           change_serial, worker, opworker, opattempt,\n"
     "                           owner\n"
     "                           ('jobq list-fields' describes them)\n"
     "      --status S[,S...]    only jobs with one of these statuses (queued,\n"
     "                           waiting, canceling, running, canceled, success,\n"
     "                           error); repeatable\n"
     "  -n, --limit N            show at most N jobs (the first N in id order)\n"
     "      --page-size N        rows asked for per request (default 10000)\n"
     "      --archived           include archived jobs\n"
     "      --no-headers         do not print the header line\n"
     "With --json, prints {\"fields\": [...], \"rows\": [[...]...], \"more\": B},\n"
     "where more is true when --limit left jobs out; priorities are numbers.\n"},
    {"list-fields", cmd_list_fields, "", "list the fields list -o accepts",
     "Prints each query field of the daemon with a one-line description.\n"
     "With --json, prints the daemon's answer [{\"name\", \"description\"}...].\n"},
    {"list-opcodes", cmd_list_opcodes, "", "list the opcodes the daemon runs",
     "Prints each opcode the daemon runs, with a description, then one line per\n"
     "argument: its name, type, whether required or its default, and what it does.\n"
     "With --json, prints the daemon's answer [{\"name\", \"description\",\n"
     "\"source\", \"args\": [{\"name\", \"type\", \"required\", \"default\",\n"
     "\"description\"}...]}...].\n"},
    {"info", cmd_info, "ID...", "show the details of jobs",
     "For each job: status, priority (by name when it has one), whether archived, received/start/end times,\n"
     "and for each opcode its name, status, priority, summary, arguments (JSON),\n"
     "dependencies, timestamps, result (JSON) and log entries. Timestamps are\n"
     "ISO-8601 local time with microseconds. A job that does not exist is\n"
     "reported on stderr (exit code 1); the others are still shown.\n"
     "With --json, prints a list with one object per job found, keyed by field.\n"},
    {"watch", cmd_watch, "ID [--poll]", "follow a job until it ends",
     "Prints the job's status when watching starts, then each log entry once and\n"
     "each status change, until the job ends (the final status is the last line).\n"
     "Each line starts with the time since the watch started: \"[+1.234s] \",\n"
     "then \"status: STATUS\" or a log entry \"TIMESTAMP message\" (entries of\n"
     "another type than \"message\": \"TIMESTAMP [type] message\"). A job that\n"
     "ends error or canceled is explained before its final status, as in\n"
     "  error: opcode 0 (test.delay) failed: MESSAGE\n"
     "  canceled: opcode 0 (test.delay) was canceled: MESSAGE\n"
     "(the first such opcode and its result's message). With --json, each line\n"
     "is {\"status\": S, \"elapsed\": SECONDS} (the final one of an error or\n"
     "canceled job with \"error\": {\"opcode\": I, \"op\": NAME, \"message\": M}) or\n"
     "{\"log\": [serial, timestamp, type, message], \"elapsed\": SECONDS}.\n"
     "Follows the daemon's event stream (the endpoint is taken from ping); when it\n"
     "cannot be reached (no endpoint published, no socket file, nothing received\n"
     "within 3 s) it falls back to wait_for_job_change. -t bounds each request;\n"
     "each wait_for_job_change waits at most half of it on the daemon (30 s at\n"
     "most), so no call outlives -t. When jobqd stops or dies meanwhile, watch\n"
     "says so at once.\n"
     "\n"
     "Options:\n"
     "      --poll               use wait_for_job_change instead of the stream\n"
     "\n"
     "Exit codes: 0 the job ended success; 1 it ended error or canceled; 2 any\n"
     "other failure (no such job, daemon unreachable, bad command line); 3 jobqd\n"
     "is not running (or stopped while watching).\n"},
    {"monitor", cmd_monitor, "[--events] [OPTIONS]", "live view of the whole queue",
     "Built from the daemon's event stream alone (a snapshot, then every change).\n"
     "Without --events: a table of counts by status, the active jobs (waiting,\n"
     "running, canceling: elapsed time, current opcode, last log line seen) and\n"
     "the most recently finished jobs; redrawn in place on a terminal, printed\n"
     "every second (blank-line separated) when stdout is not a terminal.\n"
     "With --events: one line per event,\n"
     "  TIME seq=S job=ID serial=N KIND STATUS [opI=STATUS...] [logN=\"MSG\"...]\n"
     "(MSG a JSON string: quotes, backslashes, newlines and control characters\n"
     "escaped, so an event is always one line)\n"
     "and \"TIME resync REASON seq=S epoch=E jobs=N\" for each snapshot (the first\n"
     "line, and after the daemon restarted or events were lost for good).\n"
     "With --json (implies --events): one JSON object per event, as libjobq\n"
     "delivers it: {\"type\": \"change\", \"seq\", \"epoch\", \"job\", \"serial\",\n"
     "\"kind\", \"recovered\", \"change\": RECORD} or {\"type\": \"resync\", \"reason\",\n"
     "\"seq\", \"epoch\", \"fields\", \"rows\"}.\n"
     "\n"
     "Options:\n"
     "      --events             one line per event instead of the table\n"
     "  -n, --count N            stop after N change events (resyncs not counted)\n"
     "      --duration S         stop after S seconds (s/m/h/d suffixes allowed);\n"
     "                           requests are cut short to keep to it\n"
     "      --recent N           finished jobs shown in the table (default 10)\n"
     "      --batched            read the batched stream (many events a message):\n"
     "                           the same events, cheaper for a busy daemon\n"
     "Over tcp://, the daemon must publish events on TCP too (jobqd --publish\n"
     "tcp://HOST:PORT); monitor says so when it does not.\n"
     "Exit codes: 0 stopped by --count or --duration; 1 the daemon could not be\n"
     "reached, publishes no usable event endpoint, or a request failed; 2 bad\n"
     "command line; 3 jobqd is not running (or stopped while monitoring).\n"},
    {"cancel", cmd_cancel, "ID...", "cancel jobs",
     "A queued job is canceled at once; a waiting or running one is marked\n"
     "canceling and ends canceled shortly after. Cancels each job in turn and\n"
     "prints the daemon's message, one line per job; when a job cannot be\n"
     "canceled (not found, already finished or canceling) its message goes to\n"
     "stderr and the exit code is 1. A request the daemon refuses or does not\n"
     "answer stops there (exit code 1; 3 when jobqd is not running).\n"
     "With --json, prints the daemon's answer [ok, message], one line per job.\n"},
    {"priority", cmd_priority, "ID P | --priority P ID...",
     "change the priority of jobs' pending opcodes",
     "P is high (-10), normal (0) or low (10), by name or number; any other\n"
     "integer is sent and refused by the daemon (InvalidPriority). The first\n"
     "form changes one job; with --priority (-p), as gnt-job change-priority,\n"
     "every word is a job ID. Prints the daemon's message, one line per job;\n"
     "when nothing changed (job not found, finished, canceling, no pending\n"
     "opcode) the message goes to stderr and the exit code is 1. A request the\n"
     "daemon refuses (InvalidPriority) or does not answer stops there.\n"
     "\n"
     "Options:\n"
     "  -p, --priority P         the new priority; every word is then a job ID\n"
     "With --json, prints the daemon's answer [ok, message], one line per job.\n"},
    {"archive", cmd_archive, "ID...", "move finished jobs to the archive",
     "Archives each job in turn. A job that is not found, already archived or\n"
     "not finished is reported on stderr and makes the exit code 1.\n"
     "With --json, prints [{\"id\": ID, \"archived\": B}...].\n"},
    {"autoarchive", cmd_autoarchive, "AGE [--timeout S]", "archive old finished jobs",
     "Archives the finished jobs whose end (else start, else received) time is\n"
     "more than AGE ago. AGE is in seconds, with an optional suffix s, m, h or d\n"
     "(30s, 5m, 2h, 1d); \"all\" (or -1) archives every finished job.\n"
     "Prints how many jobs were archived and how many were left unexamined\n"
     "because the time budget ran out (run it again for those).\n"
     "\n"
     "Options:\n"
     "      --timeout S          work budget of the daemon in seconds (s/m/h/d\n"
     "                           suffixes allowed; rounded up to whole seconds).\n"
     "                           Default: (call timeout - 1) / 2 rounded down, at\n"
     "                           least 1: 14 s with the default call timeout.\n"
     "                           Here, after the command, --timeout is this budget;\n"
     "                           use -t, or --timeout before the command, for the\n"
     "                           call timeout. The call waits at least the budget\n"
     "                           plus 5 s.\n"
     "With --json, prints [archived, remaining].\n"},
    {"drain", cmd_drain, "[on|off]", "show, set or clear the drain flag",
     "While the flag is set the daemon refuses submissions (Drained) except those\n"
     "made with --ignore-drain; queued and running jobs are not affected.\n"
     "Without an argument, prints whether the flag is set (from stats' drained).\n"
     "With --json, prints true after on/off, the flag (true/false) without.\n"},
    {"stats", cmd_stats, "", "show the daemon's counters",
     "Prints one \"name: value\" line per counter; nested maps give dotted names\n"
     "(jobs.running, requests.submit_job, errors.QueueFull...).\n"
     "With --json, prints the daemon's map.\n"},
    {"shutdown", cmd_shutdown, "[--now]", "stop the daemon",
     "The daemon acknowledges and refuses new submissions; opcodes that are\n"
     "running may finish (up to jobqd's --shutdown-grace, 30 s by default) and no\n"
     "new one starts; then it exits. Jobs between opcodes resume at the next\n"
     "start.\n"
     "  --now   interrupt running opcodes at once (they end error)\n"
     "With --json, prints true.\n"},
    {"ping", cmd_ping, "", "check that the daemon answers",
     "Prints the daemon's version, protocol version and clock, and the round trip\n"
     "time. With --json, prints the daemon's answer {version, protocol,\n"
     "protocols, time, epoch, publish, token_window}.\n"},
    {"version", cmd_version, "", "show the versions of jobq and of the daemon",
     "Prints jobq's version and protocol version, then the daemon's (with its\n"
     "endpoint) when it answers within 0.5 s; nothing more when it does not.\n"
     "Exits 0 either way. 'jobq --version' is the same.\n"
     "With --json, prints {\"version\", \"protocol\", \"daemon\": PING | null}, PING\n"
     "being the daemon's answer to ping.\n"},
    {"keygen", cmd_keygen, "NAME [--role ROLE] [--dir DIR]", "make a CURVE keypair",
     "Writes DIR/NAME.key (the public certificate: copy it into jobqd's\n"
     "authorized-keys directory) and DIR/NAME.key_secret (mode 0600: give it to\n"
     "--key), czmq certificates whose metadata name the key NAME and its ROLE.\n"
     "Existing files are never overwritten. See docs/security.md.\n"
     "  --role ROLE   read, submit, admin or worker (default submit)\n"
     "  --dir DIR     where to write them (default: the current directory)\n"
     "Prints the two paths and the public key; with --json, {\"public\",\n"
     "\"secret\", \"public_key\", \"name\", \"role\"}.\n"},
    {"http-token", cmd_http_token, "[--ttl SECONDS]", "get a token for jobqd's web pages",
     "Asks the daemon for a token that stands for this client's key (over ipc://,\n"
     "its user and role) on jobqd's HTTP endpoint: give it as the header\n"
     "\"Authorization: Bearer TOKEN\" or on the dashboard's login page. The\n"
     "token's role and name are the key's when it is used; removing the key from\n"
     "the authorized keys voids it. Anyone who holds it is you until it expires:\n"
     "keep it secret, and send it only over TLS or an SSH tunnel off this host.\n"
     "See docs/security.md, \"HTTP tokens\".\n"
     "  --ttl SECONDS  how long it is valid, 60 s to 366 d (s/m/h/d suffixes\n"
     "                 allowed; default 30 d)\n"
     "Prints the token, one line; with --json, {\"token\", \"role\", \"owner\",\n"
     "\"expires\"}.\n"},
    {"nodes", cmd_nodes, "list|add|remove|transfer ...", "show or change a cluster's nodes",
     "A cluster's nodes (jobqd --cluster; docs/operations.md). The endpoint may\n"
     "name several nodes, separated by commas: a request a node that is not the\n"
     "leader cannot serve follows it to the leader.\n"
     "  list                     the nodes as the answering node sees them: ID\n"
     "                           (the answering node's marked *), NAME, ROLE\n"
     "                           (voter, standby, spare), STATE (leader,\n"
     "                           follower, candidate, unavailable, unknown),\n"
     "                           APPLIED (entries applied), LAG (entries behind\n"
     "                           the leader, - when not known), ADDRESS\n"
     "  add ID ADDRESS           add node ID, whose node-to-node address is\n"
     "                           HOST:PORT (its jobqd --node-address)\n"
     "  remove ID                remove node ID from the cluster\n"
     "  transfer [ID]            make node ID the leader (without ID: the most\n"
     "                           up-to-date voter)\n"
     "add, remove and transfer need the admin role and print once the change is\n"
     "committed.\n"
     "\n"
     "Options of add:\n"
     "      --standby            a non-voting standby (default: a voter)\n"
     "      --name N             the node's name\n"
     "      --endpoint-of-node EP\n"
     "                           a client endpoint of the node (repeatable)\n"
     "With --json: list prints the daemon's answer [{\"id\", \"name\", \"address\",\n"
     "\"role\", \"state\", \"endpoints\", \"applied\", \"lag_entries\", \"lag_seconds\",\n"
     "\"last_contact\", \"self\"}...]; add {\"id\"}, remove null, transfer\n"
     "{\"leader\"}.\n"},
    {"help", cmd_help, "[COMMAND]", "show help for jobq or for a command", ""},
};

#define NCOMMANDS (sizeof commands / sizeof *commands)

static const char common_help[] = /* a format: the default endpoint */
    "Common options (before or after the command):\n"
    "  -s, --server ENDPOINT    daemon endpoint, ipc://PATH or tcp://HOST:PORT;\n"
    "                           default $JOBQ_ENDPOINT, else\n"
    "                           %s\n"
    "  -t, --timeout SECONDS    how long each call waits for the daemon\n"
    "                           (default 30; s/m/h/d suffixes allowed)\n"
    "      --key FILE           CURVE key for a tcp:// endpoint: a czmq\n"
    "                           certificate (NAME.key finds NAME.key_secret);\n"
    "                           default $JOBQ_KEY (docs/security.md)\n"
    "      --server-key KEY     the daemon's public key, Z85 or its certificate\n"
    "                           file (DATA_DIR/server.key); default\n"
    "                           $JOBQ_SERVER_KEY\n"
    "      --json               print machine-readable JSON instead of text\n"
    "  -h, --help               show this help\n"
    "      --version            show the versions (before the command only)\n";

void cli_print_help(const cli_command_t *cmd)
{
    char ep[4200];
    default_endpoint(ep, sizeof ep);
    if (!cmd) {
        printf("Usage: jobq [OPTIONS] COMMAND [ARGS...]\n\n"
               "Client of the jobq job-queue daemon (jobqd).\n\nCommands:\n");
        int width = 0;
        for (size_t i = 0; i < NCOMMANDS; i++) {
            int n = (int)(strlen(commands[i].name) + 1 + strlen(commands[i].synopsis));
            width = n > width ? n : width;
        }
        for (size_t i = 0; i < NCOMMANDS; i++) {
            char left[128];
            snprintf(left, sizeof left, "%s %s", commands[i].name, commands[i].synopsis);
            printf("  %-*s  %s\n", width, left, commands[i].summary);
        }
        putchar('\n');
        printf(common_help, ep);
        putchar('\n');
        printf("Exit codes: 0 success; 1 the operation failed (daemon error, no reply,\n"
               "job not found...); 2 bad command line; 3 jobqd is not running at the\n"
               "endpoint, said at once (watch: see 'jobq watch --help'). Errors are one\n"
               "line on stderr. 'jobq COMMAND --help' describes a command.\n");
        return;
    }
    printf("Usage: jobq %s %s\n\n%c%s.\n", cmd->name, cmd->synopsis,
           toupper((unsigned char)cmd->summary[0]), cmd->summary + 1);
    if (*cmd->help)
        printf("\n%s", cmd->help);
    putchar('\n');
    printf(common_help, ep);
}

void cli_help(cli_t *cli)
{
    cli_print_help(cli->cmd);
    if (cli->cmd && cli->cmd->fn == cmd_submit)
        cli_help_opcodes(cli);
}

static const cli_command_t *find_command(const char *name)
{
    for (size_t i = 0; i < NCOMMANDS; i++)
        if (strcmp(commands[i].name, name) == 0)
            return &commands[i];
    return NULL;
}

static int cmd_help(cli_t *cli, int argc, char **argv)
{
    char **pos;
    int npos;
    bool done;
    int rc = cli_parse(cli, argc, argv, NULL, &pos, &npos, &done);
    if (done)
        goto out;
    if (npos > 1) {
        rc = cli_usage(cli, "unexpected argument '%s'", pos[1]);
        goto out;
    }
    const cli_command_t *cmd = NULL;
    if (npos == 1 && !(cmd = find_command(pos[0]))) {
        rc = cli_usage(cli, "unknown command '%s'", pos[0]);
        goto out;
    }
    cli_print_help(cmd);
    if (cmd && cmd->fn == cmd_submit)
        cli_help_opcodes(cli);
    rc = CLI_EXIT_OK;
out:
    free(pos);
    return rc;
}

/* Index of the command word in argv: the first word that is not a global
 * option or its value. */
static int command_index(int argc, char **argv)
{
    int i = 1;
    while (i < argc) {
        const char *a = argv[i];
        if (a[0] != '-' || a[1] == '\0')
            return i;
        if (strcmp(a, "--") == 0)
            return i + 1;
        if (strcmp(a, "-s") == 0 || strcmp(a, "-t") == 0 || strcmp(a, "--server") == 0 ||
            strcmp(a, "--timeout") == 0 || strcmp(a, "--key") == 0 ||
            strcmp(a, "--server-key") == 0)
            i += 2;
        else
            i += 1;
    }
    return argc;
}

int main(int argc, char **argv)
{
    char default_ep[4200];
    default_endpoint(default_ep, sizeof default_ep);
    cli_t cli = {.timeout_ms = CLI_DEFAULT_TIMEOUT_MS, .endpoint = default_ep};
    const char *env = getenv("JOBQ_ENDPOINT");
    if (env && *env)
        cli.endpoint = env;
    const char *key = getenv("JOBQ_KEY"), *server_key = getenv("JOBQ_SERVER_KEY");
    cli.key = key && *key ? key : NULL;
    cli.server_key = server_key && *server_key ? server_key : NULL;

    /* Global options before the command. --version is one of them here
     * only: it runs the version command, after the other options (-s, -t,
     * --json) have been read. */
    int ci = command_index(argc, argv);
    bool version = false;
    for (int i = 1; i < ci; i++)
        if (strcmp(argv[i], "--version") == 0) {
            memmove(&argv[i], &argv[i + 1], (size_t)(argc - i) * sizeof *argv);
            argc--, ci--, i--;
            version = true;
        }
    char **pos;
    int npos;
    bool done;
    int rc = cli_parse(&cli, ci, argv, NULL, &pos, &npos, &done);
    if (!done && npos) { /* a negative number where the command should be */
        fprintf(stderr, "jobq: unknown command '%s' (see 'jobq --help')\n", pos[0]);
        rc = CLI_EXIT_USAGE;
        done = true;
    }
    free(pos);
    if (done)
        return rc;
    if (version) {
        cli.cmd = find_command("version");
        rc = cmd_version(&cli, 1, (char *[]){"version", NULL});
        jobq_client_destroy(&cli.client);
        return rc;
    }
    if (ci >= argc) {
        fprintf(stderr, "jobq: missing command (see 'jobq --help')\n");
        return CLI_EXIT_USAGE;
    }
    cli.cmd = find_command(argv[ci]);
    if (!cli.cmd) {
        fprintf(stderr, "jobq: unknown command '%s' (see 'jobq --help')\n", argv[ci]);
        return CLI_EXIT_USAGE;
    }
    rc = cli.cmd->fn(&cli, argc - ci, argv + ci);
    jobq_client_destroy(&cli.client);
    if (fflush(stdout) != 0 && rc == CLI_EXIT_OK) {
        perror("jobq: stdout");
        rc = CLI_EXIT_FAIL;
    }
    return rc;
}
