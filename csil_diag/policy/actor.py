"""The HetStat acting in envs: features of live observations (π0 queried where the input or mode needs it), the
normaliser of the run, and a sampled or deterministic composed action. Shared by `entropy` rollouts and `train`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from csil_diag.features.normalize import Normalizer
from csil_diag.features.sources import PI0, featurize
from csil_diag.features.spec import InputSpec
from csil_diag.phases import phase
from csil_diag.policy import tanh_gaussian as tg


def make_act(model: nn.Module, mode: str):
    """act(params, x (B, D), base (B, A) | None, key, stochastic) → actions (B, A): one sample, or tanh of the mean."""

    def act(params, x, base, key, stochastic: bool):
        mu, std = model.apply(params, x)
        if not stochastic:
            return tg.deterministic_action(mode, mu, base)
        actions, _ = tg.sample(key, mode, mu, std, base, 1)
        return actions[0]

    return jax.jit(act, static_argnames="stochastic")


class RolloutActor:
    """Observations → (actions, raw features, VLA actions) for a batch of envs.

    ``vla_actor`` is a :class:`csil_diag.vla.policy.ChunkedActor` (or None without a VLA); it keeps each env's chunk
    between calls. Batches are padded to ``batch`` rows so the HetStat compiles once.
    """

    def __init__(
        self,
        act,
        spec: InputSpec,
        normalizer: Normalizer,
        composes: bool,
        batch: int,
        vla_actor: Any | None = None,
    ) -> None:
        self.act = act
        self.spec = spec
        self.normalizer = normalizer
        self.composes = composes  # residual / ensemble: the HetStat composes with the VLA's action
        self.batch = batch
        self.vla_actor = vla_actor

    def features(
        self, obs_list: Sequence[Mapping[str, np.ndarray]], envs: Sequence[int], fresh: Sequence[bool]
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Raw (un-normalised) features (n, D) and the VLA's actions (n, A) | None for the given observations."""
        vla_actions = embeddings = None
        if self.vla_actor is not None:
            with phase("rollout/policy/pi0"):
                vla_actions, embeddings = self.vla_actor(obs_list, envs, fresh)
        values = [None] * len(obs_list) if embeddings is None else [{PI0: e} for e in embeddings]
        with phase("rollout/policy/featurize"):
            raw = np.stack([featurize(self.spec, o, v) for o, v in zip(obs_list, values, strict=True)])
        return raw, vla_actions

    def actions(self, params, raw: np.ndarray, vla_actions: np.ndarray | None, key, stochastic: bool) -> np.ndarray:
        """The composed actions for raw features (padded to ``batch`` rows for one compiled shape)."""
        pad = max(self.batch - len(raw), 0)
        x = self.normalizer(raw)
        x = np.concatenate([x, np.zeros((pad, x.shape[1]), np.float32)])
        base = None
        if self.composes and vla_actions is not None:
            base = jnp.concatenate([jnp.asarray(vla_actions), jnp.zeros((pad, vla_actions.shape[1]), jnp.float32)])
        return np.asarray(self.act(params, jnp.asarray(x), base, key, stochastic=stochastic))[: len(raw)]

    def policy(self, params, stochastic: bool, seed: int):
        """A :data:`csil_diag.envs.rollouts.Policy` with these params; the key of call i is fold_in(key(seed), i)."""
        counter = [0]

        def policy(obs_list, envs, fresh):
            raw, vla_actions = self.features(obs_list, envs, fresh)
            key = jax.random.fold_in(jax.random.key(seed), counter[0])
            counter[0] += 1
            with phase("rollout/policy/hetstat"):
                actions = self.actions(params, raw, vla_actions, key, stochastic)
            return actions, raw, vla_actions

        policy.vla_actor = self.vla_actor  # lets a joint rollout batch this policy's π0 queries with others'
        return policy
