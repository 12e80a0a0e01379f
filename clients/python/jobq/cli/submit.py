"""The ``submit`` and ``submit-many`` commands of ``jobq-py`` (a port of
clients/jobq_cli_submit.c).

submit builds one opcode from the command line: OP, KEY=VALUE arguments
(each VALUE read as JSON when it parses as JSON, else taken as a string),
--args for a JSON object merged under them, --priority and --depends.
submit-many reads a JSON list of jobs from a file or stdin and submits
them in one call, so relative dependencies (-1 = the previous job) work.
submit --wait then follows the job as ``watch`` does (watch.follow_job).
"""
from __future__ import annotations

import os
import sys
from typing import Any, Dict, List, Optional

from ..client import new_token
from ..errors import JobqError
from ..protocol import MAX_JOBS_PER_TOKEN
from .common import (EXIT_FAIL, EXIT_OK, EXIT_USAGE, PRIORITY_HELP, Cli, Opt, fmt_value,
                     is_utf8, json_load_error, json_loads, parse, parse_int, parse_priority,
                     parse_value, print_json)


def _parse_depends(spec: str) -> Optional[List[Any]]:
    """``ID[:status,status...]`` as ``[ID, [status...]]``; None if invalid."""
    idtext, colon, rest = spec.partition(":")
    if not idtext or len(idtext.encode("utf-8", "surrogateescape")) >= 32:
        return None
    dep_id = parse_int(idtext)
    if dep_id is None:
        return None
    return [dep_id, [s for s in rest.split(",") if s] if colon else []]


def cmd_submit(cli: Cli, argv: List[str]) -> int:
    """``jobq submit OP [KEY=VALUE...] [OPTIONS]``."""
    o_prio, o_deps, o_args = Opt("priority", "p", True), Opt("depends", "d", True), \
        Opt("args", "a", True)
    o_ignore, o_wait, o_poll = Opt("ignore-drain"), Opt("wait", "w"), Opt("poll")
    pos, rc = parse(cli, argv, [o_prio, o_deps, o_args, o_ignore, o_wait, o_poll])
    if rc is not None:
        return rc
    if not pos:
        return cli.usage("missing OP")
    args: Dict[str, Any] = {}
    if o_args.value is not None:
        try:
            parsed = json_loads(o_args.value)
        except ValueError as e:
            return cli.usage("--args must be a JSON object (%s)" % e)
        if not isinstance(parsed, dict):
            return cli.usage("--args must be a JSON object (not an object)")
        args = parsed
    for word in pos[1:]:
        key, eq, text = word.partition("=")
        if not eq or not key:
            return cli.usage("argument '%s' is not KEY=VALUE" % word)
        if not is_utf8(word):
            return cli.usage("argument '%s' is not valid UTF-8" % word)
        args[key] = parse_value(text)
    if not is_utf8(pos[0]):
        return cli.usage("OP '%s' is not valid UTF-8" % pos[0])
    op: Dict[str, Any] = {"op": pos[0], "args": args}
    if o_prio.count:
        prio = parse_priority(o_prio.value or "")
        if prio is None:
            return cli.usage("invalid priority '%s' (%s)" % (o_prio.value, PRIORITY_HELP))
        op["priority"] = prio
    if o_deps.count:
        deps: List[Any] = []
        op["depends"] = deps
        for spec in o_deps.values:
            d = _parse_depends(spec)
            if d is None:
                return cli.usage("invalid dependency '%s' (ID or ID:STATUS,STATUS...)" % spec)
            deps.append(d)
    c = cli.client()
    if c is None:
        return EXIT_FAIL
    wait = o_wait.count > 0
    if o_poll.count and not wait:
        return cli.usage("--poll needs --wait")
    # A token makes the one retry after a lost reply safe (no second job).
    try:
        job_id = c.submit_job([op], ignore_drain=o_ignore.count > 0, token=new_token(),
                              retries=1, timeout=cli.timeout)
    except JobqError as e:
        rc = cli.call_failed(e)
        return 2 if wait and rc == EXIT_FAIL else rc  # --wait: watch's "other failure"
    sys.stdout.write("%d\n" % job_id)
    sys.stdout.flush()
    if not wait:
        return EXIT_OK
    from .watch import follow_job  # watch's module is only needed here
    return follow_job(cli, job_id, o_poll.count > 0)


def _normalise_jobs(cli: Cli, data: Any) -> Optional[List[Any]]:
    """The input of submit-many as a list of opcode lists; None (error
    printed) when a job has neither form."""
    if not isinstance(data, list):
        cli.error("input must be a JSON list of jobs")
        return None
    jobs: List[Any] = []
    for i, job in enumerate(data):
        ops = job.get("ops") if isinstance(job, dict) else job
        if not isinstance(ops, list):
            cli.error('job %d: expected a list of opcodes or an object with "ops"' % i)
            return None
        # Priorities by name become numbers; anything else goes as it is
        # and the daemon judges it.
        for op in ops:
            p = op.get("priority") if isinstance(op, dict) else None
            if isinstance(p, str):
                prio = parse_priority(p)
                if prio is not None:
                    op["priority"] = prio
        jobs.append(ops)
    return jobs


def cmd_submit_many(cli: Cli, argv: List[str]) -> int:
    """``jobq submit-many FILE [OPTIONS]``."""
    o_ignore = Opt("ignore-drain")
    pos, rc = parse(cli, argv, [o_ignore])
    if rc is not None:
        return rc
    if len(pos) != 1:
        return cli.usage("too many arguments" if pos else "missing FILE")
    from_stdin = pos[0] == "-"
    name = "stdin" if from_stdin else pos[0]
    # Opening and reading fail apart (a directory opens, then cannot be read).
    try:
        fd = 0 if from_stdin else os.open(pos[0], os.O_RDONLY)
    except OSError as e:
        cli.error("cannot open %s: %s" % (pos[0], os.strerror(e.errno or 0)))
        return EXIT_USAGE
    try:
        chunks: List[bytes] = []
        while True:
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                break
            chunks.append(chunk)
        raw = b"".join(chunks)
    except OSError as e:
        cli.error("cannot read %s: %s" % (name, os.strerror(e.errno or 0)))
        return EXIT_USAGE
    finally:
        if not from_stdin:
            os.close(fd)
    try:
        data = json_loads(raw)
    except ValueError as e:
        err = json_load_error(e)
        if err.line > 0:
            cli.error("%s: line %d, column %d: %s" % (name, err.line, err.column, err.text))
        else:
            cli.error("%s: %s" % (name, err.text))
        return EXIT_USAGE
    jobs = _normalise_jobs(cli, data)
    if jobs is None:
        return EXIT_USAGE
    c = cli.client()
    if c is None:
        return EXIT_FAIL
    # The daemon keeps a tokened batch's answer: above its cap the batch
    # goes without a token (and so without the retry). One call, as jobq's.
    token = new_token() if len(jobs) <= MAX_JOBS_PER_TOKEN else None
    try:
        result = c.submit_many_jobs(jobs, ignore_drain=o_ignore.count > 0, token=token,
                                    batch_size=max(1, len(jobs)), retries=1,
                                    timeout=cli.timeout)
    except JobqError as e:
        return cli.call_failed(e)
    rc = EXIT_OK
    for ok, val in result:
        if ok is not True:
            rc = EXIT_FAIL
        if cli.json:
            continue
        if ok is True and isinstance(val, int) and not isinstance(val, bool):
            sys.stdout.write("%d\n" % val)
        else:
            sys.stdout.write("error: %s\n" % fmt_value(val))
    if cli.json:
        print_json([list(e) for e in result])
    return rc
