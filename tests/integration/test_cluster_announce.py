"""Cluster mode announces nothing, and loses no deletion for it (notifier.cluster.syncer).

The case announcements exist for, on a real broker: a page's created events are published and
the process dies before the page's checkpoint; the stored token is then rejected, so a fresh
snapshot replaces the page, and a relationship the page created, deleted meanwhile, is not in
it. A single process must remember that its created event went out (and report it deleted). In
cluster mode the event went into the page's Kafka transaction, which never committed: a
read_committed consumer never saw it, so the new owner, restored from the state topic, owes
nothing for it.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from prometheus_client import CollectorRegistry

from notifier.cluster.partitions import WorkMap
from notifier.cluster.restore import read_partition
from notifier.cluster.store import ClusterStore
from notifier.cluster.syncer import ClusterSyncer
from notifier.cluster.txn import PartitionTxn
from notifier.cluster_metrics import ClusterMetrics
from notifier.config.sinks import KafkaSinkConfig
from notifier.simulator import SimState, SimulatorConfig
from notifier.simulator.config import Knobs
from notifier.simulator.ids import fmt_uuid
from notifier.sinks.kafka_txn import TransactionalKafkaSink
from notifier.state.base import Announcement
from notifier.stream import StreamSpec
from tests.integration.kafka_support import read_topic
from tests.stateful_support import CREATED, DELETED, C, Crash, Faults, SimClient, quiet_metrics

pytestmark = pytest.mark.kafka

SUB, CRED = "s", "sim"


class Cache(ClusterStore):
    """The replica's cache; counts announcements and can die at its next checkpoint."""

    def __init__(self, path: Path, work: WorkMap) -> None:
        super().__init__(path, work)
        self.announced = 0
        self.die_at_checkpoint = False

    async def mark_announced(self, subscription: str, container_id: str,
                             items: Sequence[Announcement], *args: Any, **kwargs: Any) -> None:
        self.announced += len(items)
        await super().mark_announced(subscription, container_id, items, *args, **kwargs)

    async def commit_page(self, *args: Any, **kwargs: Any) -> None:
        if self.die_at_checkpoint:
            self.die_at_checkpoint = False
            raise Crash("killed after the publish, before the checkpoint")
        await super().commit_page(*args, **kwargs)


class Replica:
    """One owner of the single work partition: its cache, transactional producer and sink."""

    def __init__(self, tmp: Path, bootstrap: str, tag: str) -> None:
        self.work = WorkMap(1, [CRED], {SUB: (CRED,)})
        self.store = Cache(tmp / f"cache-{uuid.uuid4().hex[:6]}.db", self.work)
        self.bootstrap, self.tag = bootstrap, tag
        self.sink = TransactionalKafkaSink(
            KafkaSinkConfig(name="events", bootstrap_servers=[bootstrap],
                            topic=f"announce-{tag}.events"), quiet_metrics())
        self.producer: AIOKafkaProducer | None = None

    async def start(self) -> None:
        await self.store.open()
        # Restored from the state topic, as the coordinator does for an assigned partition.
        await read_partition({"bootstrap_servers": self.bootstrap}, f"announce-{self.tag}.state",
                             0, self.store.apply)
        self.producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, acks="all",
                                         enable_idempotence=True,
                                         transactional_id=f"announce-{self.tag}.0")
        await self.producer.start()  # fences a former owner, aborts its open transaction
        self.store.txns[0] = PartitionTxn(
            0, self.producer, store=self.store, state_topic=f"announce-{self.tag}.state",
            metrics=ClusterMetrics(CollectorRegistry()), on_broken=lambda p: None,
            commit_timeout=20.0)
        await self.sink.__aenter__()

    async def drain(self, client: SimClient) -> bool:
        spec = StreamSpec(subscription=SUB, container_id=C, credentials=(CRED,),
                          sinks=(self.sink,))
        syncer = ClusterSyncer(self.store, metrics=quiet_metrics(), batch_pages=1)
        return (await syncer.drain(client, spec)).completed

    async def close(self) -> None:
        await self.sink.close()
        if self.producer is not None:
            await self.producer.stop()
        await self.store.close()


@pytest.mark.timeout(120)
async def test_a_cut_page_then_a_rejected_token_loses_no_deletion_without_announcements(
    kafka_bootstrap: str, tmp_path: Path,
) -> None:
    tag = uuid.uuid4().hex[:10]
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(f"announce-{tag}.state", 1, 1),
                                   NewTopic(f"announce-{tag}.events", 1, 1)])
    finally:
        await admin.close()
    sim = SimState(SimulatorConfig(containers=[C], relationships=4, seed=5,
                                   knobs=Knobs(page_size=2, rpm=0)))
    client = SimClient(sim, Faults())

    first = Replica(tmp_path, kafka_bootstrap, tag)
    await first.start()
    try:
        assert await first.drain(client)  # the bootstrap
        made = sim.create_relationships(C, 2)
        first.store.die_at_checkpoint = True
        with pytest.raises(Crash):
            await first.drain(client)  # the page creating ``made`` dies before its checkpoint
        assert first.store.announced == 0, "cluster mode announces nothing"
    finally:
        # The failed scope aborted its transaction (after a SIGKILL the next owner's
        # init_transactions does); the process is gone.
        await first.store.close()

    sim.delete_relationships(C, made[:1])
    sim.knobs.reject_sync_tokens += 1
    second = Replica(tmp_path, kafka_bootstrap, tag)
    await second.start()
    try:
        assert await second.drain(client)  # a rejected token: a fresh snapshot
        assert second.store.announced == 0
    finally:
        await second.close()
    if first.producer is not None:
        await first.producer.stop()

    events = [(r.key.decode(), dict(r.headers)["ce_type"].decode())
              for r in await read_topic(kafka_bootstrap, f"announce-{tag}.events",
                                        isolation_level="read_committed")]
    live: set[str] = set()
    for subject, kind in events:
        (live.add if kind == CREATED else live.discard)(subject)
        assert kind in (CREATED, DELETED)
    truth = {fmt_uuid(r.uid) for r in sim.container(C).by_id.values() if not r.dseq}
    assert live == truth
    # The relationship created by the cut page and deleted since was never seen: no event.
    assert [k for s, k in events if s == made[0]] == []
    assert [k for s, k in events if s == made[1]] == [CREATED]
    assert len(events) == len(set(events)), "every change once"
