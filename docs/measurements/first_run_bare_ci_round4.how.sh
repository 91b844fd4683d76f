#!/usr/bin/env bash
# Make this machine's Docker engine, uv cache and deploykit weights cache bare, then run .ci/run on a fresh clone.
set -uo pipefail
LOG=${1:-/tmp/dk/bare_ci.log}
cd /work/main
.venv/bin/deploykit down smollm2-135m-instruct || true
docker ps -aq | xargs -r docker rm -f >/dev/null
docker system prune -a -f --volumes | tail -1
docker images
rm -rf /tmp/ci-bare /var/tmp/deploykit-* /root/.cache/uv /root/.cache/deploykit
git clone -q /work/main /tmp/ci-bare
cd /tmp/ci-bare
git log --oneline | head -1
start=$(date +%s)
bash .ci/run > "$LOG" 2>&1
rc=$?
echo "ci rc=$rc wall=$(( $(date +%s) - start ))" | tee -a "$LOG"
