"""Requests the loop serves itself (broker/cheap.c, broker/loop.c
serve_here; docs/architecture.md "A request's path"), end to end against a
real jobqd.

Why: a cheap request (ping, a small submit, a query of a few jobs in the
table, a cancel...) no longer crosses to a handler thread; the loop runs
the same dispatch code itself. Each test fails if that path dropped a
guarantee the handler path gives:

- which requests the loop serves (stats.requests_on_loop counts them) and
  which it leaves to the handlers (waits, listings, batches, big bodies,
  unbounded fields, jobs only the store holds);
- malformed, oversized and badly encoded bodies get the same typed errors,
  with the request's id;
- roles are enforced (PermissionDenied, nothing created);
- a submission is not answered before its commit: when the commit fails
  the held answer is StoreFailed ("not saved"), never an id, and every id
  answered is there after a restart;
- a connection over --max-client-requests (its answers unread) is
  answered Busy, and every request gets exactly one answer;
- a cluster follower answers NotLeader for the methods the loop serves.

Every wait is a bounded poll; daemons run on ipc:// in pytest's tmp_path
and are stopped (exit 0, no sanitizer report) at the end of each test.
"""
import resource

import pytest
import zmq

from test_hostile import P, envelope, next_reply, read_replies
from test_hostile import jobqd  # noqa: F401 (the fixture)

DELAY0 = {"op": "test.delay", "args": {"duration": 0}}


def on_loop(d):
    return d.call("stats")["requests_on_loop"]


def served_on_loop(d, method, **args):
    """The reply to one request, and whether the loop served it (a stats
    request in between is counted too: one more)."""
    before = on_loop(d)
    rep = d.request(method, **args)
    return rep, on_loop(d) - before - 1 == 1


def test_which_requests_the_loop_serves(jobqd):
    d = jobqd("--max-running", "1")
    blocker = d.submit({"op": "test.delay", "args": {"duration": 60}})
    d.wait_status([blocker], ("running",))
    jid = d.submit(DELAY0)  # queued behind the blocker
    served = {
        "ping": ("ping", {}),
        "list_fields": ("list_fields", {}),
        "list_opcodes": ("list_opcodes", {}),
        "stats": ("stats", {}),
        "query_nodes (no cluster: refused)": ("query_nodes", {}),
        "small submit_job": ("submit_job", {"ops": [DELAY0]}),
        "query_jobs by a few ids": ("query_jobs", {"ids": [blocker, jid],
                                                   "fields": ["id", "status", "opstatus"]}),
        "change_job_priority": ("change_job_priority", {"id": jid, "priority": 10}),
        "cancel_job": ("cancel_job", {"id": jid}),
        "cancel_job of no job": ("cancel_job", {"id": 10**6}),
        "set_drain_flag": ("set_drain_flag", {"flag": False}),
        "unknown method": ("no_such_method", {}),
    }
    for what, (method, args) in served.items():
        rep, here = served_on_loop(d, method, **args)
        assert here, (what, rep)
    big_ops = [dict(DELAY0, priority=0) for _ in range(33)]  # over 32 opcodes
    handed = {
        "wait_for_job_change": ("wait_for_job_change",
                                {"id": blocker, "fields": ["status"], "prev_job_info": None,
                                 "prev_log_serial": 0, "timeout": 0}),
        "events_since": ("events_since", {"after_seq": 0}),
        "submit_many_jobs": ("submit_many_jobs", {"jobs": [[DELAY0]]}),
        "a listing": ("query_jobs", {}),
        "a query with the log": ("query_jobs", {"ids": [blocker], "fields": ["id", "oplog"]}),
        "a query of an archived or unknown job": ("query_jobs", {"ids": [10**6]}),
        "a query of archived jobs": ("query_jobs", {"ids": [blocker], "archived": True}),
        "more than 8 ids": ("query_jobs", {"ids": [blocker] * 9}),
        "a submission of 33 opcodes": ("submit_job", {"ops": big_ops}),
        "a body over 4 KiB": ("submit_job", {"ops": [{"op": "test.log",
                                                       "args": {"messages": ["x" * 5000]}}]}),
        "archive_job": ("archive_job", {"id": 10**6}),
    }
    for what, (method, args) in handed.items():
        rep, here = served_on_loop(d, method, **args)
        assert not here, (what, rep)
    # Both kinds of answer are the same answers: the cancel went through.
    assert d.rows([jid])[0]["status"] == "canceled"


def test_bad_bodies_get_the_same_answers_on_the_loop(jobqd):
    d = jobqd("--max-request-bytes", "1024")
    st0 = d.call("stats")
    on0 = st0["requests_on_loop"]
    # A map header that declares more entries than there are.
    rep = d.exchange(envelope(b"\x8f", rid=41))
    assert rep["id"] == 41 and rep["error"]["code"] == "Malformed", rep
    # Not UTF-8.
    rep = d.exchange(envelope(b"\x81\xa2\xff\xfe\x01", rid=42))
    assert rep["id"] == 42 and rep["error"]["code"] == "BadArgument", rep
    # Over --max-request-bytes (but small enough for the loop to look at).
    body = P({"v": 1, "id": 43, "method": "submit_job",
              "args": {"ops": [{"op": "test.log", "args": {"messages": ["y" * 1500]}}]}})
    assert 1024 < len(body) <= 4096
    rep = d.exchange(body)
    assert rep["id"] == 43 and rep["error"]["code"] == "TooLarge", rep
    # Another version, no method.
    rep = d.exchange(P({"v": 9, "id": 44, "method": "ping"}))
    assert rep["id"] == 44 and rep["error"]["code"] == "VersionMismatch", rep
    rep = d.exchange(P({"v": 1, "id": 45}))
    assert rep["id"] == 45 and rep["error"]["code"] == "Malformed", rep
    # Arguments of the wrong type, to methods the loop serves.
    rep = d.exchange(P({"v": 1, "id": 46, "method": "cancel_job", "args": {"id": "7"}}))
    assert rep["id"] == 46 and rep["error"]["code"] == "BadArgument", rep
    rep = d.exchange(P({"v": 1, "id": 47, "method": "submit_job",
                        "args": {"ops": [{"op": "no.such.op"}]}}))
    assert rep["id"] == 47 and rep["error"]["code"] == "UnknownOpcode", rep
    st = d.call("stats")
    # All seven were answered by the loop (and the first stats call).
    assert st["requests_on_loop"] - on0 == 7 + 1, (on0, st["requests_on_loop"])
    for code, n in (("Malformed", 2), ("BadArgument", 2), ("TooLarge", 1),
                    ("VersionMismatch", 1), ("UnknownOpcode", 1)):
        assert st["errors"][code] - st0["errors"][code] == n, code
    assert st["too_large"] - st0["too_large"] == 1
    assert st["submitted"] == st0["submitted"] == 0


def test_roles_hold_on_the_loop(jobqd):
    d = jobqd("--ipc-role", "read")
    on0 = on_loop(d)
    denied0 = d.call("stats")["errors"]["PermissionDenied"]
    for method, args in (("submit_job", {"ops": [DELAY0]}), ("cancel_job", {"id": 1}),
                         ("change_job_priority", {"id": 1, "priority": 10})):
        code, message = d.error(method, **args)
        assert code == "PermissionDenied" and "needs role submit" in message, (method, message)
    assert d.call("ping")["protocol"] == 1
    st = d.call("stats")
    # 2 stats calls, 3 refusals, a ping: all on the loop.
    assert st["requests_on_loop"] - on0 == 6
    assert st["errors"]["PermissionDenied"] - denied0 == 3
    assert st["submitted"] == 0 and st["live_jobs"] == 0


def test_a_submission_is_answered_only_once_committed(jobqd):
    """RLIMIT_FSIZE stands in for a disk that fills. Small submissions (the
    loop's) go on until a commit fails: the answer held for that commit is
    StoreFailed "not saved" — it was not sent before the commit — and every
    job that was answered with an id is there after a restart."""
    limit = 1 << 20

    def small_files():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))
    # Nothing runs (the blocker holds the only slot): the only records are
    # the submissions', so the first commit to fail is one of them.
    d = jobqd("--max-running", "1", preexec_fn=small_files)
    blocker = d.submit({"op": "test.delay", "args": {"duration": 120}})
    d.wait_status([blocker], ("running",))
    on0 = on_loop(d)
    job = {"op": "test.log", "args": {"messages": ["z" * 3000]}}
    assert len(P({"v": 1, "id": 10**6, "method": "submit_job", "args": {"ops": [job]}})) < 4096
    acked, failed = [], None
    for _ in range(2000):
        rep = d.request("submit_job", ops=[job])
        if not rep["ok"]:
            failed = rep["error"]
            break
        acked.append(rep["result"])
    assert failed is not None, "the store never filled"
    assert failed["code"] == "StoreFailed" and "not saved" in failed["message"], failed
    # Each of them was served on the loop (and the stats call before them).
    assert on_loop(d) - on0 == len(acked) + 1 + 1
    d.wait(lambda: d.call("stats")["store"]["failing"], "the store to say it fails")
    d.proc.kill()
    d.proc.wait()
    d.crash_reported = True
    d.log.close()
    d2 = jobqd(name="data")  # the same data directory, room again
    rows = d2.rows(acked, ["id", "status"])
    assert [r["id"] for r in rows] == acked
    assert all(r["status"] is not None for r in rows), [r for r in rows if r["status"] is None]


def test_a_connection_over_its_limit_is_busy_on_the_loop_too(jobqd):
    """Pings are answered at once, but an answer the connection cannot take
    (it does not read) waits in the daemon and still counts as unanswered:
    past --max-client-requests the loop answers Busy, and once read every
    request has had exactly one answer."""
    d = jobqd("--max-client-requests", "50")
    s = d.dealer({zmq.SNDHWM: 100000, zmq.RCVHWM: 10})
    st0 = d.call("stats")
    # More answers than the connection's buffers hold (ZeroMQ's 1,000 and
    # the kernel's): the rest wait in the daemon.
    n = 5000

    def handled(st):
        return (st["requests"]["ping"] - st0["requests"]["ping"]
                + st["errors"]["Busy"] - st0["errors"]["Busy"])
    # One at a time, each read by the daemon before the next is sent: each
    # is alone in its turn of the loop, which then serves it itself.
    for i in range(1, n + 1):
        s.send(P({"v": 1, "id": i, "method": "ping"}))
        d.wait(lambda: handled(d.call("stats")) >= i, "jobqd to read ping %d" % i)
    st = d.call("stats")
    busy = st["errors"]["Busy"] - st0["errors"]["Busy"]
    assert busy > 0, st["errors"]
    assert st["connections"]["replies_waiting"] >= 50, st["connections"]
    # The requests that reached their method (these pings, and the pings and
    # stats calls that paced them) the loop served itself, but for a few a
    # very slow daemon (a sanitizer's) handed on past its 32 a turn: fewer
    # than the limit, so the loop's own answers are what made it Busy.
    reached = sum(st["requests"][m] - st0["requests"][m] for m in st["requests"])
    assert reached >= n - busy
    assert reached - (st["requests_on_loop"] - st0["requests_on_loop"]) < 50
    got = read_replies(s, n, 60)
    assert sorted(got) == list(range(1, n + 1))
    assert sum(1 for r in got.values() if not r["ok"]) == busy
    assert all(r["error"]["code"] == "Busy" for r in got.values() if not r["ok"])
    assert not s.poll(100)
    # Every answer read: the connection has its slots back.
    s.send(P({"v": 1, "id": n + 1, "method": "ping"}))
    assert next_reply(s)["ok"]


def test_a_cluster_follower_answers_not_leader_on_the_loop():
    """The leader check comes before the method runs, on the loop as in a
    handler: a follower refuses what it does not serve, naming the leader,
    and nothing is made anywhere."""
    from cluster_harness import Cluster, Failed
    c = Cluster(insecure=True)
    try:
        c.start(2)
        leader = c.wait_leader()
        follower = next(n for n in c.nodes if n is not leader)
        on0 = follower.call("stats")["requests_on_loop"]
        for method, args in (("submit_job", {"ops": [DELAY0]}), ("cancel_job", {"id": 1}),
                             ("change_job_priority", {"id": 1, "priority": 10}),
                             ("query_jobs", {"ids": [1]})):
            with pytest.raises(Failed) as e:
                follower.call(method, **args)
            assert e.value.code == "NotLeader", (method, e.value.error)
            assert e.value.error["leader"]["endpoints"] == [leader.endpoint], e.value.error
        # What a follower serves, it serves on the loop too.
        assert follower.call("ping")["cluster"]["state"] == "follower"
        assert len(follower.call("query_nodes")) == 2
        # The first stats call, four refusals, ping, query_nodes.
        assert follower.call("stats")["requests_on_loop"] - on0 == 1 + 4 + 2
        assert leader.call("query_jobs")["rows"] == []
    finally:
        c.close()
