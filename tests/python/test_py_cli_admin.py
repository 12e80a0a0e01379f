"""Parity of the Python jobq CLI (clients/python/jobq/cli: watch, monitor
and the admin commands) with the C jobq: each case runs the same command
line through build/clients/jobq and `/usr/bin/python3 -m jobq` on the same
daemon state and asserts the same exit code, stdout and (where it is
deterministic) stderr. Text is compared after normalising only what
legitimately differs: the elapsed-time prefix of watch lines, the wall
clock of ping, version and monitor, and the ids of jobs each CLI acted on
(when each needs a job of its own, as for cancel).

Run: JOBQ_BUILD_DIR=$PWD/build /usr/bin/python3 -m pytest tests/python/test_py_cli_admin.py
Each test starts its own jobqd in a temporary directory (test_cli.Daemon).
"""
import json
import os
import re
import signal
import socket
import subprocess
import time

import pytest
import zmq

from test_cli import ISO_TS, JOBQ, Daemon, run
from test_py_cli import PYCLI_ENV, normalise_help, run_both, run_c, run_py

PYTHON = "/usr/bin/python3"
NOWHERE = "ipc:///nonexistent-jobq-dir/jobq.sock"


def popen_both(args, endpoint):
    """Both CLIs started side by side (for commands that wait)."""
    env = dict(os.environ, JOBQ_ENDPOINT=endpoint)
    c = subprocess.Popen([JOBQ, *map(str, args)], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, env=env)
    p = subprocess.Popen([PYTHON, "-m", "jobq", *map(str, args)], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, env=dict(env, **PYCLI_ENV))
    return c, p


def same(c, p, norm=lambda s: s, stderr=True):
    """Asserts the same exit code, stdout (normalised) and stderr."""
    assert c.returncode == p.returncode, (c.returncode, p.returncode, c.stderr, p.stderr)
    assert norm(p.stdout) == norm(c.stdout), (c.stdout, p.stdout)
    if stderr:
        assert p.stderr == c.stderr, (c.stderr, p.stderr)
    return c


def both(daemon, *args, norm=lambda s: s, stderr=True, rc=None):
    """Runs args through both CLIs on the daemon, asserts parity (and the
    exit code rc when given); returns the C CLI's result."""
    c, p = run_both(args, daemon.endpoint)
    same(c, p, norm, stderr)
    if rc is not None:
        assert c.returncode == rc, (args, c.stdout, c.stderr)
    return c


def ids_as(text, ids, name="ID"):
    """text with each of the job ids replaced by name."""
    for i in ids:
        text = re.sub(r"\b%d\b" % i, name, text)
    return text


def pair(daemon, argv_of, ids_c, ids_p, rc, norm=lambda s: s):
    """Runs argv_of(ids_c) through C and argv_of(ids_p) through Python:
    the same command on jobs of each CLI's own; asserts parity (stdout
    normalised by norm) with the ids named by position."""
    c = run(*argv_of(ids_c), endpoint=daemon.endpoint)
    p = run_py(*argv_of(ids_p), endpoint=daemon.endpoint)
    assert c.returncode == p.returncode == rc, (c.stdout, c.stderr, p.stdout, p.stderr)
    for k, (a, b) in enumerate(zip(ids_c, ids_p)):
        c.stdout, c.stderr = ids_as(c.stdout, [a], "ID%d" % k), ids_as(c.stderr, [a], "ID%d" % k)
        p.stdout, p.stderr = ids_as(p.stdout, [b], "ID%d" % k), ids_as(p.stderr, [b], "ID%d" % k)
    assert (norm(p.stdout), p.stderr) == (norm(c.stdout), c.stderr)
    return c


def elapsed_out(text):
    """watch output without what depends on when it ran: the "[+S.SSSs]"
    prefix and --json's "elapsed" values."""
    text = re.sub(r"(?m)^\[\+\d+\.\d{3}s\] ", "[+T] ", text)
    return re.sub(r'"elapsed":[0-9.e+-]+', '"elapsed":T', text)


def clock_out(text):
    return re.sub(ISO_TS, "TS", text)


@pytest.fixture
def daemon(tmp_path):
    d = Daemon(tmp_path)
    yield d
    d.stop()


def blocked(daemon, n):
    """A running blocker and n jobs queued behind it."""
    blocker = daemon.submit("test.delay", "duration=60")
    daemon.wait_status(blocker, {"running"})
    return blocker, [daemon.submit("test.delay", "duration=0", "--depends", blocker)
                     for _ in range(n)]


# ---------------------------------------------------------------- usage errors

@pytest.mark.parametrize("args", [
    ["cancel"], ["cancel", "abc"], ["cancel", "0"], ["priority"], ["priority", "1"],
    ["priority", "1", "2", "3"], ["priority", "--priority", "high"],
    ["priority", "1", "urgent"], ["priority", "-p", "x", "1"], ["archive"],
    ["archive", "1", "x"], ["autoarchive"], ["autoarchive", "1", "2"],
    ["autoarchive", "soon"], ["autoarchive", "1d", "--timeout", "x"],
    ["autoarchive", "1d", "--timeout", "2e6"], ["drain", "maybe"], ["drain", "on", "off"],
    ["stats", "x"], ["shutdown", "x"], ["shutdown", "--now=1"], ["ping", "x"],
    ["version", "x"], ["watch"], ["watch", "1", "2"], ["watch", "x"], ["watch", "--pol", "1"],
    ["monitor", "x"], ["monitor", "--count", "0"], ["monitor", "-n", "x"],
    ["monitor", "--duration", "-1"], ["monitor", "--recent", "-1"],
    ["monitor", "--duration"], ["keygen"], ["keygen", "a", "b"], ["keygen", ".a"],
    ["keygen", "a", "--role", "Admin"], ["keygen", "a", "--dir"], ["keygen", "a", "--now"],
    ["--key"], ["drain", "--server-key"],
    ["http-token", "x"], ["http-token", "--ttl"], ["http-token", "--ttl", "soon"],
    ["http-token", "--ttl", "0.5"], ["http-token", "--ttl", "-1"], ["http-token", "--ttl", "1e13"],
    ["http-token", "--ttl", "2w"], ["http-token", "--now"],
])
def test_usage_errors(args):
    c, p = run_both(args, NOWHERE)
    same(c, p)
    assert c.returncode == 2 and c.stderr.startswith("jobq: "), c.stderr


CALLS = [
    ["cancel", "1"], ["priority", "1", "high"], ["archive", "1"],
    ["autoarchive", "all", "--timeout", "0"], ["drain"], ["drain", "on"], ["stats"],
    ["shutdown"], ["ping"], ["--json", "ping"],
    ["watch", "1"], ["watch", "--poll", "1"], ["monitor", "--events", "--duration", "5"],
    ["monitor", "--duration", "5"], ["http-token"], ["--json", "http-token", "--ttl", "1d"],
]


@pytest.mark.parametrize("args", CALLS)
def test_not_running(args, tmp_path):
    """No socket file, a socket file nobody listens on, a refused TCP
    connection: exit code 3 and the same message."""
    c, p = run_both(args, NOWHERE)
    same(c, p)
    assert c.returncode == 3
    assert c.stderr == ("jobq: jobqd is not running at %s (no socket file at %s)\n"
                        % (NOWHERE, NOWHERE[6:]))
    stale = tmp_path / "stale.sock"
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(stale))  # the file stays, nobody listens: what a killed jobqd leaves
    c, p = run_both(args, "ipc://%s" % stale)
    same(c, p)
    assert c.returncode == 3 and "nobody listens" in c.stderr
    c, p = run_both(args, "tcp://127.0.0.1:%d" % free_tcp_port())
    same(c, p)
    assert c.returncode == 3 and "(connection refused)" in c.stderr


@pytest.mark.parametrize("args,rc", [(a, 2 if a[0] == "watch" else 1) for a in CALLS])
def test_no_reply(args, rc, tmp_path):
    """A peer that takes requests and never answers: "cannot reach the
    daemon at ENDPOINT: no reply within T s"; watch's code for it is 2."""
    ep = "ipc://%s/mute.sock" % tmp_path
    with zmq.Context() as ctx:
        s = ctx.socket(zmq.ROUTER)
        s.setsockopt(zmq.LINGER, 0)
        s.bind(ep)
        try:
            c, p = run_both(["-t", "0.3", *args], ep)
        finally:
            s.close(0)
    same(c, p)
    assert c.returncode == rc
    # autoarchive's call outlives the daemon's work budget (0 s here) by 5 s.
    assert c.stderr == "jobq: cannot reach the daemon at %s: no reply within %s s\n" % (
        ep, "5" if args[0] == "autoarchive" else "0.3")


def test_version_no_reply(tmp_path):
    """version does not wait for a daemon that does not answer."""
    ep = "ipc://%s/mute.sock" % tmp_path
    with zmq.Context() as ctx:
        s = ctx.socket(zmq.ROUTER)
        s.setsockopt(zmq.LINGER, 0)
        s.bind(ep)
        try:
            for args in (["version"], ["--json", "version"]):
                c, p = run_both(args, ep)
                same(c, p)
                assert c.returncode == 0 and "jobqd" not in c.stdout
        finally:
            s.close(0)


def free_tcp_port():
    """A loopback port free at the time of asking."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Nowhere:
    """Where no daemon runs (for both())."""
    endpoint = NOWHERE


def test_version_without_daemon():
    for args in (["version"], ["--json", "version"], ["--version"]):
        c = both(_Nowhere, *args, rc=0)
        assert "jobqd" not in c.stdout
    assert json.loads(run_py("--json", "version", endpoint=NOWHERE).stdout) == {
        "version": "0.1.0", "protocol": 1, "daemon": None}


# ---------------------------------------------------------------- admin commands

def test_cancel(daemon):
    _, jobs = blocked(daemon, 8)
    one = lambda ids: ["cancel", *ids]  # noqa: E731
    pair(daemon, one, [jobs[0]], [jobs[1]], 0)  # queued: canceled at once
    pair(daemon, one, [jobs[2], jobs[3]], [jobs[4], jobs[5]], 0)  # several
    pair(daemon, lambda ids: ["--json", "cancel", *ids], [jobs[6]], [jobs[7]], 0)
    c = both(daemon, "cancel", jobs[0], rc=1)  # already finished
    assert c.stdout == "" and c.stderr.startswith("jobq: cancel: ")
    both(daemon, "--json", "cancel", jobs[0], rc=1)
    both(daemon, "cancel", 999999, rc=1)
    # A failure does not stop the next job; the exit code says one failed.
    both(daemon, "cancel", 999999, jobs[1], rc=1)


def test_cancel_running(daemon):
    a = daemon.submit("test.delay", "duration=60")
    b = daemon.submit("test.delay", "duration=60")
    daemon.wait_status(a, {"running"})
    daemon.wait_status(b, {"running"})
    c = pair(daemon, lambda ids: ["cancel", *ids], [a], [b], 0)
    assert "canceled" in c.stdout
    # watch of a job canceled while running (exit 1, the same lines).
    daemon.wait_status(a, {"canceled"})
    daemon.wait_status(b, {"canceled"})
    for args in (["watch"], ["watch", "--poll"], ["--json", "watch"]):
        pair(daemon, lambda ids: [*args, *ids], [a], [b], 1, elapsed_out)
    c = both(daemon, "watch", a, norm=elapsed_out, rc=1)
    assert elapsed_out(c.stdout).splitlines()[-1] == "[+T] status: canceled", c.stdout


def test_priority(daemon):
    _, jobs = blocked(daemon, 6)
    pair(daemon, lambda ids: ["priority", ids[0], "high"], [jobs[0]], [jobs[1]], 0)
    pair(daemon, lambda ids: ["priority", ids[0], "10"], [jobs[0]], [jobs[1]], 0)
    pair(daemon, lambda ids: ["priority", "--priority", "Low", *ids], jobs[2:4], jobs[4:6], 0)
    pair(daemon, lambda ids: ["--json", "priority", "-p", "normal", *ids], jobs[2:4],
         jobs[4:6], 0)
    rows = daemon.js("list", "-o", "oppriority", *jobs)["rows"]
    assert rows == [[[10]], [[10]], [[0]], [[0]], [[0]], [[0]]]
    both(daemon, "priority", 999999, "high", rc=1)
    c = both(daemon, "priority", jobs[0], "5", rc=1)  # not -10, 0 or 10: the daemon says
    assert c.stderr.startswith("jobq: priority: InvalidPriority: "), c.stderr
    both(daemon, "--json", "priority", 999999, "high", rc=1)
    daemon.ok("cancel", jobs[0])
    both(daemon, "priority", jobs[0], "low", rc=1)  # finished


def test_archive(daemon):
    jobs = [daemon.submit("test.delay", "duration=0") for _ in range(4)]
    for j in jobs:
        daemon.wait_status(j, {"success"})
    c = pair(daemon, lambda ids: ["archive", *ids], [jobs[0]], [jobs[1]], 0)
    assert c.stdout == "Job ID0 archived\n"
    pair(daemon, lambda ids: ["--json", "archive", *ids], [jobs[2]], [jobs[3]], 0)
    c = both(daemon, "archive", jobs[0], rc=1)  # already archived
    assert "was not archived" in c.stderr
    both(daemon, "--json", "archive", jobs[1], 999999, rc=1)
    blocker = daemon.submit("test.delay", "duration=60")
    both(daemon, "archive", blocker, rc=1)  # not finished


def test_autoarchive(daemon):
    def finished(n):
        jobs = [daemon.submit("test.delay", "duration=0") for _ in range(n)]
        for j in jobs:
            daemon.wait_status(j, {"success"})

    finished(2)
    c = both(daemon, "autoarchive", "1d", rc=0)  # none old enough
    assert c.stdout == "Archived 0 jobs, 0 left unexamined\n"
    both(daemon, "--json", "autoarchive", "7d", "--timeout", "3", rc=0)
    daemon.ok("autoarchive", "all")
    outs = []
    for runner in (run, run_py):
        for args in (["autoarchive", "all"], ["--json", "autoarchive", "-1"]):
            finished(2)
            p = runner(*args, endpoint=daemon.endpoint)
            outs.append((p.returncode, p.stdout, p.stderr))
    assert outs[:2] == outs[2:]
    assert outs[0] == (0, "Archived 2 jobs, 0 left unexamined\n", "")
    assert outs[1] == (0, "[2,0]\n", "")


def test_drain(daemon):
    for args, out in ((["drain"], "Drain flag: off (submissions are accepted)\n"),
                      (["--json", "drain"], "false\n"),
                      (["drain", "on"], "Drain flag set: submissions are refused\n"),
                      (["drain"], "Drain flag: on (submissions are refused)\n"),
                      (["--json", "drain"], "true\n"),
                      (["--json", "drain", "on"], "true\n"),
                      (["drain", "off"], "Drain flag cleared: submissions are accepted\n"),
                      (["drain"], "Drain flag: off (submissions are accepted)\n")):
        c = both(daemon, *args, rc=0)
        assert c.stdout == out


def keys_of(v, prefix=""):
    """The dotted key paths of a JSON value's maps."""
    if not isinstance(v, dict):
        return [prefix]
    out = []
    for k, x in v.items():
        out.extend(keys_of(x, "%s.%s" % (prefix, k) if prefix else k))
    return out


def test_stats(daemon):
    daemon.submit("test.delay", "duration=0")
    c, p = run_both(["--json", "stats"], daemon.endpoint)
    assert c.returncode == p.returncode == 0 and c.stderr == p.stderr == ""
    cj, pj = json.loads(c.stdout), json.loads(p.stdout)
    assert keys_of(pj) == keys_of(cj) and len(keys_of(cj)) > 5
    assert pj["drained"] == cj["drained"] is False
    c, p = run_both(["stats"], daemon.endpoint)
    names = lambda s: [line.split(": ", 1)[0] for line in s.splitlines()]  # noqa: E731
    assert c.returncode == p.returncode == 0
    assert names(p.stdout) == names(c.stdout) and "drained" in names(c.stdout)
    assert "drained: false" in c.stdout.splitlines()
    assert "drained: false" in p.stdout.splitlines()


TOKEN_RE = r"jq1\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]{43}"


def token_out(text):
    """http-token's output without what depends on the second it ran: the
    token and its expiry."""
    text = re.sub(TOKEN_RE, "TOKEN", text)
    return re.sub(r'"expires":\[\d+,0\]', '"expires":EXP', text)


@pytest.mark.parametrize("args,rc", [
    (["http-token"], 0), (["http-token", "--ttl", "90"], 0), (["--json", "http-token"], 0),
    (["http-token", "--json", "--ttl=12h"], 0), (["http-token", "--ttl", "366d"], 0),
    (["http-token", "--ttl", "59"], 1), (["http-token", "--ttl", "367d"], 1),
    (["http-token", "--ttl", "1"], 1), (["-t", "5", "http-token", "--ttl", "1e12"], 1),
])
def test_http_token(daemon, args, rc):
    """The token line, or --json's answer, from both: the same but for the
    token itself and its expiry; a ttl out of the daemon's range is its
    BadArgument, word for word."""
    c = both(daemon, *args, norm=token_out, rc=rc)
    if rc == 0 and "--json" in args:
        j = json.loads(c.stdout)
        assert list(j) == ["token", "role", "owner", "expires"]
        assert (j["role"], j["owner"]) == ("admin", "uid:%d" % os.getuid())
        assert re.fullmatch(TOKEN_RE, j["token"]), j
    elif rc == 0:
        assert re.fullmatch(TOKEN_RE + "\n", c.stdout), c.stdout
    else:
        assert c.stdout == "" and "BadArgument" in c.stderr, c.stderr


def test_http_token_keys(secure):
    """A key's token through both CLIs: its role and name; a key the
    daemon does not know gets none."""
    for name, role in (("reader", "read"), ("alice", "submit"), ("pyalice", "submit")):
        c, p = run_both([*secure.opts(name), "--json", "http-token"], NOWHERE)
        same(c, p, token_out)
        assert c.returncode == 0, c.stderr
        j = json.loads(p.stdout)
        assert (j["role"], j["owner"]) == (role, name)
    c, p = run_both([*secure.opts("stranger"), "http-token"], NOWHERE)
    same(c, p)
    assert c.returncode == 1 and "refused this key" in c.stderr, c.stderr


def test_ping_and_version(daemon):
    c, p = run_both(["--json", "ping"], daemon.endpoint)
    assert c.returncode == p.returncode == 0 and c.stderr == p.stderr == ""
    cj, pj = json.loads(c.stdout), json.loads(p.stdout)
    assert list(pj) == list(cj)
    assert {k: v for k, v in pj.items() if k != "time"} == {
        k: v for k, v in cj.items() if k != "time"}
    c, p = run_both(["ping"], daemon.endpoint)
    shape = r"jobqd \S+ \(protocol 1\) at %s: time TS, round trip RT ms\n" % re.escape(
        daemon.endpoint)
    norm = lambda s: re.sub(r"round trip [0-9.]+ ms", "round trip RT ms", clock_out(s))  # noqa
    same(c, p, norm)
    assert re.fullmatch(shape, norm(c.stdout)), c.stdout
    c = both(daemon, "version", rc=0)
    assert c.stdout.startswith("jobq 0.1.0 (protocol 1)\njobqd ")
    c, p = run_both(["--json", "version"], daemon.endpoint)
    assert c.returncode == p.returncode == 0
    cj, pj = json.loads(c.stdout), json.loads(p.stdout)
    cj["daemon"].pop("time")
    pj["daemon"].pop("time")
    assert pj == cj
    assert re.sub(r'"time":\[\d+,\d+\]', "", p.stdout) == re.sub(r'"time":\[\d+,\d+\]', "",
                                                                 c.stdout)


@pytest.mark.parametrize("args", [["shutdown"], ["--json", "shutdown", "--now"]])
def test_shutdown(tmp_path, args):
    results = []
    for name, runner in (("c", run), ("py", run_py)):
        (tmp_path / name).mkdir()
        d = Daemon(tmp_path / name)
        try:
            p = runner(*args, endpoint=d.endpoint)
            results.append((p.returncode, p.stdout, p.stderr))
            assert d.proc.wait(15) == 0
        finally:
            d.stop()
    assert results[0] == results[1]
    assert results[0][0] == 0 and results[0][1] in (
        "Daemon is shutting down: running opcodes may finish first\n", "true\n")


# ---------------------------------------------------------------- watch

@pytest.mark.parametrize("poll", [False, True])
def test_watch_finished_jobs(daemon, poll):
    opt = ["--poll"] if poll else []
    ok = daemon.submit("test.log", 'messages=["one", "two"]')
    err = daemon.submit("test.log", 'messages=["x"]', "fail=true")
    bad = daemon.submit("test.delay", "duration=0", "fail=true")
    for job, rc in ((ok, 0), (err, 1), (bad, 1)):
        daemon.wait_status(job, {"success", "error"})
        c = both(daemon, "watch", *opt, job, norm=elapsed_out, rc=rc)
        assert elapsed_out(c.stdout).splitlines()[-1] == "[+T] status: %s" % (
            "success" if rc == 0 else "error")
        c = both(daemon, "--json", "watch", *opt, job, norm=elapsed_out, rc=rc)
        last = json.loads(c.stdout.splitlines()[-1])
        assert last["status"] == ("success" if rc == 0 else "error")
        assert ("error" in last) == (rc == 1)
    c = both(daemon, "watch", *opt, err, norm=elapsed_out, rc=1)
    assert re.search(r"(?m)^\[\+T\] error: opcode 0 \(test\.log\) failed: ",
                     elapsed_out(c.stdout)), c.stdout
    c = both(daemon, "watch", *opt, 999999, rc=2)
    assert c.stderr == "jobq: watch: job 999999 not found\n"


def test_watch_live_job(daemon):
    """Both CLIs watch a job from queued to success over the stream: the
    same status lines and log entries (entry timestamps are the job's)."""
    blocker = daemon.submit("test.delay", "duration=60")
    daemon.wait_status(blocker, {"running"})
    job = daemon.submit("test.log", 'messages=["a", "b", "c"]', "--depends",
                        "%d:canceled" % blocker)
    procs = popen_both(["watch", job], daemon.endpoint)
    jprocs = popen_both(["--json", "watch", job], daemon.endpoint)
    try:
        # Each watcher has printed the job's first status before it moves on.
        for p in procs + jprocs:
            assert p.stdout.readline(), p.stderr.read()
        daemon.ok("cancel", blocker)
        outs = [p.communicate(timeout=30) for p in procs + jprocs]
    finally:
        for p in procs + jprocs:
            if p.poll() is None:
                p.kill()
                p.wait()
    assert [p.returncode for p in procs + jprocs] == [0, 0, 0, 0]
    assert elapsed_out(outs[1][0]) == elapsed_out(outs[0][0]) and outs[1][1] == outs[0][1]
    assert elapsed_out(outs[3][0]) == elapsed_out(outs[2][0]) and outs[3][1] == outs[2][1]
    lines = elapsed_out(outs[0][0]).splitlines()
    assert lines[0] == "[+T] status: running" and lines[-1] == "[+T] status: success", lines
    assert [ln.rsplit(" ", 1)[1] for ln in lines[1:-1]] == ["a", "b", "c"]


@pytest.mark.parametrize("poll", [False, True])
def test_watch_daemon_dies(daemon, poll):
    """jobqd killed while both watch a running job: exit 3, the same error."""
    job = daemon.submit("test.delay", "duration=60")
    daemon.wait_status(job, {"running"})
    procs = popen_both(["watch", *(["--poll"] if poll else []), job], daemon.endpoint)
    try:
        for p in procs:
            assert elapsed_out(p.stdout.readline()) == "[+T] status: running\n"
        daemon.proc.send_signal(signal.SIGKILL)
        daemon.proc.wait(10)
        outs = [p.communicate(timeout=30) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    assert [p.returncode for p in procs] == [3, 3]
    # Whether the death is seen while a request is parked ("; it stopped
    # while ... was waiting for its reply") or before the next one is timing.
    errs = [re.sub(r"; it stopped while .*", "", err) for _, err in outs]
    assert errs[0] == errs[1] == "jobq: jobqd is not running at %s (nobody listens on %s: a " \
        "socket file left by a jobqd that did not stop cleanly?)\n" % (
            daemon.endpoint, daemon.endpoint[6:]), outs
    assert outs[0][0] == outs[1][0] == ""  # nothing after the first status


# ---------------------------------------------------------------- monitor

@pytest.mark.parametrize("mode", [[], ["--batched"]])
def test_monitor_events(daemon, mode):
    """Both monitors follow the same events: the lines (and --json objects)
    are the same, except the resync line's wall clock; on the batched
    stream too."""
    daemon.wait_status(daemon.submit("test.delay", "duration=0"), {"success"})
    args = ["monitor", "--events", "--count", "4", "--duration", "30", *mode]
    procs = popen_both(args, daemon.endpoint) + popen_both(
        ["--json", "monitor", "-n", "4", "--duration", "30", *mode], daemon.endpoint)
    try:
        first = [p.stdout.readline() for p in procs]
        assert re.fullmatch(ISO_TS + r" resync start seq=\d+ epoch=\d+ jobs=1\n", first[0])
        assert clock_out(first[1]) == clock_out(first[0])
        assert first[3] == first[2] and json.loads(first[2])["type"] == "resync"
        daemon.submit("test.log", 'messages=["one", "two"]')
        outs = [p.communicate(timeout=30) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    assert [p.returncode for p in procs] == [0, 0, 0, 0], outs
    assert outs[0] == outs[1] and outs[2] == outs[3]
    assert len(outs[0][0].splitlines()) == 4 and ' log1="one"' in outs[0][0]
    assert [json.loads(x)["type"] for x in outs[2][0].splitlines()] == ["change"] * 4


def test_monitor_table(daemon):
    """Not on a terminal, --duration below a second prints two tables (the
    first view and the final one): the same text but for the clock."""
    jobs = [daemon.submit("test.delay", "duration=0") for _ in range(3)]
    for j in jobs:
        daemon.wait_status(j, {"success"})
    c = both(daemon, "monitor", "--duration", "0.5", "--recent", "2", norm=clock_out, rc=0)
    assert c.stdout.count("jobq monitor  ") == 2, c.stdout
    assert ("jobs 3:  queued 0  waiting 0  canceling 0  running 0  canceled 0  success 3"
            "  error 0\n") in c.stdout
    recent = c.stdout.split("RECENT\n", 1)[1].split("\n\n", 1)[0].splitlines()
    rows = [r.split() for r in recent[1:]]
    assert len(rows) == 2 and all(int(r[0]) in jobs and r[1] == "success" for r in rows), rows


def test_tcp_without_event_endpoint(tmp_path):
    """Over tcp:// to a daemon that publishes events on ipc only: watch falls
    back to wait_for_job_change (same lines), monitor says why it cannot
    follow (exit 1)."""
    ep = "tcp://127.0.0.1:%d" % free_tcp_port()
    daemon = Daemon(tmp_path, "--listen", ep, "--insecure")  # no keys: CURVE's tests below
    try:
        tcp_checks(daemon, ep)
    finally:
        daemon.stop()


def tcp_checks(daemon, ep):
    job = daemon.submit("test.log", 'messages=["x", "y"]')
    daemon.wait_status(job, {"success"})
    c, p = run_both(["watch", job], ep)
    same(c, p, elapsed_out)
    assert c.returncode == 0 and len(c.stdout.splitlines()) == 3, c.stdout
    c, p = run_both(["monitor", "--events", "--duration", "10"], ep)
    # The published list is JSON in libjobq's message, a Python list in
    # jobq.Subscriber's: compared apart.
    listed = re.compile(r"\(it publishes (.*)\); start")
    same(c, p, stderr=False)
    assert c.returncode == 1
    assert listed.sub("(it publishes L); start", p.stderr) == listed.sub(
        "(it publishes L); start", c.stderr)
    assert c.stderr.startswith("jobq: monitor: jobqd at %s publishes no tcp:// event endpoint"
                               % ep), c.stderr
    assert json.loads(listed.search(c.stderr).group(1)) == [
        "ipc://%s/events.sock" % daemon.data_dir]


def test_monitor_daemon_dies(daemon):
    """jobqd killed under both monitors: exit 3, the same error."""
    procs = popen_both(["monitor", "--events", "--duration", "60"], daemon.endpoint)
    try:
        first = [p.stdout.readline() for p in procs]
        assert clock_out(first[0]) == clock_out(first[1]) and " resync start " in first[0]
        daemon.proc.send_signal(signal.SIGKILL)
        daemon.proc.wait(10)
        outs = [p.communicate(timeout=30) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    assert [p.returncode for p in procs] == [3, 3], outs
    errs = [re.sub(r"; it stopped while .*", "", err) for _, err in outs]
    assert errs[0] == errs[1] and errs[0].startswith("jobq: jobqd is not running at "), outs


# ---------------------------------------------------------------- CURVE keys (issue 11)

def read_cert(path):
    """A czmq certificate's sections as {section: {key: value}} (what
    zcertstore reads), comments and blank lines left out."""
    out, section = {}, None
    for line in open(path, encoding="ascii").read().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        if not line.startswith(" "):
            section = out.setdefault(line.strip(), {})
            continue
        assert line.startswith("    ") and not line.startswith("     "), line
        k, v = line.strip().split(" = ", 1)
        assert v[0] == v[-1] == '"', line
        section[k] = v[1:-1]
    return out


def key_out(text, where):
    """keygen's output with the key (random) and its directory replaced."""
    text = re.sub(r'(?m)^[0-9a-zA-Z.:+=^!/*?&<>()\[\]{}@%$#-]{40}$', "KEY", text)
    text = re.sub(r'"public_key":"[^"]{40}"', '"public_key":"KEY"', text)
    return text.replace(str(where), "DIR")


KEYGEN = [
    (["keygen", "alice"], 0),
    (["--json", "keygen", "bob", "--role", "read"], 0),
    (["keygen", "w-1.x_y@h", "--role=worker", "--dir", "sub"], 0),
    (["keygen", "root", "--role", "admin", "--dir", "{dir}/sub/", "--json"], 0),
    (["keygen", "a" * 64, "--role", "submit"], 0),
    (["keygen", "dup"], 1),  # made by the other CLI first: never overwritten
    (["keygen", "half"], 1),  # only half.key_secret exists
    (["keygen", "x", "--dir", "missing/dir"], 1),
    (["keygen", "x", "--dir", "afile"], 1),
    (["keygen", "a" * 65], 2), (["keygen", "-x"], 2), (["keygen", "a b"], 2),
    (["keygen", "é"], 2), (["keygen", "x", "--role", "root"], 2),
    (["keygen", "x", "--role="], 2), (["keygen", "x", "--bogus"], 2),
]


@pytest.mark.parametrize("args,rc", KEYGEN, ids=[" ".join(a) for a, _ in KEYGEN])
def test_keygen(tmp_path, args, rc):
    """keygen through both, each in a directory of its own: the same exit
    code, output (but the key), error, and files: the same names, modes
    and certificate sections (metadata name and role, the printed public
    key, the secret key in NAME.key_secret only)."""
    dirs = []
    for which in ("c", "py"):
        d = tmp_path / which
        (d / "sub").mkdir(parents=True)
        (d / "afile").write_text("")
        (d / "dup.key").write_text("")
        (d / "half.key_secret").write_text("")
        dirs.append(d)
    c = run_c(*[a.format(dir=dirs[0]) for a in args], endpoint=NOWHERE, cwd=dirs[0])
    p = run_py(*[a.format(dir=dirs[1]) for a in args], endpoint=NOWHERE, cwd=dirs[1])
    assert c.returncode == p.returncode == rc, (c.stderr, p.stderr)
    assert key_out(p.stdout, dirs[1]) == key_out(c.stdout, dirs[0])
    assert key_out(p.stderr, dirs[1]) == key_out(c.stderr, dirs[0])
    files = []
    for d, out in zip(dirs, (c.stdout, p.stdout)):
        made = sorted((str(f.relative_to(d)), oct(f.stat().st_mode & 0o777))
                      for f in d.rglob("*.key*") if f.stat().st_size)
        certs = [read_cert(d / name) for name, _ in made]
        files.append((made, [{"metadata": s["metadata"], "curve": sorted(s["curve"])}
                             for s in certs]))
        if rc == 0:
            key = json.loads(out)["public_key"] if "--json" in args else out.split("\n")[2]
            assert [s["curve"]["public-key"] for s in certs] == [key, key]
    assert files[1] == files[0]
    if rc == 0:
        assert [m for _, m in files[0][0]] == ["0o644", "0o600"], files
        assert files[0][1][1]["curve"] == ["public-key", "secret-key"]


class Secure:
    """A jobqd with a CURVE TCP endpoint (and events on TCP) on 127.0.0.1,
    and keys: alice (submit), reader (read) and pyalice (submit, made by
    jobq-py keygen) authorized; stranger (admin) not."""

    def __init__(self, tmp_path):
        self.tcp = "tcp://127.0.0.1:%d" % free_tcp_port()
        self.d = Daemon(tmp_path, "--listen", self.tcp, "--publish",
                        "tcp://127.0.0.1:%d" % free_tcp_port())
        self.keys = tmp_path / "keys"
        self.keys.mkdir()
        self.server_key = str(self.d.data_dir / "server.key")
        self.names = {}
        for name, role, maker in (("alice", "submit", run), ("reader", "read", run),
                                  ("stranger", "admin", run), ("pyalice", "submit", run_py)):
            p = maker("keygen", name, "--role", role, "--dir", self.keys, endpoint=NOWHERE)
            assert p.returncode == 0, p.stderr
            self.names[name] = str(self.keys / ("%s.key" % name))
            if name != "stranger":
                # Written aside, then moved in: the daemon never reads half a file.
                tmp = self.d.data_dir / "authorized_keys" / (".%s" % name)
                tmp.write_bytes((self.keys / ("%s.key" % name)).read_bytes())
                os.rename(tmp, self.d.data_dir / "authorized_keys" / ("%s.key" % name))
        # A public certificate alone: no secret beside it.
        (self.keys / "public-only.key").write_bytes((self.keys / "alice.key").read_bytes())
        for name in ("alice", "reader", "pyalice"):  # the daemon has taken them
            deadline = time.monotonic() + 15
            while run(*self.opts(name), "ping", endpoint=NOWHERE).returncode != 0:
                assert time.monotonic() < deadline, "key %s never accepted" % name
                time.sleep(0.1)
        p = run(*self.opts("alice"), "submit", "test.log", 'messages=["hi"]', endpoint=NOWHERE)
        assert p.returncode == 0, p.stderr
        self.job = int(p.stdout)
        self.d.wait_status(self.job, {"success"})

    def opts(self, name):
        return ["--key", self.names[name], "--server-key", self.server_key, "-s", self.tcp,
                "-t", "5"]


@pytest.fixture(scope="module")
def secure(tmp_path_factory):
    s = Secure(tmp_path_factory.mktemp("keys"))
    yield s
    s.d.stop()


#: (argv, environment, the exit code both must give, what stderr holds).
#: "{alice}" and the like: that key's NAME.key; "{sk}": the daemon's
#: server.key; "{tcp}", "{ipc}": its endpoints; "{job}": alice's job.
KEYED = [
    (["--key", "{alice}", "--server-key", "{sk}", "-s", "{tcp}", "list"], {}, 0, ""),
    (["-s", "{tcp}", "--json", "list", "-o", "id,owner", "--key={alice}_secret",
      "--server-key={sk}"], {}, 0, ""),
    (["-s", "{tcp}", "list", "-o", "id,status,owner"],
     {"JOBQ_KEY": "{pyalice}", "JOBQ_SERVER_KEY": "{sk}"}, 0, ""),
    (["--key", "{reader}", "--server-key", "{sk}", "-s", "{tcp}", "info", "{job}"], {}, 0, ""),
    (["--key", "{reader}", "--server-key", "{sk}", "-s", "{tcp}", "--json", "info", "{job}"],
     {}, 0, ""),
    (["--key", "{pyalice}", "--server-key", "{sk}", "-s", "{tcp}", "watch", "{job}"], {}, 0, ""),
    (["--key", "{alice}", "--server-key", "{sk}", "-s", "{tcp}", "--json", "watch", "{job}",
      "--poll"], {}, 0, ""),
    (["--key", "{alice}", "--server-key", "{sk}", "-s", "{tcp}", "submit", "--help"], {}, 0,
     "Opcodes of the daemon at tcp://"),
    # no key, an unknown key, a key of the wrong role
    (["-s", "{tcp}", "list"], {}, 1, "needs a key (--key, $JOBQ_KEY)"),
    (["-s", "{tcp}", "watch", "{job}"], {}, 2, "needs a key"),
    (["-s", "{tcp}", "submit", "--help"], {}, 0, ""),
    (["--key", "{stranger}", "--server-key", "{sk}", "-s", "{tcp}", "list"], {}, 1,
     "PermissionDenied: jobqd at"),
    (["-s", "{tcp}", "drain", "on"], {"JOBQ_KEY": "{stranger}", "JOBQ_SERVER_KEY": "{sk}"}, 1,
     "refused this key"),
    (["--key", "{reader}", "--server-key", "{sk}", "-s", "{tcp}", "submit", "test.delay",
      "duration=0"], {}, 1, "jobq: submit: PermissionDenied: "),
    (["--key", "{reader}", "--server-key", "{sk}", "-s", "{tcp}", "submit", "test.delay",
      "duration=0", "--wait"], {}, 2, "PermissionDenied"),
    (["--key", "{reader}", "--server-key", "{sk}", "-s", "{tcp}", "cancel", "{job}"], {}, 1,
     "PermissionDenied"),
    # keys that cannot be used: said before anything is sent
    (["--key", "{alice}", "-s", "{tcp}", "list"], {}, 1, "CURVE needs both a key"),
    (["--server-key", "{sk}", "-s", "{tcp}", "list"], {}, 1, "CURVE needs both a key"),
    (["-s", "{tcp}", "list", "--key", ""], {"JOBQ_KEY": "{alice}", "JOBQ_SERVER_KEY": "{sk}"},
     1, "CURVE needs both a key"),
    (["-s", "{tcp}", "list", "--key", "", "--server-key="],
     {"JOBQ_KEY": "{alice}", "JOBQ_SERVER_KEY": "{sk}"}, 1, "needs a key (--key"),
    (["--key", "{dir}/none.key", "--server-key", "{sk}", "-s", "{tcp}", "list"], {}, 1,
     "cannot read key"),
    (["--key", "{dir}/public-only.key", "--server-key", "{sk}", "-s", "{tcp}", "list"], {}, 1,
     "has no secret key"),
    (["--key", "{dir}", "--server-key", "{sk}", "-s", "{tcp}", "list"], {}, 1,
     "is not a CURVE certificate"),
    (["--key", "{alice}", "--server-key", "{dir}/none", "-s", "{tcp}", "list"], {}, 1,
     "cannot read key"),
    (["--key", "{alice}", "--server-key", "~" * 40, "-s", "{tcp}", "list"], {}, 1,
     "not valid Z85"),
    (["--key", "{alice}", "--server-key", "{stranger}", "-s", "{tcp}", "list"], {}, 1, ""),
    (["--key", "{alice}", "--server-key", "{sk}", "-s", "{tcp}", "submit", "--help"],
     {"JOBQ_KEY": "{dir}/none"}, 0, "Opcodes of the daemon at tcp://"),
    (["--key", "{dir}/none", "--server-key", "{sk}", "-s", "{tcp}", "submit", "--help"], {}, 0,
     ""),
    # over ipc the keys are read (as libjobq does) but not used
    (["--key", "{alice}", "--server-key", "{sk}", "-s", "{ipc}", "list", "-o", "id,owner"], {},
     0, ""),
    (["--key", "{dir}/none", "--server-key", "{sk}", "-s", "{ipc}", "list"], {}, 1,
     "cannot read key"),
    (["--key", "{alice}", "-s", "{ipc}", "stats"], {}, 1, "CURVE needs both"),
    (["--key"], {}, 2, "option '--key' needs a value"),
    (["list", "--server-key"], {}, 2, "option '--server-key' needs a value"),
]


@pytest.mark.parametrize("args,env,rc,err", KEYED,
                         ids=[" ".join(a) + (" (env)" if e else "") for a, e, _, _ in KEYED])
def test_keys(secure, args, env, rc, err):
    """--key/--server-key and $JOBQ_KEY/$JOBQ_SERVER_KEY through both CLIs
    against a jobqd with CURVE: the same exit code, output and error."""
    fill = dict(secure.names, sk=secure.server_key, tcp=secure.tcp, ipc=secure.d.endpoint,
                job=secure.job, dir=secure.keys)
    args = [a.format(**fill) for a in args]
    env = {k: v.format(**fill) for k, v in env.items()}
    env = {"JOBQ_KEY": "", "JOBQ_SERVER_KEY": "", **env}
    c, p = run_both(args, NOWHERE, env=env)
    same(c, p, lambda s: normalise_help(elapsed_out(s)))
    assert c.returncode == rc, (c.stdout, c.stderr)
    assert err in c.stdout + c.stderr, (c.stdout, c.stderr)
    if "--help" in args:
        # the daemon's opcodes after submit's help when the keys let it answer
        assert err or "Opcodes" not in c.stdout, c.stdout
    elif rc == 0:
        assert c.stderr == "" and c.stdout, c.stdout


def test_python_made_keys_serve_both_clis(secure):
    """A key made by jobq-py keygen is the daemon's as one of jobq's: its
    name owns the jobs either CLI submits with it (its role lets it), and
    submit --wait, watch and monitor --events follow them over CURVE
    (events on the daemon's TCP publish endpoint) alike."""
    opts = secure.opts("pyalice")
    c, p = run_both([*opts, "submit", "--wait", "test.log", 'messages=["a", "b"]'], NOWHERE)
    assert c.returncode == p.returncode == 0, (c.stderr, p.stderr)
    jc, jp = int(c.stdout.split()[0]), int(p.stdout.split()[0])
    # Which statuses the watch sees before the end depends on timing.
    same(c, p, lambda s: re.sub(r"(?m)^\[\+T\] status: (queued|waiting|running)\n", "",
                                ids_as(clock_out(elapsed_out(s)), [jc, jp])))
    assert c.stdout.splitlines()[-1].endswith("status: success"), c.stdout
    rows = json.loads(secure.d.ok("--json", "list", "-o", "id,owner", str(jc), str(jp)))["rows"]
    assert rows == [[jc, "pyalice"], [jp, "pyalice"]], rows
    for args in (["watch", jc], ["--json", "watch", jp]):
        c, p = run_both([*opts, *args], NOWHERE)
        same(c, p, elapsed_out)
        assert c.returncode == 0 and ("b\n" in c.stdout or '"b"]' in c.stdout), c.stdout
    # Long enough for the snapshot to come on a loaded machine.
    c, p = run_both([*opts, "monitor", "--events", "--duration", "3"], NOWHERE)
    same(c, p, clock_out)
    assert c.returncode == 0 and " resync start " in c.stdout, (c.stdout, c.stderr)
