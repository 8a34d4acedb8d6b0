"""The SQLite state store on real files: schema, tokens, checkpoints, streams, resync."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from pathlib import Path

import pytest

from notifier.errors import StateError
from notifier.state.base import OutboxItem, StateStore
from notifier.state.migrations import SCHEMA_VERSION
from notifier.state.sqlite import SqliteStateStore

SUB, CONT = "project-a", "5d0c2a3e-3b1f-4b8e-9a51-0d3c1f6f7a10"


def _db(tmp_path: Path) -> Path:
    return tmp_path / "nested" / "dir" / "state.db"


async def _commit(store: SqliteStateStore, **kw: object) -> None:
    args: dict[str, object] = {
        "next_token": None, "resync_cursor": None, "in_resync": False, "add_ids": (),
        "remove_ids": (), "changed": False, "now": 100.0,
    }
    args.update(kw)
    await store.commit_page(SUB, CONT, **args)  # type: ignore[arg-type]


async def _known(path: Path) -> set[str]:
    conn = sqlite3.connect(path)
    try:
        return {r for (r,) in conn.execute("SELECT rel_id FROM known")}
    finally:
        conn.close()


# -- schema ---------------------------------------------------------------------------------


async def test_open_creates_dirs_and_schema(tmp_path: Path) -> None:
    path = _db(tmp_path)
    async with SqliteStateStore(path) as store:
        assert isinstance(store, StateStore)
        assert await store.list_streams() == []
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()
    async with SqliteStateStore(path) as store:  # reopening migrates nothing, loses nothing
        assert await store.list_streams() == []


async def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = _db(tmp_path)
    async with SqliteStateStore(path):
        pass
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(StateError, match=r"newer.*Upgrade notifier"):
        async with SqliteStateStore(path):
            pass


async def test_an_sqlite_too_old_is_refused_by_name_before_the_file_is_touched(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(sqlite3, "sqlite_version_info", (3, 34, 1))
    monkeypatch.setattr(sqlite3, "sqlite_version", "3.34.1")
    path = tmp_path / "state.db"
    with pytest.raises(StateError, match=r"SQLite 3\.34\.1 is too old .* needs 3\.35\.0"):
        async with SqliteStateStore(path):
            pass
    assert not path.exists()


async def test_foreign_files_are_refused(tmp_path: Path) -> None:
    other = tmp_path / "other.db"
    conn = sqlite3.connect(other)
    conn.execute("CREATE TABLE t (x)")
    conn.close()
    with pytest.raises(StateError, match="not a notifier state file"):
        async with SqliteStateStore(other):
            pass
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"this is not sqlite at all" * 100)
    with pytest.raises(StateError, match="cannot open state file"):
        async with SqliteStateStore(garbage):
            pass


async def test_closed_store_raises(tmp_path: Path) -> None:
    store = SqliteStateStore(_db(tmp_path))
    with pytest.raises(StateError, match="not open"):
        await store.list_streams()
    async with store:
        pass
    await store.close()  # twice is fine
    with pytest.raises(StateError, match="not open"):
        await store.get_stream(SUB, CONT)


# -- refresh tokens -------------------------------------------------------------------------


async def test_refresh_token_follows_its_seed_and_survives_reopen(tmp_path: Path) -> None:
    path = _db(tmp_path)
    async with SqliteStateStore(path) as store:
        assert await store.load_refresh_token("main", "seed-1") is None
        await store.save_refresh_token("main", "seed-1", "rt-2")
        await store.save_refresh_token("main", "seed-1", "rt-3")
        await store.save_refresh_token("other", "seed-x", "ox-1")
        assert await store.load_refresh_token("main", "seed-1") == "rt-3"
        assert await store.load_refresh_token("main", "seed-2") is None
    async with SqliteStateStore(path) as store:
        assert await store.load_refresh_token("main", "seed-1") == "rt-3"
        assert await store.load_refresh_token("other", "seed-x") == "ox-1"
        # An operator re-seeds: the new seed's lineage replaces the old one.
        await store.save_refresh_token("main", "seed-2", "new-1")
        assert await store.load_refresh_token("main", "seed-1") is None
        assert await store.load_refresh_token("main", "seed-2") == "new-1"


# -- checkpoints ----------------------------------------------------------------------------


async def test_commit_page_updates_stream_and_known_ids(tmp_path: Path) -> None:
    path = _db(tmp_path)
    async with SqliteStateStore(path) as store:
        assert await store.get_stream(SUB, CONT) is None
        await _commit(store, next_token="t1", add_ids=["r1", "r2", "r3"], changed=True, now=10.0)
        await _commit(store, next_token="t2", add_ids=["r4", "r1"], remove_ids=["r2", "zz"],
                      changed=True, now=20.0)
        await _commit(store, next_token=None, now=30.0)  # no token: keep t2
        state = await store.get_stream(SUB, CONT)
    assert state is not None
    assert state.sync_token == "t2"
    assert state.token_updated_at == 20.0
    assert state.last_changed_at == 20.0
    assert state.last_checked_at == 30.0
    assert state.known_count == 3
    assert not state.in_resync
    assert "t2" not in repr(state)  # tokens stay out of logs
    assert await _known(path) == {"r1", "r3", "r4"}


async def test_commit_page_is_all_or_nothing(tmp_path: Path) -> None:
    path = _db(tmp_path)
    async with SqliteStateStore(path) as store:
        await _commit(store, next_token="t1", add_ids=["r1", "r2"], changed=True, now=10.0)
    # Make the last statement of a checkpoint (the outbox insert) fail mid-transaction.
    conn = sqlite3.connect(path)
    conn.execute(
        "CREATE TRIGGER boom BEFORE INSERT ON outbox WHEN new.event_id = 'boom'"
        " BEGIN SELECT RAISE(ABORT, 'injected failure'); END"
    )
    conn.close()
    bad = OutboxItem("hook", "boom", "r3", b"{}", "2024-01-01T00:00:00Z", 20.0)
    async with SqliteStateStore(path) as store:
        with pytest.raises(StateError, match="injected failure"):
            await _commit(store, next_token="t2", add_ids=["r3"], remove_ids=["r1"],
                          outbox=[bad], changed=True, now=20.0)
        with pytest.raises(StateError, match="injected failure"):  # a stream born in it, too
            await store.commit_page("new-sub", CONT, next_token="n1", resync_cursor=None,
                                    in_resync=False, add_ids=["x"], remove_ids=(),
                                    outbox=[bad], changed=True, now=20.0)
        state = await store.get_stream(SUB, CONT)
        assert state is not None
        assert (state.sync_token, state.known_count, state.last_changed_at) == ("t1", 2, 10.0)
        assert await store.get_stream("new-sub", CONT) is None
        assert await store.outbox_stats("hook") == (0, None, 0)
        # The store is still usable, including for the stream whose creation rolled back.
        await store.commit_page("new-sub", CONT, next_token="n1", resync_cursor=None,
                                in_resync=False, add_ids=["x"], remove_ids=(), changed=True,
                                now=21.0)
        new = await store.get_stream("new-sub", CONT)
        assert new is not None
        assert (new.sync_token, new.known_count) == ("n1", 1)
    assert await _known(path) == {"r1", "r2", "x"}


async def test_commit_page_rejects_contradictions(tmp_path: Path) -> None:
    async with SqliteStateStore(_db(tmp_path)) as store:
        with pytest.raises(ValueError, match="both added and removed"):
            await _commit(store, add_ids=["a", "b"], remove_ids=["b"])
        with pytest.raises(ValueError, match="only recorded during a resync"):
            await _commit(store, seen_ids=["a"])
        with pytest.raises(ValueError, match="requires in_resync"):
            await _commit(store, resync_cursor="c")
        assert await store.get_stream(SUB, CONT) is None


async def test_known_subset(tmp_path: Path) -> None:
    async with SqliteStateStore(_db(tmp_path)) as store:
        assert await store.known_subset(SUB, CONT, ["a"]) == set()  # unknown stream
        known = [f"rel-{i:05d}" for i in range(0, 20_000, 2)]
        await _commit(store, next_token="t", add_ids=known, changed=True)
        await store.commit_page("other", CONT, next_token="t", resync_cursor=None,
                                in_resync=False, add_ids=["rel-00001"], remove_ids=(),
                                changed=True, now=1.0)
        page = [f"rel-{i:05d}" for i in range(5_000)] + ["rel-00000", "nope", "it's \"odd\""]
        got = await store.known_subset(SUB, CONT, page)
        assert got == {f"rel-{i:05d}" for i in range(0, 5_000, 2)}
        assert await store.known_subset(SUB, CONT, []) == set()
        assert await store.known_subset("other", CONT, page) == {"rel-00001"}


async def test_concurrent_calls_are_serialised(tmp_path: Path) -> None:
    async with SqliteStateStore(_db(tmp_path)) as store:
        await asyncio.gather(*(
            store.commit_page(f"s{i}", CONT, next_token=f"t{i}", resync_cursor=None,
                              in_resync=False, add_ids=[f"r{i}", "shared"], remove_ids=(),
                              changed=True, now=float(i))
            for i in range(50)
        ))
        streams = await store.list_streams()
    assert len(streams) == 50
    assert all(s.known_count == 2 for s in streams)
    assert {s.sync_token for s in streams} == {f"t{i}" for i in range(50)}


# -- streams --------------------------------------------------------------------------------


async def test_mark_checked_quarantine_forget_prune(tmp_path: Path) -> None:
    async with SqliteStateStore(_db(tmp_path)) as store:
        keys = [(f"s{i % 7}", f"c{i}") for i in range(3_000)]
        await store.mark_checked(keys, 50.0)
        await store.mark_checked(keys[:10], 60.0)
        streams = await store.list_streams()
        assert len(streams) == 3_000
        checked = {s.key: s.last_checked_at for s in streams}
        assert checked[keys[0]] == 60.0
        assert checked[keys[-1]] == 50.0

        await store.quarantine("s0", "c0", 500.0, "bad sync token")
        await store.quarantine("s0", "c0", 900.0, "bad sync token")
        q = await store.get_stream("s0", "c0")
        assert q is not None
        assert (q.quarantined_until, q.quarantine_reason, q.failures) == (
            900.0, "bad sync token", 2)
        await store.clear_quarantine("s0", "c0")
        q = await store.get_stream("s0", "c0")
        assert q is not None
        assert (q.quarantined_until, q.quarantine_reason, q.failures) == (None, None, 2)
        await store.quarantine("s0", "c0", 950.0, "HTTP 404")
        await store.commit_page("s0", "c0", next_token="t", resync_cursor=None,
                                in_resync=False, add_ids=["r"], remove_ids=(),
                                changed=True, now=70.0)
        q = await store.get_stream("s0", "c0")
        assert q is not None
        assert (q.quarantined_until, q.failures, q.known_count) == (None, 0, 1)

        assert await store.forget_stream("s0", "c0") is True
        assert await store.forget_stream("s0", "c0") is False
        assert await store.get_stream("s0", "c0") is None
        assert await store.known_subset("s0", "c0", ["r"]) == set()

        keep = {("s1", "c1"), ("s2", "c2")}
        res = await store.prune_streams(keep, now=100.0, retention=50.0)
        assert (len(res.orphaned), len(res.kept), res.dropped) == (2_999 - 2, 2_999 - 2, [])
        res = await store.prune_streams(keep, now=150.0, retention=50.0)
        assert (res.orphaned, res.kept, len(res.dropped)) == ([], [], 2_999 - 2)
        assert {s.key for s in await store.list_streams()} == keep
        # A pruned stream comes back empty, not with stale ids.
        await store.commit_page("s0", "c0", next_token="t", resync_cursor=None,
                                in_resync=False, add_ids=(), remove_ids=(), changed=False,
                                now=80.0)
        assert await store.known_subset("s0", "c0", ["r"]) == set()


# -- resync ---------------------------------------------------------------------------------


async def test_resync_survives_a_restart_and_yields_the_exact_missing_set(
    tmp_path: Path,
) -> None:
    path = _db(tmp_path)
    before = {f"rel-{i:04d}" for i in range(1_000)}
    after = {f"rel-{i:04d}" for i in range(1_000) if i % 7} | {f"new-{i}" for i in range(30)}
    snapshot = sorted(after)
    pages = [snapshot[i:i + 100] for i in range(0, len(snapshot), 100)]

    async with SqliteStateStore(path) as store:
        await _commit(store, next_token="t0", add_ids=sorted(before), changed=True)
        await store.begin_resync(SUB, CONT)
        for n, page in enumerate(pages[:5]):
            new = set(page) - await store.known_subset(SUB, CONT, page)
            await _commit(store, resync_cursor=f"cursor-{n}", in_resync=True,
                          add_ids=sorted(new), seen_ids=page, changed=bool(new))
    # "Crash": the next process finds the drain half done and continues from its cursor.
    async with SqliteStateStore(path) as store:
        state = await store.get_stream(SUB, CONT)
        assert state is not None
        assert (state.in_resync, state.resync_cursor, state.sync_token) == (
            True, "cursor-4", "t0")
        for n, page in enumerate(pages[5:], start=5):
            new = set(page) - await store.known_subset(SUB, CONT, page)
            await _commit(store, resync_cursor=f"cursor-{n}", in_resync=True,
                          add_ids=sorted(new), seen_ids=page, changed=bool(new))
        # Deletions in batches, checkpointing each batch before asking for the next.
        missing: list[str] = []
        async for batch in store.iter_resync_missing(SUB, CONT, batch=40):
            assert len(batch) <= 40
            ids = [k.rel_id for k in batch]
            missing.extend(ids)
            await _commit(store, resync_cursor="final", in_resync=True, remove_ids=ids,
                          changed=True)
        assert missing == sorted(before - after)
        await store.finish_resync(SUB, CONT, next_token="t1", changed=True, now=200.0)
        state = await store.get_stream(SUB, CONT)
        assert state is not None
        assert (state.in_resync, state.resync_cursor, state.sync_token) == (False, None, "t1")
        assert state.known_count == len(after)
        assert [[k.rel_id for k in b] async for b in store.iter_resync_missing(SUB, CONT)] == [
            sorted(after)]  # staging emptied: everything known counts as unseen now
    assert await _known(path) == after


async def test_finish_resync_removes_ids_and_restarted_resync_clears_staging(
    tmp_path: Path,
) -> None:
    async with SqliteStateStore(_db(tmp_path)) as store:
        await _commit(store, next_token="t0", add_ids=["a", "b", "c"], changed=True)
        await store.begin_resync(SUB, CONT, cursor="k")
        await _commit(store, resync_cursor="k2", in_resync=True, seen_ids=["a", "b"])
        await store.begin_resync(SUB, CONT)  # start over: earlier sightings no longer count
        await _commit(store, resync_cursor="k3", in_resync=True, seen_ids=["a"])
        missing = [k.rel_id async for b in store.iter_resync_missing(SUB, CONT) for k in b]
        assert missing == ["b", "c"]
        item = OutboxItem("hook", "ev-c", "c", b'{"x":1}', "2024-01-01T00:00:00Z", 5.0)
        await store.finish_resync(SUB, CONT, next_token="t1", remove_ids=missing,
                                  outbox=[item], changed=True, now=9.0)
        assert await store.known_subset(SUB, CONT, ["a", "b", "c"]) == {"a"}
        rows = await store.outbox_fetch_due("hook", 10.0, 10)
        assert [(r.event_id, r.payload) for r in rows] == [("ev-c", b'{"x":1}')]
        with pytest.raises(ValueError, match="positive"):
            _ = [b async for b in store.iter_resync_missing(SUB, CONT, batch=0)]


async def test_a_version_9_file_keeps_its_known_ids_without_the_foreign_key(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Schema 10 rebuilds the known set without its foreign key (a parent lookup per
    inserted row): rows, bodies, filters, chunks and order are kept, and deleting a stream
    still deletes its known ids (a trigger instead of the cascade). The migration is logged
    before it starts (it can take minutes on a large file)."""
    from notifier.state.migrations import APPLICATION_ID, MIGRATIONS
    from notifier.state.sqlite_keys import rel_key

    path = tmp_path / "state.db"
    conn = sqlite3.connect(path, isolation_level=None)
    conn.create_function("rel_key", 1, rel_key, deterministic=True)  # used by version 5
    rows = [(1, rel_key("b"), b'{"id":"b"}', "fp", 3), (1, rel_key("a"), None, None, None),
            (2, rel_key("c"), b'{"id":"c"}', None, 0)]
    try:
        for version in MIGRATIONS[:9]:
            for statement in version:
                conn.execute(statement)
        conn.execute("PRAGMA user_version = 9")
        conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
        conn.execute("INSERT INTO streams (stream_id, subscription, container_id, sync_token,"
                     " known_count) VALUES (1, ?, ?, 't1', 2), (2, 'other', ?, 't2', 1)",
                     (SUB, CONT, CONT))
        conn.executemany("INSERT INTO known (stream_id, rel_id, body, filter_fingerprint,"
                         " chunk) VALUES (?, ?, ?, ?, ?)", rows)
    finally:
        conn.close()
    assert SCHEMA_VERSION >= 10
    caplog.set_level(logging.INFO, logger="notifier.state.migrations")
    async with SqliteStateStore(path) as store:
        assert [r.getMessage() for r in caplog.records
                if r.name == "notifier.state.migrations"][:1] == [
            f"state schema: migrating {path} from version 9 to {SCHEMA_VERSION} (once; on a "
            "large file this can take minutes)"]
        assert await store.known_subset(SUB, CONT, ["a", "b", "c"]) == {"a", "b"}
        assert await store.known_bodies(SUB, CONT, ["a", "b"]) == {"b": b'{"id":"b"}'}
        await _commit(store, next_token="t3", add_ids=["d"], changed=True)
        assert await store.forget_stream("other", CONT)
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert conn.execute("PRAGMA foreign_key_list(known)").fetchall() == []
        assert conn.execute("SELECT stream_id, rel_id, body, filter_fingerprint, chunk"
                            " FROM known ORDER BY rowid").fetchall() == [
            *rows[:2], (1, "d", None, None, None)]  # the other stream's row went with it
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    finally:
        conn.close()
