"""The Helm chart rendered by the real helm: configs pass check-config, a safe pod, monitoring.

Every ci/*-values.yaml scenario is rendered with `helm template`; the notifier config in its
ConfigMap is written out with the secret files it references (the /etc/notifier and
/var/lib/notifier paths mapped under tmp_path) and checked with `python -m notifier
check-config`. scripts/helm_check.sh (helm lint + kubeconform -strict) runs as one test.
Skipped only when helm is missing and CI is not "true".
"""

from __future__ import annotations

import base64
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from notifier.durations import parse_duration

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "notifier"
CI_VALUES = sorted((CHART / "ci").glob("*-values.yaml"))
# The single-process scenarios (a StatefulSet); cluster mode's: test_helm_cluster.py.
SINGLE_VALUES = [p for p in CI_VALUES if not p.stem.startswith("cluster")]
CACHE_BIN = Path(os.environ.get("NOTIFIER_CACHE", Path.home() / ".cache" / "notifier")) / "bin"
RELEASE = "notifier"
FULLNAME = "notifier"  # the release name contains the chart name
SECRETS_DIR = "/etc/notifier/secrets"
STATE_DIR = "/var/lib/notifier"
# Stands in for a key of an existingSecret the chart does not render (valid Standard Webhooks).
FAKE_WEBHOOK_SECRET = "whsec_" + base64.b64encode(b"x" * 32).decode()


def _tool(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    cached = CACHE_BIN / name
    return str(cached) if cached.exists() else None


HELM = _tool("helm")
pytestmark = pytest.mark.skipif(
    HELM is None and os.environ.get("CI") != "true",
    reason="helm is not installed (bash scripts/install-tools.sh); with CI=true this fails",
)


def helm_template(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    assert HELM, "helm is required (bash scripts/install-tools.sh)"
    proc = subprocess.run(
        [HELM, "template", RELEASE, str(CHART), "--namespace", "notifier", *args],
        capture_output=True, text=True, timeout=60, check=False,
    )
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


def render(*args: str) -> dict[tuple[str, str], dict[str, Any]]:
    """{(kind, name): manifest} of one rendering."""
    docs = yaml.safe_load_all(helm_template(*args).stdout)
    return {(d["kind"], d["metadata"]["name"]): d for d in docs if d}


def statefulset(manifests: dict[tuple[str, str], dict[str, Any]]) -> dict[str, Any]:
    return manifests[("StatefulSet", FULLNAME)]


def workload(manifests: dict[tuple[str, str], dict[str, Any]]) -> dict[str, Any]:
    """The StatefulSet, or the Deployment of cluster mode."""
    (found,) = [m for (kind, _), m in manifests.items() if kind in ("StatefulSet", "Deployment")]
    return found


def container(manifests: dict[tuple[str, str], dict[str, Any]]) -> dict[str, Any]:
    (c,) = workload(manifests)["spec"]["template"]["spec"]["containers"]
    return c


def values_of(path: Path) -> dict[str, Any]:
    return yaml.safe_load(path.read_text()) or {}


def _map_paths(node: Any, tmp: Path) -> Any:
    """Every absolute /etc/notifier or /var/lib/notifier path, moved under tmp."""
    if isinstance(node, dict):
        return {k: _map_paths(v, tmp) for k, v in node.items()}
    if isinstance(node, list):
        return [_map_paths(v, tmp) for v in node]
    if isinstance(node, str) and node.startswith(("/etc/notifier/", f"{STATE_DIR}/")):
        return str(tmp / node.lstrip("/"))
    return node


def _secret_refs(config: dict[str, Any]) -> dict[str, str]:
    """{path under SECRETS_DIR: config key} for every string that points into the secret mount."""
    refs = {}
    for section in ("credentials", "sinks"):
        for item in config.get(section, []):
            for key, value in item.items():
                if isinstance(value, str) and value.startswith(f"{SECRETS_DIR}/"):
                    refs[value] = key
    return refs


@pytest.mark.parametrize("values", CI_VALUES, ids=lambda p: p.stem)
def test_rendered_config_passes_check_config(values: Path, tmp_path: Path) -> None:
    manifests = render("-f", str(values))
    text = manifests[("ConfigMap", FULLNAME)]["data"]["config.yaml"]
    config = yaml.safe_load(text)
    # What the chart forces: reachable metrics, state on the volume.
    port = container(manifests)["ports"][0]
    assert port["name"] == "metrics"
    assert config["metrics"] == {"enabled": True, "listen": f"0.0.0.0:{port['containerPort']}"}
    assert config["state"]["path"] == f"{STATE_DIR}/notifier.db"

    secret = manifests.get(("Secret", FULLNAME))
    data = (secret or {}).get("data", {})
    chart_files = {k: base64.b64decode(v).decode() for k, v in data.items()}
    existing = values_of(values).get("existingSecret")
    for path, key in _secret_refs(config).items():
        name = path.removeprefix(f"{SECRETS_DIR}/")
        if existing:
            content = FAKE_WEBHOOK_SECRET if key in ("secret_file", "secrets_file") else "x\n"
        else:
            assert name in chart_files, f"{key} reads {path}, which the chart's Secret lacks"
            content = chart_files[name]
        target = tmp_path / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(content)
    # ${VAR} references resolve from the container's env, as in the pod.
    env = dict(os.environ)
    env.update({e["name"]: e["value"] for e in container(manifests).get("env", []) if "value" in e})
    workdir = tmp_path / container(manifests)["workingDir"].lstrip("/")
    workdir.mkdir(parents=True, exist_ok=True)
    config_file = tmp_path / "config.yaml"
    config_file.write_text(yaml.safe_dump(_map_paths(config, tmp_path)))

    proc = subprocess.run(
        [sys.executable, "-m", "notifier", "check-config", "--config", str(config_file)],
        capture_output=True, text=True, cwd=workdir, env=env, timeout=60, check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert f"{config_file}: OK" in proc.stdout


@pytest.mark.parametrize("values", SINGLE_VALUES, ids=lambda p: p.stem)
def test_statefulset_is_one_safe_pod_with_state_on_a_claim(values: Path) -> None:
    manifests = render("-f", str(values))
    sts = statefulset(manifests)
    pod = sts["spec"]["template"]
    c = container(manifests)
    assert sts["spec"]["replicas"] == 1
    assert len(pod["metadata"]["annotations"]["checksum/config"]) == 64
    assert c["args"] == ["run", "--config", "/etc/notifier/config/config.yaml"]
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    assert c["startupProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert c["resources"]["requests"]
    assert c["resources"]["limits"]["memory"]

    sc, psc = c["securityContext"], pod["spec"]["securityContext"]
    assert sc["runAsNonRoot"] is True
    assert psc["runAsNonRoot"] is True
    assert sc["runAsUser"] >= 10001
    assert psc["runAsUser"] == sc["runAsUser"]
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert sc["seccompProfile"]["type"] == psc["seccompProfile"]["type"] == "RuntimeDefault"
    assert pod["spec"]["automountServiceAccountToken"] is False

    mounts = {m["name"]: m for m in c["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    assert mounts["tmp"]["mountPath"] == "/tmp"
    assert volumes["tmp"] == {"name": "tmp", "emptyDir": {}}
    assert mounts["state"]["mountPath"] == STATE_DIR == c["workingDir"]
    assert "state" not in volumes  # from the claim template, not a pod volume
    (claim,) = sts["spec"]["volumeClaimTemplates"]
    assert claim["metadata"]["name"] == "state"
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert mounts["secrets"]["mountPath"] == SECRETS_DIR
    assert mounts["secrets"]["readOnly"] is True
    expected_secret = values_of(values).get("existingSecret") or FULLNAME
    assert volumes["secrets"]["secret"]["secretName"] == expected_secret

    shutdown = parse_duration(values_of(values).get("config", {}).get("shutdown_timeout", 20))
    assert pod["spec"]["terminationGracePeriodSeconds"] == math.ceil(shutdown) + 10
    service = manifests[("Service", FULLNAME)]
    assert service["spec"]["ports"][0]["targetPort"] == "metrics"
    assert service["spec"]["selector"] == sts["spec"]["selector"]["matchLabels"]


def test_config_and_secret_changes_roll_the_pod() -> None:
    base = ["-f", str(CHART / "ci" / "default-values.yaml")]
    annotations = [
        statefulset(render(*base, *extra))["spec"]["template"]["metadata"]["annotations"]
        for extra in ([], ["--set", "config.poll.interval=45s"],
                      ["--set", "secrets.aps-refresh-token=another"])
    ]
    assert annotations[1]["checksum/config"] != annotations[0]["checksum/config"]
    assert annotations[1]["checksum/secret"] == annotations[0]["checksum/secret"]
    assert annotations[2]["checksum/secret"] != annotations[0]["checksum/secret"]
    assert annotations[2]["checksum/config"] == annotations[0]["checksum/config"]


@pytest.mark.parametrize(
    ("shutdown", "explicit", "grace"),
    [("20s", None, 30), ("1m30s", None, 100), ("500ms", None, 11), ("2.5s", None, 13),
     ("7", None, 17), ("1h", None, 3610), ("45s", "120", 120)],
)
def test_grace_period_follows_shutdown_timeout(shutdown: str, explicit: str | None,
                                               grace: int) -> None:
    args = ["--set-string", f"config.shutdown_timeout={shutdown}"]
    if explicit:
        args += ["--set", f"terminationGracePeriodSeconds={explicit}"]
    sts = statefulset(render(*args))
    assert sts["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] == grace
    assert grace > parse_duration(shutdown)


def test_alert_rules_take_job_runbooks_and_thresholds_from_values() -> None:
    """Only the job selector, the runbook base and the named thresholds change; the Prometheus
    templates in the annotations are left alone."""
    manifests = render("-f", str(CHART / "ci" / "monitoring-values.yaml"),
                       "--set", "prometheusRule.job=prod-notifier",
                       "--set", "prometheusRule.runbookBaseUrl=https://git.example/ops/runbooks.md",
                       "--set", "prometheusRule.thresholds.NotifierOutboxBacklogOld=1200",
                       "--set-json", "prometheusRule.thresholds.NotifierUpstreamErrors=0.25")
    groups = manifests[("PrometheusRule", FULLNAME)]["spec"]["groups"]
    rules = {r["alert"]: r for g in groups for r in g["rules"]}
    source = yaml.safe_load((CHART / "files" / "alerts.rules.yaml").read_text())
    assert set(rules) == {r["alert"] for g in source["groups"] for r in g["rules"]}
    for name, rule in rules.items():
        assert 'job="notifier"' not in rule["expr"], name
        assert 'job="prod-notifier"' in rule["expr"], name
        assert rule["annotations"]["runbook_url"] == (
            f"https://git.example/ops/runbooks.md#{name.lower()}")
        assert "{{ $labels." in rule["annotations"]["summary"] + rule["annotations"][
            "description"] or name in ("NotifierTargetMissing",), name
    assert rules["NotifierOutboxBacklogOld"]["expr"].rstrip().endswith("> 1200")
    assert rules["NotifierUpstreamErrors"]["expr"].rstrip().endswith("> 0.25")
    assert rules["NotifierOutboxBacklogVeryOld"]["expr"].rstrip().endswith("> 3600")  # default


def test_an_unknown_alert_threshold_is_refused() -> None:
    proc = helm_template("-f", str(CHART / "ci" / "monitoring-values.yaml"),
                         "--set", "prometheusRule.thresholds.NotifierSinkDown=2", check=False)
    assert proc.returncode != 0
    assert "NotifierSinkDown" in proc.stderr


def test_monitoring_objects_embed_the_observability_files() -> None:
    manifests = render("-f", str(CHART / "ci" / "monitoring-values.yaml"))
    service = manifests[("Service", FULLNAME)]
    monitor = manifests[("ServiceMonitor", FULLNAME)]
    assert monitor["metadata"]["labels"]["release"] == "prom"
    assert monitor["spec"]["endpoints"][0]["port"] == service["spec"]["ports"][0]["name"]
    assert monitor["spec"]["endpoints"][0]["path"] == "/metrics"
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert selector.items() <= service["metadata"]["labels"].items()

    rule = manifests[("PrometheusRule", FULLNAME)]
    alerts = yaml.safe_load((CHART / "files" / "alerts.rules.yaml").read_text())
    assert rule["spec"]["groups"] == alerts["groups"]  # verbatim: {{ $labels }} left for Prometheus

    board = manifests[("ConfigMap", f"{FULLNAME}-dashboard")]
    assert board["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert board["metadata"]["annotations"] == {"grafana_folder": "Notifier"}
    dashboard = json.loads(board["data"]["notifier-overview.json"])
    assert dashboard == json.loads((CHART / "files" / "dashboard.json").read_text())


def test_kafka_tls_material_is_mounted_read_only_from_secrets() -> None:
    """ci/kafka-mtls-values.yaml: the CA from the chart's Secret, the client certificate and
    key from a cert-manager Secret (secretMounts), every one read-only."""
    manifests = render("-f", str(CHART / "ci" / "kafka-mtls-values.yaml"))
    pod = statefulset(manifests)["spec"]["template"]["spec"]
    mounts = {m["name"]: m for m in container(manifests)["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert mounts["kafka-client-tls"] == {"name": "kafka-client-tls", "readOnly": True,
                                          "mountPath": "/etc/notifier/kafka-tls"}
    tls = volumes["kafka-client-tls"]["secret"]
    assert tls["secretName"] == "notifier-kafka-client"
    assert {i["key"] for i in tls["items"]} == {"tls.crt", "tls.key"}
    assert tls["defaultMode"] == 0o440
    assert mounts["secrets"]["readOnly"] is True
    secret = manifests[("Secret", FULLNAME)]["data"]
    assert "BEGIN CERTIFICATE" in base64.b64decode(secret["kafka-ca.pem"]).decode()
    config = yaml.safe_load(manifests[("ConfigMap", FULLNAME)]["data"]["config.yaml"])
    assert config["sinks"][0]["ssl_keyfile"] == "/etc/notifier/kafka-tls/tls.key"


def test_monitoring_objects_are_off_by_default() -> None:
    kinds = {kind for kind, _ in render()}
    assert kinds == {"ServiceAccount", "ConfigMap", "Service", "StatefulSet"}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--set", "replicaCount=2"], "replicaCount"),
        (["--set", "config.poll.intervall=30s"], "intervall"),
        (["--set", "config.sinks[0].name=x", "--set", "config.sinks[0].type=carrier-pigeon"],
         "/config/sinks/0/type"),
        (["--set", "persistence.size=lots"], "size"),
        (["--set", "unknownKey=1"], "unknownKey"),
        (["--set", "config.credentials[0].name=main",
          "--set", f"config.credentials[0].refresh_token_file={SECRETS_DIR}/missing"],
         'no key "missing"'),
        (["--set", "config.sinks[0].name=k", "--set", "config.sinks[0].type=kafka",
          "--set", "config.sinks[0].topic=t", "--set", "config.sinks[0].bootstrap_servers=k:9093",
          "--set", "config.sinks[0].security_protocol=SSL",
          "--set", f"config.sinks[0].ssl_cafile={SECRETS_DIR}/kafka-ca.pem"],
         'no key "kafka-ca.pem"'),
        (["--set", "existingSecret=mine", "--set", "secrets.a=b"], "not both"),
        (["--set", "terminationGracePeriodSeconds=20"], "longer than config.shutdown_timeout"),
    ],
    ids=["replicas", "config-typo", "sink-type", "size", "unknown-key", "missing-secret",
         "missing-kafka-ca", "two-secrets", "short-grace"],
)
def test_bad_values_are_refused_at_render_time(args: list[str], message: str) -> None:
    proc = helm_template(*args, check=False)
    assert proc.returncode != 0
    assert message in proc.stderr


def test_helm_check_script_lints_and_validates_every_scenario() -> None:
    assert HELM, "helm is required (bash scripts/install-tools.sh)"
    env = dict(os.environ, PATH=f"{CACHE_BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    proc = subprocess.run(
        ["bash", str(ROOT / "scripts" / "helm_check.sh")],
        capture_output=True, text=True, cwd=ROOT, env=env, timeout=110, check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    summary = proc.stdout.strip().splitlines()[-1]
    assert "Invalid: 0, Errors: 0" in summary, summary
    assert f"in {len(CI_VALUES) + 1} files" in summary  # the defaults and every ci scenario
    if "Skipped: 0" not in summary:  # no CRD schemas (no go / proxy): said so, loudly
        assert "ServiceMonitor and PrometheusRule are NOT validated" in proc.stderr
