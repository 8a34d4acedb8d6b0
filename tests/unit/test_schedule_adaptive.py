"""The adaptive policy's decisions: who gets checked how often, within which budget."""

from __future__ import annotations

import math
from typing import Literal

import pytest

from notifier.core.planner import (
    MAX_SLOT_PASSES,
    QUIET_PASSES,
    SLOT_ALLOWANCE,
    Planner,
    SchedulerSettings,
)
from notifier.core.schedule import (
    interval_at,
    pass_seconds,
    solve_price,
    status_budget,
)


def solve_intervals(rates: list[float], checks_per_s: float, min_interval: float,
                    max_staleness: float, costs: list[float] | None = None) -> list[float]:
    """The planner's intervals for these rates: ``solve_price``, then ``interval_at``."""
    lo, hi = min_interval, max(min_interval, max_staleness)
    price = solve_price(rates, checks_per_s, lo, hi, costs)
    return [interval_at(price, r, lo, hi) for r in rates]


def _used(intervals: list[float], costs: list[float] | None = None) -> float:
    costs = costs or [1.0] * len(intervals)
    return sum(c / i for c, i in zip(costs, intervals, strict=True))


# --- solve_intervals ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("busy", "quiet", "budget", "lo", "hi"),
    [
        (50, 950, 30.0, 1.5, 54.0),  # the benchmark's shape (one credential, K=20)
        (50, 950, 1.5, 30.0, 1080.0),  # the same in real time (120 rpm)
        (1, 9, 0.5, 1.0, 60.0),
        (10, 10, 100.0, 1.0, 60.0),  # budget covers everyone at the minimum
        (5, 500, 0.1, 1.0, 60.0),  # budget cannot cover max_staleness
    ],
)
def test_busy_groups_get_shorter_intervals_within_bounds_and_budget(busy, quiet, budget, lo, hi):
    rates = [1 / 300] * busy + [1 / 86400] * quiet
    iv = solve_intervals(rates, budget, lo, hi)
    assert all(lo <= i <= hi for i in iv)
    assert max(iv[:busy]) <= min(iv[busy:])
    everyone_at_cap = _used([hi] * len(rates))
    if everyone_at_cap <= budget:
        assert _used(iv) <= budget * (1 + 1e-6)  # never plans more checks than the budget
    else:
        assert iv == [hi] * len(rates)  # cannot fit: everyone at the cap, the heap stretches it
    if _used([lo] * len(rates)) > budget >= everyone_at_cap:
        assert _used(iv) == pytest.approx(budget, rel=1e-3)  # and spends all of it
        assert max(iv[:busy]) < min(iv[busy:])


def test_intervals_follow_inverse_square_root_of_rate():
    rates = [4e-2, 1e-2, 1e-3, 1e-6]
    iv = solve_intervals(rates, checks_per_s=0.3, min_interval=0.1, max_staleness=1e4)
    assert iv[1] / iv[0] == pytest.approx(2.0, rel=1e-6)  # 4x the rate, half the interval
    assert iv[2] / iv[1] == pytest.approx(math.sqrt(10), rel=1e-6)


def test_quiet_groups_are_capped_at_max_staleness_busy_take_the_rest():
    rates = [1 / 15] * 50 + [1e-5] * 950
    iv = solve_intervals(rates, checks_per_s=30.0, min_interval=1.5, max_staleness=54.0)
    assert iv[50:] == [54.0] * 950
    left = 30.0 - 950 / 54.0
    assert iv[0] == pytest.approx(50 / left, rel=1e-3)
    assert iv[0] < 54.0 / 5


def test_costs_weigh_groups_that_need_several_status_calls():
    rates = [1e-3, 1e-3]
    iv = solve_intervals(rates, 1.0, 0.1, 1000.0, costs=[1, 3])
    assert iv[0] == pytest.approx(iv[1])  # same rate, same interval...
    assert _used(iv, [1, 3]) == pytest.approx(1.0, rel=1e-3)  # ...and the cost is counted
    with pytest.raises(ValueError, match="same length"):
        solve_intervals(rates, 1.0, 0.1, 1000.0, costs=[1])


# --- the budget split -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rpm", "reserve", "sync_per_s", "expected"),
    [
        # The budget grants about rpm per 60.5 s (a place is held to 60 s after its response).
        (120, 0.2, 0.0, 120 / 60.5),  # checks may use the whole budget (the reserve too)...
        (120, 0.2, 0.5, 120 / 60.5 - 0.5),  # ... less what sync is paying now
        (120, 0.2, 5.0, 0.2 * 120 / 60.5),  # sync wants everything: checks keep the reserve
        (2400, 0.1, 3.0, 2400 / 60.5 - 3.0),
        (60, 0.0, 0.0, 60 / 60.5),
    ],
)
def test_status_budget(rpm, reserve, sync_per_s, expected):
    assert status_budget(rpm, reserve, sync_per_s) == pytest.approx(expected)


def test_status_budget_share_and_window():
    assert status_budget(120, 0.2, 0.5, 0.95, window=60.0) == pytest.approx(0.95 * 1.5)


@pytest.mark.parametrize("sync_per_s", [0.0, 0.2, 1.0])
def test_check_pace_leaves_sync_its_room_in_the_budget(sync_per_s):
    rpm, reserve = 120, 0.2
    checks = status_budget(rpm, reserve, sync_per_s)
    # Never more than the budget grants (rpm per 60.5 s: a place is held to 60 s after a
    # response in half a second) with what sync pays, unless sync wants more than all but the
    # reserve.
    assert checks + sync_per_s <= rpm / 60.5 + 1e-9 or checks == pytest.approx(reserve * rpm / 60.5)


def test_pass_seconds():
    assert pass_seconds([1, 1, 2], 2.0) == 2.0
    assert pass_seconds([1], 0.0) == math.inf


# --- the planner's retune ------------------------------------------------------------------------

CIDS = [f"00000000-0000-4000-8000-{n:012d}" for n in range(20)]
NOW = 1_000_000.0


def _planner(policy: Literal["adaptive", "round_robin"] = "adaptive", n: int = 20,
             rpm: int = 120, max_staleness: float | None = 600) -> Planner:
    settings = SchedulerSettings(interval=5.0, max_staleness=max_staleness, policy=policy,
                                 requests_per_minute=rpm, reserve=0.2)
    return Planner(settings, dict.fromkeys(CIDS[:n], 1))


def _checked_at(plan: Planner, now: float) -> None:
    """Every group checked at ``now`` and due again an interval later."""
    for cid, g in plan.groups.items():
        plan.start(cid, now, now + g.interval)


def test_retune_shortens_busy_groups_and_brings_them_forward():
    plan = _planner()
    first = plan.retune(NOW)
    assert first is not None
    assert not first.pulled
    _checked_at(plan, NOW)  # each due again at the first plan's interval
    before = {cid: g.interval for cid, g in plan.groups.items()}
    assert len(set(before.values())) == 1  # nobody has changed yet: all alike
    busy = CIDS[:3]
    for cid in busy:
        for k in range(5, 0, -1):
            plan.observe(cid, "sub", now=NOW - 60 * k, since=NOW - 60 * k - 60, changed=True)
    replan = plan.retune(NOW)
    assert replan is not None
    assert replan.pulled
    after = {cid: g.interval for cid, g in plan.groups.items()}
    assert max(after[c] for c in busy) < min(after[c] for c in CIDS[3:])
    assert all(5.0 <= iv <= 600 for iv in after.values())
    assert sum(1 / iv for iv in after.values()) <= plan.status_checks_per_s() * (1 + 1e-6)
    for cid in busy:  # due sooner than planned before the retune
        assert plan.due_of(cid) == pytest.approx(NOW + after[cid])
        assert after[cid] < before[cid]
        assert plan.is_busy(cid, NOW)
    assert not plan.is_busy(CIDS[3], NOW)


def test_round_robin_keeps_the_interval():
    plan = _planner("round_robin")
    plan.observe(CIDS[0], "sub", now=NOW, since=NOW - 5, changed=True)
    replan = plan.retune(NOW)
    assert replan is not None
    assert replan.effective_interval is None  # shown from passes
    assert {g.interval for g in plan.groups.values()} == {5.0}


def test_sync_pages_paid_lower_the_status_plan():
    plan = _planner()
    plan.retune(NOW)
    idle = plan.status_checks_per_s()
    plan.sync_pages_asked(60)  # one page per second over the next minute
    plan.retune(NOW + 60)
    assert plan.sync_pages_per_s == pytest.approx(1 - math.exp(-1), rel=1e-6)
    assert plan.status_checks_per_s() < idle
    assert plan.status_pace_per_s == pytest.approx(
        status_budget(120, 0.2, plan.sync_pages_per_s))


def test_a_budget_too_small_for_max_staleness_is_reported_once_with_the_stretched_pass():
    # 20 containers at under 2 checks/min cannot each be checked every 60 s: the cap is
    # QUIET_PASSES passes, leaving budget to the containers that change.
    plan = _planner(rpm=2, max_staleness=60)
    first, second = plan.retune(NOW), plan.retune(NOW + 1)
    assert first is not None
    assert second is not None
    assert (first.coverage, second.coverage) == ("lost", None)
    one_pass = 20 / plan.status_pace_per_s
    # (a round-robin pass: one call each, and the sync pages the changes it finds call for)
    # less the workers' check slots: here (2 checks a minute) more than MAX_SLOT_PASSES passes
    slots = SLOT_ALLOWANCE * plan.settings.workers / plan.status_pace_per_s
    assert slots > MAX_SLOT_PASSES * one_pass
    slots = MAX_SLOT_PASSES * one_pass
    assert QUIET_PASSES * one_pass - slots <= first.cap <= QUIET_PASSES * one_pass * 1.02 - slots
    # nobody changes: they share the whole budget alike, a pass each, within the cap
    assert [g.interval for g in plan.groups.values()] == pytest.approx([one_pass] * 20)
    assert first.effective_interval == pytest.approx(one_pass)
    assert first.effective_interval > 60


def test_a_budget_that_covers_shows_the_longest_planned_interval():
    plan = _planner(rpm=1200, max_staleness=60)
    replan = plan.retune(NOW)
    assert replan is not None
    assert replan.coverage is None  # covered from the start: no news
    assert replan.effective_interval == pytest.approx(
        max(g.interval for g in plan.groups.values()))
    assert replan.effective_interval <= 60


def test_coverage_regained_is_reported():
    plan = _planner(rpm=2, max_staleness=60)
    assert plan.retune(NOW).coverage == "lost"  # type: ignore[union-attr]
    plan.settings.requests_per_minute = 1200
    assert plan.retune(NOW + 5).coverage == "regained"  # type: ignore[union-attr]


def test_no_groups_no_plan():
    assert Planner(SchedulerSettings(), {}).retune(NOW) is None


# --- the due-queue, from tables -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("last_checked", "due"),
    [
        (None, NOW),  # never checked: due now
        (NOW - 2.0, NOW),  # checked before the restart: due now all the same
        (NOW - 60.0, NOW - 55.0),  # overdue: an interval after its last check, so first
    ],
)
def test_start_schedules_from_the_last_check(last_checked, due):
    plan = _planner(n=1)
    plan.start(CIDS[0], last_checked, NOW)
    assert plan.due_of(CIDS[0]) == due
    assert plan.groups[CIDS[0]].last_checked == last_checked


@pytest.mark.parametrize(
    ("quarantined_until", "due"),
    [
        ((), NOW + 5.0),  # interval after the check started, its duration not added
        ((0.0, 0.0), NOW + 5.0),
        ((NOW + 100.0, 0.0), NOW + 5.0),  # one stream still checkable: keep the interval
        ((NOW + 100.0, NOW + 50.0), NOW + 50.0),  # all quarantined: when the first is free
        ((NOW + 2.0, NOW + 3.0), NOW + 5.0),  # ... unless the interval is later anyway
    ],
)
def test_reschedule_waits_for_a_fully_quarantined_group(quarantined_until, due):
    plan = _planner(n=1)
    plan.start(CIDS[0], None, NOW)
    assert plan.pop_due(NOW) == CIDS[0]
    plan.reschedule(CIDS[0], started=NOW, now=NOW + 1.0, quarantined_until=quarantined_until)
    assert plan.due_of(CIDS[0]) == due


def test_reschedule_keeps_a_time_set_meanwhile():
    plan = _planner(n=1)
    plan.start(CIDS[0], None, NOW)
    plan.reschedule(CIDS[0], started=NOW, now=NOW)  # still queued: left alone
    assert plan.due_of(CIDS[0]) == NOW


@pytest.mark.parametrize(
    ("due_in", "wait"),
    [(None, 1.0), (0.0, 0.01), (2.5, 2.5), (60.0, 5.0)],
)
def test_idle_wait(due_in, wait):
    plan = _planner(n=1)
    if due_in is not None:
        plan.start(CIDS[0], NOW + due_in - 5.0, NOW + due_in)
    assert plan.idle_wait(NOW) == pytest.approx(wait)


@pytest.mark.parametrize(
    ("rpm", "calls", "waits"),
    [
        (120, 3, [0.0, 60.5 / 120, 2 * 60.5 / 120]),  # what the budget grants: 120 per 60.5 s
        (1200, 2, [0.0, 60.5 / 1200]),
    ],
)
def test_status_calls_are_paced(rpm, calls, waits):
    plan = _planner(rpm=rpm)
    assert [plan.status_slot(NOW) for _ in range(calls)] == pytest.approx(waits)
    assert plan.status_slot(NOW + 100) == 0.0  # idle meanwhile: no debt carried


@pytest.mark.parametrize(
    ("streams", "chunk", "cost"),
    [(1, 100, 1), (100, 100, 1), (101, 100, 2), (250, 100, 3), (5, 0, 5)],
)
def test_a_group_costs_one_call_per_chunk_of_tokens(streams, chunk, cost):
    plan = Planner(SchedulerSettings(status_chunk=chunk), {CIDS[0]: streams})
    assert plan.groups[CIDS[0]].cost == cost


def test_a_group_removed_while_its_check_is_in_flight_is_not_brought_back() -> None:
    """A hub project retired while its check runs: the check's end is told to the planner
    (observed, checked, rescheduled) without error, and the group stays gone."""
    plan = _planner(n=2)
    plan.remove_group(CIDS[0])
    plan.observe(CIDS[0], "token", now=NOW, since=NOW - 5, changed=True)
    plan.checked(CIDS[0], NOW)
    plan.reschedule(CIDS[0], started=NOW - 1, now=NOW)
    assert CIDS[0] not in plan.groups
    assert plan.due_of(CIDS[0]) is None
    assert CIDS[1] in plan.groups
