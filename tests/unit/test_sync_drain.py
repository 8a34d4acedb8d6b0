"""StreamSyncer.drain against a scripted in-memory service, a real SQLite file and memory sinks.

Crashes are simulated where they hurt most: after the sinks accepted a page and before its
checkpoint. A "restart" is a fresh store object on the same file and a fresh syncer; the sink
keeps everything it was ever given, as a consumer would.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest
from prometheus_client import CollectorRegistry

from notifier.core.events import ChangeKind, Event, event_id
from notifier.errors import BadRequestError, SinkError
from notifier.metrics import Metrics
from notifier.sinks.memory import MemorySink
from notifier.source.models import Relationship, SearchPage, SyncPage
from notifier.state.sqlite import SqliteStateStore
from notifier.stream import StreamSpec
from notifier.sync import StreamSyncer

C = "5d0c2a3e-3b1f-4b8e-9a51-0d3c1f6f7a10"
SUB = "s"
ENTITIES = [{"domain": "autodesk-bim360-asset", "type": "asset", "id": "a1"},
            {"domain": "autodesk-bim360-issue", "type": "issue", "id": "i1"}]


# --- a scripted Relationship Service ---------------------------------------------------------


@dataclass
class Rel:
    id: str
    cseq: int
    dseq: int = 0


@dataclass
class FakeService:
    """One container: a change log, snapshot and incremental sync pages, a retention horizon.

    Tokens: ``w<W>`` = caught up at watermark W; ``s<at>:<offset>:<ow>`` = inside a snapshot of
    what was alive at ``at``; ``i<W>:<end>:<offset>`` = inside the window (W, end].
    """

    page_size: int = 3
    rels: dict[str, Rel] = field(default_factory=dict)
    log: list[tuple[str, str]] = field(default_factory=list)  # (kind, id)
    horizon: int = 0
    calls: int = 0
    credential_name: str = "fake"

    @property
    def seq(self) -> int:
        return len(self.log)

    def create(self, *ids: str) -> None:
        for rid in ids:
            self.log.append(("created", rid))
            self.rels[rid] = Rel(rid, self.seq)

    def delete(self, *ids: str) -> None:
        for rid in ids:
            self.log.append(("deleted", rid))
            self.rels[rid].dseq = self.seq

    def live(self) -> set[str]:
        return {r.id for r in self.rels.values() if not r.dseq}

    def move_horizon(self) -> None:
        self.horizon = self.seq

    @staticmethod
    def _rel(r: Rel, deleted: bool) -> Relationship:
        raw: dict[str, Any] = {"id": r.id, "createdOn": "2026-01-01T00:00:00Z",
                               "isDeleted": deleted}
        if deleted:
            raw["deletedOn"] = "2026-01-02T00:00:00Z"
        raw["entities"] = ENTITIES
        return Relationship(id=r.id, created_on=raw["createdOn"], is_deleted=deleted,
                            deleted_on=raw.get("deletedOn"), raw=raw)

    async def sync(self, container_id: str, token: str | None,
                   domains: Sequence[str] | None = None) -> SyncPage:
        self.calls += 1
        if token is None:
            return self._snapshot(self.seq, 0, False)
        kind, rest = token[0], token[1:]
        if kind == "w" and int(rest) < self.horizon:
            return self._snapshot(self.seq, 0, True)
        if kind == "s":
            at, offset, ow = rest.split(":")
            return self._snapshot(int(at), int(offset), ow == "1")
        if kind == "w":
            return self._window(int(rest), self.seq, 0)
        if kind == "i":
            w, end, pos = (int(x) for x in rest.split(":"))
            return self._window(w, end, pos)
        raise BadRequestError("bad sync token", endpoint="sync", status=400)

    def _snapshot(self, at: int, offset: int, overwrite: bool) -> SyncPage:
        alive = sorted((r for r in self.rels.values()
                        if r.cseq <= at and (not r.dseq or r.dseq > at)), key=lambda r: r.cseq)
        page = alive[offset:offset + self.page_size]
        more = offset + self.page_size < len(alive)
        nxt = f"s{at}:{offset + self.page_size}:{int(overwrite)}" if more else f"w{at}"
        return SyncPage([self._rel(r, False) for r in page], [], more, overwrite, nxt)

    def _window(self, w: int, end: int, offset: int) -> SyncPage:
        entries = self.log[w:end]
        chunk = entries[offset:offset + self.page_size]
        more = offset + self.page_size < len(entries)
        # A relationship created and deleted within one page is listed in both lists.
        current = [self._rel(self.rels[rid], False) for kind, rid in chunk if kind == "created"]
        deleted = [self._rel(self.rels[rid], True) for kind, rid in chunk if kind == "deleted"]
        nxt = f"i{w}:{end}:{offset + self.page_size}" if more else f"w{end}"
        return SyncPage(current, deleted, more, False, nxt)

    async def search(self, container_id: str, params: Any, continuation: str | None = None
                     ) -> SearchPage:
        """A live listing by creation order; every page carries the current watermark."""
        self.calls += 1
        live = sorted((r for r in self.rels.values() if not r.dseq), key=lambda r: r.cseq)
        offset = int(continuation or 0)
        more = offset + self.page_size < len(live)
        return SearchPage([self._rel(r, False) for r in live[offset:offset + self.page_size]],
                          str(offset + self.page_size) if more else None, f"w{self.seq}")


# --- crash injection --------------------------------------------------------------------------


class Crash(Exception):
    """Stands for SIGKILL: the process dies right here."""


class CrashingStore(SqliteStateStore):
    """Dies at the ``crash_at``-th page checkpoint (0-based), before it is written."""

    def __init__(self, path: Path, crash_at: int | None) -> None:
        super().__init__(path)
        self.crash_at = crash_at
        self.commits = 0

    async def commit_page(self, *args: Any, **kwargs: Any) -> None:
        if self.crash_at is not None and self.commits == self.crash_at:
            self.commits += 1
            raise Crash
        self.commits += 1
        await super().commit_page(*args, **kwargs)


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "state.db"


def spec(sink: MemorySink, **kw: Any) -> StreamSpec:
    return StreamSpec(subscription=SUB, container_id=C, credentials=("fake",), sinks=(sink,),
                      **kw)


async def drain(db: Path, svc: FakeService, sink: MemorySink, crash_at: int | None = None,
                **kw: Any) -> bool:
    """One process lifetime: True if the drain completed, False if it 'crashed'."""
    async with CrashingStore(db, crash_at) as store:
        syncer = StreamSyncer(store, metrics=private_metrics(), clock=lambda: 1_700_000_000.0)
        try:
            res = await syncer.drain(svc, spec(sink, **kw))  # type: ignore[arg-type]
        except Crash:
            return False
        return res.completed


def replay(events: Sequence[Event]) -> set[str]:
    live: set[str] = set()
    for e in events:
        (live.add if e.kind is ChangeKind.CREATED else live.discard)(e.subject)
    return live


def assert_same_id_same_change(events: Sequence[Event]) -> None:
    seen: dict[str, tuple[ChangeKind, str]] = {}
    for e in events:
        assert e.id == event_id(C, e.subject, e.kind)
        assert seen.setdefault(e.id, (e.kind, e.subject)) == (e.kind, e.subject)


def announced_rows(db: Path) -> list[str]:
    """The ids announced on disk: rows per id, and the ids in rows per page (their heads)."""
    conn = sqlite3.connect(db)
    try:
        found = {str(r) for (r,) in conn.execute("SELECT rel_id FROM announced")}
        for (heads,) in conn.execute("SELECT heads FROM announced_pages"):
            found.update(h[0] for h in orjson.loads(heads))
        return sorted(found)
    finally:
        conn.close()


def kinds_of(events: Sequence[Event], rid: str) -> list[ChangeKind]:
    return [e.kind for e in events if e.subject == rid]


class OutboxMemorySink(MemorySink):
    """Stands for a webhook sink: the pipeline only writes its events to the store's outbox."""

    def notify(self) -> None:
        """An outbox sink (notifier.sinks.base.OutboxSink): nothing to wake here."""

    async def admit(self, count: int) -> None:
        """No cap here."""


def private_metrics() -> Metrics:
    return Metrics(CollectorRegistry(), runtime=False)


async def known_ids(db: Path, svc: FakeService) -> set[str]:
    async with SqliteStateStore(db) as store:
        every = {f"r{i}" for i in range(200)} | set(svc.rels)
        return await store.known_subset(SUB, C, sorted(every))


# --- tests ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("crash_at", range(6))
async def test_crash_between_publish_and_checkpoint_redelivers_with_same_ids(
        db: Path, crash_at: int) -> None:
    svc = FakeService(page_size=3)
    svc.create(*(f"r{i}" for i in range(7)))
    sink = MemorySink()
    assert await drain(db, svc, sink)  # bootstrap: 3 pages
    boot = len(sink.events)
    svc.create("r10", "r11", "r12")
    svc.delete("r1", "r10")
    svc.create("r13")
    svc.delete("r2", "r13")  # 9 log entries: 3 incremental pages
    completed = await drain(db, svc, sink, crash_at=crash_at)
    if not completed:
        assert await drain(db, svc, sink)
    events = sink.events
    assert replay(events) == svc.live()
    assert await known_ids(db, svc) == svc.live()
    assert_same_id_same_change(events)
    later = events[boot:]
    want = {(ChangeKind.CREATED, r) for r in ("r10", "r11", "r12", "r13")} | {
        (ChangeKind.DELETED, r) for r in ("r1", "r2", "r10", "r13")}
    assert {(e.kind, e.subject) for e in later} == want
    if crash_at < 3:
        assert len(later) > len(want), "the page cut by the crash is delivered again"
    for rid in ("r10", "r13"):
        kinds = [e.kind for e in later if e.subject == rid]
        assert kinds.index(ChangeKind.CREATED) < kinds.index(ChangeKind.DELETED)


@pytest.mark.parametrize("crash_at", range(5))
async def test_crash_during_overwrite_resync_resumes_with_an_exact_diff(
        db: Path, crash_at: int) -> None:
    svc = FakeService(page_size=4)
    svc.create(*(f"r{i}" for i in range(10)))
    sink = MemorySink()
    assert await drain(db, svc, sink)
    boot = len(sink.events)
    svc.delete("r0", "r5")
    svc.create("r20", "r21")
    svc.move_horizon()  # the stored token now gets overwrite
    completed = await drain(db, svc, sink, crash_at=crash_at)
    if not completed:
        assert await drain(db, svc, sink)
    later = sink.events[boot:]
    assert {(e.kind, e.subject) for e in later} == {
        (ChangeKind.DELETED, "r0"), (ChangeKind.DELETED, "r5"),
        (ChangeKind.CREATED, "r20"), (ChangeKind.CREATED, "r21")}
    assert all(e.snapshot for e in later)
    assert_same_id_same_change(sink.events)
    assert replay(sink.events) == svc.live()
    assert await known_ids(db, svc) == svc.live()
    async with SqliteStateStore(db) as store:
        st = await store.get_stream(SUB, C)
    assert st is not None
    assert not st.in_resync
    assert st.known_count == len(svc.live())


async def test_sink_failure_keeps_the_token_and_the_page_is_retried(db: Path) -> None:
    svc = FakeService(page_size=10)
    svc.create("r1", "r2")
    sink = MemorySink()
    assert await drain(db, svc, sink)
    async with SqliteStateStore(db) as store:
        token = (await store.get_stream(SUB, C)).sync_token  # type: ignore[union-attr]
    svc.create("r3")
    sink.fail = True
    with pytest.raises(SinkError):
        await drain(db, svc, sink)
    async with SqliteStateStore(db) as store:
        assert (await store.get_stream(SUB, C)).sync_token == token  # type: ignore[union-attr]
    sink.fail = False
    assert await drain(db, svc, sink)
    assert [e.subject for e in sink.events] == ["r1", "r2", "r3"]


async def test_created_and_deleted_between_polls_are_both_reported_in_order(db: Path) -> None:
    svc = FakeService(page_size=10)
    svc.create("r1")
    sink = MemorySink()
    assert await drain(db, svc, sink)
    svc.create("flash")
    svc.delete("flash")
    assert await drain(db, svc, sink)
    assert [(e.kind, e.subject, e.snapshot) for e in sink.events[1:]] == [
        (ChangeKind.CREATED, "flash", False), (ChangeKind.DELETED, "flash", False)]
    assert await known_ids(db, svc) == {"r1"}


async def test_emit_initial_false_records_ids_without_events(db: Path) -> None:
    svc = FakeService(page_size=2)
    svc.create("r1", "r2", "r3")
    sink = MemorySink()
    assert await drain(db, svc, sink, emit_initial=False)
    assert sink.events == []
    assert await known_ids(db, svc) == {"r1", "r2", "r3"}
    svc.delete("r2")
    svc.create("r4")
    assert await drain(db, svc, sink, emit_initial=False)
    assert {(e.kind, e.subject, e.snapshot) for e in sink.events} == {
        (ChangeKind.DELETED, "r2", False), (ChangeKind.CREATED, "r4", False)}
    assert len(sink.events) == 2


async def test_crash_after_first_bootstrap_page_then_delete_is_not_lost(db: Path) -> None:
    svc = FakeService(page_size=2)
    svc.create("r1", "r2", "r3")
    sink = MemorySink()
    assert not await drain(db, svc, sink, crash_at=0)  # r1, r2 delivered, not checkpointed
    assert announced_rows(db) == ["r1", "r2"]
    svc.delete("r1")
    assert await drain(db, svc, sink)  # a fresh snapshot: r2, r3; r1 is gone
    assert replay(sink.events) == svc.live()
    assert await known_ids(db, svc) == svc.live()
    assert_same_id_same_change(sink.events)
    assert kinds_of(sink.events, "r1") == [ChangeKind.CREATED, ChangeKind.CREATED,
                                           ChangeKind.DELETED]
    assert all(e.snapshot for e in sink.events)
    assert announced_rows(db) == []


async def test_crash_after_first_overwrite_page_then_delete_is_not_lost(db: Path) -> None:
    svc = FakeService(page_size=2)
    svc.create("r0")
    sink = MemorySink()
    assert await drain(db, svc, sink)
    boot = len(sink.events)
    svc.delete("r0")
    svc.create("r10", "r11", "r12")
    svc.move_horizon()  # the stored token now gets overwrite
    assert not await drain(db, svc, sink, crash_at=0)  # r10, r11 delivered, not checkpointed
    svc.delete("r10")
    assert await drain(db, svc, sink)
    later = sink.events[boot:]
    assert {(e.kind, e.subject) for e in later} == {
        (ChangeKind.CREATED, "r10"), (ChangeKind.CREATED, "r11"), (ChangeKind.CREATED, "r12"),
        (ChangeKind.DELETED, "r0"), (ChangeKind.DELETED, "r10")}
    assert all(e.snapshot for e in later)
    assert kinds_of(later, "r10")[-2:] == [ChangeKind.CREATED, ChangeKind.DELETED]
    assert replay(sink.events) == svc.live() == {"r11", "r12"}
    assert await known_ids(db, svc) == svc.live()
    assert_same_id_same_change(sink.events)
    # The late events carry the relationship as the service first sent it.
    created, deleted = [e for e in later if e.subject == "r10"][-2:]
    assert created.data["relationship"] == {"id": "r10", "createdOn": "2026-01-01T00:00:00Z",
                                            "isDeleted": False, "entities": ENTITIES}
    assert created.time == "2026-01-01T00:00:00Z"
    assert deleted.data["relationship"]["isDeleted"] is True
    assert deleted.time == "2023-11-14T22:13:20Z"  # when the resync noticed it
    assert announced_rows(db) == []


async def test_crash_while_announcing_a_vanished_relationship_repeats_the_same_events(
        db: Path) -> None:
    svc = FakeService(page_size=2)
    svc.create("r1", "r2", "r3")
    sink = MemorySink()
    assert not await drain(db, svc, sink, crash_at=0)
    svc.delete("r1")
    # Page [r2, r3] is checkpointed (commit 0); r1's created+deleted go out, then the crash.
    assert not await drain(db, svc, sink, crash_at=1)
    assert announced_rows(db) == ["r1"]
    assert await drain(db, svc, sink)
    assert kinds_of(sink.events, "r1") == [ChangeKind.CREATED] + [
        ChangeKind.CREATED, ChangeKind.DELETED] * 2
    assert_same_id_same_change(sink.events)
    assert replay(sink.events) == svc.live()
    assert await known_ids(db, svc) == svc.live()
    async with SqliteStateStore(db) as store:
        st = await store.get_stream(SUB, C)
    assert st is not None
    assert not st.in_resync
    assert st.sync_token is not None
    assert announced_rows(db) == []


async def test_a_restarted_search_bootstrap_reports_what_the_cut_attempt_listed_and_lost(
        db: Path) -> None:
    svc = FakeService(page_size=2)
    svc.create("r1", "r2", "r3", "r4")
    sink = MemorySink()
    query = {"domain": "autodesk-bim360-asset"}
    # Page [r1, r2] is checkpointed; [r3, r4] delivered, not checkpointed.
    assert not await drain(db, svc, sink, crash_at=1, query=query)
    svc.delete("r1")
    assert await drain(db, svc, sink, query=query)
    assert kinds_of(sink.events, "r1") == [ChangeKind.CREATED, ChangeKind.DELETED]
    assert replay(sink.events) == svc.live() == {"r2", "r3", "r4"}
    assert await known_ids(db, svc) == svc.live()
    assert_same_id_same_change(sink.events)
    assert announced_rows(db) == []


async def test_what_is_announced_where_a_crash_could_lose_a_deletion(db: Path) -> None:
    svc = FakeService(page_size=2)
    svc.create("r1", "r2", "r3")
    hook = OutboxMemorySink("hook")
    # Outbox sinks get a page's events only with its checkpoint: nothing left before the crash.
    assert not await drain(db, svc, hook, crash_at=0)
    assert announced_rows(db) == []
    svc.delete("r1")
    assert await drain(db, svc, hook)
    async with SqliteStateStore(db) as store:
        rows = await store.outbox_fetch_due("hook", 2e9, 100)
    assert sorted(r.ordering_key for r in rows) == ["r2", "r3"]  # nothing about r1
    # Incremental pages are announced too: the token may be rejected after the crash, and the
    # fresh snapshot that replaces the page may not list r5 any more. The next checkpoint
    # forgets the announcement.
    sink = MemorySink()
    svc.create("r5")
    assert not await drain(db, svc, sink, crash_at=0)
    assert [e.subject for e in sink.events] == ["r5"]
    assert announced_rows(db) == ["r5"]
    assert await drain(db, svc, sink)
    assert announced_rows(db) == []
    # emit_initial: false publishes no created event on a first sync: nothing to announce.
    quiet = MemorySink()
    svc2 = FakeService(page_size=2)
    svc2.create("q1", "q2", "q3")
    other = db.with_name("other.db")
    assert not await drain(other, svc2, quiet, crash_at=0, emit_initial=False)
    assert announced_rows(other) == []
    assert quiet.events == []


async def test_every_resync_page_is_announced(db: Path) -> None:
    """Also pages after a saved cursor: resuming from it may not give the same page again (a
    cursor rejected, or a snapshot the service restarts), so a created event delivered before
    the crash must be remembered until its checkpoint. (The drain once announced only the
    pages before the first saved cursor; the stateful tests found the lost deletion.)"""
    svc = FakeService(page_size=2)
    svc.create("r1", "r2", "r3", "r4", "r5", "r6")
    sink = MemorySink()
    # Dies at the third page's checkpoint: pages 1 and 2 are checkpointed, page 3 (delivered,
    # not checkpointed) stays announced.
    assert not await drain(db, svc, sink, crash_at=2)
    assert announced_rows(db) == ["r5", "r6"]
    assert {e.subject for e in sink.events} == {"r1", "r2", "r3", "r4", "r5", "r6"}
    svc.delete("r5")  # delivered by page 3 only: resuming from the cursor replays page 3
    assert await drain(db, svc, sink)  # ends the snapshot (as of its start: r5 still there)
    assert await drain(db, svc, sink)  # the next sync reports the deletion
    assert kinds_of(sink.events, "r5")[-1] is ChangeKind.DELETED
    assert replay(sink.events) == svc.live()
    assert await known_ids(db, svc) == svc.live()
    assert_same_id_same_change(sink.events)


def test_detection_lag_is_sampled_per_page() -> None:
    from prometheus_client import CollectorRegistry

    from notifier.core.events import build_event
    from notifier.metrics import Metrics
    from notifier.publisher import LAG_SAMPLES, Publisher
    from notifier.source.models import Relationship

    metrics = Metrics(CollectorRegistry(), runtime=False)
    publisher = Publisher(metrics, clock=lambda: 1_700_000_100.0)

    def events(n: int, snapshot: bool = False) -> list[Event]:
        out = []
        for i in range(n):
            rel = Relationship(id=f"r{i}", created_on="2023-11-14T22:13:20Z", is_deleted=False,
                               deleted_on=None, raw={"id": f"r{i}", "isDeleted": False,
                                                     "createdOn": "2023-11-14T22:13:20Z",
                                                     "entities": ENTITIES})
            out.append(build_event(subscription=SUB, container_id=C, relationship=rel,
                                   kind=ChangeKind.CREATED, snapshot=snapshot, seen_at=""))
        return out

    def count() -> float:
        return metrics.registry.get_sample_value(
            "notifier_sync_detection_lag_seconds_count") or 0.0

    publisher.observe_lag(events(5))
    assert count() == 5  # small pages: every event
    publisher.observe_lag(events(100))
    assert 5 < count() <= 5 + LAG_SAMPLES  # large pages: a sample
    publisher.observe_lag(events(50, snapshot=True))
    assert count() <= 5 + LAG_SAMPLES  # snapshot events carry no detection lag
    lag_sum = metrics.registry.get_sample_value("notifier_sync_detection_lag_seconds_sum")
    assert lag_sum == count() * 100.0  # createdOn 1_700_000_000, published 100 s later


async def test_only_a_resync_last_page_says_the_snapshot_ends(
        db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The hint that lets the store keep a resync's listed ids in memory (nothing written that
    the end of the resync drops a moment later) comes with the last page only; the bootstrap
    whose last page reaches the flush threshold writes no staging row, and the diff is exact."""
    from notifier.state.sqlite_keys import Staging

    monkeypatch.setattr(Staging, "FLUSH_IDS", 10)  # reached by the 10 ids of the last page
    svc = FakeService(page_size=4)
    svc.create(*(f"r{i}" for i in range(10)))
    sink = MemorySink()
    hints: list[tuple[bool, bool]] = []
    written: list[int] = []

    class Recording(SqliteStateStore):
        async def commit_page(self, *args: Any, **kwargs: Any) -> None:
            hints.append((kwargs["in_resync"], kwargs.get("snapshot_ends", False)))
            await super().commit_page(*args, **kwargs)
            if kwargs["in_resync"]:
                conn = sqlite3.connect(db)
                written.append(conn.execute("SELECT count(*) FROM resync_seen").fetchone()[0])
                conn.close()

    async with Recording(db) as store:
        syncer = StreamSyncer(store, metrics=private_metrics(), clock=lambda: 1_700_000_000.0)
        assert (await syncer.drain(svc, spec(sink))).completed  # type: ignore[arg-type]
    assert hints == [(True, False), (True, False), (True, True), (False, False)]
    assert written == [0, 0, 0]
    assert replay(sink.events) == svc.live()
    assert await known_ids(db, svc) == svc.live()
