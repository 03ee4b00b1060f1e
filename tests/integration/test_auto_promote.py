"""Standby auto-promotion with real processes: 3 voters in zones a, b, c and a
standby in zone a. When the zone-a voter has been unreachable for
auto_promote_ms, the leader promotes the standby of the same zone, then
demotes the lost voter; each decision is recorded and shown by cluster
status; writes go on throughout and nothing acknowledged is lost."""
import sys
import time
import unittest

from harness import Cluster, wait_for
from workload import Load, check_no_loss

ZONES = {1: "site-a", 2: "site-b", 3: "site-c", 4: "site-a"}


def write_configs(c):
    extra = "auto_promote_ms = 1500\none_voter_per_zone = true\n"
    for node in c.nodes:
        lines = []
        for m in c.nodes:
            role = "standby" if m.id == 4 else "voter"
            lines.append("member = %d %s %s %s %s" % (
                m.id, m.member_raft, m.grpc, role, ZONES[m.id]))
        node.write_config([], "\n".join(lines) + "\n" + extra)


def roles(c, node):
    st = c.status(node)
    return {int(n["id"]): n.get("member_role") for n in st["nodes"]}, st


class AutoPromoteTest(unittest.TestCase):
    def test_lost_voter_is_replaced_by_the_standby_of_its_zone(self):
        with Cluster(4) as c:
            write_configs(c)
            c.start()
            leader = c.leader()
            r, st = roles(c, leader)
            self.assertEqual(r[4], "MEMBER_ROLE_STANDBY")
            self.assertEqual([n.get("zone") for n in st["nodes"]
                              if int(n["id"]) == 4], ["site-a"])
            # Lose the zone-a voter, node 1; not while it leads, so that the
            # test is about promotion, not election.
            victim = c.nodes[0]
            if leader is victim:
                c.ctl("cluster", "transfer-leader", "2")
                self.assertIsNot(c.leader(), victim)
            load = Load(c, n=2)
            load.wait_acked(20)
            t_kill = time.monotonic()
            victim.kill()
            survivors = [n for n in c.nodes if n is not victim]

            def promoted():
                r, _ = roles(c, survivors[0])
                return (r.get(4) == "MEMBER_ROLE_VOTER" and
                        r.get(victim.id) == "MEMBER_ROLE_STANDBY")
            wait_for("standby 4 promoted and %d demoted" % victim.id,
                     promoted, 60, 0.5)
            print("replaced after %.1f s" % (time.monotonic() - t_kill))
            _, st = roles(c, survivors[0])
            kinds = [e["kind"] for e in st.get("events", [])]
            self.assertIn("promote", kinds)
            self.assertIn("demote", kinds)
            load.wait_acked_after(t_kill, 10, 60)
            acked, _, _ = load.stop()
            check_no_loss(self, c, acked, survivors, timeout=90)
            # The lost node comes back as a standby and catches up.
            victim.start()
            check_no_loss(self, c, acked, c.nodes, timeout=90)
            r, _ = roles(c, survivors[0])
            self.assertEqual(r[victim.id], "MEMBER_ROLE_STANDBY")


if __name__ == "__main__":
    unittest.main(verbosity=2, argv=sys.argv[:1])
