"""Cluster mode across a broker restart (a private broker): two replicas, the broker stops
while changes keep coming and comes back on its data; the replicas recover (aborting what was
in flight, restoring what was touched) and a read_committed consumer sees every change exactly
once."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from notifier.simulator import Simulator
from tests.integration.cluster_support import CONTAINERS, Cluster
from tests.integration.fault_support import (
    assert_delivery,
    busy_for,
    caught_up,
    secret_sim_config,
    seqs,
    stop_changes,
)
from tests.integration.kafka_support import KafkaBroker
from tests.integration.main_job_support import duplicates, wait_for

pytestmark = pytest.mark.kafka


@pytest.mark.slow
@pytest.mark.timeout(240)
async def test_a_broker_restart_loses_and_repeats_nothing(tmp_path: Path,
                                                          dedicated_kafka: KafkaBroker) -> None:
    broker = dedicated_kafka
    cluster = Cluster(broker.bootstrap, partitions=4)
    subs = cluster.subscriptions()
    async with Simulator(secret_sim_config(list(CONTAINERS), relationships=20)) as sim:
        one = cluster.replica(sim, tmp_path / "one", request_timeout="5s")
        two = cluster.replica(sim, tmp_path / "two", request_timeout="5s")

        async def on_topic() -> bool:
            return caught_up(sim, subs, await cluster.events())

        start = seqs(sim)
        async with one, two:
            await wait_for(on_topic, 90, "the bootstrap on the topic", interval=1.0)
            caught = seqs(sim)
            sim.state.set_knobs(change_rate=10.0)
            await busy_for(sim, 10, 1.0)
            await asyncio.to_thread(broker.stop)
            # Changes go on; the replicas cannot commit (nor know the group), so they give
            # their partitions up until the broker is back.
            await asyncio.sleep(5.0)
            await asyncio.to_thread(broker.start, keep_data=True)
            await busy_for(sim, 10, 2.0, within=90)
            await stop_changes(sim)
            await wait_for(on_topic, 120, "catching up after the restart", interval=1.0)
            assert await one.stop(within=30) == 0
            assert await two.stop(within=30) == 0

    events = await cluster.events()
    assert_delivery(sim, subs, events, since_start=start, since_caught=caught, what="broker")
    assert duplicates(events) == 0, "read_committed sees every change exactly once"
    assert "Traceback" not in one.output() + two.output()
