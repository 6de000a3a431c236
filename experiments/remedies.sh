#!/usr/bin/env bash
# The HetStat remedies (issue "the collapse at π0's real width"): spectral trunk × PCA input × random-feature skip ×
# posterior head on lift pi0+joints, separation and demo fit side by side; then the remedy that met the target on the
# 1024-wide π0 (random-feature skip with the lengthscale fixed at e⁻⁴) at every width, and one report with the
# remedies × inputs page. cpu: the embedded default (256-d state site); gpu: MODEL=<a 1024-wide π0 fine-tuned on lift>
# and the thesis' settings.
source "$(dirname "$0")/common.sh"
d=$(demos lift --cameras agentview,wrist)
MODEL_OPT=(); [ -n "${MODEL:-}" ] && MODEL_OPT=(--model "$MODEL")
name="remedies${MODEL:+-$(basename "$MODEL")}-$SIZE"
$csil sweep --task lift --demos "$d" "${MODEL_OPT[@]}" --input pi0+joints "${PRESET[@]}" \
  --set hetstat.trunk=plain,spectral --set hetstat.input_transform=none,pca:64 --set hetstat.rf_skip=false,true \
  --set hetstat.head=learned,posterior \
  --backend "$BACKEND" "${ADDRESS_OPT[@]}" --out "runs/$name"
# widths: the slice sweep's (baselines) and the winning remedy's, pooled on one report page
$csil slice-sweep --task lift --demos "$d" "${MODEL_OPT[@]}" --widths 0,16,64,all --object without \
  --select leading "${PRESET[@]}" --backend "$BACKEND" "${ADDRESS_OPT[@]}" --out "runs/$name-slices"
$csil sweep --task lift --demos "$d" "${MODEL_OPT[@]}" "${PRESET[@]}" \
  --set 'input=joints,pi0[:16]+joints,pi0[:64]+joints,pi0+joints' --set hetstat.rf_skip=true \
  --set hetstat.learn_lengthscale=false --set hetstat.log_lengthscale_init=-4 \
  --backend "$BACKEND" "${ADDRESS_OPT[@]}" --out "runs/$name-skip-lengthscale-4"
$csil report "runs/$name" "runs/$name-slices" "runs/$name-skip-lengthscale-4" --out "reports/$name.pdf"
