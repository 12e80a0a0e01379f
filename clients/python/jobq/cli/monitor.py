"""The "monitor" command of the Python jobq CLI: a live view of the whole
queue built from the event stream alone. A port of
clients/jobq_cli_monitor.c with the same lines, JSON and exit codes.

:class:`jobq.Subscriber` (all-jobs mode) hands over a snapshot ("resync")
and then every change record in order, exactly once, so the view is
rebuilt on each resync and updated per event; nothing is polled.
--events (or --json) prints one line per event; otherwise a table (counts
by status, the active jobs, the most recently finished ones) is redrawn in
place on a terminal, or printed every second when stdout is not one.
--count N and --duration S stop it (exit 0); so do the daemon's errors.

The view maps a job id (a string, as the C's JSON object) to
``{"status", "ops", "op", "log", "log_serial", "start", "end"}``; jobs
leave it when archived. The last log line is the last one seen on the
stream (the snapshot carries no logs: it would be the whole queue's).
"""
from __future__ import annotations

import functools
import math
import sys
import time
from typing import Any, Dict, List, Optional

from ..errors import JobqError, TransportError
from ..subscriber import Subscriber
from .common import (EXIT_FAIL, EXIT_OK, Cli, Opt, fmt_ts, fmt_value, json_text, parse,
                     parse_int, parse_seconds, print_json, ts_diff)

_REDRAW = 0.2  # seconds between redraws on a terminal when something changed
_PLAIN = 1.0  # seconds between tables otherwise
_MAX_ACTIVE_ROWS = 20
_DEFAULT_RECENT = 10

_STATUSES = ("queued", "waiting", "canceling", "running", "canceled", "success", "error")
_FINAL = ("success", "error", "canceled")
_ACTIVE = ("running", "waiting", "canceling")


def _int(v: Any) -> int:
    """An integer of a decoded value, 0 when it is not one (jansson's
    json_integer_value)."""
    return v if isinstance(v, int) and not isinstance(v, bool) else 0


def _str(v: Any) -> str:
    """A string of a decoded value as C's printf shows a NULL one."""
    return v if isinstance(v, str) else "(null)"


def _pad(s: str, width: int) -> str:
    """s left-aligned in width bytes, as printf's %-Ns pads."""
    return s + " " * max(0, width - len(s.encode("utf-8", "replace")))


def _now_ts() -> List[int]:
    ns = time.time_ns()
    return [ns // 1_000_000_000, (ns // 1000) % 1_000_000]


def _current_op(opstatus: Any) -> int:
    """Index of the first opcode not successful (the current one), or 0."""
    for i, s in enumerate(opstatus if isinstance(opstatus, list) else []):
        if s != "success":
            return i
    return 0


def _fmt_secs(s: float) -> str:
    if s < 0:
        return "-"
    if s < 60:
        return "%.1fs" % s
    return "%dm%02ds" % (int(s / 60), int(s) % 60)


def _elapsed(ts: Any, end: Any) -> float:
    """Seconds from ts to end when end is set, else to now (wall clock)."""
    return ts_diff(ts, end if isinstance(end, list) else _now_ts())


class _Monitor:
    """The view and what is needed to draw it."""

    def __init__(self, cli: Cli, nrecent: int) -> None:
        self.cli = cli
        self.view: Dict[str, Dict[str, Any]] = {}
        self.recent: List[int] = []  # ids of finished jobs, most recent last
        self.nrecent = nrecent
        self.seq = 0
        self.dirty = False

    def add_recent(self, job_id: int) -> None:
        self.recent.append(job_id)
        while len(self.recent) > self.nrecent:
            self.recent.pop(0)

    def on_resync(self, ev: Dict[str, Any]) -> None:
        """Rebuilds the view from a resync's rows (fields: id,
        change_serial, status, summary, opstatus, start_ts, end_ts)."""
        self.view.clear()
        self.recent.clear()
        self.seq = _int(ev.get("seq"))
        finished: List[Dict[str, Any]] = []
        rows = ev.get("rows")
        for row in rows if isinstance(rows, list) else []:
            if not isinstance(row, list) or len(row) < 7:
                continue
            e: Dict[str, Any] = {"status": row[2], "ops": row[3], "op": _current_op(row[4]),
                                 "log": None, "log_serial": 0, "start": row[5], "end": row[6]}
            self.view[str(_int(row[0]))] = e
            if e["status"] in _FINAL:
                finished.append({"id": _int(row[0]), "end": row[6]})

        def by_end(x: Dict[str, Any], y: Dict[str, Any]) -> int:
            d = ts_diff(x["end"], y["end"])
            return -1 if d > 0 else 1 if d < 0 else 0  # ascending end time

        finished.sort(key=functools.cmp_to_key(by_end))
        n = len(finished)
        for f in finished[max(0, n - self.nrecent):]:
            self.add_recent(f["id"])
        self.dirty = True

    def on_change(self, ev: Dict[str, Any]) -> None:
        """Applies one change record to the view."""
        c = ev.get("change")
        c = c if isinstance(c, dict) else {}
        job_id = _int(ev.get("job"))
        kind = ev.get("kind")
        self.seq = _int(ev.get("seq"))
        self.dirty = True
        key = str(job_id)
        if kind == "archive":
            self.view.pop(key, None)
            return
        e = self.view.get(key)
        if kind == "submit":
            # The stream carries opcodes as submitted, not the daemon's
            # summaries: show their names.
            inp = c.get("input")
            names = [op.get("op") if isinstance(op, dict) else None
                     for op in (inp if isinstance(inp, list) else [])]
            e = {"ops": names, "op": 0, "log": None, "log_serial": 0, "start": None,
                 "end": None}
            self.view[key] = e
        if e is None:
            return  # a job the snapshot did not list (archived meanwhile)
        was_final = e.get("status") in _FINAL
        for ekey, ckey in (("status", "status"), ("start", "start_ts"), ("end", "end_ts")):
            if ckey in c:
                e[ekey] = c[ckey]
        ops = c.get("ops")
        for op in ops if isinstance(ops, list) else []:
            st = op.get("status") if isinstance(op, dict) else None
            if isinstance(st, str) and st not in ("success", "queued") and "index" in op:
                e["op"] = op["index"]
        log = c.get("log")
        last = log[-1] if isinstance(log, list) and log else None
        if last is not None:
            if isinstance(last, list) and len(last) > 3:
                e["log"] = last[3]
            if isinstance(last, list) and last:
                e["log_serial"] = last[0]
            if isinstance(c.get("log_op"), int) and not isinstance(c.get("log_op"), bool):
                e["op"] = c["log_op"]
        if not was_final and e.get("status") in _FINAL:
            self.add_recent(job_id)

    def draw(self, tty: bool) -> None:
        counts = dict.fromkeys(_STATUSES, 0)
        active: List[str] = []
        for key, e in self.view.items():
            st = e.get("status")
            if st in counts:
                counts[st] += 1
            if st in _ACTIVE:
                active.append(key)
        out: List[str] = []
        if tty:
            out.append("\033[H\033[2J")
        out.append("jobq monitor  %s  %s  seq %d\n" % (self.cli.endpoint, fmt_ts(_now_ts()),
                                                       self.seq))
        out.append("jobs %d:" % len(self.view))
        out.extend("  %s %d" % (s, counts[s]) for s in _STATUSES)
        out.append("\n\nACTIVE\n%s  %s  %s  %s  %s\n" % (
            _pad("ID", 8), _pad("STATUS", 9), _pad("ELAPSED", 8), _pad("OPCODE", 24),
            "LAST LOG"))
        for i, key in enumerate(active):
            if i == _MAX_ACTIVE_ROWS:
                out.append("... and %d more\n" % (len(active) - i))
                break
            e = self.view[key]
            el = _fmt_secs(_elapsed(e.get("start"), None))
            # One row per job, whatever the message.
            log = "".join(" " if ord(ch) < 0x20 or ord(ch) == 0x7F else ch
                          for ch in fmt_value(e.get("log")))
            out.append("%s  %s  %s  %s  %s\n" % (_pad(key, 8), _pad(_str(e.get("status")), 9),
                                                 _pad(el, 8), _pad(_op_name(e), 24), log))
        out.append("\nRECENT\n%s  %s  %s  %s\n" % (_pad("ID", 8), _pad("STATUS", 9),
                                                   _pad("DURATION", 8), "OPCODE"))
        for job_id in reversed(self.recent):
            e2 = self.view.get(str(job_id))
            if e2 is None:
                continue  # archived since
            dur = _fmt_secs(_elapsed(e2.get("start"), e2.get("end")))
            out.append("%s  %s  %s  %s\n" % (_pad(str(job_id), 8), _pad(_str(e2.get("status")), 9),
                                             _pad(dur, 8), _op_name(e2)))
        if not tty:
            out.append("\n")
        sys.stdout.write("".join(out))
        sys.stdout.flush()
        self.dirty = False


def _op_name(e: Dict[str, Any]) -> str:
    ops = e.get("ops")
    i = _int(e.get("op"))
    s = ops[i] if isinstance(ops, list) and 0 <= i < len(ops) else None
    return s if isinstance(s, str) else "-"


def _event_line(ev: Dict[str, Any]) -> str:
    """One line per event for --events (text)."""
    if ev.get("type") == "resync":
        rows = ev.get("rows")
        return "%s resync %s seq=%d epoch=%d jobs=%d" % (
            fmt_ts(_now_ts()), _str(ev.get("reason")), _int(ev.get("seq")),
            _int(ev.get("epoch")), len(rows) if isinstance(rows, list) else 0)
    c = ev.get("change")
    c = c if isinstance(c, dict) else {}
    kind, status = ev.get("kind"), c.get("status")
    parts = ["%s seq=%d job=%d serial=%d %s %s" % (
        fmt_ts(c.get("time")), _int(ev.get("seq")), _int(ev.get("job")),
        _int(ev.get("serial")), kind if isinstance(kind, str) else "?",
        status if isinstance(status, str) else "?")]
    ops = c.get("ops")
    for x in ops if isinstance(ops, list) else []:
        x = x if isinstance(x, dict) else {}
        st = x.get("status")
        parts.append(" op%d=%s" % (_int(x.get("index")), st if isinstance(st, str) else "?"))
    log = c.get("log")
    for x in log if isinstance(log, list) else []:
        # A message as a JSON string (escaped), so that an event stays one line.
        msg = json_text(x[3], True) if isinstance(x, list) and len(x) > 3 else "null"
        parts.append(" log%d=%s" % (_int(x[0] if isinstance(x, list) and x else None), msg))
    if ev.get("recovered") is True:
        parts.append(" (recovered)")
    return "".join(parts)


def cmd_monitor(cli: Cli, argv: List[str]) -> int:
    """jobq monitor [--events] [--count N] [--duration S] [--recent N] [--batched]: a
    live view of the queue, or one line per event."""
    o_events = Opt("events")
    o_count = Opt("count", "n", has_arg=True)
    o_duration = Opt("duration", has_arg=True)
    o_recent = Opt("recent", has_arg=True)
    o_batched = Opt("batched")
    pos, rc = parse(cli, argv, [o_events, o_count, o_duration, o_recent, o_batched])
    if rc is not None:
        return rc
    if pos:
        return cli.usage("unexpected argument '%s'" % pos[0])
    count = -1
    if o_count.count:
        v = parse_int(o_count.value or "")
        if v is None or v < 1:
            return cli.usage("invalid --count '%s' (an integer >= 1)" % o_count.value)
        count = v
    duration = -1.0
    if o_duration.count:
        d = parse_seconds(o_duration.value or "")
        if d is None:
            return cli.usage("invalid --duration '%s' (seconds)" % o_duration.value)
        duration = d
    recent = _DEFAULT_RECENT
    if o_recent.count:
        r = parse_int(o_recent.value or "")
        if r is None or r < 0:
            return cli.usage("invalid --recent '%s' (an integer >= 0)" % o_recent.value)
        recent = r
    events = o_events.count > 0 or cli.json
    tty = sys.stdout.isatty()
    c = cli.client()
    if c is None:
        return EXIT_FAIL
    start = time.monotonic()
    stop_at: Optional[float] = start + duration if duration >= 0 else None

    def call_timeout() -> float:
        # -t, cut to what is left of --duration, so that a slow or silent
        # daemon cannot hold monitor past it.
        if stop_at is None:
            return cli.timeout
        return min(max(stop_at - time.monotonic(), 0.001), cli.timeout)

    try:
        sub = Subscriber(client=c, jobs=None,
                         fields=["status", "summary", "opstatus", "start_ts", "end_ts"],
                         timeout=call_timeout(), reconnect=False,
                         batched=o_batched.count > 0)
    except TransportError as e:
        # The daemon answered but offers no stream we can use (no event
        # endpoint of our transport, no events socket file).
        cli.error(e.message)
        return EXIT_FAIL
    except JobqError as e:
        return cli.call_failed(e)
    m = _Monitor(cli, recent)
    last_draw = -math.inf
    seen = 0
    rc = EXIT_OK
    try:
        while count < 0 or seen < count:
            now = time.monotonic()
            if stop_at is not None and now >= stop_at:
                break
            wait = 1.0 if events else _REDRAW
            if stop_at is not None:
                wait = min(wait, stop_at - now)
            sub.timeout = call_timeout()
            try:
                ev = sub.next(timeout=wait)
            except JobqError as e:
                rc = cli.call_failed(e)
                break
            if ev is not None:
                resync = ev.get("type") == "resync"
                if events:
                    if cli.json:
                        print_json(ev)
                    else:
                        print(_event_line(ev))
                    sys.stdout.flush()
                elif resync:
                    m.on_resync(ev)
                else:
                    m.on_change(ev)
                if not resync:
                    seen += 1
            if not events:
                now = time.monotonic()
                period = (_REDRAW if m.dirty else _PLAIN) if tty else _PLAIN
                if now - last_draw >= period:
                    m.draw(tty)
                    last_draw = now
        if not events and rc == EXIT_OK:
            m.draw(tty)  # the final state, whatever the period
    finally:
        sub.close()
    return rc
