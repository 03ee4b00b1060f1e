"""Linearizability checker for per-case operation histories.

A history is a list of Op: an operation on one case (a lifecycle transition
or a read) with the real time it was invoked and completed and its outcome:

  ("ok", state)      a transition acknowledged with the case's new state, or
                     a read that returned the state;
  ("fail", code)     a transition refused as illegal (FAILED_PRECONDITION):
                     it took no effect, and the state it saw must forbid it;
  ("unknown",)       no definite answer (UNAVAILABLE / DEADLINE_EXCEEDED after
                     retries): the transition took effect at most once, at
                     some point after it was invoked, or never. complete is
                     None (it may take effect at any later time).

check_case() is a Wing & Gong search with Lowe's memoisation (as Knossos and
Porcupine do): repeatedly pick, as the next linearization point, an operation
that is not yet linearized and that no other pending operation precedes in
real time (no remaining op completed before it was invoked), apply it to the
model, backtrack on a mismatch; the set of (linearized ops, model state)
already explored is cached. Unknown-outcome ops never have to be linearized.
Cases are independent objects, so each case's history is checked alone.

The model is the case state machine of DOMAIN.md section 3, restricted to
what the workloads use.
"""
import collections

# op kind -> {state before: state after}; None is "no case yet".
TRANSITIONS = {
    "report": {None: "REPORTED"},
    "accept": {"REPORTED": "ACCEPTED"},
    "register": {"ACCEPTED": "REGISTERED"},
    "dispatch": {"REGISTERED": "DISPATCHED"},
    "start-disposal": {"DISPATCHED": "IN_DISPOSAL"},
    "return": {"DISPATCHED": "RETURNED", "IN_DISPOSAL": "RETURNED"},
    "redispatch": {"RETURNED": "DISPATCHED", "DISPATCHED": "DISPATCHED",
                   "IN_DISPOSAL": "DISPATCHED"},
    "report-disposal": {"IN_DISPOSAL": "DISPOSED"},
}
READ = "read"

Op = collections.namedtuple(
    "Op", "id case client kind invoke complete outcome")


class Inconclusive(Exception):
    pass


def step(state, op):
    """Apply op to the model in state. Returns the list of possible next
    states (empty: op cannot be linearized here)."""
    status = op.outcome[0]
    if op.kind == READ:
        return [state] if op.outcome[1] == state else []
    target = TRANSITIONS[op.kind].get(state)
    if status == "ok":
        return [target] if target is not None and target == op.outcome[1] \
            else []
    if status == "fail":
        return [state] if target is None else []
    # unknown: took effect here (if legal) - or had no effect here.
    return [target] if target is not None else [state]


def check_case(ops, initial=None, budget=2000000):
    """Return (True, None) if the history is linearizable, else (False,
    explanation). Raises Inconclusive if the search exceeds budget states."""
    ops = [op for op in ops
           if not (op.kind == READ and op.outcome[0] != "ok")]
    ops.sort(key=lambda o: o.invoke)
    n = len(ops)
    inf = float("inf")
    complete = [o.complete if o.outcome[0] != "unknown" and
                o.complete is not None else inf for o in ops]
    must = 0
    for i, o in enumerate(ops):
        if complete[i] != inf:
            must |= 1 << i
    seen = set()
    best = (0, 0, initial, [])     # (count, mask, state, order)
    stack = [(0, initial, ())]
    while stack:
        mask, state, order = stack.pop()
        if mask & must == must:
            return True, None
        if (mask, state) in seen:
            continue
        seen.add((mask, state))
        if len(seen) > budget:
            raise Inconclusive("more than %d states explored" % budget)
        count = bin(mask & must).count("1")
        if count > best[0]:
            best = (count, mask, state, order)
        # The earliest completion among the remaining ops bounds which ops
        # may go next; remaining ops are scanned in invoke order.
        horizon = inf
        for i in range(n):
            if not mask >> i & 1 and complete[i] < horizon:
                horizon = complete[i]
            if ops[i].invoke > horizon:
                break
        for i in range(n - 1, -1, -1):
            if mask >> i & 1 or ops[i].invoke > horizon:
                continue
            for nxt in step(state, ops[i]):
                stack.append((mask | 1 << i, nxt, order + (i,)))
    return False, explain(ops, complete, best)


def explain(ops, complete, best):
    _, mask, state, order = best
    lines = ["longest linearizable prefix (%d ops) ends in state %s:" % (
        len(order), state)]
    for i in order[-8:]:
        lines.append("  " + fmt(ops[i]))
    pending = [i for i in range(len(ops)) if not mask >> i & 1]
    pending.sort(key=lambda i: complete[i])
    lines.append("none of these can go next:")
    for i in pending[:8]:
        lines.append("  " + fmt(ops[i]))
    return "\n".join(lines)


def fmt(op):
    end = "?" if op.complete is None else "%.3f" % op.complete
    return "#%s c%s %-15s [%.3f, %s] %s" % (
        op.id, op.client, op.kind, op.invoke, end,
        " ".join(str(x) for x in op.outcome))


def check_history(ops, budget=2000000):
    """Check every case's history. Returns {case: explanation} for the cases
    that are not linearizable (empty: all linearizable)."""
    by_case = collections.defaultdict(list)
    for op in ops:
        by_case[op.case].append(op)
    bad = {}
    for case, case_ops in sorted(by_case.items()):
        initial = None if any(o.kind == "report" for o in case_ops) \
            else "REPORTED"
        ok, why = check_case(case_ops, initial, budget)
        if not ok:
            bad[case] = why
    return bad
