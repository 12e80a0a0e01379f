"""gnt-job parity of the jobq CLI (issue 8): priorities by name, several job
ids for cancel/priority/list, `drain` without argument, `--version`, and the
daemon's own descriptions of what it offers: the list_fields and
list_opcodes requests, `jobq list-fields`, `jobq list-opcodes`, `submit
--help` and the bash completion script (clients/completion/jobq).

Run: /usr/bin/python3 -m pytest tests/python/test_cli_parity.py
Each test starts its own jobqd in a temporary directory (test_cli.Daemon).
"""
import json
import os
import re
import subprocess
import time

import msgpack
import pytest
import zmq

from test_cli import JOBQ, Daemon, one_error_line, run

COMPLETION = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..",
                          "clients", "completion", "jobq")


@pytest.fixture
def daemon(tmp_path):
    d = Daemon(tmp_path)
    yield d
    d.stop()


def call(daemon, method, **args):
    """One request on the wire; returns the reply map."""
    with zmq.Context() as ctx:
        s = ctx.socket(zmq.DEALER)
        s.setsockopt(zmq.LINGER, 0)
        s.connect(daemon.endpoint)
        s.send(msgpack.packb({"v": 1, "id": 7, "method": method, "args": args}))
        assert s.poll(10000), f"no reply to {method}"
        rep = msgpack.unpackb(s.recv(), raw=False)
        s.close(0)
    assert rep["id"] == 7
    return rep


def blocked_jobs(daemon, n):
    """A running blocker and n jobs waiting on it (pending opcodes whose
    priority can change). Returns (blocker, [waiters])."""
    blocker = daemon.submit("test.delay", "duration=60")
    waiters = [daemon.submit("test.delay", "duration=0", "--depends", blocker) for _ in range(n)]
    daemon.wait_status(blocker, {"running"})
    return blocker, waiters


# ---------------------------------------------------------------- the daemon's tables

def test_list_fields_request_matches_query_jobs(daemon):
    rep = call(daemon, "list_fields")
    assert rep["ok"], rep
    fields = rep["result"]
    names = [f["name"] for f in fields]
    assert names[:3] == ["id", "status", "priority"]
    assert "change_serial" in names and "oppriority" in names
    assert len(set(names)) == len(names)
    for f in fields:
        assert set(f) == {"name", "description"}
        assert f["description"] and "\n" not in f["description"]
    # Exactly the names query_jobs accepts.
    rows = call(daemon, "query_jobs", fields=names)
    assert rows["ok"], rows
    bad = call(daemon, "query_jobs", fields=["id", "no_such_field"])
    assert not bad["ok"] and bad["error"]["code"] == "UnknownField"
    # The CLI prints the daemon's list.
    assert daemon.js("list-fields") == fields
    lines = daemon.ok("list-fields").splitlines()
    assert [line.split()[0] for line in lines] == names
    assert lines[0].split(None, 1)[1] == fields[0]["description"]


def test_list_help_and_completion_name_every_field(daemon):
    """The field list in `list --help` and the completion's fallback list
    are kept by hand: they must equal the daemon's."""
    names = [f["name"] for f in daemon.js("list-fields")]
    help_text = daemon.ok("list", "--help")
    m = re.search(r"Fields: (.*?)\(", help_text, re.S)
    assert m, help_text
    listed = [w.strip() for w in m.group(1).replace("\n", " ").split(",") if w.strip()]
    assert listed == names
    src = open(COMPLETION).read()
    m = re.search(r'_jobq_static_fields="([^"]*)"', src)
    assert m and m.group(1).split() == names


def test_list_opcodes_request(daemon):
    rep = call(daemon, "list_opcodes")
    assert rep["ok"], rep
    ops = {op["name"]: op for op in rep["result"]}
    assert set(ops) == {"test.delay", "test.log"}
    for op in ops.values():
        assert set(op) == {"name", "description", "source", "args"}
        assert op["source"] == "builtin" and op["description"]
        for a in op["args"]:
            assert set(a) == {"name", "type", "required", "default", "description"}
            assert a["description"]
    delay = {a["name"]: a for a in ops["test.delay"]["args"]}
    assert list(delay) == ["duration", "repeat", "fail"]
    assert delay["duration"]["required"] is True and delay["duration"]["default"] is None
    assert delay["duration"]["type"] == "number"
    assert delay["repeat"] == {**delay["repeat"], "required": False, "default": 0,
                               "type": "integer"}
    assert delay["fail"]["default"] is False
    log = {a["name"]: a for a in ops["test.log"]["args"]}
    assert log["messages"]["default"] == [] and log["fail"]["default"] is False
    # The listed arguments are the ones submit accepts, no more.
    for name, op in ops.items():
        args = {a["name"]: a["default"] if a["default"] is not None else 0
                for a in op["args"]}
        r = call(daemon, "submit_job", ops=[{"op": name, "args": args}])
        assert r["ok"], (name, r)
        r = call(daemon, "submit_job", ops=[{"op": name, "args": {**args, "bogus": 1}}])
        assert not r["ok"] and "unknown argument 'bogus'" in r["error"]["message"]
        assert ", ".join(args) in r["error"]["message"]
    # A required argument is required.
    r = call(daemon, "submit_job", ops=[{"op": "test.delay", "args": {"repeat": 1}}])
    assert not r["ok"] and r["error"]["code"] == "BadArgument"
    assert "missing argument 'duration' (required)" in r["error"]["message"]


def test_list_opcodes_command_and_submit_help(daemon):
    assert daemon.js("list-opcodes") == call(daemon, "list_opcodes")["result"]
    out = daemon.ok("list-opcodes")
    assert re.search(r"^test\.delay: .+$", out, re.M)
    assert re.search(r"^    duration \(number, required\) +seconds", out, re.M)
    assert re.search(r"^    repeat \(integer, default 0\) +\S", out, re.M)
    assert re.search(r"^    messages \(list of strings, default \[\]\) +\S", out, re.M)
    # submit --help appends them; help submit too.
    h = daemon.ok("submit", "--help")
    assert h.startswith("Usage: jobq submit ")
    assert f"Opcodes of the daemon at {daemon.endpoint}" in h
    assert out in h
    assert daemon.ok("help", "submit") == h
    # Other commands' help does not ask the daemon.
    assert "Opcodes of the daemon" not in daemon.ok("list", "--help")


def test_submit_help_without_daemon(tmp_path):
    ep = f"ipc://{tmp_path}/jobq.sock"
    t0 = time.monotonic()
    p = run("submit", "--help", endpoint=ep)
    assert time.monotonic() - t0 < 5
    assert p.returncode == 0 and p.stderr == ""
    assert p.stdout.startswith("Usage: jobq submit ") and "Opcodes of the daemon" not in p.stdout
    # A daemon that never answers: given up after 0.5 s, silently.
    with zmq.Context() as ctx:
        s = ctx.socket(zmq.ROUTER)
        port = s.bind_to_random_port("tcp://127.0.0.1")
        t0 = time.monotonic()
        p = run("submit", "--help", endpoint=f"tcp://127.0.0.1:{port}")
        elapsed = time.monotonic() - t0
        s.close(0)
    assert p.returncode == 0 and p.stderr == "" and "Opcodes of the daemon" not in p.stdout
    assert 0.4 < elapsed < 5


# ---------------------------------------------------------------- priorities by name

def test_priority_names_on_submit_and_in_tables(daemon):
    high = daemon.submit("test.delay", "duration=60", "--priority", "high")
    low = daemon.submit("test.delay", "duration=60", "-p", "LOW")
    normal = daemon.submit("test.delay", "duration=60", "-p", "normal")
    num = daemon.submit("test.delay", "duration=60", "-p", "-10")
    assert [daemon.job(j)["ops"][0]["priority"] for j in (high, low, normal, num)] == \
        [-10, 10, 0, -10]
    out = daemon.ok("list", "-o", "id,priority,oppriority", "--no-headers")
    rows = [line.split() for line in out.splitlines()]
    assert rows == [[str(high), "high", "high"], [str(low), "low", "low"],
                    [str(normal), "normal", "normal"], [str(num), "high", "high"]]
    # --json keeps the numbers.
    r = daemon.js("list", "-o", "id,priority,oppriority")
    assert r["rows"] == [[high, -10, [-10]], [low, 10, [10]], [normal, 0, [0]], [num, -10, [-10]]]
    info = daemon.ok("info", low)
    assert re.search(r"^  Priority: low$", info, re.M)
    assert re.search(r"^      Priority: low$", info, re.M)
    assert daemon.js("info", low)[0]["priority"] == 10
    for j in (high, low, normal, num):
        daemon.ok("cancel", j)
    p = daemon.jobq("submit", "test.delay", "duration=0", "-p", "urgent")
    assert p.returncode == 2 and "invalid priority 'urgent'" in one_error_line(p)


def test_priority_names_in_submit_many(daemon):
    p = daemon.jobq("--json", "submit-many", "-", input=json.dumps([
        [{"op": "test.delay", "args": {"duration": 0}, "priority": "low"}],
        {"ops": [{"op": "test.delay", "args": {"duration": 0}, "priority": "high"}]},
        [{"op": "test.delay", "args": {"duration": 0}, "priority": "urgent"}],
    ]))
    assert p.returncode == 1, p.stderr
    res = json.loads(p.stdout)
    assert res[0][0] is True and res[1][0] is True and res[2][0] is False
    assert daemon.job(res[0][1])["ops"][0]["priority"] == 10
    assert daemon.job(res[1][1])["ops"][0]["priority"] == -10


def test_priority_of_several_jobs(daemon):
    blocker, waiters = blocked_jobs(daemon, 3)
    # gnt-job's form: --priority P ID...
    p = daemon.jobq("priority", "--priority", "high", *waiters, 424242)
    assert p.returncode == 1
    assert p.stdout.splitlines() == [
        f"Priorities of pending opcodes for job {w} have been changed to -10" for w in waiters]
    assert one_error_line(p) == "jobq: priority: Job 424242 not found"
    assert [daemon.job(w)["oppriority"] for w in waiters] == [[-10]] * 3
    # The old form still works, by name or number.
    daemon.ok("priority", waiters[0], "low")
    daemon.ok("priority", waiters[1], "10")
    assert [daemon.job(w)["oppriority"] for w in waiters] == [[10], [10], [-10]]
    out = daemon.ok("--json", "priority", "-p", "normal", *waiters)
    assert [json.loads(line)[0] for line in out.splitlines()] == [True] * 3
    # Ambiguous or bad command lines.
    for argv in (["priority", waiters[0], "low", waiters[1]],
                 ["priority", "--priority", "low", waiters[0], "high"],
                 ["priority", "--priority", "urgent", waiters[0]],
                 ["priority", "--priority", "low"]):
        p = daemon.jobq(*argv)
        assert p.returncode == 2, (argv, p.stderr)
        one_error_line(p)
    # An invalid number is refused by the daemon: stops at the first job.
    p = daemon.jobq("priority", "-p", "7", *waiters)
    assert p.returncode == 1 and p.stdout == ""
    assert "InvalidPriority" in one_error_line(p)
    daemon.ok("cancel", blocker)


def test_cancel_several_jobs(daemon):
    blocker, waiters = blocked_jobs(daemon, 2)
    p = daemon.jobq("cancel", *waiters, 424242, blocker)
    assert p.returncode == 1
    lines = p.stdout.splitlines()
    assert len(lines) == 3
    for w, line in zip(waiters + [blocker], lines):
        assert re.fullmatch(f"Job {w} (will be )?canceled", line), line
    assert one_error_line(p) == "jobq: cancel: Job 424242 not found"
    for j in (blocker, *waiters):
        assert daemon.wait_status(j, {"canceled", "success", "error"}) == "canceled"
    p = daemon.jobq("--json", "cancel", waiters[0], 424242)
    assert p.returncode == 1
    assert [json.loads(line) for line in p.stdout.splitlines()] == [
        [False, f"Job {waiters[0]} is no longer waiting in the queue"],
        [False, "Job 424242 not found"]]
    assert daemon.jobq("cancel", waiters[0], "x").returncode == 2


# ---------------------------------------------------------------- list ID...

def test_list_given_ids(daemon):
    a = daemon.submit("test.delay", "duration=0")
    b = daemon.submit("test.delay", "duration=0", "fail=true")
    c = daemon.submit("test.delay", "duration=0")
    for j in (a, b, c):
        daemon.wait_status(j, {"success", "error"})
    r = daemon.js("list", c, a)
    assert r["fields"] == ["id", "status", "priority", "summary"]
    assert [row[:2] for row in r["rows"]] == [[c, "success"], [a, "success"]]
    # Only the fields asked for, even though status and id are needed.
    r = daemon.js("list", "-o", "summary", b, a)
    assert r["fields"] == ["summary"] and r["rows"] == [[["test.delay(0)"]]] * 2
    out = daemon.ok("list", "--no-headers", "-o", "priority", b)
    assert out == "normal\n"
    # Unknown ids: on stderr, exit 1, the others still listed.
    p = daemon.jobq("list", "-o", "id", a, 424242, c)
    assert p.returncode == 1
    assert p.stdout.split() == ["ID", str(a), str(c)]
    assert one_error_line(p) == "jobq: list: job 424242 not found"
    # Filters and limits apply to the given jobs.
    r = daemon.js("list", "--status", "error", a, b, c)
    assert [row[0] for row in r["rows"]] == [b]
    r = daemon.js("list", "-n", 2, c, b, a)
    assert [row[0] for row in r["rows"]] == [c, b] and r["more"] is True
    # Archived jobs are found by id.
    daemon.ok("archive", a)
    assert daemon.js("list", a)["rows"][0][0] == a
    assert [row[0] for row in daemon.js("list")["rows"]] == [b, c]
    assert daemon.jobq("list", "abc").returncode == 2


# ---------------------------------------------------------------- drain, version

def test_drain_without_argument_shows_the_flag(daemon):
    assert daemon.ok("drain") == "Drain flag: off (submissions are accepted)\n"
    assert daemon.js("drain") is False
    daemon.ok("drain", "on")
    assert daemon.ok("drain") == "Drain flag: on (submissions are refused)\n"
    assert daemon.js("drain") is True
    daemon.ok("drain", "off")
    assert daemon.js("drain") is False


def test_version(daemon):
    version = daemon.js("ping")["version"]
    for argv in (["--version"], ["version"], ["-t", "5", "--version"]):
        out = daemon.ok(*argv)
        assert out == (f"jobq {version} (protocol 1)\n"
                       f"jobqd {version} (protocol 1) at {daemon.endpoint}\n"), argv
    r = daemon.js("version")
    assert r["version"] == version and r["protocol"] == 1
    assert r["daemon"]["version"] == version and r["daemon"]["protocol"] == 1
    assert json.loads(daemon.ok("--version", "--json"))["daemon"]["protocol"] == 1


def test_version_without_daemon(tmp_path):
    ep = f"ipc://{tmp_path}/jobq.sock"
    t0 = time.monotonic()
    p = run("--version", endpoint=ep)
    assert time.monotonic() - t0 < 5
    assert p.returncode == 0 and p.stderr == ""
    assert re.fullmatch(r"jobq \S+ \(protocol 1\)\n", p.stdout)
    p = run("--json", "version", endpoint=ep)
    assert p.returncode == 0 and json.loads(p.stdout)["daemon"] is None
    assert run("version", "extra", endpoint=ep).returncode == 2


# ---------------------------------------------------------------- bash completion

def complete(*words, endpoint=None):
    """Runs the completion function for the command line `jobq WORDS...`
    (the last word being completed); returns COMPREPLY."""
    script = ('source "$1"; shift; COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1)); _jobq; '
              'printf "%s\\n" "${COMPREPLY[@]}"')
    env = dict(os.environ)
    env.pop("JOBQ_ENDPOINT", None)
    if endpoint:
        env["JOBQ_ENDPOINT"] = endpoint
    p = subprocess.run(["bash", "-c", script, "bash", COMPLETION, JOBQ, *map(str, words)],
                       capture_output=True, text=True, timeout=30, env=env)
    assert p.returncode == 0, p.stderr
    assert p.stderr == "", p.stderr
    return [w for w in p.stdout.split("\n") if w]


def test_completion_without_daemon(tmp_path):
    ep = f"ipc://{tmp_path}/jobq.sock"
    assert complete("li", endpoint=ep) == ["list", "list-fields", "list-opcodes"]
    assert complete("--ver", endpoint=ep) == ["--version"]
    assert complete("list", "--st", endpoint=ep) == ["--status"]
    assert complete("list", "--status", "queued,ca", endpoint=ep) == ["queued,canceling",
                                                                      "queued,canceled"]
    # Fields fall back to the static list.
    assert complete("list", "-o", "+id,op", endpoint=ep) == [
        "+id,ops", "+id,opresult", "+id,opstatus", "+id,oplog", "+id,opstart", "+id,opexec",
        "+id,opend", "+id,oppriority", "+id,opworker", "+id,opattempt"]
    assert complete("submit", "test.delay", "-p", "", endpoint=ep) == ["high", "normal", "low"]
    assert complete("drain", "o", endpoint=ep) == ["on", "off"]
    assert complete("drain", "on", "", endpoint=ep) == []
    assert complete("help", "sub", endpoint=ep) == ["submit", "submit-many"]
    assert complete("shutdown", "--", endpoint=ep)[0] == "--now"
    assert complete("http-t", endpoint=ep) == ["http-token"]
    assert complete("http-token", "--t", endpoint=ep) == ["--ttl", "--timeout"]
    # No daemon: no opcodes, no job ids, and no error printed.
    assert complete("submit", "", endpoint=ep) == []
    assert complete("cancel", "", endpoint=ep) == []


def test_completion_asks_the_daemon(daemon, tmp_path):
    ep = daemon.endpoint
    assert complete("submit", "test.", endpoint=ep) == ["test.delay", "test.log"]
    assert complete("submit", "test.delay", "", endpoint=ep) == ["duration=", "repeat=",
                                                                  "fail="]
    assert complete("submit", "-p", "low", "test.log", "m", endpoint=ep) == ["messages="]
    assert complete("list", "-o", "change_", endpoint=ep) == ["change_serial"]
    job = daemon.submit("test.delay", "duration=0")
    assert complete("info", "", endpoint=ep) == [str(job)]
    # -s on the command line wins over $JOBQ_ENDPOINT.
    none = f"ipc://{tmp_path}/none.sock"
    assert complete("-s", ep, "submit", "test.l", endpoint=none) == ["test.log"]
    assert complete("submit", "test.l", endpoint=none) == []
