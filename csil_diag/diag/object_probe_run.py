"""`csil-diag probe object` as a run: embed the probe's states with π0 (each site) and the low-dim features, write
``<out>/object_probe.parquet`` and ``<out>/probe.json`` atomically under the directory's lock.

The instrument itself (perturbations, sensitivities, ratios) is :mod:`csil_diag.diag.object_probe`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from csil_diag.diag import object_probe as op
from csil_diag.errors import UserError


@dataclass(frozen=True)
class ObjectProbeConfig:
    task: str
    demos: str  # robomimic HDF5 with MuJoCo states (the probe's start states)
    sites: tuple[str, ...] = op.SITES  # π0 embedding sites to probe
    n: int = 50  # start states: the first n demos' first states
    seed: int = 0  # seed of the shift directions
    model: str | None = None  # π0 checkpoint (None: the embedded tiny model)

    def __post_init__(self) -> None:
        if self.n < 2:
            raise UserError(f"--n must be at least 2 start states (got {self.n})")


@dataclass(frozen=True)
class ObjectProbeResult:
    table: pd.DataFrame  # object_probe.parquet: one row per embedding and perturbation
    ratios: pd.DataFrame  # :func:`object_probe.ratio_summary` of it
    meta: dict[str, Any]  # probe.json
    model_dir: Path
    table_path: Path
    meta_path: Path


def run_object_probe(
    config: ObjectProbeConfig, out: str | Path, on_progress: Callable[[int, int], None] | None = None
) -> ObjectProbeResult:
    """Check the inputs and the output directory, collect and embed the probe's states, write the two files."""
    from csil_diag.features.dataset import dataset_task
    from csil_diag.runs import RunDir, atomic_write_json, atomic_write_parquet, file_fingerprint, now_utc
    from csil_diag.vla.policy import resolve_model_dir

    out, demos, task = Path(out), Path(config.demos), config.task
    if dataset_task(demos) != task:
        raise UserError(f"{demos} holds {dataset_task(demos)} demos but --task is {task}; pass demos of {task}")
    run_dir = RunDir(out).check()  # before minutes of embedding: a bad --out fails now
    model_dir = resolve_model_dir(config.model)
    start = time.perf_counter()
    embedders, fingerprint, cameras, size = {}, None, None, None
    for site in config.sites:
        embed, policy = op.vla_embedder(model_dir, site, task)
        embedders[f"π0 {site}"] = embed
        fingerprint, cameras, size = policy.fingerprint, policy.cameras, policy.image_size
    embedders["joints+object"] = op.lowdim_embedder()
    states = op.collect_states(task, demos, cameras, size, config.n, seed=config.seed, on_progress=on_progress)
    table = op.probe_table(states, embedders)
    table_path, meta_path = out / "object_probe.parquet", out / "probe.json"
    with run_dir.acquire(f"csil-diag probe object --out {out}"):
        atomic_write_parquet(table_path, table)
        meta = {"kind": "object_probe", "task": task, "demos": str(demos), "demos_sha256": file_fingerprint(demos)}
        meta |= {"model": str(model_dir), "fingerprint": fingerprint, "n_starts": len(states.base), "seed": config.seed}
        meta |= {"seconds": round(time.perf_counter() - start, 1), "written": now_utc()}
        atomic_write_json(meta_path, meta)
    return ObjectProbeResult(table, op.ratio_summary(table), meta, model_dir, table_path, meta_path)
