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

import bisect
import heapq
import itertools
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from notifier.core.budget import EXPECTED_RESPONSE, WINDOW_SECONDS

# What a place in the budget's window lasts (RequestBudget: from the grant to a window after
# the response): the budget grants about requests_per_minute / BUDGET_WINDOW a second.
BUDGET_WINDOW = WINDOW_SECONDS + EXPECTED_RESPONSE


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
    requests_per_minute: float, reserve: float, sync_per_s: float, share: float = 1.0,
    window: float = BUDGET_WINDOW,
) -> float:
    """Checks per second (syncStatus calls and direct syncs' first pages) the scheduler may
    make without starving sync pages.

    Checks and sync pages share one budget, which grants ``requests_per_minute`` per
    ``window``. Checks could fill it on their own, and then no change found would ever be
    fetched; so checks are paced at what the budget grants less what sync is paying now, and
    keep at least the reserve when sync wants more. No headroom is needed for a burst of
    pages while the estimate catches up (``share`` 1): waiting sync pages go before waiting
    checks (notifier.core.budget.GrantOrder), so such a burst delays checks, not pages, and
    the budget keeps a ``reserve`` share for the checks.
    """
    per_s = requests_per_minute / window
    return share * max(reserve * per_s, per_s - max(0.0, sync_per_s))


def pass_seconds(costs: Sequence[float], checks_per_s: float) -> float:
    """How long checking every group once takes at ``checks_per_s`` (inf without budget)."""
    if checks_per_s <= 0:
        return math.inf
    return sum(costs) / checks_per_s


def round_robin_pass(costs: Sequence[float], tokens: Iterable[tuple[float, float]],
                     requests_per_minute: float, reserve: float, share: float = 1.0,
                     window: float = BUDGET_WINDOW) -> float:
    """What a round-robin pass takes at the idle check pace: one syncStatus call per chunk
    of every group's tokens (``costs``), and a sync page per token it finds changed
    (``tokens``: how many tokens change at what rate per second, by class)."""
    cycle = pass_seconds(costs, status_budget(requests_per_minute, reserve, 0.0, share, window))
    syncs = math.fsum(n * -math.expm1(-rate * cycle) for n, rate in tokens)
    # Round-robin's own pace falls by the pages it pays: N / (share (R - syncs/pass)).
    return cycle + syncs / max(requests_per_minute / window, 1e-9)


def interval_at(price: float, rate: float, lo: float, hi: float) -> float:
    """The interval ``price / √rate`` within [lo, hi] (see ``solve_price``)."""
    return min(hi, max(lo, price / math.sqrt(max(rate, 1e-12))))


def solve_price(
    rates: Sequence[float],
    checks_per_s: float,
    lo: float,
    hi: float,
    costs: Sequence[float] | None = None,
) -> float:
    """The ``price`` at which intervals ``interval_at(price, r, lo, hi)`` spend exactly
    ``checks_per_s`` (each check of group i costing ``costs[i]``): 0 when everyone at ``lo``
    fits, inf when not even everyone at ``hi`` does.

    Spending falls as the price rises: groups with √r ≥ price/lo are at ``lo``, those with
    √r ≤ price/hi at ``hi``, the rest at price/√r. With the roots sorted and prefix sums of
    the costs, each trial price costs two binary searches, so the plan of 10,000 groups is
    solved in one sort.
    """
    n = len(rates)
    if costs is not None and len(costs) != n:
        raise ValueError("costs and rates must have the same length")
    hi = max(lo, hi)
    summed: dict[float, float] = {}  # groups alike (most are: never seen changing) as one
    for r, c in zip(rates, costs if costs is not None else [1.0] * n, strict=True):
        summed[r] = summed.get(r, 0.0) + max(0.0, float(c))
    pairs = sorted((math.sqrt(max(r, 1e-12)), w) for r, w in summed.items())
    roots = [r for r, _ in pairs]
    cum_w = [0.0, *itertools.accumulate(w for _, w in pairs)]
    cum_ws = [0.0, *itertools.accumulate(w * r for r, w in pairs)]
    if not pairs or cum_w[-1] / lo <= checks_per_s:
        return 0.0
    if cum_w[-1] / hi >= checks_per_s:
        return math.inf

    def total(c: float) -> float:
        at_hi = bisect.bisect_right(roots, c / hi)  # roots[:at_hi] at hi
        at_lo = bisect.bisect_left(roots, c / lo)  # roots[at_lo:] at lo
        return (cum_w[at_hi] / hi + (cum_ws[at_lo] - cum_ws[at_hi]) / c
                + (cum_w[-1] - cum_w[at_lo]) / lo)

    a, b = 0.0, hi * roots[-1]
    for _ in range(60):
        mid = (a + b) / 2
        if mid <= 0 or total(mid) > checks_per_s:
            a = mid
        else:
            b = mid
    return b


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
            if old.due == due:
                return
            old.live = False
        self._seq += 1
        entry = _Entry(due, self._seq, key)
        self._entries[key] = entry
        heapq.heappush(self._heap, entry)
        self._compact()

    def remove(self, key: object) -> None:
        old = self._entries.pop(key, None)
        if old is not None:
            old.live = False
            self._compact()

    def _compact(self) -> None:
        """Drop the dead entries once they outnumber the live ones (rescheduling leaves one
        behind each time): the heap stays within twice the keys."""
        if len(self._heap) > 2 * len(self._entries) + 64:
            self._heap = [e for e in self._heap if e.live]
            heapq.heapify(self._heap)

    def _clean(self) -> None:
        while self._heap and not self._heap[0].live:
            heapq.heappop(self._heap)

    def next_due(self) -> float | None:
        self._clean()
        return self._heap[0].due if self._heap else None

    def peek(self) -> object | None:
        """The key due first, left in place (None when empty)."""
        self._clean()
        return self._heap[0].key if self._heap else None

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
