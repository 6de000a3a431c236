"""Is AdamW's update over 6.1 M parameters memory-bound? One leaf of that size: optax's adamw step against a plain
elementwise a·2 + b over the same arrays (the record in adamw_leaf.txt).

usage: python results/bench-factor-layout/adamw_leaf.py
"""

from __future__ import annotations

import time

import jax
import optax

N = 6_100_000  # the full-covariance HetStat's parameter count at D = 1032


def fastest(fn, *args, repeats: int = 30) -> float:
    jax.block_until_ready(fn(*args))
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    p, g = (jax.random.normal(k, (N,)) for k in jax.random.split(jax.random.key(0)))
    axpy = jax.jit(lambda a, b: a * 2 + b)
    seconds = fastest(axpy, p, g)
    print(f"a*2+b over {N:,} floats: {seconds * 1e3:.2f} ms = {3 * 4 * N / seconds / 1e9:.1f} GB/s")
    opt = optax.adamw(1e-4, weight_decay=1e-4)

    @jax.jit
    def step(p, g, state):
        updates, state = opt.update(g, state, p)
        return optax.apply_updates(p, updates), state

    seconds = fastest(step, p, g, opt.init(p))
    print(f"optax adamw step: {seconds * 1e3:.2f} ms = {7 * 4 * N / seconds / 1e9:.1f} GB/s for its 7 arrays")


if __name__ == "__main__":
    main()
