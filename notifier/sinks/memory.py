"""An in-memory sink for tests: records events, can be told to fail."""

from __future__ import annotations

from collections.abc import Sequence
from types import TracebackType
from typing import Self

from notifier.core.events import Event
from notifier.errors import SinkError


class MemorySink:
    """A direct sink that keeps what it is given in ``events``."""

    def __init__(self, name: str = "memory") -> None:
        self.name = name
        self.events: list[Event] = []
        self.fail = False

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        return None

    async def publish(self, events: Sequence[Event]) -> None:
        if self.fail:
            raise SinkError("memory sink told to fail", sink=self.name)
        self.events.extend(events)

    def healthy(self) -> bool:
        return not self.fail
