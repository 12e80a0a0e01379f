"""End-to-end tests of the jobq CLI (clients/jobq_cli*.c) and, through it,
of libjobq, against a real jobqd started by each test's fixture.

Run: /usr/bin/python3 -m pytest tests/python/test_cli.py
Binaries: $JOBQ_BUILD_DIR (default /work/main/build)/broker/jobqd and
$JOBQ_BUILD_DIR/clients/jobq.

No fixed sleeps: every wait is a bounded polling loop on an observable
condition. A few tests need no daemon at all (no daemon reachable, and a
fake ROUTER written here that sends keepalives and stale replies).
"""
import json
import os
import re
import subprocess
import threading
import time

import msgpack
import pytest
import zmq
from jobqd_stop import stop_jobqd

BUILD = os.environ.get("JOBQ_BUILD_DIR", "/work/main/build")
JOBQD = os.path.join(BUILD, "broker", "jobqd")
JOBQ = os.path.join(BUILD, "clients", "jobq")

ISO_TS = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}[+-]\d\d:\d\d"


def watch_lines(text):
    """watch's text lines without their "[+S.SSSs] " elapsed-time prefix
    (which each line must have)."""
    out = []
    for line in text.splitlines():
        m = re.fullmatch(r"\[\+\d+\.\d{3}s\] (.*)", line)
        assert m, line
        out.append(m.group(1))
    return out


def run(*args, endpoint=None, input=None, timeout=60, env_endpoint=True):
    """Runs the CLI; returns the CompletedProcess (text mode)."""
    env = dict(os.environ)
    env.pop("JOBQ_ENDPOINT", None)
    if endpoint and env_endpoint:
        env["JOBQ_ENDPOINT"] = endpoint
    return subprocess.run([JOBQ, *map(str, args)], input=input, capture_output=True,
                          text=True, timeout=timeout, env=env)


def one_error_line(proc):
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("jobq: "), proc.stderr
    return lines[0]


class Daemon:
    """A jobqd serving a private data directory."""

    def __init__(self, tmp_path, *extra):
        assert os.access(JOBQD, os.X_OK), f"jobqd not built at {JOBQD}"
        assert os.access(JOBQ, os.X_OK), f"jobq not built at {JOBQ}"
        self.data_dir = tmp_path / "data"
        self.data_dir.mkdir()
        self.endpoint = f"ipc://{self.data_dir}/jobq.sock"
        self.log = open(tmp_path / "jobqd.log", "w+")
        self.proc = subprocess.Popen([JOBQD, "--data-dir", str(self.data_dir), *extra],
                                     stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 15
        while True:
            if self.proc.poll() is not None:
                self.log.seek(0)
                pytest.fail(f"jobqd exited with {self.proc.returncode}: {self.log.read()}")
            if run("ping", "-t", "0.5", endpoint=self.endpoint).returncode == 0:
                break
            assert time.monotonic() < deadline, "jobqd did not answer ping within 15 s"
            time.sleep(0.02)

    def jobq(self, *args, **kw):
        return run(*args, endpoint=self.endpoint, **kw)

    def ok(self, *args, **kw):
        """Runs the CLI and asserts success; returns stdout."""
        p = self.jobq(*args, **kw)
        assert p.returncode == 0, (args, p.returncode, p.stdout, p.stderr)
        assert p.stderr == "", p.stderr
        return p.stdout

    def js(self, *args, **kw):
        return json.loads(self.ok("--json", *args, **kw))

    def submit(self, *args):
        out = self.ok("submit", *args)
        assert re.fullmatch(r"\d+\n", out), out
        return int(out)

    def job(self, job_id):
        jobs = self.js("info", job_id)
        assert len(jobs) == 1
        return jobs[0]

    def wait_status(self, job_id, statuses, timeout=15):
        deadline = time.monotonic() + timeout
        while True:
            st = self.job(job_id)["status"]
            if st in statuses:
                return st
            assert time.monotonic() < deadline, f"job {job_id} stuck in {st}"
            time.sleep(0.02)

    def stop(self):
        stop_jobqd(self.proc, 10)
        self.log.close()


@pytest.fixture
def daemon(tmp_path):
    d = Daemon(tmp_path)
    yield d
    d.stop()


@pytest.fixture
def make_daemon(tmp_path):
    """Factory for a daemon with extra command-line options."""
    started = []

    def make(*extra):
        d = Daemon(tmp_path, *extra)
        started.append(d)
        return d
    yield make
    for d in started:
        d.stop()


# ---------------------------------------------------------------- basics

def test_ping(daemon):
    out = daemon.ok("ping")
    assert re.match(r"jobqd \S+ \(protocol 1\) at ipc://", out), out
    assert re.search(ISO_TS, out), out
    r = daemon.js("ping")
    assert r["protocol"] == 1 and isinstance(r["version"], str)
    assert isinstance(r["time"], list) and len(r["time"]) == 2


def test_server_option_beats_environment(daemon):
    # -s given before or after the command, with a bogus $JOBQ_ENDPOINT.
    env = dict(os.environ, JOBQ_ENDPOINT="ipc:///nonexistent/jobq.sock")
    for argv in (["-s", daemon.endpoint, "ping"], ["ping", "--server", daemon.endpoint],
                 [f"--server={daemon.endpoint}", "ping"]):
        p = subprocess.run([JOBQ, *argv], capture_output=True, text=True, env=env, timeout=30)
        assert p.returncode == 0, p.stderr


def test_submit_watch_info(daemon):
    job = daemon.submit("test.delay", "duration=0.01")
    w = daemon.jobq("watch", job)
    assert w.returncode == 0, w.stderr
    assert watch_lines(w.stdout)[-1] == "status: success"
    info = daemon.ok("info", job)
    assert f"Job ID: {job}\n" in info
    assert "  Status: success\n" in info
    assert "Opcode 0: test.delay" in info
    assert 'Args: {"duration": 0.01}' in info
    assert re.search(r"Received: +" + ISO_TS, info), info
    assert re.search(r"Processing end: +" + ISO_TS, info), info
    assert "Result: null" in info
    j = daemon.job(job)
    assert j["id"] == job and j["status"] == "success"
    assert j["ops"][0]["op"] == "test.delay"
    assert j["opstatus"] == ["success"]


def test_key_value_arguments_are_json_scalars(daemon):
    job = daemon.submit("test.log", 'messages=["one", "two words"]', "fail=false")
    assert daemon.jobq("watch", job).returncode == 0
    args = daemon.job(job)["ops"][0]["args"]
    assert args == {"messages": ["one", "two words"], "fail": False}
    # --args merged with KEY=VALUE (KEY=VALUE wins), numbers stay numbers.
    job = daemon.submit("test.delay", "--args", '{"duration": 5, "repeat": 1}', "duration=0.2")
    args = daemon.job(job)["ops"][0]["args"]
    assert args == {"duration": 0.2, "repeat": 1}
    daemon.jobq("cancel", job)
    # A bare word is a string: the daemon refuses a string duration.
    p = daemon.jobq("submit", "test.delay", "duration=abc")
    assert p.returncode == 1
    assert "BadArgument" in one_error_line(p)


def test_watch_prints_each_log_entry_once(daemon):
    job = daemon.submit("test.delay", "duration=0.05", "repeat=4")
    w = daemon.jobq("watch", job)
    assert w.returncode == 0, w.stderr
    lines = watch_lines(w.stdout)
    logs = [l for l in lines if not l.startswith("status: ")]
    assert len(logs) == 4, w.stdout
    for i, line in enumerate(logs):
        assert re.fullmatch(ISO_TS + f" Test delay iteration {i}/3", line), line
    assert lines[-1] == "status: success"
    statuses = [l for l in lines if l.startswith("status: ")]
    assert len(statuses) == len(set(statuses))
    # --json: one object per line.
    wj = daemon.jobq("--json", "watch", job)
    objs = [json.loads(l) for l in wj.stdout.splitlines()]
    assert [o["log"][0] for o in objs if "log" in o] == [1, 2, 3, 4]
    assert objs[-1]["status"] == "success" and set(objs[-1]) == {"status", "elapsed"}
    assert all(isinstance(o["elapsed"], (int, float)) for o in objs)


def test_watch_exit_codes(daemon):
    ok = daemon.submit("test.delay", "duration=0")
    assert daemon.jobq("watch", ok).returncode == 0
    bad = daemon.submit("test.delay", "duration=0", "fail=true")
    w = daemon.jobq("watch", bad)
    assert w.returncode == 1
    assert watch_lines(w.stdout)[-1] == "status: error"
    logfail = daemon.submit("test.log", 'messages=["x"]', "fail=true")
    assert daemon.jobq("watch", logfail).returncode == 1
    long = daemon.submit("test.delay", "duration=60")
    daemon.wait_status(long, {"running"})
    watcher = subprocess.Popen([JOBQ, "-s", daemon.endpoint, "watch", str(long)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert "canceled" in daemon.ok("cancel", long)
    out, err = watcher.communicate(timeout=15)
    assert watcher.returncode == 1, err
    assert watch_lines(out)[-1] == "status: canceled"
    missing = daemon.jobq("watch", 999999)
    assert missing.returncode == 2
    assert "job 999999 not found" in one_error_line(missing)


def test_cancel_running_job(daemon):
    job = daemon.submit("test.delay", "duration=60")
    daemon.wait_status(job, {"running"})
    t0 = time.monotonic()
    out = daemon.ok("cancel", job)
    assert out == f"Job {job} will be canceled\n"
    assert daemon.wait_status(job, {"canceled", "success", "error"}) == "canceled"
    assert time.monotonic() - t0 < 10
    j = daemon.job(job)
    assert j["opresult"] == ["Job canceled by request"]
    # A finished job cannot be canceled: one stderr line, exit 1.
    p = daemon.jobq("cancel", job)
    assert p.returncode == 1
    assert "is no longer waiting" in one_error_line(p)
    p = daemon.jobq("cancel", 424242)
    assert p.returncode == 1
    assert one_error_line(p) == "jobq: cancel: Job 424242 not found"
    r = daemon.jobq("--json", "cancel", 424242)
    assert r.returncode == 1 and json.loads(r.stdout) == [False, "Job 424242 not found"]


def test_bad_priority(daemon):
    p = daemon.jobq("submit", "test.delay", "duration=0", "--priority", "5")
    assert p.returncode == 1
    assert re.fullmatch(r"jobq: submit: InvalidPriority: .+", one_error_line(p))
    p = daemon.jobq("submit", "test.delay", "duration=0", "--priority", "urgent")
    assert p.returncode == 2
    assert "invalid priority 'urgent'" in one_error_line(p)
    job = daemon.submit("test.delay", "duration=0", "-p", "-10")
    assert daemon.job(job)["ops"][0]["priority"] == -10
    p = daemon.jobq("priority", job, 7)
    assert p.returncode == 1
    assert "InvalidPriority" in one_error_line(p)


def test_change_priority_of_waiting_job(daemon):
    blocker = daemon.submit("test.delay", "duration=60")
    waiter = daemon.submit("test.delay", "duration=0", "--depends", blocker)
    daemon.wait_status(blocker, {"running"})
    out = daemon.ok("priority", waiter, "-10")
    assert f"have been changed to -10" in out
    assert daemon.job(waiter)["oppriority"] == [-10]
    r = daemon.js("priority", waiter, 10)
    assert r[0] is True
    daemon.ok("cancel", blocker)
    # The dependency was canceled and "canceled" was not accepted: the waiter is canceled.
    assert daemon.wait_status(waiter, {"canceled", "success", "error"}) == "canceled"
    p = daemon.jobq("priority", waiter, 0)
    assert p.returncode == 1
    assert "is finished" in one_error_line(p)


def test_depends_option(daemon):
    first = daemon.submit("test.delay", "duration=0")
    second = daemon.submit("test.delay", "duration=0", "--depends", f"{first}:success,error",
                           "--depends", first)
    assert daemon.job(second)["ops"][0]["depends"] == [[first, ["success", "error"]], [first, []]]
    assert daemon.jobq("watch", second).returncode == 0
    p = daemon.jobq("submit", "test.delay", "duration=0", "--depends", "-1")
    assert p.returncode == 1
    assert "InvalidDependency" in one_error_line(p)
    p = daemon.jobq("submit", "test.delay", "duration=0", "--depends", "x:y")
    assert p.returncode == 2


def test_unknown_opcode(daemon):
    p = daemon.jobq("submit", "no.such.op")
    assert p.returncode == 1
    assert re.fullmatch(r"jobq: submit: UnknownOpcode: .+", one_error_line(p))


def test_drained_queue(daemon):
    assert "set" in daemon.ok("drain", "on")
    assert daemon.js("stats")["drained"] is True
    p = daemon.jobq("submit", "test.delay", "duration=0")
    assert p.returncode == 1
    assert re.fullmatch(r"jobq: submit: Drained: .+", one_error_line(p))
    p = daemon.jobq("submit-many", "-", input='[[{"op": "test.delay", "args": {"duration": 0}}]]')
    assert p.returncode == 1
    assert "Drained" in one_error_line(p)
    job = daemon.submit("test.delay", "duration=0", "--ignore-drain")
    assert daemon.jobq("watch", job).returncode == 0
    assert daemon.js("drain", "off") is True
    daemon.submit("test.delay", "duration=0")
    p = daemon.jobq("drain", "maybe")
    assert p.returncode == 2


def test_queue_full(make_daemon):
    d = make_daemon("--max-jobs", "2")
    d.submit("test.delay", "duration=60")
    d.submit("test.delay", "duration=60")
    p = d.jobq("submit", "test.delay", "duration=0")
    assert p.returncode == 1
    assert re.fullmatch(r"jobq: submit: QueueFull: .+", one_error_line(p))


# ---------------------------------------------------------------- submit-many

def test_submit_many_relative_dependencies(daemon, tmp_path):
    jobs = [
        [{"op": "test.delay", "args": {"duration": 0}}],
        [{"op": "test.log", "args": {"messages": ["after first"]}, "depends": [[-1, []]]}],
        {"ops": [{"op": "test.delay", "args": {"duration": 0}, "priority": 10,
                  "depends": [[-2, ["success"]], [-1, ["success"]]]}]},
        [{"op": "test.delay", "args": {"duration": 0}, "depends": [[-9, []]]}],
    ]
    f = tmp_path / "jobs.json"
    f.write_text(json.dumps(jobs))
    p = daemon.jobq("submit-many", f)
    assert p.returncode == 1, p.stderr
    lines = p.stdout.splitlines()
    assert len(lines) == 4
    a, b, c = map(int, lines[:3])
    assert b == a + 1 and c == a + 2
    assert lines[3] == "error: Unable to resolve relative job ID -9", lines[3]
    assert daemon.job(b)["ops"][0]["depends"] == [[a, []]]
    assert daemon.job(c)["ops"][0]["depends"] == [[a, ["success"]], [b, ["success"]]]
    assert daemon.jobq("watch", c).returncode == 0
    # From stdin, all accepted, with --json.
    r = daemon.js("submit-many", "-", input=json.dumps(jobs[:2]))
    assert [x[0] for x in r] == [True, True]
    assert r[1][1] == r[0][1] + 1


def test_submit_many_bad_input(daemon, tmp_path):
    for text in ("not json", '{"ops": []}', '[42]'):
        p = daemon.jobq("submit-many", "-", input=text)
        assert p.returncode == 2, text
        one_error_line(p)
    p = daemon.jobq("submit-many", tmp_path / "missing.json")
    assert p.returncode == 2
    one_error_line(p)


# ---------------------------------------------------------------- list

def submit_batch(daemon, n):
    jobs = [[{"op": "test.delay", "args": {"duration": 0}}] for _ in range(n)]
    r = daemon.js("submit-many", "-", input=json.dumps(jobs))
    ids = [x[1] for x in r]
    assert all(x[0] for x in r)
    for i in ids:
        daemon.wait_status(i, {"success"})
    return ids


def test_list_table_and_paging(daemon):
    ids = submit_batch(daemon, 25)
    out = daemon.ok("list")
    lines = out.splitlines()
    assert lines[0].split() == ["ID", "STATUS", "PRIORITY", "SUMMARY"]
    assert len(lines) == 26
    assert lines[1].split()[:3] == [str(ids[0]), "success", "normal"]
    assert lines[1].split()[3].startswith("test.delay(")

    before = daemon.js("stats")["requests"].get("query_jobs", 0)
    r = daemon.js("list", "--page-size", 7)
    after = daemon.js("stats")["requests"]["query_jobs"]
    assert [row[0] for row in r["rows"]] == ids
    assert r["more"] is False
    # 4 pages of at most 7 rows (the stats call itself is not a query_jobs).
    assert after - before == 4

    r = daemon.js("list", "--limit", 10, "--page-size", 3)
    assert [row[0] for row in r["rows"]] == ids[:10]
    assert r["more"] is True
    out = daemon.ok("list", "-n", 5, "--no-headers", "-o", "status")
    assert out.splitlines() == ["success"] * 5

    r = daemon.js("list", "-o", "+received_ts,log_serial")
    assert r["fields"] == ["id", "status", "priority", "summary", "received_ts", "log_serial"]
    out = daemon.ok("list", "-o", "id,end_ts", "--limit", 1)
    assert re.fullmatch(r"ID +END_TS\n\d+ +" + ISO_TS + r"\n", out), out


def test_list_status_filter_and_archived(daemon):
    ok = daemon.submit("test.delay", "duration=0")
    bad = daemon.submit("test.delay", "duration=0", "fail=true")
    daemon.wait_status(bad, {"error"})
    daemon.wait_status(ok, {"success"})
    r = daemon.js("list", "--status", "error")
    assert [row[0] for row in r["rows"]] == [bad]
    r = daemon.js("list", "--status", "error,success")
    assert [row[0] for row in r["rows"]] == [ok, bad]
    p = daemon.jobq("list", "--status", "bogus")
    assert p.returncode == 2
    p = daemon.jobq("list", "-o", "id,nosuchfield")
    assert p.returncode == 1
    assert "UnknownField" in one_error_line(p)

    assert daemon.ok("archive", ok) == f"Job {ok} archived\n"
    assert [row[0] for row in daemon.js("list")["rows"]] == [bad]
    r = daemon.js("list", "--archived", "-o", "id,archived")
    assert r["rows"] == [[ok, True], [bad, False]]
    # info finds archived jobs too.
    assert daemon.job(ok)["archived"] is True


# ---------------------------------------------------------------- archive

def test_archive_and_autoarchive(daemon):
    done = daemon.submit("test.delay", "duration=0")
    daemon.wait_status(done, {"success"})
    running = daemon.submit("test.delay", "duration=60")
    daemon.wait_status(running, {"running"})
    p = daemon.jobq("archive", done, running, 31337)
    assert p.returncode == 1
    assert p.stdout == f"Job {done} archived\n"
    errs = p.stderr.splitlines()
    assert len(errs) == 2 and all("was not archived" in e for e in errs)
    r = daemon.jobq("--json", "archive", done)
    assert json.loads(r.stdout) == [{"id": done, "archived": False}]

    more = submit_batch(daemon, 3)
    assert daemon.js("autoarchive", "1d") == [0, 0]
    assert daemon.ok("autoarchive", "all", "--timeout", "5") == \
        "Archived 3 jobs, 0 left unexamined\n"
    assert [row[0] for row in daemon.js("list")["rows"]] == [running]
    assert daemon.js("list", "--archived", "-o", "id")["rows"] == \
        [[i] for i in sorted([done, running, *more])]
    for bad_age in ("soon", "5x", "-5"):
        p = daemon.jobq("autoarchive", bad_age)
        assert p.returncode == 2, bad_age
        one_error_line(p)
    daemon.ok("cancel", running)


# ---------------------------------------------------------------- admin

def test_stats(daemon):
    out = daemon.ok("stats")
    assert re.search(r"^live_jobs: \d+$", out, re.M), out
    assert re.search(r"^requests\.stats: \d+$", out, re.M) or "requests" in out
    s = daemon.js("stats")
    for key in ("version", "uptime", "live_jobs", "max_jobs", "drained", "requests", "errors"):
        assert key in s, key


def test_errors_counted_by_code(daemon):
    daemon.jobq("submit", "no.such.op")
    assert daemon.js("stats")["errors"].get("UnknownOpcode") == 1


def test_shutdown(daemon):
    assert daemon.ok("shutdown") == "Daemon is shutting down: running opcodes may finish first\n"
    assert daemon.proc.wait(timeout=15) == 0


def test_shutdown_now_interrupts_running_jobs(daemon):
    job = daemon.submit("test.delay", "duration=60")
    daemon.wait_status(job, {"running"})
    assert daemon.ok("shutdown", "--now") == \
        "Daemon is shutting down now: running jobs are interrupted\n"
    assert daemon.proc.wait(timeout=15) == 0


def test_json_output_everywhere(daemon):
    job = daemon.submit("test.delay", "duration=0")
    daemon.wait_status(job, {"success"})
    for args in (["ping"], ["stats"], ["list"], ["info", job], ["submit", "test.delay",
                 "duration=0"], ["archive", job], ["autoarchive", "all"], ["drain", "off"]):
        out = daemon.ok("--json", *args)
        json.loads(out)
        # --json after the command works the same.
    json.loads(daemon.ok("list", "--json"))


# ---------------------------------------------------------------- usage

COMMANDS = ["submit", "submit-many", "list", "info", "watch", "cancel", "priority",
            "archive", "autoarchive", "drain", "stats", "shutdown", "ping", "monitor",
            "list-fields", "list-opcodes", "version"]


def test_help():
    p = run("--help")
    assert p.returncode == 0
    for c in COMMANDS:
        assert re.search(rf"^  {re.escape(c)} ", p.stdout, re.M), c
        h = run(c, "--help")
        assert h.returncode == 0 and h.stdout.startswith(f"Usage: jobq {c} "), c
        assert run("help", c).stdout == h.stdout


def test_usage_errors():
    for argv in ([], ["frobnicate"], ["submit"], ["info"], ["info", "abc"], ["watch"],
                 ["watch", "1", "2"], ["cancel", "0"], ["priority", "1"], ["list", "--limit", "0"],
                 ["list", "-o"], ["ping", "extra"], ["-t", "0", "ping"], ["-t", "abc", "ping"],
                 ["submit", "test.delay", "noequals"], ["submit", "x", "--args", "[1]"],
                 ["autoarchive"], ["drain", "on", "off"]):
        p = run(*argv, endpoint="ipc:///nonexistent/jobq.sock")
        assert p.returncode == 2, (argv, p.stderr)
        one_error_line(p)


# ---------------------------------------------------------------- no daemon

def test_no_daemon_ipc(tmp_path):
    ep = f"ipc://{tmp_path}/jobq.sock"
    p = run("ping", endpoint=ep)
    assert p.returncode == 3
    line = one_error_line(p)
    assert line.startswith(f"jobq: jobqd is not running at {ep} (no socket file at ")
    assert run("watch", 1, endpoint=ep).returncode == 3


def test_no_daemon_tcp_times_out():
    with zmq.Context() as ctx:
        s = ctx.socket(zmq.ROUTER)  # bound but never answers
        port = s.bind_to_random_port("tcp://127.0.0.1")
        t0 = time.monotonic()
        p = run("-t", "0.4", "list", endpoint=f"tcp://127.0.0.1:{port}")
        assert time.monotonic() - t0 < 5
        s.close(0)
    assert p.returncode == 1
    assert one_error_line(p) == \
        f"jobq: cannot reach the daemon at tcp://127.0.0.1:{port}: no reply within 0.4 s"


class FakeDaemon(threading.Thread):
    """A ROUTER that answers each request with a keepalive, a reply to
    another request id, a frame that is not msgpack, and then the real
    answer, or (answer=False) only keepalives."""

    def __init__(self, ctx, endpoint, answer=True):
        super().__init__(daemon=True)
        self.sock = ctx.socket(zmq.ROUTER)
        self.sock.bind(endpoint)
        self.answer = answer
        self.stop = threading.Event()

    def run(self):
        poller = zmq.Poller()
        poller.register(self.sock, zmq.POLLIN)
        while not self.stop.is_set():
            if not poller.poll(50):
                continue
            rid, body = self.sock.recv_multipart()
            req = msgpack.unpackb(body)
            i = req["id"]
            pack = lambda m: msgpack.packb(m)
            self.sock.send_multipart([rid, pack({"v": 1, "id": i, "keepalive": True})])
            self.sock.send_multipart([rid, pack({"v": 1, "id": i + 1000, "ok": True,
                                                 "result": "stale"})])
            self.sock.send_multipart([rid, b"\xc1 not msgpack"])
            if not self.answer:
                for _ in range(20):
                    self.sock.send_multipart([rid, pack({"v": 1, "id": i, "keepalive": True})])
                    time.sleep(0.05)
                continue
            self.sock.send_multipart([rid, pack({
                "v": 1, "id": i, "ok": True,
                "result": {"version": "fake", "protocol": 1, "time": [1700000000, 5],
                           "method": req["method"], "args": req["args"]}})])
        self.sock.close(0)


def test_client_skips_keepalives_and_stale_replies(tmp_path):
    ep = f"ipc://{tmp_path}/fake.sock"
    with zmq.Context() as ctx:
        fake = FakeDaemon(ctx, ep)
        fake.start()
        try:
            p = run("--json", "ping", endpoint=ep)
        finally:
            fake.stop.set()
            fake.join()
    assert p.returncode == 0, p.stderr
    r = json.loads(p.stdout)
    assert r["version"] == "fake" and r["method"] == "ping" and r["args"] == {}


def test_keepalives_do_not_extend_the_timeout(tmp_path):
    ep = f"ipc://{tmp_path}/fake.sock"
    with zmq.Context() as ctx:
        fake = FakeDaemon(ctx, ep, answer=False)
        fake.start()
        try:
            t0 = time.monotonic()
            p = run("-t", "0.3", "ping", endpoint=ep)
            elapsed = time.monotonic() - t0
        finally:
            fake.stop.set()
            fake.join()
    assert p.returncode == 1
    assert "no reply within 0.3 s" in one_error_line(p)
    assert elapsed < 0.9


def test_daemon_error_reply_is_reported(tmp_path):
    ep = f"ipc://{tmp_path}/fake.sock"
    with zmq.Context() as ctx:
        s = ctx.socket(zmq.ROUTER)
        s.bind(ep)

        def answer():
            rid, body = s.recv_multipart()
            req = msgpack.unpackb(body)
            s.send_multipart([rid, msgpack.packb({"v": 1, "id": req["id"], "ok": False, "error": {
                "code": "QueueFull", "message": "job queue is full (5000 live jobs)"}})])
        t = threading.Thread(target=answer, daemon=True)
        t.start()
        p = run("submit", "test.delay", "duration=1", endpoint=ep)
        t.join(5)
        s.close(0)
    assert p.returncode == 1
    assert one_error_line(p) == "jobq: submit: QueueFull: job queue is full (5000 live jobs)"
