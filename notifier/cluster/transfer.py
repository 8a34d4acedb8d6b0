"""Moving state between a SQLite file and the state topic (``notifier state export/import``
and ``notifier status`` in cluster mode).

Export restores every partition of the state topic into a new SQLite state file (the same
format a single process uses). Import writes every row of a SQLite state file into the state
topic, each partition's rows in one transaction of that partition's ``transactional.id``: a
replica running it is fenced, and restores the imported state when it takes the partition
again. Import is meant for moving a single process to cluster mode, before the first replica
starts; it refuses a state topic that already holds state unless forced.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from notifier.cluster import capture
from notifier.cluster.partitions import work_map
from notifier.cluster.records import encode_key, encode_row
from notifier.cluster.restore import read_partition
from notifier.cluster.store import ClusterStore
from notifier.cluster.topic import client_options, ensure_state_topic
from notifier.config import Config
from notifier.errors import NotifierError
from notifier.state.sqlite import SqliteStateStore

log = logging.getLogger(__name__)


async def export_state(config: Config, out: Path) -> int:
    """Restore the whole state topic into the new SQLite file ``out``; how many records."""
    assert config.cluster is not None
    options = client_options(config.cluster)
    await ensure_state_topic(config.cluster, options)
    total = 0
    async with ClusterStore(out, work_map(config)) as store:
        for p in range(config.cluster.work_partitions):
            total += await read_partition(options, config.cluster.state_topic, p, store.apply)
    return total


async def topic_records(config: Config) -> int:
    """How many records the state topic holds (its partitions' end offsets, summed)."""
    assert config.cluster is not None
    consumer = AIOKafkaConsumer(**client_options(config.cluster), group_id=None,
                                enable_auto_commit=False)
    await consumer.start()
    try:
        tps = [TopicPartition(config.cluster.state_topic, p)
               for p in range(config.cluster.work_partitions)]
        ends = await consumer.end_offsets(tps)
        starts = await consumer.beginning_offsets(tps)
        return sum(ends[tp] - starts[tp] for tp in tps)
    finally:
        await consumer.stop()


async def import_state(config: Config, source: Path, *, force: bool = False) -> int:
    """Write every row of the SQLite state file ``source`` to the state topic; how many."""
    assert config.cluster is not None
    cfg = config.cluster
    options = client_options(cfg)
    await ensure_state_topic(cfg, options)
    if not force and await topic_records(config):
        raise NotifierError(f"the state topic {cfg.state_topic!r} already holds state: "
                            "import is for a cluster's first start (--force merges anyway)")
    work = work_map(config)
    by_partition: dict[int, list[tuple[bytes, bytes | None]]] = {}
    skipped = 0
    async with SqliteStateStore(source) as store:
        tables = await store._call("read tables", capture.tables_of)
        rows = await store._call("read rows", lambda c: list(capture.all_rows(c, tables)))
    for key, row in rows:
        p = capture.row_partition(work, tables, key)
        if p is None:
            skipped += 1
            continue
        by_partition.setdefault(p, []).append((encode_key(key), encode_row(row)))
    if skipped:
        log.warning("%d rows of subscriptions missing from the configuration not imported",
                    skipped)
    await asyncio.gather(*(_write(options, cfg.group, cfg.state_topic, p, records)
                           for p, records in by_partition.items()))
    return sum(len(r) for r in by_partition.values())


async def _write(options: dict[str, object], group: str, topic: str, partition: int,
                 records: Sequence[tuple[bytes, bytes | None]]) -> None:
    producer = AIOKafkaProducer(**options, acks="all", enable_idempotence=True,
                                transactional_id=f"{group}.{partition}")
    await producer.start()
    try:
        async with producer.transaction():
            for key, value in records:
                await producer.send(topic, key=key, value=value, partition=partition)
    finally:
        await producer.stop()
