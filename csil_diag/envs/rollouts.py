"""Policy rollouts on a VectorEnv, recording the features of every visited state."""

from __future__ import annotations

import io
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from csil_diag.envs.vector import VectorEnv
from csil_diag.phases import phase

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
    return run_episodes_together(venv, [(policy, seeds, range(venv.n_envs))], on_step)[0]


def run_episodes_together(
    venv: VectorEnv, groups: Sequence[tuple[Policy, list[int], Sequence[int]]], on_step: Progress | None = None
) -> list[RolloutResult]:
    """Several policies' episodes in one lockstep loop: group (policy, seeds, env ids) runs its seeds on its own
    envs (waves if seeds > envs), and every step is one batched step of all envs. A group's results are those it
    would give alone on the same number of envs (each sees its envs renumbered by position); what is shared is the
    env workers' round trip and, where the policies query one VLA, one model call for all groups a step
    (the actors' ``query_together``, e.g. :func:`csil_diag.vla.policy.query_together`)."""
    all_envs = [i for _, _, envs in groups for i in envs]
    if len(set(all_envs)) != len(all_envs) or not set(all_envs) <= set(range(venv.n_envs)):
        raise ValueError(f"groups need disjoint env ids within 0 … {venv.n_envs - 1}, got {all_envs}")
    states = [_GroupState(policy, seeds, list(envs)) for policy, seeds, envs in groups]
    obs: dict[int, dict[str, np.ndarray]] = {}
    with phase("rollout/env_reset"):
        obs.update(venv.reset({i: s for g in states for i, s in g.start(g.envs).items()}))
    n_done = 0
    while any(g.running for g in states):
        active = [g for g in states if g.running]
        with phase("rollout/policy"):
            inputs = [g.inputs(obs) for g in active]
            shared = [(g.vla_actor, *step[1:]) for g, step in zip(active, inputs, strict=True) if g.vla_actor]
            if len(shared) > 1:  # the actors' own batching (π0's ChunkedActor), so envs need not know the VLA
                with phase("rollout/policy/pi0"):
                    shared[0][0].query_together(shared)
            for g, step in zip(active, inputs, strict=True):
                g.act(*step)
        with phase("rollout/env_step"):  # the workers' physics and rendering, as the caller waits for them
            results = venv.step({i: a for g in active for i, a in g.pending.items()})
        restart: dict[int, int] = {}
        for g in active:
            finished = g.record(results, obs)
            n_done += len(finished)
            restart |= g.start(finished)
        if restart:
            with phase("rollout/env_reset"):
                obs.update(venv.reset(restart))
        if on_step is not None:
            on_step(n_done, int(sum(g.lengths.sum() for g in states)))
    return [g.result() for g in states]


class _GroupState:
    """One group's episodes in :func:`run_episodes_together`: its queue, running envs and records."""

    def __init__(self, policy: Policy, seeds: list[int], envs: list[int]) -> None:
        self.policy = policy
        self.vla_actor = getattr(policy, "vla_actor", None)
        self.envs = envs
        self.local = {env: k for k, env in enumerate(envs)}  # the policy sees envs numbered as if alone
        self.queue = list(enumerate(seeds))
        self.running: dict[int, int] = {}  # env id -> episode index
        self.fresh: set[int] = set()  # envs whose current observation starts an episode
        self.pending: dict[int, np.ndarray] = {}
        self.feats: list[np.ndarray] = []
        self.bases: list[np.ndarray] = []
        self.episode_of: list[np.ndarray] = []
        self.success = np.zeros(len(seeds), bool)
        self.lengths = np.zeros(len(seeds), int)

    def start(self, env_ids: list[int]) -> dict[int, int]:
        """Assign the next queued episodes to these envs; returns env id → episode seed to reset with."""
        todo = {}
        for i in env_ids:
            if self.queue:
                episode, seed = self.queue.pop(0)
                self.running[i] = episode
                todo[i] = seed
        self.fresh.update(todo)
        return todo

    def inputs(self, obs: dict[int, dict[str, np.ndarray]]) -> tuple[list[int], list, list[int], list[bool]]:
        """This step's (env ids, their observations, the policy's env numbers, fresh flags), in env order."""
        ids = sorted(self.running)
        return ids, [obs[i] for i in ids], [self.local[i] for i in ids], [i in self.fresh for i in ids]

    def act(self, ids: list[int], obs_list: list, local: list[int], fresh: list[bool]) -> None:
        """The policy's actions for this step's inputs (:meth:`inputs`), kept until :meth:`record`."""
        actions, features, base = self.policy(obs_list, local, fresh)
        self.fresh.clear()
        self.feats.append(np.asarray(features))
        if base is not None:
            self.bases.append(np.asarray(base))
        self.episode_of.append(np.array([self.running[i] for i in ids]))
        self.pending = {i: actions[k] for k, i in enumerate(ids)}

    def record(self, results: dict[int, tuple], obs: dict[int, dict[str, np.ndarray]]) -> list[int]:
        """Book this group's step results; returns the envs whose episode ended."""
        finished = []
        for i in self.pending:
            next_obs, _reward, done, succ = results[i]
            episode = self.running[i]
            self.lengths[episode] += 1
            self.success[episode] |= succ
            obs[i] = next_obs
            if done:
                finished.append(i)
                del self.running[i]
        self.pending = {}
        return finished

    def result(self) -> RolloutResult:
        return RolloutResult(
            features=np.concatenate(self.feats),
            base_actions=np.concatenate(self.bases) if self.bases else None,
            episode=np.concatenate(self.episode_of),
            success=self.success,
            lengths=self.lengths,
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
