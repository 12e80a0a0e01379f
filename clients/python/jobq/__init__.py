"""jobq: a thin Python client of the jobq daemon (docs/protocol.md).

``Client`` sends requests, ``Subscriber`` follows the event stream,
``Worker`` serves opcodes (docs/workers.md); every failure is a
``JobqError`` subclass carrying the daemon's code and message.
"""
from .errors import (ERRORS, BadArgumentError, BusyError, DrainedError, InternalError,
                     InvalidDependencyError, InvalidPriorityError, JobqError, MalformedError,
                     NotLeaderError, NotRunningError, PermissionDeniedError, QueueFullError, ShuttingDownError,
                     StoreFailedError,
                     TimeoutError, TokenReusedError, TooLargeError, TooManyWaitersError,
                     TransportError, UnknownFieldError, UnknownMethodError, UnknownOpcodeError,
                     VersionMismatchError, error_for)
from .protocol import PROTOCOL_VERSION
from .client import Client, default_endpoint, new_token
from .subscriber import Subscriber
from .worker import Worker

__all__ = [
    "Client", "Subscriber", "Worker", "default_endpoint", "new_token", "PROTOCOL_VERSION",
    "JobqError", "error_for", "ERRORS", "BadArgumentError", "BusyError", "DrainedError",
    "InternalError", "InvalidDependencyError", "InvalidPriorityError", "MalformedError",
    "NotLeaderError", "NotRunningError", "PermissionDeniedError", "QueueFullError", "ShuttingDownError", "StoreFailedError",
    "TimeoutError", "TokenReusedError", "TooLargeError", "TooManyWaitersError",
    "TransportError", "UnknownFieldError", "UnknownMethodError", "UnknownOpcodeError",
    "VersionMismatchError",
]
