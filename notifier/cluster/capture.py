"""Capturing every write to the SQLite cache as state-topic records, and applying them back.

Installed on the store's connection when it opens in cluster mode: TEMP triggers (never stored
in the file) on the captured tables note the natural key of every inserted, updated or deleted
row in ``temp.cluster_pending``, with its work partition (computed in the trigger by a function
registered on the connection), inside the writing transaction. The cluster layer then reads
the current rows of one partition's keys (``take_pending``, through an index on the partition:
a missing row is a tombstone) and ships them in that partition's Kafka transaction. The
triggers are generated from the schema found at open: ``streams``, every table with a
``stream_id`` column (keyed by the stream and its other primary-key column, or, for a table
with a local row id such as the outbox, the other column of its unique (stream_id, column)
index) and every table keyed by ``credential``; other tables are not captured. A child table
with a ``chunk`` column (the known ids) is captured by chunk: its records are whole chunks
(notifier.cluster.records).
"""

from __future__ import annotations

import functools
import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from notifier.cluster.partitions import WorkMap
from notifier.cluster.records import RowKey, encode_chunk, encode_key, encode_row
from notifier.errors import StateError
from notifier.state import sqlite_checks as group_checks


@dataclass(frozen=True)
class Table:
    name: str
    kind: str  # "stream", "child" (has stream_id), "chunk" (a child kept by chunk), "credential"
    ident: str | None  # the key column besides the stream (children, credentials)
    columns: frozenset[str]
    local: frozenset[str] = frozenset({"stream_id"})  # surrogate keys: never shipped


def _unique_stream_key(conn: sqlite3.Connection, name: str) -> str | None:
    """The other column of a (full) unique index on (stream_id, one column), if any."""
    for _, index, unique, _, partial in conn.execute(f'PRAGMA main.index_list("{name}")'):
        if unique and not partial:
            cols = [str(r[2]) for r in conn.execute(f'PRAGMA main.index_info("{index}")')]
            if len(cols) == 2 and cols[0] == "stream_id":
                return cols[1]
    return None


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
        elif "stream_id" in cols and "stream_id" in pk:
            rest = [c for c in pk if c != "stream_id"]
            if len(rest) != 1:
                raise StateError(f"cluster mode cannot capture table {name}: its primary key "
                                 "is not (stream_id, one column)")
            if "chunk" in cols:
                out[name] = Table(name, "chunk", rest[0], cols)
            else:
                out[name] = Table(name, "child", rest[0], cols)
        elif "stream_id" in cols:  # a local row id, and a key unique within the stream
            ident = _unique_stream_key(conn, name)
            if ident is None:
                raise StateError(f"cluster mode cannot capture table {name}: no unique key "
                                 "(stream_id, one column)")
            out[name] = Table(name, "child", ident, cols, frozenset({"stream_id", *pk}))
        elif pk == ["credential"]:
            out[name] = Table(name, "credential", "credential", cols)
    return out


def install(conn: sqlite3.Connection, work: WorkMap) -> dict[str, Table]:
    """Create the pending table and the triggers (rows go to their partition in ``work``);
    returns the captured tables."""
    tables = tables_of(conn)
    conn.create_function("cluster_stream_partition", 2,
                         functools.lru_cache(maxsize=4096)(work.of_stream), deterministic=True)
    conn.create_function("cluster_credential_partition", 1,
                         functools.lru_cache(maxsize=1024)(work.of_credential),
                         deterministic=True)
    conn.execute("CREATE TEMP TABLE IF NOT EXISTS cluster_pending ("
                 "seq INTEGER PRIMARY KEY, p INTEGER, tbl TEXT NOT NULL, sub, cid, k)")
    conn.execute("CREATE INDEX IF NOT EXISTS temp.cluster_pending_p ON cluster_pending (p, seq)")
    conn.execute("CREATE TEMP TABLE IF NOT EXISTS cluster_capture (enabled INTEGER NOT NULL)")
    conn.execute("DELETE FROM temp.cluster_capture")
    conn.execute("INSERT INTO temp.cluster_capture VALUES (1)")
    when = "WHEN (SELECT enabled FROM temp.cluster_capture)"
    for t in tables.values():
        for op, row in (("INSERT", "NEW"), ("UPDATE", "NEW"), ("DELETE", "OLD")):
            insert = "INSERT INTO cluster_pending (p, tbl, sub, cid, k)"
            if t.kind == "stream":
                body = (f"{insert} VALUES (cluster_stream_partition({row}.subscription, "
                        f"{row}.container_id), '{t.name}', {row}.subscription, "
                        f"{row}.container_id, NULL);")
            elif t.kind in ("child", "chunk"):
                body = _child_trigger(t, row)
                if t.kind == "chunk" and op == "UPDATE":  # a row moved to another chunk
                    body += _child_trigger(t, "OLD", "OLD.chunk IS NOT NEW.chunk")
            else:
                body = (f"{insert} VALUES (cluster_credential_partition({row}.credential), "
                        f"'{t.name}', NULL, NULL, {row}.credential);")
            conn.execute(f'CREATE TEMP TRIGGER IF NOT EXISTS "cluster_{t.name}_{op.lower()}" '
                         f'AFTER {op} ON main."{t.name}" {when} BEGIN {body} END')
    return tables


def _child_trigger(t: Table, row: str, also: str = "") -> str:
    """The trigger statement noting a child row's key (a chunk row's chunk; not again when the
    last key noted is the same chunk, as for each row after the first of a page's chunk)."""
    column = "chunk" if t.kind == "chunk" else t.ident
    where = f"s.stream_id = {row}.stream_id" + (f" AND {also}" if also else "")
    if t.kind == "chunk":
        where += (" AND NOT EXISTS (SELECT 1 FROM cluster_pending AS l WHERE l.seq = (SELECT "
                  f"max(seq) FROM cluster_pending) AND l.tbl = '{t.name}' AND l.k IS "
                  f"{row}.chunk AND l.sub = s.subscription AND l.cid = s.container_id)")
    return ("INSERT INTO cluster_pending (p, tbl, sub, cid, k) SELECT "
            "cluster_stream_partition(s.subscription, s.container_id), "
            f"'{t.name}', s.subscription, s.container_id, {row}.\"{column}\" "
            f"FROM main.streams AS s WHERE {where};")


def chunk_columns(t: Table) -> list[str]:
    """The columns a chunk record carries of each row: the id first, then the rest but the
    local stream id and the chunk (its key says both)."""
    assert t.ident is not None
    return [t.ident, *sorted(t.columns - {t.ident, "stream_id", "chunk"})]


def _quoted(names: Iterable[str]) -> str:
    return ", ".join(f'"{c}"' for c in names)


def chunk_is(chunk: Any) -> str:
    """The SQL condition on ``chunk`` matching one chunk number (a parameter), indexed: "=" for
    a number (the partial index on chunks holds no NULLs), "IS" for the NULL chunk."""
    return "chunk IS ?" if chunk is None else "chunk = ?"


def row_partition(work: WorkMap, tables: dict[str, Table], key: RowKey) -> int | None:
    """The work partition a row belongs to: its credential's, or its stream's (None for a
    subscription the configuration does not have)."""
    t = tables.get(key.table)
    if t is not None and t.kind == "credential":
        return work.of_credential(str(key.ident))
    if key.subscription is None or key.container_id is None:
        return None
    return work.of_stream(key.subscription, key.container_id)


def _value(conn: sqlite3.Connection, t: Table, key: RowKey) -> bytes | None:
    """The record value of ``key``: its row (a chunk's rows), None if there is none."""
    if t.kind == "chunk":
        names = chunk_columns(t)
        return encode_chunk(names, conn.execute(
            f"SELECT {_quoted(names)} FROM \"{t.name}\" WHERE stream_id = (SELECT stream_id "
            f"FROM streams WHERE subscription = ? AND container_id = ?) AND {chunk_is(key.ident)}"
            " ORDER BY rowid", (key.subscription, key.container_id, key.ident)).fetchall())
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
    return encode_row({k: row[k] for k in row.keys() if k not in t.local})  # noqa: SIM118


@dataclass
class Pending:
    """What ``take_pending`` found for one partition: records to ship, and the last captured
    write they cover (0: none), to forget once they are committed."""

    records: list[tuple[bytes, bytes | None]]
    upto: int


def take_pending(conn: sqlite3.Connection, tables: dict[str, Table], partition: int
                 ) -> Pending:
    """The current rows (or tombstones) of the keys of ``partition`` written since the last
    ship, in the order of each key's last write; keys of no partition (a subscription no longer
    configured) are dropped."""
    conn.execute("DELETE FROM temp.cluster_pending WHERE p IS NULL")
    rows = conn.execute(
        "SELECT tbl, sub, cid, k, max(seq) AS last FROM temp.cluster_pending WHERE p = ? "
        "GROUP BY tbl, sub, cid, k ORDER BY last", (partition,)).fetchall()
    records = [(encode_key(key), _value(conn, tables[key.table], key))
               for key in (RowKey(tbl, sub, cid, k) for tbl, sub, cid, k, _ in rows)]
    return Pending(records, max((r[4] for r in rows), default=0))


def delete_pending(conn: sqlite3.Connection, partition: int, upto: int) -> None:
    """Forget the partition's captured writes up to ``upto`` (they are committed)."""
    conn.execute("DELETE FROM temp.cluster_pending WHERE p = ? AND seq <= ?", (partition, upto))


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
         credentials: Iterable[str]) -> None:
    """Drop the partition's rows from the cache (not captured: the topic is the truth)."""
    creds = list(credentials)
    with uncaptured(conn):
        conn.execute("DELETE FROM streams WHERE cluster_stream_partition(subscription, "
                     "container_id) = ?", (partition,))
        for t in tables.values():  # rows a deleted stream leaves behind (outbox: SET NULL)
            if t.kind == "child" and t.local != {"stream_id"}:
                conn.execute(f'DELETE FROM "{t.name}" WHERE stream_id IS NULL')
        for t in tables.values():
            if t.kind == "credential":
                conn.executemany(f'DELETE FROM "{t.name}" WHERE credential = ?',
                                 [(c,) for c in creds])
    conn.execute("DELETE FROM temp.cluster_pending WHERE p = ?", (partition,))


def drop_group_stamps(conn: sqlite3.Connection) -> None:
    """Empty ``group_checks`` (cluster mode stamps every stream's own row, which the topic
    carries; a stamp left by a single process' run of the file would speak for streams
    restored from the topic)."""
    conn.execute("DELETE FROM group_checks")


def all_rows(conn: sqlite3.Connection, tables: dict[str, Table], chunk_rows: int
             ) -> Iterable[tuple[RowKey, bytes | None]]:
    """Every captured row of the file as records (streams first, then the rows that hang off
    them; known ids in chunks of ``chunk_rows`` in the order they were added, numbered anew)."""
    conn.row_factory = sqlite3.Row
    try:
        order = sorted(tables.values(), key=lambda t: t.kind != "stream")
        for t in order:
            if t.kind == "stream":  # a check time with its container's stamps (a file's)
                found = group_checks.check_stamps(conn)
                for row in conn.execute("SELECT * FROM streams"):
                    values = {k: row[k] for k in row.keys() if k != "stream_id"}  # noqa: SIM118
                    values["last_checked_at"] = group_checks.covering(
                        found, row["subscription"], row["container_id"], row["last_checked_at"])
                    yield (RowKey("streams", row["subscription"], row["container_id"], None),
                           encode_row(values))
            elif t.kind == "chunk":
                yield from _chunks(conn, t, chunk_rows)
            elif t.kind == "child":
                for row in conn.execute(
                        f'SELECT t.*, s.subscription AS "_sub", s.container_id AS "_cid" '
                        f'FROM "{t.name}" AS t JOIN streams AS s USING (stream_id)'):
                    values = {k: row[k] for k in row.keys()  # noqa: SIM118
                              if k not in t.local and k not in ("_sub", "_cid")}
                    yield (RowKey(t.name, row["_sub"], row["_cid"], row[t.ident]),
                           encode_row(values))
            else:
                for row in conn.execute(f'SELECT * FROM "{t.name}"'):
                    yield (RowKey(t.name, None, None, row["credential"]),
                           encode_row({k: row[k] for k in row.keys()}))  # noqa: SIM118
    finally:
        conn.row_factory = None


def _chunks(conn: sqlite3.Connection, t: Table, size: int
            ) -> Iterator[tuple[RowKey, bytes | None]]:
    """A chunked table's rows as chunk records: one table scan in insertion order, at most one
    unfinished chunk per stream in memory."""
    names = chunk_columns(t)
    open_: dict[int, tuple[RowKey, list[tuple[Any, ...]]]] = {}
    numbers: dict[int, int] = {}
    streams = {int(r[0]): (str(r[1]), str(r[2])) for r in conn.execute(
        "SELECT stream_id, subscription, container_id FROM streams")}
    for row in conn.execute(f'SELECT stream_id, {_quoted(names)} FROM "{t.name}" ORDER BY rowid'):
        sid = int(row[0])
        entry = open_.get(sid)
        if entry is None:
            n = numbers[sid] = numbers.get(sid, -1) + 1
            sub, cid = streams[sid]
            entry = open_[sid] = (RowKey(t.name, sub, cid, n), [])
        entry[1].append(tuple(row[1:]))
        if len(entry[1]) >= size:
            del open_[sid]
            yield entry[0], encode_chunk(names, entry[1])
    for key, rows in open_.values():
        yield key, encode_chunk(names, rows)
