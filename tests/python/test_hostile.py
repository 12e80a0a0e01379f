"""jobqd against hostile, careless or merely unlucky clients, end to end
against a real daemon (proto/scan.c, broker/handlers.c, broker/loop.c,
broker/peers.c, broker/listeners.c, broker/publisher.c, broker/datadir.c;
docs/protocol.md "Envelope", "Error codes", query_jobs, Known weaknesses;
docs/operations.md on the data directory).

Why: the daemon is one process serving every client of the queue. A single
150-byte frame, a string of bad bytes, a client that pipelines without
reading, a flood of connections or a planted symlink must cost that one
client an error answer (or its connection), never the daemon its memory,
its other clients or its data. Each test fails if the defence it covers
were missing:

- declared lengths past the end of a frame are refused before msgpack-c
  reserves memory for them (Malformed, with the request's id), so the
  daemon's VmPeak does not move; nesting deeper than 32 and more than
  4 Mi objects are Malformed; requests over --max-request-bytes are
  TooLarge before they are unpacked, and far over it close the connection;
- a string that is not UTF-8 anywhere in a request is BadArgument and
  creates nothing;
- an opcode argument the opcode does not take is named; priorities and
  dependencies that cannot be right get their own codes; a field asked
  for twice is refused;
- query_jobs replies are bounded in bytes and page on (by after_id, or by
  asking for the ids not answered yet); a status filter over live and
  archived jobs pages through every match, never with an empty page;
- one connection cannot take more than --max-client-requests handler
  slots (the rest is answered Busy at once) nor park more than
  --max-client-waiters waits; a reader that is slow loses no reply;
- a connection flood under a small descriptor limit pauses accepting
  instead of killing the daemon, and accepting resumes;
- an oversized subscription closes that subscriber's connection and costs
  the daemon no memory;
- a data directory that is not trustworthy (writable by others or its
  group, a symlink, planted or hard-linked entries, a parent anyone may
  write) is refused before anything is opened there.

It also holds the tests for the bugs it found: error messages that cut a
quoted name inside a UTF-8 character, change_job_priority's error for
integers above INT64_MAX, Busy answers dropped for a slow reader, a burst
of ipc connects that made libzmq abort on EMFILE, and TCP listeners that
were never paused.

Some requests are built byte by byte (a map's header that lies about its
size, a str that is not UTF-8), and two tests speak ZMTP by hand over the
ipc socket (RawPeer): to put a burst of requests into a single write, and
to send a 1 MiB subscription that a libzmq SUB socket could not even be
closed with.

No sleeps wait for state: every wait is a bounded poll (two tests watch
for an absence, a crash or a lost descriptor reserve, for 3 s at most).
Daemons run in pytest's tmp_path on ipc:// endpoints (one test adds
tcp://127.0.0.1) and are stopped (and checked: exit 0, no sanitizer
report) at the end of each test; the directory is removed then.
"""
import os
import resource
import select
import shutil
import signal
import socket
import stat
import subprocess
import time

import msgpack
import pytest
import zmq
from jobqd_stop import stop_jobqd
from zmq.utils.monitor import recv_monitor_message

BUILD = os.environ.get("JOBQ_BUILD_DIR", os.path.join(os.path.dirname(__file__), "..", "..", "build"))
JOBQD = os.path.join(BUILD, "broker", "jobqd")
FINAL = ("success", "error", "canceled")
MiB = 1 << 20
P = msgpack.packb


class JobqError(RuntimeError):
    def __init__(self, code, message):
        super().__init__("%s: %s" % (code, message))
        self.code, self.message = code, message


class Daemon:
    """One jobqd on its own data directory, with one DEALER of its own."""

    def __init__(self, ctx, data_dir, log_path, *args, map_size="256M", preexec_fn=None):
        self.ctx, self.dir = ctx, data_dir
        self.log_path = log_path
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen([JOBQD, "--data-dir", data_dir, "--store-map-size", map_size,
                                      *args], stdout=subprocess.DEVNULL, stderr=self.log,
                                     preexec_fn=preexec_fn)
        self.rid = 0
        self.crash_reported = False  # a test saw it die and said so
        self.sock = self.dealer()

    def wait_ready(self):
        deadline = time.monotonic() + 20
        while True:
            try:
                self.call("ping", rpc_timeout=0.2)
                break
            except TimeoutError:
                assert self.proc.poll() is None, "jobqd exited: " + self.stderr()
                assert time.monotonic() < deadline, "jobqd did not answer: " + self.stderr()

    @property
    def endpoint(self):
        return "ipc://%s/jobq.sock" % self.dir

    def dealer(self, opts=None):
        s = self.ctx.socket(zmq.DEALER)
        s.setsockopt(zmq.LINGER, 0)
        for k, v in (opts or {}).items():
            s.setsockopt(k, v)
        s.connect(self.endpoint)
        return s

    def stderr(self):
        self.log.flush()
        with open(self.log_path, "rb") as f:
            return f.read().decode(errors="replace")

    def status_kb(self, key):
        """A /proc/PID/status figure (VmPeak, VmRSS...), in kB."""
        with open("/proc/%d/status" % self.proc.pid) as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
        raise KeyError(key)

    def is_asan(self):
        with open("/proc/%d/maps" % self.proc.pid) as f:
            return "libasan" in f.read()

    def exchange(self, frame, sock=None, timeout=20.0, rid=None):
        """Send one raw request frame, return the next reply that is not a
        keepalive (nor, given rid, a late answer to another request)."""
        sock = sock or self.sock
        sock.send(frame)
        deadline = time.monotonic() + timeout
        while True:
            # In slices: a daemon that died is said at once, with its stderr.
            while not sock.poll(100):
                assert self.proc.poll() is None, "jobqd exited (%s): %s" % (
                    self.proc.returncode, self.stderr())
                if time.monotonic() >= deadline:
                    raise TimeoutError("no reply")
            rep = next_reply(sock, 1)
            if rid is None or rep.get("id") == rid:
                return rep

    def request(self, method, sock=None, rpc_timeout=20.0, **args):
        """The whole reply to one request."""
        self.rid += 1
        return self.exchange(P({"v": 1, "id": self.rid, "method": method, "args": args}),
                             sock, rpc_timeout, rid=self.rid)

    def call(self, method, rpc_timeout=20.0, sock=None, **args):
        rep = self.request(method, sock, rpc_timeout, **args)
        if not rep["ok"]:
            raise JobqError(rep["error"]["code"], rep["error"]["message"])
        return rep["result"]

    def error(self, method, **args):
        """The error a request must get: (code, message)."""
        rep = self.request(method, **args)
        assert not rep["ok"], rep
        return rep["error"]["code"], rep["error"]["message"]

    def submit(self, *ops):
        return self.call("submit_job", ops=list(ops))

    def rows(self, ids, fields=("id", "status")):
        res = self.call("query_jobs", ids=list(ids), fields=list(fields))
        return [dict(zip(res["fields"], r)) for r in res["rows"]]

    def wait(self, pred, what, timeout=20.0):
        deadline = time.monotonic() + timeout
        while True:
            v = pred()
            if v:
                return v
            assert self.proc.poll() is None, "jobqd exited: " + self.stderr()
            assert time.monotonic() < deadline, "timed out waiting for " + what
            # A round trip paces the poll.
            self.call("ping")

    def wait_status(self, ids, statuses, timeout=20.0):
        ids = list(ids)
        self.wait(lambda: all(r["status"] in statuses for r in self.rows(ids)),
                  "jobs %s to be %s" % (ids[:5], statuses), timeout)

    def stop(self):
        """SIGTERM (again after 0.5 s: running opcodes are interrupted),
        then exit 0 and no sanitizer report."""
        stop_jobqd(self.proc)
        err = self.stderr()
        self.log.close()
        assert "Sanitizer" not in err and "runtime error" not in err, err
        assert self.proc.returncode == 0, (self.proc.returncode, err)
        return err


def next_reply(sock, timeout=20.0):
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0 or not sock.poll(int(left * 1000) + 1):
            raise TimeoutError("no reply")
        rep = msgpack.unpackb(sock.recv(), raw=False, strict_map_key=False)
        if not rep.get("keepalive"):
            return rep


def read_replies(sock, n, timeout=30.0):
    """n replies (keepalives skipped), by request id; each id only once."""
    out = {}
    deadline = time.monotonic() + timeout
    while len(out) < n:
        rep = next_reply(sock, max(0.0, deadline - time.monotonic()))
        assert rep["id"] not in out, "two answers to request %s" % rep["id"]
        out[rep["id"]] = rep
    return out


@pytest.fixture
def jobqd(tmp_path):
    """start(*args, name=..., **kw) runs a Daemon on tmp_path/name. Every
    daemon is stopped and checked at the end, every socket closed, and
    tmp_path removed."""
    ctx = zmq.Context()
    running = []

    def start(*args, name="data", **kw):
        log = str(tmp_path / (name.replace("/", "-") + ".stderr"))
        d = Daemon(ctx, str(tmp_path / name), log, *args, **kw)
        running.append(d)
        d.wait_ready()
        return d
    start.ctx = ctx
    start.tmp = tmp_path
    try:
        yield start
        failures = []
        for d in running:
            if d.crash_reported:
                continue
            try:
                d.stop()
            except AssertionError as e:
                failures.append(str(e))
        assert not failures, failures
    finally:
        for d in running:
            if d.proc.poll() is None:
                d.proc.kill()
                d.proc.wait()
            if not d.log.closed:
                d.log.close()
        ctx.destroy(0)
        shutil.rmtree(tmp_path, ignore_errors=True)


def envelope(raw_args, rid=5, method="ping", before_id=None):
    """A request map whose "args" value is the raw bytes given (so that it
    can say anything a hostile client wants). before_id: raw bytes of an
    extra entry placed before "id"."""
    n = 4 + (before_id is not None)
    out = bytes([0x80 | n]) + P("v") + P(1)
    if before_id is not None:
        out += before_id
    return out + P("id") + P(rid) + P("method") + P(method) + P("args") + raw_args


def stats_errors(d, code):
    return d.call("stats")["errors"][code]


# ---------------------------------------------------------------------------
# 1, 2: what the pre-scan refuses before msgpack-c sees a byte

HUGE_ARRAY32 = b"\xdd\xff\xff\xff\xff"
HUGE_MAP32 = b"\xdf\xff\xff\xff\xff"


def test_declared_lengths_past_the_frame_are_malformed_and_allocate_nothing(jobqd):
    d = jobqd()
    # Warm up every thread on the request path (handler arenas are reserved
    # at their first allocation, which would count in VmPeak).
    for k in range(40):
        d.call("ping")
        assert d.exchange(P({"v": 1, "id": 7})[:-1])["error"]["code"] == "Malformed"
    # (raw args bytes, where the refused header is inside them)
    cases = [
        ("array32", HUGE_ARRAY32, 0),
        ("map32", HUGE_MAP32, 0),
        ("nested array32", b"\x81" + P("a") + b"\x91\x91" + HUGE_ARRAY32, 5),
        ("nested map32", b"\x91\x81" + P("k") + b"\x92\x01" + HUGE_MAP32, 6),
        ("array16", b"\x91\xdc\xff\xff", 1),
    ]
    frames = []
    for name, raw, at in cases:
        head = envelope(b"")
        frame = envelope(raw + b"\x01\x02\x03")
        frame += b"\x01" * (150 - len(frame))  # a 150-byte frame
        assert len(frame) == 150
        frames.append((name, frame, len(head) + at))
    peak0 = d.status_kb("VmPeak")
    malformed0 = stats_errors(d, "Malformed")
    for _ in range(50):
        for name, frame, at in frames:
            rep = d.exchange(frame)
            assert rep["ok"] is False and rep["id"] == 5, (name, rep)
            assert rep["error"] == {
                "code": "Malformed",
                "message": "a container declares more elements than the request holds "
                           "(at byte %d)" % at}, (name, rep)
    assert stats_errors(d, "Malformed") - malformed0 == 50 * len(frames)
    grew = d.status_kb("VmPeak") - peak0
    if not d.is_asan():  # ASan reserves address space by design
        assert grew < 64 * 1024, "VmPeak grew by %d kB" % grew

    # A str, bin or ext declaring more bytes than arrived: the end comes
    # inside it.
    for raw in (b"\xdb\xff\xff\xff\xff", b"\xc6\xff\xff\xff\xff", b"\xc9\xff\xff\xff\xff\x01"):
        frame = envelope(raw + b"abc")
        rep = d.exchange(frame)
        assert rep["id"] == 5 and rep["error"] == {
            "code": "Malformed",
            "message": "the request ends inside a msgpack value (at byte %d)"
                       % len(envelope(b""))}, rep
    # The id is echoed only when the walk got that far: here the huge
    # header comes before "id".
    frame = envelope(P("x"), before_id=P("pad") + HUGE_ARRAY32 + b"\x01\x02")
    rep = d.exchange(frame)
    assert rep["id"] is None and rep["error"]["code"] == "Malformed", rep
    assert "declares more elements" in rep["error"]["message"], rep
    # At most 4 Mi msgpack objects: the envelope's map, keys and values,
    # args, its key, the array and its n one-byte elements make 11 + n.
    def objects(n):
        return envelope(b"\x81" + P("p") + b"\xdd" + n.to_bytes(4, "big") + b"\x00" * n)
    rep = d.exchange(objects(4 * MiB - 10))
    assert rep["id"] == 5 and rep["error"]["code"] == "Malformed", rep
    assert rep["error"]["message"] == ("the request holds too many msgpack objects (at byte %d)"
                                       % (len(objects(0)) + 4 * MiB - 11)), rep
    rep = d.exchange(objects(4 * MiB - 11))
    assert rep["ok"] is True and rep["id"] == 5, rep
    assert d.proc.poll() is None


def nested(levels):
    """args {"x": [[...[1]...]]} with `levels` arrays: the request (its map,
    args, the arrays) nests levels + 2 deep."""
    return b"\x81" + P("x") + b"\x91" * levels + b"\x01"


def test_nesting_beyond_32_is_malformed(jobqd):
    d = jobqd()
    # 32 levels (the envelope, args, 30 arrays) pass; 33 do not.
    rep = d.exchange(envelope(nested(30)))
    assert rep["ok"] is True and rep["id"] == 5, rep
    malformed0 = stats_errors(d, "Malformed")
    for levels in (31, 200, 100000):
        frame = envelope(nested(levels))
        rep = d.exchange(frame)
        at = len(envelope(b"\x81" + P("x"))) + 30  # the 31st array's header
        assert rep["id"] == 5 and rep["error"] == {
            "code": "Malformed",
            "message": "the request nests arrays and maps too deeply (at byte %d)" % at}, rep
    # Maps count as much as arrays: args and 30 maps in it pass, 31 do not.
    rep = d.exchange(envelope(b"\x81\xa1k" * 31 + b"\x01"))
    assert rep["ok"] is True, rep
    rep = d.exchange(envelope(b"\x81\xa1k" * 32 + b"\x01"))
    assert rep["error"]["code"] == "Malformed" and "too deeply" in rep["error"]["message"], rep
    assert stats_errors(d, "Malformed") - malformed0 == 4
    assert d.call("ping")["protocol"] == 1


def sized(size, rid, tail=b""):
    """A ping of exactly `size` bytes: args {"pad": str} (then tail bytes
    inside the string)."""
    for n in range(size, 0, -1):
        frame = envelope(b"\x81" + P("pad") + P("x" * n))
        if len(frame) <= size:
            break
    frame = envelope(b"\x81" + P("pad") + P("x" * (n + size - len(frame))), rid=rid)
    assert len(frame) == size
    if tail:
        frame = frame[:-len(tail)] + tail
    return frame


def test_requests_over_max_request_bytes_are_too_large(jobqd):
    d = jobqd("--max-request-bytes", "4096")
    st0 = d.call("stats")
    rep = d.exchange(sized(4096, 11))
    assert rep["ok"] is True and rep["id"] == 11, rep
    over = [sized(4097, 12), sized(10000, 13),
            # Over the limit and broken after it: the size is judged first.
            sized(5000, 14, tail=b"\xc1"), sized(5000, 15, tail=b"\xff\xfe"),
            envelope(b"\x81" + P("pad") + b"\xda\xff\xff" + b"x" * 5000, rid=16)]
    ids = []
    for frame in over:
        rep = d.exchange(frame)
        assert rep["ok"] is False, rep
        assert rep["error"] == {"code": "TooLarge",
                                "message": "request of %d bytes is over the limit of 4096 bytes"
                                           % len(frame)}, rep
        ids.append(rep["id"])
    assert ids == [12, 13, 14, 15, 16]
    st = d.call("stats")
    assert st["too_large"] - st0["too_large"] == len(over), st
    assert st["errors"]["TooLarge"] - st0["errors"]["TooLarge"] == len(over), st
    assert st["errors"]["Malformed"] == st0["errors"]["Malformed"], st
    assert st["requests"]["ping"] == st0["requests"]["ping"] + 1, st  # the 4096 bytes one
    # Four times the limit: ZeroMQ itself closes the connection (no answer
    # is possible); the client reconnects and is served.
    s = d.dealer()
    mon = s.get_monitor_socket(zmq.EVENT_CONNECTED | zmq.EVENT_DISCONNECTED)
    assert d.exchange(sized(100, 21), sock=s)["id"] == 21
    s.send(sized(4 * 4096 + 1000, 22))
    events = []
    deadline = time.monotonic() + 10
    while zmq.EVENT_DISCONNECTED not in events:
        assert mon.poll(int(max(0, deadline - time.monotonic()) * 1000) + 1), events
        events.append(recv_monitor_message(mon)["event"])
    rep = d.exchange(sized(100, 23), sock=s)
    assert rep["id"] == 23 and rep["ok"], rep
    s.disable_monitor()
    mon.close(0)
    s.close(0)


# ---------------------------------------------------------------------------
# 3: UTF-8

def raw_request(rid, method, args):
    """Packed with bytes as msgpack str: lets a str carry any bytes."""
    return msgpack.packb({"v": 1, "id": rid, "method": method, "args": args}, use_bin_type=False)


def test_strings_must_be_utf8_everywhere(jobqd):
    d = jobqd()
    st0 = d.call("stats")
    # (string, offset of its first ill-formed byte): not UTF-8, overlong,
    # a lone surrogate, above U+10FFFF, a stray continuation byte, a byte
    # UTF-8 never uses, a sequence cut short by the end of the string
    bad = [(b"\xff\xfe", 0), (b"\xc0\x80", 0), (b"\xed\xa0\x80", 0), (b"\xf4\x90\x80\x80", 0),
           (b"ab\x80cd", 2), (b"\xf5\x80\x80\x80", 0), (b"tail\xe2\x82", 4)]
    cases = []
    for b, off in bad:
        for method, args in [
                # a log message of test.log
                ("submit_job", {"ops": [{"op": "test.log", "args": {"messages": [b"fine", b]}}]}),
                # a map key inside an opcode's args
                ("submit_job", {"ops": [{"op": "test.delay", "args": {"duration": 0, b: 1}}]}),
                # an opcode argument's value
                ("submit_job", {"ops": [{"op": "test.delay", "args": {"duration": b}}]}),
                # an opcode name; one job of a batch
                ("submit_job", {"ops": [{"op": b"test." + b}]}),
                ("submit_many_jobs", {"jobs": [[{"op": "test.log"}],
                                               [{"op": "test.log", "args": {"messages": [b]}}]]}),
                # the method name, a query field
                (b"ping" + b, {}),
                ("query_jobs", {"fields": ["id", b]})]:
            cases.append((method, args, b, off))
    rid = 100
    for method, args, b, off in cases:
        rid += 1
        frame = raw_request(rid, method, args)
        assert frame.count(b) == 1
        at = frame.index(b) + off  # the error says where
        rep = d.exchange(frame)
        assert rep["id"] == rid and rep["ok"] is False, (method, args, rep)
        assert rep["error"] == {"code": "BadArgument",
                                "message": "a string in the request is not valid UTF-8 (at byte %d)"
                                           % at}, (method, args, rep)
    frame = msgpack.packb({"v": 1, "id": 99, "method": "ping", "args": {}, b"\xff": 1},
                          use_bin_type=False)
    assert d.exchange(frame)["error"]["code"] == "BadArgument"
    st = d.call("stats")
    assert st["submitted"] == st0["submitted"] and st["last_job_id"] == st0["last_job_id"], st
    assert st["errors"]["BadArgument"] - st0["errors"]["BadArgument"] == len(cases) + 1, st
    assert st["errors"]["UnknownMethod"] == st0["errors"]["UnknownMethod"], st
    # Valid UTF-8 of every length passes, and bin values are not strings.
    good = ["plain", "\u00e9t\u00e9", "\u20ac", "\U0001F600", "\U0010FFFF", "\uFFFD", "\u07ff"]
    jid = d.submit({"op": "test.log", "args": {"messages": good}})
    d.wait_status([jid], FINAL)
    row = d.rows([jid], ["status", "oplog"])[0]
    assert row["status"] == "success" and [e[3] for e in row["oplog"][0]] == good, row
    assert d.call("ping", blob=b"\xff\xfe\xc0\x80")["protocol"] == 1


def test_error_messages_quoting_long_names_are_utf8(jobqd):
    d = jobqd()
    jid = d.submit({"op": "test.log"})
    name = "a" * 63 + "\u00e9"  # the 64th and 65th bytes are one character
    cases = [(name, {}, "UnknownMethod"),
             ("submit_job", {"ops": [{"op": "test.delay", "args": {"duration": 0, name: 1}}]},
              "BadArgument"),
             ("query_jobs", {"fields": [name]}, "UnknownField"),
             ("wait_for_job_change", {"id": jid, "fields": [name], "prev_job_info": None,
                                      "prev_log_serial": None, "timeout": 0}, "UnknownField")]
    bad = []
    for k, (method, args, code) in enumerate(cases):
        d.sock.send(P({"v": 1, "id": 1000 + k, "method": method, "args": args}))
        assert d.sock.poll(20000)
        rep = msgpack.unpackb(d.sock.recv(), raw=True)
        assert rep[b"id"] == 1000 + k and rep[b"error"][b"code"] == code.encode(), rep
        try:
            rep[b"error"][b"message"].decode("utf-8")
        except UnicodeDecodeError:
            bad.append(rep[b"error"][b"message"])
    assert not bad, "replies that are not UTF-8: %s" % bad


# ---------------------------------------------------------------------------
# 4-7: arguments that cannot be right get a precise answer

def test_unknown_opcode_arguments_are_named(jobqd):
    d = jobqd()
    st0 = d.call("stats")
    op = {"op": "test.delay", "args": {"duration": 1, "repat": 3}}
    assert d.error("submit_job", ops=[op]) == (
        "BadArgument",
        "opcode 0 (test.delay): unknown argument 'repat' (test.delay takes duration, repeat, fail)")
    code, msg = d.error("submit_job", ops=[{"op": "test.log"},
                                           {"op": "test.log", "args": {"mesages": ["x"]}}])
    assert code == "BadArgument", msg
    assert msg.startswith("opcode 1 (test.log): unknown argument 'mesages'"), msg
    res = d.call("submit_many_jobs", jobs=[[{"op": "test.log"}],
                                           [{"op": "test.delay", "args": {"duraton": 0}}]])
    assert res[0][0] is True and res[1][0] is False, res
    assert "unknown argument 'duraton'" in res[1][1], res
    st = d.call("stats")
    assert st["submitted"] == st0["submitted"] + 1, st  # only the good job of the batch
    d.wait_status([res[0][1]], FINAL)


def test_priority_errors(jobqd):
    d = jobqd("--max-running", "1")
    blocker = d.submit({"op": "test.delay", "args": {"duration": 60}})
    jid = d.submit({"op": "test.log"}, {"op": "test.log", "priority": 10})
    for p in (2**31, -5, 7, 11, -11, -(2**31), -(2**63), 2**62):
        assert d.error("change_job_priority", id=jid, priority=p) == (
            "InvalidPriority", "Invalid priority %d, allowed are -10, 0, 10" % p), p
    assert d.error("change_job_priority", id=jid, priority=5.0) == (
        "InvalidPriority", "Invalid priority 5, allowed are -10, 0, 10")
    for p in ("high", "10", 10.5, True, [10], None):
        code, msg = d.error("change_job_priority", id=jid, priority=p)
        assert code == "BadArgument" and "'priority'" in msg, (p, code, msg)
    assert d.error("submit_job", ops=[{"op": "test.log", "priority": 2**31}]) == (
        "InvalidPriority", "opcode 0 has invalid priority, allowed are -10, 0, 10")
    assert d.rows([jid], ["oppriority"])[0]["oppriority"] == [0, 10]
    assert d.call("change_job_priority", id=jid, priority=-10) == [
        True, "Priorities of pending opcodes for job %d have been changed to -10" % jid]
    assert d.rows([jid], ["oppriority"])[0]["oppriority"] == [-10, -10]
    assert d.call("cancel_job", id=blocker)[0] is True


def test_priority_above_int64_is_invalid_priority(jobqd):
    d = jobqd()
    jid = d.submit({"op": "test.delay", "args": {"duration": 60}})
    code, _ = d.error("submit_job", ops=[{"op": "test.log", "priority": 2**63}])
    assert code == "InvalidPriority"
    for p in (2**63, 2**64 - 1):
        assert d.error("change_job_priority", id=jid, priority=p)[0] == "InvalidPriority", p


def test_dependency_on_a_job_not_handed_out_yet(jobqd):
    d = jobqd()
    a = d.submit({"op": "test.log"})
    st0 = d.call("stats")
    last = st0["last_job_id"]
    assert last == a
    for dep in (last + 10, last + 1, 2**62):
        assert d.error("submit_job", ops=[{"op": "test.log", "depends": [[dep, []]]}]) == (
            "InvalidDependency",
            "opcode 0 has invalid dependencies: job %d does not exist (the last job id is %d)"
            % (dep, last)), dep
    # In a batch, an absolute id of a later job of the same batch does not
    # exist yet either; a relative one does.
    res = d.call("submit_many_jobs", jobs=[[{"op": "test.log"}],
                                           [{"op": "test.log", "depends": [[last + 1, []]]}],
                                           [{"op": "test.log", "depends": [[-2, []]]}]])
    assert res[0][0] is True and res[2][0] is True, res
    assert res[1] == [False, "opcode 0 has invalid dependencies: job %d does not exist "
                             "(the last job id is %d)" % (last + 1, last)], res
    assert d.call("stats")["submitted"] == st0["submitted"] + 2
    ok = d.submit({"op": "test.log", "depends": [[last, ["success"]]]})
    d.wait_status([ok, res[0][1], res[2][1]], ("success",))


def test_a_field_asked_for_twice(jobqd):
    d = jobqd()
    jid = d.submit({"op": "test.log"})
    assert d.error("query_jobs", fields=["id", "status", "id"]) == (
        "BadArgument", "field 'id' is asked for twice")
    assert d.error("query_jobs", ids=[jid], fields=["oplog", "status", "oplog"]) == (
        "BadArgument", "field 'oplog' is asked for twice")
    assert d.call("query_jobs", ids=[jid], fields=["id", "status"])["rows"][0][0] == jid


# ---------------------------------------------------------------------------
# 8, 9: bounded and complete query_jobs pages

def test_query_replies_are_bounded_and_page_on(jobqd):
    d = jobqd("--max-running", "1", map_size="1G")
    blocker = d.submit({"op": "test.delay", "args": {"duration": 60}})
    # 40 jobs of ~1 MiB of arguments each, queued behind the blocker.
    big = []
    for k in range(40):
        msgs = ["%02d-%04d-" % (k, i) + "m" * 4086 for i in range(256)]
        big.append(d.submit({"op": "test.log", "args": {"messages": msgs}}))
    cap = 32 * MiB

    # Listing: cut by bytes with more=True; after_id reaches every job once.
    seen, after, pages = [], 0, 0
    while True:
        res = d.call("query_jobs", fields=["id", "ops"], after_id=after)
        pages += 1
        ids = [r[0] for r in res["rows"]]
        assert ids, res["more"]
        assert len(P(res["rows"])) < cap + 2 * MiB  # a row more than the cap at most
        if pages == 1:
            assert res["more"] is True and len(ids) < 41, len(ids)
        for r in res["rows"]:
            if r[0] != blocker:
                assert len(r[1][0]["args"]["messages"]) == 256
        seen += ids
        if not res["more"]:
            break
        after = ids[-1]
    assert pages >= 2 and seen == [blocker] + big, seen

    # By ids: the rows answer the first ids; ask again for the rest.
    got, rest, rounds = [], list(big), 0
    while rest:
        res = d.call("query_jobs", ids=rest, fields=["id", "ops"])
        rounds += 1
        ids = [r[0] for r in res["rows"]]
        assert ids == rest[:len(ids)] and ids, (ids, rest)
        if rounds == 1:
            assert res["more"] is True and len(ids) < len(big), len(ids)
        assert res["more"] is (len(ids) < len(rest)), res["more"]
        got += ids
        rest = rest[len(ids):]
    assert rounds >= 2 and got == big
    assert d.call("cancel_job", id=blocker)[0] is True


def test_status_filter_pages_through_live_and_archived_jobs(jobqd):
    d = jobqd("--max-running", "1")
    errors, others = [], []
    for k in range(16):
        fail = k % 3 != 1
        jid = d.submit({"op": "test.log", "args": {"messages": [str(k)], "fail": fail}})
        (errors if fail else others).append(jid)
    d.wait_status(errors + others, FINAL)
    # Every other error job and some successes go to the archive.
    archived = errors[::2] + others[:2]
    for jid in archived:
        assert d.call("archive_job", id=jid) is True
    live_errors = errors[1::2]
    # Live jobs of other statuses after them: running, queued, canceled.
    blocker = d.submit({"op": "test.delay", "args": {"duration": 60}})
    queued = d.submit({"op": "test.log"})
    canceled = d.submit({"op": "test.log"})
    assert d.call("cancel_job", id=canceled) == [True, "Job %d canceled" % canceled]
    d.wait_status([blocker], ("running",))
    live = len(errors) + len(others) - len(archived) + 3
    # The archived jobs have left memory: committed, and not live.
    d.wait(lambda: (lambda st: st["store"]["queued"] == 0 and st["live_jobs"] == live
                    and st["archived_jobs"] == len(archived))(d.call("stats")),
           "the archive to be committed")
    # A last error job after every other.
    last = d.submit({"op": "test.log", "args": {"fail": True}})
    assert d.call("cancel_job", id=blocker)[0] is True
    d.wait_status([last, queued], FINAL)
    errors.append(last)
    live_errors.append(last)
    d.wait(lambda: d.call("stats")["store"]["queued"] == 0, "the store to catch up")

    def page_through(limit, **kw):
        rows, after = [], 0
        for _ in range(100):
            res = d.call("query_jobs", fields=["id", "status", "archived"], after_id=after,
                         limit=limit, **kw)
            assert len(res["rows"]) <= limit, res
            assert res["rows"] or not res["more"], "an empty page says more: %s" % res
            rows += res["rows"]
            if not res["more"]:
                return rows
            after = res["rows"][-1][0]
        raise AssertionError("paging does not end")
    for limit in (1, 2, 3, 100):
        rows = page_through(limit, status=["error"], archived=True)
        assert [r[0] for r in rows] == sorted(errors), (limit, rows)
        assert all(r[1] == "error" and r[2] == (r[0] in archived) for r in rows), rows
    rows = page_through(2, status=["error"])
    assert [r[0] for r in rows] == sorted(live_errors), rows
    rows = page_through(2, status=["success", "canceled"], archived=True)
    assert [r[0] for r in rows] == sorted(others + [blocker, queued, canceled]), rows
    # A filter that matches nothing further on: no page at all says more.
    assert page_through(2, status=["running"], archived=True) == []


# ---------------------------------------------------------------------------
# 10, 11: one connection's share, and slow readers

class RawPeer:
    """A DEALER (or SUB) speaking ZMTP 3.0 (NULL mechanism) by hand over an
    ipc socket. A burst of requests then reaches jobqd in a single write:
    the daemon's I/O thread reads it at once and its loop reads it all
    before any answer goes out, which makes per-connection limits exact.
    And a frame of any size costs this side nothing to send."""

    def __init__(self, path, socket_type=b"DEALER"):
        self.s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.s.settimeout(20)
        self.s.connect(path)
        self.buf = b""
        # signature, version 3.0, mechanism, as-server and filler
        greeting = (b"\xff" + b"\0" * 8 + b"\x7f" + b"\x03\x00" + b"NULL".ljust(20, b"\0")
                    + b"\0" * 32)
        ready = (b"\x05READY" + b"\x0bSocket-Type" + len(socket_type).to_bytes(4, "big")
                 + socket_type)
        self.s.sendall(greeting + b"\x04" + bytes([len(ready)]) + ready)
        peer = self._read(64)
        assert peer[0] == 0xff and peer[9] == 0x7f and peer[10] == 3, peer
        flags, body = self._frame()
        assert flags & 0x04 and body.startswith(b"\x05READY"), (flags, body)

    def _read(self, n):
        while len(self.buf) < n:
            chunk = self.s.recv(65536)
            assert chunk, "jobqd closed the connection"
            self.buf += chunk
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def _frame(self):
        flags = self._read(1)[0]
        size = int.from_bytes(self._read(8 if flags & 0x02 else 1), "big")
        return flags, self._read(size)

    def send_all(self, bodies):
        out = b""
        for b in bodies:
            if len(b) < 256:  # a last frame, short or long
                out += b"\x00" + bytes([len(b)]) + b
            else:
                out += b"\x02" + len(b).to_bytes(8, "big") + b
        self.s.sendall(out)

    def closed_by_peer(self, timeout=20.0):
        """True once the other end has closed the connection (EOF or a
        reset), within timeout."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.s.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                if not self.s.recv(65536):
                    return True
            except (ConnectionResetError, BrokenPipeError):
                return True
            except socket.timeout:
                break
        return False

    def recv(self):
        while True:
            flags, body = self._frame()
            if not flags & 0x04:  # commands (heartbeats) are not replies
                assert not flags & 0x01, "a reply of more than one frame"
                return msgpack.unpackb(body, raw=False)

    def close(self):
        self.s.close()


def test_one_connection_gets_its_share_of_requests(jobqd):
    d = jobqd("--max-client-requests", "50", "--max-client-waiters", "5")
    raw = RawPeer(os.path.join(d.dir, "jobq.sock"))
    try:
        # A round trip first: the connection is then set up on both sides.
        raw.send_all([P({"v": 1, "id": 1000, "method": "ping"})])
        assert raw.recv()["id"] == 1000
        busy0 = stats_errors(d, "Busy")
        # A listing goes to a handler (the loop answers a ping at once: no
        # slot would stay taken).
        raw.send_all([P({"v": 1, "id": i, "method": "query_jobs"}) for i in range(1, 201)])
        # Another connection is served meanwhile.
        assert d.call("ping")["protocol"] == 1
        reps = {}
        for _ in range(200):
            rep = raw.recv()
            assert rep["id"] not in reps, rep
            reps[rep["id"]] = rep
        assert sorted(reps) == list(range(1, 201))
        ok = sorted(i for i, r in reps.items() if r["ok"])
        busy = sorted(i for i, r in reps.items() if not r["ok"])
        # The first 50 read take the connection's 50 slots; none is answered
        # before the loop has read the whole burst, so the rest are Busy.
        assert ok == list(range(1, 51)), ok
        for i in busy:
            assert reps[i]["error"] == {
                "code": "Busy",
                "message": "50 requests of this connection are unanswered (--max-client-requests): "
                           "read the replies, then ask again"}, reps[i]
        assert len(busy) == 150
        assert stats_errors(d, "Busy") - busy0 == 150
        # Answers read: the connection has its slots back.
        raw.send_all([P({"v": 1, "id": 2000 + i, "method": "ping"}) for i in range(40)])
        assert all(raw.recv()["ok"] for _ in range(40))
    finally:
        raw.close()


def test_one_connection_parks_at_most_max_client_waiters(jobqd):
    d = jobqd("--max-running", "1", "--max-client-requests", "50", "--max-client-waiters", "5")
    blocker = d.submit({"op": "test.delay", "args": {"duration": 60}})
    jid = d.submit({"op": "test.log"})
    d.wait_status([blocker], ("running",))
    info = d.call("wait_for_job_change", id=jid, fields=["status"], prev_job_info=None,
                  prev_log_serial=0, timeout=0)[0]
    assert info == ["queued"]

    def wait_req(rid):
        return P({"v": 1, "id": rid, "method": "wait_for_job_change",
                  "args": {"id": jid, "fields": ["status"], "prev_job_info": info,
                           "prev_log_serial": 0, "timeout": 60}})
    a, b = d.dealer(), d.dealer()
    waiters0 = d.call("stats")["waiters"]
    for rid in range(1, 6):
        a.send(wait_req(rid))
    d.wait(lambda: d.call("stats")["waiters"] == waiters0 + 5, "5 parked waits")
    too_many0 = stats_errors(d, "TooManyWaiters")
    a.send(wait_req(6))
    rep = next_reply(a)
    assert rep["id"] == 6 and rep["error"] == {
        "code": "TooManyWaiters",
        "message": "this connection has 5 requests waiting already (--max-client-waiters)"}, rep
    assert stats_errors(d, "TooManyWaiters") == too_many0 + 1
    # Another connection still parks one.
    b.send(wait_req(7))
    d.wait(lambda: d.call("stats")["waiters"] == waiters0 + 6, "a sixth parked wait")
    assert not a.poll(0) and not b.poll(0)
    # A change answers them all.
    assert d.call("cancel_job", id=jid) == [True, "Job %d canceled" % jid]
    got = read_replies(a, 5)
    assert sorted(got) == [1, 2, 3, 4, 5]
    assert all(r["ok"] and r["result"][0] == ["canceled"] for r in got.values()), got
    rep = next_reply(b)
    assert rep["id"] == 7 and rep["result"][0] == ["canceled"], rep
    assert d.call("cancel_job", id=blocker)[0] is True


def test_a_slow_reader_loses_no_reply(jobqd):
    d = jobqd("--max-client-requests", "100000")
    s = d.dealer({zmq.SNDHWM: 100000})
    n = 5000
    for k in range(n):
        s.send(P({"v": 1, "id": 2 * k + 1, "method": "cancel_job", "args": {"id": 10**6 + k}}))
        s.send(P({"v": 1, "id": 2 * k + 2, "method": "query_jobs",
                  "args": {"ids": [2 * 10**6 + k], "fields": ["id", "status"]}}))

    def all_handled():
        req = d.call("stats")["requests"]
        return req["cancel_job"] == n and req["query_jobs"] == n
    d.wait(all_handled, "every request handled", 60)
    st = d.call("stats")["connections"]
    assert st["replies_waiting"] > 0, st  # nobody read: replies wait in the daemon
    got = read_replies(s, 2 * n, 60)
    assert sorted(got) == list(range(1, 2 * n + 1))
    for k in range(n):
        assert got[2 * k + 1]["result"] == [False, "Job %d not found" % (10**6 + k)], got[2 * k + 1]
        assert got[2 * k + 2]["result"]["rows"] == [[2 * 10**6 + k, None]], got[2 * k + 2]
    assert not s.poll(0)
    st = d.call("stats")["connections"]
    assert st["replies_late"] > 0 and st["replies_waiting"] == 0 and st["replies_to_gone"] == 0, st


def test_a_slow_reader_over_its_limit_gets_every_busy_answer(jobqd):
    d = jobqd("--max-client-requests", "50")
    s = d.dealer({zmq.SNDHWM: 100000, zmq.RCVHWM: 10})
    n = 10000
    st0 = d.call("stats")
    for i in range(1, n + 1):
        s.send(P({"v": 1, "id": i, "method": "ping"}))

    def read_by_jobqd(st):  # handled, or turned away Busy
        return (st["requests"]["ping"] - st0["requests"]["ping"]
                + st["errors"]["Busy"] - st0["errors"]["Busy"])
    deadline = time.monotonic() + 60
    while read_by_jobqd(d.call("stats")) < n:  # stats round trips pace it
        assert time.monotonic() < deadline, "jobqd did not read every request"
    got = {}
    while d.call("stats")["connections"]["replies_waiting"]:  # read what waits
        assert time.monotonic() < deadline, "replies still waiting"
        while s.poll(10):
            rep = msgpack.unpackb(s.recv(), raw=False)
            assert rep["id"] not in got
            got[rep["id"]] = rep
    # Nothing waits in the daemon any more: a last ping's answer comes after
    # every answer still on its way.
    s.send(P({"v": 1, "id": 0, "method": "ping"}))
    while True:
        rep = next_reply(s, 20)
        if rep["id"] == 0:
            break
        assert rep["id"] not in got
        got[rep["id"]] = rep
    st = d.call("stats")
    busy = [r for r in got.values() if not r["ok"]]
    assert all(r["error"]["code"] == "Busy" for r in busy)
    assert len(got) == n, "%d of %d requests answered (busy_dropped %d)" % (
        len(got), n, st["connections"]["busy_dropped"] - st0["connections"]["busy_dropped"])


# ---------------------------------------------------------------------------
# 12: a connection flood under a small descriptor limit

def raise_own_fd_limit():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 2048:
        pytest.skip("needs a descriptor limit of 2048 (hard limit %d)" % hard)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return soft, hard


def fd_limit_256():
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))


def test_a_connection_flood_pauses_accepting(jobqd):
    soft, hard = raise_own_fd_limit()
    flood = []
    try:
        d = jobqd(preexec_fn=fd_limit_256)
        c0 = d.call("stats")["connections"]
        assert c0["max"] < 256 and c0["accepting"] is True and c0["accept_pauses"] == 0, c0
        # Paced: until jobqd stops accepting, a connection is opened once the
        # one before is in (its ping answered). A burst that piles up in the
        # listening socket's backlog is another matter (and a bug, see
        # test_a_burst_of_ipc_connects_does_not_abort_jobqd).
        accepting = True
        for k in range(400):
            s = d.dealer()
            s.send(P({"v": 1, "id": k + 1, "method": "ping"}))
            flood.append(s)
            deadline = time.monotonic() + 20
            while accepting and not s.poll(5):
                accepting = d.call("stats")["connections"]["accepting"]
                assert time.monotonic() < deadline, "connection %d neither in nor refused" % k
        assert not accepting and d.proc.poll() is None
        c = d.call("stats")["connections"]
        assert c["accepting"] is False and c["open"] >= c["max"], c
        assert c["max"] == c0["max"] and c["accept_pauses"] >= 1, c
        assert c["peak"] >= c["max"], c
        assert "(--max-connections %d): not accepting new ones" % c["max"] in d.stderr()
        # The client connected before the flood is served all along.
        for _ in range(5):
            assert d.call("ping")["protocol"] == 1
        # Most of the flood goes away: accepting resumes.
        for s in flood[10:]:
            s.close(0)
        del flood[10:]
        c = d.wait(lambda: (lambda c: c if c["accepting"] else None)(
            d.call("stats")["connections"]), "jobqd to accept again", 30)
        assert "accepting new ones again" in d.stderr()
        fresh = d.dealer()
        assert d.call("ping", sock=fresh, rpc_timeout=20)["protocol"] == 1
        # The flood connections left open were answered, now if not before.
        for k, s in enumerate(flood):
            rep = next_reply(s, 20)
            assert rep["id"] == k + 1 and rep["ok"], rep
        assert d.proc.poll() is None
    finally:
        for s in flood:
            s.close(0)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_a_burst_of_ipc_connects_does_not_abort_jobqd(jobqd):
    soft, hard = raise_own_fd_limit()
    d = jobqd(preexec_fn=fd_limit_256)
    socks = []
    try:
        path = os.path.join(d.dir, "jobq.sock")

        def connect():
            """A raw connection, or None: the queue is full or the socket
            file is moved aside (jobqd paused)."""
            c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            c.setblocking(False)
            try:
                c.connect(path)
            except (BlockingIOError, FileNotFoundError, ConnectionRefusedError):
                c.close()
                return None
            return c
        # While jobqd is stopped, connections pile up in the listening
        # socket's queue: they all come in at once when it goes on, before
        # it can react. The queue is kept short for that (a sixteenth of
        # the descriptor limit, at least 16).
        os.kill(d.proc.pid, signal.SIGSTOP)
        try:
            while len(socks) < 600:
                c = connect()
                if c is None:
                    break
                socks.append(c)
        finally:
            os.kill(d.proc.pid, signal.SIGCONT)
        assert 16 <= len(socks) <= 64, len(socks)
        # Then a flood that races the daemon: 2,000 connects as fast as they
        # go, until jobqd moves its socket file aside.
        for _ in range(2000):
            c = connect()
            if c is not None:
                socks.append(c)
            elif not os.path.exists(path):
                break
        # (Each listening endpoint — clients, events, workers — keeps a full
        # queue of room in reserve below the limit.)
        assert len(socks) > 80, len(socks)
        # The storm is over once every queued connection has been taken in
        # (jobqd's greeting arrives) or turned away (end of file); a daemon
        # might also leave some queued, so it is watched for 3 s at most.
        pending = select.poll()
        for c in socks:
            pending.register(c, select.POLLIN)
        left, deadline = len(socks), time.monotonic() + 3
        while left and time.monotonic() < deadline:
            assert d.proc.poll() is None, "jobqd exited (%s): %s" % (d.proc.returncode, d.stderr())
            for fd, _ in pending.poll(50):
                pending.unregister(fd)
                left -= 1
        assert d.proc.poll() is None, "jobqd exited (%s): %s" % (d.proc.returncode, d.stderr())
        st = d.call("stats")["connections"]
        fds = len(os.listdir("/proc/%d/fd" % d.proc.pid))
        assert not st["accepting"] and fds < 256 - 16, (fds, st)
        for c in socks:
            c.close()
        socks = []
        d.wait(lambda: d.call("stats")["connections"]["accepting"], "jobqd to accept again")
        fresh = d.dealer()
        assert d.call("ping", sock=fresh)["protocol"] == 1
        assert d.proc.poll() is None
    finally:
        for c in socks:
            c.close()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        if d.proc.poll() is not None and d.proc.returncode != 0:
            d.crash_reported = True  # the assertion above says how it ended


def free_tcp_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_tcp_flood_leaves_jobqd_its_descriptor_reserve(jobqd):
    soft, hard = raise_own_fd_limit()
    endpoint = "tcp://127.0.0.1:%d" % free_tcp_port()
    d = jobqd("--listen", endpoint, "--insecure", preexec_fn=fd_limit_256)
    flood = []
    try:
        for k in range(400):
            s = jobqd.ctx.socket(zmq.DEALER)
            s.setsockopt(zmq.LINGER, 0)
            s.connect(endpoint)
            s.send(P({"v": 1, "id": k + 1, "method": "ping"}))
            flood.append(s)
        d.wait(lambda: not d.call("stats")["connections"]["accepting"], "jobqd to stop accepting")
        # An absence can only be watched for a while: 3 s of the flood
        # waiting at the limit.
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            st = d.call("stats")
            fds = len(os.listdir("/proc/%d/fd" % d.proc.pid))
            assert fds < 256 - 16 and st["threads"] > 0, (fds, st["threads"], st["connections"])
    finally:
        for s in flood:
            s.close(0)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


# ---------------------------------------------------------------------------
# 13: the event socket

def test_oversized_subscriptions_close_the_subscriber(jobqd):
    d = jobqd()
    path = os.path.join(d.dir, "events.sock")
    events = "ipc://" + path
    ctx = jobqd.ctx
    # Subscriptions of 1 MiB, each on its own connection, sent by hand: a
    # libzmq 4.3 SUB socket keeps its topics in a trie that it frees
    # recursively, one level per byte, and closing one that holds a 1 MiB
    # topic overflows the stack of the test's own ZeroMQ reaper thread (the
    # 256-byte limit keeps such topics out of the daemon's trie). Each
    # connection is closed by the daemon, and its memory does not grow.
    rss0 = d.status_kb("VmRSS")
    for k in range(200):
        sub = RawPeer(path, b"SUB")
        try:
            sub.send_all([b"\x01" + b"%03d" % k + b"j" * MiB])
        except (ConnectionResetError, BrokenPipeError):
            pass  # closed while the frame was still going out
        assert sub.closed_by_peer(), "subscription %d was not refused" % k
        sub.close()
    grew = d.status_kb("VmRSS") - rss0
    if not d.is_asan():
        assert grew < 8 * 1024, "VmRSS grew by %d kB" % grew
    assert d.proc.poll() is None
    # A normal subscriber still gets events.
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.LINGER, 0)
    sub.connect(events)
    sub.setsockopt(zmq.SUBSCRIBE, b"job/")
    sub.setsockopt(zmq.SUBSCRIBE, b"sys/")
    deadline = time.monotonic() + 20
    while True:  # a heartbeat: the subscription is in place
        assert sub.poll(int(max(0, deadline - time.monotonic()) * 1000) + 1), "no heartbeat"
        if sub.recv_multipart()[0] == b"sys/heartbeat":
            break
    jid = d.submit({"op": "test.log"})
    while True:
        assert sub.poll(int(max(0, deadline - time.monotonic()) * 1000) + 1), "no job event"
        topic, body = sub.recv_multipart()
        if topic == b"job/%d/" % jid:
            assert msgpack.unpackb(body, raw=False)["change"]["kind"] == "submit"
            break
    sub.close(0)


# ---------------------------------------------------------------------------
# 14: the data directory

def refused(data_dir):
    p = subprocess.run([JOBQD, "--data-dir", data_dir], stdout=subprocess.DEVNULL,
                       stderr=subprocess.PIPE, timeout=10)
    err = p.stderr.decode(errors="replace")
    assert "Sanitizer" not in err and "runtime error" not in err, err
    assert p.returncode != 0, "jobqd started on %s: %s" % (data_dir, err)
    lines = err.splitlines()
    assert len(lines) == 1, err
    return lines[0]


def test_an_untrustworthy_data_directory_is_refused(tmp_path):
    try:
        # Writable by others.
        d = tmp_path / "open"
        d.mkdir()
        d.chmod(0o777)
        line = refused(str(d))
        assert "data directory %s is writable by others (mode 0777)" % d in line, line
        assert os.listdir(d) == []  # nothing was made there
        # store/lock.mdb a symlink to a file of someone else's.
        d = tmp_path / "link"
        (d / "store").mkdir(parents=True, mode=0o700)
        victim = tmp_path / "victim"
        victim.write_bytes(b"precious\n")
        (d / "store" / "lock.mdb").symlink_to(victim)
        line = refused(str(d))
        assert "%s/store/lock.mdb is a symlink" % d in line, line
        assert victim.read_bytes() == b"precious\n"
        assert sorted(os.listdir(d / "store")) == ["lock.mdb"]
        # jobq.sock a regular file.
        d = tmp_path / "file"
        d.mkdir(mode=0o700)
        (d / "jobq.sock").write_bytes(b"not a socket")
        line = refused(str(d))
        assert "%s/jobq.sock is a regular file where jobqd keeps its own socket" % d in line, line
        assert (d / "jobq.sock").read_bytes() == b"not a socket"
        # Writable by its group.
        d = tmp_path / "group"
        d.mkdir()
        d.chmod(0o770)
        line = refused(str(d))
        assert "data directory %s is writable by its group (mode 0770)" % d in line, line
        # In a directory anyone may write to, without the sticky bit: anyone
        # could put another data directory in its place.
        parent = tmp_path / "public"
        parent.mkdir()
        parent.chmod(0o777)
        d = parent / "data"
        line = refused(str(d))
        assert ("%s, the parent of data directory %s, is writable by others without the sticky "
                "bit" % (parent, d)) in line, line
        assert os.listdir(parent) == []
        # store/data.mdb a hard link to a file elsewhere.
        d = tmp_path / "hardlink"
        (d / "store").mkdir(parents=True, mode=0o700)
        other = tmp_path / "other.mdb"
        other.write_bytes(b"not jobq's\n")
        os.link(other, d / "store" / "data.mdb")
        line = refused(str(d))
        assert "%s/store/data.mdb has 2 hard links" % d in line, line
        assert other.read_bytes() == b"not jobq's\n"
        # The data directory itself a symlink.
        real = tmp_path / "real"
        real.mkdir(mode=0o700)
        d = tmp_path / "symlinked"
        d.symlink_to(real)
        line = refused(str(d))
        assert "data directory %s is a symlink" % d in line, line
        assert os.listdir(real) == []
    finally:
        shutil.rmtree(tmp_path, ignore_errors=True)


def test_a_fresh_data_directory_is_created_private(jobqd):
    d = jobqd(name="new/deeper/data")
    for path in (jobqd.tmp / "new", jobqd.tmp / "new" / "deeper", d.dir, d.dir + "/store"):
        mode = stat.S_IMODE(os.lstat(path).st_mode)
        assert (mode & ~0o750) == 0, (path, oct(mode))
    for sock in ("jobq.sock", "events.sock"):
        st = os.lstat(os.path.join(d.dir, sock))
        assert stat.S_ISSOCK(st.st_mode), sock
        assert stat.S_IMODE(st.st_mode) == 0o660, (sock, oct(st.st_mode))
    assert d.call("ping")["protocol"] == 1
