"""A third party's view of the whole queue, rebuilt from the event stream
alone, must equal the daemon's (docs/protocol.md "Events" and "Subscribing
without a race, and catching up").

The View below is written as someone outside the project would write it:
from docs/protocol.md only, with python3-zmq and python3-msgpack, through
no jobq code (no libjobq, no CLI). It keeps every field the events carry
for every job, archived ones included. The test makes it work for its
view: it drops events on purpose (a seq gap, filled by events_since), goes
deaf for longer than the replay ring holds (--ring-events 64: events_since
says too_old, a new snapshot, paged with a small limit while jobs are
archived), loses a last event (only a heartbeat shows it), and lives
through a kill -9 and restart of the daemon (a new, larger epoch: a new
snapshot). Meanwhile jobs are submitted, run, log, fail, get canceled,
reprioritised and archived. At the end every job of the view is compared
field by field with query_jobs, `summary` included.

Bounded: the workload is a few hundred events and ends in well under a
minute; every wait is a bounded poll.
"""
import os
import random
import time

import msgpack
import pytest
import zmq

from test_store import data_dir  # noqa: F401  (the daemon, restartable)

# Every query field the events carry (all of them but none).
FIELDS = ["id", "status", "priority", "archived", "ops", "summary", "opstatus", "opresult",
          "oppriority", "opstart", "opexec", "opend", "oplog", "received_ts", "start_ts",
          "end_ts", "log_serial", "change_serial"]
PAGE = 7  # snapshot page size: several pages, so jobs change between them


class View:
    """The queue as the event stream tells it (docs/protocol.md)."""

    def __init__(self, request_ep, events_ep, rng):
        self.ctx = zmq.Context()
        self.req = self.ctx.socket(zmq.DEALER)
        self.req.setsockopt(zmq.LINGER, 0)
        self.req.connect(request_ep)
        self.sub = self.ctx.socket(zmq.SUB)
        self.sub.setsockopt(zmq.LINGER, 0)
        self.sub.connect(events_ep)
        # Step 1: subscribe first (every job, and heartbeats).
        self.sub.setsockopt(zmq.SUBSCRIBE, b"job/")
        self.sub.setsockopt(zmq.SUBSCRIBE, b"sys/")
        self.rid = 0
        self.rng = rng
        self.drop_rate = 0.0   # events thrown away on purpose
        self.deaf = False      # every event thrown away
        self.jobs = {}
        self.seq = self.epoch = None
        self.stats = {"snapshots": 0, "gaps": 0, "from_events_since": 0, "too_old": 0,
                      "new_epoch": 0, "heartbeat_gaps": 0, "dropped": 0, "stale_epoch": 0}

    def close(self):
        self.ctx.destroy(0)

    def call(self, method, **args):
        self.rid += 1
        self.req.send(msgpack.packb({"v": 1, "id": self.rid, "method": method, "args": args}))
        deadline = time.monotonic() + 30
        while True:
            left = deadline - time.monotonic()
            assert left > 0 and self.req.poll(int(left * 1000) + 1), "no reply to " + method
            rep = msgpack.unpackb(self.req.recv(), raw=False)
            if rep.get("id") == self.rid and "ok" in rep:  # not a keepalive
                break
        assert rep["ok"], rep
        return rep["result"]

    # Step 2: a snapshot, paged; the first page's seq is the last seen.
    def snapshot(self):
        self.stats["snapshots"] += 1
        jobs, after, first = {}, 0, None
        while True:
            res = self.call("query_jobs", fields=FIELDS, snapshot=True, archived=True,
                            after_id=after, limit=PAGE)
            if first is None:
                first = res
            elif res["epoch"] != first["epoch"]:  # restarted between pages
                return self.snapshot()
            for row in res["rows"]:
                job = dict(zip(res["fields"], row))
                jobs[job["id"]] = job
            if not res["more"]:
                break
            after = res["rows"][-1][0]
        self.jobs, self.seq, self.epoch = jobs, first["seq"], first["epoch"]

    # Step 3: apply one event (its body), unless already reflected.
    def apply(self, body):
        if body["seq"] <= self.seq:
            return
        self.seq = body["seq"]
        rec = body["change"]
        job = self.jobs.get(rec["job"])
        if job is not None and rec["serial"] <= job["change_serial"]:
            return
        if rec["kind"] == "submit":
            n = len(rec["input"])
            job = self.jobs[rec["job"]] = {
                "id": rec["job"], "archived": False, "ops": rec["input"],
                "summary": rec["summary"], "opstatus": [None] * n, "opresult": [None] * n,
                "oppriority": [None] * n, "opstart": [None] * n, "opexec": [None] * n,
                "opend": [None] * n, "oplog": [[] for _ in range(n)], "log_serial": 0}
        assert job is not None, "an update of a job never seen: %r" % rec
        assert rec["serial"] == job.get("change_serial", 0) + 1, (rec, job)
        job["change_serial"] = rec["serial"]
        for k in ("status", "priority", "received_ts", "start_ts", "end_ts"):
            job[k] = rec[k]
        if rec["kind"] == "archive":
            job["archived"] = True
        for op in rec["ops"]:
            i = op["index"]
            job["opstatus"][i], job["opresult"][i] = op["status"], op["result"]
            job["oppriority"][i] = op["priority"]
            job["opstart"][i], job["opexec"][i], job["opend"][i] = (
                op["start_ts"], op["exec_ts"], op["end_ts"])
        # log entries: all of log_op's, unless log_ops splits them
        spans = rec.get("log_ops") or ([[rec["log_op"], len(rec["log"])]] if rec["log"] else [])
        entries = iter(rec["log"])
        for index, count in spans:
            for _ in range(count):
                entry = next(entries)
                job["oplog"][index].append(entry)
                job["log_serial"] = entry[0]

    # Step 4: fill a gap after the last seen seq from events_since.
    def catch_up(self):
        while True:
            res = self.call("events_since", after_seq=self.seq, epoch=self.epoch)
            if res["too_old"]:  # step 5
                self.stats["too_old"] += 1
                self.snapshot()
                continue
            for body in res["events"]:  # nested maps, not bytes
                self.stats["from_events_since"] += 1
                self.apply(body)
            if not res["more"]:
                return

    def on_message(self, topic, body):
        if topic != b"sys/heartbeat" and (self.deaf or self.rng.random() < self.drop_rate):
            self.stats["dropped"] += 1
            return
        ev = msgpack.unpackb(body, raw=False)
        if self.seq is None:
            self.snapshot()
        if ev["epoch"] < self.epoch:  # from a run before the snapshot's
            self.stats["stale_epoch"] += 1
            return
        if ev["epoch"] > self.epoch:  # the daemon restarted: step 5
            self.stats["new_epoch"] += 1
            self.snapshot()
            if ev.get("heartbeat"):
                return
        if ev.get("heartbeat"):
            if ev["seq"] > self.seq:  # the last events were lost
                self.stats["heartbeat_gaps"] += 1
                self.catch_up()
            return
        if ev["seq"] > self.seq + 1:
            self.stats["gaps"] += 1
            self.catch_up()
        self.apply(ev)

    def pump(self, timeout=0.0):
        """Read what has arrived (waiting up to timeout for the first)."""
        wait = int(timeout * 1000)
        while self.sub.poll(wait):
            wait = 0
            self.on_message(*self.sub.recv_multipart())

    def pump_until(self, seq, epoch, timeout=30):
        deadline = time.monotonic() + timeout
        while self.epoch != epoch or self.seq < seq:
            assert time.monotonic() < deadline, (self.seq, self.epoch, seq, epoch, self.stats)
            self.pump(0.1)


def workload(d, view, rng, rounds):
    """Jobs that run, log, fail, get canceled, reprioritised and archived,
    with the view reading between calls."""
    ids = []
    for r in range(rounds):
        ops = [{"op": "test.delay", "args": {"duration": 0.01, "repeat": rng.randint(0, 3)}},
               {"op": "test.log", "args": {"messages": ["m%d" % r, "é %d" % r],
                                           "fail": rng.random() < 0.2}}]
        ids.append(d.submit(*ops[:rng.randint(1, 2)], token="w-%d-%f" % (r, time.time())))
        # a long job: queued behind the others, or running, then canceled
        slow = d.submit({"op": "test.delay", "args": {"duration": 5}, "priority": 10})
        d.call("change_job_priority", id=slow, priority=-10)
        d.call("cancel_job", id=slow)
        if r % 3 == 0:
            batch = d.call("submit_many_jobs", jobs=[
                [{"op": "test.log", "args": {"messages": ["b"]}}],
                [{"op": "test.delay", "args": {"duration": 0}, "depends": [[-1, ["success"]]]}]])
            ids += [j for ok, j in batch if ok]
        if r % 4 == 1 and ids:
            d.call("archive_job", id=ids[rng.randrange(len(ids))])  # false unless finished
        if r % 5 == 2:
            d.call("auto_archive_jobs", age=-1, timeout=1)
        view.pump()
    return ids


def settled(d):
    """Every job final and every change published: (last seq, epoch)."""
    deadline = time.monotonic() + 30
    while True:
        rows = d.listing(fields=("id", "status"))
        st = d.call("stats")
        if all(r["status"] in ("success", "error", "canceled") for r in rows) and \
                st["changes_consumed"] == st["changes"] and st["store"]["queued"] == 0:
            return st["events_published"], st["epoch"]
        assert time.monotonic() < deadline, st
        d.call("ping")


def test_view_from_events_equals_query_jobs(data_dir):
    rng = random.Random(8)
    args = ("--ring-events", "64", "--max-running", "2")
    d = data_dir(*args)
    view = View(d.endpoint, "ipc://%s/events.sock" % data_dir.path, rng)
    try:
        # The subscription reaches the publisher: a heartbeat comes.
        deadline = time.monotonic() + 5
        while view.seq is None:
            assert time.monotonic() < deadline, "no heartbeat"
            view.pump(0.1)
        # 1. events dropped here and there: seq gaps, filled by events_since
        view.drop_rate = 0.15
        workload(d, view, rng, 12)
        # 2. deaf for longer than the ring holds: too_old, a new snapshot
        view.deaf = True
        workload(d, view, rng, 10)
        view.deaf = False
        view.drop_rate = 0.1
        workload(d, view, rng, 6)
        # 3. a crash with jobs queued and running, and a restart
        d.submit({"op": "test.delay", "args": {"duration": 5}})
        d.submit({"op": "test.log", "args": {"messages": ["before the crash"]}})
        view.pump(0.2)
        old_epoch = view.epoch
        d.kill()
        d = data_dir(*args)
        view.drop_rate = 0.1
        workload(d, view, rng, 8)
        # 4. the last event lost: only a heartbeat can show it
        seq, epoch = settled(d)
        view.pump_until(seq - 1, epoch)
        view.deaf = True
        jid = d.submit({"op": "test.log", "args": {"messages": ["last"]}})
        seq, epoch = settled(d)
        view.pump(0.3)  # the tail of it, thrown away
        view.deaf = False
        view.drop_rate = 0.0
        view.pump_until(seq, epoch)
        assert epoch > old_epoch
        assert view.jobs[jid]["status"] == "success"

        # Field by field, every job, archived ones included.
        res = d.listing(fields=FIELDS, limit=100, archived=True)
        daemon_jobs = {r["id"]: r for r in res}
        assert sorted(view.jobs) == sorted(daemon_jobs)
        diffs = []
        for jid_, want in daemon_jobs.items():
            got = view.jobs[jid_]
            for f in FIELDS:
                if got.get(f) != want[f]:
                    diffs.append((jid_, f, got.get(f), want[f]))
        assert not diffs, diffs[:10]
        s = view.stats
        assert s["gaps"] > 0 and s["from_events_since"] > 0, s
        assert s["too_old"] > 0, s
        assert s["new_epoch"] > 0, s
        assert s["heartbeat_gaps"] > 0, s
        assert any(j["archived"] for j in view.jobs.values())
        assert any(j["status"] == "canceled" for j in view.jobs.values())
        assert any(j["status"] == "error" for j in view.jobs.values())
        d.stop()
    finally:
        view.close()
