"""Periodic activations and stationary random features (CSIL, Watson et al. 2023; thesis App. B).

A wide layer of periodic features of a lengthscale-scaled random projection behaves like a stationary
kernel: far from the training data the features decorrelate from those seen in training, so a Bayesian
linear head on them returns to its prior there.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import jax.numpy as jnp

PI = math.pi


def triangle_wave(x: jnp.ndarray) -> jnp.ndarray:
    """tri(x) = (x − πz)(−1)^z, z = ⌊x/π + ½⌋: a unit-slope triangle wave of period 2π."""
    z = jnp.floor(x / PI + 0.5)
    return (x - PI * z) * (1.0 - 2.0 * jnp.mod(z, 2.0))


def periodic_relu(x: jnp.ndarray) -> jnp.ndarray:
    """(tri(x) + tri(x + π/2))·π/4: CSIL's and the thesis' default stationary activation."""
    return (triangle_wave(x) + triangle_wave(x + PI / 2)) * (PI / 4)


def triangle(x: jnp.ndarray) -> jnp.ndarray:
    """Triangle wave scaled by π/(2√2): second moment π⁴/96 ≈ 1 over a period, like √2·sin."""
    return (PI / (2.0 * math.sqrt(2.0))) * triangle_wave(x)


def sin_cos(x: jnp.ndarray) -> jnp.ndarray:
    """sin(x) + cos(x)."""
    return jnp.sin(x) + jnp.cos(x)


ACTIVATIONS: dict[str, Callable[[jnp.ndarray], jnp.ndarray]] = {
    "periodic_relu": periodic_relu,
    "triangle": triangle,
    "sin_cos": sin_cos,
}


def random_projection(h: jnp.ndarray, random_weights: jnp.ndarray, log_lengthscales: jnp.ndarray) -> jnp.ndarray:
    """h̃ = (h ⊙ exp(log ℓ)) W̃: h (B, D), random_weights W̃ (D, F/2), log_lengthscales (D,) → (B, F/2)."""
    return (h * jnp.exp(log_lengthscales)) @ random_weights


def stationary_features(
    h: jnp.ndarray, random_weights: jnp.ndarray, log_lengthscales: jnp.ndarray, activation: str
) -> jnp.ndarray:
    """φ(h) = [f(h̃ + π/4), f(h̃ − π/4)] / √F with h̃ = :func:`random_projection` (h).

    h: (B, D) bottleneck activations; random_weights W̃: (D, F/2); log_lengthscales: (D,).
    Returns (B, F).
    """
    f = ACTIVATIONS[activation]
    projected = random_projection(h, random_weights, log_lengthscales)
    features = jnp.concatenate([f(projected + PI / 4), f(projected - PI / 4)], axis=-1)
    return features / math.sqrt(features.shape[-1])
