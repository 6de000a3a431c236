"""How much of the BC step (D = 1032, batch 256, full and diagonal covariance) is the AdamW update: the same step
with plain SGD, interleaved in one process with the matmul rate (record: results/bench-factor-layout/
optimizer_share.txt).

    python -m csil_diag.benchmarks.optimizer_share [ROUNDS] [--quick] [--out FILE]

--quick: factor_layout_ab's small step, one round (a smoke test, not a measurement).
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from typing import Any

import optax

from csil_diag.benchmarks.factor_layout_ab import FULL, QUICK, Size
from csil_diag.benchmarks.record import emit, parser
from csil_diag.benchmarks.speed import bc_runner, bc_step_flops, fastest_against_matmul
from csil_diag.config import BCConfig
from csil_diag.envs.tasks import ACTION_DIM
from csil_diag.policy import bc as bc_module
from csil_diag.policy.hetstat import HetStat

MODULE = "csil_diag.benchmarks.optimizer_share"
OPTIMIZERS: dict[str, Callable[[BCConfig], optax.GradientTransformation]] = {
    "adamw (the default)": bc_module.make_optimizer,
    "sgd": lambda c: optax.sgd(c.learning_rate),
}


@contextlib.contextmanager
def bc_optimizer(make: Callable[[BCConfig], optax.GradientTransformation]) -> Iterator[None]:
    """BC states and train functions made inside use ``make``'s optimizer (only for this measurement)."""
    default = bc_module.make_optimizer
    bc_module.make_optimizer = make
    try:
        yield
    finally:
        bc_module.make_optimizer = default


def measure(rounds: int = 5, size: Size = FULL) -> dict[str, Any]:
    """Seconds a BC step takes with each optimizer and covariance (fastest over the rounds), the matmul rate and the
    useful GFLOP of a step per covariance."""
    bc = BCConfig(batch_size=size.batch)
    runs, useful = {}, {}
    for covariance in ("full", "diagonal"):
        cfg = replace(size.hetstat, covariance=covariance)
        useful[covariance] = bc_step_flops(cfg, size.width, size.batch)["useful"] / 1e9
        for name, make in OPTIMIZERS.items():
            with bc_optimizer(make):
                runs[covariance, name] = bc_runner(HetStat(cfg, ACTION_DIM), bc, size.width, size.steps)[0]
    best, peak = fastest_against_matmul(runs, rounds)
    return {
        "width": size.width,
        "s_per_step": {key: seconds / size.steps for key, seconds in best.items()},
        "matmul_gflops": peak,
        "useful_gflop_per_step": useful,
    }


def lines(result: dict[str, Any]) -> list[str]:
    peak = result["matmul_gflops"]
    out = [f"matmul 256x1024x1024: {peak:.0f} GFLOP/s"]
    for (covariance, name), seconds in result["s_per_step"].items():
        share = result["useful_gflop_per_step"][covariance] / seconds / peak
        out.append(
            f"{covariance} covariance, D = {result['width']}, {name}: {seconds * 1e3:.1f} ms/step = "
            f"{share:.0%} of the matmul rate in useful FLOPs"
        )
    return out


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    argv = sys.argv[1:] if argv is None else list(argv)
    ap = parser(MODULE, __doc__)
    ap.add_argument("rounds", nargs="?", type=int, default=5)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args(argv)
    result = measure(1, QUICK) if args.quick else measure(args.rounds)
    emit(lines(result), MODULE, argv, args.out)
    return result


if __name__ == "__main__":
    main()
