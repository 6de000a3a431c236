#!/usr/bin/env bash
# Thesis Fig. 6.5: growing parts of π0's state embedding (leading, and 3 random subsets at each width) with and
# without the oracle object state; width 0 is the joints-only reference. cpu: the embedded default (256-d site) on
# the main job's 50 demos; gpu: MODEL=<openpi checkpoint> (1024-d site) and the thesis' settings.
source "$(dirname "$0")/common.sh"
MODEL_OPT=(); [ -n "${MODEL:-}" ] && MODEL_OPT=(--model "$MODEL")
if [ "$SIZE" = cpu ]; then
  d=$(N=50 demos lift --cameras agentview,wrist)
  # The headline grid (20 cells × 3 seeds; at the full width 256 only the leading cell: a "random" 256 of 256 is
  # the same columns) evaluated at the last step only (--every 1000 --no-initial-point: the quick preset's training, one point), which
  # 2 cores finish in about an hour; then the leading cells at every quick-preset point (0, 250, …, 1000) for the
  # per-step curves. The schedule is a shared setting, so these are two sweeps, each with its own headline page.
  $csil slice-sweep --task lift --demos "$d" --widths 0,16,64,256 --object with,without --select leading,random:3 \
    "${PRESET[@]}" --every 1000 --no-initial-point --backend "$BACKEND" "${ADDRESS_OPT[@]}" --out runs/fig6_5-cpu-last
  $csil report runs/fig6_5-cpu-last --out reports/fig6_5-cpu-last.pdf
  $csil slice-sweep --task lift --demos "$d" --widths 0,16,64,256 --object with,without --select leading \
    "${PRESET[@]}" --backend "$BACKEND" "${ADDRESS_OPT[@]}" --out runs/fig6_5-cpu
  $csil report runs/fig6_5-cpu-last runs/fig6_5-cpu --out reports/fig6_5-cpu.pdf
else
  d=$(demos lift --cameras agentview,wrist)
  $csil slice-sweep --task lift --demos "$d" "${MODEL_OPT[@]}" --widths 0,16,64,256,512,all --object with,without \
    --select leading,random:3 "${PRESET[@]}" --backend "$BACKEND" "${ADDRESS_OPT[@]}" --out runs/fig6_5-gpu
  $csil report runs/fig6_5-gpu --out reports/fig6_5-gpu.pdf
fi
