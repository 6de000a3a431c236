#!/usr/bin/env bash
# old vs new local pool on the same 2-cell grid (bg paused by the caller)
export CSIL_DIAG_CACHE=/tmp/mj-cache CSIL_DIAG_PROGRESS_INTERVAL=60
for v in ${VERSIONS:-old new}; do
  src=/work/main; [ $v = old ] && src=/tmp/oldwt
  cd $src
  start=$(date +%s)
  PYTHONPATH=$src /work/main/.venv/bin/csil-diag slice-sweep --task lift --demos /work/bg/data/lift_img.hdf5 \
    --model /tmp/mj-cache/models/pi0-tiny-default-fc878e09f00c --widths 0 --object with,without --select leading \
    --preset quick --steps 500 --every 500 --seeds 0 --out /tmp/thr-$v${SUFFIX:-} 2>&1 | tail -4
  echo "$v wall $(( $(date +%s) - start )) s"
done
