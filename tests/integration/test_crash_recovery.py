"""Crashes, stops and bad streams: the notifier as a real process against the simulator.

SIGKILL at random moments loses no change; SIGTERM exits 0 in time and a restart carries on; a
quarantined stream (container gone, token rejected) does not stall the others and recovers with
an exact resync.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import sqlite3
import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from notifier.app import App
from notifier.config import config_from_data
from notifier.simulator import Simulator
from tests.integration.main_job_support import (
    CREATED,
    DELETED,
    StreamKey,
    base_config,
    check_stream_invariants,
    duplicates,
    filter_of,
    mismatch,
    read_jsonl,
    replay,
    set_stored_token,
    sim_config,
    start_notifier,
    status_json,
    stop_process,
    truth_change_ids,
    truth_live,
    wait_for,
    write_config,
)

A = "0f8a3c52-6d1e-4b7a-9c2e-5a1b3d4e6f70"
B = "7b2e9d14-3a5c-4f86-b0d1-2c9e8f7a6b53"
GHOST = "9e9e9e9e-1111-4222-8333-444455556666"
ASSET = "autodesk-bim360-asset"

SUBS: list[dict[str, Any]] = [
    {"name": "all-a", "credential": "sim", "container_id": A, "sinks": ["archive"]},
    {"name": "all-ab", "credential": "sim", "container_ids": [A, B], "sinks": ["archive"]},
    {"name": "assets-b", "credential": "sim", "container_id": B, "domains": [ASSET],
     "sinks": ["archive"]},
]


def streams(subs: list[dict[str, Any]]) -> list[tuple[dict[str, Any], str]]:
    return [(s, cid) for s in subs for cid in (s.get("container_ids") or [s["container_id"]])]


def truth(sim: Simulator, subs: list[dict[str, Any]]) -> dict[StreamKey, set[str]]:
    return {(s["name"], cid): truth_live(sim, cid, filter_of(s)) for s, cid in streams(subs)}


def nonempty(d: dict[StreamKey, set[str]]) -> dict[StreamKey, set[str]]:
    return {k: v for k, v in d.items() if v}


def caught_up(sim: Simulator, subs: list[dict[str, Any]], path: Path) -> Any:
    return lambda: nonempty(replay(read_jsonl(path).events)) == nonempty(truth(sim, subs))


def resyncing_streams(db: Path) -> int:
    """How many streams the store shows in the middle of a bootstrap or overwrite resync."""
    with sqlite3.connect(db) as conn:
        (n,) = conn.execute("SELECT count(*) FROM streams WHERE in_resync").fetchone()
    conn.close()
    return int(n)


STARTED = b" started: "


def starts(log: Path) -> int:
    """How many processes have logged that they started (the log is appended to)."""
    return log.read_bytes().count(STARTED) if log.exists() else 0


async def started(log: Path, before: int) -> None:
    """Wait for a process started after ``before`` starts to be up: the catch-up bounds below
    are about the service, and starting Python takes seconds of its own on a loaded machine."""
    await wait_for(lambda: starts(log) > before, 60, "the process to start")


def no_traceback(log: Path) -> None:
    text = log.read_text(errors="replace") if log.exists() else ""
    assert "Traceback" not in text, text[-3000:]


@pytest.mark.timeout(420)
async def test_sigkill_at_random_moments_loses_nothing(tmp_path: Path) -> None:
    seed = int(os.environ.get("CRASH_SEED", time.time_ns() % 10_000))
    rng = random.Random(seed)
    path, log = tmp_path / "events.jsonl", tmp_path / "notifier.log"
    async with Simulator(sim_config([A, B], relationships=60, page_size=5,
                                    latency=0.01)) as sim:
        cfg = write_config(tmp_path, base_config(tmp_path, sim.url, SUBS))
        kills = 0
        torn_tails = 0

        async def kill(proc: asyncio.subprocess.Process) -> None:
            nonlocal kills, torn_tails
            rc = await stop_process(proc, signal.SIGKILL)
            assert rc == -signal.SIGKILL
            kills += 1
            torn_tails += bool(read_jsonl(path).partial_tail)

        # A kill in the middle of the bootstrap (many small pages, nothing changing yet).
        proc = await start_notifier(cfg, log=log)
        await started(log, 0)
        await wait_for(lambda: path.exists() and path.stat().st_size > 0, 45, "first events")
        await asyncio.sleep(rng.uniform(0.0, 0.3))
        await kill(proc)
        n = starts(log)
        proc = await start_notifier(cfg, log=log)
        await started(log, n)
        await wait_for(caught_up(sim, SUBS, path), 45, f"the bootstrap (seed {seed})")
        start = {cid: sim.state.container(cid).seq for cid in (A, B)}

        # Changes flowing, kill -9 at random moments, restart at once each time.
        sim.state.set_knobs(change_rate=25.0)
        for _ in range(rng.randint(3, 4)):
            await asyncio.sleep(rng.uniform(0.3, 1.2))
            await kill(proc)
            n = starts(log)
            proc = await start_notifier(cfg, log=log)
        await asyncio.sleep(0.5)
        sim.state.set_knobs(change_rate=0.0)
        await started(log, n)
        await wait_for(caught_up(sim, SUBS, path), 45, f"catching up (seed {seed})")

        # A forced overwrite while it is down, and a kill in the middle of the resync.
        assert await stop_process(proc, signal.SIGTERM) == 0
        for cid in (A, B):
            sim.state.delete_random(cid, 3)
            sim.state.create_relationships(cid, 3)
            sim.state.move_retention_horizon(cid)
        marker = b"overwrite: resyncing"
        seen = log.read_bytes().count(marker)
        n = starts(log)
        proc = await start_notifier(cfg, log=log)
        await started(log, n)
        await wait_for(lambda: log.read_bytes().count(marker) > seen, 45, "the overwrite")
        await asyncio.sleep(rng.uniform(0.0, 0.2))
        await kill(proc)
        in_resync = resyncing_streams(tmp_path / "state.db")
        n = starts(log)
        proc = await start_notifier(cfg, log=log)
        await started(log, n)
        await wait_for(caught_up(sim, SUBS, path), 45, f"the overwrite resync (seed {seed})")
        assert await stop_process(proc, signal.SIGTERM) == 0

        got = read_jsonl(path)
        live = replay(got.events)
        want = truth(sim, SUBS)
        assert nonempty(live) == nonempty(want), f"seed {seed}\n{mismatch(live, want)}"
        ids = check_stream_invariants(got.events)
        for s, cid in streams(SUBS):
            must = truth_change_ids(sim, cid, filter_of(s), start[cid])
            assert must <= ids[(s["name"], cid)], f"seed {seed}: {s['name']} lost changes"
            assert len(must) > len(want[(s["name"], cid)]), "changes happened after bootstrap"
        assert kills >= 5
        assert got.partial_tail == b"", "a clean stop leaves no partial line"
        assert torn_tails == 0, "a kill left a partial line (the sink writes one write per page)"
        print(f"seed {seed}: {kills} kills, {len(got.events)} events, "
              f"{duplicates(got.events)} redelivered, {in_resync} streams cut mid-resync")
    no_traceback(log)


@pytest.mark.timeout(120)
async def test_sigterm_exits_zero_in_time_and_restart_continues(tmp_path: Path) -> None:
    path, log = tmp_path / "events.jsonl", tmp_path / "notifier.log"
    async with Simulator(sim_config([A, B], relationships=20, page_size=4)) as sim:
        cfg = write_config(tmp_path, base_config(tmp_path, sim.url, SUBS))
        proc = await start_notifier(cfg, log=log)
        await wait_for(caught_up(sim, SUBS, path), 45, "the bootstrap")
        start = {cid: sim.state.container(cid).seq for cid in (A, B)}
        sim.state.set_knobs(change_rate=20.0, latency=0.3)  # requests in flight at the signal
        await asyncio.sleep(1.5)
        t0 = time.monotonic()
        rc = await stop_process(proc, signal.SIGTERM, within=10)
        elapsed = time.monotonic() - t0
        assert rc == 0
        assert elapsed < 5.0 + 1.0, f"took {elapsed:.1f}s with shutdown_timeout 5s"
        text = log.read_text()
        assert "stopped" in text

        # Changes keep coming while it is down; the restart picks up where it left off.
        await asyncio.sleep(0.5)
        sim.state.set_knobs(change_rate=0.0, latency=0.0)
        proc = await start_notifier(cfg, log=log)
        await wait_for(caught_up(sim, SUBS, path), 45, "catching up after the restart")
        assert await stop_process(proc, signal.SIGINT) == 0  # SIGINT is a stop too

        events = read_jsonl(path).events
        ids = check_stream_invariants(events)
        for s, cid in streams(SUBS):
            assert truth_change_ids(sim, cid, filter_of(s), start[cid]) <= ids[(s["name"], cid)]
    no_traceback(log)


@pytest.mark.timeout(180)
async def test_quarantined_streams_do_not_stall_the_others(tmp_path: Path) -> None:
    """A quarantine's end is judged against when it was set, not against the test's clock at a
    later ``status`` call: under load one status subprocess takes seconds, so the backoff is
    long enough (15 s) for the healthy stream to be served while the victim still sits out."""
    path = tmp_path / "events.jsonl"
    initial, maximum = 15.0, 20.0
    subs: list[dict[str, Any]] = [
        {"name": "good", "credential": "sim", "container_id": A, "sinks": ["archive"]},
        {"name": "victim", "credential": "sim", "container_id": B, "sinks": ["archive"]},
        {"name": "ghost", "credential": "sim", "container_ids": [GHOST, A],
         "sinks": ["archive"]},
    ]
    async with Simulator(sim_config([A, B], relationships=25, page_size=6)) as sim:
        data = base_config(tmp_path, sim.url, subs, poll={
            "quarantine_backoff_initial": f"{initial:.0f}s",
            "quarantine_backoff_max": f"{maximum:.0f}s"})
        cfg = write_config(tmp_path, data)
        def live_truth() -> dict[StreamKey, set[str]]:
            return nonempty({(s["name"], cid): truth_live(sim, cid, filter_of(s))
                             for s, cid in streams(subs) if cid != GHOST})

        def delivered() -> dict[StreamKey, set[str]]:
            return nonempty(replay(read_jsonl(path).events))

        started = time.time()
        app = App(config_from_data(data))
        task = asyncio.create_task(app.run())
        await wait_for(lambda: delivered() == live_truth(), 30, "the first bootstrap")
        # The missing container does not hold back the other container of its subscription.
        assert ("ghost", A) in delivered()
        app.request_stop()
        assert await asyncio.wait_for(task, 10) == 0
        status = await status_json(cfg)
        assert status[("ghost", GHOST)]["quarantine_reason"] == "gone"
        # Set during this run, forward by the backoff (no later than the longest backoff).
        assert started + initial <= status[("ghost", GHOST)]["quarantined_until"]
        assert status[("ghost", GHOST)]["quarantined_until"] <= time.time() + maximum
        assert status[("victim", B)]["bootstrapped"]
        known_b = truth_live(sim, B, filter_of({}))
        assert status[("victim", B)]["known_relationships"] == len(known_b)
        bootstrap_count = len(read_jsonl(path).events)

        # The victim's stored token gets garbled; B changes while nobody listens.
        set_stored_token(tmp_path / "state.db", "victim", B, "not-a-sync-token")
        gone_b = sim.state.delete_random(B, 3)
        new_b = sim.state.create_relationships(B, 4)

        restarted = time.time()
        app = App(config_from_data(data))
        task = asyncio.create_task(app.run())
        try:
            seen: list[dict[StreamKey, dict[str, Any]]] = []

            async def victim_quarantined() -> bool:
                seen.append(await status_json(cfg))
                return bool(seen[-1][("victim", B)]["quarantine_reason"] == "bad_token")

            await wait_for(victim_quarantined, 30, "the rejected token's quarantine")
            status = seen[-1]
            # The victim had no failure before: quarantined from its first check for the
            # initial backoff.
            assert restarted + initial <= status[("victim", B)]["quarantined_until"]
            assert status[("victim", B)]["quarantined_until"] <= time.time() + initial
            assert status[("ghost", GHOST)]["quarantine_reason"] == "gone"

            # Meanwhile the good streams keep flowing.
            fresh = sim.state.create_relationships(A, 2)

            def good_has_fresh() -> bool:
                subjects = {e["subject"] for e in read_jsonl(path).events
                            if e["data"]["subscription"] == "good"}
                return set(fresh) <= subjects

            await wait_for(good_has_fresh, 30, "events for the healthy stream")
            # The healthy stream was served while the victim sat out its quarantine: its fresh
            # events are in the file before anything the victim's recovery wrote.
            later = read_jsonl(path).events[bootstrap_count:]
            last_fresh = max(i for i, e in enumerate(later) if e["subject"] in fresh)
            first_victim = next((i for i, e in enumerate(later)
                                 if e["data"]["subscription"] == "victim"), len(later))
            assert last_fresh < first_victim, "the good stream waited for the victim"

            # After the backoff the victim resyncs: exactly its real differences, no more.
            await wait_for(lambda: delivered() == live_truth(), 60, "the victim's recovery")

            async def victim_clear() -> bool:
                st = (await status_json(cfg))[("victim", B)]
                return st["quarantine_reason"] is None and bool(st["bootstrapped"])

            await wait_for(victim_clear, 30, "the victim's quarantine to clear")
        finally:
            app.request_stop()
            assert await asyncio.wait_for(task, 10) == 0

        events = read_jsonl(path).events
        check_stream_invariants(events)
        assert duplicates(events) == 0
        victim_after = [e for e in events[bootstrap_count:]
                        if e["data"]["subscription"] == "victim"]
        assert {(e["type"], e["subject"]) for e in victim_after} == (
            {(DELETED, r) for r in gone_b} | {(CREATED, r) for r in new_b})
        assert all(e["snapshot"] for e in victim_after)
        status = await status_json(cfg)
        assert status[("ghost", GHOST)]["quarantine_reason"] == "gone"
        assert status[("ghost", GHOST)]["failures"] >= 2, "the ghost was retried after backoff"


@pytest.mark.timeout(60)
async def test_a_crashed_scheduler_stops_the_process_with_a_failure_status(tmp_path: Path
                                                                           ) -> None:
    """If the loop dies (here: a bug raises in the middle of it), the job must not exit 0:
    supervisors that restart only failed processes would leave it dead. (A failing state
    store does not kill the loop: see test_state_store_failure.py.)"""
    path = tmp_path / "events.jsonl"
    async with Simulator(sim_config([A], relationships=5)) as sim:
        data = base_config(tmp_path, sim.url, SUBS[:1])
        app = App(config_from_data(data))
        task = asyncio.create_task(app.run())
        await wait_for(caught_up(sim, SUBS[:1], path), 30, "the bootstrap")

        async def broken(*args: Any, **kwargs: Any) -> None:
            raise RuntimeError("a bug")

        app.store.mark_checked = broken  # type: ignore[method-assign]
        rc = await asyncio.wait_for(task, 10)
    assert rc != 0


@pytest.mark.timeout(60)
async def test_a_torn_last_line_does_not_corrupt_the_file_after_restart(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    async with Simulator(sim_config([A], relationships=5)) as sim:
        data = base_config(tmp_path, sim.url, SUBS[:1])
        for round_ in range(2):
            app = App(config_from_data(data))
            task = asyncio.create_task(app.run())
            await wait_for(caught_up(sim, SUBS[:1], path), 30, "the notifier to catch up")
            app.request_stop()
            assert await asyncio.wait_for(task, 10) == 0
            if round_ == 0:
                # What a kill in the middle of a write leaves behind.
                with path.open("ab") as f:
                    f.write(b'{"specversion":"1.0","id":"0f8a3c52-6d1e-4b7a-9c2e-5a1b3')
                sim.state.create_relationships(A, 2)
        got = read_jsonl(path)  # complete lines must all parse
        lines = path.read_bytes().split(b"\n")
        assert lines[-1] == b""  # the file ends with a whole line
        assert all(orjson.loads(line) for line in lines[:-1])  # and every line parses
        assert nonempty(replay(got.events)) == nonempty(truth(sim, SUBS[:1]))
