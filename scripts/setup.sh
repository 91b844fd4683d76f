#!/usr/bin/env bash
# Set up everything deploykit and its tests need on a fresh Debian/Ubuntu machine (idempotent):
# system packages (Docker engine, debootstrap, prometheus for the operate tests), the Docker
# daemon, a virtualenv in .venv with deploykit and all extras (installed with uv), the LiteLLM
# proxy venv, and the local base image for the cpu target.
# Usage: bash scripts/setup.sh [--no-docker] [--demo]
#   --demo: only what the CPU demo needs (skips the LiteLLM venv that only the front-door tests use)
# The Docker engine and the base image (network + disk bound) are set up in the background while
# the Python environment installs (network bound), so a bare machine waits for the longer of the two.
# DEPLOYKIT_PHASES_FILE=FILE appends "phase seconds" lines (scripts/demo.sh prints them).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
want_docker=1
want_litellm=1
EXTRAS=all   # --demo: only the demo's conversion extra (lm-eval, plots and test tools come with the test command)
for arg in "$@"; do
  case $arg in
    --no-docker) want_docker=0 ;;
    --demo) want_litellm=0; EXTRAS=demo ;;
    *) echo "usage: bash scripts/setup.sh [--no-docker] [--demo]" >&2; exit 2 ;;
  esac
done
PHASES_FILE=${DEPLOYKIT_PHASES_FILE:-/dev/null}
# uv's wheel cache (hard-linked into the venvs; the plain-install test installs offline from it).
export UV_CACHE_DIR=${UV_CACHE_DIR:-$ROOT/.venv/.uv-cache}
export UV_LINK_MODE=${UV_LINK_MODE:-hardlink}
export UV_HTTP_TIMEOUT=${UV_HTTP_TIMEOUT:-180}

log() { printf '\033[1m[setup]\033[0m %s\n' "$*"; }
timed() {  # timed PHASE CMD...: run CMD, record its wall time under PHASE
  local phase=$1 t0=$SECONDS
  shift
  "$@"
  echo "$phase $((SECONDS - t0))" >>"$PHASES_FILE"
}
quiet() {  # quiet LOG CMD...: CMD's output to LOG; its tail on failure
  local logf=$1; shift
  if ! "$@" >"$logf" 2>&1; then
    tail -30 "$logf"; echo "failed: $* (full log: $logf)" >&2; exit 1
  fi
}

# 1. System packages. Only when something is missing, so a warm machine skips apt entirely.
apt_packages() {
  local need=()
  command -v dockerd >/dev/null 2>&1 || need+=(docker.io)
  command -v debootstrap >/dev/null 2>&1 || need+=(debootstrap)
  command -v prometheus >/dev/null 2>&1 || need+=(prometheus)  # operate tests scrape with the real one
  [ ${#need[@]} -gt 0 ] && [ "$want_docker" = 1 ] || return 0
  local SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  log "apt-get install ${need[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
}

# 2. Python environment with uv (PyPI). torch is the CPU build: from a local wheel folder when the
# machine has one (PIP_FIND_LINKS, /opt/wheels), else PyTorch's CPU index; the CUDA-only
# torchvision/torchaudio/torchcodec/triton are excluded (they break transformers imports on CPU and
# nothing in deploykit needs them).
PY=${PYTHON:-python3}
UV=""
bootstrap_uv() {
  if [ ! -x .venv/bin/python ]; then log "creating .venv"; "$PY" -m venv .venv; fi
  if command -v uv >/dev/null 2>&1; then UV=$(command -v uv); return; fi
  [ -x .venv/bin/uv ] || quiet .venv/pip-uv.log .venv/bin/pip install -q "uv>=0.8"
  UV=$ROOT/.venv/bin/uv
}
torch_source() {
  local d
  for d in ${PIP_FIND_LINKS:-} /opt/wheels; do
    if compgen -G "$d/torch-*+cpu-*.whl" >/dev/null; then echo "--find-links $d"; return; fi
  done
  echo "--torch-backend cpu"
}
EXCLUDES=$ROOT/.venv/.uv-excludes.txt
venv_packages() {
  local stamp=.venv/.deploykit-setup sig have
  sig=$(sha256sum pyproject.toml | cut -c1-16)
  have=$(cat "$stamp" 2>/dev/null || true)
  # "all" holds every extra; a demo-only venv is topped up by the test command's setup
  [ "$have" = "$sig all" ] || [ "$have" = "$sig $EXTRAS" ] && return 0
  log "installing deploykit[$EXTRAS] into .venv (uv; log: .venv/uv.log)"
  printf '%s\n' torchvision torchaudio torchcodec triton >"$EXCLUDES"
  # shellcheck disable=SC2046  # torch_source is two words on purpose
  quiet .venv/uv.log "$UV" pip install --python .venv/bin/python $(torch_source) --excludes "$EXCLUDES" \
    "torch==2.13.0" -e ".[$EXTRAS]"
  echo "$sig $EXTRAS" >"$stamp"
}

# 2b. The LiteLLM proxy (the stacks' front door) in its own venv: its pins (huggingface_hub 1.x, rich
# 13) conflict with deploykit's, and deploykit only renders its config and runs its CLI in tests.
LITELLM_SPEC="litellm[proxy]==1.106.2"
litellm_venv() {
  [ "$(cat .venv-litellm/.spec 2>/dev/null)" = "$LITELLM_SPEC" ] && return 0
  log "installing the LiteLLM proxy into .venv-litellm (front-door tests)"
  rm -rf .venv-litellm && "$PY" -m venv .venv-litellm
  quiet .venv-litellm/uv.log "$UV" pip install --python .venv-litellm/bin/python "$LITELLM_SPEC"
  echo "$LITELLM_SPEC" >.venv-litellm/.spec
}

# 3. Docker engine and the local base image (no registry is reachable from here), in the background.
docker_and_base_image() {
  timed docker bash scripts/setup-docker.sh && timed base-image bash scripts/build-base-image.sh
}

timed apt apt_packages
bg_pid=""
BG_LOG=$(mktemp /tmp/deploykit-setup-docker.XXXXXX)
if [ "$want_docker" = 1 ]; then
  log "Docker engine and base image in the background (log: $BG_LOG)"
  docker_and_base_image >"$BG_LOG" 2>&1 &
  bg_pid=$!
fi
timed uv bootstrap_uv
timed venv venv_packages
[ "$want_litellm" = 1 ] && timed litellm-venv litellm_venv
if [ -n "$bg_pid" ]; then
  t0=$SECONDS
  if ! wait "$bg_pid"; then
    tail -30 "$BG_LOG" >&2; echo "Docker engine or base image setup failed (full log: $BG_LOG)" >&2; exit 1
  fi
  echo "wait-for-docker $((SECONDS - t0))" >>"$PHASES_FILE"
  sed 's/^/[docker] /' "$BG_LOG"
fi
rm -f "$BG_LOG"
log "ready: $ROOT/.venv/bin/deploykit"
