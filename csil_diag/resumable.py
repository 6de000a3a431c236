"""The one resumable HetStat run: check → validate demos → lock → load inputs/VLA → config.json → identity-checked
resume → table rebuild. `entropy` (diag/entropy_run.py) and `train` (csil/train_run.py) subclass it; what differs
between them (what one seed does, the table's files, a raised step budget on resume) is theirs.

A run directory is self-describing: ``config.json`` holds the resolved config, its identity (what a resumed run must
share), the normaliser, the dataset's fingerprint, the VLA's and the versions; every table is rebuilt from per-unit
files written atomically, so a run killed at any moment resumes where its last unit ended.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import pandas as pd

from csil_diag.config import from_dict, hetstat_identity
from csil_diag.data.robomimic import validate_demos
from csil_diag.envs.tasks import ACTION_DIM, task_spec
from csil_diag.envs.vector import VectorEnv
from csil_diag.errors import UserError
from csil_diag.features.dataset import check_demos_for_task
from csil_diag.features.sources import PI0, check_sources, check_widths, model_sources, required_keys
from csil_diag.features.spec import InputSpec
from csil_diag.inputs import VLA_STATE_KEYS, RunInputs, load_inputs, load_vla
from csil_diag.phases import phase
from csil_diag.policy.actor import RolloutActor
from csil_diag.runs import (
    RunDir,
    atomic_write_json,
    atomic_write_parquet,
    check_resume,
    file_fingerprint,
    now_utc,
    read_json_file,
    read_saved_config,
    versions,
)

if TYPE_CHECKING:
    from csil_diag.vla.policy import VLAPolicy


# ------------------------------------------------------------------------------------ what run configs share
def check_input(config: Any) -> None:
    """A run config's task and ``--input`` checked, the input spelled one way ("joints + object" → "joints+object",
    so equivalent runs resume each other)."""
    task_spec(config.task)
    spec = InputSpec.parse(config.input)
    check_sources(spec)
    object.__setattr__(config, "input", str(spec))


def check_site(site: str) -> None:
    from csil_diag.vla.pi0 import EMBEDDING_SITES

    if site not in EMBEDDING_SITES:
        raise UserError(f"--site must be one of {', '.join(EMBEDDING_SITES)} (got {site!r})")


def check_std_floor(value: float, example: str = "") -> None:
    if not (math.isfinite(value) and value > 0):
        raise UserError(f"--std-floor must be a positive number{example} (got {value})")


def needs_vla(input_spec: str, mode: str) -> bool:
    """True when the VLA feeds the input or is the base the HetStat composes with (residual / ensemble)."""
    return bool(model_sources(InputSpec.parse(input_spec))) or mode != "head"


def run_identity(config: Any, drop: tuple[str, ...]) -> dict[str, Any]:
    """A run config as its identity: remedies only where used, ``drop`` removed (seeds may be added; model and demos
    are identified by fingerprints); a low-dim run keeps the identity it had before the VLA options existed."""
    data = asdict(config)
    data["hetstat"] = hetstat_identity(config.hetstat)
    for key in drop:
        data.pop(key)
    if not config.uses_vla:
        data.pop("site")
        data.pop("replan")
    return json.loads(json.dumps(data))  # tuples → lists, as read back from config.json


def load_run_config(run_dir: str | os.PathLike, config_cls: type, command: str, kind: str | None) -> dict[str, Any]:
    """config.json of a run directory (``kind``: refuse another kind of run), with the config rebuilt as
    ``config_obj``; a clear error when it is not one."""
    path = Path(run_dir) / "config.json"
    if not path.exists():
        raise UserError(f"{run_dir} is not a csil-diag run directory (no config.json); run `{command}` first")
    data = read_json_file(path, f"the run directory is damaged; rerun `{command}` into another --out")
    if kind is not None and data.get("kind") != kind:
        raise UserError(f"{run_dir} is not a `{command}` run (it is a {data.get('kind')} run)")
    data["config_obj"] = from_dict(config_cls, data["config"])
    return data


def rebuild_parquet(
    out: Path,
    parts: list[Path],
    sort_by: list[str] | None = None,
    read: Callable[[Path], pd.DataFrame | None] = pd.read_parquet,
) -> pd.DataFrame:
    """The run's table ``out`` rebuilt from its per-unit files (their rows in order; a part ``read`` returns None for
    is left out), written atomically."""
    frames = [f for f in map(read, parts) if f is not None]
    frame = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    if sort_by and not frame.empty:
        frame = frame.sort_values(sort_by).reset_index(drop=True)
    atomic_write_parquet(out, frame)
    return frame


# ------------------------------------------------------------------------------------ the run
class ResumableRun:
    """One run directory. Constructing one only checks (the dataset, the output directory, a resumed run's identity)
    and takes the directory's lock; :meth:`load` reads the inputs (π0 and its demo embeddings: minutes for a new
    dataset) and writes config.json; :meth:`run` loads if needed, then runs every seed's missing units."""

    KIND: ClassVar[str]  # config.json's "kind"
    COMMAND: ClassVar[str]  # named in the lock and in errors
    OPTION_NAMES: ClassVar[dict[str, str]]  # how each identity key is spelled on the command line

    def __init__(
        self,
        config: Any,
        out: str | os.PathLike,
        workers: int = 0,
        on_embed: Callable[[int, int], None] | None = None,
    ) -> None:
        self.config = config
        self.out = Path(out)
        self.workers = workers
        self.spec = InputSpec.parse(config.input)
        self.vla: VLAPolicy | None = None
        self.inputs: RunInputs | None = None
        self._on_embed = on_embed
        # Everything that can be refused is checked before anything is written or computed.
        self.run_dir = RunDir(self.out).check()
        check_demos_for_task(config.demos, config.task)
        keys = required_keys(self.spec) + (VLA_STATE_KEYS if config.uses_vla else ())
        validate_demos(config.demos, tuple(dict.fromkeys(keys)), ("train", "valid"), ACTION_DIM)
        if config.uses_vla and config.model is not None:  # a named checkpoint: its config is cheap to read
            from csil_diag.vla.policy import checkpoint_site_width

            check_widths(self.spec, {PI0: checkpoint_site_width(config.model, config.site)})
        self._saved = read_saved_config(self.out)
        self._check_resume({k: v for k, v in self.identity().items() if k != "vla_model"})  # the VLA's: once loaded
        self.run_dir.acquire(f"{self.COMMAND} --out {self.out}")

    def close(self) -> None:
        """Release the run directory's lock (a run that wrote nothing leaves no directory behind)."""
        self.run_dir.release()

    def __enter__(self) -> ResumableRun:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ what a subclass defines
    @property
    def n_envs(self) -> int:
        """The run's envs (the batch the VLA compiles for)."""
        raise NotImplementedError

    def _build(self) -> None:
        """Models and jitted functions, once the inputs are read (``self.inputs``)."""
        raise NotImplementedError

    def run_seed(self, venv: VectorEnv, seed: int, on_event: Callable[..., None]) -> None:
        raise NotImplementedError

    def rebuild_table(self) -> pd.DataFrame:
        raise NotImplementedError

    def _config_record(self) -> dict[str, Any]:
        """The kind's own entries of config.json (its demo counts, its VLA record), merged over the shared ones."""
        return {}

    def _finished(self) -> bool:
        """Every asked unit already written: then nothing need load (False where a kind cannot tell cheaply)."""
        return False

    def _report_finished(self, on_event: Callable[..., None]) -> None:
        """The progress events of a run that had nothing left to do."""

    # ------------------------------------------------------------------ inputs
    def load(self, on_embed: Callable[[int, int], None] | None = None) -> ResumableRun:
        """Read the inputs (π0 where needed, demo features, normaliser), build the models, write config.json."""
        if self.inputs is not None:
            return self
        config = self.config
        vla = None
        if config.uses_vla:
            vla = load_vla(config.model, config.site, self.n_envs, self.spec, config.demos, on_embed or self._on_embed)
            self.config = replace(config, model=vla[2])
            self.vla = vla[0]
        self.inputs = load_inputs(config.demos, self.spec, config.std_floor, vla, config.hetstat.input_transform)
        self._build()
        self._write_config()
        return self

    def identity(self) -> dict[str, Any]:
        identity = self.config.identity()
        if self.vla is not None:
            identity["vla_model"] = self.vla.fingerprint
        return identity

    def _resume_view(self, saved: dict[str, Any] | None, identity: dict[str, Any]) -> dict[str, Any] | None:
        """The saved config as the identity check sees it (a kind may accept some differences, e.g. a raised
        budget)."""
        return saved

    def _check_resume(self, identity: dict[str, Any]) -> None:
        check_resume(self.out, self._resume_view(self._saved, identity), identity, self.OPTION_NAMES)

    def _write_config(self) -> None:
        cfg, inputs = self.config, self.inputs
        saved: dict[str, Any] = {
            "kind": self.KIND,
            "config": asdict(cfg),
            "identity": self.identity(),
            "input_width": int(inputs.train.x.shape[1]),
            "model_input_width": inputs.normalizer.out_width,
            "normalizer": inputs.normalizer.to_dict(),
            "demos": {
                "path": str(cfg.demos),
                "fingerprint": file_fingerprint(cfg.demos),
                "train_demos": len(inputs.train.demos),
                "valid_demos": len(inputs.valid.demos),
                "train_states": len(inputs.train.x),
            },
            "versions": versions(),
        }
        own = self._config_record()
        saved["demos"] |= own.pop("demos", {})
        saved |= own
        old = self._saved
        if old is not None:
            self._check_resume(saved["identity"])
            if old.get("demos", {}).get("fingerprint") != saved["demos"]["fingerprint"]:
                raise UserError(f"{cfg.demos} changed since {self.out} was started; use another --out")
            saved["config"]["seeds"] = sorted(set(old["config"]["seeds"]) | set(cfg.seeds))
            saved["created"] = old.get("created", now_utc())
        else:
            saved["created"] = now_utc()
        saved["updated"] = now_utc()
        inputs.normalizer.save_projection(self.out)
        atomic_write_json(self.out / "config.json", saved)
        self._saved = saved

    def _mark_updated(self) -> None:
        """config.json's ``updated``: when the last unit was written (the report's cover shows it)."""
        self._saved["updated"] = now_utc()
        atomic_write_json(self.out / "config.json", self._saved)

    # ------------------------------------------------------------------ acting
    @property
    def composes(self) -> bool:
        """Residual / ensemble: the HetStat composes with the VLA's action."""
        return self.config.bc.mode != "head"

    def rollout_actor(self, act: Callable[..., Any], batch: int, vla_noise: int) -> RolloutActor:
        """The HetStat (``act``) acting in the run's envs, π0 queried in chunks where the run has one (its sampling
        noise ids start at ``vla_noise``)."""
        vla_actor = None
        if self.vla is not None:
            from csil_diag.vla.policy import ChunkedActor

            vla_actor = ChunkedActor(self.vla, self.config.task, self.config.replan, vla_noise)
        return RolloutActor(act, self.spec, self.inputs.normalizer, self.composes, batch, vla_actor)

    # ------------------------------------------------------------------ running
    def open_envs(self, n_envs: int) -> VectorEnv:
        """The run's env workers (with the VLA's cameras where it has one)."""
        cameras = {} if self.vla is None else {"cameras": self.vla.cameras, "image_size": self.vla.image_size}
        cfg = self.config
        with phase("env_workers_start"):
            return VectorEnv(cfg.task, n_envs, workers=self.workers, seed=0, horizon=cfg.horizon, **cameras)

    def run(self, on_event: Callable[..., None] = lambda *a: None) -> pd.DataFrame:
        """Every seed's missing units; the run directory stays locked until they are written."""
        if not self.run_dir.held:
            self.run_dir.acquire(f"{self.COMMAND} --out {self.out}")
        try:
            if self._finished():
                self._report_finished(on_event)
                return self.rebuild_table()
            self.load()
            with self.open_envs(self.n_envs) as venv:
                for seed in self.config.seeds:
                    self.run_seed(venv, seed, on_event)
            return self.rebuild_table()
        finally:
            self.run_dir.release()
