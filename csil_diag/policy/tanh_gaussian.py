"""Tanh-squashed diagonal Gaussians and their composition with a base (VLA) action (thesis §4).

Modes, with z ~ N(μ, diag σ²) from the HetStat and a_base the VLA's action:
- ``head``:     a = tanh(z)
- ``residual``: a = tanh(z + atanh(a_base))          (the mean is shifted by the VLA action)
- ``ensemble``: a = (tanh(z) + a_base) / 2

All functions are pure and jit-able; shapes (..., A) for actions, means and stds.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

MODES = ("head", "residual", "ensemble")
CLIP = 0.999  # actions are clipped this far inside ±1 before atanh, for a finite log-prob
LOG_2PI = math.log(2.0 * math.pi)


def check_mode(mode: str) -> str:
    if mode not in MODES:
        raise ValueError(f"unknown composition mode {mode!r}; choose one of {', '.join(MODES)}")
    return mode


def composed_base(mode: str, base_actions: jnp.ndarray | None) -> jnp.ndarray | None:
    """The VLA actions the HetStat composes with (None in head mode: the HetStat acts alone)."""
    return None if check_mode(mode) == "head" or base_actions is None else jnp.asarray(base_actions)


def log_tanh_jacobian(z: jnp.ndarray) -> jnp.ndarray:
    """log|d tanh(z)/dz| = log(1 − tanh²z), computed without cancellation for large |z|."""
    return 2.0 * (math.log(2.0) - z - jax.nn.softplus(-2.0 * z))


def gaussian_log_prob(z: jnp.ndarray, mean: jnp.ndarray, std: jnp.ndarray) -> jnp.ndarray:
    """Elementwise log N(z; mean, std²)."""
    return -0.5 * jnp.square((z - mean) / std) - jnp.log(std) - 0.5 * LOG_2PI


def gaussian_kl(mean_p: jnp.ndarray, std_p: jnp.ndarray, mean_q: jnp.ndarray, std_q: jnp.ndarray) -> jnp.ndarray:
    """Elementwise KL(N(mean_p, std_p²) ‖ N(mean_q, std_q²)) in nats: (..., A) → (..., A)."""
    return jnp.log(std_q / std_p) + (jnp.square(std_p) + jnp.square(mean_p - mean_q)) / (2 * jnp.square(std_q)) - 0.5


def squash_mean(mode: str, mu: jnp.ndarray, a_base: jnp.ndarray | None) -> jnp.ndarray:
    """Mean of the pre-squash Gaussian: μ, shifted by atanh(a_base) in residual mode."""
    if check_mode(mode) == "residual":
        return mu + jnp.arctanh(jnp.clip(a_base, -CLIP, CLIP))
    return mu


def squash(mode: str, z: jnp.ndarray, a_base: jnp.ndarray | None) -> jnp.ndarray:
    """Pre-squash sample → action in [-1, 1]."""
    a = jnp.tanh(z)
    return 0.5 * (a + a_base) if check_mode(mode) == "ensemble" else a


def log_det_squash(mode: str, z: jnp.ndarray) -> jnp.ndarray:
    """Elementwise log|da/dz| of :func:`squash`."""
    out = log_tanh_jacobian(z)
    return out - math.log(2.0) if check_mode(mode) == "ensemble" else out


def unsquash(mode: str, a: jnp.ndarray, a_base: jnp.ndarray | None) -> jnp.ndarray:
    """Action → pre-squash value z (clipped inside ±1 first, so the result is finite)."""
    t = 2.0 * a - a_base if check_mode(mode) == "ensemble" else a
    return jnp.arctanh(jnp.clip(t, -CLIP, CLIP))


def log_prob(
    mode: str, a: jnp.ndarray, mu: jnp.ndarray, std: jnp.ndarray, a_base: jnp.ndarray | None = None
) -> jnp.ndarray:
    """log q(a | s) of the composed policy, summed over action dims: (..., A) → (...)."""
    z = unsquash(mode, a, a_base)
    per_dim = gaussian_log_prob(z, squash_mean(mode, mu, a_base), std) - log_det_squash(mode, z)
    return per_dim.sum(-1)


def sample(
    key: jax.Array,
    mode: str,
    mu: jnp.ndarray,
    std: jnp.ndarray,
    a_base: jnp.ndarray | None = None,
    k: int = 1,
) -> tuple[jnp.ndarray, jnp.ndarray]:
    """K samples: returns (actions (K, ..., A), per-dim log q (K, ..., A)), the log-prob computed from z."""
    mean = squash_mean(mode, mu, a_base)
    z = mean + std * jax.random.normal(key, (k, *mean.shape), mean.dtype)
    per_dim = gaussian_log_prob(z, mean, std) - log_det_squash(mode, z)
    return squash(mode, z, a_base), per_dim


def log_ratio_pre_squash(
    z: jnp.ndarray, mean_p: jnp.ndarray, std_p: jnp.ndarray, mean_q: jnp.ndarray, std_q: jnp.ndarray
) -> jnp.ndarray:
    """log p(a) − log q(a) at a = squash(z) for two policies composed with the same base action: (..., A) → (...).

    The squash's Jacobian is the same for both and cancels, so the ratio is exact where actions saturate (the gripper
    at ±1); evaluating each log-prob at the clipped action instead would leave a Jacobian term that pulls saturated
    means back towards zero."""
    return (gaussian_log_prob(z, mean_p, std_p) - gaussian_log_prob(z, mean_q, std_q)).sum(-1)


def deterministic_action(mode: str, mu: jnp.ndarray, a_base: jnp.ndarray | None = None) -> jnp.ndarray:
    """The evaluation action: the squashed mean."""
    return squash(mode, squash_mean(mode, mu, a_base), a_base)


def entropy_estimate(
    key: jax.Array,
    mode: str,
    mu: jnp.ndarray,
    std: jnp.ndarray,
    a_base: jnp.ndarray | None = None,
    k: int = 32,
) -> tuple[jnp.ndarray, jnp.ndarray]:
    """Monte-Carlo entropy H(s) = −E[log q(a|s)] with K samples.

    Returns (H (...), per-dimension entropies (..., A)); the dimensions are independent, so they sum to H.
    """
    _, per_dim = sample(key, mode, mu, std, a_base, k)
    per_dim_entropy = -per_dim.mean(0)
    return per_dim_entropy.sum(-1), per_dim_entropy


def gaussian_entropy(std: jnp.ndarray) -> jnp.ndarray:
    """Pre-squash Gaussian entropy Σ_i (log σ_i + ½ log 2πe): the HetStat's predictive variance itself."""
    return (jnp.log(std) + 0.5 * (LOG_2PI + 1.0)).sum(-1)
