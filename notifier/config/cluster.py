"""The ``cluster`` section: several replicas share the work through Kafka (issue 14).

Absent, the notifier runs as one process with its SQLite file. Present, the replicas that
share ``group`` divide ``work_partitions`` among themselves (Kafka's consumer-group protocol),
keep every durable change in the compacted ``state_topic`` (the SQLite file is only a local
cache) and write events and their checkpoints in one Kafka transaction. The TLS and SASL fields
are ``KafkaSecurity``'s, as for the Kafka sink.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, WithJsonSchema

from notifier.config.kafka_security import KafkaSecurity
from notifier.config.types import (
    KAFKA_NAME_PATTERN,
    BootstrapServers,
    NonEmpty,
    PositiveDuration,
)


class ClusterConfig(KafkaSecurity):
    """Where the replicas meet (``bootstrap_servers``, ``group``) and keep their state."""

    bootstrap_servers: BootstrapServers
    group: Annotated[str, Field(pattern=KAFKA_NAME_PATTERN), WithJsonSchema({"type": "string"})]
    state_topic: Annotated[
        str, Field(pattern=KAFKA_NAME_PATTERN), WithJsonSchema({"type": "string"})
    ]
    # Credentials hash onto these; a replica owns whole partitions. Never change it on a running
    # cluster: the state of a credential lives in its partition.
    work_partitions: int = Field(12, ge=1, le=1000)
    replication_factor: int | None = Field(None, ge=1)  # None: min(3, brokers)
    # How long a replica that stopped answering (SIGKILL, node loss) keeps its partitions.
    session_timeout: PositiveDuration = 10.0
    heartbeat_interval: PositiveDuration = 1.0
    request_timeout: PositiveDuration = 30.0
    client_id: NonEmpty = "notifier"
