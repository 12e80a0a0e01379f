"""End-to-end tests of the CLI tools built on the event stream — jobq
watch (over the stream, with --poll, and falling back when the stream is
unusable), jobq monitor (--events, --json, the table, --count,
--duration, --batched) and jobq submit --wait — against a real jobqd.

Run: /usr/bin/python3 -m pytest tests/python/test_events_cli.py
Binaries as in test_cli.py ($JOBQ_BUILD_DIR, default /work/main/build).

No fixed sleeps: a test that must wait for a tool to be ready reads the
tool's first output line (monitor prints its snapshot first; watch prints
the job's status first), and every other wait is a bounded polling loop.
"""
import json
import os
import re
import subprocess
import threading
import time

import pytest

from test_cli import JOBQ, Daemon, watch_lines

FINAL = ("success", "error", "canceled")


@pytest.fixture
def daemon(tmp_path):
    d = Daemon(tmp_path)
    yield d
    d.stop()


def popen(daemon, *args):
    return subprocess.Popen([JOBQ, "-s", daemon.endpoint, *map(str, args)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def read_line(proc, timeout=15):
    """One line of proc's stdout within timeout (a reader thread: readline
    itself cannot time out)."""
    box = []
    t = threading.Thread(target=lambda: box.append(proc.stdout.readline()), daemon=True)
    t.start()
    t.join(timeout)
    assert box, "no output line within %s s" % timeout
    return box[0]


# ---------------------------------------------------------------- watch

@pytest.mark.parametrize("mode", [[], ["--poll"]])
def test_watch_prints_logs_and_statuses(daemon, mode):
    job = daemon.submit("test.delay", "duration=0.05", "repeat=4")
    w = daemon.jobq("watch", job, *mode)
    assert w.returncode == 0, w.stderr
    lines = watch_lines(w.stdout)
    logs = [l for l in lines if not l.startswith("status: ")]
    assert len(logs) == 4, w.stdout
    for i, line in enumerate(logs):
        assert re.fullmatch(r"\S+ Test delay iteration %d/3" % i, line), line
    assert lines[-1] == "status: success"
    statuses = [l for l in lines if l.startswith("status: ")]
    assert len(statuses) == len(set(statuses))
    # Elapsed times never go backwards.
    el = [float(re.match(r"\[\+(\d+\.\d+)s\]", l).group(1)) for l in w.stdout.splitlines()]
    assert el == sorted(el)
    wj = daemon.jobq("--json", "watch", job, *mode)
    objs = [json.loads(l) for l in wj.stdout.splitlines()]
    assert [o["log"][0] for o in objs if "log" in o] == [1, 2, 3, 4]
    assert objs[-1]["status"] == "success"


@pytest.mark.parametrize("mode", [[], ["--poll"]])
def test_watch_live_job_and_exit_codes(daemon, mode):
    # A job watched from before it starts logging: entries arrive live.
    blocker = daemon.submit("test.delay", "duration=60")
    daemon.wait_status(blocker, {"running"})
    job = daemon.submit("test.delay", "duration=0.05", "repeat=3", "--depends", blocker)
    w = popen(daemon, "watch", job, *mode)
    first = read_line(w)
    assert first.rstrip().endswith("status: waiting") or \
        first.rstrip().endswith("status: queued"), first
    daemon.ok("cancel", blocker)          # a dependency canceled cancels the job
    out, err = w.communicate(timeout=15)
    assert w.returncode == 1, err
    assert watch_lines(out)[-1] == "status: canceled"
    # error → 1, a running job canceled → 1, not found → 2.
    bad = daemon.submit("test.log", 'messages=["x"]', "fail=true")
    p = daemon.jobq("watch", bad, *mode)
    assert p.returncode == 1 and watch_lines(p.stdout)[-2:] == [
        watch_lines(p.stdout)[-2], "status: error"]
    assert any(l.endswith(" x") for l in watch_lines(p.stdout))
    long = daemon.submit("test.delay", "duration=60")
    daemon.wait_status(long, {"running"})
    w = popen(daemon, "watch", long, *mode)
    assert read_line(w).rstrip().endswith("status: running")
    daemon.ok("cancel", long)
    out, err = w.communicate(timeout=15)
    assert w.returncode == 1, err
    assert watch_lines(out)[-1] == "status: canceled"
    p = daemon.jobq("watch", 999999, *mode)
    assert p.returncode == 2
    assert p.stderr.strip() == "jobq: watch: job 999999 not found"


def test_watch_falls_back_without_events_socket(daemon):
    """No events socket file: watch uses wait_for_job_change, same output."""
    os.unlink(os.path.join(str(daemon.data_dir), "events.sock"))
    job = daemon.submit("test.delay", "duration=0.05", "repeat=2")
    w = daemon.jobq("watch", job)
    assert w.returncode == 0, w.stderr
    lines = watch_lines(w.stdout)
    assert len([l for l in lines if "Test delay iteration" in l]) == 2
    assert lines[-1] == "status: success"


def test_watch_no_daemon(tmp_path):
    p = subprocess.run([JOBQ, "-s", f"ipc://{tmp_path}/none.sock", "watch", "1"],
                       capture_output=True, text=True, timeout=30)
    assert p.returncode == 3
    assert "no socket file" in p.stderr


# ---------------------------------------------------------------- submit --wait

@pytest.mark.parametrize("mode", [[], ["--poll"]])
def test_submit_wait(daemon, mode):
    p = daemon.jobq("submit", "test.log", 'messages=["hello"]', "--wait", *mode)
    assert p.returncode == 0, p.stderr
    first, *rest = p.stdout.splitlines()
    job = int(first)                      # the id first, alone
    lines = watch_lines("\n".join(rest))
    assert any(l.endswith(" hello") for l in lines) and lines[-1] == "status: success"
    assert daemon.job(job)["status"] == "success"
    p = daemon.jobq("submit", "test.delay", "duration=0", "fail=true", "-w", *mode)
    assert p.returncode == 1
    assert watch_lines("\n".join(p.stdout.splitlines()[1:]))[-1] == "status: error"
    # Refused submission: watch's "other failure", nothing on stdout.
    p = daemon.jobq("submit", "no.such.op", "--wait", *mode)
    assert p.returncode == 2 and p.stdout == ""
    assert "UnknownOpcode" in p.stderr
    p = daemon.jobq("--json", "submit", "test.delay", "duration=0", "--wait", *mode)
    first, *rest = p.stdout.splitlines()
    assert p.returncode == 0 and int(first) > 0
    assert json.loads(rest[-1])["status"] == "success"
    assert daemon.jobq("submit", "test.delay", "duration=0", "--poll").returncode == 2


# ---------------------------------------------------------------- monitor

def start_monitor(daemon, *args):
    """monitor --json with args; returns (proc, first event): the first
    line is the snapshot, so once it is read the subscription is active
    and every later change will be delivered."""
    m = popen(daemon, "--json", "monitor", *args)
    first = json.loads(read_line(m))
    assert first["type"] == "resync" and first["reason"] == "start", first
    assert first["fields"][:2] == ["id", "change_serial"]
    return m, first


@pytest.mark.parametrize("mode", [[], ["--batched"]])
def test_monitor_json_events_exactly_once(daemon, mode):
    before = daemon.submit("test.delay", "duration=0")
    daemon.wait_status(before, {"success"})
    m, snap = start_monitor(daemon, *mode)
    assert [r[0] for r in snap["rows"]] == [before]
    assert snap["rows"][0][2] == "success"
    jobs = [daemon.submit("test.delay", "duration=0.02", "repeat=3") for _ in range(4)]
    jobs.append(daemon.submit("test.log", 'messages=["a","b","c"]', "fail=true"))
    events, final = [], {}
    deadline = time.monotonic() + 30
    while len(final) < len(jobs):
        assert time.monotonic() < deadline, (final, events[-3:])
        ev = json.loads(read_line(m))
        assert ev["type"] == "change", ev
        events.append(ev)
        if ev["change"]["status"] in FINAL:
            final[ev["job"]] = ev["change"]["status"]
    m.terminate()
    m.communicate(timeout=10)
    assert final == {**{j: "success" for j in jobs[:4]}, jobs[4]: "error"}
    # Every job only from its submission on, serials 1, 2, 3... exactly once.
    for j in jobs:
        mine = [e for e in events if e["job"] == j]
        assert [e["serial"] for e in mine] == list(range(1, len(mine) + 1))
        assert mine[0]["kind"] == "submit" and mine[0]["change"]["input"][0]["op"]
        logs = [entry[0] for e in mine for entry in e["change"]["log"]]
        assert logs == list(range(1, len(logs) + 1)) and len(logs) == 3
    # All-jobs stream: seq contiguous after the snapshot, nothing recovered
    # on an idle loopback daemon, the convenience fields agree.
    assert [e["seq"] for e in events] == list(range(snap["seq"] + 1,
                                                    snap["seq"] + 1 + len(events)))
    assert all(e["epoch"] == snap["epoch"] and e["serial"] == e["change"]["serial"]
               and e["job"] == e["change"]["job"] for e in events)


def test_monitor_count_and_duration(daemon):
    m, _ = start_monitor(daemon, "--count", 3)
    daemon.submit("test.delay", "duration=0", "repeat=2")
    out, err = m.communicate(timeout=15)
    assert m.returncode == 0, err
    evs = [json.loads(l) for l in out.splitlines()]
    assert len(evs) == 3 and [e["serial"] for e in evs] == [1, 2, 3]
    t0 = time.monotonic()
    p = daemon.jobq("monitor", "--events", "--duration", "0.5")
    assert p.returncode == 0, p.stderr
    assert time.monotonic() - t0 < 10
    lines = p.stdout.splitlines()
    assert re.fullmatch(r"\S+ resync start seq=\d+ epoch=\d+ jobs=1", lines[0]), lines
    assert len(lines) == 1


def test_monitor_events_text(daemon):
    # test.log with one message: submit, waiting, running, the log, success.
    m = popen(daemon, "monitor", "--events", "-n", 5)
    assert " resync start " in read_line(m)
    job = daemon.submit("test.log", 'messages=["one"]')
    out, err = m.communicate(timeout=15)
    assert m.returncode == 0, err
    lines = out.splitlines()
    assert len(lines) == 5
    assert re.search(rf" seq=\d+ job={job} serial=1 submit queued op0=queued$", lines[0]), lines
    assert any(re.search(rf"job={job} serial=\d+ update running log1=\"one\"$", l) for l in lines)


def test_monitor_table_not_a_tty(daemon):
    done = daemon.submit("test.delay", "duration=0", "fail=true")
    daemon.wait_status(done, {"error"})
    run = daemon.submit("test.delay", "duration=60")
    daemon.wait_status(run, {"running"})
    p = daemon.jobq("monitor", "--duration", "1.2")
    assert p.returncode == 0, p.stderr
    assert "\033[" not in p.stdout              # no ANSI when not a terminal
    tables = p.stdout.split("\n\njobq monitor ")   # a blank line between tables
    assert len(tables) >= 2                     # one per second, and the last
    last = tables[-1]
    assert re.search(r"^jobs 2:  queued 0  waiting 0  canceling 0  running 1  "
                     r"canceled 0  success 0  error 1$", last, re.M), last
    assert re.search(rf"^{run} +running +\S+ +test\.delay\(60\)", last, re.M), last
    assert re.search(rf"^{done} +error +\S+ +test\.delay\(0\)", last, re.M), last
    daemon.ok("cancel", run)


def test_monitor_usage():
    for argv in (["monitor", "--count", "0"], ["monitor", "--duration", "x"],
                 ["monitor", "extra"], ["watch", "1", "--bogus"]):
        p = subprocess.run([JOBQ, *argv], capture_output=True, text=True, timeout=30)
        assert p.returncode == 2, argv
