"""The ``list``, ``info``, ``list-fields`` and ``list-opcodes`` commands of
``jobq-py`` (a port of clients/jobq_cli_query.c).

list pages through query_jobs (after_id = the last id seen, while the
daemon says "more"), so it shows every job however many there are; the
"id" field is always asked for because paging needs it, and hidden again
when the user did not ask for it. Given job ids, list asks for just those
(and for "status", hidden the same way, which tells a missing job). info
asks for every field of the given jobs in one call. Priorities are shown
by name when they have one; --json keeps the numbers. list-fields and
list-opcodes print what the daemon says it offers.
"""
from __future__ import annotations

import sys
from typing import Any, Callable, Dict, List, Optional, Tuple

from ..client import Client
from ..errors import JobqError
from ..protocol import MAX_ROWS_PER_REPLY
from .common import (EXIT_FAIL, EXIT_OK, Cli, Opt, fmt_field, fmt_log_entry, fmt_ts, fmt_value,
                     is_utf8, item, json_text, parse, parse_int, parse_job_id, print_json,
                     priority_names, ts_diff)

LIST_DEFAULT_FIELDS = "id,status,priority,summary"
LIST_DEFAULT_PAGE = 10000

_STATUSES = ("queued", "waiting", "canceling", "running", "canceled", "success", "error")


def _words(s: str) -> List[str]:
    """The comma-separated words of s, empty ones skipped, and (as jobq,
    which cannot make JSON strings of them) those that are not UTF-8."""
    return [w for w in s.split(",") if w and is_utf8(w)]


def _get(d: Any, key: str) -> Any:
    """``d[key]`` when d is a map holding it, else None."""
    return d.get(key) if isinstance(d, dict) else None


def _blen(s: str) -> int:
    """Width of s as the C CLI counts it: in bytes."""
    return len(s.encode("utf-8", "surrogateescape"))


def _pad(s: str, width: int) -> str:
    return s + " " * max(0, width - _blen(s))


def _int_value(v: Any) -> int:
    """jansson's json_integer_value: the integer, 0 for anything else."""
    return v if isinstance(v, int) and not isinstance(v, bool) else 0


def _print_table(fields: List[str], rows: List[Any], ncols: int, headers: bool) -> None:
    cells: List[List[str]] = [["".join(ch.upper() if "a" <= ch <= "z" else ch for ch in f)
                               for f in fields[:ncols]]]
    for row in rows:
        line = []
        for c in range(ncols):
            name = fields[c]
            v = item(row, c)
            if name in ("priority", "oppriority"):
                v = priority_names(v)
            line.append(fmt_field(name, v))
        cells.append(line)
    shown = cells if headers else cells[1:]
    width = [max((_blen(r[c]) for r in shown), default=0) for c in range(ncols)]
    out = sys.stdout
    for r in shown:
        out.write("".join(_pad(r[c], width[c]) + "  " for c in range(ncols - 1))
                  + r[ncols - 1] + "\n")


def _list_all(cli: Cli, c: Client, fields: List[str], status: Optional[List[str]],
              id_col: int, limit: int, page: int, archived: bool,
              rows: List[Any]) -> Tuple[int, bool]:
    """Every live (or archived too) job, a page at a time, into rows;
    returns the exit code and whether jobs were left out."""
    after = 0
    more = True
    while more:
        want = page
        if limit >= 0 and limit - len(rows) < want:
            want = limit - len(rows)
        if want <= 0:
            break
        try:
            res = c.query_jobs(None, fields, status, after_id=after or None, limit=want,
                               archived=archived, timeout=cli.timeout)
        except JobqError as e:
            return cli.call_failed(e), more
        page_rows = res.get("rows")
        more = res.get("more") is True
        if not isinstance(page_rows, list) or not page_rows:
            break
        rows.extend(page_rows)
        last_id = item(page_rows[-1], id_col)
        advanced = (isinstance(last_id, int) and not isinstance(last_id, bool)
                    and last_id > after)
        if not advanced:
            cli.error("the daemon's paging did not advance; stopping")
            return EXIT_FAIL, more
        after = last_id
    return EXIT_OK, more


def _list_ids(cli: Cli, c: Client, fields: List[str], ids: List[int],
              status: Optional[List[str]], id_col: int, st_col: int, limit: int,
              rows: List[Any]) -> Tuple[int, bool, bool]:
    """The jobs of ids, in that order, into rows: a job not found is
    reported on stderr; the status filter is applied here so that a missing
    job is still told from a filtered one. A reply may answer the first ids
    only (the daemon's reply size cap): the rest are asked for again.
    Returns the exit code, whether --limit left jobs out and whether a job
    was missing."""
    done = 0
    more = missing = False
    while done < len(ids):
        try:
            res = c.query_jobs(ids[done:], fields, timeout=cli.timeout)
        except JobqError as e:
            return cli.call_failed(e), more, missing
        got = res.get("rows")
        n = len(got) if isinstance(got, list) else 0
        if n == 0 or done + n > len(ids):
            cli.error("the daemon answered %d rows for %d jobs" % (n, len(ids) - done))
            return EXIT_FAIL, more, missing
        assert isinstance(got, list)
        for row in got:
            st = item(row, st_col)
            if not isinstance(st, str):
                cli.error("job %d not found" % _int_value(item(row, id_col)))
                missing = True
            elif status is None or st in status:
                if limit >= 0 and len(rows) >= limit:
                    more = True
                else:
                    rows.append(row)
        done += n
    return EXIT_OK, more, missing


def cmd_list(cli: Cli, argv: List[str]) -> int:
    """``jobq list [ID...] [OPTIONS]``."""
    o_output, o_status, o_limit = Opt("output", "o", True), Opt("status", "", True), \
        Opt("limit", "n", True)
    o_page, o_archived, o_no_headers = Opt("page-size", "", True), Opt("archived"), \
        Opt("no-headers")
    pos, rc = parse(cli, argv, [o_output, o_status, o_limit, o_page, o_archived, o_no_headers])
    if rc is not None:
        return rc
    ids: List[int] = []
    for p in pos:
        job_id = parse_job_id(p)
        if job_id is None:
            return cli.usage("invalid job ID '%s'" % p)
        ids.append(job_id)
    spec = o_output.value
    fields: List[str] = []
    if spec is None or spec.startswith("+"):
        fields += _words(LIST_DEFAULT_FIELDS)
    if spec is not None:
        fields += _words(spec[1:] if spec.startswith("+") else spec)
    if not fields:
        return cli.usage("no fields given to -o")
    ncols = len(fields)

    # Paging needs the id, and a listing by id the status (nil: no such
    # job): asked for, hidden again below.
    def need(name: str) -> int:
        if name not in fields:
            fields.append(name)
        return fields.index(name)
    id_col = need("id")
    st_col = need("status") if pos else -1
    status: Optional[List[str]] = None
    if o_status.count:
        status = [w for v in o_status.values for w in _words(v)]
        for s in status:
            if s not in _STATUSES:
                return cli.usage("unknown status '%s'" % s)
    limit, page = -1, LIST_DEFAULT_PAGE
    if o_limit.count:
        lv = parse_int(o_limit.value or "")
        if lv is None or lv < 1:
            return cli.usage("invalid limit '%s' (an integer >= 1)" % o_limit.value)
        limit = lv
    if o_page.count:
        pv = parse_int(o_page.value or "")
        if pv is None or pv < 1 or pv > MAX_ROWS_PER_REPLY:
            return cli.usage("invalid page size '%s' (1 to %d)" % (o_page.value,
                                                                     MAX_ROWS_PER_REPLY))
        page = pv
    c = cli.client()
    if c is None:
        return EXIT_FAIL
    rows: List[Any] = []
    missing = False
    if pos:
        rc, more, missing = _list_ids(cli, c, fields, ids, status, id_col, st_col, limit, rows)
    else:
        rc, more = _list_all(cli, c, fields, status, id_col, limit, page, o_archived.count > 0,
                             rows)
    if rc != EXIT_OK:
        return rc
    # Drop the hidden columns.
    while len(fields) > ncols:
        last = len(fields) - 1
        fields.pop()
        for row in rows:
            if isinstance(row, list) and len(row) > last:
                del row[last]
    if cli.json:
        print_json({"fields": fields, "rows": rows, "more": more})
    else:
        _print_table(fields, rows, ncols, o_no_headers.count == 0)
    return EXIT_FAIL if missing else EXIT_OK


#: Every field info shows, in this order.
INFO_FIELDS = ("id", "status", "priority", "archived", "received_ts", "start_ts", "end_ts",
               "ops", "opstatus", "opresult", "oplog", "opstart", "opexec", "opend",
               "oppriority", "summary", "worker", "opworker", "opattempt", "owner")


def _ts_line(indent: str, label: str, ts: Any, since: Any = None) -> str:
    line = "%s%s %s" % (indent, _pad(label, 18), fmt_ts(ts))
    d = ts_diff(since, ts)
    if d >= 0:
        line += " (delta %.6fs)" % d
    return line + "\n"


def _json_line(indent: str, label: str, v: Any) -> str:
    return "%s%s %s\n" % (indent, label, json_text(v, False))


def _prio_line(indent: str, v: Any) -> str:
    return "%sPriority: %s\n" % (indent, fmt_value(priority_names(v)))


def _job_info(row: List[Any]) -> str:
    f: Dict[str, Any] = dict(zip(INFO_FIELDS, row))
    out = ["Job ID: %d\n" % _int_value(f["id"]),
           "  Status: %s\n" % f["status"]]
    if isinstance(f["worker"], str):  # its current opcode is a worker's
        out.append("  Worker: %s\n" % f["worker"])
    out.append(_prio_line("  ", f["priority"]))
    out.append("  Archived: %s\n" % ("yes" if f["archived"] is True else "no"))
    out.append("  Owner: %s\n" % (f["owner"] if isinstance(f["owner"], str)
                                  else "(not recorded)"))
    out.append(_ts_line("  ", "Received:", f["received_ts"]))
    out.append(_ts_line("  ", "Processing start:", f["start_ts"], f["received_ts"]))
    out.append(_ts_line("  ", "Processing end:", f["end_ts"], f["start_ts"]))
    total = ts_diff(f["received_ts"], f["end_ts"])
    if total >= 0:
        out.append("  Total time: %.6fs\n" % total)
    out.append("  Opcodes:\n")
    ops = f["ops"] if isinstance(f["ops"], list) else []
    for i, op in enumerate(ops):
        name = _get(op, "op")
        out.append("    Opcode %d: %s\n" % (i, name if isinstance(name, str) else "?"))
        out.append("      Status: %s\n" % fmt_value(item(f["opstatus"], i)))
        out.append(_prio_line("      ", item(f["oppriority"], i)))
        worker = item(f["opworker"], i)
        if isinstance(worker, str):
            out.append("      Worker: %s (attempt %d)\n"
                       % (worker, _int_value(item(f["opattempt"], i))))
        out.append("      Summary: %s\n" % fmt_value(item(f["summary"], i)))
        args = op["args"] if isinstance(op, dict) and "args" in op else {}
        out.append(_json_line("      ", "Args:", args))
        deps = _get(op, "depends")
        if isinstance(deps, list) and deps:
            out.append(_json_line("      ", "Depends:", deps))
        start, exe, end = item(f["opstart"], i), item(f["opexec"], i), item(f["opend"], i)
        out.append(_ts_line("      ", "Processing start:", start))
        out.append(_ts_line("      ", "Execution start:", exe, start))
        out.append(_ts_line("      ", "Processing end:", end, exe))
        out.append(_json_line("      ", "Result:", item(f["opresult"], i)))
        log = item(f["oplog"], i)
        if not isinstance(log, list) or not log:
            out.append("      Execution log: none\n")
            continue
        out.append("      Execution log:\n")
        for entry in log:
            out.append("        %s\n" % fmt_log_entry(entry))
    return "".join(out)


def cmd_info(cli: Cli, argv: List[str]) -> int:
    """``jobq info ID...``."""
    pos, rc = parse(cli, argv)
    if rc is not None:
        return rc
    if not pos:
        return cli.usage("missing job ID")
    ids: List[int] = []
    for p in pos:
        job_id = parse_job_id(p)
        if job_id is None:
            return cli.usage("invalid job ID '%s'" % p)
        ids.append(job_id)
    c = cli.client()
    if c is None:
        return EXIT_FAIL
    try:
        res = c.query_jobs(ids, list(INFO_FIELDS), timeout=cli.timeout)
    except JobqError as e:
        return cli.call_failed(e)
    rows = res.get("rows")
    found: List[Dict[str, Any]] = []
    rc = EXIT_OK
    for i, row in enumerate(rows if isinstance(rows, list) else []):
        n = len(row) if isinstance(row, list) else 0
        if n != len(INFO_FIELDS):
            cli.error("the daemon's reply has %d fields per row, not %d"
                      % (n, len(INFO_FIELDS)))
            rc = EXIT_FAIL
            break
        if not isinstance(row[1], str):
            cli.error("job %d not found" % (ids[i] if i < len(ids) else 0))
            rc = EXIT_FAIL
            continue
        if cli.json:
            found.append(dict(zip(INFO_FIELDS, row)))
        else:
            sys.stdout.write(("\n" if i > 0 else "") + _job_info(row))
    if cli.json:
        print_json(found)
    return rc


def _pairs(indent: str, pairs: List[Tuple[str, str]]) -> str:
    """Lines of [left, right] text pairs with the left column aligned."""
    width = max((_blen(left) for left, _ in pairs), default=0)
    return "".join("%s%s  %s\n" % (indent, _pad(left, width), right) for left, right in pairs)


def _print_fields(r: Any) -> None:
    pairs = []
    for f in r if isinstance(r, list) else []:
        name, desc = _get(f, "name"), _get(f, "description")
        pairs.append((name if isinstance(name, str) else "?",
                      desc if isinstance(desc, str) else ""))
    sys.stdout.write(_pairs("", pairs))


def opcodes_text(ops: Any) -> str:
    """list_opcodes' answer as text: per opcode "NAME: DESCRIPTION", then
    one line per argument "NAME (TYPE, required|default VALUE)  DESCRIPTION"."""
    out = []
    for op in ops if isinstance(ops, list) else []:
        name, desc = _get(op, "name"), _get(op, "description")
        out.append("%s: %s\n" % (name if isinstance(name, str) else "?",
                                 desc if isinstance(desc, str) and desc
                                 else "(no description)"))
        args = _get(op, "args")
        if not isinstance(args, list) or not args:
            out.append("    (no arguments)\n")
            continue
        pairs = []
        for a in args:
            an, kind, adesc = _get(a, "name"), _get(a, "type"), _get(a, "description")
            an = an if isinstance(an, str) else "?"
            kind = kind if isinstance(kind, str) else "?"
            default = _get(a, "default")
            if _get(a, "required") is True:
                left = "%s (%s, required)" % (an, kind)
            elif default is not None:
                left = "%s (%s, default %s)" % (an, kind, json_text(default, True))
            else:
                left = "%s (%s)" % (an, kind)
            pairs.append((left, adesc if isinstance(adesc, str) else ""))
        out.append(_pairs("    ", pairs))
    return "".join(out)


def _run_listing(cli: Cli, argv: List[str], call: Callable[[Client, float], Any],
                 show: Callable[[Any], None]) -> int:
    """A command without arguments that shows one of the daemon's lists:
    its JSON with --json, else show(list)."""
    pos, rc = parse(cli, argv)
    if rc is not None:
        return rc
    if pos:
        return cli.usage("unexpected argument '%s'" % pos[0])
    c = cli.client()
    if c is None:
        return EXIT_FAIL
    try:
        r = call(c, cli.timeout)
    except JobqError as e:
        return cli.call_failed(e)
    if cli.json:
        print_json(r)
    else:
        show(r)
    return EXIT_OK


def cmd_list_fields(cli: Cli, argv: List[str]) -> int:
    """``jobq list-fields``."""
    return _run_listing(cli, argv, lambda c, t: c.list_fields(timeout=t), _print_fields)


def cmd_list_opcodes(cli: Cli, argv: List[str]) -> int:
    """``jobq list-opcodes``."""
    return _run_listing(cli, argv, lambda c, t: c.list_opcodes(timeout=t), _print_opcodes)


def _print_opcodes(r: Any) -> None:
    sys.stdout.write(opcodes_text(r))


#: How long ``submit --help`` waits for the daemon's opcodes, in seconds.
HELP_DAEMON_TIMEOUT = 0.5


def help_opcodes(cli: Cli) -> None:
    """Prints the daemon's opcodes after submit's help when it answers
    within :data:`HELP_DAEMON_TIMEOUT`; nothing otherwise (help must never
    fail nor print errors for a daemon that is away)."""
    c = cli.quiet_client()
    if c is None:
        return
    try:
        r = c.list_opcodes(timeout=min(cli.timeout, HELP_DAEMON_TIMEOUT))
    except JobqError:
        return
    sys.stdout.write("\nOpcodes of the daemon at %s ('jobq list-opcodes'):\n" % cli.endpoint)
    sys.stdout.write(opcodes_text(r))
