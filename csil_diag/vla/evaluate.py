"""Success rate of π0 acting alone: chunked execution in parallel envs, one batched model call per step."""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from csil_diag.envs.rollouts import Progress, run_episodes
from csil_diag.envs.tasks import task_spec
from csil_diag.envs.vector import VectorEnv
from csil_diag.errors import UserError
from csil_diag.runs import atomic_write_json, now_utc, versions
from csil_diag.vla.policy import ChunkedActor, VLAPolicy

MAX_ENVS = 25  # parallel envs by default: one wave for the thesis' 25 evaluation episodes


@dataclass(frozen=True)
class EvalConfig:
    task: str
    episodes: int = 25
    replan: int = 4  # execute this many actions of each chunk, then re-query
    seed: int = 0  # episode seeds and the model's noise
    horizon: int | None = None  # None: the task's
    envs: int = 0  # parallel envs (0: min(episodes, 25))
    num_steps: int = 10  # Euler steps per chunk

    def __post_init__(self) -> None:
        task_spec(self.task)
        if self.episodes < 1 or self.envs < 0:
            raise UserError("--episodes must be ≥ 1 and --envs ≥ 0")
        if self.horizon is not None and self.horizon < 1:
            raise UserError(f"--horizon must be ≥ 1 (got {self.horizon})")
        if self.seed < 0 or self.replan < 1:
            raise UserError(f"--seed must be ≥ 0 and --replan ≥ 1 (got {self.seed}, {self.replan})")

    @property
    def n_envs(self) -> int:
        return min(self.envs or MAX_ENVS, self.episodes)


@dataclass(frozen=True)
class EvalResult:
    model_dir: str
    model: str  # fingerprint
    config: EvalConfig
    success: list[bool]
    lengths: list[int]
    seconds: float  # wall time: envs, compilation and rollouts
    rollout_seconds: float  # the episodes alone
    model_calls: int
    model_queries: int

    @property
    def success_rate(self) -> float:
        return float(np.mean(self.success))

    @property
    def env_steps(self) -> int:
        return int(sum(self.lengths))

    @property
    def steps_per_s(self) -> float:
        return self.env_steps / self.rollout_seconds if self.rollout_seconds > 0 else float("nan")

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": "vla_eval",
            "model_dir": self.model_dir,
            "model": self.model,
            "config": asdict(self.config),
            "success_rate": self.success_rate,
            "successes": int(sum(self.success)),
            "episodes": len(self.success),
            "mean_length": float(np.mean(self.lengths)),
            "success": self.success,
            "lengths": self.lengths,
            "seconds": self.seconds,
            "rollout_seconds": self.rollout_seconds,
            "env_steps": self.env_steps,
            "env_steps_per_s": self.steps_per_s,
            "model_calls": self.model_calls,
            "model_queries": self.model_queries,
            "created": now_utc(),
            "versions": versions(),
        }

    def line(self) -> str:
        return (
            f"{self.config.task}: success {self.success_rate:.0%} ({sum(self.success)}/{len(self.success)}), "
            f"mean episode length {np.mean(self.lengths):.1f}, wall time {self.seconds:.1f} s "
            f"({self.steps_per_s:.1f} env steps/s in the episodes, {self.model_calls} batched model calls)"
        )


def episode_seeds(seed: int, n: int) -> list[int]:
    # Salted, so evaluation never starts from the initial states of `csil-diag demos --seed <seed>`.
    return [int(np.random.SeedSequence([seed, e, 0xE7A1]).generate_state(1)[0]) for e in range(n)]


def default_out(model_dir: str | os.PathLike, config: EvalConfig) -> Path:
    """Results live with the model: <model>/eval/<task>-replan<r>-seed<s>-<n>ep.json."""
    return Path(model_dir) / "eval" / f"{config.task}-replan{config.replan}-seed{config.seed}-{config.episodes}ep.json"


def evaluate_model(
    model_dir: str | os.PathLike, config: EvalConfig, *, workers: int = 0, on_step: Progress | None = None
) -> EvalResult:
    """Run ``config.episodes`` episodes of the model alone (chunked execution) and count successes."""
    policy = VLAPolicy.load(model_dir, batch_size=config.n_envs, seed=config.seed, num_steps=config.num_steps)
    actor = ChunkedActor(policy, config.task, config.replan)

    def act(obs_list: list[dict[str, np.ndarray]], envs: list[int], fresh: list[bool]):
        actions, embeddings = actor(obs_list, envs, fresh)
        return actions, embeddings, actions

    start = time.perf_counter()
    with VectorEnv(
        config.task,
        config.n_envs,
        workers=workers,
        cameras=policy.cameras,
        image_size=policy.image_size,
        seed=0,
        horizon=config.horizon,
    ) as venv:
        rollout_start = time.perf_counter()
        result = run_episodes(venv, act, episode_seeds(config.seed, config.episodes), on_step)
        rollout_seconds = time.perf_counter() - rollout_start
    return EvalResult(
        model_dir=str(model_dir),
        model=policy.fingerprint,
        config=config,
        success=[bool(s) for s in result.success],
        lengths=[int(n) for n in result.lengths],
        seconds=time.perf_counter() - start,
        rollout_seconds=rollout_seconds,
        model_calls=actor.calls,
        model_queries=actor.queries,
    )


def write_result(result: EvalResult, out: str | os.PathLike) -> Path:
    out = Path(out)
    try:
        atomic_write_json(out, result.to_json())
    except OSError as exc:
        raise UserError(f"cannot write {out} ({exc}); pass a writable --out") from None
    return out
