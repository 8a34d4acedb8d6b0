"""Orphaned subscriptions keep their state; ``notifier state forget|rename`` (real processes).

A subscription briefly missing from the configuration (or being renamed) used to lose its state
at the next start: configured again, it replayed its whole snapshot and its consumers never
heard of the deletions made in between.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from notifier.simulator import Simulator
from tests.integration.main_job_support import (
    CREATED,
    DELETED,
    base_config,
    read_jsonl,
    run_cli,
    sim_config,
    start_notifier,
    status_json,
    stop_process,
    wait_for,
    write_config,
)

pytestmark = pytest.mark.timeout(90)

A = "0f8a3c52-6d1e-4b7a-9c2e-5a1b3d4e6f70"
B = "7b2e9d14-3a5c-4f86-b0d1-2c9e8f7a6b53"


def sub(name: str, container: str) -> dict[str, Any]:
    return {"name": name, "credential": "sim", "container_id": container,
            "sinks": ["archive"]}


async def run_once(cfg: Path) -> None:
    rc, _, err = await run_cli("run", "--config", str(cfg), "--once")
    assert rc == 0, err


async def serve_briefly(cfg: Path, log: Path) -> str:
    """Start the service, wait until its start-up pruning is done, stop it; its log."""
    proc = await start_notifier(cfg, log=log)
    try:
        await wait_for(lambda: "state kept for" in log.read_text() or
                       "forgot" in log.read_text(), 30, "the start-up prune")
    finally:
        assert await stop_process(proc) == 0
    return log.read_text()  # noqa: ASYNC240 - a small local file, read once


async def test_a_subscription_missing_for_one_start_keeps_its_state(tmp_path: Path) -> None:
    events_path = tmp_path / "events.jsonl"
    async with Simulator(sim_config([A, B], relationships=12)) as sim:
        both = base_config(tmp_path, sim.url, [sub("a", A), sub("b", B)])
        cfg = write_config(tmp_path, both)
        await run_once(cfg)
        boot = len(read_jsonl(events_path).events)
        # One start with "a" missing (a config rolled out without it, then fixed).
        write_config(tmp_path, base_config(tmp_path, sim.url, [sub("b", B)]))
        log = await serve_briefly(cfg, tmp_path / "service.log")
        assert "state kept for 1 stream(s)" in log
        assert ": a;" in log
        gone = sim.state.delete_random(A, 2)
        write_config(tmp_path, both)
        await run_once(cfg)
        later = [e for e in read_jsonl(events_path).events[boot:]
                 if e["data"]["subscription"] == "a"]
        # Only the deletions: no replayed snapshot, nothing lost.
        assert sorted((e["type"], e["subject"]) for e in later) == sorted(
            (DELETED, r) for r in gone)
        for e in later:
            assert len(e["data"]["relationship"]["entities"]) == 2


async def test_rename_carries_the_state_and_forget_drops_it(tmp_path: Path) -> None:
    events_path = tmp_path / "events.jsonl"
    async with Simulator(sim_config([A], relationships=10)) as sim:
        cfg = write_config(tmp_path, base_config(tmp_path, sim.url, [sub("old", A)]))
        await run_once(cfg)
        boot = len(read_jsonl(events_path).events)
        write_config(tmp_path, base_config(tmp_path, sim.url, [sub("new", A)]))
        rc, out, err = await run_cli("state", "--config", str(cfg), "rename", "old", "new")
        assert rc == 0, err
        assert "renamed subscription 'old' to 'new': 1 stream(s)" in out
        rc, _, err = await run_cli("state", "--config", str(cfg), "rename", "old", "new")
        assert rc == 1
        assert "already has state" in err
        made = sim.state.create_relationships(A, 1)
        await run_once(cfg)
        later = read_jsonl(events_path).events[boot:]
        assert [(e["type"], e["subject"], e["data"]["subscription"]) for e in later] == [
            (CREATED, made[0], "new")]
        rc, _, err = await run_cli("state", "--config", str(cfg), "forget", "new")
        assert rc == 2
        assert "--force" in err
        rc, out, err = await run_cli("state", "--config", str(cfg), "forget", "new", "--force")
        assert rc == 0, err
        assert "forgot subscription 'new': 1 stream(s)" in out
        rows = await status_json(cfg)
        assert not rows[("new", A)]["bootstrapped"]
