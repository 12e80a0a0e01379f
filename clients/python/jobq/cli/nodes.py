"""``jobq nodes list|add|remove|transfer``: a cluster's nodes (jobqd
--cluster; docs/cli.md, "Nodes"), the twin of clients/jobq_cli_nodes.c:
the same text, JSON, errors and exit codes."""
from __future__ import annotations

from typing import Any, Dict, List, Optional

from ..errors import JobqError
from .common import EXIT_FAIL, EXIT_OK, EXIT_USAGE, Cli, Opt, parse, parse_job_id, print_json

_HEADS = ("ID", "NAME", "ROLE", "STATE", "APPLIED", "LAG", "ADDRESS")
_COLS = ("id", "name", "role", "state", "applied", "lag_entries", "address")
#: Sub-command -> (least, most) arguments.
_ARGS = {"list": (0, 0), "add": (2, 2), "remove": (1, 1), "transfer": (0, 1)}


def _int(v: Any) -> Optional[int]:
    return v if isinstance(v, int) and not isinstance(v, bool) else None


def _cell(node: Any, col: str) -> str:
    """The text of one cell of ``nodes list`` (libjobq's jansson reads:
    a missing or mistyped value is ``-``, an id 0)."""
    v = node.get(col) if isinstance(node, dict) else None
    if col == "id":
        return "%d%s" % (_int(v) or 0, "*" if isinstance(node, dict)
                         and node.get("self") is True else "")
    if isinstance(v, str):
        return v or "-"
    if _int(v) is not None:
        return str(v)
    return "-"


def _print_nodes(nodes: List[Any]) -> None:
    """A column per field, as wide as its widest cell, two spaces between
    columns, the last one not padded."""
    rows = [list(_HEADS)] + [[_cell(n, c) for c in _COLS] for n in nodes]
    width = [max(len(r[c]) for r in rows) for c in range(len(_COLS))]
    for r in rows:
        print("  ".join(r[c].ljust(width[c]) for c in range(len(_COLS) - 1)) + "  " + r[-1])


def cmd_nodes(cli: Cli, argv: List[str]) -> int:
    """jobq nodes list|add|remove|transfer: shows or changes a cluster's
    nodes."""
    standby, name, endpoint = Opt("standby"), Opt("name", has_arg=True), \
        Opt("endpoint-of-node", has_arg=True)
    opts = [standby, name, endpoint]
    pos, rc = parse(cli, argv, opts)
    if rc is not None:
        return rc
    assert cli.cmd is not None
    if not pos:
        return cli.usage("missing argument (usage: jobq %s %s)"
                         % (cli.cmd.name, cli.cmd.synopsis))
    sub = pos[0]
    if sub not in _ARGS:
        return cli.usage("expected list, add, remove or transfer, not '%s'" % sub)
    least, most = _ARGS[sub]
    if len(pos) - 1 < least:
        return cli.usage("missing argument (usage: jobq nodes %s)"
                         % ("add ID ADDRESS [OPTIONS]" if sub == "add" else "remove ID"))
    if len(pos) - 1 > most:
        return cli.usage("unexpected argument '%s'" % pos[most + 1])
    if sub != "add":
        for o in opts:
            if o.count:
                return cli.usage("--%s is an option of 'nodes add'" % o.name)
    node = 0
    if len(pos) > 1:
        n = parse_job_id(pos[1])
        if n is None:
            cli.usage("invalid node id '%s' (an integer >= 1)" % pos[1])
            return EXIT_USAGE
        node = n
    c = cli.client()
    if c is None:
        return EXIT_FAIL
    try:
        if sub == "list":
            nodes = c.query_nodes(timeout=cli.timeout)
            if cli.json:
                print_json(nodes)
            else:
                _print_nodes(nodes)
        elif sub == "add":
            r: Dict[str, Any] = c.add_node(node, pos[2], standby=bool(standby.count),
                                           name=name.value, endpoints=endpoint.values,
                                           timeout=cli.timeout)
            if cli.json:
                print_json(r)
            else:
                print("Node %d added (%s)" % (node, "standby" if standby.count else "voter"))
        elif sub == "remove":
            c.remove_node(node, timeout=cli.timeout)
            if cli.json:
                print_json(None)
            else:
                print("Node %d removed" % node)
        else:
            leader = c.transfer_leader(node or None, timeout=cli.timeout)
            if cli.json:
                print_json({"leader": leader})
            else:
                print("Node %d is the leader" % leader)
    except JobqError as e:
        return cli.call_failed(e)
    return EXIT_OK
