"""Stray streams on a real broker: the state of a subscription removed from the configuration,
or one whose credentials now put it in another work partition, is left out of the restore,
announced once, counted, marked in the topic, and tombstoned after state.orphan_retention
(the single process's rule for orphans); the partition's own streams run as before."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from notifier.cluster.partitions import WorkMap, partition_of
from notifier.cluster.records import RowKey, decode_key, encode_chunk, encode_key, encode_row
from tests.integration.cluster_support import running_coordinator
from tests.integration.kafka_support import read_topic
from tests.integration.main_job_support import wait_for
from tests.integration.test_cluster_bad_record import send
from tests.integration.test_cluster_topic import compacted_state_topic

pytestmark = pytest.mark.kafka

PARTITIONS = 12


def key(table: str, sub: str, ident: object = None) -> bytes:
    return encode_key(RowKey(table, sub, "c1", ident))  # type: ignore[arg-type]


async def latest(bootstrap: str, topic: str, partition: int) -> dict[bytes, bytes | None]:
    """The value a compaction would keep of every key of ``partition`` (committed ones)."""
    values: dict[bytes, bytes | None] = {}
    for r in await read_topic(bootstrap, topic, isolation_level="read_committed"):
        if r.partition == partition and r.key is not None and decode_key(r.key) is not None:
            values[r.key] = r.value
    return values


@pytest.mark.timeout(120)
async def test_strays_are_left_out_announced_and_dropped_after_the_retention(
        kafka_bootstrap: str, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    cfg = await compacted_state_topic(kafka_bootstrap, PARTITIONS, "strays")
    alice, bob = partition_of("alice", PARTITIONS), partition_of("bob", PARTITIONS)
    assert alice != bob
    # alice's partition as an earlier configuration left it: "a" (still alice's), "gone"
    # (removed since) and "moved" (its credential is bob now)
    for sub in ("a", "gone", "moved"):
        await send(kafka_bootstrap, cfg.state_topic, key("streams", sub),
                   encode_row({"sync_token": f"t-{sub}"}), alice)
        await send(kafka_bootstrap, cfg.state_topic, key("known", sub, 0),
                   encode_chunk(["rel_id"], [[f"r-{sub}"]]), alice)
    work = WorkMap(PARTITIONS, ["alice", "bob"], {"a": ("alice",), "moved": ("bob",)})
    started: list[str] = []

    async def start_work(names: list[str], txn: object) -> list[object]:
        started.extend(names)
        return []

    registry = CollectorRegistry()
    caplog.set_level(logging.INFO, logger="notifier.cluster")
    async with running_coordinator(cfg, tmp_path / "cache.db", work, start_work, registry,
                                   orphan_retention=4.0) as (_, store, _):
        await wait_for(lambda: {"alice", "bob"} <= set(started), 60, "both partitions run")
        assert [s.key for s in await store.list_streams()] == [("a", "c1")], \
            "strays stay out of the cache"
        assert await store.known_subset("a", "c1", ["r-a"]) == {"r-a"}
        warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING
                    and "does not put there" in r.getMessage()]
        assert len(warnings) == 1, warnings
        assert "subscription 'gone' (1 stream(s)): removed from the configuration" in \
            warnings[0]
        assert f"subscription 'moved': its credentials put its streams in work partition(s) " \
               f"{bob}" in warnings[0]
        assert registry.get_sample_value("notifier_cluster_stray_streams") == 2.0
        marked = await latest(kafka_bootstrap, cfg.state_topic, alice)
        assert marked[encode_key(RowKey("cluster_stray", "gone", "c1", None))] is not None
        await wait_for(lambda: any("dropped the state of 2 stray stream(s)" in r.getMessage()
                                   for r in caplog.records), 30, "the strays dropped")
        await wait_for(lambda: registry.get_sample_value("notifier_cluster_stray_streams")
                       == 0.0, 10, "the gauge back to 0")
    values = await latest(kafka_bootstrap, cfg.state_topic, alice)
    for sub in ("gone", "moved"):
        for k in (key("streams", sub), key("known", sub, 0),
                  encode_key(RowKey("cluster_stray", sub, "c1", None))):
            assert values[k] is None, f"{k!r} tombstoned"
    assert values[key("streams", "a")] is not None
    assert values[key("known", "a", 0)] is not None

    # a replica restoring the partition now finds nothing stray
    started.clear()
    caplog.clear()
    async with running_coordinator(cfg, tmp_path / "cache2.db", work, start_work,
                                   orphan_retention=4.0) as (_, store, _):
        await wait_for(lambda: {"alice", "bob"} <= set(started), 60, "both partitions run")
        assert [s.key for s in await store.list_streams()] == [("a", "c1")]
    assert not [r for r in caplog.records if "does not put there" in r.getMessage()]
