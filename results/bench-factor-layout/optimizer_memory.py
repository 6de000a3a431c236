"""Is AdamW's update over the full-covariance HetStat's 6.1 M parameters bound by memory? (record in
optimizer_memory.txt; it corrects adamw_leaf.txt, whose a·2 + b comparison ran from the cache.)

1. An fp32 stream x ← (x + 0.1·a)·0.5 at growing sizes: fast while its arrays fit in the cache, ~17 GB/s beyond.
2. optax's AdamW on the BC parameter tree, ten updates in one jitted scan (as in the BC step), against plain SGD
   (3 passes) on the same tree: AdamW's ten passes over the parameters at the stream rate beyond cache.

usage: PYTHONPATH=. python results/bench-factor-layout/optimizer_memory.py
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from benchmarks.speed import ADAMW_PASSES, _time
from csil_diag.config import HetStatConfig
from csil_diag.envs.tasks import ACTION_DIM
from csil_diag.policy.hetstat import HetStat

STEPS = 10


def stream_ms(n: int) -> float:
    a = jnp.ones((n,), jnp.float32)
    f = jax.jit(lambda x, y: jax.lax.fori_loop(0, STEPS, lambda _, x: (x + 0.1 * y) * 0.5, x))
    return 1e3 * _time(lambda: f(a, a), 5) / STEPS


def update_ms(params, optimizer: optax.GradientTransformation) -> float:
    grads = jax.tree_util.tree_map(lambda p: jnp.full_like(p, 1e-2), params)

    @jax.jit
    def run(params, state):
        def body(carry, _):
            p, s = carry
            updates, s = optimizer.update(grads, s, p)
            return (optax.apply_updates(p, updates), s), None

        return jax.lax.scan(body, (params, state), None, length=STEPS)[0]

    state = optimizer.init(params)
    return 1e3 * _time(lambda: run(params, state), 5) / STEPS


def main() -> None:
    for n in (2_000_000, 6_100_000, 10_000_000, 25_000_000, 50_000_000):
        ms = stream_ms(n)
        print(
            f"stream over {n:>10,} floats (3 arrays, {3 * 4 * n / 1e6:5.0f} MB a pass): {ms:6.2f} ms = "
            f"{3 * 4 * n / ms / 1e6:5.1f} GB/s"
        )
    model = HetStat(HetStatConfig(covariance="full"), ACTION_DIM)
    params = model.init(jax.random.key(0), jnp.zeros((1, 1032), jnp.float32))
    n = sum(p.size for p in jax.tree_util.tree_leaves(params))
    for name, opt, passes in (
        ("adamw", optax.adamw(1e-4, weight_decay=1e-4), ADAMW_PASSES),
        ("sgd", optax.sgd(1e-4), 3),
    ):
        ms = update_ms(params, opt)
        print(
            f"{name} update over the D = 1032 full-covariance HetStat ({n:,} parameters, {passes} passes = "
            f"{passes * 4 * n / 1e6:.0f} MB): {ms:.2f} ms = {passes * 4 * n / ms / 1e6:.1f} GB/s"
        )


if __name__ == "__main__":
    main()
