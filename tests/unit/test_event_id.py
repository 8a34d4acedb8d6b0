"""Event ids are uuid5 of "container/relationship/kind": the fast path must never drift from it."""

from __future__ import annotations

import random
import uuid

import pytest

from notifier.core.events import (
    EVENT_ID_NAMESPACE,
    ChangeKind,
    build_event,
    created_events,
    event_id,
)
from notifier.source.models import Relationship


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


@pytest.mark.parametrize("project", [None, "Tower"])
@pytest.mark.parametrize("snapshot", [False, True])
def test_created_events_equal_build_event_one_by_one(project: str | None,
                                                     snapshot: bool) -> None:
    """The diff's loop over a page's new relationships builds the very events (ids from
    uuid5 included) that ``build_event`` builds one at a time."""
    rng = random.Random(11)
    cid = "é/" + str(uuid.UUID(int=rng.getrandbits(128)))
    rels = [Relationship(rid, f"2024-01-0{i % 9 + 1}T00:00:00Z", False, None,
                         json=b'{"id":"%s"}' % rid.encode())
            for i, rid in enumerate([str(uuid.UUID(int=rng.getrandbits(128)))
                                     for _ in range(50)] + ["", "漢字"])]
    got = created_events(subscription="s", container_id=cid, relationships=rels,
                         snapshot=snapshot, project_name=project)
    want = [build_event(subscription="s", container_id=cid, relationship=r,
                        kind=ChangeKind.CREATED, snapshot=snapshot, seen_at="now",
                        project_name=project) for r in rels]
    assert got == want
    assert [e.id for e in got] == [reference(cid, r.id, ChangeKind.CREATED) for r in rels]
    assert all(e.relationship is r and e.project_name == project
               for e, r in zip(got, rels, strict=True))
