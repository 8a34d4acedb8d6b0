"""Direct syncs against the simulator over HTTP: a container the planner expects to have changed
is checked by ``sync`` instead of syncStatus-then-sync. The changes arrive from that one request
and its ``nextSyncToken`` is stored; an empty direct sync stores the fresh token it returns."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from prometheus_client import CollectorRegistry

from notifier.core.budget import RequestBudget
from notifier.core.planner import SchedulerSettings
from notifier.metrics import Metrics
from notifier.scheduler import CredentialScheduler
from notifier.simulator.config import DEFAULT_ACCESS_TOKEN
from notifier.sinks.memory import MemorySink
from notifier.source.auth import StaticTokenProvider
from notifier.source.client import RelationshipClient
from notifier.source.http import create_session
from notifier.state.sqlite import SqliteStateStore
from notifier.stream import StreamSpec
from notifier.sync import StreamSyncer
from tests.integration.test_scheduler_budget import CIDS, counting_sim, until

BUSY, FILTERED, QUIET = CIDS[:3]
DOMAIN = "autodesk-bim360-asset"
OTHER = "autodesk-bim360-issue"


async def test_direct_syncs_deliver_changes_and_store_the_token(tmp_path: Path) -> None:
    sink = MemorySink()
    specs = [StreamSpec("all", BUSY, ("main",), (sink,), emit_initial=False),
             StreamSpec("assets", FILTERED, ("main",), (sink,), domains=(DOMAIN,),
                        emit_initial=False),
             StreamSpec("all", QUIET, ("main",), (sink,), emit_initial=False)]
    async with counting_sim([BUSY, FILTERED, QUIET], rpm=0) as sim, \
            SqliteStateStore(tmp_path / "state.db") as store, create_session() as session:
        client = RelationshipClient(session, base_url=sim.url, credential_name="main",
                                    tokens=StaticTokenProvider(DEFAULT_ACCESS_TOKEN),
                                    budget=RequestBudget(6000, reserve=0.2), concurrency=4)
        metrics = Metrics(CollectorRegistry(), runtime=False)
        later = 0.0  # the scheduler's clock runs this much ahead: a minute between the passes

        sch = CredentialScheduler(
            "main", client, specs, store=store, syncer=StreamSyncer(store, metrics=metrics),
            metrics=metrics, settings=SchedulerSettings(requests_per_minute=6000, workers=2),
            drain_slots=asyncio.Semaphore(2), clock=lambda: time.time() + later)
        await sch.load()
        await sch.run(once=True)  # first syncs: every stream has a token
        tokens = {s.spec.container_id: s.token for s in sch.streams}
        assert all(tokens.values())
        fresh = sch.freshness(time.time())  # the tick keeps what it read until a check
        assert max(fresh.per_subscription.values()) < 30
        # The plan has seen BUSY and FILTERED change at their last checks: both are likely to
        # have changed again, so their next checks are direct syncs; QUIET is asked by status.
        now = sch.planner.groups[BUSY].last_checked or 0.0
        for s in sch.streams[:2]:
            sch.planner.observe(s.spec.container_id, s.spec.key, now=now, since=now - 30,
                                changed=True)
        made = set(sim.state.create_relationships(BUSY, 2))
        other = sim.state.create_relationships(
            FILTERED, [((OTHER, "issue", "i-1"), (OTHER, "issue", "i-2"))])  # not its domain
        calls = dict(sim.state.stats.requests)
        later = 60.0
        await sch.run(once=True)
        served = {ep: n - calls.get(ep, 0) for ep, n in sim.state.stats.requests.items()}
        # Checked a minute "later": the ages start again from those checks (not 60 s on).
        fresh = sch.freshness(time.time() + later)
        assert max(fresh.per_subscription.values()) < 30
        assert len(fresh.busy) + len(fresh.quiet) == 3

        assert {e.subject for e in sink.events} == made  # nothing of the other domain
        assert served.get("syncStatus") == 1  # QUIET only
        assert served.get("sync") == 2  # one each for BUSY and FILTERED: no status first
        for cid in (BUSY, FILTERED):
            stored = await store.get_stream("all" if cid == BUSY else "assets", cid)
            assert stored is not None
            runtime = next(s for s in sch.streams if s.spec.container_id == cid)
            assert stored.sync_token == runtime.token != tokens[cid]  # a fresh token, stored
        assert other  # (made in FILTERED: its token moved past it although nothing matched)

        # The stored tokens are the service's: asked again, nothing is new for either.
        sink.events.clear()
        more = set(sim.state.create_relationships(BUSY, 1))
        later = 120.0
        await sch.run(once=True)
        assert {e.subject for e in sink.events} == more  # only the newest: no replays


async def test_tokens_that_change_together_are_probed_by_one_sync(tmp_path: Path) -> None:
    """Three subscriptions to one busy container, seen changing together: a check syncs one of
    them first, and the two others only when it returned changes (a one-off pass, --once,
    checks every stream)."""
    sink = MemorySink()
    together = [StreamSpec(sub, BUSY, ("main",), (sink,), emit_initial=False)
                for sub in ("a", "b", "c")]
    others = [StreamSpec("a", cid, ("main",), (sink,), emit_initial=False) for cid in CIDS[1:]]
    clock = [time.time()]  # the planner's, moved by hand: a group is due only when moved
    async with counting_sim(CIDS, rpm=0) as sim, \
            SqliteStateStore(tmp_path / "state.db") as store, create_session() as session:
        client = RelationshipClient(session, base_url=sim.url, credential_name="main",
                                    tokens=StaticTokenProvider(DEFAULT_ACCESS_TOKEN),
                                    budget=RequestBudget(6000, reserve=0.2), concurrency=4)
        metrics = Metrics(CollectorRegistry(), runtime=False)
        sch = CredentialScheduler(
            "main", client, [*together, *others], store=store,
            syncer=StreamSyncer(store, metrics=metrics), metrics=metrics,
            settings=SchedulerSettings(requests_per_minute=6000, workers=2, interval=0.05),
            drain_slots=asyncio.Semaphore(2), clock=lambda: clock[0])
        await sch.load()
        await sch.run(once=True)  # first syncs: every stream has a token
        streams = [s for s in sch.streams if s.spec.container_id == BUSY]
        for _ in range(3):  # three checks that found all three changed
            clock[0] += 0.1
            sch.planner.learn(BUSY, [(s.spec.key, clock[0] - 0.1, True) for s in streams],
                              clock[0])
        sim.served.clear()
        await sch.run(once=True)  # a one-off pass: every stream, no probe
        assert sim.calls("sync")[BUSY] + sim.calls("syncStatus")[BUSY] >= 3
        running = asyncio.create_task(sch.run())
        try:
            async def check() -> dict[str, int]:
                """BUSY's next check (the others were checked less than a cap ago)."""
                clock[0] += sch.planner.groups[BUSY].interval + 1e-6
                sim.served.clear()
                assert await until(lambda: sch.planner.groups[BUSY].last_checked == clock[0], 10)
                return {ep: sim.calls(ep)[BUSY] for ep in ("syncStatus", "sync")}

            assert await until(lambda: all((sch.planner.due_of(c) or 0) > clock[0]
                                           for c in CIDS), 10)  # every group checked at start
            before = {s.spec.subscription: s.last_checked for s in streams}
            assert await check() == {"syncStatus": 0, "sync": 1}  # nothing new: the probe alone
            moved = {s.spec.subscription for s in streams
                     if s.last_checked != before[s.spec.subscription]}
            assert len(moved) == 1  # the others were not checked (and are not said to be)

            made = set(sim.state.create_relationships(BUSY, 2))
            assert await check() == {"syncStatus": 0, "sync": 3}  # found: the others too
            for s in streams:
                assert {e.subject for e in sink.events
                        if e.subscription == s.spec.subscription} >= made
        finally:
            sch.stop()
            await asyncio.wait_for(running, 10)
