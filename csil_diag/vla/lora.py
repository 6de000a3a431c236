"""LoRA as openpi lays it out, and openpi's freeze rule for LoRA fine-tuning.

An adapted weight ``w`` of shape (..., in, out) gets ``lora_a`` (..., in, r) and ``lora_b`` (..., r, out), both
initialised N(0, 0.01²) (openpi's choice: B is not zero, so a fresh adapter perturbs the output slightly).
Attention einsums add ``(x·A)·B · alpha/rank``; the MLP adds ``(x·A)·B`` unscaled, as openpi's FeedForward does
(the presets use alpha = rank, where the two agree).
"""

from __future__ import annotations

import math
import re
import string

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from csil_diag.vla.config import Pi0Config

LORA_STD = 0.01
LORA_INIT = nn.initializers.normal(stddev=LORA_STD)


def lora_shapes(shape: tuple[int, ...], rank: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(A, B) shapes for a weight whose last two axes are (in, out)."""
    return (*shape[:-1], rank), (*shape[:-2], rank, shape[-1])


def lora_equations(eqn: str) -> tuple[str, str]:
    """Split ``x, w -> y`` into ``x, A -> h`` and ``h, B -> y`` for w's last two axes (in, out).

    The rank axis takes the out-axis' place in A and h and the in-axis' place in B; e.g.
    ``BTD,NDH->BTNH`` gives ``BTD,NDr->BTNr`` and ``BTNr,NrH->BTNH``.
    """
    inputs, out = eqn.split("->")
    lhs, rhs = inputs.split(",")
    rank = next(c for c in string.ascii_letters if c not in eqn)
    a_in, b_out = rhs[-2], rhs[-1]
    hidden = out.replace(b_out, rank)
    return f"{lhs},{rhs.replace(b_out, rank)}->{hidden}", f"{hidden},{rhs.replace(a_in, rank)}->{out}"


def frozen_mask(config: Pi0Config, params: dict) -> dict:
    """True for leaves openpi freezes when fine-tuning this config (``Pi0Config.get_freeze_filter``).

    LoRA on the LLM freezes every LLM weight (and, unless the expert has LoRA too, leaves the expert's
    ``_1`` weights trainable); LoRA on the expert alone freezes the expert; LoRA leaves are never frozen.
    SigLIP (``PaliGemma/img``) and the action projections stay trainable. No LoRA: nothing is frozen.
    """
    llm_lora, expert_lora = config.llm.lora_rank > 0, config.expert.lora_rank > 0
    llm = re.compile(r".*llm.*")
    expert = re.compile(r".*llm.*_1.*")

    def frozen(path: str) -> bool:
        if "lora" in path:
            return False
        if llm_lora:
            return bool(llm.fullmatch(path)) and (expert_lora or not expert.fullmatch(path))
        return expert_lora and bool(expert.fullmatch(path))

    flat = traverse_util.flatten_dict(params, sep="/")
    return traverse_util.unflatten_dict({k: frozen(k) for k in flat}, sep="/")


def init_missing_lora(params: dict, expected: dict, rng: jax.Array) -> dict:
    """Add LoRA leaves that ``expected`` (shape tree) has and ``params`` lacks, drawn N(0, 0.01²).

    Lets a LoRA model start from a base checkpoint (openpi's weight loader does the same). One draw is split
    over the leaves: a single random-bits program compiles much faster on a CPU than one per leaf.
    """
    flat = traverse_util.flatten_dict(params, sep="/")
    shapes = traverse_util.flatten_dict(expected, sep="/")
    missing = [k for k in shapes if k not in flat and "lora" in k]
    sizes = [math.prod(shapes[k].shape) for k in missing]
    draws = LORA_STD * jax.random.normal(rng, (sum(sizes),), jnp.float32)
    offsets = np.cumsum([0, *sizes])
    for key, start, stop in zip(missing, offsets[:-1], offsets[1:], strict=True):
        flat[key] = draws[start:stop].reshape(shapes[key].shape).astype(shapes[key].dtype)
    return traverse_util.unflatten_dict(flat, sep="/")
