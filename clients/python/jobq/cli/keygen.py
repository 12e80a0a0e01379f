"""CURVE keys in ``jobq-py``: the ``keygen`` command (jobq_cli_keygen.c)
and the check of ``--key``/``--server-key`` as libjobq makes it
(jobq_keys.c), so that both CLIs refuse the same keys with the same words.
The keys themselves are read and written by :mod:`jobq.keys`.
"""
from __future__ import annotations

import os
import re
from typing import TYPE_CHECKING, List, Optional, Tuple

from ..keys import make_cert, save_cert

if TYPE_CHECKING:
    from .common import Cli

#: Z85's alphabet, a character's value being its index.
_Z85 = ("0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
        ".-:+=^!/*?&<>()[]{}@%$#")
_KEY_CHARS = 40


def z85_valid(text: str) -> bool:
    """Whether text decodes as Z85 (zmq_z85_decode): groups of 5
    characters of the alphabet, each group at most 0xffffffff."""
    if len(text) < 5 or len(text) % 5:
        return False
    for i in range(0, len(text), 5):
        value = 0
        for ch in text[i:i + 5]:
            digit = _Z85.find(ch)
            if digit < 0:
                return False
            value = value * 85 + digit
        if value > 0xFFFFFFFF:
            return False
    return True


_SPACE = " \t\n\v\f\r"  # C's isspace


def _read_curve(text: str) -> Tuple[str, str]:
    """public-key and secret-key of a certificate's curve section ("" for
    one that is missing or not 40 characters), read as libjobq reads them
    (text: the file's bytes as latin-1)."""
    pub = sec = ""
    curve = False
    for line in text.split("\n"):
        if line.startswith("#"):  # whole lines only: a Z85 key may hold '#'
            continue
        if line and line[0] not in _SPACE:
            curve = re.split(r"[ \t\r]", line, 1)[0] == "curve"
            continue
        if not curve or "=" not in line:
            continue
        k, v = line.split("=", 1)
        k, v = k.strip(_SPACE), v.strip(_SPACE)
        if len(v) >= 2 and v[0] in "\"'" and v[-1] == v[0]:
            v = v[1:-1]
        if len(v) == _KEY_CHARS and k in ("public-key", "secret-key"):
            if k == "public-key":
                pub = v
            else:
                sec = v
    return pub, sec


def _read(path: str) -> str:
    """The file's bytes as latin-1 text; a directory reads as nothing (C's
    fopen takes it, its reads fail). Raises OSError."""
    try:
        with open(path, "rb") as f:
            return f.read().decode("latin-1")
    except IsADirectoryError:
        return ""


def _load_key(path: str, need_secret: bool) -> Tuple[Optional[Tuple[str, str]], str]:
    """(public, secret) of path (NAME.key finds NAME.key_secret beside it),
    or None and libjobq's error."""
    text: Optional[str] = None
    if need_secret and not (len(path) > 7 and path.endswith("_secret")):
        try:
            text = _read(path + "_secret")
        except OSError:
            text = None
    if text is None:
        try:
            text = _read(path)
        except OSError as e:
            return None, "cannot read key %s: %s" % (path, os.strerror(e.errno or 0))
    pub, sec = _read_curve(text)
    if not pub:
        return None, "%s is not a CURVE certificate (no public-key)" % path
    if need_secret and not sec:
        return None, "key %s has no secret key: give NAME.key_secret" % path
    return (pub, sec), ""


def check_keys(key: Optional[str], server_key: Optional[str]) -> Optional[str]:
    """None when the keys may be used (both given and readable, or
    neither), else the error jobq prints (jobq_curve_load's words). As
    libjobq, the keys are read whatever the endpoint (an ipc one then
    does not use them)."""
    if not key and not server_key:
        return None
    if not key or not server_key:
        return ("CURVE needs both a key (--key, $JOBQ_KEY) and the server's public key "
                "(--server-key, $JOBQ_SERVER_KEY)")
    mine, err = _load_key(key, True)
    if mine is None:
        return err
    if len(os.fsencode(server_key)) == _KEY_CHARS and not os.path.exists(server_key):
        server = server_key
    else:
        theirs, err = _load_key(server_key, False)
        if theirs is None:
            return err
        server = theirs[0]
    if not all(z85_valid(k) for k in (mine[0], mine[1], server)):
        return "a key is not valid Z85"
    return None


_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-@")
ROLES = ("read", "submit", "admin", "worker")


def valid_name(name: str) -> bool:
    """A key's name: 1 to 64 of letters, digits, '.', '_', '-', '@', not
    starting with '.' or '-' (it names the owner of the key's jobs)."""
    return (0 < len(name) <= 64 and name[0] not in ".-"
            and all(c in _NAME_CHARS for c in name))


def cmd_keygen(cli: "Cli", argv: List[str]) -> int:
    """``jobq keygen NAME [--role ROLE] [--dir DIR]``."""
    from .common import EXIT_FAIL, EXIT_OK, Opt, parse, print_json
    o_role, o_dir = Opt("role", has_arg=True), Opt("dir", has_arg=True)
    pos, rc = parse(cli, argv, (o_role, o_dir))
    if rc is not None:
        return rc
    if len(pos) != 1:
        return cli.usage("one NAME only" if pos else "missing NAME")
    name = pos[0]
    role = o_role.value if o_role.value is not None else "submit"
    where = o_dir.value if o_dir.value is not None else "."
    if not valid_name(name):
        return cli.usage("invalid NAME '%s': 1 to 64 of letters, digits, '.', '_', '-', '@' "
                         "(it names the owner of the key's jobs)" % name)
    if role not in ROLES:
        return cli.usage("invalid role '%s': read, submit, admin or worker" % role)
    pub = "%s/%s.key" % (where, name)
    sec = pub + "_secret"
    for p in (pub, sec):
        if os.path.exists(p):
            cli.error("%s exists already: choose another NAME, or remove the old key first" % p)
            return EXIT_FAIL
    cert = make_cert({"name": name, "role": role})
    try:
        save_cert(cert, pub)
    except OSError as e:
        cli.error("cannot write %s: %s" % (pub, os.strerror(e.errno or 0)))
        return EXIT_FAIL
    if cli.json:
        print_json({"public": pub, "secret": sec, "public_key": cert.public, "name": name,
                    "role": role})
    else:
        print("public key:  %s (copy it into jobqd's authorized-keys directory)" % pub)
        print("secret key:  %s (mode 0600; use it with --key)" % sec)
        print(cert.public)
    return EXIT_OK
