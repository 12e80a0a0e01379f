"""jobqd's command line and config file: --help tells every option, a config
file sets the same options (the command line wins), bad values are refused
with one clear line and exit code 2."""
import os
import re
import subprocess
import tempfile

from test_events import Daemon, JOBQD

OPTIONS = ["--data-dir", "--run-dir", "--log-level", "--listen", "--publish", "--shards", "--handlers", "--executors",
           "--max-running", "--max-jobs", "--max-waiters", "--ring-events", "--keepalive",
           "--sync", "--sync-interval", "--store-map-size", "--max-request-bytes", "--config",
           "--verbose", "--help", "--version"]


def jobqd(*args):
    return subprocess.run([JOBQD, *args], capture_output=True, text=True, timeout=10)


def test_help_lists_every_option():
    p = jobqd("--help")
    assert p.returncode == 0 and p.stderr == ""
    for opt in OPTIONS:
        assert opt in p.stdout, opt
    assert re.search(r"jobqd \S+ \(protocol 1\)", jobqd("--version").stdout)


def test_config_file_sets_options_and_the_command_line_wins():
    with tempfile.NamedTemporaryFile("w", suffix=".conf", delete=False) as f:
        f.write("# a comment\nshards 1\nmax-jobs 7   # trailing comment\nmax-running 3\n")
    try:
        d = Daemon("--config", f.name, "--max-running", "5")
        try:
            st = d.call("stats")
            assert (st["shards"], st["max_jobs"], st["max_running"]) == (1, 7, 5)
        finally:
            d.stop()
    finally:
        os.unlink(f.name)


def test_bad_options_are_refused_with_one_line():
    with tempfile.TemporaryDirectory() as tmp:
        for args, words in [(["--shards", "0"], "--shards"),
                            (["--sync", "sometimes"], "--sync"),
                            (["--store-map-size", "12Q"], "--store-map-size"),
                            (["--bogus"], "unknown option"),
                            (["--config", os.path.join(tmp, "missing.conf")], "cannot read config")]:
            p = jobqd("--data-dir", tmp, *args)
            assert p.returncode == 2, (args, p.returncode, p.stderr)
            lines = p.stderr.strip().splitlines()
            assert len(lines) == 1 and words in lines[0], (args, p.stderr)
        bad = os.path.join(tmp, "bad.conf")
        with open(bad, "w") as f:
            f.write("shards 1\nnot-an-option 3\n")
        p = jobqd("--data-dir", tmp, "--config", bad)
        assert p.returncode == 2 and "bad.conf:2" in p.stderr, p.stderr
