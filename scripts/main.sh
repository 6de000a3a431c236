#!/usr/bin/env bash
# Set up (idempotent), then the main job on the embedded default: a small scripted demo set for
# Lift with both cameras, and its summary.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/csil-diag demos --task lift --n 20 --cameras agentview,wrist --image-size 84 --out data/lift.hdf5
.venv/bin/csil-diag demos info data/lift.hdf5
