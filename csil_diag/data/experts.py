"""Scripted waypoint experts for ``lift``, ``can``, ``square`` and ``assembly`` that read privileged simulator state.

Each expert is a small phase machine (hover → descend → grasp → carry → place …) built on
:class:`~csil_diag.data.expert_base.ScriptedExpert`, which turns each phase's target into an action with
proportional control and keeps the gripper pointing straight down. Object and goal poses come from the MuJoCo
state, so the experts need no perception and succeed on (almost) every seed; noise and speed jitter make the
demonstrations diverse.

    expert = make_expert("can", ExpertConfig(noise=0.1))
    obs = env.reset(seed=0)
    expert.reset(env, np.random.default_rng(0))
    while not done:
        obs, reward, done, info = env.step(expert.act(env, obs))
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from csil_diag.data.expert_base import (
    CLOSED,
    OPEN,
    ExpertConfig,
    Phase,
    ScriptedExpert,
    Target,
    TargetFn,
    above,
    body_yaw,
    carry_target,
    closest_equivalent,
    eef_rotation,
    gripper_yaw,
    plan_yaws,
    wrap_angle,
)
from csil_diag.envs import assembly as geometry
from csil_diag.errors import UserError


# ---------------------------------------------------------------------------------------------- tasks
class LiftExpert(ScriptedExpert):
    """Hover over the cube, descend, close, lift."""

    def held_object(self, sim_env: Any) -> Any:
        return sim_env.cube

    def _cube(self, sim_env: Any) -> np.ndarray:
        return np.array(sim_env.sim.data.body_xpos[sim_env.cube_body_id])

    def _at_cube(self, height: float) -> TargetFn:
        def target(sim_env: Any, obs: dict[str, np.ndarray]) -> Target:
            # A cube looks the same every 90°: take the nearest face pair.
            cube_yaw = body_yaw(sim_env.sim, sim_env.cube_body_id)
            return above(self._cube(sim_env), height), closest_equivalent(
                cube_yaw, gripper_yaw(eef_rotation(obs)), math.pi / 2
            )

        return target

    def _lifted(self, sim_env: Any, obs: dict[str, np.ndarray]) -> Target:
        return above(self.entry_pos, 0.15), None

    def phases(self) -> Sequence[Phase]:
        return (
            Phase("hover", self._at_cube(0.06), OPEN, max_steps=50, tol=0.02),
            Phase("descend", self._at_cube(0.0), OPEN, max_steps=30, tol=0.008),
            Phase("grasp", self._at_cube(0.0), CLOSED, max_steps=12, tol=None),
            Phase("lift", self._lifted, CLOSED, max_steps=100, holding=True),
        )


class CanExpert(ScriptedExpert):
    """Pick the can, carry it high over the bins, lower it into its quadrant, let go and back off."""

    carry_clearance = 0.25  # above the bins' floor: clears both bins' walls
    release_height = 0.10  # above the bins' floor
    goal_pull = 0.05  # the quadrant's centre is at the edge of the arm's reach; aim this much closer

    def held_object(self, sim_env: Any) -> Any:
        return sim_env.objects[sim_env.object_id]

    def _can(self, sim_env: Any) -> np.ndarray:
        return np.array(sim_env.sim.data.body_xpos[sim_env.obj_body_id[sim_env.obj_to_use]])

    def _goal(self, sim_env: Any) -> np.ndarray:
        goal = np.asarray(sim_env.target_bin_placements[sim_env.object_id], dtype=np.float64)
        return self.toward_robot(sim_env, goal, self.goal_pull)

    def _at_can(self, height: float) -> TargetFn:
        return lambda sim_env, obs: (above(self._can(sim_env), height), None)

    def _lift(self, sim_env: Any, obs: dict[str, np.ndarray]) -> Target:
        return np.array([*self.entry_pos[:2], sim_env.bin2_pos[2] + self.carry_clearance]), None

    def _over_goal(self, height: float) -> TargetFn:
        def target(sim_env: Any, obs: dict[str, np.ndarray]) -> Target:
            goal = self._goal(sim_env)
            return carry_target(obs["robot0_eef_pos"], self._can(sim_env), goal, goal[2] + height), None

        return target

    def _retreat(self, sim_env: Any, obs: dict[str, np.ndarray]) -> Target:
        # Success needs the gripper clear of the can, not just the can in the bin.
        return above(self.entry_pos, 0.10), None

    def phases(self) -> Sequence[Phase]:
        carry, place = self._over_goal(self.carry_clearance), self._over_goal(self.release_height)
        return (
            Phase("hover", self._at_can(0.10), OPEN, max_steps=60, tol=0.02),
            Phase("descend", self._at_can(0.0), OPEN, max_steps=40, tol=0.008),
            Phase("grasp", self._at_can(0.0), CLOSED, max_steps=12, tol=None),
            Phase("lift", self._lift, CLOSED, max_steps=60, tol=0.03, holding=True),
            Phase("carry", carry, CLOSED, max_steps=80, tol=0.03, holding=True),
            Phase("lower", place, CLOSED, max_steps=40, tol=0.02, holding=True),
            Phase("release", place, OPEN, max_steps=8, tol=None),
            Phase("retreat", self._retreat, OPEN, max_steps=100),
        )


class SquareExpert(ScriptedExpert):
    """Grasp the square nut by its handle, carry it over the peg turned to the peg's yaw, lower, let go."""

    # Along nut-local x: the handle spans 0.029 … 0.079 and the ring's side wall, as wide as the open
    # fingers, ends at 0.044; grasping out from the handle's centre (0.054) keeps the fingers off it.
    handle_offset = 0.062
    carry_height = 0.20  # above the table: the nut clears the peg's top (table + 0.13)
    release_height = 0.035  # nut centre below table + this: it is around the peg

    def __init__(self, config: ExpertConfig = ExpertConfig()) -> None:
        super().__init__(config)
        self._grasp_yaw = 0.0  # planned gripper yaws (absolute, on the wrist's branch)
        self._place_yaw = 0.0
        self._nut_goal_yaw = 0.0

    def held_object(self, sim_env: Any) -> Any:
        return sim_env.nuts[sim_env.nut_id]

    def _nut_id(self, sim_env: Any) -> int:
        return sim_env.obj_body_id[sim_env.obj_to_use]

    def _nut(self, sim_env: Any) -> np.ndarray:
        return np.array(sim_env.sim.data.body_xpos[self._nut_id(sim_env)])

    def _table_z(self, sim_env: Any) -> float:
        return float(sim_env.table_offset[2])

    def plan(self, sim_env: Any, obs: dict[str, np.ndarray]) -> None:
        """Choose the grasp and place yaws: handle towards the robot at the peg, wrist inside its limits.

        With the handle on the peg's far side the gripper would have to reach past the arm's workspace.
        The nut is 90°-symmetric and the gripper 180°-symmetric, so there are a few ways to grasp and
        turn it; take the one with the least turning that keeps both yaws in ``YAW_RANGE``.
        """
        peg_id = sim_env.peg1_body_id  # the square nut's peg
        peg = sim_env.sim.data.body_xpos[peg_id]
        base = np.asarray(sim_env.robots[0].base_pos)
        towards_robot = math.atan2(base[1] - peg[1], base[0] - peg[0])
        self._nut_goal_yaw = closest_equivalent(body_yaw(sim_env.sim, peg_id), towards_robot, math.pi / 2)
        nut_yaw = body_yaw(sim_env.sim, self._nut_id(sim_env))
        turn = wrap_angle(self._nut_goal_yaw - nut_yaw)
        start = gripper_yaw(eef_rotation(obs))

        grasps = [nut_yaw + k * math.pi for k in range(-2, 3)]  # fingers across the handle either way
        self._grasp_yaw, self._place_yaw = plan_yaws(start, grasps, turn)

    def _at_handle(self, height: float) -> TargetFn:
        def target(sim_env: Any, obs: dict[str, np.ndarray]) -> Target:
            nut_yaw = body_yaw(sim_env.sim, self._nut_id(sim_env))
            handle = self._nut(sim_env)
            handle[:2] += self.handle_offset * np.array([math.cos(nut_yaw), math.sin(nut_yaw)])
            # At gripper yaw ≡ nut yaw (mod π) the fingers close across the handle's width.
            return above(handle, height), closest_equivalent(nut_yaw, self._grasp_yaw, math.pi)

        return target

    def _turn_in_place(self, sim_env: Any, obs: dict[str, np.ndarray]) -> Target:
        # Big wrist turns near the robot's base, where the arm is folded, leave OSC stuck; turn up here.
        return self.entry_pos, self._grasp_yaw

    def _lift(self, sim_env: Any, obs: dict[str, np.ndarray]) -> Target:
        return np.array([*self.entry_pos[:2], self._table_z(sim_env) + self.carry_height]), None

    def _over_peg(self, z_above_table: float) -> TargetFn:
        def target(sim_env: Any, obs: dict[str, np.ndarray]) -> Target:
            peg = sim_env.sim.data.body_xpos[sim_env.peg1_body_id]
            grip = gripper_yaw(eef_rotation(obs))
            # The grasp fixes the nut's yaw relative to the gripper (up to slip, which this corrects).
            nut_in_grip = body_yaw(sim_env.sim, self._nut_id(sim_env)) - grip
            yaw = closest_equivalent(self._nut_goal_yaw - nut_in_grip, self._place_yaw, math.pi / 2)
            z = self._table_z(sim_env) + z_above_table
            return carry_target(obs["robot0_eef_pos"], self._nut(sim_env), peg, z), yaw

        return target

    def _on_peg(self, sim_env: Any) -> bool:
        return bool(self._nut(sim_env)[2] < self._table_z(sim_env) + self.release_height)

    def _retreat(self, sim_env: Any, obs: dict[str, np.ndarray]) -> Target:
        return above(self.entry_pos, 0.10), None

    def phases(self) -> Sequence[Phase]:
        # Lowering aims at the table; `until` stops it once the nut is around the peg.
        carry, lower = self._over_peg(self.carry_height), self._over_peg(0.0)
        return (
            Phase("turn", self._turn_in_place, OPEN, max_steps=30, tol=0.02),
            Phase("hover", self._at_handle(0.08), OPEN, max_steps=60, tol=0.015),
            Phase("descend", self._at_handle(0.0), OPEN, max_steps=40, tol=0.006),
            Phase("grasp", self._at_handle(0.0), CLOSED, max_steps=12, tol=None),
            Phase("lift", self._lift, CLOSED, max_steps=60, tol=0.03, holding=True),
            Phase("carry", carry, CLOSED, max_steps=100, tol=0.005, holding=True),
            Phase("lower", lower, CLOSED, max_steps=60, until=self._on_peg, holding=True, max_speed=0.5),
            Phase("release", lower, OPEN, max_steps=8, tol=None),
            Phase("retreat", self._retreat, OPEN, max_steps=100),
        )


class AssemblyExpert(ScriptedExpert):
    """Piece 1 into the base (yaw to the hole's modulo 90°), then piece 2 over it (its slot along piece 1's ridge,
    modulo 180°): for each, turn the wrist, grasp (piece 1 across its ridge, piece 2 by its knob), lift, carry over
    the target turned to fit, lower until seated, let go, back off."""

    ridge_grip = 0.02  # below the ridge's top
    carry_height = (0.22, 0.32)  # eef above the table while carrying piece 1 / 2: clears the base and the ridge
    seat_margin = 0.008  # lowering stops once the piece's bottom is this close to where it rests
    centring = 1.0  # pieces near the table's corners are reachable only with the wrist near its home yaw

    def __init__(self, config: ExpertConfig = ExpertConfig()) -> None:
        super().__init__(config)
        self._grasp_yaw = 0.0
        self._place_yaw = 0.0
        self._second = next(i for i, p in enumerate(self._script) if p.replan)  # where piece 2's part starts

    def _piece(self) -> int:
        return 2 if self.phase_index >= self._second else 1

    def held_object(self, sim_env: Any) -> Any:
        return sim_env.piece_1 if self._piece() == 1 else sim_env.piece_2

    def _body(self, sim_env: Any, piece: int) -> int:
        return sim_env.piece_1_body_id if piece == 1 else sim_env.piece_2_body_id

    def _pos(self, sim_env: Any, piece: int) -> np.ndarray:
        return np.array(sim_env.sim.data.body_xpos[self._body(sim_env, piece)])

    def _goal(self, sim_env: Any, piece: int) -> tuple[np.ndarray, float, float]:
        """Where the piece goes: (centre xy, a yaw that fits, the fit's period)."""
        if piece == 1:
            return np.array(sim_env.sim.data.body_xpos[sim_env.base_body_id]), 0.0, math.pi / 2
        return self._pos(sim_env, 1), body_yaw(sim_env.sim, sim_env.piece_1_body_id), math.pi

    def plan(self, sim_env: Any, obs: dict[str, np.ndarray]) -> None:
        piece = self._piece()
        yaw = body_yaw(sim_env.sim, self._body(sim_env, piece))
        _, goal_yaw, period = self._goal(sim_env, piece)
        turn = wrap_angle(goal_yaw - yaw, period)
        if piece == 1:  # fingers across the ridge (which runs along the piece's y): either way round
            grasps = [yaw + math.pi / 2 + k * math.pi for k in range(-2, 3)]
        else:  # the knob is a cube
            grasps = [yaw + k * math.pi / 2 for k in range(-4, 5)]
        self._grasp_yaw, self._place_yaw = plan_yaws(gripper_yaw(eef_rotation(obs)), grasps, turn, self.centring)

    def _grip_point(self, sim_env: Any, piece: int) -> np.ndarray:
        point = self._pos(sim_env, piece)
        if piece == 1:
            point[2] += geometry.PIECE1_HEIGHT / 2 - self.ridge_grip
        else:
            point[2] += geometry.PIECE2_HEIGHT / 2 - geometry.KNOB / 2
        return point

    def _at_grip(self, height: float) -> TargetFn:
        def target(sim_env: Any, obs: dict[str, np.ndarray]) -> Target:
            piece = self._piece()
            yaw = body_yaw(sim_env.sim, self._body(sim_env, piece))
            offset = math.pi / 2 if piece == 1 else 0.0
            period = math.pi if piece == 1 else math.pi / 2
            return above(self._grip_point(sim_env, piece), height), closest_equivalent(
                yaw + offset, self._grasp_yaw, period
            )

        return target

    def _turn_in_place(self, sim_env: Any, obs: dict[str, np.ndarray]) -> Target:
        return self.entry_pos, self._grasp_yaw

    def _lift(self, sim_env: Any, obs: dict[str, np.ndarray]) -> Target:
        z = float(sim_env.table_offset[2]) + self.carry_height[self._piece() - 1]
        return np.array([*self.entry_pos[:2], z]), None

    def _over_goal(self, lower: bool) -> TargetFn:
        def target(sim_env: Any, obs: dict[str, np.ndarray]) -> Target:
            piece = self._piece()
            goal, goal_yaw, period = self._goal(sim_env, piece)
            grip = gripper_yaw(eef_rotation(obs))
            in_grip = body_yaw(sim_env.sim, self._body(sim_env, piece)) - grip  # corrects slip in the fingers
            yaw = closest_equivalent(goal_yaw - in_grip, self._place_yaw, period)
            table = float(sim_env.table_offset[2])
            z = table if lower else table + self.carry_height[piece - 1]
            return carry_target(obs["robot0_eef_pos"], self._pos(sim_env, piece), goal, z), yaw

        return target

    def _seated(self, sim_env: Any) -> bool:
        piece = self._piece()
        rest = float(sim_env.table_offset[2]) + (0.0 if piece == 1 else geometry.BASE_HEIGHT)
        return bool(sim_env.piece_bottom(piece) < rest + self.seat_margin)

    def _retreat(self, sim_env: Any, obs: dict[str, np.ndarray]) -> Target:
        return above(self.entry_pos, 0.10), None

    def phases(self) -> Sequence[Phase]:
        grip_hover, grip, carry, lower = (
            self._at_grip(0.08),
            self._at_grip(0.0),
            self._over_goal(False),
            self._over_goal(True),
        )
        script = []
        for piece in (1, 2):
            # Clearance per side 6 mm / 3 mm; a held piece sags ~2 mm below its target (lowering corrects it).
            tol = 0.004 if piece == 1 else 0.003
            script += [
                Phase(f"turn{piece}", self._turn_in_place, OPEN, max_steps=30, tol=0.02, replan=piece == 2),
                Phase(f"hover{piece}", grip_hover, OPEN, max_steps=60, tol=0.015),
                Phase(f"descend{piece}", grip, OPEN, max_steps=40, tol=0.006),
                Phase(f"grasp{piece}", grip, CLOSED, max_steps=12, tol=None),
                Phase(f"lift{piece}", self._lift, CLOSED, max_steps=60, tol=0.03, holding=True),
                Phase(f"carry{piece}", carry, CLOSED, max_steps=120, tol=tol, holding=True),
                Phase(f"lower{piece}", lower, CLOSED, max_steps=80, until=self._seated, holding=True, max_speed=0.3),
                Phase(f"release{piece}", lower, OPEN, max_steps=8, tol=None),
                Phase(f"retreat{piece}", self._retreat, OPEN, max_steps=40 if piece == 1 else 100, tol=0.02),
            ]
        return script


EXPERTS: dict[str, type[ScriptedExpert]] = {
    "lift": LiftExpert,
    "can": CanExpert,
    "square": SquareExpert,
    "assembly": AssemblyExpert,
}


def make_expert(task: str, config: ExpertConfig = ExpertConfig()) -> ScriptedExpert:
    """The scripted expert for ``task`` (``lift``, ``can`` or ``square``)."""
    try:
        cls = EXPERTS[task]
    except KeyError:
        choices = ", ".join(EXPERTS)
        raise UserError(f"no scripted expert for task {task!r}; choose one of: {choices}") from None
    return cls(config)
