"""Concurrent clients race lifecycle transitions and reads on a few cases
while the leader is killed with -9 (and restarted), stopped with SIGSTOP past
the election timeout (then continued), or cut off from the followers by the
Raft proxy (then healed); every case's history of
operations, as the clients observed it, must be linearizable against the
case state machine (linearize.py), and the replicas converge."""
import random
import signal
import sys
import threading
import time
import unittest

from harness import Cluster, CtlError, wait_for
from linearize import Op, check_history
from test_faults import one_agreed_leader
from workload import check_writable

CASES = 5
CLIENTS = 4
RUN_FOR = 10.0          # seconds of racing
RETRY_FOR = 8.0         # a write's key is retried this long, then unknown
UNKNOWN_CODES = ("UNAVAILABLE", "DEADLINE_EXCEEDED")

# (weight, op kind); every redispatch names a fresh department so that the
# "same department after RETURN" rule never applies.
MIX = [(4, "read"), (1, "accept"), (1, "register"), (2, "dispatch"),
       (3, "start-disposal"), (2, "return"), (3, "redispatch")]


def op_args(kind, case, tag):
    cid = str(case)
    return {
        "read": ["case", "get", cid],
        "accept": ["case", "accept", cid],
        "register": ["case", "register", cid],
        "dispatch": ["case", "dispatch", cid, "--dept", "d0"],
        "start-disposal": ["case", "start-disposal", cid],
        "return": ["case", "return", cid, "--reason", "not ours " + tag],
        "redispatch": ["case", "redispatch", cid, "--dept", "d-" + tag,
                       "--reason", "rerouted"],
    }[kind]


def short(state):
    return state.replace("CASE_STATE_", "")


class Client(threading.Thread):
    def __init__(self, cluster, cid, cases, stop, rng, ids, unexpected):
        super().__init__(daemon=True, name="client%d" % cid)
        self.c = cluster
        self.cid = cid
        self.cases = cases
        self.stop = stop
        self.rng = rng
        self.ids = ids
        self.unexpected = unexpected
        self.ops = []

    def endpoints(self):
        nodes = self.c.nodes     # dead ones refuse fast: cityctl moves on
        k = self.cid % len(nodes)
        return self.c.endpoints(nodes[k:] + nodes[:k])

    def run(self):
        seq = 0
        kinds = [k for w, k in MIX for _ in range(w)]
        while not self.stop.is_set():
            seq += 1
            case = self.rng.choice(self.cases)
            kind = self.rng.choice(kinds)
            tag = "c%d-%d" % (self.cid, seq)
            args = op_args(kind, case, tag)
            key = [] if kind == "read" else [
                "--client-id", "lin%d" % self.cid, "--seq", str(seq)]
            self.ops.append(self.call(next(self.ids), case, kind, key + args))

    def call(self, oid, case, kind, argv):
        invoke = time.monotonic()
        give_up = invoke + RETRY_FOR
        while True:
            t0 = time.monotonic()
            try:
                r = self.c.ctl(*argv, endpoints=self.endpoints(),
                               timeout_ms=2000)
                outcome = ("ok", short(r["case"]["state"]))
                break
            except CtlError as e:
                if e.code == "FAILED_PRECONDITION":
                    outcome = ("fail", e.code)
                    break
                if e.code not in UNKNOWN_CODES:
                    self.unexpected.append((kind, case, e.code, e.message))
                if time.monotonic() > give_up:
                    return Op(oid, case, self.cid, kind, invoke, None,
                              ("unknown",))
                time.sleep(0.1)
        if kind == "read":
            invoke = t0    # a read takes effect within its last attempt
        return Op(oid, case, self.cid, kind, invoke, time.monotonic(),
                  outcome)


def kill_and_restart_leader(c):
    victim = c.leader()
    victim.kill()
    t_kill = time.monotonic()
    c.leader(among=c.live(), timeout=30)
    wait_for("2 s after the kill", lambda: time.monotonic() - t_kill > 2.0,
             30)
    victim.start()
    return t_kill


def isolate_leader_then_heal(c):
    victim = c.leader()
    others = [n for n in c.nodes if n is not victim]
    c.net.isolate(victim.id)
    t_cut = time.monotonic()
    wait_for("a new leader in the majority",
             lambda: one_agreed_leader(c, others), 30)
    wait_for("3 s of partition", lambda: time.monotonic() - t_cut > 3.0, 30)
    c.net.heal()
    wait_for("all three agree on one leader",
             lambda: one_agreed_leader(c, c.nodes), 30)
    return t_cut


def stop_and_continue_leader(c):
    victim = c.leader()
    others = [n for n in c.nodes if n is not victim]
    victim.kill(signal.SIGSTOP)
    t_stop = time.monotonic()
    try:
        wait_for("a new leader among the others",
                 lambda: one_agreed_leader(c, others), 30)
        wait_for("3 s stopped", lambda: time.monotonic() - t_stop > 3.0, 30)
    finally:
        victim.kill(signal.SIGCONT)
    wait_for("all three agree on one leader",
             lambda: one_agreed_leader(c, c.nodes), 30)
    return t_stop


class LinearizableTest(unittest.TestCase):
    def race(self, c, fault):
        seed = int(time.time() * 1000) % 1000003
        print("seed", seed)
        rng = random.Random(seed)
        c.start()
        c.leader()
        ids = iter(range(1, 10 ** 9))
        history, cases = [], []
        for i in range(CASES):
            t0 = time.monotonic()
            r = c.ctl("case", "report", "--type", "event", "--major",
                      "05", "--minor", "01", "--desc", "race %d" % i)
            case = int(r["case"]["case_id"])
            cases.append(case)
            history.append(Op(next(ids), case, -1, "report", t0,
                              time.monotonic(),
                              ("ok", short(r["case"]["state"]))))
        stop = threading.Event()
        unexpected = []
        clients = [Client(c, i, cases, stop, random.Random(rng.random()),
                          ids, unexpected) for i in range(CLIENTS)]
        t_start = time.monotonic()
        for cl in clients:
            cl.start()
        wait_for("racing before the fault",
                 lambda: time.monotonic() - t_start > RUN_FOR * 0.3, 30)
        t_fault = fault(c)
        t_back = time.monotonic()
        wait_for("the rest of the run", lambda: time.monotonic() - max(
            t_start + RUN_FOR, t_back + 3.0) > 0, 60)
        stop.set()
        for cl in clients:
            cl.join(timeout=RETRY_FOR + 60)
            self.assertFalse(cl.is_alive())
            history.extend(cl.ops)

        counts = {}
        for op in history:
            k = op.outcome[0] if op.kind != "read" else "read"
            counts[k] = counts.get(k, 0) + 1
        after = sum(1 for op in history
                    if op.invoke > t_fault and op.outcome[0] == "ok")
        print("%d ops %s; %d ok after the fault; unexpected %s" % (
            len(history), counts, after, unexpected[:5]))
        self.assertEqual(unexpected, [])
        self.assertGreater(counts.get("ok", 0), 20)
        self.assertGreater(counts.get("fail", 0), 0)   # they did race
        self.assertGreater(after, 0)

        t0 = time.monotonic()
        bad = check_history(history)
        print("checked in %.2f s" % (time.monotonic() - t0))
        for case, why in bad.items():
            print("case %d is not linearizable:\n%s" % (case, why))
        self.assertEqual(bad, {}, "non-linearizable cases: %s (seed %d)"
                         % (sorted(bad), seed))
        c.converged(c.nodes, timeout=60)
        check_writable(self, c)

    def test_racing_transitions_with_a_leader_kill_are_linearizable(self):
        with Cluster(3) as c:
            self.race(c, kill_and_restart_leader)

    def test_racing_transitions_with_the_leader_stopped_are_linearizable(
            self):
        with Cluster(3) as c:
            self.race(c, stop_and_continue_leader)

    def test_racing_transitions_with_the_leader_isolated_are_linearizable(
            self):
        with Cluster(3, proxied=True) as c:
            self.race(c, isolate_leader_then_heal)

if __name__ == "__main__":
    unittest.main(verbosity=2, argv=sys.argv[:1])
