"""Freshness in virtual time: the scheduler's planner and request budget against a model of the
service, so a regime of 10,000 containers and hours of polling runs in seconds.

What runs is the product's own decision code: ``notifier.core.planner.Planner`` (what is due,
how each check goes, the pace, the learning) and ``notifier.core.budget.TokenBucket`` and
``GrantOrder`` (the per-credential budget: 120 places in any window, a place held from the grant
to 60 s after the response, and who of the waiting
requests goes first, as in ``RequestBudget``). What is modelled is everything with a clock:
``workers`` concurrent checks like the scheduler's, each request taking ``latency`` seconds,
and the service: every stream's changes (Poisson), syncStatus saying "changed" when a change
came after the stream's token, a sync returning every change up to when it is served. A
change is *detected* when the request that returns it completes. The loop below follows
``CredentialScheduler._check_group`` step for step: plan the check, pace each check request,
syncStatus for the status part, direct syncs and follow-up syncs, teach the planner, reschedule.
"""

from __future__ import annotations

import bisect
import dataclasses
import heapq
import itertools
import math
import random
from collections.abc import Callable, Generator
from dataclasses import dataclass, field

from notifier.core.budget import JITTER_ALLOWANCE, WINDOW_SECONDS, GrantOrder, TokenBucket
from notifier.core.plan_settings import Policy
from notifier.core.planner import Planner, SchedulerSettings
from notifier.core.schedule import status_budget

RPM = 120
# The cells' change rates are given per round-robin cycle at the idle check pace the matrix
# was defined with (95% of 120 a minute, 1.9 a second): pinned here, so that a change to the
# product's pace moves the figures, not the cells' rates.
CYCLE_PACE_SHARE = 0.95


@dataclass(frozen=True)
class Cell:
    """One regime: containers on ONE credential at the default configuration."""

    containers: int = 100
    busy_share: float = 0.05
    busy_per_cycle: float = 2.0  # changes per round-robin cycle of one busy container
    subs: int = 1  # subscriptions (tokens) per container, all seeing every change
    quiet_per_cycle: float = 0.01  # changes per cycle of one quiet container
    cycles: float = 15.0  # run length in round-robin cycles
    latency: float = 0.3  # seconds per request
    workers: int = 8
    seed: int = 7
    settings: SchedulerSettings = field(default_factory=SchedulerSettings)

    @property
    def cycle(self) -> float:
        """The round-robin cycle the rates are given in: one syncStatus call per container at
        the idle check pace (a measured cycle is longer by the sync pages paid)."""
        s = self.settings
        pace = status_budget(s.requests_per_minute, s.reserve, 0.0, CYCLE_PACE_SHARE,
                             window=60.0)
        per_container = math.ceil(self.subs / max(1, s.status_chunk))
        return max(s.interval, self.containers * per_container / pace)

    @property
    def run_cycles(self) -> float:
        """``cycles``, or more for the busy changes to number about 300."""
        busy = max(1, round(self.containers * self.busy_share)) * self.busy_per_cycle
        return min(400.0, max(self.cycles, 300.0 / busy + 2.5))

    @property
    def duration(self) -> float:
        return self.run_cycles * self.cycle

    @property
    def last_change(self) -> float:
        """Changes stop here, leaving room for the last ones to be found."""
        return self.duration - 2.5 * self.cycle


@dataclass
class Run:
    """What one policy did in one cell (latencies in seconds)."""

    policy: str
    busy: list[float] = field(default_factory=list)
    quiet: list[float] = field(default_factory=list)
    undelivered_old: int = 0  # changes older than two cycles not delivered at the end
    quiet_gaps: list[float] = field(default_factory=list)  # between checks of quiet streams
    all_gaps: list[float] = field(default_factory=list)
    requests: int = 0
    status_calls: int = 0
    direct_syncs: int = 0
    follow_syncs: int = 0
    max_in_window: int = 0  # most requests granted in any 60 s window


class Stream:
    """One token's view of the service: its changes and how far its token has read."""

    __slots__ = ("changes", "gaps", "last_checked", "read")

    def __init__(self, changes: list[float]) -> None:
        self.changes = changes
        self.read = 0  # changes[:read] were delivered
        self.last_checked = 0.0
        self.gaps: list[float] = []

    def pending(self, t: float) -> bool:
        return self.read < len(self.changes) and self.changes[self.read] <= t

    def take(self, t: float) -> list[float]:
        end = bisect.bisect_right(self.changes, t, lo=self.read)
        out, self.read = self.changes[self.read:end], end
        return out


Step = Generator[tuple[str, float], None, None]


class Model:
    """One policy in one cell: a discrete-event loop over the workers and the re-plans."""

    def __init__(self, cell: Cell, policy: Policy) -> None:
        self.cell = cell
        s = cell.settings
        self.settings = dataclasses.replace(s, policy=policy, workers=cell.workers)
        rng = random.Random(cell.seed)
        ids = [f"c{i:05d}" for i in range(cell.containers)]
        busy_n = max(1, round(cell.containers * cell.busy_share))
        self.busy = set(rng.sample(ids, busy_n))
        self.streams: dict[str, list[Stream]] = {}
        for cid in ids:
            per_cycle = cell.busy_per_cycle if cid in self.busy else cell.quiet_per_cycle
            rate, t, times = per_cycle / cell.cycle, 0.0, []
            while True:
                t += rng.expovariate(rate)
                if t >= cell.last_change:
                    break
                times.append(t)
            self.streams[cid] = [Stream(times) for _ in range(cell.subs)]
        self.planner = Planner(self.settings, dict.fromkeys(ids, cell.subs))
        self.bucket = TokenBucket(int(s.requests_per_minute), window=WINDOW_SECONDS,
                                  allowance=JITTER_ALLOWANCE, reserve=s.reserve)
        self.order = GrantOrder(self.bucket)
        self._granting: dict[int, Step] = {}  # waiting for the budget, by ticket
        self._grants: dict[int, int] = {}  # ticket -> the bucket's grant (acquire's answer)
        self._armed = 0  # the budget's dispatch timer (the one armed last counts)
        self.run = Run(policy)
        self.grants: list[float] = []
        self.now = 0.0
        self._events: list[tuple[float, int, Callable[[], None]]] = []
        self._seq = itertools.count()
        self._sleepers: dict[int, Step] = {}

    # -- the event loop ----------------------------------------------------------------------

    def _at(self, t: float, fn: Callable[[], None]) -> None:
        heapq.heappush(self._events, (t, next(self._seq), fn))

    def _resume(self, proc: Step) -> None:
        try:
            kind, arg = next(proc)
        except StopIteration:
            return
        if kind == "sleep":
            self._at(self.now + arg, lambda: self._resume(proc))
        elif kind == "grant":  # waiting in the budget's line (RequestBudget.acquire)
            self._granting[int(arg)] = proc
            self._dispatch()
        else:  # "idle": sleep, woken early by a re-plan that pulls groups forward
            key = id(proc)
            self._sleepers[key] = proc
            self._at(self.now + arg, lambda: self._wake_one(key, proc))

    def _dispatch(self) -> None:
        """RequestBudget._dispatch: grant whom the budget's order allows now, re-arm for the
        rest."""
        granted, wait = self.order.grant(self.now)
        for ticket, grant in granted:
            self._grants[ticket] = grant
            proc = self._granting.pop(ticket)
            self._at(self.now, lambda p=proc: self._resume(p))  # type: ignore[misc]
        self._armed += 1  # the timer armed before is cancelled
        if self.order and wait < math.inf:
            armed = self._armed
            self._at(self.now + max(wait, 0.001), lambda: self._timer(armed))

    def _timer(self, armed: int) -> None:
        if armed == self._armed:
            self._dispatch()

    def _wake_one(self, key: int, proc: Step) -> None:
        if self._sleepers.get(key) is proc:
            del self._sleepers[key]
            self._resume(proc)

    def _wake_all(self) -> None:
        sleepers, self._sleepers = self._sleepers, {}
        for proc in sleepers.values():
            self._at(self.now, lambda p=proc: self._resume(p))  # type: ignore[misc]

    def simulate(self) -> Run:
        self.planner.retune(0.0)
        for cid in self.streams:
            self.planner.start(cid, 0.0, 0.0)
        for _ in range(self.cell.workers):
            self._resume(self._worker())
        self._at(self.planner.retune_every(), self._retune)
        end = self.cell.duration
        while self._events and self._events[0][0] <= end:
            t, _, fn = heapq.heappop(self._events)
            self.now = t
            fn()
        self.now = end
        return self._finish()

    def _retune(self) -> None:
        plan = self.planner.retune(self.now)
        if plan is not None and plan.pulled:
            self._wake_all()
        self._at(self.now + self.planner.retune_every(), self._retune)

    # -- requests ----------------------------------------------------------------------------

    def _request(self, priority: str, paced: bool) -> Step:
        if paced:
            wait = self.planner.status_slot(self.now)
            if wait > 0:
                yield ("sleep", wait)
        ticket = self.order.add(priority)  # type: ignore[arg-type]
        yield ("grant", ticket)
        grant = self._grants.pop(ticket, None)
        self.grants.append(self.now)
        self.run.requests += 1
        yield ("sleep", self.cell.latency)
        if grant is not None:  # RequestBudget.release: the response arrived
            self.bucket.done(grant, self.now)
            if self.order:
                self._dispatch()

    def _deliver(self, cid: str, s: Stream) -> int:
        found = s.take(self.now - self.cell.latency)  # served when granted
        out = self.run.busy if cid in self.busy else self.run.quiet
        out.extend(self.now - t for t in found)
        return len(found)  # changes returned (each change one event here)

    # -- the scheduler's worker, step for step ---------------------------------------------------

    def _worker(self) -> Step:
        planner, chunk = self.planner, max(1, self.settings.status_chunk)
        while True:
            slot_in = planner.slot_in(self.now)
            cid = planner.pop_due(self.now, early=slot_in <= 0)
            if cid is None:
                yield ("idle", planner.idle_wait(self.now, slot_in))
                continue
            started = self.now
            streams = self.streams[cid]
            choice = planner.plan_check(cid, [(i, s.last_checked) for i, s in
                                              enumerate(streams)], self.now)
            outcome: dict[int, int] = {}  # changes found per stream (status: 0 or some)
            due: list[int] = []
            status = list(choice.status)
            for k in range(0, len(status), chunk):
                part = status[k:k + chunk]
                yield from self._request("status", paced=True)
                self.run.status_calls += 1
                for i in part:  # answered as of when the call was served
                    if streams[i].pending(self.now - self.cell.latency):
                        due.append(i)
                    else:
                        outcome[i] = 0
            follow: tuple[int, ...] = ()
            if choice.probe is not None:  # synced first; the followers only if it found changes
                yield from self._request("status", paced=True)
                self.run.direct_syncs += 1
                outcome[choice.probe] = self._deliver(cid, streams[choice.probe])
                follow = choice.followers if outcome[choice.probe] else ()
            for i in choice.direct:
                yield from self._request("status", paced=True)
                self.run.direct_syncs += 1
                outcome[i] = self._deliver(cid, streams[i])
            for i in follow:
                planner.sync_pages_asked(1)
                yield from self._request("sync", paced=False)
                self.run.follow_syncs += 1
                outcome[i] = self._deliver(cid, streams[i])
            for i in due:
                planner.sync_pages_asked(1)
                yield from self._request("sync", paced=False)
                self.run.follow_syncs += 1
                outcome[i] = max(1, self._deliver(cid, streams[i]))
            planner.learn(cid, [(i, streams[i].last_checked, changed)
                                for i, changed in outcome.items()], self.now)
            for i in outcome:
                s = streams[i]
                s.gaps.append(self.now - s.last_checked)
                s.last_checked = self.now
            planner.checked(cid, self.now)
            planner.reschedule(cid, started=started, now=self.now)

    # -- the figures -------------------------------------------------------------------------

    def _finish(self) -> Run:
        run, end, two = self.run, self.cell.duration, 2 * self.cell.cycle
        for cid, streams in self.streams.items():
            for s in streams:
                run.undelivered_old += sum(1 for t in s.changes[s.read:] if end - t > two)
                gaps = [*s.gaps, end - s.last_checked]
                run.all_gaps.extend(gaps)
                if cid not in self.busy:
                    run.quiet_gaps.extend(gaps)
        window = WINDOW_SECONDS
        lo = 0
        for hi, t in enumerate(self.grants):
            while self.grants[lo] <= t - window:
                lo += 1
            run.max_in_window = max(run.max_in_window, hi - lo + 1)
        return run


def pct(values: list[float], q: float) -> float:
    """Nearest-rank percentile (nan when empty)."""
    if not values:
        return math.nan
    s = sorted(values)
    return s[min(len(s) - 1, max(0, math.ceil(q / 100 * len(s)) - 1))]
