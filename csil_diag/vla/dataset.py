"""robomimic demos (with cameras) → a π0 training set: images, eef state, action chunks and prompts.

One :class:`DemoFile` per task; every state of a training demo (``mask/train``) is one sample:

    images      our camera name → (N, S, S, 3) uint8 (what :func:`adapter.make_observation` takes)
    state       (N, 8) float32, the raw eef state (z-scored later, by the adapter)
    chunks      (N, H, 7) via ``chunk_index``: the next H actions of the episode; past its end the last action
                repeats (openpi's LeRobot loader clamps the frame index the same way)
    prompt      the task's language instruction (``TaskSpec.prompt``)

Norm stats (openpi's z-score ``NormStats``: mean, std, q01, q99) come from the training demos only.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import h5py
import jax
import jax.numpy as jnp
import numpy as np

from csil_diag.data.robomimic import ALIASES, demo_sort_key, open_demos
from csil_diag.envs.tasks import ACTION_DIM, task_from_env_name
from csil_diag.errors import UserError
from csil_diag.runs import file_fingerprint
from csil_diag.vla import adapter
from csil_diag.vla.checkpoint import NormStats
from csil_diag.vla.config import Pi0Config
from csil_diag.vla.pi0 import Observation
from csil_diag.vla.tokenizer import Tokenizer

STATE_KEYS = ("robot0_eef_pos", "robot0_eef_quat", "robot0_gripper_qpos")
SPLITS = ("train", "valid", "all")


@dataclass(frozen=True)
class DemoFile:
    """A robomimic HDF5 file holding one task's demonstrations."""

    task: str
    path: Path


@dataclass(frozen=True)
class SourceInfo:
    """What one file contributed (recorded in train.json)."""

    task: str
    prompt: str
    path: str
    sha256: str
    split: str
    demos: int
    samples: int


@dataclass(frozen=True)
class VLADataset:
    images: dict[str, np.ndarray]  # our camera name → (N, S, S, 3) uint8
    state: np.ndarray  # (N, 8) float32
    actions: np.ndarray  # (N, 7) float32: the action taken in each state
    chunk_index: np.ndarray  # (N, H) int: rows of ``actions`` forming each state's chunk
    task_index: np.ndarray  # (N,) int into ``prompts``
    prompts: tuple[str, ...]
    sources: tuple[SourceInfo, ...]

    def __len__(self) -> int:
        return int(self.state.shape[0])

    @property
    def action_horizon(self) -> int:
        return int(self.chunk_index.shape[1])

    def action_chunks(self, idx: np.ndarray) -> np.ndarray:
        """(B, H, 7) raw action chunks of samples ``idx``."""
        return self.actions[self.chunk_index[idx]]

    def prompts_of(self, idx: np.ndarray) -> list[str]:
        return [self.prompts[t] for t in self.task_index[idx]]


def parse_demo_files(tasks: Sequence[str], paths: Sequence[str | os.PathLike]) -> tuple[DemoFile, ...]:
    """Pair ``--tasks`` with ``--demos`` (same order, one file per task)."""
    if len(tasks) != len(paths) or not tasks:
        raise UserError(f"give one demo file per task: {len(tasks)} task(s) but {len(paths)} file(s)")
    return tuple(DemoFile(task, Path(path)) for task, path in zip(tasks, paths, strict=True))


def model_cameras(config: Pi0Config) -> tuple[str, ...]:
    """Our camera names (``agentview``, ``wrist``) that the model reads."""
    return tuple(ours for ours, theirs in adapter.CAMERA_MAP.items() if theirs in config.cameras)


def _camera_hint(task: str, path: Path, cameras: tuple[str, ...], size: int) -> str:
    return f"`csil-diag demos --task {task} --n 100 --cameras {','.join(cameras)} --image-size {size} --out {path}`"


def _demo_names(f: h5py.File, split: str) -> list[str]:
    """The split's demo names; a file without masks serves all its demos as ``train`` (none as ``valid``)."""
    names = sorted(f["data"].keys(), key=demo_sort_key)
    if split == "all" or "mask" not in f or split not in f["mask"]:
        return names if split != "valid" else []
    chosen = {x.decode() if isinstance(x, bytes) else str(x) for x in f["mask"][split][()]}
    return [n for n in names if n in chosen]


def _read_file(demo_file: DemoFile, cameras: tuple[str, ...], image_size: int, horizon: int, split: str) -> dict:
    """One file's samples (arrays per sample, chunk indices local to this file) and its SourceInfo."""
    path = demo_file.path
    with open_demos(path) as f:
        env_args = json.loads(f["data"].attrs["env_args"])
        file_task = env_args.get("task") or task_from_env_name(env_args.get("env_name", "?"))
        if file_task != demo_file.task:
            raise UserError(f"{path} holds {file_task} demos, not {demo_file.task}; check the order of --demos")
        names = _demo_names(f, split)
        if not names and split != "valid":
            raise UserError(f"{path} has no {split} demos; regenerate it with `csil-diag demos`")
        keys = [ALIASES[c] for c in cameras]
        if names:
            have = set(f["data"][names[0]]["obs"].keys())
            missing = [c for c, k in zip(cameras, keys, strict=True) if k not in have]
            if missing:
                hint = _camera_hint(demo_file.task, path, cameras, image_size)
                raise UserError(f"{path} has no {'/'.join(missing)} camera images; make them with {hint}")
        images = {c: [] for c in cameras}
        states, actions, chunks = [], [], []
        offset = 0
        for name in names:
            grp = f["data"][name]
            obs = {k: grp["obs"][k][()] for k in STATE_KEYS}
            for cam, key in zip(cameras, keys, strict=True):
                images[cam].append(np.asarray(grp["obs"][key][()], np.uint8))
            length = int(grp["actions"].shape[0])
            states.append(adapter.state_from_obs(obs))
            actions.append(np.asarray(grp["actions"][()], np.float32)[:, :ACTION_DIM])
            steps = np.arange(length)[:, None] + np.arange(horizon)[None, :]
            chunks.append(offset + np.minimum(steps, length - 1))  # clamp: the last action repeats
            offset += length
    info = SourceInfo(
        task=demo_file.task,
        prompt=adapter.prompt_for(demo_file.task),
        path=str(path),
        sha256=file_fingerprint(path),
        split=split,
        demos=len(names),
        samples=offset,
    )
    empty_images = {c: np.zeros((0, image_size, image_size, 3), np.uint8) for c in cameras}
    return {
        "images": {c: np.concatenate(v) if v else empty_images[c] for c, v in images.items()},
        "state": np.concatenate(states) if states else np.zeros((0, adapter.STATE_DIM), np.float32),
        "actions": np.concatenate(actions) if actions else np.zeros((0, ACTION_DIM), np.float32),
        "chunks": np.concatenate(chunks) if chunks else np.zeros((0, horizon), np.int64),
        "info": info,
    }


def load_dataset(config: Pi0Config, files: Sequence[DemoFile], *, split: str = "train") -> VLADataset:
    """Every state of the ``split`` demos of ``files`` (one task each; tasks may repeat across files)."""
    if split not in SPLITS:
        raise UserError(f"split must be one of {', '.join(SPLITS)} (got {split!r})")
    cameras = model_cameras(config)
    parts = [_read_file(f, cameras, config.siglip.image_size, config.action_horizon, split) for f in files]
    prompts = tuple(dict.fromkeys(p["info"].prompt for p in parts))
    offsets = np.cumsum([0, *(len(p["actions"]) for p in parts)])
    return VLADataset(
        images={c: np.concatenate([p["images"][c] for p in parts]) for c in cameras},
        state=np.concatenate([p["state"] for p in parts]).astype(np.float32),
        actions=np.concatenate([p["actions"] for p in parts]),
        chunk_index=np.concatenate([p["chunks"] + off for p, off in zip(parts, offsets, strict=False)]),
        task_index=np.concatenate([np.full(len(p["state"]), prompts.index(p["info"].prompt), np.int32) for p in parts]),
        prompts=prompts,
        sources=tuple(p["info"] for p in parts),
    )


# ------------------------------------------------------------------------------------------ norm stats
def array_stats(x: np.ndarray) -> NormStats:
    """openpi's per-dimension statistics of (N, D) samples (exact quantiles instead of its histograms)."""
    x = np.asarray(x, np.float64)
    return NormStats(
        mean=x.mean(0).astype(np.float32),
        std=x.std(0).astype(np.float32),
        q01=np.quantile(x, 0.01, axis=0).astype(np.float32),
        q99=np.quantile(x, 0.99, axis=0).astype(np.float32),
    )


def compute_norm_stats(dataset: VLADataset) -> dict[str, NormStats]:
    """``state`` and ``actions`` statistics of the (training) samples, as openpi's compute_norm_stats."""
    if len(dataset) == 0:
        raise UserError("cannot compute norm stats of an empty dataset")
    return {"state": array_stats(dataset.state), "actions": array_stats(dataset.actions)}


# ------------------------------------------------------------------------------------------ augmentation
AXIS_ANGLE = slice(3, 6)  # the eef state's rotation (adapter.state_from_obs: position, axis-angle, fingers)


@dataclass(frozen=True)
class Augment:
    """Training-time augmentation (images and state as the adapter takes them; actions untouched).

    image_shift: random translation by up to ± this many pixels per image (edge-padded; DrQ / robomimic's crop
        randomiser), so that the policy reads where things are relative to each other, not memorised pixels.
    flip_axis_angle: with probability ½, replace the state's axis-angle u·θ by the other vector of the same rotation,
        −u·(2π − θ), where θ > ``flip_min_angle``. A gripper pointing down is a rotation by ≈ π, where the
        representation jumps between (π, 0, 0) and (−π, 0, 0) from one step to the next (1-8 times per scripted lift
        demo); seeing both forms teaches the model that they are the same state.
    """

    image_shift: int = 4
    flip_axis_angle: bool = True
    flip_min_angle: float = 2.5

    @property
    def active(self) -> bool:
        return self.image_shift > 0 or self.flip_axis_angle


NO_AUGMENT = Augment(image_shift=0, flip_axis_angle=False)


def shift_images(images: np.ndarray, rng: np.random.Generator, pad: int) -> np.ndarray:
    """(B, H, W, C) uint8, each shifted by its own random offset in [-pad, pad]² (borders repeat the edge)."""
    b, h, w, _ = images.shape
    padded = np.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0)), mode="edge")
    dy, dx = rng.integers(0, 2 * pad + 1, (2, b))
    rows = (dy[:, None] + np.arange(h))[:, :, None]
    cols = (dx[:, None] + np.arange(w))[:, None, :]
    return padded[np.arange(b)[:, None, None], rows, cols]


def flip_axis_angle(state: np.ndarray, rng: np.random.Generator, min_angle: float) -> np.ndarray:
    """Half of the rows with a rotation angle > min_angle get the equivalent axis-angle −u·(2π − θ)."""
    state = np.array(state, np.float32)
    aa = state[:, AXIS_ANGLE]
    theta = np.linalg.norm(aa, axis=1, keepdims=True)
    flip = (theta[:, 0] > min_angle) & (rng.random(len(state)) < 0.5)
    state[flip, AXIS_ANGLE] = -aa[flip] / theta[flip] * (2 * np.pi - theta[flip])
    return state


def augmented(
    images: dict[str, np.ndarray], state: np.ndarray, augment: Augment, rng: np.random.Generator
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    if augment.image_shift > 0:
        images = {c: shift_images(v, rng, augment.image_shift) for c, v in images.items()}
    if augment.flip_axis_angle:
        state = flip_axis_angle(state, rng, augment.flip_min_angle)
    return images, state


# ------------------------------------------------------------------------------------------ batches
def normalized_actions(config: Pi0Config, chunks: np.ndarray, norm_stats: dict[str, NormStats]) -> np.ndarray:
    """Raw chunks (B, H, 7) → z-scored, zero-padded to ``action_dim`` (openpi's PadStatesAndActions)."""
    normed = norm_stats["actions"].normalize(np.asarray(chunks, np.float32))
    padded = np.zeros((*normed.shape[:-1], config.action_dim), np.float32)
    padded[..., : normed.shape[-1]] = normed
    return padded


def make_batch(
    config: Pi0Config,
    dataset: VLADataset,
    idx: np.ndarray,
    norm_stats: dict[str, NormStats],
    tokenizer: Tokenizer,
    *,
    augment: Augment = NO_AUGMENT,
    rng: np.random.Generator | None = None,
) -> tuple[Observation, jax.Array]:
    """Samples ``idx`` → (model inputs, normalised action chunks (B, H, action_dim)), via the adapter."""
    images, state = {c: v[idx] for c, v in dataset.images.items()}, dataset.state[idx]
    if augment.active:
        if rng is None:
            raise ValueError("augmentation needs an rng")
        images, state = augmented(images, state, augment, rng)
    obs = adapter.make_observation(config, images, state, dataset.prompts_of(idx), norm_stats, tokenizer)
    return obs, jnp.asarray(normalized_actions(config, dataset.action_chunks(idx), norm_stats))
