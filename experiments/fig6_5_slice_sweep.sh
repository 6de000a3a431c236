#!/usr/bin/env bash
# Thesis Fig. 6.5: growing parts of π0's state embedding (leading, and 3 random subsets at each width) with and
# without the oracle object state; width 0 is the joints-only reference. cpu: the embedded default (256-d site);
# gpu: MODEL=<openpi checkpoint> (1024-d site) and the thesis' settings.
source "$(dirname "$0")/common.sh"
d=$(demos lift --cameras agentview,wrist)
MODEL_OPT=(); [ -n "${MODEL:-}" ] && MODEL_OPT=(--model "$MODEL")
if [ "$SIZE" = cpu ]; then WIDTHS=0,16,64,256; else WIDTHS=0,16,64,256,512,all; fi
$csil slice-sweep --task lift --demos "$d" "${MODEL_OPT[@]}" --widths "$WIDTHS" --object with,without \
  --select leading,random:3 "${PRESET[@]}" --backend "$BACKEND" "${ADDRESS_OPT[@]}" --out "runs/fig6_5-$SIZE"
$csil report "runs/fig6_5-$SIZE" --out "reports/fig6_5-$SIZE.pdf"
