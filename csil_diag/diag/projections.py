"""2-d projections of a run's states (training and held-out expert states, online states) in the HetStat's three
spaces — input, trunk bottleneck, random features — at its first and last (or every) kept BC step.

One projection is fitted per space on the states of every probed step together, so the pictures of different steps
share axes and can be compared. PCA (scikit-learn), UMAP (umap-learn; numba's compilation cached under the csil-diag
cache) or t-SNE (scikit-learn), all seeded.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import pandas as pd

from csil_diag.errors import UserError

METHODS = ("pca", "umap", "tsne")


def _umap():
    """umap-learn with numba's compiled functions cached on disk (the first call compiles for ~a minute)."""
    if "NUMBA_CACHE_DIR" not in os.environ:
        from csil_diag.cache import cache_root

        path = cache_root() / "numba"
        path.mkdir(parents=True, exist_ok=True)
        os.environ["NUMBA_CACHE_DIR"] = str(path)
    import umap

    return umap


def embed_2d(x: np.ndarray, method: str, seed: int = 0) -> np.ndarray:
    """(N, D) → (N, 2), reproducible from ``seed``. Features are standardised first (spaces differ in scale)."""
    if method not in METHODS:
        raise UserError(f"--method must be one of {', '.join(METHODS)} (got {method!r})")
    x = np.asarray(x, np.float64)
    x = (x - x.mean(0)) / np.maximum(x.std(0), 1e-8)
    if method == "pca":
        from sklearn.decomposition import PCA

        return PCA(2, random_state=seed).fit_transform(x)
    if method == "umap":
        # 100 epochs (UMAP's default is 200–500): a third of the time for pictures that differ little at this size.
        reducer = _umap().UMAP(n_components=2, random_state=seed, n_neighbors=15, min_dist=0.1, n_epochs=100, n_jobs=1)
        return reducer.fit_transform(x)
    from sklearn.manifold import TSNE

    return TSNE(2, random_state=seed, init="pca", perplexity=min(30.0, max(5.0, (len(x) - 1) / 3))).fit_transform(x)


def project_run(
    run_dir: str | os.PathLike, method: str = "pca", steps: str = "first,last", max_states: int = 20000, seed: int = 0
) -> pd.DataFrame:
    """Projections of one entropy run's first seed, written to ``<run>/projections/<method>.parquet``; returns
    rows (space, step, split, episode, t, success, x, y)."""
    from csil_diag.diag.run_states import check_steps, open_run
    from csil_diag.diag.trunk_probe import SPACES, representations
    from csil_diag.envs.rollouts import time_in_episode
    from csil_diag.runs import atomic_write_parquet

    if method not in METHODS:
        raise UserError(f"--method must be one of {', '.join(METHODS)} (got {method!r})")
    check_steps(steps)
    if max_states < 100:
        raise UserError(f"--max-states must be at least 100 (got {max_states})")
    run = open_run(run_dir)
    inputs, normalizer, run_seed = run.inputs, run.normalizer, run.seeds[0]
    wanted = run.steps(run_seed, steps)
    if not wanted:
        raise run.no_states_error()

    # Expert states are the same at every step; online states differ. Subsample so all steps fit max_states.
    rng = np.random.default_rng(seed)
    per_step = max_states // len(wanted)
    parts: list[dict[str, Any]] = []
    demo_sets = {
        "train": (inputs.train.x, inputs.train.episode, time_in_episode(inputs.train.episode)),
        "valid": (inputs.valid.x, inputs.valid.episode, time_in_episode(inputs.valid.episode)),
    }
    for step in wanted:
        params = run.params(run_seed, step)
        online = run.online(run_seed, step)
        sets = {**demo_sets, "online": (online["x"], online["episode"], online["t"])}
        total = sum(len(v[0]) for v in sets.values())
        for split, (x, episode, t) in sets.items():
            n = max(1, round(len(x) * min(1.0, per_step / total)))
            idx = np.sort(rng.choice(len(x), min(n, len(x)), replace=False))
            success = online["success"][idx] if split == "online" else np.ones(len(idx), bool)
            reps = representations(run.model, params, normalizer(x[idx]))
            parts.append(
                {"step": step, "split": split, "episode": episode[idx], "t": t[idx], "success": success, **reps}
            )
    rows = []
    for space in SPACES:
        xy = embed_2d(np.concatenate([p[space] for p in parts]), method, seed)
        start = 0
        for p in parts:
            n = len(p["episode"])
            rows.append(
                pd.DataFrame(
                    {
                        "space": space,
                        "step": p["step"],
                        "split": p["split"],
                        "episode": p["episode"],
                        "t": p["t"],
                        "success": p["success"],
                        "x": xy[start : start + n, 0],
                        "y": xy[start : start + n, 1],
                    }
                )
            )
            start += n
    frame = pd.concat(rows, ignore_index=True).assign(method=method, seed=run_seed)
    atomic_write_parquet(run.run_dir / "projections" / f"{method}.parquet", frame)
    return frame
