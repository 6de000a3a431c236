"""Twin Q networks, the soft Bellman target, and CSIL's critic pre-training (thesis App. B, Alg. 1).

Q(s, a_base, a): the state features, the VLA's action where the mode composes with one (the thesis' Q(s, a_vla, a)),
and the executed action, concatenated.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from csil_diag.config import CriticConfig


class QNetwork(nn.Module):
    """Dense(1024) → LayerNorm → ELU → Dense(1024) → ELU → Dense(48) → ELU → Dense(1) (orthogonal init)."""

    config: CriticConfig

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        init = nn.initializers.orthogonal()
        h = x
        for i, width in enumerate(self.config.hidden):
            h = nn.Dense(width, kernel_init=init, name=f"dense_{i}")(h)
            if i == 0 and self.config.layer_norm:
                h = nn.LayerNorm(name="layer_norm")(h)
            h = nn.elu(h)
        h = nn.elu(nn.Dense(self.config.bottleneck, kernel_init=init, name="bottleneck")(h))
        return nn.Dense(1, kernel_init=init, name="value")(h)[..., 0]


class TwinCritic(nn.Module):
    """(x (B, D), a_base (B, A) | None, a (B, A)) → (2, B): two independent Q estimates."""

    config: CriticConfig

    @nn.compact
    def __call__(self, x: jnp.ndarray, base: jnp.ndarray | None, action: jnp.ndarray) -> jnp.ndarray:
        inputs = jnp.concatenate([x, action] if base is None else [x, base, action], axis=-1)
        return jnp.stack([QNetwork(self.config, name=f"q{i}")(inputs) for i in range(2)])


def soft_target(reward: jnp.ndarray, discount: jnp.ndarray, gamma: float, next_value: jnp.ndarray) -> jnp.ndarray:
    """r + γ d V(s′): the soft Bellman target, all (B,).

    V(s′) = Q̄(s′, a′) − the temperature times the log-ratio of the policy to its reference at (s′, a′) (SAC: α log π;
    CSIL: β (log π − log π_BC); SARSA pre-training with π_ref = q_θ1: zero). d is 0 after a success.
    """
    return reward + gamma * discount * next_value


def action_gradient_norm(critic: nn.Module, params: Any, x: jnp.ndarray, base, action: jnp.ndarray) -> jnp.ndarray:
    """√(mean_b ‖∂ min_i Q_i / ∂a‖²): CSIL's penalty keeping the critic smooth in the action on demonstrations."""

    def q_min(a: jnp.ndarray) -> jnp.ndarray:
        return jnp.sum(jnp.min(critic.apply(params, x, base, a), axis=0))

    grads = jax.grad(q_min)(action)  # rows are independent, so the gradient of the sum is per-sample
    return jnp.sqrt(jnp.mean(jnp.sum(jnp.square(grads), axis=-1)))
