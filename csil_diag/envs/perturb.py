"""Move one body of a robosuite scene and observe it again: the object by a shift or a yaw turn, or the robot's
end effector by a shift (through its arm joints). What the object-sensitivity probe is built on.

Each function changes the MuJoCo state in place (positions only, velocities zeroed), runs the forward kinematics, and
leaves every other body where it was.
"""

from __future__ import annotations

import math

import mujoco
import numpy as np

from csil_diag.envs.tasks import RobosuiteTask, make_observation


def _raw(env: RobosuiteTask) -> tuple[mujoco.MjModel, mujoco.MjData]:
    return env.env.sim.model._model, env.env.sim.data._data


def object_qpos_slice(env: RobosuiteTask) -> slice:
    """qpos of the task's object: position (3) then quaternion (w, x, y, z) of its free joint."""
    model, _ = _raw(env)
    joint = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_JOINT, env.spec.object_joint)
    start = int(model.jnt_qposadr[joint])
    return slice(start, start + 7)


def object_pose(env: RobosuiteTask) -> tuple[np.ndarray, np.ndarray]:
    _, data = _raw(env)
    q = data.qpos[object_qpos_slice(env)]
    return q[:3].copy(), q[3:].copy()


def eef_position(env: RobosuiteTask) -> np.ndarray:
    _, data = _raw(env)
    return data.site_xpos[_eef_site(env)].copy()


def _eef_site(env: RobosuiteTask) -> int:
    site = env.env.robots[0].eef_site_id
    return int(site["right"] if isinstance(site, dict) else site)


def _forward(env: RobosuiteTask) -> None:
    model, data = _raw(env)
    data.qvel[:] = 0.0
    mujoco.mj_forward(model, data)


def move_object(env: RobosuiteTask, shift: np.ndarray | None = None, yaw: float = 0.0) -> None:
    """Shift the object by ``shift`` (3,) metres and turn it by ``yaw`` radians about the world z axis."""
    _, data = _raw(env)
    sl = object_qpos_slice(env)
    q = data.qpos[sl].copy()
    if shift is not None:
        q[:3] += np.asarray(shift, np.float64)
    if yaw:
        turn = np.array([math.cos(yaw / 2), 0.0, 0.0, math.sin(yaw / 2)])
        out = np.zeros(4)
        mujoco.mju_mulQuat(out, turn, q[3:])
        q[3:] = out
    data.qpos[sl] = q
    _forward(env)


def move_eef(env: RobosuiteTask, shift: np.ndarray, iterations: int = 8) -> np.ndarray:
    """Move the end effector by ``shift`` (3,) metres through the arm's joint positions (damped least squares on the
    site Jacobian); the gripper and every other body stay. Returns the displacement achieved."""
    model, data = _raw(env)
    robot = env.env.robots[0]
    qpos_idx = np.asarray(robot._ref_joint_pos_indexes)
    dof_idx = np.asarray(robot._ref_joint_vel_indexes)
    site = _eef_site(env)
    start = data.site_xpos[site].copy()
    target = start + np.asarray(shift, np.float64)
    jacp = np.zeros((3, model.nv))
    for _ in range(iterations):
        error = target - data.site_xpos[site]
        if np.linalg.norm(error) < 1e-5:
            break
        mujoco.mj_jacSite(model, data, jacp, None, site)
        j = jacp[:, dof_idx]
        step = j.T @ np.linalg.solve(j @ j.T + 1e-6 * np.eye(3), error)
        data.qpos[qpos_idx] += step
        _forward(env)
    _forward(env)
    return data.site_xpos[site] - start


def observe(env: RobosuiteTask) -> dict[str, np.ndarray]:
    """The observation of the current state (cameras rendered anew)."""
    return make_observation(env.env._get_observations(force_update=True), env.cameras)
