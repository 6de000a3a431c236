"""The embedded default π0 behind ``--input pi0``: a tiny model trained here on first use, then cached.

``$CSIL_DIAG_CACHE`` (default ``~/.cache/csil-diag``)``/models/pi0-tiny-default-<hash>`` holds a finished
checkpoint (openpi layout + train.json). The hash covers the recipe below and the csil-diag version, so a new
recipe trains a new model instead of reusing a stale one. Building it: scripted lift demos with both cameras
(``data/``, beside the models), then pre-training on them — a few minutes on 2 CPU cores.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path

from csil_diag import __version__
from csil_diag.cache import cache_root
from csil_diag.data.demos import DemoConfig, generate_demos
from csil_diag.vla import config as vla_config
from csil_diag.vla.adapter import TINY, with_expert_width
from csil_diag.vla.dataset import DemoFile
from csil_diag.vla.train import TRAIN_FILE, TrainConfig, TrainJob, run_training

DEFAULT_TASK = "lift"
# TINY with a 256-wide action expert: its state-token embedding (the default site) is wide enough for the thesis'
# slices such as pi0[:256], at almost no cost (the expert sees 9 tokens, the vision tower and LLM ~150).
DEFAULT_MODEL = with_expert_width(TINY, 256)
DEFAULT_DEMOS = DemoConfig(task=DEFAULT_TASK, n=40, cameras=("agentview", "wrist"), image_size=84, seed=0)
DEFAULT_TRAIN = TrainConfig(steps=600, batch_size=32, lr=1e-3, warmup_steps=50, seed=0, save_every=100)


def recipe() -> dict:
    """Everything that decides the default model."""
    return {
        "csil_diag": __version__,
        "model": vla_config.to_dict(DEFAULT_MODEL),
        "demos": DEFAULT_DEMOS.identity() | {"n": DEFAULT_DEMOS.n},
        "train": asdict(DEFAULT_TRAIN),
    }


def version_hash() -> str:
    return hashlib.sha256(json.dumps(recipe(), sort_keys=True).encode()).hexdigest()[:12]


def default_model_path() -> Path:
    """Where the default checkpoint lives (whether or not it exists yet)."""
    return cache_root() / "models" / f"pi0-tiny-default-{version_hash()}"


@contextmanager
def _lock(path: Path) -> Iterator[None]:
    """One builder at a time: a second process waits, then finds the finished model."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def default_model_dir(progress: bool = True) -> Path:
    """A ready checkpoint of the embedded default model; built (minutes) and cached on first use."""
    out = default_model_path()
    if (out / TRAIN_FILE).is_file():
        return out
    with _lock(out.with_name(f".{out.name}.lock")):
        if (out / TRAIN_FILE).is_file():  # built by another process while we waited
            return out
        demos = cache_root() / "data" / f"lift_img_default-{version_hash()}.hdf5"
        _make_demos(demos, progress)
        job = TrainJob(
            out=out,
            model=DEFAULT_MODEL,
            data=(DemoFile(DEFAULT_TASK, demos),),
            train=DEFAULT_TRAIN,
            command="csil_diag.vla.default.default_model_dir()  # the embedded default: " + json.dumps(recipe()),
            kind="pretrain",
        )
        _train(job, progress)
    return out


def _make_demos(path: Path, progress: bool) -> None:
    if path.is_file():
        return
    workers = min(os.cpu_count() or 1, DEFAULT_DEMOS.n)
    on_progress = None
    if progress:
        from csil_diag.ui import count_bar

        bar = count_bar("default π0: lift demos")
        on_progress = lambda have, _attempts, _steps: bar(have, DEFAULT_DEMOS.n)
    generate_demos(DEFAULT_DEMOS, path, workers=workers, on_progress=on_progress)


def _train(job: TrainJob, progress: bool) -> None:
    if not progress:
        run_training(job)
        return
    from csil_diag.ui import training_bar

    with training_bar("default π0: training") as (on_progress, on_status):
        run_training(job, on_progress=on_progress, on_status=on_status)
