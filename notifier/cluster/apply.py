"""Applying state-topic records to the SQLite cache (a restore), without capturing them again.

Records arrive in topic order; the latest value of a key wins and a tombstone deletes. A child
row may come before its stream's row (compaction keeps only a stream's latest record, written
after its children's older ones): the stream row is then created bare and filled in when its
record comes. A chunk record of known ids replaces the chunk's rows; an id it takes from another
chunk (a forced import merged into a topic that held it elsewhere) leaves that chunk to be
shipped again, so the topic stops listing the id twice. Column names are taken only if the local
table has them, so a record written by another release adds what it can and never injects SQL.

A record this release cannot read (not JSON, not a row, a column that is not a stored value, a
row its tables refuse such as one without a NOT NULL column) is left out and noted in ``bad``
under its key; a later record of the same key, which replaces it in the topic, clears the note.
The caller refuses a restore that ends with notes left (``BadRecords.check``): applying the rest
would leave the cache short of rows the topic holds.
"""

from __future__ import annotations

import functools
import sqlite3
from collections.abc import Sequence
from typing import Any

from notifier.cluster.capture import Table, chunk_is, uncaptured
from notifier.cluster.records import BadRecord, RowKey, decode_chunk, decode_key, decode_row
from notifier.cluster.strays import Strays
from notifier.errors import StateRecordError

# Keys named in the error of a restore that met unreadable records (the count says the rest).
_NAMED_KEYS = 5


class BadRecords(dict[bytes, str]):
    """Keys of the records a restore could not read, and why (the latest record of each)."""

    def check(self, where: str) -> None:
        """StateRecordError if any key's latest record was unreadable."""
        if not self:
            return
        named = "; ".join(f"key {k.decode(errors='replace')}: {why}"
                          for k, why in list(self.items())[:_NAMED_KEYS])
        more = f" (and {len(self) - _NAMED_KEYS} more)" if len(self) > _NAMED_KEYS else ""
        raise StateRecordError(
            f"{where}: {len(self)} record(s) cannot be read by this release and no later record "
            f"of the same key replaces them: {named}{more}. Their rows are not restored, so "
            "nothing is polled from this state until each key gets a readable record or a "
            "tombstone (see the runbook of NotifierClusterStateUnreadable in docs/runbooks.md)")


class _Batch:
    """Consecutive statements with the same SQL run as one executemany (order is kept)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self._sql: str | None = None
        self._params: list[Sequence[Any]] = []

    def add(self, sql: str, params: Sequence[Any]) -> None:
        if sql != self._sql:
            self.flush()
            self._sql = sql
        self._params.append(params)

    def flush(self) -> None:
        if self._sql is not None and self._params:
            self.conn.executemany(self._sql, self._params)
        self._sql, self._params = None, []


def _quoted(names: Sequence[str]) -> str:
    return ", ".join(f'"{c}"' for c in names)


@functools.lru_cache(maxsize=256)
def _upsert_sql(table: str, names: tuple[str, ...], stream: bool) -> str:
    marks = ", ".join("?" * len(names))
    if not stream:
        return f'INSERT OR REPLACE INTO "{table}" ({_quoted(names)}) VALUES ({marks})'
    sets = ", ".join(f'"{c}" = excluded."{c}"' for c in names
                     if c not in ("subscription", "container_id"))
    return (f"INSERT INTO streams ({_quoted(names)}) VALUES ({marks}) ON CONFLICT "
            f"(subscription, container_id) DO {'UPDATE SET ' + sets if sets else 'NOTHING'}")


def _stream_id(batch: _Batch, sub: str, cid: str, ids: dict[tuple[str, str], int]) -> int:
    sid = ids.get((sub, cid))
    if sid is None:
        batch.flush()  # a pending delete of this stream must not remove the row made here
        conn = batch.conn
        conn.execute("INSERT OR IGNORE INTO streams (subscription, container_id) VALUES (?, ?)",
                     (sub, cid))
        row = conn.execute("SELECT stream_id FROM streams WHERE subscription = ? AND "
                           "container_id = ?", (sub, cid)).fetchone()
        sid = ids[(sub, cid)] = int(row[0])
    return sid


def _upsert(batch: _Batch, t: Table, key: RowKey, row: dict[str, Any],
            ids: dict[tuple[str, str], int]) -> None:
    cols = {k: v for k, v in row.items() if k in t.columns and k not in t.local}
    if t.kind == "stream":
        cols.update(subscription=key.subscription, container_id=key.container_id)
    elif t.kind == "child":
        assert key.subscription is not None
        assert key.container_id is not None
        cols["stream_id"] = _stream_id(batch, key.subscription, key.container_id, ids)
    names = tuple(cols)
    batch.add(_upsert_sql(t.name, names, t.kind == "stream"), [cols[c] for c in names])


def _delete(batch: _Batch, t: Table, key: RowKey,
            ids: dict[tuple[str, str], int]) -> None:
    if t.kind == "stream":
        ids.pop((str(key.subscription), str(key.container_id)), None)
        batch.add("DELETE FROM streams WHERE subscription = ? AND container_id = ?",
                  (key.subscription, key.container_id))
    elif t.kind == "child":
        batch.add(
            f'DELETE FROM "{t.name}" WHERE "{t.ident}" = ? AND stream_id = (SELECT stream_id '
            "FROM streams WHERE subscription = ? AND container_id = ?)",
            (key.ident, key.subscription, key.container_id))
    else:
        batch.add(f'DELETE FROM "{t.name}" WHERE credential = ?', (key.ident,))


def _chunk(batch: _Batch, t: Table, key: RowKey, rows: list[dict[str, Any]],
           ids: dict[tuple[str, str], int]) -> None:
    """Replace the stream's rows of chunk ``key.ident`` with ``rows``."""
    assert key.subscription is not None
    assert key.container_id is not None
    if not rows:
        batch.add(f'DELETE FROM "{t.name}" WHERE {chunk_is(key.ident)} AND stream_id = (SELECT '
                  "stream_id FROM streams WHERE subscription = ? AND container_id = ?)",
                  (key.ident, key.subscription, key.container_id))
        return
    sid = _stream_id(batch, key.subscription, key.container_id, ids)
    batch.flush()
    conn = batch.conn
    assert t.ident is not None
    moved = [c for (c,) in conn.execute(
        f'SELECT DISTINCT chunk FROM "{t.name}" WHERE stream_id = ? AND chunk IS NOT ? AND '
        f'"{t.ident}" IN ({",".join("?" * len(rows))})',
        (sid, key.ident, *(r.get(t.ident) for r in rows)))]
    conn.execute(f'DELETE FROM "{t.name}" WHERE stream_id = ? AND {chunk_is(key.ident)}',
                 (sid, key.ident))
    names = tuple(c for c in rows[0] if c in t.columns and c not in ("stream_id", "chunk"))
    conn.executemany(
        f'INSERT OR REPLACE INTO "{t.name}" (stream_id, chunk, {_quoted(names)}) VALUES '
        f'(?, ?, {", ".join("?" * len(names))})',
        [(sid, key.ident, *(r.get(c) for c in names)) for r in rows])
    conn.executemany(
        "INSERT INTO temp.cluster_pending (p, tbl, sub, cid, k) VALUES "
        "(cluster_stream_partition(?, ?), ?, ?, ?, ?)",
        [(key.subscription, key.container_id, t.name, key.subscription, key.container_id, c)
         for c in moved])


def _read(tables: dict[str, Table], key: RowKey | None, raw_value: bytes | None
          ) -> tuple[Table, RowKey, Any] | None:
    """The table, key and decoded value of a record (``key``: its decoded key); None if it is
    not a row of this release's tables (a probe, or a table it does not have). BadRecord if it
    cannot be read."""
    t = tables.get(key.table) if key is not None else None
    if key is None or t is None:
        return None
    if t.kind != "credential" and (key.subscription is None or key.container_id is None):
        raise BadRecord(f"the key of a {t.kind} row names no subscription and container")
    return t, key, decode_chunk(raw_value) if t.kind == "chunk" else decode_row(raw_value)


def _apply(conn: sqlite3.Connection, tables: dict[str, Table],
           records: Sequence[tuple[bytes | None, bytes | None]], bad: BadRecords | None,
           strays: Strays | None) -> int:
    """Apply ``records`` in the open transaction; how many were rows."""
    applied = 0
    ids: dict[tuple[str, str], int] = {}  # stream ids met in this batch
    batch = _Batch(conn)
    for raw_key, raw_value in records:
        if raw_key is None:
            continue
        key = decode_key(raw_key)
        if strays is not None and strays.take(key, raw_key, raw_value):
            if bad:
                bad.pop(raw_key, None)
            continue
        try:
            read = _read(tables, key, raw_value)
        except BadRecord as exc:
            if bad is None:
                raise
            bad[raw_key] = str(exc)
            continue
        if bad:
            bad.pop(raw_key, None)
        if read is None:
            continue
        t, key, value = read
        if t.kind == "chunk":
            _chunk(batch, t, key, value, ids)
        elif value is None:
            _delete(batch, t, key, ids)
        else:
            _upsert(batch, t, key, value, ids)
        applied += 1
    batch.flush()
    return applied


def _apply_alone(conn: sqlite3.Connection, tables: dict[str, Table],
                 record: tuple[bytes | None, bytes | None], bad: BadRecords,
                 strays: Strays | None) -> int:
    """One record in a savepoint of its own: one the tables refuse is noted in ``bad``, by the
    constraint SQLite names (never a value: a credential's row holds its refresh token)."""
    conn.execute("SAVEPOINT cluster_record")
    try:
        applied = _apply(conn, tables, [record], bad, strays)
    except sqlite3.IntegrityError as exc:
        conn.execute("ROLLBACK TO cluster_record")
        if record[0] is not None:
            bad[record[0]] = f"a row this release's tables refuse ({exc})"
        applied = 0
    conn.execute("RELEASE cluster_record")
    return applied


def apply_records(conn: sqlite3.Connection, tables: dict[str, Table],
                  records: Sequence[tuple[bytes | None, bytes | None]],
                  bad: BadRecords | None = None, strays: Strays | None = None) -> int:
    """Apply ``records`` (key, value) in one transaction, uncaptured; how many were rows. A
    record that cannot be read, or whose row the tables refuse (a NOT NULL column without a
    value, say), is left out and noted in ``bad`` (BadRecord or sqlite3.IntegrityError raised
    without). The batch is applied as a whole first; only one the tables refuse is applied
    again a record at a time, to find which. With ``strays`` (a restore of one partition),
    rows of streams the configuration puts elsewhere are left out and noted there."""
    with uncaptured(conn):
        if bad is None:
            return _apply(conn, tables, records, None, strays)
        conn.execute("SAVEPOINT cluster_batch")
        try:
            applied = _apply(conn, tables, records, bad, strays)
        except sqlite3.IntegrityError:
            conn.execute("ROLLBACK TO cluster_batch")
            applied = sum(_apply_alone(conn, tables, record, bad, strays)
                          for record in records)
        conn.execute("RELEASE cluster_batch")
        return applied
