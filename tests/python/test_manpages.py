"""The man pages (docs/man/*.scd) against the programs' --help: every long
option `jobqd --help` prints is in jobqd.8.scd; every command `jobq --help`
lists, and every long option of `jobq --help` and of `jobq COMMAND --help`,
is in jobq.1.scd; every long option of `jobq-worker --help` is in
jobq-worker.1.scd. A failure names what is missing, so an option added to a
program without its man page entry is caught here.

Run: /usr/bin/python3 -m pytest tests/python/test_manpages.py
"""
import os
import re
import shutil
import subprocess

import pytest

BUILD = os.environ.get("JOBQ_BUILD_DIR", "/work/main/build")
JOBQD = os.path.join(BUILD, "broker", "jobqd")
JOBQ = os.path.join(BUILD, "clients", "jobq")
JOBQ_WORKER = os.path.join(BUILD, "clients", "jobq-worker")
SRC = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MAN = os.path.join(SRC, "docs", "man")

OPTION = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")


def helptext(*args):
    proc = subprocess.run(list(args), capture_output=True, text=True, timeout=30,
                          env={**os.environ, "JOBQ_ENDPOINT": "", "JOBQ_WORKER_ENDPOINT": ""})
    assert proc.returncode == 0, f"{args} exited {proc.returncode}: {proc.stderr}"
    assert proc.stdout.startswith("Usage:"), proc.stdout
    return proc.stdout


def options(text):
    return set(OPTION.findall(text))


def page(name):
    with open(os.path.join(MAN, name)) as f:
        return f.read()


def missing_options(opts, source):
    return sorted(o for o in opts
                  if not re.search(r"(?<![\w-])" + re.escape(o) + r"(?![\w-])", source))


def jobq_commands():
    """The command names of `jobq --help`'s "Commands:" section."""
    text = helptext(JOBQ, "--help")
    section = text.split("\nCommands:\n", 1)[1].split("\n\n", 1)[0]
    cmds = [line.split()[0] for line in section.splitlines() if line.startswith("  ")]
    assert len(cmds) >= 10, section
    return cmds


def test_option_pattern_finds_options():
    # The pattern the checks rely on: long options, not dashes in prose.
    assert options("  -d, --data-dir DIR  a well-known\n  --sync-interval SEC (--x-y)") == \
        {"--data-dir", "--sync-interval", "--x-y"}
    assert missing_options({"--sync", "--now"}, "*--sync-interval* and --nowhere") == \
        ["--now", "--sync"]


def test_jobqd_page_has_every_option():
    opts = options(helptext(JOBQD, "--help"))
    assert {"--data-dir", "--help", "--version"} <= opts
    missing = missing_options(opts, page("jobqd.8.scd"))
    assert not missing, f"docs/man/jobqd.8.scd lacks these options of jobqd --help: {missing}"


def test_jobq_page_has_every_command():
    source = page("jobq.1.scd")
    # A command is documented by a term line starting with *NAME*.
    missing = [c for c in jobq_commands()
               if not re.search(r"^\*" + re.escape(c) + r"\*", source, re.M)]
    assert not missing, f"docs/man/jobq.1.scd lacks these commands of jobq --help: {missing}"


def test_jobq_page_has_every_option():
    source = page("jobq.1.scd")
    missing = {}
    for cmd in [None, *jobq_commands()]:
        args = [JOBQ, "--help"] if cmd is None else [JOBQ, cmd, "--help"]
        lack = missing_options(options(helptext(*args)), source)
        if lack:
            missing["jobq --help" if cmd is None else f"jobq {cmd} --help"] = lack
    assert not missing, f"docs/man/jobq.1.scd lacks these options: {missing}"


def test_jobq_worker_page_has_every_option():
    opts = options(helptext(JOBQ_WORKER, "--help"))
    assert {"--handlers", "--capacity", "--kill-grace", "--help", "--version"} <= opts
    missing = missing_options(opts, page("jobq-worker.1.scd"))
    assert not missing, \
        f"docs/man/jobq-worker.1.scd lacks these options of jobq-worker --help: {missing}"


@pytest.mark.parametrize("name", ["jobqd.8", "jobq.1", "jobq-worker.1"])
def test_page_builds(name, tmp_path):
    scdoc = shutil.which("scdoc")
    if not scdoc:
        pytest.skip("scdoc is not installed (scripts/deps.sh installs it)")
    with open(os.path.join(MAN, name + ".scd")) as src:
        proc = subprocess.run([scdoc], stdin=src, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, f"scdoc {name}.scd: {proc.stderr}"
    assert ".TH \"" + name.rsplit(".", 1)[0] in proc.stdout, proc.stdout[:400]
