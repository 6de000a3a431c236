"""Full-covariance BC step, old factor layout against today's, interleaved in one process (the record in ab.txt).

usage: python results/bench-factor-layout/ab.py OLD_HETSTAT_PY [COVARIANCE] [ROUNDS]
OLD_HETSTAT_PY: csil_diag/policy/hetstat.py of a checkout before the change (e.g. `git worktree add /tmp/old 950f9df`).
"""

from __future__ import annotations

import importlib.util
import sys

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.speed import _time as fastest  # fastest call after a warm-up
from benchmarks.speed import bc_step_flops
from csil_diag.config import BCConfig, HetStatConfig
from csil_diag.csil.bc import init_state, make_train_fn
from csil_diag.envs.tasks import ACTION_DIM
from csil_diag.policy.hetstat import HetStat

WIDTH, BATCH, STEPS = 1032, 256, 10


def load_old(path: str):
    spec = importlib.util.spec_from_file_location("old_hetstat", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["old_hetstat"] = module  # flax's dataclass transform looks the module up
    spec.loader.exec_module(module)
    return module.HetStat


def runner(cls, cfg: HetStatConfig, bc: BCConfig, x, y):
    model = cls(cfg, ACTION_DIM)
    holder = {"state": init_state(model, bc, jax.random.key(0), WIDTH)}
    train = make_train_fn(model, bc)

    def run():
        holder["state"], metrics = train(holder["state"], jax.random.key(1), x, y, None, n_steps=STEPS)
        return metrics

    jax.block_until_ready(run())
    return run


def main(old_path: str, covariance: str = "full", rounds: int = 6) -> None:
    cfg, bc = HetStatConfig(covariance=covariance), BCConfig(batch_size=BATCH)
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((4096, WIDTH)), jnp.float32)
    y = jnp.asarray(np.tanh(rng.standard_normal((4096, ACTION_DIM))), jnp.float32)
    runners = {"old": runner(load_old(old_path), cfg, bc, x, y), "new": runner(HetStat, cfg, bc, x, y)}
    a = jnp.asarray(rng.standard_normal((256, 1024)), jnp.float32)
    w = jnp.asarray(rng.standard_normal((1024, 1024)), jnp.float32)
    matmul = jax.jit(lambda a, w: a @ w)
    best = {"old": float("inf"), "new": float("inf"), "matmul": float("inf")}
    for _ in range(rounds):  # interleaved, so a slow spell of the machine hits both layouts alike
        for name, run in runners.items():
            best[name] = min(best[name], fastest(run, 1) / STEPS)
        best["matmul"] = min(best["matmul"], fastest(lambda: matmul(a, w), 10))
    peak = 2 * 256 * 1024 * 1024 / best["matmul"] / 1e9
    useful = bc_step_flops(cfg, WIDTH, BATCH)["useful"] / 1e9
    for name in ("old", "new"):
        rate = useful / best[name]
        fraction = f"{rate / peak:.2f} of matmul {peak:.1f} GF/s"
        print(f"{covariance} {name}: {best[name] * 1e3:.1f} ms/step, {rate:.1f} GF/s = {fraction}")


if __name__ == "__main__":
    main(sys.argv[1], *sys.argv[2:3], *[int(r) for r in sys.argv[3:4]])
