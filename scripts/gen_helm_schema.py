"""Generate helm/notifier/values.schema.json: the chart's own keys plus the notifier config schema.

The ``config`` key is the notifier's ``config_json_schema()`` (from the pydantic models), its
definitions hoisted into the chart schema's ``$defs`` so that every ``#/$defs/...`` reference
keeps resolving. One deliberate difference: credentials, subscriptions and sinks are not
*required* at the top level, so the chart's own defaults (which cannot know the user's projects
or secrets) validate; NOTES.txt warns while they are missing and the notifier refuses to start.

Usage: python scripts/gen_helm_schema.py           (write the file)
       python scripts/gen_helm_schema.py --check   (exit 1 if the committed file differs)
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SCHEMA_PATH = ROOT / "helm" / "notifier" / "values.schema.json"
REGENERATE = "python scripts/gen_helm_schema.py"
CONFIG_DEF = "NotifierConfig"
# Top-level config keys the chart lets users leave out (the notifier itself requires them).
DEFERRED_REQUIRED = ("credentials", "subscriptions", "sinks")

JSON = dict[str, Any]
# Alerts whose final threshold the chart lets users set (prometheusRule.thresholds).
ALERT_THRESHOLDS = {
    "NotifierSubscriptionsVeryStale": "seconds since the stalest stream's last check",
    "NotifierUpstreamErrors": "share of a credential's upstream requests failing",
    "NotifierOutboxBacklogOld": "seconds the oldest webhook outbox event has waited",
    "NotifierOutboxBacklogVeryOld": "same, critical",
    "NotifierEventLoopLagging": "seconds the event loop runs its timers late",
    "NotifierClusterPartitionsUnowned": "work partitions expected to be owned "
                                        "(default: cluster.work_partitions)",
    "NotifierClusterRebalancing": "work partitions assigned in 30 minutes",
}
# Keys of the chart's `cluster:` that shape the workload; the others are the notifier's own
# cluster section (see _helpers.tpl, notifier.clusterChartKeys).
CLUSTER_CHART_KEYS = ("enabled", "podDisruptionBudget", "podAntiAffinity",
                      "antiAffinityTopologyKey", "cacheSizeLimit")


def _obj(description: str, properties: JSON | None = None, **extra: Any) -> JSON:
    """An object with a description; closed (additionalProperties false) when properties given."""
    schema: JSON = {"type": "object", "description": description}
    if properties is not None:
        schema["properties"] = properties
        schema["additionalProperties"] = False
    schema.update(extra)
    return schema


def _str(description: str, **extra: Any) -> JSON:
    return {"type": "string", "description": description, **extra}


def _bool(description: str) -> JSON:
    return {"type": "boolean", "description": description}


def _list(description: str, items: JSON | None = None) -> JSON:
    return {"type": "array", "description": description, "items": items or {"type": "object"}}


def _string_map(description: str) -> JSON:
    return {"type": "object", "description": description,
            "additionalProperties": {"type": "string"}}


K8S_NAME = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
PORT = {"type": "integer", "minimum": 1, "maximum": 65535}
PROBE = _obj("a Kubernetes probe (httpGet, periodSeconds, ...); {} disables it")
ABS_PATH = r"^/"


def chart_properties() -> JSON:
    """The chart's own values (everything but ``config``)."""
    return {
        "global": _obj("values shared with a parent chart (unused by this chart)"),
        "nameOverride": _str("overrides the chart name in resource names"),
        "fullnameOverride": _str("overrides the full resource name"),
        "namespaceOverride": _str("deploy into this namespace instead of the release's"),
        "replicaCount": {
            "type": "integer", "minimum": 0,
            "description": "1, or 0 to pause; more would poll twice and split the SQLite state "
                           "(with cluster.enabled: the Deployment's replicas, 2 or more)",
        },
        "image": _obj("the notifier image", {
            "repository": _str("image repository", minLength=1),
            "tag": _str("image tag (empty: the chart's appVersion)"),
            "pullPolicy": {"enum": ["Always", "IfNotPresent", "Never"],
                           "description": "image pull policy"},
        }, required=["repository"]),
        "imagePullSecrets": _list("image pull secrets", {
            "type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"],
        }),
        "serviceAccount": _obj("the pod's ServiceAccount", {
            "create": _bool("create a ServiceAccount"),
            "annotations": _string_map("annotations on the ServiceAccount"),
            "name": _str("its name (empty: generated, or 'default' when not created)"),
        }),
        "automountServiceAccountToken": _bool("mount a Kubernetes API token in the pod"),
        "statefulSetAnnotations": _string_map("annotations on the StatefulSet (the Deployment "
                                              "in cluster mode)"),
        "podAnnotations": _string_map("annotations on the pod"),
        "podLabels": _string_map("labels on the pod"),
        "podSecurityContext": _obj("the pod's securityContext"),
        "securityContext": _obj("the container's securityContext"),
        "containerPort": {**PORT, "description": "port of /metrics, /healthz, /readyz in the pod"},
        "listenHost": _str("address the metrics server binds (0.0.0.0, or :: for IPv6)",
                           minLength=1),
        "service": _obj("the Service with the named metrics port", {
            "type": {"enum": ["ClusterIP", "NodePort", "LoadBalancer"],
                     "description": "Service type"},
            "port": {**PORT, "description": "Service port"},
            "annotations": _string_map("annotations on the Service"),
            "labels": _string_map("labels on the Service"),
        }),
        "livenessProbe": PROBE,
        "readinessProbe": PROBE,
        "startupProbe": PROBE,
        "resources": _obj("the container's resources (requests, limits)"),
        "terminationGracePeriodSeconds": {
            "type": ["integer", "null"], "minimum": 1,
            "description": "null: config.shutdown_timeout + 10 s; else more than shutdown_timeout",
        },
        "persistence": _obj("the SQLite state volume", {
            "enabled": _bool("PersistentVolumeClaim (true) or emptyDir (false)"),
            "existingClaim": _str("use this claim instead of volumeClaimTemplates"),
            "storageClass": _str("storage class ('-': none; empty: the default)"),
            "accessModes": {"type": "array", "minItems": 1, "items": {
                "enum": ["ReadWriteOnce", "ReadWriteOncePod", "ReadWriteMany"]},
                "description": "access modes of the claim"},
            "size": _str("size of the claim", pattern=r"^[0-9]+(\.[0-9]+)?([EPTGMk]i?|m)?$"),
            "annotations": _string_map("annotations on the claim"),
            "mountPath": _str("mount path; state.path is <mountPath>/notifier.db",
                              pattern=ABS_PATH),
            "retentionPolicy": _obj("persistentVolumeClaimRetentionPolicy", {
                "whenDeleted": {"enum": ["Retain", "Delete"]},
                "whenScaled": {"enum": ["Retain", "Delete"]},
            }),
        }),
        "secrets": {
            "type": "object",
            "description": "file name -> value, created as a Secret and mounted at "
                           "secretsMountPath; reference them as <field>_file in config",
            "propertyNames": {"pattern": r"^[-._a-zA-Z0-9]+$"},
            "additionalProperties": {"type": "string", "minLength": 1},
        },
        "existingSecret": _str("an existing Secret to mount instead of `secrets`"),
        "secretsMountPath": _str("where the Secret's keys are mounted as files",
                                 pattern=ABS_PATH),
        "secretMounts": {
            "type": "array",
            "description": "more Secrets mounted read-only as directories (e.g. a Kafka client "
                           "certificate kept by cert-manager: tls.crt, tls.key, ca.crt)",
            "items": {
                "type": "object", "additionalProperties": False,
                "required": ["name", "secretName", "mountPath"],
                "properties": {
                    "name": _str("volume name", pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"),
                    "secretName": _str("the Secret", minLength=1),
                    "mountPath": _str("directory of its keys", pattern=ABS_PATH),
                    "items": _list("only these keys (key, path), as in a secret volume"),
                },
            },
        },
        "extraEnv": _list("extra environment variables (for ${VAR} in config)"),
        "envFrom": _list("extra envFrom sources"),
        "extraVolumes": _list("extra pod volumes"),
        "extraVolumeMounts": _list("extra container volume mounts"),
        "nodeSelector": _string_map("node selector"),
        "tolerations": _list("tolerations"),
        "affinity": _obj("affinity"),
        "priorityClassName": _str("priority class"),
        "config": {"$ref": f"#/$defs/{CONFIG_DEF}",
                   "description": "the notifier's YAML configuration (see config/example.yaml)"},
        "serviceMonitor": _obj("prometheus-operator ServiceMonitor", {
            "enabled": _bool("create it"),
            "additionalLabels": _string_map("extra labels (e.g. release)"),
            "interval": _str("scrape interval"),
            "scrapeTimeout": _str("scrape timeout"),
            "relabelings": _list("relabelings"),
            "metricRelabelings": _list("metric relabelings"),
        }),
        "prometheusRule": _obj("prometheus-operator PrometheusRule with files/alerts.rules.yaml", {
            "enabled": _bool("create it"),
            "additionalLabels": _string_map("extra labels (e.g. release)"),
            "job": _str("job label the rules select (empty: the Service name)"),
            "runbookBaseUrl": _str("URL of docs/runbooks.md; rules link #<alert>",
                                   pattern="^https?://"),
            "thresholds": _obj("the number each named rule compares against", {
                name: {"type": "number", "description": what, "minimum": 0}
                for name, what in ALERT_THRESHOLDS.items()
            }),
        }),
        "dashboard": _obj("Grafana dashboard ConfigMap for the Grafana sidecar", {
            "enabled": _bool("create it"),
            "labelKey": _str("label the sidecar watches", minLength=1),
            "labelValue": _str("value of that label"),
            "namespace": _str("namespace of the ConfigMap (empty: the release's)"),
            "annotations": _string_map("annotations (e.g. grafana_folder)"),
        }),
    }


def cluster_properties(notifier: JSON, defs: JSON) -> JSON:
    """The chart's ``cluster:``: its workload keys plus the notifier's cluster section, whose
    keys (from the config models) are rendered into config.cluster."""
    ref = notifier["properties"]["cluster"]
    options = ref.get("anyOf", [ref])
    (target,) = [o["$ref"] for o in options if "$ref" in o]
    settings = defs[target.removeprefix("#/$defs/")]
    clash = set(settings["properties"]) & set(CLUSTER_CHART_KEYS)
    if clash:
        raise SystemExit(f"the notifier's cluster section uses chart keys {sorted(clash)}")
    return _obj(
        "cluster mode: a Deployment of replicaCount (>= 2) replicas sharing the work through "
        "Kafka; every key but the chart's own becomes the notifier's config.cluster", {
            "enabled": _bool("run in cluster mode (needs replicaCount >= 2, bootstrap_servers)"),
            "podDisruptionBudget": _obj("PodDisruptionBudget of the replicas", {
                "enabled": _bool("create it"),
                "maxUnavailable": {"type": ["integer", "string"],
                                   "description": "replicas a voluntary eviction may take"},
                "minAvailable": {"type": ["integer", "string", "null"],
                                 "description": "or: replicas that must stay (wins when set)"},
            }),
            "podAntiAffinity": {"enum": ["soft", "hard", "none"],
                                "description": "spread replicas over nodes (ignored with "
                                               "`affinity`)"},
            "antiAffinityTopologyKey": _str("node label the anti-affinity spreads over",
                                            minLength=1),
            "cacheSizeLimit": _str("sizeLimit of the local state cache's emptyDir (empty: none)"),
            **settings["properties"],
        },
        **{"if": {"properties": {"enabled": {"const": True}}, "required": ["enabled"]},
           "then": {"required": ["bootstrap_servers"]}},
    )


# replicaCount follows the workload: 0-1 for the StatefulSet, >= 2 in cluster mode.
REPLICAS_BY_MODE = {
    "if": {"properties": {"cluster": {"properties": {"enabled": {"const": True}},
                                      "required": ["enabled"]}},
           "required": ["cluster"]},
    "then": {"properties": {"replicaCount": {"minimum": 2}}},
    "else": {"properties": {"replicaCount": {"maximum": 1}}},
}


def build_schema() -> JSON:
    """The chart's values schema, with the notifier config schema under $defs."""
    from notifier.config import config_json_schema

    notifier = copy.deepcopy(config_json_schema())
    notifier.pop("$schema", None)
    defs: JSON = notifier.pop("$defs", {})
    if CONFIG_DEF in defs:
        raise SystemExit(f"the config schema already defines {CONFIG_DEF}")
    notifier["required"] = [k for k in notifier.get("required", []) if k not in DEFERRED_REQUIRED]
    if not notifier["required"]:
        del notifier["required"]
    notifier["description"] = (
        (notifier.get("description") or "").rstrip(".")
        + ". Generated from notifier.config; credentials, subscriptions and sinks are required"
        " by the notifier but may be left out of the chart's values."
    )
    defs[CONFIG_DEF] = notifier
    properties = chart_properties()
    properties["cluster"] = cluster_properties(notifier, defs)
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "notifier Helm chart values",
        "description": f"Generated by scripts/gen_helm_schema.py; do not edit ({REGENERATE}).",
        "type": "object",
        "additionalProperties": False,
        "properties": properties,
        "allOf": [REPLICAS_BY_MODE],
        "$defs": dict(sorted(defs.items())),
    }


def render() -> str:
    """The file's exact text."""
    return json.dumps(build_schema(), indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if the file is out of date")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        current = SCHEMA_PATH.read_text(encoding="utf-8") if SCHEMA_PATH.exists() else ""
        if current != text:
            print(f"{SCHEMA_PATH.relative_to(ROOT)} is out of date: run {REGENERATE}",
                  file=sys.stderr)
            return 1
        return 0
    SCHEMA_PATH.write_text(text, encoding="utf-8")
    print(f"wrote {SCHEMA_PATH.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.exit(main())
