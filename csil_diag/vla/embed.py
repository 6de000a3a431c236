"""π0 outputs for every state of a demo dataset, cached beside it: ``<demos>.embeddings/<key>.npz``.

For each state: the embedding at one site and the VLA's own action (the first action of its chunk, env
units), the base action of residual / ensemble composition. The cache key names everything the values
depend on — the model (fingerprint of config, params, norm stats, tokenizer), the dataset (sha256 of the
file), the site, the noise seed and the number of Euler steps — so a changed model or dataset gets a new
file and a stale one is never read. Files are written atomically.
"""

from __future__ import annotations

import io
import json
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import h5py
import numpy as np

from csil_diag.data.robomimic import ALIASES, demo_sort_key, open_demos
from csil_diag.errors import UserError
from csil_diag.features.dataset import ModelOutputs, dataset_task
from csil_diag.features.sources import LOWDIM_SOURCES, PI0
from csil_diag.runs import atomic_write_bytes, file_fingerprint, now_utc
from csil_diag.vla.adapter import STATE_SOURCE, state_from_obs
from csil_diag.vla.policy import VLAPolicy

SOURCE = PI0
# on_progress(states done, states in total)
Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class EmbedKey:
    """Everything the cached values depend on."""

    model: str  # VLAPolicy.fingerprint
    dataset: str  # file_fingerprint of the HDF5
    site: str
    seed: int
    num_steps: int

    @property
    def filename(self) -> str:
        return f"{self.model}-{self.dataset}-{self.site}-seed{self.seed}-steps{self.num_steps}.npz"


@dataclass(frozen=True)
class EmbedTable:
    """The cached arrays: every state of every demo, in demo order."""

    demos: list[str]
    lengths: np.ndarray  # (n_demos,)
    embeddings: np.ndarray  # (N, width) float32
    actions: np.ndarray  # (N, 7) float32: the first action of the VLA's chunk, env units

    def outputs(self) -> ModelOutputs:
        bounds = np.concatenate([[0], np.cumsum(self.lengths)]).astype(int)
        spans = {n: slice(bounds[i], bounds[i + 1]) for i, n in enumerate(self.demos)}
        return ModelOutputs(
            SOURCE,
            {n: self.embeddings[s] for n, s in spans.items()},
            {n: self.actions[s] for n, s in spans.items()},
        )


@dataclass(frozen=True)
class EmbedResult:
    path: Path
    table: EmbedTable
    computed: bool  # False: read from the cache
    seconds: float = 0.0  # computing time, compilation included (0 when read from the cache)
    warm_seconds: float = 0.0  # computing time after the first (compiling) model call
    warm_states: int = 0  # states embedded after the first model call

    @property
    def outputs(self) -> ModelOutputs:
        return self.table.outputs()

    @property
    def n_states(self) -> int:
        return len(self.table.embeddings)

    @property
    def width(self) -> int:
        return int(self.table.embeddings.shape[1])

    @property
    def obs_per_s(self) -> float:
        """Throughput after compilation (all states / all time when there was a single call)."""
        if self.warm_seconds > 0 and self.warm_states:
            return self.warm_states / self.warm_seconds
        return self.n_states / self.seconds if self.seconds > 0 else float("nan")


def cache_dir(demos: str | os.PathLike) -> Path:
    return Path(f"{demos}.embeddings")


def embed_key(policy: VLAPolicy, demos: str | os.PathLike) -> EmbedKey:
    return EmbedKey(policy.fingerprint, file_fingerprint(demos), policy.site, policy.seed, policy.num_steps)


# ------------------------------------------------------------------------------------------ reading demos
def image_keys(policy: VLAPolicy, demos: str | os.PathLike) -> dict[str, str]:
    """Our camera name → the dataset key holding it (robomimic's name, so real robomimic files work).

    One-line errors for a missing or non-robomimic file, or one without the model's cameras."""
    path = Path(demos)
    task = dataset_task(path)
    with open_demos(path) as f:
        names = sorted(f["data"].keys(), key=demo_sort_key)
        if not names:
            raise UserError(f"{path} holds no demos")
        obs = f["data"][names[0]]["obs"]
        found = {c: k for c in policy.cameras for k in (ALIASES[c], c) if k in obs}
    missing = [c for c in policy.cameras if c not in found]
    if missing:
        raise UserError(
            f"{path} has no {'/'.join(missing)} camera images, which the π0 model reads; make demos with cameras: "
            f"csil-diag demos --task {task} --cameras agentview,wrist --image-size {policy.image_size} --out NEW.hdf5"
        )
    return found


def _chunks(f: h5py.File, names: list[str], cameras: dict[str, str], size: int) -> Iterator[dict]:
    """Consecutive states of all demos, in demo order, as chunks of exactly ``size`` (the last may be shorter):
    batches cross demo boundaries, so only the very last model call is padded."""
    state_keys = LOWDIM_SOURCES[STATE_SOURCE].keys
    pending: list[dict[str, np.ndarray]] = []
    have = 0
    for name in names:
        obs = f["data"][name]["obs"]
        part = {c: obs[k][()] for c, k in cameras.items()} | {k: obs[k][()] for k in state_keys}
        pending.append(part)
        have += len(part[state_keys[0]])
        while have >= size:
            joined = {k: np.concatenate([p[k] for p in pending]) for k in part}
            yield {k: v[:size] for k, v in joined.items()}
            pending, have = [{k: v[size:] for k, v in joined.items()}], have - size
    if have:
        yield {k: np.concatenate([p[k] for p in pending]) for k in pending[0]}


def compute_table(
    policy: VLAPolicy, demos: str | os.PathLike, on_progress: Progress | None = None
) -> tuple[EmbedTable, float, int]:
    """The table for every state, plus (seconds, states) after the first model call (for the throughput)."""
    path = Path(demos)
    task, cameras = dataset_task(path), image_keys(policy, path)
    with open_demos(path) as f:
        names = sorted(f["data"].keys(), key=demo_sort_key)
        lengths = np.array([f["data"][n]["actions"].shape[0] for n in names])
        total, done, first = int(lengths.sum()), 0, 0
        embeddings, actions = [], []
        for chunk in _chunks(f, names, cameras, policy.batch_size):
            state = state_from_obs(chunk)
            out = policy.infer({c: chunk[c] for c in cameras}, state, task, range(done, done + len(state)))
            embeddings.append(out.embedding)
            actions.append(out.actions[:, 0])
            done += len(state)
            if not first:  # the first call compiles: time the rest for an honest rate
                first, warm_start = done, time.perf_counter()
            if on_progress is not None:
                on_progress(done, total)
    table = EmbedTable(names, lengths, np.concatenate(embeddings), np.concatenate(actions).astype(np.float32))
    return table, time.perf_counter() - warm_start, total - first


# ------------------------------------------------------------------------------------------ the cache
def _read(path: Path, key: EmbedKey) -> EmbedTable | None:
    """The cached table, or None when the file is absent, unreadable or not for ``key``."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(str(data["meta"]))
            table = EmbedTable([str(n) for n in data["demos"]], data["lengths"], data["embeddings"], data["actions"])
    except (OSError, ValueError, KeyError):
        return None
    n = int(table.lengths.sum())
    if meta.get("key") != asdict(key) or len(table.embeddings) != n or len(table.actions) != n:
        return None
    return table


def _write(path: Path, key: EmbedKey, table: EmbedTable, extra: dict) -> None:
    meta = {"key": asdict(key), "created": now_utc(), **extra}
    buffer = io.BytesIO()
    np.savez(
        buffer,
        demos=np.array(table.demos),
        lengths=table.lengths,
        embeddings=table.embeddings.astype(np.float32),
        actions=table.actions,
        meta=np.array(json.dumps(meta)),
    )
    atomic_write_bytes(path, buffer.getvalue())


def ensure_embeddings(policy: VLAPolicy, demos: str | os.PathLike, on_progress: Progress | None = None) -> EmbedResult:
    """The dataset's π0 outputs at the policy's site: read from the cache, or computed and cached."""
    demos = Path(demos)
    image_keys(policy, demos)  # fail fast (one line) before hashing anything
    key = embed_key(policy, demos)
    path = cache_dir(demos) / key.filename
    table = _read(path, key)
    if table is not None:
        return EmbedResult(path, table, computed=False)
    start = time.perf_counter()
    table, warm_seconds, warm_states = compute_table(policy, demos, on_progress)
    seconds = time.perf_counter() - start
    extra = {"model_dir": policy.source, "dataset": str(demos), "batch_size": policy.batch_size, "seconds": seconds}
    _write(path, key, table, extra)
    return EmbedResult(path, table, True, seconds, warm_seconds, warm_states)
