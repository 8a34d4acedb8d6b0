"""Webhook delivery marks in cluster mode on a real broker (notifier.cluster.outbox): the marks
that wait for their partition's scope are committed together, in one Kafka transaction, and each
caller returns once its mark is in the state topic; a partition this replica does not own
refuses every waiting mark."""

from __future__ import annotations

import asyncio
import sqlite3
import uuid
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer
from prometheus_client import CollectorRegistry

from notifier.cluster.partitions import WorkMap
from notifier.cluster.records import decode_key, decode_row
from notifier.cluster.store import ClusterStore
from notifier.cluster.txn import PartitionTxn
from notifier.cluster_metrics import ClusterMetrics
from notifier.errors import PartitionLostError
from notifier.state.base import OutboxItem
from tests.integration.kafka_support import read_topic
from tests.integration.test_cluster_txn import topics

pytestmark = pytest.mark.kafka

SUB, CONT = "project-a", "c1"
CALLS = 16  # concurrent delivery outcomes, one row each


def committed(registry: CollectorRegistry) -> float:
    return registry.get_sample_value("notifier_cluster_transactions_total",
                                     {"outcome": "committed"}) or 0.0


@pytest.mark.timeout(90)
async def test_concurrent_delivered_marks_share_a_transaction(kafka_bootstrap: str,
                                                              tmp_path: Path) -> None:
    tag = uuid.uuid4().hex[:10]
    state = f"marks-{tag}.state"
    await topics(kafka_bootstrap, state)
    registry = CollectorRegistry()
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all",
                                enable_idempotence=True, transactional_id=f"marks-{tag}.0")
    await producer.start()
    work = WorkMap(1, ["alice"], {SUB: ("alice",)})
    async with ClusterStore(tmp_path / "cache.db", work) as store:
        txn = PartitionTxn(0, producer, store=store, state_topic=state,
                           metrics=ClusterMetrics(registry), on_broken=lambda p: None,
                           commit_timeout=20.0)
        store.txns[0] = txn
        try:
            items = [OutboxItem("hook", f"e{i}", f"k{i}", b"{}", "2024-05-01T00:00:00Z", 1.0)
                     for i in range(CALLS)]
            await store.commit_page(SUB, CONT, next_token="t1", resync_cursor=None,
                                    in_resync=False, add_ids=(), remove_ids=(), outbox=items,
                                    changed=True, now=1.0)
            conn = sqlite3.connect(tmp_path / "cache.db")
            row_ids = [r[0] for r in conn.execute("SELECT row_id FROM outbox ORDER BY seq")]
            conn.close()
            assert len(row_ids) == CALLS
            before = committed(registry)

            await asyncio.gather(*(store.outbox_mark_delivered([r], 10.0 + i)
                                   for i, r in enumerate(row_ids)))
            marks = committed(registry) - before
            assert 1 <= marks <= 2, f"{CALLS} waiting marks took {marks} transactions"

            store.txns.clear()  # the partition moved: nothing waiting is marked here
            with pytest.raises(PartitionLostError):
                await asyncio.gather(*(store.outbox_mark_delivered([r], 20.0)
                                       for r in row_ids[:3]))
        finally:
            await txn.close()

    delivered = {}
    for rec in await read_topic(kafka_bootstrap, state, isolation_level="read_committed"):
        key = decode_key(rec.key)
        if key is not None and key.table == "outbox":
            row = decode_row(rec.value)
            assert row is not None
            delivered[key.ident] = (row["status"], row["delivered_at"])
    assert delivered == {seq: ("delivered", 10.0 + seq - 1) for seq in range(1, CALLS + 1)}, \
        "every mark, with its own time, is in the state topic"
