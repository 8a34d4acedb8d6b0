"""Dashboard and alert rules use only exported metrics and labels; promtool agrees."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry

from notifier.metrics import Metrics
from tests.unit.test_metrics import exercise_every_method

FILES = Path(__file__).resolve().parents[2] / "helm" / "notifier" / "files"
DASHBOARD = FILES / "dashboard.json"
RULES = FILES / "alerts.rules.yaml"

# Series names a family of each type exposes, as suffixes of the family name. ``_created`` is
# left out on purpose: it is bookkeeping, not something to graph or alert on.
SUFFIXES = {
    "counter": ("_total",),
    "gauge": ("",),
    "histogram": ("_bucket", "_count", "_sum"),
    "summary": ("", "_count", "_sum"),
    "info": ("_info",),
    "stateset": ("",),
    "unknown": ("",),
}
# Labels Prometheus attaches to every scraped series (cluster: an external label, where set).
TARGET_LABELS = {"job", "instance", "namespace", "pod", "service", "container", "endpoint",
                 "cluster"}
# Series Prometheus itself records for every target.
SCRAPE_SERIES = {"up": {"job", "instance"}}
PROMQL_WORDS = {
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "and",
    "or",
    "unless",
    "offset",
    "inf",
    "nan",
}


@dataclass
class Family:
    name: str
    type: str
    labels: set[str] = field(default_factory=set)


def exported_families() -> dict[str, Family]:
    metrics = Metrics(CollectorRegistry())  # runtime collectors on, as in production
    exercise_every_method(metrics)
    families: dict[str, Family] = {}
    for fam in metrics.registry.collect():
        entry = families.setdefault(fam.name, Family(fam.name, fam.type))
        for sample in fam.samples:
            entry.labels.update(sample.labels)
    return families


FAMILIES = exported_families()


def resolve(series: str) -> Family | None:
    """The family that exports ``series``, honouring only the suffixes its type allows."""
    if series in SCRAPE_SERIES:
        return Family(series, "gauge", SCRAPE_SERIES[series])
    for fam in FAMILIES.values():
        for suffix in SUFFIXES[fam.type]:
            if series == fam.name + suffix:
                return fam
    return None


@dataclass
class Usage:
    metrics: set[str]
    matcher_labels: dict[str, set[str]]  # metric -> label names used in its {...} selector
    grouping_labels: set[str]  # labels in by (...) / without (...) / on (...) / ignoring (...)


_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'')
_SELECTOR = re.compile(r"([A-Za-z_:][\w:]*)\s*\{([^}]*)\}")
_MATCHER = re.compile(r"([A-Za-z_]\w*)\s*(?:=~|!~|!=|=)")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
_IDENT = re.compile(r"(?<![\w.$:])([A-Za-z_:][\w:]*)(?![\w:])(?!\s*\()")


def parse_promql(expr: str) -> Usage:
    """Metric names and label names of a PromQL expression (enough PromQL for our files)."""
    unquoted = _STRING.sub('""', expr)
    matcher_labels: dict[str, set[str]] = {}
    for name, body in _SELECTOR.findall(unquoted):
        matcher_labels.setdefault(name, set()).update(_MATCHER.findall(body))
    grouping = {
        label.strip() for group in _GROUPING.findall(unquoted) for label in group.split(",")
    }
    grouping.discard("")
    bare = _GROUPING.sub(" ", unquoted)
    bare = re.sub(r"\{[^}]*\}", " ", bare)  # selectors' bodies
    bare = re.sub(r"\[[^\]]*\]", " ", bare)  # range and subquery durations
    bare = re.sub(r"\boffset\s+\S+", " ", bare)
    names = {n for n in _IDENT.findall(bare) if n.lower() not in PROMQL_WORDS}
    return Usage(names | set(matcher_labels), matcher_labels, grouping)


def dashboard_queries() -> list[tuple[str, str]]:
    """(where, PromQL) for every panel target and every query variable of the dashboard."""
    data = json.loads(DASHBOARD.read_text())
    out: list[tuple[str, str]] = []

    def walk(panels: list[dict[str, Any]]) -> None:
        for panel in panels:
            for target in panel.get("targets", []):
                out.append((f"panel {panel['title']!r}", target["expr"]))
            walk(panel.get("panels", []))

    walk(data["panels"])
    for var in data["templating"]["list"]:
        if var["type"] != "query":
            continue
        query = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
        match = re.fullmatch(r"\s*label_values\((.*),\s*(\w+)\s*\)\s*", query)
        assert match, f"variable {var['name']}: unsupported query {query!r}"
        selector, label = match[1].strip(), match[2]
        matcher = f'{label}!=""'
        if selector.endswith("}"):
            expr = f"{selector[:-1]}, {matcher}}}"
        else:
            expr = f"{selector}{{{matcher}}}"
        out.append((f"variable ${var['name']}", expr))
    return out


RUNBOOKS = Path(__file__).resolve().parents[2] / "docs" / "runbooks.md"
RUNBOOK_BASE = "https://example.com/notifier/docs/runbooks.md"  # the chart rewrites it
VALUES = FILES.parent / "values.yaml"


def rules() -> list[dict[str, Any]]:
    data = yaml.safe_load(RULES.read_text())
    return [rule for group in data["groups"] for rule in group["rules"]]


def rule_queries() -> list[tuple[str, str]]:
    return [(f"rule {r.get('alert') or r.get('record')}", r["expr"]) for r in rules()]


ALL_QUERIES = dashboard_queries() + rule_queries()


def check_query(where: str, expr: str) -> list[str]:
    problems: list[str] = []
    usage = parse_promql(expr)
    if not usage.metrics:
        problems.append(f"{where}: no metric found in {expr!r}")
    labels_here: set[str] = set(TARGET_LABELS)
    for name in sorted(usage.metrics):
        fam = resolve(name)
        if fam is None:
            problems.append(f"{where}: {name} is not exported by Metrics")
            continue
        labels = fam.labels | TARGET_LABELS
        labels_here |= labels
        unknown = usage.matcher_labels.get(name, set()) - labels - {"__name__"}
        if unknown:
            problems.append(f"{where}: {name} has no label(s) {sorted(unknown)}")
    unknown_grouping = usage.grouping_labels - labels_here
    if unknown_grouping:
        problems.append(f"{where}: grouping by unknown label(s) {sorted(unknown_grouping)}")
    return problems


@pytest.mark.parametrize(("where", "expr"), ALL_QUERIES, ids=[w for w, _ in ALL_QUERIES])
def test_every_query_uses_exported_metrics_and_labels(where: str, expr: str) -> None:
    assert check_query(where, expr) == []


@pytest.mark.parametrize(
    ("expr", "problem"),
    [
        ("rate(notifier_sink_up_total[5m])", "notifier_sink_up_total is not exported"),
        ("notifier_sync_pages", "notifier_sync_pages is not exported"),
        ("notifier_sync_detection_lag_seconds_total", "is not exported"),
        ("notifier_build_info_total", "is not exported"),
        ('notifier_sink_up{sinks="x"}', "has no label(s) ['sinks']"),
        ("sum by (sinc) (notifier_sink_up)", "grouping by unknown label(s) ['sinc']"),
        ('sum(rate(notifier_typo_total{job=~"$job"}[$__rate_interval]))', "notifier_typo_total"),
    ],
)
def test_the_checker_catches_mistakes(expr: str, problem: str) -> None:
    problems = check_query("test", expr)
    assert any(problem in p for p in problems), problems


def test_parser_sees_through_promql_syntax() -> None:
    usage = parse_promql(
        "histogram_quantile(0.99, sum by (sink, le) (rate(notifier_sink_publish_duration_seconds"
        '_bucket{job=~"$job", sink=~"a|b"}[$__rate_interval] offset 5m))) > on (job) '
        "clamp_min(2 * max by (job) (notifier_scheduler_effective_interval_seconds), 1e3)"
    )
    assert usage.metrics == {
        "notifier_sink_publish_duration_seconds_bucket",
        "notifier_scheduler_effective_interval_seconds",
    }
    assert usage.grouping_labels == {"sink", "le", "job"}
    assert usage.matcher_labels == {
        "notifier_sink_publish_duration_seconds_bucket": {"job", "sink"}
    }


def test_the_assets_cover_every_area_of_the_issue() -> None:
    used = {name for _, expr in ALL_QUERIES for name in parse_promql(expr).metrics}
    families = {fam.name for name in used if (fam := resolve(name)) is not None}
    expected = {
        "notifier_scheduler_stalest_check_age_seconds",
        "notifier_scheduler_check_age_max_seconds",
        "notifier_sync_detection_lag_seconds",
        "notifier_sync_events_detected",
        "notifier_sink_events_published",
        "notifier_upstream_requests",
        "notifier_scheduler_quarantined_streams",
        "notifier_budget_limit_requests_per_second",
        "notifier_upstream_rate_limited",
        "notifier_upstream_retry_after_seconds",
        "notifier_sink_up",
        "notifier_sink_publish_duration_seconds",
        "notifier_outbox_pending_events",
        "notifier_outbox_oldest_age_seconds",
        "notifier_outbox_dead_lettered",
        "notifier_auth_token_refreshes",
    }
    assert expected - families == set()


def test_dashboard_shape() -> None:
    data = json.loads(DASHBOARD.read_text())
    assert data["uid"] == "notifier-overview"
    assert 36 <= data["schemaVersion"] <= 41
    variables = {v["name"]: v for v in data["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    assert "credential" in variables
    names = [v["name"] for v in data["templating"]["list"]]
    assert names.index("cluster") < names.index("namespace") < names.index("job")
    stalest = [p for p in data["panels"] if p["type"] == "table"]
    assert [p["title"] for p in stalest] == ["Stalest streams (per subscription)"]
    (target,) = stalest[0]["targets"]
    assert "notifier_scheduler_subscription_check_age_seconds" in target["expr"]
    assert "by (namespace, job, subscription)" in target["expr"]
    assert target["format"] == "table"
    assert target["instant"] is True
    ids = [p["id"] for p in data["panels"]]
    assert len(ids) == len(set(ids))
    rows = {p["title"] for p in data["panels"] if p["type"] == "row"}
    assert {"Freshness", "Throughput", "Errors", "Budget", "Sinks", "Outbox"} <= rows
    for panel in data["panels"]:
        assert {"h", "w", "x", "y"} <= set(panel["gridPos"])
        assert panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}"
            for var in ("job", "namespace", "cluster"):
                assert f'{var}=~"${var}"' in target["expr"], panel["title"]


def test_every_alert_has_for_severity_and_annotations() -> None:
    data = yaml.safe_load(RULES.read_text())
    assert data["groups"]
    alerts = rules()
    names = [r["alert"] for r in alerts]
    assert len(names) == len(set(names))
    for rule in alerts:
        assert re.fullmatch(r"\d+[smh]", str(rule["for"])), rule["alert"]
        assert rule["labels"]["severity"] in {"warning", "critical"}, rule["alert"]
        assert rule["annotations"]["summary"].strip(), rule["alert"]
        assert rule["annotations"]["description"].strip(), rule["alert"]
        # annotations may only name labels the alert's expression keeps
        expr_labels = parse_promql(rule["expr"]).grouping_labels
        for text in rule["annotations"].values():
            for label in re.findall(r"\$labels\.(\w+)", text):
                assert label in expr_labels, f"{rule['alert']}: $labels.{label} is aggregated away"


def test_alerts_cover_the_issue() -> None:
    exprs = " ".join(r["expr"] for r in rules())
    for metric in (
        "notifier_scheduler_stalest_check_age_seconds",
        'notifier_sink_events_published_total{job="notifier", outcome="error"}',
        "notifier_sink_up",
        "notifier_outbox_oldest_age_seconds",
        "notifier_auth_credential_up",
        "notifier_scheduler_quarantined_streams",
        "notifier_upstream_rate_limited_total",
        "notifier_hub_discovery_consecutive_failures",
        'up{job="notifier"}',
    ):
        assert metric in exprs


def test_every_rule_is_scoped_to_the_release_job() -> None:
    """Each selector names job="notifier", which the chart rewrites to the release's job."""
    for rule in rules():
        usage = parse_promql(rule["expr"])
        for metric, labels in usage.matcher_labels.items():
            assert "job" in labels, f"{rule['alert']}: {metric} is not scoped to a job"
        bare = {m for m in usage.metrics if m not in usage.matcher_labels}
        assert not bare, f"{rule['alert']}: unscoped selector(s) {sorted(bare)}"
        assert 'job="notifier"' in rule["expr"], rule["alert"]


def test_every_rule_links_its_runbook_section() -> None:
    anchors = {
        re.sub(r"[^a-z0-9 -]", "", line[3:].strip().lower()).replace(" ", "-")
        for line in RUNBOOKS.read_text().splitlines() if line.startswith("## ")
    }
    for rule in rules():
        url = rule["annotations"]["runbook_url"]
        assert url == f"{RUNBOOK_BASE}#{rule['alert'].lower()}", rule["alert"]
        assert rule["alert"].lower() in anchors, f"docs/runbooks.md has no {rule['alert']}"
    assert anchors == {r["alert"].lower() for r in rules()}  # and no runbook without a rule


def test_a_dead_credential_alert_stays_firing() -> None:
    """A gauge compared with 0, not increase() over a window that forgets."""
    (rule,) = [r for r in rules() if r["alert"] == "NotifierCredentialDown"]
    assert "increase(" not in rule["expr"]
    assert "rate(" not in rule["expr"]
    assert rule["expr"].strip().endswith("== 0")
    assert rule["labels"]["severity"] == "critical"
    targets = [r for r in rules() if "up" in parse_promql(r["expr"]).metrics]
    assert {r["alert"] for r in targets} == {"NotifierTargetDown", "NotifierTargetMissing"}


def test_chart_threshold_defaults_match_the_rules_file() -> None:
    thresholds = yaml.safe_load(VALUES.read_text())["prometheusRule"]["thresholds"]
    by_name = {r["alert"]: r for r in rules()}
    for name, value in thresholds.items():
        match = re.search(r"(?:>=|<=|>|<)\s*([0-9.eE+-]+)\s*$", by_name[name]["expr"])
        assert match, f"{name}: no final threshold the chart could set"
        assert float(match[1]) == float(value), name


PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None and os.environ.get("CI") != "true",  # CI installs it: never skip there
    reason="promtool not installed (Debian package 'prometheus'; scripts/install-tools.sh)",
)


@needs_promtool
def test_promtool_check_rules() -> None:
    assert PROMTOOL is not None
    result = subprocess.run(
        [PROMTOOL, "check", "rules", str(RULES)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(rules())} rules found" in result.stdout


@needs_promtool
def test_promtool_check_metrics_on_every_series() -> None:
    assert PROMTOOL is not None
    metrics = Metrics(CollectorRegistry())
    exercise_every_method(metrics)
    body, _ = metrics.render()
    result = subprocess.run(
        [PROMTOOL, "check", "metrics"],
        input=body,
        capture_output=True,
        timeout=60,
        check=False,
    )
    output = (result.stdout + result.stderr).decode()
    assert result.returncode == 0, output
    assert output.strip() == ""


@needs_promtool
def test_dashboard_queries_are_valid_promql(tmp_path: Path) -> None:
    """promtool parses every panel query once Grafana's variables are filled in."""
    assert PROMTOOL is not None
    grafana = {"$__rate_interval": "5m", "$job": ".*", "$credential": ".*", "$sink": ".*",
               "$namespace": ".*", "$cluster": ".*"}
    records = []
    for i, (where, expr) in enumerate(dashboard_queries()):
        for var, value in grafana.items():
            expr = expr.replace(var, value)
        assert "$" not in expr, f"{where}: unknown variable in {expr!r}"
        records.append({"record": f"dashboard:query_{i}", "expr": expr})
    path = tmp_path / "dashboard.rules.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": records}]}))
    result = subprocess.run(
        [PROMTOOL, "check", "rules", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
