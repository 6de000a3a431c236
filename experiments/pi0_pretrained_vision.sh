#!/usr/bin/env bash
# Issue 36, the thesis' condition: π0s whose vision tower was pre-trained elsewhere (DINOv2 ViT-S/14, EfficientNet-Lite0,
# from the `vision` extra's packages) beside one whose tower is trained on our own images (siglip), all four on one
# recipe: pre-trained on lift/can/square (the tiny π0's two 84-px cameras: DINOv2 6×6 patches, EfficientNet a 3×3
# map, the scratch tower 7×7 12-px patches per camera — 112 px would give 8×8 and 4×4, 1.8× the tokens;
# 256-wide action expert, so the state site is 256-d as in the embedded default), then fine-tuned on lift:
# lora-frozen-vision (the thesis' regime: a pre-trained tower never sees the simulator) for every tower, and full
# (the tower trained on the simulator, Fig. 6.6's question) for DINOv2. Then, per π0, one slice sweep (widths
# 0/16/64/all, with and without the object, 3 seeds, at the quick preset's last step), the object and trunk probes, and
# one report page of all four sweeps (AUROC by width, one line per π0).
# cpu: 100 demos a task, 1000 pre-training + 600 fine-tuning steps (300 for DINOv2's full fine-tune: a step that
# trains the ViT takes ~3 s on 2 cores, against 0.4 s with it frozen); gpu: 200 demos a task, 3000 + 2000 steps, the
# thesis preset.
export CSIL_DIAG_EXTRAS=${CSIL_DIAG_EXTRAS:-test,vision}
source "$(dirname "$0")/common.sh"
if [ "$SIZE" = cpu ]; then
  N=100 PRE=1000 FT=600 FT_FULL=300 LAST=(--every 1000 --no-initial-point)  # the quick preset's last step only
else
  N=$DEMOS_N PRE=3000 FT=2000 FT_FULL=2000 LAST=()
fi
# One π0 a command: `$0 cpu siglip`, `$0 cpu dinov2-s`, `$0 cpu efficientnet-lite0`, `$0 cpu dinov2-s-full`; no
# second argument runs all four, then the report.
WHICH=${2:-all}
case "$WHICH" in all|siglip|dinov2-s|efficientnet-lite0|dinov2-s-full) ;; *)
  echo "usage: $0 [cpu|gpu] [siglip|dinov2-s|efficientnet-lite0|dinov2-s-full]" >&2; exit 2 ;; esac
files=()
for task in lift can square; do files+=("$(N=$N demos "$task" --cameras agentview,wrist)"); done
lift=${files[0]}
hunt() {  # hunt TOWER REGIME: pre-train (once per tower), fine-tune, sweep, probe
  local tower=$1 regime=$2 lr=1e-3 steps=$FT base=models/hunt-$SIZE/base-$1 model=models/hunt-$SIZE/lift-$1-$2
  [ "$regime" = full ] && lr=3e-4 steps=$FT_FULL
  $csil vla pretrain --tasks lift,can,square --demos "$(IFS=,; echo "${files[*]}")" --steps "$PRE" \
    --expert-width 256 --vision "$tower" --out "$base"
  $csil vla finetune --base "$base" --task lift --demos "$lift" --regime "$regime" --lr "$lr" --steps "$steps" \
    --out "$model"
  local out="runs/hunt-$SIZE/$(basename "$model")"
  $csil slice-sweep --task lift --demos "$lift" --model "$model" --widths 0,16,64,all --object with,without \
    --select leading "${PRESET[@]}" "${LAST[@]}" --backend "$BACKEND" "${ADDRESS_OPT[@]}" --out "$out"
  $csil probe object --task lift --demos "$lift" --model "$model" --n 50 --out "$out/object-probe"
  $csil probe trunk "$out"/runs/w*-leading-noobj
}
case "$WHICH" in
  siglip|dinov2-s|efficientnet-lite0) hunt "$WHICH" lora-frozen-vision ;;
  dinov2-s-full) hunt dinov2-s full ;;
  all)
    for tower in siglip dinov2-s efficientnet-lite0; do hunt "$tower" lora-frozen-vision; done
    hunt dinov2-s full
    $csil report "runs/hunt-$SIZE" --out "reports/hunt-$SIZE.pdf" ;;
esac
