"""A work partition's transactions on a real broker (notifier.cluster.txn): what commits is
seen by read_committed consumers, what fails is not, and a fenced former owner can commit
nothing once a newer owner has initialised the same transactional.id."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from prometheus_client import CollectorRegistry

from notifier.cluster.capture import Pending
from notifier.cluster.txn import PartitionTxn
from notifier.cluster_metrics import ClusterMetrics
from notifier.errors import PartitionLostError
from tests.integration.kafka_support import read_topic

pytestmark = pytest.mark.kafka


class Rows:
    """The store side of a partition: rows waiting to be shipped (an in-memory stand-in for
    the captured SQLite rows)."""

    def __init__(self) -> None:
        self.pending: list[tuple[int, bytes, bytes | None]] = []
        self._seq = 0

    def write(self, key: bytes, value: bytes | None) -> None:
        self._seq += 1
        self.pending.append((self._seq, key, value))

    async def take_pending(self, partition: int) -> Pending:
        return Pending([(k, v) for _, k, v in self.pending],
                       max((s for s, _, _ in self.pending), default=0))

    async def delete_pending(self, partition: int, upto: int) -> None:
        self.pending = [p for p in self.pending if p[0] > upto]


async def topics(bootstrap: str, *names: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(n, 1, 1) for n in names])
    finally:
        await admin.close()


async def owner(bootstrap: str, txid: str, topic: str, rows: Rows, metrics: ClusterMetrics,
                broken: list[int]) -> PartitionTxn:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all",
                                enable_idempotence=True, transactional_id=txid)
    await producer.start()
    return PartitionTxn(0, producer, store=rows, state_topic=topic, metrics=metrics,
                        on_broken=broken.append, commit_timeout=20.0)


@pytest.mark.timeout(60)
async def test_a_fenced_owner_commits_nothing(kafka_bootstrap: str) -> None:
    tag = uuid.uuid4().hex[:10]
    state, events, txid = f"txn-{tag}.state", f"txn-{tag}.events", f"txn-{tag}.0"
    await topics(kafka_bootstrap, state, events)
    registry = CollectorRegistry()
    metrics = ClusterMetrics(registry)
    old_rows, new_rows = Rows(), Rows()
    broken: list[int] = []
    old = await owner(kafka_bootstrap, txid, state, old_rows, metrics, broken)
    try:
        async with old.scope():
            await old.send_records(events, [(b"r1", b"created", [])])
            old_rows.write(b"k1", b"v1")
        assert old_rows.pending == [], "shipped rows are forgotten after the commit"

        new = await owner(kafka_bootstrap, txid, state, new_rows, metrics, [])
        try:
            async def zombie_page() -> None:
                async with old.scope():
                    await old.send_records(events, [(b"r2", b"zombie", [])])
                    old_rows.write(b"k2", b"zombie")

            with pytest.raises(PartitionLostError):
                await zombie_page()
            assert old.state == "lost"
            assert broken == [0], "the coordinator is told"
            with pytest.raises(PartitionLostError):
                async with old.scope():
                    pass
            async with new.scope():
                await new.send_records(events, [(b"r3", b"created", [])])
                new_rows.write(b"k3", b"v3")
        finally:
            await new.close()
    finally:
        await old.close()

    values = [r.value for r in await read_topic(kafka_bootstrap, events,
                                                isolation_level="read_committed")]
    assert values == [b"created", b"created"], "the zombie's record is never committed"
    keys = [r.key for r in await read_topic(kafka_bootstrap, state,
                                            isolation_level="read_committed")]
    assert keys == [b"k1", b"k3"]
    assert registry.get_sample_value("notifier_cluster_fenced_total") == 1
    assert registry.get_sample_value("notifier_cluster_transactions_total",
                                     {"outcome": "committed"}) == 2


@pytest.mark.timeout(60)
async def test_a_failed_scope_aborts_and_marks_a_touched_cache_broken(
        kafka_bootstrap: str) -> None:
    tag = uuid.uuid4().hex[:10]
    state, events = f"txn-{tag}.state", f"txn-{tag}.events"
    await topics(kafka_bootstrap, state, events)
    registry = CollectorRegistry()
    rows = Rows()
    broken: list[int] = []
    txn = await owner(kafka_bootstrap, f"txn-{tag}.0", state, rows, ClusterMetrics(registry),
                      broken)
    try:
        async def refused() -> None:
            async with txn.scope():
                await txn.send_records(events, [(b"r1", b"aborted", [])])
                raise RuntimeError("sink refused")

        async def crashed() -> None:
            async with txn.scope():
                rows.write(b"k1", b"v1")
                raise RuntimeError("crash after the checkpoint's local write")

        with pytest.raises(RuntimeError):  # fails before touching the cache: nothing to redo
            await refused()
        assert txn.state == "active"
        assert broken == []
        with pytest.raises(RuntimeError):  # fails after a cache write: restore first
            await crashed()
        assert txn.state == "broken"
        assert broken == [0]
        with pytest.raises(PartitionLostError, match="restoring"):
            async with txn.scope():
                pass
    finally:
        await txn.close()
    # Only the first scope had begun a transaction; it was aborted.
    assert registry.get_sample_value("notifier_cluster_transactions_total",
                                     {"outcome": "aborted"}) == 1
    assert await read_topic(kafka_bootstrap, events, isolation_level="read_committed") == []


@pytest.mark.timeout(60)
async def test_giving_up_waits_for_a_refresh_to_store_its_rotated_token(
        kafka_bootstrap: str) -> None:
    tag = uuid.uuid4().hex[:10]
    state = f"txn-{tag}.state"
    await topics(kafka_bootstrap, state)
    rows = Rows()
    txn = await owner(kafka_bootstrap, f"txn-{tag}.0", state, rows,
                      ClusterMetrics(CollectorRegistry()), [])
    spent = asyncio.Event()
    closing: asyncio.Task[bool] | None = None
    async with txn.refresh_guard(b'{"probe":"sim"}'):  # the probe commits: still the owner
        closing = asyncio.create_task(txn.close())  # the partition is revoked meanwhile
        await asyncio.sleep(0.2)
        assert not closing.done(), "the partition is kept while the refresh runs"
        spent.set()  # the token endpoint rotated the token: store it
        async with txn.scope():
            rows.write(b'["refresh_tokens",null,null,"sim"]', b"rotated")
    assert await closing is True
    with pytest.raises(PartitionLostError):
        async with txn.refresh_guard(b'{"probe":"sim"}'):
            pass
    keys = [r.key for r in await read_topic(kafka_bootstrap, state,
                                            isolation_level="read_committed")]
    assert keys == [b'{"probe":"sim"}', b'["refresh_tokens",null,null,"sim"]']
