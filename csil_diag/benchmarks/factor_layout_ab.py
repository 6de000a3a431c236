"""The BC step of a HetStat from another checkout ("old") against today's ("new"), interleaved in one process with
the matmul rate (records: results/bench-factor-layout/ab.txt, ab-9b495d9.txt).

    python -m csil_diag.benchmarks.factor_layout_ab OLD_HETSTAT_PY [COVARIANCE] [ROUNDS] [--quick] [--out FILE]

OLD_HETSTAT_PY: csil_diag/policy/hetstat.py of a checkout before the change (e.g. `git worktree add /tmp/old 950f9df`).
--quick: a small HetStat, input width 32, batch 32, two steps a call, one round (a smoke test, not a measurement).
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from csil_diag.benchmarks.record import emit, parser
from csil_diag.benchmarks.speed import bc_runner, bc_step_flops, fastest_against_matmul
from csil_diag.config import BCConfig, HetStatConfig
from csil_diag.envs.tasks import ACTION_DIM
from csil_diag.policy.hetstat import HetStat

MODULE = "csil_diag.benchmarks.factor_layout_ab"
TINY = HetStatConfig(hidden=(64,), bottleneck=8, features=64, covariance_blocks=4)


@dataclass(frozen=True)
class Size:
    """The measured BC step: the HetStat, its input width, the batch and the steps in one timed call."""

    hetstat: HetStatConfig = field(default_factory=HetStatConfig)
    width: int = 1032
    batch: int = 256
    steps: int = 10


FULL = Size()
QUICK = Size(TINY, width=32, batch=32, steps=2)


def load_hetstat(path: str) -> type:
    """The HetStat class of the hetstat.py at ``path`` (loaded as the module ``old_hetstat``)."""
    spec = importlib.util.spec_from_file_location("old_hetstat", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["old_hetstat"] = module  # flax's dataclass transform looks the module up
    spec.loader.exec_module(module)
    return module.HetStat


def measure(old_path: str, covariance: str = "full", rounds: int = 6, size: Size = FULL) -> dict[str, Any]:
    """Seconds a BC step of the old and the new HetStat (fastest over the rounds), the matmul rate (GFLOP/s) and
    the useful GFLOP of a step."""
    cfg, bc = replace(size.hetstat, covariance=covariance), BCConfig(batch_size=size.batch)
    runs = {
        name: bc_runner(cls(cfg, ACTION_DIM), bc, size.width, size.steps)[0]
        for name, cls in (("old", load_hetstat(old_path)), ("new", HetStat))
    }
    best, peak = fastest_against_matmul(runs, rounds)
    return {
        "covariance": covariance,
        "s_per_step": {name: seconds / size.steps for name, seconds in best.items()},
        "matmul_gflops": peak,
        "useful_gflop_per_step": bc_step_flops(cfg, size.width, size.batch)["useful"] / 1e9,
    }


def lines(result: dict[str, Any]) -> list[str]:
    peak, out = result["matmul_gflops"], []
    for name, seconds in result["s_per_step"].items():
        rate = result["useful_gflop_per_step"] / seconds
        fraction = f"{rate / peak:.2f} of matmul {peak:.1f} GF/s"
        out.append(f"{result['covariance']} {name}: {seconds * 1e3:.1f} ms/step, {rate:.1f} GF/s = {fraction}")
    return out


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    argv = sys.argv[1:] if argv is None else list(argv)
    ap = parser(MODULE, __doc__)
    ap.add_argument("old_hetstat_py")
    ap.add_argument("covariance", nargs="?", default="full", choices=("full", "diagonal"))
    ap.add_argument("rounds", nargs="?", type=int, default=6)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args(argv)
    rounds = 1 if args.quick else args.rounds
    result = measure(args.old_hetstat_py, args.covariance, rounds, QUICK if args.quick else FULL)
    emit(lines(result), MODULE, argv, args.out)
    return result


if __name__ == "__main__":
    main()
