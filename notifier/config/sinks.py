"""The sink sections of the config file: kafka, webhook, jsonl and stdout, a union on ``type``."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Annotated, Literal, Union, get_args

from pydantic import BeforeValidator, Field, SecretStr, WithJsonSchema

from notifier.config.base import ConfigModel, Problems, one_of
from notifier.config.kafka_security import KafkaSecurity
from notifier.config.types import (
    KAFKA_NAME_PATTERN,
    BootstrapServers,
    HeaderValue,
    HttpUrl,
    Name,
    NonEmpty,
    PositiveDuration,
    WebhookSecret,
    header_lines,
    secret_lines,
)
from notifier.core.retry_schedule import DEFAULT_RETRY_SCHEDULE
from notifier.durations import ByteSize, Duration

KIB = 1024


def _codec_available(codec: str) -> bool:
    """aiokafka compresses gzip itself; snappy, lz4 and zstd need the cramjam package."""
    return codec in ("none", "gzip") or importlib.util.find_spec("cramjam") is not None


class KafkaSinkConfig(KafkaSecurity):
    """Publish to a Kafka topic (acks=all, idempotent) in the CloudEvents Kafka binding; the TLS
    and SASL fields are ``KafkaSecurity``'s."""

    name: Name
    type: Literal["kafka"] = "kafka"
    bootstrap_servers: BootstrapServers
    topic: Annotated[
        str, Field(pattern=KAFKA_NAME_PATTERN), WithJsonSchema({"type": "string"})
    ]
    key: Literal["relationship", "container"] = "relationship"
    content_mode: Literal["binary", "structured"] = "binary"
    acks: Literal["all"] = "all"
    linger: Duration = 0.005
    max_batch_size: Annotated[ByteSize, Field(ge=1)] = 1024 * KIB
    compression: Literal["none", "gzip", "snappy", "lz4", "zstd"] = "none"
    create_topic: bool = True
    partitions: int = Field(3, ge=1)
    replication_factor: int | None = Field(None, ge=1)  # None: min(3, brokers)
    request_timeout: PositiveDuration = 30.0
    client_id: NonEmpty = "notifier"

    def _enforce_codec_available(self) -> Problems:
        if _codec_available(self.compression):
            return []
        return [(("compression",), f"{self.compression} needs the cramjam package; gzip does not")]


class CircuitBreakerConfig(ConfigModel):
    """Stop calling an endpoint after consecutive failures; probe again after ``reset_after``."""

    failure_threshold: int = Field(5, ge=1)
    reset_after: PositiveDuration = 30.0


RESERVED_HEADERS = frozenset(
    {"content-type", "content-length", "host", "transfer-encoding",
     "webhook-id", "webhook-timestamp", "webhook-signature"}
)
HEADER_NAME_PATTERN = r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$"


class WebhookSinkConfig(ConfigModel):
    """POST CloudEvents to an HTTP endpoint, signed per Standard Webhooks, from a durable outbox."""

    _secret_fields = ("secret", "secrets", "headers")

    name: Name
    type: Literal["webhook"] = "webhook"
    url: HttpUrl
    secret: WebhookSecret | None = None
    secrets: Annotated[
        list[WebhookSecret], BeforeValidator(secret_lines), Field(min_length=1)
    ] | None = None
    allow_insecure_http: bool = False
    mode: Literal["single", "batch"] = "single"
    batch_max: int = Field(50, ge=1, le=1000)
    timeout: PositiveDuration = 10.0
    max_concurrency: int = Field(4, ge=1)
    rate_per_second: float | None = Field(None, gt=0)
    retry_schedule: list[Duration] = Field(default_factory=lambda: list(DEFAULT_RETRY_SCHEDULE))
    headers: Annotated[
        dict[Annotated[str, Field(pattern=HEADER_NAME_PATTERN)], HeaderValue],
        BeforeValidator(header_lines),
    ] = Field(default_factory=dict)
    circuit_breaker: CircuitBreakerConfig = Field(default_factory=CircuitBreakerConfig)
    max_response_bytes: Annotated[ByteSize, Field(ge=0)] = 64 * KIB
    # The outbox cap: at this many pending events the pages feeding the sink are not
    # committed (polling of those streams waits, nothing is dropped) until it drains.
    max_pending: int = Field(1_000_000, ge=1)
    # Delivered events are kept this long for `notifier webhooks redeliver`, then purged.
    delivered_retention: Duration = 7 * 86400.0

    def _enforce_https_unless_allowed(self) -> Problems:
        if self.url.lower().startswith("http://") and not self.allow_insecure_http:
            return [(("url",), "must be https:// (or set allow_insecure_http: true)")]
        return []

    def _enforce_one_secret_form(self) -> Problems:
        return one_of(self, "secret", "secrets")

    def _enforce_no_reserved_headers(self) -> Problems:
        return [
            (("headers", name), "is set by the sink itself")
            for name in self.headers
            if name.lower() in RESERVED_HEADERS
        ]

    @property
    def header_values(self) -> dict[str, str]:
        """The extra headers with their (secret) values revealed, for the HTTP call only."""
        return {name: value.get_secret_value() for name, value in self.headers.items()}

    @property
    def signing_secrets(self) -> list[SecretStr]:
        """Every secret to sign with (several during a rotation)."""
        return list(self.secrets or ([self.secret] if self.secret else []))


class JsonlSinkConfig(ConfigModel):
    """Append one structured CloudEvent per line to a file, fsynced before the checkpoint."""

    name: Name
    type: Literal["jsonl"] = "jsonl"
    path: Path
    fsync: bool = True


class StdoutSinkConfig(ConfigModel):
    """Print events: readable on a terminal, JSON lines otherwise (``auto``)."""

    name: Name
    type: Literal["stdout"] = "stdout"
    format: Literal["auto", "json", "pretty"] = "auto"


SinkConfig = Annotated[
    Union[KafkaSinkConfig, WebhookSinkConfig, JsonlSinkConfig, StdoutSinkConfig],  # noqa: UP007
    Field(discriminator="type"),
]
AnySink = KafkaSinkConfig | WebhookSinkConfig | JsonlSinkConfig | StdoutSinkConfig
SINK_TYPES: tuple[str, ...] = tuple(m.model_fields["type"].default for m in get_args(AnySink))
