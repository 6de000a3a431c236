"""π0's training regimes (full, LoRA, LoRA + frozen vision) and the split of its parameters into trainable and frozen
leaves.

Regimes (openpi's freeze filters, ``Pi0Config.get_freeze_filter``):
  full                everything trains
  lora                LoRA adapters on attention and MLP of both experts; every base LLM weight (both experts and
                      the embedder) frozen; the vision tower ``PaliGemma/img`` and the projections still train
  lora-frozen-vision  as lora, and ``PaliGemma/img`` frozen too

Frozen leaves are not differentiated and have no optimiser state, so they stay bit-identical.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

import jax
import numpy as np
from flax import traverse_util

from csil_diag.errors import UserError
from csil_diag.vla.config import Pi0Config
from csil_diag.vla.lora import frozen_mask

REGIMES = ("full", "lora", "lora-frozen-vision")
FINETUNE_LR = {"full": 3e-4, "lora": 1e-3, "lora-frozen-vision": 1e-3}  # LoRA adapters take a larger step
VISION_PREFIX = "PaliGemma/img/"
TOWER_PREFIX = "PaliGemma/img/tower/"  # a pre-trained tower's own weights (not its projection, PaliGemma/img/head)

Flat = dict[str, jax.Array]


def with_lora(config: Pi0Config, rank: int) -> Pi0Config:
    """``config`` with LoRA (alpha = rank, on attention and MLP) on both experts; rank 0 removes it."""
    alpha = float(max(rank, 1))
    return replace(
        config,
        llm=replace(config.llm, lora_rank=rank, lora_alpha=alpha),
        expert=replace(config.expert, lora_rank=rank, lora_alpha=alpha),
    )


def regime_config(base: Pi0Config, regime: str, lora_rank: int) -> Pi0Config:
    """The model a regime trains: the base config, with LoRA for the LoRA regimes."""
    return with_lora(base, lora_rank if regime.startswith("lora") else 0)


def regime_frozen(config: Pi0Config, params: dict, regime: str, train_tower: bool = True) -> dict[str, bool]:
    """Flat path → frozen, for ``regime``; the LoRA regimes use openpi's rule (:func:`lora.frozen_mask`). A tower
    pre-trained elsewhere (``config.vision``) is frozen too where ``train_tower`` is False (pre-training)."""
    if regime not in REGIMES:
        raise UserError(f"unknown regime {regime!r}; choose one of {', '.join(REGIMES)}")
    if config.vision != "siglip" and not train_tower:
        frozen = regime_frozen(config, params, regime)
        return {k: v or k.startswith(TOWER_PREFIX) for k, v in frozen.items()}
    if regime == "full":
        # A pre-trained tower's batch-norm statistics are data, not parameters: no optimiser (weight decay) moves them.
        return {k: k.startswith(TOWER_PREFIX) and k.endswith(("/mean", "/var")) for k in _paths(params)}
    if config.llm.lora_rank <= 0 or config.expert.lora_rank <= 0:
        raise UserError(f"regime {regime} needs a config with LoRA on both experts")
    frozen = traverse_util.flatten_dict(frozen_mask(config, params), sep="/")
    if regime == "lora-frozen-vision":
        frozen = {k: v or k.startswith(VISION_PREFIX) for k, v in frozen.items()}
    return {k: v or (k.startswith(TOWER_PREFIX) and k.endswith(("/mean", "/var"))) for k, v in frozen.items()}


def _paths(params: dict) -> list[str]:
    return list(traverse_util.flatten_dict(params, sep="/"))


def split_params(params: dict, frozen: dict[str, bool]) -> tuple[Flat, Flat]:
    """(trainable, frozen) flat dicts keyed by ``a/b/c`` paths."""
    flat = traverse_util.flatten_dict(params, sep="/")
    return {k: v for k, v in flat.items() if not frozen[k]}, {k: v for k, v in flat.items() if frozen[k]}


def merge_params(trainable: Flat, frozen: Flat) -> dict:
    return traverse_util.unflatten_dict({**trainable, **frozen}, sep="/")


def count(tree: Any) -> int:
    return int(sum(math.prod(np.shape(x)) for x in jax.tree.leaves(tree)))
