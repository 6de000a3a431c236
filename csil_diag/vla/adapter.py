"""robosuite ↔ π0: the one place that says how our observations and actions meet the model.

- cameras: ``agentview`` → ``base_0_rgb``, ``wrist`` → ``left_wrist_0_rgb`` (openpi's names); a model may
  list fewer cameras than openpi's three, and missing ones are masked;
- state: the thesis' 8-d end-effector vector (``eef``), z-scored with the checkpoint's norm stats and
  zero-padded to ``action_dim`` (as openpi's PadStatesAndActions);
- actions: the model's first ``ACTION_DIM`` dims, un-normalised, clipped to [-1, 1];
- prompt: the task's language instruction (``TaskSpec.prompt``).
"""

from __future__ import annotations

from dataclasses import replace

import jax
import jax.numpy as jnp
import numpy as np

from csil_diag.envs.tasks import ACTION_DIM, task_spec
from csil_diag.errors import UserError
from csil_diag.features.sources import LOWDIM_SOURCES
from csil_diag.vla.checkpoint import NormStats
from csil_diag.vla.config import GemmaConfig, Pi0Config, SiglipConfig
from csil_diag.vla.pi0 import Observation, image_to_float
from csil_diag.vla.tokenizer import Tokenizer, tokenize_batch

CAMERA_MAP = {"agentview": "base_0_rgb", "wrist": "left_wrist_0_rgb"}
STATE_SOURCE = "eef"
STATE_DIM = 8

# The embedded default: trains on 2 CPU cores in minutes on the scripted demos (84-px cameras, 12-px
# patches → 49 tokens per camera; byte-level prompts of up to 48 tokens; 8-step action chunks).
TINY = Pi0Config(
    llm=GemmaConfig(width=64, depth=2, mlp_dim=128, num_heads=2, num_kv_heads=1, head_dim=16),
    expert=GemmaConfig(width=32, depth=2, mlp_dim=64, num_heads=2, num_kv_heads=1, head_dim=16),
    siglip=SiglipConfig(width=64, depth=2, mlp_dim=128, num_heads=2, patch_size=(12, 12), image_size=84),
    vocab_size=259,
    action_dim=8,
    action_horizon=8,
    max_token_len=48,
    dtype="float32",
    cameras=tuple(CAMERA_MAP.values()),
)


def with_expert_width(config: Pi0Config, width: int) -> Pi0Config:
    """``config`` with a ``width``-wide action expert (MLP 2×): the width of the state site's embedding (π0: 1024)."""
    if width < 8:
        raise UserError(f"--expert-width must be at least 8 (got {width}); π0's is 1024, the tiny default's 256")
    return replace(config, expert=replace(config.expert, width=width, mlp_dim=2 * width))


def tiny_config(lora_rank: int = 0) -> Pi0Config:
    """The tiny default; with ``lora_rank`` > 0, LoRA on attention and MLP of both experts."""
    if lora_rank <= 0:
        return TINY
    return replace(
        TINY,
        llm=replace(TINY.llm, lora_rank=lora_rank, lora_alpha=float(lora_rank)),
        expert=replace(TINY.expert, lora_rank=lora_rank, lora_alpha=float(lora_rank)),
    )


def prompt_for(task: str) -> str:
    return task_spec(task).prompt


def state_from_obs(obs: dict[str, np.ndarray]) -> np.ndarray:
    """The 8-d eef state (…, 8) from robomimic keys (demos or env observations)."""
    return LOWDIM_SOURCES[STATE_SOURCE].compute(obs)


def resize_images(images: np.ndarray, size: int) -> np.ndarray:
    """(B, H, W, 3) uint8 → (B, size, size, 3) uint8 (bilinear), unchanged when already that size."""
    if images.shape[1] == size and images.shape[2] == size:
        return images
    out = jax.image.resize(jnp.asarray(images, jnp.float32), (images.shape[0], size, size, 3), "bilinear")
    return np.asarray(jnp.clip(jnp.round(out), 0, 255), np.uint8)


def make_observation(
    config: Pi0Config,
    images: dict[str, np.ndarray],
    state: np.ndarray,
    prompts: list[str],
    norm_stats: dict[str, NormStats],
    tokenizer: Tokenizer,
) -> Observation:
    """Batch of π0 inputs: images by *our* camera name (B, H, W, 3) uint8, raw eef state (B, 8), prompts."""
    batch = state.shape[0]
    size = config.siglip.image_size
    by_model = {CAMERA_MAP[c]: v for c, v in images.items() if c in CAMERA_MAP}
    obs_images, masks = {}, {}
    for cam in config.cameras:
        if cam in by_model:
            obs_images[cam] = image_to_float(jnp.asarray(resize_images(by_model[cam], size)))
            masks[cam] = jnp.ones((batch,), bool)
        else:  # absent camera: masked, so its (zero) pixels cannot influence any valid token
            obs_images[cam] = jnp.zeros((batch, size, size, 3), jnp.float32)
            masks[cam] = jnp.zeros((batch,), bool)
    if "state" not in norm_stats:
        raise UserError("the π0 checkpoint has no state norm stats (assets/<id>/norm_stats.json)")
    norm_state = norm_stats["state"].normalize(np.asarray(state, np.float32))
    padded = np.zeros((batch, config.action_dim), np.float32)
    padded[:, : norm_state.shape[1]] = norm_state
    tokens, mask = tokenize_batch(tokenizer, prompts)
    if tokens.shape[1] != config.max_token_len:
        raise UserError(f"tokenizer pads to {tokens.shape[1]} tokens but the model expects {config.max_token_len}")
    return Observation(
        images=obs_images,
        image_masks=masks,
        state=jnp.asarray(padded),
        tokenized_prompt=jnp.asarray(tokens, jnp.int32),
        tokenized_prompt_mask=jnp.asarray(mask, bool),
    )


def actions_to_env(actions: np.ndarray, norm_stats: dict[str, NormStats]) -> np.ndarray:
    """Model actions (B, H, action_dim), normalised → env actions (B, H, 7) in [-1, 1]."""
    if "actions" not in norm_stats:
        raise UserError("the π0 checkpoint has no action norm stats (assets/<id>/norm_stats.json)")
    raw = norm_stats["actions"].unnormalize(np.asarray(actions, np.float32)[..., :ACTION_DIM])
    return np.clip(raw, -1.0, 1.0)
