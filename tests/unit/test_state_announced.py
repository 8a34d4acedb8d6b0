"""Announcements in the SQLite store: schema v2, durable marks, and who forgets them when.

An announcement is a created event of a resync page recorded before it is published; the
page's checkpoint (or the end of the resync) forgets it. What is left when a resync ends are
relationships whose created event may have gone out before a crash.
"""

from __future__ import annotations

import asyncio
import sqlite3
import sys
from pathlib import Path

import orjson
import pytest

from notifier.state.base import Announcement
from notifier.state.migrations import APPLICATION_ID, MIGRATIONS, SCHEMA_VERSION
from notifier.state.sqlite import SqliteStateStore

ROOT = Path(__file__).resolve().parents[2]
SUB, CONT = "project-a", "5d0c2a3e-3b1f-4b8e-9a51-0d3c1f6f7a10"


def _ann(rel_id: str, created_on: str = "2026-01-01T00:00:00Z") -> Announcement:
    raw = {"id": rel_id, "createdOn": created_on, "isDeleted": False,
           "entities": [{"domain": "d", "type": "t", "id": "e1"},
                        {"domain": "d", "type": "t", "id": "e2"}]}
    return Announcement(rel_id, created_on, orjson.dumps(raw))


async def _commit(store: SqliteStateStore, **kw: object) -> None:
    args: dict[str, object] = {
        "next_token": None, "resync_cursor": "cur", "in_resync": True, "add_ids": (),
        "remove_ids": (), "changed": False, "now": 100.0,
    }
    args.update(kw)
    await store.commit_page(SUB, CONT, **args)  # type: ignore[arg-type]


async def _missing(store: SqliteStateStore, batch: int = 1_000) -> list[str]:
    return [a.rel_id async for b in store.iter_announced_missing(SUB, CONT, batch) for a in b]


def _rows(path: Path) -> list[tuple[str, str]]:
    """What another connection sees on disk: (rel_id, created_on), by id, from the rows per
    id and the rows per page (their ``heads``; a later page wins)."""
    conn = sqlite3.connect(path)
    try:
        found = {str(r): str(c) for r, c in conn.execute(
            "SELECT rel_id, created_on FROM announced")}
        for (heads,) in conn.execute("SELECT heads FROM announced_pages ORDER BY seq"):
            found.update((rid, created) for rid, created, _, _ in orjson.loads(heads))
        return sorted(found.items())
    finally:
        conn.close()


def _write_v1_file(path: Path) -> None:
    """A state file exactly as a schema-1 release left it, with one stream and known ids."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        for statement in MIGRATIONS[0]:
            conn.execute(statement)
        conn.execute("PRAGMA user_version = 1")
        conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
        conn.execute("INSERT INTO streams (stream_id, subscription, container_id, sync_token,"
                     " known_count) VALUES (1, ?, ?, 't7', 2)", (SUB, CONT))
        conn.execute("INSERT INTO known (stream_id, rel_id) VALUES (1, 'a'), (1, 'b')")
    finally:
        conn.close()


async def test_a_version_1_file_is_migrated_in_place_and_keeps_its_state(
    tmp_path: Path,
) -> None:
    path = tmp_path / "state.db"
    _write_v1_file(path)
    assert SCHEMA_VERSION >= 5
    async with SqliteStateStore(path) as store:
        state = await store.get_stream(SUB, CONT)
        assert state is not None
        assert (state.sync_token, state.known_count) == ("t7", 2)
        assert await store.known_subset(SUB, CONT, ["a", "b", "c"]) == {"a", "b"}
        await store.begin_resync(SUB, CONT)
        await store.mark_announced(SUB, CONT, [_ann("c")])
        assert await _missing(store) == ["c"]
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        (ddl,) = conn.execute(
            "SELECT sql FROM sqlite_schema WHERE name = 'announced'").fetchone()
        assert "WITHOUT ROWID" in ddl
    finally:
        conn.close()
    async with SqliteStateStore(path) as store:  # reopening a v5 file migrates nothing
        assert await _missing(store) == ["c"]


async def test_mark_announced_is_on_disk_when_it_returns(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    async with SqliteStateStore(path) as store:
        await store.begin_resync(SUB, CONT)
        await store.mark_announced(SUB, CONT, [_ann("b"), _ann("a")])
        assert _rows(path) == [("a", "2026-01-01T00:00:00Z"), ("b", "2026-01-01T00:00:00Z")]
        await store.mark_announced(SUB, CONT, [])  # nothing to record: no write
        # Marked again (a restarted resync lists it again): one row, the newest body.
        await store.mark_announced(SUB, CONT, [_ann("a", "2026-02-02T00:00:00Z")])
        assert _rows(path) == [("a", "2026-02-02T00:00:00Z"), ("b", "2026-01-01T00:00:00Z")]


async def test_an_announcement_keeps_the_filter_it_was_last_made_under(tmp_path: Path) -> None:
    async with SqliteStateStore(tmp_path / "state.db") as store:
        await store.begin_resync(SUB, CONT)
        a, b = _ann("a"), _ann("b")
        await store.mark_announced(SUB, CONT, [
            Announcement(a.rel_id, a.created_on, a.raw, "f1"), b])
        got = [x async for batch in store.iter_announced_missing(SUB, CONT) for x in batch]
        assert [(x.rel_id, x.filter_fingerprint) for x in got] == [("a", "f1"), ("b", None)]
        await store.mark_announced(SUB, CONT, [Announcement(a.rel_id, a.created_on, a.raw, "f2")])
        got = [x async for batch in store.iter_announced_missing(SUB, CONT) for x in batch]
        assert [(x.rel_id, x.filter_fingerprint) for x in got] == [("a", "f2"), ("b", None)]


async def test_mark_announced_survives_a_process_that_dies_without_closing(
    tmp_path: Path,
) -> None:
    path = tmp_path / "state.db"
    code = (
        "import asyncio, os, sys\n"
        "from tests.unit.test_state_announced import SUB, CONT, _ann\n"
        "from notifier.state.sqlite import SqliteStateStore\n"
        "async def main():\n"
        "    store = SqliteStateStore(sys.argv[1])\n"
        "    await store.open()\n"
        "    await store.begin_resync(SUB, CONT)\n"
        "    await store.mark_announced(SUB, CONT, [_ann('r1'), _ann('r2')])\n"
        "    os._exit(0)  # no close, no WAL checkpoint: as a crash right after the call\n"
        "asyncio.run(main())\n"
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", code, str(path), cwd=ROOT, stderr=asyncio.subprocess.PIPE)
    _, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    async with SqliteStateStore(path) as store:
        state = await store.get_stream(SUB, CONT)
        assert state is not None
        assert state.in_resync
        got = [a async for b in store.iter_announced_missing(SUB, CONT) for a in b]
    assert [a.rel_id for a in got] == ["r1", "r2"]
    assert orjson.loads(got[0].raw)["entities"][1]["id"] == "e2"


async def test_a_resync_checkpoint_forgets_what_it_settles(tmp_path: Path) -> None:
    async with SqliteStateStore(tmp_path / "state.db") as store:
        await _commit(store, next_token="t0", resync_cursor=None, in_resync=False,
                      add_ids=["k1", "k2"])
        await store.begin_resync(SUB, CONT)
        await store.mark_announced(SUB, CONT, [_ann(i) for i in ("n1", "n2", "n3", "k2")])
        # n1 becomes known, k2's deletion is checkpointed; n2, n3 stay possibly announced.
        await _commit(store, add_ids=["n1"], remove_ids=["k2"], seen_ids=["n1", "k1"])
        assert await _missing(store) == ["n2", "n3"]
        await _commit(store, seen_ids=["n3"])  # seen again, not yet known: not missing
        assert await _missing(store) == ["n2"]
        # Keyset batches; an announcement that is known is never reported as missing.
        await store.mark_announced(SUB, CONT, [_ann(f"x{i}") for i in range(5)] + [_ann("k1")])
        batches = [[a.rel_id for a in b]
                   async for b in store.iter_announced_missing(SUB, CONT, batch=2)]
        assert batches == [["n2", "x0"], ["x1", "x2"], ["x3", "x4"]]
        with pytest.raises(ValueError, match="positive"):
            await _missing(store, batch=0)
        # begin_resync (a snapshot starting over) keeps them: they may have gone out.
        await store.begin_resync(SUB, CONT)
        assert await _missing(store) == ["n2", "n3", "x0", "x1", "x2", "x3", "x4"]


async def test_finish_resync_and_forget_stream_clear_announcements(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    async with SqliteStateStore(path) as store:
        await store.begin_resync(SUB, CONT)
        await store.mark_announced(SUB, CONT, [_ann("a"), _ann("b")])
        await store.mark_announced("other", CONT, [_ann("a")])
        await store.finish_resync(SUB, CONT, next_token="t1", changed=True, now=5.0)
        assert await _missing(store) == []
        assert [a.rel_id async for b in store.iter_announced_missing("other", CONT)
                for a in b] == ["a"]  # other streams keep theirs
        assert await store.forget_stream("other", CONT)
    assert _rows(path) == []


async def test_an_unknown_stream_has_no_announcements(tmp_path: Path) -> None:
    async with SqliteStateStore(tmp_path / "state.db") as store:
        assert await _missing(store) == []
        assert await store.get_stream(SUB, CONT) is None
