"""Capturing every write to the SQLite cache as state-topic records, and applying them back.

Installed on the store's connection when it opens in cluster mode: TEMP triggers (never stored
in the file) on the captured tables note the natural key of every inserted, updated or deleted
row in ``temp.cluster_pending``, inside the writing transaction. The cluster layer then reads
the current rows of those keys (``take_pending``: a missing row is a tombstone) and ships them
in the owning partition's Kafka transaction. The triggers are generated from the schema found
at open: ``streams``, every table with a ``stream_id`` column (keyed by the stream and its other
primary-key column) and every table keyed by ``credential``; other tables are not captured.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from notifier.cluster.partitions import WorkMap
from notifier.cluster.records import RowKey, encode_key, encode_row
from notifier.errors import StateError

PartitionOf = Callable[[RowKey], int | None]


@dataclass(frozen=True)
class Table:
    name: str
    kind: str  # "stream", "child" (has stream_id) or "credential"
    ident: str | None  # the key column besides the stream (children, credentials)
    columns: frozenset[str]


def tables_of(conn: sqlite3.Connection) -> dict[str, Table]:
    out: dict[str, Table] = {}
    names = [r[0] for r in conn.execute(
        "SELECT name FROM main.sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")]
    for name in names:
        info = conn.execute(f'PRAGMA main.table_info("{name}")').fetchall()
        cols = frozenset(str(r[1]) for r in info)
        pk = [str(r[1]) for r in sorted(info, key=lambda r: int(r[5])) if int(r[5]) > 0]
        if name == "streams":
            out[name] = Table(name, "stream", None, cols)
        elif "stream_id" in cols:
            rest = [c for c in pk if c != "stream_id"]
            if len(rest) != 1:
                raise StateError(f"cluster mode cannot capture table {name}: its primary key "
                                 "is not (stream_id, one column)")
            out[name] = Table(name, "child", rest[0], cols)
        elif pk == ["credential"]:
            out[name] = Table(name, "credential", "credential", cols)
    return out


def install(conn: sqlite3.Connection) -> dict[str, Table]:
    """Create the pending table and the triggers; returns the captured tables."""
    tables = tables_of(conn)
    conn.execute("CREATE TEMP TABLE IF NOT EXISTS cluster_pending ("
                 "seq INTEGER PRIMARY KEY, tbl TEXT NOT NULL, sub, cid, k)")
    conn.execute("CREATE TEMP TABLE IF NOT EXISTS cluster_capture (enabled INTEGER NOT NULL)")
    conn.execute("DELETE FROM temp.cluster_capture")
    conn.execute("INSERT INTO temp.cluster_capture VALUES (1)")
    when = "WHEN (SELECT enabled FROM temp.cluster_capture)"
    for t in tables.values():
        for op, row in (("INSERT", "NEW"), ("UPDATE", "NEW"), ("DELETE", "OLD")):
            if t.kind == "stream":
                body = (f"INSERT INTO cluster_pending (tbl, sub, cid, k) VALUES "
                        f"('{t.name}', {row}.subscription, {row}.container_id, NULL);")
            elif t.kind == "child":
                body = (f"INSERT INTO cluster_pending (tbl, sub, cid, k) SELECT '{t.name}', "
                        f"s.subscription, s.container_id, {row}.\"{t.ident}\" FROM main.streams"
                        f" AS s WHERE s.stream_id = {row}.stream_id;")
            else:
                body = (f"INSERT INTO cluster_pending (tbl, sub, cid, k) VALUES "
                        f"('{t.name}', NULL, NULL, {row}.credential);")
            conn.execute(f'CREATE TEMP TRIGGER IF NOT EXISTS "cluster_{t.name}_{op.lower()}" '
                         f'AFTER {op} ON main."{t.name}" {when} BEGIN {body} END')
    return tables


def row_partition(work: WorkMap, tables: dict[str, Table], key: RowKey) -> int | None:
    """The work partition a row belongs to: its credential's, or its stream's (None for a
    subscription the configuration does not have)."""
    t = tables.get(key.table)
    if t is not None and t.kind == "credential":
        return work.of_credential(str(key.ident))
    if key.subscription is None or key.container_id is None:
        return None
    return work.of_stream(key.subscription, key.container_id)


def _read_row(conn: sqlite3.Connection, t: Table, key: RowKey) -> dict[str, Any] | None:
    conn.row_factory = sqlite3.Row
    try:
        if t.kind == "stream":
            row = conn.execute("SELECT * FROM streams WHERE subscription = ? AND "
                               "container_id = ?", (key.subscription, key.container_id)
                               ).fetchone()
        elif t.kind == "child":
            row = conn.execute(
                f'SELECT t.* FROM "{t.name}" AS t JOIN streams AS s ON s.stream_id = t.stream_id'
                f' WHERE s.subscription = ? AND s.container_id = ? AND t."{t.ident}" = ?',
                (key.subscription, key.container_id, key.ident)).fetchone()
        else:
            row = conn.execute(f'SELECT * FROM "{t.name}" WHERE credential = ?',
                               (key.ident,)).fetchone()
    finally:
        conn.row_factory = None
    if row is None:
        return None
    return {k: row[k] for k in row.keys() if k != "stream_id"}  # noqa: SIM118 (sqlite3.Row)


@dataclass
class Pending:
    """What ``take_pending`` found for one partition: records to ship, seqs to delete after."""

    records: list[tuple[bytes, bytes | None]]
    seqs: list[int]


def take_pending(conn: sqlite3.Connection, tables: dict[str, Table], partition: int,
                 partition_of: PartitionOf) -> Pending:
    """The current rows (or tombstones) of the keys written since the last ship, of
    ``partition`` only; keys of no partition (a subscription no longer configured) are
    dropped."""
    rows = conn.execute("SELECT seq, tbl, sub, cid, k FROM temp.cluster_pending ORDER BY seq"
                        ).fetchall()
    latest: dict[RowKey, int] = {}
    seqs: list[int] = []
    orphans: list[int] = []
    for seq, tbl, sub, cid, k in rows:
        key = RowKey(tbl, sub, cid, k)
        p = partition_of(key)
        if p is None:
            orphans.append(seq)
        elif p == partition:
            latest.pop(key, None)
            latest[key] = seq  # shipped in the order of each key's last write
            seqs.append(seq)
    if orphans:
        delete_pending(conn, orphans)
    records = [(encode_key(key), encode_row(_read_row(conn, tables[key.table], key)))
               for key in latest]
    return Pending(records, seqs)


def delete_pending(conn: sqlite3.Connection, seqs: Sequence[int]) -> None:
    for i in range(0, len(seqs), 500):
        chunk = seqs[i:i + 500]
        conn.execute(f"DELETE FROM temp.cluster_pending WHERE seq IN "
                     f"({','.join('?' * len(chunk))})", chunk)


def set_capture(conn: sqlite3.Connection, enabled: bool) -> None:
    conn.execute("UPDATE temp.cluster_capture SET enabled = ?", (1 if enabled else 0,))


@contextmanager
def uncaptured(conn: sqlite3.Connection) -> Iterator[None]:
    """One transaction whose writes are not captured (restoring or wiping the cache: the topic
    is the truth); rolled back, capture included, if the body fails."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        set_capture(conn, False)
        yield
        set_capture(conn, True)
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def wipe(conn: sqlite3.Connection, tables: dict[str, Table], partition: int,
         partition_of: PartitionOf, credentials: Iterable[str]) -> None:
    """Drop the partition's rows from the cache (not captured: the topic is the truth)."""
    streams = [
        (sub, cid) for sub, cid in conn.execute("SELECT subscription, container_id FROM streams")
        if partition_of(RowKey("streams", sub, cid, None)) == partition
    ]
    creds = list(credentials)
    with uncaptured(conn):
        conn.executemany("DELETE FROM streams WHERE subscription = ? AND container_id = ?",
                         streams)
        for t in tables.values():
            if t.kind == "credential":
                conn.executemany(f'DELETE FROM "{t.name}" WHERE credential = ?',
                                 [(c,) for c in creds])
    rows = conn.execute("SELECT seq, tbl, sub, cid, k FROM temp.cluster_pending").fetchall()
    delete_pending(conn, [r[0] for r in rows
                          if partition_of(RowKey(r[1], r[2], r[3], r[4])) == partition])


def all_rows(conn: sqlite3.Connection, tables: dict[str, Table]
             ) -> Iterable[tuple[RowKey, dict[str, Any]]]:
    """Every captured row of the file (streams first, then the rows that hang off them)."""
    conn.row_factory = sqlite3.Row
    try:
        order = sorted(tables.values(), key=lambda t: t.kind != "stream")
        for t in order:
            if t.kind == "stream":
                for row in conn.execute("SELECT * FROM streams"):
                    yield (RowKey("streams", row["subscription"], row["container_id"], None),
                           {k: row[k] for k in row.keys() if k != "stream_id"})  # noqa: SIM118
            elif t.kind == "child":
                for row in conn.execute(
                        f'SELECT t.*, s.subscription AS "_sub", s.container_id AS "_cid" '
                        f'FROM "{t.name}" AS t JOIN streams AS s USING (stream_id)'):
                    values = {k: row[k] for k in row.keys()  # noqa: SIM118
                              if k not in ("stream_id", "_sub", "_cid")}
                    yield RowKey(t.name, row["_sub"], row["_cid"], row[t.ident]), values
            else:
                for row in conn.execute(f'SELECT * FROM "{t.name}"'):
                    yield (RowKey(t.name, None, None, row["credential"]),
                           {k: row[k] for k in row.keys()})  # noqa: SIM118
    finally:
        conn.row_factory = None
