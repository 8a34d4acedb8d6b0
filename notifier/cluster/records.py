"""The state topic's records: one per stored row, keyed by what names the row everywhere.

Keys are JSON arrays ``[table, subscription, container_id, id]`` (a stream's own row has id
null; a credential's rows are ``[table, null, null, credential]``); values are the row's
columns as a JSON object, or null (a tombstone: the row is gone). Compaction keeps the latest
value of every key, so the topic holds exactly the rows that exist. Local surrogate keys
(``stream_id``) never leave the replica. Bytes travel as ``{"b64": ...}``.
"""

from __future__ import annotations

import base64
from typing import Any, NamedTuple

import orjson

Scalar = str | int | float | bytes | None


class RowKey(NamedTuple):
    table: str
    subscription: str | None
    container_id: str | None
    ident: Scalar


def _enc(v: Any) -> Any:
    if isinstance(v, bytes):
        return {"b64": base64.b64encode(v).decode()}
    return v


def _dec(v: Any) -> Any:
    if isinstance(v, dict):
        return base64.b64decode(v["b64"])
    return v


def encode_key(key: RowKey) -> bytes:
    return orjson.dumps([key.table, key.subscription, key.container_id, _enc(key.ident)])


def decode_key(raw: bytes) -> RowKey | None:
    """The row a record is about; None for a record that is not a row (a fencing probe)."""
    try:
        items = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(items, list) or len(items) != 4 or not isinstance(items[0], str):
        return None
    return RowKey(items[0], items[1], items[2], _dec(items[3]))


def encode_row(row: dict[str, Any] | None) -> bytes | None:
    if row is None:
        return None
    return orjson.dumps({k: _enc(v) for k, v in row.items()})


def decode_row(raw: bytes | None) -> dict[str, Any] | None:
    if raw is None:
        return None
    return {k: _dec(v) for k, v in orjson.loads(raw).items()}


def probe_key(credential: str) -> bytes:
    """The key of an ownership probe (see ``PartitionTxn.probe``): not a row."""
    return orjson.dumps({"probe": credential})
