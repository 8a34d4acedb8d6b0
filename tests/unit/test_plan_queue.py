"""Where groups wait (notifier.core.plan_queue through the Planner): a free check slot takes
a group planned below the cap early, re-plans bring groups forward only when it matters, and
the groups never seen changing are planned by kind like one by one."""

from __future__ import annotations

import itertools

import pytest

from notifier.core.plan_queue import PULL_SLACK
from notifier.core.planner import CONCENTRATION, Planner, SchedulerSettings
from notifier.core.schedule import interval_at

NOW = 1_000_000.0


def _planner(n: int = 100, **kw: object) -> Planner:
    plan = Planner(SchedulerSettings(interval=5.0, **kw),  # type: ignore[arg-type]
                   {f"c{i}": 1 for i in range(n)})
    for cid in plan.groups:
        plan.start(cid, None, NOW)
    plan.retune(NOW)
    return plan


def _check_all(plan: Planner, now: float) -> None:
    """Every group checked at ``now`` and rescheduled."""
    while (cid := plan.pop_due(now)) is not None:
        plan.checked(cid, now)
        plan.reschedule(cid, started=now, now=now)


def _busy(plan: Planner, cids: list[str], now: float, changes: int = 1) -> None:
    for cid in cids:
        plan.learn(cid, [("sub", now - 60, changes)], now)


BUSY = [f"c{i}" for i in range(20)]


def test_a_free_slot_takes_the_busy_group_due_next_early():
    plan = _planner(1000)  # the quiet ones at the cap, 20 busy ones sharing what is left
    _check_all(plan, NOW)
    _busy(plan, BUSY, NOW, changes=20)  # busy enough to leave the quiet ones at the cap
    replan = plan.retune(NOW)
    assert replan is not None
    assert plan.groups["c20"].interval == pytest.approx(replan.cap)
    _check_all(plan, NOW)
    later = NOW + 10  # nobody is due: the busy ones in a while, the quiet ones at the cap
    assert all(plan.groups[c].interval > 10 for c in BUSY)
    assert plan.pop_due(later) is None
    taken = [plan.pop_due(later, early=True) for _ in BUSY]
    assert sorted(taken, key=str) == sorted(BUSY)
    assert plan.pop_due(later, early=True) is None  # quiet groups at the cap never go early


def test_a_group_checked_less_than_the_interval_ago_does_not_go_early():
    plan = _planner(1000)
    _check_all(plan, NOW)
    _busy(plan, BUSY, NOW)
    plan.retune(NOW)
    _check_all(plan, NOW)
    assert plan.pop_due(NOW + 1, early=True) is None  # poll.interval is 5 s
    assert plan.pop_due(NOW + 5, early=True) in BUSY


def test_a_worker_with_a_free_slot_to_come_sleeps_until_a_group_may_go_early():
    plan = _planner(1000)
    _check_all(plan, NOW)
    _busy(plan, BUSY, NOW)
    plan.retune(NOW)
    _check_all(plan, NOW)
    assert plan.idle_wait(NOW + 6, slot_in=0.5) == pytest.approx(0.5)
    assert plan.idle_wait(NOW + 6) > 0.5  # without a slot to fill: until the next due
    # checked a second ago: not before poll.interval (5 s) is over, whatever the slot
    assert plan.idle_wait(NOW + 1, slot_in=0.0) == pytest.approx(4.0)


def _dues(plan: Planner) -> dict[str, float]:
    return {cid: plan.due_of(cid) or 0.0 for cid in plan.groups}


def test_a_replan_that_barely_moves_the_cap_leaves_the_queue_alone():
    plan = _planner(1000)
    _check_all(plan, NOW)
    before = _dues(plan)
    replan = plan.retune(NOW + 60)
    assert replan is not None
    assert not replan.pulled
    assert _dues(plan) == before
    for cid, g in plan.groups.items():  # the plan may be a trifle shorter than the queue...
        assert before[cid] <= NOW + g.interval * (1 + PULL_SLACK) + 1e-6
    _busy(plan, ["c7"], NOW + 61)  # ... but a group that turns busy moves at once
    replan = plan.retune(NOW + 62)
    assert replan is not None
    assert replan.pulled
    assert plan.due_of("c7") == pytest.approx(NOW + plan.groups["c7"].interval)


def test_a_hard_max_staleness_is_kept_to_the_second():
    plan = _planner(100, max_staleness=100.0)
    _check_all(plan, NOW)
    _busy(plan, [f"c{i}" for i in range(40)], NOW + 1)  # the quiet ones' share shrinks
    plan.retune(NOW + 2)
    for cid, g in plan.groups.items():
        assert g.interval <= 100.0
        assert (plan.due_of(cid) or 0.0) <= NOW + g.interval + 1e-6


def test_groups_at_the_prior_are_planned_as_if_one_by_one():
    plan = Planner(SchedulerSettings(interval=5.0),
                   {**{f"a{i}": 1 for i in range(300)}, **{f"b{i}": 3 for i in range(300)}})
    for cid in plan.groups:
        plan.start(cid, None, NOW)
    plan.retune(NOW)
    _check_all(plan, NOW)
    _busy(plan, ["a0", "b0"], NOW + 1)
    replan = plan.retune(NOW + 2)
    assert replan is not None
    used = sum(g.requests / g.interval for g in plan.groups.values())
    assert used == pytest.approx(plan.status_checks_per_s(), rel=1e-3)  # the whole pace
    price = plan._price
    for g in plan.groups.values():  # each at the interval its own weight gives
        weight = (g.rate / g.requests) ** (2 * CONCENTRATION)
        assert g.interval == pytest.approx(interval_at(price, weight, 5.0, replan.cap))
    assert plan.groups["a0"].interval < plan.groups["a1"].interval


def test_one_check_of_several_tokens_teaches_them_all_at_once():
    plan = _planner(10)
    plan.learn("c0", [("x", NOW - 60, True), ("y", NOW - 60, True), ("z", NOW - 60, False)],
               NOW)
    plan.learn("c1", [("x", NOW - 60, True)], NOW)
    assert set(plan.groups["c0"].tokens) == {"x", "y"}  # "z" never changed: at the prior
    assert plan.groups["c0"].rate == pytest.approx(2 * plan.groups["c1"].rate, rel=1e-6)
    assert plan.groups["c0"].interval <= plan.groups["c1"].interval
    assert plan.is_busy("c0", NOW)


def test_the_first_round_spreads_the_groups_at_the_cap_over_a_cap():
    """All groups start due at once and the first round checks them within a pass: due a cap
    after that, the quiet ones would come in a run every cap for ever. Their first interval
    is shortened by their place in the round instead, from half a cap to a whole one."""
    plan = _planner(1000)
    _busy(plan, BUSY, NOW, changes=20)  # the quiet ones at the cap
    cap = plan.retune(NOW).cap  # type: ignore[union-attr]
    started: dict[str, float] = {}
    t = NOW
    while (cid := plan.pop_due(t)) is not None:  # the first round, one check every 0.5 s
        started[cid] = t
        plan.checked(cid, t)
        plan.reschedule(cid, started=t, now=t)
        t += 0.5
    quiet = [c for c in started if c not in BUSY]
    firsts = [plan.due_of(c) - started[c] for c in quiet]  # type: ignore[operator]
    assert min(firsts) == pytest.approx(0.5 * cap, rel=0.03)
    assert max(firsts) == pytest.approx(cap, rel=1e-6)
    dues = sorted(plan.due_of(c) for c in quiet)  # type: ignore[type-var]
    assert dues[-1] - dues[0] >= 0.9 * cap  # spread over a cap, not over the round's 500 s
    assert max(b - a for a, b in itertools.pairwise(dues)) < 0.01 * cap  # evenly
    c = quiet[0]  # the next round: the whole cap again
    t = plan.due_of(c)  # type: ignore[assignment]
    _check_all(plan, t)  # c and the busy ones due by then
    assert plan.due_of(c) == pytest.approx(t + plan.groups[c].interval)
    assert plan.groups[c].interval == pytest.approx(cap, rel=0.01)
