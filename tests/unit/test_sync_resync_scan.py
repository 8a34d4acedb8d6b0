"""The end of a resync walks the ids it did not see once, batch after batch (keyset), instead
of starting the scan over for every batch (quadratic on a large resync)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from notifier import checkpoint
from notifier.core.events import ChangeKind
from notifier.sinks.memory import MemorySink
from notifier.state.base import KnownRelationship
from notifier.state.sqlite import SqliteStateStore
from notifier.sync import StreamSyncer
from tests.unit.test_sync_drain import FakeService, replay, spec


class CountingStore(SqliteStateStore):
    """The real store, counting how often a resync diff scan is started and its batches."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.scans = 0
        self.batches = 0

    async def iter_resync_missing(self, subscription: str, container_id: str,
                                  batch: int = 10_000) -> AsyncIterator[list[KnownRelationship]]:
        self.scans += 1
        async for ids in super().iter_resync_missing(subscription, container_id, batch):
            self.batches += 1
            yield ids


async def test_resync_deletions_are_walked_in_one_scan(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(checkpoint, "RESYNC_DELETE_BATCH", 7)
    svc = FakeService(page_size=20)
    svc.create(*(f"r{i:03d}" for i in range(100)))
    sink = MemorySink()
    async with CountingStore(tmp_path / "state.db") as store:
        syncer = StreamSyncer(store, clock=lambda: 1_700_000_000.0)
        assert (await syncer.drain(svc, spec(sink))).completed  # type: ignore[arg-type]
        gone = [f"r{i:03d}" for i in range(0, 100, 2)]  # 50 deletions: 8 batches of 7
        svc.delete(*gone)
        svc.move_horizon()  # the stored token now gets an overwrite: a resync
        store.scans = store.batches = 0
        assert (await syncer.drain(svc, spec(sink))).completed  # type: ignore[arg-type]
    assert store.batches == 8
    assert store.scans == 1  # not one fresh scan from the first id per batch
    deleted = [e.subject for e in sink.events if e.kind is ChangeKind.DELETED]
    assert sorted(deleted) == gone  # each once
    assert replay(sink.events) == svc.live()
