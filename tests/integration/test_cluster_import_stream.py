"""``notifier state import`` streams: it reads the SQLite file in bounded batches and has each
batch acknowledged by Kafka before it reads the next, so a big state file never sits in memory
whole; every row still arrives on the state topic (each partition's in one transaction)."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest

from notifier.cluster import capture, transfer
from notifier.cluster.records import CHUNK_ROWS
from notifier.cluster.restore import read_all
from notifier.cluster.topic import client_options
from notifier.config.loader import load_config
from notifier.state.sqlite import SqliteStateStore
from tests.integration.cluster_support import CONTAINERS, CREDENTIALS, Cluster
from tests.integration.main_job_support import base_config, write_config

pytestmark = pytest.mark.kafka

KNOWN_PER_STREAM = 300
BATCH = 4


async def state_file(path: Path, subs: list[dict[str, Any]]) -> int:
    """A single process's state file: one stream per subscription, each with known ids; how
    many records they make (a stream, its known ids in chunks)."""
    async with SqliteStateStore(path):
        pass
    conn = sqlite3.connect(path)
    with conn:
        for i, sub in enumerate(subs):
            conn.execute("INSERT INTO streams (stream_id, subscription, container_id, "
                         "sync_token) VALUES (?, ?, ?, ?)",
                         (i + 1, sub["name"], sub["container_id"], f"token-{i}"))
            conn.executemany("INSERT INTO known (stream_id, rel_id, body) VALUES (?, ?, ?)",
                             [(i + 1, f"rel-{i}-{n}".encode(), b"{}")
                              for n in range(KNOWN_PER_STREAM)])
    conn.close()
    return len(subs) * (1 + -(-KNOWN_PER_STREAM // CHUNK_ROWS))


@pytest.mark.timeout(120)
async def test_import_reads_and_sends_in_bounded_batches(tmp_path: Path, kafka_bootstrap: str,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    cluster = Cluster(kafka_bootstrap, partitions=3)
    subs = cluster.subscriptions()
    kafka = {"name": "events", "type": "kafka", "bootstrap_servers": kafka_bootstrap,
             "topic": cluster.events_topic}
    data = base_config(tmp_path, "http://127.0.0.1:9", subs, sinks=[kafka])
    data["credentials"] = [{"name": c, "access_token": "t"} for c in CREDENTIALS]
    data["cluster"] = {"bootstrap_servers": kafka_bootstrap, "group": cluster.group,
                       "state_topic": cluster.state_topic, "work_partitions": 3}
    config = load_config(write_config(tmp_path, data))
    source = tmp_path / "single.db"
    rows = await state_file(source, subs)
    assert len(CONTAINERS) == len(subs)

    read = 0
    acknowledged = [0]
    in_flight: list[int] = []  # rows read from the file but not yet acknowledged, per read
    real_rows = capture.all_rows

    def counting(conn: sqlite3.Connection, tables: dict[str, Any], size: int
                 ) -> Iterator[Any]:
        nonlocal read
        for item in real_rows(conn, tables, size):
            read += 1
            in_flight.append(read - acknowledged[-1])
            yield item

    def counted_rows(conn: sqlite3.Connection, tables: dict[str, Any], size: int
                     ) -> Iterable[Any]:
        return counting(conn, tables, size)

    monkeypatch.setattr(capture, "all_rows", counted_rows)
    n = await transfer.import_state(config, source, batch_records=BATCH,
                                    progress=acknowledged.append)
    assert n == rows
    assert read == rows
    assert acknowledged[-1] == rows
    assert len(acknowledged) - 1 == -(-rows // BATCH), "one acknowledgement per batch"
    assert max(in_flight) <= BATCH, "never more than one batch read ahead of Kafka"

    keys: set[bytes | None] = set()

    async def collect(records: Any) -> int:
        keys.update(k for k, _ in records)
        return len(records)

    assert config.cluster is not None
    on_topic = await read_all(client_options(config.cluster), cluster.state_topic, 3, collect)
    assert on_topic == rows, "every row committed to the state topic"
    assert len(keys) == rows
