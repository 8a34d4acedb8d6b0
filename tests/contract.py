"""Validate events against the published contract (notifier/schemas): for every test that sees
events, whether from the in-memory sink, a jsonl file, a Kafka record or a webhook call.

Beyond the JSON Schemas, it checks what a schema cannot say: ``subject`` is the relationship's
id, ``source`` names ``data.containerId``, and ``id`` is the deterministic id of the change.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from functools import cache
from typing import Any

from jsonschema import Draft202012Validator
from referencing import Registry, Resource

from notifier.contract import DATA_SCHEMAS, EVENT_SCHEMA, SCHEMA_FILES, load_schema
from notifier.core.events import ChangeKind, event_id, event_source


@cache
def _registry() -> Registry[Any]:
    resources = [Resource.from_contents(load_schema(name)) for name in SCHEMA_FILES]
    return Registry().with_resources((r.id(), r) for r in resources if r.id() is not None)


@cache
def validator(name: str) -> Draft202012Validator:
    schema = load_schema(name)
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(
        schema, registry=_registry(), format_checker=Draft202012Validator.FORMAT_CHECKER)


def problems(event: Mapping[str, Any]) -> list[str]:
    """Every way ``event`` (structured mode) breaks the contract; empty when it keeps it."""
    out = [f"{'/'.join(map(str, e.absolute_path)) or '(event)'}: {e.message}"
           for e in validator(EVENT_SCHEMA).iter_errors(event)]
    if out:
        return out
    data = event["data"]
    rel = data["relationship"]
    kind = ChangeKind(event["type"].rsplit(".", 1)[1])
    if event["subject"] != rel["id"]:
        out.append(f"subject {event['subject']!r} is not the relationship id {rel['id']!r}")
    if event["source"] != event_source(data["containerId"]):
        out.append(f"source {event['source']!r} does not name container {data['containerId']!r}")
    if event["id"] != event_id(data["containerId"], rel["id"], kind):
        out.append(f"id {event['id']!r} is not the deterministic id of this change")
    return out


def data_problems(event_type: str, data: Any) -> list[str]:
    """How ``data`` of an event of ``event_type`` breaks its schema (binary-mode values)."""
    if event_type not in DATA_SCHEMAS:
        return [f"unknown event type {event_type!r}"]
    return [f"data/{'/'.join(map(str, e.absolute_path))}: {e.message}"
            for e in validator(DATA_SCHEMAS[event_type]).iter_errors(data)]


def assert_valid(events: Iterable[Mapping[str, Any]]) -> None:
    """Fail with every problem of the first event that breaks the contract."""
    for event in events:
        found = problems(event)
        if found:
            raise AssertionError(
                f"event {event.get('id')!r} ({event.get('type')}) breaks the contract:\n  "
                + "\n  ".join(found))
