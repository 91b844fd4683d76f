#!/usr/bin/env bash
# The CPU demo (README's first command): set up everything, then bring SmolLM2-135M-Instruct up
# in Docker on the cpu target, wait until it is ready and prove it with a real generation.
# Ends with a phase summary (seconds per phase); extra arguments go to `deploykit up`.
set -euo pipefail
cd "$(dirname "$0")/.."
PHASES=$(mktemp /tmp/deploykit-demo-phases.XXXXXX)
trap 'rm -f "$PHASES"' EXIT
start=$SECONDS

DEPLOYKIT_PHASES_FILE=$PHASES bash scripts/setup.sh --demo
t0=$SECONDS
.venv/bin/deploykit up smollm2-135m-instruct --target cpu "$@"
echo "up $((SECONDS - t0))" >>"$PHASES"

# The cpu image is built in two stages; the classic builder keeps the multi-GB builder stage as a
# dangling <none> image. Remove only deploykit's own (labelled) builder stages.
t0=$SECONDS
docker image prune -f --filter "label=org.deploykit.stage=builder" >/dev/null 2>&1 || true
echo "prune-build-stage $((SECONDS - t0))" >>"$PHASES"

echo
echo "demo phases (seconds):"
awk '{ printf "  %-18s %5d\n", $1, $2 }' "$PHASES"
printf '  %-18s %5d\n' total $((SECONDS - start))
# `up`'s own phases (plan, preflight, weights, render, image, ready, smoke), from its state record.
.venv/bin/python - <<'EOF' || true
import json, subprocess
out = subprocess.run([".venv/bin/deploykit", "status", "--json"], capture_output=True, text=True).stdout
try:
    recs = json.loads(out)
except ValueError:
    recs = []
for rec in recs if isinstance(recs, list) else []:
    if rec.get("card") == "smollm2-135m-instruct" and rec.get("timings"):
        t = {k: v for k, v in rec["timings"].items() if isinstance(v, (int, float))}
        print("  up: " + ", ".join(f"{k} {v:.1f}" for k, v in t.items()))
EOF
