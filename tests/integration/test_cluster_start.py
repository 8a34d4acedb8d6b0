"""A replica started while Kafka is unreachable keeps trying (a warning per attempt, /readyz
503) and joins once a broker listens there, instead of exiting."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import pytest
import yaml

from notifier.simulator import Simulator
from tests.integration.cluster_support import CONTAINERS, Cluster
from tests.integration.fault_support import assert_no_traceback, caught_up, secret_sim_config
from tests.integration.kafka_support import KafkaBroker, free_port, require_script
from tests.integration.main_job_support import wait_for, write_config

pytestmark = pytest.mark.kafka


@pytest.mark.slow
@pytest.mark.timeout(240)
async def test_a_replica_waits_for_kafka_then_joins(tmp_path: Path) -> None:
    require_script("cannot start a dedicated Kafka broker")
    broker = KafkaBroker.on_port(free_port())  # nothing listens there yet
    cluster = Cluster(broker.bootstrap, partitions=2)
    subs = cluster.subscriptions()
    listen = f"127.0.0.1:{free_port()}"
    try:
        async with Simulator(secret_sim_config(list(CONTAINERS), relationships=5)) as sim:
            data = yaml.safe_load(cluster.config(sim, tmp_path / "one").read_text())
            data["metrics"] = {"enabled": True, "listen": listen}
            replica = cluster.replica_for(write_config(tmp_path / "one", data), tmp_path / "one")

            async def readyz() -> int:
                async with aiohttp.ClientSession() as session, \
                        session.get(f"http://{listen}/readyz") as resp:
                    return resp.status

            async with replica:
                await wait_for(lambda: "cannot reach kafka at " in replica.output()
                               and "(attempt 2); retrying in 2s" in replica.output(), 60,
                               "two attempts to reach Kafka", interval=0.2)
                assert replica.running, "it keeps trying instead of exiting"
                assert "cannot start" not in replica.output()
                assert await readyz() == 503, "not ready before it has joined"

                await asyncio.to_thread(broker.start)

                async def on_topic() -> bool:
                    return caught_up(sim, subs, await cluster.events())

                await wait_for(on_topic, 120, "the bootstrap on the topic", interval=1.0)

                async def ready() -> bool:
                    return await readyz() == 200

                await wait_for(ready, 30, "/readyz 200 once joined", interval=0.5)
                assert await replica.stop(within=30) == 0
            assert_no_traceback(replica.output())
    finally:
        broker.stop()  # a no-op if it never started
        broker.remove_data()
