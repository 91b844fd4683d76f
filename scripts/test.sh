#!/usr/bin/env bash
# The test command (README, .ci/run): set up, then run every tier (unit, integration, e2e) in one
# pytest run, in random order (pytest-randomly prints the seed; -p no:randomly turns it off), on
# DEPLOYKIT_TEST_WORKERS pytest-xdist workers (default 2), each test file on one worker (the e2e
# files share their deployments within a file; a vLLM start is mostly single-threaded imports, so
# two files start their engines side by side), the longest files first (tests/conftest.py
# LONGEST_FILES). `-n 0` runs everything in this process.
# Fast loop for developers: .venv/bin/pytest -m unit   (or -m "unit or integration")
# Each tier has its own default timeout and private HOME/state/cache dirs (tests/conftest.py).
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh || exit $?
start=$SECONDS
.venv/bin/python -m pytest -n "${DEPLOYKIT_TEST_WORKERS:-2}" --dist loadfile --no-loadscope-reorder "$@"
rc=$?
echo "tests: exit $rc in $((SECONDS - start)) s"
if [ "$rc" = 5 ]; then
  # pytest's 5 = "no tests collected": a selection (-m/-k) that matches nothing, or a broken collection.
  echo "pytest collected no tests (exit 5): check the -m/-k selection" >&2
fi
exit "$rc"
