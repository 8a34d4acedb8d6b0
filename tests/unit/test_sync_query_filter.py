"""Regression tests: a subscription with a search-query filter whose filter changes, with a
resync that dies part-way. The real syncer, a real SQLite file, the simulator in-process.

A query cannot be evaluated by the notifier, so at the end of a filter resync a relationship
the new snapshot did not list may only have left the filter (forgotten, no event) or be gone
(reported deleted). What it published under the new query itself is the exception: that
relationship matched the new query, so missing from it means gone.
"""

from __future__ import annotations

from pathlib import Path

from notifier.simulator import SimState, SimulatorConfig
from notifier.simulator.config import Knobs
from notifier.stream import StreamSpec
from notifier.sync import StreamSyncer
from tests.stateful_support import (
    ASSET,
    CREATED,
    DELETED,
    ISSUE,
    C,
    Crash,
    Faults,
    FaultyStore,
    RecordingSink,
    SimClient,
    quiet_metrics,
)

DOCS = "autodesk-bim360-documentmanagement"
OLD = {"domain": ISSUE}
NEW = {"domain": ASSET}


class World:
    """Issue relationships (the old query's), then asset ones (the new query's), one per
    search page."""

    def __init__(self, tmp: Path) -> None:
        self.sim = SimState(SimulatorConfig(containers=[C], relationships=0, seed=1,
                                            knobs=Knobs(page_size=1, rpm=0)))
        self.issues = self.sim.create_relationships(
            C, [((ISSUE, "issue", f"i{n}"), (DOCS, "documentlineage", f"d{n}"))
                for n in range(2)])
        self.assets = self.sim.create_relationships(
            C, [((ASSET, "asset", f"a{n}"), (DOCS, "documentlineage", f"e{n}"))
                for n in range(3)])
        self.faults = Faults()
        self.client = SimClient(self.sim, self.faults)
        self.sink = RecordingSink(self.faults)
        self.path = tmp / "state.db"

    async def drain(self, query: dict[str, str], *, crash_at: int | None = None,
                    store_class: type[FaultyStore] = FaultyStore) -> bool:
        """One drain on a freshly opened store (a restart each time); True if completed."""
        spec = StreamSpec(subscription="s", container_id=C, credentials=("sim",),
                          sinks=(self.sink,), query=query)
        self.faults.arm(crash_at)
        async with store_class(self.path, self.faults) as store:
            syncer = StreamSyncer(store, metrics=quiet_metrics())
            try:
                return (await syncer.drain(self.client, spec)).completed
            except Crash:
                return False
            finally:
                self.faults.arm(None)

    def events(self, start: int = 0) -> list[tuple[str, str]]:
        return [(e.type, e.subject) for e in self.sink.events[start:]]


async def test_a_creation_announced_under_the_new_query_then_deleted_is_reported_deleted(
    tmp_path: Path,
) -> None:
    """The filter changes to a new query; the filter resync's first page publishes created R
    and dies before its checkpoint; R is deleted upstream; the restarted resync no longer lists
    R. The consumer saw R created under the new query: R must be reported deleted. Was: every
    announcement of a query filter resync was forgotten (created R, never deleted R)."""
    w = World(tmp_path)
    assert await w.drain(OLD)
    assert await w.drain(OLD)  # caught up
    assert w.events() == [(CREATED, r) for r in w.issues]
    boot = len(w.sink.events)
    # Await points: begin (0, 1), search (2, 3), announce (4, 5), publish (6, 7): die after
    # the publish, before the checkpoint.
    assert not await w.drain(NEW, crash_at=7)
    r = w.assets[0]
    assert w.events(boot) == [(CREATED, r)]
    w.sim.delete_relationships(C, [r])
    assert await w.drain(NEW)
    assert w.events(boot + 1) == [(CREATED, a) for a in w.assets[1:]] + [
        (CREATED, r), (DELETED, r)]


async def test_a_creation_checkpointed_under_the_new_query_then_deleted_is_reported_deleted(
    tmp_path: Path,
) -> None:
    """As above, but the first page's checkpoint went through (R is known) and the resync
    dies at the next search page: a search has no cursor, so it starts over, and R, deleted
    meanwhile, is not listed. R was listed by this query: its absence is a deletion. Was:
    forgotten like a known relationship that only left the filter."""
    w = World(tmp_path)
    assert await w.drain(OLD)
    boot = len(w.sink.events)
    # ... publish (6, 7), checkpoint (8, 9), the second search page (10): die there.
    assert not await w.drain(NEW, crash_at=10)
    r = w.assets[0]
    assert w.events(boot) == [(CREATED, r)]
    w.sim.delete_relationships(C, [r])
    assert await w.drain(NEW)
    assert w.events(boot + 1) == [(CREATED, a) for a in w.assets[1:]] + [(DELETED, r)]


async def test_an_old_query_creation_deleted_during_the_change_is_forgotten(
    tmp_path: Path,
) -> None:
    """What the notifier cannot tell, as documented: a relationship known under the old query,
    deleted while the filter changes, and not listed by the new query, may only have left the
    filter; it is forgotten without a deleted event (the consumer drops what no longer
    matches). Announced under the old query and never checkpointed, the same."""
    w = World(tmp_path)
    assert not await w.drain(OLD, crash_at=7)  # announced issues[0], then died
    assert w.events() == [(CREATED, w.issues[0])]
    w.sim.delete_relationships(C, w.issues[:1])
    assert await w.drain(NEW)
    assert {t for t, _ in w.events(1)} == {CREATED}
    assert {s for _, s in w.events(1)} == set(w.assets)


async def test_a_rejected_query_token_resyncs_through_the_query_search(tmp_path: Path) -> None:
    """A query subscription whose sync token the service rejects resyncs by the query's
    search. Was: a sync without a token, which lists the whole container (every relationship
    outside the query came out created, and later changes were the container's)."""
    w = World(tmp_path)
    assert await w.drain(NEW)
    assert {s for _, s in w.events()} == set(w.assets)
    w.sim.knobs.reject_sync_tokens += 1
    made = w.sim.create_relationships(
        C, [((ISSUE, "issue", "i9"), (DOCS, "documentlineage", "d9")),
            ((ASSET, "asset", "a9"), (DOCS, "documentlineage", "e9"))])
    boot = len(w.sink.events)
    assert await w.drain(NEW)
    assert await w.drain(NEW)
    assert w.events(boot) == [(CREATED, made[1])]
