"""The ``cluster`` section: its fields, and the sinks and subscriptions cluster mode refuses."""

from __future__ import annotations

from typing import Any

import pytest

from notifier.config import config_from_data
from tests.unit.test_config import DELETE, kafka, minimal, problems, webhook

CLUSTER = {"bootstrap_servers": "localhost:9092", "group": "notifier-prod",
           "state_topic": "notifier-prod.state"}


def clustered(*sinks: dict[str, Any], **cluster: Any) -> dict[str, Any]:
    data = minimal()
    data["sinks"] = list(sinks)
    data["subscriptions"][0]["sinks"] = [s["name"] for s in sinks]
    data["cluster"] = {k: v for k, v in {**CLUSTER, **cluster}.items() if v is not DELETE}
    return data


def test_a_kafka_only_cluster_config_is_valid_with_defaults() -> None:
    cfg = config_from_data(clustered(kafka()), environ={})
    assert cfg.cluster is not None
    assert cfg.cluster.work_partitions == 12
    assert cfg.cluster.bootstrap_servers == ["localhost:9092"]
    assert config_from_data(minimal(), environ={}).cluster is None


@pytest.mark.parametrize("sink", [
    {"name": "archive", "type": "jsonl", "path": "./x.jsonl"},
    {"name": "console", "type": "stdout"},
])
def test_local_file_sinks_are_refused_in_cluster_mode(sink: dict[str, Any]) -> None:
    found = problems(clustered(kafka(), sink))
    assert any(p.startswith("sinks[1].type") and "cluster mode" in p and "local file" in p
               for p in found), found


def test_a_kafka_sink_on_another_cluster_is_refused() -> None:
    found = problems(clustered(kafka(bootstrap_servers="elsewhere:9092")))
    assert any("sinks[0].bootstrap_servers" in p and "same Kafka cluster" in p
               for p in found), found


def test_webhook_sinks_are_accepted_in_cluster_mode() -> None:
    cfg = config_from_data(clustered(kafka(), webhook()), environ={})
    assert [s.type for s in cfg.sinks] == ["kafka", "webhook"]
    alone = config_from_data(clustered(webhook()), environ={})  # no kafka sink at all
    assert alone.cluster is not None


@pytest.mark.parametrize(("field", "value", "fragment"), [
    ("work_partitions", 0, "cluster.work_partitions"),
    ("group", DELETE, "cluster.group"),
    ("state_topic", "bad topic!", "cluster.state_topic"),
    ("security_protocol", "SASL_SSL", "cluster.sasl_mechanism"),
])
def test_bad_cluster_fields_are_named(field: str, value: Any, fragment: str) -> None:
    found = problems(clustered(kafka(), **{field: value}))
    assert any(fragment in p for p in found), found


def test_hub_subscriptions_are_accepted_in_cluster_mode() -> None:
    data = clustered(kafka())
    sub = data["subscriptions"][0]
    sub.pop("container_id", None)
    sub.pop("container_ids", None)
    sub["hub_id"] = "b.0f8a3c52-6d1e-4b7a-9c2e-5a1b3d4e6f70"
    cfg = config_from_data(data, environ={})
    assert [s.hub_id for s in cfg.hub_subscriptions] == [sub["hub_id"]]
