"""One work partition's Kafka transactions: events and the state records that checkpoint them.

Every write of a partition runs in a *scope* (``PartitionTxn.scope``): scopes of one partition
take turns (one transaction at a time per producer), nest within a task, and publish the open
transaction to the Kafka sink (``notifier.sinks.kafka_txn.current_transaction``). The
transaction is begun lazily by the first record; when the outermost scope ends, the rows the
scope wrote to the SQLite cache (captured by notifier.cluster.capture) are added as state
records and the transaction is committed: the page's events and its checkpoint become visible
together, or not at all.

The cache is written before Kafka commits, so it may run ahead of the topic. The rule that
keeps that safe (as Kafka Streams does with a corrupted task): a scope that fails after
touching the cache (an aborted or failed commit, a cancellation) marks the partition
*broken*; it refuses every further scope until the coordinator has wiped and restored it from
the topic. A fenced producer (a newer owner called init_transactions with the same
``transactional.id``) marks it *lost*: it is never used again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from contextvars import ContextVar
from typing import Any, Protocol, cast

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError, ProducerFenced

from notifier.cluster.capture import Pending
from notifier.cluster_metrics import ClusterMetrics
from notifier.errors import PartitionLostError, SinkError
from notifier.sinks.kafka_abandon import abandon_pending, missing_internals
from notifier.sinks.kafka_errors import describe, retrieve
from notifier.sinks.kafka_records import Headers, Record
from notifier.sinks.kafka_send import send_batches
from notifier.sinks.kafka_txn import current_transaction

log = logging.getLogger(__name__)

StateRecord = tuple[bytes, bytes | None, Headers]  # a value of None is a tombstone

_scope: ContextVar[PartitionTxn | None] = ContextVar("notifier_cluster_scope", default=None)


class PendingRows(Protocol):
    """The store side: the captured rows of a partition (notifier.cluster.store)."""

    async def take_pending(self, partition: int) -> Pending: ...

    async def delete_pending(self, partition: int, upto: int) -> None: ...


class PartitionTxn:
    """The transactional producer of one owned work partition and its scopes."""

    def __init__(self, partition: int, producer: AIOKafkaProducer, *, store: PendingRows,
                 state_topic: str, metrics: ClusterMetrics,
                 on_broken: Callable[[int], None], commit_timeout: float) -> None:
        self.partition = partition
        self._producer = producer
        self._store = store
        self._topic = state_topic
        self._metrics = metrics
        self._on_broken = on_broken
        self._timeout = commit_timeout
        self._lock = asyncio.Lock()
        self._open = False  # a scope holds the lock
        self._in_txn = False
        self._futures: list[asyncio.Future[Any]] = []
        self.state = "active"  # "active", "broken" (restore first) or "lost" (fenced, revoked)
        self._closing = False  # no scope starts any more
        self._no_refresh = False  # no refresh starts any more
        self._refreshes = 0
        self._refreshes_done = asyncio.Event()

    @property
    def serving(self) -> bool:
        """Owned, restored and not being given up: its outbox rows may be delivered."""
        return self.state == "active" and not self._closing

    @property
    def busy(self) -> bool:
        """A scope is open: rows it wrote to the cache are not committed yet."""
        return self._lock.locked()

    # -- scopes -----------------------------------------------------------------------------

    @asynccontextmanager
    async def scope(self) -> AsyncIterator[None]:
        """Run a write of this partition inside its transaction (see the module doc)."""
        if _scope.get() is self and self._open:
            yield  # nested: the outermost scope commits
            return
        async with self._lock:
            self._refuse_unless_active()
            token = _scope.set(self)
            txn_token = current_transaction.set(self)
            self._open = True
            try:
                try:
                    yield
                except BaseException as exc:
                    await self._fail(exc)
                    raise
                try:
                    await self._commit()
                except (KafkaError, TimeoutError, OSError) as exc:
                    await self._fail(exc)
                    raise PartitionLostError(
                        f"work partition {self.partition}: transaction not committed: "
                        f"{describe(exc)}", sink="cluster") from exc
                except BaseException as exc:
                    await self._fail(exc)
                    raise
            finally:
                self._open = False
                current_transaction.reset(txn_token)
                _scope.reset(token)

    def _refuse_unless_active(self) -> None:
        if self.state != "active" or self._closing:
            why = "restoring" if self.state == "broken" else "no longer owned"
            raise PartitionLostError(f"work partition {self.partition} is {why}",
                                     sink="cluster")

    async def send_records(self, topic: str, records: Sequence[StateRecord],
                           partition: int | None = None) -> None:
        """Add ``records`` to the open transaction, batched per partition (by key, murmur2, as
        every Kafka client; or all to ``partition``)."""
        if not records:
            return
        try:
            async with asyncio.timeout(self._timeout):  # a broker gone away fails the scope
                await self._send(topic, records, partition)
        except (KafkaError, TimeoutError, OSError) as exc:
            raise SinkError(f"kafka transaction of work partition {self.partition}: "
                            f"{describe(exc)}", sink="cluster") from exc

    async def _send(self, topic: str, records: Sequence[StateRecord],
                    partition: int | None) -> None:
        producer = self._producer
        await self._begin()
        await send_batches(producer, topic, cast(Sequence[Record], records), self._futures,
                           partition=partition)

    async def _begin(self) -> None:
        if not self._in_txn:
            await self._producer.begin_transaction()
            self._in_txn = True

    async def _commit(self) -> None:
        pending = await self._store.take_pending(self.partition)
        state: list[StateRecord] = [(k, v, []) for k, v in pending.records]
        await self.send_records(self._topic, state, partition=self.partition)
        if not self._in_txn:
            return
        async with asyncio.timeout(self._timeout):
            await self._producer.flush()
            _raise_if_fatal(self._producer)
            await self._producer.commit_transaction()
        self._in_txn = False
        self._settle_futures()
        self._metrics.transaction("committed")
        if pending.upto:
            await self._store.delete_pending(self.partition, pending.upto)

    async def _fail(self, exc: BaseException) -> None:
        """After a failed scope: abort; a cache that ran ahead is restored, a fenced producer
        given up."""
        try:
            _raise_if_fatal(self._producer)
        except KafkaError as err:
            exc = err
        fenced = isinstance(exc, ProducerFenced) or isinstance(exc.__cause__, ProducerFenced)
        if self._in_txn and not fenced:
            try:
                async with asyncio.timeout(self._timeout):
                    await self._producer.abort_transaction()
            except Exception as err:  # aiokafka asserts on some states: never let it escape
                fenced = fenced or isinstance(err, ProducerFenced)
                log.warning("work partition %d: abort failed: %r", self.partition, err)
        if self._in_txn:
            self._metrics.transaction("aborted")
        self._in_txn = False
        self._settle_futures()
        if fenced:
            self._metrics.fenced()
            log.warning("work partition %d: fenced by a newer owner; giving it up",
                        self.partition)
            self.state = "lost"
            self._on_broken(self.partition)
            return
        if self.state == "active" and await self._cache_touched():
            log.warning("work partition %d: transaction not committed (%s): restoring the "
                        "partition from the state topic", self.partition, describe(exc))
            self.state = "broken"
            self._on_broken(self.partition)

    async def _cache_touched(self) -> bool:
        try:
            return bool((await self._store.take_pending(self.partition)).upto)
        except Exception:  # the store cannot even answer: restore to be safe
            return True

    def _settle_futures(self) -> None:
        for fut in self._futures:
            fut.add_done_callback(retrieve)
        self._futures.clear()

    # -- ownership --------------------------------------------------------------------------

    async def probe(self, key: bytes) -> None:
        """Prove this replica still owns the partition by committing a record (``key``: not a
        row, ignored by restores); PartitionLostError if fenced. Run before a refresh token is
        spent, so a fenced former owner never refreshes."""
        async with self.scope():
            await self.send_records(self._topic, [(key, b"{}", [])], partition=self.partition)

    @asynccontextmanager
    async def refresh_guard(self, key: bytes) -> AsyncIterator[None]:
        """Around a refresh-token refresh: first prove ownership (``probe``), then keep the
        partition until the refresh is over, so a rotated token is stored (committed) before
        the partition is given up; a spent token is never left unrecorded."""
        if self._no_refresh:
            raise PartitionLostError(f"work partition {self.partition} is being given up",
                                     sink="cluster")
        self._refreshes += 1
        self._refreshes_done.clear()
        try:
            await self.probe(key)
            yield
        finally:
            self._refreshes -= 1
            if not self._refreshes:
                self._refreshes_done.set()

    async def close(self) -> bool:
        """Give the partition up: no scope starts after this (refreshes under way may still
        store their rotated token, within the commit timeout); the producer is stopped once
        the scope in progress has ended. True if every scope committed (the cache matches
        the topic, as far as this replica wrote it)."""
        self._no_refresh = True
        if self._refreshes:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._refreshes_done.wait(), self._timeout)
        self._closing = True
        async with self._lock:  # waits for a scope in progress
            clean = self.state == "active" and not self._in_txn
            if self.state == "active":
                self.state = "lost"
        if not clean and not missing_internals(self._producer):
            with contextlib.suppress(Exception):  # fail (and mark seen) what it still holds
                await abandon_pending(self._producer, 1.0)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._producer.stop(), self._timeout)
        _retrieve_waiter(self._producer)
        return clean


def _raise_if_fatal(producer: AIOKafkaProducer) -> None:
    """Raise what made the producer unusable (ProducerFenced, mostly): aiokafka then refuses
    to commit or abort with an assertion, and keeps the reason in its transaction waiter."""
    manager = producer._txn_manager
    if manager is None or not manager.is_fatal_error():
        return
    waiter = manager.wait_for_transaction_end()
    reason = waiter.exception() if waiter is not None and waiter.done() else None
    raise reason if isinstance(reason, KafkaError) else ProducerFenced()


def _retrieve_waiter(producer: AIOKafkaProducer) -> None:
    """Mark the reason a fenced producer keeps as seen (else asyncio logs it at exit)."""
    manager = producer._txn_manager
    waiter = None if manager is None else manager.wait_for_transaction_end()
    if waiter is not None and waiter.done() and not waiter.cancelled():
        waiter.exception()
