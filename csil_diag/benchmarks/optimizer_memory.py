"""Is AdamW's update over the full-covariance HetStat's 6.1 M parameters bound by memory? (record: results/
bench-factor-layout/optimizer_memory.txt; it corrects adamw_leaf.txt, whose a·2 + b comparison ran from the cache.)

1. An fp32 stream x ← (x + 0.1·y)·0.5 at growing sizes: fast while its arrays fit in the cache, ~30 GB/s beyond.
2. optax's AdamW on the BC parameter tree, updates in one jitted scan (as in the BC step), against plain SGD
   (3 passes) on the same tree: AdamW's ten passes over the parameters at the stream rate beyond cache.
3. AdamW's loops on one 6.1 M leaf with and without the divisions and the square root: what its arithmetic adds to
   its memory traffic.
Every figure is per loop iteration: (t(many) − t(few)) / (many − few), so a call's one-off costs cancel.

    python -m csil_diag.benchmarks.optimizer_memory [--quick] [--out FILE]

--quick: 1 M-float streams and leaf, a small HetStat at input width 32 (a smoke test, not a measurement).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import jax
import jax.numpy as jnp
import optax

from csil_diag.benchmarks.record import emit, parser
from csil_diag.benchmarks.speed import (
    ADAMW_PASSES,
    bc_param_count,
    fastest_time,
    optimizer_update_ms,
    per_iteration_s,
    stream_ms,
)
from csil_diag.config import HetStatConfig
from csil_diag.envs.tasks import ACTION_DIM
from csil_diag.policy.hetstat import HetStat

MODULE = "csil_diag.benchmarks.optimizer_memory"


@dataclass(frozen=True)
class Size:
    streams: tuple[int, ...] = (2_000_000, 6_100_000, 10_000_000, 25_000_000, 50_000_000)
    hetstat: HetStatConfig = field(default_factory=lambda: HetStatConfig(covariance="full"))
    width: int = 1032
    leaf: int = 6_100_000  # the full-covariance HetStat's parameter count at D = 1032
    repeats: int = 5
    loops: tuple[int, int] = (10, 30)  # (few, many) iterations of the stream and leaf loops


FULL = Size()
QUICK = Size(
    streams=(1_000_000,),
    hetstat=HetStatConfig(hidden=(256,), bottleneck=16, features=256, covariance_blocks=4),
    width=32,
    leaf=1_000_000,
    repeats=2,
    loops=(2, 8),
)


def leaf_ms(with_divisions: bool, n: int = 6_100_000, repeats: int = 5, loops: tuple[int, int] = (10, 30)) -> float:
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
    return 1e3 * per_iteration_s(lambda k: fastest_time(lambda: f(p, z, z, g, k=k), repeats), *loops)


def measure(size: Size = FULL) -> dict[str, Any]:
    """Milliseconds per loop iteration: the stream at each size, AdamW's and SGD's update over the HetStat's tree,
    AdamW's loops on one leaf with and without its divisions."""
    stream = {n: stream_ms(n, size.repeats, *size.loops) for n in size.streams}
    model = HetStat(size.hetstat, ACTION_DIM)
    params = model.init(jax.random.key(0), jnp.zeros((1, size.width), jnp.float32))
    optimizers = {"adamw": optax.adamw(1e-4, weight_decay=1e-4), "sgd": optax.sgd(1e-4)}
    return {
        "width": size.width,
        "parameters": bc_param_count(size.hetstat, size.width),
        "stream_ms": stream,
        "update_ms": {name: optimizer_update_ms(params, opt, size.repeats) for name, opt in optimizers.items()},
        "leaf": size.leaf,
        "leaf_ms": {flag: leaf_ms(flag, size.leaf, size.repeats, size.loops) for flag in (True, False)},
    }


def lines(result: dict[str, Any]) -> list[str]:
    out = [
        f"stream over {n:>10,} floats (3 arrays, {3 * 4 * n / 1e6:5.0f} MB a pass): {ms:6.2f} ms = "
        f"{3 * 4 * n / ms / 1e6:5.1f} GB/s"
        for n, ms in result["stream_ms"].items()
    ]
    n = result["parameters"]
    for name, ms in result["update_ms"].items():
        passes = ADAMW_PASSES if name == "adamw" else 3
        out.append(
            f"{name} update over the D = {result['width']} full-covariance HetStat ({n:,} parameters, {passes} passes "
            f"= {passes * 4 * n / 1e6:.0f} MB): {ms:.2f} ms = {passes * 4 * n / ms / 1e6:.1f} GB/s"
        )
    what = {True: "as optax writes it (2 divisions, 1 square root)", False: "divisions and root as products"}
    for flag, ms in result["leaf_ms"].items():
        out.append(f"AdamW's three loops on one {result['leaf'] / 1e6:.1f} M leaf, {what[flag]}: {ms:.2f} ms")
    return out


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    argv = sys.argv[1:] if argv is None else list(argv)
    ap = parser(MODULE, __doc__)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args(argv)
    result = measure(QUICK if args.quick else FULL)
    emit(lines(result), MODULE, argv, args.out)
    return result


if __name__ == "__main__":
    main()
