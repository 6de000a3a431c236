"""Speed of the collapse-locating instruments on this machine: 2-d projections of 20k states in each of the
HetStat's three spaces (issue target: all three under 2 minutes after the first call).

    csil-diag bench --instruments

The states are synthetic (a run of the quick preset keeps ~1.5k per step, so no real run here reaches 20k): three
clouds (training, held-out, online) on an 8-d manifold embedded nonlinearly in each space's width — the input of
``pi0+joints`` (256 + 9), the 48-d bottleneck and the 1024 random features. UMAP's time depends on the data's
neighbourhood structure, so treat the figure as the order of magnitude it is.
"""

from __future__ import annotations

import time

import numpy as np

SPACE_WIDTHS = {"input": 265, "bottleneck": 48, "features": 1024}


def synthetic_states(n: int, width: int, seed: int = 0) -> np.ndarray:
    """(n, width) float32: three offset clouds on an 8-d manifold, tanh-embedded, with a little noise."""
    rs = np.random.RandomState(seed)
    z = rs.standard_normal((n, 8)) + np.repeat(rs.standard_normal((3, 8)) * 2.0, -(-n // 3), axis=0)[:n]
    x = np.tanh(z @ rs.standard_normal((8, width)) / np.sqrt(8)) + 0.05 * rs.standard_normal((n, width))
    return x.astype(np.float32)


def projection_speed(n: int = 20000, methods: tuple[str, ...] = ("pca", "umap")) -> dict:
    """Seconds per space and in all for each method; a 500-state call first compiles (UMAP's numba), untimed."""
    from csil_diag.diag.projections import embed_2d

    out: dict = {"states_per_space": n, "widths": SPACE_WIDTHS}
    for method in methods:
        embed_2d(synthetic_states(500, 16, seed=1), method)
        seconds = {}
        for space, width in SPACE_WIDTHS.items():
            x = synthetic_states(n, width)
            start = time.perf_counter()
            embed_2d(x, method)
            seconds[space] = round(time.perf_counter() - start, 1)
        out[method] = {"seconds": seconds, "total_s": round(sum(seconds.values()), 1)}
    return out
