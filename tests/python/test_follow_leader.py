"""Clients of a cluster without a cluster: fake nodes (a ROUTER each, on an
ipc path in a temp dir, answered from a thread) that answer NotLeader
naming a leader, or no leader yet, or as the leader would. Covered through
libjobq (the C `jobq`), jobq.Client and jobq-py:

- a NotLeader answer is followed to the leader, which gets the same
  request; the first endpoint of a list being dead moves to the next one;
- two nodes naming each other: a clear NotLeader error after the hop
  limit, not a loop;
- no leader (nil) a few times, then a leader: the request gets through;
- a request that may not be repeated does not move after its node went
  silent; a read does (for the next call);
- `jobq nodes list` text and --json, the same bytes from both CLIs, for a
  fixed query_nodes answer; nodes add/remove/transfer send the right
  requests.

Nothing here listens beyond the temp dir's sockets; every wait is bounded.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import threading
from typing import Any, Callable, Dict, List, Optional

import msgpack
import pytest
import zmq

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "clients", "python"))

import jobq  # noqa: E402
from test_cli import JOBQ  # noqa: E402
from test_py_cli import PYCLI_ENV, PYJOBQ  # noqa: E402

NODES = [
    {"id": 1, "name": "alpha", "address": "127.0.0.1:7001", "role": "voter",
     "state": "follower", "endpoints": ["ipc:///x/a.sock"], "applied": 1200,
     "lag_entries": 3, "lag_seconds": 0.25, "last_contact": [1795949438, 5], "self": True},
    {"id": 2, "name": "beta-node", "address": "127.0.0.1:7002", "role": "voter",
     "state": "leader", "endpoints": [], "applied": 1203, "lag_entries": 0,
     "lag_seconds": 0.0, "last_contact": None, "self": False},
    {"id": 13, "name": "", "address": "127.0.0.1:7013", "role": "standby",
     "state": "unavailable", "endpoints": [], "applied": 7, "lag_entries": None,
     "lag_seconds": None, "last_contact": None, "self": False},
]

NODES_TEXT = (
    "ID  NAME       ROLE     STATE        APPLIED  LAG  ADDRESS\n"
    "1*  alpha      voter    follower     1200     3    127.0.0.1:7001\n"
    "2   beta-node  voter    leader       1203     0    127.0.0.1:7002\n"
    "13  -          standby  unavailable  7        -    127.0.0.1:7013\n")

PING = {"version": "0.1.0", "protocol": 1, "protocols": [1], "time": [1795949438, 700923],
        "epoch": 5, "publish": [], "workers": [], "token_window": 600}


class FakeNode:
    """A ROUTER at DIR/NAME.sock answering each request with
    answer(method, args) (a result, or an Error), or not at all
    (answer returns Silent). Keeps every request it got."""

    def __init__(self, tmp: str, name: str) -> None:
        self.endpoint = "ipc://%s/%s.sock" % (tmp, name)
        self.answer: Callable[[str, Dict[str, Any]], Any] = lambda m, a: None
        self.requests: List[Dict[str, Any]] = []
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.ROUTER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.bind(self.endpoint)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.stop.is_set():
            if not self.sock.poll(50):
                continue
            frames = self.sock.recv_multipart()
            req = msgpack.unpackb(frames[-1], raw=False)
            self.requests.append(req)
            out = self.answer(req["method"], req.get("args") or {})
            if out is SILENT:
                continue
            if isinstance(out, Error):
                rep = {"v": 1, "id": req["id"], "ok": False, "error": out.body}
            else:
                rep = {"v": 1, "id": req["id"], "ok": True, "result": out}
            self.sock.send_multipart([frames[0], msgpack.packb(rep, use_bin_type=True)])

    def methods(self) -> List[str]:
        return [r["method"] for r in self.requests]

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)
        self.sock.close(0)
        self.ctx.term()


class Error:
    """An error answer."""

    def __init__(self, code: str, message: str, **extra: Any) -> None:
        self.body = {"code": code, "message": message, **extra}


SILENT = object()


def leader_info(node: FakeNode, nid: int = 2) -> Dict[str, Any]:
    return {"id": nid, "name": "n%d" % nid, "address": "127.0.0.1:%d" % (7000 + nid),
            "endpoints": ["tcp://127.0.0.1:1", node.endpoint], "workers": [], "publish": []}


def not_leader(leader: Optional[Dict[str, Any]]) -> Callable[[str, Dict[str, Any]], Any]:
    return lambda m, a: Error("NotLeader", "this node is a follower", leader=leader)


def as_leader(method: str, args: Dict[str, Any]) -> Any:
    """What the leader answers (a fixed cluster of NODES)."""
    return {"ping": PING, "stats": {"jobs": 0}, "set_drain_flag": True,
            "query_nodes": NODES, "add_node": {"id": args.get("id")}, "remove_node": None,
            "transfer_leader": {"leader": args.get("id") or 2},
            "submit_job": 7}.get(method, Error("UnknownMethod", "no such method"))


@pytest.fixture
def tmp():
    d = tempfile.mkdtemp(prefix="jobq-follow-")
    nodes: List[FakeNode] = []

    def make(name: str) -> FakeNode:
        n = FakeNode(d, name)
        nodes.append(n)
        return n
    yield make
    for n in nodes:
        n.close()
    shutil.rmtree(d)


def env() -> Dict[str, str]:
    e = dict(os.environ)
    e.pop("JOBQ_ENDPOINT", None)
    e.pop("JOBQ_KEY", None)
    e.pop("JOBQ_SERVER_KEY", None)
    e.update(PYCLI_ENV)
    return e


def run(which: str, *args: str) -> subprocess.CompletedProcess:
    cmd = [JOBQ] if which == "c" else list(PYJOBQ)
    return subprocess.run(cmd + list(args), capture_output=True, text=True, timeout=60,
                          env=env())


BOTH = ["c", "py"]


@pytest.mark.parametrize("which", BOTH)
def test_not_leader_is_followed(tmp, which):
    a, b = tmp("a"), tmp("b")
    a.answer = not_leader(leader_info(b))
    b.answer = as_leader
    p = run(which, "-s", a.endpoint, "-t", "10", "drain", "on")
    assert p.returncode == 0, p.stderr
    assert p.stdout == "Drain flag set: submissions are refused\n"
    assert a.methods() == ["set_drain_flag"] and b.methods() == ["set_drain_flag"]
    assert b.requests[0]["args"] == {"flag": True}
    # ping names the endpoint that answered: the leader's (one of the list).
    p = run(which, "-s", "%s,%s" % (a.endpoint, b.endpoint), "ping")
    assert p.returncode == 0, p.stderr
    assert p.stdout.startswith("jobqd 0.1.0 (protocol 1) at %s: " % b.endpoint), p.stdout


@pytest.mark.parametrize("which", BOTH)
def test_first_endpoint_dead(tmp, which):
    b = tmp("b")
    b.answer = as_leader
    dead = b.endpoint.replace("b.sock", "nobody.sock")
    p = run(which, "-s", "%s,%s" % (dead, b.endpoint), "-t", "10", "drain", "on")
    assert p.returncode == 0, p.stderr
    assert b.methods() == ["set_drain_flag"]
    # All dead: not running (exit 3), naming the last one tried.
    p = run(which, "-s", "%s,%s" % (dead, dead.replace("nobody", "none")), "stats")
    assert p.returncode == 3, p.stderr
    assert "jobqd is not running at" in p.stderr


@pytest.mark.parametrize("which", BOTH)
def test_nodes_naming_each_other_stop(tmp, which):
    a, b = tmp("a"), tmp("b")
    a.answer = not_leader(leader_info(b))
    b.answer = not_leader(leader_info(a, 1))
    p = run(which, "-s", a.endpoint, "-t", "20", "drain", "on")
    assert p.returncode == 1
    assert p.stderr.startswith("jobq: drain: NotLeader: no leader reached after 10 hops"), \
        p.stderr
    assert len(a.requests) + len(b.requests) == 11


def test_python_client_hop_limit_and_list(tmp):
    a, b = tmp("a"), tmp("b")
    a.answer = not_leader(leader_info(b))
    b.answer = not_leader(leader_info(a, 1))
    with jobq.Client([a.endpoint], timeout=10) as c:
        with pytest.raises(jobq.NotLeaderError) as e:
            c.set_drain_flag(True)
    assert "no leader reached after 10 hops" in e.value.message
    assert e.value.leader is not None and e.value.leader["id"] in (1, 2)
    b.answer = as_leader
    with jobq.Client([a.endpoint, b.endpoint], timeout=10) as c:
        assert c.query_nodes() == NODES
        assert c.endpoint == b.endpoint and c.endpoints == [a.endpoint, b.endpoint]


@pytest.mark.parametrize("which", BOTH)
def test_no_leader_then_leader(tmp, which):
    a, b = tmp("a"), tmp("b")
    b.answer = as_leader
    seen = []

    def election(method: str, args: Dict[str, Any]) -> Any:
        seen.append(method)
        return Error("NotLeader", "election", leader=None if len(seen) <= 2 else leader_info(b))
    a.answer = election
    p = run(which, "-s", a.endpoint, "-t", "10", "drain", "off")
    assert p.returncode == 0, p.stderr
    assert seen == ["set_drain_flag"] * 3 and b.methods() == ["set_drain_flag"]


@pytest.mark.parametrize("which", BOTH)
def test_node_naming_itself_is_asked_again(tmp, which):
    """A node elected but not serving yet names itself as the leader: it
    is asked again (a pause, no hop), not given up on after 10 hops."""
    a = tmp("a")
    seen = []

    def loading(method: str, args: Dict[str, Any]) -> Any:
        seen.append(method)
        if len(seen) <= 12:
            return Error("NotLeader", "loading the queue", leader=leader_info(a, 1))
        return as_leader(method, args)
    a.answer = loading
    p = run(which, "-s", a.endpoint, "-t", "20", "drain", "on")
    assert p.returncode == 0, p.stderr
    assert seen == ["set_drain_flag"] * 13


def test_no_leader_within_the_timeout(tmp):
    a = tmp("a")
    a.answer = not_leader(None)
    with jobq.Client(a.endpoint, timeout=1) as c:
        with pytest.raises(jobq.NotLeaderError) as e:
            c.stats()
    assert e.value.leader is None and len(a.requests) >= 2
    p = run("c", "-s", a.endpoint, "-t", "1", "stats")
    assert p.returncode == 1 and "NotLeader" in p.stderr, p.stderr


def test_silent_node_moves_only_what_is_safe(tmp):
    a, b = tmp("a"), tmp("b")
    a.answer = lambda m, args: SILENT
    b.answer = as_leader
    with jobq.Client([a.endpoint, b.endpoint], timeout=0.5) as c:
        # Not safe to send again: stays on its node, fails.
        with pytest.raises(jobq.TimeoutError):
            c.set_drain_flag(True)
        assert c.endpoint == a.endpoint and b.requests == []
        # A read times out there too, and moves on for the next call.
        with pytest.raises(jobq.TimeoutError):
            c.stats()
        assert c.stats() == {"jobs": 0}
        assert c.endpoint == b.endpoint
    assert b.methods() == ["stats"]


@pytest.mark.parametrize("json_flag", [[], ["--json"]])
def test_nodes_list_parity(tmp, json_flag):
    a = tmp("a")
    a.answer = as_leader
    out = {}
    for which in BOTH:
        p = run(which, "-s", a.endpoint, "nodes", "list", *json_flag)
        assert p.returncode == 0 and p.stderr == "", p.stderr
        out[which] = p.stdout
    assert out["c"] == out["py"]
    if json_flag:
        assert out["c"].count("\n") == 1
        import json
        assert json.loads(out["c"]) == NODES
    else:
        assert out["c"] == NODES_TEXT


def test_nodes_changes_send_the_right_requests(tmp):
    a, b = tmp("a"), tmp("b")
    a.answer = not_leader(leader_info(b))
    b.answer = as_leader
    cases = [
        (["nodes", "add", "4", "127.0.0.1:7004"], "Node 4 added (voter)\n", '{"id":4}\n',
         ("add_node", {"id": 4, "address": "127.0.0.1:7004", "role": "voter",
                       "endpoints": []})),
        (["nodes", "add", "5", "127.0.0.1:7005", "--standby", "--name", "e",
          "--endpoint-of-node", "tcp://127.0.0.1:6005", "--endpoint-of-node", "ipc:///x/e"],
         "Node 5 added (standby)\n", '{"id":5}\n',
         ("add_node", {"id": 5, "address": "127.0.0.1:7005", "role": "standby", "name": "e",
                       "endpoints": ["tcp://127.0.0.1:6005", "ipc:///x/e"]})),
        (["nodes", "remove", "3"], "Node 3 removed\n", "null\n", ("remove_node", {"id": 3})),
        (["nodes", "transfer", "3"], "Node 3 is the leader\n", '{"leader":3}\n',
         ("transfer_leader", {"id": 3})),
        (["nodes", "transfer"], "Node 2 is the leader\n", '{"leader":2}\n',
         ("transfer_leader", {"id": None})),
    ]
    for argv, text, js, (method, args) in cases:
        for which in BOTH:
            for flags, want in (([], text), (["--json"], js)):
                b.requests.clear()
                p = run(which, "-s", a.endpoint, *argv, *flags)
                assert (p.returncode, p.stdout, p.stderr) == (0, want, ""), (which, argv)
                assert [(r["method"], r["args"]) for r in b.requests] == [(method, args)], \
                    (which, argv)


@pytest.mark.parametrize("argv,msg", [
    (["nodes"], "jobq: nodes: missing argument (usage: jobq nodes list|add|remove|transfer "
                "...) (see 'jobq nodes --help')\n"),
    (["nodes", "grow"], "jobq: nodes: expected list, add, remove or transfer, not 'grow' "
                        "(see 'jobq nodes --help')\n"),
    (["nodes", "add", "4"], "jobq: nodes: missing argument (usage: jobq nodes add ID "
                            "ADDRESS [OPTIONS]) (see 'jobq nodes --help')\n"),
    (["nodes", "remove", "x"], "jobq: nodes: invalid node id 'x' (an integer >= 1) "
                               "(see 'jobq nodes --help')\n"),
    (["nodes", "list", "--standby"], "jobq: nodes: --standby is an option of 'nodes add' "
                                     "(see 'jobq nodes --help')\n"),
    (["nodes", "transfer", "1", "2"], "jobq: nodes: unexpected argument '2' "
                                      "(see 'jobq nodes --help')\n"),
])
def test_nodes_usage_errors(argv, msg):
    for which in BOTH:
        p = run(which, "-s", "ipc:///nonexistent/jobq.sock", *argv)
        assert (p.returncode, p.stdout, p.stderr) == (2, "", msg), which


def test_endpoint_lists_are_checked():
    for which in BOTH:
        p = run(which, "-s", "ipc:///x/a.sock,nope", "stats")
        assert p.returncode == 2 and "invalid endpoint 'ipc:///x/a.sock,nope'" in p.stderr
        p = run(which, "-s", "ipc:///x/a.sock,", "stats")
        assert p.returncode == 2
    with pytest.raises(jobq.BadArgumentError):
        jobq.Client("ipc:///x/a.sock,,ipc:///x/b.sock")


def event(seq: int) -> Dict[str, Any]:
    """A change of job 1 (serial = seq), as the stream and events_since carry it."""
    return {"seq": seq, "epoch": 5, "change": {"job": 1, "serial": seq, "kind": "update",
                                               "status": "running", "log": []}}


class Publisher:
    """A PUB beside a fake node, sending the given events and a heartbeat
    of the last seq every 50 ms from a thread."""

    def __init__(self, node: FakeNode, name: str) -> None:
        self.endpoint = node.endpoint.replace(".sock", "-%s.sock" % name)
        self.events: List[Dict[str, Any]] = []
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.PUB)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.bind(self.endpoint)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.wait(0.05):
            for ev in list(self.events):
                self.sock.send_multipart([b"job/1/", msgpack.packb(ev, use_bin_type=True)])
            seq = self.events[-1]["seq"] if self.events else 0
            self.sock.send_multipart([b"sys/heartbeat", msgpack.packb(
                {"seq": seq, "epoch": 5, "heartbeat": True, "time": [1, 0]})])

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)
        self.sock.close(0)
        self.ctx.term()


def since(events: List[Dict[str, Any]]) -> Callable[[Dict[str, Any]], Any]:
    def answer(args: Dict[str, Any]) -> Any:
        after = args.get("after_seq", 0)
        evs = [e for e in events if e["seq"] > after]
        return {"epoch": 5, "first_seq": 1, "last_seq": events[-1]["seq"] if events else 0,
                "too_old": False, "more": False, "events": evs}
    return answer


def subscriber_cluster(tmp):
    """Node a leads and publishes event 1; then it is a follower (silent,
    NotLeader naming b) and b, the leader, has events 2 (only through
    events_since) and 3 (on its stream too)."""
    a, b = tmp("a"), tmp("b")
    pa, pb = Publisher(a, "pub"), Publisher(b, "pub")
    state = {"a_leads": True}
    snapshot = {"seq": 0, "epoch": 5, "fields": ["id", "change_serial", "status"],
                "rows": [], "more": False}

    def answer_a(method: str, args: Dict[str, Any]) -> Any:
        if method == "ping":
            return {**PING, "publish": [pa.endpoint],
                    "cluster": {"id": 1, "state": "leader" if state["a_leads"] else "follower",
                                "leader": None}}
        if not state["a_leads"]:
            return Error("NotLeader", "follower", leader=leader_info(b))
        if method == "query_jobs":
            return snapshot
        if method == "events_since":
            return since(pa.events)(args)
        return Error("UnknownMethod", method)

    def answer_b(method: str, args: Dict[str, Any]) -> Any:
        if method == "ping":
            return {**PING, "publish": [pb.endpoint]}
        if method == "events_since":
            return since([event(1), event(2), event(3)])(args)
        if method == "query_jobs":
            return {**snapshot, "seq": 3}
        return Error("UnknownMethod", method)
    a.answer, b.answer = answer_a, answer_b
    pa.events.append(event(1))

    def move() -> None:
        state["a_leads"] = False
        pa.events.clear()
        pa.stop.set()  # the old leader's stream goes silent
        pb.events.append(event(3))
    return a, b, pa, pb, move


def test_python_subscriber_follows_the_leader(tmp):
    a, b, pa, pb, move = subscriber_cluster(tmp)
    try:
        with jobq.Subscriber(a.endpoint, timeout=5) as sub:
            ev = sub.next(timeout=10)
            assert ev is not None and ev["type"] == "resync"
            ev = sub.next(timeout=10)
            assert ev is not None and ev["seq"] == 1 and ev["recovered"] is False
            move()
            got = []
            for _ in range(2):
                ev = sub.next(timeout=15)
                assert ev is not None, got
                got.append((ev["type"], ev.get("seq")))
            assert got == [("change", 2), ("change", 3)]
            # Then it reads b's stream (event 3 again: skipped).
            assert sub.next(timeout=1) is None
            assert sub.counters["skipped"] >= 1
            assert sub.client.endpoint == b.endpoint and sub.endpoint == pb.endpoint
            assert "events_since" in b.methods()
            assert sub.counters["resyncs"] == 0
    finally:
        pa.close()
        pb.close()


def test_c_subscriber_follows_the_leader(tmp):
    """jobq monitor --json (libjobq's jobq_sub) through the same move."""
    import json
    a, b, pa, pb, move = subscriber_cluster(tmp)
    p = subprocess.Popen([JOBQ, "-s", a.endpoint, "-t", "5", "monitor", "--json"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env())
    try:
        lines = []
        timer = threading.Timer(30, p.kill)  # bounded, whatever happens
        timer.start()
        for line in p.stdout:
            ev = json.loads(line)
            lines.append((ev["type"], ev.get("seq")))
            if lines == [("resync", 0), ("change", 1)]:
                move()
            if len(lines) == 4:
                break
        timer.cancel()
        assert lines == [("resync", 0), ("change", 1), ("change", 2), ("change", 3)], lines
        assert "events_since" in b.methods()
    finally:
        p.kill()
        p.communicate(timeout=10)
        pa.close()
        pb.close()


# -- workers ------------------------------------------------------------------

class FakeWorkerNode:
    """A worker endpoint (a ROUTER at DIR/NAME-workers.sock) driven from
    the test: recv() the next message of a worker, send() to the last
    worker heard from."""

    def __init__(self, tmp: str, name: str) -> None:
        self.endpoint = "ipc://%s/%s-workers.sock" % (tmp, name)
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.ROUTER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.bind(self.endpoint)
        self.peer = b""

    def recv(self, timeout: float = 15, skip_heartbeats: bool = True) -> Dict[str, Any]:
        while True:
            assert self.sock.poll(int(timeout * 1000)), "no message from the worker"
            self.peer, body = self.sock.recv_multipart()
            m = msgpack.unpackb(body, raw=False)
            if not (skip_heartbeats and m.get("type") == "heartbeat"):
                return m

    def send(self, type_: str, **keys: Any) -> None:
        self.sock.send_multipart([self.peer, msgpack.packb({"v": 1, "type": type_, **keys},
                                                           use_bin_type=True)])

    def close(self) -> None:
        self.sock.close(0)
        self.ctx.term()


@pytest.fixture
def wnodes():
    d = tempfile.mkdtemp(prefix="jobq-follow-w-")
    a, b = FakeWorkerNode(d, "a"), FakeWorkerNode(d, "b")
    yield d, a, b
    a.close()
    b.close()
    shutil.rmtree(d)


def worker_move(a: FakeWorkerNode, b: FakeWorkerNode, resumed: Optional[List[List[int]]]
                ) -> Dict[str, Any]:
    """a (a follower) answers the hello NotLeader naming b; b welcomes,
    assigns lease (7, 0, 1) of t.slow and goes silent; the worker comes back
    to a (now the leader) naming the lease; a answers with resumed.
    Returns a's second hello."""
    hello = a.recv()
    assert hello["type"] == "hello" and "leases" not in hello
    a.send("error", code="NotLeader", message="follower",
           leader={"id": 2, "name": "b", "address": "127.0.0.1:7002", "endpoints": [],
                   "workers": ["tcp://127.0.0.1:1", b.endpoint], "publish": []})
    hello = b.recv()
    assert hello["type"] == "hello" and "leases" not in hello
    b.send("welcome", worker=1, heartbeat=0.2, lease=1.0)
    b.send("assign", job=7, op=0, attempt=1, opcode="t.slow", args={}, priority=0,
           timeout=None)
    # b goes silent: the worker gives it up after the lease time (1 s).
    again = a.recv()
    assert again["type"] == "hello" and again["leases"] == [[7, 0, 1]], again
    welcome: Dict[str, Any] = {"worker": 2, "heartbeat": 0.2, "lease": 5.0}
    if resumed is not None:
        welcome["resumed"] = resumed
    a.send("welcome", **welcome)
    return again


def process_ended(pid):
    """True once pid has exited or is a zombie; the process may end
    between any two looks at /proc, so a vanished file means ended."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except (FileNotFoundError, ProcessLookupError):
        return True


@pytest.mark.parametrize("resumed", [[[7, 0, 1]], []])
def test_python_worker_follows_and_resumes(wnodes, resumed):
    d, a, b = wnodes
    go = threading.Event()
    stops: List[Optional[str]] = []
    w = jobq.Worker(a.endpoint, name="w")

    @w.opcode("t.slow")
    def slow(job: jobq.worker.Assignment) -> Any:
        while not go.is_set():
            if job.sleep(0.02):
                stops.append(job.stop_reason)
                return None
        return {"done": True}

    th = threading.Thread(target=w.run, daemon=True)
    th.start()
    try:
        worker_move(a, b, resumed)
        if resumed:
            go.set()
            done = a.recv()
            assert (done["type"], done["job"], done["ok"], done["result"]) == \
                ("done", 7, True, {"done": True})
            assert stops == []
        else:
            deadline = threading.Event()
            for _ in range(500):
                if stops:
                    break
                deadline.wait(0.02)
            assert stops and "not resumed" in str(stops[0]), stops
        assert w.endpoint == a.endpoint and w.worker_id == 2
    finally:
        w.stop()
        th.join(10)
    assert not th.is_alive()


@pytest.mark.parametrize("resumed", [[[7, 0, 1]], []])
def test_jobq_worker_follows_and_resumes(wnodes, resumed):
    d, a, b = wnodes
    handlers = os.path.join(d, "handlers")
    os.mkdir(handlers)
    go, started = os.path.join(d, "go"), os.path.join(d, "started")
    path = os.path.join(handlers, "t.slow")
    with open(path, "w") as f:
        f.write("#!/bin/sh\necho $$ > %s\ni=0\nwhile [ ! -e %s ] && [ $i -lt 600 ]; do "
                "sleep 0.05; i=$((i+1)); done\necho finished\n" % (started, go))
    os.chmod(path, 0o755)
    e = dict(os.environ)
    e.pop("JOBQ_WORKER_ENDPOINT", None)
    e["TMPDIR"] = d
    log = open(os.path.join(d, "worker.log"), "w")
    p = subprocess.Popen([JOBQ.replace("/jobq", "/jobq-worker"), "--handlers", handlers,
                          "--endpoint", a.endpoint, "--name", "w"],
                         stdout=log, stderr=subprocess.STDOUT, env=e)
    try:
        worker_move(a, b, resumed)
        for _ in range(500):
            if os.path.exists(started) and open(started).read().strip():
                break
            threading.Event().wait(0.02)
        pid = int(open(started).read())
        if resumed:
            open(go, "w").close()
            m = a.recv()
            while m["type"] == "feedback":
                m = a.recv()
            assert (m["type"], m["job"], m["ok"]) == ("done", 7, True), m
        else:
            # Revoked: the handler is stopped (its process ends).
            for _ in range(500):
                if process_ended(pid):
                    break
                threading.Event().wait(0.02)
            else:
                raise AssertionError("the revoked handler still runs")
    finally:
        p.terminate()
        p.wait(15)
        log.close()
    text = open(os.path.join(d, "worker.log")).read()
    assert "connected to jobqd at %s" % a.endpoint in text, text


def test_completion_of_nodes(tmp):
    """clients/completion/jobq: nodes' sub-commands, add's options, and
    the node ids (asked of the daemon) after remove and transfer."""
    a = tmp("a")
    a.answer = as_leader
    script = os.path.join(HERE, "..", "..", "clients", "completion", "jobq")

    def complete(*words: str) -> List[str]:
        line = " ".join("'%s'" % w for w in (JOBQ, "-s", a.endpoint) + words)
        p = subprocess.run(["bash", "-c", 'source "$0"; COMP_WORDS=(%s); '
                            'COMP_CWORD=$((${#COMP_WORDS[@]} - 1)); _jobq; '
                            'printf "%%s\\n" "${COMPREPLY[@]}"' % line, script],
                           capture_output=True, text=True, timeout=30, env=env())
        assert p.returncode == 0, p.stderr
        return sorted(p.stdout.split())
    assert complete("no") == ["nodes"]
    assert complete("nodes", "") == ["add", "list", "remove", "transfer"]
    assert complete("nodes", "add", "--") == sorted(
        ["--standby", "--name", "--endpoint-of-node", "--server", "--timeout", "--key",
         "--server-key", "--json", "--help"])
    assert complete("nodes", "remove", "") == ["1", "13", "2"]
    assert complete("nodes", "transfer", "1") == ["1", "13"]


# -- a real cluster -------------------------------------------------------------

def free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Cluster:
    """Three jobqd --cluster nodes on loopback, data (and sockets) in
    tmp_path/nI, plain TCP between them (--insecure)."""

    def __init__(self, tmp_path: Any, *extra: str) -> None:
        from test_cli import JOBQD
        self.procs: List[subprocess.Popen] = []
        self.logs: List[Any] = []
        self.eps: List[str] = []
        self.dirs: List[str] = []
        self.args: List[List[str]] = []
        self.restarts = 0
        try:
            for i in range(3):
                d = tmp_path / ("n%d" % (i + 1))
                d.mkdir()
                self.dirs.append(str(d))
                self.eps.append("ipc://%s/jobq.sock" % d)
                join = ["--join", self.eps[0]] if i else []
                log = open(tmp_path / ("n%d.log" % (i + 1)), "w")
                self.logs.append(log)
                self.args.append([JOBQD, "--data-dir", str(d), "--cluster", "--insecure",
                                  "--node-address", "", *join, *extra])
                self.procs.append(self.start(i))
                if not i:
                    wait(lambda: self.restart_exited() and
                         run("c", "-s", self.eps[0], "-t", "1", "ping").returncode == 0,
                         "node 1", explain=self.explain)
            # Three voters, not only three members: the second and third
            # join at once, and a node is listed (a spare) before its
            # add_node is done; killing the leader then leaves no quorum.
            wait(lambda: self.restart_exited() and
                 sorted((n["state"], n["role"]) for n in self.nodes()) ==
                 [("follower", "voter"), ("follower", "voter"), ("leader", "voter")],
                 "a cluster of three voters", explain=self.explain)
        except BaseException:
            self.stop()
            raise

    def start(self, i: int) -> subprocess.Popen:
        """Node i on a node port the kernel just called free."""
        args = list(self.args[i])
        args[args.index("--node-address") + 1] = "127.0.0.1:%d" % free_port()
        return subprocess.Popen(args, stdout=self.logs[i], stderr=subprocess.STDOUT)

    def restart_exited(self) -> bool:
        """While the cluster forms: a node that exited (its free port was
        taken by another test in between, say) starts again on a new port,
        twice at most in all; always true, for use inside a wait()."""
        for i, pr in enumerate(self.procs):
            if pr.poll() is not None and self.restarts < 2:
                self.restarts += 1
                self.logs[i].write("--- exited %r; started again\n" % pr.returncode)
                self.logs[i].flush()
                self.procs[i] = self.start(i)
        return True

    def explain(self) -> str:
        """What the nodes say and the tail of each log (for a failure)."""
        out = ["nodes: %r" % (self.nodes(),)]
        for i, pr in enumerate(self.procs):
            self.logs[i].flush()
            with open(self.logs[i].name) as f:
                tail = f.read()[-3000:]
            out.append("n%d (exit %r):\n%s" % (i + 1, pr.poll(), tail))
        return "\n".join(out)

    def nodes(self) -> List[Dict[str, Any]]:
        import json
        p = run("c", "-s", ",".join(self.eps), "-t", "2", "nodes", "list", "--json")
        return json.loads(p.stdout) if p.returncode == 0 else []

    def leader(self) -> int:
        """The index of the leader."""
        states = {tuple(n["endpoints"]): n["state"] for n in self.nodes()}
        return next(i for i, e in enumerate(self.eps) if states.get((e,)) == "leader")

    def stop(self) -> None:
        from jobqd_stop import stop_jobqd
        for pr in self.procs:
            if pr.poll() is None:
                stop_jobqd(pr, 15)
        for log in self.logs:
            log.close()


def wait(cond: Callable[[], Any], what: str, timeout: float = 30,
         explain: Callable[[], str] = lambda: "") -> Any:
    """Polls cond every 0.1 s until it is true (returned); fails after
    timeout, saying what explain() says."""
    t = threading.Event()
    for _ in range(int(timeout / 0.1)):
        v = cond()
        if v:
            return v
        t.wait(0.1)
    raise AssertionError("timed out waiting for %s %s" % (what, explain()))


def test_real_cluster_leader_killed(tmp_path):
    """Three jobqd --cluster nodes on loopback (plain TCP between them:
    --insecure). The clients are given every node, a follower first:
    requests reach the leader; the leader is killed; the next submit waits
    out the election and lands on the new leader; `jobq monitor` goes on
    from the new leader's events, seq following seq, without a resync."""
    import json
    cluster = Cluster(tmp_path)
    mon = None
    try:
        leader = cluster.leader()
        eps = cluster.eps
        order = [e for i, e in enumerate(eps) if i != leader] + [eps[leader]]

        def jq(*args: str, which: str = "c") -> subprocess.CompletedProcess:
            return run(which, "-s", ",".join(order), *args)
        for which in BOTH:
            p = jq("-t", "20", "submit", "test.delay", "duration=0", which=which)
            assert p.returncode == 0 and p.stdout.strip().isdigit(), p.stderr
        p = jq("nodes", "list")
        lines = p.stdout.splitlines()
        assert p.returncode == 0 and len(lines) == 4 and lines[0].startswith("ID  "), p.stdout
        assert sum("*" in line.split()[0] for line in lines[1:]) == 1
        mon = subprocess.Popen([JOBQ, "-s", ",".join(order), "-t", "5", "monitor", "--json"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env=env())
        timer = threading.Timer(60, mon.kill)  # bounded, whatever happens
        timer.start()
        assert mon.stdout is not None
        first = json.loads(mon.stdout.readline())
        assert first["type"] == "resync", first
        cluster.procs[leader].kill()
        cluster.procs[leader].wait(10)
        p = jq("-t", "30", "submit", "test.delay", "duration=0")
        assert p.returncode == 0, p.stderr
        job = int(p.stdout)
        seqs = [first["seq"]]
        while True:
            line = mon.stdout.readline()
            assert line, "monitor ended: %s" % (mon.stderr.read() if mon.stderr else "")
            ev = json.loads(line)
            assert ev["type"] == "change" and ev["epoch"] == first["epoch"], ev
            seqs.append(ev["seq"])
            if ev["job"] == job and ev["change"]["status"] == "success":
                break
        timer.cancel()
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), seqs
    finally:
        if mon is not None:
            mon.kill()
            mon.communicate(timeout=10)
        cluster.stop()


@pytest.mark.parametrize("gap", [False, True])
@pytest.mark.parametrize("which", BOTH)
def test_real_cluster_worker_resumed(tmp_path, which, gap):
    """A worker (jobq-worker, or jobq.Worker) given every node's worker
    endpoint runs a job; the leader is killed; the worker, its daemon
    silent, goes to the new leader with the lease in its hello, the new
    leader resumes it, and the job ends success with the handler's result,
    run once. gap: the handler ends while the worker has no leader (its
    done waits for the new one)."""
    import json
    cluster = Cluster(tmp_path, "--worker-lease", "2", "--worker-heartbeat", "0.2")
    go, runs = tmp_path / "go", tmp_path / "runs"
    wproc = None
    pyworker = None
    th = None
    try:
        weps = ",".join(e.replace("jobq.sock", "workers.sock") for e in cluster.eps)
        if which == "c":
            handlers = tmp_path / "handlers"
            handlers.mkdir()
            h = handlers / "t.slow"
            h.write_text("#!/bin/sh\necho run >> %s\ni=0\nwhile [ ! -e %s ] && "
                         "[ $i -lt 600 ]; do sleep 0.05; i=$((i+1)); done\necho finishing\n"
                         "echo '{\"slow\": true}' > \"$JOBQ_RESULT_FILE\"\n" % (runs, go))
            h.chmod(0o755)
            e = env()
            e["TMPDIR"] = str(tmp_path)
            log = open(tmp_path / "worker.log", "w")
            wproc = subprocess.Popen([JOBQ.replace("/jobq", "/jobq-worker"), "--handlers",
                                      str(handlers), "--endpoint", weps, "--name", "w"],
                                     stdout=log, stderr=subprocess.STDOUT, env=e)
            log.close()
        else:
            pyworker = jobq.Worker(weps, name="w")

            @pyworker.opcode("t.slow")
            def slow(job: jobq.worker.Assignment) -> Any:
                with open(runs, "a") as f:
                    f.write("run\n")
                while not go.exists():
                    if job.sleep(0.05):
                        return None
                job.feedback("finishing")
                return {"slow": True}
            th = threading.Thread(target=pyworker.run, daemon=True)
            th.start()
        eps = ",".join(cluster.eps)

        def submitted() -> Optional[int]:
            p = run("c", "-s", eps, "-t", "5", "submit", "t.slow")
            return int(p.stdout) if p.returncode == 0 else None
        job = wait(submitted, "the worker's opcode to be known")

        def status() -> str:
            p = run("c", "-s", eps, "-t", "5", "--json", "info", str(job))
            return json.loads(p.stdout)[0]["status"] if p.returncode == 0 else ""
        wait(lambda: status() == "running" and runs.exists(), "the job to run")
        leader = cluster.leader()
        cluster.procs[leader].kill()
        cluster.procs[leader].wait(10)
        if gap:
            go.touch()
        # The worker comes back to the new leader with its lease; then the
        # handler may finish.
        if which == "c":
            wait(lambda: (tmp_path / "worker.log").read_text().count("connected to") == 2,
                 "the worker to reconnect")
        else:
            assert pyworker is not None
            wait(lambda: pyworker.connections >= 2 and pyworker.ready, "the worker to reconnect")
        if not gap:
            threading.Event().wait(2.5)  # past the new leader's wait for the old leases
            assert status() == "running" and leader != cluster.leader()
            go.touch()
        wait(lambda: status() == "success", "the job to end",
             explain=lambda: run("c", "-s", eps, "info", str(job)).stdout)
        p = run("c", "-s", eps, "--json", "info", str(job))
        info = json.loads(p.stdout)[0]
        assert info["opresult"] == [{"slow": True}], p.stdout
        # Log entries sent to a leader that died before reading them are
        # lost (the result is sent again); after the failover they count.
        assert [e[3] for e in info["oplog"][0]] == ([] if gap else ["finishing"]), p.stdout
        assert runs.read_text() == "run\n"
    finally:
        if wproc is not None:
            wproc.terminate()
            wproc.wait(15)
        if pyworker is not None:
            pyworker.stop()
            assert th is not None
            th.join(15)
        cluster.stop()
