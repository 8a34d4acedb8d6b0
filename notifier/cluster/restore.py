"""Reading the state topic: a partition's records from the beginning to the end, read_committed.

Used by the coordinator (restore an assigned partition into the cache), by ``notifier status``
and ``notifier state export`` (every partition into a file). Records of aborted transactions
are never seen; the end is the last stable offset, taken once the partition's producer has
been initialised (so a former owner's open transaction has been aborted, not waited for).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from notifier.cluster_metrics import ClusterMetrics

log = logging.getLogger(__name__)

BATCH_RECORDS = 5_000
Apply = Callable[[Sequence[tuple[bytes | None, bytes | None]]], Awaitable[int]]


async def read_partition(client_options: dict[str, Any], topic: str, partition: int,
                         apply: Apply, *, metrics: ClusterMetrics | None = None,
                         idle_timeout: float = 30.0) -> int:
    """Feed every committed record of ``topic``/``partition`` to ``apply`` in batches; how many
    records were read. TimeoutError if no progress is made for ``idle_timeout`` seconds."""
    started = time.monotonic()
    total = await read_partitions(client_options, topic, [partition], apply, metrics=metrics,
                                  idle_timeout=idle_timeout)
    seconds = time.monotonic() - started
    if metrics is not None:
        metrics.restored(0, seconds)
    log.info("work partition %d restored: %d records in %.2fs", partition, total, seconds)
    return total


async def read_partitions(client_options: dict[str, Any], topic: str, partitions: list[int],
                          apply: Apply, *, metrics: ClusterMetrics | None = None,
                          idle_timeout: float = 30.0) -> int:
    """Every committed record of ``partitions`` of ``topic``, through one consumer assigned
    them all, fed to ``apply`` in batches of one partition each (a partition's records in
    order); how many. TimeoutError if no progress is made for ``idle_timeout`` seconds."""
    consumer = AIOKafkaConsumer(**client_options, group_id=None, enable_auto_commit=False,
                                isolation_level="read_committed", auto_offset_reset="earliest",
                                max_partition_fetch_bytes=8 * 1024 * 1024)
    total = 0
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in partitions]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        last_progress = time.monotonic()
        while left := [tp for tp in tps if await consumer.position(tp) < ends[tp]]:
            batch = await consumer.getmany(*left, timeout_ms=500, max_records=BATCH_RECORDS)
            read = 0
            for messages in batch.values():
                records = [(m.key, m.value) for m in messages]
                if records:
                    await apply(records)
                    read += len(records)
            if read:
                total += read
                if metrics is not None:
                    metrics.restored(read)
                last_progress = time.monotonic()
            elif time.monotonic() - last_progress > idle_timeout:
                raise TimeoutError(f"restore of {topic} partitions {partitions} made no "
                                   f"progress for {idle_timeout:.0f}s")
    finally:
        await consumer.stop()
    return total


async def read_all(client_options: dict[str, Any], topic: str, partitions: int,
                   apply: Apply) -> int:
    """Every partition of the state topic, through one consumer (``apply`` is not shared)."""
    return await read_partitions(client_options, topic, list(range(partitions)), apply)
