#!/usr/bin/env bash
# Set up everything deploykit and its tests need on a fresh Debian/Ubuntu machine (idempotent):
# system packages (Docker engine, debootstrap), the Docker daemon, a virtualenv in .venv with
# deploykit and all extras, and the local base image for the cpu target.
# Usage: bash scripts/setup.sh [--no-docker]
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
want_docker=1
[ "${1:-}" = "--no-docker" ] && want_docker=0

log() { printf '\033[1m[setup]\033[0m %s\n' "$*"; }

# 1. System packages. Only when something is missing, so a warm machine skips apt entirely.
need_apt=()
command -v dockerd >/dev/null 2>&1 || need_apt+=(docker.io)
command -v debootstrap >/dev/null 2>&1 || need_apt+=(debootstrap)
if [ ${#need_apt[@]} -gt 0 ] && [ "$want_docker" = 1 ]; then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  log "apt-get install ${need_apt[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

# 2. Python environment. torch is pinned to the CPU build first so that nothing pulls a CUDA build.
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  log "creating .venv"
  "$PY" -m venv .venv
fi
stamp=.venv/.deploykit-setup
sig=$(cat pyproject.toml | sha256sum | cut -c1-16)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$sig" ]; then
  log "installing deploykit and its extras into .venv (first run: a few minutes)"
  pipi() {  # pip install, quiet on success, the log's tail on failure
    if ! .venv/bin/pip install -q "$@" > .venv/pip.log 2>&1; then
      grep -v '^WARNING: Location' .venv/pip.log | tail -30; echo "pip install $* failed" >&2; exit 1
    fi
  }
  pipi "torch==2.13.0"
  pipi -e ".[all]"
  # PyPI's torchvision/torchaudio/torchcodec are CUDA builds that break transformers imports
  # beside the CPU torch; nothing in deploykit needs them.
  .venv/bin/pip uninstall -y -q torchvision torchaudio torchcodec >/dev/null 2>&1 || true
  echo "$sig" > "$stamp"
fi

# 2b. The LiteLLM proxy (the stacks' front door) in its own venv: its pins (huggingface_hub 1.x, rich
# 13) conflict with deploykit's, and deploykit only renders its config and runs its CLI in tests.
LITELLM_SPEC="litellm[proxy]==1.106.2"
if [ "$(cat .venv-litellm/.spec 2>/dev/null)" != "$LITELLM_SPEC" ]; then
  log "installing the LiteLLM proxy into .venv-litellm (front-door tests)"
  rm -rf .venv-litellm && "$PY" -m venv .venv-litellm
  if ! .venv-litellm/bin/pip install -q "$LITELLM_SPEC" > .venv-litellm/pip.log 2>&1; then
    grep -v '^WARNING: Location' .venv-litellm/pip.log | tail -30; echo "pip install $LITELLM_SPEC failed" >&2; exit 1
  fi
  echo "$LITELLM_SPEC" > .venv-litellm/.spec
fi

# 3. Docker engine and the local base image (no registry is reachable from here).
if [ "$want_docker" = 1 ]; then
  if [ -f scripts/setup-docker.sh ]; then bash scripts/setup-docker.sh; fi
  if [ -f scripts/build-base-image.sh ]; then bash scripts/build-base-image.sh; fi
fi
log "ready: $ROOT/.venv/bin/deploykit"
