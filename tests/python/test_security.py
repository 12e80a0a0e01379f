"""Security: roles, job ownership and CURVE keys (docs/security.md).

Each test starts its own jobqd in a temp dir; TCP only on 127.0.0.1.
Step by step: over ipc the role is --ipc-role and the owner the caller's
uid; a request beyond the role is PermissionDenied and changes nothing; a
submitter may touch only its own jobs; refusals are counted in stats.
"""
import os
import subprocess
import sys

import pytest

from test_cli import JOBQ, JOBQD, Daemon, run

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "clients", "python"))
import jobq  # noqa: E402

JOB = [{"op": "test.delay", "args": {"duration": 30}}]


@pytest.fixture
def make_daemon(tmp_path):
    started = []

    def make(*extra, sub="d"):
        (tmp_path / sub).mkdir()
        d = Daemon(tmp_path / sub, *extra)
        started.append(d)
        return d

    yield make
    for d in started:
        d.stop()


def test_ipc_submit_role_cannot_drain_or_shut_down(make_daemon):
    d = make_daemon("--ipc-role", "submit")
    with jobq.Client(d.endpoint) as c:
        job = c.submit_job(JOB)
        for call in (lambda: c.set_drain_flag(True), lambda: c.shutdown(),
                     lambda: c.auto_archive_jobs(0, 1.0)):
            with pytest.raises(jobq.PermissionDeniedError) as e:
                call()
            assert e.value.code == "PermissionDenied"
        assert c.stats()["drained"] is False
        assert c.stats()["errors"]["PermissionDenied"] == 3
        # its own job it may cancel
        assert c.cancel_job(job)[0] is True
    p = d.jobq("drain", "on")
    assert p.returncode == 1 and "PermissionDenied" in p.stderr, p.stderr


def test_ipc_read_role_cannot_submit(make_daemon):
    d = make_daemon("--ipc-role", "read")
    with jobq.Client(d.endpoint) as c:
        with pytest.raises(jobq.PermissionDeniedError):
            c.submit_job(JOB)
        assert c.query_jobs(None, ["id"])["rows"] == []
        assert c.ping()
    p = d.jobq("submit", "test.delay")
    assert p.returncode == 1 and "PermissionDenied" in p.stderr


def test_owner_recorded_and_shown(make_daemon):
    d = make_daemon()
    job = d.submit("test.delay", "duration=0")
    me = "uid:%d" % os.getuid()
    assert d.job(job)["owner"] == me
    assert f"  Owner: {me}\n" in d.ok("info", job)
    assert me in d.ok("list", "-o", "id,owner")
    with jobq.Client(d.endpoint) as c:
        assert "owner" in [f["name"] for f in c.list_fields()]


def test_owner_survives_a_restart(tmp_path):
    (tmp_path / "d").mkdir()
    d = Daemon(tmp_path / "d")
    job = d.submit("test.delay", "duration=0")
    d.stop()
    d2 = Daemon.__new__(Daemon)
    # the same data directory again
    import time
    d2.data_dir = tmp_path / "d" / "data"
    d2.endpoint = f"ipc://{d2.data_dir}/jobq.sock"
    d2.log = open(tmp_path / "d2.log", "w+")
    d2.proc = subprocess.Popen([JOBQD, "--data-dir", str(d2.data_dir)], stdout=d2.log,
                               stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 15
        while run("ping", "-t", "0.5", endpoint=d2.endpoint).returncode != 0:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert d2.job(job)["owner"] == "uid:%d" % os.getuid()
    finally:
        d2.stop()


def test_bad_ipc_role_is_a_usage_error(tmp_path):
    p = subprocess.run([JOBQD, "--data-dir", str(tmp_path / "x"), "--ipc-role", "worker"],
                       capture_output=True, text=True, timeout=10)
    assert p.returncode == 2 and "--ipc-role" in p.stderr
    assert os.access(JOBQ, os.X_OK)
