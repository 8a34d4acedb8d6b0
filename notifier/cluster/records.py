"""The state topic's records: one per stored row (or chunk of known ids), keyed by what names
it everywhere.

Keys are JSON arrays ``[table, subscription, container_id, id]`` (a stream's own row has id
null; a credential's rows are ``[table, null, null, credential]``); values are the row's
columns as a JSON object, or null (a tombstone: the row is gone). Compaction keeps the latest
value of every key, so the topic holds exactly the rows that exist. Local surrogate keys
(``stream_id``) never leave the replica. Bytes travel as ``{"b64": ...}``.

A stream's known ids travel in chunks: the key ``["known", subscription, container_id, n]``
names chunk n (the ids one page added, up to a few dozen), its value ``{"columns": [...],
"rows": [[id, body, ...], ...]}`` is every id the chunk holds now with its columns (a tombstone
once it holds none), so a removed id rewrites its chunk. A body is the stored relationship JSON
itself (not base64).
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from typing import Any, NamedTuple

import orjson

Scalar = str | int | float | bytes | None

# Known ids to a chunk record: a page's new ids travel in a few records instead of one each;
# a removed id rewrites its chunk (at most this many ids, bodies of well under 2 KiB each).
CHUNK_ROWS = 64


class BadRecord(ValueError):
    """A record's value this release cannot read; the message names what is wrong, never the
    value itself (a credential's row holds its refresh token)."""


class RowKey(NamedTuple):
    table: str
    subscription: str | None
    container_id: str | None
    ident: Scalar


def _enc(v: Any) -> Any:
    if isinstance(v, bytes):
        return {"b64": base64.b64encode(v).decode()}
    return v


def _column(name: str, v: Any) -> Scalar:
    """A column's stored value from its JSON form; BadRecord if it is not one."""
    if v is None or isinstance(v, str | int | float):
        return v
    if isinstance(v, dict) and v.keys() == {"b64"} and isinstance(v["b64"], str):
        try:
            return base64.b64decode(v["b64"], validate=True)
        except ValueError:
            raise BadRecord(f"column {name!r} is not valid base64") from None
    raise BadRecord(f"column {name!r} holds a JSON {type(v).__name__}, not a stored value")


def _json(raw: bytes) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise BadRecord("the value is not valid JSON") from None


def encode_key(key: RowKey) -> bytes:
    return orjson.dumps([key.table, key.subscription, key.container_id, _enc(key.ident)])


def decode_key(raw: bytes) -> RowKey | None:
    """The row a record is about; None for a record that is not a row (a fencing probe).
    BadRecord for a row's key whose parts are not names and a stored value."""
    try:
        items = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(items, list) or len(items) != 4 or not isinstance(items[0], str):
        return None
    if not all(v is None or isinstance(v, str) for v in items[1:3]):
        raise BadRecord("the key's subscription and container are not names")
    return RowKey(items[0], items[1], items[2], _column("id", items[3]))


def encode_row(row: dict[str, Any] | None) -> bytes | None:
    if row is None:
        return None
    return orjson.dumps({k: _enc(v) for k, v in row.items()})


def decode_row(raw: bytes | None) -> dict[str, Any] | None:
    """A row's columns (None for a tombstone); BadRecord if the value is not a row."""
    if raw is None:
        return None
    data = _json(raw)
    if not isinstance(data, dict):
        raise BadRecord(f"the value is a JSON {type(data).__name__}, not an object of columns")
    return {k: _column(k, v) for k, v in data.items()}


def encode_chunk(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> bytes | None:
    """The value of a chunk of known ids: ``rows`` of ``columns`` (the id first); None if
    empty. A ``body`` is the stored JSON itself."""
    if not rows:
        return None
    at = columns.index("body") if "body" in columns else -1
    return orjson.dumps({"columns": list(columns), "rows": [
        [_body(v) if i == at else _enc(v) for i, v in enumerate(row)] for row in rows]})


def _body(body: bytes | None) -> Any:
    if body is not None and body[:1] == b"{" and body[-1:] == b"}":
        return orjson.Fragment(body)  # the stored JSON object, as it is
    return _enc(body)


def decode_chunk(raw: bytes | None) -> list[dict[str, Any]]:
    """The rows of a chunk record, as column -> value (none for a tombstone); BadRecord if the
    value is not a chunk."""
    if raw is None:
        return []
    data = _json(raw)
    columns = data.get("columns") if isinstance(data, dict) else None
    rows = data.get("rows") if isinstance(data, dict) else None
    if not isinstance(columns, list) or not all(isinstance(c, str) for c in columns) \
            or not columns or not isinstance(rows, list):
        raise BadRecord("the value is not a chunk (an object of \"columns\", a list of names, "
                        "and \"rows\")")
    out: list[dict[str, Any]] = []
    for n, row in enumerate(rows):
        if not isinstance(row, list) or len(row) != len(columns):
            raise BadRecord(f"row {n} of the chunk does not have its {len(columns)} columns")
        values: dict[str, Scalar] = {}
        for c, v in zip(columns, row, strict=True):
            if c == "body" and isinstance(v, dict) and v.keys() != {"b64"}:
                values[c] = orjson.dumps(v)  # the stored JSON object itself
            else:
                values[c] = _column(c, v)
        out.append(values)
    return out


def probe_key(credential: str) -> bytes:
    """The key of an ownership probe (see ``PartitionTxn.probe``): not a row."""
    return orjson.dumps({"probe": credential})
