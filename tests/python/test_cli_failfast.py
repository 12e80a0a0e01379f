"""The jobq CLI (and libjobq under it) fails fast and says why: a daemon
that is not running is reported at once as "jobqd is not running at
ENDPOINT" with exit code 3 (stopped daemon, stale socket file, TCP port
nobody listens on, daemon killed or stopped while a request is in flight);
every timeout and duration is honoured; watch and submit --wait explain a
failed job; monitor names jobqd's --publish when the daemon has no event
endpoint for a TCP client; usage errors exit 2; reals print as a person
writes them; monitor --events keeps one line per event.

Run: /usr/bin/python3 -m pytest tests/python/test_cli_failfast.py
Binaries as in test_cli.py ($JOBQ_BUILD_DIR, default /work/main/build).

Time bounds are generous (the machine may be loaded): "at once" is
asserted as under 2 s where the old behaviour took 30 s or more.
"""
import json
import os
import re
import signal
import socket
import subprocess
import threading
import time

import msgpack
import pytest
import zmq

from test_cli import JOBQ, Daemon, one_error_line, run, watch_lines

FAST = 2.0  # seconds: "at once", with room for a loaded machine
NOT_RUNNING = 3


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def timed(*args, endpoint, timeout=60):
    t0 = time.monotonic()
    p = run(*args, endpoint=endpoint, timeout=timeout)
    return p, time.monotonic() - t0


@pytest.fixture
def daemon(tmp_path):
    d = Daemon(tmp_path)
    yield d
    d.stop()


def stopped_daemon(tmp_path):
    d = Daemon(tmp_path)
    d.ok("shutdown")
    assert d.proc.wait(timeout=15) == 0
    d.stop()
    return d.endpoint


def stale_socket(tmp_path):
    """A socket file nobody listens on, as a crashed daemon leaves."""
    path = str(tmp_path / "jobq.sock")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(path)
    s.close()
    assert os.path.exists(path)
    return f"ipc://{path}"


def closed_tcp_port(tmp_path):
    return f"tcp://127.0.0.1:{free_port()}"


# Every command that talks to the daemon, including the ones that wait.
FAIL_FAST_COMMANDS = [
    ["list"], ["ping"], ["info", "1"], ["stats"], ["cancel", "1"],
    ["watch", "1", "-t", "2"], ["watch", "1", "--poll", "-t", "2"],
    ["monitor", "--duration", "2"], ["monitor", "--events", "-n", "1"],
    ["submit", "test.delay", "duration=0"], ["submit", "test.delay", "duration=0", "--wait"],
    ["submit-many", "-"],
]


@pytest.mark.parametrize("make_endpoint", [stopped_daemon, stale_socket, closed_tcp_port],
                         ids=["stopped", "stale-socket", "tcp-refused"])
def test_not_running_is_reported_at_once(tmp_path, make_endpoint):
    ep = make_endpoint(tmp_path)
    for argv in FAIL_FAST_COMMANDS:
        t0 = time.monotonic()
        p = subprocess.run([JOBQ, "-s", ep, *argv], input="[]", capture_output=True,
                           text=True, timeout=60)
        took = time.monotonic() - t0
        assert p.returncode == NOT_RUNNING, (argv, p.returncode, p.stderr)
        line = one_error_line(p)
        assert line.startswith(f"jobq: jobqd is not running at {ep}"), (argv, line)
        assert took < FAST, (argv, took)
    if make_endpoint is stale_socket:
        assert "nobody listens on" in line
    if make_endpoint is closed_tcp_port:
        assert "connection refused" in line


def test_tcp_connect_nobody_answers_is_given_up_after_3_s():
    """A listening socket whose accept queue is full drops new SYNs (Linux):
    the connect is neither accepted nor refused. libjobq gives it up after
    JOBQ_CONNECT_TIMEOUT_MS (3 s), not after -t."""
    with socket.socket() as lsock:
        lsock.bind(("127.0.0.1", 0))
        lsock.listen(0)
        port = lsock.getsockname()[1]
        fillers = []
        try:
            for _ in range(4):
                c = socket.socket()
                c.setblocking(False)
                try:
                    c.connect(("127.0.0.1", port))
                except BlockingIOError:
                    pass
                fillers.append(c)
            p, took = timed("-t", "20", "ping", endpoint=f"tcp://127.0.0.1:{port}")
        finally:
            for c in fillers:
                c.close()
    assert p.returncode == 1, p.stderr
    assert one_error_line(p) == (f"jobq: cannot reach the daemon at tcp://127.0.0.1:{port}: "
                                 "no answer to the TCP connection within 3 s "
                                 "(host down, or packets dropped?)")
    assert 2.5 < took < 3 + FAST, took


def test_libjobq_status_is_not_running(tmp_path):
    """The CLI's exit code 3 comes from libjobq's NotRunning status; the
    daemon's error replies keep their codes (exit 1)."""
    p = run("--json", "ping", endpoint=stale_socket(tmp_path))
    assert p.returncode == NOT_RUNNING and p.stdout == ""


# ---------------------------------------------------------------- in flight

def start_watchers(d, job):
    """A watch over the stream, one with wait_for_job_change, and a monitor,
    each having printed its first line (so each has a request or stream
    open)."""
    procs = []
    for argv in (["watch", job], ["watch", job, "--poll"], ["monitor", "--events"]):
        p = subprocess.Popen([JOBQ, "-s", d.endpoint, *map(str, argv)], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
        procs.append(p)
    for p in procs:
        box = []
        t = threading.Thread(target=lambda: box.append(p.stdout.readline()), daemon=True)
        t.start()
        t.join(15)
        assert box and box[0], "no first line"
    return procs


def finish(procs):
    """Waits for each process; returns [(returncode, stderr, seconds)]."""
    t0 = time.monotonic()
    out = []
    for p in procs:
        _, err = p.communicate(timeout=60)
        out.append((p.returncode, err, time.monotonic() - t0))
    return out


def test_daemon_killed_while_requests_are_in_flight(daemon):
    job = daemon.submit("test.delay", "duration=60")
    daemon.wait_status(job, {"running"})
    procs = start_watchers(daemon, job)
    time.sleep(0.3)  # the watch --poll request parked in the daemon
    daemon.proc.send_signal(signal.SIGKILL)
    daemon.proc.wait(10)
    for rc, err, took in finish(procs):
        assert rc == NOT_RUNNING, err
        assert f"jobq: jobqd is not running at {daemon.endpoint}" in err, err
        assert took < 3, took


def test_daemon_stopped_while_requests_are_in_flight(tmp_path):
    # A queued job (one run slot, taken): the stop does not end it (no
    # opcode starts while the daemon stops), so the watchers only learn
    # that the daemon went away.
    daemon = Daemon(tmp_path, "--max-running", "1")
    blocker = daemon.submit("test.delay", "duration=60")
    daemon.wait_status(blocker, {"running"})
    job = daemon.submit("test.delay", "duration=0")
    daemon.wait_status(job, {"queued"})
    procs = start_watchers(daemon, job)
    time.sleep(0.3)
    t0 = time.monotonic()
    daemon.ok("shutdown", "--now")
    assert daemon.proc.wait(15) == 0
    for rc, err, took in finish(procs):
        # The daemon may still refuse the parked wait (ShuttingDown, 2)
        # before it goes; either way promptly, and never a timeout.
        assert rc in (2, NOT_RUNNING), err
        assert "jobqd is not running" in err or "ShuttingDown" in err, err
        assert time.monotonic() - t0 < 5
    daemon.stop()


class DroppingDaemon(threading.Thread):
    """A ROUTER on an ipc path that reads one request, then closes (the
    path is gone); with rebind, it binds again and answers the next one."""

    def __init__(self, ctx, endpoint, rebind):
        super().__init__(daemon=True)
        self.ctx, self.endpoint, self.rebind = ctx, endpoint, rebind
        self.sock = ctx.socket(zmq.ROUTER)
        self.sock.bind(endpoint)
        self.requests = []

    def run(self):
        if not self.sock.poll(10000):
            return
        self.requests.append(msgpack.unpackb(self.sock.recv_multipart()[1]))
        self.sock.close(0)
        if not self.rebind:
            return
        # Bind again once the old listener is closed (ZeroMQ closes it in
        # its I/O thread): a connect to the file is refused then.
        path = self.endpoint[len("ipc://"):]
        deadline = time.monotonic() + 2
        while time.monotonic() < deadline:
            probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                probe.connect(path)
            except (ConnectionRefusedError, FileNotFoundError):
                break
            finally:
                probe.close()
            time.sleep(0.001)
        s = self.ctx.socket(zmq.ROUTER)
        s.bind(self.endpoint)
        if s.poll(10000):
            rid, body = s.recv_multipart()
            req = msgpack.unpackb(body)
            self.requests.append(req)
            s.send_multipart([rid, msgpack.packb({
                "v": 1, "id": req["id"], "ok": True,
                "result": {"version": "fake", "protocol": 1, "time": [1700000000, 0],
                           "epoch": 1, "publish": []}})])
            time.sleep(0.2)
        s.close(0)


def test_submit_in_flight_fails_at_once_and_says_it_may_have_run(tmp_path):
    ep = f"ipc://{tmp_path}/fake.sock"
    with zmq.Context() as ctx:
        fake = DroppingDaemon(ctx, ep, rebind=False)
        fake.start()
        p, took = timed("submit", "test.delay", "duration=0", endpoint=ep)
        fake.join(15)
    assert [r["method"] for r in fake.requests] == ["submit_job"]
    assert p.returncode == NOT_RUNNING, p.stderr
    line = one_error_line(p)
    assert "it stopped while submit_job was waiting for its reply" in line
    assert "may or may not have been carried out" in line
    assert took < FAST


def test_read_only_call_in_flight_is_sent_again_after_a_restart(tmp_path):
    ep = f"ipc://{tmp_path}/fake.sock"
    with zmq.Context() as ctx:
        fake = DroppingDaemon(ctx, ep, rebind=True)
        fake.start()
        p, took = timed("--json", "ping", endpoint=ep)
        fake.join(15)
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["version"] == "fake"
    assert [r["method"] for r in fake.requests] == ["ping", "ping"]
    assert took < FAST


# ---------------------------------------------------------------- timeouts

def silent_router(ctx, endpoint):
    s = ctx.socket(zmq.ROUTER)  # accepts connections, never answers
    s.bind(endpoint)
    return s


@pytest.mark.parametrize("argv,limit", [
    (["-t", "1", "watch", "1"], 1),
    (["-t", "1", "watch", "1", "--poll"], 1),
    (["-t", "1", "submit", "test.delay", "--wait"], 1),
    (["monitor", "--duration", "1"], 1),
    (["monitor", "--events", "-n", "1", "-t", "1"], 1),
])
def test_timeouts_and_durations_are_honoured(tmp_path, argv, limit):
    """A daemon that accepts connections and never answers: each command
    gives up within its -t or --duration, not after 30 s or more."""
    ep = f"ipc://{tmp_path}/silent.sock"
    with zmq.Context() as ctx:
        s = silent_router(ctx, ep)
        p, took = timed(*argv, endpoint=ep)
        s.close(0)
    assert p.returncode in (1, 2), (p.returncode, p.stderr)
    assert "no reply within" in one_error_line(p)
    assert limit * 0.8 < took < limit + FAST, took


# ---------------------------------------------------------------- failed jobs

@pytest.mark.parametrize("mode", [[], ["--poll"]])
def test_watch_prints_the_error_of_a_failed_job(daemon, mode):
    for args, msg in ((["test.delay", "duration=0", "fail=true"], "test.delay failed as requested"),
                      (["test.log", 'messages=["x"]', "fail=true"], "test.log failed as requested")):
        job = daemon.submit(*args)
        w = daemon.jobq("watch", job, *mode)
        assert w.returncode == 1, w.stderr
        lines = watch_lines(w.stdout)
        op = args[0]
        assert lines[-2:] == [f"error: opcode 0 ({op}) failed: {msg}", "status: error"], lines
        wj = daemon.jobq("--json", "watch", job, *mode)
        last = json.loads(wj.stdout.splitlines()[-1])
        assert last["status"] == "error"
        assert last["error"] == {"opcode": 0, "op": op, "message": msg}
    p = daemon.jobq("submit", "test.delay", "duration=0", "fail=true", "--wait", *mode)
    assert p.returncode == 1
    lines = watch_lines("\n".join(p.stdout.splitlines()[1:]))
    assert lines[-2] == "error: opcode 0 (test.delay) failed: test.delay failed as requested"
    # A success has no error line nor key.
    ok = daemon.jobq("--json", "submit", "test.delay", "duration=0", "--wait", *mode)
    assert ok.returncode == 0 and "error" not in json.loads(ok.stdout.splitlines()[-1])


def test_watch_says_a_job_was_canceled(daemon):
    job = daemon.submit("test.delay", "duration=60")
    daemon.wait_status(job, {"running"})
    w = subprocess.Popen([JOBQ, "-s", daemon.endpoint, "watch", str(job)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert w.stdout.readline().rstrip().endswith("status: running")
    daemon.ok("cancel", job)
    out, err = w.communicate(timeout=15)
    assert w.returncode == 1, err
    lines = watch_lines(out)
    assert lines[-2:] == ["canceled: opcode 0 (test.delay) was canceled: Job canceled by request",
                          "status: canceled"], lines


# ---------------------------------------------------------------- monitor

def test_monitor_over_tcp_without_a_tcp_event_endpoint(make_daemon_tcp):
    d, tcp = make_daemon_tcp
    assert run("ping", endpoint=tcp).returncode == 0
    p, took = timed("monitor", "--duration", "5", endpoint=tcp)
    assert p.returncode == 1
    line = one_error_line(p)
    assert "cannot reach" not in line
    assert "publishes no tcp:// event endpoint" in line and "--publish" in line, line
    assert took < FAST


@pytest.fixture
def make_daemon_tcp(tmp_path):
    tcp = f"tcp://127.0.0.1:{free_port()}"
    d = Daemon(tmp_path, "--listen", tcp, "--insecure")
    yield d, tcp
    d.stop()


def test_monitor_events_escape_what_they_quote(daemon):
    messages = ['say "hi"', "back\\slash", "two\nlines", "tab\there", "bell\x07", "done"]
    mon = subprocess.Popen([JOBQ, "-s", daemon.endpoint, "monitor", "--events",
                            "--duration", "4"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert " resync start " in mon.stdout.readline()
    job = daemon.submit("test.log", "--args", json.dumps({"messages": messages}))
    daemon.wait_status(job, {"success"})
    out, err = mon.communicate(timeout=30)
    assert mon.returncode == 0, err
    logged = []
    for line in out.splitlines():  # one line per event, whatever the messages hold
        assert re.fullmatch(r"\S+ seq=\d+ job=\d+ serial=\d+ \w+ \w+( op\d+=\w+)*"
                            r'( log\d+="(?:[^"\\\x00-\x1f]|\\.)*")*', line), line
        for m in re.finditer(r' log\d+=("(?:[^"\\]|\\.)*")', line):
            logged.append(json.loads(m.group(1)))
    assert logged == messages, out


# ---------------------------------------------------------------- usage

def test_endpoints_are_checked_as_usage_errors():
    for argv, env in ((["-s", "var/jobq/jobq.sock", "list"], None),
                      (["list", "--server", "tcp://localhost"], None),
                      (["-s", "tcp://127.0.0.1:99999", "ping"], None),
                      (["-s", "inproc://jobq", "ping"], None),
                      (["-s", "ipc://", "ping"], None),
                      (["ping"], "var/jobq/jobq.sock")):
        e = dict(os.environ)
        e.pop("JOBQ_ENDPOINT", None)
        if env:
            e["JOBQ_ENDPOINT"] = env
        p = subprocess.run([JOBQ, *argv], capture_output=True, text=True, env=e, timeout=30)
        assert p.returncode == 2, (argv, p.stderr)
        line = one_error_line(p)
        assert "expected ipc://PATH or tcp://HOST:PORT" in line, line
        if env:
            assert "$JOBQ_ENDPOINT" in line
    # -s wins over a bad $JOBQ_ENDPOINT.
    e = dict(os.environ, JOBQ_ENDPOINT="bogus")
    p = subprocess.run([JOBQ, "-s", "ipc:///nonexistent/jobq.sock", "ping"], capture_output=True,
                       text=True, env=e, timeout=30)
    assert p.returncode == NOT_RUNNING, p.stderr


def test_more_usage_errors_exit_2():
    for argv in (["monitor", "--duration", "x"], ["monitor", "--count", "0"],
                 ["list", "--page-size", "0"], ["submit", "x", "--poll"],
                 ["cancel", "x"], ["autoarchive", "1", "--timeout", "x"],
                 ["shutdown", "--bogus"], ["--json=1", "ping"], ["help", "nosuch"]):
        p = run(*argv, endpoint="ipc:///nonexistent/jobq.sock")
        assert p.returncode == 2, (argv, p.stderr)
        one_error_line(p)


def test_submit_many_names_the_file_and_the_error(tmp_path):
    ep = "ipc:///nonexistent/jobq.sock"
    p = run("submit-many", "/nonexistent/jobs.json", endpoint=ep)
    assert p.returncode == 2
    assert one_error_line(p) == \
        "jobq: submit-many: cannot open /nonexistent/jobs.json: No such file or directory"
    p = run("submit-many", tmp_path, endpoint=ep)
    assert p.returncode == 2
    assert one_error_line(p) == f"jobq: submit-many: cannot read {tmp_path}: Is a directory"
    f = tmp_path / "bad.json"
    f.write_text('[\n  [{"op": "x"}],\n  oops\n]\n')
    p = run("submit-many", f, endpoint=ep)
    assert p.returncode == 2
    assert re.fullmatch(rf"jobq: submit-many: {re.escape(str(f))}: line 3, column \d+: .+",
                        one_error_line(p))


# ---------------------------------------------------------------- numbers

def test_reals_print_as_people_write_them(daemon):
    job = daemon.submit("test.delay", "duration=0.098")
    low = daemon.submit("test.delay", "duration=0.00001")
    daemon.wait_status(low, {"success"})
    raw = daemon.ok("--json", "info", job, low)
    assert '"args":{"duration":0.098}' in raw, raw
    assert '"args":{"duration":1e-05}' in raw, raw
    assert "0.0980000" not in raw
    assert json.loads(raw)[0]["ops"][0]["args"]["duration"] == 0.098
    info = daemon.ok("info", job)
    assert 'Args: {"duration": 0.098}' in info
    table = daemon.ok("list", "-o", "id,summary")
    assert "test.delay(0.098)" in table
    ops = daemon.ok("list", "-o", "ops", "--no-headers", "-n", "1")
    assert '"duration":0.098' in ops, ops
    # watch's elapsed times are reals too: never 17 digits.
    w = daemon.ok("--json", "watch", job)
    for line in w.splitlines():
        assert re.search(r'"elapsed":\d+(\.\d{1,3})?[,}]', line), line
