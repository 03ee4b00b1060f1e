"""cityctl drill: every shipped scenario passes on a local cluster that the
drill starts itself, and the checks can fail: an impossible RTO target
fails, and a restore without the command archive loses acknowledged
writes, reports RPO > 0 and fails. A drill against a configured cluster
(Drill/Fault) is recorded there and shows up in `drill history`.

Durations are short (--duration) and only the scenario targets, which are
generous, judge times: the machine is shared and noisy.
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile
import unittest

from harness import CITYCTL, CITYOPSD, Cluster, wait_for

HERE = os.path.dirname(os.path.abspath(__file__))
SCENARIOS = os.path.join(HERE, "..", "..", "ops", "drills")
DURATION = os.environ.get("CITYOPS_DRILL_DURATION", "5")


def drill(*args, scenarios=None, endpoints=None, timeout=240):
    """Run cityctl drill run ... --json; return (exit code, report)."""
    out = tempfile.mkdtemp(prefix="cityops-drill-out-")
    cmd = [CITYCTL, "--json"]
    if endpoints:
        cmd += ["--endpoints", endpoints]
    cmd += ["drill", "run"] + list(args) + ["--duration", DURATION,
                                             "--out", out]
    if scenarios:
        cmd += ["--scenarios", scenarios]
    try:
        p = subprocess.Popen(cmd, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE)
        try:
            stdout, stderr = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            # SIGTERM lets the drill stop the nodes it started.
            p.terminate()
            stdout, stderr = p.communicate(timeout=60)
            raise AssertionError("drill %s timed out:\n%s" % (
                args, stderr.decode()[-3000:]))
        try:
            report = json.loads(stdout.decode())
        except ValueError:
            raise AssertionError("drill %s printed no JSON (rc %d):\n%s" % (
                args, p.returncode, stderr.decode()[-3000:]))
        report["_stderr"] = stderr.decode()
        saved = [f for f in os.listdir(out)
                 if f.startswith(report["drill_id"])]
        report["_saved"] = sorted(saved)
        return p.returncode, report
    finally:
        shutil.rmtree(out, ignore_errors=True)


def custom_scenario(tmp, name, base, replace):
    """Write tmp/name.ini: ops/drills/base.ini with keys replaced."""
    with open(os.path.join(SCENARIOS, base + ".ini")) as f:
        lines = f.read().splitlines()
    out = []
    for line in lines:
        key = line.split("=")[0].strip()
        out.append("%s = %s" % (key, replace[key]) if key in replace
                   else line)
    with open(os.path.join(tmp, name + ".ini"), "w") as f:
        f.write("\n".join(out) + "\n")


class DrillTest(unittest.TestCase):
    def check_passed(self, name, rc, r, exact_rpo=True, history=True):
        why = "%s: %s\n%s" % (name, r.get("failures"),
                              r["_stderr"][-2500:])
        self.assertEqual(rc, 0, why)
        self.assertTrue(r["passed"], why)
        self.assertEqual(r["scenario"], name)
        self.assertEqual(r["error"], "", why)
        self.assertGreater(r["acked"], 0, why)
        self.assertIsNotNone(r["rto_write_s"], why)
        self.assertGreater(r["rto_write_s"], 0, why)
        self.assertIsNotNone(r["rto_health_s"], why)
        self.assertIsNotNone(r["rpo_lost"], why)
        if exact_rpo:
            self.assertEqual(r["rpo_lost"], 0, why)
        self.assertEqual(r["unchecked"], 0, why)
        self.assertEqual(r["doubled"], 0, why)
        self.assertTrue(r["converged"], why)
        self.assertEqual(len(r["digest"]), 64, why)
        if history:
            self.assertEqual(r["violations"], 0, why)
            self.assertGreater(r["reads"], 0, why)
        self.assertGreater(r["record_index"], 0, why)
        self.assertEqual(r["_saved"], [r["drill_id"] + ".json",
                                       r["drill_id"] + ".md"])

    def local(self, name, **kw):
        rc, r = drill(name, "--local", "--cityopsd", CITYOPSD)
        self.check_passed(name, rc, r, **kw)
        return r

    def test_process_faults_pass(self):
        for name in ("leader-kill", "follower-kill", "leader-pause"):
            with self.subTest(name):
                r = self.local(name)
                self.assertEqual(r["nodes"], 3)

    def test_site_loss_keeps_quorum_with_five_voters(self):
        r = self.local("site-loss")
        self.assertEqual(r["nodes"], 5)
        # Two voters of one site were killed.
        self.assertEqual(r["fault_detail"].count("@"), 2, r["fault_detail"])

    def test_quorum_loss_recovers_from_the_survivor(self):
        # RPO is measured, not required (see ops/drills/quorum-loss.ini).
        r = self.local("quorum-loss", exact_rpo=False, history=False)
        self.assertGreaterEqual(r["rpo_lost"], 0)

    def test_restores_pass(self):
        r = self.local("restore-from-backup")
        self.assertIn("archive", r["fault_detail"])
        r = self.local("point-in-time-restore")
        self.assertEqual(r["leaked"], 0)

    def test_disk_full_and_rolling_restart_pass(self):
        self.local("disk-full")
        r = self.local("rolling-restart")
        self.assertEqual(len(r["restarts"]), 3)
        for rs in r["restarts"]:
            self.assertIsNotNone(rs["rto_health_s"], rs)
            self.assertIsNotNone(rs["rto_write_s"], rs)

    def test_an_impossible_rto_target_fails_the_drill(self):
        tmp = tempfile.mkdtemp(prefix="cityops-drill-sc-")
        try:
            custom_scenario(tmp, "impossible", "leader-kill",
                            {"rto_write_max_s": "0.0001"})
            rc, r = drill("impossible", "--local", "--cityopsd", CITYOPSD,
                          scenarios=tmp)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        self.assertEqual(rc, 1, r["_stderr"][-2000:])
        self.assertFalse(r["passed"])
        self.assertEqual(r["rpo_lost"], 0)   # only the target was missed
        self.assertTrue(any("RTO write" in f for f in r["failures"]),
                        r["failures"])

    def test_a_restore_without_the_archive_loses_writes_and_fails(self):
        tmp = tempfile.mkdtemp(prefix="cityops-drill-sc-")
        try:
            custom_scenario(tmp, "no-archive", "restore-from-backup",
                            {"use_archive": "false"})
            rc, r = drill("no-archive", "--local", "--cityopsd", CITYOPSD,
                          scenarios=tmp)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        self.assertEqual(rc, 1, r["_stderr"][-2000:])
        self.assertFalse(r["passed"])
        self.assertGreater(r["rpo_lost"], 0, r)
        self.assertTrue(any("RPO" in f for f in r["failures"]),
                        r["failures"])

    def test_a_drill_on_a_configured_cluster_is_in_its_history(self):
        with Cluster(3, extra="[drill]\nallow_faults = true\n") as c:
            c.start()
            c.leader()
            rc, r = drill("leader-pause", endpoints=c.endpoints())
            self.check_passed("leader-pause", rc, r)
            self.assertIn("Drill/Fault pause", r["fault_detail"])
            def recorded():
                h = c.ctl("--consistency", "linearizable", "drill",
                          "history")
                return r["drill_id"] in [d["drill_id"]
                                         for d in h.get("drills", [])]
            wait_for("the drill in drill history", recorded, 15)
            # Scenarios that stop processes refuse to run without --local.
            rc, r = drill("quorum-loss", endpoints=c.endpoints())
            self.assertEqual(rc, 1)
            self.assertIn("needs --local", r["error"])

    def test_drill_list_shows_every_scenario(self):
        p = subprocess.run([CITYCTL, "--json", "drill", "list"],
                           capture_output=True, timeout=30)
        self.assertEqual(p.returncode, 0, p.stderr)
        names = {s["name"] for s in json.loads(p.stdout)["scenarios"]}
        self.assertEqual(names, {
            "leader-kill", "follower-kill", "leader-pause", "site-loss",
            "quorum-loss", "restore-from-backup", "point-in-time-restore",
            "disk-full", "rolling-restart"})


if __name__ == "__main__":
    unittest.main(verbosity=2, argv=sys.argv[:1] + sys.argv[1:])
