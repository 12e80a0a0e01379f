"""Protocol guarantees a client written from docs/protocol.md relies on, end
to end against a real jobqd (broker/tokens.c, broker/handle_jobs.c,
broker/epoch.c, broker/handlers.c's argument readers):

- client tokens: a submission whose reply was lost (the client went away
  and came back with a new identity, or the daemon was killed right after
  answering) is sent again with the same token and answers the same ids,
  creating nothing; the same token with another body is TokenReused; the
  window forgets a token; a retry racing the first call never makes a
  second job;
- epochs only grow: across quick restarts, across a kill -9, and when the
  last epoch (DATA_DIR/epoch) is ahead of the clock (a clock that stepped
  back);
- a value of the wrong type for any argument of any method is BadArgument
  (never Internal, never accepted);
- ping names the protocol versions the daemon speaks.

Daemons run in pytest's tmp_path (test_store's restartable Daemon) and are
stopped and checked at the end. No sleep waits for state, but the window
test waits out a one-second window.
"""
import os
import re
import subprocess
import threading
import time

import msgpack
import pytest
import zmq

from test_cli import JOBQ, run as run_cli
from test_store import JobqError, data_dir  # noqa: F401

DELAY = {"op": "test.delay", "args": {"duration": 0}}


def count_jobs(d):
    return len(d.listing(archived=True))


def raw_call(d, sock, method, rid, **args):
    """Send on sock and wait for the reply map (skipping keepalives)."""
    sock.send(msgpack.packb({"v": 1, "id": rid, "method": method, "args": args}))
    deadline = time.monotonic() + 20
    while True:
        assert sock.poll(int(max(deadline - time.monotonic(), 0) * 1000) + 1), "no reply"
        rep = msgpack.unpackb(sock.recv(), raw=False)
        if rep.get("id") == rid and not rep.get("keepalive"):
            return rep


# ---------------------------------------------------------------------------
# client tokens

def test_token_retry_after_a_lost_reply_returns_the_same_id(data_dir):
    d = data_dir()
    token = os.urandom(16)
    # The first try: sent, then the client goes away without its reply.
    lost = d.dealer()
    lost.send(msgpack.packb({"v": 1, "id": 1, "method": "submit_job",
                             "args": {"ops": [DELAY], "token": token}}))
    d.wait(lambda: d.call("stats")["submitted"] == 1, "the first try to be taken")
    d.wait_committed()
    lost.close(0)  # its reply unread
    # The retry, from a new connection (a new routing identity).
    again = d.dealer()
    rep = raw_call(d, again, "submit_job", 2, ops=[DELAY], token=token)
    rep2 = raw_call(d, again, "submit_job", 3, ops=[DELAY], token=token)
    again.close(0)
    assert rep["ok"] and rep2["ok"], (rep, rep2)
    assert rep["result"] == rep2["result"]
    assert d.listing() == [{"id": rep["result"]}]
    # Without a token the same body is a new job.
    assert d.submit(DELAY) == rep["result"] + 1
    d.stop()


def test_token_reused_for_another_body_is_refused(data_dir):
    d = data_dir()
    jid = d.call("submit_job", ops=[DELAY], token="abc")
    with pytest.raises(JobqError) as e:
        d.call("submit_job", ops=[{"op": "test.delay", "args": {"duration": 1}}], token="abc")
    assert e.value.code == "TokenReused"
    with pytest.raises(JobqError) as e:  # another method is another body
        d.call("submit_many_jobs", jobs=[[DELAY]], token="abc")
    assert e.value.code == "TokenReused"
    # str and bin of the same bytes are the same token
    assert d.call("submit_job", ops=[DELAY], token=b"abc") == jid
    assert count_jobs(d) == 1
    # A call refused outright does not keep its token: nothing was made.
    d.call("set_drain_flag", flag=True)
    with pytest.raises(JobqError) as e:
        d.call("submit_job", ops=[DELAY], token="t2")
    assert e.value.code == "Drained"
    d.call("set_drain_flag", flag=False)
    assert d.call("submit_job", ops=[DELAY], token="t2") == jid + 1
    # A retry while drained still answers the original id (creates nothing).
    d.call("set_drain_flag", flag=True)
    assert d.call("submit_job", ops=[DELAY], token="t2") == jid + 1
    d.stop()


def test_token_batches_are_bounded_and_refused_ones_not_kept(data_dir):
    d = data_dir()
    # A tokened batch past the cap is refused whole, creating nothing.
    with pytest.raises(JobqError) as e:
        d.call("submit_many_jobs", jobs=[[DELAY]] * 10001, token="too-big")
    assert e.value.code == "BadArgument" and "10000" in str(e.value), str(e.value)
    assert count_jobs(d) == 0
    # A batch none of whose jobs was accepted keeps nothing: the same token
    # then takes another body (no TokenReused) and creates its job.
    bad = [[{"op": "no.such.op"}], [{"op": "no.such.op.either"}]]
    first = d.call("submit_many_jobs", jobs=bad, token="all-refused")
    assert [ok for ok, _ in first] == [False, False], first
    again = d.call("submit_many_jobs", jobs=[[DELAY]], token="all-refused")
    assert again[0][0] is True, again
    assert count_jobs(d) == 1
    # At the cap it is accepted.
    res = d.call("submit_many_jobs", jobs=[[DELAY]] * 10000, token="at-cap")
    assert all(ok for ok, _ in res)
    d.stop()


BATCH = [[DELAY], [{"op": "no.such.op"}], [dict(DELAY, depends=[[-1, []]])],
         [dict(DELAY, depends=[[-3, ["success"]]])]]


def test_submit_many_with_a_token(data_dir):
    d = data_dir()
    first = d.call("submit_many_jobs", jobs=BATCH, token="batch-1")
    assert [r[0] for r in first] == [True, False, False, True], first
    again = d.call("submit_many_jobs", jobs=BATCH, token="batch-1")
    assert again == first
    assert count_jobs(d) == 2
    d.stop()


def test_token_survives_kill_9_right_after_the_reply(data_dir):
    d = data_dir()
    jid = d.call("submit_job", ops=[DELAY], token="crash-1")
    batch = d.call("submit_many_jobs", jobs=BATCH, token="crash-2")
    d.kill()  # straight after the answers
    d = data_dir()
    assert d.call("submit_job", ops=[DELAY], token="crash-1") == jid
    assert d.call("submit_many_jobs", jobs=BATCH, token="crash-2") == batch
    with pytest.raises(JobqError) as e:
        d.call("submit_job", ops=[{"op": "test.log"}], token="crash-1")
    assert e.value.code == "TokenReused"
    assert count_jobs(d) == 3
    d.stop()


def test_token_window_forgets(data_dir):
    d = data_dir("--token-window", "1")
    assert d.info["token_window"] == 1
    jid = d.call("submit_job", ops=[DELAY], token="w")
    assert d.call("submit_job", ops=[DELAY], token="w") == jid
    time.sleep(2.2)
    assert d.call("submit_job", ops=[DELAY], token="w") == jid + 1
    d.stop()
    d = data_dir("--token-window", "0")  # off: every call is new
    a = d.call("submit_job", ops=[DELAY], token="x")
    assert d.call("submit_job", ops=[DELAY], token="x") == a + 1
    d.stop()


def test_racing_retries_make_one_job(data_dir):
    """Both tries in flight at once, on two connections, handled by two
    handler threads: one job each round, both answers name it."""
    d = data_dir("--handlers", "4")
    socks = [d.dealer() for _ in range(4)]
    rid = 100
    for rnd in range(30):
        token = "race-%d" % rnd
        for s in socks:
            rid += 1
            s.send(msgpack.packb({"v": 1, "id": rid, "method": "submit_job",
                                  "args": {"ops": [DELAY], "token": token}}))
        got = set()
        for s in socks:
            assert s.poll(20000)
            rep = msgpack.unpackb(s.recv(), raw=False)
            assert rep["ok"], rep
            got.add(rep["result"])
        assert len(got) == 1, got
    for s in socks:
        s.close(0)
    assert count_jobs(d) == 30
    d.stop()


@pytest.mark.parametrize("token", [5, "", b"x" * 65, ["a"], True])
def test_bad_token_is_bad_argument(data_dir, token):
    d = data_dir()
    for method, args in (("submit_job", {"ops": [DELAY]}), ("submit_many_jobs", {"jobs": [[DELAY]]})):
        with pytest.raises(JobqError) as e:
            d.call(method, token=token, **args)
        assert e.value.code == "BadArgument", method
    assert count_jobs(d) == 0
    d.stop()


class DropFirstReply(threading.Thread):
    """A ROUTER standing in for jobqd that never answers the first request
    (its reply is "lost") and answers each later one; it keeps them all."""

    def __init__(self, ctx, endpoint, result):
        super().__init__(daemon=True)
        self.sock = ctx.socket(zmq.ROUTER)
        self.sock.bind(endpoint)
        self.result = result
        self.requests = []
        self.stop = threading.Event()

    def run(self):
        while not self.stop.is_set():
            if not self.sock.poll(50):
                continue
            rid, body = self.sock.recv_multipart()
            req = msgpack.unpackb(body, raw=False)
            self.requests.append(req)
            if len(self.requests) > 1:
                self.sock.send_multipart([rid, msgpack.packb(
                    {"v": 1, "id": req["id"], "ok": True, "result": self.result})])
        self.sock.close(0)


@pytest.mark.parametrize("cmd,result,out", [
    (["submit", "test.delay", "duration=0"], 42, "42"),
    (["submit-many", "-"], [[True, 42]], "42")])
def test_cli_retries_once_with_the_same_token(tmp_path, cmd, result, out):
    ep = "ipc://%s/fake.sock" % tmp_path
    ctx = zmq.Context()
    fake = DropFirstReply(ctx, ep, result)
    fake.start()
    try:
        p = run_cli("-t", "0.5", *cmd, endpoint=ep,
                    input='[[{"op": "test.delay", "args": {"duration": 0}}]]\n')
    finally:
        fake.stop.set()
        fake.join()
        ctx.term()
    assert p.returncode == 0, p.stderr
    assert out in p.stdout
    reqs = fake.requests
    assert len(reqs) == 2, reqs
    assert reqs[0]["method"] == reqs[1]["method"] == ("submit_job" if cmd[0] == "submit"
                                                       else "submit_many_jobs")
    assert re.fullmatch(r"[0-9a-f]{32}", reqs[0]["args"]["token"]), reqs[0]
    assert reqs[0]["args"] == reqs[1]["args"]  # the same token and body
    assert reqs[0]["id"] != reqs[1]["id"]


def test_cli_tokens_differ_per_submission(data_dir):
    d = data_dir()
    ep = d.endpoint
    a = run_cli("submit", "test.delay", "duration=0", endpoint=ep)
    b = run_cli("submit", "test.delay", "duration=0", endpoint=ep)
    assert a.returncode == 0 and b.returncode == 0, (a.stderr, b.stderr)
    assert int(b.stdout) == int(a.stdout) + 1
    # The token travels in the submit record, readable by every client
    # (libjobq turns events into JSON, which has no bytes): hex.
    ev = d.call("events_since", after_seq=0)["events"]
    clients = [e["change"]["client"] for e in ev if e["change"]["kind"] == "submit"]
    assert len(clients) == 2 and clients[0]["token"] != clients[1]["token"]
    assert re.fullmatch(r"[0-9a-f]{64}", clients[0]["token"]), clients
    assert 0 <= clients[0]["hash"] < 2 ** 63
    # jobq monitor shows a tokened submission's event (it converts it to JSON).
    env = dict(os.environ, JOBQ_ENDPOINT=ep)
    mon = subprocess.Popen([JOBQ, "--json", "monitor"], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert '"resync"' in mon.stdout.readline()  # subscribed
        c = run_cli("submit", "test.delay", "duration=0", endpoint=ep)
        assert c.returncode == 0, c.stderr
        line = mon.stdout.readline()
        assert '"kind":"submit"' in line and '"client"' in line, line
    finally:
        mon.kill()
        mon.wait()
        mon.stdout.close()
        mon.stderr.close()
    d.stop()


# ---------------------------------------------------------------------------
# epochs

def test_epochs_only_grow(data_dir):
    epochs = []
    for _ in range(3):  # quick restarts
        d = data_dir()
        epochs.append(d.info["epoch"])
        d.stop()
    assert epochs[0] < epochs[1] < epochs[2], epochs
    # The clock went back (the last epoch is ahead of it): still larger.
    ahead = epochs[-1] + 10 ** 12
    path = os.path.join(data_dir.path, "epoch")
    with open(path) as f:
        assert int(f.read()) == epochs[-1]
    with open(path, "w") as f:
        f.write("%d\n" % ahead)
    d = data_dir()
    assert d.info["epoch"] == ahead + 1
    assert d.call("stats")["epoch"] == ahead + 1
    d.kill()
    d = data_dir()
    assert d.info["epoch"] == ahead + 2
    d.stop()
    # An unreadable file is no epoch: the clock decides (a larger one still
    # wins on the next start).
    with open(path, "w") as f:
        f.write("garbage")
    d = data_dir()
    assert epochs[-1] < d.info["epoch"] < ahead
    d.stop()


def test_ping_names_the_protocols(data_dir):
    d = data_dir()
    assert d.info["protocol"] == 1
    assert d.info["protocols"] == [1]
    assert d.info["token_window"] == 600
    d.stop()


# ---------------------------------------------------------------------------
# a type error is BadArgument, for every argument of every method

BAD_TYPES = [
    ("submit_job", {"ops": "x"}),
    ("submit_job", {"ops": ["x"]}),
    ("submit_job", {"ops": [{"op": 5}]}),
    ("submit_job", {"ops": [dict(DELAY, priority="high")]}),
    ("submit_job", {"ops": [dict(DELAY, priority=1.5)]}),
    ("submit_job", {"ops": [dict(DELAY, args="x")]}),
    ("submit_job", {"ops": [dict(DELAY, depends="x")]}),
    ("submit_job", {"ops": [dict(DELAY, depends=[["x", []]])]}),
    ("submit_job", {"ops": [dict(DELAY, depends=[[1, "success"]])]}),
    ("submit_job", {"ops": [{"op": "test.delay", "args": {"duration": "x"}}]}),
    ("submit_job", {"ops": [{"op": "test.delay", "args": {"duration": 0, "repeat": "x"}}]}),
    ("submit_job", {"ops": [{"op": "test.delay", "args": {"duration": 0, "fail": "x"}}]}),
    ("submit_job", {"ops": [{"op": "test.log", "args": {"messages": "x"}}]}),
    ("submit_job", {"ops": [{"op": "test.log", "args": {"messages": [1]}}]}),
    ("submit_job", {"ops": [DELAY], "ignore_drain": "yes"}),
    ("submit_many_jobs", {"jobs": "x"}),
    ("submit_many_jobs", {"jobs": [[DELAY]], "ignore_drain": 1}),
    ("query_jobs", {"ids": "x"}),
    ("query_jobs", {"ids": ["x"]}),
    ("query_jobs", {"fields": "id"}),
    ("query_jobs", {"fields": [1]}),
    ("query_jobs", {"status": "queued"}),
    ("query_jobs", {"status": [1]}),
    ("query_jobs", {"after_id": "x"}),
    ("query_jobs", {"limit": "x"}),
    ("query_jobs", {"archived": "x"}),
    ("query_jobs", {"snapshot": 1}),
    ("cancel_job", {"id": "1"}),
    ("change_job_priority", {"id": "1", "priority": 0}),
    ("change_job_priority", {"id": 1, "priority": "high"}),
    ("change_job_priority", {"id": 1, "priority": None}),
    ("archive_job", {"id": 1.5}),
    ("auto_archive_jobs", {"age": "x", "timeout": 1}),
    ("auto_archive_jobs", {"age": 1, "timeout": "x"}),
    ("set_drain_flag", {"flag": "x"}),
    ("shutdown", {"now": "x"}),
    ("wait_for_job_change", {"id": "1", "fields": ["id"]}),
    ("wait_for_job_change", {"id": 1, "fields": "id"}),
    ("wait_for_job_change", {"id": 1, "fields": [1]}),
    ("wait_for_job_change", {"id": 1, "fields": ["id"], "prev_job_info": "x"}),
    ("wait_for_job_change", {"id": 1, "fields": ["id"], "prev_log_serial": "x"}),
    ("wait_for_job_change", {"id": 1, "fields": ["id"], "timeout": "x"}),
    ("events_since", {"after_seq": "x"}),
    ("events_since", {"after_seq": 0, "epoch": "x"}),
    ("events_since", {"after_seq": 0, "limit": "x"}),
]


def test_wrong_types_are_bad_argument(data_dir):
    d = data_dir()
    jid = d.submit(DELAY)  # an existing job for the calls that need one
    d.wait_final([jid])
    wrong = []
    for method, args in BAD_TYPES:
        args = {k: (jid if v == 1 and k == "id" else v) for k, v in args.items()}
        try:
            res = d.call(method, **args)
            wrong.append((method, args, "accepted", res))
        except JobqError as e:
            if e.code != "BadArgument":
                wrong.append((method, args, e.code, str(e)))
    assert not wrong, "\n".join(map(repr, wrong))
    # submit_many_jobs judges each job on its own: a type error in one job
    # is that job's failure, the others go in.
    res = d.call("submit_many_jobs", jobs=[[dict(DELAY, priority="high")], "x", [DELAY]])
    assert res[0][0] is False and "priority" in res[0][1], res
    assert res[1][0] is False, res
    assert res[2][0] is True, res
    assert count_jobs(d) == 2
    d.stop()
