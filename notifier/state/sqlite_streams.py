"""Synchronous SQL for streams: their rows, ids, check times and quarantine.

These functions run only on the store's worker thread; ``SqliteStateStore`` is their async face.
Known ids, checkpoints, resync staging and announcements are in ``sqlite_known``.
"""

from __future__ import annotations

import sqlite3
import sys
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import orjson

from notifier.state import sqlite_checks as checks
from notifier.state.base import GroupKey, StreamCheckState, StreamKey, StreamState
from notifier.state.sqlite_keys import Staging
from notifier.state.sqlite_tx import transaction

_STREAM_COLUMNS = (
    "subscription, container_id, sync_token, resync_cursor, in_resync, last_checked_at,"
    " last_changed_at, token_updated_at, known_count, quarantined_until, quarantine_reason,"
    " failures, filter_fingerprint, resync_reason, orphaned_at, stream_id, staged_cursor"
)


class StreamIds:
    """Maps (subscription, container) to the small integer the id tables are keyed by.

    A cache only: the owner clears it whenever a transaction rolls back, since an id created
    inside that transaction no longer exists. ``staging`` (the resync ids held in memory, by
    stream id) is not a cache and survives ``clear``: it changes only with committed writes.
    """

    def __init__(self) -> None:
        self._ids: dict[StreamKey, int] = {}
        self.staging = Staging()
        # Known ids added by a page get chunk numbers, this many ids to a chunk (cluster mode:
        # a chunk is one state-topic record); None: no chunks (the column stays NULL).
        self.chunk_rows: int | None = None

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
            self.staging.drop(sid)  # a reused id: nothing held belongs to this new stream
        return sid


def _state(row: Sequence[Any], staging: Staging) -> StreamState:
    """A ``streams`` row as a StreamState. Runs for every stream at start-up (100,000 rows
    with as many subscriptions), so the conversions are inline and the fields positional."""
    (sub, cont, token, cursor, in_resync, checked, changed, token_at, known, q_until, q_reason,
     failures, fingerprint, reason, orphaned, sid, staged) = row
    if sid not in staging:
        # What this process listed is gone with it: resume where the staging set reaches.
        cursor = staged
    return StreamState(
        # Interned: the configuration's names and container ids are (config.types), so at
        # start-up 100,000 rows share their strings instead of holding copies.
        _intern(sub), _intern(cont),
        token if type(token) is str else None,
        cursor if type(cursor) is str else None,
        bool(in_resync),
        None if checked is None else float(checked),
        None if changed is None else float(changed),
        None if token_at is None else float(token_at),
        int(known),
        None if q_until is None else float(q_until),
        q_reason if type(q_reason) is str else None,
        int(failures),
        _intern(fingerprint) if type(fingerprint) is str else None,  # one per filter
        "filter" if reason == "filter" else "snapshot" if in_resync else None,
        None if orphaned is None else float(orphaned),
    )


def _intern(value: object) -> str:
    return sys.intern(value) if type(value) is str else str(value)


def get_stream(conn: sqlite3.Connection, ids: StreamIds, key: StreamKey
               ) -> StreamState | None:
    row = conn.execute(
        f"SELECT {_STREAM_COLUMNS} FROM streams WHERE subscription = ? AND container_id = ?", key
    ).fetchone()
    if row is None:
        return None
    st = _state(row, ids.staging)
    at = checks.stream_stamp(conn, *key)
    if at is not None and (st.last_checked_at is None or at > st.last_checked_at):
        st = replace(st, last_checked_at=at)
    return st


def list_streams(conn: sqlite3.Connection, ids: StreamIds) -> list[StreamState]:
    # Row by row from the cursor, not fetchall(): at 100,000 streams the rows alone are
    # tens of MB, and each is dropped once converted (start-up's peak memory).
    found = checks.check_stamps(conn)
    cur = conn.execute(
        f"SELECT {_STREAM_COLUMNS} FROM streams ORDER BY subscription, container_id")
    staging = ids.staging
    out = [_state(row, staging) for row in cur]
    if found:
        for i, st in enumerate(out):
            at = checks.covering(found, st.subscription, st.container_id, st.last_checked_at)
            if at != st.last_checked_at:
                out[i] = replace(st, last_checked_at=at)
    return out


def stream_checks(conn: sqlite3.Connection) -> list[StreamCheckState]:
    # The rows as they come (no conversion per row: the columns have the types they name);
    # their own check times: the caller combines them with check_stamps, per group (per row
    # here, that costs start-up ~0.4 s at 100,000 streams).
    return list(map(StreamCheckState._make, conn.execute(
        "SELECT subscription, container_id, sync_token, in_resync, last_checked_at,"
        " quarantined_until, quarantine_reason, failures FROM streams")))


def mark_checked(conn: sqlite3.Connection, keys: Sequence[StreamKey], now: float,
                 groups: Sequence[GroupKey] = ()) -> None:
    # One statement over the keys bound as one JSON array (thousands a batch): no Python per
    # row, and the GIL is released once for all of it, not once per row as with executemany
    # (the event loop runs meanwhile). Whole groups are one row each (sqlite_checks).
    with transaction(conn):
        if keys:
            conn.execute(
                "INSERT INTO streams (subscription, container_id, last_checked_at)"
                " SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]'), ?1"
                " FROM json_each(?2) WHERE true"
                " ON CONFLICT (subscription, container_id)"
                " DO UPDATE SET last_checked_at = excluded.last_checked_at",
                (now, orjson.dumps(keys).decode()),
            )
        if groups:
            checks.stamp(conn, groups, now)


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
        checks.fold_containers(conn, [key[1]])
        rows = conn.execute(
            "DELETE FROM streams WHERE subscription = ? AND container_id = ? RETURNING stream_id",
            key).fetchall()
    ids.drop(key)
    for (sid,) in rows:
        ids.staging.drop(int(sid))
    return bool(rows)
