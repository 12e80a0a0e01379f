"""``jobq-py``: the command line of jobq in Python (``python3 -m jobq``).

A port of the C ``jobq`` (clients/jobq_cli*.c; docs/cli.md is the
reference) over :class:`jobq.Client`, with the same subcommands, options,
text and JSON output and exit codes, so that either can stand in for the
other. This module holds the command table with every help text (the C
CLI's, word for word), the global options, ``help`` and the dispatch; the
commands live in submit.py, query.py, watch.py, monitor.py, admin.py and
keygen.py and nodes.py, their shared parts in common.py.
"""
from __future__ import annotations

import os
import signal
import sys
from typing import List, Optional

from ..client import default_run_dir
from .admin import (cmd_archive, cmd_autoarchive, cmd_cancel, cmd_drain, cmd_http_token,
                    cmd_ping, cmd_priority, cmd_shutdown, cmd_stats, cmd_version)
from .common import EXIT_FAIL, EXIT_OK, EXIT_USAGE, Cli, Command, eprint, parse
from .keygen import cmd_keygen
from .monitor import cmd_monitor
from .nodes import cmd_nodes
from .query import cmd_info, cmd_list, cmd_list_fields, cmd_list_opcodes, help_opcodes
from .submit import cmd_submit, cmd_submit_many
from .watch import cmd_watch

__all__ = ["main", "cli_help", "print_help", "COMMANDS"]


def default_endpoint_text() -> str:
    """The endpoint this jobq uses without -s and $JOBQ_ENDPOINT."""
    return "ipc://%s/jobq.sock" % default_run_dir()


def cmd_help(cli: Cli, argv: List[str]) -> int:
    """``jobq help [COMMAND]``."""
    pos, rc = parse(cli, argv)
    if rc is not None:
        return rc
    if len(pos) > 1:
        return cli.usage("unexpected argument '%s'" % pos[1])
    cmd: Optional[Command] = None
    if pos:
        cmd = find_command(pos[0])
        if cmd is None:
            return cli.usage("unknown command '%s'" % pos[0])
    print_help(cmd)
    if cmd is not None and cmd.name == "submit":
        help_opcodes(cli)
    return EXIT_OK


#: Every command, in the order of the help.
COMMANDS: List[Command] = [
    Command("submit", cmd_submit, "OP [KEY=VALUE...] [OPTIONS]", "submit a job of one opcode",
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
            "                           event stream\n"),
    Command("submit-many", cmd_submit_many, "FILE [OPTIONS]", "submit several jobs in one call",
            "FILE ('-' for stdin) holds a JSON list of jobs. A job is a list of opcodes,\n"
            "or an object {\"ops\": [opcode...]}; an opcode is an object\n"
            "{\"op\": NAME, \"args\": {...}, \"priority\": P, \"depends\": [[ID, [S...]]...]}\n"
            "where only \"op\" is required; P is a number or \"high\", \"normal\", \"low\"."
            " A negative dependency ID is relative: -1 is\n"
            "the previous job of the same FILE, -2 the one before it.\n"
            "Prints one line per job: its id, or \"error: MESSAGE\". Exits 1 when any\n"
            "job was refused, 2 when FILE cannot be read (the error names FILE and\n"
            "the system's reason) or is not such a list (line and column).\n"
            "\n"
            "Options:\n"
            "      --ignore-drain       submit even while the queue is drained\n"),
    Command("list", cmd_list, "[ID...] [OPTIONS]", "list jobs as a table",
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
            "where more is true when --limit left jobs out; priorities are numbers.\n"),
    Command("list-fields", cmd_list_fields, "", "list the fields list -o accepts",
            "Prints each query field of the daemon with a one-line description.\n"
            "With --json, prints the daemon's answer [{\"name\", \"description\"}...].\n"),
    Command("list-opcodes", cmd_list_opcodes, "", "list the opcodes the daemon runs",
            "Prints each opcode the daemon runs, with a description, then one line per\n"
            "argument: its name, type, whether required or its default, and what it does.\n"
            "With --json, prints the daemon's answer [{\"name\", \"description\",\n"
            "\"source\", \"args\": [{\"name\", \"type\", \"required\", \"default\",\n"
            "\"description\"}...]}...].\n"),
    Command("info", cmd_info, "ID...", "show the details of jobs",
            "For each job: status, priority (by name when it has one), whether archived,"
            " received/start/end times,\n"
            "and for each opcode its name, status, priority, summary, arguments (JSON),\n"
            "dependencies, timestamps, result (JSON) and log entries. Timestamps are\n"
            "ISO-8601 local time with microseconds. A job that does not exist is\n"
            "reported on stderr (exit code 1); the others are still shown.\n"
            "With --json, prints a list with one object per job found, keyed by field.\n"),
    Command("watch", cmd_watch, "ID [--poll]", "follow a job until it ends",
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
            "is not running (or stopped while watching).\n"),
    Command("monitor", cmd_monitor, "[--events] [OPTIONS]", "live view of the whole queue",
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
            "command line; 3 jobqd is not running (or stopped while monitoring).\n"),
    Command("cancel", cmd_cancel, "ID...", "cancel jobs",
            "A queued job is canceled at once; a waiting or running one is marked\n"
            "canceling and ends canceled shortly after. Cancels each job in turn and\n"
            "prints the daemon's message, one line per job; when a job cannot be\n"
            "canceled (not found, already finished or canceling) its message goes to\n"
            "stderr and the exit code is 1. A request the daemon refuses or does not\n"
            "answer stops there (exit code 1; 3 when jobqd is not running).\n"
            "With --json, prints the daemon's answer [ok, message], one line per job.\n"),
    Command("priority", cmd_priority, "ID P | --priority P ID...",
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
            "With --json, prints the daemon's answer [ok, message], one line per job.\n"),
    Command("archive", cmd_archive, "ID...", "move finished jobs to the archive",
            "Archives each job in turn. A job that is not found, already archived or\n"
            "not finished is reported on stderr and makes the exit code 1.\n"
            "With --json, prints [{\"id\": ID, \"archived\": B}...].\n"),
    Command("autoarchive", cmd_autoarchive, "AGE [--timeout S]", "archive old finished jobs",
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
            "With --json, prints [archived, remaining].\n"),
    Command("drain", cmd_drain, "[on|off]", "show, set or clear the drain flag",
            "While the flag is set the daemon refuses submissions (Drained) except those\n"
            "made with --ignore-drain; queued and running jobs are not affected.\n"
            "Without an argument, prints whether the flag is set (from stats' drained).\n"
            "With --json, prints true after on/off, the flag (true/false) without.\n"),
    Command("stats", cmd_stats, "", "show the daemon's counters",
            "Prints one \"name: value\" line per counter; nested maps give dotted names\n"
            "(jobs.running, requests.submit_job, errors.QueueFull...).\n"
            "With --json, prints the daemon's map.\n"),
    Command("shutdown", cmd_shutdown, "[--now]", "stop the daemon",
            "The daemon acknowledges and refuses new submissions; opcodes that are\n"
            "running may finish (up to jobqd's --shutdown-grace, 30 s by default) and no\n"
            "new one starts; then it exits. Jobs between opcodes resume at the next\n"
            "start.\n"
            "  --now   interrupt running opcodes at once (they end error)\n"
            "With --json, prints true.\n"),
    Command("ping", cmd_ping, "", "check that the daemon answers",
            "Prints the daemon's version, protocol version and clock, and the round trip\n"
            "time. With --json, prints the daemon's answer {version, protocol,\n"
            "protocols, time, epoch, publish, token_window}.\n"),
    Command("version", cmd_version, "", "show the versions of jobq and of the daemon",
            "Prints jobq's version and protocol version, then the daemon's (with its\n"
            "endpoint) when it answers within 0.5 s; nothing more when it does not.\n"
            "Exits 0 either way. 'jobq --version' is the same.\n"
            "With --json, prints {\"version\", \"protocol\", \"daemon\": PING | null}, PING\n"
            "being the daemon's answer to ping.\n"),
    Command("keygen", cmd_keygen, "NAME [--role ROLE] [--dir DIR]", "make a CURVE keypair",
            "Writes DIR/NAME.key (the public certificate: copy it into jobqd's\n"
            "authorized-keys directory) and DIR/NAME.key_secret (mode 0600: give it to\n"
            "--key), czmq certificates whose metadata name the key NAME and its ROLE.\n"
            "Existing files are never overwritten. See docs/security.md.\n"
            "  --role ROLE   read, submit, admin or worker (default submit)\n"
            "  --dir DIR     where to write them (default: the current directory)\n"
            "Prints the two paths and the public key; with --json, {\"public\",\n"
            "\"secret\", \"public_key\", \"name\", \"role\"}.\n"),
    Command("http-token", cmd_http_token, "[--ttl SECONDS]",
            "get a token for jobqd's web pages",
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
            "\"expires\"}.\n"),
    Command("nodes", cmd_nodes, "list|add|remove|transfer ...",
            "show or change a cluster's nodes",
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
            "{\"leader\"}.\n"),
    Command("help", cmd_help, "[COMMAND]", "show help for jobq or for a command",
            ""),
]

_COMMON_HELP = (
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
    "      --version            show the versions (before the command only)\n")


def find_command(name: str) -> Optional[Command]:
    """The command of that word, or None."""
    for c in COMMANDS:
        if c.name == name:
            return c
    return None


def print_help(cmd: Optional[Command]) -> None:
    """Prints the help of a command, or of jobq (None)."""
    out = sys.stdout
    common = _COMMON_HELP % default_endpoint_text()
    if cmd is None:
        out.write("Usage: jobq [OPTIONS] COMMAND [ARGS...]\n\n"
                  "Client of the jobq job-queue daemon (jobqd).\n\nCommands:\n")
        width = max(len(c.name) + 1 + len(c.synopsis) for c in COMMANDS)
        for c in COMMANDS:
            out.write("  %-*s  %s\n" % (width, "%s %s" % (c.name, c.synopsis), c.summary))
        out.write("\n" + common + "\n")
        out.write("Exit codes: 0 success; 1 the operation failed (daemon error, no reply,\n"
                  "job not found...); 2 bad command line; 3 jobqd is not running at the\n"
                  "endpoint, said at once (watch: see 'jobq watch --help'). Errors are one\n"
                  "line on stderr. 'jobq COMMAND --help' describes a command.\n")
        return
    out.write("Usage: jobq %s %s\n\n%s%s.\n" % (cmd.name, cmd.synopsis, cmd.summary[:1].upper(),
                                               cmd.summary[1:]))
    if cmd.help:
        out.write("\n" + cmd.help)
    out.write("\n" + common)


def cli_help(cli: Cli) -> None:
    """Help of the command being run (of jobq when none), with the
    daemon's opcodes after submit's."""
    print_help(cli.cmd)
    if cli.cmd is not None and cli.cmd.name == "submit":
        help_opcodes(cli)


def _command_index(args: List[str]) -> int:
    """Index of the command word: the first word that is not a global
    option or its value."""
    i = 1
    while i < len(args):
        a = args[i]
        if not a.startswith("-") or a == "-":
            return i
        if a == "--":
            return i + 1
        i += 2 if a in ("-s", "-t", "--server", "--timeout", "--key", "--server-key") else 1
    return len(args)


def _run(args: List[str]) -> int:
    cli = Cli(default_endpoint_text())
    env = os.environ.get("JOBQ_ENDPOINT")
    if env:
        cli.endpoint = env
        cli.endpoint_from_env = True
    # As jobq: read once here; an empty variable is no key.
    cli.key = os.environ.get("JOBQ_KEY") or None
    cli.server_key = os.environ.get("JOBQ_SERVER_KEY") or None
    # --version is a global option before the command only: it runs the
    # version command once the other options are read.
    ci = _command_index(args)
    version = "--version" in args[1:ci]
    if version:
        before = [a for a in args[1:ci] if a != "--version"]
        args = args[:1] + before + args[ci:]
        ci = 1 + len(before)
    pos, rc = parse(cli, args[:ci])
    if rc is None and pos:  # a negative number where the command should be
        eprint("jobq: unknown command '%s' (see 'jobq --help')" % pos[0])
        rc = EXIT_USAGE
    if rc is not None:
        return rc
    try:
        if version:
            cli.cmd = find_command("version")
            return cmd_version(cli, ["version"])
        if ci >= len(args):
            eprint("jobq: missing command (see 'jobq --help')")
            return EXIT_USAGE
        cli.cmd = find_command(args[ci])
        if cli.cmd is None:
            eprint("jobq: unknown command '%s' (see 'jobq --help')" % args[ci])
            return EXIT_USAGE
        return cli.cmd.fn(cli, args[ci:])
    finally:
        cli.close()


def main(argv: Optional[List[str]] = None) -> int:
    """Runs jobq with ``argv`` (the words after the program name; None:
    the process's) and returns the exit code."""
    whole_process = argv is None
    if argv is None:
        argv = sys.argv[1:]
        # As the C jobq: a closed pipe ("jobq list | head") or Ctrl-C ends
        # the process, without a traceback.
        for name in ("SIGPIPE", "SIGINT"):
            if hasattr(signal, name):
                signal.signal(getattr(signal, name), signal.SIG_DFL)
        # Bytes as the daemon sent them, whatever the locale.
        for stream in (sys.stdout, sys.stderr):
            reconfigure = getattr(stream, "reconfigure", None)
            if reconfigure is not None:
                reconfigure(encoding="utf-8", errors="surrogateescape")
    try:
        rc = _run(["jobq"] + list(argv))
        sys.stdout.flush()
    except OSError as e:  # stdout cannot be written (a full disk...)
        eprint("jobq: stdout: %s" % (e.strerror or e))
        rc = EXIT_FAIL
        if whole_process:
            # What could not be written is dropped: exiting must not try again.
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            os.close(devnull)
    return rc
