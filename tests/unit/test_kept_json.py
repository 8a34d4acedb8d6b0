"""Relationships kept as the API's JSON text (``source.parse_sync``) give the same events,
records, announcements and stored bodies as relationships decoded into dicts."""

from __future__ import annotations

import uuid
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from notifier.core.diff import stored_body
from notifier.core.events import CREATED, DELETED, build_event
from notifier.sinks.kafka_records import build_records
from notifier.source.models import Relationship
from notifier.source.parse import parse_sync_page, sync_page_from_dicts


def api_rel(**extra: Any) -> dict[str, Any]:
    item: dict[str, Any] = {
        "id": str(uuid.uuid4()), "createdOn": "2022-03-01T14:17:34.781856+00:00",
        "isReadOnly": False, "isService": False, "isDeleted": False,
        "entities": [
            {"domain": "autodesk-bim360-asset", "type": "asset", "id": "a \"b\" é\u2603",
             "createdOn": "2022-03-01T14:17:34Z"},
            {"domain": "autodesk-bim360-issue", "type": "issue", "id": str(uuid.uuid4())},
        ],
    }
    item.update(extra)
    return item


def body_of(current: list[Any], deleted: list[Any], indent: bool = False) -> bytes:
    return orjson.dumps({"current": {"data": current}, "deleted": {"data": deleted},
                         "moreData": False, "overwrite": False, "nextSyncToken": "t"},
                        option=orjson.OPT_INDENT_2 if indent else 0)


def without_deletion_fields(raw: dict[str, Any]) -> bytes:
    return orjson.dumps({k: v for k, v in raw.items() if k not in ("isDeleted", "deletedOn")})


@pytest.mark.parametrize("indent", [False, True])
@pytest.mark.parametrize("project", [None, "Tower"])
def test_events_records_and_bodies_equal_the_dict_parses(indent, project):
    current = [api_rel(), api_rel(deletedOn=None, permission=None)]
    deleted = [api_rel(isDeleted=True, deletedOn="2022-03-02T10:00:00Z")]
    body = body_of(current, deleted, indent)
    kept, dicts = parse_sync_page(body), sync_page_from_dicts(body)
    assert kept.current[0]._raw is None  # the fast path took it: nothing decoded yet
    for rels_kept, rels_dicts, kind in ((kept.current, dicts.current, CREATED),
                                        (kept.deleted, dicts.deleted, DELETED)):
        for a, b in zip(rels_kept, rels_dicts, strict=True):
            assert b"\n" not in a.json
            ea, eb = (build_event(subscription="s", container_id="c", relationship=r,
                                  kind=kind, snapshot=False, seen_at="now",
                                  project_name=project) for r in (a, b))
            assert ea.data_json() == eb.data_json() == orjson.dumps(eb.data)
            assert ea.structured_json() == eb.structured_json() == orjson.dumps(eb.structured())
            assert ea.relationship_json() == orjson.dumps(eb.data["relationship"])
            assert ea == eb
            assert ea.data == eb.data
            for mode in ("binary", "structured"):
                assert build_records([ea], content_mode=mode) == build_records(
                    [eb], content_mode=mode)
            assert stored_body(a) == stored_body(b) == without_deletion_fields(b.raw)


@st.composite
def _bodies(draw: st.DrawFn) -> dict[str, Any]:
    keys = draw(st.permutations(["id", "createdOn", "isDeleted", "deletedOn", "entities",
                                 "extra", "nested"]))
    out: dict[str, Any] = {}
    for key in keys[:draw(st.integers(3, len(keys)))]:
        out[key] = {
            "id": "r", "createdOn": "t", "isDeleted": draw(st.booleans()),
            "deletedOn": draw(st.sampled_from([None, "t2"])), "entities": [],
            "extra": draw(st.sampled_from(['"isDeleted":false,', "x", 1])),
            "nested": {"isDeleted": False},
        }[key]
    out.setdefault("isDeleted", False)
    return out


@settings(max_examples=300, deadline=None)
@given(_bodies())
def test_stored_body_cut_from_the_text_equals_the_one_built_from_the_dict(raw):
    rel = Relationship("r", "t", bool(raw["isDeleted"]), None, json=orjson.dumps(raw))
    assert stored_body(rel) == without_deletion_fields(raw)
