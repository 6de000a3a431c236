#!/usr/bin/env bash
# Set up (idempotent), then the main job on the embedded default: scripted Lift demos, the entropy
# diagnostic (quick preset: HetStat BC pre-training with online vs expert entropy), and its PDF report.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/csil-diag demos --task lift --n 50 --out data/lift.hdf5
.venv/bin/csil-diag entropy --task lift --input joints+object --demos data/lift.hdf5 --preset quick --out runs/lift-quick
.venv/bin/csil-diag report runs/lift-quick --out reports/stationarity.pdf
