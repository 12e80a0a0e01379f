"""Event stream and wait_for_job_change, end to end against a real jobqd.

Covers: exactly-once publication with contiguous serials, topic isolation,
gap detection and catch-up (a subscriber forced to drop messages ends with
the same state as query_jobs, including a resync when the ring is too
short), every rule of wait_for_job_change, keepalives, and thousands of
waiters and subscribers with the daemon's thread count unchanged.

The subscriber here follows docs/protocol.md ("Subscribing without a race,
and catching up") step by step; it is the Python reference for that text.
No sleeps wait for state: every wait is a bounded poll.
"""
import os
import shutil
import signal
import subprocess
import tempfile
import time

import msgpack
import pytest
import zmq
from jobqd_stop import stop_jobqd

BUILD = os.environ.get("JOBQ_BUILD_DIR", os.path.join(os.path.dirname(__file__), "..", "..", "build"))
JOBQD = os.path.join(BUILD, "broker", "jobqd")
FINAL = ("success", "error", "canceled")


class Daemon:
    """A jobqd in a temporary data directory, with a DEALER to talk to it."""

    def __init__(self, *args):
        self.dir = tempfile.mkdtemp(prefix="jobq-ev-")
        self.proc = subprocess.Popen([JOBQD, "--data-dir", self.dir, *args],
                                     stderr=subprocess.PIPE)
        self.ctx = zmq.Context()
        self.ctx.set(zmq.MAX_SOCKETS, 20000)
        self.sock = self.dealer()
        self.rid = 0
        deadline = time.monotonic() + 10
        while True:
            try:
                self.info = self.call("ping", timeout=0.2)
                break
            except TimeoutError:
                assert time.monotonic() < deadline, "jobqd did not answer ping"
                assert self.proc.poll() is None, self.proc.stderr.read().decode()
                self.sock.close(0)
                self.sock = self.dealer()
        self.events_ep = self.info["publish"][0]

    def dealer(self):
        s = self.ctx.socket(zmq.DEALER)
        s.setsockopt(zmq.LINGER, 0)
        s.connect("ipc://%s/jobq.sock" % self.dir)
        return s

    def send(self, method, sock=None, **args):
        self.rid += 1
        (sock or self.sock).send(msgpack.packb({"v": 1, "id": self.rid, "method": method, "args": args}))
        return self.rid

    def recv(self, sock=None, timeout=10.0):
        sock = sock or self.sock
        if not sock.poll(int(timeout * 1000)):
            raise TimeoutError("no reply")
        return msgpack.unpackb(sock.recv(), raw=False)

    def call(self, method, timeout=10.0, **args):
        rid = self.send(method, **args)
        while True:
            rep = self.recv(timeout=timeout)
            if rep.get("id") == rid and not rep.get("keepalive"):
                break
        if not rep["ok"]:
            raise RuntimeError("%s: %s" % (rep["error"]["code"], rep["error"]["message"]))
        return rep["result"]

    def subscriber(self, *topics, hwm=None):
        s = self.ctx.socket(zmq.SUB)
        s.setsockopt(zmq.LINGER, 0)
        if hwm is not None:
            s.setsockopt(zmq.RCVHWM, hwm)
        s.connect(self.events_ep)
        for t in topics:
            s.setsockopt(zmq.SUBSCRIBE, t)
        return s

    def wait_subscribed(self, sub):
        """A heartbeat proves the subscription reached the publisher."""
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            if sub.poll(100):
                topic, _ = sub.recv_multipart()
                if topic == b"sys/heartbeat":
                    return
        raise AssertionError("no heartbeat within 5 s")

    def wait_final(self, ids, timeout=20):
        deadline = time.monotonic() + timeout
        while True:
            rows = self.call("query_jobs", ids=list(ids), fields=["id", "status"])["rows"]
            if all(r[1] in FINAL for r in rows):
                return
            assert time.monotonic() < deadline, rows
            self.call("ping")  # one round trip between polls

    def published(self, timeout=20):
        """Once every change made so far is committed and published: the
        number of events published."""
        deadline = time.monotonic() + timeout
        while True:
            st = self.call("stats")
            if st["changes_consumed"] == st["changes"]:
                return st["events_published"]
            assert time.monotonic() < deadline, st

    def threads(self):
        return self.call("stats")["threads"]

    def stop(self):
        """Stop it and check it stopped cleanly: exit 0, no sanitizer report."""
        stop_jobqd(self.proc, 10)
        err = self.proc.stderr.read().decode(errors="replace")
        self.ctx.destroy(0)
        shutil.rmtree(self.dir, ignore_errors=True)
        assert "Sanitizer" not in err and "runtime error" not in err, err
        assert self.proc.returncode == 0, err


@pytest.fixture
def daemon():
    ds = []

    def start(*args):
        d = Daemon(*args)
        ds.append(d)
        return d
    yield start
    for d in ds:
        d.stop()


def decode(frames):
    topic, body = frames
    return topic.decode(), msgpack.unpackb(body, raw=False)


class Mirror:
    """Job states rebuilt from events alone, with the documented algorithm."""

    FIELDS = ["id", "status", "priority", "opstatus", "opresult", "oplog", "log_serial",
              "change_serial", "archived"]

    def __init__(self, d, sub):
        self.d, self.sub = d, sub
        self.jobs = {}
        self.gaps = self.recovered = self.resyncs = 0
        self.snapshot()

    def snapshot(self):
        res = self.d.call("query_jobs", snapshot=True, archived=True, fields=self.FIELDS)
        self.seq, self.epoch = res["seq"], res["epoch"]
        self.jobs = {}
        for row in res["rows"]:
            r = dict(zip(res["fields"], row))
            self.jobs[r["id"]] = {
                "status": r["status"], "priority": r["priority"], "archived": r["archived"],
                "opstatus": list(r["opstatus"]), "opresult": list(r["opresult"]),
                "oplog": [list(l) for l in r["oplog"]], "serial": r["change_serial"]}

    def apply(self, ev):
        if ev["epoch"] != self.epoch:
            self.resyncs += 1
            self.snapshot()
            return
        if ev["seq"] <= self.seq:
            return
        if ev["seq"] != self.seq + 1:
            self.gaps += 1
            self.catch_up()
            if ev["seq"] <= self.seq:
                return
        self.seq = ev["seq"]
        c = ev["change"]
        job = self.jobs.get(c["job"])
        if job is not None and c["serial"] <= job["serial"]:
            return
        if c["kind"] == "submit":
            job = self.jobs[c["job"]] = {
                "opstatus": [None] * len(c["input"]), "opresult": [None] * len(c["input"]),
                "oplog": [[] for _ in c["input"]], "archived": False}
        assert c["serial"] == job["serial"] + 1 if "serial" in job else c["serial"] == 1
        job["serial"] = c["serial"]
        job["status"], job["priority"] = c["status"], c["priority"]
        if c["kind"] == "archive":
            job["archived"] = True
        for op in c["ops"]:
            job["opstatus"][op["index"]] = op["status"]
            job["opresult"][op["index"]] = op["result"]
        for entry in c["log"]:
            job["oplog"][c["log_op"]].append(entry)

    def catch_up(self):
        while True:
            res = self.d.call("events_since", after_seq=self.seq, epoch=self.epoch)
            if res["too_old"]:
                self.resyncs += 1
                self.snapshot()
                continue  # and fetch what followed the snapshot
            for body in res["events"]:
                self.recovered += 1
                self.apply(msgpack.unpackb(body, raw=False) if isinstance(body, bytes) else body)
            if not res["more"]:
                return

    def pump(self, until_seq, timeout=20):
        deadline = time.monotonic() + timeout
        while self.seq < until_seq:
            assert time.monotonic() < deadline, (self.seq, until_seq)
            if not self.sub.poll(100):
                continue
            topic, ev = decode(self.sub.recv_multipart())
            if topic == "batch/":
                continue  # a subscriber of "" gets the batched stream too
            if topic == "sys/heartbeat":
                if ev["epoch"] == self.epoch and ev["seq"] > self.seq:
                    self.gaps += 1
                    self.catch_up()
                continue
            self.apply(ev)

    def matches_query(self):
        res = self.d.call("query_jobs", archived=True, fields=self.FIELDS)
        assert len(res["rows"]) == len(self.jobs)
        for row in res["rows"]:
            r = dict(zip(res["fields"], row))
            m = self.jobs[r["id"]]
            got = (m["status"], m["priority"], m["opstatus"], m["opresult"], m["oplog"],
                   m["serial"], m["archived"])
            want = (r["status"], r["priority"], r["opstatus"], r["opresult"],
                    [list(l) for l in r["oplog"]], r["change_serial"], r["archived"])
            assert got == want, (r["id"], got, want)


def mixed_workload(d):
    """Jobs that go through every kind of change: logs, failures, cancels
    of queued and running jobs, priority changes, archives."""
    ids = []
    ids += [d.call("submit_job", ops=[{"op": "test.log", "args": {"messages": ["a", "b", "c"]}},
                                      {"op": "test.delay", "args": {"duration": 0, "repeat": 2}}])
            for _ in range(20)]
    ids += [d.call("submit_job", ops=[{"op": "test.log", "args": {"fail": True}}]) for _ in range(5)]
    long = d.call("submit_job", ops=[{"op": "test.delay", "args": {"duration": 30}}])
    queued = [d.call("submit_job", ops=[{"op": "test.delay", "args": {"duration": 0}}], ) for _ in range(5)]
    d.call("change_job_priority", id=queued[0], priority=-10)
    d.call("cancel_job", id=queued[1])
    # Running: wait until it is, then cancel it.
    deadline = time.monotonic() + 10
    while d.call("query_jobs", ids=[long], fields=["status"])["rows"][0][0] != "running":
        assert time.monotonic() < deadline
    d.call("cancel_job", id=long)
    ids += [long] + queued
    d.wait_final(ids)
    d.call("archive_job", id=ids[0])
    return ids


def test_exactly_once_contiguous_and_rebuildable(daemon):
    d = daemon("--max-running", "2")
    sub = d.subscriber(b"")
    d.wait_subscribed(sub)
    m = Mirror(d, sub)
    ids = mixed_workload(d)
    m.pump(d.published())
    assert m.gaps == 0 and m.recovered == 0
    # Every change made is one event: the job's change serial counts them.
    serials = {r[0]: r[1] for r in d.call("query_jobs", ids=ids, fields=["id", "change_serial"])["rows"]}
    for i in ids:
        assert m.jobs[i]["serial"] == serials[i]
    assert sum(serials.values()) == d.published()
    m.matches_query()


def test_topic_isolation(daemon):
    d = daemon()
    sub = d.subscriber(b"job/12/", b"sys/heartbeat")
    d.wait_subscribed(sub)
    res = d.call("submit_many_jobs", jobs=[[{"op": "test.log", "args": {"messages": ["x"]}}]] * 130)
    assert [r[1] for r in res] == list(range(1, 131))
    d.wait_final(range(1, 131))
    published = d.published()
    want = d.call("query_jobs", ids=[12], fields=["change_serial"])["rows"][0][0]
    got = []
    deadline = time.monotonic() + 10
    while True:
        assert time.monotonic() < deadline
        if not sub.poll(100):
            continue
        topic, ev = decode(sub.recv_multipart())
        if topic == "sys/heartbeat":
            if ev["seq"] >= published and len(got) >= want:
                break
            continue
        assert topic == "job/12/" and ev["change"]["job"] == 12
        got.append(ev["change"]["serial"])
    assert got == list(range(1, want + 1))


def test_gap_detection_and_catch_up(daemon):
    # A tiny queue on both sides (jobqd's default holds 20,000): it must drop.
    d = daemon("--max-running", "4", "--publish-hwm", "16")
    sub = d.subscriber(b"", hwm=20)
    d.wait_subscribed(sub)
    m = Mirror(d, sub)
    # A burst while the subscriber does not read.
    d.call("submit_many_jobs", jobs=[[{"op": "test.log", "args": {"messages": ["m%d" % i for i in range(10)]}}]] * 1000)
    d.wait_final(range(1, 1001))
    m.pump(d.published())
    assert m.gaps > 0 and m.recovered > 0, "the subscriber was expected to drop events"
    m.matches_query()


def test_resync_when_the_ring_is_too_short(daemon):
    d = daemon("--ring-events", "64", "--publish-hwm", "16")
    sub = d.subscriber(b"", hwm=10)
    d.wait_subscribed(sub)
    m = Mirror(d, sub)
    d.call("submit_many_jobs", jobs=[[{"op": "test.log", "args": {"messages": ["a", "b"]}}]] * 2000)
    d.wait_final(range(1, 2001))
    m.pump(d.published())
    assert m.resyncs > 0
    m.matches_query()
    old = d.call("events_since", after_seq=1)
    assert old["too_old"] and old["events"] == [] and old["first_seq"] > 2
    assert d.call("events_since", after_seq=1, epoch=12345)["too_old"]


# ---- wait_for_job_change (JOBMODEL §2.4) ----

def wfjc(d, job, fields, prev, serial, timeout, sock=None):
    return d.send("wait_for_job_change", sock=sock, id=job, fields=fields, prev_job_info=prev,
                  prev_log_serial=serial, timeout=timeout)


def answer(d, rid, sock=None, timeout=10):
    keepalives = 0
    while True:
        rep = d.recv(sock=sock, timeout=timeout)
        assert rep["id"] == rid
        if rep.get("keepalive"):
            keepalives += 1
            continue
        assert rep["ok"], rep
        return rep["result"], keepalives


def test_wfjc_rules(daemon):
    d = daemon("--keepalive", "0.2", "--max-running", "1")
    w = d.dealer()  # waits on their own connection: d.call() skips foreign replies
    # Unknown job: None.
    assert answer(d, wfjc(d, 999, ["status"], None, None, 1, sock=w), sock=w)[0] is None
    blocker = d.call("submit_job", ops=[{"op": "test.delay", "args": {"duration": 60}}])
    job = d.call("submit_job", ops=[{"op": "test.log", "args": {"messages": ["one", "two"]}}])
    # First call (prev None) answers at once with the current values.
    (info, log), _ = answer(d, wfjc(d, job, ["status", "priority"], None, None, 5, sock=w), sock=w)
    assert info == ["queued", 0] and log == []
    # Nothing changes: "nochange" at the timeout, keepalives meanwhile.
    t0 = time.monotonic()
    res, keepalives = answer(d, wfjc(d, job, ["status", "priority"], info, 0, 1.0, sock=w), sock=w)
    assert res == "nochange" and keepalives >= 3 and time.monotonic() - t0 >= 0.9
    # A change to a watched field answers with the new values.
    rid = wfjc(d, job, ["status", "priority"], info, 0, 10, sock=w)
    d.call("change_job_priority", id=job, priority=-10)
    (info, log), _ = answer(d, rid, sock=w)
    assert info == ["queued", -10] and log == []
    # A change to an unwatched field does not; new log entries always do.
    rid = wfjc(d, job, ["priority"], [-10], 0, 10, sock=w)
    d.call("cancel_job", id=blocker)
    (info, log), _ = answer(d, rid, sock=w)
    assert info == [-10] and log[0][0] == 1 and log[0][3] == "one"
    # Only entries after prev_log_serial; a final job answers at once.
    d.wait_final([job])
    (info, log), _ = answer(d, wfjc(d, job, ["status"], ["success"], 1, 10, sock=w), sock=w)
    assert info == ["success"] and [e[0] for e in log] == [2]
    # Archived: still found, final, answers at once.
    assert d.call("archive_job", id=job)
    (info, log), _ = answer(d, wfjc(d, job, ["status", "archived"], ["success", True], 2, 10, sock=w), sock=w)
    assert info == ["success", True] and log == []


def test_wfjc_canceling_answers_and_bad_arguments(daemon):
    d = daemon("--max-running", "1")
    w = d.dealer()
    job = d.call("submit_job", ops=[{"op": "test.delay", "args": {"duration": 60, "repeat": 1}}])
    (info, _), _ = answer(d, wfjc(d, job, ["status"], None, None, 5, sock=w), sock=w)
    deadline = time.monotonic() + 10
    while info != ["running"]:
        assert time.monotonic() < deadline
        (info, _), _ = answer(d, wfjc(d, job, ["status"], info, 1, 5, sock=w), sock=w)
    rid = wfjc(d, job, ["status"], info, 1, 10, sock=w)
    d.call("cancel_job", id=job)
    (info, _), _ = answer(d, rid, sock=w)
    assert info[0] in ("canceling", "canceled")
    for bad in ({"id": "x"}, {"id": job, "fields": ["nope"]}, {"id": job, "timeout": -1},
                {"id": job, "timeout": 10000}, {"id": job, "prev_log_serial": "a"}):
        rid = d.send("wait_for_job_change", **bad)
        rep = d.recv()
        assert rep["id"] == rid and not rep["ok"]
        assert rep["error"]["code"] in ("BadArgument", "UnknownField")


def test_many_waiters_and_subscribers_cost_no_thread(daemon):
    d = daemon("--keepalive", "1")
    threads = d.threads()
    job = d.call("submit_job", ops=[{"op": "test.delay", "args": {"duration": 60}}])
    (info, _), _ = answer(d, wfjc(d, job, ["status"], None, None, 5))
    deadline = time.monotonic() + 10
    while info != ["running"]:
        assert time.monotonic() < deadline
        (info, _), _ = answer(d, wfjc(d, job, ["status"], info, 0, 5))
    # 3,000 parked waiters over 30 connections, and 200 subscribers.
    socks = [d.dealer() for _ in range(30)]
    pending = {}
    for i in range(3000):
        s = socks[i % len(socks)]
        pending[wfjc(d, job, ["status"], info, 0, 120, sock=s)] = s
    subs = [d.subscriber(("job/%d/" % job).encode(), b"sys/heartbeat") for _ in range(200)]
    for s in subs:
        d.wait_subscribed(s)
    deadline = time.monotonic() + 20
    while d.call("stats")["waiters"] < 3000:
        assert time.monotonic() < deadline
    assert d.threads() == threads
    d.call("cancel_job", id=job)
    answered = 0
    for s in socks:
        while any(v is s for v in pending.values()):
            rep = d.recv(sock=s, timeout=20)
            if rep.get("keepalive"):
                continue
            assert rep["ok"] and rep["result"][0][0] in ("canceling", "canceled")
            del pending[rep["id"]]
            answered += 1
    assert answered == 3000
    for s in subs:
        deadline = time.monotonic() + 10
        while True:
            assert time.monotonic() < deadline
            topic, ev = decode(s.recv_multipart())
            if topic != "sys/heartbeat" and ev["change"]["status"] == "canceled":
                break
    assert d.threads() == threads
    assert d.call("stats")["waiters"] == 0


def test_waiters_are_answered_at_shutdown(daemon):
    # The job waits behind a blocker, so shutdown does not end it: the
    # waiter learns of the shutdown itself.
    d = daemon("--max-running", "1")
    d.call("submit_job", ops=[{"op": "test.delay", "args": {"duration": 60}}])
    job = d.call("submit_job", ops=[{"op": "test.delay", "args": {"duration": 60}}])
    (info, _), _ = answer(d, wfjc(d, job, ["id"], None, None, 5))
    rid = wfjc(d, job, ["id"], info, 0, 60)
    deadline = time.monotonic() + 10
    while d.call("stats")["waiters"] < 1:
        assert time.monotonic() < deadline
    # The blocker runs on through a first SIGTERM's grace; a second one
    # stops the daemon at once.
    d.proc.send_signal(signal.SIGTERM)
    time.sleep(0.1)  # the load pattern: two signals, not one
    d.proc.send_signal(signal.SIGTERM)
    rep = d.recv(timeout=10)
    while rep.get("keepalive"):
        rep = d.recv(timeout=10)
    assert rep["id"] == rid and not rep["ok"] and rep["error"]["code"] == "ShuttingDown"
    assert d.proc.wait(10) == 0
