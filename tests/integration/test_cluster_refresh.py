"""Cluster mode with rotating refresh tokens: every refresh's new refresh token is committed to
the state topic before its access token is used, so when the owner of the credential is
SIGKILLed the replica that takes over refreshes with the newest token it could know of.

A SIGKILL that lands after the token endpoint answered and before the rotated token was
committed loses that token, in cluster mode as with a single process (tests/integration/
test_faults.py): the next refresh then presents the one just spent, which the service's
rotation grace accepts once. So at most one such reuse per kill, and never an invalid_grant."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

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
from tests.integration.main_job_support import duplicates, wait_for, write_config

pytestmark = pytest.mark.kafka


def owns_the_credential(text: str) -> bool:
    return "running: 1 credential(s)" in text


@pytest.mark.slow
@pytest.mark.timeout(150)
async def test_the_new_owner_refreshes_with_the_rotated_token(tmp_path: Path,
                                                              kafka_bootstrap: str) -> None:
    cluster = Cluster(kafka_bootstrap, partitions=2)
    containers = list(CONTAINERS[:2])
    subs = [{"name": "both", "credential": "sim", "container_ids": containers,
             "sinks": ["events"]}]
    async with Simulator(secret_sim_config(containers, relationships=20, static_token=False,
                                           access_token_lifetime=2.0,
                                           rotation_grace=True)) as sim:
        replicas = []
        for name in ("one", "two"):
            cfg = cluster.config(sim, tmp_path / name)
            data = yaml.safe_load(cfg.read_text())
            data["subscriptions"] = subs
            data["credentials"] = [{
                "name": "sim", "client_id": sim.config.client_id,
                "client_secret": sim.config.client_secret,
                "refresh_token": sim.config.refresh_token, "requests_per_minute": 6000}]
            write_config(tmp_path / name, data)
            replicas.append(cluster.replica_for(cfg, tmp_path / name))
        one, two = replicas

        async def on_topic() -> bool:
            return caught_up(sim, subs, await cluster.events())

        start = seqs(sim)
        async with one, two:
            await wait_for(on_topic, 60, "the bootstrap on the topic", interval=0.5)
            await wait_for(lambda: "running: " in one.output() and "running: " in two.output(),
                           30, "both replicas in the group")
            owner, other = (one, two) if owns_the_credential(one.output()) else (two, one)
            assert owns_the_credential(owner.output())
            caught = seqs(sim)
            sim.state.set_knobs(change_rate=10.0)
            refreshes = sim.state.auth.counters.refreshes
            await wait_for(lambda: sim.state.auth.counters.refreshes >= refreshes + 3, 20,
                           "a few rotations by the owner")
            before = other.output().count("running: 1 credential(s)")
            await owner.kill()
            await wait_for(lambda: other.output().count("running: 1 credential(s)") > before,
                           40, "the credential moving to the other replica")
            taken = sim.state.auth.counters.refreshes
            await wait_for(lambda: sim.state.auth.counters.refreshes >= taken + 3, 30,
                           "rotations by the new owner")
            await busy_for(sim, 10, 0.5)
            await stop_changes(sim)
            await wait_for(on_topic, 40, "the new owner catching up", interval=0.5)
            assert await other.stop() == 0

    counters = sim.state.auth.counters
    assert counters.invalid_grants == 0, "the new owner never lost the credential"
    assert counters.replays <= 1, "a spent token is presented at most once, after the kill"
    assert "invalid_grant" not in other.output()
    events = await cluster.events()
    assert_delivery(sim, subs, events, since_start=start, since_caught=caught, what="refresh")
    assert duplicates(events) == 0
