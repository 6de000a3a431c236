#!/usr/bin/env bash
# The HetStat remedies (issue "the collapse at π0's real width"): spectral trunk × PCA input × random-feature skip ×
# posterior head on lift pi0+joints, separation and demo fit side by side. cpu: the embedded default (256-d state
# site); gpu: MODEL=<a 1024-wide π0 fine-tuned on lift> and the thesis' settings.
source "$(dirname "$0")/common.sh"
d=$(demos lift --cameras agentview,wrist)
MODEL_OPT=(); [ -n "${MODEL:-}" ] && MODEL_OPT=(--model "$MODEL")
name="remedies${MODEL:+-$(basename "$MODEL")}-$SIZE"
$csil sweep --task lift --demos "$d" "${MODEL_OPT[@]}" --input pi0+joints "${PRESET[@]}" \
  --set hetstat.trunk=plain,spectral --set hetstat.input_transform=none,pca:64 --set hetstat.rf_skip=false,true \
  --set hetstat.head=learned,posterior \
  --backend "$BACKEND" "${ADDRESS_OPT[@]}" --out "runs/$name"
$csil report "runs/$name" --out "reports/$name.pdf"
