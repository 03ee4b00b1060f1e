"""The city's rules end to end on 3 real nodes: a configuration version
gives new cases deadlines from the category and the office calendar, the
leader's tick marks a stage overdue and supervises the case (the same on
every replica), the command centre lists overdue cases and deadline
windows, and once staff exist only staff with the role (and, for a
department, its own cases) may act; a refusal is PERMISSION_DENIED and in
the audit trail."""
import json
import os
import sys
import time
import unittest

from harness import Cluster, CtlError, wait_for

CONFIG = {"changes": [
    {"department": {"id": "roads", "name": "Roads"}},
    {"department": {"id": "water", "name": "Water"}},
    {"category": {
        "type": "CATEGORY_TYPE_EVENT", "major_code": "05", "minor_code": "01",
        "major_name": "street order", "name": "road damage",
        "department_ids": ["roads"],
        "conditions": [{"code": "c1", "name": "pothole", "limits": [
            {"stage": "STAGE_ACCEPT", "unit": "TIME_UNIT_EMERGENCY_HOURS",
             "amount": 2},
            {"stage": "STAGE_DISPOSE", "unit": "TIME_UNIT_WORK_DAYS",
             "amount": 2}]}]}},
]}

STAFF = {"changes": [
    {"staff": {"id": "clerk", "roles": ["ROLE_INTAKE_CLERK"]}},
    {"staff": {"id": "lead", "roles": ["ROLE_SHIFT_LEADER"]}},
    {"staff": {"id": "disp", "roles": ["ROLE_DISPATCHER"]}},
    {"staff": {"id": "insp", "roles": ["ROLE_INSPECTOR"]}},
    {"staff": {"id": "h-roads", "roles": ["ROLE_DEPARTMENT"],
               "department_id": "roads"}},
    {"staff": {"id": "h-water", "roles": ["ROLE_DEPARTMENT"],
               "department_id": "water"}},
]}

HOUR_US = 3600 * 1000000


def clock(case, stage):
    for k in case.get("clocks", []):
        if k["stage"] == stage:
            return k
    return None


class RulesTest(unittest.TestCase):
    def apply(self, c, doc, name):
        path = os.path.join(c.dir, name)
        with open(path, "w") as f:
            json.dump(doc, f)
        return c.ctl("admin", "apply", path)

    def act(self, c, actor, role, *args):
        return c.ctl("--actor", actor, "--role", role, "case", *args)

    def test_deadlines_overdue_and_authorization(self):
        with Cluster(3, extra="[cases]\ntick_ms = 300\n") as c:
            c.start()
            c.leader()
            v = self.apply(c, CONFIG, "config.json")
            self.assertEqual(int(v["version"]), 1)

            r = self.act(c, "insp", "inspector", "report", "--type",
                         "event", "--major", "05", "--minor", "01",
                         "--desc", "pothole on Minzu Ave")["case"]
            cid = str(r["case_id"])
            acc = clock(r, "STAGE_ACCEPT")
            self.assertEqual(int(acc["deadline"]) - int(acc["started"]),
                             2 * HOUR_US)
            self.assertEqual(int(r["config_version"]), 1)
            self.act(c, "clerk", "intake-clerk", "accept", cid)
            self.act(c, "lead", "shift-leader", "register", cid,
                     "--condition", "c1")
            # An explicit disposal deadline two seconds ahead: the tick
            # must find it late.
            due = time.time() + 2
            due_s = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(due))
            d = self.act(c, "disp", "dispatcher", "dispatch", cid, "--dept",
                         "roads", "--deadline", due_s)["case"]
            self.assertIsNotNone(clock(d, "STAGE_DISPOSE"))

            def overdue():
                got = c.ctl("case", "get", cid)["case"]
                k = clock(got, "STAGE_DISPOSE")
                return got if k.get("overdue") else None
            got = wait_for("the tick to mark the disposal overdue", overdue,
                           30, 0.3)
            self.assertEqual(int(got["supervision_level"]), 1)
            hist = c.ctl("case", "history", cid)["events"]
            kinds = [e["type"] for e in hist]
            self.assertEqual(kinds.count("CASE_EVENT_OVERDUE"), 1)
            self.assertEqual(kinds.count("CASE_EVENT_SUPERVISE"), 1)
            time.sleep(1.0)   # more ticks: nothing marked twice
            hist = c.ctl("case", "history", cid)["events"]
            self.assertEqual([e["type"] for e in hist].count(
                "CASE_EVENT_OVERDUE"), 1)
            listed = c.ctl("case", "list", "--overdue")["cases"]
            self.assertEqual([str(x["case_id"]) for x in listed], [cid])
            # the same on every replica
            c.converged()

            # Staff: from now on only staff act, departments on their own
            # cases.
            self.apply(c, STAFF, "staff.json")
            with self.assertRaises(CtlError) as e:
                self.act(c, "stranger", "shift-leader", "supervise", cid)
            self.assertEqual(e.exception.code, "PERMISSION_DENIED")
            self.assertIn("not in the staff list", e.exception.message)
            with self.assertRaises(CtlError) as e:
                self.act(c, "h-water", "department", "start-disposal", cid)
            self.assertEqual(e.exception.code, "PERMISSION_DENIED")
            self.assertIn("department water", e.exception.message)
            ok = self.act(c, "h-roads", "department", "start-disposal",
                          cid)["case"]
            self.assertEqual(ok["state"], "CASE_STATE_IN_DISPOSAL")
            # refusals are audited
            trail = c.ctl("audit", "list", "--target", "case/%s" % cid,
                          "--all")
            denied = [(rec["actor_id"], rec["operation"])
                      for rec in trail.get("records", [])
                      if rec.get("result") in (7, "RESULT_PERMISSION_DENIED")]
            self.assertEqual(denied, [("stranger", "supervise"),
                                      ("h-water", "start_disposal")])
            # a later version does not move this case's deadlines
            before = clock(c.ctl("case", "get", cid)["case"],
                           "STAGE_DISPOSE")["deadline"]
            CONFIG["changes"][2]["category"]["conditions"][0]["limits"][1][
                "amount"] = 9
            self.apply(c, CONFIG, "config2.json")
            after = clock(c.ctl("case", "get", cid)["case"],
                          "STAGE_DISPOSE")["deadline"]
            self.assertEqual(before, after)
            c.converged()

            # Evaluation and workload: the same numbers from every replica
            # (stale reads once converged), computed from the events above.
            period = time.strftime("%Y-%m", time.gmtime(time.time() + 8 * 3600))
            reports = [c.ctl("--consistency", "stale", "eval", "report",
                             "--period", period, endpoints=n.grpc)
                       for n in c.nodes]
            for r in reports[1:]:
                self.assertEqual(r["rows"], reports[0]["rows"])
            roads = [row for row in reports[0]["rows"]
                     if row["object_id"] == "roads"]
            self.assertEqual(len(roads), 1, reports[0])
            self.assertEqual(int(roads[0]["counts"]["dispatched"]), 1)
            load = c.ctl("eval", "workload")["departments"]
            mine = [d for d in load if d["department_id"] == "roads"][0]
            self.assertEqual(int(mine["in_disposal"]), 1)
            self.assertEqual(int(mine["overdue"]), 1)


if __name__ == "__main__":
    unittest.main(verbosity=2, argv=sys.argv[:1])
