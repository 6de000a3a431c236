"""Throughput of the one-call actions + embeddings path (:func:`csil_diag.vla.pi0.infer`)."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from csil_diag.errors import UserError
from csil_diag.vla import pi0
from csil_diag.vla.adapter import CAMERA_MAP
from csil_diag.vla.config import Pi0Config


def random_observation(
    config: Pi0Config, batch: int, seed: int = 0, valid: Sequence[str] | None = None
) -> pi0.Observation:
    """Random images, state and prompt; the cameras in ``valid`` (default: all) unmasked, the others masked."""
    rs = np.random.RandomState(seed)
    s, t = config.siglip.image_size, config.max_token_len
    valid = config.cameras if valid is None else tuple(valid)
    return pi0.Observation(
        images={c: pi0.image_to_float(rs.randint(0, 256, (batch, s, s, 3)).astype(np.uint8)) for c in config.cameras},
        image_masks={c: jnp.full((batch,), c in valid, bool) for c in config.cameras},
        state=jnp.asarray(rs.uniform(-1, 1, (batch, config.action_dim)).astype(np.float32)),
        tokenized_prompt=jnp.asarray(rs.randint(1, config.vocab_size, (batch, t)).astype(np.int32)),
        tokenized_prompt_mask=jnp.ones((batch, t), bool),
    )


def unmasked_cameras(config: Pi0Config, valid: str | None, fixture: Path | None = None) -> tuple[str, ...]:
    """The cameras a masked-camera comparison leaves valid: ``valid`` (comma-separated), else the fixture's
    (cameras its masks ever set), else the ones robosuite renders."""
    if valid:
        names = tuple(v.strip() for v in valid.split(",") if v.strip())
    elif fixture is not None:
        masks = json.loads((fixture / "meta.json").read_text())["spec"].get("image_masks", {})
        names = tuple(c for c, m in masks.items() if any(m)) or config.cameras
    else:
        names = tuple(c for c in config.cameras if c in CAMERA_MAP.values())
    unknown = [n for n in names if n not in config.cameras]
    if unknown or not names:
        raise UserError(f"--valid must name cameras of the model ({', '.join(config.cameras)}); got {valid!r}")
    return names


def _timed_calls(call, repeats: int) -> tuple[float, float]:
    """(first call incl. compilation, median of ``repeats`` later calls), seconds."""
    start = time.perf_counter()
    jax.block_until_ready(call())
    first = time.perf_counter() - start
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(call())
        times.append(time.perf_counter() - start)
    return first, float(np.median(times))


def measure_throughput(
    config: Pi0Config, params: dict, *, batch: int = 8, num_steps: int = 10, repeats: int = 5
) -> dict[str, float]:
    """Observations per second of :func:`pi0.infer` (compiled once beforehand, not timed)."""
    obs = random_observation(config, batch)
    noise = jax.random.normal(jax.random.key(0), (batch, config.action_horizon, config.action_dim))
    first, per_call = _timed_calls(lambda: pi0.infer(config, params, obs, noise, num_steps), repeats)
    return {"obs_per_s": batch / per_call, "ms_per_call": 1000 * per_call, "first_call_s": first}


def compare_masked(
    config: Pi0Config,
    params: dict,
    valid: Sequence[str],
    *,
    batch: int = 8,
    num_steps: int = 10,
    rounds: int = 3,
    repeats: int = 3,
) -> dict[str, float]:
    """:func:`pi0.infer` with the cameras outside ``valid`` masked: computed and masked (openpi's way) vs dropped.

    The two paths alternate for ``rounds`` rounds of ``repeats`` calls each, so a change in machine load hits both;
    per-call times are medians over all rounds. Also reports the largest difference of their outputs.
    """
    obs = random_observation(config, batch, valid=valid)
    noise = jax.random.normal(jax.random.key(0), (batch, config.action_horizon, config.action_dim))
    outputs, times = {}, {"masked": [], "dropped": []}
    for _ in range(rounds):
        for name, drop in (("masked", False), ("dropped", True)):
            call = lambda drop=drop: pi0.infer(config, params, obs, noise, num_steps, drop_masked=drop)
            outputs[name] = call()
            times[name].append(_timed_calls(call, repeats)[1])
    masked, dropped = (float(np.median(times[k])) for k in ("masked", "dropped"))
    a, b = outputs["masked"], outputs["dropped"]
    diff = max(
        float(jnp.abs(a.actions - b.actions).max()),
        *(float(jnp.abs(a.embeddings[k] - b.embeddings[k]).max()) for k in a.embeddings),
    )
    return {
        "ms_masked": 1000 * masked,
        "ms_dropped": 1000 * dropped,
        "speedup": masked / dropped,
        "max_abs_diff": diff,
        "prefix_tokens": config.prefix_len,
        "prefix_tokens_dropped": (len(config.cameras) - len(valid)) * config.image_tokens,
    }
