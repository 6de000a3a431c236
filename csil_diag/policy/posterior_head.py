"""The posterior head: the HetStat's covariance replaced by the Bayesian posterior of its linear head.

The HetStat's head is linear in the stationary features φ with prior weights N(0, I) per action dimension i. Given
the training demos' features Φ (N, F) and a noise variance s_i², the posterior precision is P_i = I + ΦᵀΦ/s_i² and
the predictive variance at φ is φᵀP_i⁻¹φ + s_i²: ‖φ‖² + s_i² far from the demos, ≈ s_i² on them (SNGP's last layer).
The BC NLL instead fits Σ_i to the demos' residuals and need not grow away from them; the trunk probe measures the
difference. s_i² is the mean squared residual the mean leaves on the training demos in dimension i, taken where the
Gaussian lives — before the squash (a saturated gripper's residual is large there, and its σ stays at the cap, as the
learned head's does). All in float64: ΦᵀΦ/s² spans many orders of magnitude.
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
from csil_diag.policy.hetstat import dense_to_blocks


def gram(train_features: np.ndarray) -> np.ndarray:
    """ΦᵀΦ (F, F) of the training features Φ (N, F), in float64."""
    phi = np.asarray(train_features, np.float64)
    return phi.T @ phi


def _precision_cholesky(gram_matrix: np.ndarray, noise_variance: float) -> np.ndarray:
    return np.linalg.cholesky(np.eye(len(gram_matrix)) + gram_matrix / noise_variance)


def posterior_variance(train_features: np.ndarray, features: np.ndarray, noise_variance: float) -> np.ndarray:
    """φᵀ(I + ΦᵀΦ/s²)⁻¹φ for training features Φ (N, F) at features (Q, F) → (Q,) (without the noise)."""
    chol = _precision_cholesky(gram(train_features), noise_variance)
    whitened = np.linalg.solve(chol, np.asarray(features, np.float64).T)
    return np.sum(np.square(whitened), axis=0)  # ‖L⁻¹φ‖² with LLᵀ = P


def posterior_factor(gram_matrix: np.ndarray, noise_variance: float) -> np.ndarray:
    """Lower-triangular C (F, F) with CCᵀ = (I + ΦᵀΦ/s²)⁻¹ given ΦᵀΦ: the HetStat's factor form of the posterior."""
    chol = _precision_cholesky(gram_matrix, noise_variance)
    inverse = np.linalg.solve(chol.T, np.linalg.solve(chol, np.eye(len(chol))))
    return np.linalg.cholesky((inverse + inverse.T) / 2)


def set_head_factors(params: Any, factors: np.ndarray, noise_variances: np.ndarray) -> Any:
    """HetStat parameters with action dimension i's factor set to ``factors[i]`` (A, F, F) and head_noise to s² (A,)."""
    inner = dict(params["params"])
    diag = np.diagonal(factors, axis1=1, axis2=2)
    raw = np.tril(factors, -1) + np.log(diag)[:, :, None] * np.eye(factors.shape[1])  # blocks store log-diagonals
    squares, below = dense_to_blocks(raw, sum(k.startswith("scale_tril_") for k in inner))
    for j, square in enumerate(squares):
        inner[f"scale_tril_{j}"] = jnp.asarray(square, jnp.float32)
    for j, rectangle in enumerate(below):
        inner[f"scale_below_{j}"] = jnp.asarray(rectangle, jnp.float32)
    inner["head_noise"] = jnp.asarray(noise_variances, jnp.float32)
    return {**params, "params": inner}


def posterior_model(model: nn.Module) -> nn.Module:
    """The same HetStat with the posterior head (its parameters: :func:`fit_posterior_head`'s)."""
    return model.clone(config=replace(model.config, head="posterior"))


@functools.partial(jax.jit, static_argnums=0)
def _mean_and_features(model: nn.Module, params: Any, x: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
    mu, _, _, phi = model.apply(params, x, with_features=True)
    return mu, phi


def pre_squash_noise(mode: str, mu: jnp.ndarray, actions: jnp.ndarray, base: jnp.ndarray | None) -> np.ndarray:
    """s_i²: the mean squared residual of the demo actions (N, A) about the mean μ (N, A), before the squash → (A,)."""
    residual = tg.unsquash(mode, actions, base) - tg.squash_mean(mode, mu, base)
    return np.mean(np.square(np.asarray(residual, np.float64)), axis=0)


def fit_posterior_head(
    model: nn.Module, params: Any, x: np.ndarray, actions: np.ndarray, base: jnp.ndarray | None, mode: str
) -> tuple[Any, np.ndarray]:
    """The posterior head on the training demos: normalised x (N, D), their actions (N, A) and the VLA's base
    actions (N, A) or None → (parameters for :func:`posterior_model`, s² (A,)). The mean and the trunk are kept."""
    action_dim = params["params"]["loc_weights"].shape[1]
    inner = {**params["params"], "head_noise": jnp.zeros((action_dim,), jnp.float32)}  # a learned head lacks it
    mu, phi = _mean_and_features(posterior_model(model), {**params, "params": inner}, jnp.asarray(x))
    noise = pre_squash_noise(mode, mu, jnp.asarray(actions), base)
    g = gram(phi)
    factors = np.stack([posterior_factor(g, s2) for s2 in noise])
    return set_head_factors(params, factors, noise), noise
