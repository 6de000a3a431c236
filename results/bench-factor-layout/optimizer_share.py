"""How much of the full-covariance BC step (D = 1032, batch 256) is the AdamW update: the same step with plain SGD,
interleaved in one process (the record in optimizer_share.txt).

usage: PYTHONPATH=. python results/bench-factor-layout/optimizer_share.py [ROUNDS]
"""

from __future__ import annotations

import sys
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import optax

sys.path.insert(0, str(Path(__file__).parent))
import ab  # this folder's runner: a jitted 10-step BC scan on random data

from benchmarks.speed import _time as fastest
from csil_diag.config import BCConfig, HetStatConfig
from csil_diag.csil import bc as bc_module
from csil_diag.policy.hetstat import HetStat


def main(rounds: int = 5) -> None:
    cfg, bc = HetStatConfig(covariance="full"), BCConfig(batch_size=ab.BATCH)
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((4096, ab.WIDTH)), jnp.float32)
    y = jnp.asarray(np.tanh(rng.standard_normal((4096, 7))), jnp.float32)
    runs = {"adamw (the default)": ab.runner(HetStat, cfg, bc, x, y)}
    bc_module.make_optimizer = lambda c: optax.sgd(c.learning_rate)  # only for this measurement
    runs["sgd"] = ab.runner(HetStat, cfg, bc, x, y)
    best = dict.fromkeys(runs, float("inf"))
    for _ in range(rounds):
        for name, run in runs.items():
            best[name] = min(best[name], fastest(run, 1) / ab.STEPS)
    for name, seconds in best.items():
        print(f"full covariance, D = {ab.WIDTH}, {name}: {seconds * 1e3:.1f} ms/step")


if __name__ == "__main__":
    main(*[int(r) for r in sys.argv[1:2]])
