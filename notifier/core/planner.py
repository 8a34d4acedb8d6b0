"""The scheduler's plan (pure): which container is due when, how often each one is checked, and
how fast syncStatus calls may go. Every method takes ``now``; nothing here sleeps or does I/O.

The plan is per credential. Its unit is a *group*: one container with every stream on it that
uses the credential, checked by one syncStatus call (``cost`` calls when its tokens need more
than one chunk). Groups wait in a due-queue; the most overdue one goes first, so when the budget
is smaller than the work every group still gets its turn.

Budget: syncStatus calls are paced (``status_budget``) so that, with the sync pages being paid,
they stay below the line above which the budget refuses sync pages; otherwise the checks alone
would fill every window and no change found would ever be fetched. The adaptive policy re-plans
every few seconds (``retune``): each group's interval follows its change rate (learnt from
checks that found changes) within [interval, max_staleness], fitted to that pace. Round-robin
keeps every interval at ``interval`` (stretched by the budget).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

from notifier.core.schedule import (
    ChangeRate,
    DueQueue,
    effective_interval,
    pass_seconds,
    solve_intervals,
    status_budget,
)

Policy = Literal["adaptive", "round_robin"]
BUSY_RATE_PER_S = 1.0 / 3600.0  # a group that changes more than about hourly counts as busy
PRIOR_RATE_PER_S = 1.0 / 86400.0  # a group never seen changing is assumed to change daily
PACE_SHARE = 0.95  # of what status may use without starving sync pages (see status_budget)


@dataclass(slots=True)
class SchedulerSettings:
    interval: float = 30.0
    max_staleness: float = 600.0
    status_chunk: int = 100
    quarantine_initial: float = 30.0
    quarantine_max: float = 1800.0
    policy: Policy = "adaptive"
    requests_per_minute: float = 120.0
    reserve: float = 0.2
    workers: int = 4
    drain_turn_pages: int | None = 50
    """Sync pages a drain may fetch per drain slot before it queues for the slot again."""
    utilisation: float = 0.9
    """Share of the status pace the adaptive plan fills (headroom keeps queues short)."""
    rate_half_life: float | None = None
    """Memory of the change-rate estimate; default six times ``max_staleness``."""
    rate_prior_per_s: float = PRIOR_RATE_PER_S
    retune_every: float | None = None
    """Seconds between re-plans; default ``interval`` clamped to [1, 5]."""
    sync_rate_time_constant: float = 60.0
    """Seconds over which the estimate of sync pages paid per second averages."""

    @property
    def half_life(self) -> float:
        return self.rate_half_life or 6.0 * self.max_staleness

    @property
    def retune_seconds(self) -> float:
        return self.retune_every or min(5.0, max(1.0, self.interval))


@dataclass(slots=True)
class GroupPlan:
    """One container's place in the plan."""

    container_id: str
    cost: int  # syncStatus calls one check takes
    rate: ChangeRate
    interval: float
    last_checked: float | None = None  # when every stream of the group was last checked


@dataclass(frozen=True, slots=True)
class Replan:
    """What a ``retune`` decided, for the scheduler to report."""

    full_pass: float  # seconds one check of every group takes at the planned pace
    checks_per_s: float  # syncStatus calls per second the plan spends
    effective_interval: float | None  # what a full pass takes now (None: from passes instead)
    coverage: Literal["lost", "regained"] | None = None  # change in covering max_staleness
    pulled: bool = False  # some group is due sooner than before: wake the workers


class Planner:
    """The plan of one credential's groups; ``groups`` maps container id to stream count."""

    def __init__(self, settings: SchedulerSettings, groups: Mapping[str, int]) -> None:
        self.settings = settings
        self.groups: dict[str, GroupPlan] = {
            cid: GroupPlan(cid, self._cost(n),
                           ChangeRate(settings.half_life, settings.rate_prior_per_s),
                           settings.interval)
            for cid, n in groups.items()
        }
        self._queue = DueQueue()
        self._sync_pages = 0  # sync pages asked for since the last retune
        self._sync_per_s = 0.0  # their smoothed rate
        self._retuned_at: float | None = None
        self._covered: bool | None = None  # does the budget cover max_staleness for all?
        self._pace_per_s = status_budget(settings.requests_per_minute, settings.reserve, 0.0,
                                         PACE_SHARE)
        self._next_slot = 0.0  # time of the next syncStatus slot (pacing)

    # -- the due-queue ---------------------------------------------------------------------

    def start(self, cid: str, last_checked: float | None, now: float) -> None:
        """Schedule ``cid`` for the first time: due now at the latest (a restart checks every
        group at once), the longest unchecked first."""
        g = self.groups[cid]
        g.last_checked = last_checked
        self._queue.schedule(cid, now if last_checked is None else min(now, last_checked
                                                                        + g.interval))

    def add_group(self, cid: str, streams: int, now: float) -> GroupPlan:
        """A container added at run time (hub discovery): planned like the others, due now."""
        g = GroupPlan(cid, self._cost(streams),
                      ChangeRate(self.settings.half_life, self.settings.rate_prior_per_s),
                      self.settings.interval)
        self.groups[cid] = g
        self._queue.schedule(cid, now)
        return g

    def resize_group(self, cid: str, streams: int, now: float | None = None) -> None:
        """``cid`` now has ``streams`` streams (its check's cost); with ``now``, due now (a
        stream added to it)."""
        self.groups[cid].cost = self._cost(streams)
        if now is not None:
            self._queue.schedule(cid, now)

    def remove_group(self, cid: str) -> None:
        """A container no longer polled: out of the plan and the queue."""
        self.groups.pop(cid, None)
        self._queue.remove(cid)

    def _cost(self, streams: int) -> int:
        return max(1, math.ceil(streams / max(1, self.settings.status_chunk)))

    def pop_due(self, now: float) -> str | None:
        """The most overdue group whose time has come (off the queue until rescheduled)."""
        cid = self._queue.pop_due(now)
        assert cid is None or isinstance(cid, str)
        return cid

    def idle_wait(self, now: float) -> float:
        """How long a worker with nothing due may sleep (woken early when plans move)."""
        nxt = self._queue.next_due()
        return 1.0 if nxt is None else min(max(nxt - now, 0.01), 5.0)

    def due_of(self, cid: str) -> float | None:
        return self._queue.due_of(cid)

    def reschedule(self, cid: str, *, started: float, now: float,
                   quarantined_until: Iterable[float] = ()) -> None:
        """Next check ``interval`` after this one started (its duration is not added on);
        when every stream of the group is quarantined, not before the first one is free."""
        if self._queue.due_of(cid) is not None:
            return
        due = started + self.groups[cid].interval
        until = list(quarantined_until)
        if until and all(t > now for t in until):
            due = max(due, min(until))
        self._queue.schedule(cid, due)

    def checked(self, cid: str, now: float) -> None:
        """Every stream of ``cid`` was checked successfully at ``now``."""
        self.groups[cid].last_checked = now

    def changes_found(self, cid: str, now: float, streams: int) -> None:
        """A check of ``cid`` found ``streams`` streams with changes (feeds its change rate)."""
        self.groups[cid].rate.record(now, streams)

    def is_busy(self, cid: str, now: float) -> bool:
        return self.groups[cid].rate.rate(now) > BUSY_RATE_PER_S

    # -- the budget ------------------------------------------------------------------------

    def sync_pages_asked(self, n: int = 1) -> None:
        """``n`` sync pages were asked for. Demand, not completions: pages held back by status
        checks still lower the status pace (completions alone would hide that)."""
        self._sync_pages += n

    @property
    def sync_pages_per_s(self) -> float:
        """Smoothed rate of sync pages paid from this credential's budget."""
        return self._sync_per_s

    @property
    def status_pace_per_s(self) -> float:
        """syncStatus calls per second allowed now (pacing keeps room for sync pages)."""
        return self._pace_per_s

    def status_checks_per_s(self) -> float:
        """syncStatus calls per second the adaptive plan may spend now."""
        return self._pace_per_s * self.settings.utilisation

    def start_interval(self) -> float:
        """How long a pass over every group takes at the starting pace, one call each."""
        return effective_interval(len(self.groups), self.settings.interval,
                                  self._pace_per_s * 60.0)

    def status_slot(self, now: float) -> float:
        """Seconds to wait for the next syncStatus slot at the current pace (0: go now)."""
        slot = max(now, self._next_slot)
        self._next_slot = slot + 1.0 / max(self._pace_per_s, 1e-6)
        return slot - now

    def _observe_sync_rate(self, now: float) -> None:
        last, self._retuned_at = self._retuned_at, now
        if last is None or now <= last:
            return
        elapsed = now - last
        alpha = 1.0 - math.exp(-elapsed / self.settings.sync_rate_time_constant)
        self._sync_per_s += alpha * (self._sync_pages / elapsed - self._sync_per_s)
        self._sync_pages = 0

    def retune(self, now: float) -> Replan | None:
        """Recompute the pace and each group's interval (None when there are no groups).

        Adaptive: intervals ∝ 1/√rate within [interval, max_staleness], fitted to what the
        budget leaves after the sync pages being paid. Groups whose interval got shorter are
        brought forward at once (``pulled``). ``coverage`` says when the budget stops (or
        starts again) covering every group within max_staleness.
        """
        s = self.settings
        groups = list(self.groups.values())
        if not groups:
            return None
        first = self._retuned_at is None
        self._observe_sync_rate(now)
        self._pace_per_s = status_budget(s.requests_per_minute, s.reserve, self._sync_per_s,
                                         PACE_SHARE)
        checks_per_s = self.status_checks_per_s()
        if s.policy == "round_robin":
            for g in groups:
                g.interval = s.interval
            return Replan(full_pass=pass_seconds([g.cost for g in groups], checks_per_s),
                          checks_per_s=checks_per_s, effective_interval=None)
        costs = [g.cost for g in groups]
        intervals = solve_intervals([g.rate.rate(now) for g in groups], checks_per_s,
                                    s.interval, s.max_staleness, costs=costs)
        full_pass = pass_seconds(costs, checks_per_s)
        pulled = False
        for g, iv in zip(groups, intervals, strict=True):
            old, g.interval = g.interval, iv
            due = self._queue.due_of(g.container_id)
            if due is not None and g.last_checked is not None and iv < old:
                new_due = g.last_checked + iv
                if new_due < due:
                    self._queue.schedule(g.container_id, new_due)
                    pulled = True
        return Replan(full_pass=full_pass, checks_per_s=checks_per_s,
                      effective_interval=max(*intervals, full_pass),
                      coverage=self._coverage(full_pass, first=first), pulled=pulled)

    def _coverage(self, full_pass: float, *, first: bool) -> Literal["lost", "regained"] | None:
        covered = full_pass <= self.settings.max_staleness
        if covered == self._covered:
            return None
        self._covered = covered
        if not covered:
            return "lost"
        return None if first else "regained"
