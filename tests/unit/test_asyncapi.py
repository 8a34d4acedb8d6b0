"""docs/asyncapi.yaml is a valid AsyncAPI 3.0 document whose references all resolve and whose
payload schemas are the published event contract."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
import yaml
from jsonschema import Draft7Validator

from notifier.contract import SCHEMA_FILES
from notifier.core.events import ChangeKind, Event
from notifier.sinks.kafka_records import build_records
from tests.contract import data_problems
from tests.unit.test_contract import SAMPLES

DOCS = Path(__file__).resolve().parents[2] / "docs"
DOC = yaml.safe_load((DOCS / "asyncapi.yaml").read_text())
CACHE = Path(os.environ.get("NOTIFIER_CACHE", Path.home() / ".cache" / "notifier"))
ASYNCAPI_SCHEMA = CACHE / "asyncapi" / "3.0.0.json"


def refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return found + [r for v in node.values() for r in refs(v)]
    if isinstance(node, list):
        return [r for v in node for r in refs(v)]
    return []


def resolve(pointer: str) -> Any:
    node: Any = DOC
    for part in pointer.lstrip("#/").split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


@pytest.mark.skipif(not ASYNCAPI_SCHEMA.exists() and os.environ.get("CI") != "true",
                    reason="AsyncAPI schema not fetched (scripts/install-tools.sh)")
def test_the_document_is_valid_asyncapi_3() -> None:
    schema = json.loads(ASYNCAPI_SCHEMA.read_text())
    errors = [f"{list(e.absolute_path)}: {e.message[:200]}"
              for e in Draft7Validator(schema).iter_errors(DOC)]
    assert errors == []
    broken = {**DOC, "operations": {"x": {"action": "publish", "channel": {"$ref": "#/x"}}}}
    assert list(Draft7Validator(schema).iter_errors(broken))  # the check can fail


def test_every_reference_resolves_and_payloads_are_the_contract() -> None:
    files = set()
    for ref in refs(DOC):
        if ref.startswith("#/"):
            resolve(ref)  # KeyError if it points nowhere
        else:
            assert (DOCS / ref).is_file(), ref
            files.add(Path(ref).name)
    assert files == set(SCHEMA_FILES)
    assert DOC["asyncapi"] == "3.0.0"
    assert set(DOC["channels"]) == {"relationshipsTopic", "webhook"}


def test_the_binary_example_is_what_the_kafka_sink_writes() -> None:
    """The documented headers of the created example match a record built from the sample."""
    example = resolve("#/components/messages/kafkaBinaryCreated")["examples"][0]["headers"]
    sample = SAMPLES["created"]
    assert example["ce_id"] == sample["id"]
    event = Event(id=sample["id"], type=sample["type"], source=sample["source"],
                  subject=sample["subject"], time=sample["time"], kind=ChangeKind.CREATED,
                  container_id=sample["data"]["containerId"],
                  subscription=sample["data"]["subscription"], snapshot=sample["snapshot"],
                  data=sample["data"])
    ((key, value, headers),) = build_records([event])
    assert {k: v.decode() for k, v in headers} == example
    assert key.decode() == example["ce_partitionkey"]
    assert data_problems(sample["type"], json.loads(value)) == []
    required = resolve("#/components/schemas/ceBinaryHeaders")["required"]
    assert sorted(required) == sorted(k for k, _ in headers)
