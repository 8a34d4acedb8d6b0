"""The loop: take the most overdue container, check it (syncStatus or direct syncs), drain.

One ``CredentialScheduler`` per credential (each has its own request budget). Its work unit is a
*group*: one container with every stream on it that uses this credential. What is due when, how
each check goes, how often and how fast is the planner's business (notifier.core.planner,
pure); this module runs workers that follow it, talks to the service, the syncer and the
store, and reports. Streams without a token or mid-resync are drained without asking. What a
failure means for a stream is data on its error class (``on_failure``): one that retrying will
not fix (rejected token, malformed page, container gone) is quarantined with a growing backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence, Set

from notifier.core.checks import CheckChoice
from notifier.core.planner import Planner, SchedulerSettings
from notifier.errors import NotifierError, StateError
from notifier.failures import FailurePolicy
from notifier.metrics import Metrics
from notifier.runtime import (
    CheckTimes,
    Freshness,
    Group,
    PassStats,
    PassTimer,
    Progress,
    StreamRuntime,
    add_streams,
    freshness,
    remove_streams,
)
from notifier.source.client import RelationshipClient
from notifier.state.base import StateStore, StreamKey
from notifier.status_calls import StatusCalls
from notifier.store_guard import StoreGuard
from notifier.stream import StreamSpec
from notifier.sync import StreamSyncer

log = logging.getLogger(__name__)


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
        started_at: float | None = None,
        guard: StoreGuard | None = None,
    ) -> None:
        """``started_at`` (default: now) is how old a never-checked stream counts as."""
        self.name = name
        self._client = client
        self._store = store
        self._syncer = syncer
        self._s = settings
        self._drain_slots = drain_slots
        self._metrics = metrics
        self._clock = clock
        self._guard = guard or StoreGuard(metrics.store)
        self._started_at = clock() if started_at is None else started_at
        by_container: dict[str, list[StreamRuntime]] = {}
        for spec in specs:
            by_container.setdefault(spec.container_id, []).append(StreamRuntime(spec))
        self.planner = Planner(settings, {cid: len(s) for cid, s in by_container.items()})
        self.groups: dict[str, Group] = {
            cid: Group(cid, streams, self.planner.groups[cid])
            for cid, streams in by_container.items()
        }
        self._stream_count = sum(len(g.streams) for g in self.groups.values())
        self._stop = asyncio.Event()
        self._wake = asyncio.Event()  # pulsed when due times move earlier
        self.stats = PassStats()
        self._failures = FailurePolicy(name, store=store, metrics=metrics, settings=settings,
                                       clock=clock, stats=self.stats)
        self._status = StatusCalls(name, client, self._failures, self._pace)
        self.cycles_done = 0
        self._inflight = 0
        self._checked = CheckTimes()
        self._passes = PassTimer()

    @property
    def streams(self) -> list[StreamRuntime]:
        return [s for g in self.groups.values() for s in g.streams]

    @property
    def stream_count(self) -> int:
        """``len(self.streams)``, kept (the metrics tick asks every 5 s, at 10,000 groups)."""
        return self._stream_count

    async def load(self) -> None:
        """Restore tokens, quarantines and check times from the store; schedule every group."""
        states = {(st[0], st[1]): st for st in await self._store.stream_checks()}
        stamps = await self._store.check_stamps()  # (a stream's own times, and its group's)
        now = self._clock()
        for g in self.groups.values():
            for s in g.streams:
                s.load(states.get(s.spec.key))
            if g.container_id in stamps:
                g.stamped(stamps[g.container_id])
            g.touched()
            self.planner.start(g.container_id, g.last_success(), now)
        self.retune()
        eff = self.planner.start_interval()
        if eff > self._s.interval * 1.05 and self._s.policy == "round_robin":
            log.warning("budget too small for the interval: %d containers at %.0f checks/min "
                        "take %.0fs per pass (configured %.0fs)", len(self.groups),
                        self.planner.status_pace_per_s * 60.0, eff, self._s.interval,
                        extra={"credential": self.name})
        self._metrics.effective_interval(self.name, eff)

    async def add_streams(self, specs: Sequence[StreamSpec]) -> None:
        """Start polling streams at run time (hub discovery): their stored state is restored,
        a new container is checked at once. A stream already polled is left alone."""
        present = {s.spec.key for s in self.streams}
        fresh = [StreamRuntime(spec) for spec in specs if spec.key not in present]
        if not fresh:
            return
        for rt in fresh:
            rt.load(await self._store.get_stream(*rt.spec.key))
        add_streams(self.groups, self.planner, fresh, self._clock())
        self._stream_count += len(fresh)
        self._wake.set()
        self._wake.clear()

    def remove_streams(self, keys: Set[StreamKey]) -> int:
        """Stop polling these streams (a project retired by hub discovery). No new check
        starts for them; a page already being drained finishes. Returns how many were here."""
        removed = remove_streams(self.groups, self.planner, keys)
        self._stream_count -= removed
        return removed

    def replace_specs(self, specs: Sequence[StreamSpec]) -> None:
        """New specs for streams already polled (a renamed project: its events' name)."""
        by_key = {spec.key: spec for spec in specs}
        for s in self.streams:
            s.spec = by_key.get(s.spec.key, s.spec)

    def freshness(self, now: float) -> Freshness:
        """Ages of the streams' last successful checks, by busy and quiet groups."""
        return freshness(self.groups, self.planner, now, self._started_at)

    def retune(self) -> None:
        """Re-plan (see Planner.retune) and report what changed."""
        plan = self.planner.retune(self._clock())
        if plan is None or plan.effective_interval is None:
            return
        self._metrics.effective_interval(self.name, plan.effective_interval)
        if plan.coverage is not None:
            lost = plan.coverage == "lost"
            log.log(logging.WARNING if lost else logging.INFO, "budget %s max_staleness "
                    "(%.0fs): %d containers at %.1f checks/min take %.0fs per pass; each is "
                    "checked at least every %.0fs", "too small for" if lost else "covers again",
                    self._s.max_staleness, len(self.groups), plan.checks_per_s * 60,
                    plan.full_pass, plan.cap, extra={"credential": self.name})
        if plan.pulled and not self._stop.is_set():
            self._wake.set()
            self._wake.clear()

    def stop(self) -> None:
        self._stop.set()

    @property
    def stopping(self) -> asyncio.Event:
        """Set by ``stop()``: what runs alongside the scheduler (hub discovery) ends with it."""
        return self._stop

    async def run(self, *, once: bool = False, progress: Progress | None = None) -> None:
        """Work until ``stop()``; with ``once``, check every group one time and return."""
        if once:
            await self._run_once(progress)
            return
        workers = [asyncio.create_task(self._worker()) for _ in range(max(1, self._s.workers))]
        workers.append(asyncio.create_task(self._retune_loop()))
        try:
            await asyncio.gather(*workers)
        finally:
            for w in workers:
                w.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
            with contextlib.suppress(StateError):  # mere check times: logged by the guard
                await self._flush_checked(force=True)

    async def _run_once(self, progress: Progress | None) -> None:
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
                if not await self._guard.run(self._stop, self._check_group, self.groups[cid],
                                             True):
                    self.stats.failures += 1  # the state store failed: reported as a failure
                if progress is not None:
                    progress.checked(self.name, total - queue.qsize(), total, self.stats.events)

        await asyncio.gather(*(one_worker() for _ in range(max(1, self._s.workers))))
        await self._flush_checked(force=True)
        if progress is not None:
            progress.finished(self.name)
        self.cycles_done += 1

    async def _retune_loop(self) -> None:
        """Re-plan the intervals every few seconds while running."""
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), self.planner.retune_every())
            if self._stop.is_set():
                return
            try:
                self.retune()
            except Exception:  # a planning bug must not stop the checks
                log.exception("retune failed", extra={"credential": self.name})

    async def _worker(self) -> None:
        while not self._stop.is_set():
            now = self._clock()  # a free check slot may take a group early (Planner.pop_due)
            slot_in = self.planner.slot_in(asyncio.get_running_loop().time())
            cid = self.planner.pop_due(now, early=slot_in <= 0)
            if cid is None:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(),
                                           self.planner.idle_wait(now, slot_in))
                continue
            group = self.groups.get(cid)
            if group is None:
                continue  # removed at run time (hub discovery)
            self._inflight += 1
            try:  # a state-store failure: every worker pauses, the group is checked again
                await self._guard.run(self._stop, self._check_group, group)
            finally:
                self._inflight -= 1
                if not self._stop.is_set() and self.groups.get(cid) is group:
                    self.planner.reschedule(
                        cid, started=now, now=self._clock(),
                        quarantined_until=[s.quarantined_until for s in group.streams])
                if self._inflight == 0 and self._all_checked_once():
                    self.cycles_done = max(self.cycles_done, 1)

    def _all_checked_once(self) -> bool:
        return all(g.last_checked is not None for g in self.groups.values())

    async def _check_group(self, group: Group, drain_all_due: bool = False) -> None:
        group.checking += 1  # its streams change meanwhile: the freshness tick reads them
        try:
            await self._check(group, drain_all_due)
        finally:
            group.checking -= 1
            group.touched()

    async def _check(self, group: Group, drain_all_due: bool) -> None:
        # Runs once per container for its 10 or 100 streams: the steps per stream are kept
        # few (list comprehensions, no per-stream keys unless needed; see BENCHMARKS.md).
        now = self._clock()
        streams = group.streams  # (replaced, not changed, when streams come and go)
        # A one-off pass (--once) tries every stream, quarantined or not: skipping one would
        # report success for a subscription it never drained.
        active = (streams if drain_all_due
                  else [s for s in streams if s.quarantined_until <= now])
        if not active:
            return
        # A drain's first checkpoint resets the failure count (the drain's result says so):
        # note who is failing now, so a recovery is logged whichever way it happens.
        failing = {id(s) for s in active if s.failures}
        forced = [s for s in active if s.needs_drain]  # first syncs, resyncs: not asked
        polled = [s for s in active if not s.needs_drain] if forced else active
        since = [s.last_checked for s in polled]
        choice = self.planner.plan_check(  # --once checks every stream: no probe then
            group.container_id, list(zip([s.spec.key for s in polled], since, strict=True)), now,
            probe=not drain_all_due)
        due, unchanged = list[StreamRuntime](), list[StreamRuntime]()
        asked = (polled if len(choice.status) == len(polled)
                 else [polled[i] for i in choice.status])
        chunk_size = max(1, self._s.status_chunk)
        for start in range(0, len(asked), chunk_size):
            outcome = await self._status.ask(group, asked[start:start + chunk_size])
            if outcome is None:
                return  # the whole group failed; logged; retried at its next turn
            due.extend(outcome[0])
            unchanged.extend(outcome[1])
        self._metrics.status_checked(self.name, len(asked))
        probe, probed, skipped = await self._probe(polled, choice)
        direct = [polled[i] for i in choice.direct]
        followers = [] if skipped else [polled[i] for i in choice.followers]
        drains = [*forced, *due, *followers, *direct]
        results = [] if not drains else await asyncio.gather(  # (none: the usual quiet check)
            *(self._drain(s, check=k >= len(drains) - len(direct)) for k, s in enumerate(drains)))
        drains, results = [*drains, *probe], [*results, *probed]
        now = self._clock()
        checked = [*unchanged, *(s for s, (ok, _) in zip(drains, results, strict=True) if ok)]
        said_changed = {id(s) for s in due}
        polled_drains = [(s, n or int(id(s) in said_changed)) for k, (s, (ok, n)) in
                         enumerate(zip(drains, results, strict=True)) if ok and k >= len(forced)]
        if polled_drains or self.planner.learns_from_quiet(group.container_id):
            since_of = dict(zip(map(id, polled), since, strict=True))
            self.planner.learn(group.container_id, [
                (s.spec.key, since_of[id(s)], changed) for s, changed in
                [*((s, 0) for s in unchanged), *polled_drains]], now)
        if checked:
            self._checked.note_check(group, streams, checked, now)
            await self._flush_checked()
            for s in checked:
                s.last_checked = now
            if failing:  # (a stream's failures only grow by its own failed check: not here)
                for s in checked:
                    if s.failures or id(s) in failing:
                        await self._store.clear_quarantine(*s.spec.key, reset_failures=True)
                        log.info("stream recovered from quarantine",
                                 extra=self._failures.ctx(s))
                        s.failures = 0
        if len(checked) + skipped == len(group.streams):  # as planned (followers may wait)
            self.planner.checked(group.container_id, now)
        self._count_pass()

    async def _probe(self, polled: list[StreamRuntime], choice: CheckChoice
                     ) -> tuple[list[StreamRuntime], list[tuple[bool, int]], int]:
        """The check's probe, if any (notifier.core.checks.choose_probe), synced first:
        ([it], [its drain's result], how many followers to skip: all unless it found
        changes)."""
        if choice.probe is None:
            return [], [], 0
        s = polled[choice.probe]
        ok, n = await self._drain(s, check=True)
        return [s], [(ok, n)], 0 if ok and n else len(choice.followers)

    async def _flush_checked(self, *, force: bool = False) -> None:
        batch = self._checked.take(force=force)
        if batch is not None:
            try:
                await self._store.mark_checked(*batch)
            except StateError:
                self._checked.note(*batch)  # kept for the next flush (stamped no newer)
                raise

    def _count_pass(self) -> None:
        """Report a pass's duration when this check completes one."""
        elapsed = self._passes.group_checked(len(self.groups))
        if elapsed is None:
            return
        self._metrics.cycle_completed(self.name, elapsed, self.stream_count)
        if self._s.policy == "round_robin":  # adaptive: set by retune from the plan
            self._metrics.effective_interval(self.name, max(elapsed, self._s.interval))
        if self._s.policy == "round_robin" and elapsed > self._s.interval * 1.5:
            log.info("a pass over %d containers took %.0fs (interval %.0fs): the request "
                     "budget stretches the interval", len(self.groups), elapsed,
                     self._s.interval, extra={"credential": self.name})

    async def _pace(self) -> bool:
        """Wait for this syncStatus call's slot; False if stopped meanwhile.

        Status checks could fill the whole request window on their own (every worker waiting
        on the budget), and then the budget would never grant a sync page: changes found would
        never be fetched. Pacing them (Planner.status_slot) leaves sync its share.
        """
        wait = self.planner.status_slot(asyncio.get_running_loop().time())
        if wait > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), wait)
        return not self._stop.is_set()

    async def _drain(self, s: StreamRuntime, *, check: bool = False) -> tuple[bool, int]:
        """(completed, events); with ``check`` a direct sync: its first page is the check."""
        if not check:
            self.planner.sync_pages_asked()
        elif not await self._pace():
            return False, 0
        total, counted = 0, 1  # pages of the turn counted already: the first (check or asked)
        while True:  # one turn per slot: a long drain gives way to the others between turns
            done, n, more = await self._drain_turn(s, check=check, counted=counted)
            check, counted = False, 0
            total += n
            if not more or self._stop.is_set():
                return done, total

    async def _drain_turn(self, s: StreamRuntime, *, check: bool, counted: int
                          ) -> tuple[bool, int, bool]:
        """At most ``drain_turn_pages`` pages of ``s`` under one drain slot: (completed, events,
        whether the page bound ended the turn with more to come); its pages but ``counted``
        are told to the planner as sync pages paid."""
        turn = self._s.drain_turn_pages
        async with self._drain_slots:
            if self._stop.is_set() or s.retired:
                return False, 0, False
            try:
                res = await self._syncer.drain(
                    self._client, s.spec, stop=self._stop, force_resync=s.force_resync,
                    max_pages=turn, check=check,
                )
            except NotifierError as exc:
                await self.on_failure(s, exc)
                return False, 0, False
            self.planner.sync_pages_asked(max(0, res.pages - counted))
            s.drained(res)
            self.stats.events += res.created + res.deleted
            more = not res.completed and turn is not None and res.pages >= turn
            return res.completed, res.created + res.deleted, more

    async def on_failure(self, s: StreamRuntime, exc: NotifierError) -> None:
        """What a failed check or drain means for ``s`` (see notifier.failures)."""
        await self._failures.on_failure(s, exc)
