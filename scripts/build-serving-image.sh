#!/usr/bin/env bash
# Build the serving image offline and prove it answers one prediction.
#
#   scripts/build-serving-image.sh            # build + smoke test (first run ~3-5 min)
#   VARIANT=onnx scripts/build-serving-image.sh   # the ONNX-only image: no scikit-learn/SciPy/joblib
#
# Steps (the engine and base image: scripts/docker-engine.sh): install docker.io/debootstrap if
# missing; start a private dockerd if none answers (stopped again at the end); make a Debian
# bookworm + python3 base image with debootstrap (cached as an image);
# `pip download` the serving wheels on the host; `docker build --network=none`; run the container
# --read-only with a tmpfs /tmp and a demo bundle mounted read-only on --network=host; POST one
# /predict and check the answer, the health check, the non-root user and the read-only root. Prints
# the image size and the cold start (from `docker run` to the first 200 on /readyz).
#
# Env: VARIANT [full] (onnx: requirements-onnx.txt, ONNX bundles only)
#      IMAGE [mlcanary/serving:dev, mlcanary/serving:dev-onnx for VARIANT=onnx]  BASE_IMAGE [local/debian-py:bookworm]
#      DOCKER_ROOT [/var/lib/mlcanary-docker]  DOCKER_SOCK [/tmp/mlcanary-docker.sock]
#      WORK [/tmp/mlcanary-image]  KEEP_DOCKERD [0]  PYTHON [.venv/bin/python or python3]
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VARIANT=${VARIANT:-full}
case "$VARIANT" in
  full) REQUIREMENTS=requirements.txt; IMAGE=${IMAGE:-mlcanary/serving:dev} ;;
  onnx) REQUIREMENTS=requirements-onnx.txt; IMAGE=${IMAGE:-mlcanary/serving:dev-onnx} ;;
  *) echo "VARIANT must be full or onnx" >&2; exit 2 ;;
esac
WORK=${WORK:-/tmp/mlcanary-image$([ "$VARIANT" = full ] || echo "-$VARIANT")}
# shellcheck source=scripts/docker-engine.sh
. "$REPO/scripts/docker-engine.sh"
CONTAINER=
cleanup() {
  [ -n "$CONTAINER" ] && "$DOCKER_BIN" rm -f "$CONTAINER" >/dev/null 2>&1 || true
  docker_engine_stop
}
trap cleanup EXIT
docker_engine_start
docker_base_image

# ---------------------------------------------------------------- build context
CTX=$WORK/context
log "build context $CTX (pip download of serving wheels on the host)"
rm -rf "$CTX/mlcanary_serving" "$CTX/Dockerfile" "$CTX"/requirements*.txt
mkdir -p "$CTX/wheels"
cp "$REPO/serving-image/Dockerfile" "$REPO/serving-image/$REQUIREMENTS" "$CTX/"
cp -r "$REPO/serving-image/mlcanary_serving" "$CTX/"
find "$CTX/mlcanary_serving" -name __pycache__ -prune -exec rm -rf {} +
"$PYTHON" -m pip download -q --only-binary=:all: --python-version 3.11 --implementation cp \
  --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 \
  -r "$CTX/$REQUIREMENTS" -d "$CTX/wheels" >"$WORK/pip.log" 2>&1 || {
  tail -20 "$WORK/pip.log" >&2; echo "pip download failed" >&2; exit 1; }

log "docker build --network=none -t $IMAGE"
"$DOCKER_BIN" build --network=none --build-arg BASE_IMAGE="$BASE_IMAGE" --build-arg REQUIREMENTS="$REQUIREMENTS" \
  -t "$IMAGE" "$CTX" >"$WORK/build.log" 2>&1 \
  || { tail -30 "$WORK/build.log"; exit 1; }
log "image size: $("$DOCKER_BIN" image inspect -f '{{.Size}}' "$IMAGE" | awk '{printf "%.0f MB", $1/1e6}')"

# ---------------------------------------------------------------- smoke test
BUNDLE=$WORK/bundle
rm -rf "$BUNDLE"
SHA=$(cd "$REPO" && PYTHONPATH="$REPO/serving-image" "$PYTHON" -c "
from mlcanary_serving.testing import make_demo_bundle
print(make_demo_bundle('$BUNDLE', version='1.0.0').manifest_sha256)" 2>/dev/null | tail -1)
chmod -R a+rX "$BUNDLE"
PORT=$("$PYTHON" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
CONTAINER=mlcanary-serving-smoke-$$
log "docker run --read-only --tmpfs /tmp --network=host on 127.0.0.1:$PORT"
STARTED=$(date +%s.%N)
"$DOCKER_BIN" run -d --name "$CONTAINER" --network=host --read-only --tmpfs /tmp:rw,size=256m \
  --health-interval=2s --health-start-period=30s \
  -v "$BUNDLE:/bundle:ro" -e MLCANARY_HOST=127.0.0.1 -e PORT="$PORT" \
  -e MLCANARY_BUNDLE_URI=/bundle -e MLCANARY_BUNDLE_SHA256="$SHA" -e MLCANARY_MODEL_VERSION=1.0.0 \
  "$IMAGE" >/dev/null

ROW=$(PYTHONPATH="$REPO/serving-image" "$PYTHON" -c "
import json; from mlcanary_serving.testing import demo_row; print(json.dumps({'features': demo_row(0)}))")
COLD_START=$(first_200_after "$CONTAINER" "http://127.0.0.1:$PORT/readyz" "$STARTED" || true)
log "cold start: ${COLD_START}s from docker run to the first 200 on /readyz"
ANSWER=$(curl -sS -D "$WORK/headers.txt" -H 'Content-Type: application/json' -d "$ROW" "http://127.0.0.1:$PORT/predict" || true)
echo "answer: $ANSWER"
fail() { echo "SMOKE TEST FAILED: $*" >&2; "$DOCKER_BIN" logs "$CONTAINER" 2>&1 | tail -30 >&2; exit 1; }
echo "$ANSWER" | grep -q '"prediction":0' || fail "unexpected answer"
echo "$ANSWER" | grep -q '"model_version":"1.0.0"' || fail "no model version in the body"
grep -qi '^x-model-version: 1.0.0' "$WORK/headers.txt" || fail "no X-Model-Version header"
[ "$("$DOCKER_BIN" exec "$CONTAINER" id -u)" = 10001 ] || fail "container runs as root"
if "$DOCKER_BIN" exec "$CONTAINER" sh -c 'touch /opt/x' 2>/dev/null; then fail "root filesystem is writable"; fi
"$DOCKER_BIN" exec "$CONTAINER" sh -c 'touch /tmp/x' || fail "/tmp is not writable"
if [ "$VARIANT" = onnx ]; then
  for module in sklearn scipy joblib; do
    if "$DOCKER_BIN" exec "$CONTAINER" python -c "import $module" 2>/dev/null; then fail "$module is in the ONNX-only image"; fi
  done
fi
for _ in $(seq 30); do
  HEALTH=$("$DOCKER_BIN" inspect -f '{{.State.Health.Status}}' "$CONTAINER")
  [ "$HEALTH" = healthy ] && break
  sleep 1
done
[ "$HEALTH" = healthy ] || fail "health check says $HEALTH"
LOGS=$("$DOCKER_BIN" logs "$CONTAINER" 2>&1)  # whole, not piped into grep -q (see build-operator-image.sh)
grep -q "READY: serving model breast-cancer version 1.0.0" <<<"$LOGS" || fail "no READY log line"
"$DOCKER_BIN" stop -t 10 "$CONTAINER" >/dev/null
log "OK: image $IMAGE ($VARIANT) built, answered /predict as uid 10001 on a read-only root, health check healthy"
