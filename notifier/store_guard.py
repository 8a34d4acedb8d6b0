"""What the service does while its state store fails: pause, back off, retry, never exit.

A state-store error (the file locked past ``state.busy_timeout``, a full disk, an I/O error)
is not a stream's fault, and nothing of the failed operation is lost: a checkpoint is one
transaction, so a page whose checkpoint failed is fetched and published again later (same
event ids, the at-least-once contract); a webhook delivery that could not be recorded stays
pending and goes out again. So the store tells one ``StoreGuard`` (its observer) of every
failed operation and every committed write. The schedulers' workers wait on it (the webhook
dispatchers and hub discovery back off on their own): after a failure they pause with a
backoff that doubles with each failed round of retries (1 s to 30 s; failures of work already
under way when the pause began are no new round), ``/readyz`` answers 503,
``notifier_state_store_up`` is 0 and ``notifier_state_store_errors_total{kind}`` counts the
failures; the first committed write clears all of that.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from notifier.core.backoff import backoff_ceiling
from notifier.errors import StateError
from notifier.runtime import LogThrottle
from notifier.server import HealthState
from notifier.store_metrics import StoreMetrics

log = logging.getLogger(__name__)

PAUSE_INITIAL = 1.0
PAUSE_MAX = 30.0


class StoreGuard:
    """The state store's observer (``SqliteConnection(observer=...)``), shared by every loop
    of the process; ``now`` is ``time.monotonic`` by default."""

    def __init__(
        self,
        metrics: StoreMetrics,
        health: HealthState | None = None,
        *,
        initial: float = PAUSE_INITIAL,
        maximum: float = PAUSE_MAX,
        now: Callable[[], float] = time.monotonic,
    ) -> None:
        self._metrics = metrics
        self._health = health
        self._initial = initial
        self._maximum = maximum
        self._now = now
        self._failures = 0  # operations failed since the last committed write
        self._rounds = 0  # of them, those that began a pause: the backoff's exponent
        self._paused_until = float("-inf")
        self._log = LogThrottle(monotonic=now)

    @property
    def failing(self) -> bool:
        return self._failures > 0

    def store_failed(self, exc: StateError) -> None:
        """An operation failed: pause every loop, longer for each failed round of retries."""
        self._failures += 1
        kind = exc.kind or "other"
        now = self._now()
        if now >= self._paused_until:  # not work that began before the current pause
            self._rounds += 1
            delay = backoff_ceiling(self._rounds - 1, base=self._initial, cap=self._maximum)
            self._paused_until = now + delay
        delay = self._paused_until - now
        self._metrics.failed(kind)
        if self._health is not None:
            self._health.store_open(False, f"state store failing ({kind})")
        if self._failures == 1:
            log.error("state store failed (%s): %s; work pauses and is retried with backoff, "
                      "nothing is lost", kind, exc)
            self._log.allow("failed")
        elif (suppressed := self._log.allow("failed")) is not None:
            log.warning("state store still failing (%s, %d failures in a row, %d since the "
                        "last report): %s; pausing %.0fs", kind, self._failures, suppressed,
                        exc, delay)

    def store_wrote(self) -> None:
        """A write was committed: the store works (again)."""
        if not self._failures:
            return
        log.warning("state store works again after %d failures; resuming", self._failures)
        self._failures = self._rounds = 0
        self._paused_until = float("-inf")
        self._metrics.works()
        if self._health is not None:
            self._health.store_open(True)

    def pause_left(self) -> float:
        """Seconds until work may touch the store again (0: now)."""
        return max(0.0, self._paused_until - self._now())

    async def wait(self, stop: asyncio.Event) -> None:
        """Return once the pause is over (at once if there is none), or when ``stop`` is set."""
        left = self.pause_left()
        if left > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), left)

    async def run(self, stop: asyncio.Event, work: Callable[..., Awaitable[None]],
                  *args: Any) -> bool:
        """Wait out a pause, then ``await work(*args)``. False if a stop came first or the
        store failed in it: that failure is counted and paused on, the work is retried later."""
        await self.wait(stop)
        if stop.is_set():
            return False
        try:
            await work(*args)
        except StateError as exc:
            log.debug("work paused by a state store failure: %s", exc)
            return False
        return True
