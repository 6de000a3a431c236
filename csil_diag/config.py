"""Frozen configuration dataclasses; every size and choice is a field."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

from csil_diag.errors import UserError


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise UserError(f"{name} must be one of {', '.join(choices)} (got {value!r})")


@dataclass(frozen=True)
class HetStatConfig:
    """HetStat architecture (thesis App. B)."""

    hidden: tuple[int, ...] = (1024, 1024)
    bottleneck: int = 48
    features: int = 1024
    activation: str = "periodic_relu"  # periodic_relu | triangle | sin_cos
    covariance: str = "full"  # full (faithful) | diagonal (speed studies; labelled in every output)
    covariance_blocks: int = 16  # column blocks storing the full factor's lower triangle (same math)
    log_lengthscale_init: float = -5.0
    prior_variance: float = 0.75
    min_variance: float = 1e-5
    layer_norm: bool = True

    def __post_init__(self) -> None:
        _check_choice("activation", self.activation, ("periodic_relu", "triangle", "sin_cos"))
        _check_choice("covariance", self.covariance, ("full", "diagonal"))
        if self.features % 2:
            raise UserError(f"features must be even (got {self.features})")
        if self.features % self.covariance_blocks:
            raise UserError(f"features ({self.features}) must be a multiple of covariance_blocks")


@dataclass(frozen=True)
class BCConfig:
    """BC pre-training (thesis App. B: lr 1e-4, batch 256, AdamW; 5k steps there)."""

    learning_rate: float = 1e-4
    weight_decay: float = 1e-4
    batch_size: int = 256
    mode: str = "head"  # head | residual | ensemble: how the HetStat composes with a base action

    def __post_init__(self) -> None:
        _check_choice("mode", self.mode, ("head", "residual", "ensemble"))
        if not (math.isfinite(self.learning_rate) and self.learning_rate > 0) or self.batch_size < 1:
            raise UserError(
                f"--lr must be a positive number and --batch-size ≥ 1 (got {self.learning_rate}, {self.batch_size})"
            )
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise UserError(f"weight decay must be a number ≥ 0 (got {self.weight_decay})")


def to_dict(config: Any) -> dict[str, Any]:
    """A config (possibly nested) as plain JSON-able data."""
    return asdict(config)


def from_dict(cls: type, data: dict[str, Any]) -> Any:
    """Rebuild a (possibly nested) frozen config from :func:`to_dict` output; unknown keys are errors."""
    known = {f.name: f for f in fields(cls)}
    unknown = set(data) - set(known)
    if unknown:
        raise UserError(f"unknown {cls.__name__} field(s): {', '.join(sorted(unknown))}")
    kwargs = {}
    for name, value in data.items():
        ftype = known[name].type
        sub = _CONFIGS.get(ftype if isinstance(ftype, str) else getattr(ftype, "__name__", ""))
        if sub is not None and isinstance(value, dict):
            value = from_dict(sub, value)
        elif isinstance(value, list):
            value = tuple(value)
        kwargs[name] = value
    return cls(**kwargs)


_CONFIGS: dict[str, type] = {"HetStatConfig": HetStatConfig, "BCConfig": BCConfig}
