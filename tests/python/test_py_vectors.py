"""The golden protocol vectors of tests/vectors/ (see its README.md) on the
Python side:

- python3-msgpack packs each readable form (NAME.json, keys in order)
  into exactly NAME.msgpack and unpacks it back into the same values and
  types;
- the Python worker (jobq.Worker) sends exactly the worker vectors (hello,
  feedback, done ok and error, heartbeat, disconnect) and reads the
  daemon's (welcome, assign, cancel, revoke, error, disconnect) — against
  a fake daemon, a ROUTER driven from the test;
- a real jobqd sends its replies, events and worker messages with the
  same keys, in the same order, with the same value types as the vectors.

The C side of the same vectors is tests/unit/test_vectors.c.
"""
from __future__ import annotations

import json
import os
import pathlib
import sys
import tempfile
import threading
import time
from typing import Any

import msgpack
import pytest
import zmq

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path.insert(0, str(ROOT / "clients" / "python"))

import jobq  # noqa: E402
from jobq.worker import (done_message, feedback_message, hello_message,  # noqa: E402
                         _message)
from test_events import Daemon  # noqa: E402
from test_workers import Worker as RawWorker  # noqa: E402

VECTORS = ROOT / "tests" / "vectors"
NAMES = sorted(p.stem for p in VECTORS.glob("*.json"))


def readable(name: str) -> Any:
    """The readable form of a vector."""
    return json.loads((VECTORS / f"{name}.json").read_text())


def raw(name: str) -> bytes:
    """The bytes of a vector."""
    return (VECTORS / f"{name}.msgpack").read_bytes()


def shape(v: Any) -> Any:
    """A value's structure: map keys in order, list items, scalar types
    (int, float, str, bool, nil); values themselves left out."""
    if isinstance(v, dict):
        return [(k, shape(x)) for k, x in v.items()]
    if isinstance(v, list):
        return ["list", [shape(x) for x in v]]
    return type(v).__name__


def test_vector_set_is_complete() -> None:
    for kind in ("hello", "welcome", "assign", "feedback", "done_ok", "done_error", "cancel",
                 "revoke", "heartbeat", "error", "disconnect"):
        assert f"worker_{kind}" in NAMES
    for name in ("ping_request", "ping_reply", "submit_job_request", "submit_job_reply",
                 "error_reply", "event_change", "event_heartbeat"):
        assert name in NAMES
    for name in NAMES:
        assert (VECTORS / f"{name}.msgpack").is_file(), name


@pytest.mark.parametrize("name", NAMES)
def test_pack_and_unpack(name: str) -> None:
    value = readable(name)
    assert msgpack.packb(value, use_bin_type=True) == raw(name)
    back = msgpack.unpackb(raw(name), raw=False)
    assert back == value and shape(back) == shape(value)


def test_python_worker_encoders() -> None:
    h = readable("worker_hello")
    assert msgpack.packb(hello_message(h["opcodes"], h["capacity"], h["name"]),
                         use_bin_type=True) == raw("worker_hello")
    fb = readable("worker_feedback")
    lease = (fb["job"], fb["op"], fb["attempt"])
    assert msgpack.packb(feedback_message(lease, [tuple(e) for e in fb["entries"]]),
                         use_bin_type=True) == raw("worker_feedback")
    assert msgpack.packb(done_message(lease, True, readable("worker_done_ok")["result"]),
                         use_bin_type=True) == raw("worker_done_ok")
    assert msgpack.packb(done_message(lease, False, error=readable("worker_done_error")["error"]),
                         use_bin_type=True) == raw("worker_done_error")
    assert msgpack.packb(_message("heartbeat"), use_bin_type=True) == raw("worker_heartbeat")
    assert msgpack.packb(_message("disconnect"), use_bin_type=True) == raw("worker_disconnect")


class FakeDaemon:
    """A ROUTER the worker connects to; the test sends and receives."""

    def __init__(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="jobq-pyvec-")
        self.endpoint = f"ipc://{self.dir}/workers.sock"
        self.ctx = zmq.Context()
        self.router = self.ctx.socket(zmq.ROUTER)
        self.router.setsockopt(zmq.LINGER, 0)
        self.router.bind(self.endpoint)
        self.rid = b""

    def recv(self, skip_heartbeats: bool = True, timeout: float = 10.0) -> bytes:
        """The next message's bytes (heartbeats skipped unless asked for)."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            assert left > 0, "nothing from the worker"
            if self.router.poll(int(left * 1000)):
                self.rid, body = self.router.recv_multipart()
                if skip_heartbeats and body == raw("worker_heartbeat"):
                    continue
                return body

    def send(self, name: str) -> None:
        self.router.send_multipart([self.rid, raw(name)])

    def close(self) -> None:
        self.router.close(0)
        self.ctx.term()
        for f in os.listdir(self.dir):
            os.unlink(os.path.join(self.dir, f))
        os.rmdir(self.dir)


def test_python_worker_against_the_vectors() -> None:
    fake = FakeDaemon()
    h = readable("worker_hello")
    w = jobq.Worker(fake.endpoint, name=h["name"], capacity=h["capacity"])
    echo = h["opcodes"][0]
    calls: list[jobq.worker.Assignment] = []
    stops: list[str | None] = []

    @w.opcode(echo["name"], args=echo["args"], description=echo["description"],
              timeout=echo["timeout"])
    def run_echo(job: jobq.worker.Assignment) -> Any:
        calls.append(job)
        n = len(calls)
        if n == 1:
            job.feedback_entries([tuple(e) for e in readable("worker_feedback")["entries"]])
            return readable("worker_done_ok")["result"]
        if n == 2:
            raise ValueError(readable("worker_done_error")["error"])
        assert job.cancelled.wait(10)
        stops.append(job.stop_reason)
        return None

    @w.opcode("vec.fail")
    def run_fail(job: jobq.worker.Assignment) -> None:
        raise AssertionError("never assigned")

    th = threading.Thread(target=w.run, daemon=True)
    th.start()
    try:
        assert fake.recv() == raw("worker_hello")
        fake.send("worker_welcome")
        fake.send("worker_assign")
        assert fake.recv() == raw("worker_feedback")
        assert fake.recv() == raw("worker_done_ok")
        a = calls[0]
        assert (a.job, a.op, a.attempt, a.opcode, a.args, a.priority, a.timeout) == \
            (1, 0, 1, "vec.echo", {"text": "hi", "count": 2}, 0, 60.0)
        assert w.worker_id == 1 and w.heartbeat == 1.0 and w.lease_time == 5.0
        # The same lease handed out again: the handler raises.
        fake.send("worker_assign")
        assert fake.recv() == raw("worker_done_error")
        # A heartbeat within the welcome's interval, as the vector.
        assert fake.recv(skip_heartbeats=False) == raw("worker_heartbeat")
        # cancel: the handler sees it; its answer still goes out (a done).
        fake.send("worker_assign")
        fake.send("worker_cancel")
        done = msgpack.unpackb(fake.recv(), raw=False)
        assert done["type"] == "done" and stops == ["canceled"]
        # revoke: the handler sees it; nothing goes out for the lease.
        fake.send("worker_assign")
        fake.send("worker_revoke")
        deadline = time.monotonic() + 10
        while len(stops) < 2:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert stops[1].startswith("revoked: this worker does not hold that lease")
        assert w.leases() == []
        # An error naming a lease is logged, nothing more.
        fake.send("worker_error")
        # The daemon's disconnect: a new connection, the same hello.
        old = fake.rid
        fake.send("worker_disconnect_daemon")
        assert fake.recv() == raw("worker_hello")
        assert fake.rid != old and w.connections == 2
        fake.send("worker_welcome")
        deadline = time.monotonic() + 10
        while not w.ready:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        # Nothing was sent for the revoked lease.
        w.stop()
        assert fake.recv() == raw("worker_disconnect")
        th.join(10)
        assert not th.is_alive()
        assert w.malformed == 0
    finally:
        w.stop()
        th.join(10)
        fake.close()


def test_the_daemon_sends_the_vectors_shapes() -> None:
    """A real jobqd's messages have the vectors' keys, order and types."""
    d = Daemon("--worker-heartbeat", "0.2", "--worker-lease", "5",
               "--max-request-bytes", "4096")
    try:
        assert shape(d.call("ping")) == shape(readable("ping_reply")["result"])
        hb = d.subscriber(b"sys/")
        d.wait_subscribed(hb)
        _, body = hb.recv_multipart()
        assert shape(msgpack.unpackb(body, raw=False)) == shape(readable("event_heartbeat"))

        hello = readable("worker_hello")
        w = RawWorker(d, hello["opcodes"], capacity=hello["capacity"], name=hello["name"])
        assert shape(w.welcome) == shape(readable("worker_welcome"))
        sub = d.subscriber(b"job/", b"sys/")
        d.wait_subscribed(sub)
        req = readable("submit_job_request")
        rid = d.send("submit_job", **req["args"])
        rep = d.recv()
        assert rep["id"] == rid and shape(rep) == shape(readable("submit_job_reply"))
        a = w.assignment()
        assert shape(a) == shape(readable("worker_assign"))
        # The running update, as event_change.
        deadline = time.monotonic() + 10
        while True:
            assert sub.poll(int(max(0, deadline - time.monotonic()) * 1000)), "no event"
            topic, body = sub.recv_multipart()
            ev = msgpack.unpackb(body, raw=False)
            if topic.startswith(b"job/") and ev["change"]["kind"] == "update":
                break
        assert shape(ev) == shape(readable("event_change"))
        # An error reply.
        rid = d.send("submit_job", ops=[])
        assert shape(d.recv()) == shape(readable("error_reply"))
        # A done too large: error naming the lease.
        w.done(a, result="x" * 5000)
        assert shape(w.expect("error")) == shape(readable("worker_error"))
        # cancel (of a running opcode), revoke (of a lease not held).
        jid = d.call("submit_job", ops=req["args"]["ops"])
        a = w.assignment()
        assert a["job"] == jid
        d.call("cancel_job", id=jid)
        assert shape(w.expect("cancel")) == shape(readable("worker_cancel"))
        w.feedback({"job": jid + 100, "op": 0, "attempt": 1}, ("message", "x"))
        assert shape(w.expect("revoke")) == shape(readable("worker_revoke"))
        w.done(a)
        # A connection that never said hello is told disconnect.
        stranger = RawWorker(d, [], hello=False)
        stranger.send("heartbeat")
        assert shape(stranger.expect("disconnect")) == shape(readable("worker_disconnect_daemon"))
        stranger.close(say_goodbye=False)
        w.close()
    finally:
        d.stop()


def test_client_encoder_and_reply_parser() -> None:
    """jobq.Client's own request encoder gives the request vectors' bytes,
    and its reply parser reads the reply vectors."""
    from jobq.protocol import encode_request, parse_reply
    for name in ("ping_request", "submit_job_request"):
        v = readable(name)
        assert encode_request(v["id"], v["method"], v["args"]) == raw(name), name
    ok = parse_reply(raw("submit_job_reply"))
    assert ok is not None and ok.ok and ok.id == readable("submit_job_reply")["id"]
    assert ok.result == readable("submit_job_reply")["result"]
    err = parse_reply(raw("error_reply"))
    want = readable("error_reply")
    assert err is not None and not err.ok
    assert (err.code, err.message) == (want["error"]["code"], want["error"]["message"])
