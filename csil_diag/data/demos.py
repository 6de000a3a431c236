"""Scripted demonstrations → robomimic HDF5, in parallel, atomically, resumable.

Attempt ``i`` always uses the same episode seed, and results are consumed in attempt order, so a
dataset does not depend on the number of workers or on how often the run was interrupted.
Work in progress lives in ``<out>.partial`` (flushed after every demo); the final file appears, by an
atomic rename, only once it holds every requested demo.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from csil_diag import __version__
from csil_diag.data.expert_base import ExpertConfig
from csil_diag.data.experts import make_expert
from csil_diag.data.robomimic import Episode, check_robomimic, demo_sort_key, finalize, write_episode
from csil_diag.envs.tasks import RobosuiteTask, camera_names, env_args, make_env, task_spec
from csil_diag.errors import UserError
from csil_diag.procs import die_with_parent, spawner
from csil_diag.runs import check_output_file, identity_differences, take_lock


@dataclass(frozen=True)
class DemoConfig:
    """What to generate. Everything here is recorded in the file and must match on resume."""

    task: str
    n: int
    cameras: tuple[str, ...] = ()
    image_size: int = 84
    noise: float = 0.0
    speed_jitter: float = 0.0
    seed: int = 0
    valid_fraction: float = 0.1
    max_attempts_factor: float = 3.0  # give up if the expert fails this often

    def __post_init__(self) -> None:
        task_spec(self.task)
        camera_names(self.cameras)
        if self.n < 1:
            raise UserError(f"--n must be at least 1 (got {self.n})")
        if not 0.0 <= self.valid_fraction < 1.0:
            raise UserError(f"--valid-fraction must be in [0, 1) (got {self.valid_fraction})")
        if not (self.noise >= 0 and self.speed_jitter >= 0 and math.isfinite(self.noise + self.speed_jitter)):
            raise UserError(f"--noise and --speed-jitter must be numbers ≥ 0 (got {self.noise}, {self.speed_jitter})")
        if self.seed < 0:
            raise UserError(f"--seed must be a non-negative integer (got {self.seed})")
        if not 8 <= self.image_size <= 1024:
            raise UserError(f"image size {self.image_size} is out of range; use 8 … 1024 pixels")

    def identity(self) -> dict[str, Any]:
        """The settings a resumed or extended file must share with this request."""
        return {k: v for k, v in asdict(self).items() if k not in ("n", "max_attempts_factor")} | {
            "cameras": list(self.cameras)
        }


# How each identity key is spelled on the command line, for "other settings" refusals.
OPTION_NAMES = {
    k: f"--{k.replace('_', '-')}" for k in ("task", "cameras", "image_size", "noise", "speed_jitter", "seed")
}
OPTION_NAMES["valid_fraction"] = "--valid-fraction"


@dataclass
class DemoSummary:
    path: Path
    demos: int
    attempts: int
    new_demos: int
    seconds: float
    steps: int
    resumed_from: int = 0
    lengths: list[int] = field(default_factory=list)

    @property
    def success_rate(self) -> float:
        return self.demos / max(self.attempts, 1)

    def line(self) -> str:
        return f"{self.demos} demos from {self.attempts} attempts ({100 * self.success_rate:.1f} % success)"


def episode_seed(base_seed: int, attempt: int) -> int:
    """A well-mixed, reproducible seed for attempt ``attempt``."""
    return int(np.random.SeedSequence([base_seed, attempt]).generate_state(1)[0])


def record_episode(env: RobosuiteTask, config: DemoConfig, attempt: int) -> Episode:
    """Run the scripted expert once and record everything robomimic stores."""
    seed = episode_seed(config.seed, attempt)
    expert = make_expert(config.task, ExpertConfig(noise=config.noise, speed_jitter=config.speed_jitter))
    obs = env.reset(seed=seed)
    expert.reset(env, np.random.default_rng(seed))
    steps: list[dict[str, np.ndarray]] = []
    actions, rewards, dones, states = [], [], [], []
    success, done = False, False
    while not done:
        states.append(env.get_state())
        action = expert.act(env, obs)
        next_obs, reward, done, info = env.step(action)
        steps.append(obs)
        actions.append(np.asarray(action, np.float64))
        rewards.append(reward)
        dones.append(int(done))
        success = bool(info["success"])
        obs = next_obs
    steps.append(obs)
    stacked = {k: np.stack([s[k] for s in steps]) for k in steps[0]}
    return Episode(
        obs={k: v[:-1] for k, v in stacked.items()},
        next_obs={k: v[1:] for k, v in stacked.items()},
        actions=np.stack(actions),
        rewards=np.asarray(rewards, np.float64),
        dones=np.asarray(dones, np.int64),
        states=np.stack(states),
        success=success,
        seed=seed,
        attempt=attempt,
    )


# ------------------------------------------------------------------------------- worker processes
_WORKER_ENV: RobosuiteTask | None = None
_WORKER_CONFIG: DemoConfig | None = None


def _worker_init(config: DemoConfig, parent_pid: int | None = None, main_thread: bool = True) -> None:
    global _WORKER_ENV, _WORKER_CONFIG
    if parent_pid is not None:  # None: in-process (workers=1)
        die_with_parent(parent_pid, main_thread)
    _WORKER_CONFIG = config
    _WORKER_ENV = make_env(config.task, cameras=config.cameras, image_size=config.image_size, seed=config.seed)


def _worker_run(attempt: int) -> Episode:
    assert _WORKER_ENV is not None and _WORKER_CONFIG is not None
    episode = record_episode(_WORKER_ENV, _WORKER_CONFIG, attempt)
    if not episode.success:  # failures only report their length; no need to ship their arrays
        return Episode(
            {},
            {},
            episode.actions[:0],
            episode.rewards[:0],
            episode.dones[:0],
            episode.states[:0],
            False,
            episode.seed,
            attempt,
            {"length": len(episode)},
        )
    return episode


def _episodes_in_order(config: DemoConfig, first_attempt: int, workers: int) -> Iterator[Episode]:
    """Yield episodes for attempts first_attempt, first_attempt+1, … (in order), forever."""
    if workers <= 1:
        _worker_init(config)
        attempt = first_attempt
        while True:
            yield _worker_run(attempt)
            attempt += 1
    ctx = get_context("spawn")  # jax/GL state must not be forked
    # spawner(): the pool starts its workers at the first submit, below, in this same thread.
    initargs = (config, *spawner())
    with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_worker_init, initargs=initargs) as pool:
        pending: list[Future[Episode]] = []
        next_attempt = first_attempt
        try:
            while True:
                while len(pending) < 2 * workers:
                    pending.append(pool.submit(_worker_run, next_attempt))
                    next_attempt += 1
                yield pending.pop(0).result()
        finally:
            for fut in pending:
                fut.cancel()


# ----------------------------------------------------------------------------------- the file
def _partial_path(out: Path) -> Path:
    return out.with_name(out.name + ".partial")


def _prepare_partial(out: Path, config: DemoConfig, env_args: dict[str, Any]) -> Path:
    """Create, resume or extend ``<out>.partial``; returns its path."""
    partial = _partial_path(out)
    check_output_file(out)
    check_output_file(partial, "--out's work file")
    out.parent.mkdir(parents=True, exist_ok=True)
    if partial.exists():
        try:
            with h5py.File(partial, "r") as f:
                check_robomimic(f, partial)
                _check_same_settings(f, config, partial)
        except OSError:
            partial.unlink()  # killed mid-write: the HDF5 is unreadable, start over
    if not partial.exists() and out.exists():
        try:
            with h5py.File(out, "r") as f:
                check_robomimic(f, out)
                _check_same_settings(f, config, out)
        except OSError as exc:
            raise UserError(f"{out} exists but is not a readable HDF5 file ({exc}); remove it first") from None
        shutil.copyfile(out, partial)
    if not partial.exists():
        with h5py.File(partial, "w") as f:
            data = f.create_group("data")
            data.attrs["env_args"] = json.dumps(env_args)
            data.attrs["total"] = 0
            data.attrs["csil_diag"] = json.dumps(
                {"version": __version__, "generator": config.identity(), "attempts": 0, "expert": "scripted"}
            )
    return partial


def _check_same_settings(f: h5py.File, config: DemoConfig, path: Path) -> None:
    meta = json.loads(f["data"].attrs.get("csil_diag", "{}"))
    theirs = meta.get("generator")
    if theirs is None:
        raise UserError(f"{path} was not written by `csil-diag demos`; choose another --out")
    ours = json.loads(json.dumps(config.identity()))
    diff = identity_differences(theirs, ours, OPTION_NAMES)
    if diff:
        raise UserError(
            f"{path} was made with other settings: {'; '.join(diff)}; use matching options or another --out"
        )


def generate_demos(
    config: DemoConfig,
    out: str | os.PathLike,
    *,
    workers: int = 1,
    on_progress: Callable[[int, int, int], None] | None = None,
) -> DemoSummary:
    """Write ``config.n`` successful expert demos to ``out`` (robomimic HDF5), resuming if possible.

    ``on_progress(demos, attempts, steps)`` is called after every attempt. On KeyboardInterrupt the
    demos written so far stay in ``<out>.partial`` and the next call with the same config resumes.
    """
    out = check_output_file(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    lock_file = out.with_name(out.name + ".lock")
    lock = take_lock(lock_file, out, "csil-diag demos")  # one writer of <out>.partial at a time
    try:
        return _generate(config, out, workers, on_progress)
    finally:
        lock_file.unlink(missing_ok=True)  # removed by its holder, so no other process can lose its lock
        lock.close()


def _generate(
    config: DemoConfig, out: Path, workers: int, on_progress: Callable[[int, int, int], None] | None
) -> DemoSummary:
    env_args = _env_args(config)
    partial = _prepare_partial(out, config, env_args)
    start = time.perf_counter()
    with h5py.File(partial, "a") as f:
        data = f["data"]
        meta = json.loads(data.attrs["csil_diag"])
        have = len(data.keys())
        resumed_from = have
        attempts = int(meta.get("attempts", 0))
        summary = DemoSummary(out, have, attempts, 0, 0.0, 0, resumed_from)
        if have >= config.n:
            f.close()
            _publish(partial, out, config)
            summary.seconds = time.perf_counter() - start
            return summary
        max_attempts = int(config.max_attempts_factor * config.n) + 10
        if on_progress:
            on_progress(have, attempts, 0)
        for episode in _episodes_in_order(config, attempts, workers):
            attempts = episode.attempt + 1
            summary.steps += len(episode) or int(episode.meta.get("length", 0))
            if episode.success:
                name = f"demo_{have}"
                write_episode(data, name, episode)
                have += 1
                summary.lengths.append(len(episode))
            meta["attempts"] = attempts
            data.attrs["csil_diag"] = json.dumps(meta)
            f.flush()
            summary.demos, summary.attempts, summary.new_demos = have, attempts, have - resumed_from
            if on_progress:
                on_progress(have, attempts, summary.steps)
            if have >= config.n:
                break
            if attempts >= max_attempts:
                raise UserError(
                    f"the {config.task} expert succeeded only {have} times in {attempts} attempts "
                    f"(noise {config.noise}); lower --noise — {have} demos kept in {partial}"
                )
        finalize(f, config.valid_fraction)
        meta["success_rate"] = have / max(attempts, 1)
        data.attrs["csil_diag"] = json.dumps(meta)
    _publish(partial, out, config)
    summary.seconds = time.perf_counter() - start
    return summary


def _publish(partial: Path, out: Path, config: DemoConfig) -> None:
    with h5py.File(partial, "a") as f:
        finalize(f, config.valid_fraction)
    os.replace(partial, out)


def _env_args(config: DemoConfig) -> dict[str, Any]:
    return env_args(config.task, config.cameras, config.image_size, seed=config.seed)


def sorted_demo_names(f: h5py.File) -> list[str]:
    return sorted(f["data"].keys(), key=demo_sort_key)
