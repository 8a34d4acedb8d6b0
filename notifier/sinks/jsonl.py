"""Append events to a file, one structured CloudEvent per line, fsynced before the checkpoint."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Self

from notifier.core.events import Event
from notifier.errors import SinkError

log = logging.getLogger(__name__)


def _drop_torn_tail(path: Path) -> int:
    """Cut an unterminated last line (a write cut short by a crash); returns bytes dropped."""
    try:
        with open(path, "rb+") as f:
            size = f.seek(0, os.SEEK_END)
            if size == 0:
                return 0
            f.seek(size - 1)
            if f.read(1) == b"\n":
                return 0
            # Scan back for the last newline, in blocks.
            pos = size
            keep = 0
            while pos > 0:
                step = min(65536, pos)
                pos -= step
                f.seek(pos)
                block = f.read(step)
                idx = block.rfind(b"\n")
                if idx >= 0:
                    keep = pos + idx + 1
                    break
            f.truncate(keep)
            f.flush()
            os.fsync(f.fileno())
            return size - keep
    except FileNotFoundError:
        return 0


class JsonlSink:
    outbox = False

    def __init__(self, name: str, path: str | os.PathLike[str], *, fsync: bool = True) -> None:
        self.name = name
        self.path = Path(path)
        self._fsync = fsync
        self._file: IO[bytes] | None = None
        self._lock = asyncio.Lock()
        self._ok = True

    async def __aenter__(self) -> Self:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            dropped = _drop_torn_tail(self.path)
            self._file = open(self.path, "ab")  # noqa: SIM115, ASYNC230 - once, at startup
        except OSError as exc:
            raise SinkError(f"cannot open {self.path}: {exc.strerror}", sink=self.name) from exc
        if dropped:
            log.warning("jsonl sink %s: dropped %d bytes of an unfinished last line in %s "
                        "(a write cut short; its page was not checkpointed and is sent again)",
                        self.name, dropped, self.path)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def _write(self, blob: bytes) -> None:
        assert self._file is not None
        self._file.write(blob)
        self._file.flush()
        if self._fsync:
            os.fsync(self._file.fileno())

    async def publish(self, events: Sequence[Event]) -> None:
        if not events:
            return
        if self._file is None:
            raise SinkError("sink is not open", sink=self.name)
        blob = b"".join(e.structured_json() + b"\n" for e in events)
        async with self._lock:
            try:
                await asyncio.to_thread(self._write, blob)
            except OSError as exc:
                self._ok = False
                msg = f"write to {self.path} failed: {exc.strerror}"
                raise SinkError(msg, sink=self.name) from exc
        self._ok = True

    def healthy(self) -> bool:
        return self._ok
