#!/usr/bin/env bash
# Thesis Fig. 6.4 on low-dim states: online vs expert entropy during BC pre-training, lift and can.
source "$(dirname "$0")/common.sh"
for task in lift can; do
  d=$(demos "$task")
  $csil entropy --task "$task" --input joints+object --demos "$d" "${PRESET[@]}" --out "runs/fig6_4-$SIZE-$task-lowdim"
done
$csil report "runs/fig6_4-$SIZE-lift-lowdim" "runs/fig6_4-$SIZE-can-lowdim" --out "reports/fig6_4-$SIZE-lowdim.pdf"
