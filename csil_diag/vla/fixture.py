"""Check our π0 against a golden fixture made by the real openpi code (``../shared/fixtures/openpi_pi0_*``).

A fixture directory holds ``meta.json`` (the model spec), ``params/`` and ``params_init/`` (openpi-layout
checkpoints) and ``golden.npz`` (inputs and openpi's outputs, keys ``<tag>/<computation>/<array>``). Tags:
f32 (float32 model), bf16 (bfloat16 activations, float32 params), bf16params (bfloat16 params too, openpi's
inference path) and f32_init (the unperturbed ``params_init``). Every golden array is recomputed and compared —
with openpi's computation (masked cameras computed) — and the samples once more on our default path, which drops
the cameras masked for the whole batch (rows marked ``(dropped)``: equal up to summation order, so not bit-equal).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, replace
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from csil_diag.errors import UserError
from csil_diag.vla import pi0
from csil_diag.vla.checkpoint import load_params
from csil_diag.vla.config import Pi0Config, from_fixture_meta

F32_TOL = 1e-5
BF16_TOL = 5e-2
SAMPLE_STEPS = (3, 10)
DROPPED = "(dropped)"  # suffix of the rows that check the default path, masked cameras dropped


@dataclass(frozen=True)
class Comparison:
    """One golden array: ``max_abs`` over the compared entries, exact for bool / int arrays."""

    key: str
    shape: tuple[int, ...]
    max_abs: float
    tol: float
    note: str = ""

    @property
    def passed(self) -> bool:
        return bool(self.max_abs <= self.tol)


def load_golden(fixture_dir: Path) -> dict[str, np.ndarray]:
    path = Path(fixture_dir) / "golden.npz"
    if not path.is_file():
        raise UserError(f"no golden.npz in {fixture_dir}")
    with np.load(path) as data:
        return {k: data[k] for k in data.files}


def golden_observation(golden: dict[str, np.ndarray], config: Pi0Config) -> pi0.Observation:
    try:
        return pi0.Observation(
            images={c: pi0.image_to_float(golden[f"inputs/images_uint8.{c}"]) for c in config.cameras},
            image_masks={c: jnp.asarray(golden[f"inputs/image_masks.{c}"]) for c in config.cameras},
            state=jnp.asarray(golden["inputs/state"]),
            tokenized_prompt=jnp.asarray(golden["inputs/tokenized_prompt"]),
            tokenized_prompt_mask=jnp.asarray(golden["inputs/tokenized_prompt_mask"]),
        )
    except KeyError as exc:
        raise UserError(f"golden.npz lacks input {exc.args[0]!r}") from None


@functools.partial(jax.jit, static_argnums=0)
def _forward(
    config: Pi0Config, params: dict, obs: pi0.Observation, x_t: jax.Array, time: jax.Array, actions: jax.Array, rng
) -> dict[str, jax.Array]:
    """Everything but sampling, keyed like golden.npz (without the tag)."""
    prefix = pi0.prefix_pass(config, params, obs)
    suffix = pi0.suffix_pass(config, params, obs.state, x_t, time, prefix)
    noise, t = pi0.draw_noise_and_time(rng, actions.shape)
    x_j, u_j = pi0.flow_targets(noise, t, actions)
    joint = pi0.joint_pass(config, params, obs, x_j, t)
    out = {
        "prefix/prefix_tokens": prefix.tokens,
        "prefix/prefix_mask": prefix.mask,
        "prefix/prefix_ar_mask": prefix.ar_mask,
        "prefix/prefix_attn_mask": prefix.attn_mask,
        "prefix/prefix_positions": prefix.positions,
        "prefix/prefix_out": prefix.out,
        "prefix/kv_cache_k": prefix.kv_cache[0],
        "prefix/kv_cache_v": prefix.kv_cache[1],
        "compute_loss/loss": pi0.compute_loss(config, params, rng, obs, actions),
        "joint/noise": noise,
        "joint/time": t,
        "joint/x_t": x_j,
        "joint/u_t": u_j,
        "joint/positions": joint.positions,
        "joint/suffix_out": joint.suffix_out,
        "joint/v_t": joint.v_t,
        "joint/loss": jnp.mean(jnp.square(joint.v_t - u_j), axis=-1),
    }
    for name in ("tokens", "mask", "ar_mask", "attn_mask", "positions", "out", "v_t"):
        out[f"suffix/suffix_{name}"] = getattr(suffix, name)
    return out


def _sample(
    config: Pi0Config, params: dict, obs: pi0.Observation, noise: np.ndarray, drop_masked: bool = False
) -> dict[str, jax.Array]:
    """Euler sampling as openpi computes it (masked cameras computed), or with them dropped (our default path)."""
    return {
        f"sample_actions/num_steps_{n}": pi0.infer(
            config, params, obs, jnp.asarray(noise), n, drop_masked=drop_masked
        ).actions
        for n in SAMPLE_STEPS
    }


def _compare(key: str, got: jax.Array, want: np.ndarray, tol: float, rows: np.ndarray | None) -> Comparison:
    got = np.asarray(jnp.asarray(got).astype(jnp.float32) if jnp.issubdtype(got.dtype, jnp.floating) else got)
    if got.shape != want.shape:
        return Comparison(key, want.shape, float("inf"), tol, f"shape {got.shape} ≠ golden {want.shape}")
    exact = want.dtype.kind in "biu"
    diff = np.abs(got.astype(np.float64) - want.astype(np.float64))
    note = "exact" if exact else ""
    if rows is not None:  # rows of masked prefix tokens are meaningless in openpi (uniform attention)
        diff = diff[rows]
        note = "valid rows"
    return Comparison(key, want.shape, float(diff.max(initial=0.0)), 0.0 if exact else tol, note)


def check_fixture(fixture_dir: Path, dtypes: tuple[str, ...] = ("float32", "bfloat16")) -> list[Comparison]:
    """Recompute every golden array of the fixture for the requested activation dtypes; one row per array."""
    fixture_dir = Path(fixture_dir)
    if not fixture_dir.is_dir():
        raise UserError(f"no fixture directory at {fixture_dir}")
    golden = load_golden(fixture_dir)
    config32 = from_fixture_meta(fixture_dir / "meta.json", dtype="float32")
    params = load_params(config32, fixture_dir / "params")
    obs = golden_observation(golden, config32)
    x_t, time = jnp.asarray(golden["inputs/suffix_x_t"]), jnp.asarray(golden["inputs/suffix_time"])
    actions, noise = jnp.asarray(golden["inputs/actions"]), golden["inputs/sample_noise"]
    loss_rng = jax.random.wrap_key_data(jnp.asarray(golden["rng/compute_loss_rng_key_data"]))
    sample_rng = jax.random.wrap_key_data(jnp.asarray(golden["rng/sample_noise_rng_key_data"]))
    valid_rows = np.asarray(golden["f32/prefix/prefix_mask"])

    computed: dict[str, tuple[dict[str, jax.Array], float]] = {}
    dropped: dict[str, tuple[dict[str, jax.Array], float]] = {}  # the same samples, masked cameras dropped
    for dtype in dtypes:
        tag, tol = ("f32", F32_TOL) if dtype == "float32" else ("bf16", BF16_TOL)
        config = config32.with_dtype(dtype)
        out = dict(_forward(config, params, obs, x_t, time, actions, loss_rng))
        out |= _sample(config, params, obs, noise)
        rng_noise = jax.random.normal(sample_rng, noise.shape)
        out["sample_actions_rngnoise/num_steps_3"] = pi0.infer(
            config, params, obs, rng_noise, 3, drop_masked=False
        ).actions
        computed[tag] = (out, tol)
        dropped[tag] = (_sample(config, params, obs, noise, drop_masked=True), tol)
        if dtype == "float32":
            init = load_params(config, fixture_dir / "params_init")
            computed["f32_init"] = (_sample(config, init, obs, noise), F32_TOL)
        else:
            bf16_params = load_params(config, fixture_dir / "params", dtype="bfloat16")
            computed["bf16params"] = (_sample(config, bf16_params, obs, noise), BF16_TOL)

    results = []
    for tag, (out, tol) in computed.items():
        keys = sorted(k for k in golden if k.startswith(f"{tag}/"))
        missing = [k for k in keys if k.removeprefix(f"{tag}/") not in out]
        if missing:
            raise UserError(f"golden array {missing[0]} is not computed by csil-diag (a newer fixture format?)")
        for key in keys:
            rows = valid_rows if key.endswith("prefix/prefix_out") else None
            results.append(_compare(key, out[key.removeprefix(f"{tag}/")], golden[key], tol, rows))
    for tag, (out, tol) in dropped.items():
        for name, got in out.items():
            row = _compare(f"{tag}/{name}", got, golden[f"{tag}/{name}"], tol, None)
            results.append(replace(row, key=f"{row.key} {DROPPED}", note="masked cameras dropped"))
    return results
