"""The sink interface every destination implements.

A sink is an async context manager. ``publish`` returns only once the sink has durably accepted
every event of the batch (Kafka acks, jsonl fsynced); it raises ``SinkError`` otherwise, and the
caller then leaves the sync token where it was and retries the page later.

Outbox sinks (webhooks) are different: their events are written to the state store's outbox in
the same transaction that commits the page's token, and the sink's dispatcher delivers them from
there. For those ``outbox`` is True and ``publish`` is never called by the pipeline.
"""

from __future__ import annotations

from collections.abc import Sequence
from types import TracebackType
from typing import Protocol, Self, runtime_checkable

from notifier.core.events import Event


@runtime_checkable
class Sink(Protocol):
    name: str
    outbox: bool

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...

    async def publish(self, events: Sequence[Event]) -> None:
        """Durably hand over ``events`` in order, or raise SinkError."""
        ...

    def healthy(self) -> bool:
        """False while the destination is known to be down (drives readiness)."""
        ...
