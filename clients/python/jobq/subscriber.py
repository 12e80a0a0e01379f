"""jobq.Subscriber: the event stream, without a race, with catch-up.

This is the algorithm of docs/protocol.md, "Subscribing without a race, and
catching up", as libjobq implements it (clients/jobq_sub.c), with the same
output: a generator of dicts of two types.

``{"type": "change", "seq", "epoch", "change", "job", "serial", "kind", "recovered"}``
    one change record (the PUB body plus copies of the record's job,
    serial and kind), in order and exactly once; ``recovered`` is true when
    it came from ``events_since`` rather than the stream.

``{"type": "resync", "reason", "seq", "epoch", "fields", "rows"}``
    a snapshot (``query_jobs`` with ``snapshot``): rebuild the view from
    ``rows`` (one per watched job, or per live job); the changes that follow
    apply on top. The first is always ``reason`` ``"start"``; later ones
    say why: ``"epoch"`` (the daemon restarted), ``"too_old"`` (the replay
    ring no longer held what was missed) or ``"gap"``.

All-jobs mode finds gaps by ``seq`` (each event is the last + 1; a
heartbeat above the last seq means the last events were lost). Job mode
(``jobs=[...]``) uses each job's change ``serial`` and, at most once a
second on a heartbeat, compares the jobs' ``change_serial`` to catch a lost
last event. Gaps are filled with ``events_since``; when that cannot, a new
snapshot is taken.

In a cluster (a client of several endpoints, or a daemon whose ``ping``
says ``cluster``) the subscriber follows the leader: when its client moved
to another node (a NotLeader answer, a node that went away) it subscribes
to that node's ``publish`` endpoint and continues with ``events_since``
from its last seq (seq and epoch are the cluster's). A stream silent for
3 heartbeats is probed with ``events_since`` too, which moves the client to
the leader when the node it follows is no longer it.

``batched=True`` (all-jobs mode only) takes the batched stream (topic
``batch/``: many events per message, docs/protocol.md) instead of one
message per event: the same events, split here and handed over one at a
time under the same rules, at a fraction of the per-message cost.
"""
from __future__ import annotations

import json
import os
import time
from collections import deque
from typing import Any, Deque, Dict, Iterator, List, Optional, Sequence

import zmq

from . import protocol
from .client import Client
from .keys import setup_curve
from .errors import (BadArgumentError, MalformedError, NotRunningError,
                     TimeoutError, TransportError)

#: Events the SUB socket buffers while the subscriber is busy (libjobq's).
DEFAULT_RCVHWM = 200000
#: Most jobs one subscriber follows (libjobq's JOBQ_SUB_MAX_JOBS is larger;
#: each is a subscription and a row of every check).
MAX_JOBS = 10000
_CHECK_INTERVAL = 1.0  # job mode: change_serial check period
_SLICE = 0.1  # how often a wait looks at the client's connection
_OLD_EPOCHS = 4  # epochs left behind, remembered
_RETRY = 0.2  # pause before asking again a daemon that is away
_SILENCE = 3.0  # a cluster's stream silent this long: probe (heartbeats come every second)

_OK, _GAP, _RESYNC = 0, 1, 2


def pick_publish_endpoint(client: Client, timeout: Optional[float] = None) -> str:
    """The event endpoint from ``ping``'s ``publish`` list that suits the
    client's endpoint (same transport; a wildcard host is replaced by the
    host the client reaches the daemon at)."""
    mine = client.endpoint
    want = "ipc://" if mine.startswith("ipc://") else "tcp://" if mine.startswith("tcp://") else ""
    listed = client.ping(timeout=timeout).get("publish") or []
    found = next((e for e in listed if isinstance(e, str) and e.startswith(want)), None)
    if found is None:
        raise TransportError("Transport", "jobqd at %s publishes no %sevent endpoint (it "
                             "publishes %s); start it with --publish %sHOST:PORT to follow "
                             "events from here" % (mine, want + " " if want else "",
                                                   json.dumps(listed, separators=(",", ":"),
                                                              ensure_ascii=False),
                                                   want or "tcp://"))
    if want == "tcp://" and (found.startswith("tcp://0.0.0.0:") or found.startswith("tcp://*:")):
        port = found.rsplit(":", 1)[1]
        host = mine[6:].rsplit(":", 1)[0]
        return "tcp://%s:%s" % (host, port)
    return found


class Subscriber:
    """A subscriber of the daemon's event stream (see the module comment).

    ``endpoint``: the daemon's request endpoint (None: the default, as for
    :class:`jobq.Client`), or pass ``client`` to share one (it is used for
    the snapshots and ``events_since``; the subscriber does not close it).
    ``jobs``: the ids to follow (not empty); None follows every job. ``fields``: the
    snapshot's fields (``id`` and ``change_serial`` always come first).
    ``events_endpoint``: the PUB endpoint; None takes it from ``ping``.
    ``timeout``: each request's timeout. ``reconnect``: while the daemon is
    away (restarting), wait for it and resynchronise instead of raising
    :class:`jobq.NotRunningError`.

    Iterate over it (forever), or call :meth:`next` with a timeout.
    """

    def __init__(self, endpoint: Optional[str] = None, jobs: Optional[Sequence[int]] = None,
                 *, client: Optional[Client] = None, fields: Sequence[str] = ("status",),
                 events_endpoint: Optional[str] = None, timeout: float = 10.0,
                 rcvhwm: int = DEFAULT_RCVHWM, reconnect: bool = True,
                 key: Optional[str] = None, server_key: Optional[str] = None,
                 batched: bool = False) -> None:
        if batched and jobs is not None:
            raise BadArgumentError("BadArgument", "the batched stream carries every job's "
                                   "events: pass jobs=None with batched=True")
        if jobs is not None and not jobs:
            raise BadArgumentError("BadArgument", "jobs is empty: pass None to follow every job")
        if jobs is not None and len(jobs) > MAX_JOBS:
            raise BadArgumentError("BadArgument", "at most %d jobs per subscriber" % MAX_JOBS)
        self._own_client = client is None
        self.client: Client = client if client is not None else Client(
            endpoint, timeout, key=key, server_key=server_key)
        # CURVE on a TCP events endpoint: these keys, else the client's.
        self._key = key if key is not None else self.client.key
        self._server_key = server_key if server_key is not None else self.client.server_key
        self.timeout = timeout
        self.reconnect = reconnect
        self.jobs: Optional[List[int]] = list(jobs) if jobs is not None else None
        self.batched = batched
        self.fields: List[str] = ["id", "change_serial"] + [
            f for f in fields if f not in ("id", "change_serial")]
        #: Counters: delivered, skipped, gaps, recovered, resyncs, heartbeats, checks.
        self.counters: Dict[str, int] = dict.fromkeys(
            ("delivered", "skipped", "gaps", "recovered", "resyncs", "heartbeats", "checks"), 0)
        self._need_snapshot = True
        self._reason = "start"
        self._started = False
        self.epoch = 0
        self._old_epochs: List[int] = []
        self._trigger_epoch = 0
        self.seq0 = 0
        self.last_seq = 0
        self._serials: Dict[int, int] = {}
        self._check_pending = False
        self._check_seq = 0
        self._check_serials: Dict[int, int] = {}
        self._last_check = 0.0
        self._queue: Deque[Dict[str, Any]] = deque()
        self._pending: Deque[Any] = deque()  # events of a batch not applied yet
        self._ctx: "Optional[zmq.Context[zmq.Socket[bytes]]]" = None
        self._rcvhwm = rcvhwm
        # The events endpoint follows the client's moves unless it was given.
        self._follow = events_endpoint is None
        self._moves = self.client.moves
        self._last_heard = time.monotonic()
        try:
            self.endpoint: str = events_endpoint or pick_publish_endpoint(self.client, timeout)
            self._moves = self.client.moves
            self._ctx = zmq.Context()
            self._open_sub()
        except BaseException:
            self.close()
            raise

    def _open_sub(self) -> None:
        """The SUB socket, subscribed and connected to self.endpoint."""
        assert self._ctx is not None
        # As for the client: an ipc socket file that does not exist means
        # nobody publishes there (ZeroMQ would wait silently).
        if (self.endpoint.startswith("ipc://") and not self.endpoint.startswith("ipc://@")
                and not os.path.exists(self.endpoint[6:])):
            raise TransportError("Transport", "no events socket at %s" % self.endpoint[6:])
        self._sock: "zmq.Socket[bytes]" = self._ctx.socket(zmq.SUB)
        self._sock.setsockopt(zmq.LINGER, 0)
        self._sock.setsockopt(zmq.RCVHWM, self._rcvhwm)
        setup_curve(self._sock, self.endpoint, self._key, self._server_key)
        # Step 1: subscribe before the snapshot; job topics before
        # "sys/", so a heartbeat proves they are all active.
        for job in self.jobs or []:
            self._sock.setsockopt(zmq.SUBSCRIBE, b"job/%d/" % job)
        if not self.jobs:
            self._sock.setsockopt(zmq.SUBSCRIBE, b"batch/" if self.batched else b"job/")
        self._sock.setsockopt(zmq.SUBSCRIBE, b"sys/")
        self._sock.connect(self.endpoint)

    def _in_cluster(self) -> bool:
        return len(self.client.endpoints) > 1 or self.client.moves > 0 or self.client.cluster

    def _follow_client(self) -> None:
        """The client moved to another node: subscribe to its events and
        continue from the last seq."""
        endpoint = pick_publish_endpoint(self.client, self.timeout)
        self._moves = self.client.moves
        if endpoint != self.endpoint:
            self._sock.close(0)
            self.endpoint = endpoint
            self._open_sub()
        self._last_heard = time.monotonic()
        if self._started and not self._need_snapshot:
            self._catch_up()

    # -- life cycle ---------------------------------------------------

    def close(self) -> None:
        """Close the SUB socket (and the client when the subscriber made it)."""
        if self._ctx is not None and not self._ctx.closed:
            sock = getattr(self, "_sock", None)
            if sock is not None:
                sock.close(0)
            self._ctx.term()
        if self._own_client:
            self.client.close()

    def __enter__(self) -> "Subscriber":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __iter__(self) -> Iterator[Dict[str, Any]]:
        """Every event, forever (see :meth:`next`)."""
        while True:
            ev = self.next()
            if ev is not None:
                yield ev

    # -- snapshot (steps 2 and 5) ---------------------------------------

    def _resync(self, reason: str) -> None:
        if not self._need_snapshot:
            self._need_snapshot = True
            self._reason = reason

    def _new_epoch(self, epoch: int) -> bool:
        """A message of another epoch: False when from a run left behind
        (drop it), True when it asks for a resync (the daemon restarted)."""
        if epoch in self._old_epochs or (self._started and epoch < self.epoch):
            return False
        self._trigger_epoch = epoch
        return True

    def _remember_old(self, epoch: int) -> None:
        self._old_epochs = (self._old_epochs + [epoch])[-_OLD_EPOCHS:]

    def _snapshot_call(self, fields: List[str], after_id: int) -> Dict[str, Any]:
        r = self.client.query_jobs(ids=self.jobs, fields=fields, snapshot=True,
                                   after_id=after_id or None, timeout=self.timeout)
        if not isinstance(r.get("rows"), list) or not isinstance(r.get("seq"), int) \
                or not isinstance(r.get("epoch"), int):
            raise MalformedError("Malformed", "query_jobs gave no snapshot (seq, epoch): "
                                 "daemon too old?")
        return r

    def _take_snapshot(self) -> None:
        rows: List[List[Any]] = []
        seq0 = epoch = after = 0
        first = True
        while True:
            r = self._snapshot_call(self.fields, after)
            if first:
                seq0, epoch, first = r["seq"], r["epoch"], False
            elif r["epoch"] != epoch:  # a restart between pages: start over
                rows, after, first = [], 0, True
                continue
            page = r["rows"]
            rows.extend(page)
            if not (r.get("more") and self.jobs is None and page):
                break
            after = page[-1][0]
        self._serials = {}
        for row in rows:
            if isinstance(row[0], int) and isinstance(row[1], int):
                self._serials[row[0]] = row[1]
        reason = self._reason
        if self._started and epoch != self.epoch:
            self._remember_old(self.epoch)
            reason = "epoch"
        self._queue.append({"type": "resync", "reason": reason, "seq": seq0, "epoch": epoch,
                            "fields": list(self.fields), "rows": rows})
        if self._started:
            self.counters["resyncs"] += 1
        self._started = True
        if self._trigger_epoch and self._trigger_epoch != epoch:
            self._remember_old(self._trigger_epoch)
        self._trigger_epoch = 0
        self.seq0 = self.last_seq = seq0
        self.epoch = epoch
        self._need_snapshot = False
        self._check_pending = False
        self._last_check = time.monotonic()

    # -- step 3 and the gap rules ----------------------------------------

    def _apply(self, body: Any, recovered: bool) -> int:
        if not isinstance(body, dict):
            return _OK
        change = body.get("change")
        seq, epoch = body.get("seq"), body.get("epoch")
        if not isinstance(change, dict) or not isinstance(seq, int) or not seq:
            return _OK  # not an event we can place
        job, serial = change.get("job"), change.get("serial")
        if not isinstance(job, int) or not isinstance(serial, int) or not job or not serial:
            return _OK
        if epoch != self.epoch:
            if not isinstance(epoch, int) or not self._new_epoch(epoch):
                return _OK
            self._resync("epoch")
            return _RESYNC
        if self.jobs is None:
            if seq <= self.last_seq:
                self.counters["skipped"] += 1
                return _OK
            if seq != self.last_seq + 1:
                if recovered:  # events_since skipped one: cannot trust it
                    self._resync("gap")
                    return _RESYNC
                self.counters["gaps"] += 1
                return _GAP
            self.last_seq = seq
        elif job not in self.jobs:
            return _OK  # another job's, from events_since
        elif seq <= self.seq0:
            self.counters["skipped"] += 1
            return _OK
        known = self._serials.get(job, 0)
        if serial <= known:
            self.counters["skipped"] += 1
            return _OK
        # Job mode: a job absent from the snapshot starts at serial 1. In
        # all-jobs mode the seq check above proved nothing is missing.
        if self.jobs is not None and serial != known + 1:
            if recovered:
                self._resync("gap")
                return _RESYNC
            self.counters["gaps"] += 1
            return _GAP
        kind = change.get("kind")
        if self.jobs is None and kind == "archive":
            self._serials.pop(job, None)  # no event follows an archive
        else:
            self._serials[job] = serial
        ev: Dict[str, Any] = {"type": "change"}
        ev.update(body)
        ev.update(job=job, serial=serial, kind=kind, recovered=recovered)
        self._queue.append(ev)
        self.counters["delivered"] += 1
        if recovered:
            self.counters["recovered"] += 1
        return _OK

    def _catch_up(self) -> None:
        """Step 4: the events after last_seq from events_since (paged)."""
        after = self.last_seq
        while True:
            r = self.client.events_since(after, self.epoch, timeout=self.timeout)
            if r["too_old"] or r.get("epoch") != self.epoch:
                self._resync("epoch" if r.get("epoch") != self.epoch else "too_old")
                return
            for body in r["events"]:
                if isinstance(body, bytes):  # an older daemon's embedding
                    body = protocol.decode(body)
                if self._apply(body, True) != _OK:
                    self._resync("gap")
                    return
                after = body["seq"]
            if not (r.get("more") and r["events"]):
                break
        if self.jobs is not None and after > self.last_seq:
            self.last_seq = after  # every watched event up to it is seen

    def _job_check(self, hb: int) -> None:
        """Job mode, on a heartbeat of seq hb: catch a lost last event."""
        if self._check_pending:
            if hb < self._check_seq:
                return  # the stream has not passed the check point yet
            self._check_pending = False
            behind = any(self._serials.get(j, 0) < s for j, s in self._check_serials.items())
            if not behind:
                self.last_seq = max(self.last_seq, self._check_seq)
                return
            self.counters["gaps"] += 1
            self._catch_up()
            return
        if time.monotonic() - self._last_check < _CHECK_INTERVAL:
            return
        self._last_check = time.monotonic()
        self.counters["checks"] += 1
        r = self._snapshot_call(["id", "change_serial"], 0)
        if r["epoch"] != self.epoch:
            self._resync("epoch")
            return
        self._check_serials = {}
        for row in r["rows"]:
            if isinstance(row[0], int) and isinstance(row[1], int) \
                    and row[1] > self._serials.get(row[0], 0):
                self._check_serials[row[0]] = row[1]
        if self._check_serials:
            self._check_pending = True
            self._check_seq = r["seq"]
        elif r["seq"] > self.last_seq:
            self.last_seq = r["seq"]

    def _read_stream(self, timeout: float) -> None:
        if not self._sock.poll(max(0, int(timeout * 1000))):
            return
        try:
            frames = self._sock.recv_multipart(zmq.NOBLOCK)
        except zmq.Again:
            return
        if len(frames) < 2:
            return  # a one-frame message is not ours
        self._last_heard = time.monotonic()
        topic, data = frames[0], frames[1]
        try:
            body = protocol.decode(data)
        except ValueError:
            return
        if self._need_snapshot:
            return  # covered by the snapshot about to be taken
        if topic.startswith(b"batch/"):
            if not isinstance(body, list):
                return  # not a batch: nothing to place it by
            # Consecutive events, each as the stream carries it; when one
            # calls for a snapshot the rest wait for it (_drain_pending).
            self._pending.extend(body)
            self._drain_pending()
            return
        if not isinstance(body, dict):
            return  # undecodable
        if topic.startswith(b"sys/"):
            self.counters["heartbeats"] += 1
            seq, epoch = body.get("seq"), body.get("epoch")
            if not isinstance(seq, int) or not isinstance(epoch, int):
                return
            if epoch != self.epoch:
                if self._new_epoch(epoch):
                    self._resync("epoch")
            elif self.jobs is None:
                if seq > self.last_seq:
                    self.counters["gaps"] += 1
                    self._catch_up()
            else:
                self._job_check(seq)
        else:
            self._on_event(body)

    def _drain_pending(self) -> None:
        """The events of a batch not applied yet, until one calls for a
        snapshot (as they would wait in the SUB pipe had they come alone)."""
        while self._pending and not self._need_snapshot:
            self._on_event(self._pending.popleft())

    def _on_event(self, body: Any) -> None:
        """One event from the stream (alone or out of a batch)."""
        if self._apply(body, False) == _GAP:
            # Fill the gap, then apply this event (now in order, or skipped).
            self._catch_up()
            if not self._need_snapshot and self._apply(body, False) == _GAP:
                self._resync("gap")  # events_since did not have it either

    def next(self, timeout: Optional[float] = None) -> Optional[Dict[str, Any]]:
        """The next event (see the module comment), or None when ``timeout``
        seconds pass without one (None: wait as long as it takes). Raises
        :class:`jobq.JobqError` when a request fails — with ``reconnect``,
        not while the daemon is merely away."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            if self._queue:
                return self._queue.popleft()
            try:
                if self._need_snapshot:
                    self._take_snapshot()
                    continue
                if self._pending:  # the rest of a batch, after its snapshot
                    self._drain_pending()
                    continue
                if self._follow and self._moves != self.client.moves:
                    self._follow_client()
                    continue
                left = _SLICE if deadline is None else min(_SLICE, deadline - time.monotonic())
                self._read_stream(max(0.0, left))
                if (self._follow and not self._queue and self._in_cluster()
                        and time.monotonic() - self._last_heard > _SILENCE):
                    # Silent: is the node still the leader? events_since
                    # answers, or moves the client to the leader.
                    self._last_heard = time.monotonic()
                    self._catch_up()
                if not self._queue:
                    self.client.check_connection()
            except (NotRunningError, TransportError, TimeoutError):
                if self._follow and len(self.client.endpoints) > 1 and self._started:
                    # A node went away: the next request moves the client on.
                    try:
                        self._catch_up()
                        continue
                    except (NotRunningError, TransportError, TimeoutError):
                        pass
                if not self.reconnect:
                    raise
                # The daemon is away: what comes next is a snapshot of
                # whichever run answers.
                self._resync("gap")
                if deadline is not None and time.monotonic() >= deadline:
                    return None
                time.sleep(_RETRY if deadline is None
                           else max(0.0, min(_RETRY, deadline - time.monotonic())))
                continue
            if deadline is not None and time.monotonic() >= deadline and not self._queue \
                    and not self._need_snapshot:
                return None

    def job_serials(self) -> Dict[int, int]:
        """The change serial delivered last for each job known (a copy)."""
        return dict(self._serials)


__all__ = ["Subscriber", "pick_publish_endpoint"]
