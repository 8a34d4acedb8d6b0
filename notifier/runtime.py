"""What a scheduler knows about its streams and groups while it runs, and what it reports.

``StreamRuntime`` mirrors one stream's stored state (token, resync, quarantine, last check): it
is loaded once at start and then kept up to date from what the scheduler itself does and from
each drain's result, never re-read from the store. ``Group`` is one container's streams with
its place in the plan (notifier.core.planner). ``Freshness`` is what App exports as staleness.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable, Iterable, Set
from dataclasses import dataclass, field
from typing import Protocol

from notifier.core.plan_queue import GroupPlan
from notifier.core.planner import Planner
from notifier.source.models import SyncStatusResponse
from notifier.state.base import GroupKey, StreamCheckState, StreamKey, StreamState
from notifier.stream import DrainResult, StreamSpec


@dataclass(slots=True)
class StreamRuntime:
    spec: StreamSpec
    token: str | None = None
    in_resync: bool = False
    force_resync: bool = False
    quarantined_until: float = 0.0
    failures: int = 0
    last_checked: float | None = None
    retired: bool = False  # removed at run time: a drain not yet started is skipped

    @property
    def needs_drain(self) -> bool:
        """Drained without asking syncStatus: a first sync, a resync under way or due."""
        return self.token is None or self.in_resync or self.force_resync

    def load(self, st: StreamState | StreamCheckState | None) -> None:
        if st is None:
            return
        self.token = st.sync_token
        self.in_resync = bool(st.in_resync)
        self.quarantined_until = st.quarantined_until or 0.0
        self.failures = st.failures
        self.last_checked = st.last_checked_at
        if st.quarantine_reason == "bad_token":
            self.force_resync = True

    def drained(self, res: DrainResult) -> None:
        """Take the stream's state from a drain's result (what the drain committed)."""
        self.token = res.sync_token
        self.in_resync = res.in_resync
        if res.committed_at is not None:  # a checkpoint lifts the quarantine, resets failures
            self.quarantined_until = 0.0
            self.failures = 0
            self.last_checked = res.committed_at
        if res.completed:
            self.force_resync = False


@dataclass(slots=True)
class Group:
    """One container's streams (all polled with one credential) and its plan.

    ``ages`` is what the freshness tick last found in the group (see ``freshness``); whoever
    changes a stream's check time or quarantine drops it (``touched``), and the scheduler
    keeps ``checking`` raised while a check of the group is under way (nothing is kept then).
    """

    container_id: str
    streams: list[StreamRuntime]
    plan: GroupPlan
    ages: GroupAges | None = None
    checking: int = 0
    _stamp: tuple[list[StreamRuntime], GroupKey] | None = None

    def stamp_key(self, streams: list[StreamRuntime]) -> GroupKey:
        """The store's key for a check of every one of ``streams`` (a list this group had),
        kept until the group's streams change."""
        kept = self._stamp
        if kept is None or kept[0] is not streams:
            kept = self._stamp = (streams, (self.container_id, tuple(sorted(
                [s.spec.subscription for s in streams]))))
        return kept[1]

    def stamped(self, stamps: list[tuple[tuple[str, ...], float]]) -> None:
        """At start-up: each stream's check time is the later of its own and the stamps of
        the container (``check_stamps``) that name it; the usual one names every stream."""
        for subs, at in stamps:
            every = subs == self.stamp_key(self.streams)[1]
            for s in self.streams:
                if (s.last_checked is None or s.last_checked < at) and (
                        every or s.spec.subscription in subs):
                    s.last_checked = at

    def touched(self) -> None:
        """Its streams' check times or quarantines changed: the tick looks at them again."""
        self.ages = None

    @property
    def interval(self) -> float:
        return self.plan.interval

    @property
    def last_checked(self) -> float | None:
        return self.plan.last_checked

    def last_success(self) -> float | None:
        """The oldest last check of its streams (None if one was never checked)."""
        times = [s.last_checked for s in self.streams]
        return None if any(t is None for t in times) else min(t for t in times if t is not None)


@dataclass(slots=True)
class Freshness:
    """How stale the streams' last successful checks are, for the staleness metrics."""

    busy: list[float] = field(default_factory=list)  # ages of streams in busy groups
    quiet: list[float] = field(default_factory=list)  # ages of the others
    quarantined: int = 0  # streams in quarantine (not counted in the ages)
    stalest: float = 0.0
    per_subscription: dict[str, float] = field(default_factory=dict)  # its stalest stream

    def add(self, other: Freshness) -> None:
        self.busy.extend(other.busy)
        self.quiet.extend(other.quiet)
        self.quarantined += other.quarantined
        self.stalest = max(self.stalest, other.stalest)
        if not self.per_subscription:
            self.per_subscription.update(other.per_subscription)
            return
        for sub, age in other.per_subscription.items():
            self.per_subscription[sub] = max(self.per_subscription.get(sub, 0.0), age)


@dataclass(slots=True)
class PassStats:
    """What a run did, for ``run --once``'s summary and exit status."""

    events: int = 0
    failures: int = 0


class Progress(Protocol):
    """Told about a one-off pass (``run --once``) as it goes; a terminal shows it."""

    def checked(self, credential: str, done: int, total: int, changes: int) -> None: ...

    def finished(self, credential: str) -> None: ...


CHECKED_FLUSH_SECONDS = 1.0  # check times reach the store in batches at most this old
CHECKED_FLUSH_SIZE = 5_000


class CheckTimes:
    """Check times waiting to be stored in one batch (one transaction a second, not one per
    container). They only inform ``notifier status`` and the staleness after a restart, so
    losing the last second of them in a crash costs nothing; each batch is stamped with its
    oldest time, which never overstates freshness. A check of every stream of a group is
    one stamp for the group (``GroupKey``, notifier.state.sqlite_checks), not one a stream."""

    def __init__(self, monotonic: Callable[[], float] = time.monotonic) -> None:
        # As noted, one list per check (no work per key until a batch is taken).
        self._pending: list[tuple[list[StreamKey], list[GroupKey], float]] = []
        self._count = 0
        self._monotonic = monotonic
        self._flushed = monotonic()

    def note(self, keys: Iterable[StreamKey], now: float, groups: Iterable[GroupKey] = ()
             ) -> None:
        keys, groups = list(keys), list(groups)
        if keys or groups:
            self._pending.append((keys, groups, now))
            self._count += len(keys) + len(groups)

    def note_check(self, group: Group, streams: list[StreamRuntime],
                   checked: list[StreamRuntime], now: float) -> None:
        """A check of ``group`` that started with ``streams`` (its list then) found every
        one of ``checked`` (distinct streams of that list) fine: all of them (two or more:
        a single stream's own row costs the same), one stamp."""
        if len(checked) == len(streams) > 1:
            self.note((), now, (group.stamp_key(streams),))
        else:
            cid = group.container_id
            self.note([(s.spec.subscription, cid) for s in checked], now)

    def take(self, *, force: bool = False
             ) -> tuple[list[StreamKey], float, list[GroupKey]] | None:
        """The batch to store now (each key and group once, first noted first, and the
        oldest time noted), or None while it may wait."""
        if not self._pending:
            return None
        if not force and self._count < CHECKED_FLUSH_SIZE and (
                self._monotonic() - self._flushed < CHECKED_FLUSH_SECONDS):
            return None
        batch, self._pending, self._count = self._pending, [], 0
        self._flushed = self._monotonic()
        keys = list(dict.fromkeys(itertools.chain.from_iterable(k for k, _, _ in batch)))
        groups = list(dict.fromkeys(itertools.chain.from_iterable(g for _, g, _ in batch)))
        return keys, min(t for _, _, t in batch), groups


SINK_LOG_EVERY = 60.0  # seconds between two log lines about the same failing sink


class LogThrottle:
    """One log line per key per ``every`` seconds during an outage, counting the rest."""

    def __init__(self, every: float = SINK_LOG_EVERY,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self._every = every
        self._monotonic = monotonic
        self._last: dict[str, tuple[float, int]] = {}

    def allow(self, key: str) -> int | None:
        """The number of lines suppressed since the last one if a line may go out now, else
        None (and this one is counted as suppressed)."""
        now = self._monotonic()
        last, suppressed = self._last.get(key, (-self._every, 0))
        if now - last < self._every:
            self._last[key] = (last, suppressed + 1)
            return None
        self._last[key] = (now, 0)
        return suppressed


@dataclass(slots=True)
class StatusAnswer:
    """A syncStatus answer matched to the chunk of streams asked about, by position."""

    due: list[int] = field(default_factory=list)  # more data or an overwrite: drain
    ok: list[int] = field(default_factory=list)  # nothing new
    rejected: list[tuple[int, str]] = field(default_factory=list)  # token refused: why
    answered: int = 0  # the rest got no answer (retried at the next check)


def reference_ids(n: int) -> list[str]:
    """"0".."n-1": the referenceIds of a chunk of ``n`` tokens."""
    return [str(i) for i in range(n)]


def match_status(resp: SyncStatusResponse, n: int,
                 refs: list[str] | None = None) -> StatusAnswer:
    """Sort the answers for a chunk of ``n`` tokens asked with referenceIds "0".."n-1"
    (``refs``: ``reference_ids(n)``, when the caller keeps it); an unknown or repeated
    referenceId is ignored (the first answer for a token wins)."""
    results = resp.results
    if (not resp.errors and len(results) == n
            and [r.reference_id for r in results] == (refs or reference_ids(n))):
        # The usual answer, every token once and in order: sorted by position.
        due = [i for i, r in enumerate(results) if r.more_data or r.overwrite]
        ok = ([i for i, r in enumerate(results) if not (r.more_data or r.overwrite)] if due
              else list(range(n)))
        return StatusAnswer(due, ok, [], n)
    out = StatusAnswer()
    answered: set[int] = set()
    for r in resp.results:
        idx = _index(r.reference_id, n)
        if idx is not None and idx not in answered:
            answered.add(idx)
            (out.due if (r.more_data or r.overwrite) else out.ok).append(idx)
    for e in resp.errors:
        idx = _index(e.reference_id, n)
        if idx is not None and idx not in answered:
            answered.add(idx)
            out.rejected.append((idx, f"sync token rejected: {e.title or e.type} {e.detail}"
                                 .strip()))
    out.answered = len(answered)
    return out


def _index(ref: str | None, n: int) -> int | None:
    try:
        i = int(ref) if ref is not None else -1
    except ValueError:
        return None
    return i if 0 <= i < n else None


class PassTimer:
    """Counts group checks: a pass is as many checks as there are groups."""

    def __init__(self, monotonic: Callable[[], float] = time.monotonic) -> None:
        self._monotonic = monotonic
        self._checks = 0
        self._started = monotonic()

    def group_checked(self, groups: int) -> float | None:
        """The pass's duration in seconds when this check completes one (of ``groups``, the
        count now: streams come and go at run time), else None."""
        self._checks += 1
        if self._checks < groups:
            return None
        now = self._monotonic()
        elapsed, self._checks, self._started = now - self._started, 0, now
        return elapsed


def add_streams(groups: dict[str, Group], planner: Planner, fresh: Iterable[StreamRuntime],
                now: float) -> None:
    """Streams added at run time join their container's group (a new list, so a check in
    flight keeps its own), or make a new group; either is due at once."""
    for rt in fresh:
        cid = rt.spec.container_id
        g = groups.get(cid)
        if g is None:
            groups[cid] = Group(cid, [rt], planner.add_group(cid, 1, now))
        else:
            g.streams = [*g.streams, rt]
            planner.resize_group(cid, len(g.streams), now)


def remove_streams(groups: dict[str, Group], planner: Planner, keys: Set[StreamKey]) -> int:
    """Drop these streams (marked retired, so a drain not yet started is skipped); a group
    left empty leaves the plan. Returns how many were there."""
    removed = 0
    for cid in [cid for cid, g in groups.items() if any(s.spec.key in keys for s in g.streams)]:
        g = groups[cid]
        left = [s for s in g.streams if s.spec.key not in keys]
        for s in g.streams:
            s.retired = s.spec.key in keys
        removed += len(g.streams) - len(left)
        if left:
            g.streams = left
            planner.resize_group(cid, len(left))
        else:
            del groups[cid]
            planner.remove_group(cid)
    return removed


@dataclass(slots=True)
class GroupAges:
    """A group's streams as the freshness tick sees them, valid until a stream's check or
    quarantine changes (``Group.touched``), its streams are replaced, or ``until`` (the first
    quarantine to end). Times, not ages: the ages of a group nobody touched grow with ``now``."""

    streams: list[StreamRuntime]  # the list they were read from
    since: float  # when (an earlier ``now`` reads them again)
    until: float
    times: list[float]  # last check (or start) of each stream not in quarantine, in order
    subs: list[str]  # the subscriptions of those streams, each once, first seen first
    oldest: list[float]  # each one's oldest such time
    quarantined: int


def group_ages(g: Group, now: float, started_at: float) -> GroupAges:
    """Read ``g``'s streams for ``freshness`` (every stream not in quarantine at ``now``)."""
    streams = g.streams
    if max([s.quarantined_until for s in streams], default=0.0) <= now:
        # None in quarantine (the usual): a list comprehension per field, and when each
        # stream is another subscription's (no hub subscription twice here), their times.
        times = [started_at if t is None else t for t in [s.last_checked for s in streams]]
        subs = [s.spec.subscription for s in streams]
        if len(set(subs)) == len(subs):
            return GroupAges(streams, now, math.inf, times, subs, times, 0)
    times = []
    oldest: dict[str, float] = {}
    quarantined, until = 0, math.inf
    for s in g.streams:
        q = s.quarantined_until
        if q > now:
            quarantined += 1
            until = min(until, q)
            continue
        checked = s.last_checked
        t = started_at if checked is None else checked
        times.append(t)
        sub = s.spec.subscription
        if t <= oldest.get(sub, math.inf):
            oldest[sub] = t
    return GroupAges(streams, now, until, times, list(oldest), list(oldest.values()),
                     quarantined)


def freshness(groups: dict[str, Group], planner: Planner, now: float, started_at: float
              ) -> Freshness:
    """Ages of the streams' last successful checks, by busy and quiet groups; a stream never
    checked successfully is as stale as the process is old (``started_at``).

    Every few seconds over every stream (100,000), so each group's streams are read again
    only when they changed (``GroupAges``); the ages are the same as reading them all.
    """
    out = Freshness()
    busy: list[float] = []
    quiet: list[float] = []
    subs: list[str] = []
    oldest: list[float] = []
    quarantined = 0
    for g in groups.values():
        a = g.ages
        if (a is None or a.streams is not g.streams or not a.since <= now < a.until
                or g.checking):
            a = group_ages(g, now, started_at)
            g.ages = None if g.checking else a
        (busy if planner.is_busy(g.container_id, now) else quiet).extend(a.times)
        subs.extend(a.subs)
        oldest.extend(a.oldest)
        quarantined += a.quarantined
    # Each subscription's stalest stream, in the order first seen: one dict built at C speed;
    # a subscription in several groups (a hub's) then takes the largest of its ages.
    ages = [now - t if t < now else 0.0 for t in oldest]
    per_sub = out.per_subscription = dict(zip(subs, ages, strict=True))
    if len(per_sub) < len(subs):
        for sub, age in zip(subs, ages, strict=True):
            per_sub[sub] = max(per_sub[sub], age)
    out.busy = [age if age >= 0.0 else 0.0 for age in [now - t for t in busy]]
    out.quiet = [age if age >= 0.0 else 0.0 for age in [now - t for t in quiet]]
    out.quarantined = quarantined
    out.stalest = max(max(out.busy, default=0.0), max(out.quiet, default=0.0))
    return out
