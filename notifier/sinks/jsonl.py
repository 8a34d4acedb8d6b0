"""Append events to a file, one structured CloudEvent per line, fsynced before the checkpoint.

A page is one unbuffered append. When a write or its fsync fails (ENOSPC, EIO, a file size
limit), part of the page may already be in the file: the file is cut back to where the page
began, at once if possible, else before the next write, so that the retried page never lands
after a partial line (or after a half of itself).
"""

from __future__ import annotations

import asyncio
import logging
import os
import stat
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Self

from notifier.config.sinks import JsonlSinkConfig
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
    """A direct sink: appends each page to ``cfg.path`` and fsyncs before returning."""

    def __init__(self, cfg: JsonlSinkConfig) -> None:
        self.name = cfg.name
        self.path = Path(cfg.path)
        self._fsync = cfg.fsync
        self._fd: int | None = None
        self._lock = asyncio.Lock()
        self._ok = True
        # Where the failed page began, while the file may still hold part of it.
        self._cut_to: int | None = None

    async def __aenter__(self) -> Self:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            dropped = _drop_torn_tail(self.path)
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
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
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def _repair(self, fd: int) -> None:
        """Cut the file back to where a failed page began (raises OSError if it cannot)."""
        assert self._cut_to is not None
        size = os.fstat(fd).st_size
        if size >= self._cut_to:
            os.ftruncate(fd, self._cut_to)
            os.fsync(fd)
            dropped = size - self._cut_to
        else:  # the file was truncated or rotated meanwhile: only a torn tail can be left
            dropped = _drop_torn_tail(self.path)
        self._cut_to = None
        if dropped:
            log.warning("jsonl sink %s: cut %d bytes of a failed write from %s (its page is "
                        "written again)", self.name, dropped, self.path)

    def _write(self, blob: bytes) -> None:
        fd = self._fd
        assert fd is not None
        if self._cut_to is not None:
            self._repair(fd)
        st = os.fstat(fd)
        start = st.st_size if stat.S_ISREG(st.st_mode) else None  # a pipe cannot be cut
        try:
            view = memoryview(blob)
            while view:
                view = view[os.write(fd, view):]
            if self._fsync:
                os.fsync(fd)
        except OSError:
            if start is None:
                raise
            self._cut_to = start
            try:
                self._repair(fd)
            except OSError:  # the disk refuses even that: try again before the next write
                pass
            raise

    async def publish(self, events: Sequence[Event]) -> None:
        if not events:
            return
        if self._fd is None:
            raise SinkError("sink is not open", sink=self.name)
        blob = b"".join(e.structured_json() + b"\n" for e in events)
        async with self._lock:
            try:
                await asyncio.to_thread(self._write, blob)
            except OSError as exc:
                self._ok = False
                msg = f"write to {self.path} failed: {exc.strerror or type(exc).__name__}"
                raise SinkError(msg, sink=self.name) from exc
        self._ok = True

    def healthy(self) -> bool:
        return self._ok
