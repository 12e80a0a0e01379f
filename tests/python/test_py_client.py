"""The Python client (clients/python/jobq) against a real jobqd.

Every Client method, every error code the daemon can be made to produce
mapped to its class (and the client's own Timeout, NotRunning), client
tokens, pipelined submit_many_jobs, wait/watch, and the Subscriber across
a forced gap and across a daemon restart. Daemons come from
test_events.Daemon (one per test, in a temporary directory); every wait
is bounded.
"""
import os
import subprocess
import sys
import tempfile
import time

import msgpack
import pytest
import zmq

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "clients", "python"))
sys.path.insert(0, HERE)

import jobq  # noqa: E402
from jobq import protocol  # noqa: E402
from jobqd_stop import stop_jobqd  # noqa: E402
from test_events import JOBQD, Daemon  # noqa: E402

DELAY0 = [{"op": "test.delay", "args": {"duration": 0}}]
LONG = [{"op": "test.delay", "args": {"duration": 60}}]


class PyDaemon(Daemon):
    """test_events' Daemon with the endpoint, a jobq.Client and a restart."""

    def __init__(self, *args):
        self.args = args
        super().__init__(*args)
        self.endpoint = "ipc://%s/jobq.sock" % self.dir
        self.clients = []

    def client(self, **kw):
        c = jobq.Client(self.endpoint, **kw)
        self.clients.append(c)
        return c

    def restart(self):
        """Stop the daemon (cleanly) and start it again on the same data
        directory: a new epoch."""
        assert stop_jobqd(self.proc, 10) == 0
        err = self.proc.stderr.read().decode(errors="replace")
        assert "Sanitizer" not in err and "runtime error" not in err, err
        self.proc = subprocess.Popen([JOBQD, "--data-dir", self.dir, *self.args],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 10
        while True:
            try:
                self.info = self.call("ping", timeout=0.2)
                return
            except TimeoutError:
                assert time.monotonic() < deadline, "jobqd did not come back"
                self.sock.close(0)
                self.sock = self.dealer()

    def stop(self):
        for c in self.clients:
            c.close()
        super().stop()


@pytest.fixture
def daemon():
    ds = []

    def start(*args):
        d = PyDaemon(*args)
        ds.append(d)
        return d
    yield start
    for d in ds:
        d.stop()


def raw(d, body, timeout=5.0):
    """Send raw bytes on a fresh DEALER; the decoded reply."""
    s = d.dealer()
    try:
        s.send(body)
        assert s.poll(int(timeout * 1000)), "no reply"
        return msgpack.unpackb(s.recv(), raw=False)
    finally:
        s.close(0)


# ---- methods ----

def test_every_method(daemon):
    d = daemon("--max-running", "1")
    with d.client() as c:
        p = c.ping()
        assert p["protocol"] == protocol.PROTOCOL_VERSION and p["publish"]
        names = [f["name"] for f in c.list_fields()]
        assert "change_serial" in names and "status" in names
        ops = {o["name"]: o for o in c.list_opcodes()}
        assert ops["test.delay"]["source"] == "builtin"

        blocker = c.submit_job(LONG)
        job = c.submit_job([{"op": "test.log", "args": {"messages": ["a", "b"]}}])
        assert job == blocker + 1
        many = c.submit_many_jobs([DELAY0, [{"op": "test.delay", "args": {"duration": 0},
                                            "depends": [[-1, []]]}]])
        assert many == [(True, job + 1), (True, job + 2)]
        assert c.change_job_priority(job, -10) == (
            True, "Priorities of pending opcodes for job %d have been changed to -10" % job)
        res = c.query_jobs([job], fields=["id", "status", "priority"])
        assert res["rows"] == [[job, "queued", -10]] and res["more"] is False
        res = c.query_jobs(fields=["id"], limit=2, snapshot=True)
        assert res["rows"] == [[blocker], [job]] and res["more"] and "seq" in res
        assert c.query_job(9999) is None

        r = c.wait_for_job_change(job, ["status"], None, None, 5)
        assert r == (["queued"], [])
        assert c.wait_for_job_change(job, ["status"], ["queued"], 0, 0.5) == "nochange"
        assert c.wait_for_job_change(12345, ["status"], None, None, 1) is None

        ok, msg = c.cancel_job(blocker)
        assert ok and "canceled" in msg
        final = c.wait(job, timeout=20, fields=["id", "status", "opresult"])
        assert final == {"id": job, "status": "success", "opresult": [2]}
        assert c.wait(99999, timeout=1) is None
        assert c.cancel_job(job) == (False, "Job %d is no longer waiting in the queue" % job)
        assert c.archive_job(job) is True
        assert c.archive_job(job) is False
        c.wait(job + 2, timeout=20)
        archived, remaining = c.auto_archive_jobs(-1, 5)
        assert archived >= 1 and remaining == 0

        ev = c.events_since(0)
        assert ev["too_old"] is False and ev["events"][0]["seq"] == 1
        assert ev["events"][0]["change"]["kind"] == "submit"
        assert c.events_since(0, epoch=ev["epoch"] + 1)["too_old"]

        c.set_drain_flag(True)
        assert c.stats()["drained"] is True
        assert c.submit_job(DELAY0, ignore_drain=True) > job
        c.set_drain_flag(False)
        st = c.stats()
        assert st["drained"] is False and st["requests"]["ping"] >= 1
        c.shutdown()
    assert d.proc.wait(10) == 0


def test_call_timeout_defaults_and_keepalives(daemon):
    d = daemon("--keepalive", "0.2")
    c = d.client(timeout=0.5)
    job = c.submit_job(LONG)
    # A parked wait longer than the client's timeout: the wait's own
    # timeout (wait + margin, extended by keepalives) applies, not 0.5 s.
    t0 = time.monotonic()
    info = c.wait_for_job_change(job, ["id"], None, None, 1)
    assert info == ([job], [])
    assert c.wait_for_job_change(job, ["id"], [job], 0, 1.5) == "nochange"
    assert time.monotonic() - t0 >= 1.4
    # With an explicit timeout it is a hard limit; the late answer is
    # dropped by the next call.
    with pytest.raises(jobq.TimeoutError) as e:
        c.wait_for_job_change(job, ["id"], [job], 0, 2, timeout=0.5)
    assert e.value.code == "Timeout" and isinstance(e.value, TimeoutError)
    assert c.ping()["protocol"] == 1
    time.sleep(2)
    assert c.query_job(job, ["id"]) == {"id": job}
    c.cancel_job(job)


def test_keepalives_extend_a_parked_wait(daemon, monkeypatch):
    """Without a timeout, wait_for_job_change's deadline is wait + margin and
    each keepalive grants the grace again: shrink the margin below the wait
    so that only the keepalives can carry the call to the daemon's answer;
    without the grace the same call times out."""
    d = daemon("--keepalive", "0.2")
    c = d.client(timeout=0.5)
    job = c.submit_job(LONG)
    monkeypatch.setattr(jobq.protocol, "WFJC_MARGIN", -1.0)
    monkeypatch.setattr(jobq.protocol, "WFJC_KEEPALIVE_GRACE", 0.6)
    t0 = time.monotonic()
    assert c.wait_for_job_change(job, ["id"], [job], 0, 1.5) == "nochange"
    assert time.monotonic() - t0 >= 1.4
    monkeypatch.setattr(jobq.protocol, "WFJC_KEEPALIVE_GRACE", 0.0)
    t0 = time.monotonic()
    with pytest.raises(jobq.TimeoutError):
        c.wait_for_job_change(job, ["id"], [job], 0, 1.5)
    assert time.monotonic() - t0 < 1.4
    c.cancel_job(job)


def test_wait_times_out_and_watch(daemon):
    d = daemon()
    c = d.client()
    job = c.submit_job([{"op": "test.delay", "args": {"duration": 30, "repeat": 3}}])
    with pytest.raises(jobq.TimeoutError):
        c.wait(job, timeout=0.3)
    with pytest.raises(jobq.TimeoutError):
        list(c.watch(job, timeout=0.5))
    t = c.submit_job([{"op": "test.delay", "args": {"duration": 0.2, "repeat": 5}}])
    evs = list(c.watch(t, fields=["status"], timeout=20))
    assert evs[0]["type"] == "resync" and evs[0]["reason"] == "start"
    changes = [e for e in evs if e["type"] == "change"]
    assert changes and changes[-1]["change"]["status"] == "success"
    assert sum(len(e["change"]["log"]) for e in changes) >= 3
    serials = [e["serial"] for e in changes]
    assert serials == list(range(serials[0], serials[0] + len(serials)))
    # A finished job: one resync, then the end.
    assert [e["type"] for e in c.watch(t, timeout=5)] == ["resync"]
    c.cancel_job(job)


# ---- tokens and batches ----

def test_tokens_make_retries_safe(daemon):
    d = daemon()
    c = d.client()
    tok = jobq.new_token()
    assert len(tok) == 32 and tok != jobq.new_token()
    a = c.submit_job(DELAY0, token=tok)
    assert c.submit_job(DELAY0, token=tok) == a
    with pytest.raises(jobq.TokenReusedError) as e:
        c.submit_job(DELAY0 * 2, token=tok)
    assert e.value.code == "TokenReused"
    t2 = jobq.new_token()
    first = c.submit_many_jobs([DELAY0, DELAY0], token=t2)
    assert c.submit_many_jobs([DELAY0, DELAY0], token=t2) == first
    with pytest.raises(jobq.BadArgumentError):
        c.submit_job(DELAY0, token="x" * 65)


def test_submit_many_pipelined_batches(daemon):
    d = daemon("--max-running", "8")
    c = d.client()
    jobs = []
    for i in range(250):
        op = {"op": "test.delay", "args": {"duration": 0}}
        if i % 5:
            op["depends"] = [[-1, []]]  # chains of 5: never split
        jobs.append([op])
    before = c.stats()["requests"].get("submit_many_jobs", 0)
    res = c.submit_many_jobs(jobs, batch_size=25)
    assert [r[0] for r in res] == [True] * 250
    ids = [r[1] for r in res]
    # Batches run side by side: each is consecutive, together they are unique.
    assert len(set(ids)) == 250
    for b in range(0, 250, 25):
        assert ids[b:b + 25] == list(range(ids[b], ids[b] + 25))
    assert c.stats()["requests"]["submit_many_jobs"] - before == 10
    # Dependencies resolved within each batch as one call would.
    rows = c.query_jobs(ids[:6], fields=["ops"])["rows"]
    assert not rows[0][0][0].get("depends")
    assert rows[1][0][0]["depends"][0][0] == ids[0]
    assert not rows[5][0][0].get("depends")
    # Tokened: each batch keeps its derived token, a repeat gives the same ids.
    tok = jobq.new_token()
    again = [[{"op": "test.delay", "args": {"duration": 0}}] for _ in range(60)]
    r1 = c.submit_many_jobs(again, token=tok, batch_size=20)
    r2 = c.submit_many_jobs(again, token=tok, batch_size=20)
    assert r1 == r2 and len(r1) == 60


# ---- errors ----

def test_every_error_code_maps_to_its_class(daemon):
    d = daemon("--max-jobs", "3", "--max-request-bytes", "4096", "--max-running", "1")
    c = d.client()
    with pytest.raises(jobq.BadArgumentError) as e:
        c.submit_job([{"op": "test.delay", "args": {"duration": "x"}}])
    assert e.value.code == "BadArgument" and "duration" in e.value.message
    with pytest.raises(jobq.UnknownMethodError):
        c.call("no_such_method")
    with pytest.raises(jobq.UnknownOpcodeError):
        c.submit_job([{"op": "no.such"}])
    with pytest.raises(jobq.InvalidPriorityError):
        c.submit_job([{"op": "test.delay", "args": {"duration": 0}, "priority": 3}])
    with pytest.raises(jobq.InvalidDependencyError):
        c.submit_job([{"op": "test.delay", "args": {"duration": 0}, "depends": [[-1, []]]}])
    with pytest.raises(jobq.UnknownFieldError):
        c.query_jobs(fields=["nope"])
    with pytest.raises(jobq.TooLargeError):
        c.submit_job([{"op": "test.log", "args": {"messages": ["x" * 5000]}}])
    ids = [c.submit_job(LONG) for _ in range(3)]
    with pytest.raises(jobq.QueueFullError):
        c.submit_job(DELAY0)
    for i in ids:
        c.cancel_job(i)
        c.wait(i, timeout=20)
        c.archive_job(i)
    c.set_drain_flag(True)
    with pytest.raises(jobq.DrainedError) as e:
        c.submit_job(DELAY0)
    assert isinstance(e.value, jobq.JobqError) and e.value.code == "Drained"
    c.set_drain_flag(False)
    # Malformed and VersionMismatch can only come from raw sends.
    rep = raw(d, b"\xc1")
    assert rep["ok"] is False and rep["error"]["code"] == "Malformed"
    with pytest.raises(jobq.MalformedError):
        raise jobq.error_for(rep["error"]["code"], rep["error"]["message"])
    rep = raw(d, msgpack.packb({"v": 99, "id": 7, "method": "ping"}))
    assert rep["id"] == 7 and rep["error"]["code"] == "VersionMismatch"
    assert isinstance(jobq.error_for("VersionMismatch", "x"), jobq.VersionMismatchError)
    # ShuttingDown: a shutdown waits for the running job, submissions are refused.
    blocker = c.submit_job(LONG)
    deadline = time.monotonic() + 10
    while c.query_job(blocker)["status"] != "running":
        assert time.monotonic() < deadline
        time.sleep(0.01)
    c.shutdown()
    with pytest.raises(jobq.ShuttingDownError):
        c.submit_job(DELAY0)
    c.shutdown(now=True)
    assert d.proc.wait(10) == 0
    # Nobody listens any more: NotRunning at once, not a timeout.
    t0 = time.monotonic()
    with pytest.raises(jobq.NotRunningError) as e:
        c.ping(timeout=5)
    assert time.monotonic() - t0 < 2 and e.value.code == "NotRunning"


def test_error_classes_and_unknown_codes():
    for code, cls in jobq.ERRORS.items():
        e = jobq.error_for(code, "m")
        assert type(e) is cls and e.code == code and e.message == "m"
        assert isinstance(e, jobq.JobqError) and str(e) == "%s: m" % code
    e = jobq.error_for("SomethingNew", "later daemon")
    assert type(e) is jobq.JobqError and e.code == "SomethingNew"
    assert issubclass(jobq.TimeoutError, TimeoutError)
    assert issubclass(jobq.NotRunningError, ConnectionError)
    # Every code of proto/wire.h has its class.
    wire_c = open(os.path.join(HERE, "..", "..", "proto", "wire.c")).read()
    import re
    names = set(re.findall(r'\] = "(\w+)"', wire_c)) - {"None"}
    assert names == set(jobq.ERRORS)


def test_batch_cuts_and_empty_job_list():
    """Relative dependencies given as tuples (msgpack sends them as lists)
    keep their chains whole as lists do; an empty `jobs` is refused rather
    than taken as "every job"."""
    from jobq.client import _batch_cuts
    for seq in (list, tuple):
        dep = seq([seq([-1, seq()])])
        jobs = [[{"op": "test.delay"} if i % 5 == 0 else {"op": "test.delay", "depends": dep}]
                for i in range(10)]
        assert _batch_cuts(jobs, 4) == [0, 5, 10]
        assert _batch_cuts(jobs, 7) == [0, 5, 10]
    with pytest.raises(jobq.BadArgumentError):
        jobq.Subscriber("ipc:///nonexistent/jobq.sock", jobs=[])


def test_not_running_and_timeout_without_a_daemon():
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.monotonic()
        with jobq.Client("ipc://%s/jobq.sock" % tmp) as c:
            with pytest.raises(jobq.NotRunningError) as e:
                c.ping()
            assert "no socket file" in e.value.message
        # A socket file nobody listens on (left by a crash).
        path = os.path.join(tmp, "stale.sock")
        import socket
        s = socket.socket(socket.AF_UNIX)
        s.bind(path)
        s.close()
        with jobq.Client("ipc://" + path) as c:
            with pytest.raises(jobq.NotRunningError) as e:
                c.stats()
            assert "nobody listens" in e.value.message
        assert time.monotonic() - t0 < 3
        # Something that accepts but never answers: Timeout.
        ctx = zmq.Context()
        router = ctx.socket(zmq.ROUTER)
        router.bind("ipc://%s/mute.sock" % tmp)
        try:
            with jobq.Client("ipc://%s/mute.sock" % tmp, timeout=0.3) as c:
                with pytest.raises(jobq.TimeoutError) as e:
                    c.ping()
                assert e.value.code == "Timeout"
        finally:
            router.close(0)
            ctx.term()


def test_default_endpoint(monkeypatch):
    monkeypatch.setenv("JOBQ_ENDPOINT", "tcp://127.0.0.1:1")
    assert jobq.default_endpoint() == "tcp://127.0.0.1:1"
    monkeypatch.delenv("JOBQ_ENDPOINT")
    checkout = os.path.realpath(os.path.join(HERE, "..", ".."))
    assert jobq.default_endpoint() == "ipc://%s/var/jobq/jobq.sock" % checkout


def fake_daemon(path, answer_second):
    """A ROUTER at path that takes one request, then hands the path to a new
    ROUTER and closes (the client's connection drops), and answers what
    reaches the new one when answer_second; it keeps that socket until
    `done` is set (closed at once, with linger 0, it could drop the answer
    under load). Returns (thread, requests, done)."""
    import threading
    ctx = zmq.Context.instance()
    first = ctx.socket(zmq.ROUTER)
    first.setsockopt(zmq.LINGER, 0)
    first.bind("ipc://" + path)
    seen = []
    done = threading.Event()

    def run():
        second = None
        try:
            assert first.poll(5000)
            rid, body = first.recv_multipart()
            seen.append(msgpack.unpackb(body, raw=False))
            second = ctx.socket(zmq.ROUTER)
            second.setsockopt(zmq.LINGER, 0)
            second.bind("ipc://" + path)  # takes the path over
            first.close(0)
            if second.poll(3000):
                rid, body = second.recv_multipart()
                req = msgpack.unpackb(body, raw=False)
                seen.append(req)
                if answer_second:
                    second.send_multipart([rid, msgpack.packb(
                        {"v": 1, "id": req["id"], "ok": True, "result": "again"})])
            done.wait(10)
        finally:
            if not first.closed:
                first.close(0)
            if second is not None:
                second.close(0)
    t = threading.Thread(target=run)
    t.start()
    return t, seen, done


def test_resend_after_reconnect():
    """A read-only or tokened call whose connection drops is sent again
    (same id) once it is back; a call that changes something is not."""
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "fake.sock")
        for method, args, safe in (("query_jobs", {}, True),
                                   ("submit_job", {"ops": DELAY0, "token": "t1"}, True),
                                   ("cancel_job", {"id": 1}, False)):
            t, seen, done = fake_daemon(path, safe)
            try:
                with jobq.Client("ipc://" + path, timeout=5) as c:
                    if safe:
                        assert c.call(method, args) == "again"
                    else:
                        with pytest.raises(jobq.TransportError) as e:
                            c.call(method, args)
                        assert "may or may not have been carried out" in e.value.message
                        assert isinstance(e.value, ConnectionError)
            finally:
                done.set()
                t.join(10)
            assert not t.is_alive()
            # Sent again with the same id when safe, once otherwise.
            assert (len(seen), seen[0] == seen[-1]) == ((2, True) if safe else (1, True))


# ---- the subscriber ----

def collect(sub, until, timeout=30, first=None):
    """Apply events to a view {job: status} until until(view) holds;
    first: the event already taken (a resync)."""
    view, serials, evs = {}, {}, []
    deadline = time.monotonic() + timeout
    ev = first
    while first is not None or not until(view):
        assert time.monotonic() < deadline, (view, sub.counters)
        if first is None:
            ev = sub.next(timeout=0.5)
        first = None
        if ev is None:
            continue
        evs.append(ev)
        if ev["type"] == "resync":
            view = {}
            serials = {}
            for row in ev["rows"]:
                r = dict(zip(ev["fields"], row))
                if r["status"] is not None:
                    view[r["id"]] = r["status"]
                    serials[r["id"]] = r["change_serial"]
        else:
            j = ev["job"]
            assert ev["serial"] == serials.get(j, 0) + 1, (ev, serials.get(j))
            serials[j] = ev["serial"]
            view[j] = ev["change"]["status"]
    return view, evs


def test_subscriber_all_jobs_across_a_forced_gap(daemon):
    # A tiny queue on both sides (jobqd's default holds 20,000): it must drop.
    d = daemon("--max-running", "4", "--publish-hwm", "16")
    c = d.client()
    sub = jobq.Subscriber(client=c, rcvhwm=20)
    first = sub.next(timeout=10)
    assert first["type"] == "resync" and first["reason"] == "start"
    res = c.submit_many_jobs([[{"op": "test.log", "args": {"messages": ["m"] * 10}}]] * 500)
    ids = [r[1] for r in res]
    for i in ids:
        c.wait(i, timeout=30)
    time.sleep(0.5)  # let the stream overflow the tiny queue
    view, evs = collect(sub, lambda v: len(v) == 500 and all(
        s == "success" for s in v.values()), first=first)
    assert sub.counters["gaps"] > 0 and sub.counters["recovered"] > 0
    assert sub.counters["resyncs"] == 0
    rows = c.query_jobs(fields=["id", "change_serial"])["rows"]
    assert sub.job_serials() == {r[0]: r[1] for r in rows}
    sub.close()


def test_subscriber_resyncs_when_the_ring_is_too_short(daemon):
    d = daemon("--ring-events", "64", "--publish-hwm", "16")
    c = d.client()
    with jobq.Subscriber(d.endpoint, rcvhwm=10) as sub:
        first = sub.next(timeout=10)
        assert first["type"] == "resync"
        res = c.submit_many_jobs([[{"op": "test.log", "args": {"messages": ["a", "b"]}}]] * 1000)
        for r in res:
            c.wait(r[1], timeout=30)
        time.sleep(0.5)
        view, evs = collect(sub, lambda v: len(v) == 1000 and all(
            s == "success" for s in v.values()), first=first)
        assert sub.counters["resyncs"] > 0
        assert any(e["type"] == "resync" and e["reason"] == "too_old" for e in evs)


def test_job_mode_across_a_gap(daemon):
    """A subscriber of some jobs finds gaps by change serial."""
    d = daemon("--max-running", "1", "--publish-hwm", "16")
    c = d.client()
    blocker = c.submit_job(LONG)
    res = c.submit_many_jobs([[{"op": "test.log", "args": {"messages": ["m" * 100] * 20}}]] * 300)
    ids = [r[1] for r in res]
    with jobq.Subscriber(client=c, jobs=ids, rcvhwm=5) as sub:
        first = sub.next(timeout=10)
        assert first["type"] == "resync" and len(first["rows"]) == 300
        c.cancel_job(blocker)
        for i in ids:
            c.wait(i, timeout=30)
        time.sleep(0.5)  # the queue overflows meanwhile
        view, evs = collect(sub, lambda v: all(v.get(i) == "success" for i in ids),
                            timeout=60, first=first)
        rows = c.query_jobs(ids, fields=["id", "change_serial"])["rows"]
        assert sub.job_serials() == {r[0]: r[1] for r in rows}
        assert sub.counters["gaps"] > 0 and sub.counters["recovered"] > 0


def test_subscriber_and_watch_across_a_restart(daemon):
    d = daemon("--max-running", "1")
    c = d.client()
    a = c.submit_job(LONG)
    b = c.submit_job(DELAY0)  # queued behind a: survives the restart
    sub = jobq.Subscriber(client=c)
    w = jobq.Subscriber(client=c, jobs=[b])
    first = sub.next(timeout=10)
    assert first["type"] == "resync"
    epoch = first["epoch"]
    wfirst = w.next(timeout=10)
    assert wfirst["type"] == "resync"
    d.restart()
    view, evs = collect(sub, lambda v: v.get(b) == "success" and v.get(a) == "error",
                        first=first)
    resyncs = [e for e in evs if e["type"] == "resync"]
    assert resyncs[1]["reason"] == "epoch" and resyncs[1]["epoch"] > epoch
    view, evs = collect(w, lambda v: v.get(b) == "success", first=wfirst)
    assert any(e["type"] == "resync" and e["reason"] == "epoch" for e in evs)
    sub.close()
    w.close()
    # Client.watch of a job across a restart too.
    c.submit_job(LONG)
    job = c.submit_job(DELAY0)  # queued: a graceful stop leaves it so
    got = []
    for ev in c.watch(job, timeout=30):
        got.append(ev)
        if len(got) == 1:
            d.restart()
    assert [e["reason"] for e in got if e["type"] == "resync"][:2] == ["start", "epoch"]
    last = got[-1]
    status = (last["change"]["status"] if last["type"] == "change"
              else dict(zip(last["fields"], last["rows"][0]))["status"])
    assert status == "success" == c.query_job(job)["status"]


def test_mypy_strict():
    """The package (command line included) and its build backend type-check
    with Debian's mypy (python3-mypy, which scripts/deps.sh installs);
    skipped where it is not installed."""
    pytest.importorskip("mypy")
    pkg = os.path.join(HERE, "..", "..", "clients", "python")
    with tempfile.TemporaryDirectory() as cache:
        r = subprocess.run([sys.executable, "-m", "mypy", "--strict", "--cache-dir", cache,
                            "jobq", "build_backend/jobq_backend.py"],
                           cwd=pkg, capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stdout + r.stderr


def test_too_many_waiters_and_busy(daemon):
    d = daemon("--max-waiters", "1", "--max-client-requests", "1")
    c = d.client()
    job = c.submit_job(LONG)
    # A wait left parked by a call that timed out: the daemon has one waiter.
    with pytest.raises(jobq.TimeoutError):
        c.wait_for_job_change(job, ["id"], [job], 0, 30, timeout=0.3)
    with d.client() as other:
        with pytest.raises(jobq.TooManyWaitersError) as e:
            other.wait_for_job_change(job, ["id"], [job], 0, 5)
        assert e.value.code == "TooManyWaiters"
    # Pipelined batches over a connection allowed one request at a time:
    # Busy, raised with what the batches answered.
    with pytest.raises(jobq.BusyError) as e:
        c.submit_many_jobs([DELAY0] * 40, batch_size=1)
    assert e.value.code == "Busy" and len(e.value.results) == 40
    assert all(r is None or r[0] is True for r in e.value.results)
    c.cancel_job(job)


def test_subscriber_without_reconnect_raises_when_the_daemon_stops(daemon):
    d = daemon()
    with jobq.Subscriber(d.endpoint, reconnect=False, timeout=2) as sub:
        assert sub.next(timeout=10)["reason"] == "start"
        assert stop_jobqd(d.proc, 10) == 0
        with pytest.raises((jobq.NotRunningError, jobq.TransportError)):
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                sub.next(timeout=0.5)
