#!/usr/bin/env bash
# The collapse at π0's real width: a tiny π0 whose action expert (so its state site) is 1024 wide like π0's,
# pre-trained on lift/can/square, fine-tuned on lift in the three regimes; then the slice sweep up to 1024 with and
# without the object on the full fine-tune, and the remedies on it. 16.1 M parameters; cpu: ~0.7 pre-training
# steps/s on 2 cores (hours in all: run it in the background, it resumes); gpu: minutes.
source "$(dirname "$0")/common.sh"
files=()
for task in lift can square; do files+=("$(demos "$task" --cameras agentview,wrist)"); done
BASE=models/pi0-1024-base
$csil vla pretrain --tasks lift,can,square --demos "$(IFS=,; echo "${files[*]}")" --expert-width 1024 --steps 3000 \
  --out "$BASE"
for regime in full lora lora-frozen-vision; do
  lr=1e-3; [ "$regime" = full ] && lr=3e-4
  $csil vla finetune --base "$BASE" --task lift --demos "${files[0]}" --regime "$regime" --lr "$lr" --steps 2000 \
    --out "models/pi0-1024-lift-$regime"
done
FULL=models/pi0-1024-lift-full
$csil slice-sweep --task lift --demos "${files[0]}" --model "$FULL" --widths 0,16,64,256,1024 --object with,without \
  --select leading "${PRESET[@]}" --backend "$BACKEND" "${ADDRESS_OPT[@]}" --out "runs/pi0-1024-slices-$SIZE"
$csil report "runs/pi0-1024-slices-$SIZE" --out "reports/pi0-1024-slices-$SIZE.pdf"
MODEL=$FULL bash "$(dirname "$0")/remedies.sh" "$SIZE"
