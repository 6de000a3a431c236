#!/usr/bin/env bash
# The object probe on the Fig. 6.6 models (experiments/fig6_6_compare.sh cpu made them in /work/ft at 3734746's code),
# all on the demos those models were fine-tuned on (sha256 969b956b…), run at 7fdc1e2's code on 2026-12-02.
export CSIL_DIAG_CACHE=/tmp/mj-cache
d=/work/ft/data/lift_img.hdf5
csil-diag probe object --task lift --demos $d --model /tmp/mj-cache/models/pi0-tiny-default-fc878e09f00c --out default
for m in base lift-full lift-lora lift-lora-frozen-vision; do
  csil-diag probe object --task lift --demos $d --model /work/ft/models/pi0-tiny-$m --out "${m#lift-}"
done
