"""The published event contract: schemas valid, docs copies current, samples and real events
valid, and the mistakes a consumer would trip over rejected."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from notifier.contract import DATA_SCHEMAS, SCHEMA_FILES, load_schema, schema_text
from notifier.core.events import ChangeKind, build_event
from notifier.source.parse import parse_sync_page
from tests.contract import assert_valid, data_problems, problems

DOCS = Path(__file__).resolve().parents[2] / "docs" / "schemas"
SAMPLES = {p.stem: json.loads(p.read_text()) for p in sorted((DOCS / "samples").glob("*.json"))}
CREATED, DELETED = DATA_SCHEMAS


@pytest.mark.parametrize("name", SCHEMA_FILES)
def test_each_schema_is_valid_2020_12_and_published_in_docs(name: str) -> None:
    schema = load_schema(name)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    Draft202012Validator.check_schema(schema)
    assert (DOCS / name).read_text() == schema_text(name), f"docs/schemas/{name} is out of date"


def test_samples_cover_the_four_cases_and_keep_the_contract() -> None:
    assert set(SAMPLES) == {"created", "deleted", "snapshot-created", "overwrite-deleted"}
    assert_valid(SAMPLES.values())
    assert SAMPLES["snapshot-created"]["snapshot"] is True
    assert SAMPLES["created"]["snapshot"] is SAMPLES["deleted"]["snapshot"] is False
    resync = SAMPLES["overwrite-deleted"]
    assert resync["snapshot"] is True
    assert resync["data"]["relationship"]["isDeleted"] is True
    assert "deletedOn" not in resync["data"]["relationship"]  # time = when it was noticed
    assert len(resync["data"]["relationship"]["entities"]) == 2


def _broken(sample: str, path: list[str | int], value: Any) -> dict[str, Any]:
    event = copy.deepcopy(SAMPLES[sample])
    target: Any = event
    for key in path[:-1]:
        target = target[key]
    if value is KeyError:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return event


REL = ["data", "relationship"]


@pytest.mark.parametrize(
    ("event", "problem"),
    [
        (_broken("overwrite-deleted", [*REL, "entities"], KeyError), "'entities' is a required"),
        (_broken("deleted", [*REL, "isDeleted"], False), "True was expected"),
        (_broken("created", [*REL, "entities"], [{"domain": "d", "type": "t", "id": "i"}]),
         "is too short"),
        (_broken("created", [*REL, "entities", 0, "domain"], KeyError), "'domain' is a required"),
        (_broken("created", ["data", "subscription"], KeyError), "'subscription' is a required"),
        (_broken("created", ["data", "extra"], 1), "Additional properties"),
        (_broken("created", ["type"], "com.autodesk.bim360.relationship.updated"), "is not one of"),
        (_broken("created", ["time"], "yesterday"), "does not match"),
        (_broken("created", ["snapshot"], "true"), "is not of type 'boolean'"),
        (_broken("created", ["id"], "7"), "does not match"),
        (_broken("created", ["subject"], "another"), "is not the relationship id"),
        (_broken("created", ["source"], "/bim360/relationship/v2/containers/x"), "does not name"),
        (_broken("deleted", ["id"], SAMPLES["created"]["id"]), "not the deterministic id"),
    ],
)
def test_the_contract_rejects(event: dict[str, Any], problem: str) -> None:
    found = problems(event)
    assert any(problem in p for p in found), found
    with pytest.raises(AssertionError, match="breaks the contract"):
        assert_valid([event])


def test_binary_mode_data_is_checked_per_type() -> None:
    assert data_problems(CREATED, SAMPLES["created"]["data"]) == []
    assert data_problems(DELETED, SAMPLES["deleted"]["data"]) == []
    assert data_problems(DELETED, SAMPLES["created"]["data"])  # isDeleted false
    assert data_problems("com.example.other", {}) == ["unknown event type 'com.example.other'"]


def test_events_built_from_a_parsed_page_keep_the_contract() -> None:
    """Relationships as the API documents them (Z and offset timestamps, extra fields)."""
    body = {
        "current": {"data": [{
            "id": "0d5e6f70-8192-4a3b-9c4d-5e6f708192a3", "createdOn": "2024-03-01T14:17:34Z",
            "isReadOnly": False, "isService": True, "isDeleted": False, "permission": None,
            "entities": [
                {"domain": "autodesk-bim360-asset", "type": "asset", "id": "a1",
                 "createdOn": "2024-03-01T14:17:34.781856+01:00"},
                {"domain": "autodesk-bim360-issue", "type": "issue", "id": "i1",
                 "createdOn": "2024-03-01T14:17:34.781+00:00"}]}]},
        "deleted": {"data": [{
            "id": "1e6f7081-92a3-4b4c-8d5e-6f708192a3b4", "createdOn": "2024-03-01T14:17:34Z",
            "isReadOnly": False, "isService": False, "isDeleted": True,
            "deletedOn": "2024-03-02T09:00:00.000Z",
            "entities": [{"domain": "d", "type": "t", "id": "1"},
                         {"domain": "d", "type": "t", "id": "2"}]}]},
        "moreData": False, "overwrite": False, "nextSyncToken": "t1",
    }
    page = parse_sync_page(json.dumps(body).encode())
    events = [
        build_event(subscription="s", container_id="c-1", relationship=rel, kind=kind,
                    snapshot=False, seen_at="2024-03-02T09:00:01Z").structured()
        for rels, kind in ((page.current, ChangeKind.CREATED), (page.deleted, ChangeKind.DELETED))
        for rel in rels
    ]
    assert len(events) == 2
    assert_valid(events)
