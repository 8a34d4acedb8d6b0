"""Background tasks: random changes at ``knobs.change_rate``, and the time-based retention."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from notifier.simulator.state import SimState

log = logging.getLogger(__name__)

TICK = 0.05
IDLE_TICK = 0.2


class ChangeGenerator:
    """Creates (~70%) and deletes (~30%) relationships at the configured rate until stopped.

    The rate is read on every tick, so changing ``state.knobs.change_rate`` takes effect at once.
    """

    def __init__(self, state: SimState) -> None:
        self.state = state
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.changes = 0
        self._marks: dict[str, int] = {}
        self._marked_at: float | None = None

    def start(self) -> None:
        self._stop.clear()
        self._task = asyncio.create_task(self._run(), name="sim-change-generator")

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            await self._task
            self._task = None

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        owed = 0.0
        last = loop.time()
        while not self._stop.is_set():
            rate = self.state.knobs.change_rate
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), TICK if rate > 0 else IDLE_TICK)
            now = loop.time()
            self._retain(now)
            rate = self.state.knobs.change_rate  # again: a rate set to 0 meanwhile stops now
            owed = owed + rate * (now - last) if rate > 0 else 0.0
            last = now
            while owed >= 1.0:
                owed -= 1.0
                try:
                    self.state.random_change()
                except Exception:
                    log.exception("change generator failed")
                    return
                self.changes += 1

    def _retain(self, now: float) -> None:
        """Every ``retention`` seconds, move each horizon to where the log was one period ago."""
        period = self.state.knobs.retention
        if period <= 0:
            self._marked_at = None
            self._marks.clear()
            return
        if self._marked_at is not None and now - self._marked_at < period:
            return
        for cid, c in self.state.containers.items():
            mark = self._marks.get(cid)
            if mark is not None and mark > c.horizon:
                c.horizon = mark
                c.status_memo.clear()
            self._marks[cid] = c.seq
        self._marked_at = now
