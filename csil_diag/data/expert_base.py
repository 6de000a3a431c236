"""What the scripted experts share: their config, the phase record, the wrist geometry and :class:`ScriptedExpert`.

A phase names a target for the end effector (a position and, optionally, a gripper yaw), a gripper command and a
step budget; :class:`ScriptedExpert` turns the target into an action with proportional control and keeps the
gripper pointing straight down. The task experts themselves are in :mod:`csil_diag.data.experts`.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.spatial.transform import Rotation

from csil_diag.envs.tasks import ACTION_DIM, RobosuiteTask
from csil_diag.errors import UserError

OPEN, CLOSED = -1.0, 1.0
# Gripper pointing straight down at yaw 0 (robosuite's Panda home pose, levelled): eef x = world x,
# eef z = world down. The fingers close along eef y.
TOP_DOWN = np.diag([1.0, -1.0, -1.0])
# Gripper yaws the Panda's wrist can hold (joint 7 spans ±2.90 rad and sits at π/4 at yaw 0), with margin.
# The range is wider than π, so yaws here are absolute angles on this branch, never wrapped to (-π, π].
YAW_RANGE = (-1.9, 3.4)
_YAW_BRANCH_LO = -2.3  # measured yaws are mapped to [lo, lo + 2π), which holds every reachable yaw

Target = tuple[np.ndarray, float | None]  # (eef position, gripper yaw or None = keep the current yaw)
TargetFn = Callable[[Any, dict[str, np.ndarray]], Target]  # (robosuite env, obs) -> target


@dataclass(frozen=True)
class ExpertConfig:
    """How an expert acts: noise on the arm, and how fast it moves."""

    noise: float = 0.0  # std of Gaussian noise added to the arm action dims (0:6), result clipped to [-1,1]
    speed: float = 1.0  # base gain multiplier (<1 slower, >1 faster)
    speed_jitter: float = 0.0  # per-episode gain multiplier drawn uniformly from speed*(1±speed_jitter)

    def __post_init__(self) -> None:
        if self.noise < 0:
            raise UserError(f"expert noise must be ≥ 0, got {self.noise}")
        if self.speed <= 0:
            raise UserError(f"expert speed must be > 0, got {self.speed}")
        if not 0 <= self.speed_jitter < 1:
            raise UserError(f"expert speed jitter must be in [0, 1), got {self.speed_jitter}")


@dataclass(frozen=True)
class Phase:
    """One step of a script: move towards ``target`` with the gripper at ``gripper``."""

    name: str
    target: TargetFn
    gripper: float
    max_steps: int  # budget at speed 1; the phase ends when it runs out, so a script never stalls
    tol: float | None = 0.01  # done within tol metres (and 10·tol rad of yaw); None: use the whole budget
    until: Callable[[Any], bool] | None = None  # done when this holds for the robosuite env instead of tol
    holding: bool = False  # the object must stay in the gripper; if it slips out, start the script over
    max_speed: float = 1.0  # cap on each position action dim (1 = 5 cm/step): careful moves
    replan: bool = False  # a new object starts here: plan() again on entry, and a drop restarts from here


# ---------------------------------------------------------------------------------------------- geometry
def wrap_angle(angle: float, period: float = 2 * math.pi) -> float:
    """``angle`` mapped to [-period/2, period/2): the smallest turn to a pose with that symmetry."""
    return (angle + period / 2) % period - period / 2


def closest_equivalent(angle: float, ref: float, period: float) -> float:
    """The angle ≡ ``angle`` (mod ``period``) nearest to ``ref``."""
    return ref + wrap_angle(angle - ref, period)


def yaw_of(mat: np.ndarray) -> float:
    """Heading of a frame's x axis about world z, in (-π, π]."""
    return math.atan2(mat[1, 0], mat[0, 0])


def body_yaw(sim: Any, body_id: int) -> float:
    """Yaw of a MuJoCo body (the objects here only turn about z)."""
    return yaw_of(sim.data.body_xmat[body_id].reshape(3, 3))


def eef_rotation(obs: dict[str, np.ndarray]) -> np.ndarray:
    return Rotation.from_quat(obs["robot0_eef_quat"]).as_matrix()  # robosuite quats are (x, y, z, w)


def gripper_yaw(eef_rot: np.ndarray) -> float:
    """Gripper yaw on the wrist's branch (see ``YAW_RANGE``)."""
    return _YAW_BRANCH_LO + (yaw_of(eef_rot) - _YAW_BRANCH_LO) % (2 * math.pi)


def top_down(yaw: float) -> np.ndarray:
    """Rotation matrix of a downward-pointing gripper turned by ``yaw`` about world z."""
    c, s = math.cos(yaw), math.sin(yaw)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]]) @ TOP_DOWN


def above(point: np.ndarray, height: float) -> np.ndarray:
    """``height`` metres above ``point``."""
    return np.asarray(point, dtype=np.float64) + np.array([0.0, 0.0, height])


def carry_target(eef_pos: np.ndarray, obj_pos: np.ndarray, goal_xy: np.ndarray, z: float) -> np.ndarray:
    """Eef position at height ``z`` that puts a held object's centre over ``goal_xy``.

    Grasps are off-centre (the nut is held by its handle), so the object's offset from the gripper counts.
    """
    return np.array([*(np.asarray(goal_xy[:2]) - (obj_pos[:2] - eef_pos[:2])), z], dtype=np.float64)


def plan_yaws(start: float, grasps: Sequence[float], turn: float, centring: float = 0.0) -> tuple[float, float]:
    """(grasp yaw, place yaw) for an object to be grasped at one of ``grasps`` and turned by ``turn``.

    Each grasp can be followed by ``turn`` ± 2π; take the pair with the least wrist motion from ``start`` that keeps
    both yaws in ``YAW_RANGE`` (wrist turns past the range are what leave OSC stuck). ``centring`` > 0 also
    prefers yaws near the wrist's home (0), where the arm reaches furthest.
    """

    def cost(yaws: tuple[float, float]) -> float:
        outside = sum(max(YAW_RANGE[0] - y, y - YAW_RANGE[1], 0.0) for y in yaws)
        home = centring * (abs(yaws[0]) + abs(yaws[1]))
        return abs(yaws[0] - start) + abs(yaws[1] - yaws[0]) + 100.0 * outside + home

    pairs = ((g, g + turn + 2 * math.pi * j) for g, j in itertools.product(grasps, (-1, 0, 1)))
    return min(pairs, key=cost)


# ---------------------------------------------------------------------------------------------- base
class ScriptedExpert:
    """Phase machine and P-controllers shared by the experts; subclasses write ``phases`` (and ``plan``)."""

    pos_gain = 10.0  # action per metre: saturates (0.05 m/step) beyond 10 cm of error
    rot_gain = 3.0  # action per radian of orientation error
    drop_steps = 3  # steps without finger contact before a held object counts as dropped (contacts flicker)

    def __init__(self, config: ExpertConfig = ExpertConfig()) -> None:
        self.config = config
        self.gain = config.speed
        self.phase_index = 0
        self.phase_steps = 0
        self.entry_pos: np.ndarray | None = None  # eef position when the current phase began
        self.retries = 0  # how often this episode's script started over after a drop
        self._ungrasped_steps = 0
        self._rng: np.random.Generator | None = None
        self._script: tuple[Phase, ...] = tuple(self.phases())

    # ------------------------------------------------------------------ to implement
    def phases(self) -> Sequence[Phase]:
        """The script, in order; the last phase holds its target once its budget is spent."""
        raise NotImplementedError

    def plan(self, sim_env: Any, obs: dict[str, np.ndarray]) -> None:
        """Per-object decisions, taken on the first ``act``, on entering a ``replan`` phase, and again whenever the
        script starts over."""

    def held_object(self, sim_env: Any) -> Any:
        """The robosuite object model that ``holding`` phases must keep between the fingers."""
        raise NotImplementedError

    # ------------------------------------------------------------------ public API
    def reset(self, env: RobosuiteTask, rng: np.random.Generator) -> None:
        """Start a new episode; call right after ``env.reset()``."""
        self._rng = rng
        jitter = self.config.speed_jitter
        self.gain = self.config.speed * (rng.uniform(1 - jitter, 1 + jitter) if jitter else 1.0)
        self.phase_index, self.phase_steps, self.entry_pos = 0, 0, None
        self.retries, self._ungrasped_steps = 0, 0

    def act(self, env: RobosuiteTask, obs: dict[str, np.ndarray]) -> np.ndarray:
        """The next 7-d action in [-1, 1]: Δpos, Δrot (axis-angle), gripper (exactly ±1)."""
        if self._rng is None:
            raise RuntimeError("call reset(env, rng) before act()")
        sim_env = env.env
        eef_pos = np.asarray(obs["robot0_eef_pos"], dtype=np.float64)
        eef_rot = eef_rotation(obs)
        if self._dropped(sim_env):
            # Start this object's part of the script over (earlier objects are in place).
            starts = [i for i, p in enumerate(self._script[: self.phase_index + 1]) if p.replan]
            self.phase_index, self.entry_pos = (starts[-1] if starts else 0), None
            self.retries += 1
        if self.entry_pos is None:
            self.phase_steps, self.entry_pos = 0, eef_pos.copy()
            self.plan(sim_env, obs)
        # Skip every phase that is already done, so a target reached on entry costs no step.
        while True:
            phase = self._script[self.phase_index]
            pos, yaw = phase.target(sim_env, obs)
            yaw = gripper_yaw(eef_rot) if yaw is None else yaw
            if self.phase_index == len(self._script) - 1 or not self._done(phase, sim_env, eef_pos, eef_rot, pos, yaw):
                break
            self.phase_index, self.phase_steps, self.entry_pos = self.phase_index + 1, 0, eef_pos.copy()
            if self._script[self.phase_index].replan:
                self.plan(sim_env, obs)
        self.phase_steps += 1

        action = np.zeros(ACTION_DIM)
        action[:3] = np.clip(self.gain * self.pos_gain * (pos - eef_pos), -phase.max_speed, phase.max_speed)
        action[3:6] = self.gain * self.rot_gain * self._rotation_error(eef_rot, yaw)
        if self.config.noise > 0:
            action[:6] += self._rng.normal(0.0, self.config.noise, size=6)
        action[:6] = np.clip(action[:6], -1.0, 1.0)
        action[6] = phase.gripper  # never noisy: a half-closed gripper is not a demonstration
        return action

    @property
    def phase(self) -> str:
        """Name of the current phase (for logging and debugging)."""
        return self._script[self.phase_index].name

    # ------------------------------------------------------------------ machinery
    def _dropped(self, sim_env: Any) -> bool:
        if not self._script[self.phase_index].holding:
            self._ungrasped_steps = 0
            return False
        # robosuite's own grasp test: both finger pads touch the object.
        grasped = sim_env._check_grasp(sim_env.robots[0].gripper, self.held_object(sim_env))
        self._ungrasped_steps = 0 if grasped else self._ungrasped_steps + 1
        return self._ungrasped_steps >= self.drop_steps

    def _done(
        self,
        phase: Phase,
        sim_env: Any,
        eef_pos: np.ndarray,
        eef_rot: np.ndarray,
        pos: np.ndarray,
        yaw: float,
    ) -> bool:
        # Timed phases (gripper open/close) take real time; only motions get slower with the gain.
        budget = phase.max_steps if phase.tol is None else math.ceil(phase.max_steps / min(self.gain, 1.0))
        if self.phase_steps >= budget:
            return True
        if phase.until is not None:
            return bool(phase.until(sim_env))
        if phase.tol is None:
            return False
        yaw_err = abs(yaw - gripper_yaw(eef_rot))
        return bool(np.linalg.norm(pos - eef_pos) < phase.tol and yaw_err < 10 * phase.tol)

    @staticmethod
    def _rotation_error(eef_rot: np.ndarray, yaw: float) -> np.ndarray:
        """World-frame axis-angle (OSC's Δrot frame) that levels the gripper and turns it to ``yaw``.

        The yaw part is the plain difference on the wrist's branch, not the shortest turn, so a planned
        turn of more than π goes the way that keeps joint 7 inside its limits.
        """
        current = gripper_yaw(eef_rot)
        tilt = Rotation.from_matrix(top_down(current) @ eef_rot.T).as_rotvec()
        return tilt + np.array([0.0, 0.0, yaw - current])

    @staticmethod
    def toward_robot(sim_env: Any, point: np.ndarray, distance: float) -> np.ndarray:
        """``point`` moved ``distance`` metres towards the robot's base in the horizontal plane."""
        direction = np.asarray(sim_env.robots[0].base_pos, dtype=np.float64)[:2] - point[:2]
        moved = np.array(point, dtype=np.float64)
        moved[:2] += distance * direction / np.linalg.norm(direction)
        return moved
