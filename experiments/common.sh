# Shared by the experiment scripts: the size (cpu | gpu), the CLI, and demos made once.
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE=${1:-cpu}
case "$SIZE" in cpu|gpu) ;; *) echo "usage: $0 [cpu|gpu]" >&2; exit 2 ;; esac
bash scripts/setup.sh
csil=.venv/bin/csil-diag
BACKEND=${BACKEND:-local}
ADDRESS_OPT=()
[ -n "${ADDRESS:-}" ] && ADDRESS_OPT=(--address "$ADDRESS")
if [ "$SIZE" = cpu ]; then
  PRESET=(--preset quick --seeds 0,1,2)
  DEMOS_N=200
else
  PRESET=(--preset thesis)   # 5000 BC steps, 25 rollouts per point, seeds 0,1,2 (thesis App. B)
  DEMOS_N=200
fi
demos() {  # [N=…] demos TASK [camera options…] → data/<task>[_img]-<N>.hdf5 (N: DEMOS_N unless given)
  local task=$1; shift
  local n=${N:-$DEMOS_N}
  local out="data/${task}-${n}.hdf5"; [ $# -gt 0 ] && out="data/${task}_img-${n}.hdf5"
  $csil demos --task "$task" --n "$n" "$@" --out "$out" >&2
  echo "$out"
}
