"""Feature normalisation with statistics from the training demos, saved with every run."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from csil_diag.config import parse_input_transform
from csil_diag.errors import UserError

PROJECTION_FILE = "input_transform.npz"  # beside config.json: the fitted projection of a pca / whiten run


def fit_projection(z: np.ndarray, transform: str) -> np.ndarray | None:
    """The (D, K) projection of an input transform, fitted on standardised training features z (N, D).

    ``pca:K``: the top-K principal directions; ``whiten[:K]``: the same scaled by 1/√eigenvalue (all directions
    with eigenvalue > 1e-6 of the largest when K is not given); ``none``: None. Each direction's largest entry is
    positive, so the fit is a function of the data alone.
    """
    kind, k = parse_input_transform(transform)
    if kind == "none":
        return None
    d = z.shape[1]
    if k is not None and k > d:
        raise UserError(f"input transform {transform}: the input has only {d} dimensions; choose K ≤ {d}")
    zc = np.asarray(z, np.float64) - np.asarray(z, np.float64).mean(0)
    evals, evecs = np.linalg.eigh(zc.T @ zc / max(len(z) - 1, 1))
    order = np.argsort(evals)[::-1]
    evals, evecs = evals[order], evecs[:, order]
    rank = int(np.sum(evals > 1e-6 * max(evals[0], 1e-30)))
    k = min(k or rank, rank) if kind == "whiten" else k
    evecs = evecs[:, :k]
    evecs = evecs * np.sign(evecs[np.argmax(np.abs(evecs), axis=0), np.arange(k)])
    if kind == "whiten":
        evecs = evecs / np.sqrt(np.maximum(evals[:k], 1e-12))
    return evecs.astype(np.float32)


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
    transform: str = "none"  # then the standardised features are projected (HetStatConfig.input_transform)
    projection: np.ndarray | None = None  # (D, K)

    @property
    def out_width(self) -> int:
        """The width of what the HetStat reads."""
        return len(self.mean) if self.projection is None else int(self.projection.shape[1])

    @classmethod
    def fit(cls, x: np.ndarray, floor: float, transform: str = "none") -> Normalizer:
        if x.ndim != 2 or len(x) < 2:
            raise UserError(f"need at least two training states to normalise features (got shape {x.shape})")
        if not np.all(np.isfinite(x)):
            raise UserError("the training features contain NaN or inf; check the dataset (csil-diag demos info)")
        mean = x.mean(0)
        raw_std = x.std(0)
        standard = cls(
            mean.astype(np.float32),
            np.maximum(raw_std, floor).astype(np.float32),
            raw_std.astype(np.float32),
            float(floor),
        )
        projection = fit_projection(standard(x), transform)
        return cls(standard.mean, standard.std, standard.raw_std, standard.floor, transform, projection)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        z = ((x - self.mean) / self.std).astype(np.float32)
        return z if self.projection is None else z @ self.projection

    def to_dict(self) -> dict:
        """The statistics for config.json (a projection goes to its own file: :meth:`save_projection`)."""
        data = {"mean": self.mean.tolist(), "std": self.std.tolist(), "raw_std": self.raw_std.tolist()}
        data["floor"] = self.floor
        if self.transform != "none":
            data["transform"] = self.transform
        return data

    def save_projection(self, run_dir: str | os.PathLike) -> None:
        """Write the fitted projection beside config.json (nothing without a transform)."""
        if self.projection is None:
            return
        import io

        from csil_diag.runs import atomic_write_bytes

        out = io.BytesIO()
        np.savez(out, projection=self.projection, transform=np.array(self.transform))
        atomic_write_bytes(Path(run_dir) / PROJECTION_FILE, out.getvalue())

    @classmethod
    def from_dict(cls, data: dict, run_dir: str | os.PathLike | None = None) -> Normalizer:
        """The normaliser of a saved run; with a transform, its projection is read from ``run_dir``."""
        transform = data.get("transform", "none")
        projection = None
        if transform != "none":
            path = Path(run_dir or ".") / PROJECTION_FILE
            try:
                with np.load(path) as f:
                    projection = np.asarray(f["projection"], np.float32)
            except (OSError, KeyError, ValueError):
                raise UserError(
                    f"{path} is missing or unreadable: the run's input transform ({transform}) cannot be applied; "
                    "rerun it into a new --out"
                ) from None
        return cls(
            np.asarray(data["mean"], np.float32),
            np.asarray(data["std"], np.float32),
            np.asarray(data["raw_std"], np.float32),
            float(data["floor"]),
            transform,
            projection,
        )
