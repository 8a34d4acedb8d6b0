"""Kafka topics: creating one that is missing, and reading what an existing one is.

Shared by the kafka sink (its events topic) and cluster mode (its state topic), so both create
topics the same way: found with ``list_topics`` (a metadata request naming the topic would let a
broker with ``auto.create.topics.enable`` create it with its own defaults), created with the
replication factor configured or ``min(3, brokers)``, an existing topic being no error.
"""

from __future__ import annotations

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import TopicAlreadyExistsError, for_code


class TopicError(Exception):
    """A topic could not be created or read; ``retriable``: worth trying again later."""

    def __init__(self, text: str, *, retriable: bool) -> None:
        super().__init__(text)
        self.retriable = retriable


def default_replication(brokers: int) -> int:
    """The replication factor of a topic created when none is configured."""
    return max(1, min(3, brokers))


async def topic_exists(admin: AIOKafkaAdminClient, topic: str) -> bool:
    return topic in await admin.list_topics()


async def create_topic(admin: AIOKafkaAdminClient, topic: str, partitions: int,
                       replication: int | None, configs: dict[str, str] | None = None) -> int:
    """Create ``topic`` (one that exists already is fine); the replication factor used.
    TopicError if the broker refuses."""
    if replication is None:
        replication = default_replication(len((await admin.describe_cluster())["brokers"]))
    response = await admin.create_topics([NewTopic(topic, partitions, replication,
                                                   topic_configs=configs or {})])
    for entry in response.topic_errors:
        error = for_code(entry[1])
        if entry[1] != 0 and error is not TopicAlreadyExistsError:
            detail = entry[2] if len(entry) > 2 and entry[2] else ""
            raise TopicError(f"cannot create kafka topic {topic!r}: {error.__name__} {detail}"
                             .rstrip(), retriable=bool(getattr(error, "retriable", False)))
    return replication


async def partition_count(admin: AIOKafkaAdminClient, topic: str) -> int:
    """How many partitions the existing ``topic`` has. TopicError if the broker says none."""
    found = await admin.describe_topics([topic])
    entry = found[0] if found else None
    if entry is None or entry.get("error_code", 0) != 0 or not entry.get("partitions"):
        code = entry.get("error_code", 0) if entry is not None else 0
        why = for_code(code).__name__ if code else "no partitions"
        raise TopicError(f"cannot describe kafka topic {topic!r}: {why}", retriable=True)
    return len(entry["partitions"])


async def topic_config(admin: AIOKafkaAdminClient, topic: str, name: str) -> str | None:
    """The value of the topic configuration ``name`` (the broker's default if not set)."""
    responses = await admin.describe_configs(
        [ConfigResource(ConfigResourceType.TOPIC, topic, configs={name: ""})])
    for response in responses:
        for resource in response.resources:
            code, message, _type, resource_name, entries = resource[:5]
            if resource_name != topic:
                continue
            if code:
                error = for_code(code)
                raise TopicError(f"cannot read the configuration of kafka topic {topic!r}: "
                                 f"{error.__name__} {message or ''}".rstrip(),
                                 retriable=bool(getattr(error, "retriable", False)))
            for entry in entries:
                if entry[0] == name:
                    return None if entry[1] is None else str(entry[1])
    return None
