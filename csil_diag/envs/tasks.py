"""robosuite tasks (Panda, OSC pose, delta actions, 20 Hz) behind one small, stable interface.

Observations are exposed under researcher-facing names (``eef``, ``joints``, ``object``, ``agentview``,
``wrist``) and, for recording, under robomimic's standard keys, so that our datasets and real robomimic
datasets are read the same way.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import numpy as np

from csil_diag.envs.assembly import register as register_assembly
from csil_diag.envs.culling import FrustumCuller
from csil_diag.envs.suite import import_robosuite
from csil_diag.errors import UserError

ACTION_DIM = 7
CONTROL_FREQ = 20


@dataclass(frozen=True)
class TaskSpec:
    """A robosuite task as the thesis uses it (§5.2.1)."""

    name: str
    robosuite_env: str
    horizon: int
    prompt: str
    object_joint: str  # the free joint of the object the task is about (the object probe moves it)


TASKS: dict[str, TaskSpec] = {
    "lift": TaskSpec("lift", "Lift", 400, "lift the red cube", "cube_joint0"),
    "can": TaskSpec("can", "PickPlaceCan", 400, "pick up the can and place it in its bin", "Can_joint0"),
    "square": TaskSpec(
        "square", "NutAssemblySquare", 400, "put the square nut onto the square peg", "SquareNut_joint0"
    ),
    # Our own env (csil_diag.envs.assembly), after mimicgen's ThreePieceAssembly; the thesis' horizon (§5.2).
    "assembly": TaskSpec("assembly", "CsilThreePieceAssembly", 800, "assemble the three pieces", "piece_1_joint0"),
}

TASK_CHOICES = ", ".join(TASKS)  # for help texts

# Our camera names -> robosuite camera names (obs key = "<robosuite name>_image").
CAMERAS: dict[str, str] = {"agentview": "agentview", "wrist": "robot0_eye_in_hand"}

# Our low-dimensional names -> widths (object width depends on the task).
ROBOMIMIC_LOWDIM_KEYS = (
    "robot0_eef_pos",
    "robot0_eef_quat",
    "robot0_gripper_qpos",
    "robot0_joint_pos",
    "object",
)


def task_spec(task: str) -> TaskSpec:
    """Look up a task by name, with a one-line error listing the known ones."""
    try:
        return TASKS[task]
    except KeyError:
        raise UserError(f"unknown task {task!r}; choose one of: {', '.join(TASKS)}") from None


def camera_names(cameras: tuple[str, ...] | list[str] | None) -> tuple[str, ...]:
    """Validate our camera names (``agentview``, ``wrist``)."""
    cams = tuple(cameras or ())
    for cam in cams:
        if cam not in CAMERAS:
            raise UserError(f"unknown camera {cam!r}; choose from: {', '.join(CAMERAS)}")
    if len(set(cams)) != len(cams):
        raise UserError(f"camera listed twice in {','.join(cams)}")
    return cams


def _import_robosuite() -> Any:
    """robosuite (imported with our settings) with our own task's env class registered, so that robosuite.make (and
    robomimic's env_args) can name it."""
    robosuite = import_robosuite()
    register_assembly()
    return robosuite


def controller_config() -> dict:
    """robosuite's default Panda composite controller: OSC pose, delta, base frame, plus gripper."""
    return _import_robosuite().load_composite_controller_config(robot="Panda")


def quat_to_axis_angle(quat_xyzw: np.ndarray) -> np.ndarray:
    """(..., 4) unit quaternions (x, y, z, w) -> (..., 3) axis-angle vectors, angle in [0, π]."""
    q = np.asarray(quat_xyzw, dtype=np.float64)
    q = np.where(q[..., 3:4] < 0, -q, q)  # same rotation, angle ≤ π
    w = np.clip(q[..., 3], -1.0, 1.0)
    angle = 2.0 * np.arccos(w)
    s = np.sqrt(np.maximum(1.0 - w * w, 0.0))
    scale = np.where(s > 1e-8, angle / np.maximum(s, 1e-8), 2.0)
    return q[..., :3] * scale[..., None]


def eef_vector(eef_pos: np.ndarray, eef_quat: np.ndarray, gripper_qpos: np.ndarray) -> np.ndarray:
    """The thesis' 8-d end-effector state: position (3), axis-angle (3), gripper (2)."""
    return np.concatenate([eef_pos, quat_to_axis_angle(eef_quat), gripper_qpos], axis=-1).astype(np.float32)


def joints_vector(joint_pos: np.ndarray, gripper_qpos: np.ndarray) -> np.ndarray:
    """Arm joint positions (7) and gripper finger positions (2)."""
    return np.concatenate([joint_pos, gripper_qpos], axis=-1).astype(np.float32)


def make_observation(raw: dict[str, np.ndarray], cameras: tuple[str, ...]) -> dict[str, np.ndarray]:
    """robosuite's raw observation -> our stable names plus robomimic's standard keys."""
    obs = {
        "robot0_eef_pos": np.asarray(raw["robot0_eef_pos"], np.float64),
        "robot0_eef_quat": np.asarray(raw["robot0_eef_quat"], np.float64),
        "robot0_gripper_qpos": np.asarray(raw["robot0_gripper_qpos"], np.float64),
        "robot0_joint_pos": np.asarray(raw["robot0_joint_pos"], np.float64),
        "object": np.asarray(raw["object-state"], np.float64),
    }
    obs["eef"] = eef_vector(obs["robot0_eef_pos"], obs["robot0_eef_quat"], obs["robot0_gripper_qpos"])
    obs["joints"] = joints_vector(obs["robot0_joint_pos"], obs["robot0_gripper_qpos"])
    for cam in cameras:
        image = raw[f"{CAMERAS[cam]}_image"]
        obs[f"{CAMERAS[cam]}_image"] = image
        obs[cam] = image
    return obs


def _shrink_offscreen_buffer(env: Any, image_size: int) -> None:
    """Render into an image-sized, single-sampled buffer instead of robosuite's 640×480 MSAA one.

    On a software (Mesa) renderer the default buffer costs ~40 ms per frame; this makes two 84×84
    cameras ~3× faster. Reflections are off too (they render the scene twice); shadows stay. (Meshes out of
    view are culled per frame too: `culling.py`.)
    """
    import mujoco

    ctx = env.sim._render_context_offscreen
    if ctx is None:
        return
    model = env.sim.model._model
    model.vis.global_.offwidth = image_size
    model.vis.global_.offheight = image_size
    model.vis.quality.offsamples = 0
    ctx.gl_ctx.make_current()
    ctx.con.free()
    ctx._set_mujoco_context_and_buffers()
    ctx.scn.flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = 0


def robosuite_kwargs(
    task: str, cameras: tuple[str, ...], image_size: int, horizon: int, seed: int = 0
) -> dict[str, Any]:
    """Keyword arguments for ``robosuite.make`` (besides the env name).

    ``seed`` matters beyond resets: robosuite draws some object geometry (Lift's cube size) from the
    env's generator when it builds the model, and with soft resets that geometry stays for the env's
    life. Recording it makes a dataset's env rebuildable exactly.
    """
    return {
        "seed": int(seed),
        "robots": ["Panda"],
        "controller_configs": controller_config(),
        "has_renderer": False,
        "has_offscreen_renderer": bool(cameras),
        "use_camera_obs": bool(cameras),
        "use_object_obs": True,
        "camera_names": [CAMERAS[c] for c in cameras] or ["agentview"],
        "camera_heights": image_size,
        "camera_widths": image_size,
        "camera_depths": False,
        "reward_shaping": False,
        "control_freq": CONTROL_FREQ,
        "horizon": horizon,
        "ignore_done": False,
        "hard_reset": False,  # rebuilding the GL context every reset costs ~1 s and ~2 GB
    }


def env_args(
    task: str, cameras: tuple[str, ...], image_size: int, horizon: int | None = None, seed: int = 0
) -> dict[str, Any]:
    """robomimic's ``env_args`` (env name, type 1 = robosuite, kwargs) plus our task name."""
    spec = task_spec(task)
    kwargs = robosuite_kwargs(task, camera_names(cameras), image_size, horizon or spec.horizon, seed)
    return {"env_name": spec.robosuite_env, "type": 1, "env_kwargs": kwargs, "task": spec.name}


class RobosuiteTask:
    """One robosuite task instance. Episodes end on success or at the horizon (thesis §5.2.1)."""

    def __init__(
        self,
        task: str,
        *,
        cameras: tuple[str, ...] | list[str] | None = None,
        image_size: int = 84,
        seed: int | None = None,
        horizon: int | None = None,
        cull: bool = True,
    ) -> None:
        self.spec = task_spec(task)
        self.cameras = camera_names(cameras)
        if image_size < 8 or image_size > 1024:
            raise UserError(f"image size {image_size} is out of range; use 8 … 1024 pixels")
        self.image_size = int(image_size)
        self.horizon = int(horizon or self.spec.horizon)
        self.seed = 0 if seed is None else int(seed)
        self.env_kwargs = robosuite_kwargs(self.spec.name, self.cameras, self.image_size, self.horizon, self.seed)
        suite = _import_robosuite()
        try:
            self.env = suite.make(self.spec.robosuite_env, **copy.deepcopy(self.env_kwargs))
        except Exception as exc:  # robosuite raises bare exceptions for GL failures
            if self.cameras:
                raise UserError(
                    f"could not create an offscreen renderer ({exc}); run scripts/setup.sh to install "
                    "the EGL/OSMesa libraries or set MUJOCO_GL=egl|osmesa"
                ) from None
            raise
        self.culler: FrustumCuller | None = None
        if self.cameras:
            _shrink_offscreen_buffer(self.env, self.image_size)
            if cull and self.env.sim._render_context_offscreen is not None:
                self.culler = FrustumCuller(self.env.sim._render_context_offscreen)
        self._done = True

    # ------------------------------------------------------------------ episode control
    def reset(self, seed: int | None = None) -> dict[str, np.ndarray]:
        """Start an episode; ``seed`` makes the object placement reproducible."""
        if seed is not None:
            # The placement samplers hold a reference to env.rng, so re-seed it in place.
            self.env.rng.bit_generator.state = np.random.default_rng(seed).bit_generator.state
        self.env.reset()
        self._forget_history()
        # robosuite's reset observation has zeros for the object-to-gripper sensors (their shared
        # gripper-pose cache is filled later in the same pass); a second pass reads them correctly.
        raw = self.env._get_observations(force_update=True)
        self._done = False
        self.steps = 0
        return make_observation(raw, self.cameras)

    def _forget_history(self) -> None:
        # MuJoCo warm-starts its constraint solver from the previous step's accelerations; after a
        # soft reset those come from the last episode, so without this an episode (and a replay from
        # its states) would depend on what the process simulated before.
        self.env.sim.data.qacc_warmstart[:] = 0.0

    def step(self, action: np.ndarray) -> tuple[dict[str, np.ndarray], float, bool, dict[str, Any]]:
        """Apply a 7-d action in [-1, 1] (clipped). Returns (obs, reward, done, info{success})."""
        if self._done:
            raise RuntimeError("step() called on a finished episode; call reset() first")
        action = np.clip(np.asarray(action, dtype=np.float64).reshape(ACTION_DIM), -1.0, 1.0)
        raw, reward, env_done, info = self.env.step(action)
        self.steps += 1
        success = self.is_success()
        self._done = bool(success or env_done or self.steps >= self.horizon)
        info = {**info, "success": success}
        return make_observation(raw, self.cameras), float(reward), self._done, info

    def is_success(self) -> bool:
        """The task's own success check."""
        return bool(self.env._check_success())

    # ------------------------------------------------------------------ states (robomimic "states")
    def get_state(self) -> np.ndarray:
        """The full MuJoCo state (time, qpos, qvel) as robomimic stores it."""
        return np.asarray(self.env.sim.get_state().flatten(), dtype=np.float64)

    def reset_to_state(self, state: np.ndarray) -> dict[str, np.ndarray]:
        """Start an episode from a recorded MuJoCo state (robomimic's ``reset_to``)."""
        self.env.reset()
        self.env.sim.set_state_from_flattened(np.asarray(state, dtype=np.float64))
        self._forget_history()
        self.env.sim.forward()
        for robot in self.env.robots:
            # robosuite builds its controllers at reset from the arm pose they find (nullspace target,
            # goal); rebuilding them here makes a replay from states[0] follow the recorded episode.
            robot._load_controller()
            robot.composite_controller.update_state()
            robot.composite_controller.reset()
            for gripper in robot.gripper.values():
                gripper.current_action = np.zeros(gripper.dof)
        self._done = False
        self.steps = 0
        return make_observation(self.env._get_observations(force_update=True), self.cameras)

    @property
    def env_args(self) -> dict[str, Any]:
        """robomimic's ``env_args`` attribute: enough to rebuild this env."""
        return env_args(self.spec.name, self.cameras, self.image_size, self.horizon, self.seed)

    def close(self) -> None:
        self.env.close()

    def __enter__(self) -> RobosuiteTask:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def make_env(
    task: str,
    *,
    cameras: tuple[str, ...] | list[str] | None = None,
    image_size: int = 84,
    seed: int | None = None,
    horizon: int | None = None,
) -> RobosuiteTask:
    """Create ``lift``, ``can``, ``square`` or ``assembly`` (Panda, OSC pose, delta actions, 20 Hz, horizon 400; 800 for
    assembly).

    ``seed`` (None = 0) fixes the model's random geometry and the first episode; later episodes take
    ``reset(seed=...)``.
    """
    return RobosuiteTask(task, cameras=cameras, image_size=image_size, seed=seed, horizon=horizon)


def task_from_env_name(env_name: str) -> str:
    """robosuite env name (as in robomimic's env_args) -> our task name."""
    for spec in TASKS.values():
        if spec.robosuite_env == env_name:
            return spec.name
    raise UserError(
        f"robosuite env {env_name!r} is not a csil-diag task; supported: "
        + ", ".join(f"{s.robosuite_env} ({s.name})" for s in TASKS.values())
    )
