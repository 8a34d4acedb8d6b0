"""Cluster mode under chaos: three replicas (``notifier run`` processes with a ``cluster:``
section) against the simulator over HTTP and a private Kafka broker, while replicas are
SIGKILLed and SIGTERMed at random, the broker restarts and every credential's refresh token
rotates every few seconds.

A read_committed consumer of the events topic (as a downstream service reads it) must see every
change exactly once: no duplicate event id, nothing lost, nothing invented, created before
deleted, the replayed stream equal to the simulator's live set. No spent refresh token is ever
presented to the token endpoint (the simulator counts ``invalid_grant``s).

The short scenario (about a minute of chaos) runs with the suite; the long one is marked
``slow`` (``pytest -m slow``).

The simulator runs with its opt-in ``rotation_grace``: a SIGKILL can land between the token
endpoint rotating a refresh token and the replica committing the new one to the state topic,
and only the grace lets anyone recover from that (as in test_faults.py). The grace does not
hide a reuse: a refresh token whose successor has been used is spent, and presenting it is an
``invalid_grant`` (test_cluster_zombie.py runs without the grace).
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from notifier.simulator import Simulator
from tests.integration.fault_support import (
    assert_no_secrets,
    assert_no_traceback,
    caught_up,
    issued_secrets,
    secret_sim_config,
    seqs,
    stop_changes,
)
from tests.integration.kafka_support import KafkaBroker
from tests.integration.main_job_support import base_config, wait_for
from tests.integration.replica_support import (
    ClusterSettings,
    CommittedReader,
    Replica,
    Replicas,
    assert_exactly_once,
    create_topic,
    sim_credentials,
    spread_names,
)

pytestmark = pytest.mark.kafka

CONTAINERS = [str(uuid.UUID(int=0x5EED0000 + i)) for i in range(6)]
TOPIC = "bim360.relationships"
CREDENTIALS = spread_names(len(CONTAINERS), 6)  # one per work partition


@dataclass(frozen=True)
class Chaos:
    """One run: how long the chaos lasts and what may happen in it."""

    seconds: float
    seed: int
    pause: tuple[float, float] = (3.0, 7.0)  # between two actions
    broker_restarts: int = 1
    change_rate: float = 6.0  # simulator changes per second, all containers together


def subscriptions() -> list[dict[str, Any]]:
    """One subscription per credential and container, plus one filtered subscription."""
    subs: list[dict[str, Any]] = [
        {"name": f"project-{i}", "credential": CREDENTIALS[i], "container_id": cid,
         "sinks": ["events"]} for i, cid in enumerate(CONTAINERS)]
    subs.append({"name": "assets-0", "credential": CREDENTIALS[0], "container_id": CONTAINERS[0],
                 "domains": ["autodesk-bim360-asset"], "sinks": ["events"]})
    return subs


async def run_chaos(tmp_path: Path, broker: KafkaBroker, chaos: Chaos) -> dict[str, Any]:
    rng = random.Random(chaos.seed)
    subs = subscriptions()
    settings = ClusterSettings(bootstrap=broker.bootstrap, group="chaos",
                               state_topic="chaos.state", work_partitions=6)
    await create_topic(broker.bootstrap, TOPIC, 3)
    stats: dict[str, Any] = {"kills": 0, "terms": 0, "broker_restarts": 0, "self_exits": 0,
                             "exit_s": [], "takeover_s": []}
    config = secret_sim_config(CONTAINERS, relationships=25, page_size=10, static_token=False,
                               access_token_lifetime=3.0, rotation_grace=True)
    async with Simulator(config) as sim:
        data = base_config(tmp_path, sim.url, subs, sinks=[{
            "name": "events", "type": "kafka", "bootstrap_servers": broker.bootstrap,
            "topic": TOPIC, "request_timeout": "5s"}])
        data["credentials"] = sim_credentials(sim, CREDENTIALS)
        replicas = Replicas.create(tmp_path, settings, data, 3)
        start = seqs(sim)
        reader = CommittedReader(broker.bootstrap, TOPIC)
        await reader.start()
        try:
            await replicas.start()
            await wait_for(lambda: caught_up(sim, subs, reader.events()), 90,
                           "the bootstrap, read committed", interval=0.5)
            caught = seqs(sim)
            sim.state.set_knobs(change_rate=chaos.change_rate)
            # The broker restarts at random moments; between them, replicas are killed or
            # stopped at random (the first two actions: one of each, in random order).
            restarts_due = sorted(rng.uniform(0.2, 0.8) * chaos.seconds
                                  for _ in range(chaos.broker_restarts))
            first = rng.sample(["kill", "term"], 2)
            began = time.monotonic()
            while (elapsed := time.monotonic() - began) < chaos.seconds:
                await asyncio.sleep(rng.uniform(*chaos.pause))
                stats["self_exits"] += await supervise(replicas)
                if restarts_due and elapsed >= restarts_due[0]:
                    restarts_due.pop(0)
                    await restart_broker(broker, rng)
                    stats["broker_restarts"] += 1
                    continue
                victim = rng.choice(replicas.running())
                action = first.pop(0) if first else rng.choice(["kill", "term"])
                if action == "kill":
                    await victim.kill()
                    stats["kills"] += 1
                else:
                    exit_s, takeover_s = await hand_over(replicas, victim)
                    stats["exit_s"].append(round(exit_s, 1))
                    stats["takeover_s"].append(round(takeover_s, 1))
                    stats["terms"] += 1
                await asyncio.sleep(rng.uniform(0.5, 3.0))
                await victim.start()
            while restarts_due:  # a slow machine: the restart still happens
                restarts_due.pop(0)
                await restart_broker(broker, rng)
                stats["broker_restarts"] += 1
            await stop_changes(sim)
            stats["self_exits"] += await supervise(replicas)
            await replicas.wait_all_owned(90, "every partition owned after the chaos")
            await wait_for(lambda: caught_up(sim, subs, reader.events()), 90,
                           "catching up after the chaos", interval=0.5)
            await replicas.stop_all()
            await wait_for(reader.caught_up, 30, "the reader at the end of the topic")
            events = reader.events()
        except BaseException:
            await replicas.kill_all()
            print(replicas.output()[-20000:])
            raise
        finally:
            await reader.stop()

        assert_exactly_once(sim, subs, events, since_start=start, since_caught=caught)
        auth = sim.state.auth.counters
        assert auth.invalid_grants == 0, "a spent refresh token was presented"
        assert auth.refreshes >= 2 * len(CONTAINERS), "refresh tokens rotated during the run"
        text = replicas.output()
        assert_no_traceback(text)
        assert_no_secrets(text, issued_secrets(sim))
        stats.update(events=len(events), refreshes=auth.refreshes, replays=auth.replays)
    return stats


async def restart_broker(broker: KafkaBroker, rng: random.Random) -> None:
    """Stop the broker (SIGTERM), leave it down a moment, start it again on its data."""
    await asyncio.to_thread(broker.stop)
    await asyncio.sleep(rng.uniform(1.0, 4.0))
    await asyncio.to_thread(broker.start, keep_data=True)


async def hand_over(replicas: Replicas, victim: Replica) -> tuple[float, float]:
    """SIGTERM ``victim`` (it must exit 0); how long it took to exit, and how long after that
    the others owned (and had restored) every work partition."""
    began = time.monotonic()
    assert await victim.terminate(30) == 0, victim.output()[-3000:]
    exited = time.monotonic()
    await replicas.wait_all_owned(60, f"the partitions of {victim.name} taken over")
    return exited - began, time.monotonic() - exited


async def supervise(replicas: Replicas) -> int:
    """Restart the replicas that exited by themselves, as Kubernetes would; how many."""
    exited = [r for r in replicas.members if not r.running and r.process.proc is not None]
    for r in exited:
        await r.start()
    return len(exited)


@pytest.mark.timeout(420)
async def test_three_replicas_under_chaos_deliver_exactly_once(
        tmp_path: Path, dedicated_kafka: KafkaBroker) -> None:
    stats = await run_chaos(tmp_path, dedicated_kafka, Chaos(seconds=60, seed=14))
    print(f"chaos: {stats}")
    assert stats["kills"] >= 1
    assert stats["terms"] >= 1
    assert stats["broker_restarts"] == 1


@pytest.mark.slow
@pytest.mark.timeout(1500)
async def test_three_replicas_under_long_chaos_deliver_exactly_once(
        tmp_path: Path, dedicated_kafka: KafkaBroker) -> None:
    stats = await run_chaos(tmp_path, dedicated_kafka,
                            Chaos(seconds=600, seed=1414, pause=(2.0, 8.0), broker_restarts=3,
                                  change_rate=10.0))
    print(f"chaos: {stats}")
    assert stats["kills"] + stats["terms"] >= 20
    assert stats["broker_restarts"] == 3
