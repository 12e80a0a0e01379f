"""Real jobqd Raft clusters for the cluster tests (not a test file).

A Cluster is 1..N jobqd nodes in one temporary directory, node addresses on
loopback TCP ports picked free, with either the CURVE key setup of a
production cluster (``jobq keygen server --role admin`` per node, every
other node's public key in its authorized_keys) or ``--insecure``. Clients
talk raw zmq + msgpack to each node's ipc socket, and ``Cluster.call``
follows NotLeader itself (bounded), so these tests depend on nothing the
client libraries learn about clusters. ``Cluster.close`` kills whatever is
left (SIGCONT first, then SIGKILL) and removes the directory, whatever
happened in the test.

A partition here is made by SIGSTOP (a node's --node-address is both what
it binds and what the others dial, so a relay in between cannot be placed
without the daemon's help).
"""
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

import msgpack
import zmq

BUILD = os.environ.get("JOBQ_BUILD_DIR",
                       os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "build"))
JOBQD = os.path.join(BUILD, "broker", "jobqd")
JOBQ = os.path.join(BUILD, "clients", "jobq")
FINAL = ("success", "error", "canceled")


def free_port() -> int:
    """A loopback TCP port nobody listens on now (the kernel's choice)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class NoAnswer(Exception):
    """A request got no answer within its timeout (it may have run)."""


class Failed(Exception):
    """A request was answered with an error other than NotLeader."""

    def __init__(self, error: Dict[str, Any]) -> None:
        super().__init__("%s: %s" % (error.get("code"), error.get("message")))
        self.code = str(error.get("code"))
        self.error = error


class Conn:
    """One DEALER to one node's ipc socket; a fresh socket after a timeout,
    so a late answer never pairs with a later request."""

    def __init__(self, ctx: "zmq.Context[Any]", endpoint: str) -> None:
        self.ctx = ctx
        self.endpoint = endpoint
        self.sock: "Optional[zmq.Socket[Any]]" = None
        self.rid = 0

    def _socket(self) -> "zmq.Socket[Any]":
        if self.sock is None:
            s = self.ctx.socket(zmq.DEALER)
            s.setsockopt(zmq.LINGER, 0)
            s.connect(self.endpoint)
            self.sock = s
        return self.sock

    def reset(self) -> None:
        """Drop the socket (after a timeout, or when the node restarted)."""
        if self.sock is not None:
            self.sock.close(0)
            self.sock = None

    def request(self, method: str, args: Dict[str, Any], timeout: float) -> Dict[str, Any]:
        """The raw reply map of one request; NoAnswer after timeout."""
        s = self._socket()
        self.rid += 1
        rid = self.rid
        s.send(msgpack.packb({"v": 1, "id": rid, "method": method, "args": args}))
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not s.poll(int(left * 1000) + 1):
                self.reset()
                raise NoAnswer("%s to %s: no answer in %.1f s" % (method, self.endpoint, timeout))
            rep = msgpack.unpackb(s.recv(), raw=False)
            if rep.get("id") == rid and not rep.get("keepalive"):
                return dict(rep)

    def close(self) -> None:
        """Close the socket."""
        self.reset()


class Node:
    """One jobqd of a cluster: its data directory, node address, process."""

    def __init__(self, cluster: "Cluster", index: int, key: bool) -> None:
        self.cluster = cluster
        self.index = index
        self.dir = os.path.join(cluster.root, "n%d" % index)
        os.mkdir(self.dir)
        self.port = free_port()
        self.address = "127.0.0.1:%d" % self.port
        self.endpoint = "ipc://%s/jobq.sock" % self.dir
        self.log = os.path.join(cluster.root, "n%d.log" % index)
        self.proc: Optional[subprocess.Popen[bytes]] = None
        self.join: List[str] = []
        self.extra: List[str] = []
        self.stopped = False
        if key:
            subprocess.run([JOBQ, "keygen", "server", "--role", "admin", "--dir", self.dir],
                           check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=30)
            os.makedirs(os.path.join(self.dir, "authorized_keys"), exist_ok=True)

    @property
    def public_key(self) -> str:
        """Path of this node's public key file."""
        return os.path.join(self.dir, "server.key")

    def authorize(self, other: "Node") -> None:
        """Put other's public key in this node's authorized_keys."""
        shutil.copy(other.public_key, os.path.join(self.dir, "authorized_keys", "node%d.key" % other.index))

    def argv(self) -> List[str]:
        """jobqd's command line for this node."""
        a = [JOBQD, "--data-dir", self.dir, "--cluster", "--node-address", self.address,
             "--shutdown-grace", "1"]
        if self.cluster.insecure:
            a.append("--insecure")
        for j in self.join:
            a += ["--join", j]
        return a + self.extra

    def start(self) -> None:
        """Start (or start again) the process; does not wait for it."""
        assert self.proc is None or self.proc.poll() is not None
        with open(self.log, "ab") as log:
            log.write(("==== start %s\n" % " ".join(self.argv())).encode())
            log.flush()
            self.proc = subprocess.Popen(self.argv(), stdout=subprocess.DEVNULL, stderr=log)
        self.stopped = False
        self.cluster.reset_conns(self)

    def alive(self) -> bool:
        """True while the process runs."""
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """kill -9, and reap it."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.stopped = False
        self.cluster.reset_conns(self)

    def terminate(self, timeout: float = 15) -> Optional[int]:
        """SIGTERM (twice, as jobqd_stop does); SIGKILL after timeout. Its exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            if self.stopped:
                self.cont()
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(0.5)
            except subprocess.TimeoutExpired:
                self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.cluster.reset_conns(self)
        return self.proc.returncode

    def stop(self) -> None:
        """SIGSTOP: the process is frozen, sockets stay open."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)
        self.stopped = True

    def cont(self) -> None:
        """SIGCONT after stop()."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)
        self.stopped = False

    def call(self, method: str, timeout: float = 5.0, **args: Any) -> Any:
        """A request to this node only: its result, Failed on an error
        (NotLeader included), NoAnswer on a timeout."""
        rep = self.cluster.conn(self).request(method, args, timeout)
        if not rep["ok"]:
            raise Failed(rep["error"])
        return rep["result"]

    def ping(self, timeout: float = 1.0) -> Optional[Dict[str, Any]]:
        """ping's result, or None without an answer."""
        try:
            return dict(self.call("ping", timeout=timeout))
        except (NoAnswer, Failed):
            return None

    def node_id(self) -> int:
        """This node's Raft id (DATA/cluster/node-id)."""
        with open(os.path.join(self.dir, "cluster", "node-id")) as f:
            return int(f.read().split()[0])

    def log_text(self) -> str:
        """Everything this node wrote to stderr, over all its starts."""
        with open(self.log, "rb") as f:
            return f.read().decode(errors="replace")


class Cluster:
    """N jobqd nodes, with a NotLeader-following call and a bounded teardown."""

    def __init__(self, insecure: bool = False) -> None:
        self.root = tempfile.mkdtemp(prefix="jobq-cl-")
        self.insecure = insecure
        self.nodes: List[Node] = []
        self.ctx = zmq.Context()
        self._conns: Dict[Tuple[int, int], Conn] = {}
        self._lock = threading.Lock()

    # connections: one per (thread, node), since zmq sockets are per thread
    def conn(self, node: Node) -> Conn:
        """This thread's connection to node."""
        key = (threading.get_ident(), node.index)
        with self._lock:
            c = self._conns.get(key)
            if c is None:
                c = Conn(self.ctx, node.endpoint)
                self._conns[key] = c
            return c

    def reset_conns(self, node: Node) -> None:
        """Mark every thread's socket to node stale (closed by its owner)."""
        # Sockets belong to their threads; a stale socket is harmless
        # (a fresh one is made after its next timeout), so nothing here.

    def add_node(self, key: Optional[bool] = None) -> Node:
        """A new node (not started); with keys, authorized both ways with
        every existing node."""
        n = Node(self, len(self.nodes) + 1, not self.insecure if key is None else key)
        if not self.insecure and (key is None or key):
            for o in self.nodes:
                o.authorize(n)
                n.authorize(o)
        self.nodes.append(n)
        return n

    def start(self, count: int, timeout: float = 60) -> None:
        """Bootstrap node 1, then join the others one by one; wait until
        the leader lists count voters and every node applied its index."""
        first = self.add_node()
        first.start()
        self.wait_leader(timeout=20)
        for _ in range(count - 1):
            n = self.add_node()
            n.join = [first.endpoint]
            n.start()
            self.wait_member(n, timeout=30)
        self.wait_converged(timeout=timeout)

    def wait_member(self, node: Node, timeout: float = 30) -> None:
        """Until node answers ping as a follower or leader of this cluster."""
        deadline = time.monotonic() + timeout
        while True:
            p = node.ping(0.5)
            st = (p or {}).get("cluster", {}).get("state")
            if st in ("follower", "leader") and (p or {}).get("cluster", {}).get("leader"):
                return
            assert node.alive(), "node %d exited:\n%s" % (node.index, node.log_text()[-3000:])
            assert time.monotonic() < deadline, "node %d did not join: %r" % (node.index, p)
            time.sleep(0.1)

    def live(self) -> List[Node]:
        """Nodes whose process runs and is not stopped."""
        return [n for n in self.nodes if n.alive() and not n.stopped]

    def leader(self, nodes: Optional[Sequence[Node]] = None) -> Optional[Node]:
        """The node that says it leads (and whose leader is itself), if any."""
        for n in nodes if nodes is not None else self.live():
            p = n.ping(0.5)
            c = (p or {}).get("cluster") or {}
            if c.get("state") == "leader":
                return n
        return None

    def wait_leader(self, timeout: float = 20, nodes: Optional[Sequence[Node]] = None,
                    not_: Optional[Node] = None) -> Node:
        """Until one node leads and answers a read that only a leader serves."""
        deadline = time.monotonic() + timeout
        while True:
            n = self.leader(nodes)
            if n is not None and n is not not_:
                try:
                    n.call("query_jobs", timeout=2, limit=1)  # followers answer stats too
                    return n
                except (NoAnswer, Failed):
                    pass
            assert time.monotonic() < deadline, "no leader within %g s" % timeout
            time.sleep(0.1)

    def by_endpoints(self, leader: Optional[Dict[str, Any]]) -> Optional[Node]:
        """The node whose ipc endpoint a NotLeader's leader map lists."""
        if not leader:
            return None
        eps = leader.get("endpoints") or []
        for n in self.nodes:
            if n.endpoint in eps:
                return n
        return None

    def call(self, method: str, timeout: float = 20.0, per_try: float = 3.0,
             retry: bool = True, **args: Any) -> Any:
        """method on whoever leads: follows NotLeader (to the leader's
        endpoints), tries the next node on no answer or nil leader; gives
        up after timeout with NoAnswer. With retry (for requests that are
        safe to send again: reads, tokened submits) an unanswered request
        is sent again elsewhere; without, NoAnswer at once (it may have
        run), and only NotLeader (which did nothing) is followed."""
        deadline = time.monotonic() + timeout
        order = list(self.nodes)
        i = 0
        target: Optional[Node] = None
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise NoAnswer("%s: no leader answered in %g s" % (method, timeout))
            if target is None:
                cands = [n for n in order if n.alive()]
                if not cands:
                    raise NoAnswer("no node runs")
                target = cands[i % len(cands)]
                i += 1
            try:
                rep = self.conn(target).request(method, dict(args), min(per_try, left))
            except NoAnswer:
                if not retry:
                    raise
                target = None
                continue
            if rep["ok"]:
                return rep["result"]
            err = rep["error"]
            if err.get("code") == "NotLeader":
                nxt = self.by_endpoints(err.get("leader"))
                if nxt is None or nxt is target:
                    time.sleep(0.2)
                    target = None
                else:
                    target = nxt
                continue
            if err.get("code") in ("NotRunning", "ShuttingDown"):
                time.sleep(0.2)
                target = None
                continue
            raise Failed(err)

    def nodes_view(self, timeout: float = 10) -> List[Dict[str, Any]]:
        """query_nodes on the leader (a follower answers it too, from its
        own view, so Cluster.call would not do)."""
        deadline = time.monotonic() + timeout
        while True:
            leader = self.wait_leader(timeout=max(0.5, deadline - time.monotonic()))
            try:
                return list(leader.call("query_nodes", timeout=2))
            except (NoAnswer, Failed):
                assert time.monotonic() < deadline, "query_nodes: no answer from the leader"

    def wait_converged(self, timeout: float = 60, nodes: Optional[Sequence[Node]] = None) -> None:
        """Until every running node's applied index reaches the leader's
        (as query_nodes on each node itself says)."""
        deadline = time.monotonic() + timeout
        while True:
            ok = False
            try:
                leader = self.wait_leader(timeout=max(0.5, deadline - time.monotonic()))
                target = self._self_applied(leader)
                ok = target is not None
                for n in nodes if nodes is not None else self.live():
                    a = self._self_applied(n)
                    if a is None or target is None or a < target:
                        ok = False
            except (NoAnswer, Failed, AssertionError):
                ok = False
            if ok:
                return
            assert time.monotonic() < deadline, "cluster did not converge: %r" % [
                (n.index, self._self_applied(n)) for n in self.nodes if n.alive()]
            time.sleep(0.2)

    @staticmethod
    def _self_applied(n: Node) -> Optional[int]:
        try:
            rows = n.call("query_nodes", timeout=2)
        except (NoAnswer, Failed):
            return None
        for r in rows:
            if r.get("self"):
                return int(r["applied"])
        return None

    def close(self) -> List[str]:
        """Stop every node (SIGCONT, SIGTERM, SIGKILL after a while), the
        proxies, the sockets; remove the directory. Returns the nodes'
        logs (for a failing test's report)."""
        logs = []
        for n in self.nodes:
            if n.proc is not None and n.proc.poll() is None:
                try:
                    n.proc.send_signal(signal.SIGCONT)
                except ProcessLookupError:
                    pass
        for n in self.nodes:
            try:
                n.terminate(timeout=5)
            except Exception:
                pass
            if n.proc is not None and n.proc.poll() is None:
                n.proc.kill()
                n.proc.wait()
            try:
                logs.append(n.log_text())
            except OSError:
                logs.append("")
        with self._lock:
            for c in self._conns.values():
                try:
                    c.close()
                except Exception:
                    pass
            self._conns.clear()
        self.ctx.destroy(0)
        shutil.rmtree(self.root, ignore_errors=True)
        return logs
