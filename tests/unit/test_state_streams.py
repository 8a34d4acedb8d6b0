"""The stream state added for exact diffs: bodies of known ids, the filter fingerprint, the
resync reason, orphan retention, and whole-subscription forget and rename (real SQLite)."""

from __future__ import annotations

import sqlite3
import sys
from pathlib import Path

import orjson
import pytest

from notifier.errors import StateError
from notifier.state.sqlite import SqliteStateStore

SUB, CONT = "project-a", "5d0c2a3e-3b1f-4b8e-9a51-0d3c1f6f7a10"


def body(rid: str) -> bytes:
    return orjson.dumps({"id": rid, "entities": [{"id": f"{rid}-a"}, {"id": f"{rid}-b"}]})


async def commit(store: SqliteStateStore, sub: str = SUB, **kw: object) -> None:
    args: dict[str, object] = {
        "next_token": None, "resync_cursor": None, "in_resync": False, "add_ids": (),
        "remove_ids": (), "changed": False, "now": 100.0,
    }
    args.update(kw)
    await store.commit_page(sub, CONT, **args)  # type: ignore[arg-type]


async def test_bodies_are_kept_with_known_ids_and_returned_with_the_missing(
    tmp_path: Path,
) -> None:
    async with SqliteStateStore(tmp_path / "s.db") as store:
        await commit(store, next_token="t0", add_ids=["a", "b", "c"],
                     bodies={"a": body("a"), "b": body("b")})
        assert await store.known_bodies(SUB, CONT, ["a", "b", "c", "x"]) == {
            "a": body("a"), "b": body("b")}
        await store.begin_resync(SUB, CONT)
        # A resync listing "c" again gives it the body it lacked; "a" keeps its own.
        await commit(store, resync_cursor="k", in_resync=True, seen_ids=["c", "a"],
                     bodies={"c": body("c"), "a": b'{"id":"a","other":1}'})
        missing = [k async for batch in store.iter_resync_missing(SUB, CONT) for k in batch]
        assert missing == [("b", body("b"), None)]
        assert await store.known_bodies(SUB, CONT, ["a", "c"]) == {
            "a": body("a"), "c": body("c")}


async def test_known_ids_keep_the_query_that_listed_them(tmp_path: Path) -> None:
    """``listed_under`` is stored with the ids a page adds (not with ids already known), and
    comes back with the missing ones at the end of a resync."""
    async with SqliteStateStore(tmp_path / "s.db") as store:
        await commit(store, next_token="t0", add_ids=["a", "b"], listed_under="q1")
        await commit(store, next_token="t1", add_ids=["b", "c"], listed_under="q2")
        await commit(store, next_token="t2", add_ids=["d"])
        await store.begin_resync(SUB, CONT)
        missing = [k async for batch in store.iter_resync_missing(SUB, CONT) for k in batch]
        assert [(k.rel_id, k.filter_fingerprint) for k in missing] == [
            ("a", "q1"), ("b", "q1"), ("c", "q2"), ("d", None)]


class _Serialising(dict[str, bytes]):
    """Bodies that note whether the store's connection was inside a transaction when asked."""

    def __init__(self, store: SqliteStateStore, items: dict[str, bytes]) -> None:
        super().__init__(items)
        self.store = store
        self.in_transaction: list[bool] = []

    def get(self, key: str, default: bytes | None = None) -> bytes | None:  # type: ignore[override]
        assert self.store._conn is not None
        self.in_transaction.append(self.store._conn.in_transaction)
        return super().get(key, default)


async def test_a_resync_checkpoint_serialises_bodies_before_its_transaction_and_skips_lookups(
    tmp_path: Path,
) -> None:
    """A page's bodies are serialised before the write transaction opens (it holds the write
    lock), and a resync page runs the bulk lookups for bodiless known ids and announcements
    only when the stream has any."""
    async with SqliteStateStore(tmp_path / "s.db") as store:
        await commit(store, next_token="t0", add_ids=["a"], bodies={"a": body("a")})
        await store.begin_resync(SUB, CONT)
        statements: list[str] = []
        await store._call("trace", lambda conn: conn.set_trace_callback(statements.append))
        bodies = _Serialising(store, {"a": body("a"), "b": body("b")})
        await commit(store, resync_cursor="k", in_resync=True, add_ids=["b"],
                     seen_ids=["a", "b"], bodies=bodies)
        await store._call("trace", lambda conn: conn.set_trace_callback(None))
        assert any("INSERT OR IGNORE INTO known" in q for q in statements)
        assert bodies.in_transaction == [False]
        bulk = [q for q in statements if " IN (" in q]
        assert not [q for q in bulk if "known_bodiless" in q or "announced" in q], bulk
        assert await store.known_bodies(SUB, CONT, ["b"]) == {"b": body("b")}


async def test_filter_fingerprint_and_resync_reason_are_part_of_the_stream_state(
    tmp_path: Path,
) -> None:
    path = tmp_path / "s.db"
    async with SqliteStateStore(path) as store:
        await commit(store, next_token="t0", filter_fingerprint="f1")
        st = await store.get_stream(SUB, CONT)
        assert st is not None
        assert (st.phase, st.filter_fingerprint, st.resync_reason) == ("incremental", "f1", None)
        await store.begin_resync(SUB, CONT, reason="filter", filter_fingerprint="f2")
        await commit(store, resync_cursor="k1", in_resync=True)
    async with SqliteStateStore(path) as store:  # durable across a restart
        st = await store.get_stream(SUB, CONT)
        assert st is not None
        assert (st.phase, st.resync_cursor, st.filter_fingerprint, st.resync_reason) == (
            "resync", "k1", "f2", "filter")
        await store.finish_resync(SUB, CONT, next_token="t1", changed=False, now=5.0)
        st = await store.get_stream(SUB, CONT)
        assert st is not None
        assert (st.phase, st.sync_token, st.filter_fingerprint, st.resync_reason) == (
            "incremental", "t1", "f2", None)
        await store.begin_resync(SUB, CONT)  # an overwrite: the reason is a snapshot
        st = await store.get_stream(SUB, CONT)
        assert st is not None
        assert st.resync_reason == "snapshot"


async def test_orphaned_streams_are_kept_for_the_retention_then_dropped(
    tmp_path: Path,
) -> None:
    async with SqliteStateStore(tmp_path / "s.db") as store:
        await commit(store, sub="old", next_token="t", add_ids=["a"])
        await commit(store, sub="live", next_token="t", add_ids=["b"])
        keep = {("live", CONT)}
        res = await store.prune_streams(keep, now=1_000.0, retention=600.0)
        assert (res.orphaned, res.kept, res.dropped) == ([("old", CONT)], [("old", CONT)], [])
        res = await store.prune_streams(keep, now=1_500.0, retention=600.0)
        assert (res.orphaned, res.kept, res.dropped) == ([], [("old", CONT)], [])
        st = await store.get_stream("old", CONT)
        assert st is not None
        assert st.orphaned_at == 1_000.0
        assert await store.known_subset("old", CONT, ["a"]) == {"a"}
        # Configured again before the retention ends: no longer an orphan, nothing lost.
        res = await store.prune_streams(keep | {("old", CONT)}, now=1_550.0, retention=600.0)
        assert res == ([], [], [])
        st = await store.get_stream("old", CONT)
        assert st is not None
        assert st.orphaned_at is None
        await store.prune_streams(keep, now=2_000.0, retention=600.0)
        res = await store.prune_streams(keep, now=2_600.0, retention=600.0)
        assert res.dropped == [("old", CONT)]
        assert await store.get_stream("old", CONT) is None
        assert await store.known_subset("live", CONT, ["b"]) == {"b"}


async def test_rename_and_forget_a_subscription(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    async with SqliteStateStore(path) as store:
        await commit(store, sub="old", next_token="t", add_ids=["a"], bodies={"a": body("a")})
        await commit(store, sub="other", next_token="t", add_ids=["b"])
        await store.prune_streams({("other", CONT)}, now=10.0, retention=100.0)
        with pytest.raises(StateError, match="already has state"):
            await store.rename_subscription("old", "other")
        assert await store.rename_subscription("old", "new") == 1
        st = await store.get_stream("new", CONT)
        assert st is not None
        assert (st.sync_token, st.known_count, st.orphaned_at) == ("t", 1, None)
        assert await store.known_bodies("new", CONT, ["a"]) == {"a": body("a")}
        assert await store.get_stream("old", CONT) is None
        assert await store.forget_subscription("other") == 1
        assert await store.forget_subscription("other") == 0
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("SELECT count(*) FROM known").fetchone()[0] == 1
    finally:
        conn.close()


async def test_listed_streams_share_their_names_and_container_ids(tmp_path: Path) -> None:
    """At start-up 100,000 rows come back: their names, container ids and filter fingerprints
    are interned (the configuration's strings are too), so they hold no copies."""
    async with SqliteStateStore(tmp_path / "s.db") as store:
        for sub in ("a", "b"):
            await commit(store, sub, next_token=f"t-{sub}", filter_fingerprint="f" * 16)
        first, second = await store.list_streams()
        assert (first.subscription, second.subscription) == ("a", "b")
        assert first.container_id == CONT
        assert first.container_id is second.container_id
        assert first.container_id is sys.intern(CONT)
        assert first.subscription is sys.intern("a")
        assert first.filter_fingerprint == "f" * 16
        assert first.filter_fingerprint is second.filter_fingerprint
        assert (first.sync_token, second.sync_token) == ("t-a", "t-b")


async def test_stream_checks_are_the_start_up_fields_of_list_streams(tmp_path: Path) -> None:
    async with SqliteStateStore(tmp_path / "s.db") as store:
        await commit(store, "a", next_token="t-a", now=100.0)
        await commit(store, "b", next_token=None, in_resync=True, resync_cursor="c-b")
        await store.mark_checked([("a", CONT)], 150.5)
        await store.quarantine("b", CONT, until=900.0, reason="bad_token")
        checks = {(c.subscription, c.container_id): c for c in await store.stream_checks()}
        states = {s.key: s for s in await store.list_streams()}
        assert set(checks) == set(states) == {("a", CONT), ("b", CONT)}
        for key, c in checks.items():
            s = states[key]
            assert (c.sync_token, bool(c.in_resync), c.last_checked_at, c.quarantined_until,
                    c.quarantine_reason, c.failures) == (
                s.sync_token, s.in_resync, s.last_checked_at, s.quarantined_until,
                s.quarantine_reason, s.failures)
        assert checks["a", CONT].last_checked_at == 150.5
        assert checks["b", CONT].in_resync == 1
        assert checks["b", CONT].quarantine_reason == "bad_token"
        assert checks["b", CONT].failures == 1
