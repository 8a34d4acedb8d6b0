"""Regression tests for the stream state machine's defects (issue 13), each an interleaving
the earlier drain got wrong: the real syncer, a real SQLite file, the simulator in-process."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from notifier.errors import BadRequestError
from notifier.simulator import SimState, SimulatorConfig
from notifier.simulator.config import Knobs
from notifier.simulator.ids import fmt_uuid
from notifier.source.models import Relationship, SyncPage
from notifier.state.sqlite import SqliteStateStore
from notifier.state.sqlite_keys import Staging
from notifier.stream import StreamSpec
from notifier.sync import StreamSyncer
from tests.stateful_support import (
    ASSET,
    CREATED,
    DELETED,
    C,
    Crash,
    Faults,
    FaultyStore,
    RecordingSink,
    SimClient,
    quiet_metrics,
)


def replay(sink: RecordingSink, subscription: str = "s") -> set[str]:
    live: set[str] = set()
    for e in sink.events:
        if e.subscription != subscription:
            continue
        (live.add if e.type == CREATED else live.discard)(e.subject)
    return live


def truth(sim: SimState, domains: Sequence[str] | None = None) -> set[str]:
    return {fmt_uuid(r.uid) for r in sim.container(C).by_id.values()
            if not r.dseq and (domains is None or r.a[0] in domains or r.b[0] in domains)}


class World:
    def __init__(self, tmp: Path, *, relationships: int = 6, page_size: int = 2,
                 batch_pages: int = 1) -> None:
        self.sim = SimState(SimulatorConfig(containers=[C], relationships=relationships,
                                            seed=5, knobs=Knobs(page_size=page_size, rpm=0)))
        self.faults = Faults()
        self.client = SimClient(self.sim, self.faults)
        self.sink = RecordingSink(self.faults)
        self.path = tmp / "state.db"
        self.batch_pages = batch_pages

    def spec(self, domains: Sequence[str] | None = None) -> StreamSpec:
        return StreamSpec(subscription="s", container_id=C, credentials=("sim",),
                          sinks=(self.sink,), domains=tuple(domains) if domains else None)

    async def drain(self, spec: StreamSpec | None = None, *, force: bool = False,
                    crash_at: int | None = None, client: Any = None) -> bool:
        """One drain on a freshly opened store (a restart each time); True if completed."""
        self.faults.arm(crash_at)
        async with FaultyStore(self.path, self.faults) as store:
            syncer = StreamSyncer(store, metrics=quiet_metrics(),
                                  batch_pages=self.batch_pages, batch_seconds=3600.0)
            try:
                res = await syncer.drain(client or self.client, spec or self.spec(),
                                         force_resync=force)
            except Crash:
                return False
            finally:
                self.faults.arm(None)
        return res.completed


async def test_a_snapshot_restarted_by_the_service_still_reports_deletions(
    tmp_path: Path,
) -> None:
    """Defect 1: mid-resync the horizon moves again; the service starts the snapshot over.
    A known relationship the abandoned attempt listed, deleted before the new snapshot, must
    still be reported deleted."""
    w = World(tmp_path)
    assert await w.drain()
    w.sim.create_relationships(C, 1)
    w.sim.move_retention_horizon(C)

    def delete_a_listed_one_and_move_the_horizon() -> None:
        listed = [fmt_uuid(r.uid) for r in w.sim.container(C).log[:2]]
        w.sim.delete_relationships(C, listed[:1])
        w.sim.move_retention_horizon(C)

    # Call 1: the overwrite's first page (checkpointed with its cursor); before call 2 the
    # first listed relationship is deleted and the horizon moves: call 2 restarts the snapshot.
    w.client.interleave({2: [delete_a_listed_one_and_move_the_horizon]})
    assert await w.drain()
    assert replay(w.sink) == truth(w.sim)
    (gone,) = [e for e in w.sink.events if e.type == DELETED]
    assert gone.snapshot is True
    assert len(gone.data["relationship"]["entities"]) == 2


class ScriptedClient:
    """Answers sync requests from a fixed script of pages, by token."""

    credential_name = "scripted"

    def __init__(self, pages: dict[str | None, SyncPage]) -> None:
        self.pages = pages

    async def sync(self, container_id: str, token: str | None = None,
                   domains: Sequence[str] | None = None) -> SyncPage:
        return self.pages[token]


def rel(rid: str, deleted: bool = False) -> Relationship:
    ents = [{"domain": ASSET, "type": "asset", "id": f"{rid}-a"},
            {"domain": ASSET, "type": "asset", "id": f"{rid}-b"}]
    raw = {"id": rid, "createdOn": "2026-01-01T00:00:00Z", "isDeleted": deleted,
           "entities": ents}
    return Relationship(rid, raw["createdOn"], deleted, None, raw)


async def test_an_announced_creation_listed_as_current_and_deleted_in_one_batch(
    tmp_path: Path,
) -> None:
    """Defect 2: the bootstrap's first page announces X and dies before its checkpoint; the
    restarted snapshot lists X in current and in deleted within one batch: X is gone, and the
    created event that may have gone out must be followed by its deleted event."""
    w = World(tmp_path, batch_pages=3)
    first = ScriptedClient({None: SyncPage([rel("x")], [], True, False, "c1"),
                            "c1": SyncPage([], [], False, False, "w0")})
    # Await points (the scripted client has none): begin (0, 1), announce (2, 3), publish
    # (4, 5): die right after the publish.
    assert not await w.drain(client=first, crash_at=5)
    assert [(e.type, e.subject) for e in w.sink.events] == [(CREATED, "x")]
    again = ScriptedClient({
        None: SyncPage([rel("x")], [], True, True, "d1"),
        "d1": SyncPage([rel("y")], [rel("x", True)], False, True, "w1"),
    })
    assert await w.drain(client=again)
    assert replay(w.sink) == {"y"}
    assert [(e.type, e.subject) for e in w.sink.events if e.subject == "x"] == [
        (CREATED, "x"), (CREATED, "x"), (DELETED, "x")]


async def test_a_restart_found_in_a_joined_page_opens_the_next_batch(tmp_path: Path) -> None:
    """The pages of a batch are checked against the snapshot's committed ids together, after
    joining: a joined page that repeats a committed id is cut off with the pages after it,
    the pages before it are committed, and it starts the snapshot over as the next batch's
    first page (its followers joining it)."""
    w = World(tmp_path, batch_pages=2)
    pages = ScriptedClient({
        None: SyncPage([rel("a")], [], True, False, "c1"),
        "c1": SyncPage([rel("b")], [], True, False, "c2"),  # batch 1: a, b committed
        "c2": SyncPage([rel("c")], [], True, False, "c3"),  # batch 2 opens with c ...
        "c3": SyncPage([rel("a")], [], True, False, "c4"),  # ... a again: the restart
        "c4": SyncPage([rel("d")], [], False, False, "w1"),
    })
    seen_calls: list[int] = []

    class Counting(SqliteStateStore):
        async def resync_seen_subset(self, subscription: str, container_id: str,
                                     ids: Sequence[str]) -> set[str]:
            seen_calls.append(len(ids))
            return await super().resync_seen_subset(subscription, container_id, ids)

    async with Counting(w.path) as store:
        syncer = StreamSyncer(store, metrics=quiet_metrics(), batch_pages=2,
                              batch_seconds=3600.0)
        res = await syncer.drain(pages, w.spec())
        st = await store.get_stream("s", C)
    assert res.completed
    assert res.pages == 5
    assert [(e.type, e.subject) for e in w.sink.events] == [
        (CREATED, "a"), (CREATED, "b"), (CREATED, "c"), (CREATED, "d"),
        (DELETED, "b"), (DELETED, "c")]
    assert st is not None
    assert (st.sync_token, st.known_count) == ("w1", 2)
    # One look per batch: [b] (batch 1; its first page began the snapshot), [c, a] (batch 2,
    # cut at a), [a, d] (batch 3: a restarts the snapshot, d joins the new one)
    assert seen_calls == [1, 2, 2]


def corrupt(path: Path, column: str) -> None:
    """Make the stored token or cursor one the service rejects for good. A resync resumes
    from ``staged_cursor`` in a new process (how far its written staging set reaches), so a
    rejected cursor is both."""
    columns = ["resync_cursor", "staged_cursor"] if column == "resync_cursor" else [column]
    conn = sqlite3.connect(path)
    try:
        with conn:
            conn.execute("UPDATE streams SET "
                         + ", ".join(f"{c} = 'rejected-for-good'" for c in columns))
    finally:
        conn.close()


async def test_a_rejected_resync_cursor_falls_back_to_a_fresh_resync(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Defect 3: a cursor the service rejects for good (400) used to be sent again forever."""
    monkeypatch.setattr(Staging, "FLUSH_IDS", 1)  # every checkpoint saves a resumable cursor
    w = World(tmp_path)
    assert await w.drain()
    w.sim.create_relationships(C, 1)
    w.sim.move_retention_horizon(C)
    assert not await w.drain(crash_at=10)  # dies mid-overwrite with a saved cursor
    async with SqliteStateStore(w.path) as store:
        st = await store.get_stream("s", C)
        assert st is not None
        assert st.phase == "resync"
        assert st.resync_cursor is not None
    gone = w.sim.delete_random(C, 1)
    corrupt(w.path, "resync_cursor")
    force = False
    for _ in range(3):  # as the scheduler does: a 400 quarantines, then forces a resync
        try:
            if await w.drain(force=force):
                break
        except BadRequestError:
            force = True
    else:
        pytest.fail("the stream never recovered from its rejected cursor")
    assert replay(w.sink) == truth(w.sim)
    assert gone[0] not in replay(w.sink)


async def test_a_rejected_token_falls_back_to_a_fresh_resync_in_the_same_drain(
    tmp_path: Path,
) -> None:
    w = World(tmp_path)
    assert await w.drain()
    gone = w.sim.delete_random(C, 1)
    made = w.sim.create_relationships(C, 1)
    corrupt(w.path, "sync_token")
    assert await w.drain()
    assert replay(w.sink) == truth(w.sim)
    later = [(e.type, e.subject) for e in w.sink.events[6:]]
    assert sorted(later) == sorted([(CREATED, made[0]), (DELETED, gone[0])])


async def test_a_changed_domains_filter_resyncs_against_the_new_filter(tmp_path: Path) -> None:
    """Defect 4: a changed filter was ignored until a later overwrite, which then reported
    everything outside the new filter as deleted."""
    w = World(tmp_path, relationships=12, page_size=3)
    assert await w.drain(w.spec([ASSET]))
    assert replay(w.sink) == truth(w.sim, [ASSET])
    # Widened: the relationships that now match go out as created (snapshot: true).
    boot = len(w.sink.events)
    assert await w.drain(w.spec(None))
    assert replay(w.sink) == truth(w.sim)
    new = w.sink.events[boot:]
    assert new
    assert all(e.type == CREATED and e.snapshot for e in new)
    # Narrowed again: those that merely left the filter are forgotten without deleted events,
    # a deleted one that still matches is reported deleted; changes follow the new filter.
    inside = sorted(truth(w.sim, [ASSET]))
    w.sim.delete_relationships(C, inside[:1])
    boot = len(w.sink.events)
    assert await w.drain(w.spec([ASSET]))
    assert [(e.type, e.subject) for e in w.sink.events[boot:]] == [(DELETED, inside[0])]
    w.sim.move_retention_horizon(C)  # a later overwrite invents nothing
    made = w.sim.create_relationships(C, 6)
    boot = len(w.sink.events)
    assert await w.drain(w.spec([ASSET]))
    expect = set(made) & truth(w.sim, [ASSET])
    assert {(e.type, e.subject) for e in w.sink.events[boot:]} == {(CREATED, r) for r in expect}


async def test_deletions_found_by_an_overwrite_carry_both_entities(tmp_path: Path) -> None:
    w = World(tmp_path)
    assert await w.drain()
    bodies = {e.subject: e.data["relationship"] for e in w.sink.events}
    gone = w.sim.delete_random(C, 2)
    w.sim.move_retention_horizon(C)
    assert await w.drain()
    deleted = [e for e in w.sink.events if e.type == DELETED]
    assert sorted(e.subject for e in deleted) == sorted(gone)
    for e in deleted:
        rel_ = e.data["relationship"]
        assert rel_["isDeleted"] is True
        assert rel_["entities"] == bodies[e.subject]["entities"]


async def test_a_page_delivered_after_a_saved_cursor_then_rejected_loses_no_deletion(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Found by the stateful tests: a resync page after the first saved cursor is delivered and
    the process dies before its checkpoint; the cursor is then rejected, so the fresh snapshot
    does not bring that page again. A relationship it announced and that is gone since must
    still get its deleted event."""
    monkeypatch.setattr(Staging, "FLUSH_IDS", 1)  # every checkpoint saves a resumable cursor
    w = World(tmp_path)
    commits = 0

    class DiesAtSecondCheckpoint(FaultyStore):
        async def commit_page(self, *args: Any, **kwargs: Any) -> None:
            nonlocal commits
            commits += 1
            if commits == 2:
                raise Crash("killed before the second checkpoint")
            await super().commit_page(*args, **kwargs)

    async with DiesAtSecondCheckpoint(w.path, w.faults) as store:
        syncer = StreamSyncer(store, metrics=quiet_metrics())
        with pytest.raises(Crash):
            await syncer.drain(w.client, w.spec())
    delivered = [e.subject for e in w.sink.events]
    assert len(delivered) == 4  # pages 1 and 2; only page 1 checkpointed
    w.sim.delete_relationships(C, delivered[2:3])
    corrupt(w.path, "resync_cursor")
    assert await w.drain()
    assert await w.drain()
    assert replay(w.sink) == truth(w.sim)


async def test_an_incremental_page_delivered_then_its_token_rejected_loses_no_deletion(
    tmp_path: Path,
) -> None:
    """Found by the stateful tests: an incremental page is delivered and the process dies
    before its checkpoint; the stored token is then rejected, so a fresh snapshot replaces the
    page, and a relationship it created, deleted since, is not in that snapshot. Its created
    event went out: it must get its deleted event. Was: only resync pages were announced."""
    w = World(tmp_path)
    assert await w.drain()
    made = w.sim.create_relationships(C, 2)

    class DiesAtItsCheckpoint(FaultyStore):
        async def commit_page(self, *args: Any, **kwargs: Any) -> None:
            raise Crash("killed after the publish, before the checkpoint")

    async with DiesAtItsCheckpoint(w.path, w.faults) as store:
        with pytest.raises(Crash):
            await StreamSyncer(store, metrics=quiet_metrics()).drain(w.client, w.spec())
    assert [(e.type, e.subject) for e in w.sink.events[-2:]] == [(CREATED, r) for r in made]
    w.sim.delete_relationships(C, made[:1])
    w.sim.knobs.reject_sync_tokens += 1
    assert await w.drain()
    assert replay(w.sink) == truth(w.sim)
    assert [e.type for e in w.sink.events if e.subject == made[0]] == [
        CREATED, CREATED, DELETED]
