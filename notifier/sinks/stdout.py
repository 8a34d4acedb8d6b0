"""Print events: one readable line each on a terminal, JSON lines otherwise."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from types import TracebackType
from typing import Any, Self, TextIO

from notifier.config.sinks import StdoutSinkConfig
from notifier.core.events import ChangeKind, Event


def _entity(e: Any) -> str:
    if isinstance(e, dict):
        return f"{e.get('domain', '?')}:{e.get('type', '?')}/{e.get('id', '?')}"
    return "?"


def pretty_line(event: Event) -> str:
    rel = event.data.get("relationship") or {}
    entities = rel.get("entities") or []
    ends = " <-> ".join(_entity(e) for e in entities) if entities else "(entities not sent)"
    mark = "+" if event.kind is ChangeKind.CREATED else "-"
    snap = " [snapshot]" if event.snapshot else ""
    return (
        f"{mark} {event.kind.value:<7} {event.time or '-':<32} {event.subscription} "
        f"{event.subject}  {ends}{snap}"
    )


class StdoutSink:
    """A direct sink: writes each page to stdout (or ``stream``) as it comes."""

    def __init__(self, cfg: StdoutSinkConfig, *, stream: TextIO | None = None) -> None:
        self.name = cfg.name
        self._stream = stream or sys.stdout
        format = cfg.format
        if format == "auto":
            format = "pretty" if self._stream.isatty() else "json"
        self._pretty = format == "pretty"

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stream.flush()

    async def publish(self, events: Sequence[Event]) -> None:
        if self._pretty:
            text = "".join(pretty_line(e) + "\n" for e in events)
        else:
            text = "".join(e.structured_json().decode() + "\n" for e in events)
        self._stream.write(text)
        self._stream.flush()

    def healthy(self) -> bool:
        return True
