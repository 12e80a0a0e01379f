"""py_bench.py: the Python side of jobq-bench's `python` workload (issue 10).

jobq-bench starts this script with /usr/bin/python3 and
PYTHONPATH=<repo>/clients/python, on a daemon it started itself, and reads
what it prints on stdout, one line at a time:

``start``
    the measured window begins (after the connection, a warm-up and, for
    ``cycle``, one job through the whole cycle);
``end``
    the window is over (the bench reads the daemon's CPU between the two);
``result {json}``
    the figures of the window, then the script exits.

Subcommands (docs/benchmarks.md, "Issue 10"):

``submit --mode single|batch|pipelined``
    one ``jobq.Client``: ``submit_job`` one job at a time, or
    ``submit_many_jobs`` of ``--batch`` jobs per call (one request), or
    ``submit_many_jobs`` of 8 x ``--batch`` jobs per call with
    ``batch_size=--batch`` (the client's pipelined path: 8 requests in
    flight). Jobs are one-opcode ``test.delay(0)``, as the C lines submit.
    A job counts once its call returned (it is committed).
``worker``
    a ``jobq.Worker`` of capacity 1 serving ``bench.noop``, whose result is
    its argument ``t``; runs until SIGTERM.
``cycle``
    the all-Python cycle: one thread submits ``bench.noop {t}`` with
    ``submit_job`` while fewer than ``--window`` jobs are in flight, another
    follows the event stream with a ``jobq.Subscriber`` and counts a job
    done when its ``update`` to ``success`` arrives (``t`` from the
    opcode's result gives the latency), as the bench's C watcher does.

``--profile`` (each subcommand) writes a cProfile summary to stderr at the
end: where the client's time goes. The profiler's clock is the thread's
CPU time (``time.thread_time``), so time spent waiting for the daemon does
not count; the profiler's own overhead does.
"""
from __future__ import annotations

import argparse
import cProfile
import io
import json
import pstats
import signal
import sys
import threading
import time
from typing import Any, Callable, Dict, List, Optional

import jobq
from jobq.worker import Assignment, Worker

NOOP_OP = "bench.noop"
#: The job the C submit lines send (pack_delay_job(0, 0) in jclient.c).
DELAY_JOB: List[Dict[str, Any]] = [{"op": "test.delay", "args": {"duration": 0}}]
#: Requests the client keeps in flight on its pipelined path (client.py's _BATCH_WINDOW).
PIPELINE_DEPTH = 8
WARM_UP = 0.5
DRAIN_SECONDS = 10.0


def say(line: str) -> None:
    """One line to the bench, at once."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def pct(values: List[float], p: float) -> float:
    """Percentile by nearest rank (as the C harness's samples_pct); NaN when empty."""
    if not values:
        return float("nan")
    s = sorted(values)
    k = max(0, min(len(s) - 1, int(round(p / 100.0 * len(s) + 0.5)) - 1))
    return s[k]


def profile_summary(prof: cProfile.Profile, title: str, limit: int = 25) -> None:
    """The functions that took the most time of their own, to stderr."""
    out = io.StringIO()
    st = pstats.Stats(prof, stream=out)
    st.sort_stats("tottime").print_stats(limit)
    sys.stderr.write("=== %s ===\n%s" % (title, out.getvalue()))


def run_submit(args: argparse.Namespace) -> int:
    """The submit lines: one client, one call at a time, for --seconds."""
    client = jobq.Client(args.endpoint, timeout=30.0)
    client.ping()  # the connection is up before the window
    batch = [DELAY_JOB] * args.batch
    piped = [DELAY_JOB] * (args.batch * PIPELINE_DEPTH)
    call: Callable[[], int]
    if args.mode == "single":
        def call() -> int:
            client.submit_job(DELAY_JOB)
            return 1
    elif args.mode == "batch":
        def call() -> int:
            r = client.submit_many_jobs(batch)
            return sum(1 for ok, _ in r if ok)
    else:
        def call() -> int:
            r = client.submit_many_jobs(piped, batch_size=args.batch)
            return sum(1 for ok, _ in r if ok)
    want = 1 if args.mode == "single" else len(batch) if args.mode == "batch" else len(piped)
    prof = cProfile.Profile(time.thread_time) if args.profile else None
    lat: List[float] = []
    jobs = calls = errors = 0
    say("start")
    t0 = time.monotonic()
    end = t0 + args.seconds
    if prof:
        prof.enable()
    while True:
        a = time.monotonic()
        if a >= end or (args.max_jobs and jobs >= args.max_jobs):
            break
        n = call()
        b = time.monotonic()
        if n != want:
            errors += 1
            break
        jobs += n
        calls += 1
        lat.append((b - a) * 1e3)
    t1 = time.monotonic()  # after the last reply, as the C lines
    if prof:
        prof.disable()
    say("end")
    say("result " + json.dumps({"jobs": jobs, "calls": calls, "errors": errors,
                                "seconds": t1 - t0, "per_s": jobs / (t1 - t0),
                                "p50_ms": pct(lat, 50), "p99_ms": pct(lat, 99)}))
    client.close()
    if prof:
        profile_summary(prof, "submit --mode %s, %d jobs in %d calls" % (args.mode, jobs, calls))
    return 1 if errors else 0


def run_worker(args: argparse.Namespace) -> int:
    """A capacity-1 worker serving bench.noop until SIGTERM."""
    w = Worker(args.endpoint, name=args.name, capacity=1)

    @w.opcode(NOOP_OP)
    def noop(a: Assignment) -> Any:
        return a.args.get("t")

    profs: List[cProfile.Profile] = []
    if args.profile:
        # Handler threads do their share (the result's encoding, the pipe
        # to the run thread): each is profiled on its own and merged below.
        orig = Worker._run_handler
        lock = threading.Lock()

        def profiled(self: Worker, a: Assignment, spec: Any) -> None:
            p = cProfile.Profile(time.thread_time)
            p.enable()
            try:
                orig(self, a, spec)
            finally:
                p.disable()
                with lock:
                    profs.append(p)
        setattr(Worker, "_run_handler", profiled)
    signal.signal(signal.SIGTERM, lambda *_: w.stop())
    main_prof = cProfile.Profile(time.thread_time) if args.profile else None
    if main_prof:
        main_prof.enable()
    w.run()
    if main_prof:
        main_prof.disable()
        profile_summary(main_prof, "worker %s: the run thread" % args.name)
        if profs:
            st = pstats.Stats(profs[0], stream=sys.stderr)
            for p in profs[1:]:
                st.add(p)
            sys.stderr.write("=== worker %s: %d handler threads ===\n" % (args.name, len(profs)))
            st.sort_stats("tottime").print_stats(20)
    return 0


def run_cycle(args: argparse.Namespace) -> int:
    """The all-Python cycle (see the module comment)."""
    client = jobq.Client(args.endpoint, timeout=30.0)
    sub = jobq.Subscriber(args.endpoint, timeout=30.0)
    room = threading.Semaphore(args.window)
    stop = threading.Event()
    done_t: List[float] = []
    done_lat: List[float] = []
    failed = [0]
    first = threading.Event()
    obs_prof = cProfile.Profile(time.thread_time) if args.profile else None
    sub_prof = cProfile.Profile(time.thread_time) if args.profile else None

    def observe() -> None:
        if obs_prof:
            obs_prof.enable()
        while not stop.is_set():
            ev = sub.next(timeout=0.1)
            if ev is None or ev.get("type") != "change":
                continue
            ch = ev.get("change") or {}
            if ch.get("kind") != "update":
                continue
            st = ch.get("status")
            if st == "success":
                now = time.monotonic()
                ops = ch.get("ops") or [{}]
                t = ops[0].get("result")
                if isinstance(t, float):
                    done_t.append(now)
                    done_lat.append(now - t)
                    room.release()
                    first.set()
            elif st in ("error", "canceled"):
                failed[0] += 1
                room.release()
        if obs_prof:
            obs_prof.disable()

    th = threading.Thread(target=observe, name="observer", daemon=True)
    th.start()
    # One job through the whole cycle: the stream and the workers answer.
    room.acquire()
    client.submit_job([{"op": NOOP_OP, "args": {"t": time.monotonic()}}])
    if not first.wait(10):
        stop.set()
        sys.stderr.write("py_bench: the first %s job was not seen done\n" % NOOP_OP)
        return 1
    submitted = 1
    started = time.monotonic()
    t0 = t1 = 0.0
    submit_ms: List[float] = []  # each submit_job call's wall time in the window
    if sub_prof:
        sub_prof.enable()
    while True:
        now = time.monotonic()
        if not t0 and now >= started + WARM_UP:
            say("start")
            t0 = now
        if t0 and now >= t0 + args.seconds:
            t1 = now
            say("end")
            break
        if not room.acquire(timeout=0.05):
            continue
        a = time.monotonic()
        client.submit_job([{"op": NOOP_OP, "args": {"t": a}}])
        if t0:
            submit_ms.append((time.monotonic() - a) * 1e3)
        submitted += 1
    if sub_prof:
        sub_prof.disable()
    deadline = time.monotonic() + DRAIN_SECONDS
    while len(done_t) + failed[0] < submitted and time.monotonic() < deadline:
        time.sleep(0.005)  # poll interval of the drain
    stop.set()
    th.join(1)
    inside = [lat * 1e3 for t, lat in zip(list(done_t), list(done_lat)) if t0 <= t < t1]
    lost = submitted - len(done_t) - failed[0]
    say("result " + json.dumps({"jobs": len(inside), "seconds": t1 - t0,
                                "per_s": len(inside) / (t1 - t0), "p50_ms": pct(inside, 50),
                                "p99_ms": pct(inside, 99), "errors": failed[0], "lost": lost,
                                "submitted": submitted, "submit_p50_ms": pct(submit_ms, 50),
                                "submit_p99_ms": pct(submit_ms, 99)}))
    sub.close()
    client.close()
    if sub_prof and obs_prof:
        profile_summary(sub_prof, "cycle: the submitting thread, %d jobs" % submitted)
        profile_summary(obs_prof, "cycle: the watching thread (Subscriber)")
    return 1 if lost or failed[0] else 0


def main(argv: Optional[List[str]] = None) -> int:
    """Parses the subcommand and runs it."""
    p = argparse.ArgumentParser(description="The Python side of jobq-bench's python workload.")
    sp = p.add_subparsers(dest="cmd", required=True)
    s = sp.add_parser("submit")
    s.add_argument("--endpoint", required=True)
    s.add_argument("--mode", choices=("single", "batch", "pipelined"), required=True)
    s.add_argument("--seconds", type=float, default=3.0)
    s.add_argument("--batch", type=int, default=1000)
    s.add_argument("--max-jobs", type=int, default=0, help="stop after this many (0: no cap)")
    s.add_argument("--profile", action="store_true")
    w = sp.add_parser("worker")
    w.add_argument("--endpoint", required=True)
    w.add_argument("--name", default="py-bench")
    w.add_argument("--profile", action="store_true")
    c = sp.add_parser("cycle")
    c.add_argument("--endpoint", required=True)
    c.add_argument("--seconds", type=float, default=3.0)
    c.add_argument("--window", type=int, default=64)
    c.add_argument("--profile", action="store_true")
    args = p.parse_args(argv)
    if args.cmd == "submit":
        return run_submit(args)
    if args.cmd == "worker":
        return run_worker(args)
    return run_cycle(args)


if __name__ == "__main__":
    # The bench reads stdout line by line; a closed pipe ends us quietly.
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    sys.exit(main())
