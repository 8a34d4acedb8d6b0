"""StreamSyncer with batch_pages > 1: pages arriving back to back share one checkpoint.

The scripted service and the crash-injecting store are those of test_sync_drain; here the syncer
joins up to ``batch_pages`` pages, and the checks are the same: after any crash and a restart,
the events replay to the live set, every id means one change, the known set is exact.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from notifier.core.events import ChangeKind
from notifier.sinks.memory import MemorySink
from notifier.source.models import Relationship, SyncPage
from notifier.state.sqlite import SqliteStateStore
from notifier.sync import StreamSyncer
from tests.unit.test_sync_drain import (
    SUB,
    C,
    Crash,
    CrashingStore,
    FakeService,
    assert_same_id_same_change,
    known_ids,
    private_metrics,
    replay,
    spec,
)


async def drain(db: Path, svc: Any, sink: MemorySink, crash_at: int | None = None,
                batch_pages: int = 4) -> tuple[bool, int]:
    """One process lifetime: (completed, commits attempted)."""
    async with CrashingStore(db, crash_at) as store:
        syncer = StreamSyncer(store, metrics=private_metrics(), clock=lambda: 1_700_000_000.0,
                              batch_pages=batch_pages, batch_seconds=60.0)
        try:
            res = await syncer.drain(svc, spec(sink))
        except Crash:
            return False, store.commits
        return res.completed, store.commits


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "state.db"


async def test_joined_pages_take_one_checkpoint_per_batch(db: Path) -> None:
    svc = FakeService(page_size=2)
    svc.create(*(f"r{i}" for i in range(9)))  # bootstrap: 5 pages
    sink = MemorySink()
    completed, commits = await drain(db, svc, sink, batch_pages=2)
    assert completed
    assert commits == 4  # pages 1+2, 3+4, 5, then the end of the resync (was 5 + 1)
    assert svc.calls == 5
    assert [e.subject for e in sink.events] == [f"r{i}" for i in range(9)]
    assert await known_ids(db, svc) == svc.live()


@pytest.mark.parametrize("crash_at", range(4))
async def test_crash_at_any_batched_checkpoint_loses_nothing(db: Path, crash_at: int) -> None:
    svc = FakeService(page_size=2)
    svc.create(*(f"r{i}" for i in range(7)))
    sink = MemorySink()
    assert (await drain(db, svc, sink))[0]
    boot = len(sink.events)
    # Created then deleted across pages of one batch, and within one page.
    svc.create("r10", "r11", "r12")
    svc.delete("r1", "r10")
    svc.create("r13")
    svc.delete("r2", "r13", "r11")
    svc.create(*(f"r{i}" for i in range(20, 27)))
    completed, _ = await drain(db, svc, sink, crash_at=crash_at)
    if not completed:
        assert (await drain(db, svc, sink))[0]
    events = sink.events
    assert replay(events) == svc.live()
    assert await known_ids(db, svc) == svc.live()
    assert_same_id_same_change(events)
    later = events[boot:]
    for rid in ("r10", "r11", "r13"):
        kinds = [e.kind for e in later if e.subject == rid]
        assert ChangeKind.CREATED in kinds
        assert kinds.index(ChangeKind.CREATED) < kinds.index(ChangeKind.DELETED)
    assert {e.subject for e in later if e.kind is ChangeKind.DELETED} == {
        "r1", "r2", "r10", "r11", "r13"}


class Scripted:
    """Answers sync calls from a fixed list of pages (by call order)."""

    credential_name = "fake"

    def __init__(self, pages: Sequence[SyncPage]) -> None:
        self.pages = list(pages)
        self.tokens: list[str | None] = []

    async def sync(self, container_id: str, token: str | None,
                   domains: Sequence[str] | None = None) -> SyncPage:
        self.tokens.append(token)
        return self.pages.pop(0)


def rel(rid: str) -> Relationship:
    raw = {"id": rid, "createdOn": "2026-01-01T00:00:00Z", "isDeleted": False,
           "entities": [{"domain": "autodesk-bim360-asset", "type": "asset", "id": "a1"},
                        {"domain": "autodesk-bim360-issue", "type": "issue", "id": "i1"}]}
    return Relationship(id=rid, created_on=raw["createdOn"], is_deleted=False, deleted_on=None,
                        raw=raw)


async def test_an_overwrite_in_the_middle_of_a_batch_starts_its_own(db: Path) -> None:
    sink = MemorySink()
    boot = Scripted([SyncPage([rel("r0"), rel("r1")], [], False, False, "w1")])
    assert (await drain(db, boot, sink))[0]  # type: ignore[arg-type]
    svc = Scripted([
        SyncPage([rel("r2")], [], True, False, "i1"),  # incremental: r2 created
        SyncPage([rel("r1")], [], True, True, "s1"),  # history cut: a snapshot starts
        SyncPage([rel("r2"), rel("r3")], [], False, True, "w2"),
    ])
    completed, _ = await drain(db, svc, sink)  # type: ignore[arg-type]
    assert completed
    assert svc.tokens == ["w1", "i1", "s1"]
    later = [(e.kind, e.subject, e.snapshot) for e in sink.events[2:]]
    assert later == [
        (ChangeKind.CREATED, "r2", False),
        (ChangeKind.CREATED, "r3", True),
        (ChangeKind.DELETED, "r0", True),
    ]
    async with SqliteStateStore(db) as store:
        st = await store.get_stream(SUB, C)
        assert st is not None
        assert (st.sync_token, st.in_resync, st.known_count) == ("w2", False, 3)
        assert await store.known_subset(SUB, C, ["r0", "r1", "r2", "r3"]) == {"r1", "r2", "r3"}
