"""The state topic's checks on a real broker: a topic that would lose state (another cleanup
policy, another partition count) is refused with a clear error, ``state export`` never creates
one, and a replica whose group consumer cannot start (Kafka gone after the topic check) keeps
trying instead of exiting."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaConnectionError

from notifier.cluster import topic as topic_module
from notifier.cluster.coordinator import Coordinator
from notifier.cluster.partitions import WorkMap
from notifier.cluster.topic import KafkaUnreachable, client_options, ensure_state_topic
from notifier.cluster.transfer import export_state
from notifier.config import Config
from notifier.config.cluster import ClusterConfig
from notifier.errors import NotifierError
from notifier.sinks.kafka_topic import TopicError, create_topic, topic_exists
from tests.integration.cluster_support import running_coordinator

pytestmark = pytest.mark.kafka


def cluster(bootstrap: str, partitions: int = 3, prefix: str = "topic") -> ClusterConfig:
    """A cluster section with a group and state topic of its own (``prefix``-tag)."""
    tag = uuid.uuid4().hex[:10]
    return ClusterConfig.model_validate({
        "bootstrap_servers": bootstrap, "group": f"{prefix}-{tag}",
        "state_topic": f"{prefix}-{tag}.state", "work_partitions": partitions,
        "session_timeout": "6s"})


async def compacted_state_topic(bootstrap: str, partitions: int, prefix: str) -> ClusterConfig:
    """``cluster(...)`` whose state topic exists already, compacted (records can be put in it
    before any replica starts)."""
    cfg = cluster(bootstrap, partitions, prefix)
    await make_topic(bootstrap, cfg.state_topic, partitions, {"cleanup.policy": "compact"})
    return cfg


async def make_topic(bootstrap: str, name: str, partitions: int,
                     configs: dict[str, str]) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await create_topic(admin, name, partitions, 1, configs)
    finally:
        await admin.close()


async def exists(bootstrap: str, name: str) -> bool:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        return await topic_exists(admin, name)
    finally:
        await admin.close()


@pytest.mark.timeout(60)
async def test_a_state_topic_with_delete_retention_is_refused(kafka_bootstrap: str) -> None:
    cfg = cluster(kafka_bootstrap)
    await make_topic(kafka_bootstrap, cfg.state_topic, 3, {"cleanup.policy": "delete"})
    with pytest.raises(NotifierError, match=r"cleanup.policy=delete, not compact"):
        await ensure_state_topic(cfg, client_options(cfg))


@pytest.mark.timeout(60)
async def test_a_state_topic_with_other_partitions_is_refused(kafka_bootstrap: str) -> None:
    cfg = cluster(kafka_bootstrap, partitions=4)
    await make_topic(kafka_bootstrap, cfg.state_topic, 2, {"cleanup.policy": "compact"})
    with pytest.raises(NotifierError, match=r"has 2 partitions but cluster.work_partitions is 4"):
        await ensure_state_topic(cfg, client_options(cfg))


@pytest.mark.timeout(60)
async def test_a_missing_state_topic_is_created_compacted(kafka_bootstrap: str) -> None:
    cfg = cluster(kafka_bootstrap)
    await ensure_state_topic(cfg, client_options(cfg))
    await ensure_state_topic(cfg, client_options(cfg))  # and then passes its own checks


@pytest.mark.timeout(60)
async def test_export_of_a_missing_state_topic_fails_and_creates_nothing(
        kafka_bootstrap: str, tmp_path: Path) -> None:
    cfg = cluster(kafka_bootstrap)
    config = Config.model_validate({
        "credentials": [{"name": "u", "access_token": "t"}],
        "subscriptions": [{"name": "s", "credential": "u", "container_id": str(uuid.uuid4()),
                           "sinks": ["k"]}],
        "sinks": [{"name": "k", "type": "kafka", "bootstrap_servers": kafka_bootstrap,
                   "topic": "unused"}],
        "cluster": cfg.model_dump(mode="json")})
    with pytest.raises(NotifierError, match=r"state topic .* does not exist"):
        await export_state(config, tmp_path / "out.db")
    assert not await exists(kafka_bootstrap, cfg.state_topic), "a typo creates no topic"


@pytest.mark.timeout(90)
async def test_a_group_consumer_that_cannot_start_is_retried(
        kafka_bootstrap: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Kafka answering the topic check and gone when the group consumer starts: the replica
    keeps trying (backoff) and joins, instead of exiting."""
    cfg = cluster(kafka_bootstrap)
    failures = 0
    real = Coordinator._start_consumer

    async def flaky(self: Coordinator) -> object:
        nonlocal failures
        if failures < 1:
            failures += 1
            raise KafkaConnectionError("broker went away")
        return await real(self)

    monkeypatch.setattr(Coordinator, "_start_consumer", flaky)

    async def no_work(names: list[str], txn: object) -> list[object]:
        return []

    work = WorkMap(cfg.work_partitions, [], {})
    async with running_coordinator(cfg, tmp_path / "cache.db", work, no_work) as (
            coordinator, _, task):
        await asyncio.wait_for(coordinator.joined.wait(), 60)
        assert failures == 1
        assert not task.done(), "still running after the failed start"


@pytest.mark.timeout(60)
async def test_a_state_topic_just_created_is_described_once_its_metadata_arrives(
        kafka_bootstrap: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A broker that does not know a topic it has just created yet (UnknownTopicOrPartition
    while its metadata propagates) delays the checks; it is no error, as long as it settles."""
    cfg = cluster(kafka_bootstrap)
    real = topic_module.partition_count
    refusals = 0

    async def not_yet(admin: AIOKafkaAdminClient, topic: str) -> int:
        nonlocal refusals
        if refusals < 3:
            refusals += 1
            raise TopicError(f"cannot describe kafka topic {topic!r}: "
                             "UnknownTopicOrPartitionError", retriable=True)
        return await real(admin, topic)

    monkeypatch.setattr(topic_module, "partition_count", not_yet)
    await ensure_state_topic(cfg, client_options(cfg))
    assert refusals == 3
    assert await exists(kafka_bootstrap, cfg.state_topic)


@pytest.mark.timeout(60)
async def test_an_existing_state_topic_that_cannot_be_described_is_not_waited_for(
        kafka_bootstrap: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The retries are for a topic just created: one that existed and cannot be described is
    reported at once (the replica's start retries it with its own backoff)."""
    cfg = cluster(kafka_bootstrap)
    await make_topic(kafka_bootstrap, cfg.state_topic, 3, {"cleanup.policy": "compact"})
    calls = 0

    async def never(admin: AIOKafkaAdminClient, topic: str) -> int:
        nonlocal calls
        calls += 1
        raise TopicError(f"cannot describe kafka topic {topic!r}: "
                         "UnknownTopicOrPartitionError", retriable=True)

    monkeypatch.setattr(topic_module, "partition_count", never)
    with pytest.raises(KafkaUnreachable, match="UnknownTopicOrPartitionError"):
        await ensure_state_topic(cfg, client_options(cfg))
    assert calls == 1
