#!/usr/bin/env bash
# Issue 14's point speed-up, measured in one run: the quick `pi0+joints` diagnostic (lift, 50 scripted demos with
# both cameras, 250 BC steps, two points: step 0 and 250, compilation included) timed with the code of each given
# revision, the revisions alternating round by round on the same machine. Each revision makes its own demos and
# default tiny π0 (its own cache) in an untimed warm-up run first, so the timed runs differ only by the code (and,
# where the code has one, by its persistent XLA cache, warm after the warm-up; REV:nocache runs without it).
#   bash experiments/point_ab.sh WORK ROUNDS REV...   e.g. bash experiments/point_ab.sh /tmp/ab 2 9b495d9 HEAD HEAD:nocache
# Writes WORK/times.tsv (rev, commit, round, wall seconds) and prints it; uses this checkout's .venv. Each variant's
# tables are WORK/<variant>/{warm,timed}/entropy.parquet, to compare numbers across revisions.
set -euo pipefail
work=$1 rounds=$2
shift 2
root=$(cd "$(dirname "$0")/.." && pwd)
py=$root/.venv/bin/python
mkdir -p "$work"
declare -A src
variant() {  # REV[:nocache] -> the directory name: short commit [+ -nocache]
  local commit
  commit=$(git -C "$root" rev-parse --short "${1%:nocache}")
  [ "$1" = "${1%:nocache}" ] && echo "$commit" || echo "$commit-nocache"
}
xla() { [ "$1" = "${1%:nocache}" ] && echo on || echo off; }
for rev in "$@"; do
  commit=$(git -C "$root" rev-parse --short "${rev%:nocache}")
  src[$rev]=$work/src-$commit
  if [ ! -d "${src[$rev]}" ]; then
    git -C "$root" worktree add --detach "${src[$rev]}" "$commit" >/dev/null
  fi
  dir=$work/$(variant "$rev")
  mkdir -p "$dir"
  (
    export PYTHONPATH=${src[$rev]} CSIL_DIAG_CACHE=$dir/cache CSIL_DIAG_XLA_CACHE=$(xla "$rev")
    cd "$dir"
    [ -f lift_img.hdf5 ] || $py -m csil_diag.cli demos --task lift --n 50 --cameras agentview,wrist --out lift_img.hdf5
    [ -f warm/entropy.parquet ] || $py -m csil_diag.cli entropy --task lift --input pi0+joints --demos lift_img.hdf5 \
      --preset quick --steps 250 --every 250 --out warm
  ) > "$dir/warm.log" 2>&1
done
[ -f "$work/times.tsv" ] || printf 'rev\tvariant\tround\twall_s\n' > "$work/times.tsv"
for round in $(seq 1 "$rounds"); do
  for rev in "$@"; do
    dir=$work/$(variant "$rev")
    rm -rf "$dir/timed"
    start=$(date +%s.%N)
    (
      export PYTHONPATH=${src[$rev]} CSIL_DIAG_CACHE=$dir/cache CSIL_DIAG_XLA_CACHE=$(xla "$rev")
      cd "$dir"
      $py -m csil_diag.cli entropy --task lift --input pi0+joints --demos lift_img.hdf5 --preset quick --steps 250 \
        --every 250 --out timed
    ) > "$dir/timed-$round.log" 2>&1
    wall=$(echo "$(date +%s.%N) - $start" | bc)
    printf '%s\t%s\t%s\t%.1f\n' "$rev" "$(variant "$rev")" "$round" "$wall" | tee -a "$work/times.tsv"
  done
done
