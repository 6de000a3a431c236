"""The posterior head: the HetStat's covariance replaced by the Bayesian posterior of its linear head.

The HetStat's head is linear in the stationary features φ with prior weights N(0, I) per action dimension. Given the
training demos' features Φ (N, F) and a noise variance s², the posterior precision is P = I + ΦᵀΦ/s² and the
predictive variance at φ is φᵀP⁻¹φ + s²: ‖φ‖² + s² far from the demos, ≈ s² on them (SNGP's last layer). The BC
NLL instead fits Σ to the demos' residuals and need not grow away from them; the trunk probe measures the difference.
s² is the mean squared error the mean leaves on the training demos at that point. All in float64: ΦᵀΦ/s² spans many
orders of magnitude.
"""

from __future__ import annotations

import functools
from dataclasses import replace
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from csil_diag.policy import tanh_gaussian as tg


def _precision_cholesky(train_features: np.ndarray, noise_variance: float) -> np.ndarray:
    phi = np.asarray(train_features, np.float64)
    return np.linalg.cholesky(np.eye(phi.shape[1]) + phi.T @ phi / noise_variance)


def posterior_variance(train_features: np.ndarray, features: np.ndarray, noise_variance: float) -> np.ndarray:
    """φᵀ(I + ΦᵀΦ/s²)⁻¹φ for training features Φ (N, F) at features (Q, F) → (Q,) (without the noise)."""
    whitened = np.linalg.solve(_precision_cholesky(train_features, noise_variance), np.asarray(features, np.float64).T)
    return np.sum(np.square(whitened), axis=0)  # ‖L⁻¹φ‖² with LLᵀ = P


def posterior_factor(train_features: np.ndarray, noise_variance: float) -> np.ndarray:
    """Lower-triangular C (F, F) with CCᵀ = (I + ΦᵀΦ/s²)⁻¹: the HetStat's factor form of the posterior covariance."""
    chol = _precision_cholesky(train_features, noise_variance)
    inverse = np.linalg.solve(chol.T, np.linalg.solve(chol, np.eye(len(chol))))
    return np.linalg.cholesky((inverse + inverse.T) / 2)


def set_head_factor(params: Any, factor: np.ndarray, noise_variance: float) -> Any:
    """HetStat parameters with every action dimension's factor set to ``factor`` (F, F) and head_noise to s²."""
    inner = dict(params["params"])
    raw = np.tril(factor, -1) + np.diag(np.log(np.diag(factor)))  # the blocks store the diagonal as its log
    names = sorted((k for k in inner if k.startswith("scale_tril_")), key=lambda k: int(k.rsplit("_", 1)[1]))
    a, _, b = inner[names[0]].shape
    for j, name in enumerate(names):
        block = raw[j * b :, j * b : (j + 1) * b].astype(np.float32)
        inner[name] = jnp.asarray(np.broadcast_to(block, (a, *block.shape)))
    inner["head_noise"] = jnp.asarray(noise_variance, jnp.float32)
    return {**params, "params": inner}


def composed_base(mode: str, base_actions: np.ndarray | None) -> jnp.ndarray | None:
    """The VLA actions the HetStat composes with (None in head mode: the HetStat acts alone)."""
    return None if mode == "head" or base_actions is None else jnp.asarray(base_actions)


def posterior_model(model: nn.Module) -> nn.Module:
    """The same HetStat with the posterior head (its parameters: :func:`fit_posterior_head`'s)."""
    return model.clone(config=replace(model.config, head="posterior"))


@functools.partial(jax.jit, static_argnums=0)
def _mean_and_features(model: nn.Module, params: Any, x: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
    mu, _, _, phi = model.apply(params, x, with_features=True)
    return mu, phi


def fit_posterior_head(
    model: nn.Module, params: Any, x: np.ndarray, actions: np.ndarray, base: jnp.ndarray | None, mode: str
) -> tuple[Any, float]:
    """The posterior head on the training demos: normalised x (N, D), their actions (N, A) and the VLA's base
    actions (N, A) or None → (parameters for :func:`posterior_model`, s²). The mean and the trunk are kept."""
    inner = {**params["params"], "head_noise": jnp.zeros((), jnp.float32)}  # a learned head's parameters lack it
    mu, phi = _mean_and_features(posterior_model(model), {**params, "params": inner}, jnp.asarray(x))
    noise = float(jnp.mean(jnp.square(tg.deterministic_action(mode, mu, base) - jnp.asarray(actions))))
    return set_head_factor(params, posterior_factor(np.asarray(phi, np.float64), noise), noise), noise
