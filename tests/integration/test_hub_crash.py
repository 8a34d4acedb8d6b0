"""A notifier killed (SIGKILL) in the middle of a hub discovery, restarted while discovery
fails: the stored project list is polled, nothing is lost, and the project found later starts;
``notifier status`` reports the hub subscription."""

from __future__ import annotations

import signal
from pathlib import Path

import orjson
import pytest

from tests.integration.hub_support import (
    HUB,
    SUB,
    events_of,
    for_project,
    hub_config,
    hub_simulator,
)
from tests.integration.main_job_support import (
    Filter,
    check_stream_invariants,
    replay,
    run_cli,
    start_notifier,
    stop_process,
    truth_live,
    wait_for,
    write_config,
)

pytestmark = pytest.mark.timeout(150)


async def test_crash_during_discovery(tmp_path: Path) -> None:
    log = tmp_path / "notifier.log"
    async with hub_simulator() as sim:
        sim.hubs.add_hub(HUB, "Acme")
        projects = [sim.hubs.add_project(HUB, f"Tower {n}", relationships=2) for n in "ABC"]
        sim.hubs.set_knobs(page_size=1)
        config = write_config(tmp_path, hub_config(tmp_path, sim, discover_every="2s"))
        proc = await start_notifier(config, log=log)
        try:
            await wait_for(lambda: len(events_of(tmp_path)) == 6, 40, "bootstrap of 3 projects")

            # Slow pages: a discovery now takes seconds; kill the notifier inside one.
            sim.hubs.set_knobs(latency=1.0)
            late = sim.hubs.add_project(HUB, "Tower D", relationships=3)
            asked = sim.hubs.stats.requests["projects"]
            await wait_for(lambda: sim.hubs.stats.requests["projects"] > asked + 1, 30,
                           "a discovery in flight")
            await stop_process(proc, signal.SIGKILL)
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        assert not for_project(events_of(tmp_path), late)

        # Restart while the listing fails: the stored list is polled.
        sim.hubs.set_knobs(latency=0.0, always_status=503)
        sim.state.create_relationships(projects[0][2:], 2)
        proc = await start_notifier(config, log=log)
        try:
            await wait_for(lambda: len(for_project(events_of(tmp_path), projects[0])) == 4, 40,
                           "the known project's new relationships")
            assert not for_project(events_of(tmp_path), late)
            await wait_for(lambda: "discovery of hub" in log.read_text(), 40,
                           "the failed discovery to be logged")
            sim.hubs.set_knobs(always_status=None)
            await wait_for(lambda: len(for_project(events_of(tmp_path), late)) == 3, 40,
                           "the project found once discovery works again")

            code, out, err = await run_cli("status", "--config", str(config), "--json")
            assert code == 0, err
            lines = [orjson.loads(line) for line in out.splitlines()]
            hub = next(line["hub_subscription"] for line in lines if "hub_subscription" in line)
            assert hub["subscription"] == SUB
            assert hub["watched"] == 4
            assert hub["consecutive_failures"] == 0
            assert hub["last_success_at"] is not None
            streams = {line["container_id"] for line in lines if "container_id" in line}
            assert streams == {p[2:] for p in [*projects, late]}
            code, out, _ = await run_cli("status", "--config", str(config))
            assert code == 0
            assert "HUB SUBSCRIPTION" in out
        finally:
            assert await stop_process(proc) == 0

        events = events_of(tmp_path)
        check_stream_invariants(events)
        live = replay(events)
        for p in [*projects, late]:
            assert live[(SUB, p[2:])] == truth_live(sim, p[2:], Filter()), p
        assert "HTTP 503" in log.read_text()
