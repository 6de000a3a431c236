"""Demo states as (features, actions) arrays for BC and for the expert-entropy splits."""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from csil_diag.data.robomimic import demo_sort_key, load_episode, open_demos
from csil_diag.errors import UserError
from csil_diag.features.sources import featurize, required_keys
from csil_diag.features.spec import InputSpec


@dataclass(frozen=True)
class DemoFeatures:
    """Features and actions of every state of a set of demos."""

    x: np.ndarray  # (N, D) float32, un-normalised
    actions: np.ndarray  # (N, A) float32
    episode: np.ndarray  # (N,) int: index of the demo each state came from (for cluster bootstrap)
    demos: tuple[str, ...]


def split_names(f, split: str) -> list[str]:
    """Demo names of ``mask/<split>`` (``all``: every demo)."""
    if split == "all":
        return sorted(f["data"].keys(), key=demo_sort_key)
    if "mask" not in f or split not in f["mask"]:
        raise UserError(f"{f.filename} has no mask/{split}; regenerate it with `csil-diag demos` (or pass all)")
    names = [n.decode() if isinstance(n, bytes) else str(n) for n in f["mask"][split][()]]
    return sorted(names, key=demo_sort_key)


def load_demo_features(path: str | os.PathLike, spec: InputSpec, split: str) -> DemoFeatures:
    """Featurise every state of the demos in ``mask/<split>``."""
    keys = required_keys(spec)
    with open_demos(path) as f:
        names = split_names(f, split)
        if not names:
            raise UserError(f"{path}: mask/{split} is empty; generate more demos or lower --valid-fraction")
        xs, acts, eps = [], [], []
        for i, name in enumerate(names):
            ep = load_episode(f, name, keys)
            xs.append(featurize(spec, ep.obs))
            acts.append(np.asarray(ep.actions, np.float32))
            eps.append(np.full(len(ep), i))
    x = np.concatenate(xs)
    if not np.all(np.isfinite(x)):
        raise UserError(f"{path}: the {split} features contain NaN or inf; the dataset is corrupt")
    return DemoFeatures(x, np.concatenate(acts), np.concatenate(eps), tuple(names))
