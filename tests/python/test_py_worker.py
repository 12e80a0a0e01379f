"""The Python worker (clients/python/jobq/worker.py) against a real jobqd,
with jobs submitted and followed by the C CLI (`jobq`): results, feedback
in the job log while the handler runs, failure by exception, cancel and
timeout delivered to the handler, lease loss (a SIGSTOPped worker
process) with the opcode retried on another worker and the late answer
refused, capacity, reconnect across a daemon restart, hand-back on stop.
And the other direction: the C `jobq-worker` running jobs submitted from
Python.

Run: /usr/bin/python3 -m pytest tests/python/test_py_worker.py
Binaries: $JOBQ_BUILD_DIR (default /work/main/build).

No fixed sleeps wait for state: every wait is a bounded poll. Every
daemon, worker and worker process is stopped by the fixtures.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import msgpack
import pytest
import zmq

from test_cli import JOBQD, Daemon, run
from test_jobq_worker import WORKER, EXAMPLES, wait_for

ROOT = Path(__file__).resolve().parent.parent.parent
PYPATH = str(ROOT / "clients" / "python")
sys.path.insert(0, PYPATH)

import jobq  # noqa: E402
from jobq.worker import Assignment  # noqa: E402

PYTHON = "/usr/bin/python3"
LEASE_ARGS = ("--worker-heartbeat", "0.2", "--worker-lease", "1")


class Env:
    """A daemon (test_cli.Daemon) and the Python workers of one test."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.daemons: list[Daemon] = []
        self.threads: list[tuple[jobq.Worker, threading.Thread]] = []
        self.procs: list[subprocess.Popen[bytes]] = []
        self.d: Daemon

    def daemon(self, *extra: str) -> Daemon:
        d = Daemon(self.tmp, *extra)
        d.workers_ep = f"ipc://{d.data_dir}/workers.sock"
        self.daemons.append(d)
        self.d = d
        return d

    def restart(self, *extra: str) -> Daemon:
        """A new jobqd on the same data directory (the old one stopped)."""
        old = self.d
        old.stop()
        new = Daemon.__new__(Daemon)
        new.data_dir, new.endpoint, new.workers_ep = old.data_dir, old.endpoint, old.workers_ep
        new.log = open(self.tmp / f"jobqd-{len(self.daemons)}.log", "w+")
        new.proc = subprocess.Popen([JOBQD, "--data-dir", str(old.data_dir), *extra],
                                    stdout=new.log, stderr=subprocess.STDOUT)
        wait_for(lambda: new.proc.poll() is not None or
                 run("ping", "-t", "0.5", endpoint=new.endpoint).returncode == 0, 15,
                 "jobqd to answer ping")
        assert new.proc.poll() is None, "jobqd exited"
        self.daemons[-1] = new
        self.d = new
        return new

    def start(self, w: jobq.Worker) -> jobq.Worker:
        """Runs w in a thread until the test ends; waits for its welcome."""
        th = threading.Thread(target=w.run, daemon=True)
        th.start()
        self.threads.append((w, th))
        wait_for(lambda: w.ready or not th.is_alive(), 10, "the worker's welcome")
        assert th.is_alive(), "Worker.run returned"
        return w

    def process(self, script: str, *args: str) -> subprocess.Popen[bytes]:
        """A Python worker in a process of its own (script: its body,
        `endpoint` and `flag_dir` defined); its output in a file."""
        path = self.tmp / f"worker{len(self.procs)}.py"
        path.write_text("import sys, signal, logging, os, time\n"
                        f"sys.path.insert(0, {PYPATH!r})\n"
                        "import jobq\n"
                        "logging.basicConfig(level=logging.INFO)\n"
                        f"endpoint = {self.d.workers_ep!r}\n"
                        f"flag_dir = {str(self.tmp)!r}\n" + textwrap.dedent(script))
        out = open(self.tmp / f"worker{len(self.procs)}.log", "w")
        p = subprocess.Popen([PYTHON, str(path), *args], stdout=out, stderr=subprocess.STDOUT)
        p.logpath = out.name  # type: ignore[attr-defined]
        self.procs.append(p)
        wait_for(lambda: p.poll() is not None or "connected to jobqd" in Path(out.name).read_text(),
                 10, "the worker process's welcome")
        assert p.poll() is None, Path(out.name).read_text()
        return p

    def close(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGCONT)
                p.kill()
                p.wait()
        for w, th in self.threads:
            w.stop()
        for w, th in self.threads:
            th.join(10)
            assert not th.is_alive(), "Worker.run did not return after stop()"
        for d in self.daemons:
            if d.proc.poll() is None:
                d.stop()


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    e = Env(tmp_path)
    try:
        yield e
    finally:
        e.close()


def info(d: Daemon, job: int) -> dict[str, Any]:
    return d.job(job)


def log_messages(job: dict[str, Any], op: int = 0) -> list[tuple[str, str]]:
    return [(e[2], e[3]) for e in job["oplog"][op]]


# ------------------------------------------------------------ jobs from the C CLI


def test_results_and_feedback_while_it_runs(env: Env) -> None:
    d = env.daemon(*LEASE_ARGS)
    w = jobq.Worker(d.workers_ep, name="py", capacity=1)
    release = threading.Event()

    @w.opcode("py.echo", args=[{"name": "text", "type": "string", "required": True},
                               {"name": "times", "type": "integer"}],
              description="Log a text and return it")
    def echo(job: Assignment) -> Any:
        for i in range(job.args.get("times", 1)):
            job.feedback(f"{i + 1}: {job.args['text']}")
        job.progress(1, 2, "half way")
        assert release.wait(10)
        return {"text": job.args["text"], "attempt": job.attempt, "job": job.job}

    env.start(w)
    ops = d.js("list-opcodes")
    mine = [o for o in ops if o["name"] == "py.echo"][0]
    assert mine["source"] == "worker" and mine["description"] == "Log a text and return it"
    # Declared arguments are checked at submit, before any worker sees the job.
    p = d.jobq("submit", "py.echo", "times=2")
    assert p.returncode == 1 and "missing argument 'text'" in p.stderr

    job = d.submit("py.echo", "text=hello", "times=2")
    # The log is there while the handler still runs.
    def logged() -> Optional[dict[str, Any]]:
        j = info(d, job)
        return j if len(j["oplog"][0]) == 3 else None
    j = wait_for(logged, 10, "feedback in the job log")
    assert j["status"] == "running"
    assert log_messages(j) == [("message", "1: hello"), ("message", "2: hello"),
                               ("progress", "1/2 half way")]
    assert j["opworker"][0].startswith("py#")
    release.set()
    assert d.wait_status(job, ["success", "error"]) == "success"
    assert info(d, job)["opresult"] == [{"text": "hello", "attempt": 1, "job": job}]
    # --wait follows it the C CLI's way.
    out = d.ok("submit", "py.echo", "text=again", "--wait")
    assert "again" in out and "status: success" in out


def test_handler_threads_are_reused_and_end_when_idle(env: Env,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """A busy worker runs opcodes in the threads that ran the previous ones;
    a thread with nothing to do ends after HANDLER_IDLE_SECONDS; stop ends
    the idle ones at once."""
    monkeypatch.setattr(jobq.worker, "HANDLER_IDLE_SECONDS", 1.0)
    d = env.daemon(*LEASE_ARGS)
    w = jobq.Worker(d.workers_ep, capacity=2)
    seen: set[int] = set()

    @w.opcode("py.who")
    def who(job: Assignment) -> Any:
        seen.add(threading.get_ident())
        return job.job

    def handlers() -> list[threading.Thread]:
        return [t for t in threading.enumerate() if t.name.startswith("jobq-handler")]

    env.start(w)
    for _ in range(2):
        ids = [d.submit("py.who") for _ in range(20)]
        for job in ids:
            assert d.wait_status(job, ["success", "error"]) == "success"
            assert info(d, job)["opresult"] == [job]
    # 40 opcodes, at most two at once: two threads did them all.
    assert 1 <= len(seen) <= 2, seen
    wait_for(lambda: not handlers(), 10, "idle handler threads to end")
    job = d.submit("py.who")
    assert d.wait_status(job, ["success", "error"]) == "success"
    assert len(handlers()) == 1
    w.stop()
    wait_for(lambda: not handlers(), 5, "stop to end the idle handler thread")


def test_run_again_after_a_handler_that_ignored_stop(env: Env) -> None:
    """stop() gives up on a handler that ignores its cancel (after
    join_timeout); run() may be called again and serves with threads of its
    own: the stray handler, when it returns at last, neither answers for
    its revoked lease nor waits for the new run's assignments."""
    d = env.daemon(*LEASE_ARGS)
    w = jobq.Worker(d.workers_ep, capacity=1)
    release = threading.Event()
    stray: list[threading.Thread] = []

    @w.opcode("py.stubborn")
    def stubborn(job: Assignment) -> Any:
        if job.args.get("stubborn"):
            stray.append(threading.current_thread())
            release.wait(30)  # ignores job.cancelled
            return "late"
        return job.job

    th = threading.Thread(target=w.run, kwargs={"join_timeout": 0.2}, daemon=True)
    th.start()
    wait_for(lambda: w.ready, 10, "the worker's welcome")
    job = d.submit("py.stubborn", "stubborn=true")
    wait_for(lambda: stray, 10, "the handler to start")
    w.stop()
    th.join(10)
    assert not th.is_alive()
    assert d.wait_status(job, ["queued", "waiting"]) in ("queued", "waiting")  # handed back
    d.jobq("cancel", str(job))
    env.start(w)  # the same Worker, run again
    second = d.submit("py.stubborn")
    assert d.wait_status(second, ["success", "error"]) == "success"
    release.set()
    stray[0].join(10)
    assert not stray[0].is_alive(), "the stray handler waits for work of the new run"
    third = d.submit("py.stubborn")
    assert d.wait_status(third, ["success", "error"]) == "success"
    assert info(d, job)["status"] == "canceled"


def test_failure_by_exception(env: Env) -> None:
    d = env.daemon(*LEASE_ARGS)
    w = jobq.Worker(d.workers_ep)

    @w.opcode("py.fail")
    def fail(job: Assignment) -> Any:
        job.feedback("about to fail")
        raise ValueError(f"cannot do {job.args.get('what')}")

    @w.opcode("py.unencodable")
    def unencodable(job: Assignment) -> Any:
        return object()

    env.start(w)
    job = d.submit("py.fail", "what=this")
    assert d.wait_status(job, ["success", "error"]) == "error"
    j = info(d, job)
    assert j["opresult"] == [["OpExecError", ["cannot do this"]]]
    assert log_messages(j) == [("message", "about to fail")]
    job = d.submit("py.unencodable")
    assert d.wait_status(job, ["success", "error"]) == "error"
    assert "the result cannot be sent" in info(d, job)["opresult"][0][1][0]


def test_cancel_and_timeout_reach_the_handler(env: Env) -> None:
    d = env.daemon(*LEASE_ARGS)
    w = jobq.Worker(d.workers_ep, capacity=2)
    seen: dict[int, Optional[str]] = {}
    started = threading.Event()

    @w.opcode("py.wait")
    def wait(job: Assignment) -> Any:
        started.set()
        assert job.sleep(20), "never cancelled"
        seen[job.job] = job.stop_reason
        job.feedback("stopping: " + str(job.stop_reason))
        return "stopped"

    @w.opcode("py.slow", timeout=0.5)
    def slow(job: Assignment) -> Any:
        assert job.cancelled.wait(20)
        seen[job.job] = job.stop_reason
        return "too late"

    env.start(w)
    job = d.submit("py.wait")
    wait_for(started.is_set, 10, "the handler to start")
    assert info(d, job)["status"] == "running"
    d.ok("cancel", job)
    assert d.wait_status(job, ["canceled", "success", "error"]) == "canceled"
    assert seen[job] == "canceled"
    # What the handler logged after the cancel, until its done, is kept.
    assert ("message", "stopping: canceled") in log_messages(info(d, job))

    job = d.submit("py.slow")
    assert d.wait_status(job, ["canceled", "success", "error"]) == "error"
    assert seen[job] == "timeout"
    assert "timed out after" in json.dumps(info(d, job)["opresult"])


def test_heartbeats_keep_a_long_opcode_alive(env: Env) -> None:
    # The lease is 1 s: a handler of 2.5 s lives on the heartbeats the
    # worker's loop sends meanwhile.
    d = env.daemon(*LEASE_ARGS)
    w = jobq.Worker(d.workers_ep)

    @w.opcode("py.long")
    def long(job: Assignment) -> Any:
        assert not job.sleep(2.5), job.stop_reason
        return job.attempt

    env.start(w)
    job = d.submit("py.long")
    assert d.wait_status(job, ["success", "error"]) == "success"
    j = info(d, job)
    assert j["opresult"] == [1] and j["opattempt"] == [1]
    assert log_messages(j) == []
    assert w.connections == 1


def test_capacity_is_respected(env: Env) -> None:
    d = env.daemon(*LEASE_ARGS)
    w = jobq.Worker(d.workers_ep, capacity=2)
    lock = threading.Lock()
    running = [0]
    peak = [0]
    gate = threading.Semaphore(0)

    @w.opcode("py.cap")
    def cap(job: Assignment) -> Any:
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        try:
            assert gate.acquire(timeout=20)
        finally:
            with lock:
                running[0] -= 1
        return job.job

    env.start(w)
    jobs = [d.submit("py.cap") for _ in range(6)]
    wait_for(lambda: running[0] == 2, 10, "two handlers running")
    # The daemon does not hand out a third while two run.
    listed = d.js("info", *jobs)
    assert sorted(j["status"] for j in listed).count("running") == 2
    assert w.leases() and len(w.leases()) == 2
    for _ in jobs:
        gate.release()
    for j in jobs:
        assert d.wait_status(j, ["success", "error"]) == "success"
    assert peak[0] == 2
    assert [info(d, j)["opresult"] for j in jobs] == [[j] for j in jobs]


def test_lease_loss_retries_elsewhere_and_refuses_the_late_answer(env: Env) -> None:
    d = env.daemon(*LEASE_ARGS)
    # Worker A in a process of its own, stopped with SIGSTOP once it runs
    # the opcode: the daemon loses it after the lease time (1 s).
    a = env.process("""
        w = jobq.Worker(endpoint, name="A")
        @w.opcode("py.retry")
        def run(job):
            open(os.path.join(flag_dir, "started-%d" % job.attempt), "w").close()
            while not os.path.exists(os.path.join(flag_dir, "go")):
                time.sleep(0.01)
            job.feedback("late feedback from A")
            return "A's answer"
        signal.signal(signal.SIGTERM, lambda *x: w.stop())
        w.run()
    """)
    # retry is not a CLI option: submit-many takes the opcode as written.
    (env.tmp / "jobs.json").write_text(json.dumps([[{"op": "py.retry", "retry": 1}]]))
    out = d.ok("submit-many", str(env.tmp / "jobs.json"))
    job = int(out.split()[0])
    wait_for(lambda: (env.tmp / "started-1").exists(), 10, "A to start the opcode")
    os.kill(a.pid, signal.SIGSTOP)

    # Worker B takes attempt 2 once A is lost.
    b = jobq.Worker(d.workers_ep, name="B")
    b_started = threading.Event()
    b_go = threading.Event()

    @b.opcode("py.retry")
    def run_b(job: Assignment) -> Any:
        b_started.set()
        assert b_go.wait(20)
        return f"B's answer, attempt {job.attempt}"

    env.start(b)
    wait_for(b_started.is_set, 15, "the opcode retried on B")
    j = info(d, job)
    assert j["opattempt"] == [2] and j["opworker"][0].startswith("B#")
    assert any(t == "retry" for t, _ in log_messages(j))

    # A wakes up: its handler finishes attempt 1, but A first hears that
    # it was lost (the daemon silent past the lease, or its `disconnect`
    # answer to a heartbeat A had queued), gives the connection up and
    # revokes the lease locally: the late answer is never sent.
    refused = d.js("stats")["workers"]["refused"]
    (env.tmp / "go").touch()
    os.kill(a.pid, signal.SIGCONT)
    wait_for(lambda: "lost jobqd" in Path(a.logpath).read_text(), 15,  # type: ignore[attr-defined]
             "A to notice it lost the daemon")
    wait_for(lambda: Path(a.logpath).read_text().count("connected to jobqd") == 2, 15,  # type: ignore[attr-defined]
             "A to connect again")
    b_go.set()
    assert d.wait_status(job, ["success", "error"]) == "success"
    j = info(d, job)
    assert j["opresult"] == ["B's answer, attempt 2"]
    assert ("message", "late feedback from A") not in log_messages(j)
    assert d.js("stats")["workers"]["refused"] == refused
    # A serves again on its new connection.
    b.stop()
    out = d.ok("submit-many", str(env.tmp / "jobs.json"))
    job2 = int(out.split()[0])
    assert d.wait_status(job2, ["success", "error"]) == "success"
    assert info(d, job2)["opresult"] == ["A's answer"]
    a.send_signal(signal.SIGTERM)
    assert a.wait(15) == 0


def test_stop_hands_the_opcode_back(env: Env) -> None:
    d = env.daemon(*LEASE_ARGS)
    p = env.process("""
        w = jobq.Worker(endpoint, name="quitter")
        @w.opcode("py.handback")
        def run(job):
            open(os.path.join(flag_dir, "started"), "w").close()
            job.cancelled.wait(30)
            print("handler saw:", job.stop_reason, flush=True)
            return "never reported"
        signal.signal(signal.SIGTERM, lambda *x: w.stop())
        w.run()
        print("run returned", flush=True)
    """)
    job = d.submit("py.handback")
    wait_for(lambda: (env.tmp / "started").exists(), 10, "the handler to start")
    p.send_signal(signal.SIGTERM)
    assert p.wait(15) == 0
    text = Path(p.logpath).read_text()  # type: ignore[attr-defined]
    assert "handler saw: stopping" in text and "run returned" in text
    # Disconnect hands it back at once: queued again for its next attempt.
    def requeued() -> bool:
        j = info(d, job)
        return j["status"] in ("queued", "waiting") and j["worker"] == "waiting for a worker" \
            and any(t == "retry" for t, _ in log_messages(j))
    wait_for(requeued, 5, "the opcode back in the queue")
    w = jobq.Worker(d.workers_ep)
    w.add_opcode("py.handback", lambda job: job.attempt)
    env.start(w)
    assert d.wait_status(job, ["success", "error"]) == "success"
    assert info(d, job)["opresult"] == [2]


def test_reconnect_across_a_daemon_restart(env: Env) -> None:
    d = env.daemon(*LEASE_ARGS)
    w = jobq.Worker(d.workers_ep, name="survivor")

    @w.opcode("py.ok")
    def ok(job: Assignment) -> Any:
        return job.job

    env.start(w)
    job = d.submit("py.ok")
    assert d.wait_status(job, ["success", "error"]) == "success"
    first = w.worker_id
    d = env.restart(*LEASE_ARGS)
    wait_for(lambda: w.connections >= 2 and w.ready, 15, "the worker to say hello again")
    job = d.submit("py.ok")
    assert d.wait_status(job, ["success", "error"]) == "success"
    assert info(d, job)["opresult"] == [job]
    assert w.worker_id is not None and first is not None


def test_worker_started_before_the_daemon(env: Env) -> None:
    data = env.tmp / "data"
    w = jobq.Worker(f"ipc://{data}/workers.sock", name="early")
    w.add_opcode("py.early", lambda job: "served")
    th = threading.Thread(target=w.run, daemon=True)
    th.start()
    env.threads.append((w, th))
    # It tries (and fails) to reach the missing daemon first.
    wait_for(lambda: w.connections >= 1, 10, "the worker's first connection attempt")
    assert not w.ready and th.is_alive()
    d = env.daemon(*LEASE_ARGS)
    wait_for(lambda: w.ready, 20, "the worker to connect once jobqd runs")
    job = d.submit("py.early")
    assert d.wait_status(job, ["success", "error"]) == "success"
    assert info(d, job)["opresult"] == ["served"]


def test_refused_hello_is_an_error(env: Env) -> None:
    d = env.daemon(*LEASE_ARGS)
    w = jobq.Worker(d.workers_ep)
    w.add_opcode("test.delay", lambda job: None)  # a built-in name
    failure: list[BaseException] = []

    def run() -> None:
        try:
            w.run()
        except BaseException as exc:  # noqa: B902 — handed to the test thread
            failure.append(exc)
    th = threading.Thread(target=run, daemon=True)
    th.start()
    th.join(20)  # a daemon that took the hello would leave it running: fail, not hang
    if th.is_alive():
        w.stop()
        th.join(10)
        pytest.fail("the worker was not refused")
    assert failure and isinstance(failure[0], jobq.worker.WorkerError), failure
    e = failure[0]
    assert e.code == "BadArgument" and "built" in e.message
    with pytest.raises(ValueError):
        w.add_opcode("bad name", lambda job: None)
    with pytest.raises(ValueError):
        jobq.Worker(d.workers_ep, capacity=0)
    with pytest.raises(ValueError):
        jobq.Worker(d.workers_ep).add_opcode("x", lambda j: None, args=[{"name": "a", "typ": "s"}])


def test_endpoint_discovery(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JOBQ_WORKER_ENDPOINT", "tcp://127.0.0.1:5557")
    assert jobq.Worker().endpoint == "tcp://127.0.0.1:5557"
    monkeypatch.setenv("JOBQ_WORKER_ENDPOINT", "")
    # From a checkout: the checkout's run directory, as a build tree's jobqd.
    assert jobq.Worker().endpoint == f"ipc://{ROOT}/var/jobq/workers.sock"


# ------------------------------------------------------ the C worker, jobs from Python


def test_c_worker_runs_jobs_submitted_from_python(env: Env) -> None:
    d = env.daemon(*LEASE_ARGS)
    log = open(env.tmp / "jobq-worker.log", "w")
    environ = dict(os.environ)
    environ.pop("JOBQ_WORKER_ENDPOINT", None)
    cw = subprocess.Popen([WORKER, "--handlers", EXAMPLES, "--endpoint", d.workers_ep,
                           "--name", "cworker", "--capacity", "2"],
                          stdout=log, stderr=subprocess.STDOUT, env=environ)
    c = jobq.Client(d.endpoint)
    try:
        wait_for(lambda: "connected to jobqd" in (env.tmp / "jobq-worker.log").read_text(), 15,
                 "jobq-worker's welcome")
        ids = [c.submit_job([{"op": "sh.echo", "args": {"message": f"hello {i}", "times": 2}}])
               for i in range(3)]
        fields = ["id", "status", "opresult", "oplog", "opworker"]

        def done() -> Optional[list[Any]]:
            rows = c.query_jobs(ids=ids, fields=fields)["rows"]
            return rows if all(r[1] in ("success", "error", "canceled") for r in rows) else None
        rows = wait_for(done, 20, "the C worker to run the jobs")
        for i, (jid, status, result, oplog, opworker) in enumerate(rows):
            assert status == "success"
            assert result == [{"echo": {"message": f"hello {i}", "times": 2}}]
            assert [(e[2], e[3]) for e in oplog[0]] == [("message", f"1/2: hello {i}"),
                                                        ("message", f"2/2: hello {i}")]
            assert opworker[0].startswith("cworker#")
        # Argument checking comes from the handler's declaration.
        with pytest.raises(jobq.BadArgumentError, match="missing argument 'message'"):
            c.submit_job([{"op": "sh.echo", "args": {"times": 1}}])
    finally:
        c.close()
        cw.send_signal(signal.SIGTERM)
        try:
            assert cw.wait(15) == 0
        finally:
            if cw.poll() is None:
                cw.kill()
                cw.wait()
            log.close()
