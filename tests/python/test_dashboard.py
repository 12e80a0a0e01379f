"""The web dashboard (web/, docs/dashboard.md) in a real headless browser.

Debian's chromium and chromedriver through python3-selenium, against a
real jobqd started by each test with `--http 127.0.0.1:0` (the port is read
from RUN_DIR/http.port). Each test starts its own browser with a temporary
profile and takes it down again: chromedriver, every chromium process of
that profile and the profile directory are gone when the test ends.
Skipped (with the reason) only when chromium or chromedriver is missing.

What is checked, as issue 12 lists it: the pages load without console
errors; a job submitted with the C CLI shows in the running table and the
counts within a second; a job's log lines appear live on its page; a
cancel from the page works with an admin token and is refused without one
(the error shown, the job unchanged); the overview keeps up with 2,000
jobs/s of changes (its last tick's seq stays close behind the daemon's
events_published) and throws nothing. Besides: a worker and its load, the
jobs table's pages (50 jobs a read, never more), the overview across a
daemon restart (the stream reconnects, the charts come from the new run's
history only), job data shown as text, the CSP on every file.

Waits are bounded polls on what the page exposes for tests:
body[data-ready], body[data-seq] (overview), body[data-change-serial] and
body[data-status] (job page).
"""
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

import pytest

from jobqd_stop import stop_jobqd
from test_cli import JOBQD, Daemon

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
if not (os.access(CHROMIUM, os.X_OK) and os.access(CHROMEDRIVER, os.X_OK)):
    pytest.skip(f"needs {CHROMIUM} and {CHROMEDRIVER} (Debian's chromium and chromium-driver)",
                allow_module_level=True)

# After the skip: the package build has neither browser nor selenium.
from selenium import webdriver  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "clients", "python"))
import jobq  # noqa: E402

LONG_JOB = [{"op": "test.delay", "args": {"duration": 60}}]


# ------------------------------------------------------------- fixtures

class HttpDaemon(Daemon):
    """test_cli's Daemon with the HTTP endpoint on a free loopback port."""

    def __init__(self, tmp_path, *extra):
        super().__init__(tmp_path, "--http", "127.0.0.1:0", *extra)
        self.port = self.wait_port()
        self.url = f"http://127.0.0.1:{self.port}"

    def wait_port(self):
        port_file = self.data_dir / "http.port"
        deadline = time.monotonic() + 10
        while True:
            text = port_file.read_text() if port_file.exists() else ""
            if text.endswith("\n") and text.strip().isdigit():
                return int(text)
            assert self.proc.poll() is None, "jobqd exited"
            assert time.monotonic() < deadline, "no RUN_DIR/http.port within 10 s"
            time.sleep(0.02)

    def restart(self):
        """Stops jobqd and starts it again on the same data directory and
        HTTP port (so that open pages reconnect to it)."""
        assert stop_jobqd(self.proc, 10) == 0
        (self.data_dir / "http.port").unlink(missing_ok=True)
        self.proc = subprocess.Popen([JOBQD, "--data-dir", str(self.data_dir),
                                      "--http", f"127.0.0.1:{self.port}"],
                                     stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 15
        while self.jobq("ping", "-t", "0.5").returncode != 0:
            assert self.proc.poll() is None, "jobqd exited"
            assert time.monotonic() < deadline, "jobqd did not answer ping within 15 s"
            time.sleep(0.02)
        assert self.wait_port() == self.port

    def client(self):
        return jobq.Client(self.endpoint)


@pytest.fixture
def daemon(tmp_path):
    d = HttpDaemon(tmp_path)
    yield d
    d.stop()


def profile_pids(profile):
    """Processes whose command line names the profile directory: the
    browser started for it and its helpers (renderers, crashpad)."""
    pids = []
    needle = profile.encode()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                if needle in f.read():
                    pids.append(int(entry))
        except OSError:
            pass
    return pids


class Browser:
    """A headless chromium driven by chromedriver, with its own profile."""

    def __init__(self):
        self.profile = tempfile.mkdtemp(prefix="jobq-chromium-")
        opts = webdriver.ChromeOptions()
        opts.binary_location = CHROMIUM
        for arg in ("--headless=new", "--disable-gpu", "--disable-dev-shm-usage",
                    "--no-first-run", "--no-default-browser-check", "--disable-extensions",
                    "--disable-background-networking", "--disable-sync",
                    "--window-size=1400,1000", f"--user-data-dir={self.profile}"):
            opts.add_argument(arg)
        if os.geteuid() == 0:
            # chromium refuses to run as root with its sandbox.
            opts.add_argument("--no-sandbox")
        opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        # chromedriver's own log would go to a file beside nothing: drop it.
        self.service = Service(CHROMEDRIVER, log_path=os.devnull)
        try:
            self.driver = webdriver.Chrome(options=opts, service=self.service)
        except BaseException:
            self.close()
            raise
        self.driver.set_page_load_timeout(30)
        self.driver.set_script_timeout(30)
        self.logs = []

    def js(self, script, *args):
        return self.driver.execute_script(script, *args)

    def wait(self, what, pred, timeout=15.0, every=0.02):
        """Polls pred() until it returns something true; returns that."""
        deadline = time.monotonic() + timeout
        while True:
            v = pred()
            if v:
                return v
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out ({timeout} s) waiting for {what}; "
                                     f"console: {self.console()}")
            time.sleep(every)

    def open(self, url):
        self.driver.get(url)
        self.wait(f"{url} ready", lambda: self.js("return document.body.dataset.ready") == "1")

    def console(self):
        """Every console entry so far (chromedriver hands each out once)."""
        self.logs.extend(self.driver.get_log("browser"))
        return self.logs

    def severe(self):
        return [e for e in self.console() if e.get("level") == "SEVERE"]

    def close(self):
        driver = getattr(self, "driver", None)
        if driver is not None:
            try:
                driver.quit()
            except Exception:
                pass
        proc = getattr(self.service, "process", None) if hasattr(self, "service") else None
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(10)
        # quit() ends the browser; what is still there of this profile's
        # processes after 10 s is killed, by pid.
        deadline = time.monotonic() + 10
        while profile_pids(self.profile) and time.monotonic() < deadline:
            time.sleep(0.05)
        for pid in profile_pids(self.profile):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 5
        while profile_pids(self.profile) and time.monotonic() < deadline:
            time.sleep(0.05)
        shutil.rmtree(self.profile, ignore_errors=True)


@pytest.fixture
def browser():
    b = Browser()
    yield b
    profile = b.profile
    b.close()
    assert not os.path.exists(profile)
    assert profile_pids(profile) == []


def page_text(b, selector):
    return b.js("const e = document.querySelector(arguments[0]); return e ? e.textContent : null;",
                selector)


def no_severe(b):
    bad = b.severe()
    assert bad == [], bad


# ---------------------------------------------------------------- tests

def test_pages_load_without_console_errors(daemon, browser):
    # Something to show in every table: a finished job whose log holds
    # markup (shown as text, never parsed), a running one.
    with daemon.client() as c:
        done = c.submit_job([{"op": "test.log",
                              "args": {"messages": ["<img src=x id=injected>", "plain"]}}])
        running = c.submit_job(LONG_JOB)
    daemon.wait_status(done, ("success",))
    browser.open(daemon.url + "/")
    # The first tick rendered: the counts, the running table, the charts.
    browser.wait("running row", lambda: browser.js(
        "return document.querySelector('#running tbody tr[data-id=\"' + arguments[0] + '\"]')",
        running))
    assert page_text(browser, "#count-success .value") == "1"
    assert int(browser.js("return document.body.dataset.seq")) >= 1
    assert browser.js("return typeof Chart === 'function' && "
                      "!!Chart.getChart(document.getElementById('chart-throughput'))")
    # The jobs table (first page) and the workers table (no workers).
    browser.wait("jobs table", lambda: browser.js(
        "return document.querySelectorAll('#jobs tbody tr').length") == 2)
    browser.wait("workers table", lambda: page_text(browser, "#workers-note") == "(0)")
    assert page_text(browser, "#session-role") == "read"
    no_severe(browser)

    browser.open(f"{daemon.url}/job.html?id={done}")
    assert browser.js("return document.body.dataset.status") == "success"
    lines = browser.js("return [...document.querySelectorAll('#log .line .msg')]"
                       ".map(e => e.textContent)")
    assert lines == ["<img src=x id=injected>", "plain"]
    assert browser.js("return document.getElementById('injected')") is None
    assert "2" in page_text(browser, "#ops tbody tr .json")
    no_severe(browser)


def test_cli_job_appears_within_a_second(daemon, browser):
    browser.open(daemon.url + "/")
    start = time.monotonic()
    job = daemon.submit("test.delay", "duration=60")
    selector = f'#running tbody tr[data-id="{job}"]'

    def shown():
        return browser.js(
            "const r = document.querySelector(arguments[0]);"
            "return r !== null && document.querySelector('#count-running .value').textContent === '1'",
            selector)
    browser.wait(f"job {job} in the running table", shown, timeout=10, every=0.01)
    elapsed = time.monotonic() - start
    # The functional bound: a job appears within a second.
    assert elapsed < 1.0, f"job {job} appeared after {elapsed:.3f} s"
    cells = browser.js("return [...document.querySelectorAll(arguments[0] + ' td')]"
                       ".map(e => e.textContent)", selector)
    assert cells[0] == str(job) and cells[2] == "0: test.delay(60)", cells
    href = browser.js("return document.querySelector(arguments[0] + ' a').getAttribute('href')",
                      selector)
    assert href == f"/job.html?id={job}"
    daemon.ok("cancel", job)
    browser.wait("the running table empty", lambda: browser.js(
        "return document.querySelectorAll('#running tbody tr').length === 0"))
    no_severe(browser)


def test_job_page_log_grows_live(daemon, browser):
    # Ten log lines, one every 0.4 s, once the page is open: the job waits
    # for a blocker until then (a page that took longer to load than the
    # job to run, on a loaded machine, saw it finished and nothing live).
    with daemon.client() as c:
        blocker = c.submit_job([{"op": "test.delay", "args": {"duration": 60}}])
        job = c.submit_job([{"op": "test.delay", "args": {"duration": 0.4, "repeat": 10},
                             "depends": [[blocker, ["canceled"]]]}])
    browser.open(f"{daemon.url}/job.html?id={job}")
    browser.js("window.jobqTestMarker = 1")
    daemon.ok("cancel", blocker)
    counts_while_running = set()
    deadline = time.monotonic() + 30
    while True:
        state = browser.js("return [document.body.dataset.status,"
                           " document.querySelectorAll('#log .line').length]")
        if state[0] == "running":
            counts_while_running.add(state[1])
        if state[0] == "success" and state[1] == 10:
            break
        assert time.monotonic() < deadline, f"job page stuck at {state}"
        time.sleep(0.05)
    # Lines arrived one after another on the same page (no reload).
    assert len(counts_while_running) >= 2, counts_while_running
    assert browser.js("return window.jobqTestMarker") == 1
    lines = browser.js("return [...document.querySelectorAll('#log .line .msg')]"
                       ".map(e => e.textContent)")
    assert lines == [f"Test delay iteration {i}/9" for i in range(10)]
    with daemon.client() as c:
        serial = c.query_job(job, ["change_serial"])["change_serial"]
    assert browser.js("return document.body.dataset.changeSerial") == str(serial)
    assert page_text(browser, "#ops tbody tr td:nth-child(3)") == "success"
    no_severe(browser)


def test_cancel_from_page_refused_without_token(daemon, browser):
    job = daemon.submit("test.delay", "duration=60")
    daemon.wait_status(job, ("running",))
    # Without a token a loopback browser has --http-role (read): the buttons
    # are disabled with a note, and the server refuses the request anyway
    # (the button enabled by hand, as a stale or tampered page would).
    browser.open(f"{daemon.url}/job.html?id={job}")
    browser.wait("session", lambda: page_text(browser, "#session-role") == "read")
    cancel = browser.driver.find_element(By.ID, "action-cancel")
    browser.wait("actions disabled", lambda: not cancel.is_enabled())
    assert "read" in page_text(browser, "#action-note")
    browser.js("arguments[0].disabled = false", cancel)
    cancel.click()
    browser.wait("refusal shown", lambda: browser.js(
        "return document.getElementById('action-result').dataset.outcome") == "error")
    assert "PermissionDenied" in page_text(browser, "#action-result")
    # The server answered: the job did not change, nor did the page.
    assert daemon.job(job)["status"] == "running"
    assert browser.js("return document.body.dataset.status") == "running"
    with daemon.client() as c:
        assert c.stats()["errors"].get("PermissionDenied") == 1


def test_cancel_from_page_with_admin_token(daemon, browser):
    # Needs `jobq http-token` (method http_token, docs/security.md): over
    # ipc the caller is --ipc-role, admin by default, so the token is admin.
    job = daemon.submit("test.delay", "duration=60")
    daemon.wait_status(job, ("running",))
    url = f"{daemon.url}/job.html?id={job}"
    browser.open(url)

    def log_in(token):
        browser.driver.find_element(By.ID, "login-token").send_keys(token)
        browser.driver.find_element(By.ID, "login-button").click()
        browser.wait("back on the overview", lambda: browser.js(
            "return location.pathname === '/' && document.body.dataset.ready === '1' && "
            "!!document.body.dataset.role"))

    # A token the daemon did not make is refused, and said so.
    log_in("jq1.bm90LWEtdG9rZW4.AAAA")
    assert browser.js("return location.search") == "?login=failed"
    assert browser.js("return document.getElementById('login-note').hidden") is False
    assert page_text(browser, "#session-role") == "read"

    token = daemon.ok("http-token").strip()
    assert token.startswith("jq1."), token
    log_in(token)
    assert page_text(browser, "#session-role") == "admin"
    browser.open(url)
    cancel = browser.driver.find_element(By.ID, "action-cancel")
    browser.wait("actions enabled", lambda: cancel.is_enabled())
    assert page_text(browser, "#action-note") == ""
    cancel.click()
    browser.wait("cancel answered", lambda: browser.js(
        "return document.getElementById('action-result').dataset.outcome") == "ok")
    browser.wait("canceled on the page", lambda: browser.js(
        "return document.body.dataset.status") == "canceled")
    assert daemon.job(job)["status"] == "canceled"
    no_severe(browser)


def test_workers_and_their_load(daemon, browser):
    # A Python worker of capacity 2 serving one opcode that holds until told.
    worker = jobq.Worker(f"ipc://{daemon.data_dir}/workers.sock", name="dash-worker",
                         capacity=2)
    release = threading.Event()

    @worker.opcode("dash.hold")
    def hold(a):
        a.feedback("holding <b>on</b>")
        while not release.wait(0.05) and not a.stopping:
            pass
        return {"held": True}

    runner = threading.Thread(target=worker.run)
    runner.start()
    try:
        browser.open(daemon.url + "/")

        def worker_cells():
            return browser.js("return [...document.querySelectorAll('#workers tbody tr')]"
                              ".map(r => [...r.cells].map(c => c.textContent))")
        # /api/workers is read every 3 s.
        rows = browser.wait("the worker listed", lambda: [
            r for r in worker_cells() if r[0] == "dash-worker"])
        assert rows[0][2:5] == ["dash.hold", "2", "0"], rows
        assert page_text(browser, "#count-workers .value") == "1"
        job = daemon.submit("dash.hold")
        selector = f'#running tbody tr[data-id="{job}"]'
        cells = browser.wait("the job running on the worker, with its log line", lambda: (
            c := browser.js("return [...document.querySelectorAll(arguments[0] + ' td')]"
                            ".map(e => e.textContent)", selector)) and
            c[4] == "holding <b>on</b>" and c)
        assert cells[2] == "0: dash.hold" and cells[3].startswith("dash-worker"), cells
        browser.wait("busy 1 of 2", lambda: page_text(
            browser, "#count-busy-capacity .value") == "1 / 2")
        browser.wait("the worker's load", lambda: [
            r for r in worker_cells() if r[0] == "dash-worker" and r[4] == "1"])
        opcodes = browser.js("return [...document.querySelectorAll('#opcodes tbody tr')]"
                             ".map(r => [...r.cells].map(c => c.textContent))")
        assert ["dash.hold", "1", "2", "1", "0"] in opcodes, opcodes
        release.set()
        daemon.wait_status(job, ("success",))
        browser.open(f"{daemon.url}/job.html?id={job}")
        ops = browser.js("return [...document.querySelectorAll('#ops tbody tr td')]"
                         ".map(e => e.textContent)")
        assert ops[2] == "success" and ops[6].startswith("dash-worker"), ops
        assert '"held": true' in ops[8], ops
        no_severe(browser)
    finally:
        release.set()
        worker.stop()
        runner.join(15)
    assert not runner.is_alive()


def test_jobs_table_pages(daemon, browser):
    with daemon.client() as c:
        res = c.submit_many_jobs([[{"op": "test.delay", "args": {"duration": 0}}]] * 118
                                 + [LONG_JOB] * 2)
        ids = [job for ok, job in res]
        for job in ids[:118]:
            c.wait(job, timeout=30)
    browser.open(daemon.url + "/")

    def shown():
        return browser.js("return [...document.querySelectorAll('#jobs tbody tr')]"
                          ".map(r => Number(r.dataset.id))")

    def page_is(expect):
        browser.wait(f"jobs {expect[0]}..{expect[-1]}", lambda: shown() == expect)

    next_button = browser.driver.find_element(By.ID, "jobs-next")
    prev_button = browser.driver.find_element(By.ID, "jobs-prev")
    page_is(ids[:50])
    next_button.click()
    page_is(ids[50:100])
    next_button.click()
    page_is(ids[100:])
    browser.wait("no next page", lambda: not next_button.is_enabled())
    prev_button.click()
    page_is(ids[50:100])
    # A status filter starts again from the first page.
    browser.driver.find_element(
        By.CSS_SELECTOR, "#jobs-status option[value='queued,waiting,running,canceling']").click()
    page_is(ids[118:])
    assert page_text(browser, "#jobs tbody tr td:nth-child(2)") == "running"
    # Every read asked for one page (50 jobs), never the whole table.
    urls = browser.js("return performance.getEntriesByType('resource').map(e => e.name)"
                      ".filter(n => n.includes('/api/jobs'))")
    assert len(urls) == 5 and all("limit=50" in u for u in urls), urls
    no_severe(browser)


def test_overview_follows_a_daemon_restart(daemon, browser):
    browser.open(daemon.url + "/")
    first = daemon.submit("test.delay", "duration=60")
    browser.wait("the job running", lambda: page_text(browser, "#count-running .value") == "1")
    points = ("return Chart.getChart(document.getElementById('chart-depth'))"
              ".data.datasets[0].data.map(p => p.x)")
    browser.wait("a few chart points", lambda: len(browser.js(points)) >= 4)

    stopped = time.time()
    daemon.restart()
    # The stream comes back by itself (retry: 2000) to the new run: its
    # ticks, the charts rebuilt from its history alone. The stop
    # interrupted the first job (error); a second one runs.
    assert daemon.job(first)["status"] == "error"
    second = daemon.submit("test.delay", "duration=60")
    browser.wait("the new run's counts", lambda: browser.js(
        "return document.querySelector('#count-running .value').textContent === '1' && "
        "document.querySelector('#count-error .value').textContent === '1' && "
        "document.querySelector('#running tbody tr[data-id=\"' + arguments[0] + '\"]')",
        second), timeout=20)
    xs = browser.js(points)
    assert xs and min(xs) > stopped, (min(xs), stopped)
    assert page_text(browser, "#link-state") == "live"
    ids = browser.js("return [...document.querySelectorAll('#running tbody tr')]"
                     ".map(r => r.dataset.id)")
    assert ids == [str(second)]
    # What the page logged while the daemon was away (the stream's failed
    # reconnects) is the network's, not the page's: no exception.
    assert [e for e in browser.severe() if e.get("source") == "javascript"] == []


def test_overview_keeps_up_with_2000_jobs_per_second(daemon, browser):
    rate, seconds, batch = 2000, 10, 100
    total = rate * seconds
    browser.open(daemon.url + "/")
    submitted = []
    failures = []

    def submit():
        try:
            with daemon.client() as c:
                start = time.monotonic()
                for k in range(total // batch):
                    # Paced by the clock: batch k leaves at start + k * batch / rate.
                    delay = start + k * batch / rate - time.monotonic()
                    if delay > 0:
                        time.sleep(delay)
                    res = c.submit_many_jobs([[{"op": "test.delay", "args": {"duration": 0}}]]
                                             * batch)
                    submitted.extend(ok for ok, _ in res)
        except Exception as e:  # reported by the main thread
            failures.append(e)

    lag_bound = 1.5  # s: one 500 ms tick, its delivery and rendering, with margin
    samples = []     # (monotonic, events_published)
    worst = 0.0
    thread = threading.Thread(target=submit)
    with daemon.client() as stats:
        began = time.monotonic()
        thread.start()
        try:
            while thread.is_alive():
                samples.append((time.monotonic(), stats.stats()["events_published"]))
                read_at = time.monotonic()
                seq = int(browser.js("return document.body.dataset.seq"))
                # The page must show at least what the daemon had published
                # lag_bound seconds before.
                older = [p for t, p in samples if t <= read_at - lag_bound]
                if older:
                    assert seq >= older[-1], (
                        f"page at seq {seq}, daemon had published {older[-1]} "
                        f"{lag_bound} s before")
                # How far behind (in time) the page is, for the failure message.
                behind = [t for t, p in samples if p > seq]
                if behind:
                    worst = max(worst, read_at - behind[0])
                time.sleep(0.2)
        finally:
            thread.join(120)
        took = time.monotonic() - began
    assert not failures, failures
    assert len(submitted) == total and all(submitted)

    # Every job ends; the page ends at the daemon's last seq and counts.
    with daemon.client() as c:
        deadline = time.monotonic() + 60
        while (st := c.stats())["jobs"].get("success", 0) < total:
            assert time.monotonic() < deadline, st["jobs"]
            time.sleep(0.1)
        final = st["events_published"]
    assert final >= 3 * total  # submitted, running, success: each an event
    browser.wait("the page at the daemon's last seq", lambda: int(
        browser.js("return document.body.dataset.seq")) == final, timeout=10)
    browser.wait("all successes counted", lambda: page_text(
        browser, "#count-success .value") == str(total), timeout=5)
    assert browser.js("return document.querySelectorAll('#running tbody tr').length") == 0
    no_severe(browser)
    print(f"{total} jobs submitted in {took:.1f} s; the page at most {worst:.2f} s behind")


def test_pages_and_static_files_carry_the_csp(daemon):
    # What the page relies on: no inline script needed, the CSP in force.
    for path in ("/", "/job.html?id=1", "/static/dashboard.js", "/static/job.js",
                 "/static/common.js", "/static/dashboard.css", "/static/chart.js"):
        with urllib.request.urlopen(daemon.url + path, timeout=10) as r:
            assert r.status == 200, path
            assert "script-src 'self'" in r.headers["Content-Security-Policy"], path
            body = r.read()
        if path.endswith(".html") or path == "/" or "?" in path:
            assert b"<script>" not in body and b" style=" not in body, path


def test_usable_with_100000_jobs_queued(tmp_path, browser):
    """100,000 jobs wait behind one running job: the overview counts them
    and pages through them 50 at a time, and a job page opens, without the
    page or the server ever reading the whole table."""
    d = HttpDaemon(tmp_path, "--max-running", "1")
    try:
        with d.client() as c:
            c.submit_job(LONG_JOB)
            for _ in range(10):
                c.submit_many_jobs([[{"op": "test.delay", "args": {"duration": 0}}]] * 10000)
        browser.open(d.url + "/")
        browser.wait("100,000 queued in the counts", lambda: "100000" in (
            page_text(browser, "#counts") or "").replace(",", ""), timeout=30)
        browser.wait("the first page of jobs", lambda: browser.js(
            "return document.querySelectorAll('#jobs tbody tr').length") == 50, timeout=30)
        urls = browser.js("return performance.getEntriesByType('resource').map(e => e.name)"
                          ".filter(n => n.includes('/api/jobs'))")
        assert urls and all("limit=50" in u for u in urls), urls
        browser.open(d.url + "/job.html?id=100001")
        browser.wait("the last job's page", lambda: browser.js(
            "return document.body.dataset.status") == "queued", timeout=30)
        no_severe(browser)
    finally:
        d.stop()
