"""The SQLite store's connection: one connection on one dedicated worker thread.

Every call is handed to a single-thread executor, so the connection is only ever used by the
thread that opened it and calls are serialised in submission order. The database runs in WAL
mode with ``synchronous=FULL``: a commit is fsync'd before the method returns, which is what
lets a checkpoint (or a rotated refresh token) count as durable (cluster mode's cache, whose
durable copy is the state topic, runs with NORMAL). A call cancelled while waiting
still runs to completion on the worker: the transaction is either wholly applied or not at all.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import sqlite3
import stat
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol, Self, TypeVar

from notifier.errors import StateError
from notifier.state import sqlite_known as kn
from notifier.state import sqlite_streams as st
from notifier.state.migrations import migrate

log = logging.getLogger("notifier.state.sqlite")

T = TypeVar("T")

BUSY_TIMEOUT_MS = 10_000
# The statements use RETURNING (3.35) and JSON1's functions (built in since 3.38, compiled in
# by the distributions before). Not the -> and ->> operators: they need 3.38.
MIN_SQLITE = (3, 35, 0)
CACHE_KIB = 32 * 1024  # page cache per connection; bounds SQLite's own memory use


class StoreObserver(Protocol):
    """Told, in the event loop, how the store's operations go (the service's StoreGuard)."""

    def store_failed(self, exc: StateError) -> None:
        """An operation failed (``exc.kind``: busy, full, io or other)."""

    def store_wrote(self) -> None:
        """A write was committed: the store accepts work."""


class SqliteConnection:
    """Opens (creating parent directories and migrating) and closes the state file; runs
    calls on the worker thread, turning sqlite errors into StateError."""

    # FULL: every commit is fsync'd. A store whose file is only a cache of state kept
    # elsewhere (cluster mode) says NORMAL: still consistent after a crash, and a SIGKILL
    # loses nothing, but commits are not fsync'd (a power loss may undo the last ones).
    SYNCHRONOUS = "FULL"

    def __init__(self, path: str | Path, *, busy_timeout: float = BUSY_TIMEOUT_MS / 1000,
                 observer: StoreObserver | None = None) -> None:
        """``busy_timeout``: seconds a write waits for another connection's lock before it
        fails (a StateError of kind busy); ``observer`` hears of failures and commits."""
        self.path = Path(path)
        self._busy_ms = max(0, int(busy_timeout * 1000))
        self.observer = observer
        self._executor: ThreadPoolExecutor | None = None
        self._conn: sqlite3.Connection | None = None
        self._ids = st.StreamIds()

    # -- lifecycle ----------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def open(self) -> None:
        if self._executor is not None:
            raise StateError(f"state store {self.path} is already open")
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="notifier-state")
        try:
            await self._submit(self._open_sync)
        except BaseException:
            self._executor.shutdown(wait=True)
            self._executor = None
            raise

    def _open_sync(self) -> None:
        if sqlite3.sqlite_version_info < MIN_SQLITE:
            raise StateError(
                f"SQLite {sqlite3.sqlite_version} is too old for the state store (it needs "
                f"{'.'.join(map(str, MIN_SQLITE))} or newer, with JSON1): run the notifier on a "
                "Python whose sqlite3 module links a newer SQLite")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            _make_private(self.path)
            conn = sqlite3.connect(self.path, isolation_level=None)
        except (OSError, sqlite3.Error) as exc:
            raise StateError(f"cannot open state file {self.path}: {exc}") from exc
        try:
            conn.execute(f"PRAGMA busy_timeout = {self._busy_ms}")
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise StateError(f"state file {self.path}: cannot enable WAL (mode {mode})")
            conn.execute(f"PRAGMA synchronous = {self.SYNCHRONOUS}")
            conn.execute("PRAGMA foreign_keys = ON")
            conn.execute(f"PRAGMA cache_size = -{CACHE_KIB}")
            conn.execute("PRAGMA temp_store = FILE")
            migrate(conn, str(self.path))
        except sqlite3.Error as exc:
            conn.close()
            raise StateError(f"cannot open state file {self.path}: {exc}") from exc
        except BaseException:
            conn.close()
            raise
        self._conn = conn
        log.info("state store open: %s", self.path)

    async def close(self) -> None:
        """Close the connection and stop the worker; safe to call twice."""
        executor, self._executor = self._executor, None
        if executor is None:
            return
        try:
            await asyncio.get_running_loop().run_in_executor(executor, self._close_sync)
        finally:
            executor.shutdown(wait=True)

    def _close_sync(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                kn.flush_staging(conn, self._ids)
            except sqlite3.Error as exc:  # a restart then resumes from the written staging set
                log.warning("state store %s: resync staging not written at close: %s",
                            self.path, exc)
            try:
                conn.execute("PRAGMA optimize")
            except sqlite3.Error as exc:  # best effort; closing matters more
                log.warning("state store %s: PRAGMA optimize failed: %s", self.path, exc)
            conn.close()
            log.info("state store closed: %s", self.path)

    # -- plumbing -----------------------------------------------------------------------------

    async def _submit(self, fn: Callable[[], T]) -> T:
        if self._executor is None:
            raise StateError(f"state store {self.path} is not open")
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn)

    async def _call(self, what: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run ``fn(conn, *args, **kwargs)`` on the worker; sqlite errors become StateError
        (told to the observer, like a committed write)."""
        try:
            value, wrote = await self._submit(
                functools.partial(self._run_sync, what, fn, args, kwargs))
        except StateError as exc:
            if exc.kind is not None and self.observer is not None:
                self.observer.store_failed(exc)
            raise
        if wrote and self.observer is not None:
            self.observer.store_wrote()
        return value

    def _run_sync(
        self, what: str, fn: Callable[..., T], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[T, bool]:
        """``fn``'s value, and whether it changed rows (a committed write)."""
        conn = self._conn
        if conn is None:
            raise StateError(f"state store {self.path} is not open")
        before = conn.total_changes
        try:
            return fn(conn, *args, **kwargs), conn.total_changes != before
        except sqlite3.Error as exc:
            self._ids.clear()  # ids created in a rolled-back transaction are gone
            raise StateError(f"state store {self.path}: {what} failed: {exc}",
                             kind=error_kind(exc)) from exc
        except BaseException:
            self._ids.clear()
            raise


def error_kind(exc: sqlite3.Error) -> str:
    """busy, full, io or other, from SQLite's primary result code."""
    name = str(getattr(exc, "sqlite_errorname", "") or "")
    if name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")):
        return "busy"
    if name.startswith("SQLITE_FULL"):
        return "full"
    if name.startswith("SQLITE_IOERR"):
        return "io"
    return "other"


def _make_private(path: Path) -> None:
    """Create the state file 0600 (it holds rotated refresh tokens); tighten an existing one
    and its WAL/SHM files. SQLite creates the WAL and SHM files with the database's mode."""
    os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
    for p in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        try:
            mode = stat.S_IMODE(p.stat().st_mode)
            if mode & 0o077:
                p.chmod(mode & 0o700)
                log.warning("state file %s was readable by others (%s): made it %s", p,
                            oct(mode), oct(mode & 0o700))
        except FileNotFoundError:
            pass
