"""BC pre-training of the HetStat with CSIL's "faithful" loss.

loss = mean (a_det − a)² + NLL(a; stop_grad(μ), σ(stop_grad(φ)))

The MSE fits the mean through the whole network; the NLL fits only the covariance, so the uncertainty
is a faithful posterior over a fixed feature map rather than a second objective for the trunk.
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax import struct

from csil_diag.config import BCConfig
from csil_diag.policy import tanh_gaussian as tg


class BCState(struct.PyTreeNode):
    step: jnp.ndarray
    params: Any
    opt_state: Any


def make_optimizer(config: BCConfig) -> optax.GradientTransformation:
    return optax.adamw(config.learning_rate, weight_decay=config.weight_decay)


def init_state(model: nn.Module, config: BCConfig, key: jax.Array, input_dim: int) -> BCState:
    params = model.init(key, jnp.zeros((1, input_dim), jnp.float32))
    return BCState(step=jnp.zeros((), jnp.int32), params=params, opt_state=make_optimizer(config).init(params))


def faithful_loss(
    params: Any,
    model: nn.Module,
    obs: jnp.ndarray,
    actions: jnp.ndarray,
    base_actions: jnp.ndarray | None,
    mode: str,
) -> tuple[jnp.ndarray, dict[str, jnp.ndarray]]:
    """obs (B, D), actions (B, A), base_actions (B, A) or None → (loss, metrics)."""
    mu, std = model.apply(params, obs, faithful=True)
    mse = jnp.mean(jnp.square(tg.deterministic_action(mode, mu, base_actions) - actions))
    nll = -jnp.mean(tg.log_prob(mode, actions, jax.lax.stop_gradient(mu), std, base_actions))
    return mse + nll, {"mse": mse, "nll": nll, "mean_std": jnp.mean(std)}


def make_train_fn(model: nn.Module, config: BCConfig):
    """train(state, key, obs (N, D), actions (N, A), base (N, A) | None, n_steps) → (state, metrics).

    Runs ``n_steps`` BC steps on device-resident data in one jitted scan (compiled once per distinct
    ``n_steps``); batches are sampled uniformly with replacement inside the scan, so there is no host
    round trip per step. Metrics are those of the last step.
    """
    optimizer = make_optimizer(config)
    grad_fn = jax.value_and_grad(faithful_loss, has_aux=True)

    def one_step(state: BCState, key: jax.Array, obs, actions, base_actions):
        idx = jax.random.randint(key, (config.batch_size,), 0, obs.shape[0])
        base = None if base_actions is None else base_actions[idx]
        (loss, metrics), grads = grad_fn(state.params, model, obs[idx], actions[idx], base, config.mode)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        return state.replace(step=state.step + 1, params=params, opt_state=opt_state), {
            "loss": loss,
            **metrics,
        }

    @functools.partial(jax.jit, static_argnames="n_steps")
    def train(state: BCState, key: jax.Array, obs, actions, base_actions=None, n_steps: int = 1):
        def body(carry, k):
            return one_step(carry, k, obs, actions, base_actions)

        state, metrics = jax.lax.scan(body, state, jax.random.split(key, n_steps))
        return state, jax.tree_util.tree_map(lambda m: m[-1], metrics)

    return train
