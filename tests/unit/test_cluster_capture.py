"""Cluster mode's change capture (notifier.cluster.capture, .apply, .records) on real SQLite
files: every write of the store becomes state-topic records of its partition, and applying
those records to an empty cache rebuilds the same rows."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from notifier.cluster import capture
from notifier.cluster.apply import apply_records
from notifier.cluster.partitions import WorkMap, partition_of
from notifier.cluster.records import (
    RowKey,
    decode_chunk,
    decode_key,
    decode_row,
    encode_chunk,
    probe_key,
)
from notifier.state.base import Announcement
from notifier.state.sqlite import SqliteStateStore
from notifier.state.sqlite_keys import Staging

WORK = WorkMap(4, ["alice", "bob"], {"a": ("alice",), "b": ("bob",)})


def part(key: RowKey) -> int | None:
    if key.table in ("refresh_tokens", "credential_status"):
        return WORK.of_credential(str(key.ident))
    assert key.subscription is not None
    assert key.container_id is not None
    return WORK.of_stream(key.subscription, key.container_id)


def ids_bodies(raw: bytes | None) -> list[tuple[Any, Any]]:
    """The (id, body) of each row of a chunk record."""
    return [(r["rel_id"], r["body"]) for r in decode_chunk(raw)]


def dump(path: Path) -> dict[str, Any]:
    """Every captured table's rows, keyed by natural keys (stream ids are local)."""
    conn = sqlite3.connect(path)
    names = {sid: (sub, cid) for sid, sub, cid in
             conn.execute("SELECT stream_id, subscription, container_id FROM streams")}
    out: dict[str, Any] = {}
    for (table,) in conn.execute("SELECT name FROM sqlite_schema WHERE type = 'table'"):
        if table == "outbox" or table.startswith("sqlite_"):
            continue
        cur = conn.execute(f'SELECT * FROM "{table}"')
        cols = [d[0] for d in cur.description]
        rows = []
        for r in cur:
            row = dict(zip(cols, r, strict=True))
            if "stream_id" in row:
                row["stream"] = names[row.pop("stream_id")]
            rows.append(repr(sorted(row.items())))
        out[table] = sorted(rows)
    conn.close()
    return out


async def _writes(store: SqliteStateStore) -> None:
    await store.commit_page("a", "c1", next_token="t1", resync_cursor=None, in_resync=False,
                            add_ids=["r1", "r2", "r3"], remove_ids=[],
                            bodies={"r1": b'{"x":1}'}, listed_under="q1", changed=True,
                            now=10.0)
    await store.begin_resync("b", "c2")
    await store.mark_announced("b", "c2", [Announcement("r9", "2024-01-01T00:00:00Z", b"{}")])
    await store.commit_page("b", "c2", next_token=None, resync_cursor="cur", in_resync=True,
                            add_ids=["r9"], remove_ids=[], seen_ids=["r9", "r8"],
                            changed=True, now=11.0)
    # A page cut short before its checkpoint leaves its announcements (one row, bodies as bytes).
    await store.mark_announced("b", "c2", [Announcement("r7", "2024-01-02T00:00:00Z",
                                                        b'{"id":"r7"}', "fp")])
    await store.commit_page("a", "c1", next_token="t2", resync_cursor=None, in_resync=False,
                            add_ids=[], remove_ids=["r2"], changed=True, now=12.0)
    await store.quarantine("a", "c1", until=99.0, reason="bad_token")
    await store.save_refresh_token("alice", "fp", "rt-1")
    await store.save_refresh_token("alice", "fp", "rt-2")
    await store.record_credential_outcome("bob", "ok", now=5.0)


async def test_captured_records_rebuild_the_same_rows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A resync's listed ids written at each checkpoint (not held in memory until close, which
    # would write them after the records below are taken).
    monkeypatch.setattr(Staging, "FLUSH_IDS", 1)
    src, dst = tmp_path / "src.db", tmp_path / "dst.db"
    async with SqliteStateStore(src) as store:
        store._ids.chunk_rows = 2  # as ClusterStore, with smaller chunks
        tables = await store._call("install", capture.install, WORK)
        await _writes(store)
        records: list[tuple[bytes, bytes | None]] = []
        for p in range(WORK.partitions):
            pending = await store._call("take", capture.take_pending, tables, p)
            for key, _ in pending.records:
                decoded = decode_key(key)
                assert decoded is not None
                assert part(decoded) == p, "a partition ships only its own rows"
            records += pending.records
            await store._call("delete", capture.delete_pending, p,
                              pending.upto)
        left = await store._call("left", lambda c: c.execute(
            "SELECT count(*) FROM temp.cluster_pending").fetchone()[0])
        assert left == 0
    keys = [decode_key(k) for k, _ in records]
    assert RowKey("known", "a", "c1", "r1") not in keys, "known ids travel in chunks"
    # r1, r2 (chunk 0) and r3 (chunk 1) came in one page; removing r2 rewrote chunk 0.
    chunks = {k.ident: ids_bodies(v) for k, (_, v) in zip(keys, records, strict=True)
              if k is not None and k.table == "known" and k.subscription == "a"}
    assert chunks == {0: [("r1", b'{"x":1}')], 1: [("r3", None)]}
    token = decode_row(records[keys.index(RowKey("refresh_tokens", None, None, "alice"))][1])
    assert token is not None
    assert token["refresh_token"] == "rt-2", "only the latest value of a key is shipped"
    assert all("stream_id" not in (decode_row(v) or {}) for k, v in records
               if not k.startswith(b'["known"'))
    assert all("stream_id" not in r for k, v in records if k.startswith(b'["known"')
               for r in decode_chunk(v))

    async with SqliteStateStore(dst) as store:
        tables = await store._call("install", capture.install, WORK)
        # In compaction's order a child may come before its stream: apply streams last.
        ordered = sorted(records, key=lambda r: b'["streams"' in r[0])
        await store._call("apply", apply_records, tables,
                          [*ordered, (probe_key("alice"), b"{}")])
        again = await store._call("left", lambda c: c.execute(
            "SELECT count(*) FROM temp.cluster_pending").fetchone()[0])
        assert again == 0, "a restore is not captured again"
    assert dump(dst) == dump(src)


async def test_wipe_drops_only_the_partitions_rows(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    async with SqliteStateStore(path) as store:
        tables = await store._call("install", capture.install, WORK)
        await _writes(store)
        pa = WORK.of_stream("a", "c1")
        assert pa != WORK.of_stream("b", "c2"), "the fixture spreads the two credentials"
        await store._call("wipe", capture.wipe, tables, pa, WORK.credentials_in(pa))
        store._ids.clear()
        streams = await store.list_streams()
        assert [s.key for s in streams] == [("b", "c2")]
        assert await store.load_refresh_token("alice", "fp") is None
        pending = await store._call("take", capture.take_pending, tables, pa)
        assert pending.records == [], "what was pending for the wiped partition is dropped"


@pytest.mark.parametrize(("name", "partitions", "expected"), [
    ("alice", 12, 11), ("bob", 12, 8), ("main", 12, 8), ("alice", 1, 0)])
def test_partition_of_is_stable(name: str, partitions: int, expected: int) -> None:
    """CRC-32, never Python's salted hash(): the same in every process and release."""
    assert partition_of(name, partitions) == expected


def test_a_stream_belongs_to_its_containers_credential() -> None:
    work = WorkMap(12, ["u1", "u2"], {"s": ("u1", "u2")})
    owners = {work.credential_of("s", f"c{i}") for i in range(20)}
    assert owners == {"u1", "u2"}
    for i in range(20):
        cred = work.credential_of("s", f"c{i}")
        assert cred is not None
        assert work.of_stream("s", f"c{i}") == partition_of(cred, 12)
    assert work.of_stream("unknown", "c1") is None


def test_cluster_metrics_exist_from_the_start_with_their_contract_names() -> None:
    """Dashboards and alerts are written on these exact names (issue 14's contract)."""
    from prometheus_client import CollectorRegistry

    from notifier.metrics import Metrics

    registry = CollectorRegistry()
    metrics = Metrics(registry, runtime=False)
    value = registry.get_sample_value
    assert value("notifier_cluster_owned_partitions") == 0
    assert value("notifier_cluster_restoring_partitions") == 0
    assert value("notifier_cluster_restore_records_total") == 0
    assert value("notifier_cluster_restore_seconds_count") == 0
    assert value("notifier_cluster_fenced_total") == 0
    for change in ("assigned", "revoked"):
        assert value("notifier_cluster_rebalances_total", {"change": change}) == 0
    for outcome in ("committed", "aborted"):
        assert value("notifier_cluster_transactions_total", {"outcome": outcome}) == 0
    metrics.cluster.rebalanced("assigned", 3)
    metrics.cluster.restored(10, 0.5)
    metrics.cluster.owned(3)
    assert value("notifier_cluster_rebalances_total", {"change": "assigned"}) == 3
    assert value("notifier_cluster_restore_records_total") == 10
    assert value("notifier_cluster_restore_seconds_count") == 1
    assert value("notifier_cluster_owned_partitions") == 3


async def test_a_stream_tombstone_then_rows_of_a_new_stream_apply_in_order(
        tmp_path: Path) -> None:
    """Records apply in topic order even when batched: a stream dropped and then written
    again keeps only what came after its tombstone."""
    from notifier.cluster.records import encode_key, encode_row

    def rec(table: str, ident: str | None, row: dict[str, Any] | None) -> tuple[bytes, Any]:
        return encode_key(RowKey(table, "a", "c1", ident)), encode_row(row)

    def chunk(n: int, rows: list[tuple[str, bytes | None]]) -> tuple[bytes, Any]:
        return encode_key(RowKey("known", "a", "c1", n)), encode_chunk(["rel_id", "body"], rows)

    async with SqliteStateStore(tmp_path / "s.db") as store:
        tables = await store._call("install", capture.install, WORK)
        await store._call("apply", apply_records, tables, [
            rec("streams", None, {"sync_token": "old", "known_count": 1}),
            chunk(0, [("r1", None)]),
            rec("streams", None, None),
            chunk(0, [("r2", None)]),
            rec("streams", None, {"sync_token": "new", "known_count": 1}),
        ])
        assert await store.known_subset("a", "c1", ["r1", "r2"]) == {"r2"}
        state = await store.get_stream("a", "c1")
        assert state is not None
        assert state.sync_token == "new"


async def test_rows_of_an_unconfigured_subscription_are_dropped_not_shipped(
        tmp_path: Path) -> None:
    """The trigger files every write under its partition; a stream of no configured
    subscription has none, and its writes are forgotten at the next take."""
    async with SqliteStateStore(tmp_path / "s.db") as store:
        store._ids.chunk_rows = 2
        tables = await store._call("install", capture.install, WORK)
        await store.commit_page("gone", "c9", next_token="t", resync_cursor=None,
                                in_resync=False, add_ids=["r1"], remove_ids=[], changed=True,
                                now=1.0)
        await store.commit_page("a", "c1", next_token="t", resync_cursor=None,
                                in_resync=False, add_ids=["r1"], remove_ids=[], changed=True,
                                now=1.0)
        pa = WORK.of_stream("a", "c1")
        assert pa is not None
        others = [p for p in range(WORK.partitions) if p != pa]
        for p in others:
            taken = await store._call("take", capture.take_pending, tables, p)
            assert taken.records == []
            assert taken.upto == 0
        mine = await store._call("take", capture.take_pending, tables, pa)
        assert {decode_key(k) for k, _ in mine.records} == {
            RowKey("streams", "a", "c1", None), RowKey("known", "a", "c1", 0)}
        await store._call("delete", capture.delete_pending, pa, mine.upto)
        left = await store._call("left", lambda c: c.execute(
            "SELECT count(*) FROM temp.cluster_pending").fetchone()[0])
        assert left == 0


async def test_a_chunk_emptied_by_removals_is_a_tombstone(tmp_path: Path) -> None:
    async with SqliteStateStore(tmp_path / "s.db") as store:
        store._ids.chunk_rows = 2
        tables = await store._call("install", capture.install, WORK)
        pa = WORK.of_stream("a", "c1")
        assert pa is not None
        await store.commit_page("a", "c1", next_token="t1", resync_cursor=None,
                                in_resync=False, add_ids=["r1", "r2", "r3"], remove_ids=[],
                                changed=True, now=1.0)
        first = await store._call("take", capture.take_pending, tables, pa)
        await store._call("delete", capture.delete_pending, pa, first.upto)
        await store.commit_page("a", "c1", next_token="t2", resync_cursor=None,
                                in_resync=False, add_ids=["r4"], remove_ids=["r1", "r2"],
                                changed=True, now=2.0)
        second = await store._call("take", capture.take_pending, tables, pa)
    by_key = {decode_key(k): v for k, v in second.records}
    assert by_key[RowKey("known", "a", "c1", 0)] is None, "chunk 0 holds nothing any more"
    assert RowKey("known", "a", "c1", 1) not in by_key, "chunk 1 was not written"
    assert ids_bodies(by_key[RowKey("known", "a", "c1", 2)]) == [("r4", None)], \
        "new ids start a new chunk"


async def test_an_id_a_chunk_takes_from_another_leaves_that_chunk_to_ship(
        tmp_path: Path) -> None:
    """Two chunks of a merged topic listing one id: the later wins, and the other chunk is
    shipped again without it (else a later removal would leave it in the topic)."""
    from notifier.cluster.records import encode_key

    def chunk(n: int, ids: list[str]) -> tuple[bytes, bytes | None]:
        return (encode_key(RowKey("known", "a", "c1", n)),
                encode_chunk(["rel_id", "body"], [(i, None) for i in ids]))

    async with SqliteStateStore(tmp_path / "s.db") as store:
        tables = await store._call("install", capture.install, WORK)
        await store._call("apply", apply_records, tables,
                          [chunk(0, ["r1", "r2"]), chunk(5, ["r2", "r3"])])
        assert await store.known_subset("a", "c1", ["r1", "r2", "r3"]) == {"r1", "r2", "r3"}
        pa = WORK.of_stream("a", "c1")
        assert pa is not None
        again = await store._call("take", capture.take_pending, tables, pa)
    assert [(decode_key(k), ids_bodies(v)) for k, v in again.records] == [
        (RowKey("known", "a", "c1", 0), [("r1", None)])]


async def test_a_single_process_file_is_exported_in_chunks_that_restore_it(
        tmp_path: Path) -> None:
    """Import reads a file without chunk numbers (single-process mode) as chunk records."""
    from notifier.cluster.records import encode_key

    src, dst = tmp_path / "single.db", tmp_path / "cache.db"
    async with SqliteStateStore(src) as store:
        for page, ids in enumerate((["r1", "r2", "r3"], ["r4"])):
            for sub, cid in (("a", "c1"), ("b", "c2")):
                await store.commit_page(sub, cid, next_token=f"t{page}", resync_cursor=None,
                                        in_resync=False, add_ids=[f"{cid}{i}" for i in ids],
                                        remove_ids=[], bodies={f"{cid}r1": b'{"x":1}'},
                                        changed=True, now=1.0)
        tables = await store._call("tables", capture.tables_of)
        rows = await store._call("rows", lambda c: list(capture.all_rows(c, tables, 3)))
    records = [(encode_key(k), v) for k, v in rows]
    chunks = [(k, decode_chunk(v)) for k, v in rows if k.table == "known"]
    assert sorted((k.subscription, k.ident, len(rows)) for k, rows in chunks) == [
        ("a", 0, 3), ("a", 1, 1), ("b", 0, 3), ("b", 1, 1)]
    async with SqliteStateStore(dst) as store:
        tables = await store._call("install", capture.install, WORK)
        await store._call("apply", apply_records, tables, records)
        assert await store.known_bodies("a", "c1", ["c1r1", "c1r4"]) == {"c1r1": b'{"x":1}'}
        assert await store.known_subset("b", "c2", [f"c2r{i}" for i in range(1, 6)]) == {
            "c2r1", "c2r2", "c2r3", "c2r4"}


async def test_the_cluster_cache_does_not_fsync_each_commit(tmp_path: Path) -> None:
    """The state topic is the durable copy: the cache runs synchronous=NORMAL (WAL: consistent
    after a crash), a single process's state file synchronous=FULL."""
    from notifier.cluster.store import ClusterStore

    async with ClusterStore(tmp_path / "cache.db", WORK) as cache:
        assert await cache._call("q", lambda c: c.execute("PRAGMA synchronous").fetchone()[0]) \
            == 1
    async with SqliteStateStore(tmp_path / "single.db") as single:
        assert await single._call("q", lambda c: c.execute("PRAGMA synchronous").fetchone()[0]) \
            == 2
