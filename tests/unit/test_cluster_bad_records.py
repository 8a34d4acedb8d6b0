"""A state-topic record this release cannot read (notifier.cluster.apply, .records): left out of
the restore and named in a clear error, never silently skipped and never quoted (a credential's
row holds its refresh token); a later record of the same key, which replaces it in the topic,
clears it."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from notifier.cluster import capture
from notifier.cluster.apply import BadRecords, apply_records
from notifier.cluster.partitions import WorkMap
from notifier.cluster.records import (
    BadRecord,
    RowKey,
    decode_chunk,
    decode_row,
    encode_chunk,
    encode_key,
    encode_row,
)
from notifier.errors import StateRecordError
from notifier.state.sqlite import SqliteStateStore

WORK = WorkMap(2, ["alice"], {"a": ("alice",)})
SECRET = "rt-do-not-print-me"


def key(table: str, ident: object, sub: str | None = "a", cid: str | None = "c1") -> bytes:
    return encode_key(RowKey(table, sub, cid, ident))  # type: ignore[arg-type]


@pytest.mark.parametrize(("value", "reason"), [
    (b"{not json", "not valid JSON"),
    (b"[1, 2]", "JSON list, not an object of columns"),
    (orjson.dumps({"refresh_token": [SECRET]}), "column 'refresh_token' holds a JSON list"),
    (orjson.dumps({"refresh_token": {"b64": "%%%"}}), "column 'refresh_token' is not valid "
                                                       "base64"),
    (orjson.dumps({"refresh_token": {"x": SECRET}}), "holds a JSON dict"),
])
def test_a_row_that_is_not_one_is_named_without_its_value(value: bytes, reason: str) -> None:
    with pytest.raises(BadRecord, match=reason) as caught:
        decode_row(value)
    assert SECRET not in str(caught.value)


@pytest.mark.parametrize(("value", "reason"), [
    (b'{"rows": []}', "not a chunk"),
    (b'{"columns": [], "rows": []}', "not a chunk"),
    (b'{"columns": ["rel_id", 3], "rows": []}', "not a chunk"),
    (b'{"columns": ["rel_id", "body"], "rows": [["r1"]]}', "row 0 of the chunk"),
    (b'{"columns": ["rel_id"], "rows": [[["r1"]]]}', "column 'rel_id' holds a JSON list"),
])
def test_a_chunk_that_is_not_one_is_named(value: bytes, reason: str) -> None:
    with pytest.raises(BadRecord, match=reason):
        decode_chunk(value)


def test_good_values_still_decode() -> None:
    assert decode_row(encode_row({"a": 1, "b": b"\x00\x01", "c": None})) == \
        {"a": 1, "b": b"\x00\x01", "c": None}
    chunk = encode_chunk(["rel_id", "body"], [["r1", b'{"x":1}'], ["r2", None]])
    assert decode_chunk(chunk) == [{"rel_id": "r1", "body": b'{"x":1}'},
                                   {"rel_id": "r2", "body": None}]


async def test_a_restore_leaves_out_what_it_cannot_read_and_says_so(tmp_path: Path) -> None:
    stream = encode_row({"sync_token": "t1"})
    records: list[tuple[bytes | None, bytes | None]] = [
        (key("streams", None), stream),
        (key("refresh_tokens", "alice", None, None), orjson.dumps({"refresh_token": [SECRET]})),
        (key("known", 0), b'{"columns": ["rel_id"]}'),
        (key("known", 1), encode_chunk(["rel_id"], [["r1"]])),
        (key("streams", None, sub=None), stream),  # a stream row that names no stream
        (key("known", 2), b"garbage"),
        (key("known", 2), encode_chunk(["rel_id"], [["r2"]])),  # replaces the garbage
    ]
    async with SqliteStateStore(tmp_path / "s.db") as store:
        tables = await store._call("install", capture.install, WORK)
        bad = BadRecords()
        applied = await store._call("apply", apply_records, tables, records, bad)
        assert applied == 3, "the readable rows are applied"
        streams = await store.list_streams()
        assert [s.key for s in streams] == [("a", "c1")]
        assert streams[0].sync_token == "t1"
        assert await store.known_subset("a", "c1", ["r1", "r2", "r3"]) == {"r1", "r2"}
        assert set(bad) == {key("refresh_tokens", "alice", None, None), key("known", 0),
                            key("streams", None, sub=None)}, "a later record clears its key"
        with pytest.raises(StateRecordError) as caught:
            bad.check("state topic 't' partition 1")
        message = str(caught.value)
        assert message.startswith("state topic 't' partition 1: 3 record(s) cannot be read")
        assert '["known","a","c1",0]: the value is not a chunk' in message
        assert "names no subscription and container" in message
        assert SECRET not in message
        with pytest.raises(BadRecord):
            await store._call("apply", apply_records, tables, records[1:2])


def test_a_long_list_of_bad_keys_is_cut_short() -> None:
    bad = BadRecords({key("known", n): "the value is not valid JSON" for n in range(12)})
    with pytest.raises(StateRecordError, match=r"12 record\(s\).*\(and 7 more\)"):
        bad.check("state topic 't'")
    BadRecords().check("nothing wrong")


async def test_a_row_the_tables_refuse_is_named_and_the_rest_applied(tmp_path: Path) -> None:
    """Valid JSON that breaks a column's constraint (a NOT NULL column missing or null) failed
    the whole batch as a generic store error; it is now noted under its key like any unreadable
    record, by the constraint SQLite names, and the batch's other rows are applied."""
    records: list[tuple[bytes | None, bytes | None]] = [
        (key("streams", None), encode_row({"sync_token": "t1"})),
        (key("refresh_tokens", "alice", None, None),
         encode_row({"seed_fingerprint": SECRET})),  # no refresh_token: NOT NULL
        (key("streams", None, cid="c2"), encode_row({"sync_token": "t2", "in_resync": None})),
        (key("known", 1), encode_chunk(["rel_id"], [["r1"]])),
        (key("streams", None, cid="c3"), encode_row({"sync_token": "t3", "in_resync": None})),
        (key("streams", None, cid="c3"), encode_row({"sync_token": "t3b"})),  # replaces it
    ]
    async with SqliteStateStore(tmp_path / "s.db") as store:
        tables = await store._call("install", capture.install, WORK)
        bad = BadRecords()
        applied = await store._call("apply", apply_records, tables, records, bad)
        assert applied == 3
        tokens = {s.key: s.sync_token for s in await store.list_streams()}
        assert tokens == {("a", "c1"): "t1", ("a", "c3"): "t3b"}
        assert await store.known_subset("a", "c1", ["r1", "r2"]) == {"r1"}
        assert await store.load_refresh_token("alice", SECRET) is None
        assert set(bad) == {key("refresh_tokens", "alice", None, None),
                            key("streams", None, cid="c2")}
        with pytest.raises(StateRecordError) as caught:
            bad.check("state topic 't' partition 0")
        message = str(caught.value)
        assert "NOT NULL constraint failed: refresh_tokens.refresh_token" in message
        assert "NOT NULL constraint failed: streams.in_resync" in message
        assert SECRET not in message
        # a batch the tables accept is applied whole, as before
        more = await store._call("apply", apply_records, tables, records[:1], BadRecords())
        assert more == 1
