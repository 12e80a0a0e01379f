"""GET /metrics of a real jobqd (`--http 127.0.0.1:0`), parsed with
Debian's python3-prometheus-client after a known workload, and every
figure it shares with the `stats` method cross-checked against the reply
taken right after, exactly once the daemon is idle (issue 12).

The workload: built-in opcodes that succeed, fail and are canceled while
running, a Python worker's opcodes that succeed and fail, a job of two
opcodes (built-in, then the worker's), a submission refused. Beside
`stats`: the per-opcode figures against what the jobs themselves show
(statuses, log entries), the histograms' internal sums, and the worker
figures against GET /api/workers.

Run: JOBQ_BUILD_DIR=$PWD/build /usr/bin/python3 -m pytest -q tests/python/test_metrics.py
"""
from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
from prometheus_client.parser import text_string_to_metric_families

from test_cli import JOBQD, Daemon, run

ROOT = Path(__file__).resolve().parent.parent.parent
sys.path.insert(0, str(ROOT / "clients" / "python"))

import jobq  # noqa: E402
from jobq.worker import Assignment  # noqa: E402

STATUSES = ("queued", "waiting", "canceling", "running", "canceled", "success", "error")
Key = tuple[str, frozenset[tuple[str, str]]]


def wait_for(cond: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll cond until it holds, at most timeout seconds."""
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def documented() -> dict[str, str]:
    """The metrics docs/operations.md lists: name -> type."""
    text = (ROOT / "docs" / "operations.md").read_text()
    section = text.split("## Metrics (`GET /metrics`)", 1)[1].split("\n## ", 1)[0]
    return {m.group(1): m.group(2) for m in
            re.finditer(r"^\| `(jobq_\w+)` \| (\w+) \|", section, re.M)}


def start_again(old: Daemon, tmp: Path) -> Daemon:
    """A new jobqd (with HTTP) on the data directory of old (stopped)."""
    (old.data_dir / "http.port").unlink(missing_ok=True)
    new = Daemon.__new__(Daemon)
    new.data_dir, new.endpoint = old.data_dir, old.endpoint
    new.log = open(tmp / "jobqd-again.log", "w+")
    new.proc = subprocess.Popen([JOBQD, "--data-dir", str(old.data_dir), "--http",
                                 "127.0.0.1:0"], stdout=new.log, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: new.proc.poll() is not None or
                 run("ping", "-t", "0.5",  # type: ignore[no-untyped-call]
                     endpoint=new.endpoint).returncode == 0, 15,
                 "jobqd to answer ping")
        assert new.proc.poll() is None, "jobqd exited"
    except BaseException:
        new.stop()  # type: ignore[no-untyped-call]
        raise
    return new


class Env:
    """A jobqd with its HTTP endpoint, a client and a Python worker."""

    def __init__(self, tmp: Path, again: Daemon | None = None) -> None:
        self.d = start_again(again, tmp) if again else \
            Daemon(tmp, "--http", "127.0.0.1:0")  # type: ignore[no-untyped-call]
        self.client = jobq.Client(self.d.endpoint)
        self.worker: jobq.Worker | None = None
        self.thread: threading.Thread | None = None
        port_file = self.d.data_dir / "http.port"
        wait_for(port_file.exists, 10, "RUN_DIR/http.port")
        self.base = f"http://127.0.0.1:{int(port_file.read_text().strip())}"

    def get(self, path: str) -> tuple[str, str]:
        """The body and content type of GET path."""
        with urllib.request.urlopen(self.base + path, timeout=10) as r:
            return r.read().decode("utf-8"), r.headers.get("Content-Type", "")

    def metrics(self) -> dict[Key, float]:
        """Every sample of /metrics by (name, labels); families checked."""
        text, ctype = self.get("/metrics")
        assert ctype.startswith("text/plain"), ctype
        out: dict[Key, float] = {}
        for fam in text_string_to_metric_families(text):  # type: ignore[no-untyped-call]
            assert fam.name.startswith("jobq_"), fam.name
            assert fam.documentation, fam.name
            assert fam.type in ("counter", "gauge", "histogram"), (fam.name, fam.type)
            for s in fam.samples:
                key = (s.name, frozenset(s.labels.items()))
                assert key not in out, key
                out[key] = s.value
        return out

    def start_worker(self) -> None:
        """A Python worker serving m.echo (its args back) and m.fail."""
        w = jobq.Worker(f"ipc://{self.d.data_dir}/workers.sock", name="metrics-w", capacity=2)

        def echo(a: Assignment) -> Any:
            a.feedback("echoing")
            return a.args

        def fail(a: Assignment) -> Any:
            raise RuntimeError("m.fail fails")

        w.add_opcode("m.echo", echo)
        w.add_opcode("m.fail", fail)
        self.worker = w
        self.thread = threading.Thread(target=w.run, daemon=True)
        self.thread.start()
        wait_for(lambda: w.ready, 10, "the worker's welcome")

    def close(self) -> None:
        """Stop the worker and the daemon, whatever happened."""
        try:
            if self.worker is not None and self.thread is not None:
                self.worker.stop()
                self.thread.join(10)
            self.client.close()
        finally:
            self.d.stop()  # type: ignore[no-untyped-call]


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    e = Env(tmp_path)
    try:
        yield e
    finally:
        e.close()


def value(m: dict[Key, float], name: str, **labels: str) -> float:
    """One sample's value; fails when it is missing."""
    key = (name, frozenset(labels.items()))
    assert key in m, f"no sample {name}{labels}"
    return m[key]


def series(m: dict[Key, float], name: str, label: str) -> dict[str, float]:
    """A family's samples by the value of their one label."""
    out: dict[str, float] = {}
    for (n, labels), v in m.items():
        if n == name:
            d = dict(labels)
            out[d[label]] = v
    return out


def check_histogram(m: dict[Key, float], name: str, **labels: str) -> tuple[float, float]:
    """Cumulative buckets ending in +Inf == _count; returns (count, sum)."""
    buckets = sorted((float(dict(l)["le"]), v) for (n, l), v in m.items()
                     if n == name + "_bucket" and
                     {k: x for k, x in dict(l).items() if k != "le"} == labels)
    assert buckets and buckets[-1][0] == float("inf"), name
    counts = [v for _, v in buckets]
    assert counts == sorted(counts), (name, labels, buckets)
    count = value(m, name + "_count", **labels)
    assert buckets[-1][1] == count
    return count, value(m, name + "_sum", **labels)


def finished(c: jobq.Client, ids: list[int]) -> bool:
    rows = c.query_jobs(ids, fields=["status"])["rows"]
    return all(bool(r[0] in ("success", "error", "canceled")) for r in rows)


def test_metrics_match_stats(env: Env) -> None:
    c = env.client
    env.start_worker()
    delay_ok = [c.submit_job([{"op": "test.delay", "args": {"duration": 0.01}}])
                for _ in range(5)]
    delay_fail = [c.submit_job([{"op": "test.delay", "args": {"duration": 0.01, "fail": True}}])
                  for _ in range(2)]
    echo = [c.submit_job([{"op": "m.echo", "args": {"n": i}}]) for i in range(3)]
    mfail = [c.submit_job([{"op": "m.fail", "args": {}}])]
    two = [c.submit_job([{"op": "test.delay", "args": {"duration": 0.01}},
                         {"op": "m.echo", "args": {"second": True}}])]
    with pytest.raises(jobq.JobqError):
        c.submit_job([{"op": "test.delay", "args": {"no such argument": 1}}])
    long_job = c.submit_job([{"op": "test.delay", "args": {"duration": 60}}])
    wait_for(lambda: bool(c.query_jobs([long_job], fields=["status"])["rows"][0][0] == "running"),
             10, "the long job to run")
    ok, _ = c.cancel_job(long_job)
    assert ok
    ids = delay_ok + delay_fail + echo + mfail + two + [long_job]
    wait_for(lambda: finished(c, ids), 20, "every job to end")

    # Idle: the store has committed everything and the hub's copy (made at
    # most 250 ms after a change) shows no lease; two scrapes then agree.
    def settled() -> bool:
        a = env.metrics()
        busy = a.get(("jobq_worker_opcode_busy", frozenset({("opcode", "m.echo")})))
        if value(a, "jobq_store_queued") or busy != 0:
            return False
        time.sleep(0.3)
        b = env.metrics()
        moving = ("jobq_uptime_seconds", "jobq_resident_memory_bytes",
                  "jobq_requests_total", "jobq_connections", "jobq_connections_peak")
        return {k: v for k, v in a.items() if k[0] not in moving} == \
            {k: v for k, v in b.items() if k[0] not in moving}
    wait_for(settled, 10, "an idle daemon")
    m = env.metrics()
    st = c.stats()

    # Jobs.
    for s in STATUSES:
        assert value(m, "jobq_jobs", status=s) == st["jobs"][s], s
    assert value(m, "jobq_jobs_live") == st["live_jobs"] == len(ids)
    assert value(m, "jobq_jobs_archived") == st["archived_jobs"] == 0
    assert value(m, "jobq_jobs_max") == st["max_jobs"]
    assert value(m, "jobq_jobs_submitted_total") == st["submitted"] == len(ids)
    assert series(m, "jobq_jobs_finished_total", "status") == {
        "success": 5 + 3 + 1, "error": 2 + 1, "canceled": 1}
    assert value(m, "jobq_changes_total") == st["changes"]

    # Requests and errors: every code stats shows; methods the HTTP
    # thread does not call itself exactly, `stats` (this reply included) at
    # least as many as the scrape saw.
    errs = series(m, "jobq_request_errors_total", "code")
    assert errs == {k: float(v) for k, v in st["errors"].items()}
    assert errs["BadArgument"] == 1
    reqs = series(m, "jobq_requests_total", "method")
    assert set(reqs) == set(st["requests"])
    for method in ("submit_job", "cancel_job", "query_jobs"):
        assert reqs[method] == st["requests"][method], method
    assert reqs["submit_job"] == len(ids) + 1
    assert reqs["stats"] <= st["requests"]["stats"]
    # The ipc client's submissions and queries were served by the loop.
    assert 0 < value(m, "jobq_requests_on_loop_total") <= st["requests_on_loop"]
    assert value(m, "jobq_requests_dropped_total") == st["dropped"]
    assert value(m, "jobq_requests_too_large_total") == st["too_large"]
    assert value(m, "jobq_waiters") == st["waiters"]

    # Store.
    store = st["store"]
    assert value(m, "jobq_store_commits_total") == store["commits"]
    assert value(m, "jobq_store_fsyncs_total") == store["fsyncs"]
    assert value(m, "jobq_store_records_total") == store["records"]
    assert value(m, "jobq_store_failures_total") == store["failures"] == 0
    assert value(m, "jobq_store_bytes") == store["bytes"]
    assert value(m, "jobq_store_queued") == store["queued"] == 0
    assert value(m, "jobq_store_failing") == 0
    count, total = check_histogram(m, "jobq_store_batch_records")
    assert count == store["commits"] and total == store["records"]
    count, total = check_histogram(m, "jobq_store_commit_seconds")
    assert count == store["commits"] and total > 0

    # Events.
    assert value(m, "jobq_events_published_total") == st["events_published"] > 0
    assert value(m, "jobq_epoch") == st["epoch"]
    assert value(m, "jobq_replay_ring_events") == st["events_published"]
    assert 0 < value(m, "jobq_replay_ring_bytes") <= value(m, "jobq_replay_ring_max_bytes")

    # Workers.
    ws = st["workers"]
    for metric, key in (("jobq_workers_connected", "connected"),
                        ("jobq_workers_capacity", "capacity"),
                        ("jobq_workers_busy", "running"), ("jobq_workers_waiting", "waiting"),
                        ("jobq_worker_hellos_total", "hellos"),
                        ("jobq_worker_assigned_total", "assigned"),
                        ("jobq_worker_completed_total", "completed"),
                        ("jobq_worker_failed_total", "failed"),
                        ("jobq_worker_lost_total", "lost"),
                        ("jobq_worker_retries_total", "retries"),
                        ("jobq_worker_timeouts_total", "timeouts"),
                        ("jobq_worker_cancels_total", "cancels"),
                        ("jobq_worker_refused_total", "refused")):
        assert value(m, metric) == ws[key], metric
    assert ws["connected"] == 1 and ws["capacity"] == 2
    assert ws["completed"] == 4 + 1 and ws["failed"] == 1
    for op in ("m.echo", "m.fail"):
        assert value(m, "jobq_worker_opcode_workers", opcode=op) == 1
        assert value(m, "jobq_worker_opcode_capacity", opcode=op) == 2
        assert value(m, "jobq_worker_opcode_busy", opcode=op) == 0
        assert value(m, "jobq_worker_opcode_waiting", opcode=op) == 0
    body, ctype = env.get("/api/workers")
    assert ctype.startswith("application/json"), ctype
    api = json.loads(body)
    assert [(w["name"], sorted(w["opcodes"]), w["capacity"], w["running"])
            for w in api["workers"]] == [("metrics-w", ["m.echo", "m.fail"], 2, 0)]
    assert abs(api["workers"][0]["since"][0] - time.time()) < 60
    assert {o["name"]: (o["workers"], o["capacity"], o["busy"], o["waiting"])
            for o in api["opcodes"]} == {"m.echo": (1, 2, 0, 0), "m.fail": (1, 2, 0, 0)}

    # Connections: the kinds add up to what stats counts.
    conns = series(m, "jobq_connections", "kind")
    assert set(conns) == {"clients", "subscribers", "workers"}
    assert sum(conns.values()) == st["connections"]["open"]
    assert conns["workers"] == 1 and conns["clients"] >= 1
    assert value(m, "jobq_connections_max") == st["connections"]["max"]

    # The process.
    assert value(m, "jobq_threads") == st["threads"]
    assert abs(value(m, "jobq_uptime_seconds") - st["uptime"]) < 5
    assert value(m, "jobq_resident_memory_bytes") > 1 << 20
    assert abs(value(m, "jobq_start_time_seconds") + st["uptime"] - time.time()) < 5
    assert value(m, "jobq_build_info", version=st["version"]) == 1
    assert value(m, "jobq_executor_running") == st["running"] == 0
    assert value(m, "jobq_executor_max_running") == st["max_running"]
    assert value(m, "jobq_scheduler_runnable") == st["runnable"]
    assert value(m, "jobq_scheduler_dep_waiting") == st["dep_waiting"]
    assert value(m, "jobq_drained") == (1 if st["drained"] else 0)

    # Opcodes: against the jobs themselves.
    rows = c.query_jobs(ids, fields=["ops", "opstatus", "oplog"])["rows"]
    want: dict[tuple[str, str], int] = {}
    nlog = 0
    for ops, opstatus, oplog in rows:
        for opdesc, status in zip(ops, opstatus):
            want[(opdesc["op"], status)] = want.get((opdesc["op"], status), 0) + 1
        nlog += sum(len(entries) for entries in oplog)
    got = {(dict(l)["opcode"], dict(l)["status"]): int(v) for (n, l), v in m.items()
           if n == "jobq_opcodes_finished_total" and v}
    assert got == want
    assert want == {("test.delay", "success"): 6, ("test.delay", "error"): 2,
                    ("test.delay", "canceled"): 1, ("m.echo", "success"): 4,
                    ("m.fail", "error"): 1}
    for (n, l), v in m.items():
        if n == "jobq_opcodes":
            assert v == 0, (n, l)  # idle: nothing queued, waiting or running
    assert value(m, "jobq_log_records_total") == nlog > 0
    ran = {"test.delay": 5 + 2 + 1 + 1, "m.echo": 4, "m.fail": 1}
    for name, nran in ran.items():
        wcount, wsum = check_histogram(m, "jobq_opcode_queue_wait_seconds", opcode=name)
        rcount, rsum = check_histogram(m, "jobq_opcode_run_seconds", opcode=name)
        assert wcount == rcount == nran, name
        assert wsum >= 0 and rsum > 0
    _, delay_run = check_histogram(m, "jobq_opcode_run_seconds", opcode="test.delay")
    assert delay_run >= 6 * 0.01


def test_metrics_count_recovered_jobs(tmp_path: Path) -> None:
    """Jobs loaded at start count in the gauges, not as this run's
    submissions or finishes, and the figures match stats and the jobs."""
    first = Daemon(tmp_path, "--worker-opcode", "m.later")  # type: ignore[no-untyped-call]
    try:
        c = jobq.Client(first.endpoint)
        ids = [c.submit_job([{"op": "m.later", "args": {}}]) for _ in range(3)]
        done = c.submit_job([{"op": "test.delay", "args": {"duration": 0}}])
        wait_for(lambda: finished(c, [done]), 10, "the quick job to end")
        c.close()
    finally:
        first.stop()  # type: ignore[no-untyped-call]
    e = Env(tmp_path, again=first)
    try:
        c = e.client
        # Nobody serves m.later: its opcodes wait for a worker, queued.
        wait_for(lambda: e.metrics().get(("jobq_worker_opcode_waiting",
                                          frozenset({("opcode", "m.later")}))) == 3,
                 10, "the hub to hold the recovered opcodes")
        m = e.metrics()
        st = c.stats()
        for s in STATUSES:
            assert value(m, "jobq_jobs", status=s) == st["jobs"][s], s
        assert st["jobs"]["queued"] == 3 and st["jobs"]["success"] == 1
        assert value(m, "jobq_jobs_submitted_total") == st["submitted"] == 0
        assert series(m, "jobq_jobs_finished_total", "status") == {
            "success": 0, "error": 0, "canceled": 0}
        assert value(m, "jobq_opcodes", opcode="m.later", status="queued") == 3
        # The quick job finished in the first run: nothing of it here (an
        # opcode has series once it is seen unfinished, or ends, in this run).
        assert not [k for k in m if dict(k[1]).get("opcode") == "test.delay"]
        assert value(m, "jobq_jobs_live") == st["live_jobs"] == 4
        # Cancel one: it leaves the gauge, and counts as this run's.
        assert c.cancel_job(ids[0])[0]
        wait_for(lambda: finished(c, ids[:1]), 10, "the cancel")
        m = e.metrics()
        assert value(m, "jobq_opcodes", opcode="m.later", status="queued") == 2
        assert value(m, "jobq_opcodes_finished_total", opcode="m.later", status="canceled") == 1
        assert value(m, "jobq_jobs_finished_total", status="canceled") == 1
        assert check_histogram(m, "jobq_opcode_queue_wait_seconds", opcode="m.later")[0] == 0
    finally:
        e.close()


def test_metrics_documented(env: Env) -> None:
    """docs/operations.md lists exactly the families /metrics has."""
    text, _ = env.get("/metrics")
    served = {f.name + ("_total" if f.type == "counter" else ""): f.type
              for f in text_string_to_metric_families(text)}  # type: ignore[no-untyped-call]
    assert served == documented()
