"""The webhook outbox part of the SQLite state store (the SQL is in sqlite_outbox)."""

from __future__ import annotations

import time
from collections.abc import Sequence

from notifier.state import sqlite_outbox as ob
from notifier.state.base import OutboxRow, OutboxStats
from notifier.state.sqlite_base import SqliteConnection


class OutboxMethods(SqliteConnection):
    """Queue, deliver, dead-letter and replay outbox rows (see SqliteStateStore)."""

    async def outbox_fetch_due(self, sink: str, now: float, limit: int) -> list[OutboxRow]:
        """Pending rows of ``sink`` due by ``now`` in insertion order, only the oldest pending
        row of each ordering key. Rows stay pending until marked; the dispatcher tracks what
        it has in flight."""
        return await self._call("outbox fetch", ob.fetch_due, sink, now, limit)

    async def outbox_mark_delivered(self, row_ids: Sequence[int], now: float) -> None:
        await self._call("outbox delivered", ob.mark_delivered, list(row_ids), now)

    async def outbox_reschedule(
        self, row_id: int, next_attempt_at: float, attempts: int, last_error: str | None
    ) -> None:
        await self._call(
            "outbox reschedule", ob.reschedule, row_id, next_attempt_at, attempts, last_error
        )

    async def outbox_settle_failed(
        self, retries: Sequence[tuple[int, float, int, str | None]],
        dead: Sequence[tuple[int, str]], now: float,
    ) -> None:
        """Reschedule ``retries`` (row id, next attempt at, attempts, last error) and
        dead-letter ``dead`` (row id, reason) in one durable transaction."""
        await self._call("outbox settle", ob.settle_failed, list(retries), list(dead), now)

    async def outbox_bring_forward(self, sink: str, now: float) -> int:
        """Make ``sink``'s rows waiting out a failure backoff due now (its endpoint works
        again); returns how many. Per-relationship order is kept by the fetch."""
        return await self._call("outbox bring forward", ob.bring_forward, sink, now)

    async def outbox_dead_letter(self, row_id: int, reason: str, now: float) -> None:
        """Move a pending row to the dead letters; later rows of its key become deliverable."""
        await self._call("outbox dead letter", ob.dead_letter, row_id, reason, now)

    async def outbox_stats(self, sink: str) -> OutboxStats:
        return await self._call("outbox stats", ob.stats, sink)

    async def outbox_purge_delivered(self, sink: str, before: float) -> int:
        """Delete ``sink``'s rows delivered before ``before`` (its retention); the count."""
        return await self._call("outbox purge", ob.purge_delivered, sink, before)

    async def dlq_list(
        self,
        sink: str | None = None,
        since: float | None = None,
        until: float | None = None,
        limit: int = 100,
    ) -> list[OutboxRow]:
        """Dead letters, oldest first; the window [since, until) applies to created_at."""
        return await self._call("dlq list", ob.dlq_list, sink, since, until, limit)

    async def dlq_replay(
        self, sink: str | None = None, since: float | None = None, until: float | None = None
    ) -> int:
        """Make matching dead letters pending again (attempts reset, due now); returns the
        count. They keep their place in insertion order. A dead letter whose relationship had
        a later event delivered since stays dead (replaying it would reorder the two)."""
        return await self._call("dlq replay", ob.dlq_replay, sink, since, until)

    async def redeliver(
        self, sink: str, since: float, until: float, *, now: float | None = None
    ) -> int:
        """Queue again, as new pending rows with the same event ids, the events of ``sink``
        created in [since, until) that were delivered; returns how many."""
        when = time.time() if now is None else now
        return await self._call("redeliver", ob.redeliver, sink, since, until, when)
