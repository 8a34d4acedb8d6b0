"""One process per state file: an exclusive ``flock`` on ``<state file>.lock``.

Two processes on one state file (a ``run --once`` cron next to the running service) would both
rotate the refresh tokens, so one of them ends with ``invalid_grant``, and both would
checkpoint the same streams. ``StateLock`` makes the second one stop before it touches
anything, naming the holder (pid, host, command) that the first wrote into the lock file.

The kernel releases a ``flock`` when its holder exits, however it exits: a crash never leaves a
stale lock behind, and the holder text of a dead process is simply overwritten.
"""

from __future__ import annotations

import fcntl
import os
import socket
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import IO, Self

import orjson

from notifier.errors import StateLockedError


def lock_path(state_path: str | os.PathLike[str]) -> Path:
    """Where the lock of a state file lives: next to it, ``.lock`` appended."""
    p = Path(state_path)
    return p.with_name(p.name + ".lock")


def describe_holder(raw: bytes) -> str:
    """A readable "pid N on host H (command: ...)" from the lock file's contents."""
    try:
        info = orjson.loads(raw)
    except orjson.JSONDecodeError:
        info = None
    if not isinstance(info, dict):
        return "another process (it has not written its details yet)"
    return (f"pid {info.get('pid', '?')} on host {info.get('host', '?')} "
            f"(command: {info.get('command', '?')})")


class StateLock:
    """``with StateLock(state_path):`` holds the lock, or raises ``StateLockedError``."""

    def __init__(self, state_path: str | os.PathLike[str]) -> None:
        self.state_path = Path(state_path)
        self.path = lock_path(state_path)
        self._file: IO[bytes] | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        f = os.fdopen(fd, "r+b")
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = describe_holder(f.read(4096))
            f.close()
            raise StateLockedError(
                f"state file {self.state_path} is in use by {holder}; only one "
                f"notifier process may use a state file (stop the other one, or give this one "
                f"its own state.path)"
            ) from None
        except BaseException:
            f.close()
            raise
        info = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "command": " ".join(sys.orig_argv),
            "since": time.time(),
        }
        f.truncate(0)
        f.write(orjson.dumps(info))
        f.flush()
        self._file = f

    def release(self) -> None:
        f, self._file = self._file, None
        if f is not None:
            f.close()  # closing drops the flock

    def __enter__(self) -> Self:
        self.acquire()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()
