"""The HetStat network (thesis App. B; CSIL's heteroscedastic stationary policy).

trunk:  Dense(1024) → LayerNorm → ELU → Dense(1024) → ELU → Dense(48) → ELU
φ:      stationary random features, F = 1024 (learned W̃ and log-lengthscales)
head:   per action dim i, mean μ_i = φᵀm_i and variance φᵀΣ_iφ with Σ_i = L_iL_iᵀ (prior Σ = I)
std:    σ_i = √prior_var · tanh(√(σ²_min + φᵀΣ_iφ))

Remedies (HetStatConfig; off by default): a spectral trunk (every layer's spectral norm ≤ c, residual hidden
blocks, no LayerNorm: distances in the input bound distances in h, as in SNGP), fixed lengthscales, a
random-feature skip (half of φ from the input itself, so no trunk can map an unseen input onto seen features), and a
posterior head (``policy/posterior_head.py``: at evaluation the factors are the Bayesian posterior's, and
``head_noise`` — zero and untrained during BC — adds the demos' noise to φᵀΣφ).
"""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from csil_diag.config import HetStatConfig
from csil_diag.policy.stationary import stationary_features
from csil_diag.runs import register_state_upgrade


def tril_with_exp_diag(raw: jnp.ndarray) -> jnp.ndarray:
    """(..., F, F) unconstrained → lower-triangular with a positive (exp) diagonal; zeros ↦ identity."""
    diag = jnp.exp(jnp.diagonal(raw, axis1=-2, axis2=-1))
    eye = jnp.eye(raw.shape[-1], dtype=raw.dtype)
    return jnp.tril(raw, -1) + eye * diag[..., None, :]


def full_variance(phi: jnp.ndarray, raw_tril: jnp.ndarray) -> jnp.ndarray:
    """φᵀL_iL_iᵀφ = ‖L_iᵀφ‖² for every action dim: phi (B, F), raw_tril (A, F, F) → (B, A).

    The reference form (one dense factor); :func:`blocked_variance` computes the same with half the work.
    """
    proj = jnp.einsum("bf,afg->abg", phi, tril_with_exp_diag(raw_tril))
    return jnp.sum(jnp.square(proj), axis=-1).T


def _tril_with_exp_diag_middle(raw: jnp.ndarray) -> jnp.ndarray:
    """(b, A, b) → raw[:, i, :] lower-triangular with a positive (exp) diagonal for every action dim i."""
    return jnp.swapaxes(tril_with_exp_diag(jnp.swapaxes(raw, 0, 1)), 0, 1)


def blocked_variance(phi: jnp.ndarray, squares: list[jnp.ndarray], below: list[jnp.ndarray]) -> jnp.ndarray:
    """‖L_iᵀφ‖² with L_i's lower triangle stored by column blocks of width b: phi (B, F) → (B, A).

    ``squares[j]`` (b, A, b) is column block j's diagonal square (strict lower part free, exp on the diagonal) and
    ``below[j]`` (F − (j+1)·b, A, b) the rows under it (none for the last block): entry [r, i, c] is L_i's row
    j·b + r (resp. (j+1)·b + r), column j·b + c. Zeros everywhere is L = I, exactly as in the dense form, but the
    zeros above the diagonal are neither stored, multiplied nor updated (~53 % of the dense work for 16 blocks). The
    action dimension sits in the middle so that every product, forward and backward, is one plain
    (B × K) @ (K × A·b) GEMM on the stored arrays: no transposed copies of the factor or of its gradient.
    """
    b, a, _ = squares[0].shape
    total = 0.0
    for j, square in enumerate(squares):
        proj = phi[:, j * b : (j + 1) * b] @ _tril_with_exp_diag_middle(square).reshape(b, a * b)
        if j < len(below):
            proj = proj + phi[:, (j + 1) * b :] @ below[j].reshape(-1, a * b)
        total = total + jnp.sum(jnp.square(proj.reshape(-1, a, b)), axis=-1)
    return total


def blocks_to_dense(squares: list, below: list) -> np.ndarray:
    """The raw (A, F, F) factor the blocks store (zeros above the diagonal, log-diagonal), for :func:`full_variance`."""
    b, a, _ = np.shape(squares[0])
    dense = np.zeros((a, b * len(squares), b * len(squares)), np.asarray(squares[0]).dtype)
    for j, square in enumerate(squares):
        dense[:, j * b : (j + 1) * b, j * b : (j + 1) * b] = np.transpose(np.asarray(square), (1, 0, 2))
        if j < len(below):
            dense[:, (j + 1) * b :, j * b : (j + 1) * b] = np.transpose(np.asarray(below[j]), (1, 0, 2))
    return np.tril(dense)


def dense_to_blocks(raw: np.ndarray, n_blocks: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Inverse of :func:`blocks_to_dense`: raw (A, F, F) (only its lower triangle is read) → (squares, below)."""
    raw = np.tril(np.asarray(raw))
    b = raw.shape[-1] // n_blocks
    squares = [np.transpose(raw[:, j * b : (j + 1) * b, j * b : (j + 1) * b], (1, 0, 2)) for j in range(n_blocks)]
    below = [np.transpose(raw[:, (j + 1) * b :, j * b : (j + 1) * b], (1, 0, 2)) for j in range(n_blocks - 1)]
    return squares, below


@register_state_upgrade
def upgrade_legacy_factor(tree: Any) -> Any:
    """A restored state dict with every HetStat factor in today's layout.

    Until the seventh session the factor's column blocks were stored whole, as ``scale_tril_j`` (A, F − j·b, b);
    now as ``scale_tril_j`` (b, A, b) plus ``scale_below_j`` (F − (j+1)·b, A, b). The move is a transpose and a
    split, exact for parameters and for AdamW's moments alike (both are elementwise), so checkpoints of older runs
    resume. Applied to any nested dict, so a params tree and an optimizer state convert the same way.
    """
    if not isinstance(tree, dict):
        return tree
    tree = {k: upgrade_legacy_factor(v) for k, v in tree.items()}
    names = [k for k in tree if k.startswith("scale_tril_")]
    if not names or any(k.startswith("scale_below_") for k in tree):
        return tree
    blocks = [np.asarray(tree[f"scale_tril_{j}"]) for j in range(len(names))]
    if len(blocks) == 1 and blocks[0].shape[0] == blocks[0].shape[2]:
        return tree  # one block in today's layout (b, A, b) has no rectangle below it
    b = blocks[0].shape[-1]
    for j, block in enumerate(blocks):
        tree[f"scale_tril_{j}"] = np.ascontiguousarray(np.transpose(block[:, :b], (1, 0, 2)))
        if j < len(blocks) - 1:
            tree[f"scale_below_{j}"] = np.ascontiguousarray(np.transpose(block[:, b:], (1, 0, 2)))
    return tree


def diagonal_variance(phi: jnp.ndarray, raw_log_scale: jnp.ndarray) -> jnp.ndarray:
    """Diagonal Σ_i = diag(exp(2r_i)): phi (B, F), raw_log_scale (A, F) → (B, A). Speed studies only."""
    return jnp.square(phi) @ jnp.exp(2.0 * raw_log_scale).T


def predictive_std(variance: jnp.ndarray, prior_variance: float, min_variance: float) -> jnp.ndarray:
    """CSIL's bounded std: √prior_var · tanh(√(σ²_min + var)); at the prior (var ≈ ‖φ‖² ≈ 1) ≈ 0.66."""
    return math.sqrt(prior_variance) * jnp.tanh(jnp.sqrt(min_variance + variance))


def spectral_norm_estimate(kernel: jnp.ndarray, iterations: int = 30) -> jnp.ndarray:
    """Largest singular value of a (in, out) kernel by power iteration from a fixed start (stateless, so the same
    params always give the same network). The singular vectors are constants for the gradient, as in SNGP. It
    approaches σ_max from below: within 1 % for 1024² Gaussian kernels (a dense spectral edge, the worst case)."""
    v0 = jnp.ones((kernel.shape[1],), kernel.dtype) / math.sqrt(kernel.shape[1])
    w = jax.lax.stop_gradient(kernel)

    def step(_, v):
        u = w @ v
        u = u / (jnp.linalg.norm(u) + 1e-12)
        v = w.T @ u
        return v / (jnp.linalg.norm(v) + 1e-12)

    v = jax.lax.fori_loop(0, iterations, step, v0)
    u = w @ v
    u = jax.lax.stop_gradient(u / (jnp.linalg.norm(u) + 1e-12))
    return u @ kernel @ v


class SpectralDense(nn.Module):
    """Dense layer whose kernel is scaled down to spectral norm ≤ ``bound`` (never up)."""

    features: int
    bound: float

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        kernel = self.param("kernel", nn.initializers.orthogonal(), (x.shape[-1], self.features))
        bias = self.param("bias", nn.initializers.zeros, (self.features,))
        sigma = spectral_norm_estimate(kernel)
        return x @ (kernel * jnp.minimum(1.0, self.bound / sigma)) + bias


def spectral_trunk_lipschitz_bound(config: HetStatConfig) -> float:
    """Upper bound on the spectral trunk's Lipschitz constant (ELU is 1-Lipschitz): c for the first layer,
    1 + c per residual block, c for the bottleneck."""
    c = config.spectral_bound
    residual = sum(1 for a, b in zip(config.hidden, config.hidden[1:], strict=False) if a == b)
    plain = len(config.hidden) - residual  # the first layer and any width change
    return c**plain * (1 + c) ** residual * c


class Trunk(nn.Module):
    """Dense(1024) → LayerNorm → ELU → Dense(1024) → ELU → Dense(48) → ELU (orthogonal init)."""

    config: HetStatConfig

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        cfg = self.config
        if cfg.trunk == "spectral":
            h = x
            for i, width in enumerate(cfg.hidden):
                out = nn.elu(SpectralDense(width, cfg.spectral_bound, name=f"dense_{i}")(h))
                h = h + out if i > 0 and h.shape[-1] == width else out
            return nn.elu(SpectralDense(cfg.bottleneck, cfg.spectral_bound, name="bottleneck")(h))
        init = nn.initializers.orthogonal()
        h = x
        for i, width in enumerate(cfg.hidden):
            h = nn.Dense(width, kernel_init=init, name=f"dense_{i}")(h)
            if i == 0 and cfg.layer_norm:
                h = nn.LayerNorm(name="layer_norm")(h)
            h = nn.elu(h)
        return nn.elu(nn.Dense(cfg.bottleneck, kernel_init=init, name="bottleneck")(h))


class HetStat(nn.Module):
    """x (B, D) → (μ (B, A), σ (B, A)) of the pre-squash Gaussian; ``head`` maps bottleneck h → (μ, σ)."""

    config: HetStatConfig
    action_dim: int

    input_dim: int | None = None  # needed (and used) only with rf_skip

    def setup(self) -> None:
        cfg = self.config
        self.trunk = Trunk(cfg)
        # With the skip, half of the F features come from the input: each half has F/4 sin/cos pairs.
        pairs = cfg.features // 4 if cfg.rf_skip else cfg.features // 2
        self.random_weights = self.param("random_weights", nn.initializers.normal(1.0), (cfg.bottleneck, pairs))
        self.log_lengthscales = self._lengthscales("log_lengthscales", cfg.bottleneck)
        if cfg.rf_skip:
            if self.input_dim is None:
                raise ValueError("HetStat(rf_skip=True) needs input_dim")
            self.skip_weights = self.param("skip_random_weights", nn.initializers.normal(1.0), (self.input_dim, pairs))
            self.skip_log_lengthscales = self._lengthscales("skip_log_lengthscales", self.input_dim)
        self.loc_weights = self.param("loc_weights", nn.initializers.zeros, (cfg.features, self.action_dim))
        if cfg.covariance == "full":
            b = cfg.features // cfg.covariance_blocks
            nb, a = cfg.covariance_blocks, self.action_dim
            self.scale_squares = [self.param(f"scale_tril_{j}", nn.initializers.zeros, (b, a, b)) for j in range(nb)]
            self.scale_below = [
                self.param(f"scale_below_{j}", nn.initializers.zeros, (cfg.features - (j + 1) * b, a, b))
                for j in range(nb - 1)
            ]
        else:
            self.scale_diag = self.param("scale_diag", nn.initializers.zeros, (self.action_dim, cfg.features))
        if cfg.head == "posterior":
            self.head_noise = self.param("head_noise", nn.initializers.zeros, (self.action_dim,))

    def _lengthscales(self, name: str, width: int) -> jnp.ndarray:
        init = self.config.log_lengthscale_init
        if self.config.learn_lengthscale:
            return self.param(name, nn.initializers.constant(init), (width,))
        return jnp.full((width,), init, jnp.float32)  # a constant, not a parameter: weight decay cannot move it

    def head(self, h: jnp.ndarray, faithful: bool = False, with_features: bool = False, x: jnp.ndarray | None = None):
        """Stationary features and the Bayesian linear head on bottleneck activations h (B, bottleneck); with
        rf_skip, ``x`` (B, input_dim) feeds the other half of the features."""
        cfg = self.config
        phi = stationary_features(h, self.random_weights, self.log_lengthscales, cfg.activation)
        if cfg.rf_skip:
            if x is None:
                raise ValueError("a HetStat with rf_skip needs the input x in head()")
            skip = stationary_features(x, self.skip_weights, self.skip_log_lengthscales, cfg.activation)
            phi = jnp.concatenate([phi, skip], axis=-1) / math.sqrt(2.0)  # ‖φ‖² as without the skip
        mu = phi @ self.loc_weights
        phi_var = jax.lax.stop_gradient(phi) if faithful else phi
        if cfg.covariance == "full":
            var = blocked_variance(phi_var, list(self.scale_squares), list(self.scale_below))
        else:
            var = diagonal_variance(phi_var, self.scale_diag)
        if cfg.head == "posterior":
            var = var + jax.lax.stop_gradient(self.head_noise)  # set with the posterior; BC never moves it
        std = predictive_std(var, cfg.prior_variance, cfg.min_variance)
        return (mu, std, h, phi) if with_features else (mu, std)

    def __call__(self, x: jnp.ndarray, faithful: bool = False, with_features: bool = False):
        """``faithful``: the variance sees stop_grad(φ), so the NLL trains only the covariance."""
        return self.head(self.trunk(x), faithful, with_features, x)
