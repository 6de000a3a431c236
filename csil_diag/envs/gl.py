"""Pick a headless OpenGL backend for MuJoCo before robosuite is imported.

robosuite reads ``MUJOCO_GL`` once, at import, and forces ``egl`` unless the variable says ``osmesa``
or ``glx``; a backend that cannot create a context only fails later, at the first render. So we probe
the candidates in a throw-away subprocess (PyOpenGL fixes its platform at first import, so a failed
probe would poison this process) and export the first that works; worker processes inherit it.
"""

from __future__ import annotations

import os
import subprocess
import sys

_PROBE = """
import os, sys
os.environ["PYOPENGL_PLATFORM"] = sys.argv[1]
import mujoco
if sys.argv[1] == "egl":
    from mujoco.egl import GLContext
else:
    from mujoco.osmesa import GLContext
ctx = GLContext(16, 16)
ctx.make_current()
model = mujoco.MjModel.from_xml_string("<mujoco><worldbody><geom size='1'/></worldbody></mujoco>")
con = mujoco.MjrContext(model, mujoco.mjtFontScale.mjFONTSCALE_100)
con.free()
ctx.free()
"""

CANDIDATES = ("egl", "osmesa")


def probe_backend(name: str, timeout: float = 60.0) -> bool:
    """True if MuJoCo can create an offscreen rendering context with backend ``name``."""
    env = {**os.environ, "MUJOCO_GL": name, "PYOPENGL_PLATFORM": name}
    try:
        proc = subprocess.run([sys.executable, "-c", _PROBE, name], env=env, capture_output=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return proc.returncode == 0


def ensure_gl_backend() -> str:
    """Export a working ``MUJOCO_GL`` (and matching ``PYOPENGL_PLATFORM``) and return its name.

    A backend the user exported is respected. Returns ``"none"`` when no candidate works; rendering
    then fails with a clear error at the first camera request, while state-only tasks still run.
    """
    chosen = os.environ.get("MUJOCO_GL")
    if not chosen:
        chosen = next((name for name in CANDIDATES if probe_backend(name)), "none")
        os.environ["MUJOCO_GL"] = chosen if chosen != "none" else "egl"
        os.environ["CSIL_DIAG_GL_PROBED"] = chosen
    if chosen in CANDIDATES:
        os.environ.setdefault("PYOPENGL_PLATFORM", chosen)
    return os.environ.get("CSIL_DIAG_GL_PROBED", chosen)
