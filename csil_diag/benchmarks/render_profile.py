"""Where a camera env step's time goes, and whether the software renderer has a free setting left (record: results/
render-profile/render_profile.txt): lift with agentview + wrist at 112×112 (the diagnostic point's cameras), random
actions.

1. The scene's render settings (shadows, reflections, lights, triangles).
2. A cProfile of 200 steps: MuJoCo's mjr_render and mjr_readPixels against robosuite's controller and physics.
3. Steps/s and a hash of every frame with llvmpipe's rasteriser threads left to Mesa, off (0) and one (1), two
   processes side by side as the env workers run: the frames are identical, the rate is not moved.

    python -m csil_diag.benchmarks.render_profile [--quick] [--out FILE]

--quick: 32×32 images, 3 steps, one process per setting, Mesa's default and one thread (a smoke test).
"""

from __future__ import annotations

import cProfile
import hashlib
import json
import os
import pstats
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from csil_diag.benchmarks.record import emit, parser

MODULE = "csil_diag.benchmarks.render_profile"
CAMERAS = ("agentview", "wrist")


@dataclass(frozen=True)
class Size:
    image_size: int = 112
    steps: int = 200
    warmup: int = 10
    processes: int = 2  # side by side, per thread setting
    threads: tuple[str | None, ...] = (None, "0", "1")  # LP_NUM_THREADS; None: Mesa's default


FULL = Size()
QUICK = Size(image_size=32, steps=3, warmup=1, processes=1, threads=(None, "1"))


def _env(image_size: int):
    from csil_diag.envs.tasks import RobosuiteTask  # sets MUJOCO_GL (csil_diag/envs/gl.py) before robosuite loads

    return RobosuiteTask("lift", cameras=CAMERAS, image_size=image_size, seed=0)


def _steps(env, rng: np.random.Generator, n: int, digest: Any = None) -> None:
    """``n`` random-action steps, resetting at an episode's end; each camera frame into ``digest`` if given."""
    from csil_diag.envs.tasks import ACTION_DIM

    for _ in range(n):
        obs, _, done, _ = env.step(rng.uniform(-1, 1, ACTION_DIM))
        if digest is not None:
            for cam in env.cameras:
                digest.update(np.ascontiguousarray(obs[cam]).tobytes())
        if done:
            env.reset()


def settings(image_size: int = 112) -> dict[str, Any]:
    """The offscreen scene's render flags, lights and mesh triangles."""
    import mujoco

    with _env(image_size) as env:
        env.reset(seed=0)
        scn, model = env.env.sim._render_context_offscreen.scn, env.env.sim.model._model
        return {
            "flags": {
                n: int(scn.flags[getattr(mujoco.mjtRndFlag, f"mjRND_{n}")]) for n in ("SHADOW", "REFLECTION", "SKYBOX")
            },
            "lights": int(model.nlight),
            "shadow_lights": int(model.light_castshadow.sum()),
            "triangles": int(model.mesh_facenum.sum()),
            "meshes": int(model.nmesh),
        }


def profile(size: Size = FULL) -> dict[str, Any]:
    """cProfile of ``size.steps`` steps after the warm-up: the six functions taking the most time of their own
    (name, calls, ms a step) and the Python-visible total (ms a step)."""
    rng = np.random.default_rng(0)
    with _env(size.image_size) as env:
        env.reset(seed=0)
        _steps(env, rng, size.warmup)
        prof = cProfile.Profile()
        prof.enable()
        _steps(env, rng, size.steps)
        prof.disable()
    stats = pstats.Stats(prof).stats
    top = sorted(stats.items(), key=lambda kv: -kv[1][2])[:6]
    return {
        "top": [(name, calls, 1e3 * tottime / size.steps) for (_, _, name), (_, calls, tottime, _, _) in top],
        "total_ms": 1e3 * sum(v[2] for v in stats.values()) / size.steps,
    }


def rate(size: Size = FULL) -> dict[str, Any]:
    """Milliseconds a step in this process after the warm-up, and the first 16 hex digits of a hash of its frames."""
    rng, digest = np.random.default_rng(0), hashlib.sha256()
    with _env(size.image_size) as env:
        env.reset(seed=0)
        _steps(env, rng, size.warmup)
        start = time.perf_counter()
        _steps(env, rng, size.steps, digest)
        return {"ms": 1e3 * (time.perf_counter() - start) / size.steps, "frames": digest.hexdigest()[:16]}


def rates_side_by_side(size: Size = FULL) -> dict[str | None, list[dict[str, Any]]]:
    """:func:`rate` in ``size.processes`` processes at once, per LP_NUM_THREADS setting."""
    out = {}
    for threads in size.threads:
        env = dict(os.environ)
        env.pop("LP_NUM_THREADS", None)
        if threads is not None:
            env["LP_NUM_THREADS"] = threads
        args = ["--rate-only", "--image-size", str(size.image_size), "--steps", str(size.steps)]
        args += ["--warmup", str(size.warmup)]
        procs = [
            subprocess.Popen(
                [sys.executable, "-m", MODULE, *args],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(size.processes)
        ]
        out[threads] = []
        for proc in procs:
            stdout, stderr = proc.communicate()
            if proc.returncode:
                raise RuntimeError(f"{MODULE} --rate-only failed ({proc.returncode}): {stderr[-2000:]}")
            out[threads].append(json.loads(stdout.strip().splitlines()[-1]))
    return out


def measure(size: Size = FULL) -> dict[str, Any]:
    return {
        "size": size,
        "settings": settings(size.image_size),
        "profile": profile(size),
        "rates": rates_side_by_side(size),
    }


def lines(result: dict[str, Any]) -> list[str]:
    s, size = result["settings"], result["size"]
    out = [
        f"render flags {s['flags']}; lights {s['lights']}, casting shadows {s['shadow_lights']}; "
        f"{s['triangles']:,} mesh triangles in {s['meshes']} meshes",
        f"cProfile of {size.steps} steps, one process:",
    ]
    for name, calls, ms in result["profile"]["top"]:
        out.append(f"  {name:40s} {calls:6d} calls {ms:6.2f} ms a step (profiled)")
    out.append(f"  all Python-visible time: {result['profile']['total_ms']:.2f} ms a step (profiled)")
    side = {1: "one process", 2: "two processes side by side"}.get(size.processes, f"{size.processes} processes")
    for threads, rates in result["rates"].items():
        each = " | ".join(f"{r['ms']:.2f} ms a step, frames {r['frames']}" for r in rates)
        out.append(f"LP_NUM_THREADS={threads or '(Mesa default)'}, {side}: {each}")
    return out


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    argv = sys.argv[1:] if argv is None else list(argv)
    ap = parser(MODULE, __doc__)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--rate-only", action="store_true", help="(internal) time this process's steps, print JSON")
    ap.add_argument("--image-size", type=int, default=FULL.image_size)
    ap.add_argument("--steps", type=int, default=FULL.steps)
    ap.add_argument("--warmup", type=int, default=FULL.warmup)
    args = ap.parse_args(argv)
    if args.rate_only:
        result = rate(Size(image_size=args.image_size, steps=args.steps, warmup=args.warmup))
        print(json.dumps(result))
        return result
    result = measure(QUICK if args.quick else FULL)
    emit(lines(result), MODULE, argv, args.out)
    return result


if __name__ == "__main__":
    main()
