"""Sliding-window arithmetic of the simulator's per-user rate limit."""

from __future__ import annotations

import pytest

from notifier.simulator.limits import SlidingWindowLimiter


@pytest.mark.parametrize(
    ("limit", "hits", "at", "expected"),
    [
        (3, [0.0, 1.0, 2.0], 3.0, 57),      # oldest frees at 60.0
        (3, [0.0, 1.0, 2.0], 59.5, 1),      # rounds up, never 0
        (3, [0.0, 1.0, 2.0], 60.0, None),   # oldest left the window
        (2, [0.0, 10.0, 20.0], 30.0, 40),   # limit lowered to 2: wait until 10.0 leaves
        (1, [0.0, 10.0, 20.0], 30.0, 50),   # limit lowered to 1: wait until 20.0 leaves
        (0, [0.0] * 50, 1.0, None),          # 0 = unlimited
    ],
)
def test_retry_after(limit: int, hits: list[float], at: float, expected: int | None):
    lim = SlidingWindowLimiter()
    for t in hits:
        lim.acquire("u", 0, t)
    assert lim.acquire("u", limit, at) == expected


def test_users_are_independent_and_refusals_are_not_counted():
    lim = SlidingWindowLimiter()
    assert lim.acquire("a", 1, 0.0) is None
    assert lim.acquire("a", 1, 1.0) == 59
    assert lim.acquire("a", 1, 2.0) == 58
    assert lim.acquire("b", 1, 2.0) is None
    assert lim.acquire("a", 1, 60.0) is None
    assert lim.peak == {"a": 1, "b": 1}
