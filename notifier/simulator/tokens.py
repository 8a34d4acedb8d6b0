"""Opaque sync tokens and search continuation tokens.

A sync token is standard base64 of a JSON object (like the real service's)::

    {"v": 1, "c": container, "u": user, "q": query, "w": watermark,
     "m": "i" | "s", "k": cursor, "e": window end, "o": overwrite, "sig": ...}

``w`` is a change-log sequence number. ``m`` is "i" (incremental: changes after ``w``) or "s"
(a snapshot as of ``w`` being paged). ``k`` is the paging cursor (null once a sync is fully
drained), ``e`` the end of the change window being paged, ``o`` whether the pages of this
snapshot are an overwrite resync. ``sig`` is a keyed hash over the rest, so a garbled or edited
token is rejected instead of silently misread. Continuation tokens for search and intersect are
URL-safe base64 of ``{"k": cursor, "w": watermark, "h": query hash, "sig": ...}``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import orjson

from notifier.simulator.query import Query

VERSION = 1
INCREMENTAL = "i"
SNAPSHOT = "s"
Cursor = int | tuple[int, int] | None


class TokenError(ValueError):
    """The token cannot be used (garbled, foreign, stale beyond repair)."""


@dataclass(frozen=True, slots=True)
class SyncToken:
    container: str
    user: str
    query: Query
    watermark: int
    mode: str = INCREMENTAL
    cursor: Cursor = None
    end: int | None = None
    overwrite: bool = False


def _cursor_json(cursor: Cursor) -> Any:
    return list(cursor) if isinstance(cursor, tuple) else cursor


def _cursor_from(value: Any) -> Cursor:
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if (isinstance(value, list) and len(value) == 2
            and all(isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in value)):
        return (value[0], value[1])
    raise TokenError("bad cursor")


class TokenCodec:
    """Encodes and checks tokens with a per-simulator key; decoding is memoised."""

    def __init__(self, key: bytes, cache_size: int = 1 << 17) -> None:
        self._key = key
        self._decode_cached = lru_cache(maxsize=cache_size)(self._decode_uncached)
        self._queries: dict[str, Query] = {}

    def _mac(self, payload: bytes) -> str:
        return hashlib.blake2b(payload, key=self._key, digest_size=9).hexdigest()

    def _seal(self, data: dict[str, Any]) -> bytes:
        data["sig"] = self._mac(orjson.dumps(data, option=orjson.OPT_SORT_KEYS))
        return orjson.dumps(data)

    def _open(self, raw: bytes) -> dict[str, Any]:
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise TokenError("not JSON") from exc
        if not isinstance(data, dict) or not isinstance(data.get("sig"), str):
            raise TokenError("not a token")
        sig = data.pop("sig")
        if sig != self._mac(orjson.dumps(data, option=orjson.OPT_SORT_KEYS)):
            raise TokenError("signature mismatch")
        return data

    def _query(self, data: Any) -> Query:
        key = orjson.dumps(data, option=orjson.OPT_SORT_KEYS).decode()
        q = self._queries.get(key)
        if q is None:
            try:
                q = Query.from_json(data)
            except ValueError as exc:
                raise TokenError(str(exc)) from exc
            if len(self._queries) > 50_000:
                self._queries.clear()
            self._queries[key] = q
        return q

    # -- sync tokens --------------------------------------------------------------------------

    def encode(self, tok: SyncToken) -> str:
        data = {"v": VERSION, "c": tok.container, "u": tok.user, "q": tok.query.to_json(),
                "w": tok.watermark, "m": tok.mode, "k": _cursor_json(tok.cursor),
                "e": tok.end, "o": tok.overwrite}
        return base64.b64encode(self._seal(data)).decode()

    def decode(self, token: object) -> SyncToken:
        """The token's content; TokenError when it is not a token this simulator issued."""
        if not isinstance(token, str) or not token or len(token) > 16384:
            raise TokenError("syncToken must be a non-empty string")
        result = self._decode_cached(token)
        if isinstance(result, str):
            raise TokenError(result)
        return result

    def _decode_uncached(self, token: str) -> SyncToken | str:
        try:
            raw = base64.b64decode(token.encode(), validate=True)
            d = self._open(raw)
            if d.get("v") != VERSION:
                return "unsupported token version"
            w, e, mode = d["w"], d["e"], d["m"]
            if not isinstance(w, int) or w < 0 or mode not in (INCREMENTAL, SNAPSHOT):
                return "bad watermark"
            if e is not None and not isinstance(e, int):
                return "bad window end"
            if not isinstance(d["c"], str) or not isinstance(d["u"], str):
                return "bad owner"
            return SyncToken(container=d["c"], user=d["u"], query=self._query(d["q"]),
                             watermark=w, mode=mode, cursor=_cursor_from(d["k"]), end=e,
                             overwrite=bool(d["o"]))
        except TokenError as exc:
            return str(exc)
        except (binascii.Error, ValueError, KeyError, TypeError) as exc:
            return f"malformed token ({type(exc).__name__})"

    # -- continuation tokens (search / intersect) ---------------------------------------------

    def encode_continuation(self, cursor: Cursor, watermark: int, query: Query) -> str:
        data = {"k": _cursor_json(cursor), "w": watermark, "h": self._mac(query.key.encode())}
        return base64.urlsafe_b64encode(self._seal(data)).decode().rstrip("=")

    def decode_continuation(self, token: str, query: Query) -> tuple[Cursor, int]:
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
            d = self._open(raw)
            if d.get("h") != self._mac(query.key.encode()):
                raise TokenError("continuationToken belongs to a different query")
            w = d["w"]
            if not isinstance(w, int) or w < 0:
                raise TokenError("bad watermark")
            return _cursor_from(d["k"]), w
        except (binascii.Error, ValueError, KeyError, TypeError) as exc:
            if isinstance(exc, TokenError):
                raise
            raise TokenError("malformed continuationToken") from exc
