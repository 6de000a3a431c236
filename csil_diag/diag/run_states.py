"""An entropy run's states as the instruments read them: the inputs it was trained on (re-read from the demos with
its saved normaliser), its HetStat, the parameters at a BC step and the online states kept at that step."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import jax
import numpy as np

from csil_diag.errors import UserError
from csil_diag.features.normalize import Normalizer
from csil_diag.inputs import RunInputs


def check_steps(steps: str) -> None:
    if steps not in ("first,last", "all"):
        raise UserError(f"--steps must be first,last or all (got {steps!r})")


@dataclass
class RunStates:
    run_dir: Path
    meta: dict[str, Any]
    inputs: RunInputs
    normalizer: Normalizer
    model: Any  # HetStat
    _fresh: dict[int, Any] = field(default_factory=dict)

    @property
    def config(self):
        return self.meta["config_obj"]

    @property
    def seeds(self) -> list[int]:
        return [int(s) for s in self.meta["config"]["seeds"]]

    def input_terms(self) -> dict[str, slice]:
        """Each ``--input`` term's columns in the HetStat's input; empty for a single term, or where an input transform
        (PCA / whitening) mixes the columns."""
        from csil_diag.features.sources import term_columns
        from csil_diag.features.spec import InputSpec

        spec = InputSpec.parse(self.config.input)
        if len(spec.sources) < 2 or self.config.hetstat.input_transform != "none":
            return {}
        widths = {"pi0": int(self.meta["vla"]["width"])} if "vla" in self.meta else {}
        return term_columns(spec, int(self.meta["input_width"]), widths)

    def _features(self, seed: int, step: int) -> Path:
        return self.run_dir / "features" / f"seed{seed}_step{step:08d}.npz"

    def _initial(self, seed: int) -> Any:
        """Step 0's parameters: a pure function of the seed (as the run initialised them)."""
        if seed not in self._fresh:
            from csil_diag.policy.bc import init_state

            width = self.normalizer.out_width
            self._fresh[seed] = init_state(self.model, self.config.bc, jax.random.key(seed), width).params
        return self._fresh[seed]

    def steps(self, seed: int, which: str) -> list[int]:
        """BC steps with both parameters (step 0, or a kept checkpoint) and kept online states: all of them, or the
        first and the last."""
        ckpt = self.run_dir / "checkpoints" / f"seed{seed}"
        have = [0, *sorted(int(p.stem.split("_")[1]) for p in ckpt.glob("params_*.msgpack"))]
        have = [s for s in dict.fromkeys(have) if self._features(seed, s).exists()]
        return have if which == "all" or not have else sorted({have[0], have[-1]})

    def params(self, seed: int, step: int) -> Any:
        from csil_diag.runs import load_pytree

        fresh = self._initial(seed)
        ckpt = self.run_dir / "checkpoints" / f"seed{seed}" / f"params_{step:08d}.msgpack"
        params = fresh if step == 0 else load_pytree(ckpt, fresh)
        if self.config.hetstat.head == "posterior":  # as the run evaluated and acted with them
            params = self.posterior(params)[0]
        return params

    @cached_property
    def x_train(self) -> np.ndarray:
        """The training demos' inputs as the run normalised them (N, D)."""
        return self.normalizer(self.inputs.train.x)

    def posterior(self, params: Any) -> tuple[Any, np.ndarray]:
        """``params`` with the posterior head fitted on this run's training demos, and the noise variances s² (A,)."""
        from csil_diag.policy.posterior_head import fit_posterior_head
        from csil_diag.policy.tanh_gaussian import composed_base

        train, mode = self.inputs.train, self.config.bc.mode
        base = composed_base(mode, train.base_actions)
        return fit_posterior_head(self.model, params, self.x_train, train.actions, base, mode)

    def online(self, seed: int, step: int) -> dict[str, np.ndarray]:
        from csil_diag.envs.rollouts import load_online_states

        return load_online_states(self._features(seed, step))

    def finished_points(self, seed: int) -> int:
        return len(list((self.run_dir / "points").glob(f"seed{seed}_step*.parquet")))

    def missing_states_note(self, seed: int) -> str:
        """Why ``seed`` has no probe-able step: not run yet, or run before online states were kept."""
        if not self.finished_points(seed):
            return f"seed {seed}: no finished point yet (the run is incomplete: rerun its command to resume it)"
        return f"seed {seed}: no point with kept online states (a run made before they were kept)"

    def no_states_error(self) -> UserError:
        if not any(self.finished_points(seed) for seed in self.seeds):
            return UserError(f"{self.run_dir} has no finished point yet; rerun its command to resume it")
        return UserError(
            f"{self.run_dir} has no point with kept online states; rerun `csil-diag entropy` into a new --out"
        )


def open_run(run_dir: str | os.PathLike) -> RunStates:
    """An entropy run directory, its VLA (where the input needs one) and demo features loaded once."""
    from csil_diag.diag.entropy_run import load_config
    from csil_diag.envs.tasks import ACTION_DIM
    from csil_diag.features.spec import InputSpec
    from csil_diag.inputs import load_inputs, load_vla
    from csil_diag.policy.hetstat import HetStat

    run_dir = Path(run_dir)
    meta = load_config(run_dir)
    cfg = meta["config_obj"]
    spec = InputSpec.parse(cfg.input)
    vla = None
    if cfg.uses_vla:
        vla = load_vla(cfg.model, cfg.site, max(cfg.episodes, cfg.eval_episodes), spec, cfg.demos)
    inputs = load_inputs(cfg.demos, spec, cfg.std_floor, vla)
    normalizer = Normalizer.from_dict(meta["normalizer"], run_dir)
    return RunStates(run_dir, meta, inputs, normalizer, HetStat(cfg.hetstat, ACTION_DIM, normalizer.out_width))
