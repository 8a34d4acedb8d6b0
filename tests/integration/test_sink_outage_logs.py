"""A sink outage is reported once per sink per minute, not once per stream per check."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from notifier.app import App
from notifier.config import config_from_data
from notifier.simulator import Simulator
from notifier.sinks.memory import MemorySink
from tests.integration.main_job_support import base_config, sim_config, wait_for

CONTAINERS = [
    "0f8a3c52-6d1e-4b7a-9c2e-5a1b3d4e6f70",
    "7b2e9d14-3a5c-4f86-b0d1-2c9e8f7a6b53",
    "c4d5e6f7-8091-4a2b-8c3d-4e5f60718293",
]


@pytest.mark.timeout(30)
async def test_failing_sink_logs_once_and_nothing_is_checkpointed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    subs = [{"name": f"s{i}", "credential": "sim", "container_id": c, "sinks": ["archive"]}
            for i, c in enumerate(CONTAINERS)]
    sink = MemorySink("archive")
    sink.fail = True
    async with Simulator(sim_config(CONTAINERS, relationships=3)) as sim:
        app = App(config_from_data(base_config(tmp_path, sim.url, subs)),
                  sink_overrides={"archive": sink})
        with caplog.at_level(logging.WARNING, logger="notifier.scheduler"):
            task = asyncio.create_task(app.run())
            await asyncio.sleep(2.5)  # about a dozen checks of each of the three streams
            failing = [r for r in caplog.records if "did not accept events" in r.getMessage()]
            assert len(failing) == 1
            assert getattr(failing[0], "sink", None) == "archive"
            assert sink.events == []
            # Nothing was checkpointed: no stream has a token yet.
            assert all(st.sync_token is None for st in await app.store.list_streams())

            sink.fail = False  # the sink comes back: everything arrives
            await wait_for(lambda: len(sink.events) >= 9, 10, "the pages to be delivered")
            app.request_stop()
            assert await asyncio.wait_for(task, 10) == 0
        assert sorted(e.subject for e in sink.events) == sorted(
            r for c in CONTAINERS for r in sim.state.ground_truth(c)["live"])
