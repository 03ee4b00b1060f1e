"""Federation between a city cluster (3 nodes, tier city-a) and a county
cluster (1 node, tier county-b) over mutual TLS on loopback, with real
processes: key tasks go down and feedback comes up; the county's signed
audit heads go up and the city keeps them as a witness; the city leader is
killed mid-stream and the county is down for a while, and every message is
still applied exactly once, in order; a peer whose certificate comes from
another CA, or names a tier that is not linked, is refused."""
import json
import os
import subprocess
import sys
import time
import unittest

from harness import Cluster, CtlError, free_ports, wait_for

TOP = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
FED_CERTS = os.path.join(TOP, "ops", "fed-certs")


def certs(dir, *tiers):
    subprocess.run([FED_CERTS, dir] + list(tiers), check=True,
                   capture_output=True)


def audit_key(path):
    subprocess.run(["openssl", "genpkey", "-algorithm", "ed25519", "-out",
                    path], check=True, capture_output=True)
    os.chmod(path, 0o600)


def fed_extra(tier, port, cdir, links, key=None):
    lines = ["[federation]", "tier_id = %s" % tier,
             "listen = 127.0.0.1:%d" % port,
             "ca = %s/ca.pem" % cdir, "cert = %s/%s.pem" % (cdir, tier),
             "key = %s/%s.key" % (cdir, tier), "retry_ms = 200"]
    lines += ["link = %s" % link for link in links]
    if key:
        lines += ["[audit]", "key_file = %s" % key, "checkpoint_every = 0"]
    return "\n".join(lines) + "\n"


def tasks(c, node=None):
    return c.ctl("fed", "tasks",
                 endpoints=node.grpc if node else None).get("tasks", [])


def links(c, node):
    return c.ctl("fed", "links", endpoints=node.grpc).get("links", [])


class FederationTest(unittest.TestCase):
    def setUp(self):
        self.city = Cluster(3)
        self.county = Cluster(1)
        self.cdir = os.path.join(self.city.dir, "certs")
        certs(self.cdir, "city-a", "county-b", "county-c")
        self.city_fed = free_ports(3)
        self.county_fed = free_ports(1)[0]
        city_eps = ",".join("127.0.0.1:%d" % p for p in self.city_fed)
        for n, port in zip(self.city.nodes, self.city_fed):
            n.write_config(self.city.nodes, fed_extra(
                "city-a", port, self.cdir,
                ["county-b child 127.0.0.1:%d" % self.county_fed]))
        key = os.path.join(self.county.dir, "audit.pem")
        audit_key(key)
        self.county.nodes[0].write_config(self.county.nodes, fed_extra(
            "county-b", self.county_fed, self.cdir,
            ["city-a parent %s" % city_eps], key))
        self.city_eps = city_eps

    def tearDown(self):
        try:
            self.county.close()
        finally:
            self.city.close()

    def assign(self, title, endpoints=None):
        """Assign with a retry key, retried until acknowledged (across a
        leader change): applied once whatever the number of tries."""
        self.seq = getattr(self, "seq", 0) + 1
        seq = self.seq

        def once():
            try:
                return self.city.ctl(
                    "--client-id", "fedtest", "--seq", str(seq), "fed",
                    "assign", "--title", title, "--deadline",
                    "2099-01-01T00:00:00Z", "--child", "county-b",
                    endpoints=endpoints)
            except CtlError:
                return None
        return wait_for("task %r acknowledged" % title, once, 30,
                        0.2)["task_id"]

    def test_tasks_down_feedback_up_exactly_once(self):
        city, county = self.city, self.county
        city.start()
        county.start()
        city.leader()
        county.leader()
        cnode = county.nodes[0]

        # Key tasks down, in order.
        sent = [self.assign("task %d" % i) for i in range(5)]
        wait_for("5 tasks at the county",
                 lambda: len(tasks(county)) == 5, 30, 0.2)
        got = [t["task"]["task_id"] for t in tasks(county)]
        self.assertEqual(got, sent)
        self.assertEqual({t["task"]["origin_tier"] for t in tasks(county)},
                         {"city-a"})

        # Feedback up.
        county.ctl("fed", "feedback", sent[0], "--status", "done",
                   "--note", "fixed")

        def fed_back():
            for t in tasks(city):
                if t["task"]["task_id"] == sent[0]:
                    return [f for f in t.get("feedback", [])
                            if f["tier_id"] == "county-b" and
                            f["status"] == "done"]
            return None
        wait_for("the county's feedback at the city", fed_back, 30, 0.2)

        # Kill -9 the city leader mid-stream: the new leader resends what
        # was not acknowledged; the county applies each once.
        lead = city.leader()
        others = [n for n in city.nodes if n is not lead]
        more = []
        for i in range(10):
            if i == 5:
                lead.kill()
            more.append(self.assign(
                "burst %d" % i, endpoints=city.endpoints(
                    others if i >= 5 else city.nodes)))
        lead.start()
        # The county is down for a while: the backlog grows, then drains.
        cnode.stop()
        late = [self.assign("while down %d" % i) for i in range(10)]
        lead2 = city.leader()
        st = [l for l in links(city, lead2)
              if l["link"]["tier_id"] == "county-b"][0]
        self.assertGreaterEqual(int(st.get("backlog", 0)), 10)
        t_up = time.monotonic()
        cnode.start()
        want = sent + more + late
        wait_for("every task once at the county",
                 lambda: len(tasks(county)) == len(want), 60, 0.2)
        drain = time.monotonic() - t_up
        got = [t["task"]["task_id"] for t in tasks(county)]
        self.assertEqual(sorted(got), sorted(want))
        self.assertEqual(len(set(got)), len(got))
        wait_for("no backlog", lambda: int([
            l for l in links(city, city.leader())
            if l["link"]["tier_id"] == "county-b"][0].get("backlog", 0)) == 0,
            30, 0.2)
        print("drained 10 messages after the county restarted in %.2f s"
              % drain)

        # Signed audit heads go up and the city witnesses them.
        county.ctl("--role", "auditor", "audit", "checkpoint")
        wait_for("the county's head at the city", lambda: int([
            l for l in links(city, city.leader())
            if l["link"]["tier_id"] == "county-b"][0].get(
                "inbox_through", 0)) >= 2, 30, 0.2)

    def test_wrong_certificates_are_refused(self):
        city = self.city
        city.start()
        city.leader()
        # county-c: a certificate from the right CA, but not linked.
        # county-b from another CA: the TLS handshake fails.
        other = os.path.join(self.city.dir, "other-ca")
        certs(other, "county-b")
        rogue = Cluster(1)
        try:
            key = os.path.join(rogue.dir, "audit.pem")
            audit_key(key)
            port = free_ports(1)[0]
            rogue.nodes[0].write_config(rogue.nodes, fed_extra(
                "county-b", port, other,
                ["city-a parent %s" % self.city_eps], key))
            rogue.start()
            rogue.leader()
            rogue.ctl("--role", "auditor", "audit", "checkpoint")
            wait_for("the rogue's delivery to fail", lambda: [
                l for l in links(rogue, rogue.nodes[0])
                if l.get("last_error")], 30, 0.2)
            rogue.nodes[0].stop()
            unlinked = Cluster(1)
            try:
                key2 = os.path.join(unlinked.dir, "audit.pem")
                audit_key(key2)
                unlinked.nodes[0].write_config(unlinked.nodes, fed_extra(
                    "county-c", free_ports(1)[0], self.cdir,
                    ["city-a parent %s" % self.city_eps], key2))
                unlinked.start()
                unlinked.leader()
                unlinked.ctl("--role", "auditor", "audit", "checkpoint")

                def refused():
                    for l in links(unlinked, unlinked.nodes[0]):
                        if "PERMISSION_DENIED" in l.get("last_error", ""):
                            return l
                    return None
                wait_for("county-c refused as not linked", refused, 30, 0.2)
            finally:
                unlinked.close()
            logs = "".join(n.tail(400) for n in city.nodes)
            self.assertIn("refused a delivery", logs)
            self.assertIn("county-c", logs)
        finally:
            rogue.close()


if __name__ == "__main__":
    unittest.main(verbosity=2, argv=sys.argv[:1])
