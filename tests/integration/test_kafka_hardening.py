"""The Kafka sink's hardening on a real broker: a transient create_topics error is retried, a
created topic gets min(3, brokers) replicas, and a shutdown with the broker frozen fits
``shutdown_timeout`` (a Kafka close used to take about 70 s)."""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from aiokafka.admin import AIOKafkaAdminClient

from notifier.app import App
from notifier.config import config_from_data
from notifier.config.sinks import KafkaSinkConfig
from notifier.metrics import Metrics
from notifier.simulator import Simulator
from notifier.sinks.kafka import KafkaSink
from tests.integration.kafka_support import (
    KafkaBroker,
    describe_topic,
    make_event,
    read_topic,
)
from tests.integration.main_job_support import base_config, sim_config, wait_for

pytestmark = pytest.mark.kafka

A = "2b7f0c8e-1d3a-4e5b-9c6d-7e8f9a0b1c2d"


def quick_sink(bootstrap: str, topic: str) -> KafkaSink:
    cfg = KafkaSinkConfig(name="events", bootstrap_servers=[bootstrap], topic=topic,
                          request_timeout=5)
    return KafkaSink(cfg, Metrics(), reconnect_backoff=(0.2, 0.5))


async def replication_of(bootstrap: str, topic: str) -> set[int]:
    return {len(p["replicas"]) for p in (await describe_topic(bootstrap, topic))["partitions"]}


async def test_transient_create_topics_error_is_retried(
        kafka_bootstrap: str, kafka_topic: str, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """The broker answers create_topics with a retriable error (NotController, as during a
    controller election) twice: the sink stays down meanwhile, then creates the topic and
    publishes; it is neither a startup failure nor disabled until restart."""
    real = AIOKafkaAdminClient.create_topics
    calls = 0

    async def flaky(self: AIOKafkaAdminClient, topics: list[Any], *a: Any, **kw: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls <= 2:
            return SimpleNamespace(topic_errors=[(kafka_topic, 41, "not the controller")])
        return await real(self, topics, *a, **kw)

    monkeypatch.setattr(AIOKafkaAdminClient, "create_topics", flaky)
    sink = quick_sink(kafka_bootstrap, kafka_topic)
    with caplog.at_level(logging.WARNING, logger="notifier.sinks.kafka"):
        async with sink:
            assert not sink.healthy()
            await wait_for(sink.healthy, 30, "the sink to create its topic")
            await sink.publish([make_event("t1")])
    assert calls == 3
    assert [r.key for r in await read_topic(kafka_bootstrap, kafka_topic)] == [b"t1"]
    assert any("NotControllerError" in r.getMessage() for r in caplog.records)
    # Unset replication_factor on a one-broker cluster: min(3, 1).
    assert await replication_of(kafka_bootstrap, kafka_topic) == {1}


async def test_topic_error_found_while_reconnecting_does_not_disable_the_sink(
        kafka_bootstrap: str, kafka_topic: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A non-retriable create_topics error during a reconnection (the topic was deleted, the
    ACL is missing for a while) fails publishes with that cause, but the sink keeps trying and
    recovers once the broker accepts the topic again."""
    real = AIOKafkaAdminClient.create_topics
    refuse = True

    async def gated(self: AIOKafkaAdminClient, topics: list[Any], *a: Any, **kw: Any) -> Any:
        if refuse:
            return SimpleNamespace(topic_errors=[(kafka_topic, 29, "no ACL")])
        return await real(self, topics, *a, **kw)

    monkeypatch.setattr(AIOKafkaAdminClient, "create_topics", gated)
    refuse = False
    sink = quick_sink(kafka_bootstrap, kafka_topic)
    async with sink:
        assert sink.healthy()
        admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
        await admin.start()
        try:
            await admin.delete_topics([kafka_topic])
        finally:
            await admin.close()
        refuse = True
        sink._mark_down(sink._producer)  # as after a failed publish
        sink._producer = None
        await wait_for(lambda: sink._fatal is not None, 30, "the refused topic creation")
        with pytest.raises(Exception, match="TopicAuthorizationFailedError"):
            await sink.publish([make_event("lost?")])
        refuse = False
        await wait_for(sink.healthy, 30, "the sink to recover without a restart")
        await sink.publish([make_event("after")])
    assert [r.key for r in await read_topic(kafka_bootstrap, kafka_topic)] == [b"after"]


@pytest.mark.timeout(180)
async def test_shutdown_with_a_frozen_broker_fits_shutdown_timeout(
        dedicated_kafka: KafkaBroker, tmp_path: Path) -> None:
    """A page is in flight to a frozen broker (it accepts connections, answers nothing) when the
    service is asked to stop: the whole shutdown, Kafka close included, takes shutdown_timeout,
    not the ~70 s a Kafka close used to take (10 s flush + 31 s + 30 s producer stop)."""
    subs = [{"name": "s", "credential": "sim", "container_id": A, "sinks": ["events"]}]
    sinks = [{"name": "events", "type": "kafka", "bootstrap_servers": dedicated_kafka.bootstrap,
              "topic": "frozen", "request_timeout": "30s"}]
    async with Simulator(sim_config([A], relationships=3)) as sim:
        cfg = base_config(tmp_path, sim.url, subs, sinks=sinks, shutdown_timeout="4s")
        app = App(config_from_data(cfg))
        task = asyncio.create_task(app.run())
        try:
            await wait_for(app.ready.is_set, 60, "the service to start")
            await wait_for(lambda: (app.metrics.registry.get_sample_value(
                "notifier_sink_events_published_total",
                {"sink": "events", "outcome": "ok"}) or 0) >= 3, 60, "the first events")
            dedicated_kafka.signal(signal.SIGSTOP)
            sim.state.create_relationships(A, 2)  # a page that will hang in flight
            await asyncio.sleep(3)
            t0 = time.monotonic()
            app.request_stop()
            rc = await asyncio.wait_for(task, 120)
            took = time.monotonic() - t0
        finally:
            dedicated_kafka.signal(signal.SIGCONT)
            if not task.done():
                task.cancel()
    assert rc == 0
    assert took < 4 + 3, f"shutdown took {took:.1f}s with shutdown_timeout 4s"
