"""The main job in-process against the simulator: the delivered stream replays to the truth.

Real HTTP to the simulator on 127.0.0.1, a real SQLite state file and real jsonl files; the
simulator's state is driven directly and its model is the ground truth.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from notifier.app import App
from notifier.config import config_from_data
from notifier.core.events import ChangeKind, event_id
from notifier.simulator import Simulator
from tests.integration.main_job_support import (
    CREATED,
    DELETED,
    StreamKey,
    base_config,
    by_stream,
    check_stream_invariants,
    duplicates,
    filter_of,
    mismatch,
    read_jsonl,
    relationship,
    replay,
    sim_config,
    truth_change_ids,
    truth_live,
    wait_for,
)

pytestmark = pytest.mark.timeout(60)

A = "0f8a3c52-6d1e-4b7a-9c2e-5a1b3d4e6f70"
B = "7b2e9d14-3a5c-4f86-b0d1-2c9e8f7a6b53"
C = "c4d5e6f7-8091-4a2b-8c3d-4e5f60718293"
ASSET = "autodesk-bim360-asset"
ISSUE = "autodesk-bim360-issue"
ISSUES_ON_ASSETS = {"domain": ISSUE, "type": "issue", "withDomain": ASSET}


def subs_of(data: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {s["name"]: s for s in data["subscriptions"]}


def streams_of(data: dict[str, Any]) -> list[StreamKey]:
    out = []
    for s in data["subscriptions"]:
        for cid in s.get("container_ids") or [s["container_id"]]:
            out.append((s["name"], cid))
    return out


def truth(sim: Simulator, data: dict[str, Any]) -> dict[StreamKey, set[str]]:
    subs = subs_of(data)
    return {(name, cid): truth_live(sim, cid, filter_of(subs[name]))
            for name, cid in streams_of(data)}


def expected_ids(sim: Simulator, data: dict[str, Any], since: dict[str, int]
                 ) -> dict[StreamKey, set[str]]:
    subs = subs_of(data)
    return {(name, cid): truth_change_ids(sim, cid, filter_of(subs[name]), since[cid])
            for name, cid in streams_of(data)}


def seqs(sim: Simulator) -> dict[str, int]:
    return {cid: sim.state.container(cid).seq for cid in sim.containers}


def live_of(path: Path) -> dict[StreamKey, set[str]]:
    live = replay(read_jsonl(path).events)
    return {k: v for k, v in live.items() if v}


def caught_up(sim: Simulator, data: dict[str, Any], path: Path) -> Callable[[], bool]:
    def check() -> bool:
        want = {k: v for k, v in truth(sim, data).items() if v}
        return live_of(path) == want
    return check


@asynccontextmanager
async def running(data: dict[str, Any], **kw: Any) -> AsyncIterator[App]:
    """The App in this event loop; stopped (and its exit status checked) on the way out."""
    app = App(config_from_data(data), **kw)
    task = asyncio.create_task(app.run())
    try:
        yield app
    finally:
        app.request_stop()
        rc = await asyncio.wait_for(task, 15)
    assert rc == 0


async def pair_changes(sim: Simulator, rng: random.Random, rounds: int,
                       pause: Callable[[], Awaitable[None]]) -> None:
    """Creates and deletes over time in every container, some matching each filter."""
    n = 0
    for _ in range(rounds):
        for cid in (A, B, C):
            n += 1
            sim.state.create_relationships(cid, rng.randint(0, 3))
            sim.state.create_relationships(cid, [
                ((ISSUE, "issue", f"iss-{n}"), (ASSET, "asset", f"as-{n}")),
            ])
            if rng.random() < 0.5:
                sim.state.delete_random(cid, rng.randint(1, 2))
            if rng.random() < 0.3:
                # Created and deleted between two polls: both changes must still go out.
                [rid] = sim.state.create_relationships(cid, [
                    ((ISSUE, "issue", f"flash-{n}"), (ASSET, "asset", f"flash-as-{n}")),
                ])
                sim.state.delete_relationships(cid, [rid])
        await pause()


async def test_many_streams_replay_to_truth(tmp_path: Path) -> None:
    archive, mirror = tmp_path / "events.jsonl", tmp_path / "mirror.jsonl"
    subs: list[dict[str, Any]] = [
        {"name": "all-a", "credential": "sim", "container_id": A, "sinks": ["archive"]},
        {"name": "all-ab", "credential": "sim", "container_ids": [A, B],
         "sinks": ["archive", "mirror"]},
        {"name": "assets-bc", "credential": "sim", "container_ids": [B, C],
         "domains": [ASSET], "sinks": ["archive"]},
        {"name": "issues-on-assets-c", "credential": "sim", "container_id": C,
         "query": ISSUES_ON_ASSETS, "sinks": ["archive"]},
    ]
    async with Simulator(sim_config([A, B, C], relationships=40, page_size=7)) as sim:
        data = base_config(tmp_path, sim.url, subs, sinks=[
            {"name": "archive", "type": "jsonl", "path": str(archive)},
            {"name": "mirror", "type": "jsonl", "path": str(mirror)},
        ])
        start = seqs(sim)
        bootstrap = truth(sim, data)
        assert all(bootstrap.values()), "every filter must select something at the start"
        rng = random.Random(5)
        async with running(data):
            await wait_for(caught_up(sim, data, archive), 15, "the bootstrap")
            boot_events = read_jsonl(archive).events
            await pair_changes(sim, rng, 8, lambda: asyncio.sleep(rng.uniform(0.05, 0.4)))
            await wait_for(caught_up(sim, data, archive), 15, "the notifier to catch up")

        events = read_jsonl(archive).events
        assert live_of(archive) == {k: v for k, v in truth(sim, data).items() if v}, \
            mismatch(live_of(archive), truth(sim, data))
        ids = check_stream_invariants(events)
        want = expected_ids(sim, data, start)
        for key in want:
            assert ids.get(key, set()) == want[key], key
        assert duplicates(events) == 0

        # Snapshot exactly on the bootstrap: the created events of what existed at the start.
        snap = {(e["data"]["subscription"], e["data"]["containerId"], e["subject"])
                for e in events if e["snapshot"]}
        assert snap == {(s, c, r) for (s, c), rels in bootstrap.items() for r in rels}
        assert all(e["type"] == CREATED for e in events if e["snapshot"])
        assert all(e["snapshot"] for e in boot_events)
        assert sum(1 for e in events if not e["snapshot"]) > 20

        # The mirror sink of all-ab got exactly all-ab's events, in the same order.
        mirrored = read_jsonl(mirror).events
        assert mirrored == [e for e in events if e["data"]["subscription"] == "all-ab"]
        # Flash relationships (created and deleted between polls) were reported both ways.
        flash = [e for e in events if e["data"]["relationship"].get("entities")
                 and e["data"]["relationship"]["entities"][0]["id"].startswith("flash-")]
        assert {e["type"] for e in flash} == {CREATED, DELETED}


async def test_emit_initial_false_starts_from_now(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    subs: list[dict[str, Any]] = [
        {"name": "quiet", "credential": "sim", "container_id": A, "emit_initial": False,
         "sinks": ["archive"]},
        {"name": "loud", "credential": "sim", "container_id": A, "sinks": ["archive"]},
    ]
    async with Simulator(sim_config([A], relationships=25, page_size=10)) as sim:
        data = base_config(tmp_path, sim.url, subs)
        before = truth_live(sim, A, filter_of({}))
        async with running(data) as app:
            await wait_for(lambda: len(read_jsonl(path).events) == len(before), 10,
                           "the loud bootstrap")

            async def quiet_bootstrapped() -> bool:
                st = await app.store.get_stream("quiet", A)
                return bool(st and st.sync_token)
            await wait_for(quiet_bootstrapped, 10, "the quiet bootstrap")
            assert {e["data"]["subscription"] for e in read_jsonl(path).events} == {"loud"}

            created = sim.state.create_relationships(A, 3)
            gone = sim.state.delete_relationships(A, sorted(before)[:2])
            known_before_gone = [g for g in gone if g in before]

            def quiet_has_all() -> bool:
                evs = [e for e in read_jsonl(path).events
                       if e["data"]["subscription"] == "quiet"]
                return len(evs) >= len(created) + len(gone)
            await wait_for(quiet_has_all, 10, "the quiet stream's changes")

            # Events reach the sink before their checkpoint commits: wait for the commit.
            async def quiet_known_matches() -> bool:
                st = await app.store.get_stream("quiet", A)
                return st is not None and st.known_count == len(
                    truth_live(sim, A, filter_of({})))
            await wait_for(quiet_known_matches, 10, "the quiet stream's checkpoint")

        quiet = [e for e in read_jsonl(path).events if e["data"]["subscription"] == "quiet"]
        assert not any(e["snapshot"] for e in quiet)
        got = {(e["type"], e["subject"]) for e in quiet}
        want = {(CREATED, r) for r in created} | {(DELETED, r) for r in gone}
        assert got == want
        # Deleting something that existed before (never announced) still announces the deletion.
        assert known_before_gone, "the random deletions should hit pre-existing relationships"


async def test_forced_overwrite_emits_only_real_differences(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    subs: list[dict[str, Any]] = [
        {"name": "all", "credential": "sim", "container_id": A, "sinks": ["archive"]},
        {"name": "assets", "credential": "sim", "container_id": A, "domains": [ASSET],
         "sinks": ["archive"]},
        {"name": "issues-on-assets", "credential": "sim", "container_id": A,
         "query": ISSUES_ON_ASSETS, "sinks": ["archive"]},
    ]
    async with Simulator(sim_config([A], relationships=60, page_size=9)) as sim:
        data = base_config(tmp_path, sim.url, subs)
        async with running(data):
            await wait_for(caught_up(sim, data, path), 10, "the bootstrap")
        bootstrap_count = len(read_jsonl(path).events)

        # While the notifier is down: real changes, then the horizon moves past its tokens.
        # (Deletions first: a relationship created and deleted within the gap is invisible to
        # an overwrite, by nature.)
        issue_asset = [r.id for r in sim.state.container(A).by_id.values()
                       if not r.dseq and ISSUE in (r.a[0], r.b[0]) and ASSET in (r.a[0], r.b[0])]
        deleted = sim.state.delete_relationships(A, issue_asset[:2]) + sim.state.delete_random(A, 4)
        created = sim.state.create_relationships(A, [
            ((ISSUE, "issue", f"ow-{k}"), (ASSET, "asset", f"ow-as-{k}")) for k in range(4)
        ]) + sim.state.create_relationships(A, 5)
        sim.state.move_retention_horizon(A)
        before_restart = truth(sim, data)

        async with running(data) as app:
            await wait_for(caught_up(sim, data, path), 10, "the overwrite resync")

            async def settled() -> bool:
                sts = [await app.store.get_stream(s, A) for s in ("all", "assets",
                                                               "issues-on-assets")]
                return all(st and st.sync_token and not st.in_resync for st in sts)
            await wait_for(settled, 10, "the resyncs to finish")

        events = read_jsonl(path).events
        after = events[bootstrap_count:]
        assert live_of(path) == {k: v for k, v in before_restart.items() if v}
        check_stream_invariants(events)
        assert duplicates(events) == 0
        assert all(e["snapshot"] for e in after), "overwrite events are marked snapshot"
        subs_cfg = subs_of(data)
        for name in ("all", "assets", "issues-on-assets"):
            flt = filter_of(subs_cfg[name])
            want = {(CREATED, r) for r in created if flt.matches(relationship(sim, A, r))}
            want |= {(DELETED, r) for r in deleted if flt.matches(relationship(sim, A, r))}
            got = {(e["type"], e["subject"]) for e in after if e["data"]["subscription"] == name}
            assert got == want, name
            assert want, f"{name}: the changes should touch every filter"
        # The deleted events of an overwrite name the relationship and carry the same id as a
        # deletion seen incrementally would.
        for e in after:
            if e["type"] == DELETED:
                assert e["id"] == event_id(A, e["subject"], ChangeKind.DELETED)


async def test_stream_of_each_subscription_is_independent_of_sink_order(tmp_path: Path) -> None:
    """Two subscriptions on one container with different filters see their own changes only."""
    path = tmp_path / "events.jsonl"
    subs: list[dict[str, Any]] = [
        {"name": "assets", "credential": "sim", "container_id": B, "domains": [ASSET],
         "sinks": ["archive"]},
        {"name": "issues", "credential": "sim", "container_id": B, "domains": [ISSUE],
         "sinks": ["archive"]},
    ]
    async with Simulator(sim_config([B], relationships=30, page_size=5)) as sim:
        data = base_config(tmp_path, sim.url, subs)
        async with running(data):
            await wait_for(caught_up(sim, data, path), 10, "the bootstrap")
            sim.state.create_relationships(B, [
                (("autodesk-bim360-rfi", "rfi", "r1"), ("autodesk-bim360-documentmanagement",
                                                       "documentlineage", "d1")),
                ((ASSET, "asset", "a1"), ("autodesk-construction-photo", "photo", "p1")),
                ((ISSUE, "issue", "i1"), ("autodesk-construction-photo", "photo", "p2")),
            ])
            await wait_for(caught_up(sim, data, path), 10, "the changes")
        streams = by_stream(read_jsonl(path).events)
        subjects = {k: {e["data"]["relationship"]["entities"][0]["id"] for e in v
                        if not e["snapshot"]} for k, v in streams.items()}
        assert subjects[("assets", B)] == {"a1"}
        assert subjects[("issues", B)] == {"i1"}
