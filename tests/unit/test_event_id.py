"""Event ids are uuid5 of "container/relationship/kind": the fast path must never drift from it."""

from __future__ import annotations

import random
import uuid

import pytest

from notifier.core.events import EVENT_ID_NAMESPACE, ChangeKind, event_id


def reference(container_id: str, relationship_id: str, kind: ChangeKind) -> str:
    return str(uuid.uuid5(EVENT_ID_NAMESPACE, f"{container_id}/{relationship_id}/{kind.value}"))


@pytest.mark.parametrize("kind", list(ChangeKind))
@pytest.mark.parametrize("relationship_id", [
    "d98c1dd4-008f-04b2-e980-0998ecf8427e", "", "x", "é/ü/漢字", "a" * 1000])
def test_event_id_equals_uuid5(relationship_id: str, kind: ChangeKind) -> None:
    cid = "5d0c2a3e-3b1f-4b8e-9a51-0d3c1f6f7a10"
    assert event_id(cid, relationship_id, kind) == reference(cid, relationship_id, kind)


def test_event_id_equals_uuid5_on_random_ids() -> None:
    rng = random.Random(7)
    for _ in range(5000):
        cid = str(uuid.UUID(int=rng.getrandbits(128)))
        rid = str(uuid.UUID(int=rng.getrandbits(128)))
        kind = rng.choice(list(ChangeKind))
        assert event_id(cid, rid, kind) == reference(cid, rid, kind)


def test_event_id_is_a_version_5_uuid() -> None:
    parsed = uuid.UUID(event_id("c", "r", ChangeKind.CREATED))
    assert parsed.version == 5
    assert parsed.variant == uuid.RFC_4122
