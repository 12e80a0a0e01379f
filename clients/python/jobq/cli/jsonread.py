"""JSON text read as the C ``jobq`` reads it (jansson's rules), for jobq-py.

The C CLI reads JSON with jansson: ``submit --args``, each KEY=VALUE value
(JSON when it parses, else a string) and the FILE of ``submit-many``.
Python's json module accepts other texts (NaN, Infinity, lone surrogates,
NUL in strings, integers of any size, duplicate keys) and words its errors
otherwise, so jobq-py reads JSON here instead: what is accepted, and the
"line L, column C: REASON near 'TOKEN'" of an error, follow what the C
jobq prints for the same bytes (columns count characters; the token is the
text of the token read last, left out when longer than 20 bytes).
"""
from __future__ import annotations

import json
import math
import re
import sys
from typing import Any, Dict, List, Tuple, Union

_INT64_MAX = 2 ** 63 - 1
_INT64_MIN = -2 ** 63
#: Deepest nesting of arrays and objects read.
MAX_DEPTH = 2048

_EOF = ""  # what _Reader.get returns at the end
# Token kinds besides the one-character ones ("[", "{", ":"...).
_T_EOF, _T_INVALID, _T_STRING, _T_INTEGER, _T_REAL, _T_TRUE, _T_FALSE, _T_NULL = (
    "eof", "invalid", "string", "integer", "real", "true", "false", "null")


class JsonLoadError(ValueError):
    """JSON text that cannot be read: where (``line`` 0 when unknown) and why."""

    def __init__(self, text: str, line: int = 0, column: int = 0) -> None:
        super().__init__(text)
        self.text = text
        self.line = line
        self.column = column


class _StreamError(Exception):
    """Bytes that are not UTF-8."""


def _utf8_len(data: bytes, i: int) -> int:
    """Length of the valid UTF-8 sequence at data[i], 0 when invalid."""
    c = data[i]
    if c < 0x80:
        return 1
    if 0xC2 <= c <= 0xDF:
        n, cp = 2, c & 0x1F
    elif 0xE0 <= c <= 0xEF:
        n, cp = 3, c & 0x0F
    elif 0xF0 <= c <= 0xF4:
        n, cp = 4, c & 0x07
    else:
        return 0
    if i + n > len(data):
        return 0
    for k in range(1, n):
        b = data[i + k]
        if b & 0xC0 != 0x80:
            return 0
        cp = (cp << 6) | (b & 0x3F)
    if ((n == 3 and cp < 0x800) or (n == 4 and cp < 0x10000) or cp > 0x10FFFF
            or 0xD800 <= cp <= 0xDFFF):
        return 0
    return n


class _Reader:
    """Characters of the input one by one, with line and column, and the
    text of the token being read."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0
        self.line = 1
        self.column = 0
        self.last_column = 0
        self.saved: List[str] = []
        self.stream_error = False
        self.depth = 0

    def get(self) -> str:
        if self.pos >= len(self.data):
            return _EOF
        n = _utf8_len(self.data, self.pos)
        if n == 0:
            self.stream_error = True
            raise _StreamError("unable to decode byte 0x%x" % self.data[self.pos])
        ch = self.data[self.pos:self.pos + n].decode("utf-8")
        self.pos += n
        if ch == "\n":
            self.line += 1
            self.last_column = self.column
            self.column = 0
        else:
            self.column += 1
        self.saved.append(ch)
        return ch

    def unget(self, ch: str) -> None:
        if ch == _EOF:
            return
        self.pos -= len(ch.encode("utf-8"))
        if ch == "\n":
            self.line -= 1
            self.column = self.last_column
        else:
            self.column -= 1
        self.saved.pop()

    def error(self, msg: str) -> JsonLoadError:
        saved = "".join(self.saved)
        shown = saved.split("\0", 1)[0]  # the C string of the token's text
        if shown:
            if len(saved.encode("utf-8")) <= 20:
                msg = "%s near '%s'" % (msg, shown)
        elif not self.stream_error:
            msg = "%s near end of file" % msg
        return JsonLoadError(msg, self.line, self.column)


_WS = " \t\n\r"
_DIGITS = "0123456789"
_HEX = "0123456789abcdefABCDEF"
_ESCAPES = {'"': '"', "\\": "\\", "/": "/", "b": "\b", "f": "\f", "n": "\n", "r": "\r",
            "t": "\t"}


class _Lexer:
    def __init__(self, data: bytes) -> None:
        self.r = _Reader(data)
        self.token = _T_EOF
        self.value: Any = None

    def error(self, msg: str) -> JsonLoadError:
        return self.r.error(msg)

    def scan(self) -> None:
        r = self.r
        r.saved = []
        c = r.get()
        while c != _EOF and c in _WS:
            r.saved = []
            c = r.get()
        if c == _EOF:
            self.token = _T_EOF
        elif c in "{}[]:,":
            self.token = c
        elif c == '"':
            self._string()
        elif c == "-" or c in _DIGITS:
            self._number(c)
        elif c.isascii() and c.isalpha():
            while True:
                c = r.get()
                if not (c != _EOF and c.isascii() and c.isalpha()):
                    break
            r.unget(c)
            word = "".join(r.saved)
            self.token = {"true": _T_TRUE, "false": _T_FALSE, "null": _T_NULL}.get(
                word, _T_INVALID)
        else:
            self.token = _T_INVALID

    def _string(self) -> None:
        r = self.r
        c = r.get()
        while c != '"':
            if c == _EOF:
                raise self.error("premature end of input")
            if ord(c) <= 0x1F:
                r.unget(c)
                raise self.error("unexpected newline" if c == "\n"
                                 else "control character 0x%x" % ord(c))
            if c == "\\":
                c = r.get()
                if c == "u":
                    for _ in range(4):
                        c = r.get()
                        if c == _EOF or c not in _HEX:
                            raise self.error("invalid escape")
                elif c == _EOF or c not in _ESCAPES:
                    raise self.error("invalid escape")
            c = r.get()
        # The text is read whole, then its escapes decoded.
        text = "".join(r.saved)[1:-1]
        out: List[str] = []
        i = 0
        while i < len(text):
            ch = text[i]
            if ch != "\\":
                out.append(ch)
                i += 1
                continue
            e = text[i + 1]
            if e != "u":
                out.append(_ESCAPES[e])
                i += 2
                continue
            cp = int(text[i + 2:i + 6], 16)
            i += 6
            if 0xD800 <= cp <= 0xDBFF:
                if text[i:i + 2] != "\\u":
                    raise self.error("invalid Unicode '\\u%04X'" % cp)
                low = int(text[i + 2:i + 6], 16)
                if not 0xDC00 <= low <= 0xDFFF:
                    raise self.error("invalid Unicode '\\u%04X\\u%04X'" % (cp, low))
                cp = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00)
                i += 6
            elif 0xDC00 <= cp <= 0xDFFF:
                raise self.error("invalid Unicode '\\u%04X'" % cp)
            out.append(chr(cp))
        self.token = _T_STRING
        self.value = "".join(out)

    def _number(self, c: str) -> None:
        r = self.r
        self.token = _T_INVALID
        if c == "-":
            c = r.get()
        if c == "0":
            c = r.get()
            if c != _EOF and c in _DIGITS:
                r.unget(c)
                return
        elif c != _EOF and c in _DIGITS:
            c = r.get()
            while c != _EOF and c in _DIGITS:
                c = r.get()
        else:
            r.unget(c)
            return
        if c == _EOF or c not in ".eE":
            r.unget(c)
            v = int("".join(r.saved))
            if not _INT64_MIN <= v <= _INT64_MAX:
                raise self.error("too big integer")
            self.token, self.value = _T_INTEGER, v
            return
        if c == ".":
            c = r.get()
            if c == _EOF or c not in _DIGITS:
                r.unget(c)
                return
            c = r.get()
            while c != _EOF and c in _DIGITS:
                c = r.get()
        if c != _EOF and c in "eE":
            c = r.get()
            if c != _EOF and c in "+-":
                c = r.get()
            if c == _EOF or c not in _DIGITS:
                r.unget(c)
                return
            c = r.get()
            while c != _EOF and c in _DIGITS:
                c = r.get()
        r.unget(c)
        f = float("".join(r.saved))
        if math.isinf(f):
            raise self.error("real number overflow")
        self.token, self.value = _T_REAL, f


def _value(lex: _Lexer) -> Any:
    t = lex.token
    if t == _T_STRING:
        if "\0" in lex.value:
            raise lex.error("\\u0000 is not allowed without JSON_ALLOW_NUL")
        return lex.value
    if t in (_T_INTEGER, _T_REAL):
        return lex.value
    if t == _T_TRUE:
        return True
    if t == _T_FALSE:
        return False
    if t == _T_NULL:
        return None
    if t in ("[", "{"):
        lex.r.depth += 1
        if lex.r.depth > MAX_DEPTH:
            raise lex.error("maximum parsing depth reached")
        v = _array(lex) if t == "[" else _object(lex)
        lex.r.depth -= 1
        return v
    if t == _T_INVALID:
        raise lex.error("invalid token")
    raise lex.error("unexpected token")


def _array(lex: _Lexer) -> List[Any]:
    out: List[Any] = []
    lex.scan()
    if lex.token == "]":
        return out
    while lex.token != _T_EOF:
        out.append(_value(lex))
        lex.scan()
        if lex.token != ",":
            break
        lex.scan()
    if lex.token != "]":
        raise lex.error("']' expected")
    return out


def _object(lex: _Lexer) -> Dict[str, Any]:
    out: Dict[str, Any] = {}
    lex.scan()
    if lex.token == "}":
        return out
    while True:
        if lex.token != _T_STRING:
            raise lex.error("string or '}' expected")
        key = lex.value
        if "\0" in key:
            raise lex.error("NUL byte in object key not supported")
        if key in out:
            raise lex.error("duplicate object key")
        lex.scan()
        if lex.token != ":":
            raise lex.error("':' expected")
        lex.scan()
        out[key] = _value(lex)
        lex.scan()
        if lex.token != ",":
            break
        lex.scan()
    if lex.token != "}":
        raise lex.error("'}' expected")
    return out


_NOT_FAST = object()


class _Refused(Exception):
    pass


def _fast_loads(data: bytes, any_value: bool) -> Any:
    """The value by Python's json module when the text is one jansson
    reads alike (large files are read fast); _NOT_FAST when in doubt, for
    the reader above to decide and word the error."""
    def refuse(*_: Any) -> Any:
        raise _Refused()

    def pairs(items: List[Tuple[str, Any]]) -> Dict[str, Any]:
        out = dict(items)
        if len(out) != len(items):
            raise _Refused()
        return out

    def as_int(text: str) -> int:
        v = int(text)
        if not _INT64_MIN <= v <= _INT64_MAX:
            raise _Refused()
        return v

    def as_float(text: str) -> float:
        v = float(text)
        if math.isinf(v):
            raise _Refused()
        return v

    try:
        # Strict UTF-8 refuses what jansson refuses (overlong forms, surrogates).
        v = json.loads(data.decode("utf-8"), parse_constant=refuse, object_pairs_hook=pairs,
                       parse_int=as_int, parse_float=as_float)
        if not any_value and not isinstance(v, (list, dict)):
            return _NOT_FAST
        if not _plain_strings(v):
            return _NOT_FAST
        return v
    except (ValueError, RecursionError, _Refused):
        return _NOT_FAST


_UNTAKEN = re.compile("[\0\ud800-\udfff]")


def _plain_strings(v: Any) -> bool:
    """Whether every string in v is one jansson takes (no NUL, no lone
    surrogate from a \\u escape)."""
    if isinstance(v, str):
        return _UNTAKEN.search(v) is None
    if isinstance(v, list):
        return all(_plain_strings(x) for x in v)
    if isinstance(v, dict):
        return all(_plain_strings(k) and _plain_strings(x) for k, x in v.items())
    return True


def loads(text: Union[str, bytes], any_value: bool = False) -> Any:
    """The value of JSON text, read as jansson reads it with
    JSON_REJECT_DUPLICATES (and JSON_DECODE_ANY when ``any_value``: a
    scalar is then a value too; else only an array or object is). Raises
    :class:`JsonLoadError` (its text as the C jobq words it) otherwise."""
    data = text.encode("utf-8", "surrogateescape") if isinstance(text, str) else text
    fast = _fast_loads(data, any_value)
    if fast is not _NOT_FAST:
        return fast
    lex = _Lexer(data)
    # Each level of nesting takes two frames of this recursive reader.
    if sys.getrecursionlimit() < 3 * MAX_DEPTH:
        sys.setrecursionlimit(3 * MAX_DEPTH)
    try:
        lex.scan()
        if not any_value and lex.token not in ("[", "{"):
            raise lex.error("'[' or '{' expected")
        v = _value(lex)
        lex.scan()
        if lex.token != _T_EOF:
            raise lex.error("end of file expected")
        return v
    except _StreamError as e:
        raise lex.error(str(e)) from None


__all__ = ["JsonLoadError", "loads", "MAX_DEPTH"]
