"""Parity of ``jobq-py`` (clients/python/jobq/cli, run as ``python3 -m
jobq``) with the C ``jobq``: the same command lines through both against
the same jobqd must give the same exit codes, the same stdout (text and
--json) and, where it is deterministic, the same stderr.

Run: JOBQ_BUILD_DIR=$PWD/build /usr/bin/python3 -m pytest tests/python/test_py_cli.py
Each test (or module, for the read-only table on a prepared queue) starts
its own jobqd in a temporary directory (test_cli.Daemon).

``run_both`` and ``PYCLI_ENV`` are imported by the tests of the other
commands (watch, monitor, admin).
"""
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from typing import Dict, Optional

import pytest

from test_cli import JOBQ, Daemon

HERE = os.path.dirname(os.path.abspath(__file__))
PYCLI_DIR = os.path.normpath(os.path.join(HERE, "..", "..", "clients", "python"))
#: Environment that makes ``/usr/bin/python3 -m jobq`` this checkout's.
PYCLI_ENV = {"PYTHONPATH": PYCLI_DIR}
PYJOBQ = ["/usr/bin/python3", "-m", "jobq"]


def _env(endpoint: Optional[str], env: Optional[Dict[str, str]]) -> Dict[str, str]:
    e = dict(os.environ)
    e.pop("JOBQ_ENDPOINT", None)
    if endpoint:
        e["JOBQ_ENDPOINT"] = endpoint
    e.update(env or {})
    return e


def run_py(*args, endpoint=None, input=None, timeout=60, env=None, cwd=None):
    """Runs jobq-py (``python3 -m jobq``) with $JOBQ_ENDPOINT = endpoint;
    returns the CompletedProcess (text mode)."""
    e = _env(endpoint, env)
    e.update(PYCLI_ENV)
    return subprocess.run([*PYJOBQ, *map(str, args)], input=input, capture_output=True,
                          text=True, errors="surrogateescape", timeout=timeout, env=e, cwd=cwd)


def run_c(*args, endpoint=None, input=None, timeout=60, env=None, cwd=None):
    """Runs the C jobq, as run_py."""
    return subprocess.run([JOBQ, *map(str, args)], input=input, capture_output=True,
                          text=True, errors="surrogateescape", timeout=timeout,
                          env=_env(endpoint, env), cwd=cwd)


def run_both(argv, endpoint=None, input=None, timeout=60, env=None, cwd=None):
    """Runs the same command line through the C jobq, then jobq-py, with
    the same environment ($JOBQ_ENDPOINT = endpoint when given, plus env)
    and stdin; returns (c, py), two CompletedProcess (text mode)."""
    argv = [str(a) for a in argv]
    c = run_c(*argv, endpoint=endpoint, input=input, timeout=timeout, env=env, cwd=cwd)
    py = run_py(*argv, endpoint=endpoint, input=input, timeout=timeout, env=env, cwd=cwd)
    return c, py


_DEFAULT_EP = re.compile(r"(default \$JOBQ_ENDPOINT, else\n {27})ipc://\S+")


def normalise_help(text):
    """Help text with the default endpoint replaced: the C jobq shows its
    build's run directory, jobq-py its checkout's (both "where the daemon
    of this checkout listens", at different paths here)."""
    return _DEFAULT_EP.sub(r"\1DEFAULT", text)


def assert_same(argv, endpoint=None, input=None, stderr=True, norm=None, env=None,
                rc=None, cwd=None):
    """Runs argv both ways (run_both) and asserts the same exit code, the
    same stdout (after norm, when given, and normalise_help) and, unless
    stderr is False, the same stderr. rc, when given, is the exit code
    both must have. Returns (c, py)."""
    c, py = run_both(argv, endpoint=endpoint, input=input, env=env, cwd=cwd)
    what = " ".join(map(str, argv))
    n = norm or (lambda s: s)
    assert py.returncode == c.returncode, (what, c.returncode, py.returncode, c.stderr,
                                           py.stderr)
    if rc is not None:
        assert c.returncode == rc, (what, c.returncode, c.stderr)
    assert normalise_help(n(py.stdout)) == normalise_help(n(c.stdout)), what
    if stderr:
        assert n(py.stderr) == n(c.stderr), what
    return c, py


def ids_norm(text):
    """Text with every number replaced (job ids of two runs differ)."""
    return re.sub(r"\d+", "N", text)


# ---------------------------------------------------------------- a prepared queue

@pytest.fixture
def daemon(tmp_path):
    d = Daemon(tmp_path)
    yield d
    d.stop()


@pytest.fixture(scope="module")
def queue(tmp_path_factory):
    """A jobqd holding jobs in every status, with logs, results,
    dependencies, priorities, reals, non-ASCII and control characters, and
    jobs of a worker; the read-only commands below run both ways on it.
    Yields (daemon, ids)."""
    d = Daemon(tmp_path_factory.mktemp("pycli"))
    worker = None
    try:
        ids = prepare_queue(d)
        # Opcodes a worker runs: info shows the worker (and its attempt).
        worker = start_worker(d)
        ids["by_worker"] = d.submit("py.done", "x=1")
        ids["held"] = d.submit("py.hold", "n=2", "-p", "low")
        d.wait_status(ids["by_worker"], {"success"})
        d.wait_status(ids["held"], {"running"})
        deadline = time.monotonic() + 15
        while not d.job(ids["held"])["worker"]:
            assert time.monotonic() < deadline, "the worker's job never shows its worker"
            time.sleep(0.02)
        yield d, ids
    finally:
        if worker is not None:
            worker.stop()
            worker.thread.join(15)
        d.stop()


def prepare_queue(d):
    """Jobs of every status on d; returns their ids by name."""
    ids = {}
    ids["log"] = d.submit("test.log", 'messages=["héllo", "tab\\there", "ctl\\u001f", '
                          '"q\\"/b\\\\", "日本\\u2028"]')
    ids["repeat"] = d.submit("test.delay", "duration=0.098", "repeat=2", "-p", "low")
    ids["error"] = d.submit("test.delay", "duration=0.0", "fail=true", "-d",
                            f"{ids['log']}:success,error")
    ids["running"] = d.submit("test.delay", "duration=600", "-p", "high")
    ids["waiting"] = d.submit("test.log", 'messages=["x"]', "-d", ids["running"])
    ids["canceled"] = d.submit("test.delay", "duration=0", "-d", ids["running"])
    ids["archived"] = d.submit("test.log", "messages=[]")
    many = os.path.join(str(d.data_dir), "..", "many.json")
    with open(many, "w") as f:
        json.dump([{"ops": [{"op": "test.log", "args": {"messages": ["a"]}, "priority": "low"},
                            {"op": "test.delay", "args": {"duration": 1e-7},
                             "priority": -10}]},
                   [{"op": "test.delay", "args": {"duration": 0}, "depends": [[-1, ["error"]]]}]],
                  f)
    out = d.ok("submit-many", many)
    ids["two_ops"], ids["dep_canceled"] = map(int, out.split())
    for key in ("log", "repeat", "error", "archived", "two_ops"):
        d.wait_status(ids[key], {"success", "error"})
    d.wait_status(ids["running"], {"running"})
    d.ok("cancel", ids["canceled"])
    d.wait_status(ids["canceled"], {"canceled"})
    d.wait_status(ids["dep_canceled"], {"canceled", "error"})
    d.ok("archive", ids["archived"])
    return ids


def start_worker(d):
    """A jobq.Worker (in a thread of this process) serving py.done (a
    result and a log entry) and py.hold (running until the worker stops)."""
    sys.path.insert(0, PYCLI_DIR)
    import jobq
    w = jobq.Worker(endpoint=f"ipc://{d.data_dir}/workers.sock", name="pyw-\u00e9")

    @w.opcode("py.done", description="")
    def done(job):
        job.feedback("step 1", type="progress")
        return {"r": [1.5, None, "\u00e9"]}

    @w.opcode("py.hold", args=[{"name": "n", "type": "integer", "required": True,
                                "description": "ignored"}, "m"],
              description="runs until its worker stops")
    def hold(job):
        job.feedback("holding")
        job.cancelled.wait(600)
        raise RuntimeError("stopped")
    w.thread = threading.Thread(target=w.run, daemon=True)
    w.thread.start()
    deadline = time.monotonic() + 15
    while not w.ready:
        assert time.monotonic() < deadline, "the worker was not welcomed within 15 s"
        time.sleep(0.02)
    return w


#: The read-only parity table, run on the prepared queue: (argv, the exit
#: code both must give). "{name}" is the id of that job of the queue,
#: "ALL" every id, "{ep}" the daemon's endpoint.
READ_ONLY = [
    (["list"], 0),
    (["--json", "list"], 0),
    (["list", "--json"], 0),
    (["list", "-o", "+opresult,received_ts,oplog"], 0),
    (["list", "-o", "id,ops,oppriority,opstart,opexec,opend,summary,opstatus"], 0),
    (["list", "-o", "start_ts,end_ts,worker,opworker,opattempt,archived,log_serial,"
                    "change_serial,priority"], 0),
    (["--json", "list", "-o", "+opresult,oplog,ops,received_ts"], 0),
    # Columns of non-ASCII text are as wide as jobq makes them (in bytes).
    (["list", "-o", "oplog,worker,opworker,opresult,id"], 0),
    (["list", "-o", "id,owner,status"], 0),
    (["--json", "list", "-o", "owner", "--archived"], 0),
    (["list", "--status", "success,error"], 0),
    (["list", "--status", "running", "--status", "waiting,canceled"], 0),
    (["--json", "list", "--status=canceled"], 0),
    (["list", "--archived"], 0),
    (["--json", "list", "--archived", "-o", "id,archived"], 0),
    (["list", "-n", "2"], 0),
    (["--json", "list", "-n2"], 0),
    (["list", "--page-size", "1"], 0),
    (["--json", "list", "--page-size=2", "--limit", "3"], 0),
    (["list", "--no-headers", "-o", "id,status"], 0),
    (["list", "{waiting}", "{log}", "{running}", "99", "{archived}"], 1),
    (["--json", "list", "99", "{waiting}", "-o", "status,summary"], 1),
    (["list", "ALL", "--status", "success", "-n", "1"], 0),
    (["--json", "list", "ALL", "--status", "success", "-n", "1"], 0),
    (["list", "-o", "id,bogus"], 1),
    (["list", "-o", ""], 2),
    (["list", "-o", ",,"], 2),
    (["list", "--status", "nope"], 2),
    (["list", "-n", "0"], 2),
    (["list", "-n", "x"], 2),
    (["list", "--page-size", "0"], 2),
    (["list", "--page-size", "100001"], 2),
    (["list", "abc"], 2),
    (["list", "0"], 2),
    (["list", "--archived=yes"], 2),
    (["list", "-o"], 2),
    (["list", "--bogus"], 2),
    (["list", "-x"], 2),
    (["list-fields"], 0),
    (["--json", "list-fields"], 0),
    (["list-opcodes"], 0),
    (["list-opcodes", "--json"], 0),
    (["list-fields", "extra"], 2),
    (["list-opcodes", "-5"], 2),
    (["info", "ALL"], 0),
    (["--json", "info", "ALL"], 0),
    (["info", "99", "{log}", "98", "{error}"], 1),
    (["--json", "info", "{two_ops}", "99"], 1),
    (["info", "--", "{repeat}"], 0),
    (["info"], 2),
    (["info", "x"], 2),
    (["info", "-1"], 2),
    (["info", "1", "--all"], 2),
    (["-t", "5", "info", "{archived}"], 0),
    (["info", "{archived}", "-t", "2.5s", "-s", "{ep}"], 0),
    (["--timeout=1m", "--server={ep}", "--json", "list"], 0),
]


@pytest.mark.parametrize("argv,rc", READ_ONLY, ids=[" ".join(a) for a, _ in READ_ONLY])
def test_read_only_parity(queue, argv, rc):
    d, ids = queue
    words = []
    for a in argv:
        words += ([str(i) for i in sorted(ids.values())] if a == "ALL"
                  else [a.format(ep=d.endpoint, **ids)])
    c, py = assert_same(words, endpoint=d.endpoint, rc=rc)
    if "--json" in argv and c.stdout:
        json.loads(py.stdout)  # one JSON text


def test_prepared_queue_is_varied(queue):
    """The table above only proves something if the queue holds what it
    should: every status, archived, logs with escapes, reals."""
    d, ids = queue
    rows = json.loads(d.ok("--json", "list", "--archived", "-o", "id,status,archived"))["rows"]
    assert {r[1] for r in rows} == {"success", "error", "running", "waiting", "canceled"}
    assert any(r[2] for r in rows)
    text = d.ok("info", ids["log"], ids["repeat"], ids["by_worker"], ids["held"])
    assert "\\u001F" in text and "日本" in text and '0.098' in text
    assert re.search(r"\n  Worker: pyw-é#\d+\n", text), text
    assert re.search(r"\n      Worker: pyw-é#\d+ \(attempt 1\)\n", text), text


# ---------------------------------------------------------------- help and usage

HELP_LINES = [["help"], ["--help"], ["-h"], ["help", "list"], ["help", "submit"],
              ["help", "bogus"], ["help", "list", "info"], ["help", "-s", "nonsense"]]
HELP_LINES += [[cmd, "--help"] for cmd in (
    "submit", "submit-many", "list", "list-fields", "list-opcodes", "info", "watch", "monitor",
    "cancel", "priority", "archive", "autoarchive", "drain", "stats", "shutdown", "ping",
    "version", "keygen", "http-token", "help")]
HELP_LINES += [["info", "-h", "--bogus"], ["list", "--bogus", "-h"], ["-t", "3", "cancel", "-h"]]


@pytest.mark.parametrize("argv", HELP_LINES, ids=lambda a: " ".join(a))
def test_help_parity(queue, argv):
    """Help texts, with the daemon's opcodes after submit's."""
    c, py = assert_same(argv, endpoint=queue[0].endpoint)
    if argv[-1] in ("--help", "-h") and "--bogus" not in argv or argv in (["help"],
                                                                           ["help", "list"]):
        assert c.returncode == 0 and c.stdout.startswith("Usage: jobq")
    if "submit" in argv:
        assert "Opcodes of the daemon at" in py.stdout


def test_help_without_daemon(tmp_path):
    """submit's help without a daemon: no opcodes, no error."""
    c, py = assert_same(["submit", "--help"], endpoint=f"ipc://{tmp_path}/none.sock", rc=0)
    assert "Opcodes" not in py.stdout and py.stderr == ""


def test_default_endpoint_in_help():
    """jobq-py shows, as jobq does, its checkout's var/jobq/jobq.sock."""
    py = run_py("--help")
    root = os.path.dirname(os.path.dirname(os.path.realpath(PYCLI_DIR)))
    assert f"ipc://{root}/var/jobq/jobq.sock\n" in py.stdout, py.stdout


USAGE_LINES = [
    [], ["bogus"], ["-5"], ["--bogus", "list"], ["-x"], ["-t"], ["-t", "0", "list"],
    ["-t", "abc", "list"], ["-t", "3x", "list"], ["-t", "-1", "list"], ["-t", "2e7", "list"],
    ["list", "-t", "nan"], ["-s", "", "list"], ["-s", "foo", "list"], ["list", "-s", "tcp://h"],
    ["-s", "tcp://h:0", "list"], ["-s", "tcp://:5", "list"], ["-s", "tcp://h:65536", "info", "1"],
    ["-s", "ipc://", "list-fields"], ["--json=1", "list"], ["--", "list", "-x"], ["-s"],
    ["--version", "--bogus"], ["-", "list"], ["submit"], ["submit", "test.delay", "foo"],
    ["submit", "test.delay", "=x"], ["submit", "test.delay", "--args", "[1]"],
    ["submit", "test.delay", "--args", "{\"a\": 1, \"a\": 2}"],
    ["submit", "test.delay", "--args", "nope"], ["submit", "test.delay", "-p", "urgent"],
    ["submit", "test.delay", "-p", "1000001"], ["submit", "test.delay", "-d", "x"],
    ["submit", "test.delay", "-d", ":success"], ["submit", "test.delay", "-d", "1" * 40],
    ["submit", "test.delay", "duration=0", "--poll"], ["submit", "-wp"],
    ["submit-many"], ["submit-many", "a", "b"], ["submit-many", "/nonexistent/jobs.json"],
    # Words that are not UTF-8 (bytes 0xff, 0xe9 alone).
    ["submit", "\udcff"], ["submit", "test.delay", "k\udcff=1"], ["submit", "x", "k=\udce9"],
    ["submit-many", "/nonexistent/\udcff"], ["--\udcff"], ["list", "\udcff"],
    ["list", "-o", "\udcff"], ["bogus\udce9"],
    ["--key"], ["--server-key"], ["list", "--key"], ["--key", "k", "-t"],
    ["keygen", "\udcff"], ["keygen", "a\udce9b", "--role", "admin"],
]


@pytest.mark.parametrize("argv", USAGE_LINES, ids=lambda a: " ".join(a) or "(none)")
def test_usage_parity(tmp_path, argv):
    """Bad command lines: exit code 2 and the same message, before any
    daemon is asked (none runs here)."""
    assert_same(argv, endpoint=f"ipc://{tmp_path}/none.sock", rc=2)


def test_bad_endpoint_from_environment(tmp_path):
    c, py = assert_same(["list"], endpoint="var/jobq/jobq.sock", rc=2)
    assert "(from $JOBQ_ENDPOINT)" in py.stderr
    # -s wins over the environment: then not "from $JOBQ_ENDPOINT".
    c, py = assert_same(["list", "-s", "nope"], endpoint="var/jobq/jobq.sock", rc=2)
    assert "$JOBQ_ENDPOINT" not in py.stderr


# ---------------------------------------------------------------- no daemon

NOT_RUNNING_LINES = [["list"], ["--json", "list"], ["list", "1", "2"], ["info", "1"],
                     ["list-fields"], ["list-opcodes"], ["submit", "test.delay", "duration=0"],
                     ["submit", "test.delay", "duration=0", "--wait"],
                     ["submit-many", "JOBS"]]


@pytest.mark.parametrize("argv", NOT_RUNNING_LINES, ids=lambda a: " ".join(a))
def test_not_running_parity(tmp_path, argv):
    """No socket file, a socket file nobody listens on, a refused TCP
    connection: exit code 3 and the same message."""
    jobs = tmp_path / "jobs.json"
    jobs.write_text('[[{"op": "test.delay", "args": {"duration": 0}}]]')
    argv = [str(jobs) if a == "JOBS" else a for a in argv]
    c, py = assert_same(argv, endpoint=f"ipc://{tmp_path}/none.sock", rc=3)
    assert "jobqd is not running at" in py.stderr and "no socket file" in py.stderr
    if argv[0] not in ("list", "submit-many"):
        return  # the other ways of not running: for a few commands
    stale = tmp_path / "stale.sock"
    import socket
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(stale))
    s.close()  # the file stays, nobody listens: what a killed jobqd leaves
    c, py = assert_same(argv, endpoint=f"ipc://{stale}", rc=3)
    assert "nobody listens" in py.stderr
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    c, py = assert_same(argv, endpoint=f"tcp://127.0.0.1:{port}", rc=3)
    assert "connection refused" in py.stderr


def test_no_reply_parity(tmp_path):
    """A peer that takes requests and never answers: "cannot reach the
    daemon at ENDPOINT: no reply within T s", exit code 1."""
    import zmq
    ep = f"ipc://{tmp_path}/mute.sock"
    with zmq.Context() as ctx:
        s = ctx.socket(zmq.ROUTER)
        s.setsockopt(zmq.LINGER, 0)
        s.bind(ep)
        try:
            for argv in (["-t", "0.3", "list-fields"], ["info", "1", "-t", "0.25"]):
                c, py = assert_same(argv, endpoint=ep, rc=1)
                assert "cannot reach the daemon at %s: no reply within" % ep in py.stderr
        finally:
            s.close(0)


# ---------------------------------------------------------------- submissions

def _job_shape(d, job_id):
    """What a submission made: the job's opcodes and priority."""
    j = d.job(job_id)
    return j["ops"], j["priority"], j["oppriority"]


SUBMITS = [
    ["submit", "test.delay", "duration=0"],
    ["--json", "submit", "test.delay", "duration=0.25", "fail=false", "repeat=0"],
    ["submit", "test.log", "messages=[\"a\", \"é\\u0001\", \"\\ud83d\\ude00\"]", "-p", "low"],
    ["submit", "test.delay", "duration=0", "-p", "HIGH", "-d", "1", "-d", "2:success,error",
     "--depends=3:canceled,,"],
    ["submit", "test.delay", "--args", "{\"duration\": 5, \"fail\": true}", "duration=0"],
    ["submit", "test.delay", "-a{\"duration\":0}", "repeat=1", "--priority=-10"],
    ["submit", "test.delay", "duration=1.0e0", "--ignore-drain"],
]
SUBMIT_FAILS = [
    ["submit", "test.delay", "name=x"],               # BadArgument
    ["submit", "no.such.op"],                         # UnknownOpcode
    ["submit", "test.delay", "duration=0", "-p", "3"],  # InvalidPriority
    ["submit", "test.delay", "duration=0", "-d", "999"],  # InvalidDependency
    ["submit", "test.delay", "duration=0", "--wait", "-d", "999"],  # --wait: 2
    ["submit", "test.delay", "duration=01", "x=1e999", "y=NaN", "z=[1,]", "w=\"\\u0000\""],
    ["submit", "test.log", "messages=[]", "--", "-p=low"],  # after --, a KEY=VALUE
]


def test_submit_parity(daemon):
    """Each submission through both: the same exit code, output of the same
    shape, the same stderr, and jobs alike (opcodes, arguments as the
    daemon got them, priorities, dependencies)."""
    # Jobs 1-3 exist for the dependencies above.
    for _ in range(3):
        daemon.submit("test.delay", "duration=0")
    for argv in SUBMITS:
        c, py = assert_same(argv, endpoint=daemon.endpoint, norm=ids_norm, rc=0)
        assert re.fullmatch(r"\d+\n", py.stdout), py.stdout
        assert _job_shape(daemon, int(c.stdout)) == _job_shape(daemon, int(py.stdout)), argv
    for argv in SUBMIT_FAILS:
        c, py = assert_same(argv, endpoint=daemon.endpoint)
        assert c.returncode in (1, 2), (argv, c.stderr)
        assert c.stdout == "" and c.stderr.startswith("jobq: "), argv


def test_submit_values_parity(daemon):
    """KEY=VALUE values are JSON when the C jobq reads them as JSON: the
    daemon refuses both jobs alike, naming each value's type."""
    for value in ("0.5", "1e3", "-0", "01", "1.", ".5", "true", "tru", "null", "[1,2]",
                  "{\"a\":1}", "{\"a\":1,\"a\":2}", "\"s\"", "NaN", "Infinity", "1e999",
                  "99999999999999999999", "\"\\ud800\"", "\"é\"", " 7 ", "[1]x", ""):
        c, py = assert_same(["submit", "test.delay", f"duration={value}"],
                            endpoint=daemon.endpoint, norm=ids_norm)
        if c.returncode == 0:
            assert _job_shape(daemon, int(c.stdout)) == _job_shape(daemon, int(py.stdout))


def test_submit_drained_parity(daemon):
    daemon.ok("drain", "on")
    c, py = assert_same(["submit", "test.delay", "duration=0"], endpoint=daemon.endpoint, rc=1)
    assert "Drained" in py.stderr
    assert_same(["submit", "test.delay", "duration=0", "--ignore-drain"],
                endpoint=daemon.endpoint, norm=ids_norm, rc=0)


def test_submit_wait_parity(daemon):
    """submit --wait: the id, then watch's lines and exit codes."""
    for argv, rc in ((["submit", "-w", "test.delay", "duration=0"], 0),
                     (["submit", "test.delay", "duration=0", "fail=true", "--wait", "--poll"],
                      1)):
        c, py = run_both(argv, endpoint=daemon.endpoint)
        assert c.returncode == py.returncode == rc, (c.stderr, py.stderr)
        # Which statuses watch sees on the way depends on timing: the id
        # first and the final status last must agree.
        cl, pl = c.stdout.splitlines(), py.stdout.splitlines()
        assert re.fullmatch(r"\d+", pl[0]) and re.fullmatch(r"\d+", cl[0])
        assert re.fullmatch(r"\[\+\d+\.\d{3}s\] .*", pl[1]), pl
        final = lambda lines: [re.sub(r"^\[\+\d+\.\d{3}s\] ", "", ln) for ln in lines
                               if "error:" in ln or "status: error" in ln
                               or "status: success" in ln]
        assert final(pl) == final(cl)
        assert py.stdout.splitlines()[-1].endswith("status: " + ("success" if rc == 0
                                                                 else "error"))


SUBMIT_MANY_FILES = {
    "relative": ([{"ops": [{"op": "test.delay", "args": {"duration": 0}, "priority": "low"}]},
                  [{"op": "test.delay", "args": {"duration": 0},
                    "depends": [[-1, ["success"]]]}],
                  [{"op": "test.log", "args": {"messages": ["x"]}, "priority": "High",
                    "depends": [[-2, []], [-1, ["success", "error"]]]},
                   {"op": "test.delay", "args": {"duration": 0.5e-3}}]], 0),
    "refused": ([[{"op": "test.delay", "args": {"duration": 0}}],
                 [{"op": "no.such"}],
                 [{"op": "test.delay", "args": {"duration": 0}, "priority": 5}],
                 [{"op": "test.delay", "args": {"duration": 0}, "priority": "urgent"}],
                 [{"op": "test.delay", "args": {"duration": 0}, "depends": [[-9, []]]}],
                 []], 1),
    "empty": ([], 0),
}


@pytest.mark.parametrize("name", sorted(SUBMIT_MANY_FILES))
def test_submit_many_parity(daemon, tmp_path, name):
    jobs, rc = SUBMIT_MANY_FILES[name]
    path = tmp_path / "jobs.json"
    path.write_text(json.dumps(jobs))
    for argv in (["submit-many", path], ["--json", "submit-many", path]):
        c, py = assert_same(argv, endpoint=daemon.endpoint, norm=ids_norm, rc=rc)
        assert len(py.stdout.splitlines()) == (len(jobs) if "--json" not in argv else 1)
        if "--json" in argv:
            cj, pj = json.loads(c.stdout), json.loads(py.stdout)
            ok = [(a[1], b[1]) for a, b in zip(cj, pj) if a[0]]
            assert [a[0] for a in cj] == [b[0] for b in pj]
        else:
            ok = [(int(a), int(b)) for a, b in zip(c.stdout.split("\n"),
                                                   py.stdout.split("\n")) if a.isdigit()]
        for a, b in ok:
            sa, sb = _job_shape(daemon, a), _job_shape(daemon, b)
            # Relative dependencies resolve to each run's own jobs.
            assert ids_norm(json.dumps(sa)) == ids_norm(json.dumps(sb))
    # From stdin too.
    assert_same(["submit-many", "-"], endpoint=daemon.endpoint, input=json.dumps(jobs),
                norm=ids_norm, rc=rc)


@pytest.mark.parametrize("text", [
    "", "[", "{\"ops\": 1}", "[1]", "[{\"ops\": {}}]", "[[1, 2]", "[[]] x", "[[\"\\x\"]]",
    "\n\n  [[{\"op\": \"a\", \"op\": \"b\"}]]", "[[{\"op\": \"日本語の長い名前ですね\" 1}]]",
    "[[{\"op\": NaN}]]", "[\"\\ud800\"]", "[99999999999999999999]", "[1,]", "{\"a\" 1}",
    "{1:2}", "[-]", "[01]", "[1.]", "[.5]", "[1e]", "[-01]", "[tru]", "[1e999]", "x",
    "[\"a\tb\"]", "[\"a\nb\"]", "[\"\\u12g4\"]", "[\"\\ud800\\u0041\"]", "[\"\\udc00\"]",
    "{\"a\":1,}", "[1]\n  \n x", "\ufeff[]", "  \n  [\n \"abcdefghijklmnopqrstuvwxyz0123",
    "{\"a\\u0000\":1}", "[\"\\u0000\"]", "[" * 2049 + "]" * 2049, "{\"a\":" * 2049],
    ids=lambda t: repr(t)[:30])
def test_submit_many_bad_file_parity(tmp_path, text):
    """A FILE that is not a JSON list of jobs: exit code 2 and the same
    message (with line and column), from a file or stdin."""
    path = tmp_path / "jobs.json"
    path.write_text(text)
    ep = f"ipc://{tmp_path}/none.sock"
    c, py = assert_same(["submit-many", path], endpoint=ep, rc=2)
    assert str(path) in py.stderr or "job" in py.stderr or "input" in py.stderr
    if len(text) < 12:  # stdin too, for a few
        assert_same(["submit-many", "-"], endpoint=ep, input=text, rc=2)


def test_submit_many_unreadable_parity(tmp_path):
    d = tmp_path / "dir"
    d.mkdir()
    for argv in (["submit-many", d], ["submit-many", tmp_path / "missing.json"]):
        assert_same(argv, endpoint=f"ipc://{tmp_path}/none.sock", rc=2)


def test_submit_many_invalid_utf8_parity(tmp_path):
    path = tmp_path / "jobs.json"
    path.write_bytes(b'[[{"op": "\xff"}]]')
    c, py = assert_same(["submit-many", path], endpoint=f"ipc://{tmp_path}/none.sock", rc=2)
    assert "unable to decode byte 0xff" in py.stderr


# ---------------------------------------------------------------- the installed entry points

def test_python_m_jobq_is_main(tmp_path):
    """``python3 -m jobq`` runs jobq.cli.main; in-process main() returns the
    exit code without exiting."""
    py = run_py("--bogus")
    assert py.returncode == 2 and py.stderr == "jobq: unknown option '--bogus' (see 'jobq --help')\n"
    code = ("import sys; sys.argv = ['x']; from jobq.cli import main; "
            "print(main(['list', '--bogus']))")
    p = subprocess.run(["/usr/bin/python3", "-c", code], capture_output=True, text=True,
                       env={**os.environ, **PYCLI_ENV}, timeout=60)
    assert p.stdout == "2\n" and "unknown option '--bogus'" in p.stderr


def test_closed_stdout(queue):
    """As jobq: output into a closed pipe ends the process quietly, killed
    by SIGPIPE, with nothing on stderr."""
    d, ids = queue
    seen = []
    for argv in ([JOBQ, "list"], [*PYJOBQ, "list"]):
        p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             env={**_env(d.endpoint, None), **PYCLI_ENV})
        p.stdout.close()
        err = p.stderr.read()
        p.wait(60)
        p.stderr.close()
        seen.append((p.returncode, err))
    assert seen[0] == (-signal.SIGPIPE, b""), seen[0]
    assert seen[1] == seen[0], seen


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="no /dev/full")
def test_unwritable_stdout_parity(tmp_path):
    """Output that cannot be written: "jobq: stdout: REASON", exit code 1."""
    results = []
    for cmd, env in (([JOBQ], {}), (PYJOBQ, PYCLI_ENV)):
        with open("/dev/full", "w") as full:
            p = subprocess.run([*cmd, "help"], stdout=full, stderr=subprocess.PIPE, text=True,
                               env={**_env(None, None), **env}, timeout=60)
        results.append((p.returncode, p.stderr))
    assert results[0] == results[1] == (1, "jobq: stdout: No space left on device\n")


class FakeDaemon:
    """A ROUTER that answers every request with the reply made by
    answer(request) (a dict: the reply's fields besides v and id)."""

    def __init__(self, tmp_path, answer):
        import threading
        import zmq
        self.endpoint = f"ipc://{tmp_path}/fake.sock"
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.ROUTER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.bind(self.endpoint)
        self.answer = answer
        self.stop_flag = False
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        import msgpack
        while not self.stop_flag:
            if not self.sock.poll(50):
                continue
            rid, body = self.sock.recv_multipart()
            req = msgpack.unpackb(body, raw=False)
            rep = {"v": 1, "id": req["id"], **self.answer(req)}
            self.sock.send_multipart([rid, msgpack.packb(rep, use_bin_type=True)])

    def close(self):
        self.stop_flag = True
        self.thread.join(10)
        self.sock.close(0)
        self.ctx.term()


def test_values_as_the_c_client_converts_them(tmp_path):
    """What msgpack holds and JSON does not (an integer above int64, NaN
    and infinities, integer map keys) and reals, escapes and non-ASCII
    text: printed as jobq prints them, in JSON and in tables."""
    import math
    fields = [{"name": "big", "description": 2 ** 64 - 1},
              {"name": "reals", "description": [0.1, 1.0, -0.0, 1e300, 2.5e-8, 0.098, 1e16,
                                                123456789.125]},
              {"name": "odd", "description": {"nan": math.nan, "inf": -math.inf, 5: "five",
                                              -3: "minus"}},
              {"name": "text\u00e9\u2028", "description": "a\x01\x1f\x7f\"\\/\n\t\u65e5"},
              {"name": "n", "description": None}, {"description": True}]
    fake = FakeDaemon(tmp_path, lambda req: {"ok": True, "result": fields})
    try:
        for argv in (["list-fields"], ["--json", "list-fields"]):
            c, py = assert_same(argv, endpoint=fake.endpoint, rc=0)
        assert "18446744073709551615" not in c.stdout and "1.8446744073709552e+19" in c.stdout
        assert '"nan":null' in c.stdout and '"5":"five"' in c.stdout
    finally:
        fake.close()


def test_unknown_error_code_parity(tmp_path):
    """An error code a newer daemon may send: Internal to both."""
    fake = FakeDaemon(tmp_path, lambda req: {"ok": False, "error": {
        "code": "BrandNew", "message": "something new"}})
    try:
        c, py = assert_same(["list-opcodes"], endpoint=fake.endpoint, rc=1)
        assert py.stderr == "jobq: list-opcodes: Internal: something new\n"
    finally:
        fake.close()
