"""jobq.Client: one connection to jobqd, one method per protocol method.

The client follows libjobq (clients/jobq_client.c) in every behaviour a
script can observe:

- One DEALER socket in a ZeroMQ context of its own; every request carries
  an id from a per-client counter and replies are matched by it, so a
  reply that arrives after its call timed out is dropped by the next call.
- Every call has a timeout (the client's default or the call's
  ``timeout=``); past it the call raises :class:`jobq.TimeoutError`.
  Keepalives of a parked ``wait_for_job_change`` are skipped; without an
  explicit timeout each one extends that call's wait.
- Failing fast: a socket monitor tells whether the connection is up. A
  call on a connection that is down waits for the outcome of the next
  connect attempt (every 100-200 ms) and raises
  :class:`jobq.NotRunningError` when nobody listens, instead of waiting
  out its timeout.
- A request whose connection drops while it waits is sent once more after
  the reconnect when that is safe (read-only methods, submissions with a
  client token); any other raises :class:`jobq.TransportError` saying it
  may or may not have been carried out.
- Several endpoints (a cluster): the client talks to one at a time. A
  ``NotLeader`` answer did nothing, so the request goes to the leader it
  names, or (no leader known yet) to the endpoints in turn after 0.2 s; at
  most 10 hops per call. A call that cannot reach its endpoint moves to
  the next one only when sending it again is safe (nothing was sent, or a
  read-only method or a submission with a token). A single endpoint never
  moves.
"""
from __future__ import annotations

import os
import secrets
import struct
import time
from pathlib import Path
from typing import (Any, cast, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple,
                    Union)

import zmq

from . import protocol
from .keys import setup_curve
from .errors import (BadArgumentError, JobqError, MalformedError, NotLeaderError,
                     NotRunningError, PermissionDeniedError, TimeoutError, TransportError, error_for)

Token = Union[str, bytes]
Opcode = Mapping[str, Any]

#: Connection states the monitor reports (see the module comment).
_UNKNOWN, _UP, _DOWN = 0, 1, 2
#: No monitor news for this long while down: its events were lost (libjobq's CONN_QUIET_MS).
_CONN_QUIET = 0.6
_CONN_REBIND_GRACE = 0.25  # see _ensure_up
#: pyzmq's flags as plain ints on the request path: its enum types cost
#: an object per flag operation.
_NOBLOCK, _POLLIN, _EVENTS, _RCVMORE = (int(zmq.NOBLOCK), int(zmq.POLLIN), int(zmq.EVENTS),
                                       int(zmq.RCVMORE))
#: Pipelined submit_many_jobs batches in flight at once.
_BATCH_WINDOW = 8


def _monitor_event(frames: List[bytes]) -> int:
    """The event number of a socket monitor's message (libzmq's layout:
    a 16-bit event and a 32-bit value, native order, then the endpoint).
    Read here rather than with zmq.utils.monitor, whose import brings in
    asyncio: a third of a CLI command's start-up."""
    if not frames or len(frames[0]) < 6:
        return 0
    return int(struct.unpack_from("=H", frames[0])[0])


def default_endpoint() -> str:
    """The endpoint the C ``jobq`` would use: ``$JOBQ_ENDPOINT`` when set,
    else the default run directory's ``jobq.sock`` — ``<checkout>/var/jobq``
    when this package runs from a jobq checkout (as the build tree's
    ``jobq`` does), ``/run/jobq`` when installed."""
    env = os.environ.get("JOBQ_ENDPOINT")
    if env:
        return env
    return "ipc://%s/jobq.sock" % default_run_dir()


def default_run_dir() -> str:
    """The default run directory (see :func:`default_endpoint`)."""
    here = Path(__file__).resolve()
    checkout = here.parents[3] if len(here.parents) > 3 else None
    if (checkout is not None and (checkout / "proto" / "wire.h").is_file()
            and (checkout / "clients" / "python" / "jobq").is_dir()):
        return str(checkout / "var" / "jobq")
    return "/run/jobq"


def new_token() -> str:
    """A fresh client token: 16 random bytes in hex, as libjobq and the CLI
    make them (docs/protocol.md, "Client tokens")."""
    return secrets.token_hex(16)


class Client:
    """A connection to jobqd.

    ``endpoint``: ``ipc://PATH`` or ``tcp://HOST:PORT``, or several (a
    cluster's nodes) as ``"ep1,ep2"`` or a list of str; None takes
    :func:`default_endpoint`. ``endpoint`` is then the one in use (a
    leader's, perhaps not listed), ``endpoints`` the list. ``timeout``: the default timeout of every
    call, in seconds (each method also takes ``timeout=``).

    Use it as a context manager, or call :meth:`close`. A client belongs to
    one thread at a time. Failures raise :class:`jobq.JobqError`
    subclasses carrying the daemon's code and message.
    """

    def __init__(self, endpoint: Union[str, Sequence[str], None] = None,
                 timeout: float = 10.0, *,
                 key: Optional[str] = None, server_key: Optional[str] = None) -> None:
        try:
            #: The configured endpoints (several: a cluster's nodes).
            self.endpoints: List[str] = protocol.split_endpoints(endpoint or default_endpoint())
        except ValueError as e:
            raise BadArgumentError("BadArgument", str(e)) from None
        self.endpoint: str = self.endpoints[0]
        #: CURVE over TCP (docs/security.md): the client's key file and the
        #: daemon's public key (a file or Z85); else $JOBQ_KEY, $JOBQ_SERVER_KEY.
        self.key: Optional[str] = key
        self.server_key: Optional[str] = server_key
        self.timeout: float = timeout
        #: Times the client moved to another endpoint (a subscriber follows).
        self.moves = 0
        #: The ``leader`` of the last NotLeader answer.
        self.leader: Optional[Dict[str, Any]] = None
        #: A ``ping`` answered with ``cluster`` (the daemon runs --cluster).
        self.cluster = False
        self._cur = 0  # self.endpoints[self._cur]: the configured one last used
        self._via_leader = False  # the current endpoint is a NotLeader's leader's
        self._next_id = 1
        self._failed_attempts = 0
        self._checked_failures = 0
        self._drops = 0
        self._ctx = zmq.Context()
        # The others of a list are connected to later: one ZeroMQ cannot
        # connect to would fail only then, so try them now.
        for other in self.endpoints[1:]:
            probe = self._ctx.socket(zmq.DEALER)
            probe.setsockopt(zmq.LINGER, 0)
            try:
                probe.connect(other)
            except zmq.ZMQError as e:
                self._ctx.destroy(0)
                raise BadArgumentError("BadArgument", "invalid endpoint %r: %s"
                                       % (other, e)) from None
            finally:
                probe.close(0)
        self._open()

    def _open(self) -> None:
        """The DEALER and its monitor, connected to self.endpoint."""
        self._ipc_path: Optional[str] = None
        if self.endpoint.startswith("ipc://") and not self.endpoint.startswith("ipc://@"):
            self._ipc_path = self.endpoint[6:]
        self._conn = _UNKNOWN
        self._after_disconnect = False
        self._attempt_start = 0.0
        self._attempt_timed_out = False
        self._checked_failures = self._failed_attempts
        self._sock: "zmq.Socket[bytes]" = self._ctx.socket(zmq.DEALER)
        self._sock.setsockopt(zmq.LINGER, 0)
        self._sock.setsockopt(zmq.CONNECT_TIMEOUT, int(protocol.CONNECT_TIMEOUT * 1000))
        try:
            setup_curve(self._sock, self.endpoint, self.key, self.server_key)
        except JobqError:
            self._sock.close(0)
            self._ctx.term()
            raise
        # The monitor before the connect, so that the first attempt is seen.
        self._mon: "zmq.Socket[bytes]" = self._sock.get_monitor_socket(
            zmq.EVENT_CONNECTED | zmq.EVENT_CONNECT_DELAYED | zmq.EVENT_CONNECT_RETRIED
            | zmq.EVENT_DISCONNECTED | zmq.EVENT_HANDSHAKE_FAILED_AUTH
            | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
            | zmq.EVENT_HANDSHAKE_SUCCEEDED)
        # A CURVE handshake the daemon refused: said at once, not as a timeout.
        self._refused: Optional[JobqError] = None
        # One poller for every call (making one per call was a tenth of a
        # small call's client CPU).
        self._poller = zmq.Poller()
        self._poller.register(self._sock, zmq.POLLIN)
        self._poller.register(self._mon, zmq.POLLIN)
        try:
            self._sock.connect(self.endpoint)
        except zmq.ZMQError as e:
            self.close()
            raise BadArgumentError("BadArgument", "invalid endpoint %r: %s" % (
                self.endpoint, e)) from None

    # -- life cycle --------------------------------------------------

    def close(self) -> None:
        """Close the connection (pending replies are dropped). Idempotent."""
        if self._ctx.closed:
            return
        self._close_socket()
        self._ctx.term()

    def _close_socket(self) -> None:
        try:
            self._sock.disable_monitor()
        except zmq.ZMQError:
            pass
        self._mon.close(0)
        self._sock.close(0)

    def _move_to(self, endpoint: str) -> None:
        """Talk to endpoint from now on (a new socket)."""
        if endpoint == self.endpoint:
            return
        self._close_socket()
        self.endpoint = endpoint
        self.moves += 1
        try:
            self._open()
        except BadArgumentError as e:
            raise TransportError("Transport", "cannot connect to the leader: %s" % e) from None

    def _leader_endpoint(self) -> Optional[str]:
        """Which of the leader's client endpoints to go to: one that is also
        configured, else its first of the current endpoint's scheme (a
        wildcard host is the host of the leader's node address)."""
        leader = self.leader or {}
        eps = [e for e in leader.get("endpoints") or [] if isinstance(e, str)]
        for e in eps:
            if e in self.endpoints:
                return e
        scheme = self.endpoint.split("://", 1)[0] + "://"
        for e in eps:
            if e.startswith(scheme) and "://" in self.endpoint:
                addr = leader.get("address")
                if (isinstance(addr, str) and ":" in addr
                        and (e.startswith("tcp://0.0.0.0:") or e.startswith("tcp://*:"))):
                    return "tcp://%s:%s" % (addr.rsplit(":", 1)[0], e.rsplit(":", 1)[1])
                return e
        return None

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- connection state (libjobq's read_monitor / ensure_up) ---------

    def _read_monitor(self) -> int:
        n = 0
        # ZMQ_EVENTS first: an empty read raising zmq.Again on every call
        # cost more than the call's msgpack.
        while cast(int, self._mon.get(_EVENTS)) & _POLLIN:
            try:
                frames = self._mon.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return n
            n += 1
            event = _monitor_event(frames)
            if event == zmq.EVENT_CONNECTED:
                self._conn = _UP
                self._after_disconnect = False
                self._attempt_start = 0.0
            elif event == zmq.EVENT_CONNECT_DELAYED:
                self._attempt_start = time.monotonic()
            elif event == zmq.EVENT_DISCONNECTED:
                self._conn = _DOWN
                self._drops += 1
                self._after_disconnect = True
            elif event == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                self._refused = None
            elif event == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
                self._refused = PermissionDeniedError(
                    "PermissionDenied", "jobqd at %s refused this key: it is not (or no "
                    "longer) in the daemon's authorized keys" % self.endpoint)
            elif event in (zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL,
                           zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL):
                self._refused = TransportError(
                    "Transport", "the handshake with jobqd at %s failed: %s" % (
                        self.endpoint, "a CURVE endpoint needs a key (key=, $JOBQ_KEY) and "
                        "the daemon's public key (server_key=, $JOBQ_SERVER_KEY)"
                        if not self.key and not os.environ.get("JOBQ_KEY")
                        else "is the server key the daemon's?"))
            elif event == zmq.EVENT_CONNECT_RETRIED:
                if self._after_disconnect:  # only schedules the first reconnect
                    self._after_disconnect = False
                    continue
                self._conn = _DOWN
                self._failed_attempts += 1
                self._attempt_timed_out = bool(self._attempt_start) and (
                    time.monotonic() - self._attempt_start >= protocol.CONNECT_TIMEOUT - 0.1)
                self._attempt_start = 0.0
        return n

    def _not_running(self, while_: str) -> JobqError:
        if self._attempt_timed_out and not self._ipc_path:
            return TransportError("Transport", "no answer to the TCP connection within %g s "
                                  "(host down, or packets dropped?)%s"
                                  % (protocol.CONNECT_TIMEOUT, while_))
        if self._ipc_path and not os.path.exists(self._ipc_path):
            return NotRunningError("NotRunning", "jobqd is not running at %s (no socket file "
                                   "at %s)%s" % (self.endpoint, self._ipc_path, while_))
        if self._ipc_path:
            return NotRunningError("NotRunning", "jobqd is not running at %s (nobody listens "
                                   "on %s: a socket file left by a jobqd that did not stop "
                                   "cleanly?)%s" % (self.endpoint, self._ipc_path, while_))
        return NotRunningError("NotRunning", "jobqd is not running at %s (connection "
                               "refused)%s" % (self.endpoint, while_))

    def _ensure_up(self, deadline: float, timeout: float, while_: str) -> None:
        """Return once the connection is up; raise NotRunning when the next
        connect attempt fails, Timeout when the deadline passes first."""
        self._read_monitor()
        if self._conn == _UP:
            return
        # A connection that dropped under a request in flight: a daemon that
        # closes and binds again leaves the path without a file for a moment.
        # Look again for that moment before calling it stopped.
        grace_until = time.monotonic() + _CONN_REBIND_GRACE if while_ else 0.0
        if deadline >= 0:
            grace_until = min(grace_until, deadline)
        while (self._conn == _DOWN and self._ipc_path
               and not os.path.exists(self._ipc_path)):
            if time.monotonic() >= grace_until:
                raise self._not_running(while_)  # no file: the next attempt fails too
            time.sleep(0.005)
            self._read_monitor()
        failed = self._failed_attempts
        quiet_until = time.monotonic() + _CONN_QUIET
        while True:
            if self._refused is not None:
                raise self._refused
            if self._conn == _UP:
                return
            if self._failed_attempts > failed:
                raise self._not_running(while_)
            now = time.monotonic()
            # No news for long and no TCP connect in progress: a CONNECTED
            # event may have been lost. Let the request try.
            if not self._attempt_start and now >= quiet_until:
                return
            left = deadline - now
            if left <= 0:
                raise TimeoutError("Timeout", "no connection to jobqd at %s within %g s"
                                   % (self.endpoint, timeout))
            if not self._attempt_start:
                left = min(left, quiet_until - now)
            if self._mon.poll(max(0, int(min(left, 3600.0) * 1000))) and self._read_monitor():
                quiet_until = time.monotonic() + _CONN_QUIET

    def check_connection(self) -> None:
        """Raise :class:`NotRunningError` when a connect attempt failed since
        the last check (the daemon went away); return otherwise. Cheap: for
        loops that otherwise only read an event stream."""
        self._read_monitor()
        if self._conn != _DOWN or self._failed_attempts == self._checked_failures:
            self._checked_failures = self._failed_attempts
            return
        raise self._not_running("")

    # -- the request path ---------------------------------------------

    def _exchange(self, requests: Sequence[Tuple[str, Optional[Mapping[str, Any]]]],
                  timeout: Optional[float], keepalive_grace: float = 0.0,
                  window: int = 1) -> List[Any]:
        """As _exchange_one, following NotLeader answers and moving to the
        next configured endpoint when that is safe (see the module comment)."""
        limit: float = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + limit if limit > 0 else None
        hops = waits = tried = 0

        def wait_for_leader() -> bool:
            """While no leader is known: a pause (then the next configured
            endpoint); False when the pauses or the time ran out."""
            nonlocal waits
            waits += 1
            if waits > protocol.MAX_LEADER_WAITS or deadline is None:
                return False
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            time.sleep(min(left, protocol.LEADER_WAIT))
            return deadline - time.monotonic() > 0

        while True:
            self._sent = False
            try:
                return self._exchange_one(requests, timeout, keepalive_grace, window, deadline)
            except NotLeaderError as e:
                if any(r is not None for r in getattr(e, "results", [])):
                    raise  # part of a pipeline was carried out elsewhere
                self.leader = e.leader
                tried = 0  # a node answered: the endpoints are not all down
                to = self._leader_endpoint()
                if to is not None and to == self.endpoint:
                    # A node naming itself: elected, not serving yet
                    # (loading the queue). Ask it again a moment later.
                    if not wait_for_leader():
                        raise
                    continue
                if to is not None and hops < protocol.MAX_HOPS:
                    hops += 1
                    self._move_to(to)
                    self._via_leader = True
                    continue
                if to is not None:
                    raise NotLeaderError(
                        "NotLeader", "no leader reached after %d hops (the nodes name each "
                        "other as leader?); the last answer, from %s: %s"
                        % (protocol.MAX_HOPS, self.endpoint, e.message), e.leader) from None
                # No leader known (an election): ask again a moment later,
                # the configured endpoints in turn.
                if not wait_for_leader():
                    raise
            except (NotRunningError, TimeoutError, TransportError):
                safe = not self._sent or all(protocol.may_repeat(m, a) for m, a in requests)
                if self._via_leader and safe:
                    # The leader a node named is gone (the nodes do not know
                    # yet): as while no leader is known. That hop led nowhere.
                    hops -= 1
                    if not wait_for_leader():
                        raise
                    self._next_endpoint()
                    continue
                if len(self.endpoints) < 2 or not safe:
                    raise
                tried += 1
                if (self._refused is not None or tried >= len(self.endpoints)
                        or deadline is None or deadline - time.monotonic() <= 0):
                    self._next_endpoint()  # for the next call
                    raise
            self._next_endpoint()

    def _next_endpoint(self) -> None:
        """Talk to the configured endpoint after the current one."""
        self._cur = (self._cur + 1) % len(self.endpoints)
        self._via_leader = False
        self._move_to(self.endpoints[self._cur])

    def _exchange_one(self, requests: Sequence[Tuple[str, Optional[Mapping[str, Any]]]],
                      timeout: Optional[float], keepalive_grace: float = 0.0,
                      window: int = 1, deadline_at: Optional[float] = None) -> List[Any]:
        """Send requests (up to ``window`` in flight at once) and return their
        results in order. The deadline is ``timeout`` from the start, moved
        on by each answer (so a long pipeline only needs progress) and, with
        ``keepalive_grace``, by keepalives. The first error is raised; for
        several requests it is raised once the requests in flight are
        answered (no more are sent) and carries ``results`` (None where no
        result came)."""
        limit: float = self.timeout if timeout is None else timeout
        if self._ctx.closed:
            raise TransportError("Transport", "the client is closed")
        if not limit > 0:
            raise BadArgumentError("BadArgument", "a call's timeout must be > 0 seconds")
        n = len(requests)
        results: List[Any] = [None] * n
        bodies: List[bytes] = []
        ids: List[int] = []
        for method, args in requests:
            rid = self._next_id
            self._next_id += 1
            try:
                bodies.append(protocol.encode_request(rid, method, args))
            except (TypeError, ValueError, OverflowError) as e:
                raise BadArgumentError("BadArgument", "%s: arguments cannot be encoded: %s"
                                       % (method, e)) from None
            ids.append(rid)
        by_id = {rid: i for i, rid in enumerate(ids)}
        start = time.monotonic()
        deadline = start + limit if deadline_at is None else deadline_at
        extended = False
        names = ", ".join(sorted({m for m, _ in requests}))

        def fail(e: JobqError) -> JobqError:
            if n > 1:
                setattr(e, "results", results)
            return e

        def while_(i: int) -> str:
            method, args = requests[i]
            unknown = ("" if method in protocol.READ_ONLY_METHODS
                       else ", which may or may not have been carried out")
            return "; it stopped while %s was waiting for its reply%s" % (method, unknown)

        self._ensure_up(deadline, limit, "")
        in_flight: Dict[int, bool] = {}  # index -> resent already
        next_send = 0

        def send(i: int) -> None:
            self._sent = True  # a send that times out may still leave
            while True:
                try:
                    self._sock.send(bodies[i], _NOBLOCK)
                    return
                except zmq.Again:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise fail(TimeoutError("Timeout", "request not sent within %g s"
                                                % limit)) from None
                    self._sock.poll(int(min(left, 3600.0) * 1000), zmq.POLLOUT)
                except zmq.ZMQError as e:
                    raise fail(TransportError("Transport", "cannot send: %s" % e)) from None

        drops, failed = self._drops, self._failed_attempts
        poller = self._poller
        error: Optional[JobqError] = None  # the first error of a pipeline
        while in_flight or (error is None and next_send < n):
            while error is None and next_send < n and len(in_flight) < window:
                send(next_send)
                in_flight[next_send] = False
                next_send += 1
            left = deadline - time.monotonic()
            if left <= 0 and error is not None:
                raise fail(error)
            if left <= 0:
                # As libjobq: the timeout itself, or (keepalives moved the
                # deadline) the time waited in tenths of a second.
                waited = round(time.monotonic() - start, 1) if extended else limit
                raise fail(TimeoutError("Timeout", "no reply to %s within %g s"
                                        % (names, waited)))
            ready = dict(poller.poll(max(1, int(min(left, 3600.0) * 1000))))
            if self._mon in ready:
                self._read_monitor()
                if self._refused is not None:
                    raise fail(self._refused)
                if self._drops != drops or self._failed_attempts != failed:
                    # The connection dropped: what was in flight is lost.
                    first = min(in_flight) if in_flight else 0
                    try:
                        self._ensure_up(deadline, limit, while_(first))
                    except JobqError as e:
                        raise fail(e) from None
                    for i, resent in sorted(in_flight.items()):
                        method, args = requests[i]
                        if resent or not protocol.may_repeat(method, args):
                            raise fail(TransportError(
                                "Transport", "the connection to jobqd at %s was lost while "
                                "%s was waiting for its reply (the daemon restarted?)%s"
                                % (self.endpoint, method,
                                   "" if method in protocol.READ_ONLY_METHODS
                                   else "; it may or may not have been carried out")))
                        in_flight[i] = True
                        send(i)  # same bytes, same id
                    drops, failed = self._drops, self._failed_attempts
            if self._sock not in ready:
                continue
            # Read while something is there, and stop once the last answer
            # came: what arrives later is stale and dropped by the next call.
            while in_flight or (error is None and next_send < n):
                try:
                    frame = self._sock.recv(_NOBLOCK)
                except zmq.Again:
                    break
                if self._sock.get(_RCVMORE):
                    while self._sock.get(_RCVMORE):
                        self._sock.recv()
                    continue  # a reply is one frame
                rep = protocol.parse_reply(frame)
                if rep is None or rep.id is None or rep.id not in by_id:
                    continue  # stale (an earlier call's) or unmatchable
                i = by_id[rep.id]
                if i not in in_flight:
                    continue  # a duplicate answer after a resend
                if rep.keepalive:
                    if keepalive_grace > 0 and deadline < time.monotonic() + keepalive_grace:
                        deadline = time.monotonic() + keepalive_grace
                        extended = True
                    continue
                del in_flight[i]
                if not rep.ok:
                    if n == 1:
                        raise error_for(rep.code, rep.message or rep.code, rep.leader)
                    # Send no more; collect what is in flight, then raise.
                    error = error or error_for(rep.code, rep.message or rep.code, rep.leader)
                    continue
                results[i] = rep.result
                if n > 1:
                    deadline = max(deadline, time.monotonic() + limit)
        if error is not None:
            raise fail(error)
        return results

    def call(self, method: str, args: Optional[Mapping[str, Any]] = None, *,
             timeout: Optional[float] = None) -> Any:
        """Send one request of any method with ``args`` and return its
        result as decoded (the raw path under every other method)."""
        return self._exchange([(method, args)], timeout)[0]

    def _typed(self, method: str, args: Optional[Mapping[str, Any]],
               timeout: Optional[float], kind: Union[type, Tuple[type, ...]]) -> Any:
        r = self.call(method, args, timeout=timeout)
        if not isinstance(r, kind):
            raise MalformedError("Malformed", "unexpected result type in the reply to %s"
                                 % method)
        return r

    # -- methods --------------------------------------------------------

    def ping(self, *, timeout: Optional[float] = None) -> Dict[str, Any]:
        """``ping``: the daemon's version, protocols, time, epoch, event
        endpoints (``publish``), worker endpoints and token window."""
        r: Dict[str, Any] = self._typed("ping", {}, timeout, dict)
        if "cluster" in r:
            self.cluster = True
        return r

    def _submit(self, method: str, key: str, body: Any, ignore_drain: bool,
                token: Optional[Token], retries: int, timeout: Optional[float],
                kind: type) -> Any:
        args: Dict[str, Any] = {key: body, "ignore_drain": ignore_drain}
        if token is not None:
            args["token"] = token
        attempt = 0
        while True:
            try:
                return self._typed(method, args, timeout, kind)
            except TimeoutError:
                if token is None or attempt >= retries:
                    raise
                attempt += 1

    def submit_job(self, ops: Sequence[Opcode], ignore_drain: bool = False,
                   token: Optional[Token] = None, *, retries: int = 0,
                   timeout: Optional[float] = None) -> int:
        """``submit_job``: submit one job, a list of opcodes
        ``{"op": NAME, "args": {...}, "priority": p, "depends": [...]}``;
        returns its id once it is committed.

        ``ignore_drain`` submits even while the queue is drained. ``token``
        (see :func:`new_token`) makes a repeat safe: with it, a timed-out
        call is sent again, with the same token, up to ``retries`` times,
        and a call whose connection dropped is sent again after the
        reconnect; the daemon answers every copy with the same id."""
        r = self._submit("submit_job", "ops", list(ops), ignore_drain, token, retries,
                         timeout, int)
        if isinstance(r, bool) or r < 0:
            raise MalformedError("Malformed", "no job id in the reply to submit_job")
        return r  # type: ignore[no-any-return]

    def submit_many_jobs(self, jobs: Sequence[Sequence[Opcode]], ignore_drain: bool = False,
                         token: Optional[Token] = None, *,
                         batch_size: int = protocol.MAX_JOBS_PER_TOKEN, retries: int = 0,
                         timeout: Optional[float] = None) -> List[Tuple[bool, Union[int, str]]]:
        """``submit_many_jobs``: submit several jobs; returns one
        ``(True, job_id)`` or ``(False, message)`` per job, in order.

        More than ``batch_size`` jobs are sent as several requests in
        flight at once (pipelined), cut only where no relative dependency
        (a negative id, "the k-th job before this one") crosses a cut, so
        every dependency resolves as in one call. Batches are handled side
        by side: the ids of each batch are consecutive, not those of the
        whole. With a ``token`` each batch carries a token derived from it
        and the batch's place (the same for the same jobs and
        ``batch_size``, so the submission stays safe to repeat with the
        same arguments). When a batch fails as a whole (``Drained``,
        ``Busy``...) no further batch is sent and the error is raised, once
        the batches in flight have answered, with ``results``: one entry
        per job, None for the jobs of batches without an answer."""
        jobs = [list(j) for j in jobs]
        if batch_size < 1:
            raise BadArgumentError("BadArgument", "batch_size must be at least 1")
        cuts = _batch_cuts(jobs, batch_size)
        if len(cuts) <= 2:
            r = self._submit("submit_many_jobs", "jobs", jobs, ignore_drain, token, retries,
                             timeout, list)
            return [_entry(e) for e in r]
        requests: List[Tuple[str, Optional[Mapping[str, Any]]]] = []
        for b in range(len(cuts) - 1):
            args: Dict[str, Any] = {"jobs": jobs[cuts[b]:cuts[b + 1]],
                                    "ignore_drain": ignore_drain}
            if token is not None:
                args["token"] = _derived_token(token, b)
            requests.append(("submit_many_jobs", args))
        attempt = 0
        while True:
            try:
                parts = self._exchange(requests, timeout, window=_BATCH_WINDOW)
                break
            except JobqError as e:
                # One entry per job, whatever failed (a timeout included).
                partial = getattr(e, "results", None)
                if partial is not None and len(partial) == len(cuts) - 1:
                    flat: List[Any] = []
                    for b, part in enumerate(partial):
                        size = cuts[b + 1] - cuts[b]
                        flat.extend([_entry(x) for x in part] if isinstance(part, list)
                                    else [None] * size)
                    setattr(e, "results", flat)
                if isinstance(e, TimeoutError) and token is not None and attempt < retries:
                    attempt += 1
                    continue
                raise
        out: List[Tuple[bool, Union[int, str]]] = []
        for part in parts:
            if not isinstance(part, list):
                raise MalformedError("Malformed", "unexpected result type in the reply to "
                                     "submit_many_jobs")
            out.extend(_entry(e) for e in part)
        return out

    def query_jobs(self, ids: Optional[Sequence[int]] = None,
                   fields: Optional[Sequence[str]] = None,
                   status: Optional[Sequence[str]] = None, after_id: Optional[int] = None,
                   limit: Optional[int] = None, archived: bool = False,
                   snapshot: bool = False, *,
                   timeout: Optional[float] = None) -> Dict[str, Any]:
        """``query_jobs``: ``{"fields", "rows", "more"}`` (with ``snapshot``
        also ``seq`` and ``epoch``). ``ids`` None lists every live job (with
        ``archived`` archived ones too) from ``after_id`` on, at most
        ``limit`` rows; ``fields`` defaults to the daemon's (id, status);
        ``status`` keeps only jobs with those statuses."""
        args: Dict[str, Any] = {}
        if ids is not None:
            args["ids"] = list(ids)
        if fields is not None:
            args["fields"] = list(fields)
        if status is not None:
            args["status"] = list(status)
        if after_id is not None:
            args["after_id"] = after_id
        if limit is not None:
            args["limit"] = limit
        if archived:
            args["archived"] = True
        if snapshot:
            args["snapshot"] = True
        return self._typed("query_jobs", args, timeout, dict)  # type: ignore[no-any-return]

    def query_job(self, job_id: int, fields: Sequence[str] = ("id", "status"), *,
                  timeout: Optional[float] = None) -> Optional[Dict[str, Any]]:
        """One job's fields as a dict (live or archived); None when no such
        job exists."""
        fields = list(fields)
        # status is never nil for a job that exists: ask for it to tell.
        asked = fields if "status" in fields else fields + ["status"]
        res = self.query_jobs([job_id], fields=asked, timeout=timeout)
        rows = res.get("rows") or []
        if not rows:
            return None
        row = dict(zip(asked, rows[0]))
        if row["status"] is None:
            return None
        return {f: row[f] for f in fields}

    def cancel_job(self, job_id: int, *, timeout: Optional[float] = None) -> Tuple[bool, str]:
        """``cancel_job``: ``(True, "Job N canceled")`` or ``"... will be
        canceled"``, ``(False, reason)`` when not found or no longer waiting."""
        r = self._typed("cancel_job", {"id": job_id}, timeout, list)
        return (bool(r[0]), str(r[1])) if len(r) == 2 else (bool(r and r[0]), "")

    def change_job_priority(self, job_id: int, priority: int, *,
                            timeout: Optional[float] = None) -> Tuple[bool, str]:
        """``change_job_priority``: set the priority (-10, 0 or 10) of the
        job's pending opcodes; ``(changed, message)``."""
        r = self._typed("change_job_priority", {"id": job_id, "priority": priority},
                        timeout, list)
        return (bool(r[0]), str(r[1])) if len(r) == 2 else (bool(r and r[0]), "")

    def archive_job(self, job_id: int, *, timeout: Optional[float] = None) -> bool:
        """``archive_job``: True when a finished live job was archived."""
        return self._typed("archive_job", {"id": job_id}, timeout, bool)  # type: ignore

    def auto_archive_jobs(self, age: int, budget: float, *,
                          timeout: Optional[float] = None) -> Tuple[int, int]:
        """``auto_archive_jobs``: archive finished jobs older than ``age``
        seconds (-1: every finished job), working at most ``budget``
        seconds (the protocol's ``timeout`` argument); returns
        ``(archived, remaining)``."""
        r = self._typed("auto_archive_jobs", {"age": age, "timeout": budget}, timeout, list)
        if len(r) != 2 or not all(isinstance(x, int) for x in r):
            raise MalformedError("Malformed", "unexpected result in the reply to "
                                 "auto_archive_jobs")
        return int(r[0]), int(r[1])

    def set_drain_flag(self, flag: bool, *, timeout: Optional[float] = None) -> None:
        """``set_drain_flag``: while set, submissions are refused (``Drained``)."""
        self._typed("set_drain_flag", {"flag": bool(flag)}, timeout, bool)

    def stats(self, *, timeout: Optional[float] = None) -> Dict[str, Any]:
        """``stats``: the daemon's counters and gauges."""
        return self._typed("stats", {}, timeout, dict)  # type: ignore[no-any-return]

    def shutdown(self, now: bool = False, *, timeout: Optional[float] = None) -> None:
        """``shutdown``: stop the daemon (running opcodes get
        --shutdown-grace, or are interrupted at once with ``now``)."""
        self._typed("shutdown", {"now": True} if now else {}, timeout, bool)

    def wait_for_job_change(self, job_id: int, fields: Sequence[str],
                            prev_job_info: Optional[Sequence[Any]] = None,
                            prev_log_serial: Optional[int] = None, wait: float = 60.0, *,
                            timeout: Optional[float] = None) -> Any:
        """``wait_for_job_change`` (Ganeti's WaitForJobChange): waits up to
        ``wait`` seconds (at most 600) for the values of ``fields`` to differ
        from ``prev_job_info`` or for log entries after ``prev_log_serial``.

        Returns ``(job_info, log_entries)``, the string ``"nochange"`` or
        None (no such job). Keepalives are consumed; without ``timeout`` the
        call waits ``wait`` + 10 s and each keepalive extends that, with
        ``timeout`` it is a hard limit."""
        # The wait always a float, as libjobq sends it (vector wait_for_job_change).
        args = {"id": job_id, "fields": list(fields),
                "prev_job_info": list(prev_job_info) if prev_job_info is not None else None,
                "prev_log_serial": prev_log_serial, "timeout": float(wait)}
        grace = 0.0
        if timeout is None:
            timeout = wait + protocol.WFJC_MARGIN
            grace = protocol.WFJC_KEEPALIVE_GRACE
        r = self._exchange([("wait_for_job_change", args)], timeout, keepalive_grace=grace)[0]
        if r is None or r == "nochange":
            return r
        if (isinstance(r, list) and len(r) == 2 and isinstance(r[0], list)
                and isinstance(r[1], list)):
            return (r[0], r[1])
        raise MalformedError("Malformed", "unexpected result in the reply to "
                             "wait_for_job_change")

    def events_since(self, after_seq: int, epoch: Optional[int] = None,
                     limit: Optional[int] = None, *,
                     timeout: Optional[float] = None) -> Dict[str, Any]:
        """``events_since``: the published events after ``after_seq`` from the
        daemon's replay ring: ``{"epoch", "first_seq", "last_seq",
        "too_old", "events", "more"}``. With ``epoch``, ``too_old`` is also
        true when the daemon restarted since."""
        args: Dict[str, Any] = {"after_seq": after_seq}
        if epoch is not None:
            args["epoch"] = epoch
        if limit is not None:
            args["limit"] = limit
        r = self._typed("events_since", args, timeout, dict)
        if not isinstance(r.get("too_old"), bool) or not isinstance(r.get("events"), list):
            raise MalformedError("Malformed", "unexpected result in the reply to events_since")
        return r  # type: ignore[no-any-return]

    def list_fields(self, *, timeout: Optional[float] = None) -> List[Dict[str, Any]]:
        """``list_fields``: the query fields, ``[{"name", "description"}, ...]``."""
        return self._typed("list_fields", {}, timeout, list)  # type: ignore[no-any-return]

    def list_opcodes(self, *, timeout: Optional[float] = None) -> List[Dict[str, Any]]:
        """``list_opcodes``: every opcode the daemon runs (built-in and
        workers'), with its arguments."""
        return self._typed("list_opcodes", {}, timeout, list)  # type: ignore[no-any-return]

    def query_nodes(self, *, timeout: Optional[float] = None) -> List[Dict[str, Any]]:
        """``query_nodes``: a cluster's nodes as the answering node sees them
        (``id``, ``name``, ``address``, ``role``, ``state``, ``endpoints``,
        ``applied``, ``lag_entries``, ``lag_seconds``, ``last_contact``,
        ``self``), sorted by id. Any node answers it."""
        return self._typed("query_nodes", {}, timeout, list)  # type: ignore[no-any-return]

    def add_node(self, node_id: int, address: str, *, standby: bool = False,
                 name: Optional[str] = None, endpoints: Sequence[str] = (),
                 timeout: Optional[float] = None) -> Dict[str, Any]:
        """``add_node``: adds node ``node_id`` whose node-to-node address is
        ``address`` (``HOST:PORT``), a voter or a ``standby``, with its
        ``name`` and client ``endpoints``; returns ``{"id"}`` once the
        change is committed (admin role)."""
        args: Dict[str, Any] = {"id": node_id, "address": address,
                                "role": "standby" if standby else "voter"}
        if name is not None:
            args["name"] = name
        args["endpoints"] = list(endpoints)
        return self._typed("add_node", args, timeout, dict)  # type: ignore[no-any-return]

    def remove_node(self, node_id: int, *, timeout: Optional[float] = None) -> None:
        """``remove_node``: removes a node, once committed (admin role)."""
        self._typed("remove_node", {"id": node_id}, timeout, type(None))

    def transfer_leader(self, node_id: Optional[int] = None, *,
                        timeout: Optional[float] = None) -> int:
        """``transfer_leader``: makes node ``node_id`` the leader (None: the
        daemon picks the most up-to-date voter); returns the new leader's
        id once leadership moved (admin role)."""
        r = self._typed("transfer_leader", {"id": node_id}, timeout, dict)
        leader = r.get("leader")
        if not isinstance(leader, int) or isinstance(leader, bool) or leader < 0:
            raise MalformedError("Malformed", "unexpected result in the reply to "
                                 "transfer_leader")
        return leader

    def http_token(self, ttl: Optional[int] = None, *,
                   timeout: Optional[float] = None) -> Dict[str, Any]:
        """``http_token``: a token for the daemon's HTTP endpoint that names
        this client's key (over ipc: its uid and role), valid ``ttl``
        seconds (60 to 31622400; None: the daemon's default, 30 days).
        Returns ``{"token", "role", "owner", "expires": [s, us]}``
        (docs/security.md, "HTTP tokens")."""
        args: Dict[str, Any] = {} if ttl is None else {"ttl": ttl}
        return self._typed("http_token", args, timeout, dict)  # type: ignore[no-any-return]

    # -- following jobs ---------------------------------------------------

    def watch(self, job_id: int, fields: Sequence[str] = ("status",),
              timeout: Optional[float] = None) -> Iterator[Dict[str, Any]]:
        """Follow one job through the event stream (the documented
        subscriber algorithm, :class:`jobq.Subscriber`) and yield its
        changes: first a ``resync`` snapshot (``fields`` among the row's
        fields), then one ``change`` per change record, in serial order and
        exactly once, across gaps and daemon restarts (each restart yields
        a new ``resync``). Ends after the job reached a final status (or is
        unknown); ``timeout`` (seconds, None: no limit) bounds the whole
        watch and raises :class:`jobq.TimeoutError`."""
        from .subscriber import Subscriber  # subscriber imports client

        deadline = None if timeout is None else time.monotonic() + timeout
        fields = ["status"] + [f for f in fields if f != "status"]  # the end is read from it
        with Subscriber(client=self, jobs=[job_id], fields=fields) as sub:
            while True:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise TimeoutError("Timeout", "job %d did not finish within %g s"
                                       % (job_id, timeout or 0))
                ev = sub.next(timeout=left)
                if ev is None:
                    continue
                yield ev
                if ev["type"] == "resync":
                    row = dict(zip(ev["fields"], ev["rows"][0])) if ev["rows"] else {}
                    status = row.get("status")
                    if status is None or status in protocol.FINAL_STATUSES:
                        return
                elif ev["change"].get("status") in protocol.FINAL_STATUSES:
                    return

    def wait(self, job_id: int, timeout: Optional[float] = None,
             fields: Sequence[str] = ("id", "status", "opstatus", "opresult", "end_ts"),
             ) -> Optional[Dict[str, Any]]:
        """Wait until the job is final and return its ``fields`` as a dict
        (None when no such job exists). Uses ``wait_for_job_change`` (no
        event stream); ``timeout`` in seconds, None: as long as it takes.
        Raises :class:`jobq.TimeoutError` when the job is not final in time."""
        deadline = None if timeout is None else time.monotonic() + timeout
        cur = self.query_job(job_id, ("status", "log_serial"))
        if cur is None:
            return None
        info: List[Any] = [cur["status"]]
        log_serial = cur["log_serial"] or 0
        while info[0] not in protocol.FINAL_STATUSES:
            wait = 60.0
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError("Timeout", "job %d is still %s after %g s"
                                       % (job_id, info[0], timeout or 0))
                wait = min(wait, max(left, 0.01))
            if info[0] == "canceling":
                time.sleep(min(0.05, wait))  # answers at once: pause (protocol.md)
            r = self.wait_for_job_change(job_id, ["status"], info, log_serial, wait)
            if r is None:
                return None
            if r == "nochange":
                continue
            info, log = r
            if log:
                log_serial = max(log_serial, max(e[0] for e in log))
        return self.query_job(job_id, fields)


def _entry(e: Any) -> Tuple[bool, Union[int, str]]:
    if not isinstance(e, list) or len(e) != 2 or not isinstance(e[0], bool):
        raise MalformedError("Malformed", "unexpected entry in the reply to submit_many_jobs")
    return (e[0], e[1])


def _derived_token(token: Token, batch: int) -> str:
    """The token of batch ``batch`` of a split tokened submission: the same
    for the same token and batch, within the 64-byte limit."""
    raw = token.encode() if isinstance(token, str) else bytes(token)
    suffix = ".%d" % batch
    if len(raw) + len(suffix) <= protocol.TOKEN_MAX and isinstance(token, str):
        return token + suffix
    import hashlib
    return hashlib.sha256(raw).hexdigest()[:40] + suffix


def _batch_cuts(jobs: Sequence[Sequence[Opcode]], batch_size: int) -> List[int]:
    """Where to cut ``jobs`` into batches of at most ``batch_size``: the
    list of boundaries, 0 first and len(jobs) last. A cut never separates a
    job from one its relative dependency names (those would no longer
    resolve); where none exists within batch_size, a batch grows to the
    next cut that does."""
    n = len(jobs)
    if n <= batch_size:
        return [0, n]
    reach = list(range(n))  # the lowest index job i refers to
    for i, job in enumerate(jobs):
        for op in job:
            deps = op.get("depends") if isinstance(op, Mapping) else None
            if not isinstance(deps, (list, tuple)):
                continue
            for d in deps:
                k = d[0] if isinstance(d, (list, tuple)) and d else None
                if isinstance(k, int) and not isinstance(k, bool) and k < 0 and i + k >= 0:
                    reach[i] = min(reach[i], i + k)
    # A cut before index c is valid when no job at c or after reaches before c.
    minreach = [0] * (n + 1)
    minreach[n] = n
    for i in range(n - 1, -1, -1):
        minreach[i] = min(reach[i], minreach[i + 1])
    cuts = [0]
    while cuts[-1] < n:
        s = cuts[-1]
        c = min(s + batch_size, n)
        while c > s and c < n and minreach[c] < c:
            c -= 1
        if c == s:  # no valid cut within batch_size: the first one beyond
            c = s + batch_size + 1
            while c < n and minreach[c] < c:
                c += 1
        cuts.append(min(c, n))
    return cuts
