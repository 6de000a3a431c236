"""Is AdamW's update over the full-covariance HetStat's 6.1 M parameters bound by memory? (record in
optimizer_memory.txt; it corrects adamw_leaf.txt, whose a·2 + b comparison ran from the cache.)

1. An fp32 stream x ← (x + 0.1·y)·0.5 at growing sizes: fast while its arrays fit in the cache, ~30 GB/s beyond.
2. optax's AdamW on the BC parameter tree, updates in one jitted scan (as in the BC step), against plain SGD
   (3 passes) on the same tree: AdamW's ten passes over the parameters at the stream rate beyond cache.
3. AdamW's loops on one 6.1 M leaf with and without the divisions and the square root: what its arithmetic adds to
   its memory traffic.
Every figure is per loop iteration: (t(many) − t(few)) / (many − few), so a call's one-off costs cancel.

usage: PYTHONPATH=. python results/bench-factor-layout/optimizer_memory.py
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from benchmarks.speed import ADAMW_PASSES, _time, bc_param_count, optimizer_update_ms, per_iteration_s, stream_ms
from csil_diag.config import HetStatConfig
from csil_diag.envs.tasks import ACTION_DIM
from csil_diag.policy.hetstat import HetStat


def leaf_ms(with_divisions: bool, n: int = 6_100_000) -> float:
    """AdamW's arithmetic on one leaf of n parameters as optax writes it (bias corrections divide, the step divides by
    √ν̂ + ε), or the same loops and traffic with those divisions and the square root made products."""
    b1, b2 = 0.9, 0.999

    def update(i, p, m, v, g):
        m, v = (1 - b1) * g + b1 * m, (1 - b2) * g * g + b2 * v
        if with_divisions:
            t = (i + 1).astype(jnp.float32)
            u = (m / (1 - b1**t)) / (jnp.sqrt(v / (1 - b2**t)) + 1e-8)
        else:
            u = (m * 0.3) * (v * 0.02 + 1e-8)
        return p - 1e-4 * (u + 1e-4 * p), m, v

    p = jax.random.normal(jax.random.key(0), (n,)) * 0.01
    g, z = p * 0.5 + 1e-3, jnp.full((n,), 1e-6)
    f = jax.jit(
        lambda p, m, v, g, k: jax.lax.fori_loop(0, k, lambda i, c: update(i, *c, g), (p, m, v)), static_argnames="k"
    )
    return 1e3 * per_iteration_s(lambda k: _time(lambda: f(p, z, z, g, k=k), 5), 10, 30)


def main() -> None:
    for n in (2_000_000, 6_100_000, 10_000_000, 25_000_000, 50_000_000):
        ms = stream_ms(n, 5, 10, 60)
        print(
            f"stream over {n:>10,} floats (3 arrays, {3 * 4 * n / 1e6:5.0f} MB a pass): {ms:6.2f} ms = "
            f"{3 * 4 * n / ms / 1e6:5.1f} GB/s"
        )
    model = HetStat(HetStatConfig(covariance="full"), ACTION_DIM)
    params = model.init(jax.random.key(0), jnp.zeros((1, 1032), jnp.float32))
    n = bc_param_count(HetStatConfig(covariance="full"), 1032)
    for name, opt, passes in (
        ("adamw", optax.adamw(1e-4, weight_decay=1e-4), ADAMW_PASSES),
        ("sgd", optax.sgd(1e-4), 3),
    ):
        ms = optimizer_update_ms(params, opt, 5)
        print(
            f"{name} update over the D = 1032 full-covariance HetStat ({n:,} parameters, {passes} passes = "
            f"{passes * 4 * n / 1e6:.0f} MB): {ms:.2f} ms = {passes * 4 * n / ms / 1e6:.1f} GB/s"
        )

    for flag, what in (
        (True, "as optax writes it (2 divisions, 1 square root)"),
        (False, "divisions and root as products"),
    ):
        print(f"AdamW's three loops on one 6.1 M leaf, {what}: {leaf_ms(flag):.2f} ms")


if __name__ == "__main__":
    main()
