"""Where a camera env step's time goes, and whether the software renderer has a free setting left (record in
render_profile.txt): lift with agentview + wrist at 112×112 (the diagnostic point's cameras), random actions.

1. The scene's render settings (shadows, reflections, lights, triangles).
2. A cProfile of 200 steps: MuJoCo's mjr_render and mjr_readPixels against robosuite's controller and physics.
3. Steps/s and a hash of every frame with llvmpipe's rasteriser threads left to Mesa, off (0) and one (1), two
   processes side by side as the env workers run: the frames are identical, the rate is not moved.

usage: PYTHONPATH=. python results/render-profile/render_profile.py
"""

from __future__ import annotations

import cProfile
import hashlib
import os
import pstats
import subprocess
import sys
import time

import numpy as np

STEPS = 200


def _env():
    from csil_diag.envs.gl import ensure_gl_backend

    ensure_gl_backend()
    from csil_diag.envs.tasks import RobosuiteTask

    return RobosuiteTask("lift", cameras=("agentview", "wrist"), image_size=112, seed=0)


def settings() -> None:
    import mujoco

    with _env() as env:
        env.reset(seed=0)
        scn, model = env.env.sim._render_context_offscreen.scn, env.env.sim.model._model
        flags = {
            n: int(scn.flags[getattr(mujoco.mjtRndFlag, f"mjRND_{n}")]) for n in ("SHADOW", "REFLECTION", "SKYBOX")
        }
        print(
            f"render flags {flags}; lights {model.nlight}, casting shadows {int(model.light_castshadow.sum())}; "
            f"{int(model.mesh_facenum.sum()):,} mesh triangles in {model.nmesh} meshes"
        )


def profile() -> None:
    from csil_diag.envs.tasks import ACTION_DIM

    rng = np.random.default_rng(0)
    with _env() as env:
        env.reset(seed=0)
        for _ in range(10):
            env.step(rng.uniform(-1, 1, ACTION_DIM))
        prof = cProfile.Profile()
        prof.enable()
        for _ in range(STEPS):
            if env.step(rng.uniform(-1, 1, ACTION_DIM))[2]:
                env.reset()
        prof.disable()
    stats = pstats.Stats(prof).stats
    total = sum(v[2] for v in stats.values())
    for (_, _, name), (_, calls, tottime, _, _) in sorted(stats.items(), key=lambda kv: -kv[1][2])[:6]:
        print(f"  {name:40s} {calls:6d} calls {1e3 * tottime / STEPS:6.2f} ms a step (profiled)")
    print(f"  all Python-visible time: {1e3 * total / STEPS:.2f} ms a step (profiled)")


def rate() -> None:
    from csil_diag.envs.tasks import ACTION_DIM

    rng, digest = np.random.default_rng(0), hashlib.sha256()
    with _env() as env:
        env.reset(seed=0)
        for _ in range(10):
            env.step(rng.uniform(-1, 1, ACTION_DIM))
        start = time.perf_counter()
        for _ in range(STEPS):
            obs, _, done, _ = env.step(rng.uniform(-1, 1, ACTION_DIM))
            for cam in env.cameras:
                digest.update(np.ascontiguousarray(obs[cam]).tobytes())
            if done:
                env.reset()
        print(f"{1e3 * (time.perf_counter() - start) / STEPS:.2f} ms a step, frames {digest.hexdigest()[:16]}")


def main() -> None:
    if sys.argv[1:] == ["rate"]:
        return rate()
    settings()
    print(f"cProfile of {STEPS} steps, one process:")
    profile()
    for threads in (None, "0", "1"):
        env = dict(os.environ)
        env.pop("LP_NUM_THREADS", None)
        if threads is not None:
            env["LP_NUM_THREADS"] = threads
        procs = [
            subprocess.Popen(
                [sys.executable, __file__, "rate"],
                env=env,
                stdout=subprocess.PIPE,
                text=True,
                stderr=subprocess.DEVNULL,
            )
            for _ in range(2)
        ]
        outs = [p.communicate()[0].strip() for p in procs]
        print(f"LP_NUM_THREADS={threads or '(Mesa default)'}, two processes side by side: " + " | ".join(outs))


if __name__ == "__main__":
    main()
