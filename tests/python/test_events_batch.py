"""The batched event stream (topic batch/) and --publish-hwm, end to end
against a real jobqd.

Covers: a batch carries consecutive events whose bytes are exactly the
per-event stream's bodies, every change arrives once and in order (a ""
subscriber gets both streams); jobq.Subscriber(batched=True) delivers what
the per-event subscriber delivers, detects gaps by seq and catches up with
events_since, and resyncs when the ring is too short; --publish-hwm is
accepted, validated and read from the config file, its default holds a
burst, a reload leaves it (and says so);
malformed subscription messages neither crash the daemon nor stop it from
serving other subscribers.

No sleeps wait for state: every wait is a bounded poll.
"""
import os
import signal
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
from test_events import JOBQD, Daemon, daemon, mixed_workload  # noqa: E402,F401 (a fixture)
from test_service import start, tmp  # noqa: E402,F401 (fixtures)


def array_header(n):
    """msgpack's shortest array header for n items."""
    return msgpack.packb([None] * n)[: -n] if n else b"\x90"


def read_per_event(sub, last, timeout=20):
    """Per-event messages up to seq last: {seq: raw body}, and the batches'
    events seen on the way (a "" subscriber gets both)."""
    bodies, batched = {}, []
    deadline = time.monotonic() + timeout
    while len(bodies) < last or len(batched) < last:
        assert time.monotonic() < deadline, (len(bodies), len(batched), last)
        if not sub.poll(100):
            continue
        topic, body = sub.recv_multipart()
        if topic.startswith(b"job/"):
            bodies[msgpack.unpackb(body)["seq"]] = body
        elif topic == b"batch/":
            batched += [ev["seq"] for ev in msgpack.unpackb(body)]
    return bodies, batched


def read_batches(sub, last, timeout=20):
    """Batch messages until seq last: the list of (raw body, decoded list);
    heartbeats are checked on the way (never above what arrived before)."""
    batches, seen = [], 0
    deadline = time.monotonic() + timeout
    while seen < last:
        assert time.monotonic() < deadline, (seen, last)
        if not sub.poll(100):
            continue
        topic, body = sub.recv_multipart()
        v = msgpack.unpackb(body, raw=False)
        if topic == b"sys/heartbeat":
            assert v["seq"] <= seen, (v, seen)  # a batch goes before its heartbeat
            continue
        assert topic == b"batch/", topic
        assert isinstance(v, list) and v, v
        batches.append((body, v))
        seen = v[-1]["seq"]
    return batches


def test_batches_carry_every_change_once_in_order(daemon):
    d = daemon("--max-running", "2")
    per = d.subscriber(b"")  # "": everything, both streams
    bat = d.subscriber(b"batch/", b"sys/")
    d.wait_subscribed(per)
    d.wait_subscribed(bat)
    mixed_workload(d)
    # A burst: one submit_many_jobs commits its jobs together, so their
    # submit events leave in few turns, a batch each.
    d.call("submit_many_jobs", jobs=[[{"op": "test.log", "args": {"messages": ["x"]}}]] * 300)
    last = d.published()
    bodies, batched = read_per_event(per, last)
    assert sorted(bodies) == batched == list(range(1, last + 1))
    batches = read_batches(bat, last)
    seqs = [ev["seq"] for _, evs in batches for ev in evs]
    assert seqs == list(range(1, last + 1))  # every change once, in order
    epoch = batches[0][1][0]["epoch"]
    for raw, evs in batches:
        assert all(ev["epoch"] == epoch for ev in evs)
        # The header, then each event's body exactly as the per-event
        # stream carried it (encoded once).
        assert raw == array_header(len(evs)) + b"".join(bodies[ev["seq"]] for ev in evs)
        assert len(evs) <= 1024
    # Batched: fewer messages than events, and the burst's events many to
    # one message (how many per turn depends on the commits' timing).
    assert len(batches) < last and max(len(evs) for _, evs in batches) >= 10, \
        [len(e) for _, e in batches][-5:]


def test_subscriber_batched_delivers_what_the_per_event_one_does(daemon):
    d = daemon("--max-running", "2")
    ep = "ipc://%s/jobq.sock" % d.dir
    with jobq.Subscriber(ep, batched=True) as b, jobq.Subscriber(ep) as p:
        starts = [s.next(timeout=10) for s in (b, p)]
        assert all(ev["type"] == "resync" and ev["reason"] == "start" for ev in starts)
        mixed_workload(d)
        last = d.published()
        got = {}
        for name, s, start in (("b", b, starts[0]), ("p", p, starts[1])):
            evs = []
            deadline = time.monotonic() + 20
            while not evs or evs[-1]["seq"] < last:
                assert time.monotonic() < deadline, (name, s.last_seq, last)
                ev = s.next(timeout=0.5)
                if ev is not None:
                    assert ev["type"] == "change", ev
                    evs.append(ev)
            assert [e["seq"] for e in evs] == list(range(start["seq"] + 1, last + 1))
            got[name] = [(e["seq"], e["job"], e["serial"], e["kind"], e["change"]) for e in evs]
        # The two subscriptions started at different moments: compare what both saw.
        first = max(starts[0]["seq"], starts[1]["seq"])
        assert [g for g in got["b"] if g[0] > first] == [g for g in got["p"] if g[0] > first]
        assert b.counters["gaps"] == 0 and b.counters["resyncs"] == 0, b.counters
    with pytest.raises(jobq.BadArgumentError):
        jobq.Subscriber(ep, jobs=[1], batched=True)


def pump(sub, last, timeout=30):
    """Events of sub until it delivered seq last (the change at last, or a
    resync at last or later)."""
    evs = []
    deadline = time.monotonic() + timeout
    while not evs or evs[-1]["seq"] < last:
        assert time.monotonic() < deadline, (sub.last_seq, last, sub.counters)
        ev = sub.next(timeout=0.5)
        if ev is not None:
            evs.append(ev)
    return evs


def burst(d, jobs, messages):
    ids = [r[1] for r in d.call("submit_many_jobs", jobs=[[{"op": "test.log", "args": {
        "messages": ["m%d" % i for i in range(messages)]}}]] * jobs)]
    d.wait_final(ids)
    return ids


def test_batched_gaps_are_detected_and_filled(daemon):
    # A small queue on both sides and a subscriber that does not read
    # during the burst: batches must be lost, and found again.
    d = daemon("--max-running", "4", "--publish-hwm", "16")
    with jobq.Subscriber("ipc://%s/jobq.sock" % d.dir, batched=True, rcvhwm=1) as s:
        start = s.next(timeout=10)
        assert start["reason"] == "start"
        ids = burst(d, 1000, 10)
        last = d.published()
        evs = pump(s, last)
        assert s.counters["gaps"] > 0 and s.counters["recovered"] > 0, s.counters
        assert s.counters["resyncs"] == 0, s.counters
        # Each change once, in order, from the stream or from events_since.
        assert [e["seq"] for e in evs] == list(range(start["seq"] + 1, last + 1))
        rows = d.call("query_jobs", ids=ids, fields=["id", "change_serial"])["rows"]
        assert {r[0]: r[1] for r in rows} == {j: s.job_serials()[j] for j in ids}


def test_batched_resync_when_the_ring_is_too_short(daemon):
    d = daemon("--ring-events", "64", "--publish-hwm", "16")
    with jobq.Subscriber("ipc://%s/jobq.sock" % d.dir, batched=True, rcvhwm=1) as s:
        assert s.next(timeout=10)["reason"] == "start"
        ids = burst(d, 2000, 2)
        last = d.published()
        evs = pump(s, last)
        assert s.counters["resyncs"] > 0, s.counters
        assert any(e["type"] == "resync" and e["reason"] == "too_old" for e in evs)
        rows = d.call("query_jobs", ids=ids, fields=["id", "change_serial"])["rows"]
        assert {r[0]: r[1] for r in rows} == {j: s.job_serials()[j] for j in ids}


# ---- --publish-hwm ----

def jobqd(*args):
    return subprocess.run([JOBQD, *args], capture_output=True, text=True, timeout=10)


def test_publish_hwm_is_validated_and_listed():
    assert "--publish-hwm N" in jobqd("--help").stdout
    with tempfile.TemporaryDirectory() as tmp:
        for bad in ("0", "15", "10000001", "-1", "many", ""):
            p = jobqd("--data-dir", tmp, "--publish-hwm", bad)
            assert p.returncode == 2, (bad, p.returncode, p.stderr)
            lines = p.stderr.strip().splitlines()
            assert len(lines) == 1 and "--publish-hwm" in lines[0], (bad, p.stderr)
        conf = os.path.join(tmp, "bad.conf")
        with open(conf, "w") as f:
            f.write("publish-hwm = 3\n")
        p = jobqd("--data-dir", tmp, "--config", conf)
        assert p.returncode == 2 and "bad.conf:1" in p.stderr, p.stderr


def seq_gaps(sub, last, timeout=20):
    """Reads the per-event stream up to seq last, or to a heartbeat that
    says last was sent (the last events may be the lost ones): the events
    missed."""
    prev = missed = 0
    deadline = time.monotonic() + timeout
    while prev < last:
        assert time.monotonic() < deadline, (prev, last)
        if not sub.poll(100):
            continue
        topic, body = sub.recv_multipart()
        v = msgpack.unpackb(body)
        if topic.startswith(b"job/"):
            missed += v["seq"] - prev - 1
            prev = v["seq"]
        elif topic == b"sys/heartbeat" and v["seq"] >= last:
            return missed + last - prev
    return missed


def idle_subscriber(d):
    """A per-event subscriber with the smallest queue of its own, which
    reads nothing until asked: what it keeps is the daemon's queue."""
    sub = d.subscriber(b"job/", b"sys/", hwm=1)
    d.wait_subscribed(sub)
    return sub


def test_the_default_hwm_holds_a_burst(daemon):
    d = daemon("--max-running", "4")
    sub = idle_subscriber(d)
    burst(d, 300, 10)  # 4,200 events while sub does not read: within 20,000
    assert seq_gaps(sub, d.published()) == 0


def test_publish_hwm_from_the_config_file_and_a_reload_needs_a_restart(start, tmp):
    conf = os.path.join(tmp, "jobqd.conf")
    with open(conf, "w") as f:
        f.write("publish-hwm = 16\n")
    j = start("--config", conf, "--max-running", "4")
    d = Daemon.__new__(Daemon)  # test_events' helpers on this daemon
    d.ctx, d.dir, d.rid = j.ctx, j.data, 0
    d.sock = d.dealer()
    d.events_ep = "ipc://%s/events.sock" % j.run
    sub = idle_subscriber(d)
    burst(d, 300, 10)
    assert seq_gaps(sub, d.published()) > 0, "16 messages cannot hold the burst"
    # A reload does not change it (libzmq would stall connected
    # subscribers if it lowered it): said, and the stream goes on.
    with open(conf, "w") as f:
        f.write("publish-hwm = 1000000\n")
    j.proc.send_signal(signal.SIGHUP)
    j.wait_log("publish-hwm changed in %s: needs a restart" % conf)
    first = d.published()
    d.call("submit_job", ops=[{"op": "test.log", "args": {"messages": ["x"]}}])
    last = d.published()
    assert last > first
    deadline = time.monotonic() + 10
    seen = 0
    while seen < last:
        assert time.monotonic() < deadline, (seen, last)
        if sub.poll(100):
            topic, body = sub.recv_multipart()
            if topic.startswith(b"job/"):
                seen = msgpack.unpackb(body)["seq"]
    d.sock.close(0)


# ---- subscriptions are peer input ----

def test_malformed_subscriptions_do_not_hurt(daemon):
    d = daemon()
    x = d.ctx.socket(zmq.XSUB)  # sends whatever it is given, as subscriptions
    x.setsockopt(zmq.LINGER, 0)
    x.connect(d.events_ep)
    for msg in ([b""], [b"\x02job/"], [b"\xff" * 40], [b"\x00never-subscribed"], [b"\x00"],
                [b"\x01"], [b"\x00"], [b"\x01\x00\xff binary \x80"], [b"\x01job/", b"more"],
                [b"\x01" + b"t" * 255]):
        x.send_multipart(msg)
    x.send(b"\x01batch/")
    # The subscription above went through: submits arrive as batches. PUB
    # applies a subscription in its own time, so submits go on until the
    # first batch arrives; from there the stream has no gap.
    got = []
    deadline = time.monotonic() + 10
    while not got:
        assert time.monotonic() < deadline, "no batch/ message"
        d.call("submit_job", ops=[{"op": "test.log", "args": {"messages": ["x"]}}])
        if x.poll(100):
            topic, body = x.recv_multipart()
            if topic == b"batch/":
                got += [e["seq"] for e in msgpack.unpackb(body, raw=False)]
    last = d.published()
    while got[-1] < last:
        assert time.monotonic() < deadline, got
        if x.poll(100):
            topic, body = x.recv_multipart()
            if topic == b"batch/":
                got += [e["seq"] for e in msgpack.unpackb(body, raw=False)]
    assert got == list(range(got[0], last + 1))
    # One larger than a subscription may be closes that connection only.
    x.send(b"\x01" + b"t" * 400)
    fresh = d.subscriber(b"batch/", b"sys/")
    d.wait_subscribed(fresh)
    d.call("submit_job", ops=[{"op": "test.log", "args": {"messages": ["y"]}}])
    last2 = d.published()
    assert [e["seq"] for _, evs in read_batches(fresh, last2) for e in evs][-1] == last2
    assert d.call("ping")["version"]
