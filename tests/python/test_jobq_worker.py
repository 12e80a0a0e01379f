"""End-to-end tests of jobq-worker (clients/jobq_worker_main.c and
jobq_worker_proc.c) and, through it, of libjobq's worker API, against a
real jobqd: jobs are submitted and followed with the C CLI (`jobq`), the
handlers are the examples of examples/handlers or small scripts each test
writes into its own temporary directory.

Run: /usr/bin/python3 -m pytest tests/python/test_jobq_worker.py
Binaries: $JOBQ_BUILD_DIR (default /work/main/build)/broker/jobqd,
clients/jobq and clients/jobq-worker.

No fixed sleeps: every wait is a bounded polling loop on something
observable (a log line of the worker, a job's status or log, a file a
handler writes). Every daemon, worker and handler is stopped by the
fixtures, whatever the outcome.
"""
import json
import os
import queue
import re
import signal
import subprocess
import textwrap
import threading
import time

import pytest

from test_cli import JOBQ, JOBQD, Daemon, run

BUILD = os.environ.get("JOBQ_BUILD_DIR", "/work/main/build")
WORKER = os.path.join(BUILD, "clients", "jobq-worker")
SRC = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EXAMPLES = os.path.join(SRC, "examples", "handlers")


def wait_for(cond, timeout, what):
    """Polls cond() until it returns something true; returns that."""
    deadline = time.monotonic() + timeout
    while True:
        v = cond()
        if v:
            return v
        assert time.monotonic() < deadline, f"timed out after {timeout} s waiting for {what}"
        time.sleep(0.02)


def pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead for our purpose (its parent, the worker, reaps it).
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


class Worker:
    """A jobq-worker process with its stderr in a file."""

    def __init__(self, tmp_path, handlers, *args, endpoint, name="w", wait=True):
        assert os.access(WORKER, os.X_OK), f"jobq-worker not built at {WORKER}"
        self.logpath = tmp_path / f"worker-{name}.log"
        self.log = open(self.logpath, "w")
        env = dict(os.environ)
        env.pop("JOBQ_WORKER_ENDPOINT", None)
        env["TMPDIR"] = str(tmp_path)
        self.proc = subprocess.Popen(
            [WORKER, "--handlers", str(handlers), "--endpoint", endpoint, "--name", name, *args],
            stdout=self.log, stderr=subprocess.STDOUT, env=env)
        if wait:
            self.wait_log("connected to jobqd")

    def text(self):
        with open(self.logpath) as f:
            return f.read()

    def wait_log(self, needle, timeout=15, count=1):
        def seen():
            if self.proc.poll() is not None:
                pytest.fail(f"jobq-worker exited with {self.proc.returncode}: {self.text()}")
            return self.text().count(needle) >= count
        wait_for(seen, timeout, f"'{needle}' in the worker's log:\n{self.text()}")

    def stop(self, timeout=15):
        """SIGTERM; returns the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                pytest.fail(f"jobq-worker did not stop within {timeout} s: {self.text()}")
        self.log.close()
        return self.proc.returncode


@pytest.fixture
def env(tmp_path):
    """A daemon, a handlers directory and a way to start workers; all
    stopped at the end."""
    class Env:
        pass
    e = Env()
    e.tmp = tmp_path
    e.handlers = tmp_path / "handlers"
    e.handlers.mkdir()
    e.daemons = []
    e.workers = []

    def daemon(*extra):
        d = Daemon(tmp_path, *extra)
        d.workers_ep = f"ipc://{d.data_dir}/workers.sock"
        e.daemons.append(d)
        return d

    def worker(*args, handlers=None, name=None, d=None, wait=True):
        d = d or e.daemons[-1]
        w = Worker(tmp_path, handlers or e.handlers, *args, endpoint=d.workers_ep,
                   name=name or f"w{len(e.workers)}", wait=wait)
        e.workers.append(w)
        return w

    def handler(name, body, decl=None):
        path = e.handlers / name
        path.write_text(textwrap.dedent(body).lstrip())
        path.chmod(0o755)
        if decl is not None:
            (e.handlers / (name + ".json")).write_text(json.dumps(decl))
        return path

    e.daemon, e.worker, e.handler = daemon, worker, handler
    yield e
    for w in e.workers:
        w.stop()
    for d in e.daemons:
        d.stop()


def opresult(d, job):
    return d.job(job)["opresult"][0]


def oplog(d, job):
    return d.job(job)["oplog"][0]


def error_message(d, job):
    r = opresult(d, job)
    assert isinstance(r, list) and r[0] == "OpExecError", r
    return r[1][0]


class Watch:
    """`jobq watch ID` in the background, its stdout lines in a queue."""

    def __init__(self, d, job):
        environ = dict(os.environ, JOBQ_ENDPOINT=d.endpoint)
        self.proc = subprocess.Popen([JOBQ, "watch", str(job)], stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True, env=environ)
        self.lines = queue.Queue()
        self.seen = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))

    def wait_line(self, pattern, timeout=15):
        deadline = time.monotonic() + timeout
        while True:
            for line in self.seen:
                if re.search(pattern, line):
                    return line
            left = deadline - time.monotonic()
            assert left > 0, f"no line matching {pattern!r} within {timeout} s: {self.seen}"
            try:
                self.seen.append(self.lines.get(timeout=min(left, 0.2)))
            except queue.Empty:
                pass

    def finish(self, timeout=15):
        rc = self.proc.wait(timeout)
        self.proc.stdout.close()
        return rc


# ---------------------------------------------------------------- examples

def test_example_handlers_end_to_end(env):
    d = env.daemon()
    w = env.worker("--capacity", "2", handlers=EXAMPLES)
    assert "serving 2 opcodes" in w.text()
    ops = {o["name"]: o for o in d.js("list-opcodes")}
    assert ops["sh.echo"]["source"] == "worker"
    assert [a["name"] for a in ops["py.wordcount"]["args"]] == ["text", "top"]

    out = d.ok("submit", "sh.echo", "message=hello there", "times=2", "--wait")
    job = int(out.splitlines()[0])
    assert [e[2:] for e in oplog(d, job)] == [["message", "1/2: hello there"],
                                              ["message", "2/2: hello there"]]
    assert opresult(d, job) == {"echo": {"message": "hello there", "times": 2}}

    text = "the cat\nthe dog\nthe end"
    job = d.submit("py.wordcount", "-a", json.dumps({"text": text, "top": 1}))
    d.wait_status(job, ["success"])
    assert opresult(d, job) == {"lines": 3, "words": 6, "chars": len(text), "top": [["the", 3]]}
    assert [e[3] for e in oplog(d, job)] == ["counted 3/3 lines"]

    # The declaration is enforced at submit: message is required.
    p = d.jobq("submit", "sh.echo", "times=2")
    assert p.returncode != 0 and "message" in p.stderr, p.stderr


def test_arguments_and_environment(env):
    d = env.daemon()
    env.handler("t.env", """\
        #!/usr/bin/python3
        import json, os, sys
        args = json.load(sys.stdin)
        env = {k: v for k, v in os.environ.items() if k.startswith("JOBQ_")}
        with open(os.environ["JOBQ_RESULT_FILE"], "w") as f:
            json.dump({"stdin": args, "env": env}, f)
        """)
    env.worker()
    args = {"dry-run": True, "n": 2, "x": 0.5, "name": "a b", "list": [1], "nothing": None}
    job = d.submit("t.env", "-a", json.dumps(args))
    d.wait_status(job, ["success"])
    r = opresult(d, job)
    assert r["stdin"] == args
    e = r["env"]
    assert e["JOBQ_ARG_DRY_RUN"] == "true"
    assert e["JOBQ_ARG_N"] == "2"
    assert e["JOBQ_ARG_X"] == "0.5"
    assert e["JOBQ_ARG_NAME"] == "a b"
    assert "JOBQ_ARG_LIST" not in e and "JOBQ_ARG_NOTHING" not in e
    assert e["JOBQ_JOB_ID"] == str(job)
    assert e["JOBQ_OPCODE_INDEX"] == "0"
    assert e["JOBQ_ATTEMPT"] == "1"
    assert e["JOBQ_OPCODE"] == "t.env"
    assert e["JOBQ_RESULT_FILE"].startswith(str(env.tmp))
    # The result file is gone once reported.
    assert not os.path.exists(e["JOBQ_RESULT_FILE"])


# ---------------------------------------------------------------- feedback

def test_feedback_reaches_watch_before_the_handler_exits(env):
    d = env.daemon()
    go = env.tmp / "go"
    env.handler("t.slow", f"""\
        #!/bin/sh
        echo "first line"
        echo "a warning" >&2
        i=0
        while [ ! -e {go} ] && [ $i -lt 600 ]; do sleep 0.05; i=$((i+1)); done
        echo "last line"
        """)
    env.worker()
    job = d.submit("t.slow")
    watch = Watch(d, job)
    try:
        watch.wait_line(r"first line$")
        watch.wait_line(r"\[stderr\] a warning$")
        # The handler is still waiting for the file: nothing has ended.
        assert d.job(job)["status"] == "running"
        assert not any("last line" in line for line in watch.seen)
        go.touch()
        watch.wait_line(r"last line$")
        watch.wait_line(r"status: success$")
        assert watch.finish() == 0
    finally:
        go.touch()
        if watch.proc.poll() is None:
            watch.proc.kill()
            watch.finish()
    types = [(e[2], e[3]) for e in oplog(d, job)]
    assert types == [("message", "first line"), ("stderr", "a warning"),
                     ("message", "last line")]


def test_failing_handler_reports_exit_code_and_stderr_tail(env):
    d = env.daemon()
    env.handler("t.fail", """\
        #!/bin/sh
        i=0
        while [ $i -lt 200 ]; do echo "noise line $i" >&2; i=$((i+1)); done
        echo "cannot open the frobnicator" >&2
        exit 3
        """)
    env.handler("t.sig", """\
        #!/bin/sh
        echo "about to die" >&2
        kill -SEGV $$
        """)
    env.worker()
    job = d.submit("t.fail")
    d.wait_status(job, ["error"])
    msg = error_message(d, job)
    assert msg.startswith("exit code 3"), msg
    assert msg.endswith("cannot open the frobnicator"), msg
    assert "noise line 199" in msg and "noise line 0\n" not in msg
    tail = msg.split("stderr:\n", 1)[1]
    assert len(tail.encode()) <= 1024
    # Every line was logged all the same.
    assert len(oplog(d, job)) == 201

    job = d.submit("t.sig")
    d.wait_status(job, ["error"])
    msg = error_message(d, job)
    assert msg.startswith("killed by signal 11 (SIGSEGV)"), msg
    assert msg.endswith("about to die"), msg


def test_result_file_garbage_empty_and_removed(env):
    d = env.daemon()
    env.handler("t.garbage", """\
        #!/bin/sh
        echo '{"unterminated": ' > "$JOBQ_RESULT_FILE"
        """)
    env.handler("t.empty", """\
        #!/bin/sh
        echo "nothing to say"
        """)
    env.handler("t.removed", """\
        #!/bin/sh
        rm -f "$JOBQ_RESULT_FILE"
        """)
    env.handler("t.scalar", """\
        #!/bin/sh
        echo 42 > "$JOBQ_RESULT_FILE"
        """)
    env.worker()
    job = d.submit("t.garbage")
    d.wait_status(job, ["error"])
    assert error_message(d, job).startswith("result file is not JSON: "), error_message(d, job)
    for op in ["t.empty", "t.removed"]:
        job = d.submit(op)
        d.wait_status(job, ["success"])
        assert opresult(d, job) is None
    job = d.submit("t.scalar")
    d.wait_status(job, ["success"])
    assert opresult(d, job) == 42


def test_huge_output_does_not_block_the_worker(env):
    # 100,000 lines, one over 4096 bytes: the daemon keeps what its log
    # limit allows, the handler runs to its end, and the worker goes on
    # serving.
    d = env.daemon("--max-log-entries", "5000")
    env.handler("t.loud", """\
        #!/bin/sh
        head -c 10000 /dev/zero | tr '\\0' x
        echo
        seq 1 100000
        echo '"finished"' > "$JOBQ_RESULT_FILE"
        """)
    env.handler("t.quick", """\
        #!/bin/sh
        echo '"quick"' > "$JOBQ_RESULT_FILE"
        """)
    w = env.worker()
    job = d.submit("t.loud")
    d.wait_status(job, ["success", "error"], timeout=120)
    log = oplog(d, job)
    assert 0 < len(log) <= 5000
    assert len(log[0][3]) == 4096 and set(log[0][3]) == {"x"}
    assert log[1][3] == "1"
    assert d.job(job)["status"] == "success", d.job(job)
    assert opresult(d, job) == "finished"
    job = d.submit("t.quick")
    d.wait_status(job, ["success"])
    assert w.proc.poll() is None


# ---------------------------------------------------------------- stopping

STUBBORN = """\
    #!/bin/sh
    trap 'echo "got TERM, ignoring it" >&2' TERM
    echo $$ > {pidfile}
    echo ready
    while :; do sleep 0.05; done
    """


def test_cancel_of_a_handler_that_ignores_sigterm(env):
    d = env.daemon()
    pidfile = env.tmp / "pid"
    env.handler("t.stubborn", STUBBORN.format(pidfile=pidfile))
    env.worker("--kill-grace", "1")
    job = d.submit("t.stubborn")
    wait_for(lambda: any(e[3] == "ready" for e in oplog(d, job)), 15, "the handler to start")
    pid = int(pidfile.read_text())
    t0 = time.monotonic()
    d.ok("cancel", str(job))
    d.wait_status(job, ["canceled"], timeout=15)
    took = time.monotonic() - t0
    # SIGKILL after the 1 s grace, then done: well before the daemon's own
    # 10 s stop grace.
    assert 0.9 <= took < 6, took
    wait_for(lambda: not pid_alive(pid), 5, "the handler to be gone")
    assert "canceled" in json.dumps(opresult(d, job)).lower(), opresult(d, job)


def test_timeout(env):
    d = env.daemon()
    pidfile = env.tmp / "pid"
    env.handler("t.stubborn", STUBBORN.format(pidfile=pidfile))
    env.worker("--kill-grace", "0.5")
    spec = env.tmp / "jobs.json"
    spec.write_text(json.dumps([[{"op": "t.stubborn", "timeout": 1}]]))
    out = d.ok("submit-many", str(spec))
    job = int(out.split()[0])
    t0 = time.monotonic()
    d.wait_status(job, ["error"], timeout=20)
    took = time.monotonic() - t0
    assert took < 8, took
    msg = error_message(d, job)
    assert "timed out" in msg, msg
    pid = int(pidfile.read_text())
    wait_for(lambda: not pid_alive(pid), 5, "the handler to be gone")


def test_declared_timeout(env):
    d = env.daemon()
    env.handler("t.sleepy", """\
        #!/bin/sh
        exec sleep 60
        """, decl={"description": "sleeps", "timeout": 1})
    env.worker("--kill-grace", "0.5")
    job = d.submit("t.sleepy")
    d.wait_status(job, ["error"], timeout=20)
    assert "timed out" in error_message(d, job)


def test_stop_hands_the_opcode_back_and_kills_the_handler(env):
    d = env.daemon()
    pidfile = env.tmp / "pid"
    env.handler("t.stubborn", STUBBORN.format(pidfile=pidfile))
    env.handler("t.attempt", """\
        #!/bin/sh
        echo "$JOBQ_ATTEMPT" > "$JOBQ_RESULT_FILE"
        """)
    w = env.worker("--kill-grace", "0.5")
    job = d.submit("t.stubborn")
    wait_for(lambda: any(e[3] == "ready" for e in oplog(d, job)), 15, "the handler to start")
    pid = int(pidfile.read_text())
    t0 = time.monotonic()
    assert w.stop() == 0
    assert time.monotonic() - t0 < 5
    assert not pid_alive(pid)
    # The daemon took the opcode back: it waits for a worker again.
    d.wait_status(job, ["queued", "waiting"])
    # A new worker runs its next attempt (and the handler knows).
    (env.handlers / "t.stubborn").write_text("#!/bin/sh\necho \"$JOBQ_ATTEMPT\" > "
                                             "\"$JOBQ_RESULT_FILE\"\n")
    env.worker()
    d.wait_status(job, ["success"])
    assert opresult(d, job) == 2


def test_capacity_limits_handlers_at_once(env):
    d = env.daemon()
    env.handler("t.count", f"""\
        #!/bin/sh
        # Count the handlers running now with one file each.
        touch {env.tmp}/running.$$
        n=$(ls {env.tmp} | grep -c '^running\\.')
        echo "$n" > "$JOBQ_RESULT_FILE"
        sleep 0.3
        rm {env.tmp}/running.$$
        """)
    env.worker("--capacity", "2")
    jobs = [d.submit("t.count") for _ in range(6)]
    for j in jobs:
        d.wait_status(j, ["success"], timeout=30)
    seen = [opresult(d, j) for j in jobs]
    assert max(seen) == 2, seen


# ---------------------------------------------------------------- connection

def test_stopped_worker_loses_its_lease_and_its_late_result_is_refused(env):
    # A worker stopped (SIGSTOP) past the lease time is lost: its opcode is
    # retried on another worker. Resumed, its handler's late done is
    # refused, the worker reconnects, and the retried attempt's result
    # stands.
    d = env.daemon("--worker-heartbeat", "0.2", "--worker-lease", "1")
    go = env.tmp / "go"
    env.handler("t.slow", f"""\
        #!/bin/sh
        echo "attempt $JOBQ_ATTEMPT"
        if [ "$JOBQ_ATTEMPT" = 1 ]; then
            i=0
            while [ ! -e {go} ] && [ $i -lt 600 ]; do sleep 0.05; i=$((i+1)); done
        fi
        echo "$JOBQ_ATTEMPT" > "$JOBQ_RESULT_FILE"
        """)
    first = env.worker(name="first")
    spec = env.tmp / "jobs.json"
    spec.write_text(json.dumps([[{"op": "t.slow", "retry": 1}]]))
    job = int(d.ok("submit-many", str(spec)).split()[0])
    wait_for(lambda: any(e[3] == "attempt 1" for e in oplog(d, job)), 15, "attempt 1")
    first.proc.send_signal(signal.SIGSTOP)
    try:
        # Lost after 1 s; the opcode waits for a worker again.
        wait_for(lambda: d.job(job)["status"] in ("queued", "waiting"), 15,
                 "the opcode to go back to the queue")
        second = env.worker(name="second")
        d.wait_status(job, ["success"])
        assert opresult(d, job) == 2
        go.touch()  # attempt 1 may end now: its worker is still stopped
    finally:
        go.touch()
        first.proc.send_signal(signal.SIGCONT)
    first.wait_log("lost jobqd")
    first.wait_log("connected to jobqd", count=2)
    # The late result changed nothing.
    assert d.job(job)["status"] == "success" and opresult(d, job) == 2
    messages = [e[3] for e in oplog(d, job)]
    assert "attempt 1" in messages and "attempt 2" in messages
    # Both workers serve on.
    second.stop()
    job = d.submit("t.slow")
    d.wait_status(job, ["success"])

def test_killed_worker_fails_the_opcode_or_retries_it(env):
    # kill -9 of jobq-worker mid-opcode: after the lease the opcode ends
    # "worker lost", or, submitted with retry, runs again on another worker.
    d = env.daemon("--worker-heartbeat", "0.2", "--worker-lease", "1")
    hang = env.tmp / "hang"
    pids = env.tmp / "handler.pids"
    hang.touch()
    env.handler("t.hang", f"""\
        #!/bin/sh
        echo $$ >> {pids}
        echo "attempt $JOBQ_ATTEMPT"
        i=0
        while [ -e {hang} ] && [ $i -lt 600 ]; do sleep 0.05; i=$((i+1)); done
        """)
    try:
        victim = env.worker("--capacity", "2", name="victim")
        plain = d.submit("t.hang")
        spec = env.tmp / "jobs.json"
        spec.write_text(json.dumps([[{"op": "t.hang", "retry": 1}]]))
        retried = int(d.ok("submit-many", str(spec)).split()[0])
        wait_for(lambda: all(any(e[3] == "attempt 1" for e in oplog(d, j))
                             for j in (plain, retried)), 15, "both on the victim")
        victim.proc.kill()
        victim.proc.wait()
        hang.unlink()  # the victim's orphaned handlers end; new ones do not wait
        survivor = env.worker(name="survivor")
        d.wait_status(plain, ["error"])
        assert any("worker lost" in m for m in (e[3] for e in oplog(d, plain))) or \
            "worker lost" in json.dumps(d.job(plain))
        d.wait_status(retried, ["success"])
        log = [e[3] for e in oplog(d, retried)]
        assert "attempt 1" in log and "attempt 2" in log
        survivor.stop()
    finally:
        if hang.exists():
            hang.unlink()
        for pid in pids.read_text().split() if pids.exists() else []:
            try:
                os.kill(int(pid), signal.SIGKILL)
            except ProcessLookupError:
                pass


def test_worker_waits_for_the_daemon_and_survives_its_restart(env):
    d = env.daemon()
    env.handler("t.ok", """\
        #!/bin/sh
        echo '"ok"' > "$JOBQ_RESULT_FILE"
        """)
    d.stop()
    env.daemons.remove(d)
    # Started while the daemon is down: it says so once and waits.
    w = env.worker(d=d, wait=False)
    w.wait_log("does not answer", timeout=15)
    # The same data directory, so the same socket.
    d2 = restart(d, env)
    w.wait_log("connected to jobqd", timeout=20)
    job = d2.submit("t.ok")
    d2.wait_status(job, ["success"])
    # A restart: the worker notices and connects again.
    d2.stop()
    env.daemons.remove(d2)
    d3 = restart(d, env)
    w.wait_log("connected to jobqd", timeout=30, count=2)
    job = d3.submit("t.ok")
    d3.wait_status(job, ["success"])
    # Said once per outage (the second may be too short to be said).
    assert 1 <= w.text().count("does not answer") <= 2, w.text()


def restart(d, env):
    """A new jobqd on d's data directory."""
    new = Daemon.__new__(Daemon)
    new.data_dir = d.data_dir
    new.endpoint = d.endpoint
    new.workers_ep = d.workers_ep
    new.log = open(env.tmp / f"jobqd-{len(env.daemons)}-{time.monotonic_ns()}.log", "w+")
    new.proc = subprocess.Popen([JOBQD, "--data-dir", str(d.data_dir)], stdout=new.log,
                                stderr=subprocess.STDOUT)
    wait_for(lambda: new.proc.poll() is not None or
             run("ping", "-t", "0.5", endpoint=new.endpoint).returncode == 0, 15,
             "jobqd to answer ping")
    assert new.proc.poll() is None, "jobqd exited"
    env.daemons.append(new)
    return new


# ---------------------------------------------------------------- usage

def worker_cmd(*args, timeout=10):
    environ = dict(os.environ)
    environ.pop("JOBQ_WORKER_ENDPOINT", None)
    return subprocess.run([WORKER, *args], capture_output=True, text=True, timeout=timeout,
                          env=environ)


def test_help_and_usage_errors(tmp_path):
    p = worker_cmd("--help")
    assert p.returncode == 0 and p.stdout.startswith("Usage: jobq-worker")
    assert "Exit codes:" in p.stdout
    p = worker_cmd("--version")
    assert p.returncode == 0 and p.stdout.startswith("jobq-worker ")
    for args in [[], ["--handlers"], ["--handlers", str(tmp_path), "--capacity", "0"],
                 ["--handlers", str(tmp_path), "--capacity", "x"],
                 ["--handlers", str(tmp_path), "--kill-grace", "-1"],
                 ["--handlers", str(tmp_path), "extra"], ["--bogus"]]:
        p = worker_cmd(*args)
        assert p.returncode == 2, (args, p.stderr)
        assert p.stderr.startswith("jobq-worker: ") and len(p.stderr.splitlines()) == 1, \
            (args, p.stderr)
    # An endpoint that is none.
    (tmp_path / "h").mkdir()
    (tmp_path / "h" / "a").write_text("#!/bin/sh\n")
    (tmp_path / "h" / "a").chmod(0o755)
    p = worker_cmd("--handlers", str(tmp_path / "h"), "--endpoint", "nonsense")
    assert p.returncode == 2 and "nonsense" in p.stderr, p.stderr
    # An empty directory, a missing one.
    p = worker_cmd("--handlers", str(tmp_path))
    assert p.returncode == 2 and "no executable handler" in p.stderr, p.stderr
    p = worker_cmd("--handlers", str(tmp_path / "nope"))
    assert p.returncode == 2 and "nope" in p.stderr, p.stderr
    # --opcodes names a file that is not a handler.
    (tmp_path / "a").write_text("#!/bin/sh\n")
    (tmp_path / "a").chmod(0o755)
    p = worker_cmd("--handlers", str(tmp_path), "--opcodes", "a,b")
    assert p.returncode == 2 and f"{tmp_path}/b" in p.stderr, p.stderr
    # A declaration that is not JSON, one with a typo.
    (tmp_path / "a.json").write_text("{oops")
    p = worker_cmd("--handlers", str(tmp_path))
    assert p.returncode == 2 and "a.json: line 1" in p.stderr, p.stderr
    (tmp_path / "a.json").write_text('{"timout": 3}')
    p = worker_cmd("--handlers", str(tmp_path))
    assert p.returncode == 2 and "timout" in p.stderr and "a.json" in p.stderr, p.stderr


def test_refused_hello_exits_1(env):
    env.daemon()
    # test.delay is the daemon's own opcode: the hello is refused.
    env.handler("test.delay", "#!/bin/sh\n")
    w = env.worker(wait=False)
    rc = w.proc.wait(15)
    assert rc == 1, w.text()
    assert "refused the hello" in w.text(), w.text()
