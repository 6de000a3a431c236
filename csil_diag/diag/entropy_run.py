"""`csil-diag entropy`: online vs expert action entropy during BC pre-training (thesis Fig. 6.4).

For every seed, BC pre-training of a HetStat is paused every ``every`` steps to measure
- expert entropy: per-state entropy over training-demo states and, separately, held-out demo states;
- online entropy: over every state visited by ``episodes`` stochastic rollouts of the current policy;
- the deterministic policy's success rate over ``eval_episodes`` rollouts;
- separation: AUROC (online vs held-out / training expert states), the gap with a 95 % CI, per-dim stds.

Run directory::

    config.json          resolved config, normaliser statistics, dataset fingerprint, versions
    entropy.parquet      one row per seed × step × split (train | valid | online), rebuilt after each point
    points/              the same rows, one file per finished (seed, step): the unit of resumption
    states/              per-state entropies of each point (for distributions in the report)
    features/            the online states of each point: raw input features, episode, time in episode, success
                         (for projections and the trunk probe; expert states are re-read from the demos)
    checkpoints/seed<s>/ params_<step>.msgpack at every point (--checkpoints last: the last only); state.msgpack
                         (params + optimiser) while the seed is unfinished (kept with --checkpoints every)

Re-running the same command skips finished points; Ctrl-C loses only the unfinished point.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from csil_diag.config import BCConfig, HetStatConfig
from csil_diag.diag.entropy import make_state_evaluator, separation_summary, split_summary
from csil_diag.envs.rollouts import (
    RolloutResult,
    episode_seeds,
    run_episodes,
    run_episodes_together,
    save_online_states,
)
from csil_diag.envs.tasks import ACTION_DIM
from csil_diag.envs.vector import VectorEnv
from csil_diag.errors import UserError
from csil_diag.features.dataset import DemoFeatures
from csil_diag.features.sources import model_sources
from csil_diag.features.spec import InputSpec
from csil_diag.phases import phase
from csil_diag.policy import tanh_gaussian as tg
from csil_diag.policy.actor import make_act
from csil_diag.policy.bc import BCState, init_state, make_train_fn
from csil_diag.policy.hetstat import HetStat
from csil_diag.policy.posterior_head import fit_posterior_head
from csil_diag.resumable import (
    ResumableRun,
    check_input,
    check_site,
    check_std_floor,
    load_run_config,
    needs_vla,
    rebuild_parquet,
    run_identity,
)
from csil_diag.runs import atomic_write_parquet, file_fingerprint, load_pytree, save_pytree

TRAIN_CHUNK = 100  # BC steps per jitted call
JOINT_ROLLOUT_ENVS = 16  # at most this many envs for running a point's two kinds of rollouts side by side


@dataclass(frozen=True)
class EntropyConfig:
    """Everything that defines an entropy run (saved as config.json; must match on resume)."""

    KIND: ClassVar[str] = "entropy"  # its presets in config.PRESETS

    task: str
    input: str
    demos: str
    steps: int = 20000
    every: int = 2000
    episodes: int = 10  # stochastic rollouts per point (online states)
    eval_episodes: int = 10  # deterministic rollouts per point (success rate)
    seeds: tuple[int, ...] = (0, 1, 2)
    k_samples: int = 32
    max_expert_states: int = 20000
    std_floor: float = 0.01
    bootstrap: int = 1000
    checkpoints: str = "every"  # every | last
    horizon: int | None = None  # None: the task's (400); shorter only for quick checks
    hetstat: HetStatConfig = field(default_factory=HetStatConfig)
    bc: BCConfig = field(default_factory=BCConfig)
    # The VLA (π0), used when --input has pi0 or bc.mode composes with its action (residual / ensemble):
    model: str | None = None  # checkpoint directory (None: the embedded default)
    site: str = "state"  # embedding site: state | actions | prefix
    replan: int = 1  # online: query the VLA every this many steps (reusing its chunk and last embedding)
    # Evaluate the untrained HetStat at step 0 too. Off for sweeps that only need the last point: it halves a
    # two-point run, and training is unchanged (chunks start at multiples of TRAIN_CHUNK from step 0 either way).
    initial_point: bool = True

    def __post_init__(self) -> None:
        check_input(self)
        if any(s < 0 for s in self.seeds):
            raise UserError(f"--seeds must be non-negative integers such as 0,1,2 (got {list(self.seeds)})")
        if len(set(self.seeds)) != len(self.seeds):
            raise UserError(f"--seeds names a seed twice ({list(self.seeds)}); give each seed once")
        check_std_floor(self.std_floor, " such as 0.01")
        if self.bootstrap < 1 or self.max_expert_states < 1:
            raise UserError("bootstrap and max_expert_states must be ≥ 1")
        if self.steps < 0 or self.every < 1:
            raise UserError("--steps must be ≥ 0 and --every ≥ 1")
        if self.episodes < 1 or self.eval_episodes < 0 or self.k_samples < 1:
            raise UserError("--episodes and --k must be ≥ 1 (--eval-episodes ≥ 0)")
        if not self.seeds:
            raise UserError("--seeds must name at least one seed, e.g. --seeds 0,1,2")
        if self.checkpoints not in ("every", "last"):
            raise UserError("--checkpoints must be every or last")
        if self.replan != 1:
            # Demo states always get a fresh embedding and action; with replan > 1 online states would get a stale
            # embedding and a later chunk action, and the two sides would differ by construction.
            raise UserError(
                f"--replan {self.replan}: the diagnostic compares online and demo states only with a fresh π0 query "
                "at every step; use --replan 1 (chunked execution is for `csil-diag vla eval`)"
            )
        check_site(self.site)

    @property
    def uses_vla(self) -> bool:
        """True when the VLA feeds the input or is the base the HetStat composes with."""
        return needs_vla(self.input, self.bc.mode)

    @property
    def points(self) -> list[int]:
        first = 0 if self.initial_point else self.every  # steps = 0 still gives [0]: the set holds self.steps
        return sorted({*range(first, self.steps, self.every), self.steps})

    def identity(self) -> dict[str, Any]:
        """The settings a resumed run must share (seeds may be added)."""
        # The VLA is identified by its fingerprint (EntropyRun adds it), the dataset by its sha256 (config.json's
        # demos.fingerprint); runs made before --no-initial-point existed keep their identity.
        drop = ("seeds", "model", "demos", *(("initial_point",) if self.initial_point else ()))
        return run_identity(self, drop)


# How each identity key is spelled on the command line, for "other settings" refusals.
OPTION_NAMES: dict[str, str] = {
    "task": "--task",
    "input": "--input",
    "steps": "--steps",
    "every": "--every",
    "initial_point": "--initial-point/--no-initial-point",
    "episodes": "--episodes",
    "eval_episodes": "--eval-episodes",
    "k_samples": "--k",
    "std_floor": "--std-floor",
    "checkpoints": "--checkpoints",
    "site": "--site",
    "replan": "--replan",
    "vla_model": "--model (its fingerprint)",
    "hetstat.covariance": "--covariance",
    "hetstat.activation": "--activation",
    "hetstat.trunk": "--trunk",
    "hetstat.spectral_bound": "--spectral-bound",
    "hetstat.input_transform": "--input-transform",
    "hetstat.log_lengthscale_init": "--lengthscale-init",
    "hetstat.learn_lengthscale": "--learn-lengthscale/--fixed-lengthscale",
    "hetstat.rf_skip": "--rf-skip",
    "hetstat.head": "--head",
    "bc.learning_rate": "--lr",
    "bc.batch_size": "--batch-size",
    "bc.mode": "--mode",
}


@dataclass
class PointResult:
    seed: int
    step: int
    rows: list[dict[str, Any]]


def default_mode(input_spec: str) -> str:
    """With a VLA in the input, the HetStat is a residual on the VLA's action (thesis §4); else the only head."""
    return "residual" if model_sources(InputSpec.parse(input_spec)) else "head"


class EntropyRun(ResumableRun):
    """One run directory: data, model and evaluation shared by all seeds; for every seed and point: train →
    evaluate → write (the checks, lock, inputs, config.json and resume are :class:`ResumableRun`'s)."""

    KIND: ClassVar[str] = "entropy"
    COMMAND: ClassVar[str] = "csil-diag entropy"
    OPTION_NAMES: ClassVar[dict[str, str]] = OPTION_NAMES
    config: EntropyConfig

    @property
    def policy_batch(self) -> int:
        """The HetStat acts on batches padded to this many rows (its samples depend on the batch shape)."""
        return max(self.config.episodes, self.config.eval_episodes)

    @property
    def joint_rollouts(self) -> bool:
        """Stochastic and deterministic rollouts run side by side on their own envs (one π0 call and one env round
        trip a step for both) unless that would need too many envs; the numbers are the same either way (tested)."""
        cfg = self.config
        return cfg.eval_episodes > 0 and cfg.episodes + cfg.eval_episodes <= JOINT_ROLLOUT_ENVS

    @property
    def n_envs(self) -> int:
        cfg = self.config
        return cfg.episodes + cfg.eval_episodes if self.joint_rollouts else self.policy_batch

    # ------------------------------------------------------------------------------------ inputs
    def _build(self) -> None:
        config, inputs = self.config, self.inputs
        self.train, self.valid, self.normalizer = inputs.train, inputs.valid, inputs.normalizer
        self.x_train = jnp.asarray(self.normalizer(self.train.x))
        self.a_train = jnp.asarray(self.train.actions)
        self.base_train = self._base(self.train.base_actions)
        self.model = HetStat(config.hetstat, ACTION_DIM, self.normalizer.out_width)
        self.train_fn = make_train_fn(self.model, config.bc)
        self.evaluate = make_state_evaluator(self.model, config.bc.mode, config.k_samples)
        self.expert_train = self._subsample(self.train, config.max_expert_states)
        self._act = make_act(self.model, config.bc.mode)

    def _config_record(self) -> dict[str, Any]:
        record: dict[str, Any] = {"demos": {"valid_states": len(self.inputs.valid.x)}}
        if self.vla is not None and self.inputs.embedded is not None:
            record["vla"] = {
                "model_dir": self.config.model,
                "fingerprint": self.vla.fingerprint,
                "site": self.vla.site,
                "width": self.vla.width,
                "replan": self.config.replan,
                "embeddings": str(self.inputs.embedded.path),
            }
        return record

    def _base(self, base_actions: np.ndarray | None) -> jnp.ndarray | None:
        return tg.composed_base(self.config.bc.mode, base_actions)

    def point_params(self, params: Any) -> Any:
        """The parameters a point evaluates and acts with: BC's, or with the posterior head fitted on them."""
        cfg = self.config
        if cfg.hetstat.head != "posterior":
            return params
        return fit_posterior_head(self.model, params, self.x_train, self.a_train, self.base_train, cfg.bc.mode)[0]

    def _subsample(self, data: DemoFeatures, limit: int) -> DemoFeatures:
        if len(data.x) <= limit:
            return data
        idx = np.sort(np.random.default_rng(0).choice(len(data.x), limit, replace=False))
        return data.take(idx)

    # ------------------------------------------------------------------------------------ policy
    def make_policy(self, params, stochastic: bool, seed: int, batch: int):
        # π0's own sampling noise differs between seeds and points (ids < 2^32: 2^18 streams of 2^14 queries).
        return self.rollout_actor(self._act, batch, (seed % 2**18) << 14).policy(params, stochastic, seed)

    # ------------------------------------------------------------------------------------ files
    def point_path(self, seed: int, step: int) -> Path:
        return self.out / "points" / f"seed{seed}_step{step:08d}.parquet"

    def ckpt_dir(self, seed: int) -> Path:
        return self.out / "checkpoints" / f"seed{seed}"

    def read_point(self, seed: int, step: int) -> pd.DataFrame | None:
        """A finished point's rows; None when missing or unreadable (a corrupt file is removed, to be recomputed)."""
        return _read_point_file(self.point_path(seed, step))

    def rebuild_table(self) -> pd.DataFrame:
        parts = sorted((self.out / "points").glob("*.parquet"))
        return rebuild_parquet(self.out / "entropy.parquet", parts, ["seed", "step", "split"], _read_point_file)

    # ------------------------------------------------------------------------------------ one point
    def evaluate_point(self, venv: VectorEnv, state: BCState, seed: int, metrics: dict[str, float]) -> PointResult:
        cfg = self.config
        step = int(state.step)
        params = self.point_params(state.params)
        eval_seed = int(np.random.SeedSequence([seed, step]).generate_state(1)[0])
        with phase("expert_states"):
            expert = {
                "train": (self.expert_train, self._evaluate(params, self.expert_train, eval_seed)),
                "valid": (self.valid, self._evaluate(params, self.valid, eval_seed + 1)),
            }
        seeds = episode_seeds(seed, max(cfg.episodes, cfg.eval_episodes))
        stochastic = self.make_policy(params, True, eval_seed + 2, self.policy_batch)
        deterministic = self.make_policy(params, False, eval_seed + 4, self.policy_batch)
        det: RolloutResult | None = None
        if self.joint_rollouts:
            with phase("rollouts"):
                online, det = run_episodes_together(
                    venv,
                    [
                        (stochastic, seeds[: cfg.episodes], range(cfg.episodes)),
                        (deterministic, seeds[: cfg.eval_episodes], range(cfg.episodes, venv.n_envs)),
                    ],
                )
        else:
            with phase("rollouts_stochastic"):
                online = run_episodes(venv, stochastic, seeds[: cfg.episodes])
        with phase("online_states"):
            online_metrics = self.evaluate(
                params, self.normalizer(online.features), self._base(online.base_actions), eval_seed + 3
            )
        if cfg.eval_episodes and det is None:
            with phase("rollouts_deterministic"):
                det = run_episodes(venv, deterministic, seeds[: cfg.eval_episodes])
        success = float("nan") if det is None else det.success_rate
        base = {
            "task": cfg.task,
            "input": cfg.input,
            "covariance": cfg.hetstat.covariance,
            "activation": cfg.hetstat.activation,
            "mode": cfg.bc.mode,
            "seed": seed,
            "step": step,
            "k_samples": cfg.k_samples,
            **{f"bc_{k}": v for k, v in metrics.items()},
        }
        if self.vla is not None:
            base |= {"vla_model": self.vla.fingerprint, "site": self.vla.site, "replan": cfg.replan}
        rows = []
        for split, (data, m) in expert.items():
            rows.append(
                {
                    **base,
                    "split": split,
                    "n_episodes": len(data.demos),
                    **split_summary(m),
                    **self._demo_fit(params, data),
                }
            )
        row = {
            **base,
            "split": "online",
            "n_episodes": len(online.success),
            **split_summary(online_metrics),
            "success_rate": success,
            "stochastic_success_rate": online.success_rate,
            "mean_length": float(online.lengths.mean()),
        }
        for split, (data, m) in expert.items():
            row |= separation_summary(online_metrics, online.episode, m, data.episode, split, cfg.bootstrap, eval_seed)
        rows.append(row)
        states = pd.concat(
            [
                pd.DataFrame(
                    {
                        "split": split,
                        "episode": data.episode,
                        "entropy": m["entropy"],
                        "gaussian_entropy": m["gaussian_entropy"],
                    }
                )
                for split, (data, m) in {**expert, "online": (online, online_metrics)}.items()
            ],
            ignore_index=True,
        ).assign(seed=seed, step=step)
        atomic_write_parquet(self.out / "states" / f"seed{seed}_step{step:08d}.parquet", states)
        save_online_states(self.out / "features" / f"seed{seed}_step{step:08d}.npz", online)
        return PointResult(seed, step, rows)

    def _evaluate(self, params, data: DemoFeatures, seed: int):
        return self.evaluate(params, self.normalizer(data.x), self._base(data.base_actions), seed)

    def _demo_fit(self, params, data: DemoFeatures) -> dict[str, float]:
        """MSE of the deterministic action and NLL of the demo actions on one split (composed with the VLA)."""
        mu, std = self.model.apply(params, jnp.asarray(self.normalizer(data.x)))
        mode, base = self.config.bc.mode, self._base(data.base_actions)
        mse = float(jnp.mean(jnp.square(tg.deterministic_action(mode, mu, base) - data.actions)))
        nll = float(-jnp.mean(tg.log_prob(mode, jnp.asarray(data.actions), mu, std, base)))
        return {"demo_mse": mse, "demo_nll": nll}

    # ------------------------------------------------------------------------------------ one seed
    def run_seed(self, venv: VectorEnv, seed: int, on_event: Callable[[str, int, int], None]) -> None:
        cfg = self.config
        fresh = init_state(self.model, cfg.bc, jax.random.key(seed), self.normalizer.out_width)
        state = fresh
        state_file = self.ckpt_dir(seed) / "state.msgpack"
        if state_file.exists():
            try:
                state = load_pytree(state_file, fresh)
            except UserError:  # killed mid-write on a file system without atomic rename, or damaged: retrain
                state = fresh
        done = {p for p in cfg.points if self.read_point(seed, p) is not None}
        if done == set(cfg.points):  # a finished seed needs neither its train state nor any training
            for point in cfg.points:
                on_event("done", seed, point)
            return
        if any(p < int(state.step) and p not in done for p in cfg.points):
            # A point behind the saved state is missing or was corrupt: training is a pure function of (seed, step),
            # so retraining from step 0 recomputes it exactly (finished points are not evaluated again).
            state = fresh
        metrics: dict[str, float] = {}
        for point in cfg.points:
            if point < int(state.step):
                on_event("done", seed, point)
                continue
            while int(state.step) < point:
                n = min(TRAIN_CHUNK, point - int(state.step))
                key = jax.random.fold_in(jax.random.key(seed), int(state.step))
                with phase("bc_train"):
                    state, out = self.train_fn(state, key, self.x_train, self.a_train, self.base_train, n_steps=n)
                    metrics = {k: float(v) for k, v in out.items()}
                if not math.isfinite(metrics["loss"]):
                    raise UserError(
                        f"BC loss became {metrics['loss']} at step {int(state.step)} (seed {seed}) although the "
                        f"inputs are finite: training diverged at --lr {cfg.bc.learning_rate}; lower --lr"
                    )
                on_event("train", seed, int(state.step))
            if point not in done:
                on_event("evaluate", seed, point)
                result = self.evaluate_point(venv, state, seed, metrics)
                atomic_write_parquet(self.point_path(seed, point), pd.DataFrame(result.rows))
                if cfg.checkpoints == "every" or point == cfg.points[-1]:
                    save_pytree(self.ckpt_dir(seed) / f"params_{point:08d}.msgpack", state.params)
                if point == cfg.points[-1] and cfg.checkpoints == "last":
                    state_file.unlink(missing_ok=True)  # nothing trains past the last point: the params suffice
                else:
                    save_pytree(state_file, state)
                self.rebuild_table()
                self._mark_updated()
            on_event("done", seed, point)

    def _report_finished(self, on_event: Callable[[str, int, int], None]) -> None:
        for seed in self.config.seeds:
            for point in self.config.points:
                on_event("done", seed, point)

    def _finished(self) -> bool:
        """Every asked point already written by a run of this identity: then π0, the embeddings and the env workers
        need not load (a resumed sweep re-enters each finished cell). Any doubt returns False, and :meth:`load`
        refuses what differs by name."""
        saved, cfg = self._saved, self.config
        if saved is None or self.inputs is not None:
            return False
        if any(self.read_point(s, p) is None for s in cfg.seeds for p in cfg.points):
            return False  # missing, or damaged (then removed, to be recomputed)
        if saved.get("demos", {}).get("fingerprint") != file_fingerprint(cfg.demos):
            return False
        if cfg.uses_vla:
            from csil_diag.vla.checkpoint import load_checkpoint
            from csil_diag.vla.policy import model_fingerprint, resolve_model_dir

            fingerprint = model_fingerprint(load_checkpoint(resolve_model_dir(cfg.model)))
            if saved.get("identity", {}).get("vla_model") != fingerprint:
                return False
        return True


def _read_point_file(path: Path) -> pd.DataFrame | None:
    if not path.exists():
        return None
    try:
        return pd.read_parquet(path)
    except Exception:  # a damaged file: recomputed by the seed that owns it
        path.unlink(missing_ok=True)
        return None


def load_config(run_dir: str | os.PathLike) -> dict[str, Any]:
    """config.json of an entropy run directory, with a clear error when it is not one."""
    return load_run_config(run_dir, EntropyConfig, "csil-diag entropy", None)
