"""jobqd as a service: the run directory, the default paths of installed
and build-tree binaries, the log (levels, journald's form), sd_notify,
SIGHUP reloads, the config file's syntax and the example etc/jobqd.conf,
and socket files removed by a clean stop.

Each daemon runs in its own temporary directory, its stderr in a file
there; every wait is bounded."""
import grp
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time

import msgpack
import pytest
import zmq
from jobqd_stop import stop_jobqd

HERE = os.path.dirname(os.path.abspath(__file__))
TOP = os.path.dirname(os.path.dirname(HERE))
BUILD = os.environ.get("JOBQ_BUILD_DIR", os.path.join(TOP, "build"))
JOBQD = os.path.join(BUILD, "broker", "jobqd")
JOBQ = os.path.join(BUILD, "clients", "jobq")
EXAMPLE = os.path.join(TOP, "etc", "jobqd.conf")
MAP = ["--store-map-size", "64M"]


def cmake_cache(name):
    with open(os.path.join(BUILD, "CMakeCache.txt")) as f:
        for line in f:
            m = re.match(r"%s:[A-Z]+=(.*)$" % name, line.strip())
            if m:
                return m.group(1)
    raise AssertionError("%s not in CMakeCache.txt" % name)


class Jobqd:
    """A jobqd in tmp (data in tmp/data unless args say otherwise), its
    stderr in tmp/jobqd.log."""

    def __init__(self, tmp, *args, run_dir=None, env=None, wait=True):
        self.tmp = tmp
        self.data = os.path.join(tmp, "data")
        self.run = run_dir or self.data
        self.logpath = os.path.join(tmp, "jobqd.log")
        cmd = [JOBQD, "--data-dir", self.data, *MAP]
        if run_dir:
            cmd += ["--run-dir", run_dir]
        with open(self.logpath, "ab") as log:
            self.proc = subprocess.Popen(cmd + list(args), stderr=log, env=env)
        self.ctx = zmq.Context()
        self.rid = 0
        if wait:
            deadline = time.monotonic() + 20
            while True:
                assert self.proc.poll() is None, self.log()
                try:
                    self.info = self.call("ping", timeout=0.3)
                    break
                except TimeoutError:
                    assert time.monotonic() < deadline, "no ping answer: " + self.log()

    def call(self, method, timeout=10.0, **args):
        s = self.ctx.socket(zmq.DEALER)
        s.setsockopt(zmq.LINGER, 0)
        try:
            s.connect("ipc://%s/jobq.sock" % self.run)
            self.rid += 1
            s.send(msgpack.packb({"v": 1, "id": self.rid, "method": method, "args": args}))
            deadline = time.monotonic() + timeout
            while True:
                left = deadline - time.monotonic()
                if left <= 0 or not s.poll(int(left * 1000) + 1):
                    raise TimeoutError("no reply to " + method)
                rep = msgpack.unpackb(s.recv(), raw=False)
                if rep.get("id") == self.rid and not rep.get("keepalive"):
                    break
        finally:
            s.close(0)
        if not rep["ok"]:
            raise RuntimeError("%s: %s" % (rep["error"]["code"], rep["error"]["message"]))
        return rep["result"]

    def log(self):
        with open(self.logpath, errors="replace") as f:
            return f.read()

    def wait_log(self, text, timeout=10):
        deadline = time.monotonic() + timeout
        while text not in self.log():
            assert time.monotonic() < deadline, "no %r in the log: %s" % (text, self.log())
            time.sleep(0.02)

    def stop(self):
        rc = stop_jobqd(self.proc)
        self.ctx.destroy(0)
        log = self.log()
        assert "Sanitizer" not in log and "runtime error" not in log, log
        return rc


@pytest.fixture
def tmp():
    d = tempfile.mkdtemp(prefix="jobq-svc-")
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def start(tmp):
    started = []

    def go(*args, **kw):
        d = Jobqd(tmp, *args, **kw)
        started.append(d)
        return d
    yield go
    for d in started:
        if d.proc.poll() is None:
            d.stop()
        d.ctx.destroy(0)


def wait_until(cond, timeout=10, what="condition"):
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, what
        time.sleep(0.02)


# ---- default paths ---------------------------------------------------------

def test_build_tree_binaries_default_to_the_checkout():
    default = cmake_cache("JOBQ_DEFAULT_DATA_DIR")
    out = subprocess.run([JOBQ, "--help"], capture_output=True, text=True, timeout=10).stdout
    assert "ipc://%s/jobq.sock" % default in out, out
    out = subprocess.run([JOBQD, "--help"], capture_output=True, text=True, timeout=10).stdout
    assert "[default: %s]" % default in out and "[default: the data directory]" in out, out


def test_binaries_outside_the_build_tree_default_to_the_system_paths(tmp):
    """A copy of jobq and jobqd outside the build tree (as installed) must
    not point into the build tree."""
    data, run = cmake_cache("JOBQ_INSTALLED_DATA_DIR"), cmake_cache("JOBQ_INSTALLED_RUN_DIR")
    for b in (JOBQ, JOBQD):
        shutil.copy(b, tmp)
    out = subprocess.run([os.path.join(tmp, "jobq"), "--help"], capture_output=True, text=True,
                         timeout=10).stdout
    assert "ipc://%s/jobq.sock" % run in out, out
    assert BUILD not in out and TOP + "/var" not in out, out
    out = subprocess.run([os.path.join(tmp, "jobqd"), "--help"], capture_output=True, text=True,
                         timeout=10).stdout
    assert "[default: %s]" % data in out and ("else %s]" % run) in out, out
    assert TOP + "/var" not in out, out


# ---- run directory, socket files ---------------------------------------------

def test_run_dir_holds_the_sockets_and_a_clean_stop_removes_them(tmp, start):
    run = os.path.join(tmp, "run")
    d = start(run_dir=run)
    assert d.info["publish"][0] == "ipc://%s/events.sock" % run
    for name in ("jobq.sock", "events.sock"):
        assert not os.path.exists(os.path.join(d.data, name))
        st = os.lstat(os.path.join(run, name))
        assert (st.st_mode & 0o777) == 0o660, oct(st.st_mode)
    # A second daemon (another data directory) may not take the run dir.
    p = subprocess.run([JOBQD, "--data-dir", os.path.join(tmp, "other"), "--run-dir", run, *MAP],
                       capture_output=True, text=True, timeout=30)
    assert p.returncode == 1 and "run directory %s is in use" % run in p.stderr, p.stderr
    # jobq shutdown: exit 0, the socket files gone.
    out = subprocess.run([JOBQ, "-s", "ipc://%s/jobq.sock" % run, "shutdown"],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    d.proc.wait(30)
    assert d.proc.returncode == 0, d.log()
    assert sorted(os.listdir(run)) == ["lock"], os.listdir(run)


def test_a_crash_leaves_the_sockets_and_the_next_start_binds_over_them(tmp, start):
    d = start()
    d.proc.kill()
    d.proc.wait()
    assert os.path.exists(os.path.join(d.data, "jobq.sock"))
    d2 = start()
    assert d2.call("ping")["publish"][0] == "ipc://%s/events.sock" % d.data
    assert d2.stop() == 0
    assert not os.path.exists(os.path.join(d.data, "jobq.sock"))
    assert not os.path.exists(os.path.join(d.data, "events.sock"))


def test_an_untrusted_run_dir_is_refused(tmp):
    run = os.path.join(tmp, "run")
    os.mkdir(run, 0o770)
    os.chmod(run, 0o770)  # group-writable
    p = subprocess.run([JOBQD, "--data-dir", os.path.join(tmp, "data"), "--run-dir", run, *MAP],
                       capture_output=True, text=True, timeout=30)
    assert p.returncode == 1, p.stderr
    assert "run directory %s is writable by its group" % run in p.stderr, p.stderr
    assert not os.path.exists(os.path.join(run, "jobq.sock"))


# ---- log -----------------------------------------------------------------------

def test_log_lines_carry_their_level(tmp, start):
    d = start("--log-level", "debug")
    assert d.stop() == 0
    lines = d.log().splitlines()
    assert lines, "nothing logged"
    for line in lines:
        assert re.match(r"jobqd: (error|warning|notice|info|debug): \S", line), line
    assert any(l.startswith("jobqd: info: version ") for l in lines), lines
    assert "jobqd: info: stopped" in lines, lines


def test_log_level_filters(tmp, start):
    d = start("--log-level", "warning")
    assert d.stop() == 0
    assert "serving on" not in d.log() and "stopped" not in d.log(), d.log()


def test_under_the_journal_lines_start_with_the_priority(tmp, start):
    """systemd's JOURNAL_STREAM names stderr's device and inode: lines are
    then "<N>message", as journald reads them."""
    logpath = os.path.join(tmp, "jobqd.log")
    open(logpath, "w").close()
    st = os.stat(logpath)
    env = dict(os.environ, JOURNAL_STREAM="%d:%d" % (st.st_dev, st.st_ino))
    d = start(env=env)
    assert d.stop() == 0
    lines = d.log().splitlines()
    assert lines and all(re.match(r"<[3-7]>\S", l) for l in lines), lines
    assert any(l.startswith("<6>version ") for l in lines), lines
    # Another stream than the one named: the plain form.
    before = len(d.log())
    env["JOURNAL_STREAM"] = "%d:%d" % (st.st_dev, st.st_ino + 1)
    d = start(env=env)
    assert d.stop() == 0
    assert d.log()[before:].startswith("jobqd: info: "), d.log()


# ---- sd_notify ----------------------------------------------------------------

def test_sd_notify_ready_reloading_stopping(tmp, start):
    path = os.path.join(tmp, "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(30)
    conf = os.path.join(tmp, "jobqd.conf")
    with open(conf, "w") as f:
        f.write("max-running = 3\n")
    try:
        d = start("--config", conf, env=dict(os.environ, NOTIFY_SOCKET=path), wait=False)
        msg = sock.recv(4096).decode()
        # The first message is READY: the sockets are there and answer.
        fields = dict(l.split("=", 1) for l in msg.splitlines())
        assert fields.get("READY") == "1", msg
        assert os.path.exists(os.path.join(d.data, "jobq.sock"))
        assert os.path.exists(os.path.join(d.data, "events.sock"))
        assert d.call("ping", timeout=2)["version"]
        assert fields["MAINPID"] == str(d.proc.pid) and "serving on" in fields["STATUS"], msg
        d.proc.send_signal(signal.SIGHUP)
        msg = sock.recv(4096).decode()
        assert "RELOADING=1" in msg.splitlines() and "MONOTONIC_USEC=" in msg, msg
        msg = sock.recv(4096).decode()
        assert "READY=1" in msg.splitlines(), msg
        assert d.proc.poll() is None
        d.proc.send_signal(signal.SIGTERM)
        msg = sock.recv(4096).decode()
        assert "STOPPING=1" in msg.splitlines(), msg
        assert d.stop() == 0
    finally:
        sock.close()


# ---- SIGHUP ---------------------------------------------------------------------

def test_sighup_without_config_keeps_the_daemon(tmp, start):
    d = start()
    d.proc.send_signal(signal.SIGHUP)
    d.wait_log("nothing to reload")
    assert d.call("ping")["version"] and d.proc.poll() is None
    assert d.stop() == 0


def delay_job(d, seconds):
    return d.call("submit_job", ops=[{"op": "test.delay", "args": {"duration": seconds}}])


def test_sighup_reloads_limits_and_keeps_the_command_line(tmp, start):
    conf = os.path.join(tmp, "jobqd.conf")
    with open(conf, "w") as f:
        f.write("max-running = 1\nmax-jobs = 100\nshards = 4\n")
    d = start("--config", conf, "--max-waiters", "77")
    st = d.call("stats")
    assert (st["max_running"], st["limits"]["max_jobs"], st["limits"]["max_waiters"]) == (1, 100, 77)
    for _ in range(3):
        delay_job(d, 60)
    wait_until(lambda: d.call("stats")["running"] == 1, what="one job running")
    # Three may run now; max-waiters stays the command line's; shards
    # cannot change while running.
    with open(conf, "w") as f:
        f.write("max-running = 3\nmax-jobs=50\nmax-waiters 5\nlog-level = debug\n"
                "max-client-requests = 9\nkeepalive = 2\nshards = 8\n")
    d.proc.send_signal(signal.SIGHUP)
    d.wait_log("reloaded %s" % conf)
    st = d.call("stats")
    lim = st["limits"]
    assert (lim["max_running"], lim["max_jobs"], lim["max_waiters"], lim["log_level"],
            lim["max_client_requests"], lim["keepalive"]) == (3, 50, 77, "debug", 9, 2.0), lim
    assert st["max_jobs"] == 50 and st["shards"] == 4
    assert "shards changed in %s: needs a restart" % conf in d.log(), d.log()
    wait_until(lambda: d.call("stats")["running"] == 3, what="three jobs running")
    # The new max-jobs holds: 3 live jobs, 50 allowed; lower it to 3.
    with open(conf, "w") as f:
        f.write("max-running = 3\nmax-jobs = 3\n")
    d.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: d.call("stats")["limits"]["max_jobs"] == 3, what="max-jobs 3")
    with pytest.raises(RuntimeError, match="QueueFull"):
        delay_job(d, 0)
    assert d.stop() == 0


def test_sighup_with_a_broken_file_keeps_the_running_settings(tmp, start):
    conf = os.path.join(tmp, "jobqd.conf")
    with open(conf, "w") as f:
        f.write("max-running = 2\n")
    d = start("--config", conf)
    with open(conf, "w") as f:
        f.write("max-running = 5\nmax-jobs = lots\n")
    d.proc.send_signal(signal.SIGHUP)
    d.wait_log("%s:2:" % conf)
    assert re.search(r"jobqd: error: SIGHUP: %s:2: --max-jobs: .*; the running settings stay"
                     % re.escape(conf), d.log()), d.log()
    st = d.call("stats")
    assert st["max_running"] == 2 and st["limits"]["max_running"] == 2
    os.unlink(conf)  # gone altogether: the same
    d.proc.send_signal(signal.SIGHUP)
    d.wait_log("cannot read config file")
    assert d.call("stats")["max_running"] == 2 and d.proc.poll() is None
    assert d.stop() == 0


# ---- config file ------------------------------------------------------------------

def test_config_file_syntax(tmp, start):
    conf = os.path.join(tmp, "jobqd.conf")
    with open(conf, "w") as f:
        f.write("# comment\n\n  max-running = 4  # trailing\nmax-jobs=9\nmax-waiters\t11\n"
                "salvage = no\nverbose = no\nlog-level=notice\n")
    d = start("--config", conf)
    st = d.call("stats")
    assert (st["max_running"], st["max_jobs"], st["limits"]["max_waiters"],
            st["limits"]["log_level"]) == (4, 9, 11, "notice")
    assert d.stop() == 0
    for text, words in [("max-jobs = 9\nbogus = 1\n", ":2: unknown option 'bogus'"),
                        ("max-jobs =\n", ":1: option 'max-jobs' needs a value"),
                        ("salvage = maybe\n", ":1: --salvage: expected yes or no"),
                        ("config = x\n", ":1: unknown option 'config'")]:
        with open(conf, "w") as f:
            f.write(text)
        p = subprocess.run([JOBQD, "--data-dir", os.path.join(tmp, "data"), "--config", conf],
                           capture_output=True, text=True, timeout=30)
        assert p.returncode == 2 and conf + words in p.stderr, (text, p.stderr)


def long_options_of_help():
    out = subprocess.run([JOBQD, "--help"], capture_output=True, text=True, timeout=10).stdout
    opts = re.findall(r"^\s+(?:-\w, )?--([a-z-]+)", out, re.M)
    assert len(opts) > 20, out
    return [o for o in opts if o not in ("help", "config", "version")]


def test_example_config_lists_every_option():
    with open(EXAMPLE) as f:
        text = f.read()
    listed = re.findall(r"^# ([a-z-]+) = \S", text, re.M)
    missing = [o for o in long_options_of_help() if o not in listed]
    assert not missing, missing
    unknown = [o for o in listed if o not in long_options_of_help()]
    assert not unknown, unknown


def test_example_config_uncommented_is_accepted(tmp, start):
    """Every option of the example, uncommented (its example ports made
    free ones): jobqd starts with it, answers, stops."""
    out = []
    with open(EXAMPLE) as f:
        for line in f:
            m = re.match(r"# ([a-z-]+ = .*)$", line)
            # A node's address and whom to join need cluster = yes, which
            # the example leaves off (a cluster of its own is another test).
            if m and m.group(1).split(" ")[0] in ("node-address", "join"):
                m = None
            out.append(m.group(1) + "\n" if m else line)
    text = re.sub(r"tcp://127\.0\.0\.1:\d+", "tcp://127.0.0.1:*", "".join(out))
    # The keys beside the test's own data, not in the example's place.
    text = re.sub(r"^authorized-keys = .*$", "authorized-keys = %s/keys" % tmp, text, flags=re.M)
    # A group this test's user has (the example's may not exist here).
    text = re.sub(r"^group = .*$", "group = %s" % grp.getgrgid(os.getgid()).gr_name, text,
                  flags=re.M)
    conf = os.path.join(tmp, "all.conf")
    with open(conf, "w") as f:
        f.write(text)
    run = os.path.join(tmp, "run")
    # The command line's data and run directories win over the file's.
    d = start("--config", conf, run_dir=run)
    st = d.call("stats")
    assert st["max_running"] == 1000 and st["limits"]["log_level"] == "info"
    assert len(d.info["publish"]) == 2 and d.info["publish"][1].startswith("tcp://127.0.0.1:")
    assert d.stop() == 0
    assert not os.path.exists(os.path.join(run, "jobq.sock"))
