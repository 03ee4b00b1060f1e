"""Disaster recovery with real processes: online backup -> verify ->
restore into a new one-node cluster (digest equal, nothing acknowledged
before the backup missing); the command archive brings the restore up to
the last acknowledged write (RPO 0) or back to a chosen index/time;
restore refuses a used data dir and a damaged file; quorum-loss recovery
from the most advanced survivor with a reset survivor added back."""
import json
import os
import subprocess
import sys
import time
import unittest

from harness import CITYCTL, Cluster, CtlError, Node, free_ports, wait_for
from workload import Load, cases_by_desc, check_no_loss, check_writable


def ctl_raw(*args, endpoints=None):
    cmd = [CITYCTL, "--json"] + (["--endpoints", endpoints]
                                 if endpoints else []) + list(args)
    p = subprocess.run(cmd, capture_output=True, timeout=300)
    return p.returncode, p.stdout.decode(), p.stderr.decode()


def restored_node(c, data_dir, nid=9):
    """A node of cluster c's directory, on fresh ports, over @data_dir."""
    g, r = free_ports(2)
    n = Node(c, nid, g, r)
    n.dir = data_dir
    n.write_config([n])
    c.nodes.append(n)   # stopped (and checked) with the cluster
    return n


def report(c, desc, node=None):
    return c.ctl("case", "report", "--type", "event", "--major", "05",
                 "--minor", "01", "--desc", desc,
                 endpoints=node.grpc if node else None)


class DrTest(unittest.TestCase):
    def test_backup_restore_and_point_in_time(self):
        with Cluster(3) as c:
            archive = os.path.join(c.dir, "archive")
            for n in c.nodes:
                n.write_config(c.nodes, "[backup]\narchive_dir = %s/n%d\n"
                               % (archive, n.id))
            c.start()
            c.leader()

            def one_id():
                ids = {n.get("cluster_id") for n in c.status()["nodes"]}
                return ids.pop() if len(ids) == 1 and "" not in ids else None
            cluster_id = wait_for("one cluster id on every node", one_id, 20)

            load = Load(c, n=3)
            load.wait_acked(60)
            backup = os.path.join(c.dir, "b1.cobak")
            out = c.ctl("backup", "create", "--out", backup, timeout_ms=60000)
            binfo = out["info"]
            self.assertEqual(binfo["cluster_id"], cluster_id)
            b_index = int(binfo["applied_index"])
            load.wait_acked(load.acked_count() + 30)
            acked_mid, _, _ = load.stop()
            lead = c.leader()
            mark_index = int(c.ctl("cluster", "status", "--local",
                                   endpoints=lead.grpc)["nodes"][0][
                                       "applied_index"])
            load = Load(c, n=3)
            load.wait_acked(30)
            acked_late, _, _ = load.stop()
            self.assertTrue(acked_late)
            acked = dict(acked_mid)
            acked.update(acked_late)
            v = c.ctl("backup", "verify", backup)
            self.assertEqual(v["status"], "ok")
            listed = c.ctl("backup", "list", endpoints=c.nodes[0].grpc)
            self.assertTrue(listed["archive"]["dir"].startswith(archive))
            self.assertGreater(int(listed["archive"]["last_index"]), b_index,
                               listed)
            check_no_loss(self, c, acked)
            src_cases = cases_by_desc(c, c.nodes[0])

            # A damaged copy is refused, before anything is written.
            bad = os.path.join(c.dir, "bad.cobak")
            data = bytearray(open(backup, "rb").read())
            data[len(data) // 2] ^= 0x40
            open(bad, "wb").write(bytes(data))
            rc, out, _ = ctl_raw("backup", "verify", bad)
            self.assertEqual(rc, 1, out)
            rc, out, _ = ctl_raw("backup", "restore", bad, "--data-dir",
                                 os.path.join(c.dir, "r-bad"))
            self.assertEqual(rc, 1, out)
            self.assertFalse(os.path.exists(
                os.path.join(c.dir, "r-bad", "store", "data.mdb")))
            # A used data dir is refused and left alone.
            rc, out, _ = ctl_raw("backup", "restore", backup, "--data-dir",
                                 c.nodes[0].dir)
            self.assertEqual(rc, 1, out)
            self.assertIn("refusing", out)

            # Everything acknowledged, from the backup plus the archive of
            # one node, on a new one-node cluster.
            for n in c.nodes:
                n.stop()
            d_full = os.path.join(c.dir, "r-full")
            rc, out, err = ctl_raw("backup", "restore", backup, "--data-dir",
                                   d_full, "--archive",
                                   os.path.join(archive, "n1"),
                                   "--to-time", "2100-01-01T00:00:00Z")
            self.assertEqual(rc, 0, out + err)
            r = restored_node(c, d_full).start()
            c.leader(among=[r])
            st = c.status(r)["nodes"][0]
            self.assertTrue(st["restored_from"].startswith(cluster_id + "@"))
            wait_for("a new cluster id", lambda: c.status(r)["nodes"][0].get(
                "cluster_id"), 20)
            self.assertNotEqual(c.status(r)["nodes"][0]["cluster_id"],
                                cluster_id)
            by_desc = cases_by_desc(c, r)
            for key, cid in acked.items():
                self.assertEqual(by_desc.get("load " + key), [cid], key)
            # every case of the source, nothing more (the new cluster's own
            # first commands change the digest, so compare the cases)
            self.assertEqual(by_desc, src_cases)
            check_writable(self, c, "on the restored cluster")
            # A member added to the restored cluster gets the restored state
            # (a snapshot), not just the new cluster's log.
            g, rp = free_ports(2)
            j = Node(c, 11, g, rp)
            j.write_config([r])
            c.nodes.append(j)
            j.start()
            c.ctl("cluster", "add", "11", "--raft", j.raft, "--grpc", j.grpc,
                  endpoints=r.grpc, timeout_ms=60000)
            check_no_loss(self, c, acked, [r, j])
            self.assertEqual(cases_by_desc(c, j), cases_by_desc(c, r))
            j.stop()
            r.stop()

            # Point in time: the backup plus the archive up to mark_index
            # holds what was acknowledged by then, and nothing later.
            d_pit = os.path.join(c.dir, "r-pit")
            rc, out, err = ctl_raw("backup", "restore", backup, "--data-dir",
                                   d_pit, "--archive",
                                   os.path.join(archive, "n2"),
                                   "--to-index", str(mark_index))
            self.assertEqual(rc, 0, out + err)
            p = restored_node(c, d_pit, nid=10).start()
            c.leader(among=[p])
            by_desc = cases_by_desc(c, p)
            for key, cid in acked_mid.items():
                self.assertEqual(by_desc.get("load " + key), [cid], key)
            for key in acked_late:
                self.assertNotIn("load " + key, by_desc)
            # The backup alone: exactly its index's state.
            d_b = os.path.join(c.dir, "r-backup")
            rc, out, err = ctl_raw("backup", "restore", backup, "--data-dir",
                                   d_b)
            self.assertEqual(rc, 0, out + err)

    def test_quorum_loss_recover(self):
        with Cluster(5) as c:
            c.start()
            c.leader()
            # A cluster with a leader is not recovered.
            rc, out, _ = ctl_raw("recover", "--yes",
                                 endpoints=c.endpoints())
            self.assertEqual(rc, 1, out)
            self.assertIn("leader", json.loads(out)["refused"])
            load = Load(c, n=3)
            load.wait_acked(40)
            acked, _, _ = load.stop()
            c.converged()
            lead = c.leader()
            lost = [lead] + [n for n in c.nodes if n is not lead][:2]
            for n in lost:
                n.kill()
            survivors = [n for n in c.nodes if n not in lost]
            time.sleep(2.5)   # election timeouts pass: nobody leads
            rc, out, _ = ctl_raw("recover", endpoints=c.endpoints())
            self.assertEqual(rc, 0, out)
            plan = json.loads(out)
            verdicts = sorted(x["verdict"] for x in plan["nodes"])
            self.assertEqual(verdicts, ["lost", "lost", "lost",
                                        "recover-from", "reset"])
            self.assertFalse(plan["executed"])
            rc, out, err = ctl_raw("recover", "--yes",
                                   endpoints=c.endpoints())
            self.assertEqual(rc, 0, out + err)
            new = c.leader(among=survivors, timeout=60)
            self.assertIn(new, survivors)
            for n in survivors:
                self.assertTrue(n.alive())   # restarted in place: same PID
            check_no_loss(self, c, acked, survivors)
            check_writable(self, c, "after recovery")
            st = c.status(new)
            members = {int(x["id"]) for x in st["nodes"]}
            self.assertEqual(members, {n.id for n in survivors})
            kinds = [e.get("kind") for e in st.get("events", [])]
            self.assertIn("recover", kinds)
            reset = [n for n in survivors if n is not new][0]
            self.assertTrue(any(d.startswith("pre-recover-")
                                for d in os.listdir(reset.dir)))


if __name__ == "__main__":
    unittest.main(verbosity=2, argv=sys.argv[:1])
