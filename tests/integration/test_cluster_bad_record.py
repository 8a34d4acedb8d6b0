"""A state-topic record this release cannot read, on a real broker: the replica does not start
the partition that holds it (its restore would be short of rows) and says which key, the other
partitions run; ``state export`` fails the same way and leaves no file; a readable record or a
tombstone of that key mends it."""

from __future__ import annotations

import logging
import uuid
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer

from notifier.cluster import coordinator as coordinator_module
from notifier.cluster.partitions import WorkMap, partition_of
from notifier.cluster.records import RowKey, encode_key, encode_row
from notifier.cluster.transfer import export_state
from notifier.config import Config
from notifier.errors import StateRecordError
from tests.integration.cluster_support import running_coordinator
from tests.integration.main_job_support import wait_for
from tests.integration.test_cluster_topic import compacted_state_topic

pytestmark = pytest.mark.kafka

PARTITIONS = 12
SECRET = "rt-never-in-a-log"


async def send(bootstrap: str, topic: str, key: bytes, value: bytes | None,
               partition: int) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        await producer.send_and_wait(topic, value, key=key, partition=partition)
    finally:
        await producer.stop()


@pytest.mark.timeout(120)
async def test_an_unreadable_record_stops_its_partition_only_until_mended(
        kafka_bootstrap: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    cfg = await compacted_state_topic(kafka_bootstrap, PARTITIONS, "bad")
    alice, bob = partition_of("alice", PARTITIONS), partition_of("bob", PARTITIONS)
    assert alice != bob
    token_key = encode_key(RowKey("refresh_tokens", None, None, "alice"))
    await send(kafka_bootstrap, cfg.state_topic, token_key,
               b'{"seed_fingerprint": "fp", "refresh_token": ["' + SECRET.encode() + b'"], '
               b'"updated_at": 1.0}', alice)
    config = Config.model_validate({
        "credentials": [{"name": "alice", "access_token": "t"},
                        {"name": "bob", "access_token": "t"}],
        "subscriptions": [{"name": "s", "credential": "alice",
                           "container_id": str(uuid.uuid4()), "sinks": ["k"]}],
        "sinks": [{"name": "k", "type": "kafka", "bootstrap_servers": kafka_bootstrap,
                   "topic": "unused"}],
        "cluster": cfg.model_dump(mode="json")})

    out = tmp_path / "export.db"
    with pytest.raises(StateRecordError) as caught:
        await export_state(config, out)
    assert '["refresh_tokens",null,null,"alice"]' in str(caught.value)
    assert "holds a JSON list" in str(caught.value)
    assert SECRET not in str(caught.value)
    assert not out.exists(), "a failed export leaves no file to import by mistake"

    monkeypatch.setattr(coordinator_module, "BAD_RECORD_RETRY", 1.0)
    started: list[str] = []

    async def start_work(names: list[str], txn: object) -> list[object]:
        started.extend(names)
        return []

    work = WorkMap(PARTITIONS, ["alice", "bob"], {})
    caplog.set_level(logging.ERROR, logger="notifier.cluster.coordinator")
    async with running_coordinator(cfg, tmp_path / "cache.db", work, start_work) as (
            _, store, _):
        await wait_for(lambda: "bob" in started, 60, "bob's partition started")
        await wait_for(lambda: any(f"work partition {alice} not started" in r.getMessage()
                                   for r in caplog.records), 30, "the refusal logged")
        assert "alice" not in started, "a partition restored short of a row never runs"
        refusals = [r for r in caplog.records if "not started" in r.getMessage()]
        assert all(r.exc_info is None for r in refusals), "a clear line, no traceback"
        assert all(SECRET not in r.getMessage() for r in caplog.records)
        assert "cannot be read by this release" in refusals[0].getMessage()

        await send(kafka_bootstrap, cfg.state_topic, token_key,
                   encode_row({"credential": "alice", "seed_fingerprint": "fp",
                               "refresh_token": "rt-2", "updated_at": 2.0}), alice)
        await wait_for(lambda: "alice" in started, 30, "alice's partition started once "
                       "a readable record of the key follows the bad one")
        assert await store.load_refresh_token("alice", "fp") == "rt-2"

    assert await export_state(config, out) == 2
    assert out.exists()
