#!/usr/bin/env bash
# Issue 36, the thesis' condition: π0s whose vision tower was pre-trained elsewhere (DINOv2 ViT-S/14, EfficientNet-Lite0,
# from the `vision` extra's packages), frozen in pre-training, beside today's tower trained on our own images.
# Each tiny π0 is pre-trained on lift/can/square (112-px images: DINOv2 8×8 patches, EfficientNet a 4×4 map per
# camera) and fine-tuned on lift: lora-frozen-vision (the thesis' regime: the tower never sees the simulator) for both
# towers, full (the tower trained on the simulator, Fig. 6.6's question) for DINOv2. Then, per π0, one slice sweep
# (widths 0/16/64/all, with and without the object, 3 seeds, at the quick preset's last step) and the object and trunk
# probes. The scratch-tower π0 is fig6_6_compare.sh's lora-frozen-vision fine-tune (run it first).
# cpu: the sizes above (hours on 2 cores: each pre-training ~30–60 min); gpu: the same models, the thesis' preset.
export CSIL_DIAG_EXTRAS=${CSIL_DIAG_EXTRAS:-test,vision}
source "$(dirname "$0")/common.sh"
files=()
for task in lift can square; do files+=("$(demos "$task" --cameras agentview,wrist)"); done
lift=${files[0]}
LAST=(); [ "$SIZE" = cpu ] && LAST=(--every 1000 --no-initial-point)  # the quick preset's last step only
models=()
for tower in dinov2-s efficientnet-lite0; do
  base=models/pi0-tiny-base-$tower
  $csil vla pretrain --tasks lift,can,square --demos "$(IFS=,; echo "${files[*]}")" --steps 3000 --vision "$tower" \
    --out "$base"
  regimes=(lora-frozen-vision); [ "$tower" = dinov2-s ] && regimes+=(full)
  for regime in "${regimes[@]}"; do
    lr=1e-3; [ "$regime" = full ] && lr=3e-4
    $csil vla finetune --base "$base" --task lift --demos "$lift" --regime "$regime" --lr "$lr" --steps 2000 \
      --out "models/pi0-tiny-lift-$tower-$regime"
    models+=("models/pi0-tiny-lift-$tower-$regime")
  done
done
[ -d models/pi0-tiny-lift-lora-frozen-vision ] && models=(models/pi0-tiny-lift-lora-frozen-vision "${models[@]}")
for model in "${models[@]}"; do
  name=$(basename "$model")
  out="runs/vision-$SIZE/$name"
  $csil slice-sweep --task lift --demos "$lift" --model "$model" --widths 0,16,64,all --object with,without \
    --select leading "${PRESET[@]}" "${LAST[@]}" --backend "$BACKEND" "${ADDRESS_OPT[@]}" --out "$out"
  $csil probe object --task lift --demos "$lift" --model "$model" --out "$out/object-probe"
  $csil probe trunk "$out"/runs/w*-leading-noobj
  $csil report "$out" --out "reports/vision-$SIZE-$name.pdf"
done
