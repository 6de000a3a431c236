"""π0 as a policy on robosuite observations: one jitted :func:`pi0.infer` call per batch.

:class:`VLAPolicy` turns a batch of observations (robomimic keys plus ``agentview`` / ``wrist`` images)
into the env action chunk (B, H, 7) and the embedding at one site. Batches are padded to a fixed size, so
the model compiles once; the noise of every observation is drawn from (seed, noise id), so results do not
depend on how observations were grouped into batches.

:class:`ChunkedActor` executes chunks in envs: the first ``replan`` actions of a chunk, then a new query.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from csil_diag.errors import UserError
from csil_diag.runs import file_fingerprint
from csil_diag.vla import adapter, pi0
from csil_diag.vla import config as vla_config
from csil_diag.vla.checkpoint import Pi0Checkpoint, load_checkpoint, load_config

DEFAULT_NUM_STEPS = 10  # openpi's Euler steps


@dataclass(frozen=True)
class VLAOutput:
    """actions (B, H, 7) env units in [-1, 1]; embedding (B, width) float32 at the policy's site."""

    actions: np.ndarray
    embedding: np.ndarray


def site_width(config: vla_config.Pi0Config, site: str) -> int:
    """Width of the embedding at ``site`` (prefix: the LLM's; state / actions: the action expert's)."""
    return config.llm.width if site == "prefix" else config.expert.width


def checkpoint_site_width(model_dir: str | os.PathLike, site: str) -> int:
    """:func:`site_width` of a checkpoint, from its config alone (a full-size π0's params are gigabytes)."""
    return site_width(load_config(Path(model_dir)), site)


def resolve_model_dir(model: str | os.PathLike | None, progress: bool = True) -> Path:
    """``--model`` as given, or the embedded default tiny model (trained on first use, then cached)."""
    if model is not None:
        return Path(model)
    try:
        from csil_diag.vla.default import default_model_dir
    except ImportError:
        raise UserError("this csil-diag has no embedded default π0 model; pass --model <checkpoint dir>") from None
    return Path(default_model_dir(progress=progress))


def model_fingerprint(ckpt: Pi0Checkpoint) -> str:
    """sha256 (16 hex digits) of everything that decides the model's outputs: config, params, norm stats,
    tokenizer. Computed from the loaded values, so copying or moving a checkpoint keeps its identity."""
    digest = hashlib.sha256(json.dumps(vla_config.to_dict(ckpt.config), sort_keys=True).encode())
    for path, leaf in sorted(traverse_util.flatten_dict(ckpt.params, sep="/").items()):
        arr = np.asarray(leaf)
        digest.update(f"{path}:{arr.dtype}:{arr.shape}".encode())
        digest.update(arr.tobytes())
    for key, stats in sorted((ckpt.norm_stats or {}).items()):
        for name in ("mean", "std", "q01", "q99"):
            value = getattr(stats, name)
            digest.update(f"{key}.{name}".encode() + (b"-" if value is None else np.asarray(value).tobytes()))
    digest.update(_tokenizer_identity(ckpt.tokenizer).encode())
    return digest.hexdigest()[:16]


def _tokenizer_identity(tokenizer: object) -> str:
    """Stable across processes (no object addresses): the kind, sizes and the vocabulary file's hash."""
    model_path = getattr(tokenizer, "model_path", None)
    vocab = file_fingerprint(model_path) if model_path is not None else ""
    sizes = f"{getattr(tokenizer, 'max_len', '')}:{getattr(tokenizer, 'vocab_size', '')}"
    return f"{type(tokenizer).__name__}:{sizes}:{getattr(tokenizer, 'offset', '')}:{vocab}"


class VLAPolicy:
    """A loaded π0 checkpoint answering batches of robosuite observations."""

    def __init__(
        self,
        ckpt: Pi0Checkpoint,
        *,
        site: str = pi0.DEFAULT_SITE,
        batch_size: int = 8,
        seed: int = 0,
        num_steps: int = DEFAULT_NUM_STEPS,
        source: str = "",
    ) -> None:
        if site not in pi0.EMBEDDING_SITES:
            raise UserError(f"unknown embedding site {site!r}; choose one of {', '.join(pi0.EMBEDDING_SITES)}")
        if batch_size < 1 or num_steps < 1:
            raise UserError("the VLA batch size and number of Euler steps must be ≥ 1")
        if ckpt.norm_stats is None or ckpt.tokenizer is None:
            raise UserError(f"the π0 checkpoint {source} lacks norm stats or a tokenizer (assets/<id>/); retrain it")
        self.ckpt = ckpt
        self.config = ckpt.config
        self.site = site
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.num_steps = int(num_steps)
        self.source = source

    @classmethod
    def load(
        cls,
        model_dir: str | os.PathLike,
        *,
        site: str = pi0.DEFAULT_SITE,
        batch_size: int = 8,
        seed: int = 0,
        num_steps: int = DEFAULT_NUM_STEPS,
    ) -> VLAPolicy:
        ckpt = load_checkpoint(Path(model_dir))
        return cls(ckpt, site=site, batch_size=batch_size, seed=seed, num_steps=num_steps, source=str(model_dir))

    # ------------------------------------------------------------------------------------ what it needs
    @property
    def cameras(self) -> tuple[str, ...]:
        """Our camera names the model reads (``agentview``, ``wrist``), in the adapter's order."""
        return tuple(c for c, m in adapter.CAMERA_MAP.items() if m in self.config.cameras)

    @property
    def image_size(self) -> int:
        return self.config.siglip.image_size

    @property
    def horizon(self) -> int:
        return self.config.action_horizon

    @property
    def width(self) -> int:
        return site_width(self.config, self.site)

    @cached_property
    def fingerprint(self) -> str:
        return model_fingerprint(self.ckpt)

    # ------------------------------------------------------------------------------------ inference
    def _noise(self, noise_ids: Sequence[int]) -> np.ndarray:
        shape = (self.horizon, self.config.action_dim)
        draws = [np.random.default_rng([self.seed, int(i)]).standard_normal(shape, np.float32) for i in noise_ids]
        return np.stack(draws)

    def _call(self, images: dict[str, np.ndarray], state: np.ndarray, task: str, noise_ids: Sequence[int]) -> VLAOutput:
        """At most ``batch_size`` rows, padded (repeating the last row) to exactly ``batch_size``."""
        n, pad = len(state), self.batch_size - len(state)
        if pad:
            images = {c: np.concatenate([v, np.repeat(v[-1:], pad, 0)]) for c, v in images.items()}
            state = np.concatenate([state, np.repeat(state[-1:], pad, 0)])
            noise_ids = [*noise_ids, *([noise_ids[-1]] * pad)]
        prompts = [adapter.prompt_for(task)] * self.batch_size
        obs = adapter.make_observation(self.config, images, state, prompts, self.ckpt.norm_stats, self.ckpt.tokenizer)
        out = pi0.infer(self.config, self.ckpt.params, obs, jnp.asarray(self._noise(noise_ids)), self.num_steps)
        actions = adapter.actions_to_env(np.asarray(out.actions), self.ckpt.norm_stats)
        return VLAOutput(actions[:n], np.asarray(out.embeddings[self.site])[:n])

    def infer(
        self, images: Mapping[str, np.ndarray], state: np.ndarray, task: str, noise_ids: Sequence[int]
    ) -> VLAOutput:
        """images: our camera name → (N, S, S, 3) uint8; state: (N, 8) raw eef; noise_ids: N ints → VLAOutput.

        N may be anything: rows are cut into padded batches of ``batch_size`` (one compiled shape).
        """
        missing = [c for c in self.cameras if c not in images]
        if missing:
            raise UserError(f"the π0 model needs the {', '.join(missing)} camera(s); record or render them")
        if len(noise_ids) != len(state):
            raise ValueError(f"{len(noise_ids)} noise ids for {len(state)} observations")
        parts = [
            self._call(
                {c: np.asarray(images[c][i : i + self.batch_size]) for c in self.cameras},
                np.asarray(state[i : i + self.batch_size], np.float32),
                task,
                noise_ids[i : i + self.batch_size],
            )
            for i in range(0, len(state), self.batch_size)
        ]
        return VLAOutput(np.concatenate([p.actions for p in parts]), np.concatenate([p.embedding for p in parts]))

    def __call__(self, obs_list: Sequence[Mapping[str, np.ndarray]], task: str, noise_ids: Sequence[int]) -> VLAOutput:
        """Env observations (one dict per env) → action chunks (B, H, 7) and embeddings (B, width)."""
        images = {c: np.stack([o[c] for o in obs_list]) for c in self.cameras if c in obs_list[0]}
        state = np.stack([adapter.state_from_obs(o) for o in obs_list])
        return self.infer(images, state, task, noise_ids)


class ChunkedActor:
    """Chunked execution in many envs: the first ``replan`` actions of a chunk, then a new query.

    ``actor(obs_list, envs, fresh)`` → (actions (n, 7), embeddings (n, width)). Envs that start an episode or
    have used ``replan`` actions of their chunk are queried together in one batch; the others take the next
    action of their chunk and keep the embedding of the state that chunk was computed for. Several actors of one
    model can share each step's model call (:func:`query_together`).
    """

    def __init__(self, policy: VLAPolicy, task: str, replan: int, first_noise_id: int = 0) -> None:
        if not 1 <= replan <= policy.horizon:
            raise UserError(f"--replan must be within 1 … {policy.horizon} (the model's action chunk), got {replan}")
        self.policy = policy
        self.task = task
        self.replan = int(replan)
        self.queries = 0  # observations sent to the model
        self.first_noise_id = int(first_noise_id)  # query i uses noise id first_noise_id + i
        self.calls = 0  # batched model calls this actor took part in
        self._chunk: dict[int, np.ndarray] = {}
        self._embedding: dict[int, np.ndarray] = {}
        self._used: dict[int, int] = {}
        self._answered: set[int] = set()  # envs whose query for the current step :func:`query_together` made

    @staticmethod
    def query_together(calls: Sequence[tuple[ChunkedActor, Any, Sequence[int], Sequence[bool]]]) -> None:
        """:func:`query_together`, reachable from an actor (rollouts batch actors' queries without importing vla)."""
        query_together(calls)

    def _need(self, envs: Sequence[int], fresh: Sequence[bool]) -> list[int]:
        """Positions in ``envs`` that need a new chunk now."""
        return [
            k
            for k, env in enumerate(envs)
            if env not in self._answered and (fresh[k] or self._used.get(env, self.replan) >= self.replan)
        ]

    def _noise_ids(self, n: int) -> list[int]:
        first = self.first_noise_id + self.queries
        self.queries += n
        return list(range(first, first + n))

    def _store(self, env: int, chunk: np.ndarray, embedding: np.ndarray) -> None:
        self._chunk[env], self._embedding[env], self._used[env] = chunk, embedding, 0

    def __call__(
        self, obs_list: Sequence[Mapping[str, np.ndarray]], envs: Sequence[int], fresh: Sequence[bool]
    ) -> tuple[np.ndarray, np.ndarray]:
        query_together([(self, obs_list, envs, fresh)])
        self._answered.clear()
        actions = np.stack([self._chunk[e][self._used[e]] for e in envs])
        embeddings = np.stack([self._embedding[e] for e in envs])
        for e in envs:
            self._used[e] += 1
        return actions, embeddings


def query_together(
    calls: Sequence[tuple[ChunkedActor, Sequence[Mapping[str, np.ndarray]], Sequence[int], Sequence[bool]]],
) -> None:
    """Answer the queries several actors of one model need at this step with one batched model call.

    ``calls``: (actor, obs_list, envs, fresh) as each actor's next ``__call__`` will receive them (env ids are each
    actor's own). Each actor keeps its own noise ids, and π0's rows do not depend on what else is in the
    batch, so every actor's actions and embeddings are those it would have computed alone (tested).
    """
    rows: list[Mapping[str, np.ndarray]] = []
    ids: list[int] = []
    owners: list[tuple[ChunkedActor, int]] = []
    for actor, obs_list, envs, fresh in calls:
        need = actor._need(envs, fresh)
        if not need:
            continue
        if actor.policy is not calls[0][0].policy or actor.task != calls[0][0].task:
            raise ValueError("actors sharing a model call must share the model and the task")
        rows += [obs_list[k] for k in need]
        ids += actor._noise_ids(len(need))
        owners += [(actor, envs[k]) for k in need]
        actor.calls += 1
    if not rows:
        return
    actor0 = owners[0][0]
    out = actor0.policy(rows, actor0.task, ids)
    for j, (actor, env) in enumerate(owners):
        actor._store(env, out.actions[j], out.embedding[j])
        actor._answered.add(env)
