"""Payload validation: good payloads become models, bad ones a ProtocolError saying where."""

from __future__ import annotations

import copy
import time
import uuid
from collections.abc import Callable
from typing import Any

import orjson
import pytest

from notifier.errors import ProtocolError
from notifier.source.parse import (
    error_detail,
    parse_relationship,
    parse_relationship_list,
    parse_search_page,
    parse_sync_page,
    parse_sync_status,
)


def rel(deleted: bool = False, **extra: Any) -> dict[str, Any]:
    item: dict[str, Any] = {
        "id": str(uuid.uuid4()),
        "createdOn": "2022-03-01T14:17:34.781856+00:00",
        "isReadOnly": False,
        "isService": False,
        "isDeleted": deleted,
        "permission": None,  # observed in the wild; unknown fields are kept, not rejected
        "entities": [
            {"domain": "autodesk-bim360-asset", "type": "asset", "id": str(uuid.uuid4()),
             "createdOn": "2022-03-01T14:17:34Z"},
            {"domain": "autodesk-bim360-issue", "type": "issue", "id": str(uuid.uuid4()),
             "createdOn": "2022-03-01T14:17:34Z"},
        ],
    }
    if deleted:
        item["deletedOn"] = "2022-03-02T10:00:00Z"
    item.update(extra)
    return item


def sync_body(
    current: list[Any] | None = None, deleted: list[Any] | None = None, **overrides: Any
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "current": {"data": current if current is not None else [rel(), rel()]},
        "deleted": {"data": deleted if deleted is not None else [rel(deleted=True)]},
        "moreData": True,
        "overwrite": False,
        "nextSyncToken": "eyAibGFzdENoZWNrZWQiOiIy",
    }
    body.update(overrides)
    return body


def dump(value: Any) -> bytes:
    return orjson.dumps(value)


def test_sync_page_round_trip_keeps_raw_dicts_as_sent():
    body = sync_body()
    raw = dump(body)
    page = parse_sync_page(raw)
    assert [r.id for r in page.current] == [r["id"] for r in body["current"]["data"]]
    assert page.current[0].raw == body["current"]["data"][0]
    assert page.current[0].raw["permission"] is None
    assert page.deleted[0].is_deleted is True
    assert page.deleted[0].deleted_on == "2022-03-02T10:00:00Z"
    assert page.current[0].deleted_on is None
    assert page.more_data is True
    assert page.overwrite is False
    assert page.next_sync_token == "eyAibGFzdENoZWNrZWQiOiIy"
    assert page.size_bytes == len(raw)


def test_huge_page_is_fine_and_fast():
    body = dump(sync_body(current=[rel() for _ in range(5000)], deleted=[]))
    start = time.perf_counter()
    page = parse_sync_page(body)
    assert len(page.current) == 5000
    assert time.perf_counter() - start < 1.0  # a few ms in practice


def bad(mutate: Callable[[dict[str, Any]], object]) -> bytes:
    body = sync_body(current=[rel() for _ in range(5)])
    mutate(body)
    return dump(body)


def _drop(d: dict[str, Any], key: str) -> None:
    del d[key]


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b"", "not valid JSON"),
        (b"<html>502 Bad Gateway</html>", "not valid JSON"),
        (dump(sync_body())[:-40], "not valid JSON"),  # truncated
        (b"[]", "expected an object, got an array"),
        (b"null", "expected an object, got null"),
        (bad(lambda b: _drop(b, "moreData")), "missing field 'moreData'"),
        (bad(lambda b: _drop(b, "nextSyncToken")), "missing field 'nextSyncToken'"),
        (bad(lambda b: b.update(moreData="true")), "moreData: expected a boolean, got a string"),
        (bad(lambda b: b.update(overwrite=1)), "overwrite: expected a boolean, got a number"),
        (bad(lambda b: b.update(nextSyncToken=None)), "nextSyncToken: expected a string, got null"),
        (bad(lambda b: b.update(current=[])), "current: expected an object, got an array"),
        (bad(lambda b: _drop(b["deleted"], "data")), "deleted: missing field 'data'"),
        (bad(lambda b: b["current"]["data"].append("x")),
         "current.data[5]: expected an object, got a string"),
        (bad(lambda b: b["current"]["data"][3]["entities"].append(
            copy.deepcopy(b["current"]["data"][3]["entities"][0]))),
         "current.data[3].entities: expected exactly 2 items, got 3"),
        (bad(lambda b: b["current"]["data"][0]["entities"].pop()),
         "current.data[0].entities: expected exactly 2 items, got 1"),
        (bad(lambda b: b["current"]["data"][2].update(entities={})),
         "current.data[2].entities: expected an array, got an object"),
        (bad(lambda b: _drop(b["current"]["data"][1], "id")),
         "current.data[1]: missing field 'id'"),
        (bad(lambda b: b["current"]["data"][1].update(id="")),
         "current.data[1].id: expected a non-empty string"),
        (bad(lambda b: b["current"]["data"][1].update(id=42)),
         "current.data[1].id: expected a string, got a number"),
        (bad(lambda b: _drop(b["current"]["data"][4], "createdOn")),
         "current.data[4]: missing field 'createdOn'"),
        (bad(lambda b: b["current"]["data"][4].update(isDeleted=None)),
         "current.data[4].isDeleted: expected a boolean, got null"),
        (bad(lambda b: b["current"]["data"][4].update(deletedOn=5)),
         "current.data[4].deletedOn: expected a string or null, got a number"),
        (bad(lambda b: b["current"]["data"][4].update(isReadOnly="no")),
         "current.data[4].isReadOnly: expected a boolean or null, got a string"),
        (bad(lambda b: b["current"]["data"][0]["entities"].__setitem__(1, "asset")),
         "current.data[0].entities[1]: expected an object, got a string"),
        (bad(lambda b: _drop(b["current"]["data"][0]["entities"][1], "domain")),
         "current.data[0].entities[1]: missing field 'domain'"),
        (bad(lambda b: b["current"]["data"][0]["entities"][0].update(id=None)),
         "current.data[0].entities[0].id: expected a string, got null"),
        (bad(lambda b: b["current"]["data"][0]["entities"][0].update(createdOn=1)),
         "current.data[0].entities[0].createdOn: expected a string or null, got a number"),
        (bad(lambda b: b["deleted"]["data"][0].update(isDeleted="yes")),
         "deleted.data[0].isDeleted: expected a boolean, got a string"),
    ],
)
def test_malformed_sync_pages_raise_protocol_error_with_a_path(payload, message):
    with pytest.raises(ProtocolError) as info:
        parse_sync_page(payload)
    assert message in str(info.value)
    assert info.value.endpoint == "sync"
    assert str(info.value).startswith("sync: ")
    assert not info.value.retriable


def test_optional_relationship_fields_may_be_absent_or_null():
    item = rel()
    for key in ("isReadOnly", "isService", "permission"):
        del item[key]
    item["deletedOn"] = None
    del item["entities"][0]["createdOn"]
    page = parse_sync_page(dump(sync_body(current=[item], deleted=[])))
    assert page.current[0].raw == item


def test_sync_status_results_and_errors():
    body = {
        "results": [
            {"syncToken": "t1", "referenceId": "sub-a", "moreData": True, "overwrite": False},
            {"syncToken": "t2", "moreData": False, "overwrite": True},
        ],
        "errors": [
            {"type": "BadInput", "title": "Invalid token", "detail": "token is malformed",
             "errors": [{"field": "syncToken", "title": "x", "detail": "y", "type": "BadInput"}],
             "syncToken": "bad", "referenceId": "sub-b"},
            {"detail": "sparse error entry"},
        ],
    }
    status = parse_sync_status(dump(body))
    assert [(r.sync_token, r.reference_id, r.more_data, r.overwrite) for r in status.results] == [
        ("t1", "sub-a", True, False), ("t2", None, False, True)]
    first, second = status.errors
    assert (first.sync_token, first.reference_id, first.type, first.detail) == (
        "bad", "sub-b", "BadInput", "token is malformed (y)")
    assert (second.sync_token, second.type, second.detail) == (None, "", "sparse error entry")


def test_sync_status_without_errors_key():
    assert parse_sync_status(dump({"results": []})).errors == []


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"errors": []}, "missing field 'results'"),
        ({"results": [{"syncToken": "t", "moreData": "yes", "overwrite": False}]},
         "results[0].moreData: expected a boolean, got a string"),
        ({"results": [{"moreData": True, "overwrite": False}]}, "results[0]: missing field"),
        ({"results": [], "errors": {}}, "errors: expected an array or null, got an object"),
        ({"results": [], "errors": [["x"]]}, "errors[0]: expected an object, got an array"),
    ],
)
def test_malformed_sync_status(body, message):
    with pytest.raises(ProtocolError, match="syncStatus: ") as info:
        parse_sync_status(dump(body))
    assert message in str(info.value)


def test_search_page_with_and_without_continuation():
    body = {"page": {"continuationToken": "10", "syncToken": "s"}, "relationships": [rel()]}
    page = parse_search_page(dump(body))
    assert (page.continuation_token, page.sync_token, len(page.relationships)) == ("10", "s", 1)
    last = parse_search_page(dump({"page": {"continuationToken": None, "syncToken": "s"},
                                   "relationships": []}), "intersect")
    assert last.continuation_token is None
    with pytest.raises(ProtocolError, match=r"intersect: relationships\[0\].entities"):
        parse_search_page(dump({"page": {}, "relationships": [rel(entities=[])]}), "intersect")
    with pytest.raises(ProtocolError, match="missing field 'page'"):
        parse_search_page(dump({"relationships": []}))


def test_batch_and_get():
    items = [rel(), rel(deleted=True)]
    assert [r.id for r in parse_relationship_list(dump(items))] == [i["id"] for i in items]
    with pytest.raises(ProtocolError, match="batch: expected an array, got an object"):
        parse_relationship_list(dump({"relationships": items}))
    with pytest.raises(ProtocolError, match=r"batch: \[1\]: missing field 'isDeleted'"):
        parse_relationship_list(dump([rel(), {k: v for k, v in rel().items() if k != "isDeleted"}]))
    one = rel()
    assert parse_relationship(dump(one)).raw == one
    with pytest.raises(ProtocolError, match="get: expected an object, got an array"):
        parse_relationship(dump([one]))


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        (b'{"type":"BadInput","title":"bad","detail":"The following parameters are invalid"}',
         "The following parameters are invalid"),
        (b'{"developerMessage":"Quota limit exceeded."}', "Quota limit exceeded."),
        (b'{"type":"BadInput","detail":"The following parameters are invalid: syncToken",'
         b'"errors":[{"field":"syncToken","detail":"The sync token is not valid."}]}',
         "The following parameters are invalid: syncToken (The sync token is not valid.)"),
        (b'{"error":"invalid_grant","error_description":"expired"}', "expired"),
        (b'{"title":"only a title"}', "only a title"),
        (b"not json", None),
        (b"[]", None),
        (b'{"detail": 5}', None),
    ],
)
def test_error_detail(body, detail):
    assert error_detail(body) == detail
