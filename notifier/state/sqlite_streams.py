"""Synchronous SQL for streams, known relationship ids, resync staging and announcements.

These functions run only on the store's worker thread; ``SqliteStateStore`` is their async face.
Bulk id lists are bound as one JSON array and expanded with ``json_each``, so a page is one
statement whatever its size, and nothing proportional to a stream's known set is ever loaded.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal

import orjson

from notifier.state.base import (
    Announcement,
    KnownRelationship,
    OutboxItem,
    ResyncReason,
    StreamKey,
    StreamState,
)
from notifier.state.sqlite_outbox import insert_items
from notifier.state.sqlite_tx import json_list, transaction

_STREAM_COLUMNS = (
    "subscription, container_id, sync_token, resync_cursor, in_resync, last_checked_at,"
    " last_changed_at, token_updated_at, known_count, quarantined_until, quarantine_reason,"
    " failures, filter_fingerprint, resync_reason, orphaned_at"
)


class StreamIds:
    """Maps (subscription, container) to the small integer the id tables are keyed by.

    A cache only: the owner clears it whenever a transaction rolls back, since an id created
    inside that transaction no longer exists.
    """

    def __init__(self) -> None:
        self._ids: dict[StreamKey, int] = {}

    def clear(self) -> None:
        self._ids.clear()

    def drop(self, key: StreamKey) -> None:
        self._ids.pop(key, None)

    def find(self, conn: sqlite3.Connection, key: StreamKey) -> int | None:
        sid = self._ids.get(key)
        if sid is None:
            row = conn.execute(
                "SELECT stream_id FROM streams WHERE subscription = ? AND container_id = ?", key
            ).fetchone()
            if row is None:
                return None
            sid = self._ids[key] = int(row[0])
        return sid

    def ensure(self, conn: sqlite3.Connection, key: StreamKey) -> int:
        """The stream's id, creating its row if needed (call inside a write transaction)."""
        sid = self.find(conn, key)
        if sid is None:
            cur = conn.execute(
                "INSERT INTO streams (subscription, container_id) VALUES (?, ?)", key
            )
            assert cur.lastrowid is not None
            sid = self._ids[key] = cur.lastrowid
        return sid


def _state(row: Sequence[Any]) -> StreamState:
    (sub, cont, token, cursor, in_resync, checked, changed, token_at, known, q_until, q_reason,
     failures, fingerprint, reason, orphaned) = tuple(row)
    return StreamState(
        subscription=str(sub),
        container_id=str(cont),
        sync_token=token if isinstance(token, str) else None,
        resync_cursor=cursor if isinstance(cursor, str) else None,
        in_resync=bool(in_resync),
        last_checked_at=_opt_float(checked),
        last_changed_at=_opt_float(changed),
        token_updated_at=_opt_float(token_at),
        known_count=int(known),
        quarantined_until=_opt_float(q_until),
        quarantine_reason=q_reason if isinstance(q_reason, str) else None,
        failures=int(failures),
        filter_fingerprint=fingerprint if isinstance(fingerprint, str) else None,
        resync_reason="filter" if reason == "filter" else "snapshot" if in_resync else None,
        orphaned_at=_opt_float(orphaned),
    )


def _opt_float(value: Any) -> float | None:
    return None if value is None else float(value)


def get_stream(conn: sqlite3.Connection, key: StreamKey) -> StreamState | None:
    row = conn.execute(
        f"SELECT {_STREAM_COLUMNS} FROM streams WHERE subscription = ? AND container_id = ?", key
    ).fetchone()
    return None if row is None else _state(row)


def list_streams(conn: sqlite3.Connection) -> list[StreamState]:
    rows = conn.execute(
        f"SELECT {_STREAM_COLUMNS} FROM streams ORDER BY subscription, container_id"
    ).fetchall()
    return [_state(row) for row in rows]


def mark_checked(conn: sqlite3.Connection, keys: Iterable[StreamKey], now: float) -> None:
    with transaction(conn):
        conn.executemany(
            "INSERT INTO streams (subscription, container_id, last_checked_at) VALUES (?, ?, ?)"
            " ON CONFLICT (subscription, container_id)"
            " DO UPDATE SET last_checked_at = excluded.last_checked_at",
            ((sub, cont, now) for sub, cont in keys),
        )


def quarantine(
    conn: sqlite3.Connection, ids: StreamIds, key: StreamKey, until: float, reason: str
) -> None:
    with transaction(conn):
        sid = ids.ensure(conn, key)
        conn.execute(
            "UPDATE streams SET quarantined_until = ?, quarantine_reason = ?,"
            " failures = failures + 1 WHERE stream_id = ?",
            (until, reason, sid),
        )


def clear_quarantine(conn: sqlite3.Connection, key: StreamKey, reset_failures: bool) -> None:
    with transaction(conn):
        conn.execute(
            "UPDATE streams SET quarantined_until = NULL, quarantine_reason = NULL,"
            " failures = CASE WHEN ? THEN 0 ELSE failures END"
            " WHERE subscription = ? AND container_id = ?",
            (reset_failures, *key),
        )


def forget_stream(conn: sqlite3.Connection, ids: StreamIds, key: StreamKey) -> bool:
    with transaction(conn):
        cur = conn.execute(
            "DELETE FROM streams WHERE subscription = ? AND container_id = ?", key
        )
    ids.drop(key)
    return cur.rowcount > 0


def _listed_in(
    conn: sqlite3.Connection, ids: StreamIds, key: StreamKey, rel_ids: Sequence[str],
    table: Literal["known", "resync_seen"],
) -> set[str]:
    """Which of ``rel_ids`` the stream's ``table`` holds: one indexed query per call."""
    sid = ids.find(conn, key)
    if sid is None or not rel_ids:
        return set()
    rows = conn.execute(
        "SELECT j.value FROM json_each(?) AS j WHERE EXISTS"
        f" (SELECT 1 FROM {table} AS t WHERE t.stream_id = ? AND t.rel_id = j.value)",
        (json_list(rel_ids), sid),
    )
    return {str(value) for (value,) in rows}


def known_subset(
    conn: sqlite3.Connection, ids: StreamIds, key: StreamKey, rel_ids: Sequence[str]
) -> set[str]:
    return _listed_in(conn, ids, key, rel_ids, "known")


def known_bodies(
    conn: sqlite3.Connection, ids: StreamIds, key: StreamKey, rel_ids: Sequence[str]
) -> dict[str, bytes]:
    sid = ids.find(conn, key)
    if sid is None or not rel_ids:
        return {}
    rows = conn.execute(
        "SELECT k.rel_id, k.body FROM json_each(?) AS j JOIN known AS k"
        " ON k.stream_id = ? AND k.rel_id = j.value WHERE k.body IS NOT NULL",
        (json_list(rel_ids), sid),
    )
    return {str(rid): bytes(body) for rid, body in rows}


def resync_seen_subset(
    conn: sqlite3.Connection, ids: StreamIds, key: StreamKey, rel_ids: Sequence[str]
) -> set[str]:
    return _listed_in(conn, ids, key, rel_ids, "resync_seen")


def commit_page(
    conn: sqlite3.Connection,
    ids: StreamIds,
    key: StreamKey,
    *,
    next_token: str | None,
    resync_cursor: str | None,
    in_resync: bool,
    add_ids: Sequence[str],
    remove_ids: Sequence[str],
    seen_ids: Sequence[str],
    outbox: Sequence[OutboxItem],
    bodies: Mapping[str, bytes],
    filter_fingerprint: str | None,
    changed: bool,
    now: float,
) -> None:
    """Apply one checkpoint in one transaction; see SqliteStateStore.commit_page."""
    with transaction(conn):
        sid = ids.ensure(conn, key)
        removed = added = 0
        if remove_ids:
            removed = conn.execute(
                "DELETE FROM known WHERE stream_id = ?"
                " AND rel_id IN (SELECT value FROM json_each(?))",
                (sid, json_list(remove_ids)),
            ).rowcount
        if add_ids:
            added = conn.execute(
                "INSERT OR IGNORE INTO known (stream_id, rel_id, body)"
                " SELECT ?, json_extract(value, '$[0]'),"
                " CAST(json_extract(value, '$[1]') AS BLOB) FROM json_each(?)",
                (sid, _with_bodies(add_ids, bodies)),
            ).rowcount
        if in_resync:
            if seen_ids:
                conn.execute(
                    "INSERT OR IGNORE INTO resync_seen (stream_id, rel_id)"
                    " SELECT ?, value FROM json_each(?)",
                    (sid, json_list(seen_ids)),
                )
                _fill_bodies(conn, sid, seen_ids, bodies, set(add_ids))
            if add_ids or remove_ids:
                # Now known (or announced deleted): no longer only possibly announced.
                conn.execute(
                    "DELETE FROM announced WHERE stream_id = ?"
                    " AND rel_id IN (SELECT value FROM json_each(?))",
                    (sid, json_list([*add_ids, *remove_ids])),
                )
        else:
            conn.execute("DELETE FROM resync_seen WHERE stream_id = ?", (sid,))
            conn.execute("DELETE FROM announced WHERE stream_id = ?", (sid,))
        insert_items(conn, outbox, now)
        conn.execute(
            "UPDATE streams SET"
            " sync_token = coalesce(:token, sync_token),"
            " filter_fingerprint = coalesce(:fingerprint, filter_fingerprint),"
            " resync_reason = CASE WHEN :in_resync THEN resync_reason END,"
            " token_updated_at = CASE WHEN :token IS NULL THEN token_updated_at ELSE :now END,"
            " resync_cursor = :cursor, in_resync = :in_resync,"
            " known_count = known_count + :added - :removed,"
            " last_changed_at = CASE WHEN :changed THEN :now ELSE last_changed_at END,"
            " last_checked_at = :now, failures = 0,"
            " quarantined_until = NULL, quarantine_reason = NULL"
            " WHERE stream_id = :sid",
            {
                "token": next_token, "now": now, "cursor": resync_cursor,
                "in_resync": in_resync, "added": added, "removed": removed,
                "changed": changed, "sid": sid, "fingerprint": filter_fingerprint,
            },
        )


def _with_bodies(rel_ids: Sequence[str], bodies: Mapping[str, bytes]) -> str:
    """``[[id, body], ...]`` as one JSON parameter (body null where there is none)."""
    parts = [b"[" + orjson.dumps(rid) + b"," + bodies.get(rid, b"null") + b"]"
             for rid in rel_ids]
    return (b"[" + b",".join(parts) + b"]").decode()


def _fill_bodies(conn: sqlite3.Connection, sid: int, seen_ids: Sequence[str],
                 bodies: Mapping[str, bytes], added: set[str]) -> None:
    """Give known ids a resync lists again the body they lack (ids known before bodies
    were kept); one indexed probe per id, a write only where one is missing."""
    rows = [(bodies[rid], sid, rid) for rid in seen_ids if rid not in added and rid in bodies]
    if rows:
        conn.executemany(
            "UPDATE known SET body = ? WHERE stream_id = ? AND rel_id = ? AND body IS NULL",
            rows,
        )


def begin_resync(
    conn: sqlite3.Connection, ids: StreamIds, key: StreamKey, cursor: str | None,
    reason: ResyncReason, filter_fingerprint: str | None,
) -> None:
    with transaction(conn):
        sid = ids.ensure(conn, key)
        conn.execute("DELETE FROM resync_seen WHERE stream_id = ?", (sid,))
        conn.execute(
            "UPDATE streams SET in_resync = 1, resync_cursor = ?, resync_reason = ?,"
            " filter_fingerprint = coalesce(?, filter_fingerprint) WHERE stream_id = ?",
            (cursor, reason, filter_fingerprint, sid),
        )


def resync_missing_batch(
    conn: sqlite3.Connection, ids: StreamIds, key: StreamKey, after: str | None, batch: int
) -> list[KnownRelationship]:
    """Up to ``batch`` known ids greater than ``after`` that the resync has not seen, in order.

    Keyset pagination: each call is a fresh query, so removing returned ids between calls is
    safe and memory stays proportional to ``batch``.
    """
    sid = ids.find(conn, key)
    if sid is None:
        return []
    rows = conn.execute(
        "SELECT k.rel_id, k.body FROM known AS k WHERE k.stream_id = ?"
        + ("" if after is None else " AND k.rel_id > ?")
        + " AND NOT EXISTS (SELECT 1 FROM resync_seen AS s"
        " WHERE s.stream_id = k.stream_id AND s.rel_id = k.rel_id)"
        " ORDER BY k.rel_id LIMIT ?",
        (sid, batch) if after is None else (sid, after, batch),
    )
    return [KnownRelationship(str(rel_id), None if body is None else bytes(body))
            for rel_id, body in rows]


def mark_announced(
    conn: sqlite3.Connection, ids: StreamIds, key: StreamKey, items: Sequence[Announcement]
) -> None:
    """Record created events about to be published, in one transaction (the newest body wins)."""
    with transaction(conn):
        sid = ids.ensure(conn, key)
        conn.executemany(
            "INSERT INTO announced (stream_id, rel_id, created_on, raw) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (stream_id, rel_id) DO UPDATE SET"
            " created_on = excluded.created_on, raw = excluded.raw",
            ((sid, a.rel_id, a.created_on, a.raw) for a in items),
        )


def announced_missing_batch(
    conn: sqlite3.Connection, ids: StreamIds, key: StreamKey, after: str | None, batch: int
) -> list[Announcement]:
    """Up to ``batch`` announcements greater than ``after``, neither known nor seen by the
    current resync, in id order (keyset pagination, as ``resync_missing_batch``)."""
    sid = ids.find(conn, key)
    if sid is None:
        return []
    rows = conn.execute(
        "SELECT a.rel_id, a.created_on, a.raw FROM announced AS a WHERE a.stream_id = ?"
        + ("" if after is None else " AND a.rel_id > ?")
        + " AND NOT EXISTS (SELECT 1 FROM resync_seen AS s"
        " WHERE s.stream_id = a.stream_id AND s.rel_id = a.rel_id)"
        " AND NOT EXISTS (SELECT 1 FROM known AS k"
        " WHERE k.stream_id = a.stream_id AND k.rel_id = a.rel_id)"
        " ORDER BY a.rel_id LIMIT ?",
        (sid, batch) if after is None else (sid, after, batch),
    )
    return [Announcement(str(rid), str(created), bytes(raw)) for rid, created, raw in rows]
