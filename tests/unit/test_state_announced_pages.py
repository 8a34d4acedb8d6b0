"""Announcements as one row per page (schema v9, notifier.state.sqlite_announced): what a page
cut short before its checkpoint leaves, and that nothing it announced is lost on the way from a
page row to the rows per id the end of a resync pages through."""

from __future__ import annotations

import sqlite3
import uuid
from pathlib import Path

import orjson

from notifier.state.base import Announcement
from notifier.state.migrations import APPLICATION_ID, MIGRATIONS, SCHEMA_VERSION
from notifier.state.sqlite import SqliteStateStore
from notifier.state.sqlite_keys import rel_key
from tests.unit.test_state_announced import CONT, SUB, _commit


def _ann(rel_id: str, created_on: str = "2026-01-01T00:00:00Z", fp: str | None = "f1",
         entity: str = "e2") -> Announcement:
    raw = {"id": rel_id, "createdOn": created_on, "isDeleted": False,
           "entities": [{"domain": "d", "type": "t", "id": "e1"},
                        {"domain": "d", "type": "t", "id": entity}]}
    return Announcement(rel_id, created_on, orjson.dumps(raw), fp)


async def _missing(store: SqliteStateStore, batch: int = 1_000) -> list[Announcement]:
    return [a async for b in store.iter_announced_missing(SUB, CONT, batch) for a in b]


def _tables(path: Path) -> tuple[int, int]:
    """(rows per page, rows per id) on disk."""
    conn = sqlite3.connect(path)
    try:
        return (conn.execute("SELECT count(*) FROM announced_pages").fetchone()[0],
                conn.execute("SELECT count(*) FROM announced").fetchone()[0])
    finally:
        conn.close()


async def test_a_page_is_one_row_and_its_checkpoint_deletes_it(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    async with SqliteStateStore(path) as store:
        await store.begin_resync(SUB, CONT)
        await store.mark_announced(SUB, CONT, [_ann(f"n{i}") for i in range(500)])
        assert _tables(path) == (1, 0)
        await _commit(store, add_ids=[f"n{i}" for i in range(500)],
                      seen_ids=[f"n{i}" for i in range(500)])
        assert _tables(path) == (0, 0)
        assert await _missing(store) == []


async def test_a_page_cut_short_keeps_what_the_next_checkpoint_does_not_settle(
    tmp_path: Path,
) -> None:
    """Two attempts of a page die before their checkpoint (the second announces b again, with
    a newer body); the next checkpoint settles a and c only: b and d stay announced, b with
    its newest body and filter, and are reported at the end of the resync."""
    path = tmp_path / "state.db"
    async with SqliteStateStore(path) as store:
        await store.begin_resync(SUB, CONT)
        await store.mark_announced(SUB, CONT, [_ann("a"), _ann("b", entity="old")])
        await store.mark_announced(SUB, CONT, [_ann("b", "2026-02-02T00:00:00Z", "f2", "new"),
                                               _ann("c"), _ann("d")])
        assert _tables(path) == (2, 0)
        # Before any checkpoint the page rows are read as they are (a later page wins).
        got = {a.rel_id: a for a in await _missing(store)}
        assert sorted(got) == ["a", "b", "c", "d"]
        assert (got["b"].created_on, got["b"].filter_fingerprint) == ("2026-02-02T00:00:00Z",
                                                                      "f2")
        await _commit(store, add_ids=["a"], remove_ids=["c"], seen_ids=["a"])
        assert _tables(path) == (0, 2)
        left = await _missing(store)
        assert [a.rel_id for a in left] == ["b", "d"]
        b = left[0]
        assert (b.created_on, b.filter_fingerprint) == ("2026-02-02T00:00:00Z", "f2")
        assert orjson.loads(b.raw)["entities"][1]["id"] == "new"
        # Listed by the resync (seen) or known: not missing; the rest is.
        await _commit(store, seen_ids=["d"])
        assert [a.rel_id for a in await _missing(store)] == ["b"]


async def test_an_incremental_checkpoint_forgets_page_rows(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    async with SqliteStateStore(path) as store:
        await _commit(store, next_token="t0", resync_cursor=None, in_resync=False)
        await store.mark_announced(SUB, CONT, [_ann("a"), _ann("b")])
        await store.mark_announced(SUB, CONT, [_ann("c")])
        await _commit(store, next_token="t1", resync_cursor=None, in_resync=False,
                      add_ids=["c"])
        assert _tables(path) == (0, 0)


async def test_page_rows_and_rows_per_id_are_paged_together_in_key_order(
    tmp_path: Path,
) -> None:
    """Ids of both forms (UUIDs stored as 16 bytes, other ids as text: SQLite orders text
    first), some in rows per id, some in a page row, some in both (the page's body wins), in
    keyset batches; known and listed ids are left out."""
    path = tmp_path / "state.db"
    uuids = sorted(str(uuid.uuid4()) for _ in range(6))
    async with SqliteStateStore(path) as store:
        await _commit(store, next_token="t0", resync_cursor=None, in_resync=False,
                      add_ids=[uuids[5]])
        await store.begin_resync(SUB, CONT)
        await store.mark_announced(SUB, CONT, [_ann(u) for u in uuids[:3]] + [_ann("x1")])
        await _commit(store, seen_ids=["zz"])  # settles none of them: now rows per id
        assert _tables(path) == (0, 4)
        await store.mark_announced(SUB, CONT, [_ann(uuids[1], fp="f9"), _ann(uuids[3]),
                                               _ann(uuids[4]), _ann(uuids[5]), _ann("x0")])
        await _commit(store, seen_ids=[uuids[4]], add_ids=())  # lists uuids[4] only
        await store.mark_announced(SUB, CONT, [_ann(uuids[2], fp="f8"), _ann("x2")])
        assert _tables(path)[0] == 1
        batches = [[(a.rel_id, a.filter_fingerprint) for a in b]
                   async for b in store.iter_announced_missing(SUB, CONT, batch=2)]
        assert batches == [
            [("x0", "f1"), ("x1", "f1")], [("x2", "f1"), (uuids[0], "f1")],
            [(uuids[1], "f9"), (uuids[2], "f8")], [(uuids[3], "f1")]]


async def test_a_version_8_file_keeps_its_announcements(tmp_path: Path) -> None:
    """A state file as a schema-8 release left it, a crash between a page's announcement and
    its checkpoint: its rows per id are reported and settled as before the page rows."""
    path = tmp_path / "state.db"
    conn = sqlite3.connect(path, isolation_level=None)
    conn.create_function("rel_key", 1, rel_key, deterministic=True)  # used by version 5
    try:
        for version in MIGRATIONS[:8]:
            for statement in version:
                conn.execute(statement)
        conn.execute("PRAGMA user_version = 8")
        conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
        conn.execute("INSERT INTO streams (stream_id, subscription, container_id, sync_token,"
                     " resync_cursor, in_resync, staged_cursor, resync_reason)"
                     " VALUES (1, ?, ?, 't7', 'cur', 1, 'cur', 'snapshot')", (SUB, CONT))
        for rid in ("a", "b"):
            a = _ann(rid)
            conn.execute("INSERT INTO announced (stream_id, rel_id, created_on, raw,"
                         " filter_fingerprint) VALUES (1, ?, ?, ?, ?)",
                         (rid, a.created_on, a.raw, a.filter_fingerprint))
    finally:
        conn.close()
    assert SCHEMA_VERSION >= 9
    async with SqliteStateStore(path) as store:
        assert await _missing(store) == [_ann("a"), _ann("b")]
        await store.mark_announced(SUB, CONT, [_ann("c")])
        await _commit(store, add_ids=["a", "c"], seen_ids=["a", "c"])
        assert await _missing(store) == [_ann("b")]
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    finally:
        conn.close()
