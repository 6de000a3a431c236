"""robomimic-format HDF5: the demo layout researchers already have on disk, read and written exactly.

```
data                      attrs: env_args (JSON), total (int), csil_diag (JSON, ours)
data/demo_<i>/actions     (T, 7) float64      attrs: num_samples, seed, attempt, success
data/demo_<i>/rewards     (T,)   float64
data/demo_<i>/dones       (T,)   int64
data/demo_<i>/states      (T, S) float64      full MuJoCo state before each action
data/demo_<i>/obs/<key>   (T, ...)            robomimic keys + our aliases (hard links, no copies)
data/demo_<i>/next_obs/<key>
mask/train, mask/valid    demo names (bytes)
```
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from csil_diag.errors import UserError

# Our stable names that alias robomimic keys (stored as HDF5 hard links, so no extra bytes).
ALIASES = {"agentview": "agentview_image", "wrist": "robot0_eye_in_hand_image"}
IMAGE_KEYS = ("agentview_image", "robot0_eye_in_hand_image")
# Derived keys we add beside robomimic's (computed, so stored as their own small arrays).
DERIVED_KEYS = ("eef", "joints")


@dataclass
class Episode:
    """One recorded episode, arrays stacked over time (T steps)."""

    obs: dict[str, np.ndarray]
    next_obs: dict[str, np.ndarray]
    actions: np.ndarray
    rewards: np.ndarray
    dones: np.ndarray
    states: np.ndarray
    success: bool
    seed: int = -1
    attempt: int = -1
    meta: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.actions.shape[0])


def demo_sort_key(name: str) -> int:
    """demo_10 after demo_9 (robomimic numbers demos from 0 or 1; both sort right)."""
    try:
        return int(name.rsplit("_", 1)[1])
    except (IndexError, ValueError):
        return 1 << 30


# No modification times in the file (h5py's default, made explicit): the same demos give the same bytes, so a run's
# dataset fingerprint (sha256) is met by the dataset regenerated later, and the run resumes. Camera images are bit-equal
# only under the same renderer build and CPU (software GL), so a low-dim dataset is reproducible anywhere, a camera one
# on a like machine.
STABLE = {"track_times": False}


def _write_obs_group(group: h5py.Group, obs: dict[str, np.ndarray]) -> None:
    for key, value in obs.items():
        if key in ALIASES:
            continue
        value = np.asarray(value)
        if key in IMAGE_KEYS:
            # Chunks of consecutive frames let gzip use the previous frame: ~11 % of raw vs ~63 %
            # for frame-sized chunks (84×84 camera, measured).
            chunk = (min(16, len(value)), *value.shape[1:])
            group.create_dataset(key, data=value, compression="gzip", compression_opts=4, chunks=chunk, **STABLE)
        else:
            group.create_dataset(key, data=value, **STABLE)
    for alias, target in ALIASES.items():
        if alias in obs and target in group:
            group[alias] = group[target]  # hard link


def write_episode(data: h5py.Group, name: str, episode: Episode) -> None:
    """Write one episode as ``data/<name>`` in robomimic's layout."""
    grp = data.create_group(name)
    grp.create_dataset("actions", data=np.asarray(episode.actions, np.float64), **STABLE)
    grp.create_dataset("rewards", data=np.asarray(episode.rewards, np.float64), **STABLE)
    grp.create_dataset("dones", data=np.asarray(episode.dones, np.int64), **STABLE)
    grp.create_dataset("states", data=np.asarray(episode.states, np.float64), **STABLE)
    _write_obs_group(grp.create_group("obs"), episode.obs)
    _write_obs_group(grp.create_group("next_obs"), episode.next_obs)
    grp.attrs["num_samples"] = len(episode)
    grp.attrs["seed"] = int(episode.seed)
    grp.attrs["attempt"] = int(episode.attempt)
    grp.attrs["success"] = bool(episode.success)


def split_masks(names: list[str], valid_fraction: float) -> tuple[list[str], list[str]]:
    """Deterministic train/valid split: every k-th demo is held out (k = round(1/valid_fraction))."""
    names = sorted(names, key=demo_sort_key)
    if valid_fraction <= 0 or len(names) < 2:
        return names, []
    every = max(2, round(1.0 / valid_fraction))
    valid = [n for i, n in enumerate(names) if i % every == every - 1]
    train = [n for n in names if n not in set(valid)]
    return train, valid


def finalize(f: h5py.File, valid_fraction: float) -> None:
    """Recompute ``total`` and the train/valid masks from the demos present."""
    data = f["data"]
    names = sorted(data.keys(), key=demo_sort_key)
    data.attrs["total"] = int(sum(int(data[n].attrs["num_samples"]) for n in names))
    if "mask" in f:
        del f["mask"]
    train, valid = split_masks(names, valid_fraction)
    mask = f.create_group("mask")
    mask.create_dataset("train", data=np.array(train, dtype="S"), **STABLE)
    mask.create_dataset("valid", data=np.array(valid, dtype="S"), **STABLE)


# ---------------------------------------------------------------------------------------- reading
@dataclass(frozen=True)
class DemoInfo:
    """What a robomimic file holds, read without loading its arrays."""

    path: Path
    env_args: dict[str, Any]
    demos: tuple[str, ...]
    lengths: tuple[int, ...]
    success: tuple[bool, ...]
    masks: dict[str, tuple[str, ...]]
    obs_keys: dict[str, tuple[tuple[int, ...], str]]
    meta: dict[str, Any]

    @property
    def total(self) -> int:
        return int(sum(self.lengths))

    @property
    def length_range(self) -> tuple[int | float, float, int | float]:
        """(min, mean, max) demo length in steps; (0.0, 0.0, 0.0) for a file with no demos."""
        lengths = np.asarray(self.lengths) if self.lengths else np.zeros(1)
        return lengths.min().item(), float(lengths.mean()), lengths.max().item()


@contextmanager
def open_demos(path: str | os.PathLike) -> Iterator[h5py.File]:
    """Open a robomimic HDF5 read-only, with one-line errors for missing or malformed files."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: no such file; create one with `csil-diag demos --task lift --out {path}`")
    if path.is_dir():
        raise UserError(f"{path} is a directory, not an HDF5 file; give the dataset file itself")
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        reason = " ".join(str(exc).split())  # HDF5's messages span lines
        raise UserError(f"{path}: not a readable HDF5 file ({reason}); regenerate it with `csil-diag demos`") from None
    try:
        check_robomimic(f, path)
        yield f
    finally:
        f.close()


def check_robomimic(f: h5py.File, path: Path) -> None:
    """Raise UserError unless ``f`` has robomimic's layout."""
    hint = "expected robomimic's layout (data/demo_*/{actions,obs}, data.attrs['env_args'])"
    if "data" not in f or not isinstance(f["data"], h5py.Group):
        raise UserError(f"{path}: no 'data' group — not a robomimic dataset; {hint}")
    if "env_args" not in f["data"].attrs:
        raise UserError(f"{path}: 'data' has no env_args attribute — not a robomimic dataset; {hint}")
    try:
        json.loads(f["data"].attrs["env_args"])
    except (TypeError, ValueError):
        raise UserError(f"{path}: env_args is not valid JSON; {hint}") from None
    for name in f["data"]:
        demo = f["data"][name]
        if not isinstance(demo, h5py.Group) or "actions" not in demo or "obs" not in demo:
            raise UserError(f"{path}: data/{name} lacks actions or obs; {hint}")


def _attr_json(attrs: h5py.AttributeManager, key: str) -> dict[str, Any]:
    if key not in attrs:
        return {}
    try:
        return json.loads(attrs[key])
    except (TypeError, ValueError):
        return {}


def read_info(path: str | os.PathLike) -> DemoInfo:
    """Summarise a robomimic file (names, lengths, keys and shapes, masks)."""
    with open_demos(path) as f:
        data = f["data"]
        names = tuple(sorted(data.keys(), key=demo_sort_key))
        lengths = tuple(int(data[n]["actions"].shape[0]) for n in names)
        success = tuple(
            bool(data[n].attrs["success"])
            if "success" in data[n].attrs
            else bool(len(data[n].get("rewards", [])) and data[n]["rewards"][-1] > 0)
            for n in names
        )
        masks = {
            k: tuple(x.decode() if isinstance(x, bytes) else str(x) for x in f["mask"][k][()])
            for k in (f["mask"].keys() if "mask" in f else ())
        }
        obs_keys: dict[str, tuple[tuple[int, ...], str]] = {}
        if names:
            obs = data[names[0]]["obs"]
            obs_keys = {k: (tuple(obs[k].shape[1:]), str(obs[k].dtype)) for k in sorted(obs.keys())}
        return DemoInfo(
            path=Path(path),
            env_args=json.loads(data.attrs["env_args"]),
            demos=names,
            lengths=lengths,
            success=success,
            masks=masks,
            obs_keys=obs_keys,
            meta=_attr_json(data.attrs, "csil_diag"),
        )


def load_episode(f: h5py.File, name: str, keys: tuple[str, ...] | None = None) -> Episode:
    """Load one demo into memory (``keys`` limits the observation keys read)."""
    grp = f["data"][name]

    def group(g: str) -> dict[str, np.ndarray]:
        if g not in grp:
            return {}
        wanted = keys if keys is not None else tuple(grp[g].keys())
        missing = [k for k in wanted if k not in grp[g]]
        if missing:
            raise UserError(
                f"{f.filename}: data/{name}/{g} has no {', '.join(missing)}; available: {', '.join(grp[g])}"
            )
        return {k: grp[g][k][()] for k in wanted}

    n = int(grp["actions"].shape[0])
    return Episode(
        obs=group("obs"),
        next_obs=group("next_obs"),
        actions=grp["actions"][()],
        rewards=grp["rewards"][()] if "rewards" in grp else np.zeros(n),
        dones=grp["dones"][()] if "dones" in grp else np.zeros(n, np.int64),
        states=grp["states"][()] if "states" in grp else np.zeros((n, 0)),
        success=bool(grp.attrs.get("success", False)),
        seed=int(grp.attrs.get("seed", -1)),
        attempt=int(grp.attrs.get("attempt", -1)),
    )


def validate_demos(
    path: str | os.PathLike,
    obs_keys: tuple[str, ...],
    splits: tuple[str, ...] = ("train", "valid"),
    action_dim: int | None = None,
) -> None:
    """Check, before any work starts, everything a run will read: the masks name existing demos, every demo's
    actions are finite with ``action_dim`` columns, and each of ``obs_keys`` is there with one row per action, the
    same per-step shape in every demo and (non-image keys) finite values. Raises a one-line UserError."""
    fix = "regenerate it with `csil-diag demos` or repair the file"
    with open_demos(path) as f:
        data = f["data"]
        names: list[str] = []
        for split in splits:
            if "mask" not in f or split not in f["mask"]:
                raise UserError(f"{path} has no mask/{split}; regenerate it with `csil-diag demos`")
            listed = [n.decode() if isinstance(n, bytes) else str(n) for n in f["mask"][split][()]]
            missing = [n for n in listed if n not in data]
            if missing:
                raise UserError(f"{path}: mask/{split} names {', '.join(missing[:3])}, absent from data/; {fix}")
            names += [n for n in listed if n not in names]
        shapes: dict[str, tuple[tuple[int, ...], str]] = {}
        for name in sorted(names, key=demo_sort_key):
            demo = data[name]
            actions = demo["actions"]
            if actions.ndim != 2 or (action_dim is not None and actions.shape[1] != action_dim):
                want = f"(T, {action_dim})" if action_dim is not None else "(T, A)"
                raise UserError(f"{path}: data/{name}/actions has shape {actions.shape}, expected {want}; {fix}")
            steps = actions.shape[0]
            if not np.all(np.isfinite(actions[()])):
                raise UserError(f"{path}: data/{name}/actions contains NaN or inf; {fix}")
            for key in obs_keys:
                if key not in demo["obs"]:
                    raise UserError(f"{path}: data/{name}/obs has no {key}; available: {', '.join(demo['obs'])}; {fix}")
                obs = demo["obs"][key]
                if obs.shape[0] != steps:
                    raise UserError(
                        f"{path}: data/{name}/obs/{key} has {obs.shape[0]} steps but {steps} actions; {fix}"
                    )
                first = shapes.setdefault(key, (tuple(obs.shape[1:]), name))
                if tuple(obs.shape[1:]) != first[0]:
                    raise UserError(
                        f"{path}: data/{name}/obs/{key} is {obs.shape[1:]} per step but {first[1]}'s is {first[0]}; "
                        f"every demo must have the same observation shapes; {fix}"
                    )
                if key not in IMAGE_KEYS and key not in ALIASES and not np.all(np.isfinite(obs[()])):
                    raise UserError(f"{path}: data/{name}/obs/{key} contains NaN or inf; {fix}")
