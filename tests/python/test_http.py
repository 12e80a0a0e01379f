"""jobqd's HTTP endpoint (--http) without a browser: the JSON API, the SSE
streams, who may do what, and what it refuses — security headers on every
answer, the Host check, CSRF, malformed and oversized input, a browser that
stops reading — and that the thread count does not grow with browsers.

The dashboard in a real browser is test_dashboard.py; the metrics are
test_metrics.py."""
import http.client
import json
import os
import socket
import subprocess
import time

import pytest

from test_cli import JOBQD, Daemon


def http_port(d):
    path = d.data_dir / "http.port"
    deadline = time.monotonic() + 10
    while not path.exists():
        assert time.monotonic() < deadline, "no http.port"
        time.sleep(0.02)
    return int(path.read_text())


class Web:
    """A jobqd with --http and a small client for it."""

    def __init__(self, tmp_path, *extra):
        self.d = Daemon(tmp_path, "--http", "127.0.0.1:0", *extra)
        self.port = http_port(self.d)

    def request(self, method, path, body=None, headers=None, host=None):
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        h = dict(headers or {})
        if host is not None:
            c.putrequest(method, path, skip_host=True)
            c.putheader("Host", host)
            for k, v in h.items():
                c.putheader(k, v)
            if body is not None:
                c.putheader("Content-Length", str(len(body)))
            c.endheaders(body.encode() if isinstance(body, str) else body)
        else:
            c.request(method, path, body=body, headers=h)
        r = c.getresponse()
        data = r.read()
        c.close()
        return r, data

    def get_json(self, path, status=200):
        r, data = self.request("GET", path)
        assert r.status == status, (path, r.status, data)
        return json.loads(data)

    def csrf(self):
        return self.get_json("/api/session")["csrf"]

    def post(self, path, obj, csrf=None, ctype="application/json", extra=None):
        headers = {"Content-Type": ctype}
        if csrf:
            headers["X-CSRF-Token"] = csrf
        headers.update(extra or {})
        body = obj if isinstance(obj, str) else json.dumps(obj)
        r, data = self.request("POST", path, body=body, headers=headers)
        return r.status, json.loads(data) if data else None

    def stop(self):
        self.d.stop()


@pytest.fixture
def web(tmp_path):
    w = Web(tmp_path)
    yield w
    w.stop()


@pytest.fixture
def make_web(tmp_path):
    made = []

    def make(*extra):
        sub = tmp_path / f"w{len(made)}"
        sub.mkdir()
        w = Web(sub, *extra)
        made.append(w)
        return w
    yield make
    for w in made:
        w.stop()


class Stream:
    """An SSE stream read with a plain socket: events as (name, data)."""

    def __init__(self, port, path):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
        self.buf = b""
        while b"\r\n\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            assert chunk, "closed before the headers"
            self.buf += chunk
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        self.head = head.decode()
        self.status = int(self.head.split()[1])
        self.raw = b""

    def _fill(self, deadline):
        self.sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            chunk = self.sock.recv(65536)
        except socket.timeout:
            return False
        if not chunk:
            raise EOFError
        self.buf += chunk
        return True

    def _events(self):
        # Chunked transfer: strip the chunk framing as it comes.
        while True:
            line_end = self.buf.find(b"\r\n")
            if line_end < 0:
                return
            size = int(self.buf[:line_end].split(b";")[0], 16)
            if len(self.buf) < line_end + 2 + size + 2:
                return
            self.raw += self.buf[line_end + 2:line_end + 2 + size]
            self.buf = self.buf[line_end + 2 + size + 2:]
            if size == 0:
                raise EOFError

    def next_event(self, timeout=5.0):
        deadline = time.monotonic() + timeout
        while True:
            self._events()
            while b"\n\n" in self.raw:
                block, self.raw = self.raw.split(b"\n\n", 1)
                name, data = None, []
                for line in block.decode().split("\n"):
                    if line.startswith("event: "):
                        name = line[7:]
                    elif line.startswith("data: "):
                        data.append(line[6:])
                if name:
                    return name, json.loads("\n".join(data))
            if time.monotonic() >= deadline:
                raise TimeoutError("no event")
            self._fill(deadline)

    def close(self):
        self.sock.close()


SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}


def test_security_headers_on_every_answer(web):
    answers = [web.request("GET", p) for p in
               ["/api/session", "/api/stats", "/api/jobs", "/api/job?id=1", "/nope",
                "/metrics", "/static/chart.js", "/"]]
    answers.append(web.request("POST", "/api/cancel", body="{}"))
    answers.append(web.request("PUT", "/api/stats"))
    for r, _ in answers:
        for name, start in SECURITY_HEADERS.items():
            assert (r.getheader(name) or "").startswith(start), (r.status, name, r.getheaders())
    statuses = [r.status for r, _ in answers]
    assert statuses[0:3] == [200, 200, 200]
    assert statuses[3] == 404 and statuses[4] == 404
    assert statuses[-2] == 403 and statuses[-1] == 405
    r, data = web.request("GET", "/api/stats")
    assert r.getheader("Content-Type") == "application/json; charset=utf-8"
    assert r.getheader("Cache-Control") == "no-store"


def test_host_must_be_loopback_on_a_loopback_port(web):
    """DNS rebinding: a page of evil.example resolved to 127.0.0.1 is
    refused."""
    for host in ["evil.example", f"evil.example:{web.port}", "10.0.0.1", "127.0.0.1.evil"]:
        r, data = web.request("GET", "/api/stats", host=host)
        assert r.status == 421, (host, data)
        assert json.loads(data)["error"] == "MisdirectedRequest"
    for host in ["localhost", f"localhost:{web.port}", f"127.0.0.1:{web.port}", "127.1.2.3",
                 f"[::1]:{web.port}"]:
        r, _ = web.request("GET", "/api/stats", host=host)
        assert r.status == 200, host


def test_session_is_the_http_role_without_a_token(make_web):
    w = make_web()
    s = w.get_json("/api/session")
    assert s["role"] == "read" and s["authenticated"] is False and s["owner"] == "http"
    assert s["login_required"] is False and s["token_refused"] is False
    assert len(s["csrf"]) == 64
    # A stale cookie (expired, its key removed) is as good as none: the page
    # still loads and can log in again; a program's bad bearer token is 401.
    stale = {"Cookie": f"jobq_session_{w.port}={'ab' * 32}"}
    r, data = w.request("GET", "/api/session", headers=stale)
    s2 = json.loads(data)
    assert r.status == 200 and s2["role"] == "read" and s2["token_refused"] is True
    r, _ = w.request("GET", "/api/stats", headers=stale)
    assert r.status == 200
    r, data = w.request("GET", "/api/stats", headers={"Authorization": "Bearer jq1.bad.token"})
    assert r.status == 401 and json.loads(data)["error"] == "Unauthorized"
    w2 = make_web("--http-role", "admin")
    assert w2.get_json("/api/session")["role"] == "admin"
    assert w2.csrf() != s["csrf"]  # each run its own


def test_stats_is_the_stats_reply(web):
    s = web.get_json("/api/stats")
    ref = web.d.js("stats")
    for k in ["version", "shards", "max_jobs", "epoch"]:
        assert s[k] == ref[k], k
    assert set(s["jobs"]) == {"queued", "waiting", "canceling", "running", "canceled",
                              "success", "error"}


def submit_many(d, n, op='{"op": "test.delay", "args": {"duration": 0}}'):
    spec = "[" + ",".join(f"[{op}]" for _ in range(n)) + "]"
    p = d.jobq("submit-many", "-", input=spec)
    assert p.returncode == 0, p.stderr
    return [int(x) for x in p.stdout.split()]


def test_jobs_are_paged_never_the_whole_table(web):
    ids = submit_many(web.d, 120)
    assert len(ids) == 120
    page = web.get_json("/api/jobs")
    assert len(page["jobs"]) == 50 and page["next_after_id"] == ids[49]
    j = page["jobs"][0]
    assert set(j) == {"id", "status", "priority", "summary", "owner", "received_ts", "start_ts",
                      "end_ts", "worker"}
    assert j["summary"] == ["test.delay(0)"] and j["owner"].startswith("uid:")
    seen = [x["id"] for x in page["jobs"]]
    while page["next_after_id"] is not None:
        page = web.get_json(f"/api/jobs?after_id={page['next_after_id']}&limit=50")
        seen += [x["id"] for x in page["jobs"]]
    assert seen == ids
    for i in ids:
        web.d.wait_status(i, ["success"])
    assert web.get_json("/api/jobs?status=queued,running")["jobs"] == []
    assert len(web.get_json("/api/jobs?status=success&limit=500")["jobs"]) == 120
    for bad in ["limit=0", "limit=501", "limit=x", "after_id=-1", "status=nope",
                "status=queued,,x"]:
        r, data = web.request("GET", f"/api/jobs?{bad}")
        assert r.status == 400, bad
        assert json.loads(data)["error"] == "BadArgument"


def test_one_job_with_everything_the_page_shows(web):
    msgs = json.dumps({"op": "test.log", "args": {"messages": ["one", "two <b>"]}})
    [jid] = submit_many(web.d, 1, msgs)
    web.d.wait_status(jid, ["success"])
    job = web.get_json(f"/api/job?id={jid}")["job"]
    assert job["id"] == jid and job["status"] == "success"
    assert [e[3] for e in job["oplog"][0]] == ["one", "two <b>"]
    assert job["opresult"] == [2] and job["summary"][0].startswith("test.log")
    assert job["change_serial"] >= 1 and job["log_serial"] == 2
    e = web.get_json("/api/job?id=999", status=404)
    assert e["error"] == "UnknownJob"
    for bad in ["", "?id=", "?id=0", "?id=x", "?id=-3"]:
        r, _ = web.request("GET", f"/api/job{bad}")
        assert r.status == 400, bad


def test_actions_need_the_role_and_the_page(make_web):
    w = make_web()  # read: may look, not act
    [jid] = submit_many(w.d, 1, '{"op": "test.delay", "args": {"duration": 30}}')
    csrf = w.csrf()
    status, body = w.post("/api/cancel", {"id": jid}, csrf)
    assert status == 403 and body["error"] == "PermissionDenied", body
    assert w.d.job(jid)["status"] in ("queued", "waiting", "running")

    a = make_web("--http-role", "admin")
    [jid] = submit_many(a.d, 1, '{"op": "test.delay", "args": {"duration": 30}}')
    csrf = a.csrf()
    # Not from our page: no token, a wrong one, a form type, another site.
    assert a.post("/api/cancel", {"id": jid})[1]["error"] == "CSRF"
    assert a.post("/api/cancel", {"id": jid}, "0" * 64)[1]["error"] == "CSRF"
    assert a.post("/api/cancel", {"id": jid}, csrf, ctype="text/plain")[1]["error"] == "CSRF"
    assert a.post("/api/cancel", {"id": jid}, csrf,
                  extra={"Sec-Fetch-Site": "cross-site"})[1]["error"] == "CSRF"
    for bad in ["", "{", '{"id": "1"}', '{"id": 1, "x": 2}', '{"id": 0}', "[1]",
                '{"id": 1, "priority": 10}']:
        status, body = a.post("/api/cancel", bad, csrf)
        assert status == 400 and body["error"] == "BadArgument", bad
    assert a.d.job(jid)["status"] in ("queued", "waiting", "running")
    status, body = a.post("/api/priority", {"id": jid, "priority": 5}, csrf)
    assert status == 400 and body["error"] == "InvalidPriority", body
    status, body = a.post("/api/cancel", {"id": jid}, csrf)
    assert status == 200 and body["ok"] is True, body
    assert a.d.wait_status(jid, ["canceled"]) == "canceled"
    status, body = a.post("/api/archive", {"id": jid}, csrf)
    assert status == 200 and body["ok"] is True, body
    assert a.d.job(jid)["archived"] is True
    [j2] = submit_many(a.d, 1, '{"op": "test.delay", "args": {"duration": 30}}')
    # A priority change reaches only opcodes not running yet: a second job
    # queued behind --max-running would do; here a running one is refused
    # or applied, but either way answered with JSON.
    status, body = a.post("/api/priority", {"id": j2, "priority": -10}, csrf)
    assert status in (200, 409), body
    a.post("/api/cancel", {"id": j2}, csrf)


def test_overview_stream_ticks_with_running_jobs(web):
    s = Stream(web.port, "/events")
    try:
        assert s.status == 200 and "text/event-stream" in s.head
        name, hello = s.next_event()
        assert name == "hello" and "history" in hello and hello["epoch"] > 0
        spec = {"op": "test.delay", "args": {"duration": 0.2, "repeat": 20}}
        [jid] = submit_many(web.d, 1, json.dumps(spec))
        deadline = time.monotonic() + 10
        running = None
        while running is None:
            assert time.monotonic() < deadline, "the job never showed as running"
            name, tick = s.next_event()
            assert name == "tick"
            for r in tick["running"]:
                if r["id"] == jid and r["log"]:
                    running = r
        assert running["op"] == "test.delay(0.2)" and running["op_index"] == 0
        assert running["log"].startswith("Test delay iteration")
        assert tick["jobs"]["running"] >= 1 and tick["live"] >= 1
        web.d.ok("cancel", str(jid))
        deadline = time.monotonic() + 10
        while True:
            name, tick = s.next_event()
            if all(r["id"] != jid for r in tick["running"]) and tick["finished"]["canceled"]:
                break
            assert time.monotonic() < deadline, tick
    finally:
        s.close()


def test_job_stream_snapshot_then_records(web):
    spec = {"op": "test.delay", "args": {"duration": 0.1, "repeat": 15}}
    [jid] = submit_many(web.d, 1, json.dumps(spec))
    s = Stream(web.port, f"/events?job={jid}")
    try:
        name, snap = s.next_event()
        assert name == "snapshot" and snap["id"] == jid
        serial = snap["change_serial"]
        logs = [e[0] for e in snap["oplog"][0]]
        status = snap["status"]
        while status not in ("success", "error", "canceled"):
            name, rec = s.next_event(timeout=10)
            assert name == "record" and rec["job"] == jid
            assert rec["serial"] == serial + 1, "records after the snapshot, each once, in order"
            serial = rec["serial"]
            logs += [e[0] for e in rec["log"]]
            status = rec["status"]
        assert status == "success"
        assert logs == list(range(1, 16)), "every log entry once"
    finally:
        s.close()
    r, data = web.request("GET", "/events?job=424242")
    assert r.status == 404 and json.loads(data)["error"] == "UnknownJob"
    r, _ = web.request("GET", "/events?job=abc")
    assert r.status == 400


def test_a_browser_that_stops_reading_is_cut_off(web):
    """A job stream nobody reads while its job logs 60,000 lines (some 15 MB
    of events): the server keeps a bounded backlog, then ends that stream
    (EOF after what was buffered), and serves everyone else meanwhile."""
    spec = [[{"op": "test.delay", "args": {"duration": 1}}],
            [{"op": "test.delay", "args": {"duration": 0, "repeat": 60000},
              "depends": [[-1, []]]}]]
    p = web.d.jobq("submit-many", "-", input=json.dumps(spec))
    assert p.returncode == 0, p.stderr
    jid = int(p.stdout.split()[1])
    slow = socket.create_connection(("127.0.0.1", web.port))
    # Small, but above one segment: a window smaller than that never
    # reopens by itself (the sender waits out its persist timer).
    slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 262144)
    slow.sendall(f"GET /events?job={jid} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
    fast = Stream(web.port, "/events")
    try:
        assert fast.next_event()[0] == "hello"
        # (Not `jobq info`: it would fetch the 60,000 entries each time.)
        deadline = time.monotonic() + 60
        while len(web.get_json("/api/jobs?status=success")["jobs"]) < 2:
            assert time.monotonic() < deadline, "the logging job did not finish"
            time.sleep(0.1)
        assert fast.next_event()[0] == "tick"
        slow.settimeout(10)
        total = 0
        while True:
            chunk = slow.recv(1 << 20)
            if not chunk:
                break
            total += len(chunk)
        assert total < 12_000_000, f"{total} bytes: the backlog was not bounded"
        assert web.get_json("/api/stats")["jobs"]["success"] == 2
    finally:
        fast.close()
        slow.close()


def test_bad_input_is_refused_and_the_server_stays(web):
    def raw(data, read=True):
        s = socket.create_connection(("127.0.0.1", web.port), timeout=5)
        s.sendall(data)
        out = b""
        try:
            while read:
                chunk = s.recv(65536)
                if not chunk:
                    break
                out += chunk
        except socket.timeout:
            pass
        s.close()
        return out
    # Answered 400, or closed without an answer: never anything else.
    for junk in [b"\x00\xff garbage\r\n\r\n", b"GET\r\n\r\n", b"GET / HTTP/9.9\r\n\r\n"]:
        out = raw(junk)
        assert out == b"" or out.split(b" ")[1] in (b"400", b"505"), (junk, out[:80])
    huge_header = b"GET /api/stats HTTP/1.1\r\nHost: 127.0.0.1\r\nX: " + b"a" * 100000 + b"\r\n\r\n"
    out = raw(huge_header)
    assert out == b"" or out.split(b" ")[1] in (b"400", b"413", b"431"), out[:80]
    csrf = web.csrf()
    status, body = web.post("/api/cancel", "{" + " " * 70000 + "}", csrf)
    assert status == 413 and body["error"] == "TooLarge"
    r, _ = web.request("DELETE", "/api/job?id=1")
    assert r.status == 405
    r, _ = web.request("GET", "/static/../../etc/passwd")
    assert r.status == 404
    # Still serving.
    assert web.get_json("/api/stats")["version"]


def test_threads_do_not_grow_with_browsers(web):
    before = web.get_json("/api/stats")["threads"]
    streams = [Stream(web.port, "/events") for _ in range(30)]
    idle = [socket.create_connection(("127.0.0.1", web.port)) for _ in range(30)]
    try:
        for s in streams:
            assert s.next_event()[0] == "hello"
        assert web.get_json("/api/stats")["threads"] == before
    finally:
        for s in streams:
            s.close()
        for s in idle:
            s.close()


def test_http_options(tmp_path):
    for bad in ["localhost:80", "8080", "127.0.0.1:99999", "1.2.3.4.5:1"]:
        p = subprocess.run([JOBQD, "--data-dir", str(tmp_path / "x"), "--http", bad],
                           capture_output=True, text=True, timeout=10)
        assert p.returncode == 2 and "--http" in p.stderr, (bad, p.stderr)
    p = subprocess.run([JOBQD, "--data-dir", str(tmp_path / "x"), "--http-role", "worker"],
                       capture_output=True, text=True, timeout=10)
    assert p.returncode == 2 and "--http-role" in p.stderr


def test_port_in_use_and_port_file(tmp_path, make_web):
    w = make_web()
    port_file = w.d.data_dir / "http.port"
    assert port_file.read_text() == f"{w.port}\n"
    other = tmp_path / "other"
    p = subprocess.run([JOBQD, "--data-dir", str(other), "--http", f"127.0.0.1:{w.port}"],
                       capture_output=True, text=True, timeout=20)
    assert p.returncode == 1 and "cannot listen" in p.stderr, p.stderr
    w.stop()
    assert not port_file.exists(), "a clean stop removes http.port"
    w.d.stop = lambda: None  # already stopped


def test_stop_with_streams_open(make_web):
    w = make_web("--shutdown-grace", "0.5")
    streams = [Stream(w.port, "/events") for _ in range(3)]
    [jid] = submit_many(w.d, 1, '{"op": "test.delay", "args": {"duration": 30}}')
    streams.append(Stream(w.port, f"/events?job={jid}"))
    for s in streams:
        s.next_event()
    t0 = time.monotonic()
    w.d.proc.terminate()
    assert w.d.proc.wait(timeout=40) == 0
    for s in streams:
        with pytest.raises((EOFError, ConnectionError, TimeoutError)):
            for _ in range(100):
                s.next_event(timeout=5)
        s.close()
    assert time.monotonic() - t0 < 40
    w.d.log.close()
    w.d.stop = lambda: None
    assert not os.path.exists(w.d.data_dir / "http.port")


def test_http_role_none_needs_a_token_even_on_loopback(make_web):
    """For a proxy in front: the page and the login only."""
    w = make_web("--http-role", "none")
    s = w.get_json("/api/session")
    assert s["role"] == "none" and s["login_required"] is True
    for path in ["/api/stats", "/api/jobs", "/api/job?id=1", "/events", "/metrics",
                 "/api/workers"]:
        r, data = w.request("GET", path)
        assert r.status == 401 and json.loads(data)["error"] == "Unauthorized", path
    status, body = w.post("/api/cancel", {"id": 1}, s["csrf"])
    assert status == 401
    r, _ = w.request("GET", "/static/chart.js")
    assert r.status in (200, 404)  # the page's files are public (404: no libjs-chart.js)


def test_a_job_page_shows_the_newest_log_entries(web):
    """A job with 3,000 log entries: the API and the stream's snapshot carry
    the newest 1,000 and say how many were left out."""
    [jid] = submit_many(web.d, 1, json.dumps(
        {"op": "test.log", "args": {"messages": [f"line {i}" for i in range(3000)]}}))
    web.d.wait_status(jid, ["success"])
    job = web.get_json(f"/api/job?id={jid}")["job"]
    assert job["log_omitted"] == 2000 and job["log_serial"] == 3000
    entries = job["oplog"][0]
    assert len(entries) == 1000 and entries[0][3] == "line 2000" and entries[-1][0] == 3000
    s = Stream(web.port, f"/events?job={jid}")
    try:
        name, snap = s.next_event()
        assert name == "snapshot" and snap["log_omitted"] == 2000
        assert len(snap["oplog"][0]) == 1000
    finally:
        s.close()


def test_stop_while_browsers_keep_connecting(tmp_path):
    """SIGTERM while browsers open streams and read the API in a loop: a
    clean stop (exit 0) every time, never an abort in the HTTP library."""
    import threading
    for run in range(4):
        sub = tmp_path / f"r{run}"
        sub.mkdir()
        d = Daemon(sub, "--http", "127.0.0.1:0", "--shutdown-grace", "0.2")
        port = http_port(d)
        stop = threading.Event()

        def hammer(path):
            while not stop.is_set():
                try:
                    c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
                    c.request("GET", path)
                    r = c.getresponse()
                    if path == "/events":
                        r.read(200)
                    else:
                        r.read()
                    c.close()
                except (OSError, http.client.HTTPException):
                    time.sleep(0.01)
        threads = [threading.Thread(target=hammer, args=(p,), daemon=True)
                   for p in ["/events"] * 8 + ["/api/stats", "/api/jobs"] * 4]
        for t in threads:
            t.start()
        time.sleep(0.5)
        d.proc.terminate()
        rc = d.proc.wait(timeout=30)
        stop.set()
        for t in threads:
            t.join(10)
        d.log.seek(0)
        log = d.log.read()
        d.log.close()
        assert rc == 0, log
        assert "stopped" in log and "Fatal" not in log, log
