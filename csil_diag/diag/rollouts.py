"""Policy rollouts on a VectorEnv, recording the features of every visited state."""

from __future__ import annotations

import io
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from csil_diag.diag.phases import phase
from csil_diag.envs.vector import VectorEnv

# policy(observation dicts, their env indices, fresh) -> (actions (n, A), features (n, D), base actions (n, A) | None);
# fresh[k] is True on the first observation of an episode (chunked policies re-plan there).
Policy = Callable[
    [list[dict[str, np.ndarray]], list[int], list[bool]], tuple[np.ndarray, np.ndarray, np.ndarray | None]
]
# on_step(finished episodes, env steps so far), after every batched step
Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class RolloutResult:
    """Every visited state (the state each action was taken in), grouped by episode."""

    features: np.ndarray  # (N, D)
    base_actions: np.ndarray | None  # (N, A) when the policy composes with a base (VLA) action
    episode: np.ndarray  # (N,) episode index
    success: np.ndarray  # (E,) bool
    lengths: np.ndarray  # (E,) int

    @property
    def success_rate(self) -> float:
        return float(self.success.mean()) if len(self.success) else float("nan")


def episode_seeds(seed: int, n: int, salt: int = 0xE17, first: int = 0) -> list[int]:
    """Initial-state seeds of episodes first … first+n−1 of a run seed. The diagnostic reuses the same ones at every
    point (curves then show the policy changing, not luck); other uses pass their own ``salt``."""
    return [int(np.random.SeedSequence([seed, e, salt]).generate_state(1)[0]) for e in range(first, first + n)]


def run_episodes(venv: VectorEnv, policy: Policy, seeds: list[int], on_step: Progress | None = None) -> RolloutResult:
    """Run one episode per seed, using all envs of ``venv`` in parallel (waves if seeds > envs)."""
    queue = list(enumerate(seeds))
    running: dict[int, int] = {}  # env index -> episode index
    obs: dict[int, dict[str, np.ndarray]] = {}
    fresh: set[int] = set()  # envs whose current observation starts an episode

    def start(env_ids: list[int]) -> None:
        todo = {}
        for i in env_ids:
            if queue:
                episode, seed = queue.pop(0)
                running[i] = episode
                todo[i] = seed
        with phase("rollout/env_reset"):
            obs.update(venv.reset(todo))
        fresh.update(todo)

    start(list(range(venv.n_envs)))
    feats: list[np.ndarray] = []
    bases: list[np.ndarray] = []
    episode_of: list[np.ndarray] = []
    success = np.zeros(len(seeds), bool)
    lengths = np.zeros(len(seeds), int)
    n_done = 0
    while running:
        ids = sorted(running)
        with phase("rollout/policy"):
            actions, features, base = policy([obs[i] for i in ids], ids, [i in fresh for i in ids])
        fresh.clear()
        feats.append(np.asarray(features))
        if base is not None:
            bases.append(np.asarray(base))
        episode_of.append(np.array([running[i] for i in ids]))
        with phase("rollout/env_step"):  # the workers' physics and rendering, as the caller waits for them
            results = venv.step({i: actions[k] for k, i in enumerate(ids)})
        finished = []
        for i, (next_obs, _reward, done, succ) in results.items():
            episode = running[i]
            lengths[episode] += 1
            success[episode] |= succ
            obs[i] = next_obs
            if done:
                finished.append(i)
                del running[i]
        start(finished)
        n_done += len(finished)
        if on_step is not None:
            on_step(n_done, int(lengths.sum()))
    return RolloutResult(
        features=np.concatenate(feats),
        base_actions=np.concatenate(bases) if bases else None,
        episode=np.concatenate(episode_of),
        success=success,
        lengths=lengths,
    )


def time_in_episode(episode: np.ndarray) -> np.ndarray:
    """Step index of each state within its episode, from the episode ids in visiting order: (N,) → (N,)."""
    t = np.zeros(len(episode), np.int32)
    seen: dict[int, int] = {}
    for k, e in enumerate(episode.tolist()):
        t[k] = seen.get(e, 0)
        seen[e] = t[k] + 1
    return t


def save_online_states(path: str | os.PathLike, result: RolloutResult) -> None:
    """The online states of an evaluation point, compactly: x (N, D) raw features float32, episode, t, success."""
    from csil_diag.runs import atomic_write_bytes

    out = io.BytesIO()
    np.savez(
        out,
        x=np.asarray(result.features, np.float32),
        episode=result.episode.astype(np.int32),
        t=time_in_episode(result.episode),
        success=result.success[result.episode],
    )
    atomic_write_bytes(path, out.getvalue())


def load_online_states(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """What :func:`save_online_states` wrote; a missing file is a one-line UserError (runs made before it existed)."""
    from csil_diag.errors import UserError

    path = Path(path)
    if not path.exists():
        raise UserError(
            f"{path} is missing: this run did not keep its online states (runs before csil-diag kept them, or an "
            "unfinished point); rerun `csil-diag entropy` into a new --out to make them"
        )
    try:
        with np.load(path) as f:
            return {k: f[k] for k in ("x", "episode", "t", "success")}
    except (OSError, KeyError, ValueError) as exc:
        reason = type(exc).__name__
        raise UserError(f"{path} is unreadable ({reason}); delete it and rerun `csil-diag entropy`") from None
