"""Stray streams of a work partition (notifier.cluster.strays): rows of streams the
configuration puts in another partition or none are left out of a restore, marked with the time
they were first found, and tombstoned once ``state.orphan_retention`` has passed; a stream
configured here again is restored and its marker dropped."""

from __future__ import annotations

from pathlib import Path

from notifier.cluster import capture
from notifier.cluster.apply import BadRecords, apply_records
from notifier.cluster.partitions import WorkMap, partition_of
from notifier.cluster.records import RowKey, decode_row, encode_chunk, encode_key, encode_row
from notifier.cluster.strays import Strays, marker_key
from notifier.state.sqlite import SqliteStateStore

PARTITIONS = 8
HERE = partition_of("alice", PARTITIONS)
THERE = partition_of("bob", PARTITIONS)
# "a" stays with alice, "b" moved to bob; "gone" is not configured any more
WORK = WorkMap(PARTITIONS, ["alice", "bob"], {"a": ("alice",), "b": ("bob",)})
DAY = 86400.0


def key(table: str, sub: str, cid: str = "c1", ident: object = None) -> bytes:
    return encode_key(RowKey(table, sub, cid, ident))  # type: ignore[arg-type]


def test_the_two_credentials_hash_apart() -> None:
    assert HERE != THERE


def test_rows_of_streams_put_elsewhere_are_noted_not_taken() -> None:
    strays = Strays(HERE, WORK)
    row = encode_row({"sync_token": "t"})
    assert not strays.take(RowKey("streams", "a", "c1", None), key("streams", "a"), row)
    assert not strays.take(RowKey("refresh_tokens", None, None, "alice"), b"k", row)
    assert not strays.take(None, b"not a key", row)
    assert strays.take(RowKey("streams", "gone", "c1", None), key("streams", "gone"), row)
    assert strays.take(RowKey("known", "gone", "c1", 0), key("known", "gone", ident=0), row)
    assert strays.take(RowKey("known", "gone", "c1", 1), key("known", "gone", ident=1), row)
    assert strays.take(RowKey("known", "gone", "c1", 1), key("known", "gone", ident=1), None)
    assert strays.take(RowKey("streams", "b", "c2", None), key("streams", "b", "c2"), row)
    assert set(strays.streams) == {("gone", "c1"), ("b", "c2")}
    assert strays.streams[("gone", "c1")].keys == {key("streams", "gone"),
                                                   key("known", "gone", ident=0)}
    assert strays.streams[("gone", "c1")].moved_to is None
    assert strays.streams[("b", "c2")].moved_to == THERE


def test_a_stray_is_marked_then_dropped_after_the_retention() -> None:
    strays = Strays(HERE, WORK)
    strays.take(RowKey("streams", "gone", "c1", None), key("streams", "gone"), b"{}")
    strays.take(RowKey("known", "gone", "c1", 0), key("known", "gone", ident=0), b"{}")
    records, dropped = strays.settle(1000.0, DAY)
    assert dropped == []
    assert [(k, decode_row(v)) for k, v, _ in records if v is not None] == \
        [(marker_key(("gone", "c1")), {"since": 1000.0})]
    assert len(records) == 1
    assert strays.next_drop(DAY) == 1000.0 + DAY
    assert strays.settle(1000.0 + DAY - 1, DAY) == ([], []), "not due: nothing written"
    records, dropped = strays.settle(1000.0 + DAY, DAY)
    assert dropped == [("gone", "c1")]
    assert {(k, v) for k, v, _ in records} == {
        (key("streams", "gone"), None), (key("known", "gone", ident=0), None),
        (marker_key(("gone", "c1")), None)}
    assert not strays.streams
    assert not strays.markers
    assert strays.next_drop(DAY) is None


def test_a_marker_found_in_the_topic_keeps_its_time() -> None:
    """The time survives rebalances: a later restore reads it back, whatever order the marker
    and the rows come in."""
    strays = Strays(HERE, WORK)
    strays.take(RowKey("cluster_stray", "gone", "c1", None), marker_key(("gone", "c1")),
                encode_row({"since": 5.0}))
    strays.take(RowKey("streams", "gone", "c1", None), key("streams", "gone"), b"{}")
    records, dropped = strays.settle(5.0 + DAY, DAY)
    assert dropped == [("gone", "c1")]
    assert (key("streams", "gone"), None, []) in records


def test_an_unreadable_marker_counts_from_now() -> None:
    strays = Strays(HERE, WORK)
    strays.take(RowKey("cluster_stray", "gone", "c1", None), marker_key(("gone", "c1")),
                b"[not a row")
    strays.take(RowKey("streams", "gone", "c1", None), key("streams", "gone"), b"{}")
    records, dropped = strays.settle(100.0, DAY)
    assert dropped == []
    assert [decode_row(v) for _, v, _ in records if v is not None] == [{"since": 100.0}]


def test_a_stream_configured_here_again_loses_its_marker() -> None:
    strays = Strays(HERE, WORK)
    strays.take(RowKey("cluster_stray", "a", "c1", None), marker_key(("a", "c1")),
                encode_row({"since": 5.0}))
    assert not strays.take(RowKey("streams", "a", "c1", None), key("streams", "a"), b"{}")
    records, dropped = strays.settle(10.0, DAY)
    assert records == [(marker_key(("a", "c1")), None, [])]
    assert dropped == []


def test_a_stray_whose_rows_are_all_tombstoned_just_loses_its_marker() -> None:
    strays = Strays(HERE, WORK)
    strays.take(RowKey("cluster_stray", "gone", "c1", None), marker_key(("gone", "c1")),
                encode_row({"since": 5.0}))
    strays.take(RowKey("streams", "gone", "c1", None), key("streams", "gone"), b"{}")
    strays.take(RowKey("streams", "gone", "c1", None), key("streams", "gone"), None)
    records, dropped = strays.settle(10.0, DAY)
    assert records == [(marker_key(("gone", "c1")), None, [])]
    assert dropped == []
    assert not strays.streams


def test_the_warning_says_what_happened_to_each_subscription() -> None:
    strays = Strays(HERE, WORK)
    for cid in ("c1", "c2"):
        strays.take(RowKey("streams", "gone", cid, None), key("streams", "gone", cid), b"{}")
    strays.take(RowKey("streams", "b", "c3", None), key("streams", "b", "c3"), b"{}")
    line = strays.describe(7 * DAY)
    assert f"work partition {HERE} holds the state of 3 stream(s)" in line
    assert "subscription 'gone' (2 stream(s)): removed from the configuration" in line
    assert f"subscription 'b': its credentials put its streams in work partition(s) {THERE}" \
        in line
    assert "bootstrapped anew" in line
    assert "7 day(s)" in line


async def test_a_restore_leaves_strays_out_of_the_cache(tmp_path: Path) -> None:
    records: list[tuple[bytes | None, bytes | None]] = [
        (key("streams", "a"), encode_row({"sync_token": "ta"})),
        (key("known", "a", ident=0), encode_chunk(["rel_id"], [["r1"]])),
        (key("streams", "gone"), encode_row({"sync_token": "tg"})),
        (key("known", "gone", ident=0), encode_chunk(["rel_id"], [["r9"]])),
        (key("known", "gone", ident=1), b"not even JSON"),  # never read: no bad record
        (key("streams", "b", "c2"), encode_row({"sync_token": "tb"})),
        (marker_key(("gone", "c1")), encode_row({"since": 3.0})),
    ]
    async with SqliteStateStore(tmp_path / "s.db") as store:
        tables = await store._call("install", capture.install, WORK)
        bad = BadRecords()
        strays = Strays(HERE, WORK)
        applied = await store._call("apply", apply_records, tables, records, bad, strays)
        assert applied == 2
        assert not bad
        assert [s.key for s in await store.list_streams()] == [("a", "c1")]
        assert set(strays.streams) == {("gone", "c1"), ("b", "c2")}
        assert len(strays.streams[("gone", "c1")].keys) == 3
        assert strays.markers == {("gone", "c1"): 3.0}
        # without strays (state export: every partition into one file) everything is taken
        everything = await store._call("apply", apply_records, tables,
                                       [r for r in records if r[1] != b"not even JSON"])
        assert everything == 5
        assert {s.key for s in await store.list_streams()} == \
            {("a", "c1"), ("gone", "c1"), ("b", "c2")}
