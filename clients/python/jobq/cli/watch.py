"""The "watch" command of the Python jobq CLI, and follow_job, which
"submit --wait" shares: a port of clients/jobq_cli_watch.c, same lines,
same JSON, same exit codes.

A job is followed over the daemon's event stream through
:class:`jobq.Subscriber` in job mode: a snapshot of the job (status and
every log entry so far), then one change record per change, in order and
exactly once. Where the stream cannot be used (no endpoint published, no
events socket file, nothing at all, not even a heartbeat, within
``STREAM_GRACE`` seconds) or with --poll, the job is followed with
wait_for_job_change instead. Both paths print the same lines.

A change to a status that is not final is printed before the log entries
of the same change (they were logged in that status); the final status
after them, as the last line. A job that ends error or canceled is
explained before its final status (its first opcode in that status and
that opcode's result message, from one query_jobs at the end).

Exit codes: 0 the job ended success, 1 error or canceled, 2 any other
failure, 3 jobqd is not running.
"""
from __future__ import annotations

import sys
import time
from typing import Any, Dict, List, Optional

from ..client import Client
from ..errors import JobqError, NotRunningError, TimeoutError
from ..subscriber import Subscriber
from .common import (EXIT_FAIL, EXIT_NOT_RUNNING, EXIT_OK, Cli, Opt, fmt_log_entry,
                     fmt_value, parse, parse_job_id, print_json)

#: Exit code of any failure other than the job's (C's WATCH_EXIT_OTHER).
EXIT_OTHER = 2
#: Nothing on the stream this long (heartbeats come every second): use
#: wait_for_job_change.
STREAM_GRACE = 3.0
_NEXT_WAIT = 0.5
#: Longest daemon-side wait of one wait_for_job_change.
_WFJC_WAIT = 30.0
_CANCELING_PAUSE = 0.05

_FINAL = ("success", "error", "canceled")


class _Watch:
    """The state of one watch: what was printed so far."""

    def __init__(self, cli: Cli, job_id: int) -> None:
        self.cli = cli
        self.id = job_id
        self.t0 = time.monotonic()
        self.status = ""  # last status printed
        self.serial = 0  # highest log serial printed

    def elapsed(self) -> float:
        """Seconds since the watch started, to the millisecond (truncated)."""
        return int((time.monotonic() - self.t0) * 1000) / 1000

    def failed(self, e: JobqError) -> int:
        """Reports a failed call; watch's exit code for it."""
        return EXIT_NOT_RUNNING if self.cli.call_failed(e) == EXIT_NOT_RUNNING else EXIT_OTHER

    def failure(self, c: Client, status: str) -> Optional[Dict[str, Any]]:
        """Why the job ended error or canceled: {"opcode", "op", "message"}
        of its first opcode in that status, or None when it cannot be read."""
        try:
            res = c.query_jobs([self.id], fields=["ops", "opstatus", "opresult"],
                               archived=True, timeout=self.cli.timeout)
        except JobqError:
            return None
        rows = res.get("rows")
        row = rows[0] if isinstance(rows, list) and rows and isinstance(rows[0], list) else []
        ops, st, results = (row + [None, None, None])[:3]
        if not isinstance(st, list):
            return None
        for i, s in enumerate(st):
            if s != status:
                continue
            op = ops[i] if isinstance(ops, list) and i < len(ops) else None
            name = op.get("op") if isinstance(op, dict) else None
            result = results[i] if isinstance(results, list) and i < len(results) else None
            return {"opcode": i, "op": name if isinstance(name, str) else "?",
                    "message": _result_message(result)}
        return None

    def emit_status(self, c: Client, status: str) -> None:
        el = self.elapsed()
        why = self.failure(c, status) if status in ("error", "canceled") else None
        if self.cli.json:
            o: Dict[str, Any] = {"status": status, "elapsed": float(el)}
            if why is not None:
                o["error"] = why
            print_json(o)
        else:
            if why is not None:
                print("[+%.3fs] %s: opcode %d (%s) %s: %s"
                      % (el, status, why["opcode"], why["op"],
                         "failed" if status == "error" else "was canceled", why["message"]))
            print("[+%.3fs] status: %s" % (el, status))
        self.status = status

    def emit_log(self, entry: Any) -> None:
        serial = entry[0] if isinstance(entry, list) and entry else 0
        if not isinstance(serial, int) or isinstance(serial, bool):
            serial = 0
        if serial <= self.serial:
            return
        self.serial = serial
        el = self.elapsed()
        if self.cli.json:
            print_json({"log": entry, "elapsed": float(el)})
        else:
            print("[+%.3fs] %s" % (el, fmt_log_entry(entry)))

    def observe(self, c: Client, status: str, entries: Any) -> Optional[int]:
        """Prints one observation: the job's status and the log entries new
        to us. Returns the exit code when the job is final, else None."""
        final = status in _FINAL
        changed = status != self.status
        if changed and not final:
            self.emit_status(c, status)
        if isinstance(entries, list):
            for e in entries:
                self.emit_log(e)
        if changed and final:
            self.emit_status(c, status)
        sys.stdout.flush()
        if not final:
            return None
        return EXIT_OK if status == "success" else EXIT_FAIL

    def on_event(self, c: Client, ev: Dict[str, Any]) -> Optional[int]:
        """One subscriber event; an exit code when done."""
        if ev.get("type") == "resync":
            # fields: id, change_serial, status, oplog
            rows = ev.get("rows")
            row = rows[0] if isinstance(rows, list) and rows else None
            status = row[2] if isinstance(row, list) and len(row) > 2 else None
            if not isinstance(status, str):
                self.cli.error("job %d not found" % self.id)
                return EXIT_OTHER
            entries: List[Any] = []
            oplog = row[3] if isinstance(row, list) and len(row) > 3 else None
            for log in oplog if isinstance(oplog, list) else []:
                if isinstance(log, list):
                    entries.extend(log)
            return self.observe(c, status, entries)
        change = ev.get("change")
        status = change.get("status") if isinstance(change, dict) else None
        if not isinstance(status, str) or not isinstance(change, dict):
            return None
        return self.observe(c, status, change.get("log"))

    def follow_stream(self, c: Client) -> Optional[int]:
        """Follows over the stream; None when the stream is unusable and
        wait_for_job_change should be used."""
        try:
            sub = Subscriber(client=c, jobs=[self.id], fields=["status", "oplog"],
                             timeout=self.cli.timeout, reconnect=False)
        except (NotRunningError, TimeoutError) as e:
            return self.failed(e)  # wait_for_job_change would not fare better
        except JobqError:
            return None
        try:
            while True:
                try:
                    ev = sub.next(timeout=_NEXT_WAIT)
                except JobqError as e:
                    return self.failed(e)
                if ev is not None:
                    rc = self.on_event(c, ev)
                    if rc is not None:
                        return rc
                elif (not _live(sub)
                      and time.monotonic() - self.t0 > STREAM_GRACE):
                    return None  # nothing on the stream, not even heartbeats
        finally:
            sub.close()

    def follow_wfjc(self, c: Client) -> int:
        """Follows with wait_for_job_change (Ganeti's loop): watch the
        status, pass the highest log serial printed so far."""
        wait = min(self.cli.timeout / 2, _WFJC_WAIT)
        prev: Optional[List[Any]] = None
        while True:
            try:
                res = c.wait_for_job_change(self.id, ["status"], prev,
                                            self.serial if self.serial else None, wait,
                                            timeout=self.cli.timeout)
            except JobqError as e:
                return self.failed(e)
            if res is None:
                self.cli.error("job %d not found" % self.id)
                return EXIT_OTHER
            if isinstance(res, tuple):
                info, log = res
                status = info[0] if info and isinstance(info[0], str) else "?"
                same = prev is not None and prev == info and not log
                rc = self.observe(c, status, log)
                if rc is not None:
                    return rc
                prev = list(info)
                # The daemon answers at once while the job is canceling
                # (nothing more to wait for in Ganeti's rule): pace the loop
                # until the executor finishes the cancel.
                if same:
                    time.sleep(_CANCELING_PAUSE)
            # else "nochange": ask again


def _live(sub: Subscriber) -> bool:
    """Whether anything arrived on the subscriber's stream (libjobq's
    jobq_sub_live): a heartbeat, or an event of the job, used or not."""
    n = sub.counters
    return bool(n["heartbeats"] or n["delivered"] or n["skipped"] or n["gaps"])


def _result_message(res: Any) -> str:
    """The message of an opcode's result: an error's messages ([class,
    [message...]] as the executors encode failures) joined by "; ", a
    string as is, anything else as JSON."""
    if (isinstance(res, list) and len(res) == 2 and isinstance(res[0], str)
            and isinstance(res[1], list) and res[1]):
        return "; ".join(fmt_value(m) for m in res[1])
    return fmt_value(res)


def follow_job(cli: Cli, job_id: int, poll: bool) -> int:
    """Follows job ``job_id`` until it ends, printing its log entries and
    status changes: over the event stream, or with wait_for_job_change when
    ``poll`` is set or the stream is unusable. Returns watch's exit code:
    0 success, 1 error or canceled, 2 other failure, 3 jobqd not running."""
    w = _Watch(cli, job_id)
    c = cli.client()
    if c is None:
        return EXIT_OTHER
    rc = None if poll else w.follow_stream(c)
    if rc is None:
        rc = w.follow_wfjc(c)
    return rc


def cmd_watch(cli: Cli, argv: List[str]) -> int:
    """jobq watch ID [--poll]: follows a job until it ends."""
    poll = Opt("poll")
    pos, rc = parse(cli, argv, [poll])
    if rc is not None:
        return rc
    if len(pos) != 1:
        return cli.usage("watch takes one job ID" if pos else "missing job ID")
    job_id = parse_job_id(pos[0])
    if job_id is None:
        return cli.usage("invalid job ID '%s'" % pos[0])
    return follow_job(cli, job_id, poll.count > 0)
