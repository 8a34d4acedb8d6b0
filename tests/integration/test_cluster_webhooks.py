"""Webhook sinks in cluster mode, on a real Kafka broker with a real webhook receiver: the
outbox rows and their delivery marks live in the state topic, so when the replica delivering
them is SIGKILLed mid-delivery, the new owner of its work partitions resumes them: the receiver
gets every change at least once, a redelivery carries the same ``webhook-id`` (and body), and
nothing is lost; a dead-lettered event stays dead on its new owner (and is listed by
``notifier webhooks dlq list``, which reads the state topic)."""

from __future__ import annotations

import asyncio
import sys
import uuid
from pathlib import Path
from typing import Any

import orjson
import pytest

from notifier.cluster.partitions import partition_of
from notifier.simulator import Simulator
from tests.integration.fault_support import (
    assert_delivery,
    assert_no_traceback,
    assert_webhook_calls,
    busy_for,
    caught_up,
    secret_sim_config,
    seqs,
    stop_changes,
    truth,
    webhook_secret,
    webhook_sink,
)
from tests.integration.main_job_support import base_config, wait_for
from tests.integration.replica_support import ClusterSettings, Replica, Replicas, spread_names
from tests.integration.webhook_receiver import WebhookReceiver

pytestmark = pytest.mark.kafka

CONTAINERS = [str(uuid.UUID(int=0x0B0C0000 + i)) for i in range(4)]
PARTITIONS = 6
CREDENTIALS = spread_names(len(CONTAINERS), PARTITIONS)


def subscriptions() -> list[dict[str, Any]]:
    return [{"name": f"project-{i}", "credential": CREDENTIALS[i], "container_id": cid,
             "sinks": ["hooks"]} for i, cid in enumerate(CONTAINERS)]


def cluster_config(tmp_path: Path, sim: Simulator, hook: dict[str, Any]) -> dict[str, Any]:
    data = base_config(tmp_path, sim.url, subscriptions(), sinks=[hook],
                       poll={"interval": "0.3s"})
    data["credentials"] = [{"name": c, "access_token": sim.config.access_token,
                            "requests_per_minute": 6000} for c in CREDENTIALS]
    return data


def settings(bootstrap: str) -> ClusterSettings:
    group = f"notifier-hooks-{uuid.uuid4().hex[:10]}"
    return ClusterSettings(bootstrap=bootstrap, group=group, state_topic=f"{group}.state",
                           work_partitions=PARTITIONS)


def credentials_running(replica: Replica) -> int:
    """Credentials the replica's log says it started polling (over every partition start)."""
    text = replica.output()
    return sum(int(line.split("running: ")[1].split()[0])
               for line in text.splitlines() if "running: " in line)


def delivering(receiver: WebhookReceiver, replica: Replica) -> bool:
    """Whether a call the receiver is answering now carries an event of a stream whose work
    partition ``replica`` runs (by its log)."""
    running = {int(line.split("work partition ")[1].split()[0])
               for line in replica.output().splitlines() if " running: " in line}
    partition = {s["name"]: partition_of(s["credential"], PARTITIONS) for s in subscriptions()}
    return any(partition[orjson.loads(b)["data"]["subscription"]] in running
               for b in list(receiver.in_flight))


async def tracks(replicas: Replicas, streams: int, *only: Replica) -> bool:
    """Whether each replica (or each of ``only``) tracks some streams, ``streams`` in all, by
    its notifier_scheduler_streams_tracked (which counts every partition it runs)."""
    values = [(await r.metrics()).get("notifier_scheduler_streams_tracked", 0.0)
              for r in (only or replicas.members)]
    return all(values) and sum(values) == streams


@pytest.mark.timeout(180)
async def test_sigkill_mid_delivery_loses_nothing_and_redelivers_under_the_same_id(
        tmp_path: Path, kafka_bootstrap: str) -> None:
    secret = webhook_secret()
    subs = subscriptions()
    async with (
        Simulator(secret_sim_config(CONTAINERS, relationships=40, page_size=10)) as sim,
        WebhookReceiver(secret, slow_seconds=0.3) as receiver,
    ):
        receiver.mode = "slow"  # every call takes a while: calls are in flight at the kill
        hook = {**webhook_sink("hooks", receiver.url, secret), "max_concurrency": 2}
        replicas = Replicas.create(tmp_path, settings(kafka_bootstrap),
                                   cluster_config(tmp_path, sim, hook), 2)
        one, two = replicas.members
        start = seqs(sim)
        try:
            await replicas.start()
            await wait_for(lambda: credentials_running(one) > 0
                           and credentials_running(two) > 0, 60,
                           "both replicas polling credentials")
            await wait_for(lambda: tracks(replicas, len(subs)), 30,
                           "the replicas' streams_tracked gauges summing to every stream")
            await receiver.wait_for(lambda: len(receiver.calls) >= 10, 60)
            caught = seqs(sim)  # changes from here on must all arrive
            sim.state.set_knobs(change_rate=8.0)
            await busy_for(sim, 10, 0.5)
            # Mid-delivery: a call of one of its streams is being answered at the SIGKILL.
            await receiver.wait_for(lambda: delivering(receiver, one), 30)
            calls_at_kill = len(receiver.calls)
            await one.kill()
            await busy_for(sim, 10, 1.0)
            await stop_changes(sim)
            receiver.mode = "ok"
            await receiver.wait_for(lambda: caught_up(sim, subs, receiver.events), 90)
            await wait_for(lambda: "work partitions assigned" in two.output().split(
                "work partitions revoked")[-1], 30, "the survivor taking the partitions over")
            await wait_for(lambda: tracks(replicas, len(subs), two), 30,
                           "the survivor's streams_tracked counting every stream")
            await replicas.stop_all()
        except BaseException:
            print(replicas.output(), file=sys.stderr)
            await replicas.kill_all()
            raise
    assert_delivery(sim, subs, receiver.events, since_start=start, since_caught=caught,
                    what="webhook")
    redelivered = assert_webhook_calls(receiver)  # same webhook-id and body every time
    assert redelivered > 0, "the calls in flight at the SIGKILL are delivered again"
    assert calls_at_kill < len(receiver.calls)
    assert "restored" in two.output()
    for r in replicas.members:
        assert_no_traceback(r.output())
    print(f"{len(receiver.events)} events received, {redelivered} redelivered, "
          f"{len(receiver.calls)} calls")


@pytest.mark.timeout(150)
async def test_a_dead_letter_stays_dead_on_the_new_owner(tmp_path: Path,
                                                         kafka_bootstrap: str) -> None:
    secret = webhook_secret()
    subs = subscriptions()
    async with (
        Simulator(secret_sim_config(CONTAINERS, relationships=3)) as sim,
        WebhookReceiver(secret) as receiver,
    ):
        receiver.mode = "fail"  # 500 for everything: each event is dead after 3 attempts
        hook = {**webhook_sink("hooks", receiver.url, secret),
                "retry_schedule": ["100ms", "100ms"],
                "circuit_breaker": {"failure_threshold": 1000, "reset_after": "100ms"}}
        data = cluster_config(tmp_path, sim, hook)
        cfg = settings(kafka_bootstrap)
        replicas = Replicas.create(tmp_path, cfg, data, 2)
        one, two = replicas.members
        want = sum(len(ids) for ids in truth(sim, subs).values())
        try:
            await one.start()

            async def all_dead_on_one() -> bool:
                m = await one.metrics()
                return m.get('notifier_outbox_dead_lettered_total{sink="hooks"}', 0.0) == want

            await wait_for(all_dead_on_one, 60, f"all {want} events dead-lettered", interval=0.5)
            await one.kill()
            receiver.mode = "ok"  # a dead letter must not be retried by its new owner
            calls = len(receiver.calls)
            await two.start()
            await replicas.wait_all_owned(60, "the second replica owning every partition")

            async def dead_on_two() -> bool:
                m = await two.metrics()
                return m.get('notifier_outbox_dead_events{sink="hooks"}', 0.0) == want

            # The outbox gauges are refreshed every 15 s.
            await wait_for(dead_on_two, 40, f"the new owner counting the {want} dead letters",
                           interval=0.5)
            await asyncio.sleep(2.0)  # time for a wrong delivery to happen
            assert len(receiver.calls) == calls, "a dead letter was delivered by its new owner"
            listed = await _dlq_list(two.config)
            await replicas.stop_all()
        except BaseException:
            print(replicas.output(), file=sys.stderr)
            await replicas.kill_all()
            raise
    rows = [orjson.loads(line) for line in listed.splitlines() if line.strip()]
    assert len(rows) == want
    assert all((r["reason"] or "").startswith("gave up after 3 attempts") for r in rows), rows[:2]
    assert {r["attempts"] for r in rows} == {2}, "the attempts travel with the row"
    for r in replicas.members:
        assert_no_traceback(r.output())


async def _dlq_list(config: Path) -> str:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "notifier", "webhooks", "--config", str(config), "dlq", "list",
        "--json", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    return out.decode()
