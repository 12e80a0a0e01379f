"""Security: roles, job ownership and CURVE keys (docs/security.md).

Each test starts its own jobqd in a temp dir; TCP only on 127.0.0.1.
Step by step: over ipc the role is --ipc-role and the owner the caller's
uid; a request beyond the role is PermissionDenied and changes nothing; a
submitter may touch only its own jobs; refusals are counted in stats.
"""
import os
import subprocess
import sys

import pytest

from test_cli import JOBQ, JOBQD, Daemon, run

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "clients", "python"))
import jobq  # noqa: E402

JOB = [{"op": "test.delay", "args": {"duration": 30}}]


@pytest.fixture
def make_daemon(tmp_path):
    started = []

    def make(*extra, sub="d"):
        (tmp_path / sub).mkdir()
        d = Daemon(tmp_path / sub, *extra)
        started.append(d)
        return d

    yield make
    for d in started:
        d.stop()


def test_ipc_submit_role_cannot_drain_or_shut_down(make_daemon):
    d = make_daemon("--ipc-role", "submit")
    with jobq.Client(d.endpoint) as c:
        job = c.submit_job(JOB)
        for call in (lambda: c.set_drain_flag(True), lambda: c.shutdown(),
                     lambda: c.auto_archive_jobs(0, 1.0)):
            with pytest.raises(jobq.PermissionDeniedError) as e:
                call()
            assert e.value.code == "PermissionDenied"
        assert c.stats()["drained"] is False
        assert c.stats()["errors"]["PermissionDenied"] == 3
        # its own job it may cancel
        assert c.cancel_job(job)[0] is True
    p = d.jobq("drain", "on")
    assert p.returncode == 1 and "PermissionDenied" in p.stderr, p.stderr


def test_ipc_read_role_cannot_submit(make_daemon):
    d = make_daemon("--ipc-role", "read")
    with jobq.Client(d.endpoint) as c:
        with pytest.raises(jobq.PermissionDeniedError):
            c.submit_job(JOB)
        assert c.query_jobs(None, ["id"])["rows"] == []
        assert c.ping()
    p = d.jobq("submit", "test.delay")
    assert p.returncode == 1 and "PermissionDenied" in p.stderr


def test_owner_recorded_and_shown(make_daemon):
    d = make_daemon()
    job = d.submit("test.delay", "duration=0")
    me = "uid:%d" % os.getuid()
    assert d.job(job)["owner"] == me
    assert f"  Owner: {me}\n" in d.ok("info", job)
    assert me in d.ok("list", "-o", "id,owner")
    with jobq.Client(d.endpoint) as c:
        assert "owner" in [f["name"] for f in c.list_fields()]


def test_owner_survives_a_restart(tmp_path):
    (tmp_path / "d").mkdir()
    d = Daemon(tmp_path / "d")
    job = d.submit("test.delay", "duration=0")
    d.stop()
    d2 = Daemon.__new__(Daemon)
    # the same data directory again
    import time
    d2.data_dir = tmp_path / "d" / "data"
    d2.endpoint = f"ipc://{d2.data_dir}/jobq.sock"
    d2.log = open(tmp_path / "d2.log", "w+")
    d2.proc = subprocess.Popen([JOBQD, "--data-dir", str(d2.data_dir)], stdout=d2.log,
                               stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 15
        while run("ping", "-t", "0.5", endpoint=d2.endpoint).returncode != 0:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert d2.job(job)["owner"] == "uid:%d" % os.getuid()
    finally:
        d2.stop()


def test_bad_ipc_role_is_a_usage_error(tmp_path):
    p = subprocess.run([JOBQD, "--data-dir", str(tmp_path / "x"), "--ipc-role", "worker"],
                       capture_output=True, text=True, timeout=10)
    assert p.returncode == 2 and "--ipc-role" in p.stderr
    assert os.access(JOBQ, os.X_OK)


# ---- CURVE over TCP (127.0.0.1 only) ----------------------------------------

import json  # noqa: E402
import re  # noqa: E402
import socket  # noqa: E402
import time  # noqa: E402

import msgpack  # noqa: E402
import zmq  # noqa: E402


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Secure:
    """A jobqd with a client, a worker and an events TCP endpoint, all
    CURVE, and a directory of keys made by `jobq keygen`."""

    def __init__(self, tmp_path, *extra):
        self.tcp = f"tcp://127.0.0.1:{free_port()}"
        self.wtcp = f"tcp://127.0.0.1:{free_port()}"
        self.etcp = f"tcp://127.0.0.1:{free_port()}"
        self.d = Daemon(tmp_path, "--listen", self.tcp, "--workers", self.wtcp,
                        "--publish", self.etcp, *extra)
        self.keys = tmp_path / "keys"
        self.keys.mkdir()
        self.authorized = self.d.data_dir / "authorized_keys"
        self.server_key = str(self.d.data_dir / "server.key")
        self.ctx = zmq.Context()

    def keygen(self, name, role, authorize=True):
        p = subprocess.run([JOBQ, "--json", "keygen", name, "--role", role, "--dir",
                            str(self.keys)], capture_output=True, text=True, timeout=10)
        assert p.returncode == 0, p.stderr
        out = json.loads(p.stdout)
        assert oct(os.stat(out["secret"]).st_mode & 0o777) == "0o600"
        if authorize:
            self.authorize(name)
        return str(self.keys / f"{name}.key")

    def authorize(self, name):
        # Written aside, then moved in: the daemon never reads half a file.
        src = self.keys / f"{name}.key"
        tmp = self.authorized / f".{name}.tmp"
        tmp.write_bytes(src.read_bytes())
        os.rename(tmp, self.authorized / f"{name}.key")

    def client(self, key, timeout=3.0):
        return jobq.Client(self.tcp, timeout, key=key, server_key=self.server_key)

    def admin(self):
        """The local admin, over ipc."""
        return jobq.Client(self.d.endpoint)

    def cli(self, key, *args):
        return run("--key", key, "--server-key", self.server_key, "-s", self.tcp, "-t", "3",
                   *args)

    def raw_worker(self, key):
        """A worker DEALER on the TCP worker endpoint: (socket, first answer)."""
        s = self.ctx.socket(zmq.DEALER)
        s.setsockopt(zmq.LINGER, 0)
        if key:
            from jobq.keys import load_cert, server_public_key
            c = load_cert(key)
            s.curve_secretkey = c.secret.encode()
            s.curve_publickey = c.public.encode()
            s.curve_serverkey = server_public_key(self.server_key).encode()
        s.connect(self.wtcp)
        s.send(msgpack.packb({"v": 1, "type": "hello", "name": "w", "capacity": 1,
                              "opcodes": ["sec.work"]}))
        if not s.poll(3000):
            return s, None
        return s, msgpack.unpackb(s.recv(), raw=False)

    def stop(self):
        self.ctx.destroy(0)
        self.d.stop()


@pytest.fixture
def sec(tmp_path):
    s = Secure(tmp_path)
    yield s
    s.stop()


def jobs_now(sec):
    with sec.admin() as c:
        return c.query_jobs(None, ["id"])["rows"]


def test_daemon_keypair_made_on_first_start(sec):
    secret = sec.d.data_dir / "server.key_secret"
    assert oct(os.stat(secret).st_mode & 0o777) == "0o600"
    assert oct(os.stat(sec.authorized).st_mode & 0o777) == "0o700"
    from jobq.keys import load_cert
    assert len(load_cert(sec.server_key).public) == 40


def test_no_key_unknown_key_revoked_key_are_refused(sec):
    # no key at all: the CURVE handshake cannot even start
    with jobq.Client(sec.tcp, 5) as c:
        with pytest.raises(jobq.TransportError) as e:
            c.submit_job(JOB)
        assert "needs a key" in e.value.message
    # a key the daemon does not know: said at once
    stranger = sec.keygen("stranger", "admin", authorize=False)
    with sec.client(stranger, 5) as c:
        with pytest.raises(jobq.PermissionDeniedError) as e:
            c.set_drain_flag(True)
        assert "authorized keys" in e.value.message
    p = sec.cli(stranger, "drain", "on")
    assert p.returncode == 1 and "refused this key" in p.stderr, p.stderr
    p = run("-s", sec.tcp, "-t", "3", "ping")
    assert p.returncode == 1 and "needs a key" in p.stderr, p.stderr
    # a key that was known, then removed (revoked): refused from then on
    alice = sec.keygen("alice", "admin")
    with sec.client(alice) as c:
        assert c.ping()
    os.unlink(sec.authorized / "alice.key")
    with sec.client(alice, 5) as c:
        with pytest.raises(jobq.PermissionDeniedError):
            c.shutdown()
    assert jobs_now(sec) == []
    with sec.admin() as c:
        st = c.stats()
        assert st["drained"] is False
        assert st["connections"]["refused_auth"] >= 2, st["connections"]
        assert st["connections"]["handshake_failed"] >= 1, st["connections"]


def test_a_key_added_takes_effect_without_restart(sec):
    late = sec.keygen("late", "submit", authorize=False)
    with sec.client(late, 5) as c:
        with pytest.raises(jobq.PermissionDeniedError):
            c.ping()
    sec.authorize("late")
    deadline = time.monotonic() + 10
    while True:
        try:
            with sec.client(late, 1.5) as c:
                job = c.submit_job(JOB)
                break
        except (jobq.PermissionDeniedError, jobq.TimeoutError):
            assert time.monotonic() < deadline, "the new key was not taken"
    with sec.admin() as c:
        assert c.query_jobs([job], ["owner"])["rows"] == [["late"]]


def test_read_key_cannot_submit(sec):
    reader = sec.keygen("reader", "read")
    with sec.client(reader) as c:
        with pytest.raises(jobq.PermissionDeniedError):
            c.submit_job(JOB)
        assert c.query_jobs(None, ["id"])["rows"] == []
    p = sec.cli(reader, "submit", "test.delay")
    assert p.returncode == 1 and "PermissionDenied" in p.stderr, p.stderr
    assert jobs_now(sec) == []


def test_submit_key_owns_its_jobs_only(sec):
    alice, bob = sec.keygen("alice", "submit"), sec.keygen("bob", "submit")
    with sec.client(alice) as a, sec.client(bob) as b:
        ja = a.submit_job(JOB)
        jb = b.submit_job(JOB)
        # The owner check holds where the daemon's loop serves the request
        # itself (cancel, priority: docs/architecture.md) as in a handler.
        on0 = a.stats()["requests_on_loop"]
        for call in (lambda: b.cancel_job(ja), lambda: b.change_job_priority(ja, 10)):
            with pytest.raises(jobq.PermissionDeniedError) as e:
                call()
            assert "belongs to 'alice'" in e.value.message, e.value.message
        assert a.stats()["requests_on_loop"] - on0 == 1 + 2
        for call in (lambda: b.cancel_job(ja), lambda: b.change_job_priority(ja, 10),
                     lambda: b.archive_job(ja), lambda: b.set_drain_flag(True),
                     lambda: b.auto_archive_jobs(0, 1.0), lambda: b.shutdown()):
            with pytest.raises(jobq.PermissionDeniedError):
                call()
        row = a.query_jobs([ja], ["status", "priority", "archived", "owner"])["rows"][0]
        assert row[1:] == [0, False, "alice"] and row[0] in ("queued", "waiting", "running")
        assert b.cancel_job(jb)[0] is True  # its own
        assert a.cancel_job(ja)[0] is True
    with sec.admin() as c:
        assert c.stats()["drained"] is False
        assert c.stats()["errors"]["PermissionDenied"] >= 6
    # the owner in jobq info and list -o owner
    assert "  Owner: alice\n" in sec.cli(alice, "info", str(ja)).stdout
    out = sec.cli(alice, "list", "-o", "id,owner").stdout
    assert f"{ja}" in out and "alice" in out and "bob" in out


def test_admin_key_may_change_others_jobs(sec):
    alice, root = sec.keygen("alice", "submit"), sec.keygen("root", "admin")
    with sec.client(alice) as a, sec.client(root) as r:
        ja = a.submit_job(JOB)
        assert r.cancel_job(ja)[0] is True
        r.set_drain_flag(True)
        assert r.stats()["drained"] is True


def test_worker_key_cannot_submit_and_client_key_cannot_register(sec):
    wkey = sec.keygen("w1", "worker")
    with sec.client(wkey) as c:
        with pytest.raises(jobq.PermissionDeniedError):
            c.submit_job(JOB)
        with pytest.raises(jobq.PermissionDeniedError):
            c.ping()
    ckey = sec.keygen("carol", "admin")
    s, answer = sec.raw_worker(ckey)
    assert answer and answer["type"] == "error" and answer["code"] == "PermissionDenied", answer
    s.close(0)
    s, answer = sec.raw_worker(None)  # no key: no answer at all
    assert answer is None
    s.close(0)
    with sec.admin() as c:
        assert c.stats()["workers"]["connected"] == 0
    s, answer = sec.raw_worker(wkey)
    assert answer and answer["type"] == "welcome", answer
    s.close(0)


def sub_socket(sec, key):
    from jobq.keys import setup_curve
    s = sec.ctx.socket(zmq.SUB)
    s.setsockopt(zmq.LINGER, 0)
    if key:
        setup_curve(s, sec.etcp, key, sec.server_key)
    s.setsockopt(zmq.SUBSCRIBE, b"job/")
    s.connect(sec.etcp)
    return s


def test_events_over_curve_need_a_key(sec):
    alice = sec.keygen("alice", "read")
    keyed, bare = sub_socket(sec, alice), sub_socket(sec, None)
    time.sleep(0.5)  # the subscriptions arrive (PUB drops what no one asked for)
    with sec.admin() as c:
        job = c.submit_job([{"op": "test.delay", "args": {"duration": 0}}])
    assert keyed.poll(5000), "no event over CURVE"
    topic, body = keyed.recv_multipart()
    assert topic.startswith(b"job/%d/" % job)
    assert msgpack.unpackb(body, raw=False)["change"]["owner"] == "uid:%d" % os.getuid()
    assert not bare.poll(500), "an event reached a subscriber without a key"
    keyed.close(0)
    bare.close(0)


@pytest.mark.parametrize("where", ["--listen", "--workers", "--publish"])
def test_insecure_is_refused_off_loopback(tmp_path, where):
    # only the refusal: jobqd exits before it binds anything
    p = subprocess.run([JOBQD, "--data-dir", str(tmp_path / "d"), where, "tcp://0.0.0.0:5999",
                        "--insecure"], capture_output=True, text=True, timeout=10)
    assert p.returncode == 2, p.stderr
    assert "--insecure is accepted only on loopback addresses" in p.stderr
    assert not (tmp_path / "d").exists()


@pytest.mark.parametrize("where,endpoint", [
    ("--listen", "ipc://@jobq-test-abstract"), ("--workers", "ipc://@jobq-test-abstract-w"),
    ("--publish", "tipc://{1000,1}"), ("--listen", "pgm://lo;239.192.1.1:5555"),
    ("--insecure --listen", "tcp://localhost:5999")])
def test_unguarded_transports_are_refused(tmp_path, where, endpoint):
    """An abstract ipc socket has no file permissions, other transports
    neither CURVE nor permissions; a host name is not a loopback address
    to --insecure (libzmq binds no DNS names). Refused before binding."""
    args = where.split() + [endpoint]
    p = subprocess.run([JOBQD, "--data-dir", str(tmp_path / "d"), *args],
                       capture_output=True, text=True, timeout=10)
    assert p.returncode == 2, p.stderr
    assert endpoint in p.stderr, p.stderr
    assert not (tmp_path / "d").exists()


def write_cert(path, public, secret, meta):
    """A czmq certificate with the given metadata lines (none may be left
    out: the daemon must not take them from anywhere else)."""
    lines = ["metadata"] + [f'    {k} = "{v}"' for k, v in meta.items()]
    lines += ["curve", f'    public-key = "{public}"']
    (path).write_text("\n".join(lines) + "\n")
    secret_path = path.parent / (path.name + "_secret")
    secret_path.write_text("\n".join(lines + [f'    secret-key = "{secret}"']) + "\n")
    os.chmod(secret_path, 0o600)


def test_role_and_name_come_from_the_daemons_copy_of_the_key(sec):
    """A certificate without role or name: the caller is read, owned as
    key:PUBLIC (a client cannot fill them in); an invalid name is not an
    owner; a role changed by renaming a new file over the old one applies
    on the open connection; a removed key may call nothing more."""
    public, secret = zmq.curve_keypair()
    public, secret = public.decode(), secret.decode()
    key = sec.keys / "bare.key"
    write_cert(key, public, secret, {})
    sec.authorize("bare")
    with sec.client(str(key)) as c:
        assert c.ping()
        with pytest.raises(jobq.PermissionDeniedError):
            c.submit_job(JOB)
        # The same key, now of role submit with a name no owner may have.
        staged = sec.keys / "staged"
        staged.mkdir()
        write_cert(staged / "bare.key", public, secret, {"role": "submit", "name": "a b\u00e9"})
        tmp = sec.authorized / ".bare.tmp"
        tmp.write_bytes((staged / "bare.key").read_bytes())
        time.sleep(0.02)  # a new mtime for the directory, even on a coarse clock
        os.rename(tmp, sec.authorized / "bare.key")
        job = c.submit_job(JOB)
        assert c.query_jobs([job], ["owner"])["rows"][0][0] == f"key:{public}"
        # Removed: nothing more on this connection either.
        os.unlink(sec.authorized / "bare.key")
        with pytest.raises(jobq.PermissionDeniedError):
            c.ping()
    assert jobs_now(sec) == [[job]]


def test_insecure_on_loopback_serves_without_keys(make_daemon):
    tcp = f"tcp://127.0.0.1:{free_port()}"
    make_daemon("--listen", tcp, "--insecure")
    with jobq.Client(tcp, 3) as c:
        job = c.submit_job(JOB)
        assert c.query_jobs([job], ["owner"])["rows"][0][0].startswith("tcp:")


def test_jobq_worker_with_a_worker_key_runs_jobs(sec, tmp_path):
    """jobq-worker --key/--server-key over the TCP worker endpoint: served
    with a worker key; refused (PermissionDenied, exit 1) with a client key."""
    from test_jobq_worker import EXAMPLES, WORKER, Worker
    handlers = tmp_path / "handlers"
    handlers.mkdir()
    for f in ("sh.echo", "sh.echo.json"):
        (handlers / f).write_bytes(open(os.path.join(EXAMPLES, f), "rb").read())
    os.chmod(handlers / "sh.echo", 0o755)
    wkey = sec.keygen("w1", "worker")
    w = Worker(tmp_path, handlers, "--key", wkey, "--server-key", sec.server_key,
               endpoint=sec.wtcp, name="w1")
    try:
        with sec.admin() as c:
            job = c.submit_job([{"op": "sh.echo", "args": {"message": "hi"}}])
            done = c.wait(job, timeout=30)
            assert done is not None and done["status"] == "success", done
    finally:
        assert w.stop() == 0
    ckey = sec.keygen("carol", "submit")
    p = subprocess.run([WORKER, "--handlers", str(handlers), "--endpoint", sec.wtcp,
                        "--key", ckey, "--server-key", sec.server_key],
                       capture_output=True, text=True, timeout=30)
    assert p.returncode == 1 and "role is not worker" in p.stderr, (p.returncode, p.stderr)


def test_half_open_handshakes_do_not_starve_clients(sec):
    """Peers that connect and never finish a CURVE handshake are dropped
    after the handshake timeout; a keyed client is answered meanwhile."""
    alice = sec.keygen("alice", "read")
    idle = []
    try:
        for _ in range(50):
            s = socket.create_connection(("127.0.0.1", int(sec.tcp.rsplit(":", 1)[1])))
            idle.append(s)
        with sec.client(alice, 5) as c:
            assert c.ping()
        with sec.admin() as c:
            assert c.stats()["connections"]["open"] >= 50
            deadline = time.monotonic() + 20  # the 5 s handshake timeout, with room
            while c.stats()["connections"]["open"] >= 50:
                assert time.monotonic() < deadline, "half-open handshakes were never dropped"
                time.sleep(0.2)
            assert c.stats()["connections"]["handshake_failed"] >= 1
        with sec.client(alice, 5) as c:
            assert c.ping()
    finally:
        for s in idle:
            s.close()


def test_python_subscriber_over_curve(sec):
    reader = sec.keygen("reader", "read")
    with sec.admin() as admin:
        sub = jobq.Subscriber(sec.tcp, key=reader, server_key=sec.server_key,
                              events_endpoint=sec.etcp, timeout=5)
        try:
            assert sub.next(timeout=2) is not None  # the first snapshot
            job = admin.submit_job([{"op": "test.delay", "args": {"duration": 0}}])
            deadline = time.monotonic() + 15
            while True:
                assert time.monotonic() < deadline, "no change of the job over CURVE"
                rec = sub.next(timeout=1)
                if rec and rec.get("type") == "change" and rec["change"]["job"] == job:
                    break
        finally:
            sub.close()


# ---- HTTP tokens (docs/security.md "HTTP tokens") ---------------------------

import base64  # noqa: E402
import hashlib  # noqa: E402
import hmac  # noqa: E402

MONTH = 30 * 86400


def token_parts(token):
    """(claims text, mac bytes) of a jq1.<claims>.<mac> token."""
    prefix, claims, mac = token.split(".")
    assert prefix == "jq1"
    unb64 = lambda s: base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))  # noqa: E731
    assert "=" not in claims + mac  # no padding
    return unb64(claims).decode(), unb64(mac)


def token_mac(data_dir, token):
    """The MAC docs/security.md says the daemon makes: HMAC-SHA256 under
    BLAKE2b-256 of the label keyed with the daemon's secret key."""
    from jobq.keys import load_cert
    from zmq.utils import z85
    secret = z85.decode(load_cert(str(data_dir / "server.key_secret")).secret)
    key = hashlib.blake2b(b"jobq http token mac key v1", digest_size=32, key=secret).digest()
    signed = token.rsplit(".", 1)[0].encode()
    return hmac.new(key, signed, hashlib.sha256).digest()


def test_http_token_over_curve(sec):
    """http_token with a read key and an admin key (made by jobq keygen):
    the reply names the key's role and name, the token its public key and
    expiry, under the MAC the documented derivation gives."""
    from jobq.keys import load_cert
    reader, root = sec.keygen("reader", "read"), sec.keygen("root", "admin")
    for key, role, name, ttl in ((reader, "read", "reader", None),
                                 (root, "admin", "root", 3600)):
        with sec.client(key) as c:
            before = int(time.time())
            r = c.http_token(ttl)
            after = int(time.time())
        assert list(r) == ["token", "role", "owner", "expires"]
        assert (r["role"], r["owner"]) == (role, name)
        life = ttl or MONTH
        assert before + life <= r["expires"][0] <= after + life and r["expires"][1] == 0
        claims, mac = token_parts(r["token"])
        assert claims == "key %d %s" % (r["expires"][0], load_cert(key).public)
        assert mac == token_mac(sec.d.data_dir, r["token"])
        # the CLI prints the token; --json the whole answer
        p = sec.cli(key, "http-token", "--ttl", "2h")
        assert p.returncode == 0 and p.stderr == "", p.stderr
        assert re.fullmatch(r"jq1\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]{43}\n", p.stdout), p.stdout
        assert token_parts(p.stdout.strip())[0].startswith("key ")
        p = sec.cli(key, "--json", "http-token")
        assert p.returncode == 0, p.stderr
        j = json.loads(p.stdout)
        assert (j["role"], j["owner"]) == (role, name)
    # out of range: BadArgument, from the library and the CLI alike
    with sec.client(reader) as c:
        for bad in (59, 366 * 86400 + 1, -1, "1h", 1.5):
            with pytest.raises(jobq.BadArgumentError):
                c.http_token(bad)
        assert c.http_token(60)["role"] == "read"
        assert c.http_token(366 * 86400)["role"] == "read"
    p = sec.cli(reader, "http-token", "--ttl", "59")
    assert p.returncode == 1 and "BadArgument" in p.stderr and "ttl" in p.stderr, p.stderr
    # a worker key may call nothing on the client endpoint, this neither
    worker = sec.keygen("w1", "worker")
    with sec.client(worker) as c:
        with pytest.raises(jobq.PermissionDeniedError):
            c.http_token()
    # over ipc: the uid and --ipc-role
    with sec.admin() as c:
        r = c.http_token(120)
    me = "uid:%d" % os.getuid()
    assert (r["role"], r["owner"]) == ("admin", me)
    claims, mac = token_parts(r["token"])
    assert claims == "ipc %d admin %s" % (r["expires"][0], me)
    assert mac == token_mac(sec.d.data_dir, r["token"])


def test_http_token_refused_over_insecure(make_daemon):
    """--insecure authenticates nobody: no token for its callers (ipc
    callers of the same daemon still get one, with --ipc-role)."""
    tcp = f"tcp://127.0.0.1:{free_port()}"
    d = make_daemon("--listen", tcp, "--insecure", "--ipc-role", "read")
    with jobq.Client(tcp, 3) as c:
        with pytest.raises(jobq.PermissionDeniedError) as e:
            c.http_token()
        assert "not authenticated" in e.value.message
    with jobq.Client(d.endpoint, 3) as c:
        assert c.http_token()["role"] == "read"
    p = run("-s", tcp, "-t", "3", "http-token")
    assert p.returncode == 1 and "PermissionDenied" in p.stderr, p.stderr


def test_http_tokens_on_the_http_endpoint(tmp_path):
    """Tokens at work on --http (loopback, --http-role read): a key's token
    is that key, with the role its certificate has at each request (a role
    changed applies at once, a removed key's token is refused); an ipc
    token is the uid with --ipc-role; a tampered or garbage token is 401,
    never the anonymous role; the login form sets the token as a cookie."""
    import http.client
    s = Secure(tmp_path, "--http", "127.0.0.1:0", "--http-role", "read")
    try:
        path = s.d.data_dir / "http.port"
        deadline = time.monotonic() + 10
        while not path.exists():
            assert time.monotonic() < deadline, "no http.port"
            time.sleep(0.02)
        port = int(path.read_text())

        def request(method, url, token=None, body=None, headers=None):
            h = dict(headers or {})
            if token is not None:
                h["Authorization"] = "Bearer " + token
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            c.request(method, url, body=body, headers=h)
            r = c.getresponse()
            data = r.read()
            c.close()
            return r, data

        def session(token=None, headers=None):
            r, data = request("GET", "/api/session", token, headers=headers)
            return r.status, json.loads(data)

        alice, root = s.keygen("alice", "submit"), s.keygen("root", "admin")
        with s.client(alice) as c:
            atok = c.http_token(600)["token"]
            ajob = c.submit_job(JOB)
        p = s.cli(root, "http-token", "--ttl", "10m")
        assert p.returncode == 0, p.stderr
        rtok = p.stdout.strip()
        status, body = session()
        assert status == 200 and body["role"] == "read" and body["authenticated"] is False
        status, body = session(atok)
        assert status == 200, body
        assert (body["role"], body["owner"], body["authenticated"]) == ("submit", "alice", True)
        csrf = body["csrf"]

        def cancel(token, job):
            r, data = request("POST", "/api/cancel", token, json.dumps({"id": job}),
                              {"Content-Type": "application/json", "X-CSRF-Token": csrf})
            return r.status, json.loads(data)

        # root's token acts as root: another owner's job; alice's may not
        with s.client(root) as c:
            rjob = c.submit_job(JOB)
        status, body = cancel(atok, rjob)
        assert status == 403 and body["error"] == "PermissionDenied", body
        status, body = cancel(rtok, ajob)
        assert status == 200 and body["ok"] is True, body
        # tampered, truncated, garbage, another daemon's: 401, not read
        bad = [atok[:-1] + ("A" if atok[-1] != "A" else "B"), atok[:-5], "jq1.a.b", "x" * 600,
               atok.replace("jq1.", "jq2.")]
        for t in bad:
            status, body = session(t)
            assert status == 401 and body["error"] == "Unauthorized", (t, body)
        # alice made admin: her token is admin at once
        from jobq.keys import load_cert
        cert = load_cert(alice)
        public, secret = cert.public, cert.secret
        staged = s.keys / "staged"
        staged.mkdir()
        write_cert(staged / "alice.key", public, secret, {"role": "admin", "name": "alice"})
        tmp = s.authorized / ".alice.tmp"
        tmp.write_bytes((staged / "alice.key").read_bytes())
        time.sleep(0.02)  # a new mtime for the directory, even on a coarse clock
        os.rename(tmp, s.authorized / "alice.key")
        assert session(atok)[1]["role"] == "admin"
        # removed: refused from then on
        time.sleep(0.02)
        os.unlink(s.authorized / "alice.key")
        status, body = session(atok)
        assert status == 401, body
        assert session(rtok)[1]["owner"] == "root"
        # an ipc token: the uid and --ipc-role (admin)
        with s.admin() as c:
            itok = c.http_token()["token"]
        status, body = session(itok)
        assert (body["role"], body["owner"]) == ("admin", "uid:%d" % os.getuid())
        # the login form: a session whose cookie (named for the port: cookies
        # ignore ports) carries a random id, never the token
        form = "token=%s&csrf=%s" % (rtok, csrf)
        r, _ = request("POST", "/login", body=form,
                       headers={"Content-Type": "application/x-www-form-urlencoded"})
        assert r.status in (302, 303), r.status
        cookie = r.getheader("Set-Cookie")
        name, value = cookie.split(";")[0].split("=", 1)
        assert name == "jobq_session_%d" % port and len(value) == 64, cookie
        assert rtok not in cookie and "HttpOnly" in cookie and "SameSite=Strict" in cookie
        status, body = session(headers={"Cookie": "%s=%s" % (name, value)})
        assert (body["role"], body["owner"], body["authenticated"]) == ("admin", "root", True)
        # the token itself as the cookie is no session
        status, body = session(headers={"Cookie": "%s=%s" % (name, rtok)})
        assert body["authenticated"] is False and body["token_refused"] is True
        # log out: that session is over, even with its cookie kept
        r, _ = request("POST", "/logout", body="csrf=" + csrf,
                       headers={"Content-Type": "application/x-www-form-urlencoded",
                                "Cookie": "%s=%s" % (name, value)})
        assert r.status == 303 and "Max-Age=0" in r.getheader("Set-Cookie")
        status, body = session(headers={"Cookie": "%s=%s" % (name, value)})
        assert body["authenticated"] is False and body["token_refused"] is True
    finally:
        s.stop()
