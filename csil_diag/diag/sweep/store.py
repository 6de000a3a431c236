"""The sweep directory: a grid of ordinary entropy runs sharing demos and settings (thesis Fig. 6.5 and 6.6).

A sweep directory::

    sweep.json          the command, the grid, every cell (label, --input, model, grid columns), the shared settings,
                        seeds, versions, start/end times, CPU utilisation and points finished of each session
                        (kept up to date while it runs, so a killed session keeps them)
    runs/<label>/       one ordinary `csil-diag entropy` run directory per cell (resume, identity check, report apply)
    summary.parquet     every run's rows with the grid's own columns (width, selection, subset, object, model, …)

Cells run as independent processes — a local pool sized so that concurrent runs × env workers ≤ cores, or tasks on a
Ray cluster — through one function, :func:`run_cell`, so a cell's numbers do not depend on the backend. Re-running
skips finished points; adding seeds or grid values extends the sweep; a changed shared setting is refused by name.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import pandas as pd

from csil_diag.diag.entropy_run import OPTION_NAMES, EntropyConfig
from csil_diag.diag.sweep.backends import connect_ray, cpu_busy_seconds, run_local, run_ray
from csil_diag.diag.sweep.grid import Cell, apply_settings
from csil_diag.errors import UserError
from csil_diag.runs import (
    RunDir,
    atomic_write_json,
    atomic_write_parquet,
    file_fingerprint,
    identity_differences,
    now_utc,
    read_json_file,
    versions,
)

SWEEP_FILE = "sweep.json"
SUMMARY_FILE = "summary.parquet"
RECORD_EVERY_S = 60.0  # how often a running session writes its figures so far into sweep.json


@dataclass(frozen=True)
class SweepResult:
    path: Path
    cells: int
    seconds: float
    cpu_utilisation: float
    summary: pd.DataFrame
    failed: dict[str, str]


class Sweep:
    """A sweep directory: its grid, the shared settings its cells inherit, and running them."""

    def __init__(
        self, path: str | os.PathLike, kind: str, base: EntropyConfig, cells: list[Cell], command: str
    ) -> None:
        self.path = Path(path)
        self.kind = kind
        self.base = base
        self.command = command
        self.run_dir = RunDir(self.path).check()
        if not cells:
            raise UserError("the sweep's grid is empty; give at least one width / model")
        identity = base.identity()
        identity.pop("input")
        for key in {k for c in cells for k in c.settings}:  # what the grid varies is not shared
            group, _, name = key.rpartition(".")
            (identity.get(group, {}) if group else identity).pop(name, None)
        # What every cell shares and a resumed sweep must keep (cells and seeds may be added); hashed once.
        self.shared = {"kind": kind, **identity, "demos_sha256": file_fingerprint(base.demos)}
        old = self._read()
        self.cells = self._merge_cells(old, cells)
        self.seeds = tuple(sorted(set(base.seeds) | set(old.get("seeds", []) if old else [])))
        self._old = old

    def _read(self) -> dict[str, Any] | None:
        path = self.path / SWEEP_FILE
        if not path.exists():
            return None
        data = read_json_file(path, f"delete {self.path} to start over, or choose another --out")
        return data if isinstance(data, dict) else None

    def _merge_cells(self, old: dict[str, Any] | None, cells: list[Cell]) -> list[Cell]:
        if old is None:
            return cells
        merged = {
            c["label"]: Cell(c["label"], c["input"], c.get("model"), c.get("columns", {}), c.get("settings", {}))
            for c in old["cells"]
        }
        for cell in cells:
            known = merged.get(cell.label)
            if known is not None and (known.input, known.model, known.settings) != (
                cell.input,
                cell.model,
                cell.settings,
            ):
                raise UserError(
                    f"{self.path}: cell {cell.label} was {known.input!r} ({known.model}) and is now {cell.input!r} "
                    f"({cell.model}); keep --subset-seed / --models as they were, or choose another --out"
                )
            merged[cell.label] = cell
        return list(merged.values())

    def _check_shared(self) -> None:
        if self._old is None:
            return
        diff = identity_differences(self._old.get("shared", {}), self.shared, OPTION_NAMES | {"kind": "command"})
        if diff:
            raise UserError(
                f"{self.path} holds a sweep with other shared settings: {'; '.join(diff)}; "
                "repeat its options to extend or resume it, or choose another --out"
            )

    def cell_config(self, cell: Cell) -> EntropyConfig:
        return apply_settings(replace(self.base, input=cell.input, model=cell.model, seeds=self.seeds), cell.settings)

    def cell_dir(self, cell: Cell) -> Path:
        return self.path / "runs" / cell.label

    # -- files
    def _write(self, sessions: list[dict[str, Any]]) -> None:
        atomic_write_json(
            self.path / SWEEP_FILE,
            {
                "kind": self.kind,
                "command": self.command,
                "shared": self.shared,
                "config": asdict(self.base) | {"input": None, "model": None, "seeds": list(self.seeds)},
                "seeds": list(self.seeds),
                "cells": [asdict(c) for c in self.cells],
                "sessions": sessions,
                "created": (self._old or {}).get("created", now_utc()),
                "versions": versions(),
            },
        )

    def summary(self) -> pd.DataFrame:
        """Every finished row of every cell, with the grid's columns and the cell label."""
        frames = []
        for cell in self.cells:
            table = self.cell_dir(cell) / "entropy.parquet"
            if not table.exists():
                continue
            frame = pd.read_parquet(table)
            if frame.empty:
                continue
            frames.append(frame.assign(cell=cell.label, **{k: v for k, v in cell.columns.items()}))
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()

    def progress(self) -> tuple[int, int]:
        """(finished points, points in all) over every cell and seed."""
        per_run = len(self.base.points) * len(self.seeds)
        done = sum(len(list((self.cell_dir(c) / "points").glob("*.parquet"))) for c in self.cells)
        return done, per_run * len(self.cells)

    # -- running
    def run(
        self,
        *,
        backend: str = "local",
        parallel: int = 0,
        workers_per_run: int = 1,
        address: str | None = None,
        on_progress: Callable[[int, int, str], None] | None = None,
        on_embed: Callable[[int, int], None] | None = None,
    ) -> SweepResult:
        """Run every unfinished cell; ``on_progress(points done, points in all, status)`` every few seconds."""
        if backend not in ("local", "ray"):
            raise UserError(f"--backend must be local or ray (got {backend!r})")
        if backend == "ray":
            ray = connect_ray(address)
        self._check_shared()
        cores = os.cpu_count() or 1
        parallel = parallel or max(1, cores // max(1, workers_per_run))
        threads = max(1, cores // parallel)
        self.run_dir.acquire(f"csil-diag sweep --out {self.path}")
        sessions = list((self._old or {}).get("sessions", []))
        session = {"backend": backend, "parallel": parallel, "workers_per_run": workers_per_run, "threads": threads}
        session |= {"started": now_utc(), "cores": cores, "address": address}
        start, busy0, points0 = time.perf_counter(), cpu_busy_seconds(), self.progress()[0]
        last_record = [start]

        def record(**extra: Any) -> tuple[float, float]:
            """The session so far into sweep.json (so a killed session keeps its figures): seconds, CPU utilisation,
            points finished in it."""
            seconds = time.perf_counter() - start
            utilisation = (cpu_busy_seconds() - busy0) / max(seconds * cores, 1e-9)
            session.update(seconds=round(seconds, 1), cpu_utilisation=round(utilisation, 3), **extra)
            session["points_finished"] = self.progress()[0] - points0
            self._write([*sessions, session])
            last_record[0] = time.perf_counter()
            return seconds, utilisation

        def progress(done: int, total: int, status: str) -> None:
            if time.perf_counter() - last_record[0] >= RECORD_EVERY_S:
                record()
            if on_progress is not None:
                on_progress(done, total, status)

        try:
            self._write([*sessions, session])
            self._prepare_shared_inputs(on_embed)
            # The clock restarts here: the session's figures are the cells' (π0's demo embeddings are shared set-up);
            # the values set above only serve a session interrupted before this point.
            start, busy0 = time.perf_counter(), cpu_busy_seconds()
            jobs = [(c.label, asdict(self.cell_config(c)), str(self.cell_dir(c)), workers_per_run) for c in self.cells]

            def report(running: int, failed: dict[str, str]) -> None:
                self._report(progress, running, failed)

            if backend == "local":
                failed = run_local(jobs, parallel, threads, report)
            else:
                failed = run_ray(ray, jobs, threads, report)
            seconds, utilisation = record(finished=now_utc(), failed=failed)
            summary = self.summary()
            atomic_write_parquet(self.path / SUMMARY_FILE, summary)
        except BaseException:
            record(interrupted=now_utc())
            raise
        finally:
            self.run_dir.release()
        return SweepResult(self.path, len(self.cells), seconds, utilisation, summary, failed)

    def _prepare_shared_inputs(self, on_embed: Callable[[int, int], None] | None) -> None:
        """π0's demo embeddings, once per model, before cells start (they would otherwise race to compute them)."""
        models = {c.model for c in self.cells if self.cell_config(c).uses_vla}
        if not models:
            return
        from csil_diag.vla.embed import ensure_embeddings
        from csil_diag.vla.policy import VLAPolicy, resolve_model_dir

        n_envs = max(self.base.episodes, self.base.eval_episodes)
        for model in models:
            policy = VLAPolicy.load(resolve_model_dir(model), site=self.base.site, batch_size=n_envs)
            ensure_embeddings(policy, self.base.demos, on_embed)

    def _report(self, on_progress, running: int, failed: dict[str, str]) -> None:
        if on_progress is not None:
            done, total = self.progress()
            status = f"{len(self.cells) - running}/{len(self.cells)} runs finished"
            on_progress(done, total, status + (f", {len(failed)} refused" if failed else ""))
