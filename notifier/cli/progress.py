"""``run --once`` progress on a terminal: one self-overwriting line per credential."""

from __future__ import annotations

from typing import TextIO


class TerminalProgress:
    """A ``notifier.runtime.Progress`` that draws on ``stream`` (a TTY)."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def checked(self, credential: str, done: int, total: int, changes: int) -> None:
        print(f"\r[{credential}] {done}/{total} containers checked, {changes} changes", end="",
              file=self._stream)

    def finished(self, credential: str) -> None:
        print(file=self._stream)
