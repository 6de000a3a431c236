#!/usr/bin/env bash
# Set up (idempotent), then lint and run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
CSIL_DIAG_EXTRAS=test,ray,vision bash scripts/setup.sh
.venv/bin/ruff check .
.venv/bin/ruff format --check .
# One test process per core, idle ones stealing queued tests (the durations are uneven).
.venv/bin/python -m pytest -q -n auto --dist worksteal --durations=10 "$@"
