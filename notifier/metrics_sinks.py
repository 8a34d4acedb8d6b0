"""Sink metrics: what each sink accepted, its outbox, webhook deliveries and circuit breaker.

Sink names come from the configuration (bounded); see notifier.metrics for the conventions.
"""

from __future__ import annotations

from notifier.metrics_base import (
    CIRCUIT_STATES,
    DELIVERY_BUCKETS,
    PUBLISH_BUCKETS,
    PUBLISH_OUTCOMES,
    WEBHOOK_OUTCOMES,
    MetricsBase,
    nonneg,
)


class SinkMetrics(MetricsBase):
    """The sink part of ``Metrics``."""

    def _init_sinks(self) -> None:
        self._sinks: set[str] = set()
        self._circuit_states: dict[str, set[str]] = {}
        self._published = self._counter(
            "notifier_sink_events_published_total",
            "Events handed to a sink, by outcome.",
            "sink",
            "outcome",
        )
        self._publish_duration = self._histogram(
            "notifier_sink_publish_duration_seconds",
            "Time for a sink to durably accept a batch.",
            PUBLISH_BUCKETS,
            "sink",
        )
        self._sink_up = self._gauge(
            "notifier_sink_up", "1 while a sink's destination is reachable, else 0.", "sink"
        )
        self._kafka_internals_missing = self._gauge(
            "notifier_sink_kafka_internals_missing",
            "1 if the installed aiokafka lacks the internals the Kafka sink uses to abandon a "
            "dead producer (stopping one while the broker is down may then hang), else 0.",
            "sink",
        )
        self._outbox_pending = self._gauge(
            "notifier_outbox_pending_events", "Events waiting in a sink's outbox.", "sink"
        )
        self._outbox_age = self._gauge(
            "notifier_outbox_oldest_age_seconds",
            "Age of the oldest event waiting in a sink's outbox.",
            "sink",
        )
        self._outbox_limit = self._gauge(
            "notifier_outbox_pending_limit_events",
            "A sink's outbox cap (max_pending): at it, pages for the sink are not committed.",
            "sink",
        )
        self._outbox_dead = self._gauge(
            "notifier_outbox_dead_events", "Dead-lettered events kept in a sink's outbox.", "sink"
        )
        self._dead_lettered = self._counter(
            "notifier_outbox_dead_lettered_total", "Events moved to the dead letters.", "sink"
        )
        self._deliveries = self._counter(
            "notifier_webhook_deliveries_total",
            "Webhook delivery attempts, by outcome.",
            "sink",
            "outcome",
        )
        self._delivery_duration = self._histogram(
            "notifier_webhook_delivery_duration_seconds",
            "Duration of webhook delivery attempts.",
            DELIVERY_BUCKETS,
            "sink",
        )
        self._circuit = self._gauge(
            "notifier_webhook_circuit_state",
            "1 for a webhook sink's current circuit-breaker state, 0 for the others.",
            "sink",
            "state",
        )

    def _sink(self, sink: str) -> str:
        """Create a sink's alerting series at zero, so the first failure shows as a rise."""
        if sink not in self._sinks:
            self._sinks.add(sink)
            for outcome in PUBLISH_OUTCOMES:
                self._published.labels(sink, outcome)
            self._dead_lettered.labels(sink)
        return sink

    # -- sinks -------------------------------------------------------------------------------------

    def events_published(self, sink: str, outcome: str, n: int) -> None:
        """``n`` events were accepted by (ok) or failed at (error) ``sink``."""
        sink = self._sink(sink)
        outcome = self._bounded("publish outcome", outcome, PUBLISH_OUTCOMES)
        self._published.labels(sink, outcome).inc(nonneg(n))

    def publish_latency(self, sink: str, seconds: float) -> None:
        """A batch took ``seconds`` to be durably accepted by ``sink``."""
        self._publish_duration.labels(self._sink(sink)).observe(nonneg(seconds))

    def sink_up(self, sink: str, up: bool) -> None:
        """``sink``'s destination is reachable (or not)."""
        self._sink_up.labels(self._sink(sink)).set(1 if up else 0)

    def kafka_internals_missing(self, sink: str, missing: bool) -> None:
        """Whether the aiokafka internals ``sink`` relies on to stop a dead producer are there."""
        self._kafka_internals_missing.labels(self._sink(sink)).set(1 if missing else 0)

    def outbox_state(self, sink: str, pending: int, oldest_age_seconds: float, dead: int) -> None:
        """Current size and age of ``sink``'s outbox."""
        sink = self._sink(sink)
        self._outbox_pending.labels(sink).set(pending)
        self._outbox_age.labels(sink).set(nonneg(oldest_age_seconds))
        self._outbox_dead.labels(sink).set(dead)

    def outbox_limit(self, sink: str, limit: int) -> None:
        """``sink``'s outbox holds at most ``limit`` pending events."""
        self._outbox_limit.labels(self._sink(sink)).set(limit)

    def webhook_delivery(self, sink: str, outcome: str, seconds: float) -> None:
        """One webhook delivery attempt ended with ``outcome`` after ``seconds``."""
        sink = self._sink(sink)
        outcome = self._bounded("webhook outcome", outcome, WEBHOOK_OUTCOMES)
        self._deliveries.labels(sink, outcome).inc()
        self._delivery_duration.labels(sink).observe(nonneg(seconds))

    def circuit_state(self, sink: str, state: str) -> None:
        """``sink``'s circuit breaker is now in ``state`` (closed, open or half_open)."""
        sink = self._sink(sink)
        state = self._bounded("circuit state", state, CIRCUIT_STATES)
        states = self._circuit_states.setdefault(sink, set(CIRCUIT_STATES))
        states.add(state)
        for each in states:
            self._circuit.labels(sink, each).set(1 if each == state else 0)

    def dead_lettered(self, sink: str, n: int) -> None:
        """``n`` events of ``sink`` were given up on and dead-lettered."""
        self._dead_lettered.labels(self._sink(sink)).inc(nonneg(n))
