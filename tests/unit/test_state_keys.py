"""Relationship ids as 16-byte keys (schema v5), the migration of a v4 file, and the resync
staging set held in memory (written in bulk; a crash resumes from where the written part
reaches)."""

from __future__ import annotations

import sqlite3
import uuid
from pathlib import Path

import orjson
import pytest

from notifier.state.base import Announcement
from notifier.state.migrations import APPLICATION_ID, MIGRATIONS, SCHEMA_VERSION
from notifier.state.sqlite import SqliteStateStore
from notifier.state.sqlite_keys import Staging, rel_id, rel_key, rel_keys

SUB, CONT = "project-a", "5d0c2a3e-3b1f-4b8e-9a51-0d3c1f6f7a10"
U1, U2, U3 = ("0f8a3c52-6d1e-4b7a-9c2e-5a1b3d4e6f70", "7b2e9d14-3a5c-4f86-b0d1-2c9e8f7a6b53",
              "a1b2c3d4-e5f6-4a7b-8c9d-0e1f2a3b4c5d")
ODD = ["not-a-uuid", U1.upper(), f" {U2[1:]}", U3.replace("-", ""), "", "é" * 36]


def test_canonical_uuids_become_16_bytes_and_everything_else_stays_text() -> None:
    for rid in (U1, U2, U3, "00000000-0000-0000-0000-000000000000"):
        key = rel_key(rid)
        assert key == uuid.UUID(rid).bytes
        assert rel_id(key) == rid
    for rid in ODD:
        assert rel_key(rid) == rid  # uppercase, spaces, no dashes: kept exactly as sent
        assert rel_id(rel_key(rid)) == rid


@pytest.mark.parametrize("ids", [
    [], [U1], [U1, U2, U3], [U1, U1, U2],
    *[[U1, odd, U2] for odd in ODD],  # one odd id: every id converted on its own, alike
    [U1, "0f8a3c52-6d1e-4b7a-9c2e-5a1b3d4e6f7g"],  # not hex
    [U1, "0f8a3c52-6d1e-4b7a-9c2e-5a1b3d4e6f70"[:35] + "-"],  # a dash too many
    [U1, "0f8a3c52-6d1e-4b7a-9c2e-5a1b3d4e6f 0"],  # whitespace a hex decoder would skip
    ["0f8a3c526-d1e-4b7a-9c2e-5a1b3d4e6f70", U2],  # dashes in the wrong places
    [U1, "é" + U2[2:]],  # as many characters, more bytes
])
def test_a_list_of_ids_gets_the_keys_each_id_gets_alone(ids: list[str]) -> None:
    keys = rel_keys(ids)
    assert keys == [rel_key(r) for r in ids]
    assert [rel_id(k) for k in keys] == ids


def test_many_uuids_are_converted_together() -> None:
    ids = [str(uuid.uuid4()) for _ in range(1_000)]
    assert rel_keys(ids) == [uuid.UUID(r).bytes for r in ids]


def _body(rid: str) -> bytes:
    return orjson.dumps({"id": rid, "createdOn": "2026-01-01T00:00:00Z",
                         "entities": [{"domain": "d", "type": "t", "id": "e1"},
                                      {"domain": "d", "type": "t", "id": "e2"}]})


def _write_v4_file(path: Path) -> None:
    """A state file as a schema-4 release left it: one stream in the middle of a resync (a
    saved cursor, a staged id, an announcement), known ids with and without bodies."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        for version in MIGRATIONS[:4]:
            for statement in version:
                conn.execute(statement)
        conn.execute("PRAGMA user_version = 4")
        conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
        conn.execute("INSERT INTO streams (stream_id, subscription, container_id, sync_token,"
                     " resync_cursor, in_resync, known_count, resync_reason)"
                     " VALUES (1, ?, ?, 't7', 'cur-9', 1, 3, 'snapshot')", (SUB, CONT))
        conn.executemany("INSERT INTO known (stream_id, rel_id, body) VALUES (1, ?, ?)",
                         [(U1, _body(U1)), (U2, None), ("not-a-uuid", _body("not-a-uuid"))])
        conn.execute("INSERT INTO resync_seen (stream_id, rel_id) VALUES (1, ?)", (U2,))
        conn.execute("INSERT INTO announced (stream_id, rel_id, created_on, raw)"
                     " VALUES (1, ?, '2026-01-02T00:00:00Z', ?)", (U3, _body(U3)))
    finally:
        conn.close()


async def test_a_version_4_file_is_migrated_and_keeps_every_id_and_the_resync(
    tmp_path: Path,
) -> None:
    path = tmp_path / "state.db"
    _write_v4_file(path)
    assert SCHEMA_VERSION >= 5
    async with SqliteStateStore(path) as store:
        st = await store.get_stream(SUB, CONT)
        assert st is not None
        # The resync resumes from its saved cursor (all it listed was written in v4).
        assert (st.phase, st.resync_cursor, st.known_count) == ("resync", "cur-9", 3)
        assert await store.known_subset(SUB, CONT, [U1, U2, U3, "not-a-uuid"]) == {
            U1, U2, "not-a-uuid"}
        assert await store.known_bodies(SUB, CONT, [U1, U2, "not-a-uuid"]) == {
            U1: _body(U1), "not-a-uuid": _body("not-a-uuid")}
        assert await store.resync_seen_subset(SUB, CONT, [U1, U2]) == {U2}
        # The diff at the end: known ids not listed (with their bodies), announcements gone.
        missing = [k async for b in store.iter_resync_missing(SUB, CONT) for k in b]
        assert sorted((k.rel_id, k.body) for k in missing) == sorted(
            [(U1, _body(U1)), ("not-a-uuid", _body("not-a-uuid"))])
        gone = [a async for b in store.iter_announced_missing(SUB, CONT) for a in b]
        assert gone == [Announcement(U3, "2026-01-02T00:00:00Z", _body(U3))]
        # A body-less known id listed again gets its body.
        await store.commit_page(SUB, CONT, next_token=None, resync_cursor="cur-10",
                                in_resync=True, add_ids=(), remove_ids=(), seen_ids=[U2],
                                bodies={U2: _body(U2)}, changed=False, now=1.0)
        assert await store.known_bodies(SUB, CONT, [U2]) == {U2: _body(U2)}
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        kinds = dict(conn.execute("SELECT rel_id, typeof(rel_id) FROM known").fetchall())
        assert kinds == {uuid.UUID(U1).bytes: "blob", uuid.UUID(U2).bytes: "blob",
                         "not-a-uuid": "text"}
    finally:
        conn.close()


async def _commit(store: SqliteStateStore, cursor: str | None, seen: list[str],
                  add: list[str] | None = None, in_resync: bool = True,
                  ends: bool = False) -> None:
    await store.commit_page(SUB, CONT, next_token=None if in_resync else "tok",
                            resync_cursor=cursor, in_resync=in_resync, add_ids=add or [],
                            remove_ids=(), seen_ids=seen, changed=True, now=1.0,
                            snapshot_ends=ends)


def _staged(path: Path) -> tuple[str | None, str | None, int]:
    conn = sqlite3.connect(path)
    try:
        cursor, staged = conn.execute("SELECT resync_cursor, staged_cursor FROM streams"
                                      ).fetchone()
        (written,) = conn.execute("SELECT count(*) FROM resync_seen").fetchone()
    finally:
        conn.close()
    return cursor, staged, written


async def test_listed_ids_are_held_then_written_in_bulk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(Staging, "FLUSH_IDS", 4)
    path = tmp_path / "state.db"
    async with SqliteStateStore(path) as store:
        await store.begin_resync(SUB, CONT)
        await _commit(store, "c1", [U1, "odd"], add=[U1, "odd"])
        assert _staged(path) == ("c1", None, 0)  # held in memory
        st = await store.get_stream(SUB, CONT)
        assert st is not None
        assert st.resync_cursor == "c1"  # this process resumes at c1
        assert await store.resync_seen_subset(SUB, CONT, [U1, U2, "odd"]) == {U1, "odd"}
        await _commit(store, "c2", [U2, U3], add=[U2, U3])  # four held: written
        assert _staged(path) == ("c2", "c2", 4)
        await _commit(store, "c3", [], add=[])
        assert _staged(path) == ("c3", "c2", 4)
        await _commit(store, "c4", ["zz"], add=["zz"])
        assert _staged(path) == ("c4", "c2", 4)
    # Closed cleanly: what was held is written, a restart resumes at the last checkpoint.
    assert _staged(path) == ("c4", "c4", 5)


async def test_a_crash_loses_the_held_ids_and_the_resync_resumes_where_written_ones_reach(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(Staging, "FLUSH_IDS", 3)
    path = tmp_path / "state.db"
    store = SqliteStateStore(path)
    await store.open()
    await store.begin_resync(SUB, CONT)
    await _commit(store, "c1", [U1, U2, U3], add=[U1, U2, U3])  # written: staged at c1
    await _commit(store, "c2", ["odd"], add=["odd"])  # held only
    store._ids.staging = Staging()  # SIGKILL: nothing held survives
    await store.close()
    async with SqliteStateStore(path) as store:
        st = await store.get_stream(SUB, CONT)
        assert st is not None
        assert (st.phase, st.resync_cursor, st.known_count) == ("resync", "c1", 4)
        # "odd" is known but not listed any more as far as the store knows: the page after c1
        # is listed again. Its first checkpoint writes at once (nothing held to build on).
        assert await store.resync_seen_subset(SUB, CONT, ["odd", U1]) == {U1}
        await _commit(store, "c2", ["odd"])
        assert _staged(path) == ("c2", "c2", 4)
        missing = [k.rel_id async for b in store.iter_resync_missing(SUB, CONT) for k in b]
        assert missing == []
        await _commit(store, None, [], in_resync=False)
        assert _staged(path) == (None, None, 0)


async def test_the_last_page_of_a_snapshot_holds_its_ids_however_many(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Writing the held ids at the resync's last checkpoint was wasted (the end of the resync
    drops them a moment later): they stay held, and the end reads them as it reads written
    ones. Nor does a checkpoint that lists nothing new write them."""
    monkeypatch.setattr(Staging, "FLUSH_IDS", 3)
    path = tmp_path / "state.db"
    async with SqliteStateStore(path) as store:
        await _commit(store, None, [], add=[U3, "gone"], in_resync=False)
        await store.begin_resync(SUB, CONT)
        await _commit(store, "c1", [U1, "odd"], add=[U1, "odd"])
        await _commit(store, "c2", [U2, U3], add=[U2], ends=True)  # four held: not written
        assert _staged(path) == ("c2", None, 0)
        assert await store.resync_seen_subset(SUB, CONT, [U1, U2, U3, "x"]) == {U1, U2, U3}
        missing = [k.rel_id async for b in store.iter_resync_missing(SUB, CONT) for k in b]
        assert missing == ["gone"]
        await store.commit_page(SUB, CONT, next_token=None, resync_cursor="c2", in_resync=True,
                                add_ids=(), remove_ids=["gone"], changed=True, now=1.0)
        assert _staged(path) == ("c2", None, 0)  # nothing new listed: nothing written
        await _commit(store, None, [], in_resync=False)
        assert _staged(path) == (None, None, 0)
        st = await store.get_stream(SUB, CONT)
        assert st is not None
        assert (st.phase, st.known_count) == ("incremental", 4)
    # Without the hint the same checkpoint writes them (the threshold is reached).
    path = tmp_path / "other.db"
    async with SqliteStateStore(path) as store:
        await store.begin_resync(SUB, CONT)
        await _commit(store, "c1", [U1, "odd"], add=[U1, "odd"])
        await _commit(store, "c2", [U2, U3], add=[U2, U3])
        assert _staged(path) == ("c2", "c2", 4)
