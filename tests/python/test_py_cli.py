"""Parity of ``jobq-py`` (clients/python/jobq/cli, run as ``python3 -m
jobq``) with the C ``jobq``: the same command lines through both against
the same jobqd must give the same exit codes, the same stdout (text and
--json) and, where it is deterministic, the same stderr.

Run: JOBQ_BUILD_DIR=$PWD/build /usr/bin/python3 -m pytest tests/python/test_py_cli.py
Each test (or module, for the read-only table on a prepared queue) starts
its own jobqd in a temporary directory (test_cli.Daemon).

``run_both`` and ``PYCLI_ENV`` are imported by the tests of the other
commands (watch, monitor, admin).
"""
import json
import os
import re
import subprocess
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import pytest

from test_cli import JOBQ, Daemon

HERE = os.path.dirname(os.path.abspath(__file__))
PYCLI_DIR = os.path.normpath(os.path.join(HERE, "..", "..", "clients", "python"))
#: Environment that makes ``/usr/bin/python3 -m jobq`` this checkout's.
PYCLI_ENV = {"PYTHONPATH": PYCLI_DIR}
PYJOBQ = ["/usr/bin/python3", "-m", "jobq"]

Proc = "subprocess.CompletedProcess[str]"


def _env(endpoint: Optional[str], env: Optional[Dict[str, str]]) -> Dict[str, str]:
    e = dict(os.environ)
    e.pop("JOBQ_ENDPOINT", None)
    if endpoint:
        e["JOBQ_ENDPOINT"] = endpoint
    e.update(env or {})
    return e


def run_py(*args, endpoint=None, input=None, timeout=60, env=None, cwd=None):
    """Runs jobq-py (``python3 -m jobq``) with $JOBQ_ENDPOINT = endpoint;
    returns the CompletedProcess (text mode)."""
    e = _env(endpoint, env)
    e.update(PYCLI_ENV)
    return subprocess.run([*PYJOBQ, *map(str, args)], input=input, capture_output=True,
                          text=True, timeout=timeout, env=e, cwd=cwd)


def run_c(*args, endpoint=None, input=None, timeout=60, env=None, cwd=None):
    """Runs the C jobq, as run_py."""
    return subprocess.run([JOBQ, *map(str, args)], input=input, capture_output=True,
                          text=True, timeout=timeout, env=_env(endpoint, env), cwd=cwd)


def run_both(argv, endpoint=None, input=None, timeout=60, env=None, cwd=None):
    """Runs the same command line through the C jobq, then jobq-py, with
    the same environment ($JOBQ_ENDPOINT = endpoint when given, plus env)
    and stdin; returns (c, py), two CompletedProcess (text mode)."""
    argv = [str(a) for a in argv]
    c = run_c(*argv, endpoint=endpoint, input=input, timeout=timeout, env=env, cwd=cwd)
    py = run_py(*argv, endpoint=endpoint, input=input, timeout=timeout, env=env, cwd=cwd)
    return c, py


_DEFAULT_EP = re.compile(r"(default \$JOBQ_ENDPOINT, else\n {27})ipc://\S+")


def normalise_help(text):
    """Help text with the default endpoint replaced: the C jobq shows its
    build's run directory, jobq-py its checkout's (both "where the daemon
    of this checkout listens", at different paths here)."""
    return _DEFAULT_EP.sub(r"\1DEFAULT", text)


def assert_same(argv, endpoint=None, input=None, stderr=True, norm=None, env=None,
                rc=None, cwd=None):
    """Runs argv both ways (run_both) and asserts the same exit code, the
    same stdout (after norm, when given, and normalise_help) and, unless
    stderr is False, the same stderr. rc, when given, is the exit code
    both must have. Returns (c, py)."""
    c, py = run_both(argv, endpoint=endpoint, input=input, env=env, cwd=cwd)
    what = " ".join(map(str, argv))
    n = norm or (lambda s: s)
    assert py.returncode == c.returncode, (what, c.returncode, py.returncode, c.stderr,
                                           py.stderr)
    if rc is not None:
        assert c.returncode == rc, (what, c.returncode, c.stderr)
    assert normalise_help(n(py.stdout)) == normalise_help(n(c.stdout)), what
    if stderr:
        assert n(py.stderr) == n(c.stderr), what
    return c, py
