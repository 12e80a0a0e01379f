"""A jobq worker in Python: the worker side of docs/protocol.md, "Workers".

A :class:`Worker` connects to jobqd's worker endpoint with one ZeroMQ
DEALER socket, says ``hello`` with the opcodes declared on it and its
capacity, runs each ``assign`` in a handler thread of its own, and sends
the handler's feedback and its result (``done``) back. It does what
libjobq's worker API does (clients/jobq_worker.c): heartbeats whenever it
has sent nothing for the interval the ``welcome`` gives, a new connection
and a new ``hello`` when the daemon is silent for the lease time or says
``disconnect`` (every lease of the old connection is then revoked
locally), ``disconnect`` when it stops, and nothing ever sent for a lease
it no longer holds.

Example::

    import jobq

    worker = jobq.Worker(name="resizer", capacity=4)

    @worker.opcode("img.resize", args=[{"name": "path", "type": "string", "required": True}],
                   description="Resize an image", timeout=600)
    def resize(job: jobq.worker.Assignment) -> dict:
        job.feedback("resizing " + job.args["path"])
        if job.cancelled.wait(2):          # sleeps, wakes at once on cancel
            raise RuntimeError("stopped: " + str(job.stop_reason))
        return {"ok": True}

    worker.run()                           # until worker.stop()

Threads: the thread that calls :meth:`Worker.run` owns the socket. Handler
threads never touch it: what they send goes into an outbox (a deque, and a
pipe the run loop polls to learn of it), and the run thread checks that
the lease is still held before it forwards anything. A handler thread
that finished waits a while for the next assignment instead of ending,
so a busy worker does not start a thread per opcode.
"""
from __future__ import annotations

import collections
import logging
import os
import queue
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Deque, Optional, Sequence, Union

import msgpack  # type: ignore[import]  # Debian ships no stubs
import zmq

from . import protocol
from .errors import JobqError
from .keys import setup_curve
from .protocol import split_endpoints

__all__ = ["Worker", "Assignment", "WorkerError", "default_worker_endpoint"]

log = logging.getLogger("jobq.worker")

PROTOCOL_VERSION = 1
#: Limits of the worker protocol (docs/protocol.md, "Workers"; jobq.h).
MAX_CAPACITY = 1024
MAX_OPCODES = 256
MAX_NAME = 64
MAX_OP_NAME = 64
MAX_ENTRY_TYPE = 32
MAX_LOG_MESSAGE = 4096
#: Before a welcome says otherwise: the daemon's defaults (seconds).
DEFAULT_HEARTBEAT = 1.0
DEFAULT_LEASE = 5.0
#: Back-off between connections that were never welcomed (seconds).
RECONNECT_MIN = 0.1
RECONNECT_MAX = 2.0
_HELLO_WAIT_MIN = 0.2  # a cluster: shortest wait for a welcome
#: How long stop lets the disconnect message leave (milliseconds).
DISCONNECT_LINGER_MS = 1000
#: Largest message accepted from the daemon (as libjobq).
MAX_MESSAGE_BYTES = 64 * 1024 * 1024
#: How long a handler thread with nothing to do waits for the next
#: assignment before it ends (seconds).
HANDLER_IDLE_SECONDS = 10.0
#: Codes that make a refused hello final: the same hello would be refused again.
FATAL_HELLO_CODES = ("BadArgument", "Malformed", "VersionMismatch", "PermissionDenied")

_OPCODE_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")
_ARG_KEYS = {"name": str, "type": str, "required": bool, "description": str}

Lease = tuple[int, int, int]
Handler = Callable[["Assignment"], Any]


class WorkerError(Exception):
    """The worker cannot go on: the daemon refused its hello (a bad
    declaration, a built-in opcode's name...), or it was set up wrong.

    ``code`` is the daemon's error code ("BadArgument"...) or
    "BadArgument" for a mistake found before connecting.
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


def _checkout_root() -> Optional[Path]:
    """The jobq checkout this package is imported from, or None when it is
    installed (the file is not at <checkout>/clients/python/jobq/)."""
    here = Path(__file__).resolve().parent
    root = here.parent.parent.parent
    if (here.parent.name == "python" and here.parent.parent.name == "clients"
            and (root / "clients" / "jobq.h").is_file() and (root / "CMakeLists.txt").is_file()):
        return root
    return None


def default_worker_endpoint() -> str:
    """The endpoint a worker uses when given none, as jobq-worker picks it:
    ``$JOBQ_WORKER_ENDPOINT`` when set and not empty, else
    ``ipc://RUN_DIR/workers.sock`` with the default run directory:
    ``<checkout>/var/jobq`` when this package is used from a checkout
    (as a build tree's jobqd defaults to), ``/run/jobq`` when installed."""
    env = os.environ.get("JOBQ_WORKER_ENDPOINT")
    if env:
        return env
    root = _checkout_root()
    run_dir = str(root / "var" / "jobq") if root else "/run/jobq"
    return f"ipc://{run_dir}/workers.sock"


def _clean(text: Any, limit: int) -> str:
    """text as a str that is valid UTF-8 (what cannot be encoded becomes
    "?", like libjobq) and at most limit bytes, cut between characters."""
    if isinstance(text, (bytes, bytearray)):
        s = bytes(text).decode("utf-8", errors="replace").replace("\ufffd", "?")
    else:
        s = text if isinstance(text, str) else str(text)
    raw: bytes = s.encode("utf-8", errors="replace")
    if len(raw) > limit:
        raw = raw[:limit]
        return raw.decode("utf-8", errors="ignore")
    return raw.decode("utf-8")


def _now() -> float:
    return time.monotonic()


def _pack(message: dict[str, Any]) -> bytes:
    """One worker message (a map whose first keys are v and type)."""
    data: bytes = msgpack.packb(message, use_bin_type=True)
    return data


def _message(type_: str, **keys: Any) -> dict[str, Any]:
    """A worker message map with v and type first, then keys in order."""
    m: dict[str, Any] = {"v": PROTOCOL_VERSION, "type": type_}
    m.update(keys)
    return m


def hello_message(opcodes: Sequence[Union[str, dict[str, Any]]], capacity: int,
                  name: Optional[str] = None,
                  leases: Optional[Sequence[Lease]] = None) -> dict[str, Any]:
    """The hello map, keys in libjobq's order (v, type, name, capacity,
    opcodes, then ``leases``: the work still running from a connection
    given up, for a cluster's new leader to resume)."""
    m = _message("hello")
    if name:
        m["name"] = name
    m["capacity"] = capacity
    m["opcodes"] = list(opcodes)
    if leases:
        m["leases"] = [list(x) for x in leases]
    return m


def feedback_message(lease: Lease, entries: Sequence[tuple[str, str]]) -> dict[str, Any]:
    """A feedback map for lease with [type, message] entries."""
    return _message("feedback", job=lease[0], op=lease[1], attempt=lease[2],
                    entries=[[t, m] for t, m in entries])


def done_message(lease: Lease, ok: bool, result: Any = None, error: str = "") -> dict[str, Any]:
    """A done map: ok with result, or not ok with error."""
    if ok:
        return _message("done", job=lease[0], op=lease[1], attempt=lease[2], ok=True,
                        result=result)
    return _message("done", job=lease[0], op=lease[1], attempt=lease[2], ok=False,
                    error=_clean(error, MAX_LOG_MESSAGE))


@dataclass
class Assignment:
    """One opcode to run: what a handler receives.

    The lease is ``(job, op, attempt)``. ``cancelled`` is set when the
    work should stop: the job was canceled (``stop_reason`` "canceled"),
    it ran past its time limit ("timeout"), the lease was revoked or lost
    with the connection ("revoked: ..."), or the worker is stopping
    ("stopping"). After a cancel or a timeout the handler should return
    (or raise) soon: its answer ends the opcode. After a revoke anything it
    sends or returns is dropped.
    """

    job: int
    op: int
    attempt: int
    opcode: str
    args: dict[str, Any]
    priority: int
    timeout: Optional[float]
    cancelled: threading.Event = field(default_factory=threading.Event, repr=False)
    #: Why ``cancelled`` was set first: "canceled", "timeout",
    #: "revoked: REASON" or "stopping"; None while the work may go on.
    stop_reason: Optional[str] = None
    #: True once the lease is gone (revoked, lost with its connection, or
    #: handed back by stop): nothing more for it reaches the daemon.
    revoked: bool = False
    _send: Optional["_Sender"] = field(default=None, repr=False)

    @property
    def lease(self) -> Lease:
        """(job, op, attempt): the one try of one opcode this is."""
        return (self.job, self.op, self.attempt)

    @property
    def stopping(self) -> bool:
        """True once the work should stop (see ``cancelled``)."""
        return self.cancelled.is_set()

    def feedback(self, message: Any, type: str = "message") -> None:
        """Adds a log entry of this type to the opcode's job log (seen by
        `jobq watch` and every watcher while the handler runs). The message
        is cut to 4096 bytes; type has 1 to 32 bytes. Does nothing once the
        lease is revoked."""
        self.feedback_entries([(type, message)])

    def feedback_entries(self, entries: Sequence[tuple[str, Any]]) -> None:
        """Several log entries at once, in order, in one message (1 to 1000)."""
        if not 1 <= len(entries) <= 1000:
            raise ValueError("feedback: 1 to 1000 entries")
        if self.revoked:
            return
        clean = []
        for t, m in entries:
            if not isinstance(t, str) or not 1 <= len(t.encode("utf-8", "replace")) <= MAX_ENTRY_TYPE:
                raise ValueError(f"feedback: an entry's type has 1 to {MAX_ENTRY_TYPE} bytes")
            clean.append((_clean(t, MAX_ENTRY_TYPE), _clean(m, MAX_LOG_MESSAGE)))
        if self._send is not None:
            self._send("feedback", self.lease, _pack(feedback_message(self.lease, clean)))

    def progress(self, current: float, total: Optional[float] = None,
                 message: Optional[str] = None) -> None:
        """A log entry of type "progress": "current/total" (or "current"),
        then the message when given."""
        def num(x: float) -> str:
            return str(int(x)) if float(x).is_integer() else f"{x:g}"
        text = num(current) if total is None else f"{num(current)}/{num(total)}"
        if message:
            text += " " + message
        self.feedback(text, type="progress")

    def sleep(self, seconds: float) -> bool:
        """Waits up to seconds; returns True at once when the work is
        cancelled meanwhile (the handler should then stop)."""
        return self.cancelled.wait(seconds)


Outgoing = tuple[str, Lease, bytes]


class _Outbox:
    """Handler threads to the run thread: messages in a deque, and one byte
    on a pipe whose read end the run loop polls, written only when the run
    thread has not been woken already. A pipe rather than a ZeroMQ socket
    per handler thread (which cost more than a short handler itself), and
    one that :meth:`Worker.stop` may write to from a signal handler."""

    def __init__(self) -> None:
        self.rfd, self._wfd = os.pipe()
        os.set_blocking(self.rfd, False)
        os.set_blocking(self._wfd, False)
        self._items: Deque[Outgoing] = collections.deque()
        self._lock = threading.Lock()
        self._woken = False

    def put(self, item: Outgoing) -> None:
        """Queues one message and wakes the run thread if it is not yet."""
        with self._lock:
            self._items.append(item)
            if self._woken:
                return
            self._woken = True
        self.wake()

    def wake(self) -> None:
        """Makes the run loop's poll return (takes no lock: signal-safe)."""
        fd = self._wfd
        if fd < 0:
            return
        try:
            os.write(fd, b"!")
        except OSError:
            pass  # full: a wake-up is pending already; closed: stopping

    def take(self) -> list[Outgoing]:
        """Everything queued, in order; clears the wake-up."""
        try:
            os.read(self.rfd, 4096)
        except OSError:
            pass
        with self._lock:
            self._woken = False
            items = list(self._items)
            self._items.clear()
        return items

    def __del__(self) -> None:
        # Only once nothing refers to it (the worker, a run, a stray handler
        # thread's sender): no write can reach a reused descriptor.
        for fd in (self.rfd, self._wfd):
            try:
                os.close(fd)
            except OSError:
                pass


class _Pool:
    """One run's handler threads: those waiting for an assignment are
    counted in ``idle`` (under ``lock``), and take it from ``jobs``. A
    run's threads keep their own pool: a handler abandoned by an earlier
    run never joins a later one's."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.jobs: queue.SimpleQueue[Optional[tuple[Assignment, Optional[_Opcode]]]] = \
            queue.SimpleQueue()
        self.idle = 0
        self.closing = False
        self.threads: list[threading.Thread] = []

    def become_idle(self) -> bool:
        """Counts the calling thread as waiting; False when the run ends."""
        with self.lock:
            if self.closing:
                return False
            self.idle += 1
            return True

    def close(self) -> list[threading.Thread]:
        """Ends the run: every waiting thread is told to end; returns the
        threads to join."""
        with self.lock:
            self.closing = True
            idle, self.idle = self.idle, 0
            threads, self.threads = self.threads, []
        for _ in range(idle):
            self.jobs.put(None)  # each waiting thread takes one and ends
        return threads


class _Sender:
    """What one assignment's handler sends, into the outbox; nothing once
    the handler is over (a stray thread of the handler's says nothing)."""

    def __init__(self, outbox: _Outbox) -> None:
        self._outbox = outbox
        self._closed = False

    def __call__(self, kind: str, lease: Lease, body: bytes) -> None:
        """Queues one message for lease (kind "feedback" or "done", body
        its bytes, sent as they are)."""
        if not self._closed:
            self._outbox.put((kind, lease, body))

    def close(self) -> None:
        """Ends the handler's turn: what it sends afterwards is dropped."""
        self._closed = True


@dataclass
class _Opcode:
    name: str
    handler: Handler
    decl: Union[str, dict[str, Any]]


class Worker:
    """A jobq worker: declares opcodes, runs up to ``capacity`` of them at
    once in handler threads, reconnects by itself.

    ``endpoint``: jobqd's worker endpoint (default
    :func:`default_worker_endpoint`), or several (a cluster's nodes) as
    ``"ep1,ep2"`` or a list: a hello answered NotLeader goes to the
    leader's worker endpoint; a connection given up moves to the next
    endpoint, and the leases still running are named in the next hello:
    those the daemon's ``welcome`` does not list in ``resumed`` are
    revoked then (all of them when it has no ``resumed``). ``name``: for people, shown in the
    ``worker`` field of the opcodes it runs (at most 64 bytes).
    ``capacity``: 1 to 1024 opcodes at once.
    """

    def __init__(self, endpoint: Union[str, Sequence[str], None] = None,
                 name: Optional[str] = None,
                 capacity: int = 1, *, key: Optional[str] = None,
                 server_key: Optional[str] = None) -> None:
        if not isinstance(capacity, int) or not 1 <= capacity <= MAX_CAPACITY:
            raise ValueError(f"capacity: 1 to {MAX_CAPACITY}, not {capacity!r}")
        if name is not None and len(name.encode("utf-8")) > MAX_NAME:
            raise ValueError(f"name: at most {MAX_NAME} bytes")
        if endpoint is not None and not endpoint:
            raise ValueError("endpoint: empty")
        #: The configured endpoints; ``endpoint`` is the one in use.
        self.endpoints: list[str] = split_endpoints(endpoint or default_worker_endpoint())
        self.endpoint: str = self.endpoints[0]
        self._cur = 0
        self._hops = 0  # NotLeader answers to hellos followed since the last welcome
        self._moved = False  # a hello was answered NotLeader: a cluster
        self._resuming = False  # held leases outlived their connection
        self._welcome_hb = 0.0  # heartbeat of the last welcome (0: none yet)
        # A cluster: the dones of the last lease time (when, lease, its
        # assignment, bytes): a leader that died before reading one never
        # saw it, and the next one must get it. _recalled: those whose
        # leases were held again for that.
        self._dones: Deque[tuple[float, Lease, Assignment, bytes]] = collections.deque()
        self._recalled: set[Lease] = set()
        self.name: Optional[str] = name or None
        self.capacity: int = capacity
        #: CURVE over TCP (docs/security.md): a key of role worker and the
        #: daemon's public key; else $JOBQ_KEY and $JOBQ_SERVER_KEY.
        self.key: Optional[str] = key
        self.server_key: Optional[str] = server_key
        self._opcodes: dict[str, _Opcode] = {}
        # Set by stop(), read by the run loop: a plain flag, as stop() may
        # run in a signal handler, which must not wait for a lock.
        self._stopping = False
        self._running = False
        self._lock = threading.Lock()  # leases and state read by other threads
        self._ctx: Optional[zmq.Context[Any]] = None
        self._outbox = _Outbox()
        self._pool = _Pool()
        self._leases: dict[Lease, Assignment] = {}
        self.worker_id: Optional[int] = None
        self.heartbeat: float = DEFAULT_HEARTBEAT
        self.lease_time: float = DEFAULT_LEASE
        self._ready = False
        #: How many connections this worker opened (1 after the first hello).
        self.connections: int = 0
        #: Messages from the daemon that made no sense (dropped).
        self.malformed: int = 0

    # -- declarations ------------------------------------------------------

    def opcode(self, name: str, *, args: Optional[Sequence[Union[str, dict[str, Any]]]] = None,
               description: Optional[str] = None,
               timeout: Optional[float] = None) -> Callable[[Handler], Handler]:
        """Decorator: the function serves opcode ``name``.

        ``args``: the complete argument list, each
        ``{"name": str, "type": str, "required": bool, "description": str}``
        (only "name" needed; a bare str is a name) — submit refuses any
        other argument, or a missing required one; None: any arguments.
        ``description``: for ``jobq list-opcodes``. ``timeout``: default
        time limit of one attempt, seconds > 0.

        The function gets an :class:`Assignment` and returns the result
        (anything msgpack encodes), or raises: the opcode then fails with
        the exception's message."""
        def register(fn: Handler) -> Handler:
            self.add_opcode(name, fn, args=args, description=description, timeout=timeout)
            return fn
        return register

    def add_opcode(self, name: str, handler: Handler, *,
                   args: Optional[Sequence[Union[str, dict[str, Any]]]] = None,
                   description: Optional[str] = None, timeout: Optional[float] = None) -> None:
        """Declares opcode ``name`` served by ``handler`` (see :meth:`opcode`).
        Raises ValueError for a bad name or declaration."""
        if self._running:
            raise ValueError(f"opcode {name}: declared after the worker started")
        if not isinstance(name, str) or not 1 <= len(name) <= MAX_OP_NAME or \
                not set(name) <= _OPCODE_CHARS:
            raise ValueError(f"opcode name {name!r} is not 1 to {MAX_OP_NAME} letters, "
                             "digits and \"._-\"")
        if name in self._opcodes:
            raise ValueError(f"opcode {name} declared twice")
        if len(self._opcodes) >= MAX_OPCODES:
            raise ValueError(f"opcode {name}: more than {MAX_OPCODES} opcodes")
        decl: dict[str, Any] = {"name": name}
        if description is not None:
            if not isinstance(description, str):
                raise ValueError(f"opcode {name}: description is not a str")
            decl["description"] = description
        if args is not None:
            out = []
            for i, a in enumerate(args):
                if isinstance(a, str):
                    a = {"name": a}
                if not isinstance(a, dict) or not isinstance(a.get("name"), str) or not a["name"]:
                    raise ValueError(f"opcode {name}: argument {i + 1} has no non-empty \"name\"")
                for k, v in a.items():
                    if k not in _ARG_KEYS:
                        raise ValueError(f"opcode {name}, argument {a['name']}: unknown key "
                                         f"\"{k}\" (an argument has name, type, required and "
                                         "description)")
                    if not isinstance(v, _ARG_KEYS[k]):
                        raise ValueError(f"opcode {name}, argument {a['name']}: wrong type of "
                                         f"\"{k}\"")
                out.append(dict(a))
            decl["args"] = out
        if timeout is not None:
            if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or \
                    not timeout > 0 or timeout != timeout or timeout == float("inf"):
                raise ValueError(f"opcode {name}: timeout is not a number of seconds > 0")
            decl["timeout"] = timeout
        self._opcodes[name] = _Opcode(name, handler, decl)

    # -- state -------------------------------------------------------------

    @property
    def ready(self) -> bool:
        """True between a welcome and the end of that connection."""
        return self._ready

    def leases(self) -> list[Lease]:
        """The leases held now (assigned, not finished or revoked)."""
        with self._lock:
            return list(self._leases)

    # -- running -----------------------------------------------------------

    def stop(self) -> None:
        """Makes :meth:`run` return soon: it sends ``disconnect`` (the
        daemon puts every opcode this worker holds back in the queue as
        its next attempt), sets ``cancelled`` of every running handler and
        closes the connection. Safe from any thread and from a signal
        handler."""
        self._stopping = True
        self._outbox.wake()

    def run(self, join_timeout: float = 5.0) -> None:
        """Connects, says hello and serves assignments until :meth:`stop`.

        Raises :class:`WorkerError` when the daemon refuses the hello as
        wrong (BadArgument, Malformed, VersionMismatch, PermissionDenied: a key whose
        role is not worker); any other trouble
        (no daemon, a restart, silence) only makes it connect again. On
        return every handler thread was told to stop and was given up to
        ``join_timeout`` seconds to end (they are daemon threads)."""
        if not self._opcodes:
            raise WorkerError("BadArgument", "no opcodes declared")
        if self._running:
            raise RuntimeError("Worker.run is already running")
        self._running = True
        self._ctx = zmq.Context()
        self._outbox.take()  # a wake-up left by an earlier run
        self._pool = _Pool()
        self._sock: Optional[zmq.Socket[Any]] = None
        self._state = "off"
        self._backoff = RECONNECT_MIN
        self._reconnect_at = _now()
        self._last_sent = self._last_heard = _now()
        self._out: Deque[tuple[str, Lease, bytes]] = collections.deque()
        try:
            self._loop()
        finally:
            self._shutdown(join_timeout)

    def _loop(self) -> None:
        while not self._stopping:
            if self._state == "off" and _now() >= self._reconnect_at:
                self._open()
            if self._silent():
                continue
            if self._state == "ready" and _now() - self._last_sent >= self.heartbeat:
                self._send_raw(_pack(_message("heartbeat")))
            poller = zmq.Poller()
            poller.register(self._outbox.rfd, zmq.POLLIN)
            if self._sock is not None:
                waiting = bool(self._out) and self._state == "ready"
                poller.register(self._sock, zmq.POLLIN | (zmq.POLLOUT if waiting else 0))
            try:
                ready = dict(poller.poll(int(self._timeout() * 1000) + 1))
            except KeyboardInterrupt:
                self._stopping = True
                raise
            # What the daemon said first, then whether it has been silent
            # too long (a process stopped for a while wakes up here), and
            # only then what the handlers sent: an answer for a lease lost
            # meanwhile is dropped, never sent on a dead connection.
            if self._sock is not None and ready.get(self._sock, 0) & zmq.POLLIN:
                self._read()
            self._silent()
            if self._outbox.rfd in ready:
                self._drain_outbox()
            elif self._out:
                self._flush_out()

    def _silent(self) -> bool:
        """Gives the connection up when the daemon said nothing for the
        lease time (or sent no welcome within it); True when it did."""
        if self._state == "off":
            return False
        now = _now()
        if now - self._last_heard < self.lease_time:
            return False
        what = "jobqd silent" if self._state == "ready" else "no welcome"
        self._drop(f"{what} for {now - self._last_heard:.1f} s")
        return True

    def _timeout(self) -> float:
        """Seconds until the loop must run again."""
        now = _now()
        if self._state == "off":
            return max(0.0, self._reconnect_at - now)
        due = self._last_heard + self.lease_time
        if self._state == "ready":
            due = min(due, self._last_sent + self.heartbeat)
        return max(0.0, min(due - now, 3600.0))

    # -- connections -------------------------------------------------------

    def _open(self) -> None:
        assert self._ctx is not None
        self.heartbeat, self.lease_time = DEFAULT_HEARTBEAT, DEFAULT_LEASE
        if len(self.endpoints) > 1 or self._moved:
            # A cluster: a node that is up answers a hello at once; one that
            # is gone (a dead leader's, named by a node that does not know
            # yet) must not keep the worker past the new leader's wait.
            self.lease_time = max(_HELLO_WAIT_MIN, 2 * (self._welcome_hb or DEFAULT_HEARTBEAT))
        sock = self._ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.MAXMSGSIZE, MAX_MESSAGE_BYTES)
        try:
            setup_curve(sock, self.endpoint, self.key, self.server_key)
        except JobqError as e:
            sock.close(0)
            raise WorkerError("BadArgument", e.message) from None
        try:
            sock.connect(self.endpoint)
        except zmq.ZMQError as e:
            sock.close(0)
            raise WorkerError("BadArgument", f"cannot connect to {self.endpoint}: {e}") from e
        self._sock = sock
        self._state = "hello"
        self.connections += 1
        self._last_heard = _now()  # the welcome has a lease time to come
        decls = [o.decl for o in self._opcodes.values()]
        with self._lock:
            leases = sorted(self._leases) if self._resuming else None
        self._send_raw(_pack(hello_message(decls, self.capacity, self.name, leases)))

    def _drop(self, why: str) -> None:
        """Gives up the connection: every lease is revoked locally (the
        daemon handles the old connection as a lost worker's), the next
        connection is scheduled."""
        welcomed = self._state == "ready"
        cluster = len(self.endpoints) > 1 or self._moved
        if not cluster:
            self._out.clear()  # for leases of that connection: revoked below
        if self._sock is not None:
            self._sock.close(0)
            self._sock = None
        self._state = "off"
        self._ready = False
        if welcomed:
            log.warning("lost jobqd at %s: %s; reconnecting", self.endpoint, why)
        else:
            log.info("no connection to jobqd at %s: %s", self.endpoint, why)
        if cluster:
            # The leases may go on under the next leader (the next hello
            # names them), and so may those whose done this connection may
            # have lost; the next node is tried.
            now = _now()
            with self._lock:
                for at, lease_, a, body in reversed(self._dones):
                    if now - at <= self.lease_time and lease_ not in self._leases:
                        self._leases[lease_] = a
                        self._recalled.add(lease_)
                        self._out.appendleft(("done", lease_, body))
                self._dones.clear()
                self._resuming = self._resuming or bool(self._leases)
            self._cur = (self._cur + 1) % len(self.endpoints)
            self.endpoint = self.endpoints[self._cur]
        else:
            self._revoke_all(f"connection to jobqd given up: {why}")
        if welcomed:
            self._backoff = RECONNECT_MIN
            self._reconnect_at = _now()
        else:
            self._reconnect_at = _now() + self._backoff
            self._backoff = min(self._backoff * 2, RECONNECT_MAX)

    def _revoke_all(self, why: str) -> None:
        """Every lease held is revoked locally."""
        with self._lock:
            held = [a for lease_, a in self._leases.items() if lease_ not in self._recalled]
            self._leases.clear()
            self._resuming = False
        self._out.clear()
        self._recalled.clear()
        for a in held:
            self._stop_assignment(a, f"revoked: {why}")

    def _resume(self, resumed: Any) -> None:
        """After the welcome to a hello that named leases: keep those the
        daemon adopted, revoke the others (all when it says nothing)."""
        if not isinstance(resumed, list):
            self._revoke_all("the new connection's daemon did not resume it")
            return
        kept = {tuple(r) for r in resumed if isinstance(r, list) and len(r) == 3}
        with self._lock:
            self._resuming = False
            gone = [a for lease_, a in self._leases.items() if lease_ not in kept]
            for a in gone:
                del self._leases[a.lease]
        for a in gone:
            if a.lease not in self._recalled:  # (a recalled done: its handler ended)
                self._stop_assignment(a, "revoked: not resumed by the new leader")
        self._recalled &= kept  # the others' dones go out now

    def _follow_leader(self, leader: Any, msg: str) -> None:
        """The hello was answered NotLeader: to the leader's worker
        endpoint, or (no leader known) to the next configured one a moment
        later."""
        self._moved = True
        if self._sock is not None:
            self._sock.close(0)
            self._sock = None
        self._state = "off"
        workers = [e for e in (leader.get("workers") or []) if isinstance(e, str)] \
            if isinstance(leader, dict) else []
        to = next((e for e in workers if e in self.endpoints), None)
        if to is None:
            scheme = self.endpoint.split("://", 1)[0] + "://"
            to = next((e for e in workers if e.startswith(scheme)), None)
        if to is not None and self._hops < protocol.MAX_HOPS:
            self._hops += 1
            self.endpoint = to
            self._reconnect_at = _now()
            return
        if to is not None:
            log.warning("no leader reached after %d hops: %s", protocol.MAX_HOPS, msg)
            self._hops = 0
        self._cur = (self._cur + 1) % len(self.endpoints)
        self.endpoint = self.endpoints[self._cur]
        self._reconnect_at = _now() + (self._backoff if to is not None
                                       else protocol.LEADER_WAIT)

    def _send_raw(self, data: bytes) -> bool:
        if self._sock is None:
            return False
        try:
            self._sock.send(data, zmq.DONTWAIT)
        except zmq.Again:
            return False  # the connection is full for now
        self._last_sent = _now()
        return True

    def _flush_out(self) -> None:
        """Sends the handlers' messages waiting for room, in order; a lease
        is let go only once its done went out (a done dropped on a full
        connection would leave the opcode running on the daemon)."""
        while self._out and self._state == "ready":
            kind, lease, body = self._out[0]
            with self._lock:
                held = lease in self._leases
            if held and not self._send_raw(body):
                return  # full: the loop polls for room
            self._out.popleft()
            if held and kind == "done":
                with self._lock:
                    a = self._leases.pop(lease, None)
                self._recalled.discard(lease)
                if a is not None and (len(self.endpoints) > 1 or self._moved):
                    now = _now()
                    while self._dones and now - self._dones[0][0] > self.lease_time:
                        self._dones.popleft()
                    self._dones.append((now, lease, a, body))

    # -- from the daemon ---------------------------------------------------

    def _read(self) -> None:
        while self._sock is not None:
            try:
                frames = self._sock.recv_multipart(zmq.DONTWAIT)
            except zmq.Again:
                return
            self._last_heard = _now()
            if len(frames) != 1:
                self.malformed += 1
                continue
            try:
                m = msgpack.unpackb(frames[0], raw=False, strict_map_key=False)
            except Exception:  # noqa: BLE001 - anything the unpacker says is malformed
                self.malformed += 1
                continue
            if not isinstance(m, dict) or m.get("v") != PROTOCOL_VERSION:
                self.malformed += 1
                continue
            self._on_message(m)

    @staticmethod
    def _lease_of(m: dict[str, Any]) -> Optional[Lease]:
        try:
            lease = (m["job"], m["op"], m["attempt"])
        except KeyError:
            return None
        if all(isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in lease):
            return lease
        return None

    def _on_message(self, m: dict[str, Any]) -> None:
        t = m.get("type")
        if t == "welcome":
            hb, lease = m.get("heartbeat"), m.get("lease")
            if self._state != "hello" or not isinstance(m.get("worker"), int) or \
                    not isinstance(hb, (int, float)) or not isinstance(lease, (int, float)) or \
                    not hb > 0 or not lease > 0:
                self.malformed += 1
                return
            self._state = "ready"
            self._ready = True
            self._backoff = RECONNECT_MIN
            self._hops = 0
            if self._resuming:
                self._resume(m.get("resumed"))
            self.worker_id = m["worker"]
            self.heartbeat = min(max(float(hb), 0.01), 3600.0)
            self.lease_time = max(min(float(lease), 86400.0), 2 * self.heartbeat)
            self._welcome_hb = self.heartbeat
            log.info("connected to jobqd at %s (worker %s, heartbeat %g s, lease %g s)",
                     self.endpoint, self.worker_id, hb, lease)
        elif t == "assign":
            self._on_assign(m)
        elif t in ("cancel", "revoke"):
            lease_ = self._lease_of(m)
            if lease_ is None:
                self.malformed += 1
                return
            reason = m.get("reason") if isinstance(m.get("reason"), str) else ""
            with self._lock:
                a = self._leases.get(lease_)
                if a is not None and t == "revoke":
                    del self._leases[lease_]
            if a is None:
                return  # finished, or never ours
            if t == "revoke":
                self._stop_assignment(a, f"revoked: {reason}")
            else:
                self._stop_assignment(a, reason or "canceled", revoked=False)
        elif t == "error":
            code = m.get("code") if isinstance(m.get("code"), str) else "Internal"
            msg = m.get("message") if isinstance(m.get("message"), str) else ""
            if self._state == "hello" and code == "NotLeader":
                self._follow_leader(m.get("leader"), str(msg))
                return
            if self._state == "hello":
                if code in FATAL_HELLO_CODES:
                    if self._sock is not None:
                        self._sock.close(0)
                        self._sock = None
                    self._state = "off"
                    raise WorkerError(code, f"jobqd at {self.endpoint} refused the hello: {msg}")
                self._drop(f"jobqd refused the hello for now: {msg}")
                return
            log.warning("jobqd refused a message: %s: %s%s", code, msg,
                        "" if self._lease_of(m) is None else f" (lease {self._lease_of(m)})")
        elif t == "disconnect":
            reason = m.get("reason") if isinstance(m.get("reason"), str) else "no reason"
            self._drop(f"jobqd said disconnect: {reason}")
        elif t != "heartbeat":
            self.malformed += 1

    def _on_assign(self, m: dict[str, Any]) -> None:
        lease = self._lease_of(m)
        opcode, args, prio, tmo = m.get("opcode"), m.get("args"), m.get("priority", 0), \
            m.get("timeout")
        if self._state != "ready" or lease is None or not isinstance(opcode, str) or \
                (args is not None and not isinstance(args, dict)) or \
                not isinstance(prio, int) or \
                (tmo is not None and not (isinstance(tmo, (int, float)) and tmo >= 0)):
            self.malformed += 1
            return
        with self._lock:
            if lease in self._leases:
                self.malformed += 1
                return
        a = Assignment(job=lease[0], op=lease[1], attempt=lease[2], opcode=opcode,
                       args=args or {}, priority=prio,
                       timeout=float(tmo) if tmo else None)
        spec = self._opcodes.get(opcode)
        with self._lock:
            self._leases[lease] = a
        a._send = _Sender(self._outbox)
        pool = self._pool
        with pool.lock:
            if pool.idle > 0:
                pool.idle -= 1
                pool.jobs.put((a, spec))
                return
            pool.threads = [t for t in pool.threads if t.is_alive()]
            th = threading.Thread(target=self._handler_thread, args=(pool, a, spec),
                                  name=f"jobq-handler-{len(pool.threads) + 1}", daemon=True)
            pool.threads.append(th)
        th.start()

    @staticmethod
    def _stop_assignment(a: Assignment, reason: str, revoked: bool = True) -> None:
        """Tells a handler to stop (the first reason is kept)."""
        if revoked:
            a.revoked = True
        if not a.cancelled.is_set():
            a.stop_reason = reason
            a.cancelled.set()

    # -- handler threads ---------------------------------------------------

    def _handler_thread(self, pool: _Pool, a: Assignment, spec: Optional[_Opcode]) -> None:
        """Runs a, then the assignments handed to it while it waits idle,
        until it has waited HANDLER_IDLE_SECONDS for nothing or its run
        ends. The run thread hands an assignment to an idle thread only
        after counting it off ``pool.idle``; a thread whose wait ran out
        ends only if it can count itself off, else an assignment is on its
        way to it."""
        item: Optional[tuple[Assignment, Optional[_Opcode]]] = (a, spec)
        while item is not None:
            if not self._run_handler(pool, *item):
                return
            try:
                item = pool.jobs.get(timeout=HANDLER_IDLE_SECONDS)
            except queue.Empty:
                with pool.lock:
                    if pool.idle > 0:
                        pool.idle -= 1
                        return
                item = pool.jobs.get()

    def _run_handler(self, pool: _Pool, a: Assignment, spec: Optional[_Opcode]) -> bool:
        """Runs one handler and queues its done; True when the thread then
        counts as waiting for the next assignment (counted before the done
        leaves, so that the assignment the daemon may send at once finds
        it)."""
        send = a._send
        assert send is not None
        try:
            if spec is None:
                raise RuntimeError(f"this worker does not serve opcode {a.opcode}")
            result = spec.handler(a)
            try:
                body = _pack(done_message(a.lease, True, result))
            except Exception as e:  # noqa: BLE001 - msgpack's TypeError, ValueError...
                body = _pack(done_message(a.lease, False,
                                          error=f"the result cannot be sent: {e}"))
        except Exception as e:  # noqa: BLE001 - the handler's failure is the opcode's
            log.debug("opcode %s %s failed:\n%s", a.opcode, a.lease, traceback.format_exc())
            body = _pack(done_message(a.lease, False, error=str(e) or type(e).__name__))
        idle = pool.become_idle()
        send("done", a.lease, body)
        send.close()
        return idle

    def _drain_outbox(self) -> None:
        """Forwards what handler threads sent, for leases still held."""
        assert self._outbox is not None
        for kind, lease, body in self._outbox.take():
            with self._lock:
                held = lease in self._leases
            if not held or (self._state != "ready" and not self._resuming):
                continue  # revoked, or lost with its connection: never sent
            self._out.append((kind, lease, body))
        self._flush_out()

    # -- stopping ----------------------------------------------------------

    def _shutdown(self, join_timeout: float) -> None:
        with self._lock:
            held = list(self._leases.values())
            self._leases.clear()
        for a in held:
            self._stop_assignment(a, "stopping")
        if self._sock is not None:
            if self._state != "off" and self._send_raw(_pack(_message("disconnect"))):
                self._sock.setsockopt(zmq.LINGER, DISCONNECT_LINGER_MS)
            self._sock.close()
            self._sock = None
        self._state = "off"
        self._ready = False
        threads = self._pool.close()
        deadline = _now() + join_timeout
        for th in threads:
            th.join(max(0.0, deadline - _now()))
        if any(th.is_alive() for th in threads):
            # A handler that ignored its cancel: what it sends from now on
            # is dropped (no lease is held any more); it is a daemon thread,
            # gone with the process, and never joins a later run's pool.
            log.warning("handlers still running after %g s; abandoning them", join_timeout)
        ctx, self._ctx = self._ctx, None
        if ctx is not None:
            ctx.term()
        self._running = False
        self._stopping = False
