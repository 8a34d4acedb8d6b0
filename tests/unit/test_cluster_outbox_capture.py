"""The webhook outbox as cluster state (notifier.cluster.capture, .apply): outbox rows and
their delivery marks are captured under a key that names them on every replica (stream, seq),
and a cache rebuilt from those records delivers the same rows, in the same order per
relationship, with the same attempts and dead letters; also when compaction has reordered
them."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from notifier.cluster import capture
from notifier.cluster.apply import apply_records
from notifier.cluster.partitions import WorkMap
from notifier.cluster.records import CHUNK_ROWS, RowKey, decode_row, encode_key
from notifier.state.base import OutboxItem
from notifier.state.sqlite import SqliteStateStore

SUB, CONT = "project-a", "c1"
WORK = WorkMap(4, ["alice"], {SUB: ("alice",)})


def _item(event_id: str, key: str, created_at: float) -> OutboxItem:
    return OutboxItem("hook", event_id, key, f'{{"id":"{event_id}"}}'.encode(),
                      "2024-05-01T00:00:00Z", created_at)


async def _queue(store: SqliteStateStore, items: list[OutboxItem], token: str) -> None:
    await store.commit_page(SUB, CONT, next_token=token, resync_cursor=None, in_resync=False,
                            add_ids=(), remove_ids=(), outbox=items, changed=True, now=1.0)


def _records(path: Path) -> list[tuple[bytes, bytes | None]]:
    conn = sqlite3.connect(path)
    try:
        tables = capture.tables_of(conn)
        return [(encode_key(k), v) for k, v in capture.all_rows(conn, tables, CHUNK_ROWS)]
    finally:
        conn.close()


def _outbox(path: Path) -> list[tuple[Any, ...]]:
    """The outbox rows as a replica sees them: everything but the local row ids."""
    conn = sqlite3.connect(path)
    try:
        return sorted(conn.execute(
            "SELECT s.subscription, s.container_id, o.seq, o.event_id, o.ordering_key,"
            " o.status, o.attempts, o.next_attempt_at, o.last_error, o.delivered_at,"
            " o.dead_at, o.dead_reason, o.payload FROM outbox AS o JOIN streams AS s"
            " USING (stream_id)").fetchall())
    finally:
        conn.close()


async def test_outbox_rows_and_marks_are_captured_under_their_stream_and_seq(
        tmp_path: Path) -> None:
    async with SqliteStateStore(tmp_path / "s.db") as store:
        await store._call("install", capture.install, WORK)
        await _queue(store, [_item("a1", "A", 1), _item("b1", "B", 1)], "t1")
        await _queue(store, [_item("a2", "A", 2)], "t2")
        rows = await store.outbox_fetch_due("hook", 10.0, 10)
        await store.outbox_mark_delivered([rows[0].row_id], 10.0)
        await store.outbox_settle_failed([], [(rows[1].row_id, "gave up")], 11.0)
        noted = await store._call("pending", lambda c: c.execute(
            "SELECT tbl, sub, cid, k FROM temp.cluster_pending WHERE tbl = 'outbox'"
            " ORDER BY seq").fetchall())
    # Three inserts, then a delivered mark (seq 1) and a dead letter (seq 2).
    assert noted == [("outbox", SUB, CONT, 1), ("outbox", SUB, CONT, 2),
                     ("outbox", SUB, CONT, 3), ("outbox", SUB, CONT, 1),
                     ("outbox", SUB, CONT, 2)]
    records = {k: v for k, v in _records(tmp_path / "s.db") if b'"outbox"' in k}
    first = decode_row(records[encode_key(RowKey("outbox", SUB, CONT, 1))])
    assert first is not None
    assert (first["event_id"], first["status"], first["delivered_at"]) == ("a1", "delivered",
                                                                           10.0)
    assert "row_id" not in first
    assert "stream_id" not in first, "local surrogate keys never leave the replica"


async def test_a_cache_restored_from_reordered_records_delivers_the_same_rows(
        tmp_path: Path) -> None:
    src, dst = tmp_path / "src.db", tmp_path / "dst.db"
    async with SqliteStateStore(src) as store:
        await _queue(store, [_item("a1", "A", 1), _item("b1", "B", 1)], "t1")
        await _queue(store, [_item("a2", "A", 2), _item("c1", "C", 2)], "t2")
        await _queue(store, [_item("a3", "A", 3)], "t3")
        head = {r.event_id: r for r in await store.outbox_fetch_due("hook", 10.0, 10)}
        await store.outbox_mark_delivered([head["b1"].row_id], 10.0)
        await store.outbox_settle_failed([(head["a1"].row_id, 50.0, 2, "HTTP 503")],
                                         [(head["c1"].row_id, "gave up after 5 attempts")], 10.0)
    records = _records(src)
    # Compaction keeps each key's latest record at its latest offset: the rows marked since
    # come last (a1 after a2 and a3), and streams may come after their rows.
    records.sort(key=lambda r: (b'"streams"' in r[0], b'"delivered"' in (r[1] or b""),
                                b'"HTTP 503"' in (r[1] or b"")))
    async with SqliteStateStore(dst) as store:
        tables = await store._call("install", capture.install, WORK)
        await store._call("apply", apply_records, tables, records)
        assert await store.outbox_fetch_due("hook", 10.0, 10) == [], "a1 waits, and A behind it"
        due = await store.outbox_fetch_due("hook", 50.0, 10)
        assert [(r.event_id, r.attempts, r.last_error) for r in due] == [("a1", 2, "HTTP 503")]
        assert [r.event_id for r in await store.dlq_list("hook")] == ["c1"]
        assert await store.outbox_stats("hook") == (3, 1.0, 1)
        order = []
        while rows := await store.outbox_fetch_due("hook", 60.0, 10):
            order += [r.event_id for r in rows]
            await store.outbox_mark_delivered([r.row_id for r in rows], 60.0)
        assert order == ["a1", "a2", "a3"], "one relationship's events in their order"
        # The new owner's rows come after every restored row of the stream.
        await _queue(store, [_item("a4", "A", 4)], "t4")
        await _queue(store, [_item("a5", "A", 5)], "t5")
        rows = await store.outbox_fetch_due("hook", 60.0, 10)
        assert [r.event_id for r in rows] == ["a4"]
    assert {r[2] for r in _outbox(dst) if r[3] in ("a4", "a5")} == {6, 7}
    restored = [r for r in _outbox(dst) if r[3] not in ("a4", "a5", "a1", "a2", "a3")]
    assert restored == [r for r in _outbox(src) if r[3] not in ("a1", "a2", "a3")]


async def test_rows_of_an_older_file_find_their_stream(tmp_path: Path) -> None:
    """Version-5 outbox rows get their stream from the event they hold (and seq = row id)."""
    from notifier.state.migrations import APPLICATION_ID, MIGRATIONS, SCHEMA_VERSION

    path = tmp_path / "old.db"
    conn = sqlite3.connect(path, isolation_level=None)
    conn.create_function("rel_key", 1, lambda v: v)
    for version in MIGRATIONS[:5]:
        for statement in version:
            conn.execute(statement)
    conn.execute("PRAGMA user_version = 5")
    conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
    conn.execute("INSERT INTO streams (stream_id, subscription, container_id) VALUES (7, ?, ?)",
                 (SUB, CONT))
    event = b'{"id":"e1","data":{"subscription":"project-a","containerId":"c1"}}'
    for event_id, payload in (("e1", event), ("e2", b"not json")):
        conn.execute("INSERT INTO outbox (sink, event_id, ordering_key, payload, event_time,"
                     " created_at, enqueued_at, next_attempt_at) VALUES"
                     " ('hook', ?, 'A', ?, 't', 1, 1, 1)", (event_id, payload))
    conn.close()
    async with SqliteStateStore(path) as store:
        rows = await store.outbox_fetch_due("hook", 10.0, 10)
        assert [r.event_id for r in rows] == ["e1", "e2"]  # not one stream: not one order
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert conn.execute("SELECT row_id, stream_id, seq FROM outbox ORDER BY row_id"
                            ).fetchall() == [(1, 7, 1), (2, None, 2)]
    finally:
        conn.close()
