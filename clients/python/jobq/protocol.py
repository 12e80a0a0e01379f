"""The jobq wire protocol, version 1, as the Python client speaks it.

docs/protocol.md is the reference and proto/wire.h its C form; this module
holds the parts a Python client needs: the request envelope, reply parsing
(keepalives of a parked ``wait_for_job_change`` included), and the
protocol's constants and limits. Nothing here does I/O.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, List, Mapping, Optional

import msgpack  # type: ignore[import]  # Debian ships no stubs

#: Protocol version sent as ``v`` in every request (JOBQ_PROTOCOL_VERSION).
PROTOCOL_VERSION = 1

# Named limits of proto/wire.h.
MAX_REQUEST_BYTES = 16 * 1024 * 1024  #: default --max-request-bytes
MAX_OPS_PER_JOB = 1000
MAX_JOBS_PER_BATCH = 100000  #: jobs per submit_many_jobs call
MAX_JOBS_PER_TOKEN = 10000  #: jobs per submit_many_jobs call carrying a token
MAX_OP_NAME = 64
MAX_ROWS_PER_REPLY = 100000
MAX_LOG_MESSAGE = 4096
DEFAULT_MAX_LOG_ENTRIES = 100000
MAX_DEPENDS = 64
MAX_EVENTS_PER_REPLY = 10000
MAX_REPLY_BYTES = 32 * 1024 * 1024
KEEPALIVE_SECONDS = 5  #: keepalive period of a parked wait_for_job_change
MAX_WAIT_SECONDS = 600  #: longest wait_for_job_change timeout
TOKEN_MAX = 64  #: bytes of a client token (docs/protocol.md, "Client tokens")

# libjobq's client-side timing (clients/jobq.h).
CONNECT_TIMEOUT = 3.0  #: seconds a TCP connect may take (JOBQ_CONNECT_TIMEOUT_MS)
WFJC_MARGIN = 10.0  #: added to the daemon-side wait to get the call's timeout
WFJC_KEEPALIVE_GRACE = 12.0  #: wait granted again by each keepalive

#: Job and opcode statuses; the last three are final.
STATUSES = ("queued", "waiting", "canceling", "running", "canceled", "success", "error")
FINAL_STATUSES = frozenset(("canceled", "success", "error"))
#: Priorities a job or opcode may have (lower runs first).
PRIORITIES = (-10, 0, 10)

#: Methods that change nothing: sending one twice cannot do harm.
READ_ONLY_METHODS = frozenset((
    "ping", "query_jobs", "wait_for_job_change", "events_since", "stats",
    "list_fields", "list_opcodes", "http_token", "query_nodes"))
#: NotLeader answers a request follows (libjobq's MAX_HOPS), the pause
#: before asking again while no leader is known, and how many such pauses.
MAX_HOPS = 10
LEADER_WAIT = 0.2
MAX_LEADER_WAITS = 50

#: Methods whose repeat is answered once when they carry a client token.
TOKENED_METHODS = frozenset(("submit_job", "submit_many_jobs"))


def may_repeat(method: str, args: Optional[Mapping[str, Any]]) -> bool:
    """Whether a request may be sent again after its connection dropped:
    a read-only method, or a submission carrying a client token (the daemon
    answers every copy with the first answer), as libjobq decides."""
    return method in READ_ONLY_METHODS or (
        method in TOKENED_METHODS and args is not None and args.get("token") is not None)


def split_endpoints(endpoint: Any) -> List[str]:
    """The endpoints of ``"ep1,ep2,..."`` or of a list of str; ValueError
    when one is empty or (in a list of several) not ``SCHEME://ADDRESS``."""
    items = endpoint.split(",") if isinstance(endpoint, str) else list(endpoint)
    if not items or any(not isinstance(e, str) or not e for e in items) or (
            len(items) > 1 and any("://" not in e for e in items)):
        raise ValueError("invalid endpoint list %r" % (endpoint,))
    return items


def encode_request(request_id: int, method: str,
                   args: Optional[Mapping[str, Any]] = None) -> bytes:
    """The msgpack bytes of one request: ``{"v", "id", "method", "args"}``."""
    data: bytes = msgpack.packb({"v": PROTOCOL_VERSION, "id": request_id, "method": method,
                                 "args": dict(args) if args is not None else {}},
                                use_bin_type=True)
    return data


@dataclass(frozen=True)
class Reply:
    """One decoded reply frame.

    ``keepalive`` replies are not answers (the request is parked and the
    daemon is alive); otherwise ``ok`` says whether ``result`` or
    ``code``/``message`` hold the answer; ``leader`` is the leader a
    ``NotLeader`` answer names (a dict, or None)."""

    id: Optional[int]
    ok: bool
    result: Any = None
    code: str = ""
    message: str = ""
    keepalive: bool = False
    leader: Any = None


def decode(data: bytes) -> Any:
    """Decode one msgpack value (str as str, bin as bytes, maps as dicts);
    raises ValueError when the bytes are not exactly one msgpack value."""
    try:
        return msgpack.unpackb(data, raw=False, strict_map_key=False)
    except Exception as e:  # msgpack raises several unrelated types
        raise ValueError("not a msgpack value: %s" % e) from e


def parse_reply(data: bytes) -> Optional[Reply]:
    """Parse a reply frame; None when it cannot be matched to any request
    (not msgpack, not a map, no integer id)."""
    try:
        rep = decode(data)
    except ValueError:
        return None
    if not isinstance(rep, dict):
        return None
    rid = rep.get("id")
    if rid is not None and (not isinstance(rid, int) or isinstance(rid, bool)):
        return None
    if rep.get("keepalive") is True and "ok" not in rep:
        return Reply(id=rid, ok=False, keepalive=True)
    if rep.get("ok") is True:
        return Reply(id=rid, ok=True, result=rep.get("result"))
    err = rep.get("error")
    if rep.get("ok") is False and isinstance(err, dict):
        code = err.get("code")
        message = err.get("message")
        leader = err.get("leader") if code == "NotLeader" else None
        return Reply(id=rid, ok=False, code=code if isinstance(code, str) else "Internal",
                     message=message if isinstance(message, str) else "",
                     leader=leader if isinstance(leader, dict) else None)
    return Reply(id=rid, ok=False, code="Malformed", message="malformed reply from the daemon")
