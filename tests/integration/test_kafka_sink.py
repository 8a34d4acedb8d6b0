"""The Kafka sink against a real Apache Kafka broker: record format, ordering, topic handling,
and outages (broker unreachable at startup, stopped and restarted mid-run)."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections import defaultdict
from typing import Any

import orjson
import pytest
from prometheus_client import CollectorRegistry

from notifier.config import KafkaSinkConfig
from notifier.core.events import ChangeKind, Event
from notifier.errors import SinkConfigError, SinkError
from notifier.metrics import Metrics
from notifier.publisher import Publisher
from notifier.sinks.base import DirectSink
from notifier.sinks.kafka import KafkaSink
from notifier.sinks.kafka_records import partition_for
from tests.integration.kafka_support import (
    CONTAINER,
    KafkaBroker,
    free_port,
    kafka_required,
    kcat_available,
    kcat_read,
    make_event,
    read_topic,
    require_script,
    topic_names,
)

pytestmark = pytest.mark.kafka

OTHER_CONTAINER = "0e6a5b8c-2f0d-4c7e-8a0b-7b3a8f1d2c44"


def new_metrics() -> Metrics:
    return Metrics(CollectorRegistry(), runtime=False)


def kafka_sink(name: str, *, metrics: Metrics | None = None,
               reconnect_backoff: tuple[float, float] = (0.5, 10.0), **fields: Any) -> KafkaSink:
    """A sink built as the notifier builds it: from its validated config model."""
    return KafkaSink(KafkaSinkConfig(name=name, **fields), metrics or new_metrics(),
                     reconnect_backoff=reconnect_backoff)


def sample(metrics: Metrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


def mixed_events(n: int) -> list[Event]:
    """Created and deleted events, snapshot or not, over two containers."""
    return [
        make_event(f"rel-{i:04d}", ChangeKind.DELETED if i % 3 == 0 else ChangeKind.CREATED,
                   snapshot=i % 2 == 0, container=CONTAINER if i % 4 else OTHER_CONTAINER)
        for i in range(n)
    ]


def expected_binary_headers(ev: Event, key: str) -> list[tuple[str, str]]:
    return [
        ("ce_specversion", "1.0"),
        ("ce_id", ev.id),
        ("ce_source", f"/bim360/relationship/v2/containers/{ev.container_id}"),
        ("ce_type", f"com.autodesk.bim360.relationship.{ev.kind.value}"),
        ("ce_subject", ev.subject),
        ("ce_time", ev.time),
        ("ce_snapshot", "true" if ev.snapshot else "false"),
        ("ce_partitionkey", key),
        ("content-type", "application/json"),
    ]


def kcat_headers(envelope: dict[str, Any]) -> list[tuple[str, str]]:
    flat = envelope.get("headers") or []
    return list(zip(flat[0::2], flat[1::2], strict=True))


def require_kcat() -> None:
    if not kcat_available():
        if kafka_required():
            pytest.fail("kcat is missing (apt-get install -y kcat, or scripts/install-tools.sh)")
        pytest.skip("kcat is missing (apt-get install -y kcat)")


async def test_binary_records_carry_the_documented_headers_and_shape(kafka_bootstrap, kafka_topic):
    events = mixed_events(60)
    metrics = new_metrics()
    async with kafka_sink("events", bootstrap_servers=kafka_bootstrap, topic=kafka_topic,
                         metrics=metrics) as sink:
        assert isinstance(sink, DirectSink)
        assert sink.healthy()
        # Through the pipeline's publisher, which counts and times every sink alike.
        publisher = Publisher(metrics)
        assert await publisher.publish(events[:25], direct=[sink]) == []
        assert await publisher.publish(events[25:], direct=[sink]) == []
    assert sample(metrics, "notifier_sink_events_published_total",
                  sink="events", outcome="ok") == 60
    assert sample(metrics, "notifier_sink_publish_duration_seconds_count", sink="events") == 2

    by_id = {ev.id: ev for ev in events}
    records = await read_topic(kafka_bootstrap, kafka_topic)
    assert len(records) == len(events)
    assert {r.partition for r in records} == {0, 1, 2}  # created with 3 partitions by default
    for rec in records:
        headers = [(k, v.decode()) for k, v in rec.headers]
        ev = by_id[dict(headers)["ce_id"]]
        assert rec.key == ev.subject.encode()
        assert headers == expected_binary_headers(ev, ev.subject)
        assert orjson.loads(rec.value) == ev.data
        assert rec.partition == partition_for(rec.key, [0, 1, 2])
    # Within a partition, records are in publish order.
    for part in (0, 1, 2):
        ids = [dict(r.headers)["ce_id"].decode() for r in records if r.partition == part]
        assert ids == [ev.id for ev in events if ev.id in set(ids)]

    # The same records through a client we did not write.
    require_kcat()
    envelopes = kcat_read(kafka_bootstrap, kafka_topic)
    assert len(envelopes) == len(events)
    for env in envelopes:
        headers = kcat_headers(env)
        ev = by_id[dict(headers)["ce_id"]]
        assert env["key"] == ev.subject
        assert headers == expected_binary_headers(ev, ev.subject)
        assert orjson.loads(env["payload"]) == ev.data
        assert env["partition"] == partition_for(ev.subject.encode(), [0, 1, 2])


async def test_structured_mode_keyed_by_container(kafka_bootstrap, kafka_topic):
    events = mixed_events(40)
    async with kafka_sink("events", bootstrap_servers=kafka_bootstrap, topic=kafka_topic,
                         content_mode="structured", key="container", partitions=4) as sink:
        await sink.publish(events)

    by_id = {ev.id: ev for ev in events}
    records = await read_topic(kafka_bootstrap, kafka_topic)
    assert len(records) == len(events)
    partitions_by_container: dict[bytes, set[int]] = defaultdict(set)
    for rec in records:
        assert rec.headers == (("content-type", b"application/cloudevents+json"),)
        doc = orjson.loads(rec.value)
        ev = by_id[doc["id"]]
        assert rec.key == ev.container_id.encode()
        assert doc == {**ev.structured(), "partitionkey": ev.container_id}
        partitions_by_container[rec.key].add(rec.partition)
    assert all(len(p) == 1 for p in partitions_by_container.values())
    for key, parts in partitions_by_container.items():
        assert parts == {partition_for(key, [0, 1, 2, 3])}
    # Per container, the stream is exactly the publish order.
    for container in (CONTAINER, OTHER_CONTAINER):
        got = [orjson.loads(r.value)["id"] for r in records if r.key == container.encode()]
        assert got == [ev.id for ev in events if ev.container_id == container]

    require_kcat()
    envelopes = kcat_read(kafka_bootstrap, kafka_topic)
    assert len(envelopes) == len(events)
    for env in envelopes:
        assert kcat_headers(env) == [("content-type", "application/cloudevents+json")]
        doc = orjson.loads(env["payload"])
        assert env["key"] == doc["partitionkey"] == by_id[doc["id"]].container_id
        assert doc["specversion"] == "1.0"
        assert doc["type"] == by_id[doc["id"]].type


async def test_order_per_key_across_many_events_and_concurrent_publishers(
        kafka_bootstrap, kafka_topic):
    # Two subscriptions publish concurrently; each relationship is created on one page and
    # deleted on the next, or both on the same page.
    def pages(prefix: str) -> list[list[Event]]:
        out: list[list[Event]] = [[] for _ in range(21)]
        for i in range(2000):
            rel = f"{prefix}-{i:05d}"
            page = i % 20
            out[page].append(make_event(rel, ChangeKind.CREATED, subscription=prefix))
            later = page if i % 5 == 0 else page + 1
            out[later].append(make_event(rel, ChangeKind.DELETED, subscription=prefix))
        return out

    async def run(sink: KafkaSink, pages: list[list[Event]]) -> None:
        for page in pages:
            await sink.publish(page)

    async with kafka_sink("events", bootstrap_servers=kafka_bootstrap, topic=kafka_topic,
                         max_batch_size=16384) as sink:  # small batches: many per partition
        await asyncio.gather(run(sink, pages("a")), run(sink, pages("b")))

    records = await read_topic(kafka_bootstrap, kafka_topic)
    assert len(records) == 2 * 2 * 2000
    seen: dict[bytes, list[str]] = defaultdict(list)
    for rec in records:
        seen[rec.key].append(dict(rec.headers)["ce_type"].decode().rsplit(".", 1)[1])
    assert len(seen) == 4000
    assert all(kinds == ["created", "deleted"] for kinds in seen.values())


async def test_missing_topic_without_create_topic_is_a_config_error(kafka_bootstrap, kafka_topic):
    sink = kafka_sink("events", bootstrap_servers=kafka_bootstrap, topic=kafka_topic,
                     create_topic=False)
    with pytest.raises(SinkConfigError) as info:
        async with sink:
            pytest.fail("entered a sink whose topic does not exist")
    message = str(info.value)
    assert kafka_topic in message
    assert kafka_bootstrap in message
    assert "create_topic" in message
    assert info.value.sink == "events"
    assert not sink.healthy()
    assert kafka_topic not in await topic_names(kafka_bootstrap)

    # A topic the broker refuses to create is a config error too, with the broker's reason.
    with pytest.raises(SinkConfigError, match="InvalidReplicationFactor"):
        async with kafka_sink("events", bootstrap_servers=kafka_bootstrap, topic=kafka_topic,
                             replication_factor=3):
            pass
    assert kafka_topic not in await topic_names(kafka_bootstrap)

    # Once the topic exists (here: made by a sink allowed to), create_topic=False uses it, and
    # an existing topic keeps its own partition count.
    async with kafka_sink("maker", bootstrap_servers=kafka_bootstrap, topic=kafka_topic,
                         partitions=1):
        pass
    async with kafka_sink("events", bootstrap_servers=kafka_bootstrap, topic=kafka_topic,
                         create_topic=False, partitions=5) as sink:
        await sink.publish(mixed_events(10))
    records = await read_topic(kafka_bootstrap, kafka_topic)
    assert len(records) == 10
    assert {r.partition for r in records} == {0}


async def wait_until(predicate: Any, within: float, what: str) -> float:
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > within:
            pytest.fail(f"timed out after {within}s waiting for {what}")
        await asyncio.sleep(0.1)
    return time.monotonic() - start


async def test_unreachable_at_startup_then_broker_appears():
    require_script("cannot start a Kafka broker")
    port = free_port()
    broker = KafkaBroker.on_port(port)
    metrics = new_metrics()
    sink = kafka_sink("events", bootstrap_servers=broker.bootstrap, topic="late-topic",
                     request_timeout=3, reconnect_backoff=(0.2, 1.0), metrics=metrics)
    async with sink:  # no broker: does not raise, retries in the background
        assert not sink.healthy()
        assert sample(metrics, "notifier_sink_up", sink="events") == 0
        started = time.monotonic()
        with pytest.raises(SinkError, match="unavailable"):
            await sink.publish([make_event("r1")])
        assert time.monotonic() - started < 1

        await asyncio.to_thread(broker.start)
        try:
            await wait_until(sink.healthy, 30, "the sink to connect")
            assert sample(metrics, "notifier_sink_up", sink="events") == 1
            await sink.publish([make_event("r1"), make_event("r2")])
            records = await read_topic(broker.bootstrap, "late-topic")
            assert sorted(r.key for r in records) == [b"r1", b"r2"]
        finally:
            await asyncio.to_thread(broker.stop)
            broker.remove_data()


async def break_broker(broker: KafkaBroker, fault: str) -> None:
    if fault == "stop":  # clean shutdown (SIGTERM): leadership moves away, sockets close
        await asyncio.to_thread(broker.stop)
    elif fault == "kill":  # crash: connections reset, nothing flushed on the way out
        await asyncio.to_thread(broker.kill)
    else:  # freeze: connections stay open and new ones are accepted, but nothing is answered
        broker.signal(signal.SIGSTOP)


async def repair_broker(broker: KafkaBroker, fault: str) -> None:
    if fault == "freeze":
        broker.signal(signal.SIGCONT)
    else:
        await asyncio.to_thread(broker.start, keep_data=True)


def outage_pages() -> list[list[Event]]:
    """40 pages of 50 created relationships, each page deleting the previous page's."""
    pages: list[list[Event]] = []
    for p in range(40):
        page = [make_event(f"rel-{p:02d}-{i:02d}") for i in range(50)]
        if p:  # delete the previous page's relationships
            page += [make_event(ev.subject, ChangeKind.DELETED) for ev in pages[p - 1][:50]]
        pages.append(page)
    return pages


# A broker of its own per fault (about 20 s to start): the kill stays in `make test`, stop
# (a clean shutdown) and freeze (SIGSTOP) run with the slow scenarios.
@pytest.mark.parametrize("fault", [pytest.param("stop", marks=pytest.mark.slow), "kill",
                                   pytest.param("freeze", marks=pytest.mark.slow)])
async def test_broker_outage_mid_run_loses_nothing(dedicated_kafka, fault):
    """A pipeline-like publisher retries each page until it is acknowledged while the broker
    is stopped, killed or frozen, and then restarted on its data (or thawed). Publishing fails
    in bounded time and the sink reports itself down; afterwards it resumes by itself and the
    topic holds every acknowledged event, in order per relationship."""
    broker: KafkaBroker = dedicated_kafka
    topic = "outage"
    metrics = new_metrics()
    delivery_timeout = 3.0
    pages = outage_pages()
    acked: list[str] = []
    failures: list[float] = []  # duration of each failed publish
    unhealthy_seen = asyncio.Event()

    publisher = Publisher(metrics)

    async def pipeline(sink: KafkaSink) -> None:
        for page in pages:
            while True:
                started = time.monotonic()
                try:
                    await publisher.publish(page, direct=[sink])
                except SinkError:
                    failures.append(time.monotonic() - started)
                    if not sink.healthy():
                        unhealthy_seen.set()
                    await asyncio.sleep(0.2)
                else:
                    acked.extend(ev.id for ev in page)
                    break
            await asyncio.sleep(0.05)

    t0 = time.monotonic()
    try:
        async with kafka_sink("events", bootstrap_servers=broker.bootstrap, topic=topic,
                             request_timeout=delivery_timeout, reconnect_backoff=(0.2, 1.0),
                             metrics=metrics) as sink:
            task = asyncio.create_task(pipeline(sink))
            await wait_until(lambda: len(acked) >= 10 * 50, 30, "10 pages acknowledged")
            broken_at = time.monotonic()
            await break_broker(broker, fault)
            async with asyncio.timeout(delivery_timeout + 10):
                await unhealthy_seen.wait()
            detected = time.monotonic() - broken_at
            assert not sink.healthy()
            assert sample(metrics, "notifier_sink_up", sink="events") == 0
            acked_while_down = len(acked)
            await asyncio.sleep(1.0)
            assert len(acked) == acked_while_down  # nothing is acknowledged without a broker
            assert failures
            assert max(failures) <= delivery_timeout + 1.5  # a publish fails in bounded time

            await repair_broker(broker, fault)
            repaired_at = time.monotonic()
            async with asyncio.timeout(60):
                await task
            resumed = time.monotonic() - repaired_at
            assert sink.healthy()
            assert sample(metrics, "notifier_sink_up", sink="events") == 1
            assert sample(metrics, "notifier_sink_events_published_total",
                          sink="events", outcome="ok") == sum(len(p) for p in pages)
    finally:
        if fault == "freeze":
            with contextlib.suppress(RuntimeError, ProcessLookupError):
                broker.signal(signal.SIGCONT)
    total = time.monotonic() - t0

    all_ids = [ev.id for page in pages for ev in page]
    assert acked == all_ids
    records = await read_topic(broker.bootstrap, topic)
    consumed = [dict(r.headers)["ce_id"].decode() for r in records]
    assert set(consumed) == set(acked)  # nothing lost, nothing foreign
    kinds: dict[bytes, list[str]] = defaultdict(list)
    for rec in records:
        kinds[rec.key].append(dict(rec.headers)["ce_type"].decode().rsplit(".", 1)[1])
    for key, seq in kinds.items():  # duplicates allowed, but no created after a deleted
        if "deleted" in seq:
            assert max(i for i, k in enumerate(seq) if k == "created") < seq.index("deleted"), key
    print(f"\noutage ({fault}): {total:.1f}s in all; detected after {detected:.1f}s, "
          f"{len(failures)} failed publishes (slowest {max(failures):.2f}s), resumed "
          f"{resumed:.1f}s after the repair, {len(consumed) - len(set(consumed))} duplicates")
