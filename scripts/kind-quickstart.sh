#!/usr/bin/env bash
# mlcanary on a local kind cluster: Envoy Gateway (Gateway API), kube-prometheus-stack, the operator
# chart and examples/gateway-api.yaml. Needs docker, kind, kubectl and helm >= 3.8 on PATH, network
# access to the container registries and the venv from `make setup` (demo bundles are built with it).
# Never run in this project's CI (no cluster, no registry there): see docs/kind-quickstart.md.
#
#   scripts/kind-quickstart.sh            # create or reuse the cluster, install everything
#   scripts/kind-quickstart.sh delete     # delete the cluster
#
# Env: CLUSTER [mlcanary]  EXAMPLE [examples/gateway-api.yaml]
#      ENVOY_GATEWAY_VERSION [v1.3.2]  KUBE_PROMETHEUS_STACK_VERSION [69.8.2]
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"
CLUSTER=${CLUSTER:-mlcanary}
EXAMPLE=${EXAMPLE:-examples/gateway-api.yaml}
ENVOY_GATEWAY_VERSION=${ENVOY_GATEWAY_VERSION:-v1.3.2}
KUBE_PROMETHEUS_STACK_VERSION=${KUBE_PROMETHEUS_STACK_VERSION:-69.8.2}
PY=${PYTHON:-$REPO/.venv/bin/python}
VERSION=$(sed -n 's/^appVersion: *"\{0,1\}\([^"]*\)"\{0,1\}$/\1/p' charts/mlcanary/Chart.yaml)
CONTEXT="kind-$CLUSTER"
log() { printf '\n==> %s\n' "$*"; }

if [ "${1:-}" = delete ]; then
  kind delete cluster --name "$CLUSTER"
  exit 0
fi
for tool in docker kind kubectl helm; do
  command -v "$tool" >/dev/null || { echo "missing $tool on PATH" >&2; exit 1; }
done
[ -x "$PY" ] || { echo "no $PY: run 'make setup' first" >&2; exit 1; }

log "demo model bundles -> out/kind-bundles (served in-cluster by a file server)"
mkdir -p out/kind-bundles
"$PY" scripts/kind_quickstart_manifests.py versions "$EXAMPLE" | while read -r model version; do
  for v in "$version" "${version%.*}.$(( ${version##*.} + 1 ))"; do   # the example's version and the next
    [ -f "out/kind-bundles/$model/$v/manifest.json" ] && continue
    "$PY" -c 'import sys; from mlcanary_serving.testing import make_demo_bundle as m; m(sys.argv[1], version=sys.argv[2], name=sys.argv[3])' \
      "out/kind-bundles/$model/$v" "$v" "$model"
  done
done

log "kind cluster $CLUSTER"
if ! kind get clusters | grep -qx "$CLUSTER"; then
  config=$(mktemp)
  sed "s#hostPath: ./out/kind-bundles#hostPath: $REPO/out/kind-bundles#; s#^name: .*#name: $CLUSTER#" kind-config.yaml >"$config"
  kind create cluster --name "$CLUSTER" --config "$config" --wait 120s
  rm -f "$config"
fi
kubectl config use-context "$CONTEXT" >/dev/null

log "images mlcanary/operator:$VERSION and mlcanary/serving:$VERSION"
docker build -f operator/Dockerfile -t "mlcanary/operator:$VERSION" .
# serving-image/Dockerfile builds from a prepared context (no network inside the build): the
# Dockerfile, requirements.txt, the package and wheels downloaded for the image's own platform.
context=$(mktemp -d)
cp serving-image/Dockerfile serving-image/requirements.txt "$context/"
cp -r serving-image/mlcanary_serving "$context/"
docker run --rm --user "$(id -u):$(id -g)" -e HOME=/tmp -v "$context:/ctx" python:3.11-slim-bookworm \
  pip download --quiet --dest /ctx/wheels --requirement /ctx/requirements.txt
docker build -t "mlcanary/serving:$VERSION" "$context"
rm -rf "$context"
kind load docker-image --name "$CLUSTER" "mlcanary/operator:$VERSION" "mlcanary/serving:$VERSION"

log "Envoy Gateway $ENVOY_GATEWAY_VERSION (installs the Gateway API CRDs)"
helm upgrade --install eg oci://docker.io/envoyproxy/gateway-helm --version "$ENVOY_GATEWAY_VERSION" \
  --namespace envoy-gateway-system --create-namespace --wait --timeout 10m
"$PY" scripts/kind_quickstart_manifests.py gateway | kubectl apply -f -

log "kube-prometheus-stack $KUBE_PROMETHEUS_STACK_VERSION (Prometheus, Grafana, prometheus-operator)"
helm repo add prometheus-community https://prometheus-community.github.io/helm-charts >/dev/null
helm repo update prometheus-community >/dev/null
# Select every ServiceMonitor/PodMonitor/PrometheusRule, not only the release's own.
helm upgrade --install kube-prometheus-stack prometheus-community/kube-prometheus-stack \
  --version "$KUBE_PROMETHEUS_STACK_VERSION" --namespace monitoring --create-namespace \
  --set prometheus.prometheusSpec.serviceMonitorSelectorNilUsesHelmValues=false \
  --set prometheus.prometheusSpec.podMonitorSelectorNilUsesHelmValues=false \
  --set prometheus.prometheusSpec.ruleSelectorNilUsesHelmValues=false \
  --set alertmanager.enabled=false --wait --timeout 15m

log "mlcanary chart (CRD applied first: Helm never upgrades crds/)"
kubectl apply --server-side -f charts/mlcanary/crds/
helm upgrade --install mlcanary charts/mlcanary --namespace mlcanary-system --create-namespace \
  --set prometheus.url=http://prometheus-operated.monitoring:9090 \
  --set monitoring.operator.serviceMonitor.enabled=true \
  --set monitoring.serving.podMonitor.enabled=true \
  --set monitoring.prometheusRule.enabled=true \
  --set monitoring.dashboard.enabled=true \
  --wait --timeout 5m

log "bundle server and $EXAMPLE"
"$PY" scripts/kind_quickstart_manifests.py bundles | kubectl apply -f -
kubectl -n ml rollout status deployment/bundles --timeout 3m
"$PY" scripts/kind_quickstart_manifests.py example "$EXAMPLE" | kubectl apply -f -
kubectl -n ml wait modeldeployments --all --for=condition=Ready --timeout 10m
kubectl -n ml get modeldeployments

cat <<EOF

mlcanary is running on kind cluster $CLUSTER. Next (docs/kind-quickstart.md):
  kubectl -n envoy-gateway-system port-forward service/\$(kubectl -n envoy-gateway-system get service \\
      -l gateway.envoyproxy.io/owning-gateway-name=quickstart -o name | cut -d/ -f2) 8888:80 &
  # a canary: bump the version (a bundle for the next patch version was built too)
  kubectl -n ml get mdep -w
  kubectl -n monitoring port-forward service/kube-prometheus-stack-grafana 3000:80   # dashboard "mlcanary"
EOF
