"""The fast path of sync pages (``source.parse_sync``): it accepts a page only if the dict
parser accepts it too, and gives the same page; everything else goes to that parser, which
names the problem."""

from __future__ import annotations

import copy
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from notifier.errors import ProtocolError
from notifier.source.models import Relationship, SyncPage
from notifier.source.parse import parse_sync_page, sync_page_from_dicts
from notifier.source.parse_sync import decode_sync_page
from tests.unit.test_parse import rel as plain_rel


def rel(deleted: bool = False, **extra: Any) -> dict[str, Any]:
    """test_parse's relationship, its issue entity's id made of characters JSON escapes."""
    item = plain_rel(deleted)
    item["entities"][1]["id"] = "é\u2603 \"quoted\""
    item.update(extra)
    return item


def page_body(current: list[Any], deleted: list[Any], **extra: Any) -> dict[str, Any]:
    return {"current": {"data": current}, "deleted": {"data": deleted}, "moreData": True,
            "overwrite": False, "nextSyncToken": "tok", **extra}


def same(a: SyncPage, b: SyncPage) -> None:
    assert (a.more_data, a.overwrite, a.next_sync_token, a.size_bytes) == (
        b.more_data, b.overwrite, b.next_sync_token, b.size_bytes)
    for mine, theirs in ((a.current, b.current), (a.deleted, b.deleted)):
        assert mine == theirs  # id, createdOn, isDeleted, deletedOn
        assert [r.raw for r in mine] == [r.raw for r in theirs]


def test_an_ordinary_page_takes_the_fast_path_and_equals_the_dict_parse():
    body = orjson.dumps(page_body([rel(), rel(deletedOn=None)], [rel(deleted=True)]))
    fast = decode_sync_page(body)
    assert fast is not None
    same(fast, sync_page_from_dicts(body))
    same(parse_sync_page(body), fast)
    # The body is kept as the API's text and decoded on first use.
    assert fast.current[0].json == orjson.dumps(orjson.loads(body)["current"]["data"][0])
    assert fast.current[1].raw["deletedOn"] is None


@pytest.mark.parametrize("mutate", [
    lambda b: b["current"]["data"][0].update(extra={"nested": [1, 2.5, None]}),
    lambda b: b["current"]["data"][0]["entities"][1].update(extra="x"),
    lambda b: b["current"]["data"][0].update(permission={"read": True}),
    lambda b: b.update(page={"next": None}),
    lambda b: b["current"].update(meta=1),
])
def test_unknown_fields_are_kept_by_the_slow_path(mutate):
    body = page_body([rel(), rel()], [])
    mutate(body)
    raw = orjson.dumps(body)
    assert decode_sync_page(raw) is None
    page = parse_sync_page(raw)
    assert [r.raw for r in page.current] == body["current"]["data"]


@pytest.mark.parametrize(("payload", "message"), [
    # msgspec would skip these inside an unknown field; orjson (the dict parser) rejects them.
    (orjson.dumps(page_body([rel()], [])).replace(b'"isService"', b'"x":1e999,"isService"'),
     "not valid JSON"),
    (orjson.dumps(page_body([rel()], [])).replace(b'"isService"', b'"x":"\xff","isService"'),
     "not valid JSON"),
    (orjson.dumps(page_body([rel()], [])).replace(b'"moreData"', b'"x":"\\ud800","moreData"'),
     "not valid JSON"),
    (orjson.dumps(page_body([rel(entities=[])], [])), "current.data[0].entities: expected "
     "exactly 2 items, got 0"),
    (orjson.dumps(page_body([rel(), rel(id="")], [])), "current.data[1].id: expected a "
     "non-empty string"),
])
def test_what_the_fast_path_refuses_gets_the_dict_parsers_error(payload, message):
    assert decode_sync_page(payload) is None
    with pytest.raises(ProtocolError) as info:
        parse_sync_page(payload)
    assert message in str(info.value)


def test_relationships_compare_by_their_fields_and_keep_their_body():
    body = {"id": "r1", "createdOn": "t", "isDeleted": False}
    from_dict = Relationship("r1", "t", False, None, body)
    from_json = Relationship("r1", "t", False, None, json=orjson.dumps(body))
    assert from_dict == from_json
    assert hash(from_dict) == hash(from_json)
    assert from_json.raw == body
    assert from_dict.json == orjson.dumps(body)
    assert from_dict != Relationship("r1", "t", True, None, body)
    with pytest.raises(TypeError):
        Relationship("r1", "t", False, None)


# Values that are valid for some fields and wrong for others.
_VALUES = st.one_of(st.none(), st.booleans(), st.integers(-3, 3), st.floats(allow_nan=False),
                    st.text(max_size=4), st.just(""), st.just([]), st.just({}))


@st.composite
def _relationships(draw: st.DrawFn) -> Any:
    item = rel(deleted=draw(st.booleans()))
    for _ in range(draw(st.integers(0, 3))):
        action = draw(st.sampled_from(["set", "drop", "entity_set", "entity_drop", "entities"]))
        if action == "set":
            item[draw(st.sampled_from([*item, "extra"]))] = draw(_VALUES)
        elif action == "drop" and item:
            del item[draw(st.sampled_from(sorted(item)))]
        elif action.startswith("entity") and isinstance(item.get("entities"), list) \
                and item["entities"] and isinstance(item["entities"][0], dict):
            entity = item["entities"][0]
            if action == "entity_set":
                entity[draw(st.sampled_from([*entity, "extra"]))] = draw(_VALUES)
            elif entity:
                del entity[draw(st.sampled_from(sorted(entity)))]
        elif action == "entities" and isinstance(item.get("entities"), list):
            count = draw(st.integers(0, 3))
            item["entities"] = (item["entities"] * 2)[:count]
    return draw(st.one_of(st.just(item), st.just(item), _VALUES))


@settings(max_examples=300, deadline=None)
@given(current=st.lists(_relationships(), max_size=3),
       deleted=st.lists(_relationships(), max_size=2),
       top=st.dictionaries(st.sampled_from(["moreData", "overwrite", "nextSyncToken", "x"]),
                           _VALUES, max_size=1),
       spaced=st.booleans())
def test_the_fast_path_accepts_only_what_the_dict_parser_accepts_and_agrees(
        current, deleted, top, spaced):
    body = orjson.dumps(page_body(copy.deepcopy(current), copy.deepcopy(deleted), **top),
                        option=orjson.OPT_INDENT_2 if spaced else 0)
    fast = decode_sync_page(body)
    try:
        slow = sync_page_from_dicts(body)
    except ProtocolError:
        assert fast is None
        return
    if fast is not None:
        same(fast, slow)


# -- syncStatus answers ------------------------------------------------------------------------


def test_an_ordinary_status_answer_takes_the_fast_path_and_equals_the_dict_parse():
    from notifier.source.models import SyncStatusResult
    from notifier.source.parse import parse_sync_status
    from notifier.source.parse_sync import decode_sync_status

    body = orjson.dumps({"results": [
        {"syncToken": "t0", "referenceId": "0", "moreData": False, "overwrite": False},
        {"syncToken": "t1", "referenceId": "1", "moreData": True, "overwrite": False,
         "extra": [1, 2]},  # a field the notifier does not read: ignored by both paths
        {"syncToken": "t2", "referenceId": None, "moreData": False, "overwrite": True},
        {"syncToken": "t3", "moreData": False, "overwrite": False}], "errors": []})
    fast = decode_sync_status(body)
    assert fast is not None
    assert fast.results == [
        SyncStatusResult(sync_token="t0", reference_id="0", more_data=False, overwrite=False),
        SyncStatusResult(sync_token="t1", reference_id="1", more_data=True, overwrite=False),
        SyncStatusResult(sync_token="t2", reference_id=None, more_data=False, overwrite=True),
        SyncStatusResult(sync_token="t3", reference_id=None, more_data=False, overwrite=False)]
    assert fast.errors == []
    assert parse_sync_status(body) == fast


@pytest.mark.parametrize("body", [
    {"results": [], "errors": [{"detail": "expired", "referenceId": "0"}]},  # errors: parsed
    {"results": [{"syncToken": "t", "moreData": "yes", "overwrite": False}]},  # by the dict
    {"results": [{"moreData": True, "overwrite": False}]},  # parser, which names the problem
    {"errors": []},
    {"results": [], "errors": {}},
])
def test_a_status_answer_with_errors_or_defects_goes_to_the_dict_parser(body):
    from notifier.source.parse_sync import decode_sync_status

    assert decode_sync_status(orjson.dumps(body)) is None
    assert decode_sync_status(b'{"results": [') is None  # truncated
