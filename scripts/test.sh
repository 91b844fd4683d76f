#!/usr/bin/env bash
# The test command (README, .ci/run): set up, then run every tier.
# Fast loop for developers: .venv/bin/pytest -m unit   (or -m "unit or integration")
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m pytest "$@"
