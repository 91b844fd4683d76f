#!/usr/bin/env bash
# The CPU demo (README's first command): set up everything, then bring SmolLM2-135M-Instruct up
# in Docker on the cpu target, wait until it is ready and prove it with a real generation.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/deploykit up smollm2-135m-instruct --target cpu "$@"
