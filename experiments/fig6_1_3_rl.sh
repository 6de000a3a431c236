#!/usr/bin/env bash
# Thesis Figs. 6.1–6.3: success during RL for CSIL, SACfD and π0 alone.
# cpu: lift, joints+object, the HetStat as the only head, BC-pre-trained on RL_DEMOS (20) scripted demos so that its
#      success starts modest; the quick preset (256-wide networks, 20k env steps, evaluations every 5k), 3 seeds, CSIL
#      and SACfD in the same budget. Then, when fig6_6_compare.sh has made the fine-tuned tiny π0s, the residual on
#      π0 (pi0+joints) with CSIL and SACfD on the lora-frozen-vision fine-tune (the one with a success rate worth
#      keeping: ~40–50 % at replan 2), executing 2 actions of each chunk.
# gpu: the thesis' setting: residual / ensemble / head on MODEL (a fine-tuned π0) for lift, can and square with the
#      thesis preset (250k steps, App. B networks, 4 seeds; SACfD 500k).
source "$(dirname "$0")/common.sh"
RL_DEMOS=${RL_DEMOS:-20}
if [ "$SIZE" = cpu ]; then
  d=data/lift_rl${RL_DEMOS}.hdf5
  $csil demos --task lift --n $((RL_DEMOS + RL_DEMOS / 4)) --valid-fraction 0.2 --seed 11 --out "$d" >&2
  for algo in csil sacfd; do
    $csil train --algo "$algo" --task lift --input joints+object --mode head --demos "$d" --preset quick \
      --seeds 0,1,2 --out "runs/fig6_1-cpu-lift-head-$algo"
  done
  # CSIL with a 10× stronger KL to the BC policy (β 0.1): the deterministic policy rises above BC within 15k steps
  $csil train --algo csil --task lift --input joints+object --mode head --demos "$d" --preset quick --seeds 0,1,2 \
    --steps 15000 --entropy-coefficient 0.1 --out runs/fig6_1-cpu-lift-head-csil-beta0.1
  for run in csil csil-beta0.1 sacfd; do
    $csil evaluate "runs/fig6_1-cpu-lift-head-$run" --episodes 50 --policy deterministic,stochastic
  done
  $csil report runs/fig6_1-cpu-lift-head-csil runs/fig6_1-cpu-lift-head-csil-beta0.1 runs/fig6_1-cpu-lift-head-sacfd \
    --out reports/fig6_1-cpu-lift-head.pdf
  FT=models/pi0-tiny-lift-lora-frozen-vision
  if [ -d "$FT" ]; then
    di=$(demos lift --cameras agentview,wrist)
    for algo in csil sacfd; do
      $csil train --algo "$algo" --task lift --input pi0+joints --mode residual --model "$FT" --demos "$di" \
        --preset quick --replan 2 --seeds 0,1,2 --out "runs/fig6_2-cpu-lift-residual-$algo"
    done
    $csil report runs/fig6_2-cpu-lift-residual-csil runs/fig6_2-cpu-lift-residual-sacfd \
      --out reports/fig6_2-cpu-lift-residual.pdf
  else
    echo "skipping the residual runs: run experiments/fig6_6_compare.sh cpu first (it makes $FT)" >&2
  fi
else
  : "${MODEL:?set MODEL to a fine-tuned π0 checkpoint (openpi or csil-diag)}"
  for task in lift can square; do
    d=$(demos "$task" --cameras agentview,wrist)
    for mode in residual ensemble head; do
      $csil train --algo csil --task "$task" --input pi0+joints --mode "$mode" --model "$MODEL" --demos "$d" \
        --preset thesis --out "runs/fig6_1-gpu-$task-$mode-csil"
    done
    $csil train --algo sacfd --task "$task" --input pi0+joints --mode residual --model "$MODEL" --demos "$d" \
      --preset thesis --steps 500000 --eval-every 50000 --out "runs/fig6_1-gpu-$task-residual-sacfd"
    $csil report runs/fig6_1-gpu-"$task"-* --out "reports/fig6_1-gpu-$task.pdf"
  done
fi
