"""Per-credential request budget: stay under the service's 120 requests per sliding minute.

``TokenBucket`` is the arithmetic (pure: the time is passed in). Two rules must both allow a
request:

* a token bucket of ``burst`` tokens refilled at ``rate_per_minute / 60`` per second smooths the
  traffic (at most ``burst`` requests back to back);
* a log of the places in the window caps them at ``rate_per_minute``: a grant holds its place
  from the grant until ``window`` after its response arrived (``done``), or ``window +
  allowance`` after the grant or the give-up when no response is known. This is what makes the
  guarantee hold: the service counts a request when it arrives, which is after our grant and
  before its response reaches us, so while a request's place is held it may still be counted
  in some window of the service's, and once it is released it is out of every window ending
  later. Hence in ANY window ``(t - 60, t]`` the service counts at most ``rate_per_minute`` of
  ours (of any ``rate_per_minute + 1``, the one granted last would have found the others'
  places all held), whatever the burst (a bucket alone allows ``burst + rate`` per window)
  and without any assumption on the network for answered requests. ``allowance`` (1 s) is
  the margin for the others: a request given up on may still arrive a little later.

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
from bisect import bisect_left, bisect_right, insort
from collections import deque
from dataclasses import dataclass
from typing import Literal

log = logging.getLogger(__name__)

Priority = Literal["status", "sync"]

WINDOW_SECONDS = 60.0
# A request with no response known (given up on, cancelled, or not reported with ``done``)
# keeps its place this much longer: it may reach the service a little after we gave up on it,
# and a 429 would pause the whole credential for Retry-After. An answered request needs no
# margin (module doc), so what the budget costs is about one response time per window.
JITTER_ALLOWANCE = 1.0
# What pacing assumes a request's place costs beyond the window: a response within half a
# second (notifier.core.schedule). Slower responses make checks wait in the budget's line
# (pages still go first); faster ones leave a fraction of a percent unused.
EXPECTED_RESPONSE = 0.5
DEFAULT_BURST = 10
# The loop may fire a timer a hair early; never re-arm a timer shorter than this.
_MIN_TIMER = 0.001
_EPSILON = 1e-9
_MIN_WAIT = 1e-6
# Checks waiting are owed ``reserve`` of this many grants (GrantOrder): with the default 0.2,
# two of every ten, so a burst of pages holds a check back for about 4 s at most.
SHARE_HORIZON = 10


class TokenBucket:
    """Token bucket plus sliding-window cap; ``take(now)`` returns seconds to wait, 0 if granted
    (the grant is then ``granted``: pass it to ``done`` when its response arrived)."""

    def __init__(
        self,
        rate_per_minute: int,
        burst: int | None = None,
        *,
        reserve: float = 0.0,
        window: float = WINDOW_SECONDS,
        allowance: float = 0.0,
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
        if allowance < 0:
            raise ValueError(f"allowance must be >= 0, got {allowance}")
        self.rate_per_minute = rate_per_minute
        self.burst = burst
        self.reserve = reserve
        self.window = window
        self.allowance = allowance
        self._refill_per_second = rate_per_minute / window
        self._limits: dict[Priority, int] = {
            "status": rate_per_minute,
            # At least one, so sync traffic can always make progress.
            "sync": max(1, math.floor(rate_per_minute * (1.0 - reserve) + _EPSILON)),
        }
        self._sync_limit = self._limits["sync"]
        self._burst = float(burst)
        self._open_cap = 4 * rate_per_minute
        self._tokens = float(burst)
        self._last: float | None = None
        # Each place in the window, all and sync (sorted): the last moment its request may reach
        # the service (its grant + allowance, or its end: ``done``); it frees a window later.
        self._reach: list[float] = []
        self._sync_reach: list[float] = []
        self._open: dict[int, tuple[float, bool]] = {}  # grant -> (its reach, sync?)
        self.granted = 0  # grants so far: the id of the last one
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
        tokens = self._tokens
        if (now >= self._paused_until and tokens + _EPSILON >= 1.0
                and len(self._reach) < self.rate_per_minute
                and (priority == "status" or len(self._sync_reach) < self._sync_limit)):
            # Room in every rule (the usual case): grant.
            tokens -= 1.0
            self._tokens = tokens if tokens > 0.0 else 0.0
            reach = now + self.allowance  # until its response is known (``done``)
            insort(self._reach, reach)
            sync = priority == "sync"
            if sync:
                insort(self._sync_reach, reach)
            self.granted += 1
            self._open[self.granted] = (reach, sync)
            if len(self._open) > self._open_cap:  # grants never reported: forget them
                self._open = {k: v for k, v in self._open.items() if v[0] > now - self.window}
            return 0.0
        waits: list[float] = []
        if now < self._paused_until:
            waits.append(self._paused_until - now)
        if tokens + _EPSILON < 1.0:
            waits.append((1.0 - tokens) / self._refill_per_second)
        for places, limit in ((self._reach, self.rate_per_minute),
                              (self._sync_reach, self._sync_limit)):
            if len(places) >= limit:
                # The place that must free before one more fits in the window.
                waits.append(places[len(places) - limit] + self.window - now)
            if priority == "status":
                break
        # Rounding can make a wait come out as 0 (or below) at an exact boundary; a refusal
        # must still read as a refusal.
        return max(*waits, _MIN_WAIT)

    def done(self, grant: int, at: float, *, answered: bool = True) -> None:
        """Grant ``grant``'s request ended at ``at``: its response arrived (``answered``: its
        place frees ``window`` later, sooner than it would have with no response known when
        that came within the allowance), or it was given up on (``window + allowance``
        later). Its place is held from the grant to then without a break: a request's end
        comes before its grant's place would have freed (timeouts are shorter than a window)."""
        held = self._open.pop(grant, None)
        if held is None:
            return  # reported twice, or forgotten
        old, sync = held
        reach = at if answered else at + self.allowance
        _move(self._reach, old, reach)
        if sync:
            _move(self._sync_reach, old, reach)

    def _advance(self, now: float) -> float:
        """Refill and expire the places that freed; time never runs backwards inside the
        bucket."""
        last = self._last
        if last is not None:
            now = max(now, last)
            tokens = self._tokens + (now - last) * self._refill_per_second
            self._tokens = self._burst if tokens > self._burst else tokens
        self._last = now
        freed = now - self.window
        for places in (self._reach, self._sync_reach):
            if places and places[0] <= freed:
                del places[:bisect_right(places, freed)]
        return now


def _move(places: list[float], old: float, new: float) -> None:
    """Replace one ``old`` of the sorted ``places`` (if there) by ``new``, keeping the order."""
    i = bisect_left(places, old)
    if i < len(places) and places[i] == old:
        del places[i]
    insort(places, new)


class GrantOrder:
    """The waiting requests of one ``TokenBucket`` and who goes next (pure: the time is
    passed in; see the module doc): ``add`` a request, then ``grant(now)`` hands out the
    tickets the bucket allows now, in order, each with the bucket's grant (for
    ``TokenBucket.done``), and the seconds until it is worth asking again."""

    def __init__(self, bucket: TokenBucket, horizon: int = SHARE_HORIZON) -> None:
        self.bucket = bucket
        self._sync_line, self._status_line = deque[int](), deque[int]()
        self._waiting: dict[Priority, deque[int]] = {"sync": self._sync_line,
                                                     "status": self._status_line}
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

    def take_now(self, priority: Priority, now: float) -> int | None:
        """Grant a request at once if nobody waits and the bucket allows it (the usual case:
        no ticket, no line): the bucket's grant (for ``TokenBucket.done``); None: ``add`` it."""
        if self._sync_line or self._status_line:
            return None
        bucket = self.bucket
        if bucket.take(now, priority=priority) > 0:
            return None
        self._recent.append(priority)
        return bucket.granted

    def remove(self, ticket: int) -> None:
        """Take a request out of the line (cancelled); nothing if it is not waiting."""
        for line in self._waiting.values():
            if ticket in line:
                line.remove(ticket)
                return

    def grant(self, now: float) -> tuple[list[tuple[int, int]], float]:
        """((ticket, the bucket's grant) of each request granted at ``now``, in order; seconds
        until the next may go, inf when nobody waits)."""
        granted: list[tuple[int, int]] = []
        while True:
            ticket, wait = self._next(now)
            if ticket is None:
                return granted, wait
            granted.append((ticket, self.bucket.granted))

    def _next(self, now: float) -> tuple[int | None, float]:
        """Grant the request that goes next, if the bucket allows: (its ticket, 0; the
        bucket's ``granted`` is its grant), or (None, seconds to wait)."""
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
    future: asyncio.Future[int]
    since: float


class RequestBudget:
    """The asyncio face of a ``TokenBucket``: ``grant = await acquire()`` before every
    request, ``release(grant, answered=...)`` once its response arrived or it was given up
    on (the place in the window frees a window later: module doc); the waiting ones go in
    ``GrantOrder``'s order (pages first). ``window`` is the service's, ``allowance`` the
    margin for requests with no response known."""

    def __init__(
        self,
        rate_per_minute: int = 120,
        burst: int | None = None,
        *,
        reserve: float = 0.0,
        window: float = WINDOW_SECONDS,
        allowance: float = JITTER_ALLOWANCE,
        name: str = "",
    ) -> None:
        self.name = name
        self._bucket = TokenBucket(rate_per_minute, burst, reserve=reserve, window=window,
                                   allowance=allowance)
        self._order = GrantOrder(self._bucket)
        self._waiters: dict[int, _Waiter] = {}  # by ticket
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

    async def acquire(self, priority: Priority = "sync") -> int:
        """Wait for this caller's turn and for room in the budget; consumes one request. The
        grant, for ``release``."""
        loop = asyncio.get_running_loop()
        grant = self._order.take_now(priority, loop.time())
        if grant is not None:  # nobody waits: no future, no line
            self._granted += 1
            return grant
        ticket = self._order.add(priority)
        waiter = self._waiters[ticket] = _Waiter(loop.create_future(), loop.time())
        self._dispatch()
        try:
            return await waiter.future
        except asyncio.CancelledError:
            if self._waiters.pop(ticket, None) is not None:
                # Still queued: leave the line. (A grant that raced the cancel is simply spent.)
                self._order.remove(ticket)
                self._dispatch()
            raise

    def release(self, grant: int, *, answered: bool) -> None:
        """The request of ``grant`` ended now: its response arrived (``answered``), or it was
        given up on (failed, timed out, cancelled). Its place in the window frees a window
        (plus the allowance, unanswered) from now."""
        self._bucket.done(grant, asyncio.get_running_loop().time(), answered=answered)
        if self._waiters and self._order:  # (every ticket in the line has a waiter)
            self._dispatch()

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
        for ticket, grant in granted:
            waiter = self._waiters.pop(ticket)
            self._granted += 1
            self._waited += now - waiter.since
            waiter.future.set_result(grant)
        if self._order and wait < math.inf:
            self._timer = loop.call_later(max(wait, _MIN_TIMER), self._dispatch)
