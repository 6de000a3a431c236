"""How much of the BC step (D = 1032, batch 256, full and diagonal covariance) is the AdamW update: the same step
with plain SGD, interleaved in one process with the matmul rate (the record in optimizer_share.txt).

usage: PYTHONPATH=. python results/bench-factor-layout/optimizer_share.py [ROUNDS]
"""

from __future__ import annotations

import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

sys.path.insert(0, str(Path(__file__).parent))
import ab  # this folder's runner: a jitted 10-step BC scan on random data

from benchmarks.speed import _time as fastest
from benchmarks.speed import bc_step_flops
from csil_diag.config import BCConfig, HetStatConfig
from csil_diag.csil import bc as bc_module
from csil_diag.policy.hetstat import HetStat


def main(rounds: int = 5) -> None:
    bc = BCConfig(batch_size=ab.BATCH)
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((4096, ab.WIDTH)), jnp.float32)
    y = jnp.asarray(np.tanh(rng.standard_normal((4096, 7))), jnp.float32)
    adamw = bc_module.make_optimizer
    runs, useful = {}, {}
    for covariance in ("full", "diagonal"):
        cfg = HetStatConfig(covariance=covariance)
        useful[covariance] = bc_step_flops(cfg, ab.WIDTH, ab.BATCH)["useful"]
        for name, make in (("adamw (the default)", adamw), ("sgd", lambda c: optax.sgd(c.learning_rate))):
            bc_module.make_optimizer = make  # only for this measurement
            runs[covariance, name] = ab.runner(HetStat, cfg, bc, x, y)
    bc_module.make_optimizer = adamw
    a = jnp.asarray(rng.standard_normal((256, 1024)), jnp.float32)
    w = jnp.asarray(rng.standard_normal((1024, 1024)), jnp.float32)
    matmul = jax.jit(lambda a, w: a @ w)
    best = dict.fromkeys(runs, float("inf"))
    best_matmul = float("inf")
    for _ in range(rounds):  # interleaved, so a slow spell of the machine hits every figure alike
        for key, run in runs.items():
            best[key] = min(best[key], fastest(run, 1) / ab.STEPS)
        best_matmul = min(best_matmul, fastest(lambda: matmul(a, w), 10))
    peak = 2 * 256 * 1024 * 1024 / best_matmul / 1e9
    print(f"matmul 256x1024x1024: {peak:.0f} GFLOP/s")
    for (covariance, name), seconds in best.items():
        print(
            f"{covariance} covariance, D = {ab.WIDTH}, {name}: {seconds * 1e3:.1f} ms/step = "
            f"{useful[covariance] / seconds / 1e9 / peak:.0%} of the matmul rate in useful FLOPs"
        )


if __name__ == "__main__":
    main(*[int(r) for r in sys.argv[1:2]])
