"""Executors stay fair: an opcode that never waits (test.delay with duration
0 and a huge repeat) must not keep other jobs from starting, cancels from
arriving, or the daemon from stopping."""
import signal
import time

from test_events import Daemon, FINAL  # noqa: F401  (fixture helpers)


def test_zero_delay_opcodes_do_not_starve_the_executor():
    d = Daemon("--executors", "1", "--max-running", "100", "--shutdown-grace", "1")
    try:
        hogs = [d.call("submit_job", ops=[{"op": "test.delay",
                                           "args": {"duration": 0, "repeat": 100000}}])
                for _ in range(3)]
        job = d.call("submit_job", ops=[{"op": "test.log", "args": {"messages": ["hi"]}}])
        d.wait_final([job], timeout=10)
        assert d.call("query_jobs", ids=[job], fields=["status"])["rows"][0][0] == "success"
        # A cancel reaches a hog at once.
        d.call("cancel_job", id=hogs[0])
        d.wait_final([hogs[0]], timeout=10)
        # And the daemon stops promptly: the hogs get their grace second.
        t0 = time.monotonic()
        d.proc.send_signal(signal.SIGTERM)
        assert d.proc.wait(10) == 0
        assert time.monotonic() - t0 < 5
    finally:
        d.stop()
