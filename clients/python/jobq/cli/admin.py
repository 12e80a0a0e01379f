"""The single-call commands of the Python jobq CLI: cancel, priority,
archive, autoarchive, drain, stats, shutdown, ping, version and
http-token.

A port of clients/jobq_cli_admin.c with the same text, JSON and exit
codes. Each command parses its arguments, makes one client call (cancel,
priority and archive: one per job id) and prints the answer. Answers of
the form [false, message] (cancel, priority) are failures: the message
goes to stderr and the exit code is 1.
"""
from __future__ import annotations

import math
import time
from typing import Any, Dict, List, Optional, Tuple

from .. import protocol
from .._version import __version__
from ..errors import JobqError
from .common import (EXIT_FAIL, EXIT_OK, PRIORITY_HELP, Cli, Opt, fmt_ts, fmt_value, parse,
                     parse_job_id, parse_priority, parse_seconds, print_json)

#: How long `version` waits for the daemon (C's CLI_HELP_DAEMON_TIMEOUT_MS).
_VERSION_DAEMON_TIMEOUT = 0.5


def _name(cli: Cli) -> str:
    return cli.cmd.name if cli.cmd is not None else ""


def _synopsis(cli: Cli) -> str:
    return cli.cmd.synopsis if cli.cmd is not None else ""


def _parse_simple(cli: Cli, argv: List[str], nmin: int,
                  nmax: int) -> Tuple[List[str], Optional[int]]:
    """Parses nmin to nmax (-1: any number) positional words and no
    command options; returns them, or an exit code when done."""
    pos, rc = parse(cli, argv, [])
    if rc is not None:
        return pos, rc
    if len(pos) < nmin:
        return pos, cli.usage("missing argument (usage: jobq %s %s)"
                              % (_name(cli), _synopsis(cli)))
    if nmax >= 0 and len(pos) > nmax:
        return pos, cli.usage("unexpected argument '%s'" % pos[nmax])
    return pos, None


def _report_pair(cli: Cli, ok: bool, msg: Optional[str]) -> int:
    """Prints a [bool, message] answer: with --json the answer on a line of
    its own, else the message on stdout, or on stderr when it is a failure."""
    if cli.json:
        print_json([ok, msg])
    elif ok:
        print(msg if msg is not None else "done")
    if not ok:
        if not cli.json:
            cli.error(msg if msg is not None else "failed")
        return EXIT_FAIL
    return EXIT_OK


def _parse_ids(cli: Cli, words: List[str]) -> Tuple[List[int], Optional[int]]:
    """Every word as a job id; an exit code (usage error printed) when one
    is not."""
    ids: List[int] = []
    for w in words:
        v = parse_job_id(w)
        if v is None:
            return ids, cli.usage("invalid job ID '%s'" % w)
        ids.append(v)
    return ids, None


def _each_job(cli: Cli, ids: List[int], prio: Optional[int]) -> int:
    """Cancels (prio None) or sets the priority of each job in turn, one
    line of result per job. A failed call stops there: the jobs after it
    would fail the same way. Returns 1 if any job failed."""
    c = cli.client()
    if c is None:
        return EXIT_FAIL
    rc = EXIT_OK
    for job_id in ids:
        try:
            if prio is None:
                ok, msg = c.cancel_job(job_id, timeout=cli.timeout)
            else:
                ok, msg = c.change_job_priority(job_id, prio, timeout=cli.timeout)
        except JobqError as e:
            return cli.call_failed(e)
        if _report_pair(cli, ok, msg) != EXIT_OK:
            rc = EXIT_FAIL
    return rc


def cmd_cancel(cli: Cli, argv: List[str]) -> int:
    """jobq cancel ID...: cancels each job in turn."""
    pos, rc = _parse_simple(cli, argv, 1, -1)
    if rc is not None:
        return rc
    ids, rc = _parse_ids(cli, pos)
    if rc is not None:
        return rc
    return _each_job(cli, ids, None)


def cmd_priority(cli: Cli, argv: List[str]) -> int:
    """jobq priority ID P, or jobq priority --priority P ID...: sets the
    priority of the jobs' pending opcodes. A P among the words with
    --priority is an invalid id, so the two forms cannot be confused."""
    popt = Opt("priority", "p", has_arg=True)
    pos, rc = parse(cli, argv, [popt])
    if rc is not None:
        return rc
    pword = popt.value
    if pword is None:
        if len(pos) != 2:
            if len(pos) > 2:
                return cli.usage("unexpected argument '%s' (several jobs: jobq priority "
                                 "--priority P ID...)" % pos[2])
            return cli.usage("missing argument (usage: jobq priority ID P, or jobq "
                             "priority --priority P ID...)")
        pword = pos[1]
        pos = pos[:1]
    elif not pos:
        return cli.usage("missing job ID")
    ids, rc = _parse_ids(cli, pos)
    if rc is not None:
        return rc
    prio = parse_priority(pword)
    if prio is None:
        return cli.usage("invalid priority '%s' (%s)" % (pword, PRIORITY_HELP))
    return _each_job(cli, ids, prio)


def cmd_archive(cli: Cli, argv: List[str]) -> int:
    """jobq archive ID...: archives finished jobs; with --json prints
    [{"id", "archived"}...]."""
    pos, rc = _parse_simple(cli, argv, 1, -1)
    if rc is not None:
        return rc
    ids, rc = _parse_ids(cli, pos)
    if rc is not None:
        return rc
    c = cli.client()
    if c is None:
        return EXIT_FAIL
    rc = EXIT_OK
    out: List[Dict[str, Any]] = []
    for job_id in ids:
        try:
            archived = c.archive_job(job_id, timeout=cli.timeout)
        except JobqError as e:
            rc = cli.call_failed(e)
            break
        out.append({"id": job_id, "archived": archived})
        if not archived:
            cli.error("job %d was not archived (not found, already archived or not "
                      "finished)" % job_id)
            rc = EXIT_FAIL
        elif not cli.json:
            print("Job %d archived" % job_id)
    if cli.json:
        print_json(out)
    return rc


def cmd_autoarchive(cli: Cli, argv: List[str]) -> int:
    """jobq autoarchive AGE [--timeout S]: archives finished jobs older than
    AGE ('all' or -1: every one), working at most S seconds."""
    topt = Opt("timeout", has_arg=True)
    pos, rc = parse(cli, argv, [topt])
    if rc is not None:
        return rc
    if len(pos) != 1:
        return (cli.usage("unexpected argument '%s'" % pos[1]) if pos
                else cli.usage("missing AGE"))
    secs = None if pos[0] in ("all", "-1") else parse_seconds(pos[0])
    if pos[0] in ("all", "-1"):
        age = -1
    elif secs is not None and secs < 9e15:
        age = int(math.floor(secs))
    else:
        return cli.usage("invalid AGE '%s' (seconds, optionally with s/m/h/d, or 'all')"
                         % pos[0])
    if topt.count:
        b = parse_seconds(topt.value or "")
        if b is None or b > 1e6:
            return cli.usage("invalid --timeout '%s' (seconds of work)" % topt.value)
        budget = float(math.ceil(b))  # the daemon takes whole seconds
    else:
        # As Ganeti: half of what the call may take, less a second.
        budget = max(1.0, float(math.floor((cli.timeout - 1) / 2)))
    # The call must outlive the daemon's budget.
    wait = max(cli.timeout, budget + 5)
    c = cli.client()
    if c is None:
        return EXIT_FAIL
    try:
        archived, remaining = c.auto_archive_jobs(age, int(budget), timeout=wait)
    except JobqError as e:
        return cli.call_failed(e)
    if cli.json:
        print_json([archived, remaining])
    else:
        print("Archived %d jobs, %d left unexamined" % (archived, remaining))
    return EXIT_OK


def _show_drain(cli: Cli) -> int:
    """The drain flag, read from stats' "drained"."""
    c = cli.client()
    if c is None:
        return EXIT_FAIL
    try:
        r = c.stats(timeout=cli.timeout)
    except JobqError as e:
        return cli.call_failed(e)
    flag = r.get("drained")
    if not isinstance(flag, bool):
        cli.error('the daemon\'s stats have no "drained" flag')
        return EXIT_FAIL
    if cli.json:
        print_json(flag)
    elif flag:
        print("Drain flag: on (submissions are refused)")
    else:
        print("Drain flag: off (submissions are accepted)")
    return EXIT_OK


def cmd_drain(cli: Cli, argv: List[str]) -> int:
    """jobq drain [on|off]: sets, clears or (without argument) shows the
    drain flag."""
    pos, rc = _parse_simple(cli, argv, 0, 1)
    if rc is not None:
        return rc
    if not pos:
        return _show_drain(cli)
    if pos[0] not in ("on", "off"):
        return cli.usage("expected 'on' or 'off', not '%s'" % pos[0])
    flag = pos[0] == "on"
    c = cli.client()
    if c is None:
        return EXIT_FAIL
    try:
        c.set_drain_flag(flag, timeout=cli.timeout)
    except JobqError as e:
        return cli.call_failed(e)
    if cli.json:
        print_json(True)
    elif flag:
        print("Drain flag set: submissions are refused")
    else:
        print("Drain flag cleared: submissions are accepted")
    return EXIT_OK


def _print_stats(prefix: str, obj: Dict[str, Any]) -> None:
    """A stats map as "key: value" lines, nested maps as dotted keys."""
    for key, val in obj.items():
        name = "%s.%s" % (prefix, key) if prefix else str(key)
        if isinstance(val, dict) and val:
            _print_stats(name, val)
        else:
            print("%s: %s" % (name, fmt_value(val)))


def cmd_stats(cli: Cli, argv: List[str]) -> int:
    """jobq stats: the daemon's counters and gauges."""
    _, rc = _parse_simple(cli, argv, 0, 0)
    if rc is not None:
        return rc
    c = cli.client()
    if c is None:
        return EXIT_FAIL
    try:
        r = c.stats(timeout=cli.timeout)
    except JobqError as e:
        return cli.call_failed(e)
    if cli.json:
        print_json(r)
    else:
        _print_stats("", r)
    return EXIT_OK


def cmd_shutdown(cli: Cli, argv: List[str]) -> int:
    """jobq shutdown [--now]: stops the daemon."""
    now_opt = Opt("now")
    pos, rc = parse(cli, argv, [now_opt])
    if rc is not None:
        return rc
    if pos:
        return cli.usage("unexpected argument '%s'" % pos[0])
    now = now_opt.count > 0
    c = cli.client()
    if c is None:
        return EXIT_FAIL
    try:
        c.shutdown(now, timeout=cli.timeout)
    except JobqError as e:
        return cli.call_failed(e)
    if cli.json:
        print_json(True)
    elif now:
        print("Daemon is shutting down now: running jobs are interrupted")
    else:
        print("Daemon is shutting down: running opcodes may finish first")
    return EXIT_OK


def cmd_http_token(cli: Cli, argv: List[str]) -> int:
    """jobq http-token [--ttl SECONDS]: a token for jobqd's HTTP endpoint."""
    ttl_opt = Opt("ttl", has_arg=True)
    pos, rc = parse(cli, argv, [ttl_opt])
    if rc is not None:
        return rc
    if pos:
        return cli.usage("unexpected argument '%s'" % pos[0])
    # Whole seconds; the daemon checks the range (BadArgument).
    ttl = None
    if ttl_opt.count:
        secs = parse_seconds(ttl_opt.value or "")
        if secs is None or secs < 1 or secs > 1e12:
            return cli.usage("invalid --ttl '%s' (seconds, optionally with s/m/h/d)"
                             % ttl_opt.value)
        ttl = int(math.floor(secs))
    c = cli.client()
    if c is None:
        return EXIT_FAIL
    try:
        r = c.http_token(ttl, timeout=cli.timeout)
    except JobqError as e:
        return cli.call_failed(e)
    if cli.json:
        print_json(r)
    else:
        print(r["token"])
    return EXIT_OK


def cmd_ping(cli: Cli, argv: List[str]) -> int:
    """jobq ping: the daemon's version, protocol and clock, and the round
    trip time."""
    _, rc = _parse_simple(cli, argv, 0, 0)
    if rc is not None:
        return rc
    c = cli.client()
    if c is None:
        return EXIT_FAIL
    t0 = time.monotonic()
    try:
        r = c.ping(timeout=cli.timeout)
    except JobqError as e:
        return cli.call_failed(e)
    ms = (time.monotonic() - t0) * 1e3
    if cli.json:
        print_json(r)
    else:
        version = r.get("version")
        print("jobqd %s (protocol %d) at %s: time %s, round trip %.3f ms"
              % (version if isinstance(version, str) else "?", _int(r.get("protocol")),
                 c.endpoint, fmt_ts(r.get("time")), ms))
    return EXIT_OK


def _int(v: Any) -> int:
    """An integer of a reply, 0 when it is not one (as jansson's
    json_integer_value)."""
    return v if isinstance(v, int) and not isinstance(v, bool) else 0


def cmd_version(cli: Cli, argv: List[str]) -> int:
    """jobq version (and jobq --version): this package's version always,
    the daemon's when it answers within a short time (a version query must
    not hang on a stopped daemon)."""
    _, rc = _parse_simple(cli, argv, 0, 0)
    if rc is not None:
        return rc
    r: Optional[Dict[str, Any]] = None
    c = cli.client()
    if c is not None:
        try:
            r = c.ping(timeout=min(cli.timeout, _VERSION_DAEMON_TIMEOUT))
        except JobqError:
            r = None
    if cli.json:
        print_json({"version": __version__, "protocol": protocol.PROTOCOL_VERSION,
                    "daemon": r})
    else:
        print("jobq %s (protocol %d)" % (__version__, protocol.PROTOCOL_VERSION))
        if r is not None:
            version = r.get("version")
            print("jobqd %s (protocol %d) at %s"
                  % (version if isinstance(version, str) else "?", _int(r.get("protocol")),
                     c.endpoint if c is not None else cli.endpoint))
    return EXIT_OK
