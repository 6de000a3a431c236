"""The trunk probe: where is the online/expert distinction lost — in the input, or in the HetStat's trunk?

For every online state and every held-out expert state, its Euclidean distance to the nearest training-demo state in
three spaces of the HetStat at a BC step: the input (normalised features), the trunk's bottleneck h, and the stationary
random features φ(h). The AUROC of online against held-out distances says how well each space tells them apart.
Separation present at the input and gone at the bottleneck: the trunk maps off-distribution inputs onto in-distribution
features before the stationary layer sees them. Absent already at the input: the embedding is what makes them alike.
"""

from __future__ import annotations

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


def representations(model: nn.Module, params: Any, x: np.ndarray, chunk: int = 4096) -> dict[str, np.ndarray]:
    """The three spaces of normalised inputs x (N, D): input (N, D), bottleneck (N, 48), features (N, F)."""

    @jax.jit
    def run(xs):
        _, _, h, phi = model.apply(params, xs, with_features=True)
        return h, phi

    hs, phis = [], []
    for start in range(0, len(x), chunk):
        h, phi = run(jnp.asarray(x[start : start + chunk]))
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
    from csil_diag.csil.bc import init_state
    from csil_diag.diag.entropy_run import load_config
    from csil_diag.diag.rollouts import load_online_states
    from csil_diag.envs.tasks import ACTION_DIM
    from csil_diag.errors import UserError
    from csil_diag.features.inputs import load_inputs, load_vla
    from csil_diag.features.normalize import Normalizer
    from csil_diag.features.spec import InputSpec
    from csil_diag.policy.hetstat import HetStat
    from csil_diag.runs import load_pytree

    if steps not in ("first,last", "all"):
        raise UserError(f"--steps must be first,last or all (got {steps!r})")
    run_dir = Path(run_dir)
    meta = load_config(run_dir)
    cfg = meta["config_obj"]
    spec = InputSpec.parse(cfg.input)
    vla = None
    if cfg.uses_vla:
        vla = load_vla(cfg.model, cfg.site, max(cfg.episodes, cfg.eval_episodes), spec, cfg.demos)
    inputs = load_inputs(cfg.demos, spec, cfg.std_floor, vla)
    normalizer = Normalizer.from_dict(meta["normalizer"])
    x_train, x_valid = normalizer(inputs.train.x), normalizer(inputs.valid.x)
    model = HetStat(cfg.hetstat, ACTION_DIM)
    width = int(x_train.shape[1])
    rows: list[dict[str, Any]] = []
    notes: list[str] = []
    for seed in meta["config"]["seeds"]:
        ckpt = run_dir / "checkpoints" / f"seed{seed}"
        fresh = init_state(model, cfg.bc, jax.random.key(seed), width).params
        have = [0, *sorted(int(p.stem.split("_")[1]) for p in ckpt.glob("params_*.msgpack"))]
        have = [s for s in dict.fromkeys(have) if (run_dir / "features" / f"seed{seed}_step{s:08d}.npz").exists()]
        if not have:
            notes.append(f"seed {seed}: no point with kept online states (a run made before they were kept)")
            continue
        wanted = have if steps == "all" else sorted({have[0], have[-1]})
        for step in wanted:
            params = fresh if step == 0 else load_pytree(ckpt / f"params_{step:08d}.msgpack", fresh)
            online = load_online_states(run_dir / "features" / f"seed{seed}_step{step:08d}.npz")
            for row in probe_spaces(
                model,
                params,
                x_train,
                x_valid,
                inputs.valid.episode,
                normalizer(online["x"]),
                online["episode"],
                cfg.bootstrap,
                seed,
            ):
                rows.append({"seed": seed, "step": step, "input": cfg.input, **row})
            if on_step is not None:
                on_step(seed, step)
    if not rows:
        raise UserError(f"{run_dir} has no point with kept online states; rerun `csil-diag entropy` into a new --out")
    return write_probe(run_dir, rows), notes
