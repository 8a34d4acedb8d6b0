"""Build a sink from its configuration model."""

from __future__ import annotations

from notifier.config.sinks import (
    AnySink,
    JsonlSinkConfig,
    KafkaSinkConfig,
    StdoutSinkConfig,
    WebhookSinkConfig,
)
from notifier.metrics import Metrics
from notifier.sinks.base import Sink
from notifier.state.base import StateStore


def build_sink(cfg: AnySink, store: StateStore, metrics: Metrics, *,
               transactional: bool = False) -> Sink:
    """The sink for one ``sinks[]`` entry; imports only what that type needs.
    ``transactional`` (cluster mode): a Kafka sink writes in the partition's transaction."""
    if isinstance(cfg, JsonlSinkConfig):
        from notifier.sinks.jsonl import JsonlSink

        return JsonlSink(cfg)
    if isinstance(cfg, StdoutSinkConfig):
        from notifier.sinks.stdout import StdoutSink

        return StdoutSink(cfg)
    if isinstance(cfg, KafkaSinkConfig) and transactional:
        from notifier.sinks.kafka_txn import TransactionalKafkaSink

        return TransactionalKafkaSink(cfg, metrics)
    if isinstance(cfg, KafkaSinkConfig):
        from notifier.sinks.kafka import KafkaSink

        return KafkaSink(cfg, metrics)
    assert isinstance(cfg, WebhookSinkConfig)
    from notifier.sinks.webhook import WebhookSink

    return WebhookSink(cfg.name, cfg, store, metrics)
