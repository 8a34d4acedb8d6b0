"""The cluster's Kafka client options and its state topic (compacted, one partition per work
partition), created if missing and checked if present."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from notifier.config.cluster import ClusterConfig
from notifier.errors import ConfigError, NotifierError
from notifier.sinks.kafka_security import KafkaSecurityError, client_security
from notifier.sinks.kafka_topic import (
    TopicError,
    create_topic,
    partition_count,
    topic_config,
    topic_exists,
)

log = logging.getLogger(__name__)

# Bytes to a record batch of a partition's producer (aiokafka's default is 16 KiB: a page's
# events and state records would go in dozens of batches); as the kafka sink's default.
BATCH_BYTES = 1024 * 1024

# A topic just created may not be described at once (the broker answering has not yet seen its
# metadata: UnknownTopicOrPartition): its checks are tried again this many times, this far apart.
SETTLE_ATTEMPTS = 20
SETTLE_DELAY = 0.25


def client_options(cfg: ClusterConfig) -> dict[str, Any]:
    """aiokafka keyword arguments shared by the cluster's producers, consumers and admin."""
    try:
        opts = client_security(cfg)
    except KafkaSecurityError as err:
        raise ConfigError(f"cluster: {err}") from None
    opts.update(bootstrap_servers=list(cfg.bootstrap_servers), client_id=cfg.client_id,
                request_timeout_ms=int(cfg.request_timeout * 1000))
    return opts


class KafkaUnreachable(NotifierError):
    """Kafka did not answer (a replica starting keeps trying; the CLI reports it)."""


async def ensure_state_topic(cfg: ClusterConfig, options: dict[str, Any], *,
                             create: bool = True) -> None:
    """Create the state topic (compacted, ``work_partitions`` partitions) if it is missing and
    ``create``; NotifierError if it is missing and not to be created, exists with another
    partition count or a cleanup policy other than compact, or cannot be created;
    KafkaUnreachable if Kafka does not answer."""
    admin = AIOKafkaAdminClient(**options)
    topic = cfg.state_topic
    servers = ",".join(cfg.bootstrap_servers)
    try:
        await admin.start()
        if not await topic_exists(admin, topic):
            if not create:
                raise NotifierError(f"the state topic {topic!r} does not exist on {servers} "
                                    "(check cluster.state_topic)")
            await create_topic(admin, topic, cfg.work_partitions, cfg.replication_factor,
                               {"cleanup.policy": "compact"})
            log.info("created the state topic %s (%d partitions, compacted)", topic,
                     cfg.work_partitions)
            count, policy = await _settled(admin, topic)
        else:
            count, policy = await _described(admin, topic)
        if count != cfg.work_partitions:
            raise NotifierError(
                f"the state topic {topic!r} has {count} partitions but cluster.work_partitions "
                f"is {cfg.work_partitions}: they must match (a credential's state lives in its "
                "partition)")
        if policy != "compact":
            raise NotifierError(
                f"the state topic {topic!r} has cleanup.policy={policy}, not compact: its "
                "retention would delete state (set cleanup.policy=compact on it, or name "
                "another topic in cluster.state_topic)")
    except TopicError as err:
        if err.retriable:
            raise KafkaUnreachable(f"cluster: {err} on {servers}") from None
        raise NotifierError(f"cluster: {err} on {servers}") from None
    except KafkaError as err:
        raise KafkaUnreachable(f"cluster: cannot reach kafka at {servers}: "
                               f"{type(err).__name__}") from None
    finally:
        await admin.close()


async def _described(admin: AIOKafkaAdminClient, topic: str) -> tuple[int, str | None]:
    """The topic's partition count and cleanup policy."""
    return (await partition_count(admin, topic),
            await topic_config(admin, topic, "cleanup.policy"))


async def _settled(admin: AIOKafkaAdminClient, topic: str) -> tuple[int, str | None]:
    """``_described`` for a topic just created: a retriable error (its metadata not yet
    propagated) is tried again, SETTLE_ATTEMPTS times at most."""
    for attempt in range(1, SETTLE_ATTEMPTS + 1):
        try:
            return await _described(admin, topic)
        except (TopicError, KafkaError) as err:
            if not getattr(err, "retriable", False) or attempt == SETTLE_ATTEMPTS:
                raise
            log.debug("the state topic %s is not described yet (%s); again", topic, err)
        await asyncio.sleep(SETTLE_DELAY)
    raise AssertionError("unreachable")


async def start_partition_producer(options: dict[str, Any], group: str, partition: int,
                                   **extra: Any) -> AIOKafkaProducer:
    """The work partition's transactional producer, started: its ``transactional.id`` is the
    partition's (``{group}.{partition}``), so starting it fences any former owner (a replica,
    or an import)."""
    producer = AIOKafkaProducer(**options, acks="all", enable_idempotence=True,
                                transactional_id=f"{group}.{partition}",
                                max_batch_size=BATCH_BYTES, **extra)
    try:
        await producer.start()  # init_transactions
    except BaseException:
        await producer.stop()
        raise
    return producer
