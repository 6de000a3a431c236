#!/usr/bin/env bash
# Set up (idempotent), then the main job on the embedded default: scripted Lift demos with both cameras, the
# entropy diagnostic (quick preset) on the tiny π0's embeddings + joints (HetStat residual on π0's actions) and,
# for comparison, on joint + object states; then the PDF report of both. The tiny π0 is trained on first use
# and cached (~/.cache/csil-diag, or $CSIL_DIAG_CACHE).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
csil=.venv/bin/csil-diag
$csil demos --task lift --n 50 --cameras agentview,wrist --out data/lift_img.hdf5
$csil entropy --task lift --input pi0+joints --demos data/lift_img.hdf5 --preset quick --out runs/lift-pi0-quick
$csil entropy --task lift --input joints+object --demos data/lift_img.hdf5 --preset quick --out runs/lift-lowdim-quick
$csil report runs/lift-pi0-quick runs/lift-lowdim-quick --out reports/stationarity.pdf
