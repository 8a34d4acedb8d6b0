"""The application: builds every component from the config, runs them, shuts them down.

Only ``App`` installs signal handlers. Resources are async context managers stacked in an
``AsyncExitStack`` so teardown runs in reverse order even after a failed start. Shutdown: stop
scheduling, let in-flight pages finish (or abandon them unchecked), then close the sinks, all
within ``shutdown_timeout`` from the stop request; then the HTTP session and the store.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import signal
import time
from collections.abc import Callable, Mapping
from contextlib import AsyncExitStack

import aiohttp

from notifier import __version__
from notifier.assembly import Assembly
from notifier.cluster.coordinator import Coordinator
from notifier.cluster.partitions import work_map
from notifier.cluster.records import probe_key
from notifier.cluster.store import ClusterStore
from notifier.cluster.syncer import ClusterSyncer
from notifier.cluster.txn import PartitionTxn
from notifier.config import Config
from notifier.errors import NotifierError, StateLockedError
from notifier.gc_policy import RunGC
from notifier.housekeeping import drain_outboxes, prune_orphans
from notifier.hub_runtime import HubStreams
from notifier.metrics import Metrics
from notifier.runtime import Freshness, Progress
from notifier.scheduler import CredentialScheduler
from notifier.server import HealthState, MetricsServer
from notifier.sink_lifecycle import close_sinks, start_sinks
from notifier.sinks.base import Sink, split_sinks
from notifier.source.http import USER_AGENT, create_session
from notifier.source.keepalive import KeepAlivePool
from notifier.state.base import StateStore
from notifier.state.lock import StateLock
from notifier.state.sqlite import SqliteStateStore
from notifier.store_guard import StoreGuard
from notifier.sync import StreamSyncer

log = logging.getLogger(__name__)

# Of shutdown_timeout, the part kept for closing the sinks (in-flight pages get the rest, and
# what they leave unused goes to the sinks too).
SINK_CLOSE_SHARE = 0.5
SINK_CLOSE_MAX = 10.0
METRICS_TICK_SECONDS = 5.0
# Sync pages that arrive back to back share one publish and one checkpoint (at most this many,
# about 1,000 relationships): most of a page's cost is its durable transaction.
SYNC_BATCH_PAGES = 10


class App:
    """Owns the event loop's work: one instance per ``notifier run``."""

    def __init__(
        self,
        config: Config,
        *,
        metrics: Metrics | None = None,
        sink_overrides: Mapping[str, Sink] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.metrics = metrics or Metrics()
        self.health = HealthState()
        self.store_guard = StoreGuard(self.metrics.store, self.health)  # the store's observer
        self._sink_overrides = dict(sink_overrides or {})
        self._clock = clock
        self._stop = asyncio.Event()
        self.assembly = Assembly(config, metrics=self.metrics, guard=self.store_guard,
                                 clock=clock)
        self.schedulers: list[CredentialScheduler] = []
        self.server: MetricsServer | None = None
        self.store: SqliteStateStore | None = None  # open while running
        self.ready = asyncio.Event()
        self._shutdown_deadline: float | None = None  # loop time by which the sinks are closed
        self.coordinator: Coordinator | None = None  # cluster mode

    def request_stop(self) -> None:
        if not self._stop.is_set():
            log.info("stop requested: finishing in-flight pages")
        self.health.shutting_down()  # leave the Service's endpoints while draining
        self._stop.set()
        for s in self.schedulers:
            s.stop()

    async def run(self, *, once: bool = False, progress: Progress | None = None) -> int:
        """Run until stopped (or one pass with ``once``, told to ``progress``); returns the
        exit status."""
        loop = asyncio.get_running_loop()
        installed: list[signal.Signals] = []
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                loop.add_signal_handler(sig, self.request_stop)
                installed.append(sig)
            except (NotImplementedError, RuntimeError):  # not the main thread (tests)
                pass
        run_gc = RunGC()
        run_gc.pause()  # until start-up is done (see notifier.gc_policy)
        try:
            return await self._run(once=once, progress=progress, run_gc=run_gc)
        except StateLockedError as exc:
            log.error("cannot start: %s", exc)
            return 2
        except NotifierError as exc:
            log.error("cannot start: %s", exc)
            return 1
        finally:
            for sig in installed:
                loop.remove_signal_handler(sig)
            run_gc.restore()

    async def _run(self, *, once: bool, progress: Progress | None, run_gc: RunGC) -> int:
        cfg = self.config
        self.metrics.build_info(__version__)
        self.health.config_loaded()
        async with AsyncExitStack() as stack:
            stack.enter_context(StateLock(cfg.state.path))
            if cfg.metrics.enabled and not once:
                # Before the store: a schema migration (in the store's thread) can take minutes
                # on a large file; /healthz answers meanwhile, /readyz once the store is open.
                self.server = await stack.enter_async_context(
                    MetricsServer(self.metrics, cfg.metrics.listen, self.health)
                )
            busy, guard = cfg.state.busy_timeout, self.store_guard
            store = await stack.enter_async_context(
                SqliteStateStore(cfg.state.path, busy_timeout=busy, observer=guard)
                if cfg.cluster is None else
                ClusterStore(cfg.state.path, work_map(cfg), busy_timeout=busy, observer=guard))
            self.health.store_open()
            self.store = store
            session = await stack.enter_async_context(
                create_session(timeout=cfg.source.timeout)
            )
            self.assembly.keepalive = await stack.enter_async_context(
                KeepAlivePool(cfg.source.base_url, user_agent=USER_AGENT))
            sinks = await self._start_sinks(stack, store)
            self.health.sinks_started()
            _, outbox_sinks = split_sinks(sinks.values())

            def wake_outbox() -> None:
                for s in outbox_sinks:
                    s.notify()

            if isinstance(store, ClusterStore):  # schedulers start as partitions are assigned
                if once:
                    log.error("--once is not available in cluster mode")
                    return 2
                run_gc.started()  # partitions' schedulers are built later, as assigned
                return await self._run_cluster(store, session, sinks, ClusterSyncer(
                    store, metrics=self.metrics, clock=self._clock, on_outbox=wake_outbox,
                    batch_pages=SYNC_BATCH_PAGES), wake_outbox)
            clients = self.assembly.build_clients(session, store)
            syncer = StreamSyncer(store, metrics=self.metrics, clock=self._clock,
                                  on_outbox=wake_outbox, batch_pages=SYNC_BATCH_PAGES)
            self.schedulers = self.assembly.build_schedulers(clients, sinks, store, syncer)
            self.hubs = HubStreams(cfg, {s.name: s for s in self.schedulers}, sinks=sinks,
                                   store=store, tokens=self.assembly.tokens, session=session,
                                   metrics=self.metrics, clock=self._clock)
            await self.hubs.start(wait_all=once)
            if not once:
                await prune_orphans(store, self.schedulers, self.config.state.orphan_retention)
            for sch in self.schedulers:
                await sch.load()
            run_gc.started()  # what was built so far lives until exit (notifier.gc_policy)
            self.metrics.streams_tracked(sum(s.stream_count for s in self.schedulers))
            log.info("notifier %s started: %d credentials, %d streams, %d sinks",
                     __version__, len(self.schedulers),
                     sum(s.stream_count for s in self.schedulers), len(sinks))
            self.metrics.refresh_at_collect(self._report_freshness)
            tick = asyncio.create_task(self._tick(sinks))
            discovery = [] if once else self.hubs.tasks(self._stop)
            try:
                if once:
                    await asyncio.gather(*(s.run(once=True, progress=progress)
                                           for s in self.schedulers))
                    failures = sum(s.stats.failures for s in self.schedulers)
                    events = sum(s.stats.events for s in self.schedulers)
                    log.info("one pass done: %d changes, %d failures", events, failures)
                    if outbox_sinks:
                        await drain_outboxes(store, outbox_sinks)
                    return 1 if failures else 0
                crashed = await self._run_forever()
            finally:
                for t in (tick, *discovery):
                    t.cancel()
                await asyncio.gather(tick, *discovery, return_exceptions=True)
        log.info("stopped")
        return 1 if crashed else 0

    async def _run_forever(self) -> bool:
        """Run the schedulers until a stop; True if one of them crashed (exit status 1)."""
        crashed = False
        tasks = [asyncio.create_task(s.run(), name=f"scheduler-{s.name}")
                 for s in self.schedulers]
        stop_wait = asyncio.create_task(self._stop.wait())
        try:
            done, _ = await asyncio.wait([*tasks, stop_wait],
                                         return_when=asyncio.FIRST_COMPLETED)
            for t in done:
                if t is not stop_wait and t.exception() is not None:
                    crashed = True
                    log.error("scheduler crashed: %r", t.exception())
        finally:
            self.request_stop()
            timeout = self.config.shutdown_timeout
            now = asyncio.get_running_loop().time()
            self._shutdown_deadline = now + timeout
            # In-flight pages may use all but the sinks' share; what they leave, sinks may use.
            in_flight = timeout - min(SINK_CLOSE_SHARE * timeout, SINK_CLOSE_MAX)
            _, pending = await asyncio.wait(tasks, timeout=in_flight)
            if pending:
                log.warning("in-flight work did not finish within %.0fs; abandoning it "
                            "unchecked (it is redone after restart)", in_flight)
                for t in pending:
                    t.cancel()
                await asyncio.gather(*pending, return_exceptions=True)
            stop_wait.cancel()
        return crashed

    async def _run_cluster(self, store: ClusterStore, session: aiohttp.ClientSession,
                           sinks: Mapping[str, Sink], syncer: StreamSyncer,
                           wake_outbox: Callable[[], None]) -> int:
        """Cluster mode: the coordinator starts the schedulers of the partitions this replica
        is assigned (restored first) and stops them when they move (notifier.cluster); the
        webhook dispatchers deliver the outbox rows of the partitions it owns."""
        assert self.config.cluster is not None
        discovery: set[asyncio.Task[None]] = set()  # of hub subscriptions, while owned

        async def start_work(names: list[str], txn: PartitionTxn) -> list[CredentialScheduler]:
            probes = {n: functools.partial(txn.refresh_guard, probe_key(n)) for n in names}
            clients = self.assembly.build_clients(session, store, probes)
            schedulers = self.assembly.build_schedulers(clients, sinks, store, syncer)
            # The partition's hub subscriptions: seeded from the restored streams, discovered
            # until their scheduler stops (the partition moves).
            hubs = HubStreams(self.config, {s.name: s for s in schedulers}, sinks=sinks,
                              store=store, tokens=self.assembly.tokens, session=session,
                              metrics=self.metrics, clock=self._clock)
            await hubs.start()
            await hubs.prune_retired()
            for s in schedulers:
                await s.load()
            for task in hubs.tasks():
                discovery.add(task)
                task.add_done_callback(discovery.discard)
            wake_outbox()  # the restored partition's pending rows
            return schedulers

        self.coordinator = Coordinator(self.config.cluster, store, self.metrics.cluster,
                                       start_work,
                                       orphan_retention=self.config.state.orphan_retention)
        self.health.add_check("cluster", self.coordinator.joined.is_set)  # Kafka reached
        log.info("notifier %s started: cluster mode, group %s, %d credentials, %d sinks",
                 __version__, self.config.cluster.group, len(self.config.credentials),
                 len(sinks))
        self.metrics.refresh_at_collect(self._report_freshness)
        tick = asyncio.create_task(self._tick(sinks))
        try:
            await self.coordinator.run(self._stop)
        finally:
            for t in (tick, *discovery):
                t.cancel()
            await asyncio.gather(tick, *discovery, return_exceptions=True)
        log.info("stopped")
        return 0

    async def _start_sinks(self, stack: AsyncExitStack, store: StateStore) -> dict[str, Sink]:
        sinks: dict[str, Sink] = {}
        stack.push_async_callback(self._close_sinks, sinks)  # also those started before a failure
        await start_sinks(self.config, store, self.metrics, self._sink_overrides, sinks)
        return sinks

    async def _close_sinks(self, sinks: Mapping[str, Sink]) -> None:
        loop = asyncio.get_running_loop()
        await close_sinks(sinks, self._shutdown_deadline
                          or loop.time() + self.config.shutdown_timeout)

    async def _tick(self, sinks: Mapping[str, Sink]) -> None:
        """Periodic gauges: streams tracked, sink health, readiness (freshness and quarantine
        are computed at each scrape: ``_report_freshness``)."""
        while True:
            try:
                self._report(sinks)
            except Exception:  # a metrics bug must never stop the service
                log.exception("metrics tick failed")
            await asyncio.sleep(METRICS_TICK_SECONDS)

    def _report(self, sinks: Mapping[str, Sink]) -> None:
        schedulers = self.coordinator.schedulers if self.coordinator else self.schedulers
        # Every scheduler's (in cluster mode, of every partition this replica runs), also after
        # a hub subscription added or retired projects.
        self.metrics.streams_tracked(sum(s.stream_count for s in schedulers))
        for name, sink in sinks.items():
            up = sink.healthy()
            self.metrics.sink_up(name, up)  # metrics and alerts, never readiness
        if all(s.cycles_done for s in schedulers) and (
                self.coordinator is None or self.coordinator.joined.is_set()):
            self.ready.set()

    def _report_freshness(self) -> None:
        """The freshness gauges, at each scrape (``Metrics.refresh_at_collect``): they walk
        every stream (100,000), so they are computed when read, as of that moment, not on a
        timer whether read or not."""
        now = self._clock()
        fresh = Freshness()
        schedulers = self.coordinator.schedulers if self.coordinator else self.schedulers
        for sch in schedulers:
            fresh.add(sch.freshness(now))
        self.metrics.staleness("busy", fresh.busy)
        self.metrics.staleness("quiet", fresh.quiet)
        self.metrics.stalest_check_age(fresh.stalest)
        self.metrics.subscription_check_ages(fresh.per_subscription)
        self.metrics.quarantined(fresh.quarantined)
