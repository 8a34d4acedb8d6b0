"""Per-credential request budget: stay under the service's 120 requests per sliding minute.

``TokenBucket`` is the arithmetic (pure: the time is passed in). Two rules must both allow a
request:

* a token bucket of ``burst`` tokens refilled at ``rate_per_minute / 60`` per second smooths the
  traffic (at most ``burst`` requests back to back);
* a log of the grants of the last ``window`` seconds caps them at ``rate_per_minute``. This is what
  makes the guarantee hold: in ANY window ``(t - 60, t]`` at most ``rate_per_minute`` requests are
  granted, whatever the burst (a bucket alone allows ``burst + rate`` per window).

``sync`` requests may not take more than ``1 - reserve`` of the window's capacity (counting sync
grants only), so the scheduler's checks (``status``: syncStatus calls and the first page of a
direct sync) always find room; checks may use the whole window. A 429 ``Retry-After`` pauses
every request of the credential (``pause_until``).

``GrantOrder`` (pure too) decides who of the waiting requests goes next: *pages first*. A sync
page is the rest of a change already found, so it goes before the checks waiting (checks may
then be paced up to the whole budget: a burst of pages never queues behind them), except that
checks are owed ``reserve`` of every ``SHARE_HORIZON`` grants while they wait (a burst of pages
holds them back for a few grants at most, besides the window's own reserve). FIFO within a
priority. ``RequestBudget`` is the asyncio wrapper shared by every request of one credential.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections import deque
from dataclasses import dataclass
from typing import Literal

log = logging.getLogger(__name__)

Priority = Literal["status", "sync"]

WINDOW_SECONDS = 60.0
# RequestBudget counts over 61 s: the server counts arrivals, we count grants, and network
# jitter between the two must not turn an exact 60 s spacing into a 429 (which would pause the
# whole credential for Retry-After). Costs 1/61 of the throughput.
JITTER_ALLOWANCE = 1.0
DEFAULT_BURST = 10
# The loop may fire a timer a hair early; never re-arm a timer shorter than this.
_MIN_TIMER = 0.001
_EPSILON = 1e-9
_MIN_WAIT = 1e-6
# Checks waiting are owed ``reserve`` of this many grants (GrantOrder): with the default 0.2,
# two of every ten, so a burst of pages holds a check back for about 4 s at most.
SHARE_HORIZON = 10


class TokenBucket:
    """Token bucket plus sliding-window cap; ``take(now)`` returns seconds to wait, 0 if granted."""

    def __init__(
        self,
        rate_per_minute: int,
        burst: int | None = None,
        *,
        reserve: float = 0.0,
        window: float = WINDOW_SECONDS,
    ) -> None:
        if rate_per_minute < 1:
            raise ValueError(f"rate_per_minute must be >= 1, got {rate_per_minute}")
        if burst is None:
            burst = min(DEFAULT_BURST, rate_per_minute)
        if not 1 <= burst <= rate_per_minute:
            raise ValueError(f"burst must be in [1, {rate_per_minute}], got {burst}")
        if not 0.0 <= reserve < 1.0:
            raise ValueError(f"reserve must be in [0, 1), got {reserve}")
        if window <= 0:
            raise ValueError(f"window must be > 0, got {window}")
        self.rate_per_minute = rate_per_minute
        self.burst = burst
        self.reserve = reserve
        self.window = window
        self._refill_per_second = rate_per_minute / window
        self._limits: dict[Priority, int] = {
            "status": rate_per_minute,
            # At least one, so sync traffic can always make progress.
            "sync": max(1, math.floor(rate_per_minute * (1.0 - reserve) + _EPSILON)),
        }
        self._tokens = float(burst)
        self._last: float | None = None
        self._grants: deque[float] = deque()
        self._sync_grants: deque[float] = deque()
        self._paused_until = -math.inf

    def limit(self, priority: Priority) -> int:
        """How many requests of ``priority`` may be granted in one window."""
        return self._limits[priority]

    @property
    def paused_until(self) -> float:
        return self._paused_until

    def pause_until(self, t: float) -> None:
        """Grant nothing before ``t`` (429 Retry-After); an earlier ``t`` never shortens a pause."""
        self._paused_until = max(self._paused_until, t)

    def take(self, now: float, *, priority: Priority = "sync") -> float:
        """Grant one request at ``now`` and return 0, or return the seconds to wait (no grant)."""
        now = self._advance(now)
        waits: list[float] = []
        if now < self._paused_until:
            waits.append(self._paused_until - now)
        if self._tokens + _EPSILON < 1.0:
            waits.append((1.0 - self._tokens) / self._refill_per_second)
        for grants, limit in ((self._grants, self.rate_per_minute),
                              (self._sync_grants, self._limits["sync"])):
            if len(grants) >= limit:
                # The grant that must leave the window before one more fits in it.
                waits.append(grants[len(grants) - limit] + self.window - now)
            if priority == "status":
                break
        if waits:
            # Rounding can make a wait come out as 0 (or below) at an exact boundary; a refusal
            # must still read as a refusal.
            return max(*waits, _MIN_WAIT)
        self._tokens = max(0.0, self._tokens - 1.0)
        self._grants.append(now)
        if priority == "sync":
            self._sync_grants.append(now)
        return 0.0

    def _advance(self, now: float) -> float:
        """Refill and expire old grants; time never runs backwards inside the bucket."""
        if self._last is not None:
            now = max(now, self._last)
            elapsed = now - self._last
            self._tokens = min(float(self.burst), self._tokens + elapsed * self._refill_per_second)
        self._last = now
        horizon = now - self.window
        for grants in (self._grants, self._sync_grants):
            while grants and grants[0] <= horizon:
                grants.popleft()
        return now


class GrantOrder:
    """The waiting requests of one ``TokenBucket`` and who goes next (pure: the time is
    passed in; see the module doc): ``add`` a request, then ``grant(now)`` hands out the
    tickets the bucket allows now, in order, and the seconds until it is worth asking again."""

    def __init__(self, bucket: TokenBucket, horizon: int = SHARE_HORIZON) -> None:
        self.bucket = bucket
        self._waiting: dict[Priority, deque[int]] = {"sync": deque(), "status": deque()}
        self._recent: deque[Priority] = deque(maxlen=max(1, horizon))
        self._owed = bucket.reserve * max(1, horizon)  # checks' grants per horizon
        self._tickets = 0

    def __len__(self) -> int:
        return len(self._waiting["sync"]) + len(self._waiting["status"])

    def add(self, priority: Priority) -> int:
        """Queue one request; its ticket comes back from ``grant`` once it may go."""
        self._tickets += 1
        self._waiting[priority].append(self._tickets)
        return self._tickets

    def take_now(self, priority: Priority, now: float) -> bool:
        """Grant a request at once if nobody waits and the bucket allows it (the usual case:
        no ticket, no line); False: ``add`` it."""
        if self._waiting["sync"] or self._waiting["status"]:
            return False
        if self.bucket.take(now, priority=priority) > 0:
            return False
        self._recent.append(priority)
        return True

    def remove(self, ticket: int) -> None:
        """Take a request out of the line (cancelled); nothing if it is not waiting."""
        for line in self._waiting.values():
            if ticket in line:
                line.remove(ticket)
                return

    def grant(self, now: float) -> tuple[list[int], float]:
        """(tickets granted at ``now``, in order; seconds until the next may go, inf when
        nobody waits)."""
        granted: list[int] = []
        while True:
            ticket, wait = self._next(now)
            if ticket is None:
                return granted, wait
            granted.append(ticket)

    def _next(self, now: float) -> tuple[int | None, float]:
        """Grant the request that goes next, if the bucket allows: (its ticket, 0), or (None,
        seconds to wait)."""
        waits = [math.inf]
        for priority in self._order():
            wait = self.bucket.take(now, priority=priority)
            if wait <= 0:
                self._recent.append(priority)
                return self._waiting[priority].popleft(), 0.0
            waits.append(wait)
            if priority == "status":
                break  # status has the larger limit: if it must wait, everyone must
        return None, min(waits)

    def _order(self) -> tuple[Priority, ...]:
        """Who is asked first: sync, unless checks waiting are owed their share."""
        sync, status = bool(self._waiting["sync"]), bool(self._waiting["status"])
        if not (sync and status):
            return ("sync",) if sync else ("status",) if status else ()
        if sum(1 for p in self._recent if p == "status") < self._owed:
            return ("status", "sync")
        return ("sync", "status")


@dataclass(frozen=True, slots=True)
class BudgetStats:
    """Counters for metrics: requests granted, total seconds callers waited, 429 pauses."""

    granted: int
    waited_seconds: float
    pauses: int
    paused_seconds: float


@dataclass(slots=True)
class _Waiter:
    future: asyncio.Future[None]
    since: float


class RequestBudget:
    """The asyncio face of a ``TokenBucket``: ``await acquire()`` before every request; the
    waiting ones go in ``GrantOrder``'s order (pages first)."""

    def __init__(
        self,
        rate_per_minute: int = 120,
        burst: int | None = None,
        *,
        reserve: float = 0.0,
        window: float = WINDOW_SECONDS + JITTER_ALLOWANCE,
        name: str = "",
    ) -> None:
        self.name = name
        self._bucket = TokenBucket(rate_per_minute, burst, reserve=reserve, window=window)
        self._order = GrantOrder(self._bucket)
        self._waiters: dict[int, _Waiter] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._granted = 0
        self._waited = 0.0
        self._pauses = 0
        self._paused = 0.0

    @property
    def bucket(self) -> TokenBucket:
        return self._bucket

    @property
    def stats(self) -> BudgetStats:
        return BudgetStats(self._granted, self._waited, self._pauses, self._paused)

    @property
    def waiting(self) -> int:
        """Callers currently queued in ``acquire``."""
        return len(self._order)

    async def acquire(self, priority: Priority = "sync") -> None:
        """Wait for this caller's turn and for room in the budget; consumes one request."""
        loop = asyncio.get_running_loop()
        if self._order.take_now(priority, loop.time()):  # nobody waits: no future, no line
            self._granted += 1
            return
        ticket = self._order.add(priority)
        waiter = self._waiters[ticket] = _Waiter(loop.create_future(), loop.time())
        self._dispatch()
        if waiter.future.done():
            return  # granted at once
        try:
            await waiter.future
        except asyncio.CancelledError:
            if self._waiters.pop(ticket, None) is not None:
                # Still queued: leave the line. (A grant that raced the cancel is simply spent.)
                self._order.remove(ticket)
                self._dispatch()
            raise

    def pause(self, seconds: float) -> None:
        """Hold every request of this credential for ``seconds`` (a 429's Retry-After)."""
        now = asyncio.get_running_loop().time()
        before = max(self._bucket.paused_until, now)
        self._bucket.pause_until(now + max(0.0, seconds))
        self._pauses += 1
        self._paused += max(0.0, self._bucket.paused_until - before)
        log.info("budget %s paused for %.1fs", self.name or "-", seconds)
        self._dispatch()

    def _dispatch(self) -> None:
        """Grant the waiters the bucket allows now; arm a timer for the rest."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        loop = asyncio.get_running_loop()
        now = loop.time()
        for ticket in [t for t, w in self._waiters.items() if w.future.done()]:
            del self._waiters[ticket]  # cancelled, its task not yet run: out of the line
            self._order.remove(ticket)
        granted, wait = self._order.grant(now)
        for ticket in granted:
            waiter = self._waiters.pop(ticket)
            self._granted += 1
            self._waited += now - waiter.since
            waiter.future.set_result(None)
        if self._order and wait < math.inf:
            self._timer = loop.call_later(max(wait, _MIN_TIMER), self._dispatch)
