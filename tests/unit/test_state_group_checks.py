"""Check times stamped once per container (schema 11, notifier.state.sqlite_checks): what each
stream's check time reads back as, across restarts, forget, rename, prune, a version-10 file and
a state import (real SQLite files)."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

from prometheus_client import CollectorRegistry

from notifier.cluster import capture
from notifier.cluster.records import decode_row
from notifier.core.budget import RequestBudget
from notifier.core.planner import SchedulerSettings
from notifier.metrics import Metrics
from notifier.scheduler import CredentialScheduler
from notifier.source.auth import StaticTokenProvider
from notifier.source.client import RelationshipClient
from notifier.source.http import create_session
from notifier.state.migrations import APPLICATION_ID, MIGRATIONS, SCHEMA_VERSION
from notifier.state.sqlite import SqliteStateStore
from notifier.state.sqlite_keys import rel_key
from notifier.stream import StreamSpec
from notifier.sync import StreamSyncer

A, B = "c-a", "c-b"


async def _commit(store: SqliteStateStore, sub: str, cont: str, now: float) -> None:
    await store.commit_page(sub, cont, next_token=f"t-{sub}", resync_cursor=None,
                            in_resync=False, add_ids=(), remove_ids=(), changed=False, now=now)


async def _times(store: SqliteStateStore) -> dict[tuple[str, str], float | None]:
    """Each stream's check time, as every read gives it (and all of them agree; start-up's
    stream_checks gives each stream's own, to combine with the check_stamps naming it)."""
    listed = {s.key: s.last_checked_at for s in await store.list_streams()}
    stamps = await store.check_stamps()
    checks = {}
    for c in await store.stream_checks():
        times = [c.last_checked_at, *(at for subs, at in stamps.get(c.container_id, [])
                                      if c.subscription in subs)]
        known = [t for t in times if t is not None]
        checks[c.subscription, c.container_id] = max(known) if known else None
    one = {}
    for key in listed:
        st = await store.get_stream(*key)
        assert st is not None
        one[key] = st.last_checked_at
    assert listed == checks == one
    return listed


async def _three_streams(store: SqliteStateStore) -> None:
    for sub in ("x", "y", "z"):
        await _commit(store, sub, A, 10.0)
    await _commit(store, "x", B, 10.0)


async def test_a_group_stamp_speaks_for_the_streams_it_names_and_survives_a_restart(
    tmp_path: Path,
) -> None:
    path = tmp_path / "s.db"
    async with SqliteStateStore(path) as store:
        await _three_streams(store)
        await store.mark_checked([], 50.0, [(A, ("x", "y"))])  # "z" was not covered
        await store.mark_checked([("z", A)], 40.0)
        await store.mark_checked([], 30.0, [(B, ("x",))])
        await store.mark_checked([], 20.0, [(A, ("x", "y"))])  # an older batch: no step back
        await _commit(store, "y", A, 60.0)  # a drain's checkpoint: newer than the stamp
        await store.mark_checked([], 55.0, [(A, ("w", "x", "y", "z"))])  # "w": no row
    async with SqliteStateStore(path) as store:
        assert await _times(store) == {("x", A): 55.0, ("y", A): 60.0, ("z", A): 55.0,
                                       ("x", B): 30.0}
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("SELECT count(*) FROM group_checks").fetchone()[0] == 3
        # Nothing was written to the streams' rows by the stamps.
        assert dict(conn.execute("SELECT subscription || container_id, last_checked_at"
                                 " FROM streams")) == {"xc-a": 10.0, "yc-a": 60.0,
                                                       "zc-a": 40.0, "xc-b": 10.0}
    finally:
        conn.close()


async def test_forget_rename_and_prune_keep_every_other_streams_check_time(
    tmp_path: Path,
) -> None:
    async with SqliteStateStore(tmp_path / "s.db") as store:
        await _three_streams(store)
        await store.mark_checked([], 50.0, [(A, ("x", "y", "z")), (B, ("x",))])
        assert await store.forget_stream("z", A) is True
        # Back, the forgotten stream has no check time of the stamp that named it.
        await _commit(store, "z", A, 5.0)
        assert await _times(store) == {("x", A): 50.0, ("y", A): 50.0, ("z", A): 5.0,
                                       ("x", B): 50.0}
        await store.mark_checked([], 70.0, [(A, ("x", "y", "z"))])
        assert await store.rename_subscription("x", "v") == 2
        await _commit(store, "x", A, 1.0)  # a new "x": not the one checked
        assert await _times(store) == {("v", A): 70.0, ("y", A): 70.0, ("z", A): 70.0,
                                       ("v", B): 50.0, ("x", A): 1.0}
        await store.mark_checked([], 80.0, [(A, ("v", "x", "y", "z"))])
        await store.prune_streams({("v", A), ("y", A), ("v", B)}, now=100.0, retention=0.0)
        await store.prune_streams({("v", A), ("y", A), ("v", B)}, now=100.0, retention=0.0)
        await _commit(store, "z", A, 2.0)
        assert await _times(store) == {("v", A): 80.0, ("y", A): 80.0, ("v", B): 50.0,
                                       ("z", A): 2.0}
        assert await store.forget_subscription("v") == 2
        await _commit(store, "v", B, 3.0)
        assert await _times(store) == {("y", A): 80.0, ("z", A): 2.0, ("v", B): 3.0}


async def test_a_version_10_file_is_migrated_and_keeps_its_check_times(tmp_path: Path) -> None:
    path = tmp_path / "v10.db"
    conn = sqlite3.connect(path, isolation_level=None)
    conn.create_function("rel_key", 1, rel_key)  # (version 5 converts ids with it)
    try:
        for version in MIGRATIONS[:10]:
            for statement in version:
                conn.execute(statement)
        conn.execute("PRAGMA user_version = 10")
        conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
        conn.executemany("INSERT INTO streams (subscription, container_id, sync_token,"
                         " last_checked_at) VALUES (?, ?, 't', ?)",
                         [("x", A, 40.0), ("y", A, None)])
    finally:
        conn.close()
    assert SCHEMA_VERSION == 11
    async with SqliteStateStore(path) as store:
        assert await _times(store) == {("x", A): 40.0, ("y", A): None}
        await store.mark_checked([], 50.0, [(A, ("x", "y"))])
        assert await _times(store) == {("x", A): 50.0, ("y", A): 50.0}
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    finally:
        conn.close()


async def test_a_state_import_reads_each_streams_check_time_with_its_stamps(
    tmp_path: Path,
) -> None:
    async with SqliteStateStore(tmp_path / "s.db") as store:
        await _three_streams(store)
        await store.mark_checked([], 50.0, [(A, ("x", "y"))])

        def rows(conn: sqlite3.Connection) -> dict[tuple[str, str], object]:
            tables = capture.tables_of(conn)
            assert "group_checks" not in tables  # never a record of its own
            return {(k.subscription, k.container_id): decode_row(v)["last_checked_at"]
                    for k, v in capture.all_rows(conn, tables, 100)
                    if k.table == "streams" and v is not None}

        got = await store._call("read rows", rows)
    assert got == {("x", A): 50.0, ("y", A): 50.0, ("z", A): 10.0, ("x", B): 10.0}


async def test_a_scheduler_restores_each_streams_check_time_from_its_groups_stamp(
    tmp_path: Path,
) -> None:
    keys = [("x", A), ("y", A), ("z", A), ("x", B), ("y", B)]
    async with SqliteStateStore(tmp_path / "s.db") as store, create_session() as session:
        for sub, cont in keys:
            await _commit(store, sub, cont, 10.0)
        await store.mark_checked([], 50.0, [(A, ("x", "y", "z"))])  # every stream of A
        await store.mark_checked([], 60.0, [(B, ("w", "x"))])  # of B's streams then, "x" only
        await store.mark_checked([("y", B)], 30.0)
        assert (await store.stream_checks())[0].last_checked_at == 10.0  # its own
        client = RelationshipClient(session, base_url="http://127.0.0.1:9",
                                    credential_name="main", tokens=StaticTokenProvider("t"),
                                    budget=RequestBudget(6000), concurrency=1)
        metrics = Metrics(CollectorRegistry(), runtime=False)
        sch = CredentialScheduler(
            "main", client, [StreamSpec(sub, cont, ("main",), ()) for sub, cont in keys],
            store=store, syncer=StreamSyncer(store, metrics=metrics), metrics=metrics,
            settings=SchedulerSettings(requests_per_minute=6000), drain_slots=asyncio.Semaphore(1),
            clock=lambda: 100.0)
        await sch.load()
        assert {s.spec.key: s.last_checked for s in sch.streams} == {
            ("x", A): 50.0, ("y", A): 50.0, ("z", A): 50.0, ("x", B): 60.0, ("y", B): 30.0}
        assert sch.planner.groups[A].last_checked == 50.0
        assert sch.planner.groups[B].last_checked == 30.0
