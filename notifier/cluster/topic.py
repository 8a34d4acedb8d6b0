"""The cluster's Kafka client options and its state topic (compacted, one partition per work
partition), created if missing and checked if present."""

from __future__ import annotations

import logging
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError, for_code

from notifier.config.cluster import ClusterConfig
from notifier.errors import ConfigError, NotifierError
from notifier.sinks.kafka import default_replication
from notifier.sinks.kafka_security import KafkaSecurityError, client_security

log = logging.getLogger(__name__)


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


async def ensure_state_topic(cfg: ClusterConfig, options: dict[str, Any]) -> None:
    """Create the state topic (compacted, ``work_partitions`` partitions) if it is missing;
    NotifierError if it exists with another partition count or cannot be created."""
    admin = AIOKafkaAdminClient(**options)
    topic = cfg.state_topic
    try:
        await admin.start()
        if topic not in await admin.list_topics():
            replication = cfg.replication_factor or default_replication(
                len((await admin.describe_cluster())["brokers"]))
            response = await admin.create_topics([NewTopic(
                topic, cfg.work_partitions, replication,
                topic_configs={"cleanup.policy": "compact"})])
            for entry in response.topic_errors:
                error = for_code(entry[1])
                if entry[1] != 0 and error is not TopicAlreadyExistsError:
                    raise NotifierError(f"cannot create the state topic {topic!r}: "
                                        f"{error.__name__}")
            log.info("created the state topic %s (%d partitions, compacted)", topic,
                     cfg.work_partitions)
        found = await admin.describe_topics([topic])
        count = len(found[0]["partitions"]) if found else 0
        if count and count != cfg.work_partitions:
            raise NotifierError(
                f"the state topic {topic!r} has {count} partitions but cluster.work_partitions "
                f"is {cfg.work_partitions}: they must match (a credential's state lives in its "
                "partition)")
    except KafkaError as err:
        raise KafkaUnreachable(f"cluster: cannot reach kafka at "
                            f"{','.join(cfg.bootstrap_servers)}: {type(err).__name__}") from None
    finally:
        await admin.close()


async def start_partition_producer(options: dict[str, Any], group: str, partition: int,
                                   **extra: Any) -> AIOKafkaProducer:
    """The work partition's transactional producer, started: its ``transactional.id`` is the
    partition's (``{group}.{partition}``), so starting it fences any former owner (a replica,
    or an import)."""
    producer = AIOKafkaProducer(**options, acks="all", enable_idempotence=True,
                                transactional_id=f"{group}.{partition}", **extra)
    try:
        await producer.start()  # init_transactions
    except BaseException:
        await producer.stop()
        raise
    return producer
