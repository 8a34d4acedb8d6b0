"""Applying state-topic records to the SQLite cache (a restore), without capturing them again.

Records arrive in topic order; the latest value of a key wins and a tombstone deletes. A
child row may come before its stream's row (compaction keeps only a stream's latest record,
written after its children's older ones): the stream row is then created bare and filled in
when its record comes. Column names are taken only if the local table has them, so a record
written by another release adds what it can and never injects SQL.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

from notifier.cluster.capture import Table, set_capture
from notifier.cluster.records import RowKey, decode_key, decode_row


def _stream_id(conn: sqlite3.Connection, sub: str, cid: str, ids: dict[tuple[str, str], int]
               ) -> int:
    sid = ids.get((sub, cid))
    if sid is None:
        conn.execute("INSERT OR IGNORE INTO streams (subscription, container_id) VALUES (?, ?)",
                     (sub, cid))
        row = conn.execute("SELECT stream_id FROM streams WHERE subscription = ? AND "
                           "container_id = ?", (sub, cid)).fetchone()
        sid = ids[(sub, cid)] = int(row[0])
    return sid


def _upsert(conn: sqlite3.Connection, t: Table, key: RowKey, row: dict[str, Any],
            ids: dict[tuple[str, str], int]) -> None:
    cols = {k: v for k, v in row.items() if k in t.columns and k != "stream_id"}
    if t.kind == "stream":
        cols.update(subscription=key.subscription, container_id=key.container_id)
        names = list(cols)
        sets = ", ".join(f'"{c}" = excluded."{c}"' for c in names
                         if c not in ("subscription", "container_id"))
        conn.execute(
            f'INSERT INTO streams ({", ".join(f"{chr(34)}{c}{chr(34)}" for c in names)}) '
            f'VALUES ({", ".join("?" * len(names))}) ON CONFLICT (subscription, container_id) '
            f"DO {'UPDATE SET ' + sets if sets else 'NOTHING'}", [cols[c] for c in names])
        return
    if t.kind == "child":
        assert key.subscription is not None
        assert key.container_id is not None
        cols["stream_id"] = _stream_id(conn, key.subscription, key.container_id, ids)
    names = list(cols)
    conn.execute(
        f'INSERT OR REPLACE INTO "{t.name}" ({", ".join(f"{chr(34)}{c}{chr(34)}" for c in names)})'
        f' VALUES ({", ".join("?" * len(names))})', [cols[c] for c in names])


def _delete(conn: sqlite3.Connection, t: Table, key: RowKey,
            ids: dict[tuple[str, str], int]) -> None:
    if t.kind == "stream":
        ids.pop((str(key.subscription), str(key.container_id)), None)
        conn.execute("DELETE FROM streams WHERE subscription = ? AND container_id = ?",
                     (key.subscription, key.container_id))
    elif t.kind == "child":
        conn.execute(
            f'DELETE FROM "{t.name}" WHERE "{t.ident}" = ? AND stream_id = (SELECT stream_id '
            "FROM streams WHERE subscription = ? AND container_id = ?)",
            (key.ident, key.subscription, key.container_id))
    else:
        conn.execute(f'DELETE FROM "{t.name}" WHERE credential = ?', (key.ident,))


def apply_records(conn: sqlite3.Connection, tables: dict[str, Table],
                  records: Sequence[tuple[bytes | None, bytes | None]]) -> int:
    """Apply ``records`` (key, value) in one transaction, uncaptured; how many were rows."""
    applied = 0
    ids: dict[tuple[str, str], int] = {}  # stream ids met in this batch
    conn.execute("BEGIN IMMEDIATE")
    try:
        set_capture(conn, False)
        for raw_key, raw_value in records:
            key = decode_key(raw_key) if raw_key is not None else None
            t = tables.get(key.table) if key is not None else None
            if key is None or t is None:
                continue  # a probe, or a table this release does not have
            row = decode_row(raw_value)
            if row is None:
                _delete(conn, t, key, ids)
            else:
                _upsert(conn, t, key, row, ids)
            applied += 1
        set_capture(conn, True)
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return applied
