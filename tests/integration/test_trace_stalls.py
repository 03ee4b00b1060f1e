"""ops/bench/trace-stalls on made-up traces (no processes): it finds stalls
that recur at a fixed interval, measures that interval, and finds none in a
steady trace."""
import importlib.machinery
import importlib.util
import os
import random
import subprocess
import sys
import tempfile
import unittest

TOP = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
SCRIPT = os.path.join(TOP, "ops", "bench", "trace-stalls")
_loader = importlib.machinery.SourceFileLoader("trace_stalls", SCRIPT)
_spec = importlib.util.spec_from_loader("trace_stalls", _loader)
ts = importlib.util.module_from_spec(_spec)
_loader.exec_module(ts)


def steady(seconds, rate=2000, base=10.0, jitter=2.0, seed=1):
    rng = random.Random(seed)
    return [(i / rate, base + rng.uniform(-jitter, jitter))
            for i in range(int(seconds * rate))]


def with_stalls(rows, every_s, length_ms=40.0, first_s=0.33):
    """Calls that finish within @length_ms after each stall start waited
    for it."""
    out = []
    for t, ms in rows:
        k = (t - first_s) / every_s
        into = (t - first_s - int(k) * every_s) * 1000.0 if k >= 0 else -1
        out.append((t, ms + (length_ms - into) if 0 <= into < length_ms
                    else ms))
    return out


class TraceStallsTest(unittest.TestCase):
    def test_steady_trace_has_no_stalls(self):
        r = ts.analyse(steady(5))
        self.assertEqual(r["stalls"], [])
        self.assertEqual(r["stalled_calls"], 0)
        self.assertIsNone(r["period_s"])
        self.assertAlmostEqual(r["p50_ms"], 10.0, delta=0.5)

    def test_periodic_stalls_and_their_interval(self):
        rows = with_stalls(steady(10), every_s=0.66)
        r = ts.analyse(rows)
        self.assertGreaterEqual(len(r["stalls"]), 13)
        self.assertLessEqual(len(r["stalls"]), 15)
        self.assertAlmostEqual(r["period_s"], 0.66, delta=0.03)
        self.assertGreater(r["stalls"][0]["max_ms"], 40.0)
        self.assertAlmostEqual(r["stalls"][0]["start_s"], 0.32, delta=0.03)
        self.assertGreater(r["stalled_share"], 0.03)

    def test_command_line_reads_a_file_and_refuses_garbage(self):
        with tempfile.TemporaryDirectory() as d:
            good = os.path.join(d, "t.txt")
            with open(good, "w") as f:
                for t, ms in with_stalls(steady(3), every_s=1.0):
                    f.write("%.6f %.3f\n" % (t, ms))
            out = subprocess.run([sys.executable, SCRIPT, good],
                                 capture_output=True, text=True)
            self.assertEqual(out.returncode, 0, out.stderr)
            self.assertIn("3 stalls", out.stdout)
            bad = os.path.join(d, "bad.txt")
            with open(bad, "w") as f:
                f.write("0.1 2.0\nnot a line at all\n")
            out = subprocess.run([sys.executable, SCRIPT, bad],
                                 capture_output=True, text=True)
            self.assertEqual(out.returncode, 1)
            self.assertIn("bad.txt:2", out.stderr)


if __name__ == "__main__":
    unittest.main()
