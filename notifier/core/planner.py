"""The scheduler's plan (pure): which container is due when, how often each one is checked, how
(syncStatus or direct syncs, notifier.core.checks) and how fast checks may go. Every method
takes ``now``; nothing here sleeps or does I/O.

The plan is per credential. Its unit is a *group*: one container with every stream on it that
uses the credential. Groups wait in a due-queue (notifier.core.plan_queue); the most overdue
one goes first, so when the budget is smaller than the work every group still gets its turn.

Budget: checks (syncStatus calls and direct syncs' first pages) are paced (``status_budget``)
at what the budget grants less the sync pages paid (pages go first in the budget: GrantOrder). A
check slot that no group is due for goes to the group planned below the cap that is due next
(``pop_due(early=True)``): the plan spends the whole pace only on average, due times bunch.

Adaptive policy. ``retune`` (every few seconds) fits every group's interval to the pace: the
check frequency of a group is ∝ (rate / cost) ** ``CONCENTRATION``, within [interval, cap]. The
cap is ``max_staleness`` when the budget covers it; when it does not (or when ``QUIET_PASSES``
passes over every group are shorter) it is that many passes less ``SLOT_ALLOWANCE`` times the
workers' check slots, at most ``MAX_SLOT_PASSES`` passes (a group is chosen when a worker is
free and then waits for its slot, up to one per worker ahead of it), so quiet groups wait at
most about two passes and the rest of the budget goes to the groups that change. The first
check after a start is followed by a shorter interval at the cap (notifier.core.plan_queue
``spread``), so the quiet groups do not come due in a run every cap. Groups left below the cap
by the busy ones share what is left (their intervals shrink alike). Each check feeds its tokens'
change rates (``learn``), and the group's interval follows at once, at the last retune's price:
a group that turns busy is checked at its busy interval from the next check on (after a long
quiet history, from its second change: notifier.core.rates). Each check goes
the cheapest way in requests for its tokens' change probabilities (``plan_check``); while the
budget binds (the plan cannot check every group every ``interval``), a token is synced directly
whenever that costs no more requests, however quiet (``_min_direct``): a container with one
token then never pays a status call and a page for a change (a container whose tokens change
together is checked by ``choose_probe``, which keeps ``MIN_DIRECT``). Groups never
seen changing are planned by kind (see plan_queue), at the prior: a token never seen changing is
assumed to change ``PRIOR_PER_CAP`` times per cap (daily at most). A first change counts against
the group's quiet checks before it (notifier.core.rates): one change in a long quiet history is
not a busy group. Learning is in caps (memory, pseudo-counts, prior), so it scales with the
containers: with 10,000 of them a cap is hours, and a daily prior was then only ~8 times less
than a container changing every two passes, which made never-changing ones take the busy ones'
share.
Round-robin keeps every interval at ``interval`` (stretched by the budget) and always asks
syncStatus first.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterable, Mapping, Sequence
from typing import Literal

from notifier.core.checks import (
    MIN_DIRECT,
    CheckChoice,
    choose_check,
    choose_probe,
    status_calls,
)
from notifier.core.plan_queue import GroupPlan, Kind, PlanQueue
from notifier.core.plan_settings import Replan, SchedulerSettings
from notifier.core.rates import group_rate, learn_tokens, token_probabilities
from notifier.core.schedule import (
    effective_interval,
    interval_at,
    pass_seconds,
    round_robin_pass,
    solve_price,
    status_budget,
)

__all__ = ["Planner", "Replan", "SchedulerSettings"]  # the settings live in plan_settings

BUSY_RATE_PER_S = 1.0 / 3600.0  # a group that changes more than about hourly counts as busy
PRIOR_PER_CAP = 0.01  # a token never seen changing: at most daily (plan_settings'
# PRIOR_RATE_PER_S), and at most this often per cap (module doc: learning is in caps)
PACE_SHARE = 1.0  # of what checks may use (status_budget): pages go first, no headroom needed
QUIET_PASSES = 1.95  # the cap on any interval, in passes over every group (see module doc),
SLOT_ALLOWANCE = 2.0  # less this many times the workers' check slots (see module doc),
MAX_SLOT_PASSES = 0.15  # at most this many passes (a pass of a few containers is a few slots)
# Frequency ∝ (rate / cost) ** this: 0.5 minimises the mean delay for known rates; learnt rates
# are noisy, and 1 made busy checks irregular (jumping after each change found).
CONCENTRATION = 0.75
PSEUDO_CAPS = 0.5  # quiet seconds assumed besides what checks covered, in caps
HALF_LIFE_CAPS = 3.0  # memory of the change rates, in caps (unless rate_half_life is set)


class Planner:
    """The plan of one credential's groups; ``groups`` maps container id to stream count."""

    def __init__(self, settings: SchedulerSettings, groups: Mapping[str, int]) -> None:
        self.settings = settings
        self.groups: dict[str, GroupPlan] = {
            cid: GroupPlan(cid, self._cost(n), settings.interval, streams=n)
            for cid, n in groups.items()
        }
        self._queue = PlanQueue()
        self._sync_pages = 0  # sync pages asked for since the last retune
        self._sync_per_s = 0.0  # their smoothed rate
        self._retuned_at: float | None = None
        self._covered: bool | None = None  # does the budget cover max_staleness for all?
        self._pace_per_s = status_budget(settings.requests_per_minute, settings.reserve, 0.0,
                                         PACE_SHARE)
        self._next_slot = 0.0  # time of the next check slot (pacing)
        self._price = 0.0  # of the last retune (see solve_price): 0 = everyone at interval
        self._cap = max(settings.interval, settings.max_staleness or math.inf)
        self._prior = settings.rate_prior_per_s  # follows the cap from the first retune on
        self._pass = pass_seconds([g.cost for g in self.groups.values()], self._pace_per_s)

    # -- the due-queue ---------------------------------------------------------------------

    def start(self, cid: str, last_checked: float | None, now: float) -> None:
        """Schedule ``cid`` for the first time: due now at the latest (a restart checks every
        group at once), the longest unchecked first."""
        g = self.groups[cid]
        g.last_checked = last_checked
        g.watched = now if last_checked is None else last_checked  # quiet since (see rates)
        self._queue.at_once(cid)  # due with the others: spread afterwards (plan_queue)
        self._schedule(g, now if last_checked is None else min(now, last_checked + g.interval))

    def add_group(self, cid: str, streams: int, now: float) -> GroupPlan:
        """A container added at run time (hub discovery): planned like the others, due now."""
        g = GroupPlan(cid, self._cost(streams), self.settings.interval, streams=streams,
                      watched=now)
        self.groups[cid] = g
        self._schedule(g, now)
        return g

    def resize_group(self, cid: str, streams: int, now: float | None = None) -> None:
        """``cid`` now has ``streams`` streams (its check's cost); with ``now``, due now (a
        stream added to it)."""
        g = self.groups[cid]
        g.cost = self._cost(streams)
        g.streams = streams
        g.requests = float(g.cost)
        if now is not None:
            self._schedule(g, now)

    def remove_group(self, cid: str) -> None:
        """A container no longer polled: out of the plan and the queue."""
        self.groups.pop(cid, None)
        self._queue.remove(cid)

    def _cost(self, streams: int) -> int:
        return max(1, status_calls(streams, self.settings.status_chunk))

    def _schedule(self, g: GroupPlan, due: float) -> None:
        self._queue.schedule(g.container_id, due, below_cap=self.settings.policy == "adaptive"
                             and g.interval < self._cap * (1 - 1e-9))

    def pop_due(self, now: float, *, early: bool = False) -> str | None:
        """The most overdue group whose time has come (off the queue until rescheduled).

        With ``early`` (the caller holds a free check slot: ``slot_in`` is 0) and nothing
        due, the group planned below the cap that is due next, if checked ``interval`` ago or
        more: a slot nobody is due for would be lost (the plan spends the pace only on
        average: due times bunch). Groups at the cap never go early."""
        return self._queue.pop(now, self._ready_at if early else None)

    def idle_wait(self, now: float, slot_in: float | None = None) -> float:
        """How long a worker with nothing due may sleep (woken early when plans move); with
        ``slot_in`` (seconds to the next free check slot), no longer than until a group may
        go early."""
        return self._queue.idle_wait(now, slot_in, self._ready_at)

    def _ready_at(self, cid: str) -> float:
        """When ``cid`` may go early: ``interval`` after its last check."""
        last = self.groups[cid].last_checked
        return -math.inf if last is None else last + self.settings.interval

    def due_of(self, cid: str) -> float | None:
        return self._queue.due_of(cid)

    def reschedule(self, cid: str, *, started: float, now: float,
                   quarantined_until: Iterable[float] = ()) -> None:
        """Next check ``interval`` after this one started (its duration is not added on);
        when every stream of the group is quarantined, not before the first one is free."""
        g = self.groups.get(cid)
        if g is None or self._queue.due_of(cid) is not None:
            return  # removed while its check was in flight, or already planned
        due = started + self._queue.spread(cid, g.interval, at_cap=self.settings.policy
                                           == "adaptive" and g.interval >= self._cap * (1 - 1e-9))
        until = list(quarantined_until)
        if until and all(t > now for t in until):
            due = max(due, min(until))
        self._schedule(g, due)

    def checked(self, cid: str, now: float) -> None:
        """Every stream of ``cid`` was checked successfully at ``now`` (nothing if the group
        was removed meanwhile: a project retired while its check was in flight)."""
        g = self.groups.get(cid)
        if g is not None:
            g.last_checked = now

    # -- how to check, and what checks teach -----------------------------------------------

    def _learning(self) -> tuple[float, float, float]:
        s = self.settings
        return (s.rate_half_life or HALF_LIFE_CAPS * self._cap, self._prior,
                PSEUDO_CAPS * self._cap)

    def plan_check(self, cid: str, tokens: Sequence[tuple[Hashable, float | None]],
                   now: float, *, probe: bool = True) -> CheckChoice:
        """How to check these tokens of ``cid`` (key, last checked): which by direct sync,
        which by syncStatus, and (``probe``) which first. Round-robin asks status of all."""
        g = self.groups[cid]
        chunk = self.settings.status_chunk
        if self.settings.policy == "round_robin" or not tokens:
            n = len(tokens)
            return CheckChoice((), tuple(range(n)), status_calls(n, chunk),
                               float(status_calls(n, chunk)))
        if len(g.tokens) > 2 * len(tokens) + 8:  # streams removed meanwhile: forget theirs
            g.tokens = {k: g.tokens[k] for k, _ in tokens if k in g.tokens}
        half_life, prior, pseudo = self._learning()
        p, due = token_probabilities(
            tokens, g.tokens, now, interval=g.interval, cap=self._cap,
            half_life=half_life, prior=prior, pseudo=pseudo)
        choice = (choose_probe(p, due, chunk) if probe and g.together.likely
                  and len(tokens) == g.streams
                  else choose_check(p, chunk, min_direct=self._min_direct()))
        g.requests = float(max(1, choice.requests))
        return choice

    def _min_direct(self) -> float:
        """The least change probability at which a token may be synced directly
        (notifier.core.checks): any while the budget binds (the last retune could not plan
        every group at ``interval``), else ``MIN_DIRECT``. A direct sync of one token costs
        the request its syncStatus would and saves the sync page when it changed: while the
        budget binds that page is a check more elsewhere; when it does not, requests are not
        scarce, and a syncStatus spares a quiet token a checkpoint write per check. (Not
        for a probe: ``choose_probe`` weighs its own splits at ``MIN_DIRECT``.)"""
        return 0.0 if self._price > 0 else MIN_DIRECT

    def learns_from_quiet(self, cid: str) -> bool:
        """Whether a check of ``cid`` finding nothing teaches it anything (else no ``learn``)."""
        g = self.groups.get(cid)
        return g is not None and bool(g.tokens) and self.settings.policy != "round_robin"

    def observe(self, cid: str, key: Hashable, *, now: float, since: float | None,
                changed: int) -> None:
        """One token's check (see ``learn``)."""
        self.learn(cid, [(key, since, changed)], now)

    def learn(self, cid: str, outcomes: Iterable[tuple[Hashable, float | None, int]],
              now: float) -> None:
        """What one check of ``cid`` at ``now`` found, per token: (key, previous check (None:
        never, which teaches nothing of a rate), changes found (1 or True: some)); the
        group's rate and interval follow once, for all of them."""
        g = self.groups.get(cid)
        if g is None or self.settings.policy == "round_robin":
            return
        half_life, prior, pseudo = self._learning()
        outcomes = list(outcomes)
        if len(outcomes) == g.streams:  # every token: did they change together?
            g.together.observe([bool(c) for _, _, c in outcomes])
        learnt = learn_tokens(g.tokens, outcomes, now, watched=g.watched, half_life=half_life,
                              prior=prior, pseudo=pseudo)
        if learnt:
            self._refresh(g, now)

    def _refresh(self, g: GroupPlan, now: float) -> None:
        """The group's rate and interval at the last retune's price (a busy group is checked
        as one from its next check on, not from the next retune)."""
        g.rate = self._group_rate(g, now)
        g.interval = interval_at(self._price, _weight(g.rate, g.requests),
                                 self.settings.interval, self._cap)

    def _group_rate(self, g: GroupPlan, now: float) -> float:
        """Changes per second of ``g``'s tokens (the prior for those never seen changing)."""
        half_life, prior, pseudo = self._learning()
        return group_rate(g.tokens, g.streams, now, half_life=half_life, prior=prior,
                          pseudo=pseudo)

    def is_busy(self, cid: str, now: float) -> bool:
        """Whether ``cid`` changes more than about hourly, as of its last check or re-plan
        (``now`` is not needed: the rate is kept, not recomputed per call)."""
        return self.groups[cid].rate > BUSY_RATE_PER_S

    # -- the budget ------------------------------------------------------------------------

    def sync_pages_asked(self, n: int = 1) -> None:
        """``n`` sync pages beyond the checks themselves were asked for (after syncStatus
        said changes, more pages of a drain, first syncs). Demand, not completions: pages
        held back by checks still lower the check pace (completions alone would hide that)."""
        self._sync_pages += n

    @property
    def sync_pages_per_s(self) -> float:
        """Smoothed rate of sync pages paid from this credential's budget."""
        return self._sync_per_s

    @property
    def status_pace_per_s(self) -> float:
        """Check requests per second allowed now (pacing keeps room for sync pages)."""
        return self._pace_per_s

    def status_checks_per_s(self) -> float:
        """Check requests per second the adaptive plan may spend now."""
        return self._pace_per_s * self.settings.utilisation

    def start_interval(self) -> float:
        """How long a pass over every group takes at the starting pace, one call each."""
        return effective_interval(len(self.groups), self.settings.interval,
                                  self._pace_per_s * 60.0)

    def retune_every(self) -> float:
        """Seconds until the next re-plan."""
        every = self.settings.retune_every
        return every if every is not None else min(60.0, max(1.0, self._pass / 20.0))

    def status_slot(self, now: float) -> float:
        """Seconds to wait for the next check slot at the current pace (0: go now); every
        check request (a syncStatus call, a direct sync) takes one."""
        slot = max(now, self._next_slot)
        self._next_slot = slot + 1.0 / max(self._pace_per_s, 1e-6)
        return slot - now

    def slot_in(self, now: float) -> float:
        """Seconds until the next check slot is free (0: one is free now)."""
        return max(0.0, self._next_slot - now)

    def _observe_sync_rate(self, now: float) -> None:
        last, self._retuned_at = self._retuned_at, now
        if last is None or now <= last:
            return
        elapsed = now - last
        alpha = 1.0 - math.exp(-elapsed / self.settings.sync_rate_time_constant)
        self._sync_per_s += alpha * (self._sync_pages / elapsed - self._sync_per_s)
        self._sync_pages = 0

    def retune(self, now: float) -> Replan | None:
        """Recompute the pace, the cap and each group's interval (None when there are no
        groups); see the module docstring. Groups whose interval got shorter are brought
        forward at once (``pulled``). ``coverage`` says when the budget stops (or starts
        again) covering every group within max_staleness."""
        s = self.settings
        groups = list(self.groups.values())
        if not groups:
            return None
        first = self._retuned_at is None
        self._observe_sync_rate(now)
        self._pace_per_s = status_budget(s.requests_per_minute, s.reserve, self._sync_per_s,
                                         PACE_SHARE)
        checks_per_s = self.status_checks_per_s()
        costs = [g.cost for g in groups]
        self._pass = pass_seconds(costs, self._pace_per_s)
        if s.policy == "round_robin":
            for g in groups:
                g.interval = s.interval
            return Replan(full_pass=self._pass, checks_per_s=checks_per_s,
                          effective_interval=None, cap=s.interval)
        lo = s.interval
        covered = s.max_staleness is None or pass_seconds(costs, checks_per_s) <= s.max_staleness
        # Groups never seen changing are all alike but for their size: planned by kind.
        learnt: list[GroupPlan] = []
        plain: dict[Kind, int] = {}  # groups at the prior: how many of each kind
        for g in groups:
            if g.tokens:
                learnt.append(g)
            else:
                plain[g.kind] = plain.get(g.kind, 0) + 1
        # The cap from the rates as of the last look (a retune ago at most), the prior from it.
        tokens = [(g.streams, g.rate / max(1, g.streams)) for g in learnt]
        tokens += [(n * k, self._prior) for (k, _), n in plain.items()]
        rr_pass = round_robin_pass(costs, tokens, s.requests_per_minute, s.reserve, PACE_SHARE)
        self._cap = max(lo, QUIET_PASSES * rr_pass - min(  # a few containers: a few slots
            SLOT_ALLOWANCE * s.workers / max(self._pace_per_s, 1e-9), MAX_SLOT_PASSES * rr_pass))
        hard = covered and s.max_staleness is not None
        if hard:
            self._cap = min(self._cap, max(lo, s.max_staleness or math.inf))
        cap = self._cap
        self._prior = prior = min(s.rate_prior_per_s, PRIOR_PER_CAP / cap)
        for g in groups:
            g.rate = self._group_rate(g, now)
        rates = [_weight(g.rate, g.requests) for g in learnt]
        kinds = list(plain)
        rates += [_weight(prior * k, req) for k, req in kinds]
        weights = [g.requests for g in learnt] + [req * plain[(k, req)] for k, req in kinds]
        self._price = price = solve_price(rates, checks_per_s, lo, cap, weights)
        place = self._queue.place
        pulled = False
        for g, r in zip(learnt, rates, strict=False):
            pulled = place(g, interval_at(price, r, lo, cap), cap=cap, hard=hard) or pulled
        by_kind = {kind: interval_at(price, r, lo, cap)
                   for kind, r in zip(kinds, rates[len(learnt):], strict=True)}
        plain_groups = (g for g in groups if not g.tokens)
        pulled = self._queue.place_kinds(plain_groups, by_kind, cap=cap, hard=hard) or pulled
        longest = max(interval_at(price, r, lo, cap) for r in rates)
        full_pass = pass_seconds(weights, checks_per_s)
        return Replan(full_pass=full_pass, checks_per_s=checks_per_s,
                      effective_interval=max(longest, full_pass),
                      coverage=self._coverage(covered, first=first), pulled=pulled,
                      cap=self._cap)

    def _coverage(self, covered: bool, *, first: bool) -> Literal["lost", "regained"] | None:
        if covered == self._covered:
            return None
        self._covered = covered
        return "lost" if not covered else None if first else "regained"


def _weight(rate: float, requests: float) -> float:
    """The solve's rate of a group: frequency ∝ weight^½ = (rate / requests)^CONCENTRATION."""
    return float((rate / max(requests, 1e-9)) ** (2 * CONCENTRATION))
