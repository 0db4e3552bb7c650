# Sourced by the image build scripts (build-serving-image.sh, build-operator-image.sh): a Docker engine
# that works on this machine, and the offline base image.
#
# docker_engine_start: install docker.io/debootstrap if missing; start a private dockerd if none
# answers (--bridge=none --iptables=false --ip-masq=false, own data-root and socket; docker_engine_stop,
# run from the caller's EXIT trap, stops it again unless KEEP_DOCKERD=1).
# docker_base_image: make a Debian bookworm + python3 base image with debootstrap (cached as an image).
#
# Env: BASE_IMAGE [local/debian-py:bookworm]  DOCKER_ROOT [/var/lib/mlcanary-docker]
#      DOCKER_SOCK [/tmp/mlcanary-docker.sock]  WORK [/tmp/mlcanary-image]  KEEP_DOCKERD [0]
# The caller sets REPO and WORK; this file gives it log() (timestamps since sourcing) and PYTHON
# (the project's venv, else python3).

BASE_IMAGE=${BASE_IMAGE:-local/debian-py:bookworm}
DOCKER_ROOT=${DOCKER_ROOT:-/var/lib/mlcanary-docker}
DOCKER_SOCK=${DOCKER_SOCK:-/tmp/mlcanary-docker.sock}
KEEP_DOCKERD=${KEEP_DOCKERD:-0}
STARTED_DOCKERD=
if [ -z "${PYTHON:-}" ]; then
  if [ -x "$REPO/.venv/bin/python" ]; then PYTHON="$REPO/.venv/bin/python"; else PYTHON=python3; fi
fi
T0=$(date +%s)
log() { printf '[%s +%ss] %s\n' "$(date +%H:%M:%S)" "$(( $(date +%s) - T0 ))" "$*"; }

docker_engine_start() {
  local need_apt=()
  command -v dockerd >/dev/null || need_apt+=(docker.io)
  command -v debootstrap >/dev/null || need_apt+=(debootstrap)
  if [ ${#need_apt[@]} -gt 0 ]; then
    log "installing ${need_apt[*]}"
    for _ in $(seq 60); do   # another apt may hold the lock
      if DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null 2>&1; then
        break
      fi
      apt-get update -qq >/dev/null 2>&1 || true
      sleep 5
    done
    command -v dockerd >/dev/null && command -v debootstrap >/dev/null || { echo "cannot install ${need_apt[*]}" >&2; return 1; }
  fi
  DOCKER_BIN=$(command -v docker)
  [ -x /usr/bin/docker ] && DOCKER_BIN=/usr/bin/docker   # the docker.io CLI matches its dockerd
  export DOCKER_HOST="unix://$DOCKER_SOCK"
  if ! "$DOCKER_BIN" info >/dev/null 2>&1; then
    log "starting dockerd (data-root $DOCKER_ROOT, socket $DOCKER_SOCK)"
    mkdir -p "$DOCKER_ROOT" "$WORK"
    dockerd --bridge=none --iptables=false --ip-masq=false --data-root "$DOCKER_ROOT" \
      --exec-root /tmp/mlcanary-docker-exec --pidfile /tmp/mlcanary-dockerd.pid \
      --host "$DOCKER_HOST" >"$WORK/dockerd.log" 2>&1 &
    STARTED_DOCKERD=$!
    for _ in $(seq 120); do "$DOCKER_BIN" info >/dev/null 2>&1 && break; sleep 0.5; done
    "$DOCKER_BIN" info >/dev/null 2>&1 || { tail -20 "$WORK/dockerd.log"; echo "dockerd did not start" >&2; return 1; }
  fi
}

docker_engine_stop() {
  if [ -n "$STARTED_DOCKERD" ] && [ "$KEEP_DOCKERD" != 1 ]; then
    log "stopping the dockerd this script started (pid $STARTED_DOCKERD)"
    kill "$STARTED_DOCKERD" 2>/dev/null || true
    # Gone before we return: the next image test starts a dockerd of its own only when none answers,
    # and one still shutting down (slow on a loaded machine) would answer, then die under it.
    for _ in $(seq 120); do kill -0 "$STARTED_DOCKERD" 2>/dev/null || break; sleep 0.5; done
    if kill -0 "$STARTED_DOCKERD" 2>/dev/null; then
      log "dockerd still running after 60s: SIGKILL"
      kill -9 "$STARTED_DOCKERD" 2>/dev/null || true
      for _ in $(seq 20); do kill -0 "$STARTED_DOCKERD" 2>/dev/null || break; sleep 0.5; done
    fi
    rm -f "$DOCKER_SOCK"
  fi
}

docker_base_image() {
  if ! "$DOCKER_BIN" image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
    local rootfs=$WORK/rootfs
    log "debootstrap bookworm minbase + python3 -> $BASE_IMAGE (about a minute)"
    rm -rf "$rootfs"
    debootstrap --variant=minbase --include=python3,python3-venv bookworm "$rootfs" >"$WORK/debootstrap.log" 2>&1 \
      || { tail -20 "$WORK/debootstrap.log"; return 1; }
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
    tar -C "$rootfs" -c . | "$DOCKER_BIN" import - "$BASE_IMAGE" >/dev/null
    rm -rf "$rootfs"
  fi
}

# Seconds from $3 (a `date +%s.%N` taken just before `docker run`) to the first 200 of URL $2 from
# container $1; "exited" or "timeout" (and status 1) when none comes.
first_200_after() {
  local started=$3 now
  for _ in $(seq 1200); do
    if curl -fsS -o /dev/null "$2" 2>/dev/null; then
      now=$(date +%s.%N); awk -v a="$started" -v b="$now" 'BEGIN { printf "%.2f", b - a }'; return 0
    fi
    [ "$("$DOCKER_BIN" inspect -f '{{.State.Running}}' "$1" 2>/dev/null)" = true ] || { echo exited; return 1; }
    sleep 0.05
  done
  echo timeout; return 1
}
