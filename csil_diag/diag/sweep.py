"""Sweeps: a grid of ordinary entropy runs sharing demos and settings (thesis Fig. 6.5 and 6.6).

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

import contextlib
import json
import os
import queue as queue_module
import socket
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import asdict, dataclass, field, replace
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from csil_diag.config import from_dict
from csil_diag.diag.entropy_run import OPTION_NAMES, EntropyConfig, EntropyRun
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
LOWDIM_REFERENCE = "joints"  # width 0 of a slice sweep: the low-dim input every π0 cell adds to


@dataclass(frozen=True)
class Cell:
    """One run of the grid: its directory label, its --input, its π0 checkpoint, the grid's columns, and any other
    settings it changes (dotted config keys such as ``hetstat.trunk``: `csil-diag sweep --set`)."""

    label: str
    input: str
    model: str | None = None
    columns: dict[str, Any] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)


# ------------------------------------------------------------------------------------ generic grids (--set)
# What a cell may not change: the data and the seeds are the sweep's, the model is `compare`'s grid.
UNSETTABLE = ("task", "demos", "seeds", "model")


def _setting_type(key: str) -> Any:
    """The declared type of a dotted EntropyConfig key (``steps``, ``hetstat.trunk``, ``bc.learning_rate``)."""
    import typing

    from csil_diag.config import BCConfig, HetStatConfig

    group, _, name = key.rpartition(".")
    cls = {"": EntropyConfig, "hetstat": HetStatConfig, "bc": BCConfig}.get(group)
    hints = typing.get_type_hints(cls) if cls is not None else {}
    if name not in hints or key in UNSETTABLE or hints[name] in (HetStatConfig, BCConfig):
        settable = [f"hetstat.{k}" for k in typing.get_type_hints(HetStatConfig)]
        settable += [f"bc.{k}" for k in typing.get_type_hints(BCConfig)]
        settable += [
            k
            for k, t in typing.get_type_hints(EntropyConfig).items()
            if k not in UNSETTABLE and t not in (HetStatConfig, BCConfig)
        ]
        raise UserError(f"--set {key}: not a setting a sweep can vary; choose from {', '.join(settable)}")
    return hints[name]


def _split_values(text: str) -> list[str]:
    """Comma-separated values, commas inside braces or brackets kept (``pi0{1,5}+joints``)."""
    values, depth, current = [], 0, ""
    for ch in text:
        depth += 1 if ch in "{[(" else -1 if ch in "}])" else 0
        if ch == "," and depth == 0:
            values.append(current)
            current = ""
        else:
            current += ch
    values.append(current)
    return [v.strip() for v in values if v.strip()]


def _typed(key: str, kind: Any, text: str) -> Any:
    import types
    import typing

    target, optional = kind, False
    if typing.get_origin(kind) in (typing.Union, types.UnionType):
        args = typing.get_args(kind)
        optional = type(None) in args
        target = next(t for t in args if t is not type(None))
    if optional and text.lower() == "none":
        return None
    try:
        if typing.get_origin(target) is tuple:
            return tuple(int(x) for x in text.split("x"))  # hetstat.hidden=1024x1024
        if target is bool:
            if text.lower() not in ("true", "false", "yes", "no", "1", "0"):
                raise ValueError
            return text.lower() in ("true", "yes", "1")
        return target(text)
    except ValueError:
        raise UserError(f"--set {key}={text}: not a valid {getattr(target, '__name__', target)}") from None


def parse_set(text: str) -> tuple[str, list[Any]]:
    """``KEY=V1,V2,…`` → (key, typed values); the key is checked against the config, each value against its type."""
    key, sep, values = text.partition("=")
    key = key.strip()
    if not sep or not key or not values.strip():
        raise UserError(f"--set takes KEY=V1,V2 (e.g. hetstat.trunk=plain,spectral); got {text!r}")
    kind = _setting_type(key)
    typed = [_typed(key, kind, v) for v in _split_values(values)]
    if len(set(map(repr, typed))) != len(typed):
        raise UserError(f"--set {text}: a value is listed twice")
    return key, typed


def apply_settings(config: EntropyConfig, settings: dict[str, Any]) -> EntropyConfig:
    """``config`` with dotted settings applied (each checked by the config's own validation)."""
    settings = {k: tuple(v) if isinstance(v, list) else v for k, v in settings.items()}  # as read from sweep.json
    top = {k: v for k, v in settings.items() if "." not in k}
    groups = {}
    for group in ("hetstat", "bc"):
        sub = {k.split(".", 1)[1]: v for k, v in settings.items() if k.startswith(f"{group}.")}
        if sub:
            groups[group] = replace(getattr(config, group), **sub)
    return replace(config, **top, **groups)


def _label_part(key: str, value: Any) -> str:
    shown = "x".join(map(str, value)) if isinstance(value, (tuple, list)) else value
    text = f"{key.rpartition('.')[2]}={shown}"
    return "".join(c if c.isalnum() or c in "._=+-:" else "-" for c in text)


def grid_cells(base_input: str, sets: list[tuple[str, list[Any]]]) -> list[Cell]:
    """The product of ``--set`` grids: one cell per combination, labelled by its values, columns by the short keys."""
    import itertools

    keys = [k for k, _ in sets]
    if len(set(keys)) != len(keys):
        raise UserError(f"--set names {', '.join(sorted(k for k in keys if keys.count(k) > 1))} twice; give each once")
    cells = []
    for combo in itertools.product(*(values for _, values in sets)):
        settings = json.loads(json.dumps(dict(zip(keys, combo, strict=True))))  # as sweep.json will hold them
        label = "__".join(_label_part(k, v) for k, v in settings.items())
        columns = {
            k.rpartition(".")[2]: (v if isinstance(v, (int, float, str, bool)) else str(v)) for k, v in settings.items()
        }
        spec_input = settings.pop("input", base_input)
        cells.append(Cell(label, spec_input, None, columns, settings))
    return cells


# ------------------------------------------------------------------------------------ grids
def parse_widths(text: str, site_width: int) -> list[int]:
    """'0,16,64,all' → [0, 16, 64, site_width]; a width past the site's is refused, naming the valid range."""
    widths = []
    for part in (p.strip() for p in text.split(",") if p.strip()):
        if part == "all":
            widths.append(site_width)
            continue
        try:
            width = int(part)
        except ValueError:
            raise UserError(f"--widths takes integers or 'all', e.g. 0,16,64,all (got {part!r})") from None
        if not 0 <= width <= site_width:
            raise UserError(f"--widths {width} is outside the site's width: use 0 … {site_width} (or 'all')")
        widths.append(width)
    if not widths:
        raise UserError("--widths must name at least one width, e.g. 0,16,64,256")
    return sorted(set(widths))


def parse_select(text: str) -> tuple[str, int]:
    """'leading' → ('leading', 1); 'random:3' → ('random', 3)."""
    if text == "leading":
        return "leading", 1
    if text.startswith("random:"):
        try:
            count = int(text.split(":", 1)[1])
        except ValueError:
            count = 0
        if count >= 1:
            return "random", count
    raise UserError(f"--select must be leading or random:R with R ≥ 1, e.g. random:3 (got {text!r})")


def parse_object(text: str) -> list[bool]:
    values = {"with": True, "without": False}
    parts = [p.strip() for p in text.split(",") if p.strip()]
    if not parts or any(p not in values for p in parts):
        raise UserError(f"--object takes with, without or with,without (got {text!r})")
    return [values[p] for p in dict.fromkeys(parts)]


def random_subset(site_width: int, width: int, subset: int, subset_seed: int) -> tuple[int, ...]:
    """The ``subset``-th seeded random set of ``width`` columns of a ``site_width``-wide embedding (sorted)."""
    rng = np.random.default_rng([subset_seed, width, subset])
    return tuple(int(i) for i in np.sort(rng.choice(site_width, width, replace=False)))


def slice_cells(
    widths: list[int],
    objects: list[bool],
    selects: list[tuple[str, int]],
    site_width: int,
    source: str = "pi0",
    subset_seed: int = 0,
) -> list[Cell]:
    """The cells of a slice sweep: ``pi0<selection of w>+joints[+object]``; width 0 is ``joints[+object]``."""
    cells: dict[str, Cell] = {}
    for obj in objects:
        tail = "+object" if obj else ""
        suffix = "obj" if obj else "noobj"
        for width in widths:
            if width == 0:
                label = f"w0000-lowdim-{suffix}"
                columns = {"width": 0, "selection": "none", "subset": 0, "object": obj}
                cells[label] = Cell(label, f"{LOWDIM_REFERENCE}{tail}", None, columns)
                continue
            for how, count in selects:
                if how == "random" and width == site_width:
                    # Every subset of the full width is the full width, in order: the leading cell itself (a sweep
                    # ran both once and got bit-identical numbers), so one cell, and none beside a leading one.
                    count = 0 if ("leading", 1) in selects else 1
                for subset in range(count):
                    if how == "leading":
                        term, label = f"{source}[:{width}]", f"w{width:04d}-leading-{suffix}"
                    else:
                        picked = random_subset(site_width, width, subset, subset_seed)
                        term = f"{source}{{{','.join(map(str, picked))}}}"
                        label = f"w{width:04d}-random{subset}-{suffix}"
                    columns = {"width": width, "selection": how, "subset": subset, "object": obj}
                    cells[label] = Cell(label, f"{term}+{LOWDIM_REFERENCE}{tail}", None, columns)
    return list(cells.values())


# ------------------------------------------------------------------------------------ one cell
def _thread_env(threads: int) -> dict[str, str]:
    """XLA's CPU thread pool sized to the run's share of the machine (read at JAX's import, so set in the child)."""
    return {
        "XLA_FLAGS": f"--xla_cpu_multi_thread_eigen={'true' if threads > 1 else 'false'} "
        f"intra_op_parallelism_threads={threads}",
        "OMP_NUM_THREADS": str(threads),
        "OPENBLAS_NUM_THREADS": str(threads),
    }


def run_cell(config: dict[str, Any], out: str, workers: int) -> str | None:
    """Run (or resume) one cell's entropy run; returns None, or the one-line message of a refused run.
    The same function runs in a local worker process and as a Ray task."""
    try:
        with EntropyRun(from_dict(EntropyConfig, config), out, workers) as run:
            run.run()
    except UserError as exc:
        return str(exc)
    return None


def local_pool(parallel: int, threads: int) -> ProcessPoolExecutor:
    """``parallel`` spawned processes, each pinned to its own ``threads`` cores (XLA sizes its pool by them) and
    with XLA, OpenMP and BLAS set for ``threads`` threads. Their env workers are not pinned (see ``procs.unpin``)."""
    from csil_diag.procs import core_slots, spawner

    context = get_context("spawn")
    queue = None
    if slots := core_slots(parallel, threads):
        queue = context.Queue()
        for slot in slots:
            queue.put(slot)
    return ProcessPoolExecutor(
        parallel, mp_context=context, initializer=_child_init, initargs=(spawner(), _thread_env(threads), queue)
    )


def _child_init(parent: tuple[int, bool], env: dict[str, str], slots: Any) -> None:
    from csil_diag.procs import die_with_parent, pin_to

    # Here, not in the parent's environment: the pool spawns its processes at submit time, so a variable set around
    # the pool's construction would already be gone. JAX reads XLA_FLAGS and sizes its thread pool at its first
    # computation, after this. The flags make a local cell compute what a Ray task computes (they change which
    # kernels XLA calls); the pinning is what bounds its threads. Pinning does not change the numbers (tested).
    os.environ.update(env)
    if slots is not None:
        with contextlib.suppress(queue_module.Empty):  # more processes than slots (one replaced): run unpinned
            pin_to(slots.get(timeout=30))
    die_with_parent(*parent)


# ------------------------------------------------------------------------------------ the sweep
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
            ray = _connect_ray(address)
        self._check_shared()
        cores = os.cpu_count() or 1
        parallel = parallel or max(1, cores // max(1, workers_per_run))
        threads = max(1, cores // parallel)
        self.run_dir.acquire(f"csil-diag sweep --out {self.path}")
        sessions = list((self._old or {}).get("sessions", []))
        session = {"backend": backend, "parallel": parallel, "workers_per_run": workers_per_run, "threads": threads}
        session |= {"started": now_utc(), "cores": cores, "address": address}
        start, busy0, points0 = time.perf_counter(), _cpu_busy_seconds(), self.progress()[0]
        last_record = [start]

        def record(**extra: Any) -> tuple[float, float]:
            """The session so far into sweep.json (so a killed session keeps its figures): seconds, CPU utilisation,
            points finished in it."""
            seconds = time.perf_counter() - start
            utilisation = (_cpu_busy_seconds() - busy0) / max(seconds * cores, 1e-9)
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
            start, busy0 = time.perf_counter(), _cpu_busy_seconds()
            jobs = [(c.label, asdict(self.cell_config(c)), str(self.cell_dir(c)), workers_per_run) for c in self.cells]
            if backend == "local":
                failed = self._run_local(jobs, parallel, threads, progress)
            else:
                failed = self._run_ray(ray, jobs, threads, progress)
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

    def _run_local(self, jobs, parallel: int, threads: int, on_progress) -> dict[str, str]:
        failed: dict[str, str] = {}
        pool = local_pool(parallel, threads)
        pending: dict[Future, str] = {pool.submit(run_cell, cfg, out, w): label for label, cfg, out, w in jobs}
        try:
            while pending:
                finished, _ = wait(list(pending), timeout=5, return_when=FIRST_COMPLETED)
                for future in finished:
                    label = pending.pop(future)
                    message = future.result()
                    if message:
                        failed[label] = message
                self._report(on_progress, len(pending), failed)
        except BaseException:
            # Ctrl-C / SIGTERM: stop the runs now (each loses only its point in progress) instead of waiting for them.
            for process in list(getattr(pool, "_processes", {}).values()):
                process.terminate()
            pool.shutdown(wait=False, cancel_futures=True)
            raise
        pool.shutdown()
        return failed

    def _run_ray(self, ray, jobs, threads: int, on_progress) -> dict[str, str]:
        remote = ray.remote(num_cpus=threads)(run_cell).options(runtime_env={"env_vars": _thread_env(threads)})
        refs = {remote.remote(cfg, out, w): label for label, cfg, out, w in jobs}
        failed: dict[str, str] = {}
        try:
            while refs:
                ready, _ = ray.wait(list(refs), num_returns=1, timeout=5)
                for ref in ready:
                    label = refs.pop(ref)
                    message = ray.get(ref)
                    if message:
                        failed[label] = message
                self._report(on_progress, len(refs), failed)
        except BaseException:
            for ref in refs:
                ray.cancel(ref, force=True)
            raise
        return failed

    def _report(self, on_progress, running: int, failed: dict[str, str]) -> None:
        if on_progress is not None:
            done, total = self.progress()
            status = f"{len(self.cells) - running}/{len(self.cells)} runs finished"
            on_progress(done, total, status + (f", {len(failed)} refused" if failed else ""))


def _cpu_busy_seconds() -> float:
    """Machine-wide busy CPU seconds so far (/proc/stat; 0 where it does not exist)."""
    try:
        fields = [float(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    except OSError:
        return 0.0
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0.0)
    return (sum(fields) - idle) / os.sysconf("SC_CLK_TCK")


def _connect_ray(address: str | None):
    """ray, initialised against ``address`` (None: a new local instance); unreachable → one line."""
    try:
        import ray
    except ImportError:
        raise UserError("--backend ray needs Ray: pip install 'csil-diag[ray]'") from None
    if address and address not in ("auto", "local") and not address.startswith("ray://"):
        host, _, port = address.rpartition(":")
        try:
            with socket.create_connection((host or "127.0.0.1", int(port)), timeout=5):
                pass
        except (OSError, ValueError):
            raise UserError(
                f"cannot reach a Ray cluster at {address}; start one with `ray start --head` or check --address"
            ) from None
    if not ray.is_initialized():
        try:
            ray.init(address=None if address == "local" else address, include_dashboard=False, log_to_driver=False)
        except Exception as exc:  # ray raises ConnectionError, RuntimeError, … for an unusable address
            reason = " ".join(str(exc).split())[:200]
            raise UserError(f"cannot start or join Ray at {address or 'a new local instance'} ({reason})") from None
    return ray


# ------------------------------------------------------------------------------------ compare (Fig. 6.6)
AUDIT_FILE = "audit.json"


def model_regime(model_dir: Path) -> str:
    """The fine-tuning regime recorded in a checkpoint's train.json ('?' for a checkpoint trained elsewhere)."""
    path = Path(model_dir) / "train.json"
    if not path.exists():
        return "?"
    record = read_json_file(path, "the checkpoint is damaged; retrain it")
    train = record.get("identity", {}).get("train", {})
    return f"{record.get('kind', '')}:{train.get('regime', '?')}".strip(":")


def compare_cells(models: list[Path], labels: list[str], input_spec: str, widths: list[int]) -> list[Cell]:
    """One cell per π0 checkpoint, all with the same --input; a sliced π0 source needs one site width for all."""
    from csil_diag.features.sources import check_widths
    from csil_diag.features.spec import InputSpec

    if len(labels) != len(models) or len(set(labels)) != len(labels):
        raise UserError(f"--labels must name each of the {len(models)} models once (got {', '.join(labels)})")
    spec = InputSpec.parse(input_spec)
    sliced = any(t.name == "pi0" and (t.start, t.stop, t.indices) != (None, None, None) for t in spec.sources)
    if sliced and len(set(widths)) > 1:
        detail = ", ".join(f"{label} {w}" for label, w in zip(labels, widths, strict=True))
        raise UserError(
            f"--input {input_spec} slices π0's embedding but the models' site widths differ ({detail}); "
            "use an unsliced pi0 or models of one size"
        )
    for label, width in zip(labels, widths, strict=True):
        try:
            check_widths(spec, {"pi0": width})
        except UserError as exc:
            raise UserError(f"model {label}: {exc}") from None
    return [
        Cell(label, str(spec), str(model), {"model": label, "regime": model_regime(model)})
        for label, model in zip(labels, models, strict=True)
    ]


def write_audit(sweep_dir: Path, base: Path, models: list[Path], labels: list[str]) -> None:
    """The `vla diff` parameter audit of every model against ``base``, stored in the sweep for its report."""
    from csil_diag.vla.diff import diff_checkpoints

    audit = {
        "base": str(base),
        "models": {
            label: [asdict(g) | {"relative": g.relative} for g in diff_checkpoints(base, model)]
            for label, model in zip(labels, models, strict=True)
        },
    }
    atomic_write_json(Path(sweep_dir) / AUDIT_FILE, audit)
