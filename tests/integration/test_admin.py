"""The city's rules on a real 3-node cluster, through cityctl admin: the
shipped ops/config/default.json applies as one version that every replica
serves; an export re-applies as the next version with the same content;
non-admins, malformed files and invalid items are refused with the version
unchanged; the one-line commands change one item each."""
import json
import os
import subprocess
import unittest

from harness import CITYCTL, Cluster, CtlError, wait_for

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT = os.path.join(HERE, "..", "..", "ops", "config", "default.json")

# ConfigChange member -> ConfigSnapshot list
KINDS = {"org_unit": "org_units", "department": "departments",
         "staff": "staff", "category": "categories", "grid": "grids",
         "office_hours": "office_hours", "calendar_day": "calendar",
         "eval_weights": "eval_weights"}


def content(snap):
    """A snapshot without its version stamps."""
    return {k: v for k, v in snap.items()
            if k not in ("version", "applied_index")}


class AdminTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.c = Cluster(3)
        cls.c.start()
        cls.c.leader()
        with open(DEFAULT) as f:
            cls.default = json.load(f)
        before = cls.get()["version"]
        reply = cls.c.ctl("admin", "apply", DEFAULT, "--note", "defaults")
        cls.applied = reply
        cls.before = before

    @classmethod
    def tearDownClass(cls):
        cls.c.close()

    @classmethod
    def get(cls, node=None):
        if node is None:
            return cls.c.ctl("admin", "get")
        return cls.c.ctl("admin", "get", "--consistency", "stale",
                         endpoints=node.grpc)

    @staticmethod
    def same(a, b):
        return a["version"] == b["version"] and content(a) == content(b)

    def path(self, name):
        return os.path.join(self.c.dir, name)

    def write(self, name, text):
        p = self.path(name)
        with open(p, "w") as f:
            f.write(text)
        return p

    def assert_refused(self, args, code, rc, *needles):
        version = self.get()["version"]
        with self.assertRaises(CtlError) as cm:
            self.c.ctl(*args)
        e = cm.exception
        self.assertEqual((e.code, e.rc), (code, rc), e.message)
        for n in needles:
            self.assertIn(n, e.message)
        self.assertEqual(self.get()["version"], version)
        return e

    def test_default_config_is_one_version_that_every_replica_serves(self):
        self.assertEqual(self.applied["version"], self.before + 1)
        self.assertEqual(self.applied["changed"],
                         len(self.default["changes"]))
        # Every item of the file is there, counted per kind.
        snap = self.get()
        for member, plural in KINDS.items():
            want = sum(1 for ch in self.default["changes"] if member in ch)
            self.assertGreaterEqual(len(snap.get(plural) or []), want, plural)
        self.assertEqual(snap["public_settings"]["county_code"], "450102")
        self.assertEqual(len(snap["categories"]), sum(
            1 for ch in self.default["changes"] if "category" in ch))
        # Stale reads on each node converge on the same content.
        want = content(self.get())
        for n in self.c.nodes:
            wait_for("n%d serving the configuration" % n.id,
                     lambda: content(self.get(n)) == want, 20, 0.2)
        # The text form shows the summary and the tables.
        p = subprocess.run([CITYCTL, "--endpoints", self.c.endpoints(),
                            "admin", "get"], capture_output=True, text=True)
        self.assertEqual(p.returncode, 0, p.stderr)
        for s in ("configuration version", "DEPARTMENTS", "STAFF",
                  "CATEGORIES", "上水井盖", "井盖缺失", "2eh"):
            self.assertIn(s, p.stdout)

    def test_export_reapplies_as_the_next_version_with_the_same_content(self):
        out = self.path("export.json")
        exported = self.c.ctl("admin", "export", "--out", out)
        before = self.get()
        self.assertEqual(exported["version"], before["version"])
        with open(out) as f:
            doc = json.load(f)
        self.assertEqual(content(doc), content(before))
        items = sum(len(doc.get(k) or []) for k in KINDS.values())
        items += doc.get("public_settings") is not None
        reply = self.c.ctl("admin", "apply", out, "--note", "re-import")
        self.assertEqual(reply["version"], before["version"] + 1)
        self.assertEqual(reply["changed"], items)
        after = self.get()
        self.assertEqual(after["version"], before["version"] + 1)
        self.assertEqual(content(after), content(before))
        hist = self.c.ctl("admin", "history")["versions"]
        self.assertEqual(hist[-1]["version"], after["version"])
        self.assertEqual(hist[-1]["note"], "re-import")
        for n in self.c.nodes:
            wait_for("n%d at version %d" % (n.id, after["version"]),
                     lambda: self.same(self.get(n), after), 20, 0.2)

    def test_roles_other_than_admin_are_refused(self):
        for role in ("inspector", "shift-leader", "auditor"):
            self.assert_refused(["--role", role, "admin", "apply", DEFAULT],
                                "PERMISSION_DENIED", 1)
        self.assert_refused(["--role", "dispatcher", "admin", "holiday",
                             "2026-12-30"], "PERMISSION_DENIED", 1)

    def test_malformed_files_are_refused_before_sending_naming_the_path(self):
        bad = self.write("bad-type.json", json.dumps({"changes": [
            {"calendar_day": {"date": "2026-12-01"}},
            {"category": {"type": "EVENT", "major_code": "06",
                          "minor_code": "09", "name": "x",
                          "urgent": "yes"}}]}))
        self.assert_refused(["admin", "apply", bad], "USAGE", 2,
                            "$.changes[1].category.urgent")
        bad = self.write("bad-field.json", json.dumps({"changes": [
            {"staff": {"id": "a", "rols": ["ROLE_ADMIN"]}}]}))
        self.assert_refused(["admin", "apply", bad], "USAGE", 2,
                            "$.changes[0].staff.rols", "unknown field")
        bad = self.write("bad-enum.json", json.dumps({"changes": [
            {"category": {"conditions": [{"limits": [
                {"unit": "FORTNIGHTS"}]}]}}]}))
        self.assert_refused(["admin", "apply", bad], "USAGE", 2,
                            "$.changes[0].category.conditions[0].limits[0]"
                            ".unit")
        bad = self.write("bad-syntax.json", '{"changes": [\n  {"staff": }\n')
        self.assert_refused(["admin", "apply", bad], "USAGE", 2,
                            "bad-syntax.json:2:")
        self.assert_refused(["admin", "apply", self.path("missing.json")],
                            "USAGE", 2, "missing.json")

    def test_invalid_items_are_refused_whole_with_the_version_unchanged(self):
        # A valid change first: the batch is refused whole, so it must not
        # appear either.
        ok = {"calendar_day": {"date": "2026-12-25", "workday": False,
                               "note": "must not be applied"}}
        bad = self.write("overlap.json", json.dumps({"changes": [ok, {
            "office_hours": {"weekday": 1, "periods": [
                {"start_minute": 510, "end_minute": 720},
                {"start_minute": 700, "end_minute": 1050}]}}]}))
        self.assert_refused(["admin", "apply", bad], "INVALID_ARGUMENT", 1,
                            "Monday")
        bad = self.write("weights.json", json.dumps({"changes": [ok, {
            "eval_weights": {"object_kind": "district", "weights": [
                {"indicator": "closure_rate", "weight": 0.5},
                {"indicator": "ontime_closure_rate", "weight": 0.4}]}}]}))
        self.assert_refused(["admin", "apply", bad], "INVALID_ARGUMENT", 1,
                            "district", "sum")
        bad = self.write("dangling.json", json.dumps({"changes": [ok, {
            "staff": {"id": "ghost", "name": "g", "roles": ["INSPECTOR"],
                      "department_id": "no-such-dept"}}]}))
        self.assert_refused(["admin", "apply", bad], "INVALID_ARGUMENT", 1,
                            "change 1", "no-such-dept")
        dates = [d["date"] for d in self.get().get("calendar") or []]
        self.assertNotIn("2026-12-25", dates)

    def test_one_line_commands_change_one_item_each(self):
        ctl = self.c.ctl
        v = self.get()["version"]
        r = ctl("admin", "dept", "add", "xn-cg", "--name", "兴宁区城管局",
                "--level", "district")
        self.assertEqual((r["version"], r["changed"]), (v + 1, 1))
        ctl("admin", "staff", "add", "xn-01", "--name", "测试员", "--role",
            "department", "--role", "inspector", "--dept", "xn-cg")
        ctl("admin", "holiday", "2026-12-26", "--workday", "--note", "test")
        ctl("admin", "hours", "sat", "09:00-12:00")
        snap = self.get()
        self.assertEqual(snap["version"], v + 4)
        dept = [d for d in snap["departments"] if d["id"] == "xn-cg"][0]
        self.assertEqual(dept["level"], "DISPATCH_LEVEL_DISTRICT")
        st = [s for s in snap["staff"] if s["id"] == "xn-01"][0]
        self.assertEqual(st["roles"], ["ROLE_DEPARTMENT", "ROLE_INSPECTOR"])
        self.assertEqual(st["department_id"], "xn-cg")
        self.assertFalse(st["disabled"])
        day = [d for d in snap["calendar"] if d["date"] == "2026-12-26"][0]
        self.assertTrue(day["workday"])
        sat = [h for h in snap["office_hours"] if h["weekday"] == 6][0]
        self.assertEqual(sat["periods"], [{"start_minute": 540,
                                           "end_minute": 720}])
        ctl("admin", "staff", "disable", "xn-01")
        st = [s for s in self.get()["staff"] if s["id"] == "xn-01"][0]
        self.assertTrue(st["disabled"])
        self.assertEqual(st["name"], "测试员")   # the rest is kept
        self.assertEqual(len(st["roles"]), 2)
        ctl("admin", "hours", "sat", "none")
        self.assertNotIn(6, [h["weekday"] for h in self.get()["office_hours"]])
        with self.assertRaises(CtlError) as cm:
            ctl("admin", "staff", "disable", "nobody")
        self.assertEqual(cm.exception.code, "NOT_FOUND")
        for args in (["admin", "holiday", "2026-02-30"],
                     ["admin", "hours", "mon", "8:30-12:00"],
                     ["admin", "hours", "funday", "08:30-12:00"],
                     ["admin", "staff", "add", "x", "--name", "x"]):
            self.assert_refused(args, "USAGE", 2)


if __name__ == "__main__":
    unittest.main()
