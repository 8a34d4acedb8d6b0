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
import functools
import logging
from collections.abc import Callable, Iterator
from itertools import islice
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from notifier.cluster import capture
from notifier.cluster.apply import BadRecords
from notifier.cluster.partitions import work_map
from notifier.cluster.records import CHUNK_ROWS, encode_key
from notifier.cluster.restore import read_all
from notifier.cluster.store import ClusterStore
from notifier.cluster.topic import client_options, ensure_state_topic, start_partition_producer
from notifier.config import Config
from notifier.errors import NotifierError
from notifier.state.sqlite import SqliteStateStore

log = logging.getLogger(__name__)

# Records read, sent and acknowledged at a time; a chunk of known ids holds up to CHUNK_ROWS
# rows: about 13,000 rows at most.
IMPORT_BATCH_RECORDS = 200
# A partition's whole import is one transaction: allow the broker's default maximum
# (transaction.max.timeout.ms, 15 minutes) rather than the producer's 60 s.
IMPORT_TRANSACTION_TIMEOUT_MS = 900_000


async def export_state(config: Config, out: Path) -> int:
    """Restore the whole state topic into the new SQLite file ``out``; how many records. No
    file is left if it fails (a record it cannot read, Kafka away)."""
    assert config.cluster is not None
    options = client_options(config.cluster)
    await ensure_state_topic(config.cluster, options, create=False)
    try:
        async with ClusterStore(out, work_map(config)) as store:
            bad = BadRecords()
            records = await read_all(options, config.cluster.state_topic,
                                     config.cluster.work_partitions,
                                     functools.partial(store.apply, bad=bad))
            bad.check(f"state topic {config.cluster.state_topic!r}")
            return records
    except BaseException:  # no partial export left to be imported by mistake
        for leftover in (out, out.with_name(out.name + "-wal"), out.with_name(out.name + "-shm")):
            leftover.unlink(missing_ok=True)
        raise


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


async def import_state(config: Config, source: Path, *, force: bool = False,
                       batch_records: int = IMPORT_BATCH_RECORDS,
                       progress: Callable[[int], None] | None = None) -> int:
    """Write every row of the SQLite state file ``source`` to the state topic (known ids in
    chunks); how many records.

    Streams: at most ``batch_records`` records are read from the file at a time, sent, and
    acknowledged by Kafka before the next batch is read; ``progress`` is told the running
    total after each batch. Each partition's rows still go in one transaction (opened on the
    partition's first row, committed after the last batch), so a failed import leaves nothing
    of it visible to a read_committed reader."""
    assert config.cluster is not None
    if batch_records < 1:
        raise ValueError("batch_records must be at least 1")
    cfg = config.cluster
    options = client_options(cfg)
    await ensure_state_topic(cfg, options)
    if not force and await topic_records(config):
        raise NotifierError(f"the state topic {cfg.state_topic!r} already holds state: "
                            "import is for a cluster's first start (--force merges anyway)")
    work = work_map(config)
    producers: dict[int, AIOKafkaProducer] = {}
    sent = skipped = 0
    read_all = False
    async with SqliteStateStore(source) as store:
        tables = await store._call("read tables", capture.tables_of)
        rows = await store._call("read rows", lambda c: iter(capture.all_rows(c, tables,
                                                                      CHUNK_ROWS)))
        try:
            while batch := await store._call("read rows",
                                             lambda _c: list(islice(rows, batch_records))):
                pending = []
                for key, value in batch:
                    p = capture.row_partition(work, tables, key)
                    if p is None:
                        skipped += 1
                        continue
                    producer = producers.get(p) or await _begin(producers, options, cfg.group, p)
                    pending.append(await producer.send(cfg.state_topic, key=encode_key(key),
                                                       value=value, partition=p))
                del batch
                await asyncio.gather(*pending)  # acknowledged: the next batch may be read
                sent += len(pending)
                log.info("state import: %d records sent", sent)
                if progress is not None:
                    progress(sent)
            read_all = True
        finally:
            await store._call("close rows", lambda _c: _close(rows))
            await _finish(producers, commit=read_all)
    if skipped:
        log.warning("%d records of subscriptions missing from the configuration not imported",
                    skipped)
    return sent


async def _begin(producers: dict[int, AIOKafkaProducer], options: dict[str, Any], group: str,
                 partition: int) -> AIOKafkaProducer:
    """The partition's transactional producer (fencing its replica), in an open transaction."""
    producer = await start_partition_producer(
        options, group, partition, transaction_timeout_ms=IMPORT_TRANSACTION_TIMEOUT_MS)
    try:
        await producer.begin_transaction()
    except BaseException:
        await producer.stop()
        raise
    producers[partition] = producer
    return producer


async def _finish(producers: dict[int, AIOKafkaProducer], *, commit: bool) -> None:
    """Commit (or abort, for an import that failed) each partition's transaction; stop every
    producer."""
    error: BaseException | None = None
    while producers:
        _, producer = producers.popitem()
        try:
            if commit and error is None:
                await producer.commit_transaction()
            else:
                await producer.abort_transaction()
        except BaseException as exc:  # the rest are aborted, every producer stopped
            error = error or exc
        finally:
            await producer.stop()
    if error is not None:
        raise error


def _close(rows: Iterator[Any]) -> None:
    close = getattr(rows, "close", None)
    if close is not None:
        close()  # a generator resets the connection's row factory
