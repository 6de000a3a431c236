"""Demo states as (features, actions) arrays for BC and for the expert-entropy splits."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from csil_diag.data.robomimic import demo_sort_key, load_episode, open_demos
from csil_diag.errors import UserError
from csil_diag.features.sources import featurize, required_keys
from csil_diag.features.spec import InputSpec


@dataclass(frozen=True)
class ModelOutputs:
    """A model source's values for every state of every demo, by demo name (e.g. cached π0 outputs)."""

    source: str  # the --input name they serve, e.g. "pi0"
    embeddings: Mapping[str, np.ndarray]  # demo → (T, width)
    actions: Mapping[str, np.ndarray]  # demo → (T, A): the model's own action, the base of residual / ensemble


@dataclass(frozen=True)
class DemoFeatures:
    """Features and actions of every state of a set of demos."""

    x: np.ndarray  # (N, D) float32, un-normalised
    actions: np.ndarray  # (N, A) float32
    episode: np.ndarray  # (N,) int: index of the demo each state came from (for cluster bootstrap)
    demos: tuple[str, ...]
    base_actions: np.ndarray | None = None  # (N, A) the model's action per state, when a model is given

    def take(self, idx: np.ndarray) -> DemoFeatures:
        """The states at ``idx`` (same demos)."""
        base = None if self.base_actions is None else self.base_actions[idx]
        return DemoFeatures(self.x[idx], self.actions[idx], self.episode[idx], self.demos, base)


def split_names(f, split: str) -> list[str]:
    """Demo names of ``mask/<split>`` (``all``: every demo)."""
    if split == "all":
        return sorted(f["data"].keys(), key=demo_sort_key)
    if "mask" not in f or split not in f["mask"]:
        raise UserError(f"{f.filename} has no mask/{split}; regenerate it with `csil-diag demos` (or pass all)")
    names = [n.decode() if isinstance(n, bytes) else str(n) for n in f["mask"][split][()]]
    return sorted(names, key=demo_sort_key)


def _model_part(model: ModelOutputs, name: str, length: int) -> tuple[np.ndarray, np.ndarray]:
    if name not in model.embeddings or len(model.embeddings[name]) != length:
        raise UserError(f"the cached {model.source} values do not cover {name} ({length} states); recompute them")
    return np.asarray(model.embeddings[name]), np.asarray(model.actions[name], np.float32)


def load_demo_features(
    path: str | os.PathLike, spec: InputSpec, split: str, model: ModelOutputs | None = None
) -> DemoFeatures:
    """Featurise every state of the demos in ``mask/<split>``; with ``model``, its values feed its source
    and its actions become ``base_actions``."""
    keys = required_keys(spec)
    with open_demos(path) as f:
        names = split_names(f, split)
        if not names:
            raise UserError(f"{path}: mask/{split} is empty; generate more demos or lower --valid-fraction")
        xs, acts, eps, bases = [], [], [], []
        for i, name in enumerate(names):
            ep = load_episode(f, name, keys)
            values = None
            if model is not None:
                embedding, base = _model_part(model, name, len(ep))
                values = {model.source: embedding}
                bases.append(base)
            xs.append(featurize(spec, ep.obs, values))
            acts.append(np.asarray(ep.actions, np.float32))
            eps.append(np.full(len(ep), i))
    x = np.concatenate(xs)
    if not np.all(np.isfinite(x)):
        raise UserError(f"{path}: the {split} features contain NaN or inf; the dataset is corrupt")
    base_actions = np.concatenate(bases) if bases else None
    return DemoFeatures(x, np.concatenate(acts), np.concatenate(eps), tuple(names), base_actions)


def dataset_task(path: str | os.PathLike) -> str:
    """The csil-diag task a robomimic file was recorded on (our ``task`` attribute, else its env name)."""
    from csil_diag.data.robomimic import read_info
    from csil_diag.envs.tasks import task_from_env_name

    env_args = read_info(path).env_args
    return env_args.get("task") or task_from_env_name(env_args.get("env_name", "?"))


def check_demos_for_task(demos: str | os.PathLike, task: str) -> None:
    """The dataset must hold demos of ``task`` and a held-out split (mask/valid)."""
    from csil_diag.data.robomimic import read_info

    demo_task = dataset_task(demos)
    if demo_task != task:
        raise UserError(f"{demos} holds {demo_task} demos but --task is {task}; pass demos of {task}")
    if not read_info(demos).masks.get("valid"):
        raise UserError(f"{demos} has no held-out demos (mask/valid); regenerate with --valid-fraction 0.1")
