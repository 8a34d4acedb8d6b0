"""Every refresh outcome of a credential, passed to the metrics and recorded in the state store,
so that ``notifier auth status`` (another process) can say when it last refreshed and failed."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Protocol

from notifier.source.auth import RefreshObserver

log = logging.getLogger(__name__)


class OutcomeStore(Protocol):
    async def record_credential_outcome(self, credential: str, outcome: str,
                                        now: float | None = None) -> None: ...


class RefreshRecorder:
    """A ``RefreshObserver``: tells ``observers`` at once, writes the store in the background
    (a refresh never waits for this bookkeeping, and a failed write is only logged)."""

    def __init__(self, store: OutcomeStore, *observers: RefreshObserver,
                 clock: Callable[[], float] = time.time) -> None:
        self._store = store
        self._observers = observers
        self._clock = clock
        self._pending: set[asyncio.Task[None]] = set()

    def on_refresh(self, credential: str, outcome: str) -> None:
        for observer in self._observers:
            observer.on_refresh(credential, outcome)
        task = asyncio.get_running_loop().create_task(
            self._record(credential, outcome, self._clock()))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def drain(self) -> None:
        """Wait for the writes in flight (tests, shutdown)."""
        while self._pending:
            await asyncio.gather(*list(self._pending))

    async def _record(self, credential: str, outcome: str, now: float) -> None:
        try:
            await self._store.record_credential_outcome(credential, outcome, now)
        except Exception as exc:
            log.warning("credential %s: cannot record the refresh outcome %s (%s)",
                        credential, outcome, type(exc).__name__)
