"""Membership under load, with real processes: a node joins empty and is
added as a voter while clients write; it catches up to an identical digest.
A second change while one is in flight is refused. Leadership moves on
request, and removing the leader under load loses no acknowledged write.
Only ADMIN may change the membership."""
import sys
import threading
import time
import unittest

from harness import Cluster, CtlError, Node, free_ports, wait_for
from test_failover import Writer


def add_joiner(c, nid):
    """A node that is not in the initial member list: it starts empty."""
    gp, rp = free_ports(2)
    node = Node(c, nid, gp, rp)
    node.write_config(c.nodes)   # lists the current members, not itself
    c.nodes.append(node)
    return node.start()


def acked_keys_present(tc, c, writers, nodes):
    acked = {}
    for w in writers:
        acked.update(w.acked)
    for n in nodes:
        cases = c.ctl("--consistency", "stale", "case", "list", "--all",
                      "--page-size", "500", endpoints=n.grpc)["cases"]
        by_desc = {}
        for case in cases:
            by_desc.setdefault(case["description"], []).append(
                int(case["case_id"]))
        for key, cid in acked.items():
            tc.assertEqual(by_desc.get("load " + key), [cid],
                           "n%d: %s" % (n.id, key))
    return len(acked)


class MembershipTest(unittest.TestCase):
    def test_node_added_under_load_catches_up_and_votes(self):
        with Cluster(3, extra="[raft]\nsnapshot_threshold = 64\n"
                              "snapshot_trailing = 16\n") as c:
            c.start()
            c.leader()
            stop = threading.Event()
            writers = [Writer(c, i, stop) for i in range(3)]
            for w in writers:
                w.start()
            wait_for("some writes", lambda: sum(len(w.acked)
                                                for w in writers) >= 100, 60)
            n4 = add_joiner(c, 4)
            r = c.ctl("cluster", "add", "4", "--raft", n4.raft, "--grpc",
                      n4.grpc, "--as", "voter", "--zone", "site-d",
                      endpoints=c.endpoints(c.nodes[:3]), timeout_ms=30000)
            self.assertIn("added as voter", r["message"])
            time.sleep(1.0)
            stop.set()
            for w in writers:
                w.join(timeout=120)
            st = c.status(c.nodes[0])
            roles = {int(n["id"]): n["member_role"] for n in st["nodes"]}
            self.assertEqual(roles.get(4), "MEMBER_ROLE_VOTER")
            self.assertEqual([n.get("zone") for n in st["nodes"]
                              if int(n["id"]) == 4], ["site-d"])
            self.assertTrue(any(e["kind"] == "add" for e in st["events"]))
            c.converged(c.nodes, timeout=60)
            n = acked_keys_present(self, c, writers, c.nodes)
            print("acknowledged writes: %d" % n)
            # The new node serves and forwards like any other.
            c.ctl("case", "report", "--type", "event", "--major", "01",
                  "--minor", "01", "--desc", "via the new node",
                  endpoints=n4.grpc)

    def test_second_change_while_one_is_in_flight_is_refused(self):
        with Cluster(3) as c:
            c.start()
            c.leader()
            gp, rp = free_ports(2)
            results = {}

            def slow_add():
                # Nobody listens there: the catch-up never completes.
                try:
                    results["add"] = c.ctl(
                        "cluster", "add", "9", "--raft", "127.0.0.1:%d" % rp,
                        "--grpc", "127.0.0.1:%d" % gp, "--as", "voter",
                        timeout_ms=60000)
                except CtlError as e:
                    results["add"] = e
            t = threading.Thread(target=slow_add, daemon=True)
            t.start()
            wait_for("node 9 listed as a spare being caught up", lambda: any(
                int(n["id"]) == 9 for n in c.status()["nodes"]), 30)
            with self.assertRaises(CtlError) as cm:
                c.ctl("cluster", "remove", "3")
            self.assertEqual(cm.exception.code, "FAILED_PRECONDITION",
                             cm.exception.message)
            self.assertIn("in flight", cm.exception.message)
            t.join(timeout=120)
            self.assertIsInstance(results.get("add"), CtlError)
            # Once it gave up, changes are accepted again.
            wait_for("a change accepted", lambda: c.ctl(
                "cluster", "remove", "9"), 30)

    def test_transfer_then_remove_the_leader_under_load(self):
        with Cluster(3) as c:
            c.start()
            old = c.leader()
            target = [n for n in c.nodes if n is not old][0]
            c.ctl("cluster", "transfer-leader", str(target.id))
            self.assertIs(c.leader(), target)
            stop = threading.Event()
            writers = [Writer(c, i, stop) for i in range(3)]
            for w in writers:
                w.start()
            wait_for("some writes", lambda: sum(len(w.acked)
                                                for w in writers) >= 30, 60)
            c.ctl("cluster", "remove", str(target.id),
                  endpoints=c.endpoints([n for n in c.nodes
                                         if n is not target]),
                  timeout_ms=20000)
            rest = [n for n in c.nodes if n is not target]
            new = c.leader(among=rest, timeout=30)
            self.assertNotEqual(new.id, target.id)
            time.sleep(1.0)
            stop.set()
            for w in writers:
                w.join(timeout=120)
            st = c.status(rest[0])
            self.assertEqual(sorted(int(n["id"]) for n in st["nodes"]),
                             sorted(n.id for n in rest))
            c.converged(rest, timeout=60)
            acked_keys_present(self, c, writers, rest)

    def test_membership_changes_need_admin(self):
        with Cluster(3) as c:
            c.start()
            c.leader()
            with self.assertRaises(CtlError) as cm:
                c.ctl("--role", "shift-leader", "cluster", "remove", "2")
            self.assertEqual(cm.exception.code, "PERMISSION_DENIED")
            with self.assertRaises(CtlError) as cm:
                c.ctl("cluster", "remove", "42")
            self.assertEqual(cm.exception.code, "NOT_FOUND")
            self.assertEqual(len(c.status()["nodes"]), 3)


if __name__ == "__main__":
    unittest.main(verbosity=2, argv=sys.argv[:1])
