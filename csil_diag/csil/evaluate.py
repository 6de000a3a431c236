"""`csil-diag evaluate`: a train run's policies re-evaluated on more episodes than its in-run evaluations.

The in-run evaluation (10 episodes in the quick preset) resolves a success rate to ±0.15; whether RL raised the BC
start needs more. Per seed, the start policy (CSIL: the BC-pre-trained HetStat; SACfD: its fresh actor) and the last
checkpoint's actor run on the same fresh episodes (seeds disjoint from the in-run evaluation's), so the comparison is
paired: the episodes the final policy wins and the start loses (and the reverse) give an exact sign test.

The start actor is the one saved by the run (``seed<s>/start_actor.msgpack``); runs made before it was saved re-make
BC from the seed, accepted only if its final loss equals the run's recorded BC row (same code and data).

Beside success, the held-out demo fit of the deterministic action (squared error per action dimension on the
held-out demonstration states, in the composed action space): whether RL moved the policy off the expert where the
expert was.

Output ``<run>/evaluation.parquet``: one row per episode (seed, at, policy, episode, success, length, env_steps),
rewritten atomically after each (seed, at, policy) group; a rerun skips the groups already there with as many episodes.
``<run>/evaluation_fit.parquet``: one row per (seed, at, action dimension) with the held-out squared error and the
KL (nats, mean over the held-out states) of that actor's pre-squash Gaussian from the start actor's.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from csil_diag.errors import UserError
from csil_diag.runs import atomic_write_parquet

REEVAL_SALT = 0x2E7A  # episode seeds of re-evaluations: disjoint from the run's own (EVAL_SALT, TRAIN_SALT)
AT_CHOICES = ("start", "final")
POLICY_CHOICES = ("deterministic", "stochastic")
BC_LOSS_RTOL = 1e-5


def sign_test(wins: int, losses: int) -> float:
    """Exact two-sided p-value of ``wins`` vs ``losses`` discordant pairs under p = ½ (ties dropped)."""
    n = wins + losses
    if n == 0:
        return 1.0
    k = min(wins, losses)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2.0**n
    return min(1.0, 2.0 * tail)


def paired_summary(table: pd.DataFrame, policy: str) -> dict[str, Any]:
    """Start vs final on the episodes both ran (per seed, same episode index): success rates, discordant pairs
    (final wins / final loses) and the sign test's p-value."""
    frame = table[table.policy == policy]
    wide = frame.pivot_table(index=["seed", "episode"], columns="at", values="success", aggfunc="first")
    out: dict[str, Any] = {"policy": policy}
    if not set(AT_CHOICES) <= set(wide.columns):
        return out
    wide = wide.dropna()
    start, final = wide["start"].astype(bool), wide["final"].astype(bool)
    wins, losses = int((final & ~start).sum()), int((start & ~final).sum())
    return out | {
        "episodes": len(wide),
        "start": float(start.mean()),
        "final": float(final.mean()),
        "final_wins": wins,
        "final_losses": losses,
        "p_value": sign_test(wins, losses),
    }


def per_seed(table: pd.DataFrame, policy: str) -> pd.DataFrame:
    """Success rate per seed and ``at`` (columns start / final), with the final checkpoint's env steps."""
    frame = table[table.policy == policy]
    rates = frame.pivot_table(index="seed", columns="at", values="success", aggfunc="mean")
    steps = frame[frame["at"] == "final"].groupby("seed").env_steps.max()
    return rates.assign(env_steps=steps).reset_index()


def demo_fit(actions: np.ndarray, expert: np.ndarray) -> np.ndarray:
    """Mean squared error per action dimension of the policy's actions against the expert's: (N, A), (N, A) → (A,)."""
    return np.mean(np.square(np.asarray(actions, np.float64) - np.asarray(expert, np.float64)), axis=0)


def _read(path: Path) -> pd.DataFrame:
    if not path.exists():
        return pd.DataFrame()
    try:
        return pd.read_parquet(path)
    except (OSError, ValueError) as e:
        raise UserError(f"{path} is damaged ({e}); delete it and rerun `csil-diag evaluate`") from None


def evaluate_run(
    run_dir: str | os.PathLike,
    episodes: int,
    at: tuple[str, ...] = AT_CHOICES,
    policies: tuple[str, ...] = ("deterministic",),
    workers: int = 0,
    on_event: Callable[[str, dict[str, Any]], None] = lambda *a: None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Re-evaluate every seed of a train run; returns (and writes) the per-episode table and the demo-fit table."""
    from csil_diag.csil.seed_trainer import SeedTrainer
    from csil_diag.csil.train_run import TrainRun, load_train_config
    from csil_diag.envs.vector import VectorEnv

    if episodes < 1:
        raise UserError(f"--episodes must be ≥ 1 (got {episodes})")
    for name, values, choices in (("--at", at, AT_CHOICES), ("--policy", policies, POLICY_CHOICES)):
        bad = [v for v in values if v not in choices]
        if bad or not values:
            raise UserError(f"{name} takes a comma-separated subset of {', '.join(choices)} (got {','.join(values)})")
    run_dir = Path(run_dir)
    saved = load_train_config(run_dir)
    config = saved["config_obj"]
    path = run_dir / "evaluation.parquet"
    with TrainRun(config, run_dir, workers or min(os.cpu_count() or 1, config.n_envs)) as run:
        seeds = [s for s in sorted(saved["config"]["seeds"]) if run.progress(s) is not None]
        if not seeds:
            raise UserError(f"{run_dir} has no finished evaluation yet; run `csil-diag train` first")
        run.load()
        recorded = _read(run_dir / "metrics.parquet")
        table = _read(path)
        fit_path = run_dir / "evaluation_fit.parquet"
        fits = _read(fit_path)
        todo = [(s, a, p) for s in seeds for a in at for p in policies]

        def steps_of(seed: int, a: str) -> int:
            return int(run.progress(seed)["env_steps"]) if a == "final" else 0

        def done(seed: int, a: str, p: str) -> bool:
            # A run extended since (a raised --steps) has another final actor: its rows are redone.
            if table.empty:
                return False
            mine = table[(table.seed == seed) & (table["at"] == a) & (table.policy == p)]
            return len(mine) == episodes and bool((mine.env_steps == steps_of(seed, a)).all())

        def fitted(seed: int, a: str) -> bool:
            if fits.empty:
                return False
            mine = fits[(fits.seed == seed) & (fits["at"] == a)]
            return len(mine) > 0 and bool((mine.env_steps == steps_of(seed, a)).all())

        on_event("start", {"total": episodes * len(todo), "done": episodes * sum(done(*t) for t in todo)})
        cameras = {} if run.vla is None else {"cameras": run.vla.cameras, "image_size": run.vla.image_size}
        with VectorEnv(
            config.task, config.n_envs, workers=run.workers, seed=0, horizon=config.horizon, **cameras
        ) as venv:
            for seed in seeds:
                trainer = SeedTrainer(run, venv, seed, on_event)
                actors = _Actors(trainer, recorded)
                for a in at:
                    groups = [p for p in policies if not done(seed, a, p)]
                    if not groups and fitted(seed, a):
                        continue
                    actor, env_steps = actors.get(a)
                    if not fitted(seed, a):
                        stale = (fits.seed == seed) & (fits["at"] == a) if not fits.empty else None
                        kept = fits[~stale] if stale is not None else fits
                        new = _fit_rows(run, actor, actors.get("start")[0], seed, a, env_steps)
                        fits = pd.concat([kept, new], ignore_index=True)
                        atomic_write_parquet(fit_path, fits)
                    for p in groups:
                        result = trainer.reevaluate(actor, p == "stochastic", episodes, REEVAL_SALT, on_event)
                        rows = pd.DataFrame(
                            {
                                "seed": seed,
                                "at": a,
                                "policy": p,
                                "episode": np.arange(episodes),
                                "success": result.success.astype(bool),
                                "length": result.lengths.astype(int),
                                "env_steps": env_steps,
                            }
                        )
                        keep = table.empty or ~((table.seed == seed) & (table["at"] == a) & (table.policy == p))
                        table = pd.concat([table[keep] if not table.empty else table, rows], ignore_index=True)
                        atomic_write_parquet(path, table)
                        on_event("group", {"seed": seed, "at": a, "policy": p, "success": result.success_rate})
    return table, fits


class _Actors:
    """One seed's start and final actors, each loaded (or BC re-made, which takes a while) once."""

    def __init__(self, trainer: Any, recorded: pd.DataFrame) -> None:
        self.trainer, self.recorded, self.cache = trainer, recorded, {}

    def get(self, at: str) -> tuple[Any, int]:
        if at not in self.cache:
            self.cache[at] = _actor(self.trainer, at, self.recorded)
        return self.cache[at]


def _actor(trainer: Any, at: str, recorded: pd.DataFrame) -> tuple[Any, int]:
    """The (actor params, env steps) of ``at`` for one seed."""
    if at == "final":
        state, env_steps = trainer.final_actor()
        return state, env_steps
    actor, bc_row = trainer.start_actor()
    if bc_row is not None:  # re-made BC: it must be the run's own
        mine = recorded[(recorded.get("kind") == "bc") & (recorded.seed == trainer.seed)] if len(recorded) else recorded
        if mine.empty or "loss" not in mine:
            raise UserError(
                f"seed {trainer.seed}: the run saved no start actor and records no BC row to check a re-made one "
                "against; evaluate --at final"
            )
        want, got = float(mine["loss"].iloc[-1]), float(bc_row["loss"])
        if not math.isclose(want, got, rel_tol=BC_LOSS_RTOL, abs_tol=1e-7):
            raise UserError(
                f"seed {trainer.seed}: BC re-made from the seed ends at loss {got:.6g}, the run recorded {want:.6g} "
                "(the code or the data differ from the run's); evaluate --at final"
            )
    return actor, 0


def _fit_rows(run: Any, actor: Any, start: Any, seed: int, at: str, env_steps: int) -> pd.DataFrame:
    """The deterministic action's squared error per dimension on the held-out demo states, and the actor's KL from
    the start actor there (pre-squash Gaussians of the composed policy, closed form; 0 for the start itself)."""
    import jax

    from csil_diag.policy.tanh_gaussian import gaussian_kl

    valid = run.inputs.valid
    base = valid.base_actions if run.composes else None
    x = run.inputs.normalizer(valid.x)
    actions = run.act(actor, x, base, jax.random.key(0), stochastic=False)
    mse = demo_fit(np.asarray(actions), valid.actions)
    kl = np.asarray(gaussian_kl(*run.learner.gaussian(actor, x, base), *run.learner.gaussian(start, x, base)))
    return pd.DataFrame(
        {
            "seed": seed,
            "at": at,
            "dim": np.arange(len(mse)),
            "mse": mse,
            "kl_to_start": kl.mean(0),
            "env_steps": env_steps,
        }
    )


@dataclass(frozen=True)
class PolicySummary:
    """One policy's re-evaluation in numbers: per seed, the IQM over seeds, and the paired start-vs-final test."""

    policy: str
    episodes: int  # the most episodes of any (seed, at) group
    columns: tuple[str, ...]  # the ``at`` evaluated, of start, final (in that order)
    seeds: pd.DataFrame  # :func:`per_seed`
    iqm: dict[str, tuple[float, float, float]]  # at → IQM over seeds, 95 % CI low, high (nan bounds: one seed)
    paired: dict[str, Any]  # :func:`paired_summary`


@dataclass(frozen=True)
class EvaluationSummary:
    policies: list[PolicySummary]  # by policy name
    demo_mse: dict[str, np.ndarray]  # at (start, final) → held-out demo MSE per action dim, mean over seeds
    kl_per_seed: pd.Series | None  # seed → KL(final ‖ start) summed over dims; None without a final fit row
    kl_per_dim: np.ndarray | None  # per action dim, mean over seeds


def evaluation_summary(table: pd.DataFrame, fits: pd.DataFrame) -> EvaluationSummary:
    """The numbers ``csil-diag evaluate`` prints, from the tables :func:`evaluate_run` returns."""
    from csil_diag.diag.aggregate import iqm_ci

    policies = []
    for policy, frame in table.groupby("policy"):
        seeds = per_seed(frame, policy)
        columns = tuple(c for c in AT_CHOICES if c in seeds)
        iqm = {c: iqm_ci(seeds[c].to_numpy()) for c in columns}
        episodes = int(frame.groupby(["seed", "at"]).size().max())
        policies.append(PolicySummary(policy, episodes, columns, seeds, iqm, paired_summary(frame, policy)))
    demo_mse: dict[str, np.ndarray] = {}
    kl_per_seed, kl_per_dim = None, None
    if not fits.empty:
        wide = fits.pivot_table(index="at", columns="dim", values="mse", aggfunc="mean")
        wide = wide.reindex([a for a in AT_CHOICES if a in wide.index])
        demo_mse = {at: row.to_numpy() for at, row in wide.iterrows()}
        if "kl_to_start" in fits and (fits["at"] == "final").any():
            final = fits[fits["at"] == "final"]
            kl_per_dim = final.groupby("dim").kl_to_start.mean().to_numpy()
            kl_per_seed = final.groupby("seed").kl_to_start.sum()
    return EvaluationSummary(policies, demo_mse, kl_per_seed, kl_per_dim)
