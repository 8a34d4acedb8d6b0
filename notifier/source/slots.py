"""A counting semaphore whose free slot is taken without a coroutine: ``Slots``.

The client holds two of these around every request (its concurrency, and the share of it
checks may hold). ``asyncio.Semaphore`` costs a coroutine and a few Python calls even when a
slot is free (~2 µs each way at every container check); here a free slot is one comparison:

    if not slots.take():
        await slots.wait()
    try:
        ...
    finally:
        slots.give()

A request holds two (``take_both``, else ``wait_both``; ``give`` each after).

First come, first served: nobody takes a slot past a waiter, and ``give`` hands the slot
straight to the longest waiting caller (its ``wait`` returns holding it).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque


class Slots:
    """``n`` slots: ``take`` one now or ``wait`` for one, ``give`` it back."""

    def __init__(self, n: int) -> None:
        if n < 1:
            raise ValueError(f"slots must be >= 1, got {n}")
        self._free = n
        self._waiters: deque[asyncio.Future[None]] = deque()

    @property
    def free(self) -> int:
        return self._free

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    def take(self) -> bool:
        """Take a free slot now (True), unless none is free or someone waits for one."""
        if self._free > 0 and not self._waiters:
            self._free -= 1
            return True
        return False

    async def wait(self) -> None:
        """Wait in line for a slot; the caller holds it on return. Cancelled, it holds none
        (a slot handed over as it was cancelled goes on to the next in line)."""
        future = asyncio.get_running_loop().create_future()
        self._waiters.append(future)
        try:
            await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                self.give()  # handed a slot, then cancelled before running: pass it on
            else:
                with contextlib.suppress(ValueError):
                    self._waiters.remove(future)
            raise

    def give(self) -> None:
        """Give a slot back: to the longest waiting caller, else to the free ones."""
        waiters = self._waiters
        while waiters:
            future = waiters.popleft()
            if not future.done():
                future.set_result(None)
                return
        self._free += 1


def take_both(first: Slots, second: Slots) -> bool:
    """Take a slot of each now (True), or of neither: ``wait_both`` then."""
    if (first._free > 0 and second._free > 0
            and not first._waiters and not second._waiters):
        first._free -= 1
        second._free -= 1
        return True
    return False


async def wait_both(first: Slots, second: Slots) -> None:
    """Wait in line for a slot of ``first``, then (holding it) of ``second``; on return the
    caller holds both, cancelled it holds neither."""
    if not first.take():
        await first.wait()
    try:
        if not second.take():
            await second.wait()
    except BaseException:
        first.give()
        raise
