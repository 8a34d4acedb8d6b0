"""The adaptive policy's decisions: who gets checked how often, within which budget."""

from __future__ import annotations

import asyncio
import logging
import math
from typing import Literal

import pytest
from prometheus_client import CollectorRegistry

from notifier.core.schedule import (
    ChangeRate,
    pass_seconds,
    solve_intervals,
    status_budget,
)
from notifier.metrics import Metrics
from notifier.scheduler import CredentialScheduler, SchedulerSettings
from notifier.sync import StreamSpec


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
        (120, 0.2, 0.0, 0.95 * 1.6),  # status stays under the sync line: 80% of 2/s
        (120, 0.2, 0.5, 0.95 * 1.1),  # ... by what sync is paying now
        (120, 0.2, 5.0, 0.95 * 0.4),  # sync wants everything: status keeps the reserve
        (2400, 0.1, 3.0, 0.95 * 33.0),
        (60, 0.0, 0.0, 0.95 * 1.0),
    ],
)
def test_status_budget(rpm, reserve, sync_per_s, expected):
    assert status_budget(rpm, reserve, sync_per_s) == pytest.approx(expected)


@pytest.mark.parametrize("sync_per_s", [0.0, 0.2, 1.0])
def test_status_pace_leaves_sync_its_room_below_the_line(sync_per_s):
    rpm, reserve = 120, 0.2
    status = status_budget(rpm, reserve, sync_per_s)
    line = (1 - reserve) * rpm / 60  # the budget grants sync pages only below this
    assert status + sync_per_s < line or status == pytest.approx(0.95 * reserve * rpm / 60)


def test_pass_seconds():
    assert pass_seconds([1, 1, 2], 2.0) == 2.0
    assert pass_seconds([1], 0.0) == math.inf


def test_change_rate_starts_at_the_prior_and_rises_with_changes():
    r = ChangeRate(half_life=60, prior_per_s=1e-5)
    assert r.rate(0) == pytest.approx(1e-5)
    r.record(0)
    r.record(10)
    fresh = r.rate(10)
    assert fresh > 100 * r.prior_per_s
    faded = r.rate(10 + 600) - r.prior_per_s  # ten half-lives later
    assert faded < (fresh - r.prior_per_s) / 1000


# --- the scheduler's retune -----------------------------------------------------------------------

CIDS = [f"00000000-0000-4000-8000-{n:012d}" for n in range(20)]


class _Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def _scheduler(policy: Literal["adaptive", "round_robin"] = "adaptive", n: int = 20,
               rpm: int = 120, max_staleness: float = 600, metrics: Metrics | None = None,
               clock: _Clock | None = None) -> CredentialScheduler:
    specs = [StreamSpec("sub", cid, ("main",), ()) for cid in CIDS[:n]]
    settings = SchedulerSettings(interval=5.0, max_staleness=max_staleness, policy=policy,
                                 requests_per_minute=rpm, reserve=0.2)
    return CredentialScheduler("main", None, specs, store=None, syncer=None,  # type: ignore[arg-type]
                               settings=settings, drain_slots=asyncio.Semaphore(1),
                               metrics=metrics or Metrics(CollectorRegistry(), runtime=False),
                               clock=clock or _Clock())


def _checked_now(sch: CredentialScheduler, clock: _Clock) -> None:
    for g in sch.groups.values():
        g.last_checked = clock.now
        sch._queue.schedule(g.container_id, clock.now + g.interval)


def test_retune_shortens_busy_groups_and_brings_them_forward():
    clock = _Clock()
    sch = _scheduler(clock=clock)
    _checked_now(sch, clock)
    sch.retune()
    before = {cid: g.interval for cid, g in sch.groups.items()}
    assert len(set(before.values())) == 1  # nobody has changed yet: all alike
    busy = CIDS[:3]
    for cid in busy:
        for k in range(5):
            sch.groups[cid].rate.record(clock.now - 60 * k)
    sch.retune()
    after = {cid: g.interval for cid, g in sch.groups.items()}
    assert max(after[c] for c in busy) < min(after[c] for c in CIDS[3:])
    assert all(5.0 <= iv <= 600 for iv in after.values())
    assert sum(1 / iv for iv in after.values()) <= sch.status_checks_per_s() * (1 + 1e-6)
    for cid in busy:  # due sooner than planned before the retune
        assert sch._queue.due_of(cid) == pytest.approx(clock.now + after[cid])
        assert after[cid] < before[cid]


def test_round_robin_keeps_the_interval():
    clock = _Clock()
    sch = _scheduler("round_robin", clock=clock)
    sch.groups[CIDS[0]].rate.record(clock.now, 10)
    sch.retune()
    assert {g.interval for g in sch.groups.values()} == {5.0}


def test_sync_pages_paid_lower_the_status_plan():
    clock = _Clock()
    sch = _scheduler(clock=clock)
    sch.retune()
    idle = sch.status_checks_per_s()
    sch._sync_pages = 60  # one page per second over the next minute
    clock.now += 60
    sch.retune()
    assert sch.sync_pages_per_s == pytest.approx(1 - math.exp(-1), rel=1e-6)
    assert sch.status_checks_per_s() < idle
    assert sch.status_pace_per_s == pytest.approx(
        status_budget(120, 0.2, sch.sync_pages_per_s, 0.95))


def test_a_budget_too_small_for_max_staleness_is_logged_once_and_shown(caplog):
    caplog.set_level(logging.INFO, logger="notifier.scheduler")
    metrics = Metrics(CollectorRegistry(), runtime=False)
    clock = _Clock()
    # 20 containers at 1.2 status calls/min cannot each be checked every 60 s.
    sch = _scheduler(rpm=2, max_staleness=60, metrics=metrics, clock=clock)
    sch.retune()
    sch.retune()
    warnings = [r for r in caplog.records if "too small for max_staleness" in r.getMessage()]
    assert len(warnings) == 1
    assert {g.interval for g in sch.groups.values()} == {60.0}
    shown = metrics.registry.get_sample_value(
        "notifier_scheduler_effective_interval_seconds", {"credential": "main"})
    assert shown is not None
    assert shown == pytest.approx(20 / sch.status_checks_per_s())
    assert shown > 60


def test_a_budget_that_covers_shows_the_longest_planned_interval():
    metrics = Metrics(CollectorRegistry(), runtime=False)
    sch = _scheduler(rpm=1200, max_staleness=60, metrics=metrics)
    sch.retune()
    shown = metrics.registry.get_sample_value(
        "notifier_scheduler_effective_interval_seconds", {"credential": "main"})
    assert shown is not None
    assert shown == pytest.approx(max(g.interval for g in sch.groups.values()))
    assert shown <= 60
