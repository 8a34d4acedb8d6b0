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


def status_budget(
    requests_per_minute: float, reserve: float, sync_per_s: float, share: float = 0.95
) -> float:
    """syncStatus calls per second the scheduler may make without starving sync pages.

    Status checks and sync pages share one budget, and the budget grants a sync page only
    while the window holds less than ``1 - reserve`` of its capacity, status included (the top
    ``reserve`` is for status alone, so a burst of pages cannot starve the checks). The
    converse needs pacing: status checks could fill the window on their own and no page would
    ever get a slot. So status stays under that line by what sync is paying now, and falls back
    to the reserve when sync needs more. ``share`` < 1 keeps headroom for sync bursts.
    """
    per_s = requests_per_minute / 60.0
    below_line = (1.0 - reserve) * per_s - max(0.0, sync_per_s)
    return share * max(reserve * per_s, below_line)


def pass_seconds(costs: Sequence[float], checks_per_s: float) -> float:
    """How long checking every group once takes at ``checks_per_s`` (inf without budget)."""
    if checks_per_s <= 0:
        return math.inf
    return sum(costs) / checks_per_s


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
    rates: Sequence[float],
    checks_per_s: float,
    min_interval: float,
    max_staleness: float,
    costs: Sequence[float] | None = None,
) -> list[float]:
    """Intervals ∝ 1/√rate, clamped, scaled so the total request rate fits the budget.

    ``costs`` are the requests one check of each group takes (1 each by default: one syncStatus
    call; a group with more tokens than fit in one call costs more). If even ``max_staleness``
    for everyone exceeds the budget, every interval is ``max_staleness`` and the budget
    stretches them in practice (the heap keeps it fair).
    """
    n = len(rates)
    if n == 0:
        return []
    lo, hi = min_interval, max(min_interval, max_staleness)
    roots = [math.sqrt(max(r, 1e-12)) for r in rates]
    weights = [1.0] * n if costs is None else [max(0.0, float(c)) for c in costs]
    if len(weights) != n:
        raise ValueError("costs and rates must have the same length")

    def total(c: float) -> float:
        return sum(w / min(hi, max(lo, c / s)) for s, w in zip(roots, weights, strict=True))

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
