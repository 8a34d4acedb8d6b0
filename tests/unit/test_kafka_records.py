"""Kafka record building (CloudEvents Kafka binding), partitioning and sink options: no broker."""

from __future__ import annotations

import random
from typing import Any

import orjson
import pytest
from aiokafka.partitioner import murmur2 as aiokafka_murmur2
from prometheus_client import CollectorRegistry
from pydantic import ValidationError

from notifier.config import KafkaSinkConfig
from notifier.core.events import ChangeKind, Event, build_event
from notifier.errors import SinkConfigError, SinkError
from notifier.metrics import Metrics
from notifier.sinks.base import DirectSink, OutboxSink
from notifier.sinks.kafka import KafkaSink
from notifier.sinks.kafka_records import (
    build_records,
    group_by_partition,
    murmur2,
    murmur2_many,
    partition_for,
)
from notifier.source.models import Relationship

CONTAINER = "5d0c2a3e-3b1f-4b8e-9a51-0d3c1f6f7a10"


def make_event(rel_id: str, kind: ChangeKind = ChangeKind.CREATED, *, snapshot: bool = False,
               container: str = CONTAINER) -> Event:
    raw: dict[str, Any] = {
        "id": rel_id, "createdOn": "2024-05-01T10:00:00Z", "isReadOnly": False,
        "isService": False, "isDeleted": kind is ChangeKind.DELETED,
        "deletedOn": "2024-05-02T10:00:00Z" if kind is ChangeKind.DELETED else None,
        "entities": [
            {"domain": "autodesk-bim360-asset", "type": "asset", "id": "a1",
             "createdOn": "2024-05-01T10:00:00Z"},
            {"domain": "autodesk-bim360-issue", "type": "issue", "id": "i1",
             "createdOn": "2024-05-01T10:00:00Z"},
        ],
    }
    rel = Relationship(id=rel_id, created_on=raw["createdOn"], is_deleted=raw["isDeleted"],
                       deleted_on=raw["deletedOn"], raw=raw)
    return build_event(subscription="project-a", container_id=container, relationship=rel,
                       kind=kind, snapshot=snapshot, seen_at="2024-06-01T00:00:00Z")


@pytest.mark.parametrize(
    ("kind", "snapshot", "key", "expected_key"),
    [
        (ChangeKind.CREATED, False, "relationship", "rel-1"),
        (ChangeKind.DELETED, True, "relationship", "rel-1"),
        (ChangeKind.CREATED, True, "container", CONTAINER),
    ],
)
def test_binary_mode_record(kind, snapshot, key, expected_key):
    ev = make_event("rel-1", kind, snapshot=snapshot)
    [(rkey, value, headers)] = build_records([ev], key=key, content_mode="binary")
    assert rkey == expected_key.encode()
    assert orjson.loads(value) == ev.data
    assert headers == [
        ("ce_specversion", b"1.0"),
        ("ce_id", ev.id.encode()),
        ("ce_source", f"/bim360/relationship/v2/containers/{CONTAINER}".encode()),
        ("ce_type", f"com.autodesk.bim360.relationship.{kind.value}".encode()),
        ("ce_subject", b"rel-1"),
        ("ce_time", ev.time.encode()),
        ("ce_snapshot", b"true" if snapshot else b"false"),
        ("ce_partitionkey", expected_key.encode()),
        ("content-type", b"application/json"),
    ]
    # Every header value is bytes and every name a str: what Kafka clients expect.
    assert all(isinstance(k, str) and isinstance(v, bytes) for k, v in headers)


@pytest.mark.parametrize(("key", "expected_key"),
                         [("relationship", "rel-2"), ("container", CONTAINER)])
def test_structured_mode_record(key, expected_key):
    ev = make_event("rel-2", ChangeKind.DELETED, snapshot=True)
    [(rkey, value, headers)] = build_records([ev], key=key, content_mode="structured")
    assert rkey == expected_key.encode()
    assert headers == [("content-type", b"application/cloudevents+json")]
    doc = orjson.loads(value)
    assert doc == {**ev.structured(), "partitionkey": expected_key}
    assert doc["specversion"] == "1.0"
    assert doc["snapshot"] is True
    assert doc["data"]["relationship"]["id"] == "rel-2"


def test_records_keep_the_order_and_do_not_share_mutable_headers():
    events = [make_event(f"rel-{i}", snapshot=i % 2 == 0) for i in range(50)]
    records = build_records(events)
    assert [r[0] for r in records] == [f"rel-{i}".encode() for i in range(50)]
    assert [dict(r[2])["ce_id"] for r in records] == [e.id.encode() for e in events]
    records[0][2].append(("x", b"y"))
    assert ("x", b"y") not in records[1][2]


def test_empty_page_builds_no_records():
    assert build_records([]) == []
    assert build_records([], content_mode="structured") == []


def test_murmur2_matches_the_java_client_and_aiokafka():
    # Vectors from Apache Kafka's UtilsTest.testMurmur2 (signed Java ints).
    java = {b"21": -973932308, b"foobar": -790332482, b"a-little-bit-long-string": -985981536,
            b"a-little-bit-longer-string": -1486304829,
            b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971, b"abc": 479470107}
    for data, expected in java.items():
        assert murmur2(data) == expected & 0xFFFFFFFF
    rnd = random.Random(7)
    for n in [*range(70), 255, 256, 300]:
        data = rnd.randbytes(n)
        assert murmur2(data) == aiokafka_murmur2(data)


def test_murmur2_many_equals_murmur2_key_by_key():
    rnd = random.Random(11)
    # Every tail length, groups below and above the vectorised threshold and beyond one chunk,
    # keys of all-ones bytes (the largest products), duplicates and mixed lengths in one call.
    keys = [rnd.randbytes(n) for n in range(70) for _ in range(rnd.choice([1, 3, 17, 40]))]
    keys += [b"\xff" * 36] * 3 + [rnd.randbytes(36) for _ in range(5000)]
    keys += [b"", b"\xff" * 37, str(rnd.random()).encode()]
    hashes = murmur2_many(keys)
    assert hashes == {k: murmur2(k) for k in keys}
    assert murmur2_many([]) == {}


def test_partition_for_is_stable_and_spreads_keys():
    parts = [0, 1, 2]
    keys = [f"rel-{i}".encode() for i in range(300)]
    chosen = [partition_for(k, parts) for k in keys]
    assert chosen == [partition_for(k, parts) for k in keys]
    assert set(chosen) == {0, 1, 2}
    # Java: Utils.toPositive(Utils.murmur2(key)) % numPartitions
    assert partition_for(b"21", list(range(10))) == ((-973932308) & 0x7FFFFFFF) % 10


def test_group_by_partition_follows_partition_for_and_keeps_each_key_in_order():
    events = [make_event(f"rel-{i % 40}") for i in range(200)]
    records = build_records(events)
    parts = [0, 3, 7]
    groups = group_by_partition(records, parts)
    assert set(groups) == set(parts)  # 40 keys reach all three partitions
    assert sum(len(g) for g in groups.values()) == len(records)
    for p, group in groups.items():
        assert all(partition_for(rec[0], parts) == p for rec in group)
        assert group == [rec for rec in records if partition_for(rec[0], parts) == p]
    assert group_by_partition([], parts) == {}


def kafka_sink(name: str, **fields: Any) -> KafkaSink:
    """A sink built as the notifier builds it: from its validated config model."""
    return KafkaSink(KafkaSinkConfig(name=name, **fields), Metrics(CollectorRegistry(),
                                                                   runtime=False))


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"security_protocol": "SASL_SSL", "sasl_mechanism": "PLAIN"}, "sasl_username"),
        ({"security_protocol": "SASL_PLAINTEXT", "sasl_mechanism": "GSSAPI",
          "sasl_username": "u", "sasl_password": "p"}, "sasl_mechanism"),
        ({"ssl_cafile": "/x/ca.pem"}, "security_protocol SSL"),
        ({"compression": "brotli"}, "compression"),
        ({"bootstrap_servers": " , "}, "bootstrap_servers"),
    ],
)
def test_bad_options_are_refused_by_the_config_model(options, message):
    # The sink is built only from a validated KafkaSinkConfig: these never reach it.
    kwargs = {"bootstrap_servers": "127.0.0.1:9", "topic": "t", **options}
    with pytest.raises(ValidationError, match=message):
        KafkaSinkConfig(name="events", **kwargs)


def test_an_unreadable_tls_file_is_a_sink_config_error():
    with pytest.raises(SinkConfigError, match=r"cannot use ssl_cafile: .*No such file") as info:
        kafka_sink("events", bootstrap_servers="127.0.0.1:9", topic="t",
                   security_protocol="SSL", ssl_cafile="/does/not/exist.pem")
    assert info.value.sink == "events"


def test_sasl_password_is_not_in_error_messages():
    with pytest.raises(ValidationError) as info:
        KafkaSinkConfig(name="events", bootstrap_servers="h:1", topic="t",
                        security_protocol="SASL_SSL", sasl_mechanism="SCRAM-SHA-999",
                        sasl_username="u", sasl_password="hunter2-secret")
    assert "hunter2-secret" not in str(info.value)


def test_bootstrap_servers_accept_a_list_or_a_comma_separated_string():
    a = kafka_sink("k", bootstrap_servers="h1:9092, h2:9092", topic="t")
    b = kafka_sink("k", bootstrap_servers=["h1:9092", "h2:9092"], topic="t")
    assert a.bootstrap_servers == b.bootstrap_servers == ["h1:9092", "h2:9092"]
    assert not a.healthy()
    assert isinstance(a, DirectSink)
    assert not isinstance(a, OutboxSink)


async def test_publish_before_connect_raises_sink_error_and_empty_publish_is_a_no_op():
    sink = kafka_sink("k", bootstrap_servers="127.0.0.1:9", topic="t")
    await sink.publish([])
    with pytest.raises(SinkError, match="unavailable"):
        await sink.publish([make_event("r")])


def test_the_sink_follows_its_config_model():
    cfg = KafkaSinkConfig.model_validate({
        "name": "events", "type": "kafka", "bootstrap_servers": "k1:9092,k2:9093",
        "topic": "bim360.relationships", "key": "container", "content_mode": "structured",
        "linger": "20ms", "compression": "gzip", "create_topic": False, "partitions": 6,
        "replication_factor": 3, "request_timeout": "12s", "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": "SCRAM-SHA-512", "sasl_username": "svc",
        "sasl_password": "s3cret-value", "client_id": "notifier-test",
    })
    metrics = Metrics(runtime=False)
    sink = KafkaSink(cfg, metrics)
    assert sink.name == "events"
    assert sink.bootstrap_servers == ["k1:9092", "k2:9093"]
    assert (sink.topic, sink.key, sink.content_mode) == ("bim360.relationships", "container",
                                                         "structured")
    assert (sink.create_topic, sink.partitions, sink.replication_factor) == (False, 6, 3)
    assert sink.delivery_timeout == 12.0
    assert not sink.healthy()
    # The secret reaches the client options but never the sink's repr.
    assert "s3cret-value" not in repr(sink)

    defaults = KafkaSink(KafkaSinkConfig.model_validate(
        {"name": "e", "bootstrap_servers": ["k:9092"], "topic": "t"}), metrics)
    assert (defaults.key, defaults.content_mode, defaults.create_topic) == (
        "relationship", "binary", True)
