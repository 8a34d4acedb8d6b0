"""Hands a page's events to the sinks of its subscription: direct sinks publish now, outbox
sinks get outbox rows for the page's checkpoint. Every sink is counted and timed alike."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from datetime import datetime

from notifier.core.events import Event
from notifier.errors import SinkError
from notifier.metrics import Metrics
from notifier.sinks.base import DirectSink, OutboxSink
from notifier.state.base import OutboxItem

LAG_SAMPLES = 16  # detection-lag observations per page at most


def parse_time(value: str) -> float | None:
    try:
        return datetime.fromisoformat(value).timestamp()
    except (TypeError, ValueError):
        return None


class Publisher:
    """Hands a page's events to every sink of a subscription; all must accept."""

    def __init__(self, metrics: Metrics, clock: Callable[[], float] = time.time) -> None:
        self._metrics = metrics
        self._clock = clock

    async def _timed(self, sink: DirectSink, events: Sequence[Event]) -> None:
        """One sink's publish, counted and timed here for every sink alike."""
        started = time.perf_counter()
        try:
            await sink.publish(events)
        except BaseException:
            self._metrics.events_published(sink.name, "error", len(events))
            raise
        self._metrics.events_published(sink.name, "ok", len(events))
        self._metrics.publish_latency(sink.name, time.perf_counter() - started)

    async def publish(
        self, events: Sequence[Event], *, direct: Sequence[DirectSink] = (),
        outbox: Sequence[OutboxSink] = (),
    ) -> list[OutboxItem]:
        """Publish to the ``direct`` sinks; return the outbox rows for the ``outbox`` sinks."""
        if not events:
            return []
        for s in outbox:  # an outbox at its cap refuses the page (it is retried later)
            await s.admit(len(events))
        results = await asyncio.gather(
            *(self._timed(s, events) for s in direct), return_exceptions=True
        )
        failure: BaseException | None = None
        for res in results:
            if isinstance(res, BaseException) and failure is None:
                failure = res
        if failure is not None:
            if isinstance(failure, SinkError):
                raise failure
            if isinstance(failure, Exception):
                raise SinkError(f"unexpected error: {failure!r}") from failure
            raise failure
        if not outbox:
            return []
        now = self._clock()
        payloads = [e.structured_json() for e in events]  # once, whatever the sink count
        return [
            OutboxItem(sink=sink.name, event_id=e.id, ordering_key=e.subject, payload=payload,
                       event_time=e.time, created_at=now)
            for sink in outbox
            for e, payload in zip(events, payloads, strict=True)
        ]

    def observe_lag(self, events: Sequence[Event]) -> None:
        """Detection lag of the page's change events, sampled: at most LAG_SAMPLES evenly
        spread ones per page (a histogram observation costs more than building the event)."""
        now = self._clock()
        changes = [e for e in events if not e.snapshot]
        step = max(1, -(-len(changes) // LAG_SAMPLES))
        for e in changes[::step]:
            t = parse_time(e.time)
            if t is not None:
                self._metrics.detection_lag(max(0.0, now - t))
