"""Typed errors of the jobq client: one class per error code.

Every failure the daemon reports carries a stable code (docs/protocol.md,
"Error codes"; proto/wire.h) and a human message; the client raises the
class of that code, a subclass of :class:`JobqError`. ``Timeout``,
``Transport`` and ``NotRunning`` are the client's own codes (never sent by
the daemon). :class:`TimeoutError` is also a builtin :class:`TimeoutError`,
:class:`TransportError` and :class:`NotRunningError` builtin
:class:`ConnectionError`\\ s, so generic handlers catch them too.
"""
from __future__ import annotations

import builtins
from typing import Any, Dict, Optional, Tuple, Type


class JobqError(Exception):
    """A failed jobq call: ``code`` is the wire name of the error code
    (``"QueueFull"``...), ``message`` the daemon's (or client's) text."""

    CODE = "Internal"

    def __init__(self, code: str, message: str) -> None:
        super().__init__(code, message)
        self.code = code
        self.message = message

    def __str__(self) -> str:
        return "%s: %s" % (self.code, self.message) if self.message else self.code


class MalformedError(JobqError):
    """The request was not a readable envelope (``Malformed``)."""
    CODE = "Malformed"


class VersionMismatchError(JobqError):
    """The daemon does not speak the request's protocol version."""
    CODE = "VersionMismatch"


class UnknownMethodError(JobqError):
    """No such method."""
    CODE = "UnknownMethod"


class BadArgumentError(JobqError):
    """An argument is missing, of the wrong type or out of range."""
    CODE = "BadArgument"


class TooLargeError(JobqError):
    """The request is larger than the daemon's --max-request-bytes."""
    CODE = "TooLarge"


class QueueFullError(JobqError):
    """The number of live jobs reached --max-jobs."""
    CODE = "QueueFull"


class DrainedError(JobqError):
    """The drain flag is set and the request submits jobs."""
    CODE = "Drained"


class ShuttingDownError(JobqError):
    """The daemon is stopping and the request submits jobs (or waits)."""
    CODE = "ShuttingDown"


class UnknownOpcodeError(JobqError):
    """An opcode name no executor or worker knows."""
    CODE = "UnknownOpcode"


class InvalidPriorityError(JobqError):
    """A priority other than -10, 0 or 10."""
    CODE = "InvalidPriority"


class InvalidDependencyError(JobqError):
    """A well-typed dependency that cannot be right."""
    CODE = "InvalidDependency"


class UnknownFieldError(JobqError):
    """query_jobs or wait_for_job_change asked for a field that does not exist."""
    CODE = "UnknownField"


class TooManyWaitersError(JobqError):
    """Too many wait_for_job_change requests are parked."""
    CODE = "TooManyWaiters"


class StoreFailedError(JobqError):
    """The daemon's store cannot commit."""
    CODE = "StoreFailed"


class BusyError(JobqError):
    """Over a limit for now (store backlog, requests in flight): ask again."""
    CODE = "Busy"


class InternalError(JobqError):
    """The daemon's own failure."""
    CODE = "Internal"


class TokenReusedError(JobqError):
    """A client token sent again with another method or other jobs."""
    CODE = "TokenReused"


class PermissionDeniedError(JobqError):
    """The caller's role (its key's, or the ipc socket's) does not allow the
    request, or the job belongs to someone else; nothing changed."""
    CODE = "PermissionDenied"


class NotLeaderError(JobqError):
    """A cluster node that is not the leader answered: the request did
    nothing. ``leader`` is the leader the node names (a dict with ``id``,
    ``name``, ``address``, ``endpoints``, ``workers``, ``publish``), or None
    while no leader is known (an election). The client follows it by itself;
    this is raised when it could not (too many hops, no leader in time)."""
    CODE = "NotLeader"

    def __init__(self, code: str, message: str,
                 leader: Optional[Dict[str, Any]] = None) -> None:
        super().__init__(code, message)
        self.leader = leader


class TimeoutError(JobqError, builtins.TimeoutError):  # noqa: A001 (jobq.TimeoutError)
    """No reply within the call's timeout (client side)."""
    CODE = "Timeout"


class TransportError(JobqError, builtins.ConnectionError):
    """The request could not be sent, or its connection was lost (client side)."""
    CODE = "Transport"


class NotRunningError(JobqError, builtins.ConnectionError):
    """Nothing listens at the endpoint: the daemon is not running (client side)."""
    CODE = "NotRunning"


#: Every error class by its wire name.
_CLASSES: Tuple[Type[JobqError], ...] = (
    MalformedError, VersionMismatchError, UnknownMethodError, BadArgumentError,
    TooLargeError, QueueFullError, DrainedError, ShuttingDownError, UnknownOpcodeError,
    InvalidPriorityError, InvalidDependencyError, UnknownFieldError, TooManyWaitersError,
    StoreFailedError, BusyError, InternalError, TokenReusedError, PermissionDeniedError,
    NotLeaderError, TimeoutError,
    TransportError, NotRunningError)
ERRORS: Dict[str, Type[JobqError]] = {cls.CODE: cls for cls in _CLASSES}


def error_for(code: str, message: str, leader: Optional[Dict[str, Any]] = None) -> JobqError:
    """The exception for an error code and message: an instance of the
    code's class, or of :class:`JobqError` itself for a code this client
    does not know (a newer daemon's). ``leader``: a NotLeader answer's."""
    if code == NotLeaderError.CODE:
        return NotLeaderError(code, message, leader)
    return ERRORS.get(code, JobqError)(code, message)

__all__ = ["JobqError", "error_for", "ERRORS"] + [cls.__name__ for cls in ERRORS.values()]
