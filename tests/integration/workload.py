"""Concurrent write load for fault tests, and the checks that follow a fault.

A Writer reports cases, each with its own retry key (client id, seq), and
retries a key (on whatever endpoints are live) until it is acknowledged, the
retry deadline passes or the test stops it. Each key is in the case
description, so afterwards every acknowledged key must be on every node
exactly once, with the case id that was acknowledged, and no key (acked or
not) may appear twice.
"""
import itertools
import threading
import time

from harness import CtlError, wait_for

RETRY_FOR = 60.0     # seconds a writer keeps retrying one key
WRITER_IDS = itertools.count()   # client ids unique within the process


class Writer(threading.Thread):
    def __init__(self, cluster, wid, stop, endpoints=None, timeout_ms=3000,
                 limit=None):
        super().__init__(daemon=True, name="writer%d" % wid)
        self.c = cluster
        self.wid = wid
        self.stop = stop
        self.fixed = endpoints     # None: all live nodes, rotated by wid
        self.timeout_ms = timeout_ms
        self.limit = limit         # stop after this many acked keys
        self.acked = {}            # key -> case id
        self.unknown = set()       # keys given up on (outcome unknown)
        self.times = []            # (started, finished, ok), monotonic
        self.errors = {}           # error code -> count

    def endpoints(self):
        if self.fixed:
            return self.fixed
        live = self.c.live()
        k = self.wid % len(live) if live else 0
        return self.c.endpoints(live[k:] + live[:k])

    def write(self, key, seq):
        return self.c.ctl("--client-id", "w%d" % self.wid, "--seq", str(seq),
                          "case", "report", "--type", "event", "--major",
                          "05", "--minor", "01", "--desc", "load " + key,
                          endpoints=self.endpoints(),
                          timeout_ms=self.timeout_ms)

    def run(self):
        seq = 0
        while not self.stop.is_set():
            if self.limit is not None and len(self.acked) >= self.limit:
                return
            seq += 1
            key = "w%d-%d" % (self.wid, seq)
            give_up = time.monotonic() + RETRY_FOR
            while True:
                t0 = time.monotonic()
                try:
                    r = self.write(key, seq)
                    self.acked[key] = int(r["case"]["case_id"])
                    self.times.append((t0, time.monotonic(), True))
                    break
                except CtlError as e:
                    self.times.append((t0, time.monotonic(), False))
                    self.errors[e.code] = self.errors.get(e.code, 0) + 1
                    if self.stop.is_set() or time.monotonic() > give_up:
                        self.unknown.add(key)
                        break
                    time.sleep(0.05)


class Load:
    """n Writers started together; stop() joins them and merges results."""

    def __init__(self, cluster, n=4, **kw):
        self.stop_event = threading.Event()
        self.writers = [Writer(cluster, next(WRITER_IDS), self.stop_event,
                               **kw) for _ in range(n)]
        for w in self.writers:
            w.start()

    def acked_count(self):
        return sum(len(w.acked) for w in self.writers)

    def wait_acked(self, n, timeout=60.0):
        wait_for("%d acknowledged writes" % n,
                 lambda: self.acked_count() >= n, timeout)

    def acked_after(self, t):
        return sum(1 for w in self.writers for t0, _, ok in w.times
                   if ok and t0 > t)

    def wait_acked_after(self, t, n=5, timeout=60.0):
        """Wait until n writes that started after t were acknowledged."""
        wait_for("%d writes acknowledged after the fault" % n,
                 lambda: self.acked_after(t) >= n, timeout)

    def stop(self):
        self.stop_event.set()
        for w in self.writers:
            w.join(timeout=RETRY_FOR + 30)
            assert not w.is_alive(), "writer %d did not stop" % w.wid
        acked, unknown, errors = {}, set(), {}
        for w in self.writers:
            acked.update(w.acked)
            unknown |= w.unknown
            for code, k in w.errors.items():
                errors[code] = errors.get(code, 0) + k
        return acked, unknown, errors


def cases_by_desc(cluster, node):
    """{description: [case ids]} read locally (stale) on one node."""
    cases = cluster.ctl("--consistency", "stale", "case", "list", "--all",
                        "--page-size", "500", endpoints=node.grpc)["cases"]
    by_desc = {}
    for case in cases:
        by_desc.setdefault(case["description"], []).append(
            int(case["case_id"]))
    return by_desc


def check_no_loss(test, cluster, acked, nodes=None, timeout=60.0):
    """Replicas converge; every acked key is on every node exactly once with
    its acked case id; no description (retry key) appears twice."""
    nodes = nodes or cluster.live()
    digests = cluster.converged(nodes, timeout=timeout)
    test.assertEqual(len(set(digests.values())), 1, digests)
    for n in nodes:
        by_desc = cases_by_desc(cluster, n)
        for key, cid in acked.items():
            test.assertEqual(by_desc.get("load " + key), [cid],
                             "n%d: acked write %s" % (n.id, key))
        for desc, ids in by_desc.items():
            test.assertEqual(len(ids), 1, "n%d: %r applied twice: %s" % (
                n.id, desc, ids))
    return digests


def check_writable(test, cluster, note="after the fault"):
    """A fresh write through any live node is acknowledged (polled)."""
    r = wait_for("a write accepted " + note, lambda: cluster.ctl(
        "case", "report", "--type", "event", "--major", "01", "--minor",
        "01", "--desc", "probe " + note, timeout_ms=3000), 60)
    test.assertIn("case_id", r["case"])
    return r
