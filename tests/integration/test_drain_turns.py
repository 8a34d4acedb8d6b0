"""Drains take turns: with one drain slot, a long bootstrap gives way every few pages, so a
container with a single change is not held behind it (the simulator, the real pipeline)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from notifier.app import App
from notifier.config import config_from_data
from notifier.core.planner import Planner
from notifier.simulator import Simulator
from tests.integration.main_job_support import (
    base_config,
    check_stream_invariants,
    filter_of,
    read_jsonl,
    replay,
    sim_config,
    truth_live,
    wait_for,
)

A = "0f8a3c52-6d1e-4b7a-9c2e-5a1b3d4e6f70"
B = "7b2e9d14-3a5c-4f86-b0d1-2c9e8f7a6b53"
BIG = 1200


@pytest.mark.timeout(120)
async def test_a_small_change_is_not_held_behind_a_long_drain(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    subs = [{"name": "big", "credential": "sim", "container_id": A, "sinks": ["archive"]},
            {"name": "small", "credential": "sim", "container_id": B, "sinks": ["archive"]}]
    out = tmp_path / "events.jsonl"

    def count(sub: str) -> int:
        """Events of ``sub`` so far (cheap: the app shares this event loop)."""
        raw = out.read_bytes() if out.exists() else b""
        return raw.count(b'"subscription":"%s"' % sub.encode())

    asked = [0]  # sync pages the planner was told of (they lower the check pace)
    told = Planner.sync_pages_asked

    def count_pages(self: Planner, n: int = 1) -> None:
        asked[0] += n
        told(self, n)

    monkeypatch.setattr(Planner, "sync_pages_asked", count_pages)
    # 120 pages of 10 at 20 ms each: the big bootstrap takes seconds, the small change a turn.
    async with Simulator(sim_config([A, B], relationships=0, page_size=10,
                                    latency=0.02)) as sim:
        sim.state.create_relationships(A, BIG)
        data = base_config(tmp_path, sim.url, subs,
                           poll={"sync_concurrency": 1, "drain_pages_per_turn": 5})
        app = App(config_from_data(data))
        task = asyncio.create_task(app.run())
        try:
            await wait_for(lambda: count("big") >= 200, 30, "the big drain to be under way",
                           interval=0.2)
            sim.state.create_relationships(B, 1)
            await wait_for(lambda: count("small") == 1, 30, "the small change", interval=0.2)
            assert count("big") < BIG, "the small change waited for the whole big drain"
            truth = {("big", A): truth_live(sim, A, filter_of({})),
                     ("small", B): truth_live(sim, B, filter_of({}))}
            await wait_for(lambda: count("big") >= BIG, 60, "the big drain to finish",
                           interval=0.5)
        finally:
            app.request_stop()
            assert await asyncio.wait_for(task, 30) == 0
    events = read_jsonl(out).events
    check_stream_invariants(events)
    assert replay(events) == truth
    assert count("big") == BIG  # turns resume where they stopped: nothing twice
    # Every page of the bootstrap's 60 turns is paid from the budget, and told as such.
    assert asked[0] >= BIG // 10
