"""The Helm chart in cluster mode (``cluster.enabled``), rendered by the real helm.

A Deployment of two or more replicas without a state volume (an emptyDir holds the local cache
of the state topic), a PodDisruptionBudget, pod anti-affinity, and the notifier's ``cluster:``
section rendered from the chart's ``cluster`` values. ci/cluster-values.yaml also goes through
``notifier check-config``, helm lint and kubeconform with the other scenarios (test_helm.py).
"""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from tests.integration.test_helm import (
    CHART,
    FULLNAME,
    SECRETS_DIR,
    STATE_DIR,
    container,
    helm_template,
    pytestmark,  # noqa: F401 - skipped like test_helm.py when helm is missing
    render,
)

CLUSTER_VALUES = str(CHART / "ci" / "cluster-values.yaml")
Manifests = dict[tuple[str, str], dict[str, Any]]


def cluster_render(*args: str) -> Manifests:
    return render("-f", CLUSTER_VALUES, *args)


def rendered_config(manifests: Manifests) -> dict[str, Any]:
    text = manifests[("ConfigMap", FULLNAME)]["data"]["config.yaml"]
    config: dict[str, Any] = yaml.safe_load(text)
    return config


def pod_spec(manifests: Manifests) -> dict[str, Any]:
    spec: dict[str, Any] = manifests[("Deployment", FULLNAME)]["spec"]["template"]["spec"]
    return spec


def test_cluster_mode_is_a_deployment_of_replicas_without_a_volume() -> None:
    manifests = cluster_render()
    kinds = {kind for kind, _ in manifests}
    assert "StatefulSet" not in kinds
    assert "PersistentVolumeClaim" not in kinds
    deployment = manifests[("Deployment", FULLNAME)]
    spec = deployment["spec"]
    assert spec["replicas"] == 3
    assert "volumeClaimTemplates" not in spec
    # A rollout adds a replica before removing one: the group rebalances, nobody double-owns.
    assert spec["strategy"] == {"type": "RollingUpdate",
                                "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}
    pod = pod_spec(manifests)
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["state"] == {"name": "state", "emptyDir": {"sizeLimit": "2Gi"}}
    assert not any("persistentVolumeClaim" in v for v in volumes.values())
    c = container(manifests)
    mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
    assert mounts["state"] == STATE_DIR == c["workingDir"]
    assert mounts["secrets"] == SECRETS_DIR
    assert c["args"] == ["run", "--config", "/etc/notifier/config/config.yaml"]
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert pod["terminationGracePeriodSeconds"] == 30
    selector = spec["selector"]["matchLabels"]
    assert selector.items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
    assert manifests[("Service", FULLNAME)]["spec"]["selector"] == selector


def test_pod_disruption_budget_and_anti_affinity_select_the_replicas() -> None:
    manifests = cluster_render()
    selector = manifests[("Deployment", FULLNAME)]["spec"]["selector"]["matchLabels"]
    pdb = manifests[("PodDisruptionBudget", FULLNAME)]
    assert pdb["apiVersion"] == "policy/v1"
    assert pdb["spec"] == {"maxUnavailable": 1, "selector": {"matchLabels": selector}}
    anti = pod_spec(manifests)["affinity"]["podAntiAffinity"]
    (term,) = anti["preferredDuringSchedulingIgnoredDuringExecution"]
    assert term["weight"] == 100
    assert term["podAffinityTerm"] == {"topologyKey": "kubernetes.io/hostname",
                                       "labelSelector": {"matchLabels": selector}}


@pytest.mark.parametrize(
    ("args", "check"),
    [
        (["--set", "cluster.podAntiAffinity=hard",
          "--set", "cluster.antiAffinityTopologyKey=topology.kubernetes.io/zone"],
         lambda a: a["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][0][
             "topologyKey"] == "topology.kubernetes.io/zone"),
        (["--set", "cluster.podAntiAffinity=none"], lambda a: a is None),
        (["--set-json", 'affinity={"nodeAffinity": {"x": 1}}'],
         lambda a: a == {"nodeAffinity": {"x": 1}}),  # the user's own affinity wins
    ],
    ids=["hard-zone", "none", "own-affinity"],
)
def test_anti_affinity_choices(args: list[str], check: Any) -> None:
    assert check(pod_spec(cluster_render(*args)).get("affinity"))


def test_pod_disruption_budget_min_available_or_off() -> None:
    pdb = cluster_render("--set", "cluster.podDisruptionBudget.minAvailable=2")[
        ("PodDisruptionBudget", FULLNAME)]
    assert pdb["spec"]["minAvailable"] == 2
    assert "maxUnavailable" not in pdb["spec"]
    off = cluster_render("--set", "cluster.podDisruptionBudget.enabled=false")
    assert ("PodDisruptionBudget", FULLNAME) not in off


def test_the_cluster_section_is_rendered_from_values() -> None:
    """Everything but the chart's own keys becomes config.cluster; group and state_topic
    default to names unique per namespace and release."""
    config = rendered_config(cluster_render())
    assert config["cluster"] == {
        "bootstrap_servers": "kafka-0.kafka.kafka.svc:9093,kafka-1.kafka.kafka.svc:9093",
        "group": "notifier.notifier",  # <namespace>.<full name>
        "state_topic": "notifier.notifier.state",
        "work_partitions": 24,
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_username": "notifier",
        "sasl_password_file": f"{SECRETS_DIR}/kafka-password",
        "ssl_cafile": f"{SECRETS_DIR}/kafka-ca.pem",
    }
    assert config["state"]["path"] == f"{STATE_DIR}/notifier.db"  # the local cache
    named = rendered_config(cluster_render("--set", "cluster.group=prod-notifier",
                                           "--set", "cluster.state_topic=prod.state"))
    assert (named["cluster"]["group"], named["cluster"]["state_topic"]) == (
        "prod-notifier", "prod.state")
    single = rendered_config(render("-f", str(CHART / "ci" / "default-values.yaml")))
    assert "cluster" not in single


def test_unowned_partitions_alert_expects_work_partitions() -> None:
    def threshold(manifests: Manifests) -> str:
        groups = manifests[("PrometheusRule", FULLNAME)]["spec"]["groups"]
        (rule,) = [r for g in groups for r in g["rules"]
                   if r["alert"] == "NotifierClusterPartitionsUnowned"]
        expr: str = rule["expr"]
        return expr.rstrip().rsplit("<", 1)[1].strip()

    assert threshold(cluster_render()) == "24"
    assert threshold(cluster_render("--set", "cluster.work_partitions=6")) == "6"
    assert threshold(cluster_render(
        "--set", "prometheusRule.thresholds.NotifierClusterPartitionsUnowned=5")) == "5"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--set", "replicaCount=1"], "replicaCount"),
        (["--set", "cluster.bootstrap_servers=null"], "bootstrap_servers"),
        (["--set-json", 'config.sinks=[{"name": "events", "type": "stdout"}]'],
         "config.sinks[0] (events, type stdout) cannot be used with cluster.enabled"),
        (["--set", "persistence.existingClaim=state"], "existingClaim cannot be used"),
        (["--set", "cluster.sasl_password_file=/etc/notifier/secrets/other"],
         "cluster.sasl_password_file reads /etc/notifier/secrets/other, but `secrets` has"),
        (["--set", "cluster.work_partitionz=3"], "work_partitionz"),
        (["--set", "cluster.podAntiAffinity=sometimes"], "podAntiAffinity"),
    ],
    ids=["one-replica", "no-bootstrap", "stdout-sink", "shared-claim", "missing-secret",
         "unknown-key", "anti-affinity"],
)
def test_bad_cluster_values_are_refused(args: list[str], message: str) -> None:
    proc = helm_template("-f", CLUSTER_VALUES, *args, check=False)
    assert proc.returncode != 0
    assert message in proc.stderr


def test_a_jsonl_sink_is_refused_in_cluster_mode() -> None:
    proc = helm_template("-f", CLUSTER_VALUES, "--set-json",
                         'config.sinks=[{"name": "archive", "type": "jsonl", "path": "e.jsonl"}]',
                         "--set-json", 'config.subscriptions[0].sinks=["archive"]', check=False)
    assert proc.returncode != 0
    assert "config.sinks[0] (archive, type jsonl) cannot be used with cluster.enabled" in (
        proc.stderr)


def test_config_cluster_is_the_charts_to_write() -> None:
    """Setting config.cluster directly would run cluster mode in a one-pod StatefulSet."""
    proc = helm_template("-f", str(CHART / "ci" / "default-values.yaml"),
                         "--set", "config.cluster.bootstrap_servers=k:9092",
                         "--set", "config.cluster.group=g", "--set", "config.cluster.state_topic=s",
                         check=False)
    assert proc.returncode != 0
    assert "put the cluster settings under `cluster:`" in proc.stderr
