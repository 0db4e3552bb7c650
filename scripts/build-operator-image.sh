#!/usr/bin/env bash
# Build the operator image offline and prove it runs read-only as non-root and answers its health
# endpoint against an API server.
#
#   scripts/build-operator-image.sh            # build + smoke test (first run ~2-4 min)
#
# Steps: the Docker engine and base image as for the serving image (scripts/docker-engine.sh); build
# the mlcanary wheel and `pip download` its runtime wheels on the host; `docker build --network=none`
# of operator/Dockerfile; start the Kubernetes API emulator on 127.0.0.1 with the CRD; run the
# container --read-only --user 10001:10001 with a tmpfs /tmp on --network=host, the emulator's
# kubeconfig mounted read-only; wait for 200 on Kopf's /healthz and check the user, the read-only
# root and that the operator saw the CRD. Prints the image size and the cold start (from `docker run`
# to the first 200 on /healthz).
#
# Env: IMAGE [mlcanary/operator:dev]  BASE_IMAGE [local/debian-py:bookworm]
#      DOCKER_ROOT [/var/lib/mlcanary-docker]  DOCKER_SOCK [/tmp/mlcanary-docker.sock]
#      WORK [/tmp/mlcanary-operator-image]  KEEP_DOCKERD [0]  PYTHON [.venv/bin/python or python3]
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
IMAGE=${IMAGE:-mlcanary/operator:dev}
WORK=${WORK:-/tmp/mlcanary-operator-image}
# shellcheck source=scripts/docker-engine.sh
. "$REPO/scripts/docker-engine.sh"
CONTAINER=
EMULATOR=
cleanup() {
  [ -n "$CONTAINER" ] && "$DOCKER_BIN" rm -f "$CONTAINER" >/dev/null 2>&1 || true
  [ -n "$EMULATOR" ] && kill "$EMULATOR" 2>/dev/null || true
  docker_engine_stop
}
trap cleanup EXIT
mkdir -p "$WORK"
docker_engine_start
docker_base_image

# ---------------------------------------------------------------- build context
# The layout operator/Dockerfile expects from the repository root, plus operator/wheels: every wheel
# the install needs, so that the build runs without network.
CTX=$WORK/context
log "build context $CTX (the mlcanary wheel and pip download of its dependencies on the host)"
rm -rf "$CTX/operator/mlcanary" "$CTX/operator/wheels"/mlcanary-*.whl
mkdir -p "$CTX/operator/wheels"
cp "$REPO/pyproject.toml" "$REPO/README.md" "$CTX/"
cp "$REPO/operator/Dockerfile" "$CTX/operator/"
cp -r "$REPO/operator/mlcanary" "$CTX/operator/"
find "$CTX/operator/mlcanary" -name __pycache__ -prune -exec rm -rf {} +
"$PYTHON" -m pip wheel -q --no-deps -w "$CTX/operator/wheels" "$CTX" >"$WORK/pip.log" 2>&1 || {
  tail -20 "$WORK/pip.log" >&2; echo "pip wheel failed" >&2; exit 1; }
"$PYTHON" -m pip download -q --only-binary=:all: --python-version 3.11 --implementation cp \
  --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 \
  -d "$CTX/operator/wheels" "$CTX"/operator/wheels/mlcanary-*.whl >>"$WORK/pip.log" 2>&1 || {
  tail -20 "$WORK/pip.log" >&2; echo "pip download failed" >&2; exit 1; }

log "docker build --network=none -f operator/Dockerfile -t $IMAGE"
"$DOCKER_BIN" build --network=none --build-arg BASE_IMAGE="$BASE_IMAGE" -f "$CTX/operator/Dockerfile" \
  -t "$IMAGE" "$CTX" >"$WORK/build.log" 2>&1 || { tail -30 "$WORK/build.log"; exit 1; }
log "image size: $("$DOCKER_BIN" image inspect -f '{{.Size}}' "$IMAGE" | awk '{printf "%.0f MB", $1/1e6}')"

# ---------------------------------------------------------------- smoke test
log "API emulator on 127.0.0.1 with the CRD"
rm -f "$WORK/kubeconfig"
"$PYTHON" -m kube_emulator --port 0 --kubeconfig "$WORK/kubeconfig" \
  --apply "$REPO/crds/modeldeployments.mlcanary.io.yaml" >"$WORK/emulator.log" 2>&1 &
EMULATOR=$!
for _ in $(seq 100); do [ -s "$WORK/kubeconfig" ] && break; sleep 0.2; done
[ -s "$WORK/kubeconfig" ] || { tail -20 "$WORK/emulator.log"; echo "the emulator did not start" >&2; exit 1; }
chmod a+r "$WORK/kubeconfig"
PORTS=$("$PYTHON" -c 'import socket
ports = []
for _ in range(2):
    s = socket.socket(); s.bind(("127.0.0.1", 0)); ports.append(s); 
print(*(s.getsockname()[1] for s in ports))')
read -r HEALTH_PORT METRICS_PORT <<<"$PORTS"
CONTAINER=mlcanary-operator-smoke-$$
log "docker run --read-only --user 10001:10001 --tmpfs /tmp --network=host (health on 127.0.0.1:$HEALTH_PORT)"
STARTED=$(date +%s.%N)
"$DOCKER_BIN" run -d --name "$CONTAINER" --network=host --read-only --user 10001:10001 \
  --tmpfs /tmp:rw,size=64m -v "$WORK/kubeconfig:/kube/config:ro" -e KUBECONFIG=/kube/config \
  -e MLCANARY_METRICS_PORT="$METRICS_PORT" -e MLCANARY_METRICS_HOST=127.0.0.1 \
  "$IMAGE" run --liveness="http://127.0.0.1:$HEALTH_PORT/healthz" >/dev/null
fail() { echo "SMOKE TEST FAILED: $*" >&2; "$DOCKER_BIN" logs "$CONTAINER" 2>&1 | tail -30 >&2; exit 1; }
COLD_START=$(first_200_after "$CONTAINER" "http://127.0.0.1:$HEALTH_PORT/healthz" "$STARTED") || fail "no 200 on /healthz ($COLD_START)"
log "cold start: ${COLD_START}s from docker run to the first 200 on /healthz"
HEALTH=$(curl -fsS "http://127.0.0.1:$HEALTH_PORT/healthz")
echo "healthz: $HEALTH"
# Read the whole body first: `curl | grep -q` fails under pipefail when grep stops at the first match
# and curl cannot finish writing (curl: (23) Failed writing body).
METRICS=$(curl -fsS "http://127.0.0.1:$METRICS_PORT/metrics") || fail "no answer on /metrics"
grep -q '^mlcanary_' <<<"$METRICS" || fail "no mlcanary_ series on /metrics"
[ "$("$DOCKER_BIN" exec "$CONTAINER" id -u)" = 10001 ] || fail "container runs as root"
if "$DOCKER_BIN" exec "$CONTAINER" sh -c 'touch /opt/x' 2>/dev/null; then fail "root filesystem is writable"; fi
for module in mlcanary_serving kube_emulator mlcanary_local sklearn; do
  if "$DOCKER_BIN" exec "$CONTAINER" python -c "import $module" 2>/dev/null; then fail "$module is in the operator image"; fi
done
"$DOCKER_BIN" stop -t 10 "$CONTAINER" >/dev/null
log "OK: image $IMAGE built, answered /healthz and /metrics as uid 10001 on a read-only root"
