#!/usr/bin/env bash
# Thesis Fig. 6.6: the diagnostic for π0s fine-tuned differently, with the `vla diff` audit against their base.
# cpu: the tiny base pre-trained on lift/can/square, fine-tuned on lift in the three regimes (docs/results/tiny-pi0.md);
# gpu: BASE=<openpi base> FULL=… LORA=… FROZEN=… checkpoints fine-tuned elsewhere.
source "$(dirname "$0")/common.sh"
if [ -z "${BASE:-}" ]; then
  files=()
  for task in lift can square; do files+=("$(demos "$task" --cameras agentview,wrist)"); done
  BASE=models/pi0-tiny-base
  $csil vla pretrain --tasks lift,can,square --demos "$(IFS=,; echo "${files[*]}")" --steps 3000 --out "$BASE"
  for regime in full lora lora-frozen-vision; do
    lr=1e-3; [ "$regime" = full ] && lr=3e-4
    $csil vla finetune --base "$BASE" --task lift --demos "${files[0]}" --regime "$regime" --lr "$lr" --steps 2000 \
      --out "models/pi0-tiny-lift-$regime"
  done
  FULL=models/pi0-tiny-lift-full LORA=models/pi0-tiny-lift-lora FROZEN=models/pi0-tiny-lift-lora-frozen-vision
fi
d=$(demos lift --cameras agentview,wrist)
$csil compare --task lift --demos "$d" --models "$FULL,$LORA,$FROZEN" --labels full,lora,lora-frozen-vision \
  --base "$BASE" --input pi0+joints "${PRESET[@]}" --backend "$BACKEND" "${ADDRESS_OPT[@]}" --out "runs/fig6_6-$SIZE"
$csil report "runs/fig6_6-$SIZE" --out "reports/fig6_6-$SIZE.pdf"
