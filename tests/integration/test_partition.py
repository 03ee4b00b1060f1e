"""Network partition through the Raft proxy (netproxy.py): the leader is cut
off from both followers while clients keep writing. The majority elects a new
leader and keeps acknowledging writes; the isolated old leader steps down and
acknowledges nothing sent to it after the cut (those writes fail with
UNAVAILABLE or DEADLINE_EXCEEDED); after the partition heals the old leader
follows the new one, every write acknowledged anywhere is present exactly
once on every node, and a retry of each failed write's key is applied once."""
import sys
import threading
import time
import unittest

from harness import Cluster, CtlError, wait_for
from test_faults import local_views, one_agreed_leader
from workload import Load, cases_by_desc, check_no_loss, check_writable


class IsolatedWriter(threading.Thread):
    """Writes only to one node, one retry key (client id) per write, one
    attempt each: records (key, invoked, completed, case id or error)."""

    def __init__(self, cluster, node, stop):
        super().__init__(daemon=True, name="isolated-writer")
        self.c = cluster
        self.node = node
        self.stop = stop
        self.ops = []

    def run(self):
        i = 0
        while not self.stop.is_set():
            i += 1
            key = "iso-%d" % i
            t0 = time.monotonic()
            try:
                r = write_key(self.c, key, self.node.grpc, 4000)
                res = int(r["case"]["case_id"])
            except CtlError as e:
                res = e.code
            self.ops.append((key, t0, time.monotonic(), res))
            time.sleep(0.05)


def write_key(c, key, endpoints, timeout_ms):
    return c.ctl("--client-id", key, "--seq", "1", "case", "report",
                 "--type", "event", "--major", "05", "--minor", "01",
                 "--desc", "load " + key, endpoints=endpoints,
                 timeout_ms=timeout_ms)


class PartitionTest(unittest.TestCase):
    def test_isolated_leader_acknowledges_nothing_and_loses_nothing(self):
        with Cluster(3, proxied=True) as c:
            c.start()
            old = c.leader()
            others = [n for n in c.nodes if n is not old]
            _, term0 = wait_for("one agreed leader",
                                lambda: one_agreed_leader(c, c.nodes))
            load = Load(c)
            stop_iso = threading.Event()
            iso = IsolatedWriter(c, old, stop_iso)
            iso.start()
            load.wait_acked(20)
            wait_for("acked writes through the leader", lambda: any(
                isinstance(op[3], int) for op in iso.ops), 30)
            self.assertTrue(c.net.pairs())   # Raft really goes via proxy
            c.net.isolate(old.id)
            t_cut = time.monotonic()
            self.assertEqual([p for p in c.net.pairs() if old.id in p], [])

            # The majority elects a new leader in a higher term and writes.
            new_id, term1 = wait_for("a new leader in the majority",
                                     lambda: one_agreed_leader(c, others), 30)
            self.assertNotEqual(new_id, old.id)
            self.assertGreater(term1, term0)
            load.wait_acked_after(t_cut, 10)
            # The isolated old leader steps down (no contact with a majority).
            wait_for("the isolated node to step down", lambda: local_views(
                c, [old])[old.id]["state"] != "RAFT_STATE_LEADER", 30)
            wait_for("writes to the isolated node to fail", lambda: sum(
                1 for op in iso.ops if op[1] > t_cut
                and not isinstance(op[3], int)) >= 3, 60)

            c.net.heal()
            t_heal = time.monotonic()
            lid, term2 = wait_for("all three agree on one leader",
                                  lambda: one_agreed_leader(c, c.nodes), 30)
            self.assertGreaterEqual(term2, term1)
            load.wait_acked_after(t_heal, 10)
            stop_iso.set()
            iso.join(timeout=60)
            acked, unknown, errors = load.stop()
            print("load: acked %d, unknown %d, errors %s; proxy %s" % (
                len(acked), len(unknown), errors, c.net.stats))

            # Nothing invoked after the cut was acknowledged by the old
            # leader alone; its failures are "unknown outcome" codes.
            cut_ops = [op for op in iso.ops if t_cut < op[1] and op[2] < t_heal]
            print("isolated node: %d writes during the cut: %s" % (
                len(cut_ops), sorted({str(op[3]) for op in cut_ops})))
            self.assertTrue(cut_ops)
            for key, _, _, res in cut_ops:
                self.assertNotIsInstance(res, int, "%s acked by the isolated "
                                         "old leader: case %s" % (key, res))
                self.assertIn(res, ("UNAVAILABLE", "DEADLINE_EXCEEDED"), key)
            self.assertGreater(c.net.stats["refused"]
                               + c.net.stats["aborted"], 0)

            # Every acknowledged write (load and isolated writer) is present
            # exactly once everywhere; failed keys are applied at most once.
            iso_acked = {key: res for key, _, _, res in iso.ops
                         if isinstance(res, int)}
            acked.update(iso_acked)
            check_no_loss(self, c, acked, c.nodes)
            # Retrying each failed key now is applied exactly once: the retry
            # returns the case a lost-but-applied attempt made, if any.
            failed = [key for key, _, _, res in iso.ops
                      if not isinstance(res, int)]
            before = cases_by_desc(c, c.nodes[0])
            for key in failed:
                r = wait_for("retry of " + key, lambda: write_key(
                    c, key, c.endpoints(), 3000), 30)
                cid = int(r["case"]["case_id"])
                if "load " + key in before:
                    self.assertEqual(before["load " + key], [cid], key)
                acked[key] = cid
            check_no_loss(self, c, acked, c.nodes)
            check_writable(self, c, "after the heal")


if __name__ == "__main__":
    unittest.main(verbosity=2, argv=sys.argv[:1])
