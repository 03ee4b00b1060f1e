"""A full store (LMDB map full: the same path as a full disk) on the
leader: it refuses writes with a clear status, hands leadership to a
healthy voter, and the cluster keeps taking writes; nothing is corrupted or
lost. Restarted with room to grow, the node replays its log from the entry
it stopped at and converges to the same digest as the others."""
import sys
import time
import unittest

from harness import Cluster, wait_for
from workload import Load, check_no_loss


def store_error(c, node):
    st = c.ctl("cluster", "status", "--local", endpoints=node.grpc)
    return st["nodes"][0].get("store_error", "")


class DiskFullTest(unittest.TestCase):
    def test_full_leader_steps_down_and_recovers_without_loss(self):
        with Cluster(3) as c:
            small = c.nodes[0]
            small.write_config(c.nodes, "[storage]\nmap_size_mb = 1\n")
            c.start()
            c.leader()
            c.ctl("cluster", "transfer-leader", str(small.id))
            self.assertIs(c.leader(), small)
            load = Load(c, n=3)
            wait_for("the small store to fill", lambda: store_error(c, small),
                     120, 0.5)
            err = store_error(c, small)
            self.assertIn("MDB_MAP_FULL", err)
            self.assertTrue(small.alive())
            # A healthy voter takes over and writes go on.
            t_full = time.monotonic()
            new = c.leader(among=[n for n in c.nodes if n is not small],
                           timeout=60)
            self.assertIsNot(new, small)
            load.wait_acked_after(t_full, 20, timeout=60)
            acked, unknown, errors = load.stop()
            print("acked %d, unknown %d, errors %s" % (len(acked),
                                                       len(unknown), errors))
            with open(small.log, errors="replace") as f:
                self.assertIn("MDB_MAP_FULL", f.read())
            # Space returns: restart with a bigger map; it catches up.
            small.stop()
            small.write_config(c.nodes, "[storage]\nmap_size_mb = 256\n")
            small.start()
            check_no_loss(self, c, acked, c.nodes, timeout=120)
            self.assertEqual(store_error(c, small), "")


if __name__ == "__main__":
    unittest.main(verbosity=2, argv=sys.argv[:1])
