"""Success rate, episode length and speed of the scripted experts; prints one JSON dict.

    PYTHONPATH=. .venv/bin/python benchmarks/expert_success.py                    # the default runs below
    PYTHONPATH=. .venv/bin/python benchmarks/expert_success.py square:0:50 can:0.1:20 --workers 2

A run is ``task[:noise[:episodes]]``; episode i uses ``env.reset(seed=i)`` and ``default_rng(i)`` for the
expert. Runs go to ``--workers`` processes (no cameras), so wall times are per process while the others
run too.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import multiprocessing
import os
import platform
import time
from typing import Any

import numpy as np

DEFAULT_RUNS = ("lift:0:50", "can:0:50", "square:0:50", "assembly:0:50", "lift:0.3:20", "can:0.3:20")


def parse_run(spec: str) -> tuple[str, float, int]:
    task, noise, episodes = ([*spec.split(":"), "", ""])[:3]
    return task, float(noise or 0.0), int(episodes or 50)


def run(spec: tuple[str, float, int]) -> dict[str, Any]:
    from csil_diag.data.expert_base import ExpertConfig
    from csil_diag.data.experts import make_expert
    from csil_diag.envs.tasks import make_env

    task, noise, episodes = spec
    env = make_env(task)
    expert = make_expert(task, ExpertConfig(noise=noise))
    successes, lengths, retries = [], [], []
    start = time.perf_counter()
    for seed in range(episodes):
        obs = env.reset(seed=seed)
        expert.reset(env, np.random.default_rng(seed))
        done, info = False, {"success": False}
        while not done:
            obs, _, done, info = env.step(expert.act(env, obs))
        successes.append(bool(info["success"]))
        lengths.append(env.steps)
        retries.append(expert.retries)
    wall = time.perf_counter() - start
    env.close()
    return {
        "task": task,
        "noise": noise,
        "episodes": episodes,
        "success_rate": float(np.mean(successes)),
        "failed_seeds": [seed for seed, ok in enumerate(successes) if not ok],
        "length_mean": float(np.mean(lengths)),
        "length_std": float(np.std(lengths)),
        "length_mean_successful": float(
            np.mean([n for n, ok in zip(lengths, successes, strict=True) if ok] or [np.nan])
        ),
        "retries_mean": float(np.mean(retries)),
        "wall_s": round(wall, 2),
        "wall_s_per_100_episodes": round(100 * wall / episodes, 2),
        "ms_per_step": round(1000 * wall / sum(lengths), 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="*", default=list(DEFAULT_RUNS), help="task[:noise[:episodes]]")
    parser.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    args = parser.parse_args()
    specs = [parse_run(spec) for spec in args.runs]
    start = time.perf_counter()
    # Longest runs first, so the workers finish together.
    order = sorted(range(len(specs)), key=lambda i: -specs[i][2] * (1 if specs[i][0] == "lift" else 3))
    with multiprocessing.get_context("spawn").Pool(args.workers) as pool:
        done = dict(zip(order, pool.map(run, [specs[i] for i in order], chunksize=1), strict=True))
    results = {f"{s[0]}@noise={s[1]:g}": done[i] for i, s in enumerate(specs)}
    results["_meta"] = {
        "workers": args.workers,
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "robosuite": importlib.metadata.version("robosuite"),
        "total_wall_s": round(time.perf_counter() - start, 2),
    }
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
