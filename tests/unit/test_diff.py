"""Table tests of the page diff: which changes become events, in which order."""

from __future__ import annotations

import pytest

from notifier.core.diff import diff_page, missing_deletions, page_ids
from notifier.core.events import ChangeKind, event_id
from notifier.source.models import Relationship
from notifier.state.base import KnownRelationship

C = "5d0c2a3e-3b1f-4b8e-9a51-0d3c1f6f7a10"


def rel(rid: str, deleted: bool = False) -> Relationship:
    raw = {
        "id": rid,
        "createdOn": "2026-01-01T00:00:00Z",
        "isDeleted": deleted,
        "entities": [
            {"domain": "autodesk-bim360-asset", "type": "asset", "id": "a"},
            {"domain": "autodesk-bim360-issue", "type": "issue", "id": "b"},
        ],
    }
    if deleted:
        raw["deletedOn"] = "2026-01-02T00:00:00Z"
    return Relationship(
        id=rid, created_on=raw["createdOn"], is_deleted=deleted,
        deleted_on=raw.get("deletedOn"), raw=raw,  # type: ignore[arg-type]
    )


def run(current, deleted, known, resync=False, emit=True):
    return diff_page(
        subscription="s", container_id=C,
        current=[rel(r) for r in current], deleted=[rel(r, True) for r in deleted],
        known=set(known), resync=resync, emit=emit, seen_at="2026-01-03T00:00:00Z",
    )


@pytest.mark.parametrize(
    ("current", "deleted", "known", "resync", "events", "add", "remove"),
    [
        # incremental: new ids become created events
        (["r1", "r2"], [], [], False, [("r1", "created"), ("r2", "created")], ["r1", "r2"], []),
        # incremental: a replayed page after a crash re-emits nothing for ids already known
        (["r1"], [], ["r1"], False, [], [], []),
        # incremental: a known id deleted
        ([], ["r1"], ["r1"], False, [("r1", "deleted")], [], ["r1"]),
        # created and deleted within one window (in both lists): created then deleted
        (["r1"], ["r1"], [], False, [("r1", "created"), ("r1", "deleted")], [], []),
        # only in deleted and never known: it was created and deleted between polls
        ([], ["r9"], [], False, [("r9", "created"), ("r9", "deleted")], [], []),
        # resync: only unknown ids are new
        (["r1", "r2"], [], ["r1"], True, [("r2", "created")], ["r2"], []),
        # resync: unknown deleted ids are not reported (never existed for us)
        ([], ["r9"], [], True, [], [], []),
        # resync: known deleted ids are deleted
        ([], ["r1"], ["r1"], True, [("r1", "deleted")], [], ["r1"]),
        # duplicates inside one list count once
        (["r1", "r1"], [], [], False, [("r1", "created")], ["r1"], []),
    ],
)
def test_diff_table(current, deleted, known, resync, events, add, remove):
    d = run(current, deleted, known, resync)
    assert [(e.subject, e.kind.value) for e in d.events] == events
    assert d.add_ids == add
    assert d.remove_ids == remove
    assert all(e.snapshot is resync for e in d.events)


def test_created_before_deleted_for_each_relationship():
    d = run(["r1", "r2"], ["r2", "r3"], [])
    order = [(e.subject, e.kind) for e in d.events]
    for rid in ("r2", "r3"):
        assert order.index((rid, ChangeKind.CREATED)) < order.index((rid, ChangeKind.DELETED))


def test_emit_false_records_ids_without_events():
    d = run(["r1", "r2"], [], [], resync=True, emit=False)
    assert d.events == []
    assert d.add_ids == ["r1", "r2"]
    assert d.seen_ids == ["r1", "r2"]
    assert d.created == 2


def test_resync_collects_seen_ids_including_known():
    d = run(["r1", "r2"], [], ["r1"], resync=True)
    assert d.seen_ids == ["r1", "r2"]


def test_event_ids_are_deterministic_and_distinct():
    a = run(["r1"], [], []).events[0]
    b = run(["r1"], [], []).events[0]
    assert a.id == b.id == event_id(C, "r1", ChangeKind.CREATED)
    assert event_id(C, "r1", ChangeKind.DELETED) != a.id
    assert event_id("other", "r1", ChangeKind.CREATED) != a.id


def test_missing_deletions_use_seen_time_and_snapshot():
    (ev,) = missing_deletions(
        subscription="s", container_id=C, missing=[KnownRelationship("r7", None)],
        seen_at="2026-05-05T00:00:00Z",
    )
    assert ev.kind is ChangeKind.DELETED
    assert ev.time == "2026-05-05T00:00:00Z"
    assert ev.snapshot is True
    assert ev.id == event_id(C, "r7", ChangeKind.DELETED)


def test_page_ids():
    assert page_ids([rel("a")], [rel("b", True)]) == ["a", "b"]
