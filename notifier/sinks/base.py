"""The two kinds of sink: direct sinks publish a page themselves, outbox sinks deliver later.

Every sink is an async context manager with a ``name`` and a ``healthy()`` for readiness.

A *direct* sink (Kafka, jsonl, stdout) has ``publish``, which returns only once the sink has
durably accepted every event of the batch (Kafka acks, jsonl fsynced); it raises ``SinkError``
otherwise, and the caller then leaves the sync token where it was and retries the page later.

An *outbox* sink (webhooks) has no ``publish``: its events are written to the state store's
outbox in the same transaction that commits the page's token, and the sink's own dispatcher
delivers them from there; ``notify()`` tells it new rows are waiting.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from types import TracebackType
from typing import Protocol, Self, TypeGuard, cast, runtime_checkable

from notifier.core.events import Event


class _SinkLifecycle(Protocol):
    name: str

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...

    def healthy(self) -> bool:
        """False while the destination is known to be down (drives readiness)."""
        ...


@runtime_checkable
class DirectSink(_SinkLifecycle, Protocol):
    """A sink the pipeline publishes to before it checkpoints."""

    async def publish(self, events: Sequence[Event]) -> None:
        """Durably hand over ``events`` in order, or raise SinkError."""
        ...


@runtime_checkable
class OutboxSink(_SinkLifecycle, Protocol):
    """A sink that delivers from the state store's outbox, written with the checkpoint."""

    def notify(self) -> None:
        """New rows are in the outbox: deliver them soon (called from the event loop)."""
        ...

    async def admit(self, count: int) -> None:
        """Before ``count`` events are written to the outbox: raise SinkError while the outbox
        is full (its cap policy); the page is then not committed and is retried later."""
        ...


Sink = DirectSink | OutboxSink


def split_sinks(sinks: Iterable[Sink]) -> tuple[tuple[DirectSink, ...], tuple[OutboxSink, ...]]:
    """The direct sinks and the outbox sinks of ``sinks``, each in their given order."""
    direct: list[DirectSink] = []
    outbox: list[OutboxSink] = []
    for sink in sinks:
        if _is_outbox(sink):
            outbox.append(sink)
        else:
            direct.append(cast(DirectSink, sink))
    return tuple(direct), tuple(outbox)


_OUTBOX_TYPES: dict[type, bool] = {}


def _is_outbox(sink: Sink) -> TypeGuard[OutboxSink]:
    """``isinstance(sink, OutboxSink)``, asked once per sink class: a protocol check walks the
    protocol's members every time (tens of µs), and every stream's spec splits its sinks."""
    kind = _OUTBOX_TYPES.get(type(sink))
    if kind is None:
        kind = _OUTBOX_TYPES[type(sink)] = isinstance(sink, OutboxSink)
    return kind
