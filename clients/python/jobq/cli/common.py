"""Shared pieces of ``jobq-py``, the Python command line of jobq.

A port of the C CLI's shared parts so that both print the same bytes:
the state every command gets (:class:`Cli`, jobq_cli.h), option parsing
and error reporting (jobq_cli_opts.c), number and priority parsing
(jobq_cli_prio.c), and value formatting (jobq_cli_fmt.c): JSON text as
jansson writes it (its separators and string escapes, the daemon's key
order) with reals in their shortest exact form, timestamps as ISO-8601
local time with microseconds. Values are what :class:`jobq.Client`
decodes (msgpack as Python objects); where the C client's conversion to
JSON differs (integers above int64, non-finite reals, integer map keys)
the text here follows the C.
"""
from __future__ import annotations

import math
import re
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable, List, Optional, Sequence, Tuple, Union

from ..client import Client
from ..errors import ERRORS, JobqError, NotRunningError, TimeoutError, TransportError
from . import jsonread
from .jsonread import JsonLoadError
from .keygen import check_keys

EXIT_OK = 0
EXIT_FAIL = 1  #: the operation failed (daemon error, no daemon...)
EXIT_USAGE = 2  #: bad command line
EXIT_NOT_RUNNING = 3  #: nothing listens at the endpoint (jobqd stopped)

#: Default per-call timeout in seconds (-t/--timeout).
DEFAULT_TIMEOUT = 30.0

PRIORITY_HELP = "high, normal or low (or -10, 0, 10)"

_INT64_MAX = 2 ** 63 - 1
_INT64_MIN = -2 ** 63


@dataclass
class Command:
    """One subcommand: its word, implementation and help texts."""

    name: str
    fn: Callable[["Cli", List[str]], int]
    synopsis: str
    summary: str
    help: str


class Cli:
    """State shared by every command: the global options and the
    connection (made on first use)."""

    def __init__(self, endpoint: str, timeout: float = DEFAULT_TIMEOUT,
                 json: bool = False, endpoint_from_env: bool = False,
                 key: Optional[str] = None, server_key: Optional[str] = None) -> None:
        self.endpoint: str = endpoint
        self.timeout: float = timeout
        self.json: bool = json
        self.cmd: Optional[Command] = None
        #: The endpoint is $JOBQ_ENDPOINT's (not given with -s): said in errors.
        self.endpoint_from_env: bool = endpoint_from_env
        #: --key, $JOBQ_KEY: the CURVE key file for a tcp:// endpoint.
        self.key: Optional[str] = key
        #: --server-key, $JOBQ_SERVER_KEY: the daemon's public key.
        self.server_key: Optional[str] = server_key
        #: The keys were read and are used (libjobq's curve.set).
        self.curve: bool = False
        self._client: Optional[Client] = None

    def _make_client(self) -> Tuple[Optional[Client], str]:
        """A new client with this CLI's keys, or None and the error line:
        the endpoint's, else the keys' (libjobq's order and words)."""
        err = check_keys(self.key, self.server_key)
        use = err is None and bool(self.key)
        try:
            # An explicit "" (not None) keeps jobq.Client off $JOBQ_KEY:
            # the environment was read once, at the start, as jobq reads it.
            c = Client(self.endpoint, timeout=self.timeout, key=self.key if use else "",
                       server_key=self.server_key if use else "")
        except JobqError as e:
            if use and not e.message.startswith("invalid endpoint"):
                return None, e.message
            return None, "invalid endpoint '%s'" % self.endpoint
        if err is not None:
            c.close()
            return None, err
        self.curve = use
        return c, ""

    def client(self) -> Optional[Client]:
        """The client, connected on first use; None (error printed) when
        the endpoint is invalid or the keys cannot be used."""
        if self._client is None:
            self._client, err = self._make_client()
            if self._client is None:
                self.error(err)
                return None
        return self._client

    def quiet_client(self) -> Optional[Client]:
        """The client without any error message when it cannot be made
        (help must never fail for a daemon that is away)."""
        if self._client is None:
            self._client = self._make_client()[0]
        return self._client

    def close(self) -> None:
        """Closes the connection, if any."""
        if self._client is not None:
            self._client.close()
            self._client = None

    def error(self, msg: str) -> None:
        """One error line on stderr: ``jobq: CMD: msg``."""
        if self.cmd is not None:
            eprint("jobq: %s: %s" % (self.cmd.name, msg))
        else:
            eprint("jobq: %s" % msg)

    def usage(self, msg: str) -> int:
        """A usage error with a hint to the help; returns :data:`EXIT_USAGE`."""
        if self.cmd is not None:
            eprint("jobq: %s: %s (see 'jobq %s --help')" % (self.cmd.name, msg, self.cmd.name))
        else:
            eprint("jobq: %s (see 'jobq --help')" % msg)
        return EXIT_USAGE

    def call_failed(self, exc: JobqError) -> int:
        """Reports a failed call as the C CLI does; returns
        :data:`EXIT_NOT_RUNNING` when the daemon is not running, else
        :data:`EXIT_FAIL`."""
        if isinstance(exc, NotRunningError):
            eprint("jobq: %s" % exc.message)
            return EXIT_NOT_RUNNING
        if isinstance(exc, (TimeoutError, TransportError)):
            # libjobq's words: the method is the command's own, not named.
            msg = re.sub(r"^no reply to [a-z_, ]+ within ", "no reply within ", exc.message)
            if msg.startswith("the handshake with jobqd at "):
                # ...and the options are the command line's, not key=.
                msg = "the handshake with jobqd at %s failed: %s" % (
                    self._client.endpoint if self._client else self.endpoint, "is the server key the daemon's?" if self.curve else
                    "a CURVE endpoint needs a key (--key, $JOBQ_KEY) and the daemon's public "
                    "key (--server-key, $JOBQ_SERVER_KEY)")
            eprint("jobq: cannot reach the daemon at %s: %s" % (
                self._client.endpoint if self._client else self.endpoint, msg))
        else:
            # A code this client does not know (a newer daemon's) is
            # Internal to libjobq too.
            code = exc.code if exc.code in ERRORS else "Internal"
            self.error("%s: %s" % (code, exc.message or code))
        return EXIT_FAIL


def is_utf8(word: str) -> bool:
    """Whether a word of the command line was valid UTF-8 (Python keeps
    other bytes as lone surrogates; jobq refuses or drops such words)."""
    try:
        word.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


def eprint(line: str) -> None:
    """Writes one line on stderr."""
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


@dataclass
class Opt:
    """One command-specific option for :func:`parse`; ``count``, ``value``
    and ``values`` are filled by it."""

    name: str
    short: str = ""
    has_arg: bool = False
    count: int = 0
    value: Optional[str] = None
    values: List[str] = field(default_factory=list)


_COMMON = (("server", "s", True), ("timeout", "t", True), ("json", "", False),
           ("help", "h", False), ("key", "", True), ("server-key", "", True))


def _looks_like_number(a: str) -> bool:
    return len(a) > 1 and a[0] == "-" and a[1] in "0123456789."


def _apply_common(cli: Cli, which: str, value: Optional[str]) -> Optional[int]:
    """Applies a common option; an exit code when the command is done."""
    if which == "server":
        assert value is not None
        if not value:
            return cli.usage("empty endpoint")
        cli.endpoint = value
        cli.endpoint_from_env = False
        return None
    if which == "timeout":
        assert value is not None
        secs = parse_seconds(value)
        if secs is None or secs <= 0 or secs > 2e6:
            return cli.usage("invalid timeout '%s' (seconds, greater than 0)" % value)
        cli.timeout = math.ceil(secs * 1000) / 1000.0
        return None
    if which == "json":
        cli.json = True
        return None
    if which == "key":
        cli.key = value
        return None
    if which == "server-key":
        cli.server_key = value
        return None
    from . import cli_help  # the command table lives in the package
    cli_help(cli)
    return EXIT_OK


def valid_endpoint(e: str) -> bool:
    """An endpoint a daemon can be reached at: ``ipc://PATH`` or
    ``tcp://HOST:PORT``, or several separated by commas (a cluster)."""
    if "," in e:
        return all(valid_endpoint(x) for x in e.split(","))
    if e.startswith("ipc://"):
        return len(e) > 6
    if not e.startswith("tcp://"):
        return False
    host, colon, port = e[6:].rpartition(":")
    if not colon or not host or not re.fullmatch(r"[0-9]+", port):
        return False
    return 1 <= int(port) <= 65535


def _check_endpoint(cli: Cli) -> Optional[int]:
    if cli.cmd is None or cli.cmd.name == "help" or valid_endpoint(cli.endpoint):
        return None
    return cli.usage("invalid endpoint '%s'%s: expected ipc://PATH or tcp://HOST:PORT"
                     % (cli.endpoint, " (from $JOBQ_ENDPOINT)" if cli.endpoint_from_env
                        else ""))


def parse(cli: Cli, argv: List[str], opts: Sequence[Opt] = ()
          ) -> Tuple[List[str], Optional[int]]:
    """Parses a command's argv (argv[0] is the command), handling the
    common options (-s, -t, --json, -h) and the command's own ``opts``
    (filled in place). Returns the positional words and None, or an exit
    code when the command is done (usage error printed, or help shown)."""
    pos: List[str] = []
    only_pos = False
    i = 1
    n = len(argv)
    while i < n:
        a = argv[i]
        i += 1
        if only_pos or not a.startswith("-") or a == "-" or _looks_like_number(a):
            pos.append(a)
            continue
        if a == "--":
            only_pos = True
            continue
        name: Optional[str] = None
        letter = ""
        inline: Optional[str] = None
        if a[1] == "-":
            name, eq, rest = a[2:].partition("=")
            inline = rest if eq else None
        else:
            letter = a[1]
            inline = a[2:] if len(a) > 2 else None
        own: Optional[Opt] = None
        common: Optional[Tuple[str, str, bool]] = None
        for o in opts:
            if (o.name == name) if name is not None else (o.short == letter):
                own = o
                break
        if own is None:
            for c in _COMMON:
                if (c[0] == name) if name is not None else (c[1] == letter and c[1] != ""):
                    common = c
                    break
        if own is None and common is None:
            return pos, cli.usage("unknown option '%s'" % a)
        has_arg = own.has_arg if own is not None else (common is not None and common[2])
        value: Optional[str] = None
        if has_arg:
            if inline is not None:
                value = inline
            elif i < n:
                value = argv[i]
                i += 1
            else:
                return pos, cli.usage("option '%s' needs a value" % a)
        elif inline is not None:
            return pos, cli.usage("option '%s' takes no value" % a)
        if own is not None:
            if value is not None:
                own.values.append(value)
                own.value = value
            own.count += 1
        else:
            assert common is not None
            rc = _apply_common(cli, common[0], value)
            if rc is not None:
                return pos, rc
    return pos, _check_endpoint(cli)


# -- numbers and priorities (jobq_cli_opts.c, jobq_cli_prio.c) -------------

_INT_RE = re.compile(r"[+-]?[0-9]+")


def parse_int(s: str) -> Optional[int]:
    """Any integer that fits in 64 bits (as strtoll reads it); None when
    the word is not one."""
    if not s or not _INT_RE.fullmatch(s):
        return None
    v = int(s)
    return v if _INT64_MIN <= v <= _INT64_MAX else None


def parse_job_id(s: str) -> Optional[int]:
    """A job id: an integer >= 1; None when invalid."""
    v = parse_int(s)
    return v if v is not None and v >= 1 else None


_DEC_FLOAT_RE = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?")
_HEX_FLOAT_RE = re.compile(
    r"[+-]?0[xX]([0-9a-fA-F]+\.?[0-9a-fA-F]*|\.[0-9a-fA-F]+)([pP][+-]?[0-9]+)?")
_SUFFIX = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def _strtod_prefix(s: str) -> Tuple[Optional[float], str]:
    """The number strtod reads at the start of s (finite decimal or hex
    form; None when there is none or it is out of range) and the rest."""
    m = _HEX_FLOAT_RE.match(s)
    if m:
        text = m.group(0)
        try:
            v = float.fromhex(text)
        except (ValueError, OverflowError):
            return None, s
        return v, s[m.end():]
    m = _DEC_FLOAT_RE.match(s)
    if not m:
        return None, s
    text = m.group(0)
    v = float(text)
    mantissa = m.group(1)
    if math.isinf(v) or (v == 0 and re.search(r"[1-9]", mantissa)) or (
            v != 0 and abs(v) < sys.float_info.min):
        return None, s  # strtod's ERANGE
    return v, s[m.end():]


def parse_seconds(s: str) -> Optional[float]:
    """A duration: a number >= 0 with an optional suffix s, m, h or d;
    None when invalid."""
    if not s or s[0].isspace():
        return None
    v, rest = _strtod_prefix(s)
    if v is None or v < 0:
        return None
    mult = 1.0
    if rest:
        if len(rest) != 1 or rest not in _SUFFIX:
            return None
        mult = _SUFFIX[rest]
    return v * mult


_PRIO_NAMES = (("high", -10), ("normal", 0), ("low", 10))


def parse_priority(s: str) -> Optional[int]:
    """A priority by name (any case) or as an integer (within +-1000000);
    None when invalid."""
    for name, value in _PRIO_NAMES:
        if s.lower() == name and s.isascii():
            return value
    v = parse_int(s)
    if v is None or v < -1000000 or v > 1000000:
        return None
    return v


def priority_name(p: int) -> Optional[str]:
    """The name of a priority value, or None when it has none."""
    for name, value in _PRIO_NAMES:
        if value == p:
            return name
    return None


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def priority_names(v: Any) -> Any:
    """A copy of a priority or list of priorities with each named value
    replaced by its name (other values as they are)."""
    if _is_int(v):
        name = priority_name(v)
        return name if name is not None else v
    if isinstance(v, list):
        return [priority_names(x) for x in v]
    return v


# -- JSON values from the command line -------------------------------------

def json_load_error(e: ValueError) -> JsonLoadError:
    """The :class:`JsonLoadError` of a :func:`json_loads` failure."""
    return e if isinstance(e, JsonLoadError) else JsonLoadError(str(e))


def parse_value(s: str) -> Any:
    """A value from the command line: JSON when it parses as JSON (as the
    C jobq reads it), else the string itself."""
    try:
        return json_loads(s, any_value=True)
    except ValueError:
        return s


def json_loads(s: Union[str, bytes], any_value: bool = False) -> Any:
    """Reads JSON text as the C jobq does (jsonread.loads): only an array
    or object unless ``any_value``; raises :class:`JsonLoadError`."""
    return jsonread.loads(s, any_value)


# -- JSON text (jobq_cli_fmt.c) --------------------------------------------

def format_real(d: float) -> str:
    """The shortest ``%g`` text of d that reads back as d, with ".0" added
    to a whole number (it stays a real)."""
    text = ""
    for prec in range(1, 18):
        text = "%.*g" % (prec, d)
        try:
            if float(text) == d:
                break
        except ValueError:
            break
    if not any(c in text for c in ".eEn"):
        text += ".0"
    return text


_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\f": "\\f", "\n": "\\n",
            "\r": "\\r", "\t": "\\t"}
_NEEDS_ESCAPE = re.compile(r'["\\\x00-\x1f]')


def _escape_char(m: "re.Match[str]") -> str:
    c = m.group(0)
    return _ESCAPES.get(c) or "\\u%04X" % ord(c)


def json_string(s: str) -> str:
    """A JSON string as jansson writes it: only quotes, backslashes and
    control characters escaped (\\uXXXX in upper case), the rest as is."""
    return '"' + _NEEDS_ESCAPE.sub(_escape_char, s) + '"'


def _write_json(out: List[str], v: Any, comma: str, colon: str) -> None:
    if v is None:
        out.append("null")
    elif v is True:
        out.append("true")
    elif v is False:
        out.append("false")
    elif isinstance(v, int):
        # libjobq turns an integer above int64 into a real.
        out.append(str(v) if v <= _INT64_MAX else format_real(float(v)))
    elif isinstance(v, float):
        out.append(format_real(v) if math.isfinite(v) else "null")
    elif isinstance(v, str):
        out.append(json_string(v))
    elif isinstance(v, (bytes, bytearray)):
        out.append(json_string(bytes(v).decode("utf-8", "replace")))
    elif isinstance(v, (list, tuple)):
        out.append("[")
        for i, item in enumerate(v):
            if i:
                out.append(comma)
            _write_json(out, item, comma, colon)
        out.append("]")
    elif isinstance(v, dict):
        out.append("{")
        for i, (k, item) in enumerate(v.items()):
            if i:
                out.append(comma)
            out.append(json_string(k if isinstance(k, str) else str(k)))
            out.append(colon)
            _write_json(out, item, comma, colon)
        out.append("}")
    else:
        out.append(json_string(str(v)))


def json_text(v: Any, compact: bool) -> str:
    """JSON text of v as the C CLI writes it: compact, or with ", " and
    ": " separators; reals in their shortest exact form."""
    out: List[str] = []
    _write_json(out, v, "," if compact else ", ", ":" if compact else ": ")
    return "".join(out)


def print_json(v: Any) -> None:
    """Prints v as compact JSON on one line."""
    sys.stdout.write(json_text(v, True) + "\n")


# -- text of values --------------------------------------------------------

def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _ts_parts(v: Any) -> Optional[Tuple[int, int]]:
    if not isinstance(v, list) or len(v) != 2 or not _is_number(v[0]) or not _is_number(v[1]):
        return None
    try:
        sec, usec = int(v[0]), int(v[1])
    except (OverflowError, ValueError):
        return None
    if not 0 <= usec < 1000000:
        return None
    return sec, usec


def fmt_ts(ts: Any) -> str:
    """ISO-8601 local time with microseconds and UTC offset of a
    ``[sec, usec]`` timestamp; "-" for null or anything else."""
    parts = _ts_parts(ts)
    if parts is None:
        return "-"
    sec, usec = parts
    try:
        tm = time.localtime(sec)
        date = time.strftime("%Y-%m-%dT%H:%M:%S", tm)
    except (OverflowError, OSError, ValueError):
        return "-"
    gmtoff = int(tm.tm_gmtoff)
    sign = "-" if gmtoff < 0 else "+"
    off = abs(gmtoff) // 60  # C's division: towards zero
    return "%s.%06d%s%02d:%02d" % (date, usec, sign, off // 60, off % 60)


def ts_diff(start: Any, end: Any) -> float:
    """Seconds from one timestamp to another; negative when either is unset."""
    a, b = _ts_parts(start), _ts_parts(end)
    if a is None or b is None:
        return -1.0
    return float(b[0] - a[0]) + float(b[1] - a[1]) / 1e6


def fmt_value(v: Any) -> str:
    """Text of a value for tables: strings as is, null as "-", other
    scalars as JSON, containers as compact JSON."""
    if v is None:
        return "-"
    if isinstance(v, str):
        return v
    return json_text(v, True)


_TS_FIELDS = frozenset(("received_ts", "start_ts", "end_ts"))
_OP_TS_FIELDS = frozenset(("opstart", "opexec", "opend"))
_OP_LIST_FIELDS = _OP_TS_FIELDS | {"summary", "opstatus", "oppriority", "opresult"}


def fmt_field(name: str, v: Any) -> str:
    """Text of a field value in a table: timestamps formatted, per-opcode
    lists joined by ","."""
    if name in _TS_FIELDS and isinstance(v, list):
        return fmt_ts(v)
    if name not in _OP_LIST_FIELDS or not isinstance(v, list):
        return fmt_value(v)
    if name in _OP_TS_FIELDS:
        return ",".join(fmt_ts(x) for x in v)
    return ",".join(fmt_value(x) for x in v)


def item(v: Any, i: int) -> Any:
    """``v[i]`` when v is a list that long, else None (jansson's
    json_array_get)."""
    if isinstance(v, list) and 0 <= i < len(v):
        return v[i]
    return None


def fmt_log_entry(entry: Any) -> str:
    """A log entry ``[serial, ts, type, message]`` as "TIMESTAMP message",
    with " [type]" before the message when the type is not "message"."""
    ts = fmt_ts(item(entry, 1))
    kind = item(entry, 2)
    msg = fmt_value(item(entry, 3))
    if isinstance(kind, str) and kind != "message":
        return "%s [%s] %s" % (ts, kind, msg)
    return "%s %s" % (ts, msg)
