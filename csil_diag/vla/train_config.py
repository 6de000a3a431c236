"""The configs of a π0 training run: the optimisation (:class:`TrainConfig`), the job (model, data, output) and
its result."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from csil_diag.errors import UserError
from csil_diag.vla.config import Pi0Config
from csil_diag.vla.dataset import Augment, DemoFile
from csil_diag.vla.regimes import REGIMES


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings (openpi: AdamW b2 0.95, warmup + cosine decay, gradient clipping at 1)."""

    steps: int = 3000
    batch_size: int = 32
    lr: float = 1e-3  # peak learning rate
    warmup_steps: int = 100
    end_lr_fraction: float = 0.1  # the cosine decays to lr · this
    weight_decay: float = 1e-4
    clip_norm: float = 1.0
    b1: float = 0.9
    b2: float = 0.95
    seed: int = 0
    steps_per_call: int = 10  # optimiser steps per jitted call (lax.scan)
    save_every: int = 250  # train_state.msgpack interval, steps
    regime: str = "full"
    lora_rank: int = 0  # LoRA regimes only
    valid_samples: int = 512  # held-out loss on up to this many mask/valid samples at the end (0: skip)
    image_shift: int = 4  # augmentation: random image shifts, ± pixels (0: none); see dataset.Augment
    flip_axis_angle: bool = True  # augmentation: the other axis-angle vector of the same rotation, near θ = π

    def __post_init__(self) -> None:
        if self.regime not in REGIMES:
            raise UserError(f"--regime must be one of {', '.join(REGIMES)} (got {self.regime!r})")
        if self.regime.startswith("lora") != (self.lora_rank > 0):
            raise UserError(f"regime {self.regime} needs lora_rank {'> 0' if self.regime != 'full' else '0'}")
        if min(self.steps, self.batch_size, self.steps_per_call, self.save_every) < 1 or not (
            self.lr > 0 and math.isfinite(self.lr)
        ):
            raise UserError("--steps, --batch-size, --steps-per-call, --save-every and --lr must be positive")
        if self.steps % self.steps_per_call:
            raise UserError(f"--steps ({self.steps}) must be a multiple of --steps-per-call ({self.steps_per_call})")
        if not 0 <= self.warmup_steps < self.steps:
            raise UserError(f"--warmup-steps must be in [0, steps) (got {self.warmup_steps})")
        if self.image_shift < 0:
            raise UserError(f"--image-shift must be ≥ 0 (got {self.image_shift})")
        if self.seed < 0:
            raise UserError(f"--seed must be a non-negative integer (got {self.seed})")

    @property
    def augment(self) -> Augment:
        return Augment(image_shift=self.image_shift, flip_axis_angle=self.flip_axis_angle)


@dataclass(frozen=True)
class TrainJob:
    """One training run: the model (already in its regime's config), the data, and where it goes."""

    out: Path
    model: Pi0Config
    data: tuple[DemoFile, ...]
    train: TrainConfig
    base: Path | None = None  # fine-tuning: the base checkpoint; None: from scratch
    command: str = ""
    kind: str = "pretrain"  # pretrain | finetune (recorded)


@dataclass
class TrainResult:
    out: Path
    model: Pi0Config
    record: dict[str, Any] = field(default_factory=dict)  # what train.json holds
    resumed: bool = False
    already_done: bool = False
