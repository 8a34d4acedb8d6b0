"""Drains that must not go round in circles: the end of a resync walks the ids it did not see
once, batch after batch (keyset), instead of starting the scan over for every batch (quadratic
on a large resync); a sync token that never advances under ``moreData`` is caught at once."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest

from notifier import checkpoint
from notifier.core.events import ChangeKind
from notifier.errors import ProtocolError
from notifier.sinks.memory import MemorySink
from notifier.source.models import SyncPage
from notifier.state.base import KnownRelationship
from notifier.state.sqlite import SqliteStateStore
from notifier.sync import StreamSyncer
from tests.unit.test_sync_drain import SUB, C, FakeService, private_metrics, replay, spec

pytestmark = pytest.mark.timeout(30)  # a stuck drain loops for ever: fail instead


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
        syncer = StreamSyncer(store, metrics=private_metrics(), clock=lambda: 1_700_000_000.0)
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


class StuckService(FakeService):
    """Answers ``moreData: true`` with the very token it was asked with, from ``stuck_at``."""

    stuck_at: str | None = None

    async def sync(self, container_id: str, token: str | None,
                   domains: Sequence[str] | None = None) -> SyncPage:
        page = await super().sync(container_id, token, domains)
        if token is not None and token == self.stuck_at:
            return SyncPage(page.current, page.deleted, True, False, token)
        return page


async def test_a_token_that_never_advances_under_more_data_is_a_malformed_page(
    tmp_path: Path,
) -> None:
    svc = StuckService(page_size=5)
    svc.create(*(f"r{i:02d}" for i in range(20)))
    svc.stuck_at = "s20:10:0"  # the third snapshot page points back at itself
    sink = MemorySink()
    async with SqliteStateStore(tmp_path / "state.db") as store:
        syncer = StreamSyncer(store, metrics=private_metrics(), clock=lambda: 1_700_000_000.0)
        with pytest.raises(ProtocolError, match="does not advance"):
            await syncer.drain(svc, spec(sink))  # type: ignore[arg-type]
        assert svc.calls <= 4  # detected at once, not after paying for the loop
        st = await store.get_stream(SUB, C)
    assert st is not None
    assert st.resync_cursor == "s20:10:0"  # the pages before it are checkpointed, not lost
    assert [e.subject for e in sink.events] == [f"r{i:02d}" for i in range(10)]
