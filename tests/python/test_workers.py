"""The worker protocol against a real jobqd (docs/protocol.md, "Workers"):
hello and declarations, dispatch order and capacity, leases fenced by
attempt numbers, feedback into the job log, lost workers and retries,
cancel, timeouts, hand-back on disconnect, restarts, and many idle
workers. The workers here are raw DEALER sockets speaking msgpack, so a
client-library bug cannot hide a daemon bug."""
import os
import signal
import subprocess
import time

import msgpack
import pytest
import zmq

from test_events import Daemon, FINAL, JOBQD  # noqa: F401

LEASE_ARGS = ("--worker-heartbeat", "0.2", "--worker-lease", "1")


def restart(d, *args):
    """The same data directory under a new jobqd (the old one is gone)."""
    d.proc = subprocess.Popen([JOBQD, "--data-dir", d.dir, *args], stderr=subprocess.PIPE)
    deadline = time.monotonic() + 20
    while True:
        d.sock.close(0)
        d.sock = d.dealer()
        try:
            d.call("ping", timeout=0.3)
            return
        except TimeoutError:
            assert time.monotonic() < deadline, "jobqd did not come back"
            assert d.proc.poll() is None, d.proc.stderr.read().decode()


class Worker:
    """A worker speaking the protocol by hand."""

    def __init__(self, daemon, opcodes, capacity=1, name="w", hello=True):
        self.d = daemon
        self.sock = daemon.ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.connect("ipc://%s/workers.sock" % daemon.dir)
        self.pending = []
        self.silent = False  # True: sends no heartbeats (to be lost)
        self.last_beat = time.monotonic()
        if hello:
            self.send("hello", name=name, capacity=capacity, opcodes=opcodes)
            self.welcome = self.expect("welcome")

    def send(self, type_, **kw):
        self.last_beat = time.monotonic()
        self.sock.send(msgpack.packb({"v": 1, "type": type_, **kw}, use_bin_type=True))

    def recv(self, timeout=10.0):
        """The next message; heartbeats go out meanwhile unless silent."""
        if self.pending:
            return self.pending.pop(0)
        deadline = time.monotonic() + timeout
        while not self.sock.poll(50):
            now = time.monotonic()
            if now >= deadline:
                raise TimeoutError("no message from jobqd")
            if not self.silent and now - self.last_beat >= 0.15:
                self.send("heartbeat")
        return msgpack.unpackb(self.sock.recv(), raw=False)

    def expect(self, type_, timeout=10.0):
        """The next message of that type; heartbeats are skipped, others kept."""
        deadline = time.monotonic() + timeout
        kept = []
        try:
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError("no %s from jobqd (got %r)" % (type_, kept))
                m = self.recv(left) if not self.pending else self.pending.pop(0)
                if m["type"] == type_:
                    return m
                if m["type"] != "heartbeat":
                    kept.append(m)
        finally:
            self.pending = kept + self.pending

    def assignment(self, timeout=10.0):
        return self.expect("assign", timeout)

    def done(self, a, ok=True, result=None, error=None, attempt=None):
        kw = {"job": a["job"], "op": a["op"], "attempt": attempt or a["attempt"], "ok": ok}
        if ok:
            kw["result"] = result
        else:
            kw["error"] = error
        self.send("done", **kw)

    def feedback(self, a, *entries):
        self.send("feedback", job=a["job"], op=a["op"], attempt=a["attempt"],
                  entries=[list(e) for e in entries])

    def close(self, say_goodbye=True):
        """Go away; with say_goodbye, cleanly (`disconnect`), else silently."""
        if say_goodbye:
            self.send("disconnect")
        self.sock.close(linger=1000 if say_goodbye else 0)


def job_row(d, jid, *fields):
    return d.call("query_jobs", ids=[jid], fields=list(fields))["rows"][0]


def wait_status(d, jid, want, timeout=20):
    deadline = time.monotonic() + timeout
    while True:
        st = job_row(d, jid, "status")[0]
        if st in want:
            return st
        assert time.monotonic() < deadline, st
        time.sleep(0.02)


@pytest.fixture
def daemon():
    d = Daemon(*LEASE_ARGS)
    yield d
    d.stop()


def test_hello_declares_opcodes_and_submit_checks_them(daemon):
    d = daemon
    with pytest.raises(RuntimeError, match="UnknownOpcode"):
        d.call("submit_job", ops=[{"op": "w.echo"}])
    w = Worker(d, [{"name": "w.echo", "description": "echo",
                    "args": [{"name": "text", "type": "string", "required": True}]}])
    assert w.welcome["worker"] >= 1 and w.welcome["lease"] == 1
    ops = {o["name"]: o for o in d.call("list_opcodes")}
    assert ops["w.echo"]["source"] == "worker" and ops["test.delay"]["source"] == "builtin"
    assert [a["name"] for a in ops["w.echo"]["args"]] == ["text"]
    with pytest.raises(RuntimeError, match="BadArgument.*missing argument 'text'"):
        d.call("submit_job", ops=[{"op": "w.echo"}])
    with pytest.raises(RuntimeError, match="BadArgument.*unknown argument"):
        d.call("submit_job", ops=[{"op": "w.echo", "args": {"text": "x", "txt": 1}}])
    with pytest.raises(RuntimeError, match="BadArgument.*worker opcodes only"):
        d.call("submit_job", ops=[{"op": "test.delay", "args": {"duration": 0}, "retry": 1}])
    # A built-in name cannot be served by a worker; a bad hello is refused.
    bad = Worker(d, ["test.delay"], hello=False)
    bad.send("hello", opcodes=["test.delay"])
    err = bad.expect("error")
    assert err["code"] == "BadArgument" and "built in" in err["message"]
    bad.send("hello", opcodes=["x"], capacity=0)
    assert "capacity" in bad.expect("error")["message"]
    bad.send("feedback", job=1, op=0, attempt=1, entries=[["message", "x"]])
    assert bad.expect("disconnect")
    w.close()
    bad.close()


def test_full_cycle_feedback_reaches_log_and_events(daemon):
    d = daemon
    sub = d.subscriber(b"job/", b"sys/")
    d.wait_subscribed(sub)
    # The worker after the subscription: it beats only while it waits for
    # a message, and a slow subscription (a sanitizer build beside other
    # tests) outlasted its 1 s lease.
    w = Worker(d, ["w.run"], name="alpha")
    jid = d.call("submit_job", ops=[{"op": "w.run", "args": {"n": 3}}])
    a = w.assignment()
    assert (a["job"], a["op"], a["attempt"], a["opcode"], a["args"]) == (jid, 0, 1, "w.run", {"n": 3})
    # The assignment went out only once the running record was committed.
    row = job_row(d, jid, "status", "worker", "opattempt")
    assert row[0] == "running" and row[1].startswith("alpha#") and row[2] == [1]
    w.feedback(a, ("message", "step one"), ("progress", "50%"))
    deadline = time.monotonic() + 10
    seen = []
    while len(seen) < 2:
        assert time.monotonic() < deadline
        if sub.poll(100):
            topic, body = sub.recv_multipart()
            if not topic.startswith(b"job/"):
                continue
            ch = msgpack.unpackb(body, raw=False)["change"]
            seen += [(e[2], e[3]) for e in ch.get("log", [])]
    assert seen == [("message", "step one"), ("progress", "50%")]
    assert job_row(d, jid, "status")[0] == "running"  # the log arrives while it runs
    w.done(a, result={"answer": 42})
    assert wait_status(d, jid, FINAL) == "success"
    assert job_row(d, jid, "opresult")[0] == [{"answer": 42}]
    w.close()


def test_jobs_wait_for_a_worker_then_run_in_priority_order(daemon):
    d = daemon
    Worker(d, ["w.ord"]).close()  # declared, then gone
    ids = {}
    for prio in (10, 0, -10, 0, 10, -10):
        jid = d.call("submit_job", ops=[{"op": "w.ord", "priority": prio}])
        ids[jid] = prio
    first = min(ids)
    deadline = time.monotonic() + 10
    while job_row(d, first, "worker")[0] != "waiting for a worker":
        assert time.monotonic() < deadline
        time.sleep(0.02)
    # A priority change while it waits moves it in the worker queue.
    moved = max(ids)
    deadline = time.monotonic() + 10
    while d.call("stats")["workers"]["waiting"] < len(ids):  # all with the hub
        assert time.monotonic() < deadline
        time.sleep(0.02)
    d.call("change_job_priority", id=moved, priority=-10)
    ids[moved] = -10
    w = Worker(d, ["w.ord"], capacity=1)
    order = []
    for _ in ids:
        a = w.assignment()
        order.append(a["job"])
        w.done(a)
    assert order == sorted(ids, key=lambda j: (ids[j], j))
    w.close()


def test_capacity_and_fair_dispatch(daemon):
    d = daemon
    w1 = Worker(d, ["w.cap"], capacity=2, name="one")
    w2 = Worker(d, ["w.cap"], capacity=2, name="two")
    ids = [d.call("submit_job", ops=[{"op": "w.cap"}]) for _ in range(8)]
    got1 = [w1.assignment(), w1.assignment()]
    got2 = [w2.assignment(), w2.assignment()]
    for w in (w1, w2):  # at capacity: nothing more comes
        with pytest.raises(TimeoutError):
            w.assignment(timeout=0.5)
    assert d.call("stats")["workers"]["running"] == 4
    done = 0
    while got1 or got2:
        for w, got in ((w1, got1), (w2, got2)):
            if got:
                w.done(got.pop(0))
                done += 1
                if done <= 4:
                    got.append(w.assignment())
    d.wait_final(ids)
    rows = d.call("query_jobs", ids=ids, fields=["status", "worker", "opworker"])["rows"]
    assert all(r[0] == "success" for r in rows)
    names = {r[2][0].split("#")[0] for r in rows}
    assert names == {"one", "two"}
    w1.close()
    w2.close()


def test_stale_and_foreign_leases_are_refused(daemon):
    d = daemon
    w1 = Worker(d, ["w.f"], name="one")
    w2 = Worker(d, ["w.f"], name="two")
    jid = d.call("submit_job", ops=[{"op": "w.f"}])
    a = None
    for w in (w1, w2):
        try:
            a, owner, other = w.assignment(timeout=2), w, (w2 if w is w1 else w1)
            break
        except TimeoutError:
            continue
    assert a
    other.done(a, result="stolen")  # not its lease
    r = other.expect("revoke")
    assert (r["job"], r["attempt"]) == (jid, 1)
    owner.done(a, attempt=7, result="late")  # not the current attempt
    assert owner.expect("revoke")["attempt"] == 7
    owner.send("feedback", job=jid, op=0, attempt=1, entries=[["message", 5]])
    assert owner.expect("error")["code"] == "BadArgument"
    owner.sock.send(b"\xc1 not msgpack")
    assert owner.expect("error")["code"] == "Malformed"
    owner.send("nonsense")
    assert owner.expect("error")["code"] == "UnknownMethod"
    assert job_row(d, jid, "status")[0] == "running"
    owner.done(a, result="mine")
    assert wait_status(d, jid, FINAL) == "success"
    assert job_row(d, jid, "opresult")[0] == ["mine"]
    owner.done(a, result="again")  # finished: refused, changes nothing
    owner.expect("revoke")
    assert job_row(d, jid, "opresult")[0] == ["mine"]
    assert d.call("stats")["workers"]["refused"] >= 5
    w1.close()
    w2.close()


def test_lost_worker_fails_or_retries_and_its_late_result_is_refused(daemon):
    d = daemon
    w1 = Worker(d, ["w.l"], name="lost")
    j_fail = d.call("submit_job", ops=[{"op": "w.l"}])
    a = w1.assignment()
    w1.silent = True
    t0 = time.monotonic()
    # w1 goes silent: after the lease (1 s) it is lost and the job fails.
    assert wait_status(d, j_fail, FINAL) == "error"
    assert 0.9 < time.monotonic() - t0 < 5
    res = job_row(d, j_fail, "opresult")[0][0]
    assert "worker lost" in res[1][0]
    w1.done(a, result="late")
    assert w1.expect("disconnect")  # it is not a worker any more
    # With retry, the next attempt goes to another worker.
    w2 = Worker(d, ["w.l"], name="silent")
    j_retry = d.call("submit_job", ops=[{"op": "w.l", "retry": 2, "retry_backoff": 0.1}])
    a1 = w2.assignment()
    w2.silent = True
    w3 = Worker(d, ["w.l"], name="good")
    a2 = w3.assignment(timeout=10)  # w2 lost (silent), attempt 2 on w3
    assert (a2["job"], a2["attempt"]) == (j_retry, 2)
    w3.done(a2, result="second")
    assert wait_status(d, j_retry, FINAL) == "success"
    log = job_row(d, j_retry, "oplog")[0][0]
    assert any(e[2] == "retry" and "retry 1 of 2" in e[3] for e in log)
    w2.done(a1, result="late")
    assert w2.expect("disconnect")
    assert job_row(d, j_retry, "opresult")[0] == ["second"]
    assert d.call("stats")["workers"]["lost"] >= 2
    for w in (w1, w2, w3):
        w.close()


def test_cancel_waiting_and_running(daemon):
    d = daemon
    Worker(d, ["w.c"]).close()
    j_wait = d.call("submit_job", ops=[{"op": "w.c"}])
    wait_status(d, j_wait, ("waiting", "queued"))
    d.call("cancel_job", id=j_wait)
    assert wait_status(d, j_wait, FINAL) == "canceled"
    w = Worker(d, ["w.c"])
    j_run = d.call("submit_job", ops=[{"op": "w.c"}])
    a = w.assignment()
    d.call("cancel_job", id=j_run)
    c = w.expect("cancel")
    assert (c["job"], c["reason"]) == (j_run, "canceled")
    assert job_row(d, j_run, "status")[0] == "canceling"
    w.done(a, ok=False, error="stopped")
    assert wait_status(d, j_run, FINAL) == "canceled"
    w.close()


def test_timeout_tells_the_worker_and_fails_the_opcode(daemon):
    d = daemon
    w = Worker(d, [{"name": "w.t", "timeout": 30}])
    jid = d.call("submit_job", ops=[{"op": "w.t", "timeout": 0.3}])
    a = w.assignment()
    assert a["timeout"] == pytest.approx(0.3)
    c = w.expect("cancel", timeout=5)
    assert c["reason"] == "timeout"
    w.done(a, result="too late")
    assert wait_status(d, jid, FINAL) == "error"
    assert "timed out after 0.3 s" in job_row(d, jid, "opresult")[0][0][1][0]
    w.close()


def test_disconnect_hands_opcodes_back(daemon):
    d = daemon
    w1 = Worker(d, ["w.h"])
    jid = d.call("submit_job", ops=[{"op": "w.h"}])
    a1 = w1.assignment()
    w1.send("disconnect")
    w2 = Worker(d, ["w.h"])
    a2 = w2.assignment()
    assert (a2["job"], a2["attempt"]) == (jid, a1["attempt"] + 1)
    w2.done(a2, result=1)
    assert wait_status(d, jid, FINAL) == "success"
    w1.close()
    w2.close()


def test_job_mixing_builtin_and_worker_opcodes(daemon):
    d = daemon
    w = Worker(d, ["w.mix"])
    jid = d.call("submit_job", ops=[{"op": "test.log", "args": {"messages": ["a"]}},
                                    {"op": "w.mix", "args": {"k": "v"}},
                                    {"op": "test.delay", "args": {"duration": 0}}])
    a = w.assignment()
    assert (a["job"], a["op"]) == (jid, 1)
    w.done(a, result="mid")
    assert wait_status(d, jid, FINAL) == "success"
    assert job_row(d, jid, "opresult")[0] == [1, "mid", None]
    w.close()


def test_failure_and_many_jobs_each_attempt_exactly_once_in_priority_order(daemon):
    d = daemon
    Worker(d, ["w.a", "w.b"]).close()  # declares them
    jobs = [[{"op": "w.a" if i % 2 else "w.b", "priority": (-10, 0, 10)[i % 3]}]
            for i in range(1000)]
    ids = d.call("submit_many_jobs", jobs=jobs)
    ids = [r[1] for r in ids]
    deadline = time.monotonic() + 20
    while d.call("stats")["workers"]["waiting"] < len(ids):
        assert time.monotonic() < deadline, d.call("stats")["workers"]
        time.sleep(0.05)
    workers = [Worker(d, ["w.a", "w.b"], capacity=3, name="n%d" % i) for i in range(4)]
    seen = {}
    deadline = time.monotonic() + 60
    poller = zmq.Poller()
    for w in workers:
        poller.register(w.sock, zmq.POLLIN)
    while len(seen) < len(ids):
        assert time.monotonic() < deadline, len(seen)
        for sock, _ in poller.poll(200):
            w = next(x for x in workers if x.sock is sock)
            m = msgpack.unpackb(sock.recv(), raw=False)
            if m["type"] != "assign":
                continue
            key = (m["job"], m["op"], m["attempt"])
            assert key not in seen, key
            seen[key] = w
            if m["job"] % 97 == 0:
                w.done(m, ok=False, error="boom %d" % m["job"])
            else:
                w.done(m, result=m["job"])
    d.wait_final(ids)
    rows = d.call("query_jobs", ids=ids, fields=["id", "status", "opresult"])["rows"]
    for jid, st, res in rows:
        if jid % 97 == 0:
            assert st == "error" and res[0][1] == ["boom %d" % jid]
        else:
            assert st == "success" and res == [jid]
    assert {k[2] for k in seen} == {1}
    # Handed out in priority order, then by id, within each opcode: the
    # execution start follows that order.
    rows = d.call("query_jobs", ids=ids, fields=["id", "priority", "ops", "opexec"])["rows"]
    for name in ("w.a", "w.b"):
        mine = sorted((jobs[jid - ids[0]][0]["priority"], jid, ex[0][0] * 10**6 + ex[0][1])
                      for jid, _, ops, ex in rows if ops[0]["op"] == name)
        starts = [m[2] for m in mine]
        assert starts == sorted(starts), name
    for w in workers:
        w.close()


def test_restart_settles_worker_opcodes_and_remembers_declarations():
    d = Daemon(*LEASE_ARGS)
    try:
        w = Worker(d, [{"name": "w.r", "args": [{"name": "x", "required": False}]}], capacity=2)
        j_plain = d.call("submit_job", ops=[{"op": "w.r"}])
        j_retry = d.call("submit_job", ops=[{"op": "w.r", "retry": 1}])
        assert {w.assignment()["job"], w.assignment()["job"]} == {j_plain, j_retry}
        d.proc.send_signal(signal.SIGKILL)
        d.proc.wait()
        d.proc.stderr.read()
        w.close()
        restart(d, *LEASE_ARGS)
        # Declarations come back from the store, before any worker.
        names = [o["name"] for o in d.call("list_opcodes") if o["source"] == "worker"]
        assert names == ["w.r"]
        with pytest.raises(RuntimeError, match="unknown argument 'y'"):
            d.call("submit_job", ops=[{"op": "w.r", "args": {"y": 1}}])
        assert wait_status(d, j_plain, FINAL) == "error"
        row = job_row(d, j_retry, "status", "worker", "oplog")
        assert row[0] in ("queued", "waiting") and row[1] == "waiting for a worker"
        assert any(e[2] == "retry" for e in row[2][0])
        w = Worker(d, [{"name": "w.r", "args": [{"name": "x", "required": False}]}])
        a = w.assignment()
        assert a["job"] == j_retry and a["attempt"] == 2
        w.done(a, result="after restart")
        assert wait_status(d, j_retry, FINAL) == "success"
        w.close()
    finally:
        d.stop()


def test_idle_workers_cost_no_threads(daemon):
    d = daemon
    threads = d.call("stats")["threads"]
    workers = []
    # Connecting 1000 takes longer than the 1 s lease on a loaded machine
    # (a sanitizer build beside other tests): those connected keep beating
    # meanwhile, as real workers do, so none is lost before it is counted.
    next_beat = [time.monotonic() + 0.2]

    def beat_when_due():
        if time.monotonic() >= next_beat[0]:
            for other in workers:
                other.send("heartbeat")
            next_beat[0] = time.monotonic() + 0.2

    for i in range(1000):
        w = Worker(d, ["w.idle"], hello=False)
        w.send("hello", name="idle%d" % i, opcodes=["w.idle"])
        workers.append(w)
        beat_when_due()
    for w in workers:
        for _ in range(50):  # 10 s at most, beating meanwhile
            try:
                w.expect("welcome", timeout=0.2)
                break
            except TimeoutError:
                beat_when_due()
        else:
            raise AssertionError("no welcome in 10 s")
        beat_when_due()
    st = d.call("stats")
    assert st["workers"]["connected"] == 1000
    assert st["threads"] == threads
    # They stay alive on heartbeats: none is lost while they answer.
    deadline = time.monotonic() + 2.5
    while time.monotonic() < deadline:
        for w in workers:
            while w.sock.poll(0):
                w.sock.recv()
            w.send("heartbeat")
        time.sleep(0.2)
    st = d.call("stats")
    assert st["workers"]["connected"] == 1000 and st["workers"]["lost"] == 0
    assert st["threads"] == threads
    for w in workers:
        w.close()


def test_oversized_done_fails_its_opcode_and_feedback_while_canceling_is_kept():
    d = Daemon(*LEASE_ARGS, "--max-request-bytes", "4096")
    try:
        w = Worker(d, ["w.big"])
        jid = d.call("submit_job", ops=[{"op": "w.big"}])
        a = w.assignment()
        w.done(a, result="x" * 8000)  # over the limit, under 4 times it
        err = w.expect("error")
        assert (err["code"], err["job"], err["op"], err["attempt"]) == ("TooLarge", jid, 0, 1)
        assert wait_status(d, jid, FINAL) == "error"
        assert "too large" in job_row(d, jid, "opresult")[0][0][1][0]
        # What a handler says after it was told to stop is kept.
        j2 = d.call("submit_job", ops=[{"op": "w.big"}])
        a2 = w.assignment()
        d.call("cancel_job", id=j2)
        w.expect("cancel")
        w.feedback(a2, ("stderr", "got SIGTERM, cleaning up"))
        w.done(a2, ok=False, error="stopped")
        assert wait_status(d, j2, FINAL) == "canceled"
        log = job_row(d, j2, "oplog")[0][0]
        assert [e[2:] for e in log] == [["stderr", "got SIGTERM, cleaning up"]]
        w.close()
    finally:
        d.stop()


def test_cancel_reaches_the_worker_even_when_its_commit_was_quicker():
    """Without fsync the canceling change can be committed (and its notice
    read by the loop) before the hub hears of the cancel: the worker must
    still be told at once, not at some later commit."""
    d = Daemon(*LEASE_ARGS, "--sync", "none")
    try:
        w = Worker(d, ["w.cq"])
        for _ in range(30):
            jid = d.call("submit_job", ops=[{"op": "w.cq"}])
            a = w.assignment()
            d.call("cancel_job", id=jid)
            c = w.expect("cancel", timeout=2)  # nothing else commits meanwhile
            assert c["job"] == jid
            w.done(a, ok=False, error="stopped")
            assert wait_status(d, jid, FINAL) == "canceled"
        w.close()
    finally:
        d.stop()


def test_refused_messages_change_nothing_and_declarations_are_bounded():
    d = Daemon(*LEASE_ARGS, "--max-request-bytes", "4096")
    try:
        w = Worker(d, ["w.b"])
        jid = d.call("submit_job", ops=[{"op": "w.b"}])
        a = w.assignment()
        w.feedback(a, ("message", "x" * 3000), ("message", "y" * 3000))  # 6 KB > 4 KB
        err = w.expect("error")
        assert (err["code"], err["job"]) == ("TooLarge", jid)
        w.done(a, result=1)
        assert wait_status(d, jid, FINAL) == "success"
        assert job_row(d, jid, "oplog")[0] == [[]]  # the refused feedback left no trace
        w.close()
    finally:
        d.stop()
    # Replaced declarations are kept for the jobs that point at them, up to
    # a bound: a peer that keeps declaring anew is refused, not served.
    d = Daemon(*LEASE_ARGS)
    try:
        def decls(tag):
            return [{"name": "w.d%d" % i, "description": tag + "d" * 500,
                     "args": [{"name": "a%d" % k, "description": "z" * 500} for k in range(64)]}
                    for i in range(256)]
        w = Worker(d, decls("0"))  # about 9 MB of declarations
        w.send("hello", opcodes=decls("1"))
        err = w.expect("error")
        assert err["code"] == "BadArgument" and "16 MiB" in err["message"], err
        w.close()
        assert len(d.call("list_opcodes")) == 2 + 256
    finally:
        d.stop()
