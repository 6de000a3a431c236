"""Where the time of one diagnostic point goes: BC training, expert-state evaluation, rollouts (π0 queries, features,
HetStat sampling, waiting for the env workers' physics and rendering), online-state evaluation.

    csil-diag bench --point --demos data/lift_img.hdf5     # joints+object and pi0+joints, quick-preset settings

Each input runs a fresh quick-preset entropy run of ``steps`` BC steps with two points (step 0 and ``steps``), so
compilation (and π0's loading) is included, as a user's first run pays it; the π0 demo embeddings must already be
cached beside the dataset (any earlier pi0 run made them), otherwise their computation shows under ``load``.
"""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import replace
from typing import Any


def point_breakdown(demos: str, inputs: tuple[str, ...] = ("joints+object", "pi0+joints"), steps: int = 250) -> dict:
    from csil_diag.config import apply_preset
    from csil_diag.diag.entropy_run import EntropyConfig, EntropyRun, default_mode
    from csil_diag.phases import phase, timing

    out: dict[str, Any] = {"demos": demos, "bc_steps": steps, "points": 2, "cores": os.cpu_count()}
    for spec in inputs:
        config = apply_preset(EntropyConfig(task="lift", input=spec, demos=demos), "quick")
        config = replace(config, steps=steps, every=steps, seeds=(0,), bc=replace(config.bc, mode=default_mode(spec)))
        with tempfile.TemporaryDirectory() as tmp, timing() as timer:
            start = time.perf_counter()
            with EntropyRun(config, os.path.join(tmp, "run"), workers=os.cpu_count() or 1) as run:
                with phase("load"):
                    run.load()
                run.run()
            wall = time.perf_counter() - start
        seconds = dict(timer.seconds)
        rollouts = ("rollouts", "rollouts_stochastic", "rollouts_deterministic")  # side by side, or one after the other
        top = ("load", "env_workers_start", "bc_train", "expert_states", *rollouts, "online_states")
        other = wall - sum(seconds.get(k, 0.0) for k in top)
        out[spec] = {
            "wall_s": round(wall, 1),
            "phases_s": {k: round(v, 2) for k, v in sorted(seconds.items())}
            | {"other (writes, setup)": round(other, 2)},
            "rollout_steps": timer.calls.get("rollout/env_step", 0),
        }
    return out
