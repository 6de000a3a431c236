"""Aggregates over seeds with rliable (Agarwal et al. 2021): IQM and stratified-bootstrap 95 % CIs."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd


def iqm_ci(scores: np.ndarray, reps: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    """(IQM, low, high) of runs' scores (n_runs,) or (n_runs, n_tasks); one run: its score and no interval."""
    from rliable import library as rly
    from rliable import metrics

    scores = np.asarray(scores, np.float64)
    if scores.ndim == 1:
        scores = scores[:, None]
    if len(scores) < 2:
        value = float(scores.mean())
        return value, float("nan"), float("nan")

    def aggregate(x: np.ndarray) -> np.ndarray:
        return np.array([metrics.aggregate_iqm(x)])

    saved = np.random.get_state()  # rliable's bootstrap draws from numpy's global generator: seed it, then restore
    np.random.seed(seed)
    try:
        point, interval = rly.get_interval_estimates({"x": scores}, aggregate, reps=reps)
    finally:
        np.random.set_state(saved)
    return float(point["x"][0]), float(interval["x"][0, 0]), float(interval["x"][1, 0])


def curves(evals: pd.DataFrame, value: str, by: tuple[str, ...] = ("algo",), reps: int = 2000) -> pd.DataFrame:
    """IQM and CI of ``value`` over seeds at every evaluation (env_steps), per group (algo, mode, run …)."""
    rows = []
    for keys, frame in evals.groupby([*by, "env_steps"]):
        scores = frame[value].to_numpy()
        iqm, lo, hi = iqm_ci(scores, reps)
        row = dict(zip([*by, "env_steps"], keys, strict=True))
        rows.append(row | {"iqm": iqm, "lo": lo, "hi": hi, "n": len(scores)})
    return pd.DataFrame(rows)


def align_seeds(rows: pd.DataFrame, by: tuple[str, ...] = ("run",)) -> pd.DataFrame:
    """Rows of one kind with ``env_steps`` replaced by the mean over seeds of the same row index (per group).

    An evaluation waits for the episodes in flight, so seeds evaluate at slightly different env steps (6400, 6436,
    6447); aggregating on the raw steps would give one seed per point. The k-th row of every seed is one point,
    placed at their mean step; the seed's own step is kept as ``env_steps_seed``.
    """
    keys = [k for k in by if k in rows]
    out = rows.sort_values([*keys, "seed", "env_steps"], kind="stable").copy()
    out["env_steps_seed"] = out["env_steps"]
    index = out.groupby([*keys, "seed"]).cumcount()  # the k-th row of its seed
    mean = out.groupby([*(out[k] for k in keys), index])["env_steps_seed"].transform("mean")
    out["env_steps"] = mean.round().astype(np.int64)
    return out


@dataclass(frozen=True)
class TrainSuccess:
    """A train run's in-run evaluations in numbers: per seed, and the IQM over seeds at the start and the end."""

    seeds: pd.DataFrame  # per seed (ascending): start, final, best success; env_steps and auroc_gauss_valid at the end
    start: tuple[float, float, float]  # IQM, 95 % CI low, high of the seeds' first evaluation (nan bounds: one seed)
    final: tuple[float, float, float]  # … and of their last
    env_steps: int  # the most environment steps any seed's evaluation was made at


def train_success(metrics: pd.DataFrame) -> TrainSuccess | None:
    """The success summary of a train run's ``metrics.parquet`` rows; None where no evaluation has finished."""
    evals = metrics[metrics.kind == "eval"].sort_values(["seed", "env_steps"])
    if evals.empty:
        return None
    rows = []
    for seed, frame in evals.groupby("seed"):
        first, last = frame.iloc[0], frame.iloc[-1]
        auroc = last["auroc_gauss_valid"] if "auroc_gauss_valid" in frame else np.nan  # runs older than the column
        rows.append(
            {
                "seed": seed,
                "start": first.success_rate,
                "final": last.success_rate,
                "best": frame.success_rate.max(),
                "env_steps": last.env_steps,
                "auroc_gauss_valid": auroc,
            }
        )
    finals = evals.groupby("seed").tail(1).success_rate.to_numpy()
    starts = evals.groupby("seed").head(1).success_rate.to_numpy()
    return TrainSuccess(pd.DataFrame(rows), iqm_ci(starts), iqm_ci(finals), int(evals.env_steps.max()))
