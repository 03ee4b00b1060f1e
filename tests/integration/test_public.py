"""Public reports over Open311 HTTP/JSON on a 3-node cluster: services, a
report with photos and a contact, reads through a follower, the disposal
deadline once dispatched, the updates feed and its cursor, duplicate hints,
"fixed and checked" after a passed check, reopen proved by the reporter's
contact, and bad input that gets a 4xx and changes nothing. The
reporter's phone and email appear in no response of the whole test."""
import json
import sys
import unittest
import urllib.error
import urllib.parse
import urllib.request

from harness import Cluster, free_ports, wait_for

PHONE = "+86 138-0013-8000"
EMAIL = "citizen.one@example.org"
SECRETS = ("138-0013-8000", "13800138000", "citizen.one", "Citizen One")
LAT, LON = 22.8170, 108.3665
SHA = ["%064x" % (i + 1) for i in range(3)]
ATTACH = "a" * 64 + ":https://evidence.example/1.jpg"
M_PER_DEG = 111195.0


class PublicTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        ports = free_ports(3)
        cls.c = Cluster(3)
        cls.http = {}
        for node, port in zip(cls.c.nodes, ports):
            cls.http[node.id] = "http://127.0.0.1:%d" % port
            node.write_config(cls.c.nodes,
                              "[public]\nhttp_address = 127.0.0.1:%d\n" % port)
        cls.c.start()
        cls.leader = cls.c.leader()
        cls.follower = [n for n in cls.c.nodes if n is not cls.leader][0]
        cls.seen = []   # every response body of the test

    @classmethod
    def tearDownClass(cls):
        cls.c.close(keep=False)

    def tearDown(self):
        for body in self.seen:
            for s in SECRETS:
                self.assertNotIn(s, body, "a response leaks the contact")

    # --- HTTP ---

    def req(self, method, path, body=None, ctype=None, node=None,
            headers=None):
        url = self.http[(node or self.follower).id] + "/open311/v2/" + path
        data = body.encode() if isinstance(body, str) else body
        r = urllib.request.Request(url, data=data, method=method)
        if ctype:
            r.add_header("Content-Type", ctype)
        for k, v in (headers or {}).items():
            r.add_header(k, v)
        try:
            with urllib.request.urlopen(r, timeout=30) as resp:
                status, text = resp.status, resp.read().decode()
        except urllib.error.HTTPError as e:
            status, text = e.code, e.read().decode()
        self.seen.append(text)
        return status, json.loads(text)

    def ok(self, method, path, body=None, ctype=None, **kw):
        status, js = self.req(method, path, body, ctype, **kw)
        self.assertEqual(status, 200, js)
        return js

    def bad(self, want, method, path, body=None, ctype=None):
        status, js = self.req(method, path, body, ctype)
        self.assertEqual(status, want, js)
        self.assertIsInstance(js, list)
        self.assertEqual(js[0]["code"], want)
        self.assertTrue(js[0]["description"])
        return js[0]["description"]

    def form(self, fields):
        return urllib.parse.urlencode(fields, doseq=True)

    def create(self, lat=LAT, lon=LON, code="E-0501", photos=1, **extra):
        fields = [("service_code", code), ("lat", str(lat)),
                  ("long", str(lon)), ("description", "stalls on the pavement"),
                  ("address_string", "民族大道 100号"), ("email", EMAIL),
                  ("phone", PHONE), ("first_name", "Citizen"),
                  ("last_name", "One")]
        for i in range(photos):
            fields += [("media_url", "https://photos.example/%d.jpg" % i),
                       ("media_sha256", SHA[i % 3])]
        fields += list(extra.items())
        js = self.ok("POST", "requests.json", self.form(fields),
                     "application/x-www-form-urlencoded")
        self.assertEqual(len(js), 1)
        return js[0]

    def get(self, sid, node=None):
        return self.ok("GET", "requests/%s.json" % sid, node=node)[0]

    def case_count(self):
        st = self.c.ctl("--consistency", "linearizable", "case", "list",
                        "--all")
        return len(st.get("cases", []))

    def ctl(self, *args):
        return self.c.ctl(*args, endpoints=self.follower.grpc)

    def drive_to_closed(self, cid):
        steps = [
            ["case", "accept", cid],
            ["case", "register", cid, "--condition", "blocked"],
            ["case", "dispatch", cid, "--dept", "street-order",
             "--deadline", "2099-01-01T00:00:00Z"],
            ["--actor", "so-1", "case", "start-disposal", cid],
            ["--actor", "so-1", "case", "report-disposal", cid, "--attach",
             ATTACH],
            ["case", "request-check", cid, "--inspector", "insp-2"],
            ["--actor", "insp-2", "case", "check", cid, "--pass", "--attach",
             ATTACH],
            ["case", "close", cid],
        ]
        for args in steps:
            self.ctl(*args)

    # --- tests ---

    def test_services_list_the_catalogue(self):
        js = self.ok("GET", "services.json")
        codes = [s["service_code"] for s in js]
        self.assertIn("E-0501", codes)
        for s in js:
            self.assertEqual(s["type"], "realtime")
            self.assertTrue(s["service_name"])
        one = self.ok("GET", "services/E-0501.json")
        self.assertEqual(one["service_code"], "E-0501")
        self.bad(404, "GET", "services/E-9999.json")

    def test_report_lifecycle_through_a_follower(self):
        r = self.create(photos=3)
        sid = r["service_request_id"]
        self.assertTrue(sid.startswith("CO-"))
        self.assertEqual(r["status"], "open")
        self.assertEqual(len(r["media_urls"]), 3)
        self.assertEqual(r["service_code"], "E-0501")
        self.assertIsNone(r["expected_datetime"])
        self.assertTrue(r["requested_datetime"].endswith("+08:00"))
        # read through each node, the follower included
        for node in self.c.nodes:
            got = self.get(sid, node=node)
            self.assertEqual(got["service_request_id"], sid)
            self.assertEqual(got["detailed_status"], "received")
        cid = str(int(sid.rsplit("-", 1)[1]))
        self.ctl("case", "accept", cid)
        self.ctl("case", "register", cid, "--condition", "blocked")
        self.ctl("case", "dispatch", cid, "--dept", "street-order",
                 "--deadline", "2099-01-01T00:00:00Z")
        got = self.get(sid)
        self.assertEqual(got["detailed_status"], "dispatched")
        self.assertTrue(got["expected_datetime"].startswith("2099-01-01T08"),
                        got)
        self.assertEqual(got["agency_responsible"], "street-order")
        self.ctl("--actor", "so-1", "case", "start-disposal", cid)
        self.ctl("--actor", "so-1", "case", "report-disposal", cid,
                 "--attach", ATTACH)
        self.ctl("case", "request-check", cid, "--inspector", "insp-2")
        self.ctl("--actor", "insp-2", "case", "check", cid, "--pass",
                 "--attach", ATTACH)
        self.ctl("case", "close", cid)
        got = self.get(sid)
        self.assertEqual(got["status"], "closed")
        self.assertTrue(got["fixed_and_checked"])
        self.assertTrue(got["reopenable"])
        # the feed of this report, in order
        feed = self.ok("GET", "updates.json?service_request_id=" + sid)
        states = [u["detailed_status"] for u in feed["updates"]]
        self.assertEqual(states[0], "received")
        self.assertEqual(states[-1], "fixed_checked")
        self.assertIn("dispatched", states)

        # reopen: the wrong contact is refused, the right one works
        before = self.case_count()
        self.bad(403, "POST", "requests/%s/reopen.json" % sid,
                 self.form({"phone": "13900000000", "reason": "still there"}),
                 "application/x-www-form-urlencoded")
        self.assertEqual(self.get(sid)["status"], "closed")
        js = self.ok("POST", "requests/%s/reopen.json" % sid,
                     json.dumps({"email": EMAIL.upper(),
                                 "reason": "still there"}),
                     "application/json")
        self.assertEqual(js[0]["detailed_status"], "awaiting_check")
        self.assertEqual(js[0]["reopen_count"], 1)
        self.assertEqual(js[0]["status"], "open")
        self.assertEqual(self.case_count(), before)


    def test_updates_feed_resumes_at_its_cursor(self):
        a = self.create()["service_request_id"]
        b = self.create(lat=LAT + 0.05)["service_request_id"]
        all_rows = []
        cursor = ""
        while True:
            js = self.ok("GET", "updates.json?max=2&cursor=" + cursor)
            self.assertLessEqual(len(js["updates"]), 2)
            if not js["updates"]:
                self.assertEqual(js["next_cursor"], cursor)
                break
            all_rows += js["updates"]
            cursor = js["next_cursor"]
        ids = [u["service_request_id"] for u in all_rows]
        self.assertIn(a, ids)
        self.assertIn(b, ids)
        self.assertLess(ids.index(a), ids.index(b))
        times = [u["updated_datetime"] for u in all_rows]
        self.assertEqual(times, sorted(times))
        self.bad(400, "GET", "updates.json?cursor=zz")
        self.bad(400, "GET", "updates.json?max=5000")

    def test_duplicates_are_suggested_within_the_radius_only(self):
        base_lat = LAT + 0.2
        first = self.create(lat=base_lat, code="E-0502")
        near = self.create(lat=base_lat + 20 / M_PER_DEG, code="E-0502")
        hints = [d["service_request_id"] for d in near["possible_duplicates"]]
        self.assertIn(first["service_request_id"], hints)
        d = [x for x in near["possible_duplicates"]
             if x["service_request_id"] == first["service_request_id"]][0]
        self.assertAlmostEqual(d["distance_m"], 20.0, delta=1.0)
        far = self.create(lat=base_lat + 2000 / M_PER_DEG, code="E-0502")
        hints = [d["service_request_id"] for d in far["possible_duplicates"]]
        self.assertNotIn(first["service_request_id"], hints)
        self.assertNotIn(near["service_request_id"], hints)

    def test_json_create_and_get_many(self):
        body = {"service_code": "C-0101", "lat": LAT + 0.3, "long": LON,
                "description": "manhole cover missing", "phone": PHONE,
                "media": [{"url": "https://photos.example/m.jpg",
                           "sha256": SHA[0], "media_type": "image/jpeg"}]}
        r = self.ok("POST", "requests.json", json.dumps(body),
                    "application/json",
                    headers={"Idempotency-Key": "k-json-1"})[0]
        again = self.ok("POST", "requests.json", json.dumps(body),
                        "application/json",
                        headers={"Idempotency-Key": "k-json-1"})[0]
        self.assertEqual(r["service_request_id"], again["service_request_id"])
        sid = r["service_request_id"]
        js = self.ok("GET", "requests.json?service_request_id=%s,CO-1-9" % sid)
        self.assertEqual([x["service_request_id"] for x in js], [sid])
        self.bad(404, "GET", "requests/CO-20990101-999999.json")
        self.bad(405, "DELETE", "requests/%s.json" % sid)
        self.bad(405, "PUT", "requests.json", "x", "application/json")

    def test_bad_input_is_refused_and_changes_nothing(self):
        self.create()   # the cluster has at least one report
        before = self.case_count()
        form = "application/x-www-form-urlencoded"
        good = {"service_code": "E-0501", "lat": LAT, "long": LON,
                "phone": PHONE, "description": "x"}

        def js(**kw):
            d = dict(good)
            d.update(kw)
            return json.dumps({k: v for k, v in d.items() if v is not None})

        self.bad(400, "POST", "requests.json", "{not json", "application/json")
        self.bad(400, "POST", "requests.json", "[1,2]", "application/json")
        self.bad(400, "POST", "requests.json", js(lat="22.8"),
                 "application/json")
        self.bad(400, "POST", "requests.json", js(service_code=5),
                 "application/json")
        self.bad(400, "POST", "requests.json", js(service_code=None),
                 "application/json")
        self.bad(400, "POST", "requests.json", js(service_code="E-9901"),
                 "application/json")
        self.bad(400, "POST", "requests.json", js(lat=95.0),
                 "application/json")
        self.bad(400, "POST", "requests.json", js(lat=None, long=None),
                 "application/json")
        self.bad(400, "POST", "requests.json", js(phone="call me"),
                 "application/json")
        self.bad(400, "POST", "requests.json",
                 js(media_url="https://p.example/x.jpg"), "application/json")
        self.bad(400, "POST", "requests.json",
                 self.form({"service_code": "E-0501", "lat": "north",
                            "long": "1"}), form)
        self.bad(400, "POST", "requests.json", "service_code=%zz", form)
        self.bad(413, "POST", "requests.json", "x" * (1 << 20), form)
        self.bad(415, "POST", "requests.json", js(), "text/plain")
        self.bad(415, "POST", "requests.json", js(), "application/xml")
        self.bad(400, "POST", "requests.json", bytes(range(256)) * 4, form)
        self.bad(400, "POST", "requests.json", bytes(range(256)) * 4,
                 "application/json")
        self.bad(404, "GET", "nothing.json")
        self.assertEqual(self.case_count(), before)
        # the nodes are all still there
        for n in self.c.nodes:
            self.assertTrue(n.alive())


if __name__ == "__main__":
    unittest.main(verbosity=2)
