"""jobq: a thin Python client of the jobq daemon (docs/protocol.md).

``Client`` sends requests, ``Subscriber`` follows the event stream; every
failure is a ``JobqError`` subclass carrying the daemon's code and message.
"""
from .errors import *  # noqa: F401,F403  (JobqError, error_for and one class per code)
from .errors import __all__ as _errors_all
from .protocol import PROTOCOL_VERSION
from .client import Client, default_endpoint, new_token
from .subscriber import Subscriber

__all__ = ["Client", "Subscriber", "default_endpoint", "new_token", "PROTOCOL_VERSION",
           *_errors_all]
