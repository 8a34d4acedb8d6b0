"""Handing records to an aiokafka producer as closed batches: one per partition and size limit.

Shared by the Kafka sink (acknowledged sends) and cluster mode's partition transactions, so that
both partition the same way (``group_by_partition``) and never build a batch per record.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

from aiokafka import AIOKafkaProducer

from notifier.sinks.kafka_records import Record, group_by_partition


async def send_batches(producer: AIOKafkaProducer, topic: str, records: Sequence[Record],
                       futures: list[asyncio.Future[Any]], *,
                       partition: int | None = None) -> None:
    """Send ``records`` to ``topic`` (to ``partition``, or each to its key's partition), adding
    one future per batch to ``futures``; the caller waits on them (or on a commit)."""
    if partition is None:
        known = producer.client.cluster.partitions_for_topic(topic)
        if not known:
            known = await producer.partitions_for(topic)
        by_partition = group_by_partition(records, sorted(known))
    else:
        by_partition = {partition: list(records)}
    now_ms = int(time.time() * 1000)
    for p, group in by_partition.items():
        batch = producer.create_batch()
        for k, value, headers in group:
            if batch.append(timestamp=now_ms, key=k, value=value, headers=headers) is None:
                batch.close()
                futures.append(await producer.send_batch(batch, topic, partition=p))
                batch = producer.create_batch()
                batch.append(timestamp=now_ms, key=k, value=value, headers=headers)
        batch.close()
        futures.append(await producer.send_batch(batch, topic, partition=p))
