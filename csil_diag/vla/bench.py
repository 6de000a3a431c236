"""Throughput of the one-call actions + embeddings path (:func:`csil_diag.vla.pi0.infer`)."""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np

from csil_diag.vla import pi0
from csil_diag.vla.config import Pi0Config


def random_observation(config: Pi0Config, batch: int, seed: int = 0) -> pi0.Observation:
    """Random images, state and prompt; every camera and prompt token valid."""
    rs = np.random.RandomState(seed)
    s, t = config.siglip.image_size, config.max_token_len
    return pi0.Observation(
        images={c: pi0.image_to_float(rs.randint(0, 256, (batch, s, s, 3)).astype(np.uint8)) for c in config.cameras},
        image_masks={c: jnp.ones((batch,), bool) for c in config.cameras},
        state=jnp.asarray(rs.uniform(-1, 1, (batch, config.action_dim)).astype(np.float32)),
        tokenized_prompt=jnp.asarray(rs.randint(1, config.vocab_size, (batch, t)).astype(np.int32)),
        tokenized_prompt_mask=jnp.ones((batch, t), bool),
    )


def measure_throughput(
    config: Pi0Config, params: dict, *, batch: int = 8, num_steps: int = 10, repeats: int = 5
) -> dict[str, float]:
    """Observations per second of :func:`pi0.infer` (compiled once beforehand, not timed)."""
    obs = random_observation(config, batch)
    noise = jax.random.normal(jax.random.key(0), (batch, config.action_horizon, config.action_dim))
    start = time.perf_counter()
    jax.block_until_ready(pi0.infer(config, params, obs, noise, num_steps))
    compile_s = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(repeats):
        out = pi0.infer(config, params, obs, noise, num_steps)
    jax.block_until_ready(out)
    per_call = (time.perf_counter() - start) / repeats
    return {"obs_per_s": batch / per_call, "ms_per_call": 1000 * per_call, "first_call_s": compile_s}
