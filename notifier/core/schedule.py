"""Scheduling decisions (pure): when to check each container, quarantine delays, budget maths.

The scheduler checks *groups*: one (credential, container) with all the sync tokens of the
streams on it, so one syncStatus call covers them. Each group has a next-due time; a heap hands
out the most overdue group first, so when the budget is smaller than the work every group still
gets its turn (the effective interval stretches instead of some groups starving).

Adaptive policy: the budget is spread so that a group is checked at a frequency proportional to
the square root of its recent change rate, which minimises the mean detection delay for a fixed
number of checks (minimise Σ rᵢ/2fᵢ subject to Σ fᵢ = B gives fᵢ ∝ √rᵢ). Every interval is kept
between ``min_interval`` and ``max_staleness``, which bounds how stale a quiet group can get.
Round-robin checks every group at ``min_interval`` (stretched by the budget).
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field


def quarantine_delay(failures: int, initial: float, maximum: float) -> float:
    """Backoff before a quarantined stream is tried again: doubles per consecutive failure."""
    if failures <= 1:
        return min(initial, maximum)
    return float(min(maximum, initial * (2 ** min(failures - 1, 30))))


def effective_interval(groups: int, interval: float, status_per_minute: float) -> float:
    """How long one pass over ``groups`` takes when each check costs one request."""
    if groups <= 0 or status_per_minute <= 0:
        return interval
    return max(interval, groups * 60.0 / status_per_minute)


@dataclass(slots=True)
class ChangeRate:
    """An exponentially decayed count of checks that found changes, as a rate per second."""

    half_life: float
    prior_per_s: float
    count: float = 0.0
    updated_at: float | None = None

    def _decay(self, now: float) -> None:
        if self.updated_at is not None and now > self.updated_at:
            self.count *= 0.5 ** ((now - self.updated_at) / self.half_life)
        self.updated_at = now

    def record(self, now: float, changes: float = 1.0) -> None:
        self._decay(now)
        self.count += changes

    def rate(self, now: float) -> float:
        self._decay(now)
        # A decayed count with half-life H estimates rate * H / ln 2.
        return self.prior_per_s + self.count * math.log(2) / self.half_life


def solve_intervals(
    rates: Sequence[float], checks_per_s: float, min_interval: float, max_staleness: float
) -> list[float]:
    """Intervals ∝ 1/√rate, clamped, scaled so the total check rate fits the budget.

    If even ``max_staleness`` for everyone exceeds the budget, every interval is
    ``max_staleness`` and the budget stretches them in practice (the heap keeps it fair).
    """
    n = len(rates)
    if n == 0:
        return []
    lo, hi = min_interval, max(min_interval, max_staleness)
    roots = [math.sqrt(max(r, 1e-12)) for r in rates]

    def total(c: float) -> float:
        return sum(1.0 / min(hi, max(lo, c / s)) for s in roots)

    if total(0.0) <= checks_per_s:  # everyone at the minimum interval fits
        return [lo] * n
    if total(math.inf) >= checks_per_s:  # not even the cap fits: cap for all
        return [hi] * n
    a, b = 0.0, hi * max(roots)
    for _ in range(60):
        mid = (a + b) / 2
        if total(mid) > checks_per_s:
            a = mid
        else:
            b = mid
    return [min(hi, max(lo, b / s)) for s in roots]


@dataclass(order=True, slots=True)
class _Entry:
    due: float
    seq: int
    key: object = field(compare=False)
    live: bool = field(default=True, compare=False)


class DueQueue:
    """A heap of keys by due time, with cheap rescheduling (lazy deletion)."""

    def __init__(self) -> None:
        self._heap: list[_Entry] = []
        self._entries: dict[object, _Entry] = {}
        self._seq = 0

    def __len__(self) -> int:
        return len(self._entries)

    def schedule(self, key: object, due: float) -> None:
        old = self._entries.get(key)
        if old is not None:
            old.live = False
        self._seq += 1
        entry = _Entry(due, self._seq, key)
        self._entries[key] = entry
        heapq.heappush(self._heap, entry)

    def remove(self, key: object) -> None:
        old = self._entries.pop(key, None)
        if old is not None:
            old.live = False

    def _clean(self) -> None:
        while self._heap and not self._heap[0].live:
            heapq.heappop(self._heap)

    def next_due(self) -> float | None:
        self._clean()
        return self._heap[0].due if self._heap else None

    def pop_due(self, now: float) -> object | None:
        """The most overdue key whose time has come, or None."""
        self._clean()
        if not self._heap or self._heap[0].due > now:
            return None
        entry = heapq.heappop(self._heap)
        del self._entries[entry.key]
        return entry.key

    def due_of(self, key: object) -> float | None:
        e = self._entries.get(key)
        return e.due if e is not None else None

    def keys(self) -> Iterable[object]:
        return self._entries.keys()
