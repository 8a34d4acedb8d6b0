"""Cluster mode in the dashboard and the alerts: the metric names the engine exports, a Cluster
row, and the cluster alerts run through ``promtool test rules`` on made-up series.

The generic checks (every query uses exported metrics and labels, job scoping, runbooks,
valid PromQL) are in test_observability_assets.py and cover these panels and rules too.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.unit.test_observability_assets import (
    DASHBOARD,
    PROMTOOL,
    RULES,
    dashboard_queries,
    needs_promtool,
    parse_promql,
    resolve,
    rules,
)

# The names fixed for issue 14 ("Cluster mode on Kafka"), with their types and labels.
CLUSTER_METRICS = {
    "notifier_cluster_owned_partitions": ("gauge", set()),
    "notifier_cluster_restoring_partitions": ("gauge", set()),
    "notifier_cluster_unreadable_partitions": ("gauge", set()),
    "notifier_cluster_stray_streams": ("gauge", set()),
    "notifier_cluster_restore_records": ("counter", set()),
    "notifier_cluster_restore_seconds": ("histogram", {"le"}),
    "notifier_cluster_rebalances": ("counter", {"change"}),
    "notifier_cluster_fenced": ("counter", set()),
    "notifier_cluster_transactions": ("counter", {"outcome"}),
}
CLUSTER_ALERTS = {
    "NotifierClusterPartitionsUnowned",
    "NotifierClusterRestoreStuck",
    "NotifierClusterStateUnreadable",
    "NotifierClusterStrayStreams",
    "NotifierClusterFenced",
    "NotifierClusterTransactionsAborting",
    "NotifierClusterRebalancing",
}


def used_families(queries: list[tuple[str, str]]) -> set[str]:
    names = {name for _, expr in queries for name in parse_promql(expr).metrics}
    return {fam.name for name in names if (fam := resolve(name)) is not None}


@pytest.mark.parametrize("name", sorted(CLUSTER_METRICS))
def test_the_engine_exports_each_cluster_metric(name: str) -> None:
    kind, labels = CLUSTER_METRICS[name]
    suffix = {"counter": "_total", "histogram": "_bucket", "gauge": ""}[kind]
    fam = resolve(name + suffix)
    assert fam is not None, f"{name} is not exported by Metrics"
    assert fam.type == kind
    assert labels <= fam.labels


def test_dashboard_has_a_cluster_row_using_every_cluster_metric() -> None:
    data = json.loads(DASHBOARD.read_text())
    panels = data["panels"]
    titles = [p["title"] for p in panels]
    row = titles.index("Cluster")
    assert panels[row]["type"] == "row"
    after = [p for p in panels[row + 1:]]
    assert {"Owned work partitions per replica", "Restoring partitions", "Restore time",
            "Rebalances", "Fenced", "Kafka transactions by outcome"} <= {p["title"] for p in after}
    cluster_queries = [(f"panel {p['title']!r}", t["expr"]) for p in after for t in p["targets"]]
    assert used_families(cluster_queries) == set(CLUSTER_METRICS)
    owned = next(p for p in after if p["title"] == "Owned work partitions per replica")
    assert "by (instance)" in owned["targets"][0]["expr"]  # per replica
    assert set(CLUSTER_METRICS) <= used_families(dashboard_queries())


def test_cluster_alerts_exist_and_cover_every_failure() -> None:
    by_name = {r["alert"]: r for r in rules()}
    assert set(by_name) >= CLUSTER_ALERTS
    used = used_families([(n, by_name[n]["expr"]) for n in CLUSTER_ALERTS])
    assert used >= set(CLUSTER_METRICS) - {"notifier_cluster_restore_seconds"}
    unowned = by_name["NotifierClusterPartitionsUnowned"]
    assert unowned["labels"]["severity"] == "critical"
    assert "sum by (job)" in unowned["expr"]  # all replicas together, not per pod


# --- promtool test rules ------------------------------------------------------------------
# Series values in promtool's expanding notation: "a+bxN" is a, a+b, ... (N+1 samples, one per
# interval). Every series carries the job the rules select and an instance.

def series(metric: str, values: str, instance: str = "a:9464", **labels: str) -> dict[str, str]:
    pairs = {"job": "notifier", "instance": instance, **labels}
    text = ", ".join(f'{k}="{v}"' for k, v in pairs.items())
    return {"series": f"{metric}{{{text}}}", "values": values}


def alert(name: str, at: str, *expected: dict[str, str]) -> dict[str, Any]:
    return {"eval_time": at, "alertname": name,
            "exp_alerts": [{"exp_labels": {**labels, "alertname": name}} for labels in expected]}


def promtool_test(tmp_path: Path, tests: list[dict[str, Any]]) -> subprocess.CompletedProcess[str]:
    """``promtool test rules`` on the rules file without its annotations (promtool compares
    them verbatim; their templates are checked by test_observability_assets.py)."""
    assert PROMTOOL is not None
    data = yaml.safe_load(RULES.read_text())
    for group in data["groups"]:
        for rule in group["rules"]:
            rule.pop("annotations", None)
    rules_file = tmp_path / "alerts.rules.yaml"
    rules_file.write_text(yaml.safe_dump(data))
    path = tmp_path / "cluster.test.yaml"
    path.write_text(yaml.safe_dump({"rule_files": [str(rules_file)], "evaluation_interval": "1m",
                                    "tests": tests}))
    return subprocess.run([PROMTOOL, "test", "rules", str(path)], capture_output=True, text=True,
                          timeout=60, check=False)


CASES: dict[str, dict[str, Any]] = {
    "unowned-partitions-fire": {
        "interval": "1m",
        "input_series": [series("notifier_cluster_owned_partitions", "6x20", "a:9464"),
                         series("notifier_cluster_owned_partitions", "6x5 5x15", "b:9464")],
        "alert_rule_test": [
            alert("NotifierClusterPartitionsUnowned", "9m"),  # short of 12 for 4m only
            alert("NotifierClusterPartitionsUnowned", "12m",
                  {"job": "notifier", "severity": "critical"}),
        ],
    },
    "all-partitions-owned": {
        "interval": "1m",
        "input_series": [series("notifier_cluster_owned_partitions", "6x30", "a:9464"),
                         series("notifier_cluster_owned_partitions", "6x30", "b:9464")],
        "alert_rule_test": [alert("NotifierClusterPartitionsUnowned", "25m")],
    },
    "restore-without-progress-fires": {
        "interval": "1m",
        "input_series": [series("notifier_cluster_restoring_partitions", "2x40"),
                         series("notifier_cluster_restore_records_total", "500x40")],
        "alert_rule_test": [alert("NotifierClusterRestoreStuck", "30m",
                                  {"job": "notifier", "instance": "a:9464",
                                   "severity": "warning"})],
    },
    "restore-that-progresses-is-not-stuck": {
        "interval": "1m",
        "input_series": [series("notifier_cluster_restoring_partitions", "2x40"),
                         series("notifier_cluster_restore_records_total", "0+5000x40")],
        "alert_rule_test": [alert("NotifierClusterRestoreStuck", "30m")],
    },
    "unreadable-state-fires-until-mended": {
        "interval": "1m",
        "input_series": [series("notifier_cluster_unreadable_partitions", "0x5 1x20 0x20")],
        "alert_rule_test": [
            alert("NotifierClusterStateUnreadable", "8m"),  # unreadable for 3m only
            alert("NotifierClusterStateUnreadable", "20m",
                  {"job": "notifier", "instance": "a:9464", "severity": "critical"}),
            alert("NotifierClusterStateUnreadable", "35m"),  # mended
        ],
    },
    "stray-streams-fire-until-dropped": {
        "interval": "1m",
        "input_series": [series("notifier_cluster_stray_streams", "0x5 3x60 0x20")],
        "alert_rule_test": [
            alert("NotifierClusterStrayStreams", "20m"),  # not for 30m yet
            alert("NotifierClusterStrayStreams", "50m",
                  {"job": "notifier", "instance": "a:9464", "severity": "warning"}),
            alert("NotifierClusterStrayStreams", "75m"),  # dropped after the retention
        ],
    },
    "fencing-fires-then-clears": {
        "interval": "1m",
        "input_series": [series("notifier_cluster_fenced_total", "0x5 1x40")],
        "alert_rule_test": [
            alert("NotifierClusterFenced", "10m",
                  {"job": "notifier", "instance": "a:9464", "severity": "warning"}),
            alert("NotifierClusterFenced", "40m"),  # nothing new for 15 minutes
        ],
    },
    "aborted-transactions-fire": {
        "interval": "1m",
        "input_series": [
            series("notifier_cluster_transactions_total", "0+60x60", outcome="committed"),
            series("notifier_cluster_transactions_total", "0+15x60", outcome="aborted"),
        ],
        "alert_rule_test": [alert("NotifierClusterTransactionsAborting", "40m",
                                  {"job": "notifier", "instance": "a:9464",
                                   "severity": "warning"})],
    },
    "rare-aborts-are-fine": {
        "interval": "1m",
        "input_series": [
            series("notifier_cluster_transactions_total", "0+60x60", outcome="committed"),
            series("notifier_cluster_transactions_total", "0+1x60", outcome="aborted"),
        ],
        "alert_rule_test": [alert("NotifierClusterTransactionsAborting", "40m")],
    },
    "rebalance-storm-fires": {
        "interval": "1m",
        "input_series": [series("notifier_cluster_rebalances_total", "0+2x80", change="assigned"),
                         series("notifier_cluster_rebalances_total", "0+2x80", change="revoked")],
        "alert_rule_test": [alert("NotifierClusterRebalancing", "60m",
                                  {"job": "notifier", "severity": "warning"})],
    },
    "single-process-notifier-is-silent": {
        "interval": "1m",
        "input_series": [series("up", "1x40"),
                         series("notifier_scheduler_quarantined_streams", "0x40")],
        "alert_rule_test": [alert(name, "35m") for name in sorted(CLUSTER_ALERTS)],
    },
}


@needs_promtool
@pytest.mark.parametrize("case", sorted(CASES))
def test_cluster_alert_rules_with_promtool(case: str, tmp_path: Path) -> None:
    proc = promtool_test(tmp_path, [CASES[case]])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout


@needs_promtool
def test_promtool_test_catches_a_wrong_expectation(tmp_path: Path) -> None:
    """The harness can fail: claiming the fully owned case fires is refused."""
    case = dict(CASES["all-partitions-owned"])
    case["alert_rule_test"] = [alert("NotifierClusterPartitionsUnowned", "25m",
                                     {"job": "notifier", "severity": "critical"})]
    proc = promtool_test(tmp_path, [case])
    assert proc.returncode != 0
    assert "NotifierClusterPartitionsUnowned" in proc.stdout + proc.stderr
