"""Synchronous SQL for the webhook outbox and its dead letters.

One table holds every outbox row; ``status`` says pending, delivered or dead (dead rows are the
dead-letter queue). Rows keep their payload after delivery so a time window can be re-delivered;
``outbox_purge_delivered`` is the retention knob. Runs only on the store's worker thread.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

from notifier.state.base import OutboxItem, OutboxRow, OutboxStats
from notifier.state.sqlite_tx import json_list, transaction

_ROW_COLUMNS = (
    "row_id, sink, event_id, ordering_key, payload, event_time, created_at, status, attempts,"
    " next_attempt_at, last_error, delivered_at, dead_at, dead_reason"
)


def _row(r: Sequence[Any]) -> OutboxRow:
    return OutboxRow(
        row_id=int(r[0]), sink=r[1], event_id=r[2], ordering_key=r[3], payload=bytes(r[4]),
        event_time=r[5], created_at=float(r[6]), status=r[7], attempts=int(r[8]),
        next_attempt_at=float(r[9]), last_error=r[10], delivered_at=r[11], dead_at=r[12],
        dead_reason=r[13],
    )


def insert_items(conn: sqlite3.Connection, items: Sequence[OutboxItem], now: float,
                 stream_id: int) -> None:
    """Queue ``items`` of the stream as pending, due at once, each with the stream's next
    ``seq`` (call inside the checkpoint's transaction)."""
    if items:
        (last,) = conn.execute("SELECT coalesce(max(seq), 0) FROM outbox WHERE stream_id = ?",
                               (stream_id,)).fetchone()
        conn.executemany(
            "INSERT INTO outbox (sink, event_id, ordering_key, payload, event_time, created_at,"
            " enqueued_at, next_attempt_at, stream_id, seq) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                (i.sink, i.event_id, i.ordering_key, i.payload, i.event_time, i.created_at,
                 now, i.created_at, stream_id, int(last) + n)
                for n, i in enumerate(items, 1)
            ),
        )


def fetch_due(conn: sqlite3.Connection, sink: str, now: float, limit: int,
              partitions: Sequence[int] | None = None) -> list[OutboxRow]:
    """Pending rows due by ``now``, oldest first, at most one per ordering key and stream: its
    oldest pending row (by ``seq``). A later row is never returned while an earlier one is
    pending, even if the earlier one is not due yet. With ``partitions`` (cluster mode, the
    connection has ``cluster_stream_partition``): only rows of streams in those partitions."""
    served = ""
    params: list[Any] = [sink, now]
    if partitions is not None:
        served = (" AND o.stream_id IN (SELECT s.stream_id FROM streams AS s"
                  " WHERE s.stream_id = o.stream_id AND cluster_stream_partition("
                  "s.subscription, s.container_id) IN (SELECT value FROM json_each(?)))")
        params.append(json_list(partitions))
    rows = conn.execute(
        f"SELECT {_ROW_COLUMNS} FROM outbox AS o INDEXED BY outbox_pending_order"
        " WHERE o.sink = ? AND o.status = 'pending' AND o.next_attempt_at <= ?"
        f"{served}"
        " AND NOT EXISTS (SELECT 1 FROM outbox AS p INDEXED BY outbox_pending_key"
        "   WHERE p.sink = o.sink AND p.status = 'pending' AND p.ordering_key = o.ordering_key"
        "   AND p.stream_id IS o.stream_id AND p.seq < o.seq)"
        " ORDER BY o.row_id LIMIT ?",
        (*params, limit),
    ).fetchall()
    return [_row(r) for r in rows]


def mark_delivered(conn: sqlite3.Connection, row_ids: Sequence[int], now: float) -> None:
    if not row_ids:
        return
    with transaction(conn):
        conn.execute(
            "UPDATE outbox SET status = 'delivered', delivered_at = ?"
            " WHERE status = 'pending' AND row_id IN (SELECT value FROM json_each(?))",
            (now, json_list(row_ids)),
        )


def reschedule(
    conn: sqlite3.Connection, row_id: int, next_attempt_at: float, attempts: int,
    last_error: str | None,
) -> None:
    with transaction(conn):
        conn.execute(
            "UPDATE outbox SET next_attempt_at = ?, attempts = ?, last_error = ?"
            " WHERE row_id = ? AND status = 'pending'",
            (next_attempt_at, attempts, last_error, row_id),
        )


def settle_failed(
    conn: sqlite3.Connection, retries: Sequence[tuple[int, float, int, str | None]],
    dead: Sequence[tuple[int, str]], now: float,
) -> None:
    """Reschedule ``retries`` (row id, next attempt, attempts, last error) and dead-letter
    ``dead`` (row id, reason) in one transaction: one fsync for a whole failed batch."""
    if not retries and not dead:
        return
    with transaction(conn):
        if retries:
            conn.executemany(
                "UPDATE outbox SET next_attempt_at = ?, attempts = ?, last_error = ?"
                " WHERE row_id = ? AND status = 'pending'",
                ((at, attempts, err, row_id) for row_id, at, attempts, err in retries),
            )
        if dead:
            conn.executemany(
                "UPDATE outbox SET status = 'dead', dead_at = ?, dead_reason = ?"
                " WHERE row_id = ? AND status = 'pending'",
                ((now, reason, row_id) for row_id, reason in dead),
            )


def bring_forward(conn: sqlite3.Connection, sink: str, now: float) -> int:
    """Make every pending row of ``sink`` waiting out a failure backoff due now; the count.
    Fetching still hands out only the oldest pending row of each relationship."""
    with transaction(conn):
        return conn.execute(
            "UPDATE outbox SET next_attempt_at = ? WHERE sink = ? AND status = 'pending'"
            " AND attempts > 0 AND next_attempt_at > ?",
            (now, sink, now),
        ).rowcount


def dead_letter(conn: sqlite3.Connection, row_id: int, reason: str, now: float) -> None:
    with transaction(conn):
        conn.execute(
            "UPDATE outbox SET status = 'dead', dead_at = ?, dead_reason = ?"
            " WHERE row_id = ? AND status = 'pending'",
            (now, reason, row_id),
        )


def stats(conn: sqlite3.Connection, sink: str) -> OutboxStats:
    pending, oldest = conn.execute(
        "SELECT count(*), min(created_at) FROM outbox WHERE sink = ? AND status = 'pending'",
        (sink,),
    ).fetchone()
    (dead,) = conn.execute(
        "SELECT count(*) FROM outbox WHERE sink = ? AND status = 'dead'", (sink,)
    ).fetchone()
    return OutboxStats(int(pending), None if oldest is None else float(oldest), int(dead))


def purge_delivered(conn: sqlite3.Connection, sink: str, before: float) -> int:
    with transaction(conn):
        return conn.execute(
            "DELETE FROM outbox WHERE sink = ? AND status = 'delivered' AND delivered_at < ?",
            (sink, before),
        ).rowcount


def _window(sink: str | None, since: float | None, until: float | None) -> tuple[str, list[Any]]:
    clauses: list[str] = []
    params: list[Any] = []
    if sink is not None:
        clauses.append(" AND sink = ?")
        params.append(sink)
    if since is not None:
        clauses.append(" AND created_at >= ?")
        params.append(since)
    if until is not None:
        clauses.append(" AND created_at < ?")
        params.append(until)
    return "".join(clauses), params


def dlq_list(
    conn: sqlite3.Connection, sink: str | None, since: float | None, until: float | None,
    limit: int,
) -> list[OutboxRow]:
    where, params = _window(sink, since, until)
    rows = conn.execute(
        f"SELECT {_ROW_COLUMNS} FROM outbox WHERE status = 'dead'{where}"
        " ORDER BY row_id LIMIT ?",
        (*params, limit),
    ).fetchall()
    return [_row(r) for r in rows]


def dlq_replay(
    conn: sqlite3.Connection, sink: str | None, since: float | None, until: float | None
) -> int:
    """Make matching dead letters pending again, except one whose relationship already had a
    later event delivered (a created event replayed after its deleted one would resurrect
    the relationship at the receiver): those stay dead."""
    where, params = _window(sink, since, until)
    with transaction(conn):
        return conn.execute(
            "UPDATE outbox AS o SET status = 'pending', attempts = 0, next_attempt_at = 0,"
            f" dead_at = NULL, dead_reason = NULL WHERE status = 'dead'{where}"
            " AND NOT EXISTS (SELECT 1 FROM outbox AS later"
            "   WHERE later.sink = o.sink AND later.ordering_key = o.ordering_key"
            "   AND later.stream_id IS o.stream_id AND later.seq > o.seq"
            "   AND later.status = 'delivered')",
            params,
        ).rowcount


def redeliver(
    conn: sqlite3.Connection, sink: str, since: float, until: float, now: float
) -> int:
    """Queue a new pending copy of every original delivered row of ``sink`` created in
    [since, until), in their original order (each after every row of its stream); copies are
    never themselves copied again."""
    with transaction(conn):
        (top,) = conn.execute("SELECT coalesce(max(seq), 0) FROM outbox").fetchone()
        return conn.execute(
            "INSERT INTO outbox (sink, event_id, ordering_key, payload, event_time, created_at,"
            " enqueued_at, next_attempt_at, origin_row_id, stream_id, seq)"
            " SELECT sink, event_id, ordering_key, payload, event_time, created_at, ?, ?, row_id,"
            " stream_id, ? + row_id"
            " FROM outbox WHERE sink = ? AND status = 'delivered' AND origin_row_id IS NULL"
            " AND created_at >= ? AND created_at < ? ORDER BY row_id",
            (now, now, int(top), sink, since, until),
        ).rowcount
