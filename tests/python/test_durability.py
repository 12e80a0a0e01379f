"""What a client sees is committed (docs/operations.md, "What a client
sees"; docs/protocol.md): end to end against a real jobqd.

Covers: kill -9 straight after a query or wait_for_job_change answer, in a
loop (20 crashes in each --sync mode): every state a client was shown is
back after the restart, never undone, and so is a job's absence from a
status-filtered listing; a full store refuses intake, starts
nothing it could not save, and comes back with every acknowledged job; a
disk that fills and frees again (RLIMIT_FSIZE standing in) stops intake
and resumes it by itself, the error naming the cause; a stored job whose
opcode this jobqd no longer knows does not keep it from starting and ends
`error` saying why; bytes flipped in data.mdb are found, never served, and
never crash or hang the daemon; an emptied or truncated data.mdb is
refused; ids continue right after the last acknowledged one after a crash;
the per-job log limit; Ganeti's priority rules (a parked job's change takes
effect, the same priority changes nothing); auto_archive's time budget;
graceful and immediate shutdown.

No sleeps wait for state: every wait is a bounded poll. The random delays
before kills are the load pattern, not waits.
"""
import os
import random
import resource
import time

import msgpack
import pytest

from test_store import FINAL, JobqError, Lmdb, data_dir, refused  # noqa: F401

MODES = ("always", "batch", "none")


def blocker_and_waiter(d):
    """A running 30 s job and a job queued behind it (--max-running 1)."""
    blocker = d.submit({"op": "test.delay", "args": {"duration": 30}})
    d.wait_opstatus(blocker, 0, "running")
    return blocker


# ---------------------------------------------------------------------------
# kill -9 right after an answer

SEEN_FIELDS = ["id", "status", "change_serial", "log_serial", "opstatus", "opresult"]
# Nothing of the log: such a reply waits only for the job's last change of
# something else (log entries since then do not hold it).
STATE_FIELDS = ["id", "status", "opstatus", "opresult"]


def assert_not_undone(seen, row):
    """A row shown before a crash against the same job after it."""
    jid = seen["id"]
    if "change_serial" in seen:
        assert row["change_serial"] >= seen["change_serial"], (jid, seen, row)
        assert row["log_serial"] >= seen["log_serial"], (jid, seen, row)
    if seen["status"] in FINAL:
        assert row["status"] == seen["status"], (jid, seen, row)
        assert row["opresult"] == seen["opresult"], (jid, seen, row)
    for i, st in enumerate(seen["opstatus"]):
        if st in FINAL:  # a finished opcode stays finished, as it was
            assert row["opstatus"][i] == st, (jid, i, seen, row)
            assert row["opresult"][i] == seen["opresult"][i], (jid, i, seen, row)


def poll_until_changed(d, jid, before, use_wait, deadline, fields=SEEN_FIELDS):
    """Ask about the job as fast as possible until an answer shows it
    changed; that answer, shown the moment the change was made, is the
    one most likely to be ahead of the store."""
    while time.monotonic() < deadline:
        if use_wait:  # the first check of a wait (timeout 0: never parks)
            res = d.call("wait_for_job_change", id=jid, fields=SEEN_FIELDS,
                         prev_job_info=[before[f] for f in SEEN_FIELDS],
                         prev_log_serial=before["log_serial"], timeout=0)
            if res == "nochange":
                continue
            row = dict(zip(SEEN_FIELDS, res[0]))
        else:
            row = d.job(jid, fields)
        if row != before:
            return row
    raise AssertionError("job %d did not change" % jid)


@pytest.mark.parametrize("mode", MODES)
def test_kill_9_after_an_answer_never_undoes_what_it_showed(data_dir, mode):
    rng = random.Random("seen-%s" % mode)
    seen = {}  # id → the row a client was shown just before a crash
    for rnd in range(20):
        d = data_dir("--sync", mode)
        for row in d.rows(sorted(seen), SEEN_FIELDS) if seen else []:
            assert_not_undone(seen[row["id"]], row)
        # A job that is about to change (log, then end): answers come back
        # as fast as the daemon makes them; the crash follows the first one
        # that shows a change.
        jid = d.submit({"op": "test.delay", "args": {"duration": rng.choice((0.01, 0.03)),
                                                     "repeat": 2, "fail": rnd % 3 == 0}})
        # Every third round asks for the state alone (no log fields).
        fields = STATE_FIELDS if rnd % 3 == 2 else SEEN_FIELDS
        row = d.job(jid, fields)
        deadline = time.monotonic() + 10
        target = rng.choice(("running", "log", "final"))
        while True:
            row = poll_until_changed(d, jid, row, rnd % 3 == 1, deadline, fields)
            if (target == "running" and row["status"] == "running") or \
               (target == "log" and row.get("log_serial", 0) > 0) or row["status"] in FINAL:
                break
        seen[jid] = row
        d.kill()  # straight after the answer
    d = data_dir("--sync", mode)
    for row in d.rows(sorted(seen), SEEN_FIELDS):
        assert_not_undone(seen[row["id"]], row)
    assert any(r["status"] in FINAL for r in seen.values())


def test_kill_9_after_a_listing_left_out_a_canceled_job(data_dir):
    """A listing of queued jobs that leaves out a job a cancel has just
    taken out of the queue shows that cancel: it is answered once the cancel
    is committed, so after a crash straight after it the job is canceled,
    not queued (and run) again."""
    left_out = []
    for rnd in range(12):
        d = data_dir("--sync", "always", "--max-running", "1")
        for jid in left_out:
            assert d.job(jid, ["id", "status"])["status"] == "canceled", (jid, left_out)
        blocker_and_waiter(d)
        jid = d.submit({"op": "test.log"})
        canceler = d.dealer()  # its answer is not waited for
        canceler.send(msgpack.packb({"v": 1, "id": 1, "method": "cancel_job",
                                     "args": {"id": jid}}))
        deadline = time.monotonic() + 10
        while any(r["id"] == jid for r in d.listing(status=["queued"])):
            assert time.monotonic() < deadline, "the cancel never took effect"
        canceler.close(0)
        left_out.append(jid)
        d.kill()  # straight after the answer
    d = data_dir("--sync", "always")
    for row in d.rows(left_out, ["id", "status"]):
        assert row["status"] == "canceled", (row, left_out)


# ---------------------------------------------------------------------------
# a store that cannot commit

def test_full_store_refuses_intake_runs_nothing_unsaved_and_recovers(data_dir):
    d = data_dir("--store-map-size", "1M")
    small = d.submit({"op": "test.log", "args": {"messages": ["fits"]}})
    d.wait_final([small])
    # A job too big for the store: its commit fails, it is answered
    # StoreFailed naming the cause, and it never starts.
    big = {"op": "test.log", "args": {"messages": ["x" * 4096] * 512}}  # 2 MiB
    with pytest.raises(JobqError) as e:
        d.submit(big)
    assert e.value.code == "StoreFailed", e.value
    assert "not saved" in str(e.value) and "--store-map-size" in str(e.value), e.value
    # From now on intake is refused at once: nothing is taken in that
    # cannot be saved.
    with pytest.raises(JobqError) as e:
        d.submit({"op": "test.log"})
    assert e.value.code == "StoreFailed" and "accepted again" in str(e.value), e.value
    st = d.call("stats")
    assert st["store"]["failing"] is True and st["store"]["failures"] >= 1, st["store"]
    assert st["running"] == 0 and st["jobs"]["queued"] == 1, st  # the big job: queued, never run
    # What was saved is shown; what was not, is not (a listing would show
    # the unsaved job: it is refused rather than answered).
    assert d.job(small, ["id", "status"])["status"] == "success"
    with pytest.raises(JobqError) as e:
        d.listing()
    assert e.value.code == "StoreFailed", e.value
    err = d.stop()
    assert "could not be saved" in err, err
    # Restarted with room: the acknowledged job is back, the other one
    # never existed, and intake works.
    d = data_dir("--store-map-size", "64M")
    assert d.listing(["id", "status"]) == [{"id": small, "status": "success"}]
    nxt = d.submit({"op": "test.log"})
    assert nxt > small
    d.wait_final([nxt])


def test_full_disk_stops_intake_and_resumes_by_itself(data_dir):
    """RLIMIT_FSIZE stands in for a disk that fills: writes past it fail
    (EFBIG; jobqd ignores SIGXFSZ), and raising it is space coming back."""
    limit = 1 << 20

    def small_files():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))
    d = data_dir(preexec_fn=small_files)
    acked = []
    payload = {"op": "test.log", "args": {"messages": ["y" * 2000] * 20}}
    failed = None
    for _ in range(400):
        try:
            acked.append(d.submit(payload))
        except JobqError as e:
            failed = e
            break
    assert failed is not None, "the store never filled"
    assert failed.code == "StoreFailed" and "size" in str(failed), failed
    with pytest.raises(JobqError) as e:
        d.submit({"op": "test.log"})
    assert e.value.code == "StoreFailed", e.value
    assert d.call("stats")["store"]["failing"] is True
    # Space comes back: the store catches up by itself, intake resumes.
    resource.prlimit(d.proc.pid, resource.RLIMIT_FSIZE,
                     (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
    d.wait(lambda: not d.call("stats")["store"]["failing"], "the store to recover", 30)
    jid = d.wait(lambda: submit_or_none(d), "intake to resume", 30)
    d.wait_final(acked + [jid], timeout=60)
    assert "commits succeed again" in d.stderr()
    d.kill()
    d = data_dir()
    rows = d.rows(acked + [jid], ["id", "status"])
    assert all(r["status"] == "success" for r in rows), rows[:3]


def submit_or_none(d):
    try:
        return d.submit({"op": "test.log"})
    except JobqError as e:
        assert e.code in ("StoreFailed", "Busy"), e
        return None


# ---------------------------------------------------------------------------
# what is stored and how it is read back

class LmdbRW(Lmdb):
    """Lmdb with a read: one value of one database."""

    def get(self, path, db, key, map_size=256 << 20):
        import ctypes
        lib, env, txn, dbi = self.lib, ctypes.c_void_p(), ctypes.c_void_p(), ctypes.c_uint()
        self.ok(lib.mdb_env_create(ctypes.byref(env)))
        try:
            self.ok(lib.mdb_env_set_maxdbs(env, 8))
            self.ok(lib.mdb_env_set_mapsize(env, ctypes.c_size_t(map_size)))
            self.ok(lib.mdb_env_open(env, path.encode(), 0x20000, 0o640))  # MDB_RDONLY
            self.ok(lib.mdb_txn_begin(env, None, 0x20000, ctypes.byref(txn)))
            self.ok(lib.mdb_dbi_open(txn, db.encode(), 0, ctypes.byref(dbi)))
            kb = ctypes.create_string_buffer(key, len(key))
            k = self.Val(len(key), ctypes.cast(kb, ctypes.c_void_p))
            v = self.Val()
            self.ok(lib.mdb_get(txn, dbi, ctypes.byref(k), ctypes.byref(v)))
            out = ctypes.string_at(v.data, v.size)
            lib.mdb_txn_abort(txn)
            return out
        finally:
            lib.mdb_env_close(env)


def test_stored_job_with_an_opcode_gone_does_not_block_start_up(data_dir):
    lmdb = LmdbRW()
    d = data_dir("--max-running", "1")
    blocker = blocker_and_waiter(d)
    queued = d.submit({"op": "test.log", "args": {"messages": ["a"]}},
                      {"op": "test.log", "args": {"messages": ["b"]}})
    finished = d.submit({"op": "test.log"})
    d.call("cancel_job", id=blocker)
    d.wait_final([blocker, queued, finished])
    later = d.submit({"op": "test.delay", "args": {"duration": 30}})  # blocks the next one
    d.wait_opstatus(later, 0, "running")
    gone = d.submit({"op": "test.log"}, {"op": "test.log"})
    d.wait_committed()
    d.stop()
    store = os.path.join(data_dir.path, "store")
    # The stored job names an opcode this jobqd does not run (one that a
    # worker once declared, say): rename its second opcode.
    key = gone.to_bytes(8, "big")
    raw = lmdb.get(store, "jobs", key)
    status, job = raw[4], msgpack.unpackb(raw[5:], raw=False)
    # Queued and never changed, it is stored as its submit record (store
    # format 3), whose opcodes are its "input"; a changed job's are "ops".
    assert job.get("kind") == "submit", job
    job["input"][1]["op"] = "worker.gone"
    payload = bytes([status]) + msgpack.packb(job)
    lmdb.put(store, "jobs", [(key, Lmdb.checked(key, payload))])
    # It starts, and the job fails when it reaches the opcode, saying so.
    d = data_dir()
    d.wait_final([gone])
    row = d.job(gone, ["status", "opstatus", "opresult", "ops"])
    assert row["status"] == "error" and row["opstatus"] == ["success", "error"], row
    assert "worker.gone" in row["opresult"][1][1][0] and "not known" in row["opresult"][1][1][0], row
    assert row["ops"][1]["op"] == "worker.gone"


def flip_trial(data_dir, data, original, rng, expected):
    """One damaged copy of the store: refused with a message, or started
    and serving exactly what it served before. Never a crash or a hang."""
    with open(data, "r+b") as f:
        f.write(original)
        size = len(original)
        for _ in range(rng.randint(1, 4)):
            pos = rng.randrange(size)
            f.seek(pos)
            byte = original[pos] ^ (1 << rng.randrange(8))
            f.write(bytes([byte]))
    try:
        d = data_dir()
    except AssertionError as e:
        msg = str(e)
        assert "jobqd exited" in msg, msg
        assert "damaged" in msg or "truncated" in msg or "checksum" in msg or "store" in msg, msg
        # The check runs in a child process so that a page damaged badly
        # enough to crash LMDB crashes the child, never jobqd: jobqd itself
        # must exit with a code, not die of a signal (a negative code).
        assert "Sanitizer" not in msg and "jobqd exited with -" not in msg, msg
        if "Segmentation" in msg:
            assert "reading it crashed" in msg, msg
        return "refused"
    rows = d.rows(sorted(expected), ["id", "status", "opresult", "oplog", "ops"])
    got = {r["id"]: r for r in rows}
    assert got == expected, "a damaged store served different data"
    d.stop()
    return "served"


def test_damaged_store_is_found_never_served(data_dir):
    d = data_dir()
    ids = [d.submit({"op": "test.log", "args": {"messages": ["m%d-%d" % (k, i) for i in range(3)]}})
           for k in range(30)]
    d.wait_final(ids)
    d.call("archive_job", id=ids[0])
    d.wait_committed()
    expected = {r["id"]: r for r in d.rows(ids, ["id", "status", "opresult", "oplog", "ops"])}
    d.stop()
    data = os.path.join(data_dir.path, "store", "data.mdb")
    with open(data, "rb") as f:
        original = f.read()
    rng = random.Random("flips")
    outcomes = {"refused": 0, "served": 0}
    t0 = time.monotonic()
    trials = 0
    while trials < 120 and time.monotonic() - t0 < 60:
        outcomes[flip_trial(data_dir, data, original, rng, expected)] += 1
        trials += 1
    assert outcomes["refused"] > 0, outcomes
    print("byte flips: %d trials, %s" % (trials, outcomes))


def test_emptied_or_truncated_store_is_refused(data_dir):
    d = data_dir()
    jid = d.submit({"op": "test.log"})
    d.wait_final([jid])
    d.stop()
    data = os.path.join(data_dir.path, "store", "data.mdb")
    with open(data, "rb") as f:
        original = f.read()
    with open(data, "r+b") as f:
        f.truncate(len(original) // 2)
    rc, err = refused(data_dir.path)
    assert "truncated" in err, err
    with open(data, "r+b") as f:
        f.truncate(0)
    rc, err = refused(data_dir.path)
    assert "is empty" in err and "store.id" in err, err
    os.unlink(data)
    rc, err = refused(data_dir.path)
    assert "is missing" in err, err
    with open(data, "wb") as f:
        f.write(original)
    d = data_dir()
    assert d.job(jid, ["status"])["status"] == "success"


def test_ids_after_a_crash_continue_right_after_the_last_acknowledged(data_dir):
    d = data_dir()
    last = max(d.submit({"op": "test.log"}) for _ in range(5))
    d.kill()
    d = data_dir()
    assert d.submit({"op": "test.log"}) == last + 1


# ---------------------------------------------------------------------------
# logs, priorities, archive budget

def test_log_limit(data_dir):
    d = data_dir("--max-log-entries", "10")
    jid = d.submit({"op": "test.log", "args": {"messages": ["m%d" % i for i in range(25)]}})
    d.wait_final([jid])
    row = d.job(jid, ["status", "oplog", "log_serial"])
    assert row["status"] == "success", row
    msgs = [e[3] for e in row["oplog"][0]]
    assert len(msgs) == 10 and row["log_serial"] == 10, row
    assert msgs[:9] == ["m%d" % i for i in range(9)]
    assert "log limit of 10 entries" in msgs[9], msgs[9]


def test_a_job_with_100k_log_entries(data_dir):
    d = data_dir()
    jid = d.submit({"op": "test.delay", "args": {"duration": 0, "repeat": 100000}})
    d.wait_final([jid], timeout=120)
    row = d.job(jid, ["status", "log_serial"])
    assert row == {"status": "success", "log_serial": 100000}, row
    # The whole log comes back after a restart, in order.
    d.stop()
    d = data_dir()
    log = d.job(jid, ["oplog"])["oplog"][0]
    assert [e[0] for e in log] == list(range(1, 100001))


def test_priority_of_a_parked_job_takes_effect(data_dir):
    """A job parked on a dependency runs at the priority it has when the
    dependency finishes, not the one it parked with."""
    d = data_dir("--max-running", "2")
    dep = d.submit({"op": "test.delay", "args": {"duration": 30}})
    d.wait_opstatus(dep, 0, "running")
    parked = d.submit({"op": "test.log", "priority": 10,
                       "depends": [[dep, ["success", "error", "canceled"]]]})
    d.wait(lambda: d.call("stats")["dep_waiting"] == 1, "the job to park")
    other_blocker = d.submit({"op": "test.delay", "args": {"duration": 30}})
    d.wait_opstatus(other_blocker, 0, "running")
    other = d.submit({"op": "test.log"})  # priority 0: before 10, after -10
    assert d.call("change_job_priority", id=parked, priority=-10)[0] is True
    d.call("cancel_job", id=dep)  # one slot frees: the best queued job takes it
    d.wait_final([dep, parked])
    d.call("cancel_job", id=other_blocker)
    d.wait_final([other])
    rows = d.rows([parked, other], ["opexec"])
    assert rows[0]["opexec"][0] < rows[1]["opexec"][0], rows


def test_the_same_priority_changes_nothing(data_dir):
    d = data_dir("--max-running", "1")
    blocker = blocker_and_waiter(d)
    jid = d.submit({"op": "test.log"})
    before = d.job(jid, ["change_serial"])["change_serial"]
    commits = d.call("stats")["store"]["records"]
    r = d.call("change_job_priority", id=jid, priority=0)
    assert r[0] is True, r
    assert d.job(jid, ["change_serial"])["change_serial"] == before
    assert d.call("stats")["store"]["records"] == commits
    d.call("cancel_job", id=blocker)


def test_auto_archive_budget_zero_archives_nothing(data_dir):
    d = data_dir()
    ids = [d.submit({"op": "test.log"}) for _ in range(5)]
    d.wait_final(ids)
    assert d.call("auto_archive_jobs", age=-1, timeout=0) == [0, 5]
    assert d.call("auto_archive_jobs", age=-1, timeout=10) == [5, 0]


# ---------------------------------------------------------------------------
# stopping

def test_shutdown_lets_running_opcodes_finish_then_now_interrupts(data_dir):
    d = data_dir("--max-running", "2")
    quick = d.submit({"op": "test.delay", "args": {"duration": 0.5}},
                     {"op": "test.log", "args": {"messages": ["next opcode"]}})
    slow = d.submit({"op": "test.delay", "args": {"duration": 30}})
    queued = d.submit({"op": "test.log"})  # the running cap keeps it queued
    d.wait_opstatus(quick, 0, "running")
    d.wait_opstatus(slow, 0, "running")
    assert d.call("shutdown") is True
    # It still answers while the running opcodes finish; nothing new starts.
    d.wait_opstatus(quick, 0, "success")
    with pytest.raises(JobqError) as e:
        d.submit({"op": "test.log"})
    assert e.value.code == "ShuttingDown"
    rows = d.rows([quick, slow, queued], ["id", "status", "opstatus"])
    assert rows[0]["opstatus"] == ["success", "queued"], rows  # its next opcode waits
    assert rows[1]["status"] == "running" and rows[2]["status"] == "queued", rows
    assert d.call("shutdown", now=True) is True
    assert d.proc.wait(10) == 0
    err = d.stderr()
    assert "may finish their opcode" in err, err
    # After a restart: the slow job was interrupted; the others go on.
    d = data_dir()
    d.wait_final([quick, queued])
    rows = d.rows([quick, slow, queued], ["id", "status", "opresult"])
    assert [r["status"] for r in rows] == ["success", "error", "success"], rows
    assert "Interrupted by broker shutdown" in rows[1]["opresult"][0][1][0], rows


# ---------------------------------------------------------------------------
# what a parked wait costs

def rss_kb(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def test_parked_waits_do_not_copy_what_they_do_not_watch(data_dir):
    """A wait keeps a copy of the job to judge changes by; it holds only
    what the watched fields show. 200 waits on a job with 4 MB of arguments
    used to cost 800 MB."""
    d = data_dir("--max-running", "1")
    blocker = blocker_and_waiter(d)
    big = d.submit({"op": "test.log", "args": {"messages": ["z" * 4000] * 1000}})
    info = d.job(big, ["status"])
    before = rss_kb(d.proc.pid)
    sock = d.dealer()
    try:
        for k in range(200):
            sock.send(msgpack.packb({"v": 1, "id": 1000 + k, "method": "wait_for_job_change",
                                     "args": {"id": big, "fields": ["status"],
                                              "prev_job_info": [info["status"]],
                                              "prev_log_serial": 0, "timeout": 60}}))
        d.wait(lambda: d.call("stats")["waiters"] >= 200, "200 waits to park")
        grown_mb = (rss_kb(d.proc.pid) - before) / 1024
        assert grown_mb < 64, "200 parked waits grew the daemon by %.0f MB" % grown_mb
        # They still work: the change reaches them.
        d.call("cancel_job", id=big)
        answered = 0
        deadline = time.monotonic() + 20
        while answered < 200 and time.monotonic() < deadline:
            if sock.poll(200):
                rep = msgpack.unpackb(sock.recv(), raw=False)
                if not rep.get("keepalive"):
                    assert rep["ok"] and rep["result"][0] == ["canceled"], rep
                    answered += 1
        assert answered == 200
    finally:
        sock.close(0)
    d.call("cancel_job", id=blocker)
