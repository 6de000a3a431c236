"""Policy rollouts on a VectorEnv, recording the features of every visited state."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

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
        actions, features, base = policy([obs[i] for i in ids], ids, [i in fresh for i in ids])
        fresh.clear()
        feats.append(np.asarray(features))
        if base is not None:
            bases.append(np.asarray(base))
        episode_of.append(np.array([running[i] for i in ids]))
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
