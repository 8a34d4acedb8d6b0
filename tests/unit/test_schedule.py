"""Table tests of the scheduling decisions."""

from __future__ import annotations

import math

import pytest

from notifier.core.schedule import (
    DueQueue,
    effective_interval,
    quarantine_delay,
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


def test_due_queue_stays_small_under_rescheduling():
    q = DueQueue()
    for k in range(10):
        q.schedule(k, float(k))
    for r in range(1000):  # every reschedule leaves a dead entry behind
        q.schedule(r % 10, 100.0 + r)
    assert len(q) == 10
    assert len(q._heap) <= 2 * len(q) + 64
    assert q.peek() == 0  # 0 was last rescheduled at 1090, the earliest of the last ten
    assert [q.pop_due(math.inf) for _ in range(10)] == list(range(10))
