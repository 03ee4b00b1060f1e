"""A 3-node cluster forms; a case goes through its whole lifecycle via a
follower; bad input gets a precise status and changes nothing; a replayed
(client_id, seq) applies once; every replica ends with the same digest."""
import sys
import unittest

from harness import Cluster, CtlError

SHA = "a" * 64
ATTACH = SHA + ":https://evidence.example/1.jpg"


class LifecycleTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.c = Cluster(3).start()
        cls.leader = cls.c.leader()
        cls.follower = [n for n in cls.c.nodes if n is not cls.leader][0]

    @classmethod
    def tearDownClass(cls):
        cls.c.close(keep=False)

    def ctl(self, *args, **kw):
        kw.setdefault("endpoints", self.follower.grpc)
        return self.c.ctl(*args, **kw)

    def report(self, **kw):
        args = ["case", "report", "--type", "component", "--major", "01",
                "--minor", "02", "--desc", "manhole cover missing",
                "--lon", "108.32", "--lat", "22.81", "--grid",
                "45010200100101"]
        for k, v in kw.items():
            args += ["--" + k.replace("_", "-"), v]
        return self.ctl(*args)["case"]

    def state_of(self, cid):
        return self.ctl("case", "get", str(cid))["case"]["state"]

    def assert_refused(self, code, *args, **kw):
        with self.assertRaises(CtlError) as cm:
            self.ctl(*args, **kw)
        self.assertEqual(cm.exception.code, code, cm.exception.message)
        return cm.exception

    def test_cluster_forms_with_one_leader_and_three_voters(self):
        st = self.c.status(self.follower)
        self.assertEqual(len(st["nodes"]), 3)
        leaders = [n for n in st["nodes"]
                   if n.get("state") == "RAFT_STATE_LEADER"]
        self.assertEqual(len(leaders), 1)
        self.assertEqual(int(leaders[0]["id"]), self.leader.id)
        for n in st["nodes"]:
            self.assertTrue(n.get("reachable"), n)
            self.assertEqual(n.get("member_role"), "MEMBER_ROLE_VOTER")

    def test_linearizable_status_is_answered_by_the_leader(self):
        st = self.ctl("--consistency", "linearizable", "cluster", "status")
        self.assertEqual(int(st["answered_by"]), self.leader.id)
        st = self.ctl("cluster", "status")   # stale: the node asked
        self.assertEqual(int(st["answered_by"]), self.follower.id)

    def test_read_your_writes_with_min_index_on_a_follower(self):
        r = self.c.ctl("case", "report", "--type", "event", "--major", "01",
                       "--minor", "01", "--desc", "ryw",
                       endpoints=self.leader.grpc)
        idx = str(r["applied_index"])
        got = self.ctl("--consistency", "stale", "--min-index", idx, "case",
                       "get", str(r["case"]["case_id"]))
        self.assertGreaterEqual(int(got["applied_index"]), int(idx))
        self.assertEqual(got["case"]["description"], "ryw")

    def test_case_goes_through_its_whole_lifecycle_via_a_follower(self):
        case = self.report()
        cid = str(case["case_id"])
        self.assertEqual(case["state"], "CASE_STATE_REPORTED")
        self.assertTrue(case["tracking_no"].startswith("CO-"))
        steps = [
            (["case", "accept", cid], "CASE_STATE_ACCEPTED"),
            (["case", "register", cid, "--condition", "missing"],
             "CASE_STATE_REGISTERED"),
            (["case", "dispatch", cid, "--dept", "water-group"],
             "CASE_STATE_DISPATCHED"),
            (["--actor", "wg-1", "case", "start-disposal", cid],
             "CASE_STATE_IN_DISPOSAL"),
            (["--actor", "wg-1", "case", "report-disposal", cid, "--attach",
              ATTACH], "CASE_STATE_DISPOSED"),
            (["case", "request-check", cid, "--inspector", "insp-2"],
             "CASE_STATE_CHECKING"),
            (["--actor", "insp-2", "case", "check", cid, "--pass", "--attach",
              ATTACH], "CASE_STATE_CHECKED"),
            (["case", "close", cid], "CASE_STATE_CLOSED"),
        ]
        for args, want in steps:
            got = self.ctl(*args)["case"]
            self.assertEqual(got["state"], want, args)
        hist = self.ctl("case", "history", cid)["events"]
        self.assertEqual([e["type"] for e in hist], [
            "CASE_EVENT_REPORT", "CASE_EVENT_ACCEPT", "CASE_EVENT_REGISTER",
            "CASE_EVENT_DISPATCH", "CASE_EVENT_ACKNOWLEDGE",
            "CASE_EVENT_REPORT_DISPOSAL", "CASE_EVENT_REQUEST_CHECK",
            "CASE_EVENT_CHECK_RESULT", "CASE_EVENT_CLOSE"])
        times = [int(e["at"]) for e in hist]
        self.assertEqual(times, sorted(times))
        # The same case, read linearizably from the leader, is closed.
        got = self.c.ctl("--consistency", "linearizable", "case", "get", cid,
                         endpoints=self.leader.grpc)
        self.assertEqual(got["case"]["state"], "CASE_STATE_CLOSED")

    def test_illegal_transition_is_failed_precondition_and_changes_nothing(self):
        cid = str(self.report()["case_id"])
        lin = ["--consistency", "linearizable"]
        before = self.ctl(*lin, "case", "get", cid)["case"]
        hist = self.ctl(*lin, "case", "history", cid)["events"]
        e = self.assert_refused("FAILED_PRECONDITION", "case", "close", cid)
        self.assertIn("REPORTED", e.message)
        self.assertEqual(self.ctl(*lin, "case", "get", cid)["case"], before)
        self.assertEqual(self.ctl(*lin, "case", "history", cid)["events"],
                         hist)

    def test_wrong_role_is_permission_denied(self):
        cid = str(self.report()["case_id"])
        self.assert_refused("PERMISSION_DENIED", "--role", "public", "case",
                            "accept", cid)
        self.assertEqual(self.state_of(cid), "CASE_STATE_REPORTED")

    def test_unknown_case_is_not_found(self):
        self.assert_refused("NOT_FOUND", "case", "accept", "999999")
        self.assert_refused("NOT_FOUND", "case", "get", "999999")

    def test_oversize_description_is_invalid_argument(self):
        with self.assertRaises(CtlError) as cm:
            self.report(desc="x" * 5000)
        self.assertEqual(cm.exception.code, "INVALID_ARGUMENT")

    def test_bad_category_code_is_invalid_argument(self):
        with self.assertRaises(CtlError) as cm:
            self.ctl("case", "report", "--type", "event", "--major", "1x",
                     "--minor", "02", "--desc", "bad code")
        self.assertEqual(cm.exception.code, "INVALID_ARGUMENT")

    def test_replayed_retry_key_returns_first_result_and_applies_once(self):
        args = ["--client-id", "it-replay", "--seq", "1", "case", "report",
                "--type", "event", "--major", "01", "--minor", "01",
                "--desc", "stall on the pavement"]
        first = self.ctl(*args)["case"]
        # Same key on another node: same case back, no second case.
        again = self.c.ctl(*args, endpoints=self.leader.grpc)["case"]
        self.assertEqual(first["case_id"], again["case_id"])
        listed = self.ctl("--consistency", "linearizable", "case", "list",
                          "--all")["cases"]
        same = [c for c in listed if c["description"] == "stall on the pavement"]
        self.assertEqual(len(same), 1)
        # An older seq for the same client is refused.
        self.assertEqual(self.ctl("--client-id", "it-replay", "--seq", "2",
                                  "case", "accept",
                                  str(first["case_id"]))["case"]["state"],
                         "CASE_STATE_ACCEPTED")
        self.assert_refused("ALREADY_EXISTS", "--client-id", "it-replay",
                            "--seq", "1", "case", "void",
                            str(first["case_id"]), "--reason", "x")

    def test_list_filters_and_pages(self):
        for i in range(5):
            self.report(desc="paging %d" % i, grid="45010299900001")
        seen = []
        token = None
        while True:
            args = ["--consistency", "linearizable", "case", "list",
                    "--grid", "45010299900001", "--page-size", "2"]
            if token:
                args += ["--page-token", token]
            page = self.ctl(*args)
            self.assertLessEqual(len(page.get("cases", [])), 2)
            seen += [int(c["case_id"]) for c in page.get("cases", [])]
            token = page.get("next_page_token")
            if not token:
                break
        self.assertEqual(len(seen), 5)
        self.assertEqual(seen, sorted(seen))

    def test_replicas_end_with_identical_state_digests(self):
        self.report()
        d = self.c.converged()
        self.assertEqual(len(d), 3)


if __name__ == "__main__":
    unittest.main(verbosity=2, argv=sys.argv[:1])
