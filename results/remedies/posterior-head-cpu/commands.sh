#!/usr/bin/env bash
cd /work/bg
export CSIL_DIAG_CACHE=/tmp/mj-cache CSIL_DIAG_PROGRESS_INTERVAL=60
for w in 256 64; do
  /work/main/.venv/bin/csil-diag entropy --task lift --demos data/lift_img.hdf5 --input "pi0[:$w]+joints" \
    --model /tmp/mj-cache/models/pi0-tiny-default-fc878e09f00c --preset quick --seeds 0 --head posterior \
    --out runs/remedy-posterior-w$w
done
