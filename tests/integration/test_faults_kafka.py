"""Fault scenario on a real Apache Kafka broker: the broker stops mid-run (the notifier is killed
and restarted while it is away) and comes back on its data; the topic, read with aiokafka at
the end, holds every change, nothing else, duplicates only with the same id.

The broker is a private one on its own port (``dedicated_kafka``), so the session broker the
other Kafka tests use is never disturbed.
"""

from __future__ import annotations

import asyncio
import random
from pathlib import Path
from typing import Any

import pytest

from notifier.simulator import Simulator
from tests.integration.fault_support import (
    ASSET,
    NotifierProcess,
    assert_delivery,
    assert_no_secrets,
    assert_no_traceback,
    busy_for,
    caught_up,
    event_from_record,
    issued_secrets,
    quarantine_lines,
    secret_sim_config,
    seqs,
    stop_changes,
)
from tests.integration.kafka_support import KafkaBroker, read_topic, topic_names
from tests.integration.main_job_support import base_config, duplicates, wait_for, write_config

pytestmark = pytest.mark.kafka

A = "0f8a3c52-6d1e-4b7a-9c2e-5a1b3d4e6f70"
B = "7b2e9d14-3a5c-4f86-b0d1-2c9e8f7a6b53"
TOPIC = "bim360.relationships"


async def topic_events(bootstrap: str) -> list[dict[str, Any]]:
    """Every event on the topic now ([] while the topic does not exist yet)."""
    if TOPIC not in await topic_names(bootstrap):
        return []
    return [event_from_record(r) for r in await read_topic(bootstrap, TOPIC, within=20)]


@pytest.mark.slow
@pytest.mark.timeout(150)
async def test_broker_restart_mid_run_loses_nothing(tmp_path: Path,
                                                    dedicated_kafka: KafkaBroker) -> None:
    broker = dedicated_kafka
    rng = random.Random(4)
    subs: list[dict[str, Any]] = [
        {"name": "all-a", "credential": "sim", "container_id": A, "sinks": ["events"]},
        {"name": "assets-ab", "credential": "sim", "container_ids": [A, B], "domains": [ASSET],
         "sinks": ["events"]},
    ]
    kafka = {"name": "events", "type": "kafka", "bootstrap_servers": broker.bootstrap,
             "topic": TOPIC, "request_timeout": "3s"}
    async with Simulator(secret_sim_config([A, B], relationships=30, page_size=5)) as sim:
        data = base_config(tmp_path, sim.url, subs, sinks=[kafka])
        data["credentials"][0]["access_token"] = sim.config.access_token
        cfg = write_config(tmp_path, data)

        async def on_topic() -> bool:
            return caught_up(sim, subs, await topic_events(broker.bootstrap))

        start = seqs(sim)
        async with NotifierProcess(cfg, tmp_path) as notifier:
            await wait_for(on_topic, 30, "the bootstrap on the topic", interval=0.5)
            caught = seqs(sim)
            sim.state.set_knobs(change_rate=15.0)
            await busy_for(sim, 6, rng.uniform(0.5, 1.5))

            await asyncio.to_thread(broker.stop)
            await busy_for(sim, 6, 1.5)  # polling goes on; pages are not acknowledged
            await notifier.restart()  # and a restart finds no broker either
            await busy_for(sim, 6, 1.0)
            await asyncio.to_thread(broker.start, keep_data=True)  # changes keep coming
            await busy_for(sim, 6, rng.uniform(0.5, 1.5))
            await stop_changes(sim)
            await wait_for(on_topic, 60, "catching up on the topic", interval=0.5)
            assert await notifier.stop() == 0

        events = await topic_events(broker.bootstrap)
        assert_delivery(sim, subs, events, since_start=start, since_caught=caught, what="kafka")
        text = notifier.output()
        assert_no_traceback(text)
        assert_no_secrets(text, issued_secrets(sim))
        assert "did not accept events" in text, "the outage was noticed"
        assert quarantine_lines(text) == [], "a sink outage never quarantines a stream"
        print(f"{len(events)} records ({duplicates(events)} repeated)")
