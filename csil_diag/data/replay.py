"""Replay recorded demos from their MuJoCo states: the check that a dataset's states are complete."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

import numpy as np

from csil_diag.data.robomimic import demo_sort_key, open_demos
from csil_diag.envs.tasks import RobosuiteTask, make_env, task_from_env_name


@dataclass(frozen=True)
class ReplayResult:
    demo: str
    recorded_success: bool
    replay_success: bool
    steps: int
    max_object_error: float  # max |object-state replayed − recorded| over the episode


def replay_demos(path: str | os.PathLike, demos: list[str] | None = None) -> list[ReplayResult]:
    """Reset to ``states[0]`` of each demo, replay its actions, compare success and object states."""
    with open_demos(path) as f:
        env_args = json.loads(f["data"].attrs["env_args"])
        task = env_args.get("task") or task_from_env_name(env_args["env_name"])
        names = demos or sorted(f["data"].keys(), key=demo_sort_key)
        env = make_env(task, seed=env_args.get("env_kwargs", {}).get("seed", 0))
        try:
            return [_replay_one(env, f["data"][name], name) for name in names]
        finally:
            env.close()


def _replay_one(env: RobosuiteTask, grp, name: str) -> ReplayResult:
    states, actions = grp["states"][()], grp["actions"][()]
    recorded_obj = grp["obs"]["object"][()] if "object" in grp["obs"] else None
    env.reset_to_state(states[0])
    success, err, steps = False, 0.0, 0
    for t, action in enumerate(actions):
        obs, _, done, info = env.step(action)
        steps += 1
        if recorded_obj is not None and t + 1 < len(recorded_obj):
            err = max(err, float(np.abs(obs["object"] - recorded_obj[t + 1]).max()))
        success = success or bool(info["success"])
        if done:
            break
    recorded = bool(grp.attrs["success"]) if "success" in grp.attrs else bool(grp["rewards"][-1] > 0)
    return ReplayResult(name, recorded, success, steps, err)
