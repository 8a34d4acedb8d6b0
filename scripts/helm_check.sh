#!/usr/bin/env bash
# Lint, render and schema-check the Helm chart, offline:
#   1. helm lint --strict helm/notifier, with the defaults and with each ci/*-values.yaml;
#   2. helm template with the defaults and with each ci/*-values.yaml;
#   3. kubeconform -strict -summary on every rendered manifest, against
#      - the Kubernetes JSON schemas scripts/install-tools.sh puts in $NOTIFIER_CACHE/k8s-schemas
#        (from the kubernetes-validate wheel: kubeconform's default GitHub location is not
#        reachable here), and
#      - JSON schemas for the ServiceMonitor and PrometheusRule CRDs, converted here from the
#        CRDs shipped in the prometheus-operator Go module (fetched once with `go mod download`
#        through the Go module proxy, cached in $NOTIFIER_CACHE). Without go or the proxy those
#        two kinds are skipped (-skip), loudly; everything else is still checked.
# A kind with no schema at all is an error (no -ignore-missing-schemas).
#
# Env: NOTIFIER_CACHE (default ~/.cache/notifier), PROMETHEUS_OPERATOR_VERSION, PYTHON,
#      HELM_CHECK_KEEP=DIR (keep the rendered manifests there).
# Needs: helm, kubeconform and the k8s schemas (bash scripts/install-tools.sh).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
# shellcheck source=scripts/lib.sh
. "$HERE/lib.sh"

CHART="$ROOT/helm/notifier"
PYTHON="${PYTHON:-python3}"
PROMETHEUS_OPERATOR_VERSION="${PROMETHEUS_OPERATOR_VERSION:-v0.85.0}"
K8S_SCHEMAS="$NOTIFIER_CACHE/k8s-schemas"
CRD_SCHEMAS="$NOTIFIER_CACHE/crd-schemas/prometheus-operator-$PROMETHEUS_OPERATOR_VERSION"
export PATH="$NOTIFIER_BIN:$PATH"

have helm || die "helm not found (bash scripts/install-tools.sh)"
have kubeconform || die "kubeconform not found (bash scripts/install-tools.sh)"
[ -d "$K8S_SCHEMAS/master-standalone-strict" ] \
    || die "no Kubernetes JSON schemas in $K8S_SCHEMAS (bash scripts/install-tools.sh)"

# --- CRD schemas (ServiceMonitor, PrometheusRule) ------------------------------------------------
# Laid out for the kubeconform location "$CRD_SCHEMAS/{{ .Group }}/{{ .ResourceKind }}_{{ .ResourceAPIVersion }}.json".
crd_schemas() {
    local want="$CRD_SCHEMAS/monitoring.coreos.com/servicemonitor_v1.json"
    [ -f "$want" ] && [ -f "$CRD_SCHEMAS/monitoring.coreos.com/prometheusrule_v1.json" ] && return 0
    have go || { msg "go not found: cannot fetch the prometheus-operator CRDs"; return 1; }
    local dir tmp
    tmp="$(mktemp -d)"
    msg "fetching the prometheus-operator $PROMETHEUS_OPERATOR_VERSION CRDs (Go module proxy)"
    dir="$(cd "$tmp" && GOMODCACHE="$NOTIFIER_CACHE/gomod" GOFLAGS=-modcacherw \
        go mod download -json "github.com/prometheus-operator/prometheus-operator@$PROMETHEUS_OPERATOR_VERSION" \
        | "$PYTHON" -c 'import json, sys; print(json.load(sys.stdin)["Dir"])')" \
        || { rm -rf "$tmp"; msg "go mod download failed"; return 1; }
    rm -rf "$tmp"
    "$PYTHON" - "$dir/example/prometheus-operator-crd" "$CRD_SCHEMAS" <<'PY' >&2 || return 1
"""CRD openAPIV3Schema -> strict JSON schema, as kubeconform's openapi2jsonschema.py does."""
import json, os, sys
import yaml

src, out = sys.argv[1], sys.argv[2]

def strict(node):
    if isinstance(node, list):
        return [strict(n) for n in node]
    if not isinstance(node, dict):
        return node
    node = {k: strict(v) for k, v in node.items()}
    if node.pop("x-kubernetes-int-or-string", False):
        node.pop("type", None)
        node["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if node.pop("nullable", False) and isinstance(node.get("type"), str):
        node["type"] = [node["type"], "null"]
    if ("properties" in node and "additionalProperties" not in node
            and not node.get("x-kubernetes-preserve-unknown-fields")):
        node["additionalProperties"] = False
    return node

for name in ("monitoring.coreos.com_servicemonitors.yaml",
             "monitoring.coreos.com_prometheusrules.yaml"):
    with open(os.path.join(src, name)) as fh:
        crd = yaml.safe_load(fh)
    group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"].lower()
    os.makedirs(os.path.join(out, group), exist_ok=True)
    for version in crd["spec"]["versions"]:
        schema = strict(version["schema"]["openAPIV3Schema"])
        path = os.path.join(out, group, f"{kind}_{version['name']}.json")
        with open(path + ".tmp", "w") as fh:
            json.dump(schema, fh)
        os.replace(path + ".tmp", path)
        print(f"CRD schema {path}")
PY
}

# --- lint and render -------------------------------------------------------------------------------
work="${HELM_CHECK_KEEP:-}"
if [ -z "$work" ]; then
    work="$(mktemp -d)"
    trap 'rm -rf "$work"' EXIT
fi
mkdir -p "$work"

scenarios=("defaults")
for f in "$CHART"/ci/*-values.yaml; do
    [ -e "$f" ] || die "no ci/*-values.yaml in $CHART"
    scenarios+=("$f")
done

rendered=()
for s in "${scenarios[@]}"; do
    if [ "$s" = defaults ]; then
        name="defaults"; args=()
    else
        name="$(basename "$s" .yaml)"; args=(-f "$s")
    fi
    msg "helm lint --strict ($name)"
    helm lint --strict --quiet "$CHART" "${args[@]}" >&2 || die "helm lint failed ($name)"
    msg "helm template ($name)"
    helm template notifier "$CHART" --namespace notifier "${args[@]}" > "$work/$name.yaml" \
        || die "helm template failed ($name)"
    rendered+=("$work/$name.yaml")
done

# --- kubeconform -------------------------------------------------------------------------------------
locations=(-schema-location "$K8S_SCHEMAS")
if crd_schemas; then
    locations+=(-schema-location "$CRD_SCHEMAS/{{ .Group }}/{{ .ResourceKind }}_{{ .ResourceAPIVersion }}.json")
else
    msg "WARNING: no CRD schemas: ServiceMonitor and PrometheusRule are NOT validated"
    locations+=(-skip "ServiceMonitor,PrometheusRule")
fi
msg "kubeconform -strict (${#rendered[@]} renderings)"
kubeconform -strict -summary "${locations[@]}" "${rendered[@]}"
