"""The HetStat network (thesis App. B; CSIL's heteroscedastic stationary policy).

trunk:  Dense(1024) → LayerNorm → ELU → Dense(1024) → ELU → Dense(48) → ELU
φ:      stationary random features, F = 1024 (learned W̃ and log-lengthscales)
head:   per action dim i, mean μ_i = φᵀm_i and variance φᵀΣ_iφ with Σ_i = L_iL_iᵀ (prior Σ = I)
std:    σ_i = √prior_var · tanh(√(σ²_min + φᵀΣ_iφ))
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from csil_diag.config import HetStatConfig
from csil_diag.policy.stationary import stationary_features


def tril_with_exp_diag(raw: jnp.ndarray) -> jnp.ndarray:
    """(..., F, F) unconstrained → lower-triangular with a positive (exp) diagonal; zeros ↦ identity."""
    diag = jnp.exp(jnp.diagonal(raw, axis1=-2, axis2=-1))
    eye = jnp.eye(raw.shape[-1], dtype=raw.dtype)
    return jnp.tril(raw, -1) + eye * diag[..., None, :]


def full_variance(phi: jnp.ndarray, raw_tril: jnp.ndarray) -> jnp.ndarray:
    """φᵀL_iL_iᵀφ = ‖L_iᵀφ‖² for every action dim: phi (B, F), raw_tril (A, F, F) → (B, A)."""
    proj = jnp.einsum("bf,afg->bag", phi, tril_with_exp_diag(raw_tril))
    return jnp.sum(jnp.square(proj), axis=-1)


def diagonal_variance(phi: jnp.ndarray, raw_log_scale: jnp.ndarray) -> jnp.ndarray:
    """Diagonal Σ_i = diag(exp(2r_i)): phi (B, F), raw_log_scale (A, F) → (B, A). Speed studies only."""
    return jnp.square(phi) @ jnp.exp(2.0 * raw_log_scale).T


def predictive_std(variance: jnp.ndarray, prior_variance: float, min_variance: float) -> jnp.ndarray:
    """CSIL's bounded std: √prior_var · tanh(√(σ²_min + var)); at the prior (var ≈ ‖φ‖² ≈ 1) ≈ 0.66."""
    return math.sqrt(prior_variance) * jnp.tanh(jnp.sqrt(min_variance + variance))


class HetStat(nn.Module):
    """x (B, D) → (μ (B, A), σ (B, A)) of the pre-squash Gaussian."""

    config: HetStatConfig
    action_dim: int

    def trunk(self, x: jnp.ndarray) -> jnp.ndarray:
        cfg = self.config
        init = nn.initializers.orthogonal()
        h = x
        for i, width in enumerate(cfg.hidden):
            h = nn.Dense(width, kernel_init=init, name=f"dense_{i}")(h)
            if i == 0 and cfg.layer_norm:
                h = nn.LayerNorm(name="layer_norm")(h)
            h = nn.elu(h)
        return nn.elu(nn.Dense(cfg.bottleneck, kernel_init=init, name="bottleneck")(h))

    @nn.compact
    def __call__(self, x: jnp.ndarray, faithful: bool = False) -> tuple[jnp.ndarray, jnp.ndarray]:
        """``faithful``: the variance sees stop_grad(φ), so the NLL trains only the covariance."""
        cfg = self.config
        h = self.trunk(x)
        random_weights = self.param(
            "random_weights", nn.initializers.normal(1.0), (cfg.bottleneck, cfg.features // 2)
        )
        log_lengthscales = self.param(
            "log_lengthscales", nn.initializers.constant(cfg.log_lengthscale_init), (cfg.bottleneck,)
        )
        phi = stationary_features(h, random_weights, log_lengthscales, cfg.activation)
        loc_weights = self.param("loc_weights", nn.initializers.zeros, (cfg.features, self.action_dim))
        mu = phi @ loc_weights
        phi_var = jax.lax.stop_gradient(phi) if faithful else phi
        if cfg.covariance == "full":
            raw = self.param(
                "scale_tril", nn.initializers.zeros, (self.action_dim, cfg.features, cfg.features)
            )
            var = full_variance(phi_var, raw)
        else:
            raw = self.param("scale_diag", nn.initializers.zeros, (self.action_dim, cfg.features))
            var = diagonal_variance(phi_var, raw)
        return mu, predictive_std(var, cfg.prior_variance, cfg.min_variance)
