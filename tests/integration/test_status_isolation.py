"""One bad token does not stall its container (issue 13, defect 6).

The service may answer a syncStatus batch that holds one unusable token with a 400 for the whole
batch (the simulator's ``status_batch_400`` knob). The scheduler splits the batch down to the
culprit: the other streams of the container go on, the culprit is quarantined and recovers by a
resync (an exact diff). The real App, real HTTP to the simulator, a real state file.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from notifier.app import App
from notifier.config import config_from_data
from notifier.simulator import Simulator
from tests.integration.main_job_support import (
    CREATED,
    DELETED,
    base_config,
    check_stream_invariants,
    read_jsonl,
    replay,
    set_stored_token,
    sim_config,
    status_json,
    wait_for,
    write_config,
)

B = "7b2e9d14-3a5c-4f86-b0d1-2c9e8f7a6b53"
NAMES = ("one", "two", "victim", "three")


@pytest.mark.timeout(60)
async def test_a_400_for_a_whole_status_batch_isolates_the_bad_token(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    subs: list[dict[str, Any]] = [
        {"name": n, "credential": "sim", "container_id": B, "sinks": ["archive"]} for n in NAMES]
    async with Simulator(sim_config([B], relationships=8, page_size=5)) as sim:
        data = base_config(tmp_path, sim.url, subs, poll={
            "quarantine_backoff_initial": "2s", "quarantine_backoff_max": "3s"})
        cfg = write_config(tmp_path, data)

        def delivered(name: str) -> set[str]:
            return replay(read_jsonl(path).events).get((name, B), set())

        def live() -> set[str]:
            return set(sim.state.ground_truth(B)["live"])

        app = App(config_from_data(data))
        task = asyncio.create_task(app.run())
        try:
            await wait_for(lambda: all(delivered(n) == live() for n in NAMES), 15,
                           "the bootstrap")
        finally:
            app.request_stop()
            assert await asyncio.wait_for(task, 10) == 0
        boot = len(read_jsonl(path).events)

        set_stored_token(tmp_path / "state.db", "victim", B, "not-a-sync-token")
        sim.state.set_knobs(status_batch_400=True)
        gone = sim.state.delete_random(B, 2)
        made = sim.state.create_relationships(B, 3)
        app = App(config_from_data(data))
        task = asyncio.create_task(app.run())
        try:
            others = [n for n in NAMES if n != "victim"]
            await wait_for(lambda: all(delivered(n) == live() for n in others), 15,
                           "the healthy streams of the container")
            await wait_for(lambda: delivered("victim") == live(), 20, "the culprit's resync")
        finally:
            app.request_stop()
            assert await asyncio.wait_for(task, 10) == 0

        events = read_jsonl(path).events
        check_stream_invariants(events)
        victim = {(e["type"], e["subject"]) for e in events[boot:]
                  if e["data"]["subscription"] == "victim"}
        assert victim == {(DELETED, r) for r in gone} | {(CREATED, r) for r in made}
        assert sim.state.stats.statuses["400"] >= 1
        status = await status_json(cfg)
        assert status[("victim", B)]["quarantine_reason"] is None
        assert status[("victim", B)]["bootstrapped"]
