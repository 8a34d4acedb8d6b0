"""Table tests of the scheduling decisions."""

from __future__ import annotations

import pytest

from notifier.core.schedule import (
    DueQueue,
    effective_interval,
    quarantine_delay,
    solve_intervals,
)


@pytest.mark.parametrize(
    ("failures", "expected"),
    [(0, 30), (1, 30), (2, 60), (3, 120), (6, 960), (7, 1800), (50, 1800)],
)
def test_quarantine_delay_doubles_and_caps(failures, expected):
    assert quarantine_delay(failures, 30, 1800) == expected


@pytest.mark.parametrize(
    ("groups", "interval", "per_min", "expected"),
    [(10, 30, 120, 30), (1000, 30, 120, 500), (120, 30, 120, 60), (0, 30, 120, 30)],
)
def test_effective_interval(groups, interval, per_min, expected):
    assert effective_interval(groups, interval, per_min) == pytest.approx(expected)


def test_solve_intervals_all_fit_at_minimum():
    assert solve_intervals([0.1, 0.0, 5.0], checks_per_s=100, min_interval=1,
                           max_staleness=60) == [1, 1, 1]


def test_solve_intervals_spends_budget_on_busy_groups():
    rates = [1.0] * 10 + [1e-5] * 90
    iv = solve_intervals(rates, checks_per_s=2.0, min_interval=1, max_staleness=600)
    used = sum(1 / i for i in iv)
    assert used == pytest.approx(2.0, rel=1e-3)
    assert max(iv[:10]) < min(iv[10:])
    assert all(1 <= i <= 600 for i in iv)


def test_solve_intervals_caps_when_budget_too_small():
    assert solve_intervals([1.0] * 10, checks_per_s=0.001, min_interval=1,
                           max_staleness=60) == [60] * 10


def test_due_queue_orders_and_reschedules():
    q = DueQueue()
    q.schedule("a", 5)
    q.schedule("b", 1)
    q.schedule("c", 3)
    q.schedule("b", 10)  # rescheduled later
    assert q.next_due() == 3
    assert q.pop_due(4) == "c"
    assert q.pop_due(4) is None
    assert q.pop_due(100) == "a"
    assert q.pop_due(100) == "b"
    assert len(q) == 0
