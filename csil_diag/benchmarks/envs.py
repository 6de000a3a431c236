"""Environment steps/s per process, with and without cameras (rendering dominates CPU rollouts)."""

from __future__ import annotations

import time

import numpy as np

from csil_diag.envs.tasks import ACTION_DIM, RobosuiteTask


def env_steps_per_second(
    task: str, cameras: tuple[str, ...] = (), image_size: int = 84, steps: int = 300, seed: int = 0, cull: bool = True
) -> float:
    """Random-action steps/s in one process (resets included when an episode ends); ``cull=False`` renders the
    meshes out of view too (the frames are the same)."""
    rng = np.random.default_rng(seed)
    with RobosuiteTask(task, cameras=cameras, image_size=image_size, seed=seed, cull=cull) as env:
        env.reset(seed=seed)
        for _ in range(10):  # warm-up: numba compilation, first GL frames
            env.step(rng.uniform(-1, 1, ACTION_DIM))
        env.reset(seed=seed + 1)
        start = time.perf_counter()
        for _ in range(steps):
            _, _, done, _ = env.step(rng.uniform(-1, 1, ACTION_DIM))
            if done:
                env.reset()
        return steps / (time.perf_counter() - start)


def run(
    tasks: tuple[str, ...] = ("lift", "can", "square", "assembly"), steps: int = 300
) -> dict[str, dict[str, float]]:
    """{task: {"no_cameras": steps/s, "agentview+wrist_84": steps/s, "agentview+wrist_84_no_culling": steps/s}}."""
    cams = ("agentview", "wrist")
    return {
        task: {
            "no_cameras": round(env_steps_per_second(task, steps=steps), 1),
            "agentview+wrist_84": round(env_steps_per_second(task, cams, 84, steps=steps), 1),
            "agentview+wrist_84_no_culling": round(env_steps_per_second(task, cams, 84, steps=steps, cull=False), 1),
        }
        for task in tasks
    }


if __name__ == "__main__":
    import json

    print(json.dumps(run(), indent=2))
