"""The real exchange the golden vectors of tests/vectors/ were taken from.

`run` drives a real jobqd through one request of every method (and the
documented variants of their answers), a worker holding a lease, and the
event stream, and hands back every message by vector name: the requests
as sent, the replies and event bodies as received. Run as a script it
writes the readable forms (NAME.json) of the vectors it names; the tests
(test_py_vectors.py) run it again and check that the daemon still sends
what the vectors show: the same keys, order and value types.

Request ids follow one client's counter from 1 (ping 1, submit_job 2,
the request answered by error_reply 3), so a client under test sends
the request vectors in this order with its own counter.
"""
from __future__ import annotations

import json
import pathlib
import sys
import time
from typing import Any, Dict, List, Tuple

import msgpack

HERE = pathlib.Path(__file__).resolve().parent
VECTORS = HERE.parent / "vectors"
sys.path.insert(0, str(HERE))

from test_events import Daemon  # noqa: E402
from test_workers import Worker as RawWorker  # noqa: E402

#: The token of the submit_many_jobs vector (submit_job_request has its own).
BATCH_TOKEN = "fedcba9876543210fedcba9876543210"

ALL_FIELDS = ["id", "status", "priority", "archived", "ops", "opresult", "opstatus", "oplog",
              "opstart", "opexec", "opend", "oppriority", "summary", "received_ts", "start_ts",
              "end_ts", "log_serial", "change_serial", "worker", "opworker", "opattempt"]


def readable(name: str) -> Any:
    """The readable form of a vector."""
    return json.loads((VECTORS / f"{name}.json").read_text())


def request(rid: int, method: str, args: Dict[str, Any]) -> Dict[str, Any]:
    """A request envelope as libjobq and jobq.Client build it."""
    return {"v": 1, "id": rid, "method": method, "args": args}


def requests(epoch: int) -> List[Tuple[str, Dict[str, Any]]]:
    """The request vectors after submit_job_request, in the order a client
    sends them (ids 4...). ``epoch``: the daemon's (events_since names it).
    Jobs of the exchange: 1 the vec.echo job of submit_job_request (held
    by the worker), 2 and 3 the batch's, 4 a long test.delay, 5 a job
    waiting for 4."""
    return [
        ("submit_many_jobs", {
            "jobs": [[{"op": "test.log", "args": {"messages": ["one", "two"]}}],
                     [{"op": "test.delay", "args": {"duration": 0}, "priority": -10,
                       "depends": [[-1, ["success"]]]}],
                     [{"op": "no.such.op"}]],
            "ignore_drain": False, "token": BATCH_TOKEN}),
        ("query_jobs", {"fields": ["id", "status", "priority", "summary", "end_ts"],
                        "status": ["success"], "after_id": 1, "limit": 1, "archived": True}),
        ("query_jobs_ids", {"ids": [1, 2, 99], "fields": ALL_FIELDS}),
        ("query_jobs_snapshot", {"ids": [2], "fields": ["id", "change_serial", "status"],
                                 "snapshot": True}),
        ("wait_for_job_change", {"id": 2, "fields": ["status", "opstatus"],
                                 "prev_job_info": None, "prev_log_serial": 0, "timeout": 5.0}),
        ("wait_for_job_change_nochange", {"id": 1, "fields": ["status"],
                                          "prev_job_info": ["running"], "prev_log_serial": None,
                                          "timeout": 1.0}),
        ("wait_for_job_change_unknown", {"id": 99, "fields": ["status"], "prev_job_info": None,
                                         "prev_log_serial": None, "timeout": 1.0}),
        ("change_job_priority", {"id": 5, "priority": 10}),
        ("cancel_job", {"id": 4}),
        ("archive_job", {"id": 2}),
        ("auto_archive_jobs", {"age": -1, "timeout": 10}),
        ("set_drain_flag", {"flag": True}),
        ("stats", {}),
        ("events_since", {"after_seq": 0, "epoch": epoch, "limit": 4}),
        ("events_since_too_old", {"after_seq": 0, "epoch": epoch - 1}),
        ("list_fields", {}),
        ("list_opcodes", {}),
        ("http_token", {"ttl": 3600}),
        ("shutdown", {"now": True}),
    ]


def method_of(name: str) -> str:
    """The method a request vector's name stands for (its variant cut off)."""
    for suffix in ("_ids", "_snapshot", "_nochange", "_unknown", "_too_old"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def wait_status(d: Daemon, job: int, status: str) -> None:
    """Poll until the job has that status (10 s at most)."""
    deadline = time.monotonic() + 10
    while d.call("query_jobs", ids=[job])["rows"][0][1] != status:
        assert time.monotonic() < deadline, "job %d never %s" % (job, status)
        d.call("ping")


def run(d: Daemon) -> Dict[str, Any]:
    """Drive d through the exchange; returns {vector name: message}, and
    under "_events" every job event as (topic, body), under "_raw" the
    bytes each reply and event came in."""
    out: Dict[str, Any] = {}
    vs = d.dealer()  # the vectors' client: ids from 1, as one client's counter
    sub = d.subscriber(b"")
    d.wait_subscribed(sub)
    events: List[Tuple[bytes, Dict[str, Any]]] = []
    raw: Dict[str, bytes] = {}  # the bytes each reply and event came in

    def drain_events(until_seq: int = 0) -> None:
        """Read the events that arrived: all up to until_seq (10 s at most)."""
        deadline = time.monotonic() + 10
        while True:
            if not sub.poll(0):
                if (events[-1][1]["seq"] if events else 0) >= until_seq:
                    return
                assert sub.poll(int(max(0.0, deadline - time.monotonic()) * 1000)), \
                    "events up to %d not received" % until_seq
            topic, body = sub.recv_multipart()
            ev = msgpack.unpackb(body, raw=False)
            if topic.startswith(b"job/"):
                events.append((topic, ev))
                raw["_event%d" % ev["seq"]] = body

    def exchange(name: str, rid: int, method: str, args: Dict[str, Any]) -> Any:
        """Send request vector name (id rid) and return its answer."""
        req = request(rid, method, args)
        out[name + "_request"] = req
        vs.send(msgpack.packb(req, use_bin_type=True))
        deadline = time.monotonic() + 15
        while True:
            assert vs.poll(int(max(0.0, deadline - time.monotonic()) * 1000)), name
            data = vs.recv()
            rep = msgpack.unpackb(data, raw=False)
            assert rep.get("id") == rid, rep
            # The keepalive of the parked wait is a vector of its own.
            key = (method + "_keepalive") if rep.get("keepalive") else name + "_reply"
            if key not in out:
                out[key] = rep
                raw[key] = data
            if not rep.get("keepalive"):
                return rep

    hello = readable("worker_hello")
    w = RawWorker(d, hello["opcodes"], capacity=hello["capacity"], name=hello["name"])
    try:
        exchange("ping", 1, "ping", {})
        epoch = out["ping_reply"]["result"]["epoch"]
        sj = readable("submit_job_request")["args"]
        exchange("submit_job", 2, "submit_job", sj)
        w.assignment()  # job 1 runs on the worker from now on, to the end
        rep = exchange("error", 3, "submit_job", {"ops": [], "ignore_drain": False})
        assert not rep["ok"]
        del out["error_request"]
        rid = 3
        for name, args in requests(epoch):
            rid += 1
            method = method_of(name)
            if name == "query_jobs":
                d.wait_final([2, 3])
            if name == "change_job_priority":
                # 4 runs long; 5 waits for it (queued): its priority can change.
                assert d.call("submit_job", ops=[{"op": "test.delay",
                                                  "args": {"duration": 60}}]) == 4
                wait_status(d, 4, "running")
                assert d.call("submit_job", ops=[{"op": "test.delay", "args": {"duration": 0},
                                                  "depends": [[4, []]]}]) == 5
            if name == "auto_archive_jobs":
                d.wait_final([4, 5])
            if name == "stats":
                d.call("set_drain_flag", flag=False)
                drain_events(d.published())
            rep = exchange(name, rid, method, args)
            assert rep["ok"], (name, rep)
        return out
    finally:
        w.close(say_goodbye=False)
        drain_events()
        out["_events"] = events
        out["_raw"] = raw


def pick_events(events: List[Tuple[bytes, Dict[str, Any]]]) -> Dict[str, Any]:
    """The event vectors among the exchange's events, by name."""
    out: Dict[str, Any] = {}
    for topic, ev in events:
        ch = ev["change"]
        assert topic == b"job/%d/" % ch["job"]
        if ch["job"] == 2 and ch["kind"] == "submit":
            out.setdefault("event_submit_token", ev)
        elif ch["job"] == 3 and ch["kind"] == "submit":
            out.setdefault("event_submit", ev)
        elif ch["job"] == 2 and ch["kind"] == "update" and ch["log"]:
            out.setdefault("event_update_log", ev)
        elif ch["job"] == 2 and ch["kind"] == "archive":
            out.setdefault("event_archive", ev)
        elif ch["job"] == 1 and ch["kind"] == "update":
            out.setdefault("event_change", ev)
    # The batched stream's vector: those two submits, consecutive in seq
    # (one submit_many_jobs made them), as one batch/ message carries them.
    a, b = out.get("event_submit_token"), out.get("event_submit")
    if a and b and b["seq"] == a["seq"] + 1:
        out["batch_events"] = [a, b]
    return out


#: jobqd's options for the exchange: the worker's lease outlasts it, a
#: parked wait_for_job_change sees keepalives.
DAEMON_ARGS = ("--worker-lease", "120", "--keepalive", "0.2")
#: Hand-kept vectors of a cluster (jobqd --cluster): the exchange, run
#: against a daemon without --cluster, neither makes nor checks them.
CLUSTER = ("query_nodes_request", "query_nodes_reply", "add_node_request", "add_node_reply",
           "remove_node_request", "remove_node_reply", "transfer_leader_request",
           "transfer_leader_reply", "error_not_leader")

#: Vectors of the exchange that are not written (older, hand-kept ones).
KEPT = ("ping_request", "ping_reply", "submit_job_request", "submit_job_reply", "error_reply",
        "event_change")


def main() -> None:
    """Write the exchange's vectors (NAME.json; make_vectors.py packs them)."""
    d = Daemon(*DAEMON_ARGS)
    try:
        got = run(d)
    finally:
        d.stop()
    raw = got.pop("_raw")
    evs = pick_events(got.pop("_events"))
    for name, ev in evs.items():
        if isinstance(ev, dict):
            raw[name] = raw["_event%d" % ev["seq"]]
    # A batch is an array header and the bodies' bytes as they came.
    batch = evs.get("batch_events")
    if batch:
        raw["batch_events"] = b"\x92" + b"".join(raw["_event%d" % ev["seq"]] for ev in batch)
    got.update(evs)
    for name, value in sorted(got.items()):
        if name in KEPT:
            continue
        text = json.dumps(value, indent=2) + "\n"
        # The readable form packs back into the bytes that came.
        if name in raw:
            assert msgpack.packb(json.loads(text), use_bin_type=True) == raw[name], name
        (VECTORS / f"{name}.json").write_text(text)
        print(name)


if __name__ == "__main__":
    main()
