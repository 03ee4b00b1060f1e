"""Unit checks of the linearizability checker (linearize.py) on hand-made
histories, so that the checker is shown to fail on histories that are not
linearizable. No cluster is started."""
import sys
import unittest

from linearize import Op, check_case, check_history

OK, FP, UNKNOWN = "ok", "fail", "unknown"


def op(i, kind, invoke, complete, outcome, client=0, case=1):
    return Op(i, case, client, kind, invoke, complete, outcome)


def lin(ops, initial="REPORTED"):
    return check_case(ops, initial)[0]


class CheckerTest(unittest.TestCase):
    def test_sequential_lifecycle_is_linearizable(self):
        h = [op(1, "accept", 0, 1, (OK, "ACCEPTED")),
             op(2, "register", 2, 3, (OK, "REGISTERED")),
             op(3, "dispatch", 4, 5, (OK, "DISPATCHED")),
             op(4, "start-disposal", 6, 7, (OK, "IN_DISPOSAL")),
             op(5, "return", 8, 9, (OK, "RETURNED")),
             op(6, "redispatch", 10, 11, (OK, "DISPATCHED")),
             op(7, "read", 12, 13, (OK, "DISPATCHED"))]
        self.assertTrue(lin(h))

    def test_two_successful_accepts_of_one_case_are_not_linearizable(self):
        concurrent = [op(1, "accept", 0, 10, (OK, "ACCEPTED"), client=1),
                      op(2, "accept", 1, 9, (OK, "ACCEPTED"), client=2)]
        ok, why = check_case(concurrent, "REPORTED")
        self.assertFalse(ok)
        self.assertIn("accept", why)
        sequential = [op(1, "accept", 0, 1, (OK, "ACCEPTED")),
                      op(2, "accept", 2, 3, (OK, "ACCEPTED"))]
        self.assertFalse(lin(sequential))

    def test_racing_accepts_one_wins_one_refused_is_linearizable(self):
        h = [op(1, "accept", 0, 10, (OK, "ACCEPTED"), client=1),
             op(2, "accept", 1, 9, (FP, "FAILED_PRECONDITION"), client=2)]
        self.assertTrue(lin(h))

    def test_refusal_that_finished_before_the_accept_began_is_not(self):
        # The case was REPORTED throughout the refusal: accept was legal.
        h = [op(1, "accept", 0, 1, (FP, "FAILED_PRECONDITION"), client=2),
             op(2, "accept", 2, 3, (OK, "ACCEPTED"), client=1)]
        self.assertFalse(lin(h))

    def test_read_of_a_state_before_it_was_written_is_not_linearizable(self):
        h = [op(1, "read", 0, 1, (OK, "ACCEPTED")),
             op(2, "accept", 2, 3, (OK, "ACCEPTED"))]
        self.assertFalse(lin(h))

    def test_stale_read_after_an_acknowledged_write_is_not(self):
        h = [op(1, "accept", 0, 1, (OK, "ACCEPTED")),
             op(2, "read", 2, 3, (OK, "REPORTED"))]
        self.assertFalse(lin(h))

    def test_reads_concurrent_with_a_write_may_see_either_state(self):
        h = [op(1, "accept", 0, 10, (OK, "ACCEPTED")),
             op(2, "read", 1, 2, (OK, "REPORTED"), client=1),
             op(3, "read", 3, 4, (OK, "ACCEPTED"), client=1)]
        self.assertTrue(lin(h))
        # ...but not go back once a read saw the new state.
        h = [op(1, "accept", 0, 10, (OK, "ACCEPTED")),
             op(2, "read", 1, 2, (OK, "ACCEPTED"), client=1),
             op(3, "read", 3, 4, (OK, "REPORTED"), client=1)]
        self.assertFalse(lin(h))

    def test_unknown_outcome_may_or_may_not_take_effect(self):
        took = [op(1, "accept", 0, None, (UNKNOWN,)),
                op(2, "read", 5, 6, (OK, "ACCEPTED"), client=1)]
        self.assertTrue(lin(took))
        did_not = [op(1, "accept", 0, None, (UNKNOWN,)),
                   op(2, "accept", 5, 6, (OK, "ACCEPTED"), client=1)]
        self.assertTrue(lin(did_not))
        # It takes effect at most once: no second ACCEPT out of nowhere.
        twice = [op(1, "accept", 0, None, (UNKNOWN,)),
                 op(2, "read", 1, 2, (OK, "ACCEPTED"), client=1),
                 op(3, "return", 3, 4, (FP, "FAILED_PRECONDITION"), client=1),
                 op(4, "accept", 5, 6, (OK, "ACCEPTED"), client=1)]
        self.assertFalse(lin(twice))
        # And never before it was invoked.
        early = [op(1, "read", 0, 1, (OK, "ACCEPTED"), client=1),
                 op(2, "accept", 2, None, (UNKNOWN,))]
        self.assertFalse(lin(early))

    def test_acknowledged_state_must_be_the_transition_target(self):
        h = [op(1, "return", 0, 1, (OK, "DISPATCHED"))]
        self.assertFalse(lin(h, "IN_DISPOSAL"))
        self.assertTrue(lin([op(1, "return", 0, 1, (OK, "RETURNED"))],
                            "IN_DISPOSAL"))

    def test_cases_are_checked_independently(self):
        h = [op(1, "report", 0, 1, (OK, "REPORTED"), case=1),
             op(2, "report", 0, 1, (OK, "REPORTED"), case=2),
             op(3, "accept", 2, 3, (OK, "ACCEPTED"), case=1),
             op(4, "accept", 2, 3, (OK, "ACCEPTED"), case=2)]
        self.assertEqual(check_history(h), {})
        h.append(op(5, "accept", 4, 5, (OK, "ACCEPTED"), case=2))
        self.assertEqual(sorted(check_history(h)), [2])

    def test_a_long_racing_history_is_checked_quickly(self):
        # 4 clients x 100 rounds; per round all four race on the one case:
        # exactly one of them wins each transition in the cycle.
        cycle = [("start-disposal", "IN_DISPOSAL"), ("return", "RETURNED"),
                 ("redispatch", "DISPATCHED")]
        h, t, i = [], 0.0, 0
        for r in range(100):
            kind, after = cycle[r % 3]
            for c in range(4):
                i += 1
                if c == r % 4:
                    k, out = kind, (OK, after)
                else:   # losers' transitions are illegal whatever the order
                    k = "accept" if kind == "redispatch" else kind
                    out = (FP, "FAILED_PRECONDITION")
                h.append(op(i, k, t + c * 0.01, t + 0.9 - c * 0.01, out,
                            client=c))
            t += 1.0
        self.assertTrue(lin(h, "DISPATCHED"))
        # The last round (start-disposal) with two winners is not.
        last = h[-4:]
        self.assertEqual(last[0].kind, "start-disposal")
        h[-4:] = [x._replace(outcome=(OK, "IN_DISPOSAL")) for x in last[:2]] \
            + last[2:]
        self.assertFalse(lin(h, "DISPATCHED"))

if __name__ == "__main__":
    unittest.main(verbosity=2, argv=sys.argv[:1])
