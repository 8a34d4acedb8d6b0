"""Sync and continuation tokens of the simulator: opaque, checked, bound to their query."""

from __future__ import annotations

import base64

import orjson
import pytest

from notifier.simulator.query import Query, search_query
from notifier.simulator.tokens import SNAPSHOT, SyncToken, TokenCodec, TokenError

C = "5d0c2a3e-3b1f-4b8e-9a51-0d3c1f6f7a10"


@pytest.fixture
def codec() -> TokenCodec:
    return TokenCodec(b"k" * 32)


@pytest.mark.parametrize("query", [
    Query.everything(),
    Query.for_domains(["autodesk-bim360-asset"]),
    search_query({"domain": "d", "type": "t", "id": "i", "createdAfter": "2024-01-01T00:00:00Z",
                  "onlyDeleted": "True"}),
    Query.intersect([("d", "t", "1"), ("d", "t", "2")], [("x", None, None)], True, False),
])
def test_round_trip_keeps_query_and_position(codec: TokenCodec, query: Query):
    tok = SyncToken(C, "u", query, 42, SNAPSHOT, (1, 3) if query.anchors else 7, None, True)
    text = codec.encode(tok)
    decoded = codec.decode(text)
    assert decoded.query.key == query.key
    assert (decoded.container, decoded.user, decoded.watermark, decoded.mode, decoded.cursor,
            decoded.overwrite) == (C, "u", 42, SNAPSHOT, tok.cursor, True)
    assert orjson.loads(base64.b64decode(text))["w"] == 42  # opaque, but base64 JSON


def test_edited_or_garbled_tokens_are_rejected(codec: TokenCodec):
    text = codec.encode(SyncToken(C, "u", Query.everything(), 5))
    data = orjson.loads(base64.b64decode(text))
    data["w"] = 1
    edited = base64.b64encode(orjson.dumps(data)).decode()
    for bad in (edited, text[:-4], "not base64!", "", 17, None, base64.b64encode(b"[]").decode()):
        with pytest.raises(TokenError):
            codec.decode(bad)
    with pytest.raises(TokenError):
        TokenCodec(b"x" * 32).decode(text)  # another simulator's key


def test_continuation_is_bound_to_its_query(codec: TokenCodec):
    q1, q2 = search_query({"domain": "a"}), search_query({"domain": "b"})
    cont = codec.encode_continuation(12, 30, q1)
    assert codec.decode_continuation(cont, q1) == (12, 30)
    with pytest.raises(TokenError):
        codec.decode_continuation(cont, q2)
    with pytest.raises(TokenError):
        codec.decode_continuation("zz", q1)
