"""Webhook delivery marks in cluster mode: marks per second and CPU per mark when the
dispatcher's calls finish concurrently, against the same marks made one at a time.

In cluster mode every delivery mark is a state record committed in its work partition's Kafka
transaction before the dispatcher goes on (notifier.cluster.outbox). The benchmark queues N
outbox rows of one stream in a ClusterStore whose partition runs a real PartitionTxn on the
broker, then marks them delivered, each row on its own, from C concurrent workers (as
``max_concurrency`` C webhook calls finishing) and, as the same run's baseline, from one
worker. Marks that wait for the partition's scope are committed together, so concurrency
should buy throughput; one transaction per mark (before the group commit) gave none.

    python bench/cluster_marks.py [--rows 400] [--concurrency 8] [--repeat 2]
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import tempfile
import time
import uuid
from pathlib import Path

from common import kafka_broker, machine, note, table
from prometheus_client import CollectorRegistry

from notifier.cluster.partitions import WorkMap
from notifier.cluster.store import ClusterStore
from notifier.cluster.txn import PartitionTxn
from notifier.cluster_metrics import ClusterMetrics
from notifier.state.base import OutboxItem


async def _topic(bootstrap: str, name: str) -> None:
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, 1, 1)])
    finally:
        await admin.close()


async def run(bootstrap: str, rows: int, workers: int) -> tuple[float, float, float]:
    """(wall seconds, CPU seconds, transactions) to mark ``rows`` rows from ``workers``."""
    from aiokafka import AIOKafkaProducer

    name = f"bench-marks-{uuid.uuid4().hex[:10]}"
    await _topic(bootstrap, name)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all",
                                enable_idempotence=True, transactional_id=name)
    await producer.start()
    registry = CollectorRegistry()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "cache.db"
        async with ClusterStore(path, WorkMap(1, ["u"], {"s": ("u",)})) as store:
            txn = PartitionTxn(0, producer, store=store, state_topic=name,
                               metrics=ClusterMetrics(registry), on_broken=lambda p: None,
                               commit_timeout=30.0)
            store.txns[0] = txn
            try:
                items = [OutboxItem("hook", f"e{i}", f"k{i}", b'{"id":1}',
                                    "2024-05-01T00:00:00Z", 1.0) for i in range(rows)]
                await store.commit_page("s", "c", next_token="t", resync_cursor=None,
                                        in_resync=False, add_ids=(), remove_ids=(),
                                        outbox=items, changed=True, now=1.0)
                conn = sqlite3.connect(path)
                queue = [r for (r,) in conn.execute("SELECT row_id FROM outbox")]
                conn.close()
                before = registry.get_sample_value("notifier_cluster_transactions_total",
                                                   {"outcome": "committed"}) or 0.0

                async def worker() -> None:
                    while queue:
                        await store.outbox_mark_delivered([queue.pop()], 5.0)

                wall, cpu = time.perf_counter(), time.process_time()
                await asyncio.gather(*(worker() for _ in range(workers)))
                wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
                after = registry.get_sample_value("notifier_cluster_transactions_total",
                                                  {"outcome": "committed"}) or 0.0
            finally:
                await txn.close()
    return wall, cpu, after - before


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", type=int, default=400)
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--repeat", type=int, default=2)
    args = p.parse_args()
    print(f"# cluster_marks: {args.rows} marks per run, {args.repeat} runs; {machine()}")
    out = []
    best: dict[int, float] = {}
    with kafka_broker() as bootstrap:
        for n in range(1, args.repeat + 1):
            for workers in (1, args.concurrency):
                note(f"run {n}: {workers} worker(s)")
                wall, cpu, txns = asyncio.run(run(bootstrap, args.rows, workers))
                rate = args.rows / wall
                best[workers] = max(best.get(workers, 0.0), rate)
                out.append([f"{workers} worker(s) #{n}", args.rows, f"{wall:.2f}",
                            f"{rate:,.0f}", f"{cpu / args.rows * 1000:.2f}", int(txns)])
    print(table(["run", "marks", "wall s", "marks/s", "CPU ms/mark", "transactions"], out))
    print(f"\nbest {args.concurrency} workers {best[args.concurrency]:,.0f} marks/s, "
          f"best 1 worker {best[1]:,.0f} marks/s: ratio "
          f"{best[args.concurrency] / best[1]:.2f}")


if __name__ == "__main__":
    main()
