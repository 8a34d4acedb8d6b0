"""Who owns which work partition, and what a replica does when that changes.

A consumer in the configured ``group``, subscribed to the state topic, takes part in Kafka's
group protocol and never reads for processing (its partitions stay paused): the partitions the
group assigns to it are the work partitions it owns. On assignment of partition p: a
transactional producer with ``transactional.id`` ``{group}.{p}`` is initialised (fencing any
former owner and aborting its open transaction), p's rows in the SQLite cache are wiped and
restored from the topic, then the schedulers of p's credentials start. On revocation (or
shutdown): they are stopped (in-flight pages finish within a bound, or are abandoned
uncommitted), the producer is closed. A partition whose transaction failed after touching the
cache is restored again; a fenced one waits for the group to move it (or takes it back after a
while if the group still says it is ours). At shutdown the replica leaves the group only after
its last commit, so the others take over at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError

from notifier.cluster.apply import BadRecords
from notifier.cluster.restore import read_partition
from notifier.cluster.store import ClusterStore
from notifier.cluster.strays import Strays, tend
from notifier.cluster.topic import (
    KafkaUnreachable,
    client_options,
    ensure_state_topic,
    start_partition_producer,
)
from notifier.cluster.txn import PartitionTxn
from notifier.cluster_metrics import ClusterMetrics
from notifier.config.cluster import ClusterConfig
from notifier.errors import NotifierError, StateRecordError
from notifier.scheduler import CredentialScheduler
from notifier.sinks.kafka_errors import describe

log = logging.getLogger(__name__)

STOP_WAIT = 3.0  # seconds in-flight pages get to finish when a partition is given up
CONNECT_BACKOFF = (1.0, 30.0)  # seconds between attempts to reach Kafka at start: first, most
BAD_RECORD_RETRY = 60.0  # seconds before a partition with an unreadable state record is retried
StartWork = Callable[[list[str], PartitionTxn], Awaitable[list[CredentialScheduler]]]


@dataclass
class Owned:
    partition: int
    txn: PartitionTxn | None = None
    schedulers: list[CredentialScheduler] = field(default_factory=list)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    starting: asyncio.Task[None] | None = None
    restored: bool = False
    tending: asyncio.Task[None] | None = None  # its stray streams (notifier.cluster.strays)


class Coordinator(ConsumerRebalanceListener):  # type: ignore[misc]
    """Runs the owned partitions of one replica (see the module doc)."""

    def __init__(self, cfg: ClusterConfig, store: ClusterStore, metrics: ClusterMetrics,
                 start_work: StartWork, *, orphan_retention: float = 7 * 86400.0) -> None:
        self._cfg = cfg
        self._retention = orphan_retention
        self._options = client_options(cfg)
        self._store = store
        self._metrics = metrics
        self._start_work = start_work
        self._owned: dict[int, Owned] = {}
        self._consumer: AIOKafkaConsumer | None = None
        self._background: set[asyncio.Task[None]] = set()
        self._restoring = 0
        # Per partition, the state topic's end offset at which this replica's cache last
        # matched it (set when a partition is given up cleanly): a partition that comes back
        # with the same end offset was not written since, and needs no restore.
        self._current: dict[int, int] = {}
        self._offsets: AIOKafkaConsumer | None = None
        # Set when the replica stops: a rebalance while it gives its partitions up (another
        # replica left meanwhile) must not start work here, which would outlive the process's
        # store and fence its own partition still committing its last pages.
        self._stopping = False
        # Owned partitions whose state holds a record this replica cannot read: not running
        # until someone mends the topic (tried again every BAD_RECORD_RETRY seconds).
        self._unreadable: set[int] = set()
        # Per partition, the state its last restore here left out (streams put elsewhere).
        self._strays: dict[int, Strays] = {}
        self.joined = asyncio.Event()

    @property
    def schedulers(self) -> list[CredentialScheduler]:
        return [s for o in self._owned.values() for s in o.schedulers]

    # -- the group ---------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Take part in the group until ``stop``; then give everything up and leave."""
        consumer = await self._reach_kafka(stop)
        if consumer is None:
            return
        self._consumer = consumer
        try:
            consumer.subscribe([self._cfg.state_topic], listener=self)
            while not stop.is_set():
                try:
                    await consumer.getmany(timeout_ms=500)  # paused: keeps the member alive
                except KafkaError as err:  # the broker away: the group protocol recovers
                    log.warning("cluster: group consumer: %r", err)
                    await asyncio.sleep(1.0)
                    continue
                self.joined.set()
        finally:
            self._stopping = True
            await asyncio.gather(*(self._release(p) for p in list(self._owned)))
            for t in list(self._background):
                t.cancel()
            await asyncio.gather(*self._background, return_exceptions=True)
            await consumer.stop()  # leaves the group: the others rebalance at once
            if self._offsets is not None:
                await self._offsets.stop()
            self._metrics.owned(0)

    async def _reach_kafka(self, stop: asyncio.Event) -> AIOKafkaConsumer | None:
        """Ensure the state topic and start the group consumer, retrying both with backoff
        while Kafka is unreachable (a replica may start before its brokers, and they may go
        away in between); None if ``stop`` came first."""
        delay = CONNECT_BACKOFF[0]
        attempt = 0
        while not stop.is_set():
            attempt += 1
            try:
                await ensure_state_topic(self._cfg, self._options)
                return await self._start_consumer()
            except KafkaUnreachable as exc:
                log.warning("%s (attempt %d); retrying in %.0fs", exc, attempt, delay)
            except (KafkaError, OSError) as exc:
                log.warning("cluster: cannot start the group consumer at %s: %s (attempt %d); "
                            "retrying in %.0fs", ",".join(self._cfg.bootstrap_servers),
                            describe(exc), attempt, delay)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)
            delay = min(delay * 2, CONNECT_BACKOFF[1])
        return None

    async def _start_consumer(self) -> AIOKafkaConsumer:
        cfg = self._cfg
        consumer = AIOKafkaConsumer(
            **self._options, group_id=cfg.group, enable_auto_commit=False,
            auto_offset_reset="latest", isolation_level="read_committed",
            session_timeout_ms=int(cfg.session_timeout * 1000),
            heartbeat_interval_ms=int(cfg.heartbeat_interval * 1000),
            rebalance_timeout_ms=int(max(cfg.session_timeout, 30.0) * 1000))
        try:
            await consumer.start()
        except BaseException:
            with contextlib.suppress(Exception):
                await consumer.stop()
            raise
        return consumer

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        mine = [tp.partition for tp in revoked if tp.partition in self._owned]
        self._readable(*mine)
        self._metrics.rebalanced("revoked", len(mine))
        if mine:
            log.info("work partitions revoked: %s", _ranges(mine))
        await asyncio.gather(*(self._release(p) for p in mine))

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        if self._consumer is not None and assigned:
            self._consumer.pause(*assigned)
        if self._stopping:
            return  # left paused: this replica leaves the group once its pages are done
        fresh = [tp.partition for tp in assigned if tp.partition not in self._owned]
        self._metrics.rebalanced("assigned", len(fresh))
        if fresh:
            log.info("work partitions assigned: %s", _ranges(fresh))
        for p in fresh:
            owned = self._owned[p] = Owned(p)
            owned.starting = asyncio.create_task(self._start(owned), name=f"partition-{p}")
        self._metrics.owned(len(self._owned))

    # -- one partition -----------------------------------------------------------------------

    async def _start(self, owned: Owned) -> None:
        p = owned.partition
        cfg = self._cfg
        restoring = False
        try:
            producer = await start_partition_producer(self._options, cfg.group, p)
            owned.txn = PartitionTxn(p, producer, store=self._store,
                                     state_topic=cfg.state_topic, metrics=self._metrics,
                                     on_broken=self._broken, commit_timeout=cfg.request_timeout)
            restoring = True
            self._restoring += 1
            self._metrics.restoring(self._restoring)
            current = self._current.pop(p, None)
            if current is not None and current == await self._end_offset(p):
                log.info("work partition %d: local cache current, no restore needed", p)
                self._metrics.restored(0, 0.0)
            else:
                await self._store.wipe_partition(p)
                bad = BadRecords()
                strays = self._strays[p] = Strays(p, self._store.work)
                await read_partition(self._options, cfg.state_topic, p,
                                     functools.partial(self._store.apply, bad=bad,
                                                       strays=strays),
                                     metrics=self._metrics)
                bad.check(f"state topic {cfg.state_topic!r} partition {p}")
            owned.restored = True
            self._store.txns[p] = owned.txn
            credentials = self._store.work.credentials_in(p)
            owned.schedulers = await self._start_work(credentials, owned.txn)
            owned.tasks = [asyncio.create_task(self._run_scheduler(owned, s),
                                               name=f"scheduler-{s.name}")
                           for s in owned.schedulers]
            self._readable(p)
            owned.tending = asyncio.create_task(
                tend(self._strays.setdefault(p, Strays(p, self._store.work)), owned.txn,
                     cfg.state_topic, self._retention, self._count_strays),
                name=f"strays-{p}")
            log.info("work partition %d running: %d credential(s)", p, len(owned.schedulers))
        except asyncio.CancelledError:
            raise
        except StateRecordError as err:  # no use retrying soon: someone must mend the topic
            self._unreadable.add(p)
            self._metrics.unreadable(len(self._unreadable))
            log.error("work partition %d not started: %s; tried again in %.0fs", p, err,
                      BAD_RECORD_RETRY)
            self._later(self._restart(p, owned, delay=BAD_RECORD_RETRY))
        except (KafkaError, NotifierError, OSError, TimeoutError) as err:  # Kafka away
            log.warning("work partition %d could not start (%r); retried shortly", p, err)
            self._later(self._restart(p, owned, delay=5.0))
        except Exception:
            log.exception("work partition %d could not start; retried shortly", p)
            self._later(self._restart(p, owned, delay=5.0))
        finally:
            if restoring:
                self._restoring -= 1
                self._metrics.restoring(self._restoring)

    async def _run_scheduler(self, owned: Owned, scheduler: CredentialScheduler) -> None:
        try:
            await scheduler.run()
        except asyncio.CancelledError:
            raise
        except Exception:
            if self._owned.get(owned.partition) is owned:
                log.exception("scheduler %s crashed; restarting work partition %d",
                              scheduler.name, owned.partition)
                self._broken(owned.partition)

    def _broken(self, p: int) -> None:
        owned = self._owned.get(p)
        if owned is None:
            return
        txn = owned.txn
        delay = self._cfg.session_timeout + 5.0 if txn is not None and txn.state == "lost" \
            else 0.0
        self._later(self._restart(p, owned, delay=delay))

    async def _restart(self, p: int, owned: Owned, *, delay: float) -> None:
        """Stop the partition's work and start it again (restored) if it is still ours."""
        if delay:
            await asyncio.sleep(delay)
        if self._owned.get(p) is not owned:
            return
        await self._release(p)
        if not self._stopping and self._consumer is not None and \
                TopicPartition(self._cfg.state_topic, p) in self._consumer.assignment():
            fresh = self._owned[p] = Owned(p)
            fresh.starting = asyncio.create_task(self._start(fresh), name=f"partition-{p}")
        else:
            self._readable(p)
        self._metrics.owned(len(self._owned))

    def _readable(self, *partitions: int) -> None:
        """``partitions`` run, or are not this replica's any more: not unreadable here."""
        if self._unreadable & set(partitions):
            self._unreadable -= set(partitions)
            self._metrics.unreadable(len(self._unreadable))

    async def _release(self, p: int) -> None:
        owned = self._owned.pop(p, None)
        if owned is None:
            return
        for task in (owned.starting, owned.tending):
            if task is not None and not task.done():
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        for s in owned.schedulers:
            s.stop()
        if owned.tasks:
            _, late = await asyncio.wait(owned.tasks, timeout=STOP_WAIT)
            for t in late:
                t.cancel()
            await asyncio.gather(*owned.tasks, return_exceptions=True)
        if owned.txn is not None:  # a refresh under way still stores its rotated token
            clean = await owned.txn.close()
            if clean and owned.restored and not (await self._store.take_pending(p)).upto:
                with contextlib.suppress(Exception):  # no offset: restored next time
                    self._current[p] = await self._end_offset(p)
        if self._store.txns.get(p) is owned.txn:
            self._store.txns.pop(p, None)
        self._metrics.owned(len(self._owned))
        self._count_strays()

    def _count_strays(self) -> None:
        self._metrics.strays(sum(len(self._strays[p].streams) for p in self._owned
                                 if p in self._strays))

    async def _end_offset(self, p: int) -> int:
        """The state partition's last stable offset (what a read_committed restore reads to)."""
        if self._offsets is None:
            self._offsets = AIOKafkaConsumer(**self._options, group_id=None,
                                             enable_auto_commit=False,
                                             isolation_level="read_committed")
            await self._offsets.start()
        tp = TopicPartition(self._cfg.state_topic, p)
        return int((await self._offsets.end_offsets([tp]))[tp])

    def _later(self, work: Awaitable[None]) -> None:
        async def run() -> None:
            with contextlib.suppress(asyncio.CancelledError):
                await work

        task = asyncio.create_task(run())
        self._background.add(task)
        task.add_done_callback(self._background.discard)


def _ranges(parts: list[int]) -> str:
    return ",".join(str(p) for p in sorted(parts))
