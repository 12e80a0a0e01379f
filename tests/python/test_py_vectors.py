"""The golden protocol vectors of tests/vectors/ (see its README.md) on the
Python side:

- the set is complete: a request and a reply vector for every method of
  docs/protocol.md (which must be the daemon's dispatch table), an event
  vector for every change kind, every worker message type;
- python3-msgpack packs each readable form (NAME.json, keys in order)
  into exactly NAME.msgpack and unpacks it back into the same values and
  types;
- jobq.Client sends exactly every request vector, one call per method
  (the snapshot through jobq.Subscriber), to a fake daemon answering with
  the reply vectors, and returns what they hold;
- the Python worker (jobq.Worker) sends exactly the worker vectors (hello,
  feedback, done ok and error, heartbeat, disconnect) and reads the
  daemon's (welcome, assign, cancel, revoke, error, disconnect) — against
  a fake daemon, a ROUTER driven from the test;
- a real jobqd sends its replies, events and worker messages with the
  same keys, in the same order, with the same value types as the vectors
  (vector_scenario.py is the exchange the vectors were taken from; it is
  run again here).

The C side of the same vectors is tests/unit/test_vectors.c.
"""
from __future__ import annotations

import json
import os
import pathlib
import re
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
import vector_scenario  # noqa: E402

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


def documented_methods() -> list[str]:
    """The methods of docs/protocol.md: the "### `name` — ..." headings of
    its "## Methods" section, in order."""
    text = (ROOT / "docs" / "protocol.md").read_text()
    section = text.split("\n## Methods\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"^### `(\w+)` \u2014", section, re.M)


def daemon_methods() -> list[str]:
    """The methods of jobqd's dispatch table (broker/handlers.c)."""
    text = (ROOT / "broker" / "handlers.c").read_text()
    return re.findall(r'\[JQ_M_\w+\] = \{"(\w+)"', text)


def documented_change_kinds() -> list[str]:
    """The change kinds of docs/protocol.md's record table (row `kind`)."""
    text = (ROOT / "docs" / "protocol.md").read_text()
    row = re.search(r"^\| `kind` \| (.*) \|$", text, re.M)
    assert row, "no kind row in docs/protocol.md"
    return re.findall(r"`(\w+)`", row.group(1))


def test_vector_set_is_complete() -> None:
    methods = documented_methods()
    assert len(methods) >= 15 and "ping" in methods and "list_opcodes" in methods
    assert sorted(methods) == sorted(daemon_methods()), \
        "docs/protocol.md and broker/handlers.c list other methods"
    for m in methods:
        assert f"{m}_request" in NAMES, f"no request vector for {m}"
        assert f"{m}_reply" in NAMES, f"no reply vector for {m}"
    # Every request vector names a method; every reply answers a request.
    requests = {n: readable(n) for n in NAMES if n.endswith("_request")}
    for name, req in requests.items():
        assert req["method"] in methods, name
        assert vector_scenario.method_of(name[: -len("_request")]) == req["method"], name
        rep = name[: -len("_request")] + "_reply"
        assert rep in NAMES and readable(rep)["id"] == req["id"], name
    ids = sorted(r["id"] for r in requests.values())
    assert ids == [i for i in range(1, len(ids) + 2) if i != 3], \
        "request ids are one client's counter (3: the request error_reply answers)"
    for name in NAMES:
        if name.endswith("_reply") and name != "error_reply":
            assert name[: -len("_reply")] + "_request" in NAMES, name
    # Every change kind, and the variants docs/protocol.md describes.
    events = [readable(n) for n in NAMES if n.startswith("event_") and n != "event_heartbeat"]
    kinds = {e["change"]["kind"] for e in events}
    assert kinds == set(documented_change_kinds()) == {"submit", "update", "archive"}
    assert any("client" in e["change"] for e in events), "no submit with a client token"
    assert any(e["change"]["kind"] == "submit" and "client" not in e["change"] for e in events)
    assert any(e["change"]["log"] for e in events), "no change with log entries"
    assert "event_heartbeat" in NAMES
    assert readable("wait_for_job_change_keepalive")["keepalive"] is True
    assert readable("events_since_too_old_reply")["result"]["too_old"] is True
    assert "snapshot" in readable("query_jobs_snapshot_request")["args"]
    assert readable("wait_for_job_change_nochange_reply")["result"] == "nochange"
    for kind in ("hello", "welcome", "assign", "feedback", "done_ok", "done_error", "cancel",
                 "revoke", "heartbeat", "error", "disconnect", "disconnect_daemon"):
        assert f"worker_{kind}" in NAMES
    assert "error_reply" in NAMES
    # The README's table names every vector, and only those.
    readme = (VECTORS / "README.md").read_text()
    listed = set(re.findall(r"^\| `(\w+)` \|", readme, re.M))
    assert listed == set(NAMES), (set(NAMES) - listed, listed - set(NAMES))
    for name in NAMES:
        assert (VECTORS / f"{name}.msgpack").is_file(), name


@pytest.mark.parametrize("name", NAMES)
def test_pack_and_unpack(name: str) -> None:
    value = readable(name)
    assert msgpack.packb(value, use_bin_type=True) == raw(name)
    back = msgpack.unpackb(raw(name), raw=False)
    assert back == value and shape(back) == shape(value)


def test_cluster_vectors() -> None:
    """The hand-kept cluster vectors: the NotLeader reply parses into a
    NotLeaderError carrying the leader; the Python worker's hello with
    leases is the vector's; the shapes follow docs/protocol.md."""
    from jobq.protocol import parse_reply
    v = readable("error_not_leader")
    rep = parse_reply(raw("error_not_leader"))
    assert rep is not None and not rep.ok and rep.code == "NotLeader"
    assert rep.leader == v["error"]["leader"]
    e = jobq.error_for(rep.code, rep.message, rep.leader)
    assert isinstance(e, jobq.NotLeaderError) and e.leader == v["error"]["leader"]
    assert sorted(e.leader) == ["address", "endpoints", "id", "name", "publish", "workers"]
    h = readable("worker_hello_leases")
    assert msgpack.packb(hello_message(h["opcodes"], h["capacity"], h["name"],
                                       [tuple(x) for x in h["leases"]]),
                         use_bin_type=True) == raw("worker_hello_leases")
    assert readable("worker_welcome_resumed")["resumed"] == [h["leases"][0]]
    for n in readable("query_nodes_reply")["result"]:
        assert list(n) == ["id", "name", "address", "role", "state", "endpoints", "applied",
                           "lag_entries", "lag_seconds", "last_contact", "self"]


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


def client_exchange() -> list[tuple[str | None, list[str]]]:
    """What a client sends, in order, and what it gets back: the request
    vector (None: the request error_reply answers) and the reply vectors
    (a keepalive before the parked wait's answer). The order is
    vector_scenario's, the order the daemon answered them in."""
    out: list[tuple[str | None, list[str]]] = [
        ("ping_request", ["ping_reply"]), ("submit_job_request", ["submit_job_reply"]),
        (None, ["error_reply"])]
    for name, _ in vector_scenario.requests(0):
        replies = [f"{name}_reply"]
        if name == "wait_for_job_change_nochange":
            replies.insert(0, "wait_for_job_change_keepalive")
        out.append((f"{name}_request", replies))
    # The cluster's methods (hand-kept vectors), after the exchange.
    for name in ("query_nodes", "add_node", "remove_node", "transfer_leader"):
        out.append((f"{name}_request", [f"{name}_reply"]))
    return out


class FakeClientDaemon:
    """A ROUTER in a thread that answers jobq.Client with the reply
    vectors and keeps the requests it got that were not the vectors'
    bytes; a PUB beside it for a subscriber to connect to."""

    def __init__(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="jobq-pyvec-")
        self.endpoint = f"ipc://{self.dir}/jobq.sock"
        self.events = f"ipc://{self.dir}/events.sock"
        self.ctx = zmq.Context()
        self.router = self.ctx.socket(zmq.ROUTER)
        self.router.setsockopt(zmq.LINGER, 0)
        self.router.bind(self.endpoint)
        self.pub = self.ctx.socket(zmq.PUB)
        self.pub.setsockopt(zmq.LINGER, 0)
        self.pub.bind(self.events)
        self.wrong: list[str] = []
        self.answered = 0
        self.client_done = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        for want, replies in client_exchange():
            if not self.router.poll(10000):
                self.wrong.append(f"no request {want}")
                return
            rid, body = self.router.recv_multipart()
            if want is not None and body != raw(want):
                self.wrong.append(f"{want}: {msgpack.unpackb(body, raw=False)!r}")
            for r in replies:
                self.router.send_multipart([rid, raw(r)])
            self.answered += 1
        self.client_done.wait(10)  # the socket stays until the client read its answer

    def close(self) -> None:
        self.client_done.set()
        self.thread.join(10)
        self.router.close(0)
        self.pub.close(0)
        self.ctx.term()
        for f in os.listdir(self.dir):
            os.unlink(os.path.join(self.dir, f))
        os.rmdir(self.dir)


def result(name: str) -> Any:
    """The result a reply vector holds."""
    return readable(name)["result"]


def args(name: str) -> Any:
    """The arguments of request vector NAME_request."""
    return readable(f"{name}_request")["args"]


def test_python_client_sends_the_request_vectors() -> None:
    """jobq.Client sends every request vector byte for byte, one call per
    method, and returns what each reply vector holds."""
    fake = FakeClientDaemon()
    try:
        with jobq.Client(fake.endpoint, timeout=10) as c:
            assert c.ping() == result("ping_reply")
            sj = args("submit_job")
            assert c.submit_job(sj["ops"], token=sj["token"]) == result("submit_job_reply")
            with pytest.raises(jobq.errors.BadArgumentError) as e:
                c.submit_job(sj["ops"])
            assert e.value.message == readable("error_reply")["error"]["message"]

            a = args("submit_many_jobs")
            assert c.submit_many_jobs(a["jobs"], token=a["token"]) == \
                [tuple(x) for x in result("submit_many_jobs_reply")]
            a = args("query_jobs")
            assert c.query_jobs(fields=a["fields"], status=a["status"], after_id=a["after_id"],
                                limit=a["limit"], archived=a["archived"]) == \
                result("query_jobs_reply")
            a = args("query_jobs_ids")
            assert c.query_jobs(a["ids"], fields=a["fields"]) == result("query_jobs_ids_reply")
            # The snapshot of a subscriber of one job (its default fields).
            a = args("query_jobs_snapshot")
            snap = result("query_jobs_snapshot_reply")
            with jobq.Subscriber(client=c, jobs=a["ids"], fields=a["fields"][2:],
                                 events_endpoint=fake.events) as sub:
                ev = sub.next(timeout=10)
            assert ev is not None and ev["type"] == "resync"
            assert (ev["seq"], ev["epoch"], ev["fields"], ev["rows"]) == \
                (snap["seq"], snap["epoch"], snap["fields"], snap["rows"])

            a = args("wait_for_job_change")
            # An int wait goes out as the float libjobq sends.
            assert c.wait_for_job_change(a["id"], a["fields"], a["prev_job_info"],
                                         a["prev_log_serial"], int(a["timeout"])) == \
                tuple(result("wait_for_job_change_reply"))
            a = args("wait_for_job_change_nochange")
            assert c.wait_for_job_change(a["id"], a["fields"], a["prev_job_info"],
                                         a["prev_log_serial"], a["timeout"]) == "nochange"
            a = args("wait_for_job_change_unknown")
            assert c.wait_for_job_change(a["id"], a["fields"], a["prev_job_info"],
                                         a["prev_log_serial"], a["timeout"]) is None

            a = args("change_job_priority")
            assert c.change_job_priority(a["id"], a["priority"]) == \
                tuple(result("change_job_priority_reply"))
            assert c.cancel_job(args("cancel_job")["id"]) == tuple(result("cancel_job_reply"))
            assert c.archive_job(args("archive_job")["id"]) is result("archive_job_reply")
            a = args("auto_archive_jobs")
            assert c.auto_archive_jobs(a["age"], a["timeout"]) == \
                tuple(result("auto_archive_jobs_reply"))
            assert c.set_drain_flag(args("set_drain_flag")["flag"]) is None
            assert c.stats() == result("stats_reply")
            a = args("events_since")
            assert c.events_since(a["after_seq"], a["epoch"], a["limit"]) == \
                result("events_since_reply")
            a = args("events_since_too_old")
            assert c.events_since(a["after_seq"], a["epoch"]) == \
                result("events_since_too_old_reply")
            assert c.list_fields() == result("list_fields_reply")
            assert c.list_opcodes() == result("list_opcodes_reply")
            assert c.http_token(args("http_token")["ttl"]) == result("http_token_reply")
            c.shutdown(now=args("shutdown")["now"])
            assert c.query_nodes() == result("query_nodes_reply")
            a = args("add_node")
            assert c.add_node(a["id"], a["address"], standby=a["role"] == "standby",
                              name=a["name"], endpoints=a["endpoints"]) == \
                result("add_node_reply")
            assert c.remove_node(args("remove_node")["id"]) is None
            assert c.transfer_leader(args("transfer_leader")["id"]) == \
                result("transfer_leader_reply")["leader"]
    finally:
        fake.close()
    assert fake.wrong == []
    assert fake.answered == len(client_exchange())


def test_the_daemon_sends_every_vector_shape() -> None:
    """The exchange the vectors come from, run again against a real jobqd:
    every request, reply and event vector it makes has the shape (keys,
    order, value types, list lengths) of the vector."""
    d = Daemon(*vector_scenario.DAEMON_ARGS)
    try:
        got = vector_scenario.run(d)
    finally:
        d.stop()
    got.pop("_raw")
    got.update(vector_scenario.pick_events(got.pop("_events")))
    want = {n for n in NAMES if not n.startswith("worker_") and n != "event_heartbeat"
            and n not in vector_scenario.CLUSTER}
    assert want - set(got) == set(), "vectors the exchange did not make"
    for name in sorted(want):
        assert shape(got[name]) == shape(readable(name)), name
    # The requests are the vectors' own (but the daemon's epoch).
    for name in want:
        if name.endswith("_request") and "epoch" not in readable(name)["args"]:
            assert got[name] == readable(name), name
