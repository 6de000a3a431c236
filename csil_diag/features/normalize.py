"""Feature normalisation with statistics from the training demos, saved with every run."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from csil_diag.errors import UserError


@dataclass(frozen=True)
class Normalizer:
    """x ↦ (x − mean) / max(std, floor), per feature.

    The floor matters: object-orientation features of resting objects have std ≈ 5e-4 over the demos,
    so without it a tilt of a few milliradians online would look like a state hundreds of stds away.
    """

    mean: np.ndarray
    std: np.ndarray  # already floored
    raw_std: np.ndarray
    floor: float

    @classmethod
    def fit(cls, x: np.ndarray, floor: float) -> Normalizer:
        if x.ndim != 2 or len(x) < 2:
            raise UserError(f"need at least two training states to normalise features (got shape {x.shape})")
        if not np.all(np.isfinite(x)):
            raise UserError("the training features contain NaN or inf; check the dataset (csil-diag demos info)")
        mean = x.mean(0)
        raw_std = x.std(0)
        return cls(
            mean.astype(np.float32),
            np.maximum(raw_std, floor).astype(np.float32),
            raw_std.astype(np.float32),
            float(floor),
        )

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return ((x - self.mean) / self.std).astype(np.float32)

    def to_dict(self) -> dict:
        return {
            "mean": self.mean.tolist(),
            "std": self.std.tolist(),
            "raw_std": self.raw_std.tolist(),
            "floor": self.floor,
        }

    @classmethod
    def from_dict(cls, data: dict) -> Normalizer:
        return cls(
            np.asarray(data["mean"], np.float32),
            np.asarray(data["std"], np.float32),
            np.asarray(data["raw_std"], np.float32),
            float(data["floor"]),
        )
