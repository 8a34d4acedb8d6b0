"""Build a sink from its configuration block."""

from __future__ import annotations

from typing import Any

from notifier.errors import SinkConfigError
from notifier.metrics import Metrics
from notifier.sinks.base import Sink
from notifier.state.base import StateStore


def build_sink(cfg: Any, store: StateStore, metrics: Metrics | None) -> Sink:
    """The sink for one ``sinks[]`` entry; imports only what that type needs."""
    kind = cfg.type
    if kind == "jsonl":
        from notifier.sinks.jsonl import JsonlSink

        return JsonlSink(cfg.name, cfg.path, fsync=cfg.fsync)
    if kind == "stdout":
        from notifier.sinks.stdout import StdoutSink

        return StdoutSink(cfg.name, format=cfg.format)
    if kind == "kafka":
        from notifier.sinks.kafka import KafkaSink

        return KafkaSink.from_config(cfg, metrics)
    if kind == "webhook":
        from notifier.sinks.webhook import WebhookSink

        return WebhookSink(cfg.name, cfg, store, metrics or Metrics())
    raise SinkConfigError(f"unknown sink type {kind!r}", sink=cfg.name)
