"""Integration test harness: real cityopsd processes on 127.0.0.1.

A Cluster writes one INI file per node into a fresh temporary directory,
starts the daemons, and talks to them with the real cityctl (--json). Ports
come from free_ports (below the ephemeral range, never twice). Every wait
is a poll with a deadline; every process started is stopped by its PID in
stop()/cleanup.
"""
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time

BUILD = os.environ.get("CITYOPS_BUILD", os.path.join(
    os.path.dirname(__file__), "..", "..", "build"))
CITYOPSD = os.path.join(BUILD, "node", "cityopsd")
CITYCTL = os.path.join(BUILD, "ops", "cityctl")
# Reports of an ASan+UBSan build of cityopsd (CITYOPS_BUILD=build-asan).
SANITIZER_MARKERS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer",
                     "runtime error:")


def _port_range():
    """Ports below the kernel's ephemeral range: a port found free there is
    not taken meanwhile by the local end of some outgoing connection."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            lo, hi = (int(x) for x in f.read().split())
    except (OSError, ValueError):
        lo, hi = 32768, 60999
    if lo - 1 - 10000 >= 2000:
        return 10000, lo - 1
    return hi + 1, 65535


_PORTS_HANDED = set()
_PORT_NEXT = [None]


def free_ports(n):
    """n distinct loopback ports, free now, never handed out before by this
    process, and outside the ephemeral range."""
    lo, hi = _port_range()
    span = hi - lo + 1
    if _PORT_NEXT[0] is None:
        _PORT_NEXT[0] = (os.getpid() * 7919 + int(time.time() * 1000)) % span
    ports = []
    for _ in range(span):
        if len(ports) == n:
            break
        port = lo + _PORT_NEXT[0] % span
        _PORT_NEXT[0] += 1
        if port in _PORTS_HANDED:
            continue
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            continue
        finally:
            s.close()
        _PORTS_HANDED.add(port)
        ports.append(port)
    if len(ports) < n:
        raise AssertionError("no %d free loopback ports in %d-%d" % (n, lo, hi))
    return ports


def wait_for(what, fn, timeout=20.0, interval=0.1):
    """Poll fn() until it returns a true value; fail after timeout."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = fn()
            if last:
                return last
        except CtlError as e:
            last = e
        time.sleep(interval)
    raise AssertionError("timed out waiting for %s (last: %r)" % (what, last))


class CtlError(Exception):
    def __init__(self, code, message, rc):
        super().__init__("%s: %s" % (code, message))
        self.code = code
        self.message = message
        self.rc = rc


class Node:
    def __init__(self, cluster, nid, grpc_port, raft_port):
        self.cluster = cluster
        self.id = nid
        self.grpc = "127.0.0.1:%d" % grpc_port
        self.raft = "127.0.0.1:%d" % raft_port   # where it listens
        self.member_raft = self.raft   # what the others dial (maybe a proxy)
        self.dir = os.path.join(cluster.dir, "n%d" % nid)
        self.config = os.path.join(cluster.dir, "n%d.ini" % nid)
        self.log = os.path.join(cluster.dir, "n%d.log" % nid)
        self.proc = None

    def write_config(self, members, extra=""):
        lines = [
            "[node]",
            "id = %d" % self.id,
            "name = n%d" % self.id,
            "data_dir = %s" % self.dir,
            "grpc_address = %s" % self.grpc,
            "raft_address = %s" % self.raft,
            "[raft]",
            "heartbeat_ms = 100",
            "election_ms = 1000",
            "[storage]",
            "map_size_mb = 256",
            "[server]",
            "write_wait_ms = 3000",
            "[cluster]",
        ]
        for m in members:
            lines.append("member = %d %s %s" % (m.id, m.member_raft, m.grpc))
        with open(self.config, "w") as f:
            f.write("\n".join(lines) + "\n" + extra)

    def start(self):
        if self.proc is not None and self.proc.stdout:
            self.proc.stdout.close()
        logf = open(self.log, "ab")
        self.proc = subprocess.Popen(
            [CITYOPSD, "--config", self.config],
            stdout=subprocess.PIPE, stderr=logf, stdin=subprocess.DEVNULL)
        logf.close()
        line = self.proc.stdout.readline().decode()
        if "ready" not in line:
            self.proc.wait(timeout=10)
            raise AssertionError("n%d did not start (rc %s): %s" % (
                self.id, self.proc.returncode, self.tail()))
        return self

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def kill(self, sig=signal.SIGKILL):
        if self.alive():
            self.proc.send_signal(sig)
            if sig in (signal.SIGKILL, signal.SIGTERM, signal.SIGINT):
                self.proc.wait(timeout=30)

    def stop(self):
        """SIGTERM and wait. A node that does not exit cleanly (exit status,
        or a sanitizer report in its log) is noted in cluster.problems."""
        if self.alive():
            self.proc.send_signal(signal.SIGCONT)   # in case it was stopped
            self.proc.send_signal(signal.SIGTERM)
            try:
                rc = self.proc.wait(timeout=30)
                if rc != 0:
                    self.cluster.problems.append(
                        "n%d exited %d after SIGTERM" % (self.id, rc))
            except subprocess.TimeoutExpired:
                self.cluster.problems.append(
                    "n%d did not stop within 30 s of SIGTERM" % self.id)
                self.proc.kill()
                self.proc.wait()
        if self.proc is not None and self.proc.stdout:
            self.proc.stdout.close()
        self.check_log()

    def check_log(self):
        text = self.tail(100000)
        for marker in SANITIZER_MARKERS:
            if marker in text and (self.id, marker) not in self.cluster.seen:
                self.cluster.seen.add((self.id, marker))
                i = text.index(marker)
                self.cluster.problems.append("n%d: %s" % (
                    self.id, text[max(0, i - 200):i + 1500]))

    def tail(self, n=30):
        try:
            with open(self.log, errors="replace") as f:
                return "".join(f.readlines()[-n:])
        except OSError:
            return ""


class Cluster:
    """n nodes; with proxied=True every member raft address is a NetProxy
    listener (self.net) forwarding to the node, so tests can partition."""

    def __init__(self, n=3, extra="", proxied=False):
        self.dir = tempfile.mkdtemp(prefix="cityops-it-")
        self.problems = []   # unclean exits and sanitizer reports
        self.seen = set()
        ports = free_ports(2 * n)
        self.nodes = [Node(self, i + 1, ports[2 * i], ports[2 * i + 1])
                      for i in range(n)]
        self.net = None
        if proxied:
            from netproxy import NetProxy
            self.net = NetProxy()
            for node in self.nodes:
                node.member_raft = self.net.add(node.id, node.raft)
        for node in self.nodes:
            node.write_config(self.nodes, extra)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        self.close(keep=exc_type is not None)

    def start(self):
        for node in self.nodes:
            node.start()
        return self

    def close(self, keep=False):
        try:
            for node in self.nodes:
                node.stop()
        finally:
            if self.net is not None:
                self.net.stop()
        problems = self.problems
        if keep and os.environ.get("CITYOPS_KEEP"):
            print("kept", self.dir)
        else:
            if keep:
                for node in self.nodes:
                    print("---- n%d log tail ----\n%s" % (node.id,
                                                          node.tail()))
            shutil.rmtree(self.dir, ignore_errors=True)
        if problems and not keep:
            raise AssertionError("nodes did not stop cleanly:\n" +
                                 "\n".join(problems))

    def endpoints(self, nodes=None):
        return ",".join(n.grpc for n in (nodes or self.nodes))

    def ctl(self, *args, endpoints=None, timeout_ms=5000):
        """Run cityctl --json; return parsed JSON or raise CtlError."""
        cmd = [CITYCTL, "--json", "--timeout", str(timeout_ms),
               "--endpoints", endpoints or self.endpoints()] + list(args)
        p = subprocess.run(cmd, capture_output=True, timeout=120)
        out = p.stdout.decode()
        if p.returncode != 0:
            try:
                err = json.loads(out)["error"]
                raise CtlError(err.get("code"), err.get("message"),
                               p.returncode)
            except (ValueError, KeyError, TypeError):
                raise CtlError("EXIT%d" % p.returncode,
                               p.stderr.decode().strip(), p.returncode)
        return json.loads(out) if out.strip() else {}

    def status(self, node=None, digest=False):
        args = ["cluster", "status"] + (["--digest"] if digest else [])
        return self.ctl(*args, endpoints=(node or self.live()[0]).grpc)

    def live(self):
        return [n for n in self.nodes if n.alive()]

    def leader(self, among=None, timeout=20.0):
        """Wait until the live nodes agree on a live leader; return it."""
        among = among or self.live()

        def agreed():
            ids = set()
            for n in among:
                st = self.ctl("cluster", "status", endpoints=n.grpc)
                ids.add(int(st.get("leader_id", 0)))
            if len(ids) == 1:
                lid = ids.pop()
                for n in among:
                    if n.id == lid:
                        return n
            return None
        return wait_for("a leader all live nodes agree on", agreed, timeout)

    def digests(self, nodes):
        """{node id: (applied index, digest)} asked of each node alone."""
        out = {}
        for n in nodes:
            st = self.ctl("cluster", "status", "--local", "--digest",
                          endpoints=n.grpc)
            me = st["nodes"][0]
            out[n.id] = (int(me.get("applied_index", 0)),
                         me.get("state_digest"))
        return out

    def converged(self, nodes=None, timeout=30.0):
        """Wait until every given node has the same applied index + digest."""
        nodes = nodes or self.live()

        def same():
            d = self.digests(nodes)
            vals = set(d.values())
            return d if len(vals) == 1 else None
        return wait_for("identical state digests", same, timeout, 0.3)
