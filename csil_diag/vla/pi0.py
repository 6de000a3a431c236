"""π0: a PaliGemma prefix and an action expert trained by flow matching (openpi's ``Pi0``, not π0-FAST / π0.5).

prefix  = SigLIP tokens of every camera (n_patches each) + embedded prompt tokens — bidirectional attention
suffix  = [state token] + H action tokens; the state token sees the prefix and itself, the action tokens see
          everything (blockwise-causal mask from ar = [True, True, False, …])
flow    = x_t = t·noise + (1 − t)·actions, velocity target u = noise − actions; sampling integrates
          dx/dt = v(x_t, t) with Euler from t = 1 (noise) to t = 0 (actions), dt = −1/n, reusing the prefix
          KV cache for every step.

Embedding sites read in the same jitted call as the actions (:func:`infer`):
  state    suffix_out[:, 0] — the action expert at the state token; it never attends to action tokens,
           so it does not depend on the noise or the step (default site; width = expert width)
  actions  mean of suffix_out over the action tokens at the last Euler step (noise-dependent)
  prefix   mean of prefix_out over valid prefix tokens (prefix_mask) — LLM width

All functions take the (hashable) :class:`Pi0Config` and a params dict laid out like openpi's checkpoints.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import struct, traverse_util

from csil_diag.vla.config import Pi0Config
from csil_diag.vla.gemma import Gemma, KVCache
from csil_diag.vla.siglip import SigLIP
from csil_diag.vla.towers.module import PretrainedVision

Array = jax.Array
EMBEDDING_SITES = ("state", "actions", "prefix")
DEFAULT_SITE = "state"


@struct.dataclass
class Observation:
    """One batch of model inputs (already normalised / tokenised).

    images: camera → (B, S, S, 3) float32 in [-1, 1]; image_masks: camera → (B,) bool (False: camera absent);
    state: (B, action_dim) float32; tokenized_prompt: (B, max_token_len) int32; tokenized_prompt_mask: same, bool.
    """

    images: dict[str, Array]
    image_masks: dict[str, Array]
    state: Array
    tokenized_prompt: Array
    tokenized_prompt_mask: Array


@struct.dataclass
class PrefixPass:
    """tokens (B, P, D_llm); mask (B, P); ar_mask (P,); attn_mask (B, P, P); positions (B, P); out (B, P, D_llm);
    kv_cache: (k, v) each (L, B, P, K, H)."""

    tokens: Array
    mask: Array
    ar_mask: Array
    attn_mask: Array
    positions: Array
    out: Array
    kv_cache: KVCache


@struct.dataclass
class SuffixPass:
    """tokens (B, 1+H, D_exp); mask (B, 1+H); ar_mask (1+H,); attn_mask (B, 1+H, P+1+H); positions (B, 1+H);
    out (B, 1+H, D_exp) after the expert's final norm; v_t (B, H, action_dim)."""

    tokens: Array
    mask: Array
    ar_mask: Array
    attn_mask: Array
    positions: Array
    out: Array
    v_t: Array


@struct.dataclass
class JointPass:
    """One pass over prefix + suffix (training): positions (B, P+1+H), prefix_out, suffix_out, v_t."""

    positions: Array
    prefix_out: Array
    suffix_out: Array
    v_t: Array


@struct.dataclass
class Pi0Output:
    """actions (B, H, action_dim) float32; embeddings: site → (B, width) float32 (see module docstring)."""

    actions: Array
    embeddings: dict[str, Array]


def image_to_float(images_uint8: Array) -> Array:
    """uint8 (…, 3) → float32 in [-1, 1], exactly as openpi's ``Observation.from_dict``."""
    return jnp.asarray(images_uint8).astype(jnp.float32) / 255.0 * 2.0 - 1.0


def make_attn_mask(input_mask: Array, ar_mask: Array) -> Array:
    """Blockwise-causal attention: input_mask (B, N) bool, ar_mask (N,) or (B, N) bool → (B, N, N) bool.

    A True in ar_mask starts a new block; token i attends to valid token j iff block(j) ≤ block(i).
    All-False ar_mask = full bidirectional attention; all-True = causal.
    """
    blocks = jnp.cumsum(jnp.broadcast_to(ar_mask, input_mask.shape), axis=1)
    causal = blocks[:, None, :] <= blocks[:, :, None]
    return causal & input_mask[:, None, :] & input_mask[:, :, None]


def posemb_sincos(pos: Array, dim: int, min_period: float = 4e-3, max_period: float = 4.0) -> Array:
    """Sine-cosine embedding of scalars: pos (B,) → (B, dim) = [sin(2π pos / p_i), cos(2π pos / p_i)],
    periods p_i geometric from min_period to max_period."""
    if dim % 2:
        raise ValueError(f"sincos embedding width must be even (got {dim})")
    fraction = jnp.linspace(0.0, 1.0, dim // 2)
    period = min_period * (max_period / min_period) ** fraction
    angles = pos[:, None] * (1.0 / period * 2 * jnp.pi)[None, :]
    return jnp.concatenate([jnp.sin(angles), jnp.cos(angles)], axis=-1)


class PaliGemma(nn.Module):
    """Container that gives the ``PaliGemma/{llm,img}`` parameter paths."""

    config: Pi0Config

    def setup(self) -> None:
        c = self.config
        self.llm = Gemma((c.llm, c.expert), c.vocab_size, c.dtype)
        if c.vision == "siglip":
            self.img = SigLIP(c.siglip, c.llm.width, c.dtype)
        else:  # a tower pre-trained elsewhere, projected to the LLM width
            self.img = PretrainedVision(c.vision, c.llm.width, c.dtype)


class Pi0(nn.Module):
    config: Pi0Config

    def setup(self) -> None:
        width = self.config.expert.width
        self.PaliGemma = PaliGemma(self.config)
        self.state_proj = nn.Dense(width)
        self.action_in_proj = nn.Dense(width)
        self.action_time_mlp_in = nn.Dense(width)
        self.action_time_mlp_out = nn.Dense(width)
        self.action_out_proj = nn.Dense(self.config.action_dim)

    def embed_prefix(self, obs: Observation) -> tuple[Array, Array, Array]:
        """→ tokens (B, P, D_llm), mask (B, P), ar_mask (P,): the observation's cameras in config order, then the
        prompt (P counts only the cameras present: see :func:`drop_masked_cameras`)."""
        cams = [c for c in self.config.cameras if c in obs.images]
        # All cameras go through SigLIP as one batch (camera-major), then back to (B, cams·n, D).
        image_tokens = self.PaliGemma.img(jnp.concatenate([obs.images[c] for c in cams], axis=0))
        _, n, d = image_tokens.shape
        image_tokens = image_tokens.reshape(len(cams), -1, n, d).transpose(1, 0, 2, 3).reshape(-1, len(cams) * n, d)
        image_mask = jnp.repeat(jnp.stack([obs.image_masks[c] for c in cams], axis=1), n, axis=1)
        tokens = jnp.concatenate([image_tokens, self.PaliGemma.llm.embed(obs.tokenized_prompt)], axis=1)
        mask = jnp.concatenate([image_mask, obs.tokenized_prompt_mask], axis=1)
        return tokens, mask, jnp.zeros(tokens.shape[1], dtype=bool)

    def embed_suffix(self, state: Array, x_t: Array, time: Array) -> tuple[Array, Array, Array]:
        """state (B, A), x_t (B, H, A), time (B,) → tokens (B, 1+H, D_exp), mask (B, 1+H), ar_mask (1+H,)."""
        b, horizon = x_t.shape[:2]
        state_token = self.state_proj(state)[:, None, :]
        actions = self.action_in_proj(x_t)
        time_emb = posemb_sincos(time, actions.shape[-1], min_period=4e-3, max_period=4.0)
        time_emb = jnp.broadcast_to(time_emb[:, None, :], actions.shape)
        mixed = self.action_time_mlp_out(nn.swish(self.action_time_mlp_in(jnp.concatenate([actions, time_emb], -1))))
        tokens = jnp.concatenate([state_token, mixed], axis=1)
        # The state token and the first action token each open a block: the prefix never sees the suffix, the
        # state token never sees the actions.
        ar_mask = jnp.array([True, True] + [False] * (horizon - 1))
        return tokens, jnp.ones((b, 1 + horizon), dtype=bool), ar_mask

    def prefix(self, obs: Observation) -> PrefixPass:
        """Prefix-only LLM pass; fills the KV cache for the suffix passes."""
        tokens, mask, ar_mask = self.embed_prefix(obs)
        attn_mask = make_attn_mask(mask, ar_mask)
        positions = jnp.cumsum(mask, axis=1) - 1
        (out, _), kv_cache = self.PaliGemma.llm([tokens, None], positions, attn_mask)
        return PrefixPass(tokens, mask, ar_mask, attn_mask, positions, out, kv_cache)

    def suffix(self, state: Array, x_t: Array, time: Array, prefix_mask: Array, kv_cache: KVCache) -> SuffixPass:
        """Action-expert pass over [state, actions] attending to the cached prefix; → v_t (B, H, A)."""
        tokens, mask, ar_mask = self.embed_suffix(state, x_t, time)
        to_prefix = jnp.broadcast_to(prefix_mask[:, None, :], (mask.shape[0], mask.shape[1], prefix_mask.shape[1]))
        attn_mask = jnp.concatenate([to_prefix, make_attn_mask(mask, ar_mask)], axis=-1)
        positions = jnp.sum(prefix_mask, axis=-1)[:, None] + jnp.cumsum(mask, axis=-1) - 1
        (_, out), _ = self.PaliGemma.llm([None, tokens], positions, attn_mask, kv_cache=kv_cache)
        v_t = self.action_out_proj(out[:, -self.config.action_horizon :])
        return SuffixPass(tokens, mask, ar_mask, attn_mask, positions, out, v_t)

    def __call__(self, obs: Observation, x_t: Array, time: Array) -> JointPass:
        """Joint prefix + suffix pass (training; also creates every parameter at init)."""
        prefix_tokens, prefix_mask, prefix_ar = self.embed_prefix(obs)
        suffix_tokens, suffix_mask, suffix_ar = self.embed_suffix(obs.state, x_t, time)
        mask = jnp.concatenate([prefix_mask, suffix_mask], axis=1)
        attn_mask = make_attn_mask(mask, jnp.concatenate([prefix_ar, suffix_ar]))
        positions = jnp.cumsum(mask, axis=1) - 1
        (prefix_out, suffix_out), _ = self.PaliGemma.llm([prefix_tokens, suffix_tokens], positions, attn_mask)
        v_t = self.action_out_proj(suffix_out[:, -self.config.action_horizon :])
        return JointPass(positions, prefix_out, suffix_out, v_t)


# ------------------------------------------------------------------------------------------ pure functions
def fake_observation(config: Pi0Config, batch: int = 1) -> Observation:
    """Zeros of the right shapes (for init and shape inference)."""
    s, t = config.siglip.image_size, config.max_token_len
    return Observation(
        images={c: jnp.zeros((batch, s, s, 3), jnp.float32) for c in config.cameras},
        image_masks={c: jnp.ones((batch,), bool) for c in config.cameras},
        state=jnp.zeros((batch, config.action_dim), jnp.float32),
        tokenized_prompt=jnp.zeros((batch, t), jnp.int32),
        tokenized_prompt_mask=jnp.ones((batch, t), bool),
    )


def _init_args(config: Pi0Config) -> tuple[Observation, Array, Array]:
    return (
        fake_observation(config),
        jnp.zeros((1, config.action_horizon, config.action_dim), jnp.float32),
        jnp.zeros((1,), jnp.float32),
    )


def init_params(config: Pi0Config, rng: Array) -> dict:
    """Freshly initialised float32 params (openpi's layout and init distributions).

    On a CPU, a ``jax.random.key(seed, impl="unsafe_rbg")`` key compiles the init about 3x faster than threefry.
    """
    return jax.jit(lambda key: Pi0(config).init(key, *_init_args(config))["params"])(rng)


def abstract_params(config: Pi0Config) -> dict:
    """The params tree as ``jax.ShapeDtypeStruct`` leaves; allocates nothing."""
    return jax.eval_shape(lambda key: Pi0(config).init(key, *_init_args(config))["params"], jax.random.key(0))


def param_tree_lines(config: Pi0Config) -> list[str]:
    """``path<TAB>shape<TAB>dtype`` per leaf, sorted by path (the format of openpi's tree listings)."""
    flat = traverse_util.flatten_dict(abstract_params(config), sep="/")
    return [f"{path}\t{tuple(leaf.shape)}\t{leaf.dtype}" for path, leaf in sorted(flat.items())]


def _apply(config: Pi0Config, params: dict, *args: object, method: Callable | None = None) -> Any:
    return Pi0(config).apply({"params": params}, *args, method=method)


def prefix_pass(config: Pi0Config, params: dict, obs: Observation) -> PrefixPass:
    return _apply(config, params, obs, method=Pi0.prefix)


def suffix_pass(
    config: Pi0Config, params: dict, state: Array, x_t: Array, time: Array, prefix: PrefixPass
) -> SuffixPass:
    return _apply(config, params, state, x_t, time, prefix.mask, prefix.kv_cache, method=Pi0.suffix)


def joint_pass(config: Pi0Config, params: dict, obs: Observation, x_t: Array, time: Array) -> JointPass:
    return _apply(config, params, obs, x_t, time)


def draw_noise_and_time(rng: Array, actions_shape: tuple[int, ...]) -> tuple[Array, Array]:
    """openpi's draws: (preprocess, noise, time) = split(rng, 3); noise ~ N(0, 1); t = Beta(1.5, 1)·0.999 + 0.001."""
    _, noise_rng, time_rng = jax.random.split(rng, 3)
    noise = jax.random.normal(noise_rng, actions_shape)
    time = jax.random.beta(time_rng, 1.5, 1, actions_shape[:-2]) * 0.999 + 0.001
    return noise, time


def flow_targets(noise: Array, time: Array, actions: Array) -> tuple[Array, Array]:
    """x_t = t·noise + (1 − t)·actions and u_t = noise − actions, each (B, H, A)."""
    t = time[..., None, None]
    return t * noise + (1 - t) * actions, noise - actions


def compute_loss(config: Pi0Config, params: dict, rng: Array, obs: Observation, actions: Array) -> Array:
    """Flow-matching loss per action step, (B, H): mean over action dims of (v_t − u_t)². No augmentation
    (openpi's ``train=False``)."""
    noise, time = draw_noise_and_time(rng, actions.shape)
    x_t, u_t = flow_targets(noise, time, actions)
    v_t = joint_pass(config, params, obs, x_t, time).v_t
    return jnp.mean(jnp.square(v_t - u_t), axis=-1)


def masked_mean(x: Array, mask: Array) -> Array:
    """x (B, T, D), mask (B, T) → (B, D) float32 mean over valid tokens (zeros when none is valid)."""
    m = mask[..., None].astype(jnp.float32)
    return jnp.sum(x.astype(jnp.float32) * m, axis=1) / jnp.maximum(jnp.sum(m, axis=1), 1.0)


def drop_masked_cameras(obs: Observation) -> Observation:
    """``obs`` without the cameras whose mask is False for every batch element (at least one camera is kept).

    A masked camera's tokens are invisible to every valid token (attention needs both ends valid) and do not
    advance positions, so removing them leaves actions and embeddings unchanged up to float summation order,
    and saves its SigLIP pass and its prefix tokens. Needs concrete masks: under a trace ``obs`` is returned as is,
    as it is when any element of the batch sees the camera.
    """
    masks = obs.image_masks
    if any(isinstance(m, jax.core.Tracer) for m in masks.values()):
        return obs
    keep = [c for c, m in masks.items() if np.asarray(m).any()] or list(masks)[:1]
    if len(keep) == len(masks):
        return obs
    return obs.replace(images={c: obs.images[c] for c in keep}, image_masks={c: masks[c] for c in keep})


def infer(
    config: Pi0Config, params: dict, obs: Observation, noise: Array, num_steps: int, *, drop_masked: bool = True
) -> Pi0Output:
    """Actions and all embedding sites in one compiled call: noise (B, H, A) → :class:`Pi0Output`.

    ``num_steps`` is static (one compilation per step count): jaxlib 0.5.3's XLA:CPU runs a while loop whose trip count
    is a traced argument and whose body has a dot zero times when the executable comes from JAX's persistent
    compilation cache (a user's ``JAX_COMPILATION_CACHE_DIR``, or the test suite's shared one), silently returning the
    noise as actions; a constant trip count is unaffected (tested). ``drop_masked=False`` computes the cameras masked
    for the whole batch too, as openpi does (one compilation per set of cameras kept).
    """
    return _infer(config, params, drop_masked_cameras(obs) if drop_masked else obs, noise, int(num_steps))


@functools.partial(jax.jit, static_argnums=(0, 4))
def _infer(config: Pi0Config, params: dict, obs: Observation, noise: Array, num_steps: int) -> Pi0Output:
    prefix = prefix_pass(config, params, obs)
    batch = noise.shape[0]
    dt = -1.0 / jnp.asarray(num_steps, jnp.float32)

    def step(_: Array, carry: tuple[Array, Array, Array]) -> tuple[Array, Array, Array]:
        x_t, time, _ = carry
        suffix = suffix_pass(config, params, obs.state, x_t, jnp.broadcast_to(time, (batch,)), prefix)
        # dt takes v_t's dtype, as openpi's Python-float dt does (weak typing).
        return x_t + dt.astype(suffix.v_t.dtype) * suffix.v_t, time + dt, suffix.out

    out0 = jnp.zeros((batch, config.suffix_len, config.expert.width), jnp.dtype(config.dtype))
    x_0, _, suffix_out = jax.lax.fori_loop(0, num_steps, step, (noise, jnp.float32(1.0), out0))
    embeddings = {
        "state": suffix_out[:, 0].astype(jnp.float32),
        "actions": jnp.mean(suffix_out[:, 1:].astype(jnp.float32), axis=1),
        "prefix": masked_mean(prefix.out, prefix.mask),
    }
    return Pi0Output(actions=x_0.astype(jnp.float32), embeddings=embeddings)


def sample_actions(
    config: Pi0Config,
    params: dict,
    obs: Observation,
    *,
    rng: Array | None = None,
    noise: Array | None = None,
    num_steps: int = 10,
) -> Pi0Output:
    """Euler-sample an action chunk (and read the embeddings); noise defaults to N(0, 1) drawn from ``rng``."""
    if noise is None:
        if rng is None:
            raise ValueError("sample_actions needs rng or noise")
        noise = jax.random.normal(rng, (obs.state.shape[0], config.action_horizon, config.action_dim))
    return infer(config, params, obs, noise, num_steps)
