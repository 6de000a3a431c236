#!/usr/bin/env bash
# Thesis Fig. 6.4 on π0: the HetStat residual on π0's action, fed π0's state embedding + joints, beside joints+object
# on the same demos. MODEL=<checkpoint> picks the π0 (default: the embedded tiny model; on a GPU an openpi one).
source "$(dirname "$0")/common.sh"
d=$(demos lift --cameras agentview,wrist)
MODEL_OPT=(); [ -n "${MODEL:-}" ] && MODEL_OPT=(--model "$MODEL")
$csil entropy --task lift --input pi0+joints "${MODEL_OPT[@]}" --demos "$d" "${PRESET[@]}" --out "runs/fig6_4-$SIZE-lift-pi0"
$csil entropy --task lift --input joints+object --demos "$d" "${PRESET[@]}" --out "runs/fig6_4-$SIZE-lift-lowdim-img"
$csil report "runs/fig6_4-$SIZE-lift-pi0" "runs/fig6_4-$SIZE-lift-lowdim-img" --out "reports/fig6_4-$SIZE-pi0.pdf"
