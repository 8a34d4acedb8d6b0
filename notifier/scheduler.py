"""Decide which containers to check, check them with syncStatus, drain what changed.

One ``CredentialScheduler`` per credential (each has its own request budget). Its work unit is a
*group*: one container with every stream (subscription) on it that uses this credential, so one
syncStatus call (chunked if long) covers all their tokens. Groups wait in a due-queue; workers
take the most overdue one, check it, drain the streams whose status says ``moreData`` or
``overwrite`` and schedule it again. Streams without a token (first sync) or in the middle of a
resync are drained without asking. A stream that fails in a way retrying will not fix (rejected
token, malformed page, container gone or forbidden) is quarantined with a growing backoff; the
rest carry on.

Budget: syncStatus calls are paced (``status_budget``) so that, with the sync pages being paid,
they stay below the line above which the budget refuses sync pages; otherwise the checks alone
would fill every window and no change found would ever be fetched. The adaptive policy re-plans
every few seconds (``retune``): each group's interval follows its change rate (learnt from
checks that found changes) within [interval, max_staleness], fitted to that pace.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import sys
import time
from collections.abc import Callable, Sequence, Set
from dataclasses import dataclass
from typing import Literal

from notifier.core.schedule import (
    ChangeRate,
    DueQueue,
    effective_interval,
    pass_seconds,
    quarantine_delay,
    solve_intervals,
    status_budget,
)
from notifier.errors import (
    BadRequestError,
    ClientError,
    CredentialError,
    ForbiddenError,
    InvalidGrantError,
    NotFoundError,
    NotifierError,
    ProtocolError,
    SinkError,
    UpstreamError,
)
from notifier.metrics import Metrics
from notifier.source.client import RelationshipClient
from notifier.state.base import StateStore, StreamState
from notifier.sync import DrainResult, StreamSpec, StreamSyncer

log = logging.getLogger(__name__)

Policy = Literal["adaptive", "round_robin"]
CHECKED_FLUSH_SECONDS = 1.0  # check times reach the store in batches at most this old
CHECKED_FLUSH_SIZE = 5_000
SINK_LOG_EVERY = 60.0  # seconds between two log lines about the same failing sink
BUSY_RATE_PER_S = 1.0 / 3600.0  # a group that changes more than about hourly counts as busy
PRIOR_RATE_PER_S = 1.0 / 86400.0  # a group never seen changing is assumed to change daily
PACE_SHARE = 0.95  # of what status may use without starving sync pages (see status_budget)


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

    def load(self, st: StreamState | None) -> None:
        if st is None:
            return
        self.token = st.sync_token
        self.in_resync = st.in_resync
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
    container_id: str
    streams: list[StreamRuntime]
    rate: ChangeRate
    interval: float
    last_checked: float | None = None

    def last_success(self) -> float | None:
        times = [s.last_checked for s in self.streams]
        return None if any(t is None for t in times) else min(t for t in times if t is not None)


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
class PassStats:
    """What a run did, for ``run --once``'s summary and exit status."""

    events: int = 0
    failures: int = 0


class CredentialScheduler:
    """Runs the check-and-drain loop for every group of one credential."""

    def __init__(
        self,
        name: str,
        client: RelationshipClient,
        specs: Sequence[StreamSpec],
        *,
        store: StateStore,
        syncer: StreamSyncer,
        settings: SchedulerSettings,
        drain_slots: asyncio.Semaphore,
        metrics: Metrics,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.name = name
        self._client = client
        self._store = store
        self._syncer = syncer
        self._s = settings
        self._drain_slots = drain_slots
        self._metrics = metrics
        self._clock = clock
        by_container: dict[str, list[StreamRuntime]] = {}
        for spec in specs:
            by_container.setdefault(spec.container_id, []).append(StreamRuntime(spec))
        self.groups: dict[str, Group] = {
            cid: Group(cid, streams, ChangeRate(settings.half_life, settings.rate_prior_per_s),
                       settings.interval)
            for cid, streams in by_container.items()
        }
        self._queue = DueQueue()
        self._stop = asyncio.Event()
        self._wake = asyncio.Event()  # pulsed when due times move earlier
        self._sync_pages = 0  # sync pages asked for since the last retune
        self._sync_per_s = 0.0  # their smoothed rate
        self._retuned_at: float | None = None
        self._covered: bool | None = None  # does the budget cover max_staleness for all?
        self._pace_per_s = status_budget(settings.requests_per_minute, settings.reserve, 0.0,
                                         PACE_SHARE)
        self._next_slot = 0.0  # loop time of the next syncStatus slot (pacing)
        self.stats = PassStats()
        self.cycles_done = 0
        self._inflight = 0
        self._sink_log: dict[str, tuple[float, int]] = {}
        self._checked: dict[tuple[str, str], float] = {}
        self._checked_flushed = time.monotonic()
        self._pass_checks = 0
        self._pass_started = time.monotonic()

    @property
    def streams(self) -> list[StreamRuntime]:
        return [s for g in self.groups.values() for s in g.streams]

    async def load(self) -> None:
        """Restore tokens, quarantines and check times from the store; schedule every group."""
        states = {st.key: st for st in await self._store.list_streams()}
        now = self._clock()
        for g in self.groups.values():
            for s in g.streams:
                s.load(states.get(s.spec.key))
            last = g.last_success()
            g.last_checked = last
            due = now if last is None else min(now, last + g.interval)
            self._queue.schedule(g.container_id, due)
        self.retune()
        status_rate = self._pace_per_s * 60.0
        eff = effective_interval(len(self.groups), self._s.interval, status_rate)
        if eff > self._s.interval * 1.05 and self._s.policy == "round_robin":
            log.warning(
                "budget too small for the interval: %d containers at %.0f status checks/min "
                "take %.0fs per pass (configured %.0fs)",
                len(self.groups), status_rate, eff, self._s.interval,
                extra={"credential": self.name},
            )
        self._metrics.effective_interval(self.name, eff)

    async def add_streams(self, specs: Sequence[StreamSpec]) -> None:
        """Start polling streams at run time (hub discovery): their stored state is restored,
        a new container is checked at once. A stream already polled is left alone."""
        present = {s.spec.key for s in self.streams}
        fresh = [spec for spec in specs if spec.key not in present]
        if not fresh:
            return
        now = self._clock()
        for spec in fresh:
            rt = StreamRuntime(spec)
            rt.load(await self._store.get_stream(spec.subscription, spec.container_id))
            g = self.groups.get(spec.container_id)
            if g is None:
                self.groups[spec.container_id] = Group(
                    spec.container_id, [rt],
                    ChangeRate(self._s.half_life, self._s.rate_prior_per_s), self._s.interval)
                self._queue.schedule(spec.container_id, now)
            else:
                g.streams = [*g.streams, rt]  # a new list: a check in flight keeps its own
                self._queue.schedule(spec.container_id, now)
        self._wake.set()
        self._wake.clear()

    def remove_streams(self, keys: Set[tuple[str, str]]) -> int:
        """Stop polling these streams (a project retired by hub discovery). No new check
        starts for them; a page already being drained finishes. Returns how many were here."""
        removed = 0
        for cid in [cid for cid, g in self.groups.items()
                    if any(s.spec.key in keys for s in g.streams)]:
            g = self.groups[cid]
            left = [s for s in g.streams if s.spec.key not in keys]
            for s in g.streams:
                s.retired = s.spec.key in keys
            removed += len(g.streams) - len(left)
            if left:
                g.streams = left
            else:
                del self.groups[cid]
                self._queue.remove(cid)
        return removed

    def replace_specs(self, specs: Sequence[StreamSpec]) -> None:
        """New specs for streams already polled (a renamed project: its events' name)."""
        by_key = {spec.key: spec for spec in specs}
        for s in self.streams:
            spec = by_key.get(s.spec.key)
            if spec is not None:
                s.spec = spec

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
        return self._pace_per_s * self._s.utilisation

    def _cost(self, g: Group) -> int:
        return max(1, math.ceil(len(g.streams) / max(1, self._s.status_chunk)))

    def _observe_sync_rate(self, now: float) -> None:
        last, self._retuned_at = self._retuned_at, now
        if last is None or now <= last:
            return
        elapsed = now - last
        alpha = 1.0 - math.exp(-elapsed / self._s.sync_rate_time_constant)
        self._sync_per_s += alpha * (self._sync_pages / elapsed - self._sync_per_s)
        self._sync_pages = 0

    def retune(self) -> None:
        """Recompute each group's interval from its change rate and the budget.

        Adaptive: intervals ∝ 1/√rate within [interval, max_staleness], fitted to what the
        budget leaves after the sync pages being paid. Groups whose interval got shorter are
        brought forward at once. If the budget cannot check every group within max_staleness,
        that is logged once and the effective interval metric shows the stretched pass.
        """
        groups = list(self.groups.values())
        if not groups:
            return
        now = self._clock()
        self._observe_sync_rate(now)
        self._pace_per_s = status_budget(self._s.requests_per_minute, self._s.reserve,
                                         self._sync_per_s, PACE_SHARE)
        if self._s.policy == "round_robin":
            for g in groups:
                g.interval = self._s.interval
            return
        costs = [self._cost(g) for g in groups]
        rates = [g.rate.rate(now) for g in groups]
        checks_per_s = self.status_checks_per_s()
        intervals = solve_intervals(rates, checks_per_s, self._s.interval, self._s.max_staleness,
                                    costs=costs)
        full_pass = pass_seconds(costs, checks_per_s)
        self._report_coverage(full_pass, checks_per_s, len(groups))
        self._metrics.effective_interval(self.name, max(*intervals, full_pass))
        pulled = False
        for g, iv in zip(groups, intervals, strict=True):
            old = g.interval
            g.interval = iv
            due = self._queue.due_of(g.container_id)
            if due is not None and g.last_checked is not None and iv < old:
                new_due = g.last_checked + iv
                if new_due < due:
                    self._queue.schedule(g.container_id, new_due)
                    pulled = True
        if pulled and not self._stop.is_set():
            self._wake.set()
            self._wake.clear()

    def _report_coverage(self, full_pass: float, checks_per_s: float, groups: int) -> None:
        covered = full_pass <= self._s.max_staleness
        if covered == self._covered:
            return
        self._covered = covered
        if not covered:
            log.warning(
                "budget too small for max_staleness: %d containers at %.1f status checks/min "
                "take %.0fs per pass (max_staleness %.0fs); every container is still checked "
                "in turn, about every %.0fs", groups, checks_per_s * 60, full_pass,
                self._s.max_staleness, full_pass, extra={"credential": self.name})
        elif self._retuned_at is not None:
            log.info("budget covers max_staleness again: a pass takes %.0fs (max_staleness "
                     "%.0fs)", full_pass, self._s.max_staleness,
                     extra={"credential": self.name})

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()

    async def run(self, *, once: bool = False, progress: bool = False) -> None:
        """Work until ``stop()``; with ``once``, check every group one time and return."""
        if once:
            total = len(self.groups)
            queue: asyncio.Queue[str] = asyncio.Queue()
            for cid in self.groups:
                queue.put_nowait(cid)

            async def one_worker() -> None:
                while not self._stop.is_set():
                    try:
                        cid = queue.get_nowait()
                    except asyncio.QueueEmpty:
                        return
                    await self._check_group(self.groups[cid], drain_all_due=True)
                    if progress:
                        done = total - queue.qsize()
                        print(f"\r[{self.name}] {done}/{total} containers checked, "
                              f"{self.stats.events} changes", end="", file=sys.stderr)

            await asyncio.gather(*(one_worker() for _ in range(max(1, self._s.workers))))
            await self._flush_checked(force=True)
            if progress:
                print(file=sys.stderr)
            self.cycles_done += 1
            return
        workers = [asyncio.create_task(self._worker()) for _ in range(max(1, self._s.workers))]
        workers.append(asyncio.create_task(self._retune_loop()))
        try:
            await asyncio.gather(*workers)
        finally:
            for w in workers:
                w.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
            await self._flush_checked(force=True)

    async def _retune_loop(self) -> None:
        """Re-plan the intervals every few seconds while running."""
        every = self._s.retune_seconds
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), every)
            if self._stop.is_set():
                return
            try:
                self.retune()
            except Exception:  # a planning bug must not stop the checks
                log.exception("retune failed", extra={"credential": self.name})

    async def _worker(self) -> None:
        while not self._stop.is_set():
            now = self._clock()
            cid = self._queue.pop_due(now)
            if cid is None:
                nxt = self._queue.next_due()
                wait = 1.0 if nxt is None else min(max(nxt - now, 0.01), 5.0)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), wait)
                continue
            assert isinstance(cid, str)
            group = self.groups.get(cid)
            if group is None:
                continue  # removed at run time (hub discovery)
            self._inflight += 1
            try:
                await self._check_group(group)
            finally:
                self._inflight -= 1
                if (self._queue.due_of(cid) is None and not self._stop.is_set()
                        and self.groups.get(cid) is group):
                    self._queue.schedule(cid, self._next_due(group, started=now))
                if self._inflight == 0 and self._all_checked_once():
                    self.cycles_done = max(self.cycles_done, 1)

    def _all_checked_once(self) -> bool:
        return all(g.last_checked is not None for g in self.groups.values())

    def _next_due(self, group: Group, started: float) -> float:
        """Next check: ``interval`` after this one started (its duration is not added on)."""
        now = self._clock()
        due = started + group.interval
        quarantined = [s.quarantined_until for s in group.streams if s.quarantined_until > now]
        if quarantined and len(quarantined) == len(group.streams):
            due = max(due, min(quarantined))
        return due

    async def _check_group(self, group: Group, *, drain_all_due: bool = False) -> None:
        now = self._clock()
        # A one-off pass (--once) tries every stream, quarantined or not: skipping one would
        # report success for a subscription it never drained.
        active = [s for s in group.streams if drain_all_due or s.quarantined_until <= now]
        if not active:
            return
        # A drain's first checkpoint resets the stored failure count (and ``_drain`` reloads
        # it): note who is failing now, so a recovery is logged whichever way it happens.
        failing = {id(s) for s in active if s.failures}
        to_drain = [s for s in active if s.token is None or s.in_resync or s.force_resync]
        polled = [s for s in active if not (s.token is None or s.in_resync or s.force_resync)]
        forced = len(to_drain)  # bootstraps and resyncs: not evidence of a change rate
        checked: list[StreamRuntime] = []
        for start in range(0, len(polled), max(1, self._s.status_chunk)):
            chunk = polled[start:start + self._s.status_chunk]
            outcome = await self._status(group, chunk)
            if outcome is None:
                return  # the whole group failed; logged; retried at its next turn
            due, ok = outcome
            to_drain.extend(due)
            checked.extend(ok)
        self._metrics.status_checked(self.name, len(polled))
        if to_drain:
            results = await asyncio.gather(*(self._drain(s) for s in to_drain))
            # Streams whose syncStatus said "changes" and that delivered some feed the rate.
            changed = sum(1 for ok, n in results[forced:] if ok and n)
            checked.extend(s for s, (ok, _) in zip(to_drain, results, strict=True) if ok)
            if changed:
                group.rate.record(now, changed)
        now = self._clock()
        if checked:
            self._note_checked([s.spec.key for s in checked], now)
            await self._flush_checked()
            for s in checked:
                s.last_checked = now
                if s.failures or id(s) in failing:
                    await self._store.clear_quarantine(*s.spec.key, reset_failures=True)
                    log.info("stream recovered from quarantine",
                             extra=self._ctx(s))
                    s.failures = 0
        if len(checked) == len(group.streams):
            group.last_checked = now
        self._count_pass()

    def _note_checked(self, keys: list[tuple[str, str]], now: float) -> None:
        for key in keys:
            self._checked.setdefault(key, now)

    async def _flush_checked(self, *, force: bool = False) -> None:
        """Store check times in batches: one transaction per second, not one per container.

        They only inform ``notifier status`` and the staleness after a restart, so losing the
        last second of them in a crash costs nothing; each batch is stamped with its oldest
        time, which never overstates freshness.
        """
        if not self._checked:
            return
        if not force and len(self._checked) < CHECKED_FLUSH_SIZE and (
                time.monotonic() - self._checked_flushed < CHECKED_FLUSH_SECONDS):
            return
        batch, self._checked = self._checked, {}
        self._checked_flushed = time.monotonic()
        await self._store.mark_checked(list(batch), min(batch.values()))

    def _count_pass(self) -> None:
        """One pass = as many group checks as there are groups; report its duration."""
        self._pass_checks += 1
        if self._pass_checks < len(self.groups):
            return
        elapsed = time.monotonic() - self._pass_started
        self._metrics.cycle_completed(self.name, elapsed, len(self.streams))
        if self._s.policy == "round_robin":  # adaptive: set by retune from the plan
            self._metrics.effective_interval(self.name, max(elapsed, self._s.interval))
        if self._s.policy == "round_robin" and elapsed > self._s.interval * 1.5:
            log.info("a pass over %d containers took %.0fs (interval %.0fs): the request "
                     "budget stretches the interval", len(self.groups), elapsed,
                     self._s.interval, extra={"credential": self.name})
        self._pass_checks = 0
        self._pass_started = time.monotonic()

    async def _status(
        self, group: Group, chunk: list[StreamRuntime]
    ) -> tuple[list[StreamRuntime], list[StreamRuntime]] | None:
        items = [(s.token or "", str(i)) for i, s in enumerate(chunk)]
        if not await self._pace():
            return None
        try:
            resp = await self._client.sync_status(group.container_id, items)
        except (BadRequestError, ProtocolError) as exc:
            # One bad token (or one malformed result) spoils the whole answer: split the batch
            # so the others go on, down to the culprit, which recovers by a resync.
            return await self._split_status(group, chunk, exc)
        except (ForbiddenError, NotFoundError) as exc:
            reason = "gone" if isinstance(exc, NotFoundError) else "forbidden"
            for s in chunk:
                await self._quarantine(s, reason, exc)
            return None
        except InvalidGrantError as exc:
            log.error("%s", exc, extra={"credential": self.name})
            return None
        except (UpstreamError, CredentialError) as exc:
            log.warning("syncStatus failed for container %s: %s", group.container_id, exc,
                        extra={"credential": self.name, "container": group.container_id})
            return None
        due: list[StreamRuntime] = []
        ok: list[StreamRuntime] = []
        answered: set[int] = set()
        for r in resp.results:
            idx = _index(r.reference_id, len(chunk))
            if idx is None or idx in answered:
                continue
            answered.add(idx)
            s = chunk[idx]
            (due if (r.more_data or r.overwrite) else ok).append(s)
        for e in resp.errors:
            idx = _index(e.reference_id, len(chunk))
            if idx is None or idx in answered:
                continue
            answered.add(idx)
            s = chunk[idx]
            s.force_resync = True
            await self._quarantine(s, "bad_token", ProtocolError(
                f"sync token rejected: {e.title or e.type} {e.detail}".strip(),
                endpoint="syncStatus"))
        missing = len(chunk) - len(answered)
        if missing:
            log.warning("syncStatus answered %d of %d tokens; the rest are retried later",
                        len(answered), len(chunk),
                        extra={"credential": self.name, "container": group.container_id})
        return due, ok

    async def _split_status(
        self, group: Group, chunk: list[StreamRuntime], exc: Exception
    ) -> tuple[list[StreamRuntime], list[StreamRuntime]] | None:
        """A syncStatus batch rejected as a whole (400) or answered with a malformed result:
        ask for each half separately; a single culprit is quarantined and resyncs."""
        if len(chunk) == 1:
            s = chunk[0]
            s.force_resync = True
            await self._quarantine(s, "bad_token", exc)
            return [], []
        mid = len(chunk) // 2
        due: list[StreamRuntime] = []
        ok: list[StreamRuntime] = []
        for half in (chunk[:mid], chunk[mid:]):
            outcome = await self._status(group, half)
            if outcome is None:
                return None
            due.extend(outcome[0])
            ok.extend(outcome[1])
        return due, ok

    async def _pace(self) -> bool:
        """Wait for this syncStatus call's slot; False if stopped meanwhile.

        Status checks could fill the whole request window on their own (every worker waiting
        on the budget), and then the budget would never grant a sync page: changes found would
        never be fetched. Pacing them at ``status_pace_per_s`` leaves sync its share.
        """
        loop = asyncio.get_running_loop()
        now = loop.time()
        slot = max(now, self._next_slot)
        self._next_slot = slot + 1.0 / max(self._pace_per_s, 1e-6)
        if slot > now:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), slot - now)
        return not self._stop.is_set()

    async def _drain(self, s: StreamRuntime) -> tuple[bool, int]:
        # Demand, not completions: a page counts when it is asked for, so sync pages held back
        # by status checks still lower the status pace (completions alone would hide that).
        self._sync_pages += 1
        async with self._drain_slots:
            if self._stop.is_set() or s.retired:
                return False, 0
            try:
                res = await self._syncer.drain(
                    self._client, s.spec, stop=self._stop, force_resync=s.force_resync
                )
            except BadRequestError as exc:
                s.force_resync = True
                await self._quarantine(s, "bad_token", exc)
                return False, 0
            except (ForbiddenError, NotFoundError) as exc:
                reason = "gone" if isinstance(exc, NotFoundError) else "forbidden"
                await self._quarantine(s, reason, exc)
                return False, 0
            except ProtocolError as exc:
                await self._quarantine(s, "malformed_page", exc)
                return False, 0
            except ClientError as exc:
                await self._quarantine(s, "error", exc)
                return False, 0
            except SinkError as exc:
                self.stats.failures += 1
                self._sink_failed(exc, s)
                return False, 0
            except (UpstreamError, CredentialError) as exc:
                self.stats.failures += 1
                log.warning("sync failed, retried at the next check: %s", exc,
                            extra=self._ctx(s))
                return False, 0
            except NotifierError as exc:
                self.stats.failures += 1
                log.error("sync failed: %s", exc, extra=self._ctx(s))
                return False, 0
            self._sync_pages += max(0, res.pages - 1)
            s.drained(res)
            self.stats.events += res.created + res.deleted
            return res.completed, res.created + res.deleted

    def _sink_failed(self, exc: SinkError, s: StreamRuntime) -> None:
        """One log line per sink per minute during an outage, not one per stream per check."""
        now = time.monotonic()
        last, suppressed = self._sink_log.get(exc.sink, (-SINK_LOG_EVERY, 0))
        if now - last < SINK_LOG_EVERY:
            self._sink_log[exc.sink] = (last, suppressed + 1)
            return
        more = f" ({suppressed} more pages failed since the last report)" if suppressed else ""
        log.warning("sink %s did not accept events; the page will be retried: %s%s",
                    exc.sink, exc, more, extra={**self._ctx(s), "sink": exc.sink})
        self._sink_log[exc.sink] = (now, 0)

    async def _quarantine(self, s: StreamRuntime, reason: str, exc: Exception) -> None:
        s.failures += 1
        delay = quarantine_delay(s.failures, self._s.quarantine_initial, self._s.quarantine_max)
        s.quarantined_until = self._clock() + delay
        self.stats.failures += 1
        await self._store.quarantine(*s.spec.key, until=s.quarantined_until, reason=reason)
        self._metrics.stream_quarantined(reason)
        log.warning("stream quarantined for %.0fs (%s): %s", delay, reason, exc,
                    extra=self._ctx(s))

    def _ctx(self, s: StreamRuntime) -> dict[str, str]:
        return {"subscription": s.spec.subscription, "container": s.spec.container_id,
                "credential": self.name}


def _index(ref: str | None, n: int) -> int | None:
    try:
        i = int(ref) if ref is not None else -1
    except ValueError:
        return None
    return i if 0 <= i < n else None
