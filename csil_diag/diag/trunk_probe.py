"""The trunk probe: where is the online/expert distinction lost — in the input, or in the HetStat's trunk?

For every online state and every held-out expert state, its Euclidean distance to the nearest training-demo state in
three spaces of the HetStat at a BC step: the input (normalised features), the trunk's bottleneck h, and the stationary
random features φ(h). The AUROC of online against held-out distances says how well each space tells them apart.
Separation present at the input and gone at the bottleneck: the trunk maps off-distribution inputs onto in-distribution
features before the stationary layer sees them. Absent already at the input: the embedding is what makes them alike.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from csil_diag.diag.separation import auroc, bootstrap_auroc

SPACES = ("input", "bottleneck", "features")


@functools.partial(jax.jit, static_argnums=0)
def _bottleneck_and_features(model: nn.Module, params: Any, x: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
    _, _, h, phi = model.apply(params, x, with_features=True)
    return h, phi


def representations(model: nn.Module, params: Any, x: np.ndarray, chunk: int = 4096) -> dict[str, np.ndarray]:
    """The three spaces of normalised inputs x (N, D): input (N, D), bottleneck (N, 48), features (N, F)."""
    hs, phis = [], []
    for start in range(0, len(x), chunk):
        h, phi = _bottleneck_and_features(model, params, jnp.asarray(x[start : start + chunk]))
        hs.append(np.asarray(h))
        phis.append(np.asarray(phi))
    return {"input": np.asarray(x, np.float32), "bottleneck": np.concatenate(hs), "features": np.concatenate(phis)}


@jax.jit
def _nearest(q: jnp.ndarray, ref: jnp.ndarray, ref_sq: jnp.ndarray) -> jnp.ndarray:
    # ‖q‖² + ‖r‖² − 2q·r finds the neighbour with one matmul; its distance is then recomputed directly, since the
    # expansion cancels catastrophically in float32 for near neighbours.
    d = jnp.sum(q * q, axis=1, keepdims=True) + ref_sq[None, :] - 2.0 * q @ ref.T
    nearest = ref[jnp.argmin(d, axis=1)]
    return jnp.sqrt(jnp.sum(jnp.square(q - nearest), axis=1))


def nearest_distances(queries: np.ndarray, reference: np.ndarray, chunk: int = 1024) -> np.ndarray:
    """Euclidean distance of each query (Q, D) to its nearest reference row (R, D): (Q,). Brute force in chunks."""
    ref = jnp.asarray(reference, jnp.float32)
    ref_sq = jnp.sum(ref * ref, axis=1)
    out = []
    for start in range(0, len(queries), chunk):
        q = np.asarray(queries[start : start + chunk], np.float32)
        pad = chunk - len(q) if len(queries) > chunk else 0  # one compiled shape for every full-size chunk
        if pad:
            q = np.concatenate([q, np.repeat(q[-1:], pad, 0)])
        out.append(np.asarray(_nearest(jnp.asarray(q), ref, ref_sq))[: len(q) - pad])
    return np.concatenate(out) if out else np.zeros(0, np.float32)


def probe_spaces(
    model: nn.Module,
    params: Any,
    x_train: np.ndarray,
    x_valid: np.ndarray,
    valid_episode: np.ndarray,
    x_online: np.ndarray,
    online_episode: np.ndarray,
    n_boot: int = 1000,
    seed: int = 0,
) -> list[dict[str, float]]:
    """One row per space: AUROC (online vs held-out distances to the training demos) with its episode-cluster
    bootstrap CI, and the mean distances. All x normalised as the run normalised them."""
    spaces = {
        name: (reps_train, reps_valid, reps_online)
        for name, reps_train, reps_valid, reps_online in zip(
            SPACES,
            representations(model, params, x_train).values(),
            representations(model, params, x_valid).values(),
            representations(model, params, x_online).values(),
            strict=True,
        )
    }
    rows = []
    for name, (train, valid, online) in spaces.items():
        d_valid = nearest_distances(valid, train)
        d_online = nearest_distances(online, train)
        low, high = bootstrap_auroc(d_online, online_episode, d_valid, valid_episode, n_boot, seed)
        rows.append(
            {
                "space": name,
                "auroc": auroc(d_online, d_valid),
                "auroc_lo": low,
                "auroc_hi": high,
                "online_distance": float(d_online.mean()),
                "valid_distance": float(d_valid.mean()),
                "width": int(train.shape[1]),
            }
        )
    return rows


def reading(frame: pd.DataFrame) -> str:
    """One sentence on where separation is lost, from one run's rows at its last probed step (means over seeds)."""
    last = frame[frame.step == frame.step.max()].groupby("space")[["auroc", "auroc_lo", "auroc_hi"]].mean()
    if not set(SPACES) <= set(last.index):
        return "incomplete probe"
    inp, bott, feat = (last.loc[s] for s in SPACES)
    values = f"AUROC input {inp.auroc:.2f}, bottleneck {bott.auroc:.2f}, features {feat.auroc:.2f}"
    if not inp.auroc_lo > 0.5:
        return (
            f"{values}: online states are no farther from the demos than held-out ones already in the input — "
            "the inputs (the embedding) make them alike"
        )
    if not bott.auroc_lo > 0.5:
        return f"{values}: separated in the input, not at the bottleneck — the trunk collapses it"
    if not feat.auroc_lo > 0.5:
        return f"{values}: separated up to the bottleneck, lost in the random features"
    return f"{values}: separated in every space"


def write_probe(run_dir: str | os.PathLike, rows: list[dict[str, Any]]) -> pd.DataFrame:
    from csil_diag.runs import atomic_write_parquet

    frame = pd.DataFrame(rows)
    atomic_write_parquet(Path(run_dir) / "probes" / "trunk.parquet", frame)
    return frame


def probe_run(
    run_dir: str | os.PathLike, steps: str = "first,last", on_step: Any = None
) -> tuple[pd.DataFrame, list[str]]:
    """The trunk probe of an entropy run at its first and last (or every: ``steps="all"``) probed BC step, per seed.

    Parameters at step 0 are a pure function of the seed; later steps need ``params_<step>.msgpack``
    (``--checkpoints every`` keeps one per point, ``last`` the last only). Returns (rows, notes on what was skipped).
    """
    from csil_diag.diag.run_states import check_steps, open_run

    check_steps(steps)
    run = open_run(run_dir)
    x_train, x_valid = run.normalizer(run.inputs.train.x), run.normalizer(run.inputs.valid.x)
    rows: list[dict[str, Any]] = []
    notes: list[str] = []
    for seed in run.seeds:
        wanted = run.steps(seed, steps)
        if not wanted:
            notes.append(f"seed {seed}: no point with kept online states (a run made before they were kept)")
            continue
        for step in wanted:
            online = run.online(seed, step)
            for row in probe_spaces(
                run.model,
                run.params(seed, step),
                x_train,
                x_valid,
                run.inputs.valid.episode,
                run.normalizer(online["x"]),
                online["episode"],
                run.config.bootstrap,
                seed,
            ):
                rows.append({"seed": seed, "step": step, "input": run.config.input, **row})
            if on_step is not None:
                on_step(seed, step)
    if not rows:
        raise run.no_states_error()
    return write_probe(run_dir, rows), notes
