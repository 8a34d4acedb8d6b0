#!/usr/bin/env bash
# Install the non-Python tools CI needs, idempotently (anything already present is skipped):
#   - promtool + kcat from Debian packages (prometheus, kcat); java + mvn too if missing
#     (scripts/kafka.sh needs them);
#   - helm and kubeconform, built with `go install` into $NOTIFIER_CACHE/bin, with the same
#     version ldflags as upstream release builds (so `helm version` and .Capabilities.KubeVersion
#     are right);
#   - offline Kubernetes JSON schemas for kubeconform (there is no network to fetch them at run
#     time), taken from the kubernetes-validate wheel on PyPI, in $NOTIFIER_CACHE/k8s-schemas;
#   - the AsyncAPI 3.0.0 JSON schema (npm @asyncapi/specs) in $NOTIFIER_CACHE/asyncapi.
#
# Env: NOTIFIER_CACHE (default ~/.cache/notifier), HELM_VERSION, KUBECONFORM_VERSION,
#      K8S_SCHEMA_VERSIONS (space separated, first one is also "master"), PYTHON.
# Afterwards: export PATH="${NOTIFIER_CACHE:-$HOME/.cache/notifier}/bin:$PATH"
#             kubeconform -strict -schema-location "$NOTIFIER_CACHE/k8s-schemas" [-kubernetes-version 1.33.0]
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=scripts/lib.sh
. "$HERE/lib.sh"

HELM_VERSION="${HELM_VERSION:-v3.22.0}"
KUBECONFORM_VERSION="${KUBECONFORM_VERSION:-v0.7.0}"
K8S_VALIDATE_VERSION="${K8S_VALIDATE_VERSION:-1.37.0}"
K8S_SCHEMA_VERSIONS="${K8S_SCHEMA_VERSIONS:-1.33.0}"
PYTHON="${PYTHON:-python3}"
SCHEMA_DIR="$NOTIFIER_CACHE/k8s-schemas"

mkdir -p "$NOTIFIER_BIN"
export PATH="$NOTIFIER_BIN:$PATH"

# --- Debian packages -------------------------------------------------------------------------
missing=()
have promtool || missing+=(prometheus)
have kcat || missing+=(kcat)
# The Kafka broker script needs a JDK 17+ runtime and Maven; the polyglot image ships both,
# but install them if a bare machine lacks them.
have java || missing+=(openjdk-17-jre-headless)
have mvn || missing+=(maven)
if [ "${#missing[@]}" -gt 0 ]; then
    apt_install "${missing[@]}"
else
    msg "apt packages already present (promtool, kcat, java, mvn)"
fi

# --- Go tools ----------------------------------------------------------------------------------
go_install() {
    # go_install PKG@VERSION [LDFLAGS]
    have go || die "go is required to build $1"
    msg "go install $1 (this can take a few minutes)"
    GOBIN="$NOTIFIER_BIN" CGO_ENABLED=0 GOFLAGS="${GOFLAGS:--buildvcs=false}" \
        go install -trimpath -ldflags "-s -w ${2:-}" "$1" >&2 || die "go install $1 failed"
}

if [ -x "$NOTIFIER_BIN/helm" ] \
        && [ "$("$NOTIFIER_BIN/helm" version --template '{{.Version}}' 2>/dev/null)" = "$HELM_VERSION" ]; then
    msg "helm $HELM_VERSION already present"
else
    have go || die "go is required to build helm"
    # Release builds set the Kubernetes version helm assumes from its client-go (v0.X -> 1.X).
    gomod="$(go mod download -json "helm.sh/helm/v3@$HELM_VERSION" \
        | "$PYTHON" -c 'import json, sys; print(json.load(sys.stdin)["GoMod"])')" \
        || die "cannot resolve helm.sh/helm/v3@$HELM_VERSION"
    cgo="$(sed -n 's/^[[:space:]]*k8s\.io\/client-go v0\.\([0-9]*\)\..*/\1/p' "$gomod" | head -1)"
    [ -n "$cgo" ] || die "cannot find the k8s.io/client-go version in $gomod"
    ld="-X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
    for p in helm.sh/helm/v3/pkg/lint/rules helm.sh/helm/v3/pkg/chartutil; do
        ld="$ld -X $p.k8sVersionMajor=1 -X $p.k8sVersionMinor=$cgo"
    done
    go_install "helm.sh/helm/v3/cmd/helm@$HELM_VERSION" "$ld"
fi

if [ -x "$NOTIFIER_BIN/kubeconform" ] \
        && [ "$("$NOTIFIER_BIN/kubeconform" -v 2>/dev/null)" = "$KUBECONFORM_VERSION" ]; then
    msg "kubeconform $KUBECONFORM_VERSION already present"
else
    go_install "github.com/yannh/kubeconform/cmd/kubeconform@$KUBECONFORM_VERSION" \
        "-X main.version=$KUBECONFORM_VERSION"
fi

# --- Kubernetes JSON schemas for kubeconform (offline) --------------------------------------------
# Laid out as kubeconform's default pattern expects under a local -schema-location:
#   <dir>/v<k8s version>-standalone[-strict]/<kind>-<group>-<version>.json  (+ master-standalone*)
# The wheel's "-local" schemas reference /api/_definitions.json under a kubernetes.io $id; here
# the $id is dropped and the refs made relative, so they resolve to the file beside them.
want_schemas=0
for v in $K8S_SCHEMA_VERSIONS; do
    [ -f "$SCHEMA_DIR/v$v-standalone-strict/_definitions.json" ] || want_schemas=1
done
if [ "$want_schemas" = 0 ]; then
    msg "k8s schemas ($K8S_SCHEMA_VERSIONS) already present"
else
    tmp="$(mktemp -d)"
    trap 'rm -rf "$tmp"' EXIT
    msg "fetching k8s JSON schemas (PyPI kubernetes-validate==$K8S_VALIDATE_VERSION wheel)"
    "$PYTHON" -m pip download -q --no-deps --only-binary=:all: -d "$tmp" \
        "kubernetes-validate==$K8S_VALIDATE_VERSION" >&2 || die "pip download kubernetes-validate failed"
    # shellcheck disable=SC2086  # K8S_SCHEMA_VERSIONS is a word list
    "$PYTHON" - "$tmp"/kubernetes_validate-*.whl "$SCHEMA_DIR" $K8S_SCHEMA_VERSIONS <<'PY' >&2 \
        || die "extracting k8s schemas failed"
import json, os, shutil, sys, zipfile

wheel, out, versions = sys.argv[1], sys.argv[2], sys.argv[3:]
prefix = "kubernetes_validate/kubernetes-json-schema/"
with zipfile.ZipFile(wheel) as zf:
    names = zf.namelist()
    for i, ver in enumerate(versions):
        for strict in ("", "-strict"):
            src = f"{prefix}v{ver}-local{strict}/"
            files = [n for n in names if n.startswith(src) and n.endswith(".json")]
            if not files:
                sys.exit(f"no schemas for Kubernetes {ver} in {os.path.basename(wheel)}")
            dest = os.path.join(out, f"v{ver}-standalone{strict}")
            tmpdest = dest + ".tmp"
            shutil.rmtree(tmpdest, ignore_errors=True)
            os.makedirs(tmpdest)
            for name in files:
                text = zf.read(name).decode()
                text = text.replace('"/api/_definitions.json#', '"_definitions.json#')
                doc = json.loads(text)
                doc.pop("$id", None)
                with open(os.path.join(tmpdest, os.path.basename(name)), "w") as fh:
                    json.dump(doc, fh)
            shutil.rmtree(dest, ignore_errors=True)
            os.rename(tmpdest, dest)
            if i == 0:
                link = os.path.join(out, f"master-standalone{strict}")
                if os.path.islink(link) or os.path.exists(link):
                    os.remove(link)
                os.symlink(os.path.basename(dest), link)
        print(f"k8s {ver}: {len(files)} schemas")
PY
fi

# --- AsyncAPI 3.0 JSON schema (validates docs/asyncapi.yaml in the tests) ----------------------
# From the npm package @asyncapi/specs (the AsyncAPI initiative's own schemas), checksum pinned.
ASYNCAPI_SPECS_VERSION="${ASYNCAPI_SPECS_VERSION:-6.11.1}"
ASYNCAPI_SPECS_SHA256="${ASYNCAPI_SPECS_SHA256:-01af8744dc33c0c7eb2e908f6a955319ee58b70ecadc9387d1aeb16c0cd28928}"
ASYNCAPI_SCHEMA="$NOTIFIER_CACHE/asyncapi/3.0.0.json"
if [ -f "$ASYNCAPI_SCHEMA" ]; then
    msg "AsyncAPI 3.0.0 schema already present"
else
    have curl || apt_install curl ca-certificates
    tmp_aa="$(mktemp -d)"
    url="https://registry.npmjs.org/@asyncapi/specs/-/specs-$ASYNCAPI_SPECS_VERSION.tgz"
    msg "fetching $url"
    curl -fsSL --retry 3 -o "$tmp_aa/specs.tgz" "$url" || die "download of @asyncapi/specs failed"
    echo "$ASYNCAPI_SPECS_SHA256  $tmp_aa/specs.tgz" | sha256sum -c --quiet - >&2 \
        || die "@asyncapi/specs $ASYNCAPI_SPECS_VERSION: checksum mismatch"
    tar -xzf "$tmp_aa/specs.tgz" -C "$tmp_aa" 'package/schemas/3.0.0-without-$id.json' \
        || die "no 3.0.0 schema in @asyncapi/specs $ASYNCAPI_SPECS_VERSION"
    mkdir -p "$(dirname "$ASYNCAPI_SCHEMA")"
    mv "$tmp_aa/package/schemas/3.0.0-without-\$id.json" "$ASYNCAPI_SCHEMA"
    rm -rf "$tmp_aa"
fi

# --- Report ------------------------------------------------------------------------------------
for t in promtool kcat helm kubeconform java mvn; do
    have "$t" || die "$t is still missing"
    printf '%-12s %s\n' "$t" "$(command -v "$t")"
done
printf '%-12s %s\n' "asyncapi" "$ASYNCAPI_SCHEMA"
printf '%-12s %s\n' "k8s-schemas" "$SCHEMA_DIR (kubeconform -schema-location \"$SCHEMA_DIR\")"
echo "export PATH=\"$NOTIFIER_BIN:\$PATH\""
