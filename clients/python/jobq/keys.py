"""CURVE keys for the jobq client: reading czmq certificate files and
setting up a socket to talk to a jobqd TCP endpoint (docs/security.md).

A certificate is czmq's ZPL text: a ``metadata`` section (``name``,
``role``) and a ``curve`` section (``public-key``, and in the secret file
``secret-key``), Z85-encoded. ``jobq keygen NAME`` writes ``NAME.key``
(public, for the daemon's authorized-keys directory) and
``NAME.key_secret`` (mode 0600, for the client); :func:`make_cert` and
:func:`save_cert` make and write such a pair (what ``jobq-py keygen`` does).
"""
from __future__ import annotations

import os
import time
from typing import Dict, List, NamedTuple, Optional

import zmq

from .errors import BadArgumentError

#: Environment variables read when no key is given.
KEY_ENV = "JOBQ_KEY"
SERVER_KEY_ENV = "JOBQ_SERVER_KEY"


class Cert(NamedTuple):
    """A certificate: Z85 keys (``secret`` None in a public file) and its
    metadata."""
    public: str
    secret: Optional[str]
    meta: Dict[str, str]


def _unquote(v: str) -> str:
    v = v.strip()
    if len(v) >= 2 and v[0] == v[-1] and v[0] in "\"'":
        return v[1:-1]
    return v


def parse_cert(text: str) -> Cert:
    """A certificate from the text of a czmq certificate file."""
    section = ""
    values: Dict[str, Dict[str, str]] = {"metadata": {}, "curve": {}}
    for raw in text.splitlines():
        # Only whole lines are comments: a Z85 key may hold a '#'.
        line = "" if raw.lstrip().startswith("#") else raw.rstrip()
        if not line.strip():
            continue
        if not line[0].isspace():
            section = line.strip()
            values.setdefault(section, {})
            continue
        if "=" in line:
            k, v = line.split("=", 1)
            values.setdefault(section, {})[k.strip()] = _unquote(v)
    curve = values["curve"]
    public = curve.get("public-key", "")
    secret = curve.get("secret-key")
    if len(public) != 40 or (secret is not None and len(secret) != 40):
        raise BadArgumentError("BadArgument", "not a CURVE certificate (no 40-character Z85 "
                                              "public-key in its curve section)")
    return Cert(public, secret, values["metadata"])


def load_cert(path: str) -> Cert:
    """Read a certificate file; for a client key, ``NAME.key`` finds its
    ``NAME.key_secret`` beside it (the file named may be either)."""
    candidates = [path] if path.endswith("_secret") else [path + "_secret", path]
    for p in candidates:
        try:
            with open(p, encoding="utf-8") as f:
                cert = parse_cert(f.read())
        except FileNotFoundError:
            continue
        except OSError as e:
            raise BadArgumentError("BadArgument", "cannot read key %s: %s" % (p, e)) from None
        if cert.secret or p == candidates[-1]:
            return cert
    raise BadArgumentError("BadArgument", "no key file %s" % path)


def server_public_key(value: str) -> str:
    """The daemon's public key from a Z85 string (40 characters) or the
    path of its certificate file (DATA_DIR/server.key)."""
    if len(value) == 40 and not os.path.exists(value):
        return value
    return load_cert(value[:-7] if value.endswith("_secret") else value).public


def make_cert(meta: Dict[str, str]) -> Cert:
    """A new CURVE keypair with that metadata (``name``, ``role``)."""
    public, secret = zmq.curve_keypair()
    return Cert(public.decode("ascii"), secret.decode("ascii"), dict(meta))


def _cert_text(cert: Cert, comments: List[str], secret: bool) -> str:
    # The ZPL layout czmq's zconfig reads (zcertstore, zcert_load): a
    # section name at the margin, its "key = "value"" lines indented by 4.
    lines = ["#   %s" % c for c in comments] + ["", "metadata"]
    lines += ['    %s = "%s"' % (k, v) for k, v in cert.meta.items()]
    lines += ["curve", '    public-key = "%s"' % cert.public]
    if secret:
        lines.append('    secret-key = "%s"' % cert.secret)
    return "\n".join(lines) + "\n"


def _write_new(path: str, text: str, mode: int) -> None:
    # O_EXCL: an existing key is never overwritten; the secret file is
    # born with its final mode (nobody else can open it in between).
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        os.fchmod(fd, mode)  # whatever the umask took away
        data = text.encode("utf-8")
        while data:
            data = data[os.write(fd, data):]
    finally:
        os.close(fd)


def save_cert(cert: Cert, path: str) -> None:
    """Write cert as czmq certificates: ``path`` (public, mode 0644) and
    ``path + "_secret"`` (mode 0600), what jobqd's authorized-keys
    directory and :func:`load_cert` (and libjobq, and czmq) read. Raises
    OSError (FileExistsError when either exists: nothing is overwritten)."""
    if cert.secret is None:
        raise ValueError("a certificate to save needs its secret key")
    for p in (path, path + "_secret"):
        if os.path.lexists(p):
            raise FileExistsError(17, os.strerror(17), p)
    when = time.strftime("%Y-%m-%d %H:%M:%S")
    what = " (role %s)" % cert.meta["role"] if "role" in cert.meta else ""
    _write_new(path, _cert_text(cert, [
        "jobq CURVE public certificate%s, made %s" % (what, when),
        "It may be shown to anyone: jobqd's authorized-keys directory takes it."],
        secret=False), 0o644)
    _write_new(path + "_secret", _cert_text(cert, [
        "jobq CURVE secret certificate%s, made %s" % (what, when),
        "Keep it to yourself (mode 0600): whoever reads it acts as this key."],
        secret=True), 0o600)


def setup_curve(sock: "zmq.Socket[bytes]", endpoint: str, key: Optional[str],
                server_key: Optional[str]) -> bool:
    """Make sock a CURVE client when endpoint is TCP and a key is given
    (``key``, or ``$JOBQ_KEY`` when it is None; ``server_key``, or
    ``$JOBQ_SERVER_KEY`` when it is None: "" means none, whatever the
    environment says). ipc endpoints never use keys. True when set."""
    if not endpoint.startswith("tcp://"):
        return False
    key = (os.environ.get(KEY_ENV) if key is None else key) or None
    server_key = (os.environ.get(SERVER_KEY_ENV) if server_key is None else server_key) or None
    if not key and not server_key:
        return False
    if not key or not server_key:
        raise BadArgumentError("BadArgument", "CURVE needs both a key (key= or $JOBQ_KEY) and "
                                              "the server's public key (server_key= or "
                                              "$JOBQ_SERVER_KEY)")
    cert = load_cert(key)
    if not cert.secret:
        raise BadArgumentError("BadArgument", "key %s has no secret key (give NAME.key_secret)"
                               % key)
    sock.setsockopt(zmq.CURVE_PUBLICKEY, cert.public.encode())
    sock.setsockopt(zmq.CURVE_SECRETKEY, cert.secret.encode())
    sock.setsockopt(zmq.CURVE_SERVERKEY, server_public_key(server_key).encode())
    return True
