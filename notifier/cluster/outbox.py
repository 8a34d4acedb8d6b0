"""The webhook outbox in cluster mode: rows of owned partitions only, marks in their scope.

Outbox rows hang off their stream (``stream_id``) and are keyed by ``(stream, seq)``, so the
change capture ships them, and every later delivery mark (delivered, attempts and next attempt,
dead-lettered, purged), as state records of the stream's work partition: a new owner restores
them with the rest of the partition and resumes delivery where the old one stopped, with the
same ``webhook-id`` (the event id). ``ClusterOutbox`` is the store's side of that:

- the dispatcher is handed only rows of partitions this replica *serves*: owned, restored, not
  being given up, and with no transaction open (rows a page has just written to the cache are
  not delivered before that page's Kafka transaction commits);
- every mark runs in the scope of the row's partition, so it is committed to the state topic
  before the call returns; a row whose partition moved meanwhile raises PartitionLostError
  after the others are marked (the new owner delivers it again, under the same id);
- delivered marks are group-committed: the marks of one partition that wait while its scope is
  busy (the dispatcher's concurrent calls, a page's transaction) go in together in the next
  one, since a scope is a Kafka transaction (~10 ms of round trips and ~2.5 ms of CPU on a
  local broker) and a webhook call each took its own;
- counts (the ``max_pending`` cap, the metrics) cover the owned partitions only.

Replaying dead letters and re-queueing a window (``notifier webhooks``) work on one SQLite file
and are refused here.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import Callable, Sequence
from typing import Any

from notifier.errors import PartitionLostError, StateError
from notifier.state import sqlite_outbox as ob
from notifier.state.base import OutboxRow, OutboxStats
from notifier.state.sqlite_outbox_methods import OutboxMethods
from notifier.state.sqlite_tx import json_list, transaction

StreamPartition = Callable[[str, str], int | None]
PartitionScope = Callable[[int], contextlib.AbstractAsyncContextManager[None]]

_NOT_HERE = ("not available in cluster mode: the outbox lives in the state topic and each row "
             "is delivered by the replica that owns its partition")


def rows_by_stream(conn: sqlite3.Connection, where: str, params: Sequence[Any]
                   ) -> list[tuple[int, str, str]]:
    """(row id, subscription, container id) of the outbox rows matching ``where``."""
    return [(int(r[0]), str(r[1]), str(r[2])) for r in conn.execute(
        "SELECT o.row_id, s.subscription, s.container_id FROM outbox AS o"
        f" JOIN streams AS s ON s.stream_id = o.stream_id WHERE {where}", params)]


def counts_by_stream(conn: sqlite3.Connection, sink: str
                     ) -> list[tuple[str, str, str, int, float | None]]:
    """Pending and dead rows of ``sink`` per stream: (sub, cid, status, count, oldest)."""
    return [(str(r[0]), str(r[1]), str(r[2]), int(r[3]), r[4]) for r in conn.execute(
        "SELECT s.subscription, s.container_id, o.status, count(*), min(o.created_at)"
        " FROM outbox AS o JOIN streams AS s ON s.stream_id = o.stream_id"
        " WHERE o.sink = ? AND o.status IN ('pending', 'dead')"
        " GROUP BY o.stream_id, o.status", (sink,))]


def bring_forward_rows(conn: sqlite3.Connection, row_ids: Sequence[int], now: float) -> int:
    with transaction(conn):
        return conn.execute(
            "UPDATE outbox SET next_attempt_at = ? WHERE status = 'pending' AND attempts > 0"
            " AND next_attempt_at > ? AND row_id IN (SELECT value FROM json_each(?))",
            (now, now, json_list(row_ids))).rowcount


def purge_rows(conn: sqlite3.Connection, row_ids: Sequence[int], before: float) -> int:
    with transaction(conn):
        return conn.execute(
            "DELETE FROM outbox WHERE status = 'delivered' AND delivered_at < ?"
            " AND row_id IN (SELECT value FROM json_each(?))",
            (before, json_list(row_ids))).rowcount


class _Marks:
    """Delivered marks of one partition waiting for its scope, committed together; ``done``
    tells every caller the outcome."""

    def __init__(self, ids: list[int], now: float) -> None:
        self.items = [(ids, now)]
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()


class ClusterOutbox(OutboxMethods):
    """The outbox methods of ``ClusterStore`` (see the module doc)."""

    _open_marks: dict[int, _Marks]  # per partition, the marks still taking more

    def _stream_partition(self, subscription: str, container_id: str) -> int | None:
        raise NotImplementedError

    def _partition_scope(self, partition: int) -> contextlib.AbstractAsyncContextManager[None]:
        raise NotImplementedError

    def _owned_partitions(self, *, idle: bool) -> list[int]:
        """Partitions owned and restored, not being given up (``idle``: and no transaction
        open)."""
        raise NotImplementedError

    async def _by_partition(self, where: str, params: Sequence[Any]) -> dict[int, list[int]]:
        """Row ids matching ``where``, by their work partition (owned or not)."""
        out: dict[int, list[int]] = {}
        for row_id, sub, cid in await self._call("outbox rows", rows_by_stream, where, params):
            p = self._stream_partition(sub, cid)
            if p is not None:
                out.setdefault(p, []).append(row_id)
        return out

    async def _rows_of(self, row_ids: Sequence[int]) -> dict[int, list[int]]:
        return await self._by_partition("o.row_id IN (SELECT value FROM json_each(?))",
                                        (json_list(row_ids),))

    async def _in_scopes(self, groups: dict[int, list[int]],
                         write: Callable[[list[int]], Any]) -> None:
        """``write(row ids)`` for each partition's rows in its scope; PartitionLostError at the
        end if a partition refused (moved, or restoring)."""
        lost: PartitionLostError | None = None
        for p, ids in groups.items():
            try:
                async with self._partition_scope(p):
                    await write(ids)
            except PartitionLostError as exc:
                lost = exc
        if lost is not None:
            raise lost

    # -- the dispatcher's reads ------------------------------------------------------------------

    async def outbox_fetch_due(self, sink: str, now: float, limit: int) -> list[OutboxRow]:
        served = self._owned_partitions(idle=True)
        if not served:
            return []
        return await self._call("outbox fetch", ob.fetch_due, sink, now, limit, served)

    async def outbox_stats(self, sink: str) -> OutboxStats:
        owned = set(self._owned_partitions(idle=False))
        pending = dead = 0
        oldest: float | None = None
        for sub, cid, status, n, first in await self._call("outbox stats", counts_by_stream,
                                                           sink):
            if self._stream_partition(sub, cid) not in owned:
                continue
            if status == "dead":
                dead += n
            else:
                pending += n
                oldest = first if oldest is None or (first is not None and first < oldest) \
                    else oldest
        return OutboxStats(pending, oldest, dead)

    # -- marks, each in its partition's scope ----------------------------------------------------

    async def outbox_mark_delivered(self, row_ids: Sequence[int], now: float) -> None:
        groups = await self._rows_of(row_ids)
        outcomes = await asyncio.gather(*(self._mark_delivered(p, ids, now)
                                          for p, ids in groups.items()), return_exceptions=True)
        failed = [o for o in outcomes if isinstance(o, BaseException)]
        for exc in failed:  # a partition gone is the least news: the other errors first
            if not isinstance(exc, PartitionLostError):
                raise exc
        if failed:
            raise failed[0]

    async def _mark_delivered(self, p: int, ids: list[int], now: float) -> None:
        """Mark ``ids`` (rows of partition ``p``) delivered with the other marks waiting for
        the partition's scope; the first waiting caller writes them all."""
        waiting = self._open_marks.get(p)
        if waiting is not None:
            waiting.items.append((ids, now))
            return await asyncio.shield(waiting.done)
        marks = self._open_marks[p] = _Marks(ids, now)
        try:
            async with self._partition_scope(p):
                del self._open_marks[p]  # later marks wait for the next scope
                for group, at in marks.items:
                    await OutboxMethods.outbox_mark_delivered(self, group, at)
        except BaseException as exc:
            if self._open_marks.get(p) is marks:
                del self._open_marks[p]
            if isinstance(exc, asyncio.CancelledError):
                marks.done.cancel()
            else:
                marks.done.set_exception(exc)
                marks.done.exception()  # retrieved: a mark alone has no other caller
            raise
        marks.done.set_result(None)

    async def outbox_reschedule(self, row_id: int, next_attempt_at: float, attempts: int,
                                last_error: str | None) -> None:
        async def write(ids: list[int]) -> None:
            await OutboxMethods.outbox_reschedule(self, ids[0], next_attempt_at, attempts,
                                                  last_error)

        await self._in_scopes(await self._rows_of([row_id]), write)

    async def outbox_settle_failed(self, retries: Sequence[tuple[int, float, int, str | None]],
                                   dead: Sequence[tuple[int, str]], now: float) -> None:
        groups = await self._rows_of([r[0] for r in retries] + [d[0] for d in dead])

        async def write(ids: list[int]) -> None:
            mine = set(ids)
            await OutboxMethods.outbox_settle_failed(
                self, [r for r in retries if r[0] in mine], [d for d in dead if d[0] in mine],
                now)

        await self._in_scopes(groups, write)

    async def outbox_dead_letter(self, row_id: int, reason: str, now: float) -> None:
        async def write(ids: list[int]) -> None:
            await OutboxMethods.outbox_dead_letter(self, ids[0], reason, now)

        await self._in_scopes(await self._rows_of([row_id]), write)

    async def outbox_bring_forward(self, sink: str, now: float) -> int:
        groups = await self._owned_rows(
            "o.sink = ? AND o.status = 'pending' AND o.attempts > 0 AND o.next_attempt_at > ?",
            (sink, now))
        moved = 0

        async def write(ids: list[int]) -> None:
            nonlocal moved
            moved += await self._call("outbox bring forward", bring_forward_rows, ids, now)

        with contextlib.suppress(PartitionLostError):  # moved meanwhile: the new owner's now
            await self._in_scopes(groups, write)
        return moved

    async def outbox_purge_delivered(self, sink: str, before: float) -> int:
        groups = await self._owned_rows(
            "o.sink = ? AND o.status = 'delivered' AND o.delivered_at < ?", (sink, before))
        purged = 0

        async def write(ids: list[int]) -> None:
            nonlocal purged
            for i in range(0, len(ids), 10_000):
                purged += await self._call("outbox purge", purge_rows, ids[i:i + 10_000],
                                           before)

        with contextlib.suppress(PartitionLostError):
            await self._in_scopes(groups, write)
        return purged

    async def _owned_rows(self, where: str, params: Sequence[Any]) -> dict[int, list[int]]:
        owned = set(self._owned_partitions(idle=False))
        return {p: ids for p, ids in (await self._by_partition(where, params)).items()
                if p in owned}

    # -- the command line's tools ----------------------------------------------------------------

    async def dlq_replay(self, sink: str | None = None, since: float | None = None,
                         until: float | None = None) -> int:
        raise StateError(_NOT_HERE)

    async def redeliver(self, sink: str, since: float, until: float, *,
                        now: float | None = None) -> int:
        raise StateError(_NOT_HERE)
